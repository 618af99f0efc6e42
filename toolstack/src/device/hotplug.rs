//! Hotplug scripts, run by the toolstack as libxl runs them (`run_hotplug_scripts`): the
//! disk-target check before a disk is written, the wait for InitWait, and the script's `add`
//! and `remove` with libxl's arguments and environment.

use super::wait::{read_opt, secs, state_text, wait_backend};
use super::*;
use crate::config::DiskSpec;
use crate::error::Result;
use crate::host::Host;
use crate::lock::DomId;

/// Where this toolstack runs the `block` script for a raw disk served by dom0, the target must
/// be a file or a block device, as libxl checks before it writes anything
/// (`libxl__device_disk_set_backend`): for a missing path the script would report success
/// without a device, and the backend would wait for one forever.
pub(super) fn check_disk_target(
    host: &Host,
    dev: DeviceRef,
    spec: &DiskSpec,
    backend: DomId,
) -> Result<()> {
    let scripted = spec.other.iter().any(|(k, _)| k == "script");
    let raw = matches!(spec.format.as_deref(), None | Some("raw"));
    let target = spec.target.as_deref().unwrap_or_default();
    if host.hotplug_scripts.is_none() || scripted || !raw || backend != 0 || target.is_empty() {
        return Ok(());
    }
    match std::fs::metadata(target) {
        Ok(m) if m.is_file() || std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()) => {
            Ok(())
        }
        Ok(_) => Err(dev_err(
            dev,
            format!("its target {target} is neither a file nor a block device"),
        )),
        Err(e) => Err(dev_err(dev, format!("cannot use its target {target}: {e}"))),
    }
}

/// Where the toolstack runs the hotplug scripts: waits for the backend to reach InitWait, as
/// libxl does, then runs the device's `script` with `add` (setting `ran` first). Elsewhere,
/// nothing.
pub(super) fn hotplug_add(
    host: &Host,
    dev: DeviceRef,
    opts: &Options,
    ran: &mut bool,
) -> Result<()> {
    if host.hotplug_scripts.is_none() || !has_hotplug_script(dev.kind) {
        return Ok(());
    }
    let timeout = opts.timeout;
    wait_backend(
        host,
        dev,
        opts.backend,
        timeout,
        |v| {
            if !v.exists {
                return Err(dev_err(
                    dev,
                    "the backend vanished before it reached InitWait",
                ));
            }
            Ok(matches!(
                v.state,
                Some(XenbusState::InitWait | XenbusState::Connected)
            ))
        },
        |v| {
            dev_err(
                dev,
                format!(
                    "backend did not reach InitWait within {}; state is {}; is its driver \
                     (xen-blkback, xen-netback) loaded?",
                    secs(timeout),
                    state_text(v.state)
                ),
            )
        },
    )?;
    *ran = true;
    run_hotplug(host, dev, opts.backend, "add")
}

/// Runs the device's hotplug script with `action` (`add` or `remove`) and libxl's arguments and
/// environment, if the toolstack runs scripts on this host and the backend names one. As libxl
/// does (`libxl__hotplug_nic`), a vif's script is told `online` or `offline` with
/// `type_if=vif` (vif-bridge reports `connected` only for `online`), and `netdev` is the
/// backend's `gatewaydev`.
pub(super) fn run_hotplug(host: &Host, dev: DeviceRef, backend: DomId, action: &str) -> Result<()> {
    if host.hotplug_scripts.is_none() {
        return Ok(());
    }
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
    let out = cmd.output().map_err(|e| {
        dev_err(
            dev,
            format!("cannot run its hotplug script {script} {action}: {e}"),
        )
    })?;
    if out.status.success() {
        return Ok(());
    }
    let why = read_opt(host, dev, &format!("{be}/hotplug-error"))?
        .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_owned());
    Err(dev_err(
        dev,
        format!(
            "its hotplug script {script} {action} failed ({}): {why}",
            out.status
        ),
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
    if host.hotplug_scripts.is_none() {
        return;
    }
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
