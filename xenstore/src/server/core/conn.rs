//! Connections: adding and removing them, their input and output buffers, and sending replies.

use std::collections::HashMap;

use nix::errno::Errno;

use super::watches::Watch;
use super::{Binding, Closed, ConnId, Core, Who};
use crate::path;
use crate::server::store::Transaction;
use crate::wire::{self, Header, MsgType};

/// One connection: who it speaks for, its buffers, watches and open transactions.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) binding: Binding,
    /// `/local/domain/<domid>`, the base of relative paths.
    pub(super) home: String,
    pub(super) input: Vec<u8>,
    pub(super) in_off: usize,
    pub(super) output: Vec<u8>,
    pub(super) out_off: usize,
    pub(super) watches: Vec<Watch>,
    pub(super) txs: HashMap<u32, Transaction>,
    pub(super) next_tx: u32,
    pub(super) dirty: bool,
    /// Waiting for the host to finish an `XS_INTRODUCE` it sent (see
    /// [`Core::take_introductions`]): its further requests wait, so replies stay in order.
    pub(super) held: bool,
    /// Broken beyond repair (its ring's data was corrupt): nothing is read from it or queued
    /// for it until it is reset, as C xenstored's `ignore_connection`.
    pub(super) ignored: bool,
}

impl Conn {
    pub(super) fn domid(&self) -> u32 {
        match self.binding {
            Binding::Socket => 0,
            Binding::Domain(d) => d,
        }
    }
    pub(super) fn queued(&self) -> usize {
        self.output.len() - self.out_off
    }
}

impl Core {
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
                held: false,
                ignored: false,
            },
        );
        Ok(id)
    }

    /// Forgets a connection, its watches and its transactions.
    pub fn remove_connection(&mut self, id: ConnId) {
        self.conns.remove(&id);
    }

    /// The domain connection `id` speaks for (0 for a socket client), if it exists.
    pub fn domid_of(&self, id: ConnId) -> Option<u32> {
        self.conns.get(&id).map(Conn::domid)
    }

    /// Number of live connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
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
        self.conns.get(&id).is_some_and(|c| {
            !c.held && !c.ignored && c.queued() <= self.quotas.output_per_connection
        })
    }

    /// Stops serving `id` without closing it, as C xenstored's `ignore_connection` does for a
    /// guest whose ring broke the protocol: its watches, transactions and buffered input and
    /// output go, nothing more is read from it or queued for it, and it stays (so its domain's
    /// release still finds it) until [`reset_connection`](Self::reset_connection) or release.
    pub fn ignore_connection(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(&id) {
            Self::clear_connection(c);
            c.ignored = true;
        }
    }

    /// Whether `id` is ignored ([`ignore_connection`](Self::ignore_connection)).
    pub fn is_ignored(&self, id: ConnId) -> bool {
        self.conns.get(&id).is_some_and(|c| c.ignored)
    }

    /// Resets `id` to a fresh connection of the same binding: no watches, transactions or
    /// buffered bytes, not ignored (a ring's reconnection, or a domain introduced again).
    pub fn reset_connection(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(&id) {
            Self::clear_connection(c);
            c.ignored = false;
        }
    }

    fn clear_connection(c: &mut Conn) {
        c.watches.clear();
        c.txs.clear();
        c.input = Vec::new();
        c.in_off = 0;
        c.output = Vec::new();
        c.out_off = 0;
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

    pub(super) fn who(&self, id: ConnId) -> Option<Who> {
        let c = self.conns.get(&id)?;
        let domid = c.domid();
        Some(Who {
            domid,
            privileged: matches!(c.binding, Binding::Socket) || domid == 0,
            target: self.domains.get(&domid).and_then(|d| d.target),
        })
    }

    pub(super) fn mark_dirty(dirty: &mut Vec<ConnId>, id: ConnId, c: &mut Conn) {
        if !c.dirty {
            c.dirty = true;
            dirty.push(id);
        }
    }

    pub(super) fn send(&mut self, id: ConnId, hdr: Header, ty: MsgType, payload: &[u8]) {
        if let Some(c) = self.conns.get_mut(&id).filter(|c| !c.ignored) {
            // Payload size is checked by the caller; encode cannot fail here.
            let _ = wire::encode_into(&mut c.output, ty, hdr.req_id, hdr.tx_id, &[payload]);
            Self::mark_dirty(&mut self.dirty, id, c);
        }
    }

    pub(super) fn send_error(&mut self, id: ConnId, hdr: Header, e: Errno) {
        let name = wire::errno_name(e);
        let mut p = [0u8; 16];
        p[..name.len()].copy_from_slice(name.as_bytes());
        self.send(id, hdr, MsgType::Error, &p[..=name.len()]);
    }

    pub(super) fn home(&self, id: ConnId) -> String {
        self.conns
            .get(&id)
            .map_or_else(|| path::domain_path(0), |c| c.home.clone())
    }
}
