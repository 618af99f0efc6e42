//! What the typed hypercall entry points add on top of the raw hypercall (issue 2, item 10: "a
//! typed domctl marshalled and dispatched to a null backend costs ≤ 20 ns more than the raw
//! call").
//!
//! The handle is `xenctrl::bench_support::null_ctrl()` (feature `bench-internals`): a backend
//! whose hypercall does nothing and returns 0, speaking Xen 4.17's interface, so only our own
//! work is timed. One group per domctl, `domctl/<op>`:
//!
//! - `raw`: `bench_support::raw_hypercall(__HYPERVISOR_domctl, [addr, 0, 0, 0, 0], arena)` on
//!   the same domctl prepared as raw bytes (`XenDomctlView`) in a pool buffer: the baseline,
//!   nothing but the dispatch;
//! - `typed`: writing `XenDomctl::new(domid, payload)` into the same pool buffer and issuing
//!   `XenCtrl::domctl` on it: marshalling (the struct, the interface version, the layout encode
//!   and decode), the pool check and the dispatch. Held to raw + 20 ns by `ratios`;
//! - `api` (pausedomain only): `XenCtrl::pause_domain(domid)`, the public operation end to end,
//!   which also allocates and frees its pool buffer. For information.
//!
//! There is no C twin: libxenctrl's `do_domctl` needs a real privcmd to get past its first
//! hypercall, and on the placeholder it would fail with `ENOTTY` from the ioctl.

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use xenctrl::abi::{
    __HYPERVISOR_domctl, DomctlPayload, XenDomctl, XenDomctlGetdomaininfo, XenDomctlPausedomain,
    XenDomctlView,
};
use xenctrl::bench_support::{null_ctrl, raw_hypercall};
use xenctrl::XenCtrl;
use zerocopy::{Immutable, IntoBytes};

/// The domain every call names (any will do: the null backend does not look).
const DOMID: u16 = 7;

/// `domctl/<name>`: `raw` and `typed` for `payload`.
fn bench_domctl<P>(crit: &mut Criterion, xc: &XenCtrl, name: &str, payload: P)
where
    P: DomctlPayload + IntoBytes + Immutable + Copy,
{
    let mut group = crit.benchmark_group(format!("domctl/{name}"));
    let mut op = xc.pool().alloc::<XenDomctl<P>>().expect("pool alloc");
    *op = XenDomctl::new(DOMID, payload);
    xc.domctl(&mut op).expect("null backend domctl");
    // The raw call's argument: the same domctl as raw bytes (the raw entry point takes only
    // plain data), laid out as the typed path leaves it.
    let mut raw = xc.pool().alloc::<XenDomctlView>().expect("pool alloc");
    raw.cmd = P::CMD;
    raw.interface_version = op.interface_version();
    raw.domain = DOMID;
    let bytes = payload.as_bytes();
    raw.union_bytes_mut()[..bytes.len()].copy_from_slice(bytes);

    group.bench_function("raw", |b| {
        b.iter(|| {
            let addr = raw.addr();
            let ret = raw_hypercall(xc, __HYPERVISOR_domctl, [addr, 0, 0, 0, 0], &mut raw);
            black_box(ret).expect("null backend");
        });
    });
    group.bench_function("typed", |b| {
        b.iter(|| {
            op.set(black_box(DOMID), black_box(payload));
            black_box(xc.domctl(&mut op)).expect("null backend");
        });
    });
    if name == "pausedomain" {
        group.bench_function("api", |b| {
            b.iter(|| black_box(xc.pause_domain(black_box(DOMID))).expect("null backend"));
        });
    }
    group.finish();
}

fn main() {
    let mut crit = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let xc = null_ctrl();
    bench_domctl(&mut crit, &xc, "pausedomain", XenDomctlPausedomain {});
    bench_domctl(
        &mut crit,
        &xc,
        "getdomaininfo",
        XenDomctlGetdomaininfo::default(),
    );
    crit.final_summary();
}
