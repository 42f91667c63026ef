//! Watching the config directory for changes (debounced).

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify::event::EventKind;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use crate::error::WatchError;

/// Keeps the watch alive; dropping it stops the watcher thread.
pub struct WatchHandle {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    dir: PathBuf,
}

impl WatchHandle {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHandle")
            .field("dir", &self.dir)
            .finish()
    }
}

/// Calls `on_change` (on the watcher's own thread) after changes in `dir` settle for `debounce`.
///
/// The callback only says "something changed": the caller re-reads the whole directory with
/// [`crate::ConfigStore::reload`], which makes every kind of change look the same — in-place writes,
/// editors' write-to-temp-then-rename saves, files created or deleted, and a Kubernetes
/// ConfigMap-style directory whose `..data` symlink is swapped atomically (the swap is an event in
/// `dir` itself, and reloads read through the symlinks). Watcher errors are logged and also
/// trigger `on_change`, so a missed event costs a redundant reload rather than a stale config.
/// If `dir` is itself a symlink, the watch follows it at the time of the call.
pub fn watch(
    dir: &Path,
    debounce: Duration,
    mut on_change: impl FnMut() + Send + 'static,
) -> Result<WatchHandle, WatchError> {
    let err = |source| WatchError::Notify {
        dir: dir.to_owned(),
        source,
    };
    let mut debouncer =
        new_debouncer(
            debounce,
            None,
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
            },
        )
        .map_err(err)?;
    debouncer
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(err)?;
    Ok(WatchHandle {
        _debouncer: debouncer,
        dir: dir.to_owned(),
    })
}
