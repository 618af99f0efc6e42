//! Foreign mapping on the simulated host (issue 12, item 6: "foreign-map of 1, 64 and 1024
//! pages"): `XenCtrl::map_foreign` of a populated PV domain's frames, then dropping the mapping,
//! which unmaps it. One group per size, `foreign-map/<n>-pages`:
//!
//! - `sim`: map + unmap on an in-process simulated host. One iteration is the whole path:
//!   the window (an anonymous reservation, as privcmd's is a device mapping), the batch (a
//!   model lookup and a hold per frame, one `mmap` per run of contiguous frames into the
//!   window), and the unmap (the window, then the holds).
//!
//! There is no C twin here: libxenforeignmemory needs a real privcmd. The same sizes against
//! libxenforeignmemory run in the Xen VM.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use xenctrl::volatile::ReadWrite;
use xenctrl::{CreateDomain, DomainId, SimConfig, XenCtrl};

const SIZES: [usize; 3] = [1, 64, 1024];

fn main() {
    let mut crit = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();

    let xc = XenCtrl::simulated(SimConfig::default()).expect("a simulated host");
    let d = xc.create_domain(&CreateDomain::pv(1)).expect("create");
    let largest = SIZES[SIZES.len() - 1] as u64;
    xc.set_max_mem(d, largest * 4).expect("max_mem");
    let mut frames: Vec<u64> = (0..largest).collect();
    xc.populate_physmap_exact(d, 0, 0, &mut frames)
        .expect("populate");
    let domain = DomainId::new(d);

    for pages in SIZES {
        let name = if pages == 1 {
            "foreign-map/1-page".to_owned()
        } else {
            format!("foreign-map/{pages}-pages")
        };
        let mut group = crit.benchmark_group(name);
        group.throughput(Throughput::Elements(pages as u64));
        let gfns = &frames[..pages];
        group.bench_function("sim", |b| {
            b.iter(|| {
                let m = xc
                    .map_foreign::<ReadWrite>(domain, black_box(gfns))
                    .expect("map");
                black_box(m.pages());
            });
        });
        group.finish();
    }
    xc.destroy_domain(d).expect("destroy");
    crit.final_summary();
}
