//! Foreign mapping on the simulator, where the shared suite (`tests/suite/mod.rs`) cannot go:
//! paged-out frames (the retry), a host without resource mapping (the `GNTTABOP_setup_table`
//! fallback), HVM guests, several processes sharing one persistent host, and mappings handed to
//! another thread. Each test ends by checking the model's invariants and that nothing is left.

use std::sync::Arc;
use std::time::{Duration, Instant};

use xenctrl::abi::{__HYPERVISOR_memory_op, XENMEM_acquire_resource};
use xenctrl::backend::sim::SimFault;
use xenctrl::volatile::{ReadOnly, ReadWrite};
use xenctrl::{
    CreateDomain, DomainId, Errno, Error, GrantFrames, PageError, Resource, SimConfig,
    SimHypervisor, XenCtrl,
};

fn host() -> (Arc<SimHypervisor>, XenCtrl) {
    let sim = Arc::new(SimHypervisor::default());
    let xc = XenCtrl::on_simulator(Arc::clone(&sim)).unwrap();
    (sim, xc)
}

/// A domain with `pages` pages at guest frames `0..pages`, and the frames to map them by
/// (machine frames for PV, the guest frames for HVM).
fn populated(xc: &XenCtrl, config: &CreateDomain, pages: u64) -> (DomainId, Vec<u64>) {
    let d = xc.create_domain(config).unwrap();
    xc.set_max_mem(d, pages * 4).unwrap();
    let mut frames: Vec<u64> = (0..pages).collect();
    xc.populate_physmap_exact(d, 0, 0, &mut frames).unwrap();
    (DomainId::new(d), frames)
}

/// The model is consistent and holds nothing but dom0.
fn check_clean(sim: &SimHypervisor) {
    sim.with_state(|s| {
        s.check_invariants().unwrap();
        let left: Vec<_> = s.domains.keys().filter(|&&d| d != 0).collect();
        assert!(left.is_empty(), "domains left: {left:?}");
    });
}

fn acquire_resource_fails(errno: Errno, count: u32) -> SimFault {
    SimFault {
        hypercall: __HYPERVISOR_memory_op,
        subop: Some(u32::try_from(XENMEM_acquire_resource).unwrap()),
        errno,
        count,
    }
}

#[test]
fn paged_out_frames_are_asked_for_again_until_they_map() {
    let (sim, xc) = host();
    let (d, frames) = populated(&xc, &CreateDomain::pv(1), 8);
    {
        let w = xc.map_foreign::<ReadWrite>(d, &frames).unwrap();
        w.slice().fill(0, w.len(), 0x3c).unwrap();
    }
    // Two frames, not next to each other, come back after 1 and 3 more attempts.
    sim.page_out(d.get(), frames[2], 2);
    sim.page_out(d.get(), frames[5], 4);
    let m = xc.map_foreign::<ReadOnly>(d, &frames).unwrap();
    assert!(m
        .slice()
        .to_vec(0, m.len())
        .unwrap()
        .iter()
        .all(|&b| b == 0x3c));
    drop(m);
    xc.destroy_domain(d.get()).unwrap();
    check_clean(&sim);
}

#[test]
fn a_frame_that_stays_paged_out_is_reported_after_a_bounded_wait() {
    let (sim, xc) = host();
    let (d, frames) = populated(&xc, &CreateDomain::pv(1), 3);
    sim.page_out(d.get(), frames[1], u32::MAX);
    let start = Instant::now();
    let m = xc.map_foreign_partial::<ReadWrite>(d, &frames).unwrap();
    let waited = start.elapsed();
    assert!(
        waited > Duration::from_millis(100) && waited < Duration::from_secs(2),
        "retried for {waited:?}"
    );
    assert_eq!(m.mapped(), 2);
    assert_eq!(
        m.page(1).unwrap_err(),
        PageError::NotMapped {
            index: 1,
            gfn: frames[1],
            errno: Errno::ENOENT
        }
    );
    m.page(2).unwrap().write(0, &7u8).unwrap();
    match m.into_complete().unwrap_err() {
        Error::ForeignPage { index, source, .. } => assert_eq!((index, source), (1, Errno::ENOENT)),
        other => panic!("{other:?}"),
    }
    xc.destroy_domain(d.get()).unwrap();
    check_clean(&sim);
}

#[test]
fn without_resource_mapping_grant_frames_are_mapped_by_setup_table() {
    let (sim, xc) = host();
    let d = DomainId::new(xc.create_domain(&CreateDomain::pv(1)).unwrap());
    // As on Xen before 4.12 or Linux before 4.18.
    sim.inject_fault(acquire_resource_fails(Errno::EOPNOTSUPP, 1));
    let fallback = xc
        .map_resource::<ReadWrite>(d, Resource::GRANT_TABLE, 1, 2)
        .unwrap();
    assert_eq!(fallback.pages(), 2);
    // The fault was used up by that call: now the resource path itself maps the same frames.
    let direct = xc
        .map_resource::<ReadOnly>(d, Resource::GRANT_TABLE, 2, 1)
        .unwrap();
    fallback.page(1).unwrap().write(0, &0x600d_u32).unwrap();
    assert_eq!(direct.slice().read::<u32>(0).unwrap(), 0x600d);
    assert_eq!(xc.gnttab_setup_table(d, 3).unwrap().len(), 3);

    // No fallback for anything but the shared grant frames: Xen's answer stands.
    for resource in [
        Resource::GrantTable {
            frames: GrantFrames::Status,
        },
        Resource::VmtraceBuffer { vcpu: 0 },
    ] {
        sim.inject_fault(acquire_resource_fails(Errno::EOPNOTSUPP, 1));
        let err = xc.map_resource::<ReadOnly>(d, resource, 0, 1).unwrap_err();
        assert_eq!(err.errno(), Some(Errno::EOPNOTSUPP), "{resource:?}: {err}");
    }
    // Other errors of the resource path are not a reason to fall back.
    sim.inject_fault(acquire_resource_fails(Errno::ENOMEM, 1));
    let err = xc
        .map_resource::<ReadOnly>(d, Resource::GRANT_TABLE, 0, 1)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Xen {
                source: Errno::ENOMEM,
                ..
            }
        ),
        "{err:?}"
    );
    // The fallback is bounded by the table like the resource path.
    sim.inject_fault(acquire_resource_fails(Errno::EOPNOTSUPP, 1));
    assert!(matches!(
        xc.map_resource::<ReadOnly>(d, Resource::GRANT_TABLE, 64, 1),
        Err(Error::GrantTable { .. })
    ));
    drop((fallback, direct));
    xc.destroy_domain(d.get()).unwrap();
    check_clean(&sim);
}

#[test]
fn an_hvm_guest_is_mapped_by_guest_frame_and_its_table_has_no_gfn_yet() {
    let (sim, xc) = host();
    let d = DomainId::new(xc.create_domain(&CreateDomain::pvh(1)).unwrap());
    xc.set_max_mem(d.get(), 64).unwrap();
    let mut gfns = [0x1000, 0x1001, 0x2000];
    xc.populate_physmap_exact(d.get(), 0, 0, &mut gfns).unwrap();
    assert_eq!(
        gfns,
        [0x1000, 0x1001, 0x2000],
        "HVM: no frames written back"
    );
    let m = xc
        .map_foreign_partial::<ReadWrite>(d, &[0x1000, 0x1002, 0x2000])
        .unwrap();
    assert_eq!(
        m.page(1).unwrap_err(),
        PageError::NotMapped {
            index: 1,
            gfn: 0x1002,
            errno: Errno::EINVAL
        },
        "an unpopulated guest frame"
    );
    m.page(2).unwrap().write(0, &9u64).unwrap();
    drop(m);
    // A new HVM guest has not mapped its grant table anywhere, so without resource mapping
    // there is no frame to map it by.
    assert_eq!(xc.gnttab_setup_table(d, 1).unwrap(), [u64::MAX]);
    sim.inject_fault(acquire_resource_fails(Errno::EOPNOTSUPP, 1));
    match xc.map_resource::<ReadWrite>(d, Resource::GRANT_TABLE, 0, 1) {
        Err(Error::GrantFrameUnmapped { domid, index }) => assert_eq!((domid, index), (d, 0)),
        other => panic!("{other:?}"),
    }
    // With it, the table maps as for PV.
    xc.map_resource::<ReadWrite>(d, Resource::GRANT_TABLE, 0, 1)
        .unwrap();
    xc.destroy_domain(d.get()).unwrap();
    check_clean(&sim);
}

#[test]
fn processes_sharing_a_persistent_host_share_mapped_memory() {
    let dir = std::env::temp_dir().join(format!("rxen-sim-foreign-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("host");
    // Two simulator instances on one state file stand for two processes.
    let a = XenCtrl::simulated_persistent(&path, SimConfig::default()).unwrap();
    let b = XenCtrl::simulated_persistent(&path, SimConfig::default()).unwrap();
    let (d, frames) = populated(&a, &CreateDomain::pv(1), 4);
    let in_b = b.map_foreign::<ReadWrite>(d, &frames).unwrap();
    in_b.page(3).unwrap().write_from(0, b"from b").unwrap();
    let in_a = a.map_foreign::<ReadOnly>(d, &frames[3..]).unwrap();
    assert_eq!(in_a.slice().to_vec(0, 6).unwrap(), b"from b");
    let table_b = b
        .map_resource::<ReadWrite>(d, Resource::GRANT_TABLE, 0, 1)
        .unwrap();
    table_b.slice().write(0, &0x1122_u32).unwrap();
    let table_a = a
        .map_resource::<ReadOnly>(d, Resource::GRANT_TABLE, 0, 1)
        .unwrap();
    assert_eq!(table_a.slice().read::<u32>(0).unwrap(), 0x1122);
    drop((in_a, table_a, table_b));
    // Mappings are a process's own: one process's mapping does not keep the domain for
    // another that destroys it, and then reads what Xen gives a freed frame: zeros.
    a.destroy_domain(d.get()).unwrap();
    assert!(b.domain_info(d.get()).is_err());
    assert_eq!(in_b.page(3).unwrap().read::<u8>(0).unwrap(), 0);
    drop(in_b);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_mapping_can_be_handed_to_another_thread() {
    let (sim, xc) = host();
    let (d, frames) = populated(&xc, &CreateDomain::pv(1), 2);
    let m = xc.map_foreign::<ReadWrite>(d, &frames).unwrap();
    let m = std::thread::scope(|s| {
        s.spawn(move || {
            m.page(1).unwrap().write(0, &0xdead_u32).unwrap();
            m
        })
        .join()
        .unwrap()
    });
    assert_eq!(m.page(1).unwrap().read::<u32>(0).unwrap(), 0xdead);
    drop(m);
    xc.destroy_domain(d.get()).unwrap();
    check_clean(&sim);
}

#[test]
fn frames_are_scrubbed_only_once_no_mapping_holds_them() {
    let (sim, xc) = host();
    let (d, frames) = populated(&xc, &CreateDomain::pv(1), 2);
    let m = xc.map_foreign::<ReadWrite>(d, &frames).unwrap();
    m.slice().fill(0, m.len(), 0xee).unwrap();
    let table = xc
        .map_resource::<ReadWrite>(d, Resource::GRANT_TABLE, 0, 1)
        .unwrap();
    table.slice().write(0, &0xff_u8).unwrap();
    xc.destroy_domain(d.get()).unwrap();
    // Lingering: both mappings still see what was written.
    assert!(xc.domain_info(d.get()).unwrap().dying());
    assert_eq!(m.page(1).unwrap().read::<u8>(4095).unwrap(), 0xee);
    assert_eq!(table.slice().read::<u8>(0).unwrap(), 0xff);
    // The memory mapping goes first: the domain goes with it, its grant frame stays mapped
    // and intact until that mapping goes too.
    drop(m);
    assert!(xc.domain_info(d.get()).is_err());
    assert_eq!(table.slice().read::<u8>(0).unwrap(), 0xff);
    drop(table);
    check_clean(&sim);
    // Everything given back: new memory for a new domain reads zeros.
    let (e, frames) = populated(&xc, &CreateDomain::pv(1), 2);
    let fresh = xc.map_foreign::<ReadOnly>(e, &frames).unwrap();
    assert!(fresh
        .slice()
        .to_vec(0, fresh.len())
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    drop(fresh);
    xc.destroy_domain(e.get()).unwrap();
    check_clean(&sim);
}
