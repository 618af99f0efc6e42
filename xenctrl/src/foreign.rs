//! Mapping another domain's memory into ours: libxenforeignmemory's job, through Linux's
//! `/dev/xen/privcmd`.
//!
//! - [`XenCtrl::map_foreign`] maps a list of the domain's frames, in order, into one window
//!   (`IOCTL_PRIVCMD_MMAPBATCH_V2`). Xen answers page by page; frames that are paged out are
//!   retried a bounded number of times with a growing pause, and any page that still fails
//!   makes the whole call fail, naming it, with nothing left mapped.
//!   [`XenCtrl::map_foreign_partial`] keeps the pages that did map instead, and reports the
//!   others page by page.
//! - [`XenCtrl::map_resource`] maps frames of a [`Resource`] of the domain, such as its grant
//!   table (`IOCTL_PRIVCMD_MMAP_RESOURCE`). Where Xen or the kernel cannot map grant tables
//!   that way (`EOPNOTSUPP`), it asks Xen for the table's frames (`GNTTABOP_setup_table`,
//!   [`XenCtrl::gnttab_setup_table`]) and maps those, as libxenguest does for a PV guest.
//!
//! # Which Xen and Linux provide what
//!
//! | what | Linux (dom0 kernel) | Xen |
//! |---|---|---|
//! | `IOCTL_PRIVCMD_MMAPBATCH_V2` (per-page errors) | 3.7 and later | any |
//! | `IOCTL_PRIVCMD_MMAP_RESOURCE` | 4.18 and later | 4.11 (`XENMEM_acquire_resource`, ioreq servers) |
//! | grant tables as a resource ([`Resource::GrantTable`]) | 4.18 | 4.12 |
//! | processor-trace buffers ([`Resource::VmtraceBuffer`]) | 4.18 | 4.15 |
//! | `GNTTABOP_setup_table` (the fallback) | any | any |
//!
//! A kernel without `IOCTL_PRIVCMD_MMAP_RESOURCE` answers `ENOTTY` (or `EINVAL` before 4.11);
//! either is reported as `EOPNOTSUPP`, Xen's own answer, so the fallback covers both. Kernels
//! before 3.7 (only the first `IOCTL_PRIVCMD_MMAPBATCH`) are not supported. This crate targets
//! Xen 4.17, where every row is present.
//!
//! # Why volatile
//!
//! The other domain runs while we hold its pages, and may write them at any moment. A Rust
//! `&[u8]` promises the compiler the bytes do not change while it lives, and `&mut [u8]` that
//! nobody else touches them; with either, the compiler may re-read a byte and see two values,
//! or merge two reads into one, and a bounds check done on one read may not hold on the next.
//! So a mapping is never handed out as a slice: [`ForeignMapping::slice`] and
//! [`ForeignMapping::page`] give a [`VolatileSlice`], whose every access is a volatile copy
//! or a single-width volatile read or write (see [`crate::volatile`]).
//!
//! # Ownership
//!
//! A [`ForeignMapping`] owns its window and unmaps it when dropped. It borrows the
//! [`XenCtrl`] it came from, so it cannot outlive it:
//!
//! ```compile_fail,E0505
//! use xenctrl::{volatile::ReadWrite, DomainId, XenCtrl};
//! let xc = XenCtrl::simulated(Default::default())?;
//! let mapping = xc.map_foreign::<ReadWrite>(DomainId::new(1), &[0])?;
//! drop(xc); // the mapping still borrows it
//! mapping.slice();
//! # Ok::<(), xenctrl::Error>(())
//! ```
//!
//! ```compile_fail,E0597
//! use xenctrl::{volatile::ReadWrite, DomainId, XenCtrl};
//! let mapping = {
//!     let xc = XenCtrl::simulated(Default::default())?;
//!     xc.map_foreign::<ReadWrite>(DomainId::new(1), &[0])?
//! };
//! # Ok::<(), xenctrl::Error>(())
//! ```
//!
//! and its memory cannot be borrowed as a plain slice, neither by coercion nor through a
//! slice of it:
//!
//! ```compile_fail,E0277
//! use xenctrl::{volatile::ReadWrite, ForeignMapping};
//! fn bytes(m: &ForeignMapping<'_, ReadWrite>) -> &[u8] {
//!     m.as_ref()
//! }
//! ```
//!
//! ```compile_fail,E0608
//! use xenctrl::{volatile::ReadWrite, ForeignMapping};
//! fn first(m: &ForeignMapping<'_, ReadWrite>) -> u8 {
//!     m.slice()[0]
//! }
//! ```
//!
//! A mapping is `Send` (hand it to another thread) but not `Sync`: two threads accessing the
//! same memory through it would race in Rust's memory model, volatile or not.
//!
//! ```compile_fail,E0277
//! fn shared<T: Sync>() {}
//! shared::<xenctrl::ForeignMapping<'static, xenctrl::volatile::ReadWrite>>();
//! ```
//!
//! # A domain destroyed under a mapping
//!
//! Xen takes a reference on every page it maps for us. Destroying the domain frees what is
//! not mapped, and the domain lingers, dying, with the pages we still map, until we unmap
//! them: `destroy_domain` succeeds, the mapping stays valid (the memory keeps its contents,
//! nobody else gets it), and the domain leaves the list when the mapping is dropped. The
//! simulator does the same for the process that mapped.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use crate::abi::{
    GNTTABOP_setup_table, GnttabSetupTable, XENMEM_resource_grant_table,
    XENMEM_resource_grant_table_id_shared, XENMEM_resource_grant_table_id_status,
    XENMEM_resource_ioreq_server, XENMEM_resource_vmtrace_buf, XenPfn,
};
use crate::backend::{ForeignWindow, ResourceId};
use crate::ctrl::XenCtrl;
use crate::error::{Errno, Error, Op, Result};
use crate::volatile::{Access, OutOfBounds, ReadWrite, VolatileSlice};
use crate::{DomainId, PAGE_SIZE};

/// How many times pages that answer `ENOENT` (paged out) are asked for again.
const PAGED_OUT_RETRIES: u32 = 16;

/// The pause before retry `round` (0-based): 100 µs, doubling up to 51.2 ms; about 0.4 s over
/// all the retries.
fn paged_out_backoff(round: u32) -> Duration {
    Duration::from_micros(100 << round.min(9))
}

/// What `GNTTABOP_setup_table` reports for a grant frame that is in none of an HVM guest's
/// frames (Xen's `INVALID_M2P_ENTRY`).
const NO_GFN: u64 = u64::MAX;

/// A resource of a domain that [`XenCtrl::map_resource`] maps (`XENMEM_resource_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resource {
    /// The domain's grant table (Xen 4.12+).
    GrantTable {
        /// Which of its frames.
        frames: GrantFrames,
    },
    /// The pages of ioreq server `server` (frame 0 the buffered ring, then one per vCPU;
    /// Xen 4.11+).
    IoreqServer {
        /// The server's id.
        server: u16,
    },
    /// vCPU `vcpu`'s processor-trace buffer (Xen 4.15+, domains created with one).
    VmtraceBuffer {
        /// The vCPU.
        vcpu: u32,
    },
}

impl Resource {
    /// The grant table's shared frames: the entries themselves.
    pub const GRANT_TABLE: Resource = Resource::GrantTable {
        frames: GrantFrames::Shared,
    };

    fn id(self) -> ResourceId {
        let (kind, id) = match self {
            Resource::GrantTable {
                frames: GrantFrames::Shared,
            } => (
                XENMEM_resource_grant_table,
                XENMEM_resource_grant_table_id_shared,
            ),
            Resource::GrantTable {
                frames: GrantFrames::Status,
            } => (
                XENMEM_resource_grant_table,
                XENMEM_resource_grant_table_id_status,
            ),
            Resource::IoreqServer { server } => (XENMEM_resource_ioreq_server, u32::from(server)),
            Resource::VmtraceBuffer { vcpu } => (XENMEM_resource_vmtrace_buf, vcpu),
        };
        ResourceId { kind, id }
    }
}

/// Which frames of a grant table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantFrames {
    /// The entries (512 version-1 entries per frame).
    Shared,
    /// The status words of a version-2 table.
    Status,
}

/// Why a page of a [`PartialForeignMapping`] cannot be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// The index is beyond the mapping.
    #[error("page {index} is beyond the mapping's {pages} pages")]
    OutOfRange {
        /// The index asked for.
        index: usize,
        /// Pages in the mapping.
        pages: usize,
    },
    /// Xen did not map the frame at this page.
    #[error("guest frame {gfn:#x} (page {index}) is not mapped")]
    NotMapped {
        /// The page.
        index: usize,
        /// The frame asked for there.
        gfn: u64,
        /// What Xen answered for it.
        #[source]
        errno: Errno,
    },
}

/// Another domain's memory mapped into ours, every page of it. Made by
/// [`XenCtrl::map_foreign`] and [`XenCtrl::map_resource`]; unmapped when dropped. `A` is
/// [`ReadWrite`] or [`ReadOnly`](crate::volatile::ReadOnly): how it was mapped, and so what
/// the slices it hands out allow. See the [module docs](self).
pub struct ForeignMapping<'x, A: Access = ReadWrite> {
    xc: &'x XenCtrl,
    /// `Some` until dropped.
    window: Option<ForeignWindow>,
    domain: DomainId,
    _access: PhantomData<A>,
    /// Not `Sync`: see the module docs.
    _not_sync: PhantomData<Cell<()>>,
}

impl<'x, A: Access> ForeignMapping<'x, A> {
    fn window(&self) -> &ForeignWindow {
        // Invariant: `window` is `Some` until `drop`.
        self.window
            .as_ref()
            .unwrap_or_else(|| unreachable!("a live mapping has its window"))
    }

    /// The domain whose memory this is.
    pub fn domain(&self) -> DomainId {
        self.domain
    }

    /// Pages mapped.
    pub fn pages(&self) -> usize {
        self.window().pages()
    }

    /// Bytes mapped: [`ForeignMapping::pages`] × 4096.
    pub fn len(&self) -> usize {
        self.pages() * PAGE_SIZE
    }

    /// Whether nothing is mapped (never: an empty list is refused).
    pub fn is_empty(&self) -> bool {
        self.pages() == 0
    }

    /// The whole mapping: page `i` is the `i`th frame asked for.
    pub fn slice(&self) -> VolatileSlice<'_, A> {
        // SAFETY: every page of the window is mapped (a `ForeignMapping` is made only once
        // the backend filled all of them), readable, and writable if `A` is `ReadWrite` (the
        // window was mapped with `A::WRITABLE`). It stays mapped until `self` is dropped,
        // which the returned borrow of `self` prevents, and nothing makes a Rust reference to
        // it: this type hands out only volatile access.
        unsafe { VolatileSlice::new(self.window().base(), self.len()) }
    }

    /// Page `index`.
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] when `index` is not below [`ForeignMapping::pages`].
    pub fn page(&self, index: usize) -> Result<VolatileSlice<'_, A>, OutOfBounds> {
        let offset = index.checked_mul(PAGE_SIZE).ok_or(OutOfBounds {
            offset: usize::MAX,
            len: PAGE_SIZE,
            size: self.len(),
        })?;
        self.slice().subslice(offset, PAGE_SIZE)
    }
}

impl<A: Access> Drop for ForeignMapping<'_, A> {
    fn drop(&mut self) {
        if let Some(window) = self.window.take() {
            self.xc.pool().backend().release_window(window);
        }
    }
}

impl<A: Access> fmt::Debug for ForeignMapping<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForeignMapping")
            .field("domain", &self.domain)
            .field("pages", &self.pages())
            .field("writable", &A::WRITABLE)
            .finish_non_exhaustive()
    }
}

/// A foreign mapping in which some pages may have failed. Made by
/// [`XenCtrl::map_foreign_partial`]; unmapped when dropped. Only pages that mapped are handed
/// out ([`PartialForeignMapping::page`]): touching one that did not would kill the process
/// (`SIGBUS`), so there is no slice over the whole window.
pub struct PartialForeignMapping<'x, A: Access = ReadWrite> {
    mapping: ForeignMapping<'x, A>,
    gfns: Box<[u64]>,
    /// 0 or Xen's negative errno, per page.
    errs: Box<[i32]>,
}

impl<'x, A: Access> PartialForeignMapping<'x, A> {
    /// The domain whose memory this is.
    pub fn domain(&self) -> DomainId {
        self.mapping.domain()
    }

    /// Pages asked for (mapped or not).
    pub fn pages(&self) -> usize {
        self.errs.len()
    }

    /// How many pages mapped.
    pub fn mapped(&self) -> usize {
        self.errs.iter().filter(|&&e| e == 0).count()
    }

    /// Whether every page mapped.
    pub fn is_complete(&self) -> bool {
        self.errs.iter().all(|&e| e == 0)
    }

    fn failure(&self, index: usize) -> Option<PageError> {
        let err = *self.errs.get(index)?;
        (err != 0).then(|| PageError::NotMapped {
            index,
            gfn: self.gfns[index],
            errno: Errno::from_raw(err.saturating_neg()),
        })
    }

    /// Page `index`, if it mapped.
    ///
    /// # Errors
    ///
    /// [`PageError::NotMapped`] with Xen's errno for a page that did not map,
    /// [`PageError::OutOfRange`] beyond the mapping.
    pub fn page(&self, index: usize) -> Result<VolatileSlice<'_, A>, PageError> {
        if index >= self.pages() {
            return Err(PageError::OutOfRange {
                index,
                pages: self.pages(),
            });
        }
        if let Some(e) = self.failure(index) {
            return Err(e);
        }
        let base = self.mapping.window().base();
        // SAFETY: page `index` is inside the window (checked above) and mapped (its error is
        // 0, so the backend filled it), readable, and writable if `A` is `ReadWrite`. It stays
        // mapped until `self` is dropped, which the returned borrow prevents, and this type
        // hands out only volatile access to it.
        Ok(unsafe { VolatileSlice::new(base.add(index * PAGE_SIZE), PAGE_SIZE) })
    }

    /// The pages that did not map, in order, each as [`PageError::NotMapped`].
    pub fn failures(&self) -> impl Iterator<Item = PageError> + '_ {
        (0..self.pages()).filter_map(|i| self.failure(i))
    }

    /// The mapping as a [`ForeignMapping`], if every page mapped.
    ///
    /// # Errors
    ///
    /// [`Error::ForeignPage`] naming the first page that did not map; the mapping is undone
    /// first.
    pub fn into_complete(self) -> Result<ForeignMapping<'x, A>> {
        match first_failure(self.domain(), &self.gfns, &self.errs) {
            None => Ok(self.mapping),
            Some(e) => {
                drop(self); // unmaps
                Err(e)
            }
        }
    }
}

impl<A: Access> fmt::Debug for PartialForeignMapping<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartialForeignMapping")
            .field("domain", &self.domain())
            .field("pages", &self.pages())
            .field("mapped", &self.mapped())
            .field("writable", &A::WRITABLE)
            .finish_non_exhaustive()
    }
}

/// Batches up to this many pages keep their per-page answers on the stack in
/// [`XenCtrl::map_foreign`].
const SMALL_BATCH: usize = 64;

/// [`Error::ForeignPage`] for the first page whose answer in `errs` (0 or Xen's negative
/// errno, per page of `gfns`) is not 0.
fn first_failure(domain: DomainId, gfns: &[u64], errs: &[i32]) -> Option<Error> {
    let index = errs.iter().position(|&e| e != 0)?;
    Some(Error::ForeignPage {
        domid: domain,
        index,
        pages: gfns.len(),
        gfn: gfns[index],
        source: Errno::from_raw(errs[index].saturating_neg()),
    })
}

impl XenCtrl {
    /// Map frames `gfns` of `domain`, in order, into one mapping: page `i` is frame `gfns[i]`.
    /// For a PV domain the frames are machine frames (what `populate_physmap` wrote back), for
    /// an HVM one guest frames. `A` ([`ReadWrite`] or
    /// [`ReadOnly`](crate::volatile::ReadOnly)) is how to map them.
    ///
    /// Frames Xen reports paged out are asked for again, up to 16 times over about 0.4 s.
    ///
    /// # Errors
    ///
    /// [`Error::ForeignPage`] naming the first page Xen would not map (`ESRCH` for every page
    /// when the domain does not exist); nothing stays mapped. [`Error::MapWindow`] when no
    /// address space could be had; [`Error::Xen`] (`EINVAL` for an empty list) when the
    /// request failed as a whole.
    ///
    /// # Examples
    ///
    /// ```
    /// use xenctrl::volatile::{ReadOnly, ReadWrite};
    /// use xenctrl::{CreateDomain, DomainId, XenCtrl};
    ///
    /// let xc = XenCtrl::simulated(Default::default())?;
    /// let d = xc.create_domain(&CreateDomain::pv(1))?;
    /// xc.set_max_mem(d, 1024)?;
    /// let mut frames = vec![0, 1, 2, 3];
    /// xc.populate_physmap_exact(d, 0, 0, &mut frames)?; // PV: now the machine frames
    /// let domain = DomainId::new(d);
    /// let rw = xc.map_foreign::<ReadWrite>(domain, &frames)?;
    /// rw.page(2)?.write_from(16, b"hello")?;
    /// // Another mapping of the same frame sees the write.
    /// let ro = xc.map_foreign::<ReadOnly>(domain, &frames[2..3])?;
    /// assert_eq!(ro.slice().to_vec(16, 5)?, b"hello");
    /// # drop((rw, ro));
    /// # xc.destroy_domain(d)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_foreign<A: Access>(
        &self,
        domain: DomainId,
        gfns: &[u64],
    ) -> Result<ForeignMapping<'_, A>> {
        // The per-page answers, on the stack for the common small maps: this path keeps no
        // copy of them (or of `gfns`) past the call, so a one-page map costs the three system
        // calls libxenforeignmemory's does and no allocation.
        let mut small = [0i32; SMALL_BATCH];
        let mut large = Vec::new();
        let errs: &mut [i32] = if gfns.len() <= SMALL_BATCH {
            &mut small[..gfns.len()]
        } else {
            large.resize(gfns.len(), 0);
            &mut large
        };
        let mapping = self.map_batch::<A>(domain, gfns, errs)?;
        match first_failure(domain, gfns, errs) {
            None => Ok(mapping),
            Some(e) => {
                drop(mapping); // unmaps
                Err(e)
            }
        }
    }

    /// [`XenCtrl::map_foreign`], keeping the pages that mapped when others do not: the result
    /// hands out each page that mapped, and says for each other page what Xen answered.
    ///
    /// # Errors
    ///
    /// [`Error::MapWindow`] when no address space could be had; [`Error::Xen`] when the
    /// request failed as a whole (`EINVAL` for an empty list). A domain that does not exist
    /// is not an error here: every page reports `ESRCH`.
    ///
    /// # Examples
    ///
    /// ```
    /// use xenctrl::foreign::PageError;
    /// use xenctrl::volatile::ReadWrite;
    /// use xenctrl::{CreateDomain, DomainId, Errno, XenCtrl};
    ///
    /// let xc = XenCtrl::simulated(Default::default())?;
    /// let d = xc.create_domain(&CreateDomain::pvh(1))?;
    /// xc.set_max_mem(d, 1024)?;
    /// xc.populate_physmap_exact(d, 0, 0, &mut [0x100])?; // HVM: guest frame 0x100
    /// let m = xc.map_foreign_partial::<ReadWrite>(DomainId::new(d), &[0x100, 0x101])?;
    /// assert!(m.page(0).is_ok());
    /// assert_eq!(
    ///     m.page(1).unwrap_err(),
    ///     PageError::NotMapped { index: 1, gfn: 0x101, errno: Errno::EINVAL }
    /// );
    /// # drop(m);
    /// # xc.destroy_domain(d)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_foreign_partial<A: Access>(
        &self,
        domain: DomainId,
        gfns: &[u64],
    ) -> Result<PartialForeignMapping<'_, A>> {
        let mut errs = vec![0i32; gfns.len()].into_boxed_slice();
        let mapping = self.map_batch::<A>(domain, gfns, &mut errs)?;
        Ok(PartialForeignMapping {
            mapping,
            gfns: gfns.into(),
            errs,
        })
    }

    /// Map frames `first..first + count` of `domain`'s `resource`
    /// (`IOCTL_PRIVCMD_MMAP_RESOURCE`). For the grant table's shared frames, where Xen or
    /// the kernel cannot map resources (`EOPNOTSUPP`), this falls back to
    /// [`XenCtrl::gnttab_setup_table`] and maps the frames it reports, as libxenguest does.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with Xen's errno: `ESRCH` when the domain does not exist, `EPERM` for
    /// our own domain, `EINVAL` for frames beyond the resource (a grant table's
    /// `max_grant_frames`) or a resource the domain does not have, `EOPNOTSUPP` when the
    /// resource cannot be mapped this way and has no fallback. In the fallback:
    /// [`Error::GrantTable`] with Xen's status, [`Error::GrantFrameUnmapped`] for an HVM guest
    /// that has not mapped its table, and the errors of [`XenCtrl::map_foreign`].
    ///
    /// # Examples
    ///
    /// ```
    /// use xenctrl::volatile::ReadWrite;
    /// use xenctrl::{CreateDomain, DomainId, Resource, XenCtrl};
    ///
    /// let xc = XenCtrl::simulated(Default::default())?;
    /// let d = DomainId::new(xc.create_domain(&CreateDomain::pv(1))?);
    /// let table = xc.map_resource::<ReadWrite>(d, Resource::GRANT_TABLE, 0, 1)?;
    /// // Grant entry 1 (version 1: flags, domid, frame): let dom0 map frame 0x1234.
    /// table.slice().write(8, &[0x0001_u16, 0])?;
    /// table.slice().write(12, &0x1234_u32)?;
    /// # drop(table);
    /// # xc.destroy_domain(d.get())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_resource<A: Access>(
        &self,
        domain: DomainId,
        resource: Resource,
        first: u64,
        count: usize,
    ) -> Result<ForeignMapping<'_, A>> {
        let domid = domain.get();
        if count == 0 {
            // What privcmd answers for an address without a count.
            return Err(Error::xen(Op::MapResource, Some(domid), Errno::EINVAL));
        }
        let mut mapping = self.foreign_window::<A>(domain, count)?;
        let window = mapping
            .window
            .as_mut()
            .unwrap_or_else(|| unreachable!("a new mapping has its window"));
        match self
            .pool()
            .backend()
            .mmap_resource(window, domid, resource.id(), first)
        {
            Ok(()) => Ok(mapping),
            Err(Errno::EOPNOTSUPP) if resource == Resource::GRANT_TABLE => {
                drop(mapping);
                self.map_grant_frames_by_setup_table(domain, first, count)
            }
            Err(e) => Err(Error::xen(Op::MapResource, Some(domid), e)),
        }
    }

    /// How many frames `domain`'s `resource` has: for a grant table, its `max_grant_frames`
    /// (shared frames) or the status frames those need.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`], as for [`XenCtrl::map_resource`] (`EOPNOTSUPP` without resource
    /// mapping, where there is no fallback).
    pub fn resource_size(&self, domain: DomainId, resource: Resource) -> Result<u64> {
        self.pool()
            .backend()
            .resource_size(domain.get(), resource.id())
            .map_err(|e| Error::xen(Op::ResourceSize, Some(domain.get()), e))
    }

    /// `GNTTABOP_setup_table`: grow `domain`'s grant table to at least `nr_frames` frames and
    /// return the frame number of each of the first `nr_frames`: a machine frame for a PV
    /// domain (which [`XenCtrl::map_foreign`] maps), for an HVM one the guest frame it mapped
    /// the table frame at, or `u64::MAX` where it did not.
    ///
    /// # Errors
    ///
    /// [`Error::GrantTable`] with Xen's status: `GNTST_bad_domain` when the domain does not
    /// exist, `GNTST_general_error` beyond its `max_grant_frames`. [`Error::Xen`] if the
    /// hypercall itself fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use xenctrl::volatile::ReadOnly;
    /// use xenctrl::{CreateDomain, DomainId, XenCtrl};
    ///
    /// let xc = XenCtrl::simulated(Default::default())?;
    /// let d = DomainId::new(xc.create_domain(&CreateDomain::pv(1))?);
    /// let frames = xc.gnttab_setup_table(d, 2)?;
    /// assert_eq!(frames.len(), 2);
    /// let table = xc.map_foreign::<ReadOnly>(d, &frames)?;
    /// assert_eq!(table.slice().read::<u64>(0)?, 0, "a new table is empty");
    /// # drop(table);
    /// # xc.destroy_domain(d.get())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn gnttab_setup_table(&self, domain: DomainId, nr_frames: u32) -> Result<Vec<u64>> {
        let domid = domain.get();
        let len = usize::try_from(nr_frames).map_err(|_| Error::BadAllocation {
            bytes: usize::MAX,
            align: 8,
        })?;
        let mut frames = self.pool().alloc_slice::<XenPfn>(len)?;
        let status = {
            let mut op = self.pool().alloc::<GnttabSetupTable<'_>>()?;
            *op = GnttabSetupTable::new(domid, frames.guest_handle());
            self.grant_table_op(
                Op::GnttabSetupTable,
                Some(domid),
                GNTTABOP_setup_table,
                &mut op,
            )?;
            op.status()
        };
        if !status.is_ok() {
            return Err(Error::GrantTable {
                op: Op::GnttabSetupTable,
                domid: Some(domain),
                status,
            });
        }
        Ok(frames.to_vec())
    }

    /// The fallback of [`XenCtrl::map_resource`] for grant frames `first..first + count`.
    fn map_grant_frames_by_setup_table<A: Access>(
        &self,
        domain: DomainId,
        first: u64,
        count: usize,
    ) -> Result<ForeignMapping<'_, A>> {
        let beyond = || Error::xen(Op::MapResource, Some(domain.get()), Errno::EINVAL);
        let end = u64::try_from(count)
            .ok()
            .and_then(|c| first.checked_add(c))
            .ok_or_else(beyond)?;
        let frames = self.gnttab_setup_table(domain, u32::try_from(end).map_err(|_| beyond())?)?;
        let start = usize::try_from(first).map_err(|_| beyond())?;
        let frames = &frames[start..];
        if let Some(i) = frames.iter().position(|&f| f == NO_GFN) {
            return Err(Error::GrantFrameUnmapped {
                domid: domain,
                index: first + i as u64,
            });
        }
        self.map_foreign(domain, frames)
    }

    /// A new mapping of `gfns` of `domain`, each page's answer in `errs` (as long as `gfns`).
    fn map_batch<A: Access>(
        &self,
        domain: DomainId,
        gfns: &[u64],
        errs: &mut [i32],
    ) -> Result<ForeignMapping<'_, A>> {
        let domid = domain.get();
        if gfns.is_empty() {
            // What privcmd answers for an empty batch.
            return Err(Error::xen(Op::MapForeign, Some(domid), Errno::EINVAL));
        }
        let mut mapping = self.foreign_window::<A>(domain, gfns.len())?;
        let window = mapping
            .window
            .as_mut()
            .unwrap_or_else(|| unreachable!("a new mapping has its window"));
        // The frame list and the error array are arguments of the kernel's ioctl, which copies
        // them; Xen never sees their addresses, so they are ordinary memory, not pool buffers.
        self.fill_batch(window, domid, gfns, errs)
            .map_err(|e| Error::xen(Op::MapForeign, Some(domid), e))?;
        Ok(mapping)
    }

    /// A fresh window of `pages` pages for `domain`'s memory, owned by a mapping that unmaps it.
    fn foreign_window<A: Access>(
        &self,
        domain: DomainId,
        pages: usize,
    ) -> Result<ForeignMapping<'_, A>> {
        let window = self
            .pool()
            .backend()
            .foreign_window(pages, A::WRITABLE)
            .map_err(|source| Error::MapWindow {
                domid: domain,
                pages,
                source,
            })?;
        Ok(ForeignMapping {
            xc: self,
            window: Some(window),
            domain,
            _access: PhantomData,
            _not_sync: PhantomData,
        })
    }

    /// Fill `window` with `gfns`, asking again for pages that answer `ENOENT` (paged out) up
    /// to [`PAGED_OUT_RETRIES`] times, each run of them in one call, as libxenforeignmemory
    /// does. Afterwards `errs` holds each page's answer; `Err` is the request failing as a
    /// whole.
    fn fill_batch(
        &self,
        window: &mut ForeignWindow,
        domid: crate::DomId,
        gfns: &[u64],
        errs: &mut [i32],
    ) -> std::result::Result<(), Errno> {
        let backend = self.pool().backend();
        let paged = -(Errno::ENOENT as i32);
        match backend.mmap_batch(window, 0, domid, gfns, errs) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
        for round in 0..PAGED_OUT_RETRIES {
            if !errs.contains(&paged) {
                break;
            }
            std::thread::sleep(paged_out_backoff(round));
            let mut i = 0;
            while i < errs.len() {
                if errs[i] != paged {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < errs.len() && errs[i] == paged {
                    i += 1;
                }
                match backend.mmap_batch(window, start, domid, &gfns[start..i], &mut errs[start..i])
                {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static_assertions::assert_impl_all!(ForeignMapping<'static, ReadWrite>: Send);
    static_assertions::assert_not_impl_any!(ForeignMapping<'static, ReadWrite>: Sync);
    static_assertions::assert_impl_all!(PartialForeignMapping<'static, ReadWrite>: Send);

    #[test]
    fn the_backoff_grows_and_stays_bounded() {
        let total: Duration = (0..PAGED_OUT_RETRIES).map(paged_out_backoff).sum();
        assert_eq!(paged_out_backoff(0), Duration::from_micros(100));
        assert_eq!(paged_out_backoff(30), Duration::from_micros(51_200));
        assert!(total < Duration::from_secs(1), "{total:?}");
    }
}
