//! The PV and PVH build plans on Debian 12's real kernel, when the test is told where it is:
//!
//! ```sh
//! RXEN_DEBIAN_KERNEL=.vm-cache/<key>/root/boot/vmlinuz-6.1.0-57-amd64 \
//!     cargo test -p toolstack --test build_debian -- --nocapture
//! ```
//!
//! Without the variable the test says it was skipped and passes; with it, a missing file fails.
//! The kernel occupies guest memory from 16 MiB to about 74 MiB, so a 128 MiB guest builds and
//! a 64 MiB one does not.

// Addresses in this test are page counts of a few GiB at most.
#![allow(clippy::cast_possible_truncation)]

use std::collections::HashMap;
use std::path::PathBuf;

use toolstack::build::kernel::{CommandLine, ImageLimits, KernelImage};
use toolstack::build::plan::{PlanError, PAGE_SIZE};
use toolstack::build::pv::{PvBoot, PvLayout};
use toolstack::build::pvh::PvhLayout;
use xenctrl::x86::{walk, FrameSource};

const VAR: &str = "RXEN_DEBIAN_KERNEL";
const MIB: u64 = 1 << 20;

fn kernel() -> Option<KernelImage> {
    let Some(path) = std::env::var_os(VAR) else {
        eprintln!("skipped: set {VAR} to Debian 12's vmlinuz to run this test");
        return None;
    };
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "{VAR}={} is set, but there is no such file",
        path.display()
    );
    Some(
        KernelImage::load_file(&path, &ImageLimits::default(), None)
            .unwrap()
            .image,
    )
}

struct Frames(HashMap<u64, Vec<u8>>);

impl FrameSource for Frames {
    fn entry(&self, frame: u64, index: usize) -> Option<u64> {
        let b = self.0.get(&frame)?.get(index * 8..index * 8 + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
}

#[test]
fn debian_12_kernel_plans_for_128_mib_pv_and_pvh_guests() {
    let Some(image) = kernel() else { return };
    let cmd = CommandLine::new("console=hvc0").unwrap();
    let pages = 128 * MIB / PAGE_SIZE;

    // PV: the kernel from 16 MiB to about 74 MiB, VIRT_BASE mapping pfn 0.
    let pv = PvLayout::new(image.elf(), pages, 2, None, &cmd).unwrap();
    let k = pv.kernel();
    let (start, end) = (k.pfn * PAGE_SIZE, (k.pfn + k.pages) * PAGE_SIZE);
    eprintln!(
        "PV: kernel {}..{} MiB, {} page-table frames, mapping to {:#x}, p2m at {:#x} ({} frames)",
        start / MIB,
        end / MIB,
        pv.page_tables().pages,
        pv.mapping_end(),
        pv.p2m().va,
        pv.p2m().pages
    );
    assert_eq!(start, 16 * MIB);
    assert!(
        (60 * MIB..=80 * MIB).contains(&end),
        "kernel ends at {end:#x}"
    );
    assert_eq!(pv.virt_base(), 0xffff_ffff_8000_0000);
    assert!(pv.p2m_at_init_p2m(), "Debian's kernel has INIT_P2M");
    assert_eq!(pv.p2m().va, 0x80_0000_0000);
    assert_eq!(pv.hypercall_page(), None, "no HYPERCALL_PAGE note");
    assert!(pv.used_pages() <= pages);

    // Render with a scattered p2m and walk ENTRY to the kernel's bytes.
    let p2m: Vec<u64> = (0..pages).map(|p| 0x10_0000 + (pages - 1 - p)).collect();
    let out = pv
        .render(&PvBoot {
            p2m: &p2m,
            shared_info_mfn: 0x1234,
            store_evtchn: 1,
            console_evtchn: 2,
        })
        .unwrap();
    let mut frames = Frames(HashMap::new());
    for p in &out.pages {
        frames.0.insert(p2m[p.pfn as usize], p.bytes.clone());
    }
    let entry = pv.kernel_layout().entry;
    let t = walk(&frames, out.pin_l4_mfn, entry).unwrap();
    let entry_pfn = (entry - pv.virt_base()) / PAGE_SIZE;
    assert_eq!(t.frame, p2m[entry_pfn as usize]);
    let load = pv
        .loads()
        .iter()
        .find(|l| l.dest <= entry_pfn * PAGE_SIZE && entry_pfn * PAGE_SIZE < l.dest + l.len)
        .expect("ENTRY is in a loaded segment");
    assert!(load.bytes(image.elf_bytes(), None).is_some());
    let t = walk(&frames, out.pin_l4_mfn, out.vcpu.rsi).unwrap();
    assert_eq!(t.frame, p2m[pv.start_info_pfn() as usize]);

    // PVH: the same physical range, entered at PHYS32_ENTRY.
    let pvh = PvhLayout::new(image.elf(), pages, 2, None, &cmd).unwrap();
    let k = pvh.kernel();
    eprintln!(
        "PVH: kernel {}..{} MiB, start info at {:#x}, RSDP at {:#x}",
        k.start * PAGE_SIZE / MIB,
        k.end() * PAGE_SIZE / MIB,
        pvh.start_info_address(),
        pvh.acpi().rsdp_address
    );
    assert_eq!(k.start * PAGE_SIZE, 16 * MIB);
    assert_eq!(k.end() * PAGE_SIZE, end);
    let img = pvh.render(1, 2);
    assert_eq!(img.vcpu.rip, image.notes().phys32_entry.unwrap());
    assert_eq!(img.vcpu.rbx, pvh.start_info_address());
}

#[test]
fn debian_12_kernel_does_not_fit_64_mib() {
    let Some(image) = kernel() else { return };
    let cmd = CommandLine::default();
    let pages = 64 * MIB / PAGE_SIZE;
    let pv = PvLayout::new(image.elf(), pages, 1, None, &cmd);
    assert!(
        matches!(
            pv,
            Err(PlanError::NoRoom { .. } | PlanError::MappingPastMemory { .. })
        ),
        "{:?}",
        pv.err()
    );
    let pvh = PvhLayout::new(image.elf(), pages, 1, None, &cmd);
    assert!(
        matches!(pvh, Err(PlanError::SegmentOutsideRam { ram_end, .. }) if ram_end == 64 * MIB),
        "{:?}",
        pvh.err()
    );
}
