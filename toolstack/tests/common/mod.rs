//! Shared helpers for the simulated-host tests: a host in a temporary directory (its xenstored
//! stopped on drop), `rxl` runs against it, and the test side of the hook protocol.

#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use toolstack::memory::MemoryView;

/// How long a test waits for a process that should make progress before calling it stuck. A
/// bound on failure, never a way to order events.
pub const STUCK: Duration = Duration::from_secs(60);

pub const RXL: &str = env!("CARGO_BIN_EXE_rxl");

/// A simulated host in a temporary directory.
pub struct SimHost {
    pub dir: tempfile::TempDir,
    boot_args: Vec<String>,
}

impl SimHost {
    /// A host that boots (on first command) with `total_mib` of RAM and `dom0_mib` for dom0.
    pub fn new(total_mib: u64, dom0_mib: u64) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("rxl-test-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let host = SimHost {
            dir,
            boot_args: vec![
                format!("--sim-memory={total_mib}"),
                format!("--sim-dom0-memory={dom0_mib}"),
            ],
        };
        let out = host.rxl(&["list"]);
        assert!(out.status.success(), "boot: {}", stderr(&out));
        host
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// An `rxl` command against this host.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_of(Path::new(RXL), args)
    }

    /// A command against this host, run by the `rxl` at `exe` (the host's xenstored stays the
    /// one [`RXL`] runs).
    pub fn command_of(&self, exe: &Path, args: &[&str]) -> Command {
        // spawns: own
        let mut c = Command::new(exe);
        c.args(&self.boot_args)
            .args(args)
            .env("RXEN_SIM_DIR", self.dir.path())
            .env("RXEN_SIM_DAEMON_EXE", RXL)
            .env_remove(toolstack::hooks::HOOK_SOCKET_ENV)
            .env_remove(toolstack::hooks::SKIP_LOCK_ENV)
            .stdin(Stdio::null());
        c
    }

    /// `spec` (a disk spec whose target is an absolute path, `/x,raw,xvda`) with its target
    /// made a file in this host's `images/` directory, which exists from now on: the toolstack
    /// checks raw disk targets on every host, as libxl does.
    pub fn disk(&self, spec: &str) -> String {
        let (target, rest) = spec.split_once(',').unwrap_or((spec, ""));
        format!("{},{rest}", self.image(target))
    }

    /// The absolute path `target` made a file in this host's `images/` directory (the same
    /// path for the same `target`, and for a path made so already).
    pub fn image(&self, target: &str) -> String {
        let images = self.dir.path().join("images");
        if target.starts_with(&images.display().to_string()) {
            return target.to_owned();
        }
        let path = images.join(target.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("images dir");
        std::fs::write(&path, b"").expect("image file");
        path.display().to_string()
    }

    /// This host opened by the toolstack library in this process (to see its errors as
    /// values). The host must be booted (as [`SimHost::new`] leaves it).
    pub fn lib(&self) -> toolstack::Host {
        toolstack::Host::open(&toolstack::HostOptions {
            force_simulated: true,
            sim_dir: Some(self.dir.path().to_owned()),
            sim_daemon_exe: Some(RXL.into()),
            ..toolstack::HostOptions::default()
        })
        .expect("open the host")
    }

    /// Run `rxl` to completion.
    pub fn rxl(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run rxl")
    }

    /// Run `rxl`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.rxl(args);
        assert!(
            out.status.success(),
            "rxl {args:?} failed: {}",
            stderr(&out)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// A config file in the host's directory.
    pub fn cfg(&self, name: &str, memory_mib: u64, maxmem_mib: u64) -> PathBuf {
        let p = self.dir.path().join(format!("{name}.cfg"));
        std::fs::write(
            &p,
            format!(
                "name = \"{name}\"\ntype = \"pv\"\nmemory = {memory_mib}\nmaxmem = {maxmem_mib}\n\
                 vcpus = 1\n"
            ),
        )
        .expect("write cfg");
        p
    }

    /// Create a domain and return its id.
    pub fn create(&self, name: &str, memory_mib: u64, maxmem_mib: u64) -> u16 {
        let cfg = self.cfg(name, memory_mib, maxmem_mib);
        self.ok(&["create", "-p", cfg.to_str().expect("path")]);
        self.domid(name).expect("created domain is listed")
    }

    /// `rxl list --json`.
    pub fn list(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["list", "--json"])).expect("list json")
    }

    pub fn domid(&self, name: &str) -> Option<u16> {
        self.list()
            .iter()
            .find(|d| d["name"] == name)
            .map(|d| u16::try_from(d["domid"].as_u64().expect("domid")).expect("a domid"))
    }

    /// `rxl mem-check`: the domain's memory under its userdata lock.
    pub fn observe(&self, domain: &str) -> MemoryView {
        let out = self.ok(&["mem-check", domain]);
        parse_view(&out)
    }

    /// The xenstore paths below `path` (`rxl xenstore-ls`).
    pub fn xenstore_ls(&self, path: &str) -> String {
        self.ok(&["xenstore-ls", path])
    }
}

pub fn parse_view(json: &str) -> MemoryView {
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("mem-check json");
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {json}"));
    MemoryView {
        target_kib: n("target_kib"),
        static_max_kib: n("static_max_kib"),
        videoram_kib: n("videoram_kib"),
        max_mem_kib: n("max_mem_kib"),
        tot_pages: n("tot_pages"),
    }
}

impl Drop for SimHost {
    fn drop(&mut self) {
        // spawns: own
        let _ = Command::new(RXL)
            .arg("sim-stop")
            .env("RXEN_SIM_DIR", self.dir.path())
            .output();
    }
}

/// The device failure behind `r`'s error (panics, with the error, if `r` is not one).
pub fn device_error<T: std::fmt::Debug>(
    r: Result<T, toolstack::Error>,
) -> toolstack::device::DeviceError {
    match r {
        Err(toolstack::Error::Device { source, .. }) => source,
        other => panic!("expected a device error, got {other:?}"),
    }
}

/// The options of an add or remove that waits `secs` seconds.
pub fn within(secs: u64) -> toolstack::device::Options {
    toolstack::device::Options {
        timeout: Duration::from_secs(secs),
        ..toolstack::device::Options::default()
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Wait for a child with a bound: panics (after killing it) if it is stuck.
pub fn wait(child: Child, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(STUCK) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
                nix::sys::signal::SIGKILL,
            );
            panic!("{what} (pid {pid}) is stuck");
        }
    }
}

/// The test's end of the hook protocol: a socket processes connect to, one connection each.
pub struct Hooks {
    pub path: PathBuf,
    listener: UnixListener,
}

/// One process stopped at hook points.
pub struct Hooked {
    reader: BufReader<UnixStream>,
    pub name: &'static str,
}

impl Hooks {
    pub fn new(dir: &Path) -> Self {
        let path = dir.join("hooks.sock");
        let listener = UnixListener::bind(&path).expect("bind hook socket");
        Hooks { path, listener }
    }

    /// The next process to reach a hook point (started after the previous one connected).
    pub fn accept(&self, name: &'static str) -> Hooked {
        let mut fds = [nix::poll::PollFd::new(
            self.listener.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let n = nix::poll::poll(
            &mut fds,
            nix::poll::PollTimeout::try_from(STUCK).unwrap_or(nix::poll::PollTimeout::MAX),
        )
        .expect("poll");
        assert!(n > 0, "{name} never reached a hook point");
        let (s, _) = self.listener.accept().expect("accept");
        s.set_read_timeout(Some(STUCK)).expect("timeout");
        Hooked {
            reader: BufReader::new(s),
            name,
        }
    }
}

impl Hooked {
    /// The next hook point reached, or `None` when the process finished.
    pub fn next(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(line.trim().to_owned()),
            Err(e) => panic!("{}: hook connection: {e} (stuck?)", self.name),
        }
    }

    /// Expect `point` next.
    pub fn expect(&mut self, point: &str) {
        let got = self.next();
        assert_eq!(
            got.as_deref(),
            Some(point),
            "{} stopped elsewhere",
            self.name
        );
    }

    /// Let the process go on.
    pub fn go(&mut self) {
        self.reader
            .get_mut()
            .write_all(b"go\n")
            .expect("answer hook");
    }

    /// Make the step fail.
    pub fn fail(&mut self) {
        self.reader
            .get_mut()
            .write_all(b"fail\n")
            .expect("answer hook");
    }

    /// Answer `go` to every hook point until the process finishes.
    pub fn run_to_end(&mut self) {
        while self.next().is_some() {
            self.go();
        }
    }
}

/// A seed for randomised tests: `RXEN_TEST_SEED` or the clock; printed so a failure can be
/// replayed.
pub fn seed() -> u64 {
    let seed = std::env::var("RXEN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() ^ u64::from(d.subsec_nanos()))
                .unwrap_or(1)
        });
    eprintln!("seed: RXEN_TEST_SEED={seed}");
    seed
}
