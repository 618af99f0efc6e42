//! Kernel images as a library: what libxenguest's `xg_dom_bzimageloader.c`,
//! `xg_dom_elfloader.c` and libelf do before a builder touches guest memory.
//!
//! ```text
//! kernel file ──► ELF (vmlinux)                                  ─┐
//!             ──► bzImage: setup header ─► payload ─► unpack ─────┼─► ElfKernel: segments,
//!             ──► gzip/xz/zstd/lz4 file (kernel=vmlinux.gz) ─► unpack     Xen notes ─► layout
//!                            ▲                │                          (PV or PVH)
//!                            └── KernelCache ◄┘ (by SHA-256 of the file)
//! ```
//!
//! - [`KernelImage::load_file`] / [`KernelImage::load`]: identify the file, unpack it (or take
//!   it from the [`KernelCache`]), parse the ELF image. The format is read from fixed places:
//!   ELF magic at 0, `"HdrS"` at 0x202 (then the payload's magic at the offset the header
//!   gives), or a compression magic at 0. Nothing is found by scanning. [`decompress`] says
//!   how each compression is unpacked.
//! - [`ElfKernel`]: the loadable segments, checked, the physical range, and the [`XenNotes`].
//! - [`ElfKernel::layout`]: where the kernel goes and where it is entered, for a
//!   [`GuestKind::Pv`] or [`GuestKind::Pvh`] guest, with libelf's checks.
//! - [`Initrd`] and [`CommandLine`]: the other inputs.
//!
//! # Bounds
//!
//! Every input is hostile until checked. A corrupt image gets a [`KernelError`] naming the
//! offset, field and value at fault; nothing panics, nothing loops without consuming input, and
//! memory is bounded by [`ImageLimits`], each limit checked *before* the allocation it bounds:
//!
//! | limit | default | bounds |
//! |---|---|---|
//! | `max_image` | 512 MiB | the kernel file read into memory |
//! | `max_decompressed` | 512 MiB | the unpacked ELF image; a size field above it is refused unread, and decoding stops at the size field (or, without one, at the limit) plus one byte |
//! | `max_window` | 128 MiB | a decoder's history: the xz dictionary (Linux uses 32 MiB), the zstd window (Linux's `zstd -22 --ultra` declares 128 MiB) |
//! | `max_initrd` | 1 GiB | the initrd read into memory (libxenguest's `XC_DOM_DECOMPRESS_MAX`) |
//! | `max_kernel_span` | 1 GiB | `pend - pstart`: the guest memory the kernel occupies |
//!
//! So loading a compressed kernel holds at most `max_image + max_decompressed + max_window`
//! bytes (plus the decoders' small fixed state), and an ELF file `max_image`. The note walk is
//! bounded by libelf's 65536 notes.

mod bzimage;
mod cache;
mod decompress;
mod elf;
mod error;
mod inputs;
mod layout;
mod notes;

use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

pub use bzimage::{BzImageHeader, MIN_PROTOCOL};
pub use cache::{
    CacheError, CacheKey, Corruption, EntryBytes, FileStamp, KernelCache, Lookup, Untrusted,
    UntrustedWhy,
};
pub use decompress::{decompress, Compression};
pub use elf::{ElfClass, ElfKernel, LoadSegment};
pub use error::{DecodeError, KernelError, Result};
pub use inputs::{CommandLine, Initrd};
pub use layout::{GuestKind, KernelLayout};
pub use notes::{NoteSource, OtherNote, XenFeatures, XenNotes, MAX_NOTES};

use decompress::Magic;
use error::magic_of;

const MIB: u64 = 1 << 20;

/// The bounds a kernel load stays within (see the module notes for what each bounds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLimits {
    /// The most bytes the kernel file may have.
    pub max_image: u64,
    /// The most bytes a compressed kernel may unpack to.
    pub max_decompressed: u64,
    /// The largest history window (xz dictionary, zstd window) a decoder may allocate.
    pub max_window: u64,
    /// The most bytes the initrd may have.
    pub max_initrd: u64,
    /// The most guest-physical memory the kernel's loadable segments may span.
    pub max_kernel_span: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_image: 512 * MIB,
            max_decompressed: 512 * MIB,
            max_window: 128 * MIB,
            max_initrd: 1024 * MIB,
            max_kernel_span: 1024 * MIB,
        }
    }
}

/// What the kernel file was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// An ELF image (vmlinux).
    Elf,
    /// An x86 bzImage.
    BzImage {
        /// Its setup header.
        header: BzImageHeader,
        /// Where its payload starts in the file.
        payload_offset: u64,
        /// The payload's compression; `None` for an uncompressed ELF payload.
        compression: Option<Compression>,
    },
    /// A compressed ELF image (a `vmlinux.gz`, say).
    Compressed(Compression),
}

impl ImageFormat {
    /// The compression to undo, if any.
    pub fn compression(&self) -> Option<Compression> {
        match *self {
            ImageFormat::Elf => None,
            ImageFormat::BzImage { compression, .. } => compression,
            ImageFormat::Compressed(c) => Some(c),
        }
    }
}

/// Where the ELF image is in a kernel file, and what must be done to get it.
enum Source<'a> {
    /// These bytes are the ELF image.
    Elf(&'a [u8]),
    /// These bytes, found at this offset, unpack to the ELF image.
    Packed {
        compression: Compression,
        data: &'a [u8],
        offset: u64,
        declared: Option<u64>,
    },
}

/// Identifies a kernel file: where its ELF image is, and how it is packed. In Xen's order: a
/// compressed file is unpacked before any loader looks at it (`xc_dom_kernel_file`), then the
/// bzImage loader checks for "HdrS", then the ELF loader for its magic (which cannot be both).
/// The format of a packed kernel file (a compressed ELF image, or a bzImage with a compressed
/// payload) from its first bytes, and the payload's magic for a bzImage, for a cache hit that
/// needs no more of the file; `None` for anything else, or anything the full load should judge
/// (a payload outside the file, an unreadable file).
fn packed_format_of_head(path: &Path, file_len: u64) -> Option<ImageFormat> {
    use std::os::unix::fs::FileExt;
    const HEAD: usize = 4096;
    let file = std::fs::File::open(path).ok()?;
    let mut head = vec![0u8; HEAD.min(usize::try_from(file_len).ok()?)];
    file.read_exact_at(&mut head, 0).ok()?;
    if let Magic::Compressed(c) = decompress::detect(&head) {
        return Some(ImageFormat::Compressed(c));
    }
    if !bzimage::is_bzimage(&head) {
        return None;
    }
    let header = bzimage::BzImageHeader::parse(&head).ok()?;
    let offset = header.payload_start();
    if offset + u64::from(header.payload_length) > file_len {
        return None;
    }
    let mut magic = [0u8; 8];
    let n = usize::try_from(u64::from(header.payload_length).min(8)).ok()?;
    file.read_exact_at(&mut magic[..n], offset).ok()?;
    match decompress::detect(&magic[..n]) {
        Magic::Compressed(c) => Some(ImageFormat::BzImage {
            header,
            payload_offset: offset,
            compression: Some(c),
        }),
        _ => None,
    }
}

fn identify(input: &[u8]) -> Result<(ImageFormat, Source<'_>)> {
    let magic = decompress::detect(input);
    match magic {
        Magic::Elf => return Ok((ImageFormat::Elf, Source::Elf(input))),
        Magic::Compressed(compression) => {
            // gzip's ISIZE is its unpacked size (mod 2^32, so a hint the limit still bounds);
            // the other formats, outside a bzImage, carry none.
            let declared = match compression {
                Compression::Gzip if input.len() >= 18 => {
                    let t = &input[input.len() - 4..];
                    Some(u64::from(u32::from_le_bytes([t[0], t[1], t[2], t[3]])))
                }
                _ => None,
            };
            let source = Source::Packed {
                compression,
                data: input,
                offset: 0,
                declared,
            };
            return Ok((ImageFormat::Compressed(compression), source));
        }
        Magic::Unsupported(_) | Magic::Unknown => {}
    }
    if bzimage::is_bzimage(input) {
        let (payload, data) = bzimage::payload(input)?;
        let format = ImageFormat::BzImage {
            header: payload.header,
            payload_offset: payload.offset,
            compression: payload.compression,
        };
        let source = match payload.compression {
            None => Source::Elf(data),
            Some(compression) => Source::Packed {
                compression,
                data,
                offset: payload.offset,
                declared: payload.declared,
            },
        };
        return Ok((format, source));
    }
    Err(match magic {
        Magic::Unsupported(compression) => KernelError::UnsupportedCompression {
            offset: 0,
            compression,
        },
        _ => KernelError::UnknownFormat {
            magic: magic_of(input),
        },
    })
}

/// Unpacks a kernel file to its ELF image, without parsing it: the image itself for an ELF
/// file, the payload of a bzImage, the unpacked data of a compressed file.
///
/// # Errors
///
/// [`KernelError::ImageTooLarge`], the bzImage header and payload errors, the decoders' errors
/// ([`decompress`]), and [`KernelError::UnpackedNotElf`] when the result is not ELF.
pub fn unpack<'a>(input: &'a [u8], limits: &ImageLimits) -> Result<(ImageFormat, Cow<'a, [u8]>)> {
    check_image_size(input, limits)?;
    let (format, source) = identify(input)?;
    let elf = match source {
        Source::Elf(bytes) => Cow::Borrowed(bytes),
        Source::Packed {
            compression,
            data,
            offset,
            declared,
        } => Cow::Owned(unpack_packed(compression, data, offset, declared, limits)?),
    };
    Ok((format, elf))
}

fn check_image_size(input: &[u8], limits: &ImageLimits) -> Result<()> {
    let size = input.len() as u64;
    if size > limits.max_image {
        return Err(KernelError::ImageTooLarge {
            size,
            limit: limits.max_image,
        });
    }
    Ok(())
}

fn unpack_packed(
    compression: Compression,
    data: &[u8],
    offset: u64,
    declared: Option<u64>,
    limits: &ImageLimits,
) -> Result<Vec<u8>> {
    let elf = decompress::decompress_at(compression, data, offset, declared, limits)?;
    if !elf.starts_with(decompress::ELF_MAGIC) {
        return Err(KernelError::UnpackedNotElf {
            compression,
            magic: magic_of(&elf),
        });
    }
    Ok(elf)
}

/// What the kernel cache did for one load.
#[derive(Debug)]
#[non_exhaustive]
pub enum CacheOutcome {
    /// The kernel was not compressed: nothing to cache.
    NotPacked,
    /// No cache was given.
    Off,
    /// The unpacked kernel came from the cache.
    Hit,
    /// The kernel was unpacked and stored.
    Stored,
    /// A corrupt entry was found and removed; the kernel was unpacked and stored again.
    Replaced(Corruption),
    /// The kernel was unpacked, but storing it failed (the load itself succeeded).
    StoreFailed(CacheError),
    /// The kernel was unpacked; the cache was neither read nor written, because someone other
    /// than root and this user could write to it ([`KernelCache::check_trusted`]).
    Untrusted(Untrusted),
}

/// The cache a load may use: `cache` if it passes [`KernelCache::check_trusted`].
fn vetted(cache: Option<&KernelCache>) -> (Option<&KernelCache>, Option<Untrusted>) {
    match cache.map(KernelCache::check_trusted) {
        Some(Err(u)) => (None, Some(u)),
        _ => (cache, None),
    }
}

/// A load made without the cache because it was untrusted says so.
fn note_untrusted(loaded: &mut Loaded, untrusted: Option<Untrusted>) {
    if let (Some(u), CacheOutcome::Off) = (untrusted, &loaded.cache) {
        loaded.cache = CacheOutcome::Untrusted(u);
    }
}

/// Where the time of one load went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadTimings {
    /// Reading the kernel file.
    pub read: Duration,
    /// Hashing it for the cache key.
    pub hash: Duration,
    /// Looking it up in the cache (reading and checking a hit).
    pub cache_lookup: Duration,
    /// Unpacking it.
    pub decompress: Duration,
    /// Parsing the ELF image.
    pub parse: Duration,
    /// Storing it in the cache.
    pub cache_store: Duration,
}

/// A kernel, loaded: its ELF image, parsed and checked.
#[derive(Clone, Debug)]
pub struct KernelImage {
    format: ImageFormat,
    bytes: ImageBytes,
    elf: ElfKernel,
    /// For an image unpacked here and stored: the zero ranges the store found (a cached
    /// image's are its entry's; see [`KernelImage::zero_ranges`]).
    zero: std::sync::Arc<[std::ops::Range<u64>]>,
}

/// The ELF image's bytes: in memory (read or unpacked), or a cache entry's.
#[derive(Clone, Debug)]
enum ImageBytes {
    Owned(Vec<u8>),
    Cached(EntryBytes),
}

impl std::ops::Deref for ImageBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            ImageBytes::Owned(v) => v,
            ImageBytes::Cached(e) => e,
        }
    }
}

/// The result of a load: the kernel, what the cache did, and where the time went.
#[derive(Debug)]
pub struct Loaded {
    /// The kernel.
    pub image: KernelImage,
    /// What the cache did.
    pub cache: CacheOutcome,
    /// Where the time went.
    pub timings: LoadTimings,
}

impl KernelImage {
    /// Reads and loads a kernel file (see [`KernelImage::load`]).
    ///
    /// # Errors
    ///
    /// [`KernelError::Read`], [`KernelError::ImageTooLarge`] (checked before reading), and
    /// those of [`KernelImage::load`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::path::Path;
    /// use toolstack::build::kernel::{GuestKind, ImageLimits, KernelCache, KernelImage};
    ///
    /// let cache = KernelCache::new(KernelCache::DEFAULT_DIR);
    /// let loaded = KernelImage::load_file(
    ///     Path::new("/boot/vmlinuz-6.1.0-57-amd64"),
    ///     &ImageLimits::default(),
    ///     Some(&cache),
    /// )?;
    /// let layout = loaded.image.layout(GuestKind::Pv)?;
    /// println!("entry {:#x}, {:?}", layout.entry, loaded.cache);
    /// # Ok::<(), toolstack::build::kernel::KernelError>(())
    /// ```
    pub fn load_file(
        path: &Path,
        limits: &ImageLimits,
        cache: Option<&KernelCache>,
    ) -> Result<Loaded> {
        let started = Instant::now();
        let (cache, untrusted) = vetted(cache);
        // The stamp before the read: a file changed while it is read never matches it again.
        let stamp = cache
            .and(std::fs::metadata(path).ok())
            .map(|m| FileStamp::of(&m));
        let known = cache.zip(stamp.as_ref()).and_then(|(c, s)| c.known_key(s));
        // A file whose key is known, and whose unpacked image the cache holds, is not read:
        // only its head, for its format.
        let mut corrupt = None;
        if let (Some(cache), Some(key), Some(stamp)) = (cache, known, stamp.as_ref()) {
            if let Some(format) = packed_format_of_head(path, stamp.size()) {
                let read = started.elapsed();
                match cache.lookup(&key, limits.max_decompressed) {
                    Lookup::Hit(entry) => {
                        let mut loaded = Self::from_entry(format, entry, limits)?;
                        loaded.timings.read = read;
                        loaded.timings.cache_lookup =
                            started.elapsed() - read - loaded.timings.parse;
                        return Ok(loaded);
                    }
                    Lookup::Corrupt(c) => corrupt = Some(c),
                    Lookup::Miss => {}
                }
            }
        }
        let input = inputs::read_bounded(path, limits.max_image, |size, limit| {
            KernelError::ImageTooLarge { size, limit }
        })?;
        let read = started.elapsed();
        let (mut loaded, key) = Self::load_keyed(input, limits, cache, known)?;
        loaded.timings.read = read;
        note_untrusted(&mut loaded, untrusted);
        // The entry the fast path found corrupt (and removed) was replaced by this load.
        if let (Some(c), CacheOutcome::Stored) = (corrupt, &loaded.cache) {
            loaded.cache = CacheOutcome::Replaced(c);
        }
        if let (Some(cache), Some(stamp), Some(key), None) = (cache, stamp, key, known) {
            cache.remember_key(&stamp, &key, SystemTime::now());
        }
        Ok(loaded)
    }

    /// A kernel from a cache entry, its file's format known.
    fn from_entry(format: ImageFormat, entry: EntryBytes, limits: &ImageLimits) -> Result<Loaded> {
        let bytes = ImageBytes::Cached(entry);
        let started = Instant::now();
        let elf = ElfKernel::parse(&bytes, limits)?;
        let timings = LoadTimings {
            parse: started.elapsed(),
            ..LoadTimings::default()
        };
        Ok(Loaded {
            image: KernelImage {
                format,
                bytes,
                elf,
                zero: std::sync::Arc::new([]),
            },
            cache: CacheOutcome::Hit,
            timings,
        })
    }

    /// Loads a kernel from its file's bytes: identifies the format, unpacks the ELF image (from
    /// `cache` when it holds this file's, storing it there otherwise), and parses it.
    ///
    /// Only an image that parses is stored, so the cache holds no garbage; a failure to store
    /// is reported in [`Loaded::cache`], not as an error. A cache that others could write to
    /// is not used at all ([`CacheOutcome::Untrusted`]).
    ///
    /// # Errors
    ///
    /// Those of [`unpack`] and of [`ElfKernel::parse`].
    pub fn load(
        input: Vec<u8>,
        limits: &ImageLimits,
        cache: Option<&KernelCache>,
    ) -> Result<Loaded> {
        let (cache, untrusted) = vetted(cache);
        let (mut loaded, _) = Self::load_keyed(input, limits, cache, None)?;
        note_untrusted(&mut loaded, untrusted);
        Ok(loaded)
    }

    /// [`load`](Self::load), with the input's cache key when it is known already (remembered
    /// for its file); returns the key it looked up, if it used the cache.
    fn load_keyed(
        input: Vec<u8>,
        limits: &ImageLimits,
        cache: Option<&KernelCache>,
        known: Option<CacheKey>,
    ) -> Result<(Loaded, Option<CacheKey>)> {
        check_image_size(&input, limits)?;
        let mut timings = LoadTimings::default();
        let (format, source) = identify(&input)?;
        // The key to store the unpacked image under, once it has parsed.
        let mut store_as = None;
        let mut used_key = None;
        let (unpacked, mut outcome) = match source {
            Source::Elf(bytes) if bytes.len() == input.len() => (None, CacheOutcome::NotPacked),
            Source::Elf(bytes) => (
                Some(ImageBytes::Owned(bytes.to_vec())),
                CacheOutcome::NotPacked,
            ),
            Source::Packed {
                compression,
                data,
                offset,
                declared,
            } => {
                let mut unpack = || {
                    let started = Instant::now();
                    let elf = unpack_packed(compression, data, offset, declared, limits);
                    timings.decompress = started.elapsed();
                    elf.map(ImageBytes::Owned)
                };
                match cache {
                    None => (Some(unpack()?), CacheOutcome::Off),
                    Some(cache) => {
                        let started = Instant::now();
                        let key = known.unwrap_or_else(|| CacheKey::of(&input));
                        used_key = Some(key);
                        let hashed = Instant::now();
                        let found = cache.lookup(&key, limits.max_decompressed);
                        let looked_up = Instant::now();
                        let unpacked = match found {
                            Lookup::Hit(elf) => (Some(ImageBytes::Cached(elf)), CacheOutcome::Hit),
                            Lookup::Miss => (Some(unpack()?), CacheOutcome::Stored),
                            Lookup::Corrupt(c) => (Some(unpack()?), CacheOutcome::Replaced(c)),
                        };
                        if !matches!(unpacked.1, CacheOutcome::Hit) {
                            store_as = Some((cache, key));
                        }
                        timings.hash = hashed - started;
                        timings.cache_lookup = looked_up - hashed;
                        unpacked
                    }
                }
            }
        };
        let bytes = unpacked.unwrap_or(ImageBytes::Owned(input));
        let started = Instant::now();
        let elf = ElfKernel::parse(&bytes, limits)?;
        timings.parse = started.elapsed();
        let mut zero: std::sync::Arc<[std::ops::Range<u64>]> = std::sync::Arc::new([]);
        if let Some((cache, key)) = store_as {
            let started = Instant::now();
            // The scan for zero pages that the entry leaves out also tells the loader what it
            // need not copy.
            let runs = cache::stored_runs(&bytes);
            zero = cache::zero_ranges(bytes.len(), &runs).into();
            if let Err(e) = cache.store_runs(&key, &bytes, &runs) {
                outcome = CacheOutcome::StoreFailed(e);
            }
            timings.cache_store = started.elapsed();
        }
        Ok((
            Loaded {
                image: KernelImage {
                    format,
                    bytes,
                    elf,
                    zero,
                },
                cache: outcome,
                timings,
            },
            used_key,
        ))
    }

    /// What the kernel file was.
    pub fn format(&self) -> ImageFormat {
        self.format
    }

    /// Byte ranges of the ELF image known to be zero, sorted and disjoint: the pages a cache
    /// entry left out, or found so when the image was stored; empty when the cache was not
    /// used. The builder clears the guest memory they land in rather than copying them.
    pub fn zero_ranges(&self) -> &[std::ops::Range<u64>] {
        match &self.bytes {
            ImageBytes::Cached(entry) => entry.zero_ranges(),
            ImageBytes::Owned(_) => &self.zero,
        }
    }

    /// The ELF image's bytes.
    pub fn elf_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The parsed ELF image.
    pub fn elf(&self) -> &ElfKernel {
        &self.elf
    }

    /// The Xen notes.
    pub fn notes(&self) -> &XenNotes {
        self.elf.notes()
    }

    /// The loadable segments with their file bytes (`filesz` of them; the rest up to `memsz`
    /// is zero in the guest).
    pub fn segments(&self) -> impl Iterator<Item = (&LoadSegment, &[u8])> {
        self.elf.segments().iter().map(|s| {
            // Checked at parse time to be inside these bytes.
            let data = usize::try_from(s.offset())
                .ok()
                .zip(usize::try_from(s.offset() + s.filesz()).ok())
                .and_then(|(start, end)| self.bytes.get(start..end))
                .unwrap_or(&[]);
            (s, data)
        })
    }

    /// Where the kernel goes, for a guest of `kind` (see [`ElfKernel::layout`]).
    ///
    /// # Errors
    ///
    /// Those of [`ElfKernel::layout`].
    pub fn layout(&self, kind: GuestKind) -> Result<KernelLayout> {
        self.elf.layout(kind)
    }
}
