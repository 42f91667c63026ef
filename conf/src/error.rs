//! The one error type of this crate: a problem found in one place of the config directory.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// One problem found while reading or validating the config directory.
///
/// Validation never stops at the first problem: every function that checks configuration returns
/// all of them. `Display` gives the line users see, e.g.
/// `bookinfo.yaml[doc 2] HTTPRoute default/bookinfo: spec.rules[0].matches[1].path.value: must start with "/"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// The file the problem is in (as found in the directory, or as given to the parser).
    pub file: PathBuf,
    /// 0-based index of the YAML document in the file; `None` for file-level problems
    /// (unreadable file, YAML syntax error).
    pub document: Option<usize>,
    /// The resource, as `Kind namespace/name` (e.g. `HTTPRoute default/bookinfo`), when known.
    pub resource: Option<String>,
    /// The field path inside the document (e.g. `spec.rules[0].matches[1].path.value`), when known.
    pub field: Option<String>,
    /// What is wrong. Never contains a Secret's value.
    pub message: String,
}

// === impl ConfigError ===

impl ConfigError {
    /// A problem with a whole file (unreadable, not YAML, ...).
    pub fn file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            document: None,
            resource: None,
            field: None,
            message: message.into(),
        }
    }

    pub(crate) fn at(
        file: impl Into<PathBuf>,
        document: Option<usize>,
        resource: Option<String>,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            document,
            resource,
            field,
            message: message.into(),
        }
    }
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(doc) = self.document {
            write!(f, "[doc {doc}]")?;
        }
        if let Some(resource) = &self.resource {
            write!(f, " {resource}")?;
        }
        f.write_str(":")?;
        if let Some(field) = &self.field {
            write!(f, " {field}:")?;
        }
        write!(f, " {}", self.message)
    }
}

/// Errors of [`crate::watch()`]: the directory could not be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The OS watcher could not be created or could not watch the directory.
    #[error("cannot watch {dir}: {source}")]
    Notify {
        dir: PathBuf,
        #[source]
        source: notify::Error,
    },
}
