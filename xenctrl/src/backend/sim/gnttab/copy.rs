//! Grant copy (`GNTTABOP_copy`, through gntdev's `IOCTL_GNTDEV_GRANT_COPY`) on the simulated
//! host.

use nix::errno::Errno;

use super::{entry_location, frame_to_mfn};
use crate::abi::{DomId, GTF_permit_access, GTF_readonly, GTF_type_mask, GrantStatus};
use crate::backend::sim::{SimHypervisor, SimState};
use crate::{DomainId, GrantRef, PAGE_SIZE};

/// One end of a simulated grant copy: a grant reference and an offset in its page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimGrantAddr {
    /// The granting domain.
    pub domain: DomainId,
    /// The reference.
    pub gref: GrantRef,
    /// Byte offset in the granted page.
    pub offset: u16,
}

/// Where a simulated grant-copy segment reads.
#[derive(Debug)]
pub enum SimCopySource<'a> {
    /// The caller's own memory.
    Local(&'a [u8]),
    /// A granted page.
    Grant(SimGrantAddr),
}

/// Where a simulated grant-copy segment writes.
#[derive(Debug)]
pub enum SimCopyDest<'a> {
    /// The caller's own memory.
    Local(&'a mut [u8]),
    /// A granted page.
    Grant(SimGrantAddr),
}

/// One segment of [`SimHypervisor::grant_copy`].
#[derive(Debug)]
pub struct SimCopySegment<'a> {
    /// Where to read.
    pub source: SimCopySource<'a>,
    /// Where to write.
    pub dest: SimCopyDest<'a>,
    /// How many bytes.
    pub len: u16,
    /// Xen's answer (out).
    pub status: GrantStatus,
}

impl SimHypervisor {
    /// gntdev's `IOCTL_GNTDEV_GRANT_COPY` in `as_domain`: run each segment (Xen's
    /// `GNTTABOP_copy`) and set its status.
    ///
    /// # Errors
    ///
    /// `EINVAL`, before anything is copied, for a segment with no grant side or whose grant
    /// side crosses the end of its page; `EFAULT` for a local buffer shorter than the segment.
    pub fn grant_copy(
        &self,
        as_domain: DomainId,
        segments: &mut [SimCopySegment<'_>],
    ) -> Result<(), Errno> {
        let page = PAGE_SIZE as u64;
        for seg in segments.iter() {
            let len = u64::from(seg.len);
            let grant_ok = |a: &SimGrantAddr| u64::from(a.offset) + len <= page;
            match (&seg.source, &seg.dest) {
                (SimCopySource::Local(_), SimCopyDest::Local(_)) => return Err(Errno::EINVAL),
                (SimCopySource::Grant(a), _) if !grant_ok(a) => return Err(Errno::EINVAL),
                (_, SimCopyDest::Grant(a)) if !grant_ok(a) => return Err(Errno::EINVAL),
                (SimCopySource::Local(b), _) if b.len() < usize::from(seg.len) => {
                    return Err(Errno::EFAULT)
                }
                (_, SimCopyDest::Local(b)) if b.len() < usize::from(seg.len) => {
                    return Err(Errno::EFAULT)
                }
                _ => {}
            }
        }
        let copier = SimState::resolve(as_domain.get());
        self.transact(|state| {
            for seg in segments.iter_mut() {
                seg.status = match self.copy_one(state, copier, seg) {
                    Ok(()) => GrantStatus::OKAY,
                    Err(s) => s,
                };
            }
        })
        .map_err(|_| Errno::EIO)
    }

    /// Xen's `acquire_grant_for_copy`: the machine frame behind a grant the copier may use.
    fn copy_frame(
        &self,
        state: &SimState,
        copier: DomId,
        a: &SimGrantAddr,
        write: bool,
    ) -> Result<u64, GrantStatus> {
        let granter = SimState::resolve(a.domain.get());
        let loc = entry_location(state, granter, a.gref.get())?;
        let entry = self
            .read_entry(loc)
            .map_err(|_| GrantStatus::GENERAL_ERROR)?;
        let d = state.domain(granter).map_err(|_| GrantStatus::BAD_DOMAIN)?;
        if let Some(act) = d.grants.active.get(&a.gref.get()) {
            if act.mapper != copier {
                return Err(GrantStatus::GENERAL_ERROR);
            }
        } else if entry.flags & GTF_type_mask != GTF_permit_access || entry.domid != copier {
            return Err(GrantStatus::GENERAL_ERROR);
        }
        if write && entry.flags & GTF_readonly != 0 {
            return Err(GrantStatus::GENERAL_ERROR);
        }
        frame_to_mfn(state, granter, u64::from(entry.frame)).ok_or(GrantStatus::BAD_PAGE)
    }

    fn copy_one(
        &self,
        state: &SimState,
        copier: DomId,
        seg: &mut SimCopySegment<'_>,
    ) -> Result<(), GrantStatus> {
        let len = usize::from(seg.len);
        let mut bytes = vec![0u8; len];
        let dest_frame = match &seg.dest {
            SimCopyDest::Grant(a) => Some((self.copy_frame(state, copier, a, true)?, a.offset)),
            SimCopyDest::Local(_) => None,
        };
        match &seg.source {
            SimCopySource::Local(b) => bytes.copy_from_slice(&b[..len]),
            SimCopySource::Grant(a) => {
                let mfn = self.copy_frame(state, copier, a, false)?;
                self.machine()
                    .read(mfn, u64::from(a.offset), &mut bytes)
                    .map_err(|_| GrantStatus::GENERAL_ERROR)?;
            }
        }
        match (&mut seg.dest, dest_frame) {
            (SimCopyDest::Local(b), _) => b[..len].copy_from_slice(&bytes),
            (SimCopyDest::Grant(_), Some((mfn, offset))) => self
                .machine()
                .write(mfn, u64::from(offset), &bytes)
                .map_err(|_| GrantStatus::GENERAL_ERROR)?,
            (SimCopyDest::Grant(_), None) => return Err(GrantStatus::GENERAL_ERROR),
        }
        Ok(())
    }
}
