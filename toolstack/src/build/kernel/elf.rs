//! The kernel's ELF image: its loadable segments, its physical range and its Xen notes.
//!
//! Read-only parsing with the `object` crate (headers and tables), with the checks libelf makes
//! (`libelf-loader.c`, `libelf-dominfo.c`) and some it does not: every loadable segment's file
//! bytes are inside the image, `p_filesz <= p_memsz`, no address range wraps, no two loadable
//! segments share physical memory, and the kernel's span is bounded.
//!
//! A segment is loadable, as in libelf, if it is `PT_LOAD` with any of R, W or X. The kernel's
//! physical range is libelf's `pstart`/`pend`: the lowest `p_paddr` and the highest
//! `p_paddr + p_memsz` of the loadable segments.

use object::elf::{self, FileHeader32, FileHeader64};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::LittleEndian;

use super::error::{magic_of, KernelError, Result};
use super::notes::{NoteSource, XenNotes};
use super::ImageLimits;

/// The ELF class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfClass {
    /// ELFCLASS32.
    Elf32,
    /// ELFCLASS64.
    Elf64,
}

impl ElfClass {
    /// 32 or 64.
    pub fn bits(self) -> u8 {
        match self {
            ElfClass::Elf32 => 32,
            ElfClass::Elf64 => 64,
        }
    }
}

/// A loadable segment, checked: its file bytes are inside the image, `filesz <= memsz`, and
/// neither address range wraps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    index: usize,
    paddr: u64,
    vaddr: u64,
    offset: u64,
    filesz: u64,
    memsz: u64,
    flags: u32,
}

impl LoadSegment {
    /// Its index in the program header table.
    pub fn index(&self) -> usize {
        self.index
    }
    /// `p_paddr`: where it goes in guest-physical memory (before PADDR_OFFSET).
    pub fn paddr(&self) -> u64 {
        self.paddr
    }
    /// `p_vaddr`.
    pub fn vaddr(&self) -> u64 {
        self.vaddr
    }
    /// `p_offset`: where its bytes are in the ELF image.
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// `p_filesz`: how many bytes come from the image; the rest up to `memsz` is zero.
    pub fn filesz(&self) -> u64 {
        self.filesz
    }
    /// `p_memsz`: how much memory it occupies.
    pub fn memsz(&self) -> u64 {
        self.memsz
    }
    /// `p_flags` (PF_R 4, PF_W 2, PF_X 1).
    pub fn flags(&self) -> u32 {
        self.flags
    }
    /// The end of its physical range, `paddr + memsz` (checked not to wrap).
    pub fn paddr_end(&self) -> u64 {
        self.paddr + self.memsz
    }
}

/// A kernel's ELF image, parsed and checked. It does not borrow the image: pair it with the
/// bytes it was parsed from ([`super::KernelImage`] does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfKernel {
    class: ElfClass,
    machine: u16,
    e_entry: u64,
    segments: Vec<LoadSegment>,
    pstart: u64,
    pend: u64,
    notes: XenNotes,
    image_len: u64,
}

impl ElfKernel {
    /// Parses and checks an ELF kernel image.
    ///
    /// # Errors
    ///
    /// One [`KernelError`] variant per problem: the identification bytes
    /// ([`KernelError::NotElf`], [`KernelError::ElfClass`], [`KernelError::ElfEndian`]), the
    /// header and tables ([`KernelError::ElfHeader`], [`KernelError::ProgramHeaders`],
    /// [`KernelError::SectionHeaders`]), the machine ([`KernelError::ElfMachine`]), the segments
    /// (`Segment*`, [`KernelError::NoLoadableSegments`], [`KernelError::KernelSpanTooLarge`]) and
    /// the notes (`Note*`, [`KernelError::TooManyNotes`],
    /// [`KernelError::UnknownRequiredFeature`]). An image without Xen notes parses; it fails
    /// later, in [`ElfKernel::layout`](super::ElfKernel::layout).
    pub fn parse(image: &[u8], limits: &ImageLimits) -> Result<ElfKernel> {
        if !image.starts_with(super::decompress::ELF_MAGIC) {
            return Err(KernelError::NotElf {
                magic: magic_of(image),
            });
        }
        // e_ident: EI_CLASS (4) is 1 for 32-bit, 2 for 64-bit; EI_DATA (5) 1 for little-endian.
        let ident = |i: usize| image.get(i).copied().unwrap_or(0);
        if ident(5) != 1 {
            return Err(KernelError::ElfEndian { data: ident(5) });
        }
        match ident(4) {
            2 => parse_class::<FileHeader64<LittleEndian>>(image, ElfClass::Elf64, limits),
            1 => parse_class::<FileHeader32<LittleEndian>>(image, ElfClass::Elf32, limits),
            class => Err(KernelError::ElfClass { class }),
        }
    }

    /// The class.
    pub fn class(&self) -> ElfClass {
        self.class
    }
    /// `e_machine`: 62 (x86_64) or 3 (i386).
    pub fn machine(&self) -> u16 {
        self.machine
    }
    /// `e_entry`.
    pub fn e_entry(&self) -> u64 {
        self.e_entry
    }
    /// The loadable segments, in program-header order.
    pub fn segments(&self) -> &[LoadSegment] {
        &self.segments
    }
    /// The kernel's physical start: the lowest `p_paddr` (libelf's `pstart`).
    pub fn pstart(&self) -> u64 {
        self.pstart
    }
    /// The kernel's physical end: the highest `p_paddr + p_memsz` (libelf's `pend`).
    pub fn pend(&self) -> u64 {
        self.pend
    }
    /// The Xen notes.
    pub fn notes(&self) -> &XenNotes {
        &self.notes
    }
    /// The length of the image it was parsed from.
    pub fn image_len(&self) -> u64 {
        self.image_len
    }
}

fn parse_class<H: FileHeader<Endian = LittleEndian>>(
    image: &[u8],
    class: ElfClass,
    limits: &ImageLimits,
) -> Result<ElfKernel> {
    let e = LittleEndian;
    let header = H::parse(image).map_err(KernelError::ElfHeader)?;
    let machine = header.e_machine(e).0;
    let x86 = match class {
        ElfClass::Elf64 => elf::EM_X86_64.0,
        ElfClass::Elf32 => elf::EM_386.0,
    };
    if machine != x86 {
        return Err(KernelError::ElfMachine {
            bits: class.bits(),
            machine,
        });
    }
    let image_len = image.len() as u64;
    let phdrs = header
        .program_headers(e, image)
        .map_err(KernelError::ProgramHeaders)?;

    let mut segments = Vec::new();
    let mut note_areas = Vec::new();
    for (index, ph) in phdrs.iter().enumerate() {
        let p_type = ph.p_type(e);
        let offset: u64 = ph.p_offset(e).into();
        let filesz: u64 = ph.p_filesz(e).into();
        let file_range = || {
            within(image, offset, filesz).ok_or(KernelError::SegmentOutsideImage {
                index,
                offset,
                filesz,
                image_len,
            })
        };
        let flags = ph.p_flags(e).0;
        if p_type == elf::PT_LOAD && flags & (elf::PF_R.0 | elf::PF_W.0 | elf::PF_X.0) != 0 {
            file_range()?;
            let memsz: u64 = ph.p_memsz(e).into();
            if filesz > memsz {
                return Err(KernelError::SegmentFileSizeAboveMemSize {
                    index,
                    filesz,
                    memsz,
                });
            }
            let paddr: u64 = ph.p_paddr(e).into();
            let vaddr: u64 = ph.p_vaddr(e).into();
            for (field, addr) in [("p_paddr", paddr), ("p_vaddr", vaddr)] {
                if addr.checked_add(memsz).is_none() {
                    return Err(KernelError::SegmentAddressOverflow {
                        index,
                        field,
                        addr,
                        memsz,
                    });
                }
            }
            segments.push(LoadSegment {
                index,
                paddr,
                vaddr,
                offset,
                filesz,
                memsz,
                flags,
            });
        } else if p_type == elf::PT_NOTE && offset != 0 {
            // libelf skips note segments at offset 0 (some binutils wrote those).
            note_areas.push(file_range()?);
        }
    }
    if segments.is_empty() {
        return Err(KernelError::NoLoadableSegments);
    }
    check_overlap(&segments)?;
    let pstart = segments.iter().map(|s| s.paddr).min().unwrap_or(0);
    let pend = segments.iter().map(|s| s.paddr_end()).max().unwrap_or(0);
    if pend - pstart > limits.max_kernel_span {
        return Err(KernelError::KernelSpanTooLarge {
            pstart,
            pend,
            limit: limits.max_kernel_span,
        });
    }

    let mut notes = XenNotes::default();
    let mut count = 0;
    if notes.read_areas(image, note_areas, &mut count)? > 0 {
        notes.source = NoteSource::Segments;
    } else {
        let shdrs = header
            .section_headers(e, image)
            .map_err(KernelError::SectionHeaders)?;
        let mut areas = Vec::new();
        for (index, sh) in shdrs.iter().enumerate().skip(1) {
            if sh.sh_type(e) != elf::SHT_NOTE {
                continue;
            }
            let offset: u64 = sh.sh_offset(e).into();
            let size: u64 = sh.sh_size(e).into();
            match within(image, offset, size) {
                Some(area) => areas.push(area),
                None => {
                    return Err(KernelError::SectionOutsideImage {
                        index,
                        offset,
                        size,
                        image_len,
                    })
                }
            }
        }
        if notes.read_areas(image, areas, &mut count)? > 0 {
            notes.source = NoteSource::Sections;
        }
    }

    Ok(ElfKernel {
        class,
        machine,
        e_entry: header.e_entry(e).into(),
        segments,
        pstart,
        pend,
        notes,
        image_len,
    })
}

/// `image[offset..offset + len]` as a usize range, if it is inside the image.
fn within(image: &[u8], offset: u64, len: u64) -> Option<(usize, usize)> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= image.len()).then_some((start, end))
}

/// No two loadable segments share physical memory (empty segments share none).
fn check_overlap(segments: &[LoadSegment]) -> Result<()> {
    let mut by_start: Vec<&LoadSegment> = segments.iter().filter(|s| s.memsz > 0).collect();
    by_start.sort_by_key(|s| (s.paddr, s.index));
    for pair in by_start.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.paddr < a.paddr_end() {
            return Err(KernelError::SegmentsOverlap {
                first: a.index,
                first_start: a.paddr,
                first_end: a.paddr_end(),
                second: b.index,
                second_start: b.paddr,
                second_end: b.paddr_end(),
            });
        }
    }
    Ok(())
}
