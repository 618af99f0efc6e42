//! Why applying a build plan failed.

use thiserror::Error;

use crate::build::plan::PlanError;

/// Why the executor could not build the guest. Each says what it was doing; Xen's errno is the
/// source.
#[derive(Debug, Error)]
pub enum BuildError {
    /// A hypercall failed.
    #[error("{what}")]
    Xen {
        /// What was being done, as a sentence fragment ("cannot pin its page tables").
        what: &'static str,
        /// Xen's answer.
        #[source]
        source: xenctrl::Error,
    },
    /// The plan could not be rendered (an mfn too wide for a page-table entry, say).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A write reaches a guest frame that populate did not give the guest.
    #[error(
        "guest frame {pfn:#x} is not populated (the guest has {pages} pages): the plan writes \
         outside its memory"
    )]
    Unpopulated {
        /// The frame.
        pfn: u64,
        /// Pages populated.
        pages: u64,
    },
    /// Two writes of one build overlap (a plan that lays two things on one byte).
    #[error("two writes overlap at guest address {addr:#x}")]
    OverlappingWrites {
        /// Where the second one starts.
        addr: u64,
    },
    /// A write does not fit the mapping made for it (a bug in the batching).
    #[error("a write of {len} bytes at guest address {addr:#x} does not fit its mapping")]
    WriteOutOfBounds {
        /// Where.
        addr: u64,
        /// How much.
        len: u64,
    },
    /// The HVM context Xen returned lacks a record the builder copies.
    #[error("the HVM context Xen returned has no {record} record")]
    MissingHvmRecord {
        /// Which (`HEADER`, `MTRR`).
        record: &'static str,
    },
    /// A ring's frame does not fit a version-1 grant entry's 32-bit frame field.
    #[error("the {ring} ring's frame {frame:#x} does not fit a grant entry (32 bits)")]
    GrantFrameTooLarge {
        /// `console` or `xenstore`.
        ring: &'static str,
        /// The frame.
        frame: u64,
    },
}

impl BuildError {
    /// A closure turning a xenctrl error into [`BuildError::Xen`] with `what`.
    pub(crate) fn xen(what: &'static str) -> impl FnOnce(xenctrl::Error) -> BuildError {
        move |source| BuildError::Xen { what, source }
    }
}
