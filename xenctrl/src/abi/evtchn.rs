//! The `event_channel_op` sub-ops this crate issues (`event_channel.h`), and the virtual IRQ
//! numbers of `xen.h`.
//!
//! Only the sub-ops a toolstack issues on behalf of other domains are here: `alloc_unbound`,
//! `status`, `close` and `reset`. Binding, sending and unmasking are done by the kernel behind
//! `/dev/xen/evtchn` ([`crate::evtchn`]), which issues its own hypercalls.

#![allow(non_upper_case_globals)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::layout::{abi_consts, abi_struct};
use super::xen::DomId;

/// An event-channel port (`evtchn_port_t`).
pub type EvtchnPort = u32;

abi_consts! {
    /// The constants of this module, for the conformance test.
    table consts;

    /// Close a port of the calling domain ([`EvtchnClose`]).
    EVTCHNOP_close: u64 = 3;
    /// Report what a port of a domain is bound to ([`EvtchnStatus`]).
    EVTCHNOP_status: u64 = 5;
    /// Allocate a port in `dom` that `remote_dom` may bind ([`EvtchnAllocUnbound`]).
    EVTCHNOP_alloc_unbound: u64 = 6;
    /// Close every port of a domain ([`EvtchnReset`]).
    EVTCHNOP_reset: u64 = 10;

    /// [`EvtchnStatus::status`]: the port is not in use.
    EVTCHNSTAT_closed: u32 = 0;
    /// The port waits for a domain to bind it.
    EVTCHNSTAT_unbound: u32 = 1;
    /// The port is connected to a port of another (or the same) domain.
    EVTCHNSTAT_interdomain: u32 = 2;
    /// The port is bound to a physical IRQ.
    EVTCHNSTAT_pirq: u32 = 3;
    /// The port is bound to a virtual IRQ.
    EVTCHNSTAT_virq: u32 = 4;
    /// The port is bound to an inter-processor interrupt.
    EVTCHNSTAT_ipi: u32 = 5;

    /// Per-vCPU timer.
    VIRQ_TIMER: u32 = 0;
    /// Per-vCPU: dump debug information.
    VIRQ_DEBUG: u32 = 1;
    /// Global (dom0): bytes received on the emergency console.
    VIRQ_CONSOLE: u32 = 2;
    /// Global (dom0): an exceptional event for some domain (it shut down, or was destroyed).
    VIRQ_DOM_EXC: u32 = 3;
    /// Global (dom0): the trace buffer has records.
    VIRQ_TBUF: u32 = 4;
    /// Global (dom0): a domain paused for its debugger.
    VIRQ_DEBUGGER: u32 = 6;
    /// Per-vCPU: a new Xenoprof sample.
    VIRQ_XENOPROF: u32 = 7;
    /// Global (dom0): Xen wrote to its console ring.
    VIRQ_CON_RING: u32 = 8;
    /// Global (dom0): a physical CPU changed state.
    VIRQ_PCPU_STATE: u32 = 9;
    /// Global (dom0): a memory event.
    VIRQ_MEM_EVENT: u32 = 10;
    /// Global: an Argo message arrived.
    VIRQ_ARGO: u32 = 11;
    /// Global (dom0): Xen is low on heap memory.
    VIRQ_ENOMEM: u32 = 12;
    /// Per-vCPU: a performance-counter interrupt.
    VIRQ_XENPMU: u32 = 13;
    /// How many virtual IRQs there are; Xen refuses to bind a larger one (`EINVAL`).
    NR_VIRQS: u32 = 24;
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

abi_struct! {
    /// Argument of `EVTCHNOP_close` (`struct evtchn_close`): a port of the calling domain.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct evtchn_close")
    pub struct EvtchnClose {
        /// The port to close.
        pub port: EvtchnPort,
    }
    size = 4;
}

abi_struct! {
    /// Argument of `EVTCHNOP_status` (`struct evtchn_status`).
    ///
    /// The C struct ends in a union; its first word is `u.pirq` or `u.virq`, or holds
    /// `u.unbound.dom` / `u.interdomain.dom` in its low 16 bits (x86 is little-endian), and
    /// its second is `u.interdomain.port`. [`EvtchnStatus::remote_dom`] decodes the domain.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct evtchn_status")
    pub struct EvtchnStatus {
        /// The domain whose port is asked about (in; `DOMID_SELF` allowed).
        pub dom: DomId,
        /// Padding.
        pub _pad0: u16 => _,
        /// The port (in).
        pub port: EvtchnPort,
        /// `EVTCHNSTAT_*` (out).
        pub status: u32,
        /// The vCPU the port notifies (out).
        pub vcpu: u32,
        /// `u.virq` / `u.pirq`, or the remote domain in the low 16 bits (out).
        pub u_word: u32 => "u.virq",
        /// `u.interdomain.port` (out).
        pub u_port: EvtchnPort => "u.interdomain.port",
    }
    size = 24;
}

impl EvtchnStatus {
    /// `u.unbound.dom` or `u.interdomain.dom`: the low 16 bits of the union's first word.
    pub fn remote_dom(&self) -> DomId {
        let [lo, hi, _, _] = self.u_word.to_le_bytes();
        DomId::from_le_bytes([lo, hi])
    }

    /// Set `u.unbound.dom` / `u.interdomain.dom`, keeping the word's upper bytes as they are
    /// (Xen writes only the two bytes of the member).
    pub fn set_remote_dom(&mut self, dom: DomId) {
        self.u_word = (self.u_word & 0xffff_0000) | u32::from(dom);
    }
}

abi_struct! {
    /// Argument of `EVTCHNOP_reset` (`struct evtchn_reset`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct evtchn_reset")
    pub struct EvtchnReset {
        /// The domain whose ports are all closed (`DOMID_SELF` allowed).
        pub dom: DomId,
    }
    size = 2;
}
