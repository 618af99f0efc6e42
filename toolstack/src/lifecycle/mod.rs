//! A domain's life after creation: asking a guest to shut down or reboot (`xl shutdown`,
//! `xl reboot`), waiting for it, and the per-domain monitor that applies the config's
//! `on_poweroff` / `on_reboot` / `on_crash` / `on_watchdog` actions ([`monitor`]).
//!
//! **How a domain shuts down.** A guest shuts itself down with `SCHEDOP_shutdown` (its kernel's
//! hypercall), with a reason: poweroff, reboot, crash, watchdog, suspend, soft reset. Xen pauses
//! its vCPUs, records the reason (reported by `getdomaininfo`), and raises `VIRQ_DOM_EXC`, on
//! which xenstored fires `@releaseDomain` for the domains it introduced. The domain stays, shut
//! down, until the toolstack destroys it. A toolstack asks a guest to shut down through the
//! **PV control protocol**: it writes `poweroff` or `reboot` into the guest's
//! `control/shutdown` node; the guest's kernel watches that node, empties it to acknowledge,
//! and shuts itself down. libxl 4.17 (`libxl__domain_pvcontrol`) does exactly that, waits up to
//! 60 s for the acknowledgement, and does not look at `control/feature-poweroff` or
//! `feature-reboot`: PV and PVH guests always have PV control; an HVM guest has it when its
//! `HVM_PARAM_CALLBACK_IRQ` is set. Without it xl refuses, and with `-F` sends an ACPI power
//! or reset button event instead.
//!
//! Here: PV and PVH domains get the PV control request; a domain `/libxl/N/type` calls `hvm`
//! (or that Xen reports HVM without saying which) is treated as having no PV control, since
//! this toolstack does not read HVM parameters: refused with [`Error::NoPvControl`], or with
//! `force` shut down by Xen directly (`SCHEDOP_remote_shutdown` with the same reason), which
//! stops the guest without its cooperation (xl's `-F` presses the ACPI button instead).

pub mod monitor;
mod restart;

use std::time::{Duration, Instant};

use xenctrl::abi::ShutdownReason;

use crate::domain::{dom_path, domain_ref, libxl_path};
use crate::error::{DomainRef, Error, Result};
use crate::host::Host;
use crate::lock::DomId;
use xenstore::ReadOpt;

pub use restart::recover_restarts;

/// What a toolstack asks a guest to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Power off (`xl shutdown`).
    Poweroff,
    /// Reboot (`xl reboot`).
    Reboot,
}

impl Request {
    /// The word written to `control/shutdown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Request::Poweroff => "poweroff",
            Request::Reboot => "reboot",
        }
    }

    /// The shutdown reason the guest will report.
    pub fn reason(self) -> ShutdownReason {
        match self {
            Request::Poweroff => ShutdownReason::POWEROFF,
            Request::Reboot => ShutdownReason::REBOOT,
        }
    }
}

/// How a shutdown request is made.
#[derive(Clone, Copy, Debug)]
pub struct RequestOptions {
    /// For a guest without PV control, have Xen shut it down (`SCHEDOP_remote_shutdown`)
    /// rather than refuse.
    pub force: bool,
    /// How long the guest has to acknowledge the request (libxl: 60 s).
    pub ack_timeout: Duration,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            force: false,
            ack_timeout: Duration::from_secs(60),
        }
    }
}

/// How a request reached the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// Through `control/shutdown`, and the guest acknowledged it.
    PvControl,
    /// Xen shut the domain down (`force`, for a guest without PV control).
    Forced,
}

/// The name of a shutdown reason, as libxl's `libxl_shutdown_reason_to_string` spells it.
pub fn reason_name(r: ShutdownReason) -> String {
    match r {
        ShutdownReason::POWEROFF => "poweroff".into(),
        ShutdownReason::REBOOT => "reboot".into(),
        ShutdownReason::SUSPEND => "suspend".into(),
        ShutdownReason::CRASH => "crash".into(),
        ShutdownReason::WATCHDOG => "watchdog".into(),
        ShutdownReason::SOFT_RESET => "soft_reset".into(),
        ShutdownReason(other) => format!("unknown ({other})"),
    }
}

/// Ask domain `domid` to power off or reboot (`xl shutdown`, `xl reboot`), and wait for the
/// guest to acknowledge (see the module documentation). It returns once the guest has taken
/// the request, not once it has shut down: see [`wait_shutdown_or_gone`].
///
/// # Errors
///
/// [`Error::Refused`] for dom0; [`Error::NoSuchDomain`]; [`Error::NoPvControl`] for a guest
/// without PV control and no `force`; [`Error::NotAcknowledged`] when the guest did not take
/// the request in time (a guest with no kernel, or one that ignores it); [`Error::Xenstore`],
/// [`Error::Xen`] for the step that failed.
pub fn request(
    host: &Host,
    domid: DomId,
    req: Request,
    opts: &RequestOptions,
) -> Result<Delivered> {
    if domid == 0 {
        return Err(Error::Refused {
            domain: DomainRef::named(0, "Domain-0"),
            what: format!(
                "dom0 is not asked to {} by the toolstack: run `{}` in dom0",
                req.as_str(),
                req.as_str()
            ),
        });
    }
    let info = host.domain_info(domid)?;
    let who = domain_ref(host, domid);
    let xs_err = |what: &'static str| {
        let who = who.clone();
        move |source| Error::Xenstore {
            domain: who,
            what,
            source,
        }
    };
    // libxl__domain_type: Xen's HVM flag, then /libxl/N/type (missing: assume HVM).
    let hvm = info.hvm()
        && host
            .xs
            .read_string_opt(&format!("{}/type", libxl_path(domid)))
            .map_err(xs_err("cannot read its domain type"))?
            .as_deref()
            != Some("pvh");
    if hvm {
        if !opts.force {
            return Err(Error::NoPvControl {
                domain: who,
                request: req.as_str(),
            });
        }
        host.xc
            .remote_shutdown(domid, req.reason())
            .map_err(|source| Error::Xen {
                domain: who.clone(),
                what: "Xen refused to shut it down",
                source,
            })?;
        return Ok(Delivered::Forced);
    }
    let path = format!("{}/control/shutdown", dom_path(domid));
    // Watch first, so an acknowledgement right after the write is not missed.
    let watch = host
        .xs
        .watch(&path)
        .map_err(xs_err("cannot watch its control node"))?;
    host.xs
        .write(&path, req.as_str())
        .map_err(xs_err("cannot write its control/shutdown node"))?;
    let deadline = Instant::now() + opts.ack_timeout;
    loop {
        let now = host
            .xs
            .read_string_opt(&path)
            .map_err(xs_err("cannot read its control/shutdown node"))?;
        // libxl's pvcontrol_acked: the guest empties (or removes) the node.
        if now.as_deref().is_none_or(str::is_empty) {
            return Ok(Delivered::PvControl);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = watch
            .next_event_timeout(left)
            .map_err(xs_err("cannot watch its control node"))?;
        if ev.is_none() {
            return Err(Error::NotAcknowledged {
                domain: who,
                request: req.as_str(),
                timeout: opts.ack_timeout,
            });
        }
    }
}

/// Where a domain is in its life, as the monitor and `-w` see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    /// Running, paused or blocked: not shut down.
    Alive,
    /// Shut down with this reason, and not yet destroyed.
    ShutDown(ShutdownReason),
    /// Destroyed (or dying), or its domid now names another domain.
    Gone,
}

/// Where the domain `domid` with Xen handle `uuid` is now.
///
/// # Errors
///
/// [`Error::Xen`] when Xen cannot be asked.
pub fn life(host: &Host, domid: DomId, uuid: &[u8; 16]) -> Result<Life> {
    match host.domain_info(domid) {
        Ok(info) if info.handle != *uuid || info.dying() => Ok(Life::Gone),
        Ok(info) => Ok(info.shutdown_reason().map_or(Life::Alive, Life::ShutDown)),
        Err(Error::NoSuchDomain(_)) => Ok(Life::Gone),
        Err(e) => Err(e),
    }
}

/// Wait until domain `domid` has shut down or is gone (`xl shutdown -w`), on `@releaseDomain`
/// (no polling). Returns how it ended.
///
/// `@releaseDomain` fires only for domains xenstored introduced: on real Xen with C xenstored,
/// a domain with no kernel (whose store ring xenstored could not map) is not introduced, and
/// its shutdown is not reported; such a wait ends at the next `@releaseDomain` of any domain.
///
/// # Errors
///
/// [`Error::NoSuchDomain`] if it does not exist at the start; [`Error::Xen`],
/// [`Error::Xenstore`].
pub fn wait_shutdown_or_gone(host: &Host, domid: DomId) -> Result<Life> {
    let uuid = host.domain_info(domid)?.handle;
    let watch = host
        .xs
        .watch(xenstore::path::RELEASE_DOMAIN)
        .map_err(|source| Error::XenstoreHost {
            what: "cannot watch @releaseDomain",
            source,
        })?;
    loop {
        match life(host, domid, &uuid)? {
            Life::Alive => {}
            end => return Ok(end),
        }
        watch.next_event().map_err(|source| Error::XenstoreHost {
            what: "cannot watch @releaseDomain",
            source,
        })?;
    }
}
