//! Creation intents: how a creation that died half way is found and undone.
//!
//! Before it asks Xen for a domain, [`create`](super::create) writes an intent file named by the
//! new domain's UUID (its Xen handle) into `creating/` beside the stored configs, and holds an
//! exclusive `flock` on it until the creation has finished or been rolled back; then it unlinks
//! the file (before closing it, as the per-domain locks do). A creation that dies leaves the file
//! behind, and the kernel drops its lock.
//!
//! [`recover_interrupted`] therefore tells the two cases apart without guessing from timestamps
//! or process ids: an intent whose lock it cannot take belongs to a creation still running, and
//! is left alone; one it can lock was abandoned. For those it finds the domain whose handle is the
//! intent's UUID (if Xen ever made it) and rolls it back whole: the domain, its xenstore entries,
//! its stored config. That covers the window the stored config cannot: a domain that exists in
//! Xen (and perhaps in xenstore) before anything names it.
//!
//! A creation that succeeded has no intent file; one that died after the last step but before
//! unlinking is rolled back too. It never reported success, so undoing it is a valid outcome.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{DomainRef, Error, Result};
use crate::host::Host;
use crate::lock::file::FileLock;
use crate::lock::{level, Locked};

/// What an intent file says.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// The handle the domain is created with.
    uuid: Uuid,
    /// The name it was to have, for messages.
    name: String,
}

/// The directory of intent files for `host`.
fn dir(host: &Host) -> PathBuf {
    host.configs.path().join("creating")
}

fn io_error<'p>(path: &'p Path, what: &'static str) -> impl FnOnce(std::io::Error) -> Error + 'p {
    move |e| Error::Intent {
        path: path.to_owned(),
        what,
        source: Box::new(e),
    }
}

/// A creation in progress: its intent file, locked. Dropping it without [`finish`](Self::finish)
/// leaves the file for [`recover_interrupted`] (and releases the lock, as dying does).
#[derive(Debug)]
pub(crate) struct Intent {
    lock: Option<FileLock>,
}

impl Intent {
    /// Records, durably, that a domain named `name` is about to be created with handle `uuid`.
    pub(crate) fn begin(host: &Host, uuid: Uuid, name: &str) -> Result<Self> {
        let d = dir(host);
        std::fs::create_dir_all(&d).map_err(io_error(&d, "cannot create its directory"))?;
        let path = d.join(uuid.to_string());
        let lock = FileLock::acquire(&path).map_err(|e| Error::Intent {
            path: path.clone(),
            what: "cannot lock it",
            source: Box::new(e),
        })?;
        let record = Record {
            uuid,
            name: name.to_owned(),
        };
        // Written through a second descriptor: the lock is the first one's.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| {
                serde_json::to_writer(&mut f, &record)?;
                f.sync_all()
            })
            .map_err(io_error(&path, "cannot write it"))?;
        // The directory entry too, so that the record outlives a crash of the host.
        std::fs::File::open(&d)
            .and_then(|f| f.sync_all())
            .map_err(io_error(&d, "cannot sync its directory"))?;
        Ok(Intent { lock: Some(lock) })
    }

    /// The creation is over (done, or rolled back whole): remove the intent.
    pub(crate) fn finish(mut self) -> Result<()> {
        match self.lock.take() {
            Some(l) => {
                let path = l.path().to_owned();
                l.release().map_err(|e| Error::Intent {
                    path,
                    what: "cannot remove it",
                    source: Box::new(e),
                })
            }
            None => Ok(()),
        }
    }
}

impl Drop for Intent {
    fn drop(&mut self) {
        if let Some(l) = self.lock.take() {
            l.keep_file();
        }
    }
}

/// Rolls back every creation that died: each intent file nobody holds. Intents of creations
/// still running are skipped. Returns what was done, one sentence each.
///
/// # Errors
///
/// [`Error::XenHost`] if Xen will not list the domains, and the errors of the rollback.
pub fn recover_interrupted(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
) -> Result<Vec<String>> {
    let d = dir(host);
    let entries = match std::fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(&d, "cannot list its directory")(e)),
    };
    let mut done = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let lock_error = |e| Error::Intent {
            path: path.clone(),
            what: "cannot lock or remove it",
            source: Box::new(e),
        };
        let Some(lock) = FileLock::try_acquire(&path).map_err(lock_error)? else {
            continue;
        };
        let text = std::fs::read(&path).map_err(io_error(&path, "cannot read it"))?;
        // Empty or unreadable: the creator died before writing it, so before asking Xen.
        if let Ok(r) = serde_json::from_slice::<Record>(&text) {
            let infos = host.xc.domain_list().map_err(|source| Error::XenHost {
                what: "cannot list the domains",
                source,
            })?;
            if let Some(info) = infos.iter().find(|i| i.handle == *r.uuid.as_bytes()) {
                let who = DomainRef::named(info.domid, &r.name);
                super::rollback(host, token, info.domid, &who)?;
                done.push(format!(
                    "{who}: removed, as its creation was interrupted (uuid {})",
                    r.uuid
                ));
            }
        }
        lock.release().map_err(lock_error)?;
    }
    Ok(done)
}
