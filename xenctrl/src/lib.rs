//! `xenctrl`: Xen hypercalls from safe Rust.
//!
//! Only pool-allocated, hypercall-safe memory can reach Xen: a [`BufferPool`] belongs to an open
//! handle and hands out [`HypercallBuffer`]s; only those become [`GuestHandle`]s, and the safe
//! hypercall entry points take their argument as a pool buffer too.

pub mod abi;
pub mod backend;
mod buffer;
mod error;
pub mod interface;
mod pool;

pub use backend::MemorySource;
pub use buffer::{Bounce, Direction, GuestHandle, HypercallBuffer, In, InOut, Out};
pub use error::{Errno, Error, Op, Result};
pub use pool::{BufferPool, PoolStats, MAX_POOLED_PAGES};

/// Xen's page size on x86.
pub const PAGE_SIZE: usize = 4096;

/// A domain id (`domid_t`).
pub type DomId = u16;
