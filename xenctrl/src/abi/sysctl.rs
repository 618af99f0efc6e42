//! The `sysctl` sub-ops this crate uses (`sysctl.h`).
//!
//! Each payload is wrapped in [`XenSysctl`](super::XenSysctl) to make the hypercall argument.

#![allow(non_upper_case_globals)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::domctl::XenDomctlGetdomaininfo;
use super::envelope::payload;
use super::handle::{pool_data, GuestRanges, XenGuestHandle};
use super::layout::{abi_consts, abi_struct};
use super::xen::DomId;
use crate::GuestHandle;

abi_consts! {
    /// The constants of this module, for the conformance test.
    table consts;

    /// The sysctl interface version of Xen 4.17 (the layout of this module).
    XEN_SYSCTL_INTERFACE_VERSION: u32 = 0x15;

    /// Host physical information ([`XenSysctlPhysinfo`]).
    XEN_SYSCTL_physinfo: u32 = 3;
    /// A page of domain information ([`XenSysctlGetdomaininfolist`]).
    XEN_SYSCTL_getdomaininfolist: u32 = 6;

    /// Host capability: HVM guests.
    XEN_SYSCTL_PHYSCAP_hvm: u32 = 1 << 0;
    /// Host capability: PV guests.
    XEN_SYSCTL_PHYSCAP_pv: u32 = 1 << 1;
    /// Host capability: device pass-through.
    XEN_SYSCTL_PHYSCAP_directio: u32 = 1 << 2;
    /// Host capability: hardware-assisted paging.
    XEN_SYSCTL_PHYSCAP_hap: u32 = 1 << 3;
    /// Host capability: shadow paging.
    XEN_SYSCTL_PHYSCAP_shadow: u32 = 1 << 4;
    /// Host capability: the IOMMU can share the HAP page tables.
    XEN_SYSCTL_PHYSCAP_iommu_hap_pt_share: u32 = 1 << 5;
    /// Host capability: processor tracing for guests.
    XEN_SYSCTL_PHYSCAP_vmtrace: u32 = 1 << 6;
    /// Host capability: virtual PMU.
    XEN_SYSCTL_PHYSCAP_vpmu: u32 = 1 << 7;
    /// Host capability: grant tables v1.
    XEN_SYSCTL_PHYSCAP_gnttab_v1: u32 = 1 << 8;
    /// Host capability: grant tables v2.
    XEN_SYSCTL_PHYSCAP_gnttab_v2: u32 = 1 << 9;
    /// The highest host capability this interface knows.
    XEN_SYSCTL_PHYSCAP_MAX: u32 = 1 << 9;
}

abi_struct! {
    /// Result of `XEN_SYSCTL_physinfo` (`struct xen_sysctl_physinfo`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_sysctl_physinfo")
    pub struct XenSysctlPhysinfo {
        /// Hardware threads per core.
        pub threads_per_core: u32,
        /// Cores per socket.
        pub cores_per_socket: u32,
        /// CPUs online.
        pub nr_cpus: u32,
        /// Largest possible CPU id.
        pub max_cpu_id: u32,
        /// NUMA nodes online.
        pub nr_nodes: u32,
        /// Largest possible node id.
        pub max_node_id: u32,
        /// CPU frequency in kHz.
        pub cpu_khz: u32,
        /// `XEN_SYSCTL_PHYSCAP_*`.
        pub capabilities: u32,
        /// Architecture-specific capabilities.
        pub arch_capabilities: u32,
        /// Zero.
        pub pad: u32,
        /// Host RAM in pages.
        pub total_pages: u64,
        /// Free pages (including those claimed but not yet allocated).
        pub free_pages: u64,
        /// Pages waiting to be scrubbed.
        pub scrub_pages: u64,
        /// Pages claimed by domains and not yet allocated.
        pub outstanding_pages: u64,
        /// Largest possible machine frame number.
        pub max_mfn: u64,
        /// CPU feature words.
        pub hw_cap: [u32; 8],
    }
    size = 112;
}
payload!(sysctl XenSysctlPhysinfo, XEN_SYSCTL_physinfo, "u.physinfo", plain);

abi_struct! {
    /// Argument of `XEN_SYSCTL_getdomaininfolist` (`struct xen_sysctl_getdomaininfolist`): Xen
    /// writes up to `max_domains` entries for domains `>= first_domain` into `buffer`.
    ///
    /// `max_domains` is the length of the buffer the handle came from, set by
    /// [`XenSysctlGetdomaininfolist::new`]; no field can be set apart from the handle, so Xen is
    /// never told the buffer is longer than it is:
    ///
    /// ```compile_fail,E0451
    /// use xenctrl::abi::*;
    /// let pool = xenctrl::BufferPool::anonymous();
    /// let mut one = pool.alloc_slice::<XenDomctlGetdomaininfo>(1).unwrap();
    /// let _ = XenSysctlGetdomaininfolist {
    ///     first_domain: 0, pad0: [0; 2], max_domains: 9,
    ///     buffer: one.guest_handle().into(), num_domains: 0, pad1: [0; 4],
    /// };
    /// ```
    ///
    /// ```compile_fail,E0616
    /// use xenctrl::abi::*;
    /// let pool = xenctrl::BufferPool::anonymous();
    /// let mut one = pool.alloc_slice::<XenDomctlGetdomaininfo>(1).unwrap();
    /// let mut list = XenSysctlGetdomaininfolist::new(0, one.guest_handle());
    /// list.max_domains = 9;
    /// ```
    ///
    /// Holds a guest handle, so no zerocopy trait builds it from bytes; decode untrusted bytes
    /// with [`XenSysctlGetdomaininfolistView`].
    #[derive(Debug, KnownLayout, Immutable)]
    c("struct xen_sysctl_getdomaininfolist")
    pub struct XenSysctlGetdomaininfolist<'h> {
        first_domain: DomId,
        pad0: [u8; 2] => _,
        max_domains: u32,
        buffer: XenGuestHandle<'h, XenDomctlGetdomaininfo>,
        num_domains: u32,
        pad1: [u8; 4] => _,
    }
    size = 24;
}
payload!(sysctl XenSysctlGetdomaininfolist<'h>, XEN_SYSCTL_getdomaininfolist, "u.getdomaininfolist", handles);
pool_data!(XenSysctlGetdomaininfolist<'h>);

impl<'h> XenSysctlGetdomaininfolist<'h> {
    /// Ask for the domains `>= first_domain`, as many as `buffer` holds (up to `u32::MAX`).
    pub fn new(first_domain: DomId, buffer: GuestHandle<'h, [XenDomctlGetdomaininfo]>) -> Self {
        Self {
            first_domain,
            pad0: [0; 2],
            max_domains: u32::try_from(buffer.len()).unwrap_or(u32::MAX),
            buffer: buffer.into(),
            num_domains: 0,
            pad1: [0; 4],
        }
    }

    /// No buffer: Xen reports no domain (`max_domains` 0).
    pub fn empty(first_domain: DomId) -> Self {
        Self {
            first_domain,
            pad0: [0; 2],
            max_domains: 0,
            buffer: XenGuestHandle::null(),
            num_domains: 0,
            pad1: [0; 4],
        }
    }

    /// The lowest domain id asked for.
    pub fn first_domain(&self) -> DomId {
        self.first_domain
    }

    /// Capacity of the buffer, in entries.
    pub fn max_domains(&self) -> u32 {
        self.max_domains
    }

    /// Entries Xen wrote (out).
    pub fn num_domains(&self) -> u32 {
        self.num_domains
    }

    /// The buffer's handle.
    pub fn buffer(&self) -> &XenGuestHandle<'h, XenDomctlGetdomaininfo> {
        &self.buffer
    }
}

impl GuestRanges for XenSysctlGetdomaininfolist<'_> {
    fn guest_ranges(&self, f: &mut dyn FnMut(u64, u64)) {
        self.buffer.report_range(u64::from(self.max_domains), f);
    }
}

abi_struct! {
    /// [`XenSysctlGetdomaininfolist`] with the handle as a plain address, for decoding untrusted
    /// bytes. No entry point accepts it.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_sysctl_getdomaininfolist")
    pub struct XenSysctlGetdomaininfolistView {
        /// The lowest domain id to report.
        pub first_domain: DomId,
        /// Zero (C alignment padding).
        pub pad0: [u8; 2] => _,
        /// Capacity of `buffer`, in entries.
        pub max_domains: u32,
        /// The address of the entry array.
        pub buffer: u64,
        /// Entries written (out).
        pub num_domains: u32,
        /// Zero (C alignment padding).
        pub pad1: [u8; 4] => _,
    }
    size = 24;
}
