//! The per-domain file locks: the userdata ("fast") lock and the slow device lock.

use std::error::Error as StdError;
use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uuid::Uuid;

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

/// Answers "what is domain D's UUID (Xen's handle) now?", `None` for a domain Xen does not
/// have. libxl names its per-domain files by domid and UUID; a [`LockDir`] with libxl's naming
/// asks this before and after taking a lock.
pub type UuidLookup = Arc<dyn Fn(DomId) -> Result<Option<Uuid>, CheckError> + Send + Sync>;

/// How lock files are named.
#[derive(Clone)]
enum Naming {
    /// `domain-<domid>.userdata.lock` and `domain-<domid>.slow.lock`.
    Plain,
    /// libxl's: `userdata-l.<domid>.<uuid>.domain-userdata-lock` and
    /// `userdata-l.<domid>.<uuid>.libxl-device-changes-lock`.
    Libxl(UuidLookup),
}

/// Where the per-domain lock files live, and how they are named.
///
/// Two namings:
///
/// - [`LockDir::new`] / [`LockDir::under`]: `domain-<domid>.userdata.lock` and
///   `domain-<domid>.slow.lock`, for tests and tools that have no Xen to ask.
/// - [`LockDir::libxl`]: libxl's own names (`libxl__userdata_path` in 4.17's `libxl_dom.c`),
///   `userdata-l.<domid>.<uuid>.domain-userdata-lock` for the userdata lock (libxl's
///   `libxl__lock_domain_userdata`) and `userdata-l.<domid>.<uuid>.libxl-device-changes-lock`
///   for the slow device lock (libxl's device lock, `libxl__ev_devlock`). In libxl's directory
///   (`/var/lib/xen`, [`LockDir::DEFAULT`]) the locks are libxl's locks: `xl mem-set` and
///   `rxl mem-set` on one domain exclude each other, as do `xl block-attach` and ours. Both
///   sides run the same algorithm ([`super::file`]: flock, compare inodes, unlink before
///   close), and take the locks in the same order (device lock, then userdata lock).
///
///   The UUID comes from Xen, before the lock is taken; after it is taken the UUID is asked
///   again, and a domain whose UUID changed meanwhile (destroyed, and its domid reused) is
///   locked afresh under its new name. A domain Xen does not have gets the nil UUID in its
///   name: only a caller whose check accepts a vanished domain (cleaning up after it) gets
///   past the check with that name, and all such callers use the same name.
///
/// The directory is created (mode 0755) on first use.
#[derive(Clone)]
pub struct LockDir {
    dir: PathBuf,
    naming: Naming,
}

impl std::fmt::Debug for LockDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let naming = match self.naming {
            Naming::Plain => "plain",
            Naming::Libxl(_) => "libxl",
        };
        f.debug_struct("LockDir")
            .field("dir", &self.dir)
            .field("naming", &naming)
            .finish()
    }
}

const USERDATA: &str = "the userdata lock";
const SLOW: &str = "the slow device lock";
/// libxl's `userdata_userid` of the userdata lock.
const LIBXL_USERDATA_ID: &str = "domain-userdata-lock";
/// libxl's `userdata_userid` of the device lock.
const LIBXL_DEVICE_ID: &str = "libxl-device-changes-lock";

/// libxl's name for a per-domain file in its directory (`libxl__userdata_path`):
/// `userdata-<wh>.<domid>.<uuid>.<userid>`, `wh` being `l` for locks, `d` for data and `n` for
/// data being written.
pub fn libxl_userdata_name(wh: char, domid: DomId, uuid: Uuid, userid: &str) -> String {
    format!("userdata-{wh}.{domid}.{}.{userid}", uuid.hyphenated())
}

impl LockDir {
    /// libxl's directory (`XEN_LIB_DIR`), the default on a real host: with
    /// [`LockDir::libxl`] naming, the locks there are libxl's own.
    pub const DEFAULT: &'static str = "/var/lib/xen";

    /// Lock files in `dir`, plainly named.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LockDir {
            dir: dir.into(),
            naming: Naming::Plain,
        }
    }

    /// Lock files in `<state_dir>/locks`, plainly named.
    pub fn under(state_dir: impl AsRef<Path>) -> Self {
        LockDir::new(state_dir.as_ref().join("locks"))
    }

    /// Lock files in `dir` with libxl's names, the UUIDs from `uuid_of` (see the type docs).
    pub fn libxl(dir: impl Into<PathBuf>, uuid_of: UuidLookup) -> Self {
        LockDir {
            dir: dir.into(),
            naming: Naming::Libxl(uuid_of),
        }
    }

    /// Whether the lock files have libxl's names.
    pub fn is_libxl(&self) -> bool {
        matches!(self.naming, Naming::Libxl(_))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The userdata lock file of `domid` as it would be named now (with libxl's naming, a
    /// domain Xen does not have, or whose UUID cannot be had, gets the nil UUID).
    pub fn userdata_path(&self, domid: DomId) -> PathBuf {
        let uuid = self.current_uuid(domid).ok().flatten();
        self.file_path(domid, uuid, USERDATA)
    }

    /// The slow device lock file of `domid` as it would be named now (see
    /// [`userdata_path`](Self::userdata_path)).
    pub fn slow_path(&self, domid: DomId) -> PathBuf {
        let uuid = self.current_uuid(domid).ok().flatten();
        self.file_path(domid, uuid, SLOW)
    }

    /// With libxl's naming, the UUID Xen has for `domid` (`None`: no such domain); with plain
    /// naming, always `None`.
    fn current_uuid(&self, domid: DomId) -> Result<Option<Uuid>, CheckError> {
        match &self.naming {
            Naming::Plain => Ok(None),
            Naming::Libxl(uuid_of) => uuid_of(domid),
        }
    }

    fn file_path(&self, domid: DomId, uuid: Option<Uuid>, what: &'static str) -> PathBuf {
        let libxl = matches!(self.naming, Naming::Libxl(_));
        let name = match (libxl, what == USERDATA) {
            (false, true) => format!("domain-{domid}.userdata.lock"),
            (false, false) => format!("domain-{domid}.slow.lock"),
            (true, userdata) => libxl_userdata_name(
                'l',
                domid,
                uuid.unwrap_or(Uuid::nil()),
                if userdata {
                    LIBXL_USERDATA_ID
                } else {
                    LIBXL_DEVICE_ID
                },
            ),
        };
        self.dir.join(name)
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
        let (lock, uuid) = self.acquire(domid, USERDATA, check, observe)?;
        Ok(UserdataGuard {
            lock,
            domid,
            uuid,
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
        let (lock, _) = self.acquire(domid, SLOW, check, &mut |_| {})?;
        Ok(SlowGuard {
            lock,
            domid,
            _token: PhantomData,
        })
    }

    /// Takes the lock file `what` of `domid`, and checks the domain after: the file lock, and
    /// the UUID its name has (`None` with plain naming).
    fn acquire(
        &self,
        domid: DomId,
        what: &'static str,
        check: &dyn DomainCheck,
        observe: &mut dyn FnMut(AcquireStep),
    ) -> Result<(FileLock, Option<Uuid>), Error> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.dir)
            .map_err(|source| Error::CreateDir {
                path: self.dir.clone(),
                source,
            })?;
        let check_failed = |source| Error::DomainCheck {
            domid,
            what,
            source,
        };
        let (lock, uuid) = loop {
            let uuid = self.current_uuid(domid).map_err(check_failed)?;
            let path = self.file_path(domid, uuid, what);
            let lock = FileLock::acquire_observed(path, observe).map_err(|source| Error::File {
                domid,
                what,
                source,
            })?;
            // The name holds the UUID the domain had before we waited. If the domid now names
            // another domain (or none, having named one), the lock is the wrong one: take the
            // current name's instead.
            let now = self.current_uuid(domid).map_err(check_failed)?;
            if now == uuid || now.is_none() {
                break (lock, uuid);
            }
            lock.release().map_err(|source| Error::File {
                domid,
                what,
                source,
            })?;
        };
        // As libxl: check after taking the lock, so a destroy that finished while we waited is
        // seen. Release (unlink) before failing: the file must not outlive the domain.
        match check.domain_exists(domid) {
            Ok(true) => Ok((lock, uuid.filter(|u| !u.is_nil()))),
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
                Err(check_failed(source))
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
    uuid: Option<Uuid>,
    _token: PhantomData<&'t mut ()>,
}

impl UserdataGuard<'_> {
    /// The domain whose lock this is.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// With libxl's naming, the domain's UUID (Xen's handle) that names the lock: the domain
    /// the lock is for. `None` with plain naming, or for a domain Xen no longer has.
    pub fn uuid(&self) -> Option<Uuid> {
        self.uuid
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
