//! Shared by the kernel-loader targets (`kernel_*`): small limits, an allocator that aborts on
//! any allocation above a bound, and the structured-input scheme.
//!
//! A fuzzer that starts from an empty corpus (as `scripts/test` does) rarely writes a valid xz
//! header or a bzImage with "HdrS" at 0x202. So the targets also build good input themselves,
//! with the real encoders, and then break it where the fuzzer says:
//!
//! ```text
//! [mode u8][n u8][n × (offset u32 LE, xor u8)][rest...]
//! ```
//!
//! Mode 0 hands `rest` to the loader as it is; the other modes build something from `rest`
//! (a compressed stream, a bzImage, an ELF image with `rest` as its notes) and flip the `n`
//! bytes (offsets taken modulo the length) before handing it over.

#![allow(dead_code)] // each target uses a different subset

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;

use toolstack::build::kernel::{decompress, Compression, ImageLimits, KernelError};

/// The limits the targets load under: small, so that a bound that does not hold shows.
pub const LIMIT: u64 = 8 << 20;

pub fn limits() -> ImageLimits {
    ImageLimits {
        max_image: 2 * LIMIT,
        max_decompressed: LIMIT,
        max_window: LIMIT,
        max_initrd: LIMIT,
        ..ImageLimits::default()
    }
}

/// The largest single allocation a target may make: the output and the window are each at most
/// [`LIMIT`]; anything near this is a bound that did not hold.
pub const MAX_ALLOC: usize = 4 * LIMIT as usize;

/// The system allocator, aborting on any allocation above [`MAX_ALLOC`] (libFuzzer reports the
/// abort as a crash, with the input that caused it).
pub struct Bounded;

fn check(size: usize) {
    if size > MAX_ALLOC {
        // No allocation here: stderr is unbuffered and the message static.
        let _ = std::io::stderr()
            .write_all(b"allocation above the fuzz bound (kernel_common::MAX_ALLOC)\n");
        std::process::abort();
    }
}

// SAFETY: every method checks the size and then forwards to `System` with the caller's own
// arguments, so `Bounded` keeps all of `System`'s guarantees.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from `System`, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: `ptr` came from `System` with `layout`; the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// A structured input (see the module notes).
pub struct Input<'a> {
    pub mode: u8,
    flips: Vec<(u32, u8)>,
    pub rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Input<'a>> {
        let (&mode, data) = data.split_first()?;
        let (&n, mut data) = data.split_first()?;
        let mut flips = Vec::new();
        for _ in 0..n % 16 {
            let (flip, rest) = data.split_at_checked(5)?;
            flips.push((
                u32::from_le_bytes([flip[0], flip[1], flip[2], flip[3]]),
                flip[4],
            ));
            data = rest;
        }
        Some(Input {
            mode,
            flips,
            rest: data,
        })
    }

    /// Flips the chosen bytes of `bytes`.
    pub fn apply(&self, bytes: &mut [u8]) {
        if bytes.is_empty() {
            return;
        }
        for &(at, xor) in &self.flips {
            let at = at as usize % bytes.len();
            bytes[at] ^= xor;
        }
    }
}

/// Decodes `stream` both ways the loader does, and checks the bounds held.
pub fn decode(compression: Compression, stream: &[u8]) {
    let limits = limits();
    // A compressed file: no size field, bounded by the limit.
    if let Ok(out) = decompress(compression, stream, None, &limits) {
        assert!(out.len() as u64 <= LIMIT);
    }
    // A bzImage payload: its last four bytes are the size field.
    if let Some(tail) = stream.len().checked_sub(4).map(|at| &stream[at..]) {
        let declared = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        match decompress(compression, stream, Some(declared), &limits) {
            Ok(out) => assert_eq!(out.len() as u64, declared),
            Err(KernelError::DeclaredSizeTooLarge { .. }) => assert!(declared > LIMIT),
            Err(_) => {}
        }
    }
}

/// The target body for one codec: `encode` makes a good stream from the input.
pub fn fuzz_codec(data: &[u8], compression: Compression, encode: fn(&[u8]) -> Vec<u8>) {
    let Some(input) = Input::parse(data) else {
        return;
    };
    match input.mode % 3 {
        0 => decode(compression, input.rest),
        mode => {
            let mut stream = encode(input.rest);
            if mode == 2 && compression != Compression::Gzip {
                // With the true size field, as in a bzImage.
                stream.extend_from_slice(&(input.rest.len() as u32).to_le_bytes());
            }
            input.apply(&mut stream);
            decode(compression, &stream);
        }
    }
}

/// A small Xen kernel (Debian's notes, two short segments), quick to build and to compress.
pub fn small_kernel() -> super::kernel_fixture::ElfBuilder {
    use super::kernel_fixture::{pattern, ElfBuilder, Seg, PF_R, PF_W, PF_X, PSTART, VIRT_BASE};
    let mut k = ElfBuilder::debian_like();
    let notes = k.segments.pop().expect("the note segment is last");
    k.segments = vec![
        Seg::load(
            PF_R | PF_X,
            PSTART,
            VIRT_BASE + PSTART,
            pattern(256, 1),
            0x6000,
        ),
        Seg::load(
            PF_R | PF_W,
            PSTART + 0x6000,
            VIRT_BASE + PSTART + 0x6000,
            pattern(64, 2),
            0x2000,
        ),
        notes,
    ];
    k
}
