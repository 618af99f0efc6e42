//! Waiting for a backend: a watch on its directory, re-read after every event, until it
//! reaches the state asked for, fails, vanishes or runs out of time.

use crate::paths::ReadOpt;
use std::time::{Duration, Instant};

use super::*;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::lock::DomId;

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

pub(super) fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

pub(super) fn state_text(s: Option<XenbusState>) -> String {
    s.map_or_else(|| "missing".to_owned(), |s| s.to_string())
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

pub(super) fn wait_connected(host: &Host, dev: DeviceRef, opts: &Options) -> Result<()> {
    let timeout = opts.timeout;
    // A console's backend has no hotplug script to report; its state alone says it is there.
    let needs_status = dev.kind != DeviceKind::Console;
    wait_backend(
        host,
        dev,
        opts.backend,
        timeout,
        |v| {
            if !v.exists {
                return Err(dev_err(
                    dev,
                    format!(
                        "the backend vanished before it connected (domain {} removed \
                         {}); is its backend driver running?",
                        opts.backend,
                        dev.backend_path(opts.backend)
                    ),
                ));
            }
            if v.hotplug_status.as_deref() == Some("error") || v.hotplug_error.is_some() {
                return Err(dev_err(
                    dev,
                    format!(
                        "the backend's hotplug script failed: {}; state is {}",
                        v.hotplug_error.as_deref().unwrap_or("no reason given"),
                        state_text(v.state)
                    ),
                ));
            }
            Ok(matches!(
                v.state,
                Some(XenbusState::InitWait | XenbusState::Connected)
            ) && (!needs_status || v.hotplug_status.as_deref() == Some("connected")))
        },
        |v| {
            dev_err(
                dev,
                format!(
                    "backend did not connect within {}; state is {}{}",
                    secs(timeout),
                    state_text(v.state),
                    if needs_status && v.hotplug_status.is_none() {
                        ", and its hotplug script has not reported"
                    } else {
                        ""
                    }
                ),
            )
        },
    )
}
