//! Building a guest: what libxenguest's domain builder (`tools/libs/guest/xg_dom_*.c`) does.
//!
//! - [`kernel`]: kernel images as a library: ELF and bzImage parsing, the Xen ELF notes, the
//!   kernel's address range, decompression under stated limits, a content-addressed cache of
//!   decompressed kernels, and the initrd and command-line inputs.
//!
//! - [`plan`]: what the build plans share (loads, regions, [`plan::PlanError`]).
//! - [`pv`]: the PV x86-64 build plan: frames, virtual addresses, page tables, start_info and
//!   the boot vCPU, as data.
//! - [`pvh`]: the PVH build plan: the kernel at its physical addresses, hvm_start_info, the
//!   memory map, the special pages, HVM parameters and the boot vCPU, as data.
//! - [`acpi`]: the ACPI tables a PVH guest gets (RSDP, XSDT, RSDT, FADT, MADT, DSDT).
//!
//! - [`exec`]: the executor, which applies a plan to a new domain: populate, load, page
//!   tables and start info, vCPUs, grants, in libxenguest's order.

pub mod acpi;
pub mod cpuid;
pub mod exec;
pub mod kernel;
pub mod plan;
pub mod pv;
pub mod pvh;
