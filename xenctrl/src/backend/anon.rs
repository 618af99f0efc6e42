//! Anonymous hypercall-safe memory: `mmap` + `MADV_DONTFORK` + `mlock` + pre-touch.
//!
//! Used by the privcmd backend when `/dev/xen/hypercall` is missing (Linux before 4.18) and by
//! the simulator, which has no device to map from.

use std::io;
use std::ptr::NonNull;

use super::{ChunkMapping, MemorySource};

/// Map `len` bytes of locked, fork-excluded, pre-touched anonymous memory.
pub(crate) fn map(len: usize) -> io::Result<ChunkMapping> {
    // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let base =
        NonNull::new(ptr.cast()).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
    // SAFETY: `base..base+len` is the whole fresh mapping just made, owned by nothing else.
    let chunk = unsafe { ChunkMapping::from_raw(base, len, MemorySource::LockedAnonymous) };
    // On failure, dropping `chunk` unmaps it.
    prepare(&chunk)?;
    Ok(chunk)
}

fn prepare(chunk: &ChunkMapping) -> io::Result<()> {
    let ptr = chunk.base().as_ptr().cast::<libc::c_void>();
    // SAFETY: `ptr..ptr+len` is the mapping we just made and own.
    if unsafe { libc::madvise(ptr, chunk.len(), libc::MADV_DONTFORK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::mlock(ptr, chunk.len()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let page = page_size();
    for off in (0..chunk.len()).step_by(page) {
        // SAFETY: `off < len`, inside our writable mapping; a volatile write makes the kernel
        // back the page now rather than at the first hypercall.
        unsafe { chunk.base().as_ptr().add(off).write_volatile(0) };
    }
    Ok(())
}

/// Lock `len` bytes at `addr` (page aligned, inside one of our mappings).
pub(crate) fn lock(addr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: mlock only changes residency of pages we own; it does not touch their contents.
    if unsafe { libc::mlock(addr.cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unlock `len` bytes at `addr` (page aligned, inside one of our mappings).
pub(crate) fn unlock(addr: *mut u8, len: usize) {
    // SAFETY: munlock only changes residency of pages we own; it does not touch their contents.
    unsafe { libc::munlock(addr.cast(), len) };
}

/// The system page size (4096 on x86-64, which is all Xen's x86 ABI knows).
pub(crate) fn page_size() -> usize {
    crate::PAGE_SIZE
}
