//! Errors: one variant per operation, with the errno as its source.

use nix::errno::Errno;
use xenctrl::abi::GrantStatus;
use xenctrl::{DomainId, GrantRef};

/// What is wrong with a grant-copy segment, found before anything is copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CopyProblem {
    /// A grant side's `offset + len` runs past the end of its 4 KiB page.
    #[error("{len} bytes at offset {offset} run past the end of the granted page")]
    CrossesPage {
        /// Offset in the granted page.
        offset: u16,
        /// Length of the segment.
        len: usize,
    },
    /// The local buffer is longer than a granted page.
    #[error("a local buffer of {len} bytes is longer than a page")]
    TooLong {
        /// Its length.
        len: usize,
    },
}

/// An error of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device could not be opened.
    #[error(
        "cannot open {path} (is this a Xen domain, with the {module} module loaded, and are we \
         allowed to open it?)"
    )]
    Open {
        /// The device path.
        path: &'static str,
        /// The kernel module that provides it.
        module: &'static str,
        /// Why.
        #[source]
        source: Errno,
    },
    /// Mapping grants failed. Linux's gntdev reports `EINVAL` when Xen refused any of them (a
    /// reference that does not exist, is not granted to us, or is read-only and was asked for
    /// writing; or a domain that does not exist), without saying which; none is mapped then.
    #[error("domain {domain}: cannot map grant refs {refs} {access}")]
    Map {
        /// The granting domain.
        domain: DomainId,
        /// The references asked for (the first few, and how many in all).
        refs: String,
        /// "read-only" or "writable".
        access: &'static str,
        /// Why.
        #[source]
        source: Errno,
    },
    /// An unmap notification could not be set (`ENOENT`: the byte lies outside the memory;
    /// `EINVAL`: a byte to clear in read-only memory, or an event port not bound in this
    /// domain).
    #[error("domain {domain}: cannot set the unmap notification of grant ref {gref}")]
    UnmapNotify {
        /// The other domain.
        domain: DomainId,
        /// The reference of the page the notification is attached to.
        gref: GrantRef,
        /// Why.
        #[source]
        source: Errno,
    },
    /// A grant-copy segment was refused before anything was copied.
    #[error("grant copy segment {index}: {problem}")]
    CopyArgs {
        /// The segment's index.
        index: usize,
        /// What is wrong with it.
        #[source]
        problem: CopyProblem,
    },
    /// The grant-copy request itself failed (nothing is known to have been copied).
    #[error("grant copy of {segments} segment(s) failed")]
    GrantCopy {
        /// How many segments were asked for.
        segments: usize,
        /// Why.
        #[source]
        source: Errno,
    },
    /// Xen refused at least one segment of a grant copy; the others ran. Each segment's
    /// [`crate::CopySegment::status`] says how it went.
    #[error(
        "grant copy: {failed} of {segments} segment(s) failed; the first, segment {index} \
         (domain {domain}, grant ref {gref}): {status}"
    )]
    CopySegment {
        /// The first segment that failed.
        index: usize,
        /// The granting domain of its grant side (the source's if both are grants).
        domain: DomainId,
        /// Its grant reference.
        gref: GrantRef,
        /// Xen's status for it.
        status: GrantStatus,
        /// How many segments failed.
        failed: usize,
        /// How many segments there were.
        segments: usize,
    },
    /// Sharing pages failed (`ENOSPC`: gntalloc's limit, 1024 pages by default, or a full
    /// grant table; `ENOMEM`: no memory; `EINVAL`: zero pages).
    #[error("cannot share {count} page(s) with domain {domain}")]
    Share {
        /// The domain that was to get access.
        domain: DomainId,
        /// How many pages.
        count: usize,
        /// Why.
        #[source]
        source: Errno,
    },
}

/// This crate's `Result`.
pub type Result<T> = std::result::Result<T, Error>;
