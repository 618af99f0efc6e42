//! The per-domain monitor, as xl's (`create_domain`'s wait loop and `handle_domain_death` in
//! `tools/xl/xl_vmcontrol.c`, 4.17): it waits on `@releaseDomain` for the domain to shut down,
//! reads the reason from Xen, and applies the action the domain's stored config names:
//!
//! | reason             | action from            | xl's default |
//! |--------------------|------------------------|--------------|
//! | poweroff           | `on_poweroff`          | destroy      |
//! | reboot             | `on_reboot`            | restart      |
//! | crash              | `on_crash`             | destroy      |
//! | watchdog           | `on_watchdog`          | destroy      |
//! | suspend            | none: the monitor ends | (the same)   |
//! | soft reset         | unsupported            | soft-reset   |
//! | anything else      | destroy                | (the same)   |
//!
//! `destroy` is [`crate::domain::destroy`]; `restart` destroys and creates again from the
//! stored config (`restart` module: crash-safe through a restart record), then goes on
//! monitoring the new domain; `preserve` leaves the domain shut down and ends. `rename-restart`,
//! `coredump-destroy`, `coredump-restart` and `soft-reset` are not supported: the monitor says
//! so ([`Error::ActionUnsupported`]) and leaves the domain shut down, losing nothing.
//!
//! The monitor ends when the domain is gone: destroyed by anyone (`rxl destroy`, `xl
//! destroy`), or its domid reused by another domain (the UUID tells).
//!
//! **One monitor per domain.** xl 4.17 has none of this: two `xl` monitors of one domain would
//! both act on its shutdown (its only lock file, `/var/lock/xl`, serialises memory freeing
//! around creation). Here a monitor holds a per-domain lock file for as long as it watches,
//! `userdata-l.<domid>.<uuid>.rxl-monitor-lock` in libxl's lock directory (libxl's per-domain
//! naming, so a destroyed domain's lock is never mistaken for its successor's); a second
//! monitor finds it held and stops at once ([`Error::MonitorRunning`]). The actions themselves
//! are safe even without it: destroy and the restart's destroy take the domain's locks and find
//! a domain that is gone already, so two actors cannot destroy or restart one domain twice.

use std::path::PathBuf;

use uuid::Uuid;
use xenctrl::abi::ShutdownReason;

use super::restart::{restart, Restarted};
use super::{life, reason_name, Life};
use crate::config::{Action, DomainConfig};
use crate::domain::domain_ref;
use crate::error::{Error, Result};
use crate::hooks;
use crate::host::Host;
use crate::lock::file::FileLock;
use crate::lock::{level, libxl_userdata_name, DomId, Locked};

/// The monitor's lock file's `userid`, in libxl's per-domain naming.
pub const MONITOR_LOCK_ID: &str = "rxl-monitor-lock";

/// What the monitor reports as it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// It watches this domain (the first, or the one a restart made).
    Watching(DomId),
    /// The domain shut down with this reason; the action follows.
    ShutDown {
        /// The domain.
        domid: DomId,
        /// Why.
        reason: ShutdownReason,
        /// The action the config names, as xl.cfg spells it.
        action: &'static str,
    },
    /// The domain was restarted as a new one.
    Restarted {
        /// The old domain.
        old: DomId,
        /// The new one.
        new: DomId,
    },
}

/// Why the monitor ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The domain is gone: destroyed by someone else (or its domid reused).
    Gone(DomId),
    /// The monitor destroyed it (`destroy`, or an unknown reason).
    Destroyed(DomId),
    /// It is left shut down (`preserve`).
    Preserved(DomId, ShutdownReason),
    /// It suspended (for save or migration); as xl's, the monitor ends.
    Suspended(DomId),
}

/// What to do for a shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Destroy,
    Restart,
    Preserve,
    Suspended,
    Unsupported(Action),
}

fn plan(reason: ShutdownReason, config: &DomainConfig) -> (Plan, &'static str) {
    let action = match reason {
        ShutdownReason::POWEROFF => config.on_poweroff,
        ShutdownReason::REBOOT => config.on_reboot,
        ShutdownReason::CRASH => config.on_crash,
        ShutdownReason::WATCHDOG => config.on_watchdog,
        ShutdownReason::SUSPEND => return (Plan::Suspended, "none"),
        // libxl's default on_soft_reset is soft-reset; no xl.cfg key changes it.
        ShutdownReason::SOFT_RESET => Action::SoftReset,
        // xl: "Unknown shutdown reason code. Destroying domain."
        _ => Action::Destroy,
    };
    let p = match action {
        Action::Destroy => Plan::Destroy,
        Action::Restart => Plan::Restart,
        Action::Preserve => Plan::Preserve,
        other => Plan::Unsupported(other),
    };
    (p, action.as_str())
}

/// The monitor's lock file of domain `domid` with handle `uuid`.
pub fn lock_path(host: &Host, domid: DomId, uuid: Uuid) -> PathBuf {
    host.locks
        .path()
        .join(libxl_userdata_name('l', domid, uuid, MONITOR_LOCK_ID))
}

/// Monitor domain `domid` until it is gone, preserved or suspended, acting on each shutdown as
/// its stored config says (module documentation); `report` hears of each step.
///
/// # Errors
///
/// [`Error::NoSuchDomain`]; [`Error::MonitorRunning`] when another monitor has it;
/// [`Error::NotManaged`] for a domain with no stored config of ours (made by xl);
/// [`Error::ActionUnsupported`]; the errors of destroy and of the restart.
pub fn run(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
    report: &mut dyn FnMut(Event),
) -> Result<Ended> {
    let mut domid = domid;
    let mut first = true;
    loop {
        let uuid = match host.domain_info(domid) {
            Ok(info) => info.handle,
            // A restart's new domain, destroyed before we looked: it is gone.
            Err(Error::NoSuchDomain(_)) if !first => return Ok(Ended::Gone(domid)),
            Err(e) => return Err(e),
        };
        first = false;
        let path = lock_path(host, domid, Uuid::from_bytes(uuid));
        let lock_err = |e: crate::lock::file::FileLockError| {
            Error::Lock(crate::lock::Error::File {
                domid,
                what: "the monitor's lock",
                source: e,
            })
        };
        std::fs::create_dir_all(host.locks.path()).map_err(|source| {
            Error::Lock(crate::lock::Error::CreateDir {
                path: host.locks.path().to_owned(),
                source,
            })
        })?;
        let Some(lock) = FileLock::try_acquire_creating(&path).map_err(lock_err)? else {
            return Err(Error::MonitorRunning {
                domain: domain_ref(host, domid),
                lock: path,
            });
        };
        report(Event::Watching(domid));
        hooks::point("monitor:watching")?;
        let step = watch_once(host, token, domid, uuid, report);
        // Released (unlinked) whatever happened: a restart's new domain has its own lock.
        let released = lock.release().map_err(lock_err);
        match step? {
            Step::End(e) => {
                released?;
                return Ok(e);
            }
            Step::Next(new) => {
                released?;
                domid = new;
            }
        }
    }
}

enum Step {
    End(Ended),
    Next(DomId),
}

fn watch_once(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
    uuid: [u8; 16],
    report: &mut dyn FnMut(Event),
) -> Result<Step> {
    let watch = host
        .xs
        .watch(xenstore::path::RELEASE_DOMAIN)
        .map_err(|source| Error::XenstoreHost {
            what: "cannot watch @releaseDomain",
            source,
        })?;
    let reason = loop {
        match life(host, domid, &uuid)? {
            Life::Gone => return Ok(Step::End(Ended::Gone(domid))),
            Life::ShutDown(r) => break r,
            Life::Alive => {}
        }
        watch.next_event().map_err(|source| Error::XenstoreHost {
            what: "cannot watch @releaseDomain",
            source,
        })?;
    };
    drop(watch);
    let who = domain_ref(host, domid);
    let stored = host.try_with_userdata(token, domid, |guard| {
        host.configs
            .load_opt(guard)
            .map_err(|source| Error::Stored {
                domain: who.clone(),
                source,
            })
    })?;
    let config = match stored {
        // Destroyed while we looked.
        None => return Ok(Step::End(Ended::Gone(domid))),
        Some(None) => return Err(Error::NotManaged { domain: who }),
        Some(Some(s)) => s.config,
    };
    let (plan, action) = plan(reason, &config);
    report(Event::ShutDown {
        domid,
        reason,
        action,
    });
    hooks::point("monitor:acting")?;
    match plan {
        Plan::Destroy => match crate::domain::destroy(host, token, domid) {
            Ok(()) => Ok(Step::End(Ended::Destroyed(domid))),
            Err(Error::NoSuchDomain(_)) => Ok(Step::End(Ended::Gone(domid))),
            Err(e) => Err(e),
        },
        Plan::Preserve => Ok(Step::End(Ended::Preserved(domid, reason))),
        Plan::Suspended => Ok(Step::End(Ended::Suspended(domid))),
        Plan::Unsupported(a) => Err(Error::ActionUnsupported {
            domain: who,
            reason: reason_name(reason),
            action: a.as_str(),
        }),
        Plan::Restart => match restart(host, token, domid, Uuid::from_bytes(uuid), &config)? {
            Restarted::As(new) => {
                report(Event::Restarted { old: domid, new });
                Ok(Step::Next(new))
            }
            Restarted::DestroyedMeanwhile => Ok(Step::End(Ended::Gone(domid))),
        },
    }
}
