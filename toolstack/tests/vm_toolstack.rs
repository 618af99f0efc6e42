//! The toolstack on real Xen (4.17 and 4.20), cross-checked with Xen's own `xl` and xenstore tools in the
//! same boot. Run inside the dom0 that `scripts/xen-vm-test` boots (feature `vm-tests`).
//!
//! The harness copies only test binaries into dom0, so these tests drive the library that
//! `rxl` is a thin shell over; timings are of the library calls (no process start-up), next to
//! `xl`'s whole-process timings.

mod vm_common;
use vm_common::{host, run, xs_read};

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use toolstack::config::DomainConfig;
use toolstack::lock::Locked;
use toolstack::memory::{self, Target};
use toolstack::{domain, Error};

/// `xl list`'s row for `name`: (id, mem MiB, state).
fn xl_row(name: &str) -> Option<(u16, u64, String)> {
    run("xl", &["list"]).lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&name)).then(|| {
            (
                f[1].parse().expect("id"),
                f[2].parse().expect("mem"),
                f[4].to_owned(),
            )
        })
    })
}

fn xl_info(field: &str) -> u64 {
    let info = run("xl", &["info"]);
    info.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == field).then(|| v.trim().parse().expect("number"))
        })
        .unwrap_or_else(|| panic!("xl info has no {field}"))
}

/// libxl's stored config of a domain.
fn libxl_json_path(domid: u16, uuid: Uuid) -> PathBuf {
    PathBuf::from(format!(
        "/var/lib/xen/userdata-d.{domid}.{}.libxl-json",
        uuid.hyphenated()
    ))
}

/// `xl list -l DOMID` (JSON): the domain's `config`.
fn xl_list_long(domid: u16) -> Value {
    let out = run("xl", &["list", "-l", &domid.to_string()]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let one = v
        .as_array()
        .and_then(|a| a.iter().find(|d| d["domid"] == domid))
        .unwrap_or_else(|| panic!("xl list -l {domid} does not show it: {out}"));
    one["config"].clone()
}

#[test]
fn create_mem_set_mem_max_pause_destroy_match_xl() {
    let host = host();
    let mut root = Locked::root();
    let free_before = xl_info("free_memory");
    let mut cfg = DomainConfig::new("rxl-vm-a");
    cfg.memory_kib = 64 * 1024;
    cfg.maxmem_kib = 128 * 1024;
    cfg.vcpus = 2;
    let created = toolstack::create::create(&host, &mut root, &cfg, &mut |_| {}).expect("create");
    let d = created.domid;

    // xl sees it, with its memory, paused; Xen's free memory went down by it; no claim is left.
    let (id, mem, state) = xl_row("rxl-vm-a").expect("xl list shows our domain");
    assert_eq!(id, d);
    assert_eq!(mem, 64, "xl list Mem");
    assert!(state.contains('p'), "state {state}");
    let free_after = xl_info("free_memory");
    assert!(
        free_before - free_after >= 64,
        "free_memory {free_before} -> {free_after}"
    );
    assert_eq!(xl_info("outstanding_claims"), 0);
    let base = format!("/local/domain/{d}");
    assert_eq!(
        xs_read(&format!("{base}/name")).as_deref(),
        Some("rxl-vm-a")
    );
    assert_eq!(
        xs_read(&format!("{base}/memory/target")).as_deref(),
        Some("65536")
    );
    assert_eq!(
        xs_read(&format!("{base}/memory/static-max")).as_deref(),
        Some("131072")
    );
    let vm = xs_read(&format!("{base}/vm")).expect("vm path");
    assert_eq!(xs_read(&format!("{vm}/name")).as_deref(), Some("rxl-vm-a"));
    // xl list -l reads the libxl-json userdata we wrote (under libxl's userdata lock, which
    // it takes too), with name and UUID from Xen and memory from xenstore.
    let userdata = libxl_json_path(d, created.uuid);
    assert!(userdata.exists(), "{} not written", userdata.display());
    let c = xl_list_long(d);
    assert_eq!(c["c_info"]["name"], "rxl-vm-a", "{c}");
    assert_eq!(c["c_info"]["uuid"], created.uuid.hyphenated().to_string());
    assert_eq!(c["c_info"]["type"], "pv");
    assert_eq!(c["b_info"]["max_vcpus"], 2);
    assert_eq!(c["b_info"]["max_memkb"], 128 * 1024);
    assert_eq!(c["b_info"]["target_memkb"], 64 * 1024);

    // mem-set: target and Xen's max_mem move together.
    let v = memory::set_memory_target(&host, &mut root, d, Target::Absolute(48 * 1024), true)
        .expect("mem-set");
    assert!(v.max_mem_matches_target());
    assert_eq!(
        xs_read(&format!("{base}/memory/target")).as_deref(),
        Some("49152")
    );
    let info = host.xc.domain_info(d).expect("info");
    assert_eq!(
        info.max_pages * 4,
        48 * 1024 + 1024,
        "Xen max_mem after mem-set"
    );

    // mem-max: static-max and max_mem; a target above it is refused.
    memory::set_max_mem(&host, &mut root, d, 96 * 1024).expect("mem-max");
    assert_eq!(
        xs_read(&format!("{base}/memory/static-max")).as_deref(),
        Some("98304")
    );
    assert_eq!(
        host.xc.domain_info(d).expect("info").max_pages * 4,
        97 * 1024
    );
    let e = memory::set_memory_target(&host, &mut root, d, Target::Absolute(100 * 1024), true)
        .expect_err("above static-max");
    assert!(matches!(e, Error::TargetAboveMax { .. }), "{e}");
    let e = memory::set_max_mem(&host, &mut root, d, 32 * 1024).expect_err("below target");
    assert!(matches!(e, Error::MaxBelowTarget { .. }), "{e}");
    // xl sees both.
    let c = xl_list_long(d);
    assert_eq!(c["b_info"]["target_memkb"], 48 * 1024, "{c}");
    assert_eq!(c["b_info"]["max_memkb"], 96 * 1024, "{c}");

    // pause nests: pause once more, unpause once, still paused as xl sees it.
    domain::pause(&host, d).expect("pause");
    domain::unpause(&host, d).expect("unpause");
    assert!(xl_row("rxl-vm-a").expect("listed").2.contains('p'));

    domain::destroy(&host, &mut root, d).expect("destroy");
    assert!(xl_row("rxl-vm-a").is_none(), "xl still lists it");
    assert_eq!(xs_read(&base), None, "{base} is left behind");
    assert_eq!(xs_read(&vm), None, "{vm} is left behind");
    assert!(!userdata.exists(), "{} is left behind", userdata.display());
    let again = domain::destroy(&host, &mut root, d).expect_err("second destroy");
    assert!(matches!(again, Error::NoSuchDomain(_)), "{again}");
}

#[test]
fn rxl_lists_and_destroys_a_domain_xl_created() {
    let host = host();
    let mut root = Locked::root();
    vm_common::vm_xl::xl_create(&["-p", "/etc/xen/rxen-guest.cfg", "name=\"xl-made\""]);
    let (id, _, _) = xl_row("xl-made").expect("xl created it");
    let ours = domain::list(&host).expect("list");
    let row = ours
        .iter()
        .find(|d| d.name == "xl-made")
        .expect("rxl list shows it");
    assert_eq!(row.domid, id);
    assert_eq!(row.target_kib, Some(128 * 1024), "xl.cfg's 128 MiB");
    assert!(row.state.contains('p'));
    assert_eq!(domain::resolve(&host, "xl-made").expect("by name"), id);
    // Our destroy removes libxl's userdata of it, as xl destroy would.
    let uuid = Uuid::from_bytes(host.xc.domain_info(id).expect("info").handle);
    let userdata = libxl_json_path(id, uuid);
    assert!(userdata.exists(), "xl wrote {}", userdata.display());
    domain::destroy(&host, &mut root, id).expect("our destroy of xl's domain");
    assert!(xl_row("xl-made").is_none());
    assert!(!userdata.exists(), "{} is left behind", userdata.display());
}

#[test]
fn a_creation_that_does_not_fit_fails_cleanly() {
    let host = host();
    let mut root = Locked::root();
    let before: Vec<u16> = domain::list(&host)
        .expect("list")
        .iter()
        .map(|d| d.domid)
        .collect();
    let free = xl_info("free_memory");
    let mut cfg = DomainConfig::new("rxl-vm-toobig");
    cfg.memory_kib = (free + 256) * 1024;
    cfg.maxmem_kib = cfg.memory_kib;
    let e = toolstack::create::create(&host, &mut root, &cfg, &mut |_| {}).expect_err("too big");
    match &e {
        Error::NotEnoughMemory {
            need_mib, free_mib, ..
        } => {
            assert_eq!(*need_mib, free + 256);
            assert!(*free_mib <= free, "{e}");
        }
        other => panic!("expected not enough memory, got {other}"),
    }
    println!("{e}");
    let after: Vec<u16> = domain::list(&host)
        .expect("list")
        .iter()
        .map(|d| d.domid)
        .collect();
    assert_eq!(before, after, "a domain was left behind");
    assert_eq!(xl_info("outstanding_claims"), 0);
}

#[test]
fn timings_against_xl() {
    let host = host();
    let mut root = Locked::root();
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed()
    };
    let mut xl_list = time(&mut || drop(run("xl", &["list"])));
    xl_list = xl_list.min(time(&mut || drop(run("xl", &["list"]))));
    let mut ours = time(&mut || drop(domain::list(&host).expect("list")));
    ours = ours.min(time(&mut || drop(domain::list(&host).expect("list"))));
    vm_common::vm_xl::xl_create(&["-p", "/etc/xen/rxen-guest.cfg", "name=\"t-xl\""]);
    vm_common::vm_xl::xl_create(&["-p", "/etc/xen/rxen-guest.cfg", "name=\"t-rxl\""]);
    let xl_destroy = time(&mut || drop(run("xl", &["destroy", "t-xl"])));
    let id = domain::resolve(&host, "t-rxl").expect("t-rxl");
    let our_destroy = time(&mut || domain::destroy(&host, &mut root, id).expect("destroy"));
    // The rxl program as xl is run: a process each time, found by name, with its defaults.
    let rxl = |args: &[&str]| {
        // spawns: own
        let out = std::process::Command::new(RXL).args(args).output();
        let out = out.unwrap_or_else(|e| panic!("cannot run {RXL}: {e}"));
        assert!(
            out.status.success(),
            "rxl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut rxl_list = time(&mut || drop(rxl(&["list"])));
    rxl_list = rxl_list.min(time(&mut || drop(rxl(&["list"]))));
    vm_common::vm_xl::xl_create(&["-p", "/etc/xen/rxen-guest.cfg", "name=\"t-rxl-process\""]);
    assert!(rxl(&["list"]).contains("t-rxl-process"));
    let rxl_destroy = time(&mut || drop(rxl(&["destroy", "t-rxl-process"])));
    assert!(!run("xl", &["list"]).contains("t-rxl-process"));
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    println!(
        "TIMING list: xl {:.1} ms, rxl {:.1} ms (processes), rxl library {:.1} ms; destroy of a \
         128 MiB paused domain: xl {:.1} ms, rxl {:.1} ms (processes), rxl library {:.1} ms",
        ms(xl_list),
        ms(rxl_list),
        ms(ours),
        ms(xl_destroy),
        ms(rxl_destroy),
        ms(our_destroy)
    );
}

/// The statically built `rxl`, shipped beside the tests by `scripts/xen-vm-test`.
const RXL: &str = "/rxen/bin/rxl";

/// Our userdata lock is libxl's: with the lock directory at its default (`/var/lib/xen`),
/// `xl mem-set` waits while we hold a domain's userdata lock, and goes on once we release it.
#[test]
fn xl_mem_set_waits_for_our_userdata_lock() {
    let host = toolstack::Host::open(&toolstack::HostOptions {
        config_dir: Some("/run/rxen-vm-test/domains".into()),
        ..toolstack::HostOptions::default()
    })
    .expect("open the real host");
    assert_eq!(host.locks.path(), std::path::Path::new("/var/lib/xen"));
    let mut root = Locked::root();
    let mut cfg = DomainConfig::new("rxl-vm-lock");
    cfg.memory_kib = 64 * 1024;
    cfg.maxmem_kib = 64 * 1024;
    let d = toolstack::create::create(&host, &mut root, &cfg, &mut |_| {})
        .expect("create")
        .domid;
    let target = format!("/local/domain/{d}/memory/target");
    {
        let exists = |x| host.domain_exists(x);
        let mut ctx = host.ctx.lock(&mut root);
        let mut t = ctx.token();
        let guard = host
            .locks
            .lock_userdata(&mut t, d, &exists)
            .expect("our userdata lock");
        let mut xl = Command::new("xl")
            .args(["mem-set", &d.to_string(), "32m"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("xl mem-set");
        // Long enough for xl mem-set to finish many times over under TCG (~0.2 s), were it not
        // waiting for the lock.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            assert!(
                xl.try_wait().expect("wait").is_none(),
                "xl mem-set finished while we held the userdata lock"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(xs_read(&target).as_deref(), Some("65536"));
        guard.release().expect("release");
        let out = xl.wait_with_output().expect("xl");
        assert!(
            out.status.success(),
            "xl mem-set: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(xs_read(&target).as_deref(), Some("32768"));
    domain::destroy(&host, &mut root, d).expect("destroy");
}
