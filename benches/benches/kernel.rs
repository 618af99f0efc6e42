//! The kernel loader (`toolstack::build::kernel`) on this host: unpacking, ELF parsing, and
//! a load through the kernel cache.
//!
//! Groups, on a synthetic kernel (always; an 8 MiB ELF with Xen notes, from the loader tests'
//! fixture):
//! - `kernel/decompress`: one line per compression (`gzip`, `xz-bcj`, `zstd`, `lz4`), the
//!   payload of a bzImage unpacked with its size field; throughput in unpacked bytes;
//! - `kernel/parse`: `ElfKernel::parse` (headers, segments, notes) and `layout` (PV);
//! - `kernel/load`: `KernelImage::load` of an xz bzImage, `cold` (no cache) and `warm` (a cache
//!   hit: hash the file, read and check the entry, parse).
//!
//! On Debian 12's kernel (the 8 MB bzImage, XZ+BCJ, unpacking to a 66 MB ELF), when found at
//! `$RXEN_DEBIAN_KERNEL` or in scripts/xen-vm-test's package cache (`.vm-cache/*/root/boot/`);
//! otherwise the group is skipped with a note:
//! - `kernel-debian/decompress`: `xz-bcj` (ours, lzma-rust2) and `xz-cli` (`xz -dc
//!   --single-stream` on the same payload through a pipe, the C liblzma reference, process
//!   start included; skipped without `xz`);
//! - `kernel-debian/parse`: `ElfKernel::parse` of the 66 MB ELF;
//! - `kernel-debian/load`: `cold` and `warm`, as above.
//!
//! There is no in-process C twin: xl unpacks with libxenguest's own embedded xz decoder, which
//! only the VM timing of a whole `xl create` can compare.

#[path = "../../toolstack/tests/kernel_fixture/mod.rs"]
mod kernel_fixture;

use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, Throughput};
use kernel_fixture::{bzimage, pattern, payload, BzParams, ElfBuilder, CODECS};
use toolstack::build::kernel::{
    decompress, CacheOutcome, Compression, ElfKernel, GuestKind, ImageFormat, ImageLimits,
    KernelCache, KernelImage,
};

const MIB: usize = 1 << 20;

/// The synthetic kernel: Debian's shape with an 8 MiB text segment.
fn synthetic_elf() -> Vec<u8> {
    let mut b = ElfBuilder::debian_like();
    b.segments[0].data = pattern(8 * MIB, 1);
    b.segments[0].memsz = 8 * MIB as u64;
    for s in &mut b.segments[1..4] {
        s.paddr += 8 * MIB as u64;
        if s.vaddr != 0 {
            s.vaddr += 8 * MIB as u64;
        }
    }
    let entry = kernel_fixture::ENTRY + 8 * MIB as u64;
    let mut notes = kernel_fixture::debian_notes();
    notes.extend(kernel_fixture::xen(1, &entry.to_le_bytes()));
    b.with_notes(notes).bytes()
}

/// Where the payload of a bzImage is, with its size field.
fn payload_of(bz: &[u8], limits: &ImageLimits) -> (Compression, Vec<u8>, u64) {
    let loaded = KernelImage::load(bz.to_vec(), limits, None).expect("the kernel loads");
    let ImageFormat::BzImage {
        header,
        payload_offset,
        compression,
    } = loaded.image.format()
    else {
        panic!("not a bzImage");
    };
    let start = usize::try_from(payload_offset).expect("in memory");
    let len = header.payload_length as usize;
    let data = bz[start..start + len].to_vec();
    let declared = loaded.image.elf_bytes().len() as u64;
    (compression.expect("compressed"), data, declared)
}

fn bench_decompress(c: &mut Criterion, group: &str, name: &str, bz: &[u8]) {
    let limits = ImageLimits::default();
    let (compression, data, declared) = payload_of(bz, &limits);
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(declared));
    g.sample_size(10);
    g.bench_function(name, |b| {
        b.iter(|| {
            let out = decompress(compression, black_box(&data), Some(declared), &limits)
                .expect("unpacks");
            black_box(out.len())
        })
    });
    g.finish();
}

fn bench_xz_cli(c: &mut Criterion, group: &str, bz: &[u8]) {
    let (_, data, declared) = payload_of(bz, &ImageLimits::default());
    let stream = data[..data.len() - 4].to_vec();
    if Command::new("xz").arg("--version").output().is_err() {
        eprintln!("kernel bench: no xz on this host; the xz-cli line is skipped");
        return;
    }
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(declared));
    g.sample_size(10);
    g.bench_function("xz-cli", |b| {
        b.iter(|| {
            let mut child = Command::new("xz")
                .args(["-dc", "--single-stream"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("xz");
            let mut stdin = child.stdin.take().expect("piped");
            let input = stream.clone();
            let writer = std::thread::spawn(move || stdin.write_all(&input));
            let out = child.wait_with_output().expect("xz ran");
            writer.join().expect("writer").expect("xz read its input");
            assert_eq!(out.stdout.len() as u64, declared);
        })
    });
    g.finish();
}

fn bench_parse(c: &mut Criterion, group: &str, elf: &[u8]) {
    let limits = ImageLimits::default();
    let mut g = c.benchmark_group(group);
    g.bench_function("parse", |b| {
        b.iter(|| black_box(ElfKernel::parse(black_box(elf), &limits).expect("parses")))
    });
    let parsed = ElfKernel::parse(elf, &limits).expect("parses");
    g.bench_function("layout-pv", |b| {
        b.iter(|| black_box(parsed.layout(GuestKind::Pv).expect("lays out")))
    });
    g.finish();
}

fn bench_load(c: &mut Criterion, group: &str, bz: &[u8]) {
    let limits = ImageLimits::default();
    let dir = std::env::temp_dir().join(format!("rxen-bench-kernel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = KernelCache::new(&dir);
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.bench_function("cold", |b| {
        b.iter(|| black_box(KernelImage::load(bz.to_vec(), &limits, None).expect("loads")))
    });
    KernelImage::load(bz.to_vec(), &limits, Some(&cache)).expect("stored");
    g.bench_function("warm", |b| {
        b.iter(|| {
            let loaded = KernelImage::load(bz.to_vec(), &limits, Some(&cache)).expect("loads");
            assert!(matches!(loaded.cache, CacheOutcome::Hit));
            black_box(loaded)
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Debian's kernel: `$RXEN_DEBIAN_KERNEL`, else the VM test's package cache.
fn debian_kernel() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RXEN_DEBIAN_KERNEL") {
        return Some(PathBuf::from(p));
    }
    let cache = std::env::var_os("XEN_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.vm-cache"));
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache)
        .ok()?
        .flatten()
        .filter_map(|key| std::fs::read_dir(key.path().join("root/boot")).ok())
        .flat_map(|boot| boot.flatten().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    found.sort();
    found.pop()
}

fn main() {
    let mut crit = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();

    let elf = synthetic_elf();
    for &(codec, _) in CODECS {
        let bz = bzimage(&payload(codec, &elf), BzParams::default());
        let name = if codec == "xz" { "xz-bcj" } else { codec };
        bench_decompress(&mut crit, "kernel/decompress", name, &bz);
    }
    bench_parse(&mut crit, "kernel", &elf);
    bench_load(
        &mut crit,
        "kernel/load",
        &bzimage(&payload("xz", &elf), BzParams::default()),
    );

    match debian_kernel() {
        Some(path) => {
            let bz =
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            eprintln!("kernel bench: Debian's kernel is {}", path.display());
            bench_decompress(&mut crit, "kernel-debian/decompress", "xz-bcj", &bz);
            bench_xz_cli(&mut crit, "kernel-debian/decompress", &bz);
            let image = KernelImage::load(bz.clone(), &ImageLimits::default(), None)
                .expect("Debian's kernel loads")
                .image;
            bench_parse(&mut crit, "kernel-debian", image.elf_bytes());
            bench_load(&mut crit, "kernel-debian/load", &bz);
        }
        None => eprintln!(
            "kernel bench: Debian's kernel not found (set RXEN_DEBIAN_KERNEL, or run \
             scripts/xen-vm-test to fill .vm-cache); the kernel-debian groups are skipped"
        ),
    }
    crit.final_summary();
}
