//! Virtual devices: the xenstore layout Xen's split drivers use, and their hot add and removal
//! under the lock rules of seed 002.
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
//! which creation allocates (unbound, for the backend domain), as libxl's `libxl__build_pre`
//! does. Its `ring-ref` is the console page the domain builder lays out in the guest; there is
//! no domain builder yet, so `ring-ref` is not written, and xenconsoled (which reads both
//! `ring-ref` and `port`, and waits while either is missing) leaves the console alone until a
//! builder writes it. The frontend has no `state`: xenconsoled does not use the XenbusState
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

mod ops;
pub mod simback;

use std::fmt;

use serde::Serialize;

pub use ops::{
    add_channel, add_disk, add_nic, add_vkb, check, check_all, list, recover, recover_all, remove,
    DeviceInfo, Options, Violation, DEFAULT_TIMEOUT,
};
pub(crate) use ops::{attach_at_creation, hotplug_remove_all, prepare_for_creation, rm_backends};

use crate::lock::DomId;

/// The kinds of device the toolstack manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// A virtual block device (disk or CD-ROM): blkfront/blkback.
    Vbd,
    /// A virtual network interface: netfront/netback.
    Vif,
    /// A PV console: the primary one (console 0, in the domain's `console/`) and the
    /// secondary ones (libxl's channels, in `device/console/N`).
    Console,
    /// A virtual keyboard (and pointer): `vkbd` in xenstore.
    Vkb,
}

impl DeviceKind {
    /// Every kind.
    pub const ALL: [DeviceKind; 4] = [
        DeviceKind::Vbd,
        DeviceKind::Vif,
        DeviceKind::Console,
        DeviceKind::Vkb,
    ];

    /// The kind's directory name in xenstore (frontend and backend alike).
    pub fn xenstore_name(self) -> &'static str {
        match self {
            DeviceKind::Vbd => "vbd",
            DeviceKind::Vif => "vif",
            DeviceKind::Console => "console",
            DeviceKind::Vkb => "vkbd",
        }
    }

    /// The kind named by its xenstore directory name.
    pub fn from_xenstore_name(name: &str) -> Option<DeviceKind> {
        DeviceKind::ALL
            .into_iter()
            .find(|k| k.xenstore_name() == name)
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.xenstore_name())
    }
}

/// A device, as messages name it: `vbd 51712 on domain 3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceRef {
    /// Its kind.
    pub kind: DeviceKind,
    /// The domain it belongs to (the frontend's).
    pub domid: DomId,
    /// Its id within the domain and kind.
    pub devid: u32,
}

impl fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} on domain {}", self.kind, self.devid, self.domid)
    }
}

impl DeviceRef {
    /// The frontend directory, `/local/domain/D/device/K/I`; for the primary console
    /// (console 0), `/local/domain/D/console`, where Xen's consoles have always had it.
    pub fn frontend_path(&self) -> String {
        if self.is_primary_console() {
            return format!("/local/domain/{}/console", self.domid);
        }
        format!(
            "/local/domain/{}/device/{}/{}",
            self.domid,
            self.kind.xenstore_name(),
            self.devid
        )
    }

    /// Whether this is the domain's primary console (console 0), which creation adds and
    /// destroy removes, and which does not follow the XenbusState handshake.
    pub fn is_primary_console(&self) -> bool {
        self.kind == DeviceKind::Console && self.devid == 0
    }

    /// The backend directory in backend domain `backend`, `/local/domain/B/backend/K/D/I`.
    pub fn backend_path(&self, backend: DomId) -> String {
        format!(
            "/local/domain/{backend}/backend/{}/{}/{}",
            self.kind.xenstore_name(),
            self.domid,
            self.devid
        )
    }

    /// The toolstack's record, `/libxl/D/device/K/I`.
    pub fn libxl_path(&self) -> String {
        format!(
            "/libxl/{}/device/{}/{}",
            self.domid,
            self.kind.xenstore_name(),
            self.devid
        )
    }
}

/// A split driver's state, as each end writes it in its `state` node (`XenbusState` in Xen's
/// `io/xenbus.h`). Unknown numbers stay representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum XenbusState {
    /// 0.
    Unknown,
    /// 1: the end is being set up.
    Initialising,
    /// 2: the backend waits for the frontend (and its hotplug script ran).
    InitWait,
    /// 3: the frontend has published its rings.
    Initialised,
    /// 4: both ends talk.
    Connected,
    /// 5: asked to close.
    Closing,
    /// 6: closed.
    Closed,
    /// 7.
    Reconfiguring,
    /// 8.
    Reconfigured,
    /// Anything else Xen's header does not name.
    Other(u32),
}

impl XenbusState {
    /// The state a `state` node's value stands for; `None` if it is not a number.
    pub fn parse(value: &str) -> Option<XenbusState> {
        value.trim().parse::<u32>().ok().map(XenbusState::from_raw)
    }

    /// The state numbered `n`.
    pub fn from_raw(n: u32) -> XenbusState {
        match n {
            0 => XenbusState::Unknown,
            1 => XenbusState::Initialising,
            2 => XenbusState::InitWait,
            3 => XenbusState::Initialised,
            4 => XenbusState::Connected,
            5 => XenbusState::Closing,
            6 => XenbusState::Closed,
            7 => XenbusState::Reconfiguring,
            8 => XenbusState::Reconfigured,
            n => XenbusState::Other(n),
        }
    }

    /// Its number, as written in xenstore.
    pub fn raw(self) -> u32 {
        match self {
            XenbusState::Unknown => 0,
            XenbusState::Initialising => 1,
            XenbusState::InitWait => 2,
            XenbusState::Initialised => 3,
            XenbusState::Connected => 4,
            XenbusState::Closing => 5,
            XenbusState::Closed => 6,
            XenbusState::Reconfiguring => 7,
            XenbusState::Reconfigured => 8,
            XenbusState::Other(n) => n,
        }
    }

    /// Xen's name for it.
    pub fn name(self) -> &'static str {
        match self {
            XenbusState::Unknown => "Unknown",
            XenbusState::Initialising => "Initialising",
            XenbusState::InitWait => "InitWait",
            XenbusState::Initialised => "Initialised",
            XenbusState::Connected => "Connected",
            XenbusState::Closing => "Closing",
            XenbusState::Closed => "Closed",
            XenbusState::Reconfiguring => "Reconfiguring",
            XenbusState::Reconfigured => "Reconfigured",
            XenbusState::Other(_) => "not a XenbusState",
        }
    }
}

impl fmt::Display for XenbusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.raw(), self.name())
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

    #[test]
    fn states_round_trip_and_print_with_their_names() {
        for n in 0..12 {
            assert_eq!(XenbusState::from_raw(n).raw(), n);
        }
        assert_eq!(
            XenbusState::parse("2").map(|s| s.to_string()).as_deref(),
            Some("2 (InitWait)")
        );
        assert_eq!(XenbusState::parse("x"), None);
    }

    #[test]
    fn paths_follow_libxl() {
        let d = DeviceRef {
            kind: DeviceKind::Vkb,
            domid: 3,
            devid: 0,
        };
        assert_eq!(d.frontend_path(), "/local/domain/3/device/vkbd/0");
        assert_eq!(d.backend_path(0), "/local/domain/0/backend/vkbd/3/0");
        assert_eq!(d.libxl_path(), "/libxl/3/device/vkbd/0");
        assert_eq!(d.to_string(), "vkbd 0 on domain 3");
        // The primary console lives outside device/; other consoles do not.
        let c = |devid| DeviceRef {
            kind: DeviceKind::Console,
            domid: 3,
            devid,
        };
        assert!(c(0).is_primary_console() && !c(1).is_primary_console());
        assert_eq!(c(0).frontend_path(), "/local/domain/3/console");
        assert_eq!(c(0).backend_path(0), "/local/domain/0/backend/console/3/0");
        assert_eq!(c(1).frontend_path(), "/local/domain/3/device/console/1");
        assert!(!d.is_primary_console());
        for k in DeviceKind::ALL {
            assert_eq!(DeviceKind::from_xenstore_name(k.xenstore_name()), Some(k));
        }
    }
}
