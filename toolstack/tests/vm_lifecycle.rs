//! Domain lifecycle on real Xen (4.17 and 4.20): the monitor's on_reboot / on_poweroff / on_crash
//! actions on empty domains shut down with `SCHEDOP_remote_shutdown` (as a guest shuts itself
//! down), cross-checked with `xl list`; and `rxl shutdown -w` of a Linux guest that `xl`
//! booted. Run inside the dom0 that `scripts/xen-vm-test` boots (feature `vm-tests`).
//!
//! C xenstored fires `@releaseDomain` only for domains it introduced, and it introduces a
//! domain only once it can map the store ring through grant reference 1, which a domain
//! builder sets up. These domains have no kernel, so the test plays the builder's last step:
//! it writes grant entry 1 for the store page and introduces the domain again.

mod vm_common;
use vm_common::{host, run, xs_read};

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use toolstack::Host;
use xenctrl::abi::ShutdownReason;
use xenctrl::volatile::ReadWrite;
use xenctrl::{DomainId, Resource};

const RXL: &str = "/rxen/bin/rxl";
const STUCK: Duration = Duration::from_secs(120);

fn rxl(args: &[&str]) -> std::process::Output {
    // spawns: own
    Command::new(RXL).args(args).output().expect("run rxl")
}

fn rxl_ok(args: &[&str]) -> String {
    let out = rxl(args);
    assert!(
        out.status.success(),
        "rxl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `xl list`'s row of `name`: (domid, state).
fn xl_row(name: &str) -> Option<(u16, String)> {
    let list = run("xl", &["list"]);
    list.lines().skip(1).find_map(|l| {
        let c: Vec<&str> = l.split_whitespace().collect();
        (c.len() >= 6 && c[0] == name).then(|| (c[1].parse().expect("domid"), c[4].to_owned()))
    })
}

/// `rxl list --json`'s entry of `name`.
fn rxl_row(name: &str) -> Option<serde_json::Value> {
    let v: Vec<serde_json::Value> =
        serde_json::from_str(&rxl_ok(&["list", "--json"])).expect("json");
    v.into_iter().find(|d| d["name"] == name)
}

/// Create an empty, paused domain from `cfg` lines with no monitor; its domid.
fn create(name: &str, actions: &str) -> u16 {
    let path = format!("/tmp/{name}.cfg");
    std::fs::write(
        &path,
        format!("name = \"{name}\"\ntype = \"pv\"\nmemory = 32\nvcpus = 1\n{actions}\n"),
    )
    .expect("cfg");
    rxl_ok(&["create", "-p", "-e", &path]);
    let domid = rxl_row(name).expect("listed")["domid"]
        .as_u64()
        .expect("domid");
    u16::try_from(domid).expect("a domid")
}

/// The builder's last step for a domain with no kernel: grant entry 1 (GTF_permit_access for
/// dom0) on the store page, then XS_INTRODUCE, which C xenstored now accepts.
fn introduce(host: &Host, domid: u16) {
    let ring: u64 = xs_read(&format!("/local/domain/{domid}/store/ring-ref"))
        .expect("ring-ref")
        .parse()
        .expect("number");
    let port: u32 = xs_read(&format!("/local/domain/{domid}/store/port"))
        .expect("port")
        .parse()
        .expect("number");
    let table = host
        .xc
        .map_resource::<ReadWrite>(DomainId::new(domid), Resource::GRANT_TABLE, 0, 1)
        .expect("map the grant table");
    // Entry 1 (8 bytes each, version 1): the frame, then the flags and domid that publish it.
    table
        .slice()
        .write(12, &u32::try_from(ring).expect("frame"))
        .expect("frame");
    table.slice().write(8, &[1u16, 0]).expect("flags");
    host.xs
        .introduce_domain(u32::from(domid), ring, port)
        .expect("xenstored introduces the domain once its ring is granted");
}

/// `rxl monitor NAME`, once it watches.
fn monitor(name: &str) -> (Child, BufReader<std::process::ChildStderr>) {
    // spawns: own
    let mut child = Command::new(RXL)
        .args(["monitor", name])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn monitor");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    err.read_line(&mut line).expect("read");
    assert!(
        line.starts_with("Waiting for domain"),
        "monitor said {line:?}"
    );
    (child, err)
}

/// The monitor's exit status and the rest of its output.
fn finish(mut child: Child, mut err: BufReader<std::process::ChildStderr>) -> (bool, String) {
    let status = child.wait().expect("wait");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).expect("stderr");
    (status.success(), rest)
}

/// Wait on xenstore until `ok()` holds: what it waits for (a domain made or removed, a guest's
/// node) changes `/local/domain`.
fn until(host: &Host, what: &str, ok: impl FnMut() -> bool) {
    assert!(within(host, ok), "{what}: never happened");
}

/// [`until`], saying whether `ok()` came to hold within [`STUCK`].
fn within(host: &Host, mut ok: impl FnMut() -> bool) -> bool {
    let w = host.xs.watch("/local/domain").expect("watch");
    let deadline = Instant::now() + STUCK;
    loop {
        if ok() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if w.next_event_timeout(left).expect("watch").is_none() {
            return false;
        }
        while w.try_next_event().is_some() {}
    }
}

/// A monitor that did not do what it should have: its status (killed here if still running),
/// its output, and dom0's kernel's last fault lines.
fn post_mortem(
    mut child: Child,
    err: BufReader<std::process::ChildStderr>,
) -> (Option<i32>, String) {
    use std::os::unix::process::ExitStatusExt;
    let ran_on = child.try_wait().expect("wait").is_none();
    if ran_on {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait");
    let mut rest = String::new();
    let mut err = err;
    let _ = std::io::Read::read_to_string(&mut err, &mut rest);
    let signal = if ran_on { None } else { status.signal() };
    (
        signal,
        format!(
            "the monitor {}: {rest}; dom0's kernel: {:?}",
            if ran_on {
                "was still running".to_owned()
            } else {
                status.to_string()
            },
            vm_common::vm_xl::kernel_faults()
        ),
    )
}

#[test]
fn the_monitor_restarts_destroys_and_preserves_as_configured() {
    let host = host();
    // on_reboot = restart: a new domain of the same name, the old one gone, xl agrees. A
    // monitor killed by a signal (under QEMU TCG, PV dom0 corrupts a process now and then: see
    // vm_xl) is run once more, printed as RETRY.
    let mut attempt = 0;
    let (old, child, err) = loop {
        let old = create("t-lc-reboot", "on_reboot = \"restart\"");
        introduce(&host, old);
        let (child, err) = monitor("t-lc-reboot");
        host.xc
            .remote_shutdown(old, ShutdownReason::REBOOT)
            .expect("shut down");
        if within(
            &host,
            || matches!(xl_row("t-lc-reboot"), Some((d, _)) if d != old),
        ) {
            break (old, child, err);
        }
        let (signal, what) = post_mortem(child, err);
        assert!(
            signal.is_some() && attempt == 0,
            "the restart never happened: {what}"
        );
        println!("RETRY the restart: {what}");
        attempt += 1;
        rxl_ok(&["destroy", "t-lc-reboot"]);
    };
    let (new, state) = xl_row("t-lc-reboot").expect("xl lists the new domain");
    assert_ne!(new, old);
    assert!(
        !state.contains('s'),
        "the new domain is not shut down: {state}"
    );
    assert!(
        !run("xl", &["list"])
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(&old.to_string())),
        "the old domain is gone"
    );
    assert_eq!(rxl_row("t-lc-reboot").expect("listed")["domid"], new);
    // The new domain has no kernel either, so xenstored did not introduce it: its destroy
    // fires no @releaseDomain, and this monitor would wait for the next one. End it here.
    let mut child = child;
    child.kill().expect("kill the monitor");
    let _ = finish(child, err);
    rxl_ok(&["destroy", "t-lc-reboot"]);

    // on_poweroff = destroy: gone, from xl's view too.
    let d = create("t-lc-off", "on_poweroff = \"destroy\"");
    introduce(&host, d);
    let (child, err) = monitor("t-lc-off");
    host.xc
        .remote_shutdown(d, ShutdownReason::POWEROFF)
        .expect("shut down");
    let (ok, log) = finish(child, err);
    assert!(ok, "{log}");
    assert!(log.contains(&format!("Domain {d} destroyed")), "{log}");
    assert_eq!(xl_row("t-lc-off"), None);

    // on_crash = preserve: stays, shown crashed by rxl list and xl list alike.
    let c = create("t-lc-crash", "on_crash = \"preserve\"");
    introduce(&host, c);
    let (child, err) = monitor("t-lc-crash");
    host.xc
        .remote_shutdown(c, ShutdownReason::CRASH)
        .expect("shut down");
    let (ok, log) = finish(child, err);
    assert!(ok, "{log}");
    assert!(log.contains("preserved, shut down (crash)"), "{log}");
    let (_, xl_state) = xl_row("t-lc-crash").expect("xl still lists it");
    let ours = rxl_row("t-lc-crash").expect("rxl still lists it");
    println!("FACT xl list state of a crashed, preserved domain: {xl_state}");
    assert_eq!(
        ours["state"],
        xl_state.as_str(),
        "rxl list and xl list agree"
    );
    assert_eq!(&xl_state[3..5], "sc", "{xl_state}");
    assert_eq!(ours["shutdown_reason"], "crash");
    rxl_ok(&["destroy", "t-lc-crash"]);
    assert_eq!(xl_row("t-lc-crash"), None);
}

#[test]
fn rxl_shutdown_w_powers_off_a_guest_xl_booted() {
    let host = host();
    vm_common::vm_xl::xl_create(&["/etc/xen/rxen-guest.cfg", "name=\"t-lc-guest\""]);
    let (domid, _) = xl_row("t-lc-guest").expect("xl lists its guest");
    // The guest's kernel has its shutdown watch once it advertises the feature.
    let feature = format!("/local/domain/{domid}/control/feature-poweroff");
    until(&host, "the guest's PV control", || {
        xs_read(&feature).is_some()
    });
    let t = Instant::now();
    let out = rxl(&["shutdown", "-w", "t-lc-guest"]);
    let err = String::from_utf8_lossy(&out.stderr);
    println!(
        "TIMING rxl shutdown -w: {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "Domain {domid} has been shut down, reason code 0 (poweroff)"
        )) || err.contains(&format!("Domain {domid} has been destroyed")),
        "{err}"
    );
    // xl's own monitor (xl create's) destroys it on poweroff.
    until(&host, "xl's monitor destroys the guest", || {
        xl_row("t-lc-guest").is_none()
    });
}

/// Waits for a child with a bound, killing it (and failing) if it is stuck.
fn wait_bounded(child: Child, what: &str) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(STUCK) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            run("kill", &["-9", &pid.to_string()]);
            panic!("{what} (pid {pid}) is stuck");
        }
    }
}

#[test]
fn rxl_console_shows_a_guest_xl_booted_and_ends_with_it() {
    vm_common::vm_xl::xl_create(&["-p", "/etc/xen/rxen-guest.cfg", "name=\"t-lc-con\""]);
    // spawns: own
    let mut child = Command::new(RXL)
        .args(["console", "t-lc-con"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rxl console");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match std::io::Read::read(&mut stdout, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    if String::from_utf8_lossy(&seen).contains("rxen-guest: up") {
                        let _ = tx.send(());
                    }
                }
            }
        }
        seen
    });
    // xenconsoled keeps what the guest writes until the console is read: no race here.
    let t = Instant::now();
    run("xl", &["unpause", "t-lc-con"]);
    let up = rx.recv_timeout(STUCK * 2).is_ok();
    println!(
        "TIMING unpause to the console marker through rxl console: {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    run("xl", &["destroy", "t-lc-con"]);
    let out = wait_bounded(child, "rxl console after xl destroy");
    let seen = reader.join().expect("reader");
    let text = String::from_utf8_lossy(&seen);
    assert!(up, "no marker on the console; it showed: {text}");
    assert!(
        out.status.success(),
        "rxl console: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
