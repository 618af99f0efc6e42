//! Xen interface versions: which hypervisors this crate speaks to, and how their `domctl` and
//! `sysctl` layouts differ.
//!
//! # Supported versions
//!
//! | Xen         | domctl | sysctl | status                                                       |
//! |-------------|--------|--------|--------------------------------------------------------------|
//! | 4.17        | `0x15` | `0x15` | **supported**: the layout of [`crate::abi`], tested against real Xen |
//! | 4.18        | `0x16` | `0x15` | known, refused at open                                        |
//! | 4.19 – 4.20 | `0x17` | `0x15` | known, refused at open                                        |
//! | 4.21        | `0x17` | `0x16` | known, refused at open                                        |
//!
//! Xen checks the `interface_version` field of every `domctl` and `sysctl` and answers `EACCES`
//! when it is not its own. Opening a handle probes both (newest first, see [`probe`]) and picks
//! the matching [`InterfaceProfile`]; a hypervisor whose versions match no supported profile is
//! refused with an error naming what it speaks and what this crate supports. `xen_version`,
//! `memory_op` and `event_channel_op` are stable ABIs and are not versioned.
//!
//! # Differences as data
//!
//! [`crate::abi`] declares the 4.17 layout. Each profile lists, as data, how the versioned
//! payloads we use differ from it: fields that move ([`PayloadLayout::moved`]), fields that
//! later versions add (left zero, i.e. the 4.17 behaviour) and behavioural changes such as
//! `getdomaininfo` of a missing domain answering `ESRCH` from 4.18 on. Marshalling
//! ([`InterfaceProfile::encode_domctl`] / [`InterfaceProfile::decode_domctl`]) applies that data
//! to the typed envelope's union bytes, so supporting a newer Xen means adding a row here and
//! testing it, not copying structs. The differences between 4.17 and 4.21 for what this crate
//! uses are:
//!
//! - 4.18 (domctl `0x16`): `XEN_DOMCTL_getdomaininfo` fails with `ESRCH` for a missing domain
//!   instead of returning the next one (the reason for the bump);
//! - 4.19 (domctl `0x17`): `xen_domctl_createdomain` gains a 4-byte `altp2m_opts` after
//!   `grant_opts`, moving `vmtrace_size`, `cpupool_id` and `arch` 4 bytes up (64 → 68 bytes);
//! - 4.21 (sysctl `0x16`, domctl unchanged): the sysctl bump is for livepatch only; the same 4
//!   bytes become `altp2m { u16 opts; u16 nr; }`, and `XEN_DOMCTL_CDF_trap_unmapped_accesses`
//!   (bit 8) is added.
//!
//! (Offsets checked by compiling against the 4.18.0, 4.19.0 and 4.21.0 public headers; the
//! conformance test checks 4.17 on every run.)
//!
//! Other payloads (`getdomaininfo`, `max_mem`, `max_vcpus`, `physinfo`, `getdomaininfolist`, and
//! a builder's: `address_size`, `vcpucontext`, `hypercall_init`, `tsc_info`, `hvmcontext`,
//! `paging_mempool`) have the same layout in all of them.

use nix::errno::Errno;

use crate::abi::envelope::{Envelope, UNION_SIZE};
use crate::abi::layout::AbiLayout;
use crate::abi::{DomctlPayload, SysctlPayload, XenDomctl, XenSysctl};
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
    /// Its size in this version.
    pub size: usize,
    /// 4.17 fields at another offset. Fields not listed keep their offset; bytes no 4.17 field
    /// maps to (fields the version added) are sent as zero and ignored on return.
    pub moved: &'static [MovedField],
}

/// One `domctl`/`sysctl` interface generation of Xen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceProfile {
    /// The Xen releases that speak it, e.g. `4.19–4.20`.
    pub xen: &'static str,
    /// `XEN_DOMCTL_INTERFACE_VERSION`.
    pub domctl: u32,
    /// `XEN_SYSCTL_INTERFACE_VERSION`.
    pub sysctl: u32,
    /// Whether this crate opens a hypervisor speaking it.
    pub supported: bool,
    /// `getdomaininfo` of a missing domain fails with `ESRCH` (4.18+) rather than describing
    /// the next domain up (4.17).
    pub getdomaininfo_exact: bool,
    /// The highest `XEN_DOMCTL_CDF_*` flag.
    pub cdf_max: u32,
    /// Payloads laid out differently from 4.17.
    pub payloads: &'static [PayloadLayout],
}

const CREATEDOMAIN_ALTP2M: PayloadLayout = PayloadLayout {
    c_type: "struct xen_domctl_createdomain",
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

/// Every interface generation this crate knows, newest first.
pub const PROFILES: &[InterfaceProfile] = &[
    InterfaceProfile {
        xen: "4.21",
        domctl: 0x17,
        sysctl: 0x16,
        supported: false,
        getdomaininfo_exact: true,
        cdf_max: 1 << 8,
        payloads: &[CREATEDOMAIN_ALTP2M],
    },
    InterfaceProfile {
        xen: "4.19–4.20",
        domctl: 0x17,
        sysctl: 0x15,
        supported: false,
        getdomaininfo_exact: true,
        cdf_max: 1 << 7,
        payloads: &[CREATEDOMAIN_ALTP2M],
    },
    InterfaceProfile {
        xen: "4.18",
        domctl: 0x16,
        sysctl: 0x15,
        supported: false,
        getdomaininfo_exact: true,
        cdf_max: 1 << 7,
        payloads: &[],
    },
    XEN_4_17,
];

/// The profile [`crate::abi`] is laid out for.
pub const XEN_4_17: InterfaceProfile = InterfaceProfile {
    xen: "4.17",
    domctl: crate::abi::XEN_DOMCTL_INTERFACE_VERSION,
    sysctl: crate::abi::XEN_SYSCTL_INTERFACE_VERSION,
    supported: true,
    getdomaininfo_exact: false,
    cdf_max: crate::abi::XEN_DOMCTL_CDF_MAX,
    payloads: &[],
};

/// The profile for a `(domctl, sysctl)` version pair, supported or not.
pub fn profile_for(domctl: u32, sysctl: u32) -> Option<&'static InterfaceProfile> {
    PROFILES
        .iter()
        .find(|p| p.domctl == domctl && p.sysctl == sysctl)
}

/// The supported profiles, for messages: `Xen 4.17 (domctl 0x15, sysctl 0x15)`.
pub fn supported_summary() -> String {
    PROFILES
        .iter()
        .filter(|p| p.supported)
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

    /// Raw union bytes of payload `L` in this profile's layout, brought to the 4.17 layout (the
    /// simulator's decoder, when it presents this profile).
    pub(crate) fn union_to_4_17<L: AbiLayout>(&self, bytes: &[u8; UNION_SIZE]) -> [u8; UNION_SIZE] {
        match self.layout_of(L::LAYOUT.c_type) {
            Some(layout) => Self::relayout::<L>(layout, bytes, false),
            None => *bytes,
        }
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
///   `EACCES` to every known version) and what this crate supports;
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
    let show =
        |v: Option<u32>| v.map_or_else(|| "unknown (EACCES to all)".into(), |v| format!("{v:#x}"));
    let unsupported = |what: String| Error::UnsupportedInterface {
        what,
        supported: supported_summary(),
    };
    match (domctl, sysctl) {
        (Some(d), Some(s)) => match profile_for(d, s) {
            Some(p) if p.supported => Ok(p),
            Some(p) => Err(unsupported(format!(
                "the hypervisor speaks domctl {d:#x}, sysctl {s:#x} (Xen {})",
                p.xen
            ))),
            None => Err(unsupported(format!(
                "the hypervisor speaks domctl {d:#x}, sysctl {s:#x}, a combination no known Xen \
                 release uses"
            ))),
        },
        (d, s) => {
            let hex = |v: Vec<u32>| {
                v.iter()
                    .map(|v| format!("{v:#x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            Err(unsupported(format!(
                "the hypervisor speaks domctl {}, sysctl {} (tried domctl {}; sysctl {})",
                show(d),
                show(s),
                hex(candidates(|p| p.domctl)),
                hex(candidates(|p| p.sysctl))
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
        assert_eq!(PROFILES.iter().filter(|p| p.supported).count(), 1);
        assert_eq!(profile_for(0x15, 0x15), Some(&XEN_4_17));
    }

    #[test]
    fn probe_accepts_4_17_trying_newer_versions_first() {
        let mut log = Vec::new();
        let p = probe(&mut fake(0x15, 0x15, &mut log)).unwrap();
        assert_eq!(p, &XEN_4_17);
        use ProbeCall::*;
        assert_eq!(
            log,
            [
                DomctlGetdomaininfo(0x17),
                DomctlGetdomaininfo(0x16),
                DomctlGetdomaininfo(0x15),
                SysctlPhysinfo(0x16),
                SysctlPhysinfo(0x15)
            ]
        );
    }

    #[test]
    fn probe_refuses_4_19_naming_both_sides() {
        let mut log = Vec::new();
        let err = probe(&mut fake(0x17, 0x15, &mut log))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("domctl 0x17, sysctl 0x15 (Xen 4.19–4.20)"),
            "{err}"
        );
        assert!(err.contains("Xen 4.17 (domctl 0x15, sysctl 0x15)"), "{err}");
    }

    #[test]
    fn probe_refuses_an_unknown_version() {
        let mut log = Vec::new();
        let err = probe(&mut fake(0x14, 0x15, &mut log))
            .unwrap_err()
            .to_string();
        assert!(err.contains("domctl unknown (EACCES to all)"), "{err}");
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
                assert!(l.size <= UNION_SIZE);
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
}
