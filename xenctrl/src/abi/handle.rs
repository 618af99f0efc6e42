//! Guest-handle fields, as they sit inside ABI structs, and what a pool buffer may hold.
//!
//! `XEN_GUEST_HANDLE_64(T)` is a 64-bit address in the caller's address space that Xen reads or
//! writes. A [`XenGuestHandle`] is that field. Safe code outside this crate can make one only as
//! [`XenGuestHandle::null`], or from a pool buffer through [`GuestHandle`](crate::GuestHandle).
//!
//! # Which zerocopy traits, and why
//!
//! | type | zerocopy traits | why |
//! |---|---|---|
//! | [`XenGuestHandle`] | `IntoBytes`, `KnownLayout`, `Immutable` | reading its bytes is harmless; no trait that builds a value (`FromZeros`, `TryFromBytes`, `FromBytes`) |
//! | structs holding a handle, the envelopes | `KnownLayout`, `Immutable` | the same: no way in from bytes |
//! | every other ABI struct, the `*View`s | `FromBytes`, `IntoBytes`, `KnownLayout`, `Immutable` | plain integers: every bit pattern is a valid value |
//!
//! zerocopy 0.8's `FromZeros` implies `TryFromBytes`, whose derived validity check accepts any
//! `u64` address: `try_read_from_bytes`, `try_ref_from_bytes`, `try_mut_from_bytes` and the
//! `try_transmute!` family would all build a handle with any address from bytes. So no type that
//! holds a handle derives `FromZeros` (or anything that implies it). The pool still allocates
//! them zeroed, through this crate's sealed [`PoolData`] trait.
//!
//! Each handle-bearing struct has a `*View` twin (plain integers, `FromBytes`) for reading
//! untrusted bytes; no hypercall entry point accepts a view.
//!
//! The lifetime `'h` is the borrow of the buffer the handle points into, so a struct holding a
//! handle cannot outlive (or be used after freeing) that buffer.
//!
//! Neither bytes nor a `try_` conversion makes a handle:
//!
//! ```compile_fail,E0277
//! use zerocopy::TryFromBytes;
//! let _ = xenctrl::abi::XenGuestHandle::<'static, u64>::try_read_from_bytes(&[0xffu8; 8]);
//! ```
//!
//! ```compile_fail,E0277
//! use zerocopy::TryFromBytes;
//! let mut bytes = [0xffu8; 8];
//! let _ = xenctrl::abi::XenGuestHandle::<'static, u64>::try_mut_from_bytes(&mut bytes[..]);
//! ```
//!
//! ```compile_fail,E0277
//! let addr = 0xdead_beefu64;
//! let _: Result<xenctrl::abi::XenGuestHandle<'static, u64>, _> = zerocopy::try_transmute!(addr);
//! ```

use core::fmt;
use core::marker::PhantomData;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A typed `XEN_GUEST_HANDLE_64(T)` field that points into hypercall-safe pool memory (or is
/// null).
#[derive(IntoBytes, KnownLayout, Immutable)]
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

pub(crate) mod sealed {
    /// Restricts [`PoolData`](super::PoolData) to plain data and this crate's ABI structs.
    pub trait Sealed {}
}

/// What a pool buffer may hold: memory Xen may write, so every value must stay valid whatever it
/// writes, and it must hold no reference or pointer Rust would follow.
///
/// - **Plain data**: any `T: FromBytes + Immutable` (zerocopy: every bit pattern is a valid
///   value, which rules out references, `Box`, `NonNull`, `bool`, `char`, enums, ...). Your own
///   `#[derive(FromBytes, Immutable)]` structs qualify.
/// - **This crate's handle-bearing ABI structs and envelopes**, which are not `FromBytes` on
///   purpose (bytes must not become a handle; see the [module docs](self)). Every bit pattern is
///   a valid value of them too (they are integers and `PhantomData`), so Xen's writes cannot
///   make one invalid; only the crate chooses which address a handle holds. All-zero bytes are
///   the null handle with a count of 0, so the pool hands them out zeroed.
///
/// The trait is sealed: only this crate adds types beyond the blanket `FromBytes` impl.
///
/// A type that holds a reference cannot be allocated, even one that is valid when zeroed:
///
/// ```compile_fail,E0277
/// let pool = xenctrl::BufferPool::anonymous();
/// let _ = pool.alloc::<Option<&'static u64>>();
/// ```
///
/// and no type can be added from outside:
///
/// ```compile_fail,E0603
/// struct Evil(u64);
/// impl xenctrl::abi::handle::sealed::Sealed for Evil {}
/// ```
pub trait PoolData: sealed::Sealed {}

impl<T: FromBytes + Immutable> sealed::Sealed for T {}
impl<T: FromBytes + Immutable> PoolData for T {}

/// Declares a handle-bearing ABI struct (or envelope) [`PoolData`]: every bit pattern of it is a
/// valid value, and zero is its null handle with a count of 0.
macro_rules! pool_data {
    ($ty:ident $(<$lt:lifetime>)? $(where $p:ident : $bound:path)?) => {
        impl<$($lt,)? $($p: $bound)?> $crate::abi::handle::sealed::Sealed
            for $ty<$($lt)? $($p)?> {}
        impl<$($lt,)? $($p: $bound)?> $crate::abi::handle::PoolData for $ty<$($lt)? $($p)?> {}
    };
}
pub(crate) use pool_data;

/// The memory a handle-bearing struct's guest handles let Xen reach. Implemented by hand, next
/// to each such struct, from the count Xen trusts; the entry points check every range against
/// the calling handle's pool.
pub(crate) trait GuestRanges {
    /// Calls `f(address, bytes)` for each non-null guest handle.
    fn guest_ranges(&self, f: &mut dyn FnMut(u64, u64));
}

impl<T> XenGuestHandle<'_, T> {
    /// `f(address, count * size_of::<T>())`, unless the handle is null.
    pub(crate) fn report_range(&self, count: u64, f: &mut dyn FnMut(u64, u64)) {
        if !self.is_null() {
            f(
                self.addr,
                count.saturating_mul(core::mem::size_of::<T>() as u64),
            );
        }
    }
}
