//! The simulated `sched_op` hypercall: the sub-op a toolstack issues, `SCHEDOP_remote_shutdown`
//! (Xen 4.17's `do_sched_op` and `domain_shutdown`).

// The ABI constants keep their C spelling, and are matched on here.
#![allow(non_upper_case_globals)]

use nix::errno::Errno;
use zerocopy::{FromZeros, IntoBytes};

use super::memory::GuestMemory;
use super::state::{SimDomainState, SimState, SIM_DOM0};
use crate::abi::{SCHEDOP_remote_shutdown, SchedRemoteShutdown};

/// `sched_op(cmd, arg)` from dom0.
pub(super) fn sched_op(
    state: &mut SimState,
    mem: &dyn GuestMemory,
    cmd: u64,
    arg: u64,
) -> Result<u64, Errno> {
    match cmd {
        SCHEDOP_remote_shutdown => {
            let mut a = SchedRemoteShutdown::new_zeroed();
            mem.read(arg, a.as_mut_bytes())?;
            remote_shutdown(state, a.domain_id, a.reason)
        }
        // The guest-only sub-ops (yield, block, shutdown, poll, ...) are not the toolstack's.
        _ => Err(Errno::ENOSYS),
    }
}

/// What Xen does: `ESRCH` for a missing domain; otherwise `domain_shutdown(d, (u8)reason)`,
/// which keeps the first reason of a domain already shutting down, and succeeds.
///
/// Xen would shut the whole host down for the hardware domain (`hwdom_shutdown`); the
/// simulator does not model a host going down, and refuses with `EINVAL` (the typed entry
/// point refuses dom0 before asking, so only a raw hypercall gets here).
fn remote_shutdown(state: &mut SimState, domid: u16, reason: u32) -> Result<u64, Errno> {
    let d = state.domain(domid)?;
    if domid == SIM_DOM0 {
        return Err(Errno::EINVAL);
    }
    match d.state {
        SimDomainState::Alive => state.shutdown(domid, reason & 0xff)?,
        // Shutting down already (its first reason stands), or being destroyed.
        SimDomainState::Shutdown(_) | SimDomainState::Dying => {}
    }
    Ok(0)
}
