//! The xenstored protocol engine, free of I/O: connections feed it bytes and take its output.
//!
//! Semantics follow Xen 4.17's C xenstored where the protocol document is silent: error choices
//! (EACCES hiding the existence of nodes a caller may not see), node creation inheriting the
//! parent's permissions, watch permission checks, quota numbers and the order of checks.
//!
//! [`Core`] is one type; its methods are split by concern:
//!
//! - this file: the engine's state, permission arithmetic and request dispatch;
//! - `conn`: connections, their input and output buffers;
//! - `nodes`: node operations (read, write, mkdir, rm, directory, permissions) and the
//!   transactions they run in;
//! - `watches`: watch registration and event delivery, including the special `@` paths;
//! - `domains`: introduce, release, shutdown, resume and `SET_TARGET`;
//! - `control`: the `CONTROL` command (check, help, log, print, quota).

mod conn;
mod control;
mod domains;
mod nodes;
mod watches;

use std::borrow::Cow;
use std::collections::BTreeMap;

use nix::errno::Errno;

use self::conn::Conn;
use self::domains::Domain;
pub use self::domains::Introduction;
use super::store::{Fire, Tree};
use crate::path;
use crate::perms::{Access, Permissions};
use crate::wire::{self, Header, MsgType, PAYLOAD_MAX};

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
    /// Whether `XS_INTRODUCE` waits for the host ([`Core::defer_introductions`]).
    defer_introduce: bool,
    introductions: Vec<Introduction>,
    /// Set by a request whose reply comes later (a deferred introduction).
    reply_deferred: bool,
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
            defer_introduce: false,
            introductions: Vec::new(),
            reply_deferred: false,
        }
    }

    /// The quotas in force.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
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

    fn handle(&mut self, id: ConnId, hdr: Header, payload: &[u8]) {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        let mut fires = Vec::new();
        let r = self.dispatch(id, hdr, payload, &mut out, &mut fires);
        if std::mem::take(&mut self.reply_deferred) {
            self.scratch = out;
            return;
        }
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
            T::Introduce => self.op_introduce(id, hdr, payload, out),
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

fn canonicalize<'a>(home: &str, raw: &'a str) -> Cow<'a, str> {
    if raw.starts_with('/') || raw.starts_with('@') {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(format!("{home}/{raw}"))
    }
}
