//! The `memory_op` sub-ops this crate uses (`memory.h`).
//!
//! `XENMEM_current_reservation` and `XENMEM_maximum_reservation` take a [`XenMemoryDomain`]
//! and answer in the return value; the reservation sub-ops and `XENMEM_claim_pages` take a
//! [`XenMemoryReservation`]. The resource constants name what `IOCTL_PRIVCMD_MMAP_RESOURCE`
//! maps (Linux issues `XENMEM_acquire_resource` for it).

#![allow(non_upper_case_globals)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::handle::{pool_data, GuestRanges, XenGuestHandle};
use super::layout::{abi_consts, abi_struct};
use super::xen::{DomId, XenPfn, XenUlong};
use crate::GuestHandle;

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
    /// Map frames of a domain's resource (Xen 4.11+). Issued by Linux's privcmd for
    /// `IOCTL_PRIVCMD_MMAP_RESOURCE`, never by this crate directly; the simulator's faults for
    /// resource mapping are keyed on it.
    XENMEM_acquire_resource: u64 = 28;

    /// Resource type: an ioreq server's pages (`id` is the server; Xen 4.11+).
    XENMEM_resource_ioreq_server: u32 = 0;
    /// Resource type: a domain's grant table (`id` below; Xen 4.12+).
    XENMEM_resource_grant_table: u32 = 1;
    /// Resource type: a vCPU's processor-trace buffer (`id` is the vCPU; Xen 4.15+).
    XENMEM_resource_vmtrace_buf: u32 = 2;
    /// Grant-table resource id: the shared frames (the entries).
    XENMEM_resource_grant_table_id_shared: u32 = 0;
    /// Grant-table resource id: the status frames (grant tables version 2 only).
    XENMEM_resource_grant_table_id_status: u32 = 1;

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
    /// `nr_extents` is the length of the extent list the handle came from
    /// ([`XenMemoryReservation::with_extents`]), or a count with no list at all, for the
    /// sub-ops where Xen takes one ([`XenMemoryReservation::claim`],
    /// [`XenMemoryReservation::anywhere`]). No field can be set apart from the handle:
    ///
    /// ```compile_fail,E0616
    /// use xenctrl::abi::*;
    /// let pool = xenctrl::BufferPool::anonymous();
    /// let mut one = pool.alloc_slice::<XenPfn>(1).unwrap();
    /// let mut r = XenMemoryReservation::with_extents(1, 0, 0, one.guest_handle());
    /// r.nr_extents = 9;
    /// ```
    ///
    /// ```compile_fail,E0451
    /// use xenctrl::abi::*;
    /// let pool = xenctrl::BufferPool::anonymous();
    /// let mut one = pool.alloc_slice::<XenPfn>(1).unwrap();
    /// let _ = XenMemoryReservation {
    ///     extent_start: one.guest_handle().into(), nr_extents: 9, extent_order: 0,
    ///     mem_flags: 0, domid: 1, pad: [0; 6],
    /// };
    /// ```
    ///
    /// Holds a guest handle, so no zerocopy trait builds it from bytes; decode untrusted bytes
    /// with [`XenMemoryReservationView`].
    #[derive(Debug, KnownLayout, Immutable)]
    c("struct xen_memory_reservation")
    pub struct XenMemoryReservation<'h> {
        extent_start: XenGuestHandle<'h, XenPfn>,
        nr_extents: XenUlong,
        extent_order: u32,
        mem_flags: u32,
        domid: DomId,
        pad: [u8; 6] => _,
    }
    size = 32;
}
pool_data!(XenMemoryReservation<'h>);

impl<'h> XenMemoryReservation<'h> {
    /// One extent of `2^extent_order` pages per element of `extents` (populate, decrease, and
    /// increase when Xen should report the frames).
    pub fn with_extents(
        domid: DomId,
        extent_order: u32,
        mem_flags: u32,
        extents: GuestHandle<'h, [XenPfn]>,
    ) -> Self {
        Self {
            nr_extents: extents.len() as XenUlong,
            extent_start: extents.into(),
            extent_order,
            mem_flags,
            domid,
            pad: [0; 6],
        }
    }

    /// `XENMEM_claim_pages`: claim `pages` pages in all for `domid` (0 cancels the claim).
    /// Xen takes the count with a null list.
    pub fn claim(domid: DomId, pages: u64) -> Self {
        Self {
            extent_start: XenGuestHandle::null(),
            nr_extents: pages,
            extent_order: 0,
            mem_flags: 0,
            domid,
            pad: [0; 6],
        }
    }

    /// `XENMEM_increase_reservation` without a list: `nr_extents` extents wherever Xen likes,
    /// frames not reported.
    pub fn anywhere(domid: DomId, nr_extents: u64, extent_order: u32, mem_flags: u32) -> Self {
        Self {
            extent_start: XenGuestHandle::null(),
            nr_extents,
            extent_order,
            mem_flags,
            domid,
            pad: [0; 6],
        }
    }

    /// The frame list's handle (null for a claim or an increase without a list).
    pub fn extent_start(&self) -> &XenGuestHandle<'h, XenPfn> {
        &self.extent_start
    }

    /// Number of extents (for a claim: pages).
    pub fn nr_extents(&self) -> XenUlong {
        self.nr_extents
    }

    /// Each extent is `2^extent_order` pages.
    pub fn extent_order(&self) -> u32 {
        self.extent_order
    }

    /// `XENMEMF_*` and the address-width bits.
    pub fn mem_flags(&self) -> u32 {
        self.mem_flags
    }

    /// The domain whose reservation changes.
    pub fn domid(&self) -> DomId {
        self.domid
    }
}

impl GuestRanges for XenMemoryReservation<'_> {
    fn guest_ranges(&self, f: &mut dyn FnMut(u64, u64)) {
        self.extent_start.report_range(self.nr_extents, f);
    }
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
