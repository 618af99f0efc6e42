//! Event channels between dom0 and a guest, on a simulated host: the toolstack creates a guest
//! and offers it a port, the guest's side (a simulated `/dev/xen/evtchn` acting as the guest)
//! binds it, the two ping-pong, and dom0 watches `VIRQ_DOM_EXC` to see the guest go away.
//! Each step prints what `EVTCHNOP_status` says.
//!
//! ```text
//! cargo run -p xenctrl --example evtchn
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use xenctrl::evtchn::{EventChannels, Port, Virq};
use xenctrl::{CreateDomain, DomainId, SimHypervisor, XenCtrl};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = Arc::new(SimHypervisor::default());
    let xc = XenCtrl::on_simulator(Arc::clone(&sim))?;
    let guest = DomainId::new(xc.create_domain(&CreateDomain::pv(1))?);
    xc.set_max_vcpus(guest.get(), 1)?;
    println!("created guest d{guest}");

    let status = |dom: DomainId, port: Port| -> Result<String, xenctrl::Error> {
        Ok(format!("{:?}", xc.evtchn_status(dom, port)?.state))
    };

    // The toolstack allocates a port in the guest for dom0, as it does for a console ring.
    let offered = xc.evtchn_alloc_unbound_port(guest, DomainId::DOM0)?;
    println!("d{guest} port {offered}: {}", status(guest, offered)?);

    // dom0's backend binds it; watch for domains going away too.
    let dom0 = EventChannels::on_simulator(Arc::clone(&sim), DomainId::DOM0)?;
    let exc = dom0.bind_virq(Virq::DOM_EXC)?;
    let backend = dom0.bind_interdomain(guest, offered)?;
    println!(
        "d0 port {}: {}",
        backend.port(),
        status(DomainId::DOM0, backend.port())?
    );
    // Xen sets a freshly bound port pending once.
    let first = dom0.wait()?;
    println!("d0: port {first} fired (the fresh binding)");
    dom0.unmask(first)?;

    // The guest's side: the guest's own event channel device, which finds its port bound.
    let domu = EventChannels::on_simulator(Arc::clone(&sim), guest)?;
    let front = domu.bind_unbound(DomainId::DOM0)?;
    let back = dom0.bind_interdomain(guest, front.port())?;
    dom0.unmask(dom0.wait()?)?;

    let rounds = 10_000;
    let start = Instant::now();
    for _ in 0..rounds {
        back.notify()?;
        let p = domu.wait()?;
        domu.unmask(p)?;
        front.notify()?;
        let p = dom0.wait()?;
        dom0.unmask(p)?;
    }
    let per = start.elapsed() / rounds;
    println!("{rounds} round trips d0 <-> d{guest}: {per:?} each");

    // The guest goes away: its ends close, dom0's go back to unbound, VIRQ_DOM_EXC fires.
    drop(front);
    drop(domu);
    xc.destroy_domain(guest.get())?;
    let fired = dom0
        .wait_timeout(Duration::from_secs(1))?
        .ok_or("VIRQ_DOM_EXC did not fire")?;
    assert_eq!(fired, exc.port());
    println!(
        "d0: port {fired} ({}) fired: a domain went away",
        Virq::DOM_EXC
    );
    println!(
        "d0 port {}: {}",
        backend.port(),
        status(DomainId::DOM0, backend.port())?
    );
    Ok(())
}
