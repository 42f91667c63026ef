//! Owned data that crosses the seam between the proxy and the runtime.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A header or trailer map as proxy-wasm sees it: ordered `(name, value)` byte pairs, names
/// lower-case, pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`, `:status`) included
/// as Envoy includes them. Repeated names are separate entries.
///
/// Cloning is one reference count: the entries are shared until one of the copies is changed.
/// A header list goes from the proxy to the runtime and back for every callback, and every
/// plugin's stream keeps its own copy for later callbacks and properties, so the first edit
/// after a plugin saw the list copies it. All names and values live in one buffer, so a list
/// costs three allocations (built or copied) whatever its length; with a `Vec` per name and per
/// value, copying 8 headers was 17.
#[derive(Clone, Default)]
pub struct HeaderList {
    /// `None` is the empty list: `new`, `Default` and `mem::take` allocate nothing.
    entries: Option<Arc<Entries>>,
}

/// Entry `i` is `bytes[spans[i].name..spans[i].value]` (name) then
/// `bytes[spans[i].value..spans[i].end]` (value). Removing or growing an entry leaves its old
/// bytes behind as garbage, compacted away once they outweigh the live ones.
#[derive(Default)]
struct Entries {
    bytes: Vec<u8>,
    spans: Vec<Span>,
    /// Bytes of `bytes` that no span refers to.
    garbage: usize,
}

#[derive(Clone, Copy)]
struct Span {
    name: usize,
    value: usize,
    end: usize,
}

/// Room a copy or a first push leaves for the headers a plugin adds, so the copy on write
/// that precedes an `add` is not followed by a reallocation.
const SPARE_SPANS: usize = 4;
const SPARE_BYTES: usize = 128;
/// Garbage below this is never worth a compaction.
const MIN_GARBAGE_TO_COMPACT: usize = 1024;

/// Whether a stored name (always lower case) is `name`, in any case. Names are usually asked
/// for in lower case: one byte comparison then answers, where comparing case-insensitively
/// was most of a lookup's cost.
#[inline]
fn same_name(stored: &[u8], name: &[u8]) -> bool {
    stored == name || stored.eq_ignore_ascii_case(name)
}

impl Span {
    fn len(&self) -> usize {
        self.end - self.name
    }
}

impl Entries {
    fn with_capacity(entries: usize, bytes: usize) -> Self {
        Entries {
            bytes: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(entries),
            garbage: 0,
        }
    }

    #[inline]
    fn name(&self, span: &Span) -> &[u8] {
        &self.bytes[span.name..span.value]
    }

    fn push(&mut self, name: &[u8], value: &[u8]) {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(name);
        self.bytes[at..].make_ascii_lowercase();
        self.push_value(at, value);
    }

    /// [`Entries::push`] for a name known to be lower case: lowering it byte by byte was half
    /// the cost of building a proxy's header list.
    fn push_lowercase(&mut self, name: &[u8], value: &[u8]) {
        debug_assert!(!name.iter().any(u8::is_ascii_uppercase), "{name:?}");
        let at = self.bytes.len();
        self.bytes.extend_from_slice(name);
        self.push_value(at, value);
    }

    /// Ends the entry whose name starts at `at`: its value, then its span.
    fn push_value(&mut self, at: usize, value: &[u8]) {
        let value_at = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.spans.push(Span {
            name: at,
            value: value_at,
            end: self.bytes.len(),
        });
    }

    /// Index of the first entry named `name` (case-insensitive).
    #[inline]
    fn position(&self, name: &[u8]) -> Option<usize> {
        // Lengths first: most names differ in length, and that spares slicing the buffer.
        self.spans.iter().position(|span| {
            span.value - span.name == name.len() && same_name(self.name(span), name)
        })
    }

    fn live_bytes(&self) -> usize {
        self.bytes.len() - self.garbage
    }

    /// A copy of the live entries only, with room to grow.
    fn compacted(&self) -> Entries {
        let mut copy = Entries::with_capacity(
            self.spans.len() + SPARE_SPANS,
            self.live_bytes() + SPARE_BYTES,
        );
        if self.garbage == 0 {
            // Spans may be out of order (a replaced value moves to the end), but with no garbage
            // they cover the buffer exactly: copy both as they are.
            copy.bytes.extend_from_slice(&self.bytes);
            copy.spans.extend_from_slice(&self.spans);
            return copy;
        }
        for span in &self.spans {
            let at = copy.bytes.len();
            copy.bytes
                .extend_from_slice(&self.bytes[span.name..span.end]);
            copy.spans.push(Span {
                name: at,
                value: at + (span.value - span.name),
                end: at + span.len(),
            });
        }
        copy
    }

    fn forget(&mut self, span: &Span) {
        self.garbage += span.len();
    }

    /// Amortized: a compaction copies the live bytes only after as many bytes became garbage.
    fn maybe_compact(&mut self) {
        if self.garbage >= MIN_GARBAGE_TO_COMPACT && self.garbage > self.live_bytes() {
            *self = self.compacted();
        }
    }
}

impl Clone for Entries {
    /// What `Arc::make_mut` runs when a shared list is first changed.
    fn clone(&self) -> Self {
        self.compacted()
    }
}

impl HeaderList {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty list with room for `entries` headers of `bytes` name and value bytes in all.
    /// An empty list with room for `entries` headers of `bytes` name and value bytes in all:
    /// for a proxy that knows the size of what it is about to [`extend`](Extend) it with.
    pub fn with_capacity(entries: usize, bytes: usize) -> Self {
        Self {
            entries: Some(Arc::new(Entries::with_capacity(entries, bytes))),
        }
    }

    fn entries_mut(&mut self) -> &mut Entries {
        let entries = self
            .entries
            .get_or_insert_with(|| Arc::new(Entries::with_capacity(SPARE_SPANS, SPARE_BYTES)));
        Arc::make_mut(entries)
    }

    #[inline]
    fn position(&self, name: &[u8]) -> Option<usize> {
        self.entries.as_ref()?.position(name)
    }

    /// Appends an entry; the name is lower-cased.
    pub fn push(&mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.entries_mut().push(name.as_ref(), value.as_ref());
    }

    /// First value for `name` (case-insensitive), as Envoy's `getHeaderMapValue`.
    #[inline]
    pub fn get(&self, name: impl AsRef<[u8]>) -> Option<&[u8]> {
        let entries = self.entries.as_ref()?;
        let span = &entries.spans[entries.position(name.as_ref())?];
        Some(&entries.bytes[span.value..span.end])
    }

    /// All values for `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(k, _)| same_name(k, name))
            .map(|(_, v)| v)
    }

    /// Appends entries whose names are lower case already, as an `http::HeaderName`'s always
    /// is (and pseudo-header names): how a proxy builds the lists it hands to plugins, without
    /// the per-byte lowering of [`push`](Self::push) and [`Extend`]. Other names must go through
    /// those.
    pub fn extend_lowercase<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) {
        let entries = self.entries_mut();
        for (k, v) in pairs {
            entries.push_lowercase(k, v);
        }
    }

    /// Removes every entry named `name`.
    pub fn remove(&mut self, name: impl AsRef<[u8]>) {
        let name = name.as_ref();
        if self.position(name).is_none() {
            return;
        }
        let entries = self.entries_mut();
        let mut spans = std::mem::take(&mut entries.spans);
        spans.retain(|span| {
            let keep = !same_name(entries.name(span), name);
            if !keep {
                entries.forget(span);
            }
            keep
        });
        entries.spans = spans;
        entries.maybe_compact();
    }

    /// Replaces every entry named `name` by one entry (added at the end if absent).
    pub fn replace(&mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let (name, value) = (name.as_ref(), value.as_ref());
        let Some(first) = self.position(name) else {
            self.push(name, value);
            return;
        };
        let entries = self.entries_mut();
        let mut spans = std::mem::take(&mut entries.spans);
        let mut i = 0;
        spans.retain(|span| {
            i += 1;
            let keep = i - 1 <= first || !same_name(entries.name(span), name);
            if !keep {
                entries.forget(span);
            }
            keep
        });
        let span = &mut spans[first];
        let old = span.end - span.value;
        if value.len() <= old {
            // In place; a shorter value leaves a few bytes of garbage behind it.
            entries.bytes[span.value..span.value + value.len()].copy_from_slice(value);
            span.end = span.value + value.len();
            entries.garbage += old - value.len();
        } else {
            // The entry moves to the end of the buffer (its name copied along).
            entries.garbage += span.len();
            let at = entries.bytes.len();
            entries.bytes.extend_from_within(span.name..span.value);
            let value_at = entries.bytes.len();
            entries.bytes.extend_from_slice(value);
            *span = Span {
                name: at,
                value: value_at,
                end: entries.bytes.len(),
            };
        }
        entries.spans = spans;
        entries.maybe_compact();
    }

    /// Whether `other` is this very list (a clone not edited since), not merely an equal one:
    /// a constant-time way for a proxy that kept a clone to tell that no plugin edited the list,
    /// since an edit copies a shared list first.
    #[inline]
    pub fn is_same(&self, other: &HeaderList) -> bool {
        match (&self.entries, &other.entries) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    /// The entries in order, as `(name, value)`.
    #[inline]
    pub fn iter(&self) -> Iter<'_> {
        match &self.entries {
            Some(entries) => Iter {
                bytes: &entries.bytes,
                spans: entries.spans.iter(),
            },
            None => Iter {
                bytes: &[],
                spans: [].iter(),
            },
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, |e| e.spans.len())
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The entries of a [`HeaderList`], in order: `(name, value)`. Knows its length and is cheap to
/// clone, so a map can be measured then encoded in one go (`pairs::encode`).
#[derive(Clone)]
pub struct Iter<'a> {
    bytes: &'a [u8],
    spans: std::slice::Iter<'a, Span>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let span = self.spans.next()?;
        Some((
            &self.bytes[span.name..span.value],
            &self.bytes[span.value..span.end],
        ))
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    #[inline]
    fn next_back(&mut self) -> Option<Self::Item> {
        let span = self.spans.next_back()?;
        Some((
            &self.bytes[span.name..span.value],
            &self.bytes[span.value..span.end],
        ))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl std::iter::FusedIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a HeaderList {
    type Item = (&'a [u8], &'a [u8]);
    type IntoIter = Iter<'a>;

    #[inline]
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Equal when the entries are, in order: how each list was edited does not matter.
impl PartialEq for HeaderList {
    fn eq(&self, other: &Self) -> bool {
        self.is_same(other) || (self.len() == other.len() && self.iter().eq(other.iter()))
    }
}

impl Eq for HeaderList {}

impl std::fmt::Debug for HeaderList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.iter()
                    .map(|(k, v)| (String::from_utf8_lossy(k), String::from_utf8_lossy(v))),
            )
            .finish()
    }
}

/// Appends entries (names lower-cased), copying the list first if it is shared.
impl<K: AsRef<[u8]>, V: AsRef<[u8]>> Extend<(K, V)> for HeaderList {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        let mut iter = iter.into_iter().peekable();
        if iter.peek().is_none() {
            return;
        }
        let entries = self.entries_mut();
        entries.spans.reserve(iter.size_hint().0);
        for (k, v) in iter {
            entries.push(k.as_ref(), v.as_ref());
        }
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(K, V)> for HeaderList {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut list = match iter.size_hint().0 {
            0 => HeaderList::new(),
            // A guess (HTTP headers average a few dozen bytes); the buffer grows as needed.
            n => HeaderList::with_capacity(n, n * 48),
        };
        list.extend(iter);
        list
    }
}

impl From<Vec<(Vec<u8>, Vec<u8>)>> for HeaderList {
    /// Takes entries as they are; names are lower-cased.
    fn from(entries: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        let bytes = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
        let mut list = HeaderList::with_capacity(entries.len(), bytes);
        list.extend(entries);
        list
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
    /// `request.protocol`, e.g. `HTTP/1.1`, `HTTP/2` (a constant for a proxy: no allocation).
    pub protocol: Cow<'static, str>,
    /// `request.time`.
    pub start_time: SystemTime,
    /// `connection.mtls`.
    pub mtls: bool,
    /// `connection.tls_version`, e.g. `TLSv1.3`; `None` for plaintext.
    pub tls_version: Option<String>,
    /// `connection.requested_server_name` (SNI).
    pub requested_server_name: Option<String>,
    /// `xds.route_name` (and the old `route_name`); shared, as a proxy keeps its route names.
    pub route_name: Option<Arc<str>>,
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
            protocol: Cow::Borrowed("HTTP/1.1"),
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

/// A bidirectional gRPC stream a plugin opens with `proxy_grpc_stream`. Messages are sent and
/// received through [`GrpcStreamSink`](crate::GrpcStreamSink) and
/// [`GrpcStreamEvents`](crate::GrpcStreamEvents).
#[derive(Debug, Clone)]
pub struct GrpcStream {
    /// The cluster as the plugin named it (Envoy also accepts a serialized `GrpcService`).
    pub upstream: String,
    pub service: String,
    pub method: String,
    pub initial_metadata: HeaderList,
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn list(pairs: &[(&str, &str)]) -> HeaderList {
        pairs.iter().copied().collect()
    }

    #[test]
    fn a_clone_is_the_same_list_until_either_is_edited() {
        let a = list(&[("a", "1"), ("b", "2")]);
        let mut b = a.clone();
        assert!(b.is_same(&a));
        b.replace("a", "1");
        assert!(!b.is_same(&a), "an edit copies a shared list");
        assert_eq!(b, a, "though the copy may be equal");
        assert!(!list(&[("a", "1")]).is_same(&list(&[("a", "1")])));
        assert!(HeaderList::new().is_same(&HeaderList::default()));
    }

    fn owned(list: &HeaderList) -> Vec<(Vec<u8>, Vec<u8>)> {
        list.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
    }

    #[test]
    fn empty_names_and_values_are_entries_like_any_other() {
        let mut h = HeaderList::new();
        h.push("", "");
        h.push("x-empty", "");
        h.push("", "v");
        assert_eq!(h.len(), 3);
        assert_eq!(h.get(""), Some(&b""[..]));
        assert_eq!(h.get_all(b"").collect::<Vec<_>>(), [&b""[..], b"v"]);
        assert_eq!(h.get("x-empty"), Some(&b""[..]));
        h.replace("", "w");
        assert_eq!(
            owned(&h),
            [(b"".to_vec(), b"w".to_vec()), (b"x-empty".to_vec(), vec![])]
        );
        h.remove("");
        assert_eq!(h, list(&[("x-empty", "")]));
    }

    #[test]
    fn names_are_lower_cased_on_every_way_in() {
        let mut h: HeaderList = [("X-A", "1")].into_iter().collect();
        h.push("X-B", "2");
        h.replace("X-C", "3");
        let from_vec = HeaderList::from(vec![(b"X-D".to_vec(), b"4".to_vec())]);
        for (k, _) in h.iter().chain(from_vec.iter()) {
            assert!(!k.iter().any(u8::is_ascii_uppercase), "{k:?}");
        }
        // Lookups are case-insensitive; values are kept as they are.
        h.push("x-e", "MiXeD");
        assert_eq!(h.get("X-E"), Some(&b"MiXeD"[..]));
    }

    #[test]
    fn replace_of_a_repeated_name_keeps_one_entry_where_the_first_was() {
        for value in ["y", "a much longer value than any before"] {
            let mut h = list(&[("a", "1"), ("b", "2"), ("A", "3"), ("c", "4"), ("a", "5")]);
            h.replace("A", value);
            assert_eq!(h, list(&[("a", value), ("b", "2"), ("c", "4")]));
            assert_eq!(h.get_all(b"a").count(), 1);
        }
        let mut h = list(&[("a", "1")]);
        h.replace("z", "new");
        assert_eq!(h, list(&[("a", "1"), ("z", "new")]));
    }

    #[test]
    fn remove_then_push_appends_at_the_end() {
        let mut h = list(&[("a", "1"), ("b", "2"), ("a", "3")]);
        h.remove("A");
        assert_eq!(h, list(&[("b", "2")]));
        h.push("a", "4");
        assert_eq!(h, list(&[("b", "2"), ("a", "4")]));
        h.remove("missing");
        assert_eq!(h.len(), 2);
        h.remove("a");
        h.remove("b");
        assert!(h.is_empty());
        assert_eq!(h, HeaderList::new());
        h.push("c", "5");
        assert_eq!(h, list(&[("c", "5")]));
    }

    #[test]
    fn equality_does_not_depend_on_the_edit_history() {
        let direct = list(&[("a", "1"), ("b", "22"), ("c", "3")]);
        let mut edited = list(&[("x", "0"), ("a", "9"), ("b", "a long value first")]);
        edited.remove("x");
        edited.replace("a", "1");
        edited.replace("b", "22");
        edited.push("c", "3");
        let mut moved = list(&[("a", "")]);
        moved.replace("a", "1");
        moved.push("b", "2");
        moved.replace("b", "22");
        moved.push("c", "3");
        assert_eq!(moved, direct);
        assert_eq!(edited, direct);
        let mut reordered = list(&[("a", "1")]);
        reordered.push("b", "22");
        reordered.push("c", "3");
        assert_eq!(reordered, direct);
        assert_eq!(format!("{direct:?}"), format!("{moved:?}"));
        assert_eq!(HeaderList::new(), HeaderList::with_capacity(8, 256));
        assert_ne!(list(&[("a", "1")]), list(&[("a", "1"), ("a", "1")]));
    }

    #[test]
    fn clones_share_until_one_is_changed() {
        let original = list(&[("a", "1"), ("b", "2")]);
        let mut copy = original.clone();
        assert!(Arc::ptr_eq(
            original.entries.as_ref().unwrap(),
            copy.entries.as_ref().unwrap()
        ));
        copy.replace("a", "changed");
        copy.push("c", "3");
        assert_eq!(original, list(&[("a", "1"), ("b", "2")]));
        assert_eq!(copy, list(&[("a", "changed"), ("b", "2"), ("c", "3")]));
        let mut taken = std::mem::take(&mut copy);
        assert!(
            copy.is_empty() && copy.entries.is_none(),
            "take allocates nothing"
        );
        taken.remove("b");
        assert_eq!(taken, list(&[("a", "changed"), ("c", "3")]));
    }

    #[test]
    fn garbage_from_edits_stays_bounded() {
        let mut h = list(&[("keep", "k"), ("grow", "")]);
        for i in 0..10_000 {
            h.replace("grow", "v".repeat(i % 300 + 1));
            h.push("tmp", "x".repeat(100));
            h.remove("tmp");
        }
        let entries = h.entries.as_ref().unwrap();
        let live = entries.live_bytes();
        assert!(
            entries.bytes.len() <= 2 * live + MIN_GARBAGE_TO_COMPACT + 400,
            "{} bytes held for {live} live",
            entries.bytes.len()
        );
        assert_eq!(h.get("keep"), Some(&b"k"[..]));
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn iter_knows_its_length_and_runs_both_ways() {
        let h = list(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let mut it = h.iter();
        assert_eq!(it.len(), 3);
        assert_eq!(it.next_back(), Some((&b"c"[..], &b"3"[..])));
        assert_eq!(it.next(), Some((&b"a"[..], &b"1"[..])));
        assert_eq!(it.len(), 1);
        assert_eq!(HeaderList::new().iter().len(), 0);
    }

    /// Random edits agree with the straightforward model: a `Vec` of owned pairs.
    #[test]
    fn randomized_edits_match_a_vec_of_pairs() {
        let mut rng = StdRng::seed_from_u64(0x04ea_de25);
        let names: [&[u8]; 5] = [b"a", b"B", b"c-long-name", b"", b"A"];
        for _ in 0..300 {
            let mut h = HeaderList::new();
            let mut model: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            let mut shared = Vec::new();
            for _ in 0..rng.random_range(0..60) {
                let name = names[rng.random_range(0..names.len())];
                let lower = name.to_ascii_lowercase();
                let value: Vec<u8> = (0..rng.random_range(0..40)).map(|_| rng.random()).collect();
                match rng.random_range(0..4) {
                    0 | 1 => {
                        h.push(name, &value);
                        model.push((lower, value));
                    }
                    2 => {
                        h.replace(name, &value);
                        match model.iter().position(|(k, _)| *k == lower) {
                            Some(first) => {
                                model[first].1 = value;
                                let mut i = 0;
                                model.retain(|(k, _)| {
                                    i += 1;
                                    i - 1 == first || *k != lower
                                });
                            }
                            None => model.push((lower, value)),
                        }
                    }
                    _ => {
                        h.remove(name);
                        model.retain(|(k, _)| *k != lower);
                    }
                }
                if rng.random_range(0..8) == 0 {
                    // Some edits happen on a shared list (copy on write).
                    shared.push((h.clone(), model.clone()));
                }
                assert_eq!(owned(&h), model);
                assert_eq!(h.len(), model.len());
                for name in names {
                    let lower = name.to_ascii_lowercase();
                    let expected = model.iter().find(|(k, _)| *k == lower);
                    assert_eq!(h.get(name), expected.map(|(_, v)| v.as_slice()));
                }
            }
            for (list, model) in shared {
                assert_eq!(owned(&list), model, "an earlier clone changed");
            }
            assert_eq!(h, HeaderList::from(model));
        }
    }
}
