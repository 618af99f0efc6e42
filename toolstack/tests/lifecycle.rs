//! Domain lifecycle on the simulated host: shutdown and reboot requests (the PV control
//! protocol, with the test playing the guest), `-w`, and the per-domain monitor applying
//! on_poweroff / on_reboot / on_crash, one monitor per domain, ending when someone else
//! destroys the domain, and surviving its own death half way through a restart.
//!
//! A domain is shut down here as a guest would shut itself down, with
//! `SCHEDOP_remote_shutdown` (the simulator has no guest kernels). Every wait is on a
//! xenstore watch or a child process, bounded by `common::STUCK` only to fail.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{stderr, wait, Hooks, SimHost, STUCK};
use toolstack::lifecycle::{self, Delivered, Request, RequestOptions};
use xenctrl::abi::ShutdownReason;

fn xs(host: &SimHost) -> xenstore::Client {
    xenstore::Client::open_path(host.path().join("xenstored.sock")).expect("xenstore")
}

/// A config with the given actions.
fn cfg(host: &SimHost, name: &str, actions: &str) -> String {
    let p = host.path().join(format!("{name}.cfg"));
    std::fs::write(
        &p,
        format!("name = \"{name}\"\ntype = \"pv\"\nmemory = 32\nvcpus = 1\n{actions}\n"),
    )
    .expect("write cfg");
    p.display().to_string()
}

/// Create `name` with no monitor (`-e`); its domid.
fn create_unmonitored(host: &SimHost, name: &str, actions: &str) -> u16 {
    let c = cfg(host, name, actions);
    host.ok(&["create", "-p", "-e", &c]);
    host.domid(name).expect("listed")
}

/// `rxl monitor NAME` in the foreground, once it has taken its lock and watches (its first
/// line).
fn monitor(host: &SimHost, name: &str) -> (Child, BufReader<std::process::ChildStderr>) {
    let mut child = host
        .command(&["monitor", name])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn monitor");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    err.read_line(&mut line)
        .expect("read the monitor's first line");
    assert!(
        line.starts_with("Waiting for domain"),
        "monitor said {line:?}"
    );
    (child, err)
}

/// The rest of a monitor's stderr, once it has exited; its status.
fn finish(
    child: Child,
    mut err: BufReader<std::process::ChildStderr>,
    what: &str,
) -> (bool, String) {
    let out = wait(child, what);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).expect("stderr");
    (out.status.success(), rest)
}

/// Wait (on xenstore watches) until `ok` holds for the host's domain list.
fn until(host: &SimHost, what: &str, mut ok: impl FnMut(&[serde_json::Value]) -> bool) {
    // Creating and destroying a domain both change /local/domain.
    let c = xs(host);
    let w = c.watch("/local/domain").expect("watch");
    let deadline = std::time::Instant::now() + STUCK;
    loop {
        if ok(&host.list()) {
            return;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ev = w.next_event_timeout(left).expect("watch");
        assert!(ev.is_some(), "{what}: never happened");
        while w.try_next_event().is_some() {}
    }
}

fn state_of(host: &SimHost, domid: u16) -> Option<serde_json::Value> {
    host.list().into_iter().find(|d| d["domid"] == domid)
}

fn shut(host: &SimHost, domid: u16, reason: ShutdownReason) {
    host.lib()
        .xc
        .remote_shutdown(domid, reason)
        .expect("remote shutdown");
}

#[test]
fn reboot_restarts_and_poweroff_destroys() {
    let host = SimHost::new(4096, 1024);
    let old = create_unmonitored(
        &host,
        "lc",
        "on_reboot = \"restart\"\non_poweroff = \"destroy\"",
    );
    let uuid = state_of(&host, old).expect("listed")["uuid"].clone();
    let (child, err) = monitor(&host, "lc");
    shut(&host, old, ShutdownReason::REBOOT);
    until(&host, "the restart", |l| {
        l.iter().any(|d| d["name"] == "lc" && d["domid"] != old)
            && !l.iter().any(|d| d["domid"] == old)
    });
    let new = host.domid("lc").expect("restarted");
    assert_ne!(new, old);
    let d = state_of(&host, new).expect("listed");
    assert_eq!(d["uuid"], uuid, "xl keeps the UUID across a restart");
    assert_eq!(d["state"], "--p---", "a fresh domain, not shut down: {d}");
    // The new domain has its stored config, with the same actions.
    let long: Vec<serde_json::Value> =
        serde_json::from_str(&host.ok(&["list", "-l", "lc"])).expect("json");
    assert_eq!(long[0]["config"]["on_reboot"], "restart", "{long:?}");
    // The same monitor watches the new domain: a poweroff destroys it, and it ends.
    shut(&host, new, ShutdownReason::POWEROFF);
    let (ok, log) = finish(child, err, "the monitor");
    assert!(ok, "monitor failed: {log}");
    assert!(
        log.contains(&format!("Domain {old} restarted as domain {new}")),
        "{log}"
    );
    assert!(log.contains(&format!("Domain {new} destroyed")), "{log}");
    assert_eq!(host.domid("lc"), None);
    assert!(!xs(&host).exists(&format!("/local/domain/{new}")).unwrap());
    // Nothing is left of the restart.
    let restarting = host.path().join("domains/restarting");
    let left: Vec<_> = std::fs::read_dir(&restarting)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn crash_with_preserve_leaves_it_shown_crashed() {
    let host = SimHost::new(4096, 1024);
    let domid = create_unmonitored(&host, "keep", "on_crash = \"preserve\"");
    let (child, err) = monitor(&host, "keep");
    shut(&host, domid, ShutdownReason::CRASH);
    let (ok, log) = finish(child, err, "the monitor");
    assert!(ok, "{log}");
    assert!(log.contains("preserved, shut down (crash)"), "{log}");
    let d = state_of(&host, domid).expect("still there");
    assert_eq!(d["state"], "--psc-", "{d}");
    assert_eq!(d["shutdown_reason"], "crash", "{d}");
    let text = host.ok(&["list", "keep"]);
    assert!(text.contains("--psc-"), "{text}");
    host.ok(&["destroy", "keep"]);
}

#[test]
fn unsupported_actions_leave_the_domain_and_say_so() {
    let host = SimHost::new(4096, 1024);
    let domid = create_unmonitored(&host, "dump", "on_crash = \"coredump-destroy\"");
    let (child, err) = monitor(&host, "dump");
    shut(&host, domid, ShutdownReason::CRASH);
    let (ok, log) = finish(child, err, "the monitor");
    assert!(!ok);
    assert!(
        log.contains(
            "its action \"coredump-destroy\" is not supported: the domain is left shut down"
        ),
        "{log}"
    );
    assert_eq!(
        state_of(&host, domid).expect("still there")["shutdown_reason"],
        "crash"
    );
}

#[test]
fn the_monitor_ends_when_someone_else_destroys_the_domain() {
    let host = SimHost::new(4096, 1024);
    let domid = create_unmonitored(&host, "gone", "");
    let (child, err) = monitor(&host, "gone");
    host.ok(&["destroy", "gone"]);
    let (ok, log) = finish(child, err, "the monitor");
    assert!(ok, "{log}");
    assert!(
        log.contains(&format!("Domain {domid} has been destroyed.")),
        "{log}"
    );
}

#[test]
fn a_second_monitor_is_refused_and_one_reboot_restarts_once() {
    let host = SimHost::new(4096, 1024);
    let old = create_unmonitored(&host, "one", "on_reboot = \"restart\"");
    let (child, err) = monitor(&host, "one");
    let second = host.rxl(&["monitor", "one"]);
    assert!(!second.status.success());
    assert!(
        stderr(&second).contains("another monitor already watches it"),
        "{}",
        stderr(&second)
    );
    shut(&host, old, ShutdownReason::REBOOT);
    until(&host, "the restart", |l| {
        l.iter().filter(|d| d["name"] == "one").count() == 1 && !l.iter().any(|d| d["domid"] == old)
    });
    let new = host.domid("one").expect("restarted");
    host.ok(&["destroy", "one"]);
    let (ok, log) = finish(child, err, "the monitor");
    assert!(ok, "{log}");
    assert!(
        log.contains(&format!("Domain {new} has been destroyed.")),
        "{log}"
    );
    assert_eq!(host.list().iter().filter(|d| d["name"] == "one").count(), 0);
}

#[test]
fn create_detaches_a_monitor_that_destroys_on_poweroff() {
    let host = SimHost::new(4096, 1024);
    let c = cfg(&host, "det", "on_poweroff = \"destroy\"");
    host.ok(&["create", "-p", &c]);
    let domid = host.domid("det").expect("listed");
    // The detached monitor takes its lock when it starts; until then a foreground one could
    // take it. Shut down at once: a monitor that starts late sees the domain shut down already.
    shut(&host, domid, ShutdownReason::POWEROFF);
    until(&host, "the detached monitor's destroy", |l| {
        !l.iter().any(|d| d["domid"] == domid)
    });
    let log = std::fs::read_to_string(host.path().join("log/rxl-det.log")).expect("log");
    // Written before it destroyed the domain (what it writes after may not be there yet).
    assert!(
        log.contains(&format!(
            "Domain {domid} has shut down, reason code 0 (poweroff): action destroy"
        )),
        "{log}"
    );
}

#[test]
fn shutdown_asks_the_guest_through_control_shutdown_and_waits() {
    let host = SimHost::new(4096, 1024);
    let domid = create_unmonitored(&host, "pv", "");
    // The test plays the guest's kernel: it acknowledges the request by emptying the node and
    // shuts itself down with the reason asked for.
    let guest = {
        let c = xs(&host);
        let path = format!("/local/domain/{domid}/control/shutdown");
        let w = c.watch(&path).expect("watch");
        let dir = host.path().to_owned();
        std::thread::spawn(move || loop {
            w.next_event_timeout(STUCK)
                .expect("watch")
                .expect("a request comes");
            let v = c.read_string(&path).unwrap_or_default();
            if v.is_empty() {
                continue;
            }
            c.write(&path, "").expect("acknowledge");
            let xc = xenctrl::XenCtrl::simulated_persistent(
                &dir.join("hypervisor"),
                xenctrl::SimConfig::default(),
            )
            .expect("hypervisor");
            let reason = match v.as_str() {
                "poweroff" => ShutdownReason::POWEROFF,
                "reboot" => ShutdownReason::REBOOT,
                other => panic!("the guest was asked {other:?}"),
            };
            xc.remote_shutdown(domid, reason)
                .expect("the guest shuts down");
            return v;
        })
    };
    let out = host.rxl(&["reboot", "-w", "pv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(guest.join().expect("guest"), "reboot");
    assert!(
        stderr(&out).contains(&format!(
            "Domain {domid} has been shut down, reason code 1 (reboot)"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        state_of(&host, domid).expect("left, unmonitored")["state"],
        "--psr-"
    );
    host.ok(&["destroy", "pv"]);
}

#[test]
fn shutdown_errors_are_clear() {
    let host = SimHost::new(4096, 1024);
    let domid = create_unmonitored(&host, "quiet", "");
    let h = host.lib();
    // No guest acknowledges: the request times out, naming the domain.
    let opts = RequestOptions {
        ack_timeout: Duration::from_millis(300),
        ..RequestOptions::default()
    };
    let e = lifecycle::request(&h, domid, Request::Poweroff, &opts).unwrap_err();
    assert!(
        matches!(
            e,
            toolstack::Error::NotAcknowledged {
                request: "poweroff",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("domain 1 (quiet): the guest did not acknowledge"),
        "{e}"
    );
    // dom0 and a missing domain.
    let e = lifecycle::request(&h, 0, Request::Reboot, &opts).unwrap_err();
    assert!(matches!(e, toolstack::Error::Refused { .. }), "{e:?}");
    let out = host.rxl(&["shutdown", "nosuch"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no such domain: nosuch"),
        "{}",
        stderr(&out)
    );
    // A domain the toolstack sees as HVM has no PV control: refused, or with force shut
    // down by Xen.
    xs(&host)
        .write(&format!("/libxl/{domid}/type"), "hvm")
        .expect("write");
    // (Xen's HVM flag is what makes the type count; a PV domain's type node is ignored.)
    assert_eq!(
        lifecycle::request(&h, domid, Request::Poweroff, &opts).map_err(|e| e.to_string()),
        Err(format!(
            "domain {domid} (quiet): the guest did not acknowledge the poweroff request within 300ms \
             (is a kernel running? `rxl destroy` stops it without its help)"
        ))
    );
    let pvh = {
        let c = cfg(&host, "hvmish", "type = \"pvh\"");
        host.ok(&["create", "-p", "-e", &c]);
        host.domid("hvmish").expect("listed")
    };
    xs(&host)
        .write(&format!("/libxl/{pvh}/type"), "hvm")
        .expect("write");
    let e = lifecycle::request(&h, pvh, Request::Poweroff, &opts).unwrap_err();
    assert!(matches!(e, toolstack::Error::NoPvControl { .. }), "{e:?}");
    assert!(e.to_string().contains("use -F"), "{e}");
    let forced = RequestOptions {
        force: true,
        ..opts
    };
    assert_eq!(
        lifecycle::request(&h, pvh, Request::Reboot, &forced).expect("forced"),
        Delivered::Forced
    );
    assert_eq!(
        state_of(&host, pvh).expect("listed")["shutdown_reason"],
        "reboot"
    );
}

/// The monitor killed at each step of a restart: `rxl recover` then leaves exactly one domain
/// of the name, with its stored config, and no record behind; a domain the restart had not
/// yet destroyed is left shut down, and a new monitor restarts it.
#[test]
fn a_restart_survives_the_monitors_death_at_every_step() {
    let points = [
        "monitor:acting",
        "restart:recorded",
        "restart:destroyed",
        "create:intent-recorded",
        "create:claimed",
        "create:populated",
        "create:before-stored",
        "create:complete",
        "restart:created",
    ];
    for kill_at in points {
        let host = SimHost::new(4096, 1024);
        let old = create_unmonitored(&host, "cr", "on_reboot = \"restart\"");
        let hooks = Hooks::new(host.path());
        let mut child = host
            .command(&["monitor", "cr"])
            .env(toolstack::hooks::HOOK_SOCKET_ENV, &hooks.path)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut h = hooks.accept("monitor");
        h.expect("monitor:watching");
        shut(&host, old, ShutdownReason::REBOOT);
        h.go();
        loop {
            let p = h
                .next()
                .unwrap_or_else(|| panic!("{kill_at}: the monitor ended first"));
            if p == kill_at {
                break;
            }
            h.go();
        }
        child.kill().expect("kill");
        let _ = child.wait();
        let out = host.rxl(&["recover"]);
        assert!(out.status.success(), "{kill_at}: {}", stderr(&out));
        let named: Vec<serde_json::Value> = host
            .list()
            .into_iter()
            .filter(|d| d["name"] == "cr")
            .collect();
        assert_eq!(named.len(), 1, "{kill_at}: {named:?}");
        let domid = u16::try_from(named[0]["domid"].as_u64().unwrap()).unwrap();
        let long: Vec<serde_json::Value> =
            serde_json::from_str(&host.ok(&["list", "-l", "cr"])).expect("json");
        assert_eq!(
            long[0]["config"]["name"], "cr",
            "{kill_at}: stored config {long:?}"
        );
        for sub in ["domains/restarting", "domains/creating"] {
            let left: Vec<_> = std::fs::read_dir(host.path().join(sub))
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{kill_at}: {sub}: {left:?}");
        }
        if domid == old {
            // Not destroyed yet: still shut down; a new monitor finishes the job.
            assert_eq!(named[0]["shutdown_reason"], "reboot", "{kill_at}");
            let (child, err) = monitor(&host, "cr");
            until(&host, "the restart", |l| {
                l.iter().any(|d| d["name"] == "cr" && d["domid"] != old)
            });
            host.ok(&["destroy", "cr"]);
            let (ok, log) = finish(child, err, "the second monitor");
            assert!(ok, "{kill_at}: {log}");
        } else {
            assert!(
                named[0].get("shutdown_reason").is_none(),
                "{kill_at}: {named:?}"
            );
            host.ok(&["destroy", "cr"]);
        }
    }
}

/// `rxl console` without a terminal: it waits for the console's pty (the simulated
/// xenconsoled serves one once the ring is published, as a builder does), sends its stdin,
/// shows what comes back (the simulated console echoes), and ends when the domain is
/// destroyed and the pty closes.
#[test]
fn console_copies_both_ways_and_ends_with_the_domain() {
    use std::io::{Read, Write};
    let host = SimHost::new(4096, 1024);
    let domid = create_unmonitored(&host, "con", "");
    let mut child = host
        .command(&["console", "con"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn console");
    // Published after the console started waiting for it.
    xs(&host)
        .write(&format!("/local/domain/{domid}/console/ring-ref"), "1234")
        .expect("ring-ref");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"hello, console\n").expect("write");
    drop(stdin);
    let mut stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("hello, console") {
        let n = stdout.read(&mut buf).expect("read");
        assert!(
            n > 0,
            "the console ended early: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    host.ok(&["destroy", "con"]);
    let out = wait(child, "rxl console");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn console_errors_are_clear() {
    let host = SimHost::new(4096, 1024);
    create_unmonitored(&host, "mute", "");
    // No ring published: the simulated xenconsoled serves no pty.
    let out = host.rxl(&["console", "--timeout", "0.3", "mute"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "its console has no pty yet (/local/domain/1/console/tty is empty after 300ms)"
        ),
        "{}",
        stderr(&out)
    );
    let out = host.rxl(&["console", "nosuch"]);
    assert!(
        stderr(&out).contains("no such domain: nosuch"),
        "{}",
        stderr(&out)
    );
    let out = host.rxl(&["console", "-t", "bogus", "mute"]);
    assert!(!out.status.success());
}
