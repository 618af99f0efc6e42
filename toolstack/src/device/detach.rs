//! Detaching devices (`xl block-detach`, `network-detach`, ...).

use super::hotplug::run_hotplug;
use super::nodes::rm_device;
use super::record::{is_recorded, read_stored_opt, unrecord};
use super::recover::recover_locked;
use super::wait::{read_opt, wait_closed};
use super::*;
use crate::error::{Error, Result};
use crate::hooks;
use crate::host::Host;
use crate::lock::{level, Locked};
use crate::paths::{domid_of_path, rm_if_present};

/// Detach a device from domain `domid` (`xl block-detach`, `xl network-detach`).
///
/// Under the slow lock: asks the backend to close (`online` = 0, `state` = 5) and waits for
/// state 6 (Closed), at most `opts.timeout`; then runs the hotplug script's `remove`, removes
/// the nodes from xenstore, and only then the entry from the stored config. A backend that
/// does not close in time is forced, as `xl block-detach` does (libxl's forced removal): the
/// frontend goes, so that the backend lets the device go without the guest, the backend is
/// asked again and waited for again, and then the device is removed whether or not it closed.
/// `opts.force` forces at once. Like add, it first runs [`recover`]'s repairs on the domain.
///
/// A domain that `xl` created has no stored config of ours: its devices are found in xenstore
/// (as `xl block-detach` finds them) and removed from there; libxl's own document of the
/// domain is libxl's, and is left as it is.
///
/// # Errors
///
/// [`Error::NoSuchDomain`]; [`Error::Device`] with [`DeviceError::NoSuchDevice`] or
/// [`DeviceError::PrimaryConsole`]; the error of a failed step.
pub fn remove(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    dev: DeviceRef,
    opts: &Options,
) -> Result<()> {
    host.with_slow(token, dev.domid, |st| {
        if dev.is_primary_console() {
            return Err(dev_err(dev, DeviceError::PrimaryConsole));
        }
        recover_locked(host, st, dev.domid)?;
        hooks::point("device-remove:slow-locked")?;
        // A domain xl created has no stored config of ours: its devices are xenstore's alone.
        let stored = read_stored_opt(host, st, dev.domid)?;
        let recorded = stored.is_some_and(|s| is_recorded(&s.config, dev));
        let be_path = read_opt(host, dev, &format!("{}/backend", dev.libxl_path()))?;
        let in_xenstore = be_path.is_some()
            || host
                .xs
                .exists(&dev.frontend_path())
                .map_err(xs_err(dev, "cannot read its frontend"))?;
        if !recorded && !in_xenstore {
            return Err(dev_err(dev, DeviceError::NoSuchDevice));
        }
        // The backend domain, from the toolstack's record (fall back to the options').
        let backend = be_path
            .as_deref()
            .and_then(domid_of_path)
            .unwrap_or(opts.backend);
        if in_xenstore {
            let be = dev.backend_path(backend);
            let fe = dev.frontend_path();
            let ask = |force: bool| {
                host.xs
                    .transaction(|t| {
                        if force {
                            // libxl's forced removal: the frontend goes at once, so that the backend
                            // driver lets the device go (blkback closes the disk it holds) and closes,
                            // whatever the guest does.
                            rm_if_present(t, &fe)?;
                        }
                        if !t.exists(&format!("{be}/frontend-id"))? {
                            return Ok(false);
                        }
                        t.write(&format!("{be}/online"), "0")?;
                        // A backend that closed already stays closed (libxl does not touch it either).
                        if t.read_string(&format!("{be}/state")).ok().as_deref() != Some("6") {
                            t.write(&format!("{be}/state"), "5")?;
                        }
                        Ok(true)
                    })
                    .map_err(xs_err(dev, "cannot ask its backend to close"))
            };
            let asked = ask(opts.force)?;
            hooks::point("device-remove:closing")?;
            if asked {
                // As libxl (`device_backend_callback`): a backend that does not close in time is
                // asked again, forcibly (the frontend goes, so the backend lets the device go
                // whatever the guest does), and after a second wait the device goes whether or
                // not it closed.
                let first = if opts.force {
                    Ok(())
                } else {
                    wait_closed(host, dev, backend, opts.timeout)
                };
                let timed_out = matches!(
                    first.as_ref().err().and_then(Error::device_error),
                    Some(DeviceError::BackendTimeout { .. })
                );
                match first {
                    Err(e) if !timed_out => return Err(e),
                    _ => {}
                }
                if opts.force || timed_out {
                    if timed_out {
                        hooks::point("device-remove:forcing")?;
                        ask(true)?;
                    }
                    match wait_closed(host, dev, backend, opts.timeout) {
                        Err(e) if e.device_error().is_none() => return Err(e),
                        _ => {}
                    }
                }
            }
            // libxl runs the script's `remove` once the backend closed, and removes the device
            // whatever the script says; so do we.
            let _ = run_hotplug(host, dev, backend, "remove");
            rm_device(host, dev, backend)?;
            hooks::point("device-remove:removed")?;
        }
        if recorded {
            unrecord(host, st, dev)?;
        }
        Ok(())
    })
}
