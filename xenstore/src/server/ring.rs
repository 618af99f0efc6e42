//! The xenstore ring: how a guest reaches xenstored through a page it shares with it.
//!
//! A guest's xenstore connection is one page (`struct xenstore_domain_interface` in Xen's
//! `public/io/xs_wire.h`, described in `docs/misc/xenstore-ring.txt`) and an event channel:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1024 | `req`: requests, guest to daemon |
//! | 1024 | 1024 | `rsp`: replies and watch events, daemon to guest |
//! | 2048 | 4 | `req_cons` (the daemon's) |
//! | 2052 | 4 | `req_prod` (the guest's) |
//! | 2056 | 4 | `rsp_cons` (the guest's) |
//! | 2060 | 4 | `rsp_prod` (the daemon's) |
//! | 2064 | 4 | `server_features` |
//! | 2068 | 4 | `connection` |
//! | 2072 | 4 | `error` |
//!
//! Indices are free-running `u32`s; byte `i` of a stream lives at `i mod 1024`. The same
//! messages as on the socket ([`crate::wire`]) flow over the two queues, split anywhere,
//! including across the wrap.
//!
//! The page is the guest's and the guest is not trusted. [`XsRing`] reads it only through a
//! [`SharedPage`] (volatile copies, never a Rust slice over shared memory), reads each index
//! the guest owns once per step and checks it against its own copy of the index it owns (a
//! producer more than 1024 bytes ahead is [`RingError::Index`]), never trusts the guest's
//! copy of the daemon's indices, and lets [`Core`] parse what it copied out (a header
//! announcing more than [`PAYLOAD_MAX`](crate::wire::PAYLOAD_MAX) bytes is
//! [`RingError::Protocol`]). Memory per ring is bounded: one message being assembled, and the
//! per-connection output bound of [`Quotas`](super::Quotas).
//!
//! On an error the ring is marked broken the way the protocol says (the `error` field, which
//! [`FEATURE_ERROR`] advertises) and the connection is ignored, as C xenstored's
//! `ignore_connection` does; the domain stays introduced until it is released. A guest may
//! ask for a fresh connection by setting `connection` to [`RECONNECT`] ([`FEATURE_RECONNECTION`]),
//! which also clears a broken ring.
//!
//! Everything here is generic over the page ([`SharedPage`]) and its event channel
//! ([`Doorbell`]), so that it runs on an ordinary page in tests ([`MemPage`]), on the
//! simulated host, and on real Xen (a grant mapping or foreign mapping, and
//! `/dev/xen/evtchn`). A [`Server`](super::Server) reaches domains' rings through a
//! [`RingConnector`].
//!
//! ```
//! use xenstore::server::ring::{GuestEnd, MemPage, RingConnection, XsRing};
//! use xenstore::server::{Binding, Core};
//! use xenstore::wire::{self, MsgType};
//!
//! let mut core = Core::default();
//! core.introduce_domain(5)?;
//! let page = MemPage::new(); // on Xen: the guest's page, granted or foreign-mapped
//! let conn = core.add_connection(Binding::Domain(5))?;
//! let mut ring = RingConnection::new(XsRing::attach(page.clone())?, conn);
//!
//! // The guest writes a request into its queue; the daemon serves it and notifies.
//! let mut guest = GuestEnd::new(page);
//! guest.write(&wire::encode(MsgType::GetDomainPath, 7, 0, &[b"5\0"])?)?;
//! assert!(ring.pump(&mut core)?.notify);
//!
//! // The reply is in the response queue.
//! let mut rsp = [0; 64];
//! let n = guest.read(&mut rsp)?;
//! let reply = wire::parse_frame(&rsp[..n])?.expect("a whole reply");
//! assert_eq!((reply.header.ty, reply.header.req_id), (MsgType::GetDomainPath, 7));
//! assert_eq!(reply.payload, b"/local/domain/5\0");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::os::fd::BorrowedFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;

use super::core::{ConnId, Core};
use crate::wire::WireError;

/// Bytes in each of the two queues (`XENSTORE_RING_SIZE`).
pub const RING_SIZE: u32 = 1024;
/// Size of a page.
pub const PAGE_SIZE: usize = 4096;
/// Bytes of the page the interface uses (up to and including `error`).
pub const INTERFACE_SIZE: usize = 2076;

/// Byte offsets of the fields of `struct xenstore_domain_interface`.
pub mod offsets {
    /// `req[1024]`: requests, guest to daemon.
    pub const REQ: usize = 0;
    /// `rsp[1024]`: replies and watch events, daemon to guest.
    pub const RSP: usize = 1024;
    /// `req_cons`: how far the daemon has read requests.
    pub const REQ_CONS: usize = 2048;
    /// `req_prod`: how far the guest has written requests.
    pub const REQ_PROD: usize = 2052;
    /// `rsp_cons`: how far the guest has read replies.
    pub const RSP_CONS: usize = 2056;
    /// `rsp_prod`: how far the daemon has written replies.
    pub const RSP_PROD: usize = 2060;
    /// `server_features`: what the daemon offers ([`FEATURE_RECONNECTION`](super::FEATURE_RECONNECTION),
    /// [`FEATURE_ERROR`](super::FEATURE_ERROR)).
    pub const SERVER_FEATURES: usize = 2064;
    /// `connection`: [`CONNECTED`](super::CONNECTED) or [`RECONNECT`](super::RECONNECT).
    pub const CONNECTION: usize = 2068;
    /// `error`: why the daemon stopped serving the ring ([`RingFault::code`](super::RingFault::code)).
    pub const ERROR: usize = 2072;
}

/// `XENSTORE_SERVER_FEATURE_RECONNECTION`: the guest may reset its connection.
pub const FEATURE_RECONNECTION: u32 = 1;
/// `XENSTORE_SERVER_FEATURE_ERROR`: the daemon reports a broken ring in `error`.
pub const FEATURE_ERROR: u32 = 2;
/// `XENSTORE_CONNECTED`: the steady state of `connection`.
pub const CONNECTED: u32 = 0;
/// `XENSTORE_RECONNECT`: the guest asks for a fresh connection.
pub const RECONNECT: u32 = 1;

/// Volatile access to a page shared with another domain.
///
/// Implementations copy with volatile accesses (the other side writes while we read), move a
/// `u32` at an aligned offset in one access (an index is never torn), and never hand out a
/// Rust reference to the memory. Callers stay below [`size`](Self::size); [`XsRing::attach`]
/// checks that the page holds the whole interface.
pub trait SharedPage {
    /// Bytes that may be accessed.
    fn size(&self) -> usize;
    /// Copies `out.len()` bytes at `offset` out of the page.
    fn read_bytes(&self, offset: usize, out: &mut [u8]);
    /// Copies `data` into the page at `offset`.
    fn write_bytes(&self, offset: usize, data: &[u8]);
    /// Reads the `u32` at `offset` (aligned) in one access.
    fn read_u32(&self, offset: usize) -> u32;
    /// Writes the `u32` at `offset` (aligned) in one access.
    fn write_u32(&self, offset: usize, value: u32);
}

/// The event channel of a ring: notifying the other end.
pub trait Doorbell {
    /// Notifies the other end.
    ///
    /// # Errors
    ///
    /// The errno of the notification (the channel is not bound any more, for instance).
    fn notify(&self) -> Result<(), Errno>;
}

impl<T: SharedPage + ?Sized> SharedPage for Box<T> {
    fn size(&self) -> usize {
        (**self).size()
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        (**self).read_bytes(offset, out);
    }
    fn write_bytes(&self, offset: usize, data: &[u8]) {
        (**self).write_bytes(offset, data);
    }
    fn read_u32(&self, offset: usize) -> u32 {
        (**self).read_u32(offset)
    }
    fn write_u32(&self, offset: usize, value: u32) {
        (**self).write_u32(offset, value);
    }
}

impl<T: Doorbell + ?Sized> Doorbell for Box<T> {
    fn notify(&self) -> Result<(), Errno> {
        (**self).notify()
    }
}

/// A domain's store page and event channel, as a [`RingConnector`] hands them to the server.
/// Dropping it unmaps the page and unbinds the channel.
pub trait GuestRing: SharedPage + Doorbell + Send {}

impl<T: SharedPage + Doorbell + Send + ?Sized> GuestRing for T {}

/// How a [`Server`](super::Server) reaches guests' rings: it maps a domain's store page and
/// binds its event channel when the domain is introduced, and says when rings may have moved.
///
/// One connector serves every domain, as C xenstored has one `/dev/xen/evtchn` handle.
pub trait RingConnector: Send {
    /// Maps domain `domid`'s store page and binds its end `port` of the store event channel.
    /// `gfn` is the frame `XS_INTRODUCE` named (a machine frame for a PV domain, a guest frame
    /// for a translated one).
    ///
    /// # Errors
    ///
    /// The errno to answer the introduction with; the domain is then not introduced, as with
    /// C xenstored when it cannot map the ring.
    fn connect(&mut self, domid: u32, gfn: u64, port: u32) -> Result<Box<dyn GuestRing>, Errno>;

    /// A descriptor that is readable when some ring's event channel fired, if there is one.
    fn events(&self) -> Option<BorrowedFd<'_>>;

    /// Takes the events that fired (and re-enables their channels). The server then looks at
    /// every ring, so which channel fired does not matter.
    fn take_events(&mut self);

    /// How often to look at the rings even without an event: for event channels whose
    /// descriptor does not wake for every event (the simulated host picks up events raised by
    /// other processes only when asked). `None`: only on events.
    fn poll_interval(&self) -> Option<Duration>;
}

/// Which queue of a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    /// Requests, guest to daemon.
    Request,
    /// Replies and events, daemon to guest.
    Response,
}

/// The `error` codes of a broken ring (`XENSTORE_ERROR_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingFault {
    /// `XENSTORE_ERROR_COMM`: the event channel does not work.
    Communication,
    /// `XENSTORE_ERROR_RINGIDX`: an index is inconsistent.
    Index,
    /// `XENSTORE_ERROR_PROTO`: a message broke the protocol (payload too long).
    Protocol,
}

impl RingFault {
    /// The value written into the page's `error` field.
    pub fn code(self) -> u32 {
        match self {
            RingFault::Communication => 1,
            RingFault::Index => 2,
            RingFault::Protocol => 3,
        }
    }
}

/// Why a ring cannot be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The page is too small to hold the interface.
    #[error("the shared page holds {size} bytes, fewer than the {INTERFACE_SIZE} of the xenstore interface")]
    PageTooSmall {
        /// Its size.
        size: usize,
    },
    /// The guest's index is more than a ring ahead of ours (or behind it).
    #[error("the {queue:?} queue's indices are inconsistent: consumer {cons:#x}, producer {prod:#x} (at most {RING_SIZE} bytes apart)")]
    Index {
        /// Which queue.
        queue: Queue,
        /// Its consumer index.
        cons: u32,
        /// Its producer index.
        prod: u32,
    },
    /// The guest sent a message that breaks the protocol.
    #[error("the guest broke the protocol")]
    Protocol(#[source] WireError),
    /// The event channel could not be notified.
    #[error("cannot notify the ring's event channel")]
    Notify(#[source] Errno),
    /// The ring was marked broken before and is not served until the guest reconnects.
    #[error("the ring is broken ({0:?}) until the guest reconnects")]
    Broken(RingFault),
}

impl RingError {
    /// The `error` code this error marks the ring with.
    pub fn fault(&self) -> RingFault {
        match self {
            RingError::PageTooSmall { .. } | RingError::Index { .. } => RingFault::Index,
            RingError::Protocol(_) => RingFault::Protocol,
            RingError::Notify(_) => RingFault::Communication,
            RingError::Broken(f) => *f,
        }
    }
}

/// `n` (at most [`RING_SIZE`]) as an index increment.
fn advance(idx: u32, n: usize) -> u32 {
    idx.wrapping_add(u32::try_from(n).unwrap_or(RING_SIZE))
}

fn mask(idx: u32) -> usize {
    // RING_SIZE is a power of two; the result is below 1024.
    (idx & (RING_SIZE - 1)) as usize
}

/// The daemon's end of one xenstore ring: the two queues, moved through a [`SharedPage`].
///
/// The daemon keeps its own copies of the indices it owns (`req_cons`, `rsp_prod`) and only
/// publishes them; what the guest writes there is ignored.
#[derive(Debug)]
pub struct XsRing<P> {
    page: P,
    req_cons: u32,
    rsp_prod: u32,
    broken: Option<RingFault>,
}

impl<P: SharedPage> XsRing<P> {
    /// Takes over a freshly introduced domain's page as C xenstored does on `XS_INTRODUCE`:
    /// both queues empty (all four indices 0), no error, [`CONNECTED`], and
    /// [`FEATURE_RECONNECTION`] | [`FEATURE_ERROR`] advertised before any data moves.
    ///
    /// # Errors
    ///
    /// [`RingError::PageTooSmall`].
    pub fn attach(page: P) -> Result<Self, RingError> {
        if page.size() < INTERFACE_SIZE {
            return Err(RingError::PageTooSmall { size: page.size() });
        }
        let mut ring = XsRing {
            page,
            req_cons: 0,
            rsp_prod: 0,
            broken: None,
        };
        let features = ring.page.read_u32(offsets::SERVER_FEATURES);
        ring.page.write_u32(
            offsets::SERVER_FEATURES,
            features | FEATURE_RECONNECTION | FEATURE_ERROR,
        );
        ring.reset();
        Ok(ring)
    }

    /// The page.
    pub fn page(&self) -> &P {
        &self.page
    }

    /// Empties both queues (all four indices 0), clears `error` and sets `connection` to
    /// [`CONNECTED`]: the end of a reconnection.
    pub fn reset(&mut self) {
        self.req_cons = 0;
        self.rsp_prod = 0;
        self.broken = None;
        for off in [
            offsets::REQ_CONS,
            offsets::REQ_PROD,
            offsets::RSP_CONS,
            offsets::RSP_PROD,
            offsets::ERROR,
        ] {
            self.page.write_u32(off, 0);
        }
        fence(Ordering::SeqCst);
        self.page.write_u32(offsets::CONNECTION, CONNECTED);
    }

    /// Whether the guest asks for a fresh connection (`connection` is [`RECONNECT`]).
    pub fn reconnect_requested(&self) -> bool {
        self.page.read_u32(offsets::CONNECTION) == RECONNECT
    }

    /// Why the ring is broken, if it is.
    pub fn fault(&self) -> Option<RingFault> {
        self.broken
    }

    /// Marks the ring broken: `error` says why, and nothing moves until a reconnection.
    pub fn fail(&mut self, fault: RingFault) {
        self.broken = Some(fault);
        fence(Ordering::SeqCst);
        self.page.write_u32(offsets::ERROR, fault.code());
    }

    fn check(&self) -> Result<(), RingError> {
        match self.broken {
            Some(f) => Err(RingError::Broken(f)),
            None => Ok(()),
        }
    }

    /// Bytes of requests waiting, without consuming them.
    ///
    /// # Errors
    ///
    /// [`RingError::Index`] when the guest's producer is more than a ring ahead;
    /// [`RingError::Broken`].
    pub fn pending_requests(&self) -> Result<u32, RingError> {
        self.check()?;
        let prod = self.page.read_u32(offsets::REQ_PROD);
        let avail = prod.wrapping_sub(self.req_cons);
        if avail > RING_SIZE {
            return Err(RingError::Index {
                queue: Queue::Request,
                cons: self.req_cons,
                prod,
            });
        }
        Ok(avail)
    }

    /// Copies up to `out.len()` bytes of requests out of the ring and consumes them; returns
    /// how many.
    ///
    /// # Errors
    ///
    /// As [`pending_requests`](Self::pending_requests); nothing is consumed.
    pub fn read(&mut self, out: &mut [u8]) -> Result<usize, RingError> {
        let avail = self.pending_requests()?;
        // Read the producer before the data it covers.
        fence(Ordering::SeqCst);
        let n = out.len().min(avail as usize);
        let start = mask(self.req_cons);
        let first = n.min(RING_SIZE as usize - start);
        self.page
            .read_bytes(offsets::REQ + start, &mut out[..first]);
        self.page.read_bytes(offsets::REQ, &mut out[first..n]);
        // Finish reading before the guest may overwrite.
        fence(Ordering::SeqCst);
        self.req_cons = advance(self.req_cons, n);
        self.page.write_u32(offsets::REQ_CONS, self.req_cons);
        Ok(n)
    }

    /// Copies as much of `data` as fits into the response queue; returns how much.
    ///
    /// # Errors
    ///
    /// [`RingError::Index`] when the guest's consumer is inconsistent with our producer;
    /// [`RingError::Broken`]. Nothing is written.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, RingError> {
        self.check()?;
        let cons = self.page.read_u32(offsets::RSP_CONS);
        let used = self.rsp_prod.wrapping_sub(cons);
        if used > RING_SIZE {
            return Err(RingError::Index {
                queue: Queue::Response,
                cons,
                prod: self.rsp_prod,
            });
        }
        // Read the consumer before overwriting what it freed.
        fence(Ordering::SeqCst);
        let n = data.len().min((RING_SIZE - used) as usize);
        let start = mask(self.rsp_prod);
        let first = n.min(RING_SIZE as usize - start);
        self.page.write_bytes(offsets::RSP + start, &data[..first]);
        self.page.write_bytes(offsets::RSP, &data[first..n]);
        // The data before the producer that covers it.
        fence(Ordering::SeqCst);
        self.rsp_prod = advance(self.rsp_prod, n);
        self.page.write_u32(offsets::RSP_PROD, self.rsp_prod);
        Ok(n)
    }
}

/// What a [`RingConnection::pump`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pumped {
    /// Bytes or state moved: notify the guest.
    pub notify: bool,
    /// It stopped at its work bound with more to do: pump again soon.
    pub more: bool,
}

/// Rounds of one [`RingConnection::pump`]: each moves up to a ring's worth each way.
const PUMP_ROUNDS: usize = 16;

/// A ring served as a [`Core`] connection: what a [`Server`](super::Server) keeps for each
/// guest, and what tests and the fuzz target drive directly.
#[derive(Debug)]
pub struct RingConnection<P> {
    ring: XsRing<P>,
    conn: ConnId,
}

impl<P: SharedPage> RingConnection<P> {
    /// Serves `ring` as connection `conn` (added with [`Binding::Domain`](super::Binding)).
    pub fn new(ring: XsRing<P>, conn: ConnId) -> Self {
        RingConnection { ring, conn }
    }

    /// The connection in the core.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// The ring.
    pub fn ring(&self) -> &XsRing<P> {
        &self.ring
    }

    /// Empties the ring for a fresh connection ([`XsRing::reset`]): a domain introduced again.
    pub fn reset_ring(&mut self) {
        self.ring.reset();
    }

    /// Marks the ring broken ([`XsRing::fail`]); the caller ignores the connection.
    pub fn fail(&mut self, fault: RingFault) {
        self.ring.fail(fault);
    }

    /// Moves what can move: a reconnection the guest asked for, queued replies and events into
    /// the response queue, requests out of the request queue into the core (which answers
    /// them). Bounded work per call ([`Pumped::more`] says when there is more).
    ///
    /// A broken ring moves nothing until the guest asks to reconnect.
    ///
    /// # Errors
    ///
    /// A [`RingError`] when the guest has just broken the ring: the ring is then marked broken
    /// ([`XsRing::fail`]) and the connection ignored ([`Core::ignore_connection`]). Notify the
    /// guest, so that it sees the `error` field.
    pub fn pump(&mut self, core: &mut Core) -> Result<Pumped, RingError> {
        let mut done = Pumped::default();
        if self.ring.reconnect_requested() {
            core.reset_connection(self.conn);
            self.ring.reset();
            done.notify = true;
        }
        if self.ring.fault().is_some() {
            return Ok(done);
        }
        match self.pump_rounds(core, &mut done) {
            Ok(()) => Ok(done),
            Err(e) => {
                self.ring.fail(e.fault());
                core.ignore_connection(self.conn);
                Err(e)
            }
        }
    }

    fn pump_rounds(&mut self, core: &mut Core, done: &mut Pumped) -> Result<(), RingError> {
        let mut buf = [0u8; RING_SIZE as usize];
        for _ in 0..PUMP_ROUNDS {
            let mut progress = false;
            let out = core.output(self.conn);
            if !out.is_empty() {
                let n = self.ring.write(out)?;
                if n > 0 {
                    core.consume_output(self.conn, n);
                    progress = true;
                }
            }
            // Requests held back while output was over its bound go first.
            let before = core.output(self.conn).len();
            if core.wants_input(self.conn) && core.has_pending_input(self.conn) {
                core.process(self.conn)
                    .map_err(|e| RingError::Protocol(e.0))?;
            }
            if core.wants_input(self.conn) {
                let n = self.ring.read(&mut buf)?;
                if n > 0 {
                    core.receive(self.conn, &buf[..n])
                        .map_err(|e| RingError::Protocol(e.0))?;
                    progress = true;
                }
            }
            progress |= core.output(self.conn).len() != before;
            done.notify |= progress;
            if !progress {
                return Ok(());
            }
        }
        done.more = true;
        Ok(())
    }
}

/// The guest's end of a ring: what a guest kernel's xenbus driver does, for tests and for
/// stand-in guests. It writes requests and reads replies; like the daemon's end it keeps its
/// own copies of the indices it owns (`req_prod`, `rsp_cons`), read from the page when made.
#[derive(Debug)]
pub struct GuestEnd<P> {
    page: P,
    req_prod: u32,
    rsp_cons: u32,
}

impl<P: SharedPage> GuestEnd<P> {
    /// The guest's end of the ring in `page`, from the indices it holds now.
    pub fn new(page: P) -> Self {
        let req_prod = page.read_u32(offsets::REQ_PROD);
        let rsp_cons = page.read_u32(offsets::RSP_CONS);
        GuestEnd {
            page,
            req_prod,
            rsp_cons,
        }
    }

    /// The page.
    pub fn page(&self) -> &P {
        &self.page
    }

    /// Writes as much of `data` as fits into the request queue; returns how much.
    ///
    /// # Errors
    ///
    /// [`RingError::Index`] when the daemon's consumer index is inconsistent.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, RingError> {
        let cons = self.page.read_u32(offsets::REQ_CONS);
        let used = self.req_prod.wrapping_sub(cons);
        if used > RING_SIZE {
            return Err(RingError::Index {
                queue: Queue::Request,
                cons,
                prod: self.req_prod,
            });
        }
        fence(Ordering::SeqCst);
        let n = data.len().min((RING_SIZE - used) as usize);
        let start = mask(self.req_prod);
        let first = n.min(RING_SIZE as usize - start);
        self.page.write_bytes(offsets::REQ + start, &data[..first]);
        self.page.write_bytes(offsets::REQ, &data[first..n]);
        fence(Ordering::SeqCst);
        self.req_prod = advance(self.req_prod, n);
        self.page.write_u32(offsets::REQ_PROD, self.req_prod);
        Ok(n)
    }

    /// Reads up to `out.len()` bytes of replies and events; returns how many.
    ///
    /// # Errors
    ///
    /// [`RingError::Index`] when the daemon's producer index is inconsistent.
    pub fn read(&mut self, out: &mut [u8]) -> Result<usize, RingError> {
        let prod = self.page.read_u32(offsets::RSP_PROD);
        let avail = prod.wrapping_sub(self.rsp_cons);
        if avail > RING_SIZE {
            return Err(RingError::Index {
                queue: Queue::Response,
                cons: self.rsp_cons,
                prod,
            });
        }
        fence(Ordering::SeqCst);
        let n = out.len().min(avail as usize);
        let start = mask(self.rsp_cons);
        let first = n.min(RING_SIZE as usize - start);
        self.page
            .read_bytes(offsets::RSP + start, &mut out[..first]);
        self.page.read_bytes(offsets::RSP, &mut out[first..n]);
        fence(Ordering::SeqCst);
        self.rsp_cons = advance(self.rsp_cons, n);
        self.page.write_u32(offsets::RSP_CONS, self.rsp_cons);
        Ok(n)
    }

    /// The `error` field: why the daemon stopped serving the ring (0: it did not).
    pub fn error(&self) -> u32 {
        self.page.read_u32(offsets::ERROR)
    }

    /// Asks the daemon for a fresh connection (`connection` = [`RECONNECT`]); notify it next.
    /// Once it answers ([`reconnected`](Self::reconnected)), both queues start from 0.
    pub fn request_reconnect(&mut self) {
        self.page.write_u32(offsets::CONNECTION, RECONNECT);
    }

    /// Whether the daemon has finished a reconnection (`connection` is [`CONNECTED`] again);
    /// if so, this end starts over from the daemon's fresh indices.
    pub fn reconnected(&mut self) -> bool {
        if self.page.read_u32(offsets::CONNECTION) != CONNECTED {
            return false;
        }
        self.req_prod = self.page.read_u32(offsets::REQ_PROD);
        self.rsp_cons = self.page.read_u32(offsets::RSP_CONS);
        true
    }
}

/// An ordinary page of memory standing in for a shared one, for tests, fuzzing, and a guest
/// emulated in-process: clones share the page, as two domains share a granted one.
#[derive(Clone, Debug)]
pub struct MemPage {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl Default for MemPage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemPage {
    /// A zeroed page.
    pub fn new() -> Self {
        Self::with_size(PAGE_SIZE)
    }

    /// A zeroed page of `size` bytes (smaller ones test [`RingError::PageTooSmall`]).
    pub fn with_size(size: usize) -> Self {
        MemPage {
            bytes: Arc::new(Mutex::new(vec![0; size])),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SharedPage for MemPage {
    fn size(&self) -> usize {
        self.lock().len()
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        let b = self.lock();
        if let Some(src) = b.get(offset..offset.saturating_add(out.len())) {
            out.copy_from_slice(src);
        }
    }
    fn write_bytes(&self, offset: usize, data: &[u8]) {
        let mut b = self.lock();
        if let Some(dst) = b.get_mut(offset..offset.saturating_add(data.len())) {
            dst.copy_from_slice(data);
        }
    }
    fn read_u32(&self, offset: usize) -> u32 {
        let mut w = [0u8; 4];
        self.read_bytes(offset, &mut w);
        u32::from_ne_bytes(w)
    }
    fn write_u32(&self, offset: usize, value: u32) {
        self.write_bytes(offset, &value.to_ne_bytes());
    }
}

impl Doorbell for MemPage {
    /// Nothing to notify in memory.
    fn notify(&self) -> Result<(), Errno> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring whose indices start just below 2^32, so both queues wrap the index space.
    fn near_wrap(page: &MemPage, start: u32) -> XsRing<MemPage> {
        let mut ring = XsRing::attach(page.clone()).unwrap();
        ring.req_cons = start;
        ring.rsp_prod = start;
        for off in [
            offsets::REQ_CONS,
            offsets::REQ_PROD,
            offsets::RSP_CONS,
            offsets::RSP_PROD,
        ] {
            page.write_u32(off, start);
        }
        ring
    }

    #[test]
    fn indices_wrap_at_two_to_the_32() {
        let page = MemPage::new();
        let start = u32::MAX - 5;
        let mut ring = near_wrap(&page, start);
        // The guest writes 300 bytes from index 2^32 - 6: they straddle the end of the buffer
        // (offset 1018) and the index wraps to 294.
        let data: Vec<u8> = (0..300u16).map(|i| (i % 251) as u8).collect();
        for (i, b) in data.iter().enumerate() {
            let at = mask(advance(start, i));
            page.write_bytes(offsets::REQ + at, &[*b]);
        }
        page.write_u32(offsets::REQ_PROD, start.wrapping_add(300));
        assert_eq!(ring.pending_requests().unwrap(), 300);
        let mut got = vec![0; 1024];
        assert_eq!(ring.read(&mut got).unwrap(), 300);
        assert_eq!(&got[..300], &data[..]);
        assert_eq!(page.read_u32(offsets::REQ_CONS), 294);

        // Replies: 1024 fit, not one more, until the guest consumes.
        let reply = vec![0x5a; 1500];
        assert_eq!(ring.write(&reply).unwrap(), 1024);
        assert_eq!(ring.write(&reply).unwrap(), 0);
        assert_eq!(page.read_u32(offsets::RSP_PROD), start.wrapping_add(1024));
        page.write_u32(offsets::RSP_CONS, start.wrapping_add(1000));
        assert_eq!(ring.write(&reply).unwrap(), 1000);
    }

    #[test]
    fn a_producer_more_than_a_ring_ahead_or_behind_is_an_index_error() {
        let page = MemPage::new();
        let mut ring = near_wrap(&page, u32::MAX - 1);
        page.write_u32(offsets::REQ_PROD, (u32::MAX - 1).wrapping_add(1025));
        let e = ring.read(&mut [0; 16]).unwrap_err();
        assert!(
            matches!(
                e,
                RingError::Index {
                    queue: Queue::Request,
                    ..
                }
            ),
            "{e:?}"
        );
        // Behind ours is as bad: the difference wraps to nearly 2^32.
        page.write_u32(offsets::REQ_PROD, u32::MAX - 2);
        assert!(ring.read(&mut [0; 16]).is_err());
        // Nothing was consumed.
        assert_eq!(page.read_u32(offsets::REQ_CONS), u32::MAX - 1);
        // A consumer of replies ahead of what we produced.
        page.write_u32(offsets::RSP_CONS, 5);
        let e = ring.write(b"x").unwrap_err();
        assert!(
            matches!(
                e,
                RingError::Index {
                    queue: Queue::Response,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.fault().code(), 2);
    }

    #[test]
    fn the_guests_copies_of_our_indices_are_ignored() {
        let page = MemPage::new();
        let mut ring = XsRing::attach(page.clone()).unwrap();
        page.write_bytes(offsets::REQ, b"abcd");
        page.write_u32(offsets::REQ_PROD, 4);
        // The guest scribbles over req_cons and rsp_prod.
        page.write_u32(offsets::REQ_CONS, 3);
        page.write_u32(offsets::RSP_PROD, 999);
        let mut got = [0; 8];
        assert_eq!(ring.read(&mut got).unwrap(), 4);
        assert_eq!(&got[..4], b"abcd");
        assert_eq!(ring.write(b"ok").unwrap(), 2);
        assert_eq!(page.read_u32(offsets::RSP_PROD), 2);
    }

    #[test]
    fn attach_advertises_features_and_checks_the_size() {
        let page = MemPage::new();
        page.write_u32(offsets::ERROR, 3);
        page.write_u32(offsets::CONNECTION, RECONNECT);
        page.write_u32(offsets::REQ_PROD, 77);
        let ring = XsRing::attach(page.clone()).unwrap();
        assert_eq!(
            page.read_u32(offsets::SERVER_FEATURES),
            FEATURE_RECONNECTION | FEATURE_ERROR
        );
        assert_eq!(page.read_u32(offsets::ERROR), 0);
        assert_eq!(page.read_u32(offsets::CONNECTION), CONNECTED);
        assert_eq!(ring.pending_requests().unwrap(), 0);
        let e = XsRing::attach(MemPage::with_size(2048)).unwrap_err();
        assert_eq!(e, RingError::PageTooSmall { size: 2048 });
    }
}
