//! The simulated host's xenstored hears of domains that shut down or go away, as C xenstored
//! does: it binds `VIRQ_DOM_EXC` in dom0 and, each time Xen raises it, compares Xen's domains
//! with the ones it knows (C xenstored's `domain_cleanup`):
//!
//! - a domain that shut down (or crashed) fires `@releaseDomain`, once until it resumes;
//! - a domain that is dying, or that Xen no longer has, is released: its connection and the
//!   nodes it owns go, and `@releaseDomain` fires.
//!
//! Only domains xenstored introduced count, as in C xenstored (the server answers `ENOENT` for
//! the others, which is ignored here). The toolstack's destroy also releases the domain itself
//! (`XS_RELEASE`); whichever comes second finds nothing to do.
//!
//! The hypervisor is the host's persistent model, shared with every toolstack process: a
//! `SCHEDOP_remote_shutdown` or a destroy in any process raises the VIRQ that this thread
//! waits for.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::sync::Arc;

use xenctrl::evtchn::{EventChannels, Virq};
use xenctrl::{DomId, DomainId, SimConfig, SimHypervisor, XenCtrl};
use xenstore::server::{Controller, ServerError};

/// Watches `VIRQ_DOM_EXC` on the host whose hypervisor state is `hypervisor`, telling the
/// xenstored behind `ctl` of each change, until the server stops.
///
/// # Errors
///
/// The error that stopped it: the model or the event channel failed.
pub(super) fn run(hypervisor: &Path, ctl: &Controller) -> io::Result<()> {
    // The host exists (boot made it before starting the daemon), so the config is not used.
    let sim = Arc::new(SimHypervisor::persistent(hypervisor, SimConfig::default())?);
    let xc = XenCtrl::on_simulator(Arc::clone(&sim)).map_err(io::Error::other)?;
    let ev = EventChannels::on_simulator(sim, DomainId::DOM0).map_err(io::Error::other)?;
    let _virq = ev.bind_virq(Virq::DOM_EXC).map_err(io::Error::other)?;
    let mut known = BTreeSet::new();
    if !check(&xc, ctl, &mut known)? {
        return Ok(());
    }
    loop {
        let port = ev.wait().map_err(io::Error::other)?;
        // Unmasked before looking, so a change made while we look raises the VIRQ again.
        ev.unmask(port).map_err(io::Error::other)?;
        if !check(&xc, ctl, &mut known)? {
            return Ok(());
        }
    }
}

/// One look at Xen's domains; `false` once the server has stopped.
fn check(xc: &XenCtrl, ctl: &Controller, known: &mut BTreeSet<DomId>) -> io::Result<bool> {
    let infos = xc.domain_list().map_err(io::Error::other)?;
    let now: BTreeSet<DomId> = infos.iter().map(|i| i.domid).collect();
    let mut gone: Vec<DomId> = known.difference(&now).copied().collect();
    for info in infos.iter().filter(|i| i.domid != 0) {
        if info.dying() {
            gone.push(info.domid);
        } else if info.shutdown_reason().is_some() && !told(ctl.domain_shutdown(info.domid.into()))?
        {
            return Ok(false);
        }
    }
    for domid in gone {
        if !told(ctl.release_domain(domid.into()))? {
            return Ok(false);
        }
    }
    *known = now;
    Ok(true)
}

/// Whether the server is still there: a domain it does not know (`ENOENT`) is fine.
fn told(r: Result<(), ServerError>) -> io::Result<bool> {
    match r {
        Ok(()) | Err(ServerError::Domain { .. }) => Ok(true),
        Err(ServerError::Stopped) => Ok(false),
        Err(e) => Err(io::Error::other(e)),
    }
}
