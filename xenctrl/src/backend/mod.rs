//! The seam between the safe API and whatever executes hypercalls.
//!
//! Two implementations exist: [`privcmd`] (Linux `/dev/xen/privcmd` and `/dev/xen/hypercall`)
//! and [`sim`] (an in-process model of the hypervisor). Everything above this module is written
//! once against [`Backend`]; nothing above knows which one runs.

use std::io;
use std::ptr::NonNull;

use nix::errno::Errno;

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

/// A mapped, page-aligned run of hypercall-safe memory owned by a pool.
#[derive(Debug)]
pub(crate) struct ChunkMapping {
    /// Start of the mapping (page aligned).
    pub base: NonNull<u8>,
    /// Length in bytes (a multiple of the page size).
    pub len: usize,
    /// How the memory was obtained, and so how its pages are pinned.
    pub source: MemorySource,
}

// SAFETY: the mapping is plain memory owned by whoever holds the `ChunkMapping`; the pointer is
// not tied to any thread.
unsafe impl Send for ChunkMapping {}
// SAFETY: as above; `ChunkMapping` itself gives no access to the memory.
unsafe impl Sync for ChunkMapping {}

/// What executes hypercalls and provides the memory their arguments live in.
///
/// A backend hands out chunk mappings to the pool that belongs to the same handle, and is told
/// when they go away, so the simulator can tell pool memory from anything else.
pub(crate) trait Backend: Send + Sync + std::fmt::Debug {
    /// Short name for diagnostics ("privcmd", "sim").
    fn name(&self) -> &'static str;

    /// Where [`Backend::map_chunk`] gets its memory.
    fn memory_source(&self) -> MemorySource;

    /// Map `len` bytes (a multiple of the page size) of hypercall-safe memory.
    fn map_chunk(&self, len: usize) -> io::Result<ChunkMapping>;

    /// Release a mapping made by [`Backend::map_chunk`] on this backend.
    fn unmap_chunk(&self, chunk: ChunkMapping);

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

    fn unmap_chunk(&self, chunk: ChunkMapping) {
        anon::unmap(chunk);
    }

    unsafe fn hypercall(&self, _op: u64, _args: [u64; 5]) -> Result<u64, Errno> {
        Err(Errno::ENOSYS)
    }
}
