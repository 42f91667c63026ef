use std::path::{Path, PathBuf};

use wasmgate_conf::{ConfigStore, ReloadReport, Snapshot, SourceFile};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Applies in-memory files to a store: `(file name, contents)`.
pub fn apply(
    store: &mut ConfigStore,
    files: &[(&str, &str)],
) -> (std::sync::Arc<Snapshot>, ReloadReport) {
    store.apply(
        files
            .iter()
            .map(|(name, text)| SourceFile::new(*name, *text))
            .collect(),
    )
}

/// Loads one fixture file (by name, relative to `fixtures/`) under its bare file name.
pub fn load_fixture(rel: &str) -> (std::sync::Arc<Snapshot>, ReloadReport) {
    let text = std::fs::read_to_string(fixtures().join(rel)).unwrap();
    let name = Path::new(rel).file_name().unwrap().to_str().unwrap();
    apply(&mut ConfigStore::new(), &[(name, &text)])
}

pub fn lines(errors: &[wasmgate_conf::ConfigError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}
