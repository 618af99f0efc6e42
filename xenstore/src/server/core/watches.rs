//! Watches: registering and removing them, the first event on registration, and delivering
//! events to the connections allowed to see them, including the permissions of the special
//! `@introduceDomain` and `@releaseDomain` paths.

use std::borrow::Cow;
use std::collections::HashMap;

use nix::errno::Errno;

use super::conn::Conn;
use super::{
    canonicalize, ok, perm_for, Binding, ConnId, Core, OpResult, Who, PERM_OWNER, PERM_READ,
    PERM_WRITE,
};
use crate::path::{self, INTRODUCE_DOMAIN};
use crate::perms::Permissions;
use crate::server::store::Fire;
use crate::wire::{self, MsgType, HEADER_LEN, PAYLOAD_MAX};

/// A registered watch.
#[derive(Debug)]
pub(super) struct Watch {
    /// Absolute path or `@special`.
    node: String,
    token: Vec<u8>,
    /// The home prefix to strip from event paths when registered with a relative path.
    relative: Option<String>,
}

impl Core {
    pub(super) fn op_set_perms_special(
        &mut self,
        who: &Who,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> OpResult {
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

    pub(super) fn op_watch(
        &mut self,
        id: ConnId,
        who: &Who,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> OpResult {
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

    pub(super) fn initial_watch_event(&mut self, id: ConnId) {
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

    pub(super) fn op_unwatch(&mut self, id: ConnId, payload: &[u8], out: &mut Vec<u8>) -> OpResult {
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

    /// Queues watch events for every connection whose watches match and who may see them.
    pub(super) fn deliver(&mut self, fires: Vec<Fire>) {
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
