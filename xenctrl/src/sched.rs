//! Scheduler operations a toolstack issues for another domain: `SCHEDOP_remote_shutdown`.

use crate::abi::{SCHEDOP_remote_shutdown, SchedRemoteShutdown, ShutdownReason};
use crate::error::{Error, Op, Result};
use crate::{DomId, XenCtrl};

impl XenCtrl {
    /// Declare that domain `domid` shut down with `reason` (`SCHEDOP_remote_shutdown`, libxc's
    /// `xc_domain_shutdown`), as if the guest had asked itself.
    ///
    /// A running guest shuts itself down with `SCHEDOP_shutdown`, which only the guest issues;
    /// a toolstack asks it to through xenstore's `control/shutdown` first. This call is the
    /// privileged way round: Xen pauses the domain's vCPUs, records the reason, and (once they
    /// have stopped) reports the domain shut down in `getdomaininfo` and raises `VIRQ_DOM_EXC`,
    /// on which xenstored fires `@releaseDomain`. The domain stays, shut down, until destroyed.
    ///
    /// Xen keeps the first reason: a second call on a domain that is shutting down or shut
    /// down changes nothing and succeeds. Xen reads only the low byte of the reason.
    ///
    /// # Errors
    ///
    /// [`Error::HostDomain`] for domain 0, before Xen is asked: Xen would shut the whole host
    /// down (`hwdom_shutdown`). [`Error::Xen`] with `ESRCH` when there is no such domain,
    /// `EPERM` when the caller may not (XSM).
    ///
    /// # Examples
    ///
    /// ```
    /// use xenctrl::{abi::ShutdownReason, CreateDomain, XenCtrl};
    ///
    /// let xc = XenCtrl::simulated(Default::default())?;
    /// let domid = xc.create_domain(&CreateDomain::pv(1))?;
    /// xc.remote_shutdown(domid, ShutdownReason::REBOOT)?;
    /// assert_eq!(xc.domain_info(domid)?.shutdown_reason(), Some(ShutdownReason::REBOOT));
    /// xc.destroy_domain(domid)?;
    /// # Ok::<(), xenctrl::Error>(())
    /// ```
    pub fn remote_shutdown(&self, domid: DomId, reason: ShutdownReason) -> Result<()> {
        if domid == 0 {
            return Err(Error::HostDomain {
                op: Op::RemoteShutdown,
            });
        }
        let mut arg = self.pool().alloc::<SchedRemoteShutdown>()?;
        *arg = SchedRemoteShutdown {
            domain_id: domid,
            reason: reason.0,
            ..Default::default()
        };
        self.sched_op(
            Op::RemoteShutdown,
            Some(domid),
            SCHEDOP_remote_shutdown,
            &mut arg,
        )?;
        Ok(())
    }
}
