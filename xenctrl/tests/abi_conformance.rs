//! ABI conformance: every struct, field and constant of `xenctrl::abi`, and of every interface
//! profile, against Xen's C headers.
//!
//! A C program is generated from the tables in `xenctrl::abi::layout` (which the ABI macros fill
//! from the same tokens that define the structs and constants), adjusted by a profile's data
//! (`xenctrl::interface`: moved fields, sizes, interface numbers, `DOMID_ANY`, ...), compiled
//! with `cc` against a set of headers and run; its `sizeof`/`offsetof`/values are compared with
//! what the profile claims. It is compiled against two real header sets on every run:
//!
//! - the host's libxen-dev (Debian 12's Xen 4.17) for the 4.17 profile (`XEN_INCLUDE_DIR`,
//!   default `/usr/include`);
//! - Debian 13's libxen-dev (Xen 4.20), extracted by `scripts/fetch-debian13 libxen-dev`, for
//!   the 4.19–4.20 profile (`RXEN_XEN420_HEADERS`, which `scripts/test` sets; default: where
//!   that script leaves it under `${XEN_VM_CACHE:-.vm-cache}/debian13`).
//!
//! Every profile is also compared with the facts recorded from the headers at each of its
//! releases' tags (`xenctrl/src/interface/facts/`, written by `scripts/abi-facts` with this same
//! program: `RXEN_ABI_FACTS_FROM=<dir>` makes the facts test write them instead of reading).
//!
//! Pure-Rust checks make sure the tables are complete: every byte of every struct belongs to a
//! field, implicit padding overlaps no C member, every `pub struct` and `pub const` in `src/abi/`
//! is in a table, and each `*View` has its twin's layout.
//!
//! Missing headers or compiler are a failure ("install libxen-dev", "run
//! scripts/fetch-debian13 libxen-dev"), never a skip.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use xenctrl::abi::layout::{self, CField, StructLayout};
use xenctrl::interface::{self, InterfaceProfile, XenRelease, PROFILES, XEN_4_17};

/// Where the host's Xen public headers live (`$XEN_INCLUDE_DIR/xen/domctl.h`); `/usr/include`
/// unless overridden.
fn include_dir() -> PathBuf {
    std::env::var_os("XEN_INCLUDE_DIR").map_or_else(|| PathBuf::from("/usr/include"), PathBuf::from)
}

const HEADERS: &[&str] = &[
    "xen/xen.h",
    "xen/version.h",
    "xen/memory.h",
    "xen/event_channel.h",
    "xen/grant_table.h",
    "xen/sched.h",
    "xen/domctl.h",
    "xen/sysctl.h",
    "xen/hvm/hvm_op.h",
    "xen/hvm/params.h",
    "xen/hvm/save.h",
    "xen/io/console.h",
    "xenctrl.h",
    "xen/arch-x86/hvm/start_info.h",
    "xen/io/console.h",
    "xen/io/xs_wire.h",
];

/// One thing a profile says about the C headers: the value of a C expression, printed under
/// `key`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Claim {
    key: String,
    expr: String,
    value: u64,
}

/// Everything `profile` says the C headers of its releases hold: `xenctrl::abi`'s tables, with
/// the profile's payload layouts and values in place of 4.17's.
fn claims(profile: &InterfaceProfile) -> Vec<Claim> {
    let mut out: Vec<Claim> = Vec::new();
    let mut push = |key: String, expr: String, value: u64| {
        if let Some(c) = out.iter().find(|c| c.key == key) {
            assert_eq!(c.value, value, "{key}: the tables disagree with themselves");
            return;
        }
        out.push(Claim { key, expr, value });
    };
    // The envelope member holding each payload that changes, and its size.
    let member_size = |m: &str| {
        profile
            .payloads
            .iter()
            .find(|p| p.union_member == m)
            .map(|p| p.size)
    };
    for s in layout::structs() {
        let Some(cty) = s.c_type else { continue };
        let payload = profile.payload(cty);
        push(
            format!("sizeof {cty}"),
            format!("sizeof({cty})"),
            payload.map_or(s.size, |p| p.size) as u64,
        );
        for f in s.fields {
            let CField::Named(c) = f.c_field else {
                continue;
            };
            let offset = payload
                .and_then(|p| p.moved.iter().find(|m| m.field == f.name))
                .map_or(f.offset, |m| m.offset);
            let size = member_size(c).unwrap_or(f.size);
            push(
                format!("offsetof {cty} {c}"),
                format!("offsetof({cty}, {c})"),
                offset as u64,
            );
            push(
                format!("sizeof {cty} {c}"),
                format!("sizeof((({cty} *)0)->{c})"),
                size as u64,
            );
        }
    }
    for k in layout::constants() {
        let value = match k.name {
            "XEN_DOMCTL_INTERFACE_VERSION" => profile.domctl.into(),
            "XEN_SYSCTL_INTERFACE_VERSION" => profile.sysctl.into(),
            "XEN_DOMCTL_CDF_MAX" => profile.cdf_max.into(),
            _ => k.value,
        };
        push(format!("const {}", k.name), k.name.to_string(), value);
    }
    // Behaviours whose constants or layouts the headers name.
    if let Some(any) = profile.domid_any {
        push("const DOMID_ANY".into(), "DOMID_ANY".into(), any.into());
    }
    if let Some(at) = profile.console_connection {
        push(
            "offsetof struct xencons_interface connection".into(),
            "offsetof(struct xencons_interface, connection)".into(),
            at as u64,
        );
        push(
            "const XENCONSOLE_DISCONNECTED".into(),
            "XENCONSOLE_DISCONNECTED".into(),
            1,
        );
        push(
            "const XENCONSOLE_CONNECTED".into(),
            "XENCONSOLE_CONNECTED".into(),
            0,
        );
    }
    out
}

fn c_program(claims: &[Claim]) -> String {
    let mut src = String::from(
        "#define __XEN_TOOLS__ 1\n#include <stdint.h>\n#include <stddef.h>\n#include <stdio.h>\n",
    );
    for h in HEADERS {
        writeln!(src, "#include <{h}>").unwrap();
    }
    src.push_str("int main(void)\n{\n");
    for c in claims {
        writeln!(
            src,
            "    printf(\"%s=%llu\\n\", \"{}\", (unsigned long long)({}));",
            c.key, c.expr
        )
        .unwrap();
    }
    src.push_str("    return 0;\n}\n");
    src
}

/// Compile the probe program for `claims` against the headers in `inc` (in a directory named
/// `name` under the test's scratch space), run it, and return what it printed; `what` names the
/// headers for messages.
fn c_values(inc: &Path, name: &str, what: &str, claims: &[Claim]) -> BTreeMap<String, u64> {
    for h in HEADERS {
        assert!(
            inc.join(h).is_file(),
            "{} is missing: {what}",
            inc.join(h).display()
        );
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("abi_conformance")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("probe.c");
    let exe = dir.join("probe");
    std::fs::write(&src, c_program(claims)).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    // spawns: cc
    let status = Command::new(&cc)
        .arg("-std=gnu11")
        .arg("-Wall")
        .arg("-I")
        .arg(inc)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}; install gcc"));
    assert!(
        status.status.success(),
        "the probe program ({}) does not compile against {} ({what}): a Rust constant or field \
         has no C counterpart there:\n{}",
        src.display(),
        inc.display(),
        String::from_utf8_lossy(&status.stderr)
    );
    // spawns: own
    let run = Command::new(&exe).output().expect("run the probe program");
    assert!(run.status.success(), "the probe program failed");
    String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once('=').expect("key=value");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}

/// Every claim that `actual` contradicts or lacks, and every fact `actual` holds that no claim
/// makes (stale facts).
fn mismatches(claims: &[Claim], actual: &BTreeMap<String, u64>) -> Vec<String> {
    let mut errors = Vec::new();
    for c in claims {
        match actual.get(&c.key) {
            Some(&v) if v == c.value => {}
            Some(&v) => errors.push(format!("{}: ours {}, C {v}", c.key, c.value)),
            None => errors.push(format!("{}: not in the C facts", c.key)),
        }
    }
    let claimed: BTreeSet<&str> = claims.iter().map(|c| c.key.as_str()).collect();
    for k in actual.keys() {
        if !claimed.contains(k.as_str()) {
            errors.push(format!("{k}: a C fact nothing of ours claims"));
        }
    }
    errors
}

fn assert_matches(what: &str, claims: &[Claim], actual: &BTreeMap<String, u64>) {
    let errors = mismatches(claims, actual);
    assert!(
        errors.is_empty(),
        "{what}: {} mismatches:\n{}",
        errors.len(),
        errors.join("\n")
    );
    assert!(
        claims.len() > 800,
        "{what}: suspiciously few checks: {}",
        claims.len()
    );
    eprintln!("{what}: {} sizes, offsets and values match", claims.len());
}

#[test]
fn the_4_17_profile_matches_the_hosts_libxen_dev_headers() {
    let c = claims(&XEN_4_17);
    let actual = c_values(
        &include_dir(),
        "host",
        "install libxen-dev (Debian 12's Xen 4.17 headers), e.g. `apt-get install libxen-dev`, \
         or set XEN_INCLUDE_DIR",
        &c,
    );
    assert_matches("Xen 4.17 (host libxen-dev)", &c, &actual);
}

/// Debian 13's libxen-dev, extracted (not installed) by `scripts/fetch-debian13`: the
/// `usr/include` of the extracted package, from `RXEN_XEN420_HEADERS`, else where the script
/// leaves it by default.
fn debian13_headers() -> PathBuf {
    if let Some(dir) = std::env::var_os("RXEN_XEN420_HEADERS") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XEN_VM_CACHE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.vm-cache"),
        PathBuf::from,
    );
    cache.join("debian13/current/libxen-dev/usr/include")
}

#[test]
fn the_4_20_profile_matches_debian_13s_libxen_dev_headers() {
    let inc = debian13_headers();
    let fetch = "run `scripts/fetch-debian13 libxen-dev` (scripts/test does, and sets \
                 RXEN_XEN420_HEADERS to the extracted usr/include)";
    // The package's own record of its version, next to the extracted tree.
    let control = inc.join("../../../control");
    let control = std::fs::read_to_string(&control).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: Debian 13's libxen-dev is not extracted there; {fetch}",
            control.display()
        )
    });
    let version = control
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .unwrap_or("");
    assert!(
        control.contains("Package: libxen-dev") && version.starts_with("4.20."),
        "{} is not Debian 13's libxen-dev 4.20 (version {version:?}); {fetch}",
        inc.display()
    );
    let (profile, _) = interface::release(4, 20).expect("a 4.20 profile");
    let c = claims(profile);
    let actual = c_values(&inc, "debian13", fetch, &c);
    assert_matches(
        &format!("Xen 4.20 (Debian 13 libxen-dev {version})"),
        &c,
        &actual,
    );
}

/// Parse facts as `c_values` returns them.
fn recorded(release: &XenRelease) -> BTreeMap<String, u64> {
    release.facts().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Write the facts of `release` (profile `profile`) from the header set `dir/<tag>/include`
/// (made by `scripts/abi-facts`, with `dir/<tag>/SOURCE` saying where it came from).
fn write_facts(
    dir: &Path,
    profile: &InterfaceProfile,
    release: &XenRelease,
) -> BTreeMap<String, u64> {
    let set = dir.join(release.tag);
    let source = std::fs::read_to_string(set.join("SOURCE"))
        .unwrap_or_else(|e| panic!("{}: {e}", set.join("SOURCE").display()));
    let c = claims(profile);
    let values = c_values(
        &set.join("include"),
        release.tag,
        "made by scripts/abi-facts",
        &c,
    );
    let mut text = String::new();
    for l in source.lines() {
        writeln!(text, "# {l}").unwrap();
    }
    for c in &c {
        if let Some(v) = values.get(&c.key) {
            writeln!(text, "{}={v}", c.key).unwrap();
        }
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/interface/facts")
        .join(format!("{}.txt", release.tag));
    std::fs::write(&path, text).unwrap();
    eprintln!("wrote {}", path.display());
    values
}

#[test]
fn every_profile_matches_the_facts_recorded_at_its_releases_tags() {
    let regen = std::env::var_os("RXEN_ABI_FACTS_FROM").map(PathBuf::from);
    let mut failures = Vec::new();
    for p in PROFILES {
        let c = claims(p);
        for r in p.releases {
            let header: Vec<&str> = r.facts_header().collect();
            let facts = match &regen {
                Some(dir) => write_facts(dir, p, r),
                None => {
                    assert!(
                        header
                            .iter()
                            .any(|l| l.contains(&format!("xen-project/xen {} {}", r.tag, r.commit))),
                        "{}: the recorded facts do not name the tag and commit: {header:?}",
                        r.tag
                    );
                    recorded(r)
                }
            };
            let errors = mismatches(&c, &facts);
            if errors.is_empty() {
                eprintln!(
                    "Xen {} ({}): {} facts match the {} profile",
                    r.name(),
                    r.tag,
                    c.len(),
                    p.xen
                );
            } else {
                failures.push(format!(
                    "Xen {} profile vs the facts of {} ({} mismatches):\n  {}",
                    p.xen,
                    r.tag,
                    errors.len(),
                    errors.join("\n  ")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_releases_of_one_profile_have_equal_facts() {
    for p in PROFILES {
        let first = recorded(&p.releases[0]);
        for r in &p.releases[1..] {
            assert_eq!(recorded(r), first, "{} vs {}", r.tag, p.releases[0].tag);
        }
    }
}

#[test]
fn a_profile_that_claims_a_wrong_offset_or_version_is_caught() {
    // The comparison itself, on a deliberately wrong copy of the 4.19–4.20 data.
    let (p, r) = interface::release(4, 20).unwrap();
    let facts = recorded(r);
    let mut moved = p.payloads[0].moved.to_vec();
    moved[1].offset -= 4;
    let moved: &'static [_] = Box::leak(moved.into_boxed_slice());
    let mut payload = p.payloads[0];
    payload.moved = moved;
    let payloads: &'static [_] = Box::leak(vec![payload].into_boxed_slice());
    let wrong_offset = InterfaceProfile { payloads, ..*p };
    let e = mismatches(&claims(&wrong_offset), &facts);
    assert_eq!(
        e,
        ["offsetof struct xen_domctl_createdomain cpupool_id: ours 52, C 56"]
    );
    let wrong_version = InterfaceProfile { domctl: 0x18, ..*p };
    let e = mismatches(&claims(&wrong_version), &facts);
    assert_eq!(e, ["const XEN_DOMCTL_INTERFACE_VERSION: ours 24, C 23"]);
}

#[test]
fn every_envelope_is_xens_size_in_every_profile() {
    for p in PROFILES {
        for c in claims(p) {
            match c.key.as_str() {
                "sizeof struct xen_domctl" => assert_eq!(c.value, 144, "{}", p.xen),
                "sizeof struct xen_sysctl" => assert_eq!(c.value, 136, "{}", p.xen),
                _ => {}
            }
        }
    }
}

#[test]
fn every_byte_of_every_struct_belongs_to_a_field() {
    for s in layout::structs() {
        assert_eq!(
            s.field_bytes(),
            s.size,
            "{}: fields do not cover the struct (implicit padding)",
            s.rust_name
        );
        let mut at = 0;
        for f in s.fields {
            assert_eq!(
                f.offset, at,
                "{}.{}: gap or overlap before it",
                s.rust_name, f.name
            );
            at += f.size;
        }
        if s.c_type.is_none() {
            assert_eq!(
                s.size, 0,
                "{}: a Rust-only marker must be empty",
                s.rust_name
            );
        }
    }
}

#[test]
fn implicit_bytes_overlap_no_c_member() {
    for s in layout::structs() {
        let named: Vec<_> = s
            .fields
            .iter()
            .filter(|f| matches!(f.c_field, CField::Named(_)))
            .collect();
        for p in s.fields.iter().filter(|f| f.c_field == CField::Implicit) {
            for n in &named {
                let disjoint = p.offset + p.size <= n.offset || n.offset + n.size <= p.offset;
                assert!(
                    disjoint,
                    "{}: implicit {} overlaps C member {}",
                    s.rust_name, p.name, n.name
                );
            }
        }
    }
}

fn find<'a>(all: &'a [StructLayout], name: &str) -> &'a StructLayout {
    all.iter()
        .find(|s| s.rust_name == name)
        .unwrap_or_else(|| panic!("{name} not in the table"))
}

#[test]
fn views_have_their_twins_layout() {
    let all = layout::structs();
    for s in &all {
        let Some(twin) = s.rust_name.strip_suffix("View") else {
            continue;
        };
        if s.c_type == Some("struct xen_domctl") || s.c_type == Some("struct xen_sysctl") {
            continue; // raw envelope views: checked against C directly
        }
        let t = find(&all, twin);
        assert_eq!(
            (s.size, s.align, s.c_type),
            (t.size, t.align, t.c_type),
            "{}",
            s.rust_name
        );
        let a: Vec<_> = s
            .fields
            .iter()
            .map(|f| (f.name, f.c_field, f.offset, f.size))
            .collect();
        let b: Vec<_> = t
            .fields
            .iter()
            .map(|f| (f.name, f.c_field, f.offset, f.size))
            .collect();
        assert_eq!(a, b, "{} differs from {}", s.rust_name, t.rust_name);
    }
}

fn abi_sources() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/abi");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        // The table machinery itself, and the handle field type (checked as a field of each
        // struct that holds one).
        .filter(|p| !p.ends_with("layout.rs") && !p.ends_with("handle.rs"))
        .map(|p| {
            let s = std::fs::read_to_string(&p).unwrap();
            (p, s)
        })
        .collect();
    out.sort();
    out
}

/// The identifier after `prefix` on a trimmed line, if the line starts with it.
fn ident_after<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = line.trim_start().strip_prefix(prefix)?;
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    Some(&rest[..end]).filter(|s| !s.is_empty())
}

#[test]
fn every_pub_struct_and_const_in_src_abi_is_in_a_table() {
    let tabled: BTreeSet<_> = layout::structs().iter().map(|s| s.rust_name).collect();
    let consts: BTreeSet<_> = layout::constants().iter().map(|c| c.name).collect();
    // A decoding helper over a table constant, not an ABI struct of its own.
    let exempt_structs = ["ShutdownReason", "GrantStatus"];
    let mut missing = Vec::new();
    for (path, src) in abi_sources() {
        let mut in_consts_macro = false;
        for line in src.lines() {
            let t = line.trim_start();
            if t.starts_with("abi_consts! {") {
                in_consts_macro = true;
            } else if in_consts_macro && t == "}" {
                in_consts_macro = false;
            } else if in_consts_macro && !t.starts_with("///") && !t.starts_with("table ") {
                if let Some(name) = ident_after(t, "") {
                    if t.contains(':') && !consts.contains(name) {
                        missing.push(format!("{}: const {name}", path.display()));
                    }
                }
            }
            if let Some(name) = ident_after(t, "pub struct ") {
                if !tabled.contains(name) && !exempt_structs.contains(&name) {
                    missing.push(format!("{}: struct {name}", path.display()));
                }
            }
            if let Some(name) = ident_after(t, "pub const ") {
                let assoc_value = t.contains(": Self");
                if name != "fn" && !assoc_value && !consts.contains(name) {
                    missing.push(format!("{}: const {name}", path.display()));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "defined but not in the layout/constant tables:\n{}",
        missing.join("\n")
    );
}

#[test]
fn constant_names_are_unique() {
    let mut seen = BTreeSet::new();
    for c in layout::constants() {
        assert!(seen.insert(c.name), "{} defined twice", c.name);
    }
}
