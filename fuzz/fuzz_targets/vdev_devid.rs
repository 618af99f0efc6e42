//! Arbitrary text as a virtual disk name, through `vdev_to_devid`: never panics; a name that
//! numbers is in one of the forms blkfront knows (a Xen, IDE or SCSI major below 2^16, or the
//! extended form with bit 28 set and disk < 2^20), its decimal text numbers the same, and the
//! canonical name of that number (`xvdX[N]` or `dDpP`) maps back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolstack::device::vdev_to_devid;

const EXT: u32 = 1 << 28;

/// Bijective base 26, as blkfront names disks: 0 → a, 25 → z, 26 → aa.
fn letters(mut disk: u32) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (disk % 26) as u8);
        if disk < 26 {
            break;
        }
        disk = disk / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 64 {
        return;
    }
    let Ok(vdev) = std::str::from_utf8(data) else {
        return;
    };
    let Some(id) = vdev_to_devid(vdev) else {
        return;
    };
    assert_eq!(vdev_to_devid(&id.to_string()), Some(id), "{vdev:?} → {id}");
    let numeric = vdev.bytes().all(|b| b.is_ascii_digit());
    if numeric {
        return;
    }
    if id & EXT != 0 {
        assert!(id < (EXT << 1), "{vdev:?} → {id:#x}: disk above 2^20");
        let (disk, part) = ((id >> 8) & 0xf_ffff, id & 0xff);
        assert_eq!(vdev_to_devid(&format!("d{disk}p{part}")), Some(id));
        if disk >= 16 || part >= 16 {
            // Beyond the classic form's 16 disks of 15 partitions, xvd names are extended too.
            let name = if part == 0 {
                format!("xvd{}", letters(disk))
            } else {
                format!("xvd{}{part}", letters(disk))
            };
            assert_eq!(
                vdev_to_devid(&name),
                Some(id),
                "{vdev:?} → {id:#x} → {name:?}"
            );
        }
    } else {
        assert!(id < (1 << 16), "{vdev:?} → {id:#x}");
        let major = id >> 8;
        assert!([202, 3, 22, 8].contains(&major), "{vdev:?} → major {major}");
        if major == 202 {
            let (disk, part) = ((id >> 4) & 0xf, id & 0xf);
            let name = if part == 0 {
                format!("xvd{}", letters(disk))
            } else {
                format!("xvd{}{part}", letters(disk))
            };
            assert_eq!(vdev_to_devid(&name), Some(id), "{vdev:?} → {id} → {name:?}");
        }
    }
});
