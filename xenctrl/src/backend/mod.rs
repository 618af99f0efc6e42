//! The seam between the safe API and whatever executes hypercalls.
//!
//! Two implementations exist: [`privcmd`] (Linux `/dev/xen/privcmd` and `/dev/xen/hypercall`)
//! and [`sim`] (an in-process model of the hypervisor). Everything above this module is written
//! once against [`Backend`]; nothing above knows which one runs.

use std::io;
use std::ptr::NonNull;
use std::sync::Arc;

use nix::errno::Errno;

use crate::DomId;

pub(crate) mod anon;
pub(crate) mod privcmd;
pub mod sim;

/// Where the memory of a pool chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemorySource {
    /// Mapped from `/dev/xen/hypercall` (Linux privcmd-buf): the kernel keeps it resident and out
    /// of `fork()` children. No `mlock` needed.
    HypercallDevice,
    /// Anonymous memory with `MADV_DONTFORK`, locked with `mlock` and touched before use. Pages
    /// are locked and unlocked by the pool's per-page pin counts.
    LockedAnonymous,
}

/// A mapped, page-aligned run of hypercall-safe memory. It owns the mapping: dropping it unmaps
/// the memory (after telling its observer, the simulator's registry, which must forget the range
/// first). Only the mapping functions make one ([`ChunkMapping::from_raw`] is `unsafe`), so no
/// safe code can unmap an address it is merely given.
pub(crate) struct ChunkMapping {
    base: NonNull<u8>,
    len: usize,
    source: MemorySource,
    observer: Option<Arc<dyn UnmapObserver>>,
}

/// Told when a [`ChunkMapping`] goes away, and runs the unmap itself, so that it can keep any
/// use of the range from overlapping the unmap.
pub(crate) trait UnmapObserver: Send + Sync {
    /// The mapping at `start` is about to go: forget it, then call `unmap`.
    fn unmapping(&self, start: usize, unmap: &mut dyn FnMut());
}

impl ChunkMapping {
    /// Take ownership of a mapping.
    ///
    /// # Safety
    ///
    /// `base..base + len` is a whole mapping made by `mmap` (page aligned, `len` a multiple of
    /// the page size), readable and writable, that nothing else will unmap or hand out: the new
    /// value owns it and unmaps it when dropped.
    pub(crate) unsafe fn from_raw(base: NonNull<u8>, len: usize, source: MemorySource) -> Self {
        ChunkMapping {
            base,
            len,
            source,
            observer: None,
        }
    }

    /// Tell `observer` before the memory is unmapped.
    pub(crate) fn observed_by(mut self, observer: Arc<dyn UnmapObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Start of the mapping (page aligned).
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Length in bytes (a multiple of the page size).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// How the memory was obtained, and so how its pages are pinned.
    pub(crate) fn source(&self) -> MemorySource {
        self.source
    }

    /// Whether `bytes` bytes at `addr` lie inside this mapping.
    pub(crate) fn contains(&self, addr: u64, bytes: u64) -> bool {
        let start = self.base.as_ptr() as usize as u64;
        addr >= start
            && addr
                .checked_add(bytes)
                .is_some_and(|end| end <= start + self.len as u64)
    }
}

impl Drop for ChunkMapping {
    fn drop(&mut self) {
        let (base, len) = (self.base, self.len);
        let mut unmap = || {
            // SAFETY: this value owns the whole mapping (`from_raw`'s contract) and is being
            // dropped, so it is unmapped exactly once. Every buffer in it borrowed the pool
            // that owned this mapping, so none is alive.
            unsafe { libc::munmap(base.as_ptr().cast(), len) };
        };
        match &self.observer {
            Some(o) => o.unmapping(base.as_ptr().expose_provenance(), &mut unmap),
            None => unmap(),
        }
    }
}

impl std::fmt::Debug for ChunkMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkMapping")
            .field("base", &self.base)
            .field("len", &self.len)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

// SAFETY: the mapping is plain memory owned by whoever holds the `ChunkMapping`; the pointer is
// not tied to any thread, and the observer is `Send + Sync`.
unsafe impl Send for ChunkMapping {}
// SAFETY: as above; `&ChunkMapping` gives no access to the memory.
unsafe impl Sync for ChunkMapping {}

/// A window of address space that another domain's frames are mapped into: on Linux a mapping
/// of `/dev/xen/privcmd` (a `VM_PFNMAP` area whose pages fault with `SIGBUS` until an ioctl
/// fills them), on the simulator an inaccessible reservation that frames of its machine memory
/// are mapped into. It owns the mapping: dropping it unmaps the whole window. Only backends
/// make one ([`Backend::foreign_window`]), and only the backend that made it fills it.
///
/// A window hands out nothing but its address; [`crate::foreign`] turns the pages a backend
/// reported filled into [`VolatileSlice`](crate::volatile::VolatileSlice)s.
#[derive(Debug)]
pub(crate) struct ForeignWindow {
    inner: WindowInner,
    base: NonNull<u8>,
    pages: usize,
}

#[derive(Debug)]
pub(crate) enum WindowInner {
    /// A shared mapping of `/dev/xen/privcmd`.
    Device(memmap2::MmapRaw),
    /// The simulator's window.
    Sim(sim::SimWindow),
}

impl ForeignWindow {
    /// A window of `pages` pages over `inner`, which must be that long.
    pub(crate) fn new(inner: WindowInner, pages: usize) -> io::Result<Self> {
        let ptr = match &inner {
            WindowInner::Device(m) => m.as_mut_ptr(),
            WindowInner::Sim(w) => w.base().as_ptr(),
        };
        // A hint-less mmap never answers address 0; refuse it rather than trust it.
        let base = NonNull::new(ptr).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(ForeignWindow { inner, base, pages })
    }

    /// The first byte of the window (page aligned).
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Pages in the window.
    pub(crate) fn pages(&self) -> usize {
        self.pages
    }

    pub(crate) fn inner(&self) -> &WindowInner {
        &self.inner
    }

    pub(crate) fn inner_mut(&mut self) -> &mut WindowInner {
        &mut self.inner
    }

    pub(crate) fn into_inner(self) -> WindowInner {
        self.inner
    }
}

// SAFETY: the window is address space owned by this value (and the mapping objects inside it,
// which are themselves `Send`); the base pointer is not tied to any thread.
unsafe impl Send for ForeignWindow {}
// SAFETY: `&ForeignWindow` gives out only the address, never a reference to the memory.
unsafe impl Sync for ForeignWindow {}

/// Which resource of a domain `IOCTL_PRIVCMD_MMAP_RESOURCE` maps: `XENMEM_resource_*` and the
/// type-specific id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ResourceId {
    pub(crate) kind: u32,
    pub(crate) id: u32,
}

/// What executes hypercalls and provides the memory their arguments live in.
///
/// A backend hands out chunk mappings to the pool that belongs to the same handle, and is told
/// when they go away, so the simulator can tell pool memory from anything else.
///
/// It also maps other domains' memory, as Linux's privcmd does: a window of address space
/// first ([`Backend::foreign_window`]), then an ioctl that fills it ([`Backend::mmap_batch`],
/// [`Backend::mmap_resource`]). The defaults answer `ENODEV`, for backends with no hypervisor
/// behind them.
pub(crate) trait Backend: Send + Sync + std::fmt::Debug {
    /// Short name for diagnostics ("privcmd", "sim").
    fn name(&self) -> &'static str;

    /// Where [`Backend::map_chunk`] gets its memory.
    fn memory_source(&self) -> MemorySource;

    /// Map `len` bytes (a multiple of the page size) of hypercall-safe memory. Dropping the
    /// mapping releases it.
    fn map_chunk(&self, len: usize) -> io::Result<ChunkMapping>;

    /// Issue hypercall `op` with up to five register arguments, returning Xen's non-negative
    /// result or the errno it answered.
    ///
    /// # Safety
    ///
    /// Every argument that Xen treats as an address (directly, or through guest handles inside
    /// the structures it points at) must lie inside a chunk this backend mapped for the handle's
    /// pool, the chunk must stay mapped for the duration of the call, and no Rust reference to
    /// the memory Xen writes may be live across the call except through the `&mut` borrow the
    /// caller holds.
    unsafe fn hypercall(&self, op: u64, args: [u64; 5]) -> Result<u64, Errno>;

    /// A window of `pages` pages for foreign frames, readable, and writable if `writable`.
    /// Every page faults until filled.
    fn foreign_window(&self, pages: usize, writable: bool) -> io::Result<ForeignWindow> {
        let _ = (pages, writable);
        Err(io::Error::from_raw_os_error(libc::ENODEV))
    }

    /// `IOCTL_PRIVCMD_MMAPBATCH_V2`: map frame `gfns[i]` of `domid` at page `first + i` of
    /// `window`, and set `errs[i]` to 0 or to Xen's negative errno for that page. The first
    /// call on a window must cover all of it; later calls only pages still unmapped (the
    /// ones that failed), as Linux requires.
    ///
    /// `Err(ENOENT)` means some page is paged out (its `errs` entry says `-ENOENT`) and the call
    /// may be repeated for those pages; any other `Err` is the call failing as a whole, with
    /// `errs` unspecified.
    fn mmap_batch(
        &self,
        window: &mut ForeignWindow,
        first: usize,
        domid: DomId,
        gfns: &[u64],
        errs: &mut [i32],
    ) -> Result<(), Errno> {
        let _ = (window, first, domid, gfns, errs);
        Err(Errno::ENODEV)
    }

    /// `IOCTL_PRIVCMD_MMAP_RESOURCE`: map frames `first..first + window.pages()` of `domid`'s
    /// `resource` over the whole (fresh) window. `EOPNOTSUPP` when Xen or the kernel cannot
    /// map resources at all.
    fn mmap_resource(
        &self,
        window: &mut ForeignWindow,
        domid: DomId,
        resource: ResourceId,
        first: u64,
    ) -> Result<(), Errno> {
        let _ = (window, domid, resource, first);
        Err(Errno::ENODEV)
    }

    /// `IOCTL_PRIVCMD_MMAP_RESOURCE` with neither address nor count: how many frames the
    /// resource has.
    fn resource_size(&self, domid: DomId, resource: ResourceId) -> Result<u64, Errno> {
        let _ = (domid, resource);
        Err(Errno::ENODEV)
    }

    /// Unmap a window this backend made, and let go of whatever its frames held.
    fn release_window(&self, window: ForeignWindow) {
        drop(window);
    }

    /// What the simulated host's boot checker found when `domid` first ran
    /// ([`sim::BootReport`]); real Xen runs the guest's kernel instead, and has none.
    fn boot_report(&self, domid: DomId) -> Result<Option<sim::BootReport>, Errno> {
        let _ = domid;
        Ok(None)
    }

    #[cfg(any(test, feature = "bench-internals"))]
    /// Issue hypercall `op` so that it can reach only the `(address, length)` range `arena`
    /// (memory the caller holds exclusively), whatever addresses the arguments hold; `None`
    /// when this backend cannot confine a call (real Xen follows any address it is given).
    fn hypercall_confined(
        &self,
        op: u64,
        args: [u64; 5],
        arena: (u64, u64),
    ) -> Option<Result<u64, Errno>> {
        let _ = (op, args, arena);
        None
    }
}

/// The backend of a pool that belongs to no hypervisor: locked anonymous memory, and every
/// hypercall answers `ENOSYS`.
#[derive(Debug)]
pub(crate) struct NoHypervisor;

impl Backend for NoHypervisor {
    fn name(&self) -> &'static str {
        "none"
    }

    fn memory_source(&self) -> MemorySource {
        MemorySource::LockedAnonymous
    }

    fn map_chunk(&self, len: usize) -> io::Result<ChunkMapping> {
        anon::map(len)
    }

    unsafe fn hypercall(&self, _op: u64, _args: [u64; 5]) -> Result<u64, Errno> {
        Err(Errno::ENOSYS)
    }

    #[cfg(any(test, feature = "bench-internals"))]
    fn hypercall_confined(&self, _: u64, _: [u64; 5], _: (u64, u64)) -> Option<Result<u64, Errno>> {
        Some(Err(Errno::ENOSYS))
    }
}
