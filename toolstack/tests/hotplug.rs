//! The simulated host's hotplug path: its stub scripts run through the same runner as Xen's,
//! so a failing script, a missing disk target and the order (script after InitWait) are all
//! exercised in `cargo test`, with the errors as values.

mod common;

use common::{device_error, within, SimHost};
use toolstack::config::DiskSpec;
use toolstack::device::{self, DeviceError, DeviceKind, DeviceRef};
use toolstack::lock::Locked;

fn xs(host: &SimHost) -> xenstore::Client {
    xenstore::Client::open_path(host.path().join("xenstored.sock")).expect("xenstore")
}

#[test]
fn a_failing_hotplug_script_fails_the_attach_and_is_undone() {
    let host = SimHost::new(2048, 512);
    let d = host.create("hp", 32, 32);
    // A script of our own that fails, named by the disk spec (shell builtins only).
    let script = host.path().join("failing-block");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'no loop device left' >&2\nexit 3\n",
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let lib = host.lib();
    let mut root = Locked::root();
    let spec = DiskSpec::parse(&format!(
        "{},raw,xvda,rw,script={}",
        host.image("/hp.img"),
        script.display()
    ))
    .expect("spec");
    let e = device_error(device::add_disk(&lib, &mut root, d, &spec, &within(10)));
    assert!(
        matches!(&e, DeviceError::HotplugFailed { action: "add", status, output, .. }
            if status.code() == Some(3) && output == "no loop device left"),
        "{e:?}"
    );
    // Undone: nothing in xenstore, nothing recorded.
    let dev = DeviceRef {
        kind: DeviceKind::Vbd,
        domid: d,
        devid: 51712,
    };
    for p in [dev.frontend_path(), dev.backend_path(0), dev.libxl_path()] {
        assert!(!xs(&host).exists(&p).expect("exists"), "{p} left");
    }
    assert!(device::list(&lib, &mut root, d, DeviceKind::Vbd)
        .expect("list")
        .is_empty());
    assert!(device::check(&lib, &mut root, d).expect("check").is_empty());

    // The stock (stub) script attaches the same disk, through the same runner: it writes the
    // nodes Xen's block script writes.
    let ok = DiskSpec::parse(&host.disk("/hp.img,raw,xvda,rw")).expect("spec");
    device::add_disk(&lib, &mut root, d, &ok, &within(10)).expect("attach");
    let be = dev.backend_path(0);
    let read = |k: &str| xs(&host).read_string(&format!("{be}/{k}")).ok();
    assert_eq!(read("hotplug-status").as_deref(), Some("connected"));
    assert_eq!(read("physical-device").as_deref(), Some("7:0"));
    assert!(read("script").is_some_and(|s| s.ends_with("/scripts/block")));
}

#[test]
fn a_raw_disk_whose_target_does_not_exist_is_refused() {
    let host = SimHost::new(2048, 512);
    let d = host.create("nt", 32, 32);
    let lib = host.lib();
    let mut root = Locked::root();
    let missing = host.path().join("images/not-there.img");
    let spec = DiskSpec::parse(&format!("{},raw,xvda", missing.display())).expect("spec");
    let e = device_error(device::add_disk(&lib, &mut root, d, &spec, &within(10)));
    assert!(
        matches!(&e, DeviceError::TargetMissing { path, source }
            if *path == missing && source.kind() == std::io::ErrorKind::NotFound),
        "{e:?}"
    );
    // A directory is no disk either.
    let dir = DiskSpec::parse(&format!("{},raw,xvda", host.path().display())).expect("spec");
    let e = device_error(device::add_disk(&lib, &mut root, d, &dir, &within(10)));
    assert!(matches!(e, DeviceError::TargetNotUsable { .. }), "{e:?}");
    assert!(device::list(&lib, &mut root, d, DeviceKind::Vbd)
        .expect("list")
        .is_empty());
}

/// The simulated block script refuses to run before the backend reached InitWait, as a
/// toolstack that skipped the wait would run it: the stub is honest about the order.
#[test]
fn the_stub_script_refuses_to_run_before_initwait() {
    let host = SimHost::new(2048, 512);
    let d = host.create("early", 32, 32);
    let be = format!("/local/domain/0/backend/vbd/{d}/51712");
    // A backend stuck at Initialising, and the script run at it directly, as the runner would.
    xs(&host).write(&format!("{be}/state"), "1").expect("state");
    // spawns: own (the simulated host's block stub)
    let out = std::process::Command::new(host.path().join("scripts/block"))
        .arg("add")
        .env("XENBUS_PATH", format!("backend/vbd/{d}/51712"))
        .output()
        .expect("run the stub");
    assert_eq!(out.status.code(), Some(1));
    let err = xs(&host)
        .read_string(&format!("{be}/hotplug-error"))
        .expect("hotplug-error");
    assert!(err.contains("InitWait"), "{err}");
    assert_eq!(
        xs(&host)
            .read_string(&format!("{be}/hotplug-status"))
            .expect("status"),
        "error"
    );
}
