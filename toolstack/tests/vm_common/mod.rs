//! Helpers shared by the real-Xen toolstack tests (`vm_toolstack`, `vm_devices`).

#![allow(dead_code)] // each test binary uses its own subset

use std::process::Command;

use toolstack::{Host, HostKind, HostOptions};

/// The real host, with lock and config directories of the tests' own.
pub fn host() -> Host {
    let h = Host::open(&HostOptions {
        lock_dir: Some("/run/rxen-vm-test/locks".into()),
        config_dir: Some("/run/rxen-vm-test/domains".into()),
        ..HostOptions::default()
    })
    .expect("open the real host");
    assert_eq!(
        h.kind(),
        &HostKind::Xen,
        "the VM must have /dev/xen/privcmd"
    );
    h
}

/// Run a dom0 tool and return its stdout, failing the test with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    // spawns: the program passed to run
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// A xenstore node's value, or `None` if it cannot be read.
pub fn xs_read(path: &str) -> Option<String> {
    let out = Command::new("xenstore-read").arg(path).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
