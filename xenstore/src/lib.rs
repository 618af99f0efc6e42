//! `xenstore`: the xenstore protocol in Rust.
//!
//! - [`wire`]: the Xen 4.17 wire codec (`io/xs_wire.h`): message types, headers, the 4096-byte
//!   payload limit, errno names. Decoding never panics.
//! - [`path`] and [`perms`]: path rules, special `@` paths, and typed `n/r/w/b` permissions.
//! - [`Client`]: a thread-safe client over xenstored's unix socket or `/dev/xen/xenbus`, with
//!   many requests in flight, transactions that retry on conflict, and watches delivered as
//!   iterators. [`ReadOpt`] reads answer `None` for a missing node.
//! - [`server`]: a xenstored with Xen's permission, transaction, watch and quota semantics, run
//!   as the `xenstored` binary or embedded in-process for the simulated host.
//!
//! ```
//! use xenstore::server::Server;
//!
//! let running = Server::new()?.spawn()?;
//! let client = running.controller().client()?;
//! let watch = client.watch("/vm")?;
//! assert_eq!(watch.next_event()?.path, "/vm"); // watches fire once on registration
//! client.write("/vm/1/name", "guest")?;
//! assert_eq!(watch.next_event()?.path, "/vm/1/name");
//! assert_eq!(client.directory("/vm")?, ["1"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod client;
mod error;
pub mod path;
pub mod perms;
pub mod server;
pub mod wire;

pub use client::{Batch, Client, ReadOpt, Transaction, Watch, WatchEvent};
pub use error::{Error, Failure, Result};
pub use nix::errno::Errno;
