//! `rxl`: an xl-like command line for real Xen or the simulated host.
//!
//! Runs against real Xen when `/dev/xen/privcmd` exists, else against the simulated host in
//! `--sim-dir` (or `$RXEN_SIM_DIR`, or `~/.local/state/rxen/sim`), booting it on first use.
//!
//! - `cli`: the options and subcommands (clap);
//! - `commands`: what each subcommand does, on top of the library;
//! - `print`: the tables and listings, in xl's formats, and JSON.

// As in the library: toolstack errors are large, built once per failed command.
#![allow(clippy::result_large_err)]

mod cli;
mod commands;
mod print;

use std::process::ExitCode;

use clap::Parser;
use toolstack::lock::Locked;
use toolstack::{Host, HostOptions};

use crate::cli::Cli;

/// When `main` began: `rxl create -v` says how much of the command is outside the create.
pub(crate) static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn main() -> ExitCode {
    STARTED.get_or_init(std::time::Instant::now);
    toolstack::sim::run_daemon_if_asked();
    let cli = Cli::parse();
    let mut root = Locked::root();
    match commands::run(cli, &mut root) {
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

pub(crate) type AnyResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

pub(crate) fn open_host(cli: &Cli) -> AnyResult<Host> {
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
