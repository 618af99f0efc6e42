//! The simulated host's machine memory: the contents of every machine frame, in one file.
//!
//! Frame `mfn` is the page at offset `mfn * 4096` of a sparse file: a `memfd` for an in-process
//! host, `<state file>.ram` for a [persistent](super::SimHypervisor::persistent) one, so every
//! process that opens the host sees (and maps) the same bytes. The model ([`super::SimState`])
//! decides which frames a domain owns; this module only stores their contents and maps them.
//!
//! Mapping frames into our address space is what foreign mappings, grant mappings and
//! `MMAP_RESOURCE` do on real Xen: [`MachineMemory::map`] maps each frame of a list, `MAP_SHARED`,
//! at its place in one contiguous window, so that two mappings of one frame see each other's
//! writes, as they do on Xen.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::ptr::NonNull;

use crate::PAGE_SIZE;

const PAGE: u64 = PAGE_SIZE as u64;

/// Frame contents, one page per machine frame number.
#[derive(Debug)]
pub(crate) struct MachineMemory {
    file: File,
}

/// An owning mapping of machine frames made by [`MachineMemory::map`]: unmapped on drop.
#[derive(Debug)]
pub struct SimMapping {
    base: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: the mapping is process memory owned by this value; nothing ties it to a thread.
unsafe impl Send for SimMapping {}
// SAFETY: `&SimMapping` gives out only the address, never a reference to the memory.
unsafe impl Sync for SimMapping {}

impl SimMapping {
    /// Start of the window (page aligned).
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Length in bytes: a page per frame asked for.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the window is empty (never: [`MachineMemory::map`] refuses empty lists).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the frames were mapped writable.
    pub fn writable(&self) -> bool {
        self.writable
    }
}

impl Drop for SimMapping {
    fn drop(&mut self) {
        // SAFETY: this value owns the whole window (made by `map`), and is dropped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

fn frame_offset(mfn: u64) -> io::Result<u64> {
    mfn.checked_mul(PAGE)
        .filter(|&o| i64::try_from(o + PAGE).is_ok())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))
}

impl MachineMemory {
    /// Memory for an in-process host: an anonymous, sparse `memfd`.
    pub(crate) fn anonymous() -> io::Result<Self> {
        // SAFETY: a NUL-terminated name and valid flags; the result is checked.
        let fd =
            unsafe { libc::memfd_create(c"rxen-sim-machine-memory".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let file = unsafe { File::from_raw_fd(fd) };
        Ok(Self { file })
    }

    /// Memory for a host shared by processes: the file at `path`, created if missing.
    /// `fresh` empties it (a rebooted host).
    pub(crate) fn at(path: &Path, fresh: bool) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(fresh)
            .open(path)?;
        Ok(Self { file })
    }

    /// Make the file cover frames below `end` (sparse: holes read as zeros).
    fn cover(&self, end_mfn: u64) -> io::Result<()> {
        let need = frame_offset(end_mfn)?;
        if self.file.metadata()?.len() < need {
            self.file.set_len(need)?;
        }
        Ok(())
    }

    /// Copy `out.len()` bytes at `offset` of frame `mfn` (the copy may run on into the next
    /// frames). Never-written memory reads as zeros.
    pub(crate) fn read(&self, mfn: u64, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let at = frame_offset(mfn)?.saturating_add(offset);
        let mut done = 0;
        while done < out.len() {
            match self.file.read_at(&mut out[done..], at + done as u64)? {
                0 => {
                    out[done..].fill(0);
                    break;
                }
                n => done += n,
            }
        }
        Ok(())
    }

    /// Copy `data` to `offset` of frame `mfn`.
    pub(crate) fn write(&self, mfn: u64, offset: u64, data: &[u8]) -> io::Result<()> {
        let at = frame_offset(mfn)?.saturating_add(offset);
        self.file.write_all_at(data, at)
    }

    /// Forget the contents of `count` frames from `mfn` (Xen scrubs freed pages): they read as
    /// zeros again and stop using memory.
    pub(crate) fn scrub(&self, mfn: u64, count: u64) -> io::Result<()> {
        let (Ok(off), Ok(len)) = (
            i64::try_from(frame_offset(mfn)?),
            i64::try_from(count.saturating_mul(PAGE)),
        ) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        // SAFETY: fallocate on a file we own; the result is checked.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Map `frames` in order into one window, page `i` showing frame `frames[i]`, writable or
    /// read-only. Frames given as `None` stay inaccessible (a page of the window that faults,
    /// as an unmapped page of a real foreign mapping does); callers never hand such a page out.
    pub(crate) fn map(&self, frames: &[Option<u64>], writable: bool) -> io::Result<SimMapping> {
        let mapping = Self::reserve(frames.len(), writable)?;
        self.map_into(&mapping, 0, frames)?;
        Ok(mapping)
    }

    /// A window of `pages` inaccessible pages (the simulator's stand-in for a fresh mapping of
    /// `/dev/xen/privcmd`), to be filled by [`MachineMemory::map_into`]; `writable` is how
    /// frames will be mapped into it.
    pub(crate) fn reserve(pages: usize, writable: bool) -> io::Result<SimMapping> {
        if pages == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let len = pages
            .checked_mul(PAGE_SIZE)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: a fresh anonymous reservation at an address of the kernel's choosing; the
        // result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // From here the window is owned by the mapping, which unmaps it when dropped.
        Ok(SimMapping {
            base: NonNull::new(base.cast())
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?,
            len,
            writable,
        })
    }

    /// Map `frames` at pages `first..` of `window` (`None` leaves a page as it is), with the
    /// window's protection. Pages replaced are only the window's own: the range is checked
    /// against it.
    pub(crate) fn map_into(
        &self,
        window: &SimMapping,
        first: usize,
        frames: &[Option<u64>],
    ) -> io::Result<()> {
        let in_window = first
            .checked_add(frames.len())
            .and_then(|end| end.checked_mul(PAGE_SIZE))
            .is_some_and(|end| end <= window.len);
        if !in_window {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        if let Some(max) = frames.iter().flatten().max() {
            self.cover(max.saturating_add(1))?;
        }
        let prot = if window.writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // Map runs of consecutive frames with one call each.
        let mut i = 0;
        while i < frames.len() {
            let Some(start) = frames[i] else {
                i += 1;
                continue;
            };
            let mut n = 1;
            while i + n < frames.len() && frames[i + n] == Some(start + n as u64) {
                n += 1;
            }
            let off = libc::off_t::try_from(frame_offset(start)?)
                .map_err(|_| io::Error::from_raw_os_error(libc::EFAULT))?;
            // SAFETY: the target pages lie inside `window` (`first + frames.len()` pages fit,
            // checked above), a reservation owned by the `SimMapping`, so MAP_FIXED replaces
            // only its own pages; the file covers the frames (`cover` above). Whoever owns the
            // window holds no Rust reference into it (it hands out only volatile access).
            let got = unsafe {
                libc::mmap(
                    window.base.as_ptr().add((first + i) * PAGE_SIZE).cast(),
                    n * PAGE_SIZE,
                    prot,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    self.file.as_raw_fd(),
                    off,
                )
            };
            if got == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            i += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mappings_of_a_frame_share_its_contents() {
        let m = MachineMemory::anonymous().unwrap();
        m.write(7, 100, b"frame seven").unwrap();
        let a = m.map(&[Some(7), None, Some(9)], true).unwrap();
        let b = m.map(&[Some(9), Some(7)], false).unwrap();
        // SAFETY: test-only reads and writes inside mapped, accessible pages of live windows.
        unsafe {
            let a7 = a.base().as_ptr();
            assert_eq!(std::slice::from_raw_parts(a7.add(100), 11), b"frame seven");
            a.base()
                .as_ptr()
                .add(2 * PAGE_SIZE + 5)
                .write_volatile(0x5a);
            assert_eq!(b.base().as_ptr().add(5).read_volatile(), 0x5a);
            assert_eq!(b.base().as_ptr().add(PAGE_SIZE + 100).read_volatile(), b'f');
        }
        let mut out = [0u8; 1];
        m.read(9, 5, &mut out).unwrap();
        assert_eq!(out, [0x5a]);
        m.scrub(9, 1).unwrap();
        m.read(9, 5, &mut out).unwrap();
        assert_eq!(out, [0]);
        // Never-written, beyond the end of the file: zeros.
        let mut far = [1u8; 8];
        m.read(1 << 30, 0, &mut far).unwrap();
        assert_eq!(far, [0; 8]);
        assert!(m.map(&[], true).is_err());
        assert!(m.map(&[Some(u64::MAX)], true).is_err());
    }
}
