use std::collections::HashMap;
use std::sync::Arc;

use wasmgate_runtime::*;

use crate::support::*;

fn count(headers: &HeaderList) -> u32 {
    std::str::from_utf8(headers.get("x-count").unwrap())
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn concurrent_streams_from_many_threads_share_root_state_per_vm() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 50;
    let e = env_with(Limits::default(), 2);
    let plugin = Arc::new(e.plugin(&wat("counter"), ""));
    let counts: Vec<u32> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let plugin = plugin.clone();
                s.spawn(move || {
                    (0..PER_THREAD)
                        .map(|_| {
                            let mut stream = plugin.new_stream(StreamInfo::default());
                            let mut h = request_headers();
                            assert_eq!(
                                stream.on_request_headers(&mut h, true).action,
                                Action::Continue
                            );
                            stream.on_log();
                            count(&h)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    // Two VMs, each counting its own requests 1, 2, 3...: every value appears at most twice,
    // and the counts add up to the number of requests.
    let mut seen: HashMap<u32, usize> = HashMap::new();
    for c in &counts {
        *seen.entry(*c).or_default() += 1;
    }
    assert!(seen.values().all(|&n| n <= 2), "{seen:?}");
    let per_vm_max: u32 = {
        let mut sorted: Vec<_> = seen.keys().copied().collect();
        sorted.sort_unstable();
        // the highest count with two VMs, plus the highest count reached by only one
        let twice = sorted
            .iter()
            .filter(|c| seen[c] == 2)
            .max()
            .copied()
            .unwrap_or(0);
        let once = sorted.iter().max().copied().unwrap();
        twice + once
    };
    assert_eq!(per_vm_max as usize, THREADS * PER_THREAD);
    assert_eq!(plugin.stats().vms, 2);
}

#[test]
fn a_stream_can_move_between_threads() {
    let e = env_with(Limits::default(), 2);
    let plugin = e.plugin(&wat("lifecycle"), "");
    let mut stream = plugin.new_stream(StreamInfo::default());
    stream.on_request_headers(&mut request_headers(), false);
    let stream = std::thread::spawn(move || {
        let mut stream = stream;
        stream.on_response_headers(&mut response_headers(), true);
        stream.on_log();
        stream
    })
    .join()
    .unwrap();
    drop(stream);
    let trace = e.host.trace("cb:");
    let ctx = trace
        .iter()
        .find_map(|m| m.strip_prefix("cb:request_headers="))
        .unwrap()
        .to_string();
    for cb in ["response_headers", "done", "log", "delete"] {
        assert!(trace.contains(&format!("cb:{cb}={ctx}")), "{cb}: {trace:?}");
    }
}

/// Pingora runs filters on tokio worker threads. WASI output, clocks and polling must work there
/// (wasmtime-wasi's synchronous WASI would call `Handle::block_on` and panic on such a thread).
#[test]
fn callbacks_and_wasi_run_on_a_tokio_worker_thread() {
    let e = env();
    let plugin = e.plugin(&wat("hostcalls"), "");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    rt.block_on(async move {
        tokio::spawn(async move {
            for op in ["log", "time"] {
                let mut stream = plugin.new_stream(StreamInfo::default());
                let mut h = request_headers();
                h.push("x-op", op);
                let outcome = stream.on_request_headers(&mut h, true);
                assert_eq!(
                    outcome.action,
                    Action::Continue,
                    "{op}: {outcome:?} {:?}",
                    plugin.failure()
                );
            }
            // A paused stream resumed by a call answered from another task.
            let mut stream = plugin.new_stream(StreamInfo::default());
            let mut h = request_headers();
            h.push("x-op", "http-call");
            assert_eq!(
                stream.on_request_headers(&mut h, true).action,
                Action::Pause
            );
            stream
        })
        .await
        .unwrap()
    });
    assert!(e.host.logged("from-stdout"));
    assert!(e.host.logged("events=1"));
}

#[test]
fn pooling_allocator_when_available_runs_plugins_the_same() {
    let host = Arc::new(FakeHost::default());
    let runtime = Runtime::new(
        host,
        RuntimeOptions {
            pooling: true,
            slots: 2,
            limits: Limits {
                max_memory_bytes: 16 << 20,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    // Whether the probe succeeded depends on the machine's address space; both must work.
    let module = runtime.load_module(&wat("counter")).unwrap();
    let plugin = Plugin::load(&runtime, &module, opts("")).unwrap();
    let mut h = request_headers();
    plugin
        .new_stream(StreamInfo::default())
        .on_request_headers(&mut h, true);
    assert_eq!(h.get("x-count"), Some(&b"1"[..]));
    println!("pooling allocator in use: {}", runtime.pooling());
}

#[test]
fn threads_pinned_to_a_slot_share_its_vm_and_its_root_state() {
    let e = env_with(Limits::default(), 2);
    let plugin = Arc::new(e.plugin(&wat("counter"), ""));
    // Three threads pinned to slot 1, one after the other: one VM counts all their requests.
    let run_on = |slot: usize, requests: usize| {
        let plugin = plugin.clone();
        std::thread::spawn(move || {
            set_thread_slot(slot);
            (0..requests)
                .map(|_| {
                    let mut stream = plugin.new_stream(StreamInfo::default());
                    let mut h = request_headers();
                    stream.on_request_headers(&mut h, true);
                    stream.on_log();
                    count(&h)
                })
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap()
    };
    assert_eq!(run_on(1, 3), [1, 2, 3]);
    assert_eq!(run_on(1, 2), [4, 5]);
    assert_eq!(run_on(3, 1), [6], "slot indices wrap around the pool size");
    // Slot 0 is another VM (loading the plugin may already have started it), with its own count.
    assert_eq!(run_on(0, 2), [1, 2]);
    assert_eq!(plugin.stats().vms, 2);
}

#[test]
fn stats_count_every_guest_call_of_every_worker_slot() {
    let e = env_with(Limits::default(), 2);
    let plugin = Arc::new(e.plugin(&wat("counter"), ""));
    let run_on = |slot: usize, requests: usize| {
        let plugin = plugin.clone();
        std::thread::spawn(move || {
            set_thread_slot(slot);
            for _ in 0..requests {
                let mut stream = plugin.new_stream(StreamInfo::default());
                stream.on_request_headers(&mut request_headers(), true);
                stream.on_log();
            }
        })
        .join()
        .unwrap()
    };
    let before = plugin.stats();
    run_on(0, 1);
    let per_request = plugin.stats().invocations - before.invocations;
    assert!(per_request >= 1, "{per_request} guest calls per request");

    // Two workers at once, each in its own slot: every call of both is counted.
    std::thread::scope(|s| {
        for slot in [0, 1] {
            let run_on = &run_on;
            s.spawn(move || run_on(slot, 20));
        }
    });
    let after = plugin.stats();
    assert_eq!(
        after.invocations - before.invocations,
        per_request * 41,
        "1 + 2 × 20 requests"
    );
    assert_eq!(
        after.callback_seconds_buckets.iter().sum::<u64>(),
        after.invocations,
        "each call is in one bucket"
    );
    assert_eq!(
        after.callback_seconds_buckets.len(),
        CALLBACK_SECONDS_BOUNDS.len() + 1
    );
    assert!(after.callback_seconds_sum > before.callback_seconds_sum);
}
