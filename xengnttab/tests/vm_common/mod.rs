//! Helpers of the real-Xen tests: dom0 tools, and a PV guest that runs a program of ours.

#![allow(dead_code)] // each test binary uses its own subset

pub mod protocol;

#[path = "../../../xenctrl/tests/vm_xl/mod.rs"]
mod vm_xl;

use std::process::Command;
use std::time::{Duration, Instant};

use xenstore::Client;

/// The guest initrd with the guest programs in /rxen/bin (scripts/xen-vm-test builds it).
pub const GUEST_INITRD: &str = "/boot/initrd-guest-rxen.cpio";
/// How long a guest may take from `xl create` to its program's first report: a PV guest boots
/// in 15-30 s under TCG, more while other work loads the machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// Fails unless run in the Xen test VM.
pub fn in_vm() {
    assert_eq!(
        std::env::var("RXEN_VM").as_deref(),
        Ok("1"),
        "these tests run only in the Xen test VM (scripts/xen-vm-test)"
    );
}

/// Runs a dom0 tool and returns its stdout, failing the test with its stderr if it fails.
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

/// A PV guest (Debian's kernel, the busybox initrd) whose init runs `/rxen/bin/PROGRAM ARGS`.
/// Destroyed when dropped, so a failed assertion does not leave it for the next test.
pub struct Guest {
    name: String,
    domid: u32,
    destroyed: bool,
}

impl Guest {
    /// Creates and starts the guest; returns once Xen has it, without waiting for its program.
    /// `args` must not contain commas or spaces (they travel on the kernel command line as
    /// `rxen.run=PROGRAM,ARG,...`).
    pub fn boot(name: &str, program: &str, args: &[&str]) -> Guest {
        for a in std::iter::once(&program).chain(args) {
            assert!(
                !a.is_empty() && !a.contains([',', ' ', '"']),
                "guest program argument {a:?} cannot go on the kernel command line"
            );
        }
        let run_arg = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(",");
        // A leftover from an earlier failed run would make `xl create` refuse the name.
        let _ = Command::new("xl").args(["destroy", name]).output();
        let _ = std::fs::remove_file(console_log(name));
        vm_xl::xl_create(&[
            "/etc/xen/rxen-guest.cfg",
            &format!("name=\"{name}\""),
            &format!("ramdisk=\"{GUEST_INITRD}\""),
            &format!("extra=\"console=hvc0 loglevel=4 rxen.run={run_arg}\""),
        ]);
        let domid = run("xl", &["domid", name])
            .trim()
            .parse()
            .expect("xl domid prints a number");
        Guest {
            name: name.to_owned(),
            domid,
            destroyed: false,
        }
    }

    /// The guest's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The guest's domid.
    pub fn domid(&self) -> u32 {
        self.domid
    }

    /// The absolute xenstore path of `key` in the guest program's directory.
    pub fn key(&self, key: &str) -> String {
        format!("/local/domain/{}/{}/{key}", self.domid, protocol::DIR)
    }

    /// What the guest printed on its console so far (xenconsoled's log).
    pub fn console(&self) -> String {
        std::fs::read_to_string(console_log(&self.name)).unwrap_or_default()
    }

    /// Waits until the guest program's `state` key says `want`, failing the test (with the
    /// guest's console) if the program reports an error or nothing comes within `timeout`.
    /// Waits on a xenstore watch, not by polling.
    pub fn wait_state(&self, xs: &Client, want: &str, timeout: Duration) {
        let path = self.key(protocol::STATE);
        let watch = xs.watch(&path).expect("watch the guest's state key");
        let deadline = Instant::now() + timeout;
        loop {
            // A watch fires once when set, then on every change.
            let now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            let event = watch.next_event_timeout(left).expect("xenstore watch");
            if let Ok(v) = xs.read_string(&path) {
                if v == want {
                    return;
                }
                if let Some(e) = v.strip_prefix(protocol::state::ERROR) {
                    panic!(
                        "guest {} reported: {e}\nconsole:\n{}",
                        self.name,
                        self.console()
                    );
                }
            }
            assert!(
                event.is_some() && Instant::now() < deadline,
                "guest {} did not reach state {want:?} in {timeout:?}; console:\n{}",
                self.name,
                self.console()
            );
        }
    }

    /// Reads a key of the guest program's directory.
    pub fn read(&self, xs: &Client, key: &str) -> String {
        let path = self.key(key);
        xs.read_string(&path)
            .unwrap_or_else(|e| panic!("read {path}: {e}\nconsole:\n{}", self.console()))
    }

    /// `xl destroy`, bounded in time: returns how long it took, failing the test if it does
    /// not return within `limit` (the child is killed then).
    pub fn destroy_within(&mut self, limit: Duration) -> Duration {
        let start = Instant::now();
        let mut child = Command::new("xl")
            .args(["destroy", &self.name])
            .spawn()
            .expect("spawn xl destroy");
        loop {
            if let Some(status) = child.try_wait().expect("wait for xl destroy") {
                assert!(status.success(), "xl destroy {}: {status}", self.name);
                self.destroyed = true;
                return start.elapsed();
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("xl destroy {} hung for more than {limit:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if !self.destroyed {
            let _ = Command::new("xl").args(["destroy", &self.name]).output();
        }
    }
}

/// xenconsoled's log of a guest's console (it runs with --log=guest).
pub fn console_log(name: &str) -> String {
    format!("/var/log/xen/console/guest-{name}.log")
}
