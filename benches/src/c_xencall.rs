//! Debian's C libxencall 4.17 (`libxencall.a` from libxen-dev), linked statically by `build.rs`.
//!
//! Only what the buffer benchmarks call is declared, by hand from `/usr/include/xencall.h`.
//! [`CXencall`] owns a handle; its allocations come back as guards that free on drop, so a bench
//! loop reads like its Rust twin and cannot leak or double-free.

use std::ffi::{c_int, c_uint, c_void};
use std::io;
use std::ptr::NonNull;

use crate::privcmd_placeholder::PrivcmdPlaceholder;

mod ffi {
    use std::ffi::{c_int, c_uint, c_void};

    /// `xencall_handle` (opaque).
    #[repr(C)]
    pub(super) struct XencallHandle {
        _opaque: [u8; 0],
    }

    extern "C" {
        /// `xencall_handle *xencall_open(xentoollog_logger *logger, unsigned open_flags)`;
        /// a NULL logger makes it log to stderr.
        pub(super) fn xencall_open(logger: *mut c_void, open_flags: c_uint) -> *mut XencallHandle;
        pub(super) fn xencall_close(xcall: *mut XencallHandle) -> c_int;
        pub(super) fn xencall_alloc_buffer_pages(
            xcall: *mut XencallHandle,
            nr_pages: usize,
        ) -> *mut c_void;
        pub(super) fn xencall_free_buffer_pages(
            xcall: *mut XencallHandle,
            p: *mut c_void,
            nr_pages: usize,
        );
        pub(super) fn xencall_alloc_buffer(xcall: *mut XencallHandle, size: usize) -> *mut c_void;
        pub(super) fn xencall_free_buffer(xcall: *mut XencallHandle, p: *mut c_void);
        pub(super) fn xencall_buffers_never_fault(xcall: *mut XencallHandle) -> c_int;
    }
}

/// An open libxencall handle (opened reentrant: flags 0, so its buffer cache is mutex-guarded
/// and the handle may be shared by threads, as libxc does).
#[derive(Debug)]
pub struct CXencall {
    handle: NonNull<ffi::XencallHandle>,
}

// SAFETY: libxencall handles opened without XENCALL_OPENFLAG_NON_REENTRANT are meant to be used
// from any thread: the buffer cache is guarded by libxencall's `cache_mutex`, and everything
// else the buffer calls do is mmap/madvise/munmap on memory they own.
unsafe impl Send for CXencall {}
// SAFETY: as above; concurrent calls on one reentrant handle are what libxencall supports.
unsafe impl Sync for CXencall {}

impl CXencall {
    /// `xencall_open(NULL, 0)`. Taking the placeholder proves the namespace is set up before
    /// the first C call.
    ///
    /// # Errors
    ///
    /// The errno `xencall_open` left (it also logs to stderr).
    pub fn open(_placeholder: &PrivcmdPlaceholder) -> io::Result<CXencall> {
        const REENTRANT: c_uint = 0;
        // SAFETY: a NULL logger is documented (libxencall then makes a stderr logger); the
        // returned handle is checked for NULL and owned by the `CXencall` from here on.
        let raw = unsafe { ffi::xencall_open(std::ptr::null_mut(), REENTRANT) };
        NonNull::new(raw)
            .map(|handle| CXencall { handle })
            .ok_or_else(io::Error::last_os_error)
    }

    /// Whether buffers come from `/dev/xen/hypercall` (`xencall_buffers_never_fault`). In the
    /// placeholder namespace this is false: libxencall takes its mmap + `MAP_LOCKED` path.
    pub fn uses_hypercall_device(&self) -> bool {
        // SAFETY: a valid open handle; the call only reads `buf_fd`.
        let rc: c_int = unsafe { ffi::xencall_buffers_never_fault(self.handle.as_ptr()) };
        rc != 0
    }

    /// `xencall_alloc_buffer_pages(nr_pages)`: zeroed, page aligned.
    ///
    /// # Errors
    ///
    /// The errno libxencall left when it returned NULL.
    #[inline]
    pub fn alloc_pages(&self, nr_pages: usize) -> io::Result<CPages<'_>> {
        // SAFETY: a valid open handle; libxencall allocates and zeroes `nr_pages` pages.
        let p = unsafe { ffi::xencall_alloc_buffer_pages(self.handle.as_ptr(), nr_pages) };
        NonNull::new(p.cast::<u8>())
            .map(|ptr| CPages {
                owner: self,
                ptr,
                nr_pages,
            })
            .ok_or_else(io::Error::last_os_error)
    }

    /// `xencall_alloc_buffer(size)`: zeroed, `size` bytes after libxencall's 16-byte header
    /// (so it always takes whole pages: 256 bytes cost one page).
    ///
    /// # Errors
    ///
    /// The errno libxencall left when it returned NULL.
    #[inline]
    pub fn alloc_bytes(&self, size: usize) -> io::Result<CBuffer<'_>> {
        // SAFETY: a valid open handle; libxencall allocates and zeroes the pages it needs.
        let p = unsafe { ffi::xencall_alloc_buffer(self.handle.as_ptr(), size) };
        NonNull::new(p.cast::<u8>())
            .map(|ptr| CBuffer { owner: self, ptr })
            .ok_or_else(io::Error::last_os_error)
    }
}

impl Drop for CXencall {
    fn drop(&mut self) {
        // SAFETY: the handle is valid and dropped once; every buffer borrowed `self`, so none is
        // still alive.
        unsafe { ffi::xencall_close(self.handle.as_ptr()) };
    }
}

/// Pages from [`CXencall::alloc_pages`]; freed with `xencall_free_buffer_pages` on drop.
#[derive(Debug)]
pub struct CPages<'h> {
    owner: &'h CXencall,
    ptr: NonNull<u8>,
    nr_pages: usize,
}

impl CPages<'_> {
    /// Start of the buffer.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for CPages<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: `ptr`/`nr_pages` came from `xencall_alloc_buffer_pages` on this handle, which
        // is still open (we borrow it), and are freed exactly once.
        unsafe {
            ffi::xencall_free_buffer_pages(
                self.owner.handle.as_ptr(),
                self.ptr.as_ptr().cast::<c_void>(),
                self.nr_pages,
            );
        }
    }
}

/// A buffer from [`CXencall::alloc_bytes`]; freed with `xencall_free_buffer` on drop.
#[derive(Debug)]
pub struct CBuffer<'h> {
    owner: &'h CXencall,
    ptr: NonNull<u8>,
}

impl CBuffer<'_> {
    /// Start of the buffer.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for CBuffer<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `xencall_alloc_buffer` on this handle, which is still open (we
        // borrow it), and is freed exactly once.
        unsafe {
            ffi::xencall_free_buffer(
                self.owner.handle.as_ptr(),
                self.ptr.as_ptr().cast::<c_void>(),
            );
        }
    }
}
