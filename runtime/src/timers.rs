//! `proxy_on_tick`: one timer thread per runtime drives every root context's tick period.
//! Ticks are delivered to the VM's slot like any other task, so a tick never re-enters a busy VM.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::plugin::{Slot, Task, deliver};

struct Timer {
    slot: Weak<Slot>,
    period: Duration,
    next: Instant,
}

#[derive(Default)]
struct Shared {
    /// (slot address, VM generation, root context) → timer.
    timers: Mutex<HashMap<(usize, u64, u32), Timer>>,
    wake: Condvar,
}

/// Owned by the runtime; the thread holds a `Weak` and exits when the runtime is gone.
pub(crate) struct Timers {
    shared: Arc<Shared>,
    started: std::sync::Once,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            shared: Arc::default(),
            started: std::sync::Once::new(),
        }
    }
}

/// How long the timer thread sleeps at most, so it notices a dropped runtime.
const IDLE_WAKE: Duration = Duration::from_millis(500);

impl Timers {
    /// Arms (`Some`) or cancels (`None`) a root context's tick.
    pub fn set(&self, slot: Weak<Slot>, generation: u64, root: u32, period: Option<Duration>) {
        let key = (slot.as_ptr() as usize, generation, root);
        let mut timers = self.shared.timers.lock();
        match period {
            Some(period) => {
                timers.insert(
                    key,
                    Timer {
                        slot,
                        period,
                        next: Instant::now() + period,
                    },
                );
            }
            None => {
                timers.remove(&key);
            }
        }
        drop(timers);
        self.start();
        self.shared.wake.notify_one();
    }

    fn start(&self) {
        self.started.call_once(|| {
            let weak = Arc::downgrade(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("wasm-timers".into())
                .spawn(move || run(weak));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the wasm timer thread; proxy_on_tick will not run");
            }
        });
    }
}

fn run(weak: Weak<Shared>) {
    while let Some(shared) = weak.upgrade() {
        let mut due = Vec::new();
        {
            let mut timers = shared.timers.lock();
            let now = Instant::now();
            timers.retain(|&(_, generation, root), t| {
                let Some(slot) = t.slot.upgrade() else {
                    return false;
                };
                if t.next <= now {
                    due.push((slot, generation, root));
                    // Skip missed periods rather than firing a burst after a stall.
                    while t.next <= now {
                        t.next += t.period;
                    }
                }
                true
            });
            let next = timers.values().map(|t| t.next).min();
            let until = next.unwrap_or(now + IDLE_WAKE).min(now + IDLE_WAKE);
            if due.is_empty() {
                shared.wake.wait_until(&mut timers, until);
            }
        }
        for (slot, generation, root) in due {
            deliver(&slot, Task::Tick { generation, root });
        }
    }
}
