//! The simulated `/dev/xen/evtchn`: what Linux's driver (`drivers/xen/evtchn.c`) does for each
//! open file, on top of the port model in `evtchn`.
//!
//! A handle acts as one domain. Binding goes through the model as that domain's hypercall would,
//! and records the port as the handle's in the host's [`Users`] table. When the model raises a
//! port ([`EvtchnEvent::Raised`]: pending while unmasked), the simulator, at the end of the same
//! step, finds the handle that bound it and does what Linux's interrupt handler does: mask the
//! port, clear its pending bit, and queue its number on the handle's ring, waking pollers. Writing
//! a port back unmasks it, and a notification that arrived meanwhile is delivered then.
//!
//! The handle's descriptor is one end of a socket pair: the other end holds one byte exactly
//! while the ring is not empty (or has overflowed), so the descriptor is readable exactly when
//! `read` would return ports, as the device's is, and `poll`, epoll and tokio work on it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use nix::errno::Errno;

use super::evtchn::EvtchnEvent;
use super::state::SimState;
use super::SimHypervisor;
use crate::abi::{DomId, EvtchnPort, DOMID_FIRST_RESERVED};
use crate::error::{Error, Op};
use crate::evtchn::Device;

/// Ports the kernel can name: the FIFO ABI's limit (Linux's `xen_evtchn_nr_channels()` in a
/// domain using it); `IOCTL_EVTCHN_UNBIND` refuses a larger port with `EINVAL`.
const NR_CHANNELS: u32 = 1 << 17;
/// The driver's first ring size; it doubles whenever a file binds more ports than it holds.
const MIN_RING: usize = 64;
/// One `read(2)` returns at most a page of ports.
const MAX_READ: usize = 4096 / 4;
/// On a host shared with other processes, how often a blocked wait looks for ports that
/// another process raised (this process's descriptor cannot be woken from there).
const SHARED_POLL: std::time::Duration = std::time::Duration::from_millis(20);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which handle bound each port of the host, in this process: the simulated kernels' view.
#[derive(Debug, Default)]
pub(crate) struct Users {
    bound: Mutex<HashMap<(DomId, EvtchnPort), Weak<User>>>,
}

impl Users {
    /// Hand the port events of the step just run to the handles (the state lock held). With
    /// `scan` (a host shared with other processes), also take every port this process's handles
    /// bound that another process left pending and unmasked.
    pub(super) fn deliver(&self, state: &mut SimState, scan: bool) {
        let events = state.take_evtchn_events();
        if events.is_empty() && !scan {
            return;
        }
        let mut bound = lock(&self.bound);
        for ev in events {
            match ev {
                EvtchnEvent::Closed(d, p) => {
                    if let Some(u) = bound.remove(&(d, p)).and_then(|w| w.upgrade()) {
                        u.forget(p);
                    }
                }
                EvtchnEvent::Raised(d, p) => {
                    if let Some(u) = bound.get(&(d, p)).and_then(Weak::upgrade) {
                        if state.evtchn_take(d, p) {
                            u.push(p);
                        }
                    }
                }
            }
        }
        if scan {
            bound.retain(|_, w| w.strong_count() > 0);
            for (&(d, p), w) in bound.iter() {
                if let Some(u) = w.upgrade() {
                    if state.evtchn_take(d, p) {
                        u.push(p);
                    }
                }
            }
        }
    }

    fn register(&self, domid: DomId, port: EvtchnPort, user: &Arc<User>) {
        lock(&self.bound).insert((domid, port), Arc::downgrade(user));
        user.adopt(port);
    }

    fn forget(&self, domid: DomId, port: EvtchnPort) {
        lock(&self.bound).remove(&(domid, port));
    }
}

/// One open file's state, as the driver's `struct per_user_data` holds it.
#[derive(Debug)]
struct User {
    domid: DomId,
    inner: Mutex<UserInner>,
    /// Holds a byte while the ring is not empty.
    signal: UnixStream,
    /// The descriptor handed out: readable while `signal` holds its byte.
    readable: UnixStream,
}

#[derive(Debug, Default)]
struct UserInner {
    /// Fired ports not yet read.
    ring: VecDeque<EvtchnPort>,
    /// The ring's size: 64, doubled as the file binds more ports than it holds.
    size: usize,
    overflow: bool,
    /// Ports this file bound.
    bound: BTreeSet<EvtchnPort>,
    /// `IOCTL_EVTCHN_RESTRICT_DOMID`'s domain.
    restrict: Option<DomId>,
    /// Whether `signal` holds its byte.
    signalled: bool,
}

impl User {
    fn adopt(&self, port: EvtchnPort) {
        let mut g = lock(&self.inner);
        g.bound.insert(port);
        let mut size = g.size.max(MIN_RING);
        while size < g.bound.len() {
            size *= 2;
        }
        g.size = size;
    }

    /// The port was closed behind the file's back (its domain destroyed or reset): it is no
    /// longer the file's. (Linux would keep it, and `BUG()` when unbinding it later.)
    fn forget(&self, port: EvtchnPort) {
        lock(&self.inner).bound.remove(&port);
    }

    /// `evtchn_interrupt`: queue the port, or note the overflow.
    fn push(&self, port: EvtchnPort) {
        let mut g = lock(&self.inner);
        if g.ring.len() < g.size {
            g.ring.push_back(port);
        } else {
            g.overflow = true;
        }
        self.update_signal(&mut g);
    }

    /// Make the descriptor readable exactly when there is something to read.
    fn update_signal(&self, g: &mut UserInner) {
        let want = !g.ring.is_empty() || g.overflow;
        if want && !g.signalled {
            // One byte in an empty socket buffer cannot block or fail short.
            g.signalled = (&self.signal).write(&[1]).is_ok_and(|n| n == 1);
        } else if !want && g.signalled {
            let mut drain = [0u8; 16];
            while (&self.readable).read(&mut drain).is_ok_and(|n| n > 0) {}
            g.signalled = false;
        }
    }
}

/// A simulated `/dev/xen/evtchn` handle acting as one domain of a [`SimHypervisor`].
#[derive(Debug)]
pub(crate) struct SimEvtchn {
    sim: Arc<SimHypervisor>,
    user: Arc<User>,
}

impl SimEvtchn {
    /// Open a handle acting as `domid`.
    pub(crate) fn open(sim: Arc<SimHypervisor>, domid: DomId) -> Result<Self, Error> {
        let exists = sim
            .query(|s| s.domain(domid).is_ok())
            .map_err(|source| Error::Open {
                path: "the simulated host's state file",
                source,
            })?;
        if !exists {
            return Err(Error::EventChannel {
                op: Op::EvtchnOpen,
                domid: Some(crate::DomainId::new(domid)),
                port: None,
                source: Errno::ESRCH,
            });
        }
        let socket = |e: io::Error| Error::Open {
            path: "a socket pair for a simulated /dev/xen/evtchn",
            source: e,
        };
        let (signal, readable) = UnixStream::pair().map_err(socket)?;
        signal.set_nonblocking(true).map_err(socket)?;
        readable.set_nonblocking(true).map_err(socket)?;
        let user = Arc::new(User {
            domid,
            inner: Mutex::new(UserInner::default()),
            signal,
            readable,
        });
        Ok(SimEvtchn { sim, user })
    }

    /// Run one step of the model as this handle's domain, delivering what it raised.
    fn step<R>(&self, f: impl FnOnce(&mut SimState) -> Result<R, Errno>) -> Result<R, Errno> {
        // A state file that cannot be read or written is the simulated host failing.
        self.sim.transact(f).unwrap_or(Err(Errno::EIO))
    }

    /// A bind: `EACCES` if the handle is restricted to another domain than `remote` (or at
    /// all, for `remote == None`), else run `bind` and make the port this handle's.
    fn bind(
        &self,
        remote: Option<DomId>,
        bind: impl FnOnce(&mut SimState, DomId) -> Result<EvtchnPort, Errno>,
    ) -> Result<u32, Errno> {
        if let Some(r) = lock(&self.user.inner).restrict {
            if remote != Some(r) {
                return Err(Errno::EACCES);
            }
        }
        let domid = self.user.domid;
        self.step(|s| {
            let port = bind(s, domid)?;
            self.sim.evtchn_users.register(domid, port, &self.user);
            Ok(port)
        })
    }

    fn is_bound(&self, port: u32) -> bool {
        lock(&self.user.inner).bound.contains(&port)
    }
}

impl Device for SimEvtchn {
    fn bind_interdomain(&self, remote: DomId, remote_port: u32) -> Result<u32, Errno> {
        self.bind(Some(remote), |s, me| {
            s.evtchn_bind_interdomain(me, remote, remote_port)
        })
    }

    fn bind_unbound(&self, remote: DomId) -> Result<u32, Errno> {
        self.bind(None, |s, me| {
            s.evtchn_alloc_unbound(me, crate::abi::DOMID_SELF, remote)
        })
    }

    fn bind_virq(&self, virq: u32) -> Result<u32, Errno> {
        self.bind(None, |s, me| s.evtchn_bind_virq(me, virq))
    }

    fn unbind(&self, port: u32) -> Result<(), Errno> {
        if port >= NR_CHANNELS {
            return Err(Errno::EINVAL);
        }
        if !lock(&self.user.inner).bound.remove(&port) {
            return Err(Errno::ENOTCONN);
        }
        let domid = self.user.domid;
        self.step(|s| {
            self.sim.evtchn_users.forget(domid, port);
            // Closed behind the kernel's back already: Linux would BUG(); nothing to do here.
            let _ = s.evtchn_close(domid, port);
            Ok(())
        })
    }

    fn notify(&self, port: u32) -> Result<(), Errno> {
        if !self.is_bound(port) {
            return Err(Errno::ENOTCONN);
        }
        let domid = self.user.domid;
        // The driver ignores what `EVTCHNOP_send` answers.
        self.step(|s| {
            let _ = s.evtchn_send(domid, port);
            Ok(())
        })
    }

    fn restrict(&self, domid: DomId) -> Result<(), Errno> {
        let mut g = lock(&self.user.inner);
        if g.restrict.is_some() {
            return Err(Errno::EACCES);
        }
        if domid == 0 || domid >= DOMID_FIRST_RESERVED {
            return Err(Errno::EINVAL);
        }
        g.restrict = Some(domid);
        Ok(())
    }

    fn reset(&self) -> Result<(), Errno> {
        let mut g = lock(&self.user.inner);
        g.ring.clear();
        g.overflow = false;
        self.user.update_signal(&mut g);
        Ok(())
    }

    fn unmask(&self, ports: &[u32]) -> Result<(), Errno> {
        let mine: Vec<u32> = {
            let g = lock(&self.user.inner);
            ports
                .iter()
                .copied()
                .filter(|p| g.bound.contains(p))
                .collect()
        };
        if mine.is_empty() {
            return Ok(());
        }
        let domid = self.user.domid;
        self.step(|s| {
            for p in mine {
                // Only a port that fired (the driver's `!enabled`) is re-enabled.
                let masked = s
                    .domain(domid)
                    .is_ok_and(|d| d.evtchn.port(p).is_some_and(|p| p.masked));
                if masked {
                    let _ = s.evtchn_unmask(domid, p);
                }
            }
            Ok(())
        })
    }

    fn read(&self, ports: &mut [u32]) -> Result<usize, Errno> {
        let mut g = lock(&self.user.inner);
        if g.ring.is_empty() && !g.overflow && self.sim.persist.is_some() {
            // Another process may have raised one of our ports: a step delivers it.
            drop(g);
            self.step(|_| Ok(()))?;
            g = lock(&self.user.inner);
        }
        if g.overflow {
            return Err(Errno::EFBIG);
        }
        if g.ring.is_empty() {
            return Err(Errno::EAGAIN);
        }
        let n = ports.len().min(g.ring.len()).min(MAX_READ);
        for slot in &mut ports[..n] {
            *slot = g.ring.pop_front().unwrap_or_default();
        }
        self.user.update_signal(&mut g);
        Ok(n)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.user.readable.as_fd()
    }

    fn poll_interval(&self) -> Option<std::time::Duration> {
        self.sim.persist.is_some().then_some(SHARED_POLL)
    }
}

impl Drop for SimEvtchn {
    /// Closing the file unbinds every port it bound.
    fn drop(&mut self) {
        let ports: Vec<u32> = std::mem::take(&mut lock(&self.user.inner).bound)
            .into_iter()
            .collect();
        if ports.is_empty() {
            return;
        }
        let domid = self.user.domid;
        let _ = self.step(|s| {
            for p in ports {
                self.sim.evtchn_users.forget(domid, p);
                let _ = s.evtchn_close(domid, p);
            }
            Ok(())
        });
    }
}
