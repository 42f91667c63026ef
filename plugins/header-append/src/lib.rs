//! `header-append`: adds every `"header": "value"` pair of its JSON object configuration to each response, in
//! the order written. The example plugin of Maistra's ServiceMeshExtension, so migrated resources keep working.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use wasmgate_guest::HeaderList;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(HeaderAppendRoot::default()) });
}}

/// Parses the configuration: empty means "add nothing"; otherwise a JSON object whose values are strings.
fn parse(bytes: &[u8]) -> Result<HeaderList, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(HeaderList::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| format!("configuration must be a JSON object of strings: {e}"))
}

#[derive(Default)]
struct HeaderAppendRoot {
    headers: Rc<HeaderList>,
}

impl Context for HeaderAppendRoot {}

impl RootContext for HeaderAppendRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        match parse(&self.get_plugin_configuration().unwrap_or_default()) {
            Ok(headers) => {
                self.headers = Rc::new(headers);
                true
            }
            Err(e) => {
                log::warn!("header-append: configuration refused: {e}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HeaderAppend {
            headers: Rc::clone(&self.headers),
        }))
    }
}

struct HeaderAppend {
    headers: Rc<HeaderList>,
}

impl Context for HeaderAppend {}

impl HttpContext for HeaderAppend {
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in &self.headers.0 {
            self.add_http_response_header(name, value);
        }
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_is_an_ordered_object_of_strings() {
        assert!(parse(b"").unwrap().is_empty());
        assert!(parse(b" \n").unwrap().is_empty());
        let list = parse(br#"{"x-b": "2", "X-A": "1"}"#).unwrap();
        assert_eq!(list.as_refs(), [("x-b", "2"), ("x-a", "1")]);
        assert!(parse(br#"{"x": 1}"#).is_err());
        assert!(parse(br#"["x"]"#).is_err());
        assert!(parse(b"{").is_err());
    }
}
