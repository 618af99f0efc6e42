//! What the PV and PVH build plans share: page arithmetic, the bytes to load, and the errors.
//!
//! A plan is plain data: which guest frames hold what, which bytes go where, and what the boot
//! vCPU's registers are. It is computed without a hypervisor, so every decision is unit-tested;
//! an executor applies it through populate, foreign mappings and the vCPU hypercalls.

use thiserror::Error;

use super::kernel::{ElfKernel, Initrd, KernelError};

/// Bytes in a guest page.
pub const PAGE_SIZE: u64 = 4096;
/// [`PAGE_SIZE`] as a buffer length.
pub const PAGE_BYTES: usize = 4096;
/// `log2(PAGE_SIZE)`.
pub const PAGE_SHIFT: u32 = 12;

/// Pages needed for `bytes` (rounded up), without overflow.
pub fn pages_for(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE_SIZE)
}

/// A run of guest frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PfnRange {
    /// The first frame.
    pub start: u64,
    /// How many frames.
    pub count: u64,
}

impl PfnRange {
    /// One past the last frame (saturating; plans never build ranges that wrap).
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.count)
    }
    /// Whether `pfn` is in the range.
    pub fn contains(&self, pfn: u64) -> bool {
        pfn >= self.start && pfn < self.end()
    }
    /// Whether the two ranges share a frame.
    pub fn overlaps(&self, other: &PfnRange) -> bool {
        self.start < other.end() && other.start < self.end()
    }
}

/// Where the bytes of a [`Load`] come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadSource {
    /// The kernel's ELF image, from this offset (a loadable segment's file bytes).
    Kernel {
        /// The program header's index.
        segment: usize,
        /// `p_offset`.
        offset: u64,
    },
    /// The initrd, from its start.
    Initrd,
}

/// Bytes to copy into guest memory. The rest of the segment it belongs to is zero (the
/// executor clears every segment first, as libxenguest does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    /// The destination as a byte address in the guest's frame space (`pfn * 4096 + offset`):
    /// pseudo-physical for PV, guest-physical for PVH.
    pub dest: u64,
    /// The number of bytes.
    pub len: u64,
    /// Where they come from.
    pub source: LoadSource,
}

impl Load {
    /// The first frame written.
    pub fn first_pfn(&self) -> u64 {
        self.dest >> PAGE_SHIFT
    }

    /// The source bytes, from the ELF image the kernel was parsed from and the initrd;
    /// `None` if the range is not inside them (a plan made from other inputs).
    pub fn bytes<'a>(&self, elf_image: &'a [u8], initrd: Option<&'a Initrd>) -> Option<&'a [u8]> {
        let (src, offset) = match self.source {
            LoadSource::Kernel { offset, .. } => (elf_image, offset),
            LoadSource::Initrd => (initrd?.as_bytes(), 0),
        };
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(self.len).ok()?)?;
        src.get(start..end)
    }
}

/// The kernel's loadable segments as loads, each at `base + (p_paddr - pstart)`.
pub(crate) fn kernel_loads(kernel: &ElfKernel, base: u64) -> Result<Vec<Load>, PlanError> {
    let mut loads = Vec::with_capacity(kernel.segments().len());
    for s in kernel.segments() {
        // The parser checked paddr >= pstart and that nothing wraps; stay checked anyway.
        let dest = s
            .paddr()
            .checked_sub(kernel.pstart())
            .and_then(|rel| rel.checked_add(base))
            .ok_or(PlanError::AddressOverflow {
                what: "a kernel segment's address",
            })?;
        if s.filesz() > 0 {
            loads.push(Load {
                dest,
                len: s.filesz(),
                source: LoadSource::Kernel {
                    segment: s.index(),
                    offset: s.offset(),
                },
            });
        }
    }
    check_disjoint(kernel)?;
    Ok(loads)
}

/// The loadable segments share no byte of memory (the parser checks it too; a plan must not
/// rely on a caller having parsed with the same rules).
fn check_disjoint(kernel: &ElfKernel) -> Result<(), PlanError> {
    let mut spans: Vec<_> = kernel
        .segments()
        .iter()
        .map(|s| (s.paddr(), s.paddr().saturating_add(s.memsz()), s.index()))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        if let [(a_start, a_end, a), (b_start, _, b)] = *w {
            if b_start < a_end {
                return Err(PlanError::OverlappingSegments {
                    first: a,
                    second: b,
                    first_start: a_start,
                    first_end: a_end,
                    second_start: b_start,
                });
            }
        }
    }
    Ok(())
}

/// A region of a build plan, for error messages and for the executor's bookkeeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Region {
    /// The kernel's loadable segments.
    Kernel,
    /// The initrd (module 0).
    Initrd,
    /// The p2m list (PV).
    P2m,
    /// PV `start_info` or PVH `hvm_start_info`.
    StartInfo,
    /// The xenstore ring page.
    Xenstore,
    /// The console ring page.
    Console,
    /// The initial page tables (PV).
    PageTables,
    /// The boot stack page (PV).
    BootStack,
    /// Padding up to the end of the initial mapping (PV).
    Padding,
    /// ACPI tables (PVH).
    Acpi,
}

/// Why a plan cannot be made.
#[derive(Debug, Error)]
pub enum PlanError {
    /// The kernel cannot be laid out for this kind of guest.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// No vCPU.
    #[error("a guest needs at least one vCPU")]
    NoVcpus,
    /// More vCPUs than the guest kind supports.
    #[error("{vcpus} vCPUs requested, at most {max} are supported")]
    TooManyVcpus {
        /// Requested.
        vcpus: u32,
        /// The limit.
        max: u32,
    },
    /// More memory than a plan handles.
    #[error("{pages} pages of memory requested, at most {max} are supported")]
    MemoryTooLarge {
        /// Requested.
        pages: u64,
        /// The limit.
        max: u64,
    },
    /// A region does not fit in the guest's memory.
    #[error(
        "the {region:?} needs {need} pages at frame {at:#x}, but the guest has {total} pages \
         ({free} free there); give it more memory"
    )]
    NoRoom {
        /// The region.
        region: Region,
        /// Pages it needs.
        need: u64,
        /// Where it would start.
        at: u64,
        /// Pages free from there.
        free: u64,
        /// The guest's pages.
        total: u64,
    },
    /// The initial virtual mapping reaches past the guest's memory.
    #[error(
        "the initial mapping would end at frame {end_pfn:#x}, past the guest's {total} pages; \
         give it more memory"
    )]
    MappingPastMemory {
        /// The last frame it maps.
        end_pfn: u64,
        /// The guest's pages.
        total: u64,
    },
    /// Two virtual mappings overlap (INIT_P2M inside the bootstrap area).
    #[error("the mapping {from:#x}..={to:#x} overlaps {other_from:#x}..={other_to:#x}")]
    MappingsOverlap {
        /// The new mapping's first address.
        from: u64,
        /// Its last address.
        to: u64,
        /// The existing mapping's first address.
        other_from: u64,
        /// Its last address.
        other_to: u64,
    },
    /// The kernel starts below VIRT_BASE.
    #[error("the kernel starts at {kstart:#x}, below VIRT_BASE {virt_base:#x}")]
    KernelBelowVirtBase {
        /// The kernel's first virtual address.
        kstart: u64,
        /// VIRT_BASE.
        virt_base: u64,
    },
    /// The kernel's start is not page aligned.
    #[error("the kernel starts at {kstart:#x}, which is not page aligned")]
    KernelNotPageAligned {
        /// The kernel's first address.
        kstart: u64,
    },
    /// Two loadable segments share memory.
    #[error(
        "loadable segments {first} ({first_start:#x}..{first_end:#x}) and {second} \
         (from {second_start:#x}) overlap"
    )]
    OverlappingSegments {
        /// Index of the lower one.
        first: usize,
        /// Index of the other.
        second: usize,
        /// The lower one's start.
        first_start: u64,
        /// Its end.
        first_end: u64,
        /// The other's start.
        second_start: u64,
    },
    /// An address computation overflowed.
    #[error("{what} overflows 64 bits")]
    AddressOverflow {
        /// What was being computed.
        what: &'static str,
    },
    /// HYPERCALL_PAGE is outside the kernel.
    #[error(
        "HYPERCALL_PAGE {va:#x} is outside the kernel ({kstart:#x}..{kend:#x}) or not page aligned"
    )]
    HypercallPageOutsideKernel {
        /// The note's value.
        va: u64,
        /// The kernel's first virtual address.
        kstart: u64,
        /// Its end.
        kend: u64,
    },
    /// The p2m given to render has the wrong length.
    #[error("the p2m has {got} entries, the plan has {expected} pages")]
    P2mLength {
        /// Entries given.
        got: usize,
        /// Pages in the plan.
        expected: u64,
    },
    /// A machine frame does not fit a page-table entry.
    #[error("pfn {pfn:#x} maps to mfn {mfn:#x}, which does not fit a page-table entry")]
    MfnTooLarge {
        /// The guest frame.
        pfn: u64,
        /// Its machine frame.
        mfn: u64,
    },
    /// The shared-info frame given to render does not fit an address.
    #[error("the shared-info mfn {mfn:#x} does not fit a machine address")]
    SharedInfoMfnTooLarge {
        /// The frame.
        mfn: u64,
    },
    /// A kernel segment lies outside the guest's low RAM (PVH).
    #[error(
        "kernel segment {segment} at {start:#x}..{end:#x} is not in the guest's RAM below \
         {ram_end:#x}; give it more memory"
    )]
    SegmentOutsideRam {
        /// Its program header index.
        segment: usize,
        /// Its first byte.
        start: u64,
        /// Its end.
        end: u64,
        /// The end of low RAM.
        ram_end: u64,
    },
    /// The PVH start info would be larger than a plan allows.
    #[error("the memory map has {entries} entries, at most {max} are supported")]
    TooManyMemmapEntries {
        /// Entries.
        entries: usize,
        /// The limit.
        max: usize,
    },
    /// The ACPI tables do not fit their area.
    #[error("the ACPI tables need {need} bytes, the area has {max}")]
    AcpiTooLarge {
        /// Bytes needed.
        need: u64,
        /// Bytes available.
        max: u64,
    },
}
