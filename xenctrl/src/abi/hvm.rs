//! HVM (and PVH) domains: `hvm_op` parameters (`hvm/hvm_op.h`, `hvm/params.h`) and the
//! records of an HVM context blob (`hvm/save.h`, `arch-x86/hvm/save.h`). Unchanged from Xen 4.17
//! to 4.22.
//!
//! A context blob is a sequence of records, each an [`HvmSaveDescriptor`] followed by
//! `length` bytes, starting with a HEADER and ending with an END record of length 0.
//! [`crate::hvm_context`] encodes and decodes them.

#![allow(non_upper_case_globals)]

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use super::layout::{abi_consts, abi_struct};
use super::xen::DomId;

abi_consts! {
    /// The constants of this module, for the conformance test.
    table consts;

    /// `hvm_op`: set a parameter ([`XenHvmParam`]).
    HVMOP_set_param: u64 = 0;
    /// `hvm_op`: read a parameter ([`XenHvmParam`]).
    HVMOP_get_param: u64 = 1;

    /// Parameter: how the guest's event callback is delivered.
    HVM_PARAM_CALLBACK_IRQ: u32 = 0;
    /// Parameter: guest frame of the xenstore ring.
    HVM_PARAM_STORE_PFN: u32 = 1;
    /// Parameter: event channel of the xenstore ring.
    HVM_PARAM_STORE_EVTCHN: u32 = 2;
    /// Parameter: PAE enabled (obsolete; refused).
    HVM_PARAM_PAE_ENABLED: u32 = 4;
    /// Parameter: guest frame of the legacy ioreq page.
    HVM_PARAM_IOREQ_PFN: u32 = 5;
    /// Parameter: guest frame of the legacy buffered ioreq page.
    HVM_PARAM_BUFIOREQ_PFN: u32 = 6;
    /// Parameter: Viridian (Hyper-V) enlightenments.
    HVM_PARAM_VIRIDIAN: u32 = 9;
    /// Parameter: timer mode (`HVMPTM_*`).
    HVM_PARAM_TIMER_MODE: u32 = 10;
    /// Parameter: HPET enabled.
    HVM_PARAM_HPET_ENABLED: u32 = 11;
    /// Parameter: identity-map page table (VT-x without unrestricted guest).
    HVM_PARAM_IDENT_PT: u32 = 12;
    /// Parameter: the device model's domain (refused).
    HVM_PARAM_DM_DOMAIN: u32 = 13;
    /// Parameter: ACPI S state (0 or 3).
    HVM_PARAM_ACPI_S_STATE: u32 = 14;
    /// Parameter: VM86 TSS address.
    HVM_PARAM_VM86_TSS: u32 = 15;
    /// Parameter: timer alignment.
    HVM_PARAM_VPT_ALIGN: u32 = 16;
    /// Parameter: guest frame of the console ring.
    HVM_PARAM_CONSOLE_PFN: u32 = 17;
    /// Parameter: event channel of the console ring.
    HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;
    /// Parameter: location of the ACPI PM I/O ports.
    HVM_PARAM_ACPI_IOPORTS_LOCATION: u32 = 19;
    /// Parameter: nested HVM (refused through `hvm_op`).
    HVM_PARAM_NESTEDHVM: u32 = 24;
    /// Parameter: what a triple fault does (`SHUTDOWN_*`).
    HVM_PARAM_TRIPLE_FAULT_REASON: u32 = 31;
    /// Parameter: first ioreq server frame.
    HVM_PARAM_IOREQ_SERVER_PFN: u32 = 32;
    /// Parameter: number of ioreq server frames.
    HVM_PARAM_NR_IOREQ_SERVER_PAGES: u32 = 33;
    /// Parameter: address of the VM generation id.
    HVM_PARAM_VM_GENERATION_ID_ADDR: u32 = 34;
    /// Parameter: alternate p2m mode (`XEN_ALTP2M_*`).
    HVM_PARAM_ALTP2M: u32 = 35;
    /// Parameter: x87 FIP width (0, 4 or 8).
    HVM_PARAM_X87_FIP_WIDTH: u32 = 36;
    /// Parameter: VM86 TSS address and size.
    HVM_PARAM_VM86_TSS_SIZED: u32 = 37;
    /// Parameter: MCA capabilities.
    HVM_PARAM_MCA_CAP: u32 = 38;
    /// Number of parameters: indices at or above are `EINVAL`.
    HVM_NR_PARAMS: u32 = 39;

    /// Timer mode: delay for missed ticks.
    HVMPTM_delay_for_missed_ticks: u64 = 0;
    /// Timer mode: no delay for missed ticks (what libxl sets).
    HVMPTM_no_delay_for_missed_ticks: u64 = 1;
    /// Timer mode: no missed ticks pending.
    HVMPTM_no_missed_ticks_pending: u64 = 2;
    /// Timer mode: one missed tick pending.
    HVMPTM_one_missed_tick_pending: u64 = 3;

    /// altp2m: disabled.
    XEN_ALTP2M_disabled: u64 = 0;
    /// altp2m: mixed.
    XEN_ALTP2M_mixed: u64 = 1;
    /// altp2m: external.
    XEN_ALTP2M_external: u64 = 2;
    /// altp2m: limited.
    XEN_ALTP2M_limited: u64 = 3;

    /// The HEADER record's magic.
    HVM_FILE_MAGIC: u32 = 0x5438_1286;
    /// The HEADER record's version.
    HVM_FILE_VERSION: u32 = 1;
    /// The highest record type code.
    HVM_SAVE_CODE_MAX: u16 = 20;
}

abi_struct! {
    /// Argument of `HVMOP_set_param` / `HVMOP_get_param` (`struct xen_hvm_param`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_hvm_param")
    pub struct XenHvmParam {
        /// The domain.
        pub domid: DomId,
        /// Zero.
        pub pad: u16,
        /// `HVM_PARAM_*`.
        pub index: u32,
        /// The value (out for `get_param`).
        pub value: u64,
    }
    size = 16;
}

abi_struct! {
    /// The header in front of every record of an HVM context (`struct hvm_save_descriptor`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct hvm_save_descriptor")
    pub struct HvmSaveDescriptor {
        /// Record type (`HVM_SAVE_CODE_*`).
        pub typecode: u16,
        /// Instance (the vCPU for per-vCPU records).
        pub instance: u16,
        /// Bytes after this descriptor.
        pub length: u32,
    }
    size = 8;
}

abi_struct! {
    /// The HEADER record (`struct hvm_save_header`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct hvm_save_header")
    pub struct HvmSaveHeader {
        /// `HVM_FILE_MAGIC`.
        pub magic: u32,
        /// `HVM_FILE_VERSION`.
        pub version: u32,
        /// The Xen changeset that saved it.
        pub changeset: u64,
        /// CPUID leaf 1 EAX of the saving host.
        pub cpuid: u32,
        /// Guest TSC frequency in kHz.
        pub gtsc_khz: u32,
    }
    size = 24;
}

abi_struct! {
    /// The CPU record: one vCPU's architectural state (`struct hvm_hw_cpu`, 1032 bytes).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct hvm_hw_cpu")
    pub struct HvmHwCpu {
        /// FXSAVE image.
        pub fpu_regs: [u8; 512],
        /// rax.
        pub rax: u64,
        /// rbx (a PVH kernel finds its `hvm_start_info` here at entry).
        pub rbx: u64,
        /// rcx.
        pub rcx: u64,
        /// rdx.
        pub rdx: u64,
        /// rbp.
        pub rbp: u64,
        /// rsi.
        pub rsi: u64,
        /// rdi.
        pub rdi: u64,
        /// rsp.
        pub rsp: u64,
        /// r8.
        pub r8: u64,
        /// r9.
        pub r9: u64,
        /// r10.
        pub r10: u64,
        /// r11.
        pub r11: u64,
        /// r12.
        pub r12: u64,
        /// r13.
        pub r13: u64,
        /// r14.
        pub r14: u64,
        /// r15.
        pub r15: u64,
        /// rip.
        pub rip: u64,
        /// rflags.
        pub rflags: u64,
        /// cr0.
        pub cr0: u64,
        /// cr2.
        pub cr2: u64,
        /// cr3.
        pub cr3: u64,
        /// cr4.
        pub cr4: u64,
        /// dr0.
        pub dr0: u64,
        /// dr1.
        pub dr1: u64,
        /// dr2.
        pub dr2: u64,
        /// dr3.
        pub dr3: u64,
        /// dr6.
        pub dr6: u64,
        /// dr7.
        pub dr7: u64,
        /// cs selector.
        pub cs_sel: u32,
        /// ds selector.
        pub ds_sel: u32,
        /// es selector.
        pub es_sel: u32,
        /// fs selector.
        pub fs_sel: u32,
        /// gs selector.
        pub gs_sel: u32,
        /// ss selector.
        pub ss_sel: u32,
        /// tr selector.
        pub tr_sel: u32,
        /// ldtr selector.
        pub ldtr_sel: u32,
        /// cs limit.
        pub cs_limit: u32,
        /// ds limit.
        pub ds_limit: u32,
        /// es limit.
        pub es_limit: u32,
        /// fs limit.
        pub fs_limit: u32,
        /// gs limit.
        pub gs_limit: u32,
        /// ss limit.
        pub ss_limit: u32,
        /// tr limit.
        pub tr_limit: u32,
        /// ldtr limit.
        pub ldtr_limit: u32,
        /// idtr limit.
        pub idtr_limit: u32,
        /// gdtr limit.
        pub gdtr_limit: u32,
        /// cs base.
        pub cs_base: u64,
        /// ds base.
        pub ds_base: u64,
        /// es base.
        pub es_base: u64,
        /// fs base.
        pub fs_base: u64,
        /// gs base.
        pub gs_base: u64,
        /// ss base.
        pub ss_base: u64,
        /// tr base.
        pub tr_base: u64,
        /// ldtr base.
        pub ldtr_base: u64,
        /// idtr base.
        pub idtr_base: u64,
        /// gdtr base.
        pub gdtr_base: u64,
        /// cs access rights (VMX layout).
        pub cs_arbytes: u32,
        /// ds access rights.
        pub ds_arbytes: u32,
        /// es access rights.
        pub es_arbytes: u32,
        /// fs access rights.
        pub fs_arbytes: u32,
        /// gs access rights.
        pub gs_arbytes: u32,
        /// ss access rights.
        pub ss_arbytes: u32,
        /// tr access rights.
        pub tr_arbytes: u32,
        /// ldtr access rights.
        pub ldtr_arbytes: u32,
        /// SYSENTER_CS.
        pub sysenter_cs: u64,
        /// SYSENTER_ESP.
        pub sysenter_esp: u64,
        /// SYSENTER_EIP.
        pub sysenter_eip: u64,
        /// Kernel GS base (swapgs).
        pub shadow_gs: u64,
        /// Obsolete, ignored.
        pub msr_flags: u64,
        /// LSTAR.
        pub msr_lstar: u64,
        /// STAR.
        pub msr_star: u64,
        /// CSTAR.
        pub msr_cstar: u64,
        /// SYSCALL_MASK.
        pub msr_syscall_mask: u64,
        /// EFER.
        pub msr_efer: u64,
        /// TSC_AUX.
        pub msr_tsc_aux: u64,
        /// TSC.
        pub tsc: u64,
        /// A pending event (vector, type, error-valid and valid bits).
        pub pending_event: u32,
        /// Its error code.
        pub error_code: u32,
        /// `XEN_X86_FPU_INITIALISED`.
        pub flags: u32,
        /// Zero.
        pub pad0: u32,
    }
    size = 1032;
}

impl HvmHwCpu {
    /// All zeroes.
    pub fn zeroed() -> Self {
        Self::new_zeroed()
    }
}

impl Default for HvmHwCpu {
    fn default() -> Self {
        Self::zeroed()
    }
}

abi_struct! {
    /// The MTRR record: one vCPU's PAT and MTRR MSRs (`struct hvm_hw_mtrr`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct hvm_hw_mtrr")
    pub struct HvmHwMtrr {
        /// IA32_PAT.
        pub msr_pat_cr: u64,
        /// Variable-range base/mask pairs.
        pub msr_mtrr_var: [u64; 16],
        /// Fixed-range MTRRs.
        pub msr_mtrr_fixed: [u64; 11],
        /// MTRRcap.
        pub msr_mtrr_cap: u64,
        /// MTRRdefType (bit 11 enables MTRRs, the low byte is the default type: 6 write-back).
        pub msr_mtrr_def_type: u64,
    }
    size = 240;
}
