//! Buffers in hypercall-safe memory, the guest handles made from them, and bounce buffers.
//!
//! The rules the types enforce:
//!
//! - a [`HypercallBuffer`] exists only in pool memory and cannot outlive its pool;
//! - a [`GuestHandle`] can be made only from a `HypercallBuffer` (or a [`Bounce`], which owns
//!   one), and borrows it mutably for as long as the handle, or any struct field holding it,
//!   lives: the buffer can be neither freed nor read while Xen may still write it.
//!
//! Stack values, `Box`, `Vec` or a freed buffer do not compile into a guest handle:
//!
//! ```compile_fail,E0277
//! # use xenctrl::GuestHandle;
//! let mut on_stack = [0u64; 4];
//! let h: GuestHandle<'_, [u64; 4]> = GuestHandle::from(&mut on_stack);
//! ```
//!
//! ```compile_fail,E0277
//! # use xenctrl::GuestHandle;
//! let mut boxed = Box::new([0u64; 4]);
//! let h: GuestHandle<'_, [u64; 4]> = GuestHandle::from(&mut *boxed);
//! ```
//!
//! ```compile_fail,E0277
//! # use xenctrl::GuestHandle;
//! let mut v = vec![0u64; 4];
//! let h: GuestHandle<'_, [u64]> = GuestHandle::from(&mut v[..]);
//! ```
//!
//! A buffer cannot be used after its pool is gone:
//!
//! ```compile_fail,E0597
//! # use xenctrl::BufferPool;
//! let buf = {
//!     let pool = BufferPool::anonymous();
//!     pool.alloc::<u64>().unwrap()
//! };
//! println!("{}", *buf);
//! ```
//!
//! A buffer cannot be freed while a handle to it is alive, even a handle stored in an ABI
//! struct field:
//!
//! ```compile_fail,E0505
//! # use xenctrl::{BufferPool, abi::{XenGuestHandle}};
//! let pool = BufferPool::anonymous();
//! let mut extents = pool.alloc_slice::<u64>(16).unwrap();
//! let field: XenGuestHandle<'_, u64> = extents.guest_handle().into();
//! drop(extents);
//! println!("{:?}", field);
//! ```
//!
//! Nor read while Xen may write it:
//!
//! ```compile_fail,E0502
//! # use xenctrl::BufferPool;
//! let pool = BufferPool::anonymous();
//! let mut extents = pool.alloc_slice::<u64>(16).unwrap();
//! let handle = extents.guest_handle();
//! let first = extents[0];
//! drop(handle);
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::abi::XenGuestHandle;
use crate::error::Result;
use crate::pool::{Block, BufferPool};

/// A `T` living in hypercall-safe memory of a [`BufferPool`]. Freed when dropped (no
/// destructor of `T` runs: buffers hold plain data).
pub struct HypercallBuffer<'pool, T: ?Sized> {
    pool: &'pool BufferPool,
    block: Block,
    ptr: NonNull<T>,
}

// SAFETY: the buffer owns its memory exclusively, like a `Box<T>`.
unsafe impl<T: ?Sized + Send> Send for HypercallBuffer<'_, T> {}
// SAFETY: shared access only reads, like `&T`.
unsafe impl<T: ?Sized + Sync> Sync for HypercallBuffer<'_, T> {}

impl<'pool, T: ?Sized> HypercallBuffer<'pool, T> {
    /// # Safety
    ///
    /// `ptr` points at a valid, aligned `T` inside `block`, which `pool` just handed out and
    /// nobody else owns.
    pub(crate) unsafe fn from_raw(pool: &'pool BufferPool, block: Block, ptr: NonNull<T>) -> Self {
        HypercallBuffer { pool, block, ptr }
    }

    /// A guest handle to this buffer, for a guest-handle field of an ABI struct. The buffer
    /// stays mutably borrowed while the handle (or the field it goes into) lives.
    pub fn guest_handle(&mut self) -> GuestHandle<'_, T> {
        GuestHandle {
            addr: self.addr(),
            bytes: std::mem::size_of_val::<T>(self),
            pool: self.pool,
            _borrow: PhantomData,
        }
    }

    /// The address Xen sees.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr().cast::<u8>() as usize as u64
    }

    /// The pool this buffer came from.
    pub fn pool(&self) -> &'pool BufferPool {
        self.pool
    }

    /// Whether this buffer came from `pool`.
    pub fn belongs_to(&self, pool: &BufferPool) -> bool {
        std::ptr::eq(self.pool, pool)
    }
}

impl<T: ?Sized> Deref for HypercallBuffer<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the pointer is valid and exclusively ours for the buffer's life; Xen writes
        // it only during a hypercall, which holds `&mut self`.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ?Sized> DerefMut for HypercallBuffer<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`, and `&mut self` makes the access unique.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: ?Sized> Drop for HypercallBuffer<'_, T> {
    fn drop(&mut self) {
        self.pool.free(self.block);
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for HypercallBuffer<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HypercallBuffer")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .field("value", &&**self)
            .finish()
    }
}

impl<'pool> HypercallBuffer<'pool, [MaybeUninit<u8>]> {
    /// Copy `data` into the front of this uninitialised buffer.
    ///
    /// # Panics
    ///
    /// If `data` is longer than the buffer.
    pub fn write_from(&mut self, data: &[u8]) -> &mut [u8] {
        let dst = &mut self[..data.len()];
        for (d, s) in dst.iter_mut().zip(data) {
            d.write(*s);
        }
        // SAFETY: every byte of `dst` was just initialised.
        unsafe { &mut *(std::ptr::from_mut::<[MaybeUninit<u8>]>(dst) as *mut [u8]) }
    }
}

/// A typed handle to a pool buffer, borrowed from it: the only way to fill a guest-handle
/// field of an ABI struct. It carries no ownership; the buffer stays mutably borrowed for `'b`.
///
/// A handle to a slice carries its length, and the ABI structs that hold a handle take their
/// count from it: Xen is never told a buffer is longer than it is.
pub struct GuestHandle<'b, T: ?Sized> {
    addr: u64,
    bytes: usize,
    pool: &'b BufferPool,
    _borrow: PhantomData<&'b mut T>,
}

impl<'b, T: ?Sized> GuestHandle<'b, T> {
    /// The address Xen will follow.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The size of the buffer, in bytes.
    pub fn byte_len(&self) -> usize {
        self.bytes
    }

    /// The pool the buffer belongs to.
    pub fn pool(&self) -> &'b BufferPool {
        self.pool
    }
}

impl<T> GuestHandle<'_, [T]> {
    /// The number of elements of the slice (0 for zero-sized elements, which Xen cannot
    /// address).
    pub fn len(&self) -> usize {
        self.bytes.checked_div(size_of::<T>()).unwrap_or(0)
    }

    /// Whether the slice is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: ?Sized> fmt::Debug for GuestHandle<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuestHandle({:#x}, {} bytes)", self.addr, self.bytes)
    }
}

impl<'b, T> From<GuestHandle<'b, [T]>> for XenGuestHandle<'b, T> {
    fn from(h: GuestHandle<'b, [T]>) -> Self {
        XenGuestHandle::from_pool_addr(h.addr)
    }
}

impl<'b, T> From<GuestHandle<'b, T>> for XenGuestHandle<'b, T> {
    fn from(h: GuestHandle<'b, T>) -> Self {
        XenGuestHandle::from_pool_addr(h.addr)
    }
}

mod sealed {
    pub trait Sealed {}
}

/// The direction data moves through a [`Bounce`] buffer.
pub trait Direction: sealed::Sealed {
    /// Caller data is copied into the bounce buffer when it is made.
    const COPY_IN: bool;
    /// The bounce buffer is copied back to the caller by [`Bounce::finish`].
    const COPY_OUT: bool;
}

/// Xen only reads the data.
#[derive(Debug)]
pub enum In {}
/// Xen only writes the data.
#[derive(Debug)]
pub enum Out {}
/// Xen reads and writes the data.
#[derive(Debug)]
pub enum InOut {}

impl sealed::Sealed for In {}
impl sealed::Sealed for Out {}
impl sealed::Sealed for InOut {}
impl Direction for In {
    const COPY_IN: bool = true;
    const COPY_OUT: bool = false;
}
impl Direction for Out {
    const COPY_IN: bool = false;
    const COPY_OUT: bool = true;
}
impl Direction for InOut {
    const COPY_IN: bool = true;
    const COPY_OUT: bool = true;
}

/// Caller memory bounced through a pool buffer, so Xen never sees the caller's own memory.
///
/// The direction is a type: [`BufferPool::bounce_in`] copies in; [`BufferPool::bounce_out`]
/// starts zeroed and [`Bounce::finish`] copies back; [`BufferPool::bounce_in_out`] does both.
///
/// ```
/// use xenctrl::BufferPool;
///
/// let pool = BufferPool::anonymous();
/// let mut results = [0u32; 3];
/// let mut bounce = pool.bounce_out(&mut results)?;
/// // ... a hypercall writes through `bounce.guest_handle()` ...
/// bounce.buffer_mut()[2] = 9; // stand-in for what Xen would write
/// bounce.finish();
/// assert_eq!(results, [0, 0, 9]);
/// # Ok::<(), xenctrl::Error>(())
/// ```
pub struct Bounce<'pool, 'user, T, D: Direction> {
    buf: HypercallBuffer<'pool, [T]>,
    user: UserData<'user, T>,
    _dir: PhantomData<D>,
}

enum UserData<'u, T> {
    Shared(#[allow(dead_code)] &'u [T]),
    Unique(&'u mut [T]),
}

impl BufferPool {
    /// Bounce `data` for Xen to read.
    ///
    /// # Errors
    ///
    /// As for [`BufferPool::alloc_slice`].
    pub fn bounce_in<'u, T>(&self, data: &'u [T]) -> Result<Bounce<'_, 'u, T, In>>
    where
        T: FromBytes + IntoBytes + Immutable + Copy,
    {
        let mut buf = self.alloc_slice::<T>(data.len())?;
        buf.copy_from_slice(data);
        Ok(Bounce {
            buf,
            user: UserData::Shared(data),
            _dir: PhantomData,
        })
    }

    /// Bounce `data` for Xen to write; [`Bounce::finish`] copies the result back.
    ///
    /// # Errors
    ///
    /// As for [`BufferPool::alloc_slice`].
    pub fn bounce_out<'u, T>(&self, data: &'u mut [T]) -> Result<Bounce<'_, 'u, T, Out>>
    where
        T: FromBytes + IntoBytes + Immutable + Copy,
    {
        let buf = self.alloc_slice::<T>(data.len())?;
        Ok(Bounce {
            buf,
            user: UserData::Unique(data),
            _dir: PhantomData,
        })
    }

    /// Bounce `data` for Xen to read and write; [`Bounce::finish`] copies the result back.
    ///
    /// # Errors
    ///
    /// As for [`BufferPool::alloc_slice`].
    pub fn bounce_in_out<'u, T>(&self, data: &'u mut [T]) -> Result<Bounce<'_, 'u, T, InOut>>
    where
        T: FromBytes + IntoBytes + Immutable + Copy,
    {
        let mut buf = self.alloc_slice::<T>(data.len())?;
        buf.copy_from_slice(data);
        Ok(Bounce {
            buf,
            user: UserData::Unique(data),
            _dir: PhantomData,
        })
    }
}

impl<'pool, T, D: Direction> Bounce<'pool, '_, T, D> {
    /// A guest handle to the bounce buffer.
    pub fn guest_handle(&mut self) -> GuestHandle<'_, [T]> {
        self.buf.guest_handle()
    }

    /// The bounce buffer itself.
    pub fn buffer(&self) -> &HypercallBuffer<'pool, [T]> {
        &self.buf
    }

    /// The bounce buffer itself, mutably.
    pub fn buffer_mut(&mut self) -> &mut HypercallBuffer<'pool, [T]> {
        &mut self.buf
    }
}

impl<T: Copy, D: Direction> Bounce<'_, '_, T, D> {
    /// Copy the bounce buffer back to the caller's memory (for [`Out`] and [`InOut`]) and free
    /// it. Call it after the hypercall succeeded; dropping a bounce without `finish` leaves the
    /// caller's memory as it was.
    pub fn finish(self) {
        if D::COPY_OUT {
            if let UserData::Unique(user) = self.user {
                user.copy_from_slice(&self.buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounce_directions() {
        let pool = BufferPool::anonymous();
        let src = [1u32, 2, 3];
        let b = pool.bounce_in(&src).unwrap();
        assert_eq!(&**b.buffer(), &src);
        b.finish();

        let mut out = [7u16; 4];
        let mut b = pool.bounce_out(&mut out).unwrap();
        assert_eq!(
            &**b.buffer(),
            &[0; 4],
            "out buffers start zeroed, not with caller data"
        );
        b.buffer_mut()[1] = 5;
        b.finish();
        assert_eq!(out, [0, 5, 0, 0]);

        let mut io = [1u8, 2];
        let mut b = pool.bounce_in_out(&mut io).unwrap();
        assert_eq!(&**b.buffer(), &[1, 2]);
        b.buffer_mut()[0] = 9;
        drop(b);
        assert_eq!(io, [1, 2], "no copy back without finish");
        let mut b = pool.bounce_in_out(&mut io).unwrap();
        b.buffer_mut()[0] = 9;
        b.finish();
        assert_eq!(io, [9, 2]);
    }

    #[test]
    fn handles_point_at_their_buffer() {
        let pool = BufferPool::anonymous();
        let mut buf = pool.alloc_slice::<u64>(8).unwrap();
        let addr = buf.addr();
        assert_eq!(addr, buf.as_ptr() as u64);
        let field: XenGuestHandle<'_, u64> = buf.guest_handle().into();
        assert_eq!(field.addr(), addr);
        assert!(!field.is_null());
    }

    #[test]
    fn uninit_write_from() {
        let pool = BufferPool::anonymous();
        let mut buf = pool.alloc_uninit(16).unwrap();
        let init = buf.write_from(b"hello");
        assert_eq!(init, b"hello");
    }
}
