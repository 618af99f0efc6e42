//! What can go wrong with a device, one variant per failure a caller may handle.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::xenbus::XenbusState;

/// What a wait for a backend was waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// InitWait, before the hotplug script runs.
    InitWait,
    /// InitWait or Connected with `hotplug-status` = `connected`: the device is there.
    Connect,
    /// Closed, on removal.
    Close,
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Goal::InitWait => "reach InitWait",
            Goal::Connect => "connect",
            Goal::Close => "close",
        })
    }
}

/// A device operation that failed or was refused ([`crate::Error::Device`] names the device).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The domain already has a device with this id (a disk with this vdev, a vif with this
    /// devid, ...).
    #[error("the domain already has this device{}", existing.as_ref().map(|s| format!(" ({s:?})")).unwrap_or_default())]
    InUse {
        /// The spec of the device it has, when the stored config records one.
        existing: Option<String>,
    },
    /// The domain has no such device (in xenstore or in the stored config).
    #[error("the domain has no such device")]
    NoSuchDevice,
    /// The primary console goes only with its domain.
    #[error("it is the domain's primary console, which goes only when the domain is destroyed")]
    PrimaryConsole,
    /// Its xenstore directories exist already (made behind the toolstack's back).
    #[error("its xenstore nodes exist already")]
    NodesExist,
    /// The domain's xenstore home is gone: it was destroyed meanwhile.
    #[error("the domain's xenstore directory is gone (destroyed?)")]
    DomainGone,
    /// A raw disk's target exists but is neither a file nor a block device.
    #[error("its target {} is neither a file nor a block device", path.display())]
    TargetNotUsable {
        /// The target.
        path: PathBuf,
    },
    /// A raw disk's target cannot be used (most often: it does not exist).
    #[error("cannot use its target {}", path.display())]
    TargetMissing {
        /// The target.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The backend did not get where it was asked to in time.
    #[error(
        "backend did not {goal} within {}; state is {}{}",
        secs(*timeout),
        state_text(*state),
        match goal {
            Goal::InitWait => "; is its driver (xen-blkback, xen-netback) loaded?",
            _ if *hotplug_silent => ", and its hotplug script has not reported",
            _ => "",
        }
    )]
    BackendTimeout {
        /// What it was waited for.
        goal: Goal,
        /// How long.
        timeout: Duration,
        /// The state it was in when time ran out.
        state: Option<XenbusState>,
        /// Whether its hotplug script had not reported (`hotplug-status` missing).
        hotplug_silent: bool,
    },
    /// The backend's directory went away while we waited (a driver domain that died).
    #[error("the backend vanished before it could {goal} ({backend_path} is gone); is its backend driver running?")]
    BackendVanished {
        /// What it was waited for.
        goal: Goal,
        /// Its directory.
        backend_path: String,
    },
    /// The backend gave up on the device: it closed, or its hotplug status says `error`.
    #[error(
        "the backend refused it: {}; state is {}",
        reason.as_deref().unwrap_or("no reason given"),
        state_text(*state)
    )]
    BackendRefused {
        /// Its state.
        state: Option<XenbusState>,
        /// What the backend wrote in its `hotplug-error` (or `error`) node.
        reason: Option<String>,
    },
    /// The hotplug script ran and failed.
    #[error("its hotplug script {} {action} failed ({status}): {}", script.display(), if output.is_empty() { "no output" } else { output.as_str() })]
    HotplugFailed {
        /// The script.
        script: PathBuf,
        /// `add` or `remove`.
        action: &'static str,
        /// How it exited.
        status: ExitStatus,
        /// What it said: the backend's `hotplug-error` if it wrote one, else its stderr.
        output: String,
    },
    /// The hotplug script could not be run.
    #[error("cannot run its hotplug script {} {action}", script.display())]
    HotplugSpawn {
        /// The script.
        script: PathBuf,
        /// `add` or `remove`.
        action: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A duration as messages give it: `10 s`, `0.5 s`.
pub(crate) fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// A state as messages give it: `2 (InitWait)`, or `missing`.
pub(crate) fn state_text(s: Option<XenbusState>) -> String {
    s.map_or_else(|| "missing".to_owned(), |s| s.to_string())
}
