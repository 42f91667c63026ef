//! `proxy_get_property`: Envoy's attributes, computed from what the runtime saw of the stream
//! plus [`StreamInfo`](crate::StreamInfo), serialized exactly as Envoy does: strings and bytes
//! raw, integers as 8-byte little-endian, booleans as 1 byte, timestamps and durations as i64
//! nanoseconds, maps in the pairs encoding.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::abi::pairs;
use crate::state::{StreamCtx, VmState};
use crate::types::HeaderList;

fn int(v: i64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn ns_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Header values for `request.headers`: repeated names joined with `,` as Envoy does.
fn header_map(headers: &HeaderList) -> Vec<u8> {
    let mut joined: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (k, v) in headers.iter() {
        match joined.iter_mut().find(|(name, _)| name == k) {
            Some((_, value)) => {
                value.push(b',');
                value.extend_from_slice(v);
            }
            None => joined.push((k.to_vec(), v.to_vec())),
        }
    }
    pairs::encode(&joined)
}

fn header_value(headers: &HeaderList, name: &[u8]) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name);
    let mut out = values.next()?.to_vec();
    for v in values {
        out.push(b',');
        out.extend_from_slice(v);
    }
    Some(out)
}

fn headers_bytes(headers: &HeaderList) -> i64 {
    headers
        .iter()
        .map(|(k, v)| (k.len() + v.len()) as i64)
        .sum()
}

fn addr(a: Option<SocketAddr>, what: &[u8]) -> Option<Vec<u8>> {
    let a = a?;
    match what {
        b"address" => Some(a.to_string().into_bytes()),
        b"port" => Some(int(a.port() as i64)),
        _ => None,
    }
}

fn request(s: &StreamCtx, rest: &[&[u8]]) -> Option<Vec<u8>> {
    let h = s.request_headers.as_ref();
    let hv = |name: &[u8]| h.and_then(|h| h.get(name)).map(<[u8]>::to_vec);
    let path = || hv(b":path");
    Some(match rest {
        [b"path"] => path()?,
        [b"url_path"] => {
            let p = path()?;
            p.split(|&b| b == b'?').next().unwrap_or_default().to_vec()
        }
        [b"query"] => {
            let p = path()?;
            let at = p.iter().position(|&b| b == b'?');
            at.map_or_else(Vec::new, |i| p[i + 1..].to_vec())
        }
        [b"host"] => hv(b":authority")?,
        [b"scheme"] => hv(b":scheme")?,
        [b"method"] => hv(b":method")?,
        [b"referer"] => hv(b"referer")?,
        [b"useragent"] => hv(b"user-agent")?,
        [b"id"] => hv(b"x-request-id")?,
        [b"protocol"] => s.info.protocol.as_bytes().to_vec(),
        [b"time"] => int(ns_since_epoch(s.info.start_time)),
        [b"duration"] => {
            let d = SystemTime::now()
                .duration_since(s.info.start_time)
                .unwrap_or_default();
            int(d.as_nanos() as i64)
        }
        [b"headers"] => header_map(h?),
        [b"headers", name] => header_value(h?, name)?,
        [b"headers_bytes"] => int(headers_bytes(h?)),
        [b"size"] => int(s.request_body_seen as i64),
        [b"total_size"] => int(s.request_body_seen as i64 + h.map_or(0, headers_bytes)),
        _ => return None,
    })
}

fn response(s: &StreamCtx, rest: &[&[u8]]) -> Option<Vec<u8>> {
    let h = s.response_headers.as_ref();
    let t = s.response_trailers.as_ref();
    Some(match rest {
        [b"code"] => {
            let status = h?.get(b":status")?;
            int(std::str::from_utf8(status).ok()?.parse().ok()?)
        }
        [b"grpc_status"] => {
            let v = t
                .and_then(|t| t.get(b"grpc-status"))
                .or_else(|| h?.get(b"grpc-status"))?;
            int(std::str::from_utf8(v).ok()?.parse().ok()?)
        }
        [b"headers"] => header_map(h?),
        [b"headers", name] => header_value(h?, name)?,
        [b"trailers"] => header_map(t?),
        [b"trailers", name] => header_value(t?, name)?,
        [b"headers_bytes"] => int(headers_bytes(h?)),
        [b"size"] => int(s.response_body_seen as i64),
        [b"total_size"] => int(s.response_body_seen as i64 + h.map_or(0, headers_bytes)),
        [b"flags"] => int(0),
        _ => return None,
    })
}

fn connection(s: &StreamCtx, rest: &[&[u8]]) -> Option<Vec<u8>> {
    Some(match rest {
        [b"id"] => int(s.info.connection_id as i64),
        [b"mtls"] => vec![u8::from(s.info.mtls)],
        [b"requested_server_name"] => s.info.requested_server_name.clone()?.into_bytes(),
        [b"tls_version"] => s.info.tls_version.clone()?.into_bytes(),
        _ => return None,
    })
}

/// `xds.*` attributes the stream knows; the rest (`xds.node`...) is the host's.
fn xds(s: Option<&StreamCtx>, rest: &[&[u8]]) -> Option<Vec<u8>> {
    let info = &s?.info;
    Some(match rest {
        [b"route_name"] => info.route_name.as_deref()?.as_bytes().to_vec(),
        [b"cluster_name"] => info.cluster_name.clone()?.into_bytes(),
        [b"virtual_host_name"] => info.virtual_host_name.clone()?.into_bytes(),
        [b"filter_chain_name"] | [b"listener_name"] => info.listener_name.clone()?.into_bytes(),
        // A gateway's listeners are outbound in Envoy's terms (Istio treats gateways as CLIENT).
        [b"listener_direction"] => int(2),
        _ => return None,
    })
}

/// The old top-level Wasm attributes Envoy removed in favour of `xds.*`; older plugins still ask.
const XDS_ALIASES: &[&[u8]] = &[
    b"node",
    b"cluster_name",
    b"cluster_metadata",
    b"listener_direction",
    b"listener_metadata",
    b"route_name",
    b"route_metadata",
    b"upstream_host_metadata",
];

pub(crate) fn get(state: &VmState, path: &[u8]) -> Option<Vec<u8>> {
    let mut segments: Vec<&[u8]> = path.split(|&b| b == 0).collect();
    // Some SDKs terminate every segment, including the last.
    if segments.len() > 1 && segments.last().is_some_and(|s| s.is_empty()) {
        segments.pop();
    }
    if XDS_ALIASES.contains(&segments[0]) {
        segments.insert(0, b"xds");
    }
    let stream = state.stream().ok();
    let plugin = state.plugin_of(state.effective_ctx);
    let builtin = match segments.as_slice() {
        [b"plugin_name"] => plugin.map(|p| p.name.clone().into_bytes()),
        [b"plugin_root_id"] => plugin.map(|p| p.root_id.clone().into_bytes()),
        [b"plugin_vm_id"] => Some(state.vm_id.clone().into_bytes()),
        [b"connection_id"] => stream.map(|s| int(s.info.connection_id as i64)),
        [b"request", rest @ ..] => stream.and_then(|s| request(s, rest)),
        [b"response", rest @ ..] => stream.and_then(|s| response(s, rest)),
        [b"source", rest @ ..] => stream.and_then(|s| addr(s.info.source, rest.first()?)),
        [b"destination", rest @ ..] => stream.and_then(|s| addr(s.info.destination, rest.first()?)),
        [b"upstream", rest @ ..] => stream.and_then(|s| addr(s.info.upstream, rest.first()?)),
        [b"connection", rest @ ..] => stream.and_then(|s| connection(s, rest)),
        [b"xds", rest @ ..] => xds(stream, rest),
        _ => None,
    };
    if builtin.is_some() {
        return builtin;
    }
    // Then what the plugin stored with proxy_set_property (Envoy's filter state `wasm.<path>`),
    // first on this context, then on its root; then whatever the host knows.
    let joined = segments.join(&0u8);
    if let Some(v) = state.props().and_then(|p| p.get(&joined)) {
        return Some(v.clone());
    }
    if let Some(crate::state::Context::Root(root)) =
        state.root_id().and_then(|r| state.contexts.get(&r))
        && let Some(v) = root.props.get(&joined)
    {
        return Some(v.clone());
    }
    state.rt.host.property(&segments)
}
