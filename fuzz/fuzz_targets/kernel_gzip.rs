//! The gzip decoder of the kernel loader on arbitrary bytes, and on good gzip streams broken where
//! the fuzzer says (kernel_common's input scheme): decoding gives an error or output within
//! the limit (exactly the size field's bytes when it has one), and never allocates more than
//! kernel_common::MAX_ALLOC. The same bytes as an initrd (`Initrd::for_guest`, which inflates a
//! gzip initrd as libxenguest does): either inflated to exactly its trailer's size plus 16 zero
//! bytes, within the limit, or handed over unchanged.

#![no_main]

mod kernel_common;
#[path = "../../toolstack/tests/kernel_fixture/mod.rs"]
mod kernel_fixture;

use libfuzzer_sys::fuzz_target;
use toolstack::build::kernel::{Compression, Initrd};

#[global_allocator]
static ALLOC: kernel_common::Bounded = kernel_common::Bounded;

fuzz_target!(|data: &[u8]| {
    kernel_common::fuzz_codec(data, Compression::Gzip, kernel_fixture::gzip);

    let limits = kernel_common::limits();
    let Ok(initrd) = Initrd::from_bytes(data.to_vec(), &limits) else {
        return;
    };
    let guest = initrd.clone().for_guest(&limits);
    if guest != initrd {
        let n = data.len();
        let size = u32::from_le_bytes([data[n - 4], data[n - 3], data[n - 2], data[n - 1]]);
        assert_eq!(guest.len(), size as usize + 16, "inflated to the trailer's size");
        assert!(guest.len() as u64 <= limits.max_initrd + 16);
        assert!(guest.as_bytes()[size as usize..].iter().all(|&b| b == 0));
    }
});
