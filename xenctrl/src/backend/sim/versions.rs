//! The layouts of the Xen release the simulator presents, from that release's recorded header
//! facts ([`XenRelease::facts`]).
//!
//! The crate marshals with its profile's data ([`crate::interface::PayloadLayout`]); the
//! simulator decodes with the facts recorded from the release's headers, an independent
//! source. Marshalling that disagrees with the headers (a wrong offset in the profile, a payload
//! it forgets to move) then shows up as a wrong value or an error in the end-to-end tests, as it
//! would on real Xen.

use std::sync::{Arc, OnceLock};

use crate::abi::layout::{self, CField, StructLayout};
use crate::interface::{self, XenRelease};

/// One field that sits elsewhere in the release than in [`crate::abi`].
#[derive(Clone, Copy, Debug)]
struct Move {
    /// Offset in the 4.17 layout of [`crate::abi`].
    ours: usize,
    /// Offset in the release's layout.
    theirs: usize,
    size: usize,
}

/// A struct whose layout in the release differs from [`crate::abi`]'s.
#[derive(Debug)]
struct Relayout {
    c_type: &'static str,
    /// `sizeof` in the release.
    size: usize,
    /// Every field the release has, where it has it.
    moves: Vec<Move>,
}

/// How the structs of one release differ from [`crate::abi`]'s, as far as the simulator reads
/// and writes them. Structs not listed are laid out as in [`crate::abi`].
#[derive(Debug)]
pub(crate) struct ReleaseLayouts {
    structs: Vec<Relayout>,
}

impl ReleaseLayouts {
    /// The differences recorded for `release`, or `None` if it lays out every struct as
    /// [`crate::abi`] does (4.17, 4.18).
    fn build(release: &XenRelease) -> Option<Self> {
        let facts: std::collections::BTreeMap<&str, u64> = release.facts().collect();
        let get = |k: String| facts.get(k.as_str()).and_then(|&v| usize::try_from(v).ok());
        let mut structs: Vec<Relayout> = Vec::new();
        for s in layout::structs() {
            let Some(cty) = s.c_type else { continue };
            if structs.iter().any(|r| r.c_type == cty) {
                continue; // a view sharing its twin's C type
            }
            let size = get(format!("sizeof {cty}")).unwrap_or(s.size);
            let mut moves = Vec::new();
            let mut identity = size == s.size;
            for f in s.fields {
                let CField::Named(c) = f.c_field else {
                    continue;
                };
                let at = get(format!("offsetof {cty} {c}"));
                let len = get(format!("sizeof {cty} {c}"));
                match (at, len) {
                    (Some(at), Some(len)) if len == f.size => {
                        identity &= at == f.offset;
                        moves.push(Move {
                            ours: f.offset,
                            theirs: at,
                            size: f.size,
                        });
                    }
                    // Gone or resized in this release: not carried either way.
                    _ => identity = false,
                }
            }
            if !identity && !is_envelope(&s) {
                structs.push(Relayout {
                    c_type: cty,
                    size,
                    moves,
                });
            }
        }
        (!structs.is_empty()).then_some(Self { structs })
    }

    /// The layouts of the release `version` presenting `(domctl, sysctl)`, if its recorded
    /// facts name exactly these interface versions and differ from [`crate::abi`].
    pub(crate) fn of(version: (u16, u16), domctl: u32, sysctl: u32) -> Option<Arc<Self>> {
        static ALL: OnceLock<Vec<(XenRelease, Option<Arc<ReleaseLayouts>>)>> = OnceLock::new();
        let all = ALL.get_or_init(|| {
            interface::releases()
                .map(|r| (*r, Self::build(r).map(Arc::new)))
                .collect()
        });
        let (release, layouts) = all.iter().find(|(r, _)| r.version == version)?;
        let speaks = release.fact("const XEN_DOMCTL_INTERFACE_VERSION") == Some(domctl.into())
            && release.fact("const XEN_SYSCTL_INTERFACE_VERSION") == Some(sysctl.into());
        speaks.then(|| layouts.clone()).flatten()
    }

    fn find(&self, c_type: Option<&str>) -> Option<&Relayout> {
        let c_type = c_type?;
        self.structs.iter().find(|r| r.c_type == c_type)
    }

    /// `sizeof` struct `s` in the release.
    pub(crate) fn size_of(&self, s: &StructLayout) -> usize {
        self.find(s.c_type).map_or(s.size, |r| r.size)
    }

    /// Bytes of struct `s` in the release's layout (`theirs`, at least `size_of(s)` long),
    /// brought into [`crate::abi`]'s layout (`ours`, at least `s.size` long). Bytes of fields
    /// the other layout lacks are zero.
    pub(crate) fn to_ours(&self, s: &StructLayout, theirs: &[u8], ours: &mut [u8]) {
        match self.find(s.c_type) {
            None => ours[..s.size].copy_from_slice(&theirs[..s.size]),
            Some(r) => {
                ours[..s.size].fill(0);
                for m in &r.moves {
                    ours[m.ours..m.ours + m.size]
                        .copy_from_slice(&theirs[m.theirs..m.theirs + m.size]);
                }
            }
        }
    }

    /// The reverse of [`ReleaseLayouts::to_ours`].
    pub(crate) fn to_theirs(&self, s: &StructLayout, ours: &[u8], theirs: &mut [u8]) {
        match self.find(s.c_type) {
            None => theirs[..s.size].copy_from_slice(&ours[..s.size]),
            Some(r) => {
                theirs[..r.size].fill(0);
                for m in &r.moves {
                    theirs[m.theirs..m.theirs + m.size]
                        .copy_from_slice(&ours[m.ours..m.ours + m.size]);
                }
            }
        }
    }
}

/// The domctl/sysctl envelopes, whose header never moves and whose union the simulator
/// relays out payload by payload.
fn is_envelope(s: &StructLayout) -> bool {
    matches!(s.c_type, Some("struct xen_domctl" | "struct xen_sysctl"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::layout::AbiLayout;
    use crate::abi::XenDomctlCreatedomain;

    #[test]
    fn releases_4_19_on_move_createdomain_and_4_21_on_the_rings_too() {
        for (v, d, s) in [((4, 17), 0x15, 0x15), ((4, 18), 0x16, 0x15)] {
            assert!(ReleaseLayouts::of(v, d, s).is_none(), "{v:?}");
        }
        let createdomain = ["struct xen_domctl_createdomain"].as_slice();
        let rings = [
            "struct xen_domctl_createdomain",
            "struct xencons_interface",
            "struct xenstore_domain_interface",
        ];
        for (v, d, s, want) in [
            ((4, 19), 0x17, 0x15, createdomain),
            ((4, 20), 0x17, 0x15, createdomain),
            ((4, 21), 0x17, 0x16, rings.as_slice()),
            ((4, 22), 0x18, 0x16, rings.as_slice()),
        ] {
            let l = ReleaseLayouts::of(v, d, s).expect("4.19+ differ");
            let names: Vec<_> = l.structs.iter().map(|r| r.c_type).collect();
            assert_eq!(names, want, "{v:?}");
            assert_eq!(l.size_of(&XenDomctlCreatedomain::LAYOUT), 68);
        }
        assert!(
            ReleaseLayouts::of((4, 20), 0x18, 0x16).is_none(),
            "facts of another version"
        );
    }
}
