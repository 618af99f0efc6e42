//! What the guest program (`examples/vm_peer.rs`) and the dom0 side of the two-domain tests
//! agree on: the xenstore keys the guest writes under its own `data/` directory, and the byte
//! patterns each side writes into the shared pages.

#![allow(dead_code)] // the guest program and each test use their own subset

/// The guest program's directory, relative to the guest's home `/local/domain/<domid>`:
/// libxl makes `data/` writable by the guest.
pub const DIR: &str = "data/rxen-peer";

/// Where the guest reports how far it got: a [`State`] word, or `error: <what failed>`.
pub const STATE: &str = "state";
/// The grant references of the shared pages, comma-separated, in page order.
pub const REFS: &str = "refs";
/// The guest's unbound event-channel port (remote dom0).
pub const PORT: &str = "port";
/// The Xen devices the guest found, comma-separated.
pub const DEVICES: &str = "devices";

/// The guest's progress, as written to [`STATE`].
pub mod state {
    /// Pages shared, pattern written, refs and port published; waiting for dom0.
    pub const SHARED: &str = "shared";
    /// Dom0's event came and its reply is in every page; the guest notified back
    /// and now holds the pages until it is destroyed.
    pub const REPLY_OK: &str = "reply-ok";
    /// Prefix of a failure report.
    pub const ERROR: &str = "error: ";
}

/// Bytes in a page (x86).
pub const PAGE_SIZE: usize = 4096;

/// The guest's pattern for one page.
pub fn pattern_page(seed: u32, page: usize) -> Vec<u8> {
    (0..PAGE_SIZE).map(|o| pattern(seed, page, o)).collect()
}

/// Dom0's reply for one page.
pub fn reply_page(seed: u32, page: usize) -> Vec<u8> {
    (0..PAGE_SIZE).map(|o| reply(seed, page, o)).collect()
}

/// The first offset where `got` differs from `want`, for failure messages.
pub fn first_difference(got: &[u8], want: &[u8]) -> Option<usize> {
    got.iter().zip(want).position(|(a, b)| a != b)
}

/// The devices a guest needs for the exchange.
pub const DEVICE_PATHS: [&str; 4] = [
    "/dev/xen/xenbus",
    "/dev/xen/evtchn",
    "/dev/xen/gntdev",
    "/dev/xen/gntalloc",
];

/// The byte the guest writes at `offset` of shared page `page`.
pub fn pattern(seed: u32, page: usize, offset: usize) -> u8 {
    mix(seed, page, offset, 0x9e37_79b9)
}

/// The byte dom0 writes back at `offset` of shared page `page`.
pub fn reply(seed: u32, page: usize, offset: usize) -> u8 {
    mix(seed, page, offset, 0x85eb_ca6b)
}

fn mix(seed: u32, page: usize, offset: usize, k: u32) -> u8 {
    let small = |v: usize| u32::try_from(v).expect("page numbers and offsets fit in u32");
    let mut x = seed ^ k;
    x = x.wrapping_mul(0x0100_0193) ^ small(page);
    x = x.wrapping_mul(0x0100_0193) ^ small(offset);
    x ^= x >> 15;
    x = x.wrapping_mul(0x2c1b_3c6d);
    x ^= x >> 12;
    x.to_le_bytes()[0]
}
