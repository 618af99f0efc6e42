//! The PV stages of the executor (`xc_dom_64`'s hooks and `xc_dom_boot_image`).

use xenctrl::abi::{E820Entry, VcpuGuestContext, E820_RAM};
use xenctrl::volatile::ReadWrite;
use xenctrl::x86::{walk, Level};
use xenctrl::{DomId, DomainId, TscInfo, TscMode, XenCtrl};

use super::memory::{self, Fill, Write, WriteStats};
use super::{Break, Breaks, BuildError, Rings};
use crate::build::plan::{Region, PAGE_SIZE};
use crate::build::pv::{PvBoot, PvImage, PvLayout};

/// Bytes of one `vcpu_info` in shared_info (x86).
const VCPU_INFO_SIZE: usize = 64;
/// Offset of `evtchn_upcall_mask` in `vcpu_info`.
const UPCALL_MASK_OFFSET: usize = 1;
/// `sizeof(shared_info_t)` for x86-64: 32 `vcpu_info`s (2048), `evtchn_pending` and
/// `evtchn_mask` (512 each), the wallclock (16), `arch_shared_info` (48). libxenguest clears
/// this much before setting the masks.
const SHARED_INFO_SIZE: usize = 3136;

/// Memory map limit, TSC mode, address size (libxl's `libxl__arch_domain_create` for PV, then
/// the builder's `x86_compat`).
pub(super) fn setup(
    xc: &XenCtrl,
    domid: DomId,
    tsc: TscMode,
    maxmem_kib: u64,
) -> Result<(), BuildError> {
    // xc_domain_set_memmap_limit: one RAM entry covering the static maximum.
    xc.set_memory_map(domid, &[E820Entry::new(0, maxmem_kib << 10, E820_RAM)])
        .map_err(BuildError::xen("cannot set its memory map"))?;
    xc.set_tsc_info(domid, &TscInfo::new(tsc))
        .map_err(BuildError::xen("cannot set its TSC mode"))?;
    xc.set_address_size(domid, 64)
        .map_err(BuildError::xen("cannot make it a 64-bit guest"))?;
    Ok(())
}

/// The byte ranges `load` clears: every segment but those [`write_boot_pages`] writes whole.
pub(super) fn load_areas(l: &PvLayout) -> Vec<(u64, u64)> {
    l.segments()
        .into_iter()
        .filter(|(r, _)| !rendered(*r))
        .map(|(_, s)| (s.pfn * PAGE_SIZE, (s.pfn + s.pages) * PAGE_SIZE))
        .collect()
}

/// Regions whose pages the render produces (and the boot-pages stage clears the rest of).
fn rendered(r: Region) -> bool {
    matches!(r, Region::P2m | Region::StartInfo | Region::PageTables)
}

/// Phase two of the plan, with the test breaks applied.
pub(super) fn render(
    l: &PvLayout,
    p2m: &[u64],
    shared_info_mfn: u64,
    rings: &Rings,
    breaks: &Breaks,
) -> Result<PvImage, BuildError> {
    let store_evtchn = if breaks.has(Break::StoreEvtchn) {
        rings.store_port + 1
    } else {
        rings.store_port
    };
    let mut image = l.render(&PvBoot {
        p2m,
        shared_info_mfn,
        store_evtchn,
        console_evtchn: rings.console_port,
    })?;
    apply_breaks(l, &mut image, p2m, breaks);
    Ok(image)
}

fn apply_breaks(l: &PvLayout, image: &mut PvImage, p2m: &[u64], breaks: &Breaks) {
    if !breaks.any() {
        return;
    }
    if breaks.has(Break::Rip) {
        image.vcpu.rip = image.vcpu.rip.wrapping_add(PAGE_SIZE);
    }
    if breaks.has(Break::Stack) {
        image.vcpu.rsp = image.vcpu.rsp.wrapping_sub(PAGE_SIZE);
        image.vcpu.kernel_sp = image.vcpu.rsp;
    }
    if breaks.has(Break::StartInfoPtr) {
        image.vcpu.rsi = image.vcpu.rsi.wrapping_add(PAGE_SIZE);
    }
    let si = l.start_info_pfn();
    if breaks.has(Break::StartInfo) {
        if let Some(p) = image.pages.iter_mut().find(|p| p.pfn == si) {
            p.bytes[0] ^= 0x20; // "xen-3.0-x86_64" -> "Xen-3.0-x86_64"
        }
    }
    if breaks.has(Break::Cmdline) {
        // The command line in start_info (at 128) loses its last byte.
        if let Some(p) = image.pages.iter_mut().find(|p| p.pfn == si) {
            let cmd = &mut p.bytes[128..128 + 1024];
            if let Some(end) = cmd.iter().position(|&b| b == 0).filter(|&e| e > 0) {
                cmd[end - 1] = 0;
            }
        }
    }
    if breaks.has(Break::P2m) {
        // The entry of the kernel's first frame names the next frame's mfn.
        let pfn = l.kernel().pfn;
        let list = l.p2m();
        let page = list.pfn + pfn / 512;
        let at = usize::try_from(pfn % 512).unwrap_or(0) * 8;
        let wrong = p2m
            .get(usize::try_from(pfn + 1).unwrap_or(usize::MAX))
            .copied();
        if let (Some(p), Some(wrong)) = (image.pages.iter_mut().find(|p| p.pfn == page), wrong) {
            p.bytes[at..at + 8].copy_from_slice(&wrong.to_le_bytes());
        }
    }
    if breaks.has(Break::PageTable) {
        // Clear the L1 entry that maps the entry point.
        let by_mfn: std::collections::HashMap<u64, usize> = image
            .pages
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((*p2m.get(usize::try_from(p.pfn).ok()?)?, i)))
            .collect();
        let pages = &image.pages;
        let source = |frame: u64, index: usize| -> Option<u64> {
            let b = &pages[*by_mfn.get(&frame)?].bytes;
            Some(u64::from_le_bytes(
                b.get(index * 8..index * 8 + 8)?.try_into().ok()?,
            ))
        };
        let rip = l.kernel_layout().entry;
        if let Ok(t) = walk(&source, image.pin_l4_mfn, rip) {
            if t.depth == 4 {
                let l1 = t.tables[3];
                let at = Level::L1.index(rip) * 8;
                if let Some(&i) = by_mfn.get(&l1) {
                    image.pages[i].bytes[at..at + 8].fill(0);
                }
            }
        }
    }
}

/// Writes the rendered pages, and clears what of their regions the render did not produce.
pub(super) fn write_boot_pages(
    xc: &XenCtrl,
    domain: DomainId,
    l: &PvLayout,
    image: &PvImage,
    p2m: &[u64],
) -> Result<WriteStats, BuildError> {
    let mut writes: Vec<Write<'_>> = image
        .pages
        .iter()
        .map(|p| Write {
            addr: p.pfn * PAGE_SIZE,
            fill: Fill::Bytes(&p.bytes),
        })
        .collect();
    let areas: Vec<(u64, u64)> = l
        .segments()
        .into_iter()
        .filter(|(r, _)| rendered(*r))
        .map(|(_, s)| (s.pfn * PAGE_SIZE, (s.pfn + s.pages) * PAGE_SIZE))
        .collect();
    let gaps = memory::zero_gaps(&areas, &writes);
    writes.extend(gaps);
    memory::write_guest(xc, domain, memory::Frames::P2m(p2m), &writes)
}

/// The hypercall page, the pinned L4, shared_info's upcall masks, and vCPU 0's context, in
/// `xc_dom_boot_image`'s order.
pub(super) fn set_vcpus(
    xc: &XenCtrl,
    domid: DomId,
    l: &PvLayout,
    image: &PvImage,
    p2m: &[u64],
    breaks: &Breaks,
) -> Result<(), BuildError> {
    if let Some(hp) = l.hypercall_page() {
        let mfn = usize::try_from(hp.pfn)
            .ok()
            .and_then(|i| p2m.get(i))
            .copied()
            .ok_or(BuildError::Unpopulated {
                pfn: hp.pfn,
                pages: p2m.len() as u64,
            })?;
        xc.hypercall_init(domid, mfn)
            .map_err(BuildError::xen("cannot fill its hypercall page"))?;
    }
    if !breaks.has(Break::Pin) {
        xc.pin_l4_table(domid, image.pin_l4_mfn)
            .map_err(BuildError::xen("cannot pin its page tables"))?;
    }
    // bootlate_pv: shared_info cleared, then every legacy vCPU's upcalls masked.
    let info = xc
        .domain_info(domid)
        .map_err(BuildError::xen("cannot read its shared-info frame"))?;
    let shared = xc
        .map_foreign::<ReadWrite>(DomainId::new(domid), &[info.shared_info_frame])
        .map_err(BuildError::xen("cannot map its shared-info page"))?;
    let page = shared.slice();
    let oob = |_| BuildError::WriteOutOfBounds {
        addr: info.shared_info_frame * PAGE_SIZE,
        len: SHARED_INFO_SIZE as u64,
    };
    page.write_from(0, &[0u8; SHARED_INFO_SIZE]).map_err(oob)?;
    if !breaks.has(Break::UpcallMask) {
        for v in 0..usize::try_from(image.upcall_mask_vcpus).unwrap_or(0) {
            page.write(v * VCPU_INFO_SIZE + UPCALL_MASK_OFFSET, &1u8)
                .map_err(oob)?;
        }
    }
    drop(shared);

    let v = &image.vcpu;
    let mut ctx = VcpuGuestContext::zeroed();
    ctx.user_regs.rip = v.rip;
    ctx.user_regs.rsp = v.rsp;
    ctx.user_regs.rsi = v.rsi;
    ctx.user_regs.rflags = v.rflags;
    ctx.user_regs.cs = v.cs;
    ctx.user_regs.ss = v.ss;
    ctx.user_regs.ds = v.ds;
    ctx.user_regs.es = v.ds;
    ctx.user_regs.fs = v.ds;
    ctx.user_regs.gs = v.ds;
    ctx.flags = v.flags;
    ctx.kernel_ss = v.kernel_ss;
    ctx.kernel_sp = v.kernel_sp;
    ctx.ctrlreg[3] = v.cr3;
    ctx.debugreg[6] = v.dr6;
    ctx.debugreg[7] = v.dr7;
    xc.set_vcpu_context(domid, 0, &ctx)
        .map_err(BuildError::xen("cannot set its boot vCPU's state"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::plan::PAGE_BYTES;

    #[test]
    fn shared_info_size_fits_a_page() {
        const { assert!(SHARED_INFO_SIZE < PAGE_BYTES) };
        assert_eq!(32 * VCPU_INFO_SIZE + 512 + 512 + 16 + 48, SHARED_INFO_SIZE);
    }
}
