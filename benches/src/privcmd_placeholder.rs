//! A private mount namespace in which `/dev/xen/privcmd` is an empty placeholder file.
//!
//! Debian's libxencall 4.17 only needs `open("/dev/xen/privcmd", O_RDWR)` to succeed for
//! `xencall_open` to return a handle; its buffer functions never touch that fd. On a machine
//! without Xen we give it a placeholder, visible to this process only:
//!
//! 1. `unshare(CLONE_NEWNS)`: this process gets its own copy of the mount table;
//! 2. `mount("/", MS_REC | MS_PRIVATE)`, or `/dev` alone where `/` is not a mount point (a
//!    chroot): nothing we mount propagates back to the host;
//! 3. a fresh tmpfs is mounted over `/dev`, and every entry of the old `/dev` except `xen` is
//!    put back in it (directories and nodes as recursive bind mounts of the originals, reached
//!    through an fd held on the old `/dev`; symlinks recreated), so `/dev/null`, `/dev/pts`,
//!    `/dev/shm`… are the very same files as before;
//! 4. `/dev/xen/` is created in that tmpfs holding one empty regular file, `privcmd` (0600), and
//!    nothing else. In particular there is no `/dev/xen/hypercall`, even if the host has one.
//!
//! Nothing outside the process changes: the host's `/dev` (a devtmpfs here) gets no `xen`
//! directory, and the namespace dies with the process.
//!
//! Why not a tmpfs on `/dev/xen` alone: the directory does not exist on a host without Xen, and
//! creating it would be visible to every other process on the machine.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::OnceLock;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Proof that this process runs in the placeholder namespace. Only [`enter`] makes one; C
/// handles take a reference to it, so no C call can come first.
#[derive(Debug)]
pub struct PrivcmdPlaceholder {
    _private: (),
}

/// Enter the placeholder namespace (once per process; later calls return the same result).
///
/// Call it before spawning threads: a mount namespace belongs to a thread, and only threads
/// created after this call inherit it. Needs `CAP_SYS_ADMIN` (run the benches as root).
///
/// # Errors
///
/// The failing step, as a sentence naming the path and the OS error.
pub fn enter() -> Result<&'static PrivcmdPlaceholder, String> {
    static ONCE: OnceLock<Result<PrivcmdPlaceholder, String>> = OnceLock::new();
    ONCE.get_or_init(|| {
        set_up()?;
        Ok(PrivcmdPlaceholder { _private: () })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Cuts `/dev` off from mount propagation, so that what we mount there stays in this namespace.
///
/// `/` made private, recursively, covers it. In a chroot or container whose `/` is not a mount
/// point, that fails with EINVAL; then `/dev` itself, if it is a mount point (a chroot's bind of
/// the host's `/dev`, a container's tmpfs), is enough: every mount we make is on it or below it.
/// If neither is a mount point, the mount holding `/dev` cannot be named from inside, and a
/// mount on `/dev` could reach the host, so we stop and say what to do.
fn make_dev_private() -> Result<(), String> {
    let private = |path: &str| {
        mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
    };
    match private("/") {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => match private("/dev") {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EINVAL) => {
                Err("neither / nor /dev is a mount point (a chroot?), \
                 so a private /dev cannot be made without touching the host: bind-mount /dev into \
                 the chroot (mount --rbind /dev DIR/dev) or the chroot onto itself (mount --bind \
                 DIR DIR) and run again"
                    .into())
            }
            Err(e) => Err(format!("making /dev a private mount failed: {e}")),
        },
        Err(e) => Err(format!("making / a private mount failed: {e}")),
    }
}

fn set_up() -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare(CLONE_NEWNS) failed (are we root?): {e}"))?;
    make_dev_private()?;

    // Hold the old /dev open: once the tmpfs covers it, /proc/self/fd/N still reaches it.
    let old_dev = File::open("/dev").map_err(|e| format!("opening /dev failed: {e}"))?;
    let mut entries = Vec::new();
    for entry in fs::read_dir("/dev").map_err(|e| format!("reading /dev failed: {e}"))? {
        let entry = entry.map_err(|e| format!("reading /dev failed: {e}"))?;
        let kind = entry
            .file_type()
            .map_err(|e| format!("stat of /dev/{:?} failed: {e}", entry.file_name()))?;
        if entry.file_name() != "xen" {
            entries.push((entry.file_name(), kind));
        }
    }

    mount(
        Some("tmpfs"),
        "/dev",
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )
    .map_err(|e| format!("mounting a tmpfs on /dev failed: {e}"))?;

    let old = Path::new("/proc/self/fd").join(old_dev.as_raw_fd().to_string());
    for (name, kind) in &entries {
        let src = old.join(name);
        let dst = Path::new("/dev").join(name);
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            format!(
                "recreating {} in the namespace: {what} failed: {e}",
                dst.display()
            )
        };
        if kind.is_symlink() {
            let target = fs::read_link(&src).map_err(|e| fail("readlink", &e))?;
            std::os::unix::fs::symlink(target, &dst).map_err(|e| fail("symlink", &e))?;
            continue;
        }
        if kind.is_dir() {
            fs::create_dir(&dst).map_err(|e| fail("mkdir", &e))?;
        } else {
            File::create(&dst).map_err(|e| fail("creating the mount point", &e))?;
        }
        mount(
            Some(&src),
            &dst,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| fail("bind mount", &e))?;
    }
    drop(old_dev);

    fs::DirBuilder::new()
        .mode(0o755)
        .create("/dev/xen")
        .map_err(|e| format!("creating /dev/xen in the namespace failed: {e}"))?;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open("/dev/xen/privcmd")
        .map_err(|e| format!("creating the /dev/xen/privcmd placeholder failed: {e}"))?;
    if Path::new("/dev/xen/hypercall").exists() {
        return Err("/dev/xen/hypercall exists in the placeholder namespace".into());
    }
    Ok(())
}
