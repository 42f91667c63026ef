//! Static checks of the container packaging in `docker/`. Our machines have no Docker engine, so the
//! Dockerfile and the compose files are checked for everything that can be known without one:
//! YAML shape, paths that must exist, image tags, port syntax, the build context the Dockerfile
//! copies from, and — with the real binary — that every config directory a compose file mounts
//! passes `wasmgate validate`. Overlays (`compose.offline.yaml`) are merged onto `compose.yaml` the
//! way Docker Compose merges them, and the merged project is checked as a whole.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::{Mapping, Value};
use wasmgate_e2e::wasmgate_bin;

/// Where the config directory is mounted in the gateway container (the image's `CMD` uses it).
const CONFIG_TARGET: &str = "/etc/wasmgate";
/// Where the image ships our plugins (see docker/Dockerfile).
const IMAGE_PLUGINS: &str = "/usr/share/wasmgate/plugins/";
const ADMIN_PORT: u16 = 15000;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

fn docker_dir() -> PathBuf {
    repo_root().join("docker")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    serde_yaml::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", path.display()))
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

// ----------------------------------------------------------------------------------------------
// Compose projects

/// A compose project: `compose.yaml`, optionally with one overlay, merged.
struct Project {
    dir: PathBuf,
    files: Vec<PathBuf>,
    merged: Value,
}

impl Project {
    fn name(&self) -> String {
        let names: Vec<String> = self
            .files
            .iter()
            .map(|f| {
                f.strip_prefix(repo_root())
                    .unwrap_or(f)
                    .display()
                    .to_string()
            })
            .collect();
        names.join(" + ")
    }

    fn services(&self) -> &Mapping {
        self.merged
            .get("services")
            .and_then(Value::as_mapping)
            .unwrap_or_else(|| panic!("{}: no `services` mapping", self.name()))
    }

    fn service(&self, name: &str) -> Option<&Value> {
        self.services().get(name)
    }
}

/// Every project: for each `docker/<scenario>/compose.yaml`, the base alone and the base with each
/// `compose.<variant>.yaml` overlay beside it.
fn projects() -> Vec<Project> {
    let mut projects = Vec::new();
    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(docker_dir())
        .expect("docker/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    scenarios.sort();
    for dir in scenarios {
        let base = dir.join("compose.yaml");
        let mut overlays = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("read scenario dir") {
            let path = entry.expect("dir entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let is_compose = name.starts_with("compose") || name.starts_with("docker-compose");
            if !is_compose || path == base {
                continue;
            }
            assert!(
                name.starts_with("compose.") && name.ends_with(".yaml"),
                "{}: name overlays compose.<variant>.yaml",
                path.display()
            );
            overlays.push(path);
        }
        if !base.exists() {
            assert!(
                overlays.is_empty(),
                "{}: overlays without compose.yaml",
                dir.display()
            );
            continue;
        }
        overlays.sort();
        let base_yaml = yaml(&base);
        projects.push(Project {
            dir: dir.clone(),
            files: vec![base.clone()],
            merged: base_yaml.clone(),
        });
        for overlay in overlays {
            let mut merged = base_yaml.clone();
            merge(&mut merged, &yaml(&overlay), "");
            projects.push(Project {
                dir: dir.clone(),
                files: vec![base.clone(), overlay],
                merged,
            });
        }
    }
    projects
}

/// Docker Compose's merge of an overlay: mappings merge key by key, a service's `volumes` merge by
/// container target and `ports` are appended; any other value is replaced.
fn merge(base: &mut Value, overlay: &Value, key: &str) {
    match (base, overlay) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                let k_str = k.as_str().unwrap_or_default().to_owned();
                match b.get_mut(k) {
                    Some(existing) => merge(existing, v, &k_str),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Sequence(b), Value::Sequence(o)) if key == "volumes" => {
            for v in o {
                let target = mount(v).target;
                match b.iter_mut().find(|x| mount(x).target == target) {
                    Some(slot) => *slot = v.clone(),
                    None => b.push(v.clone()),
                }
            }
        }
        (Value::Sequence(b), Value::Sequence(o)) if key == "ports" => {
            for v in o {
                if !b.contains(v) {
                    b.push(v.clone());
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

#[derive(Debug)]
struct Mount {
    bind: bool,
    source: String,
    target: String,
    read_only: bool,
}

/// A service volume in the short (`src:dst[:ro]`) or the long syntax.
fn mount(v: &Value) -> Mount {
    if let Some(s) = v.as_str() {
        let parts: Vec<&str> = s.split(':').collect();
        assert!(
            (2..=3).contains(&parts.len()),
            "volume {s:?}: expected SOURCE:TARGET[:MODE]"
        );
        return Mount {
            bind: parts[0].starts_with(['.', '/', '~']),
            source: parts[0].to_owned(),
            target: parts[1].to_owned(),
            read_only: parts
                .get(2)
                .is_some_and(|m| m.split(',').any(|o| o == "ro")),
        };
    }
    let kind = str_of(v, "type").unwrap_or_else(|| panic!("volume {v:?}: no `type`"));
    Mount {
        bind: kind == "bind",
        source: str_of(v, "source")
            .unwrap_or_else(|| panic!("volume {v:?}: no `source`"))
            .to_owned(),
        target: str_of(v, "target")
            .unwrap_or_else(|| panic!("volume {v:?}: no `target`"))
            .to_owned(),
        read_only: v.get("read_only").and_then(Value::as_bool).unwrap_or(false),
    }
}

fn mounts(service: &Value) -> Vec<Mount> {
    service
        .get("volumes")
        .and_then(Value::as_sequence)
        .map(|s| s.iter().map(mount).collect())
        .unwrap_or_default()
}

fn command(service: &Value) -> Vec<String> {
    match service.get("command") {
        None => Vec::new(),
        Some(Value::Sequence(s)) => s
            .iter()
            .map(|v| v.as_str().expect("command items are strings").to_owned())
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(other) => panic!("command {other:?}: expected a list or a string"),
    }
}

fn env(service: &Value, name: &str) -> Option<String> {
    match service.get("environment")? {
        Value::Mapping(m) => m.get(name).map(|v| match v {
            Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .expect("scalar")
                .trim()
                .to_owned(),
        }),
        Value::Sequence(s) => s
            .iter()
            .filter_map(Value::as_str)
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_owned)),
        other => panic!("environment {other:?}: expected a mapping or a list"),
    }
}

fn depends_on(service: &Value) -> Vec<(String, String)> {
    match service.get("depends_on") {
        None => Vec::new(),
        Some(Value::Sequence(s)) => s
            .iter()
            .map(|v| {
                (
                    v.as_str().expect("service name").to_owned(),
                    "service_started".to_owned(),
                )
            })
            .collect(),
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().expect("service name").to_owned(),
                    str_of(v, "condition")
                        .unwrap_or("service_started")
                        .to_owned(),
                )
            })
            .collect(),
        Some(other) => panic!("depends_on {other:?}: expected a list or a mapping"),
    }
}

/// `[registry/]repo[:port]/name:tag` or `...@sha256:...`: a tag (not `latest`) or a digest.
fn check_image_ref(project: &str, service: &str, image: &str) {
    let last = image.rsplit('/').next().unwrap_or(image);
    let pinned = image.contains("@sha256:")
        || last
            .split_once(':')
            .is_some_and(|(name, tag)| !name.is_empty() && !tag.is_empty() && tag != "latest");
    assert!(
        pinned,
        "{project}: service {service}: image {image:?} needs an explicit tag (not latest) or digest"
    );
}

/// `"HOST:CONTAINER"`, optionally `"IP:HOST:CONTAINER"` and `/tcp|/udp`; returns the ports.
fn parse_port(project: &str, service: &str, v: &Value) -> (u16, u16) {
    let s = v.as_str().unwrap_or_else(|| {
        panic!(
            "{project}: service {service}: port {v:?} must be a quoted \"HOST:CONTAINER\" string"
        )
    });
    let spec = s
        .strip_suffix("/tcp")
        .or_else(|| s.strip_suffix("/udp"))
        .unwrap_or(s);
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, container) = match parts.as_slice() {
        [h, c] => (h, c),
        [ip, h, c] => {
            assert!(
                ip.parse::<std::net::Ipv4Addr>().is_ok(),
                "{project}: service {service}: port {s:?}: bad host IP"
            );
            (h, c)
        }
        _ => panic!("{project}: service {service}: port {s:?} is not \"HOST:CONTAINER\""),
    };
    let port = |p: &str| {
        p.parse::<u16>().ok().filter(|p| *p > 0).unwrap_or_else(|| {
            panic!("{project}: service {service}: port {s:?}: {p:?} is not a port")
        })
    };
    (port(host), port(container))
}

/// A compose path (`./config`, `../..`) relative to the compose file's directory.
fn resolve(dir: &Path, p: &str) -> PathBuf {
    let path = dir.join(p);
    path.canonicalize()
        .unwrap_or_else(|e| panic!("{} (from {p:?} in {}): {e}", path.display(), dir.display()))
}

#[test]
fn compose_projects_are_well_formed() {
    let projects = projects();
    let scenarios: BTreeSet<String> = projects
        .iter()
        .map(|p| p.dir.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for required in ["bookinfo", "ratelimit"] {
        assert!(
            scenarios.contains(required),
            "docker/{required}/compose.yaml is missing"
        );
    }
    for project in &projects {
        assert!(
            projects.iter().filter(|p| p.dir == project.dir).count() >= 2,
            "{}: every scenario offers an offline overlay (compose.offline.yaml)",
            project.name()
        );
        check_project(project);
    }
}

fn check_project(project: &Project) {
    let name = project.name();
    let raw: String = project.files.iter().map(|f| read(f)).collect();
    let services = project.services();
    assert!(!services.is_empty(), "{name}: no services");
    let declared_volumes: BTreeSet<String> = project
        .merged
        .get("volumes")
        .and_then(Value::as_mapping)
        .map(|m| {
            m.keys()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();

    for (svc_name, svc) in services {
        let svc_name = svc_name.as_str().expect("service names are strings");
        let image = str_of(svc, "image").unwrap_or_else(|| {
            panic!("{name}: service {svc_name} names no image (built ones too: wasmgate:dev)")
        });
        check_image_ref(&name, svc_name, image);

        if let Some(build) = svc.get("build") {
            let (context, dockerfile) = match build {
                Value::String(c) => (c.as_str(), "Dockerfile"),
                b => (
                    str_of(b, "context").unwrap_or("."),
                    str_of(b, "dockerfile").unwrap_or("Dockerfile"),
                ),
            };
            let context = resolve(&project.dir, context);
            assert!(
                context.is_dir(),
                "{name}: {svc_name}: build context {} is not a directory",
                context.display()
            );
            let dockerfile = context.join(dockerfile);
            assert!(
                dockerfile.is_file(),
                "{name}: {svc_name}: {} does not exist",
                dockerfile.display()
            );
        }

        for m in mounts(svc) {
            if m.bind {
                let source = resolve(&project.dir, &m.source);
                assert!(
                    source.exists(),
                    "{name}: {svc_name}: bind source {} missing",
                    source.display()
                );
            } else {
                assert!(
                    declared_volumes.contains(&m.source),
                    "{name}: {svc_name}: named volume {:?} is not declared under top-level `volumes`",
                    m.source
                );
            }
        }

        if let Some(ports) = svc.get("ports") {
            for p in ports.as_sequence().expect("ports is a list") {
                parse_port(&name, svc_name, p);
                // Quoted in the file itself: an unquoted 22:22 is a base-60 number in YAML 1.1.
                let s = p.as_str().unwrap_or_default();
                assert!(
                    raw.contains(&format!("\"{s}\"")),
                    "{name}: {svc_name}: write the port as a quoted string: \"{s}\""
                );
            }
        }

        for (dep, condition) in depends_on(svc) {
            let target = project
                .service(&dep)
                .unwrap_or_else(|| panic!("{name}: {svc_name} depends on unknown service {dep}"));
            match condition.as_str() {
                "service_started" | "service_completed_successfully" => {}
                "service_healthy" => assert!(
                    target.get("healthcheck").is_some() || builds_our_image(project, target),
                    "{name}: {svc_name} waits for {dep} to be healthy, but {dep} has no healthcheck"
                ),
                other => panic!("{name}: {svc_name}: unknown depends_on condition {other:?}"),
            }
        }
    }
}

/// Whether a service runs the image of docker/Dockerfile (whose HEALTHCHECK it then has).
fn builds_our_image(project: &Project, svc: &Value) -> bool {
    let Some(build) = svc.get("build") else {
        return false;
    };
    let context = resolve(&project.dir, str_of(build, "context").unwrap_or("."));
    let dockerfile = context.join(str_of(build, "dockerfile").unwrap_or("Dockerfile"));
    dockerfile.canonicalize().ok() == docker_dir().join("Dockerfile").canonicalize().ok()
}

/// The gateway service: the one that runs `wasmgate run`.
fn gateway(project: &Project) -> (&str, &Value) {
    let gateways: Vec<(&str, &Value)> = project
        .services()
        .iter()
        .filter(|(_, s)| command(s).first().map(String::as_str) == Some("run"))
        .map(|(n, s)| (n.as_str().expect("service name"), s))
        .collect();
    assert_eq!(
        gateways.len(),
        1,
        "{}: expected exactly one service running `wasmgate run`",
        project.name()
    );
    gateways[0]
}

/// Every resource of every `*.yaml`/`*.yml` file in a config directory, by file name.
fn config_documents(dir: &Path) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = read(&file);
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        // Documents are separated by `---` lines (all our files write them so).
        let mut chunks = vec![String::new()];
        for line in text.lines() {
            if line.trim_end() == "---" {
                chunks.push(String::new());
            } else {
                let chunk = chunks.last_mut().expect("one chunk");
                chunk.push_str(line);
                chunk.push('\n');
            }
        }
        for chunk in chunks {
            let value: Value =
                serde_yaml::from_str(&chunk).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if !value.is_null() {
                docs.push((name.clone(), value));
            }
        }
    }
    docs
}

fn wasm_plugin_urls(docs: &[(String, Value)]) -> Vec<String> {
    docs.iter()
        .filter(|(_, d)| str_of(d, "kind") == Some("WasmPlugin"))
        .map(|(f, d)| {
            d.get("spec")
                .and_then(|s| str_of(s, "url"))
                .unwrap_or_else(|| panic!("{f}: WasmPlugin without spec.url"))
                .to_owned()
        })
        .collect()
}

fn run_validate(dir: &Path) -> (bool, String) {
    let out = Command::new(wasmgate_bin())
        .arg("validate")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run wasmgate validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn gateway_services_run_a_valid_mounted_config() {
    for project in projects() {
        let name = project.name();
        let (gw_name, gw) = gateway(&project);
        assert!(
            builds_our_image(&project, gw),
            "{name}: {gw_name} is built from docker/Dockerfile"
        );

        let cmd = command(gw);
        let flag = |f: &str| {
            cmd.windows(2)
                .find(|w| w[0] == f)
                .map(|w| w[1].clone())
                .unwrap_or_else(|| panic!("{name}: {gw_name}: command {cmd:?} lacks {f}"))
        };
        assert_eq!(
            flag("--config-dir"),
            CONFIG_TARGET,
            "{name}: {gw_name}: --config-dir"
        );
        let admin: std::net::SocketAddr = flag("--admin-addr")
            .parse()
            .expect("--admin-addr is an address");
        assert!(
            admin.ip().is_unspecified() && admin.port() == ADMIN_PORT,
            "{name}: the admin server must listen on 0.0.0.0:{ADMIN_PORT} to be published (got {admin})"
        );

        let config_mount = mounts(gw)
            .into_iter()
            .find(|m| m.target == CONFIG_TARGET)
            .unwrap_or_else(|| panic!("{name}: {gw_name} mounts nothing at {CONFIG_TARGET}"));
        assert!(
            config_mount.bind && config_mount.read_only,
            "{name}: {CONFIG_TARGET} is a read-only bind mount"
        );
        let config_dir = resolve(&project.dir, &config_mount.source);

        let (ok, output) = run_validate(&config_dir);
        assert!(
            ok,
            "{name}: wasmgate validate {} failed:\n{output}",
            config_dir.display()
        );

        // Published ports: a Gateway listener and the admin server.
        let docs = config_documents(&config_dir);
        let listener_ports: BTreeSet<u16> = docs
            .iter()
            .filter(|(_, d)| str_of(d, "kind") == Some("Gateway"))
            .flat_map(|(_, d)| {
                d.get("spec")
                    .and_then(|s| s.get("listeners"))
                    .and_then(Value::as_sequence)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|l| l.get("port").and_then(Value::as_u64))
            .map(|p| u16::try_from(p).expect("port fits u16"))
            .collect();
        assert!(
            !listener_ports.is_empty(),
            "{name}: the mounted config has no Gateway listener"
        );
        let published: BTreeSet<u16> = gw
            .get("ports")
            .and_then(Value::as_sequence)
            .expect("the gateway publishes ports")
            .iter()
            .map(|p| parse_port(&name, gw_name, p).1)
            .collect();
        assert!(
            published.contains(&ADMIN_PORT),
            "{name}: admin port {ADMIN_PORT} not published"
        );
        assert!(
            listener_ports.iter().any(|p| published.contains(p)),
            "{name}: none of the listener ports {listener_ports:?} is published ({published:?})"
        );
        for p in &listener_ports {
            assert!(
                *p >= 1024,
                "{name}: listener port {p}: the image runs as a non-root user"
            );
        }

        check_plugin_sources(&project, gw_name, gw, &wasm_plugin_urls(&docs));
    }
}

/// Every module URL a gateway will fetch can be served: `file://` from the image, `oci://` from a
/// compose service only after a one-shot `wasmgate push` of a module the image ships, over the
/// insecure (plain HTTP) list; anything else is an outside registry.
fn check_plugin_sources(project: &Project, gw_name: &str, gw: &Value, urls: &[String]) {
    let name = project.name();
    let shipped = shipped_plugins();
    for url in urls {
        if let Some(path) = url.strip_prefix("file://") {
            let file = path
                .strip_prefix(IMAGE_PLUGINS)
                .unwrap_or_else(|| panic!("{name}: {url}: not a module the image ships"));
            assert!(
                shipped.contains(file),
                "{name}: {url}: the image does not ship {file}"
            );
            continue;
        }
        let Some(rest) = url.strip_prefix("oci://") else {
            continue;
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let host = authority.split(':').next().unwrap_or_default();
        if project.service(host).is_none() {
            continue; // an outside registry such as ghcr.io
        }
        let pushers: Vec<(&str, &Value)> = project
            .services()
            .iter()
            .filter(|(_, s)| {
                let c = command(s);
                c.first().map(String::as_str) == Some("push") && c.get(2) == Some(url)
            })
            .map(|(n, s)| (n.as_str().expect("service name"), s))
            .collect();
        assert_eq!(
            pushers.len(),
            1,
            "{name}: exactly one service must push {url}"
        );
        let (pusher_name, pusher) = pushers[0];
        let source = command(pusher)[1].clone();
        let file = source.strip_prefix(IMAGE_PLUGINS).unwrap_or_else(|| {
            panic!("{name}: {pusher_name} pushes {source}, not a module of the image")
        });
        assert!(
            shipped.contains(file),
            "{name}: {pusher_name}: the image does not ship {file}"
        );
        assert!(
            builds_our_image(project, pusher),
            "{name}: {pusher_name} must build docker/Dockerfile (so `up --build` never pulls wasmgate:dev)"
        );
        assert!(
            depends_on(gw).contains(&(
                pusher_name.to_owned(),
                "service_completed_successfully".to_owned()
            )),
            "{name}: {gw_name} must wait for {pusher_name} (condition: service_completed_successfully)"
        );
        assert!(
            depends_on(pusher)
                .iter()
                .any(|(d, c)| d == host && c == "service_healthy"),
            "{name}: {pusher_name} must wait for {host} to be healthy"
        );
        for (who, svc) in [(gw_name, gw), (pusher_name, pusher)] {
            let list = env(svc, "WASMGATE_INSECURE_REGISTRIES").unwrap_or_default();
            assert!(
                list.split(',')
                    .any(|r| r.trim() == authority || r.trim() == "*"),
                "{name}: {who}: WASMGATE_INSECURE_REGISTRIES must list the plain-HTTP registry {authority}"
            );
        }
    }
}

/// The file names of the modules the image copies into `/usr/share/wasmgate/plugins/`.
fn shipped_plugins() -> BTreeSet<String> {
    let dockerfile = Dockerfile::read();
    let mut shipped = BTreeSet::new();
    for (instr, args) in &dockerfile.instructions {
        if instr != "COPY" || args.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().collect();
        let Some((dest, sources)) = words.split_last() else {
            continue;
        };
        if !dest.starts_with(IMAGE_PLUGINS.trim_end_matches('/')) {
            continue;
        }
        for s in sources {
            let file = Path::new(s)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            shipped.insert(file);
        }
    }
    shipped
}

#[test]
fn offline_configs_differ_from_the_online_ones_only_in_module_urls() {
    for project in projects() {
        if project.files.len() < 2 {
            continue;
        }
        let base = Project {
            dir: project.dir.clone(),
            files: vec![project.files[0].clone()],
            merged: yaml(&project.files[0]),
        };
        let online_dir = config_dir_of(&base);
        let offline_dir = config_dir_of(&project);
        assert_ne!(
            online_dir,
            offline_dir,
            "{}: the overlay mounts its own config",
            project.name()
        );
        let strip = |docs: Vec<(String, Value)>| -> Vec<(String, Value)> {
            docs.into_iter()
                .map(|(f, mut d)| {
                    if let Some(spec) = d.get_mut("spec").and_then(Value::as_mapping_mut) {
                        spec.remove("url");
                    }
                    (f, d)
                })
                .collect()
        };
        let online = config_documents(&online_dir);
        let offline = config_documents(&offline_dir);
        assert_eq!(
            wasm_plugin_urls(&online).len(),
            wasm_plugin_urls(&offline).len(),
            "{}: same WasmPlugins online and offline",
            project.name()
        );
        for url in wasm_plugin_urls(&offline) {
            assert!(
                !url.contains("ghcr.io"),
                "{}: offline config still pulls {url}",
                project.name()
            );
        }
        assert_eq!(
            strip(online),
            strip(offline),
            "{}: {} and {} must hold the same resources except WasmPlugin urls",
            project.name(),
            online_dir.display(),
            offline_dir.display()
        );
    }
}

fn config_dir_of(project: &Project) -> PathBuf {
    let (_, gw) = gateway(project);
    let m = mounts(gw)
        .into_iter()
        .find(|m| m.target == CONFIG_TARGET)
        .expect("config mount");
    resolve(&project.dir, &m.source)
}

// ----------------------------------------------------------------------------------------------
// The Dockerfile

struct Dockerfile {
    /// (INSTRUCTION, arguments), continuation lines joined, comments dropped.
    instructions: Vec<(String, String)>,
}

impl Dockerfile {
    fn read() -> Self {
        let text = read(&docker_dir().join("Dockerfile"));
        let mut instructions = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(part) => {
                    current.push_str(part);
                    current.push(' ');
                }
                None => {
                    current.push_str(trimmed);
                    let (instr, args) = current
                        .split_once(char::is_whitespace)
                        .unwrap_or((&current, ""));
                    instructions.push((instr.to_ascii_uppercase(), args.trim().to_owned()));
                    current.clear();
                }
            }
        }
        assert!(
            current.is_empty(),
            "Dockerfile ends inside a continued line"
        );
        Self { instructions }
    }

    /// The instructions of each stage (from its FROM on).
    fn stages(&self) -> Vec<&[(String, String)]> {
        let starts: Vec<usize> = self
            .instructions
            .iter()
            .enumerate()
            .filter(|(_, (i, _))| i == "FROM")
            .map(|(n, _)| n)
            .collect();
        starts
            .iter()
            .enumerate()
            .map(|(k, &s)| {
                &self.instructions[s..*starts.get(k + 1).unwrap_or(&self.instructions.len())]
            })
            .collect()
    }
}

fn json_args(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("{args}: not exec (JSON) form: {e}"))
}

#[test]
fn dockerfile_has_the_stages_user_ports_healthcheck_and_entrypoint() {
    let df = Dockerfile::read();
    let stages = df.stages();
    assert!(
        stages.len() >= 2,
        "multi-stage: a builder and a runtime stage"
    );

    let builder = stages[0];
    assert_eq!(
        builder[0].1, "rust:1.95-bookworm AS builder",
        "builder base (the pinned toolchain)"
    );
    let build = builder
        .iter()
        .find(|(i, a)| i == "RUN" && a.contains("cargo build"))
        .expect("the builder runs cargo build");
    for needle in [
        "--release",
        "--locked",
        "-p wasmgate",
        "--mount=type=cache,target=/usr/local/cargo/registry",
        "--mount=type=cache,target=/src/target",
        "target/release/wasmgate /out/wasmgate",
    ] {
        assert!(
            build.1.contains(needle),
            "builder RUN lacks {needle:?}: {}",
            build.1
        );
    }
    assert!(
        builder
            .iter()
            .any(|(i, a)| i == "RUN" && a.contains("cmake")),
        "the builder installs cmake (zlib-ng)"
    );

    let runtime = *stages.last().unwrap();
    assert!(
        runtime[0].1.starts_with("debian:bookworm-slim"),
        "runtime base: {}",
        runtime[0].1
    );
    let last = |name: &str| {
        runtime
            .iter()
            .rev()
            .find(|(i, _)| i == name)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("runtime stage has no {name}"))
    };
    assert!(
        runtime.iter().any(|(i, a)| i == "COPY"
            && a.starts_with("--from=builder")
            && a.contains("/usr/local/bin/wasmgate")),
        "the runtime stage copies the binary from the builder"
    );
    let user = last("USER");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        uid != "root" && uid != "0" && !uid.is_empty(),
        "USER {user} must not be root"
    );

    let exposed: BTreeSet<&str> = runtime
        .iter()
        .filter(|(i, _)| i == "EXPOSE")
        .flat_map(|(_, a)| a.split_whitespace())
        .collect();
    assert!(
        exposed.contains("8080") && exposed.contains("15000"),
        "EXPOSE 8080 15000 (got {exposed:?})"
    );

    let health = last("HEALTHCHECK");
    assert!(
        health.contains("CMD"),
        "HEALTHCHECK runs a command: {health}"
    );
    assert!(
        health.contains("/ready") && health.contains(&ADMIN_PORT.to_string()),
        "HEALTHCHECK asks /ready on the admin port: {health}"
    );
    assert_eq!(json_args(&last("ENTRYPOINT")), ["wasmgate"]);
    assert_eq!(
        json_args(&last("CMD")),
        [
            "run",
            "--config-dir",
            CONFIG_TARGET,
            "--admin-addr",
            "0.0.0.0:15000"
        ]
    );
}

/// `.dockerignore` semantics (moby patternmatcher): the last pattern that matches a path or one of
/// its parent directories decides; `!` re-includes; `*` stays within one path segment, `**` spans
/// any number.
struct Ignore(Vec<(bool, Vec<String>)>);

impl Ignore {
    fn read() -> Self {
        let text = read(&docker_dir().join("Dockerfile.dockerignore"));
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (negate, pattern) = l.strip_prefix('!').map_or((false, l), |p| (true, p));
                let segs = pattern
                    .trim_matches('/')
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_owned)
                    .collect();
                (negate, segs)
            })
            .collect();
        Self(rules)
    }

    fn excluded(&self, path: &str) -> bool {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut excluded = false;
        for (negate, pattern) in &self.0 {
            let hit = (1..=segs.len()).any(|n| glob(pattern, &segs[..n]));
            if hit {
                excluded = !negate;
            }
        }
        excluded
    }
}

fn glob(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => (0..=path.len()).any(|k| glob(rest, &path[k..])),
        Some((p, rest)) => path
            .split_first()
            .is_some_and(|(s, tail)| segment(p.as_bytes(), s.as_bytes()) && glob(rest, tail)),
    }
}

fn segment(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|k| segment(rest, &s[k..])),
        Some((b'?', rest)) => !s.is_empty() && segment(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && segment(rest, &s[1..]),
    }
}

#[test]
fn dockerignore_matcher_follows_docker() {
    let ignore = Ignore(
        ["*", "!conf/", "!plugins/dist/", "**/target"]
            .iter()
            .map(|l| {
                let (negate, p) = l.strip_prefix('!').map_or((false, *l), |p| (true, p));
                (
                    negate,
                    p.trim_matches('/').split('/').map(str::to_owned).collect(),
                )
            })
            .collect(),
    );
    assert!(ignore.excluded("README.md"));
    assert!(ignore.excluded("plugins/basic-auth/src/lib.rs"));
    assert!(!ignore.excluded("conf/src/lib.rs"));
    assert!(!ignore.excluded("plugins/dist/basic-auth.wasm"));
    assert!(ignore.excluded("conf/target/debug/x"));
}

#[test]
fn dockerfile_copies_the_whole_workspace_from_the_context() {
    let root = repo_root();
    let df = Dockerfile::read();
    let ignore = Ignore::read();
    let mut copied = BTreeSet::new();
    for (instr, args) in &df.instructions {
        if (instr != "COPY" && instr != "ADD") || args.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = args
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let (_, sources) = words.split_last().expect("COPY SRC... DEST");
        for src in sources {
            let path = root.join(src);
            assert!(
                path.exists(),
                "COPY {src}: {} does not exist",
                path.display()
            );
            assert!(
                !ignore.excluded(src),
                "COPY {src}: excluded by docker/Dockerfile.dockerignore"
            );
            if path.is_dir() {
                // Something inside must get through too (a kept directory with every file ignored
                // would copy nothing).
                let inner = std::fs::read_dir(&path)
                    .expect("read dir")
                    .filter_map(Result::ok)
                    .any(|e| {
                        !ignore.excluded(&format!("{src}/{}", e.file_name().to_string_lossy()))
                    });
                assert!(
                    inner,
                    "COPY {src}: every entry is excluded by the ignore file"
                );
            }
            copied.insert(src.trim_end_matches('/').to_owned());
        }
    }
    // cargo loads every workspace member's manifest, so each member must be in the build.
    let manifest = read(&root.join("Cargo.toml"));
    let members_line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("root Cargo.toml lists workspace members on one line");
    let list = members_line
        .split_once('[')
        .and_then(|(_, r)| r.split_once(']'))
        .map(|(l, _)| l)
        .expect("members = [...]");
    for member in list
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
    {
        assert!(
            copied.contains(member),
            "the builder must COPY workspace member {member}"
        );
    }
    for file in ["Cargo.toml", "Cargo.lock"] {
        assert!(
            df.instructions
                .iter()
                .any(|(i, a)| i == "COPY" && a.split_whitespace().any(|w| w == file)),
            "the builder must COPY {file}"
        );
    }
    // The Wasm modules the image ships are the committed builds.
    for plugin in shipped_plugins() {
        assert!(
            root.join("plugins/dist").join(&plugin).is_file(),
            "plugins/dist/{plugin} missing"
        );
    }
}
