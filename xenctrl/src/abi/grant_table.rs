//! Grant tables (`grant_table.h`): the version 1 entry a granting domain writes, its flags, the
//! copy flags and the status codes Xen answers grant operations with, and the one
//! `grant_table_op` this crate issues itself: `GNTTABOP_setup_table`, the frames of another
//! domain's grant table, which a toolstack maps when Xen or the kernel cannot map the table as
//! a resource (`XENMEM_resource_grant_table`, see [`crate::foreign`]).

#![allow(non_upper_case_globals)]

use std::fmt;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::handle::{pool_data, GuestRanges, XenGuestHandle};
use super::layout::{abi_consts, abi_struct};
use super::xen::{DomId, XenPfn};
use crate::GuestHandle;

abi_consts! {
    /// The constants of this module, for the conformance test.
    table consts;

    /// Entry type: unused.
    GTF_invalid: u16 = 0;
    /// Entry type: `domid` may map or copy `frame`.
    GTF_permit_access: u16 = 1;
    /// Entry type: `domid` may transfer a page into this entry.
    GTF_accept_transfer: u16 = 2;
    /// Entry type: a transitive grant (version 2 only).
    GTF_transitive: u16 = 3;
    /// The bits of `flags` that hold the entry type.
    GTF_type_mask: u16 = 3;
    /// The grantee may only read the frame.
    GTF_readonly: u16 = 1 << 2;
    /// Set by Xen while the grantee has the frame mapped or pinned for reading.
    GTF_reading: u16 = 1 << 3;
    /// Set by Xen while the grantee has the frame mapped or pinned for writing.
    GTF_writing: u16 = 1 << 4;
    /// A sub-page grant (version 2 only): it may be copied, never mapped.
    GTF_sub_page: u16 = 1 << 8;

    /// References below this one are the toolstack's; a guest kernel hands out the others.
    GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;
    /// The reserved reference of the console ring.
    GNTTAB_RESERVED_CONSOLE: u32 = 0;
    /// The reserved reference of the xenstore ring.
    GNTTAB_RESERVED_XENSTORE: u32 = 1;

    /// Report (and grow the table to) the first frames of a domain's grant table
    /// ([`GnttabSetupTable`]).
    GNTTABOP_setup_table: u64 = 2;

    /// `gnttab_copy.flags`: the source is a grant reference (else a local frame).
    GNTCOPY_source_gref: u16 = 1;
    /// `gnttab_copy.flags`: the destination is a grant reference (else a local frame).
    GNTCOPY_dest_gref: u16 = 2;

    /// Normal return.
    GNTST_okay: i16 = 0;
    /// General undefined error (an entry not granted to the caller, a read-only entry asked
    /// for writing, ...).
    GNTST_general_error: i16 = -1;
    /// No such domain.
    GNTST_bad_domain: i16 = -2;
    /// A reference beyond the granting domain's table.
    GNTST_bad_gntref: i16 = -3;
    /// A bad map handle.
    GNTST_bad_handle: i16 = -4;
    /// A bad virtual address to map.
    GNTST_bad_virt_addr: i16 = -5;
    /// A bad device address to unmap.
    GNTST_bad_dev_addr: i16 = -6;
    /// Out of space in the I/O MMU.
    GNTST_no_device_space: i16 = -7;
    /// Not enough privilege.
    GNTST_permission_denied: i16 = -8;
    /// The granted frame is not a valid page of the granting domain.
    GNTST_bad_page: i16 = -9;
    /// Copy arguments cross a page boundary.
    GNTST_bad_copy_arg: i16 = -10;
    /// A transfer page address too large.
    GNTST_address_too_big: i16 = -11;
    /// Not done; try again.
    GNTST_eagain: i16 = -12;
    /// Out of space (maptrack handles).
    GNTST_no_space: i16 = -13;
}

abi_struct! {
    /// A version 1 grant entry (`struct grant_entry_v1`), written by the granting domain in its
    /// own grant table: 512 of them per 4 KiB frame.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct grant_entry_v1")
    pub struct GrantEntryV1 {
        /// `GTF_*`: the type, `GTF_readonly`, and the `GTF_reading`/`GTF_writing` bits Xen sets.
        pub flags: u16,
        /// The domain allowed to use the grant.
        pub domid: DomId,
        /// The granted frame (a machine frame for a PV granter, a guest frame for an HVM one).
        pub frame: u32,
    }
    size = 8;
}

/// A grant operation's status as Xen reports it (`GNTST_*`, `int16_t`). Unknown values stay
/// representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrantStatus(pub i16);

impl GrantStatus {
    /// `GNTST_okay`.
    pub const OKAY: Self = Self(GNTST_okay);
    /// `GNTST_general_error`.
    pub const GENERAL_ERROR: Self = Self(GNTST_general_error);
    /// `GNTST_bad_domain`.
    pub const BAD_DOMAIN: Self = Self(GNTST_bad_domain);
    /// `GNTST_bad_gntref`.
    pub const BAD_GNTREF: Self = Self(GNTST_bad_gntref);
    /// `GNTST_bad_virt_addr`.
    pub const BAD_VIRT_ADDR: Self = Self(GNTST_bad_virt_addr);
    /// `GNTST_permission_denied`.
    pub const PERMISSION_DENIED: Self = Self(GNTST_permission_denied);
    /// `GNTST_bad_page`.
    pub const BAD_PAGE: Self = Self(GNTST_bad_page);
    /// `GNTST_bad_copy_arg`.
    pub const BAD_COPY_ARG: Self = Self(GNTST_bad_copy_arg);
    /// `GNTST_eagain`.
    pub const EAGAIN: Self = Self(GNTST_eagain);
    /// `GNTST_no_space`.
    pub const NO_SPACE: Self = Self(GNTST_no_space);

    /// Whether the operation succeeded.
    pub fn is_ok(self) -> bool {
        self.0 == GNTST_okay
    }

    /// Xen's name for it (`GNTST_*`), if it is one Xen defines.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            GNTST_okay => "GNTST_okay",
            GNTST_general_error => "GNTST_general_error",
            GNTST_bad_domain => "GNTST_bad_domain",
            GNTST_bad_gntref => "GNTST_bad_gntref",
            GNTST_bad_handle => "GNTST_bad_handle",
            GNTST_bad_virt_addr => "GNTST_bad_virt_addr",
            GNTST_bad_dev_addr => "GNTST_bad_dev_addr",
            GNTST_no_device_space => "GNTST_no_device_space",
            GNTST_permission_denied => "GNTST_permission_denied",
            GNTST_bad_page => "GNTST_bad_page",
            GNTST_bad_copy_arg => "GNTST_bad_copy_arg",
            GNTST_address_too_big => "GNTST_address_too_big",
            GNTST_eagain => "GNTST_eagain",
            GNTST_no_space => "GNTST_no_space",
            _ => return None,
        })
    }

    fn meaning(self) -> &'static str {
        match self.0 {
            GNTST_okay => "done",
            GNTST_general_error => {
                "refused (an entry not granted to this domain, or read-only; for setup_table, \
                 more frames than the domain's max_grant_frames)"
            }
            GNTST_bad_domain => "no such domain",
            GNTST_bad_gntref => "no such grant reference",
            GNTST_bad_handle => "bad map handle",
            GNTST_bad_virt_addr => "bad virtual address",
            GNTST_bad_dev_addr => "bad device address",
            GNTST_no_device_space => "out of I/O MMU space",
            GNTST_permission_denied => "permission denied",
            GNTST_bad_page => "the granted frame is not a page of the granting domain",
            GNTST_bad_copy_arg => "copy arguments cross a page boundary",
            GNTST_address_too_big => "page address too large",
            GNTST_eagain => "busy, try again",
            GNTST_no_space => "out of map handles",
            _ => "unknown status",
        }
    }
}

impl fmt::Display for GrantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} ({name})", self.meaning()),
            None => write!(f, "unknown grant status {}", self.0),
        }
    }
}

abi_struct! {
    /// Argument of `GNTTABOP_setup_table` (`struct gnttab_setup_table`): Xen grows `dom`'s grant
    /// table to at least `nr_frames` frames and writes the frame number of each of the first
    /// `nr_frames` into the list: a machine frame for a PV domain, the guest frame where the
    /// guest mapped it for an HVM one (all ones where it did not).
    ///
    /// `nr_frames` is the length of the frame list the handle came from
    /// ([`GnttabSetupTable::new`]); no field can be set apart from the handle:
    ///
    /// ```compile_fail,E0616
    /// use xenctrl::abi::*;
    /// let pool = xenctrl::BufferPool::anonymous();
    /// let mut one = pool.alloc_slice::<XenPfn>(1).unwrap();
    /// let mut op = GnttabSetupTable::new(1, one.guest_handle());
    /// op.nr_frames = 64;
    /// ```
    ///
    /// Holds a guest handle, so no zerocopy trait builds it from bytes; decode untrusted bytes
    /// with [`GnttabSetupTableView`].
    #[derive(Debug, KnownLayout, Immutable)]
    c("struct gnttab_setup_table")
    pub struct GnttabSetupTable<'h> {
        dom: DomId,
        pad0: [u8; 2] => _,
        nr_frames: u32,
        status: i16,
        pad1: [u8; 6] => _,
        frame_list: XenGuestHandle<'h, XenPfn>,
    }
    size = 24;
}
pool_data!(GnttabSetupTable<'h>);

impl<'h> GnttabSetupTable<'h> {
    /// Ask for as many of `dom`'s grant-table frames as `frames` holds (up to `u32::MAX`).
    pub fn new(dom: DomId, frames: GuestHandle<'h, [XenPfn]>) -> Self {
        Self {
            dom,
            pad0: [0; 2],
            nr_frames: u32::try_from(frames.len()).unwrap_or(u32::MAX),
            status: 0,
            pad1: [0; 6],
            frame_list: frames.into(),
        }
    }

    /// The domain whose table is asked about (`DOMID_SELF` allowed).
    pub fn dom(&self) -> DomId {
        self.dom
    }

    /// How many frames are asked for: the length of the frame list.
    pub fn nr_frames(&self) -> u32 {
        self.nr_frames
    }

    /// What Xen answered (out).
    pub fn status(&self) -> GrantStatus {
        GrantStatus(self.status)
    }

    /// The frame list's handle.
    pub fn frame_list(&self) -> &XenGuestHandle<'h, XenPfn> {
        &self.frame_list
    }
}

impl GuestRanges for GnttabSetupTable<'_> {
    fn guest_ranges(&self, f: &mut dyn FnMut(u64, u64)) {
        self.frame_list.report_range(u64::from(self.nr_frames), f);
    }
}

abi_struct! {
    /// [`GnttabSetupTable`] with the handle as a plain address, for decoding untrusted bytes.
    /// No entry point accepts it.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct gnttab_setup_table")
    pub struct GnttabSetupTableView {
        /// The domain whose table is asked about.
        pub dom: DomId,
        /// Zero (C alignment padding).
        pub pad0: [u8; 2] => _,
        /// Frames asked for.
        pub nr_frames: u32,
        /// `GNTST_*` (out).
        pub status: i16,
        /// Zero (C alignment padding).
        pub pad1: [u8; 6] => _,
        /// The address of the frame list.
        pub frame_list: u64,
    }
    size = 24;
}
