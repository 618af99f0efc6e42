//! `xenstore`: the xenstore protocol in Rust.
//!
//! This crate will hold the xenstore wire codec (Xen 4.17 `io/xs_wire.h`), a thread-safe client
//! over a unix socket or `/dev/xen/xenbus` with transactions and watches, and a `xenstored` server
//! that Xen's own `xenstore-utils` can use, embeddable in-process for the simulated host.
//!
//! It is built by a later issue; today the crate is intentionally empty.
