//! What a domain builder asks of Xen beyond creating a domain: the build-time `domctl`
//! sub-ops (`domctl.h`), `mmuext_op` pinning (`xen.h`) and a PV guest's memory map
//! (`memory.h`, and `struct e820entry` from libxc's `xenctrl.h`).
//!
//! None of these layouts changed between Xen 4.17 and 4.22.

#![allow(non_upper_case_globals)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::envelope::payload;
use super::handle::{pool_data, GuestRanges, XenGuestHandle};
use super::layout::{abi_consts, abi_struct};
use super::vcpu::VcpuGuestContext;
use super::xen::{DomId, XenPfn};
use crate::GuestHandle;

abi_consts! {
    /// The constants of this module, for the conformance test.
    table consts;

    /// Set a vCPU's state ([`XenDomctlSetVcpucontext`], [`XenDomctlGetVcpucontext`]).
    XEN_DOMCTL_setvcpucontext: u32 = 12;
    /// Read a vCPU's state ([`XenDomctlSetVcpucontext`], [`XenDomctlGetVcpucontext`]).
    XEN_DOMCTL_getvcpucontext: u32 = 13;
    /// Write the hypercall trampolines into a guest frame ([`XenDomctlHypercallInit`]).
    XEN_DOMCTL_hypercall_init: u32 = 22;
    /// Read an HVM domain's saved state ([`XenDomctlGetHvmcontext`], [`XenDomctlSetHvmcontext`]).
    XEN_DOMCTL_gethvmcontext: u32 = 33;
    /// Load an HVM domain's state ([`XenDomctlGetHvmcontext`], [`XenDomctlSetHvmcontext`]).
    XEN_DOMCTL_sethvmcontext: u32 = 34;
    /// Set a PV domain's address size ([`XenDomctlAddressSize`]).
    XEN_DOMCTL_set_address_size: u32 = 35;
    /// Read a PV domain's address size ([`XenDomctlAddressSize`]).
    XEN_DOMCTL_get_address_size: u32 = 36;
    /// Read a domain's TSC mode ([`XenDomctlTscInfo`]).
    XEN_DOMCTL_gettscinfo: u32 = 59;
    /// Set a domain's TSC mode ([`XenDomctlTscInfo`]).
    XEN_DOMCTL_settscinfo: u32 = 60;
    /// Read a domain's CPUID and MSR policy ([`XenDomctlGetCpuPolicy`]).
    XEN_DOMCTL_get_cpu_policy: u32 = 82;
    /// Set a domain's CPUID and MSR policy, before it first runs ([`XenDomctlSetCpuPolicy`]).
    XEN_DOMCTL_set_cpu_policy: u32 = 83;
    /// `xen_cpuid_leaf_t.subleaf` of a leaf without subleaves.
    XEN_CPUID_NO_SUBLEAF: u32 = 0xffff_ffff;
    /// Read the size of an HVM domain's paging pool ([`XenDomctlPagingMempool`]).
    XEN_DOMCTL_get_paging_mempool_size: u32 = 85;
    /// Size an HVM domain's paging pool ([`XenDomctlPagingMempool`]).
    XEN_DOMCTL_set_paging_mempool_size: u32 = 86;

    /// `mmuext_op`: pin a frame as an L1 page table.
    MMUEXT_PIN_L1_TABLE: u32 = 0;
    /// `mmuext_op`: pin a frame as an L2 page table.
    MMUEXT_PIN_L2_TABLE: u32 = 1;
    /// `mmuext_op`: pin a frame as an L3 page table.
    MMUEXT_PIN_L3_TABLE: u32 = 2;
    /// `mmuext_op`: pin a frame as an L4 (top-level, x86-64) page table.
    MMUEXT_PIN_L4_TABLE: u32 = 3;
    /// `mmuext_op`: unpin a page table.
    MMUEXT_UNPIN_TABLE: u32 = 4;

    /// Hypercall: page-table management extensions (pinning).
    __HYPERVISOR_mmuext_op: u64 = 26;
    /// Hypercall: HVM operations (parameters).
    __HYPERVISOR_hvm_op: u64 = 34;

    /// `memory_op`: read the calling domain's memory map.
    XENMEM_memory_map: u64 = 9;
    /// `memory_op`: set a domain's memory map ([`XenForeignMemoryMap`]).
    XENMEM_set_memory_map: u64 = 13;

    /// e820 type: usable RAM.
    E820_RAM: u32 = 1;
    /// e820 type: reserved.
    E820_RESERVED: u32 = 2;
    /// e820 type: ACPI tables.
    E820_ACPI: u32 = 3;
    /// e820 type: ACPI NVS.
    E820_NVS: u32 = 4;
    /// e820 type: unusable.
    E820_UNUSABLE: u32 = 5;
}

abi_struct! {
    /// Argument of `XEN_DOMCTL_set_address_size` / `get_address_size`
    /// (`struct xen_domctl_address_size`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_domctl_address_size")
    pub struct XenDomctlAddressSize {
        /// 32 or 64 (bits).
        pub size: u32,
    }
    size = 4;
}
payload!(domctl XenDomctlAddressSize, XEN_DOMCTL_set_address_size, "u.address_size", plain);

abi_struct! {
    /// The same payload for `XEN_DOMCTL_get_address_size` (one Rust type per sub-op, since the
    /// sub-op comes from the type).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_domctl_address_size")
    pub struct XenDomctlGetAddressSize {
        /// Out: 32 or 64 (bits).
        pub size: u32,
    }
    size = 4;
}
payload!(domctl XenDomctlGetAddressSize, XEN_DOMCTL_get_address_size, "u.address_size", plain);

abi_struct! {
    /// Argument of `XEN_DOMCTL_hypercall_init` (`struct xen_domctl_hypercall_init`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_domctl_hypercall_init")
    pub struct XenDomctlHypercallInit {
        /// The guest frame to fill with hypercall trampolines.
        pub gmfn: u64,
    }
    size = 8;
}
payload!(domctl XenDomctlHypercallInit, XEN_DOMCTL_hypercall_init, "u.hypercall_init", plain);

abi_struct! {
    /// Argument of `XEN_DOMCTL_settscinfo` (`struct xen_domctl_tsc_info`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_domctl_tsc_info")
    pub struct XenDomctlTscInfo {
        /// `TSC_MODE_*`.
        pub tsc_mode: u32,
        /// Guest TSC frequency in kHz (0: the host's).
        pub gtsc_khz: u32,
        /// Migration incarnation (Xen stores one more than given).
        pub incarnation: u32,
        /// Zero.
        pub pad: u32,
        /// Guest time elapsed, in nanoseconds.
        pub elapsed_nsec: u64,
    }
    size = 24;
}
payload!(domctl XenDomctlTscInfo, XEN_DOMCTL_settscinfo, "u.tsc_info", plain);

abi_struct! {
    /// The same payload for `XEN_DOMCTL_gettscinfo`.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_domctl_tsc_info")
    pub struct XenDomctlGetTscInfo {
        /// `TSC_MODE_*`.
        pub tsc_mode: u32,
        /// Guest TSC frequency in kHz.
        pub gtsc_khz: u32,
        /// Migration incarnation.
        pub incarnation: u32,
        /// Zero.
        pub pad: u32,
        /// Guest time elapsed, in nanoseconds.
        pub elapsed_nsec: u64,
    }
    size = 24;
}
payload!(domctl XenDomctlGetTscInfo, XEN_DOMCTL_gettscinfo, "u.tsc_info", plain);

abi_struct! {
    /// One CPUID leaf of a serialised policy (`xen_cpuid_leaf_t`, `arch-x86/xen.h`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_cpuid_leaf")
    pub struct XenCpuidLeaf {
        /// The leaf (EAX in).
        pub leaf: u32,
        /// The subleaf (ECX in), or [`XEN_CPUID_NO_SUBLEAF`].
        pub subleaf: u32,
        /// EAX out.
        pub a: u32,
        /// EBX out.
        pub b: u32,
        /// ECX out.
        pub c: u32,
        /// EDX out.
        pub d: u32,
    }
    size = 24;
}

abi_struct! {
    /// One MSR of a serialised policy (`xen_msr_entry_t`, `arch-x86/xen.h`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_msr_entry")
    pub struct XenMsrEntry {
        /// The MSR's index.
        pub idx: u32,
        /// Zero (reserved).
        pub flags: u32,
        /// Its value.
        pub val: u64,
    }
    size = 16;
}

/// Declares a `cpu_policy` payload: leaf and MSR buffers and their counts.
macro_rules! cpu_policy_payload {
    ($(#[$m:meta])* $name:ident, $cmd:ident) => {
        abi_struct! {
            $(#[$m])*
            ///
            /// The counts are the lengths of the buffers the handles came from (in), or what
            /// Xen wrote or needs (out). Holds guest handles, so no zerocopy trait builds it
            /// from bytes; decode untrusted bytes with [`XenDomctlSetCpuPolicyView`]. A count
            /// cannot be set apart from its buffer:
            ///
            /// ```compile_fail,E0616
            /// use xenctrl::abi::*;
            /// let pool = xenctrl::BufferPool::anonymous();
            /// let mut leaves = pool.alloc_slice::<XenCpuidLeaf>(4).unwrap();
            /// let mut op = XenDomctlSetCpuPolicy::new(leaves.guest_handle(), None);
            /// op.nr_leaves = 1 << 20;
            /// ```
            #[derive(Debug, KnownLayout, Immutable)]
            c("struct xen_domctl_cpu_policy")
            pub struct $name<'h> {
                nr_leaves: u32,
                nr_msrs: u32,
                leaves: XenGuestHandle<'h, XenCpuidLeaf>,
                msrs: XenGuestHandle<'h, XenMsrEntry>,
                err_leaf: u32,
                err_subleaf: u32,
                err_msr: u32,
                pad: [u8; 4] => _,
            }
            size = 40;
        }
        payload!(domctl $name<'h>, $cmd, "u.cpu_policy", handles);
        pool_data!($name<'h>);

        impl<'h> $name<'h> {
            /// The whole pool buffers `leaves` and `msrs` (none: a count of 0 and a null
            /// handle).
            pub fn new(
                leaves: GuestHandle<'h, [XenCpuidLeaf]>,
                msrs: Option<GuestHandle<'h, [XenMsrEntry]>>,
            ) -> Self {
                let nr_msrs = msrs.as_ref().map_or(0, |m| m.len());
                Self {
                    nr_leaves: u32::try_from(leaves.len()).unwrap_or(u32::MAX),
                    nr_msrs: u32::try_from(nr_msrs).unwrap_or(u32::MAX),
                    leaves: leaves.into(),
                    msrs: msrs.map_or_else(XenGuestHandle::null, Into::into),
                    err_leaf: u32::MAX,
                    err_subleaf: u32::MAX,
                    err_msr: u32::MAX,
                    pad: [0; 4],
                }
            }

            /// A size query: null buffers, which Xen answers with the counts it may write.
            pub fn size_query() -> Self {
                Self {
                    nr_leaves: 0,
                    nr_msrs: 0,
                    leaves: XenGuestHandle::null(),
                    msrs: XenGuestHandle::null(),
                    err_leaf: u32::MAX,
                    err_subleaf: u32::MAX,
                    err_msr: u32::MAX,
                    pad: [0; 4],
                }
            }

            /// Leaves in the buffer (in), or written / needed (out).
            pub fn nr_leaves(&self) -> u32 {
                self.nr_leaves
            }

            /// MSRs in the buffer (in), or written / needed (out).
            pub fn nr_msrs(&self) -> u32 {
                self.nr_msrs
            }

            /// The leaf, subleaf and MSR Xen's audit objected to (`u32::MAX` for none), after
            /// a refused set.
            pub fn errors(&self) -> (u32, u32, u32) {
                (self.err_leaf, self.err_subleaf, self.err_msr)
            }
        }

        impl GuestRanges for $name<'_> {
            fn guest_ranges(&self, f: &mut dyn FnMut(u64, u64)) {
                self.leaves.report_range(u64::from(self.nr_leaves), f);
                self.msrs.report_range(u64::from(self.nr_msrs), f);
            }
        }
    };
}

cpu_policy_payload!(
    /// Argument of `XEN_DOMCTL_get_cpu_policy` (`struct xen_domctl_cpu_policy`).
    XenDomctlGetCpuPolicy,
    XEN_DOMCTL_get_cpu_policy
);
cpu_policy_payload!(
    /// Argument of `XEN_DOMCTL_set_cpu_policy` (`struct xen_domctl_cpu_policy`).
    XenDomctlSetCpuPolicy,
    XEN_DOMCTL_set_cpu_policy
);

abi_struct! {
    /// `struct xen_domctl_cpu_policy` with the handles as plain addresses, for decoding
    /// untrusted bytes. No entry point accepts it.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_domctl_cpu_policy")
    pub struct XenDomctlSetCpuPolicyView {
        /// Leaves in the buffer, or written / needed.
        pub nr_leaves: u32,
        /// MSRs in the buffer, or written / needed.
        pub nr_msrs: u32,
        /// The leaf buffer's address.
        pub leaves: u64,
        /// The MSR buffer's address.
        pub msrs: u64,
        /// The leaf the audit objected to.
        pub err_leaf: u32,
        /// Its subleaf.
        pub err_subleaf: u32,
        /// The MSR the audit objected to.
        pub err_msr: u32,
        /// Zero (C alignment padding).
        pub pad: [u8; 4] => _,
    }
    size = 40;
}

abi_struct! {
    /// Argument of `XEN_DOMCTL_set_paging_mempool_size` (`struct xen_domctl_paging_mempool`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_domctl_paging_mempool")
    pub struct XenDomctlPagingMempool {
        /// Size in bytes (a whole number of pages).
        pub size: u64,
    }
    size = 8;
}
payload!(domctl XenDomctlPagingMempool, XEN_DOMCTL_set_paging_mempool_size, "u.paging_mempool", plain);

abi_struct! {
    /// The same payload for `XEN_DOMCTL_get_paging_mempool_size`.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_domctl_paging_mempool")
    pub struct XenDomctlGetPagingMempool {
        /// Out: size in bytes.
        pub size: u64,
    }
    size = 8;
}
payload!(domctl XenDomctlGetPagingMempool, XEN_DOMCTL_get_paging_mempool_size, "u.paging_mempool", plain);

/// Declares a `vcpucontext` payload: the vCPU and a handle to one context in a pool buffer.
macro_rules! vcpucontext_payload {
    ($(#[$m:meta])* $name:ident, $cmd:ident) => {
        abi_struct! {
            $(#[$m])*
            ///
            /// Holds a guest handle, so no zerocopy trait builds it from bytes; decode untrusted
            /// bytes with [`XenDomctlSetVcpucontextView`].
            #[derive(Debug, KnownLayout, Immutable)]
            c("struct xen_domctl_vcpucontext")
            pub struct $name<'h> {
                vcpu: u32,
                pad: [u8; 4] => _,
                ctxt: XenGuestHandle<'h, VcpuGuestContext>,
            }
            size = 16;
        }
        payload!(domctl $name<'h>, $cmd, "u.vcpucontext", handles);
        pool_data!($name<'h>);

        impl<'h> $name<'h> {
            /// vCPU `vcpu`, with its context in the pool buffer `ctxt`.
            pub fn new(vcpu: u32, ctxt: GuestHandle<'h, VcpuGuestContext>) -> Self {
                Self { vcpu, pad: [0; 4], ctxt: ctxt.into() }
            }

            /// The vCPU.
            pub fn vcpu(&self) -> u32 {
                self.vcpu
            }

            /// The context's handle.
            pub fn ctxt(&self) -> &XenGuestHandle<'h, VcpuGuestContext> {
                &self.ctxt
            }
        }

        impl GuestRanges for $name<'_> {
            fn guest_ranges(&self, f: &mut dyn FnMut(u64, u64)) {
                self.ctxt.report_range(1, f);
            }
        }
    };
}

vcpucontext_payload!(
    /// Argument of `XEN_DOMCTL_setvcpucontext` (`struct xen_domctl_vcpucontext`).
    XenDomctlSetVcpucontext,
    XEN_DOMCTL_setvcpucontext
);
vcpucontext_payload!(
    /// Argument of `XEN_DOMCTL_getvcpucontext` (`struct xen_domctl_vcpucontext`).
    XenDomctlGetVcpucontext,
    XEN_DOMCTL_getvcpucontext
);

abi_struct! {
    /// `struct xen_domctl_vcpucontext` with the handle as a plain address, for decoding
    /// untrusted bytes. No entry point accepts it.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_domctl_vcpucontext")
    pub struct XenDomctlSetVcpucontextView {
        /// The vCPU.
        pub vcpu: u32,
        /// Zero (C alignment padding).
        pub pad: [u8; 4] => _,
        /// The context's address.
        pub ctxt: u64,
    }
    size = 16;
}

/// Declares an `hvmcontext` payload: a byte buffer and its size.
macro_rules! hvmcontext_payload {
    ($(#[$m:meta])* $name:ident, $cmd:ident) => {
        abi_struct! {
            $(#[$m])*
            ///
            /// `size` is the length of the buffer the handle came from. Holds a guest handle,
            /// so no zerocopy trait builds it from bytes; decode untrusted bytes with
            /// [`XenDomctlSetHvmcontextView`]. The size cannot be set apart from the buffer:
            ///
            /// ```compile_fail,E0616
            /// use xenctrl::abi::*;
            /// let pool = xenctrl::BufferPool::anonymous();
            /// let mut buf = pool.alloc_slice::<u8>(16).unwrap();
            /// let mut op = XenDomctlSetHvmcontext::new(buf.guest_handle());
            /// op.size = 1 << 20;
            /// ```
            #[derive(Debug, KnownLayout, Immutable)]
            c("struct xen_domctl_hvmcontext")
            pub struct $name<'h> {
                size: u32,
                pad: [u8; 4] => _,
                buffer: XenGuestHandle<'h, u8>,
            }
            size = 16;
        }
        payload!(domctl $name<'h>, $cmd, "u.hvmcontext", handles);
        pool_data!($name<'h>);

        impl<'h> $name<'h> {
            /// The whole pool buffer `buffer` (at most 4 GiB of it: `size` is 32 bits).
            pub fn new(buffer: GuestHandle<'h, [u8]>) -> Self {
                Self {
                    size: u32::try_from(buffer.len()).unwrap_or(u32::MAX),
                    pad: [0; 4],
                    buffer: buffer.into(),
                }
            }

            /// Bytes in the buffer (in), or filled / needed (out).
            pub fn size(&self) -> u32 {
                self.size
            }

            /// The buffer's handle (null for a size query).
            pub fn buffer(&self) -> &XenGuestHandle<'h, u8> {
                &self.buffer
            }
        }

        impl GuestRanges for $name<'_> {
            fn guest_ranges(&self, f: &mut dyn FnMut(u64, u64)) {
                self.buffer.report_range(u64::from(self.size), f);
            }
        }
    };
}

hvmcontext_payload!(
    /// Argument of `XEN_DOMCTL_gethvmcontext` (`struct xen_domctl_hvmcontext`).
    XenDomctlGetHvmcontext,
    XEN_DOMCTL_gethvmcontext
);
hvmcontext_payload!(
    /// Argument of `XEN_DOMCTL_sethvmcontext` (`struct xen_domctl_hvmcontext`).
    XenDomctlSetHvmcontext,
    XEN_DOMCTL_sethvmcontext
);

impl XenDomctlGetHvmcontext<'_> {
    /// A size query: a null buffer, which Xen answers with the size it needs.
    pub fn size_query() -> Self {
        Self {
            size: 0,
            pad: [0; 4],
            buffer: XenGuestHandle::null(),
        }
    }
}

abi_struct! {
    /// `struct xen_domctl_hvmcontext` with the handle as a plain address, for decoding
    /// untrusted bytes. No entry point accepts it.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_domctl_hvmcontext")
    pub struct XenDomctlSetHvmcontextView {
        /// Bytes in the buffer.
        pub size: u32,
        /// Zero (C alignment padding).
        pub pad: [u8; 4] => _,
        /// The buffer's address.
        pub buffer: u64,
    }
    size = 16;
}

abi_struct! {
    /// One `mmuext_op` (`struct mmuext_op`), as this crate issues them: pinning and unpinning
    /// page tables, whose second argument is unused.
    ///
    /// Other commands read a guest handle from `arg2` (`MMUEXT_TLB_FLUSH_MULTI`'s vCPU mask),
    /// so the fields are private and the only constructors are [`MmuextOp::pin`] and
    /// [`MmuextOp::unpin`]; no zerocopy trait builds one from bytes. Decode untrusted bytes
    /// with [`MmuextOpView`].
    ///
    /// ```compile_fail,E0451
    /// let _ = xenctrl::abi::MmuextOp { cmd: 8, pad: [0; 4], arg1: 1, arg2: 0xdead_0000 };
    /// ```
    ///
    /// ```compile_fail,E0599
    /// use zerocopy::TryFromBytes;
    /// let _ = xenctrl::abi::MmuextOp::try_read_from_bytes(&[0u8; 24]);
    /// ```
    #[derive(Debug, KnownLayout, Immutable)]
    c("struct mmuext_op")
    pub struct MmuextOp {
        cmd: u32,
        pad: [u8; 4] => _,
        arg1: u64 => "arg1.mfn",
        arg2: u64 => "arg2.src_mfn",
    }
    size = 24;
}
pool_data!(MmuextOp);

impl MmuextOp {
    /// Pin frame `mfn` (a PV guest's machine frame) as a page table of `level` 1 to 4
    /// (`MMUEXT_PIN_L{level}_TABLE`); `None` for another level.
    pub fn pin(level: u32, mfn: XenPfn) -> Option<Self> {
        let cmd = match level {
            1 => MMUEXT_PIN_L1_TABLE,
            2 => MMUEXT_PIN_L2_TABLE,
            3 => MMUEXT_PIN_L3_TABLE,
            4 => MMUEXT_PIN_L4_TABLE,
            _ => return None,
        };
        Some(Self {
            cmd,
            pad: [0; 4],
            arg1: mfn,
            arg2: 0,
        })
    }

    /// `MMUEXT_UNPIN_TABLE` of frame `mfn`.
    pub fn unpin(mfn: XenPfn) -> Self {
        Self {
            cmd: MMUEXT_UNPIN_TABLE,
            pad: [0; 4],
            arg1: mfn,
            arg2: 0,
        }
    }

    /// The command (`MMUEXT_*`).
    pub fn cmd(&self) -> u32 {
        self.cmd
    }

    /// The frame it acts on.
    pub fn mfn(&self) -> XenPfn {
        self.arg1
    }
}

abi_struct! {
    /// [`MmuextOp`] as plain integers, for decoding untrusted bytes. No entry point accepts it.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct mmuext_op")
    pub struct MmuextOpView {
        /// `MMUEXT_*`.
        pub cmd: u32,
        /// Zero (C alignment padding).
        pub pad: [u8; 4] => _,
        /// The frame (or linear address).
        pub arg1: u64 => "arg1.mfn",
        /// Count, source frame, or vCPU-mask address, by command.
        pub arg2: u64 => "arg2.src_mfn",
    }
    size = 24;
}

abi_struct! {
    /// One entry of an e820 memory map (libxc's packed `struct e820entry`, 20 bytes). Xen
    /// reads an array of them for `XENMEM_set_memory_map`.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct e820entry")
    pub struct E820Entry {
        /// Start address, little-endian (the entry is packed, so kept as bytes).
        addr: [u8; 8] => "addr",
        /// Length in bytes, little-endian.
        size: [u8; 8] => "size",
        /// `E820_*`, little-endian.
        kind: [u8; 4] => "type",
    }
    size = 20;
}

impl E820Entry {
    /// An entry of `size` bytes at `addr` of type `kind` (`E820_*`).
    pub fn new(addr: u64, size: u64, kind: u32) -> Self {
        Self {
            addr: addr.to_le_bytes(),
            size: size.to_le_bytes(),
            kind: kind.to_le_bytes(),
        }
    }

    /// Start address.
    pub fn addr(&self) -> u64 {
        u64::from_le_bytes(self.addr)
    }

    /// Length in bytes.
    pub fn size(&self) -> u64 {
        u64::from_le_bytes(self.size)
    }

    /// Type (`E820_*`).
    pub fn kind(&self) -> u32 {
        u32::from_le_bytes(self.kind)
    }
}

abi_struct! {
    /// Argument of `XENMEM_set_memory_map` (`struct xen_foreign_memory_map`): a domain and its
    /// e820 map in a pool buffer, whose length is the entry count Xen trusts.
    ///
    /// Holds a guest handle, so no zerocopy trait builds it from bytes; decode untrusted bytes
    /// with [`XenForeignMemoryMapView`].
    #[derive(Debug, KnownLayout, Immutable)]
    c("struct xen_foreign_memory_map")
    pub struct XenForeignMemoryMap<'h> {
        domid: DomId,
        pad: [u8; 6] => _,
        nr_entries: u32 => "map.nr_entries",
        pad2: [u8; 4] => _,
        buffer: XenGuestHandle<'h, E820Entry> => "map.buffer",
    }
    size = 24;
}
pool_data!(XenForeignMemoryMap<'h>);

impl<'h> XenForeignMemoryMap<'h> {
    /// Domain `domid`'s map, every entry of the pool buffer `entries`.
    pub fn new(domid: DomId, entries: GuestHandle<'h, [E820Entry]>) -> Self {
        Self {
            domid,
            pad: [0; 6],
            nr_entries: u32::try_from(entries.len()).unwrap_or(u32::MAX),
            pad2: [0; 4],
            buffer: entries.into(),
        }
    }

    /// The domain.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// Entries in the map.
    pub fn nr_entries(&self) -> u32 {
        self.nr_entries
    }
}

impl GuestRanges for XenForeignMemoryMap<'_> {
    fn guest_ranges(&self, f: &mut dyn FnMut(u64, u64)) {
        self.buffer.report_range(u64::from(self.nr_entries), f);
    }
}

abi_struct! {
    /// [`XenForeignMemoryMap`] with the handle as a plain address, for decoding untrusted
    /// bytes. No entry point accepts it.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_foreign_memory_map")
    pub struct XenForeignMemoryMapView {
        /// The domain.
        pub domid: DomId,
        /// Zero (C alignment padding).
        pub pad: [u8; 6] => _,
        /// Entries in the map.
        pub nr_entries: u32 => "map.nr_entries",
        /// Zero (C alignment padding).
        pub pad2: [u8; 4] => _,
        /// The entries' address.
        pub buffer: u64 => "map.buffer",
    }
    size = 24;
}
