//! The toolstack's errors: one variant per failed step, naming the domain, with the cause as
//! source. Messages are sentences a user can act on; they do not repeat their source.

use std::fmt;
use std::path::PathBuf;

use crate::lock::DomId;

/// How a domain is named in messages: `domain 7 (web)`, or `domain 7` before it has a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainRef {
    /// The domain id, once there is one.
    pub domid: Option<DomId>,
    /// The name, when known.
    pub name: Option<String>,
}

impl DomainRef {
    /// A domain known by id.
    pub fn id(domid: DomId) -> Self {
        DomainRef {
            domid: Some(domid),
            name: None,
        }
    }

    /// A domain known by id and name.
    pub fn named(domid: DomId, name: impl Into<String>) -> Self {
        DomainRef {
            domid: Some(domid),
            name: Some(name.into()),
        }
    }

    /// A domain being created, before Xen gave it an id.
    pub fn new_named(name: impl Into<String>) -> Self {
        DomainRef {
            domid: None,
            name: Some(name.into()),
        }
    }
}

impl fmt::Display for DomainRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.domid, &self.name) {
            (Some(d), Some(n)) => write!(f, "domain {d} ({n})"),
            (Some(d), None) => write!(f, "domain {d}"),
            (None, Some(n)) => write!(f, "domain {n:?}"),
            (None, None) => f.write_str("the domain"),
        }
    }
}

/// A toolstack error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The hypervisor could not be opened.
    #[error("cannot open the hypervisor interface")]
    OpenXen(#[source] xenctrl::Error),
    /// xenstored could not be reached.
    #[error("cannot connect to xenstored")]
    OpenXenstore(#[source] xenstore::Error),
    /// The simulated host could not be started or reached.
    #[error("simulated host in {}: {what}", dir.display())]
    SimHost {
        /// Its state directory.
        dir: PathBuf,
        /// What failed.
        what: String,
        /// The cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A hypercall failed.
    #[error("{domain}: {what}")]
    Xen {
        /// The domain.
        domain: DomainRef,
        /// What was being done.
        what: &'static str,
        /// Xen's answer.
        #[source]
        source: xenctrl::Error,
    },
    /// A host-wide hypercall failed.
    #[error("{what}")]
    XenHost {
        /// What was being done.
        what: &'static str,
        /// Xen's answer.
        #[source]
        source: xenctrl::Error,
    },
    /// A xenstore operation failed.
    #[error("{domain}: {what}")]
    Xenstore {
        /// The domain.
        domain: DomainRef,
        /// What was being done.
        what: &'static str,
        /// xenstore's answer.
        #[source]
        source: xenstore::Error,
    },
    /// A xenstore operation that concerns no domain failed.
    #[error("{what}")]
    XenstoreHost {
        /// What was being done.
        what: &'static str,
        /// xenstore's answer.
        #[source]
        source: xenstore::Error,
    },
    /// A xenstore node held something unexpected.
    #[error("{domain}: xenstore node {path} holds {value:?}, expected {expected}")]
    BadNode {
        /// The domain.
        domain: DomainRef,
        /// The node.
        path: String,
        /// What it held.
        value: String,
        /// What it should hold.
        expected: &'static str,
    },
    /// No domain has this id or name.
    #[error("no such domain: {0}")]
    NoSuchDomain(String),
    /// A domain with this name exists already.
    #[error("a domain named {name:?} already exists (domain {domid})")]
    NameInUse {
        /// The name.
        name: String,
        /// The domain that has it.
        domid: DomId,
    },
    /// The host does not have the free memory the domain needs.
    #[error("{domain}: not enough free memory: need {need_mib} MiB, {free_mib} MiB free")]
    NotEnoughMemory {
        /// The domain.
        domain: DomainRef,
        /// What it needs.
        need_mib: u64,
        /// What is free and unclaimed.
        free_mib: u64,
    },
    /// A memory target above static-max.
    #[error(
        "{domain}: the memory target {target_kib} KiB is above the domain's maximum \
         (static-max) {static_max_kib} KiB; raise it with mem-max first"
    )]
    TargetAboveMax {
        /// The domain.
        domain: DomainRef,
        /// The target asked for.
        target_kib: u64,
        /// The maximum.
        static_max_kib: u64,
    },
    /// dom0's target below the floor.
    #[error("{domain}: the memory target {target_kib} KiB is below dom0's minimum {min_kib} KiB")]
    Dom0Floor {
        /// dom0.
        domain: DomainRef,
        /// The target asked for.
        target_kib: u64,
        /// The floor.
        min_kib: u64,
    },
    /// A maximum below the current target.
    #[error(
        "{domain}: the maximum {max_kib} KiB is below the current memory target \
         {target_kib} KiB; lower the target with mem-set first"
    )]
    MaxBelowTarget {
        /// The domain.
        domain: DomainRef,
        /// The maximum asked for.
        max_kib: u64,
        /// The current target.
        target_kib: u64,
    },
    /// The operation is refused for this domain.
    #[error("{domain}: {what}")]
    Refused {
        /// The domain.
        domain: DomainRef,
        /// Why.
        what: String,
    },
    /// The domain has no stored config of this toolstack: it is still being created, or
    /// another toolstack (`xl`) made it. Device attach needs one (see
    /// [`crate::device::add_disk`]); list and detach work without.
    #[error(
        "{domain}: it has no stored config of this toolstack: it is still being created (try \
         again when the creation is done), or xl created it (attach its devices with xl)"
    )]
    NotManaged {
        /// The domain.
        domain: DomainRef,
    },
    /// A per-domain lock could not be taken.
    #[error(transparent)]
    Lock(#[from] crate::lock::Error),
    /// A creation record ([`crate::create`]'s intent file) could not be written, locked or
    /// read.
    #[error("creation record {}: {what}", path.display())]
    Intent {
        /// The record, or its directory.
        path: std::path::PathBuf,
        /// What failed.
        what: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The guest has no PV control interface (an HVM guest), so it cannot be asked to shut
    /// down or reboot; Xen can be told to shut it down instead (`-F`).
    #[error(
        "{domain}: no PV control interface, so the guest cannot be asked to {request}: \
         use -F to have Xen shut it down"
    )]
    NoPvControl {
        /// The domain.
        domain: DomainRef,
        /// `poweroff` or `reboot`.
        request: &'static str,
    },
    /// The guest did not acknowledge a shutdown or reboot request (it has no kernel running,
    /// or ignores `control/shutdown`).
    #[error(
        "{domain}: the guest did not acknowledge the {request} request within {timeout:?} \
         (is a kernel running? `rxl destroy` stops it without its help)"
    )]
    NotAcknowledged {
        /// The domain.
        domain: DomainRef,
        /// `poweroff` or `reboot`.
        request: &'static str,
        /// How long we waited.
        timeout: std::time::Duration,
    },
    /// The console's backend did not publish its pty in time.
    #[error(
        "{domain}: its console has no pty yet ({node} is empty after {timeout:?}): is its \
         console backend (xenconsoled) running, and has the domain a console?"
    )]
    ConsoleNotReady {
        /// The domain.
        domain: DomainRef,
        /// The `tty` node waited for.
        node: String,
        /// How long.
        timeout: std::time::Duration,
    },
    /// The console could not be opened or used.
    #[error("{domain}: {what}")]
    Console {
        /// The domain.
        domain: DomainRef,
        /// What failed.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another monitor already watches the domain (its lock file is held).
    #[error("{domain}: another monitor already watches it (it holds {})", lock.display())]
    MonitorRunning {
        /// The domain.
        domain: DomainRef,
        /// The monitor's lock file.
        lock: PathBuf,
    },
    /// The domain shut down, and the action its config names for that is not supported; the
    /// domain is left as it is (shut down) for the user to deal with.
    #[error(
        "{domain}: shut down ({reason}), and its action {action:?} is not supported: \
         the domain is left shut down (destroy it, or use `rxl create` again)"
    )]
    ActionUnsupported {
        /// The domain.
        domain: DomainRef,
        /// The shutdown reason.
        reason: String,
        /// The config's action.
        action: &'static str,
    },
    /// A restart record (the monitor's, see [`crate::lifecycle`]) could not be written, locked
    /// or read.
    #[error("restart record {}: {what}", path.display())]
    RestartRecord {
        /// The record, or its directory.
        path: PathBuf,
        /// What failed.
        what: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The stored domain config could not be read or written.
    #[error("{domain}: stored domain config")]
    Stored {
        /// The domain.
        domain: DomainRef,
        /// Why.
        #[source]
        source: crate::config::stored::Error,
    },
    /// The domain config is invalid.
    #[error("domain {name:?}: invalid configuration")]
    Invalid {
        /// The domain's name.
        name: String,
        /// Why.
        #[source]
        source: crate::config::ValidationError,
    },
    /// The kernel, the ramdisk or the command line of a domain being created cannot be used.
    #[error("domain {name:?}: cannot use {what}")]
    Kernel {
        /// The domain's name.
        name: String,
        /// What ("the kernel /boot/vmlinuz", "the ramdisk ...", "the command line").
        what: String,
        /// Why.
        #[source]
        source: crate::build::kernel::KernelError,
    },
    /// The guest cannot be laid out (too little memory for its kernel, say).
    #[error("domain {name:?}: cannot lay out its memory for this kernel")]
    Plan {
        /// The domain's name.
        name: String,
        /// Why.
        #[source]
        source: crate::build::plan::PlanError,
    },
    /// Building the guest failed at one stage.
    #[error("{domain}: building it failed while {stage}")]
    Build {
        /// The domain.
        domain: DomainRef,
        /// The stage ("populating its memory", "loading its kernel", ...).
        stage: &'static str,
        /// Why.
        #[source]
        source: crate::build::exec::BuildError,
    },
    /// A creation failed and its rollback failed too; the rollback error is the source.
    #[error("{domain}: creation failed ({first}), and undoing it failed too")]
    Rollback {
        /// The domain.
        domain: DomainRef,
        /// What made the creation fail.
        first: Box<Error>,
        /// What made the rollback fail.
        #[source]
        source: Box<Error>,
    },
    /// A device operation failed or was refused; the source says how.
    #[error("{device}")]
    Device {
        /// The device.
        device: crate::device::DeviceRef,
        /// What went wrong.
        #[source]
        source: crate::device::DeviceError,
    },
    /// Attaching a device failed, and undoing the attach failed too; the undo's error is the
    /// source, the attach's is [`first`](Error::DeviceUndo::first).
    #[error("{device}: attaching it failed, and undoing the attach failed too")]
    DeviceUndo {
        /// The device.
        device: crate::device::DeviceRef,
        /// Why the attach failed.
        first: Box<Error>,
        /// Why the undo failed.
        #[source]
        source: Box<Error>,
    },
    /// A xenstore operation on a device failed.
    #[error("{device}: {what}")]
    DeviceXenstore {
        /// The device.
        device: crate::device::DeviceRef,
        /// What was being done.
        what: &'static str,
        /// xenstore's answer.
        #[source]
        source: xenstore::Error,
    },
    /// A test hook failed (only when a test drives the toolstack; only with the `test-hooks`
    /// feature).
    #[cfg(feature = "test-hooks")]
    #[error("test hook: {0}")]
    TestHook(String),
}

impl Error {
    /// The Xen errno behind this error, if any.
    pub fn xen_errno(&self) -> Option<xenctrl::Errno> {
        match self {
            Error::Xen { source, .. } | Error::XenHost { source, .. } => source.errno(),
            _ => None,
        }
    }

    /// A per-domain lock error as the toolstack reports it: a vanished domain is "no such
    /// domain".
    pub(crate) fn from_lock(e: crate::lock::Error) -> Error {
        match e {
            crate::lock::Error::NoSuchDomain { domid, .. } => {
                Error::NoSuchDomain(domid.to_string())
            }
            other => Error::Lock(other),
        }
    }

    /// The device failure behind this error, if it is one (for an attach whose undo failed
    /// too, the attach's).
    pub fn device_error(&self) -> Option<&crate::device::DeviceError> {
        match self {
            Error::Device { source, .. } => Some(source),
            Error::DeviceUndo { first, .. } => first.device_error(),
            _ => None,
        }
    }
}

/// Shorthand for toolstack results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
