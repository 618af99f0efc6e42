//! The raw ioctl interface of `/dev/xen/gntdev` and `/dev/xen/gntalloc` (Linux's
//! `include/uapi/xen/gntdev.h` and `gntalloc.h`, as installed in `/usr/include/xen/sys/`).
//!
//! Every request code is `_IOC(_IOC_NONE, 'G', nr, sizeof(struct ...))`: no direction bits,
//! though the kernel reads and writes the argument. nix's `*_bad` macros take the code as
//! written; the test below recomputes each one.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// One grant of `IOCTL_GNTDEV_MAP_GRANT_REF` (`struct ioctl_gntdev_grant_ref`).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct GntdevGrantRef {
    pub domid: u32,
    pub gref: u32,
}
static_assertions::assert_eq_size!(GntdevGrantRef, [u8; 8]);

/// The fixed head of `struct ioctl_gntdev_map_grant_ref`; `count` [`GntdevGrantRef`]s follow
/// it in the same buffer (the C struct's `refs[1]`, whose first element sits at offset 16).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct GntdevMapGrantRef {
    pub count: u32,
    pub pad: u32,
    /// Out: the offset to `mmap` at.
    pub index: u64,
}
static_assertions::assert_eq_size!(GntdevMapGrantRef, [u8; 16]);
/// `sizeof(struct ioctl_gntdev_map_grant_ref)`, one grant included: what the request code
/// encodes.
const GNTDEV_MAP_GRANT_REF_SIZE: libc::c_ulong = 24;

/// `struct ioctl_gntdev_unmap_grant_ref`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct GntdevUnmapGrantRef {
    pub index: u64,
    pub count: u32,
    pub pad: u32,
}
static_assertions::assert_eq_size!(GntdevUnmapGrantRef, [u8; 16]);

/// `struct ioctl_gntdev_unmap_notify` and `struct ioctl_gntalloc_unmap_notify` (the same
/// layout).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct UnmapNotifyRaw {
    /// The file offset of the byte (the mapping's index plus the byte's offset in it).
    pub index: u64,
    /// `UNMAP_NOTIFY_*`.
    pub action: u32,
    pub event_channel_port: u32,
}
static_assertions::assert_eq_size!(UnmapNotifyRaw, [u8; 16]);

/// Clear (set to zero) the byte at `index`.
pub(crate) const UNMAP_NOTIFY_CLEAR_BYTE: u32 = 0x1;
/// Signal `event_channel_port`.
pub(crate) const UNMAP_NOTIFY_SEND_EVENT: u32 = 0x2;

/// The grant half of one end of a copy segment (the union's `foreign` member).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct CopyForeign {
    pub gref: u32,
    pub offset: u16,
    pub domid: u16,
}
static_assertions::assert_eq_size!(CopyForeign, u64);

/// `struct ioctl_gntdev_grant_copy_segment`. `source` and `dest` are the C unions: either a
/// user-space address (`void *virt`) or a [`CopyForeign`], as `flags` says.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct GrantCopySegmentRaw {
    pub source: u64,
    pub dest: u64,
    pub len: u16,
    /// `GNTCOPY_source_gref`, `GNTCOPY_dest_gref`.
    pub flags: u16,
    /// Out: `GNTST_*`.
    pub status: i16,
    pub pad: u16,
}
static_assertions::assert_eq_size!(GrantCopySegmentRaw, [u8; 24]);

/// `struct ioctl_gntdev_grant_copy`.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct GntdevGrantCopy {
    pub count: libc::c_uint,
    pub pad: u32,
    pub segments: *mut GrantCopySegmentRaw,
}
static_assertions::assert_eq_size!(GntdevGrantCopy, [u8; 16]);

/// The fixed head of `struct ioctl_gntalloc_alloc_gref`; `count` `u32` grant references
/// follow it (the C struct's `gref_ids[1]`, at offset 16).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct GntallocAllocGref {
    pub domid: u16,
    /// `GNTALLOC_FLAG_WRITABLE`.
    pub flags: u16,
    pub count: u32,
    /// Out: the offset to `mmap` at.
    pub index: u64,
}
static_assertions::assert_eq_size!(GntallocAllocGref, [u8; 16]);
/// `sizeof(struct ioctl_gntalloc_alloc_gref)`, one reference included, padded to 8.
const GNTALLOC_ALLOC_GREF_SIZE: libc::c_ulong = 24;

/// The grantee may write the pages.
pub(crate) const GNTALLOC_FLAG_WRITABLE: u16 = 1;

/// `struct ioctl_gntalloc_dealloc_gref` (12 bytes of fields, 16 with its tail padding).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct GntallocDeallocGref {
    pub index: u64,
    pub count: u32,
    pub pad: u32,
}
static_assertions::assert_eq_size!(GntallocDeallocGref, [u8; 16]);

/// `_IOC(_IOC_NONE, 'G', nr, size)`.
const fn ioc_none_g(nr: libc::c_ulong, size: libc::c_ulong) -> libc::c_ulong {
    (size << 16) | ((b'G' as libc::c_ulong) << 8) | nr
}

/// `IOCTL_GNTDEV_MAP_GRANT_REF`.
pub(crate) const IOCTL_GNTDEV_MAP_GRANT_REF: libc::c_ulong = 0x0018_4700;
/// `IOCTL_GNTDEV_UNMAP_GRANT_REF`.
pub(crate) const IOCTL_GNTDEV_UNMAP_GRANT_REF: libc::c_ulong = 0x0010_4701;
/// `IOCTL_GNTDEV_SET_UNMAP_NOTIFY`.
pub(crate) const IOCTL_GNTDEV_SET_UNMAP_NOTIFY: libc::c_ulong = 0x0010_4707;
/// `IOCTL_GNTDEV_GRANT_COPY`.
pub(crate) const IOCTL_GNTDEV_GRANT_COPY: libc::c_ulong = 0x0010_4708;
/// `IOCTL_GNTALLOC_ALLOC_GREF`.
pub(crate) const IOCTL_GNTALLOC_ALLOC_GREF: libc::c_ulong = 0x0018_4705;
/// `IOCTL_GNTALLOC_DEALLOC_GREF`.
pub(crate) const IOCTL_GNTALLOC_DEALLOC_GREF: libc::c_ulong = 0x0010_4706;
/// `IOCTL_GNTALLOC_SET_UNMAP_NOTIFY`.
pub(crate) const IOCTL_GNTALLOC_SET_UNMAP_NOTIFY: libc::c_ulong = 0x0010_4707;

// The codes as the headers spell them, against the encoding (checked again, with the Rust
// structs' sizes, by the test below).
static_assertions::const_assert_eq!(
    IOCTL_GNTDEV_MAP_GRANT_REF,
    ioc_none_g(0, GNTDEV_MAP_GRANT_REF_SIZE)
);
static_assertions::const_assert_eq!(
    IOCTL_GNTALLOC_ALLOC_GREF,
    ioc_none_g(5, GNTALLOC_ALLOC_GREF_SIZE)
);

nix::ioctl_readwrite_bad!(
    /// Reserve an `mmap` offset for the grants that follow the head in the same buffer.
    gntdev_map_grant_ref,
    IOCTL_GNTDEV_MAP_GRANT_REF,
    GntdevMapGrantRef
);
nix::ioctl_write_ptr_bad!(
    /// Release the grants reserved at an offset (after `munmap`).
    gntdev_unmap_grant_ref,
    IOCTL_GNTDEV_UNMAP_GRANT_REF,
    GntdevUnmapGrantRef
);
nix::ioctl_write_ptr_bad!(
    /// Set what happens when the mapping that holds a byte goes.
    gntdev_set_unmap_notify,
    IOCTL_GNTDEV_SET_UNMAP_NOTIFY,
    UnmapNotifyRaw
);
nix::ioctl_write_ptr_bad!(
    /// Run copy segments; the kernel writes each segment's status.
    gntdev_grant_copy,
    IOCTL_GNTDEV_GRANT_COPY,
    GntdevGrantCopy
);
nix::ioctl_readwrite_bad!(
    /// Allocate and grant pages; the kernel writes the offset and the references.
    gntalloc_alloc_gref,
    IOCTL_GNTALLOC_ALLOC_GREF,
    GntallocAllocGref
);
nix::ioctl_write_ptr_bad!(
    /// Let go of pages allocated at an offset.
    gntalloc_dealloc_gref,
    IOCTL_GNTALLOC_DEALLOC_GREF,
    GntallocDeallocGref
);
nix::ioctl_write_ptr_bad!(
    /// Set what happens when a shared page goes.
    gntalloc_set_unmap_notify,
    IOCTL_GNTALLOC_SET_UNMAP_NOTIFY,
    UnmapNotifyRaw
);

#[cfg(test)]
mod tests {
    use super::*;

    fn size_of<T>() -> libc::c_ulong {
        std::mem::size_of::<T>() as libc::c_ulong
    }

    #[test]
    fn request_codes_match_the_ioc_encoding_of_the_c_structs() {
        // The variable-length structs: the head plus the C array's one element, padded to the
        // head's alignment of 8.
        assert_eq!(
            size_of::<GntdevMapGrantRef>() + size_of::<GntdevGrantRef>(),
            GNTDEV_MAP_GRANT_REF_SIZE
        );
        assert_eq!(
            (size_of::<GntallocAllocGref>() + 4).next_multiple_of(8),
            GNTALLOC_ALLOC_GREF_SIZE
        );
        let cases = [
            (IOCTL_GNTDEV_MAP_GRANT_REF, 0, GNTDEV_MAP_GRANT_REF_SIZE),
            (
                IOCTL_GNTDEV_UNMAP_GRANT_REF,
                1,
                size_of::<GntdevUnmapGrantRef>(),
            ),
            (
                IOCTL_GNTDEV_SET_UNMAP_NOTIFY,
                7,
                size_of::<UnmapNotifyRaw>(),
            ),
            (IOCTL_GNTDEV_GRANT_COPY, 8, size_of::<GntdevGrantCopy>()),
            (IOCTL_GNTALLOC_ALLOC_GREF, 5, GNTALLOC_ALLOC_GREF_SIZE),
            (
                IOCTL_GNTALLOC_DEALLOC_GREF,
                6,
                size_of::<GntallocDeallocGref>(),
            ),
            (
                IOCTL_GNTALLOC_SET_UNMAP_NOTIFY,
                7,
                size_of::<UnmapNotifyRaw>(),
            ),
        ];
        for (code, nr, size) in cases {
            assert_eq!(code, ioc_none_g(nr, size), "request {nr}");
        }
    }
}
