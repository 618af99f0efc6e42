//! The kernel loader on synthetic images: every field of a good image, in every container and
//! compression, and every error, each from an image broken in exactly one place.

// Test images are small: their sizes and offsets fit every integer type.
#![allow(clippy::cast_possible_truncation)]

mod kernel_fixture;

use kernel_fixture::*;
use toolstack::build::kernel::{
    decompress, unpack, CacheOutcome, CommandLine, Compression, ElfClass, ElfKernel, GuestKind,
    ImageFormat, ImageLimits, Initrd, KernelError, KernelImage, NoteSource, OtherNote, XenFeatures,
};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

fn load(input: Vec<u8>) -> Result<KernelImage, KernelError> {
    load_with(input, &ImageLimits::default())
}

fn load_with(input: Vec<u8>, limits: &ImageLimits) -> Result<KernelImage, KernelError> {
    KernelImage::load(input, limits, None).map(|l| {
        assert!(matches!(
            l.cache,
            CacheOutcome::Off | CacheOutcome::NotPacked
        ));
        l.image
    })
}

fn elf_err(elf: Vec<u8>) -> KernelError {
    load(elf).expect_err("the broken image loaded")
}

/// Checks everything about the default image, whatever it came in.
fn check_debian_like(image: &KernelImage) {
    let elf = image.elf();
    assert_eq!(elf.class(), ElfClass::Elf64);
    assert_eq!(elf.machine(), 62);
    assert_eq!(elf.e_entry(), PSTART);
    assert_eq!(elf.pstart(), PSTART);
    assert_eq!(elf.pend(), PSTART + 0x8000);
    let segs: Vec<_> = image.segments().collect();
    assert_eq!(segs.len(), 4, "the note segment is not loadable");
    let expect = [
        (
            0,
            PSTART,
            VIRT_BASE + PSTART,
            0x3000,
            0x3000,
            PF_R | PF_X,
            1u8,
        ),
        (
            1,
            PSTART + 0x3000,
            VIRT_BASE + PSTART + 0x3000,
            0x1000,
            0x1800,
            PF_R | PF_W,
            2,
        ),
        (2, PSTART + 0x4800, 0, 0x400, 0x800, PF_R | PF_W, 3),
        (
            3,
            PSTART + 0x5000,
            VIRT_BASE + PSTART + 0x5000,
            0x1000,
            0x3000,
            PF_R | PF_W | PF_X,
            4,
        ),
    ];
    for ((seg, data), (index, paddr, vaddr, filesz, memsz, flags, seed)) in segs.iter().zip(expect)
    {
        assert_eq!(seg.index(), index);
        assert_eq!(seg.paddr(), paddr, "segment {index}");
        assert_eq!(seg.vaddr(), vaddr, "segment {index}");
        assert_eq!(seg.filesz(), filesz, "segment {index}");
        assert_eq!(seg.memsz(), memsz, "segment {index}");
        assert_eq!(seg.flags(), flags, "segment {index}");
        assert_eq!(seg.paddr_end(), paddr + memsz);
        let want = if index == 0 {
            kernel_fixture::debian_text()
        } else {
            pattern(filesz as usize, seed)
        };
        assert_eq!(*data, &want[..], "segment {index}'s bytes");
        assert_eq!(
            &image.elf_bytes()[seg.offset() as usize..][..filesz as usize],
            *data
        );
    }

    let n = image.notes();
    assert_eq!(n.source, NoteSource::Segments);
    assert_eq!(n.entry, Some(ENTRY));
    assert_eq!(
        n.hypercall_page, None,
        "Debian's kernel has no HYPERCALL_PAGE"
    );
    assert_eq!(n.virt_base, Some(VIRT_BASE));
    assert_eq!(n.paddr_offset, Some(0));
    assert_eq!(n.xen_version.as_deref(), Some("xen-3.0"));
    assert_eq!(n.guest_os.as_deref(), Some("linux"));
    assert_eq!(n.guest_version.as_deref(), Some("2.6"));
    assert_eq!(n.loader.as_deref(), Some("generic"));
    assert_eq!(n.pae_mode.as_deref(), Some("yes"));
    assert_eq!(
        n.features.as_deref(),
        Some("!writable_page_tables|pae_pgdir_above_4gb")
    );
    assert_eq!(n.bsd_symtab, None);
    assert_eq!(n.hv_start_low, Some(HV_START_LOW));
    assert_eq!(n.suspend_cancel, Some(1));
    assert_eq!(n.init_p2m, Some(INIT_P2M));
    assert_eq!(n.mod_start_pfn, Some(1));
    assert_eq!(n.supported_features, Some(0x8801));
    assert_eq!(n.phys32_entry, Some(PHYS32_ENTRY));
    assert_eq!(
        n.required,
        XenFeatures::from_bits(1 << XenFeatures::WRITABLE_PAGE_TABLES)
    );
    assert_eq!(
        n.supported.bits(),
        0x8801 | 1 << XenFeatures::WRITABLE_PAGE_TABLES | 1 << XenFeatures::PAE_PGDIR_ABOVE_4GB
    );
    assert_eq!(
        n.other,
        vec![OtherNote {
            kind: 13,
            desc: vec![1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
        }]
    );

    let pv = image.layout(GuestKind::Pv).unwrap();
    assert_eq!(pv.kind, GuestKind::Pv);
    assert_eq!(pv.virt_base, VIRT_BASE);
    assert_eq!(pv.paddr_offset, 0);
    assert_eq!(pv.virt_offset(), VIRT_BASE);
    assert_eq!(pv.pstart, PSTART);
    assert_eq!(pv.pend, PSTART + 0x8000);
    assert_eq!(pv.virt_kstart, VIRT_BASE + PSTART);
    assert_eq!(pv.virt_kend, VIRT_BASE + PSTART + 0x8000);
    assert_eq!(pv.entry, ENTRY);
    assert_eq!(pv.p2m_base, Some(INIT_P2M));
    assert_eq!(pv.hypercall_page, None);

    let pvh = image.layout(GuestKind::Pvh).unwrap();
    assert_eq!(pvh.kind, GuestKind::Pvh);
    assert_eq!((pvh.virt_base, pvh.paddr_offset), (0, 0));
    assert_eq!((pvh.virt_kstart, pvh.virt_kend), (PSTART, PSTART + 0x8000));
    assert_eq!(pvh.entry, PHYS32_ENTRY);
}

// -- good images ------------------------------------------------------------------------------

#[test]
fn an_elf_image_loads_with_every_field() {
    let elf = ElfBuilder::debian_like().bytes();
    let image = load(elf.clone()).unwrap();
    assert_eq!(image.format(), ImageFormat::Elf);
    assert_eq!(image.elf_bytes(), &elf[..]);
    check_debian_like(&image);
}

#[test]
fn a_bzimage_loads_in_every_compression() {
    for &(codec, _) in CODECS {
        let (bz, elf) = debian_like_bzimage(codec);
        let image = load(bz).unwrap_or_else(|e| panic!("{codec}: {e}"));
        let ImageFormat::BzImage {
            header,
            payload_offset,
            compression,
        } = image.format()
        else {
            panic!("{codec}: {:?}", image.format());
        };
        assert_eq!(header.setup_sects, 0x27);
        assert_eq!(header.protocol, 0x020f);
        assert_eq!(header.payload_offset, 0x2cc);
        assert_eq!(payload_offset, 0x52cc, "Debian's: (0x27 + 1) * 512 + 0x2cc");
        assert_eq!(compression.map(Compression::name), Some(codec));
        assert_eq!(image.elf_bytes(), &elf[..], "{codec}");
        check_debian_like(&image);
    }
}

#[test]
fn a_bzimage_may_carry_an_uncompressed_elf() {
    let elf = ElfBuilder::debian_like().bytes();
    let image = load(bzimage(&elf, BzParams::default())).unwrap();
    assert!(matches!(
        image.format(),
        ImageFormat::BzImage {
            compression: None,
            ..
        }
    ));
    assert_eq!(image.elf_bytes(), &elf[..]);
    check_debian_like(&image);
}

#[test]
fn a_compressed_elf_file_loads_in_every_compression() {
    let elf = ElfBuilder::debian_like().bytes();
    for &(codec, encode) in CODECS {
        let image = load(encode(&elf)).unwrap_or_else(|e| panic!("{codec}: {e}"));
        assert_eq!(
            image.format().compression().map(Compression::name),
            Some(codec)
        );
        assert!(matches!(image.format(), ImageFormat::Compressed(_)));
        assert_eq!(image.elf_bytes(), &elf[..]);
        check_debian_like(&image);
    }
}

#[test]
fn a_payload_bigger_than_one_lz4_chunk_loads() {
    // 8 MiB chunks: three of them, the last short.
    let mut b = ElfBuilder::debian_like();
    b.segments[0].data = pattern(17 * MIB as usize, 9);
    b.segments[0].memsz = 17 * MIB;
    for s in &mut b.segments[1..] {
        s.paddr += 17 * MIB;
        if s.vaddr != 0 {
            s.vaddr += 17 * MIB;
        }
    }
    let mut notes = debian_notes();
    // ENTRY is checked against the kernel's range, which moved up.
    let entry = xen(1, &(ENTRY + 17 * MIB).to_le_bytes());
    notes.extend(entry);
    let elf = b.with_notes(notes).bytes();
    let image = load(bzimage(&payload("lz4", &elf), BzParams::default())).unwrap();
    assert_eq!(image.elf_bytes(), &elf[..]);
}

#[test]
fn notes_come_from_sections_when_no_segment_has_them() {
    let elf = ElfBuilder::debian_like().notes_in_section().bytes();
    let image = load(elf).unwrap();
    assert_eq!(image.notes().source, NoteSource::Sections);
    assert_eq!(image.notes().entry, Some(ENTRY));
    assert_eq!(image.layout(GuestKind::Pv).unwrap().entry, ENTRY);
}

#[test]
fn segment_notes_win_over_section_notes() {
    let mut b = ElfBuilder::debian_like();
    b.note_section = Some(xen(6, b"netbsd\0"));
    let image = load(b.bytes()).unwrap();
    assert_eq!(image.notes().source, NoteSource::Segments);
    assert_eq!(image.notes().guest_os.as_deref(), Some("linux"));
}

#[test]
fn a_segment_note_of_another_owner_does_not_count() {
    // The PT_NOTE segment has only a GNU note: libelf falls back to the sections.
    let mut b = ElfBuilder::debian_like().with_notes(note("GNU", 3, &[1; 20]));
    b.note_section = Some(debian_notes());
    let image = load(b.bytes()).unwrap();
    assert_eq!(image.notes().source, NoteSource::Sections);
}

#[test]
fn a_32_bit_image_parses_and_is_refused_for_pv() {
    // A minimal ELF32: header (52), one PT_LOAD (32), a note segment.
    let notes = debian_notes();
    let mut e = vec![0u8; 52 + 2 * 32];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 1;
    e[5] = 1;
    e[6] = 1;
    e[16..18].copy_from_slice(&2u16.to_le_bytes());
    e[18..20].copy_from_slice(&3u16.to_le_bytes());
    e[20..24].copy_from_slice(&1u32.to_le_bytes());
    e[24..28].copy_from_slice(&0x100_0000u32.to_le_bytes());
    e[28..32].copy_from_slice(&52u32.to_le_bytes());
    e[40..42].copy_from_slice(&52u16.to_le_bytes());
    e[42..44].copy_from_slice(&32u16.to_le_bytes());
    e[44..46].copy_from_slice(&2u16.to_le_bytes());
    let text_at = e.len() as u32;
    e.extend_from_slice(&[0x90; 0x1000]);
    let notes_at = e.len() as u32;
    e.extend_from_slice(&notes);
    let ph = |e: &mut Vec<u8>, i: usize, words: [u32; 8]| {
        for (j, w) in words.iter().enumerate() {
            e[52 + 32 * i + 4 * j..][..4].copy_from_slice(&w.to_le_bytes());
        }
    };
    ph(
        &mut e,
        0,
        [
            1,
            text_at,
            0xc100_0000,
            0x100_0000,
            0x1000,
            0x1000,
            5,
            0x1000,
        ],
    );
    let n = notes.len() as u32;
    ph(&mut e, 1, [4, notes_at, 0, 0, n, n, 4, 4]);
    let image = load(e).unwrap();
    assert_eq!(image.elf().class(), ElfClass::Elf32);
    assert_eq!(image.elf().machine(), 3);
    assert_eq!(image.elf().segments()[0].vaddr(), 0xc100_0000);
    assert!(matches!(
        image.layout(GuestKind::Pv).unwrap_err(),
        KernelError::PvNeedsX86_64 {
            bits: 32,
            machine: 3
        }
    ));
}

#[test]
fn without_an_entry_note_pv_enters_at_e_entry_as_libelf_does() {
    let notes: Vec<u8> = debian_notes();
    // Drop ENTRY (type 1): rebuild the list without it.
    let without: Vec<u8> = [
        xen(6, b"linux\0"),
        xen(5, b"xen-3.0\0"),
        xen(3, &VIRT_BASE.to_le_bytes()),
    ]
    .concat();
    assert!(notes.len() > without.len());
    let mut b = ElfBuilder::debian_like().with_notes(without.clone());
    b.entry = VIRT_BASE + PSTART + 0x10;
    let image = load(b.bytes()).unwrap();
    assert_eq!(image.notes().entry, None);
    assert_eq!(
        image.layout(GuestKind::Pv).unwrap().entry,
        VIRT_BASE + PSTART + 0x10
    );
    // Debian's e_entry is physical: with no ENTRY note it is outside the virtual range.
    let image = load(ElfBuilder::debian_like().with_notes(without).bytes()).unwrap();
    assert!(matches!(
        image.layout(GuestKind::Pv).unwrap_err(),
        KernelError::EntryOutOfRange {
            entry: PSTART,
            source_field: "e_entry",
            ..
        }
    ));
}

// -- the bzImage container ----------------------------------------------------------------------

#[test]
fn a_truncated_bzimage_header_is_an_error() {
    let (bz, _) = debian_like_bzimage("gzip");
    for len in [0x206, 0x207, 0x230, 0x24f] {
        let err = load(bz[..len].to_vec()).unwrap_err();
        assert!(
            matches!(err, KernelError::BzImageTruncated { len: l, need: 0x250 } if l == len as u64),
            "{len:#x}: {err:?}"
        );
    }
    // Shorter than "HdrS": not a bzImage at all.
    assert!(matches!(
        load(bz[..0x204].to_vec()).unwrap_err(),
        KernelError::UnknownFormat { magic: 0x90909090 }
    ));
}

#[test]
fn an_image_with_no_known_magic_is_an_error_naming_its_first_bytes() {
    let err = load(b"MZ\x90\x00 this is a PE file".to_vec()).unwrap_err();
    assert!(
        matches!(err, KernelError::UnknownFormat { magic: 0x4d5a9000 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("0x4d5a9000"), "{err}");
    assert!(matches!(
        load(Vec::new()).unwrap_err(),
        KernelError::UnknownFormat { magic: 0 }
    ));
}

#[test]
fn boot_protocol_2_07_is_too_old() {
    let elf = ElfBuilder::debian_like().bytes();
    let params = BzParams {
        protocol: 0x0207,
        ..BzParams::default()
    };
    let err = load(bzimage(&payload("gzip", &elf), params)).unwrap_err();
    assert!(
        matches!(err, KernelError::BootProtocolTooOld { version: 0x0207 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("2.07"), "{err}");
}

#[test]
fn a_payload_outside_the_image_is_an_error() {
    let (mut bz, _) = debian_like_bzimage("xz");
    let len = bz.len() as u64;
    let start = payload_start(BzParams::default()) as u64;
    // Length past the end.
    bz[0x24c..0x250].copy_from_slice(&u32::try_from(len - start + 1).unwrap().to_le_bytes());
    let err = load(bz.clone()).unwrap_err();
    assert!(
        matches!(err, KernelError::PayloadOutOfBounds { offset, length, image_len }
            if offset == start && length == len - start + 1 && image_len == len),
        "{err:?}"
    );
    // Offset past the end, length 0.
    bz[0x248..0x24c].copy_from_slice(&u32::MAX.to_le_bytes());
    bz[0x24c..0x250].copy_from_slice(&0u32.to_le_bytes());
    let err = load(bz).unwrap_err();
    assert!(
        matches!(err, KernelError::PayloadOutOfBounds { offset, .. }
            if offset == 0x28 * 512 + u64::from(u32::MAX)),
        "{err:?}"
    );
}

#[test]
fn a_payload_too_short_for_its_size_field_is_an_error() {
    let bz = bzimage(b"\x1f\x8b\x08\x00", BzParams::default());
    let err = load(bz).unwrap_err();
    assert!(
        matches!(err, KernelError::PayloadTooShort { length: 4, .. }),
        "{err:?}"
    );
}

#[test]
fn payload_compression_comes_from_its_magic_at_the_payload_offset() {
    // gzip magic elsewhere in the image does not count: only the payload offset is read.
    let elf = ElfBuilder::debian_like().bytes();
    let mut bz = bzimage(&payload("xz", &elf), BzParams::default());
    bz[0x300..0x302].copy_from_slice(b"\x1f\x8b");
    assert!(matches!(
        load(bz).unwrap().format().compression(),
        Some(Compression::Xz)
    ));
    // An unknown payload magic is an error naming the offset and the bytes.
    let bz = bzimage(b"\x12\x34\x56\x78 and more", BzParams::default());
    let err = load(bz).unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::UnknownPayload {
                offset: 0x52cc,
                magic: 0x12345678
            }
        ),
        "{err:?}"
    );
}

#[test]
fn compressions_xen_knows_but_we_do_not_are_refused_by_name() {
    for (magic, name) in [
        (&b"BZh91AY&SY"[..], "bzip2"),
        (b"\x5d\x00\x00\x80\x00", "lzma"),
        (b"\x89LZO\x00\r\n", "lzo"),
    ] {
        let mut p = magic.to_vec();
        p.extend_from_slice(&[0; 8]);
        let err = load(bzimage(&p, BzParams::default())).unwrap_err();
        assert!(
            matches!(err, KernelError::UnsupportedCompression { offset: 0x52cc, compression } if compression == name),
            "{name}: {err:?}"
        );
        let err = load(p).unwrap_err();
        assert!(
            matches!(err, KernelError::UnsupportedCompression { offset: 0, compression } if compression == name),
            "{name}: {err:?}"
        );
    }
}

// -- bounded decompression ----------------------------------------------------------------------

/// A bzImage whose size field says `declared` instead of the truth.
fn lying_bzimage(codec: &str, elf: &[u8], declared: u32) -> Vec<u8> {
    let mut p = payload(codec, elf);
    let n = p.len();
    p[n - 4..].copy_from_slice(&declared.to_le_bytes());
    bzimage(&p, BzParams::default())
}

#[test]
fn a_size_field_above_the_limit_is_refused_before_decoding() {
    let elf = ElfBuilder::debian_like().bytes();
    let limits = ImageLimits {
        max_decompressed: MIB,
        ..ImageLimits::default()
    };
    for &(codec, _) in CODECS {
        let err = load_with(lying_bzimage(codec, &elf, u32::MAX), &limits).unwrap_err();
        assert!(
            matches!(err, KernelError::DeclaredSizeTooLarge { declared, limit, .. }
                if declared == u64::from(u32::MAX) && limit == MIB),
            "{codec}: {err:?}"
        );
    }
}

#[test]
fn a_size_field_that_lies_low_stops_decoding_at_what_it_says() {
    let elf = ElfBuilder::debian_like().bytes();
    let small = u32::try_from(elf.len() / 2).unwrap();
    for &(codec, _) in CODECS {
        let err = load(lying_bzimage(codec, &elf, small)).unwrap_err();
        assert!(
            matches!(err, KernelError::LargerThanDeclared { compression, declared }
                if compression.name() == codec && declared == u64::from(small)),
            "{codec}: {err:?}"
        );
    }
}

#[test]
fn a_size_field_that_lies_high_is_an_error() {
    let elf = ElfBuilder::debian_like().bytes();
    let big = u32::try_from(elf.len() + 4096).unwrap();
    for &(codec, _) in CODECS {
        let err = load(lying_bzimage(codec, &elf, big)).unwrap_err();
        let ok = match codec {
            // gzip's size field is its own ISIZE, which its decoder checks at the end.
            "gzip" => matches!(err, KernelError::CorruptData { .. }),
            _ => matches!(err, KernelError::SmallerThanDeclared { declared, actual, .. }
                if declared == u64::from(big) && actual == elf.len() as u64),
        };
        assert!(ok, "{codec}: {err:?}");
    }
}

#[test]
fn a_bomb_without_a_size_field_stops_at_the_limit() {
    // 64 MiB of zeros compress to almost nothing; a compressed file has no size field (gzip's
    // ISIZE is made to lie low, so its declared size is what stops it).
    let zeros = vec![0u8; 64 * MIB as usize];
    let limits = ImageLimits {
        max_decompressed: 4 * MIB,
        ..ImageLimits::default()
    };
    for &(codec, encode) in CODECS {
        let mut bomb = encode(&zeros);
        assert!(bomb.len() < 4 * MIB as usize, "{codec}: {}", bomb.len());
        if codec == "gzip" {
            let n = bomb.len();
            bomb[n - 4..].copy_from_slice(&1000u32.to_le_bytes());
            let err = load_with(bomb, &limits).unwrap_err();
            assert!(
                matches!(err, KernelError::LargerThanDeclared { declared: 1000, .. }),
                "{codec}: {err:?}"
            );
            continue;
        }
        let err = load_with(bomb.clone(), &limits).unwrap_err();
        assert!(
            matches!(err, KernelError::DecompressedTooLarge { limit, .. } if limit == 4 * MIB),
            "{codec}: {err:?}"
        );
        // The same through the public decoder.
        let compression = Compression::detect(&bomb).unwrap();
        assert!(matches!(
            decompress(compression, &bomb, None, &limits).unwrap_err(),
            KernelError::DecompressedTooLarge { .. }
        ));
    }
}

#[test]
fn a_window_above_the_limit_is_refused_before_it_is_allocated() {
    let elf = ElfBuilder::debian_like().bytes();
    let limits = ImageLimits {
        max_window: 4 * MIB,
        ..ImageLimits::default()
    };
    // xz with a 32 MiB dictionary, as Linux uses.
    let mut p = xz_with_dict(&elf, 32 << 20);
    p.extend_from_slice(&u32::try_from(elf.len()).unwrap().to_le_bytes());
    let err = load_with(bzimage(&p, BzParams::default()), &limits).unwrap_err();
    assert!(
        matches!(err, KernelError::WindowTooLarge { compression: Compression::Xz, limit }
            if limit == 4 * MIB),
        "{err:?}"
    );
    // And it loads with the default limit.
    load(bzimage(&p, BzParams::default())).unwrap();

    let limits = ImageLimits {
        max_window: KIB,
        ..ImageLimits::default()
    };
    let err = load_with(zstd(&elf), &limits).unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::WindowTooLarge {
                compression: Compression::Zstd,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_zstd_frame_with_linuxs_128_mib_window_is_accepted() {
    // `zstd -22 --ultra` from a pipe, as Linux builds its payload, declares a 128 MiB window.
    // ruzstd's encoder writes a single-segment frame (no window descriptor) for small input, so
    // rewrite the header: descriptor byte 0x88 is 2^(10 + 17) = 128 MiB.
    let elf = ElfBuilder::debian_like().bytes();
    let frame = zstd_with_window_descriptor(&elf, 0x88);
    let image = load(frame).unwrap();
    assert_eq!(image.elf_bytes(), &elf[..]);
    let limits = ImageLimits {
        max_window: 64 * MIB,
        ..ImageLimits::default()
    };
    assert!(matches!(
        load_with(zstd_with_window_descriptor(&elf, 0x88), &limits).unwrap_err(),
        KernelError::WindowTooLarge { .. }
    ));
}

/// A zstd frame of `data` whose header declares the window `descriptor` (and no content
/// size), made from ruzstd's raw blocks so that the blocks are valid whatever the window.
fn zstd_with_window_descriptor(data: &[u8], descriptor: u8) -> Vec<u8> {
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd];
    // Frame header descriptor: no FCS, not single segment, no checksum, no dictionary.
    f.push(0x00);
    f.push(descriptor);
    // Raw blocks of at most 128 KiB, the last flagged.
    let chunks: Vec<&[u8]> = data.chunks(128 << 10).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = u32::from(i + 1 == chunks.len());
        let header = last | (u32::try_from(chunk.len()).unwrap() << 3);
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.extend_from_slice(chunk);
    }
    f
}

#[test]
fn corrupt_compressed_data_is_an_error() {
    let elf = ElfBuilder::debian_like().bytes();
    for &(codec, _) in CODECS {
        let mut p = payload(codec, &elf);
        // Somewhere in the middle of the stream.
        let mid = p.len() / 2;
        for b in &mut p[mid..mid + 16] {
            *b ^= 0x5a;
        }
        let err = load(bzimage(&p, BzParams::default())).unwrap_err();
        let ok = match codec {
            // A flipped lz4 byte may land in a chunk's size field or in a block.
            "lz4" => matches!(
                err,
                KernelError::CorruptData { .. }
                    | KernelError::Lz4ChunkOutOfBounds { .. }
                    | KernelError::Lz4ChunkTooLarge { .. }
                    | KernelError::LargerThanDeclared { .. }
                    | KernelError::SmallerThanDeclared { .. }
            ),
            _ => matches!(
                err,
                KernelError::CorruptData { offset: 0x52cc, .. }
                    | KernelError::ZstdChecksum { .. }
                    // Corrupt data may unpack to more than it should before the decoder notices.
                    | KernelError::LargerThanDeclared { .. }
            ),
        };
        assert!(ok, "{codec}: {err:?}");
    }
}

#[test]
fn lz4_framing_errors_name_the_offset() {
    let limits = ImageLimits::default();
    let magic = 0x184c_2102u32.to_le_bytes();
    // Not the legacy frame (the modern one's magic).
    let err = decompress(
        Compression::Lz4,
        &0x184d_2204u32.to_le_bytes(),
        None,
        &limits,
    );
    assert!(matches!(
        err.unwrap_err(),
        KernelError::Lz4NotLegacy { offset: 0 }
    ));
    // A chunk size pointing past the end.
    let mut d = magic.to_vec();
    d.extend_from_slice(&100u32.to_le_bytes());
    d.extend_from_slice(&[0; 10]);
    let err = decompress(Compression::Lz4, &d, None, &limits).unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::Lz4ChunkOutOfBounds {
                offset: 4,
                size: 100,
                remaining: 10
            }
        ),
        "{err:?}"
    );
    // A chunk size above LZ4_compressBound(8 MiB).
    let mut d = magic.to_vec();
    d.extend_from_slice(&u32::MAX.to_le_bytes());
    let err = decompress(Compression::Lz4, &d, None, &limits).unwrap_err();
    assert!(
        matches!(err, KernelError::Lz4ChunkTooLarge { offset: 4, .. }),
        "{err:?}"
    );
    // Ending inside a chunk header.
    let mut d = lz4_legacy(b"hello");
    d.extend_from_slice(&[1, 2]);
    let err = decompress(Compression::Lz4, &d, None, &limits).unwrap_err();
    assert!(matches!(err, KernelError::Lz4Truncated { .. }), "{err:?}");
    // Repeated magics (concatenated frames) are skipped.
    let mut d = lz4_legacy(b"hello ");
    d.extend_from_slice(&lz4_legacy(b"world"));
    assert_eq!(
        decompress(Compression::Lz4, &d, None, &limits).unwrap(),
        b"hello world"
    );
}

#[test]
fn a_payload_that_unpacks_to_something_else_is_not_elf() {
    let bz = bzimage(
        &payload("xz", b"#!/bin/sh\necho not a kernel\n"),
        BzParams::default(),
    );
    let err = load(bz).unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::UnpackedNotElf {
                compression: Compression::Xz,
                magic: 0x23212f62
            }
        ),
        "{err:?}"
    );
}

#[test]
fn an_image_above_max_image_is_refused() {
    let elf = ElfBuilder::debian_like().bytes();
    let limits = ImageLimits {
        max_image: 1024,
        ..ImageLimits::default()
    };
    let err = load_with(elf.clone(), &limits).unwrap_err();
    assert!(
        matches!(err, KernelError::ImageTooLarge { size, limit: 1024 } if size == elf.len() as u64),
        "{err:?}"
    );
    assert!(matches!(
        unpack(&elf, &limits).unwrap_err(),
        KernelError::ImageTooLarge { .. }
    ));
}

// -- the ELF image ------------------------------------------------------------------------------

#[test]
fn bad_elf_identification_is_an_error() {
    let good = ElfBuilder::debian_like().bytes();
    let mut e = good.clone();
    e[4] = 3;
    assert!(matches!(elf_err(e), KernelError::ElfClass { class: 3 }));
    let mut e = good.clone();
    e[5] = 2;
    assert!(matches!(elf_err(e), KernelError::ElfEndian { data: 2 }));
    let mut e = good.clone();
    e[18..20].copy_from_slice(&40u16.to_le_bytes()); // EM_ARM
    assert!(matches!(
        elf_err(e),
        KernelError::ElfMachine {
            bits: 64,
            machine: 40
        }
    ));
    // Cut inside the header.
    assert!(matches!(
        elf_err(good[..40].to_vec()),
        KernelError::ElfHeader(_)
    ));
    // ElfKernel::parse on something that is not ELF.
    assert!(matches!(
        ElfKernel::parse(b"\x7fELG", &ImageLimits::default()).unwrap_err(),
        KernelError::NotElf { magic: 0x7f454c47 }
    ));
}

#[test]
fn a_program_header_table_outside_the_image_is_an_error() {
    let mut e = ElfBuilder::debian_like().bytes();
    e[32..40].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
    assert!(matches!(elf_err(e), KernelError::ProgramHeaders(_)));
    let mut e = ElfBuilder::debian_like().bytes();
    e[56..58].copy_from_slice(&0xfffeu16.to_le_bytes()); // e_phnum
    assert!(matches!(elf_err(e), KernelError::ProgramHeaders(_)));
}

#[test]
fn a_segment_outside_the_image_is_an_error() {
    let good = ElfBuilder::debian_like().bytes();
    let len = good.len() as u64;
    let mut e = good.clone();
    set_phdr(&mut e, 1, PhField::Offset, len - 0x10);
    let err = elf_err(e);
    assert!(
        matches!(err, KernelError::SegmentOutsideImage { index: 1, offset, filesz: 0x1000, image_len }
            if offset == len - 0x10 && image_len == len),
        "{err:?}"
    );
    // offset + filesz overflows.
    let mut e = good.clone();
    set_phdr(&mut e, 0, PhField::Offset, u64::MAX);
    assert!(matches!(
        elf_err(e),
        KernelError::SegmentOutsideImage {
            index: 0,
            offset: u64::MAX,
            ..
        }
    ));
    // The note segment is checked too.
    let mut e = good;
    set_phdr(&mut e, 4, PhField::Filesz, len);
    assert!(matches!(
        elf_err(e),
        KernelError::SegmentOutsideImage { index: 4, .. }
    ));
}

#[test]
fn filesz_above_memsz_is_an_error() {
    let mut e = ElfBuilder::debian_like().bytes();
    set_phdr(&mut e, 0, PhField::Memsz, 0x2fff);
    assert!(matches!(
        elf_err(e),
        KernelError::SegmentFileSizeAboveMemSize {
            index: 0,
            filesz: 0x3000,
            memsz: 0x2fff
        }
    ));
}

#[test]
fn an_address_range_that_wraps_is_an_error() {
    let mut e = ElfBuilder::debian_like().bytes();
    set_phdr(&mut e, 3, PhField::Paddr, u64::MAX - 0x1000);
    assert!(matches!(
        elf_err(e),
        KernelError::SegmentAddressOverflow {
            index: 3,
            field: "p_paddr",
            memsz: 0x3000,
            ..
        }
    ));
    let mut e = ElfBuilder::debian_like().bytes();
    set_phdr(&mut e, 3, PhField::Vaddr, u64::MAX - 0x1000);
    assert!(matches!(
        elf_err(e),
        KernelError::SegmentAddressOverflow {
            index: 3,
            field: "p_vaddr",
            ..
        }
    ));
}

#[test]
fn overlapping_segments_are_an_error() {
    let mut e = ElfBuilder::debian_like().bytes();
    // The per-cpu segment moved into the data segment's bss.
    set_phdr(&mut e, 2, PhField::Paddr, PSTART + 0x4000);
    let err = elf_err(e);
    assert!(
        matches!(err, KernelError::SegmentsOverlap { first: 1, second: 2, first_end, second_start, .. }
            if first_end == PSTART + 0x4800 && second_start == PSTART + 0x4000),
        "{err:?}"
    );
    // Touching is not overlapping; empty segments overlap nothing.
    let mut e = ElfBuilder::debian_like().bytes();
    set_phdr(&mut e, 2, PhField::Filesz, 0);
    set_phdr(&mut e, 2, PhField::Memsz, 0);
    set_phdr(&mut e, 2, PhField::Paddr, PSTART + 0x100);
    load(e).unwrap();
}

#[test]
fn an_image_with_nothing_to_load_is_an_error() {
    let mut e = ElfBuilder::debian_like().bytes();
    for i in 0..4 {
        // PT_LOAD without R, W or X is not loadable (libelf's rule).
        set_phdr(&mut e, i, PhField::Flags, 0);
    }
    assert!(matches!(elf_err(e), KernelError::NoLoadableSegments));
}

#[test]
fn a_kernel_spanning_more_than_the_limit_is_an_error() {
    let mut e = ElfBuilder::debian_like().bytes();
    set_phdr(&mut e, 3, PhField::Memsz, 0x6000_0000);
    let err = elf_err(e);
    assert!(
        matches!(err, KernelError::KernelSpanTooLarge { pstart: PSTART, limit, .. } if limit == 1 << 30),
        "{err:?}"
    );
}

#[test]
fn a_note_section_outside_the_image_is_an_error() {
    let built = ElfBuilder::debian_like().notes_in_section().build();
    let mut e = built.bytes;
    let shoff = u64::from_le_bytes(e[40..48].try_into().unwrap()) as usize;
    // Section 1's sh_size.
    e[shoff + 64 + 32..shoff + 64 + 40].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        elf_err(e),
        KernelError::SectionOutsideImage {
            index: 1,
            size: u64::MAX,
            ..
        }
    ));
}

#[test]
fn bad_notes_are_errors_naming_the_note() {
    let load_notes = |notes: Vec<u8>| load(ElfBuilder::debian_like().with_notes(notes).bytes());
    let notes_at = ElfBuilder::debian_like().build().offsets[4];

    // A number of 3 bytes.
    let err = load_notes(xen(3, &[1, 2, 3])).unwrap_err();
    assert!(
        matches!(err, KernelError::NoteSize { note: "VIRT_BASE", offset, size: 3, .. } if offset == notes_at),
        "{err:?}"
    );
    // A number of 16 bytes.
    let err = load_notes(xen(15, &[0; 16])).unwrap_err();
    assert!(matches!(
        err,
        KernelError::NoteSize {
            note: "INIT_P2M",
            size: 16,
            ..
        }
    ));
    // SUPPORTED_FEATURES not a multiple of 4.
    let err = load_notes(xen(17, &[1, 2])).unwrap_err();
    assert!(matches!(
        err,
        KernelError::NoteSize {
            note: "SUPPORTED_FEATURES",
            size: 2,
            ..
        }
    ));
    // descsz past the end of the segment.
    let mut n = xen(1, &ENTRY.to_le_bytes());
    n[4..8].copy_from_slice(&0x1000u32.to_le_bytes());
    let err = load_notes(n).unwrap_err();
    assert!(
        matches!(err, KernelError::NoteOutOfBounds { offset, descsz: 0x1000, .. } if offset == notes_at),
        "{err:?}"
    );
    // namesz past the end.
    let mut n = xen(1, &ENTRY.to_le_bytes());
    n[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        load_notes(n).unwrap_err(),
        KernelError::NoteOutOfBounds {
            namesz: u32::MAX,
            ..
        }
    ));
    // A few stray bytes after the last note.
    let mut n = debian_notes();
    let at = notes_at + n.len() as u64;
    n.extend_from_slice(&[0; 4]);
    let err = load_notes(n).unwrap_err();
    assert!(
        matches!(err, KernelError::NoteHeaderTruncated { offset, remaining: 4 } if offset == at),
        "{err:?}"
    );
    // A required feature nobody knows.
    let err = load_notes(xen(10, b"!quantum_paging\0")).unwrap_err();
    assert!(
        matches!(err, KernelError::UnknownRequiredFeature { feature } if feature == "quantum_paging")
    );
}

// -- layouts --------------------------------------------------------------------------------------

fn layout_err(notes: Vec<u8>, kind: GuestKind) -> KernelError {
    load(ElfBuilder::debian_like().with_notes(notes).bytes())
        .unwrap()
        .layout(kind)
        .expect_err("the broken layout was accepted")
}

/// Debian's notes, with the note of each `kind` replaced (or dropped, for `None`).
fn edit_notes(edits: &[(u32, Option<Vec<u8>>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let all = debian_notes();
    let mut at = 0;
    while at < all.len() {
        let w = |o: usize| u32::from_le_bytes(all[at + o..at + o + 4].try_into().unwrap());
        let (namesz, descsz, k) = (w(0), w(4), w(8));
        let len =
            12 + (namesz as usize).next_multiple_of(4) + (descsz as usize).next_multiple_of(4);
        let is_xen = &all[at + 12..at + 15] == b"Xen";
        match edits.iter().find(|(kind, _)| is_xen && *kind == k) {
            Some((_, Some(replacement))) => out.extend_from_slice(replacement),
            Some((_, None)) => {}
            None => out.extend_from_slice(&all[at..at + len]),
        }
        at += len;
    }
    out
}

fn notes_with(kind: u32, replacement: Option<Vec<u8>>) -> Vec<u8> {
    edit_notes(&[(kind, replacement)])
}

#[test]
fn a_kernel_without_xen_notes_is_not_a_xen_kernel() {
    let e = ElfBuilder::debian_like()
        .with_notes(note("GNU", 3, &[1; 20]))
        .bytes();
    let image = load(e).unwrap();
    assert_eq!(image.notes().source, NoteSource::None);
    for kind in [GuestKind::Pv, GuestKind::Pvh] {
        assert!(matches!(
            image.layout(kind).unwrap_err(),
            KernelError::NoXenNotes
        ));
    }
}

#[test]
fn pv_needs_a_linux_or_generic_kernel_for_xen_3_0() {
    // Neither GUEST_OS "linux" nor LOADER "generic".
    let notes = edit_notes(&[(6, Some(xen(6, b"plan9\0"))), (8, None)]);
    let err = layout_err(notes, GuestKind::Pv);
    assert!(
        matches!(&err, KernelError::UnsupportedGuest { guest_os: Some(g), loader: None } if g == "plan9"),
        "{err:?}"
    );
    // Either is enough.
    for notes in [notes_with(6, None), notes_with(8, None)] {
        load(ElfBuilder::debian_like().with_notes(notes).bytes())
            .unwrap()
            .layout(GuestKind::Pv)
            .unwrap();
    }
    let err = layout_err(notes_with(5, Some(xen(5, b"xen-2.0\0"))), GuestKind::Pv);
    assert!(
        matches!(&err, KernelError::UnsupportedXenVersion { xen_version: Some(v) } if v == "xen-2.0")
    );
    let err = layout_err(notes_with(5, None), GuestKind::Pv);
    assert!(matches!(
        err,
        KernelError::UnsupportedXenVersion { xen_version: None }
    ));
    // PVH needs none of them.
    let notes = edit_notes(&[(5, None), (6, None), (8, None)]);
    load(ElfBuilder::debian_like().with_notes(notes).bytes())
        .unwrap()
        .layout(GuestKind::Pvh)
        .unwrap();
}

#[test]
fn paddr_offset_without_virt_base_is_an_error() {
    let err = layout_err(notes_with(3, None), GuestKind::Pv);
    assert!(matches!(
        err,
        KernelError::PaddrOffsetWithoutVirtBase { paddr_offset: 0 }
    ));
}

#[test]
fn an_entry_outside_the_kernel_is_an_error() {
    let err = layout_err(
        notes_with(
            1,
            Some(xen(1, &(VIRT_BASE + PSTART + 0x9000).to_le_bytes())),
        ),
        GuestKind::Pv,
    );
    assert!(
        matches!(err, KernelError::EntryOutOfRange { source_field: "the ENTRY note", kstart, kend, .. }
            if kstart == VIRT_BASE + PSTART && kend == VIRT_BASE + PSTART + 0x8000),
        "{err:?}"
    );
    let err = layout_err(
        notes_with(18, Some(xen(18, &0x1000u64.to_le_bytes()))),
        GuestKind::Pvh,
    );
    assert!(matches!(
        err,
        KernelError::EntryOutOfRange {
            entry: 0x1000,
            source_field: "the PHYS32_ENTRY note",
            ..
        }
    ));
}

#[test]
fn virt_base_above_the_kernel_is_an_error() {
    // kstart = pstart + VIRT_BASE - PADDR_OFFSET is below VIRT_BASE when PADDR_OFFSET > pstart.
    let paddr_offset = PSTART + 0x80_0000;
    let kstart = VIRT_BASE + PSTART - paddr_offset;
    let notes = edit_notes(&[
        (4, Some(xen(4, &paddr_offset.to_le_bytes()))),
        (1, Some(xen(1, &(kstart + 0x10).to_le_bytes()))),
    ]);
    let err = layout_err(notes, GuestKind::Pv);
    assert!(
        matches!(err, KernelError::VirtBaseAboveKernel { virt_base: VIRT_BASE, kstart: k } if k == kstart),
        "{err:?}"
    );
}

#[test]
fn a_virtual_range_that_wraps_is_an_error() {
    // VIRT_BASE so high that pend + VIRT_BASE wraps while pstart + VIRT_BASE does not.
    let top = u64::MAX - PSTART - 0x4000 + 1;
    let err = layout_err(
        notes_with(3, Some(xen(3, &top.to_le_bytes()))),
        GuestKind::Pv,
    );
    assert!(
        matches!(err, KernelError::KernelRangeWraps { kstart, kend: 0x4000 } if kstart == u64::MAX - 0x3fff),
        "{err:?}"
    );
}

#[test]
fn a_p2m_inside_the_kernel_is_an_error() {
    let inside = VIRT_BASE + PSTART + 0x1000;
    let err = layout_err(
        notes_with(15, Some(xen(15, &inside.to_le_bytes()))),
        GuestKind::Pv,
    );
    assert!(matches!(err, KernelError::P2mInsideKernel { p2m_base, .. } if p2m_base == inside));
}

#[test]
fn a_dom0_only_kernel_is_refused() {
    let err = layout_err(
        notes_with(10, Some(xen(10, b"!dom0|!writable_page_tables\0"))),
        GuestKind::Pv,
    );
    assert!(matches!(err, KernelError::RequiresDom0));
    // Supporting dom0 is fine.
    load(
        ElfBuilder::debian_like()
            .with_notes(notes_with(10, Some(xen(10, b"dom0\0"))))
            .bytes(),
    )
    .unwrap()
    .layout(GuestKind::Pv)
    .unwrap();
}

#[test]
fn pvh_needs_phys32_entry_below_4g() {
    let err = layout_err(notes_with(18, None), GuestKind::Pvh);
    assert!(matches!(err, KernelError::NoPhys32Entry));
    let err = layout_err(
        notes_with(18, Some(xen(18, &(1u64 << 32).to_le_bytes()))),
        GuestKind::Pvh,
    );
    assert!(matches!(err, KernelError::Phys32EntryAbove4G { entry } if entry == 1 << 32));
    // A 4-byte PHYS32_ENTRY, as older kernels have.
    let image = load(
        ElfBuilder::debian_like()
            .with_notes(notes_with(
                18,
                Some(xen(18, &u32::try_from(PHYS32_ENTRY).unwrap().to_le_bytes())),
            ))
            .bytes(),
    )
    .unwrap();
    assert_eq!(image.layout(GuestKind::Pvh).unwrap().entry, PHYS32_ENTRY);
}

#[test]
fn a_hypercall_page_note_is_reported_when_present() {
    let page = VIRT_BASE + PSTART + 0x1000;
    let mut notes = debian_notes();
    notes.extend(xen(2, &page.to_le_bytes()));
    let image = load(ElfBuilder::debian_like().with_notes(notes).bytes()).unwrap();
    assert_eq!(
        image.layout(GuestKind::Pv).unwrap().hypercall_page,
        Some(page)
    );
}

// -- initrd and command line ------------------------------------------------------------------

#[test]
fn a_command_line_fits_start_info() {
    let max = "x".repeat(1023);
    let line = CommandLine::new(max.clone()).unwrap();
    assert_eq!(line.as_str(), max);
    let bytes = line.to_bytes_with_nul();
    assert_eq!(bytes.len(), 1024);
    assert_eq!(bytes[1023], 0);
    let err = CommandLine::new("x".repeat(1024)).unwrap_err();
    assert!(matches!(
        err,
        KernelError::CommandLineTooLong {
            len: 1024,
            max: 1023
        }
    ));
    assert!(err.to_string().contains("1024 bytes"), "{err}");
    assert!(matches!(
        CommandLine::new("console=hvc0\0root=/dev/xvda").unwrap_err(),
        KernelError::CommandLineNul { offset: 12 }
    ));
    assert_eq!(CommandLine::default().to_bytes_with_nul(), vec![0]);
}

#[test]
fn an_initrd_is_opaque_bytes_within_the_limit() {
    let limits = ImageLimits {
        max_initrd: 100,
        ..ImageLimits::default()
    };
    let gz = gzip(b"070701 a cpio archive");
    let initrd = Initrd::from_bytes(gz.clone(), &limits).unwrap();
    assert_eq!(initrd.as_bytes(), &gz[..]);
    assert_eq!(initrd.len(), gz.len());
    assert!(!initrd.is_empty());
    assert_eq!(initrd.compression(), Some(Compression::Gzip));
    assert_eq!(
        Initrd::from_bytes(b"070701".to_vec(), &limits)
            .unwrap()
            .compression(),
        None
    );
    assert!(matches!(
        Initrd::from_bytes(vec![0; 101], &limits).unwrap_err(),
        KernelError::InitrdTooLarge {
            size: 101,
            limit: 100
        }
    ));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("initrd.img");
    std::fs::write(&path, &gz).unwrap();
    assert_eq!(
        Initrd::from_file(&path, &limits).unwrap().as_bytes(),
        &gz[..]
    );
    std::fs::write(&path, vec![0; 101]).unwrap();
    assert!(matches!(
        Initrd::from_file(&path, &limits).unwrap_err(),
        KernelError::InitrdTooLarge {
            size: 101,
            limit: 100
        }
    ));
    let err = Initrd::from_file(&dir.path().join("missing"), &limits).unwrap_err();
    assert!(matches!(&err, KernelError::Read { path, .. } if path.ends_with("missing")));
}

#[test]
fn a_gzip_initrd_is_inflated_for_the_guest_as_libxenguest_does() {
    let limits = ImageLimits::default();
    let cpio = b"070701 a cpio archive".repeat(50);
    let gz = gzip(&cpio);
    // Inflated, with libxenguest's 16 bytes of room after the trailer's size.
    let guest = Initrd::from_bytes(gz.clone(), &limits)
        .unwrap()
        .for_guest(&limits);
    assert_eq!(&guest.as_bytes()[..cpio.len()], &cpio[..]);
    assert_eq!(guest.len(), cpio.len() + 16);
    assert!(guest.as_bytes()[cpio.len()..].iter().all(|&b| b == 0));
    assert_eq!(guest.compression(), None);

    // Not gzip: as it is.
    let plain = Initrd::from_bytes(cpio.clone(), &limits).unwrap();
    assert_eq!(plain.clone().for_guest(&limits), plain);
    // Too short to have a trailer, a corrupt stream, a trailer that lies, a trailer above
    // the limit: the raw blob, as libxenguest falls back to it.
    let keep = |bytes: Vec<u8>, limits: &ImageLimits| {
        let i = Initrd::from_bytes(bytes, limits).unwrap();
        assert_eq!(i.clone().for_guest(limits), i);
    };
    keep(vec![0x1f, 0x8b, 8, 0, 0], &limits);
    let mut corrupt = gz.clone();
    corrupt[12] ^= 0xff;
    keep(corrupt, &limits);
    let mut lying = gz.clone();
    let n = lying.len();
    lying[n - 4..].copy_from_slice(&(cpio.len() as u32 + 1).to_le_bytes());
    keep(lying, &limits);
    // A trailer claiming more than deflate can expand this stream to (here 512 MiB from a few
    // dozen bytes): handed over raw, without an allocation of the claimed size.
    let mut inflated_claim = gz.clone();
    inflated_claim[n - 4..].copy_from_slice(&(512u32 << 20).to_le_bytes());
    assert!((512u64 << 20) > gz.len() as u64 * 1032);
    keep(inflated_claim, &limits);
    let small = ImageLimits {
        max_initrd: gz.len() as u64,
        ..ImageLimits::default()
    };
    keep(gz, &small);
}

#[test]
fn load_file_reads_checks_the_size_and_times_the_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vmlinuz");
    let (bz, elf) = debian_like_bzimage("xz");
    std::fs::write(&path, &bz).unwrap();
    let loaded = KernelImage::load_file(&path, &ImageLimits::default(), None).unwrap();
    assert_eq!(loaded.image.elf_bytes(), &elf[..]);
    assert!(loaded.timings.read > std::time::Duration::ZERO);
    let limits = ImageLimits {
        max_image: 100,
        ..ImageLimits::default()
    };
    assert!(matches!(
        KernelImage::load_file(&path, &limits, None).unwrap_err(),
        KernelError::ImageTooLarge { limit: 100, .. }
    ));
}

// -- hostile input never panics -------------------------------------------------------------------

#[test]
fn truncated_and_mutated_images_give_errors_not_panics() {
    let seed = std::env::var("RXEN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("seed {seed} (RXEN_TEST_SEED={seed} repeats this run)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let limits = ImageLimits {
        max_decompressed: 4 * MIB,
        max_window: 4 * MIB,
        ..ImageLimits::default()
    };
    let elf = ElfBuilder::debian_like().bytes();
    let mut inputs = vec![elf.clone()];
    for &(codec, encode) in CODECS {
        inputs.push(bzimage(&payload(codec, &elf), BzParams::default()));
        inputs.push(encode(&elf));
    }
    for input in &inputs {
        // Every truncation at a stride, and around the interesting places.
        let mut cuts: Vec<usize> = (0..input.len()).step_by(97).collect();
        cuts.extend([
            0x1f1,
            0x202,
            0x206,
            0x248,
            0x24c,
            0x250,
            0x52cc,
            input.len() - 1,
        ]);
        for cut in cuts.into_iter().filter(|&c| c < input.len()) {
            let _ = load_with(input[..cut].to_vec(), &limits);
        }
        // Random byte flips.
        for _ in 0..150 {
            let mut m = input.clone();
            for _ in 0..rng.usize(1..8) {
                let at = rng.usize(..m.len());
                m[at] = rng.u8(..);
            }
            if let Ok(image) = load_with(m, &limits) {
                // Whatever loads is consistent.
                for (seg, data) in image.segments() {
                    assert_eq!(data.len() as u64, seg.filesz());
                    assert!(seg.filesz() <= seg.memsz());
                }
                let _ = image.layout(GuestKind::Pv);
                let _ = image.layout(GuestKind::Pvh);
            }
        }
    }
}
