//! The xengnttab suite (`tests/suite/mod.rs`) on the simulator, in every `cargo test`, and the
//! exchanges between two simulated domains that the dom0-only suite cannot show.
//! `tests/vm_gnttab.rs` runs the same suite on real Xen 4.17.

mod suite;

use std::sync::Arc;

use nix::errno::Errno;
use suite::Ctx;
use xenctrl::abi::{GTF_permit_access, GTF_reading, GTF_writing};
use xenctrl::backend::sim::SimState;
use xenctrl::SimHypervisor;
use xengnttab::{DomainId, Error, EventPort, Gntalloc, Gntdev, UnmapNotify};

const PAGE: usize = 4096;

/// Each test gets a fresh host, acting as its dom0; afterwards no grant may be left mapped or
/// held, and the model's invariants hold.
fn run(name: &str, test: fn(&Ctx)) {
    let sim = Arc::new(SimHypervisor::default());
    let ctx = Ctx {
        gntdev: Gntdev::on_simulator(Arc::clone(&sim), DomainId::DOM0),
        gntalloc: Gntalloc::on_simulator(Arc::clone(&sim), DomainId::DOM0),
        me: DomainId::DOM0,
    };
    test(&ctx);
    drop(ctx);
    sim.with_state(|s| {
        if let Err(e) = s.check_invariants() {
            panic!("{name}: the model's invariants broke: {e}");
        }
        for d in s.domains.values() {
            assert!(
                d.grants.active.is_empty(),
                "{name}: d{} still mapped",
                d.domid
            );
            assert!(
                d.grants.kernel.is_empty(),
                "{name}: d{} still holds refs",
                d.domid
            );
        }
    });
}

suite::suite_tests!(run);

/// A host with a PV guest that has room for 64 more pages.
fn host_and_guest() -> (Arc<SimHypervisor>, DomainId) {
    let sim = Arc::new(SimHypervisor::default());
    let guest = sim.with_state(|s| {
        let d = s.create_domain(0, &SimState::pv_config(1)).expect("create");
        s.set_max_mem(d, 64 * 4).expect("max_mem");
        d
    });
    (sim, DomainId::new(guest))
}

#[test]
fn a_guest_shares_with_dom0_and_dom0_answers() {
    let (sim, guest) = host_and_guest();
    // An event channel between the two (each side's port, as a ring's setup would make).
    let (guest_port, dom0_port) = sim.with_state(|s| {
        let g = s.alloc_unbound(guest.get(), 0).expect("guest port");
        (g, s.alloc_unbound(0, guest.get()).expect("dom0 port"))
    });
    let guest_alloc = Gntalloc::on_simulator(Arc::clone(&sim), guest);
    let dom0 = Gntdev::on_simulator(Arc::clone(&sim), DomainId::DOM0);
    let mut shared = guest_alloc.share(DomainId::DOM0, 2, true).expect("share");
    shared.slice().write_from(0, b"request").expect("write");
    shared.slice().write(PAGE, &1u8).expect("connected");
    shared
        .set_unmap_notify(UnmapNotify::clear_byte(PAGE).and_send_event(EventPort::new(guest_port)))
        .expect("notify");

    let mut ring = dom0
        .map(guest, shared.refs())
        .expect("dom0 maps the guest's pages");
    assert_eq!(ring.slice().to_vec(0, 7).expect("read"), b"request");
    ring.slice().write_from(64, b"response").expect("write");
    assert_eq!(shared.slice().to_vec(64, 8).expect("read"), b"response");
    let entry = sim.grant_entry(guest, shared.refs()[0]).expect("entry");
    assert_eq!(entry.flags, GTF_permit_access | GTF_reading | GTF_writing);
    ring.set_unmap_notify(UnmapNotify::send_event(EventPort::new(dom0_port)))
        .expect("dom0's notify");

    // The guest goes first: dom0 still has the pages, sees the byte cleared, and the event is
    // on record for the event-channel model to deliver.
    drop(shared);
    assert_eq!(ring.slice().read::<u8>(PAGE).expect("read"), 0);
    assert_eq!(sim.take_unmap_events(), [(guest, guest_port)]);
    let refs = ring.refs().to_vec();
    drop(ring);
    assert_eq!(sim.take_unmap_events(), [(DomainId::DOM0, dom0_port)]);
    // Both grants ended once dom0 let go; the guest's pages went back.
    let err = dom0.map_read_only(guest, &refs).expect_err("ended");
    assert!(
        matches!(
            err,
            Error::Map {
                source: Errno::EINVAL,
                ..
            }
        ),
        "{err}"
    );
    sim.with_state(|s| {
        let d = &s.domains[&guest.get()];
        assert_eq!(d.tot_pages, 0);
        assert!(d.grants.kernel.is_empty() && d.grants.active.is_empty());
    });
}

#[test]
fn dom0_shares_read_only_with_a_guest() {
    let (sim, guest) = host_and_guest();
    let dom0_alloc = Gntalloc::on_simulator(Arc::clone(&sim), DomainId::DOM0);
    let guest_dev = Gntdev::on_simulator(Arc::clone(&sim), guest);
    let shared = dom0_alloc.share(guest, 1, false).expect("share");
    shared.slice().write_from(10, b"config").expect("write");
    let err = guest_dev
        .map(DomainId::DOM0, shared.refs())
        .expect_err("writable");
    assert!(
        matches!(
            err,
            Error::Map {
                source: Errno::EINVAL,
                ..
            }
        ),
        "{err}"
    );
    let m = guest_dev
        .map_read_only(DomainId::DOM0, shared.refs())
        .expect("read-only");
    assert_eq!(m.slice().to_vec(10, 6).expect("read"), b"config");
    // A third domain may not map what was granted to the guest, nor may dom0 itself.
    let dom0_dev = Gntdev::on_simulator(Arc::clone(&sim), DomainId::DOM0);
    let err = dom0_dev
        .map_read_only(DomainId::DOM0, shared.refs())
        .expect_err("granted to the guest only");
    assert!(
        matches!(
            err,
            Error::Map {
                source: Errno::EINVAL,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn the_guest_copies_into_a_dom0_grant() {
    let (sim, guest) = host_and_guest();
    let dom0_alloc = Gntalloc::on_simulator(Arc::clone(&sim), DomainId::DOM0);
    let guest_dev = Gntdev::on_simulator(Arc::clone(&sim), guest);
    let shared = dom0_alloc.share(guest, 1, true).expect("share");
    let gref = shared.refs()[0];
    let mut segs = [xengnttab::CopySegment::to_grant(
        b"from the guest",
        DomainId::DOM0,
        gref,
        0,
    )];
    guest_dev.grant_copy(&mut segs).expect("copy");
    assert_eq!(
        shared.slice().to_vec(0, 14).expect("read"),
        b"from the guest"
    );
    // Dom0 is not the grantee of its own grant to the guest.
    let dom0_dev = Gntdev::on_simulator(Arc::clone(&sim), DomainId::DOM0);
    let mut segs = [xengnttab::CopySegment::to_grant(
        b"x",
        DomainId::DOM0,
        gref,
        0,
    )];
    let err = dom0_dev.grant_copy(&mut segs).expect_err("not the grantee");
    assert!(matches!(err, Error::CopySegment { index: 0, .. }), "{err}");
}

#[test]
fn a_guest_without_room_cannot_share() {
    let (sim, guest) = host_and_guest();
    let guest_alloc = Gntalloc::on_simulator(Arc::clone(&sim), guest);
    let all = guest_alloc
        .share(DomainId::DOM0, 64, true)
        .expect("its 64 pages");
    let err = guest_alloc
        .share(DomainId::DOM0, 1, true)
        .expect_err("no room");
    assert!(
        matches!(
            err,
            Error::Share {
                source: Errno::ENOMEM,
                count: 1,
                ..
            }
        ),
        "{err}"
    );
    drop(all);
    guest_alloc
        .share(DomainId::DOM0, 1, true)
        .expect("room again");
}

#[test]
fn a_full_grant_table_is_enospc() {
    let sim = Arc::new(SimHypervisor::default());
    let guest = sim.with_state(|s| {
        let mut config = SimState::pv_config(1);
        config.max_grant_frames = 1;
        let d = s.create_domain(0, &config).expect("create");
        s.set_max_mem(d, 4 * 1024).expect("max_mem");
        DomainId::new(d)
    });
    let alloc = Gntalloc::on_simulator(Arc::clone(&sim), guest);
    let _full = alloc
        .share(DomainId::DOM0, 504, true)
        .expect("the table's 504 free refs");
    let err = alloc.share(DomainId::DOM0, 1, true).expect_err("full");
    assert!(
        matches!(
            err,
            Error::Share {
                source: Errno::ENOSPC,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.to_string(), "cannot share 1 page(s) with domain 0");
}
