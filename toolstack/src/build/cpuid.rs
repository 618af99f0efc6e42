//! The CPUID topology libxl gives HVM and PVH guests (`xc_cpuid_apply_policy`,
//! `tools/libs/guest/xg_cpuid_x86.c` at RELEASE-4.17.5), as a change to a serialised policy.
//!
//! Xen numbers an HVM vCPU's local APIC `2 × vcpu_id`, the illusion of one core per vCPU with
//! no SMT, and leaves the CPUID leaves that describe topology to the toolstack: Xen's default
//! policy still describes the host's packages. libxl (every `xl create`) adjusts them to match
//! the APIC numbering; rxl does the same, so that a guest sees the same CPUID from both tools.
//! (Without it, Debian's PVH Linux from rxl triple-faulted under QEMU TCG's emulated port I/O
//! on Xen 4.20 more often than from xl, and xl's did too when given rxl's old topology. With it,
//! guests of both tools still triple-faulted under that stress now and then, so the topology was
//! one difference, not the platform's whole fault. The rest was XSAVE under QEMU's TCG, which
//! `scripts/xen-vm-test` now hides from Xen: see `toolstack/tests/vm_boot.rs`.)
//!
//! - leaf 1: EDX[28] (HTT) set; EBX[23:16] (logical processors per package) doubled, or 2 if
//!   it was 0, unless doubling would overflow;
//! - leaf 0x8000_0001: ECX[1] (CmpLegacy) clear;
//! - Intel, leaf 4 (each cache subleaf up to the first of type 0): EAX[31:26] (cores per
//!   package, minus one) doubled plus one, EAX[25:14] (threads per cache) zero;
//! - AMD and Hygon, leaf 0x8000_0008: ECX[7:0] (cores, minus one) doubled plus one and
//!   ECX[15:12] (ApicIdCoreSize) one more when it is neither 0 nor 7 or more, unless the core
//!   count would overflow.

use xenctrl::abi::XenCpuidLeaf;

/// The CPU vendor leaf 0 names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// "GenuineIntel".
    Intel,
    /// "AuthenticAMD".
    Amd,
    /// "HygonGenuine".
    Hygon,
    /// Anything else.
    Other,
}

/// The vendor of a serialised policy (leaf 0's EBX, EDX, ECX).
pub fn vendor(leaves: &[XenCpuidLeaf]) -> Vendor {
    let Some(l) = leaves.iter().find(|l| l.leaf == 0) else {
        return Vendor::Other;
    };
    let mut name = [0u8; 12];
    name[..4].copy_from_slice(&l.b.to_le_bytes());
    name[4..8].copy_from_slice(&l.d.to_le_bytes());
    name[8..].copy_from_slice(&l.c.to_le_bytes());
    match &name {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" => Vendor::Amd,
        b"HygonGenuine" => Vendor::Hygon,
        _ => Vendor::Other,
    }
}

/// Applies libxl's HVM topology to `leaves` (see the module notes). Leaves the policy does
/// not have are not added.
pub fn apply_hvm_topology(leaves: &mut [XenCpuidLeaf]) {
    let vendor = vendor(leaves);
    for l in leaves.iter_mut() {
        match l.leaf {
            1 => {
                l.d |= 1 << 28;
                let lppp = (l.b >> 16) & 0xff;
                let lppp = if lppp == 0 {
                    2
                } else if lppp & 0x80 == 0 {
                    lppp * 2
                } else {
                    lppp
                };
                l.b = (l.b & !0x00ff_0000) | (lppp << 16);
            }
            0x8000_0001 => l.c &= !(1 << 1),
            0x8000_0008 if matches!(vendor, Vendor::Amd | Vendor::Hygon) => {
                let nc = l.c & 0xff;
                let size = (l.c >> 12) & 0xf;
                if nc < 0x7f {
                    let size = if size != 0 && size < 7 {
                        size + 1
                    } else {
                        size
                    };
                    let nc = (nc << 1) | 1;
                    l.c = (l.c & !0xf0ff) | (size << 12) | nc;
                }
            }
            _ => {}
        }
    }
    if vendor == Vendor::Intel {
        let mut cache: Vec<&mut XenCpuidLeaf> = leaves.iter_mut().filter(|l| l.leaf == 4).collect();
        cache.sort_by_key(|l| l.subleaf);
        for l in cache {
            if l.a & 0x1f == 0 {
                break;
            }
            let cores = (l.a >> 26) & 0x3f;
            let cores = ((cores << 1) | 1) & 0x3f;
            l.a = (l.a & !(0x3f << 26) & !(0xfff << 14)) | (cores << 26);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenctrl::abi::XEN_CPUID_NO_SUBLEAF;

    fn leaf(leaf: u32, subleaf: u32, a: u32, b: u32, c: u32, d: u32) -> XenCpuidLeaf {
        XenCpuidLeaf {
            leaf,
            subleaf,
            a,
            b,
            c,
            d,
        }
    }

    fn vendor_leaf(name: &[u8; 12]) -> XenCpuidLeaf {
        let w = |i: usize| u32::from_le_bytes([name[i], name[i + 1], name[i + 2], name[i + 3]]);
        leaf(0, XEN_CPUID_NO_SUBLEAF, 0xd, w(0), w(8), w(4))
    }

    /// What Xen 4.17 and 4.20 under QEMU TCG (`-cpu max`, AMD) gave: the default policy rxl
    /// left, and what libxl made of it (seen with `xen-cpuid -p` on both tools' guests).
    #[test]
    fn amd_as_xl_leaves_it_on_the_vm() {
        let n = XEN_CPUID_NO_SUBLEAF;
        let mut p = vec![
            vendor_leaf(b"AuthenticAMD"),
            leaf(1, n, 0x0006_0fb1, 0x0002_0800, 0xf6f8_3203, 0x1fcb_fbfd),
            leaf(0x8000_0001, n, 0x0006_0fb1, 0, 0x73, 0xe5d3_fbfd),
            leaf(0x8000_0008, n, 0x3028, 0x0010_0000, 0x1001, 0),
        ];
        apply_hvm_topology(&mut p);
        assert_eq!(p[1].b, 0x0004_0800);
        assert_eq!(p[1].d, 0x1fcb_fbfd);
        assert_eq!(p[2].c, 0x71);
        assert_eq!(p[3].c, 0x2003);
    }

    #[test]
    fn edges_of_the_counts() {
        let n = XEN_CPUID_NO_SUBLEAF;
        let mut p = vec![
            vendor_leaf(b"AuthenticAMD"),
            leaf(1, n, 0, 0, 0, 0),
            leaf(0x8000_0008, n, 0, 0, 0x7f, 0),
        ];
        apply_hvm_topology(&mut p);
        assert_eq!((p[1].b >> 16) & 0xff, 2, "0 becomes 2");
        assert_eq!(p[1].d, 1 << 28, "HTT");
        assert_eq!(p[2].c, 0x7f, "no overflow of the core count");
        let mut p = vec![leaf(1, n, 0, 0x0080_0000, 0, 0)];
        apply_hvm_topology(&mut p);
        assert_eq!(p[0].b, 0x0080_0000, "0x80 is not doubled");
        // ApicIdCoreSize 0 keeps its meaning; 7 is the most.
        for (size, want) in [(0, 0), (6, 7), (7, 7)] {
            let mut p = vec![
                vendor_leaf(b"HygonGenuine"),
                leaf(0x8000_0008, n, 0, 0, size << 12 | 3, 0),
            ];
            apply_hvm_topology(&mut p);
            assert_eq!(p[1].c, want << 12 | 7, "size {size}");
        }
    }

    #[test]
    fn intel_cache_leaves_until_the_first_null_one() {
        let n = XEN_CPUID_NO_SUBLEAF;
        // Type 1 (data), 3 cores per package (minus one: 3 << 26), 1 thread per cache.
        let cache = |sub, ty: u32| leaf(4, sub, (3 << 26) | (1 << 14) | ty, 0, 0, 0);
        let mut p = vec![
            vendor_leaf(b"GenuineIntel"),
            cache(1, 2),
            cache(0, 1),
            cache(2, 0),
            cache(3, 3),
            leaf(0x8000_0008, n, 0, 0, 0x1001, 0),
        ];
        apply_hvm_topology(&mut p);
        assert_eq!(p[1].a, (7 << 26) | 2);
        assert_eq!(p[2].a, (7 << 26) | 1);
        assert_eq!(p[3].a, (3 << 26) | (1 << 14), "past the first null subleaf");
        assert_eq!(
            p[4].a,
            (3 << 26) | (1 << 14) | 3,
            "past the first null subleaf"
        );
        assert_eq!(p[5].c, 0x1001, "leaf 0x80000008 is AMD's to change");
        assert_eq!(vendor(&p), Vendor::Intel);
        assert_eq!(vendor(&[]), Vendor::Other);
    }
}
