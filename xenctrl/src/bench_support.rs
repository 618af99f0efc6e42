//! Hooks for the benchmarks in `benches/` (feature `bench-internals`); not a stable API.
//!
//! They measure what the typed entry points add on top of the raw hypercall, with a backend
//! that does nothing, so only our own marshalling and dispatch is timed.

use std::io;
use std::sync::Arc;

use nix::errno::Errno;

use crate::backend::{anon, Backend, ChunkMapping, MemorySource};
use crate::buffer::HypercallBuffer;
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

    unsafe fn hypercall(&self, op: u64, args: [u64; 5]) -> Result<u64, Errno> {
        std::hint::black_box((op, args));
        Ok(0)
    }

    fn hypercall_confined(
        &self,
        op: u64,
        args: [u64; 5],
        arena: (u64, u64),
    ) -> Option<Result<u64, Errno>> {
        std::hint::black_box((op, args, arena));
        Some(Ok(0))
    }
}

/// A handle on the null backend, speaking Xen 4.17's interface (no probe is issued).
pub fn null_ctrl() -> XenCtrl {
    XenCtrl::with_backend_and_profile(Arc::new(NullBackend), &XEN_4_17)
}

/// The raw hypercall on `xc`'s backend, with no marshalling and no check of what the arguments
/// hold: the baseline of the hypercall benches, and the fuzzers' way into the simulator's
/// dispatcher. Safe because it runs only where nothing can reach memory outside `arena` (a
/// buffer of `xc`'s pool that the caller holds exclusively, of plain data: whatever is written
/// there stays integers, never a guest handle that a later typed call would trust):
///
/// - on the simulator, every address outside `arena` is `EFAULT`, even other pool memory;
/// - on [`null_ctrl`]'s backend nothing is read or written at all;
/// - on real Xen (privcmd), which would follow any address, it refuses with `ENOSYS` without
///   calling Xen; so does a pool that belongs to no hypervisor.
///
/// A handle-bearing struct is no arena: the simulator could leave a forged address in it.
///
/// ```compile_fail,E0277
/// use xenctrl::abi::{XenSysctl, XenSysctlGetdomaininfolist};
/// let xc = xenctrl::bench_support::null_ctrl();
/// let mut op = xc.pool().alloc::<XenSysctl<XenSysctlGetdomaininfolist>>().unwrap();
/// let _ = xenctrl::bench_support::raw_hypercall(&xc, 0, [0; 5], &mut op);
/// ```
///
/// # Errors
///
/// The backend's errno; `EXDEV` when `arena` is not of `xc`'s pool.
pub fn raw_hypercall<T: ?Sized + zerocopy::FromBytes>(
    xc: &XenCtrl,
    op: u64,
    args: [u64; 5],
    arena: &mut HypercallBuffer<'_, T>,
) -> Result<u64, Errno> {
    if !arena.belongs_to(xc.pool()) {
        return Err(Errno::EXDEV);
    }
    let range = (arena.addr(), std::mem::size_of_val::<T>(arena) as u64);
    xc.pool()
        .backend()
        .hypercall_confined(op, args, range)
        .unwrap_or(Err(Errno::ENOSYS))
}
