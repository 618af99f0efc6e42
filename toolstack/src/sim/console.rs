//! The simulated host's stand-in for xenconsoled.
//!
//! xenconsoled gives each guest console a pty: it opens a pair, makes the slave raw, keeps both
//! ends open, writes the slave's name into the console's `tty` node, and then copies the guest's
//! console ring to the master and what is typed on the master into the ring. `rxl console` (like
//! `xl console`) opens the slave named in `tty`.
//!
//! Here the simulated backend ([`super::backend`]) does the same for each primary console once
//! its `ring-ref` and `port` are published: a real pty, raw, both ends kept, its slave's name in
//! `tty`. Then, as xenconsoled's `console_create_ring` does, it maps the guest's console page
//! (grant reference 0 first, else a foreign mapping of `ring-ref`: see [`super::rings`]) and
//! binds the console's event channel, and copies both ways:
//!
//! - what the guest writes to the `out` queue goes to the pty master, so a reader of the slave
//!   (`rxl console`) sees it. The slave is kept open, so output written while nobody reads
//!   waits in the pty (as with xenconsoled): a reader that attaches later sees it first. Past
//!   what the pty holds, up to [`PENDING_MAX`] more waits here, the oldest dropped beyond that
//!   (xenconsoled discards past the console's `limit` the same way);
//! - what is written to the slave (typed into `rxl console`) goes into the `in` queue;
//! - the guest is notified after either.
//!
//! A copy of the guest's output is kept in `DIR/console/<domid>.log` (the last
//! [`LOG_KEEP`]–[`LOG_MAX`] bytes), as xenconsoled's guest log, for tests and for a look at a
//! console after the fact. Indices a guest corrupts (a producer more than a queue ahead) are
//! ignored, as xenconsoled ignores them, with a line in the daemon's log.
//!
//! A console whose page cannot be mapped (a `ring-ref` that names no page of the guest, no
//! grant: a test that publishes a made-up ring) gets a pty whose far end **echoes** what it is
//! sent (bytes written to the slave come back out of it), so `rxl console` copies both ways on
//! this host even without a guest. When the console's directory goes (the domain was
//! destroyed), the pty is closed: a reader of the slave sees the end of the console, as with
//! xenconsoled.
//!
//! Events from a guest in another process reach this one's event-channel descriptor only when
//! this process next calls the simulated hypervisor, so each console also looks at its ring
//! every [`RING_TICK`].

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use nix::sys::termios;
use xenctrl::evtchn::{EventChannels, Port};
use xenctrl::{DomainId, SimHypervisor, XenCtrl};
use xengnttab::Gntdev;

use super::rings::{map_guest_page, GuestPage, GRANT_CONSOLE};
use crate::lock::DomId;

/// How often a console looks at its ring without an event.
pub const RING_TICK: Duration = Duration::from_millis(20);
/// Guest output waiting for room in the pty, at most; older bytes are dropped beyond it.
pub const PENDING_MAX: usize = 64 * 1024;
/// A console log is cut back to its last [`LOG_KEEP`] bytes once it passes this size.
pub const LOG_MAX: u64 = 64 * 1024;
/// What a console log keeps when it is cut back.
pub const LOG_KEEP: u64 = 16 * 1024;

/// `struct xencons_interface` (`public/io/console.h`): the queues and their free-running
/// indices.
mod layout {
    pub const IN: usize = 0;
    pub const IN_SIZE: u32 = 1024;
    pub const OUT: usize = 1024;
    pub const OUT_SIZE: u32 = 2048;
    pub const IN_CONS: usize = 3072;
    pub const IN_PROD: usize = 3076;
    pub const OUT_CONS: usize = 3080;
    pub const OUT_PROD: usize = 3084;
}

/// One console's pty: the slave's name, the slave kept open (so the master never sees a
/// hangup between readers, and output waits in it), and the write end of the pipe that stops
/// its thread.
struct SimConsole {
    tty: String,
    _slave: OwnedFd,
    _stop: OwnedFd,
}

static CONSOLES: Mutex<BTreeMap<DomId, SimConsole>> = Mutex::new(BTreeMap::new());

fn consoles() -> MutexGuard<'static, BTreeMap<DomId, SimConsole>> {
    CONSOLES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where consoles' rings are reached, set once by the daemon ([`serve_rings`]): the
/// hypervisor and gntdev handles every console maps its page through (they live as long as
/// the daemon), and where the logs go. Each console binds its port through an event-channel
/// handle of its own, as xenconsoled does.
struct RingHost {
    sim: Arc<SimHypervisor>,
    xc: &'static XenCtrl,
    gntdev: &'static Gntdev,
    log_dir: PathBuf,
}

static RING_HOST: OnceLock<RingHost> = OnceLock::new();

/// Serve consoles' rings on the hypervisor `sim`, logging their output under `log_dir`.
/// Without this (a backend driver run outside the daemon), every console echoes.
///
/// # Errors
///
/// When the hypervisor cannot be opened.
pub(super) fn serve_rings(sim: Arc<SimHypervisor>, log_dir: PathBuf) -> xenctrl::Result<()> {
    let xc = XenCtrl::on_simulator(Arc::clone(&sim))?;
    let gntdev = Gntdev::on_simulator(Arc::clone(&sim), DomainId::DOM0);
    let _ = RING_HOST.set(RingHost {
        sim,
        xc: Box::leak(Box::new(xc)),
        gntdev: Box::leak(Box::new(gntdev)),
        log_dir,
    });
    Ok(())
}

/// What the toolstack published for a console's ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RingSpec {
    /// `ring-ref`: the page's frame (machine frame for PV, guest frame for PVH).
    pub ring_ref: u64,
    /// `port`: the guest's end of the console event channel.
    pub port: u32,
}

impl RingSpec {
    /// The spec from the `ring-ref` and `port` nodes, if both are numbers.
    pub(super) fn parse(ring_ref: &str, port: &str) -> Option<Self> {
        Some(RingSpec {
            ring_ref: ring_ref.trim().parse().ok()?,
            port: port.trim().parse().ok()?,
        })
    }
}

/// The pty of domain `domid`'s primary console: the one opened before, or a new one, served
/// from the guest's ring `ring` (or echoing, when there is none or it cannot be mapped).
pub(super) fn tty(domid: DomId, ring: Option<RingSpec>) -> io::Result<String> {
    let mut all = consoles();
    if let Some(c) = all.get(&domid) {
        return Ok(c.tty.clone());
    }
    let pty = nix::pty::openpty(None, None)?;
    let mut t = termios::tcgetattr(&pty.slave)?;
    termios::cfmakeraw(&mut t);
    termios::tcsetattr(&pty.slave, termios::SetArg::TCSANOW, &t)?;
    let tty = nix::unistd::ttyname(&pty.slave)?.display().to_string();
    let (stop_r, stop_w) = nix::unistd::pipe()?;
    let master = File::from(pty.master);
    std::thread::Builder::new()
        .name(format!("sim-console-{domid}"))
        .spawn(move || serve(domid, master, stop_r, ring))?;
    all.insert(
        domid,
        SimConsole {
            tty: tty.clone(),
            _slave: pty.slave,
            _stop: stop_w,
        },
    );
    Ok(tty)
}

/// Closes the ptys of consoles whose `tty` node is gone (their domain was destroyed).
pub(super) fn reap(xs: &xenstore::Client) -> xenstore::Result<()> {
    use xenstore::ReadOpt;
    let domids: Vec<DomId> = consoles().keys().copied().collect();
    for d in domids {
        if xs
            .read_string_opt(&format!("/local/domain/{d}/console/tty"))?
            .is_none()
        {
            // Dropping the pipe's write end wakes the console's thread, which closes the
            // master (and unmaps and unbinds its ring).
            consoles().remove(&d);
        }
    }
    Ok(())
}

/// A console's thread: its ring if it can be had, else the echo.
fn serve(domid: DomId, master: File, stop: OwnedFd, ring: Option<RingSpec>) {
    let Some(spec) = ring else {
        return echo(master, stop);
    };
    let Some(host) = RING_HOST.get() else {
        return echo(master, stop);
    };
    let evtchn = match EventChannels::on_simulator(Arc::clone(&host.sim), DomainId::DOM0) {
        Ok(h) => h,
        Err(e) => {
            eprintln!(
                "rxen-sim-xenstored: domain {domid}: console: no event channels: {e}; it echoes"
            );
            return echo(master, stop);
        }
    };
    let domain = DomainId::new(domid);
    let page = match map_guest_page(host.xc, host.gntdev, domain, GRANT_CONSOLE, spec.ring_ref) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "rxen-sim-xenstored: domain {domid}: console: cannot map its ring ({e}); it echoes"
            );
            return echo(master, stop);
        }
    };
    let bound = match evtchn.bind_interdomain(domain, Port::new(spec.port)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "rxen-sim-xenstored: domain {domid}: console: cannot bind port {}: {e}; it echoes",
                spec.port
            );
            return echo(master, stop);
        }
    };
    eprintln!(
        "rxen-sim-xenstored: domain {domid}: console ring mapped through {}, port {}",
        page.how(),
        spec.port
    );
    let log = ConsoleLog::create(&host.log_dir, domid)
        .map_err(|e| eprintln!("rxen-sim-xenstored: domain {domid}: no console log: {e}"))
        .ok();
    let mut ring = ConsoleRing::new(&page);
    if let Err(e) = pump(domid, &master, &stop, &mut ring, &evtchn, bound.port(), log) {
        eprintln!("rxen-sim-xenstored: domain {domid}: console stopped: {e}");
    }
}

/// The daemon's end of a console ring: the guest writes `out`, we write `in`. We keep our own
/// copies of the indices we own (`out_cons`, `in_prod`).
struct ConsoleRing<'a, 'h> {
    page: &'a GuestPage<'h>,
    out_cons: u32,
    in_prod: u32,
    /// Whether corrupt indices were reported already.
    warned: bool,
}

impl<'a, 'h> ConsoleRing<'a, 'h> {
    fn new(page: &'a GuestPage<'h>) -> Self {
        let s = page.slice();
        ConsoleRing {
            page,
            out_cons: s.read::<u32>(layout::OUT_CONS).unwrap_or(0),
            in_prod: s.read::<u32>(layout::IN_PROD).unwrap_or(0),
            warned: false,
        }
    }

    fn warn(&mut self, domid: DomId, what: &str) {
        if !self.warned {
            self.warned = true;
            eprintln!("rxen-sim-xenstored: domain {domid}: console: {what}; ignored");
        }
    }

    /// Moves what the guest wrote to `out` into `into`; whether anything moved.
    fn take_output(&mut self, domid: DomId, into: &mut Vec<u8>) -> bool {
        let s = self.page.slice();
        let prod = s.read::<u32>(layout::OUT_PROD).unwrap_or(self.out_cons);
        fence(Ordering::SeqCst);
        let size = prod.wrapping_sub(self.out_cons);
        if size == 0 {
            return false;
        }
        if size > layout::OUT_SIZE {
            self.warn(
                domid,
                &format!(
                    "output producer {prod:#x} is more than 2048 bytes from our consumer {:#x}",
                    self.out_cons
                ),
            );
            return false;
        }
        let start = (self.out_cons % layout::OUT_SIZE) as usize;
        let n = size as usize;
        let first = n.min(layout::OUT_SIZE as usize - start);
        let at = into.len();
        into.resize(at + n, 0);
        let ok = s
            .read_into(layout::OUT + start, &mut into[at..at + first])
            .and_then(|()| s.read_into(layout::OUT, &mut into[at + first..]));
        if ok.is_err() {
            into.truncate(at);
            return false;
        }
        fence(Ordering::SeqCst);
        self.out_cons = prod;
        let _ = s.write(layout::OUT_CONS, &self.out_cons);
        true
    }

    /// Room in `in`.
    fn input_space(&mut self, domid: DomId) -> usize {
        let s = self.page.slice();
        let cons = s.read::<u32>(layout::IN_CONS).unwrap_or(self.in_prod);
        let used = self.in_prod.wrapping_sub(cons);
        if used > layout::IN_SIZE {
            self.warn(
                domid,
                &format!(
                    "input consumer {cons:#x} is more than 1024 bytes from our producer {:#x}",
                    self.in_prod
                ),
            );
            return 0;
        }
        (layout::IN_SIZE - used) as usize
    }

    /// Puts `data` (no more than [`input_space`](Self::input_space)) into `in`.
    fn put_input(&mut self, data: &[u8]) {
        let s = self.page.slice();
        fence(Ordering::SeqCst);
        let start = (self.in_prod % layout::IN_SIZE) as usize;
        let first = data.len().min(layout::IN_SIZE as usize - start);
        let ok = s
            .write_from(layout::IN + start, &data[..first])
            .and_then(|()| s.write_from(layout::IN, &data[first..]));
        if ok.is_err() {
            return;
        }
        fence(Ordering::SeqCst);
        self.in_prod = self
            .in_prod
            .wrapping_add(u32::try_from(data.len()).unwrap_or(0));
        let _ = s.write(layout::IN_PROD, &self.in_prod);
    }
}

/// Copies between the ring and the pty until `stop` closes.
fn pump(
    domid: DomId,
    mut master: &File,
    stop: &OwnedFd,
    ring: &mut ConsoleRing<'_, '_>,
    evtchn: &EventChannels,
    port: Port,
    mut log: Option<ConsoleLog>,
) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let fd = std::os::fd::AsRawFd::as_raw_fd(master);
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    let mut pending: VecDeque<u8> = VecDeque::new();
    let mut chunk = Vec::new();
    let mut input = [0u8; layout::IN_SIZE as usize];
    let tick = PollTimeout::try_from(RING_TICK).unwrap_or(PollTimeout::NONE);
    loop {
        let mut notify = false;
        chunk.clear();
        if ring.take_output(domid, &mut chunk) {
            notify = true;
            if let Some(l) = &mut log {
                if let Err(e) = l.append(&chunk) {
                    eprintln!("rxen-sim-xenstored: domain {domid}: console log: {e}");
                    log = None;
                }
            }
            pending.extend(&chunk);
            let over = pending.len().saturating_sub(PENDING_MAX);
            pending.drain(..over);
        }
        while !pending.is_empty() {
            let (front, _) = pending.as_slices();
            match master.write(front) {
                Ok(0) => break,
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let space = ring.input_space(domid).min(input.len());
        if space > 0 {
            match master.read(&mut input[..space]) {
                Ok(0) => {}
                Ok(n) => {
                    ring.put_input(&input[..n]);
                    notify = true;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        if notify {
            // A guest gone meanwhile: the console ends when its directory goes.
            let _ = evtchn.notify(port);
        }
        let mut want = PollFlags::empty();
        if space > 0 {
            want |= PollFlags::POLLIN;
        }
        if !pending.is_empty() {
            want |= PollFlags::POLLOUT;
        }
        let mut fds = [
            PollFd::new(master.as_fd(), want),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            PollFd::new(evtchn.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, tick) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        if fds[1].any().unwrap_or(true) {
            return Ok(());
        }
        if fds[2].any().unwrap_or(false) {
            for p in evtchn.pending().flatten() {
                let _ = evtchn.unmask(p);
            }
        }
    }
}

/// The last few KiB of a console's output, in `DIR/console/<domid>.log`.
struct ConsoleLog {
    path: PathBuf,
    file: File,
    size: u64,
}

impl ConsoleLog {
    /// A fresh log for `domid` (a domid used again starts a new log).
    fn create(dir: &Path, domid: DomId) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{domid}.log"));
        let file = File::create(&path)?;
        Ok(ConsoleLog {
            path,
            file,
            size: 0,
        })
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        if self.size > LOG_MAX {
            self.cut_back()?;
        }
        Ok(())
    }

    /// Keeps the last [`LOG_KEEP`] bytes: written to a new file, renamed over the log.
    fn cut_back(&mut self) -> io::Result<()> {
        let mut old = File::open(&self.path)?;
        let len = old.metadata()?.len();
        let keep = len.min(LOG_KEEP);
        old.seek(io::SeekFrom::Start(len - keep))?;
        let mut tail = Vec::new();
        old.take(keep).read_to_end(&mut tail)?;
        let tmp = self.path.with_extension("log.new");
        std::fs::write(&tmp, &tail)?;
        std::fs::rename(&tmp, &self.path)?;
        self.file = File::options().append(true).open(&self.path)?;
        self.size = tail.len() as u64;
        Ok(())
    }
}

/// A console without a ring: what arrives on the master goes back out, until `stop` closes.
fn echo(mut master: File, stop: OwnedFd) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = [
            PollFd::new(master.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            return;
        }
        let stopped = fds[1].any().unwrap_or(true);
        let ready = fds[0].any().unwrap_or(false);
        if stopped {
            return;
        }
        if ready {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if master.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_specs_parse_only_numbers() {
        assert_eq!(
            RingSpec::parse("1234", " 5"),
            Some(RingSpec {
                ring_ref: 1234,
                port: 5
            })
        );
        assert_eq!(RingSpec::parse("", "5"), None);
        assert_eq!(RingSpec::parse("12", "x"), None);
    }

    #[test]
    fn a_log_keeps_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = ConsoleLog::create(dir.path(), 3).unwrap();
        let line: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
        for _ in 0..100 {
            log.append(&line).unwrap();
        }
        log.append(b"the end\n").unwrap();
        let kept = std::fs::read(dir.path().join("3.log")).unwrap();
        assert!(kept.len() as u64 <= LOG_MAX, "{}", kept.len());
        assert!(kept.len() as u64 >= LOG_KEEP, "{}", kept.len());
        assert!(kept.ends_with(b"the end\n"));
        // A domid used again starts afresh.
        drop(log);
        ConsoleLog::create(dir.path(), 3).unwrap();
        assert_eq!(std::fs::read(dir.path().join("3.log")).unwrap(), b"");
    }
}
