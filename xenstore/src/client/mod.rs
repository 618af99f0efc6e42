//! The xenstore client.
//!
//! A [`Client`] is cheap to clone and safe to share between threads; any number of requests may
//! be in flight, matched to replies by request id. There is no background thread: whichever
//! waiting thread finds the connection idle reads from it and hands other threads their replies
//! (and watch events) as they arrive, so a lone caller pays one `write` and one `read` per
//! request. (Through `/dev/xen/xenbus` requests go one at a time: Linux's device cannot carry
//! two in flight on one file.)
//!
//! ```
//! use xenstore::perms::{Access, Permissions};
//! # let running = xenstore::server::Server::new().unwrap().spawn().unwrap();
//! # let client = running.controller().client().unwrap();
//! // let client = xenstore::Client::open()?;    // $XENSTORED_PATH, /run/xenstored/socket, xenbus
//! client.write("/local/domain/5/name", "guest")?;
//! client.set_perms("/local/domain/5/name", &Permissions::new(0, Access::READ))?;
//! let len = client.transaction(|tx| {
//!     let name = tx.read("/local/domain/5/name")?;
//!     tx.write("/local/domain/5/name-len", name.len().to_string())?;
//!     Ok(name.len())
//! })?;
//! assert_eq!(len, 5);
//! assert_eq!(client.read_string("/local/domain/5/name-len")?, "5");
//! # Ok::<(), xenstore::Error>(())
//! ```

mod batch;
mod opt;
mod transport;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;

pub use self::batch::Batch;
pub use self::opt::ReadOpt;
pub use self::transport::{default_path, DEVICE_PATH, SOCKET_PATH};
use self::transport::{ReadBuf, Transport};
use crate::error::{Error, Failure, Result};
use crate::perms::Permissions;
use crate::wire::{self, Header, MsgType};

/// Default number of attempts [`Client::transaction`] makes before giving up on conflicts.
pub const DEFAULT_TRANSACTION_ATTEMPTS: u32 = 16;

/// A watch event: the path that changed and the watch's token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The changed path (relative when the watch was registered with a relative path).
    pub path: String,
    /// The token the watch was registered with.
    pub token: String,
}

struct State {
    replies: HashMap<u32, (MsgType, Vec<u8>)>,
    waiting: HashSet<u32>,
    watches: HashMap<Vec<u8>, VecDeque<WatchEvent>>,
    reader_busy: bool,
    sleepers: usize,
    broken: Option<(io::ErrorKind, String)>,
}

struct Inner {
    transport: Transport,
    write_lock: Mutex<()>,
    state: Mutex<State>,
    cv: Condvar,
    rbuf: Mutex<ReadBuf>,
    /// Held from write to reply for every request through `/dev/xen/xenbus`: Linux's device
    /// sends a request's payload to xenstored asynchronously, from the per-file buffer the next
    /// write overwrites, and gives a `TRANSACTION_START` reply to whichever pending transaction
    /// of the file has no id yet. Two requests in flight on one fd can thus corrupt each other
    /// (xenstored answers EINVAL or ENOENT), so through the device there is one at a time, as
    /// with libxenstore. Found by the real-Xen suite.
    device_one_at_a_time: Mutex<()>,
    next_req: AtomicU32,
    next_token: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The protected data stays consistent across a panicking holder: every update is a single
    // insert or remove.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

enum Wake {
    Reply(u32),
    Event(Vec<u8>),
}

impl Inner {
    fn broken_error(b: &(io::ErrorKind, String)) -> Failure {
        Failure::Io(io::Error::new(b.0, b.1.clone()))
    }

    fn dispatch(st: &mut State, batch: Vec<(Header, Vec<u8>)>) {
        for (h, payload) in batch {
            if h.ty == MsgType::WatchEvent {
                if let Some(ev) = wire::parse_watch_event(&payload) {
                    if let Some(q) = st.watches.get_mut(ev.token) {
                        q.push_back(WatchEvent {
                            path: String::from_utf8_lossy(ev.path).into_owned(),
                            token: String::from_utf8_lossy(ev.token).into_owned(),
                        });
                    }
                }
            } else if st.waiting.remove(&h.req_id) {
                st.replies.insert(h.req_id, (h.ty, payload));
            }
        }
    }

    /// Waits for a reply or a watch event, reading from the connection when nobody else is.
    /// Returns `Ok(None)` on timeout (only with a deadline).
    fn wait(&self, what: &Wake, deadline: Option<Instant>) -> Result<Option<WaitResult>, Failure> {
        let mut st = lock(&self.state);
        loop {
            match what {
                Wake::Reply(id) => {
                    if let Some(r) = st.replies.remove(id) {
                        return Ok(Some(WaitResult::Reply(r)));
                    }
                }
                Wake::Event(tok) => {
                    if let Some(ev) = st.watches.get_mut(tok).and_then(VecDeque::pop_front) {
                        return Ok(Some(WaitResult::Event(ev)));
                    }
                }
            }
            if let Some(b) = &st.broken {
                let err = Self::broken_error(b);
                if let Wake::Reply(id) = what {
                    st.waiting.remove(id);
                }
                return Err(err);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| d <= now) {
                return Ok(None);
            }
            if !st.reader_busy {
                st.reader_busy = true;
                drop(st);
                let r = {
                    let mut rb = lock(&self.rbuf);
                    rb.read_batch(&self.transport, deadline)
                };
                st = lock(&self.state);
                st.reader_busy = false;
                match r {
                    Ok(batch) => Self::dispatch(&mut st, batch),
                    Err(e) => st.broken = Some((e.kind(), e.to_string())),
                }
                if st.sleepers > 0 {
                    self.cv.notify_all();
                }
            } else {
                st.sleepers += 1;
                st = match deadline {
                    None => self.cv.wait(st).unwrap_or_else(PoisonError::into_inner),
                    Some(d) => {
                        let left = d.saturating_duration_since(now);
                        self.cv
                            .wait_timeout(st, left)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                };
                st.sleepers -= 1;
            }
        }
    }

    fn request(&self, tx: u32, ty: MsgType, parts: &[&[u8]]) -> Result<Vec<u8>, Failure> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > self.transport.max_payload() {
            return Err(Failure::TooLarge { len });
        }
        let _one_at_a_time = match self.transport {
            Transport::Device(_) => Some(lock(&self.device_one_at_a_time)),
            Transport::Socket(_) => None,
        };
        let id = self.next_req.fetch_add(1, Ordering::Relaxed);
        let msg = wire::encode(ty, id, tx, parts).map_err(|_| Failure::TooLarge { len })?;
        self.send(&msg, &[id])?;
        self.reply(id, ty)
    }

    /// Registers `ids` as awaited and writes `msg` (their encoded requests) in one go.
    fn send(&self, msg: &[u8], ids: &[u32]) -> Result<(), Failure> {
        {
            let mut st = lock(&self.state);
            if let Some(b) = &st.broken {
                return Err(Self::broken_error(b));
            }
            st.waiting.extend(ids.iter().copied());
        }
        let w = {
            let _g = lock(&self.write_lock);
            self.transport.write_all(msg)
        };
        if let Err(e) = w {
            let mut st = lock(&self.state);
            for id in ids {
                st.waiting.remove(id);
            }
            st.broken = Some((e.kind(), e.to_string()));
            if st.sleepers > 0 {
                self.cv.notify_all();
            }
            return Err(Failure::Io(e));
        }
        Ok(())
    }

    /// Waits for the reply to request `id` of type `ty`.
    fn reply(&self, id: u32, ty: MsgType) -> Result<Vec<u8>, Failure> {
        let Some(WaitResult::Reply((rty, payload))) = self.wait(&Wake::Reply(id), None)? else {
            return Err(Failure::Protocol("no reply"));
        };
        if rty == MsgType::Error {
            return Err(Failure::Daemon(wire::errno_from_payload(&payload)));
        }
        if rty != ty {
            return Err(Failure::Protocol("reply type does not match the request"));
        }
        Ok(payload)
    }

    /// Sends single-argument requests of one type pipelined (see [`pipeline_each`]) and
    /// returns one result per argument, in order.
    ///
    /// [`pipeline_each`]: Self::pipeline_each
    fn pipeline(&self, tx: u32, ty: MsgType, args: &[&str]) -> Vec<Result<Vec<u8>, Failure>> {
        let reqs = args
            .iter()
            .map(|a| path_arg(a).map(|()| (ty, vec![a.as_bytes(), b"\0".as_slice()])))
            .collect();
        self.pipeline_each(tx, reqs)
    }

    /// Sends requests pipelined, in chunks small enough that their replies always fit the
    /// daemon's per-connection output bound and the requests the socket's buffer (so neither
    /// side can block the other), and returns one result per request, in order; an `Err` in
    /// `reqs` is passed through without sending anything. The daemon handles a connection's
    /// requests one by one, in the order they arrive. Through `/dev/xen/xenbus` the requests
    /// go one at a time.
    fn pipeline_each(
        &self,
        tx: u32,
        reqs: Vec<Result<Request<'_>, Failure>>,
    ) -> Vec<Result<Vec<u8>, Failure>> {
        const CHUNK: usize = 32;
        const CHUNK_BYTES: usize = 64 * 1024;
        if matches!(self.transport, Transport::Device(_)) {
            return reqs
                .into_iter()
                .map(|r| r.and_then(|(ty, parts)| self.request(tx, ty, &parts)))
                .collect();
        }
        let mut out = Vec::with_capacity(reqs.len());
        let mut reqs = reqs.into_iter().peekable();
        while reqs.peek().is_some() {
            let mut msg = Vec::new();
            // Per request: its id and type once encoded, or why it was not sent.
            let mut ids: Vec<Result<(u32, MsgType), Failure>> = Vec::new();
            while ids.len() < CHUNK && msg.len() < CHUNK_BYTES {
                let Some(r) = reqs.next() else { break };
                ids.push(r.and_then(|(ty, parts)| {
                    let len: usize = parts.iter().map(|p| p.len()).sum();
                    if len > self.transport.max_payload() {
                        return Err(Failure::TooLarge { len });
                    }
                    let id = self.next_req.fetch_add(1, Ordering::Relaxed);
                    wire::encode_into(&mut msg, ty, id, tx, &parts)
                        .map(|()| (id, ty))
                        .map_err(|_| Failure::TooLarge { len })
                }));
            }
            let sent: Vec<u32> = ids
                .iter()
                .filter_map(|r| r.as_ref().ok().map(|&(id, _)| id))
                .collect();
            if let Err(e) = self.send(&msg, &sent) {
                let kind = match &e {
                    Failure::Io(io) => io.kind(),
                    _ => io::ErrorKind::Other,
                };
                let text = e.to_string();
                for r in ids {
                    out.push(r.and(Err(Failure::Io(io::Error::new(kind, text.clone())))));
                }
                continue;
            }
            for r in ids {
                out.push(r.and_then(|(id, ty)| self.reply(id, ty)));
            }
        }
        out
    }
}

/// A request's type and payload parts, for [`Inner::pipeline_each`].
type Request<'a> = (MsgType, Vec<&'a [u8]>);

enum WaitResult {
    Reply((MsgType, Vec<u8>)),
    Event(WatchEvent),
}

/// A connection to xenstored.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("transport", &self.inner.transport)
            .finish()
    }
}

fn path_arg(path: &str) -> Result<(), Failure> {
    if path.as_bytes().contains(&0) {
        return Err(Failure::Invalid("the path contains a nul byte"));
    }
    Ok(())
}

/// Operations shared by [`Client`] (outside any transaction) and [`Transaction`].
#[derive(Clone, Copy)]
struct Ops<'a> {
    inner: &'a Inner,
    tx: u32,
}

impl Ops<'_> {
    fn single(&self, ty: MsgType, path: &str) -> Result<Vec<u8>, Failure> {
        path_arg(path)?;
        self.inner.request(self.tx, ty, &[path.as_bytes(), b"\0"])
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.single(MsgType::Read, path)
            .map_err(|source| Error::Read {
                path: path.into(),
                source,
            })
    }

    fn exists(&self, path: &str) -> Result<bool> {
        opt::none_on_enoent(self.read(path)).map(|v| v.is_some())
    }

    fn write(&self, path: &str, value: &[u8]) -> Result<()> {
        let r = path_arg(path).and_then(|()| {
            self.inner
                .request(self.tx, MsgType::Write, &[path.as_bytes(), b"\0", value])
        });
        r.map(drop).map_err(|source| Error::Write {
            path: path.into(),
            source,
        })
    }

    fn mkdir(&self, path: &str) -> Result<()> {
        self.single(MsgType::Mkdir, path)
            .map(drop)
            .map_err(|source| Error::Mkdir {
                path: path.into(),
                source,
            })
    }

    fn rm(&self, path: &str) -> Result<()> {
        self.single(MsgType::Rm, path)
            .map(drop)
            .map_err(|source| Error::Rm {
                path: path.into(),
                source,
            })
    }

    fn directory(&self, path: &str) -> Result<Vec<String>> {
        let err = |source| Error::Directory {
            path: path.into(),
            source,
        };
        match self.single(MsgType::Directory, path) {
            Ok(p) => Ok(wire::strings(&p)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()),
            Err(Failure::Daemon(Errno::E2BIG)) => self.directory_part(path).map_err(err),
            Err(e) => Err(err(e)),
        }
    }

    /// Lists a directory too long for one reply, chunk by chunk, restarting if it changes.
    fn directory_part(&self, path: &str) -> Result<Vec<String>, Failure> {
        const RESTARTS: usize = 64;
        'restart: for _ in 0..RESTARTS {
            let mut names = Vec::new();
            let mut generation: Option<Vec<u8>> = None;
            let mut off = 0usize;
            loop {
                let offs = off.to_string();
                let p = self.inner.request(
                    self.tx,
                    MsgType::DirectoryPart,
                    &[path.as_bytes(), b"\0", offs.as_bytes(), b"\0"],
                )?;
                let part = wire::parse_directory_part(&p).ok_or(Failure::Protocol(
                    "DIRECTORY_PART reply without a generation",
                ))?;
                match &generation {
                    None => generation = Some(part.generation.to_vec()),
                    Some(g) if g.as_slice() != part.generation => continue 'restart,
                    Some(_) => {}
                }
                if part.children.is_empty() && !part.complete {
                    return Err(Failure::Protocol("DIRECTORY_PART made no progress"));
                }
                for c in &part.children {
                    off += c.len() + 1;
                    names.push(String::from_utf8_lossy(c).into_owned());
                }
                if part.complete {
                    return Ok(names);
                }
            }
        }
        Err(Failure::Daemon(Errno::EAGAIN))
    }

    fn get_perms(&self, path: &str) -> Result<Permissions> {
        let err = |source| Error::GetPerms {
            path: path.into(),
            source,
        };
        let p = self.single(MsgType::GetPerms, path).map_err(err)?;
        Permissions::parse_strings(wire::strings(&p))
            .map_err(|_| err(Failure::Protocol("unparsable permissions")))
    }

    fn read_many(&self, paths: &[&str]) -> Vec<Result<Vec<u8>>> {
        self.inner
            .pipeline(self.tx, MsgType::Read, paths)
            .into_iter()
            .zip(paths)
            .map(|(r, p)| {
                r.map_err(|source| Error::Read {
                    path: (*p).into(),
                    source,
                })
            })
            .collect()
    }

    fn set_perms(&self, path: &str, perms: &Permissions) -> Result<()> {
        let err = |source| Error::SetPerms {
            path: path.into(),
            source,
        };
        path_arg(path).map_err(err)?;
        let mut body = Vec::new();
        perms.write_wire(&mut body);
        self.inner
            .request(self.tx, MsgType::SetPerms, &[path.as_bytes(), b"\0", &body])
            .map(drop)
            .map_err(err)
    }
}

macro_rules! node_ops {
    () => {
        /// Reads a node's value.
        ///
        /// # Errors
        ///
        /// [`Error::Read`]; its [`errno`](Error::errno) is ENOENT for a missing node, EACCES
        /// when the caller may not read it.
        pub fn read(&self, path: &str) -> Result<Vec<u8>> {
            self.ops().read(path)
        }

        /// Reads many nodes at once: the requests are pipelined on the connection (one write
        /// per 32 paths, replies collected as they come), which costs a fraction of the system
        /// calls and wake-ups of reading them one by one. One result per path, in order.
        /// Through `/dev/xen/xenbus` the reads go one at a time.
        ///
        /// # Errors
        ///
        /// Each element fails as [`read`](Self::read) would.
        pub fn read_many(&self, paths: &[&str]) -> Vec<Result<Vec<u8>>> {
            self.ops().read_many(paths)
        }

        /// Carries out a [`Batch`] of node changes, pipelined: every change is sent, in order,
        /// without waiting for the replies to the ones before it, and xenstored carries them
        /// out in that order. A batch of fifty writes costs about what one write costs,
        /// instead of fifty round trips to the daemon.
        ///
        /// Every change is attempted, even after one has failed. Outside a transaction the
        /// others then stay made; inside one, returning the error from the transaction's
        /// closure discards them all.
        ///
        /// # Errors
        ///
        /// The first failed change's error, in batch order: [`Error::Write`],
        /// [`Error::Mkdir`], [`Error::Rm`] or [`Error::SetPerms`], as the single call would.
        pub fn apply(&self, batch: &Batch) -> Result<()> {
            self.ops().apply(batch)
        }

        /// Reads a node's value as (lossy) UTF-8 text.
        ///
        /// See [`ReadOpt`] for reads that answer `None` for a missing node.
        ///
        /// # Errors
        ///
        /// As [`read`](Self::read).
        pub fn read_string(&self, path: &str) -> Result<String> {
            self.ops()
                .read(path)
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        }

        /// Whether a node exists (and is readable).
        ///
        /// # Errors
        ///
        /// Errors other than ENOENT, as [`read`](Self::read).
        pub fn exists(&self, path: &str) -> Result<bool> {
            self.ops().exists(path)
        }

        /// Writes a node's value, creating it and missing parents.
        ///
        /// # Errors
        ///
        /// [`Error::Write`]: EACCES without write access, ENOSPC over a quota, E2BIG when path
        /// and value exceed 4096 bytes.
        pub fn write(&self, path: &str, value: impl AsRef<[u8]>) -> Result<()> {
            self.ops().write(path, value.as_ref())
        }

        /// Makes sure a node exists, creating it (empty) and missing parents.
        ///
        /// # Errors
        ///
        /// [`Error::Mkdir`].
        pub fn mkdir(&self, path: &str) -> Result<()> {
            self.ops().mkdir(path)
        }

        /// Removes a node and everything below it. Removing a missing node whose parent exists
        /// succeeds.
        ///
        /// # Errors
        ///
        /// [`Error::Rm`]: ENOENT if the parent is missing too, EINVAL for `/`.
        pub fn rm(&self, path: &str) -> Result<()> {
            self.ops().rm(path)
        }

        /// Lists a node's children (leaf names, in creation order), using `DIRECTORY_PART` when
        /// the list exceeds one message.
        ///
        /// # Errors
        ///
        /// [`Error::Directory`].
        pub fn directory(&self, path: &str) -> Result<Vec<String>> {
            self.ops().directory(path)
        }

        /// Reads a node's permissions.
        ///
        /// # Errors
        ///
        /// [`Error::GetPerms`].
        pub fn get_perms(&self, path: &str) -> Result<Permissions> {
            self.ops().get_perms(path)
        }

        /// Sets a node's permissions (owner first). Only the owner (or a privileged caller) may,
        /// and only privileged callers may change the owner.
        ///
        /// # Errors
        ///
        /// [`Error::SetPerms`]: EACCES for non-owners, EPERM for an owner change.
        pub fn set_perms(&self, path: &str, perms: &Permissions) -> Result<()> {
            self.ops().set_perms(path, perms)
        }
    };
}

impl Client {
    /// Connects as libxenstore's `xs_open(0)` does: `$XENSTORED_PATH` (a socket or a device),
    /// else `$XENSTORED_RUNDIR/socket` or `/run/xenstored/socket`, else `/dev/xen/xenbus`.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] naming the last path tried.
    pub fn open() -> Result<Self> {
        let first = default_path();
        match Self::open_path(&first) {
            Ok(c) => Ok(c),
            Err(e) if std::env::var_os("XENSTORED_PATH").is_some() => Err(e),
            Err(_) => Self::open_path(DEVICE_PATH),
        }
    }

    /// Connects to a unix socket or opens a xenbus device, whichever `path` is.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`].
    pub fn open_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let t = Transport::open(path).map_err(|source| Error::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::with_transport(t))
    }

    /// Uses an already-connected stream (an in-process server connection, for instance).
    ///
    /// # Errors
    ///
    /// Never fails today; the signature leaves room for a handshake.
    pub fn from_stream(stream: UnixStream) -> Result<Self> {
        Ok(Self::with_transport(Transport::Socket(stream)))
    }

    fn with_transport(transport: Transport) -> Self {
        Self {
            inner: Arc::new(Inner {
                transport,
                write_lock: Mutex::new(()),
                state: Mutex::new(State {
                    replies: HashMap::new(),
                    waiting: HashSet::new(),
                    watches: HashMap::new(),
                    reader_busy: false,
                    sleepers: 0,
                    broken: None,
                }),
                cv: Condvar::new(),
                rbuf: Mutex::new(ReadBuf::default()),
                device_one_at_a_time: Mutex::new(()),
                next_req: AtomicU32::new(1),
                next_token: AtomicU64::new(1),
            }),
        }
    }

    fn ops(&self) -> Ops<'_> {
        Ops {
            inner: &self.inner,
            tx: 0,
        }
    }

    /// The largest request payload this connection carries: 4096 bytes on a socket, 4080
    /// through Linux's `/dev/xen/xenbus` (which counts the 16-byte header against the limit).
    /// Longer requests fail with [`Failure::TooLarge`] before anything is sent.
    pub fn max_payload(&self) -> usize {
        self.inner.transport.max_payload()
    }

    node_ops!();

    /// Starts a transaction. Prefer [`transaction`](Self::transaction), which retries conflicts.
    ///
    /// # Errors
    ///
    /// [`Error::TransactionStart`] (ENOSPC when an unprivileged caller has too many open).
    pub fn transaction_start(&self) -> Result<Transaction<'_>> {
        let p = self
            .inner
            .request(0, MsgType::TransactionStart, &[b"\0"])
            .map_err(|source| Error::TransactionStart { source })?;
        let id = wire::one_arg(&p)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|&id| id != 0)
            .ok_or(Error::TransactionStart {
                source: Failure::Protocol("bad transaction id"),
            })?;
        Ok(Transaction {
            client: self,
            id,
            done: false,
        })
    }

    /// Runs `f` in a transaction and commits it, retrying the whole closure when the commit
    /// (or an operation inside) reports EAGAIN, up to [`DEFAULT_TRANSACTION_ATTEMPTS`] times.
    /// An error from `f` aborts the transaction and is returned.
    ///
    /// # Errors
    ///
    /// `f`'s error, a commit error, or [`Error::TransactionConflict`] when attempts ran out.
    pub fn transaction<T>(&self, f: impl FnMut(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.transaction_with_attempts(DEFAULT_TRANSACTION_ATTEMPTS, f)
    }

    /// As [`transaction`](Self::transaction), with an explicit attempt budget (at least 1).
    ///
    /// # Errors
    ///
    /// As [`transaction`](Self::transaction).
    pub fn transaction_with_attempts<T>(
        &self,
        attempts: u32,
        mut f: impl FnMut(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let attempts = attempts.max(1);
        for _ in 0..attempts {
            let tx = self.transaction_start()?;
            match f(&tx) {
                Ok(v) => match tx.commit() {
                    Ok(()) => return Ok(v),
                    Err(e) if e.errno() == Some(Errno::EAGAIN) => continue,
                    Err(e) => return Err(e),
                },
                Err(e) => {
                    // The abort's own failure matters less than f's error.
                    let _ = tx.abort();
                    if e.errno() == Some(Errno::EAGAIN) {
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        Err(Error::TransactionConflict { attempts })
    }

    /// Watches `path` (and everything below it) with a fresh unique token. The first event,
    /// for `path` itself, arrives straight away, as xenstored always fires once on registration.
    ///
    /// # Errors
    ///
    /// [`Error::Watch`]: EINVAL for a bad path, E2BIG over the watch quota.
    pub fn watch(&self, path: &str) -> Result<Watch> {
        let n = self.inner.next_token.fetch_add(1, Ordering::Relaxed);
        self.watch_with_token(path, &format!("rxen-{n}"))
    }

    /// Watches `path` with a caller-chosen token (unique per client, or events are shared).
    ///
    /// # Errors
    ///
    /// [`Error::Watch`]; EEXIST if this path and token are already watched.
    pub fn watch_with_token(&self, path: &str, token: &str) -> Result<Watch> {
        let err = |source| Error::Watch {
            path: path.into(),
            token: token.into(),
            source,
        };
        path_arg(path).map_err(err)?;
        if token.as_bytes().contains(&0) {
            return Err(err(Failure::Invalid("the token contains a nul byte")));
        }
        let key = token.as_bytes().to_vec();
        {
            let mut st = lock(&self.inner.state);
            if st.watches.contains_key(&key) {
                return Err(err(Failure::Daemon(Errno::EEXIST)));
            }
            // Register the queue first: the first event can arrive with the reply.
            st.watches.insert(key.clone(), VecDeque::new());
        }
        let r = self.inner.request(
            0,
            MsgType::Watch,
            &[path.as_bytes(), b"\0", token.as_bytes(), b"\0"],
        );
        if let Err(e) = r {
            lock(&self.inner.state).watches.remove(&key);
            return Err(err(e));
        }
        Ok(Watch {
            client: self.clone(),
            path: path.into(),
            token: token.into(),
            active: true,
        })
    }

    /// Returns the home path of a domain (`/local/domain/<domid>`).
    ///
    /// # Errors
    ///
    /// [`Error::Domain`].
    pub fn get_domain_path(&self, domid: u32) -> Result<String> {
        let p = self.domain_request(MsgType::GetDomainPath, "get domain path", domid, &[])?;
        wire::one_arg(&p)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .ok_or(Error::Domain {
                op: "get domain path",
                domid,
                source: Failure::Protocol("bad path reply"),
            })
    }

    /// Introduces a domain with its xenstore ring page (gfn) and event channel.
    ///
    /// # Errors
    ///
    /// [`Error::Domain`]: EACCES for unprivileged callers, EINVAL for bad arguments.
    pub fn introduce_domain(&self, domid: u32, gfn: u64, port: u32) -> Result<()> {
        let g = gfn.to_string();
        let p = port.to_string();
        self.domain_request(
            MsgType::Introduce,
            "introduce",
            domid,
            &[g.as_bytes(), b"\0", p.as_bytes(), b"\0"],
        )
        .map(drop)
    }

    /// Releases a domain (xenstored forgets it and deletes the nodes it owns).
    ///
    /// # Errors
    ///
    /// [`Error::Domain`]: ENOENT if it is not introduced.
    pub fn release_domain(&self, domid: u32) -> Result<()> {
        self.domain_request(MsgType::Release, "release", domid, &[])
            .map(drop)
    }

    /// Re-arms `@releaseDomain` for a resumed domain.
    ///
    /// # Errors
    ///
    /// [`Error::Domain`].
    pub fn resume_domain(&self, domid: u32) -> Result<()> {
        self.domain_request(MsgType::Resume, "resume", domid, &[])
            .map(drop)
    }

    /// Whether xenstored knows the domain.
    ///
    /// # Errors
    ///
    /// [`Error::Domain`].
    pub fn is_domain_introduced(&self, domid: u32) -> Result<bool> {
        let p = self.domain_request(
            MsgType::IsDomainIntroduced,
            "introduction query",
            domid,
            &[],
        )?;
        Ok(wire::one_arg(&p) == Some(b"T"))
    }

    /// Lets `domid` act with `target`'s rights (a device model for its guest).
    ///
    /// # Errors
    ///
    /// [`Error::Domain`]: ENOENT if either domain is not introduced.
    pub fn set_target(&self, domid: u32, target: u32) -> Result<()> {
        let t = target.to_string();
        self.domain_request(
            MsgType::SetTarget,
            "set target",
            domid,
            &[t.as_bytes(), b"\0"],
        )
        .map(drop)
    }

    fn domain_request(
        &self,
        ty: MsgType,
        op: &'static str,
        domid: u32,
        rest: &[&[u8]],
    ) -> Result<Vec<u8>> {
        let d = domid.to_string();
        let mut parts: Vec<&[u8]> = vec![d.as_bytes(), b"\0"];
        parts.extend_from_slice(rest);
        self.inner
            .request(0, ty, &parts)
            .map_err(|source| Error::Domain { op, domid, source })
    }

    /// Drops every watch and transaction of this connection on the daemon side.
    ///
    /// # Errors
    ///
    /// [`Error::ResetWatches`].
    pub fn reset_watches(&self) -> Result<()> {
        self.inner
            .request(0, MsgType::ResetWatches, &[b"\0"])
            .map(drop)
            .map_err(|source| Error::ResetWatches { source })
    }

    /// Sends a `CONTROL` command with arguments; returns the daemon's answer.
    ///
    /// # Errors
    ///
    /// [`Error::Control`].
    pub fn control(&self, command: &str, args: &[&str]) -> Result<Vec<u8>> {
        let mut parts: Vec<&[u8]> = vec![command.as_bytes(), b"\0"];
        for a in args {
            parts.push(a.as_bytes());
            parts.push(b"\0");
        }
        self.inner
            .request(0, MsgType::Control, &parts)
            .map_err(|source| Error::Control {
                command: command.into(),
                source,
            })
    }

    /// Sends one raw request and returns the raw reply payload (for tools and tests).
    ///
    /// # Errors
    ///
    /// The [`Failure`] as is.
    pub fn raw_request(&self, ty: MsgType, tx_id: u32, payload: &[u8]) -> Result<Vec<u8>, Failure> {
        self.inner.request(tx_id, ty, &[payload])
    }
}

/// An open transaction. Dropping it without [`commit`](Self::commit) aborts it.
pub struct Transaction<'c> {
    client: &'c Client,
    id: u32,
    done: bool,
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction").field("id", &self.id).finish()
    }
}

impl Transaction<'_> {
    fn ops(&self) -> Ops<'_> {
        Ops {
            inner: &self.client.inner,
            tx: self.id,
        }
    }

    /// The transaction id.
    pub fn id(&self) -> u32 {
        self.id
    }

    node_ops!();

    fn end(&mut self, commit: bool) -> Result<(), Failure> {
        self.done = true;
        let arg: &[u8] = if commit { b"T\0" } else { b"F\0" };
        self.client
            .inner
            .request(self.id, MsgType::TransactionEnd, &[arg])
            .map(drop)
    }

    /// Commits.
    ///
    /// # Errors
    ///
    /// [`Error::TransactionCommit`]; its errno is EAGAIN when another writer changed what this
    /// transaction read, and the transaction should be run again.
    pub fn commit(mut self) -> Result<()> {
        let id = self.id;
        self.end(true)
            .map_err(|source| Error::TransactionCommit { id, source })
    }

    /// Aborts, discarding every change.
    ///
    /// # Errors
    ///
    /// [`Error::TransactionAbort`].
    pub fn abort(mut self) -> Result<()> {
        let id = self.id;
        self.end(false)
            .map_err(|source| Error::TransactionAbort { id, source })
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.end(false);
        }
    }
}

/// A registered watch; iterate it (or call [`next_event`](Self::next_event)) for events.
/// Dropping it unregisters the watch.
pub struct Watch {
    client: Client,
    path: String,
    token: String,
    active: bool,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("path", &self.path)
            .field("token", &self.token)
            .finish()
    }
}

impl Watch {
    /// The watched path, as registered.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The token.
    pub fn token(&self) -> &str {
        &self.token
    }

    fn wait(&self, deadline: Option<Instant>) -> Result<Option<WatchEvent>> {
        let key = Wake::Event(self.token.as_bytes().to_vec());
        match self.client.inner.wait(&key, deadline) {
            Ok(Some(WaitResult::Event(ev))) => Ok(Some(ev)),
            Ok(_) => Ok(None),
            Err(source) => Err(Error::WatchEvent {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Waits for the next event.
    ///
    /// # Errors
    ///
    /// [`Error::WatchEvent`] when the connection fails.
    pub fn next_event(&self) -> Result<WatchEvent> {
        loop {
            if let Some(ev) = self.wait(None)? {
                return Ok(ev);
            }
        }
    }

    /// Waits at most `timeout` for the next event.
    ///
    /// # Errors
    ///
    /// [`Error::WatchEvent`] when the connection fails.
    pub fn next_event_timeout(&self, timeout: Duration) -> Result<Option<WatchEvent>> {
        self.wait(Some(Instant::now() + timeout))
    }

    /// An event already received, if any; never blocks.
    pub fn try_next_event(&self) -> Option<WatchEvent> {
        lock(&self.client.inner.state)
            .watches
            .get_mut(self.token.as_bytes())
            .and_then(VecDeque::pop_front)
    }

    /// Unregisters the watch.
    ///
    /// # Errors
    ///
    /// [`Error::Unwatch`].
    pub fn unwatch(mut self) -> Result<()> {
        self.unwatch_inner()
    }

    fn unwatch_inner(&mut self) -> Result<()> {
        if !std::mem::take(&mut self.active) {
            return Ok(());
        }
        let r = self.client.inner.request(
            0,
            MsgType::Unwatch,
            &[self.path.as_bytes(), b"\0", self.token.as_bytes(), b"\0"],
        );
        lock(&self.client.inner.state)
            .watches
            .remove(self.token.as_bytes());
        r.map(drop).map_err(|source| Error::Unwatch {
            path: self.path.clone(),
            token: self.token.clone(),
            source,
        })
    }
}

impl Iterator for Watch {
    type Item = WatchEvent;

    /// The next event; `None` once the connection has failed.
    fn next(&mut self) -> Option<WatchEvent> {
        self.next_event().ok()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.unwatch_inner();
    }
}
