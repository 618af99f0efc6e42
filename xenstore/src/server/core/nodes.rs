//! Node operations (read, write, mkdir, rm, directory, get and set permissions), the
//! permission check that hides inaccessible nodes, and the transactions they run in.

use std::borrow::Cow;
use std::fmt::Write as _;

use nix::errno::Errno;

use super::{
    canonicalize, ok, perm_for, Bytes, ConnId, Core, OpResult, Quotas, Who, PERM_OWNER, PERM_READ,
    PERM_WRITE,
};
use crate::path;
use crate::perms::Permissions;
use crate::server::store::{self, Fire, Node, Transaction, View};
use crate::wire::{self, Header, MsgType, PAYLOAD_MAX};

impl Core {
    /// Runs a node operation in the right view (global or the request's transaction).
    pub(super) fn node_op(
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

    pub(super) fn op_tx_start(
        &mut self,
        id: ConnId,
        who: &Who,
        hdr: Header,
        out: &mut Vec<u8>,
    ) -> OpResult {
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

    pub(super) fn op_tx_end(
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

/// The node a one-path request names, if the caller may read it.
fn readable_node<'v>(
    view: &'v mut View<'_>,
    ctx: &OpCtx<'_>,
    payload: &[u8],
) -> Result<&'v Node, Errno> {
    let name = ctx.path(wire::one_arg(payload).ok_or(Errno::EINVAL)?)?;
    get_node(view, ctx, &name, PERM_READ)?;
    view.peek(&name).ok_or(Errno::ENOENT)
}

fn op_read(view: &mut View<'_>, ctx: &OpCtx<'_>, payload: &[u8], out: &mut Vec<u8>) -> OpResult {
    let n = readable_node(view, ctx, payload)?;
    out.extend_from_slice(&n.value);
    Ok(())
}

fn op_directory(
    view: &mut View<'_>,
    ctx: &OpCtx<'_>,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> OpResult {
    let n = readable_node(view, ctx, payload)?;
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
    let n = readable_node(view, ctx, payload)?;
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
pub(super) fn rm_subtree(view: &mut View<'_>, root: &str, fires: &mut Vec<Fire>) {
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
