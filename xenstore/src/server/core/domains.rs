//! Domains: introduce, release, shutdown and resume (from the wire or from the host), and
//! `SET_TARGET`.

use nix::errno::Errno;

use super::nodes::rm_subtree;
use super::{ok, Binding, ConnId, Core, OpResult, DOMID_FIRST_RESERVED};
use crate::path::{INTRODUCE_DOMAIN, RELEASE_DOMAIN};
use crate::server::store::{Fire, View};
use crate::wire::{self, Header, MsgType};

/// What the engine knows of an introduced domain.
#[derive(Debug, Default)]
pub(super) struct Domain {
    pub(super) introduced: bool,
    pub(super) target: Option<u32>,
    pub(super) shutdown: bool,
    pub(super) gfn: i64,
    pub(super) port: u32,
}

/// An `XS_INTRODUCE` waiting for the host to connect the domain's ring (see
/// [`Core::defer_introductions`]). Its sender waits for the reply, which
/// [`Core::complete_introduction`] sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introduction {
    /// The domain introduced.
    pub domid: u32,
    /// The frame of its store page as sent: a machine frame for a PV domain, a guest frame
    /// for a translated one (C xenstored ignores it and maps grant reference 1; oxenstored maps
    /// this frame).
    pub gfn: u64,
    /// Its end of the store event channel, for us to bind.
    pub port: u32,
    /// Whether the domain was introduced already (a second `XS_INTRODUCE`, after a resume:
    /// its connection is reset, not made anew).
    pub again: bool,
    conn: ConnId,
    hdr: Header,
}

impl Core {
    pub(super) fn op_introduce(
        &mut self,
        id: ConnId,
        hdr: Header,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> OpResult {
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
        if !self.defer_introduce {
            self.introduce_domain_with(domid, gfn, port)?;
            return ok(out);
        }
        if domid == 0 || domid >= DOMID_FIRST_RESERVED {
            return Err(Errno::EINVAL);
        }
        let again = self.is_domain_introduced(domid);
        self.introductions.push(Introduction {
            domid,
            // What the sender wrote, as an unsigned frame number (a negative one maps nothing).
            gfn: gfn_s.trim().parse::<u64>().unwrap_or(u64::MAX),
            port,
            again,
            conn: id,
            hdr,
        });
        if let Some(c) = self.conns.get_mut(&id) {
            c.held = true;
        }
        self.reply_deferred = true;
        Ok(())
    }

    /// From now on, `XS_INTRODUCE` from a connection is not answered at once: it is queued for
    /// the host ([`take_introductions`](Self::take_introductions)), which maps the domain's
    /// store ring and binds its event channel, then calls
    /// [`complete_introduction`](Self::complete_introduction). Meanwhile the sender's later
    /// requests wait, so its replies stay in order. A server that serves guest rings does this;
    /// without it, introducing only records the domain.
    pub fn defer_introductions(&mut self, on: bool) {
        self.defer_introduce = on;
    }

    /// The introductions waiting for the host, oldest first.
    pub fn take_introductions(&mut self) -> Vec<Introduction> {
        std::mem::take(&mut self.introductions)
    }

    /// Finishes a deferred introduction: with `Ok` (the host connected the ring) the domain is
    /// introduced as [`introduce_domain`](Self::introduce_domain) does; with `Err(e)` it is
    /// not, and the sender gets `e`, as C xenstored answers when it cannot map the ring. The
    /// sender's waiting requests resume.
    ///
    /// # Errors
    ///
    /// `result`'s error, or EINVAL for a domid that cannot be introduced.
    pub fn complete_introduction(
        &mut self,
        intro: Introduction,
        result: Result<(), Errno>,
    ) -> Result<(), Errno> {
        let gfn = i64::try_from(intro.gfn).unwrap_or(-1);
        let r = result.and_then(|()| self.introduce_domain_with(intro.domid, gfn, intro.port));
        if let Some(c) = self.conns.get_mut(&intro.conn) {
            c.held = false;
            Self::mark_dirty(&mut self.dirty, intro.conn, c);
        }
        match r {
            Ok(()) => self.send(intro.conn, intro.hdr, MsgType::Introduce, b"OK\0"),
            Err(e) => self.send_error(intro.conn, intro.hdr, e),
        }
        r
    }

    pub(super) fn domid_arg(&self, payload: &[u8]) -> Result<u32, Errno> {
        let d = wire::atou(wire::one_arg(payload).ok_or(Errno::EINVAL)?);
        if d == 0 {
            return Err(Errno::EINVAL);
        }
        Ok(d)
    }

    pub(super) fn op_set_target(&mut self, payload: &[u8], out: &mut Vec<u8>) -> OpResult {
        if wire::count_strings(payload) < 2 {
            return Err(Errno::EINVAL);
        }
        let mut it = wire::strings(payload);
        let domid = wire::atou(it.next().unwrap_or_default());
        let target = wire::atou(it.next().unwrap_or_default());
        if !self.is_domain_introduced(target) || domid == 0 {
            return Err(Errno::ENOENT);
        }
        let d = self.introduced_mut(domid)?;
        d.target = Some(target);
        ok(out)
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

    pub(super) fn introduce_domain_with(
        &mut self,
        domid: u32,
        gfn: i64,
        port: u32,
    ) -> Result<(), Errno> {
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
            self.fire_special(INTRODUCE_DOMAIN);
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
        let d = self.introduced_mut(domid)?;
        if !d.shutdown {
            d.shutdown = true;
            self.fire_special(RELEASE_DOMAIN);
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
        let d = self.introduced_mut(domid)?;
        d.shutdown = false;
        Ok(())
    }

    /// An introduced domain's record.
    fn introduced_mut(&mut self, domid: u32) -> Result<&mut Domain, Errno> {
        self.domains
            .get_mut(&domid)
            .filter(|d| d.introduced)
            .ok_or(Errno::ENOENT)
    }

    /// Fires `@introduceDomain` or `@releaseDomain` for the connections allowed to see it.
    fn fire_special(&mut self, special: &str) {
        self.deliver(vec![Fire {
            path: special.into(),
            exact: true,
            perms: Vec::new(),
        }]);
    }
}
