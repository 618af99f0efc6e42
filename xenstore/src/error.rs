//! Client errors: one variant per operation, naming the path or domain, with the cause as source.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

/// Why a request failed, below the operation that made it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// xenstored refused the request with this errno.
    #[error("xenstored answered {}: {}", crate::wire::errno_name(*.0), .0.desc())]
    Daemon(Errno),
    /// The connection failed (closed by the daemon, or an I/O error); it is unusable now.
    #[error("the connection to xenstored failed")]
    Io(#[source] io::Error),
    /// The daemon's reply did not follow the protocol.
    #[error("xenstored sent a malformed reply: {0}")]
    Protocol(&'static str),
    /// The request would exceed the 4096-byte payload limit.
    #[error("the request payload would be {len} bytes; xenstore allows at most 4096")]
    TooLarge {
        /// Payload length of the refused request.
        len: usize,
    },
    /// An argument cannot be sent (a path with a nul byte, for instance).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
}

impl Failure {
    /// The errno this failure corresponds to, if any (daemon errors, I/O errors with an errno).
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Failure::Daemon(e) => Some(*e),
            Failure::Io(e) => e.raw_os_error().map(Errno::from_raw),
            Failure::TooLarge { .. } => Some(Errno::E2BIG),
            Failure::Invalid(_) => Some(Errno::EINVAL),
            Failure::Protocol(_) => None,
        }
    }
}

/// A xenstore client error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No connection could be made.
    #[error("cannot connect to xenstored at {path}")]
    Connect {
        /// The socket or device tried last.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `read` failed.
    #[error("cannot read xenstore node {path}")]
    Read {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: Failure,
    },
    /// `write` failed.
    #[error("cannot write xenstore node {path}")]
    Write {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: Failure,
    },
    /// `mkdir` failed.
    #[error("cannot create xenstore node {path}")]
    Mkdir {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: Failure,
    },
    /// `rm` failed.
    #[error("cannot remove xenstore node {path}")]
    Rm {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: Failure,
    },
    /// `directory` failed.
    #[error("cannot list the children of xenstore node {path}")]
    Directory {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: Failure,
    },
    /// `get_perms` failed.
    #[error("cannot read the permissions of xenstore node {path}")]
    GetPerms {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: Failure,
    },
    /// `set_perms` failed.
    #[error("cannot set the permissions of xenstore node {path}")]
    SetPerms {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: Failure,
    },
    /// `watch` failed.
    #[error("cannot watch xenstore path {path} (token {token})")]
    Watch {
        /// The watched path.
        path: String,
        /// The token.
        token: String,
        /// The cause.
        #[source]
        source: Failure,
    },
    /// `unwatch` failed.
    #[error("cannot remove the watch on xenstore path {path} (token {token})")]
    Unwatch {
        /// The watched path.
        path: String,
        /// The token.
        token: String,
        /// The cause.
        #[source]
        source: Failure,
    },
    /// Waiting for a watch event failed.
    #[error("cannot wait for events of the watch on xenstore path {path}")]
    WatchEvent {
        /// The watched path.
        path: String,
        /// The cause.
        #[source]
        source: Failure,
    },
    /// `TRANSACTION_START` failed.
    #[error("cannot start a xenstore transaction")]
    TransactionStart {
        /// The cause.
        #[source]
        source: Failure,
    },
    /// Committing failed (EAGAIN here means another writer got in first).
    #[error("cannot commit xenstore transaction {id}")]
    TransactionCommit {
        /// The transaction id.
        id: u32,
        /// The cause.
        #[source]
        source: Failure,
    },
    /// Aborting failed.
    #[error("cannot abort xenstore transaction {id}")]
    TransactionAbort {
        /// The transaction id.
        id: u32,
        /// The cause.
        #[source]
        source: Failure,
    },
    /// A transaction closure kept conflicting with other writers.
    #[error("xenstore transaction still conflicted after {attempts} attempts; retry later")]
    TransactionConflict {
        /// Attempts made.
        attempts: u32,
    },
    /// A domain-management request failed.
    #[error("domain {domid}: xenstore {op} failed")]
    Domain {
        /// The operation ("introduce", "release", ...).
        op: &'static str,
        /// The domain.
        domid: u32,
        /// The cause.
        #[source]
        source: Failure,
    },
    /// `CONTROL` failed.
    #[error("xenstore control command {command} failed")]
    Control {
        /// The command.
        command: String,
        /// The cause.
        #[source]
        source: Failure,
    },
    /// `RESET_WATCHES` failed.
    #[error("cannot reset the watches of this xenstore connection")]
    ResetWatches {
        /// The cause.
        #[source]
        source: Failure,
    },
}

impl Error {
    /// The underlying failure, if the error came from a request.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Error::Read { source, .. }
            | Error::Write { source, .. }
            | Error::Mkdir { source, .. }
            | Error::Rm { source, .. }
            | Error::Directory { source, .. }
            | Error::GetPerms { source, .. }
            | Error::SetPerms { source, .. }
            | Error::Watch { source, .. }
            | Error::Unwatch { source, .. }
            | Error::WatchEvent { source, .. }
            | Error::TransactionStart { source }
            | Error::TransactionCommit { source, .. }
            | Error::TransactionAbort { source, .. }
            | Error::Domain { source, .. }
            | Error::Control { source, .. }
            | Error::ResetWatches { source } => Some(source),
            Error::Connect { .. } | Error::TransactionConflict { .. } => None,
        }
    }

    /// The errno behind the error, if any: `err.errno() == Some(Errno::ENOENT)` tests for a
    /// missing node.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Connect { source, .. } => source.raw_os_error().map(Errno::from_raw),
            Error::TransactionConflict { .. } => Some(Errno::EAGAIN),
            other => other.failure().and_then(Failure::errno),
        }
    }
}

/// Result alias for client operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
