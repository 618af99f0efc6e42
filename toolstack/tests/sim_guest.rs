//! The stand-in guest's PV drivers on the simulated host (`sim/guest.rs`): a kernel guest that
//! `rxl create` boots answers `rxl shutdown` and `rxl reboot` through `control/shutdown`, and
//! balloons to `rxl mem-set`'s target, as a Linux guest does. Nothing here plays the guest:
//! if the daemon's agent does not act, `shutdown -w` fails and the memory never moves.
//!
//! The balloon's progress is not a xenstore event, so it is waited for by looking at Xen's
//! `tot_pages` until a deadline; every other wait is a child process or a xenstore watch.

mod common;
mod kernel_fixture;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{stderr, wait, SimHost, STUCK};

/// How long the balloon may take to reach a target.
const BALLOON: Duration = Duration::from_secs(10);

fn kernel(host: &SimHost) -> PathBuf {
    let k = host.path().join("vmlinuz");
    std::fs::write(&k, kernel_fixture::debian_like_bzimage("xz").0).expect("kernel");
    k
}

/// A kernel guest's config: 128 MiB, `extra` lines appended.
fn cfg(host: &SimHost, name: &str, kind: &str, extra: &str) -> String {
    let k = kernel(host);
    let p = host.path().join(format!("{name}.cfg"));
    std::fs::write(
        &p,
        format!(
            "name = \"{name}\"\ntype = \"{kind}\"\nmemory = 128\nvcpus = 1\nkernel = \"{}\"\n\
             extra = \"console=hvc0\"\n{extra}\n",
            k.display()
        ),
    )
    .expect("cfg");
    p.display().to_string()
}

fn xs(host: &SimHost) -> xenstore::Client {
    xenstore::Client::open_path(host.path().join("xenstored.sock")).expect("xenstore")
}

/// Wait (on a watch) until the stand-in guest of `domid` has booted and advertised both its
/// control features (one write each, as Linux's: feature-reboot lands after feature-poweroff):
/// its agent runs from then on.
fn booted(host: &SimHost, domid: u16) {
    let c = xs(host);
    let control = format!("/local/domain/{domid}/control");
    let w = c.watch(&control).expect("watch");
    let deadline = Instant::now() + STUCK;
    let advertised =
        |f: &str| c.read_string(&format!("{control}/{f}")).ok().as_deref() == Some("1");
    while !(advertised("feature-poweroff") && advertised("feature-reboot")) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            w.next_event_timeout(left).expect("watch").is_some(),
            "domain {domid} never advertised control/feature-poweroff and feature-reboot"
        );
    }
}

fn tot_pages(host: &SimHost, domid: u16) -> u64 {
    host.lib().xc.domain_info(domid).expect("info").tot_pages
}

/// Wait until domain `domid` has `pages` pages; panics with what it has after [`BALLOON`].
fn reaches(host: &SimHost, domid: u16, pages: u64) {
    let deadline = Instant::now() + BALLOON;
    loop {
        let now = tot_pages(host, domid);
        if now == pages {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "domain {domid} has {now} pages, not {pages}, after {BALLOON:?}; log: {}",
            std::fs::read_to_string(host.path().join("xenstored.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait (on watches of /local/domain) until `ok` holds for the domain list.
fn until(host: &SimHost, what: &str, mut ok: impl FnMut(&[serde_json::Value]) -> bool) {
    let c = xs(host);
    let w = c.watch("/local/domain").expect("watch");
    let deadline = Instant::now() + STUCK;
    loop {
        if ok(&host.list()) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            w.next_event_timeout(left).expect("watch").is_some(),
            "{what}: never happened"
        );
        while w.try_next_event().is_some() {}
    }
}

/// The console log of `domid`, once it holds the stand-in's boot line.
fn boot_line(host: &SimHost, domid: u16) -> String {
    let log = host.path().join(format!("console/{domid}.log"));
    let deadline = Instant::now() + STUCK;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("rxen-sim: Linux stand-in booted") {
            return text;
        }
        assert!(Instant::now() < deadline, "{log:?}: {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until the daemon's log holds `line`.
fn logged(host: &SimHost, line: &str) {
    let path = host.path().join("xenstored.log");
    let deadline = Instant::now() + STUCK;
    loop {
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        if log.contains(line) {
            return;
        }
        assert!(Instant::now() < deadline, "{line:?} not in {log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn shutdown_powers_a_booted_guest_off() {
    let host = SimHost::new(4096, 1024);
    for kind in ["pv", "pvh"] {
        let name = format!("off-{kind}");
        host.ok(&["create", "-e", &cfg(&host, &name, kind, "")]);
        let domid = host.domid(&name).expect("listed");
        booted(&host, domid);
        let home = format!("/local/domain/{domid}/control");
        let c = xs(&host);
        // What a Linux guest without hibernation advertises.
        assert_eq!(
            c.read_string(&format!("{home}/feature-reboot")).unwrap(),
            "1"
        );
        assert_ne!(
            c.read_string(&format!("{home}/feature-suspend"))
                .unwrap_or_default(),
            "1",
            "{kind}: it cannot suspend"
        );
        let out = host.rxl(&["shutdown", "-w", &name]);
        assert!(out.status.success(), "{kind}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!(
                "Domain {domid} has been shut down, reason code 0 (poweroff)"
            )),
            "{kind}: {}",
            stderr(&out)
        );
        // The guest emptied the node, as Linux acknowledges.
        assert_eq!(c.read_string(&format!("{home}/shutdown")).unwrap(), "");
        // Unmonitored (`-e`): it stays, shut down, until destroyed.
        let d = host
            .list()
            .into_iter()
            .find(|d| d["domid"] == domid)
            .expect("left shut down");
        assert_eq!(d["shutdown_reason"], "poweroff", "{kind}: {d}");
        host.ok(&["destroy", &name]);
        assert_eq!(host.domid(&name), None, "{kind}");
    }
}

#[test]
fn the_monitor_destroys_a_guest_that_powered_off() {
    let host = SimHost::new(4096, 1024);
    host.ok(&[
        "create",
        &cfg(&host, "mon", "pv", "on_poweroff = \"destroy\""),
    ]);
    let domid = host.domid("mon").expect("listed");
    booted(&host, domid);
    host.ok(&["shutdown", "-w", "mon"]);
    until(&host, "the monitor's destroy", |l| {
        !l.iter().any(|d| d["domid"] == domid)
    });
}

#[test]
fn reboot_restarts_a_guest_that_boots_again() {
    let host = SimHost::new(4096, 1024);
    let c = cfg(&host, "rb", "pv", "on_reboot = \"restart\"");
    host.ok(&["create", "-e", &c]);
    let old = host.domid("rb").expect("listed");
    booted(&host, old);
    // A foreground monitor applies on_reboot.
    let mut mon = host
        .command(&["monitor", "rb"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("monitor");
    let mut err = BufReader::new(mon.stderr.take().expect("stderr"));
    let mut line = String::new();
    err.read_line(&mut line).expect("the monitor's first line");
    assert!(line.starts_with("Waiting for domain"), "{line:?}");
    let out = host.rxl(&["reboot", "-w", "rb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    until(&host, "the restart", |l| {
        l.iter().any(|d| d["name"] == "rb" && d["domid"] != old)
    });
    let new = host.domid("rb").expect("restarted");
    assert_ne!(new, old);
    // The new domain boots: its own boot line, and its agent answers a poweroff.
    assert!(boot_line(&host, new).contains("cmdline=\"console=hvc0\""));
    booted(&host, new);
    host.ok(&["shutdown", "-w", "rb"]);
    let out = wait(mon, "the monitor");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).expect("stderr");
    assert!(out.status.success(), "{rest}");
    assert!(
        rest.contains(&format!("Domain {old} restarted as domain {new}")),
        "{rest}"
    );
    assert_eq!(host.domid("rb"), None, "on_poweroff destroys by default");
}

#[test]
fn mem_set_balloons_down_and_up() {
    let host = SimHost::new(4096, 1024);
    for kind in ["pv", "pvh"] {
        let name = format!("bal-{kind}");
        host.ok(&["create", "-e", &cfg(&host, &name, kind, "")]);
        let domid = host.domid(&name).expect("listed");
        booted(&host, domid);
        // What the domain has beyond its RAM (a PVH guest's special and ACPI pages).
        let extra = tot_pages(&host, domid) - 128 * 256;
        assert_eq!(extra == 0, kind == "pv", "{kind}: {extra} pages beyond RAM");
        host.ok(&["mem-set", &name, "64m"]);
        reaches(&host, domid, 64 * 256 + extra);
        host.ok(&["mem-set", &name, "100m"]);
        reaches(&host, domid, 100 * 256 + extra);
        // Never above max_mem: a target at static-max fills the RAM back exactly.
        host.ok(&["mem-set", &name, "128m"]);
        reaches(&host, domid, 128 * 256 + extra);
        // The ballooned domain still shuts down, and destroy gives every page back.
        host.ok(&["mem-set", &name, "48m"]);
        reaches(&host, domid, 48 * 256 + extra);
        let free = host.lib().xc.physinfo().expect("physinfo").free_pages;
        host.ok(&["destroy", &name]);
        assert_eq!(host.domid(&name), None);
        let after = host.lib().xc.physinfo().expect("physinfo").free_pages;
        assert_eq!(after - free, 48 * 256 + extra, "{kind}");
    }
}

#[test]
fn a_garbage_target_is_ignored_and_the_guest_goes_on() {
    let host = SimHost::new(4096, 1024);
    host.ok(&["create", "-e", &cfg(&host, "odd", "pv", "")]);
    let domid = host.domid("odd").expect("listed");
    booted(&host, domid);
    let before = tot_pages(&host, domid);
    let c = xs(&host);
    let target = format!("/local/domain/{domid}/memory/target");
    for garbage in ["lots", "-5", "99999999999999999999999"] {
        c.write(&target, garbage).expect("write");
        logged(
            &host,
            &format!("domain {domid}: ignoring memory/target {garbage:?}"),
        );
    }
    // An unknown request is left alone, as Linux ignores it.
    let ctl = format!("/local/domain/{domid}/control/shutdown");
    c.write(&ctl, "suspend").expect("write");
    logged(
        &host,
        &format!("domain {domid}: ignoring shutdown request \"suspend\""),
    );
    // The guest still answers: a good target after the garbage is reached.
    c.write(&target, (96 * 1024).to_string()).expect("write");
    reaches(&host, domid, 96 * 256);
    assert_ne!(before, 96 * 256);
    assert_eq!(c.read_string(&ctl).unwrap(), "suspend");
    host.ok(&["shutdown", "-w", "odd"]);
    host.ok(&["destroy", "odd"]);
}

#[test]
fn a_domain_without_a_kernel_gets_no_agent() {
    let host = SimHost::new(4096, 1024);
    let domid = host.create("bare", 32, 32);
    let c = xs(&host);
    // Nothing advertises PV control for it (the toolstack leaves the node empty).
    assert_eq!(
        c.read_string(&format!("/local/domain/{domid}/control/feature-poweroff"))
            .unwrap_or_default(),
        ""
    );
    host.ok(&["destroy", "bare"]);
}
