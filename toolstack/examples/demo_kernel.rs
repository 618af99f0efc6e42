//! Writes a small kernel image that `rxl` can boot on the simulated host: a bzImage (XZ with the
//! x86 BCJ filter, as Debian's) around an ELF with Debian 12's Xen notes, for PV and PVH.
//!
//! ```sh
//! cargo run -p toolstack --example demo_kernel -- /tmp/demo-vmlinuz
//! ```
//!
//! The simulated hypervisor checks the build structurally when the domain is first unpaused
//! (page tables, start info, entry point, p2m, vCPU state, seeded grants) and then runs a
//! stand-in guest that writes a boot line to its console and a node through its xenstore
//! ring. Without an argument the image goes to a temporary directory.

#[path = "../tests/kernel_fixture/mod.rs"]
mod kernel_fixture;

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let path = match std::env::args_os().nth(1) {
        Some(p) => PathBuf::from(p),
        None => std::env::temp_dir().join(format!("rxen-demo-vmlinuz-{}", std::process::id())),
    };
    let (bzimage, _elf) = kernel_fixture::debian_like_bzimage("xz");
    std::fs::write(&path, &bzimage)?;
    println!("{} ({} bytes)", path.display(), bzimage.len());
    if std::env::args_os().nth(1).is_none() {
        std::fs::remove_file(&path)?;
    }
    Ok(())
}
