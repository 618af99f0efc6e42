//! The Rust side of `tests/vm_speed.rs`: the twin of `tests/vm_speed_c.c`, with the same
//! arguments, the same loops and the same one-line report, so that both sides are timed the
//! same way: a fresh single-threaded process, its setup untimed, an untimed eighth of the loop
//! first. `scripts/xen-vm-test` builds it statically (feature `vm-tests`) into `/rxen/bin`.
//!
//! ```text
//! vm_speed_rust gnttab PAGES ITERS        map+unmap PAGES grants dom0 shares with itself
//! vm_speed_rust evtchn ITERS              round trips between two bound dom0 ports
//! vm_speed_rust foreign DOMID ITERS FILE  foreign map+unmap of the frames listed in FILE
//! ```
//! Report: `vm_speed_rust PATH count=N iters=I ns_per_op=X`.

use std::process::ExitCode;
use std::time::Instant;

use xenctrl::evtchn::{BoundPort, EventChannels, Port};
use xenctrl::volatile::ReadWrite;
use xenctrl::{DomainId, XenCtrl};
use xengnttab::{Gntalloc, Gntdev};

type Result<T> = std::result::Result<T, String>;

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T> {
    s.parse().map_err(|_| format!("bad {what}: {s}"))
}

/// Runs `op` `iters / 8 + 1` times untimed, then `iters` times timed; nanoseconds per call.
fn time(iters: u64, mut op: impl FnMut() -> Result<()>) -> Result<u128> {
    for _ in 0..iters / 8 + 1 {
        op()?;
    }
    let t = Instant::now();
    for _ in 0..iters {
        op()?;
    }
    Ok(t.elapsed().as_nanos() / u128::from(iters.max(1)))
}

fn report(path: &str, count: usize, iters: u64, ns: u128) {
    println!("vm_speed_rust {path} count={count} iters={iters} ns_per_op={ns}");
}

fn gnttab(pages: usize, iters: u64) -> Result<()> {
    let gntalloc = Gntalloc::open().map_err(|e| format!("open gntalloc: {e}"))?;
    let gntdev = Gntdev::open().map_err(|e| format!("open gntdev: {e}"))?;
    let shared = gntalloc
        .share(DomainId::DOM0, pages, true)
        .map_err(|e| format!("share {pages} pages: {e}"))?;
    let refs = shared.refs();
    let ns = time(iters, || {
        let m = gntdev
            .map(DomainId::DOM0, refs)
            .map_err(|e| format!("map: {e}"))?;
        drop(m);
        Ok(())
    })?;
    report("gnttab", pages, iters, ns);
    Ok(())
}

fn wait_for(events: &EventChannels, want: Port) -> Result<()> {
    let got = events.wait().map_err(|e| format!("wait: {e}"))?;
    if got != want {
        return Err(format!("event on port {got}, expected {want}"));
    }
    events.unmask(want).map_err(|e| format!("unmask: {e}"))
}

/// A dom0 port bound unbound and a second port bound interdomain to it, after the event
/// Xen sets pending on a freshly bound interdomain port (notifications sent to the unbound
/// port before could have been lost) is taken.
fn bind_pair(events: &EventChannels) -> Result<(BoundPort<'_>, BoundPort<'_>)> {
    let a = events
        .bind_unbound(DomainId::DOM0)
        .map_err(|e| format!("bind unbound: {e}"))?;
    let b = events
        .bind_interdomain(DomainId::DOM0, a.port())
        .map_err(|e| format!("bind interdomain: {e}"))?;
    wait_for(events, b.port())?;
    Ok((a, b))
}

fn evtchn(iters: u64) -> Result<()> {
    let events = EventChannels::open().map_err(|e| format!("open evtchn: {e}"))?;
    let (a, b) = bind_pair(&events)?;
    let (a, b) = (a.port(), b.port());
    let ns = time(iters, || {
        events.notify(b).map_err(|e| format!("notify: {e}"))?;
        wait_for(&events, a)?;
        events.notify(a).map_err(|e| format!("notify: {e}"))?;
        wait_for(&events, b)
    })?;
    report("evtchn", 1, iters, ns);
    Ok(())
}

fn foreign(domid: u16, iters: u64, file: &str) -> Result<()> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    let frames = text
        .split_whitespace()
        .map(|w| num::<u64>(w, "frame"))
        .collect::<Result<Vec<u64>>>()?;
    if frames.is_empty() {
        return Err(format!("no frames in {file}"));
    }
    let xc = XenCtrl::open().map_err(|e| format!("open privcmd: {e}"))?;
    let domain = DomainId::new(domid);
    let ns = time(iters, || {
        let m = xc
            .map_foreign::<ReadWrite>(domain, &frames)
            .map_err(|e| format!("map: {e}"))?;
        drop(m);
        Ok(())
    })?;
    report("foreign", frames.len(), iters, ns);
    Ok(())
}

fn run(args: &[String]) -> Result<()> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args[..] {
        ["gnttab", pages, iters] => gnttab(num(pages, "page count")?, num(iters, "iterations")?),
        ["evtchn", iters] => evtchn(num(iters, "iterations")?),
        ["foreign", domid, iters, file] => {
            foreign(num(domid, "domid")?, num(iters, "iterations")?, file)
        }
        _ => Err("usage: vm_speed_rust gnttab PAGES ITERS | evtchn ITERS | \
                  foreign DOMID ITERS FRAMES-FILE"
            .into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vm_speed_rust: {e}");
            ExitCode::FAILURE
        }
    }
}
