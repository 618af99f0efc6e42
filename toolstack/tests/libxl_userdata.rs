//! libxl's stored domain config (`userdata-d.<domid>.<uuid>.libxl-json`) and libxl's lock file
//! names, on the simulated host, whose `DIR/xen-lib` stands in for `/var/lib/xen`: written at
//! creation, rewritten by device changes, left alone by memory changes, removed by destroy;
//! and the userdata lock held is libxl's file.

mod common;
mod kernel_fixture;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::{wait, Hooks, SimHost};
use serde_json::Value;
use toolstack::hooks::HOOK_SOCKET_ENV;

const MIB: u64 = 1024;

/// The domain's UUID as `rxl list --json` reports it (from Xen).
fn uuid_of(host: &SimHost, domid: u16) -> String {
    host.list()
        .iter()
        .find(|r| r["domid"] == domid)
        .and_then(|r| r["uuid"].as_str())
        .expect("listed, with a uuid")
        .to_owned()
}

fn xen_lib(host: &SimHost) -> PathBuf {
    host.path().join(toolstack::sim::LIBXL_SUBDIR)
}

fn libxl_json_path(host: &SimHost, domid: u16, uuid: &str) -> PathBuf {
    xen_lib(host).join(format!("userdata-d.{domid}.{uuid}.libxl-json"))
}

/// libxl's document: JSON followed by the NUL libxl stores with it.
fn read_libxl_json(host: &SimHost, domid: u16, uuid: &str) -> (Vec<u8>, Value) {
    let path = libxl_json_path(host, domid, uuid);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = bytes
        .strip_suffix(b"\0")
        .expect("libxl stores the terminating NUL");
    let v: Value = serde_json::from_slice(text).expect("libxl-json is JSON");
    (bytes, v)
}

/// Our own stored config, as `rxl list -l --json` would read it: the file itself.
fn our_stored(host: &SimHost, domid: u16) -> Value {
    let p = host.path().join(format!("domains/domain-{domid}.json"));
    serde_json::from_slice(&std::fs::read(&p).expect("stored config")).expect("JSON")
}

fn userdata_files(host: &SimHost, domid: u16) -> Vec<String> {
    let prefix = format!(".{domid}.");
    match std::fs::read_dir(xen_lib(host)) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| n.starts_with("userdata-") && n[10..].starts_with(&prefix))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn creation_writes_libxl_json_that_matches_the_config() {
    let host = SimHost::new(2048, 512);
    let cfg = host.path().join("full.cfg");
    let (full, cd) = (host.image("/images/full.img"), host.image("/images/cd.iso"));
    // A kernel and an initrd that load: creation builds the guest from them.
    let kernel = host.path().join("vmlinuz-full");
    let initrd = host.path().join("initrd-full");
    std::fs::write(&kernel, kernel_fixture::debian_like_bzimage("gzip").0).expect("kernel");
    std::fs::write(&initrd, kernel_fixture::pattern(5000, 7)).expect("initrd");
    let (kernel, initrd) = (kernel.display().to_string(), initrd.display().to_string());
    std::fs::write(
        &cfg,
        format!(
            "name = \"full\"\ntype = \"pv\"\nmemory = 96\nmaxmem = 160\nvcpus = 3\n\
             kernel = \"{kernel}\"\nramdisk = \"{initrd}\"\n\
             extra = \"console=hvc0 root=/dev/xvda\"\n\
             disk = [ '{full},raw,xvda,rw', 'vdev=xvdc,cdrom,target={cd}' ]\n\
             vif = [ 'bridge=xenbr0,mac=00:16:3E:01:02:03' ]\n\
             on_poweroff = \"preserve\"\non_reboot = \"rename-restart\"\n\
             on_crash = \"coredump-destroy\"\non_watchdog = \"restart\"\n"
        ),
    )
    .expect("cfg");
    host.ok(&["create", "-p", cfg.to_str().expect("path")]);
    let d = host.domid("full").expect("created");
    let uuid = uuid_of(&host, d);
    let path = libxl_json_path(&host, d, &uuid);
    let mode = std::fs::metadata(&path)
        .expect("libxl-json")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "libxl writes its userdata 0600");
    let (_, j) = read_libxl_json(&host, d, &uuid);

    let c = &j["c_info"];
    assert_eq!(c["type"], "pv");
    assert_eq!(c["name"], "full");
    assert_eq!(c["uuid"], uuid.as_str());
    let b = &j["b_info"];
    assert_eq!(b["max_vcpus"], 3);
    assert_eq!(b["avail_vcpus"], serde_json::json!([0, 1, 2]));
    assert_eq!(b["max_memkb"], 160 * MIB);
    assert_eq!(b["target_memkb"], 96 * MIB);
    assert_eq!(b["video_memkb"], 0);
    assert_eq!(b["kernel"], kernel.as_str());
    assert_eq!(b["ramdisk"], initrd.as_str());
    assert_eq!(b["cmdline"], "console=hvc0 root=/dev/xvda");
    assert!(b["type.pv"].is_object(), "the build type's union case: {b}");
    assert!(b.get("type.pvh").is_none());

    let disks = j["disks"].as_array().expect("disks");
    assert_eq!(disks.len(), 2);
    assert_eq!(disks[0]["pdev_path"], full.as_str());
    assert_eq!(disks[0]["vdev"], "xvda");
    assert_eq!(disks[0]["format"], "raw");
    assert_eq!(
        (&disks[0]["readwrite"], &disks[0]["is_cdrom"]),
        (&Value::from(1), &Value::from(0))
    );
    assert_eq!(disks[1]["pdev_path"], cd.as_str());
    assert_eq!(disks[1]["vdev"], "xvdc");
    assert_eq!(
        (&disks[1]["readwrite"], &disks[1]["is_cdrom"]),
        (&Value::from(0), &Value::from(1))
    );

    // The NIC as our stored config records it after creation chose its devid.
    let nics = j["nics"].as_array().expect("nics");
    assert_eq!(nics.len(), 1);
    assert_eq!(nics[0]["bridge"], "xenbr0");
    assert_eq!(nics[0]["mac"], "00:16:3e:01:02:03");
    let ours = our_stored(&host, d);
    let vif = ours["config"]["vifs"][0].as_str().expect("vif spec");
    let devid: u64 = vif
        .split(',')
        .find_map(|kv| kv.trim().strip_prefix("devid="))
        .expect("creation records the devid")
        .parse()
        .expect("number");
    assert_eq!(nics[0]["devid"], devid);

    assert_eq!(j["on_poweroff"], "preserve");
    assert_eq!(j["on_reboot"], "restart_rename");
    assert_eq!(j["on_crash"], "coredump_destroy");
    assert_eq!(j["on_watchdog"], "restart");
    host.ok(&["destroy", "full"]);
}

#[test]
fn memory_changes_leave_it_devices_rewrite_it_destroy_removes_it() {
    let host = SimHost::new(2048, 512);
    let d = host.create("mem", 128, 256);
    let uuid = uuid_of(&host, d);
    let (before, j) = read_libxl_json(&host, d, &uuid);
    assert_eq!(j["b_info"]["target_memkb"], 128 * MIB);
    assert_eq!(j["c_info"]["type"], "pv");

    // libxl_set_memory_target and libxl_domain_setmaxmem do not rewrite libxl-json; ours
    // records the new figures.
    host.ok(&["mem-set", "mem", "64m"]);
    host.ok(&["mem-max", "mem", "200m"]);
    let (after, _) = read_libxl_json(&host, d, &uuid);
    assert_eq!(before, after, "memory changes rewrote libxl-json");
    let ours = our_stored(&host, d);
    assert_eq!(ours["config"]["memory_kib"], 64 * MIB);
    assert_eq!(ours["config"]["maxmem_kib"], 200 * MIB);

    // Device changes do, as libxl's device add and remove do.
    host.ok(&[
        "block-attach",
        "mem",
        &host.disk("/images/mem.img,raw,xvdb,ro"),
    ]);
    host.ok(&["network-attach", "mem", "bridge=br1"]);
    let (_, j) = read_libxl_json(&host, d, &uuid);
    let disks = j["disks"].as_array().expect("disks");
    assert_eq!(disks.len(), 1, "{j}");
    assert_eq!(disks[0]["vdev"], "xvdb");
    assert_eq!(disks[0]["readwrite"], 0);
    let nics = j["nics"].as_array().expect("nics");
    assert_eq!(nics.len(), 1, "{j}");
    assert_eq!(nics[0]["bridge"], "br1");
    // The device rewrite carries the memory figures our config has now.
    assert_eq!(j["b_info"]["target_memkb"], 64 * MIB);
    host.ok(&["block-detach", "mem", "xvdb"]);
    let (_, j) = read_libxl_json(&host, d, &uuid);
    assert!(j.get("disks").is_none(), "detached disk still there: {j}");
    assert_eq!(j["nics"].as_array().map(Vec::len), Some(1));

    host.ok(&["destroy", "mem"]);
    assert!(!libxl_json_path(&host, d, &uuid).exists());
    // The monitor `rxl create` started holds its own lock file until it sees the domain gone
    // (on `@releaseDomain`, after destroy returned), and unlinks it as it ends: that one may
    // outlive destroy by a moment; nothing else may.
    let monitor_lock = format!(
        "userdata-l.{d}.{uuid}.{}",
        toolstack::lifecycle::monitor::MONITOR_LOCK_ID
    );
    let left: Vec<String> = userdata_files(&host, d)
        .into_iter()
        .filter(|n| *n != monitor_lock)
        .collect();
    assert_eq!(
        left,
        Vec::<String>::new(),
        "libxl userdata or lock files left behind"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while userdata_files(&host, d).contains(&monitor_lock) {
        assert!(
            std::time::Instant::now() < deadline,
            "the monitor's lock {monitor_lock} is still there 30 s after destroy"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn the_userdata_lock_held_is_libxls_file() {
    let host = SimHost::new(1024, 256);
    let d = host.create("locked", 64, 64);
    let uuid = uuid_of(&host, d);
    let lock = xen_lib(&host).join(format!("userdata-l.{d}.{uuid}.domain-userdata-lock"));
    let device_lock =
        xen_lib(&host).join(format!("userdata-l.{d}.{uuid}.libxl-device-changes-lock"));
    assert!(!lock.exists(), "no lock file while nobody holds it");

    let hooks = Hooks::new(host.path());
    let child = host
        .command(&["destroy", "locked"])
        .env(HOOK_SOCKET_ENV, &hooks.path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut c = hooks.accept("destroy");
    c.expect("destroy:locked");
    // Destroy holds both, under libxl's names: a libxl taking its userdata lock (flock of the
    // same path) would wait.
    for path in [&lock, &device_lock] {
        let f = std::fs::File::open(path)
            .unwrap_or_else(|e| panic!("{} while destroy holds it: {e}", path.display()));
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(_) => panic!("{} is not locked while destroy holds it", path.display()),
            Err((_, errno)) => assert_eq!(errno, nix::errno::Errno::EWOULDBLOCK),
        }
    }
    c.go();
    c.run_to_end();
    let out = wait(child, "destroy");
    assert!(out.status.success());
    assert!(
        !lock.exists() && !device_lock.exists(),
        "unlinked on release"
    );
}
