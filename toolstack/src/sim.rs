//! The simulated host: a Xen host whose hypervisor and xenstore live in a state directory, so
//! that successive and concurrent toolstack processes see one machine.
//!
//! - The hypervisor is xenctrl's simulator kept in `DIR/hypervisor`
//!   ([`xenctrl::SimHypervisor::persistent`]): every hypercall locks the file, runs in the
//!   calling process against its own hypercall buffers, and saves the model atomically. There
//!   is no hypervisor daemon.
//! - xenstore is served by our xenstored, a daemon on `DIR/xenstored.sock`, started by the first
//!   command that finds none running. Starting is race-free: it happens under an exclusive
//!   `flock` of `DIR/boot.lock`, and the daemon holds `DIR/xenstored.pid` locked for its life.
//! - Starting xenstored is the host's boot: the hypervisor state is reset (every domain is gone,
//!   as after a reboot), the per-domain locks and stored configs (`DIR/xen-lib`, the stand-in
//!   for `/var/lib/xen` with libxl's lock files and `libxl-json` documents, and `DIR/domains`)
//!   are wiped, and dom0's xenstore entries are written. So the two halves of the host always
//!   agree: a xenstore tree never outlives the domains it describes, nor the other way round.
//!
//! The daemon is the toolstack binary itself, run as `EXE __rxen-sim-xenstored DIR`: a binary
//! that uses this module calls [`run_daemon_if_asked`] first thing in `main`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{Flock, FlockArg};
use xenctrl::{SimConfig, SimHypervisor, XenCtrl};

use crate::error::{Error, Result};

/// The first argument that makes a toolstack binary run the simulated host's xenstored.
pub const DAEMON_ARG: &str = "__rxen-sim-xenstored";
/// The environment variable naming the simulated host's state directory.
pub const SIM_DIR_ENV: &str = "RXEN_SIM_DIR";
/// The environment variable naming the binary to run as the daemon (default: this one).
pub const DAEMON_EXE_ENV: &str = "RXEN_SIM_DAEMON_EXE";

/// dom0's minimum memory target (libxl's `LIBXL_MIN_DOM0_MEM`), KiB.
pub const MIN_DOM0_KIB: u64 = 128 * 1024;

/// The default state directory: `$RXEN_SIM_DIR`, else `$XDG_STATE_HOME/rxen/sim`, else
/// `~/.local/state/rxen/sim`, else `/tmp/rxen-sim-UID`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(SIM_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("rxen/sim");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(h).join(".local/state/rxen/sim");
    }
    PathBuf::from(format!("/tmp/rxen-sim-{}", nix::unistd::getuid()))
}

/// How to reach (and if need be boot) a simulated host.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The state directory.
    pub dir: PathBuf,
    /// The machine to boot when the host is not running (ignored when it is).
    pub config: SimConfig,
    /// The binary to run as the daemon: it must call [`run_daemon_if_asked`].
    pub daemon_exe: Option<PathBuf>,
}

impl SimOptions {
    /// The host in `dir`, booted (if need be) as a 8 GiB, 4-CPU machine with a 1 GiB dom0.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SimOptions {
            dir: dir.into(),
            config: SimConfig::default(),
            daemon_exe: None,
        }
    }
}

/// The files of a simulated host.
#[derive(Clone, Debug)]
pub struct SimPaths {
    /// The state directory.
    pub dir: PathBuf,
}

impl SimPaths {
    /// The hypervisor's state file.
    pub fn hypervisor(&self) -> PathBuf {
        self.dir.join("hypervisor")
    }
    /// xenstored's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("xenstored.sock")
    }
    /// The daemon's pid file, locked while it runs.
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("xenstored.pid")
    }
    /// The daemon's log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("xenstored.log")
    }
    /// Taken exclusively while booting.
    pub fn boot_lock(&self) -> PathBuf {
        self.dir.join("boot.lock")
    }
}

fn sim_err(dir: &Path, what: impl Into<String>, source: Option<io::Error>) -> Error {
    Error::SimHost {
        dir: dir.to_owned(),
        what: what.into(),
        source,
    }
}

fn lock_file(path: &Path, arg: FlockArg) -> io::Result<Option<Flock<File>>> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    match Flock::lock(f, arg) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// Connect to the simulated host in `opts.dir`, booting it first if xenstored is not running.
/// Returns the hypervisor handle, a xenstore client, and whether this call booted the host.
///
/// # Errors
///
/// [`Error::SimHost`] when the directory, the state file or the daemon cannot be set up.
pub fn connect(opts: &SimOptions) -> Result<(XenCtrl, xenstore::Client, bool)> {
    let paths = SimPaths {
        dir: opts.dir.clone(),
    };
    let dir = &opts.dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| sim_err(dir, "cannot create the state directory", Some(e)))?;
    let mut booted = false;
    let xs = match xenstore::Client::open_path(paths.socket()) {
        Ok(xs) => xs,
        Err(_) => {
            let _boot = lock_file(&paths.boot_lock(), FlockArg::LockExclusive)
                .map_err(|e| sim_err(dir, "cannot take the boot lock", Some(e)))?;
            // Someone may have booted it while we waited for the lock.
            match xenstore::Client::open_path(paths.socket()) {
                Ok(xs) => xs,
                Err(_) => {
                    booted = true;
                    boot(opts, &paths)?
                }
            }
        }
    };
    let xc = XenCtrl::simulated_persistent(&paths.hypervisor(), opts.config.clone())
        .map_err(|e| sim_err(dir, format!("cannot open the hypervisor state: {e}"), None))?;
    Ok((xc, xs, booted))
}

/// Boot the host: fresh hypervisor, wiped toolstack state, xenstored started, dom0 entries.
/// Called with the boot lock held and no xenstored answering.
fn boot(opts: &SimOptions, paths: &SimPaths) -> Result<xenstore::Client> {
    let dir = &opts.dir;
    if let Some(pid) = running_daemon(paths)? {
        return Err(sim_err(
            dir,
            format!("xenstored (pid {pid}) holds the host but does not answer on its socket"),
            None,
        ));
    }
    let sim = SimHypervisor::persistent_reset(paths.hypervisor(), opts.config.clone())
        .map_err(|e| sim_err(dir, "cannot reset the hypervisor state", Some(e)))?;
    let (dom0_kib, dom0_vcpus) = sim.with_state(|s| {
        let d = &s.domains[&0];
        (d.tot_pages * 4, d.config.max_vcpus)
    });
    drop(sim);
    for sub in ["locks", "domains", crate::host::SIM_LIBXL_SUBDIR] {
        match std::fs::remove_dir_all(dir.join(sub)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(sim_err(dir, format!("cannot wipe {sub}/"), Some(e))),
        }
    }
    spawn_daemon(opts, paths)?;
    let xs = xenstore::Client::open_path(paths.socket()).map_err(Error::OpenXenstore)?;
    // What xen-init-dom0 writes, plus dom0's memory nodes (libxl__fill_dom0_memory_info).
    xs.transaction(|t| {
        t.write("/local/domain/0/name", "Domain-0")?;
        t.write("/local/domain/0/domid", "0")?;
        t.write("/local/domain/0/memory/target", dom0_kib.to_string())?;
        t.write("/local/domain/0/memory/static-max", dom0_kib.to_string())?;
        for cpu in 0..dom0_vcpus {
            t.write(
                format!("/local/domain/0/cpu/{cpu}/availability").as_str(),
                "online",
            )?;
        }
        t.write("/tool/xenstored/domid", "0")?;
        Ok(())
    })
    .map_err(|source| Error::XenstoreHost {
        what: "cannot write dom0's xenstore entries",
        source,
    })?;
    Ok(xs)
}

/// The pid of the running daemon, if one holds the pid file locked.
fn running_daemon(paths: &SimPaths) -> Result<Option<u32>> {
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

fn spawn_daemon(opts: &SimOptions, paths: &SimPaths) -> Result<()> {
    let dir = &opts.dir;
    let exe = match &opts.daemon_exe {
        Some(e) => e.clone(),
        None => match std::env::var_os(DAEMON_EXE_ENV) {
            Some(e) => PathBuf::from(e),
            None => std::env::current_exe()
                .map_err(|e| sim_err(dir, "cannot find this program to run xenstored", Some(e)))?,
        },
    };
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
/// [`Error::SimHost`] when the pid file cannot be read or the signal cannot be sent.
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
/// DIR`), run it and exit; otherwise return. Call it first thing in `main`.
pub fn run_daemon_if_asked() {
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
    let server = xenstore::server::Server::new()
        .and_then(|s| s.listen(paths.socket()))
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
            let r = xenstore::Client::open_path(&socket)
                .and_then(|xs| crate::device::simback::run(&xs, 0));
            if let Err(e) = r {
                eprintln!("rxen-sim-xenstored: the simulated backend driver stopped: {e}");
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
