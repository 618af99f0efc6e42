//! `toolstack`: what libxl and xl do, in Rust.
//!
//! This crate will hold the toolstack layer: the compile-time lock hierarchy (slow device lock,
//! ctx lock, per-domain userdata lock), the stored domain config, domain creation with memory
//! claims, memory target and maxmem under the userdata lock, device management, and the `rxl`
//! command-line tool.
//!
//! It is built by a later issue; today the crate is intentionally empty.
