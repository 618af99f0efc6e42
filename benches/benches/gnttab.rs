//! Grant map+unmap on the simulated host: `xengnttab::Gntdev::map` of 1 and of 64 grants that a
//! simulated guest shared through `Gntalloc`, then drop (unmap).
//!
//! One group per grant count, `gnttab-map-unmap/<n>-grants`, with one line, `sim-rw`: a
//! writable map and its unmap. On the simulator one iteration is a model transaction that
//! checks and pins each reference (reading and writing its grant entry in machine memory), an
//! `mmap` of the frames (`MAP_SHARED`, one call per run of consecutive frames), then the unmap
//! notification check, `munmap` and a transaction that unpins. It measures the simulator, not
//! Xen: the C twin (libxengnttab) is measured against real Xen in the VM, where both map
//! through the kernel's gntdev.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use xenctrl::backend::sim::SimState;
use xenctrl::SimHypervisor;
use xengnttab::{DomainId, Gntalloc, Gntdev};

fn main() {
    let mut crit = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench(&mut crit);
    crit.final_summary();
}

fn bench(c: &mut Criterion) {
    let sim = Arc::new(SimHypervisor::default());
    let guest = DomainId::new(sim.with_state(|s| {
        let d = s
            .create_domain(0, &SimState::pv_config(1))
            .expect("create the guest");
        s.set_max_mem(d, 64 * 4).expect("room for 64 shared pages");
        d
    }));
    let gntalloc = Gntalloc::on_simulator(Arc::clone(&sim), guest);
    let shared = gntalloc
        .share(DomainId::DOM0, 64, true)
        .expect("the guest shares 64 pages");
    let gntdev = Gntdev::on_simulator(Arc::clone(&sim), DomainId::DOM0);
    for n in [1usize, 64] {
        let refs = &shared.refs()[..n];
        let mut group = c.benchmark_group(format!("gnttab-map-unmap/{n}-grants"));
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function("sim-rw", |b| {
            b.iter(|| {
                let m = gntdev.map(guest, black_box(refs)).expect("map");
                black_box(m.slice().len());
            });
        });
        group.finish();
    }
}
