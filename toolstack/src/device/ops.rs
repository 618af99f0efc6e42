//! Adding, removing, listing and checking devices.

use std::time::{Duration, Instant};

use serde::Serialize;
use xenstore::perms::{Access, Permissions};

use super::{vdev_to_devid, DeviceKind, DeviceRef, XenbusState};
use crate::config::stored::StoredConfig;
use crate::config::{DiskAccess, DiskSpec, DomainConfig, VifSpec};
use crate::domain::{dom_path, lock_error};
use crate::error::{DomainRef, Error, Result};
use crate::hooks;
use crate::host::Host;
use crate::lock::{level, DomId, Locked};

/// How long add waits for the backend to connect, and remove for it to close, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How an add or remove runs.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The domain that runs the backend (dom0 unless a driver domain serves the device).
    pub backend: DomId,
    /// How long to wait for the backend.
    pub timeout: Duration,
    /// Remove: take the device away even if its backend does not close in time (xl's
    /// `--force`).
    pub force: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: 0,
            timeout: DEFAULT_TIMEOUT,
            force: false,
        }
    }
}

/// A device as `block-list`/`network-list` show it: the stored config's view joined with
/// xenstore's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// Its kind.
    pub kind: DeviceKind,
    /// Its id.
    pub devid: u32,
    /// The spec recorded in the stored config.
    pub spec: String,
    /// The backend domain, if xenstore has the device.
    pub backend_id: Option<DomId>,
    /// The frontend's state, if present.
    pub frontend_state: Option<u32>,
    /// The backend's state, if present.
    pub backend_state: Option<u32>,
    /// The backend directory, if xenstore has the device.
    pub backend_path: Option<String>,
    /// A console's pty, as its backend wrote it in the frontend's `tty` (none yet: empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tty: Option<String>,
}

/// A breach of the invariant "nothing in xenstore without an entry in the stored config", or
/// a device whose parts disagree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The xenstore path concerned.
    pub path: String,
    /// What is wrong.
    pub what: String,
}

fn dev_err(device: DeviceRef, what: impl Into<String>) -> Error {
    Error::Device {
        device,
        what: what.into(),
    }
}

fn xs_err(device: DeviceRef, what: &'static str) -> impl Fn(xenstore::Error) -> Error {
    move |source| Error::DeviceXenstore {
        device,
        what,
        source,
    }
}

fn stored_err(domid: DomId) -> impl Fn(crate::config::stored::Error) -> Error {
    move |source| match source {
        // A domain between Xen's createdomain and the last step of its creation has no
        // stored config yet; devices wait for the creation to finish.
        crate::config::stored::Error::Missing { .. } => Error::Refused {
            domain: DomainRef::id(domid),
            what: "it has no stored config: it is still being created (try again when the \
                   creation is done), or was not created by this toolstack"
                .into(),
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
fn update_stored<R>(
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
fn read_stored(
    host: &Host,
    token: &mut Locked<'_, level::Slow>,
    domid: DomId,
) -> Result<StoredConfig> {
    host.with_userdata(token, domid, |guard| {
        host.configs.load(guard).map_err(stored_err(domid))
    })
}

/// The device id a stored vif spec records (`devid=N`).
fn vif_devid(spec: &VifSpec) -> Option<u32> {
    spec.get("devid").and_then(|v| v.parse().ok())
}

/// The `key=value` device lists of the stored config (vif, vkb, console), by kind.
fn keyed_mut(c: &mut DomainConfig, kind: DeviceKind) -> Option<&mut Vec<VifSpec>> {
    match kind {
        DeviceKind::Vif => Some(&mut c.vifs),
        DeviceKind::Vkb => Some(&mut c.vkbs),
        DeviceKind::Console => Some(&mut c.consoles),
        DeviceKind::Vbd => None,
    }
}

/// [`keyed_mut`], to read.
fn keyed(c: &DomainConfig, kind: DeviceKind) -> Option<&Vec<VifSpec>> {
    match kind {
        DeviceKind::Vif => Some(&c.vifs),
        DeviceKind::Vkb => Some(&c.vkbs),
        DeviceKind::Console => Some(&c.consoles),
        DeviceKind::Vbd => None,
    }
}

/// The devices of `kind` the stored config records: (device id, spec as written).
fn stored_entries(c: &DomainConfig, kind: DeviceKind) -> Vec<(u32, String)> {
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

fn is_recorded(c: &DomainConfig, dev: DeviceRef) -> bool {
    stored_entries(c, dev.kind)
        .iter()
        .any(|(id, _)| *id == dev.devid)
}

fn disk_devid(domid: DomId, spec: &DiskSpec) -> Result<u32> {
    vdev_to_devid(&spec.vdev).ok_or_else(|| Error::Refused {
        domain: DomainRef::id(domid),
        what: format!(
            "disk {:?}: {:?} is not a virtual disk name (expected xvda, hdc, sdb1, d0p1, ...)",
            spec.spec, spec.vdev
        ),
    })
}

/// A locally administered Xen MAC (00:16:3e, as libxl picks) from random bytes.
fn random_mac() -> String {
    let b = uuid::Uuid::new_v4().into_bytes();
    format!("00:16:3e:{:02x}:{:02x}:{:02x}", b[0] & 0x7f, b[1], b[2])
}

/// What to write for a new device: the frontend's and backend's nodes (beyond the common
/// ones).
#[derive(Default)]
struct Nodes {
    /// Frontend nodes the guest owns.
    frontend: Vec<(&'static str, String)>,
    /// Frontend nodes the backend owns and the guest may only read (libxl's `ro_front`).
    frontend_ro: Vec<(&'static str, String)>,
    backend: Vec<(&'static str, String)>,
    /// The primary console's layout: a frontend directory the backend owns, and no frontend
    /// `state` (console 0 does not follow the XenbusState handshake).
    primary_console: bool,
}

/// The `script` node's value: the script named in the spec (or `default`), made absolute in
/// the host's script directory when the toolstack runs the scripts.
fn script_node(scripts: Option<&std::path::Path>, named: Option<&str>, default: &str) -> String {
    let name = named.unwrap_or(default);
    match scripts {
        Some(dir) if !name.starts_with('/') => dir.join(name).display().to_string(),
        _ => name.to_owned(),
    }
}

/// Where this toolstack runs the `block` script for a raw disk served by dom0, the target must
/// be a file or a block device, as libxl checks before it writes anything
/// (`libxl__device_disk_set_backend`): for a missing path the script would report success
/// without a device, and the backend would wait for one forever.
fn check_disk_target(host: &Host, dev: DeviceRef, spec: &DiskSpec, backend: DomId) -> Result<()> {
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

fn disk_nodes(spec: &DiskSpec, devid: u32, scripts: Option<&std::path::Path>) -> Nodes {
    let named = spec
        .other
        .iter()
        .find(|(k, _)| k == "script")
        .map(|(_, v)| v.as_str());
    let device_type = if spec.cdrom { "cdrom" } else { "disk" };
    let backend_type = match spec.format.as_deref() {
        None | Some("raw") => "phy",
        Some(_) => "qdisk",
    };
    Nodes {
        frontend: vec![
            ("virtual-device", devid.to_string()),
            ("device-type", device_type.into()),
        ],
        backend: vec![
            ("params", spec.target.clone().unwrap_or_default()),
            ("type", backend_type.into()),
            (
                "mode",
                if spec.access == DiskAccess::ReadOnly {
                    "r"
                } else {
                    "w"
                }
                .into(),
            ),
            ("device-type", device_type.into()),
            ("dev", spec.vdev.clone()),
            ("removable", if spec.cdrom { "1" } else { "0" }.into()),
            ("bootable", "1".into()),
            ("script", script_node(scripts, named, "block")),
        ],
        ..Nodes::default()
    }
}

fn nic_nodes(spec: &VifSpec, devid: u32, scripts: Option<&std::path::Path>) -> Nodes {
    let mac = spec.mac().unwrap_or_default().to_owned();
    Nodes {
        frontend: vec![("handle", devid.to_string()), ("mac", mac.clone())],
        backend: vec![
            ("handle", devid.to_string()),
            ("mac", mac),
            ("bridge", spec.bridge().unwrap_or("xenbr0").to_owned()),
            (
                "script",
                script_node(scripts, spec.get("script"), "vif-bridge"),
            ),
            ("type", "vif".into()),
        ],
        ..Nodes::default()
    }
}

fn vkb_nodes(spec: &VifSpec) -> Nodes {
    let mut backend = vec![(
        "backend-type",
        spec.get("backend-type").unwrap_or("qemu").to_owned(),
    )];
    for key in [
        "unique-id",
        "feature-disable-keyboard",
        "feature-disable-pointer",
        "feature-abs-pointer",
        "feature-raw-pointer",
        "feature-multi-touch",
        "width",
        "height",
        "multi-touch-width",
        "multi-touch-height",
        "multi-touch-num-contacts",
    ] {
        if let Some(v) = spec.get(key) {
            backend.push((key, v.to_owned()));
        }
    }
    Nodes {
        backend,
        ..Nodes::default()
    }
}

/// xenconsoled's and QEMU's console protocol (`LIBXL_XENCONSOLE_PROTOCOL`).
const CONSOLE_PROTOCOL: &str = "vt100";
/// How much console output the backend buffers, bytes (`LIBXL_XENCONSOLE_LIMIT`).
const CONSOLE_LIMIT: &str = "1048576";

/// The recorded spec of the primary console, as creation adds it.
const PRIMARY_CONSOLE: &str = "type=xenconsoled,output=pty,devid=0";

/// A console's nodes, as `libxl__device_console_add` writes them: the primary one (devid 0)
/// with its event channel `port` when creation allocated one; a secondary one (a channel)
/// with its `name` and the frontend `state`/`protocol` of the handshake.
fn console_nodes(spec: &VifSpec, devid: u32, port: Option<u32>) -> Nodes {
    let mut n = Nodes {
        backend: vec![("protocol", CONSOLE_PROTOCOL.into())],
        ..Nodes::default()
    };
    let name = spec.get("name").filter(|_| devid != 0);
    if let Some(name) = name {
        n.frontend_ro.push(("name", name.to_owned()));
        n.backend.push(("name", name.to_owned()));
    }
    if devid != 0 {
        n.backend.push((
            "connection",
            spec.get("connection").unwrap_or("pty").to_owned(),
        ));
    }
    let default_type = if devid == 0 { "xenconsoled" } else { "ioemu" };
    n.frontend_ro.extend([
        ("limit", CONSOLE_LIMIT.to_owned()),
        ("type", spec.get("type").unwrap_or(default_type).to_owned()),
        ("output", spec.get("output").unwrap_or("pty").to_owned()),
        // The backend writes its pty's name here.
        ("tty", String::new()),
    ]);
    if devid == 0 {
        n.primary_console = true;
        if let Some(port) = port {
            n.frontend_ro.push(("port", port.to_string()));
        }
    } else {
        n.frontend.push(("protocol", CONSOLE_PROTOCOL.into()));
    }
    n
}

fn keyed_nodes(
    kind: DeviceKind,
    spec: &VifSpec,
    devid: u32,
    scripts: Option<&std::path::Path>,
) -> Nodes {
    match kind {
        DeviceKind::Vkb => vkb_nodes(spec),
        DeviceKind::Console => console_nodes(spec, devid, None),
        _ => nic_nodes(spec, devid, scripts),
    }
}

/// Attach a disk to domain `domid` (`xl block-attach`), and wait for its backend.
///
/// Under the domain's slow lock: records the disk in the stored config (refusing a vdev the
/// domain already has), writes the frontend, backend and toolstack nodes, and waits (with
/// watches, at most `opts.timeout`) for the backend to reach InitWait or Connected with
/// `hotplug-status` = `connected`. If the backend fails, stalls or vanishes, the device is
/// taken out of xenstore and then out of the stored config, and the error says what the
/// backend did.
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
    check_disk_target(host, dev, spec, opts.backend)?;
    let nodes = disk_nodes(spec, devid, host.hotplug_scripts.as_deref());
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
                format!("the domain already has this disk ({:?})", d.spec),
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

fn add_keyed(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
    kind: DeviceKind,
    spec: &VifSpec,
    opts: &Options,
) -> Result<DeviceRef> {
    let exists = |d| host.domain_exists(d);
    let mut slow = host
        .locks
        .lock_slow(token, domid, &exists)
        .map_err(lock_error)?;
    let mut st = slow.token();
    recover_locked(host, &mut st, domid)?;
    // The slow lock serialises device work on this domain, so the id chosen here cannot be
    // taken by anyone else before it is recorded.
    let stored = read_stored(host, &mut st, domid)?;
    let mut used: Vec<u32> = stored_entries(&stored.config, kind)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    used.extend(xenstore_devids(host, domid, kind)?);
    if kind == DeviceKind::Console {
        // Console 0 is the primary console, whether or not this domain has one.
        used.push(0);
    }
    let taken = format!("the domain already has a {kind} with this id");
    let recorded = match complete_spec(kind, spec, &mut used) {
        Ok(r) => r,
        Err(what) => {
            // The id is taken: say so about the device.
            if let Some(devid) = vif_devid(spec) {
                return Err(dev_err(DeviceRef { kind, domid, devid }, taken));
            }
            return Err(Error::Refused {
                domain: DomainRef::id(domid),
                what,
            });
        }
    };
    let devid = vif_devid(&recorded).unwrap_or(0);
    let dev = DeviceRef { kind, domid, devid };
    let nodes = keyed_nodes(kind, &recorded, devid, host.hotplug_scripts.as_deref());
    add_locked(host, &mut st, dev, opts, nodes, move |stored| {
        if is_recorded(&stored.config, dev) {
            return Err(dev_err(dev, taken));
        }
        if let Some(list) = keyed_mut(&mut stored.config, kind) {
            list.push(recorded);
        }
        Ok(())
    })?;
    drop(st);
    slow.release().map_err(Error::Lock)?;
    Ok(dev)
}

fn add(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    dev: DeviceRef,
    opts: &Options,
    nodes: Nodes,
    record: impl FnOnce(&mut StoredConfig) -> Result<()>,
) -> Result<DeviceRef> {
    let exists = |d| host.domain_exists(d);
    let mut slow = host
        .locks
        .lock_slow(token, dev.domid, &exists)
        .map_err(lock_error)?;
    let mut st = slow.token();
    recover_locked(host, &mut st, dev.domid)?;
    add_locked(host, &mut st, dev, opts, nodes, record)?;
    drop(st);
    slow.release().map_err(Error::Lock)?;
    Ok(dev)
}

/// The add proper, with the slow lock held throughout.
fn add_locked(
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
            Err(second) => Err(dev_err(
                dev,
                format!(
                    "{}; undoing the add failed too: {}",
                    chain(&first),
                    chain(&second)
                ),
            )),
        };
    }
    Ok(())
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Writes the three directories of a new device in one transaction, refusing if any exists.
fn write_device(host: &Host, dev: DeviceRef, backend: DomId, nodes: &Nodes) -> Result<()> {
    let fe = dev.frontend_path();
    let be = dev.backend_path(backend);
    let lx = dev.libxl_path();
    let d = u32::from(dev.domid);
    let b = u32::from(backend);
    // Each end owns its directory; the other end may read it (libxl__device_generic_add).
    let fe_perms = Permissions::new(d, Access::NONE).with(b, Access::READ);
    let be_perms = Permissions::new(b, Access::NONE).with(d, Access::READ);
    // What the guest may only read: the backend's (libxl's `ro_frontend_perms`). The primary
    // console's whole frontend directory is so.
    let ro_perms = be_perms.clone();
    let fe_dir_perms = if nodes.primary_console {
        &ro_perms
    } else {
        &fe_perms
    };
    let lx_perms = Permissions::new(0, Access::NONE);
    let mut exists_already = None;
    host.xs
        .transaction(|t| {
            exists_already = None;
            // The domain must still be there: its home directory is removed by destroy.
            if !t.exists(&dom_path(dev.domid))? {
                exists_already = Some("the domain's xenstore directory is gone (destroyed?)");
                return Ok(());
            }
            for p in [&fe, &be, &lx] {
                if t.exists(p)? {
                    exists_already = Some("its xenstore nodes exist already");
                    return Ok(());
                }
            }
            t.write(&fe, "")?;
            t.set_perms(&fe, fe_dir_perms)?;
            t.write(&be, "")?;
            t.set_perms(&be, &be_perms)?;
            let fw = |k: &str, v: &str| -> xenstore::Result<()> {
                let p = format!("{fe}/{k}");
                t.write(&p, v)?;
                t.set_perms(&p, &fe_perms)
            };
            let bw = |k: &str, v: &str| -> xenstore::Result<()> {
                let p = format!("{be}/{k}");
                t.write(&p, v)?;
                t.set_perms(&p, &be_perms)
            };
            let rw = |k: &str, v: &str| -> xenstore::Result<()> {
                let p = format!("{fe}/{k}");
                t.write(&p, v)?;
                t.set_perms(&p, &ro_perms)
            };
            // libxl writes `backend` with the directory's permissions.
            if nodes.primary_console {
                rw("backend", &be)?;
            } else {
                fw("backend", &be)?;
            }
            fw("backend-id", &backend.to_string())?;
            if !nodes.primary_console {
                fw("state", "1")?;
            }
            for (k, v) in &nodes.frontend {
                fw(k, v)?;
            }
            for (k, v) in &nodes.frontend_ro {
                rw(k, v)?;
            }
            bw("frontend", &fe)?;
            bw("frontend-id", &dev.domid.to_string())?;
            bw("online", "1")?;
            bw("state", "1")?;
            for (k, v) in &nodes.backend {
                bw(k, v)?;
            }
            t.write(&lx, "")?;
            t.set_perms(&lx, &lx_perms)?;
            t.write(&format!("{lx}/frontend"), &fe)?;
            t.write(&format!("{lx}/backend"), &be)?;
            // A copy of the backend's entries, as libxl keeps one (libxl__device_generic_add):
            // Xen's own tools read a device's config from there (`xl block-list` fails on a
            // disk whose record lacks `type`, `mode`, `dev`, ...).
            t.write(&format!("{lx}/frontend-id"), dev.domid.to_string())?;
            t.write(&format!("{lx}/online"), "1")?;
            t.write(&format!("{lx}/state"), "1")?;
            for (k, v) in &nodes.backend {
                t.write(&format!("{lx}/{k}"), v)?;
            }
            Ok(())
        })
        .map_err(xs_err(dev, "cannot write its xenstore nodes"))?;
    match exists_already {
        Some(why) => Err(dev_err(dev, why)),
        None => Ok(()),
    }
}

/// Removes a device's three directories in one transaction; missing ones are fine.
fn rm_device(host: &Host, dev: DeviceRef, backend: DomId) -> Result<()> {
    let paths = [
        dev.frontend_path(),
        dev.backend_path(backend),
        dev.libxl_path(),
    ];
    host.xs
        .transaction(|t| {
            for p in &paths {
                match t.rm(p) {
                    Err(e) if e.errno() == Some(xenstore::Errno::ENOENT) => {}
                    other => other?,
                }
            }
            Ok(())
        })
        .map_err(xs_err(dev, "cannot remove its xenstore nodes"))
}

/// Takes the device out of the stored config; whether it was there.
fn unrecord(host: &Host, st: &mut Locked<'_, level::Slow>, dev: DeviceRef) -> Result<bool> {
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

/// What the backend of a device says, read in one go.
#[derive(Debug)]
struct BackendView {
    exists: bool,
    state: Option<XenbusState>,
    hotplug_status: Option<String>,
    hotplug_error: Option<String>,
}

fn read_opt(host: &Host, dev: DeviceRef, path: &str) -> Result<Option<String>> {
    match host.xs.read_string(path) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.errno() == Some(xenstore::Errno::ENOENT) => Ok(None),
        Err(e) => Err(xs_err(dev, "cannot read its backend's nodes")(e)),
    }
}

fn backend_view(host: &Host, dev: DeviceRef, be: &str) -> Result<BackendView> {
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

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn state_text(s: Option<XenbusState>) -> String {
    s.map_or_else(|| "missing".to_owned(), |s| s.to_string())
}

/// Waits with a watch on the backend directory until `done` says yes, fails, or time is up.
fn wait_backend(
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

/// Where the toolstack runs the hotplug scripts: waits for the backend to reach InitWait, as
/// libxl does, then runs the device's `script` with `add` (setting `ran` first). Elsewhere,
/// nothing.
fn hotplug_add(host: &Host, dev: DeviceRef, opts: &Options, ran: &mut bool) -> Result<()> {
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
fn run_hotplug(host: &Host, dev: DeviceRef, backend: DomId, action: &str) -> Result<()> {
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
fn has_hotplug_script(kind: DeviceKind) -> bool {
    matches!(kind, DeviceKind::Vbd | DeviceKind::Vif)
}

fn wait_connected(host: &Host, dev: DeviceRef, opts: &Options) -> Result<()> {
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
                match t.rm(&fe) {
                    Err(e) if e.errno() == Some(xenstore::Errno::ENOENT) => {}
                    other => other?,
                }
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

/// The device ids of `kind` that xenstore has for `domid` (frontends and toolstack records).
fn xenstore_devids(host: &Host, domid: DomId, kind: DeviceKind) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for dir in [
        format!("{}/device/{}", dom_path(domid), kind.xenstore_name()),
        format!("/libxl/{domid}/device/{}", kind.xenstore_name()),
    ] {
        match host.xs.directory(&dir) {
            Ok(names) => ids.extend(names.iter().filter_map(|n| n.parse::<u32>().ok())),
            Err(e) if e.errno() == Some(xenstore::Errno::ENOENT) => {}
            Err(source) => {
                return Err(Error::Xenstore {
                    domain: DomainRef::id(domid),
                    what: "cannot list its devices",
                    source,
                })
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

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

/// Checks the invariant for domain `domid`, holding its slow lock (so no device work is half
/// way) and reading the stored config under the fast lock: every device xenstore has (a
/// frontend, a backend under any domain's `backend/`, or a toolstack record) must be in the
/// stored config, and its parts must agree. Returns the violations found (none is good).
///
/// A domain that does not exist (any more) must have no device nodes and no backend
/// directories; that is checked without its locks (they cannot be taken for a destroyed
/// domain). A stored config it left is stale, which the invariant allows.
///
/// A domain that libxl created (`xl create`: libxl's userdata document, none of ours) has no
/// violations here: its devices are described by libxl's document, which libxl keeps.
///
/// # Errors
///
/// A lock, stored-config or xenstore error that prevented the check.
pub fn check(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
) -> Result<Vec<Violation>> {
    let exists = |d| host.domain_exists(d);
    let mut slow = match host.locks.lock_slow(token, domid, &exists) {
        Ok(s) => s,
        Err(crate::lock::Error::NoSuchDomain { .. }) => return gone_violations(host, domid),
        Err(e) => return Err(Error::Lock(e)),
    };
    let found = xenstore_devices(host, domid)?;
    let mut st = slow.token();
    // A domain being created has no stored config yet, and must have no devices. One with
    // libxl's document but not ours is libxl's (`xl create`): its devices are libxl's to
    // account for, not ours to judge.
    // A failed creation rolls back under the userdata lock alone: the domain can go while the
    // slow lock is held. Then (`None`) it is judged as gone, below.
    let stored = host.try_with_userdata(&mut st, domid, |guard| {
        let s = host.configs.load_opt(guard).map_err(stored_err(domid))?;
        let libxls = s.is_none()
            && guard
                .uuid()
                .and_then(|u| host.configs.libxl_document_path(domid, u))
                .is_some_and(|p| p.exists());
        Ok((s, libxls))
    })?;
    drop(st);
    slow.release().map_err(Error::Lock)?;
    let stored = match stored {
        None => return gone_violations(host, domid),
        Some((_, true)) => return Ok(Vec::new()),
        Some((s, false)) => s
            .map(|s| s.config)
            .unwrap_or_else(|| DomainConfig::new("(being created)")),
    };
    Ok(found
        .into_iter()
        .filter(|(_, dev)| !is_recorded(&stored, *dev))
        .map(|(path, dev)| Violation {
            path,
            what: format!("{dev} is in xenstore but not in the stored config"),
        })
        .collect())
}

/// The violations of a domain that does not exist.
fn gone_violations(host: &Host, domid: DomId) -> Result<Vec<Violation>> {
    // A destroy that died after Xen but before xenstore leaves both xenstore entries and the
    // stored config: a leak that `recover` removes, not a violation. Device nodes without a
    // stored config are.
    if host.configs.document_path(domid).exists() {
        return Ok(Vec::new());
    }
    Ok(xenstore_devices(host, domid)?
        .into_iter()
        .map(|(path, _)| Violation {
            path,
            what: format!(
                "left behind by domain {domid}, which no longer exists and has no stored config"
            ),
        })
        .collect())
}

/// [`check`] for every domain that exists or has left anything behind: a backend directory, a
/// `/libxl` record, a home directory or a stored config.
///
/// # Errors
///
/// As [`check`]; [`Error::XenHost`] if Xen will not list the domains.
pub fn check_all(host: &Host, token: &mut Locked<'_, level::Unlocked>) -> Result<Vec<Violation>> {
    let mut out = Vec::new();
    for d in known_domids(host)? {
        out.extend(check(host, token, d)?);
    }
    Ok(out)
}

/// [`recover`] for every domain that exists or has left anything behind; what it did.
///
/// # Errors
///
/// As [`recover`]; [`Error::XenHost`] if Xen will not list the domains.
pub fn recover_all(host: &Host, token: &mut Locked<'_, level::Unlocked>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for d in known_domids(host)? {
        out.extend(recover(host, token, d)?);
    }
    Ok(out)
}

/// The domains (but dom0) that exist, or have a backend directory, a `/libxl` record, a home
/// directory or a stored config.
fn known_domids(host: &Host) -> Result<Vec<DomId>> {
    let mut ids = std::collections::BTreeSet::new();
    let infos = host.xc.domain_list().map_err(|source| Error::XenHost {
        what: "cannot list the domains",
        source,
    })?;
    ids.extend(infos.iter().map(|i| i.domid));
    let ls = |p: &str| -> Result<Vec<String>> {
        match host.xs.directory(p) {
            Ok(v) => Ok(v),
            Err(e) if e.errno() == Some(xenstore::Errno::ENOENT) => Ok(Vec::new()),
            Err(source) => Err(Error::XenstoreHost {
                what: "cannot list the devices",
                source,
            }),
        }
    };
    let num = |v: Vec<String>| v.into_iter().filter_map(|n| n.parse::<DomId>().ok());
    for b in ls("/local/domain")? {
        if let Ok(id) = b.parse::<DomId>() {
            ids.insert(id);
        }
        for kind in DeviceKind::ALL {
            ids.extend(num(ls(&format!(
                "/local/domain/{b}/backend/{}",
                kind.xenstore_name()
            ))?));
        }
    }
    ids.extend(num(ls("/libxl")?));
    if let Ok(dir) = std::fs::read_dir(host.configs.path()) {
        for e in dir.flatten() {
            let name = e.file_name();
            let id = name
                .to_str()
                .and_then(|n| n.strip_prefix("domain-"))
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<DomId>().ok());
            ids.extend(id);
        }
    }
    Ok(ids.into_iter().filter(|&d| d != 0).collect())
}

/// Every device xenstore has for `domid`: frontends, toolstack records, and backends in every
/// domain's `backend/` directory.
fn xenstore_devices(host: &Host, domid: DomId) -> Result<Vec<(String, DeviceRef)>> {
    let ls = |p: &str| -> Result<Vec<String>> {
        match host.xs.directory(p) {
            Ok(v) => Ok(v),
            Err(e) if e.errno() == Some(xenstore::Errno::ENOENT) => Ok(Vec::new()),
            Err(source) => Err(Error::Xenstore {
                domain: DomainRef::id(domid),
                what: "cannot list its devices",
                source,
            }),
        }
    };
    let mut out = Vec::new();
    let mut push = |dir: String, kind: DeviceKind, id: &str| {
        if let Ok(devid) = id.parse() {
            out.push((format!("{dir}/{id}"), DeviceRef { kind, domid, devid }));
        }
    };
    let doms = ls("/local/domain")?;
    for kind in DeviceKind::ALL {
        let k = kind.xenstore_name();
        for base in [
            format!("{}/device/{k}", dom_path(domid)),
            format!("/libxl/{domid}/device/{k}"),
        ] {
            for id in ls(&base)? {
                push(base.clone(), kind, &id);
            }
        }
        for b in &doms {
            let base = format!("/local/domain/{b}/backend/{k}/{domid}");
            for id in ls(&base)? {
                push(base.clone(), kind, &id);
            }
        }
    }
    // The primary console's frontend lives outside `device/`.
    let primary = DeviceRef {
        kind: DeviceKind::Console,
        domid,
        devid: 0,
    };
    let fe = primary.frontend_path();
    if host.xs.exists(&fe).map_err(|source| Error::Xenstore {
        domain: DomainRef::id(domid),
        what: "cannot read its console",
        source,
    })? {
        out.push((fe, primary));
    }
    Ok(out)
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

/// Removes every backend directory of domain `domid`'s devices, in every domain's `backend/`
/// (for destroy; the frontends and toolstack records go with the domain's own directories).
pub(crate) fn rm_backends(t: &xenstore::Transaction<'_>, domid: DomId) -> xenstore::Result<()> {
    let doms = match t.directory("/local/domain") {
        Ok(d) => d,
        Err(e) if e.errno() == Some(xenstore::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    for b in doms {
        for kind in DeviceKind::ALL {
            let p = format!("/local/domain/{b}/backend/{}/{domid}", kind.xenstore_name());
            match t.rm(&p) {
                Err(e) if e.errno() == Some(xenstore::Errno::ENOENT) => {}
                other => other?,
            }
        }
    }
    Ok(())
}

/// The backend domain of a device that xenstore has, from the toolstack's record or, failing
/// that, from whichever domain's `backend/` holds it.
fn backend_of(host: &Host, dev: DeviceRef) -> Result<Option<DomId>> {
    let recorded = read_opt(host, dev, &format!("{}/backend", dev.libxl_path()))?;
    if let Some(b) = recorded
        .as_deref()
        .and_then(|p| p.strip_prefix("/local/domain/"))
        .and_then(|p| p.split('/').next())
        .and_then(|b| b.parse::<DomId>().ok())
    {
        return Ok(Some(b));
    }
    let doms = match host.xs.directory("/local/domain") {
        Ok(d) => d,
        Err(e) if e.errno() == Some(xenstore::Errno::ENOENT) => Vec::new(),
        Err(e) => return Err(xs_err(dev, "cannot list the backend domains")(e)),
    };
    for b in doms.iter().filter_map(|b| b.parse::<DomId>().ok()) {
        if host
            .xs
            .exists(&dev.backend_path(b))
            .map_err(xs_err(dev, "cannot read its backend"))?
        {
            return Ok(Some(b));
        }
    }
    Ok(None)
}

/// The devices the stored config records.
fn recorded_devices(domid: DomId, config: &DomainConfig) -> Vec<DeviceRef> {
    DeviceKind::ALL
        .into_iter()
        .flat_map(|kind| {
            stored_entries(config, kind)
                .into_iter()
                .map(move |(devid, _)| DeviceRef { kind, domid, devid })
        })
        .collect()
}

/// Completes or undoes whatever device operation on domain `domid` a dead process left half
/// done, so that afterwards every device is in both xenstore and the stored config, or in
/// neither. Returns what it did, one sentence each.
///
/// Under the domain's slow lock nobody is half way through device work, so:
/// - a device in the stored config but not in xenstore is an add interrupted before it wrote
///   xenstore, or a remove interrupted after it removed the nodes: the entry goes;
/// - a device whose backend was told to go offline and has closed (or is gone) is an
///   interrupted remove: it is finished;
/// - a device in xenstore but not in the stored config cannot come from this toolstack (add
///   records first); it is removed from xenstore, which restores the invariant.
///
/// For a domain that no longer exists, whatever it left (xenstore entries, devices' backends,
/// the stored config) is removed, as destroy would have. Add and remove run this first.
///
/// # Errors
///
/// A lock, xenstore or stored-config error.
pub fn recover(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
) -> Result<Vec<String>> {
    let exists = |d| host.domain_exists(d);
    match host.locks.lock_slow(token, domid, &exists) {
        Ok(mut slow) => {
            let mut st = slow.token();
            let done = recover_locked(host, &mut st, domid)?;
            drop(st);
            slow.release().map_err(Error::Lock)?;
            Ok(done)
        }
        Err(crate::lock::Error::NoSuchDomain { .. }) => recover_gone(host, token, domid),
        Err(e) => Err(Error::Lock(e)),
    }
}

fn recover_gone(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
) -> Result<Vec<String>> {
    let leftovers = !xenstore_devices(host, domid)?.is_empty()
        || host
            .xs
            .exists(&dom_path(domid))
            .map_err(|source| Error::Xenstore {
                domain: DomainRef::id(domid),
                what: "cannot read its xenstore entries",
                source,
            })?
        || host
            .xs
            .exists(&crate::domain::libxl_path(domid))
            .unwrap_or(false)
        || host.configs.document_path(domid).exists();
    if !leftovers {
        return Ok(Vec::new());
    }
    // The domain is gone, so its locks refuse; take them without that check (nobody else can
    // start work on a domain that does not exist) and check again under them.
    let gone = |d| host.domain_exists(d).map(|e| !e).and(Ok(true));
    let mut slow = host
        .locks
        .lock_slow(token, domid, &gone)
        .map_err(Error::Lock)?;
    let mut st = slow.token();
    let cleaned = host.with_userdata_checked(&mut st, domid, &gone, |guard| {
        if host.domain_exists(domid).unwrap_or(true) {
            // A new domain took the id meanwhile: not ours to clean.
            return Ok(false);
        }
        let who = DomainRef::id(domid);
        crate::domain::teardown(host, domid, &who)?;
        host.configs.remove(guard).map_err(stored_err(domid))?;
        Ok(true)
    })?;
    drop(st);
    slow.release().map_err(Error::Lock)?;
    if cleaned != Some(true) {
        return Ok(Vec::new());
    }
    Ok(vec![format!(
        "domain {domid} no longer exists: removed what it left in xenstore and its stored config"
    )])
}

fn recover_locked(
    host: &Host,
    st: &mut Locked<'_, level::Slow>,
    domid: DomId,
) -> Result<Vec<String>> {
    let stored = host.try_with_userdata(st, domid, |guard| {
        host.configs.load_opt(guard).map_err(stored_err(domid))
    })?;
    // A failed creation rolled back meanwhile (no domain): nothing of it to recover. A domain
    // still being created has no stored config, and no devices yet.
    let Some(Some(stored)) = stored else {
        return Ok(Vec::new());
    };
    let recorded = recorded_devices(domid, &stored.config);
    let mut in_xs: Vec<DeviceRef> = xenstore_devices(host, domid)?
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    in_xs.sort();
    in_xs.dedup();
    let mut done = Vec::new();
    for dev in &in_xs {
        let backend = backend_of(host, *dev)?;
        if !recorded.contains(dev) {
            if let Some(b) = backend {
                // What its hotplug script made (a loop device, a bridge port) goes too.
                let _ = run_hotplug(host, *dev, b, "remove");
            }
            rm_device(host, *dev, backend.unwrap_or(0))?;
            done.push(format!(
                "{dev}: removed from xenstore, as the stored config does not describe it"
            ));
            continue;
        }
        // Told to go offline and closed since: a removal that did not get to remove the
        // nodes. (One whose backend has not closed yet stays, whole, for the next detach.)
        let closed = match backend {
            Some(b) => {
                let be = dev.backend_path(b);
                read_opt(host, *dev, &format!("{be}/online"))?.as_deref() == Some("0")
                    && read_opt(host, *dev, &format!("{be}/state"))?
                        .as_deref()
                        .and_then(XenbusState::parse)
                        == Some(XenbusState::Closed)
            }
            // The frontend or the record without a backend: a removal got half way.
            None => true,
        };
        if closed {
            if let Some(b) = backend {
                // The removal may have died before its hotplug script ran `remove`; the script
                // is run again if it did (block's second `losetup -d` fails harmlessly).
                let _ = run_hotplug(host, *dev, b, "remove");
            }
            rm_device(host, *dev, backend.unwrap_or(0))?;
            unrecord(host, st, *dev)?;
            done.push(format!("{dev}: finished an interrupted removal"));
        }
    }
    for dev in recorded.iter().filter(|d| !in_xs.contains(d)) {
        unrecord(host, st, *dev)?;
        done.push(format!(
            "{dev}: dropped from the stored config, as xenstore does not have it \
             (an interrupted add or removal)"
        ));
    }
    Ok(done)
}

/// Fills in what a vif or vkb spec needs recorded before it exists (`devid=`, and a vif's
/// `mac=`), choosing an id not in `used`, and adds the id to `used`.
fn complete_spec(
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
fn complete_list(kind: DeviceKind, list: &mut [VifSpec]) -> std::result::Result<(), String> {
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

/// Gives the domain its primary console (unless the config has one: preparing twice changes
/// nothing), checks the channels, and numbers them from 1 in the order written.
fn prepare_consoles(consoles: &mut Vec<VifSpec>) -> std::result::Result<(), String> {
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

/// Creation's device phase: with the slow lock held since the stored config (which already
/// describes them) was written, create every device in xenstore and wait for their backends
/// (all but the primary console's: see [`add_primary_console`]).
pub(crate) fn attach_at_creation(
    host: &Host,
    _slow: &mut Locked<'_, level::Slow>,
    domid: DomId,
    config: &crate::config::DomainConfig,
) -> Result<()> {
    let opts = Options::default();
    for spec in &config.disks {
        let devid = disk_devid(domid, spec)?;
        let dev = DeviceRef {
            kind: DeviceKind::Vbd,
            domid,
            devid,
        };
        check_disk_target(host, dev, spec, opts.backend)?;
        let nodes = disk_nodes(spec, devid, host.hotplug_scripts.as_deref());
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
                add_primary_console(host, dev, opts.backend, spec)?;
                continue;
            }
            let nodes = keyed_nodes(kind, spec, devid, host.hotplug_scripts.as_deref());
            write_device(host, dev, opts.backend, &nodes)?;
            hooks::point("create:device-written")?;
            hotplug_add(host, dev, &opts, &mut false)?;
            wait_connected(host, dev, &opts)?;
        }
    }
    Ok(())
}

/// Writes the primary console of a domain being created: allocates its event channel (an
/// unbound port for the backend domain, as libxl's `libxl__build_pre`) and writes the nodes.
/// It does not wait: xenconsoled does not use the XenbusState handshake, and libxl does not
/// wait for it either.
fn add_primary_console(host: &Host, dev: DeviceRef, backend: DomId, spec: &VifSpec) -> Result<()> {
    let port = host
        .xc
        .evtchn_alloc_unbound(dev.domid, backend)
        .map_err(|source| Error::Xen {
            domain: DomainRef::id(dev.domid),
            what: "cannot allocate its console event channel",
            source,
        })?;
    write_device(host, dev, backend, &console_nodes(spec, 0, Some(port)))?;
    hooks::point("create:device-written")
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

    #[test]
    fn disk_nodes_follow_libxl() {
        let spec = DiskSpec::parse("/i.qcow2,qcow2,hdc,ro,devtype=cdrom").expect("spec");
        let n = disk_nodes(&spec, 5632, Some(std::path::Path::new("/etc/xen/scripts")));
        let get = |k: &str| {
            n.backend
                .iter()
                .find(|(kk, _)| *kk == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("type"), Some("qdisk"));
        assert_eq!(get("mode"), Some("r"));
        assert_eq!(get("device-type"), Some("cdrom"));
        assert_eq!(get("removable"), Some("1"));
        assert_eq!(get("dev"), Some("hdc"));
        assert_eq!(get("params"), Some("/i.qcow2"));
        assert_eq!(get("script"), Some("/etc/xen/scripts/block"));
        assert!(n.frontend.contains(&("virtual-device", "5632".to_owned())));
    }
}
