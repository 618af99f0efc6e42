//! What a domain builder sets on a simulated domain, with Xen 4.17's checks: address size,
//! vCPU contexts, hypercall pages, TSC mode, HVM parameters and context records, the paging
//! pool, pinned page tables and the memory map (`xen/arch/x86/domctl.c`, `domain.c`, `mm.c`,
//! `hvm/hvm.c`, `hvm/save.c`, `mm/paging.c`, `time.c`).
//!
//! [`SimBuild`] is what a structural boot checker reads back (through
//! [`SimHypervisor::with_state`](super::SimHypervisor::with_state)).
//!
//! Modelled deliberately shallowly, and said here so nobody relies on more:
//! - pinning checks that the frame is the domain's and not pinned already; it does not
//!   validate the page as a page table (nor refuse a frame mapped writable elsewhere, which
//!   real Xen does);
//! - a PV vCPU context's CR3 must be a frame the domain owns; the tables are not walked here
//!   (the boot checker, `boot.rs`, walks them when the domain first runs);
//! - `hypercall_init` records the frame; it does not write trampolines into it;
//! - HVM context records other than CPU and MTRR are stored as given, unvalidated; a CPU
//!   record's control registers are not checked;
//! - the paging pool's pages are not taken from the host's free memory (as grant frames are
//!   not), but a pool larger than the free memory is `ENOMEM`.

use std::collections::BTreeMap;

use nix::errno::Errno;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use super::state::{SimState, SIM_DOM0};
use crate::abi::{
    DomId, E820Entry, HvmHwCpu, HvmHwMtrr, HvmSaveDescriptor, HvmSaveHeader, SHUTDOWN_reboot,
    VGCF_i387_valid, VGCF_in_kernel, VGCF_online, VcpuGuestContext, XEN_ALTP2M_limited,
    XenCpuidLeaf, XenDomctlTscInfo, HVM_FILE_MAGIC, HVM_FILE_VERSION, HVM_NR_PARAMS,
    HVM_PARAM_ACPI_S_STATE, HVM_PARAM_ALTP2M, HVM_PARAM_BUFIOREQ_PFN, HVM_PARAM_DM_DOMAIN,
    HVM_PARAM_IOREQ_PFN, HVM_PARAM_IOREQ_SERVER_PFN, HVM_PARAM_MCA_CAP, HVM_PARAM_NESTEDHVM,
    HVM_PARAM_NR_IOREQ_SERVER_PAGES, HVM_PARAM_PAE_ENABLED, HVM_PARAM_TIMER_MODE,
    HVM_PARAM_TRIPLE_FAULT_REASON, HVM_PARAM_VIRIDIAN, HVM_PARAM_X87_FIP_WIDTH, SHUTDOWN_MAX,
    XEN_CPUID_NO_SUBLEAF,
};
use crate::hvm_context::{HVM_SAVE_CODE_CPU, HVM_SAVE_CODE_HEADER, HVM_SAVE_CODE_MTRR};

/// Xen 4.17's `E820MAX`.
const E820MAX: u32 = 1024;
/// The highest HVM save record type with a load handler on x86 (`HVM_SAVE_CODE_MAX`).
const HVM_SAVE_CODE_MAX: u16 = 20;
/// Pages of a HAP domain's paging pool at creation (`hap_enable`).
const HAP_INITIAL_POOL_PAGES: u64 = 256;
/// The memory-event parameters, refused through `hvm_op` (20-23, 25, 30).
const HVM_PARAM_MEMORY_EVENTS: [u32; 6] = [20, 21, 22, 23, 25, 30];
/// `HVM_PARAM_BUFIOREQ_EVTCHN`, refused through `hvm_op`.
const HVM_PARAM_BUFIOREQ_EVTCHN: u32 = 26;
/// `HVMPV_base_freq`: a Viridian value must have it.
const HVMPV_BASE_FREQ: u64 = 1;
/// Size of a CPU record before 4.x added `flags` (Xen zero-extends it).
const HVM_HW_CPU_COMPAT_SIZE: usize = 1024;

/// One vCPU as a builder left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimVcpu {
    /// The context last set with `XEN_DOMCTL_setvcpucontext` (for an HVM vCPU started by a
    /// CPU record instead, `None`).
    pub context: Option<Box<VcpuGuestContext>>,
    /// Whether it has been given a state (`is_initialised`).
    pub initialised: bool,
    /// Whether it runs once the domain is unpaused (`VGCF_online`, or a CPU record).
    pub online: bool,
}

/// What a domain builder set on one domain, and the shared-info frame it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimBuild {
    /// The machine frame of the domain's shared-info page (from Xen's heap, like the grant
    /// frames; `getdomaininfo` reports it, and a PV domain's builder maps it by this frame).
    /// For an HVM domain, which maps it at a guest frame of its choosing, `getdomaininfo`
    /// reports all ones until it does.
    pub shared_info_frame: u64,
    /// vCPUs given a state, by id.
    pub vcpus: BTreeMap<u32, SimVcpu>,
    /// Frames `XEN_DOMCTL_hypercall_init` filled, in order.
    pub hypercall_pages: Vec<u64>,
    /// The TSC settings (mode, frequency in kHz, incarnation as Xen keeps it, elapsed ns).
    pub tsc: XenDomctlTscInfo,
    /// HVM parameters set (others read as their defaults).
    pub hvm_params: BTreeMap<u32, u64>,
    /// HVM context records loaded, by (type code, instance), as bytes (CPU records
    /// zero-extended to 1032 bytes). HEADER and END are not kept.
    pub hvm_records: BTreeMap<(u16, u16), Vec<u8>>,
    /// Paging pool size in pages (HVM).
    pub paging_pool_pages: u64,
    /// Pinned page tables: machine frame → level (1-4).
    pub pinned: BTreeMap<u64, u32>,
    /// The e820 map set with `XENMEM_set_memory_map`.
    pub memory_map: Vec<E820Entry>,
    /// The CPUID policy, serialised: the simulated host's default for the domain's kind until
    /// a builder sets one.
    pub cpu_policy: Vec<XenCpuidLeaf>,
}

/// The most leaves `XEN_DOMCTL_get_cpu_policy` says a policy may have (Xen's
/// `CPUID_MAX_SERIALISED_LEAVES` is larger; a toolstack only needs a bound).
pub const SIM_CPUID_MAX_LEAVES: u32 = 64;
/// The most MSRs it says a policy may have.
pub const SIM_MSR_MAX_ENTRIES: u32 = 8;

/// The simulated host's default CPUID policy for a domain, as Xen's would serialise it for an
/// AMD host under QEMU's `-cpu max` (the leaves a toolstack adjusts: vendor, 1, 0x80000001,
/// 0x80000008), before any toolstack's topology changes: leaf 1 says two logical processors
/// per package, leaf 0x80000001 has CmpLegacy, leaf 0x80000008 two cores.
pub fn default_cpu_policy() -> Vec<XenCpuidLeaf> {
    let leaf = |leaf, a, b, c, d| XenCpuidLeaf {
        leaf,
        subleaf: XEN_CPUID_NO_SUBLEAF,
        a,
        b,
        c,
        d,
    };
    // "AuthenticAMD" in EBX, EDX, ECX.
    let (vb, vd, vc) = (0x6874_7541, 0x6974_6e65, 0x444d_4163);
    vec![
        leaf(0, 0xd, vb, vc, vd),
        leaf(1, 0x0006_0fb1, 0x0002_0800, 0xf6f8_3203, 0x1fcb_fbfd),
        leaf(0x8000_0000, 0x8000_0008, vb, vc, vd),
        leaf(0x8000_0001, 0x0006_0fb1, 0, 0x73, 0xe5d3_fbfd),
        leaf(0x8000_0008, 0x3028, 0x0010_0000, 0x1001, 0),
    ]
}

impl SimBuild {
    /// A new domain's: `tsc_set_info(TSC_MODE_DEFAULT, 0, 0, 0)` at creation, and the HAP
    /// pool `hap_enable` allocates for an HVM domain.
    pub(crate) fn new(hvm: bool, cpu_khz: u32, shared_info_frame: u64) -> Self {
        SimBuild {
            shared_info_frame,
            vcpus: BTreeMap::new(),
            hypercall_pages: Vec::new(),
            tsc: XenDomctlTscInfo {
                tsc_mode: 0,
                gtsc_khz: cpu_khz,
                incarnation: 1,
                pad: 0,
                elapsed_nsec: 0,
            },
            hvm_params: BTreeMap::new(),
            hvm_records: BTreeMap::new(),
            paging_pool_pages: if hvm { HAP_INITIAL_POOL_PAGES } else { 0 },
            pinned: BTreeMap::new(),
            memory_map: Vec::new(),
            cpu_policy: default_cpu_policy(),
        }
    }

    /// HVM parameter `index` as `HVMOP_get_param` reads it.
    pub fn hvm_param(&self, index: u32) -> u64 {
        self.hvm_params
            .get(&index)
            .copied()
            .unwrap_or(if index == HVM_PARAM_TRIPLE_FAULT_REASON {
                u64::from(SHUTDOWN_reboot)
            } else {
                0
            })
    }

    /// The CPU record loaded for `vcpu`, if any.
    pub fn hvm_cpu(&self, vcpu: u16) -> Option<HvmHwCpu> {
        let b = self.hvm_records.get(&(HVM_SAVE_CODE_CPU, vcpu))?;
        HvmHwCpu::read_from_bytes(b).ok()
    }

    /// The MTRR record loaded for `vcpu`, if any.
    pub fn hvm_mtrr(&self, vcpu: u16) -> Option<HvmHwMtrr> {
        let b = self.hvm_records.get(&(HVM_SAVE_CODE_MTRR, vcpu))?;
        HvmHwMtrr::read_from_bytes(b).ok()
    }
}

/// The records Xen 4.17 saves for every HVM domain: (type code, one per vCPU, length).
const DEFAULT_HVM_RECORDS: [(u16, bool, usize); 8] = [
    (5, true, 24),   // LAPIC
    (6, true, 1024), // LAPIC_REGS
    (7, false, 16),  // PCI_IRQ
    (8, false, 8),   // ISA_IRQ
    (9, false, 8),   // PCI_LINK
    (HVM_SAVE_CODE_MTRR, true, core::mem::size_of::<HvmHwMtrr>()),
    (18, true, 32), // VMCE_VCPU
    (19, true, 8),  // TSC_ADJUST
];

/// x86-64 canonical address (48-bit virtual addresses).
fn canonical(addr: u64) -> bool {
    let top = addr >> 47;
    top == 0 || top == (1 << 17) - 1
}

/// The MTRR state of a new vCPU (`hvm_vcpu_cacheattr_init`): PAT at its power-on value,
/// 8 variable ranges, fixed ranges and write-combining supported, MTRRs off.
fn default_mtrr() -> HvmHwMtrr {
    HvmHwMtrr {
        msr_pat_cr: 0x0007_0406_0007_0406,
        msr_mtrr_cap: 0x508,
        ..Default::default()
    }
}

impl SimState {
    /// The domain for a build domctl: `ESRCH` if missing, `EINVAL` for dom0 (Xen cannot pause
    /// the caller's own domain).
    fn build_target(&mut self, domid: DomId) -> Result<&mut super::state::SimDomain, Errno> {
        let d = self.domain_mut(domid)?;
        if domid == SIM_DOM0 {
            return Err(Errno::EINVAL);
        }
        Ok(d)
    }

    /// `XEN_DOMCTL_set_address_size`.
    ///
    /// # Errors
    ///
    /// `ESRCH`; `EOPNOTSUPP` (HVM, or 32 bits: the host runs no 32-bit PV guests); `EINVAL`
    /// (not 32 or 64).
    pub fn set_address_size(&self, domid: DomId, bits: u32) -> Result<(), Errno> {
        let d = self.domain(domid)?;
        if d.is_hvm() {
            return Err(Errno::EOPNOTSUPP);
        }
        match bits {
            64 => Ok(()),
            // `switch_compat`: Debian's Xen 4.17 (as the test VM runs it) has 32-bit PV
            // guests turned off (`opt_pv32`), and so has the simulated host.
            32 => Err(Errno::EOPNOTSUPP),
            _ => Err(Errno::EINVAL),
        }
    }

    /// `XEN_DOMCTL_get_address_size`.
    ///
    /// # Errors
    ///
    /// `ESRCH`; `EOPNOTSUPP` (HVM).
    pub fn address_size(&self, domid: DomId) -> Result<u32, Errno> {
        let d = self.domain(domid)?;
        if d.is_hvm() {
            return Err(Errno::EOPNOTSUPP);
        }
        Ok(64)
    }

    /// `XEN_DOMCTL_setvcpucontext` with a context (`None`: a null handle, which resets the
    /// vCPU).
    ///
    /// # Errors
    ///
    /// `ESRCH`; `EINVAL` (dom0, no such vCPU, a non-canonical address, a bad LDT or GDT, a
    /// first PV context outside kernel mode, a CR3 or GDT frame the domain does not own);
    /// `EOPNOTSUPP` (a PV vCPU already running on other page tables).
    pub fn set_vcpu_context(
        &mut self,
        domid: DomId,
        vcpu: u32,
        ctxt: Option<&VcpuGuestContext>,
    ) -> Result<(), Errno> {
        let d = self.build_target(domid)?;
        if vcpu >= d.config.max_vcpus || !d.vcpus_created {
            return Err(Errno::EINVAL);
        }
        let Some(c) = ctxt else {
            d.build.vcpus.remove(&vcpu);
            return Ok(());
        };
        let prev = d.build.vcpus.get(&vcpu);
        if !d.is_hvm() {
            let r = &c.user_regs;
            let addrs = [
                r.rip,
                r.rsp,
                c.kernel_sp,
                c.fs_base,
                c.gs_base_kernel,
                c.gs_base_user,
                c.event_callback_eip,
                c.syscall_callback_eip,
                c.failsafe_callback_eip,
            ];
            if !addrs.iter().all(|&a| canonical(a))
                || (c.ldt_ents != 0 && !canonical(c.ldt_base))
                || !c.trap_ctxt.iter().all(|t| canonical(t.address))
                || c.ldt_base & 0xfff != 0
                || c.ldt_ents > 8192
            {
                return Err(Errno::EINVAL);
            }
            let gdt_frames = c.gdt_ents.div_ceil(512);
            if gdt_frames > 16 {
                return Err(Errno::EINVAL);
            }
            let cr3 = VcpuGuestContext::cr3_to_pfn(c.ctrlreg[3]);
            match prev.and_then(|p| p.context.as_deref()) {
                Some(p) if prev.is_some_and(|p| p.initialised) => {
                    if p.ctrlreg[3] != c.ctrlreg[3] || p.gdt_ents != c.gdt_ents {
                        return Err(Errno::EOPNOTSUPP);
                    }
                }
                _ => {
                    if c.flags & VGCF_in_kernel == 0 && c.ctrlreg[1] == 0 {
                        return Err(Errno::EINVAL);
                    }
                }
            }
            let owned = |f: &u64| d.physmap.contains_key(f);
            let gdt = c
                .gdt_frames
                .get(..usize::try_from(gdt_frames).unwrap_or(usize::MAX));
            if !gdt.is_some_and(|g| g.iter().all(owned)) || !owned(&cr3) {
                return Err(Errno::EINVAL);
            }
        }
        d.build.vcpus.insert(
            vcpu,
            SimVcpu {
                context: Some(Box::new(*c)),
                initialised: true,
                online: c.flags & VGCF_online != 0,
            },
        );
        Ok(())
    }

    /// `XEN_DOMCTL_getvcpucontext`: the context as Xen reports it (`VGCF_i387_valid` and
    /// `VGCF_in_kernel` as the vCPU's state has them, `VGCF_online` if it is up). For an HVM
    /// vCPU started by a CPU record, its registers.
    ///
    /// # Errors
    ///
    /// `ESRCH`; `EINVAL` (no such vCPU); `ENODATA` (never given a state).
    pub fn vcpu_context(&self, domid: DomId, vcpu: u32) -> Result<VcpuGuestContext, Errno> {
        let d = self.domain(domid)?;
        if vcpu >= d.config.max_vcpus || !d.vcpus_created {
            return Err(Errno::EINVAL);
        }
        let v = d
            .build
            .vcpus
            .get(&vcpu)
            .filter(|v| v.initialised)
            .ok_or(Errno::ENODATA)?;
        let mut c = match &v.context {
            Some(c) => **c,
            None => {
                let cpu = u16::try_from(vcpu)
                    .ok()
                    .and_then(|i| d.build.hvm_cpu(i))
                    .unwrap_or_else(HvmHwCpu::zeroed);
                let mut c = VcpuGuestContext::zeroed();
                let r = &mut c.user_regs;
                (r.rax, r.rbx, r.rcx, r.rdx) = (cpu.rax, cpu.rbx, cpu.rcx, cpu.rdx);
                (r.rsi, r.rdi, r.rsp, r.rbp) = (cpu.rsi, cpu.rdi, cpu.rsp, cpu.rbp);
                (r.rip, r.rflags) = (cpu.rip, cpu.rflags);
                c.ctrlreg[0] = cpu.cr0;
                c.ctrlreg[2] = cpu.cr2;
                c.ctrlreg[3] = cpu.cr3;
                c.ctrlreg[4] = cpu.cr4;
                c
            }
        };
        c.flags &= !(VGCF_i387_valid | VGCF_online);
        if v.online {
            c.flags |= VGCF_online;
        }
        if !d.is_hvm() {
            c.flags |= VGCF_in_kernel;
        }
        Ok(c)
    }

    /// `XEN_DOMCTL_hypercall_init`.
    ///
    /// # Errors
    ///
    /// `ESRCH`; `EINVAL` (a frame the domain does not have).
    pub fn hypercall_init(&mut self, domid: DomId, gmfn: u64) -> Result<(), Errno> {
        let d = self.domain_mut(domid)?;
        if !d.physmap.contains_key(&gmfn) {
            return Err(Errno::EINVAL);
        }
        d.build.hypercall_pages.push(gmfn);
        Ok(())
    }

    /// `XEN_DOMCTL_settscinfo`.
    ///
    /// # Errors
    ///
    /// `ESRCH`; `EINVAL` (dom0, an unknown mode).
    pub fn set_tsc_info(&mut self, domid: DomId, info: &XenDomctlTscInfo) -> Result<(), Errno> {
        let cpu_khz = self.cpu_khz;
        let d = self.build_target(domid)?;
        if info.tsc_mode > 2 {
            return Err(Errno::EINVAL);
        }
        d.build.tsc = XenDomctlTscInfo {
            tsc_mode: info.tsc_mode,
            gtsc_khz: if info.gtsc_khz == 0 {
                cpu_khz
            } else {
                info.gtsc_khz
            },
            incarnation: info.incarnation.wrapping_add(1),
            pad: 0,
            elapsed_nsec: info.elapsed_nsec,
        };
        Ok(())
    }

    /// `XEN_DOMCTL_gettscinfo` (the simulated host's TSC is safe and never scaled, so the
    /// default mode runs native at the host's frequency; no time elapses in the model).
    ///
    /// # Errors
    ///
    /// `ESRCH`; `EINVAL` (dom0).
    pub fn tsc_info(&self, domid: DomId) -> Result<XenDomctlTscInfo, Errno> {
        let d = self.domain(domid)?;
        if domid == SIM_DOM0 {
            return Err(Errno::EINVAL);
        }
        let t = d.build.tsc;
        let (gtsc_khz, elapsed_nsec) = match t.tsc_mode {
            2 => (0, 0),
            1 => (t.gtsc_khz, t.elapsed_nsec),
            _ => (self.cpu_khz, 0),
        };
        Ok(XenDomctlTscInfo {
            gtsc_khz,
            elapsed_nsec,
            ..t
        })
    }

    /// `XEN_DOMCTL_gethvmcontext`'s blob: HEADER, the CPU records of the vCPUs that are up,
    /// the records loaded and each vCPU's MTRR record, in type-code order, then END.
    ///
    /// # Errors
    ///
    /// `ESRCH`; `EINVAL` (dom0, a PV domain).
    pub fn hvm_context(&self, domid: DomId) -> Result<Vec<u8>, Errno> {
        let d = self.domain(domid)?;
        if domid == SIM_DOM0 || !d.is_hvm() {
            return Err(Errno::EINVAL);
        }
        let mut records: BTreeMap<(u16, u16), Vec<u8>> = d
            .build
            .hvm_records
            .iter()
            .filter(|((t, i), _)| {
                *t != HVM_SAVE_CODE_CPU
                    || d.build.vcpus.get(&u32::from(*i)).is_some_and(|v| v.online)
            })
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let vcpus = if d.vcpus_created {
            d.config.max_vcpus
        } else {
            0
        };
        // What Xen 4.17 saves for a new PVH domain besides HEADER (seen on real Xen): the
        // local APIC and its registers, MTRRs, machine-check and TSC-adjust state per vCPU,
        // and the PCI/ISA interrupt routing once. Unloaded ones read as zeroes here, but
        // for the MTRRs' power-on values.
        for (typecode, per_vcpu, len) in DEFAULT_HVM_RECORDS {
            let instances = if per_vcpu { vcpus } else { 1 };
            for i in 0..u16::try_from(instances).unwrap_or(u16::MAX) {
                records.entry((typecode, i)).or_insert_with(|| {
                    if typecode == HVM_SAVE_CODE_MTRR {
                        default_mtrr().as_bytes().to_vec()
                    } else {
                        vec![0; len]
                    }
                });
            }
        }
        let header = HvmSaveHeader {
            magic: HVM_FILE_MAGIC,
            version: HVM_FILE_VERSION,
            changeset: 0,
            cpuid: 0,
            gtsc_khz: d.build.tsc.gtsc_khz,
        };
        let mut out = Vec::new();
        let mut push = |typecode: u16, instance: u16, data: &[u8]| {
            let desc = HvmSaveDescriptor {
                typecode,
                instance,
                length: u32::try_from(data.len()).unwrap_or(u32::MAX),
            };
            out.extend_from_slice(desc.as_bytes());
            out.extend_from_slice(data);
        };
        push(HVM_SAVE_CODE_HEADER, 0, header.as_bytes());
        for ((t, i), data) in &records {
            push(*t, *i, data);
        }
        push(0, 0, &[]);
        Ok(out)
    }

    /// `XEN_DOMCTL_sethvmcontext` (`hvm_load`): records are applied in order, as Xen does,
    /// so a blob that fails part-way leaves the records before the fault loaded.
    ///
    /// # Errors
    ///
    /// `ESRCH`; `EINVAL` (dom0, a PV domain, a bad magic or version, an unknown or second
    /// HEADER record type, a record longer than the blob, a CPU or MTRR record of the wrong
    /// size or for a vCPU that does not exist, a CPU record with unknown flags or padding);
    /// `ENODATA` (no HEADER first, or no END).
    pub fn set_hvm_context(&mut self, domid: DomId, blob: &[u8]) -> Result<(), Errno> {
        let d = self.build_target(domid)?;
        if !d.is_hvm() || d.state == super::state::SimDomainState::Dying {
            return Err(Errno::EINVAL);
        }
        const DESC: usize = core::mem::size_of::<HvmSaveDescriptor>();
        let header_len = core::mem::size_of::<HvmSaveHeader>();
        let Ok((desc, rest)) = HvmSaveDescriptor::read_from_prefix(blob) else {
            return Err(Errno::ENODATA);
        };
        if desc.typecode != HVM_SAVE_CODE_HEADER
            || usize::try_from(desc.length).ok() != Some(header_len)
        {
            return Err(Errno::ENODATA);
        }
        let Ok((header, _)) = HvmSaveHeader::read_from_prefix(rest) else {
            return Err(Errno::ENODATA);
        };
        if header.magic != HVM_FILE_MAGIC || header.version != HVM_FILE_VERSION {
            return Err(Errno::EINVAL);
        }
        // Every vCPU goes down; those with a CPU record come back up.
        for v in d.build.vcpus.values_mut() {
            v.online = false;
        }
        let vcpus = if d.vcpus_created {
            d.config.max_vcpus
        } else {
            0
        };
        let mut at = DESC + header_len;
        loop {
            let rest = blob.get(at..).unwrap_or(&[]);
            let Ok((desc, body)) = HvmSaveDescriptor::read_from_prefix(rest) else {
                return Err(Errno::ENODATA);
            };
            if desc.typecode == 0 {
                return Ok(());
            }
            if desc.typecode > HVM_SAVE_CODE_MAX || desc.typecode == HVM_SAVE_CODE_HEADER {
                return Err(Errno::EINVAL);
            }
            let len = usize::try_from(desc.length).map_err(|_| Errno::EINVAL)?;
            let data = body.get(..len).ok_or(Errno::EINVAL)?;
            let per_vcpu = matches!(desc.typecode, HVM_SAVE_CODE_CPU | HVM_SAVE_CODE_MTRR);
            if per_vcpu && u32::from(desc.instance) >= vcpus {
                return Err(Errno::EINVAL);
            }
            let stored = match desc.typecode {
                HVM_SAVE_CODE_CPU => {
                    if len != HVM_HW_CPU_COMPAT_SIZE && len != core::mem::size_of::<HvmHwCpu>() {
                        return Err(Errno::EINVAL);
                    }
                    let mut cpu = HvmHwCpu::new_zeroed();
                    cpu.as_mut_bytes()[..len].copy_from_slice(data);
                    if cpu.pad0 != 0 || cpu.flags & !1 != 0 {
                        return Err(Errno::EINVAL);
                    }
                    let v = d
                        .build
                        .vcpus
                        .entry(u32::from(desc.instance))
                        .or_insert(SimVcpu {
                            context: None,
                            initialised: true,
                            online: true,
                        });
                    v.context = None;
                    v.initialised = true;
                    v.online = true;
                    cpu.as_bytes().to_vec()
                }
                HVM_SAVE_CODE_MTRR => {
                    if len != core::mem::size_of::<HvmHwMtrr>() {
                        return Err(Errno::EINVAL);
                    }
                    data.to_vec()
                }
                _ => data.to_vec(),
            };
            d.build
                .hvm_records
                .insert((desc.typecode, desc.instance), stored);
            at += DESC + len;
        }
    }

    /// `XEN_DOMCTL_set_paging_mempool_size`.
    ///
    /// # Errors
    ///
    /// `ESRCH`; `EOPNOTSUPP` (PV); `EINVAL` (not whole pages, or more pages than 32 bits
    /// count); `ENOMEM` (more than the host's unclaimed free memory).
    pub fn set_paging_mempool_size(&mut self, domid: DomId, bytes: u64) -> Result<(), Errno> {
        let avail = self.free_pages.saturating_sub(self.outstanding_claims);
        let d = self.domain_mut(domid)?;
        if !d.is_hvm() {
            return Err(Errno::EOPNOTSUPP);
        }
        let pages = bytes >> 12;
        if bytes & 0xfff != 0 || pages > u64::from(u32::MAX) {
            return Err(Errno::EINVAL);
        }
        if pages.saturating_sub(d.build.paging_pool_pages) > avail {
            return Err(Errno::ENOMEM);
        }
        d.build.paging_pool_pages = pages;
        Ok(())
    }

    /// `XEN_DOMCTL_get_cpu_policy`'s leaves.
    ///
    /// # Errors
    ///
    /// `ESRCH`.
    pub fn cpu_policy(&self, domid: DomId) -> Result<Vec<XenCpuidLeaf>, Errno> {
        Ok(self.domain(domid)?.build.cpu_policy.clone())
    }

    /// `XEN_DOMCTL_set_cpu_policy` with `leaves`: each must be a leaf (and subleaf) of the
    /// default policy, as Xen's audit refuses leaves past the policy's maxima; `Err` with the
    /// first one that is not, and the errno.
    ///
    /// # Errors
    ///
    /// `ESRCH`; `EINVAL` (the caller's own domain, or a leaf refused: with it);
    /// `EEXIST` (the domain has run).
    pub fn set_cpu_policy(
        &mut self,
        domid: DomId,
        leaves: &[XenCpuidLeaf],
    ) -> Result<(), (Errno, Option<XenCpuidLeaf>)> {
        let d = self.domain_mut(domid).map_err(|e| (e, None))?;
        if domid == SIM_DOM0 {
            return Err((Errno::EINVAL, None));
        }
        if d.creation_finished {
            return Err((Errno::EEXIST, None));
        }
        let known = default_cpu_policy();
        let mut policy = d.build.cpu_policy.clone();
        for l in leaves {
            if !known
                .iter()
                .any(|k| k.leaf == l.leaf && k.subleaf == l.subleaf)
            {
                return Err((Errno::EINVAL, Some(*l)));
            }
            if let Some(p) = policy
                .iter_mut()
                .find(|p| p.leaf == l.leaf && p.subleaf == l.subleaf)
            {
                *p = *l;
            }
        }
        d.build.cpu_policy = policy;
        Ok(())
    }

    /// `XEN_DOMCTL_get_paging_mempool_size`, in bytes.
    ///
    /// # Errors
    ///
    /// `ESRCH`; `EOPNOTSUPP` (PV).
    pub fn paging_mempool_size(&self, domid: DomId) -> Result<u64, Errno> {
        let d = self.domain(domid)?;
        if !d.is_hvm() {
            return Err(Errno::EOPNOTSUPP);
        }
        Ok(d.build.paging_pool_pages << 12)
    }

    /// Whether the toolstack may touch HVM parameter `index` through `hvm_op` at all
    /// (`hvm_allow_{set,get}_param`'s first switch, dom0 being the caller).
    fn hvm_param_allowed(index: u32) -> Result<(), Errno> {
        let refused = [
            HVM_PARAM_PAE_ENABLED,
            HVM_PARAM_DM_DOMAIN,
            HVM_PARAM_NESTEDHVM,
            HVM_PARAM_BUFIOREQ_EVTCHN,
        ];
        if refused.contains(&index) || HVM_PARAM_MEMORY_EVENTS.contains(&index) {
            Err(Errno::EINVAL)
        } else {
            Ok(())
        }
    }

    /// The domain for an `hvm_op` on parameter `index`: `EINVAL` for an index out of range
    /// (checked first), `ESRCH`, `EINVAL` for a PV domain.
    fn hvm_param_target(
        &mut self,
        domid: DomId,
        index: u32,
    ) -> Result<&mut super::state::SimDomain, Errno> {
        if index >= HVM_NR_PARAMS {
            return Err(Errno::EINVAL);
        }
        let d = self.domain_mut(SimState::resolve(domid))?;
        if !d.is_hvm() {
            return Err(Errno::EINVAL);
        }
        Ok(d)
    }

    /// `HVMOP_set_param`.
    ///
    /// # Errors
    ///
    /// `EINVAL` (an index out of range or refused, a PV domain, a bad value); `ESRCH`;
    /// `EEXIST` (a set-once parameter set to another value).
    pub fn set_hvm_param(&mut self, domid: DomId, index: u32, value: u64) -> Result<(), Errno> {
        let d = self.hvm_param_target(domid, index)?;
        Self::hvm_param_allowed(index)?;
        let old = d.build.hvm_param(index);
        let set_once = [
            HVM_PARAM_VIRIDIAN,
            HVM_PARAM_IOREQ_PFN,
            HVM_PARAM_BUFIOREQ_PFN,
            HVM_PARAM_IOREQ_SERVER_PFN,
            HVM_PARAM_NR_IOREQ_SERVER_PAGES,
            HVM_PARAM_ALTP2M,
            HVM_PARAM_MCA_CAP,
        ];
        if set_once.contains(&index) && old != 0 && old != value {
            return Err(Errno::EEXIST);
        }
        let bad = match index {
            HVM_PARAM_TIMER_MODE => value > 3,
            HVM_PARAM_VIRIDIAN => value & HVMPV_BASE_FREQ == 0,
            HVM_PARAM_ACPI_S_STATE => value != 0 && value != 3,
            HVM_PARAM_ALTP2M => value > XEN_ALTP2M_limited,
            HVM_PARAM_TRIPLE_FAULT_REASON => value > u64::from(SHUTDOWN_MAX),
            HVM_PARAM_X87_FIP_WIDTH => !matches!(value, 0 | 4 | 8),
            _ => false,
        };
        if bad {
            return Err(Errno::EINVAL);
        }
        d.build.hvm_params.insert(index, value);
        Ok(())
    }

    /// `HVMOP_get_param`.
    ///
    /// # Errors
    ///
    /// `EINVAL` (an index out of range or refused, a PV domain); `ESRCH`.
    pub fn hvm_param(&mut self, domid: DomId, index: u32) -> Result<u64, Errno> {
        let d = self.hvm_param_target(domid, index)?;
        Self::hvm_param_allowed(index)?;
        Ok(d.build.hvm_param(index))
    }

    /// One `mmuext_op` pin (`level` 1-4) or unpin (`level` 0) of frame `mfn` of PV domain
    /// `owner` (already resolved from `foreigndom`).
    ///
    /// # Errors
    ///
    /// `EINVAL` (a frame the domain does not own, pinned already, or not pinned).
    pub fn pin_table(&mut self, owner: DomId, level: u32, mfn: u64) -> Result<(), Errno> {
        let d = self.domain_mut(owner)?;
        if !d.physmap.contains_key(&mfn) {
            return Err(Errno::EINVAL);
        }
        if level == 0 {
            d.build.pinned.remove(&mfn).map(drop).ok_or(Errno::EINVAL)
        } else {
            match d.build.pinned.entry(mfn) {
                std::collections::btree_map::Entry::Occupied(_) => Err(Errno::EINVAL),
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(level);
                    Ok(())
                }
            }
        }
    }

    /// The page-table owner of an `mmuext_op` (`get_pg_owner`): `ESRCH` if missing, `EINVAL`
    /// if not PV.
    pub(crate) fn pg_owner(&self, foreigndom: DomId) -> Result<DomId, Errno> {
        let owner = SimState::resolve(foreigndom);
        if self.domain(owner)?.is_hvm() {
            return Err(Errno::EINVAL);
        }
        Ok(owner)
    }

    /// `XENMEM_set_memory_map`.
    ///
    /// # Errors
    ///
    /// `ESRCH`.
    pub fn set_memory_map(&mut self, domid: DomId, map: Vec<E820Entry>) -> Result<(), Errno> {
        self.domain_mut(SimState::resolve(domid))?.build.memory_map = map;
        Ok(())
    }

    /// The most entries `XENMEM_set_memory_map` takes.
    pub(crate) const fn e820_max() -> u32 {
        E820MAX
    }
}
