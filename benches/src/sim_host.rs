//! The simulated host the toolstack benches run on: a state directory of their own, removed
//! (and its xenstored stopped) when dropped, and `Host::open` on it. Included by the bench
//! targets with `#[path]` (the library itself does not depend on `toolstack`).

use std::path::{Path, PathBuf};

use toolstack::{Host, HostOptions};

/// Opens the simulated host in `dir`, booting it with `total_mib` of RAM and 1 GiB for dom0.
pub fn open(dir: &Path, total_mib: u64) -> Host {
    Host::open(&HostOptions {
        force_simulated: true,
        sim_dir: Some(dir.to_owned()),
        sim_config: Some(xenctrl::SimConfig {
            total_mib,
            dom0_mib: 1024,
            ..Default::default()
        }),
        ..HostOptions::default()
    })
    .expect("open the simulated host")
}

/// A fresh state directory, `rxen-bench-<tag>-<pid>` in the temporary directory.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("rxen-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = toolstack::sim::shutdown(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
