//! The crate's one error type.

use std::fmt;
use std::io;

pub use nix::errno::Errno;

use crate::abi::GrantStatus;
use crate::{DomId, DomainId};

/// What failed: every error names the operation, and the domain when there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Xen device could not be opened.
    #[error("cannot open {path}")]
    Open {
        /// The device path.
        path: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file descriptor given to [`XenCtrl::from_fds`](crate::XenCtrl::from_fds) is not usable
    /// as the device it was given for. Nothing was issued through it beyond the check that
    /// found this (see [`FdProblem`]); both descriptors were closed.
    #[error("the file descriptor given as {device} {problem}")]
    BadDeviceFd {
        /// The device it was given as: `/dev/xen/privcmd` or `/dev/xen/hypercall`.
        device: &'static str,
        /// What is wrong with it.
        problem: FdProblem,
        /// The errno the failing check answered; `None` when `fstat` showed the wrong kind of
        /// file and nothing was tried on it.
        #[source]
        source: Option<io::Error>,
    },
    /// The buffer pool could not map more hypercall-safe memory.
    #[error("hypercall buffer pool: cannot map {bytes} bytes of hypercall-safe memory")]
    PoolMap {
        /// How much was asked for.
        bytes: usize,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The buffer pool could not lock memory it had already mapped.
    #[error("hypercall buffer pool: cannot lock {bytes} bytes (check RLIMIT_MEMLOCK)")]
    PoolLock {
        /// How much was to be locked.
        bytes: usize,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A buffer was requested that the pool cannot describe (its size overflows, or its type
    /// needs more than page alignment).
    #[error("hypercall buffer pool: cannot allocate {bytes} bytes aligned to {align}")]
    BadAllocation {
        /// Bytes asked for.
        bytes: usize,
        /// Alignment asked for.
        align: usize,
    },
    /// A buffer from another handle's pool (or one reached through a guest handle inside the
    /// argument) was passed to a hypercall.
    #[error("{op}: a buffer of the call belongs to another pool than the handle's")]
    ForeignBuffer {
        /// The operation.
        op: Op,
    },
    /// A reservation sub-op that reads or writes an extent list was given none.
    #[error("{op}: the sub-op needs an extent list, and none was given")]
    MissingList {
        /// The operation.
        op: Op,
    },
    /// Xen (or the simulator) refused an operation.
    #[error("{}{op} failed", DomainPrefix(*domid))]
    Xen {
        /// The operation.
        op: Op,
        /// The domain it was about, if any.
        domid: Option<DomId>,
        /// The errno Xen answered.
        #[source]
        source: Errno,
    },
    /// The operation was refused before Xen: it names the control domain (dom0), on which Xen
    /// would act on the whole host (a remote shutdown of dom0 shuts the host down).
    #[error("domain 0: {op} refused: it would act on the whole host")]
    HostDomain {
        /// The operation.
        op: Op,
    },
    /// No window of address space could be made for a foreign mapping: the `mmap` of
    /// `/dev/xen/privcmd` (or the simulator's stand-in) failed, usually for want of memory or
    /// address space. Nothing was mapped.
    #[error("domain {domid}: cannot make a window of {pages} pages to map its memory into")]
    MapWindow {
        /// The domain whose memory was to be mapped.
        domid: DomainId,
        /// How many pages the window was to hold.
        pages: usize,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A page of a foreign mapping could not be mapped, so the whole mapping was undone (see
    /// [`XenCtrl::map_foreign_partial`](crate::XenCtrl::map_foreign_partial) to keep the
    /// pages that did map). The errno is Xen's for that page: `ESRCH` when the domain does not
    /// exist, `EBUSY` or `EPERM` (PV) or `EINVAL` (HVM) for a frame the domain does not own,
    /// `ENOENT` for a frame that stayed paged out through every retry.
    #[error("domain {domid}: guest frame {gfn:#x} (page {index} of {pages}) cannot be mapped")]
    ForeignPage {
        /// The domain whose memory was mapped.
        domid: DomainId,
        /// The first page that failed, as an index into the frames asked for.
        index: usize,
        /// How many pages were asked for.
        pages: usize,
        /// The frame asked for at `index`.
        gfn: u64,
        /// What Xen answered for it.
        #[source]
        source: Errno,
    },
    /// A grant-table operation answered a status other than `GNTST_okay`.
    #[error("{}{op} failed with {status}", DomainPrefix(domid.map(DomainId::get)))]
    GrantTable {
        /// The operation.
        op: Op,
        /// The domain whose grant table it was.
        domid: Option<DomainId>,
        /// The status Xen answered.
        status: GrantStatus,
    },
    /// A grant-table frame of an HVM guest is in none of its guest frames (the guest maps its
    /// table itself, and a new one has not), and neither Xen nor the kernel could map it as a
    /// resource (`IOCTL_PRIVCMD_MMAP_RESOURCE` needs Linux 4.18 and Xen 4.12).
    #[error(
        "domain {domid}: grant-table frame {index} is in none of the guest's frames, and this \
         kernel or Xen cannot map grant tables as a resource (needs Linux 4.18 and Xen 4.12)"
    )]
    GrantFrameUnmapped {
        /// The domain.
        domid: DomainId,
        /// The grant-table frame.
        index: u64,
    },
    /// An event-channel operation was refused: by `/dev/xen/evtchn` (the kernel, or Xen
    /// behind it), or by Xen for an `EVTCHNOP` hypercall about one port
    /// ([`XenCtrl::evtchn_status`](crate::XenCtrl::evtchn_status),
    /// [`evtchn_close`](crate::XenCtrl::evtchn_close)).
    #[error(
        "{}{}{op} failed",
        DomainPrefix(domid.map(DomainId::get)),
        PortPrefix(port.map(crate::evtchn::Port::get))
    )]
    EventChannel {
        /// The operation.
        op: Op,
        /// The domain it was about (the remote domain of a bind), if any.
        domid: Option<DomainId>,
        /// The port it was about (the remote port of a bind), if any.
        port: Option<crate::evtchn::Port>,
        /// The errno answered.
        #[source]
        source: Errno,
    },
    /// The queue of fired ports of an event-channel handle overflowed (`EFBIG`), so events were
    /// lost. Call [`EventChannels::reset`](crate::evtchn::EventChannels::reset), then treat
    /// every bound port as possibly fired.
    #[error(
        "/dev/xen/evtchn: the queue of fired ports overflowed and events were lost; reset the \
         handle and check every bound port"
    )]
    EventsLost,
    /// The hypervisor speaks a domctl/sysctl interface version this crate does not know.
    #[error(
        "unsupported Xen interface: {what}; this crate supports {supported} \
         (see xenctrl::interface)"
    )]
    UnsupportedInterface {
        /// What was found.
        what: String,
        /// What is supported.
        supported: String,
    },
    /// A reply from Xen did not make sense (a count larger than the buffer, a non-UTF-8
    /// string, ...).
    #[error("{op}: unexpected reply from Xen: {detail}")]
    BadReply {
        /// The operation.
        op: Op,
        /// What was wrong.
        detail: String,
    },
}

impl Error {
    /// The Xen errno behind this error, if it came from Xen.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Xen { source, .. }
            | Error::ForeignPage { source, .. }
            | Error::EventChannel { source, .. } => Some(*source),
            Error::EventsLost => Some(Errno::EFBIG),
            Error::Open { source, .. }
            | Error::PoolMap { source, .. }
            | Error::PoolLock { source, .. }
            | Error::MapWindow { source, .. }
            | Error::BadDeviceFd {
                source: Some(source),
                ..
            } => source.raw_os_error().map(Errno::from_raw),
            _ => None,
        }
    }

    /// The same error, attributed to `op` (the typed operation a raw entry point served).
    pub(crate) fn with_op(self, op: Op) -> Self {
        match self {
            Error::Xen { domid, source, .. } => Error::Xen { op, domid, source },
            Error::ForeignBuffer { .. } => Error::ForeignBuffer { op },
            other => other,
        }
    }

    pub(crate) fn xen(op: Op, domid: Option<DomId>, source: Errno) -> Self {
        Error::Xen { op, domid, source }
    }
}

/// What is wrong with a file descriptor given as a Xen device (see [`Error::BadDeviceFd`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FdProblem {
    /// It does not allow I/O (`EBADF`): it is closed, or was opened with `O_PATH`.
    NotOpen,
    /// It is open on another kind of file or device: privcmd's hypercall ioctl was refused
    /// (usually `ENOTTY`), or the file is not a misc character device as `/dev/xen/hypercall`
    /// is.
    WrongFile(FileKind),
    /// The `/dev/xen/hypercall` descriptor is not open for both reading and writing, so it
    /// cannot be mapped shared and writable (`EACCES`).
    NotReadWrite,
    /// The descriptor given as `/dev/xen/hypercall` is on the same device as the one given as
    /// `/dev/xen/privcmd` (the arguments swapped, or one descriptor passed twice). privcmd
    /// accepts the mapping but faults on the first access, so it is refused here.
    SameAsPrivcmd,
    /// privcmd refused even `XENVER_version` with `EPERM`: the descriptor was restricted to
    /// one domain with `IOCTL_PRIVCMD_RESTRICT`, and can issue no hypercall at all. A
    /// [`XenCtrl`](crate::XenCtrl) needs an unrestricted one.
    Restricted,
}

impl fmt::Display for FdProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdProblem::NotOpen => {
                f.write_str("is not open for I/O (closed, or opened with O_PATH)")
            }
            FdProblem::WrongFile(kind) => write!(f, "is {kind}, not that device"),
            FdProblem::NotReadWrite => f.write_str("is not open for both reading and writing"),
            FdProblem::SameAsPrivcmd => {
                f.write_str("is on the same device as the one given as /dev/xen/privcmd")
            }
            FdProblem::Restricted => f.write_str(
                "is restricted to one domain (IOCTL_PRIVCMD_RESTRICT) and cannot issue \
                 hypercalls; open an unrestricted one",
            ),
        }
    }
}

/// The kind of file a descriptor refers to, from `fstat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// A regular file.
    RegularFile,
    /// A directory.
    Directory,
    /// A pipe or FIFO.
    Pipe,
    /// A socket.
    Socket,
    /// A symbolic link (opened with `O_PATH | O_NOFOLLOW`).
    Symlink,
    /// A block device.
    BlockDevice {
        /// Its major number.
        major: u64,
        /// Its minor number.
        minor: u64,
    },
    /// A character device: `1:3` is `/dev/null`; the Xen devices are misc devices, major 10.
    CharDevice {
        /// Its major number.
        major: u64,
        /// Its minor number.
        minor: u64,
    },
    /// A kind `fstat` did not tell, or `fstat` failed.
    Other,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileKind::RegularFile => f.write_str("a regular file"),
            FileKind::Directory => f.write_str("a directory"),
            FileKind::Pipe => f.write_str("a pipe"),
            FileKind::Socket => f.write_str("a socket"),
            FileKind::Symlink => f.write_str("a symbolic link"),
            FileKind::BlockDevice { major, minor } => write!(f, "block device {major}:{minor}"),
            FileKind::CharDevice { major, minor } => write!(f, "character device {major}:{minor}"),
            FileKind::Other => f.write_str("a file of unknown kind"),
        }
    }
}

struct PortPrefix(Option<u32>);

impl fmt::Display for PortPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, "port {p}: "),
            None => Ok(()),
        }
    }
}

struct DomainPrefix(Option<DomId>);

impl fmt::Display for DomainPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, "domain {d}: "),
            None => Ok(()),
        }
    }
}

/// The operations this crate performs, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum Op {
    Version,
    Extraversion,
    Capabilities,
    Changeset,
    PageSize,
    Physinfo,
    DomainList,
    InterfaceProbe,
    CreateDomain,
    GetDomainInfo,
    DestroyDomain,
    PauseDomain,
    UnpauseDomain,
    SetMaxMem,
    SetMaxVcpus,
    ClaimPages,
    PopulatePhysmap,
    IncreaseReservation,
    DecreaseReservation,
    CurrentReservation,
    MaximumReservation,
    EvtchnAllocUnbound,
    MapForeign,
    MapResource,
    ResourceSize,
    GnttabSetupTable,
    EvtchnStatus,
    EvtchnClose,
    EvtchnReset,
    EvtchnOpen,
    EvtchnBindInterdomain,
    EvtchnBindUnbound,
    EvtchnBindVirq,
    EvtchnUnbind,
    EvtchnNotify,
    EvtchnUnmask,
    EvtchnRestrict,
    EvtchnResetRing,
    EvtchnRead,
    EvtchnWait,
    Domctl,
    Sysctl,
    MemoryOp,
    SetAddressSize,
    GetAddressSize,
    SetVcpuContext,
    GetVcpuContext,
    HypercallInit,
    SetTscInfo,
    GetTscInfo,
    GetHvmContext,
    SetHvmContext,
    GetCpuPolicy,
    SetCpuPolicy,
    SetPagingMempoolSize,
    GetPagingMempoolSize,
    SetHvmParam,
    GetHvmParam,
    PinTable,
    UnpinTable,
    SetMemoryMap,
    RemoteShutdown,
    SimBootReport,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Op::Version => "xen_version",
            Op::Extraversion => "xen_version extraversion",
            Op::Capabilities => "xen_version capabilities",
            Op::Changeset => "xen_version changeset",
            Op::PageSize => "xen_version pagesize",
            Op::Physinfo => "sysctl physinfo",
            Op::DomainList => "sysctl getdomaininfolist",
            Op::InterfaceProbe => "interface version probe",
            Op::CreateDomain => "domctl createdomain",
            Op::GetDomainInfo => "domctl getdomaininfo",
            Op::DestroyDomain => "domctl destroydomain",
            Op::PauseDomain => "domctl pausedomain",
            Op::UnpauseDomain => "domctl unpausedomain",
            Op::SetMaxMem => "domctl max_mem",
            Op::SetMaxVcpus => "domctl max_vcpus",
            Op::ClaimPages => "memory_op claim_pages",
            Op::PopulatePhysmap => "memory_op populate_physmap",
            Op::IncreaseReservation => "memory_op increase_reservation",
            Op::DecreaseReservation => "memory_op decrease_reservation",
            Op::CurrentReservation => "memory_op current_reservation",
            Op::MaximumReservation => "memory_op maximum_reservation",
            Op::EvtchnAllocUnbound => "event_channel_op alloc_unbound",
            Op::MapForeign => "foreign mapping (IOCTL_PRIVCMD_MMAPBATCH_V2)",
            Op::MapResource => "resource mapping (IOCTL_PRIVCMD_MMAP_RESOURCE)",
            Op::ResourceSize => "resource size query (IOCTL_PRIVCMD_MMAP_RESOURCE)",
            Op::GnttabSetupTable => "grant_table_op setup_table",
            Op::EvtchnStatus => "event_channel_op status",
            Op::EvtchnClose => "event_channel_op close",
            Op::EvtchnReset => "event_channel_op reset",
            Op::EvtchnOpen => "/dev/xen/evtchn open",
            Op::EvtchnBindInterdomain => "/dev/xen/evtchn bind_interdomain",
            Op::EvtchnBindUnbound => "/dev/xen/evtchn bind_unbound_port",
            Op::EvtchnBindVirq => "/dev/xen/evtchn bind_virq",
            Op::EvtchnUnbind => "/dev/xen/evtchn unbind",
            Op::EvtchnNotify => "/dev/xen/evtchn notify",
            Op::EvtchnUnmask => "/dev/xen/evtchn unmask",
            Op::EvtchnRestrict => "/dev/xen/evtchn restrict_domid",
            Op::EvtchnResetRing => "/dev/xen/evtchn reset",
            Op::EvtchnRead => "/dev/xen/evtchn read",
            Op::EvtchnWait => "/dev/xen/evtchn poll",
            Op::Domctl => "domctl",
            Op::Sysctl => "sysctl",
            Op::MemoryOp => "memory_op",
            Op::SetAddressSize => "domctl set_address_size",
            Op::GetAddressSize => "domctl get_address_size",
            Op::SetVcpuContext => "domctl setvcpucontext",
            Op::GetVcpuContext => "domctl getvcpucontext",
            Op::HypercallInit => "domctl hypercall_init",
            Op::SetTscInfo => "domctl settscinfo",
            Op::GetTscInfo => "domctl gettscinfo",
            Op::GetHvmContext => "domctl gethvmcontext",
            Op::SetHvmContext => "domctl sethvmcontext",
            Op::GetCpuPolicy => "domctl get_cpu_policy",
            Op::SetCpuPolicy => "domctl set_cpu_policy",
            Op::SetPagingMempoolSize => "domctl set_paging_mempool_size",
            Op::GetPagingMempoolSize => "domctl get_paging_mempool_size",
            Op::SetHvmParam => "hvm_op set_param",
            Op::GetHvmParam => "hvm_op get_param",
            Op::PinTable => "mmuext_op pin table",
            Op::UnpinTable => "mmuext_op unpin table",
            Op::SetMemoryMap => "memory_op set_memory_map",
            Op::RemoteShutdown => "sched_op remote_shutdown",
            Op::SimBootReport => "the simulated host's boot report",
        };
        f.write_str(s)
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
