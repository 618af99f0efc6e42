//! Interop: Debian's `xenstore-utils` (built on C libxenstore) against our xenstored, with the
//! results checked against what the tools document and against our own client.
//!
//! These tests require the tools (`apt-get install xenstore-utils`); they fail, not skip,
//! without them.

mod common;
mod sched;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use xenstore::perms::{Access, Permissions};
use xenstore::server::{RunningServer, Server};
use xenstore::Client;

struct Fixture {
    _server: RunningServer,
    socket: PathBuf,
    client: Client,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(dir) = self.socket.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn fixture(tag: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("rxen-xsu-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("socket");
    let server = Server::new()
        .unwrap()
        .listen(&socket)
        .unwrap()
        .spawn()
        .unwrap();
    let client = Client::open_path(&socket).unwrap();
    Fixture {
        _server: server,
        socket,
        client,
    }
}

fn tool(socket: &Path, name: &str, args: &[&str]) -> Output {
    // spawns: the program passed to tool, ok
    let out = Command::new(name)
        .args(args)
        .env("XENSTORED_PATH", socket)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name} (apt-get install xenstore-utils): {e}"));
    out
}

fn ok(socket: &Path, name: &str, args: &[&str]) -> String {
    let out = tool(socket, name, args);
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn write_read_exists_list_rm() {
    let f = fixture("basic");
    let s = &f.socket;
    ok(s, "xenstore-write", &["/vm/a", "one", "/vm/b", "two words"]);
    assert_eq!(f.client.read("/vm/a").unwrap(), b"one");
    assert_eq!(f.client.read("/vm/b").unwrap(), b"two words");
    assert_eq!(ok(s, "xenstore-read", &["/vm/a"]), "one\n");
    assert_eq!(
        ok(s, "xenstore-read", &["-p", "/vm/a", "/vm/b"]),
        "/vm/a: one\n/vm/b: two words\n"
    );
    assert_eq!(ok(s, "xenstore-list", &["/vm"]), "a\nb\n");
    assert_eq!(ok(s, "xenstore-list", &["-p", "/vm"]), "/vm/a\n/vm/b\n");
    assert!(tool(s, "xenstore-exists", &["/vm/a"]).status.success());
    assert_eq!(
        tool(s, "xenstore-exists", &["/vm/zz"]).status.code(),
        Some(1)
    );
    let missing = tool(s, "xenstore-read", &["/vm/zz"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("couldn't read path /vm/zz"));

    ok(s, "xenstore-rm", &["/vm/a"]);
    assert!(!f.client.exists("/vm/a").unwrap());
    // -t removes parents left empty and valueless.
    f.client.write("/tidy/x/y/z", "").unwrap();
    f.client.write("/tidy/keep", "").unwrap();
    ok(s, "xenstore-rm", &["-t", "/tidy/x/y/z"]);
    assert!(!f.client.exists("/tidy/x").unwrap());
    assert_eq!(f.client.directory("/tidy").unwrap(), ["keep"]);
    // Invalid paths are refused by the daemon.
    assert_eq!(
        tool(s, "xenstore-write", &["/bad path", "v"]).status.code(),
        Some(1)
    );
}

#[test]
fn values_are_escaped_as_documented() {
    let f = fixture("escape");
    let s = &f.socket;
    f.client.write("/e/ctl", [1u8, b'x', b'\n', b'\\']).unwrap();
    assert_eq!(ok(s, "xenstore-read", &["/e/ctl"]), "\\001x\\n\\\\\n");
    ok(s, "xenstore-write", &["/e/in", "a\\tb\\x41"]);
    assert_eq!(f.client.read("/e/in").unwrap(), b"a\tbA");
    ok(s, "xenstore-write", &["-R", "/e/raw", "a\\tb"]);
    assert_eq!(f.client.read("/e/raw").unwrap(), b"a\\tb");
}

#[test]
fn ls_shows_tree_values_and_permissions() {
    let f = fixture("ls");
    let s = &f.socket;
    f.client.write("/ls/a", "1").unwrap();
    f.client.write("/ls/a/deep", "2").unwrap();
    f.client.write("/ls/b", "").unwrap();
    assert_eq!(
        ok(s, "xenstore-ls", &["/ls"]),
        "a = \"1\"\n deep = \"2\"\nb = \"\"\n"
    );
    assert_eq!(
        ok(s, "xenstore-ls", &["-f", "/ls"]),
        "/ls/a = \"1\"\n/ls/a/deep = \"2\"\n/ls/b = \"\"\n"
    );
    f.client
        .set_perms(
            "/ls/b",
            &Permissions::new(3, Access::READ).with(4, Access::BOTH),
        )
        .unwrap();
    let long = ok(s, "xenstore-ls", &["-p", "/ls"]);
    let lines: Vec<&str> = long.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0].starts_with("a = \"1\"") && lines[0].ends_with("(n0)"),
        "{long}"
    );
    assert!(
        lines[2].starts_with("b = \"\"") && lines[2].ends_with("(r3,b4)"),
        "{long}"
    );
    // The whole tree from the root includes the daemon's own nodes.
    let all = ok(s, "xenstore-ls", &[]);
    assert!(all.starts_with("tool = \"\"\n xenstored = \"\"\n"), "{all}");
}

#[test]
fn chmod_sets_permissions_recursively_and_upwards() {
    let f = fixture("chmod");
    let s = &f.socket;
    f.client.write("/c/d/e", "").unwrap();
    ok(s, "xenstore-chmod", &["/c/d", "n0", "r7"]);
    assert_eq!(f.client.get_perms("/c/d").unwrap().to_string(), "n0,r7");
    assert_eq!(
        f.client.get_perms("/c/d/e").unwrap().to_string(),
        "n0",
        "not recursive"
    );
    ok(s, "xenstore-chmod", &["-r", "/c", "b5"]);
    for p in ["/c", "/c/d", "/c/d/e"] {
        assert_eq!(f.client.get_perms(p).unwrap().to_string(), "b5", "{p}");
    }
    ok(s, "xenstore-chmod", &["-u", "/c/d/e", "w9"]);
    for p in ["/c", "/c/d", "/c/d/e"] {
        assert_eq!(f.client.get_perms(p).unwrap().to_string(), "w9", "{p}");
    }
    assert!(!tool(s, "xenstore-chmod", &["/c/missing", "r1"])
        .status
        .success());
}

#[test]
fn list_uses_directory_part_for_long_directories() {
    let f = fixture("dirpart");
    let names: Vec<String> = (0..400)
        .map(|i| format!("a-rather-long-child-name-{i:05}"))
        .collect();
    f.client
        .transaction(|tx| {
            for n in &names {
                tx.write(&format!("/big/{n}"), "")?;
            }
            Ok(())
        })
        .unwrap();
    let listed = ok(&f.socket, "xenstore-list", &["/big"]);
    let got: Vec<&str> = listed.lines().collect();
    assert_eq!(got, names.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn watch_reports_initial_and_subsequent_events() {
    let f = fixture("watch");
    // spawns: timeout, xenstore-watch
    let mut child = Command::new("timeout")
        .args(["30", "xenstore-watch", "-n", "3", "/w"])
        .env("XENSTORED_PATH", &f.socket)
        .stdout(Stdio::piped())
        .spawn()
        .expect("cannot run xenstore-watch (apt-get install xenstore-utils)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "/w",
        "first fire on registration"
    );
    f.client.write("/w/x", "1").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "/w/x");
    f.client.write("/elsewhere", "1").unwrap();
    f.client.rm("/w").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "/w");
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "xenstore-watch -n 3 ends after three events: {status:?}"
    );
}

#[test]
fn xenstored_binary_serves_until_sigterm_and_cleans_up() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let dir = std::env::temp_dir().join(format!("rxen-xsd-{}-{sig}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("socket");
        let mut d = Command::new(env!("CARGO_BIN_EXE_xenstored"))
            .arg("--socket")
            .arg(&socket)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(d.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert!(line.contains("listening on"), "{line}");
        ok(&socket, "xenstore-write", &["/bin/x", "1"]);
        assert_eq!(ok(&socket, "xenstore-read", &["/bin/x"]), "1\n");
        let c = Client::open_path(&socket).unwrap();
        common::transactions(&c, "/bin/tx");
        kill(child_pid(&d), sig).unwrap();
        let st = d.wait().unwrap();
        assert_eq!(
            st.code(),
            Some(0),
            "clean exit on {sig}: {st:?} (signal {:?})",
            st.signal()
        );
        assert!(!socket.exists(), "socket removed");
        assert!(c.read("/bin/x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn xenstored_binary_rejects_bad_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_xenstored"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option"));
    let out = Command::new(env!("CARGO_BIN_EXE_xenstored"))
        .args(["--socket", "/nonexistent-dir/socket"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-dir/socket"));
}

/// The pid of a child we spawned, for `kill(2)`.
fn child_pid(child: &std::process::Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).expect("pids fit in pid_t"))
}

/// CPU ticks (user + system) the process `pid` has used.
/// Out of file descriptors, the daemon neither spins on its readable listener nor drops the
/// clients it has: it rests the listener, serves who it can, and accepts the waiting
/// connections once descriptors are free again.
#[test]
fn xenstored_out_of_descriptors_rests_and_recovers() {
    let dir = std::env::temp_dir().join(format!("rxen-xsd-{}-emfile", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("socket");
    // util-linux's prlimit sets the limit and execs the daemon (same pid).
    let mut d = Command::new("prlimit")
        .arg("--nofile=16")
        .arg(env!("CARGO_BIN_EXE_xenstored"))
        .arg("--socket")
        .arg(&socket)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(d.stderr.take().unwrap());
    // Killed however the test ends, so that a failure does not leave it running.
    let d = KillOnDrop(d);
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("listening on"), "{line}");
    let first = Client::open_path(&socket).unwrap();
    first.write("/fd/x", "1").unwrap();
    // More connections than descriptors: the kernel queues the rest unaccepted.
    let extra: Vec<Client> = (0..24)
        .map(|_| Client::open_path(&socket).unwrap())
        .collect();
    // Resting, it sleeps between attempts to accept (every 100 ms); spinning, it would be
    // runnable throughout, loaded machine or not (see `sched`). Each wake-up may wait for a CPU
    // on a loaded machine (measured: runnable in 6% of samples with two `yes` running).
    std::thread::sleep(std::time::Duration::from_millis(100));
    let tasks = sched::process_tasks(d.0.id());
    let w = sched::observe(std::time::Duration::from_millis(500), || {}, &tasks);
    assert!(
        w.runnable_percent() <= 50,
        "xenstored should rest while out of descriptors, but was {w}"
    );
    // Those it has are served meanwhile.
    assert_eq!(first.read("/fd/x").unwrap(), b"1");
    // The last connection waits in the backlog; closing the others frees descriptors.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut extra = extra;
    let last = extra.pop().unwrap();
    let reader = std::thread::spawn(move || tx.send(last.read("/fd/x")).unwrap());
    drop(extra);
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("a queued connection was never served");
    assert_eq!(got.unwrap(), b"1");
    reader.join().unwrap();
    kill(child_pid(&d.0), Signal::SIGTERM).unwrap();
    let mut d = d;
    assert_eq!(d.0.wait().unwrap().code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A child process killed when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
