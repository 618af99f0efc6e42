//! Debian's C libxenstore 4.17 (`libxenstore.a` from libxen-dev), linked statically by
//! `build.rs` when present (`cfg(has_libxenstore)`).
//!
//! Only what the xenstore benches call is declared, by hand from `/usr/include/xenstore.h`.
//! [`CXenstore`] owns a handle; results the library mallocs are copied out and freed at once, so
//! a bench loop pays what a C caller pays (the malloc and the free) and cannot leak.

use std::ffi::{c_uint, c_void, CStr};
use std::ptr::NonNull;

mod ffi {
    use std::ffi::{c_char, c_uint, c_ulong, c_void};

    /// `struct xs_handle` (opaque).
    #[repr(C)]
    pub(super) struct XsHandle {
        _opaque: [u8; 0],
    }

    extern "C" {
        pub(super) fn xs_open(flags: c_ulong) -> *mut XsHandle;
        pub(super) fn xs_close(xsh: *mut XsHandle);
        pub(super) fn xs_read(
            h: *mut XsHandle,
            t: u32,
            path: *const c_char,
            len: *mut c_uint,
        ) -> *mut c_void;
        pub(super) fn xs_write(
            h: *mut XsHandle,
            t: u32,
            path: *const c_char,
            data: *const c_void,
            len: c_uint,
        ) -> bool;
        pub(super) fn xs_directory(
            h: *mut XsHandle,
            t: u32,
            path: *const c_char,
            num: *mut c_uint,
        ) -> *mut *mut c_char;
        pub(super) fn xs_transaction_start(h: *mut XsHandle) -> u32;
        pub(super) fn xs_transaction_end(h: *mut XsHandle, t: u32, abort: bool) -> bool;
    }
}

/// An open libxenstore handle.
#[derive(Debug)]
pub struct CXenstore {
    h: NonNull<ffi::XsHandle>,
}

// SAFETY: a handle is plain data plus an fd; moving it to another thread is fine. It is not
// Sync: Debian builds libxenstore without USE_PTHREAD (no pthread symbols in libxenstore.a), so
// one handle must not be used by two threads at once, which `&mut self` methods enforce.
unsafe impl Send for CXenstore {}

impl CXenstore {
    /// `xs_open(0)`: connects to `$XENSTORED_PATH`, which the caller sets (before starting
    /// threads) to our server's socket.
    ///
    /// # Errors
    ///
    /// The errno `xs_open` left.
    pub fn open() -> std::io::Result<Self> {
        // SAFETY: xs_open takes flags by value and returns a new handle or NULL.
        let h = unsafe { ffi::xs_open(0) };
        NonNull::new(h)
            .map(|h| Self { h })
            .ok_or_else(std::io::Error::last_os_error)
    }

    /// `xs_read` outside a transaction (`t` = 0) or in one.
    pub fn read(&mut self, t: u32, path: &CStr) -> Option<Vec<u8>> {
        let mut len: c_uint = 0;
        // SAFETY: the handle is live and ours; path is nul-terminated; len is a valid out slot.
        let p = unsafe { ffi::xs_read(self.h.as_ptr(), t, path.as_ptr(), &mut len) };
        if p.is_null() {
            return None;
        }
        // SAFETY: on success xs_read returns a malloc'ed buffer of len bytes (plus a nul).
        let v = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len as usize) }.to_vec();
        // SAFETY: p came from libxenstore's malloc and is freed once.
        unsafe { nix::libc::free(p) };
        Some(v)
    }

    /// `xs_write`.
    pub fn write(&mut self, t: u32, path: &CStr, data: &[u8]) -> bool {
        let Ok(len) = c_uint::try_from(data.len()) else {
            return false;
        };
        // SAFETY: live handle; path nul-terminated; data valid for len bytes.
        unsafe {
            ffi::xs_write(
                self.h.as_ptr(),
                t,
                path.as_ptr(),
                data.as_ptr().cast::<c_void>(),
                len,
            )
        }
    }

    /// `xs_directory`: the number of children, or None on error.
    pub fn directory(&mut self, t: u32, path: &CStr) -> Option<usize> {
        let mut num: c_uint = 0;
        // SAFETY: live handle; path nul-terminated; num is a valid out slot.
        let p = unsafe { ffi::xs_directory(self.h.as_ptr(), t, path.as_ptr(), &mut num) };
        if p.is_null() {
            return None;
        }
        // Touch every name, as a caller would, so the comparison with our Vec<String> is fair.
        let mut total = 0usize;
        for i in 0..num as usize {
            // SAFETY: xs_directory returns num valid nul-terminated string pointers in one
            // malloc'ed block.
            total += unsafe { CStr::from_ptr(*p.add(i)) }.to_bytes().len();
        }
        std::hint::black_box(total);
        // SAFETY: the array and strings are one malloc'ed block, freed once.
        unsafe { nix::libc::free(p.cast::<c_void>()) };
        Some(num as usize)
    }

    /// `xs_transaction_start`: 0 on failure.
    pub fn transaction_start(&mut self) -> u32 {
        // SAFETY: live handle.
        unsafe { ffi::xs_transaction_start(self.h.as_ptr()) }
    }

    /// `xs_transaction_end` (commit unless `abort`).
    pub fn transaction_end(&mut self, t: u32, abort: bool) -> bool {
        // SAFETY: live handle; t is a transaction id (the daemon checks it).
        unsafe { ffi::xs_transaction_end(self.h.as_ptr(), t, abort) }
    }
}

impl Drop for CXenstore {
    fn drop(&mut self) {
        // SAFETY: the handle is live and closed exactly once.
        unsafe { ffi::xs_close(self.h.as_ptr()) }
    }
}
