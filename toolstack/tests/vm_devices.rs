//! Device hotplug on real Xen (4.17 and 4.20), with Xen's own backends: a file-backed disk served by
//! blkback through a loop device that Xen's `block` hotplug script binds (run by this
//! toolstack, as libxl runs it), and a vif served by netback that `vif-bridge` adds to the
//! bridge `xenbr0`. Each is cross-checked in the same boot with `xl block-list` /
//! `xl network-list`, `xenstore-ls -p` (nodes and permissions), the loop devices in sysfs, the
//! bridge's ports and the stored config. Run inside the dom0 that `scripts/xen-vm-test` boots
//! (feature `vm-tests`).

mod vm_common;
use vm_common::{host, run, xs_read};

use std::path::Path;
use std::time::{Duration, Instant};

use toolstack::config::{DiskSpec, DomainConfig, VifSpec};
use toolstack::device::{self, DeviceError, DeviceKind, DeviceRef, Options};
use toolstack::lock::{level, DomId, Locked};
use toolstack::{create, domain, Error, Host};

/// Prints how long each step of a test took (`--nocapture` shows it).
struct Laps(Instant);

impl Laps {
    fn start() -> Laps {
        Laps(Instant::now())
    }

    fn lap(&mut self, what: &str) {
        println!(
            "TIMING {what}: {:.0} ms",
            self.0.elapsed().as_secs_f64() * 1e3
        );
        self.0 = Instant::now();
    }
}

/// A paused domain of ours, its kernel built but never run: its frontends never answer.
/// 128 MiB: Debian's kernel occupies guest memory up to about 74 MiB.
fn paused_domain(host: &Host, root: &mut Locked<'_, level::Unlocked>, name: &str) -> DomId {
    let mut config = DomainConfig::new(name);
    config.memory_kib = 128 * 1024;
    config.maxmem_kib = 128 * 1024;
    config.kernel = Some("/boot/vmlinuz".into());
    create::create(host, root, &config, &mut |_| {})
        .expect("create")
        .domid
}

/// `xenstore-ls -f -p DIR`: (path, value, permissions) of every node below `dir`.
fn xs_ls(dir: &str) -> Vec<(String, String, String)> {
    run("xenstore-ls", &["-f", "-p", dir])
        .lines()
        .filter_map(|l| {
            let (path, rest) = l.split_once(" = \"")?;
            let open = rest.rfind("  (")?;
            let perms = rest[open + 3..].strip_suffix(')')?;
            let value = rest[..open].trim_end_matches([' ', '.']);
            let value = value.strip_suffix('"').unwrap_or(value);
            Some((path.to_owned(), value.to_owned(), perms.to_owned()))
        })
        .collect()
}

/// The value of `key` in a `xs_ls` listing of `dir`.
fn value_in<'a>(ls: &'a [(String, String, String)], dir: &str, key: &str) -> Option<&'a str> {
    let path = format!("{dir}/{key}");
    ls.iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, v, _)| v.as_str())
}

/// Asserts that every node of a listing has permissions `want` (owner first, as xenstore-ls
/// prints them: `n5,r0` = owned by 5, readable by 0).
fn assert_perms(ls: &[(String, String, String)], want: &str, what: &str) {
    assert!(!ls.is_empty(), "{what}: no nodes");
    for (p, _, perms) in ls {
        assert_eq!(perms, want, "{what}: permissions of {p}");
    }
}

/// Polls `f` until it holds or `timeout` passes; whether it held.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The loop devices bound to `file` (from sysfs, as `losetup -a` reads it).
fn loops_of(file: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/block")
        .expect("/sys/block")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let backing = std::fs::read_to_string(e.path().join("loop/backing_file"));
        if backing.is_ok_and(|b| b.trim() == file) {
            out.push(name);
        }
    }
    out
}

/// `xl block-list D`'s rows, split in columns (header dropped).
fn xl_rows(cmd: &str, d: DomId) -> Vec<Vec<String>> {
    run("xl", &[cmd, &d.to_string()])
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .filter(|r: &Vec<String>| !r.is_empty())
        .collect()
}

/// The stored config of domain `d`, as the toolstack wrote it.
fn stored_json(host: &Host, d: DomId) -> String {
    std::fs::read_to_string(host.configs.document_path(d)).expect("stored config")
}

#[test]
fn attach_and_detach_a_file_backed_disk_to_a_paused_domain() {
    assert!(
        Path::new("/sys/bus/xen-backend/drivers/vbd").exists(),
        "xen-blkback is not loaded in dom0 (scripts/xen-vm-test MODULES)"
    );
    let img = "/root/rxen-vm-disk.img";
    std::fs::write(img, vec![0u8; 8 << 20]).expect("disk image");
    assert!(loops_of(img).is_empty(), "a loop device has {img} already");
    let host = host();
    let mut laps = Laps::start();
    let mut root = Locked::root();
    let d = paused_domain(&host, &mut root, "rxen-vm-disk");
    laps.lap("disk: create a paused domain");
    let spec = DiskSpec::parse(&format!("{img},raw,xvdb,rw")).expect("spec");
    let be = format!("/local/domain/0/backend/vbd/{d}/51728");
    let fe = format!("/local/domain/{d}/device/vbd/51728");
    let lx = format!("/libxl/{d}/device/vbd/51728");
    let dev = DeviceRef {
        kind: DeviceKind::Vbd,
        domid: d,
        devid: 51728,
    };

    let opts = Options {
        timeout: Duration::from_secs(60),
        ..Options::default()
    };
    let added = device::add_disk(&host, &mut root, d, &spec, &opts);
    laps.lap("disk: block-attach");
    if let Err(e) = &added {
        let dump = std::process::Command::new("xenstore-ls")
            .args(["-f", &format!("/local/domain/0/backend/vbd/{d}")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let log = std::fs::read_to_string("/var/log/xen/xen-hotplug.log").unwrap_or_default();
        let _ = domain::destroy(&host, &mut root, d);
        panic!("block-attach on real Xen failed: {e}\nbackend:\n{dump}\nhotplug log:\n{log}");
    }

    // blkback and the block script did their part: the backend waits for the (paused)
    // frontend in InitWait; the script bound a loop device to the file and reported it.
    let be_ls = xs_ls(&be);
    let fe_ls = xs_ls(&fe);
    let lx_ls = xs_ls(&lx);
    laps.lap("disk: xenstore-ls x3");
    let dump = || format!("backend:\n{be_ls:#?}\nfrontend:\n{fe_ls:#?}");
    assert_eq!(value_in(&be_ls, &be, "state"), Some("2"), "{}", dump());
    assert_eq!(value_in(&fe_ls, &fe, "state"), Some("1"), "{}", dump());
    assert_eq!(
        value_in(&be_ls, &be, "hotplug-status"),
        Some("connected"),
        "{}",
        dump()
    );
    assert_eq!(value_in(&be_ls, &be, "params"), Some(img));
    assert_eq!(value_in(&be_ls, &be, "mode"), Some("w"));
    assert_eq!(value_in(&be_ls, &be, "frontend"), Some(fe.as_str()));
    assert_eq!(value_in(&fe_ls, &fe, "backend"), Some(be.as_str()));
    assert_eq!(value_in(&fe_ls, &fe, "backend-id"), Some("0"));
    assert_eq!(value_in(&fe_ls, &fe, "virtual-device"), Some("51728"));
    let loops = loops_of(img);
    assert_eq!(loops.len(), 1, "loop devices bound to {img}: {loops:?}");
    let lo = &loops[0];
    assert_eq!(
        value_in(&be_ls, &be, "node"),
        Some(format!("/dev/{lo}").as_str())
    );
    assert_eq!(
        value_in(&be_ls, &be, "physical-device-path"),
        Some(format!("/dev/{lo}").as_str())
    );
    // physical-device is major:minor in hex (stat %t:%T), which blkback opened.
    let mm = std::fs::read_to_string(format!("/sys/block/{lo}/dev")).expect("dev");
    let (maj, min) = mm.trim().split_once(':').expect("major:minor");
    let hex = format!(
        "{:x}:{:x}",
        maj.parse::<u32>().expect("major"),
        min.parse::<u32>().expect("minor")
    );
    assert_eq!(value_in(&be_ls, &be, "physical-device"), Some(hex.as_str()));
    // Each end owns its directory and the other may read it; the record is dom0's alone.
    assert_perms(&be_ls, &format!("n0,r{d}"), "backend");
    assert_perms(&fe_ls, &format!("n{d},r0"), "frontend");
    assert_perms(&lx_ls, "n0", "toolstack record");

    // Xen's xl sees the disk as it sees its own: Vdev, BE, handle, state, evt-ch, ring-ref,
    // BE-path (the frontend's state; no rings from a paused guest).
    let rows = xl_rows("block-list", d);
    laps.lap("disk: xl block-list");
    let d_s = d.to_string();
    assert_eq!(
        rows,
        [vec![
            "51728",
            "0",
            d_s.as_str(),
            "1",
            "-1",
            "-1",
            be.as_str()
        ]],
        "xl block-list {d}"
    );
    // Our own list, the stored config and the invariant agree.
    let ours = device::list(&host, &mut root, d, DeviceKind::Vbd).expect("list");
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0].devid, 51728);
    assert_eq!(ours[0].backend_id, Some(0));
    assert_eq!(ours[0].backend_state, Some(2));
    assert_eq!(ours[0].frontend_state, Some(1));
    assert!(stored_json(&host, d).contains(img));
    assert_eq!(device::check(&host, &mut root, d).expect("check"), []);

    // Detach. A paused guest's frontend never answers, so blkback cannot close by itself:
    // detach waits for it (2 s here), then forces as `xl block-detach` does. The frontend goes
    // first, blkback lets the disk go and closes, then the block script's `remove` unbinds the
    // loop device.
    let short = Options {
        timeout: Duration::from_secs(2),
        ..Options::default()
    };
    let t = Instant::now();
    device::remove(&host, &mut root, dev, &short).expect("block-detach, forced after the wait");
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "detach forced before waiting for the backend ({:?})",
        t.elapsed()
    );
    assert!(
        t.elapsed() < Duration::from_secs(50),
        "blkback did not close after the frontend went ({:?})",
        t.elapsed()
    );
    laps.lap("disk: block-detach (waits, then forces)");
    assert!(xs_read(&be).is_none(), "{be} is left");
    assert!(xs_read(&fe).is_none(), "{fe} is left");
    assert!(xs_read(&lx).is_none(), "{lx} is left");
    // The block script's `remove` released the loop device.
    assert!(
        eventually(Duration::from_secs(10), || loops_of(img).is_empty()),
        "{lo} is still bound to {img}: {:?}",
        loops_of(img)
    );
    assert_eq!(xl_rows("block-list", d), Vec::<Vec<String>>::new());
    laps.lap("disk: loop released, xl block-list");
    assert!(device::list(&host, &mut root, d, DeviceKind::Vbd)
        .expect("list")
        .is_empty());
    assert!(
        !stored_json(&host, d).contains(img),
        "{}",
        stored_json(&host, d)
    );
    assert_eq!(device::check(&host, &mut root, d).expect("check"), []);
    domain::destroy(&host, &mut root, d).expect("destroy");
    laps.lap("disk: destroy");
    assert!(xs_read(&format!("/local/domain/0/backend/vbd/{d}")).is_none());
    std::fs::remove_file(img).expect("rm image");
}

#[test]
fn a_disk_the_block_script_refuses_is_undone_and_a_missing_one_refused() {
    let host = host();
    let mut laps = Laps::start();
    let mut root = Locked::root();
    let d = paused_domain(&host, &mut root, "rxen-vm-baddisk");
    laps.lap("bad disk: create");
    let opts = Options {
        timeout: Duration::from_secs(60),
        ..Options::default()
    };
    let nothing_left = |root: &mut Locked<'_, level::Unlocked>, what: &str| {
        assert!(
            xs_read(&format!("/local/domain/0/backend/vbd/{d}/51744")).is_none()
                && xs_read(&format!("/local/domain/{d}/device/vbd/51744")).is_none()
                && xs_read(&format!("/libxl/{d}/device/vbd/51744")).is_none(),
            "{what}: xenstore keeps the disk"
        );
        assert!(device::list(&host, root, d, DeviceKind::Vbd)
            .expect("list")
            .is_empty());
        assert_eq!(device::check(&host, root, d).expect("check"), []);
        assert!(xl_rows("block-list", d).is_empty(), "{what}: xl lists it");
    };

    // A path that does not exist: refused before anything is written, as xl refuses it.
    let missing = DiskSpec::parse("/root/no-such-disk.img,raw,xvdc,rw").expect("spec");
    let e = device::add_disk(&host, &mut root, d, &missing, &opts).expect_err("missing file");
    laps.lap("bad disk: missing file refused");
    assert!(
        matches!(&e, Error::Device { source: DeviceError::TargetMissing { path, .. }, .. }
            if path == Path::new("/root/no-such-disk.img")),
        "{e:?}"
    );
    nothing_left(&mut root, "missing file");

    // A read-only file asked for read-write: the block script refuses it (hotplug-status
    // busy); the add fails with the script's reason and undoes itself, loop device included.
    let ro = "/root/rxen-vm-ro.img";
    std::fs::write(ro, vec![0u8; 1 << 20]).expect("image");
    std::fs::set_permissions(ro, std::os::unix::fs::PermissionsExt::from_mode(0o444))
        .expect("chmod");
    let spec = DiskSpec::parse(&format!("{ro},raw,xvdc,rw")).expect("spec");
    let e = device::add_disk(&host, &mut root, d, &spec, &opts).expect_err("read-only file");
    laps.lap("bad disk: read-only refused by the script");
    assert!(
        matches!(&e, Error::Device {
            source: DeviceError::HotplugFailed { script, action: "add", output, .. }, ..
        } if script == Path::new("/etc/xen/scripts/block") && output.contains("is read-only")),
        "{e:?}"
    );
    nothing_left(&mut root, "read-only file");
    assert!(loops_of(ro).is_empty(), "{:?}", loops_of(ro));

    // The same file read-only is fine.
    let spec = DiskSpec::parse(&format!("{ro},raw,xvdc,ro")).expect("spec");
    device::add_disk(&host, &mut root, d, &spec, &opts).expect("read-only attach");
    laps.lap("bad disk: read-only attach");
    assert_eq!(
        xs_read(&format!("/local/domain/0/backend/vbd/{d}/51744/mode")).as_deref(),
        Some("r")
    );
    assert_eq!(loops_of(ro).len(), 1);
    // Destroy, not detach: the domain's devices go with it, and so does the loop device.
    domain::destroy(&host, &mut root, d).expect("destroy");
    laps.lap("bad disk: destroy");
    assert!(xs_read(&format!("/local/domain/0/backend/vbd/{d}")).is_none());
    assert!(
        eventually(Duration::from_secs(10), || loops_of(ro).is_empty()),
        "destroy left {:?} bound to {ro}",
        loops_of(ro)
    );
    std::fs::remove_file(ro).expect("rm image");
}

#[test]
fn attach_and_detach_a_bridged_vif_to_a_paused_domain() {
    assert!(
        Path::new("/sys/bus/xen-backend/drivers/vif").exists(),
        "xen-netback is not loaded in dom0 (scripts/xen-vm-test MODULES)"
    );
    assert!(
        Path::new("/sys/class/net/xenbr0/bridge").exists(),
        "no bridge xenbr0"
    );
    let host = host();
    let mut laps = Laps::start();
    let mut root = Locked::root();
    let d = paused_domain(&host, &mut root, "rxen-vm-vif");
    laps.lap("vif: create");
    let spec = VifSpec::parse("bridge=xenbr0,mac=00:16:3e:12:34:56").expect("spec");
    let opts = Options {
        timeout: Duration::from_secs(60),
        ..Options::default()
    };
    let dev = device::add_nic(&host, &mut root, d, &spec, &opts).expect("network-attach");
    laps.lap("vif: network-attach");
    assert_eq!(dev.devid, 0);
    let be = format!("/local/domain/0/backend/vif/{d}/0");
    let vif = format!("vif{d}.0");
    assert_eq!(xs_read(&format!("{be}/state")).as_deref(), Some("2"));
    assert_eq!(
        xs_read(&format!("{be}/hotplug-status")).as_deref(),
        Some("connected")
    );
    // netback made the interface and vif-bridge put it on the bridge, up.
    assert!(
        Path::new(&format!("/sys/class/net/xenbr0/brif/{vif}")).exists(),
        "{vif} is not a port of xenbr0"
    );
    let rows = xl_rows("network-list", d);
    laps.lap("vif: checks");
    assert_eq!(rows.len(), 1, "xl network-list {d}: {rows:?}");
    assert_eq!(rows[0][0], "0", "Idx");
    assert_eq!(rows[0][1], "0", "BE");
    assert_eq!(rows[0][2], "00:16:3e:12:34:56", "Mac Addr.");
    assert_eq!(device::check(&host, &mut root, d).expect("check"), []);

    let force = Options {
        timeout: Duration::from_secs(60),
        force: true,
        ..Options::default()
    };
    let t = Instant::now();
    device::remove(&host, &mut root, dev, &force).expect("network-detach --force");
    assert!(
        t.elapsed() < Duration::from_secs(50),
        "netback did not close after the frontend went ({:?})",
        t.elapsed()
    );
    laps.lap("vif: network-detach --force");
    assert!(xs_read(&be).is_none(), "{be} is left");
    assert!(
        eventually(Duration::from_secs(10), || {
            !Path::new(&format!("/sys/class/net/{vif}")).exists()
        }),
        "{vif} is left"
    );
    assert!(xl_rows("network-list", d).is_empty());
    assert!(device::list(&host, &mut root, d, DeviceKind::Vif)
        .expect("list")
        .is_empty());
    assert_eq!(device::check(&host, &mut root, d).expect("check"), []);
    domain::destroy(&host, &mut root, d).expect("destroy");
    laps.lap("vif: destroy");
}

/// A domain `xl` created, with a disk `xl block-attach` added (libxl's document describes it,
/// ours does not exist): our checker finds no violation there and our recovery leaves the disk
/// alone, since the domain and its devices are libxl's.
#[test]
fn a_disk_xl_attached_to_xls_domain_is_left_to_libxl() {
    let img = "/root/rxen-vm-xl-disk.img";
    std::fs::write(img, vec![0u8; 4 << 20]).expect("disk image");
    let host = host();
    let mut root = Locked::root();
    vm_common::vm_xl::xl_create(&["-p", "/etc/xen/rxen-guest.cfg", "name=\"xl-disk\""]);
    let d = toolstack::domain::resolve(&host, "xl-disk").expect("xl's domain");
    run(
        "xl",
        &["block-attach", "xl-disk", &format!("{img},raw,xvdc,rw")],
    );
    assert_eq!(xl_rows("block-list", d).len(), 1, "xl's disk");
    let be = format!("/local/domain/0/backend/vbd/{d}/51744");
    assert!(xs_ls(&be).iter().any(|(p, _, _)| p.ends_with("/params")));
    let found = device::check(&host, &mut root, d).expect("check");
    assert!(
        found.is_empty(),
        "xl's own disk judged by our config: {found:?}"
    );
    let done = device::recover(&host, &mut root, d).expect("recover");
    assert!(done.is_empty(), "recovery touched xl's domain: {done:?}");
    assert_eq!(
        xl_rows("block-list", d).len(),
        1,
        "xl's disk survives our recovery"
    );
    run("xl", &["destroy", "xl-disk"]);
    assert!(eventually(Duration::from_secs(20), || loops_of(img).is_empty()));
}
