//! Hooks for the benchmarks in `benches/` (feature `bench-internals`); not a stable API.
//!
//! They measure what the typed entry points add on top of the raw hypercall, with a backend
//! that does nothing, so only our own marshalling and dispatch is timed.

use std::io;
use std::sync::Arc;

use nix::errno::Errno;

use crate::backend::{anon, Backend, ChunkMapping, MemorySource};
use crate::ctrl::XenCtrl;
use crate::interface::XEN_4_17;

/// A backend whose hypercalls do nothing and succeed.
#[derive(Debug)]
struct NullBackend;

impl Backend for NullBackend {
    fn name(&self) -> &'static str {
        "null"
    }

    fn memory_source(&self) -> MemorySource {
        MemorySource::LockedAnonymous
    }

    fn map_chunk(&self, len: usize) -> io::Result<ChunkMapping> {
        anon::map(len)
    }

    fn unmap_chunk(&self, chunk: ChunkMapping) {
        anon::unmap(chunk);
    }

    unsafe fn hypercall(&self, op: u64, args: [u64; 5]) -> Result<u64, Errno> {
        std::hint::black_box((op, args));
        Ok(0)
    }
}

/// A handle on the null backend, speaking Xen 4.17's interface (no probe is issued).
pub fn null_ctrl() -> XenCtrl {
    XenCtrl::with_backend_and_profile(Arc::new(NullBackend), &XEN_4_17)
}

/// The raw hypercall on `xc`'s backend, with no marshalling: the baseline.
///
/// # Safety
///
/// As for the backend's hypercall: addresses in `args` must be live pool memory of `xc`.
pub unsafe fn raw_hypercall(xc: &XenCtrl, op: u64, args: [u64; 5]) -> Result<u64, Errno> {
    // SAFETY: forwarded from the caller.
    unsafe { xc.pool().backend().hypercall(op, args) }
}
