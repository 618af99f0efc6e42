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

pub mod config;
pub mod lock;
