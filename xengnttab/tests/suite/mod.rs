//! The xengnttab suite: test functions written once against the public API, run by
//! [`suite_tests!`] on the simulator (`tests/sim_gnttab.rs`, in `cargo test`) and on real Xen
//! 4.17 inside dom0 (`tests/vm_gnttab.rs`, in the VM). A function missing from the list does not
//! build cleanly (dead code) and fails `every_suite_function_is_listed` in both.
//!
//! Each function gets a gntdev and a gntalloc acting as one domain, which grants its pages to
//! itself and maps them back (on Xen: dom0, with its kernel's gntalloc and gntdev; on the
//! simulator: simulated dom0). Two-domain exchanges are in the simulator runner, and in the
//! guest test of the VM suite.

// Offsets and bytes derived from small loop indices.
#![allow(clippy::cast_possible_truncation)]

use nix::errno::Errno;
use xengnttab::{
    CopySegment, DomainId, Error, EventPort, Gntalloc, Gntdev, GrantRef, GrantStatus, UnmapNotify,
};

/// What a suite function runs against.
pub struct Ctx {
    /// Maps and copies grants.
    pub gntdev: Gntdev,
    /// Shares pages.
    pub gntalloc: Gntalloc,
    /// The domain both act as, and grant to.
    pub me: DomainId,
}

/// Expands to one `#[test]` per suite function. The runner defines
/// `fn run(name: &str, test: fn(&Ctx))`.
macro_rules! suite_tests {
    ($run:path) => {
        $crate::suite::suite_tests!(@each $run;
            shared_pages_map_read_write_and_read_only,
            sixty_four_grants_map_in_order,
            a_read_only_grant_cannot_be_mapped_writable,
            bad_refs_and_domains_are_refused,
            a_dropped_share_ends_its_grants,
            the_mappers_unmap_notify_clears_the_byte,
            the_sharers_unmap_notify_clears_the_byte_for_the_mapper,
            unmap_notify_errors,
            an_unbound_event_port_is_refused,
            grant_copy_both_ways_with_a_bad_ref,
            zero_pages_and_empty_lists_are_einval,
        );
    };
    (@each $run:path; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $run(stringify!($name), $crate::suite::$name);
            }
        )*

        #[test]
        fn every_suite_function_is_listed() {
            $crate::suite::check_listed(&[$(stringify!($name)),*]);
        }
    };
}
pub(crate) use suite_tests;

const SUITE_SIGNATURE: &str = "(c: &Ctx)";

/// Fails unless `listed` names exactly the suite functions defined in this file.
pub fn check_listed(listed: &[&str]) {
    let mut defined: Vec<&str> = include_str!("mod.rs")
        .lines()
        .filter_map(|l| {
            l.strip_prefix("pub fn ")?
                .strip_suffix(&format!("{SUITE_SIGNATURE} {{"))
        })
        .collect();
    let mut listed = listed.to_vec();
    defined.sort_unstable();
    listed.sort_unstable();
    assert_eq!(
        defined, listed,
        "suite functions defined vs listed in suite_tests!"
    );
}

const PAGE: usize = 4096;

/// A reference that lies beyond any grant table a test domain has grown.
const FAR_REF: GrantRef = GrantRef::new(1 << 20);
/// A domain id below the reserved ones that names no domain (the tests create none this high).
const NO_DOMAIN: DomainId = DomainId::new(0x7fef);

fn errno_of(e: &Error) -> Option<Errno> {
    match e {
        Error::Map { source, .. }
        | Error::UnmapNotify { source, .. }
        | Error::GrantCopy { source, .. }
        | Error::Share { source, .. }
        | Error::Open { source, .. } => Some(*source),
        _ => None,
    }
}

pub fn shared_pages_map_read_write_and_read_only(c: &Ctx) {
    let shared = c.gntalloc.share(c.me, 2, true).expect("share");
    assert_eq!(shared.refs().len(), 2);
    assert_eq!(
        shared.slice().to_vec(0, 2 * PAGE).expect("read"),
        vec![0; 2 * PAGE],
        "zeroed"
    );
    shared
        .slice()
        .write_from(PAGE + 3, b"from the sharer")
        .expect("write");

    let rw = c.gntdev.map(c.me, shared.refs()).expect("map rw");
    assert_eq!(rw.len(), 2 * PAGE);
    assert_eq!(
        rw.slice().to_vec(PAGE + 3, 15).expect("read"),
        b"from the sharer"
    );
    rw.slice().write(100, &0xfeed_beef_u32).expect("write");
    assert_eq!(shared.slice().read::<u32>(100).expect("read"), 0xfeed_beef);

    let ro = c
        .gntdev
        .map_read_only(c.me, &shared.refs()[1..])
        .expect("map ro");
    assert_eq!(ro.slice().to_vec(3, 15).expect("read"), b"from the sharer");
    shared
        .slice()
        .write_from(PAGE + 3, b"changed")
        .expect("write");
    assert_eq!(
        ro.slice().to_vec(3, 7).expect("read"),
        b"changed",
        "the mapping sees changes"
    );
    assert!(ro.slice().read::<u8>(PAGE).is_err(), "one page only");
}

pub fn sixty_four_grants_map_in_order(c: &Ctx) {
    let shared = c.gntalloc.share(c.me, 64, true).expect("share 64");
    for i in 0..64u64 {
        shared
            .slice()
            .write(i as usize * PAGE + 8, &(i * 3 + 1))
            .expect("write");
    }
    let mut refs = shared.refs().to_vec();
    refs.reverse();
    let m = c.gntdev.map_read_only(c.me, &refs).expect("map 64");
    for (page, i) in (0..64u64).rev().enumerate() {
        assert_eq!(
            m.slice().read::<u64>(page * PAGE + 8).expect("read"),
            i * 3 + 1
        );
    }
}

pub fn a_read_only_grant_cannot_be_mapped_writable(c: &Ctx) {
    let shared = c.gntalloc.share(c.me, 1, false).expect("share read-only");
    shared
        .slice()
        .write_from(0, b"ro")
        .expect("the sharer still writes its page");
    let err = c
        .gntdev
        .map(c.me, shared.refs())
        .expect_err("writable map of a read-only grant");
    assert_eq!(errno_of(&err), Some(Errno::EINVAL), "{err}");
    let ro = c
        .gntdev
        .map_read_only(c.me, shared.refs())
        .expect("read-only map");
    assert_eq!(ro.slice().to_vec(0, 2).expect("read"), b"ro");
}

pub fn bad_refs_and_domains_are_refused(c: &Ctx) {
    let shared = c.gntalloc.share(c.me, 1, true).expect("share");
    let good = shared.refs()[0];
    for (what, domain, refs) in [
        ("a ref beyond the table", c.me, vec![FAR_REF]),
        ("a good ref with a bad one", c.me, vec![good, FAR_REF]),
        ("a domain that does not exist", NO_DOMAIN, vec![good]),
    ] {
        let err = c.gntdev.map(domain, &refs).expect_err(what);
        assert_eq!(errno_of(&err), Some(Errno::EINVAL), "{what}: {err}");
        assert!(
            err.to_string().contains(&format!("domain {domain}")),
            "{err}"
        );
    }
    // The good ref was not left mapped by the failed request: it still maps, and the share
    // ends cleanly afterwards.
    let m = c.gntdev.map(c.me, &[good]).expect("the good ref alone");
    drop(m);
}

pub fn a_dropped_share_ends_its_grants(c: &Ctx) {
    let shared = c.gntalloc.share(c.me, 1, true).expect("share");
    let gref = shared.refs()[0];
    drop(c.gntdev.map(c.me, &[gref]).expect("map while shared"));
    drop(shared);
    let err = c
        .gntdev
        .map(c.me, &[gref])
        .expect_err("map after the share went");
    assert_eq!(errno_of(&err), Some(Errno::EINVAL), "{err}");
}

pub fn the_mappers_unmap_notify_clears_the_byte(c: &Ctx) {
    let shared = c.gntalloc.share(c.me, 2, true).expect("share");
    shared.slice().fill(0, 2 * PAGE, 0xaa).expect("fill");
    let mut m = c.gntdev.map(c.me, shared.refs()).expect("map");
    m.set_unmap_notify(UnmapNotify::clear_byte(PAGE + 17))
        .expect("notify");
    assert_eq!(
        shared.slice().read::<u8>(PAGE + 17).expect("read"),
        0xaa,
        "not yet"
    );
    drop(m);
    assert_eq!(
        shared.slice().read::<u8>(PAGE + 17).expect("read"),
        0,
        "cleared on unmap"
    );
    assert_eq!(
        shared.slice().read::<u8>(PAGE + 16).expect("read"),
        0xaa,
        "only that byte"
    );
}

pub fn the_sharers_unmap_notify_clears_the_byte_for_the_mapper(c: &Ctx) {
    let mut shared = c.gntalloc.share(c.me, 1, true).expect("share");
    shared.slice().fill(0, PAGE, 0x55).expect("fill");
    let m = c.gntdev.map_read_only(c.me, shared.refs()).expect("map");
    shared
        .set_unmap_notify(UnmapNotify::clear_byte(40))
        .expect("notify");
    drop(shared);
    // The mapper still has the page (Xen lets nobody revoke a mapped grant) and sees the byte
    // cleared.
    assert_eq!(m.slice().read::<u8>(40).expect("read"), 0);
    assert_eq!(m.slice().read::<u8>(41).expect("read"), 0x55);
}

pub fn unmap_notify_errors(c: &Ctx) {
    let shared = c.gntalloc.share(c.me, 1, true).expect("share");
    let mut rw = c.gntdev.map(c.me, shared.refs()).expect("map");
    let err = rw
        .set_unmap_notify(UnmapNotify::clear_byte(PAGE))
        .expect_err("outside");
    assert_eq!(errno_of(&err), Some(Errno::ENOENT), "{err}");
    let mut ro = c.gntdev.map_read_only(c.me, shared.refs()).expect("map ro");
    let err = ro
        .set_unmap_notify(UnmapNotify::clear_byte(0))
        .expect_err("read-only");
    assert_eq!(errno_of(&err), Some(Errno::EINVAL), "{err}");
    let mut shared = shared;
    let err = shared
        .set_unmap_notify(UnmapNotify::clear_byte(PAGE))
        .expect_err("outside");
    assert_eq!(errno_of(&err), Some(Errno::ENOENT), "{err}");
    drop((rw, ro));
}

pub fn an_unbound_event_port_is_refused(c: &Ctx) {
    // Port 4000 is within the event-channel ABI's range and bound by nobody in the test
    // domain (ports are handed out lowest first).
    let port = EventPort::new(4000);
    let mut shared = c.gntalloc.share(c.me, 1, true).expect("share");
    let mut m = c.gntdev.map(c.me, shared.refs()).expect("map");
    let err = m
        .set_unmap_notify(UnmapNotify::send_event(port))
        .expect_err("gntdev: unbound port");
    assert_eq!(errno_of(&err), Some(Errno::EINVAL), "{err}");
    let err = shared
        .set_unmap_notify(UnmapNotify::clear_byte(0).and_send_event(port))
        .expect_err("gntalloc: unbound port");
    assert_eq!(errno_of(&err), Some(Errno::EINVAL), "{err}");
    // Nothing was set: dropping clears no byte.
    shared.slice().write(0, &7u8).expect("write");
    drop(m);
    assert_eq!(shared.slice().read::<u8>(0).expect("read"), 7);
}

pub fn grant_copy_both_ways_with_a_bad_ref(c: &Ctx) {
    let shared = c.gntalloc.share(c.me, 1, true).expect("share");
    let ro = c.gntalloc.share(c.me, 1, false).expect("share read-only");
    ro.slice().write_from(200, b"read me").expect("write");
    let (g, r) = (shared.refs()[0], ro.refs()[0]);
    let mut back = [0u8; 7];
    let mut across = [0u8; 3];
    let mut segs = [
        CopySegment::to_grant(b"copied in", c.me, g, 4087),
        CopySegment::to_grant(b"nope", c.me, FAR_REF, 0),
        CopySegment::from_grant(c.me, r, 200, &mut back),
        CopySegment::to_grant(b"ro", c.me, r, 0),
        CopySegment::between_grants((c.me, r, 200), (c.me, g, 10), 4),
        CopySegment::from_grant(c.me, g, 10, &mut across),
    ];
    let err = c
        .gntdev
        .grant_copy(&mut segs)
        .expect_err("two segments fail");
    match err {
        Error::CopySegment {
            index,
            domain,
            gref,
            status,
            failed,
            segments,
        } => {
            assert_eq!(
                (index, domain, gref, failed, segments),
                (1, c.me, FAR_REF, 2, 6)
            );
            assert_eq!(status, GrantStatus::BAD_GNTREF);
        }
        other => panic!("expected a segment failure, got {other}"),
    }
    let statuses: Vec<_> = segs.iter().map(|s| s.status()).collect();
    assert_eq!(
        statuses,
        [
            Some(GrantStatus::OKAY),
            Some(GrantStatus::BAD_GNTREF),
            Some(GrantStatus::OKAY),
            Some(GrantStatus::GENERAL_ERROR),
            Some(GrantStatus::OKAY),
            Some(GrantStatus::OKAY),
        ]
    );
    assert_eq!(shared.slice().to_vec(4087, 9).expect("read"), b"copied in");
    assert_eq!(&back, b"read me");
    assert_eq!(&across, b"rea", "segments run in order");
    assert_eq!(
        ro.slice().to_vec(0, 2).expect("read"),
        [0, 0],
        "the read-only page is untouched"
    );
}

pub fn zero_pages_and_empty_lists_are_einval(c: &Ctx) {
    let err = c.gntalloc.share(c.me, 0, true).expect_err("zero pages");
    assert_eq!(errno_of(&err), Some(Errno::EINVAL), "{err}");
    let err = c.gntdev.map(c.me, &[]).expect_err("no refs");
    assert_eq!(errno_of(&err), Some(Errno::EINVAL), "{err}");
    c.gntdev
        .grant_copy(&mut [])
        .expect("an empty copy does nothing");
}
