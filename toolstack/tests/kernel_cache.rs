//! The cache of unpacked kernels: a second load skips decompression; a corrupt entry is never
//! trusted, but removed and rewritten; the size stays bounded; concurrent processes share it.

// Test sizes and bytes made from counters are small: they fit every integer type.
#![allow(clippy::cast_possible_truncation)]

mod kernel_fixture;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use kernel_fixture::*;
use toolstack::build::kernel::{
    CacheError, CacheKey, CacheOutcome, Corruption, FileStamp, ImageLimits, KernelCache,
    KernelImage, Lookup,
};

fn load(input: &[u8], cache: &KernelCache) -> toolstack::build::kernel::Loaded {
    KernelImage::load(input.to_vec(), &ImageLimits::default(), Some(cache)).unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_second_load_of_the_same_kernel_comes_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = KernelCache::new(dir.path().join("kernels"));
    let (bz, elf) = debian_like_bzimage("xz");

    let first = load(&bz, &cache);
    assert!(
        matches!(first.cache, CacheOutcome::Stored),
        "{:?}",
        first.cache
    );
    assert!(first.timings.decompress > Duration::ZERO);
    let key = CacheKey::of(&bz);
    assert_eq!(
        entries(cache.dir()),
        vec![format!("{}.elf", key.to_hex())],
        "one entry, named by the SHA-256 of the file, and no temporary file left"
    );

    let second = load(&bz, &cache);
    assert!(
        matches!(second.cache, CacheOutcome::Hit),
        "{:?}",
        second.cache
    );
    assert_eq!(second.timings.decompress, Duration::ZERO);
    assert_eq!(second.image.elf_bytes(), &elf[..]);
    assert_eq!(second.image.format(), first.image.format());
    assert_eq!(second.image.elf(), first.image.elf());

    // Another kernel is another entry.
    let (other, _) = debian_like_bzimage("gzip");
    assert!(matches!(load(&other, &cache).cache, CacheOutcome::Stored));
    assert_eq!(entries(cache.dir()).len(), 2);
}

#[test]
fn an_uncompressed_kernel_is_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let cache = KernelCache::new(dir.path());
    let elf = ElfBuilder::debian_like().bytes();
    assert!(matches!(load(&elf, &cache).cache, CacheOutcome::NotPacked));
    let bz = bzimage(&elf, BzParams::default());
    assert!(matches!(load(&bz, &cache).cache, CacheOutcome::NotPacked));
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn without_a_cache_nothing_is_stored() {
    let (bz, _) = debian_like_bzimage("zstd");
    let loaded = KernelImage::load(bz, &ImageLimits::default(), None).unwrap();
    assert!(matches!(loaded.cache, CacheOutcome::Off));
}

/// Stores the default kernel, breaks its entry with `damage`, and checks that the next load
/// ignores it (reporting `expect`), unpacks again, and leaves a good entry.
fn corrupt_entry_is_replaced(damage: impl Fn(&mut Vec<u8>), expect: impl Fn(&Corruption) -> bool) {
    let dir = tempfile::tempdir().unwrap();
    let cache = KernelCache::new(dir.path());
    let (bz, elf) = debian_like_bzimage("xz");
    load(&bz, &cache);
    let path = cache.entry_path(&CacheKey::of(&bz));
    let mut bytes = fs::read(&path).unwrap();
    damage(&mut bytes);
    fs::write(&path, &bytes).unwrap();

    let again = load(&bz, &cache);
    match &again.cache {
        CacheOutcome::Replaced(c) => assert!(expect(c), "{c:?}"),
        other => panic!("the corrupt entry was not replaced: {other:?}"),
    }
    assert_eq!(
        again.image.elf_bytes(),
        &elf[..],
        "unpacked again, not read from the entry"
    );
    let third = load(&bz, &cache);
    assert!(
        matches!(third.cache, CacheOutcome::Hit),
        "{:?}",
        third.cache
    );
    assert_eq!(third.image.elf_bytes(), &elf[..]);
}

#[test]
fn an_entry_whose_content_changed_is_replaced() {
    corrupt_entry_is_replaced(
        |b| {
            let n = b.len();
            b[n / 2] ^= 1;
        },
        |c| *c == Corruption::HashMismatch,
    );
}

#[test]
fn a_truncated_entry_is_replaced() {
    corrupt_entry_is_replaced(
        |b| {
            let n = b.len();
            b.truncate(n - 100);
        },
        |c| matches!(c, Corruption::LengthMismatch { stated, actual } if stated - actual == 100),
    );
    corrupt_entry_is_replaced(|b| b.truncate(10), |c| *c == Corruption::BadHeader);
    corrupt_entry_is_replaced(|b| b.clear(), |c| *c == Corruption::BadHeader);
}

#[test]
fn an_entry_with_a_bad_magic_is_replaced() {
    corrupt_entry_is_replaced(|b| b[0] = b'X', |c| *c == Corruption::BadHeader);
}

#[test]
fn an_entry_that_claims_more_than_the_limit_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let cache = KernelCache::new(dir.path());
    let key = CacheKey::of(b"some kernel");
    cache.store(&key, &[7u8; 4096]).unwrap();
    assert!(matches!(cache.lookup(&key, 8192), Lookup::Hit(v) if *v == [7u8; 4096]));
    match cache.lookup(&key, 1000) {
        Lookup::Corrupt(Corruption::TooLarge {
            stated: 4096,
            limit: 1000,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(cache.lookup(&key, 8192), Lookup::Miss),
        "it was removed"
    );
}

#[test]
fn a_kernel_that_does_not_parse_is_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let cache = KernelCache::new(dir.path());
    let mut elf = ElfBuilder::debian_like().bytes();
    set_phdr(&mut elf, 0, PhField::Memsz, 1);
    let bz = bzimage(&payload("xz", &elf), BzParams::default());
    KernelImage::load(bz, &ImageLimits::default(), Some(&cache)).unwrap_err();
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn a_store_that_fails_does_not_fail_the_load() {
    let dir = tempfile::tempdir().unwrap();
    // The cache directory's place is taken by a file.
    let blocked = dir.path().join("kernels");
    fs::write(&blocked, b"not a directory").unwrap();
    let cache = KernelCache::new(&blocked);
    let (bz, elf) = debian_like_bzimage("lz4");
    let loaded = load(&bz, &cache);
    assert!(
        matches!(
            loaded.cache,
            CacheOutcome::StoreFailed(CacheError::CreateDir { .. })
        ),
        "{:?}",
        loaded.cache
    );
    assert_eq!(loaded.image.elf_bytes(), &elf[..]);

    // A kernel bigger than the whole cache is not stored.
    let small = KernelCache::new(dir.path().join("small")).with_max_bytes(1000);
    let loaded = load(&bz, &small);
    assert!(
        matches!(
            loaded.cache,
            CacheOutcome::StoreFailed(CacheError::EntryTooLarge { max: 1000, .. })
        ),
        "{:?}",
        loaded.cache
    );
    assert!(entries(small.dir()).is_empty());
}

fn set_age(path: &Path, age: Duration) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

#[test]
fn the_oldest_entries_go_when_the_cache_is_full() {
    let dir = tempfile::tempdir().unwrap();
    // Room for two 1000-byte entries (each 48 bytes of header and 8 of page map more), not
    // three. (Contents that are not zero: zero pages are not stored.)
    let cache = KernelCache::new(dir.path()).with_max_bytes(2200);
    let keys: Vec<CacheKey> = (0..4u8).map(|i| CacheKey::of(&[i])).collect();
    cache.store(&keys[0], &[9; 1000]).unwrap();
    set_age(&cache.entry_path(&keys[0]), Duration::from_secs(300));
    cache.store(&keys[1], &[1; 1000]).unwrap();
    set_age(&cache.entry_path(&keys[1]), Duration::from_secs(200));

    // A hit makes an entry young again: key 0 is now the newest of the two.
    assert!(matches!(cache.lookup(&keys[0], 1 << 20), Lookup::Hit(_)));

    cache.store(&keys[2], &[2; 1000]).unwrap();
    assert!(
        matches!(cache.lookup(&keys[1], 1 << 20), Lookup::Miss),
        "the oldest went"
    );
    assert!(matches!(cache.lookup(&keys[0], 1 << 20), Lookup::Hit(_)));
    assert!(matches!(cache.lookup(&keys[2], 1 << 20), Lookup::Hit(_)));
    let total: u64 = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(total <= 2200, "{total}");
}

#[test]
fn stale_temporary_files_are_cleaned_up_and_fresh_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cache = KernelCache::new(dir.path());
    let stale = dir.path().join(".tmp-crashed-writer");
    let fresh = dir.path().join(".tmp-writer-at-work");
    fs::write(&stale, b"half an entry").unwrap();
    fs::write(&fresh, b"half an entry").unwrap();
    set_age(&stale, Duration::from_secs(2 * 3600));
    cache.store(&CacheKey::of(b"k"), b"content").unwrap();
    assert!(!stale.exists());
    assert!(fresh.exists());
}

#[test]
fn threads_loading_one_kernel_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let cache = KernelCache::new(dir.path());
    let (bz, elf) = debian_like_bzimage("xz");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| load(&bz, &cache).image.elf_bytes().to_vec()))
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), elf);
        }
    });
    assert_eq!(
        entries(dir.path()),
        vec![format!("{}.elf", CacheKey::of(&bz).to_hex())]
    );
    assert!(matches!(load(&bz, &cache).cache, CacheOutcome::Hit));
}

/// The child side of the next test: loads the kernel named by the environment through the
/// cache named by it, many times, checking each result.
#[test]
fn concurrent_process_child() {
    let (Some(kernel), Some(dir)) = (
        std::env::var_os("RXEN_CACHE_CHILD_KERNEL"),
        std::env::var_os("RXEN_CACHE_CHILD_DIR"),
    ) else {
        return;
    };
    let bz = fs::read(kernel).unwrap();
    let expect = fs::read(Path::new(&dir).with_extension("expect")).unwrap();
    // A cache that holds one kernel: every store evicts the other, so stores, evictions and
    // reads of the same files interleave across the processes.
    let cache = KernelCache::new(&dir).with_max_bytes(expect.len() as u64 * 3 / 2);
    for _ in 0..40 {
        let loaded = load(&bz, &cache);
        assert!(
            !matches!(
                loaded.cache,
                CacheOutcome::Replaced(_) | CacheOutcome::StoreFailed(_)
            ),
            "{:?}",
            loaded.cache
        );
        assert!(loaded.image.elf_bytes() == expect);
    }
}

#[test]
fn processes_sharing_a_cache_never_see_a_torn_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    // Both kernels unpack to the same ELF, written before any child starts.
    fs::write(
        cache_dir.with_extension("expect"),
        ElfBuilder::debian_like().bytes(),
    )
    .unwrap();
    let mut children = Vec::new();
    for (i, codec) in ["xz", "zstd", "xz", "zstd"].iter().enumerate() {
        let (bz, _) = debian_like_bzimage(codec);
        let kernel = dir.path().join(format!("vmlinuz-{i}"));
        fs::write(&kernel, &bz).unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "concurrent_process_child", "--nocapture"])
            .env("RXEN_CACHE_CHILD_KERNEL", &kernel)
            .env("RXEN_CACHE_CHILD_DIR", &cache_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        children.push(child);
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a child failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The children ran (they stored), and the bound held: one entry fits, not two.
    assert_eq!(
        entries(&cache_dir)
            .iter()
            .filter(|n| n.ends_with(".elf"))
            .count(),
        1,
        "{:?}",
        entries(&cache_dir)
    );
    assert!(
        entries(&cache_dir).iter().all(|n| !n.starts_with(".tmp-")),
        "{:?}",
        entries(&cache_dir)
    );
}

/// A large entry (read into populated memory rather than a vector) is returned whole, and a
/// flipped byte deep inside it is caught by its checksum.
#[test]
fn a_large_entry_round_trips_and_a_flipped_byte_in_it_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let cache = KernelCache::new(dir.path());
    let key = CacheKey::of(b"a large kernel");
    let content: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    cache.store(&key, &content).unwrap();
    match cache.lookup(&key, 4 << 20) {
        Lookup::Hit(v) => assert!(*v == content[..], "a different content came back"),
        other => panic!("{other:?}"),
    }
    let path = cache.entry_path(&key);
    let mut bytes = std::fs::read(&path).unwrap();
    let deep = bytes.len() - 12345;
    bytes[deep] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    match cache.lookup(&key, 4 << 20) {
        Lookup::Corrupt(Corruption::HashMismatch) => {}
        other => panic!("{other:?}"),
    }
}

/// Contents with zero pages where Debian's kernel has them (between segments, in `.bss`) and
/// where it might (at the start, at the end, a short last page), for the page-map tests.
fn sparse_contents() -> Vec<(&'static str, Vec<u8>)> {
    let page = |b: u8| vec![b; 4096];
    let join = |parts: &[Vec<u8>]| parts.concat();
    let mut short_tail = join(&[page(1), page(0)]);
    short_tail.extend_from_slice(&[0; 100]);
    let mut short_data = join(&[page(0), page(2)]);
    short_data.extend_from_slice(&[3; 100]);
    let mut one_byte = vec![0u8; 3 * 4096];
    one_byte[4096 + 4095] = 1;
    vec![
        (
            "zero pages between data",
            join(&[page(1), page(0), page(0), page(2), page(0), page(3)]),
        ),
        (
            "leading and trailing zero pages",
            join(&[page(0), page(4), page(0)]),
        ),
        ("a short zero last page", short_tail),
        ("a short last page of data", short_data),
        ("one non-zero byte in a zero page", one_byte),
        ("all zero", vec![0; 5 * 4096 + 7]),
        (
            "no zero page",
            (0..3 * 4096 + 5)
                .map(|i: u32| (i % 253 + 1) as u8)
                .collect(),
        ),
        ("empty", Vec::new()),
    ]
}

/// What a reader should be told is zero: the all-zero pages, merged.
fn zero_pages_of(content: &[u8]) -> Vec<std::ops::Range<u64>> {
    let mut out: Vec<std::ops::Range<u64>> = Vec::new();
    for (i, page) in content.chunks(4096).enumerate() {
        if page.iter().all(|&b| b == 0) {
            let r = (i * 4096) as u64..(i * 4096 + page.len()) as u64;
            match out.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => out.push(r),
            }
        }
    }
    out
}

/// An entry leaves out the content's all-zero pages (the file is smaller by them) and gives
/// the content back whole, small (a vector) and large (a mapping), saying where the zeros
/// are.
#[test]
fn an_entry_leaves_out_zero_pages_and_gives_them_back_as_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let cache = KernelCache::new(dir.path());
    let mut contents = sparse_contents();
    // A large one: read into a mapping.
    let mut large = vec![0u8; 3 << 20];
    for (i, b) in large.iter_mut().enumerate() {
        if (i / 4096) % 3 == 0 || i > (3 << 20) - 5000 {
            *b = (i % 251) as u8 | 1;
        }
    }
    contents.push(("3 MiB, every third page data", large));
    for (i, (what, content)) in contents.iter().enumerate() {
        let key = CacheKey::of(&[i as u8, 0xee]);
        cache.store(&key, content).unwrap();
        let zero = zero_pages_of(content);
        let zero_bytes: u64 = zero.iter().map(|r| r.end - r.start).sum();
        let file_len = fs::metadata(cache.entry_path(&key)).unwrap().len();
        let runs = content.len().div_ceil(4096) as u64 - zero_bytes.div_ceil(4096);
        assert!(
            file_len <= 48 + 8 * runs + content.len() as u64 - zero_bytes,
            "{what}: a {file_len}-byte entry for {} bytes of which {zero_bytes} zero",
            content.len()
        );
        match cache.lookup(&key, 16 << 20) {
            Lookup::Hit(v) => {
                assert!(*v == content[..], "{what}: a different content came back");
                assert_eq!(v.zero_ranges(), &zero[..], "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// A page map that names pages out of order, twice, past the content's end, or none in a
/// run is caught before any page is read, and the entry removed.
#[test]
fn an_entry_with_a_bad_page_map_is_removed() {
    // Three runs: pages 0, 2 and 4 (the map follows the 48-byte header, a run being its first
    // page and page count as u32s).
    let page = |b: u8| vec![b; 4096];
    let content = [page(1), page(0), page(2), page(0), page(3)].concat();
    let run = |b: &mut Vec<u8>, i: usize, first: u32, n: u32| {
        let at = 48 + 8 * i;
        b[at..at + 4].copy_from_slice(&first.to_le_bytes());
        b[at + 4..at + 8].copy_from_slice(&n.to_le_bytes());
    };
    type Damage<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;
    let cases: Vec<(&str, Damage<'_>, Corruption)> = vec![
        (
            "an empty run",
            Box::new(|b| run(b, 1, 2, 0)),
            Corruption::BadRuns,
        ),
        (
            "out of order",
            Box::new(|b| run(b, 1, 0, 1)),
            Corruption::BadRuns,
        ),
        (
            "overlapping",
            Box::new(|b| run(b, 0, 0, 3)),
            Corruption::BadRuns,
        ),
        (
            "past the end",
            Box::new(|b| run(b, 2, 5, 1)),
            Corruption::BadRuns,
        ),
        (
            "far past it",
            Box::new(|b| run(b, 2, u32::MAX, 1)),
            Corruption::BadRuns,
        ),
        (
            "more runs than pages",
            Box::new(|b| b[20..24].copy_from_slice(&6u32.to_le_bytes())),
            Corruption::BadRuns,
        ),
        (
            "a page moved",
            Box::new(|b| run(b, 1, 1, 1)),
            Corruption::HashMismatch,
        ),
        (
            // Page 4 becomes pages 3-4, the data a page longer: the checksum differs.
            "a run lengthened",
            Box::new(|b| {
                run(b, 2, 3, 2);
                b.extend_from_slice(&[3; 4096]);
            }),
            Corruption::HashMismatch,
        ),
        (
            "a reserved byte set",
            Box::new(|b| b[40] = 1),
            Corruption::BadHeader,
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let cache = KernelCache::new(dir.path());
    let key = CacheKey::of(b"three runs");
    for (what, damage, expect) in cases {
        cache.store(&key, &content).unwrap();
        let path = cache.entry_path(&key);
        let mut bytes = fs::read(&path).unwrap();
        assert_eq!(bytes[20..24], 3u32.to_le_bytes(), "three runs");
        damage(&mut bytes);
        fs::write(&path, &bytes).unwrap();
        match cache.lookup(&key, 1 << 20) {
            Lookup::Corrupt(c) => assert_eq!(c, expect, "{what}"),
            other => panic!("{what}: {other:?}"),
        }
        assert!(
            matches!(cache.lookup(&key, 1 << 20), Lookup::Miss),
            "{what}: removed"
        );
    }
}

/// Another kernel: Debian-like, with one byte of its text changed, packed with `codec`.
fn other_kernel(codec: &str) -> (Vec<u8>, Vec<u8>) {
    let mut elf = ElfBuilder::debian_like().bytes();
    let mid = elf.len() / 2;
    elf[mid] ^= 0x20;
    (bzimage(&payload(codec, &elf), BzParams::default()), elf)
}

/// The file keys remembered under `dir/files`.
fn file_keys(cache: &KernelCache) -> Vec<String> {
    entries(&cache.dir().join("files"))
}

fn load_file(path: &Path, cache: &KernelCache) -> toolstack::build::kernel::Loaded {
    KernelImage::load_file(path, &ImageLimits::default(), Some(cache)).unwrap()
}

/// Rewrites the file key record at `index`, which names `from`'s key, to name `to`'s.
fn redirect_record(index: &Path, from: &[u8], to: &[u8]) {
    let text = fs::read_to_string(index).unwrap();
    let swapped = text.replace(&CacheKey::of(from).to_hex(), &CacheKey::of(to).to_hex());
    assert_ne!(text, swapped);
    fs::write(index, swapped).unwrap();
}

/// A cache that remembers file keys at once (settle time zero), and the kernel file `bz`
/// written as `vmlinuz` beside it, in `dir`.
fn settled_setup(dir: &Path, bz: &[u8]) -> (KernelCache, std::path::PathBuf) {
    let cache = KernelCache::new(dir.join("kernels")).with_settle(Duration::ZERO);
    let file = dir.join("vmlinuz");
    fs::write(&file, bz).unwrap();
    (cache, file)
}

/// A file whose times have settled has its key remembered, and the next load of it takes the
/// key from there rather than hashing the file: shown by pointing the remembered key at
/// another kernel's entry, which that load then returns.
#[test]
fn a_settled_kernel_files_key_is_remembered_and_used() {
    let dir = tempfile::tempdir().unwrap();
    let (bz, elf) = debian_like_bzimage("xz");
    let (other_bz, other_elf) = other_kernel("gzip");
    assert!(elf != other_elf);
    let (cache, file) = settled_setup(dir.path(), &bz);
    let first = load_file(&file, &cache);
    assert!(
        matches!(first.cache, CacheOutcome::Stored),
        "{:?}",
        first.cache
    );
    let keys = file_keys(&cache);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let stamp = FileStamp::of(&fs::metadata(&file).unwrap());
    assert_eq!(cache.known_key(&stamp), Some(CacheKey::of(&bz)));

    let second = load_file(&file, &cache);
    assert!(
        matches!(second.cache, CacheOutcome::Hit),
        "{:?}",
        second.cache
    );
    assert!(second.image.elf_bytes() == &elf[..]);

    // The remembered key is what the load goes by.
    load(&other_bz, &cache);
    let index = cache.dir().join("files").join(&keys[0]);
    redirect_record(&index, &bz, &other_bz);
    let third = load_file(&file, &cache);
    assert!(third.image.elf_bytes() == &other_elf[..]);
}

/// A hit through a remembered key reads only the file's head: its format is the one the full
/// load found (a bzImage's header and payload, a gzipped vmlinux), for every codec. An entry
/// that this short path finds corrupt is replaced by the full load, and said so.
#[test]
fn a_hit_by_a_remembered_key_knows_the_files_format() {
    for codec in ["xz", "gzip", "zstd", "lz4"] {
        for packed_elf in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (bz, elf) = debian_like_bzimage(codec);
            // A packed ELF file: the gzipped vmlinux the VM tests boot.
            let kernel = if packed_elf { gzip(&elf) } else { bz };
            let (cache, file) = settled_setup(dir.path(), &kernel);
            let first = load_file(&file, &cache);
            assert!(matches!(first.cache, CacheOutcome::Stored), "{codec}");
            let second = load_file(&file, &cache);
            assert!(matches!(second.cache, CacheOutcome::Hit), "{codec}");
            assert_eq!(second.image.format(), first.image.format(), "{codec}");
            assert!(second.image.elf_bytes() == &elf[..], "{codec}");

            let entry = cache.entry_path(&CacheKey::of(&kernel));
            let mut bytes = fs::read(&entry).unwrap();
            let n = bytes.len();
            bytes[n - 10] ^= 0x55;
            fs::write(&entry, &bytes).unwrap();
            let third = load_file(&file, &cache);
            assert!(
                matches!(
                    third.cache,
                    CacheOutcome::Replaced(Corruption::HashMismatch)
                ),
                "{codec}: {:?}",
                third.cache
            );
            assert!(third.image.elf_bytes() == &elf[..], "{codec}");
            assert!(matches!(load_file(&file, &cache).cache, CacheOutcome::Hit));
        }
    }
}

/// A file written again, even with its old modification time put back, has a new change
/// time: its remembered key no longer applies, and the new content is what loads.
#[test]
fn a_rewritten_kernel_file_is_hashed_again() {
    let dir = tempfile::tempdir().unwrap();
    let (bz, elf) = debian_like_bzimage("xz");
    let (new_bz, new_elf) = other_kernel("xz");
    assert!(elf != new_elf);
    // The same size, and (below) the same modification time: only the change time tells.
    assert_eq!(bz.len(), new_bz.len());
    let (cache, file) = settled_setup(dir.path(), &bz);
    let mtime = fs::metadata(&file).unwrap().modified().unwrap();
    assert!(load_file(&file, &cache).image.elf_bytes() == &elf[..]);
    assert_eq!(file_keys(&cache).len(), 1);
    // Past the filesystem's clock tick, so that the change time moves.
    std::thread::sleep(Duration::from_millis(50));
    let f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&file)
        .unwrap();
    use std::io::Write as _;
    (&f).write_all(&new_bz).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let again = load_file(&file, &cache);
    assert!(
        again.image.elf_bytes() == &new_elf[..],
        "the old kernel came back"
    );
    assert_eq!(
        cache.known_key(&FileStamp::of(&fs::metadata(&file).unwrap())),
        Some(CacheKey::of(&new_bz))
    );
}

/// With the default settle time, a file written just now is hashed but its key not
/// remembered: a second write in the same tick of the filesystem's clock would not show.
#[test]
fn a_fresh_kernel_files_key_is_not_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let cache = KernelCache::new(dir.path().join("kernels"));
    let (bz, _) = debian_like_bzimage("xz");
    let file = dir.path().join("vmlinuz");
    fs::write(&file, &bz).unwrap();
    let loaded = load_file(&file, &cache);
    assert!(
        matches!(loaded.cache, CacheOutcome::Stored),
        "{:?}",
        loaded.cache
    );
    assert!(file_keys(&cache).is_empty(), "{:?}", file_keys(&cache));
    let stamp = FileStamp::of(&fs::metadata(&file).unwrap());
    assert_eq!(cache.known_key(&stamp), None);
}

/// A file key record that is not one (junk, or far too long) is ignored: the file is hashed.
#[test]
fn a_junk_file_key_record_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (bz, elf) = debian_like_bzimage("xz");
    let (cache, file) = settled_setup(dir.path(), &bz);
    load_file(&file, &cache);
    let keys = file_keys(&cache);
    assert_eq!(keys.len(), 1);
    let index = cache.dir().join("files").join(&keys[0]);
    let stamp = FileStamp::of(&fs::metadata(&file).unwrap());
    for junk in [
        b"x".repeat(4 << 20),
        b"\xff\xfe not a record\n".to_vec(),
        Vec::new(),
    ] {
        fs::write(&index, &junk).unwrap();
        assert_eq!(cache.known_key(&stamp), None);
        assert!(load_file(&file, &cache).image.elf_bytes() == &elf[..]);
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A cache that others can write to, or under a directory others can write to, is neither
/// read nor written: its entry could be anyone's kernel. Made safe again, it is used again.
#[test]
fn a_cache_others_can_write_to_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let (bz, elf) = debian_like_bzimage("xz");
    let (other_bz, _) = other_kernel("gzip");
    let top = dir.path().join("var");
    let cache = KernelCache::new(top.join("cache").join("kernels"));
    assert!(
        cache.check_trusted().is_ok(),
        "a cache not made yet, in a private directory"
    );
    load(&bz, &cache);
    assert!(cache.check_trusted().is_ok());
    let entry = cache.entry_path(&CacheKey::of(&bz));
    let entry_before = fs::read(&entry).unwrap();

    for (wanting, mode) in [
        (cache.dir().to_owned(), 0o777),
        (cache.dir().to_owned(), 0o775),
        (cache.dir().to_owned(), 0o1777),
        (top.join("cache"), 0o757),
        (top.clone(), 0o775),
    ] {
        let was = mode_of(&wanting);
        chmod(&wanting, mode);
        let err = cache
            .check_trusted()
            .expect_err(&format!("{} at {mode:o}", wanting.display()));
        assert_eq!(err.path, fs::canonicalize(&wanting).unwrap(), "{err}");
        assert_eq!(
            err.why,
            toolstack::build::kernel::UntrustedWhy::Writable(mode)
        );
        let text = err.to_string();
        assert!(
            text.contains("writable by its group or by others"),
            "{text}"
        );

        let loaded = load(&bz, &cache);
        match &loaded.cache {
            CacheOutcome::Untrusted(u) => assert_eq!(u, &err),
            other => panic!("{} at {mode:o}: {other:?}", wanting.display()),
        }
        assert_eq!(loaded.image.elf_bytes(), &elf[..], "unpacked, not read");
        assert!(loaded.timings.decompress > Duration::ZERO);
        // Nothing is written there either.
        let loaded = load(&other_bz, &cache);
        assert!(matches!(loaded.cache, CacheOutcome::Untrusted(_)));
        assert!(!cache.entry_path(&CacheKey::of(&other_bz)).exists());
        chmod(&wanting, was);
    }
    assert_eq!(fs::read(&entry).unwrap(), entry_before);
    let hit = load(&bz, &cache);
    assert!(matches!(hit.cache, CacheOutcome::Hit), "{:?}", hit.cache);

    // A cache reached through a symbolic link is judged where it really is.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(top.join("cache"), &link).unwrap();
    let linked = KernelCache::new(link.join("kernels"));
    assert!(matches!(load(&bz, &linked).cache, CacheOutcome::Hit));
    chmod(&top.join("cache"), 0o777);
    assert_eq!(
        linked.check_trusted().map_err(|e| e.path),
        Err(fs::canonicalize(top.join("cache")).unwrap())
    );
    chmod(&top.join("cache"), 0o755);
}

/// A sticky directory anyone may write to (as `/tmp`) above the cache is fine: others can add
/// names to it, not rename or remove ours. The cache directory itself may not be one.
#[test]
fn a_sticky_directory_above_the_cache_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("tmp");
    fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o1777);
    let cache = KernelCache::new(shared.join("kernels"));
    let (bz, _) = debian_like_bzimage("zstd");
    assert!(matches!(load(&bz, &cache).cache, CacheOutcome::Stored));
    assert!(matches!(load(&bz, &cache).cache, CacheOutcome::Hit));
    chmod(cache.dir(), 0o1777);
    assert!(matches!(
        load(&bz, &cache).cache,
        CacheOutcome::Untrusted(_)
    ));
}

/// An entry file others can write to is not believed, even in a good directory: it is
/// removed and stored again, writable by its owner only.
#[test]
fn an_entry_others_can_write_to_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let cache = KernelCache::new(dir.path().join("kernels"));
    let (bz, elf) = debian_like_bzimage("xz");
    load(&bz, &cache);
    let entry = cache.entry_path(&CacheKey::of(&bz));
    for mode in [0o666, 0o646, 0o664] {
        chmod(&entry, mode);
        let again = load(&bz, &cache);
        assert!(
            matches!(
                again.cache,
                CacheOutcome::Replaced(Corruption::NotOwnersOnly)
            ),
            "{mode:o}: {:?}",
            again.cache
        );
        assert_eq!(again.image.elf_bytes(), &elf[..]);
        assert_eq!(
            mode_of(&entry) & 0o022,
            0,
            "stored again, owner-writable only"
        );
        assert!(matches!(load(&bz, &cache).cache, CacheOutcome::Hit));
    }
}

/// A file key record others can write to is not believed: it could point a kernel file at
/// another kernel's entry. The file is hashed, and the record written afresh.
#[test]
fn a_file_key_record_others_can_write_to_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (bz, elf) = debian_like_bzimage("xz");
    let (other_bz, _) = other_kernel("gzip");
    let (cache, file) = settled_setup(dir.path(), &bz);
    load_file(&file, &cache);
    load(&other_bz, &cache);
    let keys = file_keys(&cache);
    let index = cache.dir().join("files").join(&keys[0]);
    let stamp = FileStamp::of(&fs::metadata(&file).unwrap());
    // Someone points the record at the other kernel, and leaves it writable by all.
    redirect_record(&index, &bz, &other_bz);
    chmod(&index, 0o666);
    assert_eq!(cache.known_key(&stamp), None);
    let loaded = load_file(&file, &cache);
    assert!(
        loaded.image.elf_bytes() == &elf[..],
        "the file's own kernel"
    );
    assert_eq!(mode_of(&index) & 0o022, 0, "the record was written afresh");
    assert_eq!(cache.known_key(&stamp), Some(CacheKey::of(&bz)));

    // And the `files` directory itself must not be writable by others.
    chmod(&cache.dir().join("files"), 0o777);
    assert!(matches!(
        load_file(&file, &cache).cache,
        CacheOutcome::Untrusted(_)
    ));
}
