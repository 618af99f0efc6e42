//! The xengnttab suite (`tests/suite/mod.rs`) on real Xen (4.17 and 4.20), inside dom0 in the VM
//! (`scripts/xen-vm-test`): dom0 shares pages with itself through the kernel's gntalloc and maps
//! them back through gntdev. `tests/sim_gnttab.rs` runs the same suite on the simulator.

mod suite;

use suite::Ctx;
use xengnttab::{DomainId, Gntalloc, Gntdev};

fn run(name: &str, test: fn(&Ctx)) {
    assert_eq!(
        std::env::var("RXEN_VM").as_deref(),
        Ok("1"),
        "{name}: real-Xen tests run inside the VM (scripts/xen-vm-test)"
    );
    let ctx = Ctx {
        gntdev: Gntdev::open().expect("open /dev/xen/gntdev"),
        gntalloc: Gntalloc::open().expect("open /dev/xen/gntalloc"),
        me: DomainId::DOM0,
    };
    test(&ctx);
}

suite::suite_tests!(run);
