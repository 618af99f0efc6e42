//! Toolstack operations on the simulated host (a state directory shared by processes: the
//! hypervisor model in a file, our xenstored as a daemon). There is no C twin on this host; the
//! real-Xen comparison with `xl` is the timing test in `toolstack/tests/vm_toolstack.rs`.
//!
//! Groups:
//! - `toolstack/create-destroy`: create a paused 64 MiB PV domain (claim, populate, xenstore,
//!   stored config) and destroy it;
//! - `toolstack/mem-set`: one mem-set, alone (`uncontended`) and while a second process runs
//!   mem-set on the same domain in a loop (`contended-2-processes`);
//! - `toolstack/list-1000`: list 1000 domains (Xen + xenstore), with a fresh host handle per
//!   iteration (`open+list`, what an `rxl list` process does after exec) and on an open one.
//!
//! The bench binary is also the simulated host's xenstored (`__rxen-sim-xenstored`) and the
//! contending process (`__contend DIR DOMID`).

#[path = "../src/sim_host.rs"]
mod sim_host;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use criterion::Criterion;
use sim_host::{open, Dir};
use toolstack::config::DomainConfig;
use toolstack::lock::Locked;
use toolstack::memory::{self, Target};
use toolstack::{domain, Host};

fn config(name: &str, memory_mib: u64, maxmem_mib: u64) -> DomainConfig {
    let mut c = DomainConfig::new(name);
    c.memory_kib = memory_mib * 1024;
    c.maxmem_kib = maxmem_mib * 1024;
    c
}

fn create_destroy(c: &mut Criterion) {
    let dir = Dir::new("ts-create");
    let host = open(&dir.0, 8192);
    let mut root = Locked::root();
    let cfg = config("bench", 64, 64);
    c.benchmark_group("toolstack")
        .bench_function("create-destroy", |b| {
            b.iter(|| {
                let d = toolstack::create::create(&host, &mut root, &cfg, &mut |_| {})
                    .expect("create")
                    .domid;
                domain::destroy(&host, &mut root, d).expect("destroy");
            });
        });
}

fn mem_set(c: &mut Criterion) {
    let dir = Dir::new("ts-memset");
    let host = open(&dir.0, 8192);
    let mut root = Locked::root();
    let d = toolstack::create::create(&host, &mut root, &config("m", 64, 1024), &mut |_| {})
        .expect("create")
        .domid;
    let mut g = c.benchmark_group("toolstack/mem-set");
    let mut mib = 64;
    let mut step = |host: &Host, root: &mut Locked<'_, _>| {
        mib = if mib >= 1000 { 64 } else { mib + 8 };
        memory::set_memory_target(host, root, d, Target::Absolute(mib * 1024), true)
            .expect("mem-set");
    };
    g.bench_function("uncontended", |b| b.iter(|| step(&host, &mut root)));
    // The second process runs until its stdin closes.
    let mut other = Command::new(std::env::current_exe().expect("exe"))
        .arg("__contend")
        .arg(&dir.0)
        .arg(d.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the contending process");
    // It says when it has started its loop.
    let mut ready = [0u8; 1];
    other
        .stdout
        .as_mut()
        .expect("stdout")
        .read_exact(&mut ready)
        .expect("contender ready");
    g.bench_function("contended-2-processes", |b| {
        b.iter(|| step(&host, &mut root))
    });
    g.finish();
    drop(other.stdin.take());
    let status = other.wait().expect("wait");
    assert!(status.success(), "the contending process failed");
    let v = memory::observe(&host, &mut root, d).expect("observe");
    assert!(v.max_mem_matches_target(), "{v:?}");
}

fn contend(dir: &Path, domid: u16) -> ! {
    use std::io::Write;
    let host = open(dir, 8192);
    let mut root = Locked::root();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        s.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let _ = std::io::stdout().write_all(b"r");
    let _ = std::io::stdout().flush();
    let mut mib = 1000;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        mib = if mib <= 64 { 1000 } else { mib - 8 };
        memory::set_memory_target(&host, &mut root, domid, Target::Absolute(mib * 1024), true)
            .expect("contending mem-set");
    }
    std::process::exit(0);
}

fn list_1000(c: &mut Criterion, domains: usize) {
    let dir = Dir::new("ts-list");
    // `domains` domains of 1 MiB each: 1000 for a measurement, fewer when criterion only checks
    // that the bench runs (`--test`), since the setup alone takes tens of seconds.
    let host = open(&dir.0, 4096);
    let mut root = Locked::root();
    let start = std::time::Instant::now();
    for i in 0..domains {
        toolstack::create::create(
            &host,
            &mut root,
            &config(&format!("d{i}"), 1, 1),
            &mut |_| {},
        )
        .expect("create");
    }
    eprintln!(
        "toolstack/list-1000: setup created {domains} domains in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let mut g = c.benchmark_group("toolstack/list-1000");
    g.sample_size(10);
    g.bench_function("open+list", |b| {
        b.iter(|| {
            let h = open(&dir.0, 4096);
            assert_eq!(domain::list(&h).expect("list").len(), domains + 1);
        });
    });
    g.bench_function("list", |b| {
        b.iter(|| assert_eq!(domain::list(&host).expect("list").len(), domains + 1));
    });
    g.finish();
}

fn main() {
    toolstack::sim::run_daemon_if_asked();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__contend") {
        let dir = Path::new(&args[2]);
        contend(dir, args[3].parse().expect("domid"));
    }
    let mut c = Criterion::default().configure_from_args();
    create_destroy(&mut c);
    mem_set(&mut c);
    // `cargo bench` passes `--bench`; `cargo test` (which runs this once) and `-- --test` only
    // check that the bench runs.
    let check_only = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    list_1000(&mut c, if check_only { 20 } else { 1000 });
    c.final_summary();
}
