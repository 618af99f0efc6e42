//! Attaching devices: hot add (`xl block-attach`, `network-attach`, `vkb-attach`, channels)
//! and creation's device phase.

use super::hotplug::{check_disk_target, hotplug_add, run_hotplug};
use super::nodes::{
    console_nodes, disk_nodes, keyed_nodes, rm_device, write_device, xenstore_devids, Nodes,
};
use super::record::{
    complete_spec, disk_devid, is_recorded, keyed_mut, read_stored, stored_entries, unrecord,
    update_stored, vif_devid,
};
use super::recover::recover_locked;
use super::wait::wait_connected;
use super::*;
use crate::config::stored::StoredConfig;
use crate::config::{DiskSpec, VifSpec};
use crate::error::{DomainRef, Error, Result};
use crate::hooks;
use crate::host::Host;
use crate::lock::{level, DomId, Locked};

/// Attach a disk to domain `domid` (`xl block-attach`), and wait for its backend.
///
/// Under the domain's slow lock: records the disk in the stored config (refusing a vdev the
/// domain already has), writes the frontend, backend and toolstack nodes, and waits (with
/// watches, at most `opts.timeout`) for the backend to reach InitWait or Connected with
/// `hotplug-status` = `connected`. If the backend fails, stalls or vanishes, the device is
/// taken out of xenstore and then out of the stored config, and the error says what the
/// backend did.
///
/// # Domains that `xl` created
///
/// Attach is refused ([`Error::NotManaged`]) for a domain without a stored config of this
/// toolstack, such as one `xl` created. The invariant wants every device described by the
/// domain's stored config before it exists; for xl's domain that is libxl's `libxl-json`
/// document, which libxl rewrites whole from its own model. This toolstack writes that
/// document only from its own config and does not read libxl's back, so adding a device to it
/// would drop what libxl recorded and we do not model; leaving the document alone would put a
/// device in xenstore that xl's record does not describe (and `xl save`, `xl list -l` would
/// miss). So xl's devices are attached with xl; `rxl` lists and detaches them.
///
/// # Errors
///
/// [`Error::NoSuchDomain`] for a domain that is gone (or destroyed while waiting for its
/// lock); [`Error::Refused`] for a bad vdev; [`Error::Device`] for a duplicate or a backend
/// that did not connect; the xenstore or stored-config error of a step that failed.
pub fn add_disk(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
    spec: &DiskSpec,
    opts: &Options,
) -> Result<DeviceRef> {
    let devid = disk_devid(domid, spec)?;
    let dev = DeviceRef {
        kind: DeviceKind::Vbd,
        domid,
        devid,
    };
    check_disk_target(dev, spec, opts.backend)?;
    let nodes = disk_nodes(spec, devid, &host.hotplug_scripts);
    let spec = spec.clone();
    add(host, token, dev, opts, nodes, move |stored| {
        if let Some(d) = stored
            .config
            .disks
            .iter()
            .find(|d| vdev_to_devid(&d.vdev) == Some(devid))
        {
            return Err(dev_err(
                dev,
                DeviceError::InUse {
                    existing: Some(d.spec.clone()),
                },
            ));
        }
        stored.config.disks.push(spec);
        Ok(())
    })
}

/// Attach a network interface to domain `domid` (`xl network-attach`), and wait for its
/// backend. The device id is `devid=` if the spec gives one, else the lowest one free; the MAC
/// is `mac=` or a random 00:16:3e one. Both are recorded in the stored spec. As
/// [`add_disk`] otherwise.
///
/// # Errors
///
/// As [`add_disk`].
pub fn add_nic(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
    spec: &VifSpec,
    opts: &Options,
) -> Result<DeviceRef> {
    add_keyed(host, token, domid, DeviceKind::Vif, spec, opts)
}

/// Attach a virtual keyboard to domain `domid` (`xl vkb-attach`), and wait for its backend.
/// The spec is `key=value` settings (`backend-type=qemu|linux`, `unique-id=`, `devid=`,
/// ...); the device id is `devid=` or the lowest one free, and is recorded. As [`add_disk`]
/// otherwise.
///
/// # Errors
///
/// As [`add_disk`].
pub fn add_vkb(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
    spec: &VifSpec,
    opts: &Options,
) -> Result<DeviceRef> {
    add_keyed(host, token, domid, DeviceKind::Vkb, spec, opts)
}

/// Attach a secondary console (a channel) to domain `domid`, and wait for its backend to
/// reach InitWait or Connected. The spec is a channel spec ([`VifSpec::parse_channel`]:
/// `name=`, `connection=pty`, optionally `devid=` from 1); the device id is `devid=` or the
/// lowest one free from 1, and is recorded. As [`add_disk`] otherwise.
///
/// libxl adds channels only at creation (its QEMU serves them); this toolstack also adds and
/// removes them later, under the same lock rules as every other device.
///
/// # Errors
///
/// [`Error::Refused`] for a spec that is not a channel spec; as [`add_disk`] otherwise.
pub fn add_channel(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
    spec: &VifSpec,
    opts: &Options,
) -> Result<DeviceRef> {
    VifSpec::parse_channel(&spec.spec).map_err(|e| Error::Refused {
        domain: DomainRef::id(domid),
        what: format!("channel {:?}: {}", e.spec, e.reason),
    })?;
    add_keyed(host, token, domid, DeviceKind::Console, spec, opts)
}

pub(super) fn add_keyed(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
    kind: DeviceKind,
    spec: &VifSpec,
    opts: &Options,
) -> Result<DeviceRef> {
    host.with_slow(token, domid, |st| {
        recover_locked(host, st, domid)?;
        // The slow lock serialises device work on this domain, so the id chosen here cannot be
        // taken by anyone else before it is recorded.
        let stored = read_stored(host, st, domid)?;
        let mut used: Vec<u32> = stored_entries(&stored.config, kind)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        used.extend(xenstore_devids(host, domid, kind)?);
        if kind == DeviceKind::Console {
            // Console 0 is the primary console, whether or not this domain has one.
            used.push(0);
        }
        let taken = || DeviceError::InUse { existing: None };
        let recorded = match complete_spec(kind, spec, &mut used) {
            Ok(r) => r,
            Err(what) => {
                // The id is taken: say so about the device.
                if let Some(devid) = vif_devid(spec) {
                    return Err(dev_err(DeviceRef { kind, domid, devid }, taken()));
                }
                return Err(Error::Refused {
                    domain: DomainRef::id(domid),
                    what,
                });
            }
        };
        let devid = vif_devid(&recorded).unwrap_or(0);
        let dev = DeviceRef { kind, domid, devid };
        let nodes = keyed_nodes(kind, &recorded, devid, &host.hotplug_scripts);
        add_locked(host, st, dev, opts, nodes, move |stored| {
            if is_recorded(&stored.config, dev) {
                return Err(dev_err(dev, taken()));
            }
            if let Some(list) = keyed_mut(&mut stored.config, kind) {
                list.push(recorded);
            }
            Ok(())
        })?;
        Ok(dev)
    })
}

pub(super) fn add(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    dev: DeviceRef,
    opts: &Options,
    nodes: Nodes,
    record: impl FnOnce(&mut StoredConfig) -> Result<()>,
) -> Result<DeviceRef> {
    host.with_slow(token, dev.domid, |st| {
        recover_locked(host, st, dev.domid)?;
        add_locked(host, st, dev, opts, nodes, record)?;
        Ok(dev)
    })
}

/// The add proper, with the slow lock held throughout.
pub(super) fn add_locked(
    host: &Host,
    st: &mut Locked<'_, level::Slow>,
    dev: DeviceRef,
    opts: &Options,
    nodes: Nodes,
    record: impl FnOnce(&mut StoredConfig) -> Result<()>,
) -> Result<()> {
    hooks::point("device-add:slow-locked")?;
    // 1. Record it (fast lock, one read-modify-write).
    update_stored(host, st, dev.domid, record)?;
    hooks::point("device-add:recorded")?;
    // 2. Create it in xenstore (all or nothing), then 3. wait for the backend.
    let mut script_ran = false;
    let (written, result) = match write_device(host, dev, opts.backend, &nodes) {
        Err(e) => (false, Err(e)),
        Ok(()) => (
            true,
            hooks::point("device-add:written")
                .and_then(|()| hotplug_add(host, dev, opts, &mut script_ran))
                .and_then(|()| wait_connected(host, dev, opts)),
        ),
    };
    if let Err(first) = result {
        // Undo in the removal order: xenstore first (only what this add wrote), then the
        // stored config. A hotplug script that ran `add` (it may have bound a loop device or
        // bridged a vif before failing) runs `remove` while the backend still names what it
        // made; its own failure does not stop the undo, as in a removal.
        let undo = if written {
            if script_ran {
                let _ = run_hotplug(host, dev, opts.backend, "remove");
            }
            rm_device(host, dev, opts.backend)
        } else {
            Ok(())
        }
        .and_then(|()| unrecord(host, st, dev).map(drop));
        return match undo {
            Ok(()) => Err(first),
            Err(second) => Err(Error::DeviceUndo {
                device: dev,
                first: Box::new(first),
                source: Box::new(second),
            }),
        };
    }
    Ok(())
}

/// Creation's device phase: with the slow lock held since the stored config (which already
/// describes them) was written, create every device in xenstore and wait for their backends
/// (all but the primary console's: see [`add_primary_console`]). `console` is the primary
/// console's ring as the domain builder set it up.
pub(crate) fn attach_at_creation(
    host: &Host,
    _slow: &mut Locked<'_, level::Slow>,
    domid: DomId,
    config: &crate::config::DomainConfig,
    console: PrimaryConsole,
) -> Result<()> {
    let opts = Options::default();
    for spec in &config.disks {
        let devid = disk_devid(domid, spec)?;
        let dev = DeviceRef {
            kind: DeviceKind::Vbd,
            domid,
            devid,
        };
        check_disk_target(dev, spec, opts.backend)?;
        let nodes = disk_nodes(spec, devid, &host.hotplug_scripts);
        write_device(host, dev, opts.backend, &nodes)?;
        hooks::point("create:device-written")?;
        hotplug_add(host, dev, &opts, &mut false)?;
        wait_connected(host, dev, &opts)?;
    }
    for (kind, list) in [
        (DeviceKind::Vif, &config.vifs),
        (DeviceKind::Vkb, &config.vkbs),
        (DeviceKind::Console, &config.consoles),
    ] {
        for spec in list {
            let devid = vif_devid(spec).unwrap_or(0);
            let dev = DeviceRef { kind, domid, devid };
            if dev.is_primary_console() {
                add_primary_console(host, dev, opts.backend, spec, console)?;
                continue;
            }
            let nodes = keyed_nodes(kind, spec, devid, &host.hotplug_scripts);
            write_device(host, dev, opts.backend, &nodes)?;
            hooks::point("create:device-written")?;
            hotplug_add(host, dev, &opts, &mut false)?;
            wait_connected(host, dev, &opts)?;
        }
    }
    Ok(())
}

/// The primary console's ring, as creation set it up: its event channel (an unbound port for
/// the console backend, allocated with the xenstore one as libxl's `libxl__build_pre` does)
/// and, when a kernel was loaded, the ring's frame (`ring-ref`: a machine frame for PV, a
/// guest frame for PVH).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PrimaryConsole {
    /// The event channel.
    pub(crate) port: u32,
    /// The ring's frame, if a builder laid one out.
    pub(crate) ring_ref: Option<u64>,
}

/// Writes the primary console of a domain being created, with the port and ring creation
/// set up. It does not wait: xenconsoled does not use the XenbusState handshake, and libxl
/// does not wait for it either.
pub(super) fn add_primary_console(
    host: &Host,
    dev: DeviceRef,
    backend: DomId,
    spec: &VifSpec,
    console: PrimaryConsole,
) -> Result<()> {
    write_device(
        host,
        dev,
        backend,
        &console_nodes(spec, 0, Some((console.port, console.ring_ref))),
    )?;
    hooks::point("create:device-written")
}
