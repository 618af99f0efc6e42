//! The PVH stages of the executor (`xc_hvm_32`'s hooks, libxl's `hvm_set_conf_params` and
//! `libxl__arch_domain_create`).

use xenctrl::abi::E820Entry;
use xenctrl::abi::HvmHwCpu;
use xenctrl::hvm_context::{HvmContext, HvmRecord};
use xenctrl::{DomId, DomainId, HvmParam, TscInfo, TscMode, XenCtrl};

use super::memory::{self, Fill, Write, WriteStats};
use super::{Break, Breaks, BuildError, Rings};
use crate::build::plan::{PAGE_SHIFT, PAGE_SIZE};
use crate::build::pvh::{params, PvhImage, PvhLayout, HIGH_MEM_START};

/// `HVMPTM_no_delay_for_missed_ticks`, libxl's default timer mode.
const TIMER_MODE_NO_DELAY_FOR_MISSED_TICKS: u64 = 1;

/// libxl's paging pool for a HAP guest (`libxl__get_required_paging_memory`): 1 MiB per vCPU
/// plus a page per MiB of maximum memory, in bytes.
pub fn paging_pool_bytes(vcpus: u32, maxmem_kib: u64) -> u64 {
    4 * (256 * u64::from(vcpus) + maxmem_kib / 1024) * 1024
}

/// The CPUID topology libxl sets (see [`crate::build::cpuid`]), timer mode, TSC mode, paging
/// pool, then the e820 map.
pub(super) fn setup(
    xc: &XenCtrl,
    domid: DomId,
    l: &PvhLayout,
    tsc: TscMode,
    maxmem_kib: u64,
    breaks: &Breaks,
) -> Result<(), BuildError> {
    if !breaks.has(Break::CpuidTopology) {
        let mut policy = xc
            .cpu_policy(domid)
            .map_err(BuildError::xen("cannot read its CPUID policy"))?;
        crate::build::cpuid::apply_hvm_topology(&mut policy);
        xc.set_cpu_policy(domid, &policy)
            .map_err(BuildError::xen("cannot set its CPUID topology"))?;
    }
    xc.set_hvm_param(
        domid,
        HvmParam::TIMER_MODE,
        TIMER_MODE_NO_DELAY_FOR_MISSED_TICKS,
    )
    .map_err(BuildError::xen("cannot set its timer mode"))?;
    xc.set_tsc_info(domid, &TscInfo::new(tsc))
        .map_err(BuildError::xen("cannot set its TSC mode"))?;
    xc.set_paging_mempool_size(domid, paging_pool_bytes(l.vcpus(), maxmem_kib))
        .map_err(BuildError::xen("cannot size its paging pool"))?;
    let map: Vec<E820Entry> = l
        .e820()
        .iter()
        .map(|e| E820Entry::new(e.addr, e.size, e.kind.code()))
        .collect();
    xc.set_memory_map(domid, &map)
        .map_err(BuildError::xen("cannot set its memory map"))?;
    Ok(())
}

/// The byte ranges `load` clears: the kernel and initrd segments.
pub(super) fn load_areas(l: &PvhLayout) -> Vec<(u64, u64)> {
    l.segments()
        .into_iter()
        .filter(|s| s.region != crate::build::plan::Region::StartInfo)
        .map(|s| memory::byte_range(s.pfns))
        .collect()
}

/// The plan's second phase, with the test breaks applied.
pub(super) fn render(l: &PvhLayout, rings: &Rings, breaks: &Breaks) -> PvhImage {
    let mut image = l.render(rings.store_port, rings.console_port);
    if breaks.has(Break::Rip) {
        image.vcpu.rip = image.vcpu.rip.wrapping_add(PAGE_SIZE);
    }
    if breaks.has(Break::StartInfoPtr) {
        image.vcpu.rbx = image.vcpu.rbx.wrapping_add(PAGE_SIZE);
    }
    let base = l.start_info_address();
    if let Some((_, blob)) = image.writes.iter_mut().find(|(a, _)| *a == base) {
        if breaks.has(Break::StartInfo) {
            blob[0] ^= 0xff;
        }
        if breaks.has(Break::Cmdline) {
            // The command line follows the 56-byte header; it loses its last byte.
            if let Some(cmd) = blob.get_mut(56..) {
                if let Some(end) = cmd.iter().position(|&b| b == 0).filter(|&e| e > 0) {
                    cmd[end - 1] = 0;
                }
            }
        }
    }
    image
}

/// Writes the start info, ACPI and identity map, and clears the rest of the start-info
/// segment, the special pages and the ACPI pages.
pub(super) fn write_boot_pages(
    xc: &XenCtrl,
    domain: DomainId,
    l: &PvhLayout,
    image: &PvhImage,
) -> Result<WriteStats, BuildError> {
    let mut writes: Vec<Write<'_>> = image
        .writes
        .iter()
        .map(|(addr, bytes)| Write {
            addr: *addr,
            fill: Fill::Bytes(bytes),
        })
        .collect();
    let lowmem_pfns = l.lowmem_end() >> PAGE_SHIFT;
    let high_pfn = HIGH_MEM_START >> PAGE_SHIFT;
    // The populated frames in the MMIO hole (ACPI, special pages), and the start info.
    let mut areas: Vec<(u64, u64)> = l
        .populate()
        .into_iter()
        .filter(|r| r.start >= lowmem_pfns && r.start < high_pfn)
        .map(memory::byte_range)
        .collect();
    areas.push(memory::byte_range(l.start_info()));
    let gaps = memory::zero_gaps(&areas, &writes);
    writes.extend(gaps);
    memory::write_guest(xc, domain, memory::Frames::Translated, &writes)
}

/// The HVM parameters: the special pages' (alloc_magic_pages_hvm), then the rings' event
/// channels (bootlate_hvm).
pub(super) fn set_params(
    xc: &XenCtrl,
    domid: DomId,
    image: &PvhImage,
    rings: &Rings,
    breaks: &Breaks,
) -> Result<(), BuildError> {
    for &(index, value) in &image.hvm_params {
        let value = match index {
            params::STORE_PFN if breaks.has(Break::HvmStorePfn) => crate::build::pvh::CONSOLE_PFN,
            params::CONSOLE_EVTCHN if breaks.has(Break::HvmConsoleEvtchn) => {
                u64::from(rings.store_port)
            }
            params::STORE_EVTCHN if breaks.has(Break::StoreEvtchn) => {
                u64::from(rings.store_port + 1)
            }
            _ => value,
        };
        xc.set_hvm_param(domid, HvmParam(index), value)
            .map_err(BuildError::xen("cannot set its HVM parameters"))?;
    }
    Ok(())
}

/// `vcpu_hvm`: Xen's context read for its HEADER and MTRR records; each vCPU's MTRRs set to
/// write-back; vCPU 0's registers last (each load resets the vCPUs it names).
pub(super) fn set_vcpus(
    xc: &XenCtrl,
    domid: DomId,
    l: &PvhLayout,
    image: &PvhImage,
    breaks: &Breaks,
) -> Result<(), BuildError> {
    let full = xc
        .hvm_context(domid)
        .map_err(BuildError::xen("cannot read its HVM context"))?;
    let header = *full
        .header()
        .ok_or(BuildError::MissingHvmRecord { record: "HEADER" })?;
    let mut mtrr = *full
        .mtrr(0)
        .ok_or(BuildError::MissingHvmRecord { record: "MTRR" })?;
    mtrr.msr_mtrr_def_type = image.mtrr_def_type;
    if !breaks.has(Break::Mtrr) {
        for vcpu in 0..l.vcpus() {
            let vcpu = u16::try_from(vcpu).map_err(|_| BuildError::MissingHvmRecord {
                record: "MTRR (vCPU id beyond 16 bits)",
            })?;
            let ctx = HvmContext {
                records: vec![
                    HvmRecord::Header(header),
                    HvmRecord::Mtrr {
                        vcpu,
                        mtrr: Box::new(mtrr),
                    },
                ],
            };
            xc.set_hvm_context(domid, &ctx)
                .map_err(BuildError::xen("cannot set its vCPUs' MTRRs"))?;
        }
    }
    let v = &image.vcpu;
    let mut cpu = HvmHwCpu::zeroed();
    cpu.cs_base = v.cs.base;
    cpu.cs_limit = v.cs.limit;
    cpu.cs_arbytes = v.cs.arbytes;
    cpu.ds_base = v.data.base;
    cpu.ds_limit = v.data.limit;
    cpu.ds_arbytes = v.data.arbytes;
    cpu.es_base = v.data.base;
    cpu.es_limit = v.data.limit;
    cpu.es_arbytes = v.data.arbytes;
    cpu.ss_base = v.data.base;
    cpu.ss_limit = v.data.limit;
    cpu.ss_arbytes = v.data.arbytes;
    cpu.tr_base = v.tr.base;
    cpu.tr_limit = v.tr.limit;
    cpu.tr_arbytes = v.tr.arbytes;
    cpu.cr0 = v.cr0;
    cpu.rip = v.rip;
    cpu.rbx = v.rbx;
    cpu.dr6 = v.dr6;
    cpu.dr7 = v.dr7;
    let ctx = HvmContext {
        records: vec![
            HvmRecord::Header(header),
            HvmRecord::Cpu {
                vcpu: 0,
                cpu: Box::new(cpu),
            },
        ],
    };
    xc.set_hvm_context(domid, &ctx)
        .map_err(BuildError::xen("cannot set its boot vCPU's state"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_pool_is_libxls() {
        // 4 * (256 * vcpus + maxmem MiB) KiB.
        assert_eq!(paging_pool_bytes(1, 128 * 1024), 4 * (256 + 128) * 1024);
        assert_eq!(paging_pool_bytes(4, 1024 * 1024), 4 * (1024 + 1024) * 1024);
    }
}
