//! Arbitrary text as an xl disk spec (xl-disk-configuration(5)): parsing never panics; an
//! accepted spec keeps its text, parses back to the same value from that text and from its
//! serialised form, and its fields hold what the grammar allows (a non-empty vdev without a
//! comma, read-only for a CD-ROM that names no access mode).
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolstack::config::{DiskAccess, DiskSpec};
use toolstack::device::vdev_to_devid;

fuzz_target!(|data: &[u8]| {
    if data.len() > 4096 {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(disk) = DiskSpec::parse(text) else {
        return;
    };
    assert_eq!(disk.spec, text, "the spec is kept as written");
    assert_eq!(
        DiskSpec::parse(&disk.spec).as_ref(),
        Ok(&disk),
        "parse is a function of the text"
    );
    let serialised: String = disk.clone().into();
    assert_eq!(DiskSpec::try_from(serialised).as_ref(), Ok(&disk));
    assert!(!disk.vdev.is_empty(), "an accepted spec names a vdev");
    assert!(
        !disk.vdev.contains(','),
        "vdev {:?} spans a comma",
        disk.vdev
    );
    for field in [&disk.format, &disk.target] {
        if let Some(v) = field {
            assert!(
                !v.is_empty(),
                "an empty value means the default, kept as None"
            );
        }
    }
    if let Some(f) = &disk.format {
        assert!(!f.contains(','), "format {f:?} spans a comma");
    }
    let names_access = text
        .split(',')
        .map(|p| p.trim_start_matches([' ', '\t', '\n']))
        .any(|p| matches!(p, "rw" | "w" | "ro" | "r") || p.starts_with("access="));
    if disk.cdrom && !names_access {
        // No access mode anywhere: a CD-ROM defaults to read-only.
        assert_eq!(disk.access, DiskAccess::ReadOnly);
    }
    // The vdev is outside input to the device code too.
    let _ = vdev_to_devid(&disk.vdev);
});
