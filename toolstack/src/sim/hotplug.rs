//! The simulated host's hotplug scripts: stubs of Xen's `block` and `vif-bridge`, which the
//! toolstack runs exactly as it runs Xen's (the same runner, arguments and environment).
//!
//! Boot writes them into the state directory ([`SimPaths::hotplug_scripts_dir`]). Each is two
//! lines of shell that use only `exec`, a builtin: they hand over to the host's own binary
//! (the one that runs its xenstored) as `EXE __rxen-sim-hotplug DIR SCRIPT ARGS...`, which
//! does what Xen's script does to xenstore:
//!
//! - `block add`: checks that the backend has reached InitWait (Xen's blkback is there before
//!   the script runs; a toolstack that did not wait for it would be caught), then writes
//!   `physical-device` and `physical-device-path`, which blkback waits for, and
//!   `hotplug-status` = `connected`;
//! - `vif-bridge online`: the same InitWait check, then `hotplug-status` = `connected`;
//! - `block remove`, `vif-bridge offline`: `hotplug-status` goes, as Xen's cleanup removes it.
//!
//! What the simulated backend is told to do for the domain ([`super::backend::Behaviour`])
//! applies: with `fail` the script fails as Xen's do (their `fatal`): `hotplug-error` says why,
//! `hotplug-status` = `error`, exit status 1. With [`super::backend::HOTPLUG_DELAY_PATH`] set
//! to N, `add` takes N milliseconds first, as real scripts take time (`losetup`, `brctl`).

use std::io;
use std::path::Path;

use super::backend::{behaviour_path, Behaviour, HOTPLUG_DELAY_PATH, HOTPLUG_ERROR};
use super::SimPaths;
use crate::xenbus::XenbusState;
use xenstore::ReadOpt;

/// The first argument that makes a toolstack binary run a simulated hotplug script.
pub const HOTPLUG_ARG: &str = "__rxen-sim-hotplug";

/// The scripts the simulated host has, as Xen's tools name them.
pub const SCRIPTS: [&str; 2] = ["block", "vif-bridge"];

/// `path` quoted for `sh`.
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// Writes the stub scripts into `paths`' script directory, each handing over to `exe`.
///
/// # Errors
///
/// The I/O error of a directory or file that could not be written.
pub(crate) fn install(paths: &SimPaths, exe: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = paths.hotplug_scripts_dir();
    std::fs::create_dir_all(&dir)?;
    for name in SCRIPTS {
        let text = format!(
            "#!/bin/sh\n# The simulated host's stand-in for Xen's {name} hotplug script.\n\
             exec {} {HOTPLUG_ARG} {} {name} \"$@\"\n",
            quoted(exe),
            quoted(&paths.dir)
        );
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    Ok(())
}

/// If this process was started as a simulated hotplug script, run it and exit.
pub(crate) fn run_if_asked() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some(HOTPLUG_ARG) {
        return;
    }
    let args: Vec<String> = args.collect();
    let code = match args.as_slice() {
        [dir, script, action, ..] => match run(Path::new(dir), script, action) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("{script}: {e}");
                1
            }
        },
        _ => {
            eprintln!("usage: {HOTPLUG_ARG} DIR SCRIPT ACTION [ARGS...]");
            2
        }
    };
    std::process::exit(code);
}

fn run(dir: &Path, script: &str, action: &str) -> xenstore::Result<i32> {
    let xs = xenstore::Client::open_path(SimPaths::new(dir).socket())?;
    // The simulated backend driver is dom0's, as Xen's scripts run in the backend domain.
    let rel = std::env::var("XENBUS_PATH").unwrap_or_default();
    let be = format!("/local/domain/0/{rel}");
    let domid = rel.split('/').nth(2).unwrap_or_default();
    let adding = matches!(action, "add" | "online");
    if !adding {
        xs.transaction(|t| crate::paths::rm_if_present(t, &format!("{be}/hotplug-status")))?;
        return Ok(0);
    }
    let delay = xs
        .read_string_opt(HOTPLUG_DELAY_PATH)?
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if delay > 0 {
        std::thread::sleep(std::time::Duration::from_millis(delay));
    }
    let fatal = |why: &str| -> xenstore::Result<i32> {
        eprintln!("{script}: {why}");
        xs.transaction(|t| {
            t.write(&format!("{be}/hotplug-error"), why)?;
            t.write(&format!("{be}/hotplug-status"), "error")
        })?;
        Ok(1)
    };
    let mode = xs
        .read_string_opt(&behaviour_path(domid.parse().unwrap_or(0)))?
        .map_or(Behaviour::Normal, |b| Behaviour::parse(&b));
    if mode == Behaviour::Fail {
        return fatal(HOTPLUG_ERROR);
    }
    let state = xs
        .read_string_opt(&format!("{be}/state"))?
        .as_deref()
        .and_then(XenbusState::parse);
    if !matches!(state, Some(XenbusState::InitWait | XenbusState::Connected)) {
        return fatal("the backend has not reached InitWait: the script ran too early");
    }
    xs.transaction(|t| {
        if script == "block" {
            let params = t
                .read_string_opt(&format!("{be}/params"))?
                .unwrap_or_default();
            // A loop device's numbers, as `losetup` gives for a file.
            t.write(&format!("{be}/physical-device"), "7:0")?;
            t.write(&format!("{be}/physical-device-path"), params)?;
        }
        t.write(&format!("{be}/hotplug-status"), "connected")
    })?;
    Ok(0)
}
