//! Crash injection: an `rxl` process doing device work (or a destroy, or a creation with
//! devices) is killed with SIGKILL at each of its hook points. At every point the invariant
//! must already hold (nothing in xenstore that the stored config does not describe); `rxl
//! recover` then completes or undoes the interrupted step, after which every device is in both
//! xenstore and the stored config or in neither, nothing is leaked, and the domain takes device
//! work again.

mod common;

use std::process::Stdio;

use common::{stderr, wait, Hooks, SimHost};
use toolstack::hooks::HOOK_SOCKET_ENV;

fn xs(host: &SimHost) -> xenstore::Client {
    xenstore::Client::open_path(host.path().join("xenstored.sock")).expect("xenstore")
}

fn violations(host: &SimHost) -> String {
    host.ok(&["device-check"]).trim().to_owned()
}

fn children(host: &SimHost, p: &str) -> Vec<String> {
    xs(host).directory(p).unwrap_or_default()
}

/// Every disk the stored config lists is in xenstore, and the other way round.
fn consistent(host: &SimHost, name: &str, domid: u16, ctx: &str) {
    consistent_kind(host, "block-list", "vbd", name, domid, ctx);
}

/// Every device of a kind (listed by `list_cmd`, with backends in `backend/KIND`) that the
/// stored config lists is in xenstore, and the other way round.
fn consistent_kind(host: &SimHost, list_cmd: &str, kind: &str, name: &str, domid: u16, ctx: &str) {
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&host.ok(&[list_cmd, "--json", name])).expect("json");
    let mut recorded: Vec<String> = listed
        .iter()
        .map(|v| v["devid"].as_u64().expect("devid").to_string())
        .collect();
    for v in &listed {
        assert!(v["backend_path"].is_string(), "{ctx}: stale entry {v}");
    }
    let mut present = children(host, &format!("/local/domain/0/backend/{kind}/{domid}"));
    recorded.sort();
    present.sort();
    assert_eq!(recorded, present, "{ctx}");
}

/// Nothing left of a domain that is gone.
fn nothing_left(host: &SimHost, domid: u16, ctx: &str) {
    for p in [
        format!("/local/domain/{domid}"),
        format!("/libxl/{domid}"),
        format!("/local/domain/0/backend/vbd/{domid}"),
        format!("/local/domain/0/backend/vif/{domid}"),
        format!("/local/domain/0/backend/console/{domid}"),
    ] {
        assert!(!xs(host).exists(&p).expect("exists"), "{ctx}: {p} left");
    }
    assert!(
        !host
            .path()
            .join(format!("domains/domain-{domid}.json"))
            .exists(),
        "{ctx}: stored config left"
    );
}

/// Runs `args` with hooks, answers `go` at the first `k` points, and kills it at point `k`.
/// Returns the name of the point it was killed at, or `None` if it finished first.
fn kill_at(host: &SimHost, hooks: &Hooks, args: &[&str], k: usize) -> Option<String> {
    let mut child = host
        .command(args)
        .env(HOOK_SOCKET_ENV, &hooks.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut h = hooks.accept("victim");
    let mut n = 0;
    loop {
        match h.next() {
            None => {
                let out = wait(child, "victim");
                assert!(out.status.success(), "{args:?}: {}", stderr(&out));
                return None;
            }
            Some(point) if n == k => {
                child.kill().expect("kill");
                let _ = child.wait();
                return Some(point);
            }
            Some(_) => {
                n += 1;
                h.go();
            }
        }
    }
}

#[test]
fn killed_device_work_recovers_at_every_step() {
    let host = SimHost::new(4096, 512);
    let hooks = Hooks::new(host.path());
    let mut crash_points = 0;
    for (op, prepare) in [("attach", false), ("detach", true)] {
        for k in 0.. {
            let name = format!("{op}{k}");
            let d = host.create(&name, 32, 32);
            if prepare {
                host.ok(&["block-attach", &name, &host.disk("/old,raw,xvda")]);
            }
            let new_disk = host.disk("/new,raw,xvda");
            let args: Vec<&str> = match op {
                "attach" => vec!["block-attach", &name, &new_disk],
                _ => vec!["block-detach", &name, "xvda"],
            };
            let Some(point) = kill_at(&host, &hooks, &args, k) else {
                host.ok(&["destroy", &name]);
                break;
            };
            crash_points += 1;
            let ctx = format!("{op} killed at {point}");
            // The invariant holds at the crash, before any recovery.
            assert_eq!(violations(&host), "[]", "{ctx}");
            host.ok(&["recover"]);
            consistent(&host, &name, d, &ctx);
            assert_eq!(violations(&host), "[]", "{ctx}");
            // The domain takes device work again: the disk can be detached (if there) and
            // attached anew.
            let out = host.rxl(&["block-detach", &name, "xvda"]);
            assert!(
                out.status.success() || stderr(&out).contains("has no such device"),
                "{ctx}: {}",
                stderr(&out)
            );
            host.ok(&["block-attach", &name, &host.disk("/again,raw,xvda")]);
            consistent(&host, &name, d, &ctx);
            host.ok(&["destroy", &name]);
            nothing_left(&host, d, &ctx);
        }
    }
    eprintln!("device work: {crash_points} crash points, 0 violations");
    assert_eq!(
        crash_points, 6,
        "add and remove have three hook points each"
    );
}

#[test]
fn killed_channel_work_recovers_at_every_step() {
    let host = SimHost::new(4096, 512);
    let hooks = Hooks::new(host.path());
    let mut crash_points = 0;
    let consoles = |name: &str, d: u16, ctx: &str| {
        consistent_kind(&host, "console-list", "console", name, d, ctx);
    };
    for (op, prepare) in [("attach", false), ("detach", true)] {
        for k in 0.. {
            let name = format!("ch-{op}{k}");
            let d = host.create(&name, 32, 32);
            if prepare {
                host.ok(&["channel-attach", &name, "name=old", "connection=pty"]);
            }
            let args: Vec<&str> = match op {
                "attach" => vec!["channel-attach", &name, "name=new", "connection=pty"],
                _ => vec!["channel-detach", &name, "1"],
            };
            let Some(point) = kill_at(&host, &hooks, &args, k) else {
                host.ok(&["destroy", &name]);
                break;
            };
            crash_points += 1;
            let ctx = format!("channel {op} killed at {point}");
            assert_eq!(violations(&host), "[]", "{ctx}");
            host.ok(&["recover"]);
            consoles(&name, d, &ctx);
            assert_eq!(violations(&host), "[]", "{ctx}");
            // The primary console is untouched by channel work and its recovery.
            assert!(
                xs(&host)
                    .exists(&format!("/local/domain/{d}/console/port"))
                    .expect("exists"),
                "{ctx}: the primary console is gone"
            );
            let out = host.rxl(&["channel-detach", &name, "1"]);
            assert!(
                out.status.success() || stderr(&out).contains("has no such device"),
                "{ctx}: {}",
                stderr(&out)
            );
            host.ok(&["channel-attach", &name, "name=again", "connection=pty"]);
            consoles(&name, d, &ctx);
            host.ok(&["destroy", &name]);
            nothing_left(&host, d, &ctx);
        }
    }
    eprintln!("channel work: {crash_points} crash points, 0 violations");
    assert_eq!(
        crash_points, 6,
        "add and remove have three hook points each"
    );
}

#[test]
fn killed_destroy_and_creation_recover() {
    let host = SimHost::new(4096, 512);
    let hooks = Hooks::new(host.path());
    // Destroy, killed at each step: recovery finishes it, or the next destroy does.
    for k in 0.. {
        let name = format!("gone{k}");
        let d = host.create(&name, 32, 32);
        host.ok(&["block-attach", &name, &host.disk("/x,raw,xvda")]);
        host.ok(&["network-attach", &name]);
        let Some(point) = kill_at(&host, &hooks, &["destroy", &name], k) else {
            nothing_left(&host, d, "destroy ran to the end");
            assert!(k > 0, "destroy passed no hook point");
            eprintln!("destroy: {k} crash points, 0 violations");
            break;
        };
        let ctx = format!("destroy killed at {point}");
        assert_eq!(violations(&host), "[]", "{ctx}");
        host.ok(&["recover"]);
        assert_eq!(violations(&host), "[]", "{ctx}");
        if host.domid(&name).is_some() {
            consistent(&host, &name, d, &ctx);
            host.ok(&["destroy", &name]);
        }
        nothing_left(&host, d, &ctx);
    }
    // Creation with a disk and a vif, killed once its config is stored: the devices it had
    // created are described by the stored config at every point.
    let cfg = host.path().join("withdev.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"withdev\"\nmemory = 32\ndisk = ['{}']\nvif = ['bridge=xenbr0']\n",
            host.disk("/x,raw,xvda")
        ),
    )
    .expect("cfg");
    let cfg = cfg.display().to_string();
    let idle = host.ok(&["info"]);
    let mut seen = Vec::new();
    for k in 0.. {
        let Some(point) = kill_at(&host, &hooks, &["create", "-q", &cfg], k) else {
            let d = host.domid("withdev").expect("created");
            consistent(&host, "withdev", d, "create ran to the end");
            consistent_kind(
                &host,
                "console-list",
                "console",
                "withdev",
                d,
                "create ran to the end",
            );
            let nics = host.ok(&["network-list", "--json", "withdev"]);
            assert!(nics.contains("devid=0,mac=00:16:3e:"), "{nics}");
            host.ok(&["destroy", "withdev"]);
            nothing_left(&host, d, "create ran to the end");
            break;
        };
        seen.push(point.clone());
        let ctx = format!("create killed at {point}");
        assert_eq!(violations(&host), "[]", "{ctx}");
        let named = host.domid("withdev");
        // Recovery rolls the creation back whole, named or not yet: only dom0 is left, with
        // all the memory free again and no claim outstanding.
        let said = stderr(&host.rxl(&["recover"]));
        assert_eq!(violations(&host), "[]", "{ctx}");
        let left: Vec<u64> = host
            .list()
            .iter()
            .map(|v| v["domid"].as_u64().expect("domid"))
            .collect();
        assert_eq!(left, [0], "{ctx}: domains left after recovery ({said})");
        if let Some(d) = named {
            nothing_left(&host, d, &ctx);
        }
        assert_eq!(host.ok(&["info"]), idle, "{ctx}: memory after recovery");
        // A creation whose domain Xen had made says so.
        if point != "create:intent-recorded" {
            assert!(
                said.contains("its creation was interrupted"),
                "{ctx}: {said}"
            );
        }
    }
    assert_eq!(
        seen.first().map(String::as_str),
        Some("create:intent-recorded")
    );
    assert_eq!(seen.last().map(String::as_str), Some("create:complete"));
    assert!(
        seen.iter()
            .filter(|p| *p == "create:device-written")
            .count()
            == 3,
        "a disk, a vif and the primary console: {seen:?}"
    );
    eprintln!(
        "creation: {} crash points ({}), 0 violations, nothing left after recovery",
        seen.len(),
        seen.join(", ")
    );
}

/// Recovery leaves a creation that is still running alone, even before anything names its
/// domain: the creation holds its intent's lock, so `rxl recover` cannot take it.
#[test]
fn recovery_spares_a_creation_in_progress() {
    let host = SimHost::new(2048, 512);
    let hooks = Hooks::new(host.path());
    let cfg = host.cfg("alive", 64, 64);
    let child = host
        .command(&["create", "-q", &cfg.display().to_string()])
        .env(HOOK_SOCKET_ENV, &hooks.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut h = hooks.accept("creator");
    // Stopped with its memory populated and nothing in xenstore yet.
    loop {
        let point = h.next().expect("the creation stopped early");
        if point == "create:populated" {
            break;
        }
        h.go();
    }
    let before = host.list();
    assert_eq!(
        before.len(),
        2,
        "dom0 and the anonymous new domain: {before:?}"
    );
    let said = stderr(&host.rxl(&["recover"]));
    assert!(!said.contains("interrupted"), "{said}");
    assert_eq!(
        host.list().len(),
        2,
        "recovery took the running creation's domain"
    );
    h.go();
    h.run_to_end();
    let out = wait(child, "creator");
    assert!(out.status.success(), "{}", stderr(&out));
    let d = host.domid("alive").expect("the creation finished");
    // Finished creations leave no intent behind: a later recovery keeps the domain.
    host.ok(&["recover"]);
    assert_eq!(host.domid("alive"), Some(d));
    host.ok(&["destroy", "alive"]);
}
