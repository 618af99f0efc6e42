//! The simulated host: memory, domains, claims and event channels.
//!
//! Plain data and typed operations, with Xen 4.17's rules (`xen/common/domctl.c`, `domain.c`,
//! `memory.c`, `page_alloc.c`, `event_channel.c`). It knows nothing of addresses or bytes; the
//! dispatcher decodes hypercall arguments and calls it, so it could be hosted in another process
//! behind the same dispatcher.

use std::collections::BTreeMap;

use nix::errno::Errno;

use super::boot::BootReport;
use super::build::SimBuild;
use super::evtchn::{EvtchnEvent, SimEventChannels};
use super::gnttab::SimGrantTable;
use super::SimConfig;
use crate::abi::{
    DomId, XEN_DOMCTL_CDF_hap, XEN_DOMCTL_CDF_hvm, XEN_DOMCTL_CDF_iommu, XEN_DOMCTL_CDF_xs_domain,
    XEN_DOMCTL_GRANT_version_mask, XEN_DOMINF_dying, XEN_DOMINF_hap, XEN_DOMINF_hvm_guest,
    XEN_DOMINF_paused, XEN_DOMINF_running, XEN_DOMINF_shutdown, XEN_DOMINF_shutdownshift,
    XEN_DOMINF_xs_domain, XEN_SYSCTL_PHYSCAP_gnttab_v1, XEN_SYSCTL_PHYSCAP_gnttab_v2,
    XEN_SYSCTL_PHYSCAP_hap, XEN_SYSCTL_PHYSCAP_hvm, XEN_SYSCTL_PHYSCAP_pv,
    XEN_SYSCTL_PHYSCAP_shadow, XenArchDomainconfig, XenDomainHandle, XenDomctlCreatedomain,
    XenDomctlGetdomaininfo, XenSysctlPhysinfo, DOMID_FIRST_RESERVED, DOMID_SELF,
    XEN_INVALID_MAX_VCPU_ID, XEN_X86_EMU_ALL, XEN_X86_EMU_LAPIC, XEN_X86_EMU_PIT, XEN_X86_EMU_VPCI,
};

/// The domain the simulated toolstack runs in (the hardware and control domain).
pub const SIM_DOM0: DomId = 0;

/// Largest extent order the control domain may request (`CONFIG_HWDOM_MAX_ORDER` on x86).
pub(crate) const CALLER_MAX_ORDER: u32 = 12;
/// Largest extent order at all (`MAX_ORDER` on x86), allowed for populate-on-demand.
pub(crate) const MAX_ORDER: u32 = 18;
/// Xen 4.17's default `gnttab_max_frames` and `gnttab_max_maptrack_frames`.
const MAX_GRANT_FRAMES: i32 = 64;
const MAX_MAPTRACK_FRAMES: i32 = 1024;
/// `HVM_MAX_VCPUS`.
const HVM_MAX_VCPUS: u32 = 128;
/// Controller pause count limit.
const MAX_PAUSE_COUNT: u32 = 255;
/// Xen caps `max_pages` at what its `unsigned int` field holds.
const MAX_PAGES_LIMIT: u64 = u32::MAX as u64;

/// Life-cycle state of a simulated domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimDomainState {
    /// Alive (running unless paused).
    Alive,
    /// The guest shut down with this code (`SHUTDOWN_*`); it stays until destroyed.
    Shutdown(u32),
    /// Destroy has started and not finished (only reachable through
    /// [`SimState::set_dying`], to model a domain that lingers).
    Dying,
}

/// One simulated domain.
#[derive(Clone, Debug)]
pub struct SimDomain {
    /// The domain id.
    pub domid: DomId,
    /// The configuration it was created with.
    pub config: XenDomctlCreatedomain,
    /// Page limit (`XEN_DOMCTL_max_mem`, in pages).
    pub max_pages: u64,
    /// Pages allocated.
    pub tot_pages: u64,
    /// Pages claimed and not yet allocated.
    pub outstanding_pages: u64,
    /// Toolstack pause count (1 at creation: domains start paused).
    pub pause_count: u32,
    /// Whether the toolstack has unpaused it for the first time.
    pub creation_finished: bool,
    /// Whether `XEN_DOMCTL_max_vcpus` has created its vCPUs.
    pub vcpus_created: bool,
    /// Alive, shut down or dying.
    pub state: SimDomainState,
    /// Guest frame → machine frame of each populated page.
    pub physmap: BTreeMap<u64, u64>,
    /// Event-channel ports: what each is bound to, its pending and mask bits.
    pub evtchn: SimEventChannels,
    /// Machine frames of the grant table (version 1 entries, 512 per frame), grown on demand
    /// up to `config.max_grant_frames`, as Xen grows it. They come from Xen's own heap, not
    /// the domain's allocation.
    pub grant_frames: Vec<u64>,
    /// What Xen and the domain's kernel know of its grants beyond the entries themselves
    /// (see [`super::gnttab`]).
    pub grants: SimGrantTable,
    /// What a domain builder set: vCPU contexts, HVM parameters and records, pinned page
    /// tables, the memory map... (see [`super::build`]).
    pub build: SimBuild,
    /// What the boot checker found when the domain first ran with a vCPU a builder started
    /// (see [`super::boot`]); `None` until then.
    pub boot: Option<BootReport>,
}

impl SimDomain {
    /// Whether it is an HVM (or PVH) domain.
    pub fn is_hvm(&self) -> bool {
        self.config.flags & XEN_DOMCTL_CDF_hvm != 0
    }

    /// Xen's `getdomaininfo()` for this domain.
    pub fn info(&self) -> XenDomctlGetdomaininfo {
        let mut flags = 0;
        if self.is_hvm() {
            flags |= XEN_DOMINF_hvm_guest;
        }
        if self.config.flags & XEN_DOMCTL_CDF_hap != 0 {
            flags |= XEN_DOMINF_hap;
        }
        if self.config.flags & XEN_DOMCTL_CDF_xs_domain != 0 {
            flags |= XEN_DOMINF_xs_domain;
        }
        match self.state {
            SimDomainState::Dying => flags |= XEN_DOMINF_dying,
            SimDomainState::Shutdown(code) => {
                flags |= XEN_DOMINF_shutdown | ((code & 0xff) << XEN_DOMINF_shutdownshift);
            }
            SimDomainState::Alive => {}
        }
        if self.pause_count > 0 {
            flags |= XEN_DOMINF_paused;
        } else if self.state == SimDomainState::Alive && self.vcpus_created {
            flags |= XEN_DOMINF_running;
        }
        let vcpus = if self.vcpus_created {
            self.config.max_vcpus
        } else {
            0
        };
        XenDomctlGetdomaininfo {
            domain: self.domid,
            flags,
            tot_pages: self.tot_pages,
            max_pages: self.max_pages,
            outstanding_pages: self.outstanding_pages,
            shared_info_frame: if self.is_hvm() {
                u64::MAX
            } else {
                self.build.shared_info_frame
            },
            nr_online_vcpus: vcpus,
            max_vcpu_id: vcpus.checked_sub(1).unwrap_or(XEN_INVALID_MAX_VCPU_ID),
            ssidref: self.config.ssidref,
            handle: self.config.handle,
            cpupool: self.config.cpupool_id,
            gpaddr_bits: 52,
            arch_config: self.config.arch,
            ..Default::default()
        }
    }
}

/// The simulated host.
#[derive(Clone, Debug)]
pub struct SimState {
    /// Host RAM in pages.
    pub total_pages: u64,
    /// Pages in the heap (claimed or not).
    pub free_pages: u64,
    /// Sum of all domains' outstanding claims.
    pub outstanding_claims: u64,
    /// Online CPUs.
    pub nr_cpus: u32,
    /// CPU frequency in kHz.
    pub cpu_khz: u32,
    /// The domains, ordered by id like Xen's domain list.
    pub domains: BTreeMap<DomId, SimDomain>,
    /// Last automatically allocated domain id (Xen's `rover`).
    pub(super) rover: DomId,
    /// Next machine frame to hand out.
    pub(super) next_mfn: u64,
    /// Runs `(mfn, count)` of frames freed since the simulator last scrubbed their contents
    /// (not saved: each process scrubs what its own calls freed).
    pub(super) freed: Vec<(u64, u64)>,
    /// Why the simulated Xen crashed, once it has (as real Xen does on some inputs, e.g. an
    /// event for a domain without vCPUs): every later hypercall or device call answers `EIO`.
    /// Saved with a persistent host, so every process sees the crash.
    pub crashed: Option<String>,
    /// Frames this process's foreign mappings hold, and what waits on them (not saved: see
    /// `sim/foreign.rs`).
    pub(super) foreign: super::foreign::ForeignHolds,
    /// Ports raised or closed since the simulator last told the `/dev/xen/evtchn` handles
    /// (not saved: each process delivers what its own calls raised).
    pub(super) evtchn_events: Vec<EvtchnEvent>,
}

impl SimState {
    /// A host as `config` describes, with dom0 running and owning `dom0_mib`.
    pub fn new(config: &SimConfig) -> Self {
        let total_pages = config.total_mib * 256;
        let dom0_pages = (config.dom0_mib * 256).min(total_pages);
        let mut s = Self {
            total_pages,
            free_pages: total_pages - dom0_pages,
            outstanding_claims: 0,
            nr_cpus: config.nr_cpus.max(1),
            cpu_khz: config.cpu_khz,
            domains: BTreeMap::new(),
            rover: 0,
            next_mfn: dom0_pages,
            freed: Vec::new(),
            crashed: None,
            foreign: Default::default(),
            evtchn_events: Vec::new(),
        };
        let dom0 = SimDomain {
            domid: SIM_DOM0,
            config: XenDomctlCreatedomain {
                max_vcpus: s.nr_cpus,
                max_evtchn_port: 4095,
                max_grant_frames: MAX_GRANT_FRAMES,
                max_maptrack_frames: MAX_MAPTRACK_FRAMES,
                ..Default::default()
            },
            max_pages: dom0_pages,
            tot_pages: dom0_pages,
            outstanding_pages: 0,
            pause_count: 0,
            creation_finished: true,
            vcpus_created: true,
            state: SimDomainState::Alive,
            physmap: BTreeMap::new(),
            evtchn: SimEventChannels::default(),
            grant_frames: Vec::new(),
            grants: SimGrantTable::default(),
            build: SimBuild::new(false, s.cpu_khz, 0),
            boot: None,
        };
        s.domains.insert(SIM_DOM0, dom0);
        s
    }

    /// `rcu_lock_domain_by_any_id`: `DOMID_SELF` is the caller (dom0).
    pub(crate) fn resolve(domid: DomId) -> DomId {
        if domid == DOMID_SELF {
            SIM_DOM0
        } else {
            domid
        }
    }

    /// The domain `domid` (no `DOMID_SELF` resolution), or `ESRCH`.
    pub fn domain(&self, domid: DomId) -> Result<&SimDomain, Errno> {
        self.domains.get(&domid).ok_or(Errno::ESRCH)
    }

    pub(crate) fn domain_mut(&mut self, domid: DomId) -> Result<&mut SimDomain, Errno> {
        self.domains.get_mut(&domid).ok_or(Errno::ESRCH)
    }

    /// `XEN_SYSCTL_physinfo`.
    pub fn physinfo(&self) -> XenSysctlPhysinfo {
        XenSysctlPhysinfo {
            threads_per_core: 1,
            cores_per_socket: self.nr_cpus,
            nr_cpus: self.nr_cpus,
            max_cpu_id: self.nr_cpus - 1,
            nr_nodes: 1,
            max_node_id: 0,
            cpu_khz: self.cpu_khz,
            capabilities: XEN_SYSCTL_PHYSCAP_hvm
                | XEN_SYSCTL_PHYSCAP_pv
                | XEN_SYSCTL_PHYSCAP_hap
                | XEN_SYSCTL_PHYSCAP_shadow
                | XEN_SYSCTL_PHYSCAP_gnttab_v1
                | XEN_SYSCTL_PHYSCAP_gnttab_v2,
            total_pages: self.total_pages,
            free_pages: self.free_pages,
            outstanding_pages: self.outstanding_claims,
            max_mfn: self.total_pages.saturating_sub(1),
            ..Default::default()
        }
    }

    /// `XEN_DOMCTL_createdomain`: `domid` 0 or reserved allocates one; returns the new id.
    ///
    /// # Errors
    ///
    /// `EEXIST` (id in use), `ENOMEM` (no free id), `EINVAL`/`EOPNOTSUPP` (bad config, as Xen's
    /// `sanitise_domain_config`, `grant_table_init` and `emulation_flags_ok`).
    pub fn create_domain(
        &mut self,
        domid: DomId,
        config: &XenDomctlCreatedomain,
    ) -> Result<DomId, Errno> {
        let domid = if domid > 0 && domid < DOMID_FIRST_RESERVED {
            if self.domains.contains_key(&domid) {
                return Err(Errno::EEXIST);
            }
            domid
        } else {
            let mut dom = self.rover.wrapping_add(1);
            loop {
                if dom == DOMID_FIRST_RESERVED {
                    dom = 1;
                }
                if dom == self.rover {
                    return Err(Errno::ENOMEM);
                }
                if !self.domains.contains_key(&dom) {
                    break;
                }
                dom += 1;
            }
            self.rover = dom;
            dom
        };
        Self::sanitise(config)?;
        let mut config = *config;
        if config.max_grant_frames < 0 {
            config.max_grant_frames = MAX_GRANT_FRAMES;
        }
        if config.max_maptrack_frames < 0 {
            config.max_maptrack_frames = MAX_MAPTRACK_FRAMES;
        }
        let shared_info = self.next_mfn;
        self.next_mfn += 1;
        let build = SimBuild::new(
            config.flags & XEN_DOMCTL_CDF_hvm != 0,
            self.cpu_khz,
            shared_info,
        );
        self.domains.insert(
            domid,
            SimDomain {
                domid,
                config,
                max_pages: 0,
                tot_pages: 0,
                outstanding_pages: 0,
                pause_count: 1,
                creation_finished: false,
                vcpus_created: false,
                state: SimDomainState::Alive,
                physmap: BTreeMap::new(),
                evtchn: SimEventChannels::default(),
                grant_frames: Vec::new(),
                grants: SimGrantTable::default(),
                build,
                boot: None,
            },
        );
        Ok(domid)
    }

    fn sanitise(c: &XenDomctlCreatedomain) -> Result<(), Errno> {
        let hvm = c.flags & XEN_DOMCTL_CDF_hvm != 0;
        if c.flags & !crate::abi::XEN_DOMCTL_CDF_MAX.wrapping_mul(2).wrapping_sub(1) != 0
            || c.grant_opts & !XEN_DOMCTL_GRANT_version_mask != 0
            || c.max_vcpus < 1
            || (c.flags & XEN_DOMCTL_CDF_hap != 0 && !hvm)
            // The simulated host has no IOMMU, no processor trace and no vPMU.
            || c.flags & XEN_DOMCTL_CDF_iommu != 0
            || c.iommu_opts != 0
            || c.vmtrace_size != 0
            || c.flags & crate::abi::XEN_DOMCTL_CDF_vpmu != 0
            || (hvm && c.max_vcpus > HVM_MAX_VCPUS)
            || c.cpupool_id != 0
        {
            return Err(Errno::EINVAL);
        }
        let grant = if c.max_grant_frames < 0 {
            MAX_GRANT_FRAMES
        } else {
            c.max_grant_frames
        };
        let maptrack = if c.max_maptrack_frames < 0 {
            MAX_MAPTRACK_FRAMES
        } else {
            c.max_maptrack_frames
        };
        if !(1..=MAX_GRANT_FRAMES).contains(&grant) || maptrack > MAX_MAPTRACK_FRAMES {
            return Err(Errno::EINVAL);
        }
        let em = c.arch.emulation_flags;
        if c.arch.misc_flags & !crate::abi::XEN_X86_MSR_RELAXED != 0 || em & !XEN_X86_EMU_ALL != 0 {
            return Err(Errno::EINVAL);
        }
        let em_ok = if hvm {
            em == XEN_X86_EMU_ALL & !XEN_X86_EMU_VPCI || em == XEN_X86_EMU_LAPIC
        } else {
            em == 0 || em == XEN_X86_EMU_PIT
        };
        if !em_ok {
            return Err(Errno::EOPNOTSUPP);
        }
        Ok(())
    }

    /// `XEN_DOMCTL_getdomaininfo`: the domain `domid`, or (4.17, `exact == false`) the first
    /// domain above it.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a reserved id that names no domain, `ESRCH` when none is found.
    pub fn getdomaininfo(
        &self,
        domid: DomId,
        exact: bool,
    ) -> Result<XenDomctlGetdomaininfo, Errno> {
        if let Some(d) = self.domains.get(&domid) {
            return Ok(d.info());
        }
        if domid >= DOMID_FIRST_RESERVED {
            return Err(Errno::EINVAL);
        }
        if exact {
            return Err(Errno::ESRCH);
        }
        self.domains
            .range(domid..)
            .next()
            .map(|(_, d)| d.info())
            .ok_or(Errno::ESRCH)
    }

    /// `XEN_SYSCTL_getdomaininfolist`: up to `max` domains with id `>= first`.
    pub fn domain_list(&self, first: DomId, max: usize) -> Vec<XenDomctlGetdomaininfo> {
        self.domains
            .range(first..)
            .take(max)
            .map(|(_, d)| d.info())
            .collect()
    }

    /// `XEN_DOMCTL_pausedomain`.
    ///
    /// # Errors
    ///
    /// `ESRCH`, `EINVAL` (dom0 pausing itself), `EOVERFLOW` (more than 255 pauses).
    pub fn pause(&mut self, domid: DomId) -> Result<(), Errno> {
        let d = self.domain_mut(domid)?;
        if domid == SIM_DOM0 {
            return Err(Errno::EINVAL);
        }
        if d.pause_count >= MAX_PAUSE_COUNT {
            return Err(Errno::EOVERFLOW);
        }
        d.pause_count += 1;
        Ok(())
    }

    /// `XEN_DOMCTL_unpausedomain`.
    ///
    /// # Errors
    ///
    /// `ESRCH`, `EINVAL` (not paused).
    pub fn unpause(&mut self, domid: DomId) -> Result<(), Errno> {
        let d = self.domain_mut(domid)?;
        if d.pause_count == 0 {
            return Err(Errno::EINVAL);
        }
        d.pause_count -= 1;
        if d.pause_count == 0 {
            d.creation_finished = true;
        }
        Ok(())
    }

    /// `XEN_DOMCTL_destroydomain`: release everything and remove the domain; or, while a
    /// foreign mapping of this process holds some of its memory, everything else, leaving it
    /// dying until the mapping goes.
    ///
    /// # Errors
    ///
    /// `ESRCH`, `EINVAL` (dom0 destroying itself).
    pub fn destroy(&mut self, domid: DomId) -> Result<(), Errno> {
        self.domain(domid)?;
        if domid == SIM_DOM0 {
            return Err(Errno::EINVAL);
        }
        self.set_outstanding(domid, 0)?;
        // `evtchn_destroy`, in `domain_kill` before the memory goes: every port closed, so
        // the other ends wait unbound again; dom0 hears of it (`VIRQ_DOM_EXC`).
        self.evtchn_close_all(domid);
        if self.destroy_while_mapped(domid) {
            // Some of its memory is mapped: it lingers, dying, until that goes.
            self.domain_exception();
            return Ok(());
        }
        if let Some(d) = self.domains.remove(&domid) {
            self.free_pages += d.tot_pages;
            // A page another domain still has mapped keeps its contents (Xen frees it only
            // when the last mapping goes); the simulator never hands its frame out again.
            let mapped: std::collections::BTreeSet<u64> =
                d.grants.active.values().map(|a| a.mfn).collect();
            self.freed.extend(
                d.physmap
                    .values()
                    .filter(|m| !mapped.contains(m))
                    .map(|&m| (m, 1)),
            );
            self.freed.extend(d.grant_frames.iter().map(|&m| (m, 1)));
        }
        self.domain_exception();
        Ok(())
    }

    /// Mark a domain dying without removing it (to model a domain whose teardown lingers).
    ///
    /// # Errors
    ///
    /// `ESRCH`.
    pub fn set_dying(&mut self, domid: DomId) -> Result<(), Errno> {
        self.domain_mut(domid)?.state = SimDomainState::Dying;
        Ok(())
    }

    /// The guest's side of `SCHEDOP_shutdown`: record the shutdown code, and raise
    /// `VIRQ_DOM_EXC` for dom0 as Xen does once the domain's vCPUs have stopped.
    ///
    /// # Errors
    ///
    /// `ESRCH`.
    pub fn shutdown(&mut self, domid: DomId, reason: u32) -> Result<(), Errno> {
        self.domain_mut(domid)?.state = SimDomainState::Shutdown(reason);
        self.domain_exception();
        Ok(())
    }

    /// `XEN_DOMCTL_max_mem`.
    ///
    /// # Errors
    ///
    /// `ESRCH`.
    pub fn set_max_mem(&mut self, domid: DomId, max_memkb: u64) -> Result<(), Errno> {
        self.domain_mut(domid)?.max_pages = (max_memkb >> 2).min(MAX_PAGES_LIMIT);
        Ok(())
    }

    /// `XEN_DOMCTL_max_vcpus`: must repeat the count given at creation.
    ///
    /// # Errors
    ///
    /// `ESRCH`, `EINVAL`.
    pub fn max_vcpus(&mut self, domid: DomId, max: u32) -> Result<(), Errno> {
        let d = self.domain_mut(domid)?;
        if domid == SIM_DOM0 || max != d.config.max_vcpus {
            return Err(Errno::EINVAL);
        }
        d.vcpus_created = true;
        Ok(())
    }

    /// `domain_set_outstanding_pages`: stake (or with 0, cancel) a claim of `pages` in total.
    ///
    /// # Errors
    ///
    /// `ESRCH`; `EINVAL` (a claim exists, `pages <= tot_pages` or `> max_pages`); `ENOMEM`
    /// (not enough unclaimed free memory).
    pub fn set_outstanding(&mut self, domid: DomId, pages: u64) -> Result<(), Errno> {
        let avail = self.free_pages.saturating_sub(self.outstanding_claims);
        let d = self.domains.get_mut(&domid).ok_or(Errno::ESRCH)?;
        if pages == 0 {
            self.outstanding_claims -= d.outstanding_pages;
            d.outstanding_pages = 0;
            return Ok(());
        }
        if d.outstanding_pages != 0 || pages <= d.tot_pages || pages > d.max_pages {
            return Err(Errno::EINVAL);
        }
        let claim = pages - d.tot_pages;
        if claim > avail {
            return Err(Errno::ENOMEM);
        }
        d.outstanding_pages = claim;
        self.outstanding_claims += claim;
        Ok(())
    }

    /// `domain_adjust_tot_pages`: claims shrink as pages arrive (and grow back as they leave).
    fn adjust_tot_pages(&mut self, domid: DomId, delta: i64) {
        let Some(d) = self.domains.get_mut(&domid) else {
            return;
        };
        d.tot_pages = d.tot_pages.wrapping_add_signed(delta);
        if d.outstanding_pages == 0 {
            return;
        }
        let before = i128::from(d.outstanding_pages);
        let after = (before - i128::from(delta)).max(0);
        d.outstanding_pages = u64::try_from(after).unwrap_or(0);
        let sys = i128::from(self.outstanding_claims) - (before - after);
        self.outstanding_claims = u64::try_from(sys.max(0)).unwrap_or(0);
    }

    /// Allocate one extent of `2^order` pages to `domid` (`alloc_domheap_pages` +
    /// `assign_pages`); returns its first machine frame.
    fn alloc_extent(&mut self, domid: DomId, order: u32) -> Option<u64> {
        let n = 1u64.checked_shl(order)?;
        let d = self.domains.get(&domid)?;
        if d.tot_pages.checked_add(n)? > d.max_pages {
            return None; // E2BIG: over-allocation
        }
        if self.outstanding_claims.saturating_add(n) > self.free_pages && d.outstanding_pages < n {
            return None; // memory is claimed by others
        }
        if n > self.free_pages {
            return None;
        }
        self.free_pages -= n;
        self.adjust_tot_pages(domid, i64::try_from(n).ok()?);
        let mfn = self.next_mfn;
        self.next_mfn += n;
        Some(mfn)
    }

    fn free_extent(&mut self, domid: DomId, order: u32) {
        let n = 1u64 << order;
        self.free_pages += n;
        self.adjust_tot_pages(domid, -i64::try_from(n).unwrap_or(0));
    }

    /// `XENMEM_populate_physmap` of one extent at `gpfn`; the machine frame on success. A
    /// translated (HVM) guest addresses its pages by guest frame, a PV guest by machine frame
    /// (what `decrease_reservation` will name).
    pub(crate) fn populate_extent(&mut self, domid: DomId, gpfn: u64, order: u32) -> Option<u64> {
        let mfn = self.alloc_extent(domid, order)?;
        let d = self.domains.get_mut(&domid)?;
        let base = if d.is_hvm() { gpfn } else { mfn };
        for i in 0..(1u64 << order) {
            d.physmap.insert(base.wrapping_add(i), mfn + i);
        }
        Some(mfn)
    }

    /// `XENMEM_increase_reservation` of one extent; the machine frame on success. Its frames
    /// are entered in the physmap under their machine numbers (PV: gmfn == mfn).
    pub(crate) fn increase_extent(&mut self, domid: DomId, order: u32) -> Option<u64> {
        let mfn = self.alloc_extent(domid, order)?;
        let d = self.domains.get_mut(&domid)?;
        for i in 0..(1u64 << order) {
            d.physmap.insert(mfn + i, mfn + i);
        }
        Some(mfn)
    }

    /// `XENMEM_decrease_reservation` of one extent at `gmfn`; whether every page of it was
    /// populated (and is now freed).
    pub(crate) fn decrease_extent(&mut self, domid: DomId, gmfn: u64, order: u32) -> bool {
        let Some(d) = self.domains.get_mut(&domid) else {
            return false;
        };
        let n = 1u64 << order;
        if !(0..n).all(|i| d.physmap.contains_key(&gmfn.wrapping_add(i))) {
            return false;
        }
        for i in 0..n {
            if let Some(m) = d.physmap.remove(&gmfn.wrapping_add(i)) {
                self.freed.push((m, 1));
            }
        }
        self.free_extent(domid, order);
        true
    }

    /// Whether a domain is translated (HVM): Xen writes no frame numbers back for it.
    pub(crate) fn is_hvm(&self, domid: DomId) -> bool {
        self.domains.get(&domid).is_some_and(SimDomain::is_hvm)
    }

    /// The machine frame of grant-table frame `index` of `domid`, growing the table to it if
    /// needed (Xen's `gnttab_grow_table`).
    ///
    /// # Errors
    ///
    /// `ESRCH` for no such domain, `EINVAL` for an index at or beyond its
    /// `max_grant_frames`.
    pub fn grant_frame(&mut self, domid: DomId, index: u32) -> Result<u64, Errno> {
        let domid = Self::resolve(domid);
        let max = self.domain(domid)?.config.max_grant_frames;
        if i64::from(index) >= i64::from(max) {
            return Err(Errno::EINVAL);
        }
        let mut next = self.next_mfn;
        let d = self.domain_mut(domid)?;
        while d.grant_frames.len() <= index as usize {
            d.grant_frames.push(next);
            next += 1;
        }
        let mfn = d.grant_frames[index as usize];
        self.next_mfn = next;
        Ok(mfn)
    }

    /// Take the runs of frames freed since the last call (the simulator scrubs them).
    pub(super) fn take_freed(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.freed)
    }

    /// Check the model's bookkeeping (used by tests after every step).
    pub fn check_invariants(&self) -> Result<(), String> {
        let used: u64 = self.domains.values().map(|d| d.tot_pages).sum();
        if used + self.free_pages != self.total_pages {
            return Err(format!(
                "pages: {used} used + {} free != {} total",
                self.free_pages, self.total_pages
            ));
        }
        let claimed: u64 = self.domains.values().map(|d| d.outstanding_pages).sum();
        if claimed != self.outstanding_claims {
            return Err(format!("claims: {claimed} != {}", self.outstanding_claims));
        }
        for d in self.domains.values() {
            if d.domid != SIM_DOM0 && d.tot_pages < d.physmap.len() as u64 {
                return Err(format!("d{}: physmap larger than tot_pages", d.domid));
            }
        }
        self.check_evtchn_invariants()
    }

    /// A domain handle for tests: 16 bytes from a seed.
    pub fn handle_from(seed: u64) -> XenDomainHandle {
        let mut h = [0u8; 16];
        h[..8].copy_from_slice(&seed.to_le_bytes());
        h[8..].copy_from_slice(&(!seed).to_le_bytes());
        h
    }

    /// A reasonable PV guest configuration (for tests and examples).
    pub fn pv_config(max_vcpus: u32) -> XenDomctlCreatedomain {
        XenDomctlCreatedomain {
            max_vcpus,
            max_evtchn_port: 1023,
            max_grant_frames: 32,
            max_maptrack_frames: 1024,
            grant_opts: 2,
            arch: XenArchDomainconfig::default(),
            ..Default::default()
        }
    }
}
