//! Where a kernel goes, for a PV or a PVH guest: libelf's `elf_xen_note_check` and
//! `elf_xen_addr_calc_check` (`libelf-dominfo.c`), and the checks of `xg_dom_elfloader.c`.
//!
//! PV: `virt_offset = VIRT_BASE - PADDR_OFFSET` (both default to 0 with ELF notes), the kernel
//! occupies virtual `[pstart + virt_offset, pend + virt_offset)`, and is entered at ENTRY (or
//! `e_entry`, as libelf falls back). PVH: paging is off, so virtual is physical, and the entry is
//! PHYS32_ENTRY, which a PVH kernel must have.

use super::elf::{ElfClass, ElfKernel};
use super::error::{KernelError, Result};
use super::notes::{NoteSource, XenFeatures};

/// The kind of guest a kernel is laid out for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestKind {
    /// Paravirtualised: the builder makes the page tables, the kernel runs at its virtual
    /// addresses from the start.
    Pv,
    /// PVH: an HVM container entered in 32-bit protected mode at PHYS32_ENTRY, paging off.
    Pvh,
}

/// Where a kernel goes and where it is entered, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    /// The guest kind this layout is for.
    pub kind: GuestKind,
    /// VIRT_BASE (0 for PVH, or when the kernel has none).
    pub virt_base: u64,
    /// PADDR_OFFSET (0 for PVH, or when the kernel has none).
    pub paddr_offset: u64,
    /// The kernel's first physical byte (libelf's `pstart`).
    pub pstart: u64,
    /// The end of its physical range (libelf's `pend`).
    pub pend: u64,
    /// The kernel's first virtual byte (libelf's `virt_kstart`); for PVH, `pstart`.
    pub virt_kstart: u64,
    /// The end of its virtual range (libelf's `virt_kend`); for PVH, `pend`.
    pub virt_kend: u64,
    /// Where it is entered: virtual for PV (ENTRY, else `e_entry`), physical for PVH
    /// (PHYS32_ENTRY).
    pub entry: u64,
    /// INIT_P2M: where a PV builder maps the p2m list, if the kernel asks for a place.
    pub p2m_base: Option<u64>,
    /// HYPERCALL_PAGE: where a PV builder puts the hypercall page, if the kernel asks for one
    /// (call `XEN_DOMCTL_hypercall_init` only then).
    pub hypercall_page: Option<u64>,
}

impl KernelLayout {
    /// `VIRT_BASE - PADDR_OFFSET`, modulo 2^64: add it to a physical address of the image to get
    /// the virtual one.
    pub fn virt_offset(&self) -> u64 {
        self.virt_base.wrapping_sub(self.paddr_offset)
    }
}

impl ElfKernel {
    /// Lays the kernel out for a guest of `kind`, with libelf's checks.
    ///
    /// # Errors
    ///
    /// [`KernelError::NoXenNotes`]; for PV: [`KernelError::PvNeedsX86_64`],
    /// [`KernelError::UnsupportedGuest`], [`KernelError::UnsupportedXenVersion`],
    /// [`KernelError::PaddrOffsetWithoutVirtBase`]; for PVH: [`KernelError::NoPhys32Entry`],
    /// [`KernelError::Phys32EntryAbove4G`]; for both: [`KernelError::RequiresDom0`],
    /// [`KernelError::KernelRangeWraps`], [`KernelError::EntryOutOfRange`],
    /// [`KernelError::VirtBaseAboveKernel`], [`KernelError::P2mInsideKernel`].
    pub fn layout(&self, kind: GuestKind) -> Result<KernelLayout> {
        let notes = self.notes();
        if notes.source == NoteSource::None {
            return Err(KernelError::NoXenNotes);
        }
        if notes.required.contains(XenFeatures::DOM0) {
            return Err(KernelError::RequiresDom0);
        }
        let (virt_base, paddr_offset, entry, entry_field) = match kind {
            GuestKind::Pv => {
                if self.class() != ElfClass::Elf64 {
                    return Err(KernelError::PvNeedsX86_64 {
                        bits: self.class().bits(),
                        machine: self.machine(),
                    });
                }
                let prefix =
                    |s: &Option<String>, p: &str| s.as_deref().is_some_and(|s| s.starts_with(p));
                if !prefix(&notes.loader, "generic") && !prefix(&notes.guest_os, "linux") {
                    return Err(KernelError::UnsupportedGuest {
                        guest_os: notes.guest_os.clone(),
                        loader: notes.loader.clone(),
                    });
                }
                if !prefix(&notes.xen_version, "xen-3.0") {
                    return Err(KernelError::UnsupportedXenVersion {
                        xen_version: notes.xen_version.clone(),
                    });
                }
                if let (Some(paddr_offset), None) = (notes.paddr_offset, notes.virt_base) {
                    return Err(KernelError::PaddrOffsetWithoutVirtBase { paddr_offset });
                }
                let (entry, field) = match notes.entry {
                    Some(entry) => (entry, "the ENTRY note"),
                    None => (self.e_entry(), "e_entry"),
                };
                (
                    notes.virt_base.unwrap_or(0),
                    notes.paddr_offset.unwrap_or(0),
                    entry,
                    field,
                )
            }
            GuestKind::Pvh => {
                let entry = notes.phys32_entry.ok_or(KernelError::NoPhys32Entry)?;
                if entry > u64::from(u32::MAX) {
                    return Err(KernelError::Phys32EntryAbove4G { entry });
                }
                (0, 0, entry, "the PHYS32_ENTRY note")
            }
        };
        let virt_offset = virt_base.wrapping_sub(paddr_offset);
        let kstart = self.pstart().wrapping_add(virt_offset);
        let kend = self.pend().wrapping_add(virt_offset);
        if kstart > kend {
            return Err(KernelError::KernelRangeWraps { kstart, kend });
        }
        if entry < kstart || entry > kend {
            return Err(KernelError::EntryOutOfRange {
                entry,
                source_field: entry_field,
                kstart,
                kend,
            });
        }
        if virt_base > kstart {
            return Err(KernelError::VirtBaseAboveKernel { virt_base, kstart });
        }
        if let Some(p2m_base) = notes.init_p2m {
            if (kstart..kend).contains(&p2m_base) {
                return Err(KernelError::P2mInsideKernel {
                    p2m_base,
                    kstart,
                    kend,
                });
            }
        }
        Ok(KernelLayout {
            kind,
            virt_base,
            paddr_offset,
            pstart: self.pstart(),
            pend: self.pend(),
            virt_kstart: kstart,
            virt_kend: kend,
            entry,
            p2m_base: notes.init_p2m,
            hypercall_page: notes.hypercall_page,
        })
    }
}
