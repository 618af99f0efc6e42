//! Device hotplug on the simulated host, across processes: `rxl` commands against one state
//! directory, the host's simulated backend driver on the other end, and hook points to force
//! the interleavings of the device races (an add against a destroy, two adds of one device, a
//! remove against an add): see `toolstack/DESIGN.md`.

mod common;

use std::process::{Child, Output, Stdio};

use common::{device_error, stderr, wait, within, Hooked, Hooks, SimHost};
use toolstack::config::{DiskSpec, VifSpec};
use toolstack::device::{self, DeviceError, DeviceKind, DeviceRef, Goal};
use toolstack::hooks::HOOK_SOCKET_ENV;
use toolstack::lock::Locked;
use toolstack::sim::backend::{behaviour_path, Behaviour, HOTPLUG_ERROR};

fn xs(host: &SimHost) -> xenstore::Client {
    xenstore::Client::open_path(host.path().join("xenstored.sock")).expect("xenstore")
}

fn set_behaviour(host: &SimHost, domid: u16, b: Behaviour) {
    xs(host)
        .write(&behaviour_path(domid), b.as_str())
        .expect("set behaviour");
}

fn exists(host: &SimHost, path: &str) -> bool {
    xs(host).exists(path).expect("exists")
}

/// `rxl device-check D`: the invariant's violations, as JSON text (`[]` when none).
fn violations(host: &SimHost, domid: u16) -> String {
    host.ok(&["device-check", &domid.to_string()])
        .trim()
        .to_owned()
}

/// The violations of every domain that exists or left anything behind.
fn violations_all(host: &SimHost) -> String {
    host.ok(&["device-check"]).trim().to_owned()
}

fn block_list(host: &SimHost, domain: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&host.ok(&["block-list", "--json", domain])).expect("json")
}

fn network_list(host: &SimHost, domain: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&host.ok(&["network-list", "--json", domain])).expect("json")
}

fn fails_with(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected a failure with {needle:?}");
    let e = stderr(out);
    assert!(e.contains(needle), "expected {needle:?} in: {e}");
}

/// Waits, on a xenstore watch (bounded by [`common::STUCK`]), until both ends of disk `devid`
/// of domain `d` are Connected.
fn both_connected(host: &SimHost, d: u16, devid: u32) {
    let xs = xs(host);
    let fe = format!("/local/domain/{d}/device/vbd/{devid}/state");
    let be = format!("/local/domain/0/backend/vbd/{d}/{devid}/state");
    let watch = xs.watch("/local/domain").expect("watch");
    let deadline = std::time::Instant::now() + common::STUCK;
    loop {
        let read = |p: &str| xs.read_string(p).ok();
        if read(&fe).as_deref() == Some("4") && read(&be).as_deref() == Some("4") {
            return;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "vbd {devid} of domain {d} never connected");
        let _ = watch.next_event_timeout(left);
    }
}

/// Nothing of domain `d`'s devices anywhere: frontends, backends, toolstack records.
fn no_device_nodes(host: &SimHost, d: u16) {
    for kind in ["vbd", "vif", "vkbd"] {
        for p in [
            format!("/local/domain/{d}/device/{kind}"),
            format!("/local/domain/0/backend/{kind}/{d}"),
            format!("/libxl/{d}/device/{kind}"),
        ] {
            if let Ok(children) = xs(host).directory(&p) {
                assert!(children.is_empty(), "{p} still has {children:?}");
            }
        }
    }
}

#[test]
fn attach_list_and_detach_follow_xl_and_the_xenstore_layout() {
    let host = SimHost::new(2048, 512);
    let d = host.create("dev", 64, 64);
    host.ok(&[
        "block-attach",
        "dev",
        &host.disk("/images/dev.img,raw,xvda,rw"),
    ]);
    host.ok(&[
        "block-attach",
        "dev",
        "format=raw",
        "vdev=xvdb",
        "access=ro",
        &format!("target={}", host.image("/images/b.img")),
    ]);
    // Attach returns once the hotplug script reported, as libxl's does; the (simulated)
    // guest's frontend finishes its side of the handshake on its own time.
    for devid in [51712, 51728] {
        both_connected(&host, d, devid);
    }
    let disks = block_list(&host, "dev");
    let ids: Vec<u64> = disks
        .iter()
        .map(|v| v["devid"].as_u64().expect("devid"))
        .collect();
    assert_eq!(ids, [51712, 51728]);
    for v in &disks {
        assert_eq!(
            (v["frontend_state"].as_u64(), v["backend_state"].as_u64()),
            (Some(4), Some(4))
        );
    }
    let fe = format!("/local/domain/{d}/device/vbd/51712");
    let be = format!("/local/domain/0/backend/vbd/{d}/51712");
    let perms = host.ok(&["xenstore-ls", "-p", &fe]);
    // The frontend is the guest's, readable by the backend domain.
    assert!(
        perms.contains(&format!("backend = \"{be}\"  (n{d}, r0)")),
        "{perms}"
    );
    assert!(
        perms.contains(&format!("virtual-device = \"51712\"  (n{d}, r0)")),
        "{perms}"
    );
    let perms = host.ok(&["xenstore-ls", "-p", &be]);
    // The backend is dom0's, readable by the guest.
    assert!(
        perms.contains(&format!("frontend-id = \"{d}\"  (n0, r{d})")),
        "{perms}"
    );
    assert!(
        perms.contains(&format!("params = \"{}\"", host.image("/images/dev.img"))),
        "{perms}"
    );
    assert!(perms.contains("hotplug-status = \"connected\""), "{perms}");
    let ro = host.ok(&[
        "xenstore-ls",
        &format!("/local/domain/0/backend/vbd/{d}/51728"),
    ]);
    assert!(ro.contains("mode = \"r\""), "{ro}");
    // The stored config describes both, as written.
    let long = host.ok(&["list", "-l", "dev"]);
    assert!(
        long.contains(&host.disk("/images/dev.img,raw,xvda,rw")),
        "{long}"
    );

    // vif ids: the lowest free one, recorded with a generated MAC.
    host.ok(&["network-attach", "dev", "bridge=xenbr1"]);
    host.ok(&["network-attach", "dev", "mac=00:16:3e:00:00:07"]);
    host.ok(&["network-detach", "dev", "0"]);
    host.ok(&["network-attach", "dev"]);
    let nics = network_list(&host, "dev");
    let ids: Vec<u64> = nics
        .iter()
        .map(|v| v["devid"].as_u64().expect("devid"))
        .collect();
    assert_eq!(ids, [0, 1]);
    assert!(
        nics[0]["spec"]
            .as_str()
            .expect("spec")
            .contains("mac=00:16:3e:"),
        "{nics:?}"
    );
    host.ok(&["network-detach", "dev", "00:16:3E:00:00:07"]);
    assert_eq!(network_list(&host, "dev").len(), 1);

    // A second disk with the same vdev is refused and changes nothing.
    {
        let lib = host.lib();
        let mut root = Locked::root();
        let other = DiskSpec::parse(&host.disk("/other.img,raw,xvda")).expect("spec");
        let e = device_error(device::add_disk(&lib, &mut root, d, &other, &within(10)));
        assert!(
            matches!(&e, DeviceError::InUse { existing: Some(s) } if s.ends_with("dev.img,raw,xvda,rw")),
            "{e:?}"
        );
        let xvdc = DeviceRef {
            kind: DeviceKind::Vbd,
            domid: d,
            devid: 51744,
        };
        let e = device_error(device::remove(&lib, &mut root, xvdc, &within(10)));
        assert!(matches!(e, DeviceError::NoSuchDevice), "{e:?}");
    }
    host.ok(&["block-detach", "dev", "xvda"]);
    host.ok(&["block-detach", "dev", "51728"]);
    host.ok(&["network-detach", "dev", "0"]);
    assert!(block_list(&host, "dev").is_empty());
    no_device_nodes(&host, d);
    assert_eq!(violations(&host, d), "[]");

    // The checker sees what the toolstack did not record: a backend made behind its back.
    let stray = format!("/local/domain/0/backend/vbd/{d}/51760");
    xs(&host)
        .write(&format!("{stray}/frontend-id"), d.to_string())
        .expect("write");
    let v = violations_all(&host);
    assert!(
        v.contains(&stray) && v.contains("not in the stored config"),
        "{v}"
    );
    // Destroy removes it with the domain, and then the domain has left nothing.
    host.ok(&["destroy", "dev"]);
    assert!(!exists(&host, &stray));
    assert_eq!(violations(&host, d), "[]");
}

#[test]
fn backends_that_stall_fail_or_vanish_give_clear_errors_and_leave_nothing() {
    let host = SimHost::new(2048, 512);
    let d = host.create("bad", 64, 64);
    let lib = host.lib();
    let mut root = Locked::root();
    let xvda = DiskSpec::parse(&host.disk("/x.img,raw,xvda")).expect("spec");
    let mut attach =
        |spec: &DiskSpec| device_error(device::add_disk(&lib, &mut root, d, spec, &within(1)));
    // A backend that never moves: the wait for InitWait (before the hotplug script) ends.
    set_behaviour(&host, d, Behaviour::Stall);
    let e = attach(&xvda);
    assert!(
        matches!(
            e,
            DeviceError::BackendTimeout {
                goal: Goal::InitWait,
                state: Some(device::XenbusState::Initialising),
                ..
            }
        ),
        "{e:?}"
    );
    // The hotplug script fails: its exit status and what it said come back.
    set_behaviour(&host, d, Behaviour::Fail);
    let e = attach(&xvda);
    assert!(
        matches!(&e, DeviceError::HotplugFailed { action: "add", status, output, .. }
            if status.code() == Some(1) && output == HOTPLUG_ERROR),
        "{e:?}"
    );
    set_behaviour(&host, d, Behaviour::Vanish);
    let e = attach(&xvda);
    assert!(matches!(e, DeviceError::BackendVanished { .. }), "{e:?}");
    // Nothing was left by the failed adds, in xenstore or in the stored config.
    assert!(block_list(&host, "bad").is_empty());
    no_device_nodes(&host, d);
    assert_eq!(violations(&host, d), "[]");
    drop(root);

    // A backend that never closes: detach waits, then forces as xl does, and the device goes.
    set_behaviour(&host, d, Behaviour::StallClose);
    host.ok(&["block-attach", "bad", &host.disk("/x.img,raw,xvda")]);
    host.ok(&["block-detach", "--timeout", "1", "bad", "xvda"]);
    assert!(block_list(&host, "bad").is_empty());
    no_device_nodes(&host, d);
    assert_eq!(violations(&host, d), "[]");
    host.ok(&["block-attach", "bad", &host.disk("/x.img,raw,xvda")]);
    host.ok(&["block-detach", "--force", "--timeout", "1", "bad", "xvda"]);
    assert!(block_list(&host, "bad").is_empty());
    no_device_nodes(&host, d);

    // Back to normal, the same device attaches.
    set_behaviour(&host, d, Behaviour::Normal);
    host.ok(&["block-attach", "bad", &host.disk("/x.img,raw,xvda")]);
    assert_eq!(violations(&host, d), "[]");
}

/// An `rxl` process that stops at hook points.
fn hooked(host: &SimHost, hooks: &Hooks, args: &[&str], name: &'static str) -> (Child, Hooked) {
    let child = host
        .command(args)
        .env(HOOK_SOCKET_ENV, &hooks.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let h = hooks.accept(name);
    (child, h)
}

fn spawn(host: &SimHost, args: &[&str]) -> Child {
    host.command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

#[test]
fn destroy_waits_for_an_add_in_progress_and_leaves_nothing() {
    let host = SimHost::new(2048, 512);
    let hooks = Hooks::new(host.path());
    let d = host.create("race", 64, 64);
    let (add, mut h) = hooked(
        &host,
        &hooks,
        &["block-attach", "race", &host.disk("/x,raw,xvda")],
        "add",
    );
    h.expect("device-add:slow-locked");
    h.go();
    h.expect("device-add:recorded");
    h.go();
    // The device is in xenstore, waiting for its backend; the add holds the slow lock.
    h.expect("device-add:written");
    assert!(exists(
        &host,
        &format!("/local/domain/0/backend/vbd/{d}/51712")
    ));
    let mut destroy = spawn(&host, &["destroy", "race"]);
    assert!(destroy.try_wait().expect("try_wait").is_none());
    h.go();
    h.run_to_end();
    let out = wait(add, "add");
    assert!(out.status.success(), "add: {}", stderr(&out));
    let out = wait(destroy, "destroy");
    assert!(out.status.success(), "destroy: {}", stderr(&out));
    no_device_nodes(&host, d);
    assert_eq!(violations(&host, d), "[]");
    assert!(host.domid("race").is_none());
}

#[test]
fn an_add_that_waited_for_destroy_fails_cleanly() {
    let host = SimHost::new(2048, 512);
    let hooks = Hooks::new(host.path());
    let d = host.create("gone", 64, 64);
    let (destroy, mut h) = hooked(&host, &hooks, &["destroy", "gone"], "destroy");
    // Destroy holds the slow lock and the userdata lock.
    h.expect("destroy:locked");
    let add = spawn(&host, &["block-attach", "gone", &host.disk("/x,raw,xvda")]);
    let net = spawn(&host, &["network-attach", &d.to_string()]);
    h.go();
    h.run_to_end();
    let out = wait(destroy, "destroy");
    assert!(out.status.success(), "destroy: {}", stderr(&out));
    for (what, child) in [("block-attach", add), ("network-attach", net)] {
        let out = wait(child, what);
        // The add either resolved the domain before the destroy and then found it gone at its
        // lock, or did not find it at all: either way, "no such domain".
        fails_with(&out, "no such domain");
    }
    no_device_nodes(&host, d);
    assert_eq!(violations(&host, d), "[]");
}

#[test]
fn two_adds_of_one_device_one_wins_and_the_other_is_refused() {
    let host = SimHost::new(2048, 512);
    let hooks = Hooks::new(host.path());
    let d = host.create("twice", 64, 64);
    let (first, mut h) = hooked(
        &host,
        &hooks,
        &["block-attach", "twice", &host.disk("/a,raw,xvdb")],
        "first",
    );
    h.expect("device-add:slow-locked");
    h.go();
    h.expect("device-add:recorded");
    // The first is recorded; the second waits for the slow lock.
    let second = spawn(&host, &["block-attach", "twice", &host.disk("/b,raw,xvdb")]);
    h.go();
    h.run_to_end();
    let out = wait(first, "first");
    assert!(out.status.success(), "first: {}", stderr(&out));
    // Another process's error reaches us as its message: the variant's own.
    let refused = DeviceError::InUse {
        existing: Some(host.disk("/a,raw,xvdb")),
    };
    fails_with(
        &wait(second, "second"),
        &format!("vbd 51728 on domain {d}: {refused}"),
    );
    let disks = block_list(&host, "twice");
    assert_eq!(disks.len(), 1);
    assert_eq!(disks[0]["spec"], host.disk("/a,raw,xvdb").as_str());
    let params = xs(&host)
        .read_string(&format!("/local/domain/0/backend/vbd/{d}/51728/params"))
        .expect("params");
    assert_eq!(params, host.image("/a"));
    assert_eq!(violations(&host, d), "[]");
}

#[test]
fn a_remove_in_progress_finishes_before_an_add_of_the_same_device() {
    let host = SimHost::new(2048, 512);
    let hooks = Hooks::new(host.path());
    let d = host.create("swap", 64, 64);
    host.ok(&["block-attach", "swap", &host.disk("/old,raw,xvda")]);
    let (remove, mut h) = hooked(&host, &hooks, &["block-detach", "swap", "xvda"], "remove");
    h.expect("device-remove:slow-locked");
    h.go();
    h.expect("device-remove:closing");
    let add = spawn(
        &host,
        &["block-attach", "swap", &host.disk("/new,raw,xvda")],
    );
    h.go();
    // Out of xenstore, still in the stored config: allowed (stale entries are).
    h.expect("device-remove:removed");
    assert!(!exists(
        &host,
        &format!("/local/domain/0/backend/vbd/{d}/51712")
    ));
    h.go();
    h.run_to_end();
    let out = wait(remove, "remove");
    assert!(out.status.success(), "remove: {}", stderr(&out));
    let out = wait(add, "add");
    assert!(out.status.success(), "add: {}", stderr(&out));
    let disks = block_list(&host, "swap");
    assert_eq!(disks.len(), 1);
    assert_eq!(disks[0]["spec"], host.disk("/new,raw,xvda").as_str());
    assert_eq!(violations(&host, d), "[]");
}

/// Seeded random add/remove/destroy/create from several processes at once, with the invariant
/// checked (under the slow lock, across processes) after every operation.
#[test]
fn random_concurrent_device_work_keeps_the_invariant() {
    let seed = common::seed();
    let ops_per_worker: usize = std::env::var("RXEN_DEVICE_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    let workers: u64 = 4;
    let host = SimHost::new(4096, 512);
    let names = ["r0", "r1"];
    for n in names {
        host.create(n, 32, 32);
    }
    let host = &host;
    let results: Vec<(usize, usize, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                s.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(w));
                    let (mut ok, mut refused, mut problems) = (0, 0, Vec::new());
                    let mut why: std::collections::BTreeMap<&str, usize> = Default::default();
                    for i in 0..ops_per_worker {
                        let name = names[rng.usize(..names.len())];
                        let vdev = format!("xvd{}", ['a', 'b', 'c'][rng.usize(..3)]);
                        let nic = rng.u32(..3).to_string();
                        let args: Vec<String> = match rng.u32(..100) {
                            0..=39 => vec![
                                "block-attach".into(),
                                name.into(),
                                host.disk(&format!("/img/{w}-{i},raw,{vdev}")),
                            ],
                            40..=59 => vec!["block-detach".into(), name.into(), vdev],
                            60..=69 => {
                                vec!["network-attach".into(), name.into(), format!("devid={nic}")]
                            }
                            70..=79 => vec!["network-detach".into(), name.into(), nic],
                            // Secondary consoles 1..=3 (0 is the primary one).
                            80..=84 => vec![
                                "channel-attach".into(),
                                name.into(),
                                format!("name=ch{w}-{i}"),
                                "connection=pty".into(),
                                format!("devid={}", rng.u32(1..4)),
                            ],
                            85..=89 => vec![
                                "channel-detach".into(),
                                name.into(),
                                rng.u32(1..4).to_string(),
                            ],
                            90..=92 => vec!["destroy".into(), name.into()],
                            _ => {
                                let cfg = host.path().join(format!("{name}-{w}.cfg"));
                                std::fs::write(&cfg, format!("name = \"{name}\"\nmemory = 32\n"))
                                    .expect("cfg");
                                vec!["create".into(), "-q".into(), cfg.display().to_string()]
                            }
                        };
                        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
                        let out = wait(spawn(host, &argv), "rxl");
                        if out.status.success() {
                            ok += 1;
                        } else {
                            let e = stderr(&out);
                            // Every refusal is one of the clean answers a race may give.
                            let clean = [
                                "no such domain",
                                "already has",
                                "has no such device",
                                "already exists",
                                "still being created",
                            ];
                            if let Some(c) = clean.iter().find(|c| e.contains(*c)) {
                                refused += 1;
                                *why.entry(c).or_default() += 1;
                            } else {
                                problems.push(format!("{args:?}: {e}"));
                            }
                        }
                        // The checker, as its own process, under the domain's slow lock.
                        let v = violations_all(host);
                        if v != "[]" {
                            problems.push(format!("after {args:?}: {v}"));
                        }
                    }
                    eprintln!("worker {w}: {ok} succeeded, refused: {why:?}");
                    (ok, refused, problems)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .collect()
    });
    let ops: usize = results.iter().map(|r| r.0 + r.1).sum();
    let ok: usize = results.iter().map(|r| r.0).sum();
    let problems: Vec<&String> = results.iter().flat_map(|r| &r.2).collect();
    eprintln!(
        "seed {seed}: {ops} operations, {ok} succeeded, {} violations or errors",
        problems.len()
    );
    assert!(problems.is_empty(), "seed {seed}: {problems:#?}");
    // The run did real work, not just refusals (about a third succeed; a tenth is a floor no
    // seed should reach).
    assert!(
        ok > ops / 10,
        "seed {seed}: only {ok} of {ops} operations succeeded"
    );
}

#[test]
fn destroy_against_create_with_devices() {
    let host = SimHost::new(2048, 512);
    let hooks = Hooks::new(host.path());
    let cfg = host.path().join("c.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"c\"\nmemory = 32\ndisk = ['{}']\nvif = ['']\n",
            host.disk("/c,raw,xvda")
        ),
    )
    .expect("cfg");
    let cfg = cfg.display().to_string();

    // Destroy between the creation's xenstore entries and its stored config: the creation
    // finds the domain gone when it takes the slow lock, fails, and nothing is left.
    let (create, mut h) = hooked(&host, &hooks, &["create", "-q", &cfg], "create");
    let mut point = h.next();
    while point.as_deref() != Some("create:before-stored") {
        assert!(point.is_some(), "create finished early");
        h.go();
        point = h.next();
    }
    let d = host.domid("c").expect("named");
    host.ok(&["destroy", "c"]);
    h.go();
    h.run_to_end();
    fails_with(&wait(create, "create"), "no such domain");
    no_device_nodes(&host, d);
    assert_eq!(violations(&host, d), "[]");
    assert!(!host
        .path()
        .join(format!("domains/domain-{d}.json"))
        .exists());

    // Destroy while the creation creates its devices (holding the slow lock): the destroy
    // waits, the creation completes, then the destroy removes it all.
    let (create, mut h) = hooked(&host, &hooks, &["create", "-q", &cfg], "create");
    let mut point = h.next();
    while point.as_deref() != Some("create:device-written") {
        assert!(point.is_some(), "create finished early");
        h.go();
        point = h.next();
    }
    let d = host.domid("c").expect("named");
    let destroy = spawn(&host, &["destroy", "c"]);
    h.go();
    h.run_to_end();
    let out = wait(create, "create");
    assert!(out.status.success(), "create: {}", stderr(&out));
    let out = wait(destroy, "destroy");
    assert!(out.status.success(), "destroy: {}", stderr(&out));
    no_device_nodes(&host, d);
    assert_eq!(violations(&host, d), "[]");
    assert!(host.domid("c").is_none());
}

#[test]
fn vkbs_attach_at_creation_and_hot() {
    let host = SimHost::new(2048, 512);
    let cfg = host.path().join("k.cfg");
    std::fs::write(
        &cfg,
        "name = \"k\"\nmemory = 32\nvkb = ['backend-type=linux', '']\nvif = ['', 'devid=0']\n",
    )
    .expect("cfg");
    host.ok(&["create", "-q", &cfg.display().to_string()]);
    let d = host.domid("k").expect("created");
    let vkbs: Vec<serde_json::Value> =
        serde_json::from_str(&host.ok(&["vkb-list", "--json", "k"])).expect("json");
    let ids: Vec<u64> = vkbs
        .iter()
        .map(|v| v["devid"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, [0, 1]);
    assert!(vkbs.iter().all(|v| v["backend_state"] == 4), "{vkbs:?}");
    let be = host.ok(&[
        "xenstore-ls",
        &format!("/local/domain/0/backend/vkbd/{d}/0"),
    ]);
    assert!(be.contains("backend-type = \"linux\""), "{be}");
    // The vif given devid=0 keeps it; the other gets the next free one.
    let ids: Vec<u64> = network_list(&host, "k")
        .iter()
        .map(|v| v["devid"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, [0, 1]);

    host.ok(&["vkb-attach", "k", "unique-id=kbd2"]);
    host.ok(&["vkb-detach", "k", "0"]);
    let vkbs: Vec<serde_json::Value> =
        serde_json::from_str(&host.ok(&["vkb-list", "--json", "k"])).expect("json");
    let ids: Vec<u64> = vkbs
        .iter()
        .map(|v| v["devid"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, [1, 2]);
    let e = device_error(device::add_vkb(
        &host.lib(),
        &mut Locked::root(),
        d,
        &VifSpec::parse("devid=1").expect("spec"),
        &within(10),
    ));
    assert!(matches!(e, DeviceError::InUse { existing: None }), "{e:?}");
    assert_eq!(violations(&host, d), "[]");
    host.ok(&["destroy", "k"]);
    assert!(children_of(&host, &format!("/local/domain/0/backend/vkbd/{d}")).is_empty());
}

fn children_of(host: &SimHost, p: &str) -> Vec<String> {
    xs(host).directory(p).unwrap_or_default()
}

#[test]
fn device_work_on_different_domains_does_not_serialize() {
    let host = SimHost::new(2048, 512);
    let hooks = Hooks::new(host.path());
    host.create("one", 32, 32);
    let two = host.create("two", 32, 32);
    let (held, mut h) = hooked(
        &host,
        &hooks,
        &["block-attach", "one", &host.disk("/a,raw,xvda")],
        "held",
    );
    h.expect("device-add:slow-locked");
    h.go();
    h.expect("device-add:recorded");
    h.go();
    // Domain one's add holds its slow lock, waiting here; domain two's work runs to the end.
    h.expect("device-add:written");
    // Bounded: were device work serialized across domains, these would wait for "held",
    // which waits for us, and `wait` would call them stuck.
    for args in [
        &["block-attach", "two", &host.disk("/b,raw,xvda")][..],
        &["network-attach", "two"],
        &["block-detach", "two", "xvda"],
    ] {
        let out = wait(spawn(&host, args), "domain two's device work");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(network_list(&host, "two").len(), 1);
    h.go();
    h.run_to_end();
    let out = wait(held, "held");
    assert!(out.status.success(), "held: {}", stderr(&out));
    assert_eq!(block_list(&host, "one").len(), 1);
    assert_eq!(violations(&host, two), "[]");
}

/// Slow hotplug scripts (simulated: [`HOTPLUG_DELAY_PATH`]) delay each add by their run time,
/// and those of different domains run side by side: two adds to two domains at once take about
/// one script's time, not two.
#[test]
fn slow_hotplug_scripts_of_different_domains_overlap() {
    use toolstack::sim::backend::HOTPLUG_DELAY_PATH;
    // Long beside the per-process overhead (up to a second on a loaded machine), so that
    // side by side (about one delay) and one after the other (two) cannot be confused.
    const DELAY_MS: u64 = 2000;
    let host = SimHost::new(2048, 512);
    host.create("slow-a", 32, 32);
    host.create("slow-b", 32, 32);
    xs(&host)
        .write(HOTPLUG_DELAY_PATH, DELAY_MS.to_string())
        .expect("set the delay");
    let attach = |name: &str, vdev: &str| {
        host.command(&[
            "block-attach",
            name,
            &host.disk(&format!("/x-{vdev},raw,{vdev}")),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
    };
    let t = std::time::Instant::now();
    let out = wait(attach("slow-a", "xvda"), "attach");
    assert!(out.status.success(), "{}", stderr(&out));
    let one = t.elapsed();
    assert!(
        one >= std::time::Duration::from_millis(DELAY_MS),
        "an add took {one:?}, less than its {DELAY_MS} ms hotplug script"
    );
    let t = std::time::Instant::now();
    let (a, b) = (attach("slow-a", "xvdb"), attach("slow-b", "xvdb"));
    for out in [wait(a, "attach a"), wait(b, "attach b")] {
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let both = t.elapsed();
    assert!(
        both < std::time::Duration::from_millis(DELAY_MS * 2 - 100),
        "two adds to different domains took {both:?}: their {DELAY_MS} ms scripts ran one \
         after the other"
    );
    assert_eq!(block_list(&host, "slow-a").len(), 2);
    assert_eq!(block_list(&host, "slow-b").len(), 1);
    assert_eq!(violations_all(&host), "[]");
}
