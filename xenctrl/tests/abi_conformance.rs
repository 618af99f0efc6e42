//! ABI conformance: every struct, field and constant of `xenctrl::abi` against Xen's C headers.
//!
//! A C program is generated from the tables in `xenctrl::abi::layout` (which the ABI macros fill
//! from the same tokens that define the structs and constants), compiled with `cc` against the
//! libxen-dev headers (Debian's Xen 4.17), and run; its `sizeof`/`offsetof`/values are compared
//! with the Rust ones. Pure-Rust checks make sure the tables are complete: every byte of every
//! struct belongs to a field, implicit padding overlaps no C member, every `pub struct` and
//! `pub const` in `src/abi/` is in a table, and each `*View` has its twin's layout.
//!
//! Missing headers or compiler are a failure ("install libxen-dev"), never a skip.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use xenctrl::abi::layout::{self, CField, StructLayout};

/// Where the Xen public headers live (`$XEN_INCLUDE_DIR/xen/domctl.h`); `/usr/include` unless
/// overridden.
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
    "xenctrl.h",
    "xen/arch-x86/hvm/start_info.h",
    "xen/io/console.h",
    "xen/io/xs_wire.h",
];

/// A C expression and the key its value is printed under.
struct Probe {
    key: String,
    expr: String,
}

fn probes() -> Vec<Probe> {
    let mut out = Vec::new();
    for s in layout::structs() {
        let Some(cty) = s.c_type else { continue };
        out.push(Probe {
            key: format!("sizeof {cty}"),
            expr: format!("sizeof({cty})"),
        });
        for f in s.fields {
            if let CField::Named(c) = f.c_field {
                out.push(Probe {
                    key: format!("offsetof {cty} {c}"),
                    expr: format!("offsetof({cty}, {c})"),
                });
                out.push(Probe {
                    key: format!("sizeof {cty} {c}"),
                    expr: format!("sizeof((({cty} *)0)->{c})"),
                });
            }
        }
    }
    for c in layout::constants() {
        out.push(Probe {
            key: format!("const {}", c.name),
            expr: c.name.to_string(),
        });
    }
    // Keys repeat when a struct and its view share a C type; probe each once.
    let mut seen = BTreeSet::new();
    out.retain(|p| seen.insert(p.key.clone()));
    out
}

fn c_program(probes: &[Probe]) -> String {
    let mut src = String::from(
        "#define __XEN_TOOLS__ 1\n#include <stdint.h>\n#include <stddef.h>\n#include <stdio.h>\n",
    );
    for h in HEADERS {
        writeln!(src, "#include <{h}>").unwrap();
    }
    src.push_str("int main(void)\n{\n");
    for p in probes {
        writeln!(
            src,
            "    printf(\"%s=%llu\\n\", \"{}\", (unsigned long long)({}));",
            p.key, p.expr
        )
        .unwrap();
    }
    src.push_str("    return 0;\n}\n");
    src
}

/// Compile and run the probe program; the map from key to value it printed.
fn c_values(probes: &[Probe]) -> BTreeMap<String, u64> {
    let inc = include_dir();
    for h in HEADERS {
        assert!(
            inc.join(h).is_file(),
            "{} is missing: install libxen-dev (Debian's Xen 4.17 headers), e.g. \
             `apt-get install libxen-dev`, or set XEN_INCLUDE_DIR",
            inc.join(h).display()
        );
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("abi_conformance");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("probe.c");
    let exe = dir.join("probe");
    std::fs::write(&src, c_program(probes)).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    // spawns: cc
    let status = Command::new(&cc)
        .arg("-std=gnu11")
        .arg("-Wall")
        .arg("-I")
        .arg(&inc)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}; install gcc"));
    assert!(
        status.status.success(),
        "the probe program ({}) does not compile against {}: a Rust constant or field has no \
         C counterpart, or the headers are not libxen-dev 4.17:\n{}",
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

#[test]
fn every_struct_field_and_constant_matches_the_c_headers() {
    let probes = probes();
    let c = c_values(&probes);
    let mut errors = Vec::new();
    let mut checked = 0usize;
    let mut check = |what: String, key: String, rust: u64| {
        checked += 1;
        match c.get(&key) {
            Some(&cv) if cv == rust => {}
            Some(&cv) => errors.push(format!("{what}: Rust {rust}, C {cv} ({key})")),
            None => errors.push(format!("{what}: not probed ({key})")),
        }
    };
    for s in layout::structs() {
        let Some(cty) = s.c_type else { continue };
        check(
            format!("size of {}", s.rust_name),
            format!("sizeof {cty}"),
            s.size as u64,
        );
        for f in s.fields {
            if let CField::Named(cf) = f.c_field {
                check(
                    format!("offset of {}.{}", s.rust_name, f.name),
                    format!("offsetof {cty} {cf}"),
                    f.offset as u64,
                );
                check(
                    format!("size of {}.{}", s.rust_name, f.name),
                    format!("sizeof {cty} {cf}"),
                    f.size as u64,
                );
            }
        }
    }
    for k in layout::constants() {
        check(
            format!("constant {}", k.name),
            format!("const {}", k.name),
            k.value,
        );
    }
    assert!(
        errors.is_empty(),
        "{} mismatches with the C headers:\n{}",
        errors.len(),
        errors.join("\n")
    );
    eprintln!("{checked} sizes, offsets and values match the C headers");
    assert!(checked > 200, "suspiciously few checks: {checked}");
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

#[test]
fn every_envelope_is_xens_size() {
    for s in layout::structs() {
        match s.c_type {
            Some("struct xen_domctl") => assert_eq!(s.size, 144, "{s:?}"),
            Some("struct xen_sysctl") => assert_eq!(s.size, 136, "{s:?}"),
            _ => {}
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
