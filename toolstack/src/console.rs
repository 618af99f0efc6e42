//! `rxl console`: attach to a guest's console as `xl console` does (libxl's
//! `libxl_console_exec`, then Xen's `xenconsole` client).
//!
//! The console backend (xenconsoled for the primary console and serial ports, QEMU for the
//! secondary ones) serves each console as a pty and writes the pty's name into xenstore:
//!
//! | console        | `tty` node                          |
//! |----------------|-------------------------------------|
//! | pv, number 0   | `/local/domain/D/console/tty`       |
//! | pv, number N   | `/local/domain/D/device/console/N/tty` |
//! | serial, N      | `/local/domain/D/serial/N/tty`      |
//!
//! [`wait_tty`] waits (on a watch) for the node to hold a name, [`Terminal::raw`] puts an
//! interactive terminal in raw mode (restored on drop), and [`copy`] copies the pty to the
//! output and the input to the pty until the console ends (the backend closes the pty, as
//! xenconsoled does when the domain goes) or, interactively, until Ctrl-] (0x1d) detaches.
//! Without a terminal (input not a tty), the input is copied until its end, and the console
//! still until it ends.
//!
//! The simulated host's stand-in backend serves real ptys too (`sim::console`), so this code
//! runs unchanged there.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, SetArg, Termios};
use xenstore::ReadOpt;

use crate::domain::{dom_path, domain_ref};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::lock::DomId;

/// The byte that detaches an interactive console: Ctrl-], as xenconsole's.
pub const ESCAPE: u8 = 0x1d;

/// Which console (`xl console -t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleType {
    /// A PV console: number 0 is the primary console, others are channels.
    Pv,
    /// An emulated serial port.
    Serial,
}

/// The xenstore node where the backend writes the pty of domain `domid`'s console.
pub fn tty_node(domid: DomId, kind: ConsoleType, num: u32) -> String {
    let dom = dom_path(domid);
    match (kind, num) {
        (ConsoleType::Pv, 0) => format!("{dom}/console/tty"),
        (ConsoleType::Pv, n) => format!("{dom}/device/console/{n}/tty"),
        (ConsoleType::Serial, n) => format!("{dom}/serial/{n}/tty"),
    }
}

/// Waits, on a watch, until the backend has written the console's pty into `node`, and
/// returns it.
///
/// # Errors
///
/// [`Error::NoSuchDomain`] when the domain is gone; [`Error::ConsoleNotReady`] when no pty
/// appears within `timeout`; [`Error::Xenstore`].
pub fn wait_tty(host: &Host, domid: DomId, node: &str, timeout: Duration) -> Result<PathBuf> {
    let who = domain_ref(host, domid);
    let xs = |source| Error::Xenstore {
        domain: who.clone(),
        what: "cannot read its console's tty node",
        source,
    };
    let watch = host.xs.watch(node).map_err(xs)?;
    let deadline = Instant::now() + timeout;
    loop {
        host.domain_info(domid)?;
        if let Some(tty) = host.xs.read_string_opt(node).map_err(xs)? {
            if !tty.is_empty() {
                return Ok(PathBuf::from(tty));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if watch.next_event_timeout(left).map_err(xs)?.is_none() {
            return Err(Error::ConsoleNotReady {
                domain: who.clone(),
                node: node.to_owned(),
                timeout,
            });
        }
    }
}

/// Opens the console's pty for reading and writing.
///
/// # Errors
///
/// [`Error::Console`] when it cannot be opened.
pub fn open_tty(host: &Host, domid: DomId, tty: &std::path::Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open(tty)
        .map_err(|source| Error::Console {
            domain: domain_ref(host, domid),
            what: format!("cannot open its console {}", tty.display()),
            source,
        })
}

/// A terminal in raw mode; its settings are restored on drop.
pub struct Terminal<'fd> {
    fd: BorrowedFd<'fd>,
    saved: Termios,
}

impl<'fd> Terminal<'fd> {
    /// Puts the terminal `fd` in raw mode (no echo, no line editing, no signals from keys), as
    /// xenconsole does, so every key reaches the guest.
    ///
    /// # Errors
    ///
    /// The `tcgetattr`/`tcsetattr` error.
    pub fn raw(fd: BorrowedFd<'fd>) -> io::Result<Self> {
        let saved = termios::tcgetattr(fd)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSAFLUSH, &raw)?;
        Ok(Terminal { fd, saved })
    }
}

impl Drop for Terminal<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSAFLUSH, &self.saved);
    }
}

/// How a [`copy`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The console closed (its backend closed the pty: the domain is gone).
    Closed,
    /// The user detached (Ctrl-]).
    Detached,
}

/// Copies `tty` to `output`, and `input` (while it lasts) to `tty`, until the console closes;
/// with `escape`, an [`ESCAPE`] byte in the input detaches instead of being sent.
///
/// # Errors
///
/// The I/O error of a read, write or poll (a closed console is not one).
pub fn copy<I: Read + AsFd>(
    tty: &mut File,
    mut input: Option<I>,
    output: &mut dyn Write,
    escape: bool,
) -> io::Result<Ended> {
    let mut buf = [0u8; 4096];
    loop {
        let (tty_ready, input_ready) = {
            let mut fds = vec![PollFd::new(tty.as_fd(), PollFlags::POLLIN)];
            if let Some(i) = &input {
                fds.push(PollFd::new(i.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), fds.get(1).is_some_and(ready))
        };
        if tty_ready {
            match tty.read(&mut buf) {
                // A pty whose other end closed reads as end of file or EIO.
                Ok(0) => return Ok(Ended::Closed),
                Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => return Ok(Ended::Closed),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
                Ok(n) => {
                    output.write_all(&buf[..n])?;
                    output.flush()?;
                }
            }
        }
        if input_ready {
            let Some(i) = input.as_mut() else { continue };
            match i.read(&mut buf) {
                Ok(0) => input = None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
                Ok(n) => {
                    let data = &buf[..n];
                    match data.iter().position(|&b| escape && b == ESCAPE) {
                        Some(at) => {
                            tty.write_all(&data[..at])?;
                            return Ok(Ended::Detached);
                        }
                        None => tty.write_all(data)?,
                    }
                }
            }
        }
    }
}
