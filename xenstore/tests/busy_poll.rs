//! The server's busy poll: it keeps polling for the configured time after activity, then sleeps,
//! and with zero it never polls. Judged by sampling the server thread's scheduler state from
//! `/proc/self/task/TID/stat` (see `sched`): runnable while it polls, asleep otherwise, however
//! loaded the machine is. This file holds one test so that only one server thread exists in
//! the process.

mod sched;

use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

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
    // A long poll, so that the window lies inside it even if this thread is descheduled for a
    // while after the request.
    const POLL: Duration = Duration::from_millis(600);
    let (s, c, dir) = serve(POLL, "poll");
    let task = [server_tid()];
    let last_request = std::cell::Cell::new(Instant::now());
    let request = || {
        assert_eq!(c.read("/busy/key").unwrap(), b"v");
        last_request.set(Instant::now());
    };
    // Right after a request the server polls: it stays runnable.
    let polling = sched::observe(Duration::from_millis(200), request, &task);
    assert!(
        polling.runnable_percent() >= 75,
        "the server should poll after a request, but was {polling}"
    );
    // Past the poll time it sleeps in epoll_wait.
    sleep(
        (last_request.get() + POLL + Duration::from_millis(200))
            .saturating_duration_since(Instant::now()),
    );
    let idle = sched::observe(Duration::from_millis(300), || {}, &task);
    assert!(
        idle.runnable_percent() <= 25,
        "an idle server should sleep, but was {idle}"
    );
    // And it still answers after sleeping.
    request();
    drop(c);
    s.stop().unwrap();
    let _ = std::fs::remove_dir_all(dir);

    let (s, c, dir) = serve(Duration::ZERO, "sleep");
    let task = [server_tid()];
    let request = || assert_eq!(c.read("/busy/key").unwrap(), b"v");
    let after = sched::observe(Duration::from_millis(200), request, &task);
    assert!(
        after.runnable_percent() <= 25,
        "with no busy poll the server should sleep at once, but was {after}"
    );
    drop(c);
    s.stop().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
