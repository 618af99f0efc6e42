//! Restarting a domain (`on_reboot = "restart"`): destroy it, then create it again from its
//! stored config (same name and UUID, as xl does; a new domid), in a way that survives the
//! monitor's death at any step.
//!
//! The stored config is what the new domain is made from, and destroy removes it; a monitor
//! that died between the two steps would lose the domain. So before destroying, the restart
//! writes a **restart record** (`restarting/<uuid>` beside the stored configs) holding the
//! config, and keeps it locked (`flock`) until the new domain exists; then it removes the
//! record. As with creation intents ([`crate::create::recover_interrupted`]), a record nobody
//! holds belongs to a dead restart, and [`recover_restarts`] finishes it:
//!
//! - the old domain (same domid and UUID) is still there: the restart had not destroyed it.
//!   It stays, shut down, and the record goes; a monitor started on it acts again.
//! - a domain with the UUID but another domid exists: the new one was made. The record goes.
//! - no domain has the UUID (nor the name): the old one was destroyed and the new one not
//!   made (or rolled back by creation recovery, which runs first): it is created now.
//!
//! Each step keeps DESIGN.md's invariant by itself: destroy and create are the ordinary ones,
//! with their own locks and crash handling.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::DomainConfig;
use crate::error::{DomainRef, Error, Result};
use crate::hooks;
use crate::host::Host;
use crate::lock::file::FileLock;
use crate::lock::{level, DomId, Locked};

/// What a restart record says.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// The domain being restarted: its domid before the restart.
    old_domid: DomId,
    /// Its handle, kept across the restart.
    uuid: Uuid,
    /// The config the new domain is made from (its stored config).
    config: DomainConfig,
}

fn dir(host: &Host) -> PathBuf {
    host.configs.path().join("restarting")
}

fn io_error<'p>(path: &'p Path, what: &'static str) -> impl FnOnce(std::io::Error) -> Error + 'p {
    move |e| Error::RestartRecord {
        path: path.to_owned(),
        what,
        source: Box::new(e),
    }
}

fn lock_error(path: &Path) -> impl FnOnce(crate::lock::file::FileLockError) -> Error + '_ {
    move |e| Error::RestartRecord {
        path: path.to_owned(),
        what: "cannot lock or remove it",
        source: Box::new(e),
    }
}

/// A restart in progress: its record, locked. Dropped without [`finish`](Self::finish), the
/// record stays for [`recover_restarts`].
struct Restarting {
    lock: Option<FileLock>,
}

impl Restarting {
    fn begin(host: &Host, record: &Record) -> Result<Self> {
        let d = dir(host);
        std::fs::create_dir_all(&d).map_err(io_error(&d, "cannot create its directory"))?;
        let path = d.join(record.uuid.to_string());
        let lock = FileLock::acquire(&path).map_err(lock_error(&path))?;
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| {
                serde_json::to_writer(&mut f, record)?;
                f.sync_all()
            })
            .map_err(io_error(&path, "cannot write it"))?;
        std::fs::File::open(&d)
            .and_then(|f| f.sync_all())
            .map_err(io_error(&d, "cannot sync its directory"))?;
        Ok(Restarting { lock: Some(lock) })
    }

    fn finish(mut self) -> Result<()> {
        match self.lock.take() {
            Some(l) => {
                let path = l.path().to_owned();
                l.release().map_err(lock_error(&path))
            }
            None => Ok(()),
        }
    }
}

impl Drop for Restarting {
    fn drop(&mut self) {
        if let Some(l) = self.lock.take() {
            l.keep_file();
        }
    }
}

/// How a restart ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Restarted {
    /// The new domain.
    As(DomId),
    /// Someone destroyed the domain before the restart could: nothing was made.
    DestroyedMeanwhile,
}

/// Restart domain `domid` (handle `uuid`) from `config`, its stored config.
pub(crate) fn restart(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
    uuid: Uuid,
    config: &DomainConfig,
) -> Result<Restarted> {
    let mut config = config.clone();
    config.uuid = Some(uuid);
    let record = Record {
        old_domid: domid,
        uuid,
        config,
    };
    let restarting = Restarting::begin(host, &record)?;
    hooks::point("restart:recorded")?;
    match crate::domain::destroy(host, token, domid) {
        Ok(()) => {}
        // Someone else destroyed it: theirs is the last word; no restart.
        Err(Error::NoSuchDomain(_)) => {
            restarting.finish()?;
            return Ok(Restarted::DestroyedMeanwhile);
        }
        Err(e) => return Err(e),
    }
    hooks::point("restart:destroyed")?;
    // Restarted as xl does: built and running (a config without a kernel stays paused).
    let boot = crate::create::CreateOptions::default();
    let created = crate::create::create_with(host, token, &record.config, &boot, &mut |_| {})?;
    hooks::point("restart:created")?;
    restarting.finish()?;
    Ok(Restarted::As(created.domid))
}

/// Finishes every restart whose monitor died (each record nobody holds; see the module
/// documentation). Run it after [`crate::create::recover_interrupted`], so that a new domain
/// half made is rolled back first. Returns what was done, one sentence each.
///
/// # Errors
///
/// [`Error::RestartRecord`], [`Error::XenHost`], and the errors of the creation.
pub fn recover_restarts(
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
        let Some(lock) = FileLock::try_acquire(&path).map_err(lock_error(&path))? else {
            continue;
        };
        let text = std::fs::read(&path).map_err(io_error(&path, "cannot read it"))?;
        // Empty or unreadable: the monitor died while writing it, before destroying anything.
        if let Ok(r) = serde_json::from_slice::<Record>(&text) {
            let infos = host.xc.domain_list().map_err(|source| Error::XenHost {
                what: "cannot list the domains",
                source,
            })?;
            let name = r.config.name.clone();
            match infos.iter().find(|i| i.handle == *r.uuid.as_bytes()) {
                Some(i) if i.domid == r.old_domid => done.push(format!(
                    "{}: its restart was interrupted before it was destroyed; it is left \
                     as it is (a monitor acts on it again)",
                    DomainRef::named(i.domid, &name)
                )),
                Some(_) => {}
                None => {
                    if crate::domain::find_by_name(host, &name)?.is_none() {
                        let boot = crate::create::CreateOptions::default();
                        let created =
                            crate::create::create_with(host, token, &r.config, &boot, &mut |_| {})?;
                        done.push(format!(
                            "{}: restarted (its restart was interrupted after domain {} \
                             was destroyed)",
                            DomainRef::named(created.domid, &name),
                            r.old_domid
                        ));
                    }
                }
            }
        }
        lock.release().map_err(lock_error(&path))?;
    }
    Ok(done)
}
