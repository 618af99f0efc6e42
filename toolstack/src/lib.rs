//! `toolstack`: what libxl and xl do, in Rust.
//!
//! This crate will hold the toolstack layer: the compile-time lock hierarchy (slow device lock,
//! ctx lock, per-domain userdata lock), the stored domain config, domain creation with memory
//! claims, memory target and maxmem under the userdata lock, device management, and the `rxl`
//! command-line tool.
//!
//! - [`lock`]: the lock hierarchy (slow device lock -> ctx lock -> userdata lock), checked at
//!   compile time, with libxl's cross-process file-lock algorithm for the per-domain locks.
//! - [`config`]: what a domain is ([`config::DomainConfig`]), the xl.cfg parser
//!   ([`config::xlcfg`]) and the stored domain config, readable only under the userdata lock
//!   ([`config::stored`]).
//! - [`host`]: the machine: real Xen through privcmd, or the simulated host of [`sim`] (a
//!   hypervisor model in a state file, our xenstored as a daemon, a simulated backend driver
//!   and stub hotplug scripts), chosen at run time.
//! - [`build`]: building a guest: kernel images ([`build::kernel`]: ELF and bzImage parsing,
//!   the Xen notes, bounded decompression, a cache of unpacked kernels), and the builders.
//! - [`create`]: domain creation with Xen's memory claims, rolled back whole on failure.
//! - [`memory`]: memory target and maximum with libxl's semantics, under the userdata lock.
//! - [`xenbus`]: the split-driver vocabulary: device kinds, device names and their
//!   directories, XenbusState.
//! - [`paths`]: where things live in xenstore, and reading nodes that may be missing (a leaf
//!   that every other module may use).
//! - [`device`]: virtual devices (vbd, vif, console, vkb): the xenstore layout, backend waits,
//!   hotplug scripts, the stored config's records, attach, detach, list, check and recover.
//! - [`console`]: attaching to a guest's console (`rxl console`).
//! - [`domain`]: listing, lookup by name, pause, unpause, destroy.
//! - [`lifecycle`]: shutdown and reboot requests (the PV control protocol), waiting for a
//!   domain to shut down, and the per-domain monitor that applies `on_poweroff`,
//!   `on_reboot`, `on_crash` and `on_watchdog`.
//! - [`hooks`]: test hooks that let a test interleave processes deterministically; they exist
//!   only with the `test-hooks` cargo feature, which the crate's own tests turn on and a shipped
//!   build never does.
//!
//! The `rxl` binary (`src/bin/rxl/`) is the xl-like command line on top.

#![forbid(unsafe_code)]
// Toolstack errors carry the domain and the xenstore or Xen error whole, for sentences that
// name both; they are built once per failed operation, far from any hot path.
#![allow(clippy::result_large_err)]

pub mod build;
pub mod config;
pub mod console;
pub mod create;
pub mod device;
pub mod domain;
mod error;
pub mod hooks;
pub mod host;
pub mod lifecycle;
pub mod lock;
pub mod memory;
pub mod paths;
pub mod sim;
pub mod xenbus;

pub use error::{DomainRef, Error, Result};
pub use host::{Host, HostKind, HostOptions};
