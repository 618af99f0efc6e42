//! The simulated host across processes: every test drives separate `rxl` processes against one
//! state directory, as users and scripts would.

mod common;

use common::{stderr, wait, Hooks, SimHost};
use toolstack::hooks::{HOOK_SOCKET_ENV, SKIP_LOCK_ENV};

const MIB: u64 = 1024;

#[test]
fn successive_commands_see_one_host_and_destroy_leaves_nothing() {
    let host = SimHost::new(2048, 512);
    // Our xenstored announces the domain when the toolstack introduces it.
    let watcher = xenstore::Client::open_path(host.path().join("xenstored.sock")).expect("xs");
    let intro = watcher.watch("@introduceDomain").expect("watch");
    let release = watcher.watch("@releaseDomain").expect("watch");
    assert_eq!(
        intro.next_event().expect("initial").path,
        "@introduceDomain"
    );
    assert_eq!(
        release.next_event().expect("initial").path,
        "@releaseDomain"
    );

    let d = host.create("web", 256, 512);
    assert_eq!(
        intro
            .next_event_timeout(common::STUCK)
            .expect("watch")
            .expect("@introduceDomain fired")
            .path,
        "@introduceDomain"
    );
    let listed = host.list();
    let row = listed.iter().find(|r| r["domid"] == d).expect("listed");
    assert_eq!(row["name"], "web");
    assert_eq!(row["target_kib"], 256 * MIB);
    assert_eq!(row["static_max_kib"], 512 * MIB);
    assert_eq!(row["max_mem_kib"], 257 * MIB);
    assert_eq!(row["tot_pages"], 256 * 256);
    assert_eq!(row["state"], "--p---");
    // The guest owns its subtree's writable nodes; dom0 owns the rest, readable by the guest.
    let perms = host.ok(&["xenstore-ls", "-p", &format!("/local/domain/{d}")]);
    assert!(
        perms.contains(&format!("shutdown = \"\"  (n{d})")),
        "{perms}"
    );
    assert!(
        perms.contains(&format!("target = \"262144\"  (n0, r{d})")),
        "{perms}"
    );
    assert!(perms.contains(&format!("data = \"\"  (n{d})")), "{perms}");
    let uuid = row["uuid"].as_str().expect("uuid").to_owned();
    assert!(host
        .xenstore_ls(&format!("/vm/{uuid}"))
        .contains("name = \"web\""));

    host.ok(&["mem-set", "web", "128m"]);
    let v = host.observe("web");
    assert_eq!((v.target_kib, v.max_mem_kib), (128 * MIB, 129 * MIB));

    host.ok(&["destroy", "web"]);
    assert_eq!(
        release
            .next_event_timeout(common::STUCK)
            .expect("watch")
            .expect("@releaseDomain fired")
            .path,
        "@releaseDomain"
    );
    assert!(host.domid("web").is_none());
    assert!(!host.xenstore_ls("/local/domain").contains("web"));
    assert!(
        host.rxl(&["xenstore-ls", &format!("/vm/{uuid}")])
            .status
            .code()
            == Some(1)
    );
    assert!(!host
        .path()
        .join(format!("domains/domain-{d}.json"))
        .exists());
    let again = host.rxl(&["destroy", &d.to_string()]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains(&format!("no such domain: {d}")),
        "{}",
        stderr(&again)
    );
    let info = host.ok(&["info"]);
    assert!(info.contains("free_memory            : 1536"), "{info}");
    assert!(info.contains("outstanding_claims     : 0"), "{info}");
}

#[test]
fn errors_name_the_domain_and_say_what_to_do() {
    let host = SimHost::new(1024, 256);
    host.create("small", 64, 128);
    let e = host.rxl(&["mem-set", "small", "200m"]);
    assert!(!e.status.success());
    assert!(
        stderr(&e).contains("(small): the memory target 204800 KiB is above the domain's maximum"),
        "{}",
        stderr(&e)
    );
    let e = host.rxl(&["mem-max", "small", "32m"]);
    assert!(
        stderr(&e).contains("below the current memory target"),
        "{}",
        stderr(&e)
    );
    let e = host.rxl(&["mem-set", "0", "64m"]);
    assert!(
        stderr(&e).contains("below dom0's minimum"),
        "{}",
        stderr(&e)
    );
    let big = host.cfg("big", 900, 900);
    let e = host.rxl(&["create", "-p", big.to_str().expect("path")]);
    assert!(
        stderr(&e).contains("(big): not enough free memory: need 900 MiB, 704 MiB free"),
        "{}",
        stderr(&e)
    );
    let dup = host.rxl(&[
        "create",
        "-p",
        host.cfg("small", 16, 16).to_str().expect("p"),
    ]);
    assert!(
        stderr(&dup).contains("a domain named \"small\" already exists"),
        "{}",
        stderr(&dup)
    );
    let e = host.rxl(&["pause", "nosuch"]);
    assert!(
        stderr(&e).contains("no such domain: nosuch"),
        "{}",
        stderr(&e)
    );
    assert_eq!(host.list().len(), 2, "only dom0 and small");
}

/// A failure late in the build (the step before the stored config) rolls everything back.
#[test]
fn a_failed_creation_leaves_nothing_behind() {
    let host = SimHost::new(1024, 256);
    let before = host.ok(&["info"]);
    let hooks = Hooks::new(host.path());
    let cfg = host.cfg("doomed", 128, 128);
    let child = host
        .command(&["create", "-p", cfg.to_str().expect("p")])
        .env(HOOK_SOCKET_ENV, &hooks.path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut c = hooks.accept("create");
    for point in [
        "create:intent-recorded",
        "create:before-claim",
        "create:claimed",
        "create:populated",
    ] {
        c.expect(point);
        c.go();
    }
    c.expect("create:before-stored");
    // While it is stopped here, the domain exists, with its memory and xenstore entries.
    let d = host.domid("doomed").expect("half-built domain is visible");
    assert!(host
        .xenstore_ls(&format!("/local/domain/{d}"))
        .contains("target"));
    c.fail();
    let out = wait(child, "create");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("test hook"), "{}", stderr(&out));
    assert!(host.domid("doomed").is_none());
    assert!(
        host.rxl(&["xenstore-ls", &format!("/local/domain/{d}")])
            .status
            .code()
            == Some(1)
    );
    assert!(!host
        .path()
        .join(format!("domains/domain-{d}.json"))
        .exists());
    assert_eq!(
        host.ok(&["info"])
            .lines()
            .filter(|l| l.contains("memory") || l.contains("claims"))
            .collect::<Vec<_>>(),
        before
            .lines()
            .filter(|l| l.contains("memory") || l.contains("claims"))
            .collect::<Vec<_>>()
    );
}

/// (b) Concurrent creations asking for twice the free memory: exactly what fits is admitted,
/// each loser fails cleanly, and nothing is left behind.
#[test]
fn concurrent_creates_never_overcommit() {
    // 768 MiB free; 8 × 192 MiB asked.
    let host = SimHost::new(1024, 256);
    let children: Vec<_> = (0..8)
        .map(|i| {
            let cfg = host.cfg(&format!("c{i}"), 192, 192);
            host.command(&["create", "-p", cfg.to_str().expect("p")])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let outs: Vec<_> = children.into_iter().map(|c| wait(c, "create")).collect();
    let winners = outs.iter().filter(|o| o.status.success()).count();
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert!(
            stderr(o).contains("not enough free memory: need 192 MiB"),
            "a loser failed otherwise: {}",
            stderr(o)
        );
    }
    assert_eq!(winners, 4, "768 MiB holds exactly four 192 MiB domains");
    let list = host.list();
    assert_eq!(list.len(), 5, "dom0 and the winners only: {list:?}");
    for d in list.iter().skip(1) {
        assert_eq!(d["tot_pages"], 192 * 256);
    }
    let info = host.ok(&["info"]);
    assert!(info.contains("free_memory            : 0\n"), "{info}");
    assert!(info.contains("outstanding_claims     : 0\n"), "{info}");
    let stored = std::fs::read_dir(host.path().join("domains"))
        .expect("domains dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json"))
        })
        .count();
    assert_eq!(stored, 4, "one stored config per winner");
    let xs = host.ok(&["xenstore-ls", "/local/domain"]);
    assert_eq!(
        xs.lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
            .count(),
        5
    );
}

/// (b) One creation's build does not wait on another's: with a build stopped mid-way (claim
/// staked, memory populated), another creation runs start to finish.
#[test]
fn a_build_never_waits_for_another_build() {
    let host = SimHost::new(1024, 256);
    let hooks = Hooks::new(host.path());
    let slow_cfg = host.cfg("slow", 128, 128);
    let slow = host
        .command(&["create", "-p", slow_cfg.to_str().expect("p")])
        .env(HOOK_SOCKET_ENV, &hooks.path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut s = hooks.accept("slow create");
    s.expect("create:intent-recorded");
    s.go();
    s.expect("create:before-claim");
    s.go();
    s.expect("create:claimed");
    s.go();
    s.expect("create:populated");
    // Stopped mid-build. A whole other creation, and a mem-set, complete meanwhile.
    let fast = host.create("fast", 128, 256);
    host.ok(&["mem-set", "fast", "64"]);
    assert_eq!(host.list().len(), 3, "dom0, fast and the half-built one");
    s.go();
    s.run_to_end();
    let out = wait(slow, "slow create");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(host.domid("slow").is_some() && host.domid("fast") == Some(fast));
}

fn mem_set_loop(host: &SimHost, domain: &str, values_mib: &[u64], op: &str) -> std::process::Child {
    let mut script = String::from("set -u\n");
    for v in values_mib {
        script.push_str(&format!(
            "\"$RXL\" --sim-dir \"$DIR\" {op} {domain} {v}m 2>>\"$ERRS\" || true\n"
        ));
    }
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("RXL", common::RXL)
        .env("DIR", host.path())
        .env("RXEN_SIM_DAEMON_EXE", common::RXL)
        .env("ERRS", host.path().join(format!("errors-{op}")))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn loop")
}

fn observe_loop(host: &SimHost, domain: &str, n: usize) -> std::process::Child {
    // Shell builtins only (scripts/check-tools does not read `sh -c` scripts).
    let script = format!(
        "i=0; while [ $i -lt {n} ]; do \"$RXL\" --sim-dir \"$DIR\" mem-check {domain} || exit 1; i=$((i+1)); done"
    );
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("RXL", common::RXL)
        .env("DIR", host.path())
        .env("RXEN_SIM_DAEMON_EXE", common::RXL)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn observer")
}

/// (a) Many processes set one domain's target at once; every observation under the lock, and
/// the end state, have max_mem = target + videoram + 1 MiB.
#[test]
fn concurrent_mem_set_keeps_max_mem_with_target() {
    let host = SimHost::new(1024, 256);
    host.create("m", 64, 512);
    let mut rng = fastrand::Rng::with_seed(common::seed());
    let plans: Vec<Vec<u64>> = (0..6)
        .map(|_| (0..8).map(|_| rng.u64(16..=512)).collect())
        .collect();
    let setters: Vec<_> = plans
        .iter()
        .map(|p| mem_set_loop(&host, "m", p, "mem-set"))
        .collect();
    let observer = observe_loop(&host, "m", 30);
    for s in setters {
        let out = wait(s, "mem-set loop");
        assert!(out.status.success());
    }
    let obs = wait(observer, "observer");
    assert!(obs.status.success(), "{}", stderr(&obs));
    let lines = String::from_utf8(obs.stdout).expect("utf-8");
    assert_eq!(lines.lines().count(), 30);
    for l in lines.lines() {
        let v = common::parse_view(l);
        assert!(v.max_mem_matches_target(), "observed under the lock: {v:?}");
    }
    let errs = std::fs::read_to_string(host.path().join("errors-mem-set")).unwrap_or_default();
    assert!(
        errs.is_empty(),
        "every target was within static-max: {errs}"
    );
    let end = host.observe("m");
    assert!(end.max_mem_matches_target(), "{end:?}");
    assert!(plans.iter().flatten().any(|&v| v * MIB == end.target_kib));
}

/// (a) mem-set and mem-max mixed: target never exceeds static-max, and Xen's max_mem is what
/// the last operation under the lock set.
#[test]
fn concurrent_mem_set_and_mem_max_keep_target_within_static_max() {
    let host = SimHost::new(1024, 256);
    host.create("x", 64, 256);
    let mut rng = fastrand::Rng::with_seed(common::seed());
    let mut loops = Vec::new();
    for _ in 0..3 {
        let v: Vec<u64> = (0..8).map(|_| rng.u64(32..=384)).collect();
        loops.push(mem_set_loop(&host, "x", &v, "mem-set"));
        let v: Vec<u64> = (0..8).map(|_| rng.u64(32..=512)).collect();
        loops.push(mem_set_loop(&host, "x", &v, "mem-max"));
    }
    let observer = observe_loop(&host, "x", 30);
    for l in loops {
        assert!(wait(l, "loop").status.success());
    }
    let obs = wait(observer, "observer");
    assert!(obs.status.success(), "{}", stderr(&obs));
    let mut views: Vec<_> = String::from_utf8(obs.stdout)
        .expect("utf-8")
        .lines()
        .map(common::parse_view)
        .collect();
    views.push(host.observe("x"));
    for v in &views {
        assert!(v.target_kib <= v.static_max_kib, "{v:?}");
        assert!(
            v.max_mem_matches_target() || v.max_mem_kib == v.static_max_kib + MIB,
            "max_mem is neither what mem-set nor what mem-max sets: {v:?}"
        );
    }
    // Refusals are the two documented ones, nothing else.
    for op in ["mem-set", "mem-max"] {
        let errs =
            std::fs::read_to_string(host.path().join(format!("errors-{op}"))).unwrap_or_default();
        for l in errs.lines() {
            assert!(
                l.contains("above the domain's maximum") || l.contains("below the current memory"),
                "unexpected failure: {l}"
            );
        }
    }
}

/// (c) Seed 004's interleaving, forced with hooks. Two mem-sets (target 320 MiB and 192 MiB):
/// A starts its transaction; B starts its; A sets max_mem; B sets max_mem; A commits; B's
/// commit conflicts and retries. Returns what an observer under the lock saw between A's
/// commit and B's retry, and at the end.
fn seed_004(skip_lock: bool) -> (toolstack::memory::MemoryView, toolstack::memory::MemoryView) {
    let host = SimHost::new(1024, 256);
    host.create("seed", 64, 512);
    let hooks = Hooks::new(host.path());
    let spawn = |mib: &str| {
        let mut c = host.command(&["mem-set", "seed", mib]);
        c.env(HOOK_SOCKET_ENV, &hooks.path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if skip_lock {
            c.env(SKIP_LOCK_ENV, "1");
        }
        c.spawn().expect("spawn mem-set")
    };
    let a_child = spawn("320");
    let mut a = hooks.accept("A");
    if !skip_lock {
        a.expect("lock-opened");
        a.go();
    }
    a.expect("mem-set:before-max-mem"); // A: in its transaction
    let b_child = spawn("192");
    let mut b = hooks.accept("B");
    if skip_lock {
        b.expect("mem-set:before-max-mem"); // B: in its transaction too
    } else {
        b.expect("lock-opened"); // B: about to block on the lock A holds
        b.go();
    }
    a.go();
    a.expect("mem-set:before-commit"); // A set max_mem = 321 MiB
    if skip_lock {
        b.go();
        b.expect("mem-set:before-commit"); // B set max_mem = 193 MiB
    }
    a.go();
    let out = wait(a_child, "A");
    assert!(out.status.success(), "A: {}", stderr(&out));
    // Observe under the lock. Without the lock, B is stopped before its commit; with it, B
    // waits for the lock and runs whenever it gets it, so serve its hooks meanwhile.
    let observer = host
        .command(&["mem-check", "seed"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("observer");
    if !skip_lock {
        b.run_to_end();
    }
    let obs = wait(observer, "observer");
    assert!(obs.status.success(), "{}", stderr(&obs));
    let between = common::parse_view(&String::from_utf8_lossy(&obs.stdout));
    if skip_lock {
        b.go(); // commit (it conflicts), then retry
        b.run_to_end();
    }
    let out = wait(b_child, "B");
    assert!(out.status.success(), "B: {}", stderr(&out));
    (between, host.observe("seed"))
}

#[test]
fn seed_004_diverges_without_the_userdata_lock() {
    let (between, end) = seed_004(true);
    eprintln!("without the lock: between = {between:?}, end = {end:?}");
    assert_eq!(between.target_kib, 320 * MIB, "A's target committed");
    assert_eq!(between.max_mem_kib, 193 * MIB, "B's max_mem won");
    assert!(!between.max_mem_matches_target(), "the seed's divergence");
    // B's retry repairs it eventually, as the seed says.
    assert!(end.max_mem_matches_target());
    assert_eq!(end.target_kib, 192 * MIB);
}

#[test]
fn seed_004_holds_with_the_userdata_lock() {
    let (between, end) = seed_004(false);
    eprintln!("with the lock: between = {between:?}, end = {end:?}");
    assert!(between.max_mem_matches_target(), "{between:?}");
    assert!(end.max_mem_matches_target(), "{end:?}");
    assert_eq!(end.target_kib, 192 * MIB, "B ran last");
}
