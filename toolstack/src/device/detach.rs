//! Detaching devices (`xl block-detach`, `network-detach`, ...).

use super::hotplug::run_hotplug;
use super::nodes::rm_device;
use super::record::{is_recorded, read_stored, unrecord};
use super::recover::recover_locked;
use super::wait::{read_opt, secs, state_text, wait_backend};
use super::*;
use crate::domain::lock_error;
use crate::error::{Error, Result};
use crate::hooks;
use crate::host::Host;
use crate::lock::{level, DomId, Locked};
use crate::paths::rm_if_present;

/// Detach a device from domain `domid` (`xl block-detach`, `xl network-detach`).
///
/// Under the slow lock: asks the backend to close (`online` = 0, `state` = 5) and waits for
/// state 6 (Closed), at most `opts.timeout`; then removes the nodes from xenstore, and only
/// then the entry from the stored config. If the backend does not close in time the device is
/// left as it was (closing), unless `opts.force`, which (as xl's `--force`, libxl's forced
/// removal) removes the frontend at once, so that the backend lets the device go without the
/// guest, and removes the device whether or not the backend closed in time. Where the
/// toolstack runs the hotplug scripts, the script's `remove` runs before the nodes go. Like
/// add, it first runs [`recover`]'s repairs on the domain.
///
/// # Errors
///
/// [`Error::NoSuchDomain`]; [`Error::Device`] when the domain has no such device or the
/// backend did not close; the error of a failed step.
pub fn remove(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    dev: DeviceRef,
    opts: &Options,
) -> Result<()> {
    let exists = |d| host.domain_exists(d);
    let mut slow = host
        .locks
        .lock_slow(token, dev.domid, &exists)
        .map_err(lock_error)?;
    if dev.is_primary_console() {
        return Err(dev_err(
            dev,
            "it is the domain's primary console, which goes only when the domain is destroyed",
        ));
    }
    let mut st = slow.token();
    recover_locked(host, &mut st, dev.domid)?;
    hooks::point("device-remove:slow-locked")?;
    let stored = read_stored(host, &mut st, dev.domid)?;
    let recorded = is_recorded(&stored.config, dev);
    let be_path = read_opt(host, dev, &format!("{}/backend", dev.libxl_path()))?;
    let in_xenstore = be_path.is_some()
        || host
            .xs
            .exists(&dev.frontend_path())
            .map_err(xs_err(dev, "cannot read its frontend"))?;
    if !recorded && !in_xenstore {
        return Err(dev_err(dev, "the domain has no such device"));
    }
    // The backend domain, from the toolstack's record (fall back to the options').
    let backend = be_path
        .as_deref()
        .and_then(|p| p.strip_prefix("/local/domain/"))
        .and_then(|p| p.split('/').next())
        .and_then(|b| b.parse::<DomId>().ok())
        .unwrap_or(opts.backend);
    if in_xenstore {
        let be = dev.backend_path(backend);
        let fe = dev.frontend_path();
        let asked = host.xs.transaction(|t| {
            if opts.force {
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
        });
        let asked = asked.map_err(xs_err(dev, "cannot ask its backend to close"))?;
        hooks::point("device-remove:closing")?;
        if asked {
            let timeout = opts.timeout;
            let waited = wait_backend(
                host,
                dev,
                backend,
                timeout,
                |v| Ok(!v.exists || v.state == Some(XenbusState::Closed)),
                |v| {
                    dev_err(
                        dev,
                        format!(
                            "backend did not close within {}; state is {}; the device stays \
                             until its backend closes (detach with --force to remove it anyway)",
                            secs(timeout),
                            state_text(v.state)
                        ),
                    )
                },
            );
            match waited {
                Ok(()) => {}
                Err(_) if opts.force => {}
                Err(e) => return Err(e),
            }
        }
        // libxl runs the script's `remove` once the backend closed, and removes the device
        // whatever the script says; so do we.
        let _ = run_hotplug(host, dev, backend, "remove");
        rm_device(host, dev, backend)?;
        hooks::point("device-remove:removed")?;
    }
    if recorded {
        unrecord(host, &mut st, dev)?;
    }
    drop(st);
    slow.release().map_err(Error::Lock)?;
    Ok(())
}
