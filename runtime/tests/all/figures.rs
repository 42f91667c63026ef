//! Figures, not assertions: run with `cargo test -p wasmgate-runtime --test all figures -- --ignored --nocapture`
//! (preferably `--release`). Timing targets belong in benchmarks, so these never fail on speed.

use std::time::Instant;

use wasmgate_runtime::*;

use crate::support::*;

#[test]
#[ignore]
fn per_stream_cost() {
    let e = env();
    let bytes = wat("counter");
    let t = Instant::now();
    let module = e.runtime.load_module(&bytes).unwrap();
    let compile = t.elapsed();
    let t = Instant::now();
    let plugin = Plugin::load(&e.runtime, &module, opts("")).unwrap();
    let load = t.elapsed();
    const N: u32 = 20_000;
    let t = Instant::now();
    for _ in 0..N {
        let mut stream = plugin.new_stream(StreamInfo::default());
        let mut h = request_headers();
        stream.on_request_headers(&mut h, true);
        stream.on_response_headers(&mut response_headers(), true);
        stream.on_log();
    }
    let per_stream = t.elapsed() / N;
    println!(
        "compile {compile:?}, plugin load (start + configure) {load:?}, \
         stream (create + request headers + response headers + log + delete) {per_stream:?}"
    );
}
