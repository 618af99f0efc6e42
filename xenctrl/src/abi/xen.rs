//! Hypercall numbers, reserved domain ids and the basic scalar types (`xen.h`).

#![allow(non_upper_case_globals)]

use super::layout::abi_consts;

/// A domain id (`domid_t`).
pub type DomId = u16;

/// A guest or machine frame number (`xen_pfn_t`: `unsigned long` on x86-64).
pub type XenPfn = u64;

/// Xen's native unsigned long (`xen_ulong_t`).
pub type XenUlong = u64;

/// A domain's 128-bit handle, usually a UUID (`xen_domain_handle_t`).
pub type XenDomainHandle = [u8; 16];

abi_consts! {
    /// The constants of this module, for the conformance test.
    table consts;

    /// The `xen_version` hypercall.
    __HYPERVISOR_xen_version: u64 = 17;
    /// The `memory_op` hypercall.
    __HYPERVISOR_memory_op: u64 = 12;
    /// The `grant_table_op` hypercall.
    __HYPERVISOR_grant_table_op: u64 = 20;
    /// The `event_channel_op` hypercall.
    __HYPERVISOR_event_channel_op: u64 = 32;
    /// The `sysctl` hypercall.
    __HYPERVISOR_sysctl: u64 = 35;
    /// The `domctl` hypercall.
    __HYPERVISOR_domctl: u64 = 36;

    /// The first domain id that does not name an ordinary domain.
    DOMID_FIRST_RESERVED: DomId = 0x7FF0;
    /// The calling domain.
    DOMID_SELF: DomId = 0x7FF0;
    /// The I/O pseudo-domain.
    DOMID_IO: DomId = 0x7FF1;
    /// The hypervisor itself, as owner of its own pages.
    DOMID_XEN: DomId = 0x7FF2;
    /// The owner of copy-on-write shared pages.
    DOMID_COW: DomId = 0x7FF3;
    /// No domain.
    DOMID_INVALID: DomId = 0x7FF4;
    /// The idle domain.
    DOMID_IDLE: DomId = 0x7FFF;
    /// Mask of the bits a domain id may use.
    DOMID_MASK: DomId = 0x7FFF;
}
