//! Lock tests, across processes: the test binary re-executes itself with `ROLE` set, and the
//! child runs [`child_process_entry`]'s role instead of a test. Parent and children talk over the
//! child's stdin (commands) and stdout (`EV ...` lines); nothing waits on time.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::file::AcquireStep;
use super::{level, CheckError, CtxLock, DomId, Error, LockDir, Locked};

const ROLE: &str = "RXEN_LOCK_TEST_ROLE";
const DIR: &str = "RXEN_LOCK_TEST_DIR";
const ARG: &str = "RXEN_LOCK_TEST_ARG";
const DOMID: DomId = 5;

/// A fresh directory for one test.
fn test_dir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rxen-lock-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// "Domain D exists" is a marker file `domain-D` in the test directory: destroy removes it.
fn marker(dir: &Path, domid: DomId) -> PathBuf {
    dir.join(format!("domain-{domid}"))
}

fn exists_in(dir: &Path) -> impl Fn(DomId) -> Result<bool, CheckError> + '_ {
    move |domid| Ok(marker(dir, domid).exists())
}

fn locks_in(dir: &Path) -> LockDir {
    LockDir::under(dir)
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    name: String,
}

impl Proc {
    fn spawn(role: &str, dir: &Path, arg: &str) -> Proc {
        let exe = std::env::current_exe().unwrap();
        // spawns: own
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "lock::tests::child_process_entry",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(ROLE, role)
            .env(DIR, dir)
            .env(ARG, arg)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Proc {
            child,
            stdin,
            stdout,
            name: format!("{role}({arg})"),
        }
    }

    /// The next event line from the child, without the `EV ` prefix.
    fn event(&mut self) -> String {
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "{}: exited before its next event", self.name);
            if let Some(ev) = line.trim_end().strip_prefix("EV ") {
                return ev.to_owned();
            }
        }
    }

    fn expect(&mut self, prefix: &str) -> String {
        let ev = self.event();
        assert!(
            ev.starts_with(prefix),
            "{}: expected an event starting {prefix:?}, got {ev:?}",
            self.name
        );
        ev
    }

    fn send(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn finish(mut self) {
        drop(self.stdin);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{}: exited with {status}", self.name);
    }
}

/// Not a test: the entry point of the child processes the tests below spawn. Without `ROLE` in
/// the environment (an ordinary test run) it does nothing.
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(DIR).unwrap());
    let arg = std::env::var(ARG).unwrap();
    child::run(&role, &dir, &arg);
}

mod child {
    use super::*;

    fn emit(ev: &str) {
        let mut out = std::io::stdout().lock();
        writeln!(out, "EV {ev}").unwrap();
        out.flush().unwrap();
    }

    fn command() -> String {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
        line.trim().to_owned()
    }

    fn id((dev, ino): (u64, u64)) -> String {
        format!("{dev}:{ino}")
    }

    pub(super) fn run(role: &str, dir: &Path, arg: &str) {
        let locks = locks_in(dir);
        let exists = exists_in(dir);
        let ctx = CtxLock::new(());
        let mut root = Locked::root();
        match role {
            // Increments the counter file `arg` times under the userdata (or slow) lock, reading
            // and rewriting it non-atomically.
            "counter-userdata" | "counter-slow" => {
                let iterations: u32 = arg.parse().unwrap();
                let counter = dir.join("counter");
                emit("ready");
                assert_eq!(command(), "go");
                for _ in 0..iterations {
                    let bump = || {
                        let n: u64 = std::fs::read_to_string(&counter)
                            .unwrap()
                            .trim()
                            .parse()
                            .unwrap();
                        std::thread::yield_now();
                        std::fs::write(&counter, format!("{}\n", n + 1)).unwrap();
                    };
                    if role == "counter-userdata" {
                        let mut g = ctx.lock(&mut root);
                        let mut t = g.token();
                        let ud = locks.lock_userdata(&mut t, DOMID, &exists).unwrap();
                        bump();
                        ud.release().unwrap();
                    } else {
                        let slow = locks.lock_slow(&mut root, DOMID, &exists).unwrap();
                        bump();
                        slow.release().unwrap();
                    }
                }
                emit("done");
            }
            // Takes the userdata lock, reports it, releases on command.
            "holder" => {
                let mut g = ctx.lock(&mut root);
                let mut t = g.token();
                let ud = locks.lock_userdata(&mut t, DOMID, &exists).unwrap();
                emit(&format!("acquired {}", id(ud.file_id())));
                assert_eq!(command(), "release");
                ud.release().unwrap();
                emit("released");
            }
            // Takes the userdata lock, reporting every step; stops after the first open until
            // told "go"; then holds the lock until told "release" (or reports the error).
            "waiter" => {
                let mut first = true;
                let mut observe = |step: AcquireStep| match step {
                    AcquireStep::Opened { file } => {
                        emit(&format!("opened {}", id(file)));
                        if first {
                            first = false;
                            assert_eq!(command(), "go");
                        }
                    }
                    AcquireStep::Stale { file, path } => emit(&format!(
                        "stale {} path={}",
                        id(file),
                        path.map_or_else(|| "none".to_owned(), id)
                    )),
                    AcquireStep::Acquired { file } => emit(&format!("locked {}", id(file))),
                };
                let mut g = ctx.lock(&mut root);
                let mut t = g.token();
                match locks.lock_userdata_observed(&mut t, DOMID, &exists, &mut observe) {
                    Ok(ud) => {
                        emit(&format!("acquired {}", id(ud.file_id())));
                        assert_eq!(command(), "release");
                        ud.release().unwrap();
                        emit("released");
                    }
                    Err(e) => emit(&format!("error {e}")),
                }
            }
            _ => panic!("unknown role {role}"),
        }
    }
}

fn path_id(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| format!("{}:{}", m.dev(), m.ino()))
}

fn counter_test(role: &str) {
    const PROCS: usize = 4;
    const ITERATIONS: u32 = 150;
    let dir = test_dir(role);
    std::fs::write(marker(&dir, DOMID), "").unwrap();
    std::fs::write(dir.join("counter"), "0\n").unwrap();
    let mut procs: Vec<Proc> = (0..PROCS)
        .map(|_| Proc::spawn(role, &dir, &ITERATIONS.to_string()))
        .collect();
    // A start barrier: everyone is up before anyone starts, so they contend.
    for p in &mut procs {
        p.expect("ready");
    }
    for p in &mut procs {
        p.send("go");
    }
    for p in &mut procs {
        p.expect("done");
    }
    for p in procs {
        p.finish();
    }
    let total: u64 = std::fs::read_to_string(dir.join("counter"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        total,
        PROCS as u64 * u64::from(ITERATIONS),
        "lost updates under {role}"
    );
    let locks = locks_in(&dir);
    assert!(
        !locks.userdata_path(DOMID).exists(),
        "lock file left behind"
    );
    assert!(!locks.slow_path(DOMID).exists(), "lock file left behind");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn userdata_lock_excludes_other_processes() {
    counter_test("counter-userdata");
}

#[test]
fn slow_lock_excludes_other_processes() {
    counter_test("counter-slow");
}

/// libxl's race: a waiter has opened the lock file when the holder releases (unlinks) it, and a
/// third process locks a fresh file at the same path. The waiter must see that its file is stale
/// and queue behind the third process, not hold a lock on the unlinked inode.
#[test]
fn waiter_on_unlinked_file_starts_again() {
    let dir = test_dir("unlink-race");
    std::fs::write(marker(&dir, DOMID), "").unwrap();
    let path = locks_in(&dir).userdata_path(DOMID);

    let mut a = Proc::spawn("holder", &dir, "A");
    let i1 = a.expect("acquired ")["acquired ".len()..].to_owned();
    let mut b = Proc::spawn("waiter", &dir, "B");
    assert_eq!(b.event(), format!("opened {i1}"));

    a.send("release");
    a.expect("released");
    a.finish();
    assert_eq!(path_id(&path), None, "release must unlink the lock file");

    let mut c = Proc::spawn("holder", &dir, "C");
    let i2 = c.expect("acquired ")["acquired ".len()..].to_owned();
    assert_ne!(
        i1, i2,
        "C must have created a fresh file (B still has the old one open)"
    );

    // B now locks its old file at once (nobody holds it), and must notice it is stale.
    b.send("go");
    assert_eq!(b.event(), format!("stale {i1} path={i2}"));
    assert_eq!(b.event(), format!("opened {i2}"));
    // B is now blocked behind C, on the file the path names.
    assert_eq!(path_id(&path).as_deref(), Some(i2.as_str()));

    c.send("release");
    c.expect("released");
    c.finish();
    // C unlinked I2 before closing it, so B's lock on I2 is stale too; B starts again and
    // creates a third file.
    assert_eq!(b.event(), format!("stale {i2} path=none"));
    let i3 = b.expect("opened ")["opened ".len()..].to_owned();
    assert_eq!(b.event(), format!("locked {i3}"));
    assert_eq!(b.event(), format!("acquired {i3}"));
    assert_eq!(path_id(&path).as_deref(), Some(i3.as_str()));
    b.send("release");
    b.expect("released");
    b.finish();
    assert_eq!(path_id(&path), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A waiter whose domain is destroyed while it waits gets a clean "no such domain", and leaves
/// no lock file behind.
#[test]
fn waiter_fails_when_domain_destroyed_meanwhile() {
    let dir = test_dir("destroyed");
    std::fs::write(marker(&dir, DOMID), "").unwrap();
    let path = locks_in(&dir).userdata_path(DOMID);

    let mut a = Proc::spawn("holder", &dir, "A");
    let i1 = a.expect("acquired ")["acquired ".len()..].to_owned();
    let mut b = Proc::spawn("waiter", &dir, "B");
    assert_eq!(b.event(), format!("opened {i1}"));
    b.send("go");
    // Destroy the domain while A holds the lock and B waits for it, then release.
    std::fs::remove_file(marker(&dir, DOMID)).unwrap();
    a.send("release");
    a.expect("released");
    a.finish();
    // B may see its file stale (released before it locked) and start again; either way it ends
    // with the error, not with the lock.
    let ev = loop {
        let ev = b.event();
        if !(ev.starts_with("stale ") || ev.starts_with("opened ") || ev.starts_with("locked ")) {
            break ev;
        }
    };
    assert_eq!(
        ev,
        format!(
            "error domain {DOMID} does not exist (destroyed, or never created): not taking the \
             userdata lock ({})",
            path.display()
        )
    );
    b.finish();
    assert_eq!(
        path_id(&path),
        None,
        "the failed lock must not leave its file"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lock_fails_for_missing_domain_and_leaves_nothing() {
    let dir = test_dir("missing");
    let locks = locks_in(&dir);
    let exists = exists_in(&dir);
    let ctx = CtxLock::new(());
    let mut root = Locked::root();
    {
        let mut g = ctx.lock(&mut root);
        let mut t = g.token();
        let err = locks.lock_userdata(&mut t, 9, &exists).unwrap_err();
        assert!(
            matches!(err, Error::NoSuchDomain { domid: 9, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("domain 9 does not exist"),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains(&locks.userdata_path(9).display().to_string()));
    }
    let err = locks.lock_slow(&mut root, 9, &exists).unwrap_err();
    assert!(matches!(
        err,
        Error::NoSuchDomain {
            domid: 9,
            what: "the slow device lock",
            ..
        }
    ));
    assert!(!locks.userdata_path(9).exists());
    assert!(!locks.slow_path(9).exists());

    // The check itself failing is reported as such, and also leaves nothing.
    let broken = |_| -> Result<bool, CheckError> { Err("xen is not answering".into()) };
    let mut g = ctx.lock(&mut root);
    let mut t = g.token();
    let err = locks.lock_userdata(&mut t, 9, &broken).unwrap_err();
    assert!(
        matches!(err, Error::DomainCheck { domid: 9, .. }),
        "{err:?}"
    );
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "xen is not answering"
    );
    assert!(!locks.userdata_path(9).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unusable_lock_dir_is_an_error_naming_it() {
    let dir = test_dir("unusable");
    // A file where the lock directory should be.
    let not_a_dir = dir.join("locks");
    std::fs::write(&not_a_dir, "").unwrap();
    let locks = LockDir::new(&not_a_dir);
    let mut root = Locked::root();
    let err = locks.lock_slow(&mut root, 1, &|_| Ok(true)).unwrap_err();
    assert!(matches!(err, Error::CreateDir { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&not_a_dir.display().to_string()),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn released_lock_can_be_taken_again_and_paths_are_per_domain() {
    let dir = test_dir("again");
    std::fs::write(marker(&dir, 1), "").unwrap();
    std::fs::write(marker(&dir, 2), "").unwrap();
    let locks = locks_in(&dir);
    let exists = exists_in(&dir);
    let ctx = CtxLock::new(0u32);
    let mut root = Locked::root();
    // slow(1) -> ctx -> userdata(1), then userdata(2) under the same ctx hold, one at a time.
    let mut slow = locks.lock_slow(&mut root, 1, &exists).unwrap();
    assert_eq!(slow.domid(), 1);
    assert!(slow.path().exists());
    let mut slow_token = slow.token();
    let mut g = ctx.lock(&mut slow_token);
    let (count, mut t) = g.split();
    for domid in [1, 2, 1] {
        let ud = locks.lock_userdata(&mut t, domid, &exists).unwrap();
        assert_eq!(ud.domid(), domid);
        assert_eq!(ud.path(), locks.userdata_path(domid));
        *count += 1;
        drop(ud); // drop releases too
        assert!(!locks.userdata_path(domid).exists());
    }
    drop(g);
    drop(slow);
    assert!(!locks.slow_path(1).exists());
    assert_eq!(*ctx.lock(&mut root), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_root_token_per_thread() {
    let root = Locked::root();
    assert_eq!(root.level_name(), "no lock");
    assert!(
        Locked::try_root().is_none(),
        "a second root while the first lives"
    );
    // Another thread has its own.
    std::thread::spawn(|| assert!(Locked::try_root().is_some()))
        .join()
        .unwrap();
    drop(root);
    let again = Locked::try_root();
    assert!(again.is_some(), "the root is free again once dropped");
}

#[test]
#[should_panic(expected = "a lock-order root token already exists on this thread")]
fn second_root_panics() {
    let _a = Locked::root();
    let _b = Locked::root();
}

#[test]
fn level_names() {
    let ctx = CtxLock::new(());
    let mut root = Locked::root();
    let mut g = ctx.lock(&mut root);
    let t: Locked<'_, level::Ctx> = g.token();
    assert_eq!(t.level_name(), "the ctx lock");
}

/// A libxl-named lock directory whose "Xen" is a map from domid to UUID the test edits.
fn libxl_locks(
    dir: &Path,
) -> (
    LockDir,
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<DomId, uuid::Uuid>>>,
) {
    let xen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let x = std::sync::Arc::clone(&xen);
    let lookup: super::UuidLookup =
        std::sync::Arc::new(move |d| Ok(x.lock().unwrap().get(&d).copied()));
    (LockDir::libxl(dir, lookup), xen)
}

#[test]
fn libxl_naming_is_libxls_path_and_the_guard_knows_the_uuid() {
    let dir = test_dir("libxl-naming");
    let (locks, xen) = libxl_locks(&dir);
    let u = uuid::Uuid::parse_str("6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d").unwrap();
    xen.lock().unwrap().insert(DOMID, u);
    let want = dir.join(format!(
        "userdata-l.{DOMID}.6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d.domain-userdata-lock"
    ));
    assert_eq!(locks.userdata_path(DOMID), want);
    assert_eq!(
        locks.slow_path(DOMID),
        dir.join(format!(
            "userdata-l.{DOMID}.6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d.libxl-device-changes-lock"
        ))
    );
    let exists = |d| Ok(xen.lock().unwrap().contains_key(&d));
    let ctx = CtxLock::new(());
    let mut root = Locked::root();
    {
        let mut slow = locks.lock_slow(&mut root, DOMID, &exists).unwrap();
        assert_eq!(slow.path(), locks.slow_path(DOMID));
        let mut st = slow.token();
        let mut g = ctx.lock(&mut st);
        let mut t = g.token();
        let ud = locks.lock_userdata(&mut t, DOMID, &exists).unwrap();
        assert_eq!(ud.path(), want);
        assert!(want.exists());
        assert_eq!(ud.uuid(), Some(u));
        ud.release().unwrap();
        assert!(!want.exists(), "unlinked on release");
    }
    // A domain Xen does not have: the nil UUID names it, and the check refuses it.
    let mut g = ctx.lock(&mut root);
    let mut t = g.token();
    let err = locks.lock_userdata(&mut t, 77, &exists).unwrap_err();
    assert!(
        matches!(err, Error::NoSuchDomain { domid: 77, .. }),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .contains("userdata-l.77.00000000-0000-0000-0000-000000000000.domain-userdata-lock"));
    // A caller cleaning up after a vanished domain gets the lock, with no UUID.
    let gone = |_| Ok(true);
    let ud = locks.lock_userdata(&mut t, 77, &gone).unwrap();
    assert_eq!(ud.uuid(), None);
    drop(ud);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn libxl_naming_follows_a_domid_reused_while_waiting() {
    let dir = test_dir("libxl-reuse");
    let (locks, xen) = libxl_locks(&dir);
    let old = uuid::Uuid::from_u128(1);
    let new = uuid::Uuid::from_u128(2);
    xen.lock().unwrap().insert(DOMID, old);
    let exists = |d| Ok(xen.lock().unwrap().contains_key(&d));
    let ctx = CtxLock::new(());
    let mut root = Locked::root();
    let mut g = ctx.lock(&mut root);
    let mut t = g.token();
    // Between naming the file and holding it, the domain is replaced by another with the same
    // domid: the lock taken must be the new domain's.
    let mut steps = Vec::new();
    let mut swapped = false;
    let ud = locks
        .lock_userdata_observed(&mut t, DOMID, &exists, &mut |step| {
            steps.push(step);
            if !swapped {
                swapped = true;
                xen.lock().unwrap().insert(DOMID, new);
            }
        })
        .unwrap();
    assert_eq!(ud.uuid(), Some(new));
    assert!(ud
        .path()
        .to_str()
        .unwrap()
        .contains(&new.hyphenated().to_string()));
    let opened = steps
        .iter()
        .filter(|s| matches!(s, AcquireStep::Opened { .. }))
        .count();
    assert_eq!(
        opened, 2,
        "the old domain's lock was dropped and the new one's taken"
    );
    drop(ud);
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "lock files left: {left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
