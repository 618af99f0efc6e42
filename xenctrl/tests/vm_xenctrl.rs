//! Everything `xenctrl` offers, on real Xen (4.17 and 4.20), cross-checked with Xen's own `xl` in the same
//! boot. Built only with the `vm-tests` feature and run in dom0 by `scripts/xen-vm-test`.
//!
//! Two parts: the shared suite (`tests/suite/mod.rs`, which `tests/sim_suite.rs` runs on the
//! simulator) with `xl` as its witness, and the checks that only mean something on real Xen:
//! `xl info`'s exact fields, the `/dev/xen/hypercall` mapping, a domain `xl` made, and the
//! anonymous-memory buffer fallback.
//!
//! The tests share one hypervisor, so they run one at a time (`--test-threads=1`, which the
//! harness passes) and each destroys what it creates, even when it fails.

mod suite;
mod vm_xl;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use suite::{Seen, Witness};
use xenctrl::abi::XEN_SYSCTL_PHYSCAP_pv;
use xenctrl::evtchn::{ChannelState, EventChannels, Port, Virq};
use xenctrl::{pages_to_mib, DomId, DomainId, MemorySource, XenCtrl};

fn tool(program: &str, args: &[&str]) -> String {
    // spawns: the program passed to tool
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
    tool("xl", &["info"])
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
    let list = tool("xl", &["list"]);
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

/// `xl`, asked in the same boot.
struct Xl;

impl Witness for Xl {
    fn second_handle(&self) -> XenCtrl {
        open()
    }

    fn domain(&self, domid: DomId) -> Option<Seen> {
        xl_list_row(domid).map(|row| Seen {
            mem_mib: row.mem_mib,
            vcpus: row.vcpus,
            paused: row.state.contains('p'),
        })
    }

    fn outstanding_claims_mib(&self) -> u64 {
        num(&xl_info(), "outstanding_claims")
    }

    fn event_channels(&self) -> EventChannels {
        EventChannels::open().expect("open /dev/xen/evtchn in dom0")
    }

    fn state(&self, domid: DomId) -> Option<String> {
        xl_list_row(domid).map(|row| row.state)
    }
}

/// Run a suite function on real Xen, then check that it left the host's domains as it found
/// them (a destroyed domain may linger briefly while Xen frees it).
fn run(name: &str, test: fn(&XenCtrl, &dyn Witness)) {
    let xc = open();
    let before = suite::domain_ids(&xc);
    test(&xc, &Xl);
    suite::eventually(
        &format!("{name} leaves the domains as it found them"),
        || suite::domain_ids(&xc) == before,
    );
    assert_eq!(
        xc.physinfo().unwrap().outstanding_pages,
        0,
        "{name} left a claim"
    );
}

suite::suite_tests!(run);

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
fn we_see_a_domain_xl_created() {
    let xc = open();
    let name = "rxen-xl-made";
    let name_arg = format!("name=\"{name}\"");
    vm_xl::xl_create(&["-p", "/etc/xen/rxen-guest.cfg", &name_arg]);
    struct XlGuest;
    impl Drop for XlGuest {
        fn drop(&mut self) {
            let _ = Command::new("xl")
                .args(["destroy", "rxen-xl-made"])
                .output();
        }
    }
    let _guard = XlGuest;
    let domid: DomId = tool("xl", &["domid", name]).trim().parse().unwrap();
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
    let json = tool("xl", &["list", "-l", name]);
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

/// The suite's shared-page check again, on the pool's fallback: locked anonymous memory (as on
/// kernels without `/dev/xen/hypercall`), whose trims really unlock and lock pages again.
#[test]
fn shared_page_buffers_never_fault_in_xen_with_anonymous_buffers() {
    let xc = XenCtrl::open_with_anonymous_buffers().unwrap();
    assert_eq!(xc.pool().source(), MemorySource::LockedAnonymous);
    suite::shared_page_buffers_survive_a_neighbours_free(&xc, &Xl);
}

/// A global virtual IRQ fires on real Xen: `VIRQ_CON_RING`, which Xen raises for dom0 whenever
/// it prints (xenconsoled binds it only when logging the hypervisor's console), here the help
/// that `xl debug-keys h` prints. (`VIRQ_DOM_EXC` is xenstored's in this dom0: the suite's
/// `evtchn_virq_dom_exc_has_one_binder_in_dom0` checks that.)
#[test]
fn a_global_virq_fires_when_xen_prints() {
    let xc = open();
    let ev = EventChannels::open().unwrap();
    let v = ev.bind_virq(Virq::CON_RING).unwrap();
    // Bound on vCPU 0, but Linux may move a global virtual IRQ to another vCPU at once.
    let s = xc.evtchn_status(DomainId::DOM0, v.port()).unwrap();
    assert_eq!(s.state, ChannelState::Virq(Virq::CON_RING));
    tool("xl", &["debug-keys", "h"]);
    assert_eq!(
        ev.wait_timeout(Duration::from_secs(10)).unwrap(),
        Some(v.port()),
        "Xen printed, and VIRQ_CON_RING fired"
    );
}

/// One line of Xen's `e` debug key for a port: `(state, remote domain, remote port)`, from
/// `    PORT [p/m/x]: s=STATE n=VCPU x=CONSUMER d=DOM p=PORT`.
fn xen_dump_port(dump: &str, domid: DomId, port: Port) -> Option<(u32, Option<u16>, Option<u32>)> {
    let header = format!("Event channel information for domain {domid}:");
    let section = dump
        .rsplit(header.as_str())
        .next()
        .filter(|_| dump.contains(&header))?;
    section
        .lines()
        .skip(1)
        .take_while(|l| !l.contains("Event channel information for domain"))
        .find_map(|l| {
            let l = l.split(") ").last()?.trim_start();
            let (num, rest) = l.split_once(' ')?;
            if num.parse::<u32>().ok()? != port.get() {
                return None;
            }
            let field = |k: &str| {
                rest.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .and_then(|v| v.parse::<u32>().ok())
            };
            Some((
                field("s=")?,
                field("d=").and_then(|d| u16::try_from(d).ok()),
                field("p="),
            ))
        })
}

/// Event-channel state as Xen itself dumps it (`xl debug-keys e`, read back with `xl dmesg`)
/// agrees with what `EVTCHNOP_status` tells us, for a loopback pair in dom0.
#[test]
fn evtchn_status_matches_xens_own_dump() {
    let xc = open();
    let ev = EventChannels::open().unwrap();
    let a = ev.bind_unbound(DomainId::DOM0).unwrap();
    let b = ev.bind_interdomain(DomainId::DOM0, a.port()).unwrap();
    let lone = ev.bind_unbound(DomainId::new(7)).unwrap();
    tool("xl", &["debug-keys", "e"]);
    let dump = tool("xl", &["dmesg"]);
    // Xen's ECS_* numbers: 2 unbound, 3 interdomain.
    for (port, other) in [(a.port(), b.port()), (b.port(), a.port())] {
        assert_eq!(
            xc.evtchn_status(DomainId::DOM0, port).unwrap().state,
            ChannelState::Interdomain {
                remote: DomainId::DOM0,
                remote_port: other
            }
        );
        assert_eq!(
            xen_dump_port(&dump, 0, port),
            Some((3, Some(0), Some(other.get()))),
            "Xen's dump of dom0 port {port}"
        );
    }
    assert_eq!(
        xc.evtchn_status(DomainId::DOM0, lone.port()).unwrap().state,
        ChannelState::Unbound {
            remote: DomainId::new(7)
        }
    );
    assert_eq!(
        xen_dump_port(&dump, 0, lone.port()),
        Some((2, Some(7), None)),
        "Xen's dump of dom0 port {}",
        lone.port()
    );
}
