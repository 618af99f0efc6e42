//! Client transports: a unix socket to xenstored, or the kernel's xenbus device.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
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
            match t.read(&mut self.buf[self.end..]) {
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
