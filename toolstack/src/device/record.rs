//! The stored config's side of devices: reading and updating it under the userdata lock,
//! the device entries it records, and the ids and MACs a spec gets before it is recorded.

use super::*;
use crate::config::stored::StoredConfig;
use crate::config::{DiskSpec, DomainConfig, VifSpec};
use crate::error::{DomainRef, Error, Result};
use crate::host::Host;
use crate::lock::{level, DomId, Locked};

pub(super) fn stored_err(domid: DomId) -> impl Fn(crate::config::stored::Error) -> Error {
    move |source| match source {
        // A domain between Xen's createdomain and the last step of its creation has no
        // stored config yet; devices wait for the creation to finish.
        crate::config::stored::Error::Missing { .. } => Error::NotManaged {
            domain: DomainRef::id(domid),
        },
        source => Error::Stored {
            domain: DomainRef::id(domid),
            source,
        },
    }
}

/// Read-modify-write of `domid`'s stored config under its userdata lock, with a slow-lock
/// token proving the caller holds the slow lock (or no lock). `f` may refuse, and then nothing
/// is written.
pub(super) fn update_stored<R>(
    host: &Host,
    token: &mut Locked<'_, level::Slow>,
    domid: DomId,
    f: impl FnOnce(&mut StoredConfig) -> Result<R>,
) -> Result<R> {
    host.with_userdata(token, domid, |guard| {
        let mut stored = host.configs.load(guard).map_err(stored_err(domid))?;
        let r = f(&mut stored)?;
        host.configs
            .save(guard, &stored)
            .map_err(stored_err(domid))?;
        Ok(r)
    })
}

/// Read `domid`'s stored config under its userdata lock.
pub(super) fn read_stored(
    host: &Host,
    token: &mut Locked<'_, level::Slow>,
    domid: DomId,
) -> Result<StoredConfig> {
    host.with_userdata(token, domid, |guard| {
        host.configs.load(guard).map_err(stored_err(domid))
    })
}

/// Read `domid`'s stored config under its userdata lock, `None` for a domain without one (one
/// that `xl` created, or one still being created).
pub(super) fn read_stored_opt(
    host: &Host,
    token: &mut Locked<'_, level::Slow>,
    domid: DomId,
) -> Result<Option<StoredConfig>> {
    host.with_userdata(token, domid, |guard| {
        host.configs.load_opt(guard).map_err(stored_err(domid))
    })
}

/// The device id a stored vif spec records (`devid=N`).
pub(super) fn vif_devid(spec: &VifSpec) -> Option<u32> {
    spec.get("devid").and_then(|v| v.parse().ok())
}

/// The `key=value` device lists of the stored config (vif, vkb, console), by kind.
pub(super) fn keyed_mut(c: &mut DomainConfig, kind: DeviceKind) -> Option<&mut Vec<VifSpec>> {
    match kind {
        DeviceKind::Vif => Some(&mut c.vifs),
        DeviceKind::Vkb => Some(&mut c.vkbs),
        DeviceKind::Console => Some(&mut c.consoles),
        DeviceKind::Vbd => None,
    }
}

/// [`keyed_mut`], to read.
pub(super) fn keyed(c: &DomainConfig, kind: DeviceKind) -> Option<&Vec<VifSpec>> {
    match kind {
        DeviceKind::Vif => Some(&c.vifs),
        DeviceKind::Vkb => Some(&c.vkbs),
        DeviceKind::Console => Some(&c.consoles),
        DeviceKind::Vbd => None,
    }
}

/// The devices of `kind` the stored config records: (device id, spec as written).
pub(super) fn stored_entries(c: &DomainConfig, kind: DeviceKind) -> Vec<(u32, String)> {
    match kind {
        DeviceKind::Vbd => c
            .disks
            .iter()
            .filter_map(|d| vdev_to_devid(&d.vdev).map(|id| (id, d.spec.clone())))
            .collect(),
        DeviceKind::Vif | DeviceKind::Vkb | DeviceKind::Console => keyed(c, kind)
            .into_iter()
            .flatten()
            .filter_map(|v| vif_devid(v).map(|id| (id, v.spec.clone())))
            .collect(),
    }
}

pub(super) fn is_recorded(c: &DomainConfig, dev: DeviceRef) -> bool {
    stored_entries(c, dev.kind)
        .iter()
        .any(|(id, _)| *id == dev.devid)
}

pub(super) fn disk_devid(domid: DomId, spec: &DiskSpec) -> Result<u32> {
    vdev_to_devid(&spec.vdev).ok_or_else(|| Error::Refused {
        domain: DomainRef::id(domid),
        what: format!(
            "disk {:?}: {:?} is not a virtual disk name (expected xvda, hdc, sdb1, d0p1, ...)",
            spec.spec, spec.vdev
        ),
    })
}

/// A locally administered Xen MAC (00:16:3e, as libxl picks) from random bytes.
pub(super) fn random_mac() -> String {
    let b = uuid::Uuid::new_v4().into_bytes();
    format!("00:16:3e:{:02x}:{:02x}:{:02x}", b[0] & 0x7f, b[1], b[2])
}

/// Takes the device out of the stored config; whether it was there.
pub(super) fn unrecord(
    host: &Host,
    st: &mut Locked<'_, level::Slow>,
    dev: DeviceRef,
) -> Result<bool> {
    update_stored(host, st, dev.domid, |stored| {
        let c = &mut stored.config;
        let was = is_recorded(c, dev);
        if dev.kind == DeviceKind::Vbd {
            c.disks
                .retain(|d| vdev_to_devid(&d.vdev) != Some(dev.devid));
        } else if let Some(list) = keyed_mut(c, dev.kind) {
            list.retain(|v| vif_devid(v) != Some(dev.devid));
        }
        Ok(was)
    })
}

/// The devices the stored config records.
pub(super) fn recorded_devices(domid: DomId, config: &DomainConfig) -> Vec<DeviceRef> {
    DeviceKind::ALL
        .into_iter()
        .flat_map(|kind| {
            stored_entries(config, kind)
                .into_iter()
                .map(move |(devid, _)| DeviceRef { kind, domid, devid })
        })
        .collect()
}

/// Fills in what a vif or vkb spec needs recorded before it exists (`devid=`, and a vif's
/// `mac=`), choosing an id not in `used`, and adds the id to `used`.
pub(super) fn complete_spec(
    kind: DeviceKind,
    spec: &VifSpec,
    used: &mut Vec<u32>,
) -> std::result::Result<VifSpec, String> {
    let devid = match spec.get("devid") {
        Some(v) => v.parse::<u32>().map_err(|_| {
            format!(
                "{kind} {:?}: devid must be a number, found {v:?}",
                spec.spec
            )
        })?,
        None => (0..).find(|n| !used.contains(n)).unwrap_or(0),
    };
    if used.contains(&devid) {
        return Err(format!(
            "{kind} {:?}: devid {devid} is used twice",
            spec.spec
        ));
    }
    used.push(devid);
    let mut extra = Vec::new();
    if spec.get("devid").is_none() {
        extra.push(format!("devid={devid}"));
    }
    if kind == DeviceKind::Vif && spec.mac().is_none() {
        extra.push(format!("mac={}", random_mac()));
    }
    let text = std::iter::once(spec.spec.clone())
        .filter(|s| !s.trim().is_empty())
        .chain(extra)
        .collect::<Vec<_>>()
        .join(",");
    VifSpec::parse(&text).map_err(|e| e.to_string())
}

/// Completes every spec of a creation's list: the ids given keep theirs, the others get the
/// lowest free ones, in the order written.
pub(super) fn complete_list(
    kind: DeviceKind,
    list: &mut [VifSpec],
) -> std::result::Result<(), String> {
    let mut explicit = Vec::new();
    for v in list.iter() {
        if v.get("devid").is_some() {
            let id = complete_spec(kind, v, &mut explicit.clone())
                .map(|c| vif_devid(&c).unwrap_or(0))?;
            if explicit.contains(&id) {
                return Err(format!("{kind} {:?}: devid {id} is used twice", v.spec));
            }
            explicit.push(id);
        }
    }
    let mut assigned: Vec<u32> = Vec::new();
    for v in list.iter_mut() {
        let own = v.get("devid").and_then(|d| d.parse::<u32>().ok());
        let mut avoid: Vec<u32> = explicit
            .iter()
            .chain(&assigned)
            .copied()
            .filter(|id| Some(*id) != own)
            .collect();
        *v = complete_spec(kind, v, &mut avoid)?;
        assigned.extend(vif_devid(v));
    }
    Ok(())
}

/// Before creation records the config: gives every vif and vkb its device id (and every vif
/// its MAC), and refuses disks with a bad or repeated vdev.
///
/// # Errors
///
/// A sentence naming the device spec at fault.
pub(crate) fn prepare_for_creation(config: &mut DomainConfig) -> std::result::Result<(), String> {
    let mut seen = Vec::new();
    for d in &config.disks {
        let id = vdev_to_devid(&d.vdev).ok_or_else(|| {
            format!(
                "disk {:?}: {:?} is not a virtual disk name (expected xvda, hdc, sdb1, ...)",
                d.spec, d.vdev
            )
        })?;
        if seen.contains(&id) {
            return Err(format!("disk {:?}: vdev {} is used twice", d.spec, d.vdev));
        }
        seen.push(id);
    }
    complete_list(DeviceKind::Vif, &mut config.vifs)?;
    complete_list(DeviceKind::Vkb, &mut config.vkbs)?;
    prepare_consoles(&mut config.consoles)
}

/// The recorded spec of the primary console, as creation adds it.
pub(super) const PRIMARY_CONSOLE: &str = "type=xenconsoled,output=pty,devid=0";

/// Gives the domain its primary console (unless the config has one: preparing twice changes
/// nothing), checks the channels, and numbers them from 1 in the order written.
pub(super) fn prepare_consoles(consoles: &mut Vec<VifSpec>) -> std::result::Result<(), String> {
    let primary = |c: &VifSpec| c.get("devid") == Some("0");
    for c in consoles.iter() {
        if primary(c) {
            if c.get("name").is_some() || c.get("path").is_some() {
                return Err(format!(
                    "console {:?}: the primary console (devid 0) takes no name or path",
                    c.spec
                ));
            }
        } else {
            VifSpec::parse_channel(&c.spec)
                .map_err(|e| format!("channel {:?}: {}", e.spec, e.reason))?;
        }
    }
    match consoles.iter().filter(|c| primary(c)).count() {
        0 => consoles.insert(
            0,
            VifSpec::parse(PRIMARY_CONSOLE).map_err(|e| e.to_string())?,
        ),
        1 => {}
        _ => return Err("the primary console (devid 0) is given twice".into()),
    }
    complete_list(DeviceKind::Console, consoles)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[VifSpec]) -> Vec<Option<u32>> {
        list.iter().map(vif_devid).collect()
    }

    #[test]
    fn creation_gives_free_ids_in_order_and_keeps_the_given_ones() {
        let mut c = DomainConfig::new("d");
        for spec in ["", "devid=0", "", "bridge=br1"] {
            c.vifs.push(VifSpec::parse(spec).expect("spec"));
        }
        c.vkbs
            .push(VifSpec::parse("backend-type=linux").expect("spec"));
        prepare_for_creation(&mut c).expect("prepared");
        // The two identical empty specs get two ids, around the one given.
        assert_eq!(ids(&c.vifs), [Some(1), Some(0), Some(2), Some(3)]);
        assert!(c
            .vifs
            .iter()
            .all(|v| v.mac().is_some_and(|m| m.starts_with("00:16:3e:"))));
        assert_eq!(ids(&c.vkbs), [Some(0)]);
        assert_eq!(c.vkbs[0].mac(), None);
        assert_eq!(c.vkbs[0].spec, "backend-type=linux,devid=0");
        // Preparing twice changes nothing.
        let again = {
            let mut d = c.clone();
            prepare_for_creation(&mut d).expect("prepared");
            d
        };
        assert_eq!(again, c);
    }

    #[test]
    fn creation_refuses_repeated_or_bad_ids() {
        let mut c = DomainConfig::new("d");
        c.vifs.push(VifSpec::parse("devid=2").expect("spec"));
        c.vifs
            .push(VifSpec::parse("devid=2,bridge=x").expect("spec"));
        let e = prepare_for_creation(&mut c).expect_err("repeated");
        assert!(e.contains("devid 2 is used twice"), "{e}");

        let mut c = DomainConfig::new("d");
        c.vkbs.push(VifSpec::parse("devid=one").expect("spec"));
        let e = prepare_for_creation(&mut c).expect_err("bad");
        assert!(e.contains("devid must be a number"), "{e}");

        let mut c = DomainConfig::new("d");
        c.disks.push(DiskSpec::parse("/a,raw,xvda").expect("spec"));
        c.disks.push(DiskSpec::parse("/b,raw,51712").expect("spec"));
        let e = prepare_for_creation(&mut c).expect_err("same disk");
        assert!(e.contains("vdev 51712 is used twice"), "{e}");

        let mut c = DomainConfig::new("d");
        c.disks.push(DiskSpec::parse("/a,raw,vda").expect("spec"));
        let e = prepare_for_creation(&mut c).expect_err("bad vdev");
        assert!(e.contains("\"vda\" is not a virtual disk name"), "{e}");
    }
}
