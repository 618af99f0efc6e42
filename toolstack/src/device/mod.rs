//! Virtual devices: the xenstore layout Xen's split drivers use, and their hot add and removal
//! under the lock rules of `toolstack/DESIGN.md`.
//!
//! The module is split by concern: `nodes` (the xenstore layout), `wait` (backend
//! waits), `hotplug` (scripts and the disk-target check), `record` (the stored config's
//! entries), `attach`, `detach`, `list`, `recover` (check and crash recovery), `error`
//! ([`DeviceError`]).
//!
//! # Layout
//!
//! A device of kind K with id I, of domain D, served by backend domain B, is three xenstore
//! directories (as libxl writes them, `libxl__device_generic_add`):
//!
//! - the frontend `/local/domain/D/device/K/I`, owned by D and readable by B;
//! - the backend `/local/domain/B/backend/K/D/I`, owned by B and readable by D;
//! - the toolstack's own record `/libxl/D/device/K/I`, dom0 only, naming both.
//!
//! Both ends start in `state` 1 (Initialising). The backend moves to 2 (InitWait) and its
//! hotplug script writes `hotplug-status` = `connected`; the frontend (the guest) then moves to
//! 3 (Initialised) and both end in 4 (Connected). Removal writes `online` = 0 and `state` = 5
//! (Closing) into the backend, which answers 6 (Closed); then the toolstack removes the nodes.
//!
//! # Consoles
//!
//! Every domain gets its primary console, console 0, at creation, as libxl's
//! `domcreate_launch_dm` adds it for PV and PVH guests (`libxl__device_console_add` with the
//! build state). It is recorded in the stored config (`devid=0,type=xenconsoled,output=pty`)
//! and laid out as libxl does, with two differences from other devices: its frontend is
//! `/local/domain/D/console` (not under `device/`), and that directory belongs to the backend
//! (the guest may read it, and writes only `backend-id`), so the guest cannot rewrite what
//! xenconsoled reads. It holds `limit` (1 MiB), `type` (`xenconsoled`), `output` (`pty`), an
//! empty `tty` that the backend fills in with its pty, and `port`: the console's event channel,
//! which creation allocates (unbound, for the console backend's domain), as libxl's
//! `libxl__build_pre` does. Its `ring-ref` is the console page the domain builder lays out in
//! the guest (a machine frame for PV, a guest frame for PVH); a domain created without a kernel
//! has none, so `ring-ref` is not written, and xenconsoled (which reads both `ring-ref` and
//! `port`, and waits while either is missing) leaves that console alone. The frontend has no `state`: xenconsoled does not use the XenbusState
//! handshake (it never writes the backend's `state` either), so creation does not wait for it,
//! as libxl does not. Destroy removes it with the domain's directories.
//!
//! Secondary consoles (libxl's channels: `channel=[ "name=...,connection=pty" ]` in xl.cfg, or
//! hot-added with [`add_channel`]) are ordinary devices at `device/console/N`, N from 1, served
//! (in libxl) by QEMU's console backend (`type` = `ioemu`), which follows the handshake; they
//! are added and removed like the others, under the same locks, and a hot add waits for the
//! backend to reach InitWait or Connected (there is no hotplug script, so no
//! `hotplug-status`).
//!
//! # Locks
//!
//! Every add and remove runs under the domain's slow device lock ([`crate::lock`]), held across
//! the wait for the backend. The stored config is read and written only under the userdata
//! ("fast") lock, taken for each read-modify-write and released before waiting. Add records the
//! device in the stored config first, then creates it in xenstore; remove takes it out of
//! xenstore first, then out of the stored config. So nothing is ever in xenstore that the stored
//! config does not describe ([`check`] verifies this). Destroy takes the slow lock too
//! ([`crate::domain::destroy`]), so an add racing a destroy either finishes first or finds the
//! domain gone.

mod attach;
mod detach;
mod error;
mod hotplug;
mod list;
mod nodes;
mod record;
mod recover;
mod wait;

use std::time::Duration;

use serde::Serialize;

pub use attach::{add_channel, add_disk, add_nic, add_vkb};
pub(crate) use attach::{attach_at_creation, PrimaryConsole};
pub use detach::remove;
pub use error::{DeviceError, Goal};
pub(crate) use hotplug::hotplug_remove_all;
pub use list::list;
pub(crate) use nodes::rm_backends;
pub(crate) use record::prepare_for_creation;
pub use recover::{check, check_all, recover, recover_all};

use crate::error::Error;
use crate::lock::DomId;
pub use crate::xenbus::{DeviceKind, DeviceRef, XenbusState};

/// How long add waits for the backend to connect, and remove for it to close, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How an add or remove runs.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The domain that runs the backend (dom0 unless a driver domain serves the device).
    pub backend: DomId,
    /// How long to wait for the backend.
    pub timeout: Duration,
    /// Remove: take the device away even if its backend does not close in time (xl's
    /// `--force`).
    pub force: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: 0,
            timeout: DEFAULT_TIMEOUT,
            force: false,
        }
    }
}

/// A device as `block-list`/`network-list` show it: the stored config's view joined with
/// xenstore's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// Its kind.
    pub kind: DeviceKind,
    /// Its id.
    pub devid: u32,
    /// The spec recorded in the stored config.
    pub spec: String,
    /// The backend domain, if xenstore has the device.
    pub backend_id: Option<DomId>,
    /// The frontend's state, if present.
    pub frontend_state: Option<u32>,
    /// The backend's state, if present.
    pub backend_state: Option<u32>,
    /// The backend directory, if xenstore has the device.
    pub backend_path: Option<String>,
    /// A console's pty, as its backend wrote it in the frontend's `tty` (none yet: empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tty: Option<String>,
}

/// A breach of the invariant "nothing in xenstore without an entry in the stored config", or
/// a device whose parts disagree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The xenstore path concerned.
    pub path: String,
    /// What is wrong.
    pub what: String,
}

fn dev_err(device: DeviceRef, source: DeviceError) -> Error {
    Error::Device { device, source }
}

fn xs_err(device: DeviceRef, what: &'static str) -> impl Fn(xenstore::Error) -> Error {
    move |source| Error::DeviceXenstore {
        device,
        what,
        source,
    }
}

/// The device id of a virtual disk name, as Linux's blkfront and libxl's
/// `libxl__device_disk_dev_number` number them: `xvdX[N]` is (202 << 8) | disk << 4 | N for
/// the first 16 disks and partitions 0..15, else the extended form (1 << 28) | disk << 8 | N;
/// `hdX[N]` (disks a..d only) uses majors 3 and 22; `sdX[N]` major 8, first 16 disks; `dDpP`
/// is the extended form; a bare number is taken as it is.
///
/// `None` for anything else (an unknown prefix, a partition above 255, a disk above 2^20).
pub fn vdev_to_devid(vdev: &str) -> Option<u32> {
    if !vdev.is_empty() && vdev.bytes().all(|b| b.is_ascii_digit()) {
        return vdev.parse().ok();
    }
    if let Some(rest) = vdev.strip_prefix('d') {
        if let Some((d, p)) = rest.split_once('p') {
            let disk: u32 = digits(d)?;
            let part: u32 = digits(p)?;
            return extended(disk, part);
        }
        let disk: u32 = digits(rest)?;
        return extended(disk, 0);
    }
    let (prefix, rest) = ["xvd", "hd", "sd"]
        .into_iter()
        .find_map(|p| vdev.strip_prefix(p).map(|r| (p, r)))?;
    let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
    if letters == 0 {
        return None;
    }
    let (name, part) = rest.split_at(letters);
    // Bijective base 26: a..z, aa..zz, ...
    let mut disk: u32 = 0;
    for b in name.bytes() {
        disk = disk.checked_mul(26)?.checked_add(u32::from(b - b'a') + 1)?;
    }
    let disk = disk - 1;
    let part: u32 = if part.is_empty() { 0 } else { digits(part)? };
    match prefix {
        "xvd" => {
            if disk < 16 && part < 16 {
                Some((202 << 8) | (disk << 4) | part)
            } else {
                extended(disk, part)
            }
        }
        "hd" => {
            if disk > 3 || part > 63 {
                return None;
            }
            let major = if disk < 2 { 3 } else { 22 };
            Some((major << 8) | ((disk & 1) << 6) | part)
        }
        _ => {
            if disk >= 16 || part >= 16 {
                return None;
            }
            Some((8 << 8) | (disk << 4) | part)
        }
    }
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

fn extended(disk: u32, part: u32) -> Option<u32> {
    if disk >= (1 << 20) || part > 255 {
        return None;
    }
    Some((1 << 28) | (disk << 8) | part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vdev_names_number_as_blkfront_numbers_them() {
        assert_eq!(vdev_to_devid("xvda"), Some(51712));
        assert_eq!(vdev_to_devid("xvdb"), Some(51728));
        assert_eq!(vdev_to_devid("xvda1"), Some(51713));
        assert_eq!(vdev_to_devid("xvdp15"), Some(51967));
        // The 17th disk and partition 16 need the extended form.
        assert_eq!(vdev_to_devid("xvdq"), Some((1 << 28) | (16 << 8)));
        assert_eq!(vdev_to_devid("xvda16"), Some((1 << 28) | 16));
        assert_eq!(vdev_to_devid("xvdaa"), Some((1 << 28) | (26 << 8)));
        assert_eq!(vdev_to_devid("hda"), Some(768));
        assert_eq!(vdev_to_devid("hdb"), Some(832));
        assert_eq!(vdev_to_devid("hdc"), Some(5632));
        assert_eq!(vdev_to_devid("sda"), Some(2048));
        assert_eq!(vdev_to_devid("sdb2"), Some(2066));
        assert_eq!(vdev_to_devid("d0p1"), Some((1 << 28) | 1));
        assert_eq!(vdev_to_devid("51712"), Some(51712));
        for bad in [
            "", "xvd", "xvdA", "hde", "vda", "xvda01", "xvda256x", "d0p256", "sdq",
        ] {
            assert_eq!(vdev_to_devid(bad), None, "{bad:?}");
        }
    }
}
