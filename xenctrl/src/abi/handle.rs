//! Guest-handle fields, as they sit inside ABI structs.
//!
//! `XEN_GUEST_HANDLE_64(T)` is a 64-bit address in the caller's address space that Xen reads or
//! writes. A [`XenGuestHandle`] is that field. It deliberately does **not** implement
//! [`zerocopy::FromBytes`]: safe code outside this crate can make one only as
//! [`XenGuestHandle::null`], or from a pool buffer through
//! [`GuestHandle`](crate::GuestHandle). Structs that contain one are therefore `FromZeros` but
//! not `FromBytes`; each has a `*View` twin (plain integers, `FromBytes`) for reading untrusted
//! bytes, which no hypercall entry point accepts.
//!
//! The lifetime `'h` is the borrow of the buffer the handle points into, so a struct holding a
//! handle cannot outlive (or be used after freeing) that buffer.

use core::fmt;
use core::marker::PhantomData;

use zerocopy::{FromZeros, Immutable, IntoBytes, KnownLayout};

/// A typed `XEN_GUEST_HANDLE_64(T)` field that points into hypercall-safe pool memory (or is
/// null).
#[derive(FromZeros, IntoBytes, KnownLayout, Immutable)]
#[repr(transparent)]
pub struct XenGuestHandle<'h, T> {
    addr: u64,
    _target: PhantomData<&'h mut [T]>,
}

impl<'h, T> XenGuestHandle<'h, T> {
    /// The null handle. Xen answers `EFAULT` if it has to follow it.
    pub const fn null() -> Self {
        Self {
            addr: 0,
            _target: PhantomData,
        }
    }

    /// Only [`GuestHandle`](crate::GuestHandle) calls this, with the address of a live pool
    /// buffer whose borrow is `'h`.
    pub(crate) const fn from_pool_addr(addr: u64) -> Self {
        Self {
            addr,
            _target: PhantomData,
        }
    }

    /// The address this handle carries (0 when null).
    pub const fn addr(&self) -> u64 {
        self.addr
    }

    /// Whether the handle is null.
    pub const fn is_null(&self) -> bool {
        self.addr == 0
    }
}

impl<T> Default for XenGuestHandle<'_, T> {
    fn default() -> Self {
        Self::null()
    }
}

impl<T> fmt::Debug for XenGuestHandle<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "XenGuestHandle({:#x})", self.addr)
    }
}

static_assertions::assert_eq_size!(XenGuestHandle<'static, u64>, u64);
