//! Foreign memory on the simulated host: what Linux's privcmd and Xen do for
//! `IOCTL_PRIVCMD_MMAPBATCH_V2`, `IOCTL_PRIVCMD_MMAP_RESOURCE` and `GNTTABOP_setup_table`.
//!
//! A window is an inaccessible reservation ([`MachineMemory::reserve`]); filling a page maps
//! the machine frame behind the guest frame asked for ([`MachineMemory::map_into`]), so every
//! mapping of a frame, in this process or another that opened the same persistent host, sees
//! the same bytes. Each page answers what Xen 4.17 answers under a PV dom0
//! (`xen/arch/x86/mm.c`: `do_mmu_update`, `get_page_from_l1e`; `xen/common/memory.c`:
//! `acquire_resource`):
//!
//! - a domain that does not exist, or dom0 itself: `ESRCH` for every page (the call as such
//!   succeeds, as Linux's does);
//! - a PV domain: its frames are machine frames; one it does not own is `EBUSY` if it is host
//!   memory, `EPERM` if it is beyond it;
//! - an HVM domain: a guest frame with no memory behind it is `EINVAL`;
//! - a frame made to look paged out ([`SimHypervisor::page_out`]): `ENOENT` until it is "paged
//!   back in", and the call fails with `ENOENT` so that the caller retries those pages.
//!
//! A mapped frame is held, as Xen holds a page reference for every foreign mapping: a domain
//! destroyed while some of its memory is mapped lingers, dying, with those pages, until the
//! last mapping goes (Xen's "zombie" domains), and a held frame is not scrubbed before it is
//! unmapped. Holds belong to the process that mapped, as mappings do on Linux: they are not
//! saved in a persistent host's state file, so a domain destroyed by another process goes at
//! once, and this process's mapping then reads zeros.

#![allow(non_upper_case_globals)]

use std::collections::{BTreeMap, BTreeSet};
use std::ptr::NonNull;

use nix::errno::Errno;
use zerocopy::FromBytes;

use super::machine::{MachineMemory, SimMapping};
use super::memory::GuestMemory;
use super::state::{SimDomainState, SimState, SIM_DOM0};
use super::SimHypervisor;
use crate::abi::{
    DomId, GNTTABOP_setup_table, GnttabSetupTableView, GrantStatus, XENMEM_resource_grant_table,
    XENMEM_resource_grant_table_id_shared, XENMEM_resource_grant_table_id_status, XenPfn,
};
use crate::backend::{ForeignWindow, ResourceId, WindowInner};

/// What `GNTTABOP_setup_table` reports for a grant frame an HVM guest has not mapped: Xen's
/// `INVALID_M2P_ENTRY`.
pub(crate) const INVALID_GFN: u64 = u64::MAX;

/// Grant-table v2 status frames per shared frame: `grant_to_status_frames()` is
/// `DIV_ROUND_UP(frames * 256, 2048)` (256 v2 entries per page, 2048 status words).
const SHARED_FRAMES_PER_STATUS_FRAME: u64 = 8;

/// The simulator's window for foreign frames (see [`crate::backend::ForeignWindow`]).
#[derive(Debug)]
pub(crate) struct SimWindow {
    mapping: SimMapping,
    /// The machine frame shown at each page; `None` while the page is unmapped.
    frames: Vec<Option<u64>>,
    /// Whether an ioctl has filled the window (Linux: the first must cover all of it).
    used: bool,
}

impl SimWindow {
    /// The first byte of the window.
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.mapping.base()
    }
}

/// Machine frames mapped by foreign mappings of this process, and what waits on them.
#[derive(Clone, Debug, Default)]
pub(crate) struct ForeignHolds {
    /// Machine frame → live mappings of it.
    count: BTreeMap<u64, u32>,
    /// Frames their owner let go of while they were mapped (a destroyed domain's grant
    /// frames): freed when the last mapping goes.
    orphans: BTreeSet<u64>,
    /// Domains destroyed while some of their memory was mapped; they linger, dying, until it
    /// is unmapped.
    zombies: BTreeSet<DomId>,
}

impl ForeignHolds {
    fn held(&self, mfn: u64) -> bool {
        self.count.contains_key(&mfn)
    }
}

impl SimState {
    /// The machine frame behind frame `gfn` of `domid`, as a foreign mapping from dom0 would
    /// find it, or the errno Xen answers for that page.
    pub(crate) fn foreign_frame(&self, domid: DomId, gfn: u64) -> Result<u64, Errno> {
        if domid == SIM_DOM0 {
            // `get_pg_owner`: "Cannot specify itself as foreign domain".
            return Err(Errno::ESRCH);
        }
        let d = self.domain(SimState::resolve(domid))?;
        if let Some(&mfn) = d.physmap.get(&gfn) {
            return Ok(mfn);
        }
        if self.is_hvm(d.domid) {
            // `get_page_from_gfn` found nothing.
            return Err(Errno::EINVAL);
        }
        // PV: `gfn` is a machine frame. The grant frames and the shared-info page are shared
        // with the domain.
        if d.grant_frames.contains(&gfn) || d.build.shared_info_frame == gfn {
            return Ok(gfn);
        }
        if gfn < self.total_pages.max(self.next_mfn) {
            // Host memory owned by someone else, or free: `could_not_pin`.
            Err(Errno::EBUSY)
        } else {
            // Not RAM: the domain has no I/O memory rights to it.
            Err(Errno::EPERM)
        }
    }

    /// Frames `first..first + count` of a domain's resource, grown as Xen grows them
    /// (`XENMEM_acquire_resource`).
    pub(crate) fn acquire_resource(
        &mut self,
        domid: DomId,
        resource: ResourceId,
        first: u64,
        count: u64,
    ) -> Result<Vec<u64>, Errno> {
        let max = self.resource_size(domid, resource)?;
        if (first >> 32) != 0 || (first.saturating_add(count) >> 32) != 0 || count == 0 {
            return Err(Errno::EINVAL);
        }
        if resource.id != XENMEM_resource_grant_table_id_shared {
            // Status frames exist only with grant tables version 2, which no simulated guest
            // switches to.
            return Err(Errno::EINVAL);
        }
        if first + count > max {
            return Err(Errno::EINVAL);
        }
        (first..first + count)
            .map(|i| self.grant_frame(domid, u32::try_from(i).map_err(|_| Errno::EINVAL)?))
            .collect()
    }

    /// How many frames a domain's resource has (`XENMEM_acquire_resource` with no list).
    pub(crate) fn resource_size(&self, domid: DomId, resource: ResourceId) -> Result<u64, Errno> {
        // `rcu_lock_remote_domain_by_id`: no DOMID_SELF, and not the caller itself.
        let d = self.domain(domid)?;
        if domid == SIM_DOM0 {
            return Err(Errno::EPERM);
        }
        let max = u64::try_from(d.config.max_grant_frames).unwrap_or(0);
        let frames = match (resource.kind, resource.id) {
            (XENMEM_resource_grant_table, XENMEM_resource_grant_table_id_shared) => max,
            (XENMEM_resource_grant_table, XENMEM_resource_grant_table_id_status) => {
                max.div_ceil(SHARED_FRAMES_PER_STATUS_FRAME)
            }
            // No ioreq servers, no processor-trace buffers, an unknown grant-table id.
            (0..=2, _) => 0,
            _ => return Err(Errno::EOPNOTSUPP),
        };
        if frames == 0 {
            return Err(Errno::EINVAL);
        }
        Ok(frames)
    }

    fn hold(&mut self, mfn: u64) {
        *self.foreign.count.entry(mfn).or_insert(0) += 1;
    }

    /// `XEN_DOMCTL_destroydomain` while some of the domain's frames are mapped: the frames
    /// that are not mapped are freed, and if any of its memory is, the domain lingers, dying,
    /// holding that memory. Returns whether it lingers (the caller then stops there).
    pub(crate) fn destroy_while_mapped(&mut self, domid: DomId) -> bool {
        let holds = &mut self.foreign;
        let Some(d) = self.domains.get_mut(&domid) else {
            return false;
        };
        // Mapped grant frames outlive the table; the rest go with the domain.
        let (held_grant, grant): (Vec<u64>, Vec<u64>) = d
            .grant_frames
            .iter()
            .partition(|&&mfn| holds.count.contains_key(&mfn));
        holds.orphans.extend(held_grant);
        d.grant_frames = grant;
        if !d
            .physmap
            .values()
            .any(|&mfn| holds.count.contains_key(&mfn))
        {
            return false;
        }
        for mfn in std::mem::take(&mut d.grant_frames) {
            self.freed.push((mfn, 1));
        }
        // Pages another domain has grant-mapped keep their contents, as `destroy` keeps them.
        let granted: BTreeSet<u64> = d.grants.active.values().map(|a| a.mfn).collect();
        let unheld: Vec<u64> = d
            .physmap
            .iter()
            .filter(|(_, mfn)| !holds.count.contains_key(mfn))
            .map(|(&gfn, _)| gfn)
            .collect();
        for gfn in unheld {
            if let Some(mfn) = d.physmap.remove(&gfn) {
                if !granted.contains(&mfn) {
                    self.freed.push((mfn, 1));
                }
                d.tot_pages = d.tot_pages.saturating_sub(1);
                self.free_pages += 1;
            }
        }
        d.state = SimDomainState::Dying;
        holds.zombies.insert(domid);
        true
    }

    /// A foreign mapping of `frames` went away: let go of them, free the ones nothing owns
    /// any more, and let a lingering domain go once none of its memory is mapped.
    pub(crate) fn release_foreign(&mut self, frames: &[u64]) {
        for &mfn in frames {
            let Some(n) = self.foreign.count.get_mut(&mfn) else {
                continue;
            };
            *n -= 1;
            if *n == 0 {
                self.foreign.count.remove(&mfn);
                if self.foreign.orphans.remove(&mfn) {
                    self.freed.push((mfn, 1));
                }
            }
        }
        for domid in self.foreign.zombies.clone() {
            let holds = &self.foreign;
            let Some(d) = self.domains.get_mut(&domid) else {
                self.foreign.zombies.remove(&domid);
                continue;
            };
            let granted: BTreeSet<u64> = d.grants.active.values().map(|a| a.mfn).collect();
            let unheld: Vec<u64> = d
                .physmap
                .iter()
                .filter(|(_, mfn)| !holds.held(**mfn))
                .map(|(&gfn, _)| gfn)
                .collect();
            for gfn in unheld {
                if let Some(mfn) = d.physmap.remove(&gfn) {
                    if !granted.contains(&mfn) {
                        self.freed.push((mfn, 1));
                    }
                    d.tot_pages = d.tot_pages.saturating_sub(1);
                    self.free_pages += 1;
                }
            }
            if d.physmap.is_empty() {
                // The last page went: Xen drops the domain's final reference, and tells dom0
                // again (`VIRQ_DOM_EXC` from `complete_domain_destroy`).
                self.free_pages += d.tot_pages;
                self.domains.remove(&domid);
                self.foreign.zombies.remove(&domid);
                self.domain_exception();
            }
        }
    }
}

/// `grant_table_op(cmd, arg, count)`.
pub(super) fn grant_table_op(
    state: &mut SimState,
    mem: &dyn GuestMemory,
    cmd: u64,
    arg: u64,
    count: u64,
) -> Result<u64, Errno> {
    match cmd {
        GNTTABOP_setup_table => {
            if count != 1 {
                return Err(Errno::EINVAL);
            }
            let mut raw = [0u8; size_of::<GnttabSetupTableView>()];
            mem.read(arg, &mut raw)?;
            let op = GnttabSetupTableView::read_from_bytes(&raw).map_err(|_| Errno::EFAULT)?;
            let pfn = size_of::<XenPfn>() as u64;
            if !mem.check(op.frame_list, u64::from(op.nr_frames).saturating_mul(pfn)) {
                return Err(Errno::EFAULT);
            }
            let status = setup_table(state, mem, &op);
            let at = arg + std::mem::offset_of!(GnttabSetupTableView, status) as u64;
            mem.write(at, &status.0.to_ne_bytes())?;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// `gnttab_setup_table`: grow the table and report its first frames; the answer is a status.
fn setup_table(
    state: &mut SimState,
    mem: &dyn GuestMemory,
    op: &GnttabSetupTableView,
) -> GrantStatus {
    let domid = SimState::resolve(op.dom);
    let Ok(d) = state.domain(domid) else {
        return GrantStatus::BAD_DOMAIN;
    };
    let hvm = state.is_hvm(domid);
    if i64::from(op.nr_frames) > i64::from(d.config.max_grant_frames) {
        return GrantStatus::GENERAL_ERROR;
    }
    let mut status = GrantStatus::OKAY;
    for i in 0..op.nr_frames {
        let Ok(mfn) = state.grant_frame(domid, i) else {
            return GrantStatus::GENERAL_ERROR;
        };
        // PV: the machine frame. HVM: where the guest mapped it, and a simulated guest never
        // maps its table.
        let gmfn = if hvm { INVALID_GFN } else { mfn };
        let at = op
            .frame_list
            .wrapping_add(u64::from(i) * size_of::<XenPfn>() as u64);
        if mem.write(at, &gmfn.to_ne_bytes()).is_err() {
            status = GrantStatus::BAD_VIRT_ADDR;
        }
    }
    status
}

impl SimHypervisor {
    /// Make frame `gfn` of `domid` look paged out to the next `attempts` foreign mappings that
    /// ask for it: they answer `ENOENT` for it, as Xen does while its pager brings a frame
    /// back, then map it as usual. For testing the retry of paged-out frames.
    pub fn page_out(&self, domid: DomId, gfn: u64, attempts: u32) {
        self.paged_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((domid, gfn), attempts);
    }

    /// Whether a foreign mapping of `gfn` should see it paged out this time.
    fn take_paged_out(&self, domid: DomId, gfn: u64) -> bool {
        let mut paged = self.paged_out.lock().unwrap_or_else(|e| e.into_inner());
        match paged.get_mut(&(domid, gfn)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    pub(super) fn sim_foreign_window(
        &self,
        pages: usize,
        writable: bool,
    ) -> std::io::Result<ForeignWindow> {
        let mapping = MachineMemory::reserve(pages, writable)?;
        let window = SimWindow {
            mapping,
            frames: vec![None; pages],
            used: false,
        };
        ForeignWindow::new(WindowInner::Sim(window), pages)
    }

    pub(super) fn sim_mmap_batch(
        &self,
        window: &mut ForeignWindow,
        first: usize,
        domid: DomId,
        gfns: &[u64],
        errs: &mut [i32],
    ) -> Result<(), Errno> {
        let pages = window.pages();
        let WindowInner::Sim(w) = window.inner_mut() else {
            return Err(Errno::EINVAL);
        };
        let end = first.checked_add(gfns.len()).ok_or(Errno::EINVAL)?;
        if gfns.is_empty() || errs.len() != gfns.len() || end > pages {
            return Err(Errno::EINVAL);
        }
        // Linux: the first call maps the whole window, later ones only holes in it.
        let fits = if w.used {
            w.frames[first..end].iter().all(Option::is_none)
        } else {
            first == 0 && end == pages
        };
        if !fits {
            return Err(Errno::EINVAL);
        }
        w.used = true;
        errs.fill(0);
        let paged: Vec<bool> = gfns
            .iter()
            .map(|&g| self.take_paged_out(domid, g))
            .collect();
        let frames: Vec<Option<u64>> = self
            .transact(|s| {
                gfns.iter()
                    .zip(errs.iter_mut())
                    .zip(&paged)
                    .map(|((&gfn, err), &paged)| {
                        let found = if paged {
                            Err(Errno::ENOENT)
                        } else {
                            s.foreign_frame(domid, gfn)
                        };
                        match found {
                            Ok(mfn) => {
                                s.hold(mfn);
                                Some(mfn)
                            }
                            Err(e) => {
                                *err = -(e as i32);
                                None
                            }
                        }
                    })
                    .collect()
            })
            .map_err(|_| Errno::EIO)?;
        if let Err(e) = self.machine().map_into(&w.mapping, first, &frames) {
            let held: Vec<u64> = frames.iter().flatten().copied().collect();
            let _ = self.transact(|s| s.release_foreign(&held));
            return Err(e.raw_os_error().map_or(Errno::ENOMEM, Errno::from_raw));
        }
        w.frames[first..end].copy_from_slice(&frames);
        if errs.contains(&-(Errno::ENOENT as i32)) {
            Err(Errno::ENOENT)
        } else {
            Ok(())
        }
    }

    pub(super) fn sim_mmap_resource(
        &self,
        window: &mut ForeignWindow,
        domid: DomId,
        resource: ResourceId,
        first: u64,
    ) -> Result<(), Errno> {
        self.resource_fault()?;
        let pages = window.pages();
        let WindowInner::Sim(w) = window.inner_mut() else {
            return Err(Errno::EINVAL);
        };
        if w.used {
            return Err(Errno::EINVAL);
        }
        let frames = self
            .transact(|s| {
                let frames = s.acquire_resource(domid, resource, first, pages as u64)?;
                for &mfn in &frames {
                    s.hold(mfn);
                }
                Ok::<_, Errno>(frames)
            })
            .map_err(|_| Errno::EIO)??;
        let frames: Vec<Option<u64>> = frames.into_iter().map(Some).collect();
        if let Err(e) = self.machine().map_into(&w.mapping, 0, &frames) {
            let held: Vec<u64> = frames.iter().flatten().copied().collect();
            let _ = self.transact(|s| s.release_foreign(&held));
            return Err(e.raw_os_error().map_or(Errno::ENOMEM, Errno::from_raw));
        }
        w.used = true;
        w.frames = frames;
        Ok(())
    }

    pub(super) fn sim_resource_size(
        &self,
        domid: DomId,
        resource: ResourceId,
    ) -> Result<u64, Errno> {
        self.resource_fault()?;
        self.query(|s| s.resource_size(domid, resource))
            .map_err(|_| Errno::EIO)?
    }

    /// An injected fault on `XENMEM_acquire_resource` (the hypercall Linux issues for
    /// `IOCTL_PRIVCMD_MMAP_RESOURCE`): how a test makes this host look like one without
    /// resource mapping (`EOPNOTSUPP`).
    fn resource_fault(&self) -> Result<(), Errno> {
        let subop = u32::try_from(crate::abi::XENMEM_acquire_resource).unwrap_or(u32::MAX);
        match self.take_fault(crate::abi::__HYPERVISOR_memory_op, Ok(subop)) {
            Some(errno) => Err(errno),
            None => Ok(()),
        }
    }

    pub(super) fn sim_release_window(&self, window: ForeignWindow) {
        match window.into_inner() {
            WindowInner::Sim(w) => {
                let held: Vec<u64> = w.frames.iter().flatten().copied().collect();
                // Unmap first, then let go of the frames (which may free and scrub them).
                drop(w.mapping);
                if !held.is_empty() {
                    // Best effort: a state file that cannot be written keeps the holds.
                    let _ = self.transact(|s| s.release_foreign(&held));
                }
            }
            other => drop(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;

    /// A host with a PV domain whose frames `0..4` are populated; returns the machine frames.
    fn host() -> (SimHypervisor, DomId, Vec<u64>) {
        let sim = SimHypervisor::default();
        let (domid, frames) = sim.with_state(|s| {
            let d = s.create_domain(0, &SimState::pv_config(1)).unwrap();
            s.set_max_mem(d, 64).unwrap();
            let frames = (0..4)
                .map(|g| s.populate_extent(d, g, 0).unwrap())
                .collect();
            (d, frames)
        });
        (sim, domid, frames)
    }

    /// Linux's rules for a privcmd window: the first batch covers all of it; later ones only
    /// pages still unmapped; a resource mapping needs a fresh window.
    #[test]
    fn windows_follow_privcmds_rules() {
        let (sim, d, frames) = host();
        let mut errs = [0i32; 4];
        let mut w = sim.foreign_window(4, true).unwrap();
        assert_eq!(
            sim.mmap_batch(&mut w, 0, d, &frames[..2], &mut errs[..2]),
            Err(Errno::EINVAL),
            "a first batch smaller than the window"
        );
        let asked = [frames[0], 1 << 40, frames[2], frames[3]];
        sim.mmap_batch(&mut w, 0, d, &asked, &mut errs).unwrap();
        assert_eq!(errs, [0, -(Errno::EPERM as i32), 0, 0]);
        assert_eq!(
            sim.mmap_batch(&mut w, 0, d, &frames[..2], &mut errs[..2]),
            Err(Errno::EINVAL),
            "a batch over pages already mapped"
        );
        sim.mmap_batch(&mut w, 1, d, &frames[1..2], &mut errs[1..2])
            .unwrap();
        assert_eq!(errs[1], 0, "the hole filled");
        assert_eq!(
            sim.mmap_batch(&mut w, 3, d, &frames[..2], &mut errs[..2]),
            Err(Errno::EINVAL),
            "beyond the window"
        );
        let resource = ResourceId {
            kind: XENMEM_resource_grant_table,
            id: XENMEM_resource_grant_table_id_shared,
        };
        assert_eq!(
            sim.mmap_resource(&mut w, d, resource, 0),
            Err(Errno::EINVAL),
            "a used window"
        );
        sim.with_state(|s| assert_eq!(s.foreign.count.len(), 4));
        sim.release_window(w);
        sim.with_state(|s| assert!(s.foreign.count.is_empty(), "released"));
    }

    #[test]
    fn frames_are_held_per_mapping() {
        let (sim, d, frames) = host();
        let mut errs = [0i32; 1];
        let mut a = sim.foreign_window(1, true).unwrap();
        let mut b = sim.foreign_window(1, false).unwrap();
        sim.mmap_batch(&mut a, 0, d, &frames[..1], &mut errs)
            .unwrap();
        sim.mmap_batch(&mut b, 0, d, &frames[..1], &mut errs)
            .unwrap();
        sim.with_state(|s| {
            assert_eq!(s.foreign.count.get(&frames[0]), Some(&2));
            s.destroy(d).unwrap();
            let dom = s.domain(d).unwrap();
            assert_eq!(dom.state, SimDomainState::Dying);
            assert_eq!(dom.tot_pages, 1);
            s.check_invariants().unwrap();
        });
        sim.release_window(a);
        sim.with_state(|s| assert!(s.domain(d).is_ok(), "still mapped once"));
        sim.release_window(b);
        sim.with_state(|s| {
            assert!(s.domain(d).is_err(), "gone with its last mapping");
            assert!(s.foreign.zombies.is_empty());
            s.check_invariants().unwrap();
        });
    }

    #[test]
    fn resource_errors_are_xens() {
        let (sim, d, _) = host();
        let shared = ResourceId {
            kind: XENMEM_resource_grant_table,
            id: XENMEM_resource_grant_table_id_shared,
        };
        let size = |domid, kind, id| sim.resource_size(domid, ResourceId { kind, id });
        assert_eq!(sim.resource_size(d, shared), Ok(32), "pv_config's table");
        assert_eq!(size(d, XENMEM_resource_grant_table, 1), Ok(4));
        assert_eq!(size(d, XENMEM_resource_grant_table, 2), Err(Errno::EINVAL));
        assert_eq!(size(d, 0, 0), Err(Errno::EINVAL), "no ioreq server");
        assert_eq!(size(d, 2, 0), Err(Errno::EINVAL), "no vmtrace buffer");
        assert_eq!(size(d, 3, 0), Err(Errno::EOPNOTSUPP), "unknown type");
        assert_eq!(sim.resource_size(SIM_DOM0, shared), Err(Errno::EPERM));
        assert_eq!(sim.resource_size(999, shared), Err(Errno::ESRCH));
        assert_eq!(
            sim.resource_size(crate::abi::DOMID_SELF, shared),
            Err(Errno::ESRCH),
            "no DOMID_SELF for resources"
        );
        let mut w = sim.foreign_window(2, true).unwrap();
        assert_eq!(sim.mmap_resource(&mut w, d, shared, 31), Err(Errno::EINVAL));
        sim.mmap_resource(&mut w, d, shared, 30).unwrap();
        sim.with_state(|s| assert_eq!(s.domain(d).unwrap().grant_frames.len(), 32));
        sim.release_window(w);
    }
}
