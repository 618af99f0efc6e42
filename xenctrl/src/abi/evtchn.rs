//! The `event_channel_op` sub-ops this crate uses (`event_channel.h`).

#![allow(non_upper_case_globals)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::layout::{abi_consts, abi_struct};
use super::xen::DomId;

/// An event-channel port (`evtchn_port_t`).
pub type EvtchnPort = u32;

abi_consts! {
    /// The constants of this module, for the conformance test.
    table consts;

    /// Allocate a port in `dom` that `remote_dom` may bind ([`EvtchnAllocUnbound`]).
    EVTCHNOP_alloc_unbound: u64 = 6;
}

abi_struct! {
    /// Argument of `EVTCHNOP_alloc_unbound` (`struct evtchn_alloc_unbound`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct evtchn_alloc_unbound")
    pub struct EvtchnAllocUnbound {
        /// The domain the port is allocated in.
        pub dom: DomId,
        /// The domain allowed to bind it.
        pub remote_dom: DomId,
        /// The new port (out).
        pub port: EvtchnPort,
    }
    size = 8;
}
