//! `xenstored`: the Rust xenstore daemon.
//!
//! `xenstored --socket PATH` serves the unix socket at PATH in the foreground until SIGTERM or
//! SIGINT, then removes the socket and exits with status 0.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use xenstore::server::{Quotas, Server, DEFAULT_BUSY_POLL};

fn usage() -> &'static str {
    "usage: xenstored [--socket PATH] [--foreground|-F] [--entry-nb N] [--entry-size N]\n\
     \x20                [--watch-nb N] [--transaction N] [--perm-nb N] [--busy-poll-us N]\n\
     serves xenstore on PATH (default $XENSTORED_PATH or /run/xenstored/socket) until SIGTERM;\n\
     after activity it polls for --busy-poll-us microseconds (default 50, 0 = never) before\n\
     sleeping\n"
}

/// What the command line asks for.
struct Args {
    socket: PathBuf,
    quotas: Quotas,
    busy_poll: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut socket = xenstore::client::default_path();
    let mut q = Quotas::default();
    let mut busy_poll = DEFAULT_BUSY_POLL;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            let v = args.next().ok_or_else(|| format!("{name} needs a value"))?;
            v.parse()
                .map_err(|_| format!("{name}: {v:?} is not a number"))
        };
        match a.as_str() {
            "--socket" | "-s" => {
                socket = PathBuf::from(args.next().ok_or("--socket needs a path")?);
            }
            // Always in the foreground; accepted for compatibility with C xenstored's options.
            "--foreground" | "-F" | "--no-fork" | "-N" => {}
            "--entry-nb" | "-E" => q.nodes_per_domain = num(&a)?,
            "--entry-size" | "-S" => q.entry_size = num(&a)?,
            "--watch-nb" | "-W" => q.watches_per_domain = num(&a)?,
            "--transaction" | "-t" => q.transactions_per_connection = num(&a)?,
            "--perm-nb" | "-A" => q.perms_per_node = num(&a)?,
            "--busy-poll-us" => busy_poll = Duration::from_micros(num(&a)? as u64),
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(Args {
        socket,
        quotas: q,
        busy_poll,
    })
}

fn main() -> ExitCode {
    let Args {
        socket,
        quotas,
        busy_poll,
    } = match parse_args() {
        Ok(v) => v,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("xenstored: {msg}");
            }
            eprint!("{}", usage());
            return ExitCode::from(2);
        }
    };
    // Block the stop signals before any thread exists, so only the waiter below sees them.
    let mut stop_signals = SigSet::empty();
    stop_signals.add(Signal::SIGTERM);
    stop_signals.add(Signal::SIGINT);
    if let Err(e) = stop_signals.thread_block() {
        eprintln!("xenstored: cannot block SIGTERM/SIGINT: {e}");
        return ExitCode::FAILURE;
    }
    let server =
        match Server::with_quotas(quotas).and_then(|s| s.busy_poll(busy_poll).listen(&socket)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("xenstored: {e}: {}", source_chain(&e));
                return ExitCode::FAILURE;
            }
        };
    // Tests and init scripts wait for this line instead of polling the socket.
    eprintln!("xenstored: listening on {}", socket.display());
    let ctl = server.controller();
    let waiter = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = stop_signals.wait() {
                eprintln!("xenstored: {sig}, stopping");
            }
            let _ = ctl.stop();
        });
    if let Err(e) = waiter {
        eprintln!("xenstored: cannot start the signal thread: {e}");
        return ExitCode::FAILURE;
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xenstored: {e}: {}", source_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}
