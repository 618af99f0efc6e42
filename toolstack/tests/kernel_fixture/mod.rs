//! Synthetic kernel images for the loader's tests and benches: a small ELF64 with Xen notes and
//! PT_LOAD segments, assembled by hand (so a test can break any field), a bzImage around it,
//! and each compression Linux uses.
//!
//! The default image has the shape of Debian 12's 6.1 kernel: the same notes (no
//! HYPERCALL_PAGE; FEATURES without a NUL of its own; L1_MFN_VALID of 16 bytes), text, data, a
//! per-cpu segment at virtual 0 and an init segment with bss, loaded from 16 MiB physical.

#![allow(dead_code)]
// each test file uses a different subset
// Test fixtures: the sizes and offsets here are small, by construction.
#![allow(clippy::cast_possible_truncation)]

use std::io::Write;

pub const VIRT_BASE: u64 = 0xffff_ffff_8000_0000;
pub const PSTART: u64 = 0x100_0000;
pub const INIT_P2M: u64 = 0x80_0000_0000;
pub const HV_START_LOW: u64 = 0xffff_8000_0000_0000;
pub const PHYS32_ENTRY: u64 = PSTART + 0x850;
pub const ENTRY: u64 = VIRT_BASE + PSTART + 0x5000 + 0x1c0;

/// ELF header, program header and section header sizes (ELF64).
pub const EHDR: usize = 64;
pub const PHDR: usize = 56;
pub const SHDR: usize = 64;

pub const PT_LOAD: u32 = 1;
pub const PT_NOTE: u32 = 4;
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

/// One program header and the bytes it points at.
#[derive(Clone, Debug)]
pub struct Seg {
    pub p_type: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub paddr: u64,
    pub memsz: u64,
    pub data: Vec<u8>,
}

impl Seg {
    pub fn load(flags: u32, paddr: u64, vaddr: u64, data: Vec<u8>, memsz: u64) -> Seg {
        Seg {
            p_type: PT_LOAD,
            flags,
            vaddr,
            paddr,
            memsz,
            data,
        }
    }
}

/// One note.
pub fn note(owner: &str, kind: u32, desc: &[u8]) -> Vec<u8> {
    let mut name = owner.as_bytes().to_vec();
    name.push(0);
    let mut v = Vec::new();
    v.extend_from_slice(&u32::try_from(name.len()).unwrap().to_le_bytes());
    v.extend_from_slice(&u32::try_from(desc.len()).unwrap().to_le_bytes());
    v.extend_from_slice(&kind.to_le_bytes());
    v.extend_from_slice(&name);
    v.resize(v.len().next_multiple_of(4), 0);
    v.extend_from_slice(desc);
    v.resize(v.len().next_multiple_of(4), 0);
    v
}

pub fn xen(kind: u32, desc: &[u8]) -> Vec<u8> {
    note("Xen", kind, desc)
}

/// Debian 12's kernel's Xen notes, in its order (readelf -n), with the fixture's addresses.
pub fn debian_notes() -> Vec<u8> {
    [
        xen(6, b"linux\0"),
        xen(7, b"2.6\0"),
        xen(5, b"xen-3.0\0"),
        xen(3, &VIRT_BASE.to_le_bytes()),
        xen(15, &INIT_P2M.to_le_bytes()),
        xen(1, &ENTRY.to_le_bytes()),
        xen(10, b"!writable_page_tables|pae_pgdir_above_4gb"),
        xen(17, &0x8801u32.to_le_bytes()),
        xen(9, b"yes\0"),
        xen(8, b"generic\0"),
        xen(13, &[1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]),
        xen(14, &1u32.to_le_bytes()),
        xen(16, &1u32.to_le_bytes()),
        xen(12, &HV_START_LOW.to_le_bytes()),
        xen(4, &0u64.to_le_bytes()),
        note("GNU", 3, &[0x6a; 20]),
        note("Linux", 0x100, &[0; 4]),
        xen(18, &PHYS32_ENTRY.to_le_bytes()),
    ]
    .concat()
}

/// A deterministic byte pattern that compresses, but not to nothing.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|i| {
            if i % 64 < 48 {
                // Text-like runs.
                b"mov %rax,%rbx; call xen_hypercall; "[i % 35]
            } else {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x.to_le_bytes()[0]
            }
        })
        .collect()
}

/// An ELF64 image under construction.
#[derive(Clone, Debug)]
pub struct ElfBuilder {
    pub class: u8,
    pub data_encoding: u8,
    pub machine: u16,
    pub entry: u64,
    pub segments: Vec<Seg>,
    /// Bytes for a SHT_NOTE section (and a section header table), if any.
    pub note_section: Option<Vec<u8>>,
}

/// Where things ended up in a built image.
#[derive(Clone, Debug)]
pub struct Built {
    pub bytes: Vec<u8>,
    /// p_offset of each segment.
    pub offsets: Vec<u64>,
    /// sh_offset of the note section, if any.
    pub note_section_offset: Option<u64>,
}

/// The text segment's bytes: a pattern, with the notes at 0x2800. As in a real vmlinux, the
/// note segment lies inside the loaded text, so the kernel finds its notes in its own memory.
pub fn debian_text() -> Vec<u8> {
    let mut text = pattern(0x3000, 1);
    let notes = debian_notes();
    text[0x2800..0x2800 + notes.len()].copy_from_slice(&notes);
    text
}

impl ElfBuilder {
    /// Debian's shape, scaled down: text, data (with bss), per-cpu (virtual 0), init (with bss)
    /// and the notes.
    pub fn debian_like() -> ElfBuilder {
        let p = PSTART;
        let v = VIRT_BASE + PSTART;
        let text = debian_text();
        ElfBuilder {
            class: 2,
            data_encoding: 1,
            machine: 62,
            entry: PSTART,
            segments: vec![
                Seg::load(PF_R | PF_X, p, v, text, 0x3000),
                Seg::load(
                    PF_R | PF_W,
                    p + 0x3000,
                    v + 0x3000,
                    pattern(0x1000, 2),
                    0x1800,
                ),
                Seg::load(PF_R | PF_W, p + 0x4800, 0, pattern(0x400, 3), 0x800),
                Seg::load(
                    PF_R | PF_W | PF_X,
                    p + 0x5000,
                    v + 0x5000,
                    pattern(0x1000, 4),
                    0x3000,
                ),
                Seg {
                    p_type: PT_NOTE,
                    flags: PF_R,
                    vaddr: v + 0x2800,
                    paddr: p + 0x2800,
                    memsz: 0,
                    data: debian_notes(),
                },
            ],
            note_section: None,
        }
    }

    /// The same image with its notes in a SHT_NOTE section only.
    pub fn notes_in_section(mut self) -> ElfBuilder {
        let notes = self
            .segments
            .iter()
            .position(|s| s.p_type == PT_NOTE)
            .map(|i| self.segments.remove(i).data);
        self.note_section = notes;
        self
    }

    /// Replaces the note segment's bytes.
    pub fn with_notes(mut self, notes: Vec<u8>) -> ElfBuilder {
        for s in &mut self.segments {
            if s.p_type == PT_NOTE {
                s.data = notes.clone();
            }
        }
        self
    }

    pub fn build(&self) -> Built {
        let phnum = self.segments.len();
        let mut out = vec![0u8; EHDR + PHDR * phnum];
        let mut offsets = Vec::new();
        for s in &self.segments {
            out.resize(out.len().next_multiple_of(16), 0);
            offsets.push(out.len() as u64);
            out.extend_from_slice(&s.data);
        }
        let mut note_section_offset = None;
        let mut shoff = 0u64;
        let mut shnum = 0u16;
        if let Some(notes) = &self.note_section {
            out.resize(out.len().next_multiple_of(16), 0);
            note_section_offset = Some(out.len() as u64);
            let at = out.len() as u64;
            out.extend_from_slice(notes);
            out.resize(out.len().next_multiple_of(16), 0);
            shoff = out.len() as u64;
            shnum = 2;
            // Section 0 (null), section 1: SHT_NOTE.
            out.extend_from_slice(&[0u8; SHDR]);
            let mut sh = [0u8; SHDR];
            sh[4..8].copy_from_slice(&7u32.to_le_bytes()); // sh_type = SHT_NOTE
            sh[24..32].copy_from_slice(&at.to_le_bytes()); // sh_offset
            sh[32..40].copy_from_slice(&(notes.len() as u64).to_le_bytes()); // sh_size
            sh[48..56].copy_from_slice(&4u64.to_le_bytes()); // sh_addralign
            out.extend_from_slice(&sh);
        }
        // The ELF header.
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = self.class;
        out[5] = self.data_encoding;
        out[6] = 1; // EV_CURRENT
        out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out[18..20].copy_from_slice(&self.machine.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[24..32].copy_from_slice(&self.entry.to_le_bytes());
        out[32..40].copy_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
        out[40..48].copy_from_slice(&shoff.to_le_bytes());
        out[52..54].copy_from_slice(&(EHDR as u16).to_le_bytes());
        out[54..56].copy_from_slice(&(PHDR as u16).to_le_bytes());
        out[56..58].copy_from_slice(&u16::try_from(phnum).unwrap().to_le_bytes());
        out[58..60].copy_from_slice(&(SHDR as u16).to_le_bytes());
        out[60..62].copy_from_slice(&shnum.to_le_bytes());
        // The program headers.
        for (i, (s, &off)) in self.segments.iter().zip(&offsets).enumerate() {
            let h = EHDR + PHDR * i;
            out[h..h + 4].copy_from_slice(&s.p_type.to_le_bytes());
            out[h + 4..h + 8].copy_from_slice(&s.flags.to_le_bytes());
            out[h + 8..h + 16].copy_from_slice(&off.to_le_bytes());
            out[h + 16..h + 24].copy_from_slice(&s.vaddr.to_le_bytes());
            out[h + 24..h + 32].copy_from_slice(&s.paddr.to_le_bytes());
            out[h + 32..h + 40].copy_from_slice(&(s.data.len() as u64).to_le_bytes());
            out[h + 40..h + 48].copy_from_slice(&s.memsz.to_le_bytes());
            out[h + 48..h + 56].copy_from_slice(&0x1000u64.to_le_bytes());
        }
        Built {
            bytes: out,
            offsets,
            note_section_offset,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.build().bytes
    }
}

/// Program header fields, by their offset in an ELF64 program header.
#[derive(Clone, Copy, Debug)]
pub enum PhField {
    Type = 0,
    Flags = 4,
    Offset = 8,
    Vaddr = 16,
    Paddr = 24,
    Filesz = 32,
    Memsz = 40,
}

/// Overwrites a field of program header `index` of an ELF64 image.
pub fn set_phdr(elf: &mut [u8], index: usize, field: PhField, value: u64) {
    let at = EHDR + PHDR * index + field as usize;
    match field {
        PhField::Type | PhField::Flags => {
            elf[at..at + 4].copy_from_slice(&u32::try_from(value).unwrap().to_le_bytes())
        }
        _ => elf[at..at + 8].copy_from_slice(&value.to_le_bytes()),
    }
}

// -- compression ------------------------------------------------------------------------------

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// xz as Linux's `scripts/xz_wrap.sh` makes it for x86: BCJ-x86 then LZMA2, CRC-32 checks.
pub fn xz(data: &[u8]) -> Vec<u8> {
    xz_with_dict(data, 1 << 20)
}

pub fn xz_with_dict(data: &[u8], dict_size: u32) -> Vec<u8> {
    use lzma_rust2::{CheckType, FilterType, XzOptions, XzWriter};
    let mut opts = XzOptions::with_preset(1);
    opts.lzma_options.dict_size = dict_size;
    opts.set_check_sum_type(CheckType::Crc32);
    opts.prepend_pre_filter(FilterType::BcjX86, 0);
    let mut w = XzWriter::new(Vec::new(), opts).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

/// lz4's legacy frame, as `lz4 -l` writes it: the magic, then chunks of at most 8 MiB, each its
/// compressed size and an lz4 block.
pub fn lz4_legacy(data: &[u8]) -> Vec<u8> {
    let mut out = 0x184c_2102u32.to_le_bytes().to_vec();
    for chunk in data.chunks(8 << 20) {
        let block = lz4_flex::block::compress(chunk);
        out.extend_from_slice(&u32::try_from(block.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&block);
    }
    out
}

/// The compressions, by name, with their encoders.
/// An encoder.
pub type Encode = fn(&[u8]) -> Vec<u8>;

pub const CODECS: &[(&str, Encode)] = &[
    ("gzip", gzip),
    ("xz", xz),
    ("zstd", zstd),
    ("lz4", lz4_legacy),
];

/// A bzImage payload as Linux makes it: the compressed stream, then (except for gzip, whose
/// trailer already is it) the unpacked size, little-endian.
pub fn payload(codec: &str, data: &[u8]) -> Vec<u8> {
    let encode = CODECS.iter().find(|(n, _)| *n == codec).unwrap().1;
    let mut p = encode(data);
    if codec != "gzip" {
        p.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
    }
    p
}

/// bzImage header fields.
#[derive(Clone, Copy, Debug)]
pub struct BzParams {
    pub setup_sects: u8,
    pub protocol: u16,
    /// From the start of the protected-mode code.
    pub payload_offset: u32,
}

impl Default for BzParams {
    /// Debian 12's kernel's values.
    fn default() -> Self {
        BzParams {
            setup_sects: 0x27,
            protocol: 0x020f,
            payload_offset: 0x2cc,
        }
    }
}

/// A bzImage carrying `payload` (see [`payload`]), with some code after it, as the real one
/// has. With a payload offset inside the setup header (which only a broken image has), the
/// payload overwrites the header's bytes.
pub fn bzimage(payload: &[u8], params: BzParams) -> Vec<u8> {
    let setup = (usize::from(params.setup_sects) + 1) * 512;
    let start = setup + params.payload_offset as usize;
    let mut out = vec![0x90u8; (start + payload.len()).max(0x250)];
    out[0x1f1] = params.setup_sects;
    out[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    out[0x202..0x206].copy_from_slice(b"HdrS");
    out[0x206..0x208].copy_from_slice(&params.protocol.to_le_bytes());
    out[0x248..0x24c].copy_from_slice(&params.payload_offset.to_le_bytes());
    out[0x24c..0x250].copy_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
    out[start..start + payload.len()].copy_from_slice(payload);
    out.extend_from_slice(&[0xcc; 0x1d0]);
    out
}

/// Where the payload of a bzImage built with `params` starts.
pub fn payload_start(params: BzParams) -> usize {
    (usize::from(params.setup_sects) + 1) * 512 + params.payload_offset as usize
}

/// The default ELF, compressed with `codec`, in a bzImage with Debian's header values.
pub fn debian_like_bzimage(codec: &str) -> (Vec<u8>, Vec<u8>) {
    let elf = ElfBuilder::debian_like().bytes();
    (bzimage(&payload(codec, &elf), BzParams::default()), elf)
}
