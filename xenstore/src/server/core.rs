//! The xenstored protocol engine, free of I/O: connections feed it bytes and take its output.
//!
//! Semantics follow Xen 4.17's C xenstored where the protocol document is silent: error choices
//! (EACCES hiding the existence of nodes a caller may not see), node creation inheriting the
//! parent's permissions, watch permission checks, quota numbers and the order of checks.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use nix::errno::Errno;

use super::store::{self, Fire, Node, Transaction, Tree, View};
use crate::path::{self, INTRODUCE_DOMAIN, RELEASE_DOMAIN};
use crate::perms::{Access, Permissions};
use crate::wire::{self, Header, MsgType, HEADER_LEN, PAYLOAD_MAX};

/// First domid Xen reserves for special purposes (`DOMID_FIRST_RESERVED`).
pub const DOMID_FIRST_RESERVED: u32 = 0x7ff0;
/// `DOMID_SELF`.
pub const DOMID_SELF: u32 = 0x7ff0;

const PERM_READ: u8 = 1;
const PERM_WRITE: u8 = 2;
const PERM_OWNER: u8 = 8;

/// Limits applied to unprivileged domains, with Xen 4.17's defaults, plus the daemon's own
/// per-connection output bound (which applies to everyone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Nodes a domain may own (`-E`, default 1000).
    pub nodes_per_domain: usize,
    /// Size of one node record: header, permissions, value and child names (`-S`, default 2048).
    pub entry_size: usize,
    /// Watches per domain (`-W`, default 128).
    pub watches_per_domain: usize,
    /// Open transactions per connection (`-t`, default 10).
    pub transactions_per_connection: usize,
    /// Permission entries per node (`-A`, default 5).
    pub perms_per_node: usize,
    /// Nodes one transaction may touch (`-Q transaction-nodes`, default 1024).
    pub nodes_per_transaction: usize,
    /// Path length beyond `/local/domain/<domid>/` (`-M`, default 2048).
    pub path_len: usize,
    /// Bytes of replies and events queued for one connection before the daemon stops reading
    /// its requests and drops further watch events for it.
    pub output_per_connection: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            nodes_per_domain: 1000,
            entry_size: 2048,
            watches_per_domain: 128,
            transactions_per_connection: 10,
            perms_per_node: 5,
            nodes_per_transaction: 1024,
            path_len: wire::REL_PATH_MAX,
            output_per_connection: 256 * 1024,
        }
    }
}

/// A connection's identity inside the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Who is at the other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// A local socket client: dom0's tools, privileged, paths relative to `/local/domain/0`.
    Socket,
    /// A connection speaking for a domain (its ring in real Xen). Unprivileged unless dom0.
    Domain(u32),
}

/// The connection must be closed: it broke the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection closed: {0}")]
pub struct Closed(pub wire::WireError);

#[derive(Debug)]
struct Watch {
    /// Absolute path or `@special`.
    node: String,
    token: Vec<u8>,
    /// The home prefix to strip from event paths when registered with a relative path.
    relative: Option<String>,
}

#[derive(Debug)]
struct Conn {
    binding: Binding,
    /// `/local/domain/<domid>`, the base of relative paths.
    home: String,
    input: Vec<u8>,
    in_off: usize,
    output: Vec<u8>,
    out_off: usize,
    watches: Vec<Watch>,
    txs: HashMap<u32, Transaction>,
    next_tx: u32,
    dirty: bool,
}

impl Conn {
    fn domid(&self) -> u32 {
        match self.binding {
            Binding::Socket => 0,
            Binding::Domain(d) => d,
        }
    }
    fn queued(&self) -> usize {
        self.output.len() - self.out_off
    }
}

#[derive(Debug, Default)]
struct Domain {
    introduced: bool,
    target: Option<u32>,
    shutdown: bool,
    gfn: i64,
    port: u32,
}

#[derive(Clone, Copy, Debug)]
struct Who {
    domid: u32,
    privileged: bool,
    target: Option<u32>,
}

fn perm_for(who: &Who, perms: &Permissions) -> u8 {
    let owner = perms.owner();
    if who.privileged || owner == who.domid || who.target == Some(owner) {
        return PERM_READ | PERM_WRITE | PERM_OWNER;
    }
    let bits = |a: Access| a.bits();
    for p in &perms.entries()[1..] {
        if p.domid == who.domid || who.target == Some(p.domid) {
            return bits(p.access);
        }
    }
    bits(perms.others())
}

/// The xenstored engine: the tree, domains, connections and their buffers.
#[derive(Debug)]
pub struct Core {
    tree: Tree,
    conns: BTreeMap<ConnId, Conn>,
    domains: BTreeMap<u32, Domain>,
    introduce_perms: Permissions,
    release_perms: Permissions,
    quotas: Quotas,
    next_conn: u64,
    dirty: Vec<ConnId>,
    closed: Vec<ConnId>,
    scratch: Vec<u8>,
}

impl Default for Core {
    fn default() -> Self {
        Self::new(Quotas::default())
    }
}

type OpResult = Result<(), Errno>;

impl Core {
    /// A fresh store (`/`, `/tool`, `/tool/xenstored`) with the given quotas.
    pub fn new(quotas: Quotas) -> Self {
        Self {
            tree: Tree::new(),
            conns: BTreeMap::new(),
            domains: BTreeMap::new(),
            introduce_perms: Permissions::new(0, Access::NONE),
            release_perms: Permissions::new(0, Access::NONE),
            quotas,
            next_conn: 1,
            dirty: Vec::new(),
            closed: Vec::new(),
            scratch: Vec::with_capacity(PAYLOAD_MAX),
        }
    }

    /// The quotas in force.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Adds a connection.
    ///
    /// # Errors
    ///
    /// ENOENT when binding to a domain other than dom0 that has not been introduced.
    pub fn add_connection(&mut self, binding: Binding) -> Result<ConnId, Errno> {
        if let Binding::Domain(d) = binding {
            if d != 0 && !self.domains.get(&d).is_some_and(|x| x.introduced) {
                return Err(Errno::ENOENT);
            }
        }
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                binding,
                home: path::domain_path(match binding {
                    Binding::Socket => 0,
                    Binding::Domain(d) => d,
                }),
                input: Vec::new(),
                in_off: 0,
                output: Vec::new(),
                out_off: 0,
                watches: Vec::new(),
                txs: HashMap::new(),
                next_tx: 1,
                dirty: false,
            },
        );
        Ok(id)
    }

    /// Forgets a connection, its watches and its transactions.
    pub fn remove_connection(&mut self, id: ConnId) {
        self.conns.remove(&id);
    }

    /// Number of live connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Number of nodes in the tree.
    pub fn node_count(&self) -> usize {
        self.tree.len()
    }

    /// Checks the tree's structural invariants (for tests and fuzzing).
    ///
    /// # Errors
    ///
    /// A description of the first inconsistency.
    pub fn check(&self) -> Result<(), String> {
        self.tree.check()
    }

    /// Connections whose output grew since the last call.
    pub fn take_dirty(&mut self) -> Vec<ConnId> {
        for id in &self.dirty {
            if let Some(c) = self.conns.get_mut(id) {
                c.dirty = false;
            }
        }
        std::mem::take(&mut self.dirty)
    }

    /// Connections the engine dropped (their domain was released) since the last call.
    pub fn take_closed(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.closed)
    }

    /// Bytes waiting to be sent on `id`.
    pub fn output(&self, id: ConnId) -> &[u8] {
        self.conns.get(&id).map_or(&[], |c| &c.output[c.out_off..])
    }

    /// Marks `n` bytes of `id`'s output as sent.
    pub fn consume_output(&mut self, id: ConnId, n: usize) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.out_off = (c.out_off + n).min(c.output.len());
            if c.out_off == c.output.len() {
                c.output.clear();
                c.out_off = 0;
            }
        }
    }

    /// Whether the engine will process more requests from `id` now (false while its unsent
    /// output exceeds the per-connection bound).
    pub fn wants_input(&self, id: ConnId) -> bool {
        self.conns
            .get(&id)
            .is_some_and(|c| c.queued() <= self.quotas.output_per_connection)
    }

    /// Appends received bytes and processes every complete request that fits the output bound.
    ///
    /// # Errors
    ///
    /// [`Closed`] when the peer broke the framing (payload above 4096 bytes); the caller must
    /// close the connection and [`remove_connection`](Self::remove_connection) it.
    pub fn receive(&mut self, id: ConnId, data: &[u8]) -> Result<(), Closed> {
        if let Some(c) = self.conns.get_mut(&id) {
            if c.in_off > 0 && c.in_off == c.input.len() {
                c.input.clear();
                c.in_off = 0;
            }
            c.input.extend_from_slice(data);
        }
        self.process(id)
    }

    /// Processes buffered requests of `id` (after its output drained, for instance).
    ///
    /// # Errors
    ///
    /// As [`receive`](Self::receive).
    pub fn process(&mut self, id: ConnId) -> Result<(), Closed> {
        let Some(c) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        let mut input = std::mem::take(&mut c.input);
        let mut off = c.in_off;
        let mut result = Ok(());
        loop {
            if !self.wants_input(id) {
                break;
            }
            match wire::parse_frame(&input[off..]) {
                Ok(Some(frame)) => {
                    off += frame.wire_len();
                    self.handle(id, frame.header, frame.payload);
                }
                Ok(None) => break,
                Err(e) => {
                    result = Err(Closed(e));
                    break;
                }
            }
        }
        // The connection may be gone (it released its own domain).
        if let Some(c) = self.conns.get_mut(&id) {
            if off == input.len() {
                input.clear();
                off = 0;
            } else if off > 64 * 1024 {
                input.drain(..off);
                off = 0;
            }
            c.input = input;
            c.in_off = off;
        }
        result
    }

    /// Whether `id` has unprocessed complete or partial input.
    pub fn has_pending_input(&self, id: ConnId) -> bool {
        self.conns
            .get(&id)
            .is_some_and(|c| c.in_off < c.input.len())
    }

    fn who(&self, id: ConnId) -> Option<Who> {
        let c = self.conns.get(&id)?;
        let domid = c.domid();
        Some(Who {
            domid,
            privileged: matches!(c.binding, Binding::Socket) || domid == 0,
            target: self.domains.get(&domid).and_then(|d| d.target),
        })
    }

    fn mark_dirty(dirty: &mut Vec<ConnId>, id: ConnId, c: &mut Conn) {
        if !c.dirty {
            c.dirty = true;
            dirty.push(id);
        }
    }

    fn send(&mut self, id: ConnId, hdr: Header, ty: MsgType, payload: &[u8]) {
        if let Some(c) = self.conns.get_mut(&id) {
            // Payload size is checked by the caller; encode cannot fail here.
            let _ = wire::encode_into(&mut c.output, ty, hdr.req_id, hdr.tx_id, &[payload]);
            Self::mark_dirty(&mut self.dirty, id, c);
        }
    }

    fn send_error(&mut self, id: ConnId, hdr: Header, e: Errno) {
        let name = wire::errno_name(e);
        let mut p = [0u8; 16];
        p[..name.len()].copy_from_slice(name.as_bytes());
        self.send(id, hdr, MsgType::Error, &p[..=name.len()]);
    }

    fn handle(&mut self, id: ConnId, hdr: Header, payload: &[u8]) {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        let mut fires = Vec::new();
        let r = self.dispatch(id, hdr, payload, &mut out, &mut fires);
        match r {
            Ok(()) if out.len() > PAYLOAD_MAX => self.send_error(id, hdr, Errno::E2BIG),
            Ok(()) => self.send(id, hdr, hdr.ty, &out),
            Err(e) => self.send_error(id, hdr, e),
        }
        self.scratch = out;
        self.deliver(fires);
        // WATCH's first event follows its reply.
        if hdr.ty == MsgType::Watch && r.is_ok() {
            self.initial_watch_event(id);
        }
    }

    fn dispatch(
        &mut self,
        id: ConnId,
        hdr: Header,
        payload: &[u8],
        out: &mut Vec<u8>,
        fires: &mut Vec<Fire>,
    ) -> OpResult {
        let who = self.who(id).ok_or(Errno::EINVAL)?;
        use MsgType as T;
        let privileged_only = matches!(
            hdr.ty,
            T::Control
                | T::Introduce
                | T::Release
                | T::IsDomainIntroduced
                | T::Resume
                | T::SetTarget
        );
        if matches!(hdr.ty, T::WatchEvent | T::Error | T::Unknown(_)) {
            return Err(Errno::ENOSYS);
        }
        if privileged_only && !who.privileged {
            return Err(Errno::EACCES);
        }
        let uses_tx = !matches!(hdr.ty, T::Watch | T::Unwatch);
        if uses_tx && hdr.tx_id != 0 {
            let conn = self.conns.get(&id).ok_or(Errno::EINVAL)?;
            if !conn.txs.contains_key(&hdr.tx_id) {
                return Err(Errno::ENOENT);
            }
        }
        match hdr.ty {
            T::Read
            | T::Directory
            | T::DirectoryPart
            | T::GetPerms
            | T::Write
            | T::Mkdir
            | T::Rm
            | T::SetPerms => self.node_op(id, &who, hdr, payload, out, fires),
            T::Watch => self.op_watch(id, &who, payload, out),
            T::Unwatch => self.op_unwatch(id, payload, out),
            T::TransactionStart => self.op_tx_start(id, &who, hdr, out),
            T::TransactionEnd => self.op_tx_end(id, &who, hdr, payload, out, fires),
            T::Introduce => self.op_introduce(payload, out),
            T::Release => {
                let d = self.domid_arg(payload)?;
                self.release_domain(d)?;
                ok(out)
            }
            T::Resume => {
                let d = self.domid_arg(payload)?;
                self.resume_domain(d)?;
                ok(out)
            }
            T::GetDomainPath => {
                let d = wire::atou(wire::one_arg(payload).ok_or(Errno::EINVAL)?);
                out.extend_from_slice(path::domain_path(d).as_bytes());
                out.push(0);
                Ok(())
            }
            T::IsDomainIntroduced => {
                let d = wire::atou(wire::one_arg(payload).ok_or(Errno::EINVAL)?);
                let yes = d == DOMID_SELF || self.is_domain_introduced(d);
                out.extend_from_slice(if yes { b"T\0" } else { b"F\0" });
                Ok(())
            }
            T::SetTarget => self.op_set_target(payload, out),
            T::ResetWatches => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.watches.clear();
                    c.txs.clear();
                }
                ok(out)
            }
            T::Control => self.op_control(payload, out),
            T::WatchEvent | T::Error | T::Unknown(_) => Err(Errno::ENOSYS),
        }
    }

    fn home(&self, id: ConnId) -> String {
        self.conns
            .get(&id)
            .map_or_else(|| path::domain_path(0), |c| c.home.clone())
    }

    /// Runs a node operation in the right view (global or the request's transaction).
    fn node_op(
        &mut self,
        id: ConnId,
        who: &Who,
        hdr: Header,
        payload: &[u8],
        out: &mut Vec<u8>,
        fires: &mut Vec<Fire>,
    ) -> OpResult {
        // Special paths live outside the tree.
        if hdr.ty == MsgType::SetPerms
            && wire::strings(payload)
                .next()
                .is_some_and(|t| t.first() == Some(&b'@'))
        {
            return self.op_set_perms_special(who, payload, out);
        }
        let c = self.conns.get_mut(&id).ok_or(Errno::EINVAL)?;
        let mut tx = None;
        if hdr.tx_id != 0 {
            tx = Some(c.txs.remove(&hdr.tx_id).ok_or(Errno::ENOENT)?);
        }
        // Borrowed out for the operation, put back below.
        let home = std::mem::take(&mut c.home);
        let q = &self.quotas;
        let r = if tx
            .as_ref()
            .is_some_and(|t| !who.privileged && t.accessed() >= q.nodes_per_transaction)
        {
            Err(Errno::ENOSPC)
        } else {
            let mut view = View {
                tree: &mut self.tree,
                tx: tx.as_mut(),
            };
            let ctx = OpCtx {
                who,
                quotas: q,
                home: &home,
            };
            match hdr.ty {
                MsgType::Read => op_read(&mut view, &ctx, payload, out),
                MsgType::Directory => op_directory(&mut view, &ctx, payload, out),
                MsgType::DirectoryPart => op_directory_part(&mut view, &ctx, payload, out),
                MsgType::GetPerms => op_get_perms(&mut view, &ctx, payload, out),
                MsgType::Write => op_write(&mut view, &ctx, payload, out, fires),
                MsgType::Mkdir => op_mkdir(&mut view, &ctx, payload, out, fires),
                MsgType::Rm => op_rm(&mut view, &ctx, payload, out, fires),
                MsgType::SetPerms => op_set_perms(&mut view, &ctx, payload, out, fires),
                _ => Err(Errno::ENOSYS),
            }
        };
        if let Some(c) = self.conns.get_mut(&id) {
            c.home = home;
            if let Some(t) = tx {
                c.txs.insert(hdr.tx_id, t);
            }
        }
        r
    }

    fn op_set_perms_special(&mut self, who: &Who, payload: &[u8], out: &mut Vec<u8>) -> OpResult {
        let mut it = wire::strings(payload);
        let name = it.next().ok_or(Errno::EINVAL)?;
        let count = wire::count_strings(payload);
        if count < 2 {
            return Err(Errno::EINVAL);
        }
        if !who.privileged && count - 1 > self.quotas.perms_per_node {
            return Err(Errno::ENOSPC);
        }
        let perms = Permissions::parse_strings(it).map_err(|_| Errno::EINVAL)?;
        let slot = match name {
            b"@introduceDomain" => &mut self.introduce_perms,
            b"@releaseDomain" => &mut self.release_perms,
            _ => return Err(Errno::EINVAL),
        };
        let need = PERM_WRITE | PERM_OWNER;
        if perm_for(who, slot) & need != need {
            return Err(Errno::EACCES);
        }
        *slot = perms;
        ok(out)
    }

    fn op_watch(&mut self, id: ConnId, who: &Who, payload: &[u8], out: &mut Vec<u8>) -> OpResult {
        if wire::count_strings(payload) != 2 {
            return Err(Errno::EINVAL);
        }
        let mut it = wire::strings(payload);
        let raw = it.next().ok_or(Errno::EINVAL)?;
        let token = it.next().ok_or(Errno::EINVAL)?;
        let raw = std::str::from_utf8(raw).map_err(|_| Errno::EINVAL)?;
        let home = self.home(id);
        let (node, relative) = if path::is_special(raw) {
            if raw.len() > wire::REL_PATH_MAX {
                return Err(Errno::EINVAL);
            }
            (raw.to_owned(), None)
        } else {
            let relative = !raw.starts_with('/');
            let node = canonicalize(&home, raw).into_owned();
            if !path::is_valid_with_limit(&node, self.quotas.path_len) {
                return Err(Errno::EINVAL);
            }
            (node, relative.then_some(home))
        };
        let domid = who.domid;
        let domain_watches: usize = if who.privileged {
            0
        } else {
            self.conns
                .values()
                .filter(|c| c.domid() == domid)
                .map(|c| c.watches.len())
                .sum()
        };
        let conn = self.conns.get_mut(&id).ok_or(Errno::EINVAL)?;
        if conn
            .watches
            .iter()
            .any(|w| w.node == node && w.token == token)
        {
            return Err(Errno::EEXIST);
        }
        if !who.privileged && domain_watches >= self.quotas.watches_per_domain {
            return Err(Errno::E2BIG);
        }
        conn.watches.push(Watch {
            node,
            token: token.to_vec(),
            relative,
        });
        ok(out)
    }

    fn initial_watch_event(&mut self, id: ConnId) {
        let limit = self.quotas.output_per_connection;
        if let Some(c) = self.conns.get_mut(&id) {
            if let Some(w) = c.watches.last() {
                let p = watch_path(w, &w.node).to_owned();
                let tok = w.token.clone();
                queue_event(c, &p, &tok, limit);
                Self::mark_dirty(&mut self.dirty, id, c);
            }
        }
    }

    fn op_unwatch(&mut self, id: ConnId, payload: &[u8], out: &mut Vec<u8>) -> OpResult {
        if wire::count_strings(payload) != 2 {
            return Err(Errno::EINVAL);
        }
        let mut it = wire::strings(payload);
        let raw =
            std::str::from_utf8(it.next().ok_or(Errno::EINVAL)?).map_err(|_| Errno::EINVAL)?;
        let token = it.next().ok_or(Errno::EINVAL)?;
        let home = self.home(id);
        let node = if path::is_special(raw) {
            Cow::Borrowed(raw)
        } else {
            canonicalize(&home, raw)
        };
        let conn = self.conns.get_mut(&id).ok_or(Errno::EINVAL)?;
        let pos = conn
            .watches
            .iter()
            .position(|w| w.node == node && w.token == token)
            .ok_or(Errno::ENOENT)?;
        conn.watches.remove(pos);
        ok(out)
    }

    fn op_tx_start(&mut self, id: ConnId, who: &Who, hdr: Header, out: &mut Vec<u8>) -> OpResult {
        if hdr.tx_id != 0 {
            return Err(Errno::EBUSY);
        }
        let conn = self.conns.get_mut(&id).ok_or(Errno::EINVAL)?;
        if !who.privileged && conn.txs.len() >= self.quotas.transactions_per_connection {
            return Err(Errno::ENOSPC);
        }
        let mut tid = conn.next_tx;
        while tid == 0 || conn.txs.contains_key(&tid) {
            tid = tid.wrapping_add(1);
        }
        conn.next_tx = tid.wrapping_add(1);
        conn.txs.insert(tid, Transaction::default());
        let _ = write!(Bytes(out), "{tid}\0");
        Ok(())
    }

    fn op_tx_end(
        &mut self,
        id: ConnId,
        who: &Who,
        hdr: Header,
        payload: &[u8],
        out: &mut Vec<u8>,
        fires: &mut Vec<Fire>,
    ) -> OpResult {
        let commit = match wire::one_arg(payload) {
            Some(b"T") => true,
            Some(b"F") => false,
            _ => return Err(Errno::EINVAL),
        };
        if hdr.tx_id == 0 {
            return Err(Errno::ENOENT);
        }
        let conn = self.conns.get_mut(&id).ok_or(Errno::EINVAL)?;
        let tx = conn.txs.remove(&hdr.tx_id).ok_or(Errno::ENOENT)?;
        if commit {
            let limit = i64::try_from(self.quotas.nodes_per_domain).unwrap_or(i64::MAX);
            let unpriv = |d: u32| d != 0;
            let quota: Option<(i64, &dyn Fn(u32) -> bool)> = if who.privileged {
                None
            } else {
                Some((limit, &unpriv))
            };
            fires.extend(store::commit(&mut self.tree, tx, quota)?);
        }
        ok(out)
    }

    fn op_introduce(&mut self, payload: &[u8], out: &mut Vec<u8>) -> OpResult {
        if wire::count_strings(payload) < 3 {
            return Err(Errno::EINVAL);
        }
        let mut it = wire::strings(payload);
        let domid = wire::atou(it.next().unwrap_or_default());
        let gfn_s = std::str::from_utf8(it.next().unwrap_or_default()).unwrap_or("0");
        let gfn = gfn_s.trim().parse::<i64>().unwrap_or(0);
        let port = wire::atou(it.next().unwrap_or_default());
        if port == 0 {
            return Err(Errno::EINVAL);
        }
        self.introduce_domain_with(domid, gfn, port)?;
        ok(out)
    }

    fn domid_arg(&self, payload: &[u8]) -> Result<u32, Errno> {
        let d = wire::atou(wire::one_arg(payload).ok_or(Errno::EINVAL)?);
        if d == 0 {
            return Err(Errno::EINVAL);
        }
        Ok(d)
    }

    fn op_set_target(&mut self, payload: &[u8], out: &mut Vec<u8>) -> OpResult {
        if wire::count_strings(payload) < 2 {
            return Err(Errno::EINVAL);
        }
        let mut it = wire::strings(payload);
        let domid = wire::atou(it.next().unwrap_or_default());
        let target = wire::atou(it.next().unwrap_or_default());
        if !self.is_domain_introduced(target) || domid == 0 {
            return Err(Errno::ENOENT);
        }
        let d = self
            .domains
            .get_mut(&domid)
            .filter(|d| d.introduced)
            .ok_or(Errno::ENOENT)?;
        d.target = Some(target);
        ok(out)
    }

    fn op_control(&mut self, payload: &[u8], out: &mut Vec<u8>) -> OpResult {
        let mut it = wire::strings(payload);
        let cmd = it.next().ok_or(Errno::EINVAL)?;
        let args: Vec<&[u8]> = it.collect();
        match (cmd, args.as_slice()) {
            (b"check", []) => {
                self.tree.check().map_err(|_| Errno::EIO)?;
                ok(out)
            }
            (b"help", []) => {
                out.extend_from_slice(
                    b"Valid commands:\ncheck\nhelp\nlog on|off\nlogfile <file>\nprint <string>\n\
                      quota [set <name> <val>|<domid>]\nquota-soft [set <name> <val>]\n\0",
                );
                Ok(())
            }
            (b"log", [b"on" | b"off"]) | (b"logfile", [_]) => ok(out),
            (b"print", [s]) => {
                eprintln!("xenstored: {}", String::from_utf8_lossy(s));
                ok(out)
            }
            (b"quota", []) => {
                out.extend_from_slice(b"Quota settings:\n");
                for (name, value, what) in self.quota_table() {
                    let _ = writeln!(Bytes(out), "{name:<17}: {value:>8} {what}");
                }
                out.push(0);
                Ok(())
            }
            (b"quota", [b"set", name, value]) => {
                let v = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok())
                    .filter(|&v| v >= 1)
                    .ok_or(Errno::EINVAL)?;
                let q = &mut self.quotas;
                let slot = match *name {
                    b"nodes" => &mut q.nodes_per_domain,
                    b"watches" => &mut q.watches_per_domain,
                    b"transactions" => &mut q.transactions_per_connection,
                    b"transaction-nodes" => &mut q.nodes_per_transaction,
                    b"node-size" => &mut q.entry_size,
                    b"path-max" => &mut q.path_len,
                    b"permissions" => &mut q.perms_per_node,
                    _ => return Err(Errno::EINVAL),
                };
                *slot = v;
                ok(out)
            }
            (b"quota", [domid]) => {
                let domid = wire::atou(domid);
                if !self.is_domain_introduced(domid) {
                    return Err(Errno::ENOENT);
                }
                let conns = || self.conns.values().filter(|c| c.domid() == domid);
                let watches: usize = conns().map(|c| c.watches.len()).sum();
                let transactions: usize = conns().map(|c| c.txs.len()).sum();
                let _ = write!(
                    Bytes(out),
                    "Domain {domid}:\n{:<16}: {:>8}\n{:<16}: {watches:>8}\n\
                     {:<16}: {transactions:>8}\n\0",
                    "nodes",
                    self.tree.owned(domid),
                    "watches",
                    "transactions",
                );
                Ok(())
            }
            // No soft quotas: C xenstored's only one is memory, which this daemon does not count.
            (b"quota-soft", []) => {
                out.extend_from_slice(b"Quota settings:\n\0");
                Ok(())
            }
            _ => Err(Errno::EINVAL),
        }
    }

    /// The hard quotas as C xenstored's `CONTROL quota` lists them: name, value, description.
    fn quota_table(&self) -> [(&'static str, usize, &'static str); 7] {
        let q = &self.quotas;
        [
            ("nodes", q.nodes_per_domain, "Nodes per domain"),
            ("watches", q.watches_per_domain, "Watches per domain"),
            (
                "transactions",
                q.transactions_per_connection,
                "Transactions per domain",
            ),
            (
                "transaction-nodes",
                q.nodes_per_transaction,
                "Max. number of accessed nodes per transaction",
            ),
            ("node-size", q.entry_size, "Max. size of a node"),
            ("path-max", q.path_len, "Max. length of a node path"),
            (
                "permissions",
                q.perms_per_node,
                "Max. number of permissions per node",
            ),
        ]
    }

    /// Whether `domid` is introduced (dom0 always is).
    pub fn is_domain_introduced(&self, domid: u32) -> bool {
        domid == 0 || self.domains.get(&domid).is_some_and(|d| d.introduced)
    }

    /// Introduces a domain (as `XS_INTRODUCE` does), firing `@introduceDomain`. Introducing it
    /// again resets its connections' watches and transactions, as C xenstored does.
    ///
    /// # Errors
    ///
    /// EINVAL for dom0 and reserved domids.
    pub fn introduce_domain(&mut self, domid: u32) -> Result<(), Errno> {
        self.introduce_domain_with(domid, 0, 1)
    }

    fn introduce_domain_with(&mut self, domid: u32, gfn: i64, port: u32) -> Result<(), Errno> {
        if domid == 0 || domid >= DOMID_FIRST_RESERVED {
            return Err(Errno::EINVAL);
        }
        let d = self.domains.entry(domid).or_default();
        d.gfn = gfn;
        d.port = port;
        if d.introduced {
            for c in self
                .conns
                .values_mut()
                .filter(|c| c.binding == Binding::Domain(domid))
            {
                c.watches.clear();
                c.txs.clear();
            }
        } else {
            d.introduced = true;
            d.shutdown = false;
            self.deliver(vec![Fire {
                path: INTRODUCE_DOMAIN.into(),
                exact: true,
                perms: Vec::new(),
            }]);
        }
        Ok(())
    }

    /// Releases a domain (as `XS_RELEASE` does): closes its connections, deletes the nodes it
    /// owns, drops it from every permission list and fires `@releaseDomain`.
    ///
    /// # Errors
    ///
    /// EINVAL for dom0, ENOENT for a domain that is not introduced.
    pub fn release_domain(&mut self, domid: u32) -> Result<(), Errno> {
        if domid == 0 {
            return Err(Errno::EINVAL);
        }
        if !self.domains.get(&domid).is_some_and(|d| d.introduced) {
            return Err(Errno::ENOENT);
        }
        self.domains.remove(&domid);
        for d in self.domains.values_mut() {
            if d.target == Some(domid) {
                d.target = None;
            }
        }
        let gone: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.binding == Binding::Domain(domid))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.conns.remove(&id);
            self.closed.push(id);
        }
        // Delete nodes owned by the domain, shallowest first so each subtree goes at once.
        let mut owned: Vec<Box<str>> = self
            .tree
            .paths()
            .into_iter()
            .filter(|p| self.tree.get(p).is_some_and(|n| n.perms.owner() == domid))
            .collect();
        owned.sort_by_key(|p| (p.matches('/').count(), p.clone()));
        let mut fires = Vec::new();
        for p in owned {
            if &*p == "/" || self.tree.get(&p).is_none() {
                continue;
            }
            let mut view = View {
                tree: &mut self.tree,
                tx: None,
            };
            rm_subtree(&mut view, &p, &mut fires);
        }
        for p in self.tree.paths() {
            if let Some(n) = self.tree.get_mut_untracked(&p) {
                n.perms.remove_domid(domid);
            }
        }
        for sp in [&mut self.introduce_perms, &mut self.release_perms] {
            sp.remove_domid(domid);
            if sp.owner() == domid {
                sp.set_owner(0);
            }
        }
        fires.push(Fire {
            path: RELEASE_DOMAIN.into(),
            exact: true,
            perms: Vec::new(),
        });
        self.deliver(fires);
        Ok(())
    }

    /// Reports that a domain shut down or crashed: fires `@releaseDomain` once, until
    /// [`resume_domain`](Self::resume_domain) re-arms it (C xenstored's `check_domains`).
    ///
    /// # Errors
    ///
    /// ENOENT for a domain that is not introduced.
    pub fn domain_shutdown(&mut self, domid: u32) -> Result<(), Errno> {
        let d = self
            .domains
            .get_mut(&domid)
            .filter(|d| d.introduced)
            .ok_or(Errno::ENOENT)?;
        if !d.shutdown {
            d.shutdown = true;
            self.deliver(vec![Fire {
                path: RELEASE_DOMAIN.into(),
                exact: true,
                perms: Vec::new(),
            }]);
        }
        Ok(())
    }

    /// Re-arms `@releaseDomain` for a domain that resumed (as `XS_RESUME` does).
    ///
    /// # Errors
    ///
    /// EINVAL for dom0, ENOENT for a domain that is not introduced.
    pub fn resume_domain(&mut self, domid: u32) -> Result<(), Errno> {
        if domid == 0 {
            return Err(Errno::EINVAL);
        }
        let d = self
            .domains
            .get_mut(&domid)
            .filter(|d| d.introduced)
            .ok_or(Errno::ENOENT)?;
        d.shutdown = false;
        Ok(())
    }

    /// Queues watch events for every connection whose watches match and who may see them.
    fn deliver(&mut self, fires: Vec<Fire>) {
        if fires.is_empty() {
            return;
        }
        let limit = self.quotas.output_per_connection;
        let targets: HashMap<u32, u32> = self
            .domains
            .iter()
            .filter_map(|(d, x)| x.target.map(|t| (*d, t)))
            .collect();
        for f in &fires {
            let special = path::is_special(&f.path);
            for (&id, c) in self.conns.iter_mut() {
                if c.watches.is_empty() {
                    continue;
                }
                let domid = c.domid();
                let who = Who {
                    domid,
                    privileged: matches!(c.binding, Binding::Socket) || domid == 0,
                    target: targets.get(&domid).copied(),
                };
                let permitted = if special {
                    let sp = if f.path == INTRODUCE_DOMAIN {
                        &self.introduce_perms
                    } else {
                        &self.release_perms
                    };
                    perm_for(&who, sp) & PERM_READ != 0
                } else {
                    f.perms.iter().any(|p| perm_for(&who, p) & PERM_READ != 0)
                };
                if !permitted {
                    continue;
                }
                let mut hits: Vec<(String, Vec<u8>)> = Vec::new();
                for w in &c.watches {
                    let m = if f.exact {
                        f.path == w.node
                    } else {
                        path::is_child(&f.path, &w.node)
                    };
                    if m {
                        hits.push((watch_path(w, &f.path).to_owned(), w.token.clone()));
                    }
                }
                for (p, t) in &hits {
                    queue_event(c, p, t, limit);
                }
                if !hits.is_empty() {
                    Self::mark_dirty(&mut self.dirty, id, c);
                }
            }
        }
    }
}

/// Appends "OK".
fn ok(out: &mut Vec<u8>) -> OpResult {
    out.extend_from_slice(b"OK\0");
    Ok(())
}

struct Bytes<'a>(&'a mut Vec<u8>);
impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn watch_path<'a>(w: &Watch, fired: &'a str) -> &'a str {
    match &w.relative {
        Some(home) => {
            let rest = fired.strip_prefix(home.as_str()).unwrap_or(fired);
            rest.strip_prefix('/').unwrap_or(rest)
        }
        None => fired,
    }
}

fn queue_event(c: &mut Conn, path: &str, token: &[u8], limit: usize) {
    let len = path.len() + token.len() + 2;
    // Over-long events are never sent; a connection that does not read loses events rather
    // than growing without bound.
    if len > PAYLOAD_MAX || c.queued() + HEADER_LEN + len > limit + PAYLOAD_MAX + HEADER_LEN {
        return;
    }
    let _ = wire::encode_into(
        &mut c.output,
        MsgType::WatchEvent,
        0,
        0,
        &[path.as_bytes(), b"\0", token, b"\0"],
    );
}

fn canonicalize<'a>(home: &str, raw: &'a str) -> Cow<'a, str> {
    if raw.starts_with('/') || raw.starts_with('@') {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(format!("{home}/{raw}"))
    }
}

struct OpCtx<'a> {
    who: &'a Who,
    quotas: &'a Quotas,
    home: &'a str,
}

impl OpCtx<'_> {
    fn path<'p>(&self, raw: &'p [u8]) -> Result<Cow<'p, str>, Errno> {
        let raw = std::str::from_utf8(raw).map_err(|_| Errno::EINVAL)?;
        Ok(canonicalize(self.home, raw))
    }

    fn unprivileged(&self) -> bool {
        !self.who.privileged
    }
}

/// Reads `name` requiring `want` access. Errors hide whether an inaccessible node exists: they
/// become EACCES unless the nearest existing ancestor grants the caller some of `want`.
fn get_node(view: &mut View<'_>, ctx: &OpCtx<'_>, name: &str, want: u8) -> Result<(), Errno> {
    if !path::is_valid_with_limit(name, ctx.quotas.path_len) {
        return Err(Errno::EINVAL);
    }
    let err = match view.get(name) {
        Some(n) if perm_for(ctx.who, &n.perms) & want == want => return Ok(()),
        Some(_) => Errno::EACCES,
        None => Errno::ENOENT,
    };
    let mut p = name;
    loop {
        if p == "/" {
            return Err(Errno::EACCES);
        }
        p = path::parent(p);
        if let Some(n) = view.get(p) {
            return Err(if perm_for(ctx.who, &n.perms) & want != 0 {
                err
            } else {
                Errno::EACCES
            });
        }
    }
}

fn fire_perms(view: &View<'_>, name: &str) -> Vec<Permissions> {
    let mut v = Vec::with_capacity(2);
    if let Some(n) = view.peek(name) {
        v.push(n.perms.clone());
    }
    if name != "/" {
        if let Some(p) = view.peek(path::parent(name)) {
            if !v.contains(&p.perms) {
                v.push(p.perms.clone());
            }
        }
    }
    v
}

fn op_read(view: &mut View<'_>, ctx: &OpCtx<'_>, payload: &[u8], out: &mut Vec<u8>) -> OpResult {
    let name = ctx.path(wire::one_arg(payload).ok_or(Errno::EINVAL)?)?;
    get_node(view, ctx, &name, PERM_READ)?;
    let n = view.peek(&name).ok_or(Errno::ENOENT)?;
    out.extend_from_slice(&n.value);
    Ok(())
}

fn op_directory(
    view: &mut View<'_>,
    ctx: &OpCtx<'_>,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> OpResult {
    let name = ctx.path(wire::one_arg(payload).ok_or(Errno::EINVAL)?)?;
    get_node(view, ctx, &name, PERM_READ)?;
    let n = view.peek(&name).ok_or(Errno::ENOENT)?;
    if n.children_len() > PAYLOAD_MAX {
        return Err(Errno::E2BIG);
    }
    for c in &n.children {
        out.extend_from_slice(c.as_bytes());
        out.push(0);
    }
    Ok(())
}

fn op_directory_part(
    view: &mut View<'_>,
    ctx: &OpCtx<'_>,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> OpResult {
    if wire::count_strings(payload) != 2 {
        return Err(Errno::EINVAL);
    }
    let mut it = wire::strings(payload);
    let name = ctx.path(it.next().unwrap_or_default())?;
    let off = wire::atou(it.next().unwrap_or_default()) as usize;
    get_node(view, ctx, &name, PERM_READ)?;
    let n = view.peek(&name).ok_or(Errno::ENOENT)?;
    let _ = write!(Bytes(out), "{}\0", n.generation);
    let gen_len = out.len();
    let mut all = Vec::with_capacity(n.children_len());
    for c in &n.children {
        all.extend_from_slice(c.as_bytes());
        all.push(0);
    }
    if off >= all.len() {
        out.push(0);
        return Ok(());
    }
    // Whole names from the offset, as many as fit with the generation and a final nul.
    let max = PAYLOAD_MAX - gen_len - 1;
    let mut len = 0;
    let rest = &all[off..];
    while len < rest.len() {
        let name_len = rest[len..]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(rest.len() - len);
        if len + name_len >= max {
            break;
        }
        len += name_len + 1;
    }
    out.extend_from_slice(&rest[..len.min(rest.len())]);
    if off + len >= all.len() {
        out.push(0);
    }
    Ok(())
}

fn op_get_perms(
    view: &mut View<'_>,
    ctx: &OpCtx<'_>,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> OpResult {
    let name = ctx.path(wire::one_arg(payload).ok_or(Errno::EINVAL)?)?;
    get_node(view, ctx, &name, PERM_READ)?;
    let n = view.peek(&name).ok_or(Errno::ENOENT)?;
    n.perms.write_wire(out);
    Ok(())
}

/// Creates `name` and any missing ancestors; new nodes inherit their parent's permissions, and
/// unprivileged creators own what they create.
fn create_node(view: &mut View<'_>, ctx: &OpCtx<'_>, name: &str, value: &[u8]) -> OpResult {
    let mut missing = vec![name];
    let mut anc = path::parent(name);
    while view.get(anc).is_none() {
        if anc == "/" {
            return Err(Errno::EIO);
        }
        missing.push(anc);
        anc = path::parent(anc);
    }
    let mut parent = view.peek(anc).cloned().ok_or(Errno::EIO)?;
    let unpriv = ctx.unprivileged();
    if unpriv {
        let limit = i64::try_from(ctx.quotas.nodes_per_domain).unwrap_or(i64::MAX);
        let new = i64::try_from(missing.len()).unwrap_or(i64::MAX);
        if view.owned(ctx.who.domid) + new > limit {
            return Err(Errno::ENOSPC);
        }
    }
    // Build every node first so quota failures leave the tree untouched.
    let mut built: Vec<(&str, Node)> = Vec::with_capacity(missing.len() + 1);
    let mut perms = parent.perms.clone();
    if unpriv {
        perms.set_owner(ctx.who.domid);
    }
    parent
        .children
        .push(path::basename(missing[missing.len() - 1]).into());
    for (i, p) in missing.iter().rev().enumerate() {
        let mut n = Node::new(perms.clone());
        if i + 1 < missing.len() {
            n.children
                .push(path::basename(missing[missing.len() - 2 - i]).into());
        } else {
            n.value = value.to_vec();
        }
        built.push((p, n));
    }
    if unpriv
        && (parent.record_size() >= ctx.quotas.entry_size
            || built
                .iter()
                .any(|(_, n)| n.record_size() >= ctx.quotas.entry_size))
    {
        return Err(Errno::ENOSPC);
    }
    view.put(anc, parent);
    for (p, n) in built {
        view.put(p, n);
    }
    Ok(())
}

fn op_write(
    view: &mut View<'_>,
    ctx: &OpCtx<'_>,
    payload: &[u8],
    out: &mut Vec<u8>,
    fires: &mut Vec<Fire>,
) -> OpResult {
    let raw = wire::strings(payload).next().ok_or(Errno::EINVAL)?;
    let value = &payload[raw.len() + 1..];
    let name = ctx.path(raw)?;
    match get_node(view, ctx, &name, PERM_WRITE) {
        Ok(()) => {
            let mut n = view.peek(&name).cloned().ok_or(Errno::ENOENT)?;
            n.value = value.to_vec();
            if ctx.unprivileged() && n.record_size() >= ctx.quotas.entry_size {
                return Err(Errno::ENOSPC);
            }
            view.put(&name, n);
        }
        Err(Errno::ENOENT) => create_node(view, ctx, &name, value)?,
        Err(e) => return Err(e),
    }
    let perms = fire_perms(view, &name);
    view.fire(
        Fire {
            path: name.into_owned(),
            exact: false,
            perms,
        },
        fires,
    );
    ok(out)
}

fn op_mkdir(
    view: &mut View<'_>,
    ctx: &OpCtx<'_>,
    payload: &[u8],
    out: &mut Vec<u8>,
    fires: &mut Vec<Fire>,
) -> OpResult {
    let name = ctx.path(wire::one_arg(payload).ok_or(Errno::EINVAL)?)?;
    match get_node(view, ctx, &name, PERM_WRITE) {
        Ok(()) => {}
        Err(Errno::ENOENT) => {
            create_node(view, ctx, &name, &[])?;
            let perms = fire_perms(view, &name);
            view.fire(
                Fire {
                    path: name.into_owned(),
                    exact: false,
                    perms,
                },
                fires,
            );
        }
        Err(e) => return Err(e),
    }
    ok(out)
}

/// Deletes `root` and everything below it, firing watches as C xenstored does: exact events for
/// the descendants, a subtree event for `root`.
fn rm_subtree(view: &mut View<'_>, root: &str, fires: &mut Vec<Fire>) {
    let mut order = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        if let Some(n) = view.get(&p) {
            for c in &n.children {
                stack.push(path::join(&p, c));
            }
            order.push(p);
        }
    }
    for p in order.iter().rev() {
        let perms = fire_perms(view, p);
        view.fire(
            Fire {
                path: p.clone(),
                exact: p != root,
                perms,
            },
            fires,
        );
        view.delete(p);
    }
    let parent_name = path::parent(root);
    if let Some(mut parent) = view.get(parent_name).cloned() {
        let base = path::basename(root);
        parent.children.retain(|c| &**c != base);
        view.put(parent_name, parent);
    }
}

fn op_rm(
    view: &mut View<'_>,
    ctx: &OpCtx<'_>,
    payload: &[u8],
    out: &mut Vec<u8>,
    fires: &mut Vec<Fire>,
) -> OpResult {
    let name = ctx.path(wire::one_arg(payload).ok_or(Errno::EINVAL)?)?;
    match get_node(view, ctx, &name, PERM_WRITE) {
        Ok(()) => {}
        Err(Errno::ENOENT) => {
            // Removing a missing node is fine if its parent exists.
            return if view.get(path::parent(&name)).is_some() {
                ok(out)
            } else {
                Err(Errno::ENOENT)
            };
        }
        Err(e) => return Err(e),
    }
    if name == "/" {
        return Err(Errno::EINVAL);
    }
    rm_subtree(view, &name, fires);
    ok(out)
}

fn op_set_perms(
    view: &mut View<'_>,
    ctx: &OpCtx<'_>,
    payload: &[u8],
    out: &mut Vec<u8>,
    fires: &mut Vec<Fire>,
) -> OpResult {
    let count = wire::count_strings(payload);
    if count < 2 {
        return Err(Errno::EINVAL);
    }
    if ctx.unprivileged() && count - 1 > ctx.quotas.perms_per_node {
        return Err(Errno::ENOSPC);
    }
    let mut it = wire::strings(payload);
    let raw = it.next().ok_or(Errno::EINVAL)?;
    let perms = Permissions::parse_strings(it).map_err(|_| Errno::EINVAL)?;
    let name = ctx.path(raw)?;
    get_node(view, ctx, &name, PERM_WRITE | PERM_OWNER)?;
    let mut n = view.peek(&name).cloned().ok_or(Errno::ENOENT)?;
    if ctx.unprivileged() && perms.owner() != n.perms.owner() {
        return Err(Errno::EPERM);
    }
    let old = std::mem::replace(&mut n.perms, perms);
    if ctx.unprivileged() && n.record_size() >= ctx.quotas.entry_size {
        return Err(Errno::ENOSPC);
    }
    view.put(&name, n);
    let mut fp = fire_perms(view, &name);
    if !fp.contains(&old) {
        fp.push(old);
    }
    view.fire(
        Fire {
            path: name.into_owned(),
            exact: false,
            perms: fp,
        },
        fires,
    );
    ok(out)
}
