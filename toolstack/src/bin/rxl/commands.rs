//! What each `rxl` subcommand does, on top of the toolstack library.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;

use toolstack::config::{DiskSpec, VifSpec};
use toolstack::create::Step;
use toolstack::device::{self, DeviceKind, DeviceRef};
use toolstack::domain::{self};
use toolstack::lifecycle::{self, Request};
use toolstack::lock::{level, Locked};
use toolstack::memory::{self, Target};
use toolstack::{Error, Host};

use crate::cli::{parse_mem_kib, Cli, Command, ConsoleKind};
use crate::print::{device_list, info, list, xenstore_ls};
use crate::{open_host, AnyResult};

pub(crate) fn run(cli: Cli, root: &mut Locked<'_, level::Unlocked>) -> AnyResult {
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
            verbose,
            foreground,
            no_monitor,
            config,
            overrides,
        } => {
            let how = CreateHow {
                paused: *paused,
                quiet: *quiet,
                verbose: *verbose,
            };
            let domid = create(&host, root, config, overrides, how)?;
            let created = std::time::Instant::now();
            if *foreground {
                monitor(&host, root, domid)
            } else if *no_monitor {
                Ok(())
            } else {
                spawn_monitor(&host, domid)?;
                if *verbose {
                    eprintln!(
                        "rxl: process timings: monitor spawned {:.3} ms after the create",
                        created.elapsed().as_secs_f64() * 1e3
                    );
                }
                Ok(())
            }
        }
        Command::Shutdown {
            wait,
            force,
            domain: d,
        } => shutdown(&host, d, Request::Poweroff, *wait, *force),
        Command::Reboot {
            wait,
            force,
            domain: d,
        } => shutdown(&host, d, Request::Reboot, *wait, *force),
        Command::Console {
            kind,
            num,
            timeout,
            domain: d,
        } => console(&host, d, *kind, *num, *timeout),
        Command::Monitor { domain: d } => {
            let domid = domain::resolve(&host, d)?;
            monitor(&host, root, domid)
        }
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
                done.extend(toolstack::lifecycle::recover_restarts(&host, root)?);
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
pub(crate) fn keyed_device(
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

pub(crate) fn dev_opts(timeout: f64, force: bool) -> AnyResult<device::Options> {
    let timeout = std::time::Duration::try_from_secs_f64(timeout)
        .map_err(|_| format!("invalid timeout {timeout}: expected a number of seconds"))?;
    Ok(device::Options {
        timeout,
        force,
        ..device::Options::default()
    })
}

/// How `rxl create` runs and reports.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CreateHow {
    /// `-p`: leave the domain paused.
    pub(crate) paused: bool,
    /// `-q`: errors only.
    pub(crate) quiet: bool,
    /// `-v`: each step with its time, and the breakdown.
    pub(crate) verbose: bool,
}

/// The environment variable that makes `rxl create` print where the time went.
pub(crate) const TIMINGS_ENV: &str = "RXEN_CREATE_TIMINGS";

/// One progress step as a line (for `-v`) or a status (for a terminal).
fn step_text(step: Step) -> String {
    use toolstack::create::KernelSource;
    match step {
        Step::KernelLoaded { source, elf_bytes } => format!(
            "kernel loaded: {} KiB ELF image, {}",
            elf_bytes / 1024,
            match source {
                KernelSource::Plain => "not compressed",
                KernelSource::Unpacked => "unpacked",
                KernelSource::Cached => "unpacked image from the cache",
            }
        ),
        Step::Created(d) => format!("domain {d} created"),
        Step::Claimed { pages } => format!("claimed {} MiB", pages / 256),
        Step::Populating { done, total } => {
            format!("populating memory: {} / {} MiB", done / 256, total / 256)
        }
        Step::Loaded { bytes } => format!("kernel and initrd loaded ({} KiB)", bytes / 1024),
        Step::PageTables { bytes } => {
            format!("page tables and start info written ({} KiB)", bytes / 1024)
        }
        Step::Vcpus => "vCPUs set".into(),
        Step::Grants => "grant table seeded".into(),
        Step::Xenstore => "xenstore entries written, domain introduced".into(),
        Step::Stored => "config stored, adding devices".into(),
        Step::Unpaused => "unpaused".into(),
    }
}

pub(crate) fn create(
    host: &Host,
    root: &mut Locked<'_, level::Unlocked>,
    path: &std::path::Path,
    overrides: &[String],
    how: CreateHow,
) -> AnyResult<u16> {
    let quiet = how.quiet;
    if !quiet {
        eprintln!("Parsing config from {}", path.display());
    }
    let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let (config, warnings) = toolstack::config::xlcfg::load(path, &overrides)?;
    for w in warnings {
        eprintln!("rxl: warning: {w}");
    }
    // The load makes the same check and does without the cache; this says why it is slow.
    if let Err(e) = host.kernel_cache.check_trusted() {
        eprintln!("rxl: warning: {e}");
    }
    let tty = std::io::stderr().is_terminal() && !quiet && !how.verbose;
    let started = std::time::Instant::now();
    let mut last = started;
    let mut progress = |step: Step| {
        let mut err = std::io::stderr().lock();
        if how.verbose {
            // Populate reports every 512 MiB; its end is enough for a line.
            if let Step::Populating { done, total } = step {
                if done < total {
                    return;
                }
            }
            let now = std::time::Instant::now();
            let _ = writeln!(
                err,
                "rxl: [{:8.3} ms, +{:8.3} ms] {}",
                (now - started).as_secs_f64() * 1000.0,
                (now - last).as_secs_f64() * 1000.0,
                step_text(step)
            );
            last = now;
        } else if tty {
            let _ = match step {
                Step::Stored => writeln!(err, "\r{:<60}", "done"),
                other => write!(err, "\r{:<60}", step_text(other)),
            };
            let _ = err.flush();
        }
    };
    let opts = toolstack::create::CreateOptions {
        paused: how.paused,
        ..Default::default()
    };
    let created = toolstack::create::create_with(host, root, &config, &opts, &mut progress)?;
    if how.verbose || std::env::var_os(TIMINGS_ENV).is_some_and(|v| v == "1") {
        eprintln!("rxl: create timings: {}", created.timings);
        if let Some(main) = crate::STARTED.get() {
            eprintln!(
                "rxl: process timings: {:.3} ms from the start of rxl to the create \
                 (host, config)",
                started.saturating_duration_since(*main).as_secs_f64() * 1e3
            );
        }
    }
    if !quiet {
        let state = if created.unpaused {
            "running"
        } else if created.booted {
            "paused"
        } else {
            "paused (no kernel)"
        };
        eprintln!(
            "Domain {} ({}) created, {state}.",
            created.domid, config.name
        );
        if !created.introduced {
            eprintln!(
                "rxl: note: xenstored did not accept the domain's introduction (its store \
                 ring is set up only when a kernel is loaded)"
            );
        }
    }
    Ok(created.domid)
}

/// `rxl shutdown` / `rxl reboot`.
fn shutdown(host: &Host, spec: &str, req: Request, wait: bool, force: bool) -> AnyResult {
    let domid = domain::resolve(host, spec)?;
    let what = match req {
        Request::Poweroff => "Shutting down",
        Request::Reboot => "Rebooting",
    };
    eprintln!("{what} domain {domid}");
    let opts = lifecycle::RequestOptions {
        force,
        ..lifecycle::RequestOptions::default()
    };
    if lifecycle::request(host, domid, req, &opts)? == lifecycle::Delivered::Forced {
        eprintln!(
            "PV control interface not available: Xen shut domain {domid} down ({})",
            req.as_str()
        );
    }
    if wait {
        eprintln!("Waiting for 1 domains");
        match lifecycle::wait_shutdown_or_gone(host, domid)? {
            lifecycle::Life::ShutDown(r) => eprintln!(
                "Domain {domid} has been shut down, reason code {} ({})",
                r.0,
                lifecycle::reason_name(r)
            ),
            _ => eprintln!("Domain {domid} has been destroyed"),
        }
    }
    Ok(())
}

/// `rxl console`.
fn console(host: &Host, spec: &str, kind: ConsoleKind, num: u32, timeout: f64) -> AnyResult {
    use std::io::IsTerminal;
    use toolstack::console::{self, ConsoleType};
    let domid = domain::resolve(host, spec)?;
    let kind = match kind {
        ConsoleKind::Pv => ConsoleType::Pv,
        ConsoleKind::Serial => ConsoleType::Serial,
    };
    let timeout = std::time::Duration::try_from_secs_f64(timeout)
        .map_err(|_| format!("--timeout {timeout}: not a number of seconds"))?;
    let node = console::tty_node(domid, kind, num);
    let tty_path = console::wait_tty(host, domid, &node, timeout)?;
    let mut tty = console::open_tty(host, domid, &tty_path)?;
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let _raw = if interactive {
        Some(console::Terminal::raw(stdin.as_fd())?)
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    let ended = console::copy(&mut tty, Some(stdin.lock()), &mut out, interactive)?;
    drop(_raw);
    if ended == console::Ended::Detached {
        eprintln!();
    }
    Ok(())
}

/// Runs the monitor of `domid` in this process, reporting on stderr.
fn monitor(host: &Host, root: &mut Locked<'_, level::Unlocked>, domid: u16) -> AnyResult {
    use toolstack::lifecycle::monitor::{self, Ended, Event};
    let mut report = |e: Event| match e {
        Event::Watching(d) => {
            eprintln!("Waiting for domain {d} to die [pid {}]", std::process::id())
        }
        Event::ShutDown {
            domid,
            reason,
            action,
        } => eprintln!(
            "Domain {domid} has shut down, reason code {} ({}): action {action}",
            reason.0,
            lifecycle::reason_name(reason)
        ),
        Event::Restarted { old, new } => {
            eprintln!("Domain {old} restarted as domain {new}")
        }
    };
    match monitor::run(host, root, domid, &mut report)? {
        Ended::Gone(d) => eprintln!("Domain {d} has been destroyed."),
        Ended::Destroyed(d) => eprintln!("Domain {d} destroyed. Done."),
        Ended::Preserved(d, r) => eprintln!(
            "Domain {d} preserved, shut down ({}). Done.",
            lifecycle::reason_name(r)
        ),
        Ended::Suspended(d) => eprintln!("Domain {d} has suspended. Done."),
    }
    Ok(())
}

/// Starts the monitor of `domid` as a detached `rxl monitor` process (its own process group,
/// stdin closed), logging to `rxl-NAME.log` in the host's log directory.
fn spawn_monitor(host: &Host, domid: u16) -> AnyResult {
    use std::os::unix::process::CommandExt;
    let name = host
        .xs
        .read_string(&format!("{}/name", domain::dom_path(domid)))
        .unwrap_or_else(|_| domid.to_string());
    std::fs::create_dir_all(&host.log_dir)?;
    let log_path = host.log_dir.join(format!("rxl-{name}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot open the monitor's log {}: {e}", log_path.display()))?;
    let exe = std::env::current_exe()?;
    // spawns: own (a detached monitor; it exits when the domain is gone)
    let child = std::process::Command::new(exe)
        .args(host.child_args())
        .arg("monitor")
        .arg(domid.to_string())
        // A test's hook socket is for the process it drives, not for this one.
        .env_remove("RXEN_TEST_HOOK_SOCKET")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    drop(child);
    Ok(())
}

/// A domain's stored config, read under its userdata lock (`null` for one without: dom0, or a
/// domain another toolstack made).
pub(crate) fn stored_config(
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
