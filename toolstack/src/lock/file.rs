//! An exclusive file lock that works across processes, with libxl's algorithm
//! (`libxl__lock_file` in xen `tools/libs/light/libxl_internal.c`).
//!
//! 1. Open the lock file, creating it if needed.
//! 2. `flock(LOCK_EX)` it, blocking, retrying on `EINTR`.
//! 3. Compare the locked descriptor's device and inode (`fstat`) with the path's (`stat`). If the
//!    path is gone or names another file, the holder we waited for released the lock by unlinking
//!    it (step 4), and a newcomer may already hold a fresh file at the same path: close and start
//!    again.
//! 4. Release: unlink the path, then close. Unlinking first is what makes step 3 sound: closing
//!    first would let a waiter lock the old inode, pass the check, and only then see the holder
//!    unlink it, leaving two holders.
//!
//! The lock is `flock(2)`-based, so it is released by the kernel if the holder dies. A holder that
//! dies leaves the file behind; the next locker simply locks it (same inode, check passes).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// A step of [`FileLock::acquire_observed`], for tests and diagnostics. Inodes are `(dev, ino)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireStep {
    /// The path was opened (or created); this is the file about to be locked.
    Opened {
        /// Device and inode of the opened file.
        file: (u64, u64),
    },
    /// The opened file is locked, but the path no longer names it: it was released (unlinked)
    /// while we waited. The file is closed and the algorithm starts again.
    Stale {
        /// Device and inode of the file we locked.
        file: (u64, u64),
        /// Device and inode the path names now, or `None` if it names nothing.
        path: Option<(u64, u64)>,
    },
    /// The lock is held: the locked file is the one the path names.
    Acquired {
        /// Device and inode of the locked file.
        file: (u64, u64),
    },
}

/// Why a file lock could not be taken or released.
#[derive(Debug, thiserror::Error)]
pub enum FileLockError {
    /// `open(O_CREAT)` failed.
    #[error("cannot open lock file {}", path.display())]
    Open {
        /// The lock file.
        path: PathBuf,
        /// The error from `open`.
        #[source]
        source: io::Error,
    },
    /// `flock` failed with something other than `EINTR`.
    #[error("cannot flock lock file {}", path.display())]
    Flock {
        /// The lock file.
        path: PathBuf,
        /// The error from `flock`.
        #[source]
        source: io::Error,
    },
    /// `fstat` or `stat` failed with something other than `ENOENT` for the path.
    #[error("cannot stat lock file {}", path.display())]
    Stat {
        /// The lock file.
        path: PathBuf,
        /// The error from `fstat` or `stat`.
        #[source]
        source: io::Error,
    },
    /// Unlinking the lock file on release failed (the lock is released all the same: the file
    /// is closed).
    #[error("cannot unlink lock file {} on release", path.display())]
    Unlink {
        /// The lock file.
        path: PathBuf,
        /// The error from `unlink`.
        #[source]
        source: io::Error,
    },
}

/// An exclusive lock on a file path, held until [`release`](Self::release) or drop.
#[derive(Debug)]
pub struct FileLock {
    path: PathBuf,
    /// `Some` until released.
    file: Option<Flock<File>>,
    id: (u64, u64),
}

impl FileLock {
    /// Takes the lock on `path`, blocking until it is free. The parent directory must exist.
    ///
    /// # Errors
    ///
    /// [`FileLockError`] if the file cannot be opened, locked or checked.
    pub fn acquire(path: impl Into<PathBuf>) -> Result<Self, FileLockError> {
        Self::acquire_observed(path, &mut |_| {})
    }

    /// Like [`acquire`](Self::acquire), calling `observe` at each step of the algorithm. The
    /// observer may block (a test uses it to hold a waiter between opening and locking).
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire).
    pub fn acquire_observed(
        path: impl Into<PathBuf>,
        observe: &mut dyn FnMut(AcquireStep),
    ) -> Result<Self, FileLockError> {
        let path = path.into();
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|source| FileLockError::Open {
                    path: path.clone(),
                    source,
                })?;
            let opened = file_id(&file).map_err(|source| FileLockError::Stat {
                path: path.clone(),
                source,
            })?;
            observe(AcquireStep::Opened { file: opened });
            let locked = flock_exclusive(file).map_err(|source| FileLockError::Flock {
                path: path.clone(),
                source,
            })?;
            let held = file_id(&locked).map_err(|source| FileLockError::Stat {
                path: path.clone(),
                source,
            })?;
            let named = match std::fs::metadata(&path) {
                Ok(m) => Some((m.dev(), m.ino())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(source) => {
                    return Err(FileLockError::Stat {
                        path: path.clone(),
                        source,
                    })
                }
            };
            if named == Some(held) {
                observe(AcquireStep::Acquired { file: held });
                return Ok(FileLock {
                    path,
                    file: Some(locked),
                    id: held,
                });
            }
            observe(AcquireStep::Stale {
                file: held,
                path: named,
            });
            // Dropping `locked` unlocks and closes the stale file; loop to open the path afresh.
        }
    }

    /// Takes the lock on `path` (creating the file as [`acquire`](Self::acquire) does) unless
    /// someone holds it: `None` then, at once. A file released (unlinked) meanwhile is not an
    /// answer: the path is opened afresh, as in [`acquire`](Self::acquire).
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire).
    pub fn try_acquire_creating(path: impl Into<PathBuf>) -> Result<Option<Self>, FileLockError> {
        let path = path.into();
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|source| FileLockError::Open {
                    path: path.clone(),
                    source,
                })?;
            let locked = loop {
                match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                    Ok(l) => break l,
                    Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
                    Err((f, Errno::EINTR)) => file = f,
                    Err((_, errno)) => {
                        return Err(FileLockError::Flock {
                            path,
                            source: io::Error::from(errno),
                        })
                    }
                }
            };
            let held = file_id(&locked).map_err(|source| FileLockError::Stat {
                path: path.clone(),
                source,
            })?;
            match std::fs::metadata(&path) {
                Ok(m) if (m.dev(), m.ino()) == held => {
                    return Ok(Some(FileLock {
                        path,
                        file: Some(locked),
                        id: held,
                    }))
                }
                // Released and unlinked while we opened it: open the path afresh.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(FileLockError::Stat { path, source }),
            }
        }
    }

    /// Takes the lock at `path` only if that needs no waiting: `None` if someone holds it, the
    /// file does not exist, or it was released (unlinked) meanwhile. Never creates the file.
    ///
    /// # Errors
    ///
    /// [`FileLockError`] for failures other than those.
    pub fn try_acquire(path: impl Into<PathBuf>) -> Result<Option<Self>, FileLockError> {
        let path = path.into();
        let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(FileLockError::Open { path, source }),
        };
        let locked = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => break l,
                Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, errno)) => {
                    return Err(FileLockError::Flock {
                        path,
                        source: io::Error::from(errno),
                    })
                }
            }
        };
        let held = file_id(&locked).map_err(|source| FileLockError::Stat {
            path: path.clone(),
            source,
        })?;
        match std::fs::metadata(&path) {
            Ok(m) if (m.dev(), m.ino()) == held => Ok(Some(FileLock {
                path,
                file: Some(locked),
                id: held,
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(FileLockError::Stat { path, source }),
        }
    }

    /// Releases the lock but leaves the file in place, as a holder that dies does: the next
    /// locker locks the same file.
    pub fn keep_file(mut self) {
        self.file = None;
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Device and inode of the locked file.
    pub fn file_id(&self) -> (u64, u64) {
        self.id
    }

    /// Releases the lock: unlinks the file, then closes it (in that order; see the module docs).
    ///
    /// # Errors
    ///
    /// [`FileLockError::Unlink`] if unlinking fails; the file is closed, and so the lock
    /// released, all the same.
    pub fn release(mut self) -> Result<(), FileLockError> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<(), FileLockError> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let unlinked = std::fs::remove_file(&self.path);
        drop(file);
        match unlinked {
            Ok(()) => Ok(()),
            Err(source) => Err(FileLockError::Unlink {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Nothing to report to: an unlink failure leaves a lock file behind, which the next
        // locker locks and checks like any other (same inode), so it is harmless.
        let _ = self.release_inner();
    }
}

fn file_id(file: &File) -> io::Result<(u64, u64)> {
    let m = file.metadata()?;
    Ok((m.dev(), m.ino()))
}

/// `flock(LOCK_EX)`, blocking, retried on `EINTR`.
fn flock_exclusive(mut file: File) -> io::Result<Flock<File>> {
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(locked) => return Ok(locked),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, errno)) => return Err(io::Error::from(errno)),
        }
    }
}
