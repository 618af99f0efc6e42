//! Tests of the grant model: two simulated domains, every operation and refusal.
use super::*;
use crate::abi::XenDomctlCreatedomain;

const DOM0: DomainId = DomainId::DOM0;

/// A host with one PV guest that has `populated` pages and room for 16 more.
fn host_with_guest(
    config: XenDomctlCreatedomain,
    populated: u64,
) -> (Arc<SimHypervisor>, DomainId) {
    let sim = Arc::new(SimHypervisor::default());
    let guest = sim.with_state(|s| {
        let d = s.create_domain(0, &config).expect("create");
        s.set_max_mem(d, (populated + 16) * 4).expect("max_mem");
        for g in 0..populated {
            s.populate_extent(d, g, 0).expect("populate");
        }
        d
    });
    (sim, DomainId::new(guest))
}

fn read(m: &SimMapping, offset: usize, len: usize) -> Vec<u8> {
    assert!(offset + len <= m.len());
    let mut out = vec![0; len];
    // SAFETY: test-only volatile reads inside a live window of mapped pages.
    unsafe {
        for (i, b) in out.iter_mut().enumerate() {
            *b = m.base().as_ptr().add(offset + i).read_volatile();
        }
    }
    out
}

fn write(m: &SimMapping, offset: usize, data: &[u8]) {
    assert!(m.writable() && offset + data.len() <= m.len());
    // SAFETY: test-only volatile writes inside a live, writable window.
    unsafe {
        for (i, b) in data.iter().enumerate() {
            m.base().as_ptr().add(offset + i).write_volatile(*b);
        }
    }
}

#[test]
fn a_guest_share_is_the_same_memory_in_dom0_and_flags_follow_the_mappings() {
    let (sim, guest) = host_with_guest(SimState::pv_config(1), 4);
    let share = sim.share_pages(guest, DOM0, 2, true).expect("share");
    assert_eq!(share.refs(), [GrantRef::new(8), GrantRef::new(9)]);
    assert_eq!(
        read(share.window(), 0, 8),
        [0; 8],
        "gntalloc pages start zeroed"
    );
    write(share.window(), PAGE_SIZE + 5, b"guest");
    let e = sim.grant_entry(guest, share.refs()[1]).expect("entry");
    assert_eq!(e.flags, GTF_permit_access);
    assert_eq!(e.domid, 0);

    let rw = sim
        .map_grants(DOM0, guest, share.refs(), true)
        .expect("map rw");
    assert_eq!(read(rw.window(), PAGE_SIZE + 5, 5), b"guest");
    write(rw.window(), 7, b"dom0");
    assert_eq!(read(share.window(), 7, 4), b"dom0");
    let flags = sim
        .grant_entry(guest, share.refs()[0])
        .expect("entry")
        .flags;
    assert_eq!(flags, GTF_permit_access | GTF_reading | GTF_writing);

    let ro = sim
        .map_grants(DOM0, guest, &share.refs()[..1], false)
        .expect("map ro");
    assert!(!ro.window().writable());
    drop(rw);
    let flags = sim
        .grant_entry(guest, share.refs()[0])
        .expect("entry")
        .flags;
    assert_eq!(
        flags,
        GTF_permit_access | GTF_reading,
        "the read-only mapping remains"
    );
    drop(ro);
    let flags = sim
        .grant_entry(guest, share.refs()[0])
        .expect("entry")
        .flags;
    assert_eq!(flags, GTF_permit_access);
    sim.with_state(|s| {
        assert!(s.domains[&guest.get()].grants.active.is_empty());
        s.check_invariants().expect("invariants");
    });
}

#[test]
fn dom0_shares_with_a_guest_from_its_own_memory() {
    let (sim, guest) = host_with_guest(SimState::pv_config(1), 1);
    let free = sim.with_state(|s| s.free_pages);
    let share = sim.share_pages(DOM0, guest, 3, false).expect("share");
    assert_eq!(
        sim.with_state(|s| s.free_pages),
        free,
        "dom0 uses its own pages"
    );
    assert!(share.frames().iter().all(|&m| m < 1024 * 256));
    write(share.window(), 3 * PAGE_SIZE - 1, b"z");
    // Read-only grant: the guest may map it read-only, not writable.
    let err = sim
        .map_grants(guest, DOM0, share.refs(), true)
        .expect_err("writable map of a read-only grant");
    assert_eq!(err.errno, Errno::EINVAL);
    assert_eq!(err.statuses, [GrantStatus::GENERAL_ERROR; 3]);
    let ro = sim
        .map_grants(guest, DOM0, share.refs(), false)
        .expect("ro map");
    assert_eq!(read(ro.window(), 3 * PAGE_SIZE - 1, 1), b"z");
    // Dom0 cannot map grants meant for the guest.
    let err = sim
        .map_grants(DOM0, DOM0, share.refs(), false)
        .expect_err("not granted to dom0");
    assert_eq!(err.statuses, [GrantStatus::GENERAL_ERROR; 3]);
}

#[test]
fn each_refusal_has_xens_status_and_nothing_stays_mapped() {
    let (sim, guest) = host_with_guest(SimState::pv_config(1), 2);
    let share = sim.share_pages(guest, DOM0, 1, true).expect("share");
    let good = share.refs()[0];
    // Ref 20 is inside the table but was never granted; ref 5000 is beyond the one frame
    // the table has grown to.
    let err = sim
        .map_grants(
            DOM0,
            guest,
            &[good, GrantRef::new(20), GrantRef::new(5000)],
            true,
        )
        .expect_err("bad refs");
    assert_eq!(err.errno, Errno::EINVAL);
    assert_eq!(
        err.statuses,
        [
            GrantStatus::OKAY,
            GrantStatus::GENERAL_ERROR,
            GrantStatus::BAD_GNTREF
        ]
    );
    assert_eq!(
        sim.grant_entry(guest, good).expect("entry").flags,
        GTF_permit_access,
        "the good ref was unpinned"
    );
    let err = sim
        .map_grants(DOM0, DomainId::new(999), &[good], false)
        .expect_err("bad domain");
    assert_eq!(err.statuses, [GrantStatus::BAD_DOMAIN]);
    assert_eq!(
        sim.map_grants(DOM0, guest, &[], false)
            .expect_err("empty")
            .errno,
        Errno::EINVAL
    );
    // A grant of a frame the guest does not own.
    let stray = sim.grant_access(guest, DOM0, 0x7777, false).expect("grant");
    let err = sim
        .map_grants(DOM0, guest, &[stray], false)
        .expect_err("bad page");
    assert_eq!(err.statuses, [GrantStatus::BAD_PAGE]);
    sim.end_access(guest, stray).expect("end");
    // A guest-frame grant (a frontend's) maps the physmap page.
    // (A PV guest names its pages by machine frame: the physmap's key.)
    let (frame, mfn) = sim.with_state(|s| {
        let (&g, &m) = s.domains[&guest.get()]
            .physmap
            .iter()
            .next_back()
            .expect("page");
        (g, m)
    });
    sim.machine().write(mfn, 0, b"ring").expect("write");
    let gref = sim.grant_access(guest, DOM0, frame, false).expect("grant");
    let m = sim.map_grants(DOM0, guest, &[gref], false).expect("map");
    assert_eq!(read(m.window(), 0, 4), b"ring");
    assert_eq!(sim.end_access(guest, gref), Err(Errno::EBUSY));
    drop(m);
    sim.end_access(guest, gref).expect("end");
    let err = sim
        .map_grants(DOM0, guest, &[gref], false)
        .expect_err("ended");
    assert_eq!(err.statuses, [GrantStatus::GENERAL_ERROR]);
    assert_eq!(sim.end_access(guest, gref), Err(Errno::EINVAL));
}

#[test]
fn dropping_a_share_ends_its_grants_now_or_when_the_peer_unmaps() {
    let (sim, guest) = host_with_guest(SimState::pv_config(1), 0);
    let tot = || sim.with_state(|s| s.domains[&guest.get()].tot_pages);
    let share = sim.share_pages(guest, DOM0, 2, true).expect("share");
    assert_eq!(tot(), 2, "the guest was given two pages");
    let refs = share.refs().to_vec();
    let mapped = sim.map_grants(DOM0, guest, &refs[1..], true).expect("map");
    drop(share);
    // Ref 0 ended at once; ref 1 is still mapped by dom0 and stays until it unmaps.
    assert_eq!(sim.grant_entry(guest, refs[0]).expect("entry").flags, 0);
    assert_eq!(
        sim.map_grants(DOM0, guest, &refs[..1], false)
            .expect_err("ended")
            .statuses,
        [GrantStatus::GENERAL_ERROR]
    );
    assert_eq!(tot(), 1);
    write(mapped.window(), 0, b"still here");
    drop(mapped);
    assert_eq!(sim.grant_entry(guest, refs[1]).expect("entry").flags, 0);
    assert_eq!(tot(), 0);
    sim.with_state(|s| {
        let g = &s.domains[&guest.get()].grants;
        assert!(g.kernel.is_empty() && g.active.is_empty());
        s.check_invariants().expect("invariants");
    });
    // The references are free again: the next share reuses them.
    let again = sim.share_pages(guest, DOM0, 1, true).expect("share");
    assert_eq!(again.refs()[..], refs[..1]);
}

#[test]
fn unmap_notify_clears_the_byte_for_the_other_side_and_records_the_event() {
    let (sim, guest) = host_with_guest(SimState::pv_config(1), 0);
    let (p0, pg) = sim.with_state(|s| {
        let p0 = s.alloc_unbound(0, guest.get()).expect("dom0 port");
        (p0, s.alloc_unbound(guest.get(), 0).expect("guest port"))
    });
    let mut share = sim.share_pages(guest, DOM0, 2, true).expect("share");
    write(share.window(), PAGE_SIZE + 10, &[0xff]);
    write(share.window(), 20, &[0xee]);
    let mut m = sim
        .map_grants(DOM0, guest, share.refs(), true)
        .expect("map");
    assert_eq!(
        m.set_unmap_notify(SimUnmapNotify {
            clear_byte: Some(2 * PAGE_SIZE),
            event: None
        }),
        Err(Errno::ENOENT)
    );
    assert_eq!(
        m.set_unmap_notify(SimUnmapNotify {
            clear_byte: None,
            event: Some(p0 + 100),
        }),
        Err(Errno::EINVAL),
        "a port dom0 does not have"
    );
    m.set_unmap_notify(SimUnmapNotify {
        clear_byte: Some(PAGE_SIZE + 10),
        event: Some(p0),
    })
    .expect("notify");
    drop(m);
    assert_eq!(read(share.window(), PAGE_SIZE + 10, 1), [0]);
    assert_eq!(sim.take_unmap_events(), [(DOM0, p0)]);
    // Read-only mappings cannot clear a byte, but can send an event.
    let mut ro = sim
        .map_grants(DOM0, guest, share.refs(), false)
        .expect("map");
    assert_eq!(
        ro.set_unmap_notify(SimUnmapNotify {
            clear_byte: Some(0),
            event: None
        }),
        Err(Errno::EINVAL)
    );
    ro.set_unmap_notify(SimUnmapNotify {
        clear_byte: None,
        event: Some(p0),
    })
    .expect("event");
    drop(ro);
    assert_eq!(sim.take_unmap_events(), [(DOM0, p0)]);
    // The sharer's notification fires when it lets go, for the mapper to see.
    let peer = sim
        .map_grants(DOM0, guest, share.refs(), false)
        .expect("map");
    share
        .set_unmap_notify(SimUnmapNotify {
            clear_byte: Some(20),
            event: Some(pg),
        })
        .expect("notify");
    drop(share);
    assert_eq!(read(peer.window(), 20, 1), [0]);
    assert_eq!(sim.take_unmap_events(), [(guest, pg)]);
}

#[test]
fn full_tables_and_the_gntalloc_limit_are_enospc() {
    let mut config = SimState::pv_config(1);
    config.max_grant_frames = 1;
    let (sim, guest) = host_with_guest(config, 0);
    sim.with_state(|s| s.set_max_mem(guest.get(), 4 * 600).expect("max_mem"));
    // One frame holds 512 entries, 8 of them reserved.
    let share = sim
        .share_pages(guest, DOM0, 504, true)
        .expect("fills the table");
    assert_eq!(share.refs().last(), Some(&GrantRef::new(511)));
    let tot = sim.with_state(|s| s.domains[&guest.get()].tot_pages);
    assert_eq!(
        sim.share_pages(guest, DOM0, 1, true).expect_err("full"),
        Errno::ENOSPC
    );
    assert_eq!(
        sim.with_state(|s| s.domains[&guest.get()].tot_pages),
        tot,
        "the failed share gave its page back"
    );
    drop(share);
    assert_eq!(
        sim.share_pages(DOM0, guest, 1025, true).expect_err("limit"),
        Errno::ENOSPC
    );
    assert_eq!(
        sim.share_pages(DOM0, guest, 0, true).expect_err("empty"),
        Errno::EINVAL
    );
    let small = host_with_guest(SimState::pv_config(1), 0);
    assert_eq!(
        small
            .0
            .share_pages(small.1, DOM0, 17, true)
            .expect_err("no memory"),
        Errno::ENOMEM
    );
    assert!(small.0.with_state(|s| s.check_invariants()).is_ok());
}

#[test]
fn grant_copy_runs_each_segment_and_reports_its_status() {
    let (sim, guest) = host_with_guest(SimState::pv_config(1), 0);
    let share = sim.share_pages(guest, DOM0, 1, true).expect("share");
    let ro = sim.share_pages(guest, DOM0, 1, false).expect("share");
    write(ro.window(), 100, b"read-only");
    let at = |gref, offset| SimGrantAddr {
        domain: guest,
        gref,
        offset,
    };
    let mut back = [0u8; 9];
    let mut segs = [
        SimCopySegment {
            source: SimCopySource::Local(b"hello"),
            dest: SimCopyDest::Grant(at(share.refs()[0], 4090)),
            len: 5,
            status: GrantStatus::GENERAL_ERROR,
        },
        SimCopySegment {
            source: SimCopySource::Local(b"x"),
            dest: SimCopyDest::Grant(at(GrantRef::new(5000), 0)),
            len: 1,
            status: GrantStatus::OKAY,
        },
        SimCopySegment {
            source: SimCopySource::Local(b"x"),
            dest: SimCopyDest::Grant(at(ro.refs()[0], 0)),
            len: 1,
            status: GrantStatus::OKAY,
        },
        SimCopySegment {
            source: SimCopySource::Grant(at(ro.refs()[0], 100)),
            dest: SimCopyDest::Local(&mut back),
            len: 9,
            status: GrantStatus::GENERAL_ERROR,
        },
    ];
    sim.grant_copy(DOM0, &mut segs).expect("copy");
    let statuses: Vec<_> = segs.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            GrantStatus::OKAY,
            GrantStatus::BAD_GNTREF,
            GrantStatus::GENERAL_ERROR,
            GrantStatus::OKAY
        ]
    );
    assert_eq!(&back, b"read-only");
    assert_eq!(read(share.window(), 4090, 5), b"hello");
    // Arguments Linux refuses before copying anything.
    let mut buf = [0u8; 4];
    let mut bad = [SimCopySegment {
        source: SimCopySource::Grant(at(share.refs()[0], 4094)),
        dest: SimCopyDest::Local(&mut buf),
        len: 4,
        status: GrantStatus::OKAY,
    }];
    assert_eq!(sim.grant_copy(DOM0, &mut bad), Err(Errno::EINVAL));
    let mut other = [0u8; 1];
    let mut local = [SimCopySegment {
        source: SimCopySource::Local(b"a"),
        dest: SimCopyDest::Local(&mut other),
        len: 1,
        status: GrantStatus::OKAY,
    }];
    assert_eq!(sim.grant_copy(DOM0, &mut local), Err(Errno::EINVAL));
    // A domain the grant is not for.
    let mut wrong = [SimCopySegment {
        source: SimCopySource::Local(b"a"),
        dest: SimCopyDest::Grant(at(share.refs()[0], 0)),
        len: 1,
        status: GrantStatus::OKAY,
    }];
    sim.grant_copy(guest, &mut wrong).expect("copy");
    assert_eq!(wrong[0].status, GrantStatus::GENERAL_ERROR);
}

/// Destroying a guest whose page dom0 still maps: the page keeps its contents (Xen frees it
/// only when the mapping goes), and unmapping and the guest's own handle going later are
/// harmless.
#[test]
fn destroying_the_granter_leaves_the_mapped_page_alone() {
    let (sim, guest) = host_with_guest(SimState::pv_config(1), 0);
    let share = sim.share_pages(guest, DOM0, 1, true).expect("share");
    write(share.window(), 0, b"last words");
    let m = sim
        .map_grants(DOM0, guest, share.refs(), false)
        .expect("map");
    sim.with_state(|s| s.destroy(guest.get())).expect("destroy");
    assert_eq!(read(m.window(), 0, 10), b"last words");
    drop(m);
    drop(share);
    sim.with_state(|s| {
        assert!(!s.domains.contains_key(&guest.get()));
        s.check_invariants().expect("invariants");
    });
}

/// Two handles on one persistent host (two processes, in effect): a share made through one
/// is mapped through the other, and the pins are seen by both.
#[test]
fn a_persistent_host_shares_grants_across_handles() {
    let dir = std::env::temp_dir().join(format!("xenctrl-gnttab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("host");
    let a = Arc::new(SimHypervisor::persistent_reset(&path, Default::default()).expect("a"));
    let b = Arc::new(SimHypervisor::persistent(&path, Default::default()).expect("b"));
    let guest = a.with_state(|s| {
        let d = s.create_domain(0, &SimState::pv_config(1)).expect("create");
        s.set_max_mem(d, 64).expect("max_mem");
        DomainId::new(d)
    });
    let share = a.share_pages(guest, DOM0, 1, true).expect("share");
    write(share.window(), 0, b"across");
    let m = b.map_grants(DOM0, guest, share.refs(), false).expect("map");
    assert_eq!(read(m.window(), 0, 6), b"across");
    assert_eq!(
        a.grant_entry(guest, share.refs()[0]).expect("entry").flags,
        GTF_permit_access | GTF_reading
    );
    assert!(a.with_state(|s| s.domains[&guest.get()].grants.active.contains_key(&8)));
    drop(m);
    drop(share);
    assert!(b.with_state(|s| s.domains[&guest.get()].grants.kernel.is_empty()));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
