//! Grant tables on the simulated host: Xen's grant rules, and the Linux drivers a domain's
//! user space reaches them through (`gntdev` to map other domains' grants, `gntalloc` to share
//! its own pages, the kernel's grant-reference allocator).
//!
//! **Where things live.** A grant entry (version 1: `{flags, domid, frame}`) is 8 bytes in the
//! granting domain's grant-table frames ([`SimState::grant_frame`]), in machine memory, exactly
//! where Xen and the guest would see it. The granted page's contents are machine memory too, so
//! a page shared in one simulated domain and mapped in another are the same bytes, through two
//! `MAP_SHARED` windows ([`SimMapping`]). What Xen keeps to itself (the *active* entry: who has
//! a grant mapped, and how many times for reading and for writing) and what a guest kernel keeps
//! (which references it has handed out, which pages it allocated for them) is in the model
//! ([`SimGrantTable`], per domain), saved with the rest of a persistent host.
//!
//! **Xen's rules** (`xen/common/grant_table.c`, 4.17): a map or copy of reference `r` of domain
//! `G` by domain `M` fails with `GNTST_bad_domain` if `G` does not exist, `GNTST_bad_gntref` if
//! `r` lies beyond `G`'s table as grown so far, `GNTST_general_error` if the entry is not a
//! `GTF_permit_access` grant to `M` (an ungranted, ended or foreign-bound entry; or, once
//! mapped, if `M` is not the domain that has it mapped), or if `M` asks to write a
//! `GTF_readonly` entry, and `GNTST_bad_page` if the granted frame is not a page of `G`. While
//! mapped, Xen sets `GTF_reading` (and `GTF_writing` for a writable mapping) in the shared
//! entry, and clears them when the last such mapping goes.
//!
//! **Linux's rules** (`drivers/xen/gntdev.c`, `gntalloc.c`, `grant-table.c`, 6.1): gntdev maps
//! all references of a request at `mmap` time and fails the whole request with `EINVAL` if Xen
//! refused any of them ([`SimGrantError::statuses`] still says which, and why); grant copy
//! refuses local-to-local segments and grant-side ranges that cross a page with `EINVAL`, and
//! reports Xen's status per segment. gntalloc allocates zeroed pages, grants them, and fails
//! with `ENOSPC` past its limit of 1024 pages or when the grant table cannot grow any further.
//! Ending a grant that the other side still has mapped is deferred: the reference and the page
//! stay until the other side unmaps, then go (the kernel retries; the simulator finishes it at
//! the unmap).
//!
//! **Which pages gntalloc uses.** Dom0's physmap is empty in the model, and its boot allocation
//! is the machine frames below its `tot_pages`; dom0's kernel takes the lowest of those not
//! already shared, so sharing costs dom0 no new memory, as on Linux. A guest's kernel is given
//! a new page for each shared one (`increase_reservation` of one page: it must have room under
//! its `max_pages`, else `ENOMEM`), entered in its physmap with gfn = mfn, and returned when the
//! share goes.
//!
//! **Unmap notifications.** The byte is cleared in the shared page (before the mapping goes, so
//! the other side sees it); an event is recorded ([`SimHypervisor::take_unmap_events`]) and sent
//! on its port, which the event-channel model delivers.
//!
//! Known gaps: destroying a domain that has other domains' grants mapped does not release its
//! pins (Xen's `gnttab_release_mappings`); only version 1 tables; no transitive or sub-page
//! grants.

mod copy;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use nix::errno::Errno;
use zerocopy::{FromBytes, IntoBytes};

pub use self::copy::{SimCopyDest, SimCopySegment, SimCopySource, SimGrantAddr};
use super::machine::SimMapping;
use super::state::{SimState, SIM_DOM0};
use super::SimHypervisor;
use crate::abi::{
    DomId, GTF_permit_access, GTF_reading, GTF_readonly, GTF_sub_page, GTF_type_mask, GTF_writing,
    GrantEntryV1, GrantStatus, GNTTAB_NR_RESERVED_ENTRIES,
};
use crate::{DomainId, GrantRef, PAGE_SIZE};

/// gntalloc's default limit on pages shared at once (its `limit` module parameter).
pub const GNTALLOC_LIMIT: usize = 1024;

const ENTRY_SIZE: u64 = size_of::<GrantEntryV1>() as u64;
/// Version 1 entries per 4 KiB grant-table frame.
const GRANT_ENTRIES_PER_FRAME_V1: u32 = 512;
static_assertions::const_assert_eq!(
    GRANT_ENTRIES_PER_FRAME_V1 as usize * size_of::<GrantEntryV1>(),
    PAGE_SIZE
);

/// Xen's active entry for a grant another domain has mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimActiveGrant {
    /// The domain that has it mapped.
    pub mapper: DomId,
    /// The machine frame it maps.
    pub mfn: u64,
    /// Read-only mappings.
    pub readers: u32,
    /// Writable mappings.
    pub writers: u32,
}

/// A grant reference a domain's kernel has handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimKernelGrant {
    /// The page the kernel allocated for it (gntalloc), if it did.
    pub page: Option<u64>,
    /// Its owner let go of it while another domain still had it mapped: the kernel ends the
    /// grant and frees the page once that mapping goes.
    pub released: bool,
}

/// Per-domain grant state that is not in the grant entries themselves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimGrantTable {
    /// Xen's active entries of this domain's table: references another domain has mapped.
    pub active: BTreeMap<u32, SimActiveGrant>,
    /// The references this domain's kernel has handed out.
    pub kernel: BTreeMap<u32, SimKernelGrant>,
}

/// Why a simulated grant operation failed: the errno Linux's driver returns and, for a map,
/// Xen's status for each reference asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("simulated grant operation failed: {errno}")]
pub struct SimGrantError {
    /// What the driver's ioctl or `mmap` returns.
    pub errno: Errno,
    /// For a map refused by Xen: one status per reference, in order (`GNTST_okay` for those
    /// that would have mapped); empty otherwise.
    pub statuses: Vec<GrantStatus>,
}

impl From<Errno> for SimGrantError {
    fn from(errno: Errno) -> Self {
        Self {
            errno,
            statuses: Vec::new(),
        }
    }
}

/// An unmap notification (`UNMAP_NOTIFY_CLEAR_BYTE` and/or `UNMAP_NOTIFY_SEND_EVENT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimUnmapNotify {
    /// Byte offset in the mapping or share to clear.
    pub clear_byte: Option<usize>,
    /// Event-channel port (of the notifying domain) to signal.
    pub event: Option<u32>,
}

/// Where a grant entry lives: the machine frame of its grant-table frame and its offset.
fn entry_location(state: &SimState, domid: DomId, gref: u32) -> Result<(u64, u64), GrantStatus> {
    let d = state.domain(domid).map_err(|_| GrantStatus::BAD_DOMAIN)?;
    let index = (gref / GRANT_ENTRIES_PER_FRAME_V1) as usize;
    let frame = d.grant_frames.get(index).ok_or(GrantStatus::BAD_GNTREF)?;
    Ok((
        *frame,
        u64::from(gref % GRANT_ENTRIES_PER_FRAME_V1) * ENTRY_SIZE,
    ))
}

/// The machine frame behind a frame number a domain wrote in a grant entry: its physmap's
/// entry, or for dom0 (whose boot memory is the frames below its `tot_pages`, with an empty
/// physmap in the model) the frame itself.
fn frame_to_mfn(state: &SimState, domid: DomId, frame: u64) -> Option<u64> {
    let d = state.domain(domid).ok()?;
    if let Some(&mfn) = d.physmap.get(&frame) {
        return Some(mfn);
    }
    (domid == SIM_DOM0 && frame < d.tot_pages).then_some(frame)
}

impl SimHypervisor {
    fn read_entry(&self, loc: (u64, u64)) -> Result<GrantEntryV1, Errno> {
        let mut raw = [0u8; 8];
        self.machine()
            .read(loc.0, loc.1, &mut raw)
            .map_err(|_| Errno::EIO)?;
        GrantEntryV1::read_from_bytes(&raw).map_err(|_| Errno::EIO)
    }

    fn write_entry(&self, loc: (u64, u64), entry: &GrantEntryV1) -> Result<(), Errno> {
        self.machine()
            .write(loc.0, loc.1, entry.as_bytes())
            .map_err(|_| Errno::EIO)
    }

    /// Rewrite only the flags of an entry (what Xen's and Linux's atomic updates touch).
    fn write_flags(&self, loc: (u64, u64), flags: u16) -> Result<(), Errno> {
        self.machine()
            .write(loc.0, loc.1, &flags.to_ne_bytes())
            .map_err(|_| Errno::EIO)
    }

    /// The guest kernel's `gnttab_grant_foreign_access`: take a free reference of `domid`'s
    /// table (growing it by a frame when full) and grant `frame` to `to`.
    fn kernel_grant(
        &self,
        state: &mut SimState,
        domid: DomId,
        to: DomId,
        frame: u64,
        page: Option<u64>,
        readonly: bool,
    ) -> Result<u32, Errno> {
        let frame32 = u32::try_from(frame).map_err(|_| Errno::EINVAL)?;
        let d = state.domain(domid)?;
        let mut gref = GNTTAB_NR_RESERVED_ENTRIES;
        for (&r, _) in d.grants.kernel.range(GNTTAB_NR_RESERVED_ENTRIES..) {
            if r != gref {
                break;
            }
            gref += 1;
        }
        // The table grows on demand, up to the domain's max_grant_frames.
        state
            .grant_frame(domid, gref / GRANT_ENTRIES_PER_FRAME_V1)
            .map_err(|e| if e == Errno::EINVAL { Errno::ENOSPC } else { e })?;
        let loc = entry_location(state, domid, gref).map_err(|_| Errno::ENOSPC)?;
        let mut flags = GTF_permit_access;
        if readonly {
            flags |= GTF_readonly;
        }
        self.write_entry(
            loc,
            &GrantEntryV1 {
                flags,
                domid: to,
                frame: frame32,
            },
        )?;
        state.domain_mut(domid)?.grants.kernel.insert(
            gref,
            SimKernelGrant {
                page,
                released: false,
            },
        );
        Ok(gref)
    }

    /// End a grant the kernel holds and free what it allocated for it; the caller has checked
    /// that nobody has it mapped.
    fn kernel_end(&self, state: &mut SimState, domid: DomId, gref: u32) -> Result<(), Errno> {
        if let Ok(loc) = entry_location(state, domid, gref) {
            self.write_flags(loc, 0)?;
        }
        let d = state.domain_mut(domid)?;
        let Some(k) = d.grants.kernel.remove(&gref) else {
            return Ok(());
        };
        if let Some(mfn) = k.page {
            if domid != SIM_DOM0 {
                // A guest's page goes back (decrease_reservation of its gfn, which is the mfn).
                state.decrease_extent(domid, mfn, 0);
            }
        }
        Ok(())
    }

    /// Grant `frame` (a frame number as the granting domain names it: a guest frame of its
    /// physmap, or for dom0 a machine frame below its `tot_pages`) of `domain` to `to`, as
    /// `domain`'s kernel would (`gnttab_grant_foreign_access`): a frontend driver's side.
    /// Returns the new reference (the lowest free one from 8 up; 0-7 are the toolstack's).
    ///
    /// # Errors
    ///
    /// `ESRCH` for no such domain, `ENOSPC` when the table is full and at its
    /// `max_grant_frames`, `EINVAL` for a frame number that does not fit an entry.
    pub fn grant_access(
        &self,
        domain: DomainId,
        to: DomainId,
        frame: u64,
        readonly: bool,
    ) -> Result<GrantRef, Errno> {
        self.transact(|state| {
            let domid = SimState::resolve(domain.get());
            self.kernel_grant(state, domid, to.get(), frame, None, readonly)
                .map(GrantRef::new)
        })
        .unwrap_or(Err(Errno::EIO))
    }

    /// End a grant made by [`SimHypervisor::grant_access`] (`gnttab_end_foreign_access_ref`):
    /// the entry is cleared and the reference freed.
    ///
    /// # Errors
    ///
    /// `EBUSY` while another domain has it mapped (nothing changes), `EINVAL` for a reference
    /// the kernel did not hand out, `ESRCH` for no such domain.
    pub fn end_access(&self, domain: DomainId, gref: GrantRef) -> Result<(), Errno> {
        self.transact(|state| {
            let domid = SimState::resolve(domain.get());
            let d = state.domain(domid)?;
            if !d.grants.kernel.contains_key(&gref.get()) {
                return Err(Errno::EINVAL);
            }
            if d.grants.active.contains_key(&gref.get()) {
                return Err(Errno::EBUSY);
            }
            self.kernel_end(state, domid, gref.get())
        })
        .unwrap_or(Err(Errno::EIO))
    }

    /// The grant entry `gref` of `domain` as it is now (for tests: flags, grantee, frame).
    ///
    /// # Errors
    ///
    /// `GNTST_bad_domain` or `GNTST_bad_gntref`.
    pub fn grant_entry(
        &self,
        domain: DomainId,
        gref: GrantRef,
    ) -> Result<GrantEntryV1, GrantStatus> {
        let loc = self
            .query(|s| entry_location(s, SimState::resolve(domain.get()), gref.get()))
            .unwrap_or(Err(GrantStatus::GENERAL_ERROR))?;
        self.read_entry(loc).map_err(|_| GrantStatus::GENERAL_ERROR)
    }

    /// Xen's `map_grant_ref` for one reference: check and pin; the machine frame on success.
    fn pin(
        &self,
        state: &mut SimState,
        mapper: DomId,
        granter: DomId,
        gref: u32,
        writable: bool,
    ) -> Result<u64, GrantStatus> {
        let loc = entry_location(state, granter, gref)?;
        let mut entry = self
            .read_entry(loc)
            .map_err(|_| GrantStatus::GENERAL_ERROR)?;
        let d = state.domain(granter).map_err(|_| GrantStatus::BAD_DOMAIN)?;
        let act = d.grants.active.get(&gref).copied();
        match act {
            Some(a) if a.mapper != mapper => return Err(GrantStatus::GENERAL_ERROR),
            Some(_) => {}
            None => {
                if entry.flags & (GTF_type_mask | GTF_sub_page) != GTF_permit_access
                    || entry.domid != mapper
                {
                    return Err(GrantStatus::GENERAL_ERROR);
                }
            }
        }
        if writable && entry.flags & GTF_readonly != 0 {
            return Err(GrantStatus::GENERAL_ERROR);
        }
        let mfn = match act {
            Some(a) => a.mfn,
            None => {
                frame_to_mfn(state, granter, u64::from(entry.frame)).ok_or(GrantStatus::BAD_PAGE)?
            }
        };
        entry.flags |= GTF_reading;
        if writable {
            entry.flags |= GTF_writing;
        }
        self.write_flags(loc, entry.flags)
            .map_err(|_| GrantStatus::GENERAL_ERROR)?;
        let d = state
            .domain_mut(granter)
            .map_err(|_| GrantStatus::BAD_DOMAIN)?;
        let a = d.grants.active.entry(gref).or_insert(SimActiveGrant {
            mapper,
            mfn,
            readers: 0,
            writers: 0,
        });
        if writable {
            a.writers += 1;
        } else {
            a.readers += 1;
        }
        Ok(mfn)
    }

    /// Xen's `unmap_grant_ref` for one reference; finishes a deferred end of the grant when this
    /// was the last mapping.
    fn unpin(&self, state: &mut SimState, granter: DomId, gref: u32, writable: bool) {
        let Ok(d) = state.domain_mut(granter) else {
            return; // the granting domain is gone, and its table with it
        };
        let Some(a) = d.grants.active.get_mut(&gref) else {
            return;
        };
        if writable {
            a.writers = a.writers.saturating_sub(1);
        } else {
            a.readers = a.readers.saturating_sub(1);
        }
        let (readers, writers) = (a.readers, a.writers);
        if readers == 0 && writers == 0 {
            d.grants.active.remove(&gref);
        }
        let released = d.grants.kernel.get(&gref).is_some_and(|k| k.released);
        if let Ok(loc) = entry_location(state, granter, gref) {
            if let Ok(mut entry) = self.read_entry(loc) {
                if writers == 0 {
                    entry.flags &= !GTF_writing;
                }
                if readers == 0 && writers == 0 {
                    entry.flags &= !GTF_reading;
                }
                let _ = self.write_flags(loc, entry.flags);
            }
        }
        if released && readers == 0 && writers == 0 {
            let _ = self.kernel_end(state, granter, gref);
        }
    }

    /// gntdev's map (`IOCTL_GNTDEV_MAP_GRANT_REF` and the `mmap` that follows) in `as_domain`:
    /// map `refs` of `from`, read-only or writable, into one window.
    ///
    /// # Errors
    ///
    /// `EINVAL` for an empty list, or when Xen refuses any reference (the error's `statuses`
    /// say which and why; none stays mapped); `ENOMEM` when the window cannot be mapped.
    pub fn map_grants(
        self: &Arc<Self>,
        as_domain: DomainId,
        from: DomainId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<SimGrantMapping, SimGrantError> {
        if refs.is_empty() {
            return Err(Errno::EINVAL.into());
        }
        let mapper = SimState::resolve(as_domain.get());
        let granter = SimState::resolve(from.get());
        let pinned = self
            .transact(|state| {
                let results: Vec<_> = refs
                    .iter()
                    .map(|r| self.pin(state, mapper, granter, r.get(), writable))
                    .collect();
                if results.iter().all(Result::is_ok) {
                    return Ok(results.into_iter().flatten().collect::<Vec<_>>());
                }
                let mut statuses = Vec::with_capacity(refs.len());
                for (r, res) in refs.iter().zip(&results) {
                    match res {
                        Ok(_) => {
                            self.unpin(state, granter, r.get(), writable);
                            statuses.push(GrantStatus::OKAY);
                        }
                        Err(s) => statuses.push(*s),
                    }
                }
                Err(SimGrantError {
                    errno: Errno::EINVAL,
                    statuses,
                })
            })
            .map_err(|_| SimGrantError::from(Errno::EIO))??;
        let frames: Vec<_> = pinned.iter().map(|&m| Some(m)).collect();
        let window = match self.machine().map(&frames, writable) {
            Ok(w) => w,
            Err(_) => {
                let _ = self.transact(|state| {
                    for r in refs {
                        self.unpin(state, granter, r.get(), writable);
                    }
                });
                return Err(Errno::ENOMEM.into());
            }
        };
        Ok(SimGrantMapping {
            sim: Arc::clone(self),
            mapper: DomainId::new(mapper),
            granter: DomainId::new(granter),
            refs: refs.to_vec(),
            mfns: pinned,
            writable,
            window: Some(window),
            notify: SimUnmapNotify::default(),
        })
    }

    /// gntalloc's `IOCTL_GNTALLOC_ALLOC_GREF` (and the `mmap` that follows) in `as_domain`:
    /// allocate `count` zeroed pages, grant each to `to` (read-only unless `writable`), and map
    /// them (always writable: they are `as_domain`'s own pages). See the [module docs](self)
    /// for where the pages come from.
    ///
    /// # Errors
    ///
    /// `EINVAL` for `count` 0; `ENOSPC` past gntalloc's limit ([`GNTALLOC_LIMIT`]) or when the
    /// grant table cannot grow; `ENOMEM` when the domain has no page to give (dom0: all of its
    /// memory shared; a guest: at its `max_pages`); `ESRCH` for no such domain.
    pub fn share_pages(
        self: &Arc<Self>,
        as_domain: DomainId,
        to: DomainId,
        count: usize,
        writable: bool,
    ) -> Result<SimGrantShare, Errno> {
        if count == 0 {
            return Err(Errno::EINVAL);
        }
        let domid = SimState::resolve(as_domain.get());
        let grantee = to.get();
        let granted = self
            .transact(|state| {
                let d = state.domain(domid)?;
                let held = d
                    .grants
                    .kernel
                    .values()
                    .filter(|k| k.page.is_some())
                    .count();
                if held + count > GNTALLOC_LIMIT {
                    return Err(Errno::ENOSPC);
                }
                let mut done: Vec<(u32, u64)> = Vec::with_capacity(count);
                let mut result = Ok(());
                for _ in 0..count {
                    match self.kernel_page(state, domid) {
                        Ok(mfn) => match self.machine().write(mfn, 0, &[0u8; PAGE_SIZE]) {
                            Ok(()) => {
                                match self.kernel_grant(
                                    state,
                                    domid,
                                    grantee,
                                    mfn,
                                    Some(mfn),
                                    !writable,
                                ) {
                                    Ok(r) => done.push((r, mfn)),
                                    Err(e) => {
                                        self.kernel_free_page(state, domid, mfn);
                                        result = Err(e);
                                        break;
                                    }
                                }
                            }
                            Err(_) => {
                                self.kernel_free_page(state, domid, mfn);
                                result = Err(Errno::EIO);
                                break;
                            }
                        },
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                if let Err(e) = result {
                    for &(r, _) in &done {
                        let _ = self.kernel_end(state, domid, r);
                    }
                    return Err(e);
                }
                Ok(done)
            })
            .unwrap_or(Err(Errno::EIO))?;
        let frames: Vec<_> = granted.iter().map(|&(_, m)| Some(m)).collect();
        let mut share = SimGrantShare {
            sim: Arc::clone(self),
            domain: DomainId::new(domid),
            refs: granted.iter().map(|&(r, _)| GrantRef::new(r)).collect(),
            mfns: granted.iter().map(|&(_, m)| m).collect(),
            window: None,
            notify: SimUnmapNotify::default(),
        };
        share.window = Some(
            self.machine()
                .map(&frames, true)
                .map_err(|_| Errno::ENOMEM)?,
        );
        Ok(share)
    }

    /// A page for `domid`'s kernel to share (see the module docs).
    fn kernel_page(&self, state: &mut SimState, domid: DomId) -> Result<u64, Errno> {
        let d = state.domain(domid)?;
        if domid == SIM_DOM0 {
            let used: BTreeSet<u64> = d.grants.kernel.values().filter_map(|k| k.page).collect();
            return (0..d.tot_pages)
                .find(|m| !used.contains(m))
                .ok_or(Errno::ENOMEM);
        }
        state.increase_extent(domid, 0).ok_or(Errno::ENOMEM)
    }

    /// Give back a page [`SimHypervisor::kernel_page`] took and that no reference holds.
    fn kernel_free_page(&self, state: &mut SimState, domid: DomId, mfn: u64) {
        if domid != SIM_DOM0 {
            state.decrease_extent(domid, mfn, 0);
        }
    }

    /// Let go of shared pages (gntalloc's dealloc and `munmap`): each grant the other side does
    /// not have mapped ends now; the others end when it unmaps them.
    fn release_share(&self, domain: DomainId, refs: &[GrantRef]) {
        let domid = domain.get();
        let _ = self.transact(|state| {
            for r in refs {
                let mapped = state
                    .domain(domid)
                    .is_ok_and(|d| d.grants.active.contains_key(&r.get()));
                if mapped {
                    if let Ok(d) = state.domain_mut(domid) {
                        if let Some(k) = d.grants.kernel.get_mut(&r.get()) {
                            k.released = true;
                        }
                    }
                } else {
                    let _ = self.kernel_end(state, domid, r.get());
                }
            }
        });
    }

    /// Whether `port` is an event channel of `domain` that an unmap notification may signal.
    /// Linux takes a reference on a port bound through `/dev/xen/evtchn` and refuses others
    /// with `EINVAL`; here any port in use in the domain will do (not the reserved port 0).
    fn notify_port_usable(&self, domain: DomainId, port: u32) -> bool {
        self.query(|s| {
            s.domain(SimState::resolve(domain.get())).is_ok_and(|d| {
                d.evtchn
                    .port(port)
                    .is_some_and(|p| p.state != super::SimPortState::Reserved)
            })
        })
        .unwrap_or(false)
    }

    /// Check an unmap notification against a window of `pages` pages in `domain` (gntdev's
    /// and gntalloc's checks): `ENOENT` for a byte outside it, `EINVAL` for a byte to clear in
    /// read-only memory or a port the domain cannot signal.
    fn check_notify(
        &self,
        domain: DomainId,
        notify: &SimUnmapNotify,
        pages: usize,
        writable: bool,
    ) -> Result<(), Errno> {
        if let Some(offset) = notify.clear_byte {
            if offset >= pages * PAGE_SIZE {
                return Err(Errno::ENOENT);
            }
            if !writable {
                return Err(Errno::EINVAL);
            }
        }
        match notify.event {
            Some(port) if !self.notify_port_usable(domain, port) => Err(Errno::EINVAL),
            _ => Ok(()),
        }
    }

    /// The unmap-notification events sent since the last call, as `(sending domain, port)`,
    /// oldest first. (Each was also sent on its port, and delivered by the event-channel model
    /// to the `/dev/xen/evtchn` handle that bound the other end.)
    pub fn take_unmap_events(&self) -> Vec<(DomainId, u32)> {
        std::mem::take(&mut *self.unmap_events.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Fire an unmap notification: clear the byte at `offset` of the pages `mfns` show, and
    /// record the event.
    fn fire_notify(&self, domain: DomainId, mfns: &[u64], notify: SimUnmapNotify) {
        if let Some(offset) = notify.clear_byte {
            if let Some(&mfn) = mfns.get(offset / PAGE_SIZE) {
                let _ = self.machine().write(mfn, (offset % PAGE_SIZE) as u64, &[0]);
            }
        }
        if let Some(port) = notify.event {
            self.unmap_events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((domain, port));
            // Linux sends it (`notify_remote_via_evtchn`), ignoring what Xen answers.
            let _ = self.transact(|s| s.evtchn_send(domain.get(), port));
        }
    }
}

/// Grants of another domain mapped in a simulated domain (gntdev): unmapped on drop, after the
/// unmap notification fires.
#[derive(Debug)]
pub struct SimGrantMapping {
    sim: Arc<SimHypervisor>,
    mapper: DomainId,
    granter: DomainId,
    refs: Vec<GrantRef>,
    mfns: Vec<u64>,
    writable: bool,
    window: Option<SimMapping>,
    notify: SimUnmapNotify,
}

impl SimGrantMapping {
    /// The window: page `i` shows `refs[i]`.
    pub fn window(&self) -> &SimMapping {
        // Present from construction until drop.
        self.window.as_ref().unwrap_or_else(|| unreachable!())
    }

    /// The granting domain.
    pub fn granter(&self) -> DomainId {
        self.granter
    }

    /// The references mapped, in window order.
    pub fn refs(&self) -> &[GrantRef] {
        &self.refs
    }

    /// Whether it is mapped writable.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// gntdev's `IOCTL_GNTDEV_SET_UNMAP_NOTIFY`: what to do when this mapping goes (replacing
    /// any earlier setting).
    ///
    /// # Errors
    ///
    /// `ENOENT` for a byte outside the mapping, `EINVAL` for a byte to clear in a read-only
    /// mapping or an event port the mapping domain does not have.
    pub fn set_unmap_notify(&mut self, notify: SimUnmapNotify) -> Result<(), Errno> {
        self.sim
            .check_notify(self.mapper, &notify, self.refs.len(), self.writable)?;
        self.notify = notify;
        Ok(())
    }
}

impl Drop for SimGrantMapping {
    fn drop(&mut self) {
        self.sim.fire_notify(self.mapper, &self.mfns, self.notify);
        drop(self.window.take());
        let granter = self.granter.get();
        let _ = self.sim.transact(|state| {
            for r in &self.refs {
                self.sim.unpin(state, granter, r.get(), self.writable);
            }
        });
    }
}

/// Pages a simulated domain shares with another (gntalloc), mapped writable in the sharing
/// domain: on drop the unmap notification fires and the grants end (or, for those still mapped
/// by the other side, end when it unmaps them).
#[derive(Debug)]
pub struct SimGrantShare {
    sim: Arc<SimHypervisor>,
    domain: DomainId,
    refs: Vec<GrantRef>,
    mfns: Vec<u64>,
    window: Option<SimMapping>,
    notify: SimUnmapNotify,
}

impl SimGrantShare {
    /// The window over the shared pages, in reference order.
    pub fn window(&self) -> &SimMapping {
        // Present from construction until drop.
        self.window.as_ref().unwrap_or_else(|| unreachable!())
    }

    /// The grant references, one per page.
    pub fn refs(&self) -> &[GrantRef] {
        &self.refs
    }

    /// The machine frames of the pages (for tests).
    pub fn frames(&self) -> &[u64] {
        &self.mfns
    }

    /// gntalloc's `IOCTL_GNTALLOC_SET_UNMAP_NOTIFY`, for the share as a whole (replacing any
    /// earlier setting).
    ///
    /// # Errors
    ///
    /// `ENOENT` for a byte outside the shared pages, `EINVAL` for an event port the sharing
    /// domain does not have.
    pub fn set_unmap_notify(&mut self, notify: SimUnmapNotify) -> Result<(), Errno> {
        self.sim
            .check_notify(self.domain, &notify, self.refs.len(), true)?;
        self.notify = notify;
        Ok(())
    }
}

impl Drop for SimGrantShare {
    fn drop(&mut self) {
        self.sim.fire_notify(self.domain, &self.mfns, self.notify);
        drop(self.window.take());
        self.sim.release_share(self.domain, &self.refs);
    }
}
