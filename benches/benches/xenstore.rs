//! xenstore round trips over a unix socket: our client against our server, with Debian's C
//! libxenstore measured against the same server in the same run (function `libxenstore`, present
//! when `build.rs` linked `libxenstore.a` and set `cfg(has_libxenstore)`).
//!
//! Groups (one per path; ours is `rxen`, the C twin `libxenstore`):
//! - `xenstore/read`, `xenstore/write`, `xenstore/directory` (10 children),
//!   `xenstore/transaction` (start, read, write, commit);
//! - `xenstore/read-4-threads-1-handle`: four threads sharing one handle (ours pipelines on the
//!   connection; the C handle needs a lock around it), aggregate ops/s;
//! - `xenstore/server-2-clients/*`: aggregate small-read throughput of our server, two clients on
//!   two threads (`Throughput::Elements(2)` makes criterion print the total ops/s), one request
//!   in flight per client (`sequential`), four (`4-in-flight`, four threads sharing a client), or
//!   sixteen pipelined by `Client::read_many` (`read-many-16`, one thread per client); and
//!   `sequential-no-busy-poll`, one in flight against a second server started with
//!   `busy_poll(Duration::ZERO)`, which sleeps in `epoll_wait` as soon as it is idle.
//!
//! Everything else runs against a server with the default busy poll
//! (`xenstore::server::DEFAULT_BUSY_POLL`).

#[cfg(has_libxenstore)]
#[path = "../src/xenstore_c.rs"]
mod xenstore_c;

use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use xenstore::server::{RunningServer, Server, DEFAULT_BUSY_POLL};
use xenstore::Client;

const BENCH_KEY: &str = "/bench/key";

struct Setup {
    _server: RunningServer,
    socket: PathBuf,
}

/// Where the server tagged `tag` listens.
fn socket_path(tag: &str) -> PathBuf {
    std::env::temp_dir()
        .join(format!("rxen-bench-xs-{tag}-{}", std::process::id()))
        .join("socket")
}

/// Starts a server polling for `busy_poll` after activity, in a fresh directory named by `tag`,
/// and seeds the keys the benches read.
fn setup(tag: &str, busy_poll: Duration) -> Setup {
    let socket = socket_path(tag);
    let dir = socket.parent().expect("socket in a directory");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("temp dir");
    let server = Server::new()
        .map(|s| s.busy_poll(busy_poll))
        .and_then(|s| s.listen(&socket))
        .and_then(Server::spawn)
        .expect("start xenstored");
    let c = Client::open_path(&socket).expect("connect");
    c.write("/bench/key", "a small value").expect("seed");
    for i in 0..10 {
        c.write(&format!("/bench/dir/child-{i}"), "").expect("seed");
    }
    c.write("/bench/counter", "0").expect("seed");
    Setup {
        _server: server,
        socket,
    }
}

#[cfg(has_libxenstore)]
fn c_handle() -> Option<xenstore_c::CXenstore> {
    match xenstore_c::CXenstore::open() {
        Ok(h) => Some(h),
        Err(e) => {
            assert!(
                !rxen_benches::c_baselines_required(),
                "libxenstore xs_open failed: {e}"
            );
            eprintln!("skipping libxenstore: xs_open failed: {e}");
            None
        }
    }
}

fn bench_round_trips(crit: &mut Criterion, s: &Setup) {
    let ours = Client::open_path(&s.socket).expect("connect");
    #[cfg(has_libxenstore)]
    let mut theirs = c_handle();
    #[cfg(not(has_libxenstore))]
    {
        assert!(
            !rxen_benches::c_baselines_required(),
            "built without libxenstore.a"
        );
        eprintln!("libxenstore.a not linked: C twins skipped");
    }

    let mut g = crit.benchmark_group("xenstore/read");
    g.bench_function("rxen", |b| {
        b.iter(|| ours.read("/bench/key").expect("read"))
    });
    #[cfg(has_libxenstore)]
    if let Some(h) = theirs.as_mut() {
        g.bench_function("libxenstore", |b| {
            b.iter(|| h.read(0, c"/bench/key").expect("read"))
        });
    }
    g.finish();

    let mut g = crit.benchmark_group("xenstore/write");
    g.bench_function("rxen", |b| {
        b.iter(|| ours.write("/bench/w", "value").expect("write"))
    });
    #[cfg(has_libxenstore)]
    if let Some(h) = theirs.as_mut() {
        g.bench_function("libxenstore", |b| {
            b.iter(|| assert!(h.write(0, c"/bench/w", b"value")))
        });
    }
    g.finish();

    let mut g = crit.benchmark_group("xenstore/directory");
    g.bench_function("rxen", |b| {
        b.iter(|| assert_eq!(ours.directory("/bench/dir").expect("directory").len(), 10))
    });
    #[cfg(has_libxenstore)]
    if let Some(h) = theirs.as_mut() {
        g.bench_function("libxenstore", |b| {
            b.iter(|| assert_eq!(h.directory(0, c"/bench/dir"), Some(10)))
        });
    }
    g.finish();

    let mut g = crit.benchmark_group("xenstore/transaction");
    g.bench_function("rxen", |b| {
        b.iter(|| {
            let tx = ours.transaction_start().expect("start");
            let v = tx.read("/bench/counter").expect("read");
            tx.write("/bench/counter", &v).expect("write");
            tx.commit().expect("commit");
        })
    });
    #[cfg(has_libxenstore)]
    if let Some(h) = theirs.as_mut() {
        g.bench_function("libxenstore", |b| {
            b.iter(|| {
                let t = h.transaction_start();
                assert_ne!(t, 0);
                let v = h.read(t, c"/bench/counter").expect("read");
                assert!(h.write(t, c"/bench/counter", &v));
                assert!(h.transaction_end(t, false));
            })
        });
    }
    g.finish();
}

/// Runs `iters` reads on each of `clients.len() * per_client` threads (threads of one client
/// share its connection) and returns the wall time of the slowest.
fn parallel_reads(clients: &[Client], per_client: usize, iters: u64) -> Duration {
    let threads = clients.len() * per_client;
    let each = iters.div_ceil(per_client as u64);
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|i| {
                let c = &clients[i / per_client];
                let barrier = &barrier;
                sc.spawn(move || {
                    barrier.wait();
                    let t0 = Instant::now();
                    for _ in 0..each {
                        c.read(BENCH_KEY).expect("read");
                    }
                    (t0, Instant::now())
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    let start = spans.iter().map(|s| s.0).min().expect("threads");
    let end = spans.iter().map(|s| s.1).max().expect("threads");
    end - start
}

/// Four threads reading through one handle: ours keeps four requests in flight on the one
/// connection; libxenstore (built without pthread support in Debian, so a C program must lock
/// around it) does one at a time.
fn bench_shared_handle(crit: &mut Criterion, s: &Setup) {
    const THREADS: usize = 4;
    let ours = [Client::open_path(&s.socket).expect("connect")];
    let mut g = crit.benchmark_group("xenstore/read-4-threads-1-handle");
    g.throughput(Throughput::Elements(THREADS as u64));
    g.bench_function("rxen", |b| {
        b.iter_custom(|n| parallel_reads(&ours, THREADS, n * THREADS as u64))
    });
    #[cfg(has_libxenstore)]
    if let Some(h) = c_handle() {
        let h = std::sync::Mutex::new(h);
        g.bench_function("libxenstore", |b| {
            b.iter_custom(|n| {
                let barrier = Barrier::new(THREADS);
                let spans: Vec<(Instant, Instant)> = std::thread::scope(|sc| {
                    let hs: Vec<_> = (0..THREADS)
                        .map(|_| {
                            let (h, barrier) = (&h, &barrier);
                            sc.spawn(move || {
                                barrier.wait();
                                let t0 = Instant::now();
                                for _ in 0..n {
                                    let mut g = h.lock().expect("lock");
                                    g.read(0, c"/bench/key").expect("read");
                                }
                                (t0, Instant::now())
                            })
                        })
                        .collect();
                    hs.into_iter()
                        .map(|h| h.join().expect("bench thread"))
                        .collect()
                });
                let start = spans.iter().map(|s| s.0).min().expect("threads");
                spans.iter().map(|s| s.1).max().expect("threads") - start
            })
        });
    }
    g.finish();
}

const BATCH: usize = 16;

/// Each client, on its own thread, does `iters` `read_many` calls of [`BATCH`] paths.
fn batched_reads(clients: &[Client], iters: u64) -> Duration {
    let paths = [BENCH_KEY; BATCH];
    let barrier = Barrier::new(clients.len());
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|sc| {
        let hs: Vec<_> = clients
            .iter()
            .map(|c| {
                let (barrier, paths) = (&barrier, &paths);
                sc.spawn(move || {
                    barrier.wait();
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        for r in c.read_many(paths) {
                            r.expect("read");
                        }
                    }
                    (t0, Instant::now())
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    let start = spans.iter().map(|s| s.0).min().expect("threads");
    spans.iter().map(|s| s.1).max().expect("threads") - start
}

fn bench_server(crit: &mut Criterion, s: &Setup, sleeping: &Setup) {
    let connect = |s: &Setup| -> Vec<Client> {
        (0..2)
            .map(|_| Client::open_path(&s.socket).expect("connect"))
            .collect()
    };
    let clients = connect(s);
    let mut g = crit.benchmark_group("xenstore/server-2-clients");
    g.throughput(Throughput::Elements(2));
    g.bench_function("sequential", |b| {
        b.iter_custom(|n| parallel_reads(&clients, 1, n))
    });
    // The same against a server that never polls: every request pays its wake-up.
    let sleepers = connect(sleeping);
    g.bench_function("sequential-no-busy-poll", |b| {
        b.iter_custom(|n| parallel_reads(&sleepers, 1, n))
    });
    // Four requests in flight per connection; the time per iteration covers 2 clients x 4
    // reads, so the element count is 8.
    g.throughput(Throughput::Elements(8));
    g.bench_function("4-in-flight", |b| {
        b.iter_custom(|n| parallel_reads(&clients, 4, n * 4))
    });
    // One thread per client, 16 reads per `read_many` (one write, replies read in bulk).
    g.throughput(Throughput::Elements(2 * BATCH as u64));
    g.bench_function("read-many-16", |b| {
        b.iter_custom(|n| batched_reads(&clients, n))
    });
    g.finish();
}

fn main() {
    // Before criterion and before any thread: the server, and $XENSTORED_PATH for the C side.
    // libxenstore finds the daemon through $XENSTORED_PATH; set it before any thread starts.
    std::env::set_var("XENSTORED_PATH", socket_path("polling"));
    let s = setup("polling", DEFAULT_BUSY_POLL);
    let sleeping = setup("sleeping", Duration::ZERO);
    let mut crit = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_round_trips(&mut crit, &s);
    bench_shared_handle(&mut crit, &s);
    bench_server(&mut crit, &s, &sleeping);
    crit.final_summary();
    // Stopping a server removes its socket; then the directory goes too.
    for s in [s, sleeping] {
        let dir = s.socket.parent().map(std::path::Path::to_path_buf);
        drop(s);
        if let Some(d) = dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
