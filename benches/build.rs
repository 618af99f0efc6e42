//! Links Debian's static C libraries (libxen-dev) for the side-by-side baselines, when present.
//!
//! For each C library the benches compare against, this script looks for `lib<name>.a` and the
//! archives it depends on. When all are found it links them statically into the `rxen-benches`
//! library and sets `cfg(has_lib<name>)`, which switches the C twins on. When any is missing it
//! links nothing and sets no cfg: the C twins compile out and the workspace still builds on a
//! machine with only Rust installed.
//!
//! With `RXEN_REQUIRE_C_BASELINES=1` in the environment (the test script sets it) a missing
//! library is a build error instead, so CI cannot silently drop a baseline.
//!
//! To add a library: one more [`CLibs::link_static_c_lib`] call in `main`, e.g.
//! `libs.link_static_c_lib("xenstore", &["xentoolcore"])` for `cfg(has_libxenstore)`; the
//! `cargo::rustc-check-cfg` line comes with it, and a dependency two libraries share is linked
//! once.

use std::collections::BTreeSet;
use std::env;
use std::path::{Path, PathBuf};

/// The environment variable that turns a missing C library into a build error.
const REQUIRE_VAR: &str = "RXEN_REQUIRE_C_BASELINES";
/// Extra directory to search first (for a non-Debian layout), as `RXEN_C_LIB_DIR=/path`.
const LIB_DIR_VAR: &str = "RXEN_C_LIB_DIR";

/// Where Debian (and most distributions) put static libraries.
const SEARCH_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed={REQUIRE_VAR}");
    println!("cargo::rerun-if-env-changed={LIB_DIR_VAR}");

    let mut libs = CLibs {
        dirs: search_dirs(),
        require: env::var(REQUIRE_VAR).is_ok_and(|v| v == "1"),
        linked: BTreeSet::new(),
    };

    // libxencall 4.17 needs libxentoolcore (active-handle registry) and libxentoollog (its
    // default stderr logger). pthread and dl live in glibc >= 2.34 itself.
    libs.link_static_c_lib("xencall", &["xentoolcore", "xentoollog"]);
    // libxenstore 4.17 registers its handles with libxentoolcore too.
    libs.link_static_c_lib("xenstore", &["xentoolcore"]);
}

/// The C libraries linked so far, and where to look for more.
struct CLibs {
    /// Searched in order for `lib<name>.a`.
    dirs: Vec<PathBuf>,
    /// `RXEN_REQUIRE_C_BASELINES=1`: a missing archive fails the build.
    require: bool,
    /// Archives already linked (a dependency shared by two libraries is linked once).
    linked: BTreeSet<String>,
}

/// The directories searched for `lib*.a`, `RXEN_C_LIB_DIR` first.
fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = env::var_os(LIB_DIR_VAR) {
        dirs.push(PathBuf::from(dir));
    }
    dirs.extend(SEARCH_DIRS.iter().map(PathBuf::from));
    dirs
}

impl CLibs {
    /// Link `lib<name>.a` and its `deps` (dependants before dependencies) statically, and set
    /// `cfg(has_lib<name>)`; or, when any archive is missing, link nothing and set no cfg (fail
    /// instead when `require` is set). Returns whether the library is linked.
    fn link_static_c_lib(&mut self, name: &str, deps: &[&str]) -> bool {
        let dirs = &self.dirs;
        let cfg = format!("has_lib{name}");
        println!("cargo::rustc-check-cfg=cfg({cfg})");

        let mut found = Vec::new();
        let mut missing = Vec::new();
        for lib in std::iter::once(&name).chain(deps) {
            match find_static(lib, dirs) {
                Some(path) => found.push((lib, path)),
                None => missing.push(format!("lib{lib}.a")),
            }
        }

        if !missing.is_empty() {
            let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            let msg = format!(
                "C baseline lib{name} disabled: {} not found in {}. Install Debian's \
                 libxen-dev (apt-get install libxen-dev) or point {LIB_DIR_VAR} at the archives.",
                missing.join(", "),
                searched.join(", ")
            );
            // A path that does not exist counts as changed, so this script re-runs on every build
            // until the archive appears (apt-get install libxen-dev after a first build).
            if let Some(dir) = dirs.first() {
                println!(
                    "cargo::rerun-if-changed={}",
                    dir.join(format!("lib{name}.a")).display()
                );
            }
            if self.require {
                panic!("{REQUIRE_VAR}=1 but {msg}");
            }
            println!("cargo::warning={msg}");
            return false;
        }

        for (lib, path) in &found {
            if !self.linked.insert(lib.to_string()) {
                continue;
            }
            let dir = path.parent().expect("an archive path has a directory");
            println!("cargo::rustc-link-search=native={}", dir.display());
            println!("cargo::rustc-link-lib=static={lib}");
            println!("cargo::rerun-if-changed={}", path.display());
        }
        println!("cargo::rustc-cfg={cfg}");
        true
    }
}

/// The first `lib<lib>.a` in `dirs`.
fn find_static(lib: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter()
        .map(|d| d.join(format!("lib{lib}.a")))
        .find(|p| Path::new(p).is_file())
}
