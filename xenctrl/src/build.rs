//! What a domain builder asks of Xen once the domain exists: address size, vCPU state, the
//! hypercall page, TSC mode, HVM context and parameters, the paging pool, page-table pinning
//! and the memory map.
//!
//! Each is one hypercall with its argument in the handle's pool; the vCPU context and HVM
//! context blobs are bounced through pool buffers too.

use crate::abi::{
    E820Entry, HVMOP_get_param, HVMOP_set_param, MmuextOp, VcpuGuestContext, XENMEM_set_memory_map,
    XenDomctl, XenDomctlAddressSize, XenDomctlGetAddressSize, XenDomctlGetHvmcontext,
    XenDomctlGetPagingMempool, XenDomctlGetTscInfo, XenDomctlGetVcpucontext,
    XenDomctlHypercallInit, XenDomctlPagingMempool, XenDomctlSetHvmcontext,
    XenDomctlSetVcpucontext, XenDomctlTscInfo, XenForeignMemoryMap, XenHvmParam,
};
use crate::abi::{XenCpuidLeaf, XenDomctlGetCpuPolicy, XenDomctlSetCpuPolicy};
use crate::ctrl::XenCtrl;
use crate::error::{Error, Op, Result};
use crate::hvm_context::HvmContext;
use crate::DomId;

/// An HVM parameter index (`HVM_PARAM_*`). Unknown indices stay representable; Xen answers
/// `EINVAL` for those at or above `HVM_NR_PARAMS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HvmParam(pub u32);

impl HvmParam {
    /// How the event callback is delivered.
    pub const CALLBACK_IRQ: Self = Self(crate::abi::HVM_PARAM_CALLBACK_IRQ);
    /// Guest frame of the xenstore ring.
    pub const STORE_PFN: Self = Self(crate::abi::HVM_PARAM_STORE_PFN);
    /// Event channel of the xenstore ring.
    pub const STORE_EVTCHN: Self = Self(crate::abi::HVM_PARAM_STORE_EVTCHN);
    /// Timer mode (`HVMPTM_*`; libxl sets `no_delay_for_missed_ticks`).
    pub const TIMER_MODE: Self = Self(crate::abi::HVM_PARAM_TIMER_MODE);
    /// HPET enabled.
    pub const HPET_ENABLED: Self = Self(crate::abi::HVM_PARAM_HPET_ENABLED);
    /// Identity-map page table.
    pub const IDENT_PT: Self = Self(crate::abi::HVM_PARAM_IDENT_PT);
    /// Guest frame of the console ring.
    pub const CONSOLE_PFN: Self = Self(crate::abi::HVM_PARAM_CONSOLE_PFN);
    /// Event channel of the console ring.
    pub const CONSOLE_EVTCHN: Self = Self(crate::abi::HVM_PARAM_CONSOLE_EVTCHN);
    /// Nested HVM (Xen refuses it through `hvm_op`).
    pub const NESTEDHVM: Self = Self(crate::abi::HVM_PARAM_NESTEDHVM);
    /// What a triple fault does (`SHUTDOWN_*`).
    pub const TRIPLE_FAULT_REASON: Self = Self(crate::abi::HVM_PARAM_TRIPLE_FAULT_REASON);
    /// Alternate p2m mode (`XEN_ALTP2M_*`). Read-only from Xen 4.19 (setting it is `EEXIST`):
    /// see [`crate::interface::InterfaceProfile::hvm_param_altp2m_read_only`].
    pub const ALTP2M: Self = Self(crate::abi::HVM_PARAM_ALTP2M);
    /// x87 FIP width.
    pub const X87_FIP_WIDTH: Self = Self(crate::abi::HVM_PARAM_X87_FIP_WIDTH);
}

/// A TSC mode (`TSC_MODE_*` of Xen's `asm/time.h`). Unknown modes stay representable; Xen
/// answers `EINVAL` for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TscMode(pub u32);

impl TscMode {
    /// Xen decides: native when the host TSC is safe and the frequencies match.
    pub const DEFAULT: Self = Self(0);
    /// Always emulate `rdtsc`.
    pub const ALWAYS_EMULATE: Self = Self(1);
    /// Never emulate (`tsc_mode="native"`; what PVH guests need under QEMU TCG).
    pub const NEVER_EMULATE: Self = Self(2);
}

/// A domain's TSC settings (`XEN_DOMCTL_settscinfo` / `gettscinfo`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscInfo {
    /// The mode.
    pub mode: TscMode,
    /// Guest TSC frequency in kHz (0 when setting: the host's).
    pub gtsc_khz: u32,
    /// Migration incarnation: Xen keeps one more than it is given.
    pub incarnation: u32,
    /// Guest time elapsed, in nanoseconds.
    pub elapsed_nsec: u64,
}

impl TscInfo {
    /// A fresh domain's settings in `mode`, as libxl sets them at build.
    pub fn new(mode: TscMode) -> Self {
        TscInfo {
            mode,
            gtsc_khz: 0,
            incarnation: 0,
            elapsed_nsec: 0,
        }
    }
}

impl XenCtrl {
    /// Set a PV domain's address size in bits (64 for an x86-64 guest, 32 to make it a
    /// 32-bit one while it has no memory).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`]: `ESRCH` for no such domain, `EOPNOTSUPP` for an HVM domain, `EINVAL`
    /// for another size, `EACCES` for 32 once the domain has memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use xenctrl::{CreateDomain, XenCtrl};
    ///
    /// let xc = XenCtrl::simulated(Default::default())?;
    /// let d = xc.create_domain(&CreateDomain::pv(1))?;
    /// xc.set_address_size(d, 64)?;
    /// assert_eq!(xc.address_size(d)?, 64);
    /// # Ok::<(), xenctrl::Error>(())
    /// ```
    pub fn set_address_size(&self, domid: DomId, bits: u32) -> Result<()> {
        let mut op = self.pool().alloc::<XenDomctl<XenDomctlAddressSize>>()?;
        op.set(domid, XenDomctlAddressSize { size: bits });
        self.domctl(&mut op)
            .map_err(|e| e.with_op(Op::SetAddressSize))?;
        Ok(())
    }

    /// A PV domain's address size in bits.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`]: `ESRCH` for no such domain, `EOPNOTSUPP` for an HVM domain.
    pub fn address_size(&self, domid: DomId) -> Result<u32> {
        let mut op = self.pool().alloc::<XenDomctl<XenDomctlGetAddressSize>>()?;
        op.set(domid, XenDomctlGetAddressSize::default());
        self.domctl(&mut op)
            .map_err(|e| e.with_op(Op::GetAddressSize))?;
        Ok(op.u.size)
    }

    /// Set vCPU `vcpu`'s state (`XEN_DOMCTL_setvcpucontext`). For a PV guest Xen takes
    /// `ctrlreg[3]` as the top-level page table, which must be a frame the guest owns.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`]: `ESRCH` for no such domain; `EINVAL` for a vCPU that does not exist
    /// (none do before `max_vcpus`), a non-canonical address, a bad LDT, or (PV) a CR3 frame
    /// the guest does not own or a first context without `VGCF_in_kernel`.
    pub fn set_vcpu_context(&self, domid: DomId, vcpu: u32, ctxt: &VcpuGuestContext) -> Result<()> {
        let mut buf = self.pool().alloc::<VcpuGuestContext>()?;
        *buf = *ctxt;
        let mut op = self
            .pool()
            .alloc::<XenDomctl<XenDomctlSetVcpucontext<'_>>>()?;
        op.set(
            domid,
            XenDomctlSetVcpucontext::new(vcpu, buf.guest_handle()),
        );
        self.domctl(&mut op)
            .map_err(|e| e.with_op(Op::SetVcpuContext))?;
        Ok(())
    }

    /// vCPU `vcpu`'s state (`XEN_DOMCTL_getvcpucontext`).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`]: `ESRCH` for no such domain, `EINVAL` for a vCPU that does not exist,
    /// `ENODATA` for one that was never given a state.
    pub fn vcpu_context(&self, domid: DomId, vcpu: u32) -> Result<VcpuGuestContext> {
        let mut buf = self.pool().alloc::<VcpuGuestContext>()?;
        {
            let mut op = self
                .pool()
                .alloc::<XenDomctl<XenDomctlGetVcpucontext<'_>>>()?;
            op.set(
                domid,
                XenDomctlGetVcpucontext::new(vcpu, buf.guest_handle()),
            );
            self.domctl(&mut op)
                .map_err(|e| e.with_op(Op::GetVcpuContext))?;
        }
        Ok(*buf)
    }

    /// Fill guest frame `gmfn` with hypercall trampolines (`XEN_DOMCTL_hypercall_init`), for a
    /// kernel with a `HYPERCALL_PAGE` note.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`]: `ESRCH` for no such domain, `EINVAL` for a frame the guest does not
    /// have, `EPERM` for one it cannot write.
    pub fn hypercall_init(&self, domid: DomId, gmfn: u64) -> Result<()> {
        let mut op = self.pool().alloc::<XenDomctl<XenDomctlHypercallInit>>()?;
        op.set(domid, XenDomctlHypercallInit { gmfn });
        self.domctl(&mut op)
            .map_err(|e| e.with_op(Op::HypercallInit))?;
        Ok(())
    }

    /// Set the domain's TSC mode (`XEN_DOMCTL_settscinfo`).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`]: `ESRCH` for no such domain, `EINVAL` for an unknown mode or for dom0.
    pub fn set_tsc_info(&self, domid: DomId, info: &TscInfo) -> Result<()> {
        let mut op = self.pool().alloc::<XenDomctl<XenDomctlTscInfo>>()?;
        op.set(
            domid,
            XenDomctlTscInfo {
                tsc_mode: info.mode.0,
                gtsc_khz: info.gtsc_khz,
                incarnation: info.incarnation,
                pad: 0,
                elapsed_nsec: info.elapsed_nsec,
            },
        );
        self.domctl(&mut op)
            .map_err(|e| e.with_op(Op::SetTscInfo))?;
        Ok(())
    }

    /// The domain's TSC settings (`XEN_DOMCTL_gettscinfo`).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`]: `ESRCH` for no such domain, `EINVAL` for dom0.
    pub fn tsc_info(&self, domid: DomId) -> Result<TscInfo> {
        let mut op = self.pool().alloc::<XenDomctl<XenDomctlGetTscInfo>>()?;
        op.set(domid, XenDomctlGetTscInfo::default());
        self.domctl(&mut op)
            .map_err(|e| e.with_op(Op::GetTscInfo))?;
        Ok(TscInfo {
            mode: TscMode(op.u.tsc_mode),
            gtsc_khz: op.u.gtsc_khz,
            incarnation: op.u.incarnation,
            elapsed_nsec: op.u.elapsed_nsec,
        })
    }

    /// An HVM domain's context as bytes: a size query, then the blob
    /// (`XEN_DOMCTL_gethvmcontext`).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`]: `ESRCH` for no such domain, `EINVAL` for a PV domain;
    /// [`Error::BadReply`] if Xen reports more bytes than the buffer holds.
    pub fn hvm_context_bytes(&self, domid: DomId) -> Result<Vec<u8>> {
        let size = {
            let mut op = self
                .pool()
                .alloc::<XenDomctl<XenDomctlGetHvmcontext<'_>>>()?;
            op.set(domid, XenDomctlGetHvmcontext::size_query());
            self.domctl(&mut op)
                .map_err(|e| e.with_op(Op::GetHvmContext))?;
            op.u.size()
        };
        let len = usize::try_from(size).unwrap_or(usize::MAX);
        let mut buf = self.pool().alloc_slice::<u8>(len)?;
        let filled = {
            let mut op = self
                .pool()
                .alloc::<XenDomctl<XenDomctlGetHvmcontext<'_>>>()?;
            op.set(domid, XenDomctlGetHvmcontext::new(buf.guest_handle()));
            self.domctl(&mut op)
                .map_err(|e| e.with_op(Op::GetHvmContext))?;
            op.u.size()
        };
        let filled = usize::try_from(filled).unwrap_or(usize::MAX);
        let Some(bytes) = buf.get(..filled) else {
            return Err(Error::BadReply {
                op: Op::GetHvmContext,
                detail: format!("{filled} bytes filled in a buffer of {len}"),
            });
        };
        Ok(bytes.to_vec())
    }

    /// An HVM domain's context, decoded.
    ///
    /// # Errors
    ///
    /// As for [`XenCtrl::hvm_context_bytes`], and [`Error::BadReply`] naming the fault if the
    /// blob does not decode.
    pub fn hvm_context(&self, domid: DomId) -> Result<HvmContext> {
        let bytes = self.hvm_context_bytes(domid)?;
        HvmContext::decode(&bytes).map_err(|e| Error::BadReply {
            op: Op::GetHvmContext,
            detail: e.to_string(),
        })
    }

    /// Load an HVM domain's context from bytes (`XEN_DOMCTL_sethvmcontext`).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`]: `ESRCH` for no such domain; `EINVAL` for a PV domain, or a blob Xen
    /// refuses (bad header, unknown record type, a record for a vCPU that does not exist).
    pub fn set_hvm_context_bytes(&self, domid: DomId, blob: &[u8]) -> Result<()> {
        let mut buf = self.pool().alloc_slice::<u8>(blob.len())?;
        buf.copy_from_slice(blob);
        let mut op = self
            .pool()
            .alloc::<XenDomctl<XenDomctlSetHvmcontext<'_>>>()?;
        op.set(domid, XenDomctlSetHvmcontext::new(buf.guest_handle()));
        self.domctl(&mut op)
            .map_err(|e| e.with_op(Op::SetHvmContext))?;
        Ok(())
    }

    /// Load an HVM domain's context (encoded with its END record).
    ///
    /// # Errors
    ///
    /// As for [`XenCtrl::set_hvm_context_bytes`].
    pub fn set_hvm_context(&self, domid: DomId, ctx: &HvmContext) -> Result<()> {
        self.set_hvm_context_bytes(domid, &ctx.encode())
    }

    /// A domain's CPUID policy, as Xen serialises it (`XEN_DOMCTL_get_cpu_policy`): a count
    /// query, then the leaves. A fresh domain's is Xen's default policy for its kind, which
    /// a toolstack adjusts (topology, as libxl's `xc_cpuid_apply_policy` does) and sets back
    /// with [`XenCtrl::set_cpu_policy`] before the domain first runs. The MSR part is not
    /// read.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`]: `ESRCH` for no such domain; [`Error::BadReply`] if Xen reports more
    /// leaves than the buffer holds.
    pub fn cpu_policy(&self, domid: DomId) -> Result<Vec<XenCpuidLeaf>> {
        let max = {
            let mut op = self
                .pool()
                .alloc::<XenDomctl<XenDomctlGetCpuPolicy<'_>>>()?;
            op.set(domid, XenDomctlGetCpuPolicy::size_query());
            self.domctl(&mut op)
                .map_err(|e| e.with_op(Op::GetCpuPolicy))?;
            op.u.nr_leaves()
        };
        let len = usize::try_from(max).unwrap_or(usize::MAX);
        let mut buf = self.pool().alloc_slice::<XenCpuidLeaf>(len)?;
        let written = {
            let mut op = self
                .pool()
                .alloc::<XenDomctl<XenDomctlGetCpuPolicy<'_>>>()?;
            op.set(domid, XenDomctlGetCpuPolicy::new(buf.guest_handle(), None));
            self.domctl(&mut op)
                .map_err(|e| e.with_op(Op::GetCpuPolicy))?;
            op.u.nr_leaves()
        };
        let written = usize::try_from(written).unwrap_or(usize::MAX);
        let Some(leaves) = buf.get(..written) else {
            return Err(Error::BadReply {
                op: Op::GetCpuPolicy,
                detail: format!("{written} leaves written to a buffer of {len}"),
            });
        };
        Ok(leaves.to_vec())
    }

    /// Sets a domain's CPUID policy (`XEN_DOMCTL_set_cpu_policy`), leaves only; Xen audits it
    /// against what the host can offer. Only before the domain first runs.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`]: `ESRCH` for no such domain, `EEXIST` once it has run, `EINVAL` for a
    /// policy the audit refuses.
    pub fn set_cpu_policy(&self, domid: DomId, leaves: &[XenCpuidLeaf]) -> Result<()> {
        let mut buf = self.pool().alloc_slice::<XenCpuidLeaf>(leaves.len())?;
        buf.copy_from_slice(leaves);
        let mut op = self
            .pool()
            .alloc::<XenDomctl<XenDomctlSetCpuPolicy<'_>>>()?;
        op.set(domid, XenDomctlSetCpuPolicy::new(buf.guest_handle(), None));
        self.domctl(&mut op)
            .map_err(|e| e.with_op(Op::SetCpuPolicy))?;
        Ok(())
    }

    /// Size an HVM domain's paging pool, in bytes (`XEN_DOMCTL_set_paging_mempool_size`;
    /// libxl asks for 4 KiB × (256 × vCPUs + memory in MiB) on 4.17, plus shadow overhead).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`]: `ESRCH` for no such domain, `EOPNOTSUPP` for a PV domain, `EINVAL` for
    /// a size that is not a whole number of pages, `ENOMEM` when the host cannot supply it.
    pub fn set_paging_mempool_size(&self, domid: DomId, bytes: u64) -> Result<()> {
        let mut op = self.pool().alloc::<XenDomctl<XenDomctlPagingMempool>>()?;
        op.set(domid, XenDomctlPagingMempool { size: bytes });
        self.domctl(&mut op)
            .map_err(|e| e.with_op(Op::SetPagingMempoolSize))?;
        Ok(())
    }

    /// The size of an HVM domain's paging pool, in bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`]: `ESRCH` for no such domain, `EOPNOTSUPP` for a PV domain.
    pub fn paging_mempool_size(&self, domid: DomId) -> Result<u64> {
        let mut op = self
            .pool()
            .alloc::<XenDomctl<XenDomctlGetPagingMempool>>()?;
        op.set(domid, XenDomctlGetPagingMempool::default());
        self.domctl(&mut op)
            .map_err(|e| e.with_op(Op::GetPagingMempoolSize))?;
        Ok(op.u.size)
    }

    /// Set an HVM domain's parameter (`HVMOP_set_param`).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`]: `ESRCH` for no such domain; `EINVAL` for a PV domain, an index at or
    /// above `HVM_NR_PARAMS`, a parameter the toolstack may not set, or a bad value (a timer
    /// mode above 3, an altp2m mode above 3); `EEXIST` for a set-once parameter set to
    /// something else.
    pub fn set_hvm_param(&self, domid: DomId, param: HvmParam, value: u64) -> Result<()> {
        let mut arg = self.pool().alloc::<XenHvmParam>()?;
        *arg = XenHvmParam {
            domid,
            pad: 0,
            index: param.0,
            value,
        };
        self.hvm_op(Op::SetHvmParam, domid, HVMOP_set_param, &mut arg)?;
        Ok(())
    }

    /// An HVM domain's parameter (`HVMOP_get_param`).
    ///
    /// # Errors
    ///
    /// As for [`XenCtrl::set_hvm_param`].
    pub fn hvm_param(&self, domid: DomId, param: HvmParam) -> Result<u64> {
        let mut arg = self.pool().alloc::<XenHvmParam>()?;
        *arg = XenHvmParam {
            domid,
            pad: 0,
            index: param.0,
            value: 0,
        };
        self.hvm_op(Op::GetHvmParam, domid, HVMOP_get_param, &mut arg)?;
        Ok(arg.value)
    }

    /// Pin frame `mfn` of PV domain `domid` as its top-level (L4) page table, on its behalf
    /// (`mmuext_op` `MMUEXT_PIN_L4_TABLE` with `foreigndom`).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`]: `ESRCH` for no such domain; `EINVAL` for an HVM domain, a frame it
    /// does not own, a frame already pinned, or one that does not validate as an L4 table.
    pub fn pin_l4_table(&self, domid: DomId, mfn: u64) -> Result<()> {
        self.pin_table(domid, 4, mfn)
    }

    /// Pin frame `mfn` of PV domain `domid` as a page table of `level` 1 to 4.
    ///
    /// # Errors
    ///
    /// As for [`XenCtrl::pin_l4_table`]; `EINVAL` (before Xen is called) for another level.
    pub fn pin_table(&self, domid: DomId, level: u32, mfn: u64) -> Result<()> {
        let op = MmuextOp::pin(level, mfn)
            .ok_or_else(|| Error::xen(Op::PinTable, Some(domid), crate::Errno::EINVAL))?;
        let mut buf = self.pool().alloc::<MmuextOp>()?;
        *buf = op;
        self.mmuext_op(Op::PinTable, domid, &mut buf)?;
        Ok(())
    }

    /// Unpin a page table of PV domain `domid` (`MMUEXT_UNPIN_TABLE`).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`]: `ESRCH` for no such domain; `EINVAL` for an HVM domain, a frame it does
    /// not own or one not pinned.
    pub fn unpin_table(&self, domid: DomId, mfn: u64) -> Result<()> {
        let mut buf = self.pool().alloc::<MmuextOp>()?;
        *buf = MmuextOp::unpin(mfn);
        self.mmuext_op(Op::UnpinTable, domid, &mut buf)?;
        Ok(())
    }

    /// Set a domain's e820 memory map (`XENMEM_set_memory_map`), which a PV guest reads back
    /// with `XENMEM_memory_map`.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`]: `ESRCH` for no such domain, `EINVAL` for more than
    /// [`XEN_E820MAX`](crate::build::XEN_E820MAX) entries.
    pub fn set_memory_map(&self, domid: DomId, map: &[E820Entry]) -> Result<()> {
        let mut entries = self.pool().bounce_in(map)?;
        let mut op = self.pool().alloc::<XenForeignMemoryMap<'_>>()?;
        *op = XenForeignMemoryMap::new(domid, entries.guest_handle());
        self.memory_handle_op(Op::SetMemoryMap, domid, XENMEM_set_memory_map, &mut op)?;
        Ok(())
    }
}

/// The most entries Xen 4.17 accepts in a memory map (its `E820MAX`).
pub const XEN_E820MAX: usize = 1024;
