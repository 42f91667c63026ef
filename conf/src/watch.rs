//! Watching the config directory for changes (debounced).

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify::event::EventKind;
use notify_debouncer_full::{
    DebounceEventResult, Debouncer, NoCache, RecommendedCache, new_debouncer, new_debouncer_opt,
};

use crate::error::WatchError;
use crate::limits::WATCH_POLL_INTERVAL;

/// Keeps the watch alive; dropping it stops the watcher thread.
pub struct WatchHandle {
    _inner: Inner,
    dir: PathBuf,
    polling: bool,
}

// Held only to be dropped.
#[allow(dead_code, reason = "the debouncers stop when dropped")]
enum Inner {
    Native(Debouncer<notify::RecommendedWatcher, RecommendedCache>),
    Poll(Debouncer<notify::PollWatcher, NoCache>),
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

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHandle")
            .field("dir", &self.dir)
            .field("polling", &self.polling)
            .finish()
    }
}

/// Calls `on_change` (on the watcher's own thread) after changes in `dir` settle for `debounce`.
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
    debounce: Duration,
    on_change: impl FnMut() + Send + 'static,
) -> Result<WatchHandle, WatchError> {
    let err = |source| WatchError::Notify {
        dir: dir.to_owned(),
        source,
    };
    let handler = handler(on_change);
    let polling = std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
    let inner = if polling {
        let config = notify::Config::default()
            .with_poll_interval(WATCH_POLL_INTERVAL)
            // Same-size rewrites within one mtime tick must not be missed.
            .with_compare_contents(true)
            .with_follow_symlinks(true);
        let mut d = new_debouncer_opt::<_, notify::PollWatcher, NoCache>(
            debounce, None, handler, NoCache, config,
        )
        .map_err(err)?;
        d.watch(dir, RecursiveMode::Recursive).map_err(err)?;
        Inner::Poll(d)
    } else {
        let mut d = new_debouncer(debounce, None, handler).map_err(err)?;
        d.watch(dir, RecursiveMode::NonRecursive).map_err(err)?;
        Inner::Native(d)
    };
    Ok(WatchHandle {
        _inner: inner,
        dir: dir.to_owned(),
        polling,
    })
}

fn handler(
    mut on_change: impl FnMut() + Send + 'static,
) -> impl FnMut(DebounceEventResult) + Send + 'static {
    move |result: DebounceEventResult| match result {
        Ok(events) => {
            if events
                .iter()
                .any(|e| !matches!(e.event.kind, EventKind::Access(_)))
            {
                on_change();
            }
        }
        Err(errors) => {
            for e in &errors {
                tracing::warn!(error = %e, "config directory watch error");
            }
            on_change();
        }
    }
}
