//! Waiting for a backend: a watch on its directory, re-read after every event, until it
//! reaches the state asked for, fails, vanishes or runs out of time.

use std::time::{Duration, Instant};

use super::hotplug::has_hotplug_script;
use super::*;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::lock::DomId;
use xenstore::ReadOpt;

/// What the backend of a device says, read in one go.
#[derive(Debug)]
pub(super) struct BackendView {
    pub(super) exists: bool,
    pub(super) state: Option<XenbusState>,
    pub(super) hotplug_status: Option<String>,
    pub(super) hotplug_error: Option<String>,
}

/// A node of a device, `None` if it does not exist.
pub(super) fn read_opt(host: &Host, dev: DeviceRef, path: &str) -> Result<Option<String>> {
    host.xs
        .read_string_opt(path)
        .map_err(xs_err(dev, "cannot read its backend's nodes"))
}

pub(super) fn backend_view(host: &Host, dev: DeviceRef, be: &str) -> Result<BackendView> {
    // Read the hotplug result before the state: a backend reports both in one commit, so a
    // state read afterwards is at least as new as the result (reading it first could pair a
    // fresh `error` with the stale state it replaced).
    let hotplug_status = read_opt(host, dev, &format!("{be}/hotplug-status"))?;
    let hotplug_error = read_opt(host, dev, &format!("{be}/hotplug-error"))?;
    let state = read_opt(host, dev, &format!("{be}/state"))?
        .as_deref()
        .and_then(XenbusState::parse);
    let frontend_id = read_opt(host, dev, &format!("{be}/frontend-id"))?;
    Ok(BackendView {
        exists: frontend_id.is_some(),
        state,
        hotplug_status,
        hotplug_error,
    })
}

/// Waits with a watch on the backend directory until `done` says yes, fails, or time is up.
pub(super) fn wait_backend(
    host: &Host,
    dev: DeviceRef,
    backend: DomId,
    timeout: Duration,
    mut done: impl FnMut(&BackendView) -> Result<bool>,
    on_timeout: impl FnOnce(&BackendView) -> Error,
) -> Result<()> {
    let be = dev.backend_path(backend);
    let watch = host
        .xs
        .watch(&be)
        .map_err(xs_err(dev, "cannot watch its backend"))?;
    let deadline = Instant::now() + timeout;
    loop {
        // Read after every event (the first fires at registration), so nothing is missed.
        let view = backend_view(host, dev, &be)?;
        if done(&view)? {
            let _ = watch.unwatch();
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = watch.unwatch();
            return Err(on_timeout(&view));
        }
        watch
            .next_event_timeout(deadline - now)
            .map_err(xs_err(dev, "lost the watch on its backend"))?;
    }
}

/// Waits for the backend to reach InitWait, as libxl does before it runs the hotplug script.
pub(super) fn wait_initwait(host: &Host, dev: DeviceRef, opts: &Options) -> Result<()> {
    wait_up(host, dev, opts, Goal::InitWait, |v| {
        matches!(
            v.state,
            Some(XenbusState::InitWait | XenbusState::Connected)
        )
    })
}

/// Waits for the backend to be there for the guest: InitWait or Connected, and (for the
/// kinds with a hotplug script) `hotplug-status` = `connected`.
pub(super) fn wait_connected(host: &Host, dev: DeviceRef, opts: &Options) -> Result<()> {
    // A kind without a hotplug script (a console, a vkb) has nothing to report in
    // `hotplug-status`; its backend's state alone says it is there.
    let needs_status = has_hotplug_script(dev.kind);
    wait_up(host, dev, opts, Goal::Connect, |v| {
        matches!(
            v.state,
            Some(XenbusState::InitWait | XenbusState::Connected)
        ) && (!needs_status || v.hotplug_status.as_deref() == Some("connected"))
    })
}

/// Waits for a backend that is coming up until `ready` says so; it must not vanish or refuse
/// meanwhile.
fn wait_up(
    host: &Host,
    dev: DeviceRef,
    opts: &Options,
    goal: Goal,
    ready: impl Fn(&BackendView) -> bool,
) -> Result<()> {
    let be = dev.backend_path(opts.backend);
    wait_backend(
        host,
        dev,
        opts.backend,
        opts.timeout,
        |v| {
            if !v.exists {
                return Err(vanished(dev, goal, &be));
            }
            refused(host, dev, opts.backend, v)?;
            Ok(ready(v))
        },
        |v| timed_out(dev, goal, opts.timeout, v),
    )
}

/// Waits for the backend to close (or go), on removal.
pub(super) fn wait_closed(
    host: &Host,
    dev: DeviceRef,
    backend: DomId,
    timeout: Duration,
) -> Result<()> {
    wait_backend(
        host,
        dev,
        backend,
        timeout,
        |v| Ok(!v.exists || v.state == Some(XenbusState::Closed)),
        |v| timed_out(dev, Goal::Close, timeout, v),
    )
}

fn vanished(dev: DeviceRef, goal: Goal, be: &str) -> Error {
    dev_err(
        dev,
        DeviceError::BackendVanished {
            goal,
            backend_path: be.to_owned(),
        },
    )
}

fn timed_out(dev: DeviceRef, goal: Goal, timeout: Duration, v: &BackendView) -> Error {
    dev_err(
        dev,
        DeviceError::BackendTimeout {
            goal,
            timeout,
            state: v.state,
            hotplug_silent: has_hotplug_script(dev.kind) && v.hotplug_status.is_none(),
        },
    )
}

/// [`DeviceError::BackendRefused`] if the backend gave up on the device while we wait for it
/// to come up: its hotplug status says `error`, or it closed. The reason is what the backend
/// (or its script) wrote: `hotplug-error`, else the driver's `error` node
/// (`/local/domain/B/error/backend/K/D/I/error`, where `xenbus_dev_fatal` puts it).
fn refused(host: &Host, dev: DeviceRef, backend: DomId, v: &BackendView) -> Result<()> {
    let closed = matches!(v.state, Some(XenbusState::Closing | XenbusState::Closed));
    if !closed && v.hotplug_status.as_deref() != Some("error") && v.hotplug_error.is_none() {
        return Ok(());
    }
    let reason = match &v.hotplug_error {
        Some(r) => Some(r.clone()),
        None => {
            let node = format!(
                "/local/domain/{backend}/error/backend/{}/{}/{}/error",
                dev.kind.xenstore_name(),
                dev.domid,
                dev.devid
            );
            read_opt(host, dev, &node)?
        }
    };
    Err(dev_err(
        dev,
        DeviceError::BackendRefused {
            state: v.state,
            reason,
        },
    ))
}
