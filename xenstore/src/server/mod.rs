//! A xenstored: the [`Core`] protocol engine driven by an epoll loop over unix sockets.
//!
//! One thread serves every connection, as C xenstored does, so requests are totally ordered and
//! the tree needs no locks. A connection that sends garbage is closed without affecting others;
//! a connection that stops reading stops being served (its requests wait) and loses watch events
//! beyond [`Quotas::output_per_connection`] instead of growing the daemon's memory.
//!
//! The same server runs as the `xenstored` binary or in-process: [`Server::spawn`] runs it on a
//! thread and hands back a [`Controller`] that connects clients over socket pairs (privileged, or
//! bound to a domain as a guest's ring would be) and introduces, shuts down and releases domains
//! for the simulated host.
//!
//! Given a [`ring::RingConnector`] ([`Server::serve_rings`]), it also serves guests' xenstore
//! rings: each introduced domain's shared page and event channel, as that domain's connection.
//!
//! ```
//! use xenstore::server::Server;
//!
//! let running = Server::new().unwrap().spawn().unwrap();
//! let client = running.controller().client().unwrap();
//! client.write("/vm/name", "guest").unwrap();
//! assert_eq!(client.read("/vm/name").unwrap(), b"guest");
//! running.stop().unwrap();
//! ```

mod core;
pub mod ring;
mod store;

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

pub use self::core::{
    Binding, Closed, ConnId, Core, Introduction, Quotas, DOMID_FIRST_RESERVED, DOMID_SELF,
};
use self::ring::{Doorbell, GuestRing, RingConnection, RingConnector, XsRing};

const RING_EVENTS: u64 = u64::MAX - 2;
const LISTENER: u64 = u64::MAX - 1;
const WAKE: u64 = u64::MAX;

/// How long [`Server::run`] keeps polling after activity before it sleeps, unless
/// [`Server::busy_poll`] says otherwise.
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(50);

/// How long the listener rests after `accept` failed for want of descriptors or memory (with
/// the socket still readable, retrying at once would spin).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why the server could not start or run, or refused a control request.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listening socket could not be created.
    #[error("cannot listen on xenstored socket {path}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// epoll or eventfd setup or waiting failed.
    #[error("xenstored event loop failed during {op}")]
    EventLoop {
        /// What was being done.
        op: &'static str,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// The server thread could not be started.
    #[error("cannot start the xenstored thread")]
    Spawn(#[source] io::Error),
    /// A socket pair for an in-process connection could not be made.
    #[error("cannot create a socket pair for an in-process xenstore connection")]
    SocketPair(#[source] io::Error),
    /// The server is not running any more.
    #[error("the xenstored server has stopped")]
    Stopped,
    /// The server thread panicked (a bug).
    #[error("the xenstored server thread panicked")]
    Panicked,
    /// A domain operation was refused.
    #[error("domain {domid}: {op} refused by xenstored")]
    Domain {
        /// The operation.
        op: &'static str,
        /// The domain.
        domid: u32,
        /// The errno xenstored gave.
        #[source]
        source: Errno,
    },
    /// A client could not be created on an in-process connection.
    #[error("cannot create a client on an in-process xenstore connection")]
    Client(#[source] Box<crate::Error>),
}

enum Command {
    Connect(Binding, UnixStream, mpsc::Sender<Result<(), Errno>>),
    Domain(DomainOp, u32, mpsc::Sender<Result<(), Errno>>),
    Stop,
}

#[derive(Clone, Copy, Debug)]
enum DomainOp {
    Introduce,
    Release,
    Shutdown,
    Resume,
}

impl DomainOp {
    fn name(self) -> &'static str {
        match self {
            Self::Introduce => "introduce",
            Self::Release => "release",
            Self::Shutdown => "shutdown notification",
            Self::Resume => "resume",
        }
    }
}

struct Shared {
    queue: Mutex<VecDeque<Command>>,
    wake: EventFd,
}

/// Controls a server from other threads: in-process connections, domain lifecycle, stop.
#[derive(Clone)]
pub struct Controller {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").finish_non_exhaustive()
    }
}

impl Controller {
    fn post(&self, c: Command) -> Result<(), ServerError> {
        self.shared
            .queue
            .lock()
            .map_err(|_| ServerError::Stopped)?
            .push_back(c);
        self.shared
            .wake
            .write(1)
            .map_err(|_| ServerError::Stopped)?;
        Ok(())
    }

    /// Asks the server to stop; returns at once.
    ///
    /// # Errors
    ///
    /// [`ServerError::Stopped`] if the server's wakeup channel is broken.
    pub fn stop(&self) -> Result<(), ServerError> {
        self.post(Command::Stop)
    }

    /// Opens an in-process connection: the returned stream is the client end.
    ///
    /// # Errors
    ///
    /// [`ServerError::Domain`] with ENOENT when binding to a domain that is not introduced,
    /// [`ServerError::Stopped`] when the server is gone.
    pub fn connect_stream(&self, binding: Binding) -> Result<UnixStream, ServerError> {
        let (mine, theirs) = UnixStream::pair().map_err(ServerError::SocketPair)?;
        let (tx, rx) = mpsc::channel();
        self.post(Command::Connect(binding, theirs, tx))?;
        match rx.recv() {
            Ok(Ok(())) => Ok(mine),
            Ok(Err(e)) => Err(ServerError::Domain {
                op: "connect",
                domid: match binding {
                    Binding::Socket => 0,
                    Binding::Domain(d) => d,
                },
                source: e,
            }),
            Err(_) => Err(ServerError::Stopped),
        }
    }

    /// A privileged (dom0 tools) client on an in-process connection.
    ///
    /// # Errors
    ///
    /// As [`connect_stream`](Self::connect_stream).
    pub fn client(&self) -> Result<crate::Client, ServerError> {
        let s = self.connect_stream(Binding::Socket)?;
        crate::Client::from_stream(s).map_err(|e| ServerError::Client(Box::new(e)))
    }

    /// A client speaking as domain `domid` (unprivileged unless 0), as its ring would.
    ///
    /// # Errors
    ///
    /// As [`connect_stream`](Self::connect_stream).
    pub fn domain_client(&self, domid: u32) -> Result<crate::Client, ServerError> {
        let s = self.connect_stream(Binding::Domain(domid))?;
        crate::Client::from_stream(s).map_err(|e| ServerError::Client(Box::new(e)))
    }

    fn domain(&self, op: DomainOp, domid: u32) -> Result<(), ServerError> {
        let (tx, rx) = mpsc::channel();
        self.post(Command::Domain(op, domid, tx))?;
        match rx.recv() {
            Ok(r) => r.map_err(|source| ServerError::Domain {
                op: op.name(),
                domid,
                source,
            }),
            Err(_) => Err(ServerError::Stopped),
        }
    }

    /// Introduces a domain, firing `@introduceDomain`.
    ///
    /// # Errors
    ///
    /// [`ServerError::Domain`] with EINVAL for dom0 or a reserved domid.
    pub fn introduce_domain(&self, domid: u32) -> Result<(), ServerError> {
        self.domain(DomainOp::Introduce, domid)
    }

    /// Releases a domain: closes its connections, deletes the nodes it owns, fires
    /// `@releaseDomain`.
    ///
    /// # Errors
    ///
    /// [`ServerError::Domain`] with ENOENT if it is not introduced.
    pub fn release_domain(&self, domid: u32) -> Result<(), ServerError> {
        self.domain(DomainOp::Release, domid)
    }

    /// Tells xenstored a domain shut down or crashed: fires `@releaseDomain` once until resumed.
    ///
    /// # Errors
    ///
    /// [`ServerError::Domain`] with ENOENT if it is not introduced.
    pub fn domain_shutdown(&self, domid: u32) -> Result<(), ServerError> {
        self.domain(DomainOp::Shutdown, domid)
    }

    /// Re-arms `@releaseDomain` for a resumed domain.
    ///
    /// # Errors
    ///
    /// [`ServerError::Domain`] with ENOENT if it is not introduced.
    pub fn resume_domain(&self, domid: u32) -> Result<(), ServerError> {
        self.domain(DomainOp::Resume, domid)
    }
}

struct Link {
    stream: UnixStream,
    interest: EpollFlags,
}

/// A xenstored ready to run: a [`Core`], optional listening socket, and its event loop.
pub struct Server {
    core: Core,
    listener: Option<(UnixListener, PathBuf)>,
    epoll: Epoll,
    shared: Arc<Shared>,
    links: HashMap<ConnId, Link>,
    busy_poll: Duration,
    /// Since when the listener is out of epoll because `accept` ran out of descriptors or
    /// memory: it is put back when a connection closes, or after [`ACCEPT_BACKOFF`].
    accept_paused: Option<Instant>,
    /// Guests' rings, when the server serves them ([`Server::serve_rings`]).
    rings: Option<Rings>,
}

/// The guests' rings a server serves, and how it reaches them.
struct Rings {
    connector: Box<dyn RingConnector>,
    /// By the core connection that serves each.
    conns: HashMap<ConnId, RingConnection<Box<dyn GuestRing>>>,
    /// Each domain's ring connection.
    of_domain: HashMap<u32, ConnId>,
    /// When every ring was last looked at.
    looked: Instant,
    /// Rings that stopped at their work bound and want another turn at once.
    more: Vec<ConnId>,
}

/// Rings per poll interval in a timed sweep: with more, the sweep comes less often, so that
/// looking at many idle rings (a host of a thousand domains) does not take the daemon's time.
const RINGS_PER_INTERVAL: u32 = 32;

impl Rings {
    /// How often every ring is looked at without an event: the connector's poll interval, once
    /// per [`RINGS_PER_INTERVAL`] rings (20 ms up to 32 rings, 640 ms at 1000).
    fn sweep_interval(&self) -> Option<Duration> {
        let i = self.connector.poll_interval()?;
        let n = u32::try_from(self.conns.len()).unwrap_or(u32::MAX);
        Some(i.saturating_mul(1 + n / RINGS_PER_INTERVAL))
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("socket", &self.listener.as_ref().map(|l| &l.1))
            .field("connections", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// An in-process server with Xen's default quotas and no listening socket.
    ///
    /// # Errors
    ///
    /// [`ServerError::EventLoop`] when epoll or eventfd cannot be created.
    pub fn new() -> Result<Self, ServerError> {
        Self::with_quotas(Quotas::default())
    }

    /// An in-process server with the given quotas.
    ///
    /// # Errors
    ///
    /// [`ServerError::EventLoop`] when epoll or eventfd cannot be created.
    pub fn with_quotas(quotas: Quotas) -> Result<Self, ServerError> {
        let ev = |op| move |source| ServerError::EventLoop { op, source };
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(ev("epoll_create"))?;
        let wake = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(ev("eventfd"))?;
        epoll
            .add(&wake, EpollEvent::new(EpollFlags::EPOLLIN, WAKE))
            .map_err(ev("epoll_ctl"))?;
        Ok(Self {
            core: Core::new(quotas),
            listener: None,
            epoll,
            shared: Arc::new(Shared {
                queue: Mutex::new(VecDeque::new()),
                wake,
            }),
            links: HashMap::new(),
            busy_poll: DEFAULT_BUSY_POLL,
            accept_paused: None,
            rings: None,
        })
    }

    /// Also serve guests' xenstore rings: on `XS_INTRODUCE` the server asks `connector` to map
    /// the domain's store page and bind its event channel, answers the introduction with the
    /// connector's error if that fails (as C xenstored does), and otherwise serves the ring as
    /// the domain's connection ([`ring`]): unprivileged, paths relative to
    /// `/local/domain/<domid>`, with the permissions and quotas of any guest connection. The
    /// ring is unmapped and unbound when the domain is released.
    ///
    /// # Errors
    ///
    /// [`ServerError::EventLoop`] when the connector's event descriptor cannot join epoll.
    pub fn serve_rings(mut self, connector: Box<dyn RingConnector>) -> Result<Self, ServerError> {
        if let Some(fd) = connector.events() {
            self.epoll
                .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, RING_EVENTS))
                .map_err(|source| ServerError::EventLoop {
                    op: "epoll_ctl (ring events)",
                    source,
                })?;
        }
        self.core.defer_introductions(true);
        self.rings = Some(Rings {
            connector,
            conns: HashMap::new(),
            of_domain: HashMap::new(),
            looked: Instant::now(),
            more: Vec::new(),
        });
        Ok(self)
    }

    /// After handling events, keep polling (yielding the CPU between polls) for up to `d` before
    /// sleeping in `epoll_wait`; zero sleeps at once.
    ///
    /// A client with one request in flight sends its next request a few microseconds after the
    /// reply. If the server has gone to sleep by then, every request pays a wake-up, which on a
    /// virtual machine costs more than the request itself (tens of microseconds). Polling only
    /// follows activity: an idle server sleeps after `d` and costs nothing.
    #[must_use]
    pub fn busy_poll(mut self, d: Duration) -> Self {
        self.busy_poll = d;
        self
    }

    /// Also serve a unix socket at `path` (a stale socket file there is replaced, as C
    /// xenstored does). The file is removed when the server stops.
    ///
    /// # Errors
    ///
    /// [`ServerError::Bind`] if the socket cannot be created.
    pub fn listen(mut self, path: impl AsRef<Path>) -> Result<Self, ServerError> {
        let path = path.as_ref().to_path_buf();
        let bind = |source| ServerError::Bind {
            path: path.clone(),
            source,
        };
        if let Ok(md) = std::fs::symlink_metadata(&path) {
            use std::os::unix::fs::FileTypeExt;
            if md.file_type().is_socket() {
                std::fs::remove_file(&path).map_err(bind)?;
            }
        }
        let l = UnixListener::bind(&path).map_err(bind)?;
        l.set_nonblocking(true).map_err(bind)?;
        self.epoll
            .add(&l, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))
            .map_err(|e| bind(io::Error::from(e)))?;
        self.listener = Some((l, path));
        Ok(self)
    }

    /// A controller for this server, usable from any thread.
    pub fn controller(&self) -> Controller {
        Controller {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs the server on a new thread.
    ///
    /// # Errors
    ///
    /// [`ServerError::Spawn`] if the thread cannot be started.
    pub fn spawn(self) -> Result<RunningServer, ServerError> {
        let ctl = self.controller();
        let thread = std::thread::Builder::new()
            .name("xenstored".into())
            .spawn(move || self.run())
            .map_err(ServerError::Spawn)?;
        Ok(RunningServer {
            ctl,
            thread: Some(thread),
        })
    }

    /// Serves until [`Controller::stop`]; then closes every connection and removes the socket.
    ///
    /// # Errors
    ///
    /// [`ServerError::EventLoop`] if epoll fails.
    pub fn run(mut self) -> Result<(), ServerError> {
        let mut events = vec![EpollEvent::empty(); 64];
        let mut buf = vec![0u8; 64 * 1024];
        // When the last event was handled, while polling; `None` once asleep or busy.
        let mut quiet_since: Option<Instant> = None;
        let result = loop {
            let polling = !self.busy_poll.is_zero()
                && quiet_since.is_none_or(|t| t.elapsed() < self.busy_poll);
            self.look_at_rings_if_due();
            let ring_wait = self.ring_wait();
            let timeout = if polling || ring_wait == Some(Duration::ZERO) {
                EpollTimeout::ZERO
            } else {
                let backoff = self
                    .accept_paused
                    .map(|t| ACCEPT_BACKOFF.saturating_sub(t.elapsed()));
                match [backoff, ring_wait].into_iter().flatten().min() {
                    Some(left) => EpollTimeout::try_from(left.max(Duration::from_millis(1)))
                        .unwrap_or(EpollTimeout::NONE),
                    None => EpollTimeout::NONE,
                }
            };
            if self
                .accept_paused
                .is_some_and(|t| t.elapsed() >= ACCEPT_BACKOFF)
            {
                self.resume_accept();
            }
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(0) if polling => {
                    quiet_since.get_or_insert_with(Instant::now);
                    std::thread::yield_now();
                    continue;
                }
                Ok(0) => continue,
                Ok(n) => {
                    quiet_since = None;
                    n
                }
                Err(Errno::EINTR) => continue,
                Err(source) => {
                    break Err(ServerError::EventLoop {
                        op: "epoll_wait",
                        source,
                    })
                }
            };
            let mut stop = false;
            for ev in &events[..n] {
                match ev.data() {
                    LISTENER => self.accept(),
                    WAKE => stop |= self.commands(),
                    RING_EVENTS => self.ring_events(),
                    id => self.conn_event(ConnId(id), ev.events(), &mut buf),
                }
            }
            self.flush_all();
            if stop {
                break Ok(());
            }
        };
        if let Some((_, path)) = &self.listener {
            let _ = std::fs::remove_file(path);
        }
        result
    }

    fn accept(&mut self) {
        loop {
            let Some((l, _)) = &self.listener else { return };
            match l.accept() {
                Ok((s, _)) => {
                    // Socket clients are dom0's tools, as with C xenstored.
                    if let Ok(id) = self.core.add_connection(Binding::Socket) {
                        self.register(id, s);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The backlog is empty.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays queued, and the socket
                // readable. Stop listening for a while rather than spin on it.
                Err(_) => {
                    let none = &mut EpollEvent::new(EpollFlags::empty(), LISTENER);
                    if self.epoll.modify(l, none).is_ok() {
                        self.accept_paused = Some(Instant::now());
                    }
                    return;
                }
            }
        }
    }

    /// Puts the listener back into epoll after [`Self::accept`] paused it.
    fn resume_accept(&mut self) {
        if self.accept_paused.is_none() {
            return;
        }
        if let Some((l, _)) = &self.listener {
            let ev = &mut EpollEvent::new(EpollFlags::EPOLLIN, LISTENER);
            if self.epoll.modify(l, ev).is_ok() {
                self.accept_paused = None;
            }
        }
    }

    fn register(&mut self, id: ConnId, s: UnixStream) {
        if s.set_nonblocking(true).is_err()
            || self
                .epoll
                .add(&s, EpollEvent::new(EpollFlags::EPOLLIN, id.0))
                .is_err()
        {
            self.core.remove_connection(id);
            return;
        }
        self.links.insert(
            id,
            Link {
                stream: s,
                interest: EpollFlags::EPOLLIN,
            },
        );
    }

    /// Runs queued commands; returns whether to stop.
    fn commands(&mut self) -> bool {
        let _ = self.shared.wake.read();
        let cmds: Vec<Command> = match self.shared.queue.lock() {
            Ok(mut q) => q.drain(..).collect(),
            Err(_) => return true,
        };
        let mut stop = false;
        for c in cmds {
            match c {
                Command::Stop => stop = true,
                Command::Connect(binding, s, reply) => {
                    let r = self
                        .core
                        .add_connection(binding)
                        .map(|id| self.register(id, s));
                    let _ = reply.send(r);
                }
                Command::Domain(op, domid, reply) => {
                    let r = match op {
                        DomainOp::Introduce => self.core.introduce_domain(domid),
                        DomainOp::Release => self.core.release_domain(domid),
                        DomainOp::Shutdown => self.core.domain_shutdown(domid),
                        DomainOp::Resume => self.core.resume_domain(domid),
                    };
                    let _ = reply.send(r);
                }
            }
        }
        stop
    }

    fn close(&mut self, id: ConnId) {
        self.core.remove_connection(id);
        if let Some(link) = self.links.remove(&id) {
            let _ = self.epoll.delete(&link.stream);
            // A descriptor is free again.
            self.resume_accept();
        }
    }

    fn conn_event(&mut self, id: ConnId, ev: EpollFlags, buf: &mut [u8]) {
        let Some(link) = self.links.get(&id) else {
            return;
        };
        if ev.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
            && self.core.wants_input(id)
        {
            match (&link.stream).read(buf) {
                Ok(0) => return self.close(id),
                Ok(n) => {
                    if self.core.receive(id, &buf[..n]).is_err() {
                        return self.close(id);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(id),
            }
        }
        if ev.contains(EpollFlags::EPOLLOUT) {
            self.service(id);
        }
    }

    fn flush_all(&mut self) {
        // Servicing can process more input and dirty further connections (or close them, or
        // introduce domains); loop until quiet.
        loop {
            self.introductions();
            for id in self.core.take_closed() {
                if let Some(link) = self.links.remove(&id) {
                    let _ = self.epoll.delete(&link.stream);
                    self.resume_accept();
                }
                if let Some(rings) = &mut self.rings {
                    // Dropping the ring unmaps its page and unbinds its event channel.
                    if let Some(r) = rings.conns.remove(&id) {
                        rings.of_domain.retain(|_, c| *c != id);
                        drop(r);
                    }
                }
            }
            let dirty = self.core.take_dirty();
            if dirty.is_empty() {
                break;
            }
            for id in dirty {
                if self
                    .rings
                    .as_ref()
                    .is_some_and(|r| r.conns.contains_key(&id))
                {
                    self.pump_ring(id);
                } else {
                    self.service(id);
                }
            }
        }
    }

    /// Completes the introductions the core deferred: connects each new domain's ring (or
    /// resets the ring of a domain introduced again) and answers the introduction.
    fn introductions(&mut self) {
        for intro in self.core.take_introductions() {
            let Some(rings) = &mut self.rings else {
                // Only a server with rings defers introductions.
                let _ = self.core.complete_introduction(intro, Ok(()));
                continue;
            };
            let domid = intro.domid;
            if let Some(&id) = rings.of_domain.get(&domid) {
                // C xenstored's domain_conn_reset: a fresh connection on the same ring.
                let r = self.core.complete_introduction(intro, Ok(()));
                if r.is_ok() {
                    self.core.reset_connection(id);
                    if let Some(rc) = rings.conns.get_mut(&id) {
                        rc.reset_ring();
                    }
                    self.pump_ring(id);
                }
                continue;
            }
            let ring = rings
                .connector
                .connect(domid, intro.gfn, intro.port)
                .and_then(|g| {
                    XsRing::attach(g).map_err(|e| {
                        eprintln!("xenstored: domain {domid}: {e}");
                        Errno::EINVAL
                    })
                });
            let (result, ring) = match ring {
                Ok(r) => (Ok(()), Some(r)),
                Err(e) => (Err(e), None),
            };
            if self.core.complete_introduction(intro, result).is_err() {
                continue;
            }
            let Some(ring) = ring else { continue };
            match self.core.add_connection(Binding::Domain(domid)) {
                Ok(id) => {
                    rings.conns.insert(id, RingConnection::new(ring, id));
                    rings.of_domain.insert(domid, id);
                    self.pump_ring(id);
                }
                Err(e) => eprintln!("xenstored: domain {domid}: cannot serve its ring: {e}"),
            }
        }
    }

    /// Moves what can move on the ring served as `id`, and notifies the guest if anything did.
    fn pump_ring(&mut self, id: ConnId) {
        let Some(rings) = &mut self.rings else { return };
        let Some(rc) = rings.conns.get_mut(&id) else {
            return;
        };
        let domid = self.core.domid_of(id).unwrap_or(0);
        let notify = match rc.pump(&mut self.core) {
            Ok(p) => {
                if p.more && !rings.more.contains(&id) {
                    rings.more.push(id);
                }
                p.notify
            }
            Err(e) => {
                eprintln!(
                    "xenstored: domain {domid}: {e}; its ring is marked broken (error {})",
                    e.fault().code()
                );
                true
            }
        };
        if notify {
            if let Err(e) = rc.ring().page().notify() {
                eprintln!("xenstored: domain {domid}: cannot notify its ring's event channel: {e}");
                rc.fail(ring::RingFault::Communication);
                self.core.ignore_connection(id);
            }
        }
    }

    /// Every ring, after an event or when the poll interval passed.
    fn look_at_rings(&mut self) {
        let ids: Vec<ConnId> = match &mut self.rings {
            Some(r) => {
                r.looked = Instant::now();
                r.more.clear();
                r.conns.keys().copied().collect()
            }
            None => return,
        };
        for id in ids {
            self.pump_ring(id);
        }
        self.flush_all();
    }

    fn look_at_rings_if_due(&mut self) {
        let due = self.rings.as_ref().is_some_and(|r| {
            !r.more.is_empty()
                || (!r.conns.is_empty()
                    && r.sweep_interval().is_some_and(|i| r.looked.elapsed() >= i))
        });
        if due {
            self.look_at_rings();
        }
    }

    /// How long the loop may sleep before the rings want a look.
    fn ring_wait(&self) -> Option<Duration> {
        let r = self.rings.as_ref()?;
        if !r.more.is_empty() {
            return Some(Duration::ZERO);
        }
        if r.conns.is_empty() {
            return None;
        }
        let i = r.sweep_interval()?;
        Some(i.saturating_sub(r.looked.elapsed()))
    }

    fn ring_events(&mut self) {
        if let Some(r) = &mut self.rings {
            r.connector.take_events();
        }
        self.look_at_rings();
    }

    /// Writes what `id` has queued, resumes its paused input, and sets its epoll interest.
    fn service(&mut self, id: ConnId) {
        loop {
            let Some(link) = self.links.get(&id) else {
                return;
            };
            let out = self.core.output(id);
            if !out.is_empty() {
                match (&link.stream).write(out) {
                    Ok(n) => self.core.consume_output(id, n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return self.close(id),
                }
            }
            let drained = self.core.output(id).is_empty();
            if drained && self.core.wants_input(id) && self.core.has_pending_input(id) {
                let before = self.core.output(id).len();
                if self.core.process(id).is_err() {
                    return self.close(id);
                }
                if self.core.output(id).len() != before {
                    continue;
                }
            }
            break;
        }
        let mut want = EpollFlags::empty();
        if self.core.wants_input(id) {
            want |= EpollFlags::EPOLLIN;
        }
        if !self.core.output(id).is_empty() {
            want |= EpollFlags::EPOLLOUT;
        }
        if let Some(link) = self.links.get_mut(&id) {
            if link.interest != want {
                let mut ev = EpollEvent::new(want, id.0);
                if self.epoll.modify(&link.stream, &mut ev).is_ok() {
                    link.interest = want;
                }
            }
        }
    }
}

/// A server running on its own thread; dropping it stops the server and waits for it.
#[derive(Debug)]
pub struct RunningServer {
    ctl: Controller,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl RunningServer {
    /// The server's controller.
    pub fn controller(&self) -> &Controller {
        &self.ctl
    }

    /// Stops the server and waits for its thread.
    ///
    /// # Errors
    ///
    /// The server loop's error, if it failed.
    pub fn stop(mut self) -> Result<(), ServerError> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), ServerError> {
        let Some(t) = self.thread.take() else {
            return Ok(());
        };
        // If the loop already ended, posting fails; joining still reports why.
        let _ = self.ctl.stop();
        t.join().map_err(|_| ServerError::Panicked)?
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}
