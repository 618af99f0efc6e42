//! Everything `xenctrl` offers, on real Xen 4.17, cross-checked with Xen's own `xl` in the same
//! boot. Built only with the `vm-tests` feature and run in dom0 by `scripts/xen-vm-test`.
//!
//! The tests share one hypervisor, so they run one at a time (`--test-threads=1`, which the
//! harness passes) and each destroys what it creates, even when it fails.

use std::collections::HashMap;
use std::process::Command;

use xenctrl::abi::XEN_SYSCTL_PHYSCAP_pv;
use xenctrl::interface::ProbeCall;
use xenctrl::{pages_to_mib, CreateDomain, DomId, Errno, MemorySource, XenCtrl};

fn run(program: &str, args: &[&str]) -> String {
    // spawns: the program passed to run
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (not in the Xen test VM?)"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tool output is UTF-8")
}

/// `xl info` as a map of its `key : value` lines.
fn xl_info() -> HashMap<String, String> {
    run("xl", &["info"])
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

fn num(info: &HashMap<String, String>, key: &str) -> u64 {
    info.get(key)
        .unwrap_or_else(|| panic!("xl info has no {key}"))
        .parse()
        .unwrap_or_else(|e| panic!("xl info {key}: {e}"))
}

/// One row of `xl list`: (mem MiB, vcpus, state).
#[derive(Debug, PartialEq, Eq)]
struct XlRow {
    mem_mib: u64,
    vcpus: u32,
    state: String,
}

fn xl_list_row(domid: DomId) -> Option<XlRow> {
    let list = run("xl", &["list"]);
    list.lines().skip(1).find_map(|l| {
        // Name may be "(null)" for domains with no xenstore name; ID is the second-last-but-3
        // column, so parse from the right: ... ID Mem VCPUs State Time(s)
        let cols: Vec<&str> = l.split_whitespace().collect();
        let n = cols.len();
        if n < 6 || cols[n - 5].parse::<DomId>().ok()? != domid {
            return None;
        }
        Some(XlRow {
            mem_mib: cols[n - 4].parse().ok()?,
            vcpus: cols[n - 3].parse().ok()?,
            state: cols[n - 2].to_owned(),
        })
    })
}

fn open() -> XenCtrl {
    XenCtrl::open().expect("XenCtrl::open on real Xen")
}

/// Destroys a domain we created when dropped, so a failed assertion leaves nothing behind.
struct Dom<'a> {
    xc: &'a XenCtrl,
    domid: DomId,
}

impl Drop for Dom<'_> {
    fn drop(&mut self) {
        let _ = self.xc.destroy_domain(self.domid);
    }
}

#[test]
fn version_and_capabilities_match_xl_info() {
    let xc = open();
    assert_eq!(xc.backend_name(), "privcmd");
    let info = xl_info();
    let v = xc.version().unwrap();
    assert_eq!(v.major.to_string(), info["xen_major"]);
    assert_eq!(v.minor.to_string(), info["xen_minor"]);
    assert_eq!(v.extra, info["xen_extra"]);
    assert_eq!(v.to_string(), info["xen_version"]);
    assert_eq!(xc.capabilities().unwrap(), info["xen_caps"]);
    assert_eq!(xc.changeset().unwrap(), info["xen_changeset"]);
    assert_eq!(xc.page_size().unwrap().to_string(), info["xen_pagesize"]);
}

#[test]
fn physinfo_matches_xl_info() {
    let xc = open();
    // Free memory moves when something allocates; both readings are taken back to back and
    // retried if dom0 happened to allocate in between.
    for attempt in 0.. {
        let p = xc.physinfo().unwrap();
        let info = xl_info();
        assert_eq!(u64::from(p.nr_cpus), num(&info, "nr_cpus"));
        assert_eq!(u64::from(p.max_cpu_id), num(&info, "max_cpu_id"));
        assert_eq!(u64::from(p.nr_nodes), num(&info, "nr_nodes"));
        assert_eq!(
            u64::from(p.cores_per_socket),
            num(&info, "cores_per_socket")
        );
        assert_eq!(
            u64::from(p.threads_per_core),
            num(&info, "threads_per_core")
        );
        // xl prints MHz with three decimals: kHz / 1000 "." kHz % 1000.
        let mhz = format!("{}.{:03}", p.cpu_khz / 1000, p.cpu_khz % 1000);
        assert_eq!(mhz, info["cpu_mhz"]);
        assert_eq!(p.total_mib(), num(&info, "total_memory"));
        let hw_caps: Vec<String> = p.hw_cap.iter().map(|w| format!("{w:08x}")).collect();
        assert_eq!(hw_caps.join(":"), info["hw_caps"]);
        assert!(
            p.capabilities & XEN_SYSCTL_PHYSCAP_pv != 0,
            "PV dom0 means PV support"
        );
        assert!(
            info["virt_caps"].contains("pv"),
            "xl virt_caps: {}",
            info["virt_caps"]
        );
        assert_eq!(
            pages_to_mib(p.outstanding_pages),
            num(&info, "outstanding_claims")
        );
        // xl's free_memory leaves out what is claimed.
        let unclaimed = pages_to_mib(p.free_pages - p.outstanding_pages);
        if unclaimed == num(&info, "free_memory") {
            return;
        }
        assert!(
            attempt < 5,
            "free memory: ours {} MiB, xl {}",
            unclaimed,
            info["free_memory"]
        );
    }
}

#[test]
fn pool_buffers_come_from_dev_xen_hypercall() {
    let xc = open();
    assert_eq!(xc.pool().source(), MemorySource::HypercallDevice);
    let buf = xc.pool().alloc::<[u64; 8]>().unwrap();
    let addr = buf.addr();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| {
            let range = l.split_whitespace().next().unwrap_or("");
            let (lo, hi) = range.split_once('-').unwrap_or(("0", "0"));
            let lo = u64::from_str_radix(lo, 16).unwrap_or(0);
            let hi = u64::from_str_radix(hi, 16).unwrap_or(0);
            (lo..hi).contains(&addr)
        })
        .unwrap_or_else(|| panic!("buffer {addr:#x} in no mapping:\n{maps}"));
    assert!(
        line.ends_with("/dev/xen/hypercall"),
        "buffer mapping: {line}"
    );
}

#[test]
fn interface_probe_reports_4_17_and_wrong_versions_get_eacces() {
    let xc = open();
    assert_eq!(xc.interface().domctl, 0x15);
    assert_eq!(xc.interface().sysctl, 0x15);
    assert_eq!(xc.probe(ProbeCall::DomctlGetdomaininfo(0x15)), Ok(()));
    assert_eq!(xc.probe(ProbeCall::SysctlPhysinfo(0x15)), Ok(()));
    for wrong in [0x14, 0x16, 0x17] {
        assert_eq!(
            xc.probe(ProbeCall::DomctlGetdomaininfo(wrong)),
            Err(Errno::EACCES)
        );
    }
    assert_eq!(
        xc.probe(ProbeCall::SysctlPhysinfo(0x16)),
        Err(Errno::EACCES)
    );
}

#[test]
fn domain_lifecycle_matches_xl() {
    let xc = open();
    let free_before = xc.physinfo().unwrap().free_pages;

    let handle = *b"rxen-vm-test-uid";
    let domid = xc
        .create_domain(&CreateDomain::pv(2).with_handle(handle))
        .unwrap();
    let dom = Dom { xc: &xc, domid };

    // getinfo and list agree with each other and with xl.
    let info = xc.domain_info(domid).unwrap();
    assert_eq!(info.domid, domid);
    assert_eq!(info.handle, handle);
    assert!(info.paused(), "created paused: {}", info.state_string());
    assert_eq!(info.tot_pages, 0);
    let listed: Vec<DomId> = xc.domain_list().unwrap().iter().map(|d| d.domid).collect();
    assert!(
        listed.contains(&0) && listed.contains(&domid),
        "domain_list: {listed:?}"
    );
    let row = xl_list_row(domid).expect("xl list shows our domain");
    assert_eq!(row.state, info.state_string());
    assert_eq!(row.mem_mib, 0);
    assert_eq!(row.vcpus, info.nr_online_vcpus);

    // max_vcpus, max_mem.
    xc.set_max_vcpus(domid, 2).unwrap();
    xc.set_max_mem(domid, 64 * 1024).unwrap();
    assert_eq!(xc.domain_info(domid).unwrap().max_pages, 64 * 256);
    assert_eq!(xc.maximum_reservation(domid).unwrap(), 64 * 256);

    // A claim shows in xl info's outstanding_claims and caps what others can take.
    let claim_before = num(&xl_info(), "outstanding_claims");
    xc.claim_pages(domid, 32 * 256).unwrap();
    assert_eq!(num(&xl_info(), "outstanding_claims"), claim_before + 32);
    assert_eq!(xc.domain_info(domid).unwrap().outstanding_pages, 32 * 256);
    assert_eq!(
        xc.claim_pages(domid, 16 * 256).unwrap_err().errno(),
        Some(Errno::EINVAL),
        "a second claim while one is outstanding"
    );

    // Populate 16 MiB: the claim shrinks, the domain grows, xl sees it, free memory drops.
    let mut gpfns: Vec<u64> = (0..16 * 256).collect();
    xc.populate_physmap_exact(domid, 0, 0, &mut gpfns).unwrap();
    let info = xc.domain_info(domid).unwrap();
    assert_eq!(info.tot_pages, 16 * 256);
    assert_eq!(info.outstanding_pages, 16 * 256);
    assert_eq!(xc.current_reservation(domid).unwrap(), 16 * 256);
    // xl list's Mem column counts a domain's outstanding claim as its memory.
    assert_eq!(xl_list_row(domid).unwrap().mem_mib, 16 + 16);
    assert!(
        gpfns.iter().any(|&mfn| mfn >= 16 * 256),
        "PV populate returns machine frames"
    );
    assert_eq!(num(&xl_info(), "outstanding_claims"), claim_before + 16);
    xc.cancel_claim(domid).unwrap();
    assert_eq!(num(&xl_info(), "outstanding_claims"), claim_before);

    // Beyond max_mem, populate stops short.
    let mut more: Vec<u64> = (16 * 256..80 * 256).collect();
    let done = xc.populate_physmap(domid, 0, 0, &mut more).unwrap();
    assert_eq!(done, 48 * 256, "populate stops at max_mem");
    assert_eq!(xl_list_row(domid).unwrap().mem_mib, 64);

    // Pause and unpause nest; xl's state column follows.
    xc.unpause_domain(domid).unwrap();
    assert!(!xc.domain_info(domid).unwrap().paused());
    assert!(!xl_list_row(domid).unwrap().state.contains('p'));
    xc.pause_domain(domid).unwrap();
    assert!(xl_list_row(domid).unwrap().state.contains('p'));

    // An event channel for dom0 to bind.
    let p1 = xc.evtchn_alloc_unbound(domid, 0).unwrap();
    let p2 = xc.evtchn_alloc_unbound(domid, 0).unwrap();
    assert!(p1 > 0 && p2 > 0 && p1 != p2, "ports {p1} {p2}");

    // Destroy: gone from our list and xl's, memory back, a second destroy is ESRCH.
    drop(dom);
    for _ in 0..100 {
        if xl_list_row(domid).is_none() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        xl_list_row(domid).is_none(),
        "xl still lists destroyed domain {domid}"
    );
    assert!(xc.domain_list().unwrap().iter().all(|d| d.domid != domid));
    assert_eq!(
        xc.destroy_domain(domid).unwrap_err().errno(),
        Some(Errno::ESRCH)
    );
    assert_eq!(
        xc.domain_info(domid).unwrap_err().errno(),
        Some(Errno::ESRCH)
    );
    let free_after = xc.physinfo().unwrap().free_pages;
    // Xen may scrub freed pages lazily; allow what is still waiting to be scrubbed.
    let scrub = xc.physinfo().unwrap().scrub_pages;
    assert!(
        free_after + scrub + 64 >= free_before,
        "free pages before {free_before}, after {free_after} (+{scrub} to scrub)"
    );
}

#[test]
fn claims_are_refused_beyond_free_memory() {
    let xc = open();
    let domid = xc.create_domain(&CreateDomain::pv(1)).unwrap();
    let _dom = Dom { xc: &xc, domid };
    let p = xc.physinfo().unwrap();
    let too_much = p.free_pages - p.outstanding_pages + 1;
    // Above the domain's max_mem a claim is invalid...
    assert_eq!(
        xc.claim_pages(domid, too_much).unwrap_err().errno(),
        Some(Errno::EINVAL)
    );
    // ...within it but above unclaimed free memory, it does not fit, and nothing is reserved.
    xc.set_max_mem(domid, (too_much + 1024) * 4).unwrap();
    assert_eq!(
        xc.claim_pages(domid, too_much).unwrap_err().errno(),
        Some(Errno::ENOMEM)
    );
    assert_eq!(xc.domain_info(domid).unwrap().outstanding_pages, 0);
    let before = num(&xl_info(), "outstanding_claims");
    // What fits is granted, and xl sees it.
    xc.claim_pages(domid, 64 * 256).unwrap();
    assert_eq!(xc.domain_info(domid).unwrap().outstanding_pages, 64 * 256);
    assert_eq!(num(&xl_info(), "outstanding_claims"), before + 64);
}

#[test]
fn we_see_a_domain_xl_created() {
    let xc = open();
    let name = "rxen-xl-made";
    let name_arg = format!("name=\"{name}\"");
    run(
        "xl",
        &["create", "-p", "/etc/xen/rxen-guest.cfg", &name_arg],
    );
    struct XlGuest;
    impl Drop for XlGuest {
        fn drop(&mut self) {
            let _ = Command::new("xl")
                .args(["destroy", "rxen-xl-made"])
                .output();
        }
    }
    let _guard = XlGuest;
    let domid: DomId = run("xl", &["domid", name]).trim().parse().unwrap();
    let ours = xc.domain_list().unwrap();
    let info = ours
        .iter()
        .find(|d| d.domid == domid)
        .expect("our list has xl's domain");
    let row = xl_list_row(domid).unwrap();
    assert_eq!(info.state_string(), row.state);
    assert_eq!(
        pages_to_mib(info.tot_pages + info.outstanding_pages),
        row.mem_mib
    );
    assert_eq!(info.nr_online_vcpus, row.vcpus);
    // The UUID xl gave it is the handle we read.
    let json = run("xl", &["list", "-l", name]);
    let uuid = uuid_string(&info.handle);
    assert!(
        json.contains(&uuid),
        "xl list -l does not show uuid {uuid}:\n{json}"
    );
}

fn uuid_string(h: &[u8; 16]) -> String {
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Two buffers on one page, freed in either order, then the survivor used in a hypercall: Xen
/// must never fault on it. Run on both memory sources: /dev/xen/hypercall, and the locked
/// anonymous fallback (with trims, so pages really are unlocked and locked again).
#[test]
fn shared_page_buffers_never_fault_in_xen() {
    use xenctrl::abi::{XenDomctl, XenDomctlGetdomaininfo};
    for xc in [open(), XenCtrl::open_with_anonymous_buffers().unwrap()] {
        for first_goes_first in [true, false] {
            let a = xc
                .pool()
                .alloc::<XenDomctl<XenDomctlGetdomaininfo>>()
                .unwrap();
            let b = xc
                .pool()
                .alloc::<XenDomctl<XenDomctlGetdomaininfo>>()
                .unwrap();
            assert_eq!(a.addr() / 4096, b.addr() / 4096, "the two share a page");
            let (gone, mut kept) = if first_goes_first { (a, b) } else { (b, a) };
            drop(gone);
            xc.pool().trim();
            for _ in 0..100 {
                *kept = XenDomctl::new(0, XenDomctlGetdomaininfo::default());
                xc.domctl(&mut kept)
                    .expect("Xen reads and writes the surviving buffer");
                assert_eq!(kept.u.domain, 0);
            }
        }
        assert_eq!(xc.pool().stats().outstanding, 0);
    }
}

/// A guest handle into another pool is refused before Xen is called, as on the simulator: the
/// same typed error, not the EFAULT (or the silent write) real Xen would give.
#[test]
fn a_handle_into_another_pool_is_refused_before_xen() {
    use xenctrl::abi::{XenDomctlGetdomaininfo, XenSysctl, XenSysctlGetdomaininfolist};
    let xc = open();
    let other = open();
    let anon = xenctrl::BufferPool::anonymous();
    for pool in [other.pool(), &anon] {
        let mut list = pool.alloc_slice::<XenDomctlGetdomaininfo>(4).unwrap();
        let mut op = xc
            .pool()
            .alloc::<XenSysctl<XenSysctlGetdomaininfolist<'_>>>()
            .unwrap();
        op.set(XenSysctlGetdomaininfolist::new(0, list.guest_handle()));
        let err = xc.sysctl(&mut op).unwrap_err();
        assert!(
            matches!(err, xenctrl::Error::ForeignBuffer { .. }),
            "{err:?}"
        );
        drop(op);
        assert!(list.iter().all(|d| d.tot_pages == 0), "Xen wrote nothing");
    }
}

/// Xen writes as many entries as the buffer holds, and no more: with dom0 and two paused
/// domains, a one-entry list gets one entry, and the buffers around it keep their bytes.
#[test]
fn xen_writes_no_more_entries_than_the_list_holds() {
    use xenctrl::abi::{XenDomctlGetdomaininfo, XenSysctl, XenSysctlGetdomaininfolist};
    let xc = open();
    let _a = Dom {
        xc: &xc,
        domid: xc.create_domain(&CreateDomain::pv(1)).unwrap(),
    };
    let _b = Dom {
        xc: &xc,
        domid: xc.create_domain(&CreateDomain::pv(1)).unwrap(),
    };
    let guards = |n| -> Vec<_> {
        (0..n)
            .map(|_| {
                let mut g = xc.pool().alloc_slice::<u8>(112).unwrap();
                g.fill(0x5a);
                g
            })
            .collect()
    };
    let before = guards(4);
    let mut one = xc.pool().alloc_slice::<XenDomctlGetdomaininfo>(1).unwrap();
    let after = guards(4);
    let mut op = xc
        .pool()
        .alloc::<XenSysctl<XenSysctlGetdomaininfolist<'_>>>()
        .unwrap();
    op.set(XenSysctlGetdomaininfolist::new(0, one.guest_handle()));
    assert_eq!(op.u.max_domains(), 1);
    xc.sysctl(&mut op).unwrap();
    assert_eq!(op.u.num_domains(), 1, "three domains exist, one fits");
    drop(op);
    assert_eq!(one[0].domain, 0);
    for g in before.iter().chain(&after) {
        assert!(g.iter().all(|&x| x == 0x5a), "Xen wrote past the list");
    }
}
