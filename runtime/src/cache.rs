//! On-disk cache of compiled code, so a restart does not recompile every plugin.
//!
//! Entries are keyed by the sha256 of the module bytes and a hash of the engine's compilation
//! settings (`Engine::precompile_compatibility_hash`), written to a temporary file then renamed
//! (a reader never sees a partial file), and end with the sha256 of their own content, so a
//! damaged entry is detected, ignored and rewritten.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

use crate::error::RuntimeError;

pub(crate) struct CodeCache {
    dir: PathBuf,
    engine_key: String,
}

impl CodeCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::Cache {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        })
    }

    fn path(&self, digest: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", hex::encode(digest), self.engine_key))
    }

    /// The cached module, or `None` (absent, damaged, or built by another engine).
    pub fn load(&self, engine: &Engine, digest: &[u8; 32]) -> Option<Module> {
        let path = self.path(digest);
        let bytes = std::fs::read(&path).ok()?;
        let module = bytes
            .len()
            .checked_sub(32)
            .map(|n| bytes.split_at(n))
            .filter(|(code, sum)| Sha256::digest(code).as_slice() == *sum)
            .and_then(|(code, _)| deserialize(engine, code).ok());
        if module.is_none() {
            tracing::warn!(path = %path.display(), "ignoring damaged compiled-code cache entry");
            let _ = std::fs::remove_file(&path);
        }
        module
    }

    /// Best effort: a cache that cannot be written only costs a recompilation next time.
    pub fn store(&self, digest: &[u8; 32], module: &Module) {
        let path = self.path(digest);
        if let Err(e) = write_atomically(&self.dir, &path, module) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write compiled-code cache entry");
        }
    }
}

fn write_atomically(dir: &Path, path: &Path, module: &Module) -> std::io::Result<()> {
    let code = module.serialize().map_err(std::io::Error::other)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&code)?;
    tmp.write_all(&Sha256::digest(&code))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The one `unsafe` in this crate.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, code: &[u8]) -> wasmtime::Result<Module> {
    // SAFETY: `Module::deserialize` trusts its input to be machine code wasmtime produced. These
    // bytes are: the files are written only by `CodeCache::store` from `Module::serialize`, into
    // a directory the operator gives the runtime; they are named by the content hash of the Wasm
    // source plus the engine's compatibility hash (and wasmtime re-checks version and settings
    // in the header); they appear atomically by rename, and their trailing sha256 was verified
    // against the content just before this call, so a truncated or damaged file never gets here.
    unsafe { Module::deserialize(engine, code) }
}
