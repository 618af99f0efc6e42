//! Unpacking compressed kernels, bounded ([`decompress`]).

use std::fmt;
use std::io::{self, Read};

use super::error::{KernelError, Result};
use super::ImageLimits;

/// A compression this loader unpacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// gzip (RFC 1952).
    Gzip,
    /// xz, with any of its filters (Linux uses BCJ-x86 before LZMA2).
    Xz,
    /// Zstandard.
    Zstd,
    /// lz4's legacy frame (`lz4 -l`), as Linux uses it.
    Lz4,
}

impl Compression {
    /// Its name, as in messages.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
        }
    }

    /// Whether its data carries its unpacked size in its last four bytes on its own (gzip's
    /// ISIZE). For the others Linux appends the size after the compressed stream.
    fn size_is_part_of_stream(self) -> bool {
        self == Compression::Gzip
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the first bytes of some data say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Magic {
    /// An ELF image.
    Elf,
    /// Compressed data this loader unpacks.
    Compressed(Compression),
    /// Compressed data this loader refuses, by name.
    Unsupported(&'static str),
    /// Something else.
    Unknown,
}

/// The ELF identification magic.
pub(crate) const ELF_MAGIC: &[u8] = b"\x7fELF";
/// Linux's lz4 legacy frame magic, little-endian: `ARCHIVE_MAGICNUMBER` 0x184c2102.
const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;

/// Reads the magic number at the start of `data`, as Xen's bzImage loader does (the same magics,
/// in the same order, plus ELF for an uncompressed payload).
pub(crate) fn detect(data: &[u8]) -> Magic {
    const TABLE: &[(&[u8], Magic)] = &[
        (ELF_MAGIC, Magic::Elf),
        (b"\x1f\x8b", Magic::Compressed(Compression::Gzip)),
        (b"\xfd7zXZ\x00", Magic::Compressed(Compression::Xz)),
        (b"\x28\xb5\x2f\xfd", Magic::Compressed(Compression::Zstd)),
        (b"\x02\x21\x4c\x18", Magic::Compressed(Compression::Lz4)),
        (b"BZh", Magic::Unsupported("bzip2")),
        (b"\x5d\x00", Magic::Unsupported("lzma")),
        (b"\x89LZO", Magic::Unsupported("lzo")),
    ];
    TABLE
        .iter()
        .find(|(magic, _)| data.starts_with(magic))
        .map_or(Magic::Unknown, |&(_, what)| what)
}

impl Compression {
    /// The compression whose magic number `data` starts with, if any.
    pub fn detect(data: &[u8]) -> Option<Compression> {
        match detect(data) {
            Magic::Compressed(c) => Some(c),
            _ => None,
        }
    }
}

/// Unpacks `data`, compressed with `compression`, within `limits`.
///
/// The compression is read from the magic number at the start of the data (for a bzImage, at the
/// payload offset its header gives), never by scanning. Every decoder writes into one buffer
/// whose size is fixed before decoding starts: the size field when there is one (Linux appends
/// the unpacked size, little-endian, to every payload; gzip's own trailer is that field), checked
/// against [`ImageLimits::max_decompressed`] before anything is allocated, else the limit
/// itself. Decoding stops at that size plus one byte, so a size field that lies costs no more
/// than the size it claims, and a bomb no more than the limit. The decoders' history windows
/// (the xz dictionary, the zstd window) are bounded by [`ImageLimits::max_window`] before they are
/// allocated.
///
/// | compression | magic | decoder | notes |
/// |---|---|---|---|
/// | gzip | `1f 8b` | flate2 (zlib-rs) | one member; its CRC-32 is checked |
/// | xz | `fd 37 7a 58 5a 00` | lzma-rust2 | any filter chain xz allows, BCJ-x86 + LZMA2 as Linux uses; the block checks are verified |
/// | zstd | `28 b5 2f fd` | ruzstd | one frame; its content checksum, when present, is verified |
/// | lz4 | `02 21 4c 18` | lz4_flex blocks | Linux's `lz4 -l` legacy frame: chunks of at most 8 MiB unpacked, each a u32 size and a block |
///
/// bzip2, lzma and lzo, which Xen's loader also knows, are recognised and refused by name: no
/// kernel this project boots uses them, and each would be a crate for a dead format.
///
/// `declared` is the unpacked size the data's container states (a bzImage payload's last four
/// bytes), when it states one; `data` is then the compressed stream followed by those four bytes,
/// as Linux lays out a payload. With `declared` `None`, `data` is the compressed stream alone,
/// and the output is bounded by the limit only.
///
/// # Errors
///
/// [`KernelError::DeclaredSizeTooLarge`] before anything is allocated;
/// [`KernelError::WindowTooLarge`] before a window is allocated;
/// [`KernelError::LargerThanDeclared`], [`KernelError::SmallerThanDeclared`],
/// [`KernelError::DecompressedTooLarge`] when the output does not match; the decoder's
/// [`KernelError::CorruptData`] and the lz4 framing errors for bad data.
pub fn decompress(
    compression: Compression,
    data: &[u8],
    declared: Option<u64>,
    limits: &ImageLimits,
) -> Result<Vec<u8>> {
    decompress_at(compression, data, 0, declared, limits)
}

/// [`decompress`] for data found at `offset` in the caller's file, for messages.
pub(crate) fn decompress_at(
    compression: Compression,
    data: &[u8],
    offset: u64,
    declared: Option<u64>,
    limits: &ImageLimits,
) -> Result<Vec<u8>> {
    let stream = match declared {
        Some(declared) => {
            if declared > limits.max_decompressed {
                return Err(KernelError::DeclaredSizeTooLarge {
                    compression,
                    declared,
                    limit: limits.max_decompressed,
                });
            }
            if compression.size_is_part_of_stream() {
                data
            } else {
                // The caller checked there are four bytes to strip.
                &data[..data.len().saturating_sub(4)]
            }
        }
        None => data,
    };
    let out = Output::new(compression, declared, limits)?;
    let corrupt = |source: DecodeErr| KernelError::CorruptData {
        compression,
        offset,
        source,
    };
    match compression {
        Compression::Gzip => {
            let decoder = flate2::bufread::GzDecoder::new(stream);
            out.fill(decoder, |e| corrupt(Box::new(e)))
        }
        Compression::Xz => {
            // lzma-rust2 checks the dictionary (plus its decoder's overhead) against this
            // before allocating it, and answers OutOfMemory.
            let limit_kib = u32::try_from(limits.max_window / 1024).unwrap_or(u32::MAX - 1);
            let decoder = lzma_rust2::XzReader::new_mem_limit(stream, false, limit_kib);
            out.fill(decoder, |e| {
                if e.kind() == io::ErrorKind::OutOfMemory {
                    KernelError::WindowTooLarge {
                        compression,
                        limit: limits.max_window,
                    }
                } else {
                    corrupt(Box::new(e))
                }
            })
        }
        Compression::Zstd => unzstd(stream, offset, out, limits),
        Compression::Lz4 => unlz4(stream, offset, out),
    }
}

type DecodeErr = Box<dyn std::error::Error + Send + Sync>;

/// The output buffer of one decode: its size is fixed before decoding starts.
struct Output {
    compression: Compression,
    /// The size field, if any (at most the limit).
    declared: Option<u64>,
    /// The most the output may be: the size field, or the limit.
    cap: usize,
    limit: u64,
}

impl Output {
    fn new(compression: Compression, declared: Option<u64>, limits: &ImageLimits) -> Result<Self> {
        let cap = declared.unwrap_or(limits.max_decompressed);
        // On a 64-bit host this always fits; elsewhere a limit above the address space is
        // refused as too large.
        let cap = usize::try_from(cap).map_err(|_| KernelError::DeclaredSizeTooLarge {
            compression,
            declared: cap,
            limit: limits.max_decompressed,
        })?;
        Ok(Output {
            compression,
            declared,
            cap,
            limit: limits.max_decompressed,
        })
    }

    fn too_large(&self) -> KernelError {
        match self.declared {
            Some(declared) => KernelError::LargerThanDeclared {
                compression: self.compression,
                declared,
            },
            None => KernelError::DecompressedTooLarge {
                compression: self.compression,
                limit: self.limit,
            },
        }
    }

    fn check_len(&self, len: usize) -> Result<()> {
        match self.declared {
            Some(declared) if len as u64 != declared => Err(KernelError::SmallerThanDeclared {
                compression: self.compression,
                declared,
                actual: len as u64,
            }),
            _ => Ok(()),
        }
    }

    /// Reads `decoder` to its end into a buffer of at most `cap` bytes. The decoder is read to
    /// its end (a zero-length read), which is where xz and gzip check their trailers.
    fn fill<R: Read>(
        self,
        mut decoder: R,
        map_err: impl Fn(io::Error) -> KernelError,
    ) -> Result<Vec<u8>> {
        let mut buf = match self.declared {
            // Zeroed allocation: fresh pages from the allocator, not written twice.
            Some(_) => vec![0u8; self.cap],
            None => Vec::new(),
        };
        let mut len = 0;
        loop {
            if len == buf.len() {
                if len == self.cap {
                    // Full: the stream must end here.
                    let mut probe = [0u8; 1];
                    match read_retrying(&mut decoder, &mut probe).map_err(&map_err)? {
                        0 => break,
                        _ => return Err(self.too_large()),
                    }
                }
                // No size field: grow by doubling, never past the limit.
                let grown = len.saturating_mul(2).max(1 << 20).min(self.cap);
                buf.resize(grown, 0);
            }
            match read_retrying(&mut decoder, &mut buf[len..]).map_err(&map_err)? {
                0 => break,
                n => len += n,
            }
        }
        buf.truncate(len);
        self.check_len(len)?;
        Ok(buf)
    }
}

fn read_retrying(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn unzstd(stream: &[u8], offset: u64, out: Output, limits: &ImageLimits) -> Result<Vec<u8>> {
    use ruzstd::decoding::errors::FrameDecoderError;
    use ruzstd::decoding::StreamingDecoder;

    let compression = Compression::Zstd;
    let corrupt = |source: DecodeErr| KernelError::CorruptData {
        compression,
        offset,
        source,
    };
    // The window is checked against the limit before it is allocated.
    let mut decoder = StreamingDecoder::new_with_max_window_size(stream, limits.max_window)
        .map_err(|e| match e {
            FrameDecoderError::WindowSizeTooBig { .. } => KernelError::WindowTooLarge {
                compression,
                limit: limits.max_window,
            },
            e => corrupt(Box::new(e)),
        })?;
    let buf = out.fill(&mut decoder, |e| corrupt(Box::new(e)))?;
    let frame = decoder.into_frame_decoder();
    if let (Some(expected), Some(actual)) = (
        frame.get_checksum_from_data(),
        frame.get_calculated_checksum(),
    ) {
        if expected != actual {
            return Err(KernelError::ZstdChecksum {
                offset,
                expected,
                actual,
            });
        }
    }
    Ok(buf)
}

/// lz4's legacy frame as Linux writes it (`lz4 -l`, `lib/decompress_unlz4.c`): the magic
/// 0x184c2102, then chunks, each a little-endian u32 compressed size and an lz4 block that
/// unpacks to at most 8 MiB; the magic may recur between chunks (concatenated frames).
fn unlz4(stream: &[u8], offset: u64, out: Output) -> Result<Vec<u8>> {
    /// The most one chunk unpacks to (`LZ4_DEFAULT_UNCOMPRESSED_CHUNK_SIZE`).
    const CHUNK_OUT: usize = 8 << 20;
    /// `LZ4_compressBound(CHUNK_OUT)`: the most one chunk's block may be.
    const CHUNK_IN_MAX: usize = CHUNK_OUT + CHUNK_OUT / 255 + 16;

    let u32_at = |at: usize| -> Option<u32> {
        let b = stream.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let at_offset = |at: usize| offset + at as u64;

    if u32_at(0) != Some(LZ4_LEGACY_MAGIC) {
        return Err(KernelError::Lz4NotLegacy { offset });
    }
    let mut buf = match out.declared {
        Some(_) => vec![0u8; out.cap],
        None => Vec::new(),
    };
    let mut len = 0;
    let mut pos = 4;
    let mut chunks = 0usize;
    loop {
        if pos == stream.len() && chunks > 0 {
            break;
        }
        let size = u32_at(pos).ok_or(KernelError::Lz4Truncated {
            offset: at_offset(pos),
        })?;
        if size == LZ4_LEGACY_MAGIC {
            pos += 4;
            continue;
        }
        let size = size as usize;
        let remaining = stream.len() - pos - 4;
        if size > CHUNK_IN_MAX {
            return Err(KernelError::Lz4ChunkTooLarge {
                offset: at_offset(pos),
                size: size as u64,
                max: CHUNK_IN_MAX as u64,
            });
        }
        if size > remaining {
            return Err(KernelError::Lz4ChunkOutOfBounds {
                offset: at_offset(pos),
                size: size as u64,
                remaining: remaining as u64,
            });
        }
        let block = &stream[pos + 4..pos + 4 + size];
        // Room for the chunk: at most 8 MiB, never past the cap, and no more than the block
        // can encode (a byte of lz4 stands for at most 255 bytes of output), so that a short
        // block does not cost an 8 MiB buffer.
        let to_cap = out.cap - len;
        let room = to_cap
            .min(CHUNK_OUT)
            .min(size.saturating_mul(255).saturating_add(64));
        if buf.len() < len + room {
            buf.resize(len + room, 0);
        }
        match lz4_flex::block::decompress_into(block, &mut buf[len..len + room]) {
            Ok(n) => len += n,
            // The block did not fit: past the cap, if the cap is what limited the room.
            Err(lz4_flex::block::DecompressError::OutputTooSmall { .. }) if room == to_cap => {
                return Err(out.too_large());
            }
            Err(e) => {
                return Err(KernelError::CorruptData {
                    compression: Compression::Lz4,
                    offset: at_offset(pos + 4),
                    source: Box::new(e),
                })
            }
        }
        pos += 4 + size;
        chunks += 1;
    }
    buf.truncate(len);
    out.check_len(len)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics_are_read_at_the_start_only() {
        assert_eq!(detect(b"\x7fELF\x02"), Magic::Elf);
        assert_eq!(
            detect(b"\x1f\x8b\x08"),
            Magic::Compressed(Compression::Gzip)
        );
        assert_eq!(
            detect(b"\xfd7zXZ\x00\x00"),
            Magic::Compressed(Compression::Xz)
        );
        assert_eq!(
            detect(b"\x28\xb5\x2f\xfd"),
            Magic::Compressed(Compression::Zstd)
        );
        assert_eq!(
            detect(b"\x02\x21\x4c\x18"),
            Magic::Compressed(Compression::Lz4)
        );
        assert_eq!(detect(b"BZh9"), Magic::Unsupported("bzip2"));
        assert_eq!(detect(b"\x5d\x00\x00"), Magic::Unsupported("lzma"));
        assert_eq!(detect(b"\x89LZO\x00"), Magic::Unsupported("lzo"));
        assert_eq!(detect(b"\x00\x1f\x8b"), Magic::Unknown);
        assert_eq!(detect(b""), Magic::Unknown);
        assert_eq!(detect(b"\xfd7zX"), Magic::Unknown);
    }

    #[test]
    fn an_lz4_stream_of_only_the_magic_is_truncated() {
        let out = Output::new(Compression::Lz4, None, &ImageLimits::default()).unwrap();
        let err = unlz4(&LZ4_LEGACY_MAGIC.to_le_bytes(), 0x100, out).unwrap_err();
        assert!(
            matches!(err, KernelError::Lz4Truncated { offset: 0x104 }),
            "{err:?}"
        );
    }
}
