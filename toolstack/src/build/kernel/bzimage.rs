//! The x86 bzImage container: a real-mode setup header, then a protected-mode part that, since
//! boot protocol 2.08, carries the kernel's ELF image as a (usually compressed) payload.
//!
//! Fields (Linux `Documentation/arch/x86/boot.rst`; Xen `xg_dom_bzimageloader.c`), all
//! little-endian:
//!
//! | offset | size | field | use |
//! |---|---|---|---|
//! | 0x1f1 | 1 | `setup_sects` | the setup code is `setup_sects` 512-byte sectors after the boot sector |
//! | 0x202 | 4 | `header` | `"HdrS"` |
//! | 0x206 | 2 | `version` | boot protocol, major in the high byte: at least 0x0208 |
//! | 0x248 | 4 | `payload_offset` | the payload, from the start of the protected-mode code |
//! | 0x24c | 4 | `payload_length` | its length |
//!
//! The payload starts at `(setup_sects + 1) * 512 + payload_offset`. Its last four bytes are the
//! unpacked size (gzip's ISIZE, or the size Linux's `size_append` adds after the other
//! compressors' streams). As in Xen, a `setup_sects` of 0 is taken as it is (the "0 means 4" rule
//! of protocols before 2.00 does not apply to 2.08).

use super::decompress::{self, Magic};
use super::error::{magic_of, KernelError, Result};
use super::Compression;

/// Where `"HdrS"` is.
const HEADER_MAGIC_AT: usize = 0x202;
/// The first boot protocol with `payload_offset`/`payload_length`.
pub const MIN_PROTOCOL: u16 = 0x0208;
/// The end of the header fields this loader reads (`payload_length` ends here).
const HEADER_END: usize = 0x250;

/// A bzImage's setup header, the fields the loader reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BzImageHeader {
    /// `setup_sects` (0x1f1).
    pub setup_sects: u8,
    /// The boot protocol version (0x206), major in the high byte.
    pub protocol: u16,
    /// `payload_offset` (0x248), from the start of the protected-mode code.
    pub payload_offset: u32,
    /// `payload_length` (0x24c).
    pub payload_length: u32,
}

/// A bzImage's payload: where it is and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Payload {
    /// The header.
    pub header: BzImageHeader,
    /// Its offset in the file.
    pub offset: u64,
    /// Its compression, `None` for an uncompressed ELF image.
    pub compression: Option<Compression>,
    /// The unpacked size from its last four bytes (`None` when uncompressed).
    pub declared: Option<u64>,
}

/// Whether `image` has a bzImage header (`"HdrS"` at 0x202).
pub(crate) fn is_bzimage(image: &[u8]) -> bool {
    image.get(HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4) == Some(b"HdrS")
}

fn u16_at(image: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([image[at], image[at + 1]])
}

fn u32_at(image: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([image[at], image[at + 1], image[at + 2], image[at + 3]])
}

impl BzImageHeader {
    /// Reads the setup header of an image that has one ([`is_bzimage`]).
    ///
    /// # Errors
    ///
    /// [`KernelError::BzImageTruncated`] if the image ends inside the header,
    /// [`KernelError::BootProtocolTooOld`] before protocol 2.08.
    pub(crate) fn parse(image: &[u8]) -> Result<BzImageHeader> {
        if image.len() < HEADER_END {
            return Err(KernelError::BzImageTruncated {
                len: image.len() as u64,
                need: HEADER_END as u64,
            });
        }
        let header = BzImageHeader {
            setup_sects: image[0x1f1],
            protocol: u16_at(image, 0x206),
            payload_offset: u32_at(image, 0x248),
            payload_length: u32_at(image, 0x24c),
        };
        if header.protocol < MIN_PROTOCOL {
            return Err(KernelError::BootProtocolTooOld {
                version: header.protocol,
            });
        }
        Ok(header)
    }

    /// The payload's offset in the file: `(setup_sects + 1) * 512 + payload_offset` (no
    /// overflow: at most 256 * 512 + 2^32).
    pub fn payload_start(&self) -> u64 {
        (u64::from(self.setup_sects) + 1) * 512 + u64::from(self.payload_offset)
    }
}

/// Finds and identifies the payload of an image that [`is_bzimage`].
pub(crate) fn payload(image: &[u8]) -> Result<(Payload, &[u8])> {
    let header = BzImageHeader::parse(image)?;
    let offset = header.payload_start();
    let length = u64::from(header.payload_length);
    let image_len = image.len() as u64;
    let out_of_bounds = KernelError::PayloadOutOfBounds {
        offset,
        length,
        image_len,
    };
    // Both within the image, so the conversions below cannot fail.
    if offset >= image_len || offset + length > image_len {
        return Err(out_of_bounds);
    }
    let (Ok(start), Ok(end)) = (usize::try_from(offset), usize::try_from(offset + length)) else {
        return Err(out_of_bounds);
    };
    let data = &image[start..end];
    let (compression, declared) = match decompress::detect(data) {
        Magic::Elf => (None, None),
        Magic::Compressed(c) => {
            // The magic, and the size field after the stream.
            if data.len() < 8 {
                return Err(KernelError::PayloadTooShort { offset, length });
            }
            let size = u32_at(data, data.len() - 4);
            (Some(c), Some(u64::from(size)))
        }
        Magic::Unsupported(compression) => {
            return Err(KernelError::UnsupportedCompression {
                offset,
                compression,
            })
        }
        Magic::Unknown => {
            return Err(KernelError::UnknownPayload {
                offset,
                magic: magic_of(data),
            })
        }
    };
    Ok((
        Payload {
            header,
            offset,
            compression,
            declared,
        },
        data,
    ))
}
