//! libxl's stored domain config: the `libxl_domain_config` JSON that libxl keeps per domain as
//! userdata (`/var/lib/xen/userdata-d.<domid>.<uuid>.libxl-json`) and that `xl list -l`,
//! `xl save` and device hot-plug read back.
//!
//! The document is what libxl 4.17's generated `libxl_domain_config_gen_json` writes
//! (`tools/libs/light/libxl_types.idl`): a map per IDL struct, enums as their lower-case
//! names, a keyed union under `<keyvar>.<case>` (`"type.pv"`), UUIDs in the hyphenated form,
//! bitmaps as arrays of the set bits, defbools as `"True"`/`"False"`, and fields at their
//! default left out (libxl's parser fills them in). We write the fields our [`DomainConfig`]
//! knows:
//!
//! - `c_info`: `type`, `name`, `uuid`, `run_hotplug_scripts`;
//! - `b_info`: `max_vcpus`, `avail_vcpus`, `max_memkb`, `target_memkb`, `video_memkb` (0),
//!   `kernel`, `ramdisk`, `cmdline`, and the union case `type.pv` or `type.pvh` (which is what
//!   tells libxl's parser the build type; without it `xl list -l` would abort);
//! - `disks`: `pdev_path`, `vdev`, `backend`, `format`, `script`, `removable`, `readwrite`,
//!   `is_cdrom`, `backend_domid`/`backend_domname`;
//! - `nics`: `devid`, `mac`, `ip`, `bridge`, `ifname`, `script`, `model`, `nictype`,
//!   `backend_domid`/`backend_domname`, `gatewaydev`, `mtu`;
//! - `vkbs`: `devid`, `backend_type`, `unique_id`, `backend_domid`/`backend_domname`;
//! - `on_poweroff`, `on_reboot`, `on_crash`, `on_watchdog`.
//!
//! libxl writes the document at creation and rewrites it when a device is added or removed,
//! all under the domain's userdata lock; `libxl_set_memory_target` and
//! `libxl_domain_setmaxmem` only read it (for the arch's extra memory), and `xl list -l` takes
//! memory, name, UUID and vcpus from Xen and xenstore, not from the document.
//! [`crate::config::stored::ConfigStore`] keeps it to the same rules.

use serde::Serialize;
use uuid::Uuid;

use super::{Action, DiskAccess, DiskSpec, DomainConfig, DomainType, VifSpec};
use crate::lock::DomId;

/// libxl's `userdata_userid` of the stored domain config.
pub const USERID: &str = "libxl-json";

/// `libxl_domain_config`, as much of it as a [`DomainConfig`] says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LibxlDomainConfig {
    /// `libxl_domain_create_info`.
    pub c_info: CreateInfo,
    /// `libxl_domain_build_info`.
    pub b_info: BuildInfo,
    /// `libxl_device_disk` each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    /// `libxl_device_nic` each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<Nic>,
    /// `libxl_device_vkb` each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vkbs: Vec<Vkb>,
    /// `libxl_action_on_shutdown`, lower case.
    pub on_poweroff: &'static str,
    /// As `on_poweroff`.
    pub on_reboot: &'static str,
    /// As `on_poweroff`.
    pub on_crash: &'static str,
    /// As `on_poweroff`.
    pub on_watchdog: &'static str,
}

/// `libxl_domain_create_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateInfo {
    /// `libxl_domain_type`: `pv` or `pvh`.
    #[serde(rename = "type")]
    pub domain_type: &'static str,
    /// The domain's name.
    pub name: String,
    /// Xen's handle, hyphenated.
    pub uuid: String,
    /// A defbool: whether the toolstack runs the hotplug scripts (ours does, as libxl).
    pub run_hotplug_scripts: &'static str,
}

/// `libxl_domain_build_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildInfo {
    /// vCPUs.
    pub max_vcpus: u32,
    /// The vCPUs online at creation (all): the set bits.
    pub avail_vcpus: Vec<u32>,
    /// `memory/static-max`, KiB.
    pub max_memkb: u64,
    /// The memory target, KiB.
    pub target_memkb: u64,
    /// Video RAM, KiB: none for PV and PVH.
    pub video_memkb: u64,
    /// The kernel image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// The kernel command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// The initial ramdisk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ramdisk: Option<String>,
    /// The `u` keyed union's PV case (present for a PV guest).
    #[serde(rename = "type.pv", skip_serializing_if = "Option::is_none")]
    pub type_pv: Option<PvInfo>,
    /// The `u` keyed union's PVH case (present for a PVH guest).
    #[serde(rename = "type.pvh", skip_serializing_if = "Option::is_none")]
    pub type_pvh: Option<PvhInfo>,
}

/// The PV case of `libxl_domain_build_info.u`: its fields are deprecated in favour of the
/// top-level `kernel`, `ramdisk` and `cmdline`, so it is written empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PvInfo {}

/// The PVH case of `libxl_domain_build_info.u` (no shim: written empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PvhInfo {}

/// `libxl_device_disk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    /// The backend domain, by id (`backend=` as a number).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_domid: Option<u32>,
    /// The backend domain, by name (`backend=` as a name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_domname: Option<String>,
    /// The image or block device (none: an empty CD-ROM drive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pdev_path: Option<String>,
    /// The guest's device name.
    pub vdev: String,
    /// `libxl_disk_backend` (`backendtype=`), when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'static str>,
    /// `libxl_disk_format`, when given and known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<&'static str>,
    /// The hotplug script (`script=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// 1 for a CD-ROM.
    pub removable: u32,
    /// 1 for read-write.
    pub readwrite: u32,
    /// 1 for a CD-ROM.
    pub is_cdrom: u32,
}

/// `libxl_device_nic`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nic {
    /// The backend domain, by id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_domid: Option<u32>,
    /// The backend domain, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_domname: Option<String>,
    /// The device id.
    pub devid: u32,
    /// The MTU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The emulated model (HVM only; recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The MAC address, `xx:xx:xx:xx:xx:xx`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// IP addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The bridge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// The backend interface's name (`vifname=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// The hotplug script.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// `libxl_nic_type`: `vif` or `vif_ioemu`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nictype: Option<&'static str>,
    /// The gateway device (`gatewaydev=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gatewaydev: Option<String>,
}

/// `libxl_device_vkb`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vkb {
    /// The backend domain, by id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_domid: Option<u32>,
    /// The backend domain, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_domname: Option<String>,
    /// The device id.
    pub devid: u32,
    /// `libxl_vkb_backend`: `qemu` or `linux`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_type: Option<&'static str>,
    /// The unique id (`unique-id=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique_id: Option<String>,
}

/// libxl's name of an action (`libxl_action_on_shutdown_to_string`).
pub fn action_name(a: Action) -> &'static str {
    match a {
        Action::Destroy => "destroy",
        Action::Restart => "restart",
        Action::RenameRestart => "restart_rename",
        Action::Preserve => "preserve",
        Action::CoredumpDestroy => "coredump_destroy",
        Action::CoredumpRestart => "coredump_restart",
        Action::SoftReset => "soft_reset",
    }
}

/// `backend=`: a domain id if it is a number, else a name.
fn backend_domain(v: Option<&str>) -> (Option<u32>, Option<String>) {
    match v {
        None | Some("") => (None, None),
        Some(v) => match v.parse::<u32>() {
            Ok(id) => (Some(id), None),
            Err(_) => (None, Some(v.to_owned())),
        },
    }
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> Option<&'a str> {
    settings
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn disk(d: &DiskSpec) -> Disk {
    let other = |k: &str| setting(&d.other, k);
    let (backend_domid, backend_domname) = backend_domain(other("backend"));
    let backend = match other("backendtype") {
        Some("phy") => Some("phy"),
        Some("tap") => Some("tap"),
        Some("qdisk") => Some("qdisk"),
        Some("standalone") => Some("standalone"),
        _ => None,
    };
    let format = match d.format.as_deref() {
        Some("raw") => Some("raw"),
        Some("qcow") => Some("qcow"),
        Some("qcow2") => Some("qcow2"),
        Some("vhd") => Some("vhd"),
        Some("qed") => Some("qed"),
        Some("empty") => Some("empty"),
        _ => None,
    };
    Disk {
        backend_domid,
        backend_domname,
        pdev_path: d.target.clone(),
        vdev: d.vdev.clone(),
        backend,
        format,
        script: other("script").map(str::to_owned),
        removable: u32::from(d.cdrom),
        readwrite: u32::from(d.access == DiskAccess::ReadWrite),
        is_cdrom: u32::from(d.cdrom),
    }
}

fn nic(index: usize, v: &VifSpec) -> Nic {
    let get = |k: &str| setting(&v.settings, k).map(str::to_owned);
    let (backend_domid, backend_domname) = backend_domain(setting(&v.settings, "backend"));
    Nic {
        backend_domid,
        backend_domname,
        devid: devid(&v.settings, index),
        mtu: setting(&v.settings, "mtu").and_then(|m| m.parse().ok()),
        model: get("model"),
        mac: get("mac").map(|m| m.to_ascii_lowercase()),
        ip: get("ip"),
        bridge: get("bridge"),
        ifname: get("vifname"),
        script: get("script"),
        nictype: match setting(&v.settings, "type") {
            Some("vif") => Some("vif"),
            Some("ioemu") => Some("vif_ioemu"),
            _ => None,
        },
        gatewaydev: get("gatewaydev"),
    }
}

fn vkb(index: usize, v: &VifSpec) -> Vkb {
    let (backend_domid, backend_domname) = backend_domain(setting(&v.settings, "backend"));
    Vkb {
        backend_domid,
        backend_domname,
        devid: devid(&v.settings, index),
        backend_type: match setting(&v.settings, "backend-type") {
            Some("qemu") => Some("qemu"),
            Some("linux") => Some("linux"),
            _ => None,
        },
        unique_id: setting(&v.settings, "unique-id").map(str::to_owned),
    }
}

/// The recorded `devid=`, else the position (libxl numbers devices from 0 in config order).
fn devid(settings: &[(String, String)], index: usize) -> u32 {
    setting(settings, "devid")
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| u32::try_from(index).unwrap_or(u32::MAX))
}

impl LibxlDomainConfig {
    /// libxl's document for `config`, a domain whose Xen handle is `uuid`.
    pub fn new(config: &DomainConfig, uuid: Uuid) -> Self {
        let (domain_type, type_pv, type_pvh) = match config.domain_type {
            DomainType::Pv => ("pv", Some(PvInfo {}), None),
            DomainType::Pvh => ("pvh", None, Some(PvhInfo {})),
        };
        LibxlDomainConfig {
            c_info: CreateInfo {
                domain_type,
                name: config.name.clone(),
                uuid: uuid.hyphenated().to_string(),
                // True on every host: the toolstack runs the hotplug scripts itself (Xen's,
                // or the simulated host's stubs), as libxl does with this set
                // (`device/hotplug.rs`); no udev rule or backend runs them for it.
                run_hotplug_scripts: "True",
            },
            b_info: BuildInfo {
                max_vcpus: config.vcpus,
                avail_vcpus: (0..config.vcpus).collect(),
                max_memkb: config.maxmem_kib,
                target_memkb: config.memory_kib,
                video_memkb: 0,
                kernel: config.kernel.clone(),
                cmdline: config.kernel_cmdline(),
                ramdisk: config.ramdisk.clone(),
                type_pv,
                type_pvh,
            },
            disks: config.disks.iter().map(disk).collect(),
            nics: config
                .vifs
                .iter()
                .enumerate()
                .map(|(i, v)| nic(i, v))
                .collect(),
            vkbs: config
                .vkbs
                .iter()
                .enumerate()
                .map(|(i, v)| vkb(i, v))
                .collect(),
            on_poweroff: action_name(config.on_poweroff),
            on_reboot: action_name(config.on_reboot),
            on_crash: action_name(config.on_crash),
            on_watchdog: action_name(config.on_watchdog),
        }
    }

    /// The document as libxl stores it: pretty-printed JSON ending in a NUL, as
    /// `libxl__set_domain_configuration` stores `strlen + 1` bytes.
    pub fn to_userdata(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self)
            .expect("a LibxlDomainConfig has string keys and no fallible Serialize impls");
        out.push(b'\n');
        out.push(0);
        out
    }
}

/// libxl's file name of domain `domid`'s stored config (`libxl__userdata_path(.., "libxl-json",
/// "d")`).
pub fn userdata_file_name(domid: DomId, uuid: Uuid) -> String {
    crate::lock::libxl_userdata_name('d', domid, uuid, USERID)
}
