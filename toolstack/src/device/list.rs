//! Listing a domain's devices (`xl block-list`, `network-list`, ...).

use super::record::{stored_entries, stored_err};
use super::wait::read_opt;
use super::*;
use crate::error::Result;
use crate::host::Host;
use crate::lock::{level, DomId, Locked};

/// The devices of `kind` that domain `domid` has: the stored config's, with
/// xenstore's view of each. Takes only the fast lock, for the read.
///
/// # Errors
///
/// [`Error::NoSuchDomain`]; a stored-config or xenstore error.
pub fn list(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
    kind: DeviceKind,
) -> Result<Vec<DeviceInfo>> {
    let stored = host.with_userdata(token, domid, |guard| {
        host.configs.load(guard).map_err(stored_err(domid))
    })?;
    let entries = stored_entries(&stored.config, kind);
    let mut out = Vec::new();
    for (devid, spec) in entries {
        let dev = DeviceRef { kind, domid, devid };
        let be = read_opt(host, dev, &format!("{}/backend", dev.libxl_path()))?;
        let state = |p: &str| -> Result<Option<u32>> {
            Ok(read_opt(host, dev, &format!("{p}/state"))?.and_then(|v| v.trim().parse().ok()))
        };
        let backend_state = match &be {
            Some(b) => state(b)?,
            None => None,
        };
        out.push(DeviceInfo {
            kind,
            devid,
            spec,
            backend_id: be
                .as_deref()
                .and_then(|p| p.strip_prefix("/local/domain/"))
                .and_then(|p| p.split('/').next())
                .and_then(|b| b.parse().ok()),
            frontend_state: state(&dev.frontend_path())?,
            backend_state,
            backend_path: be,
            tty: if kind == DeviceKind::Console {
                read_opt(host, dev, &format!("{}/tty", dev.frontend_path()))?
            } else {
                None
            },
        });
    }
    out.sort_by_key(|d| d.devid);
    Ok(out)
}
