//! x86-64 architecture facts that need no hypervisor: 4-level paging ([`paging`]).
//!
//! Pure data and arithmetic, no `unsafe` and no system calls, so that a domain builder, the
//! simulated host and introspection tools share one definition of a page-table entry and one
//! walker.

#![forbid(unsafe_code)]

pub mod paging;

pub use paging::{
    canonical, walk, FrameSource, Level, MapError, Mapping, PageSize, PageTable, PageTables, Pte,
    PteFlags, Translation, WalkError, ENTRIES_PER_TABLE, PAGE_SHIFT, PAGE_SIZE,
};
