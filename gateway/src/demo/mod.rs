//! `wasmgate demo`: a working gateway with nothing else running and no files. An in-process
//! upstream answers like Bookinfo's productpage; the embedded config is Istio's bookinfo-gateway
//! as Gateway API resources. Adding a plugin to the demo is one more embedded YAML in [`FILES`].

mod upstream;

use std::path::PathBuf;

use crate::cli::DemoArgs;
use crate::reload::ConfigSource;

/// The embedded config files, as `(name, contents)`; `{{PORT}}`, `{{UPSTREAM}}` and
/// `{{PLUGIN_DIR}}` are substituted.
pub const FILES: &[(&str, &str)] = &[
    (
        "bookinfo-gateway.yaml",
        include_str!("bookinfo-gateway.yaml"),
    ),
    ("basic-auth.yaml", include_str!("basic-auth.yaml")),
];

/// Plugin modules the demo writes into its temp directory, for `file://` URLs.
pub const MODULES: &[(&str, &[u8])] = &[(
    "basic-auth.wasm",
    include_bytes!("../../../plugins/dist/basic-auth.wasm"),
)];

/// Runs the demo until Ctrl-C.
pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    // The upstream needs a runtime of its own before the gateway's starts; a small one suffices.
    let upstream_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let upstream = upstream_rt.block_on(upstream::start())?;
    // Kept until the demo ends; removed on drop.
    let plugin_dir = tempfile::Builder::new()
        .prefix("wasmgate-demo-")
        .tempdir()?;
    for (name, bytes) in MODULES {
        std::fs::write(plugin_dir.path().join(name), bytes)?;
    }
    let files = FILES
        .iter()
        .map(|(name, text)| {
            let text = text
                .replace("{{PORT}}", &args.port.to_string())
                .replace("{{UPSTREAM}}", &upstream.to_string())
                .replace("{{PLUGIN_DIR}}", &plugin_dir.path().display().to_string());
            (PathBuf::from(format!("<embedded>/{name}")), text)
        })
        .collect();
    let port = args.port;
    let admin = args.serve.admin_addr;
    let on_ready = Box::new(move || println!("{}", instructions(port, admin)));
    let result = crate::server::run(ConfigSource::Embedded(files), &args.serve, Some(on_ready));
    drop(plugin_dir);
    result
}

fn instructions(port: u16, admin: std::net::SocketAddr) -> String {
    let g = format!("http://127.0.0.1:{port}");
    format!(
        "\nwasmgate demo is running: Istio's bookinfo-gateway in front of an in-process productpage.\n\
         Try:\n\
         \x20 curl -s -o /dev/null -w '%{{http_code}}\\n' {g}/productpage     # 401: the basic-auth Wasm plugin\n\
         \x20 curl -s -H 'Authorization: Basic YWRtaW4zOmFkbWluMw==' {g}/productpage | grep -o '<title>.*</title>'  # 200\n\
         \x20 curl -s {g}/api/v1/products                               # 200, JSON list of books\n\
         \x20 curl -s -o /dev/null -w '%{{http_code}}\\n' {g}/static/x.css  # 200\n\
         \x20 curl -s -o /dev/null -w '%{{http_code}}\\n' {g}/nothing-here  # 404 (no route)\n\
         \x20 curl -s http://{admin}/ready                              # ready\n\
         \x20 curl -s http://{admin}/metrics | grep wasmgate_requests_total\n\
         \x20 curl -s http://{admin}/config_dump\n\
         Stop with Ctrl-C.\n"
    )
}
