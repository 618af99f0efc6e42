//! The `domctl` sub-ops this crate uses (`domctl.h`, and `xen_arch_domainconfig` from
//! `arch-x86/xen.h`, and the shutdown codes from `sched.h`).
//!
//! Each payload is wrapped in [`XenDomctl`](super::XenDomctl) to make the hypercall argument.

#![allow(non_upper_case_globals)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::envelope::payload;
use super::layout::{abi_consts, abi_struct};
use super::xen::{DomId, XenDomainHandle};

abi_consts! {
    /// The constants of this module, for the conformance test.
    table consts;

    /// The domctl interface version of Xen 4.17 (the layout of this module).
    XEN_DOMCTL_INTERFACE_VERSION: u32 = 0x15;

    /// Create a domain ([`XenDomctlCreatedomain`]).
    XEN_DOMCTL_createdomain: u32 = 1;
    /// Destroy a domain ([`XenDomctlDestroydomain`]).
    XEN_DOMCTL_destroydomain: u32 = 2;
    /// Pause a domain ([`XenDomctlPausedomain`]).
    XEN_DOMCTL_pausedomain: u32 = 3;
    /// Unpause a domain ([`XenDomctlUnpausedomain`]).
    XEN_DOMCTL_unpausedomain: u32 = 4;
    /// Read a domain's state ([`XenDomctlGetdomaininfo`]).
    XEN_DOMCTL_getdomaininfo: u32 = 5;
    /// Set a domain's memory limit ([`XenDomctlMaxMem`]).
    XEN_DOMCTL_max_mem: u32 = 11;
    /// Set a domain's vCPU count ([`XenDomctlMaxVcpus`]).
    XEN_DOMCTL_max_vcpus: u32 = 15;

    /// `createdomain` flag: an HVM guest rather than PV.
    XEN_DOMCTL_CDF_hvm: u32 = 1 << 0;
    /// `createdomain` flag: use hardware-assisted paging.
    XEN_DOMCTL_CDF_hap: u32 = 1 << 1;
    /// `createdomain` flag: tboot verifies the domain's memory across S3.
    XEN_DOMCTL_CDF_s3_integrity: u32 = 1 << 2;
    /// `createdomain` flag: no out-of-sync shadow page tables.
    XEN_DOMCTL_CDF_oos_off: u32 = 1 << 3;
    /// `createdomain` flag: the domain runs xenstored.
    XEN_DOMCTL_CDF_xs_domain: u32 = 1 << 4;
    /// `createdomain` flag: the domain may use the IOMMU.
    XEN_DOMCTL_CDF_iommu: u32 = 1 << 5;
    /// `createdomain` flag: nested virtualisation.
    XEN_DOMCTL_CDF_nested_virt: u32 = 1 << 6;
    /// `createdomain` flag: expose the virtual PMU.
    XEN_DOMCTL_CDF_vpmu: u32 = 1 << 7;
    /// The highest `createdomain` flag this interface version knows.
    XEN_DOMCTL_CDF_MAX: u32 = 1 << 7;

    /// `iommu_opts`: do not share page tables between the IOMMU and the CPU.
    XEN_DOMCTL_IOMMU_no_sharept: u32 = 1 << 0;
    /// The highest `iommu_opts` flag.
    XEN_DOMCTL_IOMMU_MAX: u32 = 1 << 0;
    /// `grant_opts`: the bits that hold the maximum grant-table version.
    XEN_DOMCTL_GRANT_version_mask: u32 = 0xf;

    /// `getdomaininfo` flag: the domain is dying.
    XEN_DOMINF_dying: u32 = 1 << 0;
    /// `getdomaininfo` flag: an HVM guest.
    XEN_DOMINF_hvm_guest: u32 = 1 << 1;
    /// `getdomaininfo` flag: the guest has shut down (reason in the shutdown bits).
    XEN_DOMINF_shutdown: u32 = 1 << 2;
    /// `getdomaininfo` flag: paused by the toolstack.
    XEN_DOMINF_paused: u32 = 1 << 3;
    /// `getdomaininfo` flag: blocked waiting for an event.
    XEN_DOMINF_blocked: u32 = 1 << 4;
    /// `getdomaininfo` flag: running on a CPU.
    XEN_DOMINF_running: u32 = 1 << 5;
    /// `getdomaininfo` flag: being debugged.
    XEN_DOMINF_debugged: u32 = 1 << 6;
    /// `getdomaininfo` flag: a xenstore domain.
    XEN_DOMINF_xs_domain: u32 = 1 << 7;
    /// `getdomaininfo` flag: uses hardware-assisted paging.
    XEN_DOMINF_hap: u32 = 1 << 8;
    /// Mask of the shutdown code once shifted down.
    XEN_DOMINF_shutdownmask: u32 = 255;
    /// Position of the shutdown code in `flags`.
    XEN_DOMINF_shutdownshift: u32 = 16;
    /// `max_vcpu_id` of a domain without vCPUs.
    XEN_INVALID_MAX_VCPU_ID: u32 = !0;

    /// x86 emulation: local APIC.
    XEN_X86_EMU_LAPIC: u32 = 1 << 0;
    /// x86 emulation: HPET.
    XEN_X86_EMU_HPET: u32 = 1 << 1;
    /// x86 emulation: ACPI PM timer and control.
    XEN_X86_EMU_PM: u32 = 1 << 2;
    /// x86 emulation: RTC.
    XEN_X86_EMU_RTC: u32 = 1 << 3;
    /// x86 emulation: IO-APIC.
    XEN_X86_EMU_IOAPIC: u32 = 1 << 4;
    /// x86 emulation: legacy PIC.
    XEN_X86_EMU_PIC: u32 = 1 << 5;
    /// x86 emulation: standard VGA.
    XEN_X86_EMU_VGA: u32 = 1 << 6;
    /// x86 emulation: IOMMU.
    XEN_X86_EMU_IOMMU: u32 = 1 << 7;
    /// x86 emulation: PIT.
    XEN_X86_EMU_PIT: u32 = 1 << 8;
    /// x86 emulation: event-channel routed PIRQs.
    XEN_X86_EMU_USE_PIRQ: u32 = 1 << 9;
    /// x86 emulation: virtual PCI.
    XEN_X86_EMU_VPCI: u32 = 1 << 10;
    /// Every x86 emulation flag.
    XEN_X86_EMU_ALL: u32 = (1 << 11) - 1;
    /// x86 misc flag: unhandled MSR accesses read 0 / are dropped instead of faulting.
    XEN_X86_MSR_RELAXED: u32 = 1 << 0;
    /// The highest x86 misc flag.
    XEN_X86_MISC_FLAGS_MAX: u32 = 1 << 0;

    /// Shutdown code: powered off.
    SHUTDOWN_poweroff: u32 = 0;
    /// Shutdown code: reboot requested.
    SHUTDOWN_reboot: u32 = 1;
    /// Shutdown code: suspended (for save or migration).
    SHUTDOWN_suspend: u32 = 2;
    /// Shutdown code: crashed.
    SHUTDOWN_crash: u32 = 3;
    /// Shutdown code: watchdog fired.
    SHUTDOWN_watchdog: u32 = 4;
    /// Shutdown code: soft reset requested.
    SHUTDOWN_soft_reset: u32 = 5;
    /// The highest shutdown code this interface knows.
    SHUTDOWN_MAX: u32 = 5;
}

/// A guest's shutdown code as Xen reports it. Unknown codes stay representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShutdownReason(pub u32);

impl ShutdownReason {
    /// Powered off.
    pub const POWEROFF: Self = Self(SHUTDOWN_poweroff);
    /// Reboot requested.
    pub const REBOOT: Self = Self(SHUTDOWN_reboot);
    /// Suspended.
    pub const SUSPEND: Self = Self(SHUTDOWN_suspend);
    /// Crashed.
    pub const CRASH: Self = Self(SHUTDOWN_crash);
    /// Watchdog fired.
    pub const WATCHDOG: Self = Self(SHUTDOWN_watchdog);
    /// Soft reset requested.
    pub const SOFT_RESET: Self = Self(SHUTDOWN_soft_reset);
}

abi_struct! {
    /// x86 domain configuration (`struct xen_arch_domainconfig`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_arch_domainconfig")
    pub struct XenArchDomainconfig {
        /// `XEN_X86_EMU_*`: the devices Xen emulates (HVM: usually all but VPCI; PV: none).
        pub emulation_flags: u32,
        /// `XEN_X86_MSR_RELAXED` and future flags.
        pub misc_flags: u32,
    }
    size = 8;
}

abi_struct! {
    /// Argument of `XEN_DOMCTL_createdomain` (`struct xen_domctl_createdomain`). The envelope's
    /// `domain` is in and out: 0 (or any reserved id) asks Xen to choose one.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_domctl_createdomain")
    pub struct XenDomctlCreatedomain {
        /// XSM security label.
        pub ssidref: u32,
        /// The new domain's handle (UUID).
        pub handle: XenDomainHandle,
        /// `XEN_DOMCTL_CDF_*`.
        pub flags: u32,
        /// `XEN_DOMCTL_IOMMU_*`.
        pub iommu_opts: u32,
        /// Number of vCPUs.
        pub max_vcpus: u32,
        /// Highest event-channel port the domain may use.
        pub max_evtchn_port: u32,
        /// Grant-table frames (negative: Xen's default).
        pub max_grant_frames: i32,
        /// Maptrack frames (negative: Xen's default).
        pub max_maptrack_frames: i32,
        /// Maximum grant-table version in the low 4 bits.
        pub grant_opts: u32,
        /// Per-vCPU processor-trace buffer size in bytes (0: none).
        pub vmtrace_size: u32,
        /// CPU pool (0: the default pool).
        pub cpupool_id: u32,
        /// Architecture configuration.
        pub arch: XenArchDomainconfig,
    }
    size = 64;
}
payload!(domctl XenDomctlCreatedomain, XEN_DOMCTL_createdomain, "u.createdomain", plain);

abi_struct! {
    /// Result of `XEN_DOMCTL_getdomaininfo`, and an element of the `getdomaininfolist` array
    /// (`struct xen_domctl_getdomaininfo`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_domctl_getdomaininfo")
    pub struct XenDomctlGetdomaininfo {
        /// The domain described.
        pub domain: DomId,
        /// Zero.
        pub pad1: u16,
        /// `XEN_DOMINF_*` and the shutdown code.
        pub flags: u32,
        /// Pages allocated to the domain.
        pub tot_pages: u64,
        /// The domain's page limit.
        pub max_pages: u64,
        /// Pages still claimed but not yet allocated.
        pub outstanding_pages: u64,
        /// Shared pages.
        pub shr_pages: u64,
        /// Paged-out pages.
        pub paged_pages: u64,
        /// Frame of the shared-info page.
        pub shared_info_frame: u64,
        /// CPU time used, in nanoseconds.
        pub cpu_time: u64,
        /// vCPUs online.
        pub nr_online_vcpus: u32,
        /// Highest vCPU id in use, or `XEN_INVALID_MAX_VCPU_ID`.
        pub max_vcpu_id: u32,
        /// XSM security label.
        pub ssidref: u32,
        /// The domain's handle (UUID).
        pub handle: XenDomainHandle,
        /// The CPU pool the domain runs in.
        pub cpupool: u32,
        /// Guest physical address width.
        pub gpaddr_bits: u8,
        /// Zero.
        pub pad2: [u8; 7],
        /// The architecture configuration the domain was created with.
        pub arch_config: XenArchDomainconfig,
    }
    size = 112;
}
payload!(domctl XenDomctlGetdomaininfo, XEN_DOMCTL_getdomaininfo, "u.getdomaininfo", plain);

impl XenDomctlGetdomaininfo {
    /// Whether `flag` (a `XEN_DOMINF_*` bit) is set.
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// The shutdown code, if the guest has shut down.
    pub fn shutdown_reason(&self) -> Option<ShutdownReason> {
        self.has(XEN_DOMINF_shutdown).then_some(ShutdownReason(
            (self.flags >> XEN_DOMINF_shutdownshift) & XEN_DOMINF_shutdownmask,
        ))
    }
}

abi_struct! {
    /// Argument of `XEN_DOMCTL_max_mem` (`struct xen_domctl_max_mem`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_domctl_max_mem")
    pub struct XenDomctlMaxMem {
        /// The new limit in KiB.
        pub max_memkb: u64,
    }
    size = 8;
}
payload!(domctl XenDomctlMaxMem, XEN_DOMCTL_max_mem, "u.max_mem", plain);

abi_struct! {
    /// Argument of `XEN_DOMCTL_max_vcpus` (`struct xen_domctl_max_vcpus`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_domctl_max_vcpus")
    pub struct XenDomctlMaxVcpus {
        /// Number of vCPUs.
        pub max: u32,
    }
    size = 4;
}
payload!(domctl XenDomctlMaxVcpus, XEN_DOMCTL_max_vcpus, "u.max_vcpus", plain);

abi_struct! {
    /// `XEN_DOMCTL_destroydomain` takes no argument; this empty payload selects the sub-op.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c(none)
    pub struct XenDomctlDestroydomain {}
    size = 0;
}
payload!(domctl XenDomctlDestroydomain, XEN_DOMCTL_destroydomain, _, plain);

abi_struct! {
    /// `XEN_DOMCTL_pausedomain` takes no argument; this empty payload selects the sub-op.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c(none)
    pub struct XenDomctlPausedomain {}
    size = 0;
}
payload!(domctl XenDomctlPausedomain, XEN_DOMCTL_pausedomain, _, plain);

abi_struct! {
    /// `XEN_DOMCTL_unpausedomain` takes no argument; this empty payload selects the sub-op.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c(none)
    pub struct XenDomctlUnpausedomain {}
    size = 0;
}
payload!(domctl XenDomctlUnpausedomain, XEN_DOMCTL_unpausedomain, _, plain);
