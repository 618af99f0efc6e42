//! The simulated host's boot checker: what a guest kernel would trip over in its first
//! instructions, checked from what the guest itself would see.
//!
//! When a domain whose builder has started its vCPUs (a PV vCPU context set with
//! `XEN_DOMCTL_setvcpucontext`, or an HVM context loaded with `XEN_DOMCTL_sethvmcontext`)
//! first runs (it is unpaused, alive, and has not booted before), the simulator checks the
//! boot structurally instead of executing a kernel. It reads only what the guest would: its
//! memory, its vCPU state, its HVM parameters, its event channels, its grant table and its
//! shared-info page. Then either the stand-in guest boots ([`super::standin`]: a console line,
//! a xenstore request), or the domain crashes, as Xen crashes a guest that faults at boot
//! (`SHUTDOWN_crash`). Either way a [`BootReport`] is kept with the domain (and saved with a
//! persistent host), naming the first check that failed in plain words.
//!
//! **PV x86-64.** vCPU 0 has a context, is online, and holds the flat kernel selectors
//! (`cs` 0xe033, `ss` 0xe02b); the L4 in `cr3` is pinned as an L4 (libxenguest's
//! `MMUEXT_PIN_L4_TABLE`; real Xen would also take an unpinned one and validate it itself);
//! walking the tables from `cr3` ([`crate::x86::walk`] over the domain's machine frames),
//! `rip` maps an executable page of the domain and `rsi` maps `start_info`, whose magic is
//! `xen-3.0-x86_64`, `nr_pages` the domain's pages, `shared_info` its shared-info page's
//! machine address, `pt_base` the L4, the command line NUL-terminated, the initrd inside the
//! domain, and whose p2m list (`mfn_list`) maps and gives every pfn below `nr_pages` a
//! distinct frame of the domain; the console and xenstore pages are frames of the domain
//! found in that p2m, and their event channels are ports allocated for a backend; `rsp - 8`
//! is writable; no leaf of the tables maps a frame the domain does not own, nor a page table
//! writable (Xen refuses to pin such tables; the simulator's pin does not look, so this is
//! where it is caught), and the tables map at most twice the domain's pages (tables that
//! loop are caught here, not followed forever); each hypercall page set up is mapped
//! executable;
//! `evtchn_upcall_mask` of vCPU 0 is set in shared_info. The address size needs no check:
//! the simulated host, like Debian's Xen, refuses 32-bit PV at `set_address_size`.
//!
//! **PVH.** vCPU 0 has a CPU record in 32-bit protected mode, paging and long mode off, with
//! flat segments (`cs` a 32-bit code segment, `ds`/`es`/`ss` writable data, base 0, limit
//! 4 GiB); `rip` is in populated memory; `rbx` points at `hvm_start_info` with magic
//! 0x336ec578, a known version, and its command line, modules, memory map and RSDP in
//! populated memory; `HVM_PARAM_STORE_PFN` and `HVM_PARAM_CONSOLE_PFN` are populated and
//! their event-channel parameters are ports allocated for a backend; vCPU 0 has an MTRR
//! record with MTRRs enabled and write-back as the default type.
//!
//! **Both.** Grant entries 0 (console) and 1 (xenstore) are `GTF_permit_access`, writable,
//! for the domain at the other end of the ring's event channel, and for the ring's frame
//! (a machine frame for PV, a guest frame for PVH).
//!
//! Nothing read is trusted: every read is bounded by the domain's own pages, every walk by
//! four levels, the enumeration of the tables by a limit, and a failed read is a report,
//! never a panic.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

use zerocopy::FromBytes;

use super::evtchn::SimPortState;
use super::machine::MachineMemory;
use super::state::{SimDomain, SimDomainState, SIM_DOM0};
use crate::abi::{
    DomId, GTF_permit_access, GTF_readonly, GTF_type_mask, GrantEntryV1, HvmHwCpu, HvmModlistEntry,
    HvmStartInfo, StartInfo, VGCF_online, VcpuGuestContext, FLAT_KERNEL_CS64, FLAT_KERNEL_SS64,
    GNTTAB_RESERVED_CONSOLE, GNTTAB_RESERVED_XENSTORE, HVM_PARAM_CONSOLE_EVTCHN,
    HVM_PARAM_CONSOLE_PFN, HVM_PARAM_STORE_EVTCHN, HVM_PARAM_STORE_PFN, MAX_GUEST_CMDLINE,
    SIF_MOD_START_PFN, XEN_HVM_START_MAGIC_VALUE,
};
use crate::x86::{walk, FrameSource, Mapping, PteFlags, Translation, WalkError, ENTRIES_PER_TABLE};

const PAGE: u64 = crate::PAGE_SIZE as u64;
/// What a 64-bit PV kernel finds in `start_info.magic` (libxenguest's guest type).
pub const PV_GUEST_TYPE: &str = "xen-3.0-x86_64";
/// `INVALID_P2M_ENTRY`: a pfn with no frame.
const INVALID_P2M_ENTRY: u64 = u64::MAX;
/// The highest `hvm_start_info.version` Xen 4.17 defines.
const HVM_START_INFO_VERSION: u32 = 1;
/// At most this many PVH modules are looked at (libxenguest writes at most 2).
const MAX_PVH_MODULES: u32 = 64;
/// At most this many PVH memory-map entries (Xen's `E820MAX`).
const MAX_PVH_MEMMAP: u32 = 1024;
/// The longest PVH command line read (Linux's `COMMAND_LINE_SIZE` is 2048; libxenguest
/// reserves `MAX_GUEST_CMDLINE`).
const MAX_PVH_CMDLINE: u64 = 4096;
/// `IA32_MTRR_DEF_TYPE`: MTRRs enabled.
const MTRR_DEF_TYPE_ENABLE: u64 = 1 << 11;
/// Memory type write-back.
const MTRR_TYPE_WRBACK: u64 = 6;
/// The byte of `vcpu_info[0].evtchn_upcall_mask` in shared_info (`xen.h`).
const UPCALL_MASK_OFFSET: u64 = 1;

/// Which kind of guest a report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BootKind {
    /// A PV x86-64 guest, entered with `start_info` in `rsi`.
    Pv,
    /// A PVH guest, entered at PHYS32_ENTRY with `hvm_start_info` in `rbx`.
    Pvh,
}

impl fmt::Display for BootKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootKind::Pv => "pv",
            BootKind::Pvh => "pvh",
        })
    }
}

/// Which check a boot failed (the [`BootFailure`]'s message says how).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BootCheck {
    /// vCPU 0's state: a context (PV) or CPU record (PVH), online, the selectors or the
    /// processor mode.
    Vcpu,
    /// The L4 table in `cr3` is pinned (PV).
    PinnedL4,
    /// `rip` reaches an executable page (PV) or populated memory (PVH).
    EntryPoint,
    /// `start_info` (PV, at `rsi`) or `hvm_start_info` (PVH, at `rbx`) and what it points at.
    StartInfo,
    /// The p2m list (PV).
    P2m,
    /// The boot stack (PV).
    Stack,
    /// The page tables as a whole: what they map, how much, and whether a table is writable
    /// (PV).
    PageTables,
    /// The hypercall page (PV, when one was set up).
    HypercallPage,
    /// `evtchn_upcall_mask` of vCPU 0 in shared_info (PV).
    UpcallMask,
    /// The console page and its event channel.
    Console,
    /// The xenstore page and its event channel.
    Xenstore,
    /// vCPU 0's MTRRs (PVH).
    Mtrr,
    /// Grant entry 0, the console page's.
    ConsoleGrant,
    /// Grant entry 1, the xenstore page's.
    XenstoreGrant,
}

impl BootCheck {
    /// Every check, in the order of their codes in a persistent host's file.
    const ALL: [BootCheck; 14] = [
        BootCheck::Vcpu,
        BootCheck::PinnedL4,
        BootCheck::EntryPoint,
        BootCheck::StartInfo,
        BootCheck::P2m,
        BootCheck::Stack,
        BootCheck::PageTables,
        BootCheck::HypercallPage,
        BootCheck::UpcallMask,
        BootCheck::Console,
        BootCheck::Xenstore,
        BootCheck::Mtrr,
        BootCheck::ConsoleGrant,
        BootCheck::XenstoreGrant,
    ];

    /// Its code in a persistent host's file.
    pub(super) fn code(self) -> u8 {
        // ALL holds every variant, and fewer than 256.
        Self::ALL
            .iter()
            .position(|&c| c == self)
            .and_then(|i| u8::try_from(i).ok())
            .unwrap_or(u8::MAX)
    }

    /// The check with code `code`.
    pub(super) fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }
}

/// A failed boot check: which one, and what was wrong, in plain words (e.g. "rip
/// 0xffffffff81000000 is not mapped: the L2 entry for it is not present (...)").
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct BootFailure {
    /// The check that failed.
    pub check: BootCheck,
    /// What it found.
    pub problem: String,
}

fn fail(check: BootCheck, problem: impl Into<String>) -> BootFailure {
    BootFailure {
        check,
        problem: problem.into(),
    }
}

/// How a boot ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootOutcome {
    /// Every check passed and the stand-in guest booted: it wrote `console_line` (here without
    /// its newline) to its console ring and an `XS_WRITE` to its xenstore ring.
    Booted {
        /// The line the stand-in guest printed.
        console_line: String,
    },
    /// A check failed, and the domain crashed (`SHUTDOWN_crash`).
    Crashed(BootFailure),
}

/// What the simulated host found when a domain first ran: see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootReport {
    /// PV or PVH.
    pub kind: BootKind,
    /// Booted, or crashed and why.
    pub outcome: BootOutcome,
}

impl BootReport {
    /// Whether the stand-in guest booted.
    pub fn booted(&self) -> bool {
        matches!(self.outcome, BootOutcome::Booted { .. })
    }

    /// The failed check, if the boot failed.
    pub fn failure(&self) -> Option<&BootFailure> {
        match &self.outcome {
            BootOutcome::Crashed(f) => Some(f),
            BootOutcome::Booted { .. } => None,
        }
    }
}

impl fmt::Display for BootReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            BootOutcome::Booted { console_line } => {
                write!(f, "the {} guest booted: {console_line}", self.kind)
            }
            BootOutcome::Crashed(why) => {
                write!(f, "the {} guest crashed at boot: {why}", self.kind)
            }
        }
    }
}

/// A ring page a booted guest shares with a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ring {
    /// The frame as the guest names it (PV: machine frame; PVH: guest frame).
    pub frame: u64,
    /// Its machine frame.
    pub mfn: u64,
    /// Its event channel, in the guest.
    pub port: u32,
    /// The domain at the other end of that event channel.
    pub backend: DomId,
}

/// What the checks found that the stand-in guest needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Checked {
    /// PV or PVH.
    pub kind: BootKind,
    /// The command line the kernel read.
    pub cmdline: String,
    /// The console ring.
    pub console: Ring,
    /// The xenstore ring.
    pub store: Ring,
}

/// Whether `d` is about to run its first instructions: alive, unpaused, never booted, and
/// a builder started a vCPU (a PV vCPU context, or any HVM context loaded).
pub(super) fn about_to_boot(d: &SimDomain) -> bool {
    let started = if d.is_hvm() {
        !d.build.hvm_records.is_empty()
    } else {
        d.build.vcpus.values().any(|v| v.context.is_some())
    };
    d.domid != SIM_DOM0
        && d.boot.is_none()
        && d.state == SimDomainState::Alive
        && d.pause_count == 0
        && d.vcpus_created
        && started
}

/// Check `d`'s boot, reading its memory from `machine`.
pub(super) fn check(d: &SimDomain, machine: &MachineMemory) -> Result<Checked, BootFailure> {
    let g = Guest {
        d,
        mem: machine,
        tables: RefCell::new(HashMap::new()),
    };
    if d.is_hvm() {
        check_pvh(&g)
    } else {
        check_pv(&g)
    }
}

/// A domain's memory as its kernel sees it.
struct Guest<'a> {
    d: &'a SimDomain,
    mem: &'a MachineMemory,
    /// Page-table frames read so far (a `None` for one that could not be read), so that the
    /// walks and the enumeration read each table once, and so that the tables can be told
    /// apart from the pages they map.
    tables: RefCell<HashMap<u64, Option<Box<[u64; ENTRIES_PER_TABLE]>>>>,
}

impl Guest<'_> {
    /// The machine frame behind `frame` as the guest names it (PV: a machine frame it owns;
    /// PVH: a guest frame it has populated).
    fn mfn(&self, frame: u64) -> Option<u64> {
        self.d.physmap.get(&frame).copied()
    }

    fn owns(&self, frame: u64) -> bool {
        self.d.physmap.contains_key(&frame)
    }

    /// Copy `out.len()` bytes at `offset` of the guest's `frame` (which must hold them).
    fn read(&self, frame: u64, offset: u64, out: &mut [u8]) -> Option<()> {
        let end = offset.checked_add(out.len() as u64)?;
        if end > PAGE {
            return None;
        }
        let mfn = self.mfn(frame)?;
        self.mem.read(mfn, offset, out).ok()
    }

    fn table(&self, frame: u64) -> Option<Box<[u64; ENTRIES_PER_TABLE]>> {
        let mut cache = self.tables.borrow_mut();
        cache
            .entry(frame)
            .or_insert_with(|| {
                let mut page = vec![0u8; crate::PAGE_SIZE];
                self.read(frame, 0, &mut page)?;
                let mut t = Box::new([0u64; ENTRIES_PER_TABLE]);
                for (e, b) in t.iter_mut().zip(page.chunks_exact(8)) {
                    *e = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
                }
                Some(t)
            })
            .clone()
    }

    /// The page-table frames read so far.
    fn table_frames(&self) -> BTreeSet<u64> {
        self.tables
            .borrow()
            .iter()
            .filter(|(_, t)| t.is_some())
            .map(|(&f, _)| f)
            .collect()
    }

    /// Where `va` leads through the PV tables rooted at `root`: a page of the domain.
    fn translate(&self, root: u64, what: &str, va: u64) -> Result<Translation, String> {
        let t = walk(self, root, va).map_err(|e| describe_walk(what, va, e))?;
        if !self.owns(t.frame) {
            return Err(format!(
                "{what} {va:#x} maps mfn {:#x}, which is not a page of this domain",
                t.frame
            ));
        }
        Ok(t)
    }

    /// Copy `out.len()` bytes at virtual address `va` of the PV guest.
    fn read_virt(&self, root: u64, what: &str, va: u64, out: &mut [u8]) -> Result<(), String> {
        let mut done = 0usize;
        while done < out.len() {
            let at = va
                .checked_add(done as u64)
                .ok_or_else(|| format!("{what} {va:#x} runs past the top of the address space"))?;
            let t = self.translate(root, what, at)?;
            let n = usize::try_from(PAGE - t.offset)
                .unwrap_or(usize::MAX)
                .min(out.len() - done);
            self.read(t.frame, t.offset, &mut out[done..done + n])
                .ok_or_else(|| format!("{what} {at:#x}: mfn {:#x} cannot be read", t.frame))?;
            done += n;
        }
        Ok(())
    }

    /// Copy `out.len()` bytes at guest-physical address `addr` of the PVH guest; the error
    /// names the first guest frame without a page.
    fn read_phys(&self, addr: u64, out: &mut [u8]) -> Result<(), u64> {
        let mut done = 0usize;
        while done < out.len() {
            let at = addr.checked_add(done as u64).ok_or(u64::MAX)?;
            let (gfn, offset) = (at / PAGE, at % PAGE);
            let n = usize::try_from(PAGE - offset)
                .unwrap_or(usize::MAX)
                .min(out.len() - done);
            self.read(gfn, offset, &mut out[done..done + n])
                .ok_or(gfn)?;
            done += n;
        }
        Ok(())
    }

    /// Whether guest-physical `addr..addr + len` is all populated; the error names the first
    /// guest frame without a page.
    fn populated(&self, addr: u64, len: u64) -> Result<(), u64> {
        if len == 0 {
            return Ok(());
        }
        let last = addr.checked_add(len - 1).ok_or(u64::MAX)?;
        match (addr / PAGE..=last / PAGE).find(|g| !self.owns(*g)) {
            Some(gfn) => Err(gfn),
            None => Ok(()),
        }
    }

    /// The NUL-terminated string at guest-physical `addr`, at most `max` bytes long.
    fn read_cstr(&self, addr: u64, max: u64) -> Result<String, String> {
        let mut out = Vec::new();
        let mut at = addr;
        while (out.len() as u64) < max {
            let (gfn, offset) = (at / PAGE, at % PAGE);
            let mut chunk = vec![0u8; usize::try_from(PAGE - offset).unwrap_or(0)];
            self.read(gfn, offset, &mut chunk)
                .ok_or_else(|| format!("guest frame {gfn:#x} has no page"))?;
            if let Some(nul) = chunk.iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                return Ok(String::from_utf8_lossy(&out).into_owned());
            }
            out.extend_from_slice(&chunk);
            at = at
                .checked_add(chunk.len() as u64)
                .ok_or("it runs past the top of memory")?;
        }
        Err(format!("it has no NUL within {max} bytes"))
    }

    /// The backend at the other end of `port`, which must be allocated in this domain for
    /// another domain (unbound, waiting for it, or bound to it).
    fn backend_of(&self, port: u64) -> Result<(u32, DomId), String> {
        let p = u32::try_from(port).map_err(|_| format!("port {port:#x} is not a port number"))?;
        match self.d.evtchn.port(p).map(|p| p.state) {
            Some(SimPortState::Unbound { remote }) => Ok((p, remote)),
            Some(SimPortState::Interdomain { remote, .. }) => Ok((p, remote)),
            Some(SimPortState::Reserved) => Err(format!(
                "port {p} is reserved by Xen, not allocated for a backend"
            )),
            Some(SimPortState::Virq(v)) => Err(format!(
                "port {p} is bound to virtual IRQ {v}, not to a backend"
            )),
            None => Err(format!(
                "port {p} is not allocated in this domain (allocate it with \
                 EVTCHNOP_alloc_unbound for the backend)"
            )),
        }
    }

    /// The ring page `frame` (as the guest names it) and its event channel `port`.
    fn ring(
        &self,
        check: BootCheck,
        name: &str,
        frame: u64,
        port: u64,
    ) -> Result<Ring, BootFailure> {
        let mfn = self.mfn(frame).ok_or_else(|| {
            fail(
                check,
                format!("the {name} page (frame {frame:#x}) is not a page of this domain"),
            )
        })?;
        let (port, backend) = self
            .backend_of(port)
            .map_err(|why| fail(check, format!("the {name} event channel: {why}")))?;
        Ok(Ring {
            frame,
            mfn,
            port,
            backend,
        })
    }

    /// Grant entry `gref` seeds `ring` for its backend.
    fn check_grant(
        &self,
        check: BootCheck,
        gref: u32,
        name: &str,
        ring: &Ring,
    ) -> Result<(), BootFailure> {
        let what = format!("grant entry {gref} ({name})");
        let Some(&table) = self.d.grant_frames.first() else {
            return Err(fail(
                check,
                format!(
                    "{what} is not seeded: the domain's grant table has no frame yet (map frame 0 \
                     with XENMEM_acquire_resource or GNTTABOP_setup_table and write the entry)"
                ),
            ));
        };
        let mut raw = [0u8; 8];
        self.mem
            .read(table, u64::from(gref) * 8, &mut raw)
            .map_err(|e| fail(check, format!("{what} cannot be read: {e}")))?;
        let e = GrantEntryV1::read_from_bytes(&raw).unwrap_or_default();
        if e.flags & GTF_type_mask != GTF_permit_access {
            return Err(fail(
                check,
                format!(
                    "{what} is not seeded (flags {:#x}, not GTF_permit_access)",
                    e.flags
                ),
            ));
        }
        if e.flags & GTF_readonly != 0 {
            return Err(fail(
                check,
                format!("{what} is read-only: the backend must write the ring"),
            ));
        }
        if e.domid != ring.backend {
            return Err(fail(
                check,
                format!(
                    "{what} grants access to d{}, not to the {name} backend d{} (the other end of \
                     its event channel)",
                    e.domid, ring.backend
                ),
            ));
        }
        if u64::from(e.frame) != ring.frame {
            return Err(fail(
                check,
                format!(
                    "{what} grants frame {:#x}, not the {name} page {:#x}",
                    e.frame, ring.frame
                ),
            ));
        }
        Ok(())
    }
}

impl FrameSource for Guest<'_> {
    fn entry(&self, frame: u64, index: usize) -> Option<u64> {
        self.table(frame)?.get(index).copied()
    }
}

/// A failed walk in plain words.
fn describe_walk(what: &str, va: u64, e: WalkError) -> String {
    match e {
        WalkError::NonCanonical { .. } => format!("{what} {va:#x} is not a canonical address"),
        WalkError::NotPresent {
            level,
            frame,
            index,
            ..
        } => format!(
            "{what} {va:#x} is not mapped: the {level:?} entry for it is not present (entry \
             {index} of the {level:?} table at mfn {frame:#x})"
        ),
        WalkError::MissingFrame { level, frame, .. } => format!(
            "{what} {va:#x} is not mapped: its {level:?} table would be mfn {frame:#x}, which is \
             not a page of this domain"
        ),
        WalkError::ReservedPse { frame, index } => format!(
            "{what} {va:#x} is not mapped: entry {index} of the L4 table at mfn {frame:#x} sets \
             PSE, which is reserved there"
        ),
        WalkError::TooManyMappings { limit } => {
            format!("{what} {va:#x}: the page tables map more than {limit} pages")
        }
    }
}

/// The PV checks, in the order a kernel would trip over them.
fn check_pv(g: &Guest<'_>) -> Result<Checked, BootFailure> {
    use BootCheck::*;
    let d = g.d;
    let v = d.build.vcpus.get(&0);
    let Some(ctx) = v.and_then(|v| v.context.as_deref()) else {
        return Err(fail(
            Vcpu,
            "vCPU 0 has no context: the builder set another vCPU's, but vCPU 0 is the one that \
             boots",
        ));
    };
    if !v.is_some_and(|v| v.online) || ctx.flags & VGCF_online == 0 {
        return Err(fail(
            Vcpu,
            "vCPU 0 is not online (VGCF_online is clear in its context): nothing would run",
        ));
    }
    let r = &ctx.user_regs;
    if r.cs != FLAT_KERNEL_CS64 {
        return Err(fail(
            Vcpu,
            format!(
                "cs is {:#x}, not the flat 64-bit kernel code selector {FLAT_KERNEL_CS64:#x}",
                r.cs
            ),
        ));
    }
    if r.ss != FLAT_KERNEL_SS64 {
        return Err(fail(
            Vcpu,
            format!(
                "ss is {:#x}, not the flat 64-bit kernel stack selector {FLAT_KERNEL_SS64:#x}",
                r.ss
            ),
        ));
    }
    let l4 = VcpuGuestContext::cr3_to_pfn(ctx.ctrlreg[3]);
    match d.build.pinned.get(&l4) {
        Some(4) => {}
        Some(level) => {
            return Err(fail(
                PinnedL4,
                format!(
                    "the L4 table in cr3 (mfn {l4:#x}) is pinned as an L{level} table, not as an \
                     L4"
                ),
            ))
        }
        None => {
            return Err(fail(
                PinnedL4,
                format!(
                    "the L4 table in cr3 (mfn {l4:#x}) is not pinned: pin it with \
                     MMUEXT_PIN_L4_TABLE before starting the vCPU"
                ),
            ))
        }
    }

    let entry = g
        .translate(l4, "rip", r.rip)
        .map_err(|why| fail(EntryPoint, why))?;
    if entry.flags.contains(PteFlags::NX) {
        return Err(fail(
            EntryPoint,
            format!(
                "rip {:#x} maps mfn {:#x}, which is not executable (NX is set on the way)",
                r.rip, entry.frame
            ),
        ));
    }

    let mut raw = [0u8; size_of::<crate::abi::StartInfo>()];
    g.read_virt(l4, "rsi (start_info)", r.rsi, &mut raw)
        .map_err(|why| fail(StartInfo, why))?;
    let si =
        crate::abi::StartInfo::read_from_bytes(&raw).map_err(|_| fail(StartInfo, "start_info"))?;
    let magic_len = si
        .magic
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(si.magic.len());
    if &si.magic[..magic_len] != PV_GUEST_TYPE.as_bytes() {
        return Err(fail(
            StartInfo,
            format!(
                "start_info magic at rsi {:#x} is {:?}, not {PV_GUEST_TYPE:?}",
                r.rsi,
                String::from_utf8_lossy(&si.magic[..magic_len])
            ),
        ));
    }
    if si.nr_pages != d.tot_pages {
        return Err(fail(
            StartInfo,
            format!(
                "start_info.nr_pages is {:#x}, but the domain has {:#x} pages",
                si.nr_pages, d.tot_pages
            ),
        ));
    }
    let shared_info = d.build.shared_info_frame.checked_mul(PAGE);
    if Some(si.shared_info) != shared_info {
        return Err(fail(
            StartInfo,
            format!(
                "start_info.shared_info is {:#x}, not the machine address of the domain's \
                 shared-info page ({:#x})",
                si.shared_info,
                shared_info.unwrap_or(0)
            ),
        ));
    }
    let Some(cmdline_len) = si.cmd_line.iter().position(|&b| b == 0) else {
        return Err(fail(
            StartInfo,
            format!("start_info.cmd_line is not NUL-terminated within {MAX_GUEST_CMDLINE} bytes"),
        ));
    };
    let cmdline = String::from_utf8_lossy(&si.cmd_line[..cmdline_len]).into_owned();
    let pt = g
        .translate(l4, "start_info.pt_base", si.pt_base)
        .map_err(|why| fail(StartInfo, why))?;
    if pt.frame != l4 {
        return Err(fail(
            StartInfo,
            format!(
                "start_info.pt_base {:#x} maps mfn {:#x}, not the L4 table in cr3 (mfn {l4:#x})",
                si.pt_base, pt.frame
            ),
        ));
    }

    let p2m = check_p2m(g, l4, &si)?;

    // The kernel was entered where it says it starts: its ENTRY note, read from its loaded
    // image (the pages below start_info, in pfn order).
    let si_mfn = g
        .translate(l4, "rsi (start_info)", r.rsi)
        .map_err(|why| fail(StartInfo, why))?
        .frame;
    // `p2m` maps each machine frame to its pfn.
    let mut by_pfn: Vec<(u64, u64)> = p2m.iter().map(|(&mfn, &pfn)| (pfn, mfn)).collect();
    by_pfn.sort_unstable();
    let si_pfn = p2m.get(&si_mfn).copied().unwrap_or(0);
    let image = by_pfn
        .iter()
        .take_while(|&&(pfn, _)| pfn < si_pfn)
        .map(|&(_, mfn)| mfn);
    check_entry(g, image, XEN_ELFNOTE_ENTRY, "XEN_ELFNOTE_ENTRY", r.rip)?;

    if si.mod_len != 0 {
        if si.flags & SIF_MOD_START_PFN != 0 {
            let pages = si.mod_len.div_ceil(PAGE);
            if si
                .mod_start
                .checked_add(pages)
                .is_none_or(|end| end > si.nr_pages)
            {
                return Err(fail(
                    StartInfo,
                    format!(
                        "the initrd (pfn {:#x}, {:#x} bytes) lies beyond the domain's {:#x} pages",
                        si.mod_start, si.mod_len, si.nr_pages
                    ),
                ));
            }
        } else {
            let Some(last) = si.mod_start.checked_add(si.mod_len - 1) else {
                return Err(fail(
                    StartInfo,
                    format!(
                        "the initrd at {:#x} ({:#x} bytes) runs past the top of the address space",
                        si.mod_start, si.mod_len
                    ),
                ));
            };
            for va in [si.mod_start, last] {
                g.translate(l4, "the initrd at", va)
                    .map_err(|why| fail(StartInfo, why))?;
            }
        }
    }

    let console = g.ring(
        Console,
        "console",
        si.console_mfn,
        u64::from(si.console_evtchn),
    )?;
    let store = g.ring(
        Xenstore,
        "xenstore",
        si.store_mfn,
        u64::from(si.store_evtchn),
    )?;
    check_distinct_ports(&console, &store)?;
    for (check, name, ring) in [
        (Console, "console", &console),
        (Xenstore, "xenstore", &store),
    ] {
        if !p2m.contains_key(&ring.frame) {
            return Err(fail(
                check,
                format!(
                    "the {name} page (mfn {:#x}) is not in the p2m: the kernel cannot find its pfn",
                    ring.frame
                ),
            ));
        }
    }

    let sp = r.rsp.wrapping_sub(8);
    let stack = g
        .translate(l4, "the boot stack (rsp - 8)", sp)
        .map_err(|why| fail(Stack, why))?;
    if !stack.flags.contains(PteFlags::RW) {
        return Err(fail(
            Stack,
            format!("the boot stack (rsp - 8 = {sp:#x}) is not writable"),
        ));
    }

    let maps = check_tables(g, l4)?;

    // Xen wrote the hypercall trampolines into these frames; the kernel calls them through
    // its own mapping (HYPERCALL_PAGE's address, which only the ELF notes name), so some
    // mapping of each must be executable.
    for &frame in &d.build.hypercall_pages {
        let executable = maps.iter().any(|m| {
            !m.flags.contains(PteFlags::NX)
                && (m.frame..m.frame.saturating_add(m.size.bytes() / PAGE)).contains(&frame)
        });
        if !executable {
            return Err(fail(
                HypercallPage,
                format!(
                    "the hypercall page (mfn {frame:#x}) is not mapped executable by the page \
                     tables: the kernel could not call into it"
                ),
            ));
        }
    }

    let mut mask = [0u8];
    g.mem
        .read(d.build.shared_info_frame, UPCALL_MASK_OFFSET, &mut mask)
        .map_err(|e| fail(UpcallMask, format!("shared_info cannot be read: {e}")))?;
    if mask[0] == 0 {
        return Err(fail(
            UpcallMask,
            "evtchn_upcall_mask of vCPU 0 in shared_info is clear: events would be delivered \
             before the kernel has set up its callback",
        ));
    }

    g.check_grant(ConsoleGrant, GNTTAB_RESERVED_CONSOLE, "console", &console)?;
    g.check_grant(XenstoreGrant, GNTTAB_RESERVED_XENSTORE, "xenstore", &store)?;
    Ok(Checked {
        kind: BootKind::Pv,
        cmdline,
        console,
        store,
    })
}

/// `XEN_ELFNOTE_ENTRY`: a PV kernel's virtual entry point.
const XEN_ELFNOTE_ENTRY: u32 = 1;
/// `XEN_ELFNOTE_PHYS32_ENTRY`: a PVH kernel's 32-bit physical entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Pages of a kernel image searched for its entry note (128 MiB, beyond Debian's 66 MB).
const NOTE_SCAN_PAGES: usize = 1 << 15;
/// A note's header and the longest descriptor read: namesz, descsz, type, "Xen\0", 8 bytes.
const NOTE_WINDOW: usize = 24;

/// The descriptor of the first Xen note of type `kind` in the pages `frames` (in the order the
/// image is laid out; notes are 4-byte aligned and may straddle two pages). Linux keeps its
/// `.notes` inside a loaded segment, so a kernel finds them in its own memory.
fn find_note(g: &Guest<'_>, frames: impl Iterator<Item = u64>, kind: u32) -> Option<u64> {
    let word = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .and_then(|w| w.try_into().ok())
            .map_or(0, u32::from_le_bytes)
    };
    let mut page = [0u8; 4096];
    let mut carry: Vec<u8> = Vec::new();
    for frame in frames.take(NOTE_SCAN_PAGES) {
        if g.read(frame, 0, &mut page).is_none() {
            carry.clear();
            continue;
        }
        let mut buf = std::mem::take(&mut carry);
        buf.extend_from_slice(&page);
        let mut i = 0;
        while i + NOTE_WINDOW <= buf.len() {
            if &buf[i + 12..i + 16] == b"Xen\0" && word(&buf, i) == 4 && word(&buf, i + 8) == kind {
                match word(&buf, i + 4) {
                    4 => return Some(u64::from(word(&buf, i + 16))),
                    8 => {
                        let lo = u64::from(word(&buf, i + 16));
                        let hi = u64::from(word(&buf, i + 20));
                        return Some(lo | hi << 32);
                    }
                    _ => {}
                }
            }
            i += 4;
        }
        // A multiple of 4, so the carried bytes keep their alignment.
        carry = buf[buf.len() - NOTE_WINDOW..].to_vec();
    }
    None
}

/// `rip` is the entry point the kernel's note names, when its image carries one (a kernel
/// without the note, such as a hand-built test image, is not checked here).
fn check_entry(
    g: &Guest<'_>,
    image: impl Iterator<Item = u64>,
    kind: u32,
    name: &str,
    rip: u64,
) -> Result<(), BootFailure> {
    match find_note(g, image, kind) {
        Some(entry) if entry != rip => Err(fail(
            BootCheck::EntryPoint,
            format!(
                "rip {rip:#x} is not the kernel's entry point {entry:#x} (its {name} note, \
                 found in its loaded image): the vCPU would start in the middle of the kernel"
            ),
        )),
        _ => Ok(()),
    }
}

/// The two rings have event channels of their own: a guest notifying one must not wake the
/// other's backend instead.
fn check_distinct_ports(console: &Ring, store: &Ring) -> Result<(), BootFailure> {
    if console.port == store.port {
        return Err(fail(
            BootCheck::Xenstore,
            format!(
                "the xenstore and console rings share event channel {}: each needs its own \
                 (EVTCHNOP_alloc_unbound once per ring)",
                store.port
            ),
        ));
    }
    Ok(())
}

/// The p2m list at `start_info.mfn_list`: every pfn below `nr_pages` has a distinct frame of
/// the domain. Returns machine frame → pfn.
fn check_p2m(g: &Guest<'_>, l4: u64, si: &StartInfo) -> Result<HashMap<u64, u64>, BootFailure> {
    use BootCheck::P2m;
    if si.mfn_list % 8 != 0 {
        return Err(fail(
            P2m,
            format!(
                "start_info.mfn_list {:#x} is not 8-byte aligned",
                si.mfn_list
            ),
        ));
    }
    // nr_pages is the domain's page count (checked before), so this is bounded by it.
    let nr = si.nr_pages;
    let mut m2p = HashMap::with_capacity(usize::try_from(nr).unwrap_or(0));
    let mut pfn = 0u64;
    while pfn < nr {
        let va = pfn
            .checked_mul(8)
            .and_then(|off| si.mfn_list.checked_add(off))
            .ok_or_else(|| fail(P2m, "the p2m list runs past the top of the address space"))?;
        let what = format!("the p2m list (start_info.mfn_list) entry for pfn {pfn:#x} at");
        let t = g.translate(l4, &what, va).map_err(|why| fail(P2m, why))?;
        let n = ((PAGE - t.offset) / 8).min(nr - pfn);
        let mut bytes = vec![0u8; usize::try_from(n * 8).unwrap_or(0)];
        g.read(t.frame, t.offset, &mut bytes)
            .ok_or_else(|| fail(P2m, format!("{what} {va:#x} cannot be read")))?;
        for (i, b) in bytes.chunks_exact(8).enumerate() {
            let p = pfn + i as u64;
            let mfn = u64::from_le_bytes(b.try_into().unwrap_or([0xff; 8]));
            if mfn == INVALID_P2M_ENTRY {
                return Err(fail(
                    P2m,
                    format!("p2m entry for pfn {p:#x} is missing (INVALID_P2M_ENTRY)"),
                ));
            }
            if !g.owns(mfn) {
                return Err(fail(
                    P2m,
                    format!(
                        "p2m entry for pfn {p:#x} is missing: it holds mfn {mfn:#x}, which is \
                         not a page of this domain"
                    ),
                ));
            }
            if let Some(other) = m2p.insert(mfn, p) {
                return Err(fail(
                    P2m,
                    format!("p2m entries for pfn {other:#x} and pfn {p:#x} both hold mfn {mfn:#x}"),
                ));
            }
        }
        pfn += n;
    }
    Ok(m2p)
}

/// Every leaf of the tables rooted at `l4` maps a page of the domain, no page table is mapped
/// writable, and the tables map at most twice the domain's pages. Returns every leaf.
fn check_tables(g: &Guest<'_>, l4: u64) -> Result<Vec<Mapping>, BootFailure> {
    use BootCheck::PageTables;
    let pages = usize::try_from(g.d.tot_pages).unwrap_or(usize::MAX);
    let limit = pages.saturating_mul(2).saturating_add(4096).min(1 << 24);
    let maps = Mapping::enumerate(g, l4, limit).map_err(|e| {
        fail(
            PageTables,
            match e {
                WalkError::TooManyMappings { limit } => format!(
                    "the page tables map more than {limit} pages, far more than the domain's \
                     {pages}: a table is reached from itself (they loop) or tables are shared"
                ),
                WalkError::MissingFrame {
                    va, level, frame, ..
                } => format!(
                    "the {level:?} table for {va:#x} would be mfn {frame:#x}, which is not a page \
                     of this domain"
                ),
                e => describe_walk("the page tables at", l4 << 12, e),
            },
        )
    })?;
    let tables = g.table_frames();
    for m in &maps {
        let frames = m.size.bytes() / PAGE;
        if let Some(bad) = (m.frame..m.frame.saturating_add(frames)).find(|f| !g.owns(*f)) {
            let va = m.va.wrapping_add((bad - m.frame) * PAGE);
            return Err(fail(
                PageTables,
                format!(
                    "the page tables map {va:#x} to mfn {bad:#x}, which is not a page of this \
                     domain"
                ),
            ));
        }
        if !m.flags.contains(PteFlags::RW) {
            continue;
        }
        if let Some(&t) = tables.range(m.frame..m.frame.saturating_add(frames)).next() {
            let va = m.va.wrapping_add((t - m.frame) * PAGE);
            return Err(fail(
                PageTables,
                format!(
                    "the page table at mfn {t:#x} is mapped writable at {va:#x}: Xen refuses \
                     page tables the guest can write"
                ),
            ));
        }
    }
    Ok(maps)
}

/// `arbytes` bits (Xen's compressed segment attributes: type 0-3, S 4, DPL 5-6, P 7, AVL 8,
/// L 9, D/B 10, G 11).
const AR_S: u32 = 1 << 4;
const AR_P: u32 = 1 << 7;
const AR_L: u32 = 1 << 9;
const AR_DB: u32 = 1 << 10;
const AR_CODE: u32 = 1 << 3;
const AR_WRITABLE: u32 = 1 << 1;

/// A segment register as the CPU record holds it.
struct Segment {
    name: &'static str,
    base: u64,
    limit: u32,
    ar: u32,
}

impl Segment {
    fn flat(&self) -> bool {
        self.base == 0 && self.limit == u32::MAX && self.ar & (AR_P | AR_S) == AR_P | AR_S
    }

    fn describe(&self) -> String {
        format!(
            "base {:#x}, limit {:#x}, attributes {:#x}",
            self.base, self.limit, self.ar
        )
    }
}

/// vCPU 0's mode: 32-bit protected mode, paging and long mode off, flat segments.
fn check_pvh_cpu(cpu: &HvmHwCpu) -> Result<(), BootFailure> {
    use BootCheck::Vcpu;
    const CR0_PE: u64 = 1;
    const CR0_PG: u64 = 1 << 31;
    const EFER_LME: u64 = 1 << 8;
    const EFER_LMA: u64 = 1 << 10;
    if cpu.cr0 & CR0_PE == 0 {
        return Err(fail(
            Vcpu,
            format!(
                "vCPU 0 starts in real mode (cr0 {:#x} lacks PE): PVH enters in 32-bit protected \
                 mode",
                cpu.cr0
            ),
        ));
    }
    if cpu.cr0 & CR0_PG != 0 || cpu.msr_efer & (EFER_LME | EFER_LMA) != 0 {
        return Err(fail(
            Vcpu,
            format!(
                "vCPU 0 starts with paging or long mode on (cr0 {:#x}, efer {:#x}): PVH enters \
                 with paging off",
                cpu.cr0, cpu.msr_efer
            ),
        ));
    }
    let cs = Segment {
        name: "CS",
        base: cpu.cs_base,
        limit: cpu.cs_limit,
        ar: cpu.cs_arbytes,
    };
    if !cs.flat() || cs.ar & AR_CODE == 0 || cs.ar & AR_DB == 0 || cs.ar & AR_L != 0 {
        return Err(fail(
            Vcpu,
            format!(
                "vCPU 0's CS is not a flat 32-bit code segment ({}): PVH enters in 32-bit \
                 protected mode with flat segments",
                cs.describe()
            ),
        ));
    }
    let data = [
        ("DS", cpu.ds_base, cpu.ds_limit, cpu.ds_arbytes),
        ("ES", cpu.es_base, cpu.es_limit, cpu.es_arbytes),
        ("SS", cpu.ss_base, cpu.ss_limit, cpu.ss_arbytes),
    ];
    for (name, base, limit, ar) in data {
        let s = Segment {
            name,
            base,
            limit,
            ar,
        };
        if !s.flat() || s.ar & AR_CODE != 0 || s.ar & AR_WRITABLE == 0 {
            return Err(fail(
                Vcpu,
                format!(
                    "vCPU 0's {} is not a flat writable data segment ({}): PVH enters in 32-bit \
                     protected mode with flat segments",
                    s.name,
                    s.describe()
                ),
            ));
        }
    }
    Ok(())
}

/// The PVH checks.
fn check_pvh(g: &Guest<'_>) -> Result<Checked, BootFailure> {
    use BootCheck::*;
    let d = g.d;
    let online = d.build.vcpus.get(&0).is_some_and(|v| v.online);
    let Some(cpu) = d.build.hvm_cpu(0).filter(|_| online) else {
        return Err(fail(
            Vcpu,
            "vCPU 0 has no CPU record in the HVM context: the builder must start it with one \
             (XEN_DOMCTL_sethvmcontext)",
        ));
    };
    check_pvh_cpu(&cpu)?;

    let rip = cpu.rip;
    if rip > u64::from(u32::MAX) {
        return Err(fail(
            EntryPoint,
            format!("rip {rip:#x} is above 4 GiB, out of reach in 32-bit protected mode"),
        ));
    }
    if let Err(gfn) = g.populated(rip, 1) {
        return Err(fail(
            EntryPoint,
            format!("rip {rip:#x} is not in populated memory (guest frame {gfn:#x} has no page)"),
        ));
    }

    // The kernel was entered at its PHYS32_ENTRY note, read from its loaded image (the guest
    // frames below hvm_start_info).
    let image =
        g.d.physmap
            .keys()
            .copied()
            .take_while(|&gfn| gfn < cpu.rbx / PAGE);
    check_entry(
        g,
        image,
        XEN_ELFNOTE_PHYS32_ENTRY,
        "XEN_ELFNOTE_PHYS32_ENTRY",
        rip,
    )?;

    let at = cpu.rbx;
    let mut raw = [0u8; size_of::<HvmStartInfo>()];
    g.read_phys(at, &mut raw).map_err(|gfn| {
        fail(
            StartInfo,
            format!(
                "rbx {at:#x} does not point at hvm_start_info: guest frame {gfn:#x} has no page"
            ),
        )
    })?;
    let si = HvmStartInfo::read_from_bytes(&raw).unwrap_or_default();
    if si.magic != XEN_HVM_START_MAGIC_VALUE {
        return Err(fail(
            StartInfo,
            format!(
                "rbx {at:#x} does not point at hvm_start_info: the magic there is {:#x}, not \
                 {XEN_HVM_START_MAGIC_VALUE:#x}",
                si.magic
            ),
        ));
    }
    if si.version > HVM_START_INFO_VERSION {
        return Err(fail(
            StartInfo,
            format!(
                "hvm_start_info version {} is newer than Xen 4.17 defines ({HVM_START_INFO_VERSION})",
                si.version
            ),
        ));
    }
    let in_ram = |what: &str, addr: u64, len: u64| {
        g.populated(addr, len).map_err(|gfn| {
            fail(
                StartInfo,
                format!(
                    "hvm_start_info: {what} ({addr:#x}, {len:#x} bytes) is not in populated \
                     memory (guest frame {gfn:#x} has no page)"
                ),
            )
        })
    };
    let cmdline = if si.cmdline_paddr == 0 {
        String::new()
    } else {
        g.read_cstr(si.cmdline_paddr, MAX_PVH_CMDLINE)
            .map_err(|why| {
                fail(
                    StartInfo,
                    format!(
                        "hvm_start_info: the command line at {:#x} cannot be read: {why}",
                        si.cmdline_paddr
                    ),
                )
            })?
    };
    if si.nr_modules > MAX_PVH_MODULES {
        return Err(fail(
            StartInfo,
            format!(
                "hvm_start_info lists {} modules, more than {MAX_PVH_MODULES}",
                si.nr_modules
            ),
        ));
    }
    if si.nr_modules > 0 {
        let entry = size_of::<HvmModlistEntry>() as u64;
        let len = u64::from(si.nr_modules) * entry;
        in_ram("the module list", si.modlist_paddr, len)?;
        for i in 0..u64::from(si.nr_modules) {
            let mut raw = [0u8; size_of::<HvmModlistEntry>()];
            let addr = si.modlist_paddr + i * entry;
            g.read_phys(addr, &mut raw)
                .map_err(|_| fail(StartInfo, "hvm_start_info: the module list cannot be read"))?;
            let m = HvmModlistEntry::read_from_bytes(&raw).unwrap_or_default();
            in_ram(&format!("module {i}"), m.paddr, m.size)?;
        }
    }
    if si.version >= 1 && si.memmap_entries > 0 {
        if si.memmap_entries > MAX_PVH_MEMMAP {
            return Err(fail(
                StartInfo,
                format!(
                    "hvm_start_info's memory map has {} entries, more than {MAX_PVH_MEMMAP}",
                    si.memmap_entries
                ),
            ));
        }
        let len = u64::from(si.memmap_entries) * 24;
        in_ram("the memory map", si.memmap_paddr, len)?;
    }
    if si.rsdp_paddr != 0 {
        in_ram("the ACPI RSDP", si.rsdp_paddr, 36)?;
    }

    let param = |index: u32| d.build.hvm_param(index);
    let store_pfn = param(HVM_PARAM_STORE_PFN);
    let console_pfn = param(HVM_PARAM_CONSOLE_PFN);
    let console = g.ring(
        Console,
        "console",
        console_pfn,
        param(HVM_PARAM_CONSOLE_EVTCHN),
    )?;
    let store = g.ring(
        Xenstore,
        "xenstore",
        store_pfn,
        param(HVM_PARAM_STORE_EVTCHN),
    )?;
    check_distinct_ports(&console, &store)?;

    let Some(mtrr) = d.build.hvm_mtrr(0) else {
        return Err(fail(
            Mtrr,
            "vCPU 0 has no MTRR record in the HVM context: its memory would be uncached",
        ));
    };
    if mtrr.msr_mtrr_def_type & MTRR_DEF_TYPE_ENABLE == 0
        || mtrr.msr_mtrr_def_type & 0xff != MTRR_TYPE_WRBACK
    {
        return Err(fail(
            Mtrr,
            format!(
                "vCPU 0's MTRRs do not make memory write-back by default (MTRRdefType {:#x}, \
                 want enabled with type 6)",
                mtrr.msr_mtrr_def_type
            ),
        ));
    }

    g.check_grant(ConsoleGrant, GNTTAB_RESERVED_CONSOLE, "console", &console)?;
    g.check_grant(XenstoreGrant, GNTTAB_RESERVED_XENSTORE, "xenstore", &store)?;
    Ok(Checked {
        kind: BootKind::Pvh,
        cmdline,
        console,
        store,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_codes_round_trip_and_are_distinct() {
        let codes: BTreeSet<u8> = BootCheck::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(codes.len(), BootCheck::ALL.len());
        for c in BootCheck::ALL {
            assert_eq!(BootCheck::from_code(c.code()), Some(c));
        }
        assert_eq!(
            BootCheck::from_code(u8::try_from(BootCheck::ALL.len()).unwrap()),
            None
        );
    }

    #[test]
    fn walk_errors_read_as_sentences() {
        let e = WalkError::NotPresent {
            va: 0xffff_ffff_8100_0000,
            level: crate::x86::Level::L2,
            frame: 0x1234,
            index: 8,
        };
        assert_eq!(
            describe_walk("rip", 0xffff_ffff_8100_0000, e),
            "rip 0xffffffff81000000 is not mapped: the L2 entry for it is not present (entry 8 \
             of the L2 table at mfn 0x1234)"
        );
    }
}
