//! The PVH build plan: libxenguest's `xc_hvm_32` hooks (`xg_dom_x86.c`: `meminit_hvm`,
//! `alloc_magic_pages_hvm`, `bootlate_hvm`, `vcpu_hvm`) and libxl's memory map and ACPI
//! (`libxl_dom.c`, `libxl_x86.c`, `libxl_x86_acpi.c`) at RELEASE-4.17.5, as data.
//!
//! Paging is off at entry, so guest frames are guest-physical addresses and no p2m is needed:
//! the plan is complete before populate.
//!
//! ```text
//! 0                RAM (populated)         kernel at its p_paddr; then hvm_start_info (and
//!                                           the initrd after it with MOD_START_PFN, before it
//!                                           without); RSDP at 0xFFFC0 for Linux
//! lowmem_end       = min(memory, 0xFC000000)
//! 0xFC000000       MMIO hole: ACPI (info page, tables from 0xFC001000), LAPIC 0xFEE00000,
//!                  special pages 0xFEFF8-0xFEFFF (xenstore 0xFEFFC, console 0xFEFFF, ...)
//! 4 GiB            the rest of RAM, if memory > 0xFC000000
//! ```
//!
//! The e820 map holds the same regions as libxl's, sorted and without overlaps: libxl lists
//! low RAM as one entry and the RSDP's page (0xFF000) as an ACPI entry inside it, unsorted;
//! here low RAM is split around that page, which is what the guest's e820 sanitiser makes of
//! libxl's list.

use xenctrl::abi::{
    HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo, XEN_HVM_MEMMAP_TYPE_ACPI,
    XEN_HVM_MEMMAP_TYPE_RAM, XEN_HVM_MEMMAP_TYPE_RESERVED, XEN_HVM_START_MAGIC_VALUE,
};
use zerocopy::IntoBytes;

use super::acpi::{self, AcpiTables};
use super::kernel::{CommandLine, ElfKernel, GuestKind, Initrd, KernelLayout};
use super::plan::{
    kernel_loads, pages_for, Load, LoadSource, PfnRange, PlanError, Region, PAGE_SHIFT, PAGE_SIZE,
};

/// The end of the special-page region (`X86_HVM_END_SPECIAL_REGION`, a frame).
pub const SPECIAL_REGION_END: u64 = 0xff000;
/// How many special pages (`X86_HVM_NR_SPECIAL_PAGES`).
pub const NR_SPECIAL_PAGES: u64 = 8;
/// The first special page's frame.
pub const SPECIAL_PFN_START: u64 = SPECIAL_REGION_END - NR_SPECIAL_PAGES;
/// The xenstore ring's frame (`SPECIALPAGE_XENSTORE`).
pub const XENSTORE_PFN: u64 = SPECIAL_PFN_START + 4;
/// The console ring's frame (`SPECIALPAGE_CONSOLE`).
pub const CONSOLE_PFN: u64 = SPECIAL_PFN_START + 7;
/// The identity-map page directory's frame (`SPECIALPAGE_IDENT_PT`).
pub const IDENT_PT_PFN: u64 = SPECIAL_PFN_START + 6;
/// Where the MMIO hole starts for a guest without a device model: the lowest of the ACPI area,
/// the local APIC and the special pages.
pub const MMIO_HOLE_START: u64 = acpi::ACPI_INFO_PHYSICAL_ADDRESS;
/// 4 GiB, where RAM above the hole resumes.
pub const HIGH_MEM_START: u64 = 1 << 32;
/// The most vCPUs (`HVM_MAX_VCPUS`).
pub const MAX_VCPUS: u32 = acpi::MAX_VCPUS;
/// The most memory a plan accepts: 1 TiB.
pub const MAX_PAGES: u64 = 1 << 28;
/// libxenguest's `HVMLOADER_MODULE_MAX_COUNT`: module-list slots reserved in the start info.
pub const MODULE_SLOTS: usize = 2;
/// The space reserved for each module's command line (`MAX_GUEST_CMDLINE`).
pub const MODULE_CMDLINE_SIZE: usize = 1024;

/// `HVM_PARAM_*` numbers the plan sets.
pub mod params {
    /// The xenstore ring's frame.
    pub const STORE_PFN: u32 = 1;
    /// The xenstore ring's event channel.
    pub const STORE_EVTCHN: u32 = 2;
    /// The default ioreq server's synchronous page.
    pub const IOREQ_PFN: u32 = 5;
    /// The default ioreq server's buffered page.
    pub const BUFIOREQ_PFN: u32 = 6;
    /// The identity-map page directory (an address, not a frame).
    pub const IDENT_PT: u32 = 12;
    /// The console ring's frame.
    pub const CONSOLE_PFN: u32 = 17;
    /// The console ring's event channel.
    pub const CONSOLE_EVTCHN: u32 = 18;
    /// The paging ring's frame.
    pub const PAGING_RING_PFN: u32 = 27;
    /// The monitor ring's frame.
    pub const MONITOR_RING_PFN: u32 = 28;
    /// The sharing ring's frame.
    pub const SHARING_RING_PFN: u32 = 29;
}

/// The e820 types used here (`XEN_HVM_MEMMAP_TYPE_*`, equal to e820's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum E820Type {
    /// Usable RAM.
    Ram,
    /// Reserved.
    Reserved,
    /// ACPI tables.
    Acpi,
}

impl E820Type {
    /// The numeric type.
    pub fn code(self) -> u32 {
        match self {
            E820Type::Ram => XEN_HVM_MEMMAP_TYPE_RAM,
            E820Type::Reserved => XEN_HVM_MEMMAP_TYPE_RESERVED,
            E820Type::Acpi => XEN_HVM_MEMMAP_TYPE_ACPI,
        }
    }
}

/// One e820 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// Base address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Type.
    pub kind: E820Type,
}

impl E820Entry {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// A segment segment of frames with its role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvhSegment {
    /// What it holds.
    pub region: Region,
    /// Its frames.
    pub pfns: PfnRange,
}

/// A 32-bit flat segment register as the HVM CPU save record holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentRegister {
    /// Base.
    pub base: u64,
    /// Limit.
    pub limit: u32,
    /// Attributes (`*_arbytes`).
    pub arbytes: u32,
}

/// The boot vCPU's state for the HVM CPU save record (everything else zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvhVcpu {
    /// CR0: PE | ET.
    pub cr0: u64,
    /// PHYS32_ENTRY.
    pub rip: u64,
    /// hvm_start_info's physical address.
    pub rbx: u64,
    /// Code segment: flat, 32-bit, execute/read, accessed (0xc9b).
    pub cs: SegmentRegister,
    /// ds, es, ss: flat, 32-bit, read/write, accessed (0xc93).
    pub data: SegmentRegister,
    /// Task register: base 0, limit 0x67, busy 32-bit TSS (0x8b).
    pub tr: SegmentRegister,
    /// DR6.
    pub dr6: u64,
    /// DR7.
    pub dr7: u64,
}

/// What the executor writes and sets besides the loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvhImage {
    /// Byte strings to write at guest-physical addresses: hvm_start_info with its command
    /// line, module list and memory map; the RSDP; the ACPI tables; the identity-map page
    /// directory.
    pub writes: Vec<(u64, Vec<u8>)>,
    /// `HVM_PARAM_*` values, in libxenguest's order, the event channels last.
    pub hvm_params: Vec<(u32, u64)>,
    /// The boot vCPU (vCPU 0).
    pub vcpu: PvhVcpu,
    /// `msr_mtrr_def_type` for every vCPU: write-back, MTRRs enabled.
    pub mtrr_def_type: u64,
}

/// A PVH guest's plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvhLayout {
    kernel_layout: KernelLayout,
    total_pages: u64,
    vcpus: u32,
    lowmem_end: u64,
    highmem_end: u64,
    kernel: PfnRange,
    initrd: Option<(PfnRange, u64)>,
    start_info: PfnRange,
    cmdline: CommandLine,
    acpi: AcpiTables,
    e820: Vec<E820Entry>,
    loads: Vec<Load>,
}

/// The start-info segment's internal layout (bootlate_hvm): the struct, the command line
/// (rounded to 8 bytes), the module list, the modules' command lines, the memory map.
/// Offsets are small: the command line is at most 1023 bytes, the map a few entries.
struct StartInfoLayout {
    cmdline_off: usize,
    modlist_off: usize,
    memmap_off: usize,
    size: usize,
}

impl StartInfoLayout {
    fn new(cmdline_len: usize, e820_entries: usize) -> StartInfoLayout {
        let header = size_of::<HvmStartInfo>();
        let cmdline_size = (cmdline_len + 1).next_multiple_of(8);
        let modlist_off = header + cmdline_size;
        let memmap_off =
            modlist_off + MODULE_SLOTS * (size_of::<HvmModlistEntry>() + MODULE_CMDLINE_SIZE);
        StartInfoLayout {
            cmdline_off: header,
            modlist_off,
            memmap_off,
            size: memmap_off + e820_entries * size_of::<HvmMemmapTableEntry>(),
        }
    }
}

impl PvhLayout {
    /// Lays out a PVH guest of `total_pages` pages of RAM and `vcpus` vCPUs.
    ///
    /// # Errors
    ///
    /// [`PlanError::Kernel`] (no PHYS32_ENTRY, ...), [`PlanError::NoVcpus`],
    /// [`PlanError::TooManyVcpus`], [`PlanError::MemoryTooLarge`],
    /// [`PlanError::OverlappingSegments`], [`PlanError::SegmentOutsideRam`] (the kernel does not
    /// fit in low RAM or covers the RSDP's page), [`PlanError::NoRoom`] (start info or initrd
    /// do not fit), [`PlanError::AcpiTooLarge`].
    pub fn new(
        kernel: &ElfKernel,
        total_pages: u64,
        vcpus: u32,
        initrd: Option<&Initrd>,
        cmdline: &CommandLine,
    ) -> Result<PvhLayout, PlanError> {
        let kl = kernel.layout(GuestKind::Pvh)?;
        if total_pages > MAX_PAGES {
            return Err(PlanError::MemoryTooLarge {
                pages: total_pages,
                max: MAX_PAGES,
            });
        }
        // libxl__domain_device_construct_rdm / libxl__build_hvm: RAM up to the hole, the rest
        // above 4 GiB.
        let mem = total_pages * PAGE_SIZE;
        let lowmem_end = mem.min(MMIO_HOLE_START);
        let highmem_end = if mem > MMIO_HOLE_START {
            HIGH_MEM_START + (mem - MMIO_HOLE_START)
        } else {
            0
        };

        // ACPI first (libxl loads it before the image is built); the RSDP goes low for Linux.
        let linux = kernel.notes().guest_os.as_deref() == Some("linux");
        let unrestricted = kernel.notes().supported.contains(LINUX_RSDP_UNRESTRICTED);
        let tables = AcpiTables::build(vcpus, 0)?;
        let rsdp_at = acpi::rsdp_address(linux && !unrestricted, tables.table_pages());
        let acpi = AcpiTables {
            rsdp_address: rsdp_at,
            ..tables
        };

        let e820 = memory_map(lowmem_end, highmem_end, &acpi);

        // The kernel at its physical addresses, in RAM, clear of the RSDP's page.
        let mut loads = kernel_loads(kernel, kl.pstart)?;
        let rsdp_page = PfnRange {
            start: acpi.rsdp_address >> PAGE_SHIFT,
            count: 1,
        };
        for s in kernel.segments() {
            let span = PfnRange {
                start: s.paddr() >> PAGE_SHIFT,
                count: pages_for(s.paddr_end()) - (s.paddr() >> PAGE_SHIFT),
            };
            let low_rsdp = acpi.rsdp_address < lowmem_end && span.overlaps(&rsdp_page);
            if s.paddr_end() > lowmem_end || low_rsdp {
                return Err(PlanError::SegmentOutsideRam {
                    segment: s.index(),
                    start: s.paddr(),
                    end: s.paddr_end(),
                    ram_end: lowmem_end,
                });
            }
        }
        let kernel_pfns = PfnRange {
            start: kl.pstart >> PAGE_SHIFT,
            count: pages_for(kl.pend) - (kl.pstart >> PAGE_SHIFT),
        };

        // Then, from the kernel's end: the initrd (unless MOD_START_PFN puts it after the start
        // info) and the start info, all below the hole.
        let ram_pages = lowmem_end >> PAGE_SHIFT;
        let mut next = kernel_pfns.end();
        let mut take = |region: Region, pages: u64| -> Result<PfnRange, PlanError> {
            let free = ram_pages.saturating_sub(next);
            let clashes = PfnRange {
                start: next,
                count: pages,
            }
            .overlaps(&rsdp_page)
                && acpi.rsdp_address < lowmem_end;
            if pages > free || clashes {
                return Err(PlanError::NoRoom {
                    region,
                    need: pages,
                    at: next,
                    free,
                    total: total_pages,
                });
            }
            let r = PfnRange {
                start: next,
                count: pages,
            };
            next += pages;
            Ok(r)
        };
        let unmapped_initrd = kernel.notes().mod_start_pfn.is_some_and(|v| v != 0);
        let mut initrd_out = None;
        if let (Some(i), false) = (initrd, unmapped_initrd) {
            let len = i.len() as u64;
            initrd_out = Some((take(Region::Initrd, pages_for(len))?, len));
        }
        let si = StartInfoLayout::new(cmdline.as_str().len(), e820.len());
        let start_info = take(Region::StartInfo, pages_for(si.size as u64))?;
        if let (Some(i), true) = (initrd, unmapped_initrd) {
            let len = i.len() as u64;
            initrd_out = Some((take(Region::Initrd, pages_for(len))?, len));
        }
        if let Some((r, len)) = initrd_out {
            loads.push(Load {
                dest: r.start * PAGE_SIZE,
                len,
                source: LoadSource::Initrd,
            });
        }

        Ok(PvhLayout {
            kernel_layout: kl,
            total_pages,
            vcpus,
            lowmem_end,
            highmem_end,
            kernel: kernel_pfns,
            initrd: initrd_out,
            start_info,
            cmdline: cmdline.clone(),
            acpi,
            e820,
            loads,
        })
    }

    /// The kernel's layout.
    pub fn kernel_layout(&self) -> &KernelLayout {
        &self.kernel_layout
    }
    /// RAM pages.
    pub fn total_pages(&self) -> u64 {
        self.total_pages
    }
    /// vCPUs.
    pub fn vcpus(&self) -> u32 {
        self.vcpus
    }
    /// The end of RAM below the hole.
    pub fn lowmem_end(&self) -> u64 {
        self.lowmem_end
    }
    /// The end of RAM above 4 GiB (0: none).
    pub fn highmem_end(&self) -> u64 {
        self.highmem_end
    }
    /// The kernel's frames.
    pub fn kernel(&self) -> PfnRange {
        self.kernel
    }
    /// The initrd's frames and length.
    pub fn initrd(&self) -> Option<(PfnRange, u64)> {
        self.initrd
    }
    /// hvm_start_info's frames (with its command line, module list and memory map).
    pub fn start_info(&self) -> PfnRange {
        self.start_info
    }
    /// hvm_start_info's physical address (`rbx` at entry).
    pub fn start_info_address(&self) -> u64 {
        self.start_info.start * PAGE_SIZE
    }
    /// The ACPI tables.
    pub fn acpi(&self) -> &AcpiTables {
        &self.acpi
    }
    /// The memory map, sorted, without overlaps (also for `XENMEM_set_memory_map`).
    pub fn e820(&self) -> &[E820Entry] {
        &self.e820
    }
    /// The kernel's segments and the initrd, to copy.
    pub fn loads(&self) -> &[Load] {
        &self.loads
    }
    /// The segments the executor clears before loading.
    pub fn segments(&self) -> Vec<PvhSegment> {
        let mut v = vec![
            PvhSegment {
                region: Region::Kernel,
                pfns: self.kernel,
            },
            PvhSegment {
                region: Region::StartInfo,
                pfns: self.start_info,
            },
        ];
        if let Some((r, _)) = self.initrd {
            v.push(PvhSegment {
                region: Region::Initrd,
                pfns: r,
            });
        }
        v.sort_by_key(|s| s.pfns.start);
        v
    }
    /// The frames to populate, guest frame = physical frame: RAM below the hole and above
    /// 4 GiB, the ACPI pages in the hole, and the special pages.
    pub fn populate(&self) -> Vec<PfnRange> {
        let mut v = vec![PfnRange {
            start: 0,
            count: self.lowmem_end >> PAGE_SHIFT,
        }];
        let acpi_pages = 1 + self.acpi.table_pages();
        v.push(PfnRange {
            start: acpi::ACPI_INFO_PHYSICAL_ADDRESS >> PAGE_SHIFT,
            count: acpi_pages,
        });
        if self.acpi.rsdp_address >= self.lowmem_end {
            v.push(PfnRange {
                start: self.acpi.rsdp_address >> PAGE_SHIFT,
                count: 1,
            });
        }
        v.push(PfnRange {
            start: SPECIAL_PFN_START,
            count: NR_SPECIAL_PAGES,
        });
        if self.highmem_end > 0 {
            v.push(PfnRange {
                start: HIGH_MEM_START >> PAGE_SHIFT,
                count: (self.highmem_end - HIGH_MEM_START) >> PAGE_SHIFT,
            });
        }
        v.sort();
        v
    }

    /// The contents: hvm_start_info and what it points at, ACPI, the identity map, the HVM
    /// parameters and the boot vCPU.
    pub fn render(&self, store_evtchn: u32, console_evtchn: u32) -> PvhImage {
        let base = self.start_info_address();
        let si = StartInfoLayout::new(self.cmdline.as_str().len(), self.e820.len());
        let mut blob = vec![0u8; si.size];
        let mut info = HvmStartInfo {
            magic: XEN_HVM_START_MAGIC_VALUE,
            version: 1,
            cmdline_paddr: base + si.cmdline_off as u64,
            rsdp_paddr: self.acpi.rsdp_address,
            memmap_paddr: base + si.memmap_off as u64,
            memmap_entries: u32::try_from(self.e820.len()).unwrap_or(u32::MAX),
            ..HvmStartInfo::default()
        };
        let cmd = self.cmdline.to_bytes_with_nul();
        let at = si.cmdline_off;
        blob[at..at + cmd.len()].copy_from_slice(&cmd);
        if let Some((r, len)) = self.initrd {
            info.nr_modules = 1;
            info.modlist_paddr = base + si.modlist_off as u64;
            let m = HvmModlistEntry {
                paddr: r.start * PAGE_SIZE,
                size: len,
                cmdline_paddr: 0,
                reserved: 0,
            };
            let at = si.modlist_off;
            blob[at..at + size_of::<HvmModlistEntry>()].copy_from_slice(m.as_bytes());
        }
        for (i, e) in self.e820.iter().enumerate() {
            let m = HvmMemmapTableEntry {
                addr: e.addr,
                size: e.size,
                kind: e.kind.code(),
                reserved: 0,
            };
            let at = si.memmap_off + i * size_of::<HvmMemmapTableEntry>();
            blob[at..at + size_of::<HvmMemmapTableEntry>()].copy_from_slice(m.as_bytes());
        }
        blob[..size_of::<HvmStartInfo>()].copy_from_slice(info.as_bytes());

        // A 32-bit non-PAE page directory of 4 MiB identity pages, for running with paging off
        // under EPT: PRESENT | RW | USER | ACCESSED | DIRTY | PSE.
        let ident: Vec<u8> = (0u32..1024)
            .flat_map(|i| ((i << 22) | 0xe7).to_le_bytes())
            .collect();

        let writes = vec![
            (base, blob),
            (self.acpi.rsdp_address, self.acpi.rsdp.clone()),
            (self.acpi.tables_address, self.acpi.tables.clone()),
            (IDENT_PT_PFN * PAGE_SIZE, ident),
        ];
        let special = |n: u64| SPECIAL_PFN_START + n;
        let hvm_params = vec![
            (params::STORE_PFN, XENSTORE_PFN),
            (params::BUFIOREQ_PFN, special(3)),
            (params::IOREQ_PFN, special(5)),
            (params::CONSOLE_PFN, CONSOLE_PFN),
            (params::PAGING_RING_PFN, special(0)),
            (params::MONITOR_RING_PFN, special(1)),
            (params::SHARING_RING_PFN, special(2)),
            (params::IDENT_PT, IDENT_PT_PFN << PAGE_SHIFT),
            (params::CONSOLE_EVTCHN, u64::from(console_evtchn)),
            (params::STORE_EVTCHN, u64::from(store_evtchn)),
        ];
        let flat = u32::MAX;
        PvhVcpu {
            cr0: 0x11,
            rip: self.kernel_layout.entry,
            rbx: base,
            cs: SegmentRegister {
                base: 0,
                limit: flat,
                arbytes: 0xc9b,
            },
            data: SegmentRegister {
                base: 0,
                limit: flat,
                arbytes: 0xc93,
            },
            tr: SegmentRegister {
                base: 0,
                limit: 0x67,
                arbytes: 0x8b,
            },
            dr6: 0xffff_0ff0,
            dr7: 0x400,
        }
        .into_image(writes, hvm_params)
    }
}

impl PvhVcpu {
    fn into_image(self, writes: Vec<(u64, Vec<u8>)>, hvm_params: Vec<(u32, u64)>) -> PvhImage {
        PvhImage {
            writes,
            hvm_params,
            vcpu: self,
            // MTRR_TYPE_WRBACK | MTRR_DEF_TYPE_ENABLE.
            mtrr_def_type: 6 | (1 << 11),
        }
    }
}

/// `XENFEAT_linux_rsdp_unrestricted`: the kernel reads `rsdp_paddr` wherever it points.
pub const LINUX_RSDP_UNRESTRICTED: u32 = 15;

/// libxl's memory map (`domain_construct_memmap`), sorted and without overlaps.
fn memory_map(lowmem_end: u64, highmem_end: u64, acpi: &AcpiTables) -> Vec<E820Entry> {
    let mut v = Vec::new();
    let rsdp_page = acpi.rsdp_address & !(PAGE_SIZE - 1);
    let rsdp_entry = E820Entry {
        addr: rsdp_page,
        size: acpi.rsdp_address - rsdp_page + acpi::RSDP_MODULE_LEN,
        kind: E820Type::Acpi,
    };
    if rsdp_page < lowmem_end {
        // Split low RAM around the RSDP's page.
        v.push(E820Entry {
            addr: 0,
            size: rsdp_page,
            kind: E820Type::Ram,
        });
        v.push(rsdp_entry);
        let after = rsdp_entry.end().next_multiple_of(PAGE_SIZE);
        if after < lowmem_end {
            v.push(E820Entry {
                addr: after,
                size: lowmem_end - after,
                kind: E820Type::Ram,
            });
        }
    } else {
        v.push(E820Entry {
            addr: 0,
            size: lowmem_end,
            kind: E820Type::Ram,
        });
        v.push(rsdp_entry);
    }
    v.push(E820Entry {
        addr: acpi::ACPI_INFO_PHYSICAL_ADDRESS,
        size: PAGE_SIZE,
        kind: E820Type::Acpi,
    });
    v.push(E820Entry {
        addr: acpi.tables_address,
        size: acpi.tables.len() as u64,
        kind: E820Type::Acpi,
    });
    v.push(E820Entry {
        addr: SPECIAL_PFN_START << PAGE_SHIFT,
        size: NR_SPECIAL_PAGES << PAGE_SHIFT,
        kind: E820Type::Reserved,
    });
    if highmem_end > 0 {
        v.push(E820Entry {
            addr: HIGH_MEM_START,
            size: highmem_end - HIGH_MEM_START,
            kind: E820Type::Ram,
        });
    }
    v.retain(|e| e.size > 0);
    v.sort_by_key(|e| e.addr);
    v
}
