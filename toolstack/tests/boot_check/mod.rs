//! A structural boot check through the public xenctrl and xenstore APIs only: what a booting
//! guest would find, read back from a domain built (and left paused) by `create`.
//!
//! PV: vCPU 0's context; the page tables walked from its CR3 to the entry point, the boot
//! stack and start_info; start_info's fields against xenstore and Xen; the p2m list walked at
//! `mfn_list` against the page tables; the kernel's bytes at their virtual addresses; the
//! initrd; shared_info's upcall masks; the pinned L4; the seeded grants; the xenstore keys.
//! PVH: the HVM context's CPU and MTRR records; hvm_start_info at `rbx` and what it points at
//! (command line, memory map, RSDP, module list); the kernel at its physical addresses; the
//! HVM parameters; the special pages; the grants; xenstore.
//!
//! Each failed check is a [`Fault`] named after what it checks; the names match the build
//! breaks (`toolstack::build::exec::Break::name`) that should trip them.

#![allow(dead_code)]
// each test file uses a different subset
// Guest addresses in a small test guest fit every integer type.
#![allow(clippy::cast_possible_truncation)]

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use toolstack::build::kernel::{ElfKernel, GuestKind, ImageLimits};
use toolstack::Host;
use xenctrl::abi::{GrantEntryV1, HvmStartInfo, StartInfo, SIF_MOD_START_PFN};
use xenctrl::evtchn::ChannelState;
use xenctrl::volatile::ReadOnly;
use xenctrl::x86::{walk, FrameSource, PteFlags};
use xenctrl::{DomainId, HvmParam, Resource};
use zerocopy::FromBytes;

/// One failed check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What was checked (a break's name where one breaks it).
    pub check: &'static str,
    /// What was found.
    pub detail: String,
}

/// What the guest was built from.
#[derive(Clone, Debug)]
pub struct Expect {
    /// The unpacked ELF image.
    pub elf: Vec<u8>,
    /// The command line.
    pub cmdline: String,
    /// The initrd's bytes.
    pub initrd: Option<Vec<u8>>,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
}

/// Collects faults.
#[derive(Default)]
pub struct Faults(pub Vec<Fault>);

impl Faults {
    fn check(&mut self, ok: bool, check: &'static str, detail: impl FnOnce() -> String) {
        if !ok {
            self.0.push(Fault {
                check,
                detail: detail(),
            });
        }
    }

    /// The checks that failed.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.0.iter().map(|f| f.check).collect();
        v.dedup();
        v
    }
}

/// Guest memory read through foreign mappings, a page at a time, cached.
pub struct Mem<'a> {
    host: &'a Host,
    domain: DomainId,
    pages: RefCell<HashMap<u64, Option<Vec<u8>>>>,
}

impl<'a> Mem<'a> {
    pub fn new(host: &'a Host, domid: u16) -> Self {
        Mem {
            host,
            domain: DomainId::new(domid),
            pages: RefCell::new(HashMap::new()),
        }
    }

    /// The page at `frame` (a machine frame for PV, a guest frame for PVH).
    pub fn page(&self, frame: u64) -> Option<Vec<u8>> {
        if let Some(p) = self.pages.borrow().get(&frame) {
            return p.clone();
        }
        let got = self
            .host
            .xc
            .map_foreign::<ReadOnly>(self.domain, &[frame])
            .ok()
            .and_then(|m| m.slice().to_vec(0, 4096).ok());
        self.pages.borrow_mut().insert(frame, got.clone());
        got
    }

    /// `len` bytes from guest-physical `addr` (PVH: frames are guest frames).
    pub fn phys(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        let mut at = addr;
        while out.len() < len {
            let page = self.page(at >> 12)?;
            let off = (at & 0xfff) as usize;
            let n = (4096 - off).min(len - out.len());
            out.extend_from_slice(&page[off..off + n]);
            at += n as u64;
        }
        Some(out)
    }
}

impl FrameSource for Mem<'_> {
    fn entry(&self, frame: u64, index: usize) -> Option<u64> {
        let p = self.page(frame)?;
        Some(u64::from_le_bytes(
            p.get(index * 8..index * 8 + 8)?.try_into().ok()?,
        ))
    }
}

/// Reads `len` bytes at virtual `va` through the page tables at `root` (PV).
fn virt(mem: &Mem<'_>, root: u64, va: u64, len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    let mut at = va;
    while out.len() < len {
        let t = walk(mem, root, at).ok()?;
        let page = mem.page(t.frame)?;
        let off = t.offset as usize;
        let n = (4096 - off).min(len - out.len());
        out.extend_from_slice(&page[off..off + n]);
        at += n as u64;
    }
    Some(out)
}

fn xs_u64(host: &Host, path: &str) -> Option<u64> {
    host.xs.read_string(path).ok()?.trim().parse().ok()
}

fn xs_str(host: &Host, path: &str) -> Option<String> {
    host.xs.read_string(path).ok()
}

/// The grant table's first entries.
fn grants(host: &Host, domid: u16) -> Option<[GrantEntryV1; 2]> {
    let m = host
        .xc
        .map_resource::<ReadOnly>(DomainId::new(domid), Resource::GRANT_TABLE, 0, 1)
        .ok()?;
    let s = m.slice();
    Some([s.read(0).ok()?, s.read(8).ok()?])
}

/// The NUL-terminated string at the start of `bytes`.
fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Checks a built guest (PV or PVH, as Xen says).
pub fn check(host: &Host, domid: u16, expect: &Expect) -> Faults {
    let hvm = host.xc.domain_info(domid).expect("domain info").hvm();
    let mut f = if hvm {
        check_pvh(host, domid, expect)
    } else {
        check_pv(host, domid, expect)
    };
    check_xenstore(host, domid, expect, &mut f);
    // The simulator's own structural check, made when the domain was first unpaused.
    if let Some(report) = host.xc.sim_boot_report(domid).expect("boot report") {
        f.check(report.booted(), "sim-boot", || report.to_string());
    }
    f
}

/// The end of xenstore's req and rsp rings and their four indices; the console page's rings
/// and indices start there too.
const RING_DATA_END: usize = 2064;

/// Whether the simulator ran the domain (it has a boot report).
fn ran(host: &Host, domid: u16) -> bool {
    matches!(host.xc.sim_boot_report(domid), Ok(Some(_)))
}

/// Checks common to both kinds: xenstore's keys and the domain's introduction.
fn check_xenstore(host: &Host, domid: u16, expect: &Expect, f: &mut Faults) {
    let dom = format!("/local/domain/{domid}");
    let get = |k: &str| xs_str(host, &format!("{dom}/{k}"));
    for (k, want) in [
        ("console/type", "xenconsoled".to_owned()),
        ("console/output", "pty".to_owned()),
        ("console/limit", "1048576".to_owned()),
        ("memory/target", (expect.memory_mib * 1024).to_string()),
        ("memory/static-max", (expect.memory_mib * 1024).to_string()),
        ("memory/videoram", "0".to_owned()),
        ("domid", domid.to_string()),
    ] {
        let got = get(k);
        f.check(got.as_deref() == Some(want.as_str()), "xenstore", || {
            format!("{k} = {got:?}, expected {want:?}")
        });
    }
    for v in 0..expect.vcpus {
        let got = get(&format!("cpu/{v}/availability"));
        f.check(got.as_deref() == Some("online"), "xenstore", || {
            format!("cpu/{v}/availability = {got:?}")
        });
    }
    // /vm/UUID: the start time, and for PV the image.
    let vm = get("vm").unwrap_or_default();
    let vm_key = |k: &str| xs_str(host, &format!("{vm}/{k}"));
    f.check(vm_key("start_time").is_some(), "xenstore", || {
        format!("{vm}/start_time missing")
    });
    if !host.xc.domain_info(domid).is_ok_and(|i| i.hvm()) {
        f.check(
            vm_key("image/ostype").as_deref() == Some("linux"),
            "xenstore",
            || format!("{vm}/image/ostype = {:?}", vm_key("image/ostype")),
        );
        f.check(
            vm_key("image/cmdline").as_deref() == Some(expect.cmdline.as_str()),
            "xenstore",
            || format!("{vm}/image/cmdline = {:?}", vm_key("image/cmdline")),
        );
    }
    let introduced = host
        .xs
        .is_domain_introduced(u32::from(domid))
        .unwrap_or(false);
    f.check(introduced, "xenstore", || {
        "not introduced to xenstored".into()
    });
    // Both rings' event channels: ports for dom0, as the keys say.
    for key in ["store/port", "console/port"] {
        let port = xs_u64(host, &format!("{dom}/{key}"));
        let status = port.and_then(|p| {
            let port = xenctrl::evtchn::Port::new(u32::try_from(p).ok()?);
            host.xc
                .evtchn_status(DomainId::new(domid), port)
                .ok()
                .map(|s| s.state)
        });
        // Unbound for dom0, or bound by dom0 already (a backend that connected).
        f.check(
            matches!(
                status,
                Some(
                    ChannelState::Unbound { remote } | ChannelState::Interdomain { remote, .. }
                ) if remote.get() == 0
            ),
            if key == "store/port" {
                "store-evtchn"
            } else {
                "console-evtchn"
            },
            || format!("{key} = {port:?} is {status:?}, not unbound for dom0"),
        );
    }
}

fn kernel_of(expect: &Expect) -> ElfKernel {
    ElfKernel::parse(&expect.elf, &ImageLimits::default()).expect("the expected kernel parses")
}

/// The kernel's loadable segments: (guest address, file bytes, memsz).
fn segments(
    expect: &Expect,
    kernel: &ElfKernel,
    base: impl Fn(u64) -> u64,
) -> Vec<(u64, Vec<u8>, u64)> {
    kernel
        .segments()
        .iter()
        .map(|s| {
            let off = s.offset() as usize;
            (
                base(s.paddr()),
                expect.elf[off..off + s.filesz() as usize].to_vec(),
                s.memsz(),
            )
        })
        .collect()
}

pub fn check_pv(host: &Host, domid: u16, expect: &Expect) -> Faults {
    let mut f = Faults::default();
    let kernel = kernel_of(expect);
    let layout = kernel.layout(GuestKind::Pv).expect("PV layout");
    let info = host.xc.domain_info(domid).expect("domain info");
    let mem = Mem::new(host, domid);
    let Ok(ctx) = host.xc.vcpu_context(domid, 0) else {
        f.check(false, "rip", || "vCPU 0 has no context".into());
        return f;
    };
    let r = &ctx.user_regs;
    f.check(ctx.flags & 0x24 == 0x24, "vcpu", || {
        format!("flags {:#x}", ctx.flags)
    });
    f.check(r.cs == 0xe033 && r.ss == 0xe02b, "vcpu", || {
        format!("cs {:#x} ss {:#x}", r.cs, r.ss)
    });
    f.check(r.rip == layout.entry, "rip", || {
        format!("rip {:#x}, ENTRY is {:#x}", r.rip, layout.entry)
    });
    let root = ctx.ctrlreg[3] >> 12;
    // The entry point is mapped, executable, and holds the kernel's bytes.
    match walk(&mem, root, layout.entry) {
        Err(e) => f.check(false, "page-table", || format!("ENTRY: {e}")),
        Ok(t) => f.check(!t.flags.contains(PteFlags::NX), "page-table", || {
            "ENTRY is not executable".into()
        }),
    }
    // The kernel's bytes at their virtual addresses, bss zero.
    let offset = layout.virt_offset();
    for (va, bytes, memsz) in segments(expect, &kernel, |p| p.wrapping_add(offset)) {
        let got = virt(&mem, root, va, memsz as usize);
        let ok = got.as_ref().is_some_and(|g| {
            g[..bytes.len()] == bytes[..] && g[bytes.len()..].iter().all(|&b| b == 0)
        });
        f.check(ok, "kernel", || format!("segment at {va:#x} differs"));
    }
    // The stack: the page below rsp is mapped writable (page tables are not).
    match walk(&mem, root, r.rsp.wrapping_sub(8)) {
        Ok(t) => f.check(t.flags.contains(PteFlags::RW), "stack", || {
            format!("rsp {:#x} is on a read-only page", r.rsp)
        }),
        Err(e) => f.check(false, "stack", || format!("rsp {:#x}: {e}", r.rsp)),
    }
    // start_info at rsi.
    let si = virt(&mem, root, r.rsi, size_of::<StartInfo>())
        .and_then(|b| StartInfo::read_from_bytes(&b).ok());
    let pages = expect.memory_mib * 256;
    let si = match si {
        Some(si) if si.nr_pages == pages && si.shared_info == info.shared_info_frame << 12 => si,
        other => {
            f.check(false, "start-info-ptr", || {
                format!(
                    "rsi {:#x} does not lead to start_info ({:?} pages)",
                    r.rsi,
                    other.map(|s| s.nr_pages)
                )
            });
            return f;
        }
    };
    f.check(
        si.magic.starts_with(b"xen-3.0-x86_64\0"),
        "start-info",
        || format!("magic {:?}", c_str(&si.magic)),
    );
    let cmd = c_str(&si.cmd_line);
    f.check(cmd == expect.cmdline, "cmdline", || {
        format!("{cmd:?}, expected {:?}", expect.cmdline)
    });
    match walk(&mem, root, si.pt_base) {
        Ok(t) => f.check(t.frame == root, "page-table", || {
            "pt_base does not map the L4".into()
        }),
        Err(e) => f.check(false, "page-table", || format!("pt_base: {e}")),
    }
    // The p2m list at mfn_list, against the page tables.
    let list = virt(&mem, root, si.mfn_list, (pages * 8) as usize);
    match list {
        None => f.check(false, "p2m", || "mfn_list is not mapped".into()),
        Some(bytes) => {
            let p2m: Vec<u64> = bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8")))
                .collect();
            let distinct: HashSet<u64> = p2m.iter().copied().collect();
            f.check(distinct.len() == p2m.len(), "p2m", || {
                "two guest frames share a machine frame".into()
            });
            let kstart = layout.virt_kstart;
            let kend = layout.virt_kend;
            let mut va = kstart;
            while va < kend {
                let pfn = (va - layout.virt_base) >> 12;
                let t = walk(&mem, root, va).ok();
                let ok = t.is_some_and(|t| p2m.get(pfn as usize) == Some(&t.frame));
                f.check(ok, "p2m", || {
                    format!("pfn {pfn:#x} disagrees with the page tables")
                });
                va += 4096;
            }
            // The initrd, by pfn (MOD_START_PFN) or mapped.
            if let Some(initrd) = &expect.initrd {
                let got = if si.flags & SIF_MOD_START_PFN != 0 {
                    (0..initrd.len().div_ceil(4096))
                        .map(|i| {
                            p2m.get(si.mod_start as usize + i)
                                .and_then(|&m| mem.page(m))
                        })
                        .collect::<Option<Vec<_>>>()
                        .map(|v| v.concat())
                } else {
                    virt(&mem, root, si.mod_start, initrd.len())
                };
                let ok = got.is_some_and(|g| g[..initrd.len()] == initrd[..])
                    && si.mod_len >= initrd.len() as u64;
                f.check(ok, "initrd", || "the initrd differs".into());
            }
        }
    }
    // shared_info: every legacy vCPU's upcalls masked.
    let shared = mem.page(info.shared_info_frame);
    let masked = shared.is_some_and(|p| (0..32).all(|v| p[v * 64 + 1] == 1));
    f.check(masked, "upcall-mask", || {
        "evtchn_upcall_mask not set".into()
    });
    // The L4 is pinned: pinning it again is refused.
    let again = host.xc.pin_l4_table(domid, root);
    f.check(
        again.as_ref().err().and_then(|e| e.errno()) == Some(xenctrl::Errno::EINVAL),
        "pin",
        || format!("pinning the L4 again: {again:?}"),
    );
    // Rings, against start_info.
    let dom = format!("/local/domain/{domid}");
    let store_ref = xs_u64(host, &format!("{dom}/store/ring-ref"));
    f.check(store_ref == Some(si.store_mfn), "store-ring-ref", || {
        format!(
            "store/ring-ref {store_ref:?}, store_mfn {:#x}",
            si.store_mfn
        )
    });
    let console_ref = xs_u64(host, &format!("{dom}/console/ring-ref"));
    f.check(
        console_ref == Some(si.console_mfn),
        "console-ring-ref",
        || {
            format!(
                "console/ring-ref {console_ref:?}, console_mfn {:#x}",
                si.console_mfn
            )
        },
    );
    let store_port = xs_u64(host, &format!("{dom}/store/port"));
    f.check(
        store_port == Some(u64::from(si.store_evtchn)),
        "store-evtchn",
        || format!("store/port {store_port:?}, start_info {}", si.store_evtchn),
    );
    let console_port = xs_u64(host, &format!("{dom}/console/port"));
    f.check(
        console_port == Some(u64::from(si.console_evtchn)),
        "console-evtchn",
        || {
            format!(
                "console/port {console_port:?}, start_info {}",
                si.console_evtchn
            )
        },
    );
    for (ring, frame) in [("store", si.store_mfn), ("console", si.console_mfn)] {
        // Clear until the guest runs: on the simulator, unpausing runs its stand-in guest,
        // which writes a boot line and a xenstore request (checked by `check` instead).
        // Up to the ring indices: xenstored advertises its features after them when it
        // maps the ring at introduction.
        let clear = ran(host, domid)
            || mem
                .page(frame)
                .is_some_and(|p| p[..RING_DATA_END].iter().all(|&b| b == 0));
        f.check(clear, "rings", || format!("the {ring} ring is not clear"));
    }
    check_grants(host, domid, si.console_mfn, si.store_mfn, &mut f);
    f
}

fn check_grants(host: &Host, domid: u16, console: u64, store: u64, f: &mut Faults) {
    let Some([c, s]) = grants(host, domid) else {
        f.check(false, "grant-store", || {
            "the grant table cannot be mapped".into()
        });
        return;
    };
    let ok =
        // Xen adds GTF_reading (8) and GTF_writing (16) while a backend has the page mapped.
        |e: &GrantEntryV1, frame: u64| {
            e.flags & !(8 | 16) == 1 && e.domid == 0 && u64::from(e.frame) == frame
        };
    f.check(ok(&c, console), "grant-console", || {
        format!("entry 0 {c:?}, console {console:#x}")
    });
    f.check(ok(&s, store), "grant-store", || {
        format!("entry 1 {s:?}, store {store:#x}")
    });
}

pub fn check_pvh(host: &Host, domid: u16, expect: &Expect) -> Faults {
    const STORE_PFN: u64 = 0xfeffc;
    const CONSOLE_PFN: u64 = 0xfefff;
    let mut f = Faults::default();
    let kernel = kernel_of(expect);
    let layout = kernel.layout(GuestKind::Pvh).expect("PVH layout");
    let mem = Mem::new(host, domid);
    let ctx = host.xc.hvm_context(domid).expect("HVM context");
    let Some(cpu) = ctx.cpu(0) else {
        f.check(false, "rip", || "no CPU record for vCPU 0".into());
        return f;
    };
    f.check(cpu.rip == layout.entry, "rip", || {
        format!("rip {:#x}, PHYS32_ENTRY {:#x}", cpu.rip, layout.entry)
    });
    f.check(
        cpu.cr0 == 0x11
            && cpu.cs_arbytes == 0xc9b
            && cpu.ds_arbytes == 0xc93
            && cpu.tr_arbytes == 0x8b,
        "vcpu",
        || format!("cr0 {:#x} cs {:#x}", cpu.cr0, cpu.cs_arbytes),
    );
    for v in 0..expect.vcpus {
        let def = ctx.mtrr(v as u16).map(|m| m.msr_mtrr_def_type);
        f.check(def == Some(0x806), "mtrr", || {
            format!("vCPU {v}: def_type {def:?}")
        });
    }
    // libxl's topology for vLAPIC ids 2 x vCPU: HTT, logical processors per package doubled
    // (the simulated host's default says 2), no CmpLegacy, AMD's core count doubled plus one
    // and ApicIdCoreSize one more (default 0x1001).
    let policy = host.xc.cpu_policy(domid).expect("CPUID policy");
    let leaf = |n: u32| {
        policy
            .iter()
            .find(|l| l.leaf == n)
            .copied()
            .unwrap_or_default()
    };
    let (l1, e1, e8) = (leaf(1), leaf(0x8000_0001), leaf(0x8000_0008));
    f.check(
        l1.d & (1 << 28) != 0 && (l1.b >> 16) & 0xff == 4 && e1.c & 2 == 0 && e8.c == 0x2003,
        "cpuid-topology",
        || format!("leaf 1 {l1:x?}, 0x80000001 {e1:x?}, 0x80000008 {e8:x?}"),
    );
    // The kernel at its physical addresses.
    for (pa, bytes, memsz) in segments(expect, &kernel, |p| p) {
        let got = mem.phys(pa, memsz as usize);
        let ok = got.as_ref().is_some_and(|g| {
            g[..bytes.len()] == bytes[..] && g[bytes.len()..].iter().all(|&b| b == 0)
        });
        f.check(ok, "kernel", || format!("segment at {pa:#x} differs"));
    }
    // hvm_start_info at rbx.
    let si = mem
        .phys(cpu.rbx, size_of::<HvmStartInfo>())
        .and_then(|b| HvmStartInfo::read_from_bytes(&b).ok());
    let si = match si {
        Some(si)
            if si.version == 1
                && si.cmdline_paddr > cpu.rbx
                && si.cmdline_paddr < cpu.rbx + 4096 =>
        {
            si
        }
        _ => {
            f.check(false, "start-info-ptr", || {
                format!("rbx {:#x} does not lead to hvm_start_info", cpu.rbx)
            });
            return f;
        }
    };
    f.check(si.magic == 0x336e_c578, "start-info", || {
        format!("magic {:#x}", si.magic)
    });
    let cmd = mem
        .phys(si.cmdline_paddr, 1024)
        .map(|b| c_str(&b))
        .unwrap_or_default();
    f.check(cmd == expect.cmdline, "cmdline", || {
        format!("{cmd:?}, expected {:?}", expect.cmdline)
    });
    let map = mem
        .phys(si.memmap_paddr, si.memmap_entries as usize * 24)
        .unwrap_or_default();
    let ram: u64 = map
        .chunks_exact(24)
        .filter(|e| u32::from_le_bytes(e[16..20].try_into().expect("4")) == 1)
        .map(|e| u64::from_le_bytes(e[8..16].try_into().expect("8")))
        .sum();
    // RAM is memory less the RSDP's page when that is low.
    f.check(
        ram <= expect.memory_mib << 20 && ram + 4096 >= expect.memory_mib << 20,
        "memmap",
        || format!("{ram:#x} bytes of RAM in the map"),
    );
    let rsdp = mem.phys(si.rsdp_paddr, 8);
    f.check(rsdp.as_deref() == Some(b"RSD PTR "), "acpi", || {
        format!("no RSDP at {:#x}", si.rsdp_paddr)
    });
    if let Some(initrd) = &expect.initrd {
        let entry = mem.phys(si.modlist_paddr, 16);
        let ok = si.nr_modules == 1
            && entry.is_some_and(|e| {
                let pa = u64::from_le_bytes(e[0..8].try_into().expect("8"));
                let len = u64::from_le_bytes(e[8..16].try_into().expect("8"));
                len == initrd.len() as u64 && mem.phys(pa, initrd.len()).as_ref() == Some(initrd)
            });
        f.check(ok, "initrd", || "the initrd differs".into());
    }
    // HVM parameters, against the special pages and xenstore.
    let param = |p: HvmParam| host.xc.hvm_param(domid, p).ok();
    let dom = format!("/local/domain/{domid}");
    f.check(
        param(HvmParam::STORE_PFN) == Some(STORE_PFN),
        "hvm-store-pfn",
        || format!("STORE_PFN {:?}", param(HvmParam::STORE_PFN)),
    );
    f.check(
        param(HvmParam::CONSOLE_PFN) == Some(CONSOLE_PFN),
        "hvm-console-pfn",
        || format!("CONSOLE_PFN {:?}", param(HvmParam::CONSOLE_PFN)),
    );
    let store_port = xs_u64(host, &format!("{dom}/store/port"));
    f.check(
        param(HvmParam::STORE_EVTCHN) == store_port,
        "store-evtchn",
        || {
            format!(
                "STORE_EVTCHN {:?}, store/port {store_port:?}",
                param(HvmParam::STORE_EVTCHN)
            )
        },
    );
    let console_port = xs_u64(host, &format!("{dom}/console/port"));
    f.check(
        param(HvmParam::CONSOLE_EVTCHN) == console_port,
        "hvm-console-evtchn",
        || {
            format!(
                "CONSOLE_EVTCHN {:?}, console/port {console_port:?}",
                param(HvmParam::CONSOLE_EVTCHN)
            )
        },
    );
    let store_ref = xs_u64(host, &format!("{dom}/store/ring-ref"));
    f.check(store_ref == Some(STORE_PFN), "store-ring-ref", || {
        format!("store/ring-ref {store_ref:?}")
    });
    let console_ref = xs_u64(host, &format!("{dom}/console/ring-ref"));
    f.check(console_ref == Some(CONSOLE_PFN), "console-ring-ref", || {
        format!("console/ring-ref {console_ref:?}")
    });
    for (ring, frame) in [("store", STORE_PFN), ("console", CONSOLE_PFN)] {
        // Clear until the guest runs: on the simulator, unpausing runs its stand-in guest,
        // which writes a boot line and a xenstore request (checked by `check` instead).
        // Up to the ring indices: xenstored advertises its features after them when it
        // maps the ring at introduction.
        let clear = ran(host, domid)
            || mem
                .page(frame)
                .is_some_and(|p| p[..RING_DATA_END].iter().all(|&b| b == 0));
        f.check(clear, "rings", || format!("the {ring} ring is not clear"));
    }
    check_grants(host, domid, CONSOLE_PFN, STORE_PFN, &mut f);
    f
}
