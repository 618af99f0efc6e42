//! Device hotplug on the simulated host, with its simulated backend driver answering (it runs
//! in the simulated xenstored's process, as a backend domain's driver runs beside xenstored).
//! No C twin here either; `toolstack/tests/vm_devices.rs` is the real-Xen cross-check.
//!
//! Groups:
//! - `devices/latency`: attaching a disk (`add`: record, write the three directories, wait for
//!   the backend to connect) and detaching it (`remove`: close, wait for Closed, remove,
//!   unrecord), each timed alone;
//! - `devices/throughput`: add+remove cycles run by worker processes, each on its own domain:
//!   `1-process`, and `2-processes` at once. Criterion reports the time per cycle as each
//!   process sees it; were adds to different domains serialized (on a global lock), the two
//!   processes' cycles would take twice as long. The control is `2-processes-same-domain`
//!   (two disks of one domain), which the domain's slow lock does serialize. The bench also
//!   prints the throughput ratios (2-process cycles per second / 1-process cycles per second;
//!   2 is perfect scaling, 1 is full serialization), for different domains and for the
//!   control. On a host with fewer free cores than busy processes (two workers and the
//!   simulated xenstored with its backend) the different-domain ratio is bounded by the
//!   cores, not by the toolstack; the control shows what serialization looks like there.
//! - `devices/throughput-20ms-hotplug`: the same with simulated hotplug scripts that take
//!   20 ms (`simback::HOTPLUG_DELAY_PATH`), as real scripts take tens of milliseconds or more.
//!   Waiting then dominates, not the CPUs, and the ratios show the locking alone: near 2 for
//!   different domains, near 1 for one domain.
//!
//! The bench binary is also the simulated host's xenstored (`__rxen-sim-xenstored`) and the
//! worker processes (`__device-worker DIR DOMID VDEV`: reads a count per line on stdin, runs
//! that many cycles, answers a line).

#[path = "../src/sim_host.rs"]
mod sim_host;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use sim_host::{open, Dir};
use toolstack::config::{DiskSpec, DomainConfig};
use toolstack::device::{self, DeviceKind, DeviceRef, Options};
use toolstack::lock::{level, DomId, Locked};
use toolstack::sim::backend as simback;
use toolstack::Host;

fn create(host: &Host, root: &mut Locked<'_, level::Unlocked>, name: &str) -> DomId {
    let mut c = DomainConfig::new(name);
    c.memory_kib = 16 * 1024;
    c.maxmem_kib = 16 * 1024;
    toolstack::create::create(host, root, &c, &mut |_| {})
        .expect("create")
        .domid
}

/// A disk whose target is an (empty) image file in the host's state directory: the toolstack
/// checks that a raw disk's target exists, on the simulated host as on Xen.
fn disk(host: &Host, vdev: &str) -> DiskSpec {
    let toolstack::HostKind::Simulated(dir) = host.kind() else {
        panic!("the benches run on the simulated host");
    };
    let image = dir.join(format!("images/bench-{vdev}.img"));
    std::fs::create_dir_all(dir.join("images")).expect("images dir");
    std::fs::write(&image, b"").expect("image");
    DiskSpec::parse(&format!("{},raw,{vdev},rw", image.display())).expect("disk spec")
}

fn add(host: &Host, root: &mut Locked<'_, level::Unlocked>, domid: DomId, vdev: &str) -> DeviceRef {
    device::add_disk(host, root, domid, &disk(host, vdev), &Options::default()).expect("add")
}

fn remove(host: &Host, root: &mut Locked<'_, level::Unlocked>, dev: DeviceRef) {
    device::remove(host, root, dev, &Options::default()).expect("remove");
}

fn latency(c: &mut Criterion, dir: &Path) {
    let host = open(dir, 4096);
    let mut root = Locked::root();
    let d = create(&host, &mut root, "lat");
    let mut g = c.benchmark_group("devices/latency");
    g.bench_function("add", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let dev = add(&host, &mut root, d, "xvda");
                spent += t.elapsed();
                remove(&host, &mut root, dev);
            }
            spent
        });
    });
    g.bench_function("remove", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let dev = add(&host, &mut root, d, "xvda");
                let t = Instant::now();
                remove(&host, &mut root, dev);
                spent += t.elapsed();
            }
            spent
        });
    });
    g.finish();
    let dev = DeviceRef {
        kind: DeviceKind::Vbd,
        domid: d,
        devid: 51712,
    };
    let left = device::list(&host, &mut root, d, DeviceKind::Vbd).expect("list");
    assert!(left.is_empty(), "{dev} left behind: {left:?}");
    assert!(device::check(&host, &mut root, d)
        .expect("check")
        .is_empty());
}

/// A worker process: add+remove cycles on one domain, on request.
struct Worker {
    child: Child,
    tx: ChildStdin,
    rx: BufReader<ChildStdout>,
}

impl Worker {
    fn spawn(dir: &Path, domid: DomId, vdev: &str) -> Worker {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .arg("__device-worker")
            .arg(dir)
            .arg(domid.to_string())
            .arg(vdev)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a worker");
        let tx = child.stdin.take().expect("stdin");
        let rx = BufReader::new(child.stdout.take().expect("stdout"));
        let mut w = Worker { child, tx, rx };
        w.answer("ready");
        w
    }

    fn start(&mut self, cycles: u64) {
        writeln!(self.tx, "{cycles}").expect("to the worker");
        self.tx.flush().expect("to the worker");
    }

    fn answer(&mut self, want: &str) {
        let mut line = String::new();
        self.rx.read_line(&mut line).expect("from the worker");
        assert_eq!(line.trim(), want, "the worker failed");
    }

    fn stop(self) {
        let Worker { mut child, tx, .. } = self;
        drop(tx);
        let status = child.wait().expect("wait");
        assert!(status.success(), "a worker failed");
    }
}

/// Runs `cycles` cycles on every worker at once; the wall time until the last is done.
fn run_all(workers: &mut [Worker], cycles: u64) -> Duration {
    let t = Instant::now();
    for w in workers.iter_mut() {
        w.start(cycles);
    }
    for w in workers.iter_mut() {
        w.answer("done");
    }
    t.elapsed()
}

fn worker(dir: &Path, domid: DomId, vdev: &str) -> ! {
    let host = open(dir, 4096);
    let mut root = Locked::root();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(n) = line.map(|l| l.trim().parse::<u64>()) else {
            break;
        };
        let n = n.expect("a count");
        for _ in 0..n {
            let dev = add(&host, &mut root, domid, vdev);
            remove(&host, &mut root, dev);
        }
        let _ = writeln!(out, "done");
        let _ = out.flush();
    }
    std::process::exit(0);
}

/// Criterion's throughput of 1 process, 2 on different domains and 2 on one domain
/// (`sets`, in that order), then the ratios measured directly and printed.
fn measure(c: &mut Criterion, group: &str, sets: [&mut Vec<Worker>; 3], check_only: bool) {
    let [one, two, same] = sets;
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.throughput(Throughput::Elements(1));
    g.bench_function("1-process", |b| b.iter_custom(|n| run_all(one, n)));
    g.throughput(Throughput::Elements(2));
    g.bench_function("2-processes", |b| b.iter_custom(|n| run_all(two, n)));
    g.bench_function("2-processes-same-domain", |b| {
        b.iter_custom(|n| run_all(same, n))
    });
    g.finish();
    // The headline ratios, measured directly: the same cycles per process, the set-ups
    // taking turns within each round so that drift in the machine's load falls on all of them;
    // the median round's ratio, since other work on the host makes single rounds noisy.
    let cycles = if check_only { 2 } else { 30 };
    let rounds = if check_only { 1 } else { 7 };
    let per_sec = |procs: u64, t: Duration| (procs * cycles) as f64 / t.as_secs_f64();
    let (mut one_rate, mut two_ratio, mut same_ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Each set-up goes first in turn, so none always follows the same one.
        let mut t = [Duration::ZERO; 3];
        for k in 0..3 {
            let which = (round + k) % 3;
            let set = match which {
                0 => &mut *one,
                1 => &mut *two,
                _ => &mut *same,
            };
            t[which] = run_all(set, cycles);
        }
        let r1 = per_sec(1, t[0]);
        one_rate.push(r1);
        two_ratio.push(per_sec(2, t[1]) / r1);
        same_ratio.push(per_sec(2, t[2]) / r1);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    eprintln!(
        "{group}: 1 process {:.0} add+remove cycles/s; 2 processes / 1 process: \
         {:.2} on different domains, {:.2} on one domain (serialized by its slow lock); \
         medians of {rounds} rounds (2 = no serialization, 1 = serialized){}",
        median(one_rate),
        median(two_ratio),
        median(same_ratio),
        if check_only {
            "; --test: a smoke run, too short to mean anything"
        } else {
            ""
        }
    );
}

fn throughput(c: &mut Criterion, dir: &Path, check_only: bool) {
    let host = open(dir, 4096);
    let mut root = Locked::root();
    let doms = [
        create(&host, &mut root, "t0"),
        create(&host, &mut root, "t1"),
    ];
    let mut one = vec![Worker::spawn(dir, doms[0], "xvda")];
    let mut two = vec![
        Worker::spawn(dir, doms[0], "xvda"),
        Worker::spawn(dir, doms[1], "xvda"),
    ];
    let mut same = vec![
        Worker::spawn(dir, doms[0], "xvda"),
        Worker::spawn(dir, doms[0], "xvdb"),
    ];
    measure(
        c,
        "devices/throughput",
        [&mut one, &mut two, &mut same],
        check_only,
    );
    // Again with hotplug scripts that take 20 ms, as real ones take tens of milliseconds or
    // more: now waiting dominates, not the two CPUs that the workers, xenstored and the
    // backend share, so work on different domains overlaps while work on one domain queues.
    host.xs
        .write(simback::HOTPLUG_DELAY_PATH, "20")
        .expect("set the hotplug delay");
    measure(
        c,
        "devices/throughput-20ms-hotplug",
        [&mut one, &mut two, &mut same],
        check_only,
    );
    host.xs
        .write(simback::HOTPLUG_DELAY_PATH, "0")
        .expect("clear the hotplug delay");
    for w in one.into_iter().chain(two).chain(same) {
        w.stop();
    }
    for d in doms {
        assert!(device::check(&host, &mut root, d)
            .expect("check")
            .is_empty());
    }
}

fn main() {
    toolstack::sim::run_daemon_if_asked();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__device-worker") {
        worker(
            Path::new(&args[2]),
            args[3].parse().expect("domid"),
            &args[4],
        );
    }
    let check_only = args.iter().any(|a| a == "--test");
    let mut c = Criterion::default().configure_from_args();
    let dir = Dir::new("dev-all");
    latency(&mut c, &dir.0);
    throughput(&mut c, &dir.0, check_only);
    c.final_summary();
}
