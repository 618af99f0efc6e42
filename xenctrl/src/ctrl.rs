//! The open handle, and the typed hypercall entry points every operation goes through.

use std::fmt;
use std::sync::Arc;

use crate::abi::handle::GuestRanges;
use crate::abi::{
    __HYPERVISOR_domctl, __HYPERVISOR_event_channel_op, __HYPERVISOR_grant_table_op,
    __HYPERVISOR_memory_op, __HYPERVISOR_sysctl, __HYPERVISOR_xen_version, DomctlPayload,
    SysctlPayload, XenDomctl, XenMemoryReservation, XenSysctl,
};
use crate::backend::privcmd::Privcmd;
use crate::backend::sim::{SimConfig, SimHypervisor};
use crate::backend::Backend;
use crate::buffer::HypercallBuffer;
use crate::error::{Error, Op, Result};
use crate::interface::{self, InterfaceProfile, ProbeCall, RelayoutError};
use crate::pool::BufferPool;
use crate::DomId;

/// An open hypercall interface: the real hypervisor through privcmd, or the simulated one.
///
/// The handle owns its [`BufferPool`]; every hypercall argument lives there. The safe entry
/// points take their argument as a pool buffer, so the hypercall argument itself (not just the
/// guest handles inside it) cannot be stack or heap memory:
///
/// ```compile_fail,E0308
/// # use xenctrl::{XenCtrl, abi::{XenDomctl, XenDomctlPausedomain}};
/// let xc = XenCtrl::simulated(Default::default())?;
/// let mut on_stack = XenDomctl::new(1, XenDomctlPausedomain {});
/// xc.domctl(&mut on_stack)?;
/// # Ok::<(), xenctrl::Error>(())
/// ```
///
/// ```compile_fail,E0308
/// # use xenctrl::{XenCtrl, abi::{XenDomctl, XenDomctlPausedomain}};
/// let xc = XenCtrl::simulated(Default::default())?;
/// let mut boxed = Box::new(XenDomctl::new(1, XenDomctlPausedomain {}));
/// xc.domctl(&mut boxed)?;
/// # Ok::<(), xenctrl::Error>(())
/// ```
///
/// A pool buffer is what it takes:
///
/// ```
/// # use xenctrl::{XenCtrl, abi::{XenDomctl, XenDomctlGetdomaininfo}};
/// let xc = XenCtrl::simulated(Default::default())?;
/// let mut op = xc.pool().alloc::<XenDomctl<XenDomctlGetdomaininfo>>()?;
/// op.set(0, XenDomctlGetdomaininfo::default());
/// xc.domctl(&mut op)?;
/// assert_eq!(op.u.domain, 0);
/// # Ok::<(), xenctrl::Error>(())
/// ```
pub struct XenCtrl {
    pool: BufferPool,
    profile: &'static InterfaceProfile,
}

impl XenCtrl {
    /// Open the real hypervisor through `/dev/xen/privcmd`, and probe its interface versions.
    ///
    /// # Errors
    ///
    /// [`Error::Open`] when privcmd is missing or cannot be opened (not a Xen domain, no
    /// `xen-privcmd` module, not root); [`Error::UnsupportedInterface`] when Xen speaks a
    /// domctl/sysctl version this crate does not know.
    pub fn open() -> Result<Self> {
        Self::with_backend(Arc::new(Privcmd::open()?))
    }

    /// Like [`XenCtrl::open`], but the buffer pool ignores `/dev/xen/hypercall` and uses locked
    /// anonymous memory, as it does on kernels older than 4.18. For testing that fallback on
    /// real Xen.
    ///
    /// # Errors
    ///
    /// As for [`XenCtrl::open`].
    pub fn open_with_anonymous_buffers() -> Result<Self> {
        Self::with_backend(Arc::new(Privcmd::open_without_hypercall_device()?))
    }

    /// Options for opening the devices by path, e.g. without close-on-exec for a launcher
    /// that hands them to a sandboxed program: see [`OpenOptions`](crate::OpenOptions).
    /// `XenCtrl::options().open()` is [`XenCtrl::open`].
    pub fn options() -> crate::OpenOptions {
        crate::OpenOptions::new()
    }

    /// A handle around descriptors the caller opened earlier: `privcmd` on
    /// `/dev/xen/privcmd`, and `hypercall` on `/dev/xen/hypercall`, or `None` for buffers of
    /// locked anonymous memory.
    ///
    /// This is for callers that open the devices before entering a sandbox (a chroot, a mount
    /// namespace without `/dev/xen`, a seccomp filter or Landlock rule set that forbids `open`)
    /// or that receive them from a launcher (across `execve`, see
    /// [`OpenOptions::cloexec`](crate::OpenOptions::cloexec), or over a Unix socket). From
    /// here on the handle needs only `ioctl`, `mmap` and `munmap` on them, plus `madvise`,
    /// `mlock` and `munlock` for anonymous buffers.
    ///
    /// The descriptors keep the flags they were opened with: nothing here sets or clears
    /// `FD_CLOEXEC` or `O_NONBLOCK`. `hypercall` must be open for reading and writing
    /// (`O_RDWR`, as [`XenCtrl::open`] opens it); `privcmd` needs no particular access mode.
    /// The handle owns both and closes them when dropped, or at once if this fails.
    ///
    /// Before probing, each descriptor is checked: `privcmd` by issuing `XENVER_version`
    /// (harmless, and answered by any domain), `hypercall` by `fstat` (a misc character device,
    /// not the same one as `privcmd`) and by mapping and unmapping one page.
    ///
    /// # Errors
    ///
    /// [`Error::BadDeviceFd`] naming the device and the [`FdProblem`](crate::FdProblem) when a
    /// descriptor is not open for I/O, is another kind of file or device (`/dev/null` answers
    /// `ENOTTY`), is a restricted privcmd descriptor, or cannot be mapped; `privcmd` is checked
    /// first. Then as for [`XenCtrl::open`]: [`Error::Xen`] or
    /// [`Error::UnsupportedInterface`] from the probe.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::fs::OpenOptions;
    /// use std::os::fd::OwnedFd;
    ///
    /// use xenctrl::XenCtrl;
    ///
    /// let open = |path| OpenOptions::new().read(true).write(true).open(path);
    /// // While /dev/xen is still reachable:
    /// let privcmd = OwnedFd::from(open("/dev/xen/privcmd")?);
    /// let hypercall = open("/dev/xen/hypercall").ok().map(OwnedFd::from);
    /// // ... enter the sandbox: chroot, drop privileges, install a seccomp filter ...
    /// let xc = XenCtrl::from_fds(privcmd, hypercall)?;
    /// println!("Xen {}", xc.version()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// A descriptor on anything else is refused with the reason:
    ///
    /// ```
    /// use std::os::fd::OwnedFd;
    ///
    /// use xenctrl::{Errno, Error, FdProblem, FileKind, XenCtrl};
    ///
    /// let null = OwnedFd::from(std::fs::File::open("/dev/null")?);
    /// let err = XenCtrl::from_fds(null, None).unwrap_err();
    /// let null_dev = FileKind::CharDevice { major: 1, minor: 3 };
    /// assert!(matches!(
    ///     err,
    ///     Error::BadDeviceFd { problem: FdProblem::WrongFile(kind), .. } if kind == null_dev
    /// ));
    /// assert_eq!(err.errno(), Some(Errno::ENOTTY));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_fds(
        privcmd: std::os::fd::OwnedFd,
        hypercall: Option<std::os::fd::OwnedFd>,
    ) -> Result<Self> {
        Self::with_backend(Arc::new(Privcmd::from_fds(privcmd, hypercall)?))
    }

    /// Open a fresh simulated hypervisor described by `config`.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedInterface`] if `config` presents interface versions this crate does
    /// not support (that is how the probe is tested).
    pub fn simulated(config: SimConfig) -> Result<Self> {
        Self::with_backend(Arc::new(SimHypervisor::new(config)))
    }

    /// A handle on a simulated host the caller keeps too: to look at its model
    /// ([`SimHypervisor::with_state`]), inject faults, or open more handles on the same host,
    /// each with its own [`BufferPool`], as processes open real Xen.
    ///
    /// # Errors
    ///
    /// As for [`XenCtrl::simulated`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// use xenctrl::{CreateDomain, SimHypervisor, XenCtrl};
    ///
    /// let sim = Arc::new(SimHypervisor::default());
    /// let xc = XenCtrl::on_simulator(Arc::clone(&sim))?;
    /// let d = xc.create_domain(&CreateDomain::pv(1))?;
    /// assert!(sim.with_state(|s| s.domain(d).is_ok()));
    /// let other = XenCtrl::on_simulator(sim)?;
    /// assert!(other.domain_info(d)?.paused());
    /// # Ok::<(), xenctrl::Error>(())
    /// ```
    pub fn on_simulator(sim: Arc<SimHypervisor>) -> Result<Self> {
        Self::with_backend(sim)
    }

    /// A simulated host shared with every process that opens the same state file (see
    /// [`SimHypervisor::persistent`]): created from `config` if `path` does not exist yet.
    ///
    /// # Errors
    ///
    /// [`Error::Open`] when the state file cannot be created or read; as for
    /// [`XenCtrl::simulated`].
    pub fn simulated_persistent(path: &std::path::Path, config: SimConfig) -> Result<Self> {
        let sim = SimHypervisor::persistent(path, config).map_err(|e| Error::Open {
            path: "the simulated host's state file",
            source: std::io::Error::new(e.kind(), format!("{}: {e}", path.display())),
        })?;
        Self::with_backend(Arc::new(sim))
    }

    /// Whether `/dev/xen/privcmd` exists: [`XenCtrl::open_or_simulated`] would open real Xen.
    pub fn real_xen_available() -> bool {
        Privcmd::available()
    }

    /// The real hypervisor when `/dev/xen/privcmd` exists, otherwise a simulated host built
    /// from `config`.
    ///
    /// # Errors
    ///
    /// As for [`XenCtrl::open`] and [`XenCtrl::simulated`].
    pub fn open_or_simulated(config: SimConfig) -> Result<Self> {
        if Privcmd::available() {
            Self::open()
        } else {
            Self::simulated(config)
        }
    }

    pub(crate) fn with_backend(backend: Arc<dyn Backend>) -> Result<Self> {
        let pool = BufferPool::new(backend);
        let profile = interface::probe(&mut |call| probe_call(&pool, call))?;
        Ok(XenCtrl { pool, profile })
    }

    /// A handle whose interface profile is given rather than probed.
    #[cfg(feature = "bench-internals")]
    pub(crate) fn with_backend_and_profile(
        backend: Arc<dyn Backend>,
        profile: &'static InterfaceProfile,
    ) -> Self {
        XenCtrl {
            pool: BufferPool::new(backend),
            profile,
        }
    }

    /// The handle's hypercall buffer pool.
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    /// The interface versions this hypervisor speaks.
    pub fn interface(&self) -> &'static InterfaceProfile {
        self.profile
    }

    /// Issue one interface-version probe by hand: `Ok` if the hypervisor accepted the version,
    /// else its errno (`EACCES` for a version it does not speak).
    pub fn probe(&self, call: ProbeCall) -> std::result::Result<(), crate::Errno> {
        probe_call(&self.pool, call)
    }

    /// Which backend runs the hypercalls: `"privcmd"` or `"sim"`.
    pub fn backend_name(&self) -> &'static str {
        self.pool.backend().name()
    }

    /// Issue a domctl. Its `cmd` is set from the payload type and its interface version to the
    /// probed one; the target domain is `op.domain`.
    ///
    /// # Errors
    ///
    /// [`Error::ForeignBuffer`] when `op`, or a buffer a guest handle inside it points at,
    /// belongs to another pool (checked before Xen is called, on every backend);
    /// [`Error::Xen`] with Xen's errno otherwise.
    pub fn domctl<P: DomctlPayload>(
        &self,
        op: &mut HypercallBuffer<'_, XenDomctl<P>>,
    ) -> Result<u64> {
        self.check_pool(op, Op::Domctl)?;
        op.seal_header();
        self.check_handles(|f| op.u.guest_ranges(f), Op::Domctl)?;
        self.profile.encode_domctl(op).map_err(unsupported)?;
        let domid = op.domain;
        // SAFETY: `op` is a live buffer of this handle's pool, exclusively borrowed for the
        // call; guest handles inside a payload borrow their own pool buffers for as long as the
        // payload (and so `op`) lives.
        let ret = unsafe {
            self.raw(
                Op::Domctl,
                Some(domid),
                __HYPERVISOR_domctl,
                [op.addr(), 0, 0, 0, 0],
            )
        };
        self.profile.decode_domctl(op).map_err(unsupported)?;
        ret
    }

    /// Issue a sysctl with the probed interface version.
    ///
    /// # Errors
    ///
    /// As for [`XenCtrl::domctl`].
    pub fn sysctl<P: SysctlPayload>(
        &self,
        op: &mut HypercallBuffer<'_, XenSysctl<P>>,
    ) -> Result<u64> {
        self.check_pool(op, Op::Sysctl)?;
        op.seal_header();
        self.check_handles(|f| op.u.guest_ranges(f), Op::Sysctl)?;
        self.profile.encode_sysctl(op).map_err(unsupported)?;
        // SAFETY: as for `domctl`.
        let ret = unsafe {
            self.raw(
                Op::Sysctl,
                None,
                __HYPERVISOR_sysctl,
                [op.addr(), 0, 0, 0, 0],
            )
        };
        self.profile.decode_sysctl(op).map_err(unsupported)?;
        ret
    }

    /// Issue a `memory_op` reservation sub-op (`XENMEM_populate_physmap`,
    /// `XENMEM_increase_reservation`, `XENMEM_decrease_reservation`, `XENMEM_claim_pages`).
    /// Returns Xen's result: the number of extents done, or 0.
    ///
    /// # Errors
    ///
    /// As for [`XenCtrl::domctl`]; `EINVAL` for any other sub-op; [`Error::MissingList`] for a
    /// sub-op that reads or writes the extent list (populate, decrease) given none.
    #[allow(non_upper_case_globals)] // Xen's constant names, matched as patterns
    pub fn memory_reservation_op(
        &self,
        cmd: u64,
        op: &mut HypercallBuffer<'_, XenMemoryReservation<'_>>,
    ) -> Result<u64> {
        use crate::abi::{
            XENMEM_claim_pages, XENMEM_decrease_reservation, XENMEM_increase_reservation,
            XENMEM_populate_physmap,
        };
        let what = match cmd {
            XENMEM_populate_physmap => Op::PopulatePhysmap,
            XENMEM_increase_reservation => Op::IncreaseReservation,
            XENMEM_decrease_reservation => Op::DecreaseReservation,
            XENMEM_claim_pages => Op::ClaimPages,
            _ => return Err(Error::xen(Op::MemoryOp, None, crate::Errno::EINVAL)),
        };
        self.check_pool(op, what)?;
        if op.extent_start().is_null()
            && op.nr_extents() != 0
            && matches!(what, Op::PopulatePhysmap | Op::DecreaseReservation)
        {
            return Err(Error::MissingList { op: what });
        }
        self.check_handles(|f| op.guest_ranges(f), what)?;
        let domid = op.domid();
        // SAFETY: as for `domctl`; the extent handle borrows its buffer for `op`'s life.
        unsafe {
            self.raw(
                what,
                Some(domid),
                __HYPERVISOR_memory_op,
                [cmd, op.addr(), 0, 0, 0],
            )
        }
    }

    /// A `memory_op` sub-op whose argument is a `struct xen_memory_domain`
    /// (`XENMEM_current_reservation`, `XENMEM_maximum_reservation`), with its answer.
    pub(crate) fn memory_domid_op(&self, what: Op, cmd: u64, domid: DomId) -> Result<u64> {
        let mut arg = self.pool.alloc::<crate::abi::XenMemoryDomain>()?;
        arg.domid = domid;
        // SAFETY: `arg` is a live buffer of this pool, exclusively borrowed for the call.
        unsafe {
            self.raw(
                what,
                Some(domid),
                __HYPERVISOR_memory_op,
                [cmd, arg.addr(), 0, 0, 0],
            )
        }
    }

    /// `xen_version` with a pool buffer (or none) as its argument.
    pub(crate) fn xen_version_op<T: ?Sized>(
        &self,
        what: Op,
        cmd: u64,
        arg: Option<&mut HypercallBuffer<'_, T>>,
    ) -> Result<u64> {
        let addr = match arg {
            Some(buf) => {
                self.check_pool(buf, what)?;
                buf.addr()
            }
            None => 0,
        };
        // SAFETY: `addr` is 0 or a live buffer of this pool, exclusively borrowed for the call.
        unsafe { self.raw(what, None, __HYPERVISOR_xen_version, [cmd, addr, 0, 0, 0]) }
    }

    /// `sched_op` with a pool buffer as its argument.
    pub(crate) fn sched_op<T>(
        &self,
        what: Op,
        domid: Option<DomId>,
        cmd: u64,
        arg: &mut HypercallBuffer<'_, T>,
    ) -> Result<u64> {
        self.check_pool(arg, what)?;
        // SAFETY: a live buffer of this pool, exclusively borrowed for the call.
        unsafe {
            self.raw(
                what,
                domid,
                crate::abi::__HYPERVISOR_sched_op,
                [cmd, arg.addr(), 0, 0, 0],
            )
        }
    }

    /// `event_channel_op` with a pool buffer as its argument.
    pub(crate) fn evtchn_op<T>(
        &self,
        what: Op,
        domid: Option<DomId>,
        cmd: u64,
        arg: &mut HypercallBuffer<'_, T>,
    ) -> Result<u64> {
        self.check_pool(arg, what)?;
        // SAFETY: a live buffer of this pool, exclusively borrowed for the call.
        unsafe {
            self.raw(
                what,
                domid,
                __HYPERVISOR_event_channel_op,
                [cmd, arg.addr(), 0, 0, 0],
            )
        }
    }

    /// `grant_table_op` with one handle-bearing pool buffer as its argument (`count` 1).
    pub(crate) fn grant_table_op<T: GuestRanges>(
        &self,
        what: Op,
        domid: Option<DomId>,
        cmd: u64,
        arg: &mut HypercallBuffer<'_, T>,
    ) -> Result<u64> {
        self.check_pool(arg, what)?;
        self.check_handles(|f| arg.guest_ranges(f), what)?;
        // SAFETY: a live buffer of this pool, exclusively borrowed for the call; the guest
        // handles inside it lie in this pool (checked above) and borrow their buffers for as
        // long as `arg` lives.
        unsafe {
            self.raw(
                what,
                domid,
                __HYPERVISOR_grant_table_op,
                [cmd, arg.addr(), 1, 0, 0],
            )
        }
    }

    /// `hvm_op` with a plain pool buffer as its argument (`HVMOP_set_param`,
    /// `HVMOP_get_param`).
    pub(crate) fn hvm_op(
        &self,
        what: Op,
        domid: DomId,
        cmd: u64,
        arg: &mut HypercallBuffer<'_, crate::abi::XenHvmParam>,
    ) -> Result<u64> {
        self.check_pool(arg, what)?;
        // SAFETY: a live buffer of this pool, exclusively borrowed for the call; the argument
        // holds no guest handle.
        unsafe {
            self.raw(
                what,
                Some(domid),
                crate::abi::__HYPERVISOR_hvm_op,
                [cmd, arg.addr(), 0, 0, 0],
            )
        }
    }

    /// `mmuext_op` of one operation (count 1, no `pdone`) on `foreigndom`'s frames. The
    /// operation can only be a pin or an unpin ([`MmuextOp`](crate::abi::MmuextOp)'s
    /// constructors), which reach no guest memory beyond the argument.
    pub(crate) fn mmuext_op(
        &self,
        what: Op,
        foreigndom: DomId,
        op: &mut HypercallBuffer<'_, crate::abi::MmuextOp>,
    ) -> Result<u64> {
        self.check_pool(op, what)?;
        // SAFETY: a live buffer of this pool, exclusively borrowed for the call; the count is
        // 1, the size of the buffer, and `pdone` is null.
        unsafe {
            self.raw(
                what,
                Some(foreigndom),
                crate::abi::__HYPERVISOR_mmuext_op,
                [op.addr(), 1, 0, u64::from(foreigndom), 0],
            )
        }
    }

    /// A `memory_op` sub-op whose argument is one handle-bearing pool buffer
    /// (`XENMEM_set_memory_map`).
    pub(crate) fn memory_handle_op<T: GuestRanges>(
        &self,
        what: Op,
        domid: DomId,
        cmd: u64,
        arg: &mut HypercallBuffer<'_, T>,
    ) -> Result<u64> {
        self.check_pool(arg, what)?;
        self.check_handles(|f| arg.guest_ranges(f), what)?;
        // SAFETY: a live buffer of this pool, exclusively borrowed for the call; the guest
        // handles inside it lie in this pool (checked above) and borrow their buffers for as
        // long as `arg` lives.
        unsafe {
            self.raw(
                what,
                Some(domid),
                __HYPERVISOR_memory_op,
                [cmd, arg.addr(), 0, 0, 0],
            )
        }
    }

    /// Check that every range a payload's guest handles let Xen reach lies in this handle's pool.
    #[inline]
    fn check_handles(&self, ranges: impl FnOnce(&mut dyn FnMut(u64, u64)), op: Op) -> Result<()> {
        let mut foreign = false;
        ranges(&mut |addr, bytes| foreign |= !self.pool.owns(addr, bytes));
        if foreign {
            Err(Error::ForeignBuffer { op })
        } else {
            Ok(())
        }
    }

    fn check_pool<T: ?Sized>(&self, buf: &HypercallBuffer<'_, T>, op: Op) -> Result<()> {
        if buf.belongs_to(&self.pool) {
            Ok(())
        } else {
            Err(Error::ForeignBuffer { op })
        }
    }

    /// # Safety
    ///
    /// As for [`Backend::hypercall`].
    unsafe fn raw(&self, what: Op, domid: Option<DomId>, op: u64, args: [u64; 5]) -> Result<u64> {
        // SAFETY: forwarded from the caller.
        unsafe { self.pool.backend().hypercall(op, args) }.map_err(|e| Error::xen(what, domid, e))
    }
}

fn unsupported(e: RelayoutError) -> Error {
    Error::UnsupportedInterface {
        what: e.to_string(),
        supported: interface::supported_summary(),
    }
}

/// Issue one interface-version probe on `pool`'s backend and report Xen's answer.
fn probe_call(pool: &BufferPool, call: ProbeCall) -> std::result::Result<(), crate::Errno> {
    use crate::abi::{XenDomctlGetdomaininfo, XenSysctlPhysinfo};
    let backend = pool.backend();
    // A pool that cannot grow reports the errno of its mmap or mlock; ENOMEM if it has none.
    let nomem = |e: Error| e.errno().unwrap_or(crate::Errno::ENOMEM);
    let res = match call {
        ProbeCall::DomctlGetdomaininfo(version) => {
            let mut d = pool
                .alloc::<XenDomctl<XenDomctlGetdomaininfo>>()
                .map_err(nomem)?;
            d.set(0, XenDomctlGetdomaininfo::default());
            d.set_interface_version(version);
            // SAFETY: a live buffer of `pool`, exclusively borrowed for the call.
            unsafe { backend.hypercall(__HYPERVISOR_domctl, [d.addr(), 0, 0, 0, 0]) }
        }
        ProbeCall::SysctlPhysinfo(version) => {
            let mut s = pool
                .alloc::<XenSysctl<XenSysctlPhysinfo>>()
                .map_err(nomem)?;
            s.set(XenSysctlPhysinfo::default());
            s.set_interface_version(version);
            // SAFETY: as above.
            unsafe { backend.hypercall(__HYPERVISOR_sysctl, [s.addr(), 0, 0, 0, 0]) }
        }
    };
    res.map(drop)
}

impl fmt::Debug for XenCtrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XenCtrl")
            .field("backend", &self.backend_name())
            .field("interface", &self.profile)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{XEN_DOMCTL_createdomain, XenDomctlMaxMem};
    use crate::CreateDomain;

    /// Whatever `cmd` the memory holds, the entry point sends the payload type's: a max_mem
    /// envelope whose `cmd` says createdomain still sets max_mem, and creates nothing.
    #[test]
    fn the_entry_point_sends_the_payload_types_cmd() {
        let xc = XenCtrl::simulated(SimConfig::default()).unwrap();
        let d = xc.create_domain(&CreateDomain::pv(1)).unwrap();
        let before = xc.domain_list().unwrap().len();
        let mut op = xc.pool().alloc::<XenDomctl<XenDomctlMaxMem>>().unwrap();
        op.set(
            d,
            XenDomctlMaxMem {
                max_memkb: 12345 * 4,
            },
        );
        op.scribble_cmd(XEN_DOMCTL_createdomain);
        xc.domctl(&mut op).unwrap();
        assert_eq!(op.cmd(), crate::abi::XEN_DOMCTL_max_mem);
        assert_eq!(xc.domain_info(d).unwrap().max_pages, 12345);
        assert_eq!(
            xc.domain_list().unwrap().len(),
            before,
            "no domain was created"
        );
    }
}
