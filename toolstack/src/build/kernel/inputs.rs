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

/// An initial ramdisk: the bytes handed to the guest as its first module. A gzip initrd is
/// inflated first, as libxenguest does ([`Initrd::for_guest`]); any other is handed over as it
/// is, for the guest's kernel to unpack.
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

    /// The compression its first bytes name, for information.
    pub fn compression(&self) -> Option<Compression> {
        Compression::detect(&self.bytes)
    }

    /// What the guest is given, as libxenguest's `xc_dom_build_module` gives it (xl's guests
    /// see the same): a gzip initrd whose trailer's size is within [`ImageLimits::max_initrd`]
    /// is inflated, and its content followed by 16 zero bytes, the room libxenguest allocates
    /// beyond the trailer's size. One that does not inflate to exactly that size (a corrupt
    /// stream, a second member, a trailer that lies) is handed over as it is, as libxenguest
    /// falls back to the raw blob. Any other initrd is unchanged.
    ///
    /// The decoder is the kernel loader's gzip decoder, bounded the same way: nothing beyond
    /// the trailer's size (at most the limit) is allocated.
    pub fn for_guest(self, limits: &ImageLimits) -> Initrd {
        // The magic and the trailer's size: at least six bytes, as `xc_dom_check_gzip` wants.
        let trailer = match self.bytes.len().checked_sub(4) {
            Some(at) if at >= 2 && self.compression() == Some(Compression::Gzip) => {
                &self.bytes[at..]
            }
            _ => return self,
        };
        let size = u64::from(u32::from_le_bytes([
            trailer[0], trailer[1], trailer[2], trailer[3],
        ]));
        // Deflate expands at most 1032-fold: a trailer claiming more than that of this stream
        // lies, and is not worth an allocation of its size (1 GiB at most, more than a small
        // dom0 may give).
        let most = (self.bytes.len() as u64).saturating_mul(DEFLATE_MAX_RATIO);
        if size > limits.max_initrd || size > most {
            return self;
        }
        let limits = ImageLimits {
            max_decompressed: limits.max_initrd,
            ..*limits
        };
        match super::decompress(Compression::Gzip, &self.bytes, Some(size), &limits) {
            Ok(mut bytes) => {
                bytes.resize(bytes.len() + GUNZIP_SLACK, 0);
                Initrd { bytes }
            }
            Err(_) => self,
        }
    }
}

/// The most a deflate stream expands: 1032 to 1 (a 258-byte match costs at least two bits), the
/// bound zlib's documentation gives.
const DEFLATE_MAX_RATIO: u64 = 1032;

/// The bytes libxenguest allocates for an inflated module beyond its gzip trailer's size
/// (`xc_dom_check_gzip` answers that size plus 16), left zero.
const GUNZIP_SLACK: usize = 16;

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
