//! The kernel cache's directories, entries and file-key records are writable by their owner
//! only, even under umask 0: anyone who could write there could swap the kernel root boots.
//! (Its own test binary: the umask is the whole process's.)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use nix::sys::stat::{umask, Mode};
use toolstack::build::kernel::{CacheKey, FileStamp, KernelCache};

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn nothing_in_the_cache_is_writable_by_others_under_umask_0() {
    umask(Mode::empty());
    let base = tempfile::tempdir().unwrap();
    let top = base.path().join("var");
    let dir = top.join("cache").join("kernels");
    let cache = KernelCache::new(&dir).with_settle(Duration::ZERO);

    let content = vec![0x5a_u8; 3 * 4096];
    let key = CacheKey::of(b"a kernel file");
    cache.store(&key, &content).expect("store");
    let kernel_file = base.path().join("vmlinuz");
    fs::write(&kernel_file, b"a kernel file").unwrap();
    let stamp = FileStamp::of(&fs::metadata(&kernel_file).unwrap());
    cache.remember_key(&stamp, &key, SystemTime::now() + Duration::from_secs(60));
    assert_eq!(
        cache.known_key(&stamp),
        Some(key),
        "the record was written and is read back"
    );

    let mut checked = vec![
        top.clone(),
        top.join("cache"),
        dir.clone(),
        cache.entry_path(&key),
    ];
    for sub in fs::read_dir(&dir).unwrap().flatten() {
        if sub.path().is_dir() {
            checked.push(sub.path());
            checked.extend(
                fs::read_dir(sub.path())
                    .unwrap()
                    .flatten()
                    .map(|e| e.path()),
            );
        }
    }
    assert!(
        checked.len() >= 6,
        "the key record's directory and record: {checked:?}"
    );
    for path in &checked {
        let mode = mode_of(path);
        assert_eq!(
            mode & 0o022,
            0,
            "{} has mode {mode:o}: writable by others",
            path.display()
        );
    }
}
