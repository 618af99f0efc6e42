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
//! - The daemon's xenstored serves guests' store rings as well as its socket: it maps each
//!   introduced domain's store page and binds its event channel ([`XenRings`], the same
//!   connector a real dom0 would use). Its xenconsoled stand-in serves each console's ring on
//!   a pty and keeps the last few KiB of the output in `DIR/console/<domid>.log`
//!   ([`SimPaths::console_log`]).
//! - The backend driver ([`backend`], blkback's and netback's part, and the console backends')
//!   runs in the daemon as a xenstore client. The hotplug scripts are stubs ([`hotplug`]) that
//!   boot writes into `DIR/scripts`, and the toolstack runs them as it runs Xen's.
//!
//! The daemon is the toolstack binary itself, run as `EXE __rxen-sim-xenstored DIR`: a binary
//! that uses this module calls [`run_daemon_if_asked`] first thing in `main`.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use xenctrl::SimConfig;

use crate::error::Error;

pub mod backend;
mod console;
mod daemon;
mod domains;
mod guest;
mod host;
pub mod hotplug;
mod rings;

pub use daemon::{run_daemon_if_asked, shutdown};
pub use host::connect;
pub use rings::XenRings;

/// The first argument that makes a toolstack binary run the simulated host's xenstored.
pub const DAEMON_ARG: &str = "__rxen-sim-xenstored";
/// The environment variable naming the simulated host's state directory.
pub const SIM_DIR_ENV: &str = "RXEN_SIM_DIR";
/// The environment variable naming the binary to run as the daemon (default: this one).
pub const DAEMON_EXE_ENV: &str = "RXEN_SIM_DAEMON_EXE";
/// The simulated host's stand-in for `/var/lib/xen`, under its state directory.
pub const LIBXL_SUBDIR: &str = "xen-lib";

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
    /// The files of the host in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SimPaths { dir: dir.into() }
    }

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
    /// The stand-in for `/var/lib/xen` ([`crate::host::LIBXL_DIR`]): libxl's per-domain lock
    /// files and `libxl-json` documents.
    pub fn libxl_dir(&self) -> PathBuf {
        self.dir.join(LIBXL_SUBDIR)
    }
    /// The stored domain configs ([`crate::config::stored::ConfigStore::under`]).
    pub fn configs_dir(&self) -> PathBuf {
        self.dir.join("domains")
    }
    /// The stand-in for `/etc/xen/scripts` ([`crate::host::XEN_SCRIPT_DIR`]): the hotplug
    /// scripts the simulated host's backend expects the toolstack to run.
    pub fn hotplug_scripts_dir(&self) -> PathBuf {
        self.dir.join("scripts")
    }
    /// The simulated xenconsoled's guest logs: `<domid>.log`, the last few KiB of each
    /// console's output.
    pub fn console_log_dir(&self) -> PathBuf {
        self.dir.join("console")
    }
    /// Domain `domid`'s console log (see [`SimPaths::console_log_dir`]).
    pub fn console_log(&self, domid: crate::lock::DomId) -> PathBuf {
        self.console_log_dir().join(format!("{domid}.log"))
    }
    /// What a boot wipes: the toolstack's per-domain state of the previous boot (`locks` is
    /// where older versions kept their lock files), and the console logs of its domains.
    pub(crate) fn per_boot_dirs(&self) -> [PathBuf; 4] {
        [
            self.dir.join("locks"),
            self.configs_dir(),
            self.libxl_dir(),
            self.console_log_dir(),
        ]
    }
}

pub(crate) fn sim_err(dir: &Path, what: impl Into<String>, source: Option<io::Error>) -> Error {
    Error::SimHost {
        dir: dir.to_owned(),
        what: what.into(),
        source: source.map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
    }
}

pub(crate) fn lock_file(path: &Path, arg: FlockArg) -> io::Result<Option<Flock<File>>> {
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
