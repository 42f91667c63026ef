//! Owned data that crosses the seam between the proxy and the runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A header or trailer map as proxy-wasm sees it: ordered `(name, value)` byte pairs, names
/// lower-case, pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`, `:status`) included
/// as Envoy includes them. Repeated names are separate entries.
///
/// Cloning is one reference count: the entries are shared until one of the copies is changed.
/// A header list goes from the proxy to the runtime and back for every callback, and the runtime
/// keeps its own copy for later callbacks and properties; with deep copies that was 17
/// allocations per callback for 8 headers, half the cost of a plugin that only reads headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderList {
    entries: Arc<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl HeaderList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an entry; the name is lower-cased.
    pub fn push(&mut self, name: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) {
        Arc::make_mut(&mut self.entries).push((name.as_ref().to_ascii_lowercase(), value.into()));
    }

    /// First value for `name` (case-insensitive), as Envoy's `getHeaderMapValue`.
    pub fn get(&self, name: impl AsRef<[u8]>) -> Option<&[u8]> {
        let name = name.as_ref();
        self.entries
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// All values for `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.entries
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Removes every entry named `name`.
    pub fn remove(&mut self, name: impl AsRef<[u8]>) {
        let name = name.as_ref();
        if self.get(name).is_some() {
            Arc::make_mut(&mut self.entries).retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        }
    }

    /// Replaces every entry named `name` by one entry (added at the end if absent).
    pub fn replace(&mut self, name: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) {
        let name = name.as_ref().to_ascii_lowercase();
        let value = value.into();
        let entries = Arc::make_mut(&mut self.entries);
        match entries.iter().position(|(k, _)| *k == name) {
            Some(first) => {
                entries[first].1 = value;
                let mut i = 0;
                entries.retain(|(k, _)| {
                    i += 1;
                    i - 1 == first || *k != name
                });
            }
            None => entries.push((name, value)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.entries
    }

    pub fn into_entries(self) -> Vec<(Vec<u8>, Vec<u8>)> {
        Arc::unwrap_or_clone(self.entries)
    }
}

impl<K: AsRef<[u8]>, V: Into<Vec<u8>>> FromIterator<(K, V)> for HeaderList {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut list = HeaderList::new();
        for (k, v) in iter {
            list.push(k, v);
        }
        list
    }
}

impl From<Vec<(Vec<u8>, Vec<u8>)>> for HeaderList {
    /// Takes entries as they are; names are lower-cased.
    fn from(mut entries: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        for (k, _) in &mut entries {
            k.make_ascii_lowercase();
        }
        Self {
            entries: Arc::new(entries),
        }
    }
}

/// What the proxy should do with the stream after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Go on to the next filter.
    Continue,
    /// Stop here. For headers this also holds the body (proxy-wasm `StopIteration` becomes Envoy's
    /// `StopAllIterationAndWatermark`); await [`Stream::resumed`](crate::Stream::resumed). For a
    /// body chunk the runtime keeps the data buffered; the next chunk is offered together with it.
    Pause,
    /// The plugin called `proxy_close_stream`: reset the stream.
    Close,
}

/// A response the plugin asked for with `proxy_send_local_response`. The proxy sends it and the
/// request goes no further down the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    /// Response code details, spaces and other whitespace already replaced by `_` as Envoy does.
    pub details: String,
    pub body: Vec<u8>,
    pub headers: HeaderList,
    /// gRPC status to send, when the plugin gave one in 0..=16 (the SDK default -1 means none).
    pub grpc_status: Option<u32>,
}

/// Which fail strategy the runtime applied for this outcome, so the proxy can count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailAction {
    /// `FAIL_CLOSE`: a 503 `wasm_fail_stream` local reply is in the outcome.
    Closed,
    /// `FAIL_OPEN`: the plugin was skipped.
    Opened,
}

/// The result of one stream callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub action: Action,
    /// Set when the plugin (or `FAIL_CLOSE`) answers the request itself. The proxy sends it and
    /// stops iterating the chain, whatever `action` says.
    pub local_reply: Option<LocalReply>,
    /// Set when the plugin's VM had failed and its fail strategy decided this outcome.
    pub fail: Option<FailAction>,
}

impl Outcome {
    pub(crate) fn cont() -> Self {
        Self {
            action: Action::Continue,
            local_reply: None,
            fail: None,
        }
    }
}

/// The failure policy of a plugin, as Istio's `failStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailStrategy {
    /// Requests the failed plugin would see get 503, details `wasm_fail_stream`.
    #[default]
    FailClose,
    /// The failed plugin is skipped for this and later requests.
    FailOpen,
    /// A fresh VM for new requests, at most once per jittered backoff; meanwhile, `FailClose`.
    FailReload,
}

/// Per-request facts the proxy knows and plugins read as properties (`source.address`,
/// `connection.mtls`, `xds.route_name`...). Request- and response-derived properties
/// (`request.path`, `response.code`...) are computed by the runtime from the headers it saw.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    /// Downstream connection id (`connection.id`, `connection_id`).
    pub connection_id: u64,
    /// `request.protocol`, e.g. `HTTP/1.1`, `HTTP/2`.
    pub protocol: String,
    /// `request.time`.
    pub start_time: SystemTime,
    /// `connection.mtls`.
    pub mtls: bool,
    /// `connection.tls_version`, e.g. `TLSv1.3`; `None` for plaintext.
    pub tls_version: Option<String>,
    /// `connection.requested_server_name` (SNI).
    pub requested_server_name: Option<String>,
    /// `xds.route_name` (and the old `route_name`).
    pub route_name: Option<String>,
    /// `xds.cluster_name` (and the old `cluster_name`).
    pub cluster_name: Option<String>,
    /// `xds.listener_direction` is always OUTBOUND for a gateway; this is the listener's name.
    pub listener_name: Option<String>,
    /// `xds.virtual_host_name`.
    pub virtual_host_name: Option<String>,
    /// `upstream.address` / `upstream.port`, once the proxy knows them.
    pub upstream: Option<SocketAddr>,
}

impl Default for StreamInfo {
    fn default() -> Self {
        Self {
            source: None,
            destination: None,
            connection_id: 0,
            protocol: "HTTP/1.1".into(),
            start_time: SystemTime::now(),
            mtls: false,
            tls_version: None,
            requested_server_name: None,
            route_name: None,
            cluster_name: None,
            listener_name: None,
            virtual_host_name: None,
            upstream: None,
        }
    }
}

/// An outgoing `proxy_http_call` the host must perform.
#[derive(Debug, Clone)]
pub struct HttpCall {
    /// The named upstream (Envoy cluster) the plugin addressed.
    pub upstream: String,
    /// Includes `:method`, `:path`, `:authority` (checked present by the runtime).
    pub headers: HeaderList,
    pub body: Vec<u8>,
    pub trailers: HeaderList,
    /// `None` when the plugin passed 0 (no timeout, as Envoy).
    pub timeout: Option<Duration>,
}

/// An outgoing unary `proxy_grpc_call`.
#[derive(Debug, Clone)]
pub struct GrpcCall {
    pub upstream: String,
    pub service: String,
    pub method: String,
    pub initial_metadata: HeaderList,
    pub message: Vec<u8>,
    pub timeout: Option<Duration>,
}

/// The answer to an [`HttpCall`] or [`GrpcCall`].
#[derive(Debug, Clone, Default)]
pub struct CallResponse {
    /// For HTTP, includes `:status`. For gRPC: initial metadata.
    pub headers: HeaderList,
    /// HTTP body, or the gRPC response message.
    pub body: Vec<u8>,
    /// HTTP trailers, or gRPC trailing metadata.
    pub trailers: HeaderList,
    /// gRPC status code (0 = OK); ignored for HTTP.
    pub grpc_status: u32,
    /// gRPC status message; ignored for HTTP.
    pub grpc_message: String,
}
