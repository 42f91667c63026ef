//! Loads, links, starts and configures a plugin as the gateway would, and prints the report
//! (what `wasmgate plugin check` prints).
//!
//! Run with `cargo run -p wasmgate-runtime --example check -- plugin.wasm ['{"json":"config"}']`.

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: check FILE.wasm [CONFIG]"))?;
    let bytes = std::fs::read(&path)?;
    let options = wasmgate_runtime::CheckOptions {
        configuration: args.next().unwrap_or_default().into_bytes(),
        ..Default::default()
    };
    match wasmgate_runtime::check_module(&bytes, &options) {
        Ok(report) => {
            println!("{report}");
            Ok(())
        }
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    }
}
