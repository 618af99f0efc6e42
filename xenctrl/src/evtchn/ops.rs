//! The `EVTCHNOP_*` hypercalls a toolstack issues for other domains, on [`XenCtrl`].
//!
//! Xen lets a privileged caller allocate, inspect and reset ports of any domain
//! (`alloc_unbound`, `status`, `reset` take a domain id); `close` only ever acts on the
//! caller's own ports (`xen/common/event_channel.c`: `evtchn_close(current->domain, ...)`).

use super::{ChannelStatus, Port};
use crate::abi::{
    EVTCHNOP_alloc_unbound, EVTCHNOP_close, EVTCHNOP_reset, EVTCHNOP_status, EvtchnAllocUnbound,
    EvtchnClose, EvtchnPort, EvtchnReset, EvtchnStatus,
};
use crate::ctrl::XenCtrl;
use crate::error::{Error, Op, Result};
use crate::ids::DomainId;
use crate::DomId;

impl XenCtrl {
    /// Allocate an unbound event-channel port in `domid` that `remote` may bind (how a
    /// toolstack sets up the xenstore and console rings of a new guest).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Xen`] with `ESRCH` when `domid` does not exist, `ENOSPC` when the
    /// domain has no free port.
    pub fn evtchn_alloc_unbound(&self, domid: DomId, remote: DomId) -> Result<EvtchnPort> {
        let mut op = self.pool().alloc::<EvtchnAllocUnbound>()?;
        *op = EvtchnAllocUnbound {
            dom: domid,
            remote_dom: remote,
            port: 0,
        };
        self.evtchn_op(
            Op::EvtchnAllocUnbound,
            Some(domid),
            EVTCHNOP_alloc_unbound,
            &mut op,
        )?;
        Ok(op.port)
    }

    /// [`XenCtrl::evtchn_alloc_unbound`] with typed ids: a fresh port of `domain` that
    /// `remote` may bind with `EVTCHNOP_bind_interdomain`
    /// ([`EventChannels::bind_interdomain`](super::EventChannels::bind_interdomain) in a Linux
    /// domain). `remote` may be any domain id, even one that does not exist yet (Xen does not
    /// check it), or [`DomainId::SELF`] for the caller.
    ///
    /// # Errors
    ///
    /// As for [`XenCtrl::evtchn_alloc_unbound`]; `EINVAL` when `domain` is dying.
    ///
    /// # Examples
    ///
    /// ```
    /// use xenctrl::evtchn::{ChannelState, Port};
    /// use xenctrl::{CreateDomain, DomainId, XenCtrl};
    ///
    /// let xc = XenCtrl::simulated(Default::default())?;
    /// let guest = DomainId::new(xc.create_domain(&CreateDomain::pv(1))?);
    /// let port = xc.evtchn_alloc_unbound_port(guest, DomainId::DOM0)?;
    /// assert_eq!(
    ///     xc.evtchn_status(guest, port)?.state,
    ///     ChannelState::Unbound { remote: DomainId::DOM0 }
    /// );
    /// # Ok::<(), xenctrl::Error>(())
    /// ```
    pub fn evtchn_alloc_unbound_port(&self, domain: DomainId, remote: DomainId) -> Result<Port> {
        self.evtchn_alloc_unbound(domain.get(), remote.get())
            .map(Port::new)
    }

    /// What `port` of `domain` is bound to (`EVTCHNOP_status`). A free port inside the range
    /// Xen has allocated for the domain is [`Closed`](super::ChannelState::Closed), as is port
    /// 0, which Xen reserves.
    ///
    /// # Errors
    ///
    /// [`Error::EventChannel`] naming the domain and port: `ESRCH` (no such domain), `EINVAL`
    /// (beyond the ports Xen has allocated for it), `EACCES` (a port Xen uses for itself, such
    /// as an ioreq server's).
    pub fn evtchn_status(&self, domain: DomainId, port: Port) -> Result<ChannelStatus> {
        let mut op = self.pool().alloc::<EvtchnStatus>()?;
        *op = EvtchnStatus {
            dom: domain.get(),
            port: port.get(),
            ..EvtchnStatus::default()
        };
        self.evtchn_op(
            Op::EvtchnStatus,
            Some(domain.get()),
            EVTCHNOP_status,
            &mut op,
        )
        .map_err(on_port(Some(domain.get()), port))?;
        Ok(ChannelStatus::from_abi(&op))
    }

    /// Close `port` of the calling domain (`EVTCHNOP_close`; Xen offers no way to close one
    /// port of another domain: see [`XenCtrl::evtchn_reset`]). An interdomain peer goes back to
    /// unbound, waiting for this domain again.
    ///
    /// This is for undoing [`XenCtrl::evtchn_alloc_unbound_port`]`(DomainId::SELF, ..)`.
    /// Never close a port that the kernel or an [`EventChannels`](super::EventChannels) handle
    /// has bound: Linux's later unbind finds it closed, and Linux treats that as a bug
    /// (`BUG()` in `xen_evtchn_close`).
    ///
    /// # Errors
    ///
    /// [`Error::EventChannel`] naming the port: `EINVAL` when it is free, reserved or beyond
    /// the allocated range.
    pub fn evtchn_close(&self, port: Port) -> Result<()> {
        let mut op = self.pool().alloc::<EvtchnClose>()?;
        op.port = port.get();
        self.evtchn_op(Op::EvtchnClose, None, EVTCHNOP_close, &mut op)
            .map(drop)
            .map_err(on_port(None, port))
    }

    /// Close every port of `domain` (`EVTCHNOP_reset`): its interdomain peers go back to
    /// unbound. For a domain being rebuilt (soft reset) or torn down. Xen requires another
    /// domain to be paused by the toolstack ([`XenCtrl::pause_domain`], or not yet unpaused
    /// since creation).
    ///
    /// Resetting the calling domain itself ([`DomainId::SELF`], or dom0 from dom0) closes the
    /// kernel's own ports and breaks the running system.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Xen`]: `ESRCH` (no such domain), `EINVAL` (another domain that is not
    /// paused by the toolstack), `EPERM` (not allowed to).
    pub fn evtchn_reset(&self, domain: DomainId) -> Result<()> {
        let mut op = self.pool().alloc::<EvtchnReset>()?;
        op.dom = domain.get();
        self.evtchn_op(Op::EvtchnReset, Some(domain.get()), EVTCHNOP_reset, &mut op)
            .map(drop)
    }
}

/// Attribute Xen's refusal to the port it was about.
fn on_port(domid: Option<DomId>, port: Port) -> impl FnOnce(Error) -> Error {
    move |e| match e {
        Error::Xen { op, source, .. } => Error::EventChannel {
            op,
            domid: domid.map(DomainId::new),
            port: Some(port),
            source,
        },
        other => other,
    }
}
