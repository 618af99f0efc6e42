//! The PV x86-64 build plan: libxenguest's `xc_dom_build_image` with the `xen-3.0-x86_64`
//! hooks (`xg_dom_core.c`, `xg_dom_x86.c` at RELEASE-4.17.5), as data.
//!
//! Two phases, because the second needs the machine frames that populate returns:
//!
//! 1. [`PvLayout::new`]: before populate. Frames are allocated upwards from pfn 0, which is
//!    mapped at VIRT_BASE, in libxenguest's order:
//!
//!    | region | where |
//!    |---|---|
//!    | kernel | at `virt_kstart` (the frames below it are padding) |
//!    | initrd, if the kernel lacks MOD_START_PFN | next, mapped |
//!    | p2m list, if the kernel lacks a usable INIT_P2M | next, mapped |
//!    | start_info, xenstore ring, console ring | one page each |
//!    | page tables | L4, L3s, L2s, L1s for VIRT_BASE up to the end of the bootstrap area plus 512 KiB, rounded up to 4 MiB |
//!    | boot stack | one page |
//!    | padding | up to the end of that mapping |
//!    | initrd, with MOD_START_PFN | next, unmapped (`SIF_MOD_START_PFN`, `mod_start` is a pfn) |
//!    | p2m list at INIT_P2M | next, with its own page tables after it, mapped at INIT_P2M |
//!
//!    An INIT_P2M at or above VIRT_BASE, or not page aligned, is ignored, as libxenguest does.
//! 2. [`PvLayout::render`]: given the p2m (pfn -> mfn), the page contents: page tables whose
//!    entries hold machine frames (the page tables themselves mapped read-only, as Xen demands
//!    of a PV guest), the p2m list, `start_info`; and the boot vCPU's registers.

mod tables;

use xenctrl::abi::{StartInfo, MAX_GUEST_CMDLINE, SIF_MOD_START_PFN};
use xenctrl::x86::{PageTable, Pte, PteFlags};
use zerocopy::{FromZeros, IntoBytes};

use super::kernel::{CommandLine, ElfKernel, GuestKind, Initrd, KernelLayout};
use super::plan::{
    kernel_loads, pages_for, Load, LoadSource, PlanError, Region, PAGE_BYTES, PAGE_SIZE,
};
use tables::Mapping;

/// The guest type libxenguest writes into `start_info.magic`.
pub const GUEST_TYPE: &str = "xen-3.0-x86_64";
/// The most vCPUs a PV x86 domain can have (Xen's `MAX_VIRT_CPUS`: 1024 MiB of per-domain
/// GDT/LDT space at 128 KiB per vCPU).
pub const MAX_VCPUS: u32 = 8192;
/// The most memory a plan accepts: 1 TiB (the p2m list alone is then 2 GiB).
pub const MAX_PAGES: u64 = 1 << 28;
/// How many vCPUs' `evtchn_upcall_mask` libxenguest sets in shared_info
/// (`XEN_LEGACY_MAX_VCPUS`).
pub const LEGACY_MAX_VCPUS: u32 = 32;

/// The selectors of a 64-bit PV kernel (`FLAT_KERNEL_CS64`, `FLAT_KERNEL_SS64`,
/// `FLAT_KERNEL_DS64`).
pub const FLAT_KERNEL_CS: u16 = 0xe033;
/// See [`FLAT_KERNEL_CS`].
pub const FLAT_KERNEL_SS: u16 = 0xe02b;
/// See [`FLAT_KERNEL_CS`]: the null selector.
pub const FLAT_KERNEL_DS: u16 = 0;
/// `VGCF_in_kernel | VGCF_online`.
pub const VGCF_IN_KERNEL_ONLINE: u64 = (1 << 2) | (1 << 5);
/// RFLAGS.IF.
pub const RFLAGS_IF: u64 = 1 << 9;
/// DR6's reset value.
pub const DR6_DEFAULT: u64 = 0xffff_0ff0;
/// DR7's reset value.
pub const DR7_DEFAULT: u64 = 0x400;

/// Padding libxenguest adds to the bootstrap mapping (512 KiB) beyond the boot stack.
const SLACK_PAGES: u64 = (512 * 1024) / PAGE_SIZE;
/// The bootstrap mapping ends on a 4 MiB boundary (this mask's bits set).
const MAPPING_ALIGN_MASK: u64 = (4 << 20) - 1;

/// A segment: frames, and the virtual address of its first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The first frame.
    pub pfn: u64,
    /// How many frames.
    pub pages: u64,
    /// The virtual address of the first frame (for an unmapped initrd, where it would be).
    pub va: u64,
}

/// Where the initrd went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvInitrd {
    /// Its frames.
    pub segment: Segment,
    /// Its length in bytes.
    pub len: u64,
    /// Whether it is outside the initial mapping (the kernel has MOD_START_PFN):
    /// `start_info.mod_start` is then its pfn, with `SIF_MOD_START_PFN`.
    pub unmapped: bool,
}

/// The hypercall page the kernel asks for with HYPERCALL_PAGE: the executor issues
/// `XEN_DOMCTL_hypercall_init` with this frame's mfn. Debian's kernels have none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HypercallPage {
    /// The note's virtual address.
    pub va: u64,
    /// Its frame (inside the kernel).
    pub pfn: u64,
}

/// Phase one of a PV build: every region's frames and virtual addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvLayout {
    kernel_layout: KernelLayout,
    total_pages: u64,
    vcpus: u32,
    kernel: Segment,
    initrd: Option<PvInitrd>,
    p2m: Segment,
    p2m_at_init_p2m: bool,
    start_info_pfn: u64,
    xenstore_pfn: u64,
    console_pfn: u64,
    page_tables: Segment,
    boot_stack_pfn: u64,
    mapping_end: u64,
    used_pages: u64,
    mappings: Vec<Mapping>,
    loads: Vec<Load>,
    cmdline: CommandLine,
    hypercall_page: Option<HypercallPage>,
}

/// What phase two needs besides the layout.
#[derive(Clone, Copy, Debug)]
pub struct PvBoot<'a> {
    /// pfn -> mfn for every page, as populate returned them.
    pub p2m: &'a [u64],
    /// The machine frame of the domain's shared-info page (`getdomaininfo`).
    pub shared_info_mfn: u64,
    /// The xenstore ring's event channel.
    pub store_evtchn: u32,
    /// The console ring's event channel.
    pub console_evtchn: u32,
}

/// A page's contents, keyed by its guest frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageContents {
    /// The guest frame.
    pub pfn: u64,
    /// 4096 bytes.
    pub bytes: Vec<u8>,
}

/// The boot vCPU's registers for `XEN_DOMCTL_setvcpucontext` (everything else zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvVcpu {
    /// ENTRY.
    pub rip: u64,
    /// The top of the boot stack.
    pub rsp: u64,
    /// `start_info`'s virtual address.
    pub rsi: u64,
    /// IF.
    pub rflags: u64,
    /// Code selector.
    pub cs: u16,
    /// Stack selector.
    pub ss: u16,
    /// ds, es, fs, gs.
    pub ds: u16,
    /// `kernel_ss` (= ss).
    pub kernel_ss: u64,
    /// `kernel_sp` (= rsp).
    pub kernel_sp: u64,
    /// `ctrlreg[3]`: the L4's machine address.
    pub cr3: u64,
    /// `VGCF_*` flags.
    pub flags: u64,
    /// `debugreg[6]`.
    pub dr6: u64,
    /// `debugreg[7]`.
    pub dr7: u64,
}

/// Phase two of a PV build: what guest memory must hold and how the vCPU starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvImage {
    /// Pages to write whole: the page tables, the p2m list, start_info.
    pub pages: Vec<PageContents>,
    /// The boot vCPU.
    pub vcpu: PvVcpu,
    /// The L4 to pin with `MMUEXT_PIN_L4_TABLE` before setting the vCPU context.
    pub pin_l4_mfn: u64,
    /// The xenstore ring's machine frame (for `XS_INTRODUCE` and the grant seed).
    pub store_mfn: u64,
    /// The console ring's machine frame.
    pub console_mfn: u64,
    /// Set `evtchn_upcall_mask` for this many vCPUs in shared_info.
    pub upcall_mask_vcpus: u32,
}

/// A frame allocator over the bootstrap area: pfn `n` is at `virt_base + n * 4096`.
struct Alloc {
    virt_base: u64,
    next: u64,
    total: u64,
}

impl Alloc {
    fn va(&self, pfn: u64) -> Result<u64, PlanError> {
        pfn.checked_mul(PAGE_SIZE)
            .and_then(|o| self.virt_base.checked_add(o))
            .ok_or(PlanError::AddressOverflow {
                what: "the bootstrap area's end",
            })
    }

    /// `pages` frames at the next free one (libxenguest's `xc_dom_chk_alloc_pages`).
    fn take(&mut self, region: Region, pages: u64) -> Result<Segment, PlanError> {
        let free = self.total.saturating_sub(self.next);
        if pages > free {
            return Err(PlanError::NoRoom {
                region,
                need: pages,
                at: self.next,
                free,
                total: self.total,
            });
        }
        let seg = Segment {
            pfn: self.next,
            pages,
            va: self.va(self.next)?,
        };
        self.next += pages;
        Ok(seg)
    }

    /// Pads up to frame `pfn`.
    fn pad_to(&mut self, region: Region, pfn: u64) -> Result<(), PlanError> {
        let pages = pfn.saturating_sub(self.next);
        self.take(region, pages).map(|_| ())
    }
}

impl PvLayout {
    /// Lays out a PV x86-64 guest of `total_pages` pages and `vcpus` vCPUs.
    ///
    /// # Errors
    ///
    /// [`PlanError::Kernel`] (the kernel cannot run as a PV guest), [`PlanError::NoVcpus`],
    /// [`PlanError::TooManyVcpus`], [`PlanError::MemoryTooLarge`],
    /// [`PlanError::KernelBelowVirtBase`], [`PlanError::KernelNotPageAligned`],
    /// [`PlanError::OverlappingSegments`], [`PlanError::NoRoom`] (a region does not fit),
    /// [`PlanError::MappingPastMemory`], [`PlanError::MappingsOverlap`],
    /// [`PlanError::HypercallPageOutsideKernel`], [`PlanError::AddressOverflow`].
    pub fn new(
        kernel: &ElfKernel,
        total_pages: u64,
        vcpus: u32,
        initrd: Option<&Initrd>,
        cmdline: &CommandLine,
    ) -> Result<PvLayout, PlanError> {
        let kl = kernel.layout(GuestKind::Pv)?;
        if vcpus == 0 {
            return Err(PlanError::NoVcpus);
        }
        if vcpus > MAX_VCPUS {
            return Err(PlanError::TooManyVcpus {
                vcpus,
                max: MAX_VCPUS,
            });
        }
        if total_pages > MAX_PAGES {
            return Err(PlanError::MemoryTooLarge {
                pages: total_pages,
                max: MAX_PAGES,
            });
        }
        let virt_base = kl.virt_base;
        if kl.virt_kstart < virt_base {
            return Err(PlanError::KernelBelowVirtBase {
                kstart: kl.virt_kstart,
                virt_base,
            });
        }
        if kl.virt_kstart % PAGE_SIZE != 0 {
            return Err(PlanError::KernelNotPageAligned {
                kstart: kl.virt_kstart,
            });
        }
        let mut alloc = Alloc {
            virt_base,
            next: 0,
            total: total_pages,
        };

        // The kernel, at its virtual address; the frames below it are padding.
        alloc.pad_to(Region::Padding, (kl.virt_kstart - virt_base) / PAGE_SIZE)?;
        let kernel_seg = alloc.take(Region::Kernel, pages_for(kl.virt_kend - kl.virt_kstart))?;
        let mut loads = kernel_loads(kernel, kernel_seg.pfn * PAGE_SIZE)?;

        let unmapped_initrd = kernel.notes().mod_start_pfn.is_some_and(|v| v != 0);
        let initrd_len = initrd.map(|i| i.len() as u64);
        let mut initrd_out = None;
        if let (Some(len), false) = (initrd_len, unmapped_initrd) {
            let seg = alloc.take(Region::Initrd, pages_for(len))?;
            initrd_out = Some(PvInitrd {
                segment: seg,
                len,
                unmapped: false,
            });
        }

        // INIT_P2M is used only below VIRT_BASE and page aligned (xc_dom_build_image).
        let p2m_base = kl.p2m_base.filter(|&b| b < virt_base && b % PAGE_SIZE == 0);
        let p2m_bytes = total_pages * 8; // total_pages <= MAX_PAGES: no overflow.
        let p2m_pages = pages_for(p2m_bytes);
        let p2m_place = match p2m_base {
            Some(base) => P2mPlace::InitP2m(base),
            None => P2mPlace::Bootstrap(alloc.take(Region::P2m, p2m_pages)?),
        };

        let start_info_pfn = alloc.take(Region::StartInfo, 1)?.pfn;
        let xenstore_pfn = alloc.take(Region::Xenstore, 1)?.pfn;
        let console_pfn = alloc.take(Region::Console, 1)?.pfn;

        // The bootstrap mapping: grow the page-table estimate until the tables, the boot stack
        // and the slack fit below the 4 MiB-rounded end (alloc_pgtables_pv).
        let extra = 1 + SLACK_PAGES;
        let mut pages = extra;
        let mut converged = None;
        // The table count grows by at most a few pages per round; 64 rounds is far more than
        // any memory size needs.
        for _ in 0..64 {
            let want_end = alloc.va(alloc.next.saturating_add(pages))?;
            let try_end = want_end | MAPPING_ALIGN_MASK;
            let end_pfn = (try_end - virt_base) >> 12;
            if end_pfn >= total_pages {
                return Err(PlanError::MappingPastMemory {
                    end_pfn,
                    total: total_pages,
                });
            }
            let map = Mapping::count(&[], virt_base, try_end, alloc.next, 0)?;
            pages = map.tables + extra;
            let need_end = alloc.va(alloc.next + pages)?;
            if need_end <= try_end.saturating_add(1) {
                converged = Some((map, try_end));
                break;
            }
        }
        let (map0, try_end) = converged.ok_or(PlanError::AddressOverflow {
            what: "the bootstrap mapping's size",
        })?;
        let page_tables = alloc.take(Region::PageTables, map0.tables)?;
        let boot_stack_pfn = alloc.take(Region::BootStack, 1)?.pfn;
        // A mapping reaching the very top of the address space has no end address to give.
        let mapping_end = try_end.checked_add(1).ok_or(PlanError::AddressOverflow {
            what: "the bootstrap mapping's end",
        })?;
        alloc.pad_to(Region::Padding, (mapping_end - virt_base) >> 12)?;
        let mut mappings = vec![map0];

        if let (Some(len), true) = (initrd_len, unmapped_initrd) {
            let seg = alloc.take(Region::Initrd, pages_for(len))?;
            initrd_out = Some(PvInitrd {
                segment: seg,
                len,
                unmapped: true,
            });
        }
        if let Some(init) = initrd_out {
            loads.push(Load {
                dest: init.segment.pfn * PAGE_SIZE,
                len: init.len,
                source: LoadSource::Initrd,
            });
        }

        let p2m = match p2m_place {
            P2mPlace::Bootstrap(seg) => seg,
            P2mPlace::InitP2m(base) => {
                let to = base + (p2m_pages * PAGE_SIZE - 1); // base < virt_base, small size.
                let end_pfn = alloc.next.saturating_add((to - base) >> 12);
                if end_pfn >= total_pages {
                    return Err(PlanError::MappingPastMemory {
                        end_pfn,
                        total: total_pages,
                    });
                }
                let map = Mapping::count(&mappings, base, to, alloc.next + p2m_pages, alloc.next)?;
                let seg = alloc.take(Region::P2m, p2m_pages + map.tables)?;
                mappings.push(map);
                Segment { va: base, ..seg }
            }
        };

        let hypercall_page = match kl.hypercall_page {
            None => None,
            Some(va) => {
                if va < kl.virt_kstart || va >= kl.virt_kend || va % PAGE_SIZE != 0 {
                    return Err(PlanError::HypercallPageOutsideKernel {
                        va,
                        kstart: kl.virt_kstart,
                        kend: kl.virt_kend,
                    });
                }
                Some(HypercallPage {
                    va,
                    pfn: (va - virt_base) / PAGE_SIZE,
                })
            }
        };

        Ok(PvLayout {
            kernel_layout: kl,
            total_pages,
            vcpus,
            kernel: kernel_seg,
            initrd: initrd_out,
            p2m,
            p2m_at_init_p2m: p2m_base.is_some(),
            start_info_pfn,
            xenstore_pfn,
            console_pfn,
            page_tables,
            boot_stack_pfn,
            mapping_end,
            used_pages: alloc.next,
            mappings,
            loads,
            cmdline: cmdline.clone(),
            hypercall_page,
        })
    }

    /// The kernel's layout this plan was made from.
    pub fn kernel_layout(&self) -> &KernelLayout {
        &self.kernel_layout
    }
    /// The guest's pages (the length of the p2m that [`PvLayout::render`] needs).
    pub fn total_pages(&self) -> u64 {
        self.total_pages
    }
    /// The vCPUs.
    pub fn vcpus(&self) -> u32 {
        self.vcpus
    }
    /// VIRT_BASE: where pfn 0 is mapped.
    pub fn virt_base(&self) -> u64 {
        self.kernel_layout.virt_base
    }
    /// The kernel's frames.
    pub fn kernel(&self) -> Segment {
        self.kernel
    }
    /// The initrd, if any.
    pub fn initrd(&self) -> Option<PvInitrd> {
        self.initrd
    }
    /// The p2m list's frames (with INIT_P2M, its own page tables after them) and its virtual
    /// address.
    pub fn p2m(&self) -> Segment {
        self.p2m
    }
    /// Whether the p2m list is mapped at INIT_P2M (else inside the bootstrap area).
    pub fn p2m_at_init_p2m(&self) -> bool {
        self.p2m_at_init_p2m
    }
    /// start_info's frame.
    pub fn start_info_pfn(&self) -> u64 {
        self.start_info_pfn
    }
    /// The xenstore ring's frame.
    pub fn xenstore_pfn(&self) -> u64 {
        self.xenstore_pfn
    }
    /// The console ring's frame.
    pub fn console_pfn(&self) -> u64 {
        self.console_pfn
    }
    /// The bootstrap page tables (the L4 first).
    pub fn page_tables(&self) -> Segment {
        self.page_tables
    }
    /// The boot stack's frame.
    pub fn boot_stack_pfn(&self) -> u64 {
        self.boot_stack_pfn
    }
    /// The end of the bootstrap mapping: VIRT_BASE up to here maps pfn 0 onwards.
    pub fn mapping_end(&self) -> u64 {
        self.mapping_end
    }
    /// Frames used from pfn 0; the rest of memory is free for the guest.
    pub fn used_pages(&self) -> u64 {
        self.used_pages
    }
    /// The bytes to copy: the kernel's segments, then the initrd.
    pub fn loads(&self) -> &[Load] {
        &self.loads
    }
    /// The hypercall page, if the kernel asks for one.
    pub fn hypercall_page(&self) -> Option<HypercallPage> {
        self.hypercall_page
    }
    /// The page-table frames of every mapping (bootstrap, and the p2m's at INIT_P2M).
    pub fn page_table_pfns(&self) -> Vec<super::plan::PfnRange> {
        self.mappings
            .iter()
            .map(|m| super::plan::PfnRange {
                start: m.tables_pfn,
                count: m.tables,
            })
            .collect()
    }
    /// Every segment the executor clears before loading, in frame order, with its region.
    pub fn segments(&self) -> Vec<(Region, Segment)> {
        let one = |pfn| Segment {
            pfn,
            pages: 1,
            va: self.virt_base() + pfn * PAGE_SIZE,
        };
        let mut v = vec![
            (Region::Kernel, self.kernel),
            (Region::P2m, self.p2m),
            (Region::StartInfo, one(self.start_info_pfn)),
            (Region::Xenstore, one(self.xenstore_pfn)),
            (Region::Console, one(self.console_pfn)),
            (Region::PageTables, self.page_tables),
            (Region::BootStack, one(self.boot_stack_pfn)),
        ];
        if let Some(i) = self.initrd {
            v.push((Region::Initrd, i.segment));
        }
        v.sort_by_key(|(_, s)| s.pfn);
        v
    }

    /// `start_info.flags`.
    pub fn start_info_flags(&self) -> u32 {
        // libxl's PV build replaces libxenguest's default (SIF_VIRT_P2M_4TOOLS) with its own
        // flags, none: the guest then also publishes its p2m frame list for the tools.
        let mut flags = 0;
        if self.initrd.is_some_and(|i| i.unmapped) {
            flags |= SIF_MOD_START_PFN;
        }
        flags
    }

    /// Phase two: the page contents and the boot vCPU, given the machine frames.
    ///
    /// # Errors
    ///
    /// [`PlanError::P2mLength`] if `boot.p2m` does not have [`PvLayout::total_pages`] entries,
    /// [`PlanError::MfnTooLarge`] if a frame the page tables map does not fit an entry.
    pub fn render(&self, boot: &PvBoot<'_>) -> Result<PvImage, PlanError> {
        let p2m = boot.p2m;
        if p2m.len() as u64 != self.total_pages {
            return Err(PlanError::P2mLength {
                got: p2m.len(),
                expected: self.total_pages,
            });
        }
        let mfn = |pfn: u64| -> Result<u64, PlanError> {
            usize::try_from(pfn)
                .ok()
                .and_then(|i| p2m.get(i))
                .copied()
                .ok_or(PlanError::P2mLength {
                    got: p2m.len(),
                    expected: self.total_pages,
                })
        };
        let mut pages = Vec::new();

        // Page tables.
        let tables: Vec<(u64, PageTable)> = tables::render(&self.mappings, &mfn)?;
        for (pfn, t) in &tables {
            pages.push(PageContents {
                pfn: *pfn,
                bytes: t.to_bytes(),
            });
        }

        // The p2m list: one u64 per page, the rest of its last frame zero.
        for (i, chunk) in p2m.chunks(512).enumerate() {
            let mut bytes = vec![0u8; PAGE_BYTES];
            for (dst, m) in bytes.chunks_exact_mut(8).zip(chunk) {
                dst.copy_from_slice(&m.to_le_bytes());
            }
            pages.push(PageContents {
                pfn: self.p2m.pfn + i as u64,
                bytes,
            });
        }

        // start_info.
        let store_mfn = mfn(self.xenstore_pfn)?;
        let console_mfn = mfn(self.console_pfn)?;
        let mut si = StartInfo::new_zeroed();
        si.magic[..GUEST_TYPE.len()].copy_from_slice(GUEST_TYPE.as_bytes());
        si.nr_pages = self.total_pages;
        si.shared_info = Pte::new(boot.shared_info_mfn, PteFlags::empty())
            .ok_or(PlanError::SharedInfoMfnTooLarge {
                mfn: boot.shared_info_mfn,
            })?
            .0;
        si.flags = self.start_info_flags();
        si.store_mfn = store_mfn;
        si.store_evtchn = boot.store_evtchn;
        si.console_mfn = console_mfn;
        si.console_evtchn = boot.console_evtchn;
        si.pt_base = self.page_tables.va;
        si.nr_pt_frames = self.mappings.first().map_or(0, |m| m.tables);
        si.mfn_list = self.p2m.va;
        if self.p2m_at_init_p2m {
            si.first_p2m_pfn = self.p2m.pfn;
            si.nr_p2m_frames = self.p2m.pages;
        }
        if let Some(i) = self.initrd {
            if i.unmapped {
                si.mod_start = i.segment.pfn;
                si.mod_len = i.segment.pages * PAGE_SIZE;
            } else {
                si.mod_start = i.segment.va;
                si.mod_len = i.len;
            }
        }
        let cmd = self.cmdline.as_str().as_bytes();
        let n = cmd.len().min(MAX_GUEST_CMDLINE - 1);
        si.cmd_line[..n].copy_from_slice(&cmd[..n]);
        let mut bytes = vec![0u8; PAGE_BYTES];
        bytes[..size_of::<StartInfo>()].copy_from_slice(si.as_bytes());
        pages.push(PageContents {
            pfn: self.start_info_pfn,
            bytes,
        });

        let l4_mfn = mfn(self.page_tables.pfn)?;
        let cr3 = Pte::new(l4_mfn, PteFlags::empty())
            .ok_or(PlanError::MfnTooLarge {
                pfn: self.page_tables.pfn,
                mfn: l4_mfn,
            })?
            .0;
        let rsp = self.virt_base() + (self.boot_stack_pfn + 1) * PAGE_SIZE;
        let vcpu = PvVcpu {
            rip: self.kernel_layout.entry,
            rsp,
            rsi: self.virt_base() + self.start_info_pfn * PAGE_SIZE,
            rflags: RFLAGS_IF,
            cs: FLAT_KERNEL_CS,
            ss: FLAT_KERNEL_SS,
            ds: FLAT_KERNEL_DS,
            kernel_ss: u64::from(FLAT_KERNEL_SS),
            kernel_sp: rsp,
            cr3,
            flags: VGCF_IN_KERNEL_ONLINE,
            dr6: DR6_DEFAULT,
            dr7: DR7_DEFAULT,
        };
        Ok(PvImage {
            pages,
            vcpu,
            pin_l4_mfn: l4_mfn,
            store_mfn,
            console_mfn,
            upcall_mask_vcpus: LEGACY_MAX_VCPUS,
        })
    }
}

/// Where the p2m list goes.
enum P2mPlace {
    /// Inside the bootstrap area, already allocated.
    Bootstrap(Segment),
    /// At INIT_P2M, allocated after everything else.
    InitP2m(u64),
}
