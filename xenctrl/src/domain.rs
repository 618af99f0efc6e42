//! Domains: create, inspect, list, pause, unpause, destroy, and their limits.

use crate::abi::{
    ShutdownReason, XEN_DOMCTL_CDF_hap, XEN_DOMCTL_CDF_hvm, XEN_DOMINF_blocked, XEN_DOMINF_dying,
    XEN_DOMINF_hvm_guest, XEN_DOMINF_paused, XEN_DOMINF_running, XEN_DOMINF_shutdown,
    XenArchDomainconfig, XenDomctl, XenDomctlCreatedomain, XenDomctlDestroydomain,
    XenDomctlGetdomaininfo, XenDomctlMaxMem, XenDomctlMaxVcpus, XenDomctlPausedomain,
    XenDomctlUnpausedomain, XenSysctl, XenSysctlGetdomaininfolist, DOMID_FIRST_RESERVED,
    XEN_X86_EMU_LAPIC,
};
use crate::ctrl::XenCtrl;
use crate::error::{Error, Op, Result};
use crate::DomId;

/// How to create a domain (`XEN_DOMCTL_createdomain`).
///
/// The defaults match what `xl` asks for a guest on Xen 4.17: grant-table version 2, 64 grant
/// frames, 1024 maptrack frames, 1023 event channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateDomain {
    /// The domid to use, or `None` to let Xen pick one.
    pub domid: Option<DomId>,
    /// `XEN_DOMCTL_CDF_*` flags.
    pub flags: u32,
    /// The domain's handle: its UUID.
    pub handle: [u8; 16],
    /// XSM security reference.
    pub ssidref: u32,
    /// Upper bound on vCPUs.
    pub max_vcpus: u32,
    /// Highest event-channel port.
    pub max_evtchn_port: u32,
    /// Grant-table frames (`-1` lets Xen choose).
    pub max_grant_frames: i32,
    /// Maptrack frames (`-1` lets Xen choose).
    pub max_maptrack_frames: i32,
    /// Highest grant-table version the guest may use (1 or 2).
    pub max_grant_version: u32,
    /// x86 emulation flags (`XEN_X86_EMU_*`): 0 for PV, `XEN_X86_EMU_LAPIC` for PVH.
    pub emulation_flags: u32,
}

impl CreateDomain {
    /// A PV guest with `max_vcpus` vCPUs.
    pub fn pv(max_vcpus: u32) -> Self {
        CreateDomain {
            domid: None,
            flags: 0,
            handle: [0; 16],
            ssidref: 0,
            max_vcpus,
            max_evtchn_port: 1023,
            max_grant_frames: 64,
            max_maptrack_frames: 1024,
            max_grant_version: 2,
            emulation_flags: 0,
        }
    }

    /// A PVH guest with `max_vcpus` vCPUs (needs HVM support on the host).
    pub fn pvh(max_vcpus: u32) -> Self {
        CreateDomain {
            flags: XEN_DOMCTL_CDF_hvm | XEN_DOMCTL_CDF_hap,
            emulation_flags: XEN_X86_EMU_LAPIC,
            ..Self::pv(max_vcpus)
        }
    }

    /// Set the UUID handle.
    #[must_use]
    pub fn with_handle(mut self, handle: [u8; 16]) -> Self {
        self.handle = handle;
        self
    }

    /// Ask for a specific domid.
    #[must_use]
    pub fn with_domid(mut self, domid: DomId) -> Self {
        self.domid = Some(domid);
        self
    }

    fn to_abi(&self) -> XenDomctlCreatedomain {
        XenDomctlCreatedomain {
            ssidref: self.ssidref,
            handle: self.handle,
            flags: self.flags,
            max_vcpus: self.max_vcpus,
            max_evtchn_port: self.max_evtchn_port,
            max_grant_frames: self.max_grant_frames,
            max_maptrack_frames: self.max_maptrack_frames,
            grant_opts: self.max_grant_version,
            arch: XenArchDomainconfig {
                emulation_flags: self.emulation_flags,
                misc_flags: 0,
            },
            ..XenDomctlCreatedomain::default()
        }
    }
}

/// What the hypervisor knows about a domain (`XEN_DOMCTL_getdomaininfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainInfo {
    /// The domain id.
    pub domid: DomId,
    /// Raw `XEN_DOMINF_*` flags.
    pub flags: u32,
    /// Pages the domain has.
    pub tot_pages: u64,
    /// Its page limit (`max_mem`), in pages.
    pub max_pages: u64,
    /// Pages claimed but not yet allocated.
    pub outstanding_pages: u64,
    /// Shared pages.
    pub shr_pages: u64,
    /// Paged-out pages.
    pub paged_pages: u64,
    /// CPU time used, in nanoseconds.
    pub cpu_time: u64,
    /// vCPUs online.
    pub nr_online_vcpus: u32,
    /// Highest vCPU id.
    pub max_vcpu_id: u32,
    /// XSM security reference.
    pub ssidref: u32,
    /// The domain's UUID.
    pub handle: [u8; 16],
    /// Its CPU pool.
    pub cpupool: u32,
    /// The frame of its shared-info page: a machine frame for a PV domain (what its builder
    /// maps it by), the guest frame it chose for an HVM domain.
    pub shared_info_frame: u64,
}

impl DomainInfo {
    pub(crate) fn from_abi(i: &XenDomctlGetdomaininfo) -> Self {
        DomainInfo {
            domid: i.domain,
            flags: i.flags,
            tot_pages: i.tot_pages,
            max_pages: i.max_pages,
            outstanding_pages: i.outstanding_pages,
            shr_pages: i.shr_pages,
            paged_pages: i.paged_pages,
            cpu_time: i.cpu_time,
            nr_online_vcpus: i.nr_online_vcpus,
            max_vcpu_id: i.max_vcpu_id,
            ssidref: i.ssidref,
            handle: i.handle,
            cpupool: i.cpupool,
            shared_info_frame: i.shared_info_frame,
        }
    }

    fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// Whether the domain is dying (being destroyed).
    pub fn dying(&self) -> bool {
        self.has(XEN_DOMINF_dying)
    }

    /// Whether the domain is paused.
    pub fn paused(&self) -> bool {
        self.has(XEN_DOMINF_paused)
    }

    /// Whether a vCPU is running.
    pub fn running(&self) -> bool {
        self.has(XEN_DOMINF_running)
    }

    /// Whether all vCPUs are blocked.
    pub fn blocked(&self) -> bool {
        self.has(XEN_DOMINF_blocked)
    }

    /// Whether the domain is HVM (or PVH).
    pub fn hvm(&self) -> bool {
        self.has(XEN_DOMINF_hvm_guest)
    }

    /// Why the domain shut down, if it did.
    pub fn shutdown_reason(&self) -> Option<ShutdownReason> {
        let raw = XenDomctlGetdomaininfo {
            flags: self.flags,
            ..Default::default()
        };
        raw.shutdown_reason()
    }

    /// The state column of `xl list` (4.17's `list_domains`): running `r`, blocked `b`,
    /// paused `p`, shut down `s`, then the shutdown reason's letter from `-rscwS` (poweroff
    /// `-`, reboot `r`, suspend `s`, crash `c`, watchdog `w`, soft reset `S`, `?` beyond;
    /// `-` when not shut down), and dying `d`. A crashed domain is `---sc-`.
    pub fn state_string(&self) -> String {
        const REASON_LETTERS: &[u8] = b"-rscwS";
        let reason = match self.shutdown_reason() {
            None => '-',
            Some(ShutdownReason(r)) => usize::try_from(r)
                .ok()
                .and_then(|r| REASON_LETTERS.get(r))
                .map_or('?', |&l| char::from(l)),
        };
        let flag = |on: bool, c: char| if on { c } else { '-' };
        [
            flag(self.running(), 'r'),
            flag(self.blocked(), 'b'),
            flag(self.paused(), 'p'),
            flag(self.has(XEN_DOMINF_shutdown), 's'),
            reason,
            flag(self.dying(), 'd'),
        ]
        .iter()
        .collect()
    }

    /// Memory in KiB (`tot_pages` × 4).
    pub fn mem_kib(&self) -> u64 {
        self.tot_pages * 4
    }
}

/// How many domains one getdomaininfolist call fetches.
const LIST_BATCH: u32 = 64;

impl XenCtrl {
    /// Create a domain, paused, with no memory. Returns its domid.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`]: `EEXIST` for a domid in use, `EINVAL` for a bad configuration.
    ///
    /// # Examples
    ///
    /// ```
    /// use xenctrl::{CreateDomain, XenCtrl};
    ///
    /// let xc = XenCtrl::simulated(Default::default())?;
    /// let domid = xc.create_domain(&CreateDomain::pv(2))?;
    /// let info = xc.domain_info(domid)?;
    /// assert!(info.paused());
    /// xc.destroy_domain(domid)?;
    /// # Ok::<(), xenctrl::Error>(())
    /// ```
    pub fn create_domain(&self, config: &CreateDomain) -> Result<DomId> {
        // "Any free id" is 0 up to Xen 4.21 and DOMID_ANY from 4.22, where 0 means domain 0.
        let domid = config
            .domid
            .unwrap_or_else(|| self.interface().createdomain_any_id());
        let mut op = self.pool().alloc::<XenDomctl<XenDomctlCreatedomain>>()?;
        op.set(domid, config.to_abi());
        self.domctl(&mut op)
            .map_err(|e| e.with_op(Op::CreateDomain))?;
        Ok(op.domain)
    }

    /// Information about domain `domid`.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with `ESRCH` when there is no such domain.
    pub fn domain_info(&self, domid: DomId) -> Result<DomainInfo> {
        let mut op = self.pool().alloc::<XenDomctl<XenDomctlGetdomaininfo>>()?;
        op.set(domid, XenDomctlGetdomaininfo::default());
        self.domctl(&mut op)
            .map_err(|e| e.with_op(Op::GetDomainInfo))?;
        // Xen answers for the domain it was asked about or fails; check rather than trust.
        if op.u.domain != domid {
            return Err(Error::xen(
                Op::GetDomainInfo,
                Some(domid),
                crate::Errno::ESRCH,
            ));
        }
        Ok(DomainInfo::from_abi(&op.u))
    }

    /// Every domain, in domid order (sysctl getdomaininfolist, fetched in batches).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] if Xen refuses; [`Error::BadReply`] if it claims more domains than fit.
    pub fn domain_list(&self) -> Result<Vec<DomainInfo>> {
        let mut all = Vec::new();
        let mut first: DomId = 0;
        loop {
            let mut infos = self
                .pool()
                .alloc_slice::<XenDomctlGetdomaininfo>(LIST_BATCH as usize)?;
            let got = {
                let mut op = self
                    .pool()
                    .alloc::<XenSysctl<XenSysctlGetdomaininfolist<'_>>>()?;
                op.set(XenSysctlGetdomaininfolist::new(first, infos.guest_handle()));
                self.sysctl(&mut op)
                    .map_err(|e| e.with_op(Op::DomainList))?;
                op.u.num_domains()
            };
            if got > LIST_BATCH {
                return Err(Error::BadReply {
                    op: Op::DomainList,
                    detail: format!("{got} domains reported for a buffer of {LIST_BATCH}"),
                });
            }
            let batch = &infos[..got as usize];
            if let Some(last) = batch.last() {
                if last.domain < first {
                    return Err(Error::BadReply {
                        op: Op::DomainList,
                        detail: format!("domain {} listed after asking from {first}", last.domain),
                    });
                }
            }
            all.extend(batch.iter().map(DomainInfo::from_abi));
            match batch.last() {
                Some(last) if got == LIST_BATCH && last.domain + 1 < DOMID_FIRST_RESERVED => {
                    first = last.domain + 1;
                }
                _ => return Ok(all),
            }
        }
    }

    /// Pause a domain (pauses nest: each needs an unpause).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with `ESRCH` when there is no such domain.
    pub fn pause_domain(&self, domid: DomId) -> Result<()> {
        self.simple_domctl(Op::PauseDomain, domid, XenDomctlPausedomain {})
    }

    /// Unpause a domain.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with `ESRCH` when there is no such domain, `EINVAL` when it is not
    /// paused.
    pub fn unpause_domain(&self, domid: DomId) -> Result<()> {
        self.simple_domctl(Op::UnpauseDomain, domid, XenDomctlUnpausedomain {})
    }

    /// What the simulated host found when `domid` first ran after a builder started its vCPU
    /// (the first unpause after a PV vCPU context or an HVM context was set): whether its
    /// boot passed the structural checks and the stand-in guest booted, or which check
    /// failed and crashed it. `None` before that, for a domain never given a vCPU state, and
    /// always on real Xen, where the guest's own kernel runs (and its console says how it
    /// went).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with `ESRCH` when the simulated host has no such domain, `EIO` when its
    /// state file cannot be read.
    ///
    /// # Examples
    ///
    /// ```
    /// use xenctrl::{CreateDomain, XenCtrl};
    ///
    /// let xc = XenCtrl::simulated(Default::default())?;
    /// let d = xc.create_domain(&CreateDomain::pv(1))?;
    /// xc.set_max_vcpus(d, 1)?;
    /// xc.unpause_domain(d)?; // no vCPU context: it just runs, nothing is checked
    /// assert_eq!(xc.sim_boot_report(d)?, None);
    /// # Ok::<(), xenctrl::Error>(())
    /// ```
    pub fn sim_boot_report(&self, domid: DomId) -> Result<Option<crate::backend::sim::BootReport>> {
        self.pool()
            .backend()
            .boot_report(domid)
            .map_err(|e| Error::xen(Op::SimBootReport, Some(domid), e))
    }

    /// Destroy a domain, waiting out Xen's preemption (`EAGAIN`/`ERESTART`).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with `ESRCH` when there is no such domain.
    pub fn destroy_domain(&self, domid: DomId) -> Result<()> {
        loop {
            match self.simple_domctl(Op::DestroyDomain, domid, XenDomctlDestroydomain {}) {
                Err(e) if e.errno() == Some(crate::Errno::EAGAIN) => std::thread::yield_now(),
                other => return other,
            }
        }
    }

    /// Set the domain's memory limit in KiB (`xl mem-max` without the xenstore part).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with `ESRCH` when there is no such domain, `EINVAL` for a limit below
    /// what the domain has.
    pub fn set_max_mem(&self, domid: DomId, max_memkb: u64) -> Result<()> {
        self.simple_domctl(Op::SetMaxMem, domid, XenDomctlMaxMem { max_memkb })
    }

    /// Set the domain's maximum number of vCPUs.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with `ESRCH` when there is no such domain, `EINVAL` for a bad count.
    pub fn set_max_vcpus(&self, domid: DomId, max: u32) -> Result<()> {
        self.simple_domctl(Op::SetMaxVcpus, domid, XenDomctlMaxVcpus { max })
    }

    fn simple_domctl<P>(&self, what: Op, domid: DomId, payload: P) -> Result<()>
    where
        P: crate::abi::DomctlPayload,
    {
        let mut op = self.pool().alloc::<XenDomctl<P>>()?;
        op.set(domid, payload);
        self.domctl(&mut op).map_err(|e| e.with_op(what))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_letters_follow_xl() {
        let mut info = DomainInfo::from_abi(&XenDomctlGetdomaininfo::default());
        assert_eq!(info.state_string(), "------");
        info.flags = XEN_DOMINF_paused | XEN_DOMINF_blocked;
        assert_eq!(info.state_string(), "-bp---");
        info.flags = XEN_DOMINF_shutdown | (3 << 16) | XEN_DOMINF_dying;
        assert_eq!(info.state_string(), "---scd");
        info.flags = XEN_DOMINF_shutdown;
        assert_eq!(info.state_string(), "---s--");
        for (code, letters) in [(1, "---sr-"), (2, "---ss-"), (4, "---sw-"), (5, "---sS-")] {
            info.flags = XEN_DOMINF_shutdown | (code << 16);
            assert_eq!(info.state_string(), letters);
        }
        info.flags = XEN_DOMINF_shutdown | (9 << 16);
        assert_eq!(info.state_string(), "---s?-");
    }
}
