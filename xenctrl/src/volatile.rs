//! Memory shared with another domain, reached only through volatile access.
//!
//! A foreign mapping, a grant mapping or a page we granted away is memory that another domain
//! writes while we hold it. Rust's references promise the opposite: a `&[u8]` promises that
//! nothing changes the bytes while it lives, a `&mut [u8]` that nobody else even reads them. The
//! compiler optimises on those promises (it may read a byte twice and see two values, or fold
//! two reads into one), so handing such memory out as a slice would be undefined behaviour the
//! moment the other side writes. This module never does.
//!
//! Instead, as rust-vmm's `vm-memory` does with its `VolatileSlice`, every access is a volatile
//! copy: [`VolatileSlice::read_into`] and [`VolatileSlice::write_from`] copy between shared
//! memory and ordinary Rust memory, [`VolatileSlice::read`] and [`VolatileSlice::write`] move
//! one plain-data value (zerocopy's `FromBytes`/`IntoBytes`). A value of 1, 2, 4 or 8 bytes at an
//! aligned offset is moved with a single access of that width, so a ring index or a grant flag
//! word is never torn. Order accesses against the other domain with
//! [`std::sync::atomic::fence`], as a ring protocol requires.
//!
//! A [`VolatileSlice`] borrows the mapping it came from (its lifetime), so it cannot outlive the
//! memory, and it carries whether the memory is writable ([`ReadOnly`] or [`ReadWrite`]), so
//! writing a read-only grant does not compile:
//!
//! ```compile_fail,E0599
//! use xenctrl::volatile::{ReadOnly, VolatileSlice};
//! fn poke(s: VolatileSlice<'_, ReadOnly>) {
//!     s.write_from(0, &[1]).unwrap(); // no such method on read-only memory
//! }
//! ```
//!
//! Nor can shared memory be borrowed as a plain slice: there is no `Deref`, `AsRef<[u8]>` or
//! `as_slice`.
//!
//! ```compile_fail,E0608
//! use xenctrl::volatile::{ReadWrite, VolatileSlice};
//! fn peek(s: VolatileSlice<'_, ReadWrite>) -> u8 {
//!     s[0]
//! }
//! ```
//!
//! ```compile_fail,E0599
//! use xenctrl::volatile::{ReadWrite, VolatileSlice};
//! fn borrow<'a>(s: &'a VolatileSlice<'a, ReadWrite>) -> &'a [u8] {
//!     s.as_slice()
//! }
//! ```

use std::marker::PhantomData;
use std::ptr::NonNull;

use zerocopy::{FromBytes, Immutable, IntoBytes};

/// An access range that does not lie inside a [`VolatileSlice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{len} bytes at offset {offset} do not fit in shared memory of {size} bytes")]
pub struct OutOfBounds {
    /// The offset asked for.
    pub offset: usize,
    /// The length asked for.
    pub len: usize,
    /// The size of the memory.
    pub size: usize,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ReadOnly {}
    impl Sealed for super::ReadWrite {}
}

/// Whether shared memory may be written: [`ReadOnly`] or [`ReadWrite`].
pub trait Access: sealed::Sealed + Copy + std::fmt::Debug {
    /// True for [`ReadWrite`].
    const WRITABLE: bool;
}

/// Memory mapped without write permission (a read-only grant, a read-only foreign mapping).
#[derive(Clone, Copy, Debug)]
pub enum ReadOnly {}

/// Memory mapped readable and writable.
#[derive(Clone, Copy, Debug)]
pub enum ReadWrite {}

impl Access for ReadOnly {
    const WRITABLE: bool = false;
}
impl Access for ReadWrite {
    const WRITABLE: bool = true;
}

/// A window of memory that another domain may change at any time, borrowed from the mapping
/// that owns it. See the [module docs](self) for why it is never a Rust slice.
///
/// It is `Copy` (like a shared reference) and neither `Send` nor `Sync`: hand the owning mapping
/// to another thread instead.
#[derive(Clone, Copy)]
pub struct VolatileSlice<'a, A: Access = ReadWrite> {
    ptr: NonNull<u8>,
    len: usize,
    _borrow: PhantomData<&'a A>,
    /// Keeps the type `!Send` and `!Sync`.
    _not_send: PhantomData<*mut u8>,
}

impl<A: Access> std::fmt::Debug for VolatileSlice<'_, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolatileSlice")
            .field("addr", &self.ptr)
            .field("len", &self.len)
            .field("writable", &A::WRITABLE)
            .finish()
    }
}

impl<'a, A: Access> VolatileSlice<'a, A> {
    /// A window over `len` bytes at `ptr`.
    ///
    /// # Safety
    ///
    /// For all of `'a`, `ptr..ptr + len` stays mapped and readable (and writable when `A` is
    /// [`ReadWrite`]), and no Rust reference to any of it exists: the memory is reached only
    /// through volatile accesses (this type's, or the other domain's).
    pub unsafe fn new(ptr: NonNull<u8>, len: usize) -> Self {
        VolatileSlice {
            ptr,
            len,
            _borrow: PhantomData,
            _not_send: PhantomData,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of the first byte (for logging, or for an `unsafe` caller that keeps the
    /// contract of [`VolatileSlice::new`]).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn check(&self, offset: usize, len: usize) -> Result<NonNull<u8>, OutOfBounds> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => {
                // SAFETY: offset <= len of the mapping, so the result stays inside it (or one
                // past its end when len == 0), and is not null.
                Ok(unsafe { self.ptr.add(offset) })
            }
            _ => Err(OutOfBounds {
                offset,
                len,
                size: self.len,
            }),
        }
    }

    /// The `len` bytes at `offset`, as a narrower window of the same memory.
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] when the range does not fit.
    pub fn subslice(&self, offset: usize, len: usize) -> Result<VolatileSlice<'a, A>, OutOfBounds> {
        let ptr = self.check(offset, len)?;
        // SAFETY: a sub-range of memory that `self`'s contract covers, for the same lifetime.
        Ok(unsafe { VolatileSlice::new(ptr, len) })
    }

    /// The same memory, without the right to write it.
    pub fn read_only(&self) -> VolatileSlice<'a, ReadOnly> {
        // SAFETY: the same range, for the same lifetime; read access is part of every `A`.
        unsafe { VolatileSlice::new(self.ptr, self.len) }
    }

    /// Copy `out.len()` bytes at `offset` into `out`.
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] when the range does not fit (nothing is copied).
    pub fn read_into(&self, offset: usize, out: &mut [u8]) -> Result<(), OutOfBounds> {
        let src = self.check(offset, out.len())?;
        // SAFETY: `src..src + out.len()` is mapped and readable (checked range, `new`'s
        // contract); `out` is ordinary memory that does not overlap shared memory (no Rust
        // reference to shared memory exists).
        unsafe { copy_volatile(src.as_ptr(), out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// The bytes at `offset..offset + len`, copied out.
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] when the range does not fit.
    pub fn to_vec(&self, offset: usize, len: usize) -> Result<Vec<u8>, OutOfBounds> {
        self.check(offset, len)?;
        let mut v = vec![0; len];
        self.read_into(offset, &mut v)?;
        Ok(v)
    }

    /// Read one plain-data value at `offset` (a single access when it is 1, 2, 4 or 8 bytes and
    /// aligned).
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] when it does not fit.
    pub fn read<T: FromBytes>(&self, offset: usize) -> Result<T, OutOfBounds> {
        let src = self.check(offset, size_of::<T>())?;
        let mut value = T::new_zeroed();
        let dst = std::ptr::from_mut(&mut value).cast::<u8>();
        // SAFETY: the range is checked and readable; `value` is a local `T`, every byte pattern
        // of which is valid (`FromBytes`), so overwriting its bytes is sound.
        unsafe { copy_volatile(src.as_ptr(), dst, size_of::<T>()) };
        Ok(value)
    }
}

impl<'a> VolatileSlice<'a, ReadWrite> {
    /// Copy `data` to `offset`.
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] when the range does not fit (nothing is copied).
    pub fn write_from(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        let dst = self.check(offset, data.len())?;
        // SAFETY: the range is checked, mapped and writable (`ReadWrite`); `data` is ordinary
        // memory, disjoint from shared memory.
        unsafe { copy_volatile(data.as_ptr(), dst.as_ptr(), data.len()) };
        Ok(())
    }

    /// Write one plain-data value at `offset` (a single access when it is 1, 2, 4 or 8 bytes and
    /// aligned).
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] when it does not fit.
    pub fn write<T: IntoBytes + Immutable>(
        &self,
        offset: usize,
        value: &T,
    ) -> Result<(), OutOfBounds> {
        self.write_from(offset, value.as_bytes())
    }

    /// Set `len` bytes at `offset` to `byte`.
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] when the range does not fit (nothing is written).
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), OutOfBounds> {
        let dst = self.check(offset, len)?;
        for i in 0..len {
            // SAFETY: inside the checked, writable range.
            unsafe { dst.as_ptr().add(i).write_volatile(byte) };
        }
        Ok(())
    }
}

/// Copy `len` bytes with volatile accesses on the shared side. Naturally sized and aligned
/// values move in one access; other copies go word by word where both sides allow it.
///
/// # Safety
///
/// `src..src + len` is readable, `dst..dst + len` writable, and the two do not overlap.
unsafe fn copy_volatile(src: *const u8, dst: *mut u8, len: usize) {
    let aligned = |n: usize| (src as usize) % n == 0 && (dst as usize) % n == 0;
    // SAFETY: (all arms) the caller's contract covers `len` bytes at both ends; each access is
    // of `n` bytes at an address aligned to `n`.
    unsafe {
        match len {
            1 => dst.write_volatile(src.read_volatile()),
            2 if aligned(2) => dst
                .cast::<u16>()
                .write_volatile(src.cast::<u16>().read_volatile()),
            4 if aligned(4) => dst
                .cast::<u32>()
                .write_volatile(src.cast::<u32>().read_volatile()),
            8 if aligned(8) => dst
                .cast::<u64>()
                .write_volatile(src.cast::<u64>().read_volatile()),
            _ => {
                let mut i = 0;
                if aligned(8) {
                    while i + 8 <= len {
                        dst.add(i)
                            .cast::<u64>()
                            .write_volatile(src.add(i).cast::<u64>().read_volatile());
                        i += 8;
                    }
                }
                while i < len {
                    dst.add(i).write_volatile(src.add(i).read_volatile());
                    i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_slice<R>(len: usize, f: impl FnOnce(VolatileSlice<'_, ReadWrite>) -> R) -> R {
        let mut backing = vec![0u64; len.div_ceil(8)];
        let ptr = NonNull::new(backing.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `backing` outlives the slice and is not referenced while it lives.
        f(unsafe { VolatileSlice::new(ptr, len) })
    }

    #[test]
    fn copies_round_trip_and_bounds_are_checked() {
        with_slice(64, |s| {
            s.write_from(3, b"hello").unwrap();
            assert_eq!(s.to_vec(3, 5).unwrap(), b"hello");
            s.write(8, &0xdead_beef_u32).unwrap();
            assert_eq!(s.read::<u32>(8).unwrap(), 0xdead_beef);
            s.write(16, &[1u64, 2, 3]).unwrap();
            assert_eq!(s.read::<[u64; 3]>(16).unwrap(), [1, 2, 3]);
            s.fill(40, 24, 0xaa).unwrap();
            assert_eq!(s.read::<u8>(63).unwrap(), 0xaa);
            let e = s.write_from(60, &[0; 5]).unwrap_err();
            assert_eq!(
                e,
                OutOfBounds {
                    offset: 60,
                    len: 5,
                    size: 64
                }
            );
            assert!(s.read::<u64>(57).is_err());
            assert!(s.read::<u8>(usize::MAX).is_err());
            assert!(s.subslice(usize::MAX, 2).is_err());
            let sub = s.subslice(3, 5).unwrap();
            assert_eq!(sub.to_vec(0, 5).unwrap(), b"hello");
            assert!(sub.read::<u8>(5).is_err());
            assert_eq!(sub.read_only().read::<u8>(0).unwrap(), b'h');
        });
    }

    #[test]
    fn unaligned_copies_are_exact() {
        with_slice(40, |s| {
            let data: Vec<u8> = (0..37).collect();
            s.write_from(1, &data).unwrap();
            assert_eq!(s.to_vec(1, 37).unwrap(), data);
            assert_eq!(s.read::<u16>(1).unwrap(), u16::from_ne_bytes([0, 1]));
        });
    }
}
