//! `xenctrl`: Xen hypercalls from safe Rust.
//!
//! Only pool-allocated, hypercall-safe memory can reach Xen: a [`BufferPool`] belongs to an open
//! handle and hands out [`HypercallBuffer`]s; only those become [`GuestHandle`]s, and the safe
//! hypercall entry points take their argument as a pool buffer too.

pub mod abi;
pub mod backend;
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench_support;
mod buffer;
mod ctrl;
mod domain;
mod error;
mod evtchn;
mod host;
pub mod interface;
mod memory;
mod pool;

pub use backend::privcmd::OpenOptions;
pub use backend::sim::{SimConfig, SimHypervisor};
pub use backend::MemorySource;
pub use buffer::{Bounce, Direction, GuestHandle, HypercallBuffer, In, InOut, Out};
pub use ctrl::XenCtrl;
pub use domain::{CreateDomain, DomainInfo};
pub use error::{Errno, Error, FdProblem, FileKind, Op, Result};
pub use host::{pages_to_mib, PhysInfo, XenVersion};
pub use pool::{BufferPool, PoolStats, MAX_POOLED_PAGES};

/// Xen's page size on x86.
pub const PAGE_SIZE: usize = 4096;

pub use abi::DomId;
