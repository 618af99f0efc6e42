//! Listing a domain's devices (`xl block-list`, `network-list`, `vkb-list`, `console-list`).
//!
//! As xl does, the list comes from xenstore (the toolstack's records under `/libxl/D/device`
//! and the frontends), so it also shows the devices of a domain that `xl` created, which has no
//! stored config of ours. The stored config, when there is one, gives each device's spec as it
//! was written; otherwise the spec is read back from the backend's nodes.

use std::collections::{BTreeMap, BTreeSet};

use super::nodes::xenstore_devids;
use super::record::{stored_entries, stored_err};
use super::wait::read_opt;
use super::*;
use crate::error::Result;
use crate::host::Host;
use crate::lock::{level, DomId, Locked};
use crate::paths::domid_of_path;

/// The devices of `kind` that domain `domid` has, as xenstore has them, with the spec the
/// stored config records (or, for a device it does not record, one read from xenstore). Takes
/// only the fast lock, for the read of the stored config.
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
        host.configs.load_opt(guard).map_err(stored_err(domid))
    })?;
    let recorded: BTreeMap<u32, String> = stored
        .map(|s| stored_entries(&s.config, kind))
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut ids: BTreeSet<u32> = xenstore_devids(host, domid, kind)?.into_iter().collect();
    // What the stored config records and xenstore lacks (an interrupted add) shows too, with
    // no backend, as before the device was listed from xenstore.
    ids.extend(recorded.keys());
    let mut out = Vec::new();
    for devid in ids {
        let dev = DeviceRef { kind, domid, devid };
        let fe = dev.frontend_path();
        let be = match read_opt(host, dev, &format!("{}/backend", dev.libxl_path()))? {
            Some(b) => Some(b),
            None => read_opt(host, dev, &format!("{fe}/backend"))?,
        };
        let state = |p: &str| -> Result<Option<u32>> {
            Ok(read_opt(host, dev, &format!("{p}/state"))?.and_then(|v| v.trim().parse().ok()))
        };
        let backend_state = match &be {
            Some(b) => state(b)?,
            None => None,
        };
        let spec = match (recorded.get(&devid), &be) {
            (Some(s), _) => s.clone(),
            (None, Some(b)) => spec_from_xenstore(host, dev, b)?,
            (None, None) => String::new(),
        };
        out.push(DeviceInfo {
            kind,
            devid,
            spec,
            backend_id: be.as_deref().and_then(domid_of_path),
            frontend_state: state(&fe)?,
            backend_state,
            backend_path: be,
            tty: if kind == DeviceKind::Console {
                read_opt(host, dev, &format!("{fe}/tty"))?
            } else {
                None
            },
        });
    }
    Ok(out)
}

/// A spec for a device that no stored config describes, from what its backend holds (as xl's
/// `*-list` reads it): `target,format,vdev,access` for a disk, `key=value` settings for the
/// others.
fn spec_from_xenstore(host: &Host, dev: DeviceRef, be: &str) -> Result<String> {
    let node = |k: &str| -> Result<Option<String>> { read_opt(host, dev, &format!("{be}/{k}")) };
    let keyed = |pairs: Vec<(&str, Option<String>)>| {
        pairs
            .into_iter()
            .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| format!("{k}={v}")))
            .chain(std::iter::once(format!("devid={}", dev.devid)))
            .collect::<Vec<_>>()
            .join(",")
    };
    Ok(match dev.kind {
        DeviceKind::Vbd => {
            let format = match node("type")?.as_deref() {
                None | Some("phy") => "raw".to_owned(),
                Some(other) => other.to_owned(),
            };
            let access = if node("mode")?.as_deref() == Some("r") {
                "ro"
            } else {
                "rw"
            };
            let mut s = format!(
                "{},{format},{},{access}",
                node("params")?.unwrap_or_default(),
                node("dev")?.unwrap_or_else(|| dev.devid.to_string())
            );
            if node("device-type")?.as_deref() == Some("cdrom") {
                s.push_str(",devtype=cdrom");
            }
            s
        }
        DeviceKind::Vif => keyed(vec![
            ("mac", node("mac")?),
            ("bridge", node("bridge")?),
            ("script", node("script")?),
        ]),
        DeviceKind::Vkb => keyed(vec![("backend-type", node("backend-type")?)]),
        DeviceKind::Console => keyed(vec![
            ("name", node("name")?),
            ("connection", node("connection")?),
        ]),
    })
}
