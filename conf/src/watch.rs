//! Watching the config directory for changes, coalesced over a short window.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use notify::event::EventKind;
use notify::{PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};

use crate::error::WatchError;
use crate::limits::WATCH_POLL_INTERVAL;

/// Keeps the watch alive; dropping it stops the watcher and no callback runs afterwards.
pub struct WatchHandle {
    _watcher: Box<dyn Watcher + Send>,
    stopped: Arc<AtomicBool>,
    dir: PathBuf,
    polling: bool,
}

impl WatchHandle {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the directory is polled (it is a symlink) rather than watched by the OS.
    pub fn is_polling(&self) -> bool {
        self.polling
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Release);
    }
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHandle")
            .field("dir", &self.dir)
            .field("polling", &self.polling)
            .finish()
    }
}

/// Calls `on_change` (on a watcher thread of its own) at most `window` after the first change in
/// `dir` that follows the previous call.
///
/// This coalesces rather than debounces: a debounce that waits for `window` of quiet never fires
/// while a directory keeps changing (a config rewritten every 100 ms would never reload). Here
/// every change takes effect within `window` plus one reload, and the burst of events a single
/// save makes (editors write a temp file then rename it) lands in one call. Changes made while
/// the callback runs start the next window.
///
/// The callback only says "something changed": the caller re-reads the whole directory with
/// [`crate::ConfigStore::reload`], which makes every kind of change look the same — in-place writes,
/// editors' write-to-temp-then-rename saves, files created or deleted, and a Kubernetes
/// ConfigMap mount whose `..data` symlink is swapped atomically (the swap is an event in `dir`
/// itself, and reloads read through the symlinks).
///
/// When `dir` is itself a symlink (e.g. `--config-dir /etc/config/..data`, or a deploy that swaps
/// a `current -> release-N` link), an OS watch would stay on the old target after a swap, so the
/// directory is polled instead, every [`WATCH_POLL_INTERVAL`], through the symlink.
///
/// Watcher errors are logged and also trigger `on_change`: a missed event costs a redundant reload
/// rather than a stale config. If `dir` is deleted and re-created, the OS watch ends; the caller
/// should treat the process's config dir as stable.
pub fn watch(
    dir: &Path,
    window: Duration,
    on_change: impl FnMut() + Send + 'static,
) -> Result<WatchHandle, WatchError> {
    let err = |source| WatchError::Notify {
        dir: dir.to_owned(),
        source,
    };
    let (tx, rx) = mpsc::channel();
    let handler = handler(tx);
    let polling = std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
    let mut watcher: Box<dyn Watcher + Send> = if polling {
        let config = notify::Config::default()
            .with_poll_interval(WATCH_POLL_INTERVAL)
            // Same-size rewrites within one mtime tick must not be missed.
            .with_compare_contents(true)
            .with_follow_symlinks(true);
        Box::new(PollWatcher::new(handler, config).map_err(err)?)
    } else {
        Box::new(RecommendedWatcher::new(handler, notify::Config::default()).map_err(err)?)
    };
    let mode = if polling {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    watcher.watch(dir, mode).map_err(err)?;

    let stopped = Arc::new(AtomicBool::new(false));
    let thread_stopped = stopped.clone();
    std::thread::Builder::new()
        .name("wasmgate-config-watch".into())
        .spawn(move || coalesce(rx, window, thread_stopped, on_change))
        .map_err(|e| err(notify::Error::io(e)))?;
    Ok(WatchHandle {
        _watcher: watcher,
        stopped,
        dir: dir.to_owned(),
        polling,
    })
}

/// Forwards every event that may change the directory's contents as a bare wake-up.
fn handler(tx: mpsc::Sender<()>) -> impl FnMut(notify::Result<notify::Event>) + Send + 'static {
    move |event: notify::Result<notify::Event>| match event {
        Ok(e) if matches!(e.kind, EventKind::Access(_)) => {}
        Ok(_) => {
            let _ = tx.send(());
        }
        Err(e) => {
            tracing::warn!(error = %e, "config directory watch error");
            let _ = tx.send(());
        }
    }
}

/// The watch thread: one callback per window that saw events. Ends when the watcher (and with it
/// the sender) is dropped.
fn coalesce(
    rx: mpsc::Receiver<()>,
    window: Duration,
    stopped: Arc<AtomicBool>,
    mut on_change: impl FnMut(),
) {
    while rx.recv().is_ok() {
        std::thread::sleep(window);
        while rx.try_recv().is_ok() {}
        if stopped.load(Ordering::Acquire) {
            return;
        }
        on_change();
    }
}
