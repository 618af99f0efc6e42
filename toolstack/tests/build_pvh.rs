//! The PVH build plan on synthetic kernels: the plan is applied to a model of guest-physical
//! memory, then read back the way the guest would: hvm_start_info from `rbx`, its command line,
//! modules and memory map, and the ACPI tables from the RSDP down.

// Test sizes are small: they fit every integer type.
#![allow(clippy::cast_possible_truncation)]

mod kernel_fixture;

use std::collections::HashMap;

use kernel_fixture::*;
use toolstack::build::acpi::{self, FADT_HW_REDUCED_ACPI, RSDP_LOW_ADDRESS};
use toolstack::build::kernel::{CommandLine, ElfKernel, ImageLimits, Initrd};
use toolstack::build::plan::{PfnRange, PlanError, Region, PAGE_SIZE};
use toolstack::build::pvh::{
    params, E820Type, PvhImage, PvhLayout, CONSOLE_PFN, HIGH_MEM_START, MMIO_HOLE_START,
    XENSTORE_PFN,
};
use xenctrl::abi::{HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo};
use zerocopy::FromBytes;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Guest-physical memory: only populated frames exist.
struct Guest {
    pages: HashMap<u64, Vec<u8>>,
}

impl Guest {
    /// Sparse: frames appear when written, and writes are checked against the populated
    /// ranges.
    fn new() -> Guest {
        Guest {
            pages: HashMap::new(),
        }
    }
    fn write(&mut self, populated: &[PfnRange], addr: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            let a = addr + i as u64;
            let pfn = a / PAGE_SIZE;
            assert!(
                populated.iter().any(|r| r.contains(pfn)),
                "write to {a:#x}, outside populated memory"
            );
            self.pages
                .entry(pfn)
                .or_insert_with(|| vec![0; PAGE_SIZE as usize])[(a % PAGE_SIZE) as usize] = *b;
        }
    }
    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| {
                let a = addr + i;
                self.pages
                    .get(&(a / PAGE_SIZE))
                    .map_or(0, |p| p[(a % PAGE_SIZE) as usize])
            })
            .collect()
    }
    fn u32(&self, addr: u64) -> u32 {
        u32::from_le_bytes(self.read(addr, 4).try_into().unwrap())
    }
}

struct Case {
    layout: PvhLayout,
    image: PvhImage,
    guest: Guest,
    initrd: Option<Initrd>,
}

fn kernel_with(notes: Option<Vec<u8>>) -> ElfKernel {
    let mut b = ElfBuilder::debian_like();
    if let Some(n) = notes {
        b = b.with_notes(n);
    }
    ElfKernel::parse(&b.bytes(), &ImageLimits::default()).unwrap()
}

fn build_with(kernel: &ElfKernel, mem: u64, vcpus: u32, initrd_len: Option<usize>) -> Case {
    let elf = ElfBuilder::debian_like().bytes();
    let initrd =
        initrd_len.map(|n| Initrd::from_bytes(pattern(n, 5), &ImageLimits::default()).unwrap());
    let cmd = CommandLine::new("console=hvc0 earlyprintk=xen").unwrap();
    let layout = PvhLayout::new(kernel, mem / PAGE_SIZE, vcpus, initrd.as_ref(), &cmd).unwrap();
    let image = layout.render(7, 8);
    let populate = layout.populate();
    let mut guest = Guest::new();
    for l in layout.loads() {
        guest.write(&populate, l.dest, l.bytes(&elf, initrd.as_ref()).unwrap());
    }
    for (addr, bytes) in &image.writes {
        guest.write(&populate, *addr, bytes);
    }
    Case {
        layout,
        image,
        guest,
        initrd,
    }
}

fn build(mem: u64, vcpus: u32, initrd_len: Option<usize>) -> Case {
    build_with(&kernel_with(None), mem, vcpus, initrd_len)
}

fn start_info(c: &Case) -> HvmStartInfo {
    let b = c.guest.read(c.image.vcpu.rbx, size_of::<HvmStartInfo>());
    HvmStartInfo::read_from_bytes(&b).unwrap()
}

fn sums_to_zero(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x)) == 0
}

/// A table at `addr`: its signature and bytes, its checksum checked.
fn table(g: &Guest, addr: u64) -> ([u8; 4], Vec<u8>) {
    let len = g.u32(addr + 4) as usize;
    assert!(
        (36..65536).contains(&len),
        "table at {addr:#x}: length {len}"
    );
    let bytes = g.read(addr, len);
    assert!(
        sums_to_zero(&bytes),
        "table at {addr:#x} has a bad checksum"
    );
    (bytes[..4].try_into().unwrap(), bytes)
}

/// The tables the XSDT lists, by signature, after checking the RSDP and the RSDT agree.
fn acpi_tables(g: &Guest, rsdp: u64) -> HashMap<[u8; 4], (u64, Vec<u8>)> {
    let r = g.read(rsdp, 36);
    assert_eq!(&r[..8], b"RSD PTR ");
    assert!(sums_to_zero(&r[..20]), "RSDP checksum");
    assert!(sums_to_zero(&r), "RSDP extended checksum");
    assert_eq!(r[15], 2, "ACPI 2.0 RSDP");
    let xsdt = u64::from_le_bytes(r[24..32].try_into().unwrap());
    let rsdt = u64::from(u32::from_le_bytes(r[16..20].try_into().unwrap()));
    let (sig, x) = table(g, xsdt);
    assert_eq!(&sig, b"XSDT");
    let (sig, rs) = table(g, rsdt);
    assert_eq!(&sig, b"RSDT");
    let mut out = HashMap::new();
    let entries: Vec<u64> = x[36..]
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let rentries: Vec<u64> = rs[36..]
        .chunks(4)
        .map(|c| u64::from(u32::from_le_bytes(c.try_into().unwrap())))
        .collect();
    assert_eq!(entries, rentries, "the RSDT and XSDT list the same tables");
    for e in entries {
        let (sig, t) = table(g, e);
        out.insert(sig, (e, t));
    }
    out
}

#[test]
fn start_info_is_at_rbx_and_points_at_command_line_modules_and_memmap() {
    let c = build(128 * MIB, 2, Some(6000));
    let l = &c.layout;
    let si = start_info(&c);
    assert_eq!(si.magic, 0x336e_c578);
    assert_eq!(si.version, 1);
    assert_eq!(si.flags, 0);
    assert_eq!(c.image.vcpu.rbx, l.start_info_address());
    // The command line, NUL-terminated, right after the struct.
    assert_eq!(si.cmdline_paddr, l.start_info_address() + 56);
    let cmd = b"console=hvc0 earlyprintk=xen\0";
    assert_eq!(c.guest.read(si.cmdline_paddr, cmd.len()), cmd);
    // One module: the initrd, whose bytes are where it says.
    assert_eq!(si.nr_modules, 1);
    let m = HvmModlistEntry::read_from_bytes(&c.guest.read(si.modlist_paddr, 32)).unwrap();
    let (initrd_pfns, len) = l.initrd().unwrap();
    assert_eq!((m.paddr, m.size), (initrd_pfns.start * PAGE_SIZE, 6000));
    assert_eq!(len, 6000);
    assert_eq!(m.cmdline_paddr, 0);
    assert_eq!(
        c.guest.read(m.paddr, 6000),
        c.initrd.as_ref().unwrap().as_bytes()
    );
    // The memory map, as the layout says.
    assert_eq!(si.memmap_entries as usize, l.e820().len());
    for (i, e) in l.e820().iter().enumerate() {
        let raw = c.guest.read(si.memmap_paddr + 24 * i as u64, 24);
        let m = HvmMemmapTableEntry::read_from_bytes(&raw).unwrap();
        assert_eq!((m.addr, m.size, m.kind), (e.addr, e.size, e.kind.code()));
    }
    // The fixture's SUPPORTED_FEATURES (Debian's 0x8801) include linux_rsdp_unrestricted, so
    // libxl puts the RSDP after the tables, not below 1 MiB.
    assert_eq!(
        si.rsdp_paddr,
        acpi::TABLES_ADDRESS + l.acpi().table_pages() * PAGE_SIZE
    );
    // The structures all lie in the start-info frames.
    let end = si.memmap_paddr + 24 * u64::from(si.memmap_entries);
    assert!(end <= l.start_info().end() * PAGE_SIZE);
}

#[test]
fn regions_follow_libxenguests_order() {
    // MOD_START_PFN: kernel, start info, then the initrd.
    let c = build(128 * MIB, 1, Some(10_000));
    let l = &c.layout;
    assert_eq!(l.kernel().start, PSTART / PAGE_SIZE);
    assert_eq!(l.kernel().count, 8);
    assert_eq!(l.start_info().start, l.kernel().end());
    let (initrd, _) = l.initrd().unwrap();
    assert_eq!(initrd.start, l.start_info().end());
    assert_eq!(initrd.count, 3);
    let order: Vec<_> = l.segments().iter().map(|s| s.region).collect();
    assert_eq!(
        order,
        vec![Region::Kernel, Region::StartInfo, Region::Initrd]
    );

    // Without it: the initrd comes before the start info.
    let k = kernel_with(Some(debian_notes_without_mod_start_pfn()));
    let c = build_with(&k, 128 * MIB, 1, Some(10_000));
    let l = &c.layout;
    let (initrd, _) = l.initrd().unwrap();
    assert_eq!(initrd.start, l.kernel().end());
    assert_eq!(l.start_info().start, initrd.end());
}

fn debian_notes_without_mod_start_pfn() -> Vec<u8> {
    notes_without(&[16])
}

/// Debian's notes without the Xen notes of the given types.
fn notes_without(kinds: &[u32]) -> Vec<u8> {
    let all = debian_notes();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 12 <= all.len() {
        let word = |o: usize| u32::from_le_bytes(all[at + o..at + o + 4].try_into().unwrap());
        let namesz = word(0) as usize;
        let len = 12 + namesz.next_multiple_of(4) + (word(4) as usize).next_multiple_of(4);
        let xen = &all[at + 12..at + 12 + namesz] == b"Xen\0";
        if !(xen && kinds.contains(&word(8))) {
            out.extend_from_slice(&all[at..at + len]);
        }
        at += len;
    }
    out
}

#[test]
fn kernel_segments_are_at_their_physical_addresses() {
    let elf = ElfBuilder::debian_like().bytes();
    let k = kernel_with(None);
    let c = build(128 * MIB, 1, None);
    for s in k.segments() {
        let file = &elf[s.offset() as usize..][..s.filesz() as usize];
        assert_eq!(c.guest.read(s.paddr(), file.len()), file);
    }
    assert_eq!(c.image.vcpu.rip, PHYS32_ENTRY);
}

#[test]
fn boot_vcpu_is_flat_32_bit_protected_mode() {
    let c = build(128 * MIB, 4, None);
    let v = c.image.vcpu;
    assert_eq!(v.cr0, 0x11, "PE | ET");
    assert_eq!((v.cs.base, v.cs.limit, v.cs.arbytes), (0, u32::MAX, 0xc9b));
    assert_eq!(
        (v.data.base, v.data.limit, v.data.arbytes),
        (0, u32::MAX, 0xc93)
    );
    assert_eq!((v.tr.base, v.tr.limit, v.tr.arbytes), (0, 0x67, 0x8b));
    assert_eq!((v.dr6, v.dr7), (0xffff_0ff0, 0x400));
    assert_eq!(c.image.mtrr_def_type, 0x806, "write-back, enabled");
}

#[test]
fn special_pages_and_hvm_params() {
    let c = build(128 * MIB, 1, None);
    let p: HashMap<u32, u64> = c.image.hvm_params.iter().copied().collect();
    assert_eq!(p[&params::STORE_PFN], 0xfeffc);
    assert_eq!(p[&params::CONSOLE_PFN], 0xfefff);
    assert_eq!((XENSTORE_PFN, CONSOLE_PFN), (0xfeffc, 0xfefff));
    assert_eq!(p[&params::BUFIOREQ_PFN], 0xfeffb);
    assert_eq!(p[&params::IOREQ_PFN], 0xfeffd);
    assert_eq!(p[&params::PAGING_RING_PFN], 0xfeff8);
    assert_eq!(p[&params::MONITOR_RING_PFN], 0xfeff9);
    assert_eq!(p[&params::SHARING_RING_PFN], 0xfeffa);
    assert_eq!(p[&params::IDENT_PT], 0xfeffe000);
    assert_eq!(p[&params::STORE_EVTCHN], 7);
    assert_eq!(p[&params::CONSOLE_EVTCHN], 8);
    // The identity map: 4 MiB pages, entry i maps i << 22.
    assert_eq!(c.guest.u32(0xfeffe000 + 4 * 3), (3 << 22) | 0xe7);
    let pop = c.layout.populate();
    assert!(pop.contains(&PfnRange {
        start: 0xfeff8,
        count: 8
    }));
}

#[test]
fn acpi_tables_parse_back_with_one_lapic_per_vcpu() {
    for vcpus in [1u32, 3, 64, 128] {
        let c = build(256 * MIB, vcpus, None);
        let si = start_info(&c);
        let t = acpi_tables(&c.guest, si.rsdp_paddr);
        let (_, madt) = &t[b"APIC"];
        assert_eq!(
            u32::from_le_bytes(madt[36..40].try_into().unwrap()),
            0xfee0_0000
        );
        let mut lapics = Vec::new();
        let mut at = 44;
        while at < madt.len() {
            let (kind, len) = (madt[at], madt[at + 1] as usize);
            assert!(len >= 2 && at + len <= madt.len());
            if kind == 0 {
                let flags = u32::from_le_bytes(madt[at + 4..at + 8].try_into().unwrap());
                lapics.push((madt[at + 2], madt[at + 3], flags));
            }
            at += len;
        }
        let want: Vec<_> = (0..vcpus).map(|i| (i as u8, (2 * i) as u8, 1)).collect();
        assert_eq!(lapics, want, "{vcpus} vCPUs");

        let (_, fadt) = &t[b"FACP"];
        assert_eq!(fadt.len(), 268);
        assert_eq!(fadt[8], 5, "revision 5");
        let flags = u32::from_le_bytes(fadt[112..116].try_into().unwrap());
        assert_ne!(flags & FADT_HW_REDUCED_ACPI, 0);
        let x_dsdt = u64::from_le_bytes(fadt[140..148].try_into().unwrap());
        let dsdt32 = u64::from(u32::from_le_bytes(fadt[40..44].try_into().unwrap()));
        assert_eq!(x_dsdt, dsdt32);
        let (sig, dsdt) = table(&c.guest, x_dsdt);
        assert_eq!(&sig, b"DSDT");
        let hids = dsdt.windows(8).filter(|w| w == b"ACPI0007").count();
        assert_eq!(hids, vcpus as usize);
        let last = acpi::processor_name(vcpus - 1);
        assert!(dsdt.windows(4).any(|w| w == last));
        // Every table is inside the ACPI area the e820 reserves.
        for (addr, bytes) in t.values() {
            let end = addr + bytes.len() as u64;
            assert!(c
                .layout
                .e820()
                .iter()
                .any(|e| e.kind == E820Type::Acpi && e.addr <= *addr && end <= e.end()));
        }
    }
}

#[test]
fn e820_is_sorted_disjoint_and_covers_the_memory() {
    for mem in [128 * MIB, 4 * GIB, 5 * GIB] {
        let c = build(mem, 2, None);
        let e = c.layout.e820();
        for w in e.windows(2) {
            assert!(w[0].end() <= w[1].addr, "{w:?}");
        }
        let ram: u64 = e
            .iter()
            .filter(|x| x.kind == E820Type::Ram)
            .map(|x| x.size)
            .sum();
        // All memory is RAM (the RSDP is in the hole for this kernel).
        assert_eq!(ram, mem, "{mem:#x}");
        let special = e.iter().find(|x| x.kind == E820Type::Reserved).unwrap();
        assert_eq!((special.addr, special.size), (0xfeff8000, 0x8000));
        // Everything the plan puts in RAM is inside a RAM entry.
        let l = &c.layout;
        for r in [l.kernel(), l.start_info()] {
            let (s, end) = (r.start * PAGE_SIZE, r.end() * PAGE_SIZE);
            assert!(e
                .iter()
                .any(|x| x.kind == E820Type::Ram && x.addr <= s && end <= x.end()));
        }
        // Populated frames are exactly RAM, ACPI and the special pages.
        let pop: u64 = l.populate().iter().map(|r| r.count).sum();
        assert_eq!(pop, mem / PAGE_SIZE + 1 + l.acpi().table_pages() + 1 + 8);
    }
}

#[test]
fn a_big_guest_has_ram_above_4_gib() {
    let c = build(6 * GIB, 1, None);
    let l = &c.layout;
    assert_eq!(l.lowmem_end(), MMIO_HOLE_START);
    assert_eq!(l.highmem_end(), HIGH_MEM_START + 6 * GIB - MMIO_HOLE_START);
    let last = l.e820().last().unwrap();
    assert_eq!(
        (last.addr, last.end(), last.kind),
        (HIGH_MEM_START, l.highmem_end(), E820Type::Ram)
    );
    assert!(l.populate().contains(&PfnRange {
        start: HIGH_MEM_START / PAGE_SIZE,
        count: (l.highmem_end() - HIGH_MEM_START) / PAGE_SIZE
    }));
}

/// Debian's notes with SUPPORTED_FEATURES lacking linux_rsdp_unrestricted (bit 15): an older
/// Linux, for which libxl puts the RSDP where the BIOS search finds it.
fn restricted_rsdp_kernel() -> ElfKernel {
    let notes = [notes_without(&[17]), xen(17, &0x0801u32.to_le_bytes())].concat();
    kernel_with(Some(notes))
}

#[test]
fn an_older_linux_gets_its_rsdp_below_1_mib() {
    let k = restricted_rsdp_kernel();
    let c = build_with(&k, 128 * MIB, 2, None);
    let si = start_info(&c);
    assert_eq!(si.rsdp_paddr, RSDP_LOW_ADDRESS);
    acpi_tables(&c.guest, si.rsdp_paddr);
    // Low RAM is split around the RSDP's page, which is ACPI.
    let e = c.layout.e820();
    assert_eq!(
        (e[0].addr, e[0].size, e[0].kind),
        (0, 0xff000, E820Type::Ram)
    );
    assert_eq!(
        (e[1].addr, e[1].size, e[1].kind),
        (0xff000, 0x1000, E820Type::Acpi)
    );
    assert_eq!(
        (e[2].addr, e[2].end(), e[2].kind),
        (0x100000, 128 * MIB, E820Type::Ram)
    );
    // RAM, ACPI in the hole, special pages: the RSDP's page is RAM already.
    let pop: u64 = c.layout.populate().iter().map(|r| r.count).sum();
    assert_eq!(
        pop,
        128 * MIB / PAGE_SIZE + 1 + c.layout.acpi().table_pages() + 8
    );
}

#[test]
fn an_rsdp_unrestricted_kernel_gets_its_rsdp_after_the_tables() {
    let c = build(128 * MIB, 2, None);
    let si = start_info(&c);
    let expect = acpi::TABLES_ADDRESS + c.layout.acpi().table_pages() * PAGE_SIZE;
    assert_eq!(si.rsdp_paddr, expect);
    acpi_tables(&c.guest, si.rsdp_paddr);
    assert!(c
        .layout
        .populate()
        .iter()
        .any(|r| r.contains(expect / PAGE_SIZE)));
    // Low RAM is then one entry.
    assert_eq!(c.layout.e820()[0].size, 128 * MIB);
}

// -- errors -----------------------------------------------------------------------------------

fn err(kernel: &ElfKernel, mem: u64, vcpus: u32, initrd: Option<&Initrd>) -> PlanError {
    match PvhLayout::new(
        kernel,
        mem / PAGE_SIZE,
        vcpus,
        initrd,
        &CommandLine::default(),
    ) {
        Ok(l) => panic!(
            "accepted: kernel {:?}, start info {:?}",
            l.kernel(),
            l.start_info()
        ),
        Err(e) => e,
    }
}

#[test]
fn a_kernel_that_does_not_fit_in_ram_is_refused() {
    let e = err(&kernel_with(None), 16 * MIB, 1, None);
    match e {
        PlanError::SegmentOutsideRam { start, ram_end, .. } => {
            assert_eq!(start, PSTART);
            assert_eq!(ram_end, 16 * MIB);
        }
        e => panic!("{e}"),
    }
}

#[test]
fn an_initrd_too_large_is_refused() {
    let initrd = Initrd::from_bytes(vec![1; (20 * MIB) as usize], &ImageLimits::default()).unwrap();
    let e = err(&kernel_with(None), 32 * MIB, 1, Some(&initrd));
    assert!(
        matches!(
            e,
            PlanError::NoRoom {
                region: Region::Initrd,
                need: 5120,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("5120 pages"), "{e}");
}

#[test]
fn vcpu_and_memory_bounds_are_errors() {
    let k = kernel_with(None);
    assert!(matches!(err(&k, 128 * MIB, 0, None), PlanError::NoVcpus));
    assert!(matches!(
        err(&k, 128 * MIB, 129, None),
        PlanError::TooManyVcpus {
            vcpus: 129,
            max: 128
        }
    ));
    assert!(matches!(
        PvhLayout::new(&k, u64::MAX, 1, None, &CommandLine::default()),
        Err(PlanError::MemoryTooLarge { .. })
    ));
}

#[test]
fn a_kernel_without_phys32_entry_is_refused() {
    let e = err(&kernel_with(Some(notes_without(&[18]))), 128 * MIB, 1, None);
    assert!(matches!(e, PlanError::Kernel(_)), "{e}");
    assert!(e.to_string().contains("PHYS32_ENTRY"), "{e}");
}

#[test]
fn a_kernel_over_the_rsdp_page_is_refused() {
    // A kernel loaded at 0xF8000..0x100000: its last page is 0xFF000, where the RSDP goes.
    let mut b = ElfBuilder::debian_like();
    let base = 0xf_8000;
    for s in &mut b.segments {
        s.paddr = s.paddr - PSTART + base;
    }
    let notes = [
        notes_without(&[17, 18]),
        xen(17, &0x0801u32.to_le_bytes()),
        xen(18, &(base + 0x850).to_le_bytes()),
    ]
    .concat();
    let k = ElfKernel::parse(&b.with_notes(notes).bytes(), &ImageLimits::default()).unwrap();
    let e = err(&k, 128 * MIB, 1, None);
    assert!(matches!(e, PlanError::SegmentOutsideRam { .. }), "{e}");
}
