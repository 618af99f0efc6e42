//! The server's busy poll: it keeps polling for the configured time after activity, then sleeps,
//! and with zero it never polls. Measured by the CPU time of the server's thread, read from
//! `/proc/self/task/TID/schedstat`; this file holds one test so that only one server thread
//! exists in the process.

use std::path::PathBuf;
use std::thread::sleep;
use std::time::Duration;

use xenstore::server::Server;
use xenstore::Client;

/// The thread id of the (one) thread named `xenstored` in this process.
fn server_tid() -> PathBuf {
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim_end() == "xenstored" {
            return task;
        }
    }
    panic!("no xenstored thread in this process");
}

/// Nanoseconds the task has run on a CPU.
fn cpu_ns(task: &std::path::Path) -> u64 {
    let s = std::fs::read_to_string(task.join("schedstat")).unwrap();
    s.split_whitespace().next().unwrap().parse().unwrap()
}

/// CPU time the task uses over `span`.
fn cpu_over(task: &std::path::Path, span: Duration) -> Duration {
    let before = cpu_ns(task);
    sleep(span);
    Duration::from_nanos(cpu_ns(task) - before)
}

fn serve(busy_poll: Duration, tag: &str) -> (xenstore::server::RunningServer, Client, PathBuf) {
    let dir = std::env::temp_dir().join(format!("rxen-xs-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("socket");
    let s = Server::new()
        .unwrap()
        .busy_poll(busy_poll)
        .listen(&path)
        .unwrap()
        .spawn()
        .unwrap();
    let c = Client::open_path(&path).unwrap();
    c.write("/busy/key", "v").unwrap();
    (s, c, dir)
}

#[test]
fn polls_after_activity_then_sleeps_and_zero_never_polls() {
    // A long poll, so that its CPU use stands out from scheduling noise.
    let (s, c, dir) = serve(Duration::from_millis(300), "poll");
    let task = server_tid();
    assert_eq!(c.read("/busy/key").unwrap(), b"v");
    let polling = cpu_over(&task, Duration::from_millis(150));
    assert!(
        polling >= Duration::from_millis(15),
        "the server should poll after a request, but used only {polling:?} of 150 ms"
    );
    // Past the poll time it sleeps in epoll_wait.
    sleep(Duration::from_millis(250));
    let idle = cpu_over(&task, Duration::from_millis(300));
    assert!(
        idle < Duration::from_millis(10),
        "an idle server should sleep, but used {idle:?} of 300 ms"
    );
    // And it still answers after sleeping.
    assert_eq!(c.read("/busy/key").unwrap(), b"v");
    drop(c);
    s.stop().unwrap();
    let _ = std::fs::remove_dir_all(dir);

    let (s, c, dir) = serve(Duration::ZERO, "sleep");
    let task = server_tid();
    assert_eq!(c.read("/busy/key").unwrap(), b"v");
    let after = cpu_over(&task, Duration::from_millis(200));
    assert!(
        after < Duration::from_millis(10),
        "with no busy poll the server should sleep at once, but used {after:?} of 200 ms"
    );
    drop(c);
    s.stop().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
