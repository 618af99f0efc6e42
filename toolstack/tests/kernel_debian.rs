//! The kernel loader on Debian 12's real kernel (a 6.1 bzImage: XZ with BCJ-x86, a 66 MB ELF,
//! no HYPERCALL_PAGE note), when the test is told where it is:
//!
//! ```sh
//! RXEN_DEBIAN_KERNEL=.vm-cache/<key>/root/boot/vmlinuz-6.1.0-57-amd64 \
//!     cargo test -p toolstack --test kernel_debian -- --nocapture
//! ```
//!
//! scripts/xen-vm-test downloads the package; `cargo test` runs before it, so without the
//! variable this test says it was skipped and passes. With the variable set, a missing file
//! fails it: CI cannot lose the check silently.
//!
//! It checks what holds for any build of Debian 12's 6.1 kernel (the notes' values that come
//! from the kernel's configuration, not from the build), and cross-checks the unpacked ELF with
//! `xz -dc` when `xz` is installed.

use std::path::PathBuf;
use std::process::Command;

use toolstack::build::kernel::{
    CacheOutcome, Compression, GuestKind, ImageFormat, ImageLimits, KernelCache, KernelImage,
    NoteSource, XenFeatures,
};

const VAR: &str = "RXEN_DEBIAN_KERNEL";

fn kernel_path() -> Option<PathBuf> {
    let Some(path) = std::env::var_os(VAR) else {
        eprintln!("skipped: set {VAR} to Debian 12's vmlinuz to run this test");
        return None;
    };
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "{VAR}={} is set, but there is no such file",
        path.display()
    );
    Some(path)
}

#[test]
fn debian_12_kernel_loads_as_libxenguest_would() {
    let Some(path) = kernel_path() else { return };
    let limits = ImageLimits::default();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = KernelCache::new(cache_dir.path());

    let cold = KernelImage::load_file(&path, &limits, Some(&cache)).unwrap();
    let image = &cold.image;
    let ImageFormat::BzImage {
        header,
        payload_offset,
        compression,
    } = image.format()
    else {
        panic!("not a bzImage: {:?}", image.format());
    };
    assert!(header.protocol >= 0x020f, "{:#x}", header.protocol);
    assert_eq!(compression, Some(Compression::Xz));
    assert!(
        matches!(cold.cache, CacheOutcome::Stored),
        "{:?}",
        cold.cache
    );

    let n = image.notes();
    assert_eq!(n.source, NoteSource::Segments);
    assert_eq!(n.guest_os.as_deref(), Some("linux"));
    assert_eq!(n.xen_version.as_deref(), Some("xen-3.0"));
    assert_eq!(n.loader.as_deref(), Some("generic"));
    assert_eq!(n.virt_base, Some(0xffff_ffff_8000_0000));
    assert_eq!(n.paddr_offset, Some(0));
    assert_eq!(n.init_p2m, Some(0x80_0000_0000));
    assert_eq!(n.mod_start_pfn, Some(1));
    assert_eq!(
        n.hypercall_page, None,
        "Debian's kernel has no HYPERCALL_PAGE note"
    );
    assert!(n.entry.is_some() && n.phys32_entry.is_some());
    assert!(n.required.contains(XenFeatures::WRITABLE_PAGE_TABLES));
    assert!(!n.required.contains(XenFeatures::DOM0));

    let elf = image.elf();
    assert_eq!(elf.pstart(), 0x100_0000, "loaded from 16 MiB");
    assert!(
        (64 << 20..96 << 20).contains(&elf.pend()),
        "ends near 74 MiB: {:#x}",
        elf.pend()
    );
    let pv = image.layout(GuestKind::Pv).unwrap();
    assert_eq!(pv.virt_kstart, 0xffff_ffff_8100_0000);
    assert_eq!(pv.entry, n.entry.unwrap());
    let pvh = image.layout(GuestKind::Pvh).unwrap();
    assert_eq!(pvh.entry, n.phys32_entry.unwrap());
    for (seg, data) in image.segments() {
        assert_eq!(data.len() as u64, seg.filesz());
    }

    // The second load comes from the cache, byte for byte, without unpacking.
    let warm = KernelImage::load_file(&path, &limits, Some(&cache)).unwrap();
    assert!(matches!(warm.cache, CacheOutcome::Hit), "{:?}", warm.cache);
    assert_eq!(warm.image.elf_bytes(), image.elf_bytes());
    assert_eq!(warm.timings.decompress, std::time::Duration::ZERO);

    eprintln!(
        "{}: {} bytes -> {}-byte ELF (payload at {payload_offset:#x})\n  \
         cold: read {:?}, hash {:?}, xz+bcj {:?}, parse {:?}, cache store {:?}\n  \
         warm: read {:?}, hash {:?}, cache lookup {:?}, parse {:?}",
        path.display(),
        std::fs::metadata(&path).unwrap().len(),
        image.elf_bytes().len(),
        cold.timings.read,
        cold.timings.hash,
        cold.timings.decompress,
        cold.timings.parse,
        cold.timings.cache_store,
        warm.timings.read,
        warm.timings.hash,
        warm.timings.cache_lookup,
        warm.timings.parse,
    );

    // An independent decoder agrees, when there is one.
    let bz = std::fs::read(&path).unwrap();
    let start = usize::try_from(payload_offset).unwrap();
    let len = usize::try_from(header.payload_length).unwrap();
    let payload = &bz[start..start + len - 4];
    match Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            let mut stdin = child.stdin.take().unwrap();
            let payload = payload.to_vec();
            let writer = std::thread::spawn(move || {
                use std::io::Write;
                stdin.write_all(&payload).unwrap();
            });
            let out = child.wait_with_output().unwrap();
            writer.join().unwrap();
            assert!(out.status.success());
            assert!(
                out.stdout == image.elf_bytes(),
                "xz -dc unpacks to other bytes"
            );
        }
        Err(e) => eprintln!("no xz to cross-check with: {e}"),
    }
}
