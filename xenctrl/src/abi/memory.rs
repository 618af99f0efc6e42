//! The `memory_op` sub-ops this crate uses (`memory.h`).
//!
//! `XENMEM_current_reservation` and `XENMEM_maximum_reservation` take a [`XenMemoryDomain`]
//! and answer in the return value; the reservation sub-ops and `XENMEM_claim_pages` take a
//! [`XenMemoryReservation`].

#![allow(non_upper_case_globals)]

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use super::handle::XenGuestHandle;
use super::layout::{abi_consts, abi_struct};
use super::xen::{DomId, XenPfn, XenUlong};

abi_consts! {
    /// The constants of this module, for the conformance test.
    table consts;

    /// Allocate extents to a domain (PV: returns their machine frames).
    XENMEM_increase_reservation: u64 = 0;
    /// Release the listed extents of a domain.
    XENMEM_decrease_reservation: u64 = 1;
    /// Pages currently allocated to a domain (return value).
    XENMEM_current_reservation: u64 = 3;
    /// A domain's page limit (return value).
    XENMEM_maximum_reservation: u64 = 4;
    /// Allocate extents at the listed guest frames.
    XENMEM_populate_physmap: u64 = 6;
    /// Stake a claim on free host pages for a domain (0 pages: cancel the claim).
    XENMEM_claim_pages: u64 = 24;

    /// `mem_flags`: populate on demand (HVM).
    XENMEMF_populate_on_demand: u32 = 1 << 16;
    /// `mem_flags`: allocate only from the requested node.
    XENMEMF_exact_node_request: u32 = 1 << 17;
    /// `mem_flags`: the node is a virtual node of the guest.
    XENMEMF_vnode: u32 = 1 << 18;
}

/// `XENMEMF_node(n)`: prefer host node `n` (encoded as `n + 1` in bits 8..16).
pub const fn xenmemf_node(node: u8) -> u32 {
    (node as u32 + 1) << 8
}

abi_struct! {
    /// Argument of `XENMEM_current_reservation` and `XENMEM_maximum_reservation`
    /// (`struct xen_memory_domain`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_memory_domain")
    pub struct XenMemoryDomain {
        /// The domain asked about (`DOMID_SELF` allowed).
        pub domid: DomId,
    }
    size = 2;
}

abi_struct! {
    /// Argument of the reservation sub-ops and `XENMEM_claim_pages`
    /// (`struct xen_memory_reservation`).
    ///
    /// Holds a guest handle, so it is not `FromBytes`; decode untrusted bytes with
    /// [`XenMemoryReservationView`].
    #[derive(Debug, FromZeros, KnownLayout, Immutable)]
    c("struct xen_memory_reservation")
    pub struct XenMemoryReservation<'h> {
        /// The frame list (in or out depending on the sub-op; null for `claim_pages`).
        pub extent_start: XenGuestHandle<'h, XenPfn>,
        /// Number of extents (for `claim_pages`: the number of pages).
        pub nr_extents: XenUlong,
        /// Each extent is `2^extent_order` pages.
        pub extent_order: u32,
        /// `XENMEMF_*` and the address-width bits.
        pub mem_flags: u32,
        /// The domain whose reservation changes.
        pub domid: DomId,
        /// Zero (C alignment padding).
        pub pad: [u8; 6] => _,
    }
    size = 32;
}

abi_struct! {
    /// [`XenMemoryReservation`] with the handle as a plain address, for decoding untrusted
    /// bytes. No entry point accepts it.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_memory_reservation")
    pub struct XenMemoryReservationView {
        /// The address of the frame list.
        pub extent_start: u64,
        /// Number of extents.
        pub nr_extents: XenUlong,
        /// Each extent is `2^extent_order` pages.
        pub extent_order: u32,
        /// `XENMEMF_*` and the address-width bits.
        pub mem_flags: u32,
        /// The domain whose reservation changes.
        pub domid: DomId,
        /// Zero (C alignment padding).
        pub pad: [u8; 6] => _,
    }
    size = 32;
}
