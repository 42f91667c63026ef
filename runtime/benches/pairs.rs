//! Header maps: the proxy-wasm pairs codec ([`wasmgate_runtime::pairs`]), how they cross into a
//! guest (`proxy_get_header_map_pairs`, encode) and back (`proxy_set_header_map_pairs`, HTTP-call
//! headers, decode, bounded by the runtime's default limits), and the [`HeaderList`] operations
//! every request does. Run with `cargo bench -p wasmgate-runtime --bench pairs`; see `README.md`
//! beside this file.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wasmgate_runtime::{HeaderList, Limits, pairs};

mod fixtures;

/// The browser request plus what an ingress commonly adds or forwards (cookies, tracing,
/// forwarding, fetch metadata): 30 headers.
fn request_30() -> HeaderList {
    let mut headers = fixtures::request_headers();
    for (name, value) in [
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("referer", "http://bookinfo.example.com/"),
        (
            "cookie",
            "session=eyJ1c2VyIjoib2sifQ.Zx3k9w.q1w2e3r4t5y6u7i8o9p0; theme=dark; lang=en",
        ),
        ("upgrade-insecure-requests", "1"),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-user", "?1"),
        ("priority", "u=0, i"),
        ("cache-control", "max-age=0"),
        ("dnt", "1"),
        ("x-forwarded-for", "203.0.113.7, 10.0.0.12"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "bookinfo.example.com"),
        ("x-real-ip", "203.0.113.7"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("x-b3-spanid", "00f067aa0ba902b7"),
        ("x-b3-sampled", "1"),
        ("x-envoy-attempt-count", "1"),
    ] {
        headers.push(name, value);
    }
    headers
}

fn codec(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("pairs");
    for (label, headers) in [
        ("8_headers", fixtures::request_headers()),
        ("30_headers", request_30()),
    ] {
        let encoded = pairs::encode(&headers);
        let decoded = pairs::decode(&encoded, limits.max_pairs_count, limits.max_pairs_bytes);
        assert_eq!(
            decoded.map(HeaderList::from),
            Ok(headers.clone()),
            "the codec round-trips the fixture"
        );
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode", label), &headers, |b, headers| {
            b.iter(|| pairs::encode(black_box(headers)))
        });
        group.bench_with_input(BenchmarkId::new("decode", label), &encoded, |b, buf| {
            b.iter(|| {
                pairs::decode(
                    black_box(buf),
                    limits.max_pairs_count,
                    limits.max_pairs_bytes,
                )
            })
        });
    }
    group.finish();
}

/// What the gateway and the runtime do with a header list on every request: build it from the
/// proxy's headers, copy it on the first write when another plugin's stream shares it, and look
/// names up (`basic-auth` reads four).
fn header_list(c: &mut Criterion) {
    let mut group = c.benchmark_group("header_list");
    for (label, headers) in [
        ("8_headers", fixtures::request_headers()),
        ("30_headers", request_30()),
    ] {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = headers
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        group.bench_with_input(BenchmarkId::new("build", label), &pairs, |b, pairs| {
            b.iter(|| {
                let mut list = HeaderList::new();
                for (k, v) in black_box(pairs) {
                    list.push(k, v.as_slice());
                }
                list
            })
        });
        group.bench_with_input(
            BenchmarkId::new("copy_on_write", label),
            &headers,
            |b, shared| {
                b.iter(|| {
                    let mut copy = black_box(shared).clone();
                    copy.push("x-added", "added");
                    copy
                })
            },
        );
    }
    let headers = fixtures::request_headers();
    group.bench_function("get_4/8_headers", |b| {
        b.iter(|| {
            let h = black_box(&headers);
            [":method", ":path", ":authority", "authorization"].map(|name| h.get(name).is_some())
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = fixtures::criterion();
    targets = codec, header_list
}
criterion_main!(benches);
