//! `xengnttab`: grant tables from user space.
//!
//! This crate will hold owning wrappers for `/dev/xen/gntdev` (mapping grants from other domains)
//! and `/dev/xen/gntalloc` (granting our pages to other domains), with mappings that unmap on
//! drop.
//!
//! It is built by a later issue; today the crate is intentionally empty.
