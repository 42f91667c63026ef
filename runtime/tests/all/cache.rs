use wasmgate_runtime::*;

use crate::support::*;

fn runtime_with_cache(dir: &std::path::Path) -> Runtime {
    Runtime::new(
        std::sync::Arc::new(FakeHost::default()),
        RuntimeOptions {
            cache_dir: Some(dir.to_owned()),
            slots: 1,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn compiled_code_cache_is_hit_by_a_second_runtime_and_repaired_when_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = wat("counter");

    let first = runtime_with_cache(dir.path());
    first.load_module(&bytes).unwrap();
    assert_eq!((first.compilations(), first.cache_hits()), (1, 0));

    // A restart: no recompilation, and the cached code runs.
    let second = runtime_with_cache(dir.path());
    let module = second.load_module(&bytes).unwrap();
    assert_eq!((second.compilations(), second.cache_hits()), (0, 1));
    let plugin = Plugin::load(&second, &module, opts("")).unwrap();
    let mut headers = request_headers();
    plugin
        .new_stream(StreamInfo::default())
        .on_request_headers(&mut headers, true);
    assert_eq!(headers.get("x-count"), Some(&b"1"[..]));

    // Damage the entry: it is ignored, recompiled and rewritten.
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let mut data = std::fs::read(&entries[0]).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&entries[0], &data).unwrap();
    let third = runtime_with_cache(dir.path());
    third.load_module(&bytes).unwrap();
    assert_eq!((third.compilations(), third.cache_hits()), (1, 0));
    let fourth = runtime_with_cache(dir.path());
    fourth.load_module(&bytes).unwrap();
    assert_eq!((fourth.compilations(), fourth.cache_hits()), (0, 1));
}

#[test]
fn same_bytes_compile_once_per_runtime() {
    let e = env();
    let bytes = wat("counter");
    let a = e.runtime.load_module(&bytes).unwrap();
    let b = e.runtime.load_module(&bytes).unwrap();
    assert_eq!(a.digest(), b.digest());
    assert_eq!(e.runtime.compilations(), 1);
}
