//! `rxl`: an xl-like command line for real Xen or the simulated host.
//!
//! Runs against real Xen when `/dev/xen/privcmd` exists, else against the simulated host in
//! `--sim-dir` (or `$RXEN_SIM_DIR`, or `~/.local/state/rxen/sim`), booting it on first use.

// As in the library: toolstack errors are large, built once per failed command.
#![allow(clippy::result_large_err)]

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use toolstack::config::{DiskSpec, VifSpec};
use toolstack::create::Step;
use toolstack::device::{self, DeviceKind, DeviceRef};
use toolstack::domain::{self, DomainSummary};
use toolstack::lock::{level, Locked};
use toolstack::memory::{self, Target};
use toolstack::paths::ReadOpt;
use toolstack::{Error, Host, HostKind, HostOptions};

#[derive(Parser, Debug)]
#[command(
    name = "rxl",
    version,
    about = "Manage Xen domains (an xl work-alike in Rust)"
)]
struct Cli {
    /// The simulated host's state directory (used when there is no /dev/xen/privcmd, or with
    /// --simulate).
    #[arg(long, global = true, value_name = "DIR", env = "RXEN_SIM_DIR")]
    sim_dir: Option<PathBuf>,
    /// Use the simulated host even on real Xen.
    #[arg(long, global = true)]
    simulate: bool,
    /// Host RAM of a simulated host that boots with this command, MiB.
    #[arg(long, global = true, value_name = "MIB")]
    sim_memory: Option<u64>,
    /// dom0's RAM on a simulated host that boots with this command, MiB.
    #[arg(long, global = true, value_name = "MIB")]
    sim_dom0_memory: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a domain from an xl.cfg file (always left paused: kernel loading is not
    /// supported yet).
    Create {
        /// Leave the domain paused (the only mode for now; accepted for xl compatibility).
        #[arg(short = 'p')]
        paused: bool,
        /// Print nothing but errors.
        #[arg(short = 'q', long)]
        quiet: bool,
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
    /// behind, after rolling back every creation that died.
    Recover {
        /// The domain ids (they may no longer exist).
        domids: Vec<u16>,
    },
    /// Stop the simulated host (its xenstored); it boots afresh, empty, at the next command.
    SimStop,
}

/// xl's `parse_mem_size_kb`: a number with an optional b/k/m/g/t suffix, MiB by default.
fn parse_mem_kib(s: &str) -> Result<u64, String> {
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

fn main() -> ExitCode {
    toolstack::sim::run_daemon_if_asked();
    let cli = Cli::parse();
    let mut root = Locked::root();
    match run(cli, &mut root) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rxl: {}", chain(&*e));
            ExitCode::FAILURE
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

type AnyResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn open_host(cli: &Cli) -> AnyResult<Host> {
    let mut opts = HostOptions {
        force_simulated: cli.simulate,
        sim_dir: cli.sim_dir.clone(),
        ..HostOptions::default()
    };
    if cli.sim_memory.is_some() || cli.sim_dom0_memory.is_some() {
        let mut c = xenctrl::SimConfig::default();
        if let Some(m) = cli.sim_memory {
            c.total_mib = m;
        }
        if let Some(m) = cli.sim_dom0_memory {
            c.dom0_mib = m;
        }
        opts.sim_config = Some(c);
    }
    Ok(Host::open(&opts)?)
}

fn run(cli: Cli, root: &mut Locked<'_, level::Unlocked>) -> AnyResult {
    if let Command::SimStop = cli.command {
        let dir = cli
            .sim_dir
            .clone()
            .unwrap_or_else(toolstack::sim::default_dir);
        if toolstack::sim::shutdown(&dir)? {
            eprintln!("rxl: simulated host in {} stopped", dir.display());
        }
        return Ok(());
    }
    let host = open_host(&cli)?;
    match &cli.command {
        Command::Create {
            paused,
            quiet,
            config,
            overrides,
        } => create(&host, root, config, overrides, *paused, *quiet),
        Command::List {
            long,
            json,
            domains,
        } => list(&host, root, *long, *json, domains),
        Command::Info => info(&host),
        Command::Destroy { domain: d } => {
            let domid = domain::resolve(&host, d)?;
            domain::destroy(&host, root, domid)?;
            Ok(())
        }
        Command::Pause { domain: d } => Ok(domain::pause(&host, domain::resolve(&host, d)?)?),
        Command::Unpause { domain: d } => Ok(domain::unpause(&host, domain::resolve(&host, d)?)?),
        Command::MemSet { domain: d, mem } => {
            let kib = parse_mem_kib(mem)?;
            let domid = domain::resolve(&host, d)?;
            memory::set_memory_target(&host, root, domid, Target::Absolute(kib), true)?;
            Ok(())
        }
        Command::MemMax { domain: d, mem } => {
            let kib = parse_mem_kib(mem)?;
            let domid = domain::resolve(&host, d)?;
            memory::set_max_mem(&host, root, domid, kib)?;
            Ok(())
        }
        Command::XenstoreLs { path, perms } => xenstore_ls(&host, path, *perms),
        Command::MemCheck { domain: d } => {
            let domid = domain::resolve(&host, d)?;
            let view = memory::observe(&host, root, domid)?;
            println!("{}", serde_json::to_string(&view)?);
            Ok(())
        }
        Command::BlockAttach {
            domain: d,
            spec,
            timeout,
        } => {
            let domid = domain::resolve(&host, d)?;
            let spec = DiskSpec::parse(&spec.join(","))?;
            device::add_disk(&host, root, domid, &spec, &dev_opts(*timeout, false)?)?;
            Ok(())
        }
        Command::NetworkAttach {
            domain: d,
            settings,
            timeout,
        } => {
            let domid = domain::resolve(&host, d)?;
            let spec = VifSpec::parse(&settings.join(","))?;
            device::add_nic(&host, root, domid, &spec, &dev_opts(*timeout, false)?)?;
            Ok(())
        }
        Command::BlockDetach {
            domain: d,
            device: which,
            force,
            timeout,
        } => {
            let domid = domain::resolve(&host, d)?;
            let devid = device::vdev_to_devid(which)
                .ok_or_else(|| format!("{which:?} is not a virtual disk name or device id"))?;
            let dev = DeviceRef {
                kind: DeviceKind::Vbd,
                domid,
                devid,
            };
            device::remove(&host, root, dev, &dev_opts(*timeout, *force)?)?;
            Ok(())
        }
        Command::NetworkDetach {
            domain: d,
            device: which,
            force,
            timeout,
        } => {
            let by_mac = |v: &VifSpec| v.mac().is_some_and(|m| m.eq_ignore_ascii_case(which));
            let what = format!("no vif with MAC {which}");
            let dev = keyed_device(&host, root, d, DeviceKind::Vif, which, &by_mac, &what)?;
            device::remove(&host, root, dev, &dev_opts(*timeout, *force)?)?;
            Ok(())
        }
        Command::VkbAttach {
            domain: d,
            settings,
            timeout,
        } => {
            let domid = domain::resolve(&host, d)?;
            let spec = VifSpec::parse(&settings.join(","))?;
            device::add_vkb(&host, root, domid, &spec, &dev_opts(*timeout, false)?)?;
            Ok(())
        }
        Command::VkbDetach {
            domain: d,
            devid,
            force,
            timeout,
        } => {
            let domid = domain::resolve(&host, d)?;
            let dev = DeviceRef {
                kind: DeviceKind::Vkb,
                domid,
                devid: *devid,
            };
            device::remove(&host, root, dev, &dev_opts(*timeout, *force)?)?;
            Ok(())
        }
        Command::ChannelAttach {
            domain: d,
            settings,
            timeout,
        } => {
            let domid = domain::resolve(&host, d)?;
            let spec = VifSpec::parse_channel(&settings.join(","))?;
            let dev = device::add_channel(&host, root, domid, &spec, &dev_opts(*timeout, false)?)?;
            eprintln!("rxl: {dev} attached");
            Ok(())
        }
        Command::ChannelDetach {
            domain: d,
            device: which,
            force,
            timeout,
        } => {
            let by_name = |v: &VifSpec| v.get("name") == Some(which.as_str());
            let what = format!("no channel named {which:?}");
            let dev = keyed_device(&host, root, d, DeviceKind::Console, which, &by_name, &what)?;
            device::remove(&host, root, dev, &dev_opts(*timeout, *force)?)?;
            Ok(())
        }
        Command::ConsoleList { json, domains } => {
            device_list(&host, root, DeviceKind::Console, domains, *json)
        }
        Command::VkbList { json, domains } => {
            device_list(&host, root, DeviceKind::Vkb, domains, *json)
        }
        Command::BlockList { json, domains } => {
            device_list(&host, root, DeviceKind::Vbd, domains, *json)
        }
        Command::NetworkList { json, domains } => {
            device_list(&host, root, DeviceKind::Vif, domains, *json)
        }
        Command::DeviceCheck { domids } => {
            let mut v = Vec::new();
            if domids.is_empty() {
                v = device::check_all(&host, root)?;
            }
            for &d in domids {
                v.extend(device::check(&host, root, d)?);
            }
            println!("{}", serde_json::to_string(&v)?);
            Ok(())
        }
        Command::Recover { domids } => {
            let mut done = Vec::new();
            if domids.is_empty() {
                // Creations first: their domains are rolled back whole, leaving nothing for
                // the device pass.
                done = toolstack::create::recover_interrupted(&host, root)?;
                done.extend(device::recover_all(&host, root)?);
            }
            for &d in domids {
                done.extend(device::recover(&host, root, d)?);
            }
            for line in done {
                eprintln!("rxl: recover: {line}");
            }
            Ok(())
        }
        Command::SimStop => Ok(()),
    }
}

/// The device of `kind` that `which` names on `domain`: a device id, or else the one whose
/// recorded spec `matches` (a vif's MAC, a channel's name); `none` says what is missing.
fn keyed_device(
    host: &Host,
    root: &mut Locked<'_, level::Unlocked>,
    domain: &str,
    kind: DeviceKind,
    which: &str,
    matches: &dyn Fn(&VifSpec) -> bool,
    none: &str,
) -> AnyResult<DeviceRef> {
    let domid = domain::resolve(host, domain)?;
    let devid = match which.parse::<u32>() {
        Ok(n) => n,
        Err(_) => device::list(host, root, domid, kind)?
            .into_iter()
            .find(|i| VifSpec::parse(&i.spec).is_ok_and(|v| matches(&v)))
            .map(|i| i.devid)
            .ok_or_else(|| format!("domain {domid} has {none}"))?,
    };
    Ok(DeviceRef { kind, domid, devid })
}

fn dev_opts(timeout: f64, force: bool) -> AnyResult<device::Options> {
    let timeout = std::time::Duration::try_from_secs_f64(timeout)
        .map_err(|_| format!("invalid timeout {timeout}: expected a number of seconds"))?;
    Ok(device::Options {
        timeout,
        force,
        ..device::Options::default()
    })
}

fn device_list(
    host: &Host,
    root: &mut Locked<'_, level::Unlocked>,
    kind: DeviceKind,
    domains: &[String],
    json: bool,
) -> AnyResult {
    let mut all = Vec::new();
    for d in domains {
        let domid = domain::resolve(host, d)?;
        for info in device::list(host, root, domid, kind)? {
            all.push((domid, info));
        }
    }
    if json {
        let v: Vec<serde_json::Value> = all
            .iter()
            .map(|(domid, i)| {
                let mut v = serde_json::to_value(i).unwrap_or_default();
                v["domid"] = (*domid).into();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let num = |n: Option<u32>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let mut out = std::io::stdout().lock();
    match kind {
        DeviceKind::Vif => writeln!(out, "Idx BE  Mac Addr.         state BE-state BE-path")?,
        DeviceKind::Vkb => writeln!(out, "Idx   BE  state BE-state BE-path")?,
        DeviceKind::Console => writeln!(
            out,
            "Idx BE  Name             state BE-state Tty                  BE-path"
        )?,
        _ => writeln!(out, "Vdev  BE  state BE-state BE-path")?,
    }
    for (_, i) in &all {
        let be = i
            .backend_id
            .map_or_else(|| "-".to_owned(), |b| b.to_string());
        let path = i.backend_path.as_deref().unwrap_or("-");
        match kind {
            DeviceKind::Vif => {
                let mac = VifSpec::parse(&i.spec)
                    .ok()
                    .and_then(|v| v.mac().map(str::to_owned))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{:<3} {:<3} {:<17} {:<5} {:<8} {}",
                    i.devid,
                    be,
                    mac,
                    num(i.frontend_state),
                    num(i.backend_state),
                    path
                )?;
            }
            DeviceKind::Console => {
                let name = VifSpec::parse(&i.spec)
                    .ok()
                    .and_then(|v| v.get("name").map(str::to_owned))
                    .unwrap_or_else(|| "(primary)".to_owned());
                let tty = i.tty.as_deref().filter(|t| !t.is_empty()).unwrap_or("-");
                writeln!(
                    out,
                    "{:<3} {:<3} {:<16} {:<5} {:<8} {:<20} {}",
                    i.devid,
                    be,
                    name,
                    num(i.frontend_state),
                    num(i.backend_state),
                    tty,
                    path
                )?;
            }
            _ => writeln!(
                out,
                "{:<5} {:<3} {:<5} {:<8} {}",
                i.devid,
                be,
                num(i.frontend_state),
                num(i.backend_state),
                path
            )?,
        }
    }
    Ok(())
}

fn create(
    host: &Host,
    root: &mut Locked<'_, level::Unlocked>,
    path: &std::path::Path,
    overrides: &[String],
    paused: bool,
    quiet: bool,
) -> AnyResult {
    if !quiet {
        eprintln!("Parsing config from {}", path.display());
    }
    let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let (config, warnings) = toolstack::config::xlcfg::load(path, &overrides)?;
    for w in warnings {
        eprintln!("rxl: warning: {w}");
    }
    if config.kernel.is_some() && !quiet {
        eprintln!(
            "rxl: note: the kernel is recorded in the domain's config but not loaded \
             (kernel loading is not supported yet)"
        );
    }
    let tty = std::io::stderr().is_terminal() && !quiet;
    let mut progress = |step: Step| {
        if !tty {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = match step {
            Step::Created(d) => write!(err, "\rdomain {d}: created, claiming memory"),
            Step::Claimed { pages } => {
                write!(err, "\rdomain: claimed {} MiB                ", pages / 256)
            }
            Step::Populating { done, total } => write!(
                err,
                "\rpopulating memory: {} / {} MiB      ",
                done / 256,
                total / 256
            ),
            Step::Xenstore => write!(err, "\rwriting xenstore entries                "),
            Step::Stored => writeln!(err, "\rdone                                    "),
        };
        let _ = err.flush();
    };
    let created = toolstack::create::create(host, root, &config, &mut progress)?;
    if !quiet {
        eprintln!(
            "Domain {} ({}) created, paused{}.",
            created.domid,
            config.name,
            if paused {
                ""
            } else {
                " (kernel loading is not supported yet, so it is not started)"
            }
        );
        if !created.introduced {
            eprintln!(
                "rxl: note: xenstored did not accept the domain's introduction (its store \
                 ring is set up only when a kernel is loaded)"
            );
        }
    }
    Ok(())
}

fn list(
    host: &Host,
    root: &mut Locked<'_, level::Unlocked>,
    long: bool,
    json: bool,
    only: &[String],
) -> AnyResult {
    let mut all: Vec<DomainSummary> = domain::list(host)?;
    if !only.is_empty() {
        let mut ids = Vec::new();
        for spec in only {
            ids.push(domain::resolve(host, spec)?);
        }
        all.retain(|d| ids.contains(&d.domid));
    }
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &all)?;
        writeln!(out)?;
        return Ok(());
    }
    if long {
        let mut docs = Vec::new();
        for d in &all {
            let config = stored_config(host, root, d.domid)?;
            docs.push(serde_json::json!({ "domid": d.domid, "config": config }));
        }
        serde_json::to_writer_pretty(&mut out, &docs)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "Name                                        ID   Mem VCPUs\tState\tTime(s)"
    )?;
    for d in &all {
        // xl's letters, then xl's column widths.
        #[allow(clippy::cast_precision_loss)] // seconds to one decimal
        let secs = d.cpu_time_ns as f64 / 1e9;
        writeln!(
            out,
            "{:<40} {:>5} {:>5} {:>5}     {}  {:>8.1}",
            d.name,
            d.domid,
            d.mem_mib(),
            d.vcpus,
            d.state,
            secs
        )?;
    }
    Ok(())
}

/// A domain's stored config, read under its userdata lock (`null` for one without: dom0, or a
/// domain another toolstack made).
fn stored_config(
    host: &Host,
    root: &mut Locked<'_, level::Unlocked>,
    domid: u16,
) -> AnyResult<serde_json::Value> {
    let stored = host.try_with_userdata(root, domid, |guard| {
        host.configs
            .load_opt(guard)
            .map_err(|source| Error::Stored {
                domain: toolstack::DomainRef::id(domid),
                source,
            })
    })?;
    Ok(match stored.flatten() {
        Some(s) => serde_json::to_value(&s.config)?,
        None => serde_json::Value::Null,
    })
}

fn info(host: &Host) -> AnyResult {
    let xc = &host.xc;
    let p = xc.physinfo()?;
    let v = xc.version()?;
    let uname = nix::sys::utsname::uname()?;
    let mut out = std::io::stdout().lock();
    let mut kv = |k: &str, v: &dyn std::fmt::Display| writeln!(out, "{k:<23}: {v}");
    kv("host", &uname.nodename().to_string_lossy())?;
    kv("release", &uname.release().to_string_lossy())?;
    kv("version", &uname.version().to_string_lossy())?;
    kv("machine", &uname.machine().to_string_lossy())?;
    kv("nr_cpus", &p.nr_cpus)?;
    kv("max_cpu_id", &p.max_cpu_id)?;
    kv("nr_nodes", &p.nr_nodes)?;
    kv("cores_per_socket", &p.cores_per_socket)?;
    kv("threads_per_core", &p.threads_per_core)?;
    kv(
        "cpu_mhz",
        &format!("{}.{:03}", p.cpu_khz / 1000, p.cpu_khz % 1000),
    )?;
    kv("total_memory", &p.total_mib())?;
    kv(
        "free_memory",
        &xenctrl::pages_to_mib(p.free_pages.saturating_sub(p.outstanding_pages)),
    )?;
    kv(
        "outstanding_claims",
        &xenctrl::pages_to_mib(p.outstanding_pages),
    )?;
    kv("xen_major", &v.major)?;
    kv("xen_minor", &v.minor)?;
    kv("xen_extra", &v.extra)?;
    kv("xen_version", &v)?;
    kv("xen_caps", &xc.capabilities()?)?;
    kv("xen_pagesize", &xc.page_size()?)?;
    kv("xen_changeset", &xc.changeset()?)?;
    let backend = match host.kind() {
        HostKind::Xen => "xen (/dev/xen/privcmd)".to_owned(),
        HostKind::Simulated(dir) => format!("simulated ({})", dir.display()),
    };
    kv("rxl_host", &backend)?;
    Ok(())
}

/// xenstore-ls's output: one line per node, one space of indent per level, `name = "value"`.
fn xenstore_ls(host: &Host, path: &str, perms: bool) -> AnyResult {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let children = host.xs.directory(path)?;
    for c in children {
        let child = if path == "/" {
            format!("/{c}")
        } else {
            format!("{path}/{c}")
        };
        ls_node(host, &child, &c, 0, perms, &mut out)?;
    }
    out.flush()?;
    Ok(())
}

fn ls_node(
    host: &Host,
    path: &str,
    name: &str,
    depth: usize,
    perms: bool,
    out: &mut impl Write,
) -> AnyResult {
    // None: removed since we listed its parent.
    let Some(value) = host.xs.read_opt(path)? else {
        return Ok(());
    };
    let mut shown = String::new();
    for &b in &value {
        match b {
            b'"' => shown.push_str("\\\""),
            b'\\' => shown.push_str("\\\\"),
            0x20..=0x7e => shown.push(b as char),
            _ => shown.push_str(&format!("\\x{b:02x}")),
        }
    }
    write!(out, "{:depth$}{name} = \"{shown}\"", "")?;
    if perms {
        let p = host.xs.get_perms(path)?;
        let list: Vec<String> = p
            .entries()
            .iter()
            .map(|e| format!("{}{}", e.access.letter(), e.domid))
            .collect();
        write!(out, "  ({})", list.join(", "))?;
    }
    writeln!(out)?;
    let Some(children) = host.xs.directory_opt(path)? else {
        return Ok(());
    };
    for c in children {
        ls_node(host, &format!("{path}/{c}"), &c, depth + 1, perms, out)?;
    }
    Ok(())
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
