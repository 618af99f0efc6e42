//! The stored domain config: one JSON document per domain, libxl's `libxl-json` in our form.
//!
//! DESIGN.md's rule is a type rule here: every read, write, read-modify-write and removal takes
//! the domain's [`UserdataGuard`], so the userdata lock is held across it. The guard also names
//! the domain, so the file read is always the locked domain's.
//!
//! Writes are atomic: a temporary file in the same directory, written and `fsync`ed, renamed
//! over the document, then the directory `fsync`ed. A reader sees the old document or the new
//! one, never a mix, even across a crash.
//!
//! ```
//! use toolstack::config::stored::{ConfigStore, StoredConfig};
//! use toolstack::config::DomainConfig;
//! use toolstack::lock::{CtxLock, LockDir, Locked};
//!
//! let dir = std::env::temp_dir().join(format!("rxen-stored-doc-{}", std::process::id()));
//! let (locks, store) = (LockDir::under(&dir), ConfigStore::under(&dir));
//! let exists = |_| Ok(true);
//! let ctx = CtxLock::new(());
//! let mut root = Locked::root();
//! let mut ctx_guard = ctx.lock(&mut root);
//! let mut token = ctx_guard.token();
//! let guard = locks.lock_userdata(&mut token, 3, &exists)?;
//!
//! store.save(&guard, &StoredConfig::new(3, DomainConfig::new("guest")))?;
//! store.update(&guard, |stored| {
//!     stored.config.memory_kib = 16 * 1024;
//!     Ok::<_, toolstack::config::stored::Error>(())
//! })?;
//! assert_eq!(store.load(&guard)?.config.memory_kib, 16 * 1024);
//! store.remove(&guard)?;
//! assert!(store.load_opt(&guard)?.is_none());
//! # drop(guard);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{DomainConfig, ValidationError};
use crate::lock::{DomId, UserdataGuard};

/// The schema version this code writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// One domain's stored document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredConfig {
    /// The document's schema version; [`SCHEMA_VERSION`] for documents this code writes.
    pub schema_version: u32,
    /// The domain the document describes.
    pub domid: DomId,
    /// The domain's configuration.
    pub config: DomainConfig,
}

impl StoredConfig {
    /// A document for `domid` at the current schema version.
    pub fn new(domid: DomId, config: DomainConfig) -> Self {
        StoredConfig {
            schema_version: SCHEMA_VERSION,
            domid,
            config,
        }
    }

    /// Decodes and checks a document: JSON of the right shape, the current schema version, and a
    /// config that passes [`DomainConfig::validate`]. Never panics, whatever the bytes.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] saying which of those failed.
    pub fn from_json(bytes: &[u8]) -> Result<StoredConfig, DecodeError> {
        #[derive(Deserialize)]
        struct Version {
            schema_version: u32,
        }
        // Look at the version first, so a newer document is reported as such rather than as a
        // shape mismatch.
        let v: Version = serde_json::from_slice(bytes).map_err(DecodeError::Json)?;
        if v.schema_version != SCHEMA_VERSION {
            return Err(DecodeError::Version {
                found: v.schema_version,
            });
        }
        let stored: StoredConfig = serde_json::from_slice(bytes).map_err(DecodeError::Json)?;
        stored.config.validate().map_err(DecodeError::Invalid)?;
        Ok(stored)
    }

    /// Encodes the document (pretty-printed JSON with a final newline).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self)
            .expect("a StoredConfig has string keys and no fallible Serialize impls");
        out.push(b'\n');
        out
    }
}

/// Why bytes are not a stored config.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, truncated, or not the document's shape.
    #[error("not a stored domain config (corrupt or truncated)")]
    Json(#[source] serde_json::Error),
    /// A schema version this code does not read.
    #[error(
        "schema version {found} is not supported (this toolstack reads version {SCHEMA_VERSION})"
    )]
    Version {
        /// The version found.
        found: u32,
    },
    /// Well-formed, but the config breaks a rule.
    #[error("the stored config is invalid")]
    Invalid(#[source] ValidationError),
}

/// Why a stored config could not be read, written or removed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// There is no document for the domain.
    #[error("domain {domid}: no stored config at {}", path.display())]
    Missing {
        /// The domain.
        domid: DomId,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The document could not be read.
    #[error("domain {domid}: cannot read the stored config {}", path.display())]
    Read {
        /// The domain.
        domid: DomId,
        /// The document.
        path: PathBuf,
        /// The error from reading.
        #[source]
        source: io::Error,
    },
    /// The document is corrupt, truncated, of another schema version, or invalid.
    #[error("domain {domid}: bad stored config {}", path.display())]
    Decode {
        /// The domain.
        domid: DomId,
        /// The document.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: DecodeError,
    },
    /// The document belongs to another domain than the one whose lock is held.
    #[error(
        "domain {domid}: the stored config {} describes domain {found}; it is stale or misplaced",
        path.display()
    )]
    WrongDomain {
        /// The domain whose lock is held.
        domid: DomId,
        /// The document.
        path: PathBuf,
        /// The domid the document names.
        found: DomId,
    },
    /// Writing (temporary file, fsync, rename, directory fsync) failed; the previous document,
    /// if any, is intact.
    #[error("domain {domid}: cannot write the stored config {}", path.display())]
    Write {
        /// The domain.
        domid: DomId,
        /// The document.
        path: PathBuf,
        /// The error from the failing step.
        #[source]
        source: io::Error,
    },
    /// libxl's document is kept, but neither the lock nor the config names the domain's UUID,
    /// which its file name needs.
    #[error("domain {domid}: no UUID known, so libxl's stored config cannot be named")]
    NoUuid {
        /// The domain.
        domid: DomId,
    },
    /// Removing the document failed.
    #[error("domain {domid}: cannot remove the stored config {}", path.display())]
    Remove {
        /// The domain.
        domid: DomId,
        /// The document.
        path: PathBuf,
        /// The error from `unlink`.
        #[source]
        source: io::Error,
    },
}

/// The directory of stored configs: `domain-<domid>.json` each; and, if set, libxl's directory
/// for its `libxl-json` documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigStore {
    dir: PathBuf,
    libxl_dir: Option<PathBuf>,
}

impl ConfigStore {
    /// The default directory on a real host.
    pub const DEFAULT: &'static str = "/var/lib/rxen/domains";

    /// Documents in `dir` (created, mode 0755, on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ConfigStore {
            dir: dir.into(),
            libxl_dir: None,
        }
    }

    /// This store, also keeping libxl's stored config of each domain in `libxl_dir` (libxl's
    /// `XEN_LIB_DIR`, `/var/lib/xen` on a real host; see the module docs).
    pub fn with_libxl(mut self, libxl_dir: impl Into<PathBuf>) -> Self {
        self.libxl_dir = Some(libxl_dir.into());
        self
    }

    /// libxl's directory, if this store keeps libxl's documents.
    pub fn libxl_dir(&self) -> Option<&Path> {
        self.libxl_dir.as_deref()
    }

    /// Where libxl's document of domain `domid`, whose Xen handle is `uuid`, lives (`None` if
    /// this store keeps none).
    pub fn libxl_document_path(&self, domid: DomId, uuid: Uuid) -> Option<PathBuf> {
        self.libxl_dir
            .as_ref()
            .map(|d| d.join(super::libxl::userdata_file_name(domid, uuid)))
    }

    /// Documents in `<state_dir>/domains`.
    pub fn under(state_dir: impl AsRef<Path>) -> Self {
        ConfigStore::new(state_dir.as_ref().join("domains"))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where domain `domid`'s document lives.
    pub fn document_path(&self, domid: DomId) -> PathBuf {
        self.dir.join(format!("domain-{domid}.json"))
    }

    /// Reads the locked domain's document.
    ///
    /// # Errors
    ///
    /// [`Error::Missing`] if there is none; [`Error::Read`], [`Error::Decode`] or
    /// [`Error::WrongDomain`] otherwise.
    pub fn load(&self, guard: &UserdataGuard<'_>) -> Result<StoredConfig, Error> {
        self.load_opt(guard)?.ok_or_else(|| Error::Missing {
            domid: guard.domid(),
            path: self.document_path(guard.domid()),
        })
    }

    /// Reads the locked domain's document, `None` if there is none.
    ///
    /// # Errors
    ///
    /// [`Error::Read`], [`Error::Decode`] or [`Error::WrongDomain`].
    pub fn load_opt(&self, guard: &UserdataGuard<'_>) -> Result<Option<StoredConfig>, Error> {
        let domid = guard.domid();
        let path = self.document_path(domid);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Read {
                    domid,
                    path,
                    source,
                })
            }
        };
        let stored = match StoredConfig::from_json(&bytes) {
            Ok(s) => s,
            Err(source) => {
                return Err(Error::Decode {
                    domid,
                    path,
                    source,
                })
            }
        };
        if stored.domid != domid {
            return Err(Error::WrongDomain {
                domid,
                path,
                found: stored.domid,
            });
        }
        Ok(Some(stored))
    }

    /// Writes the locked domain's document atomically, replacing any previous one, and then
    /// libxl's document (if this store keeps them), as libxl does at creation and on device
    /// changes. The hook for anything that changes what libxl records.
    ///
    /// # Errors
    ///
    /// As [`save_own`](Self::save_own), and [`Error::NoUuid`] or [`Error::Write`] for libxl's
    /// document.
    pub fn save(&self, guard: &UserdataGuard<'_>, stored: &StoredConfig) -> Result<(), Error> {
        self.save_own(guard, stored)?;
        self.save_libxl(guard, stored)
    }

    /// Writes libxl's document of the locked domain from `stored`, atomically as libxl does
    /// (`userdata-n.*` written, then renamed over `userdata-d.*`; here also `fsync`ed). Nothing
    /// if this store keeps no libxl documents.
    ///
    /// # Errors
    ///
    /// [`Error::NoUuid`] if neither the lock nor the config names the domain's UUID;
    /// [`Error::Write`] if a step fails (the previous document is then intact).
    pub fn save_libxl(
        &self,
        guard: &UserdataGuard<'_>,
        stored: &StoredConfig,
    ) -> Result<(), Error> {
        let Some(libxl_dir) = &self.libxl_dir else {
            return Ok(());
        };
        let domid = guard.domid();
        let Some(uuid) = guard.uuid().or(stored.config.uuid) else {
            return Err(Error::NoUuid { domid });
        };
        let path = libxl_dir.join(super::libxl::userdata_file_name(domid, uuid));
        let tmp = libxl_dir.join(crate::lock::libxl_userdata_name(
            'n',
            domid,
            uuid,
            super::libxl::USERID,
        ));
        let doc = super::libxl::LibxlDomainConfig::new(&stored.config, uuid);
        write_atomically(libxl_dir, &tmp, &path, &doc.to_userdata(), 0o600).map_err(|source| {
            Error::Write {
                domid,
                path,
                source,
            }
        })
    }

    /// Writes the locked domain's document only, atomically, replacing any previous one: for
    /// changes libxl does not record in its document (memory target and maximum).
    ///
    /// # Errors
    ///
    /// [`Error::WrongDomain`] if `stored.domid` is not the locked domain; [`Error::Write`] if a
    /// step fails (the previous document is then intact).
    pub fn save_own(&self, guard: &UserdataGuard<'_>, stored: &StoredConfig) -> Result<(), Error> {
        let domid = guard.domid();
        let path = self.document_path(domid);
        if stored.domid != domid {
            return Err(Error::WrongDomain {
                domid,
                path,
                found: stored.domid,
            });
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("document");
        // One writer per domain at a time (the userdata lock), so the pid is enough to keep
        // temporary names apart; a leftover from a crash is truncated and reused.
        let tmp = self.dir.join(format!(".{name}.tmp.{}", std::process::id()));
        write_atomically(&self.dir, &tmp, &path, &stored.to_json(), 0o644).map_err(|source| {
            Error::Write {
                domid,
                path,
                source,
            }
        })
    }

    /// Read-modify-write of the locked domain's document: loads it, lets `f` change it, and
    /// writes it back if `f` succeeds. Nothing is written if `f` fails.
    ///
    /// # Errors
    ///
    /// Whatever [`load`](Self::load), `f` or [`save`](Self::save) reports.
    pub fn update<R, E: From<Error>>(
        &self,
        guard: &UserdataGuard<'_>,
        f: impl FnOnce(&mut StoredConfig) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut stored = self.load(guard)?;
        let r = f(&mut stored)?;
        self.save(guard, &stored)?;
        Ok(r)
    }

    /// Removes the locked domain's document (for destroy), and libxl's (as libxl's destroy
    /// removes its userdata). Removing a missing document is not an error: a second destroy
    /// finds nothing to remove.
    ///
    /// libxl's document is found by the UUID in the lock's name; for a domain Xen no longer
    /// has (so the lock has no UUID), by the UUID our document records, else every
    /// `userdata-d.<domid>.*.libxl-json` goes (they describe a domain that is gone).
    ///
    /// # Errors
    ///
    /// [`Error::Remove`] if `unlink` fails otherwise.
    pub fn remove(&self, guard: &UserdataGuard<'_>) -> Result<(), Error> {
        let domid = guard.domid();
        if let Some(libxl_dir) = &self.libxl_dir {
            let uuid = match guard.uuid() {
                Some(u) => Some(u),
                None => self
                    .load_opt(guard)
                    .ok()
                    .flatten()
                    .and_then(|s| s.config.uuid),
            };
            let doomed: Vec<PathBuf> = match uuid {
                Some(u) => vec![libxl_dir.join(super::libxl::userdata_file_name(domid, u))],
                None => {
                    let prefix = format!("userdata-d.{domid}.");
                    let suffix = format!(".{}", super::libxl::USERID);
                    match std::fs::read_dir(libxl_dir) {
                        Ok(entries) => entries
                            .filter_map(|e| e.ok())
                            .filter(|e| {
                                e.file_name()
                                    .to_str()
                                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(&suffix))
                            })
                            .map(|e| e.path())
                            .collect(),
                        Err(_) => Vec::new(),
                    }
                }
            };
            for path in doomed {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(Error::Remove {
                            domid,
                            path,
                            source,
                        })
                    }
                }
            }
        }
        let path = self.document_path(domid);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(Error::Remove {
                    domid,
                    path,
                    source,
                })
            }
        }
        sync_dir(&self.dir).map_err(|source| Error::Remove {
            domid,
            path,
            source,
        })
    }
}

impl Default for ConfigStore {
    fn default() -> Self {
        ConfigStore::new(Self::DEFAULT)
    }
}

/// Writes `bytes` to `path` atomically: into `tmp` (same directory), `fsync`, rename over
/// `path`, `fsync` the directory. `tmp` is removed if a step fails.
fn write_atomically(
    dir: &Path,
    tmp: &Path,
    path: &Path,
    bytes: &[u8],
    mode: u32,
) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

use std::os::unix::fs::DirBuilderExt;
