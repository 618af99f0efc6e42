//! A default build of `rxl` (no `test-hooks` feature: what `cargo build`, `cargo build
//! --release` and `cargo install` make) ignores the test hooks' environment variables: told to
//! report to a hook socket and to skip the userdata lock, it connects to nothing, says nothing
//! about the lock, and waits for the lock like any other `rxl`.
//!
//! The other tests run an `rxl` built with the feature (the crate's dev-dependency on itself
//! turns it on), so this one builds a default one, with the same cargo, into a target directory
//! of its own below `CARGO_TARGET_TMPDIR`, where it is kept between runs.

mod common;

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{SimHost, STUCK};
use toolstack::hooks::{HOOK_SOCKET_ENV, SKIP_LOCK_ENV};
use toolstack::lock::file::FileLock;

const MIB: u64 = 1024;

/// Builds `rxl` with the crate's default features and returns its path.
fn default_rxl() -> PathBuf {
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("default-features");
    // spawns: cargo
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--locked",
            "--offline",
            "--message-format=json-render-diagnostics",
        ])
        .args(["-p", "toolstack", "--bin", "rxl"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo build of a default rxl failed: {}",
        common::stderr(&out)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "rxl")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo named no rxl executable in: {stdout}"))
}

/// The pids waiting in `flock` for the file with inode `ino` (the `->` lines of /proc/locks:
/// `N: -> FLOCK ADVISORY WRITE PID MAJ:MIN:INO START END`).
fn flock_waiters(ino: u64) -> Vec<u32> {
    let locks = std::fs::read_to_string("/proc/locks").expect("read /proc/locks");
    locks
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(1) != Some(&"->") || f.get(2) != Some(&"FLOCK") {
                return None;
            }
            let file_ino = f.get(6)?.rsplit(':').next()?.parse::<u64>().ok()?;
            (file_ino == ino).then(|| f.get(5)?.parse().ok()).flatten()
        })
        .collect()
}

/// Checks that nothing connected to the hook socket, then whether `child` has exited.
fn no_hook_then_status(hooks: &UnixListener, child: &mut Child) -> Option<ExitStatus> {
    match hooks.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Err(e) => panic!("hook socket: {e}"),
        Ok(_) => panic!("a default rxl connected to the hook socket (${HOOK_SOCKET_ENV})"),
    }
    child.try_wait().expect("try_wait")
}

#[test]
fn a_default_build_ignores_the_test_hook_variables() {
    let rxl = default_rxl();
    let host = SimHost::new(1024, 256);
    let d = host.create("plain", 64, 256);
    let uuid = host
        .list()
        .iter()
        .find(|r| r["domid"] == d)
        .and_then(|r| r["uuid"].as_str().map(str::to_owned))
        .expect("listed, with a uuid");
    let lock_path = host
        .path()
        .join(toolstack::sim::LIBXL_SUBDIR)
        .join(format!("userdata-l.{d}.{uuid}.domain-userdata-lock"));
    let hooks_path = host.path().join("hooks.sock");
    let hooks = UnixListener::bind(&hooks_path).expect("bind the hook socket");
    hooks.set_nonblocking(true).expect("non-blocking");

    // Hold the domain's userdata lock as another toolstack would, and ask for a mem-set with
    // both variables set.
    let held = FileLock::acquire(&lock_path).expect("take the domain's userdata lock");
    let ino = std::fs::metadata(&lock_path).expect("stat lock file").ino();
    let mut child = host
        .command_of(&rxl, &["mem-set", "plain", "128"])
        .env(HOOK_SOCKET_ENV, &hooks_path)
        .env(SKIP_LOCK_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the default rxl");
    let pid = child.id();

    // It must come to wait in flock on the lock we hold: a bound on failure, polled.
    let deadline = Instant::now() + STUCK;
    while !flock_waiters(ino).contains(&pid) {
        if let Some(status) = no_hook_then_status(&hooks, &mut child) {
            let out = child.wait_with_output().expect("output");
            panic!(
                "mem-set finished ({status}) while the test held the domain's userdata lock: it \
                 skipped the lock; stderr: {}",
                common::stderr(&out)
            );
        }
        assert!(
            Instant::now() < deadline,
            "mem-set neither waited for the userdata lock nor finished"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    held.release().expect("release the userdata lock");
    let deadline = Instant::now() + STUCK;
    while no_hook_then_status(&hooks, &mut child).is_none() {
        assert!(
            Instant::now() < deadline,
            "mem-set is stuck after the lock was released"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    let err = common::stderr(&out);
    assert!(out.status.success(), "mem-set failed: {err}");
    assert!(
        !err.contains(SKIP_LOCK_ENV) && !err.contains("skip the userdata lock"),
        "a default rxl warns that it skips the userdata lock: {err}"
    );
    assert_eq!(host.observe("plain").target_kib, 128 * MIB);
    // The stored config follows the target only under the userdata lock.
    let stored = host.path().join(format!("domains/domain-{d}.json"));
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stored).expect("stored config")).expect("JSON");
    assert_eq!(stored["config"]["memory_kib"], 128 * MIB);
}
