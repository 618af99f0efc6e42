//! The kernel cache's entry reader on arbitrary files, and on good entries broken where the
//! fuzzer says (kernel_common's input scheme). A lookup gives a hit, a miss or a corrupt entry,
//! never a crash or an allocation above kernel_common::MAX_ALLOC; a hit is within the limit,
//! its zero ranges are sorted, inside it and zero; an unbroken entry gives its content back;
//! a corrupt entry is removed.
//!
//! Mode 0 writes `rest` as the entry file. Mode 1 stores a content made from `rest` (each byte
//! a page: 0 a zero page, else a page of that byte; an odd last byte makes the content end
//! mid-page), then flips the chosen bytes of its entry.

#![no_main]

mod kernel_common;
#[path = "../../toolstack/tests/kernel_fixture/mod.rs"]
mod kernel_fixture;

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use toolstack::build::kernel::{CacheKey, KernelCache, Lookup};

#[global_allocator]
static ALLOC: kernel_common::Bounded = kernel_common::Bounded;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::temp_dir().join(format!("rxen-fuzz-kernel-cache-{}", std::process::id()))
    })
}

fn content_of(rest: &[u8]) -> Vec<u8> {
    let mut content = Vec::new();
    for &b in rest.iter().take(64) {
        content.extend(std::iter::repeat_n(b, 4096));
    }
    if rest.len() % 2 == 1 {
        content.truncate(content.len().saturating_sub(1000));
    }
    content
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = kernel_common::Input::parse(data) else {
        return;
    };
    let cache = KernelCache::new(dir());
    let key = CacheKey::of(b"fuzzed entry");
    let path = cache.entry_path(&key);
    let mut expect = None;
    match input.mode % 2 {
        0 => {
            std::fs::create_dir_all(dir()).expect("cache directory");
            std::fs::write(&path, input.rest).expect("write the entry");
        }
        _ => {
            let content = content_of(input.rest);
            cache.store(&key, &content).expect("store");
            let mut bytes = std::fs::read(&path).expect("read the entry back");
            let before = bytes.clone();
            input.apply(&mut bytes);
            std::fs::write(&path, &bytes).expect("write the entry");
            if bytes == before {
                expect = Some(content);
            }
        }
    }
    match cache.lookup(&key, kernel_common::LIMIT) {
        Lookup::Hit(v) => {
            assert!(v.len() as u64 <= kernel_common::LIMIT);
            let mut at = 0;
            for r in v.zero_ranges() {
                assert!(at <= r.start && r.start < r.end && r.end <= v.len() as u64, "{r:?}");
                assert!(v[r.start as usize..r.end as usize].iter().all(|&b| b == 0));
                at = r.end;
            }
            if let Some(content) = expect {
                assert!(*v == content[..], "an unbroken entry came back different");
            }
        }
        Lookup::Corrupt(c) => {
            assert!(expect.is_none(), "an unbroken entry was corrupt: {c:?}");
            assert!(!path.exists(), "a corrupt entry was left");
        }
        Lookup::Miss => assert!(expect.is_none(), "an unbroken entry was missed"),
    }
    let _ = std::fs::remove_file(&path);
});
