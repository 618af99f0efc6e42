//! The simulator's view of caller memory: only chunks it mapped for a pool are reachable.
//!
//! Every argument read or write goes through [`GuestMemory`]; [`ChunkRegistry`] answers
//! `EFAULT` for any range not wholly inside one registered chunk. This is the run-time check of
//! what the buffer types guarantee at compile time: a stack, heap or foreign address handed to
//! the simulator fails exactly as if Xen could not copy it.

use std::sync::RwLock;

use nix::errno::Errno;

/// Byte access to the memory a hypercall's addresses point into. The model never dereferences
/// an address itself, so it could be hosted elsewhere with another implementation of this trait.
pub(crate) trait GuestMemory {
    /// Copy `out.len()` bytes from `addr`, or `EFAULT`.
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), Errno>;

    /// Copy `data` to `addr`, or `EFAULT`.
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), Errno>;

    /// Whether `len` bytes at `addr` are accessible (Xen's `guest_handle_okay`).
    fn check(&self, addr: u64, len: u64) -> bool;
}

/// The address ranges of the chunks mapped through the simulator and not yet unmapped.
#[derive(Debug, Default)]
pub(crate) struct ChunkRegistry {
    /// `(start, len)` of each live chunk. Held for reading across every copy and for writing
    /// across every unmap, so a chunk cannot disappear while it is being copied.
    chunks: RwLock<Vec<(usize, usize)>>,
}

impl ChunkRegistry {
    /// Record a chunk.
    pub(crate) fn register(&self, start: usize, len: usize) {
        self.chunks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((start, len));
    }

    /// Forget a chunk, running `unmap` while no copy can be in progress.
    pub(crate) fn deregister(&self, start: usize, unmap: &mut dyn FnMut()) {
        let mut chunks = self.chunks.write().unwrap_or_else(|e| e.into_inner());
        chunks.retain(|&(s, _)| s != start);
        unmap();
    }

    fn inside(chunks: &[(usize, usize)], addr: u64, len: u64) -> bool {
        let (Ok(addr), Ok(len)) = (usize::try_from(addr), usize::try_from(len)) else {
            return false;
        };
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        chunks.iter().any(|&(s, l)| addr >= s && end <= s + l)
    }

    /// Run `f` with the live chunk list, if `len` bytes at `addr` lie in one chunk.
    /// Run `f` on the address as a pointer-sized integer, while the chunk list is held.
    fn with_range<R>(&self, addr: u64, len: usize, f: impl FnOnce(usize) -> R) -> Result<R, Errno> {
        let chunks = self.chunks.read().unwrap_or_else(|e| e.into_inner());
        if !Self::inside(&chunks, addr, len as u64) {
            return Err(Errno::EFAULT);
        }
        let addr = usize::try_from(addr).map_err(|_| Errno::EFAULT)?;
        let r = f(addr);
        drop(chunks);
        Ok(r)
    }
}

impl crate::backend::UnmapObserver for ChunkRegistry {
    fn unmapping(&self, start: usize, unmap: &mut dyn FnMut()) {
        self.deregister(start, unmap);
    }
}

impl GuestMemory for ChunkRegistry {
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), Errno> {
        let len = out.len();
        if len == 0 {
            return Ok(());
        }
        self.with_range(addr, len, |addr| {
            // SAFETY: `addr..addr+len` lies inside a chunk this simulator mapped (checked by
            // `with_range`, which holds the registry's read lock, so the chunk stays mapped until
            // the copy ends). The memory is plain bytes, readable at any alignment; the caller of
            // `Backend::hypercall` guarantees no Rust reference writes it during the call.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    std::ptr::with_exposed_provenance::<u8>(addr),
                    out.as_mut_ptr(),
                    len,
                )
            }
        })
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), Errno> {
        let len = data.len();
        if len == 0 {
            return Ok(());
        }
        self.with_range(addr, len, |addr| {
            // SAFETY: as in `read`: the range is inside a live, writable chunk we mapped, held
            // mapped by the read lock; `Backend::hypercall`'s contract lets the hypervisor write
            // argument memory during the call.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    data.as_ptr(),
                    std::ptr::with_exposed_provenance_mut::<u8>(addr),
                    len,
                )
            }
        })
    }

    fn check(&self, addr: u64, len: u64) -> bool {
        len == 0
            || Self::inside(
                &self.chunks.read().unwrap_or_else(|e| e.into_inner()),
                addr,
                len,
            )
    }
}

#[cfg(any(test, feature = "bench-internals"))]
/// Guest memory narrowed to one range (a buffer the caller holds `&mut`): anything outside it
/// is `EFAULT`, even other pool memory. What a safe raw hypercall on the simulator reaches.
pub(crate) struct Confined<'a> {
    /// The memory underneath.
    pub(crate) inner: &'a ChunkRegistry,
    /// Start of the range.
    pub(crate) start: u64,
    /// Its length in bytes.
    pub(crate) len: u64,
}

#[cfg(any(test, feature = "bench-internals"))]
impl Confined<'_> {
    fn allows(&self, addr: u64, len: u64) -> bool {
        len == 0
            || (addr >= self.start
                && addr
                    .checked_add(len)
                    .is_some_and(|end| end <= self.start.saturating_add(self.len)))
    }
}

#[cfg(any(test, feature = "bench-internals"))]
impl GuestMemory for Confined<'_> {
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), Errno> {
        if !self.allows(addr, out.len() as u64) {
            return Err(Errno::EFAULT);
        }
        self.inner.read(addr, out)
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), Errno> {
        if !self.allows(addr, data.len() as u64) {
            return Err(Errno::EFAULT);
        }
        self.inner.write(addr, data)
    }

    fn check(&self, addr: u64, len: u64) -> bool {
        self.allows(addr, len) && self.inner.check(addr, len)
    }
}
