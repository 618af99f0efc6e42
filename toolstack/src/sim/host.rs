//! Reaching the simulated host, and booting it when nobody has.

use std::io;

use nix::fcntl::FlockArg;
use xenctrl::{SimHypervisor, XenCtrl};

use super::daemon::{daemon_exe, running_daemon, spawn_daemon};
use super::{lock_file, sim_err, SimOptions, SimPaths};
use crate::error::{Error, Result};

/// Connect to the simulated host in `opts.dir`, booting it first if xenstored is not running.
/// Returns the hypervisor handle, a xenstore client, and whether this call booted the host.
///
/// # Errors
///
/// [`Error::SimHost`] when the directory, the state file or the daemon cannot be set up.
pub fn connect(opts: &SimOptions) -> Result<(XenCtrl, xenstore::Client, bool)> {
    let paths = SimPaths {
        dir: opts.dir.clone(),
    };
    let dir = &opts.dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| sim_err(dir, "cannot create the state directory", Some(e)))?;
    let mut booted = false;
    let xs = match xenstore::Client::open_path(paths.socket()) {
        Ok(xs) => xs,
        Err(_) => {
            let _boot = lock_file(&paths.boot_lock(), FlockArg::LockExclusive)
                .map_err(|e| sim_err(dir, "cannot take the boot lock", Some(e)))?;
            // Someone may have booted it while we waited for the lock.
            match xenstore::Client::open_path(paths.socket()) {
                Ok(xs) => xs,
                Err(_) => {
                    booted = true;
                    boot(opts, &paths)?
                }
            }
        }
    };
    let xc =
        XenCtrl::simulated_persistent(&paths.hypervisor(), opts.config.clone()).map_err(|e| {
            Error::SimHost {
                dir: dir.clone(),
                what: "cannot open the hypervisor state".into(),
                source: Some(Box::new(e)),
            }
        })?;
    Ok((xc, xs, booted))
}

/// Boot the host: fresh hypervisor, wiped toolstack state, xenstored started, dom0 entries.
/// Called with the boot lock held and no xenstored answering.
fn boot(opts: &SimOptions, paths: &SimPaths) -> Result<xenstore::Client> {
    let dir = &opts.dir;
    if let Some(pid) = running_daemon(paths)? {
        return Err(sim_err(
            dir,
            format!("xenstored (pid {pid}) holds the host but does not answer on its socket"),
            None,
        ));
    }
    let sim = SimHypervisor::persistent_reset(paths.hypervisor(), opts.config.clone())
        .map_err(|e| sim_err(dir, "cannot reset the hypervisor state", Some(e)))?;
    let (dom0_kib, dom0_vcpus) = sim.with_state(|s| {
        let d = &s.domains[&0];
        (d.tot_pages * 4, d.config.max_vcpus)
    });
    drop(sim);
    for sub in paths.per_boot_dirs() {
        match std::fs::remove_dir_all(&sub) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(sim_err(
                    dir,
                    format!("cannot wipe {}", sub.display()),
                    Some(e),
                ))
            }
        }
    }
    super::hotplug::install(paths, &daemon_exe(opts)?)
        .map_err(|e| sim_err(dir, "cannot write the hotplug scripts", Some(e)))?;
    spawn_daemon(opts, paths)?;
    let xs = xenstore::Client::open_path(paths.socket()).map_err(Error::OpenXenstore)?;
    // What xen-init-dom0 writes, plus dom0's memory nodes (libxl__fill_dom0_memory_info).
    xs.transaction(|t| {
        t.write("/local/domain/0/name", "Domain-0")?;
        t.write("/local/domain/0/domid", "0")?;
        t.write("/local/domain/0/memory/target", dom0_kib.to_string())?;
        t.write("/local/domain/0/memory/static-max", dom0_kib.to_string())?;
        for cpu in 0..dom0_vcpus {
            t.write(
                format!("/local/domain/0/cpu/{cpu}/availability").as_str(),
                "online",
            )?;
        }
        t.write("/tool/xenstored/domid", "0")?;
        Ok(())
    })
    .map_err(|source| Error::XenstoreHost {
        what: "cannot write dom0's xenstore entries",
        source,
    })?;
    Ok(xs)
}
