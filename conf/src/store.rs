//! The set of resources in force, and how a reload changes it.
//!
//! Rules (the gateway relies on them):
//! - a resource whose new version is invalid keeps its last good version in force; the rejected
//!   version and its errors are recorded in [`Snapshot::rejected`];
//! - a file that cannot be read or is not valid YAML keeps all its resources' last good versions;
//! - deleting a file removes its resources, and a resource removed from a file is removed;
//! - the same (kind, namespace, name) in two files: the first file by name wins (whether its version
//!   is valid or not), the other is rejected with an error naming both files;
//! - cross-resource facts are checked here: an HTTPS listener's certificateRef must name an existing
//!   `kubernetes.io/tls` Secret, in another namespace only if a ReferenceGrant there allows it
//!   (error: the Gateway version is rejected); an HTTPRoute parentRef to a missing Gateway or
//!   listener or to listeners whose `allowedRoutes` all refuse the route, a backendRef to another
//!   namespace that no ReferenceGrant allows, a WasmPlugin imagePullSecret that names no
//!   `kubernetes.io/dockerconfigjson` Secret in its namespace, and a listener whose port another
//!   Gateway (first by namespace/name) already serves with a different protocol, are warnings (the
//!   gateway enforces them when it compiles routes);
//! - a cross-resource error rejects only a version new in this reload; a kept last-good version
//!   that now fails one is reported as a warning;
//! - a document that cannot be identified (no kind, no name) keeps whatever was at the same
//!   document index of the same file;
//! - `generation` increments when anything in the snapshot changes (resources, rejections,
//!   ignored documents, warnings), and on the first load.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::allowed_routes::{HTTP_ROUTE_KIND, NotAllowed};
use crate::error::ConfigError;
use crate::gateway::{Gateway, Listener};
use crate::meta::{Kind, NamespacedName, ResourceKey};
use crate::namespace::{Namespace, namespace_labels};
use crate::parse::{Document, Resource, parse_file};
use crate::reference_grant::{
    ObjectRef, ReferenceGrant, gateway_ref, http_route_ref, not_permitted, reference_permitted,
};
use crate::route::HttpRoute;
use crate::secret::{SECRET_TYPE_DOCKER_CONFIG_JSON, SECRET_TYPE_TLS, Secret};
use crate::service::Service;
use crate::wasm_plugin::WasmPlugin;

pub use crate::dir::{is_config_file_name, read_dir_files};
pub use crate::snapshot::{HasMetadata, Ignored, Rejected, ReloadReport, Snapshot, Sourced};

/// One file given to [`ConfigStore::apply`]: its path and its text (or why it could not be read).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub contents: Result<String, String>,
}

impl SourceFile {
    pub fn new(path: impl Into<PathBuf>, contents: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            contents: Ok(contents.into()),
        }
    }
}

/// Holds the configuration in force across reloads. Not thread-safe by itself: one owner (the
/// gateway's reload task) calls `reload`, and publishes the returned `Arc<Snapshot>`.
#[derive(Debug, Default)]
pub struct ConfigStore {
    current: Arc<Snapshot>,
    next_seq: u64,
    loaded: bool,
}

impl ConfigStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The snapshot in force (empty, generation 0, before the first reload).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.clone()
    }

    /// Reads every `*.yaml` / `*.yml` file of `dir` (following symlinks, skipping hidden files such
    /// as a ConfigMap's `..data`) and applies them. If the directory itself cannot be listed,
    /// nothing changes and the report carries the error.
    pub fn reload(&mut self, dir: &Path) -> (Arc<Snapshot>, ReloadReport) {
        match read_dir_files(dir) {
            Ok(files) => self.apply(files),
            Err(e) => {
                let report = ReloadReport {
                    generation: self.current.generation,
                    new_errors: vec![e.clone()],
                    errors: vec![e],
                    warnings: self.current.warnings.clone(),
                    ..ReloadReport::default()
                };
                (self.current.clone(), report)
            }
        }
    }

    /// Applies the complete contents of the directory (every file, in any order). Files not listed
    /// are treated as deleted.
    pub fn apply(&mut self, mut files: Vec<SourceFile>) -> (Arc<Snapshot>, ReloadReport) {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let now = SystemTime::now();
        let prev = self.current.clone();
        let mut b = Builder::new(&prev, &mut self.next_seq, now);
        for file in &files {
            b.file(file);
        }
        b.cross_check();
        let mut next = b.finish();

        let mut report = diff(&prev, &next);
        let changed = !self.loaded || !prev.same_content(&next);
        next.generation = if changed {
            prev.generation + 1
        } else {
            prev.generation
        };
        self.loaded = true;
        report.generation = next.generation;
        report.changed = changed;
        report.errors = next.errors();
        let before = prev.errors();
        report.new_errors = report
            .errors
            .iter()
            .filter(|e| !before.contains(e))
            .cloned()
            .collect();
        report.warnings = next.warnings.clone();
        let next = if changed { Arc::new(next) } else { prev };
        self.current = next.clone();
        (next, report)
    }
}

/// `wasmgate validate DIR`: every problem of the directory, or the snapshot it would serve.
pub fn validate_dir(dir: &Path) -> Result<Snapshot, Vec<ConfigError>> {
    let mut store = ConfigStore::new();
    let (snapshot, report) = store.reload(dir);
    if report.errors.is_empty() {
        Ok((*snapshot).clone())
    } else {
        Err(report.errors)
    }
}

fn diff(prev: &Snapshot, next: &Snapshot) -> ReloadReport {
    let mut r = ReloadReport::default();
    fn one<T: PartialEq>(
        kind: Kind,
        a: &BTreeMap<NamespacedName, Sourced<T>>,
        b: &BTreeMap<NamespacedName, Sourced<T>>,
        r: &mut ReloadReport,
    ) {
        let key = |n: &NamespacedName| ResourceKey::new(kind, &n.namespace, &n.name);
        for (n, v) in b {
            match a.get(n) {
                None => r.added.push(key(n)),
                Some(old) if old.resource != v.resource => r.updated.push(key(n)),
                Some(_) => {}
            }
        }
        r.removed
            .extend(a.keys().filter(|n| !b.contains_key(*n)).map(key));
    }
    one(Kind::Gateway, &prev.gateways, &next.gateways, &mut r);
    one(Kind::HttpRoute, &prev.routes, &next.routes, &mut r);
    one(Kind::Service, &prev.services, &next.services, &mut r);
    one(Kind::Secret, &prev.secrets, &next.secrets, &mut r);
    one(
        Kind::WasmPlugin,
        &prev.wasm_plugins,
        &next.wasm_plugins,
        &mut r,
    );
    one(
        Kind::ReferenceGrant,
        &prev.reference_grants,
        &next.reference_grants,
        &mut r,
    );
    one(Kind::Namespace, &prev.namespaces, &next.namespaces, &mut r);
    r
}

/// A resource of any kind in force, during a build.
#[derive(Debug, Clone)]
struct Entry {
    resource: AnyResource,
    source: PathBuf,
    document: usize,
    seq: u64,
    first_seen: SystemTime,
}

#[derive(Debug, Clone)]
enum AnyResource {
    Gateway(Arc<Gateway>),
    HttpRoute(Arc<HttpRoute>),
    Service(Arc<Service>),
    Secret(Arc<Secret>),
    WasmPlugin(Arc<WasmPlugin>),
    ReferenceGrant(Arc<ReferenceGrant>),
    Namespace(Arc<Namespace>),
}

impl AnyResource {
    fn from_resource(r: Resource) -> Self {
        match r {
            Resource::Gateway(r) => AnyResource::Gateway(Arc::new(r)),
            Resource::HttpRoute(r) => AnyResource::HttpRoute(Arc::new(r)),
            Resource::Service(r) => AnyResource::Service(Arc::new(r)),
            Resource::Secret(r) => AnyResource::Secret(Arc::new(r)),
            Resource::WasmPlugin(r) => AnyResource::WasmPlugin(Arc::new(r)),
            Resource::ReferenceGrant(r) => AnyResource::ReferenceGrant(Arc::new(r)),
            Resource::Namespace(r) => AnyResource::Namespace(Arc::new(r)),
        }
    }

    fn same_version(&self, other: &AnyResource) -> bool {
        match (self, other) {
            (AnyResource::Gateway(a), AnyResource::Gateway(b)) => a == b,
            (AnyResource::HttpRoute(a), AnyResource::HttpRoute(b)) => a == b,
            (AnyResource::Service(a), AnyResource::Service(b)) => a == b,
            (AnyResource::Secret(a), AnyResource::Secret(b)) => a == b,
            (AnyResource::WasmPlugin(a), AnyResource::WasmPlugin(b)) => a == b,
            (AnyResource::ReferenceGrant(a), AnyResource::ReferenceGrant(b)) => a == b,
            (AnyResource::Namespace(a), AnyResource::Namespace(b)) => a == b,
            _ => false,
        }
    }
}

/// Where a key was first claimed in this build (for duplicate detection).
#[derive(Debug, Clone)]
struct Claim {
    file: PathBuf,
    document: Option<usize>,
}

struct Builder<'a> {
    prev: &'a Snapshot,
    next_seq: &'a mut u64,
    now: SystemTime,
    in_force: BTreeMap<ResourceKey, Entry>,
    /// Keys whose version in `in_force` is new in this build (not a kept last-good one).
    fresh: HashMap<ResourceKey, ()>,
    claims: HashMap<ResourceKey, Claim>,
    ignored: Vec<Ignored>,
    rejected: Vec<Rejected>,
    warnings: Vec<ConfigError>,
}

impl<'a> Builder<'a> {
    fn new(prev: &'a Snapshot, next_seq: &'a mut u64, now: SystemTime) -> Self {
        Self {
            prev,
            next_seq,
            now,
            in_force: BTreeMap::new(),
            fresh: HashMap::new(),
            claims: HashMap::new(),
            ignored: Vec::new(),
            rejected: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn file(&mut self, file: &SourceFile) {
        let parsed = match &file.contents {
            Ok(text) => parse_file(&file.path, text),
            Err(e) => Err(ConfigError::file(&file.path, e.clone())),
        };
        let docs = match parsed {
            Ok(docs) => docs,
            Err(e) => return self.keep_file(&file.path, e),
        };
        for (index, doc) in docs {
            match doc {
                Document::Ignored(d) => self.ignored.push(Ignored {
                    api_version: d.api_version,
                    kind: d.kind,
                    namespace: d.namespace,
                    name: d.name,
                    file: file.path.clone(),
                    document: index,
                    reason: d.reason,
                }),
                Document::Unidentified { errors } => {
                    // Without a key, the best guess at "its last good version" is whatever this
                    // file held at the same document index.
                    let kept = self.prev_at(&file.path, index);
                    let kept_last_good = match kept {
                        Some(key) if !self.claims.contains_key(&key) => {
                            self.claim(&key, &file.path, Some(index));
                            self.keep_prev(&key)
                        }
                        _ => false,
                    };
                    self.rejected.push(Rejected {
                        key: None,
                        file: file.path.clone(),
                        document: Some(index),
                        errors,
                        kept_last_good,
                    });
                }
                Document::Valid { resource, warnings } => {
                    let key = resource.key();
                    if self.duplicate(&key, &file.path, index) {
                        continue;
                    }
                    self.warnings.extend(warnings);
                    self.put(key, AnyResource::from_resource(resource), &file.path, index);
                }
                Document::Invalid {
                    key,
                    errors,
                    warnings,
                } => {
                    if self.duplicate(&key, &file.path, index) {
                        continue;
                    }
                    self.warnings.extend(warnings);
                    let kept_last_good = self.keep_prev(&key);
                    self.rejected.push(Rejected {
                        key: Some(key),
                        file: file.path.clone(),
                        document: Some(index),
                        errors,
                        kept_last_good,
                    });
                }
            }
        }
    }

    /// The file could not be read or parsed: everything it held stays as it was.
    fn keep_file(&mut self, path: &Path, error: ConfigError) {
        let keys: Vec<ResourceKey> = prev_entries(self.prev)
            .filter(|(_, src, _)| *src == path)
            .map(|(k, _, _)| k)
            .collect();
        let mut kept_any = false;
        for key in keys {
            if let Some(winner) = self.claims.get(&key) {
                let msg = format!("duplicate {key}: already defined in {}", describe(winner));
                self.rejected.push(Rejected {
                    key: Some(key.clone()),
                    file: path.to_owned(),
                    document: None,
                    errors: vec![ConfigError::at(
                        path,
                        None,
                        Some(key.to_string()),
                        None,
                        msg,
                    )],
                    kept_last_good: false,
                });
                continue;
            }
            self.claim(&key, path, None);
            kept_any |= self.keep_prev(&key);
        }
        self.ignored
            .extend(self.prev.ignored.iter().filter(|i| i.file == path).cloned());
        self.rejected.push(Rejected {
            key: None,
            file: path.to_owned(),
            document: None,
            errors: vec![error],
            kept_last_good: kept_any,
        });
    }

    fn prev_at(&self, path: &Path, index: usize) -> Option<ResourceKey> {
        prev_entries(self.prev)
            .find(|(_, src, doc)| *src == path && *doc == index)
            .map(|(k, _, _)| k)
    }

    fn claim(&mut self, key: &ResourceKey, file: &Path, document: Option<usize>) {
        self.claims.insert(
            key.clone(),
            Claim {
                file: file.to_owned(),
                document,
            },
        );
    }

    /// Records the claim, or rejects the document as a duplicate of an earlier claim.
    fn duplicate(&mut self, key: &ResourceKey, file: &Path, index: usize) -> bool {
        if let Some(winner) = self.claims.get(key) {
            let msg = if winner.file == file {
                format!(
                    "duplicate {key}: already defined in document {} of this file",
                    winner.document.unwrap_or(0)
                )
            } else {
                format!(
                    "duplicate {key}: already defined in {}; the first file by name wins",
                    describe(winner)
                )
            };
            self.rejected.push(Rejected {
                key: Some(key.clone()),
                file: file.to_owned(),
                document: Some(index),
                errors: vec![ConfigError::at(
                    file,
                    Some(index),
                    Some(key.to_string()),
                    None,
                    msg,
                )],
                kept_last_good: false,
            });
            return true;
        }
        self.claim(key, file, Some(index));
        false
    }

    fn put(&mut self, key: ResourceKey, resource: AnyResource, file: &Path, index: usize) {
        let prev = prev_entry(self.prev, &key);
        let (seq, first_seen, resource) = match prev {
            // Unchanged content keeps the same Arc, so consumers can skip rebuilding it.
            Some(p) if p.resource.same_version(&resource) => (p.seq, p.first_seen, p.resource),
            Some(p) => (p.seq, p.first_seen, resource),
            None => {
                let seq = *self.next_seq;
                *self.next_seq += 1;
                (seq, self.now, resource)
            }
        };
        self.fresh.insert(key.clone(), ());
        self.in_force.insert(
            key,
            Entry {
                resource,
                source: file.to_owned(),
                document: index,
                seq,
                first_seen,
            },
        );
    }

    /// Keeps the previous version of `key` in force, if there was one.
    fn keep_prev(&mut self, key: &ResourceKey) -> bool {
        match prev_entry(self.prev, key) {
            Some(e) => {
                self.fresh.remove(key);
                self.in_force.insert(key.clone(), e);
                true
            }
            None => {
                self.in_force.remove(key);
                false
            }
        }
    }

    /// Checks between resources. Only versions new in this build are rejected for them (a kept
    /// last-good version stays, with a warning).
    fn cross_check(&mut self) {
        let secrets: HashMap<(String, String), Arc<Secret>> = self
            .in_force
            .iter()
            .filter_map(|(k, e)| match &e.resource {
                AnyResource::Secret(s) => Some(((k.namespace.clone(), k.name.clone()), s.clone())),
                _ => None,
            })
            .collect();
        let gateways: HashMap<(String, String), Arc<Gateway>> = self
            .in_force
            .iter()
            .filter_map(|(k, e)| match &e.resource {
                AnyResource::Gateway(g) => Some(((k.namespace.clone(), k.name.clone()), g.clone())),
                _ => None,
            })
            .collect();

        let grants: Vec<Arc<ReferenceGrant>> = self
            .in_force
            .values()
            .filter_map(|e| match &e.resource {
                AnyResource::ReferenceGrant(g) => Some(g.clone()),
                _ => None,
            })
            .collect();
        let namespaces: HashMap<String, Arc<Namespace>> = self
            .in_force
            .iter()
            .filter_map(|(k, e)| match &e.resource {
                AnyResource::Namespace(n) => Some((k.name.clone(), n.clone())),
                _ => None,
            })
            .collect();

        let mut problems: Vec<(ResourceKey, String, String, bool)> = Vec::new(); // (key, field, message, is_error)
        // All Gateways share the process's sockets: a port serves one protocol. The first Gateway
        // (by namespace/name) keeps the port; later conflicting listeners are reported.
        let mut port_owner: HashMap<u16, (&str, &ResourceKey)> = HashMap::new();
        for (key, entry) in &self.in_force {
            let AnyResource::Gateway(g) = &entry.resource else {
                continue;
            };
            for (i, l) in g.spec.listeners.iter().enumerate() {
                match port_owner.get(&l.port) {
                    None => {
                        port_owner.insert(l.port, (l.protocol.as_str(), key));
                    }
                    Some((proto, owner)) if *proto != l.protocol && *owner != key => problems.push((
                        key.clone(),
                        format!("spec.listeners[{i}].protocol"),
                        format!(
                            "port {} is already served as {proto} by Gateway {}/{}: this listener conflicts",
                            l.port, owner.namespace, owner.name
                        ),
                        false,
                    )),
                    Some(_) => {}
                }
            }
        }
        for (key, entry) in &self.in_force {
            match &entry.resource {
                AnyResource::Gateway(g) => {
                    for (i, l) in g.spec.listeners.iter().enumerate() {
                        let Some(tls) = l.tls.as_ref().filter(|_| l.is_https()) else {
                            continue;
                        };
                        for (j, r) in tls.certificate_refs.iter().enumerate() {
                            let ns = r.namespace.clone().unwrap_or_else(|| key.namespace.clone());
                            let field = format!("spec.listeners[{i}].tls.certificateRefs[{j}]");
                            let from = gateway_ref(&key.namespace, &key.name);
                            let to = ObjectRef {
                                group: "",
                                kind: "Secret",
                                namespace: &ns,
                                name: &r.name,
                            };
                            // Checked first: without a grant, whether the Secret exists is
                            // none of this Gateway's business.
                            if !reference_permitted(grants.iter().map(|g| &**g), &from, &to) {
                                problems.push((
                                    key.clone(),
                                    field,
                                    not_permitted(&from, &to),
                                    true,
                                ));
                                continue;
                            }
                            match secrets.get(&(ns.clone(), r.name.clone())) {
                                None => problems.push((
                                    key.clone(),
                                    field,
                                    format!("Secret {ns}/{} not found", r.name),
                                    true,
                                )),
                                Some(s) if s.secret_type != SECRET_TYPE_TLS => problems.push((
                                    key.clone(),
                                    field,
                                    format!(
                                        "Secret {ns}/{} has type {:?}, must be {SECRET_TYPE_TLS}",
                                        r.name, s.secret_type
                                    ),
                                    true,
                                )),
                                Some(_) => {}
                            }
                        }
                    }
                }
                AnyResource::HttpRoute(route) => {
                    let from = http_route_ref(&key.namespace, &key.name);
                    for (i, rule) in route.spec.rules.iter().enumerate() {
                        for (j, b) in rule.backend_refs.iter().enumerate() {
                            let to = ObjectRef {
                                group: &b.group,
                                kind: &b.kind,
                                namespace: b.namespace_or(&key.namespace),
                                name: &b.name,
                            };
                            if !reference_permitted(grants.iter().map(|g| &**g), &from, &to) {
                                problems.push((
                                    key.clone(),
                                    format!("spec.rules[{i}].backendRefs[{j}]"),
                                    format!(
                                        "{}; requests for this backend get 500",
                                        not_permitted(&from, &to)
                                    ),
                                    false,
                                ));
                            }
                        }
                    }
                    let labels = namespace_labels(
                        &key.namespace,
                        namespaces.get(&key.namespace).map(|n| &**n),
                    );
                    for (i, parent) in route.spec.parent_refs.iter().enumerate() {
                        let ns = route.parent_namespace(parent).to_owned();
                        let field = format!("spec.parentRefs[{i}]");
                        match gateways.get(&(ns.clone(), parent.name.clone())) {
                            None => problems.push((
                                key.clone(),
                                field,
                                format!("Gateway {ns}/{} not found (yet)", parent.name),
                                false,
                            )),
                            Some(g) => {
                                if let Some(section) = &parent.section_name
                                    && g.listener(section).is_none()
                                {
                                    problems.push((
                                        key.clone(),
                                        format!("{field}.sectionName"),
                                        format!(
                                            "Gateway {ns}/{} has no listener named {section:?}",
                                            parent.name
                                        ),
                                        false,
                                    ));
                                }
                                if let Some(port) = parent.port
                                    && !g.spec.listeners.iter().any(|l| l.port == port)
                                {
                                    problems.push((
                                        key.clone(),
                                        format!("{field}.port"),
                                        format!(
                                            "Gateway {ns}/{} has no listener on port {port}",
                                            parent.name
                                        ),
                                        false,
                                    ));
                                }
                                // Gateway API: a route attaches only where a hostname intersects.
                                let listeners: Vec<_> = g
                                    .spec
                                    .listeners
                                    .iter()
                                    .filter(|l| {
                                        parent.section_name.as_ref().is_none_or(|s| *s == l.name)
                                    })
                                    .filter(|l| parent.port.is_none_or(|p| p == l.port))
                                    .collect();
                                // Gateway API: and only where the listener's allowedRoutes allow.
                                let verdicts: Vec<(&Listener, Result<(), NotAllowed>)> = listeners
                                    .iter()
                                    .map(|l| {
                                        let v = l.allowed_routes.admits(
                                            &ns,
                                            &key.namespace,
                                            HTTP_ROUTE_KIND,
                                            &labels,
                                        );
                                        (*l, v)
                                    })
                                    .collect();
                                let admitting: Vec<&Listener> = verdicts
                                    .iter()
                                    .filter(|(_, v)| v.is_ok())
                                    .map(|(l, _)| *l)
                                    .collect();
                                if admitting.is_empty() && !verdicts.is_empty() {
                                    let refusals: Vec<String> = verdicts
                                        .iter()
                                        .filter_map(|(l, v)| {
                                            v.as_ref()
                                                .err()
                                                .map(|why| format!("listener {} ({why})", l.name))
                                        })
                                        .collect();
                                    problems.push((
                                        key.clone(),
                                        field.clone(),
                                        format!(
                                            "not allowed by Gateway {ns}/{} {}: the route serves nothing there",
                                            parent.name,
                                            refusals.join(", ")
                                        ),
                                        false,
                                    ));
                                } else if !admitting.is_empty()
                                    && !route.spec.hostnames.is_empty()
                                    && !admitting.iter().any(|l| {
                                        route.spec.hostnames.iter().any(|h| {
                                            l.hostname
                                                .as_deref()
                                                .is_none_or(|lh| hostnames_intersect(lh, h))
                                        })
                                    })
                                {
                                    problems.push((
                                        key.clone(),
                                        "spec.hostnames".to_owned(),
                                        format!(
                                            "no hostname intersects a listener hostname of Gateway {ns}/{}: the route serves nothing there",
                                            parent.name
                                        ),
                                        false,
                                    ));
                                }
                            }
                        }
                    }
                }
                AnyResource::WasmPlugin(w) => {
                    if let Some(name) = &w.spec.image_pull_secret {
                        let ns = &key.namespace;
                        match secrets.get(&(ns.clone(), name.clone())) {
                            None => problems.push((
                                key.clone(),
                                "spec.imagePullSecret".into(),
                                format!("Secret {ns}/{name} not found; pulling without credentials"),
                                false,
                            )),
                            Some(s) if s.secret_type != SECRET_TYPE_DOCKER_CONFIG_JSON => problems.push((
                                key.clone(),
                                "spec.imagePullSecret".into(),
                                format!(
                                    "Secret {ns}/{name} has type {:?}, not {SECRET_TYPE_DOCKER_CONFIG_JSON}; pulling without credentials",
                                    s.secret_type
                                ),
                                false,
                            )),
                            Some(_) => {}
                        }
                    }
                }
                AnyResource::Service(_)
                | AnyResource::Secret(_)
                | AnyResource::ReferenceGrant(_)
                | AnyResource::Namespace(_) => {}
            }
        }
        // A new version with a cross-resource error is rejected as a whole (all its errors in one
        // record), and the last good version stays. Everything else becomes a warning.
        let mut errors: BTreeMap<ResourceKey, Vec<ConfigError>> = BTreeMap::new();
        for (key, field, message, is_error) in problems {
            let entry = &self.in_force[&key];
            let e = ConfigError::at(
                &entry.source,
                Some(entry.document),
                Some(key.to_string()),
                Some(field),
                message,
            );
            if is_error && self.fresh.contains_key(&key) {
                errors.entry(key).or_default().push(e);
            } else {
                self.warnings.push(e);
            }
        }
        for (key, errs) in errors {
            let entry = &self.in_force[&key];
            let (file, document) = (entry.source.clone(), entry.document);
            let kept_last_good = self.keep_prev(&key);
            self.rejected.push(Rejected {
                key: Some(key),
                file,
                document: Some(document),
                errors: errs,
                kept_last_good,
            });
        }
    }

    fn finish(mut self) -> Snapshot {
        // Report in file order, whatever the stage that found the problem.
        self.rejected
            .sort_by(|a, b| (&a.file, a.document).cmp(&(&b.file, b.document)));
        self.warnings
            .sort_by(|a, b| (&a.file, a.document).cmp(&(&b.file, b.document)));
        let mut s = Snapshot {
            ignored: self.ignored,
            rejected: self.rejected,
            warnings: self.warnings,
            ..Snapshot::default()
        };
        for (key, e) in self.in_force {
            let name = key.namespaced_name();
            macro_rules! put {
                ($map:ident, $r:expr) => {{
                    s.$map.insert(
                        name,
                        Sourced {
                            resource: $r,
                            source: e.source,
                            document: e.document,
                            seq: e.seq,
                            first_seen: e.first_seen,
                        },
                    );
                }};
            }
            match e.resource {
                AnyResource::Gateway(r) => put!(gateways, r),
                AnyResource::HttpRoute(r) => put!(routes, r),
                AnyResource::Service(r) => put!(services, r),
                AnyResource::Secret(r) => put!(secrets, r),
                AnyResource::WasmPlugin(r) => put!(wasm_plugins, r),
                AnyResource::ReferenceGrant(r) => put!(reference_grants, r),
                AnyResource::Namespace(r) => put!(namespaces, r),
            };
        }
        s
    }
}

/// Gateway API hostname intersection: equal, or a `*.` wildcard covering the other (a wildcard
/// matches one or more labels, never the bare suffix).
pub fn hostnames_intersect(a: &str, b: &str) -> bool {
    let covers = |wild: &str, other: &str| {
        wild.strip_prefix('*')
            .is_some_and(|suffix| other.len() > suffix.len() && other.ends_with(suffix))
    };
    a.eq_ignore_ascii_case(b) || covers(a, b) || covers(b, a)
}

fn describe(c: &Claim) -> String {
    match c.document {
        Some(d) => format!("{}[doc {d}]", c.file.display()),
        None => c.file.display().to_string(),
    }
}

/// `(key, source, document)` of every resource in force in `s`.
fn prev_entries(s: &Snapshot) -> impl Iterator<Item = (ResourceKey, &Path, usize)> {
    fn it<'a, T>(
        kind: Kind,
        m: &'a BTreeMap<NamespacedName, Sourced<T>>,
    ) -> impl Iterator<Item = (ResourceKey, &'a Path, usize)> + 'a {
        m.iter().map(move |(n, e)| {
            (
                ResourceKey::new(kind, &n.namespace, &n.name),
                e.source.as_path(),
                e.document,
            )
        })
    }
    it(Kind::Gateway, &s.gateways)
        .chain(it(Kind::HttpRoute, &s.routes))
        .chain(it(Kind::Service, &s.services))
        .chain(it(Kind::Secret, &s.secrets))
        .chain(it(Kind::WasmPlugin, &s.wasm_plugins))
        .chain(it(Kind::ReferenceGrant, &s.reference_grants))
        .chain(it(Kind::Namespace, &s.namespaces))
}

fn prev_entry(s: &Snapshot, key: &ResourceKey) -> Option<Entry> {
    let name = key.namespaced_name();
    macro_rules! get {
        ($map:ident, $variant:ident) => {
            s.$map.get(&name).map(|e| Entry {
                resource: AnyResource::$variant(e.resource.clone()),
                source: e.source.clone(),
                document: e.document,
                seq: e.seq,
                first_seen: e.first_seen,
            })
        };
    }
    match key.kind {
        Kind::Gateway => get!(gateways, Gateway),
        Kind::HttpRoute => get!(routes, HttpRoute),
        Kind::Service => get!(services, Service),
        Kind::Secret => get!(secrets, Secret),
        Kind::WasmPlugin => get!(wasm_plugins, WasmPlugin),
        Kind::ReferenceGrant => get!(reference_grants, ReferenceGrant),
        Kind::Namespace => get!(namespaces, Namespace),
        Kind::ServiceMeshExtension => None,
    }
}

#[cfg(test)]
mod tests {
    use super::hostnames_intersect;

    #[test]
    fn hostname_intersection_follows_the_gateway_api() {
        assert!(hostnames_intersect("foo.example.com", "foo.example.com"));
        assert!(hostnames_intersect("*.example.com", "foo.example.com"));
        assert!(hostnames_intersect("foo.bar.example.com", "*.example.com"));
        assert!(hostnames_intersect("*.example.com", "*.foo.example.com"));
        assert!(!hostnames_intersect("*.example.com", "example.com"));
        assert!(!hostnames_intersect("foo.example.com", "bar.example.com"));
        assert!(!hostnames_intersect("*.example.com", "*.example.org"));
    }
}
