//! Xen interface versions: which hypervisors this crate speaks to, and how their `domctl` and
//! `sysctl` layouts and behaviours differ.
//!
//! # Supported versions
//!
//! One build speaks every Xen release from 4.17 to 4.22. The profile is chosen at open by
//! [`probe`]:
//!
//! | Xen  | domctl | sysctl | profile     | evidence                                              |
//! |------|--------|--------|-------------|-------------------------------------------------------|
//! | 4.17 | `0x15` | `0x15` | 4.17        | real Xen (Debian 12) in every CI run; Debian 12's headers compiled |
//! | 4.18 | `0x16` | `0x15` | 4.18        | facts recorded from the `RELEASE-4.18.0` headers      |
//! | 4.19 | `0x17` | `0x15` | 4.19–4.20   | facts recorded from the `RELEASE-4.19.0` headers      |
//! | 4.20 | `0x17` | `0x15` | 4.19–4.20   | Debian 13's headers compiled in every test run; facts from `RELEASE-4.20.0` |
//! | 4.21 | `0x17` | `0x16` | 4.21        | facts recorded from the `RELEASE-4.21.0` headers      |
//! | 4.22 | `0x18` | `0x16` | 4.22        | facts recorded from the `RELEASE-4.22.0` headers      |
//!
//! Xen checks the `interface_version` field of every `domctl` and `sysctl` and answers `EACCES`
//! when it is not its own. Opening a handle probes both (newest first) and picks the matching
//! [`InterfaceProfile`]; a hypervisor whose versions match no profile (a Xen newer than 4.22,
//! say) is refused with an error naming what it speaks and every version this crate knows.
//! `xen_version`, `memory_op`, `event_channel_op`, `grant_table_op`, `hvm_op`, `mmuext_op`
//! and `sched_op` are stable ABIs and are not versioned. 4.19 and 4.20 speak the same
//! versions and lay out everything this crate uses identically (their recorded facts are
//! equal), so one profile serves both.
//!
//! # Differences as data
//!
//! [`crate::abi`] declares the 4.17 layout. Each profile lists, as data, how the versioned
//! payloads differ from it ([`PayloadLayout`]: fields that move, a new size; fields a version
//! added are sent as zero, which is the 4.17 behaviour) and how the hypervisor behaves
//! differently for what this crate does ([`InterfaceProfile::getdomaininfo_exact`],
//! [`InterfaceProfile::domid_any`], ...). Marshalling ([`InterfaceProfile::encode_domctl`] /
//! [`InterfaceProfile::decode_domctl`]) applies that data to the typed envelope's union bytes,
//! so supporting a newer Xen means adding a row here, recording its facts and testing it, not
//! copying structs. The differences between 4.17 and 4.22 for what this crate uses are:
//!
//! - 4.18 (domctl `0x16`): `XEN_DOMCTL_getdomaininfo` fails with `ESRCH` for a missing domain
//!   instead of describing the next one up (the reason for the bump);
//! - 4.19 (domctl `0x17`): `xen_domctl_createdomain` gains a 4-byte `altp2m_opts` after
//!   `grant_opts`, moving `vmtrace_size`, `cpupool_id` and `arch` 4 bytes up (64 → 68 bytes);
//!   `HVM_PARAM_ALTP2M` becomes read-only (`EEXIST`), set through `altp2m_opts` instead;
//! - 4.20: the same interface versions and layouts as 4.19;
//! - 4.21 (sysctl `0x16`, domctl unchanged): the sysctl bump is for the cpufreq and livepatch
//!   structs, which this crate does not use; `altp2m_opts` becomes `altp2m { u16 opts; u16
//!   nr; }` (same bytes), `XEN_DOMCTL_CDF_trap_unmapped_accesses` (bit 8) and the stable
//!   `XEN_DOMCTL_get_domain_state` are added, and the console ring (`struct
//!   xencons_interface`) gains a `connection` byte that libxenguest's builder sets to
//!   `XENCONSOLE_DISCONNECTED` (1) and xenconsoled clears;
//! - 4.22 (domctl `0x18`): the bump is for an Arm-only field of `xen_arch_domainconfig`; x86
//!   layouts equal 4.21's. `createdomain` of domain 0 now asks for exactly domain 0 (`EEXIST`):
//!   "any free domain id" is spelt `DOMID_ANY` (`0x7FF5`), which every earlier version also
//!   reads as "any" (they search for a free id for 0 and for every reserved id).
//!
//! `vcpu_guest_context`, `hvm_hw_cpu`, `start_info`, `hvm_start_info`, `getdomaininfo`,
//! `physinfo` and every other struct and constant in [`crate::abi`] are the same in all six.
//!
//! # Where the facts come from
//!
//! Each [`XenRelease`] carries the facts recorded from the public headers at its release tag
//! in `xen-project/xen` (`xen/include/public`, plus `struct e820entry` and the `E820_*` types
//! from `tools/include/xenctrl.h`): the `sizeof`, `offsetof` and value of every struct, field
//! and constant of [`crate::abi`] as a C compiler sees them there, written by
//! `scripts/abi-facts` with the same probe program `tests/abi_conformance.rs` compiles. That
//! test checks every profile's data against the facts of each of its releases, and compiles
//! the probe against two real header sets in every run: the host's libxen-dev (Xen 4.17) and
//! Debian 13's libxen-dev (Xen 4.20, fetched by `scripts/fetch-debian13`). The simulator lays
//! out the hypercalls of the release it presents from these facts, not from the profile, so
//! the end-to-end tests catch marshalling that disagrees with the headers.

use nix::errno::Errno;

use crate::abi::envelope::{Envelope, UNION_SIZE};
use crate::abi::layout::AbiLayout;
use crate::abi::{DomId, DomctlPayload, SysctlPayload, XenDomctl, XenSysctl};
use crate::error::Error;

/// A field of a 4.17 payload that sits elsewhere in another interface version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MovedField {
    /// The field's name (as in [`crate::abi::layout::FieldLayout::name`]).
    pub field: &'static str,
    /// Its offset in the other version.
    pub offset: usize,
}

/// How one versioned payload differs from the 4.17 layout in an interface version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadLayout {
    /// The payload's C type, e.g. `struct xen_domctl_createdomain`.
    pub c_type: &'static str,
    /// The member of the envelope's union that holds it, e.g. `u.createdomain`.
    pub union_member: &'static str,
    /// Its size in this version.
    pub size: usize,
    /// 4.17 fields at another offset. Fields not listed keep their offset; bytes no 4.17 field
    /// maps to (fields the version added) are sent as zero and ignored on return.
    pub moved: &'static [MovedField],
}

/// How far a release's support is proven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// The whole VM suite runs on this release under QEMU in every CI run, and a
    /// distribution's headers for it are compiled against in every test run.
    RealXen {
        /// Where the hypervisor and headers come from, e.g. `Debian 12`.
        distribution: &'static str,
    },
    /// A distribution's headers for this release are compiled against in every test run
    /// (every struct, field and constant); the VM suite does not run on it yet.
    DistributionHeaders {
        /// Where the headers come from, e.g. `Debian 13`.
        distribution: &'static str,
    },
    /// Checked against the facts recorded from the release tag's public headers.
    TagHeaders,
}

/// One Xen release, with the header facts recorded from its tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenRelease {
    /// `(major, minor)`, as `XENVER_version` reports it.
    pub version: (u16, u16),
    /// The tag in `xen-project/xen` the facts were recorded from, e.g. `RELEASE-4.19.0`.
    pub tag: &'static str,
    /// The commit that tag names.
    pub commit: &'static str,
    /// How far support for it is proven.
    pub evidence: Evidence,
}

/// The facts recorded from a release tag: `key=value` lines (`sizeof <C type>`, `offsetof <C
/// type> <member>`, `sizeof <C type> <member>`, `const <NAME>`), `#` comments first. A
/// function rather than a field of [`XenRelease`], so that only programs that read them (the
/// simulator, the tests) carry their 35 KiB each.
fn facts_text(tag: &str) -> &'static str {
    match tag {
        "RELEASE-4.17.5" => include_str!("interface/facts/RELEASE-4.17.5.txt"),
        "RELEASE-4.18.0" => include_str!("interface/facts/RELEASE-4.18.0.txt"),
        "RELEASE-4.19.0" => include_str!("interface/facts/RELEASE-4.19.0.txt"),
        "RELEASE-4.20.0" => include_str!("interface/facts/RELEASE-4.20.0.txt"),
        "RELEASE-4.21.0" => include_str!("interface/facts/RELEASE-4.21.0.txt"),
        "RELEASE-4.22.0" => include_str!("interface/facts/RELEASE-4.22.0.txt"),
        _ => "",
    }
}

impl XenRelease {
    /// The recorded header facts, as `(key, value)` pairs (see the module documentation).
    pub fn facts(&self) -> impl Iterator<Item = (&'static str, u64)> {
        facts_text(self.tag).lines().filter_map(|l| {
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.rsplit_once('=')?;
            Some((k, v.parse().ok()?))
        })
    }

    /// One recorded fact, e.g. `fact("offsetof struct xen_domctl_createdomain arch")`.
    pub fn fact(&self, key: &str) -> Option<u64> {
        self.facts().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The recorded facts' header comment (which tag and commit, how they were made).
    pub fn facts_header(&self) -> impl Iterator<Item = &'static str> {
        facts_text(self.tag)
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.trim_start_matches('#').trim())
    }

    /// `4.19`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.version.0, self.version.1)
    }
}

/// One `domctl`/`sysctl` interface generation of Xen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceProfile {
    /// The Xen releases that speak it, e.g. `4.19–4.20`.
    pub xen: &'static str,
    /// Those releases, oldest first, each with its recorded header facts.
    pub releases: &'static [XenRelease],
    /// `XEN_DOMCTL_INTERFACE_VERSION`.
    pub domctl: u32,
    /// `XEN_SYSCTL_INTERFACE_VERSION`.
    pub sysctl: u32,
    /// `getdomaininfo` of a missing domain fails with `ESRCH` (4.18+) rather than describing
    /// the next domain up (4.17).
    pub getdomaininfo_exact: bool,
    /// `HVMOP_set_param` of `HVM_PARAM_ALTP2M` fails with `EEXIST` (4.19+): the altp2m mode is
    /// fixed at creation by `createdomain`'s altp2m options, which this crate leaves 0
    /// (disabled).
    pub hvm_param_altp2m_read_only: bool,
    /// `DOMID_ANY` (4.22+): the domain id that asks `createdomain` for any free id. Earlier
    /// versions search for a free id when given 0 or any reserved id; 4.22 takes 0 as domain
    /// 0 and refuses every reserved id but `DOMID_ANY`.
    pub domid_any: Option<DomId>,
    /// The offset of `connection` in the console ring (`struct xencons_interface`), which
    /// 4.21 added: a domain builder writes `XENCONSOLE_DISCONNECTED` (1) there and xenconsoled
    /// `XENCONSOLE_CONNECTED` (0) once it serves the ring.
    pub console_connection: Option<usize>,
    /// The highest `XEN_DOMCTL_CDF_*` flag (`XEN_DOMCTL_CDF_MAX`).
    pub cdf_max: u32,
    /// Payloads laid out differently from 4.17.
    pub payloads: &'static [PayloadLayout],
}

/// `xen_domctl_createdomain` from 4.19: 4 bytes of altp2m options after `grant_opts`.
const CREATEDOMAIN_ALTP2M: PayloadLayout = PayloadLayout {
    c_type: "struct xen_domctl_createdomain",
    union_member: "u.createdomain",
    size: 68,
    moved: &[
        MovedField {
            field: "vmtrace_size",
            offset: 52,
        },
        MovedField {
            field: "cpupool_id",
            offset: 56,
        },
        MovedField {
            field: "arch",
            offset: 60,
        },
    ],
};

/// The shared rings a domain builder lays out, from 4.21: the console ring gains a
/// `connection` byte (padded to 3092 bytes), the xenstore ring an `evtchn_port` (2080 bytes).
/// Not hypercall payloads (`union_member` is empty): guest memory, whose 4.17 fields keep
/// their offsets.
const RINGS_4_21: [PayloadLayout; 2] = [
    PayloadLayout {
        c_type: "struct xencons_interface",
        union_member: "",
        size: 3092,
        moved: &[],
    },
    PayloadLayout {
        c_type: "struct xenstore_domain_interface",
        union_member: "",
        size: 2080,
        moved: &[],
    },
];

/// The offset of `connection` in `struct xencons_interface` (4.21+).
const CONSOLE_CONNECTION: usize = 3088;

/// Xen 4.17.
pub const RELEASE_4_17: XenRelease = XenRelease {
    version: (4, 17),
    // 4.17.5, not 4.17.0: the release Debian 12 ships, whose headers name
    // `xen_domctl_cpu_policy`'s handles `leaves` and `msrs` as the host's libxen-dev does
    // (4.17.0: `cpuid_policy` and `msr_policy`, the same layout).
    tag: "RELEASE-4.17.5",
    commit: "430ce6cd936546ad883ecd1c85ddea32d790604b",
    evidence: Evidence::RealXen {
        distribution: "Debian 12",
    },
};

/// Xen 4.18.
pub const RELEASE_4_18: XenRelease = XenRelease {
    version: (4, 18),
    tag: "RELEASE-4.18.0",
    commit: "d75f1e9b74314cea91ce435730d4e3539ecca77d",
    evidence: Evidence::TagHeaders,
};

/// Xen 4.19.
pub const RELEASE_4_19: XenRelease = XenRelease {
    version: (4, 19),
    tag: "RELEASE-4.19.0",
    commit: "026c9fa29716b0ff0f8b7c687908e71ba29cf239",
    evidence: Evidence::TagHeaders,
};

/// Xen 4.20.
pub const RELEASE_4_20: XenRelease = XenRelease {
    version: (4, 20),
    tag: "RELEASE-4.20.0",
    commit: "3ad5d648cda5add395f49fc3704b2552aae734f7",
    evidence: Evidence::RealXen {
        distribution: "Debian 13",
    },
};

/// Xen 4.21.
pub const RELEASE_4_21: XenRelease = XenRelease {
    version: (4, 21),
    tag: "RELEASE-4.21.0",
    commit: "06af9ef22996cecc2024a2e6523cec77a655581e",
    evidence: Evidence::TagHeaders,
};

/// Xen 4.22.
pub const RELEASE_4_22: XenRelease = XenRelease {
    version: (4, 22),
    tag: "RELEASE-4.22.0",
    commit: "d45d5687f1441495f4ee20d5e9940066c5fa5beb",
    evidence: Evidence::TagHeaders,
};

/// Every interface generation this crate knows, newest first.
pub const PROFILES: &[InterfaceProfile] = &[
    InterfaceProfile {
        xen: "4.22",
        releases: &[RELEASE_4_22],
        domctl: 0x18,
        sysctl: 0x16,
        getdomaininfo_exact: true,
        hvm_param_altp2m_read_only: true,
        domid_any: Some(0x7FF5),
        console_connection: Some(CONSOLE_CONNECTION),
        cdf_max: 1 << 8,
        payloads: &[CREATEDOMAIN_ALTP2M, RINGS_4_21[0], RINGS_4_21[1]],
    },
    InterfaceProfile {
        xen: "4.21",
        releases: &[RELEASE_4_21],
        domctl: 0x17,
        sysctl: 0x16,
        getdomaininfo_exact: true,
        hvm_param_altp2m_read_only: true,
        domid_any: None,
        console_connection: Some(CONSOLE_CONNECTION),
        cdf_max: 1 << 8,
        payloads: &[CREATEDOMAIN_ALTP2M, RINGS_4_21[0], RINGS_4_21[1]],
    },
    InterfaceProfile {
        xen: "4.19–4.20",
        releases: &[RELEASE_4_19, RELEASE_4_20],
        domctl: 0x17,
        sysctl: 0x15,
        getdomaininfo_exact: true,
        hvm_param_altp2m_read_only: true,
        domid_any: None,
        console_connection: None,
        cdf_max: 1 << 7,
        payloads: &[CREATEDOMAIN_ALTP2M],
    },
    InterfaceProfile {
        xen: "4.18",
        releases: &[RELEASE_4_18],
        domctl: 0x16,
        sysctl: 0x15,
        getdomaininfo_exact: true,
        hvm_param_altp2m_read_only: false,
        domid_any: None,
        console_connection: None,
        cdf_max: 1 << 7,
        payloads: &[],
    },
    XEN_4_17,
];

/// The profile [`crate::abi`] is laid out for.
pub const XEN_4_17: InterfaceProfile = InterfaceProfile {
    xen: "4.17",
    releases: &[RELEASE_4_17],
    domctl: crate::abi::XEN_DOMCTL_INTERFACE_VERSION,
    sysctl: crate::abi::XEN_SYSCTL_INTERFACE_VERSION,
    getdomaininfo_exact: false,
    hvm_param_altp2m_read_only: false,
    domid_any: None,
    console_connection: None,
    cdf_max: crate::abi::XEN_DOMCTL_CDF_MAX,
    payloads: &[],
};

/// The profile for a `(domctl, sysctl)` version pair.
pub fn profile_for(domctl: u32, sysctl: u32) -> Option<&'static InterfaceProfile> {
    PROFILES
        .iter()
        .find(|p| p.domctl == domctl && p.sysctl == sysctl)
}

/// Every release this crate knows, oldest first.
pub fn releases() -> impl Iterator<Item = &'static XenRelease> {
    PROFILES.iter().rev().flat_map(|p| p.releases.iter())
}

/// The release `major.minor` and its profile.
pub fn release(major: u16, minor: u16) -> Option<(&'static InterfaceProfile, &'static XenRelease)> {
    PROFILES.iter().find_map(|p| {
        p.releases
            .iter()
            .find(|r| r.version == (major, minor))
            .map(|r| (p, r))
    })
}

/// Every known version, for messages: `Xen 4.17 (domctl 0x15, sysctl 0x15), ...`, oldest
/// first.
pub fn supported_summary() -> String {
    PROFILES
        .iter()
        .rev()
        .map(|p| {
            format!(
                "Xen {} (domctl {:#x}, sysctl {:#x})",
                p.xen, p.domctl, p.sysctl
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a payload could not be marshalled for a profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{c_type} cannot be marshalled for Xen {xen}: its layout differs and it holds a guest handle"
)]
pub struct RelayoutError {
    /// The payload's C type.
    pub c_type: &'static str,
    /// The profile's Xen releases.
    pub xen: &'static str,
}

impl InterfaceProfile {
    fn layout_of(&self, c_type: Option<&str>) -> Option<&'static PayloadLayout> {
        let c_type = c_type?;
        self.payloads.iter().find(|l| l.c_type == c_type)
    }

    /// The layout of payload `c_type` in this profile, if it differs from 4.17.
    pub fn payload(&self, c_type: &str) -> Option<&'static PayloadLayout> {
        self.layout_of(Some(c_type))
    }

    /// The newest release speaking this profile.
    pub fn newest_release(&self) -> &'static XenRelease {
        // Every profile in `PROFILES` lists at least one release (a unit test checks).
        self.releases.last().unwrap_or(&RELEASE_4_17)
    }

    /// The domain id that asks `createdomain` for any free id: `DOMID_ANY` where the version
    /// defines it, else 0.
    pub fn createdomain_any_id(&self) -> DomId {
        self.domid_any.unwrap_or(0)
    }

    /// Map union bytes between the 4.17 layout of payload `L` and this profile's.
    fn relayout<L: AbiLayout>(
        layout: &PayloadLayout,
        bytes: &[u8; UNION_SIZE],
        to_profile: bool,
    ) -> [u8; UNION_SIZE] {
        let mut out = [0u8; UNION_SIZE];
        for f in L::LAYOUT.fields {
            let there = layout
                .moved
                .iter()
                .find(|m| m.field == f.name)
                .map_or(f.offset, |m| m.offset);
            let (from, to) = if to_profile {
                (f.offset, there)
            } else {
                (there, f.offset)
            };
            out[to..to + f.size].copy_from_slice(&bytes[from..from + f.size]);
        }
        out
    }

    /// Set an envelope's interface version and move its payload into this profile's layout.
    fn encode<E: Envelope>(&self, env: &mut E, version: u32) -> Result<(), RelayoutError> {
        env.set_interface_version(version);
        self.relayout_envelope(env, true)
    }

    /// Move an envelope's payload fields between the 4.17 layout and this profile's.
    fn relayout_envelope<E: Envelope>(
        &self,
        env: &mut E,
        to_profile: bool,
    ) -> Result<(), RelayoutError> {
        let Some(layout) = self.layout_of(E::Payload::LAYOUT.c_type) else {
            return Ok(());
        };
        let err = RelayoutError {
            c_type: layout.c_type,
            xen: self.xen,
        };
        let bytes = env.union_bytes().ok_or(err)?;
        let moved = Self::relayout::<E::Payload>(layout, &bytes, to_profile);
        env.set_union_bytes(&moved).then_some(()).ok_or(err)
    }

    /// Prepare a 4.17-layout envelope for this profile: set the interface version and move the
    /// payload's fields to where this version expects them.
    ///
    /// # Errors
    ///
    /// [`RelayoutError`] if the payload differs in this version and holds a guest handle (none
    /// of today's do).
    pub fn encode_domctl<P: DomctlPayload>(
        &self,
        env: &mut XenDomctl<P>,
    ) -> Result<(), RelayoutError> {
        self.encode(env, self.domctl)
    }

    /// Bring an envelope Xen answered in this profile's layout back to the 4.17 layout.
    ///
    /// # Errors
    ///
    /// As [`InterfaceProfile::encode_domctl`].
    pub fn decode_domctl<P: DomctlPayload>(
        &self,
        env: &mut XenDomctl<P>,
    ) -> Result<(), RelayoutError> {
        self.relayout_envelope(env, false)
    }

    /// Prepare a 4.17-layout sysctl envelope for this profile (see
    /// [`InterfaceProfile::encode_domctl`]).
    ///
    /// # Errors
    ///
    /// As [`InterfaceProfile::encode_domctl`].
    pub fn encode_sysctl<P: SysctlPayload>(
        &self,
        env: &mut XenSysctl<P>,
    ) -> Result<(), RelayoutError> {
        self.encode(env, self.sysctl)
    }

    /// Bring a sysctl envelope back to the 4.17 layout (see
    /// [`InterfaceProfile::decode_domctl`]).
    ///
    /// # Errors
    ///
    /// As [`InterfaceProfile::encode_domctl`].
    pub fn decode_sysctl<P: SysctlPayload>(
        &self,
        env: &mut XenSysctl<P>,
    ) -> Result<(), RelayoutError> {
        self.relayout_envelope(env, false)
    }
}

/// One probe call: issue this hypercall with this interface version and report how Xen
/// answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeCall {
    /// `XEN_DOMCTL_getdomaininfo` for domain 0 with `interface_version` set to this.
    DomctlGetdomaininfo(u32),
    /// `XEN_SYSCTL_physinfo` with `interface_version` set to this.
    SysctlPhysinfo(u32),
}

/// Distinct values of `key` over all profiles, newest (highest) first.
fn candidates(key: impl Fn(&InterfaceProfile) -> u32) -> Vec<u32> {
    let mut v: Vec<u32> = PROFILES.iter().map(key).collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v.dedup();
    v
}

/// Try each known version, newest first, until Xen answers anything but `EACCES`.
fn find_version(
    call: &mut dyn FnMut(ProbeCall) -> Result<(), Errno>,
    versions: &[u32],
    make: fn(u32) -> ProbeCall,
) -> Result<Option<u32>, Errno> {
    for &v in versions {
        match call(make(v)) {
            Err(Errno::EACCES) => continue,
            // ESRCH and the like still prove the version check passed: Xen checks it first.
            Ok(()) | Err(Errno::ESRCH) | Err(Errno::EINVAL) => return Ok(Some(v)),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Find the hypervisor's domctl and sysctl interface versions and the matching profile.
///
/// `call` issues the hypercall described by its argument (through a pool buffer, on the handle
/// being opened) and returns `Ok` or Xen's errno. Each known version is tried newest first;
/// Xen answers `EACCES` to every version but its own.
///
/// # Errors
///
/// - [`Error::UnsupportedInterface`] naming what the hypervisor speaks (or that it answered
///   `EACCES` to every known version: a Xen newer than this crate) and every version this
///   crate knows;
/// - [`Error::Xen`] with the errno if a probe call fails otherwise (e.g. `EPERM` when not
///   privileged).
pub fn probe(
    call: &mut dyn FnMut(ProbeCall) -> Result<(), Errno>,
) -> Result<&'static InterfaceProfile, Error> {
    let fail = |e| Error::xen(crate::error::Op::InterfaceProbe, None, e);
    let domctl = find_version(
        call,
        &candidates(|p| p.domctl),
        ProbeCall::DomctlGetdomaininfo,
    )
    .map_err(fail)?;
    let sysctl =
        find_version(call, &candidates(|p| p.sysctl), ProbeCall::SysctlPhysinfo).map_err(fail)?;
    let unsupported = |what: String| Error::UnsupportedInterface {
        what,
        supported: supported_summary(),
    };
    let hex = |v: Vec<u32>| {
        v.iter()
            .map(|v| format!("{v:#x}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (domctl, sysctl) {
        (Some(d), Some(s)) => profile_for(d, s).ok_or_else(|| {
            unsupported(format!(
                "the hypervisor speaks domctl {d:#x}, sysctl {s:#x}, a combination no known Xen \
                 release uses"
            ))
        }),
        (d, s) => {
            let show = |v: Option<u32>, all: Vec<u32>| {
                v.map_or_else(
                    || format!("unknown (EACCES to all of {})", hex(all)),
                    |v| format!("{v:#x}"),
                )
            };
            Err(unsupported(format!(
                "the hypervisor speaks domctl {}, sysctl {}: it is probably newer than Xen {}",
                show(d, candidates(|p| p.domctl)),
                show(s, candidates(|p| p.sysctl)),
                PROFILES[0].newest_release().name(),
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use zerocopy::IntoBytes;

    use super::*;
    use crate::abi::{XenArchDomainconfig, XenDomctlCreatedomain, XenDomctlMaxMem};

    /// A fake hypervisor speaking `(domctl, sysctl)`, recording the calls.
    fn fake(
        domctl: u32,
        sysctl: u32,
        log: &mut Vec<ProbeCall>,
    ) -> impl FnMut(ProbeCall) -> Result<(), Errno> + '_ {
        move |c| {
            log.push(c);
            let ok = match c {
                ProbeCall::DomctlGetdomaininfo(v) => v == domctl,
                ProbeCall::SysctlPhysinfo(v) => v == sysctl,
            };
            if ok {
                Ok(())
            } else {
                Err(Errno::EACCES)
            }
        }
    }

    #[test]
    fn profiles_are_newest_first_and_unique() {
        for w in PROFILES.windows(2) {
            assert!(
                (w[0].domctl, w[0].sysctl) > (w[1].domctl, w[1].sysctl),
                "{w:?}"
            );
        }
        assert_eq!(profile_for(0x15, 0x15), Some(&XEN_4_17));
        let names: Vec<String> = releases().map(XenRelease::name).collect();
        assert_eq!(names, ["4.17", "4.18", "4.19", "4.20", "4.21", "4.22"]);
        for p in PROFILES {
            assert!(!p.releases.is_empty(), "{}", p.xen);
            for r in p.releases {
                assert_eq!(release(r.version.0, r.version.1), Some((p, r)));
                assert!(r.tag.starts_with(&format!("RELEASE-{}.", r.name())));
                assert_eq!(r.commit.len(), 40);
            }
        }
    }

    #[test]
    fn probe_picks_each_profile_trying_newer_versions_first() {
        for p in PROFILES {
            let mut log = Vec::new();
            assert_eq!(probe(&mut fake(p.domctl, p.sysctl, &mut log)).unwrap(), p);
        }
        let mut log = Vec::new();
        probe(&mut fake(0x15, 0x15, &mut log)).unwrap();
        use ProbeCall::*;
        assert_eq!(
            log,
            [
                DomctlGetdomaininfo(0x18),
                DomctlGetdomaininfo(0x17),
                DomctlGetdomaininfo(0x16),
                DomctlGetdomaininfo(0x15),
                SysctlPhysinfo(0x16),
                SysctlPhysinfo(0x15)
            ]
        );
    }

    #[test]
    fn probe_refuses_a_newer_xen_naming_every_known_version() {
        let mut log = Vec::new();
        let err = probe(&mut fake(0x19, 0x16, &mut log))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("domctl unknown (EACCES to all of 0x18, 0x17, 0x16, 0x15), sysctl 0x16"),
            "{err}"
        );
        assert!(err.contains("newer than Xen 4.22"), "{err}");
        for p in PROFILES {
            assert!(
                err.contains(&format!(
                    "Xen {} (domctl {:#x}, sysctl {:#x})",
                    p.xen, p.domctl, p.sysctl
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn probe_refuses_an_unknown_combination() {
        let mut log = Vec::new();
        let err = probe(&mut fake(0x18, 0x15, &mut log))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("domctl 0x18, sysctl 0x15, a combination no known Xen release uses"),
            "{err}"
        );
    }

    #[test]
    fn probe_passes_other_errors_through() {
        let err = probe(&mut |_| Err(Errno::EPERM)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Xen {
                    source: Errno::EPERM,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn createdomain_moves_for_4_19_and_back() {
        let p419 = profile_for(0x17, 0x15).unwrap();
        let cd = XenDomctlCreatedomain {
            ssidref: 1,
            flags: 3,
            grant_opts: 0x11,
            vmtrace_size: 0xaabb,
            cpupool_id: 7,
            arch: XenArchDomainconfig {
                emulation_flags: 0x55,
                misc_flags: 1,
            },
            ..Default::default()
        };
        let mut env = XenDomctl::new(5, cd);
        p419.encode_domctl(&mut env).unwrap();
        assert_eq!(env.interface_version(), 0x17);
        let b = env.union_bytes().unwrap();
        let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap());
        // 4.19: grant_opts 44, altp2m 48 (zero), vmtrace_size 52, cpupool_id 56, arch 60.
        assert_eq!(u32_at(44), 0x11);
        assert_eq!(u32_at(48), 0);
        assert_eq!(u32_at(52), 0xaabb);
        assert_eq!(u32_at(56), 7);
        assert_eq!(u32_at(60), 0x55);
        assert_eq!(u32_at(64), 1);
        p419.decode_domctl(&mut env).unwrap();
        assert_eq!(env.u, cd);
        // 4.17 is the identity.
        let mut env = XenDomctl::new(5, cd);
        XEN_4_17.encode_domctl(&mut env).unwrap();
        assert_eq!(&env.union_bytes().unwrap()[..64], cd.as_bytes());
    }

    #[test]
    fn unchanged_payloads_are_untouched() {
        let p = profile_for(0x17, 0x16).unwrap();
        let mut env = XenDomctl::new(1, XenDomctlMaxMem { max_memkb: 42 });
        p.encode_domctl(&mut env).unwrap();
        assert_eq!(env.u.max_memkb, 42);
        assert_eq!(env.interface_version(), 0x17);
    }

    #[test]
    fn moved_fields_name_real_fields_and_fit() {
        for p in PROFILES {
            for l in p.payloads {
                // Hypercall payloads fit the envelope's union; the rings are guest memory.
                assert!(l.union_member.is_empty() || l.size <= UNION_SIZE);
                let base = crate::abi::layout::structs()
                    .into_iter()
                    .find(|s| s.c_type == Some(l.c_type))
                    .expect("a payload of ours");
                for m in l.moved {
                    let f = base
                        .fields
                        .iter()
                        .find(|f| f.name == m.field)
                        .expect("field exists");
                    assert!(m.offset + f.size <= l.size, "{m:?}");
                }
            }
        }
    }

    #[test]
    fn each_release_has_facts_naming_its_tag() {
        for r in releases() {
            let header: Vec<_> = r.facts_header().collect();
            assert!(
                header
                    .iter()
                    .any(|l| l.contains(r.tag) && l.contains(r.commit)),
                "{}: {header:?}",
                r.tag
            );
            assert!(r.facts().count() > 800, "{}", r.tag);
        }
        assert_eq!(
            RELEASE_4_19.fact("offsetof struct xen_domctl_createdomain arch"),
            Some(60)
        );
    }
}
