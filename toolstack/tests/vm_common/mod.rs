//! Helpers shared by the real-Xen toolstack tests (`vm_toolstack`, `vm_devices`).

#![allow(dead_code)] // each test binary uses its own subset

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

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

#[path = "../../../xenctrl/tests/vm_xl/mod.rs"]
pub mod vm_xl;

/// Run a dom0 tool and return its stdout, failing the test with its stderr if it fails.
///
/// A program killed by a signal is run once more, printed as `RETRY` with what dom0's kernel
/// logged about the fault: under QEMU TCG with XSAVE, PV Linux corrupted a process now and then
/// (Debian's xl aborted on a damaged heap, busybox in guests faulted on its TLS; see `vm_xl`
/// for the cause, now hidden, and why the retry stays), and the
/// commands run through here (list, destroy, mem-set, device changes) ask for a state, so
/// asking twice is the same as asking once. A second death, or any failing exit, fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let mut out = run_once(program, args);
    if let Some(signal) = out.status.signal() {
        println!(
            "RETRY {program} {args:?}: died of signal {signal}: {}; dom0's kernel: {:?}",
            String::from_utf8_lossy(&out.stderr).trim(),
            vm_xl::kernel_faults()
        );
        out = run_once(program, args);
    }
    assert!(
        out.status.success(),
        "{program} {args:?} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn run_once(program: &str, args: &[&str]) -> Output {
    // spawns: the program passed to run
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// A xenstore node's value, or `None` if it cannot be read.
pub fn xs_read(path: &str) -> Option<String> {
    let out = Command::new("xenstore-read").arg(path).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
