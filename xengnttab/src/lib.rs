//! `xengnttab`: Xen grant tables from user space, in safe Rust.
//!
//! - [`Gntdev`] (`/dev/xen/gntdev`) maps pages that *another* domain granted us, read-only
//!   ([`Gntdev::map_read_only`]) or writable ([`Gntdev::map`]), and copies to and from granted
//!   pages without mapping them ([`Gntdev::grant_copy`]).
//! - [`Gntalloc`] (`/dev/xen/gntalloc`) shares *our* pages with another domain
//!   ([`Gntalloc::share`]) and hands back the grant references to tell it.
//!
//! Both run on Linux in a Xen domain ([`Gntdev::open`], [`Gntalloc::open`]) or on xenctrl's
//! simulated host acting as any simulated domain ([`Gntdev::on_simulator`],
//! [`Gntalloc::on_simulator`]), with the same semantics and errors: the examples here run on the
//! simulator.
//!
//! # Safety of shared memory
//!
//! A granted page is memory another domain writes while we hold it, so it is never a Rust
//! `&[u8]` (which promises the bytes do not change) nor a `&mut [u8]` (which promises nobody
//! else even reads them). Every mapping hands out a [`VolatileSlice`] that borrows it: volatile
//! copies in and out, typed volatile reads and writes of plain data. A mapping borrows the
//! device handle it came from, and unmaps on drop; a read-only mapping's slice has no write
//! methods. None of this compiles:
//!
//! A mapping outliving its device:
//!
//! ```compile_fail,E0597
//! # use std::sync::Arc;
//! # use xengnttab::{DomainId, GrantRef, Gntdev};
//! # let sim = Arc::new(xenctrl::SimHypervisor::default());
//! let mapping = {
//!     let gntdev = Gntdev::on_simulator(sim, DomainId::DOM0);
//!     gntdev.map(DomainId::new(1), &[GrantRef::new(8)]).unwrap()
//! }; // gntdev dropped here, while `mapping` still borrows it
//! # drop(mapping);
//! ```
//!
//! Shared pages outliving their gntalloc handle:
//!
//! ```compile_fail,E0597
//! # use std::sync::Arc;
//! # use xengnttab::{DomainId, Gntalloc};
//! # let sim = Arc::new(xenctrl::SimHypervisor::default());
//! let pages = {
//!     let gntalloc = Gntalloc::on_simulator(sim, DomainId::DOM0);
//!     gntalloc.share(DomainId::new(1), 1, true).unwrap()
//! };
//! # drop(pages);
//! ```
//!
//! Writing through a read-only grant mapping:
//!
//! ```compile_fail,E0599
//! # use xengnttab::{GrantMapping, ReadOnly};
//! fn poke(m: &GrantMapping<'_, ReadOnly>) {
//!     m.slice().write_from(0, b"no").unwrap();
//! }
//! ```
//!
//! Borrowing shared memory as a plain slice:
//!
//! ```compile_fail,E0608
//! # use xengnttab::{GrantMapping, ReadWrite};
//! fn peek(m: &GrantMapping<'_, ReadWrite>) -> u8 {
//!     m.slice()[0]
//! }
//! ```
//!
//! ```compile_fail,E0599
//! # use xengnttab::SharedPages;
//! fn borrow<'a>(p: &'a SharedPages<'_>) -> &'a [u8] {
//!     p.slice().as_slice()
//! }
//! ```
//!
//! # Which versions provide what
//!
//! | operation | Linux driver and ioctl | since Linux | Xen hypercall |
//! |---|---|---|---|
//! | [`Gntdev::map`], [`Gntdev::map_read_only`] | gntdev `IOCTL_GNTDEV_MAP_GRANT_REF`, `mmap`, `IOCTL_GNTDEV_UNMAP_GRANT_REF` | 2.6.38 (gntdev merged, commit ab31523c2f) | `GNTTABOP_map_grant_ref` / `unmap_grant_ref` (Xen 3.0) |
//! | [`GrantMapping::set_unmap_notify`] | `IOCTL_GNTDEV_SET_UNMAP_NOTIFY` | 2.6.39 | none (`EVTCHNOP_send` for the event) |
//! | [`Gntalloc::share`] | gntalloc `IOCTL_GNTALLOC_ALLOC_GREF`, `mmap`, `IOCTL_GNTALLOC_DEALLOC_GREF` | 2.6.39 (gntalloc merged) | none: the guest writes its own grant table (grown with `GNTTABOP_setup_table` or `XENMEM_add_to_physmap`) |
//! | [`SharedPages::set_unmap_notify`] | `IOCTL_GNTALLOC_SET_UNMAP_NOTIFY` | 2.6.39 | none (`EVTCHNOP_send` for the event) |
//! | [`Gntdev::grant_copy`] | `IOCTL_GNTDEV_GRANT_COPY` | 4.6 (commit a4cdb556cae0) | `GNTTABOP_copy` (Xen 3.1) |
//!
//! Every Xen this workspace supports (4.17 and later) has the hypercalls. A kernel without an
//! ioctl answers `ENOTTY` (`EINVAL` on some older kernels), reported as the operation's error.
//! Tested on Xen 4.17 with Debian 12's Linux 6.1 (`tests/vm_gnttab.rs`).
//!
//! # Example
//!
//! A guest shares two pages with dom0; dom0 maps them, reads the guest's message and writes a
//! reply (on the simulator; on Xen the two halves run in two domains):
//!
//! ```
//! use std::sync::Arc;
//! use xenctrl::{SimHypervisor, backend::sim::SimState};
//! use xengnttab::{DomainId, Gntalloc, Gntdev};
//!
//! let sim = Arc::new(SimHypervisor::default());
//! let guest = DomainId::new(sim.with_state(|s| {
//!     let d = s.create_domain(0, &SimState::pv_config(1)).unwrap();
//!     s.set_max_mem(d, 1024).unwrap(); // room for the pages it shares
//!     d
//! }));
//!
//! // In the guest: share two writable pages with dom0 and write a message.
//! let gntalloc = Gntalloc::on_simulator(sim.clone(), guest);
//! let pages = gntalloc.share(DomainId::DOM0, 2, true)?;
//! pages.slice().write_from(0, b"ping")?;
//!
//! // In dom0: map the references the guest sent (over xenstore, say) and answer.
//! let gntdev = Gntdev::on_simulator(sim, DomainId::DOM0);
//! let mapping = gntdev.map(guest, pages.refs())?;
//! assert_eq!(mapping.slice().to_vec(0, 4)?, b"ping");
//! mapping.slice().write_from(4096, b"pong")?;
//! assert_eq!(pages.slice().to_vec(4096, 4)?, b"pong");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `DESIGN.md` in the crate says how the pieces fit.

mod error;
mod gntalloc;
mod gntdev;
mod ioctls;

pub use error::{CopyProblem, Error, Result};
pub use gntalloc::{Gntalloc, SharedPages, GNTALLOC_PATH};
pub use gntdev::{CopySegment, Gntdev, GrantMapping, GNTDEV_PATH};
pub use xenctrl::abi::GrantStatus;
pub use xenctrl::volatile::{Access, ReadOnly, ReadWrite, VolatileSlice};
pub use xenctrl::{DomainId, GrantRef};

/// An event-channel port of this domain, for an unmap notification to signal: xenctrl's
/// [`xenctrl::evtchn::Port`], as [`xenctrl::evtchn::EventChannels`] binds them.
pub use xenctrl::evtchn::Port as EventPort;

/// The raw number of a notification port (the one place that knows [`EventPort`]'s shape).
fn raw_port(port: EventPort) -> u32 {
    port.get()
}

/// What to do when a mapping or a share goes away, so that the other domain learns of it: clear
/// a byte of the shared memory (for example a ring's "connected" flag) and/or signal an event
/// channel. Set with [`GrantMapping::set_unmap_notify`] or [`SharedPages::set_unmap_notify`].
///
/// The byte is cleared in the shared page itself, before our side lets go of it, so the other
/// side reads 0 there; the event is sent after.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnmapNotify {
    clear_byte: Option<usize>,
    event: Option<EventPort>,
}

impl UnmapNotify {
    /// Clear the byte at `offset` (from the start of the mapping or share).
    pub fn clear_byte(offset: usize) -> Self {
        Self {
            clear_byte: Some(offset),
            event: None,
        }
    }

    /// Signal `port` (a port of this domain bound to the other side).
    pub fn send_event(port: EventPort) -> Self {
        Self {
            clear_byte: None,
            event: Some(port),
        }
    }

    /// This, and also signal `port`.
    pub fn and_send_event(self, port: EventPort) -> Self {
        Self {
            event: Some(port),
            ..self
        }
    }

    /// The byte to clear, if any.
    pub fn byte(&self) -> Option<usize> {
        self.clear_byte
    }

    /// The port to signal, if any.
    pub fn event(&self) -> Option<EventPort> {
        self.event
    }

    /// The `UNMAP_NOTIFY_*` action bits.
    fn action(&self) -> u32 {
        let mut a = 0;
        if self.clear_byte.is_some() {
            a |= ioctls::UNMAP_NOTIFY_CLEAR_BYTE;
        }
        if self.event.is_some() {
            a |= ioctls::UNMAP_NOTIFY_SEND_EVENT;
        }
        a
    }

    /// The simulator's form.
    fn to_sim(self) -> xenctrl::backend::sim::SimUnmapNotify {
        xenctrl::backend::sim::SimUnmapNotify {
            clear_byte: self.clear_byte,
            event: self.event.map(raw_port),
        }
    }
}

/// Check a notification against memory of `len` bytes: the page (index) it attaches to, or the
/// errno the kernel would give (`ENOENT` outside, `EINVAL` for a byte to clear in read-only
/// memory).
fn notify_page(
    notify: &UnmapNotify,
    len: usize,
    writable: bool,
) -> std::result::Result<usize, nix::errno::Errno> {
    match notify.clear_byte {
        Some(offset) if offset >= len => Err(nix::errno::Errno::ENOENT),
        Some(_) if !writable => Err(nix::errno::Errno::EINVAL),
        Some(offset) => Ok(offset / xenctrl::PAGE_SIZE),
        None => Ok(0),
    }
}
