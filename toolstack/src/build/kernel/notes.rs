//! The Xen ELF notes (`xen/include/public/elfnote.h`), typed ([`XenNotes`]).

use std::fmt;

use super::error::{KernelError, Result};

/// The most notes (of any owner) one image may have, as libelf's `ELF_MAX_TOTAL_NOTE_COUNT`.
pub const MAX_NOTES: usize = 65536;

/// Xen feature bits (`xen/include/public/features.h`), as the FEATURES and SUPPORTED_FEATURES
/// notes name them.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct XenFeatures(u32);

impl XenFeatures {
    /// `XENFEAT_writable_page_tables`.
    pub const WRITABLE_PAGE_TABLES: u32 = 0;
    /// `XENFEAT_writable_descriptor_tables`.
    pub const WRITABLE_DESCRIPTOR_TABLES: u32 = 1;
    /// `XENFEAT_auto_translated_physmap`.
    pub const AUTO_TRANSLATED_PHYSMAP: u32 = 2;
    /// `XENFEAT_supervisor_mode_kernel`.
    pub const SUPERVISOR_MODE_KERNEL: u32 = 3;
    /// `XENFEAT_pae_pgdir_above_4gb`.
    pub const PAE_PGDIR_ABOVE_4GB: u32 = 4;
    /// `XENFEAT_hvm_callback_vector`.
    pub const HVM_CALLBACK_VECTOR: u32 = 8;
    /// `XENFEAT_dom0`.
    pub const DOM0: u32 = 11;

    /// The names the FEATURES note may use, as libelf's `elf_xen_feature_names`.
    const NAMES: &[(&str, u32)] = &[
        ("writable_page_tables", Self::WRITABLE_PAGE_TABLES),
        (
            "writable_descriptor_tables",
            Self::WRITABLE_DESCRIPTOR_TABLES,
        ),
        ("auto_translated_physmap", Self::AUTO_TRANSLATED_PHYSMAP),
        ("supervisor_mode_kernel", Self::SUPERVISOR_MODE_KERNEL),
        ("pae_pgdir_above_4gb", Self::PAE_PGDIR_ABOVE_4GB),
        ("hvm_callback_vector", Self::HVM_CALLBACK_VECTOR),
        ("dom0", Self::DOM0),
    ];

    /// The set with these bits (bit `n` is feature `n`).
    pub const fn from_bits(bits: u32) -> Self {
        XenFeatures(bits)
    }

    /// The bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether feature `bit` (one of the constants) is in the set.
    pub const fn contains(self, bit: u32) -> bool {
        bit < 32 && self.0 & (1 << bit) != 0
    }

    fn insert(&mut self, bit: u32) {
        self.0 |= 1 << bit;
    }

    fn bit_of(name: &str) -> Option<u32> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, b)| b)
    }
}

impl fmt::Debug for XenFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut set = f.debug_set();
        for bit in 0..32 {
            if self.contains(bit) {
                match Self::NAMES.iter().find(|&&(_, b)| b == bit) {
                    Some((name, _)) => set.entry(name),
                    None => set.entry(&bit),
                };
            }
        }
        set.finish()
    }
}

/// A note of a type this loader does not interpret, kept as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherNote {
    /// Its type.
    pub kind: u32,
    /// Its descriptor.
    pub desc: Vec<u8>,
}

/// Where the Xen notes were found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NoteSource {
    /// Nowhere: the image has no Xen note.
    #[default]
    None,
    /// `PT_NOTE` segments.
    Segments,
    /// `SHT_NOTE` sections (no `PT_NOTE` segment held a Xen note).
    Sections,
}

/// The Xen notes of a kernel (`xen/include/public/elfnote.h`): what it tells the domain builder
/// about itself, typed. Each field is `None` when the kernel has no such note.
///
/// Notes are read as libelf reads them (`libelf-dominfo.c`): from the `PT_NOTE` segments first,
/// then, only if those hold no Xen note, from the `SHT_NOTE` sections. A note is a header of
/// three 32-bit words (namesz, descsz, type), the name and the descriptor, each padded to four
/// bytes; the owner is the name without its NUL, and only owner `"Xen"` is read. Numbers are 1, 2,
/// 4 or 8 bytes; strings run to their first NUL or the end of the descriptor (Linux's FEATURES
/// note has no NUL of its own). A later note of a type replaces an earlier one.
///
/// Unlike libelf, a number of another size is an error here rather than a silent 0, and a note
/// that runs past its segment is an error rather than the end of the walk. Notes of types this
/// loader does not interpret (L1_MFN_VALID, PHYS32_RELOC, ...) are kept as they are in
/// [`XenNotes::other`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct XenNotes {
    /// ENTRY (1): the PV entry point, a virtual address.
    pub entry: Option<u64>,
    /// HYPERCALL_PAGE (2): where the builder should put the hypercall page (virtual). Modern
    /// Linux has none and makes its own.
    pub hypercall_page: Option<u64>,
    /// VIRT_BASE (3): the virtual address physical 0 of the image maps to (PV).
    pub virt_base: Option<u64>,
    /// PADDR_OFFSET (4): subtracted from VIRT_BASE to map physical to virtual addresses.
    pub paddr_offset: Option<u64>,
    /// XEN_VERSION (5), e.g. `"xen-3.0"`.
    pub xen_version: Option<String>,
    /// GUEST_OS (6), e.g. `"linux"`.
    pub guest_os: Option<String>,
    /// GUEST_VERSION (7).
    pub guest_version: Option<String>,
    /// LOADER (8), e.g. `"generic"`.
    pub loader: Option<String>,
    /// PAE_MODE (9), e.g. `"yes"`.
    pub pae_mode: Option<String>,
    /// FEATURES (10), as written: `|`-separated names, required ones with a `!`.
    pub features: Option<String>,
    /// BSD_SYMTAB (11).
    pub bsd_symtab: Option<String>,
    /// HV_START_LOW (12).
    pub hv_start_low: Option<u64>,
    /// SUSPEND_CANCEL (14).
    pub suspend_cancel: Option<u64>,
    /// INIT_P2M (15): where the PV builder maps the p2m list (virtual).
    pub init_p2m: Option<u64>,
    /// MOD_START_PFN (16): nonzero if the kernel takes its initrd as a pfn, unmapped.
    pub mod_start_pfn: Option<u64>,
    /// SUPPORTED_FEATURES (17): the first 32-bit word of the feature bitmap.
    pub supported_features: Option<u32>,
    /// PHYS32_ENTRY (18): the 32-bit physical entry point of a PVH guest.
    pub phys32_entry: Option<u64>,
    /// The features the kernel supports: FEATURES (with and without `!`) and SUPPORTED_FEATURES.
    pub supported: XenFeatures,
    /// The features the kernel requires: FEATURES names with `!`.
    pub required: XenFeatures,
    /// Xen notes of other types, in the order found.
    pub other: Vec<OtherNote>,
    /// Where they were found.
    pub source: NoteSource,
}

/// Note types (`XEN_ELFNOTE_*`).
mod kind {
    pub const ENTRY: u32 = 1;
    pub const HYPERCALL_PAGE: u32 = 2;
    pub const VIRT_BASE: u32 = 3;
    pub const PADDR_OFFSET: u32 = 4;
    pub const XEN_VERSION: u32 = 5;
    pub const GUEST_OS: u32 = 6;
    pub const GUEST_VERSION: u32 = 7;
    pub const LOADER: u32 = 8;
    pub const PAE_MODE: u32 = 9;
    pub const FEATURES: u32 = 10;
    pub const BSD_SYMTAB: u32 = 11;
    pub const HV_START_LOW: u32 = 12;
    pub const SUSPEND_CANCEL: u32 = 14;
    pub const INIT_P2M: u32 = 15;
    pub const MOD_START_PFN: u32 = 16;
    pub const SUPPORTED_FEATURES: u32 = 17;
    pub const PHYS32_ENTRY: u32 = 18;
}

/// One note, as found.
struct Note<'a> {
    /// Where its header starts in the image.
    offset: u64,
    name: &'a [u8],
    kind: u32,
    desc: &'a [u8],
}

impl Note<'_> {
    fn number(&self, note: &'static str) -> Result<u64> {
        let d = self.desc;
        Ok(match d.len() {
            1 => u64::from(d[0]),
            2 => u64::from(u16::from_le_bytes([d[0], d[1]])),
            4 => u64::from(u32::from_le_bytes([d[0], d[1], d[2], d[3]])),
            8 => u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]),
            _ => return Err(self.bad_size(note, "1, 2, 4 or 8 bytes")),
        })
    }

    fn string(&self) -> String {
        let end = self
            .desc
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.desc.len());
        String::from_utf8_lossy(&self.desc[..end]).into_owned()
    }

    fn bad_size(&self, note: &'static str, expected: &'static str) -> KernelError {
        KernelError::NoteSize {
            note,
            offset: self.offset,
            // The walker read descsz from a u32.
            size: u32::try_from(self.desc.len()).unwrap_or(u32::MAX),
            expected,
        }
    }
}

/// Walks the notes in `image[start..end]` (a segment's or section's bytes, already checked to
/// be inside the image), calling `each` for every note. `count` is the running total across
/// all note areas, for [`MAX_NOTES`].
fn walk<'a>(
    image: &'a [u8],
    start: usize,
    end: usize,
    count: &mut usize,
    mut each: impl FnMut(Note<'a>) -> Result<()>,
) -> Result<()> {
    let word =
        |at: usize| u32::from_le_bytes([image[at], image[at + 1], image[at + 2], image[at + 3]]);
    // A size rounded up to four bytes; None if that overflows.
    let pad4 = |n: u32| usize::try_from(n).ok()?.checked_add(3).map(|n| n & !3);
    let mut at = start;
    while at < end {
        let remaining = end - at;
        if remaining < 12 {
            return Err(KernelError::NoteHeaderTruncated {
                offset: at as u64,
                remaining: remaining as u64,
            });
        }
        *count += 1;
        if *count > MAX_NOTES {
            return Err(KernelError::TooManyNotes { limit: MAX_NOTES });
        }
        let (namesz, descsz, kind) = (word(at), word(at + 4), word(at + 8));
        // The descriptor must fit unpadded (the last note's padding may be cut off by the end
        // of its area, as libelf allows).
        let name_at = at + 12;
        let bounds = (|| {
            let name_end = name_at.checked_add(usize::try_from(namesz).ok()?)?;
            let desc_at = name_at.checked_add(pad4(namesz)?)?;
            let desc_end = desc_at.checked_add(usize::try_from(descsz).ok()?)?;
            let next = desc_at.checked_add(pad4(descsz)?)?.min(end);
            (name_end <= end && desc_end <= end).then_some((name_end, desc_at, desc_end, next))
        })();
        let Some((name_end, desc_at, desc_end, next)) = bounds else {
            return Err(KernelError::NoteOutOfBounds {
                offset: at as u64,
                namesz,
                descsz,
                end: end as u64,
            });
        };
        let name = &image[name_at..name_end];
        // The owner is the name up to its NUL.
        let name = name.split(|&b| b == 0).next().unwrap_or(name);
        each(Note {
            offset: at as u64,
            name,
            kind,
            desc: &image[desc_at..desc_end],
        })?;
        at = next;
    }
    Ok(())
}

impl XenNotes {
    /// Reads the Xen notes from note areas of `image` (each `start..end`, inside the image),
    /// returning how many Xen notes there were.
    pub(crate) fn read_areas(
        &mut self,
        image: &[u8],
        areas: impl IntoIterator<Item = (usize, usize)>,
        count: &mut usize,
    ) -> Result<usize> {
        let mut xen = 0;
        for (start, end) in areas {
            walk(image, start, end, count, |note| {
                if note.name == b"Xen" {
                    xen += 1;
                    self.apply(&note)?;
                }
                Ok(())
            })?;
        }
        Ok(xen)
    }

    fn apply(&mut self, note: &Note<'_>) -> Result<()> {
        match note.kind {
            kind::ENTRY => self.entry = Some(note.number("ENTRY")?),
            kind::HYPERCALL_PAGE => self.hypercall_page = Some(note.number("HYPERCALL_PAGE")?),
            kind::VIRT_BASE => self.virt_base = Some(note.number("VIRT_BASE")?),
            kind::PADDR_OFFSET => self.paddr_offset = Some(note.number("PADDR_OFFSET")?),
            kind::XEN_VERSION => self.xen_version = Some(note.string()),
            kind::GUEST_OS => self.guest_os = Some(note.string()),
            kind::GUEST_VERSION => self.guest_version = Some(note.string()),
            kind::LOADER => self.loader = Some(note.string()),
            kind::PAE_MODE => self.pae_mode = Some(note.string()),
            kind::FEATURES => {
                let features = note.string();
                self.parse_features(&features)?;
                self.features = Some(features);
            }
            kind::BSD_SYMTAB => self.bsd_symtab = Some(note.string()),
            kind::HV_START_LOW => self.hv_start_low = Some(note.number("HV_START_LOW")?),
            kind::SUSPEND_CANCEL => self.suspend_cancel = Some(note.number("SUSPEND_CANCEL")?),
            kind::INIT_P2M => self.init_p2m = Some(note.number("INIT_P2M")?),
            kind::MOD_START_PFN => self.mod_start_pfn = Some(note.number("MOD_START_PFN")?),
            kind::SUPPORTED_FEATURES => {
                // An array of 32-bit words; Xen 4.17 has one (XENFEAT_NR_SUBMAPS).
                let d = note.desc;
                if d.is_empty() || !d.len().is_multiple_of(4) {
                    return Err(note.bad_size("SUPPORTED_FEATURES", "a multiple of 4 bytes"));
                }
                let first = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
                self.supported_features = Some(first);
                self.supported = XenFeatures(self.supported.0 | first);
            }
            kind::PHYS32_ENTRY => self.phys32_entry = Some(note.number("PHYS32_ENTRY")?),
            other => self.other.push(OtherNote {
                kind: other,
                desc: note.desc.to_vec(),
            }),
        }
        Ok(())
    }

    /// libelf's `elf_xen_parse_features`: `name|!name|...`; a `!` marks a required feature.
    /// Unknown supported names are ignored; an unknown required one is an error.
    fn parse_features(&mut self, features: &str) -> Result<()> {
        for token in features.split('|').filter(|t| !t.is_empty()) {
            let (required, name) = match token.strip_prefix('!') {
                Some(name) => (true, name),
                None => (false, token),
            };
            match XenFeatures::bit_of(name) {
                Some(bit) => {
                    self.supported.insert(bit);
                    if required {
                        self.required.insert(bit);
                    }
                }
                None if required => {
                    return Err(KernelError::UnknownRequiredFeature {
                        feature: name.to_owned(),
                    })
                }
                None => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&u32::try_from(name.len()).unwrap().to_le_bytes());
        v.extend_from_slice(&u32::try_from(desc.len()).unwrap().to_le_bytes());
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(name);
        v.resize(v.len().next_multiple_of(4), 0);
        v.extend_from_slice(desc);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    fn read(bytes: &[u8]) -> Result<XenNotes> {
        let mut notes = XenNotes::default();
        notes.read_areas(bytes, [(0, bytes.len())], &mut 0)?;
        Ok(notes)
    }

    #[test]
    fn numbers_of_each_size_and_strings_with_or_without_nul() {
        let mut b = note(
            b"Xen\0",
            kind::ENTRY,
            &0xffff_ffff_8100_0000u64.to_le_bytes(),
        );
        b.extend(note(b"Xen\0", kind::MOD_START_PFN, &[1]));
        b.extend(note(b"Xen\0", kind::SUSPEND_CANCEL, &2u16.to_le_bytes()));
        b.extend(note(b"Xen\0", kind::HV_START_LOW, &3u32.to_le_bytes()));
        b.extend(note(b"Xen\0", kind::GUEST_OS, b"linux\0"));
        b.extend(note(
            b"Xen\0",
            kind::FEATURES,
            b"!writable_page_tables|pae_pgdir_above_4gb",
        ));
        b.extend(note(b"GNU\0", kind::ENTRY, &[9; 8]));
        b.extend(note(b"Xen\0", 13, &[1, 0, 0, 0]));
        let n = read(&b).unwrap();
        assert_eq!(n.entry, Some(0xffff_ffff_8100_0000));
        assert_eq!(n.mod_start_pfn, Some(1));
        assert_eq!(n.suspend_cancel, Some(2));
        assert_eq!(n.hv_start_low, Some(3));
        assert_eq!(n.guest_os.as_deref(), Some("linux"));
        assert_eq!(
            n.features.as_deref(),
            Some("!writable_page_tables|pae_pgdir_above_4gb")
        );
        assert!(n.required.contains(XenFeatures::WRITABLE_PAGE_TABLES));
        assert!(!n.required.contains(XenFeatures::PAE_PGDIR_ABOVE_4GB));
        assert!(n.supported.contains(XenFeatures::PAE_PGDIR_ABOVE_4GB));
        assert_eq!(
            n.other,
            vec![OtherNote {
                kind: 13,
                desc: vec![1, 0, 0, 0]
            }]
        );
    }

    #[test]
    fn a_number_of_three_bytes_is_an_error() {
        let b = note(b"Xen\0", kind::VIRT_BASE, &[1, 2, 3]);
        let err = read(&b).unwrap_err();
        assert!(
            matches!(
                err,
                KernelError::NoteSize {
                    note: "VIRT_BASE",
                    offset: 0,
                    size: 3,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn an_unknown_required_feature_is_an_error_and_an_unknown_supported_one_is_not() {
        let ok = note(b"Xen\0", kind::FEATURES, b"frobnicate|dom0\0");
        let n = read(&ok).unwrap();
        assert!(n.supported.contains(XenFeatures::DOM0));
        assert!(!n.required.contains(XenFeatures::DOM0));
        let bad = note(b"Xen\0", kind::FEATURES, b"!frobnicate\0");
        assert!(matches!(
            read(&bad).unwrap_err(),
            KernelError::UnknownRequiredFeature { feature } if feature == "frobnicate"
        ));
    }

    #[test]
    fn truncated_and_overlong_notes_are_errors() {
        let mut b = note(b"Xen\0", kind::ENTRY, &[0; 8]);
        b.extend_from_slice(&[0; 8]);
        let first = note(b"Xen\0", kind::ENTRY, &[0; 8]).len() as u64;
        assert!(matches!(
            read(&b).unwrap_err(),
            KernelError::NoteHeaderTruncated { offset, remaining: 8 } if offset == first
        ));
        let mut b = note(b"Xen\0", kind::ENTRY, &[0; 8]);
        b[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read(&b).unwrap_err(),
            KernelError::NoteOutOfBounds {
                offset: 0,
                descsz: u32::MAX,
                ..
            }
        ));
    }

    #[test]
    fn the_last_notes_padding_may_be_cut_off() {
        let mut b = note(b"Xen\0", kind::GUEST_OS, b"linux");
        b.truncate(b.len() - 3);
        assert_eq!(read(&b).unwrap().guest_os.as_deref(), Some("linux"));
    }

    #[test]
    fn the_note_count_is_bounded() {
        let one = note(b"", 0, b"");
        let b = one.repeat(MAX_NOTES + 1);
        assert!(matches!(
            read(&b).unwrap_err(),
            KernelError::TooManyNotes { limit: MAX_NOTES }
        ));
    }
}
