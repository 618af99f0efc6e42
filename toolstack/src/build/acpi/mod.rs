//! ACPI tables for a PVH guest, where libxl puts them (`libxl_x86_acpi.c`, `libacpi/build.c`
//! at RELEASE-4.17.5), as bytes with their guest-physical addresses.
//!
//! ```text
//! 0xFFFC0      RSDP (ACPI 2.0, 36 bytes)  -> RSDT, XSDT      (the last 64 bytes below 1 MiB,
//!                                                             where Linux's search finds it)
//! 0xFC001000   DSDT, FADT, MADT, XSDT, RSDT, each 16-byte aligned, at most 16 pages
//!              (0xFC000000 is libxl's acpi_info page, which only hvmloader's DSDT reads)
//! ```
//!
//! What differs from libxl, and why:
//! - The FADT (revision 5, 268 bytes) says `HW_REDUCED_ACPI`: a PVH guest has no PM1 blocks,
//!   PM timer, SCI or RTC (Xen emulates only the local APIC for it), so there is no fixed
//!   hardware to describe. libxl copies hvmloader's FADT and clears parts of it instead. There is
//!   no FACS, which a hardware-reduced platform does without, and no revision-1 FADT for ACPI 1.0
//!   systems: the RSDT lists the same tables as the XSDT.
//! - The DSDT is generated: one processor device (`ACPI0007`, `_UID` = the MADT processor id)
//!   per vCPU, where libxl links a DSDT compiled for the maximum number of vCPUs.
//!
//! Kept from libxl: OEM "Xen"/"HVM", creator "HVML", a MADT with the local APIC at 0xFEE00000,
//! `PCAT_COMPAT`, and one enabled local-APIC entry per vCPU with APIC id `2 * vcpu`; no I/O APIC.

// Every narrowing cast here is bounded by construction: table addresses are below 4 GiB
// (TABLES_ADDRESS plus at most 64 KiB), table lengths below 64 KiB, vCPU ids below 128 (APIC
// ids below 256), AML length bytes are shifted and masked to 8 bits, and integers are matched
// to the encoding that holds them.
#![allow(clippy::cast_possible_truncation)]

use crate::build::plan::{pages_for, PlanError, PAGE_SIZE};

/// libxl's `ACPI_INFO_PHYSICAL_ADDRESS`: the start of the ACPI area, in the MMIO hole.
pub const ACPI_INFO_PHYSICAL_ADDRESS: u64 = 0xfc00_0000;
/// Where the tables start: the page after the info page.
pub const TABLES_ADDRESS: u64 = ACPI_INFO_PHYSICAL_ADDRESS + PAGE_SIZE;
/// libxl's `NUM_ACPI_PAGES`: the most pages the tables may take.
pub const MAX_TABLE_PAGES: u64 = 16;
/// The RSDP's address for a Linux guest without `XENFEAT_linux_rsdp_unrestricted`: the last 64
/// bytes below 1 MiB.
pub const RSDP_LOW_ADDRESS: u64 = 0x10_0000 - 64;
/// The local APIC's address.
pub const LAPIC_BASE_ADDRESS: u32 = 0xfee0_0000;
/// The most vCPUs the tables describe (`HVM_MAX_VCPUS`; APIC ids `2 * vcpu` fit a byte).
pub const MAX_VCPUS: u32 = 128;

/// The header's size.
pub const HEADER_LEN: usize = 36;
/// The bytes libxl hands over for the RSDP (its ACPI module 0), and reserves in the e820.
pub const RSDP_MODULE_LEN: u64 = 64;
/// The RSDP's size (ACPI 2.0).
pub const RSDP_LEN: usize = 36;
/// The FADT's size (revision 5).
pub const FADT_LEN: usize = 268;

/// FADT flags: WBINVD.
pub const FADT_WBINVD: u32 = 1 << 0;
/// FADT flags: C1 supported.
pub const FADT_PROC_C1: u32 = 1 << 2;
/// FADT flags: the power button is a control method device (no fixed one).
pub const FADT_PWR_BUTTON: u32 = 1 << 4;
/// FADT flags: the sleep button is a control method device (no fixed one).
pub const FADT_SLP_BUTTON: u32 = 1 << 5;
/// FADT flags: hardware-reduced ACPI.
pub const FADT_HW_REDUCED_ACPI: u32 = 1 << 20;
/// FADT `IAPC_BOOT_ARCH`: no VGA.
pub const FADT_NO_VGA: u16 = 1 << 2;
/// FADT `IAPC_BOOT_ARCH`: no CMOS RTC.
pub const FADT_NO_CMOS_RTC: u16 = 1 << 5;

/// The tables, ready to copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiTables {
    /// The RSDP's guest-physical address.
    pub rsdp_address: u64,
    /// The RSDP's 36 bytes.
    pub rsdp: Vec<u8>,
    /// The tables' guest-physical address ([`TABLES_ADDRESS`]).
    pub tables_address: u64,
    /// The tables, padded to whole pages.
    pub tables: Vec<u8>,
}

impl AcpiTables {
    /// Pages the tables take from [`TABLES_ADDRESS`].
    pub fn table_pages(&self) -> u64 {
        self.tables.len() as u64 / PAGE_SIZE
    }

    /// Builds the tables for `vcpus` vCPUs, the RSDP at `rsdp_address` (see
    /// [`rsdp_address`]).
    ///
    /// # Errors
    ///
    /// [`PlanError::NoVcpus`], [`PlanError::TooManyVcpus`] above [`MAX_VCPUS`],
    /// [`PlanError::AcpiTooLarge`] if the tables would pass [`MAX_TABLE_PAGES`].
    pub fn build(vcpus: u32, rsdp_address: u64) -> Result<AcpiTables, PlanError> {
        if vcpus == 0 {
            return Err(PlanError::NoVcpus);
        }
        if vcpus > MAX_VCPUS {
            return Err(PlanError::TooManyVcpus {
                vcpus,
                max: MAX_VCPUS,
            });
        }
        let mut area = Area {
            bytes: Vec::new(),
            base: TABLES_ADDRESS,
        };
        let dsdt = area.put(&dsdt(vcpus));
        let fadt = area.put(&fadt(dsdt));
        let madt = area.put(&madt(vcpus));
        let xsdt = area.put(&xsdt(&[fadt, madt]));
        let rsdt = area.put(&rsdt(&[fadt, madt]));
        let need = area.bytes.len() as u64;
        let max = MAX_TABLE_PAGES * PAGE_SIZE;
        if need > max {
            return Err(PlanError::AcpiTooLarge { need, max });
        }
        let mut tables = area.bytes;
        tables.resize((pages_for(need) * PAGE_SIZE) as usize, 0);
        Ok(AcpiTables {
            rsdp_address,
            rsdp: rsdp(rsdt, xsdt),
            tables_address: TABLES_ADDRESS,
            tables,
        })
    }
}

/// Where libxl puts the RSDP: below 1 MiB for a Linux kernel without
/// `XENFEAT_linux_rsdp_unrestricted` (some Linux versions ignore `hvm_start_info.rsdp_paddr`
/// and search there), else in the page after the tables.
pub fn rsdp_address(linux_without_rsdp_unrestricted: bool, table_pages: u64) -> u64 {
    if linux_without_rsdp_unrestricted {
        RSDP_LOW_ADDRESS
    } else {
        TABLES_ADDRESS + table_pages * PAGE_SIZE
    }
}

/// A bump allocator over the table area: 16-byte aligned, as libxl's `mem_alloc`.
struct Area {
    bytes: Vec<u8>,
    base: u64,
}

impl Area {
    fn put(&mut self, table: &[u8]) -> u64 {
        let at = self.bytes.len().next_multiple_of(16);
        self.bytes.resize(at, 0);
        self.bytes.extend_from_slice(table);
        self.base + at as u64
    }
}

/// The byte that makes `bytes` sum to zero, given that the checksum byte is zero.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, &b| a.wrapping_add(b))
        .wrapping_neg()
}

/// A table: the standard header (`revision`, libxl's OEM and creator), `body`, its checksum.
fn table(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(HEADER_LEN + body.len());
    t.extend_from_slice(signature);
    // Tables here are at most a few KiB.
    t.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0); // checksum
    t.extend_from_slice(b"Xen\0\0\0"); // OEM id
    t.extend_from_slice(b"HVM\0\0\0\0\0"); // OEM table id
    t.extend_from_slice(&0u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(b"HVML"); // creator id
    t.extend_from_slice(&0u32.to_le_bytes()); // creator revision
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

fn rsdp(rsdt: u64, xsdt: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(RSDP_LEN);
    r.extend_from_slice(b"RSD PTR ");
    r.push(0); // checksum over the first 20 bytes
    r.extend_from_slice(b"Xen\0\0\0");
    r.push(2); // revision: ACPI 2.0
               // The tables are in the MMIO hole, below 4 GiB.
    r.extend_from_slice(&(rsdt as u32).to_le_bytes());
    r.extend_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    r.extend_from_slice(&xsdt.to_le_bytes());
    r.push(0); // extended checksum
    r.extend_from_slice(&[0; 3]);
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    r
}

fn xsdt(entries: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
    table(b"XSDT", 1, &body)
}

fn rsdt(entries: &[u64]) -> Vec<u8> {
    // Below 4 GiB: see rsdp().
    let body: Vec<u8> = entries
        .iter()
        .flat_map(|&e| (e as u32).to_le_bytes())
        .collect();
    table(b"RSDT", 1, &body)
}

fn fadt(dsdt: u64) -> Vec<u8> {
    let mut body = vec![0u8; FADT_LEN - HEADER_LEN];
    let mut put = |offset: usize, bytes: &[u8]| {
        let at = offset - HEADER_LEN;
        body[at..at + bytes.len()].copy_from_slice(bytes);
    };
    put(40, &(dsdt as u32).to_le_bytes()); // DSDT (below 4 GiB)
    put(109, &(FADT_NO_VGA | FADT_NO_CMOS_RTC).to_le_bytes()); // IAPC_BOOT_ARCH
    let flags =
        FADT_WBINVD | FADT_PROC_C1 | FADT_PWR_BUTTON | FADT_SLP_BUTTON | FADT_HW_REDUCED_ACPI;
    put(112, &flags.to_le_bytes());
    put(140, &dsdt.to_le_bytes()); // X_DSDT
    table(b"FACP", 5, &body)
}

fn madt(vcpus: u32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&LAPIC_BASE_ADDRESS.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT
    for cpu in 0..vcpus {
        // cpu < 128: the id and 2 * id fit a byte.
        body.extend_from_slice(&[0, 8, cpu as u8, (cpu * 2) as u8]);
        body.extend_from_slice(&1u32.to_le_bytes()); // enabled
    }
    table(b"APIC", 2, &body)
}

/// AML's PkgLength: the length of what follows the opcode, itself included.
fn pkg_length(content: usize) -> Vec<u8> {
    for n in 1..=4usize {
        let total = content + n;
        let fits = if n == 1 {
            total < 64
        } else {
            total < 1 << (4 + 8 * (n - 1))
        };
        if fits {
            if n == 1 {
                return vec![total as u8];
            }
            let mut v = vec![(((n - 1) as u8) << 6) | (total & 0xf) as u8];
            for i in 0..n - 1 {
                v.push((total >> (4 + 8 * i)) as u8);
            }
            return v;
        }
    }
    // Our DSDT is a few KiB; the 4-byte form covers 256 MiB.
    vec![0xff, 0xff, 0xff, 0xff]
}

/// `Name(seg, "string")`.
fn aml_name_string(seg: &[u8; 4], s: &str) -> Vec<u8> {
    let mut v = vec![0x08];
    v.extend_from_slice(seg);
    v.push(0x0d);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

/// `Name(seg, n)` with the shortest integer encoding.
fn aml_name_int(seg: &[u8; 4], n: u32) -> Vec<u8> {
    let mut v = vec![0x08];
    v.extend_from_slice(seg);
    match n {
        0 => v.push(0x00),
        1 => v.push(0x01),
        2..=0xff => v.extend_from_slice(&[0x0a, n as u8]),
        0x100..=0xffff => {
            v.push(0x0b);
            v.extend_from_slice(&(n as u16).to_le_bytes());
        }
        _ => {
            v.push(0x0c);
            v.extend_from_slice(&n.to_le_bytes());
        }
    }
    v
}

/// The name of vCPU `cpu`'s processor device: `C` and three hex digits.
pub fn processor_name(cpu: u32) -> [u8; 4] {
    let hex = |d: u32| b"0123456789ABCDEF"[(d & 0xf) as usize];
    [b'C', hex(cpu >> 8), hex(cpu >> 4), hex(cpu)]
}

fn dsdt(vcpus: u32) -> Vec<u8> {
    let mut devices = Vec::new();
    for cpu in 0..vcpus {
        let mut inner = Vec::new();
        inner.extend_from_slice(&processor_name(cpu));
        inner.extend(aml_name_string(b"_HID", "ACPI0007"));
        inner.extend(aml_name_int(b"_UID", cpu));
        devices.extend_from_slice(&[0x5b, 0x82]); // DeviceOp
        devices.extend(pkg_length(inner.len()));
        devices.extend(inner);
    }
    let mut scope_body = b"\\_SB_".to_vec();
    scope_body.extend(devices);
    let mut aml = vec![0x10]; // ScopeOp
    aml.extend(pkg_length(scope_body.len()));
    aml.extend(scope_body);
    table(b"DSDT", 2, &aml)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums_to_zero(b: &[u8]) -> bool {
        b.iter().fold(0u8, |a, &x| a.wrapping_add(x)) == 0
    }

    #[test]
    fn pkg_length_encodings() {
        assert_eq!(pkg_length(10), vec![11]);
        assert_eq!(pkg_length(62), vec![63]);
        // 63 + 2 = 65 = 0x41: low nibble 1, then 0x04.
        assert_eq!(pkg_length(63), vec![0x41, 0x04]);
        assert_eq!(pkg_length(4093), vec![0x4f, 0xff]);
        assert_eq!(pkg_length(4094), vec![0x80 | 0x01, 0x00, 0x01]);
    }

    #[test]
    fn integers_take_their_shortest_form() {
        assert_eq!(aml_name_int(b"_UID", 0)[5..], [0x00]);
        assert_eq!(aml_name_int(b"_UID", 1)[5..], [0x01]);
        assert_eq!(aml_name_int(b"_UID", 127)[5..], [0x0a, 127]);
        assert_eq!(aml_name_int(b"_UID", 300)[5..], [0x0b, 0x2c, 0x01]);
        assert_eq!(
            aml_name_int(b"_UID", 70000)[5..],
            [0x0c, 0x70, 0x11, 0x01, 0x00]
        );
    }

    #[test]
    fn every_table_and_the_rsdp_sum_to_zero() {
        let t = AcpiTables::build(4, RSDP_LOW_ADDRESS).unwrap();
        assert!(sums_to_zero(&t.rsdp[..20]));
        assert!(sums_to_zero(&t.rsdp));
        for tab in [dsdt(4), fadt(0x1234), madt(4), xsdt(&[1, 2]), rsdt(&[1, 2])] {
            let len = u32::from_le_bytes(tab[4..8].try_into().unwrap()) as usize;
            assert_eq!(len, tab.len());
            assert!(sums_to_zero(&tab), "{:?}", &tab[..4]);
        }
        assert_eq!(fadt(0).len(), FADT_LEN);
        assert_eq!(t.table_pages(), 1);
        assert_eq!(processor_name(0x7f), *b"C07F");
    }

    #[test]
    fn vcpu_bounds() {
        assert!(matches!(AcpiTables::build(0, 0), Err(PlanError::NoVcpus)));
        assert!(matches!(
            AcpiTables::build(129, 0),
            Err(PlanError::TooManyVcpus {
                vcpus: 129,
                max: 128
            })
        ));
        let t = AcpiTables::build(128, 0).unwrap();
        assert!(t.table_pages() <= MAX_TABLE_PAGES);
    }
}
