//! Linux's privcmd driver: hypercalls through `/dev/xen/privcmd`, buffers from
//! `/dev/xen/hypercall` (privcmd-buf, Linux 4.18+) or, failing that, locked anonymous memory.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::ptr::NonNull;

use nix::errno::Errno;

use super::{anon, Backend, ChunkMapping, MemorySource};
use crate::error::Error;

/// Path of the hypercall device.
pub const PRIVCMD_PATH: &str = "/dev/xen/privcmd";
/// Path of the hypercall-buffer device.
pub const HYPERCALL_BUF_PATH: &str = "/dev/xen/hypercall";

/// The raw ioctl interface (`include/uapi/xen/privcmd.h`).
mod ioctls {
    /// `struct privcmd_hypercall`.
    #[repr(C)]
    pub(super) struct PrivcmdHypercall {
        pub op: u64,
        pub arg: [u64; 5],
    }

    static_assertions::assert_eq_size!(PrivcmdHypercall, [u8; 48]);

    /// `IOCTL_PRIVCMD_HYPERCALL` is `_IOC(_IOC_NONE, 'P', 0, sizeof(struct privcmd_hypercall))`.
    pub(super) const IOCTL_PRIVCMD_HYPERCALL: libc::c_ulong = 0x0030_5000;

    nix::ioctl_write_ptr_bad!(
        /// Issue a hypercall; the result is Xen's return value.
        privcmd_hypercall,
        IOCTL_PRIVCMD_HYPERCALL,
        PrivcmdHypercall
    );

    #[cfg(test)]
    #[test]
    fn request_code_matches_ioc_encoding() {
        // _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr, dir NONE = 0.
        let size = std::mem::size_of::<PrivcmdHypercall>() as libc::c_ulong;
        let code = (size << 16) | (libc::c_ulong::from(b'P') << 8);
        assert_eq!(code, IOCTL_PRIVCMD_HYPERCALL);
    }
}

/// The privcmd backend.
#[derive(Debug)]
pub(crate) struct Privcmd {
    privcmd: File,
    hypercall_buf: Option<File>,
}

impl Privcmd {
    /// Whether this machine has privcmd at all (we are in a Xen domain with the driver).
    pub(crate) fn available() -> bool {
        std::path::Path::new(PRIVCMD_PATH).exists()
    }

    /// Open `/dev/xen/privcmd`, and `/dev/xen/hypercall` if it exists.
    pub(crate) fn open() -> Result<Self, Error> {
        let privcmd = open_rw(PRIVCMD_PATH).map_err(|source| Error::Open {
            path: PRIVCMD_PATH,
            source,
        })?;
        let hypercall_buf = match open_rw(HYPERCALL_BUF_PATH) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(Error::Open {
                    path: HYPERCALL_BUF_PATH,
                    source,
                })
            }
        };
        Ok(Privcmd {
            privcmd,
            hypercall_buf,
        })
    }

    /// Open `/dev/xen/privcmd` only: buffers come from locked anonymous memory.
    pub(crate) fn open_without_hypercall_device() -> Result<Self, Error> {
        let privcmd = open_rw(PRIVCMD_PATH).map_err(|source| Error::Open {
            path: PRIVCMD_PATH,
            source,
        })?;
        Ok(Privcmd {
            privcmd,
            hypercall_buf: None,
        })
    }
}

fn open_rw(path: &str) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

impl Backend for Privcmd {
    fn name(&self) -> &'static str {
        "privcmd"
    }

    fn memory_source(&self) -> MemorySource {
        if self.hypercall_buf.is_some() {
            MemorySource::HypercallDevice
        } else {
            MemorySource::LockedAnonymous
        }
    }

    fn map_chunk(&self, len: usize) -> io::Result<ChunkMapping> {
        let Some(dev) = &self.hypercall_buf else {
            return anon::map(len);
        };
        // SAFETY: a fresh shared mapping of the privcmd-buf device; the kernel allocates
        // resident pages that are not copied into fork() children.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                dev.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(ptr.cast()).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: `base..base+len` is the whole fresh mapping just made, owned by nothing else.
        Ok(unsafe { ChunkMapping::from_raw(base, len, MemorySource::HypercallDevice) })
    }

    unsafe fn hypercall(&self, op: u64, args: [u64; 5]) -> Result<u64, Errno> {
        let call = ioctls::PrivcmdHypercall { op, arg: args };
        // SAFETY: the request code and struct match the privcmd ABI; the caller guarantees that
        // every address Xen follows is pool memory that stays mapped and unaliased for the call.
        let ret = unsafe { ioctls::privcmd_hypercall(self.privcmd.as_raw_fd(), &call) };
        // nix reads errno right after the ioctl, before anything else can clobber it.
        let ret = ret?;
        u64::try_from(ret).map_err(|_| Errno::EINVAL)
    }
}
