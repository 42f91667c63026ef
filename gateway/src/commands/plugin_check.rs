//! `wasmgate plugin check FILE.wasm`: does this module run as a plugin here, with this
//! configuration? Loads, links, starts and configures it with the runtime's own `Runtime` and
//! `Plugin` (`wasmgate_runtime::check_module`, what the gateway does).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use wasmgate_conf::{Document, Resource, WasmPlugin};
use wasmgate_runtime::{CheckFailure, CheckOptions};

use super::fail;

const COMMAND: &str = "plugin check";

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The module (`.wasm`).
    pub file: PathBuf,
    /// Plugin configuration handed to `proxy_on_configure`, as the WasmPlugin's `pluginConfig`
    /// in JSON (default: empty). Overrides --from-wasmplugin.
    #[arg(long, value_name = "JSON", conflicts_with = "config_file")]
    pub config: Option<String>,
    /// Read the plugin configuration from a file (bytes handed over as they are).
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// VM configuration handed to `proxy_on_vm_start` (default: empty).
    #[arg(long, value_name = "STR")]
    pub vm_config: Option<String>,
    /// Environment variable of the VM, `KEY=VALUE`, as `vmConfig.env` sets them (repeatable).
    /// Added to those of --from-wasmplugin; a repeated key takes the last value.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Root id (the WasmPlugin's `pluginName`). Overrides --from-wasmplugin.
    #[arg(long, value_name = "ID")]
    pub root_id: Option<String>,
    /// Plugin name (`plugin_name` property), `namespace.name` as the gateway names it
    /// (default: `check`). With --from-wasmplugin, also selects the WasmPlugin in the file.
    #[arg(long, value_name = "NS.NAME")]
    pub name: Option<String>,
    /// Take `pluginConfig`, `pluginName`, the `vmConfig.env` and the name from the WasmPlugin
    /// (or ServiceMeshExtension) in this YAML file. HOST env vars are copied from this process's
    /// environment, as the gateway does. The module is still FILE: the URL is not fetched.
    #[arg(long, value_name = "YAML")]
    pub from_wasmplugin: Option<PathBuf>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    if k.is_empty() {
        return Err(format!("empty variable name in {s:?}"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// Runs the check and prints the report (stdout), or the reason and the plugin's log (stderr,
/// exit 1).
pub fn run(args: &CheckArgs) -> ExitCode {
    let options = match options(args) {
        Ok(o) => o,
        Err(e) => return fail(COMMAND, e),
    };
    let bytes = match std::fs::read(&args.file) {
        Ok(b) => b,
        Err(e) => return fail(COMMAND, format_args!("{}: {e}", args.file.display())),
    };
    match wasmgate_runtime::check_module(&bytes, &options) {
        Ok(report) => {
            println!("module:      {}", args.file.display());
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(CheckFailure { error: e, logs }) => {
            let code = fail(
                COMMAND,
                format_args!("{}: the plugin would not run: {e}", args.file.display()),
            );
            if !logs.is_empty() {
                eprintln!("log while starting and configuring:");
                for (level, message) in &logs {
                    eprintln!("  [{level:?}] {message}");
                }
            }
            code
        }
    }
}

/// The check options the flags (and the WasmPlugin file, if any) describe.
fn options(args: &CheckArgs) -> Result<CheckOptions, String> {
    let mut opts = CheckOptions::default();
    if let Some(path) = &args.from_wasmplugin {
        let plugin = wasm_plugin_from(path, args.name.as_deref())?;
        let spec = &plugin.spec;
        opts.configuration = spec.plugin_config_json().into_bytes();
        opts.root_id = spec.root_id().to_owned();
        opts.name = format!("{}.{}", plugin.metadata.namespace, plugin.metadata.name);
        opts.env = spec
            .inline_env()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for key in spec.host_env_keys() {
            if let Ok(value) = std::env::var(key) {
                opts.env.push((key.to_owned(), value));
            }
        }
    }
    if let Some(config) = &args.config {
        opts.configuration = config.clone().into_bytes();
    }
    if let Some(path) = &args.config_file {
        opts.configuration =
            std::fs::read(path).map_err(|e| format!("--config-file {}: {e}", path.display()))?;
    }
    if let Some(vm) = &args.vm_config {
        opts.vm_configuration = vm.clone().into_bytes();
    }
    for (k, v) in &args.env {
        opts.env.retain(|(key, _)| key != k);
        opts.env.push((k.clone(), v.clone()));
    }
    if let Some(id) = &args.root_id {
        opts.root_id = id.clone();
    }
    if let Some(name) = &args.name {
        opts.name = name.clone();
    }
    Ok(opts)
}

/// The one WasmPlugin of `path` (or the one named `name`, `namespace.name` or `name`).
/// ServiceMeshExtensions count as their WasmPlugin translation.
fn wasm_plugin_from(path: &Path, name: Option<&str>) -> Result<WasmPlugin, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--from-wasmplugin {}: {e}", path.display()))?;
    let docs = wasmgate_conf::parse_file(path, &text).map_err(|e| e.to_string())?;
    let mut plugins = Vec::new();
    let mut errors = Vec::new();
    for (_, doc) in docs {
        match doc {
            Document::Valid {
                resource: Resource::WasmPlugin(p),
                ..
            } => plugins.push(p),
            Document::Invalid { errors: e, .. } | Document::Unidentified { errors: e } => {
                errors.extend(e.iter().map(ToString::to_string));
            }
            Document::Valid { .. } | Document::Ignored(_) => {}
        }
    }
    let full_name = |p: &WasmPlugin| format!("{}.{}", p.metadata.namespace, p.metadata.name);
    if let Some(name) = name {
        plugins.retain(|p| full_name(p) == name || p.metadata.name == name);
    }
    match plugins.len() {
        1 => Ok(plugins.remove(0)),
        0 if !errors.is_empty() => Err(errors.join("\n")),
        0 => Err(format!(
            "--from-wasmplugin {}: no valid WasmPlugin{}",
            path.display(),
            name.map(|n| format!(" named {n}")).unwrap_or_default()
        )),
        _ => Err(format!(
            "--from-wasmplugin {}: {} WasmPlugins ({}); choose one with --name",
            path.display(),
            plugins.len(),
            plugins.iter().map(full_name).collect::<Vec<_>>().join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn parse(args: &[&str]) -> CheckArgs {
        let cli =
            crate::cli::Cli::try_parse_from(["wasmgate", "plugin", "check"].iter().chain(args))
                .unwrap();
        match cli.command {
            crate::cli::Command::Plugin(super::super::PluginCommand::Check(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_override_the_wasmplugin_file() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("p.yaml");
        std::fs::write(
            &yaml,
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: auth, namespace: edge}\n\
             spec:\n  url: file:///x.wasm\n  pluginName: root-a\n  pluginConfig: {b: 1, a: \"x\"}\n\
             \x20 vmConfig:\n    env:\n    - {name: MODE, value: strict}\n    - {name: KEEP, value: kept}\n",
        )
        .unwrap();
        let from_file = parse(&["m.wasm", "--from-wasmplugin", yaml.to_str().unwrap()]);
        let o = options(&from_file).unwrap();
        assert_eq!(o.configuration, br#"{"a":"x","b":1}"#);
        assert_eq!(o.root_id, "root-a");
        assert_eq!(o.name, "edge.auth");
        assert_eq!(
            o.env,
            [
                ("MODE".into(), "strict".into()),
                ("KEEP".into(), "kept".into())
            ]
        );

        let overridden = parse(&[
            "m.wasm",
            "--from-wasmplugin",
            yaml.to_str().unwrap(),
            "--config",
            "{}",
            "--env",
            "MODE=lax",
            "--root-id",
            "other",
        ]);
        let o = options(&overridden).unwrap();
        assert_eq!(o.configuration, b"{}");
        assert_eq!(o.root_id, "other");
        assert_eq!(
            o.env,
            [
                ("KEEP".into(), "kept".into()),
                ("MODE".into(), "lax".into())
            ]
        );

        let wrong = parse(&[
            "m.wasm",
            "--from-wasmplugin",
            yaml.to_str().unwrap(),
            "--name",
            "edge.other",
        ]);
        let err = options(&wrong).unwrap_err();
        assert!(
            err.contains("no valid WasmPlugin named edge.other"),
            "{err}"
        );
    }

    #[test]
    fn config_and_config_file_conflict() {
        let r = crate::cli::Cli::try_parse_from([
            "wasmgate",
            "plugin",
            "check",
            "m.wasm",
            "--config",
            "{}",
            "--config-file",
            "c.json",
        ]);
        assert!(r.is_err());
        assert!(
            crate::cli::Cli::try_parse_from(["wasmgate", "plugin", "check", "m", "--env", "NOEQ"])
                .is_err()
        );
    }
}
