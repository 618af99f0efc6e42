//! The node tree, generation counts and transaction overlays.
//!
//! Conflict detection follows C xenstored (`xenstored_transaction.c`): every modification stamps
//! the node with a fresh global generation; a transaction remembers the generation of each node
//! it *read* (or that it was absent) and, at commit, fails with EAGAIN if any of them changed.
//! Inside a transaction, the first access copies the node into the transaction, so later reads
//! see a stable value and writes stay private until commit.

use std::collections::HashMap;

use crate::path;
use crate::perms::Permissions;

/// Generation of a node that does not exist.
pub(crate) const NO_GENERATION: u64 = u64::MAX;

/// One node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Node {
    pub value: Vec<u8>,
    pub perms: Permissions,
    /// Child names, in creation order (as C xenstored lists them).
    pub children: Vec<Box<str>>,
    pub generation: u64,
}

impl Node {
    pub fn new(perms: Permissions) -> Self {
        Self {
            value: Vec::new(),
            perms,
            children: Vec::new(),
            generation: 0,
        }
    }

    /// The size C xenstored accounts for the node's database record: a 24-byte header, 8 bytes
    /// per permission, the value and the nul-separated child names.
    pub fn record_size(&self) -> usize {
        24 + 8 * self.perms.len()
            + self.value.len()
            + self.children.iter().map(|c| c.len() + 1).sum::<usize>()
    }

    /// Length of the child list on the wire (`name\0` for each child).
    pub fn children_len(&self) -> usize {
        self.children.iter().map(|c| c.len() + 1).sum()
    }
}

/// A modification that may fire watches: the path, whether only exact watches match, and the
/// permission sets any of which lets a watcher see the event (node, parent, previous perms).
#[derive(Clone, Debug)]
pub(crate) struct Fire {
    pub path: String,
    pub exact: bool,
    pub perms: Vec<Permissions>,
}

/// What a transaction knows about one node.
#[derive(Clone, Debug)]
struct TxEntry {
    /// Generation seen at first read (`NO_GENERATION` if absent).
    seen: u64,
    /// Whether `seen` must still hold at commit (the node was read before being written).
    check: bool,
    modified: bool,
    /// The transaction's view of the node.
    node: Option<Node>,
    /// Pending watch event: `Some(exact)`.
    fire: Option<bool>,
    fire_perms: Vec<Permissions>,
}

/// An open transaction.
#[derive(Debug, Default)]
pub(crate) struct Transaction {
    entries: HashMap<Box<str>, TxEntry>,
    /// Paths in first-access order, so commits fire watches deterministically.
    order: Vec<Box<str>>,
    /// Change in the number of nodes owned per domain, for quota checks.
    delta: HashMap<u32, i64>,
    pub created: bool,
}

impl Transaction {
    pub fn accessed(&self) -> usize {
        self.order.len()
    }
}

/// The global tree.
#[derive(Debug)]
pub(crate) struct Tree {
    nodes: HashMap<Box<str>, Node>,
    generation: u64,
    /// Nodes owned per domain.
    owned: HashMap<u32, i64>,
}

impl Tree {
    /// The tree C xenstored starts with: `/`, `/tool` and `/tool/xenstored`, owned by dom0 with no
    /// access for others.
    pub fn new() -> Self {
        let mut t = Self {
            nodes: HashMap::new(),
            generation: 0,
            owned: HashMap::new(),
        };
        let perms = Permissions::new(0, crate::perms::Access::NONE);
        let mut root = Node::new(perms.clone());
        root.children.push("tool".into());
        let mut tool = Node::new(perms.clone());
        tool.children.push("xenstored".into());
        for (p, mut n) in [
            ("/", root),
            ("/tool", tool),
            ("/tool/xenstored", Node::new(perms)),
        ] {
            t.generation += 1;
            n.generation = t.generation;
            t.nodes.insert(p.into(), n);
        }
        t.owned.insert(0, 3);
        t
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub fn owned(&self, domid: u32) -> i64 {
        self.owned.get(&domid).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    fn account(&mut self, old: Option<u32>, new: Option<u32>) {
        if old == new {
            return;
        }
        if let Some(o) = old {
            *self.owned.entry(o).or_insert(0) -= 1;
        }
        if let Some(n) = new {
            *self.owned.entry(n).or_insert(0) += 1;
        }
    }

    /// All paths, for whole-tree walks (domain release).
    pub fn paths(&self) -> Vec<Box<str>> {
        self.nodes.keys().cloned().collect()
    }

    /// Mutable access without a generation change: only for bookkeeping that C xenstored also does
    /// behind the generation's back (dropping permissions of released domains).
    pub fn get_mut_untracked(&mut self, path: &str) -> Option<&mut Node> {
        self.nodes.get_mut(path)
    }

    /// Checks the structural invariants: every non-root node's parent exists and lists it, every
    /// listed child exists, owner counts match. Used by tests and the fuzzer.
    pub fn check(&self) -> Result<(), String> {
        let mut owned: HashMap<u32, i64> = HashMap::new();
        for (p, n) in &self.nodes {
            *owned.entry(n.perms.owner()).or_insert(0) += 1;
            for c in &n.children {
                let cp = path::join(p, c);
                if !self.nodes.contains_key(cp.as_str()) {
                    return Err(format!("{p} lists missing child {c}"));
                }
            }
            if &**p != "/" {
                let parent = path::parent(p);
                let base = path::basename(p);
                match self.nodes.get(parent) {
                    Some(pn) if pn.children.iter().filter(|c| &***c == base).count() == 1 => {}
                    _ => return Err(format!("{p} is not listed exactly once by {parent}")),
                }
            }
        }
        owned.retain(|_, v| *v != 0);
        let mut mine = self.owned.clone();
        mine.retain(|_, v| *v != 0);
        if owned != mine {
            return Err(format!(
                "owner counts {mine:?} do not match the tree {owned:?}"
            ));
        }
        Ok(())
    }
}

/// The tree as seen by one request: the global tree, or a transaction's overlay on it.
pub(crate) struct View<'a> {
    pub tree: &'a mut Tree,
    pub tx: Option<&'a mut Transaction>,
}

impl View<'_> {
    /// Looks a node up and, inside a transaction, records the access for conflict checking.
    pub fn get(&mut self, path: &str) -> Option<&Node> {
        match self.tx.as_deref_mut() {
            None => self.tree.nodes.get(path),
            Some(tx) => {
                if !tx.entries.contains_key(path) {
                    let g = self.tree.nodes.get(path);
                    let entry = TxEntry {
                        seen: g.map_or(NO_GENERATION, |n| n.generation),
                        check: true,
                        modified: false,
                        node: g.cloned(),
                        fire: None,
                        fire_perms: Vec::new(),
                    };
                    tx.entries.insert(path.into(), entry);
                    tx.order.push(path.into());
                }
                tx.entries.get(path).and_then(|e| e.node.as_ref())
            }
        }
    }

    /// Looks a node up without recording anything.
    pub fn peek(&self, path: &str) -> Option<&Node> {
        if let Some(tx) = self.tx.as_deref() {
            if let Some(e) = tx.entries.get(path) {
                return e.node.as_ref();
            }
        }
        self.tree.nodes.get(path)
    }

    /// Nodes owned by `domid`, including this transaction's changes.
    pub fn owned(&self, domid: u32) -> i64 {
        let d = self
            .tx
            .as_deref()
            .and_then(|t| t.delta.get(&domid))
            .copied()
            .unwrap_or(0);
        self.tree.owned(domid) + d
    }

    fn tx_entry<'t>(tx: &'t mut Transaction, tree: &Tree, path: &str) -> &'t mut TxEntry {
        if !tx.entries.contains_key(path) {
            let g = tree.nodes.get(path);
            tx.entries.insert(
                path.into(),
                TxEntry {
                    seen: g.map_or(NO_GENERATION, |n| n.generation),
                    check: false,
                    modified: false,
                    node: g.cloned(),
                    fire: None,
                    fire_perms: Vec::new(),
                },
            );
            tx.order.push(path.into());
        }
        tx.entries.get_mut(path).expect("entry inserted above")
    }

    /// Stores a node (new or changed), stamping a fresh generation.
    pub fn put(&mut self, path: &str, mut node: Node) {
        node.generation = self.tree.next_generation();
        let new_owner = node.perms.owner();
        match self.tx.as_deref_mut() {
            None => {
                let old = self.tree.nodes.insert(path.into(), node);
                let old_owner = old.map(|n| n.perms.owner());
                self.tree.account(old_owner, Some(new_owner));
            }
            Some(tx) => {
                let e = Self::tx_entry(tx, self.tree, path);
                let old_owner = e.node.as_ref().map(|n| n.perms.owner());
                if old_owner.is_none() {
                    tx.created = true;
                }
                let e = tx.entries.get_mut(path).expect("entry exists");
                e.node = Some(node);
                e.modified = true;
                if old_owner != Some(new_owner) {
                    if let Some(o) = old_owner {
                        *tx.delta.entry(o).or_insert(0) -= 1;
                    }
                    *tx.delta.entry(new_owner).or_insert(0) += 1;
                }
            }
        }
    }

    /// Deletes one node (not its children: callers walk the subtree).
    pub fn delete(&mut self, path: &str) {
        self.tree.next_generation();
        match self.tx.as_deref_mut() {
            None => {
                if let Some(old) = self.tree.nodes.remove(path) {
                    self.tree.account(Some(old.perms.owner()), None);
                }
            }
            Some(tx) => {
                let e = Self::tx_entry(tx, self.tree, path);
                let old = e.node.take();
                e.modified = true;
                if let Some(o) = old {
                    *tx.delta.entry(o.perms.owner()).or_insert(0) -= 1;
                }
            }
        }
    }

    /// Records a watch event: inside a transaction it is queued until commit (a non-exact event
    /// replaces an exact one), outside it is returned for immediate delivery.
    pub fn fire(&mut self, fire: Fire, out: &mut Vec<Fire>) {
        match self.tx.as_deref_mut() {
            None => out.push(fire),
            Some(tx) => {
                let e = Self::tx_entry(tx, self.tree, &fire.path);
                e.fire = Some(match e.fire {
                    Some(prev) => prev && fire.exact,
                    None => fire.exact,
                });
                for p in fire.perms {
                    if !e.fire_perms.contains(&p) {
                        e.fire_perms.push(p);
                    }
                }
            }
        }
    }
}

/// Commits a transaction: EAGAIN if a node it read changed meanwhile, otherwise its changes
/// become global and its queued watch events are returned.
///
/// `quota` is `Some((limit, privileged_domids_excluded))` when node-count quotas apply: then
/// ENOSPC if the commit would leave an unprivileged domain owning more than `limit` nodes.
pub(crate) fn commit(
    tree: &mut Tree,
    tx: Transaction,
    quota: Option<(i64, &dyn Fn(u32) -> bool)>,
) -> Result<Vec<Fire>, nix::errno::Errno> {
    for p in &tx.order {
        let e = &tx.entries[p];
        if e.check {
            let now = tree.nodes.get(p).map_or(NO_GENERATION, |n| n.generation);
            if now != e.seen {
                return Err(nix::errno::Errno::EAGAIN);
            }
        }
    }
    if let (Some((limit, unprivileged)), true) = (quota, tx.created) {
        for (&domid, &d) in &tx.delta {
            if d > 0 && unprivileged(domid) && tree.owned(domid) + d > limit {
                return Err(nix::errno::Errno::ENOSPC);
            }
        }
    }
    let mut fires = Vec::new();
    let Transaction {
        mut entries, order, ..
    } = tx;
    for p in order {
        let Some(e) = entries.remove(&p) else {
            continue;
        };
        if e.modified {
            let old_owner = tree.nodes.get(&p).map(|n| n.perms.owner());
            match e.node {
                Some(mut n) => {
                    n.generation = tree.next_generation();
                    let owner = n.perms.owner();
                    tree.nodes.insert(p.clone(), n);
                    tree.account(old_owner, Some(owner));
                }
                None => {
                    tree.next_generation();
                    if tree.nodes.remove(&p).is_some() {
                        tree.account(old_owner, None);
                    }
                }
            }
        }
        if let Some(exact) = e.fire {
            fires.push(Fire {
                path: p.into(),
                exact,
                perms: e.fire_perms,
            });
        }
    }
    Ok(fires)
}
