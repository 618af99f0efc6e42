//! Hypercall buffer alloc+free: our `BufferPool` against Debian's C libxencall 4.17.
//!
//! One criterion group per path (`alloc-free/<threads>/<size>`), the C twin in the same group:
//!
//! - `libxencall`: `xencall_alloc_buffer_pages(n)` + `xencall_free_buffer_pages` for page
//!   sizes, `xencall_alloc_buffer(256)` + `xencall_free_buffer` for 256 bytes; both zero the
//!   memory they hand out;
//! - `pool-zeroed`: `BufferPool::alloc_slice::<u8>(bytes)` + drop, zeroed: the like-for-like
//!   twin, held to the targets;
//! - `pool-uninit`: `BufferPool::alloc_uninit(bytes)` + drop, for information;
//! - `memset-floor` (one thread only): zeroing `bytes` of already-allocated, warm memory. Not a
//!   twin: the floor under any allocator that hands out zeroed memory.
//!
//! `alloc-free-10000-outstanding/...` repeats some sizes with 10,000 one-page buffers held
//! alive in the pool (and in the C handle), to show the cost does not grow with them.
//!
//! Two-thread groups run the loop on two threads at once against the same pool (the same C
//! handle) and report wall time per operation per thread; see `rxen_benches::concurrent`.
//! See `benches/README.md` for how the C side runs without Xen.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use rxen_benches::concurrent;
use xenctrl::{BufferPool, PAGE_SIZE};

/// A buffer size the issue asks for.
#[derive(Clone, Copy, Debug)]
enum Size {
    /// A sub-page buffer (`xencall_alloc_buffer`).
    Bytes(usize),
    /// A run of pages (`xencall_alloc_buffer_pages`).
    Pages(usize),
}

impl Size {
    const ALL: [Size; 7] = [
        Size::Bytes(256),
        Size::Pages(1),
        Size::Pages(2),
        Size::Pages(4),
        Size::Pages(8),
        Size::Pages(16),
        Size::Pages(64),
    ];

    fn bytes(self) -> usize {
        match self {
            Size::Bytes(b) => b,
            Size::Pages(n) => n * PAGE_SIZE,
        }
    }

    /// The group's last path component; `rxen_benches::ratios` reads targets off it.
    fn label(self) -> String {
        match self {
            Size::Bytes(b) => format!("{b}-bytes"),
            Size::Pages(1) => "1-page".to_owned(),
            Size::Pages(n) => format!("{n}-pages"),
        }
    }
}

/// The C twin, when libxen-dev was found at build time and the placeholder namespace is up.
#[cfg(has_libxencall)]
type CTwin = rxen_benches::c_xencall::CXencall;
/// No C twin: libxen-dev was missing at build time.
#[cfg(not(has_libxencall))]
type CTwin = std::convert::Infallible;

/// Enter the placeholder namespace and open libxencall, before criterion or any thread starts.
#[cfg(has_libxencall)]
fn open_c_twin() -> Option<CTwin> {
    use rxen_benches::c_xencall::CXencall;
    use rxen_benches::privcmd_placeholder;

    let opened = privcmd_placeholder::enter().and_then(|ns| {
        CXencall::open(ns).map_err(|e| format!("xencall_open in the namespace failed: {e}"))
    });
    match opened {
        Ok(c) => {
            // The path the C side takes must be the one README.md describes.
            assert!(
                !c.uses_hypercall_device(),
                "libxencall found /dev/xen/hypercall in the placeholder namespace"
            );
            Some(c)
        }
        Err(e) if rxen_benches::c_baselines_required() => {
            panic!("RXEN_REQUIRE_C_BASELINES=1 but the libxencall baseline cannot run: {e}")
        }
        Err(e) => {
            eprintln!("skipping the libxencall baseline: {e}");
            None
        }
    }
}

#[cfg(not(has_libxencall))]
fn open_c_twin() -> Option<CTwin> {
    eprintln!("skipping the libxencall baseline: built without libxen-dev (see build.rs)");
    None
}

/// One C alloc+free of `size`.
#[cfg(has_libxencall)]
#[inline]
fn c_op(c: &CTwin, size: Size) {
    match size {
        Size::Bytes(b) => {
            let buf = c.alloc_bytes(b).expect("xencall_alloc_buffer");
            black_box(buf.as_ptr());
        }
        Size::Pages(n) => {
            let buf = c.alloc_pages(n).expect("xencall_alloc_buffer_pages");
            black_box(buf.as_ptr());
        }
    }
}

#[cfg(not(has_libxencall))]
fn c_op(c: &CTwin, _size: Size) {
    match *c {}
}

/// One zeroed pool alloc+free of `bytes`.
#[inline]
fn zeroed_op(pool: &BufferPool, bytes: usize) {
    let buf = pool.alloc_slice::<u8>(bytes).expect("pool alloc_slice");
    black_box(buf.as_ptr());
}

/// One uninitialised pool alloc+free of `bytes`.
#[inline]
fn uninit_op(pool: &BufferPool, bytes: usize) {
    let buf = pool.alloc_uninit(bytes).expect("pool alloc_uninit");
    black_box(buf.as_ptr());
}

/// The three lines of one group: C twin (if any), ours zeroed, ours uninit.
fn bench_size(
    group: &mut BenchmarkGroup<'_, WallTime>,
    threads: usize,
    size: Size,
    pool: &BufferPool,
    c: Option<&CTwin>,
) {
    let bytes = size.bytes();
    group.throughput(Throughput::Elements(threads as u64));
    if let Some(c) = c {
        group.bench_function("libxencall", |b| {
            b.iter_custom(|iters| concurrent::run(threads, iters, || c_op(c, size)));
        });
    }
    group.bench_function("pool-zeroed", |b| {
        b.iter_custom(|iters| concurrent::run(threads, iters, || zeroed_op(pool, bytes)));
    });
    group.bench_function("pool-uninit", |b| {
        b.iter_custom(|iters| concurrent::run(threads, iters, || uninit_op(pool, bytes)));
    });
    if threads == 1 {
        // Reference, not a twin: zeroing `bytes` of warm memory, no allocation at all. Every
        // zeroed allocator (libxencall's memset, ours) pays at least this.
        let mut buf = pool.alloc_uninit(bytes).expect("pool alloc_uninit");
        group.bench_function("memset-floor", |b| {
            b.iter(|| {
                buf.fill(std::mem::MaybeUninit::new(0));
                black_box(buf.as_mut_ptr());
            });
        });
    }
}

fn thread_label(threads: usize) -> String {
    if threads == 1 {
        "1-thread".to_owned()
    } else {
        format!("{threads}-threads")
    }
}

/// `alloc-free/<threads>/<size>` for every size, on a fresh pool.
fn alloc_free(crit: &mut Criterion, threads: usize, c: Option<&CTwin>) {
    let pool = BufferPool::anonymous();
    for size in Size::ALL {
        let name = format!("alloc-free/{}/{}", thread_label(threads), size.label());
        let mut group = crit.benchmark_group(name);
        bench_size(&mut group, threads, size, &pool, c);
        group.finish();
    }
}

/// How many buffers the "outstanding" groups hold alive.
const OUTSTANDING: usize = 10_000;

/// `alloc-free-10000-outstanding/1-thread/<size>`: the same loop with 10,000 one-page buffers
/// alive in the pool and in the C handle.
fn with_outstanding(crit: &mut Criterion, c: Option<&CTwin>) {
    let pool = BufferPool::anonymous();
    let held: Vec<_> = (0..OUTSTANDING)
        .map(|_| pool.alloc_slice::<u8>(PAGE_SIZE).expect("pool alloc_slice"))
        .collect();
    assert_eq!(pool.stats().outstanding, OUTSTANDING);
    #[cfg(has_libxencall)]
    let c_held: Vec<_> = c
        .map(|c| {
            (0..OUTSTANDING)
                .map(|_| c.alloc_pages(1).expect("xencall_alloc_buffer_pages"))
                .collect()
        })
        .unwrap_or_default();

    for size in [Size::Bytes(256), Size::Pages(1), Size::Pages(64)] {
        let name = format!(
            "alloc-free-{OUTSTANDING}-outstanding/1-thread/{}",
            size.label()
        );
        let mut group = crit.benchmark_group(name);
        bench_size(&mut group, 1, size, &pool, c);
        group.finish();
    }
    #[cfg(has_libxencall)]
    drop(c_held);
    drop(held);
}

// Typed domctl through a null backend vs the raw call (issue 2, item 10, "≤ 20 ns more"):
// lives in benches/hypercall.rs once xenctrl exposes its bench-internals entry points.

fn main() {
    // Before criterion and before any thread: the namespace must be in place for the C side.
    let c = open_c_twin();
    let mut crit = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for threads in [1, 2] {
        alloc_free(&mut crit, threads, c.as_ref());
    }
    with_outstanding(&mut crit, c.as_ref());
    crit.final_summary();
}
