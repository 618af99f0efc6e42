//! The Xen 4.17 public ABI: `#[repr(C)]` structs and constants. No `unsafe` here (forbidden).
//!
//! One module per area, mirroring Xen's public headers: [`xen`] (hypercall numbers, domain ids),
//! [`version`], [`domctl`], [`sysctl`], [`memory`], [`evtchn`] and [`grant_table`]; [`envelope`]
//! holds the typed `domctl`/`sysctl` envelopes. A domain builder's calls are in [`build`] (with
//! the x86-64 vCPU state in [`vcpu`]) and [`hvm`]; [`start_info`] is what a booting guest finds
//! in its memory, [`io`] the console and xenstore rings it shares with its backends. Everything
//! is re-exported here.
//!
//! - Structs are `#[repr(C)]` with explicit padding fields and a size assertion; those without a
//!   guest handle derive zerocopy's `FromBytes, IntoBytes, KnownLayout, Immutable`.
//! - Structs with a guest handle ([`XenMemoryReservation`], [`XenSysctlGetdomaininfolist`],
//!   [`GnttabSetupTable`]) derive only `KnownLayout, Immutable`, so neither bytes nor zeroes can
//!   become a handle through zerocopy ([`handle`] says why even `FromZeros` is out). Their
//!   fields are private: constructors set every count Xen trusts from the buffer the handle came
//!   from. Each has a `*View` twin with the same layout and a plain `u64` in the handle's
//!   place, for decoding untrusted bytes; no hypercall entry point accepts a view.
//! - Constants keep their C names, so that the C and Rust spellings are the same string.
//! - Values read from Xen that are enumerations stay open: see [`ShutdownReason`].
//! - [`layout`] lists every struct's field offsets and every constant's value; the conformance
//!   test (`tests/abi_conformance.rs`) compares them with the C headers.

#![forbid(unsafe_code)]

pub mod build;
pub mod domctl;
pub mod envelope;
pub mod evtchn;
pub mod grant_table;
pub mod handle;
pub mod hvm;
pub mod io;
pub mod layout;
pub mod memory;
pub mod sched;
pub mod start_info;
pub mod sysctl;
pub mod vcpu;
pub mod version;
pub mod xen;

pub use build::*;
pub use domctl::*;
pub use envelope::{
    DomctlPayload, SysctlPayload, XenDomctl, XenDomctlView, XenSysctl, XenSysctlView,
};
pub use evtchn::*;
pub use grant_table::*;
pub use handle::{PoolData, XenGuestHandle};
pub use hvm::*;
pub use io::*;
pub use memory::*;
pub use sched::*;
pub use start_info::*;
pub use sysctl::*;
pub use vcpu::*;
pub use version::*;
pub use xen::*;
