//! wasmgate's configuration: Kubernetes-style resources read from a directory of YAML files,
//! validated (every problem at once), kept last-good across reloads, and watched for changes.
//!
//! The gateway's use:
//! ```no_run
//! # use std::path::Path;
//! # use std::time::Duration;
//! let mut store = wasmgate_conf::ConfigStore::new();
//! let (snapshot, report) = store.reload(Path::new("/etc/wasmgate"));
//! for e in &report.errors { eprintln!("{e}"); }
//! for (name, gw) in &snapshot.gateways { println!("{name} from {}", gw.source.display()); }
//! let _watch = wasmgate_conf::watch(Path::new("/etc/wasmgate"), Duration::from_millis(200), || {
//!     // signal the reload task
//! }).unwrap();
//! ```
//!
//! Kinds understood: `Gateway` and `HTTPRoute` (`gateway.networking.k8s.io/v1`, `v1beta1`),
//! `ReferenceGrant` (`gateway.networking.k8s.io/v1beta1`, `v1`, `v1alpha2`), `Service`, `Secret`
//! and `Namespace` (core `v1`), `WasmPlugin` (`extensions.istio.io/v1alpha1`), and Maistra's
//! `ServiceMeshExtension` (`maistra.io/v1`, served as its WasmPlugin, see
//! [`convert_service_mesh_extensions`]). Every other kind is recorded in [`Snapshot::ignored`].
//! Unknown fields of understood kinds are errors naming the field path; fields of the upstream
//! APIs that wasmgate does not act on are accepted with an "accepted but ignored" warning.
//!
//! Layers: [`parse_file`] (text in, typed and validated documents out; no filesystem),
//! [`ConfigStore`] (last-good semantics across reloads and cross-resource checks; the rules are in
//! the [`store`] module docs), [`watch()`] (coalesced directory watch). Secret values are
//! [`SecretBytes`], which never print.
#![forbid(unsafe_code)]

pub mod allowed_routes;
mod dir;
pub mod duration;
pub mod error;
pub mod gateway;
pub mod limits;
pub mod meta;
pub mod namespace;
pub mod parse;
pub mod reference_grant;
pub mod route;
pub mod secret;
pub mod selector;
pub mod service;
pub mod service_mesh_extension;
mod snapshot;
pub mod store;
mod validate;
pub mod wasm_plugin;
pub mod watch;

pub use allowed_routes::{
    AllowedRoutes, FromNamespaces, NotAllowed, RouteGroupKind, RouteNamespaces,
};
pub use duration::GatewayDuration;
pub use error::{ConfigError, WatchError};
pub use gateway::{Gateway, GatewaySpec, Listener, ListenerTls, SecretObjectReference};
pub use meta::{Kind, NamespacedName, ObjectMeta, ResourceKey, Timestamp};
pub use namespace::{NAMESPACE_NAME_LABEL, Namespace, namespace_labels};
pub use parse::{Document, Resource, parse_file};
pub use reference_grant::{
    ObjectRef, ReferenceGrant, ReferenceGrantSpec, gateway_ref, http_route_ref, not_permitted,
    reference_permitted,
};
pub use route::{
    FilterType, HeaderMatch, HeaderModifier, HttpBackendRef, HttpHeader, HttpRoute,
    HttpRouteFilter, HttpRouteMatch, HttpRouteRule, HttpRouteSpec, HttpRouteTimeouts,
    ParentReference, PathMatch, PathMatchType, PathModifier, PathModifierType, RequestRedirect,
    StringMatchType, UrlRewrite,
};
pub use secret::{Secret, SecretBytes};
pub use selector::{LabelSelector, LabelSelectorRequirement, SelectorOperator};
pub use service::{Endpoint, IntOrString, Service, ServicePort, ServiceSpec};
pub use service_mesh_extension::convert_service_mesh_extensions;
pub use store::{
    ConfigStore, HasMetadata, Ignored, Rejected, ReloadReport, Snapshot, SourceFile, Sourced,
    validate_dir,
};
pub use wasm_plugin::{
    EnvValueSource, EnvVar, FailStrategy, PluginPhase, PluginType, PolicyTargetReference,
    PortSelector, PullPolicy, TrafficSelector, VmConfig, WasmPlugin, WasmPluginSpec, WorkloadMode,
    WorkloadSelector,
};
pub use watch::{WatchHandle, watch};
