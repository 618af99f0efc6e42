//! The xenstore layout of a device, as libxl writes it (`libxl__device_generic_add`): what
//! goes in the frontend, backend and toolstack directories of each kind, writing and removing
//! them, and finding the devices xenstore has.

use xenstore::perms::{Access, Permissions};
use xenstore::Batch;

use super::wait::read_opt;
use super::*;
use crate::config::{DiskAccess, DiskSpec, VifSpec};
use crate::domain::dom_path;
use crate::error::{DomainRef, Error, Result};
use crate::host::Host;
use crate::lock::DomId;
use crate::paths::{domid_of_path, rm_if_present};
use xenstore::ReadOpt;

/// What to write for a new device: the frontend's and backend's nodes (beyond the common
/// ones).
#[derive(Default)]
pub(super) struct Nodes {
    /// Frontend nodes the guest owns.
    pub(super) frontend: Vec<(&'static str, String)>,
    /// Frontend nodes the backend owns and the guest may only read (libxl's `ro_front`).
    pub(super) frontend_ro: Vec<(&'static str, String)>,
    pub(super) backend: Vec<(&'static str, String)>,
    /// The primary console's layout: a frontend directory the backend owns, and no frontend
    /// `state` (console 0 does not follow the XenbusState handshake).
    pub(super) primary_console: bool,
}

/// The `script` node's value: the script named in the spec (or `default`), made absolute in
/// the host's script directory when the toolstack runs the scripts.
pub(super) fn script_node(scripts: &std::path::Path, named: Option<&str>, default: &str) -> String {
    let name = named.unwrap_or(default);
    match name.starts_with('/') {
        false => scripts.join(name).display().to_string(),
        true => name.to_owned(),
    }
}

pub(super) fn disk_nodes(spec: &DiskSpec, devid: u32, scripts: &std::path::Path) -> Nodes {
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

pub(super) fn nic_nodes(spec: &VifSpec, devid: u32, scripts: &std::path::Path) -> Nodes {
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

pub(super) fn vkb_nodes(spec: &VifSpec) -> Nodes {
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
pub(super) const CONSOLE_PROTOCOL: &str = "vt100";

/// How much console output the backend buffers, bytes (`LIBXL_XENCONSOLE_LIMIT`).
pub(super) const CONSOLE_LIMIT: &str = "1048576";

/// A console's nodes, as `libxl__device_console_add` writes them: the primary one (devid 0)
/// with its event channel `port` and ring `ring-ref` when creation set them up; a secondary
/// one (a channel) with its `name` and the frontend `state`/`protocol` of the handshake.
pub(super) fn console_nodes(spec: &VifSpec, devid: u32, ring: Option<(u32, Option<u64>)>) -> Nodes {
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
        if let Some((port, ring_ref)) = ring {
            n.frontend_ro.push(("port", port.to_string()));
            if let Some(r) = ring_ref {
                n.frontend_ro.push(("ring-ref", r.to_string()));
            }
        }
    } else {
        n.frontend.push(("protocol", CONSOLE_PROTOCOL.into()));
    }
    n
}

pub(super) fn keyed_nodes(
    kind: DeviceKind,
    spec: &VifSpec,
    devid: u32,
    scripts: &std::path::Path,
) -> Nodes {
    match kind {
        DeviceKind::Vkb => vkb_nodes(spec),
        DeviceKind::Console => console_nodes(spec, devid, None),
        _ => nic_nodes(spec, devid, scripts),
    }
}

/// Writes the three directories of a new device in one transaction, refusing if any exists.
pub(super) fn write_device(
    host: &Host,
    dev: DeviceRef,
    backend: DomId,
    nodes: &Nodes,
) -> Result<()> {
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
    // Every node in one pipelined batch (the transaction's only other requests are the
    // existence checks, pipelined too): some forty changes for a disk, which one by one cost
    // a round trip to xenstored each.
    let mut b = Batch::new();
    b.write_with_perms(&fe, "", fe_dir_perms);
    b.write_with_perms(&be, "", &be_perms);
    let fw = |b: &mut Batch, k: &str, v: &str| {
        b.write_with_perms(format!("{fe}/{k}"), v, &fe_perms);
    };
    let bw = |b: &mut Batch, k: &str, v: &str| {
        b.write_with_perms(format!("{be}/{k}"), v, &be_perms);
    };
    let rw = |b: &mut Batch, k: &str, v: &str| {
        b.write_with_perms(format!("{fe}/{k}"), v, &ro_perms);
    };
    // libxl writes `backend` with the directory's permissions.
    if nodes.primary_console {
        rw(&mut b, "backend", &be);
    } else {
        fw(&mut b, "backend", &be);
    }
    fw(&mut b, "backend-id", &backend.to_string());
    if !nodes.primary_console {
        fw(&mut b, "state", "1");
    }
    for (k, v) in &nodes.frontend {
        fw(&mut b, k, v);
    }
    for (k, v) in &nodes.frontend_ro {
        rw(&mut b, k, v);
    }
    bw(&mut b, "frontend", &fe);
    bw(&mut b, "frontend-id", &dev.domid.to_string());
    bw(&mut b, "online", "1");
    bw(&mut b, "state", "1");
    for (k, v) in &nodes.backend {
        bw(&mut b, k, v);
    }
    b.write_with_perms(&lx, "", &lx_perms);
    b.write(format!("{lx}/frontend"), &fe);
    b.write(format!("{lx}/backend"), &be);
    // A copy of the backend's entries, as libxl keeps one (libxl__device_generic_add): Xen's
    // own tools read a device's config from there (`xl block-list` fails on a disk whose
    // record lacks `type`, `mode`, `dev`, ...).
    b.write(format!("{lx}/frontend-id"), dev.domid.to_string());
    b.write(format!("{lx}/online"), "1");
    b.write(format!("{lx}/state"), "1");
    for (k, v) in &nodes.backend {
        b.write(format!("{lx}/{k}"), v);
    }
    let dom = dom_path(dev.domid);
    let mut exists_already = None;
    host.xs
        .transaction(|t| {
            exists_already = None;
            // The domain must still be there (its home directory is removed by destroy), and
            // none of the device's directories may be.
            let found = t.read_many_opt(&[&dom, &fe, &be, &lx]);
            let mut found = found.into_iter();
            if found.next().transpose()?.flatten().is_none() {
                exists_already = Some(DeviceError::DomainGone);
                return Ok(());
            }
            for f in found {
                if f?.is_some() {
                    exists_already = Some(DeviceError::NodesExist);
                    return Ok(());
                }
            }
            t.apply(&b)
        })
        .map_err(xs_err(dev, "cannot write its xenstore nodes"))?;
    match exists_already {
        Some(why) => Err(dev_err(dev, why)),
        None => Ok(()),
    }
}

/// Removes a device's three directories in one transaction; missing ones are fine.
pub(super) fn rm_device(host: &Host, dev: DeviceRef, backend: DomId) -> Result<()> {
    let paths = [
        dev.frontend_path(),
        dev.backend_path(backend),
        dev.libxl_path(),
    ];
    host.xs
        .transaction(|t| {
            for p in &paths {
                rm_if_present(t, p)?;
            }
            Ok(())
        })
        .map_err(xs_err(dev, "cannot remove its xenstore nodes"))
}

/// The device ids of `kind` that xenstore has for `domid` (frontends and toolstack records).
pub(super) fn xenstore_devids(host: &Host, domid: DomId, kind: DeviceKind) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for dir in [
        format!("{}/device/{}", dom_path(domid), kind.xenstore_name()),
        format!("/libxl/{domid}/device/{}", kind.xenstore_name()),
    ] {
        let names = host
            .xs
            .directory_opt(&dir)
            .map_err(|source| Error::Xenstore {
                domain: DomainRef::id(domid),
                what: "cannot list its devices",
                source,
            })?;
        ids.extend(names.iter().flatten().filter_map(|n| n.parse::<u32>().ok()));
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Every device xenstore has for `domid`: frontends, toolstack records, and backends in every
/// domain's `backend/` directory.
pub(super) fn xenstore_devices(host: &Host, domid: DomId) -> Result<Vec<(String, DeviceRef)>> {
    let ls = |p: &str| -> Result<Vec<String>> {
        let names = host.xs.directory_opt(p).map_err(|source| Error::Xenstore {
            domain: DomainRef::id(domid),
            what: "cannot list its devices",
            source,
        })?;
        Ok(names.unwrap_or_default())
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

/// Removes every backend directory of domain `domid`'s devices, in every domain's `backend/`
/// (for destroy; the frontends and toolstack records go with the domain's own directories).
pub(crate) fn rm_backends(t: &xenstore::Transaction<'_>, domid: DomId) -> xenstore::Result<()> {
    for b in t.directory_opt("/local/domain")?.unwrap_or_default() {
        for kind in DeviceKind::ALL {
            let p = format!("/local/domain/{b}/backend/{}/{domid}", kind.xenstore_name());
            rm_if_present(t, &p)?;
        }
    }
    Ok(())
}

/// The backend domain of a device that xenstore has, from the toolstack's record or, failing
/// that, from whichever domain's `backend/` holds it.
pub(super) fn backend_of(host: &Host, dev: DeviceRef) -> Result<Option<DomId>> {
    let recorded = read_opt(host, dev, &format!("{}/backend", dev.libxl_path()))?;
    if let Some(b) = recorded.as_deref().and_then(domid_of_path) {
        return Ok(Some(b));
    }
    let doms = host
        .xs
        .directory_opt("/local/domain")
        .map_err(xs_err(dev, "cannot list the backend domains"))?
        .unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_nodes_follow_libxl() {
        let spec = DiskSpec::parse("/i.qcow2,qcow2,hdc,ro,devtype=cdrom").expect("spec");
        let n = disk_nodes(&spec, 5632, std::path::Path::new("/etc/xen/scripts"));
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
