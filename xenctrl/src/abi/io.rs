//! The rings a guest shares with its console and xenstore backends (`io/console.h`,
//! `io/xs_wire.h`): one page each, whose frame the builder names in `start_info` (PV) or in
//! `HVM_PARAM_CONSOLE_PFN` / `HVM_PARAM_STORE_PFN` (PVH) and seeds in grant entries 0 and 1.
//!
//! Both are single-producer rings with free-running `u32` indices, masked by the ring's size
//! when used: the producer writes the bytes, then advances its index; the consumer reads up to
//! the producer's index, then advances its own. These structs give the layout (offsets with
//! `core::mem::offset_of!`); the pages are shared with another domain, so they are reached
//! through volatile copies, never as references. The layouts are the same in Xen 4.17 to 4.22.

#![allow(non_upper_case_globals)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::layout::{abi_consts, abi_struct};

abi_consts! {
    /// The constants of this module, for the conformance test.
    table consts;

    /// The size of each xenstore ring (`req` and `rsp`).
    XENSTORE_RING_SIZE: u32 = 1024;
    /// The most payload bytes a xenstore message may carry.
    XENSTORE_PAYLOAD_MAX: u32 = 4096;
    /// `xenstore_domain_interface.connection`: the steady state.
    XENSTORE_CONNECTED: u32 = 0;
    /// `xsd_sockmsg.type`: read a node (payload: the path, NUL-terminated).
    XS_READ: u32 = 2;
    /// `xsd_sockmsg.type`: write a node (payload: the path, NUL, then the value, unterminated).
    XS_WRITE: u32 = 11;
    /// `xsd_sockmsg.type`: the reply to a failed request (payload: the errno's name).
    XS_ERROR: u32 = 16;
}

abi_struct! {
    /// The console page (`struct xencons_interface`): `in` carries keystrokes to the guest,
    /// `out` what the guest prints. Indices are masked by the size of their ring.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xencons_interface")
    pub struct XenconsInterface {
        /// Bytes from the backend to the guest.
        pub input: [u8; 1024] => "in",
        /// Bytes from the guest to the backend.
        pub out: [u8; 2048],
        /// How far the guest has read `in`.
        pub in_cons: u32,
        /// How far the backend has written `in`.
        pub in_prod: u32,
        /// How far the backend has read `out`.
        pub out_cons: u32,
        /// How far the guest has written `out`.
        pub out_prod: u32,
    }
    size = 3088;
}

abi_struct! {
    /// The xenstore page (`struct xenstore_domain_interface`): `req` carries the guest's
    /// requests ([`XsdSockmsg`] headers, each followed by its payload), `rsp` the replies and
    /// watch events.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xenstore_domain_interface")
    pub struct XenstoreDomainInterface {
        /// Requests to the xenstore daemon.
        pub req: [u8; 1024],
        /// Replies and watch events.
        pub rsp: [u8; 1024],
        /// How far the daemon has read `req`.
        pub req_cons: u32,
        /// How far the guest has written `req`.
        pub req_prod: u32,
        /// How far the guest has read `rsp`.
        pub rsp_cons: u32,
        /// How far the daemon has written `rsp`.
        pub rsp_prod: u32,
        /// `XENSTORE_SERVER_FEATURE_*` the daemon offers.
        pub server_features: u32,
        /// [`XENSTORE_CONNECTED`], or a reconnection in progress.
        pub connection: u32,
        /// `XENSTORE_ERROR_*` the daemon found.
        pub error: u32,
    }
    size = 2076;
}

abi_struct! {
    /// The header of every xenstore message (`struct xsd_sockmsg`), followed by `len` bytes.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct xsd_sockmsg")
    pub struct XsdSockmsg {
        /// `XS_*`.
        pub kind: u32 => "type",
        /// Echoed in the reply.
        pub req_id: u32,
        /// The transaction, or 0.
        pub tx_id: u32,
        /// Payload bytes after the header.
        pub len: u32,
    }
    size = 16;
}
