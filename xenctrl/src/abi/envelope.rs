//! The `domctl` and `sysctl` envelopes, typed by their payload.
//!
//! C declares `struct xen_domctl` as a 16-byte header followed by a 128-byte union of every
//! sub-op's argument (144 bytes), and `struct xen_sysctl` as an 8-byte header and the same kind of
//! union (136 bytes). Here the union is replaced by one payload type `P` followed by a zeroed tail
//! that fills the union to 128 bytes, so:
//!
//! - `cmd` always agrees with the payload: it comes from [`DomctlPayload::CMD`], cannot be
//!   changed, and is written again from the type by every entry point just before the call
//!   (whatever the memory holds), so Xen never reads a payload's bytes as some other sub-op's
//!   (which could turn an integer into a guest handle);
//! - every envelope is exactly Xen's size (asserted for every payload where the payload is
//!   declared, and checked against C by the conformance test);
//! - a payload that holds a [`XenGuestHandle<'h, _>`](super::XenGuestHandle) makes the envelope
//!   hold `'h` too, so the envelope cannot outlive the buffer the handle points into.
//!
//! The payload traits are sealed: only this module's macros implement them, and only for the
//! typed payloads. `*View` types (plain integers where handles sit) implement neither trait, so no
//! entry point can be handed a forged handle.
//!
//! The envelopes are only `KnownLayout + Immutable`: no zerocopy trait builds one from bytes
//! (see [`handle`](super::handle) for why not even `FromZeros`). The pool allocates them zeroed
//! through the sealed [`PoolData`](super::PoolData). Untrusted bytes are decoded with
//! [`XenDomctlView`] / [`XenSysctlView`], whose `u` is the raw union.
//!
//! # Examples
//!
//! ```
//! use xenctrl::abi::*;
//!
//! let op = XenDomctl::new(3, XenDomctlMaxMem { max_memkb: 1 << 20 });
//! assert_eq!(op.cmd(), XEN_DOMCTL_max_mem);
//! assert_eq!(size_of_val(&op), 144);
//! let list = XenSysctl::new(XenSysctlGetdomaininfolist::empty(0));
//! assert_eq!(list.cmd(), XEN_SYSCTL_getdomaininfolist);
//! ```
//!
//! A view is not a payload, so it cannot carry a forged handle into an envelope:
//!
//! ```compile_fail,E0277
//! use xenctrl::abi::*;
//! let forged = XenSysctlGetdomaininfolistView { buffer: 0xdead_0000, ..Default::default() };
//! let _ = XenSysctl::new(forged);
//! ```
//!
//! A handle-bearing struct or an envelope cannot be made from bytes, by any zerocopy trait or
//! macro:
//!
//! ```compile_fail,E0599
//! use zerocopy::FromBytes;
//! let _ = xenctrl::abi::XenMemoryReservation::read_from_bytes(&[0u8; 32]);
//! ```
//!
//! ```compile_fail,E0599
//! use zerocopy::TryFromBytes;
//! let _ = xenctrl::abi::XenMemoryReservation::try_read_from_bytes(&[0xffu8; 32]);
//! ```
//!
//! ```compile_fail,E0599
//! use zerocopy::TryFromBytes;
//! let bytes = [0u8; 24];
//! let _ = xenctrl::abi::XenSysctlGetdomaininfolist::try_ref_from_bytes(&bytes[..]);
//! ```
//!
//! ```compile_fail,E0599
//! use zerocopy::TryFromBytes;
//! use xenctrl::abi::*;
//! let mut bytes = [0u64; 17];
//! let _ = XenSysctl::<XenSysctlGetdomaininfolist>::try_mut_from_bytes(bytes.as_mut_slice());
//! ```
//!
//! ```compile_fail,E0599
//! use zerocopy::FromZeros;
//! use xenctrl::abi::*;
//! let _ = XenDomctl::<XenDomctlMaxMem>::new_zeroed();
//! ```
//!
//! not even an envelope whose payload is plain integers, which could still carry a wrong `cmd`:
//!
//! ```compile_fail,E0599
//! use zerocopy::TryFromBytes;
//! use xenctrl::abi::*;
//! let _ = XenSysctl::<XenSysctlPhysinfo>::try_read_from_bytes(&[0u8; 136]);
//! ```
//!
//! ```compile_fail,E0277
//! use xenctrl::abi::*;
//! let raw = [0u64; 18];
//! let _: Result<XenDomctl<XenDomctlMaxMem>, _> = zerocopy::try_transmute!(raw);
//! ```
//!
//! ```compile_fail,E0277
//! use xenctrl::abi::*;
//! let raw = [0u64; 17];
//! let _: Result<XenSysctl<XenSysctlGetdomaininfolist>, _> = zerocopy::try_transmute!(raw);
//! ```
//!
//! ```compile_fail,E0277
//! use xenctrl::abi::*;
//! let raw = [0u64; 4];
//! let _: Result<&XenMemoryReservation, _> = zerocopy::try_transmute_ref!(&raw);
//! ```
//!
//! ```compile_fail,E0277
//! use xenctrl::abi::*;
//! let mut raw = [0u64; 4];
//! let _: Result<&mut XenMemoryReservation, _> = zerocopy::try_transmute_mut!(&mut raw);
//! ```
//!
//! The sub-op is fixed by the payload type:
//!
//! ```compile_fail,E0616
//! use xenctrl::abi::*;
//! let mut op = XenDomctl::new(3, XenDomctlMaxMem { max_memkb: 1 });
//! op.cmd = XEN_DOMCTL_createdomain;
//! ```
//!
//! and no payload type can be added outside this crate:
//!
//! ```compile_fail,E0603
//! struct Evil;
//! impl xenctrl::abi::envelope::sealed::Sealed for Evil {}
//! ```

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use super::handle::{pool_data, PoolData};
use super::layout::{abi_struct, AbiLayout, CField, FieldLayout, StructLayout};
use super::xen::DomId;

/// Size of the argument union in both `struct xen_domctl` and `struct xen_sysctl`.
pub(crate) const UNION_SIZE: usize = 128;

pub(crate) mod sealed {
    /// Restricts the payload traits to this crate's ABI module.
    pub trait Sealed {}
}

/// A `domctl` sub-op argument: one member of `struct xen_domctl`'s union.
pub trait DomctlPayload: sealed::Sealed + AbiLayout + PoolData + KnownLayout + Immutable {
    /// The `XEN_DOMCTL_*` sub-op this payload belongs to.
    const CMD: u32;
    /// The union member, e.g. `u.max_mem` (or [`CField::Implicit`] for sub-ops without one).
    const UNION_MEMBER: CField;
    /// Zero bytes that fill the union up to 128 bytes after the payload.
    type Tail: FromBytes + IntoBytes + KnownLayout + Immutable;

    /// The payload's bytes, when it holds no guest handle (so any bytes are a valid value).
    fn plain_bytes(&self) -> Option<&[u8]>;

    /// The payload's bytes, mutably, when it holds no guest handle.
    fn plain_bytes_mut(&mut self) -> Option<&mut [u8]>;

    /// Calls `f(address, bytes)` for the memory each non-null guest handle of the payload lets
    /// Xen reach (the count Xen trusts times the element size). The entry points check every
    /// range against the calling handle's pool before the call.
    #[doc(hidden)]
    fn guest_ranges(&self, f: &mut dyn FnMut(u64, u64));
}

/// A `sysctl` sub-op argument: one member of `struct xen_sysctl`'s union.
pub trait SysctlPayload: sealed::Sealed + AbiLayout + PoolData + KnownLayout + Immutable {
    /// The `XEN_SYSCTL_*` sub-op this payload belongs to.
    const CMD: u32;
    /// The union member, e.g. `u.physinfo`.
    const UNION_MEMBER: CField;
    /// Zero bytes that fill the union up to 128 bytes after the payload.
    type Tail: FromBytes + IntoBytes + KnownLayout + Immutable;

    /// The payload's bytes, when it holds no guest handle (so any bytes are a valid value).
    fn plain_bytes(&self) -> Option<&[u8]>;

    /// The payload's bytes, mutably, when it holds no guest handle.
    fn plain_bytes_mut(&mut self) -> Option<&mut [u8]>;

    /// Calls `f(address, bytes)` for the memory each non-null guest handle of the payload lets
    /// Xen reach (the count Xen trusts times the element size). The entry points check every
    /// range against the calling handle's pool before the call.
    #[doc(hidden)]
    fn guest_ranges(&self, f: &mut dyn FnMut(u64, u64));
}

/// Implements [`DomctlPayload`] or [`SysctlPayload`] for a payload type and asserts the envelope
/// size. `plain` payloads hold no guest handle; `handles` payloads do.
macro_rules! payload {
    (@impl $tr:ident, $p:ident $(<$lt:lifetime>)?, $cmd:expr, $member:tt, $kind:ident) => {
        impl $(<$lt>)? $crate::abi::envelope::sealed::Sealed for $p $(<$lt>)? {}

        impl $(<$lt>)? $crate::abi::envelope::$tr for $p $(<$lt>)? {
            const CMD: u32 = $cmd;
            const UNION_MEMBER: $crate::abi::layout::CField = payload!(@member $member);
            type Tail = [u8; $crate::abi::envelope::UNION_SIZE - core::mem::size_of::<$p>()];

            fn plain_bytes(&self) -> Option<&[u8]> {
                payload!(@bytes $kind, zerocopy::IntoBytes::as_bytes(self))
            }

            fn plain_bytes_mut(&mut self) -> Option<&mut [u8]> {
                payload!(@bytes $kind, zerocopy::IntoBytes::as_mut_bytes(self))
            }

            #[inline]
            fn guest_ranges(&self, f: &mut dyn FnMut(u64, u64)) {
                payload!(@ranges $kind, self, f)
            }
        }
    };
    (@ranges plain, $s:expr, $f:expr) => { { let _ = (&$s, &$f); } };
    (@ranges handles, $s:expr, $f:expr) => {
        $crate::abi::handle::GuestRanges::guest_ranges($s, $f)
    };
    (@member _) => { $crate::abi::layout::CField::Implicit };
    (@member $m:literal) => { $crate::abi::layout::CField::Named($m) };
    (@bytes plain, $e:expr) => { Some($e) };
    (@bytes handles, $e:expr) => { None };
    (domctl $p:ident $(<$lt:lifetime>)?, $cmd:expr, $member:tt, $kind:ident) => {
        payload!(@impl DomctlPayload, $p $(<$lt>)?, $cmd, $member, $kind);
        static_assertions::const_assert_eq!(
            core::mem::size_of::<$crate::abi::envelope::XenDomctl<$p>>(),
            144
        );
    };
    (sysctl $p:ident $(<$lt:lifetime>)?, $cmd:expr, $member:tt, $kind:ident) => {
        payload!(@impl SysctlPayload, $p $(<$lt>)?, $cmd, $member, $kind);
        static_assertions::const_assert_eq!(
            core::mem::size_of::<$crate::abi::envelope::XenSysctl<$p>>(),
            136
        );
    };
}

pub(crate) use payload;

/// A union's bytes: a payload's bytes followed by its tail's.
fn join_union(head: &[u8], tail: &[u8]) -> Option<[u8; UNION_SIZE]> {
    let mut out = [0u8; UNION_SIZE];
    out.get_mut(..head.len())?.copy_from_slice(head);
    out.get_mut(head.len()..)?.copy_from_slice(tail);
    Some(out)
}

/// Write a union's bytes back over a payload and its tail; `false` if the sizes disagree.
fn split_union(bytes: &[u8; UNION_SIZE], head: &mut [u8], tail: &mut [u8]) -> bool {
    let (h, t) = bytes.split_at(head.len().min(UNION_SIZE));
    if t.len() != tail.len() {
        return false;
    }
    head.copy_from_slice(h);
    tail.copy_from_slice(t);
    true
}

/// What [`crate::interface`] needs of an envelope to marshal it for a profile: the same for
/// domctl and sysctl.
pub(crate) trait Envelope {
    /// The payload's layout record.
    type Payload: AbiLayout;
    /// Set the interface version.
    fn set_interface_version(&mut self, version: u32);
    /// The union's bytes, if the payload holds no guest handle.
    fn union_bytes(&self) -> Option<[u8; UNION_SIZE]>;
    /// Overwrite the union's bytes, if the payload holds no guest handle.
    fn set_union_bytes(&mut self, bytes: &[u8; UNION_SIZE]) -> bool;
}

impl<P: DomctlPayload> Envelope for XenDomctl<P> {
    type Payload = P;
    fn set_interface_version(&mut self, version: u32) {
        XenDomctl::set_interface_version(self, version);
    }
    fn union_bytes(&self) -> Option<[u8; UNION_SIZE]> {
        XenDomctl::union_bytes(self)
    }
    fn set_union_bytes(&mut self, bytes: &[u8; UNION_SIZE]) -> bool {
        XenDomctl::set_union_bytes(self, bytes)
    }
}

impl<P: SysctlPayload> Envelope for XenSysctl<P> {
    type Payload = P;
    fn set_interface_version(&mut self, version: u32) {
        XenSysctl::set_interface_version(self, version);
    }
    fn union_bytes(&self) -> Option<[u8; UNION_SIZE]> {
        XenSysctl::union_bytes(self)
    }
    fn set_union_bytes(&mut self, bytes: &[u8; UNION_SIZE]) -> bool {
        XenSysctl::set_union_bytes(self, bytes)
    }
}

/// `struct xen_domctl` carrying payload `P`.
#[derive(KnownLayout, Immutable)]
#[repr(C, align(8))]
pub struct XenDomctl<P: DomctlPayload> {
    cmd: u32,
    interface_version: u32,
    /// The domain the sub-op acts on (in and out for `createdomain`).
    pub domain: DomId,
    pad: [u16; 3],
    /// The sub-op's argument.
    pub u: P,
    tail: P::Tail,
}

impl<P: DomctlPayload> XenDomctl<P> {
    /// An envelope for `P`'s sub-op on `domain`. The interface version is left 0 for the caller
    /// to fill from the probed profile.
    pub fn new(domain: DomId, payload: P) -> Self {
        Self {
            cmd: P::CMD,
            interface_version: 0,
            domain,
            pad: [0; 3],
            u: payload,
            tail: P::Tail::new_zeroed(),
        }
    }

    /// Make a zeroed (for instance, freshly pool-allocated) envelope ready for `P`'s sub-op:
    /// sets `cmd`, the domain and the interface version, and clears the padding and the tail.
    /// The payload is left as it is.
    pub fn prepare(&mut self, domain: DomId, interface_version: u32) {
        self.cmd = P::CMD;
        self.interface_version = interface_version;
        self.domain = domain;
        self.pad = [0; 3];
        self.tail.as_mut_bytes().fill(0);
    }

    /// Fill this envelope, in place, for `P`'s sub-op on `domain` with `payload`: the same
    /// result as assigning [`XenDomctl::new`], without building a temporary first.
    pub fn set(&mut self, domain: DomId, payload: P) {
        self.cmd = P::CMD;
        self.domain = domain;
        self.pad = [0; 3];
        self.u = payload;
        self.tail.as_mut_bytes().fill(0);
    }

    /// The sub-op (`P::CMD`).
    pub fn cmd(&self) -> u32 {
        self.cmd
    }

    /// The interface version this envelope will present to Xen.
    pub fn interface_version(&self) -> u32 {
        self.interface_version
    }

    /// Set the interface version (from the profile probed at open).
    pub(crate) fn set_interface_version(&mut self, version: u32) {
        self.interface_version = version;
    }

    /// What every entry point does first: `cmd` from the payload type, whatever the memory
    /// held. (The padding and the tail are private and zeroed by every constructor and by
    /// `set`; Xen copies them back as it got them.)
    #[inline]
    pub(crate) fn seal_header(&mut self) {
        self.cmd = P::CMD;
    }

    /// Overwrite `cmd`, as stray memory could: for the test that entry points reseal it.
    #[cfg(test)]
    pub(crate) fn scribble_cmd(&mut self, cmd: u32) {
        self.cmd = cmd;
    }

    /// The union's 128 bytes (payload then tail), if the payload holds no guest handle.
    pub(crate) fn union_bytes(&self) -> Option<[u8; UNION_SIZE]> {
        join_union(self.u.plain_bytes()?, self.tail.as_bytes())
    }

    /// Overwrite the union's 128 bytes, if the payload holds no guest handle. Returns whether it
    /// did.
    pub(crate) fn set_union_bytes(&mut self, bytes: &[u8; UNION_SIZE]) -> bool {
        match self.u.plain_bytes_mut() {
            Some(head) => split_union(bytes, head, self.tail.as_mut_bytes()),
            None => false,
        }
    }
}

impl<P: DomctlPayload + core::fmt::Debug> core::fmt::Debug for XenDomctl<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("XenDomctl")
            .field("cmd", &self.cmd)
            .field("interface_version", &self.interface_version)
            .field("domain", &self.domain)
            .field("u", &self.u)
            .finish_non_exhaustive()
    }
}

impl<P: DomctlPayload> AbiLayout for XenDomctl<P> {
    const LAYOUT: StructLayout = StructLayout {
        rust_name: "XenDomctl",
        c_type: Some("struct xen_domctl"),
        size: core::mem::size_of::<Self>(),
        align: core::mem::align_of::<Self>(),
        fields: &[
            FieldLayout {
                name: "cmd",
                c_field: CField::Named("cmd"),
                offset: core::mem::offset_of!(Self, cmd),
                size: core::mem::size_of::<u32>(),
            },
            FieldLayout {
                name: "interface_version",
                c_field: CField::Named("interface_version"),
                offset: core::mem::offset_of!(Self, interface_version),
                size: core::mem::size_of::<u32>(),
            },
            FieldLayout {
                name: "domain",
                c_field: CField::Named("domain"),
                offset: core::mem::offset_of!(Self, domain),
                size: core::mem::size_of::<DomId>(),
            },
            FieldLayout {
                name: "pad",
                c_field: CField::Named("_pad"),
                offset: core::mem::offset_of!(Self, pad),
                size: core::mem::size_of::<[u16; 3]>(),
            },
            FieldLayout {
                name: "u",
                c_field: P::UNION_MEMBER,
                offset: core::mem::offset_of!(Self, u),
                size: core::mem::size_of::<P>(),
            },
            FieldLayout {
                name: "tail",
                c_field: CField::Implicit,
                offset: core::mem::offset_of!(Self, tail),
                size: core::mem::size_of::<P::Tail>(),
            },
        ],
    };
}

/// `struct xen_sysctl` carrying payload `P`.
#[derive(KnownLayout, Immutable)]
#[repr(C, align(8))]
pub struct XenSysctl<P: SysctlPayload> {
    cmd: u32,
    interface_version: u32,
    /// The sub-op's argument.
    pub u: P,
    tail: P::Tail,
}

impl<P: SysctlPayload> XenSysctl<P> {
    /// An envelope for `P`'s sub-op. The interface version is left 0 for the caller to fill from
    /// the probed profile.
    pub fn new(payload: P) -> Self {
        Self {
            cmd: P::CMD,
            interface_version: 0,
            u: payload,
            tail: P::Tail::new_zeroed(),
        }
    }

    /// Make a zeroed (for instance, freshly pool-allocated) envelope ready for `P`'s sub-op:
    /// sets `cmd` and the interface version and clears the tail. The payload is left as it is.
    pub fn prepare(&mut self, interface_version: u32) {
        self.cmd = P::CMD;
        self.interface_version = interface_version;
        self.tail.as_mut_bytes().fill(0);
    }

    /// Fill this envelope, in place, for `P`'s sub-op with `payload`: the same result as
    /// assigning [`XenSysctl::new`], without building a temporary first.
    pub fn set(&mut self, payload: P) {
        self.cmd = P::CMD;
        self.u = payload;
        self.tail.as_mut_bytes().fill(0);
    }

    /// The sub-op (`P::CMD`).
    pub fn cmd(&self) -> u32 {
        self.cmd
    }

    /// The interface version this envelope will present to Xen.
    pub fn interface_version(&self) -> u32 {
        self.interface_version
    }

    /// Set the interface version (from the profile probed at open).
    pub(crate) fn set_interface_version(&mut self, version: u32) {
        self.interface_version = version;
    }

    /// What every entry point does first: `cmd` from the payload type, whatever the memory
    /// held.
    #[inline]
    pub(crate) fn seal_header(&mut self) {
        self.cmd = P::CMD;
    }

    /// The union's 128 bytes (payload then tail), if the payload holds no guest handle.
    pub(crate) fn union_bytes(&self) -> Option<[u8; UNION_SIZE]> {
        join_union(self.u.plain_bytes()?, self.tail.as_bytes())
    }

    /// Overwrite the union's 128 bytes, if the payload holds no guest handle. Returns whether it
    /// did.
    pub(crate) fn set_union_bytes(&mut self, bytes: &[u8; UNION_SIZE]) -> bool {
        match self.u.plain_bytes_mut() {
            Some(head) => split_union(bytes, head, self.tail.as_mut_bytes()),
            None => false,
        }
    }
}

impl<P: SysctlPayload + core::fmt::Debug> core::fmt::Debug for XenSysctl<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("XenSysctl")
            .field("cmd", &self.cmd)
            .field("interface_version", &self.interface_version)
            .field("u", &self.u)
            .finish_non_exhaustive()
    }
}

impl<P: SysctlPayload> AbiLayout for XenSysctl<P> {
    const LAYOUT: StructLayout = StructLayout {
        rust_name: "XenSysctl",
        c_type: Some("struct xen_sysctl"),
        size: core::mem::size_of::<Self>(),
        align: core::mem::align_of::<Self>(),
        fields: &[
            FieldLayout {
                name: "cmd",
                c_field: CField::Named("cmd"),
                offset: core::mem::offset_of!(Self, cmd),
                size: core::mem::size_of::<u32>(),
            },
            FieldLayout {
                name: "interface_version",
                c_field: CField::Named("interface_version"),
                offset: core::mem::offset_of!(Self, interface_version),
                size: core::mem::size_of::<u32>(),
            },
            FieldLayout {
                name: "u",
                c_field: P::UNION_MEMBER,
                offset: core::mem::offset_of!(Self, u),
                size: core::mem::size_of::<P>(),
            },
            FieldLayout {
                name: "tail",
                c_field: CField::Implicit,
                offset: core::mem::offset_of!(Self, tail),
                size: core::mem::size_of::<P::Tail>(),
            },
        ],
    };
}

pool_data!(XenDomctl where P: DomctlPayload);
pool_data!(XenSysctl where P: SysctlPayload);

abi_struct! {
    /// `struct xen_domctl` as raw bytes: the header, and the union undecoded. For reading
    /// untrusted bytes (the simulator, fuzzing); no entry point accepts it.
    #[derive(Clone, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_domctl")
    pub struct XenDomctlView {
        /// `XEN_DOMCTL_*`.
        pub cmd: u32,
        /// `XEN_DOMCTL_INTERFACE_VERSION` of the caller.
        pub interface_version: u32,
        /// The target domain.
        pub domain: DomId,
        /// Zero.
        pub pad: [u16; 3] => "_pad",
        /// The union, undecoded.
        pub u: [u64; 16],
    }
    size = 144;
}

abi_struct! {
    /// `struct xen_sysctl` as raw bytes: the header, and the union undecoded. For reading
    /// untrusted bytes (the simulator, fuzzing); no entry point accepts it.
    #[derive(Clone, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xen_sysctl")
    pub struct XenSysctlView {
        /// `XEN_SYSCTL_*`.
        pub cmd: u32,
        /// `XEN_SYSCTL_INTERFACE_VERSION` of the caller.
        pub interface_version: u32,
        /// The union, undecoded.
        pub u: [u64; 16],
    }
    size = 136;
}

impl XenDomctlView {
    /// The union's bytes.
    pub fn union_bytes(&self) -> &[u8] {
        self.u.as_bytes()
    }

    /// The union's bytes, mutably.
    pub fn union_bytes_mut(&mut self) -> &mut [u8] {
        self.u.as_mut_bytes()
    }
}

impl XenSysctlView {
    /// The union's bytes.
    pub fn union_bytes(&self) -> &[u8] {
        self.u.as_bytes()
    }

    /// The union's bytes, mutably.
    pub fn union_bytes_mut(&mut self) -> &mut [u8] {
        self.u.as_mut_bytes()
    }
}
