//! Event channels: `/dev/xen/evtchn`, and the `EVTCHNOP_*` hypercalls a toolstack issues for
//! other domains.
//!
//! An event channel connects two ports, each in a domain; notifying one end sets the other
//! pending, and the domain owning it is interrupted. In a Linux domain, user space reaches
//! event channels through `/dev/xen/evtchn` ([`EventChannels`]): the kernel binds a port for
//! the open file, and when the port fires it masks it and queues its number for `read(2)`;
//! writing the number back (`unmask`) re-enables it. A port bound through a handle is a
//! [`BoundPort`], which unbinds (closes the port) when dropped.
//!
//! ```
//! use std::sync::Arc;
//!
//! use xenctrl::evtchn::EventChannels;
//! use xenctrl::{CreateDomain, DomainId, SimHypervisor, XenCtrl};
//!
//! let sim = Arc::new(SimHypervisor::default());
//! let xc = XenCtrl::on_simulator(Arc::clone(&sim))?;
//! let guest = DomainId::new(xc.create_domain(&CreateDomain::pv(1))?);
//! // Events reach a domain through its vCPUs (Xen 4.17 crashes on an event sent to a
//! // domain that has none yet).
//! xc.set_max_vcpus(guest.get(), 1)?;
//! // dom0's handle, and one acting as the guest (a simulated guest kernel's /dev/xen/evtchn).
//! let dom0 = EventChannels::on_simulator(Arc::clone(&sim), DomainId::DOM0)?;
//! let domu = EventChannels::on_simulator(Arc::clone(&sim), guest)?;
//!
//! // The guest offers a port to dom0, dom0 binds it.
//! let offered = domu.bind_unbound(DomainId::DOM0)?;
//! let backend = dom0.bind_interdomain(guest, offered.port())?;
//! // Xen sets a freshly bound interdomain port pending once: take it and re-enable it.
//! assert_eq!(dom0.wait()?, backend.port());
//! dom0.unmask(backend.port())?;
//!
//! backend.notify()?;
//! assert_eq!(domu.wait()?, offered.port());
//! domu.unmask(offered.port())?;
//! offered.notify()?;
//! assert_eq!(dom0.wait()?, backend.port());
//! # Ok::<(), xenctrl::Error>(())
//! ```
//!
//! The handle is [`AsFd`]: register it with epoll, mio or tokio (`AsyncFd`) and call
//! [`EventChannels::pending`] when it is readable. It is opened non-blocking; [`wait`] and
//! [`wait_timeout`] block in `poll(2)`.
//!
//! [`wait`]: EventChannels::wait
//! [`wait_timeout`]: EventChannels::wait_timeout
//!
//! # What provides each operation
//!
//! | operation | Linux (`/dev/xen/evtchn`) | Xen |
//! |---|---|---|
//! | [`bind_virq`](EventChannels::bind_virq) | `IOCTL_EVTCHN_BIND_VIRQ` (`0x44500`) | `EVTCHNOP_bind_virq` |
//! | [`bind_interdomain`](EventChannels::bind_interdomain) | `IOCTL_EVTCHN_BIND_INTERDOMAIN` (`0x84501`) | `EVTCHNOP_bind_interdomain` |
//! | [`bind_unbound`](EventChannels::bind_unbound) | `IOCTL_EVTCHN_BIND_UNBOUND_PORT` (`0x44502`) | `EVTCHNOP_alloc_unbound` |
//! | [`BoundPort`] drop, [`unbind`](EventChannels::unbind) | `IOCTL_EVTCHN_UNBIND` (`0x44503`) | `EVTCHNOP_close` |
//! | [`notify`](EventChannels::notify) | `IOCTL_EVTCHN_NOTIFY` (`0x44504`) | `EVTCHNOP_send` |
//! | [`reset`](EventChannels::reset) | `IOCTL_EVTCHN_RESET` (`0x4505`) | none (clears the kernel's ring) |
//! | [`restrict`](EventChannels::restrict) | `IOCTL_EVTCHN_RESTRICT_DOMID` (`0x24506`), **Linux 4.8+** | none |
//! | [`pending`](EventChannels::pending), [`wait`](EventChannels::wait) | `read(2)` of `u32` ports | the upcall |
//! | [`unmask`](EventChannels::unmask) | `write(2)` of `u32` ports | `EVTCHNOP_unmask` (if pending) |
//! | [`XenCtrl::evtchn_alloc_unbound_port`] | `IOCTL_PRIVCMD_HYPERCALL` | `EVTCHNOP_alloc_unbound` |
//! | [`XenCtrl::evtchn_status`] | `IOCTL_PRIVCMD_HYPERCALL` | `EVTCHNOP_status` |
//! | [`XenCtrl::evtchn_close`] | `IOCTL_PRIVCMD_HYPERCALL` | `EVTCHNOP_close` |
//! | [`XenCtrl::evtchn_reset`] | `IOCTL_PRIVCMD_HYPERCALL` | `EVTCHNOP_reset` |
//!
//! - The first six ioctls, `read` and `write` are as old as the driver (`CONFIG_XEN_DEV_EVTCHN`)
//!   and present in every kernel that can be a dom0 of the Xen versions this crate supports.
//! - `IOCTL_EVTCHN_RESTRICT_DOMID` arrived in Linux 4.8 (commit fbc872c38c8f, July 2016; Xen's
//!   libxenevtchn says "support added in Linux v4.8" where it adopted it, Xen commit
//!   6b6500b3cb). Older kernels answer `ENOSYS`, the driver's answer to an unknown ioctl.
//! - Newer kernels also have `IOCTL_EVTCHN_BIND` (number 7, for Xen's static event channels);
//!   it is not in Xen 4.17's headers and not offered here.
//! - On the Xen side every sub-op used exists in every Xen 4.x; `event_channel_op` is not
//!   versioned, so 4.17 through 4.22 behave alike. `EVTCHNOP_reset` of another domain needs
//!   that domain paused by the toolstack.
//!
//! The ioctl numbers are `_IOC(_IOC_NONE, 'E', nr, size)`, as in Linux's
//! `include/uapi/xen/evtchn.h` (Debian: `/usr/include/xen/sys/evtchn.h`).
//!
//! # The simulator
//!
//! [`EventChannels::on_simulator`] opens a simulated handle acting as any domain of a
//! [`SimHypervisor`]: the simulator models Xen's port table (states, pending and mask bits,
//! errors) and, for each handle, what Linux's driver does (the ring of pending ports, masking on
//! delivery, `ENOTCONN` for ports the handle did not bind). Its descriptor is a socket that is
//! readable exactly when the ring holds a port, so `poll`, epoll and tokio work on it as on the
//! device. Delivery happens at once in the process that raised the event. On a
//! [persistent](SimHypervisor::persistent) host the port table is shared by every process; a
//! handle picks up ports that another process set pending at its own process's next change to
//! the host, or when it reads an empty queue, and a blocking
//! [`wait`](EventChannels::wait) re-reads every 20 ms (the descriptor itself only wakes for
//! events raised in its own process).

mod linux;
mod ops;

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::abi::{self, DomId};
use crate::backend::sim::evtchn_dev::SimEvtchn;
use crate::backend::sim::SimHypervisor;
use crate::error::{Error, Op, Result};
use crate::ids::DomainId;
#[cfg(doc)]
use crate::XenCtrl;

pub use self::linux::EVTCHN_PATH;

/// An event-channel port (`evtchn_port_t`) of some domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(u32);

impl Port {
    /// The port numbered `port`.
    pub const fn new(port: u32) -> Self {
        Port(port)
    }

    /// The raw port number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl From<Port> for u32 {
    fn from(p: Port) -> u32 {
        p.0
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A virtual IRQ: an event Xen raises itself (`VIRQ_*` in `xen.h`).
///
/// Global ones (marked G in `xen.h`, e.g. [`Virq::DOM_EXC`]) go to dom0, and each can be bound
/// once per domain: in a dom0 whose xenstored runs, `VIRQ_DOM_EXC` is already taken (`EEXIST`).
/// Per-vCPU ones (`TIMER`, `DEBUG`, `XENOPROF`, `XENPMU`) are bound by the kernel itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Virq(u32);

impl Virq {
    /// Per-vCPU timer.
    pub const TIMER: Virq = Virq(abi::VIRQ_TIMER);
    /// Per-vCPU: dump debug information.
    pub const DEBUG: Virq = Virq(abi::VIRQ_DEBUG);
    /// Bytes received on Xen's emergency console.
    pub const CONSOLE: Virq = Virq(abi::VIRQ_CONSOLE);
    /// A domain shut down or was destroyed (what xenstored watches for `@releaseDomain`).
    pub const DOM_EXC: Virq = Virq(abi::VIRQ_DOM_EXC);
    /// The trace buffer has records.
    pub const TBUF: Virq = Virq(abi::VIRQ_TBUF);
    /// A domain paused for its debugger.
    pub const DEBUGGER: Virq = Virq(abi::VIRQ_DEBUGGER);
    /// Per-vCPU: a Xenoprof sample.
    pub const XENOPROF: Virq = Virq(abi::VIRQ_XENOPROF);
    /// Xen wrote to its console ring (any hypervisor message).
    pub const CON_RING: Virq = Virq(abi::VIRQ_CON_RING);
    /// A physical CPU changed state.
    pub const PCPU_STATE: Virq = Virq(abi::VIRQ_PCPU_STATE);
    /// A memory event.
    pub const MEM_EVENT: Virq = Virq(abi::VIRQ_MEM_EVENT);
    /// An Argo message arrived.
    pub const ARGO: Virq = Virq(abi::VIRQ_ARGO);
    /// Xen is low on heap memory.
    pub const ENOMEM: Virq = Virq(abi::VIRQ_ENOMEM);
    /// Per-vCPU performance-counter interrupt.
    pub const XENPMU: Virq = Virq(abi::VIRQ_XENPMU);

    /// The virtual IRQ numbered `virq` (Xen refuses numbers from `NR_VIRQS`, 24, on).
    pub const fn new(virq: u32) -> Self {
        Virq(virq)
    }

    /// The raw number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Virq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            abi::VIRQ_TIMER => "VIRQ_TIMER",
            abi::VIRQ_DEBUG => "VIRQ_DEBUG",
            abi::VIRQ_CONSOLE => "VIRQ_CONSOLE",
            abi::VIRQ_DOM_EXC => "VIRQ_DOM_EXC",
            abi::VIRQ_TBUF => "VIRQ_TBUF",
            abi::VIRQ_DEBUGGER => "VIRQ_DEBUGGER",
            abi::VIRQ_XENOPROF => "VIRQ_XENOPROF",
            abi::VIRQ_CON_RING => "VIRQ_CON_RING",
            abi::VIRQ_PCPU_STATE => "VIRQ_PCPU_STATE",
            abi::VIRQ_MEM_EVENT => "VIRQ_MEM_EVENT",
            abi::VIRQ_ARGO => "VIRQ_ARGO",
            abi::VIRQ_ENOMEM => "VIRQ_ENOMEM",
            abi::VIRQ_XENPMU => "VIRQ_XENPMU",
            n => return write!(f, "virq {n}"),
        };
        f.write_str(name)
    }
}

/// What a port is bound to, as `EVTCHNOP_status` reports it ([`XenCtrl::evtchn_status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelState {
    /// Not in use (free, or port 0, which Xen reserves).
    Closed,
    /// Waiting for `remote` to bind it.
    Unbound {
        /// The domain allowed to bind it.
        remote: DomainId,
    },
    /// Connected to `remote_port` of `remote`.
    Interdomain {
        /// The other end's domain.
        remote: DomainId,
        /// The other end's port.
        remote_port: Port,
    },
    /// Bound to a physical IRQ.
    Pirq(u32),
    /// Bound to a virtual IRQ.
    Virq(Virq),
    /// Bound to an inter-processor interrupt.
    Ipi,
    /// A status this crate does not know (`EVTCHNSTAT_*`), kept as Xen gave it.
    Unknown(u32),
}

/// A port's status: what it is bound to, and the vCPU it notifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelStatus {
    /// What the port is bound to.
    pub state: ChannelState,
    /// The vCPU it notifies (the kernel may move an interdomain port between vCPUs).
    pub vcpu: u32,
}

impl ChannelStatus {
    pub(crate) fn from_abi(s: &abi::EvtchnStatus) -> Self {
        let remote = DomainId::new(s.remote_dom());
        let state = match s.status {
            abi::EVTCHNSTAT_closed => ChannelState::Closed,
            abi::EVTCHNSTAT_unbound => ChannelState::Unbound { remote },
            abi::EVTCHNSTAT_interdomain => ChannelState::Interdomain {
                remote,
                remote_port: Port(s.u_port),
            },
            abi::EVTCHNSTAT_pirq => ChannelState::Pirq(s.u_word),
            abi::EVTCHNSTAT_virq => ChannelState::Virq(Virq(s.u_word)),
            abi::EVTCHNSTAT_ipi => ChannelState::Ipi,
            other => ChannelState::Unknown(other),
        };
        ChannelStatus {
            state,
            vcpu: s.vcpu,
        }
    }
}

/// The OS seam: `/dev/xen/evtchn` on Linux, or the simulator's model of it. Ports are raw
/// numbers here, errors the errno the driver answers.
pub(crate) trait Device: Send + Sync + fmt::Debug {
    /// `IOCTL_EVTCHN_BIND_INTERDOMAIN`: the new local port.
    fn bind_interdomain(&self, remote: DomId, remote_port: u32) -> Result<u32, Errno>;
    /// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`: the new local port.
    fn bind_unbound(&self, remote: DomId) -> Result<u32, Errno>;
    /// `IOCTL_EVTCHN_BIND_VIRQ`: the new local port.
    fn bind_virq(&self, virq: u32) -> Result<u32, Errno>;
    /// `IOCTL_EVTCHN_UNBIND`.
    fn unbind(&self, port: u32) -> Result<(), Errno>;
    /// `IOCTL_EVTCHN_NOTIFY`.
    fn notify(&self, port: u32) -> Result<(), Errno>;
    /// `IOCTL_EVTCHN_RESTRICT_DOMID`.
    fn restrict(&self, domid: DomId) -> Result<(), Errno>;
    /// `IOCTL_EVTCHN_RESET`.
    fn reset(&self) -> Result<(), Errno>;
    /// `write(2)`: re-enable ports this handle bound (others are ignored).
    fn unmask(&self, ports: &[u32]) -> Result<(), Errno>;
    /// `read(2)` without blocking: how many ports were read; `EAGAIN` when none is pending,
    /// `EFBIG` when the ring overflowed.
    fn read(&self, ports: &mut [u32]) -> Result<usize, Errno>;
    /// A descriptor that is readable when a port is pending.
    fn fd(&self) -> BorrowedFd<'_>;
    /// How long a blocking wait may sleep in `poll` before reading again: `None` when the
    /// descriptor always wakes it (the device; the simulator within one process).
    fn poll_interval(&self) -> Option<Duration> {
        None
    }
}

/// An open `/dev/xen/evtchn` (or a simulated one): ports bound through it, and the queue of
/// those that fired.
///
/// Each bound port fires once, then stays masked until [`unmask`](EventChannels::unmask)ed;
/// notifications that arrive meanwhile are kept by Xen as one pending event, delivered at the
/// unmask. So: take a port from [`pending`](EventChannels::pending) or
/// [`wait`](EventChannels::wait), handle it, unmask it.
pub struct EventChannels {
    dev: Box<dyn Device>,
}

/// How many ports one `read(2)` asks for.
const READ_BATCH: usize = 64;

impl EventChannels {
    /// Open `/dev/xen/evtchn` (read-write, close-on-exec, non-blocking).
    ///
    /// # Errors
    ///
    /// [`Error::Open`] when the device is missing (not a Xen domain, no `xen-evtchn` module) or
    /// cannot be opened (not root).
    pub fn open() -> Result<Self> {
        Ok(EventChannels {
            dev: Box::new(linux::LinuxEvtchn::open()?),
        })
    }

    /// A simulated handle on `sim`, acting as `as_domain` (as `/dev/xen/evtchn` inside that
    /// domain would): dom0 for a backend or toolstack, a guest's id to play the guest's side.
    ///
    /// # Errors
    ///
    /// [`Error::EventChannel`] with `ESRCH` when the domain does not exist;
    /// [`Error::Open`] when the descriptor behind [`AsFd`] cannot be made.
    pub fn on_simulator(sim: Arc<SimHypervisor>, as_domain: DomainId) -> Result<Self> {
        Ok(EventChannels {
            dev: Box::new(SimEvtchn::open(sim, as_domain.get())?),
        })
    }

    /// Bind a fresh local port to `remote_port` of `remote`, which must be unbound and waiting
    /// for this domain (offered with `EVTCHNOP_alloc_unbound`). Xen sets the new port pending
    /// once, for notifications that may have been lost while the remote end was unbound.
    ///
    /// # Errors
    ///
    /// [`Error::EventChannel`] naming `remote` and `remote_port`: `ESRCH` (no such domain),
    /// `EINVAL` (the port is not unbound, or waits for another domain), `ENOSPC` (this domain
    /// has no free port), `EACCES` (the handle is [restricted](EventChannels::restrict) to
    /// another domain).
    pub fn bind_interdomain(&self, remote: DomainId, remote_port: Port) -> Result<BoundPort<'_>> {
        let port = self
            .dev
            .bind_interdomain(remote.get(), remote_port.get())
            .map_err(fail(
                Op::EvtchnBindInterdomain,
                Some(remote.get()),
                Some(remote_port.get()),
            ))?;
        Ok(self.bound(port))
    }

    /// Allocate a fresh local port that `remote` may bind, bound to this handle.
    ///
    /// # Errors
    ///
    /// [`Error::EventChannel`] naming `remote`: `ENOSPC` (no free port), `EACCES` (the handle
    /// is restricted). Xen does not check that `remote` exists.
    pub fn bind_unbound(&self, remote: DomainId) -> Result<BoundPort<'_>> {
        let port = self.dev.bind_unbound(remote.get()).map_err(fail(
            Op::EvtchnBindUnbound,
            Some(remote.get()),
            None,
        ))?;
        Ok(self.bound(port))
    }

    /// Bind a fresh local port to `virq` (on vCPU 0).
    ///
    /// # Errors
    ///
    /// [`Error::EventChannel`]: `EEXIST` (this domain has it bound already, e.g. xenstored holds
    /// [`Virq::DOM_EXC`] in dom0), `EINVAL` (no such virtual IRQ), `EACCES` (the handle is
    /// restricted).
    pub fn bind_virq(&self, virq: Virq) -> Result<BoundPort<'_>> {
        let port = self
            .dev
            .bind_virq(virq.get())
            .map_err(fail(Op::EvtchnBindVirq, None, None))?;
        Ok(self.bound(port))
    }

    fn bound(&self, port: u32) -> BoundPort<'_> {
        BoundPort {
            evtchn: self,
            port: Port(port),
        }
    }

    /// Unbind `port` (close it): for ports kept with [`BoundPort::into_port`].
    ///
    /// # Errors
    ///
    /// [`Error::EventChannel`]: `ENOTCONN` (this handle has not bound it), `EINVAL` (beyond
    /// the kernel's port range).
    pub fn unbind(&self, port: Port) -> Result<()> {
        self.dev
            .unbind(port.get())
            .map_err(fail(Op::EvtchnUnbind, None, Some(port.get())))
    }

    /// Notify the other end of `port`, a port this handle bound (a port still unbound drops
    /// the notification, as Xen does).
    ///
    /// The other end's domain must have its vCPUs ([`XenCtrl::set_max_vcpus`]): Xen 4.17 takes
    /// a fatal page fault, and the whole host goes down, when an event is sent to a domain that
    /// has none yet (the simulated host crashes too: this and every later call answer `EIO`).
    ///
    /// # Errors
    ///
    /// [`Error::EventChannel`] with `ENOTCONN` when this handle has not bound `port`.
    pub fn notify(&self, port: Port) -> Result<()> {
        self.dev
            .notify(port.get())
            .map_err(fail(Op::EvtchnNotify, None, Some(port.get())))
    }

    /// Re-enable `port` after it fired (`write(2)` of its number). Ports this handle did not
    /// bind, or that are enabled already, are ignored, as the driver does.
    ///
    /// # Errors
    ///
    /// [`Error::EventChannel`] if the write fails.
    pub fn unmask(&self, port: Port) -> Result<()> {
        self.dev
            .unmask(&[port.get()])
            .map_err(fail(Op::EvtchnUnmask, None, Some(port.get())))
    }

    /// Restrict the handle to `domain`: from now on it can only bind interdomain ports of that
    /// domain (no unbound ports, no virtual IRQs). Ports bound before stay usable. For
    /// deprivileging a backend once its channels are set up. Needs Linux 4.8.
    ///
    /// # Errors
    ///
    /// [`Error::EventChannel`] naming `domain`: `EACCES` (restricted already), `EINVAL`
    /// (domain 0 or a reserved id), `ENOSYS` (a kernel older than 4.8).
    pub fn restrict(&self, domain: DomainId) -> Result<()> {
        self.dev
            .restrict(domain.get())
            .map_err(fail(Op::EvtchnRestrict, Some(domain.get()), None))
    }

    /// Empty the queue of fired ports and clear an overflow ([`Error::EventsLost`]). Bindings
    /// stay; ports that fired stay masked until unmasked.
    ///
    /// # Errors
    ///
    /// [`Error::EventChannel`] if the ioctl fails.
    pub fn reset(&self) -> Result<()> {
        self.dev
            .reset()
            .map_err(fail(Op::EvtchnResetRing, None, None))
    }

    /// The ports that fired, without blocking: an iterator that reads the queue until it is
    /// empty. Each port stays masked until [`unmask`](EventChannels::unmask)ed.
    pub fn pending(&self) -> Pending<'_> {
        Pending {
            evtchn: self,
            buf: [0; READ_BATCH],
            at: 0,
            len: 0,
            done: false,
        }
    }

    /// One fired port, or `None` if none is queued.
    fn try_read_one(&self) -> Result<Option<Port>> {
        let mut one = [0u32; 1];
        match self.dev.read(&mut one) {
            Ok(0) | Err(Errno::EAGAIN) => Ok(None),
            Ok(_) => Ok(Some(Port(one[0]))),
            Err(e) => Err(read_error(e)),
        }
    }

    /// Block until a port fires, and return it.
    ///
    /// # Errors
    ///
    /// [`Error::EventsLost`] after an overflow; [`Error::EventChannel`] if `poll` or `read`
    /// fails.
    pub fn wait(&self) -> Result<Port> {
        loop {
            if let Some(p) = self.try_read_one()? {
                return Ok(p);
            }
            let timeout = self
                .dev
                .poll_interval()
                .map_or(PollTimeout::NONE, poll_timeout);
            self.poll(timeout)?;
        }
    }

    /// Block until a port fires or `timeout` passes.
    ///
    /// # Errors
    ///
    /// As for [`EventChannels::wait`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<Port>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(p) = self.try_read_one()? {
                return Ok(Some(p));
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return Ok(None);
            }
            let left = self.dev.poll_interval().map_or(left, |i| i.min(left));
            self.poll(poll_timeout(left))?;
        }
    }

    fn poll(&self, timeout: PollTimeout) -> Result<()> {
        let mut fds = [PollFd::new(self.dev.fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => Ok(()),
            Err(e) => Err(fail(Op::EvtchnWait, None, None)(e)),
        }
    }
}

/// `timeout` in whole milliseconds, rounded up (so a wait never spins on a zero timeout) and
/// capped at what `poll` takes.
fn poll_timeout(timeout: Duration) -> PollTimeout {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}

fn fail(op: Op, domid: Option<DomId>, port: Option<u32>) -> impl FnOnce(Errno) -> Error {
    move |source| Error::EventChannel {
        op,
        domid: domid.map(DomainId::new),
        port: port.map(Port),
        source,
    }
}

fn read_error(e: Errno) -> Error {
    if e == Errno::EFBIG {
        Error::EventsLost
    } else {
        fail(Op::EvtchnRead, None, None)(e)
    }
}

impl AsFd for EventChannels {
    /// The device's descriptor (a stand-in socket on the simulator): readable when a port has
    /// fired. Use it only to wait for readiness; read ports with
    /// [`pending`](EventChannels::pending).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dev.fd()
    }
}

impl fmt::Debug for EventChannels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventChannels")
            .field("dev", &self.dev)
            .finish()
    }
}

/// The ports that fired, read without blocking ([`EventChannels::pending`]). Ends when the
/// queue is empty, or after yielding an error.
#[derive(Debug)]
pub struct Pending<'a> {
    evtchn: &'a EventChannels,
    buf: [u32; READ_BATCH],
    at: usize,
    len: usize,
    done: bool,
}

impl Iterator for Pending<'_> {
    type Item = Result<Port>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at == self.len {
            if self.done {
                return None;
            }
            match self.evtchn.dev.read(&mut self.buf) {
                Ok(0) | Err(Errno::EAGAIN) => {
                    self.done = true;
                    return None;
                }
                Ok(n) => {
                    self.at = 0;
                    self.len = n.min(READ_BATCH);
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(read_error(e)));
                }
            }
        }
        let port = self.buf[self.at];
        self.at += 1;
        Some(Ok(Port(port)))
    }
}

/// A port bound through an [`EventChannels`] handle, which it borrows; dropping it unbinds
/// (closes) the port.
///
/// ```compile_fail,E0505
/// # use std::sync::Arc;
/// # use xenctrl::evtchn::EventChannels;
/// # use xenctrl::{DomainId, SimHypervisor};
/// let evtchn = EventChannels::on_simulator(Arc::new(SimHypervisor::default()), DomainId::DOM0)?;
/// let port = evtchn.bind_unbound(DomainId::DOM0)?;
/// drop(evtchn); // the port cannot outlive its handle
/// port.notify()?;
/// # Ok::<(), xenctrl::Error>(())
/// ```
#[must_use = "dropping a BoundPort unbinds it at once"]
pub struct BoundPort<'a> {
    evtchn: &'a EventChannels,
    port: Port,
}

impl BoundPort<'_> {
    /// The local port.
    pub fn port(&self) -> Port {
        self.port
    }

    /// Notify the other end ([`EventChannels::notify`]).
    ///
    /// # Errors
    ///
    /// As for [`EventChannels::notify`].
    pub fn notify(&self) -> Result<()> {
        self.evtchn.notify(self.port)
    }

    /// Re-enable the port after it fired ([`EventChannels::unmask`]).
    ///
    /// # Errors
    ///
    /// As for [`EventChannels::unmask`].
    pub fn unmask(&self) -> Result<()> {
        self.evtchn.unmask(self.port)
    }

    /// Unbind now, reporting a failure that dropping would ignore.
    ///
    /// # Errors
    ///
    /// As for [`EventChannels::unbind`].
    pub fn unbind(self) -> Result<()> {
        let (evtchn, port) = (self.evtchn, self.port);
        std::mem::forget(self);
        evtchn.unbind(port)
    }

    /// Keep the port bound without the borrow: it stays bound until
    /// [`EventChannels::unbind`] or until the handle is closed (which unbinds every port).
    pub fn into_port(self) -> Port {
        let port = self.port;
        std::mem::forget(self);
        port
    }
}

impl Drop for BoundPort<'_> {
    fn drop(&mut self) {
        let _ = self.evtchn.unbind(self.port);
    }
}

impl fmt::Debug for BoundPort<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundPort")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_timeouts_round_up_to_whole_milliseconds() {
        assert_eq!(i32::from(poll_timeout(Duration::from_nanos(1))), 1);
        assert_eq!(i32::from(poll_timeout(Duration::from_millis(5))), 5);
        assert_eq!(i32::from(poll_timeout(Duration::from_micros(5001))), 6);
        assert_eq!(poll_timeout(Duration::MAX), PollTimeout::MAX);
    }

    #[test]
    fn status_decodes_every_state_and_keeps_unknown_ones() {
        let mut s = abi::EvtchnStatus {
            status: abi::EVTCHNSTAT_interdomain,
            vcpu: 1,
            u_word: 0xabcd_0007,
            u_port: 42,
            ..Default::default()
        };
        assert_eq!(
            ChannelStatus::from_abi(&s),
            ChannelStatus {
                state: ChannelState::Interdomain {
                    remote: DomainId::new(7),
                    remote_port: Port(42)
                },
                vcpu: 1
            }
        );
        s.status = abi::EVTCHNSTAT_virq;
        s.u_word = 3;
        assert_eq!(
            ChannelStatus::from_abi(&s).state,
            ChannelState::Virq(Virq::DOM_EXC)
        );
        s.status = 99;
        assert_eq!(ChannelStatus::from_abi(&s).state, ChannelState::Unknown(99));
    }
}
