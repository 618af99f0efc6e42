//! The x86-64 vCPU state a PV domain builder hands Xen: `struct vcpu_guest_context` with its
//! `struct cpu_user_regs` and `struct trap_info` (`arch-x86/xen.h`, `arch-x86/xen-x86_64.h`, as
//! a 64-bit tool sees them). The same layout in every Xen from 4.17 to 4.22.
//!
//! `XEN_DOMCTL_setvcpucontext` / `getvcpucontext` carry a guest handle to one of these, so it
//! lives in a pool buffer: see
//! [`XenDomctlSetVcpucontext`](super::XenDomctlSetVcpucontext).

#![allow(non_upper_case_globals)]

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use super::layout::{abi_consts, abi_struct};

abi_consts! {
    /// The constants of this module, for the conformance test.
    table consts;

    /// `flags`: the FPU state in `fpu_ctxt` is valid.
    VGCF_i387_valid: u64 = 1 << 0;
    /// `flags`: the vCPU starts in guest kernel mode (a PV kernel always does).
    VGCF_in_kernel: u64 = 1 << 2;
    /// `flags`: the failsafe callback masks events.
    VGCF_failsafe_disables_events: u64 = 1 << 3;
    /// `flags`: the syscall callback masks events.
    VGCF_syscall_disables_events: u64 = 1 << 4;
    /// `flags`: the vCPU is online (runs once the domain is unpaused).
    VGCF_online: u64 = 1 << 5;

    /// The flat 64-bit kernel code selector of a PV guest (RPL 3).
    FLAT_KERNEL_CS64: u16 = 0xe033;
    /// The flat 64-bit kernel stack selector of a PV guest (RPL 3).
    FLAT_KERNEL_SS64: u16 = 0xe02b;
}

abi_struct! {
    /// The general registers of an x86-64 vCPU (`struct cpu_user_regs`, 64-bit layout).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct cpu_user_regs")
    pub struct CpuUserRegs {
        /// r15.
        pub r15: u64,
        /// r14.
        pub r14: u64,
        /// r13.
        pub r13: u64,
        /// r12.
        pub r12: u64,
        /// rbp.
        pub rbp: u64,
        /// rbx.
        pub rbx: u64,
        /// r11.
        pub r11: u64,
        /// r10.
        pub r10: u64,
        /// r9.
        pub r9: u64,
        /// r8.
        pub r8: u64,
        /// rax.
        pub rax: u64,
        /// rcx.
        pub rcx: u64,
        /// rdx.
        pub rdx: u64,
        /// rsi (a PV kernel finds its `start_info` here at entry).
        pub rsi: u64,
        /// rdi.
        pub rdi: u64,
        /// Xen-private.
        pub error_code: u32,
        /// Xen-private.
        pub entry_vector: u32,
        /// rip.
        pub rip: u64,
        /// Code selector.
        pub cs: u16,
        /// Zero.
        pub pad0: u16 => "_pad0",
        /// Event mask saved across a callback.
        pub saved_upcall_mask: u8,
        /// Zero.
        pub pad1: [u8; 3] => "_pad1",
        /// rflags (`IF` is the inverse of the upcall mask).
        pub rflags: u64,
        /// rsp.
        pub rsp: u64,
        /// Stack selector.
        pub ss: u16,
        /// Zero.
        pub pad2: [u16; 3] => "_pad2",
        /// es.
        pub es: u16,
        /// Zero.
        pub pad3: [u16; 3] => "_pad3",
        /// ds.
        pub ds: u16,
        /// Zero.
        pub pad4: [u16; 3] => "_pad4",
        /// fs.
        pub fs: u16,
        /// Zero.
        pub pad5: [u16; 3] => "_pad5",
        /// gs.
        pub gs: u16,
        /// Zero.
        pub pad6: [u16; 3] => "_pad6",
    }
    size = 200;
}

abi_struct! {
    /// One entry of a PV guest's virtual IDT (`struct trap_info`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct trap_info")
    pub struct TrapInfo {
        /// Exception vector.
        pub vector: u8,
        /// Bits 0-3: privilege level; bit 4: clear the event-enable flag.
        pub flags: u8,
        /// Code selector.
        pub cs: u16,
        /// Zero (C alignment padding).
        pub pad: [u8; 4] => _,
        /// Handler address.
        pub address: u64,
    }
    size = 16;
}

abi_struct! {
    /// The state of one x86-64 vCPU (`struct vcpu_guest_context`, 5168 bytes), as
    /// `XEN_DOMCTL_setvcpucontext` takes it and `XEN_DOMCTL_getvcpucontext` returns it.
    ///
    /// Plain integers, so any bytes are a valid value; it holds no guest handle. Start from
    /// [`VcpuGuestContext::zeroed`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct vcpu_guest_context")
    pub struct VcpuGuestContext {
        /// FXSAVE image of the FPU registers.
        pub fpu_ctxt: [u8; 512],
        /// `VGCF_*`.
        pub flags: u64,
        /// General registers.
        pub user_regs: CpuUserRegs,
        /// The virtual IDT.
        pub trap_ctxt: [TrapInfo; 256],
        /// LDT linear address.
        pub ldt_base: u64,
        /// LDT entries.
        pub ldt_ents: u64,
        /// GDT machine frames.
        pub gdt_frames: [u64; 16],
        /// GDT entries.
        pub gdt_ents: u64,
        /// Kernel stack selector (virtual TSS SS1).
        pub kernel_ss: u64,
        /// Kernel stack pointer (virtual TSS SP1).
        pub kernel_sp: u64,
        /// CR0-CR7; CR3 holds the top-level page table's frame shifted by 12.
        pub ctrlreg: [u64; 8],
        /// DR0-DR7.
        pub debugreg: [u64; 8],
        /// Event callback address.
        pub event_callback_eip: u64,
        /// Failsafe callback address.
        pub failsafe_callback_eip: u64,
        /// Syscall callback address.
        pub syscall_callback_eip: u64,
        /// `VMASST_TYPE_*` bitmap.
        pub vm_assist: u64,
        /// FS base.
        pub fs_base: u64,
        /// Kernel GS base.
        pub gs_base_kernel: u64,
        /// User GS base.
        pub gs_base_user: u64,
    }
    size = 5168;
}

impl VcpuGuestContext {
    /// All zeroes.
    pub fn zeroed() -> Self {
        Self::new_zeroed()
    }

    /// `xen_pfn_to_cr3`: CR3 for a top-level page table at machine (PV) frame `pfn`.
    pub const fn pfn_to_cr3(pfn: u64) -> u64 {
        pfn << 12
    }

    /// `xen_cr3_to_pfn`: the frame a CR3 value names.
    pub const fn cr3_to_pfn(cr3: u64) -> u64 {
        cr3 >> 12
    }
}

impl Default for VcpuGuestContext {
    fn default() -> Self {
        Self::zeroed()
    }
}
