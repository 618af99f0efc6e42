//! Linux's privcmd driver: hypercalls through `/dev/xen/privcmd`, buffers from
//! `/dev/xen/hypercall` (privcmd-buf, Linux 4.18+) or, failing that, locked anonymous memory.
//!
//! A handle opens the devices by path ([`OpenOptions`]), or is built around descriptors its
//! caller opened earlier ([`Privcmd::from_fds`]), for example before entering a sandbox that
//! forbids `open`. Descriptors given to us are checked before the first real hypercall, so a
//! wrong one is named in the error instead of surfacing as a failed interface probe.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

use nix::errno::Errno;

use super::{anon, Backend, ChunkMapping, ForeignWindow, MemorySource, ResourceId, WindowInner};
use crate::abi::{__HYPERVISOR_xen_version, XENVER_version};
use crate::error::{Error, FdProblem, FileKind};
use crate::{DomId, XenCtrl, PAGE_SIZE};

/// Path of the hypercall device.
pub const PRIVCMD_PATH: &str = "/dev/xen/privcmd";
/// Path of the hypercall-buffer device.
pub const HYPERCALL_BUF_PATH: &str = "/dev/xen/hypercall";
/// Linux's `MISC_MAJOR`: privcmd-buf registers as a misc device with a dynamic minor, so this
/// major number is what any `/dev/xen/hypercall` has.
const MISC_MAJOR: u64 = 10;

/// The raw ioctl interface (`include/uapi/xen/privcmd.h`).
///
/// Which kernels have which request (Linux's `drivers/xen/privcmd.c`):
///
/// | request | Linux | Xen |
/// |---|---|---|
/// | `IOCTL_PRIVCMD_HYPERCALL` | every privcmd (2.6.x xenfs; the misc device since 3.3) | any |
/// | `IOCTL_PRIVCMD_MMAPBATCH_V2` | 3.7 | any (the kernel issues `mmu_update`, or `add_to_physmap_batch` in a PVH/Arm dom0) |
/// | `IOCTL_PRIVCMD_MMAP_RESOURCE` | 4.18 | `XENMEM_acquire_resource`: 4.11 (ioreq servers), 4.12 (grant tables), 4.15 (vmtrace buffers) |
/// | `IOCTL_PRIVCMD_UNIMPLEMENTED` | answers `ENOTTY`, or `EINVAL` before 4.11 | - |
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

    /// `struct privcmd_mmapbatch_v2`. `arr` and `err` point at `num` entries each; the kernel
    /// copies the frame list in and the error codes out (they are ioctl arguments, not Xen
    /// guest handles: Xen never sees these addresses, so they need not be pool memory).
    #[repr(C)]
    pub(super) struct PrivcmdMmapbatchV2 {
        pub num: u32,
        pub dom: u16,
        pub pad: [u8; 2],
        pub addr: u64,
        pub arr: *const u64,
        pub err: *mut i32,
    }

    static_assertions::assert_eq_size!(PrivcmdMmapbatchV2, [u8; 32]);

    /// `struct privcmd_mmap_resource`. `addr` and `num` both 0 asks for the resource's size,
    /// which the kernel writes back into `num`.
    #[repr(C)]
    pub(super) struct PrivcmdMmapResource {
        pub dom: u16,
        pub pad: [u8; 2],
        pub kind: u32,
        pub id: u32,
        pub idx: u32,
        pub num: u64,
        pub addr: u64,
    }

    static_assertions::assert_eq_size!(PrivcmdMmapResource, [u8; 32]);

    /// `IOCTL_PRIVCMD_MMAPBATCH_V2` is `_IOC(_IOC_NONE, 'P', 4, sizeof(privcmd_mmapbatch_v2_t))`.
    pub(super) const IOCTL_PRIVCMD_MMAPBATCH_V2: libc::c_ulong = 0x0020_5004;
    /// `IOCTL_PRIVCMD_MMAP_RESOURCE` is `_IOC(_IOC_NONE, 'P', 7, sizeof(privcmd_mmap_resource_t))`.
    pub(super) const IOCTL_PRIVCMD_MMAP_RESOURCE: libc::c_ulong = 0x0020_5007;
    /// `IOCTL_PRIVCMD_UNIMPLEMENTED` is `_IOC(_IOC_NONE, 'P', 0xFF, 0)`: a request no privcmd
    /// implements, to learn what the driver answers for an unknown one.
    pub(super) const IOCTL_PRIVCMD_UNIMPLEMENTED: libc::c_ulong = 0x0000_50ff;

    nix::ioctl_write_ptr_bad!(
        /// Map a batch of foreign frames into a privcmd window; per-page errors go to `err`.
        privcmd_mmapbatch_v2,
        IOCTL_PRIVCMD_MMAPBATCH_V2,
        PrivcmdMmapbatchV2
    );

    nix::ioctl_readwrite_bad!(
        /// Map frames of a domain's resource into a privcmd window, or (no address, no count)
        /// write the resource's size into `num`.
        privcmd_mmap_resource,
        IOCTL_PRIVCMD_MMAP_RESOURCE,
        PrivcmdMmapResource
    );

    nix::ioctl_none_bad!(
        /// A request privcmd never implements.
        privcmd_unimplemented,
        IOCTL_PRIVCMD_UNIMPLEMENTED
    );

    #[cfg(test)]
    #[test]
    fn request_code_matches_ioc_encoding() {
        // _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr, dir NONE = 0.
        let ioc = |nr: libc::c_ulong, size: usize| {
            ((size as libc::c_ulong) << 16) | (libc::c_ulong::from(b'P') << 8) | nr
        };
        assert_eq!(
            ioc(0, std::mem::size_of::<PrivcmdHypercall>()),
            IOCTL_PRIVCMD_HYPERCALL
        );
        assert_eq!(
            ioc(4, std::mem::size_of::<PrivcmdMmapbatchV2>()),
            IOCTL_PRIVCMD_MMAPBATCH_V2
        );
        assert_eq!(
            ioc(7, std::mem::size_of::<PrivcmdMmapResource>()),
            IOCTL_PRIVCMD_MMAP_RESOURCE
        );
        assert_eq!(ioc(0xff, 0), IOCTL_PRIVCMD_UNIMPLEMENTED);
    }

    #[cfg(test)]
    #[test]
    fn field_offsets_match_the_c_structs() {
        use std::mem::offset_of;
        // privcmd_mmapbatch_v2: unsigned int num; domid_t dom; __u64 addr; arr; err.
        assert_eq!(offset_of!(PrivcmdMmapbatchV2, dom), 4);
        assert_eq!(offset_of!(PrivcmdMmapbatchV2, addr), 8);
        assert_eq!(offset_of!(PrivcmdMmapbatchV2, arr), 16);
        assert_eq!(offset_of!(PrivcmdMmapbatchV2, err), 24);
        // privcmd_mmap_resource: domid_t dom; __u32 type, id, idx; __u64 num, addr.
        assert_eq!(offset_of!(PrivcmdMmapResource, kind), 4);
        assert_eq!(offset_of!(PrivcmdMmapResource, id), 8);
        assert_eq!(offset_of!(PrivcmdMmapResource, idx), 12);
        assert_eq!(offset_of!(PrivcmdMmapResource, num), 16);
        assert_eq!(offset_of!(PrivcmdMmapResource, addr), 24);
    }
}

/// How [`XenCtrl`] opens `/dev/xen/privcmd` and `/dev/xen/hypercall` by path. Made by
/// [`XenCtrl::options`]; [`XenCtrl::open`] is `XenCtrl::options().open()`.
///
/// # Examples
///
/// A launcher that opens the devices for a sandboxed program it is about to exec:
///
/// ```no_run
/// use xenctrl::XenCtrl;
///
/// let xc = XenCtrl::options().cloexec(false).anonymous_buffers(true).open()?;
/// # Ok::<(), xenctrl::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct OpenOptions {
    cloexec: bool,
    anonymous_buffers: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl OpenOptions {
    /// The defaults, as [`XenCtrl::open`] uses them: close-on-exec, and buffers from
    /// `/dev/xen/hypercall` when it exists.
    pub fn new() -> Self {
        OpenOptions {
            cloexec: true,
            anonymous_buffers: false,
        }
    }

    /// Whether the descriptors are opened close-on-exec (the default, `true`).
    ///
    /// With `true` they are opened `O_RDWR | O_CLOEXEC` and close at `execve`, so no program
    /// this process runs (hotplug scripts, helpers) inherits the right to issue hypercalls.
    /// Pass `false` only to hand them across `execve` on purpose: a launcher opens the devices,
    /// then execs a sandboxed program that cannot open `/dev/xen` itself and takes them by
    /// number with [`XenCtrl::from_fds`]. They are then opened `O_RDWR` alone. Either way the
    /// handle made here owns them and closes them when dropped.
    pub fn cloexec(&mut self, cloexec: bool) -> &mut Self {
        self.cloexec = cloexec;
        self
    }

    /// Whether the buffer pool uses locked anonymous memory instead of `/dev/xen/hypercall`
    /// (default `false`). With `true`, `/dev/xen/hypercall` is not opened at all, as on
    /// kernels older than 4.18; for testing that fallback on real Xen.
    pub fn anonymous_buffers(&mut self, anonymous: bool) -> &mut Self {
        self.anonymous_buffers = anonymous;
        self
    }

    /// Open `/dev/xen/privcmd`, and `/dev/xen/hypercall` if it exists and anonymous buffers
    /// were not asked for, with the flags above; then probe the interface versions.
    ///
    /// # Errors
    ///
    /// [`Error::Open`] naming the device that is missing or cannot be opened (not a Xen domain,
    /// no `xen-privcmd` module, not root); [`Error::UnsupportedInterface`] when Xen speaks a
    /// domctl/sysctl version this crate does not know.
    pub fn open(&self) -> Result<XenCtrl, Error> {
        XenCtrl::with_backend(Arc::new(Privcmd::open_with(self)?))
    }
}

/// The privcmd backend.
#[derive(Debug)]
pub(crate) struct Privcmd {
    privcmd: File,
    hypercall_buf: Option<File>,
    /// What this privcmd answers for a request it does not implement (`ENOTTY`, or `EINVAL`
    /// before Linux 4.11), asked the first time a resource mapping fails with `EINVAL`.
    unimplemented: OnceLock<Errno>,
}

impl Privcmd {
    /// Whether this machine has privcmd at all (we are in a Xen domain with the driver).
    pub(crate) fn available() -> bool {
        std::path::Path::new(PRIVCMD_PATH).exists()
    }

    /// Open `/dev/xen/privcmd`, and `/dev/xen/hypercall` if it exists, close-on-exec.
    pub(crate) fn open() -> Result<Self, Error> {
        Self::open_with(&OpenOptions::new())
    }

    /// Open `/dev/xen/privcmd` only, close-on-exec: buffers come from locked anonymous memory.
    pub(crate) fn open_without_hypercall_device() -> Result<Self, Error> {
        Self::open_with(OpenOptions::new().anonymous_buffers(true))
    }

    fn open_with(options: &OpenOptions) -> Result<Self, Error> {
        let privcmd = open_rw(PRIVCMD_PATH, options.cloexec).map_err(|source| Error::Open {
            path: PRIVCMD_PATH,
            source,
        })?;
        let hypercall_buf = if options.anonymous_buffers {
            None
        } else {
            match open_rw(HYPERCALL_BUF_PATH, options.cloexec) {
                Ok(f) => Some(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(source) => {
                    return Err(Error::Open {
                        path: HYPERCALL_BUF_PATH,
                        source,
                    })
                }
            }
        };
        Ok(Privcmd {
            privcmd,
            hypercall_buf,
            unimplemented: OnceLock::new(),
        })
    }

    /// A backend around descriptors opened elsewhere, once they pass the checks of
    /// [`Privcmd::check_privcmd`] and [`check_hypercall_buf`]. Their flags are left as they
    /// are. On error both are closed.
    pub(crate) fn from_fds(
        privcmd: OwnedFd,
        hypercall_buf: Option<OwnedFd>,
    ) -> Result<Self, Error> {
        let this = Privcmd {
            privcmd: File::from(privcmd),
            hypercall_buf: hypercall_buf.map(File::from),
            unimplemented: OnceLock::new(),
        };
        this.check_privcmd()?;
        if let Some(buf) = &this.hypercall_buf {
            check_hypercall_buf(buf, &this.privcmd)?;
        }
        Ok(this)
    }

    /// Check that `self.privcmd` is privcmd, unrestricted: issue `XENVER_version`, which any
    /// domain may issue, which takes no argument memory and changes nothing.
    fn check_privcmd(&self) -> Result<(), Error> {
        // SAFETY: `XENVER_version` takes no argument: the second argument is NULL, so Xen
        // follows no address and the pool invariant of `Backend::hypercall` holds vacuously.
        let res = unsafe { self.hypercall(__HYPERVISOR_xen_version, [XENVER_version, 0, 0, 0, 0]) };
        res.map(drop).map_err(|e| Error::BadDeviceFd {
            device: PRIVCMD_PATH,
            problem: privcmd_problem(e, &self.privcmd),
            source: Some(io::Error::from(e)),
        })
    }
}

/// What a failed `XENVER_version` through `privcmd` says about the descriptor.
fn privcmd_problem(errno: Errno, privcmd: &File) -> FdProblem {
    match errno {
        Errno::EBADF => FdProblem::NotOpen,
        // privcmd answers EPERM to every hypercall on a restricted descriptor; Xen itself never
        // refuses XENVER_version.
        Errno::EPERM => FdProblem::Restricted,
        _ => FdProblem::WrongFile(file_kind(privcmd)),
    }
}

/// Check that `buf` can serve as `/dev/xen/hypercall`: open, a misc character device other
/// than `privcmd`'s, and mappable shared and writable. Nothing is tried on a descriptor whose
/// `fstat` already rules it out (a regular file would map, and fault on first touch).
fn check_hypercall_buf(buf: &File, privcmd: &File) -> Result<(), Error> {
    let bad = |problem, source| Error::BadDeviceFd {
        device: HYPERCALL_BUF_PATH,
        problem,
        source,
    };
    let meta = buf.metadata().map_err(|e| {
        let problem = if e.raw_os_error() == Some(libc::EBADF) {
            FdProblem::NotOpen
        } else {
            FdProblem::WrongFile(FileKind::Other)
        };
        bad(problem, Some(e))
    })?;
    if let Some(problem) = hypercall_buf_kind_problem(&meta, privcmd.metadata().ok().as_ref()) {
        return Err(bad(problem, None));
    }
    probe_map(buf).map_err(|(problem, e)| bad(problem, Some(e)))
}

/// Whether `fstat` alone rules a descriptor out as `/dev/xen/hypercall`.
fn hypercall_buf_kind_problem(
    buf: &fs::Metadata,
    privcmd: Option<&fs::Metadata>,
) -> Option<FdProblem> {
    let is_chr = |m: &fs::Metadata| m.file_type().is_char_device();
    if privcmd.is_some_and(|p| is_chr(p) && is_chr(buf) && p.rdev() == buf.rdev()) {
        return Some(FdProblem::SameAsPrivcmd);
    }
    match kind_of(buf) {
        FileKind::CharDevice {
            major: MISC_MAJOR, ..
        } => None,
        other => Some(FdProblem::WrongFile(other)),
    }
}

/// Map one page of `dev` as the pool would, and unmap it again.
fn probe_map(dev: &File) -> Result<(), (FdProblem, io::Error)> {
    match map_device(dev, crate::PAGE_SIZE) {
        Ok(chunk) => {
            drop(chunk); // unmaps
            Ok(())
        }
        Err(e) => {
            let problem = match e.raw_os_error() {
                Some(libc::EBADF) => FdProblem::NotOpen,
                Some(libc::EACCES) => FdProblem::NotReadWrite,
                _ => FdProblem::WrongFile(file_kind(dev)),
            };
            Err((problem, e))
        }
    }
}

/// What `fstat` says `file` is.
fn file_kind(file: &File) -> FileKind {
    file.metadata().map_or(FileKind::Other, |m| kind_of(&m))
}

fn kind_of(meta: &fs::Metadata) -> FileKind {
    let t = meta.file_type();
    let (major, minor) = (
        nix::sys::stat::major(meta.rdev()),
        nix::sys::stat::minor(meta.rdev()),
    );
    if t.is_file() {
        FileKind::RegularFile
    } else if t.is_dir() {
        FileKind::Directory
    } else if t.is_fifo() {
        FileKind::Pipe
    } else if t.is_socket() {
        FileKind::Socket
    } else if t.is_symlink() {
        FileKind::Symlink
    } else if t.is_block_device() {
        FileKind::BlockDevice { major, minor }
    } else if t.is_char_device() {
        FileKind::CharDevice { major, minor }
    } else {
        FileKind::Other
    }
}

/// Open `path` `O_RDWR`, with `O_CLOEXEC` if `cloexec`.
fn open_rw(path: &str, cloexec: bool) -> io::Result<File> {
    // std opens every file O_CLOEXEC, whatever the custom flags say.
    let file = fs::OpenOptions::new().read(true).write(true).open(path)?;
    if !cloexec {
        // FD_CLOEXEC is the only descriptor flag, so clearing all of them clears just it.
        nix::fcntl::fcntl(
            file.as_raw_fd(),
            nix::fcntl::F_SETFD(nix::fcntl::FdFlag::empty()),
        )?;
    }
    Ok(file)
}

/// Map `len` bytes (a multiple of the page size) of the privcmd-buf device `dev`.
fn map_device(dev: &File, len: usize) -> io::Result<ChunkMapping> {
    // SAFETY: a fresh shared mapping at an address the kernel picks, so no existing memory is
    // affected; of privcmd-buf, the kernel allocates resident pages that are not copied into
    // fork() children. Nothing here touches the mapping, so a descriptor that maps but cannot
    // back its pages (a regular file) cannot fault here.
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
        match &self.hypercall_buf {
            Some(dev) => map_device(dev, len),
            None => anon::map(len),
        }
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

    fn foreign_window(&self, pages: usize, writable: bool) -> io::Result<ForeignWindow> {
        let len = pages
            .checked_mul(PAGE_SIZE)
            .filter(|&l| l > 0)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut options = memmap2::MmapOptions::new();
        options.len(len);
        // A shared mapping of privcmd at offset 0: the driver marks it VM_PFNMAP | VM_DONTCOPY
        // (never copied into fork() children) and leaves every page unmapped (SIGBUS) until an
        // ioctl fills it. The protection is what the frames will be mapped with.
        let map = if writable {
            options.map_raw(&self.privcmd)?
        } else {
            options.map_raw_read_only(&self.privcmd)?
        };
        ForeignWindow::new(WindowInner::Device(map), pages)
    }

    fn mmap_batch(
        &self,
        window: &mut ForeignWindow,
        first: usize,
        domid: DomId,
        gfns: &[u64],
        errs: &mut [i32],
    ) -> Result<(), Errno> {
        let WindowInner::Device(_) = window.inner() else {
            return Err(Errno::EINVAL);
        };
        let end = first.checked_add(gfns.len()).ok_or(Errno::EINVAL)?;
        if gfns.is_empty() || errs.len() != gfns.len() || end > window.pages() {
            return Err(Errno::EINVAL);
        }
        let num = u32::try_from(gfns.len()).map_err(|_| Errno::EINVAL)?;
        // The kernel clears the error array itself since 4.x; older ones write only errors.
        errs.fill(0);
        let addr = window.base().as_ptr() as u64 + (first * PAGE_SIZE) as u64;
        let batch = ioctls::PrivcmdMmapbatchV2 {
            num,
            dom: domid,
            pad: [0; 2],
            addr,
            arr: gfns.as_ptr(),
            err: errs.as_mut_ptr(),
        };
        // SAFETY: the request code and struct match privcmd's ABI. `arr` and `err` point at
        // `num` entries each, alive and exclusively ours for the call (the kernel reads the one
        // and writes the other, and keeps neither). `addr..addr + num` pages lie inside
        // `window`, a privcmd mapping this backend made and the caller owns; the kernel only
        // installs frames in pages of it that are still unmapped (it refuses the call
        // otherwise), and no Rust reference to any page of the window exists.
        let ret = unsafe { ioctls::privcmd_mmapbatch_v2(self.privcmd.as_raw_fd(), &batch) };
        ret.map(drop)
    }

    fn mmap_resource(
        &self,
        window: &mut ForeignWindow,
        domid: DomId,
        resource: ResourceId,
        first: u64,
    ) -> Result<(), Errno> {
        let WindowInner::Device(_) = window.inner() else {
            return Err(Errno::EINVAL);
        };
        let mut req = ioctls::PrivcmdMmapResource {
            dom: domid,
            pad: [0; 2],
            kind: resource.kind,
            id: resource.id,
            idx: u32::try_from(first).map_err(|_| Errno::EINVAL)?,
            num: window.pages() as u64,
            addr: window.base().as_ptr() as u64,
        };
        // SAFETY: the request code and struct match privcmd's ABI; `req` is ours for the call.
        // `addr` is the start of `window`, a fresh privcmd mapping of exactly `num` pages that
        // this backend made and the caller owns, with no Rust reference into it: the kernel
        // fills its pages with the resource's frames.
        let ret = unsafe { ioctls::privcmd_mmap_resource(self.privcmd.as_raw_fd(), &mut req) };
        ret.map(drop).map_err(|e| self.unsupported_as_eopnotsupp(e))
    }

    fn resource_size(&self, domid: DomId, resource: ResourceId) -> Result<u64, Errno> {
        let mut req = ioctls::PrivcmdMmapResource {
            dom: domid,
            pad: [0; 2],
            kind: resource.kind,
            id: resource.id,
            idx: 0,
            num: 0,
            addr: 0,
        };
        // SAFETY: the request code and struct match privcmd's ABI; with neither address nor
        // count the kernel maps nothing and writes the size into `req.num`, which is ours.
        let ret = unsafe { ioctls::privcmd_mmap_resource(self.privcmd.as_raw_fd(), &mut req) };
        ret.map_err(|e| self.unsupported_as_eopnotsupp(e))?;
        Ok(req.num)
    }
}

impl Privcmd {
    /// What a failed `IOCTL_PRIVCMD_MMAP_RESOURCE` means: a kernel without the request
    /// (before 4.18) answers what it answers for any unknown request, `ENOTTY` (or `EINVAL`
    /// before 4.11, which is why that is probed rather than assumed, as libxenforeignmemory
    /// does); that is reported as `EOPNOTSUPP`, Xen's own answer when it cannot map the
    /// resource, so that callers fall back the same way for both.
    fn unsupported_as_eopnotsupp(&self, errno: Errno) -> Errno {
        match errno {
            Errno::ENOTTY => Errno::EOPNOTSUPP,
            Errno::EINVAL if self.unknown_request_errno() == Errno::EINVAL => Errno::EOPNOTSUPP,
            other => other,
        }
    }

    /// What this privcmd answers for a request it does not implement: asked once.
    fn unknown_request_errno(&self) -> Errno {
        *self.unimplemented.get_or_init(|| {
            // SAFETY: a request with no argument that no privcmd implements: the driver
            // answers an errno and touches nothing.
            match unsafe { ioctls::privcmd_unimplemented(self.privcmd.as_raw_fd()) } {
                Err(e) => e,
                // A driver that accepts it is not privcmd; keep the conventional answer.
                Ok(_) => Errno::ENOTTY,
            }
        })
    }
}

/// Every entry point that issues an ioctl or mmap on a privcmd or privcmd-buf descriptor, run
/// on descriptors that are not those devices (after kvm-ioctls' `test_faulty_*_fd`): each must
/// answer an error with the errno the kernel gives, never panic, fault or fall back silently.
#[cfg(test)]
mod tests {
    use std::fs::{self, File};
    use std::io;
    use std::mem::ManuallyDrop;
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use nix::errno::Errno;

    use super::*;
    use crate::PAGE_SIZE;

    /// Tests that count `/dev/zero` mappings in `/proc/self/maps` hold this, so that none sees
    /// another's.
    static DEV_ZERO_MAPS: Mutex<()> = Mutex::new(());

    fn open(path: &str, flags: libc::c_int) -> File {
        fs::OpenOptions::new()
            .read(flags & libc::O_ACCMODE != libc::O_WRONLY)
            .write(flags & libc::O_ACCMODE != libc::O_RDONLY)
            .custom_flags(flags & !libc::O_ACCMODE)
            .open(path)
            .unwrap_or_else(|e| panic!("open {path}: {e}"))
    }

    fn dev_null() -> File {
        open("/dev/null", libc::O_RDWR)
    }

    /// An empty regular file, already unlinked.
    fn regular_file() -> File {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "xenctrl-privcmd-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        fs::remove_file(&path).unwrap();
        f
    }

    /// An `O_PATH` descriptor: open, but every ioctl and mmap on it answers `EBADF`.
    fn o_path(path: &str) -> File {
        open(path, libc::O_RDONLY | libc::O_PATH)
    }

    /// A descriptor that was never open: -2, as kvm-ioctls uses. Never closed (see SAFETY).
    fn closed() -> ManuallyDrop<File> {
        // SAFETY: -2 is never an open descriptor, so this `File` aliases no one else's: every
        // syscall on it answers EBADF, and no later `open` can hand the number out (as it can a
        // number we had closed, while other test threads run). It is `ManuallyDrop` so that it
        // is never closed (std aborts in debug builds when an owned descriptor is not open).
        ManuallyDrop::new(unsafe { File::from_raw_fd(-2) })
    }

    fn pipe_read_end() -> File {
        let (r, _w) = nix::unistd::pipe().unwrap();
        File::from(r)
    }

    /// A pipe open for reading and writing (reopened through `/proc`), so that `mmap` gets
    /// past its access-mode check to the file's missing `mmap` method.
    fn pipe_rdwr() -> File {
        let r = pipe_read_end();
        open(&format!("/proc/self/fd/{}", r.as_raw_fd()), libc::O_RDWR)
    }

    /// Run `f` on a backend around `privcmd` and `hypercall_buf`, unchecked, as a faulty caller
    /// would have it. The descriptors are never closed (see [`closed`]).
    fn with_backend<R>(
        privcmd: ManuallyDrop<File>,
        hypercall_buf: Option<ManuallyDrop<File>>,
        f: impl FnOnce(&Privcmd) -> R,
    ) -> R {
        let backend = ManuallyDrop::new(Privcmd {
            privcmd: ManuallyDrop::into_inner(privcmd),
            hypercall_buf: hypercall_buf.map(ManuallyDrop::into_inner),
            unimplemented: OnceLock::new(),
        });
        f(&backend)
        // Not dropped: a `closed()` descriptor must not be closed. The open ones leak into
        // this test process only.
    }

    fn bad_fds() -> Vec<(&'static str, ManuallyDrop<File>)> {
        vec![
            ("/dev/null", ManuallyDrop::new(dev_null())),
            ("a regular file", ManuallyDrop::new(regular_file())),
            ("a pipe", ManuallyDrop::new(pipe_read_end())),
            ("an O_PATH fd", ManuallyDrop::new(o_path("/dev/null"))),
            ("a closed fd", closed()),
        ]
    }

    fn xen_version(backend: &Privcmd) -> Result<u64, Errno> {
        // SAFETY: XENVER_version takes no argument memory (the second argument is NULL).
        unsafe { backend.hypercall(__HYPERVISOR_xen_version, [XENVER_version, 0, 0, 0, 0]) }
    }

    #[test]
    fn hypercall_on_a_bad_privcmd_fd_answers_its_errno() {
        for (what, fd) in bad_fds() {
            let expected = match what {
                "an O_PATH fd" | "a closed fd" => Errno::EBADF,
                _ => Errno::ENOTTY,
            };
            let got = with_backend(fd, None, xen_version);
            assert_eq!(got, Err(expected), "hypercall on {what}");
        }
    }

    #[test]
    fn hypercall_with_pool_addresses_on_a_bad_fd_fails_before_xen() {
        // A domctl-shaped call whose argument is a real (anonymous) chunk: the ioctl must fail
        // at the descriptor, and the chunk must be left mapped and writable.
        with_backend(ManuallyDrop::new(dev_null()), None, |b| {
            let chunk = b.map_chunk(PAGE_SIZE).unwrap();
            let addr = chunk.base().as_ptr() as u64;
            // SAFETY: `addr` is a chunk this backend mapped, live for the call.
            let got = unsafe { b.hypercall(crate::abi::__HYPERVISOR_domctl, [addr, 0, 0, 0, 0]) };
            assert_eq!(got, Err(Errno::ENOTTY));
            // SAFETY: the chunk is ours, mapped read-write, and nothing else refers to it.
            unsafe { chunk.base().as_ptr().write_volatile(0x5a) };
            drop(chunk);
        });
    }

    #[test]
    fn foreign_mapping_on_a_bad_privcmd_fd_answers_its_errno() {
        for (what, fd) in bad_fds() {
            let window = with_backend(fd, None, |b| {
                let shared = ResourceId { kind: 1, id: 0 };
                let size = b.resource_size(1, shared);
                let window = b.foreign_window(2, true);
                let filled = window.map(|mut w| {
                    let mut errs = [0; 2];
                    let batch = b.mmap_batch(&mut w, 0, 1, &[1, 2], &mut errs);
                    let resource = b.mmap_resource(&mut w, 1, shared, 0);
                    b.release_window(w);
                    (batch, resource)
                });
                (size, filled.map_err(|e| e.raw_os_error()))
            });
            let (size, filled) = window;
            match what {
                // The kernel's answer to an unknown request, reported as Xen's "cannot".
                "/dev/null" | "a regular file" | "a pipe" => {
                    assert_eq!(size, Err(Errno::EOPNOTSUPP), "{what}")
                }
                _ => assert_eq!(size, Err(Errno::EBADF), "{what}"),
            }
            let expected_window = match what {
                "/dev/null" => Err(Some(libc::ENODEV)),
                // Mapping an empty file shared succeeds (touching it would not); the ioctls
                // then fail at the descriptor, before anything is mapped into the window.
                "a regular file" => Ok((Err(Errno::ENOTTY), Err(Errno::EOPNOTSUPP))),
                // Read-only, so not mappable shared and writable.
                "a pipe" => Err(Some(libc::EACCES)),
                _ => Err(Some(libc::EBADF)),
            };
            assert_eq!(filled, expected_window, "{what}");
        }
    }

    #[test]
    fn privcmd_refuses_a_window_it_did_not_make() {
        let sim = crate::SimHypervisor::default();
        let mut foreign = sim.foreign_window(1, true).unwrap();
        with_backend(ManuallyDrop::new(dev_null()), None, |b| {
            let mut errs = [0];
            assert_eq!(
                b.mmap_batch(&mut foreign, 0, 1, &[1], &mut errs),
                Err(Errno::EINVAL)
            );
            let shared = ResourceId { kind: 1, id: 0 };
            assert_eq!(
                b.mmap_resource(&mut foreign, 1, shared, 0),
                Err(Errno::EINVAL)
            );
        });
        sim.release_window(foreign);
    }

    #[test]
    fn map_chunk_on_a_bad_hypercall_fd_answers_its_errno() {
        let cases = [
            ("/dev/null", ManuallyDrop::new(dev_null()), libc::ENODEV),
            ("a pipe", ManuallyDrop::new(pipe_rdwr()), libc::ENODEV),
            (
                "a read-only pipe",
                ManuallyDrop::new(pipe_read_end()),
                libc::EACCES,
            ),
            (
                "an O_PATH fd",
                ManuallyDrop::new(o_path("/dev/zero")),
                libc::EBADF,
            ),
            ("a closed fd", closed(), libc::EBADF),
            (
                "/dev/zero read-only",
                ManuallyDrop::new(open("/dev/zero", libc::O_RDONLY)),
                libc::EACCES,
            ),
            (
                "/dev/zero write-only",
                ManuallyDrop::new(open("/dev/zero", libc::O_WRONLY)),
                libc::EACCES,
            ),
        ];
        for (what, fd, errno) in cases {
            let got = with_backend(ManuallyDrop::new(dev_null()), Some(fd), |b| {
                b.map_chunk(2 * PAGE_SIZE)
            });
            let err = got.expect_err(what);
            assert_eq!(
                err.raw_os_error(),
                Some(errno),
                "map_chunk on {what}: {err}"
            );
        }
    }

    /// `/dev/zero` mappings in this process, by start address.
    fn dev_zero_maps() -> Vec<usize> {
        fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|l| l.contains("/dev/zero"))
            .map(|l| usize::from_str_radix(l.split('-').next().unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn dropping_a_chunk_unmaps_that_chunk_only() {
        // /dev/zero maps shared and writable like privcmd-buf, so it stands in for it here.
        let _g = DEV_ZERO_MAPS.lock().unwrap_or_else(|e| e.into_inner());
        let before = dev_zero_maps();
        with_backend(
            ManuallyDrop::new(dev_null()),
            Some(ManuallyDrop::new(open("/dev/zero", libc::O_RDWR))),
            |b| {
                let a = b.map_chunk(2 * PAGE_SIZE).unwrap();
                let c = b.map_chunk(PAGE_SIZE).unwrap();
                assert_eq!(a.source(), MemorySource::HypercallDevice);
                let (a_addr, c_addr) = (a.base().as_ptr() as usize, c.base().as_ptr() as usize);
                assert!(dev_zero_maps().contains(&a_addr));
                drop(a);
                let after = dev_zero_maps();
                assert!(!after.contains(&a_addr), "unmapped chunk still mapped");
                assert!(after.contains(&c_addr), "the other chunk was unmapped too");
                // SAFETY: `c` is ours, mapped read-write, and nothing else refers to it.
                unsafe { c.base().as_ptr().add(PAGE_SIZE - 1).write_volatile(1) };
                drop(c);
            },
        );
        assert_eq!(dev_zero_maps(), before, "a mapping leaked");
    }

    #[test]
    fn check_privcmd_names_the_problem() {
        let cases = [
            (
                "/dev/null",
                ManuallyDrop::new(dev_null()),
                FdProblem::WrongFile(FileKind::CharDevice { major: 1, minor: 3 }),
                libc::ENOTTY,
            ),
            (
                "a regular file",
                ManuallyDrop::new(regular_file()),
                FdProblem::WrongFile(FileKind::RegularFile),
                libc::ENOTTY,
            ),
            (
                "a pipe",
                ManuallyDrop::new(pipe_read_end()),
                FdProblem::WrongFile(FileKind::Pipe),
                libc::ENOTTY,
            ),
            (
                "an O_PATH fd",
                ManuallyDrop::new(o_path("/dev/null")),
                FdProblem::NotOpen,
                libc::EBADF,
            ),
            ("a closed fd", closed(), FdProblem::NotOpen, libc::EBADF),
        ];
        for (what, fd, problem, errno) in cases {
            match with_backend(fd, None, Privcmd::check_privcmd) {
                Err(Error::BadDeviceFd {
                    device,
                    problem: p,
                    source: Some(source),
                }) => {
                    assert_eq!(device, PRIVCMD_PATH, "{what}");
                    assert_eq!(p, problem, "{what}");
                    assert_eq!(source.raw_os_error(), Some(errno), "{what}");
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn eperm_from_privcmd_means_restricted() {
        // What privcmd answers on a descriptor restricted with IOCTL_PRIVCMD_RESTRICT; it cannot
        // be produced without Xen, so the classification is checked on its own.
        assert_eq!(
            privcmd_problem(Errno::EPERM, &dev_null()),
            FdProblem::Restricted
        );
        assert_eq!(privcmd_problem(Errno::EBADF, &closed()), FdProblem::NotOpen);
        assert_eq!(
            privcmd_problem(Errno::EINVAL, &closed()),
            FdProblem::WrongFile(FileKind::Other)
        );
    }

    #[test]
    fn check_hypercall_buf_refuses_by_fstat_before_mapping() {
        let privcmd = dev_null();
        let cases = [
            (regular_file(), FdProblem::WrongFile(FileKind::RegularFile)),
            (pipe_read_end(), FdProblem::WrongFile(FileKind::Pipe)),
            (
                open("/dev/zero", libc::O_RDWR),
                FdProblem::WrongFile(FileKind::CharDevice { major: 1, minor: 5 }),
            ),
            (
                open(&std::env::temp_dir().to_string_lossy(), libc::O_RDONLY),
                FdProblem::WrongFile(FileKind::Directory),
            ),
            (dev_null(), FdProblem::SameAsPrivcmd),
        ];
        let _g = DEV_ZERO_MAPS.lock().unwrap_or_else(|e| e.into_inner());
        let before = dev_zero_maps();
        for (fd, problem) in cases {
            match check_hypercall_buf(&fd, &privcmd) {
                Err(Error::BadDeviceFd {
                    device,
                    problem: p,
                    source: None,
                }) => {
                    assert_eq!(device, HYPERCALL_BUF_PATH);
                    assert_eq!(p, problem);
                }
                other => panic!("{problem:?}: {other:?}"),
            }
        }
        assert_eq!(
            dev_zero_maps(),
            before,
            "a refused descriptor left a mapping"
        );
        match check_hypercall_buf(&closed(), &privcmd) {
            Err(Error::BadDeviceFd {
                problem: FdProblem::NotOpen,
                source: Some(e),
                ..
            }) => assert_eq!(e.raw_os_error(), Some(libc::EBADF)),
            other => panic!("closed fd: {other:?}"),
        }
    }

    #[test]
    fn only_a_misc_character_device_passes_fstat() {
        let misc = |path: &str| {
            let m = fs::metadata(path).ok()?;
            (nix::sys::stat::major(std::os::unix::fs::MetadataExt::rdev(&m)) == MISC_MAJOR)
                .then_some(m)
        };
        // Any misc device will do to check that one passes; most machines have one of these.
        let Some(meta) = ["/dev/fuse", "/dev/kvm", "/dev/loop-control", "/dev/net/tun"]
            .into_iter()
            .find_map(misc)
        else {
            eprintln!("skipped: no misc device found under /dev");
            return;
        };
        assert_eq!(hypercall_buf_kind_problem(&meta, None), None);
        assert_eq!(
            hypercall_buf_kind_problem(&meta, Some(&meta)),
            Some(FdProblem::SameAsPrivcmd)
        );
    }

    #[test]
    fn probe_map_names_the_problem_and_leaves_no_mapping() {
        let _g = DEV_ZERO_MAPS.lock().unwrap_or_else(|e| e.into_inner());
        let before = dev_zero_maps();
        let cases: [(&str, ManuallyDrop<File>, FdProblem, i32); 4] = [
            (
                "/dev/null",
                ManuallyDrop::new(dev_null()),
                FdProblem::WrongFile(FileKind::CharDevice { major: 1, minor: 3 }),
                libc::ENODEV,
            ),
            (
                "an O_PATH fd",
                ManuallyDrop::new(o_path("/dev/zero")),
                FdProblem::NotOpen,
                libc::EBADF,
            ),
            (
                "/dev/zero read-only",
                ManuallyDrop::new(open("/dev/zero", libc::O_RDONLY)),
                FdProblem::NotReadWrite,
                libc::EACCES,
            ),
            ("a closed fd", closed(), FdProblem::NotOpen, libc::EBADF),
        ];
        for (what, fd, problem, errno) in cases {
            let (p, e) = probe_map(&fd).expect_err(what);
            assert_eq!(p, problem, "{what}");
            assert_eq!(e.raw_os_error(), Some(errno), "{what}");
        }
        // A descriptor that maps: the page is unmapped again.
        probe_map(&open("/dev/zero", libc::O_RDWR)).unwrap();
        assert_eq!(dev_zero_maps(), before, "probe_map leaked its page");
    }

    #[test]
    fn from_fds_checks_privcmd_first_and_closes_both_on_error() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let (r2, w2) = nix::unistd::pipe().unwrap();
        let err = Privcmd::from_fds(w, Some(w2)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::BadDeviceFd {
                    device: PRIVCMD_PATH,
                    problem: FdProblem::WrongFile(FileKind::Pipe),
                    ..
                }
            ),
            "{err:?}"
        );
        // Both write ends were closed: the read ends see end of file at once.
        for r in [r, r2] {
            let mut buf = [0u8; 1];
            assert_eq!(io::Read::read(&mut File::from(r), &mut buf).unwrap(), 0);
        }
    }

    #[test]
    fn open_rw_sets_close_on_exec_as_asked() {
        for cloexec in [true, false] {
            let f = open_rw("/dev/null", cloexec).unwrap();
            // SAFETY: F_GETFD on a descriptor we own reads its flags and changes nothing.
            let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFD) };
            assert!(flags >= 0);
            assert_eq!(flags & libc::FD_CLOEXEC != 0, cloexec);
            // SAFETY: as above.
            let fl = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
            assert_eq!(fl & libc::O_ACCMODE, libc::O_RDWR);
        }
    }

    #[test]
    fn open_without_xen_names_the_device() {
        if Privcmd::available() {
            return; // On Xen the devices open; tests/vm_*.rs cover that.
        }
        for options in [
            OpenOptions::new(),
            OpenOptions::new().cloexec(false).clone(),
            OpenOptions::new().anonymous_buffers(true).clone(),
        ] {
            match Privcmd::open_with(&options) {
                Err(Error::Open { path, source }) => {
                    assert_eq!(path, PRIVCMD_PATH);
                    assert_eq!(source.kind(), io::ErrorKind::NotFound);
                }
                other => panic!("{options:?}: {other:?}"),
            }
        }
    }
}
