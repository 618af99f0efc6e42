//! The simulated host checks a boot structurally, then runs a stand-in guest.
//!
//! Minimal PV and PVH guests are built by hand through the public `XenCtrl` API, as a
//! toolstack's builder would: they boot, print their line on the console ring and queue an
//! `XS_WRITE` on the xenstore ring. Then each check is broken on purpose, one at a time, and
//! the domain must crash with a report naming that problem. Hostile page tables (loops,
//! frames out of range) give a report, not a hang or a panic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use xenctrl::abi::*;
use xenctrl::backend::sim::{BootCheck, BootKind, BootOutcome, BootReport};
use xenctrl::evtchn::{EventChannels, Port};
use xenctrl::hvm_context::{HvmContext, HvmRecord};
use xenctrl::volatile::{ReadOnly, ReadWrite};
use xenctrl::x86::{PageTables, Pte, PteFlags};
use xenctrl::{
    CreateDomain, DomId, DomainId, HvmParam, Resource, SimConfig, SimHypervisor, XenCtrl,
};
use zerocopy::{FromZeros, IntoBytes};

// ---------------------------------------------------------------------------------------------
// A PV guest, by hand.

/// Where pfn 0 is mapped (Linux's `__START_KERNEL_map`).
const VIRT_BASE: u64 = 0xffff_ffff_8000_0000;
/// 2 MiB: one L1 table maps it all.
const PV_PAGES: u64 = 512;
/// The kernel: pfns 0-3, entered at pfn 1.
const KERNEL_PAGES: u64 = 4;
const ENTRY_PFN: u64 = 1;
const START_INFO_PFN: u64 = 4;
const XENSTORE_PFN: u64 = 5;
const CONSOLE_PFN: u64 = 6;
const L4_PFN: u64 = 7;
const L3_PFN: u64 = 8;
const L2_PFN: u64 = 9;
const L1_PFN: u64 = 10;
const STACK_PFN: u64 = 11;
const P2M_PFN: u64 = 12;
const CMDLINE: &str = "console=hvc0 root=/dev/xvda1 ro";

const TABLE: PteFlags = PteFlags::PRESENT
    .union(PteFlags::RW)
    .union(PteFlags::USER)
    .union(PteFlags::ACCESSED);

fn idx(pfn: u64) -> usize {
    usize::try_from(pfn).unwrap()
}

fn va(pfn: u64) -> u64 {
    VIRT_BASE + pfn * 4096
}

/// Everything a PV builder writes and sets, before it is written and set: tests break one
/// thing in it.
struct PvPlan {
    mfns: Vec<u64>,
    /// Page contents by pfn (start_info is rendered from `si` when written).
    pages: BTreeMap<u64, Vec<u8>>,
    si: StartInfo,
    ctx: VcpuGuestContext,
    pin: bool,
    /// Grant entries to write (reference, entry).
    grants: Vec<(u32, GrantEntryV1)>,
    upcall_mask: bool,
    /// `XEN_DOMCTL_hypercall_init` on this pfn's frame.
    hypercall_page: Option<u64>,
    console_port: u32,
    store_port: u32,
}

impl PvPlan {
    /// Entry `index` of the table in `pfn`.
    fn set_pte(&mut self, table_pfn: u64, index: usize, pte: Pte) {
        let page = self.pages.get_mut(&table_pfn).expect("a table page");
        page[index * 8..index * 8 + 8].copy_from_slice(&pte.0.to_le_bytes());
    }

    /// The L1 entry that maps `pfn`.
    fn set_leaf(&mut self, pfn: u64, flags: PteFlags) {
        let pte = Pte::new(self.mfns[idx(pfn)], flags).unwrap();
        self.set_pte(L1_PFN, idx(pfn), pte);
    }

    fn set_p2m(&mut self, pfn: u64, mfn: u64) {
        let at = usize::try_from(pfn * 8).unwrap();
        let page = self.pages.get_mut(&P2M_PFN).expect("the p2m page");
        page[at..at + 8].copy_from_slice(&mfn.to_le_bytes());
    }
}

struct Guest {
    sim: Arc<SimHypervisor>,
    xc: XenCtrl,
    d: DomId,
    /// PV: machine frames by pfn; PVH: the guest frames populated.
    frames: Vec<u64>,
    console: (u64, u32),
    store: (u64, u32),
}

impl Guest {
    fn dom(&self) -> DomainId {
        DomainId::new(self.d)
    }

    fn report(&self) -> BootReport {
        let r = self.sim.boot_report(self.dom()).expect("the domain exists");
        let through_xc = self.xc.sim_boot_report(self.d).expect("the domain exists");
        assert_eq!(r, through_xc, "XenCtrl and SimHypervisor agree");
        r.expect("a boot report")
    }

    /// The domain crashed at boot, on `check`, and the report says `words`.
    fn assert_crashed(&self, check: BootCheck, words: &str) {
        let r = self.report();
        let info = self.xc.domain_info(self.d).unwrap();
        assert_eq!(
            info.shutdown_reason(),
            Some(ShutdownReason::CRASH),
            "crashed: {r}"
        );
        assert!(!info.running(), "{r}");
        let f = r.failure().unwrap_or_else(|| panic!("a failed boot: {r}"));
        assert_eq!(f.check, check, "{r}");
        assert!(
            f.problem.contains(words),
            "{:?} does not say {words:?}",
            f.problem
        );
        // Nothing was printed.
        assert_eq!(self.console_out().1, 0, "a crashed guest prints nothing");
    }

    /// The console's `out` ring: (bytes written, `out_prod`).
    fn console_out(&self) -> (Vec<u8>, u32) {
        let page = self
            .xc
            .map_foreign::<ReadOnly>(self.dom(), &[self.console.0])
            .unwrap();
        let prod: u32 = page
            .slice()
            .read(core::mem::offset_of!(XenconsInterface, out_prod))
            .unwrap();
        let out = core::mem::offset_of!(XenconsInterface, out);
        let bytes = page.slice().to_vec(out, prod.min(2048) as usize).unwrap();
        (bytes, prod)
    }

    /// The xenstore page's `req` ring: (bytes written, `req_prod`).
    fn store_req(&self) -> (Vec<u8>, u32) {
        let page = self
            .xc
            .map_foreign::<ReadOnly>(self.dom(), &[self.store.0])
            .unwrap();
        let prod: u32 = page
            .slice()
            .read(core::mem::offset_of!(XenstoreDomainInterface, req_prod))
            .unwrap();
        let req = core::mem::offset_of!(XenstoreDomainInterface, req);
        (
            page.slice().to_vec(req, prod.min(1024) as usize).unwrap(),
            prod,
        )
    }
}

fn pv_plan(xc: &XenCtrl, d: DomId) -> PvPlan {
    xc.set_max_mem(d, PV_PAGES * 4).unwrap();
    xc.set_max_vcpus(d, 1).unwrap();
    xc.claim_pages(d, PV_PAGES).unwrap();
    xc.set_address_size(d, 64).unwrap();
    let mut mfns: Vec<u64> = (0..PV_PAGES).collect();
    xc.populate_physmap_exact(d, 0, 0, &mut mfns).unwrap();
    let console_port = xc.evtchn_alloc_unbound(d, 0).unwrap();
    let store_port = xc.evtchn_alloc_unbound(d, 0).unwrap();
    let mfn = |pfn: u64| mfns[idx(pfn)];

    // Tables: every page mapped at VIRT_BASE, the tables read-only, only the kernel
    // executable.
    let mut pt = PageTables::new(mfn(L4_PFN));
    let mut spare = [mfn(L3_PFN), mfn(L2_PFN), mfn(L1_PFN)].into_iter();
    let mut alloc = || spare.next();
    for pfn in 0..PV_PAGES {
        let mut flags = PteFlags::PRESENT | PteFlags::ACCESSED;
        if !(L4_PFN..=L1_PFN).contains(&pfn) {
            flags |= PteFlags::RW;
        }
        if pfn >= KERNEL_PAGES {
            flags |= PteFlags::NX;
        }
        pt.map_4k(va(pfn), mfn(pfn), flags, TABLE, &mut alloc)
            .unwrap();
    }
    assert_eq!(pt.len(), 4);
    let pfn_of = |m: u64| mfns.iter().position(|&x| x == m).unwrap() as u64;
    let mut pages = BTreeMap::new();
    for (frame, table) in pt.tables() {
        pages.insert(pfn_of(frame), table.to_bytes());
    }
    pages.insert(ENTRY_PFN, vec![0x90; 4096]); // nops
    pages.insert(P2M_PFN, mfns.iter().flat_map(|m| m.to_le_bytes()).collect());

    let shared_info = xc.domain_info(d).unwrap().shared_info_frame;
    let mut si = StartInfo::new_zeroed();
    si.magic[..14].copy_from_slice(b"xen-3.0-x86_64");
    si.nr_pages = PV_PAGES;
    si.shared_info = shared_info << 12;
    si.flags = SIF_VIRT_P2M_4TOOLS;
    si.store_mfn = mfn(XENSTORE_PFN);
    si.store_evtchn = store_port;
    si.console_mfn = mfn(CONSOLE_PFN);
    si.console_evtchn = console_port;
    si.pt_base = va(L4_PFN);
    si.nr_pt_frames = 4;
    si.mfn_list = va(P2M_PFN);
    si.cmd_line[..CMDLINE.len()].copy_from_slice(CMDLINE.as_bytes());

    let mut ctx = VcpuGuestContext::zeroed();
    ctx.flags = VGCF_in_kernel | VGCF_online;
    let r = &mut ctx.user_regs;
    r.rip = va(ENTRY_PFN);
    r.rsi = va(START_INFO_PFN);
    r.rsp = va(STACK_PFN + 1);
    r.cs = FLAT_KERNEL_CS64;
    r.ss = FLAT_KERNEL_SS64;
    r.rflags = 1 << 9;
    ctx.kernel_ss = u64::from(FLAT_KERNEL_SS64);
    ctx.kernel_sp = va(STACK_PFN + 1);
    ctx.ctrlreg[3] = VcpuGuestContext::pfn_to_cr3(mfn(L4_PFN));

    let grant = |frame: u64| GrantEntryV1 {
        flags: GTF_permit_access,
        domid: 0,
        frame: u32::try_from(frame).unwrap(),
    };
    PvPlan {
        grants: vec![
            (GNTTAB_RESERVED_CONSOLE, grant(mfn(CONSOLE_PFN))),
            (GNTTAB_RESERVED_XENSTORE, grant(mfn(XENSTORE_PFN))),
        ],
        mfns,
        pages,
        si,
        ctx,
        pin: true,
        upcall_mask: true,
        hypercall_page: None,
        console_port,
        store_port,
    }
}

/// Write and set everything in `plan`, in libxenguest's order, then unpause.
fn pv_finish(sim: Arc<SimHypervisor>, xc: XenCtrl, d: DomId, plan: PvPlan) -> Guest {
    let dom = DomainId::new(d);
    {
        let mem = xc.map_foreign::<ReadWrite>(dom, &plan.mfns).unwrap();
        for (&pfn, bytes) in &plan.pages {
            mem.page(idx(pfn)).unwrap().write_from(0, bytes).unwrap();
        }
        mem.page(usize::try_from(START_INFO_PFN).unwrap())
            .unwrap()
            .write_from(0, plan.si.as_bytes())
            .unwrap();
    }
    {
        let shared = xc
            .map_foreign::<ReadWrite>(dom, &[xc.domain_info(d).unwrap().shared_info_frame])
            .unwrap();
        for vcpu in 0..32 {
            shared
                .slice()
                .write(vcpu * 64 + 1, &u8::from(plan.upcall_mask))
                .unwrap();
        }
    }
    {
        let table = xc
            .map_resource::<ReadWrite>(dom, Resource::GRANT_TABLE, 0, 1)
            .unwrap();
        for (gref, e) in &plan.grants {
            table.slice().write(*gref as usize * 8, e).unwrap();
        }
    }
    let mfn = |pfn: u64| plan.mfns[idx(pfn)];
    if plan.pin {
        xc.pin_l4_table(d, mfn(L4_PFN)).unwrap();
    }
    if let Some(pfn) = plan.hypercall_page {
        xc.hypercall_init(d, mfn(pfn)).unwrap();
    }
    xc.set_vcpu_context(d, 0, &plan.ctx).unwrap();
    xc.unpause_domain(d).unwrap();
    Guest {
        frames: plan.mfns.clone(),
        console: (mfn(CONSOLE_PFN), plan.console_port),
        store: (mfn(XENSTORE_PFN), plan.store_port),
        sim,
        xc,
        d,
    }
}

/// A PV guest built on `sim`, with `brk` applied to the plan.
fn pv_guest_on(sim: Arc<SimHypervisor>, brk: impl FnOnce(&mut PvPlan)) -> Guest {
    let xc = XenCtrl::on_simulator(Arc::clone(&sim)).unwrap();
    let d = xc.create_domain(&CreateDomain::pv(1)).unwrap();
    let mut plan = pv_plan(&xc, d);
    brk(&mut plan);
    pv_finish(sim, xc, d, plan)
}

fn pv_guest(brk: impl FnOnce(&mut PvPlan)) -> Guest {
    pv_guest_on(Arc::new(SimHypervisor::default()), brk)
}

fn expected_line(kind: &str, mib: u64, cmdline: &str) -> String {
    format!("rxen-sim: Linux stand-in booted ({kind}, {mib} MiB, 1 vCPU) cmdline=\"{cmdline}\"")
}

/// The stand-in's request: an `XS_WRITE` of `data/rxen-sim-booted` = `1`.
fn assert_store_request(g: &Guest) {
    let (req, prod) = g.store_req();
    let payload = b"data/rxen-sim-booted\x001";
    assert_eq!(prod as usize, 16 + payload.len());
    let header = XsdSockmsg {
        kind: XS_WRITE,
        req_id: 1,
        tx_id: 0,
        len: u32::try_from(payload.len()).unwrap(),
    };
    assert_eq!(&req[..16], header.as_bytes());
    assert_eq!(&req[16..], payload);
}

#[test]
fn a_well_built_pv_guest_boots_and_uses_its_rings() {
    let sim = Arc::new(SimHypervisor::default());
    // Dom0's backends have bound the guest's ports (as xenconsoled and xenstored do once the
    // domain is introduced): the guest's notifications reach them.
    let ev = EventChannels::on_simulator(Arc::clone(&sim), DomainId::DOM0).unwrap();
    let xc = XenCtrl::on_simulator(Arc::clone(&sim)).unwrap();
    let d = xc.create_domain(&CreateDomain::pv(1)).unwrap();
    let plan = pv_plan(&xc, d);
    let console = ev
        .bind_interdomain(DomainId::new(d), Port::new(plan.console_port))
        .unwrap();
    let store = ev
        .bind_interdomain(DomainId::new(d), Port::new(plan.store_port))
        .unwrap();
    drain(&ev);
    let g = pv_guest_finish_with_hypercall_page(sim, xc, d, plan);

    let r = g.report();
    let line = expected_line("pv", 2, CMDLINE);
    assert_eq!(r.kind, BootKind::Pv);
    assert_eq!(
        r.outcome,
        BootOutcome::Booted {
            console_line: line.clone()
        },
        "{r}"
    );
    let info = g.xc.domain_info(g.d).unwrap();
    assert!(
        info.running() && info.shutdown_reason().is_none(),
        "{info:?}"
    );
    let (out, prod) = g.console_out();
    assert_eq!(out, format!("{line}\n").as_bytes());
    assert_eq!(prod as usize, line.len() + 1);
    assert_store_request(&g);
    let mut fired = drain(&ev);
    fired.sort_unstable();
    let mut want = vec![console.port().get(), store.port().get()];
    want.sort_unstable();
    assert_eq!(fired, want, "the guest notified both rings");

    // It boots once: pausing and unpausing again runs nothing more.
    g.xc.pause_domain(g.d).unwrap();
    g.xc.unpause_domain(g.d).unwrap();
    assert_eq!(g.console_out().1, prod);
    assert_eq!(g.report(), r);
    g.sim.with_state(|s| s.check_invariants()).unwrap();
}

/// [`pv_finish`] with a hypercall page in the kernel (mapped executable), which passes.
fn pv_guest_finish_with_hypercall_page(
    sim: Arc<SimHypervisor>,
    xc: XenCtrl,
    d: DomId,
    mut plan: PvPlan,
) -> Guest {
    plan.hypercall_page = Some(2);
    pv_finish(sim, xc, d, plan)
}

/// The ports that have fired on `ev` (the in-process simulator delivers them before the
/// call that raised them returns), unmasked again.
fn drain(ev: &EventChannels) -> Vec<u32> {
    let fired: Vec<Port> = ev.pending().map(|p| p.unwrap()).collect();
    for p in &fired {
        ev.unmask(*p).unwrap();
    }
    fired.iter().map(|p| p.get()).collect()
}

#[test]
fn a_domain_never_given_a_context_unpauses_as_before() {
    let sim = Arc::new(SimHypervisor::default());
    let xc = XenCtrl::on_simulator(Arc::clone(&sim)).unwrap();
    for config in [CreateDomain::pv(1), CreateDomain::pvh(1)] {
        let d = xc.create_domain(&config).unwrap();
        xc.set_max_mem(d, 1024).unwrap();
        xc.set_max_vcpus(d, 1).unwrap();
        let mut frames: Vec<u64> = (0..16).collect();
        xc.populate_physmap_exact(d, 0, 0, &mut frames).unwrap();
        xc.unpause_domain(d).unwrap();
        let info = xc.domain_info(d).unwrap();
        assert!(info.running(), "{info:?}");
        assert_eq!(info.shutdown_reason(), None);
        assert_eq!(xc.sim_boot_report(d).unwrap(), None);
        xc.destroy_domain(d).unwrap();
    }
    // A domain that does not exist has no report: ESRCH.
    let err = xc.sim_boot_report(999).unwrap_err();
    assert_eq!(err.errno(), Some(xenctrl::Errno::ESRCH));
}

/// One broken build per test: the name says what is broken.
macro_rules! broken_pv {
    ($name:ident, $check:ident, $words:expr, |$p:ident| $brk:expr) => {
        #[test]
        fn $name() {
            let g = pv_guest(|$p: &mut PvPlan| {
                $brk;
            });
            g.assert_crashed(BootCheck::$check, $words);
        }
    };
}

broken_pv!(
    pv_wrong_rip,
    EntryPoint,
    "rip 0xffffffff80200000 is not mapped: the L2 entry for it is not present",
    |p| p.ctx.user_regs.rip = VIRT_BASE + (2 << 20)
);
broken_pv!(
    pv_rip_on_a_data_page,
    EntryPoint,
    "which is not executable",
    |p| p.ctx.user_regs.rip = va(P2M_PFN)
);
broken_pv!(
    pv_rsi_not_canonical,
    StartInfo,
    "rsi (start_info) 0x800000000000 is not a canonical",
    |p| p.ctx.user_regs.rsi = 0x0000_8000_0000_0000
);
broken_pv!(
    pv_missing_p2m_entry,
    P2m,
    "p2m entry for pfn 0x123 is missing",
    |p| p.set_p2m(0x123, u64::MAX)
);
broken_pv!(
    pv_p2m_entry_not_the_domains,
    P2m,
    "p2m entry for pfn 0x1ff is missing: it holds mfn 0x0, which is not a page of this domain",
    |p| p.set_p2m(0x1ff, 0)
);
broken_pv!(
    pv_p2m_entries_repeat,
    P2m,
    "p2m entries for pfn 0x10 and pfn 0x11 both hold",
    |p| {
        let m = p.mfns[0x10];
        p.set_p2m(0x11, m)
    }
);
broken_pv!(
    pv_p2m_list_unmapped,
    P2m,
    "the p2m list (start_info.mfn_list) entry for pfn 0x0",
    |p| p.si.mfn_list = VIRT_BASE + (4 << 20)
);
broken_pv!(
    pv_unseeded_xenstore_grant,
    XenstoreGrant,
    "grant entry 1 (xenstore) is not seeded",
    |p| p.grants.retain(|(r, _)| *r != GNTTAB_RESERVED_XENSTORE)
);
broken_pv!(
    pv_unseeded_console_grant,
    ConsoleGrant,
    "grant entry 0 (console) is not seeded",
    |p| p.grants.retain(|(r, _)| *r != GNTTAB_RESERVED_CONSOLE)
);
broken_pv!(
    pv_console_granted_to_another_domain,
    ConsoleGrant,
    "grant entry 0 (console) grants access to d7, not to the console backend d0",
    |p| p.grants[0].1.domid = 7
);
broken_pv!(
    pv_xenstore_grant_for_the_wrong_frame,
    XenstoreGrant,
    "grant entry 1 (xenstore) grants frame",
    |p| p.grants[1].1.frame += 1
);
broken_pv!(
    pv_read_only_xenstore_grant,
    XenstoreGrant,
    "is read-only",
    |p| p.grants[1].1.flags |= GTF_readonly
);
broken_pv!(
    pv_start_info_magic_wrong,
    StartInfo,
    "is \"xen-3.0-x86_32p\", not \"xen-3.0-x86_64\"",
    |p| p.si.magic[..15].copy_from_slice(b"xen-3.0-x86_32p")
);
broken_pv!(
    pv_rsi_not_at_start_info,
    StartInfo,
    "start_info magic at rsi",
    |p| p.ctx.user_regs.rsi = va(STACK_PFN)
);
broken_pv!(
    pv_rsi_unmapped,
    StartInfo,
    "rsi (start_info) 0xffffffff80400000 is not mapped",
    |p| p.ctx.user_regs.rsi = VIRT_BASE + (4 << 20)
);
broken_pv!(
    pv_nr_pages_wrong,
    StartInfo,
    "start_info.nr_pages is 0x100, but the domain has 0x200",
    |p| p.si.nr_pages = 256
);
broken_pv!(
    pv_shared_info_wrong,
    StartInfo,
    "start_info.shared_info is 0x0",
    |p| p.si.shared_info = 0
);
broken_pv!(pv_pt_base_wrong, StartInfo, "start_info.pt_base", |p| p
    .si
    .pt_base =
    va(L3_PFN));
broken_pv!(
    pv_cmdline_unterminated,
    StartInfo,
    "not NUL-terminated",
    |p| p.si.cmd_line.fill(b'x')
);
broken_pv!(
    pv_initrd_beyond_memory,
    StartInfo,
    "the initrd (pfn 0x1f0",
    |p| {
        p.si.flags |= SIF_MOD_START_PFN;
        p.si.mod_start = 0x1f0;
        p.si.mod_len = 0x20_000;
    }
);
broken_pv!(
    pv_l4_not_pinned,
    PinnedL4,
    "is not pinned: pin it with MMUEXT_PIN_L4_TABLE",
    |p| p.pin = false
);
broken_pv!(pv_wrong_cs, Vcpu, "cs is 0xe008", |p| p.ctx.user_regs.cs =
    0xe008);
broken_pv!(pv_wrong_ss, Vcpu, "ss is 0x0", |p| p.ctx.user_regs.ss = 0);
broken_pv!(pv_vcpu_not_online, Vcpu, "vCPU 0 is not online", |p| p
    .ctx
    .flags =
    VGCF_in_kernel);
broken_pv!(
    pv_stack_read_only,
    Stack,
    "the boot stack (rsp - 8 = 0xffffffff8000bff8) is not writable",
    |p| p.set_leaf(STACK_PFN, PteFlags::PRESENT | PteFlags::NX)
);
broken_pv!(
    pv_stack_unmapped,
    Stack,
    "the boot stack (rsp - 8) 0xffffffff801ffff8 is not mapped",
    |p| {
        p.ctx.user_regs.rsp = va(PV_PAGES);
        p.set_leaf(PV_PAGES - 1, PteFlags::empty());
    }
);
broken_pv!(
    pv_console_evtchn_unallocated,
    Console,
    "the console event channel: port 77 is not allocated in this domain",
    |p| p.si.console_evtchn = 77
);
broken_pv!(
    pv_xenstore_evtchn_reserved,
    Xenstore,
    "the xenstore event channel: port 0 is reserved",
    |p| p.si.store_evtchn = 0
);
broken_pv!(
    pv_console_page_not_the_domains,
    Console,
    "the console page (frame 0x3) is not a page of this domain",
    |p| p.si.console_mfn = 3
);
broken_pv!(
    pv_upcall_mask_clear,
    UpcallMask,
    "evtchn_upcall_mask of vCPU 0 in shared_info is clear",
    |p| p.upcall_mask = false
);
broken_pv!(
    pv_hypercall_page_not_executable,
    HypercallPage,
    "the hypercall page (mfn",
    |p| p.hypercall_page = Some(P2M_PFN)
);
broken_pv!(
    pv_page_table_mapped_writable,
    PageTables,
    "is mapped writable at 0xffffffff80009000",
    |p| p.set_leaf(L2_PFN, PteFlags::PRESENT | PteFlags::RW | PteFlags::NX)
);
broken_pv!(
    pv_table_maps_a_frame_not_the_domains,
    PageTables,
    "the page tables map 0xffffffff801ff000 to mfn 0xfffffff, which is not a page of this domain",
    |p| p.set_pte(
        L1_PFN,
        511,
        Pte::new(0xfff_ffff, PteFlags::PRESENT | PteFlags::NX).unwrap()
    )
);

/// Hostile tables: an L2 entry pointing far outside the domain (the walk stops, naming it),
/// a table that is its own entry with write access (caught as a writable table), and an L4
/// whose every other slot points back at itself (512^3 leaves: the enumeration's limit stops
/// it). None hangs or panics.
#[test]
fn hostile_page_tables_give_a_report() {
    let g = pv_guest(|p| {
        let far = Pte::new((1 << 40) - 1, TABLE).unwrap();
        p.set_pte(L2_PFN, 0, far);
    });
    g.assert_crashed(
        BootCheck::EntryPoint,
        "rip 0xffffffff80001000 is not mapped: its L1 table would be mfn 0xffffffffff, which is \
         not a page of this domain",
    );

    let g = pv_guest(|p| {
        let l4 = Pte::new(p.mfns[idx(L4_PFN)], TABLE).unwrap();
        p.set_pte(L4_PFN, 0, l4);
    });
    g.assert_crashed(BootCheck::PageTables, "is mapped writable");

    let started = std::time::Instant::now();
    let g = pv_guest(|p| {
        let l4 = Pte::new(p.mfns[idx(L4_PFN)], PteFlags::PRESENT).unwrap();
        for slot in 0..511 {
            p.set_pte(L4_PFN, slot, l4);
        }
    });
    g.assert_crashed(BootCheck::PageTables, "they loop");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A read-only self-reference (Xen's "linear page table", which it allows) is not a loop
/// that explodes: the guest boots.
#[test]
fn a_read_only_linear_page_table_is_fine() {
    let g = pv_guest(|p| {
        let l4 = Pte::new(p.mfns[idx(L4_PFN)], PteFlags::PRESENT).unwrap();
        p.set_pte(L4_PFN, 0, l4);
    });
    assert!(g.report().booted(), "{}", g.report());
}

/// The report is kept with a persistent host's state: another handle (another process) reads
/// it, after a crash and after a boot.
#[test]
fn reports_survive_the_state_file() {
    let dir = std::env::temp_dir().join(format!("xenctrl-sim-boot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("host");
    let _ = std::fs::remove_file(&path);
    let open = || Arc::new(SimHypervisor::persistent(&path, SimConfig::default()).unwrap());
    let crashed = pv_guest_on(open(), |p| p.pin = false);
    let booted = pv_guest_on(open(), |_| {});
    let other = XenCtrl::simulated_persistent(&path, SimConfig::default()).unwrap();
    let r = other.sim_boot_report(crashed.d).unwrap().unwrap();
    assert_eq!(r, crashed.report());
    assert_eq!(r.failure().unwrap().check, BootCheck::PinnedL4);
    let r = other.sim_boot_report(booted.d).unwrap().unwrap();
    assert!(r.booted(), "{r}");
    assert_eq!(r, booted.report());
    // The other handle sees the line in the ring too.
    let page = other
        .map_foreign::<ReadOnly>(booted.dom(), &[booted.console.0])
        .unwrap();
    let prod: u32 = page
        .slice()
        .read(core::mem::offset_of!(XenconsInterface, out_prod))
        .unwrap();
    assert_eq!(prod as usize, expected_line("pv", 2, CMDLINE).len() + 1);
    drop(page);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// A PVH guest, by hand.

/// 1 MiB of RAM, and the special pages.
const PVH_RAM_PAGES: u64 = 256;
const PVH_XENSTORE_GFN: u64 = 0xfeffc;
const PVH_CONSOLE_GFN: u64 = 0xfefff;
const PVH_START_INFO: u64 = 0x1000;
const PVH_CMDLINE_AT: u64 = 0x2000;
const PVH_MEMMAP_AT: u64 = 0x3000;
const PVH_MODLIST_AT: u64 = 0x4000;
/// The initrd: 2 pages at 0x8000.
const PVH_INITRD: HvmModlistEntry = HvmModlistEntry {
    paddr: 0x8000,
    size: 0x2000,
    cmdline_paddr: 0,
    reserved: 0,
};
const PVH_ENTRY: u64 = 0x10_0000 - 0x1000;
const PVH_CMDLINE: &str = "console=hvc0 earlyprintk=xen";

struct PvhPlan {
    si: HvmStartInfo,
    /// Written at `PVH_MODLIST_AT`.
    modules: Vec<HvmModlistEntry>,
    cpu: Option<HvmHwCpu>,
    mtrr: Option<HvmHwMtrr>,
    params: Vec<(HvmParam, u64)>,
    grants: Vec<(u32, GrantEntryV1)>,
    console_port: u32,
    store_port: u32,
}

fn pvh_guest(brk: impl FnOnce(&mut PvhPlan)) -> Guest {
    let sim = Arc::new(SimHypervisor::default());
    let xc = XenCtrl::on_simulator(Arc::clone(&sim)).unwrap();
    let d = xc.create_domain(&CreateDomain::pvh(1)).unwrap();
    let dom = DomainId::new(d);
    xc.set_max_mem(d, (PVH_RAM_PAGES + 2) * 4).unwrap();
    xc.set_max_vcpus(d, 1).unwrap();
    let mut gfns: Vec<u64> = (0..PVH_RAM_PAGES).collect();
    gfns.extend([PVH_XENSTORE_GFN, PVH_CONSOLE_GFN]);
    let mut populate = gfns.clone();
    xc.populate_physmap_exact(d, 0, 0, &mut populate).unwrap();
    let console_port = xc.evtchn_alloc_unbound(d, 0).unwrap();
    let store_port = xc.evtchn_alloc_unbound(d, 0).unwrap();

    let si = HvmStartInfo {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: PVH_CMDLINE_AT,
        memmap_paddr: PVH_MEMMAP_AT,
        memmap_entries: 1,
        nr_modules: 1,
        modlist_paddr: PVH_MODLIST_AT,
        ..Default::default()
    };
    let mut cpu = HvmHwCpu::zeroed();
    cpu.cr0 = 0x11;
    cpu.rip = PVH_ENTRY;
    cpu.rbx = PVH_START_INFO;
    (cpu.cs_base, cpu.cs_limit, cpu.cs_arbytes) = (0, u32::MAX, 0xc9b);
    (cpu.ds_base, cpu.ds_limit, cpu.ds_arbytes) = (0, u32::MAX, 0xc93);
    (cpu.es_base, cpu.es_limit, cpu.es_arbytes) = (0, u32::MAX, 0xc93);
    (cpu.ss_base, cpu.ss_limit, cpu.ss_arbytes) = (0, u32::MAX, 0xc93);
    (cpu.tr_limit, cpu.tr_arbytes) = (0x67, 0x8b);
    let mtrr = HvmHwMtrr {
        msr_pat_cr: 0x0007_0406_0007_0406,
        msr_mtrr_cap: 0x508,
        msr_mtrr_def_type: 0xc06,
        ..Default::default()
    };
    let grant = |frame: u64| GrantEntryV1 {
        flags: GTF_permit_access,
        domid: 0,
        frame: u32::try_from(frame).unwrap(),
    };
    let mut plan = PvhPlan {
        si,
        modules: vec![PVH_INITRD],
        cpu: Some(cpu),
        mtrr: Some(mtrr),
        params: vec![
            (HvmParam::STORE_PFN, PVH_XENSTORE_GFN),
            (HvmParam::STORE_EVTCHN, u64::from(store_port)),
            (HvmParam::CONSOLE_PFN, PVH_CONSOLE_GFN),
            (HvmParam::CONSOLE_EVTCHN, u64::from(console_port)),
            (HvmParam::TIMER_MODE, 1),
        ],
        grants: vec![
            (GNTTAB_RESERVED_CONSOLE, grant(PVH_CONSOLE_GFN)),
            (GNTTAB_RESERVED_XENSTORE, grant(PVH_XENSTORE_GFN)),
        ],
        console_port,
        store_port,
    };
    brk(&mut plan);

    {
        let ram = xc.map_foreign::<ReadWrite>(dom, &gfns[..16]).unwrap();
        let s = ram.slice();
        s.write_from(idx(PVH_START_INFO), plan.si.as_bytes())
            .unwrap();
        s.write_from(idx(PVH_CMDLINE_AT), PVH_CMDLINE.as_bytes())
            .unwrap();
        let e820 = HvmMemmapTableEntry {
            addr: 0,
            size: PVH_RAM_PAGES << 12,
            kind: XEN_HVM_MEMMAP_TYPE_RAM,
            reserved: 0,
        };
        s.write_from(idx(PVH_MEMMAP_AT), e820.as_bytes()).unwrap();
        for (i, m) in plan.modules.iter().enumerate() {
            s.write_from(idx(PVH_MODLIST_AT) + i * 32, m.as_bytes())
                .unwrap();
        }
    }
    for (p, v) in &plan.params {
        xc.set_hvm_param(d, *p, *v).unwrap();
    }
    {
        let table = xc
            .map_resource::<ReadWrite>(dom, Resource::GRANT_TABLE, 0, 1)
            .unwrap();
        for (gref, e) in &plan.grants {
            table.slice().write(*gref as usize * 8, e).unwrap();
        }
    }
    let header = *xc.hvm_context(d).unwrap().header().unwrap();
    let mut records = vec![HvmRecord::Header(header)];
    if let Some(cpu) = plan.cpu {
        records.push(HvmRecord::Cpu {
            vcpu: 0,
            cpu: Box::new(cpu),
        });
    }
    if let Some(mtrr) = plan.mtrr {
        records.push(HvmRecord::Mtrr {
            vcpu: 0,
            mtrr: Box::new(mtrr),
        });
    }
    xc.set_hvm_context(d, &HvmContext { records }).unwrap();
    xc.unpause_domain(d).unwrap();
    Guest {
        console: (PVH_CONSOLE_GFN, plan.console_port),
        store: (PVH_XENSTORE_GFN, plan.store_port),
        frames: gfns,
        sim,
        xc,
        d,
    }
}

#[test]
fn a_well_built_pvh_guest_boots_and_uses_its_rings() {
    let g = pvh_guest(|_| {});
    let r = g.report();
    assert_eq!(r.kind, BootKind::Pvh);
    let line = expected_line("pvh", 1, PVH_CMDLINE);
    assert_eq!(
        r.outcome,
        BootOutcome::Booted {
            console_line: line.clone()
        },
        "{r}"
    );
    assert!(g.xc.domain_info(g.d).unwrap().running());
    assert_eq!(g.console_out().0, format!("{line}\n").as_bytes());
    assert_store_request(&g);
    assert_eq!(g.frames.len() as u64, PVH_RAM_PAGES + 2);
}

macro_rules! broken_pvh {
    ($name:ident, $check:ident, $words:expr, |$p:ident| $brk:expr) => {
        #[test]
        fn $name() {
            let g = pvh_guest(|$p: &mut PvhPlan| {
                $brk;
            });
            g.assert_crashed(BootCheck::$check, $words);
        }
    };
}

broken_pvh!(
    pvh_rbx_not_at_hvm_start_info,
    StartInfo,
    "rbx 0x5000 does not point at hvm_start_info: the magic there is 0x0, not 0x336ec578",
    |p| p.cpu.as_mut().unwrap().rbx = 0x5000
);
broken_pvh!(
    pvh_rbx_unpopulated,
    StartInfo,
    "rbx 0x200000 does not point at hvm_start_info: guest frame 0x200 has no page",
    |p| p.cpu.as_mut().unwrap().rbx = 0x20_0000
);
broken_pvh!(
    pvh_bad_magic,
    StartInfo,
    "the magic there is 0x336ec579",
    |p| p.si.magic += 1
);
broken_pvh!(
    pvh_cmdline_unpopulated,
    StartInfo,
    "the command line at 0x800000 cannot be read: guest frame 0x800 has no page",
    |p| p.si.cmdline_paddr = 0x80_0000
);
broken_pvh!(
    pvh_memmap_unpopulated,
    StartInfo,
    "the memory map (0x7ff000",
    |p| {
        p.si.memmap_paddr = 0x7f_f000;
        p.si.memmap_entries = 4;
    }
);
broken_pvh!(
    pvh_module_unpopulated,
    StartInfo,
    "module 1 (0x200000, 0x1000 bytes) is not in populated memory (guest frame 0x200 has no page)",
    |p| {
        p.modules.push(HvmModlistEntry {
            paddr: 0x20_0000,
            size: 0x1000,
            ..Default::default()
        });
        p.si.nr_modules = 2;
    }
);
broken_pvh!(
    pvh_module_list_unpopulated,
    StartInfo,
    "the module list (0x7ff000",
    |p| p.si.modlist_paddr = 0x7f_f000
);
broken_pvh!(
    pvh_rip_unpopulated,
    EntryPoint,
    "rip 0x1000000 is not in populated memory (guest frame 0x1000 has no page)",
    |p| p.cpu.as_mut().unwrap().rip = 0x100_0000
);
broken_pvh!(pvh_real_mode, Vcpu, "starts in real mode", |p| p
    .cpu
    .as_mut()
    .unwrap()
    .cr0 =
    0x10);
broken_pvh!(pvh_paging_on, Vcpu, "paging or long mode on", |p| p
    .cpu
    .as_mut()
    .unwrap()
    .cr0 |=
    1 << 31);
broken_pvh!(
    pvh_cs_not_flat,
    Vcpu,
    "vCPU 0's CS is not a flat 32-bit code segment",
    |p| p.cpu.as_mut().unwrap().cs_limit = 0xfffff
);
broken_pvh!(
    pvh_ss_is_code,
    Vcpu,
    "vCPU 0's SS is not a flat writable data segment",
    |p| p.cpu.as_mut().unwrap().ss_arbytes = 0xc9b
);
broken_pvh!(
    pvh_no_cpu_record,
    Vcpu,
    "vCPU 0 has no CPU record in the HVM context",
    |p| p.cpu = None
);
broken_pvh!(pvh_no_mtrr_record, Mtrr, "vCPU 0 has no MTRR record", |p| {
    p.mtrr = None
});
broken_pvh!(pvh_mtrrs_off, Mtrr, "MTRRdefType 0x6", |p| p
    .mtrr
    .as_mut()
    .unwrap()
    .msr_mtrr_def_type =
    6);
broken_pvh!(
    pvh_store_pfn_unpopulated,
    Xenstore,
    "the xenstore page (frame 0xfeffb) is not a page of this domain",
    |p| p.params[0].1 = PVH_XENSTORE_GFN - 1
);
broken_pvh!(
    pvh_console_evtchn_unset,
    Console,
    "the console event channel: port 0 is reserved",
    |p| p.params[3].1 = 0
);
broken_pvh!(
    pvh_unseeded_xenstore_grant,
    XenstoreGrant,
    "grant entry 1 (xenstore) is not seeded",
    |p| p.grants.truncate(1)
);
broken_pvh!(
    pvh_console_grant_for_an_mfn,
    ConsoleGrant,
    "grant entry 0 (console) grants frame 0x1, not the console page 0xfefff",
    |p| p.grants[0].1.frame = 1
);
