//! Building a guest: what libxenguest's domain builder (`tools/libs/guest/xg_dom_*.c`) does.
//!
//! - [`kernel`]: kernel images as a library: ELF and bzImage parsing, the Xen ELF notes, the
//!   kernel's address range, decompression under stated limits, a content-addressed cache of
//!   decompressed kernels, and the initrd and command-line inputs.
//!
//! The PV and PVH builders, which put a parsed kernel into a domain's memory, sit beside it.

pub mod kernel;
