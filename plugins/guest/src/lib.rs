//! Helpers shared by wasmgate's guest plugins.
//!
//! - [`HeaderList`]: a JSON object of `"header": "value"` pairs, kept in the order the user wrote them
//!   (serde_json's map would sort them, and header order is visible to clients).
//! - [`send_local_response`]: `proxy_send_local_response` with response-code *details*, which the Rust SDK's
//!   `send_http_response` always leaves empty (Istio's plugins put their reason there).
//! - [`serialize_pairs`]: the proxy-wasm pairs encoding.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

/// Header name/value pairs from a JSON object, in document order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderList(pub Vec<(String, String)>);

impl HeaderList {
    /// Builds a list from static pairs (defaults in configurations).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        HeaderList(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// Borrowed pairs, as the SDK's header functions take them.
    pub fn as_refs(&self) -> Vec<(&str, &str)> {
        self.0
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for HeaderList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor;

        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = HeaderList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of \"header-name\": \"string value\" pairs")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderList, A::Error> {
                let mut pairs = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, String>()? {
                    if name.is_empty() {
                        return Err(serde::de::Error::custom("a header name must not be empty"));
                    }
                    // Envoy keeps header names lower-case; a mixed-case name would never match on read.
                    pairs.push((name.to_ascii_lowercase(), value));
                }
                Ok(HeaderList(pairs))
            }
        }

        deserializer.deserialize_map(PairsVisitor)
    }
}

/// Encodes pairs as proxy-wasm does: `u32 count`, `count × (u32 name_len, u32 value_len)`,
/// then each `name \0 value \0`, all little-endian.
pub fn serialize_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(k, v)| 10 + k.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
}

/// Asks the host to answer the current HTTP stream with a local response.
///
/// `details` becomes Envoy's response-code details (`%RESPONSE_CODE_DETAILS%`); `grpc_status` -1 means
/// "not a gRPC reply". Returns the host's proxy-wasm status code on failure (the caller decides; the SDK
/// would panic instead).
pub fn send_local_response(
    status: u32,
    details: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Result<(), u32> {
    let pairs = serialize_pairs(headers);
    // SAFETY: every pointer/length pair points into a live slice for the duration of the call; the host copies.
    let status = unsafe {
        proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            pairs.as_ptr(),
            pairs.len(),
            -1,
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_list_keeps_document_order_and_lowercases() {
        let list: HeaderList =
            serde_json::from_str(r#"{"Zeta": "1", "alpha": "2", "who-am-i": "x"}"#).unwrap();
        assert_eq!(
            list,
            HeaderList::from_pairs(&[("zeta", "1"), ("alpha", "2"), ("who-am-i", "x")])
        );
    }

    #[test]
    fn header_list_rejects_non_string_values_and_empty_names() {
        assert!(serde_json::from_str::<HeaderList>(r#"{"a": 1}"#).is_err());
        assert!(serde_json::from_str::<HeaderList>(r#"{"": "x"}"#).is_err());
        assert!(serde_json::from_str::<HeaderList>(r#"["a"]"#).is_err());
    }

    #[test]
    fn pairs_encoding_matches_the_spec() {
        let bytes = serialize_pairs(&[("a", "12"), ("bc", "")]);
        let mut want = vec![2, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b"a\x0012\x00bc\x00\x00");
        assert_eq!(bytes, want);
    }
}
