//! The kernel's other inputs: the initrd and the command line.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::error::{KernelError, Result};
use super::{Compression, ImageLimits};

/// A kernel command line that fits a guest: no NUL inside, and at most
/// [`CommandLine::MAX_LEN`] bytes, so that it and its NUL fit PV `start_info.cmd_line`
/// (`MAX_GUEST_CMDLINE`, 1024 bytes). The PVH builder uses the same limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandLine(String);

impl CommandLine {
    /// The most bytes a command line may have, without its terminating NUL.
    pub const MAX_LEN: usize = 1023;

    /// Checks `text`.
    ///
    /// # Errors
    ///
    /// [`KernelError::CommandLineTooLong`] above [`CommandLine::MAX_LEN`] bytes,
    /// [`KernelError::CommandLineNul`] for a NUL byte inside.
    pub fn new(text: impl Into<String>) -> Result<CommandLine> {
        let text = text.into();
        if let Some(offset) = text.bytes().position(|b| b == 0) {
            return Err(KernelError::CommandLineNul { offset });
        }
        if text.len() > Self::MAX_LEN {
            return Err(KernelError::CommandLineTooLong {
                len: text.len(),
                max: Self::MAX_LEN,
            });
        }
        Ok(CommandLine(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The bytes with the terminating NUL, as the guest reads them (at most 1024).
    pub fn to_bytes_with_nul(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.0.len() + 1);
        v.extend_from_slice(self.0.as_bytes());
        v.push(0);
        v
    }
}

/// An initial ramdisk: opaque bytes handed to the guest as its first module. It may be
/// compressed; the kernel unpacks it, so the builder does not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Initrd {
    bytes: Vec<u8>,
}

impl Initrd {
    /// Takes an initrd already in memory.
    ///
    /// # Errors
    ///
    /// [`KernelError::InitrdTooLarge`] above [`ImageLimits::max_initrd`].
    pub fn from_bytes(bytes: Vec<u8>, limits: &ImageLimits) -> Result<Initrd> {
        let size = bytes.len() as u64;
        if size > limits.max_initrd {
            return Err(KernelError::InitrdTooLarge {
                size,
                limit: limits.max_initrd,
            });
        }
        Ok(Initrd { bytes })
    }

    /// Reads an initrd file.
    ///
    /// # Errors
    ///
    /// [`KernelError::Read`], or [`KernelError::InitrdTooLarge`] (checked before reading, and
    /// again while reading in case the file grows).
    pub fn from_file(path: &Path, limits: &ImageLimits) -> Result<Initrd> {
        let bytes = read_bounded(path, limits.max_initrd, |size, limit| {
            KernelError::InitrdTooLarge { size, limit }
        })?;
        Ok(Initrd { bytes })
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The compression its first bytes name, for information (the guest's kernel unpacks it).
    pub fn compression(&self) -> Option<Compression> {
        Compression::detect(&self.bytes)
    }
}

/// Reads a file of at most `limit` bytes: the size is checked before anything is allocated,
/// and reading stops one byte past the limit if the file grew meanwhile.
pub(crate) fn read_bounded(
    path: &Path,
    limit: u64,
    too_large: impl Fn(u64, u64) -> KernelError,
) -> Result<Vec<u8>> {
    let read_err = |source| KernelError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    if size > limit {
        return Err(too_large(size, limit));
    }
    // At most `limit`, which the caller made a usize-sized allocation bound.
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    let read = bytes.len() as u64;
    if read > limit {
        return Err(too_large(read, limit));
    }
    Ok(bytes)
}
