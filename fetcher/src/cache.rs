//! The module cache: istio-agent's maps (istio-wasm.md §2.4) kept in memory, mirrored to an
//! index file, over content-addressed module files.
//!
//! Layout under the cache directory:
//! - `modules/<sha256 of the module>.wasm`: one file per distinct module, written to a temp file
//!   in the same directory while hashing, then renamed, so readers never see a partial file and
//!   two writers racing both produce the same bytes.
//! - `index.json`: the `(name, checksum) → module` and `url → checksum` maps, replaced atomically
//!   after each change, so a restart with a warm cache needs no network.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::warn;

use crate::error::FetchError;

const INDEX_FILE: &str = "index.json";
const MODULES_DIR: &str = "modules";
const INDEX_VERSION: u32 = 1;

/// Hex sha256.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `sha256:<hex>`, the OCI digest form.
pub(crate) fn sha256_prefixed(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

#[derive(Clone, Debug)]
struct Entry {
    wasm: String,
    last: SystemTime,
    urls: BTreeSet<String>,
    manifest_digest: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ChecksumEntry {
    checksum: String,
    /// resource name → resource version last seen for this URL.
    versions: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    /// Istio's `modules`, keyed by (module name, checksum).
    modules: HashMap<(String, String), Entry>,
    /// Istio's `checksums`, keyed by download URL.
    checksums: HashMap<String, ChecksumEntry>,
}

#[derive(Serialize, Deserialize)]
struct StoredModule {
    name: String,
    checksum: String,
    wasm: String,
    last_unix_ms: u64,
    urls: BTreeSet<String>,
    manifest_digest: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredIndex {
    version: u32,
    modules: Vec<StoredModule>,
    checksums: BTreeMap<String, ChecksumEntry>,
}

/// A cache hit: where the module is and what it is.
#[derive(Clone, Debug)]
pub(crate) struct Hit {
    pub path: PathBuf,
    pub wasm: String,
    pub manifest_digest: Option<String>,
}

/// What a lookup needs, as in Istio's `cacheKey`.
pub(crate) struct Key<'a> {
    pub url: &'a str,
    pub name: &'a str,
    /// The expected checksum (the request's `sha256` or the URL's digest), if any.
    pub checksum: Option<&'a str>,
    pub resource: &'a str,
    pub resource_version: &'a str,
    /// Istio's `shouldIgnoreResourceVersion`.
    pub ignore_resource_version: bool,
}

/// A verified module to record, with every key it may be looked up by.
pub(crate) struct NewModule<'a> {
    pub url: &'a str,
    pub name: &'a str,
    /// Checksums it answers to (manifest digest, module digest, index digest).
    pub checksums: &'a [&'a str],
    /// What the URL resolved to, for Istio's `checksums` map; `None` for digest-pinned URLs.
    pub url_checksum: Option<&'a str>,
    pub resource: &'a str,
    pub resource_version: &'a str,
    pub wasm: &'a [u8],
    pub wasm_hex: &'a str,
    pub manifest_digest: Option<&'a str>,
}

pub(crate) struct Cache {
    dir: PathBuf,
    modules_dir: PathBuf,
    state: Mutex<State>,
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl Cache {
    /// Opens (creating) the cache directory and loads its index. A missing or unreadable index
    /// starts an empty cache; entries whose file is gone are dropped.
    pub(crate) fn open(dir: &Path) -> Result<Self, FetchError> {
        let modules_dir = dir.join(MODULES_DIR);
        std::fs::create_dir_all(&modules_dir).map_err(|source| FetchError::Cache {
            path: modules_dir.clone(),
            source,
        })?;
        let cache = Self {
            dir: dir.to_owned(),
            modules_dir,
            state: Mutex::new(State::default()),
        };
        let index_path = dir.join(INDEX_FILE);
        match std::fs::read(&index_path) {
            Ok(bytes) => match serde_json::from_slice::<StoredIndex>(&bytes) {
                Ok(index) if index.version == INDEX_VERSION => {
                    let mut state = cache.lock();
                    for m in index.modules {
                        if !cache.module_path(&m.wasm).is_file() {
                            continue;
                        }
                        state.modules.insert(
                            (m.name, m.checksum),
                            Entry {
                                wasm: m.wasm,
                                last: UNIX_EPOCH + Duration::from_millis(m.last_unix_ms),
                                urls: m.urls,
                                manifest_digest: m.manifest_digest,
                            },
                        );
                    }
                    state.checksums = index.checksums.into_iter().collect();
                }
                Ok(_) => {
                    warn!(target: "wasmgate::fetcher", path = %index_path.display(), "cache index of another version; starting empty")
                }
                Err(e) => {
                    warn!(target: "wasmgate::fetcher", path = %index_path.display(), error = %e, "unreadable cache index; starting empty")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(FetchError::Cache {
                    path: index_path,
                    source,
                });
            }
        }
        Ok(cache)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn module_path(&self, wasm_hex: &str) -> PathBuf {
        self.modules_dir.join(format!("{wasm_hex}.wasm"))
    }

    /// Istio's `getEntry`: resolve the checksum (given, else the one last fetched for this URL if
    /// the pull policy allows), record the resource version, and look the module up. Returns
    /// the hit, if any.
    pub(crate) fn lookup(&self, key: &Key<'_>) -> Option<Hit> {
        let mut state = self.lock();
        let mut checksum = key.checksum.map(str::to_owned);
        if checksum.is_none()
            && let Some(ce) = state.checksums.get_mut(key.url)
        {
            if key.ignore_resource_version
                || ce.versions.get(key.resource).map(String::as_str) == Some(key.resource_version)
            {
                checksum = Some(ce.checksum.clone());
            }
            ce.versions
                .insert(key.resource.to_owned(), key.resource_version.to_owned());
        }
        let checksum = checksum?;
        self.touch(&mut state, key.name, &checksum)
    }

    /// Direct `(name, checksum)` lookup (Istio's "second chance" after resolving a manifest).
    pub(crate) fn lookup_exact(&self, name: &str, checksum: &str) -> Option<Hit> {
        let mut state = self.lock();
        self.touch(&mut state, name, checksum)
    }

    fn touch(&self, state: &mut State, name: &str, checksum: &str) -> Option<Hit> {
        let entry = state
            .modules
            .get_mut(&(name.to_owned(), checksum.to_owned()))?;
        entry.last = SystemTime::now();
        Some(Hit {
            path: self.module_path(&entry.wasm),
            wasm: entry.wasm.clone(),
            manifest_digest: entry.manifest_digest.clone(),
        })
    }

    /// Reads a hit's file and checks it still has the recorded digest. A missing or altered file
    /// drops the entries that point at it and reads as a miss.
    pub(crate) async fn read(&self, hit: &Hit) -> Result<Option<Vec<u8>>, FetchError> {
        let ok = match tokio::fs::read(&hit.path).await {
            Ok(bytes) if sha256_hex(&bytes) == hit.wasm => Some(bytes),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(FetchError::Cache {
                    path: hit.path.clone(),
                    source,
                });
            }
        };
        if ok.is_none() {
            warn!(target: "wasmgate::fetcher", path = %hit.path.display(), "cached module missing or altered; fetching again");
            let mut state = self.lock();
            state.modules.retain(|_, e| e.wasm != hit.wasm);
            let _ = std::fs::remove_file(&hit.path);
            self.persist(&state);
        }
        Ok(ok)
    }

    /// Writes a verified module (if not already on disk) and records it under every checksum in
    /// `m.checksums`. Returns the module file.
    pub(crate) async fn insert(&self, m: NewModule<'_>) -> Result<PathBuf, FetchError> {
        let NewModule {
            url,
            name,
            checksums,
            url_checksum,
            resource,
            resource_version,
            wasm,
            wasm_hex,
            manifest_digest,
        } = m;
        let path = self.module_path(wasm_hex);
        if !path.is_file() {
            let dir = self.modules_dir.clone();
            let data = wasm.to_vec();
            let expected = wasm_hex.to_owned();
            let target = path.clone();
            tokio::task::spawn_blocking(move || write_verified(&dir, &target, &data, &expected))
                .await
                .map_err(|e| FetchError::Cache {
                    path: path.clone(),
                    source: std::io::Error::other(e),
                })??;
        }
        let mut state = self.lock();
        let now = SystemTime::now();
        for checksum in checksums {
            let entry = state
                .modules
                .entry((name.to_owned(), (*checksum).to_owned()))
                .or_insert_with(|| Entry {
                    wasm: wasm_hex.to_owned(),
                    last: now,
                    urls: BTreeSet::new(),
                    manifest_digest: manifest_digest.map(str::to_owned),
                });
            entry.wasm = wasm_hex.to_owned();
            entry.last = now;
            entry.urls.insert(url.to_owned());
        }
        if let Some(c) = url_checksum {
            Self::remember(&mut state, url, c, resource, resource_version);
        }
        self.persist(&state);
        Ok(path)
    }

    /// Records that `url` resolved to the module `(name, checksum)` for this resource version.
    pub(crate) fn remember_url(
        &self,
        url: &str,
        name: &str,
        checksum: &str,
        resource: &str,
        version: &str,
    ) {
        let mut state = self.lock();
        Self::remember(&mut state, url, checksum, resource, version);
        if let Some(e) = state
            .modules
            .get_mut(&(name.to_owned(), checksum.to_owned()))
        {
            e.urls.insert(url.to_owned());
        }
        self.persist(&state);
    }

    fn remember(state: &mut State, url: &str, checksum: &str, resource: &str, version: &str) {
        let ce = state.checksums.entry(url.to_owned()).or_default();
        ce.checksum = checksum.to_owned();
        ce.versions.insert(resource.to_owned(), version.to_owned());
    }

    /// Number of distinct module files.
    pub(crate) fn entries(&self) -> usize {
        let state = self.lock();
        state
            .modules
            .values()
            .map(|e| e.wasm.as_str())
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Istio's purge: drop entries untouched for longer than `expiry`, forget the checksums of
    /// the URLs that referenced them, delete files no entry uses any more. Returns the number of
    /// files deleted.
    pub(crate) fn purge(&self, expiry: Duration) -> usize {
        let mut state = self.lock();
        let now = SystemTime::now();
        let expired: Vec<(String, String)> = state
            .modules
            .iter()
            .filter(|(_, e)| now.duration_since(e.last).unwrap_or_default() > expiry)
            .map(|(k, _)| k.clone())
            .collect();
        if expired.is_empty() {
            return 0;
        }
        let mut candidates = BTreeSet::new();
        for key in expired {
            if let Some(e) = state.modules.remove(&key) {
                for url in &e.urls {
                    state.checksums.remove(url);
                }
                candidates.insert(e.wasm);
            }
        }
        let mut removed = 0;
        for wasm in candidates {
            if state.modules.values().all(|e| e.wasm != wasm) {
                let path = self.module_path(&wasm);
                match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => removed += 1,
                    Err(e) => {
                        warn!(target: "wasmgate::fetcher", path = %path.display(), error = %e, "cannot delete expired module")
                    }
                }
            }
        }
        self.persist(&state);
        removed
    }

    /// Replaces the index file atomically. Failures are logged: the cache still works from
    /// memory, only a restart loses it.
    fn persist(&self, state: &State) {
        let index = StoredIndex {
            version: INDEX_VERSION,
            modules: state
                .modules
                .iter()
                .map(|((name, checksum), e)| StoredModule {
                    name: name.clone(),
                    checksum: checksum.clone(),
                    wasm: e.wasm.clone(),
                    last_unix_ms: to_ms(e.last),
                    urls: e.urls.clone(),
                    manifest_digest: e.manifest_digest.clone(),
                })
                .collect(),
            checksums: state
                .checksums
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let result = (|| -> std::io::Result<()> {
            let json = serde_json::to_vec_pretty(&index).map_err(std::io::Error::other)?;
            let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            tmp.write_all(&json)?;
            tmp.persist(self.dir.join(INDEX_FILE))
                .map_err(|e| e.error)?;
            Ok(())
        })();
        if let Err(e) = result {
            warn!(target: "wasmgate::fetcher", dir = %self.dir.display(), error = %e, "cannot write the cache index");
        }
    }
}

/// Streams `data` into a temp file next to `target` while hashing, and renames it into place
/// only if the digest is the expected one.
fn write_verified(
    dir: &Path,
    target: &Path,
    data: &[u8],
    expected: &str,
) -> Result<(), FetchError> {
    let err = |source| FetchError::Cache {
        path: target.to_owned(),
        source,
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    let mut hasher = Sha256::new();
    for chunk in data.chunks(1 << 20) {
        hasher.update(chunk);
        tmp.write_all(chunk).map_err(err)?;
    }
    let actual = hex::encode(hasher.finalize());
    if actual != expected {
        return Err(err(std::io::Error::other(format!(
            "module digest changed while writing: {actual} != {expected}"
        ))));
    }
    tmp.as_file().sync_all().map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(err)?;
    }
    // Another fetch (or process) may have renamed the same bytes in first; replacing them with
    // identical bytes is harmless.
    tmp.persist(target).map_err(|e| err(e.error))?;
    Ok(())
}
