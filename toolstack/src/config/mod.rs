//! What a domain is: the configuration types shared by the xl.cfg parser ([`xlcfg`]) and the
//! stored domain config ([`stored`]).
//!
//! A [`DomainConfig`] is what `xl create` is asked for, after defaults: name, type (PV or PVH),
//! memory and maxmem, vcpus, uuid, the kernel/ramdisk/command line (recorded; loading comes
//! later), the disk and vif specs (recorded, parsed into fields minimally), and the actions on
//! poweroff, reboot and crash. Memory is kept in KiB, as libxl keeps it (`target_memkb`,
//! `max_memkb`) and as xenstore's `memory/target` and `memory/static-max` hold it; xl.cfg speaks
//! MiB.

pub mod libxl;
pub mod stored;
#[cfg(test)]
mod tests;
pub mod xlcfg;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
pub use uuid::Uuid;

/// The guest type. HVM is not supported by this toolstack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DomainType {
    /// Paravirtualised (xl's default when `type` is not given).
    #[default]
    Pv,
    /// PVH: hardware virtualisation without emulated devices.
    Pvh,
}

impl DomainType {
    /// The xl.cfg spelling: `pv` or `pvh`.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainType::Pv => "pv",
            DomainType::Pvh => "pvh",
        }
    }
}

impl fmt::Display for DomainType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DomainType {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "pv" => Ok(DomainType::Pv),
            "pvh" => Ok(DomainType::Pvh),
            _ => Err(UnknownName {
                found: s.to_owned(),
                expected: "pv or pvh",
            }),
        }
    }
}

/// How the guest's time stamp counter is provided (xl.cfg `tsc_mode`, libxl's
/// `libxl_tsc_mode`; Xen's `TSC_MODE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TscMode {
    /// Xen decides: native when the host's TSC is safe, emulated otherwise.
    #[default]
    Default,
    /// Always emulate `rdtsc`.
    AlwaysEmulate,
    /// Never emulate. PVH guests need it under QEMU's TCG, whose TSC Xen does not trust.
    Native,
}

impl TscMode {
    /// Every mode, in libxl's order (its numeric values 0, 1, 2).
    pub const ALL: [TscMode; 3] = [TscMode::Default, TscMode::AlwaysEmulate, TscMode::Native];

    /// The xl.cfg spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TscMode::Default => "default",
            TscMode::AlwaysEmulate => "always_emulate",
            TscMode::Native => "native",
        }
    }

    /// Xen's `TSC_MODE_*` value.
    pub fn xen(self) -> xenctrl::TscMode {
        match self {
            TscMode::Default => xenctrl::TscMode::DEFAULT,
            TscMode::AlwaysEmulate => xenctrl::TscMode::ALWAYS_EMULATE,
            TscMode::Native => xenctrl::TscMode::NEVER_EMULATE,
        }
    }

    /// Whether this is [`TscMode::Default`] (not written to a stored config).
    pub fn is_default(&self) -> bool {
        *self == TscMode::Default
    }
}

impl FromStr for TscMode {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        TscMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownName {
                found: s.to_owned(),
                expected: "default, always_emulate or native (native_paravirt was removed \
                           from Xen)",
            })
    }
}

/// What to do when the guest powers off, reboots or crashes (xl.cfg `on_poweroff`, `on_reboot`,
/// `on_crash`; libxl's `libxl_action_on_shutdown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Destroy the domain.
    Destroy,
    /// Destroy the domain and create a new one with the same configuration.
    Restart,
    /// Keep the domain, for inspection.
    Preserve,
    /// Rename the old domain and create a new one with the same configuration.
    RenameRestart,
    /// Write a core dump, then destroy.
    CoredumpDestroy,
    /// Write a core dump, then restart.
    CoredumpRestart,
    /// Reset the domain in place (`SHUTDOWN_soft_reset`).
    SoftReset,
}

impl Action {
    /// Every action, in xl.cfg(5)'s order.
    pub const ALL: [Action; 7] = [
        Action::Destroy,
        Action::Restart,
        Action::RenameRestart,
        Action::Preserve,
        Action::CoredumpDestroy,
        Action::CoredumpRestart,
        Action::SoftReset,
    ];

    /// [`Action::Destroy`], the default of `on_poweroff`, `on_crash` and `on_watchdog`.
    pub fn destroy() -> Action {
        Action::Destroy
    }

    /// The xl.cfg spelling, e.g. `rename-restart`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Destroy => "destroy",
            Action::Restart => "restart",
            Action::Preserve => "preserve",
            Action::RenameRestart => "rename-restart",
            Action::CoredumpDestroy => "coredump-destroy",
            Action::CoredumpRestart => "coredump-restart",
            Action::SoftReset => "soft-reset",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownName {
                found: s.to_owned(),
                expected: "destroy, restart, rename-restart, preserve, coredump-destroy, \
                           coredump-restart or soft-reset",
            })
    }
}

/// A word that is not one of the accepted names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, found {found:?}")]
pub struct UnknownName {
    /// What was found.
    pub found: String,
    /// The accepted names, as a phrase.
    pub expected: &'static str,
}

/// A disk's access mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DiskAccess {
    /// Read-write (`rw` or `w`; the default).
    #[default]
    ReadWrite,
    /// Read-only (`ro` or `r`; the default for a CD-ROM).
    ReadOnly,
}

/// Why a disk or vif spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{spec:?}: {reason}")]
pub struct SpecError {
    /// The spec.
    pub spec: String,
    /// What is wrong with it, as a sentence fragment.
    pub reason: String,
}

/// One `disk=[...]` entry (xl-disk-configuration(5)), recorded as written and parsed minimally.
///
/// Comma-separated parts; each, after leading whitespace, is a flag (`cdrom`, `discard`,
/// `no-discard`, `direct-io-safe`, `trusted`, `untrusted`), a `key=value` (`target=` takes the
/// rest of the spec, commas and all), or the next of the positional parameters `target`,
/// `format`, `vdev`, `access`. An empty value means "default". `vdev` is required. Stored and
/// serialised as the spec string, so the fields always agree with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DiskSpec {
    /// The spec as written.
    pub spec: String,
    /// The block device or image path, if any (none: an empty CD-ROM drive).
    pub target: Option<String>,
    /// The image format (`raw`, `qcow2`, ...), if given.
    pub format: Option<String>,
    /// The virtual device name the guest sees (`xvda`, `hdc`, ...).
    pub vdev: String,
    /// Read-write or read-only.
    pub access: DiskAccess,
    /// Whether this is a CD-ROM (`cdrom` flag or `devtype=cdrom`).
    pub cdrom: bool,
    /// The other keys and flags, in order (a flag has an empty value).
    pub other: Vec<(String, String)>,
}

const DISK_FLAGS: [&str; 6] = [
    "cdrom",
    "discard",
    "no-discard",
    "direct-io-safe",
    "trusted",
    "untrusted",
];

impl DiskSpec {
    /// Parses a disk spec.
    ///
    /// # Errors
    ///
    /// [`SpecError`] for a parameter given twice, too many positional parameters, an unknown
    /// access mode, or a missing `vdev`.
    pub fn parse(spec: &str) -> Result<DiskSpec, SpecError> {
        let err = |reason: String| SpecError {
            spec: spec.to_owned(),
            reason,
        };
        let mut named: [Option<String>; 4] = Default::default();
        const NAMES: [&str; 4] = ["target", "format", "vdev", "access"];
        let mut next_positional = 0;
        let mut cdrom = false;
        let mut other = Vec::new();
        let mut rest = spec;
        loop {
            let (part, more) = match rest.find(',') {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            let part = part.trim_start_matches([' ', '\t', '\n']);
            if let Some(target) = part.strip_prefix("target=") {
                // `target=` consumes the rest of the spec, commas included.
                let whole = match more {
                    Some(m) => format!("{target},{m}"),
                    None => target.to_owned(),
                };
                if named[0].is_some() {
                    return Err(err("target is given twice".into()));
                }
                named[0] = Some(whole);
                break;
            }
            if DISK_FLAGS.contains(&part) {
                if part == "cdrom" {
                    cdrom = true;
                } else {
                    other.push((part.to_owned(), String::new()));
                }
            } else if let Some((k, v)) = part.split_once('=') {
                if let Some(i) = NAMES.iter().position(|n| *n == k) {
                    if named[i].is_some() {
                        return Err(err(format!("{k} is given twice")));
                    }
                    named[i] = Some(v.to_owned());
                } else if k == "devtype" {
                    match v {
                        "cdrom" => cdrom = true,
                        "disk" | "" => {}
                        _ => return Err(err(format!("expected devtype=cdrom, found {v:?}"))),
                    }
                } else if k.is_empty() {
                    return Err(err(format!("a parameter has no name: {part:?}")));
                } else {
                    other.push((k.to_owned(), v.to_owned()));
                }
            } else {
                while next_positional < 4 && named[next_positional].is_some() {
                    next_positional += 1;
                }
                if next_positional == 4 {
                    return Err(err(format!(
                        "too many positional parameters at {part:?} (expected at most \
                         target, format, vdev, access)"
                    )));
                }
                named[next_positional] = Some(part.to_owned());
                next_positional += 1;
            }
            match more {
                Some(m) => rest = m,
                None => break,
            }
        }
        let [target, format, vdev, access] = named.map(|v| v.filter(|s| !s.is_empty()));
        let access = match access.as_deref() {
            None => {
                if cdrom {
                    DiskAccess::ReadOnly
                } else {
                    DiskAccess::ReadWrite
                }
            }
            Some("rw" | "w") => DiskAccess::ReadWrite,
            Some("ro" | "r") => DiskAccess::ReadOnly,
            Some(a) => return Err(err(format!("expected access rw, w, ro or r, found {a:?}"))),
        };
        let vdev = vdev.ok_or_else(|| err("no vdev (the guest's device name) is given".into()))?;
        Ok(DiskSpec {
            spec: spec.to_owned(),
            target,
            format,
            vdev,
            access,
            cdrom,
            other,
        })
    }
}

impl TryFrom<String> for DiskSpec {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        DiskSpec::parse(&s)
    }
}

impl From<DiskSpec> for String {
    fn from(d: DiskSpec) -> String {
        d.spec
    }
}

/// One `vif=[...]` entry (xl-network-configuration(5)), recorded as written and parsed into its
/// `key=value` settings. Serialised as the spec string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VifSpec {
    /// The spec as written.
    pub spec: String,
    /// The settings, in order, keys and values trimmed of surrounding whitespace.
    pub settings: Vec<(String, String)>,
}

impl VifSpec {
    /// Parses a vif spec: comma-separated `key=value` pairs (an empty spec means all defaults).
    /// A `mac=` must be six colon-separated hex bytes.
    ///
    /// # Errors
    ///
    /// [`SpecError`] for a part without `=`, an empty key, a key given twice, or a malformed MAC.
    pub fn parse(spec: &str) -> Result<VifSpec, SpecError> {
        let err = |reason: String| SpecError {
            spec: spec.to_owned(),
            reason,
        };
        let mut settings: Vec<(String, String)> = Vec::new();
        for part in spec.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let Some((k, v)) = part.split_once('=') else {
                return Err(err(format!("expected key=value, found {part:?}")));
            };
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(err(format!("a parameter has no name: {part:?}")));
            }
            if settings.iter().any(|(kk, _)| kk == k) {
                return Err(err(format!("{k} is given twice")));
            }
            if k == "mac" && !is_mac(v) {
                return Err(err(format!(
                    "expected a MAC address like 00:16:3e:12:34:56, found {v:?}"
                )));
            }
            settings.push((k.to_owned(), v.to_owned()));
        }
        Ok(VifSpec {
            spec: spec.to_owned(),
            settings,
        })
    }

    /// Parses a channel spec (xl.cfg `channel=[...]`, libxl's `libxl_device_channel`): the
    /// syntax of a vif spec, with a non-empty `name=` (what the guest finds the console by)
    /// and `connection=pty`. A `devid=`, if given, must be a number from 1 up: console 0 is
    /// the domain's primary console.
    ///
    /// `connection=socket` is refused: libxl has QEMU proxy such a channel to a socket, and
    /// this toolstack runs no device model.
    ///
    /// # Errors
    ///
    /// [`SpecError`] for what [`VifSpec::parse`] refuses, a missing or empty name, a
    /// connection other than `pty`, or a bad devid.
    pub fn parse_channel(spec: &str) -> Result<VifSpec, SpecError> {
        let v = VifSpec::parse(spec)?;
        let err = |reason: String| SpecError {
            spec: spec.to_owned(),
            reason,
        };
        if v.get("name").is_none_or(str::is_empty) {
            return Err(err(
                "a channel needs a name (name=...), by which the guest finds it".into(),
            ));
        }
        match v.get("connection") {
            Some("pty") => {}
            None => {
                return Err(err(
                    "a channel needs connection=pty (where should it be connected?)".into(),
                ))
            }
            Some("socket") => {
                return Err(err(
                    "connection=socket needs a device model to proxy it, which this toolstack \
                     does not run; use connection=pty"
                        .into(),
                ))
            }
            Some(c) => return Err(err(format!("expected connection=pty, found {c:?}"))),
        }
        if let Some(d) = v.get("devid") {
            match d.parse::<u32>() {
                Ok(n) if n >= 1 => {}
                Ok(_) => {
                    return Err(err(
                        "devid 0 is the primary console; channels are numbered from 1".into(),
                    ))
                }
                Err(_) => return Err(err(format!("devid must be a number, found {d:?}"))),
            }
        }
        Ok(v)
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The MAC address, if set.
    pub fn mac(&self) -> Option<&str> {
        self.get("mac")
    }

    /// The bridge, if set.
    pub fn bridge(&self) -> Option<&str> {
        self.get("bridge")
    }
}

fn is_mac(v: &str) -> bool {
    let parts: Vec<&str> = v.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl TryFrom<String> for VifSpec {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        VifSpec::parse(&s)
    }
}

impl From<VifSpec> for String {
    fn from(v: VifSpec) -> String {
        v.spec
    }
}

/// An xl.cfg value kept as written, for keys this toolstack does not interpret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CfgValue {
    /// A quoted string (unescaped).
    String(String),
    /// A number, as its text (`0x10`, `010`, `16`).
    Number(String),
    /// A list, possibly nested.
    List(Vec<CfgValue>),
}

/// The default memory when xl.cfg gives none: libxl's `LIBXL_MEMKB_DEFAULT` resolves to 32 MiB.
pub const DEFAULT_MEMORY_KIB: u64 = 32 * 1024;

/// The longest domain name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// A domain's configuration, after defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainConfig {
    /// The domain's name (see [`validate_name`]).
    pub name: String,
    /// PV or PVH.
    #[serde(rename = "type")]
    pub domain_type: DomainType,
    /// The memory target at creation, KiB (xl.cfg `memory`, MiB).
    pub memory_kib: u64,
    /// The maximum memory, KiB (xl.cfg `maxmem`; defaults to `memory`).
    pub maxmem_kib: u64,
    /// The number of vcpus (at least 1).
    pub vcpus: u32,
    /// The domain's UUID: given in xl.cfg, or chosen at creation.
    pub uuid: Option<Uuid>,
    /// The kernel image path: creation loads it (PV and PVH); without one the domain is
    /// created empty and paused.
    pub kernel: Option<String>,
    /// The initial ramdisk path.
    pub ramdisk: Option<String>,
    /// Text appended to the kernel command line (xl.cfg `extra`).
    pub extra: Option<String>,
    /// The root device, given to the kernel as `root=` (xl.cfg `root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// The whole kernel command line (xl.cfg `cmdline`; `root` and `extra` are then ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// How the guest's TSC is provided (xl.cfg `tsc_mode`).
    #[serde(default, skip_serializing_if = "TscMode::is_default")]
    pub tsc_mode: TscMode,
    /// The disks.
    pub disks: Vec<DiskSpec>,
    /// The network interfaces.
    pub vifs: Vec<VifSpec>,
    /// The virtual keyboards (xl.cfg `vkb=[...]`): `key=value` settings, the syntax of a vif
    /// spec (`backend-type=`, `unique-id=`, `devid=`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vkbs: Vec<VifSpec>,
    /// The PV consoles, as `key=value` settings with their `devid=`: the primary console
    /// (`devid=0`, which creation adds to every domain; see [`crate::device`]) and the
    /// secondary ones, libxl's channels (xl.cfg `channel=[ "name=...,connection=pty" ]`,
    /// devid 1 and up).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consoles: Vec<VifSpec>,
    /// What to do on poweroff (default: destroy).
    pub on_poweroff: Action,
    /// What to do on reboot (default: restart).
    pub on_reboot: Action,
    /// What to do on crash (default: destroy).
    pub on_crash: Action,
    /// What to do when the guest's watchdog fired (default: destroy; absent from configs
    /// stored before it was parsed).
    #[serde(default = "Action::destroy")]
    pub on_watchdog: Action,
    /// xl.cfg keys this toolstack does not interpret, kept as written (xl ignores unknown keys;
    /// so do we, but we keep them so the config renders back whole).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: BTreeMap<String, CfgValue>,
}

/// Why a [`DomainConfig`] is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The name breaks [`validate_name`]'s rules.
    #[error("invalid domain name {name:?}: {reason}")]
    Name {
        /// The name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// memory is zero.
    #[error("memory must be at least 1 MiB")]
    NoMemory,
    /// memory is above maxmem.
    #[error("memory ({memory_kib} KiB) is above maxmem ({maxmem_kib} KiB)")]
    MemoryAboveMaxmem {
        /// The memory target.
        memory_kib: u64,
        /// The maximum.
        maxmem_kib: u64,
    },
    /// vcpus is zero.
    #[error("vcpus must be at least 1")]
    NoVcpus,
}

/// Checks a domain name: 1 to [`MAX_NAME_LEN`] characters from `A-Z a-z 0-9 . _ -`, not starting
/// with `-` (it would read as an option) or `.`, and not all digits (it would read as a domid).
///
/// # Errors
///
/// [`ValidationError::Name`] naming the broken rule.
pub fn validate_name(name: &str) -> Result<(), ValidationError> {
    let bad = |reason| {
        Err(ValidationError::Name {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is longer than 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only letters, digits, '.', '_' and '-' are allowed");
    }
    if name.starts_with('-') || name.starts_with('.') {
        return bad("it must not start with '-' or '.'");
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return bad("it must not be all digits (it would read as a domain id)");
    }
    Ok(())
}

impl DomainConfig {
    /// A config named `name` with xl's defaults: PV, 32 MiB, maxmem = memory, 1 vcpu, no uuid,
    /// no kernel, no devices, destroy/restart/destroy.
    pub fn new(name: impl Into<String>) -> Self {
        DomainConfig {
            name: name.into(),
            domain_type: DomainType::Pv,
            memory_kib: DEFAULT_MEMORY_KIB,
            maxmem_kib: DEFAULT_MEMORY_KIB,
            vcpus: 1,
            uuid: None,
            kernel: None,
            ramdisk: None,
            extra: None,
            root: None,
            cmdline: None,
            tsc_mode: TscMode::Default,
            disks: Vec::new(),
            vifs: Vec::new(),
            vkbs: Vec::new(),
            consoles: Vec::new(),
            on_poweroff: Action::Destroy,
            on_reboot: Action::Restart,
            on_crash: Action::Destroy,
            on_watchdog: Action::Destroy,
            unknown: BTreeMap::new(),
        }
    }

    /// The kernel command line, as xl makes it (`parse_cmdline`): `cmdline` if given, else
    /// `root=ROOT EXTRA`, `root=ROOT` or `EXTRA`, else none.
    pub fn kernel_cmdline(&self) -> Option<String> {
        if let Some(c) = &self.cmdline {
            return Some(c.clone());
        }
        match (&self.root, &self.extra) {
            (Some(r), Some(e)) => Some(format!("root={r} {e}")),
            (Some(r), None) => Some(format!("root={r}")),
            (None, Some(e)) => Some(e.clone()),
            (None, None) => None,
        }
    }

    /// Checks the name, memory ≤ maxmem, memory ≥ 1 MiB and vcpus ≥ 1.
    ///
    /// # Errors
    ///
    /// The first rule broken, as a [`ValidationError`].
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name(&self.name)?;
        if self.memory_kib < 1024 {
            return Err(ValidationError::NoMemory);
        }
        if self.memory_kib > self.maxmem_kib {
            return Err(ValidationError::MemoryAboveMaxmem {
                memory_kib: self.memory_kib,
                maxmem_kib: self.maxmem_kib,
            });
        }
        if self.vcpus == 0 {
            return Err(ValidationError::NoVcpus);
        }
        Ok(())
    }
}
