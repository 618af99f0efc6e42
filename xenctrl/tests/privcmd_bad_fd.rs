//! The public ways to open privcmd, given descriptors that are not privcmd: each answers a typed
//! error naming the device and what is wrong, never a panic. Runs without Xen.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use xenctrl::{Errno, Error, FdProblem, FileKind, XenCtrl};

const PRIVCMD: &str = "/dev/xen/privcmd";
const DEV_NULL: FileKind = FileKind::CharDevice { major: 1, minor: 3 };

fn dev_null() -> OwnedFd {
    OwnedFd::from(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .unwrap(),
    )
}

/// An empty regular file, already unlinked.
fn regular_file() -> OwnedFd {
    // One name per call: tests run in parallel threads of one process.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("xenctrl-bad-fd-{}-{n}", std::process::id()));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    OwnedFd::from(f)
}

/// The `(device, problem, errno)` of a [`Error::BadDeviceFd`], or a panic naming what came.
fn bad_fd(res: xenctrl::Result<XenCtrl>) -> (&'static str, FdProblem, Option<Errno>) {
    match res {
        Err(
            e @ Error::BadDeviceFd {
                device, problem, ..
            },
        ) => (device, problem, e.errno()),
        other => panic!("expected Error::BadDeviceFd, got {other:?}"),
    }
}

#[test]
fn dev_null_as_privcmd_is_enotty() {
    let res = XenCtrl::from_fds(dev_null(), None);
    assert_eq!(
        bad_fd(res),
        (PRIVCMD, FdProblem::WrongFile(DEV_NULL), Some(Errno::ENOTTY))
    );
}

#[test]
fn regular_file_as_privcmd_is_enotty() {
    let res = XenCtrl::from_fds(regular_file(), None);
    assert_eq!(
        bad_fd(res),
        (
            PRIVCMD,
            FdProblem::WrongFile(FileKind::RegularFile),
            Some(Errno::ENOTTY)
        )
    );
}

#[test]
fn o_path_fd_as_privcmd_is_not_open() {
    // The nearest a safe caller can come to a closed descriptor: an `OwnedFd` is open by
    // construction, but an O_PATH one allows no I/O.
    let fd = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open("/dev/null")
        .unwrap();
    let res = XenCtrl::from_fds(OwnedFd::from(fd), None);
    assert_eq!(
        bad_fd(res),
        (PRIVCMD, FdProblem::NotOpen, Some(Errno::EBADF))
    );
}

#[test]
fn privcmd_is_checked_before_the_hypercall_device() {
    let res = XenCtrl::from_fds(dev_null(), Some(regular_file()));
    assert_eq!(
        bad_fd(res),
        (PRIVCMD, FdProblem::WrongFile(DEV_NULL), Some(Errno::ENOTTY))
    );
}

#[test]
fn the_message_names_the_device_and_the_problem() {
    let err = XenCtrl::from_fds(dev_null(), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the file descriptor given as /dev/xen/privcmd is character device 1:3, not that device"
    );
    let source = std::error::Error::source(&err).expect("the errno is the source");
    assert_eq!(
        source.to_string(),
        std::io::Error::from(Errno::ENOTTY).to_string()
    );
}

#[test]
fn from_fds_closes_what_it_was_given_when_it_fails() {
    let (r, w) = nix::unistd::pipe().unwrap();
    let res = XenCtrl::from_fds(w, None);
    assert_eq!(
        bad_fd(res),
        (
            PRIVCMD,
            FdProblem::WrongFile(FileKind::Pipe),
            Some(Errno::ENOTTY)
        )
    );
    // The write end is gone (no other copy exists): the read end sees end of file.
    let mut buf = [0u8; 1];
    assert_eq!(File::from(r).read(&mut buf).unwrap(), 0);
}

#[test]
fn every_way_to_open_by_path_names_the_missing_device() {
    if XenCtrl::real_xen_available() {
        return; // On Xen these open; tests/vm_*.rs cover that.
    }
    let opened = [
        XenCtrl::open(),
        XenCtrl::open_with_anonymous_buffers(),
        XenCtrl::options().open(),
        XenCtrl::options().cloexec(false).open(),
        XenCtrl::options()
            .cloexec(false)
            .anonymous_buffers(true)
            .open(),
    ];
    for res in opened {
        match res {
            Err(e @ Error::Open { path: PRIVCMD, .. }) => {
                assert_eq!(e.errno(), Some(Errno::ENOENT));
            }
            other => panic!("expected Error::Open for {PRIVCMD}, got {other:?}"),
        }
    }
}
