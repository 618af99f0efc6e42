//! `xenctrl`: Xen hypercalls from safe Rust.
//!
//! Only pool-allocated, hypercall-safe memory can reach Xen: a [`BufferPool`] belongs to an open
//! handle and hands out [`HypercallBuffer`]s; only those become [`GuestHandle`]s, and the safe
//! hypercall entry points take their argument as a pool buffer too.
//!
//! (Work in progress: the crate is being assembled by issue 2.)

pub mod abi;
pub mod backend;

/// Xen's page size on x86.
pub const PAGE_SIZE: usize = 4096;
