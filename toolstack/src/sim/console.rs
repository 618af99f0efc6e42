//! The simulated host's stand-in for xenconsoled's ptys.
//!
//! xenconsoled gives each guest console a pty: it opens a pair, makes the slave raw, keeps both
//! ends open, writes the slave's name into the console's `tty` node, and then copies the guest's
//! console ring to the master and what is typed on the master into the ring. `rxl console` (like
//! `xl console`) opens the slave named in `tty`.
//!
//! Here the simulated backend ([`super::backend`]) does the same for each primary console once
//! its `ring-ref` and `port` are published: a real pty, raw, both ends kept, its slave's name in
//! `tty`. The guest behind it is a stand-in until the domain builder's stand-in guest writes
//! its console ring: it **echoes** what it is sent (bytes written to the slave come back out
//! of it), so the same `rxl console` code path copies both ways on this host as on real Xen.
//! When the console's directory goes (the domain was destroyed), the pty is closed: a reader of
//! the slave sees the end of the console, as with xenconsoled.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};

use nix::sys::termios;

use crate::lock::DomId;

/// One console's pty: the slave's name, the slave kept open (so the master never sees a
/// hangup between readers), and the write end of the pipe that stops its echo thread.
struct SimConsole {
    tty: String,
    _slave: OwnedFd,
    _stop: OwnedFd,
}

static CONSOLES: Mutex<BTreeMap<DomId, SimConsole>> = Mutex::new(BTreeMap::new());

fn consoles() -> MutexGuard<'static, BTreeMap<DomId, SimConsole>> {
    CONSOLES.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pty of domain `domid`'s primary console: the one opened before, or a new one.
pub(super) fn tty(domid: DomId) -> std::io::Result<String> {
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
        .spawn(move || echo(master, stop_r))?;
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
            // Dropping the pipe's write end wakes the echo thread, which closes the master.
            consoles().remove(&d);
        }
    }
    Ok(())
}

/// The stand-in guest: what arrives on the master goes back out, until `stop` closes.
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
