//! A simulated backend driver: plays blkback's and netback's side of the XenbusState handshake
//! over xenstore watches (and the paused guest's frontend, so the whole 1→2→3→4 runs), so that
//! device add and remove, and their error paths, run without Xen. It plays the console
//! backends too: QEMU's for secondary consoles (the same handshake, without a hotplug script),
//! and xenconsoled's for the primary console.
//!
//! The simulated host's xenstored runs one for backend domain 0 ([`crate::sim`]). What it does
//! for the devices of a domain is set in xenstore, at [`behaviour_path`]:
//!
//! - `normal` (or nothing): backend 1→2 (InitWait), as blkback and netback go there at once;
//!   the toolstack then runs the hotplug script ([`super::hotplug`]), which writes
//!   `hotplug-status` = `connected` (and, for a disk, `physical-device`, which blkback waits
//!   for before it goes on); then the frontend 1→3, the backend 4, the frontend 4. On close
//!   (`online` = 0 or `state` = 5) both ends go to 6 (Closed).
//! - `stall`: never moves (a backend driver that hangs).
//! - `fail`: the hotplug script fails ([`super::hotplug`]); a console's backend, which has no
//!   script, gives up instead: it writes why in its `error` node and closes, as a driver's
//!   `xenbus_dev_fatal` does.
//! - `vanish`: the backend goes away: its directory is removed as soon as it appears (a driver
//!   domain that died).
//! - `stall-close`: connects normally but never closes.
//!
//! A simulated hotplug script can take time, as real ones do: see [`HOTPLUG_DELAY_PATH`]. The
//! script runs in the toolstack's process, so one device's slow script never holds up
//! another's here.
//!
//! The primary console (console 0) is xenconsoled's, which knows no XenbusState: once its
//! frontend has both `ring-ref` and `port` (what the domain builder writes), the simulated
//! xenconsoled opens a pty and writes its slave's name into the frontend's `tty`, as
//! xenconsoled does, and serves the guest's console ring on it (`super::console`: a console
//! whose ring cannot be mapped echoes instead), and leaves the backend's `state` alone, as
//! xenconsoled does. (`stall` and `fail` keep it from writing, `vanish` removes its backend.)

use std::collections::BTreeSet;

use crate::lock::DomId;
use crate::xenbus::{DeviceKind, DeviceRef, XenbusState};
use xenstore::ReadOpt;

/// Where the behaviour for the devices of domain `domid` is set.
pub fn behaviour_path(domid: DomId) -> String {
    format!("/tool/rxen-sim-backend/{domid}")
}

/// Where the simulated hotplug scripts' duration is set, in milliseconds (none or 0: instant);
/// [`super::hotplug`] reads it.
pub const HOTPLUG_DELAY_PATH: &str = "/tool/rxen-sim-backend/hotplug-ms";

/// What the simulated backend does for a domain's devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Connects and closes as blkback and netback do.
    Normal,
    /// Never moves.
    Stall,
    /// The hotplug script fails.
    Fail,
    /// The backend directory disappears.
    Vanish,
    /// Connects, but never closes.
    StallClose,
}

impl Behaviour {
    /// The word written at [`behaviour_path`].
    pub fn as_str(self) -> &'static str {
        match self {
            Behaviour::Normal => "normal",
            Behaviour::Stall => "stall",
            Behaviour::Fail => "fail",
            Behaviour::Vanish => "vanish",
            Behaviour::StallClose => "stall-close",
        }
    }

    /// The behaviour a word names; unknown words are `normal`.
    pub fn parse(s: &str) -> Behaviour {
        match s.trim() {
            "stall" => Behaviour::Stall,
            "fail" => Behaviour::Fail,
            "vanish" => Behaviour::Vanish,
            "stall-close" => Behaviour::StallClose,
            _ => Behaviour::Normal,
        }
    }
}

/// The message the simulated hotplug script leaves in `hotplug-error` when told to fail (and a
/// console's backend in its `error` node).
pub const HOTPLUG_ERROR: &str = "simulated hotplug script failure";

/// Parses `/local/domain/B/backend/K/D/I[/...]` into the device, if the path is one.
fn device_of(path: &str, backend: DomId) -> Option<DeviceRef> {
    let rest = path.strip_prefix(&format!("/local/domain/{backend}/backend/"))?;
    let mut parts = rest.split('/');
    let kind = DeviceKind::from_xenstore_name(parts.next()?)?;
    let domid = parts.next()?.parse().ok()?;
    let devid = parts.next()?.parse().ok()?;
    Some(DeviceRef { kind, domid, devid })
}

/// Parses `/local/domain/D/console[/...]` into the primary console of domain D.
fn primary_console_of(path: &str) -> Option<DeviceRef> {
    let rest = path.strip_prefix("/local/domain/")?;
    let mut parts = rest.split('/');
    let domid = parts.next()?.parse().ok()?;
    (parts.next()? == "console").then_some(DeviceRef {
        kind: DeviceKind::Console,
        domid,
        devid: 0,
    })
}

/// Runs the backend driver for backend domain `backend` on `xs` until the connection fails.
///
/// It watches all of `/local/domain`: its backend directories, and the primary consoles'
/// frontends, which xenconsoled reads.
///
/// # Errors
///
/// The xenstore error that stopped it.
pub fn run(xs: &xenstore::Client, backend: DomId) -> xenstore::Result<()> {
    let root = "/local/domain";
    let watch = xs.watch(root)?;
    let of = |path: &str| device_of(path, backend).or_else(|| primary_console_of(path));
    loop {
        let first = watch.next_event()?;
        let mut devices = BTreeSet::new();
        if first.path == root {
            // Registration, or the whole directory changed: look at everything.
            devices.extend(scan(xs, backend)?);
        }
        devices.extend(of(&first.path));
        while let Some(ev) = watch.try_next_event() {
            devices.extend(of(&ev.path));
        }
        for dev in devices {
            drive(xs, backend, dev)?;
        }
        super::console::reap(xs)?;
    }
}

/// Where a backend driver reports a fatal error about a device (`xenbus_dev_fatal`).
pub fn error_path(backend: DomId, dev: DeviceRef) -> String {
    format!(
        "/local/domain/{backend}/error/backend/{}/{}/{}/error",
        dev.kind.xenstore_name(),
        dev.domid,
        dev.devid
    )
}

fn ls(xs: &xenstore::Client, p: &str) -> xenstore::Result<Vec<String>> {
    Ok(xs.directory_opt(p)?.unwrap_or_default())
}

fn scan(xs: &xenstore::Client, backend: DomId) -> xenstore::Result<Vec<DeviceRef>> {
    let mut out = Vec::new();
    for kind in DeviceKind::ALL {
        let base = format!("/local/domain/{backend}/backend/{}", kind.xenstore_name());
        for d in ls(xs, &base)? {
            for i in ls(xs, &format!("{base}/{d}"))? {
                if let (Ok(domid), Ok(devid)) = (d.parse(), i.parse()) {
                    out.push(DeviceRef { kind, domid, devid });
                }
            }
        }
    }
    Ok(out)
}

/// Moves one device as far as its behaviour allows, one step per transaction so that each
/// intermediate state is visible to watchers.
fn drive(xs: &xenstore::Client, backend: DomId, dev: DeviceRef) -> xenstore::Result<()> {
    let be = dev.backend_path(backend);
    let fe = dev.frontend_path();
    let read = |t: &xenstore::Transaction<'_>, p: &str| t.read_string_opt(p);
    let state = |v: Option<String>| v.as_deref().and_then(XenbusState::parse);
    // Bounded: a device makes at most a handful of steps.
    for _ in 0..8 {
        let moved = xs.transaction(|t| {
            // Never write into a device that is gone (a write would re-create its nodes).
            if read(t, &format!("{be}/frontend-id"))?.is_none() {
                return Ok(false);
            }
            let mode = Behaviour::parse(&read(t, &behaviour_path(dev.domid))?.unwrap_or_default());
            let bstate = state(read(t, &format!("{be}/state"))?);
            let online = read(t, &format!("{be}/online"))?;
            let fstate = state(read(t, &format!("{fe}/state"))?);
            let closing = online.as_deref() == Some("0") || bstate == Some(XenbusState::Closing);
            if mode == Behaviour::Stall {
                return Ok(false);
            }
            if mode == Behaviour::Vanish {
                t.rm(&be)?;
                return Ok(true);
            }
            if closing {
                if mode == Behaviour::StallClose || bstate == Some(XenbusState::Closed) {
                    return Ok(false);
                }
                if fstate.is_some() && fstate != Some(XenbusState::Closed) {
                    t.write(&format!("{fe}/state"), "6")?;
                }
                t.write(&format!("{be}/state"), "6")?;
                return Ok(true);
            }
            if dev.is_primary_console() {
                // xenconsoled: a pty once the ring and its event channel are published.
                let ring_ref = read(t, &format!("{fe}/ring-ref"))?;
                let port = read(t, &format!("{fe}/port"))?;
                let ready = ring_ref.is_some() && port.is_some();
                let tty = read(t, &format!("{fe}/tty"))?;
                if mode == Behaviour::Fail
                    || !ready
                    || tty.as_deref().is_some_and(|v| !v.is_empty())
                {
                    return Ok(false);
                }
                let ring = super::console::RingSpec::parse(
                    ring_ref.as_deref().unwrap_or_default(),
                    port.as_deref().unwrap_or_default(),
                );
                match super::console::tty(dev.domid, ring) {
                    Ok(tty) => t.write(&format!("{fe}/tty"), tty)?,
                    Err(e) => {
                        eprintln!(
                            "rxen-sim-xenstored: domain {}: no pty for its console: {e}",
                            dev.domid
                        );
                        return Ok(false);
                    }
                }
                return Ok(true);
            }
            // QEMU's console backend runs no hotplug script: told to fail, it gives up.
            if dev.kind == DeviceKind::Console && mode == Behaviour::Fail {
                if bstate == Some(XenbusState::Closed) {
                    return Ok(false);
                }
                t.write(&error_path(backend, dev), HOTPLUG_ERROR)?;
                t.write(&format!("{be}/state"), "6")?;
                return Ok(true);
            }
            // blkback goes on only once the block script has named the device.
            let device_ready =
                dev.kind != DeviceKind::Vbd || read(t, &format!("{be}/physical-device"))?.is_some();
            match (bstate, fstate) {
                (Some(XenbusState::Initialising), _) => {
                    t.write(&format!("{be}/state"), "2")?;
                    Ok(true)
                }
                (Some(XenbusState::InitWait), Some(XenbusState::Initialising)) if device_ready => {
                    t.write(&format!("{fe}/state"), "3")?;
                    Ok(true)
                }
                (Some(XenbusState::InitWait), Some(XenbusState::Initialised)) => {
                    t.write(&format!("{be}/state"), "4")?;
                    Ok(true)
                }
                (Some(XenbusState::Connected), Some(XenbusState::Initialised)) => {
                    t.write(&format!("{fe}/state"), "4")?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })?;
        if !moved {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_paths_name_their_device() {
        assert_eq!(
            device_of("/local/domain/0/backend/vbd/3/51712/state", 0),
            Some(DeviceRef {
                kind: DeviceKind::Vbd,
                domid: 3,
                devid: 51712
            })
        );
        assert_eq!(device_of("/local/domain/0/backend/vif/3", 0), None);
        assert_eq!(device_of("/local/domain/1/backend/vif/3/0", 0), None);
        assert_eq!(device_of("/local/domain/0/backend/tap/3/0", 0), None);
        let console = |domid| DeviceRef {
            kind: DeviceKind::Console,
            domid,
            devid: 0,
        };
        assert_eq!(
            primary_console_of("/local/domain/7/console"),
            Some(console(7))
        );
        assert_eq!(
            primary_console_of("/local/domain/7/console/ring-ref"),
            Some(console(7))
        );
        assert_eq!(primary_console_of("/local/domain/7/device/console/1"), None);
        assert_eq!(primary_console_of("/local/domain/7"), None);
        assert_eq!(primary_console_of("/local/domain/x/console"), None);
    }

    #[test]
    fn behaviours_round_trip() {
        for b in [
            Behaviour::Normal,
            Behaviour::Stall,
            Behaviour::Fail,
            Behaviour::Vanish,
            Behaviour::StallClose,
        ] {
            assert_eq!(Behaviour::parse(b.as_str()), b);
        }
        assert_eq!(Behaviour::parse("whatever"), Behaviour::Normal);
    }
}
