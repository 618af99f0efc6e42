//! The PV build plan on synthetic kernels: the plan is applied to a model of machine memory
//! through a scattered fake p2m, and the page tables it made are walked with `xenctrl::x86`
//! from the L4, as the processor (and Xen's pin) would.

// Test sizes are small: they fit every integer type.
#![allow(clippy::cast_possible_truncation)]

mod kernel_fixture;

use std::collections::{BTreeSet, HashMap};

use kernel_fixture::*;
use toolstack::build::kernel::{CommandLine, ElfKernel, ImageLimits, Initrd};
use toolstack::build::plan::{Load, PlanError, Region, PAGE_SIZE};
use toolstack::build::pv::{PvBoot, PvImage, PvLayout, FLAT_KERNEL_CS, FLAT_KERNEL_SS};
use xenctrl::abi::{StartInfo, SIF_MOD_START_PFN};
use xenctrl::x86::{walk, FrameSource, Mapping, PteFlags};
use zerocopy::FromBytes;

const MIB: u64 = 1 << 20;
const PAGES_128M: u64 = 128 * MIB / PAGE_SIZE;

/// Machine memory: frames by mfn.
#[derive(Default)]
struct Machine(HashMap<u64, Vec<u8>>);

impl Machine {
    fn page(&mut self, mfn: u64) -> &mut Vec<u8> {
        self.0
            .entry(mfn)
            .or_insert_with(|| vec![0; PAGE_SIZE as usize])
    }
    fn read(&self, mfn: u64, offset: u64, len: usize) -> Vec<u8> {
        let page = &self.0[&mfn];
        page[offset as usize..offset as usize + len].to_vec()
    }
}

impl FrameSource for Machine {
    fn entry(&self, frame: u64, index: usize) -> Option<u64> {
        let b = self.0.get(&frame)?.get(index * 8..index * 8 + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
}

/// A p2m that scatters frames: pfn i -> a machine frame far from i, in reverse order.
fn fake_p2m(pages: u64) -> Vec<u64> {
    (0..pages)
        .map(|pfn| 0x40_0000 + (pages - 1 - pfn) * 3)
        .collect()
}

/// What the executor would do: copy the loads and write the pages, by mfn.
fn apply(
    layout: &PvLayout,
    image: &PvImage,
    p2m: &[u64],
    elf: &[u8],
    initrd: Option<&Initrd>,
) -> Machine {
    let mut m = Machine::default();
    for l in layout.loads() {
        write_load(&mut m, l, p2m, elf, initrd);
    }
    for p in &image.pages {
        assert_eq!(p.bytes.len(), PAGE_SIZE as usize);
        *m.page(p2m[p.pfn as usize]) = p.bytes.clone();
    }
    m
}

fn write_load(m: &mut Machine, l: &Load, p2m: &[u64], elf: &[u8], initrd: Option<&Initrd>) {
    let bytes = l
        .bytes(elf, initrd)
        .expect("the load's bytes are in its source");
    for (i, b) in bytes.iter().enumerate() {
        let addr = l.dest + i as u64;
        let mfn = p2m[(addr / PAGE_SIZE) as usize];
        m.page(mfn)[(addr % PAGE_SIZE) as usize] = *b;
    }
}

struct Case {
    elf: Vec<u8>,
    kernel: ElfKernel,
    initrd: Option<Initrd>,
    layout: PvLayout,
    p2m: Vec<u64>,
    image: PvImage,
    machine: Machine,
}

fn build(elf: Vec<u8>, pages: u64, initrd_len: Option<usize>, cmdline: &str) -> Case {
    let limits = ImageLimits::default();
    let kernel = ElfKernel::parse(&elf, &limits).unwrap();
    let initrd = initrd_len.map(|n| Initrd::from_bytes(pattern(n, 9), &limits).unwrap());
    let cmd = CommandLine::new(cmdline).unwrap();
    let layout = PvLayout::new(&kernel, pages, 2, initrd.as_ref(), &cmd).unwrap();
    let p2m = fake_p2m(pages);
    let image = layout
        .render(&PvBoot {
            p2m: &p2m,
            shared_info_mfn: 0xabcde,
            store_evtchn: 3,
            console_evtchn: 4,
        })
        .unwrap();
    let machine = apply(&layout, &image, &p2m, &elf, initrd.as_ref());
    Case {
        elf,
        kernel,
        initrd,
        layout,
        p2m,
        image,
        machine,
    }
}

fn start_info(c: &Case) -> StartInfo {
    let t = walk(&c.machine, c.image.pin_l4_mfn, c.image.vcpu.rsi).unwrap();
    let bytes = c.machine.read(t.frame, t.offset, size_of::<StartInfo>());
    StartInfo::read_from_bytes(&bytes).unwrap()
}

/// Notes without the given Xen note types, plus `extra`.
fn notes_without(kinds: &[u32], extra: &[Vec<u8>]) -> Vec<u8> {
    let all = debian_notes();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 12 <= all.len() {
        let word = |o: usize| u32::from_le_bytes(all[at + o..at + o + 4].try_into().unwrap());
        let (namesz, descsz, kind) = (word(0) as usize, word(4) as usize, word(8));
        let len = 12 + namesz.next_multiple_of(4) + descsz.next_multiple_of(4);
        let is_xen = &all[at + 12..at + 12 + namesz] == b"Xen\0";
        if !(is_xen && kinds.contains(&kind)) {
            out.extend_from_slice(&all[at..at + len]);
        }
        at += len;
    }
    for e in extra {
        out.extend_from_slice(e);
    }
    out
}

#[test]
fn debian_like_kernel_is_laid_out_in_libxenguests_order() {
    let c = build(
        ElfBuilder::debian_like().bytes(),
        PAGES_128M,
        Some(5000),
        "console=hvc0",
    );
    let l = &c.layout;
    let kpfn = PSTART / PAGE_SIZE;
    assert_eq!(
        l.kernel().pfn,
        kpfn,
        "pfn 0 is VIRT_BASE, the kernel at its offset"
    );
    assert_eq!(l.kernel().pages, 8);
    assert_eq!(l.kernel().va, VIRT_BASE + PSTART);
    assert_eq!(l.start_info_pfn(), kpfn + 8);
    assert_eq!(l.xenstore_pfn(), kpfn + 9);
    assert_eq!(l.console_pfn(), kpfn + 10);
    // 20 MiB mapped (16 MiB + kernel + 512 KiB slack, rounded to 4 MiB): L4, L3, L2, 10 L1s.
    assert_eq!(l.mapping_end(), VIRT_BASE + 20 * MIB);
    assert_eq!(l.page_tables().pfn, kpfn + 11);
    assert_eq!(l.page_tables().pages, 13);
    assert_eq!(l.boot_stack_pfn(), kpfn + 24);
    // MOD_START_PFN: the initrd after the mapping, unmapped.
    let initrd = l.initrd().unwrap();
    assert!(initrd.unmapped);
    assert_eq!(initrd.segment.pfn, 20 * MIB / PAGE_SIZE);
    assert_eq!(initrd.segment.pages, 2);
    // INIT_P2M: 32768 entries in 64 frames, then its L3, L2 and L1.
    assert!(l.p2m_at_init_p2m());
    assert_eq!(l.p2m().pfn, initrd.segment.pfn + 2);
    assert_eq!(l.p2m().pages, 64 + 3);
    assert_eq!(l.p2m().va, INIT_P2M);
    assert_eq!(l.used_pages(), l.p2m().pfn + 67);
    let order: Vec<_> = l.segments().into_iter().map(|(r, _)| r).collect();
    assert_eq!(
        order,
        vec![
            Region::Kernel,
            Region::StartInfo,
            Region::Xenstore,
            Region::Console,
            Region::PageTables,
            Region::BootStack,
            Region::Initrd,
            Region::P2m
        ]
    );
    assert_eq!(l.hypercall_page(), None, "no HYPERCALL_PAGE note");
}

#[test]
fn registers_point_at_entry_stack_start_info_and_the_l4() {
    let c = build(ElfBuilder::debian_like().bytes(), PAGES_128M, None, "");
    let v = c.image.vcpu;
    let l = &c.layout;
    assert_eq!(v.rip, ENTRY);
    assert_eq!(v.rsp, VIRT_BASE + (l.boot_stack_pfn() + 1) * PAGE_SIZE);
    assert_eq!(v.rsi, VIRT_BASE + l.start_info_pfn() * PAGE_SIZE);
    assert_eq!(v.rflags, 0x200);
    assert_eq!((v.cs, v.ss, v.ds), (FLAT_KERNEL_CS, FLAT_KERNEL_SS, 0));
    assert_eq!((v.cs, v.ss), (0xe033, 0xe02b));
    assert_eq!((v.kernel_ss, v.kernel_sp), (0xe02b, v.rsp));
    assert_eq!(v.flags, 0x24);
    let l4_mfn = c.p2m[l.page_tables().pfn as usize];
    assert_eq!(c.image.pin_l4_mfn, l4_mfn);
    assert_eq!(v.cr3, l4_mfn << 12);
    assert_eq!(c.image.upcall_mask_vcpus, 32);
}

#[test]
fn entry_resolves_to_the_kernels_bytes() {
    let c = build(ElfBuilder::debian_like().bytes(), PAGES_128M, Some(100), "");
    let t = walk(&c.machine, c.image.pin_l4_mfn, c.image.vcpu.rip).unwrap();
    let expected_pfn = (ENTRY - VIRT_BASE) / PAGE_SIZE;
    assert_eq!(t.frame, c.p2m[expected_pfn as usize]);
    assert_eq!(t.offset, ENTRY % PAGE_SIZE);
    // The entry is in the fourth segment, 0x1c0 into its file bytes.
    let seg = c
        .kernel
        .segments()
        .iter()
        .find(|s| s.paddr() == PSTART + 0x5000)
        .unwrap();
    let file = &c.elf[seg.offset() as usize..][..seg.filesz() as usize];
    assert_eq!(c.machine.read(t.frame, 0, 4096), file[..4096]);
    // And every loaded kernel byte is where its virtual address says.
    for s in c.kernel.segments() {
        let va = VIRT_BASE + s.paddr();
        let bytes = &c.elf[s.offset() as usize..][..s.filesz() as usize];
        for (i, chunk) in bytes.chunks(4096).enumerate() {
            let t = walk(&c.machine, c.image.pin_l4_mfn, va + i as u64 * 4096).unwrap();
            assert_eq!(c.machine.read(t.frame, t.offset, chunk.len()), chunk);
            assert!(t.flags.contains(PteFlags::RW), "kernel pages are writable");
        }
    }
}

#[test]
fn start_info_is_where_rsi_points_and_says_what_the_plan_did() {
    let c = build(
        ElfBuilder::debian_like().bytes(),
        PAGES_128M,
        Some(5000),
        "console=hvc0 root=/dev/xvda",
    );
    let l = &c.layout;
    let si = start_info(&c);
    assert_eq!(&si.magic[..15], b"xen-3.0-x86_64\0");
    assert_eq!(si.nr_pages, PAGES_128M);
    assert_eq!(si.shared_info, 0xabcde << 12);
    assert_eq!(
        si.flags, SIF_MOD_START_PFN,
        "libxl's flags: no SIF_VIRT_P2M_4TOOLS"
    );
    assert_eq!(si.store_mfn, c.p2m[l.xenstore_pfn() as usize]);
    assert_eq!(si.store_mfn, c.image.store_mfn);
    assert_eq!(si.store_evtchn, 3);
    assert_eq!(si.console_mfn, c.p2m[l.console_pfn() as usize]);
    assert_eq!(si.console_mfn, c.image.console_mfn);
    assert_eq!(si.console_evtchn, 4);
    assert_eq!(si.pt_base, VIRT_BASE + l.page_tables().pfn * PAGE_SIZE);
    assert_eq!(si.nr_pt_frames, 13);
    assert_eq!(si.mfn_list, INIT_P2M);
    let initrd = l.initrd().unwrap();
    assert_eq!(
        si.mod_start, initrd.segment.pfn,
        "a pfn, with SIF_MOD_START_PFN"
    );
    assert_eq!(
        si.mod_len,
        2 * PAGE_SIZE,
        "whole pages, as libxenguest says"
    );
    assert_eq!(si.first_p2m_pfn, l.p2m().pfn);
    assert_eq!(si.nr_p2m_frames, 67);
    let cmd = b"console=hvc0 root=/dev/xvda\0";
    assert_eq!(&si.cmd_line[..cmd.len()], cmd);
    // The initrd's bytes are at its frames.
    let mfn = c.p2m[initrd.segment.pfn as usize];
    assert_eq!(
        c.machine.read(mfn, 0, 4096),
        c.initrd.as_ref().unwrap().as_bytes()[..4096]
    );
}

#[test]
fn the_p2m_is_mapped_at_init_p2m_and_holds_the_p2m() {
    let c = build(ElfBuilder::debian_like().bytes(), PAGES_128M, None, "");
    let list_pages = PAGES_128M * 8 / PAGE_SIZE;
    for i in 0..list_pages {
        let t = walk(&c.machine, c.image.pin_l4_mfn, INIT_P2M + i * PAGE_SIZE).unwrap();
        assert_eq!(t.frame, c.p2m[(c.layout.p2m().pfn + i) as usize]);
        assert!(t.flags.contains(PteFlags::RW));
    }
    assert!(walk(
        &c.machine,
        c.image.pin_l4_mfn,
        INIT_P2M + list_pages * PAGE_SIZE
    )
    .is_err());
    // Its contents: entry pfn holds p2m[pfn].
    let t = walk(&c.machine, c.image.pin_l4_mfn, INIT_P2M + 8 * 1000).unwrap();
    let b = c.machine.read(t.frame, t.offset, 8);
    assert_eq!(u64::from_le_bytes(b.try_into().unwrap()), c.p2m[1000]);
}

#[test]
fn page_tables_are_read_only_and_map_only_the_guests_frames() {
    let c = build(
        ElfBuilder::debian_like().bytes(),
        PAGES_128M,
        Some(5000),
        "",
    );
    let mappings = Mapping::enumerate(&c.machine, c.image.pin_l4_mfn, 1 << 20).unwrap();
    let owned: BTreeSet<u64> = c.p2m.iter().copied().collect();
    let table_mfns: BTreeSet<u64> = c
        .layout
        .page_table_pfns()
        .iter()
        .flat_map(|r| r.start..r.end())
        .map(|pfn| c.p2m[pfn as usize])
        .collect();
    assert_eq!(table_mfns.len(), 13 + 3);
    let mut ro_tables = 0;
    for m in &mappings {
        assert!(
            owned.contains(&m.frame),
            "{m:?} maps a frame the guest does not own"
        );
        if table_mfns.contains(&m.frame) {
            assert!(
                !m.flags.contains(PteFlags::RW),
                "{m:?}: a page table mapped writable"
            );
            ro_tables += 1;
        } else {
            assert!(m.flags.contains(PteFlags::RW), "{m:?}");
        }
    }
    assert_eq!(
        ro_tables, 13,
        "the bootstrap tables are inside the bootstrap mapping"
    );
    // The bootstrap mapping maps pfn i at VIRT_BASE + i pages, all of it; the p2m the rest.
    let boot_pages = (c.layout.mapping_end() - VIRT_BASE) / PAGE_SIZE;
    assert_eq!(
        mappings.len() as u64,
        boot_pages + PAGES_128M * 8 / PAGE_SIZE
    );
    for (i, m) in mappings.iter().filter(|m| m.va >= VIRT_BASE).enumerate() {
        assert_eq!(m.va, VIRT_BASE + i as u64 * PAGE_SIZE);
        assert_eq!(m.frame, c.p2m[i]);
    }
    // Every table entry points at a frame the guest owns, too.
    for pfn in c
        .layout
        .page_table_pfns()
        .iter()
        .flat_map(|r| r.start..r.end())
    {
        let mfn = c.p2m[pfn as usize];
        for i in 0..512 {
            let e = c.machine.entry(mfn, i).unwrap();
            if e & 1 != 0 {
                assert!(owned.contains(&((e & 0x000f_ffff_ffff_f000) >> 12)));
            }
        }
    }
}

#[test]
fn without_init_p2m_and_mod_start_pfn_everything_is_in_the_bootstrap_area() {
    let elf = ElfBuilder::debian_like()
        .with_notes(notes_without(&[15, 16], &[]))
        .bytes();
    let c = build(elf, PAGES_128M, Some(3 * 4096 + 1), "x");
    let l = &c.layout;
    let kpfn = PSTART / PAGE_SIZE;
    let initrd = l.initrd().unwrap();
    assert!(!initrd.unmapped);
    assert_eq!(
        initrd.segment.pfn,
        kpfn + 8,
        "the initrd right after the kernel"
    );
    assert_eq!(initrd.segment.pages, 4);
    assert!(!l.p2m_at_init_p2m());
    assert_eq!(l.p2m().pfn, kpfn + 12, "then the p2m");
    assert_eq!(l.p2m().pages, 64);
    assert_eq!(l.start_info_pfn(), kpfn + 76);
    let si = start_info(&c);
    assert_eq!(si.flags, 0);
    assert_eq!(si.mod_start, VIRT_BASE + initrd.segment.pfn * PAGE_SIZE);
    assert_eq!(si.mod_len, 3 * 4096 + 1);
    assert_eq!(si.mfn_list, VIRT_BASE + l.p2m().pfn * PAGE_SIZE);
    assert_eq!((si.first_p2m_pfn, si.nr_p2m_frames), (0, 0));
    // The initrd and the p2m are reachable through the bootstrap mapping.
    let t = walk(&c.machine, c.image.pin_l4_mfn, si.mod_start).unwrap();
    assert_eq!(
        c.machine.read(t.frame, 0, 64),
        c.initrd.as_ref().unwrap().as_bytes()[..64]
    );
    let t = walk(&c.machine, c.image.pin_l4_mfn, si.mfn_list + 8 * 7).unwrap();
    let b = c.machine.read(t.frame, t.offset, 8);
    assert_eq!(u64::from_le_bytes(b.try_into().unwrap()), c.p2m[7]);
    let mappings = Mapping::enumerate(&c.machine, c.image.pin_l4_mfn, 1 << 20).unwrap();
    assert!(mappings.iter().all(|m| m.va >= VIRT_BASE));
}

#[test]
fn a_4_gib_guest_maps_its_8_mib_p2m_at_init_p2m() {
    let pages = 4096 * MIB / PAGE_SIZE;
    let c = build(ElfBuilder::debian_like().bytes(), pages, None, "");
    let l = &c.layout;
    // 8 MiB of p2m: 2048 frames, 4 L1s, 1 L2, 1 L3.
    assert_eq!(l.p2m().pages, 2048 + 6);
    let last = INIT_P2M + 2047 * PAGE_SIZE;
    let t = walk(&c.machine, c.image.pin_l4_mfn, last).unwrap();
    assert_eq!(t.frame, c.p2m[(l.p2m().pfn + 2047) as usize]);
    assert_eq!(start_info(&c).nr_p2m_frames, 2054);
}

#[test]
fn a_hypercall_page_note_is_reported_with_its_frame() {
    let hp = VIRT_BASE + PSTART + 0x1000;
    let elf = ElfBuilder::debian_like()
        .with_notes(notes_without(&[], &[xen(2, &hp.to_le_bytes())]))
        .bytes();
    let c = build(elf, PAGES_128M, None, "");
    let h = c.layout.hypercall_page().unwrap();
    assert_eq!((h.va, h.pfn), (hp, PSTART / PAGE_SIZE + 1));

    let elf = ElfBuilder::debian_like()
        .with_notes(notes_without(&[], &[xen(2, &(hp + 8).to_le_bytes())]))
        .bytes();
    let kernel = ElfKernel::parse(&elf, &ImageLimits::default()).unwrap();
    let err = PvLayout::new(&kernel, PAGES_128M, 1, None, &CommandLine::default()).unwrap_err();
    assert!(
        matches!(err, PlanError::HypercallPageOutsideKernel { va, .. } if va == hp + 8),
        "{err}"
    );
}

// -- errors -----------------------------------------------------------------------------------

fn debian_kernel() -> ElfKernel {
    ElfKernel::parse(&ElfBuilder::debian_like().bytes(), &ImageLimits::default()).unwrap()
}

fn layout_err(kernel: &ElfKernel, pages: u64, vcpus: u32, initrd: Option<&Initrd>) -> PlanError {
    PvLayout::new(kernel, pages, vcpus, initrd, &CommandLine::default()).unwrap_err()
}

#[test]
fn a_kernel_that_does_not_fit_is_refused_with_the_numbers() {
    // The kernel's frames end at 16 MiB + 32 KiB: 8 MiB of memory cannot hold them.
    let err = layout_err(&debian_kernel(), 8 * MIB / PAGE_SIZE, 1, None);
    match err {
        PlanError::NoRoom {
            region, total, at, ..
        } => {
            assert_eq!(total, 2048);
            assert!(
                region == Region::Padding || region == Region::Kernel,
                "{region:?}"
            );
            assert!(at <= 4096);
        }
        e => panic!("{e}"),
    }
    // 16 MiB + 8 pages holds the kernel but not the bootstrap mapping.
    let err = layout_err(&debian_kernel(), 4096 + 8, 1, None);
    assert!(
        matches!(
            err,
            PlanError::NoRoom {
                region: Region::StartInfo,
                total: 4104,
                ..
            }
        ),
        "{err}"
    );
    let err = layout_err(&debian_kernel(), 4096 + 200, 1, None);
    assert!(
        matches!(err, PlanError::MappingPastMemory { total: 4296, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("4296 pages"), "{err}");
}

#[test]
fn an_initrd_too_large_is_refused_with_the_numbers() {
    let limits = ImageLimits::default();
    let initrd = Initrd::from_bytes(vec![7; (10 * MIB) as usize], &limits).unwrap();
    let pages = 24 * MIB / PAGE_SIZE;
    let err = layout_err(&debian_kernel(), pages, 1, Some(&initrd));
    match err {
        PlanError::NoRoom {
            region: Region::Initrd,
            need,
            at,
            free,
            total,
        } => {
            assert_eq!(need, 2560);
            assert_eq!(at, 20 * MIB / PAGE_SIZE);
            assert_eq!(free, 1024);
            assert_eq!(total, pages);
        }
        e => panic!("{e}"),
    }
}

#[test]
fn vcpu_and_memory_bounds_are_errors() {
    let k = debian_kernel();
    assert!(matches!(
        layout_err(&k, PAGES_128M, 0, None),
        PlanError::NoVcpus
    ));
    assert!(matches!(
        layout_err(&k, PAGES_128M, 8193, None),
        PlanError::TooManyVcpus {
            vcpus: 8193,
            max: 8192
        }
    ));
    assert!(matches!(
        layout_err(&k, u64::MAX, 1, None),
        PlanError::MemoryTooLarge {
            pages: u64::MAX,
            ..
        }
    ));
    assert!(matches!(
        layout_err(&k, 0, 1, None),
        PlanError::NoRoom { total: 0, .. }
    ));
}

#[test]
fn a_kernel_below_virt_base_is_refused() {
    // PADDR_OFFSET above the kernel's first physical address puts the kernel below VIRT_BASE.
    let paddr_offset = PSTART + 0x1000;
    let entry = VIRT_BASE + 0x4000;
    let elf = ElfBuilder::debian_like()
        .with_notes(notes_without(
            &[1, 4],
            &[
                xen(4, &paddr_offset.to_le_bytes()),
                xen(1, &entry.to_le_bytes()),
            ],
        ))
        .bytes();
    let kernel = ElfKernel::parse(&elf, &ImageLimits::default()).unwrap();
    let err = layout_err(&kernel, PAGES_128M, 1, None);
    let msg = err.to_string();
    assert!(matches!(err, PlanError::Kernel(_)), "{err}");
    assert!(msg.contains(&format!("{VIRT_BASE:#x}")), "{msg}");
    assert!(msg.contains(&format!("{:#x}", VIRT_BASE - 0x1000)), "{msg}");
}

#[test]
fn an_unaligned_kernel_start_is_refused() {
    let mut b = ElfBuilder::debian_like();
    for s in &mut b.segments {
        s.paddr += 0x10;
        s.vaddr += 0x10;
    }
    let kernel = ElfKernel::parse(&b.bytes(), &ImageLimits::default()).unwrap();
    let err = layout_err(&kernel, PAGES_128M, 1, None);
    assert!(
        matches!(err, PlanError::KernelNotPageAligned { kstart } if kstart == VIRT_BASE + PSTART + 0x10),
        "{err}"
    );
}

#[test]
fn overlapping_segments_never_reach_a_plan() {
    let mut b = ElfBuilder::debian_like();
    b.segments[1].paddr = PSTART + 0x2000; // inside segment 0
    let elf = b.bytes();
    // The parser refuses it; a plan from any kernel that parsed is disjoint.
    assert!(ElfKernel::parse(&elf, &ImageLimits::default()).is_err());
}

#[test]
fn render_checks_its_inputs() {
    let k = debian_kernel();
    let l = PvLayout::new(&k, PAGES_128M, 1, None, &CommandLine::default()).unwrap();
    let short = vec![1u64; 10];
    let boot = |p2m| PvBoot {
        p2m,
        shared_info_mfn: 1,
        store_evtchn: 1,
        console_evtchn: 2,
    };
    assert!(matches!(
        l.render(&boot(&short)),
        Err(PlanError::P2mLength {
            got: 10,
            expected: PAGES_128M
        })
    ));
    let mut wide = fake_p2m(PAGES_128M);
    wide[l.page_tables().pfn as usize] = 1 << 45;
    assert!(matches!(
        l.render(&boot(&wide)),
        Err(PlanError::MfnTooLarge { mfn, .. }) if mfn == 1 << 45
    ));
    let ok = fake_p2m(PAGES_128M);
    let mut b = boot(&ok);
    b.shared_info_mfn = u64::MAX;
    assert!(matches!(
        l.render(&b),
        Err(PlanError::SharedInfoMfnTooLarge { .. })
    ));
}

#[test]
fn a_mapping_reaching_the_top_of_the_address_space_is_an_error() {
    // VIRT_BASE in the last 4 MiB, the kernel at it (PADDR_OFFSET = its physical start): the
    // bootstrap mapping would end at 2^64.
    let top = 0xffff_ffff_ffc0_0000u64;
    let elf = ElfBuilder::debian_like()
        .with_notes(notes_without(
            &[1, 3, 4],
            &[
                xen(3, &top.to_le_bytes()),
                xen(4, &PSTART.to_le_bytes()),
                xen(1, &(top + 0x51c0).to_le_bytes()),
            ],
        ))
        .bytes();
    let kernel = ElfKernel::parse(&elf, &ImageLimits::default()).unwrap();
    let err = layout_err(&kernel, PAGES_128M, 1, None);
    assert!(
        matches!(err, PlanError::AddressOverflow { what } if what.contains("mapping")),
        "{err}"
    );
}

/// A kernel whose VIRT_BASE is `virt_base`, loaded right at it (PADDR_OFFSET = its physical
/// start).
fn kernel_at(virt_base: u64) -> Vec<u8> {
    ElfBuilder::debian_like()
        .with_notes(notes_without(
            &[1, 3, 4],
            &[
                xen(3, &virt_base.to_le_bytes()),
                xen(4, &PSTART.to_le_bytes()),
                xen(1, &(virt_base + 0x51c0).to_le_bytes()),
            ],
        ))
        .bytes()
}

#[test]
fn mappings_across_1_gib_and_512_gib_boundaries_get_a_table_each_side() {
    // 256 KiB below a 1 GiB boundary: two L2s, one L3. 256 KiB below a 512 GiB boundary: two L3s
    // too (the L4 has two entries).
    for (virt_base, l3s, l2s) in [
        (0xffff_ffff_bffc_0000u64, 1u64, 2u64),
        (0xffff_ff7f_fffc_0000, 2, 2),
    ] {
        let c = build(kernel_at(virt_base), PAGES_128M, Some(5000), "");
        let l = &c.layout;
        let span = l.mapping_end() - virt_base;
        // L1s: every 2 MiB slot the span touches.
        let first = virt_base & !((2 << 20) - 1);
        let l1s = (l.mapping_end() - 1 - first) / (2 << 20) + 1;
        assert_eq!(
            l.page_tables().pages,
            1 + l3s + l2s + l1s,
            "{virt_base:#x}: {span:#x} mapped"
        );
        // Every page of the bootstrap area walks to its frame; the tables are read-only.
        let tables: BTreeSet<u64> =
            (l.page_tables().pfn..l.page_tables().pfn + l.page_tables().pages).collect();
        for pfn in 0..span / PAGE_SIZE {
            let t = walk(&c.machine, c.image.pin_l4_mfn, virt_base + pfn * PAGE_SIZE).unwrap();
            assert_eq!(t.frame, c.p2m[pfn as usize], "{virt_base:#x} + page {pfn}");
            assert_eq!(t.flags.contains(PteFlags::RW), !tables.contains(&pfn));
        }
        let t = walk(&c.machine, c.image.pin_l4_mfn, c.image.vcpu.rip).unwrap();
        assert_eq!(t.frame, c.p2m[5], "ENTRY is 0x51c0 into the kernel");
    }
}
