//! `rxl`'s command line: its options and subcommands, as clap parses them.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "rxl",
    version,
    about = "Manage Xen domains (an xl work-alike in Rust)"
)]
pub(crate) struct Cli {
    /// The simulated host's state directory (used when there is no /dev/xen/privcmd, or with
    /// --simulate).
    #[arg(long, global = true, value_name = "DIR", env = "RXEN_SIM_DIR")]
    pub(crate) sim_dir: Option<PathBuf>,
    /// Use the simulated host even on real Xen.
    #[arg(long, global = true)]
    pub(crate) simulate: bool,
    /// Host RAM of a simulated host that boots with this command, MiB.
    #[arg(long, global = true, value_name = "MIB")]
    pub(crate) sim_memory: Option<u64>,
    /// dom0's RAM on a simulated host that boots with this command, MiB.
    #[arg(long, global = true, value_name = "MIB")]
    pub(crate) sim_dom0_memory: Option<u64>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Create a domain from an xl.cfg file: load its kernel, build it and start it (a config
    /// without a kernel makes an empty domain, left paused).
    Create {
        /// Leave the domain paused once built.
        #[arg(short = 'p')]
        paused: bool,
        /// Print nothing but errors.
        #[arg(short = 'q', long, conflicts_with = "verbose")]
        quiet: bool,
        /// Print each step as it is done, with its time, and where the time went at the end
        /// (as does `RXEN_CREATE_TIMINGS=1`, for the breakdown alone).
        #[arg(short = 'v', long)]
        verbose: bool,
        /// Stay in the foreground as the domain's monitor until it is gone (as `xl create
        /// -F`); without it, a monitor runs detached, logging to the host's log directory.
        #[arg(short = 'F', conflicts_with = "no_monitor")]
        foreground: bool,
        /// Start no monitor: nothing acts on the domain's shutdown (as `xl create -e`).
        #[arg(short = 'e')]
        no_monitor: bool,
        /// The config file.
        config: PathBuf,
        /// `KEY=VALUE` lines applied after the file, as xl does.
        overrides: Vec<String>,
    },
    /// List domains.
    List {
        /// Print each domain's stored configuration (JSON).
        #[arg(short = 'l', long)]
        long: bool,
        /// Print a JSON array of {domid, name, uuid, state, vcpus, target_kib,
        /// static_max_kib, max_mem_kib, tot_pages}.
        #[arg(long, conflicts_with = "long")]
        json: bool,
        /// Only these domains (ids or names).
        domains: Vec<String>,
    },
    /// Print host information.
    Info,
    /// Destroy a domain at once.
    Destroy {
        /// The domain (id or name).
        domain: String,
    },
    /// Pause a domain.
    Pause {
        /// The domain (id or name).
        domain: String,
    },
    /// Unpause a domain.
    Unpause {
        /// The domain (id or name).
        domain: String,
    },
    /// Set a domain's memory target (MEM in MiB, or with a b/k/m/g/t suffix).
    MemSet {
        /// The domain (id or name).
        domain: String,
        /// The new target.
        mem: String,
    },
    /// Set a domain's maximum memory (MEM in MiB, or with a b/k/m/g/t suffix).
    MemMax {
        /// The domain (id or name).
        domain: String,
        /// The new maximum.
        mem: String,
    },
    /// Dump xenstore, as xenstore-ls does.
    XenstoreLs {
        /// Where to start.
        #[arg(default_value = "/")]
        path: String,
        /// Show each node's permissions.
        #[arg(short = 'p')]
        perms: bool,
    },
    /// Print a domain's memory as seen under its userdata lock (JSON; for tests and checks).
    #[command(hide = true)]
    MemCheck {
        /// The domain (id or name).
        domain: String,
    },
    /// Attach a disk: `block-attach DOMAIN DISK-SPEC...` (xl-disk-configuration(5); several
    /// words are joined with commas, as xl joins them).
    BlockAttach {
        /// The domain (id or name).
        domain: String,
        /// The disk spec, e.g. `/images/d.img,raw,xvdb,rw` or `target=... vdev=xvdb`.
        #[arg(required = true, num_args = 1..)]
        spec: Vec<String>,
        /// Seconds to wait for the backend to connect.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Detach a disk by its vdev (`xvdb`) or device id (`51728`).
    BlockDetach {
        /// The domain (id or name).
        domain: String,
        /// The disk.
        device: String,
        /// Remove it even if the backend does not close.
        #[arg(short = 'f', long)]
        force: bool,
        /// Seconds to wait for the backend to close.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// List a domain's disks.
    BlockList {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The domains (ids or names).
        #[arg(required = true)]
        domains: Vec<String>,
    },
    /// Attach a network interface: `network-attach DOMAIN [KEY=VALUE...]`
    /// (xl-network-configuration(5): mac=, bridge=, script=, devid=, ...).
    NetworkAttach {
        /// The domain (id or name).
        domain: String,
        /// The vif settings.
        settings: Vec<String>,
        /// Seconds to wait for the backend to connect.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Detach a network interface by device id or MAC address.
    NetworkDetach {
        /// The domain (id or name).
        domain: String,
        /// The interface.
        device: String,
        /// Remove it even if the backend does not close.
        #[arg(short = 'f', long)]
        force: bool,
        /// Seconds to wait for the backend to close.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// List a domain's network interfaces.
    NetworkList {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The domains (ids or names).
        #[arg(required = true)]
        domains: Vec<String>,
    },
    /// Attach a virtual keyboard: `vkb-attach DOMAIN [KEY=VALUE...]` (backend-type=,
    /// unique-id=, devid=, ...).
    VkbAttach {
        /// The domain (id or name).
        domain: String,
        /// The vkb settings.
        settings: Vec<String>,
        /// Seconds to wait for the backend to connect.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Detach a virtual keyboard by device id.
    VkbDetach {
        /// The domain (id or name).
        domain: String,
        /// The device id.
        devid: u32,
        /// Remove it even if the backend does not close.
        #[arg(short = 'f', long)]
        force: bool,
        /// Seconds to wait for the backend to close.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// List a domain's virtual keyboards.
    VkbList {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The domains (ids or names).
        #[arg(required = true)]
        domains: Vec<String>,
    },
    /// Attach a secondary console (a channel): `channel-attach DOMAIN name=NAME
    /// connection=pty [devid=N]`.
    ChannelAttach {
        /// The domain (id or name).
        domain: String,
        /// The channel settings.
        settings: Vec<String>,
        /// Seconds to wait for the backend to connect.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Detach a secondary console by device id or name (the primary console, 0, stays
    /// until the domain is destroyed).
    ChannelDetach {
        /// The domain (id or name).
        domain: String,
        /// The console's device id or channel name.
        device: String,
        /// Remove it even if the backend does not close.
        #[arg(short = 'f', long)]
        force: bool,
        /// Seconds to wait for the backend to close.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// List a domain's consoles: the primary one (0) and the channels.
    ConsoleList {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The domains (ids or names).
        #[arg(required = true)]
        domains: Vec<String>,
    },
    /// Check the device invariant (JSON list of violations; for tests): of these domain ids,
    /// or of every domain that exists or left anything behind.
    #[command(hide = true)]
    DeviceCheck {
        /// The domain ids (they may no longer exist).
        domids: Vec<u16>,
    },
    /// Complete or undo the device work and destroys that a dead process left half done: of
    /// these domain ids, or (with none given) of every domain that exists or left anything
    /// behind, after rolling back every creation that died and finishing every restart whose
    /// monitor died.
    Recover {
        /// The domain ids (they may no longer exist).
        domids: Vec<u16>,
    },
    /// Ask a guest to power off through the PV control protocol (`control/shutdown`), as
    /// `xl shutdown` does; its monitor then applies `on_poweroff`.
    Shutdown {
        /// Wait until the domain has shut down or is gone.
        #[arg(short = 'w')]
        wait: bool,
        /// For a guest without PV control (HVM), have Xen shut it down
        /// (SCHEDOP_remote_shutdown) instead of refusing.
        #[arg(short = 'F')]
        force: bool,
        /// The domain (id or name).
        domain: String,
    },
    /// Ask a guest to reboot through the PV control protocol, as `xl reboot` does; its
    /// monitor then applies `on_reboot`.
    Reboot {
        /// Wait until the domain has shut down or is gone.
        #[arg(short = 'w')]
        wait: bool,
        /// For a guest without PV control (HVM), have Xen shut it down with reason reboot
        /// instead of refusing.
        #[arg(short = 'F')]
        force: bool,
        /// The domain (id or name).
        domain: String,
    },
    /// Attach to a domain's console, as `xl console` does: Ctrl-] detaches. Without a
    /// terminal on stdin, stdin is sent until its end and the console shown until it closes.
    Console {
        /// The console type.
        #[arg(short = 't', value_enum, default_value_t = ConsoleKind::Pv)]
        kind: ConsoleKind,
        /// The console number (0: the primary PV console).
        #[arg(short = 'n', default_value_t = 0)]
        num: u32,
        /// How long to wait for the console's pty to appear, seconds.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
        /// The domain (id or name).
        domain: String,
    },
    /// Watch a domain in the foreground and apply its config's on_poweroff / on_reboot /
    /// on_crash / on_watchdog actions when it shuts down, until it is gone (what `rxl create`
    /// runs, detached). One monitor per domain: a second one stops at once.
    Monitor {
        /// The domain (id or name).
        domain: String,
    },
    /// Stop the simulated host (its xenstored); it boots afresh, empty, at the next command.
    SimStop,
}

/// xl's `parse_mem_size_kb`: a number with an optional b/k/m/g/t suffix, MiB by default.
pub(crate) fn parse_mem_kib(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid memory size {s:?}: expected a number, e.g. 512m"))?;
    let kib = match suffix.to_ascii_lowercase().as_str() {
        "" | "m" => n.checked_mul(1024),
        "k" => Some(n),
        "b" => Some(n / 1024),
        "g" => n.checked_mul(1024 * 1024),
        "t" => n.checked_mul(1024 * 1024 * 1024),
        _ => None,
    };
    kib.ok_or_else(|| format!("invalid memory size {s:?}: the suffix must be b, k, m, g or t"))
}

#[cfg(test)]
mod tests {
    use super::parse_mem_kib;

    #[test]
    fn memory_sizes_parse_as_xl_parses_them() {
        assert_eq!(parse_mem_kib("512"), Ok(512 * 1024));
        assert_eq!(parse_mem_kib("512m"), Ok(512 * 1024));
        assert_eq!(parse_mem_kib("2G"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_mem_kib("4096k"), Ok(4096));
        assert_eq!(parse_mem_kib("1048576b"), Ok(1024));
        assert!(parse_mem_kib("12x").is_err());
        assert!(parse_mem_kib("m").is_err());
        assert!(parse_mem_kib("99999999999999999999g").is_err());
    }
}

/// `rxl console -t`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConsoleKind {
    /// A PV console.
    Pv,
    /// An emulated serial port.
    Serial,
}
