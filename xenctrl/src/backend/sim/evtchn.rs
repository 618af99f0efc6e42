//! Event channels in the simulated host: each domain's port table, with Xen 4.17's rules
//! (`xen/common/event_channel.c`, the 2-level ABI's pending and mask bits, the default XSM
//! policy).
//!
//! Every operation takes the calling domain (`caller`): the toolstack's hypercalls act as dom0,
//! a simulated `/dev/xen/evtchn` handle as the domain it was opened for. What the kernel behind
//! the device does (which handle owns a port, its ring of pending ports) is modelled in
//! `evtchn_dev`; this model only records that a port went pending while unmasked
//! ([`EvtchnEvent::Raised`]) or was closed ([`EvtchnEvent::Closed`]), and the simulator hands
//! those events to the handles at the end of the step.

use std::collections::BTreeMap;

use nix::errno::Errno;

use super::state::{SimDomainState, SimState, SIM_DOM0};
use crate::abi::{DomId, EvtchnPort, EvtchnStatus, DOMID_SELF, NR_VIRQS, VIRQ_DOM_EXC};
use crate::abi::{
    EVTCHNSTAT_closed, EVTCHNSTAT_interdomain, EVTCHNSTAT_unbound, EVTCHNSTAT_virq, VIRQ_DEBUG,
    VIRQ_TIMER, VIRQ_XENOPROF, VIRQ_XENPMU,
};

/// Xen allocates ports in buckets of a page of `struct evtchn` (64 bytes each on x86-64): a
/// port below the domain's highest bucket is valid (its status can be asked, answering closed
/// when free); one above it is `EINVAL`.
pub const EVTCHNS_PER_BUCKET: u32 = 64;
/// The 2-level ABI's port limit on x86-64 (64 × 64 bits); FIFO guests may go higher, but the
/// simulated domains have no kernel that switches to FIFO.
pub const EVTCHN_2L_NR_CHANNELS: u32 = 4096;

/// What a port is bound to (Xen's `ECS_*` states, free ports being absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimPortState {
    /// Port 0, which Xen reserves in every domain.
    Reserved,
    /// Waiting for `remote` to bind it.
    Unbound {
        /// The domain allowed to bind.
        remote: DomId,
    },
    /// Connected to `remote_port` of `remote`.
    Interdomain {
        /// The other end's domain.
        remote: DomId,
        /// The other end's port.
        remote_port: EvtchnPort,
    },
    /// Bound to virtual IRQ `virq` on vCPU 0.
    Virq(u32),
}

/// One port in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimPort {
    /// What it is bound to.
    pub state: SimPortState,
    /// The pending bit.
    pub pending: bool,
    /// The mask bit: a port that goes pending while masked raises nothing until unmasked.
    pub masked: bool,
}

impl SimPort {
    fn new(state: SimPortState) -> Self {
        SimPort {
            state,
            pending: false,
            masked: false,
        }
    }
}

/// A domain's event channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimEventChannels {
    /// The ports in use (port 0 is always there, reserved); a port not listed is free.
    pub ports: BTreeMap<EvtchnPort, SimPort>,
    /// Xen's `valid_evtchns`: ports below it are valid. It grows a bucket at a time as ports
    /// are allocated, and never shrinks.
    pub valid: u32,
}

impl Default for SimEventChannels {
    /// A new domain's table: port 0 reserved, one bucket valid.
    fn default() -> Self {
        let mut ports = BTreeMap::new();
        ports.insert(0, SimPort::new(SimPortState::Reserved));
        SimEventChannels {
            ports,
            valid: EVTCHNS_PER_BUCKET,
        }
    }
}

impl SimEventChannels {
    /// The port `port` if it is in use.
    pub fn port(&self, port: EvtchnPort) -> Option<&SimPort> {
        self.ports.get(&port)
    }

    fn is_valid(&self, port: EvtchnPort) -> bool {
        port < self.valid
    }

    /// The port bound to `virq`, if any.
    pub fn virq_port(&self, virq: u32) -> Option<EvtchnPort> {
        self.ports
            .iter()
            .find(|(_, p)| p.state == SimPortState::Virq(virq))
            .map(|(&n, _)| n)
    }
}

/// What happened to a port, for the simulated kernels behind `/dev/xen/evtchn` handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvtchnEvent {
    /// The port went pending while unmasked: its domain's kernel is told.
    Raised(DomId, EvtchnPort),
    /// The port was closed.
    Closed(DomId, EvtchnPort),
}

/// `virq_is_global`: per-vCPU virtual IRQs are bound once per vCPU, the others once per domain.
fn virq_is_global(virq: u32) -> bool {
    !matches!(virq, VIRQ_TIMER | VIRQ_DEBUG | VIRQ_XENOPROF | VIRQ_XENPMU)
}

impl SimState {
    /// `rcu_lock_domain_by_any_id` as `caller` sees it: `DOMID_SELF` is the caller.
    fn by_any_id(&self, caller: DomId, domid: DomId) -> Result<DomId, Errno> {
        let d = if domid == DOMID_SELF { caller } else { domid };
        self.domain(d).map(|_| d)
    }

    /// The default XSM policy's `XSM_TARGET`: a domain may act on itself; the control domain
    /// on any.
    fn xsm_target(caller: DomId, target: DomId) -> Result<(), Errno> {
        if caller == target || caller == SIM_DOM0 {
            Ok(())
        } else {
            Err(Errno::EPERM)
        }
    }

    fn evtchns(&self, domid: DomId) -> Result<&SimEventChannels, Errno> {
        Ok(&self.domain(domid)?.evtchn)
    }

    fn evtchns_mut(&mut self, domid: DomId) -> Result<&mut SimEventChannels, Errno> {
        Ok(&mut self.domain_mut(domid)?.evtchn)
    }

    /// `get_free_port` + `evtchn_allocate_port`: the lowest free port of `domid`, its bucket
    /// made valid. The port is not yet in use: the caller inserts it.
    fn free_port(&mut self, domid: DomId) -> Result<EvtchnPort, Errno> {
        let d = self.domain_mut(domid)?;
        if d.state == SimDomainState::Dying {
            return Err(Errno::EINVAL);
        }
        let max = d.config.max_evtchn_port.min(EVTCHN_2L_NR_CHANNELS - 1);
        let mut port = 0;
        for &p in d.evtchn.ports.keys() {
            if p != port {
                break;
            }
            port += 1;
        }
        if port > max {
            return Err(Errno::ENOSPC);
        }
        let t = &mut d.evtchn;
        if port >= t.valid {
            t.valid = (port / EVTCHNS_PER_BUCKET + 1) * EVTCHNS_PER_BUCKET;
        }
        Ok(port)
    }

    /// `EVTCHNOP_alloc_unbound` issued by `caller`: the lowest free port of `dom`, which
    /// `remote` may bind (`DOMID_SELF` means the caller, for either). Xen does not check that
    /// `remote` exists.
    ///
    /// # Errors
    ///
    /// `ESRCH` (no such `dom`), `ENOSPC` (no free port up to its `max_evtchn_port`), `EINVAL`
    /// (`dom` is dying), `EPERM` (a domain other than dom0 allocating in another domain).
    pub fn evtchn_alloc_unbound(
        &mut self,
        caller: DomId,
        dom: DomId,
        remote: DomId,
    ) -> Result<EvtchnPort, Errno> {
        let d = self.by_any_id(caller, dom)?;
        let port = self.free_port(d)?;
        Self::xsm_target(caller, d)?;
        let remote = if remote == DOMID_SELF { caller } else { remote };
        self.evtchns_mut(d)?
            .ports
            .insert(port, SimPort::new(SimPortState::Unbound { remote }));
        Ok(port)
    }

    /// `EVTCHNOP_alloc_unbound` from the toolstack (dom0).
    ///
    /// # Errors
    ///
    /// As for [`SimState::evtchn_alloc_unbound`].
    pub fn alloc_unbound(&mut self, dom: DomId, remote: DomId) -> Result<EvtchnPort, Errno> {
        self.evtchn_alloc_unbound(SIM_DOM0, dom, remote)
    }

    /// `EVTCHNOP_bind_interdomain` issued by `caller`: a fresh port of the caller connected to
    /// `remote_port` of `remote`, which must be unbound and waiting for the caller. As Xen does,
    /// the new local port is set pending (notifications sent to the unbound port were dropped).
    ///
    /// # Errors
    ///
    /// `ESRCH` (no such `remote`), `ENOSPC`/`EINVAL` (no free local port, the caller dying),
    /// `EINVAL` (the remote port is invalid, not unbound, or waits for another domain).
    pub fn evtchn_bind_interdomain(
        &mut self,
        caller: DomId,
        remote: DomId,
        remote_port: EvtchnPort,
    ) -> Result<EvtchnPort, Errno> {
        let rd = self.by_any_id(caller, remote)?;
        let lport = self.free_port(caller)?;
        let rt = self.evtchns(rd)?;
        let waiting = rt.is_valid(remote_port)
            && rt.port(remote_port).map(|p| p.state)
                == Some(SimPortState::Unbound { remote: caller });
        if !waiting {
            return Err(Errno::EINVAL);
        }
        self.evtchns_mut(caller)?.ports.insert(
            lport,
            SimPort::new(SimPortState::Interdomain {
                remote: rd,
                remote_port,
            }),
        );
        if let Some(r) = self.evtchns_mut(rd)?.ports.get_mut(&remote_port) {
            r.state = SimPortState::Interdomain {
                remote: caller,
                remote_port: lport,
            };
        }
        self.evtchn_set_pending(caller, lport);
        Ok(lport)
    }

    /// `EVTCHNOP_bind_virq` issued by `caller` for vCPU 0 (as Linux's `/dev/xen/evtchn` binds).
    ///
    /// # Errors
    ///
    /// `EINVAL` (`virq` ≥ `NR_VIRQS`), `ENOENT` (the caller has no vCPU 0 yet), `EEXIST` (the
    /// caller has it bound already), `ENOSPC`/`EINVAL` as for allocation.
    pub fn evtchn_bind_virq(&mut self, caller: DomId, virq: u32) -> Result<EvtchnPort, Errno> {
        if virq >= NR_VIRQS {
            return Err(Errno::EINVAL);
        }
        let d = self.domain(caller)?;
        if !d.vcpus_created || d.config.max_vcpus == 0 {
            return Err(Errno::ENOENT);
        }
        if d.evtchn.virq_port(virq).is_some() {
            return Err(Errno::EEXIST);
        }
        let port = self.free_port(caller)?;
        self.evtchns_mut(caller)?
            .ports
            .insert(port, SimPort::new(SimPortState::Virq(virq)));
        Ok(port)
    }

    /// `EVTCHNOP_close` issued by `caller`, on its own port: an interdomain peer goes back to
    /// unbound, waiting for the caller again.
    ///
    /// # Errors
    ///
    /// `EINVAL` (the port is invalid, free or reserved), `ESRCH` (no such caller).
    pub fn evtchn_close(&mut self, caller: DomId, port: EvtchnPort) -> Result<(), Errno> {
        let t = self.evtchns(caller)?;
        if !t.is_valid(port) {
            return Err(Errno::EINVAL);
        }
        let state = match t.port(port) {
            None
            | Some(SimPort {
                state: SimPortState::Reserved,
                ..
            }) => return Err(Errno::EINVAL),
            Some(p) => p.state,
        };
        self.evtchns_mut(caller)?.ports.remove(&port);
        self.evtchn_events.push(EvtchnEvent::Closed(caller, port));
        if let SimPortState::Interdomain {
            remote,
            remote_port,
        } = state
        {
            if let Some(r) = self
                .domains
                .get_mut(&remote)
                .and_then(|d| d.evtchn.ports.get_mut(&remote_port))
            {
                r.state = SimPortState::Unbound { remote: caller };
            }
        }
        Ok(())
    }

    /// `EVTCHNOP_send` issued by `caller` on its port: the other end of an interdomain channel
    /// goes pending; a send on an unbound port is dropped.
    ///
    /// # Errors
    ///
    /// `EINVAL` (the port is invalid, free, reserved or bound to a virtual IRQ).
    ///
    /// When the other end's domain has no vCPU yet, Xen 4.17 crashes (a NULL vCPU in
    /// `evtchn_2l_set_pending`), and so does the simulated host: it records
    /// [`SimState::crashed`] and answers `EIO` to this and every later call.
    pub fn evtchn_send(&mut self, caller: DomId, port: EvtchnPort) -> Result<(), Errno> {
        let t = self.evtchns(caller)?;
        if !t.is_valid(port) {
            return Err(Errno::EINVAL);
        }
        match t.port(port).map(|p| p.state) {
            Some(SimPortState::Interdomain {
                remote,
                remote_port,
            }) => {
                // Xen 4.17 sets the remote port pending through the vCPU it notifies; a domain
                // whose vCPUs `XEN_DOMCTL_max_vcpus` has not created yet has none, and Xen
                // dereferences the missing vCPU (`evtchn_2l_set_pending`): a fatal page fault
                // that takes the whole host down (seen on 4.17.7). The simulated host goes down
                // too (every later call answers EIO), so that no test passes here that crashes
                // real Xen, and no process using the simulator panics.
                if !self.domain(remote).is_ok_and(|d| d.vcpus_created) {
                    self.crashed = Some(format!(
                        "d{caller} sent an event on port {port} to port {remote_port} of \
                         d{remote}, which has no vCPU yet; Xen 4.17 takes a fatal page fault \
                         here (create the vCPUs with max_vcpus first)"
                    ));
                    return Err(Errno::EIO);
                }
                self.evtchn_set_pending(remote, remote_port);
                Ok(())
            }
            Some(SimPortState::Unbound { .. }) => Ok(()),
            _ => Err(Errno::EINVAL),
        }
    }

    /// `EVTCHNOP_status` issued by `caller`.
    ///
    /// # Errors
    ///
    /// `ESRCH` (no such `dom`), `EINVAL` (the port is invalid), `EPERM` (a domain other than
    /// dom0 asking about another domain).
    pub fn evtchn_status(
        &self,
        caller: DomId,
        dom: DomId,
        port: EvtchnPort,
    ) -> Result<EvtchnStatus, Errno> {
        let d = self.by_any_id(caller, dom)?;
        let t = self.evtchns(d)?;
        if !t.is_valid(port) {
            return Err(Errno::EINVAL);
        }
        Self::xsm_target(caller, d)?;
        let mut s = EvtchnStatus {
            dom,
            port,
            ..EvtchnStatus::default()
        };
        match t.port(port).map(|p| p.state) {
            None | Some(SimPortState::Reserved) => s.status = EVTCHNSTAT_closed,
            Some(SimPortState::Unbound { remote }) => {
                s.status = EVTCHNSTAT_unbound;
                s.set_remote_dom(remote);
            }
            Some(SimPortState::Interdomain {
                remote,
                remote_port,
            }) => {
                s.status = EVTCHNSTAT_interdomain;
                s.set_remote_dom(remote);
                s.u_port = remote_port;
            }
            Some(SimPortState::Virq(virq)) => {
                s.status = EVTCHNSTAT_virq;
                s.u_word = virq;
            }
        }
        Ok(s)
    }

    /// `EVTCHNOP_unmask` issued by `caller`: clear the mask bit; a pending port raises its
    /// event now.
    ///
    /// # Errors
    ///
    /// `EINVAL` (the port is invalid).
    pub fn evtchn_unmask(&mut self, caller: DomId, port: EvtchnPort) -> Result<(), Errno> {
        let t = self.evtchns_mut(caller)?;
        if !t.is_valid(port) {
            return Err(Errno::EINVAL);
        }
        if let Some(p) = t.ports.get_mut(&port) {
            p.masked = false;
            if p.pending {
                self.evtchn_events.push(EvtchnEvent::Raised(caller, port));
            }
        }
        Ok(())
    }

    /// `EVTCHNOP_reset` issued by `caller`: close every port of `dom`. Another domain must be
    /// paused by the toolstack (`controller_pause_count`), or Xen refuses.
    ///
    /// # Errors
    ///
    /// `ESRCH` (no such `dom`), `EPERM` (a domain other than dom0 resetting another domain),
    /// `EINVAL` (`dom` is another domain and not paused by the toolstack).
    pub fn evtchn_reset(&mut self, caller: DomId, dom: DomId) -> Result<(), Errno> {
        let d = self.by_any_id(caller, dom)?;
        Self::xsm_target(caller, d)?;
        if d != caller && self.domain(d)?.pause_count == 0 {
            return Err(Errno::EINVAL);
        }
        self.evtchn_close_all(d);
        Ok(())
    }

    /// Close every port of `domid` (`evtchn_reset`, `evtchn_destroy`).
    pub(super) fn evtchn_close_all(&mut self, domid: DomId) {
        let ports: Vec<EvtchnPort> = match self.domain(domid) {
            Ok(d) => d.evtchn.ports.keys().copied().filter(|&p| p != 0).collect(),
            Err(_) => return,
        };
        for port in ports {
            let _ = self.evtchn_close(domid, port);
        }
    }

    /// `evtchn_port_set_pending` (2-level): set the pending bit; if it was clear and the port
    /// is unmasked, the domain is told.
    pub(crate) fn evtchn_set_pending(&mut self, domid: DomId, port: EvtchnPort) {
        let Some(p) = self
            .domains
            .get_mut(&domid)
            .and_then(|d| d.evtchn.ports.get_mut(&port))
        else {
            return;
        };
        if p.pending {
            return;
        }
        p.pending = true;
        if !p.masked {
            self.evtchn_events.push(EvtchnEvent::Raised(domid, port));
        }
    }

    /// `send_global_virq`: raise `virq` on dom0 (the hardware domain, which handles every
    /// global virtual IRQ in the simulated host), if dom0 has it bound.
    pub(crate) fn send_global_virq(&mut self, virq: u32) {
        debug_assert!(virq_is_global(virq));
        if let Some(port) = self
            .domains
            .get(&SIM_DOM0)
            .and_then(|d| d.evtchn.virq_port(virq))
        {
            self.evtchn_set_pending(SIM_DOM0, port);
        }
    }

    /// A domain went away or shut down: `VIRQ_DOM_EXC` for dom0.
    pub(super) fn domain_exception(&mut self) {
        self.send_global_virq(VIRQ_DOM_EXC);
    }

    /// What a simulated kernel does when a raised port is delivered to a user: mask it and
    /// clear its pending bit (Linux's `lateeoi` acknowledgement). `false` if the port is not
    /// (or no longer) pending and unmasked.
    pub(crate) fn evtchn_take(&mut self, domid: DomId, port: EvtchnPort) -> bool {
        let Some(p) = self
            .domains
            .get_mut(&domid)
            .and_then(|d| d.evtchn.ports.get_mut(&port))
        else {
            return false;
        };
        if !p.pending || p.masked {
            return false;
        }
        p.pending = false;
        p.masked = true;
        true
    }

    /// Take the port events since the last call.
    pub(crate) fn take_evtchn_events(&mut self) -> Vec<EvtchnEvent> {
        std::mem::take(&mut self.evtchn_events)
    }

    /// Check the event channels' bookkeeping: interdomain ends point at each other, port 0 is
    /// reserved, every port is below `valid`.
    pub(super) fn check_evtchn_invariants(&self) -> Result<(), String> {
        for d in self.domains.values() {
            let t = &d.evtchn;
            if t.port(0).map(|p| p.state) != Some(SimPortState::Reserved) {
                return Err(format!("d{}: port 0 is not reserved", d.domid));
            }
            if t.valid % EVTCHNS_PER_BUCKET != 0 || t.valid > EVTCHN_2L_NR_CHANNELS {
                return Err(format!("d{}: valid_evtchns {}", d.domid, t.valid));
            }
            for (&port, p) in &t.ports {
                if port >= t.valid {
                    return Err(format!("d{}: port {port} beyond valid_evtchns", d.domid));
                }
                if let SimPortState::Interdomain {
                    remote,
                    remote_port,
                } = p.state
                {
                    let peer = self
                        .domains
                        .get(&remote)
                        .and_then(|r| r.evtchn.port(remote_port))
                        .map(|r| r.state);
                    let back = SimPortState::Interdomain {
                        remote: d.domid,
                        remote_port: port,
                    };
                    if peer != Some(back) {
                        return Err(format!(
                            "d{}: port {port} -> d{remote} port {remote_port}, which is {peer:?}",
                            d.domid
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
