//! Event channels.

use crate::abi::{EVTCHNOP_alloc_unbound, EvtchnAllocUnbound, EvtchnPort};
use crate::ctrl::XenCtrl;
use crate::error::{Op, Result};
use crate::DomId;

impl XenCtrl {
    /// Allocate an unbound event-channel port in `domid` that `remote` may bind to (how a
    /// toolstack sets up the xenstore and console rings of a new guest).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Xen`] with `ESRCH` when either domain does not exist, `ENOSPC` when the
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
}
