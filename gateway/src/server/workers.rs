//! Thread-per-core workers: the threads that serve connections.
//!
//! Each worker is one OS thread running its own single-threaded tokio runtime, the way nginx runs
//! one event loop per worker process and Pingora offers with its "no steal" runtime. A connection
//! is accepted by a worker and lives on it to the end: its requests, its plugin VMs (the worker's
//! own slot, see [`wasmgate_runtime::set_thread_slot`]) and its upstream connections (a pool per
//! worker, see [`current`]) never cross threads, so nothing on the request path is woken across
//! cores or contends for a lock. The bench measured why: on tokio's work-stealing runtime a second
//! thread made the gateway *slower* (cross-thread wake-ups and a shared connection pool), while
//! nginx gains from its second worker.
//!
//! Every worker accepts from the same listening socket (one duplicated descriptor each): the
//! kernel hands each new connection to one of the workers waiting, and a busy worker is not
//! waiting, so connections go where there is capacity. Configuration, reloads, module fetches and
//! the admin server run on the control runtime (the main thread), off the request path.

use std::cell::Cell;
use std::time::Duration;

use anyhow::Context as _;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker running the calling thread, `None` off the workers.
pub fn current() -> Option<usize> {
    WORKER.get()
}

/// The running worker threads.
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<(oneshot::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Workers {
    /// Starts `n` workers (at least one); each is ready to run tasks when this returns.
    pub fn start(n: usize) -> anyhow::Result<Self> {
        let mut workers = Workers {
            handles: Vec::new(),
            threads: Vec::new(),
        };
        for index in 0..n.max(1) {
            let (handle_tx, handle_rx) = std::sync::mpsc::channel();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("wasmgate-worker-{index}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = handle_tx.send(Err(e));
                            return;
                        }
                    };
                    WORKER.set(Some(index));
                    wasmgate_runtime::set_thread_slot(index);
                    let _ = handle_tx.send(Ok(rt.handle().clone()));
                    rt.block_on(async {
                        // The worker's idle upstream connections (HTTP/1 engine), swept here
                        // rather than watched by a task each.
                        let sweeper =
                            tokio::spawn(crate::server::h1::upstream::sweep_periodically());
                        let _ = stop_rx.await;
                        sweeper.abort();
                    });
                    // Connections still open after the grace period are dropped with the runtime.
                    rt.shutdown_timeout(Duration::from_millis(100));
                })
                .with_context(|| format!("starting worker thread {index}"))?;
            let handle = handle_rx
                .recv()
                .context("worker thread exited at start")?
                .with_context(|| format!("building the runtime of worker {index}"))?;
            workers.handles.push(handle);
            workers.threads.push((stop_tx, thread));
        }
        Ok(workers)
    }

    /// One runtime handle per worker, in worker order.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Stops every worker, dropping the connections they still hold, and waits for the threads.
    pub fn stop(self) {
        let Workers { handles, threads } = self;
        drop(handles);
        let threads: Vec<_> = threads
            .into_iter()
            .map(|(stop, thread)| {
                let _ = stop.send(());
                thread
            })
            .collect();
        for thread in threads {
            let _ = thread.join();
        }
    }
}
