//! The gzip decoder of the kernel loader on arbitrary bytes, and on good gzip streams broken where
//! the fuzzer says (kernel_common's input scheme): decoding gives an error or output within
//! the limit (exactly the size field's bytes when it has one), and never allocates more than
//! kernel_common::MAX_ALLOC.

#![no_main]

mod kernel_common;
#[path = "../../toolstack/tests/kernel_fixture/mod.rs"]
mod kernel_fixture;

use libfuzzer_sys::fuzz_target;
use toolstack::build::kernel::Compression;

#[global_allocator]
static ALLOC: kernel_common::Bounded = kernel_common::Bounded;

fuzz_target!(|data: &[u8]| {
    kernel_common::fuzz_codec(data, Compression::Gzip, kernel_fixture::gzip);
});
