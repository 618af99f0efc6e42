//! The simulated host's daemon: our xenstored, with the simulated backend driver as one of its
//! clients, run as `EXE __rxen-sim-xenstored DIR`; starting and stopping it.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::FlockArg;
use xenctrl::evtchn::EventChannels;
use xenctrl::{DomainId, SimConfig, SimHypervisor, XenCtrl};
use xengnttab::Gntdev;

use super::{
    backend, lock_file, sim_err, SimOptions, SimPaths, XenRings, DAEMON_ARG, DAEMON_EXE_ENV,
};
use crate::error::Result;

/// The pid of the running daemon, if one holds the pid file locked.
pub(super) fn running_daemon(paths: &SimPaths) -> Result<Option<u32>> {
    let dir = &paths.dir;
    match lock_file(&paths.pidfile(), FlockArg::LockExclusiveNonblock) {
        Ok(Some(_free)) => Ok(None),
        Ok(None) => {
            let pid = std::fs::read_to_string(paths.pidfile()).unwrap_or_default();
            Ok(Some(pid.trim().parse().unwrap_or(0)))
        }
        Err(e) => Err(sim_err(dir, "cannot check the xenstored pid file", Some(e))),
    }
}

/// The binary that runs the host's xenstored and its hotplug scripts: the options', else
/// `$RXEN_SIM_DAEMON_EXE`, else this program.
pub(super) fn daemon_exe(opts: &SimOptions) -> Result<PathBuf> {
    Ok(match &opts.daemon_exe {
        Some(e) => e.clone(),
        None => match std::env::var_os(DAEMON_EXE_ENV) {
            Some(e) => PathBuf::from(e),
            None => std::env::current_exe().map_err(|e| {
                sim_err(
                    &opts.dir,
                    "cannot find this program to run xenstored",
                    Some(e),
                )
            })?,
        },
    })
}

pub(super) fn spawn_daemon(opts: &SimOptions, paths: &SimPaths) -> Result<()> {
    let dir = &opts.dir;
    let exe = daemon_exe(opts)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.log())
        .map_err(|e| sim_err(dir, "cannot open xenstored.log", Some(e)))?;
    // spawns: own
    let mut child = Command::new(&exe)
        .arg(DAEMON_ARG)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        // Its own process group: a ^C meant for the command that booted the host spares it.
        .process_group(0)
        .spawn()
        .map_err(|e| sim_err(dir, format!("cannot start {}", exe.display()), Some(e)))?;
    let mut line = String::new();
    let read = match child.stdout.take() {
        Some(out) => BufReader::new(out).read_line(&mut line),
        None => Ok(0),
    };
    if line.trim() == "ready" {
        // The daemon runs on; nobody waits for it but the pid file. Reap nothing here: it was
        // started in its own process group and outlives us.
        drop(child);
        return Ok(());
    }
    let status = child.wait().ok();
    let tail = std::fs::read_to_string(paths.log()).unwrap_or_default();
    let tail: Vec<&str> = tail.lines().rev().take(5).collect();
    Err(sim_err(
        dir,
        format!(
            "xenstored did not start ({} exited {}; log: {})",
            exe.display(),
            status.map_or_else(|| "?".to_owned(), |s| s.to_string()),
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ),
        read.err(),
    ))
}

/// Stop the simulated host's xenstored, if it runs, and wait until it has exited. The host
/// boots afresh at the next command. Returns whether a daemon was running.
///
/// # Errors
///
/// [`Error::SimHost`](crate::Error::SimHost) when the pid file cannot be read or the signal cannot be sent.
pub fn shutdown(dir: &Path) -> Result<bool> {
    let paths = SimPaths {
        dir: dir.to_owned(),
    };
    let Some(pid) = running_daemon(&paths)? else {
        return Ok(false);
    };
    let pid = i32::try_from(pid)
        .ok()
        .filter(|&p| p > 1)
        .ok_or_else(|| sim_err(dir, "the xenstored pid file holds no pid", None))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM).map_err(
        |e| {
            sim_err(
                dir,
                format!("cannot stop xenstored (pid {pid})"),
                Some(e.into()),
            )
        },
    )?;
    // The daemon holds the pid file locked until it exits: wait for the lock, not for time.
    lock_file(&paths.pidfile(), FlockArg::LockExclusive)
        .map_err(|e| sim_err(dir, "cannot wait for xenstored to stop", Some(e)))?;
    Ok(true)
}

/// If this process was started as the simulated host's xenstored (`EXE __rxen-sim-xenstored
/// DIR`) or as one of its hotplug scripts ([`super::hotplug`]), run it and exit; otherwise
/// return. Call it first thing in `main`.
pub fn run_daemon_if_asked() {
    super::hotplug::run_if_asked();
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(DAEMON_ARG)) {
        return;
    }
    let code = match args.next() {
        Some(dir) => match run_daemon(Path::new(&dir)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("rxen-sim-xenstored: {e}");
                1
            }
        },
        None => {
            eprintln!("rxen-sim-xenstored: usage: {DAEMON_ARG} DIR");
            2
        }
    };
    std::process::exit(code);
}

/// How often xenstored looks at guests' rings without an event: the simulated host raises an
/// event from another process (a guest's notification) on this process's descriptor only at
/// this process's next hypercall, so rings are also looked at on a timer.
const RING_POLL: Duration = Duration::from_millis(20);

/// xenstored's way to guests' store rings on the simulated host: the same connector as in a
/// real dom0, over simulated gntdev, privcmd and evtchn handles acting as dom0.
fn ring_connector(sim: &Arc<SimHypervisor>) -> Result<XenRings, xenstore::server::ServerError> {
    let opened = XenCtrl::on_simulator(Arc::clone(sim)).and_then(|xc| {
        let evtchn = EventChannels::on_simulator(Arc::clone(sim), DomainId::DOM0)?;
        Ok((xc, evtchn))
    });
    let (xc, evtchn) = opened.map_err(|e| {
        xenstore::server::ServerError::Spawn(io::Error::other(format!(
            "cannot open the simulated hypervisor for guests' rings: {e}"
        )))
    })?;
    let gntdev = Gntdev::on_simulator(Arc::clone(sim), DomainId::DOM0);
    // The daemon serves one host for its whole life: its handles live as long, so that each
    // ring can own its mapping and port.
    Ok(XenRings::new(
        Box::leak(Box::new(xc)),
        Box::leak(Box::new(gntdev)),
        Box::leak(Box::new(evtchn)),
        Some(RING_POLL),
    ))
}

fn run_daemon(dir: &Path) -> io::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let paths = SimPaths {
        dir: dir.to_owned(),
    };
    let Some(mut pidfile) = lock_file(&paths.pidfile(), FlockArg::LockExclusiveNonblock)? else {
        return Err(io::Error::other("another xenstored runs for this host"));
    };
    pidfile.set_len(0)?;
    writeln!(&mut *pidfile, "{}", std::process::id())?;
    // Block the stop signals before any thread exists, so only the waiter sees them.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.add(Signal::SIGHUP);
    stop.thread_block()?;
    // The host exists (boot made it before starting the daemon), so the config is not used.
    let sim = Arc::new(SimHypervisor::persistent(
        paths.hypervisor(),
        SimConfig::default(),
    )?);
    let server = xenstore::server::Server::new()
        .and_then(|s| s.listen(paths.socket()))
        .and_then(|s| s.serve_rings(Box::new(ring_connector(&sim)?)))
        .map_err(io::Error::other)?;
    // xenconsoled's part: consoles' rings, and their logs.
    super::console::serve_rings(Arc::clone(&sim), paths.console_log_dir())
        .map_err(io::Error::other)?;
    let ctl = server.controller();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = stop.wait() {
                eprintln!("rxen-sim-xenstored: {sig}, stopping");
            }
            let _ = ctl.stop();
        })?;
    // The host's dom0 backend driver (blkback and netback, simulated) is a client of this
    // xenstored; it connects now and is served once the server runs.
    let socket = paths.socket();
    std::thread::Builder::new()
        .name("sim-backend".into())
        .spawn(move || {
            let r = xenstore::Client::open_path(&socket).and_then(|xs| backend::run(&xs, 0));
            if let Err(e) = r {
                eprintln!("rxen-sim-xenstored: the simulated backend driver stopped: {e}");
            }
        })?;
    // xenstored's ear on Xen: VIRQ_DOM_EXC, for @releaseDomain (see `domains`).
    let (ctl, hypervisor) = (server.controller(), paths.hypervisor());
    std::thread::Builder::new()
        .name("dom-exc".into())
        .spawn(move || {
            if let Err(e) = super::domains::run(&hypervisor, &ctl) {
                eprintln!("rxen-sim-xenstored: the VIRQ_DOM_EXC watcher stopped: {e}");
            }
        })?;
    // The stand-in guests' PV drivers, once each has booted (see `guest`).
    let (ctl, hypervisor) = (server.controller(), paths.hypervisor());
    std::thread::Builder::new()
        .name("sim-guests".into())
        .spawn(move || {
            if let Err(e) = super::guest::run(hypervisor, ctl) {
                eprintln!("rxen-sim-xenstored: the stand-in guests stopped: {e}");
            }
        })?;
    eprintln!(
        "rxen-sim-xenstored: pid {} serving {}",
        std::process::id(),
        paths.socket().display()
    );
    {
        let mut out = io::stdout().lock();
        writeln!(out, "ready")?;
        out.flush()?;
    }
    // Nobody reads stdout any more.
    let devnull = File::options().write(true).open("/dev/null")?;
    nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&devnull), 1)?;
    let r = server.run().map_err(io::Error::other);
    // Unlink before unlocking (closing), as the lock algorithm wants.
    let _ = std::fs::remove_file(paths.pidfile());
    drop(pidfile);
    r
}
