//! `xenctrl`: Xen hypercalls from safe Rust.
//!
//! Only pool-allocated, hypercall-safe memory can reach Xen: a [`BufferPool`] belongs to an open
//! handle and hands out [`HypercallBuffer`]s; only those become [`GuestHandle`]s, and the safe
//! hypercall entry points take their argument as a pool buffer too.
//!
//! The guarantee, precisely: safe code outside this crate, with every trait our types implement
//! (zerocopy's included), cannot make a call hand Xen an address outside a buffer of the calling
//! handle's own pool that the call exclusively borrows, nor a count larger than that buffer.
//!
//! - No handle-bearing type (a [`abi::XenGuestHandle`], a struct holding one, an envelope) can
//!   be made from bytes or integers: they implement no constructing zerocopy trait, not even
//!   `FromZeros` (which implies `TryFromBytes`). See [`abi::handle`].
//! - An envelope's `cmd` comes from its payload type, and each entry point writes it again.
//! - Counts Xen trusts are private fields set from the buffer's length.
//! - A pool buffer holds only [`abi::PoolData`]: types valid for every bit pattern, with no
//!   reference or pointer.
//! - Every guest handle of a call must lie in the calling handle's pool, or the call fails with
//!   [`Error::ForeignBuffer`] before Xen (or the simulator) sees it.
//!
//! Other domains' memory is mapped by [`XenCtrl::map_foreign`] and [`XenCtrl::map_resource`]
//! ([`foreign`]), and reached only through [`volatile`] access.
//!
//! [`x86`] holds pure architecture facts (4-level paging and a page-table walker) shared by
//! domain builders, the simulator and introspection tools.
//!
//! `DESIGN.md` in the crate says how each part is held and tested.

pub mod abi;
pub mod backend;
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench_support;
mod buffer;
pub mod build;
mod ctrl;
mod domain;
mod error;
pub mod evtchn;
pub mod foreign;
mod host;
pub mod hvm_context;
mod ids;
pub mod interface;
mod memory;
mod pool;
mod sched;
pub mod volatile;
pub mod x86;

pub use backend::privcmd::OpenOptions;
pub use backend::sim::{SimConfig, SimHypervisor};
pub use backend::MemorySource;
pub use buffer::{Bounce, Direction, GuestHandle, HypercallBuffer, In, InOut, Out};
pub use build::{HvmParam, TscInfo, TscMode};
pub use ctrl::XenCtrl;
pub use domain::{CreateDomain, DomainInfo};
pub use error::{Errno, Error, FdProblem, FileKind, Op, Result};
pub use foreign::{ForeignMapping, GrantFrames, PageError, PartialForeignMapping, Resource};
pub use host::{pages_to_mib, PhysInfo, XenVersion};
pub use ids::{DomainId, GrantRef};
pub use pool::{BufferPool, PoolStats, MAX_POOLED_PAGES};

/// Xen's page size on x86.
pub const PAGE_SIZE: usize = 4096;

pub use abi::DomId;
