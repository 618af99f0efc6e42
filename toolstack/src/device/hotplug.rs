//! Hotplug scripts, run by the toolstack as libxl runs them (`run_hotplug_scripts`): the
//! disk-target check before a disk is written, the wait for InitWait, and the script's `add`
//! and `remove` with libxl's arguments and environment.
//!
//! Every host has its scripts ([`Host::hotplug_scripts`]): Xen's in `/etc/xen/scripts`, the
//! simulated host's stubs in its state directory ([`crate::sim`]). The code here does not know
//! which it runs.

use std::path::PathBuf;

use super::wait::{read_opt, wait_initwait};
use super::*;
use crate::config::DiskSpec;
use crate::error::Result;
use crate::host::Host;
use crate::lock::DomId;

/// A raw disk served by dom0 with the default `block` script must have a file or a block device
/// as its target, as libxl checks before it writes anything (`libxl__device_disk_set_backend`):
/// for a missing path the script would report success without a device, and the backend would
/// wait for one forever.
pub(super) fn check_disk_target(dev: DeviceRef, spec: &DiskSpec, backend: DomId) -> Result<()> {
    let scripted = spec.other.iter().any(|(k, _)| k == "script");
    let raw = matches!(spec.format.as_deref(), None | Some("raw"));
    let target = spec.target.as_deref().unwrap_or_default();
    if scripted || !raw || backend != 0 || target.is_empty() {
        return Ok(());
    }
    let path = PathBuf::from(target);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() || std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()) => {
            Ok(())
        }
        Ok(_) => Err(dev_err(dev, DeviceError::TargetNotUsable { path })),
        Err(source) => Err(dev_err(dev, DeviceError::TargetMissing { path, source })),
    }
}

/// For the kinds with a hotplug script: waits for the backend to reach InitWait, as libxl
/// does, then runs the device's `script` with `add` (setting `ran` first).
pub(super) fn hotplug_add(
    host: &Host,
    dev: DeviceRef,
    opts: &Options,
    ran: &mut bool,
) -> Result<()> {
    if !has_hotplug_script(dev.kind) {
        return Ok(());
    }
    wait_initwait(host, dev, opts)?;
    *ran = true;
    run_hotplug(host, dev, opts.backend, "add")
}

/// Runs the device's hotplug script with `action` (`add` or `remove`) and libxl's arguments and
/// environment, if the backend names one. As libxl does (`libxl__hotplug_nic`), a vif's
/// script is told `online` or `offline` with `type_if=vif` (vif-bridge reports `connected`
/// only for `online`), and `netdev` is the backend's `gatewaydev`.
pub(super) fn run_hotplug(
    host: &Host,
    dev: DeviceRef,
    backend: DomId,
    action: &'static str,
) -> Result<()> {
    let be = dev.backend_path(backend);
    let Some(script) = read_opt(host, dev, &format!("{be}/script"))? else {
        return Ok(());
    };
    let kind = dev.kind.xenstore_name();
    // spawns: own (the hotplug script that the backend node names)
    let mut cmd = std::process::Command::new(&script);
    if dev.kind == DeviceKind::Vif {
        cmd.arg(if action == "add" { "online" } else { "offline" })
            .arg("type_if=vif");
    } else {
        cmd.arg(action);
    }
    cmd.env("script", &script)
        .env("XENBUS_TYPE", kind)
        .env(
            "XENBUS_PATH",
            format!("backend/{kind}/{}/{}", dev.domid, dev.devid),
        )
        .env("XENBUS_BASE_PATH", "backend")
        .stdin(std::process::Stdio::null());
    if dev.kind == DeviceKind::Vif {
        let gateway = read_opt(host, dev, &format!("{be}/gatewaydev"))?;
        cmd.env("netdev", gateway.unwrap_or_default())
            .env("vif", format!("vif{}.{}", dev.domid, dev.devid));
    }
    let script = PathBuf::from(script);
    let out = cmd.output().map_err(|source| {
        dev_err(
            dev,
            DeviceError::HotplugSpawn {
                script: script.clone(),
                action,
                source,
            },
        )
    })?;
    if out.status.success() {
        return Ok(());
    }
    // Xen's scripts say why in `hotplug-error` (their `fatal`); else what they printed.
    let output = match read_opt(host, dev, &format!("{be}/hotplug-error"))? {
        Some(why) => why,
        None => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    };
    Err(dev_err(
        dev,
        DeviceError::HotplugFailed {
            script,
            action,
            status: out.status,
            output,
        },
    ))
}

/// Whether libxl runs a hotplug script for devices of `kind`, which reports in
/// `hotplug-status`. Consoles have none: their backend (QEMU) only moves `state`.
pub(super) fn has_hotplug_script(kind: DeviceKind) -> bool {
    matches!(kind, DeviceKind::Vbd | DeviceKind::Vif)
}

/// For destroy, before it removes the devices' nodes: runs the hotplug script's `remove` of
/// each device of domain `domid` that dom0 serves, while its backend still names what the
/// script made (a loop device, a bridge port), as libxl's destroy removes every device
/// (`libxl__devices_destroy`). Failures are ignored, as in a removal.
pub(crate) fn hotplug_remove_all(host: &Host, domid: DomId) {
    for kind in [DeviceKind::Vbd, DeviceKind::Vif] {
        let dir = format!("/local/domain/0/backend/{}/{domid}", kind.xenstore_name());
        let Ok(ids) = host.xs.directory(&dir) else {
            continue;
        };
        for devid in ids.iter().filter_map(|i| i.parse().ok()) {
            let _ = run_hotplug(host, DeviceRef { kind, domid, devid }, 0, "remove");
        }
    }
}
