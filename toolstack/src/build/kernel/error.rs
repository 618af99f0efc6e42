//! Why a kernel image, an initrd or a command line was refused: one variant per problem, each
//! naming the offset, the field and the value at fault. Offsets are in the file the caller gave,
//! except for the ELF checks, whose offsets are in the ELF image (the decompressed payload of a
//! compressed kernel).

use std::io;
use std::path::PathBuf;

use super::Compression;

/// A decoder's own description of corrupt data (xz, gzip and zstd report it as an I/O error,
/// lz4 as its own type).
pub type DecodeError = Box<dyn std::error::Error + Send + Sync>;

/// Why a kernel image, an initrd or a command line was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The system's answer.
        #[source]
        source: io::Error,
    },
    /// The kernel file is bigger than [`ImageLimits::max_image`](super::ImageLimits).
    #[error("the kernel image is {size} bytes, above the limit of {limit} bytes")]
    ImageTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The initrd is bigger than [`ImageLimits::max_initrd`](super::ImageLimits).
    #[error("the initrd is {size} bytes, above the limit of {limit} bytes")]
    InitrdTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The command line does not fit a PV guest's `start_info.cmd_line`.
    #[error(
        "the kernel command line is {len} bytes; a guest's start_info holds at most {max} bytes \
         and the terminating NUL"
    )]
    CommandLineTooLong {
        /// Its length, without a NUL.
        len: usize,
        /// The most it may have, without the NUL.
        max: usize,
    },
    /// The command line has a NUL byte inside, which would cut it short in the guest.
    #[error("the kernel command line has a NUL byte at offset {offset}")]
    CommandLineNul {
        /// Where.
        offset: usize,
    },
    /// Neither ELF, nor a bzImage, nor a compression this loader knows.
    #[error(
        "not a kernel image: no ELF magic at offset 0, no bzImage header (\"HdrS\" at 0x202), \
         and no known compression magic; the image starts with {magic:#010x}"
    )]
    UnknownFormat {
        /// The first four bytes, big-endian (so the hex reads in file order), zero-padded.
        magic: u32,
    },
    /// The compression is one Xen knows but this loader does not (bzip2, lzma, lzo).
    #[error(
        "the data at offset {offset:#x} is {compression}-compressed, which this loader does not \
         unpack (it unpacks gzip, xz, zstd and lz4)"
    )]
    UnsupportedCompression {
        /// Where the compressed data starts.
        offset: u64,
        /// Its compression.
        compression: &'static str,
    },
    /// "HdrS" is at 0x202, but the file ends inside the setup header.
    #[error(
        "the bzImage setup header runs to {need:#x} (payload_length at 0x24c), but the image is \
         only {len:#x} bytes"
    )]
    BzImageTruncated {
        /// The image's length.
        len: u64,
        /// How much the header needs.
        need: u64,
    },
    /// The boot protocol predates the embedded ELF payload.
    #[error(
        "bzImage boot protocol {}.{:02} (the version field at 0x206 is {version:#06x}) is older \
         than 2.08, the first that carries an ELF payload",
        version >> 8,
        version & 0xff
    )]
    BootProtocolTooOld {
        /// The version field.
        version: u16,
    },
    /// The payload the header describes is not inside the image.
    #[error(
        "the bzImage payload at {offset:#x} ((setup_sects@0x1f1 + 1) * 512 + \
         payload_offset@0x248) with payload_length@0x24c {length:#x} ends past the image's \
         {image_len:#x} bytes"
    )]
    PayloadOutOfBounds {
        /// Where it starts.
        offset: u64,
        /// Its length field.
        length: u64,
        /// The image's length.
        image_len: u64,
    },
    /// The payload is too short to hold a magic number and the size field after it.
    #[error("the bzImage payload at {offset:#x} is only {length} bytes long")]
    PayloadTooShort {
        /// Where it starts.
        offset: u64,
        /// Its length.
        length: u64,
    },
    /// The payload is neither ELF nor compressed in a way this loader recognises.
    #[error(
        "the bzImage payload at {offset:#x} starts with {magic:#010x}, which is neither ELF nor \
         a known compression"
    )]
    UnknownPayload {
        /// Where it starts.
        offset: u64,
        /// Its first four bytes, big-endian (the hex reads in file order), zero-padded.
        magic: u32,
    },
    /// The size field says the data unpacks to more than the limit; nothing was allocated.
    #[error(
        "the {compression} data says it unpacks to {declared} bytes (its last four bytes), above \
         the limit of {limit} bytes"
    )]
    DeclaredSizeTooLarge {
        /// The compression.
        compression: Compression,
        /// What the size field says.
        declared: u64,
        /// The limit.
        limit: u64,
    },
    /// The data (with no size field) unpacks to more than the limit; decoding stopped there.
    #[error("the {compression} data unpacks to more than the limit of {limit} bytes")]
    DecompressedTooLarge {
        /// The compression.
        compression: Compression,
        /// The limit.
        limit: u64,
    },
    /// The data unpacks to more than its size field says; decoding stopped there.
    #[error(
        "the {compression} data unpacks to more than the {declared} bytes its size field says"
    )]
    LargerThanDeclared {
        /// The compression.
        compression: Compression,
        /// What the size field says.
        declared: u64,
    },
    /// The data unpacks to less than its size field says.
    #[error(
        "the {compression} data unpacks to {actual} bytes, but its size field says {declared}"
    )]
    SmallerThanDeclared {
        /// The compression.
        compression: Compression,
        /// What the size field says.
        declared: u64,
        /// What it unpacked to.
        actual: u64,
    },
    /// The decoder would need a history window (xz dictionary, zstd window) above the limit.
    #[error(
        "the {compression} data needs a decoding window above the limit of {limit} bytes \
         (ImageLimits::max_window)"
    )]
    WindowTooLarge {
        /// The compression.
        compression: Compression,
        /// The limit.
        limit: u64,
    },
    /// The decoder found the compressed data corrupt.
    #[error("the {compression} data at offset {offset:#x} is corrupt")]
    CorruptData {
        /// The compression.
        compression: Compression,
        /// Where the compressed data starts.
        offset: u64,
        /// The decoder's description.
        #[source]
        source: DecodeError,
    },
    /// A zstd frame's content checksum does not match what it unpacked to.
    #[error(
        "the zstd data at offset {offset:#x} unpacks to content whose checksum {actual:#010x} is \
         not the frame's {expected:#010x}"
    )]
    ZstdChecksum {
        /// Where the compressed data starts.
        offset: u64,
        /// The frame's checksum.
        expected: u32,
        /// The content's.
        actual: u32,
    },
    /// The lz4 data does not start with the legacy frame's magic number.
    #[error(
        "the lz4 data at offset {offset:#x} does not start with the legacy frame magic \
         0x184c2102 (Linux compresses kernels with lz4 -l)"
    )]
    Lz4NotLegacy {
        /// Where the data starts.
        offset: u64,
    },
    /// The lz4 data ends inside a chunk header, or has no chunk.
    #[error("the lz4 data ends at offset {offset:#x}, inside a chunk header or before any chunk")]
    Lz4Truncated {
        /// Where it ends.
        offset: u64,
    },
    /// An lz4 chunk's size field points past the data.
    #[error(
        "the lz4 chunk at offset {offset:#x} says it is {size} bytes, but only {remaining} remain"
    )]
    Lz4ChunkOutOfBounds {
        /// Where its size field is.
        offset: u64,
        /// What the field says.
        size: u64,
        /// What is left of the data.
        remaining: u64,
    },
    /// An lz4 chunk's size field is above the legacy format's bound.
    #[error(
        "the lz4 chunk at offset {offset:#x} says it is {size} bytes; legacy-frame chunks are at \
         most {max}"
    )]
    Lz4ChunkTooLarge {
        /// Where its size field is.
        offset: u64,
        /// What the field says.
        size: u64,
        /// The bound.
        max: u64,
    },
    /// The unpacked payload of a compressed kernel is not an ELF image.
    #[error(
        "the {compression} data unpacks to something that is not an ELF image (it starts with \
         {magic:#010x})"
    )]
    UnpackedNotElf {
        /// The compression.
        compression: Compression,
        /// Its first four bytes, big-endian (the hex reads in file order), zero-padded.
        magic: u32,
    },
    /// The ELF identification bytes are wrong.
    #[error("not an ELF image: it starts with {magic:#010x}, not 0x7f454c46 (\\x7fELF)")]
    NotElf {
        /// The first four bytes, big-endian (the hex reads in file order), zero-padded.
        magic: u32,
    },
    /// The ELF class byte is neither 32- nor 64-bit.
    #[error("ELF class {class} (byte 4) is neither 1 (32-bit) nor 2 (64-bit)")]
    ElfClass {
        /// The class byte.
        class: u8,
    },
    /// The ELF image is not little-endian, as every x86 kernel is.
    #[error("ELF data encoding {data} (byte 5) is not 1 (little-endian), as x86 kernels are")]
    ElfEndian {
        /// The data-encoding byte.
        data: u8,
    },
    /// The ELF header could not be read.
    #[error("the ELF header is corrupt")]
    ElfHeader(#[source] object::read::Error),
    /// The ELF image is not for x86.
    #[error(
        "ELF machine {machine} (e_machine) in a {bits}-bit image: x86 kernels are EM_X86_64 (62) \
         in 64-bit images or EM_386 (3) in 32-bit ones"
    )]
    ElfMachine {
        /// The class, 32 or 64.
        bits: u8,
        /// e_machine.
        machine: u16,
    },
    /// The program header table is not inside the image.
    #[error("the ELF program header table is corrupt (e_phoff, e_phnum, e_phentsize)")]
    ProgramHeaders(#[source] object::read::Error),
    /// The section header table is not inside the image.
    #[error("the ELF section header table is corrupt (e_shoff, e_shnum, e_shentsize)")]
    SectionHeaders(#[source] object::read::Error),
    /// A segment's file bytes are not inside the image.
    #[error(
        "ELF program header {index}: p_offset {offset:#x} + p_filesz {filesz:#x} lies outside \
         the {image_len:#x}-byte image"
    )]
    SegmentOutsideImage {
        /// Its index in the table.
        index: usize,
        /// p_offset.
        offset: u64,
        /// p_filesz.
        filesz: u64,
        /// The image's length.
        image_len: u64,
    },
    /// A loadable segment has more file bytes than memory.
    #[error("ELF program header {index}: p_filesz {filesz:#x} is above p_memsz {memsz:#x}")]
    SegmentFileSizeAboveMemSize {
        /// Its index in the table.
        index: usize,
        /// p_filesz.
        filesz: u64,
        /// p_memsz.
        memsz: u64,
    },
    /// A loadable segment's address range wraps around.
    #[error("ELF program header {index}: {field} {addr:#x} + p_memsz {memsz:#x} overflows")]
    SegmentAddressOverflow {
        /// Its index in the table.
        index: usize,
        /// `p_paddr` or `p_vaddr`.
        field: &'static str,
        /// Its value.
        addr: u64,
        /// p_memsz.
        memsz: u64,
    },
    /// Two loadable segments share physical memory.
    #[error(
        "ELF program headers {first} and {second} overlap in physical memory: \
         [{first_start:#x}, {first_end:#x}) and [{second_start:#x}, {second_end:#x})"
    )]
    SegmentsOverlap {
        /// The one that starts lower.
        first: usize,
        /// Its start (p_paddr).
        first_start: u64,
        /// Its end (p_paddr + p_memsz).
        first_end: u64,
        /// The other.
        second: usize,
        /// Its start.
        second_start: u64,
        /// Its end.
        second_end: u64,
    },
    /// No PT_LOAD segment with any of R, W, X: nothing to load.
    #[error("the ELF image has no loadable segment (PT_LOAD with R, W or X)")]
    NoLoadableSegments,
    /// The kernel spans more physical memory than the limit.
    #[error(
        "the kernel spans physical memory [{pstart:#x}, {pend:#x}), above the limit of {limit} \
         bytes (ImageLimits::max_kernel_span)"
    )]
    KernelSpanTooLarge {
        /// The lowest p_paddr.
        pstart: u64,
        /// The highest p_paddr + p_memsz.
        pend: u64,
        /// The limit.
        limit: u64,
    },
    /// A note section's bytes are not inside the image.
    #[error(
        "ELF section {index} (SHT_NOTE): sh_offset {offset:#x} + sh_size {size:#x} lies outside \
         the {image_len:#x}-byte image"
    )]
    SectionOutsideImage {
        /// Its index in the table.
        index: usize,
        /// sh_offset.
        offset: u64,
        /// sh_size.
        size: u64,
        /// The image's length.
        image_len: u64,
    },
    /// A note segment or section ends inside a note header.
    #[error(
        "ELF note at {offset:#x}: only {remaining} bytes remain of its segment or section, and a \
         note header is 12"
    )]
    NoteHeaderTruncated {
        /// Where the note starts.
        offset: u64,
        /// What is left.
        remaining: u64,
    },
    /// A note's name or descriptor runs past its segment or section.
    #[error(
        "ELF note at {offset:#x} (namesz {namesz}, descsz {descsz}) runs past the end of its \
         segment or section at {end:#x}"
    )]
    NoteOutOfBounds {
        /// Where the note starts.
        offset: u64,
        /// Its namesz.
        namesz: u32,
        /// Its descsz.
        descsz: u32,
        /// Where its segment or section ends.
        end: u64,
    },
    /// More notes than libelf's limit (65536).
    #[error("the ELF image has more than {limit} notes")]
    TooManyNotes {
        /// The limit.
        limit: usize,
    },
    /// A Xen note holds a number of a size that is not one.
    #[error(
        "Xen ELF note {note} at {offset:#x}: its descriptor is {size} bytes, but it must be \
         {expected}"
    )]
    NoteSize {
        /// Which note.
        note: &'static str,
        /// Where the note starts.
        offset: u64,
        /// Its descsz.
        size: u32,
        /// What it must be.
        expected: &'static str,
    },
    /// The FEATURES note requires a feature this builder does not know.
    #[error(
        "the kernel requires the Xen feature {feature:?} (\"!{feature}\" in its FEATURES note), \
         which this builder does not know"
    )]
    UnknownRequiredFeature {
        /// The feature's name.
        feature: String,
    },
    /// No Xen notes at all: not a Xen guest kernel.
    #[error(
        "the ELF image has no Xen notes (owner \"Xen\" in PT_NOTE segments or SHT_NOTE \
         sections): it is not a Xen guest kernel"
    )]
    NoXenNotes,
    /// A PV kernel that is neither Linux nor for the generic loader.
    #[error(
        "the kernel's GUEST_OS note is {guest_os:?} and its LOADER note {loader:?}; Xen builds PV \
         guests only from GUEST_OS \"linux\" or LOADER \"generic\" kernels"
    )]
    UnsupportedGuest {
        /// The GUEST_OS note, if any.
        guest_os: Option<String>,
        /// The LOADER note, if any.
        loader: Option<String>,
    },
    /// A PV kernel for another interface than Xen 3.0's.
    #[error(
        "the kernel's XEN_VERSION note is {xen_version:?}; Xen builds PV guests only from \
         kernels for \"xen-3.0\""
    )]
    UnsupportedXenVersion {
        /// The XEN_VERSION note, if any.
        xen_version: Option<String>,
    },
    /// A PV kernel whose PADDR_OFFSET has no VIRT_BASE to be an offset from.
    #[error("the kernel has a PADDR_OFFSET note ({paddr_offset:#x}) but no VIRT_BASE note")]
    PaddrOffsetWithoutVirtBase {
        /// The PADDR_OFFSET note.
        paddr_offset: u64,
    },
    /// The kernel's virtual range wraps around.
    #[error(
        "the kernel's virtual range [{kstart:#x}, {kend:#x}) (its physical range moved by \
         VIRT_BASE - PADDR_OFFSET) wraps around"
    )]
    KernelRangeWraps {
        /// Its start.
        kstart: u64,
        /// Its end.
        kend: u64,
    },
    /// The entry point is outside the kernel.
    #[error(
        "the kernel's entry point {entry:#x} ({source_field}) is outside [{kstart:#x}, {kend:#x}]"
    )]
    EntryOutOfRange {
        /// The entry point.
        entry: u64,
        /// Where it came from: the ENTRY or PHYS32_ENTRY note, or e_entry.
        source_field: &'static str,
        /// The kernel's start.
        kstart: u64,
        /// The kernel's end.
        kend: u64,
    },
    /// VIRT_BASE is above the kernel's first byte.
    #[error("the kernel's VIRT_BASE {virt_base:#x} is above its start {kstart:#x}")]
    VirtBaseAboveKernel {
        /// The VIRT_BASE note.
        virt_base: u64,
        /// The kernel's start.
        kstart: u64,
    },
    /// INIT_P2M puts the p2m inside the kernel.
    #[error("the kernel's INIT_P2M {p2m_base:#x} is inside the kernel [{kstart:#x}, {kend:#x})")]
    P2mInsideKernel {
        /// The INIT_P2M note.
        p2m_base: u64,
        /// The kernel's start.
        kstart: u64,
        /// The kernel's end.
        kend: u64,
    },
    /// A PVH guest needs the PHYS32_ENTRY note.
    #[error("the kernel has no PHYS32_ENTRY note, so it cannot boot as a PVH guest")]
    NoPhys32Entry,
    /// PHYS32_ENTRY above 4 GiB, where a 32-bit entry cannot be.
    #[error("the kernel's PHYS32_ENTRY {entry:#x} is above 4 GiB")]
    Phys32EntryAbove4G {
        /// The PHYS32_ENTRY note.
        entry: u64,
    },
    /// The kernel will run only as dom0.
    #[error(
        "the kernel requires the dom0 feature (\"!dom0\" in its FEATURES note): it cannot run as \
         an unprivileged guest"
    )]
    RequiresDom0,
    /// PV guests are built for x86_64 only.
    #[error(
        "PV guests are built for x86_64 only; this kernel is a {bits}-bit ELF image for machine \
         {machine}"
    )]
    PvNeedsX86_64 {
        /// The class, 32 or 64.
        bits: u8,
        /// e_machine.
        machine: u16,
    },
}

/// A Result with a [`KernelError`].
pub type Result<T, E = KernelError> = std::result::Result<T, E>;

/// The first four bytes of `bytes`, big-endian, zero-padded: for messages, where the hex then
/// reads in file order.
pub(crate) fn magic_of(bytes: &[u8]) -> u32 {
    let mut m = [0u8; 4];
    let n = bytes.len().min(4);
    m[..n].copy_from_slice(&bytes[..n]);
    u32::from_be_bytes(m)
}
