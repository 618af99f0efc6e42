//! The PV and PVH build plans (`toolstack::build::{pv, pvh}`) on a synthetic Debian-shaped
//! kernel: what a create spends between loading the kernel and touching guest memory.
//!
//! Group `build-plan`, for a 128 MiB and a 4 GiB guest:
//! - `pv-layout`: `PvLayout::new` (frames, virtual addresses, page-table counts);
//! - `pv-render`: `PvLayout::render` with a p2m (page tables holding mfns, the p2m list,
//!   start_info, the vCPU); its cost grows with memory through the p2m list;
//! - `pvh`: `PvhLayout::new` and `render` (hvm_start_info, e820, ACPI tables).
//!
//! There is no C twin: libxenguest computes the same inside `xc_dom_build_image` while it maps
//! and writes guest memory, which only the VM timing of a whole `xl create` can separate.

#[path = "../../toolstack/tests/kernel_fixture/mod.rs"]
mod kernel_fixture;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use kernel_fixture::ElfBuilder;
use toolstack::build::kernel::{CommandLine, ElfKernel, ImageLimits};
use toolstack::build::pv::{PvBoot, PvLayout};
use toolstack::build::pvh::PvhLayout;

const PAGE: u64 = 4096;

fn main() {
    let mut crit = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let elf = ElfBuilder::debian_like().bytes();
    let kernel = ElfKernel::parse(&elf, &ImageLimits::default()).expect("the fixture parses");
    let cmd = CommandLine::new("console=hvc0 root=/dev/xvda1").expect("a short command line");
    let mut g = crit.benchmark_group("build-plan");
    for (name, bytes) in [("128M", 128u64 << 20), ("4G", 4u64 << 30)] {
        let pages = bytes / PAGE;
        g.throughput(Throughput::Elements(pages));
        g.bench_function(format!("pv-layout/{name}"), |b| {
            b.iter(|| PvLayout::new(black_box(&kernel), pages, 2, None, &cmd).expect("fits"))
        });
        let layout = PvLayout::new(&kernel, pages, 2, None, &cmd).expect("fits");
        let p2m: Vec<u64> = (0..pages).map(|p| 0x10_0000 + (pages - 1 - p)).collect();
        let boot = PvBoot {
            p2m: &p2m,
            shared_info_mfn: 0x1234,
            store_evtchn: 1,
            console_evtchn: 2,
        };
        g.bench_function(format!("pv-render/{name}"), |b| {
            b.iter(|| black_box(&layout).render(&boot).expect("renders"))
        });
        g.bench_function(format!("pvh/{name}"), |b| {
            b.iter(|| {
                PvhLayout::new(black_box(&kernel), pages, 2, None, &cmd)
                    .expect("fits")
                    .render(1, 2)
            })
        });
    }
    g.finish();
    crit.final_summary();
}
