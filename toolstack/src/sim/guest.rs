//! The stand-in guest's life after boot: what a Linux guest's PV drivers do, for each domain
//! whose simulated boot succeeded ([`xenctrl::XenCtrl::sim_boot_report`]).
//!
//! The simulated hypervisor runs no guest code: at first unpause it checks the build and plays
//! a guest's first steps (a console line, one `XS_WRITE` of `data/rxen-sim-booted`). This
//! module plays the rest, in the daemon, through public interfaces only: a xenstore
//! connection that speaks as the domain (as its ring would) and the hypercalls a dom0 may
//! issue on a domain's behalf.
//!
//! - **Control** (Linux's `drivers/xen/manage.c`): on boot it advertises `control/feature-poweroff`
//!   and then `control/feature-reboot`, once its balloon and its watch are set up (so a caller
//!   who sees both is heard); it does not advertise `feature-suspend`, because it cannot
//!   suspend. On a word in `control/shutdown` it does what `do_shutdown_handler` does: in one
//!   transaction it reads the word and, if it knows it, empties the node; then it shuts down
//!   (`SCHEDOP_shutdown`, here `SCHEDOP_remote_shutdown` from dom0): `poweroff` and `halt`
//!   power off, `reboot` reboots. Any other word (`suspend`, `crash`, garbage) is left in place
//!   and logged, as Linux logs "Ignoring shutdown request".
//! - **Balloon** (Linux's `drivers/xen/balloon.c`): on `memory/target` (KiB) it moves the
//!   domain's pages toward it, a batch at a time: `XENMEM_decrease_reservation` of the highest
//!   frames of RAM it still has, or `XENMEM_populate_physmap` of the frames it gave back, most
//!   recent first, never above `max_mem` (Xen refuses). Like Linux it counts the RAM it was
//!   booted with: a PV guest's `tot_pages` reaches exactly target / 4; a PVH guest keeps its
//!   special and ACPI pages on top of that. The frames the boot uses (kernel, modules, start
//!   info, rings, page tables, p2m) are never given away: it balloons down to them and no
//!   further. A target that is not a number is ignored, with a log line.
//!
//! A PV guest names its frames by machine frame, so the agent learns the guest's p2m as a dom0
//! tool would: it walks the boot page tables (`cr3` of vCPU 0) to `start_info` (`rsi`) and its
//! `mfn_list`. A PVH guest's frames are its physical frames; `hvm_start_info` (`rbx`) says
//! where its modules are.
//!
//! The agent stops when its domain shuts down or goes (its xenstore connection is closed when
//! xenstored releases the domain, as at `@releaseDomain`).

use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;

use xenctrl::abi::ShutdownReason;
use xenctrl::backend::sim::BootKind;
use xenctrl::volatile::ReadOnly;
use xenctrl::{DomId, DomainId, SimConfig, SimHypervisor, XenCtrl};
use xenstore::server::Controller;

const PAGE: u64 = 4096;
const PAGE_BYTES: usize = 4096;
/// How many frames one balloon step moves (Linux's balloon works in batches as well).
const BATCH: usize = 512;
/// The node the stand-in writes when it boots, under its home.
const BOOTED: &str = "data/rxen-sim-booted";

/// Watches for stand-in guests that boot, and runs an agent for each until it goes.
///
/// # Errors
///
/// The error that stopped it: the model or the xenstore connection failed.
pub(super) fn run(hypervisor: PathBuf, ctl: Controller) -> io::Result<()> {
    let sim = Arc::new(SimHypervisor::persistent(
        &hypervisor,
        SimConfig::default(),
    )?);
    let xc = XenCtrl::on_simulator(Arc::clone(&sim)).map_err(io::Error::other)?;
    let xs = ctl.client().map_err(io::Error::other)?;
    let w = xs.watch("/local/domain").map_err(io::Error::other)?;
    let running: Arc<Mutex<BTreeSet<DomId>>> = Arc::default();
    loop {
        let ev = w.next_event().map_err(io::Error::other)?;
        let Some(domid) = booted_domid(&ev.path) else {
            continue;
        };
        let booted = matches!(xc.sim_boot_report(domid), Ok(Some(r)) if r.booted());
        if !booted || !lock(&running).insert(domid) {
            continue;
        }
        let (sim, ctl, running) = (Arc::clone(&sim), ctl.clone(), Arc::clone(&running));
        let spawned = thread::Builder::new()
            .name(format!("guest-{domid}"))
            .spawn(move || {
                if let Err(e) = agent(&sim, &ctl, domid) {
                    eprintln!("rxen-sim-xenstored: the stand-in guest of domain {domid}: {e}");
                }
                lock(&running).remove(&domid);
            });
        if let Err(e) = spawned {
            eprintln!("rxen-sim-xenstored: cannot run the stand-in guest of domain {domid}: {e}");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The domain whose boot node `path` is: `/local/domain/N/data/rxen-sim-booted`, N > 0.
fn booted_domid(path: &str) -> Option<DomId> {
    let rest = path.strip_prefix("/local/domain/")?;
    let (n, tail) = rest.split_once('/')?;
    if tail != BOOTED {
        return None;
    }
    n.parse().ok().filter(|&d: &DomId| d != 0)
}

/// One booted domain's PV drivers, until it shuts down or goes.
fn agent(sim: &Arc<SimHypervisor>, ctl: &Controller, domid: DomId) -> io::Result<()> {
    let xc = XenCtrl::on_simulator(Arc::clone(sim)).map_err(io::Error::other)?;
    let xs = ctl.domain_client(domid.into()).map_err(io::Error::other)?;
    let home = format!("/local/domain/{domid}");
    let mut balloon = match Balloon::new(&xc, &xs, domid, &home) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("rxen-sim-xenstored: domain {domid}: no balloon driver: {e}");
            None
        }
    };
    // One watch on the home: control/shutdown and memory/target both live under it.
    let w = match xs.watch(&home) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("rxen-sim-xenstored: domain {domid}: cannot watch {home}: {e}");
            return Ok(());
        }
    };
    // Advertised once the balloon knows the RAM it started with and the watch is set: whoever
    // sees both features may ask for a shutdown or set a target, and it is acted on.
    for f in ["feature-poweroff", "feature-reboot"] {
        if let Err(e) = xs.write(&format!("{home}/control/{f}"), "1") {
            eprintln!("rxen-sim-xenstored: domain {domid}: cannot advertise control/{f}: {e}");
        }
    }
    // What was last ignored, so each odd value is logged once.
    let (mut ignored_target, mut ignored_request) = (None, None);
    loop {
        match xc.domain_info(domid) {
            Ok(i) if i.shutdown_reason().is_none() && !i.dying() => {}
            _ => return Ok(()), // shut down or gone: the guest runs no more
        }
        if shutdown_request(&xc, &xs, domid, &home, &mut ignored_request)? {
            return Ok(());
        }
        if let Some(b) = balloon.as_mut() {
            let target = xs.read_string(&format!("{home}/memory/target")).ok();
            match target.as_deref().map(str::trim).map(str::parse::<u64>) {
                Some(Ok(kib)) => {
                    ignored_target = None;
                    b.toward(&xc, kib / 4);
                }
                Some(Err(_)) if ignored_target != target => {
                    eprintln!(
                        "rxen-sim-xenstored: domain {domid}: ignoring memory/target {:?}: not a number of KiB",
                        target.as_deref().unwrap_or_default()
                    );
                    ignored_target = target;
                }
                _ => {}
            }
        }
        if w.next_event().is_err() {
            return Ok(()); // xenstored released the domain: its connection is closed
        }
        while w.try_next_event().is_some() {}
    }
}

/// Linux's `do_shutdown_handler`; whether the guest shut down.
fn shutdown_request(
    xc: &XenCtrl,
    xs: &xenstore::Client,
    domid: DomId,
    home: &str,
    ignored: &mut Option<String>,
) -> io::Result<bool> {
    let path = format!("{home}/control/shutdown");
    let word = xs.transaction(|t| {
        let word = t.read_string(&path).unwrap_or_default();
        if reason(&word).is_some() {
            t.write(&path, "")?;
        }
        Ok(word)
    });
    let word = match word {
        Ok(w) => w,
        Err(e) => {
            eprintln!("rxen-sim-xenstored: domain {domid}: cannot read control/shutdown: {e}");
            return Ok(false);
        }
    };
    if word.is_empty() {
        return Ok(false);
    }
    let Some(why) = reason(&word) else {
        if ignored.as_deref() != Some(word.as_str()) {
            eprintln!("rxen-sim-xenstored: domain {domid}: ignoring shutdown request {word:?}");
            *ignored = Some(word);
        }
        return Ok(false);
    };
    xc.remote_shutdown(domid, why).map_err(io::Error::other)?;
    Ok(true)
}

fn reason(word: &str) -> Option<ShutdownReason> {
    match word {
        "poweroff" | "halt" => Some(ShutdownReason::POWEROFF),
        "reboot" => Some(ShutdownReason::REBOOT),
        _ => None,
    }
}

/// The balloon driver's view of the guest's RAM.
struct Balloon {
    domid: DomId,
    kind: BootKind,
    /// The name Xen knows each RAM page by, by pfn (PV: the p2m; PVH: the pfn itself).
    frames: Vec<u64>,
    /// Pages below this pfn are never given away.
    floor: usize,
    /// How many pages, from the top, are given away (the balloon).
    out: usize,
    /// Pages the domain has that are not RAM (PVH's special and ACPI pages).
    extra: u64,
}

impl Balloon {
    fn new(xc: &XenCtrl, xs: &xenstore::Client, domid: DomId, home: &str) -> io::Result<Self> {
        let report = xc
            .sim_boot_report(domid)
            .map_err(io::Error::other)?
            .ok_or_else(|| io::Error::other("no boot report"))?;
        let tot = xc.domain_info(domid).map_err(io::Error::other)?.tot_pages;
        let (frames, floor) = match report.kind {
            BootKind::Pv => pv_memory(xc, domid)?,
            BootKind::Pvh => {
                let target = xs
                    .read_string(&format!("{home}/memory/target"))
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .ok_or_else(|| io::Error::other("no memory/target at boot"))?;
                pvh_memory(xc, domid, target / 4)?
            }
        };
        let ram = frames.len() as u64;
        Ok(Balloon {
            domid,
            kind: report.kind,
            floor: floor.min(frames.len()),
            frames,
            out: 0,
            extra: tot.saturating_sub(ram),
        })
    }

    /// Move toward `target` pages of RAM, a batch at a time, until there or stuck.
    fn toward(&mut self, xc: &XenCtrl, target: u64) {
        let target = usize::try_from(target).unwrap_or(usize::MAX);
        loop {
            let have = self.frames.len() - self.out;
            let moved = if have > target {
                self.give(xc, (have - target).min(BATCH))
            } else if have < target {
                self.take(xc, (target - have).min(BATCH))
            } else {
                0
            };
            if moved == 0 {
                return;
            }
        }
    }

    /// `decrease_reservation` of up to `n` pages from the top; how many went.
    fn give(&mut self, xc: &XenCtrl, n: usize) -> usize {
        let top = self.frames.len() - self.out;
        let n = n.min(top.saturating_sub(self.floor));
        if n == 0 {
            return 0;
        }
        let mut names: Vec<u64> = self.frames[top - n..top].iter().rev().copied().collect();
        match xc.decrease_reservation(self.domid, 0, &mut names) {
            Ok(done) => {
                self.out += done;
                done
            }
            Err(e) => {
                eprintln!(
                    "rxen-sim-xenstored: domain {}: the balloon cannot give pages back: {e}",
                    self.domid
                );
                0
            }
        }
    }

    /// `populate_physmap` of up to `n` of the pages given away, the last given first.
    fn take(&mut self, xc: &XenCtrl, n: usize) -> usize {
        let n = n.min(self.out);
        if n == 0 {
            return 0;
        }
        let first = self.frames.len() - self.out;
        let mut pfns: Vec<u64> = (first..first + n).map(|p| p as u64).collect();
        match xc.populate_physmap(self.domid, 0, 0, &mut pfns) {
            Ok(done) => {
                // A PV guest learns the machine frames Xen wrote back (its new p2m entries).
                if self.kind == BootKind::Pv {
                    self.frames[first..first + done].copy_from_slice(&pfns[..done]);
                }
                self.out -= done;
                done
            }
            Err(e) => {
                eprintln!(
                    "rxen-sim-xenstored: domain {}: the balloon cannot take pages ({} beyond RAM): {e}",
                    self.domid, self.extra
                );
                0
            }
        }
    }
}

/// Read a `u64` at `offset` of the guest's frame `frame`.
fn peek(xc: &XenCtrl, domid: DomId, frame: u64, offset: u64) -> io::Result<u64> {
    let m = xc
        .map_foreign::<ReadOnly>(DomainId::new(domid), &[frame])
        .map_err(io::Error::other)?;
    let off = usize::try_from(offset % PAGE).unwrap_or(0);
    m.slice()
        .read::<u64>(off)
        .map_err(|_| io::Error::other("read past the page"))
}

/// The machine frame a PV guest's boot page tables map `vaddr` to.
fn pv_translate(xc: &XenCtrl, domid: DomId, l4: u64, vaddr: u64) -> io::Result<u64> {
    let mut table = l4;
    for level in (0..4).rev() {
        let index = (vaddr >> (12 + 9 * level)) & 511;
        let entry = peek(xc, domid, table, index * 8)?;
        if entry & 1 == 0 {
            return Err(io::Error::other(format!(
                "{vaddr:#x} is not mapped (level {})",
                level + 1
            )));
        }
        table = (entry & 0x000f_ffff_ffff_f000) >> 12;
    }
    Ok(table)
}

/// The machine frames of `count` pages from `vaddr` (page aligned): one walk to each L1 table,
/// then its entries.
fn pv_translate_run(
    xc: &XenCtrl,
    domid: DomId,
    l4: u64,
    vaddr: u64,
    count: usize,
) -> io::Result<Vec<u64>> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let va = vaddr + out.len() as u64 * PAGE;
        // The L1 table covering va: walk three levels.
        let mut table = l4;
        for level in (1..4).rev() {
            let index = (va >> (12 + 9 * level)) & 511;
            let entry = peek(xc, domid, table, index * 8)?;
            if entry & 1 == 0 || (level == 1 && entry & 0x80 != 0) {
                return Err(io::Error::other(format!(
                    "{va:#x} is not mapped by 4 KiB pages"
                )));
            }
            table = (entry & 0x000f_ffff_ffff_f000) >> 12;
        }
        let m = xc
            .map_foreign::<ReadOnly>(DomainId::new(domid), &[table])
            .map_err(io::Error::other)?;
        let s = m.slice();
        let mut index = usize::try_from((va >> 12) & 511).unwrap_or(0);
        while index < 512 && out.len() < count {
            let entry = s
                .read::<u64>(index * 8)
                .map_err(|_| io::Error::other("L1 read"))?;
            if entry & 1 == 0 {
                return Err(io::Error::other(format!("{va:#x}: a page is not mapped")));
            }
            out.push((entry & 0x000f_ffff_ffff_f000) >> 12);
            index += 1;
        }
    }
    Ok(out)
}

/// A PV guest's p2m (pfn -> mfn) and the pfn below which its boot's frames lie.
fn pv_memory(xc: &XenCtrl, domid: DomId) -> io::Result<(Vec<u64>, usize)> {
    use xenctrl::abi::{StartInfo, SIF_MOD_START_PFN};
    let ctx = xc.vcpu_context(domid, 0).map_err(io::Error::other)?;
    let l4 = ctx.ctrlreg[3] >> 12;
    let si_va = ctx.user_regs.rsi;
    let si_mfn = pv_translate(xc, domid, l4, si_va)?;
    let field = |off: usize| peek(xc, domid, si_mfn, (si_va % PAGE) + off as u64);
    let nr_pages = field(core::mem::offset_of!(StartInfo, nr_pages))?;
    let mfn_list = field(core::mem::offset_of!(StartInfo, mfn_list))?;
    let pt_base = field(core::mem::offset_of!(StartInfo, pt_base))?;
    let nr_pt = field(core::mem::offset_of!(StartInfo, nr_pt_frames))?;
    let flags = field(core::mem::offset_of!(StartInfo, flags))? & 0xffff_ffff;
    let mod_start = field(core::mem::offset_of!(StartInfo, mod_start))?;
    let mod_len = field(core::mem::offset_of!(StartInfo, mod_len))?;
    if nr_pages == 0 || nr_pages > 1 << 28 {
        return Err(io::Error::other(format!(
            "start_info says {nr_pages} pages"
        )));
    }
    // The p2m: its frames from the page tables, then all of them in one mapping.
    let first = mfn_list & !(PAGE - 1);
    let skip = usize::try_from(mfn_list - first).unwrap_or(0);
    let total = usize::try_from(nr_pages).unwrap_or(0);
    let count = (skip + total * 8).div_ceil(PAGE_BYTES);
    let mfns = pv_translate_run(xc, domid, l4, first, count)?;
    let m = xc
        .map_foreign::<ReadOnly>(DomainId::new(domid), &mfns)
        .map_err(io::Error::other)?;
    let s = m.slice();
    let p2m = (0..total)
        .map(|i| s.read::<u64>(skip + i * 8))
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|_| io::Error::other("the p2m is not where start_info says"))?;
    drop(m);
    // The bootstrap area starts at pfn 0: find where start_info sits to learn its base.
    let si_pfn = p2m
        .iter()
        .position(|&m| m == si_mfn)
        .ok_or_else(|| io::Error::other("start_info is not in the p2m"))? as u64;
    let base = si_va.wrapping_sub(si_pfn * PAGE) & !(PAGE - 1);
    let pfn = |va: u64| va.wrapping_sub(base) / PAGE;
    let mut floor = pfn(pt_base) + nr_pt + 1;
    let p2m_pages = (nr_pages * 8).div_ceil(PAGE);
    if mfn_list >= base {
        floor = floor.max(pfn(mfn_list) + p2m_pages);
    } else {
        // At INIT_P2M, its frames after the bootstrap area, then the page tables mapping it
        // (an L1 per 512 frames, and at most an L2, an L3 and an L4 more).
        let first = field(core::mem::offset_of!(StartInfo, first_p2m_pfn))?;
        let n = field(core::mem::offset_of!(StartInfo, nr_p2m_frames))?.max(p2m_pages);
        floor = floor.max(first.saturating_add(n + n.div_ceil(512) + 3));
    }
    if mod_len != 0 {
        let start = if flags & u64::from(SIF_MOD_START_PFN) != 0 {
            mod_start
        } else {
            pfn(mod_start)
        };
        floor = floor.max(start + mod_len.div_ceil(PAGE));
    }
    // The bootstrap mapping ends on a 4 MiB boundary, with its padding.
    floor = floor.next_multiple_of(1024);
    Ok((p2m, usize::try_from(floor).unwrap_or(usize::MAX)))
}

/// A PVH guest's RAM frames (`ram` pages: low RAM up to the MMIO hole, the rest above 4 GiB)
/// and the pfn below which its boot's frames lie.
fn pvh_memory(xc: &XenCtrl, domid: DomId, ram: u64) -> io::Result<(Vec<u64>, usize)> {
    const HOLE: u64 = 0xFC000;
    const HIGH: u64 = 0x100000;
    let low = ram.min(HOLE);
    let frames: Vec<u64> = (0..low).chain(HIGH..HIGH + (ram - low)).collect();
    let ctx = xc.vcpu_context(domid, 0).map_err(io::Error::other)?;
    let si = ctx.user_regs.rbx;
    let at = |addr: u64| peek(xc, domid, addr / PAGE, addr % PAGE);
    // struct hvm_start_info: magic, version, flags, nr_modules (u32 each), modlist_paddr,
    // cmdline_paddr, rsdp_paddr, memmap_paddr (u64 each).
    let nr_modules = at(si + 8)? >> 32;
    let modlist = at(si + 16)?;
    let mut end = si + 56;
    for addr in [at(si + 24)?, at(si + 40)?, modlist] {
        if addr < low * PAGE {
            end = end.max(addr + 1);
        }
    }
    for i in 0..nr_modules.min(16) {
        let (paddr, size) = (at(modlist + i * 32)?, at(modlist + i * 32 + 8)?);
        end = end.max(paddr.saturating_add(size));
    }
    let floor = end.div_ceil(PAGE);
    Ok((frames, usize::try_from(floor).unwrap_or(usize::MAX)))
}
