//! The `sched_op` sub-op a toolstack issues for another domain (`sched.h`):
//! `SCHEDOP_remote_shutdown`.
//!
//! A guest shuts itself down with `SCHEDOP_shutdown` (its kernel's `HYPERVISOR_sched_op`), which
//! only the guest can issue. `SCHEDOP_remote_shutdown` is the privileged twin: a control domain
//! declares a shutdown, with a reason, for another domain (Xen's `domain_shutdown`, the same path
//! the guest's own call takes). libxc's `xc_domain_shutdown` issues it.

#![allow(non_upper_case_globals)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::layout::{abi_consts, abi_struct};
use super::xen::DomId;

abi_consts! {
    /// The constants of this module, for the conformance test.
    table consts;

    /// The `sched_op` hypercall.
    __HYPERVISOR_sched_op: u64 = 29;
    /// Declare a shutdown of another domain ([`SchedRemoteShutdown`]).
    SCHEDOP_remote_shutdown: u64 = 4;
}

abi_struct! {
    /// Argument of `SCHEDOP_remote_shutdown` (`struct sched_remote_shutdown`).
    ///
    /// Xen reads `reason` as a `u8` (`domain_shutdown(struct domain *, u8)`): only its low
    /// byte counts.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct sched_remote_shutdown")
    pub struct SchedRemoteShutdown {
        /// The domain to shut down.
        pub domain_id: DomId,
        /// Padding.
        pub _pad0: u16 => _,
        /// `SHUTDOWN_*` ([`super::ShutdownReason`]).
        pub reason: u32,
    }
    size = 8;
}
