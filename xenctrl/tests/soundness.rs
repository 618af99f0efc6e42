//! The buffer contract at run time, on the simulator: every handle of a call belongs to the
//! calling handle's pool, every count Xen trusts matches its buffer, and a call changes no byte
//! outside the buffers it names. (`tests/vm_xenctrl.rs` runs the same checks on real Xen.)

// The random numbers here are small indices and bytes; truncating them is what is meant.
#![allow(clippy::cast_possible_truncation)]

use xenctrl::abi::*;
use xenctrl::{BufferPool, CreateDomain, Error, HypercallBuffer, SimConfig, XenCtrl};

fn sim() -> XenCtrl {
    XenCtrl::simulated(SimConfig::default()).expect("simulated host")
}

fn domains(xc: &XenCtrl, n: usize) -> Vec<DomId> {
    (0..n)
        .map(|_| xc.create_domain(&CreateDomain::pv(1)).expect("create"))
        .collect()
}

#[test]
fn a_list_buffer_of_another_pool_is_refused_before_xen() {
    let xc = sim();
    let other = sim();
    let anon = BufferPool::anonymous();
    for pool in [other.pool(), &anon] {
        let mut list = pool.alloc_slice::<XenDomctlGetdomaininfo>(4).unwrap();
        let mut op = xc
            .pool()
            .alloc::<XenSysctl<XenSysctlGetdomaininfolist<'_>>>()
            .unwrap();
        op.set(XenSysctlGetdomaininfolist::new(0, list.guest_handle()));
        let err = xc.sysctl(&mut op).unwrap_err();
        assert!(
            matches!(err, Error::ForeignBuffer { .. }),
            "a foreign list buffer must be a typed error, not EFAULT: {err:?}"
        );
        drop(op);
        assert!(
            list.iter().all(|d| *d == XenDomctlGetdomaininfo::default()),
            "nothing was written"
        );
    }
    // The same call with the handle's own pool works.
    let mut list = xc.pool().alloc_slice::<XenDomctlGetdomaininfo>(4).unwrap();
    let mut op = xc
        .pool()
        .alloc::<XenSysctl<XenSysctlGetdomaininfolist<'_>>>()
        .unwrap();
    op.set(XenSysctlGetdomaininfolist::new(0, list.guest_handle()));
    xc.sysctl(&mut op).unwrap();
    assert_eq!(op.u.num_domains(), 1, "dom0");
}

#[test]
fn extents_of_another_pool_are_refused_before_xen() {
    let xc = sim();
    let d = domains(&xc, 1)[0];
    xc.set_max_mem(d, 64 * 1024).unwrap();
    let other = sim();
    let mut gpfns = other.pool().alloc_slice::<XenPfn>(4).unwrap();
    let mut op = xc.pool().alloc::<XenMemoryReservation<'_>>().unwrap();
    *op = XenMemoryReservation::with_extents(d, 0, 0, gpfns.guest_handle());
    let err = xc
        .memory_reservation_op(XENMEM_populate_physmap, &mut op)
        .unwrap_err();
    assert!(matches!(err, Error::ForeignBuffer { .. }), "{err:?}");
    drop(op);
    assert_eq!(xc.current_reservation(d).unwrap(), 0, "nothing populated");
}

#[test]
fn the_argument_itself_of_another_pool_is_refused() {
    let xc = sim();
    let other = sim();
    let mut op = other
        .pool()
        .alloc::<XenDomctl<XenDomctlGetdomaininfo>>()
        .unwrap();
    op.set(0, XenDomctlGetdomaininfo::default());
    assert!(matches!(
        xc.domctl(&mut op).unwrap_err(),
        Error::ForeignBuffer { .. }
    ));
}

#[test]
fn a_list_count_is_the_buffer_length() {
    let xc = sim();
    domains(&xc, 8);
    // A one-entry list, with live buffers of the same size class around it.
    let before: Vec<_> = (0..4)
        .map(|_| {
            let mut b = xc.pool().alloc_slice::<u8>(112).unwrap();
            b.fill(0x5a);
            b
        })
        .collect();
    let mut one = xc.pool().alloc_slice::<XenDomctlGetdomaininfo>(1).unwrap();
    let after: Vec<_> = (0..4)
        .map(|_| {
            let mut b = xc.pool().alloc_slice::<u8>(112).unwrap();
            b.fill(0x5a);
            b
        })
        .collect();
    let mut op = xc
        .pool()
        .alloc::<XenSysctl<XenSysctlGetdomaininfolist<'_>>>()
        .unwrap();
    op.set(XenSysctlGetdomaininfolist::new(0, one.guest_handle()));
    assert_eq!(op.u.max_domains(), 1);
    xc.sysctl(&mut op).unwrap();
    assert_eq!(op.u.num_domains(), 1, "9 domains exist, 1 fits");
    drop(op);
    assert_eq!(one[0].domain, 0);
    for b in before.iter().chain(&after) {
        assert!(b.iter().all(|&x| x == 0x5a), "a neighbour was written");
    }
}

#[test]
fn an_extent_count_is_the_buffer_length() {
    let xc = sim();
    let d = domains(&xc, 1)[0];
    xc.set_max_mem(d, 64 * 1024).unwrap();
    let mut gpfns = xc.pool().alloc_slice::<XenPfn>(3).unwrap();
    for (i, g) in gpfns.iter_mut().enumerate() {
        *g = i as u64;
    }
    let mut op = xc.pool().alloc::<XenMemoryReservation<'_>>().unwrap();
    *op = XenMemoryReservation::with_extents(d, 0, 0, gpfns.guest_handle());
    assert_eq!(op.nr_extents(), 3);
    let done = xc
        .memory_reservation_op(XENMEM_populate_physmap, &mut op)
        .unwrap();
    assert_eq!(done, 3);
    drop(op);
    assert_eq!(xc.current_reservation(d).unwrap(), 3);
}

#[test]
fn a_sub_op_that_needs_a_list_refuses_none() {
    let xc = sim();
    let d = domains(&xc, 1)[0];
    for cmd in [XENMEM_populate_physmap, XENMEM_decrease_reservation] {
        let mut op = xc.pool().alloc::<XenMemoryReservation<'_>>().unwrap();
        *op = XenMemoryReservation::anywhere(d, 4, 0, 0);
        assert!(matches!(
            xc.memory_reservation_op(cmd, &mut op).unwrap_err(),
            Error::MissingList { .. }
        ));
    }
}

/// `fastrand` seeded from `RXEN_TEST_SEED` (or the clock), with the seed printed so a failure
/// can be replayed.
struct Rng(fastrand::Rng);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.u64(..)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0.u64(..n.max(1))
    }
}

fn seed() -> u64 {
    let seed = std::env::var("RXEN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("RXEN_TEST_SEED={seed}");
    seed
}

/// Random pool buffers, random hypercalls: after each call, every buffer the call did not name
/// holds the bytes it held before.
#[test]
fn random_calls_touch_only_the_buffers_they_name() {
    let seed = seed();
    let mut rng = Rng(fastrand::Rng::with_seed(seed));
    let xc = sim();
    let doms = domains(&xc, 3);
    for &d in &doms {
        xc.set_max_mem(d, 256 * 1024).unwrap();
    }
    // Bystanders of many size classes, filled with random bytes.
    let mut bystanders: Vec<HypercallBuffer<'_, [u8]>> = (0..48)
        .map(|_| {
            let len =
                [1, 40, 64, 100, 128, 200, 512, 1000, 2048, 4096, 9000][rng.below(11) as usize];
            let mut b = xc.pool().alloc_slice::<u8>(len).unwrap();
            for x in b.iter_mut() {
                *x = rng.next() as u8;
            }
            b
        })
        .collect();
    for step in 0..400 {
        let snapshot: Vec<Vec<u8>> = bystanders.iter().map(|b| b.to_vec()).collect();
        let d = doms[rng.below(doms.len() as u64) as usize];
        let what = rng.below(9);
        // Each arm allocates what the call names, issues it, and frees it before the check.
        match what {
            0 => {
                let n = rng.below(6) as usize;
                let mut list = xc.pool().alloc_slice::<XenDomctlGetdomaininfo>(n).unwrap();
                let mut op = xc
                    .pool()
                    .alloc::<XenSysctl<XenSysctlGetdomaininfolist<'_>>>()
                    .unwrap();
                op.set(XenSysctlGetdomaininfolist::new(
                    rng.below(8) as DomId,
                    list.guest_handle(),
                ));
                let _ = xc.sysctl(&mut op);
                assert!(op.u.num_domains() as usize <= n);
            }
            1 | 2 => {
                let n = rng.below(5) as usize;
                let cmd = [
                    XENMEM_populate_physmap,
                    XENMEM_decrease_reservation,
                    XENMEM_increase_reservation,
                ][rng.below(3) as usize];
                let mut gpfns = xc.pool().alloc_slice::<XenPfn>(n).unwrap();
                for g in gpfns.iter_mut() {
                    *g = rng.below(64);
                }
                let mut op = xc.pool().alloc::<XenMemoryReservation<'_>>().unwrap();
                *op = XenMemoryReservation::with_extents(d, 0, 0, gpfns.guest_handle());
                if let Ok(done) = xc.memory_reservation_op(cmd, &mut op) {
                    assert!(done <= n as u64);
                }
            }
            3 => {
                let mut op = xc.pool().alloc::<XenMemoryReservation<'_>>().unwrap();
                *op = XenMemoryReservation::claim(d, rng.below(512));
                let _ = xc.memory_reservation_op(XENMEM_claim_pages, &mut op);
                *op = XenMemoryReservation::claim(d, 0);
                let _ = xc.memory_reservation_op(XENMEM_claim_pages, &mut op);
            }
            4 => {
                let mut op = xc
                    .pool()
                    .alloc::<XenDomctl<XenDomctlGetdomaininfo>>()
                    .unwrap();
                op.set(d, XenDomctlGetdomaininfo::default());
                let _ = xc.domctl(&mut op);
            }
            5 => {
                let mut op = xc.pool().alloc::<XenDomctl<XenDomctlMaxMem>>().unwrap();
                op.set(
                    d,
                    XenDomctlMaxMem {
                        max_memkb: 64 * 1024 + rng.below(1 << 20),
                    },
                );
                let _ = xc.domctl(&mut op);
            }
            6 => {
                let mut op = xc.pool().alloc::<XenSysctl<XenSysctlPhysinfo>>().unwrap();
                op.set(XenSysctlPhysinfo::default());
                let _ = xc.sysctl(&mut op);
            }
            7 => {
                let mut op = xc.pool().alloc::<XenMemoryReservation<'_>>().unwrap();
                *op = XenMemoryReservation::anywhere(d, rng.below(4), 0, 0);
                let _ = xc.memory_reservation_op(XENMEM_increase_reservation, &mut op);
            }
            _ => {
                let _ = if rng.below(2) == 0 {
                    xc.pause_domain(d)
                } else {
                    xc.unpause_domain(d)
                };
            }
        }
        for (i, (b, before)) in bystanders.iter().zip(&snapshot).enumerate() {
            assert!(
                b[..] == before[..],
                "seed {seed}, step {step}, call {what}: bystander {i} ({} bytes at {:#x}) changed",
                b.len(),
                b.addr()
            );
        }
        // Recycle a bystander now and then, so blocks move around the named buffers.
        if rng.below(4) == 0 {
            let i = rng.below(bystanders.len() as u64) as usize;
            let len = bystanders[i].len();
            let mut b = xc.pool().alloc_slice::<u8>(len).unwrap();
            for x in b.iter_mut() {
                *x = rng.next() as u8;
            }
            bystanders[i] = b;
        }
    }
}
