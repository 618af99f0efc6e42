//! Client transports: a unix socket to xenstored, or the kernel's xenbus device.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::wire::{self, Header};

/// xenstored's socket when neither `XENSTORED_PATH` nor `XENSTORED_RUNDIR` is set.
pub const SOCKET_PATH: &str = "/run/xenstored/socket";
/// The xenbus device of a Linux domain (dom0 included).
pub const DEVICE_PATH: &str = "/dev/xen/xenbus";

/// The first path [`Client::open`](crate::Client::open) tries, as libxenstore computes it.
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("XENSTORED_PATH") {
        return PathBuf::from(p);
    }
    match std::env::var_os("XENSTORED_RUNDIR") {
        Some(d) => PathBuf::from(d).join("socket"),
        None => PathBuf::from(SOCKET_PATH),
    }
}

#[derive(Debug)]
pub(crate) enum Transport {
    Socket(UnixStream),
    Device(File),
}

impl Transport {
    pub fn open(path: &Path) -> io::Result<Self> {
        let md = std::fs::metadata(path)?;
        if md.file_type().is_socket() {
            Ok(Self::Socket(UnixStream::connect(path)?))
        } else {
            Ok(Self::Device(
                File::options().read(true).write(true).open(path)?,
            ))
        }
    }

    /// The largest payload this transport carries. Linux's xenbus device buffers a whole
    /// message, header included, in `XENSTORE_PAYLOAD_MAX` bytes, so through it the payload
    /// limit is 16 bytes lower than on the socket (a longer write fails with EINVAL).
    pub fn max_payload(&self) -> usize {
        match self {
            Self::Socket(_) => wire::PAYLOAD_MAX,
            Self::Device(_) => wire::PAYLOAD_MAX - wire::HEADER_LEN,
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Socket(s) => s.as_fd(),
            Self::Device(f) => f.as_fd(),
        }
    }

    pub fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        match self {
            Self::Socket(s) => (&*s).write_all(buf),
            Self::Device(f) => (&*f).write_all(buf),
        }
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Socket(s) => (&*s).read(buf),
            Self::Device(f) => (&*f).read(buf),
        }
    }

    /// Poll a socket without blocking for a short while before the caller sleeps in `read`.
    ///
    /// A local xenstored usually answers within microseconds, while putting this thread to
    /// sleep and waking it again costs tens of microseconds on an idle (virtual) CPU. Returns
    /// `Ok(Some(n))` when bytes came in, `Ok(None)` when the spin ran out and the caller should
    /// block as usual. The xenbus device is never spun on.
    fn spin_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        const SPIN: std::time::Duration = std::time::Duration::from_micros(100);
        let Self::Socket(s) = self else {
            return Ok(None);
        };
        let start = Instant::now();
        loop {
            match nix::sys::socket::recv(
                s.as_raw_fd(),
                buf,
                nix::sys::socket::MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => return Ok(Some(n)),
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            if start.elapsed() >= SPIN {
                return Ok(None);
            }
            // Yield rather than spin hard: on a small machine the daemon may need this CPU.
            std::thread::yield_now();
        }
    }
}

/// Bytes read but not yet parsed into messages: `buf[start..end]`. The buffer is allocated
/// once; reads go straight into its free tail.
pub(crate) struct ReadBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Default for ReadBuf {
    fn default() -> Self {
        Self {
            buf: vec![0u8; 64 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }
}

impl ReadBuf {
    /// Returns every complete message available, reading at least once unless some are already
    /// buffered. With a deadline, returns an empty batch if nothing arrives in time.
    pub fn read_batch(
        &mut self,
        t: &Transport,
        deadline: Option<Instant>,
    ) -> io::Result<Vec<(Header, Vec<u8>)>> {
        loop {
            let mut batch = Vec::new();
            loop {
                match wire::parse_frame(&self.buf[self.start..self.end]) {
                    Ok(Some(f)) => {
                        batch.push((f.header, f.payload.to_vec()));
                        self.start += f.wire_len();
                    }
                    Ok(None) => break,
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                }
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
            if !batch.is_empty() {
                return Ok(batch);
            }
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                let ms = u16::try_from(left.as_millis().saturating_add(1)).unwrap_or(u16::MAX);
                let mut fds = [PollFd::new(t.fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(0) => return Ok(Vec::new()),
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            // A partial message sits at the front; make room behind it. One message is at
            // most 4112 bytes, far below the buffer size, so there is always room after this.
            if self.end == self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let got = match deadline {
                // With no deadline the caller is waiting for a reply: spin briefly first.
                None => t.spin_read(&mut self.buf[self.end..])?,
                Some(_) => None,
            };
            let got = match got {
                Some(n) => Ok(n),
                None => t.read(&mut self.buf[self.end..]),
            };
            match got {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "xenstored closed the connection",
                    ))
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
