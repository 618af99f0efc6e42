//! The per-domain file locks: the userdata ("fast") lock and the slow device lock.

use std::error::Error as StdError;
use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::file::{AcquireStep, FileLock, FileLockError};
use super::{level, token, DomId, LockBefore, Locked};

/// The error a [`DomainCheck`] reports when it cannot tell whether a domain exists.
pub type CheckError = Box<dyn StdError + Send + Sync + 'static>;

/// Answers "does domain D exist now?", asked after a per-domain lock is taken (as libxl asks
/// `libxl_domain_info` in `libxl__lock_domain_userdata`). The toolstack answers from Xen; tests
/// answer from anything.
///
/// Closures `Fn(DomId) -> Result<bool, CheckError>` implement it.
pub trait DomainCheck {
    /// Whether domain `domid` exists.
    ///
    /// # Errors
    ///
    /// When the answer cannot be had (Xen unreachable, say); taking the lock then fails.
    fn domain_exists(&self, domid: DomId) -> Result<bool, CheckError>;
}

impl<F: Fn(DomId) -> Result<bool, CheckError>> DomainCheck for F {
    fn domain_exists(&self, domid: DomId) -> Result<bool, CheckError> {
        self(domid)
    }
}

/// Why a per-domain lock could not be taken or released.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lock directory could not be created.
    #[error("cannot create the lock directory {}", path.display())]
    CreateDir {
        /// The lock directory.
        path: PathBuf,
        /// The error from `mkdir`.
        #[source]
        source: io::Error,
    },
    /// The file lock failed.
    #[error("domain {domid}: cannot take or release {what}")]
    File {
        /// The domain.
        domid: DomId,
        /// Which lock: "the userdata lock" or "the slow device lock".
        what: &'static str,
        /// What went wrong with the file.
        #[source]
        source: FileLockError,
    },
    /// The lock was taken, but the domain no longer exists (destroyed meanwhile, or never
    /// created); the lock was released again.
    #[error(
        "domain {domid} does not exist (destroyed, or never created): not taking {what} ({})",
        path.display()
    )]
    NoSuchDomain {
        /// The domain.
        domid: DomId,
        /// Which lock.
        what: &'static str,
        /// Its lock file.
        path: PathBuf,
    },
    /// The domain check itself failed; the lock was released again.
    #[error("domain {domid}: cannot tell whether the domain still exists, so not taking {what}")]
    DomainCheck {
        /// The domain.
        domid: DomId,
        /// Which lock.
        what: &'static str,
        /// What the check reported.
        #[source]
        source: CheckError,
    },
}

/// Where the per-domain lock files live.
///
/// `domain-<domid>.userdata.lock` and `domain-<domid>.slow.lock` in one directory, created (mode
/// 0755) on first use. Like libxl's `/var/lib/xen/userdata-l.*`, but ours: the default is
/// [`LockDir::DEFAULT`], and a toolstack with a state directory uses [`LockDir::under`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockDir {
    dir: PathBuf,
}

const USERDATA: &str = "the userdata lock";
const SLOW: &str = "the slow device lock";

impl LockDir {
    /// The default lock directory for a real host.
    pub const DEFAULT: &'static str = "/run/rxen/locks";

    /// Lock files in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LockDir { dir: dir.into() }
    }

    /// Lock files in `<state_dir>/locks`.
    pub fn under(state_dir: impl AsRef<Path>) -> Self {
        LockDir::new(state_dir.as_ref().join("locks"))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The userdata lock file of `domid`.
    pub fn userdata_path(&self, domid: DomId) -> PathBuf {
        self.dir.join(format!("domain-{domid}.userdata.lock"))
    }

    /// The slow device lock file of `domid`.
    pub fn slow_path(&self, domid: DomId) -> PathBuf {
        self.dir.join(format!("domain-{domid}.slow.lock"))
    }

    /// Takes the userdata ("fast") lock of `domid`: needs the ctx lock held (a
    /// [`level::Ctx`] token). Blocks until the lock is free, then fails if `check` says the
    /// domain is gone.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchDomain`] for a domain that does not exist (the lock is released again),
    /// [`Error::DomainCheck`] if the check fails, [`Error::File`] or [`Error::CreateDir`] if the
    /// lock file cannot be used.
    pub fn lock_userdata<'t, L: LockBefore<level::Userdata>>(
        &self,
        _token: &'t mut Locked<'_, L>,
        domid: DomId,
        check: &dyn DomainCheck,
    ) -> Result<UserdataGuard<'t>, Error> {
        self.lock_userdata_observed(_token, domid, check, &mut |_| {})
    }

    /// [`lock_userdata`](Self::lock_userdata), reporting each step of the file lock algorithm
    /// to `observe` (tests use it to stop a waiter at a chosen point).
    ///
    /// # Errors
    ///
    /// As [`lock_userdata`](Self::lock_userdata).
    pub fn lock_userdata_observed<'t, L: LockBefore<level::Userdata>>(
        &self,
        _token: &'t mut Locked<'_, L>,
        domid: DomId,
        check: &dyn DomainCheck,
        observe: &mut dyn FnMut(AcquireStep),
    ) -> Result<UserdataGuard<'t>, Error> {
        let lock = self.acquire(self.userdata_path(domid), domid, USERDATA, check, observe)?;
        Ok(UserdataGuard {
            lock,
            domid,
            _token: PhantomData,
        })
    }

    /// Takes the slow device lock of `domid`: needs no lock held (a [`level::Unlocked`]
    /// token). Blocks until the lock is free, then fails if `check` says the domain is gone.
    ///
    /// # Errors
    ///
    /// As [`lock_userdata`](Self::lock_userdata).
    pub fn lock_slow<'t, L: LockBefore<level::Slow>>(
        &self,
        _token: &'t mut Locked<'_, L>,
        domid: DomId,
        check: &dyn DomainCheck,
    ) -> Result<SlowGuard<'t>, Error> {
        let lock = self.acquire(self.slow_path(domid), domid, SLOW, check, &mut |_| {})?;
        Ok(SlowGuard {
            lock,
            domid,
            _token: PhantomData,
        })
    }

    fn acquire(
        &self,
        path: PathBuf,
        domid: DomId,
        what: &'static str,
        check: &dyn DomainCheck,
        observe: &mut dyn FnMut(AcquireStep),
    ) -> Result<FileLock, Error> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.dir)
            .map_err(|source| Error::CreateDir {
                path: self.dir.clone(),
                source,
            })?;
        let lock = FileLock::acquire_observed(path, observe).map_err(|source| Error::File {
            domid,
            what,
            source,
        })?;
        // As libxl: check after taking the lock, so a destroy that finished while we waited is
        // seen. Release (unlink) before failing: the file must not outlive the domain.
        match check.domain_exists(domid) {
            Ok(true) => Ok(lock),
            Ok(false) => {
                let path = lock.path().to_path_buf();
                lock.release().map_err(|source| Error::File {
                    domid,
                    what,
                    source,
                })?;
                Err(Error::NoSuchDomain { domid, what, path })
            }
            Err(source) => {
                drop(lock);
                Err(Error::DomainCheck {
                    domid,
                    what,
                    source,
                })
            }
        }
    }
}

impl Default for LockDir {
    fn default() -> Self {
        LockDir::new(Self::DEFAULT)
    }
}

/// The userdata lock of one domain, held: the innermost lock.
///
/// The stored domain config is read and written only through this guard (see
/// [`crate::config::stored::ConfigStore`]). Released on drop or by [`release`](Self::release):
/// the lock file is unlinked, then closed.
#[derive(Debug)]
pub struct UserdataGuard<'t> {
    lock: FileLock,
    domid: DomId,
    _token: PhantomData<&'t mut ()>,
}

impl UserdataGuard<'_> {
    /// The domain whose lock this is.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        self.lock.path()
    }

    /// Device and inode of the locked file.
    pub fn file_id(&self) -> (u64, u64) {
        self.lock.file_id()
    }

    /// A token at [`level::Userdata`]. Nothing comes after the userdata lock, so no lock can be
    /// taken with it; it exists so that functions can demand proof that the lock is held.
    pub fn token(&mut self) -> Locked<'_, level::Userdata> {
        token()
    }

    /// Releases the lock (unlink, then close).
    ///
    /// # Errors
    ///
    /// [`Error::File`] if the unlink fails; the lock is released all the same.
    pub fn release(self) -> Result<(), Error> {
        let domid = self.domid;
        self.lock.release().map_err(|source| Error::File {
            domid,
            what: USERDATA,
            source,
        })
    }
}

/// The slow device lock of one domain, held: [`token`](Self::token) lends a [`level::Slow`]
/// token for the ctx lock.
#[derive(Debug)]
pub struct SlowGuard<'t> {
    lock: FileLock,
    domid: DomId,
    _token: PhantomData<&'t mut ()>,
}

impl SlowGuard<'_> {
    /// The domain whose lock this is.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        self.lock.path()
    }

    /// A token for the locks after the slow lock (the ctx lock).
    pub fn token(&mut self) -> Locked<'_, level::Slow> {
        token()
    }

    /// Releases the lock (unlink, then close).
    ///
    /// # Errors
    ///
    /// [`Error::File`] if the unlink fails; the lock is released all the same.
    pub fn release(self) -> Result<(), Error> {
        let domid = self.domid;
        self.lock.release().map_err(|source| Error::File {
            domid,
            what: SLOW,
            source,
        })
    }
}
