//! The xenbus protocol's vocabulary: the kinds of device, how a device is named and where its
//! directories are in xenstore, and the XenbusState each end of a split driver writes.

use std::fmt;

use serde::Serialize;

use crate::paths::DomId;

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

#[cfg(test)]
mod tests {
    use super::*;

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
