//! Event channels on the simulated host (issue 12, item 6: "a notify/wait round trip between
//! two bound ports"). One group, `evtchn/round-trip`, timing one round trip: notify one end,
//! wait for the other to fire and unmask it, notify back, wait and unmask.
//!
//! - `sim-dom0-guest`: a dom0 handle and a handle acting as a guest, bound to each other (a
//!   backend and its frontend);
//! - `sim-loopback`: both ends bound through one dom0 handle (`bind_unbound(dom0)` +
//!   `bind_interdomain(dom0, ..)`), as the real-Xen comparison does inside dom0.
//!
//! Each operation runs the simulated hypercall against the host model and the simulated
//! kernel's queue, and `wait` reads the port back through the handle; nothing sleeps. The C
//! twin (libxenevtchn) runs on real Xen in the VM, with the same loopback, not here: on this
//! machine there is no `/dev/xen/evtchn` to call it on.

use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use xenctrl::evtchn::{BoundPort, EventChannels};
use xenctrl::{CreateDomain, DomainId, SimHypervisor, XenCtrl};

/// One round trip: `a` notifies, `b`'s handle takes the event and re-enables it, then back.
fn round_trip(ea: &EventChannels, a: &BoundPort<'_>, eb: &EventChannels, b: &BoundPort<'_>) {
    a.notify().expect("notify");
    let got = eb.wait().expect("wait");
    debug_assert_eq!(got, b.port());
    eb.unmask(got).expect("unmask");
    b.notify().expect("notify");
    let got = ea.wait().expect("wait");
    debug_assert_eq!(got, a.port());
    ea.unmask(got).expect("unmask");
}

fn main() {
    let mut crit = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let sim = Arc::new(SimHypervisor::default());
    let xc = XenCtrl::on_simulator(Arc::clone(&sim)).expect("simulator");
    let guest = xc.create_domain(&CreateDomain::pv(1)).expect("create");
    // An event is delivered through the guest's vCPU 0 (Xen crashes without one).
    xc.set_max_vcpus(guest, 1).expect("max_vcpus");
    let guest = DomainId::new(guest);
    let dom0 = EventChannels::on_simulator(Arc::clone(&sim), DomainId::DOM0).expect("dom0");
    let domu = EventChannels::on_simulator(Arc::clone(&sim), guest).expect("guest");

    let mut group = crit.benchmark_group("evtchn/round-trip");
    {
        let front = domu.bind_unbound(DomainId::DOM0).expect("bind_unbound");
        let back = dom0
            .bind_interdomain(guest, front.port())
            .expect("bind_interdomain");
        let fresh = dom0.wait().expect("the fresh port");
        dom0.unmask(fresh).expect("unmask");
        group.bench_function("sim-dom0-guest", |bch| {
            bch.iter(|| round_trip(&dom0, &back, &domu, &front));
        });
    }
    {
        let a = dom0.bind_unbound(DomainId::DOM0).expect("bind_unbound");
        let b = dom0
            .bind_interdomain(DomainId::DOM0, a.port())
            .expect("bind_interdomain");
        let fresh = dom0.wait().expect("the fresh port");
        dom0.unmask(fresh).expect("unmask");
        group.bench_function("sim-loopback", |bch| {
            bch.iter(|| round_trip(&dom0, &a, &dom0, &b));
        });
    }
    group.finish();
    crit.final_summary();
}
