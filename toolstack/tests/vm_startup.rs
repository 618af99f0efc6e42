//! How long `rxl` takes as a process, next to `xl`, on real Xen, and where the time goes. Run
//! inside the dom0 that `scripts/xen-vm-test` boots (feature `vm-tests`).
//!
//! Each figure is the median of [`RUNS`] runs (nine for destroy), the two tools interleaved so
//! that both see the same machine; the fastest runs are printed beside them. The median, not
//! the fastest: `xl destroy` is bimodal (0.3 s or 1.1 s, depending on whether the domain is
//! gone by its first look), and the median is what a user waits. The breakdown: the exec floor (a static busybox `true`), `rxl --version`
//! (exec, relocation, runtime start-up and argument parsing, no Xen), the library's own
//! `Host::open` and `domain::list`, and the whole `rxl list`.
//!
//! The goal, half, is of each tool's time above the exec floor, measured in the same loop, and
//! printed as met or not (speed targets are judged by the criterion benchmarks): both tools
//! pay the floor (a fork and exec of the smallest static program), and a busy host inflates it
//! without either tool doing more work (15 ms in an idle VM, 85 ms with a second VM beside it
//! on the same two host cores). The whole-process ratios are printed beside it.

mod vm_common;
use vm_common::host;

use std::process::Command;
use std::time::{Duration, Instant};

use toolstack::domain;

/// Runs per figure.
const RUNS: usize = 15;

/// The statically built `rxl`, shipped beside the tests by `scripts/xen-vm-test`.
const RXL: &str = "/rxen/bin/rxl";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fastest(v: &[Duration]) -> Duration {
    v.iter().copied().min().expect("at least one run")
}

fn process(program: &str, args: &[&str]) -> Duration {
    let t = Instant::now();
    // spawns: the program passed to process
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[test]
fn rxl_list_and_destroy_timed_against_xl() {
    let (mut xl_list, mut rxl_list, mut floor, mut version) = (vec![], vec![], vec![], vec![]);
    let (mut open, mut list) = (vec![], vec![]);
    let (mut xc_open, mut xs_open) = (vec![], vec![]);
    for _ in 0..RUNS {
        let t = Instant::now();
        drop(xenctrl::XenCtrl::open().expect("XenCtrl::open"));
        xc_open.push(t.elapsed());
        let t = Instant::now();
        drop(xenstore::Client::open().expect("xenstore"));
        xs_open.push(t.elapsed());
        xl_list.push(process("xl", &["list"]));
        rxl_list.push(process(RXL, &["list"]));
        floor.push(process("true", &[]));
        version.push(process(RXL, &["--version"]));
        let t = Instant::now();
        let h = host();
        open.push(t.elapsed());
        let t = Instant::now();
        drop(domain::list(&h).expect("list"));
        list.push(t.elapsed());
    }
    let mut xl_destroy = vec![];
    let mut rxl_destroy = vec![];
    let paused = |name: &str| {
        let name = format!("name=\"{name}\"");
        vm_common::vm_xl::xl_create(&["-p", "/etc/xen/rxen-guest.cfg", &name]);
    };
    for i in 0..9 {
        paused(&format!("t-startup-{i}-xl"));
        xl_destroy.push(process("xl", &["destroy", &format!("t-startup-{i}-xl")]));
        paused(&format!("t-startup-{i}-rxl"));
        rxl_destroy.push(process(RXL, &["destroy", &format!("t-startup-{i}-rxl")]));
    }
    println!(
        "STARTUP fastest: list xl {:.1} ms, rxl {:.1} ms; destroy xl {:.1} ms, rxl {:.1} ms",
        ms(fastest(&xl_list)),
        ms(fastest(&rxl_list)),
        ms(fastest(&xl_destroy)),
        ms(fastest(&rxl_destroy)),
    );
    let (xl_list, rxl_list) = (median(xl_list), median(rxl_list));
    let (xl_destroy, rxl_destroy) = (median(xl_destroy), median(rxl_destroy));
    println!(
        "STARTUP medians: list xl {:.1} ms, rxl {:.1} ms ({:.2}x); destroy: xl {:.1} ms, rxl {:.1} ms \
         ({:.2}x); breakdown of rxl list: exec floor (busybox true) {:.1} ms, rxl --version \
         {:.1} ms, Host::open {:.1} ms (XenCtrl::open {:.1} ms, xenstore connect {:.1} ms), \
         domain::list {:.1} ms",
        ms(xl_list),
        ms(rxl_list),
        ms(rxl_list) / ms(xl_list),
        ms(xl_destroy),
        ms(rxl_destroy),
        ms(rxl_destroy) / ms(xl_destroy),
        ms(median(floor.clone())),
        ms(median(version)),
        ms(median(open)),
        ms(median(xc_open)),
        ms(median(xs_open)),
        ms(median(list)),
    );
    let floor = median(floor);
    let above = |d: Duration| d.saturating_sub(floor);
    println!(
        "STARTUP above the exec floor ({:.1} ms): list xl {:.1} ms, rxl {:.1} ms ({:.2}x); destroy \
         xl {:.1} ms, rxl {:.1} ms ({:.2}x)",
        ms(floor),
        ms(above(xl_list)),
        ms(above(rxl_list)),
        ms(above(rxl_list)) / ms(above(xl_list)),
        ms(above(xl_destroy)),
        ms(above(rxl_destroy)),
        ms(above(rxl_destroy)) / ms(above(xl_destroy)),
    );
    // The goal (at most half of xl's time above the floor) is reported, not asserted: speed
    // targets are judged by the criterion benchmarks, and a timed assertion under TCG fails on
    // the host's load (destroy measured 0.44x and 0.53x in two runs of the same build).
    let verdict = |ours: Duration, theirs: Duration| {
        if above(ours) <= above(theirs) / 2 {
            "met"
        } else {
            "NOT met"
        }
    };
    println!(
        "STARTUP goal, at most half of xl's time above the floor: list {}, destroy {}",
        verdict(rxl_list, xl_list),
        verdict(rxl_destroy, xl_destroy),
    );
}
