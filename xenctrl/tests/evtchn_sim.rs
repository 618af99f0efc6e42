//! Event channels on the simulator, where a test can also play the guest: a dom0 handle and a
//! guest handle bound to each other, what only the simulator can show (a guest's errors, the
//! exact ring size, `VIRQ_DOM_EXC` in a dom0 without xenstored, handles in other
//! "processes"), and the model's bookkeeping after each step. The shared suite
//! (`tests/suite/mod.rs`) runs the dom0 side on the simulator and on real Xen.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use xenctrl::backend::sim::{SimPortState, SimState};
use xenctrl::evtchn::{ChannelState, EventChannels, Port, Virq};
use xenctrl::{CreateDomain, DomainId, Errno, Error, SimHypervisor, XenCtrl};

const DOM0: DomainId = DomainId::DOM0;
const FIRE: Duration = Duration::from_secs(10);

struct Host {
    sim: Arc<SimHypervisor>,
    xc: XenCtrl,
}

impl Host {
    fn new() -> Self {
        let sim = Arc::new(SimHypervisor::default());
        let xc = XenCtrl::on_simulator(Arc::clone(&sim)).expect("open the simulator");
        Host { sim, xc }
    }

    /// A PV guest with its vCPU (so that it can bind virtual IRQs).
    fn guest(&self) -> DomainId {
        let d = self.xc.create_domain(&CreateDomain::pv(1)).expect("create");
        self.xc.set_max_vcpus(d, 1).expect("max_vcpus");
        DomainId::new(d)
    }

    fn handle(&self, dom: DomainId) -> EventChannels {
        EventChannels::on_simulator(Arc::clone(&self.sim), dom).expect("a simulated handle")
    }

    fn state(&self, dom: DomainId, port: Port) -> ChannelState {
        self.xc.evtchn_status(dom, port).expect("status").state
    }

    fn port(&self, dom: DomainId, port: Port) -> Option<xenctrl::backend::sim::SimPort> {
        self.sim.with_state(|s| {
            s.domain(dom.get())
                .ok()
                .and_then(|d| d.evtchn.port(port.get()).copied())
        })
    }

    fn check(&self) {
        self.sim
            .with_state(|s| s.check_invariants())
            .expect("the model's invariants hold");
    }
}

fn fired(ev: &EventChannels) -> Port {
    ev.wait_timeout(FIRE).expect("wait").expect("a port fires")
}

fn drained(ev: &EventChannels) -> Vec<Port> {
    ev.pending()
        .collect::<Result<Vec<_>, _>>()
        .expect("read the queue")
}

fn errno<T: std::fmt::Debug>(r: Result<T, Error>) -> Errno {
    r.expect_err("an error").errno().expect("an errno")
}

fn readable(ev: &EventChannels) -> bool {
    let mut fds = [PollFd::new(ev.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).expect("poll") == 1
}

/// Dom0 and a guest, each with its own handle, bound both ways round: the guest offers a port
/// to dom0 (a frontend's ring), and dom0 offers one to the guest.
#[test]
fn dom0_and_a_guest_exchange_events_both_ways() {
    let h = Host::new();
    let g = h.guest();
    let dom0 = h.handle(DOM0);
    let domu = h.handle(g);

    let offered = domu.bind_unbound(DOM0).unwrap();
    assert_eq!(
        h.state(g, offered.port()),
        ChannelState::Unbound { remote: DOM0 }
    );
    let back = dom0.bind_interdomain(g, offered.port()).unwrap();
    assert_eq!(
        drained(&dom0),
        [back.port()],
        "the freshly bound port fires once"
    );
    assert!(drained(&domu).is_empty());
    back.unmask().unwrap();
    h.check();

    for _ in 0..3 {
        back.notify().unwrap();
        assert_eq!(drained(&domu), [offered.port()]);
        assert!(drained(&dom0).is_empty(), "only the other end fires");
        offered.unmask().unwrap();
        offered.notify().unwrap();
        assert_eq!(drained(&dom0), [back.port()]);
        back.unmask().unwrap();
    }

    let to_guest = dom0.bind_unbound(g).unwrap();
    let front = domu.bind_interdomain(DOM0, to_guest.port()).unwrap();
    assert_eq!(drained(&domu), [front.port()]);
    front.unmask().unwrap();
    to_guest.notify().unwrap();
    assert_eq!(drained(&domu), [front.port()]);
    assert_eq!(
        h.state(DOM0, to_guest.port()),
        ChannelState::Interdomain {
            remote: g,
            remote_port: front.port()
        }
    );
    h.check();
    drop((offered, back, to_guest, front));
    h.xc.destroy_domain(g.get()).unwrap();
    h.check();
}

/// A blocked `wait` in one thread is woken by a notification from another.
#[test]
fn a_blocked_wait_is_woken_by_another_thread() {
    let h = Host::new();
    let g = h.guest();
    let dom0 = h.handle(DOM0);
    let domu = h.handle(g);
    let offered = domu.bind_unbound(DOM0).unwrap();
    let back = dom0.bind_interdomain(g, offered.port()).unwrap();
    assert_eq!(fired(&dom0), back.port());
    std::thread::scope(|s| {
        let waiter = s.spawn(|| domu.wait().unwrap());
        // Notify until the waiter has its port (it may not be blocked yet at the first).
        while !waiter.is_finished() {
            back.notify().unwrap();
            std::thread::yield_now();
        }
        assert_eq!(waiter.join().unwrap(), offered.port());
    });
}

/// What the handle does with ports: masked once fired, unmask delivers what arrived meanwhile,
/// `unmask` of a port not fired or not ours changes nothing, `reset` drops the queue.
#[test]
fn fired_ports_are_masked_until_unmasked() {
    let h = Host::new();
    let ev = h.handle(DOM0);
    let a = ev.bind_unbound(DOM0).unwrap();
    let b = ev.bind_interdomain(DOM0, a.port()).unwrap();
    assert_eq!(drained(&ev), [b.port()]);
    assert!(
        h.port(DOM0, b.port()).unwrap().masked,
        "a fired port is masked"
    );
    b.unmask().unwrap();
    assert!(!h.port(DOM0, b.port()).unwrap().masked);

    b.notify().unwrap();
    b.notify().unwrap();
    assert_eq!(drained(&ev), [a.port()], "one event while masked");
    let pa = h.port(DOM0, a.port()).unwrap();
    assert!(
        pa.masked && pa.pending,
        "the second notification is pending in Xen"
    );
    a.unmask().unwrap();
    assert_eq!(drained(&ev), [a.port()], "delivered at the unmask");
    a.unmask().unwrap();
    a.unmask().unwrap();
    assert!(
        drained(&ev).is_empty(),
        "unmasking an enabled port delivers nothing"
    );

    // reset drops the queue but not the mask.
    b.notify().unwrap();
    assert!(readable(&ev));
    ev.reset().unwrap();
    assert!(!readable(&ev));
    assert!(drained(&ev).is_empty());
    assert!(h.port(DOM0, a.port()).unwrap().masked);
    b.notify().unwrap();
    assert!(drained(&ev).is_empty());
    a.unmask().unwrap();
    assert_eq!(drained(&ev), [a.port()]);
    h.check();
}

/// The queue holds 64 ports for a handle with up to 64 bound (Linux's first ring size), so the
/// 65th undelivered event overflows it; `reset` clears that.
#[test]
fn the_queue_overflows_at_64_ports() {
    let h = Host::new();
    let ev = h.handle(DOM0);
    let a = ev.bind_unbound(DOM0).unwrap();
    let b = ev.bind_interdomain(DOM0, a.port()).unwrap(); // queued: b
    for _ in 0..63 {
        b.notify().unwrap();
        a.unmask().unwrap();
    }
    assert!(readable(&ev));
    let all = drained(&ev);
    assert_eq!(all.len(), 64, "b once, a 63 times");
    for _ in 0..64 {
        a.unmask().unwrap();
        b.notify().unwrap();
    }
    a.unmask().unwrap();
    b.notify().unwrap();
    assert!(readable(&ev), "an overflowed handle is readable");
    assert!(matches!(ev.pending().next(), Some(Err(Error::EventsLost))));
    assert!(matches!(ev.wait(), Err(Error::EventsLost)));
    ev.reset().unwrap();
    assert!(!readable(&ev));
    a.unmask().unwrap();
    b.notify().unwrap();
    assert_eq!(drained(&ev), [a.port()]);
}

/// Dropping a bound port closes it; closing the handle closes every port it bound, kept ones
/// too; a port closed behind the handle's back is no longer the handle's.
#[test]
fn ports_are_unbound_on_drop() {
    let h = Host::new();
    let g = h.guest();
    let ev = h.handle(DOM0);
    let a = ev.bind_unbound(g).unwrap();
    let ap = a.port();
    assert!(h.port(DOM0, ap).is_some());
    drop(a);
    assert!(h.port(DOM0, ap).is_none(), "dropping unbinds");

    let kept = ev.bind_unbound(g).unwrap().into_port();
    let v = ev.bind_virq(Virq::DOM_EXC).unwrap().into_port();
    let remote = h.xc.evtchn_alloc_unbound_port(g, DOM0).unwrap();
    let bound = ev.bind_interdomain(g, remote).unwrap().into_port();
    drop(ev);
    for p in [kept, v, bound] {
        assert_eq!(h.state(DOM0, p), ChannelState::Closed, "port {p}");
    }
    assert_eq!(
        h.state(g, remote),
        ChannelState::Unbound { remote: DOM0 },
        "the guest's end waits again"
    );

    // The guest's handle loses its ports when the guest is destroyed.
    let domu = h.handle(g);
    let gp = domu.bind_unbound(DOM0).unwrap();
    h.xc.destroy_domain(g.get()).unwrap();
    assert_eq!(errno(domu.notify(gp.port())), Errno::ENOTCONN);
    assert_eq!(errno(gp.unbind()), Errno::ENOTCONN);
    h.check();
}

/// Errors only a guest's handle can meet, and the default XSM policy for a guest acting on
/// another domain.
#[test]
fn a_guests_errors() {
    let h = Host::new();
    let nobody = DomainId::new(999);
    assert_eq!(
        errno(EventChannels::on_simulator(Arc::clone(&h.sim), nobody)),
        Errno::ESRCH
    );
    let bare = DomainId::new(h.xc.create_domain(&CreateDomain::pv(1)).unwrap());
    let ev = h.handle(bare);
    assert_eq!(
        errno(ev.bind_virq(Virq::DOM_EXC)),
        Errno::ENOENT,
        "no vCPU 0 before max_vcpus"
    );
    h.xc.set_max_vcpus(bare.get(), 1).unwrap();
    let v = ev.bind_virq(Virq::DOM_EXC).unwrap();
    assert_eq!(h.state(bare, v.port()), ChannelState::Virq(Virq::DOM_EXC));
    assert_eq!(errno(ev.bind_virq(Virq::DOM_EXC)), Errno::EEXIST);
    // A guest's VIRQ_DOM_EXC never fires: Xen sends global virtual IRQs to dom0.
    h.xc.destroy_domain(h.guest().get()).unwrap();
    assert!(drained(&ev).is_empty());

    let g = bare.get();
    h.sim.with_state(|s| {
        assert_eq!(s.evtchn_alloc_unbound(g, 0, g), Err(Errno::EPERM));
        assert_eq!(s.evtchn_status(g, 0, 0).map(|_| ()), Err(Errno::EPERM));
        assert_eq!(s.evtchn_reset(g, 0), Err(Errno::EPERM));
        assert_eq!(s.evtchn_alloc_unbound(g, 999, 0), Err(Errno::ESRCH));
        // The same calls on itself are fine (reset of itself needs no pause).
        assert!(s.evtchn_status(g, g, 0).is_ok());
        assert!(s
            .evtchn_alloc_unbound(g, xenctrl::abi::DOMID_SELF, 0)
            .is_ok());
        assert_eq!(s.evtchn_reset(g, g), Ok(()));
    });
    // The reset closed the virtual IRQ's port behind the handle's back.
    assert_eq!(errno(v.unbind()), Errno::ENOTCONN);
    h.check();
}

/// `VIRQ_DOM_EXC` in a dom0 without xenstored: raised when a domain shuts down and when one
/// is destroyed, once per pending (coalesced while the port is masked).
#[test]
fn virq_dom_exc_fires_on_shutdown_and_destroy() {
    let h = Host::new();
    let ev = h.handle(DOM0);
    let v = ev.bind_virq(Virq::DOM_EXC).unwrap();
    assert!(drained(&ev).is_empty());
    let g = h.guest();
    assert!(drained(&ev).is_empty(), "creating raises nothing");
    h.sim.with_state(|s| s.shutdown(g.get(), 0)).unwrap();
    assert_eq!(drained(&ev), [v.port()], "a shutdown raises it");
    v.unmask().unwrap();
    h.xc.destroy_domain(g.get()).unwrap();
    assert_eq!(drained(&ev), [v.port()], "a destroy raises it");
    // Two destroys while masked: one event at the unmask.
    h.xc.destroy_domain(h.guest().get()).unwrap();
    h.xc.destroy_domain(h.guest().get()).unwrap();
    assert!(drained(&ev).is_empty());
    v.unmask().unwrap();
    assert_eq!(drained(&ev), [v.port()]);
    h.check();
}

/// A handle of dom0 restricted to a guest binds only that guest's ports.
#[test]
fn a_restricted_handle_binds_only_its_domain() {
    let h = Host::new();
    let (g1, g2) = (h.guest(), h.guest());
    let ev = h.handle(DOM0);
    let early = ev.bind_unbound(g2).unwrap();
    ev.restrict(g1).unwrap();
    let p1 = h.xc.evtchn_alloc_unbound_port(g1, DOM0).unwrap();
    let p2 = h.xc.evtchn_alloc_unbound_port(g2, DOM0).unwrap();
    assert_eq!(errno(ev.bind_interdomain(g2, p2)), Errno::EACCES);
    let b1 = ev.bind_interdomain(g1, p1).unwrap();
    assert_eq!(drained(&ev), [b1.port()]);
    early
        .notify()
        .expect("ports bound before the restriction still work");
    assert_eq!(errno(ev.restrict(g2)), Errno::EACCES);
    drop((early, b1));
    h.check();
}

/// Two simulators on one state file stand for two processes: the port table is shared, and a
/// handle sees a port that the other "process" raised when it next reads, or within its wait.
#[test]
fn a_persistent_host_delivers_across_processes() {
    let dir = std::env::temp_dir().join(format!("xenctrl-evtchn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("host");
    let _ = std::fs::remove_file(&path);
    let one = Arc::new(SimHypervisor::persistent(&path, Default::default()).unwrap());
    let two = Arc::new(SimHypervisor::persistent(&path, Default::default()).unwrap());
    let ev1 = EventChannels::on_simulator(Arc::clone(&one), DOM0).unwrap();
    let ev2 = EventChannels::on_simulator(Arc::clone(&two), DOM0).unwrap();
    let a = ev1.bind_unbound(DOM0).unwrap();
    let b = ev2.bind_interdomain(DOM0, a.port()).unwrap();
    assert_eq!(drained(&ev2), [b.port()]);
    b.unmask().unwrap();
    b.notify().unwrap();
    assert_eq!(drained(&ev1), [a.port()], "read picks it up");
    a.unmask().unwrap();
    b.notify().unwrap();
    let start = Instant::now();
    assert_eq!(ev1.wait_timeout(FIRE).unwrap(), Some(a.port()));
    assert!(start.elapsed() < Duration::from_secs(1));
    a.notify().unwrap();
    assert_eq!(ev2.wait_timeout(FIRE).unwrap(), Some(b.port()));
    one.with_state(|s| {
        assert_eq!(
            s.domain(0)
                .unwrap()
                .evtchn
                .port(a.port().get())
                .map(|p| p.state),
            Some(SimPortState::Interdomain {
                remote: 0,
                remote_port: b.port().get()
            })
        );
        s.check_invariants().unwrap();
    });
    drop((a, b));
    drop((ev1, ev2));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Status of each state straight from the model matches what `EVTCHNOP_status` decodes, for
/// every port of a busy host.
#[test]
fn status_agrees_with_the_model_for_every_port() {
    let h = Host::new();
    let g = h.guest();
    let ev = h.handle(DOM0);
    let _a = ev.bind_unbound(g).unwrap();
    let p = h.xc.evtchn_alloc_unbound_port(g, DOM0).unwrap();
    let _b = ev.bind_interdomain(g, p).unwrap();
    let _v = ev.bind_virq(Virq::DOM_EXC).unwrap();
    let model: Vec<(u32, Option<SimPortState>)> = h.sim.with_state(|s: &mut SimState| {
        let t = &s.domain(0).unwrap().evtchn;
        (0..t.valid)
            .map(|n| (n, t.port(n).map(|p| p.state)))
            .collect()
    });
    for (n, st) in model {
        let want = match st {
            None | Some(SimPortState::Reserved) => ChannelState::Closed,
            Some(SimPortState::Unbound { remote }) => ChannelState::Unbound {
                remote: DomainId::new(remote),
            },
            Some(SimPortState::Interdomain {
                remote,
                remote_port,
            }) => ChannelState::Interdomain {
                remote: DomainId::new(remote),
                remote_port: Port::new(remote_port),
            },
            Some(SimPortState::Virq(v)) => ChannelState::Virq(Virq::new(v)),
        };
        assert_eq!(h.state(DOM0, Port::new(n)), want, "port {n}");
    }
}

/// Xen 4.17 crashes (a fatal page fault in `evtchn_2l_set_pending`, seen in the VM) when an
/// event is sent to a domain whose vCPUs do not exist yet; the simulated host goes down too:
/// that call and every later one fail with EIO (and nothing panics).
#[test]
fn an_event_for_a_domain_without_vcpus_crashes_the_host_like_xen() {
    let h = Host::new();
    let bare = DomainId::new(h.xc.create_domain(&CreateDomain::pv(1)).unwrap());
    let p = h.xc.evtchn_alloc_unbound_port(bare, DOM0).unwrap();
    let ev = h.handle(DOM0);
    let local = ev.bind_interdomain(bare, p).unwrap();
    // Linux's driver ignores what EVTCHNOP_send answers; the host is gone all the same.
    let _ = local.notify();
    let later = h.xc.create_domain(&CreateDomain::pv(1)).unwrap_err();
    assert_eq!(later.errno(), Some(nix::errno::Errno::EIO), "{later}");
    let why = h
        .sim
        .with_state(|s| s.crashed.clone())
        .expect("crash recorded");
    assert!(why.contains("no vCPU yet"), "{why}");
    drop(local);
}
