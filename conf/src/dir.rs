//! Reading the config directory: which files count, and their contents.

use std::path::Path;

use crate::error::ConfigError;
use crate::limits::MAX_FILE_BYTES;
use crate::store::SourceFile;

/// Lists the config files of `dir`: `*.yaml` / `*.yml`, not hidden, regular files after following
/// symlinks.
pub fn read_dir_files(dir: &Path) -> Result<Vec<SourceFile>, ConfigError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ConfigError::file(dir, format!("cannot read directory: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| ConfigError::file(dir, format!("cannot read directory: {e}")))?;
        let path = entry.path();
        if !is_config_file_name(&path) {
            continue;
        }
        // `metadata` follows symlinks (ConfigMap files are symlinks into `..data`).
        let meta = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => continue,
            // Deleted since the listing, or a symlink left dangling in the middle of a ConfigMap
            // update: the file is gone, and the watch reports the next step.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(file = %path.display(), "config file vanished while reading the directory");
                continue;
            }
            Err(e) => {
                files.push(SourceFile {
                    path,
                    contents: Err(format!("cannot read file: {e}")),
                });
                continue;
            }
        };
        let contents = if meta.len() > MAX_FILE_BYTES {
            Err(format!(
                "file too large: {} bytes (limit {MAX_FILE_BYTES})",
                meta.len()
            ))
        } else {
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => Err(format!("cannot read file: {e}")),
            }
        };
        files.push(SourceFile { path, contents });
    }
    Ok(files)
}

/// `*.yaml` / `*.yml`, not starting with `.` (editor temp files, `..data`).
pub fn is_config_file_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}
