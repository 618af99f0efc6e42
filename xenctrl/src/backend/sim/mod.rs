//! The simulated hypervisor: an in-process model of Xen 4.17 behind the [`Backend`] trait.
//!
//! [`SimHypervisor`] answers the hypercalls this crate issues (`xen_version`, the domctl and
//! sysctl sub-ops of [`crate::abi`], the reservation/claim `memory_op`s,
//! `EVTCHNOP_alloc_unbound` and `GNTTABOP_setup_table`), and the privcmd ioctls that map other
//! domains' memory (`foreign`), with Xen's semantics and errnos, against a [`SimState`] host
//! model: host memory with claims, domains with their limits, pause counts, shutdown codes and
//! event channels.
//!
//! It reads and writes arguments only through the addresses it is handed, and only inside the
//! chunks it mapped for a pool ([`Backend::map_chunk`]); any other address is `EFAULT`, exactly
//! as if Xen could not copy it. Arguments are decoded from bytes with the `FromBytes` ABI types
//! and views, so arbitrary bytes at a valid address never panic.
//!
//! Layers: `memory` (the chunk registry, the only `unsafe`), `dispatch` (argument decoding),
//! [`state`] (the model, which never sees an address), `persist` (the model kept in a file and
//! shared by processes: [`SimHypervisor::persistent`]), `machine` (the contents of machine
//! frames), [`gnttab`] (grant tables with the semantics of Linux's gntdev and gntalloc, which
//! `xengnttab` runs on), `boot` (the structural boot checker that runs when a built domain is
//! first unpaused: [`SimHypervisor::boot_report`]) and `standin` (the stand-in guest that
//! then prints a console line and connects its xenstore ring).
//!
//! Tests can present another Xen release ([`SimConfig::release`], laid out from that release's
//! recorded header facts by `versions`) or interface version ([`SimConfig::presenting`]), make
//! calls fail
//! ([`SimHypervisor::inject_fault`]) and drive the guest side ([`SimHypervisor::with_state`]).

mod boot;
pub mod build;
mod dispatch;
pub mod evtchn;
pub(crate) mod evtchn_dev;
mod foreign;
pub mod gnttab;
mod machine;
mod memory;
mod persist;
mod sched;
mod standin;
pub mod state;
#[cfg(test)]
mod tests;
mod versions;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use nix::errno::Errno;

pub use self::boot::{BootCheck, BootFailure, BootKind, BootOutcome, BootReport, PV_GUEST_TYPE};
pub use self::build::{SimBuild, SimVcpu};
use self::dispatch::{Interface, VersionInfo};
pub use self::evtchn::{SimEventChannels, SimPort, SimPortState};
pub(crate) use self::foreign::SimWindow;
pub use self::gnttab::{
    SimActiveGrant, SimCopyDest, SimCopySegment, SimCopySource, SimGrantAddr, SimGrantError,
    SimGrantMapping, SimGrantShare, SimGrantTable, SimKernelGrant, SimUnmapNotify,
};
use self::machine::MachineMemory;
pub use self::machine::SimMapping;
#[cfg(any(test, feature = "bench-internals"))]
use self::memory::Confined;
use self::memory::{ChunkRegistry, GuestMemory};
pub use self::standin::{
    STANDIN_CONSOLE_PREFIX, STANDIN_XENSTORE_PATH, STANDIN_XENSTORE_REQ_ID, STANDIN_XENSTORE_VALUE,
};
pub use self::state::{SimDomain, SimDomainState, SimState, SIM_DOM0};
use super::{anon, Backend, ChunkMapping, ForeignWindow, MemorySource, ResourceId};
use crate::abi::{DomId, XenCapabilitiesInfo, XenChangesetInfo, XenExtraversion};
use crate::interface::{InterfaceProfile, XenRelease};

/// What the simulated host looks like.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Host RAM in MiB.
    pub total_mib: u64,
    /// RAM owned by dom0 at start, in MiB.
    pub dom0_mib: u64,
    /// Online CPUs.
    pub nr_cpus: u32,
    /// CPU frequency in kHz.
    pub cpu_khz: u32,
    /// `XEN_DOMCTL_INTERFACE_VERSION` the simulated Xen speaks.
    pub domctl_interface_version: u32,
    /// `XEN_SYSCTL_INTERFACE_VERSION` the simulated Xen speaks.
    pub sysctl_interface_version: u32,
    /// Xen's `(major, minor)` version.
    pub version: (u16, u16),
    /// `XENVER_extraversion` (truncated to 15 bytes).
    pub extraversion: String,
    /// `XENVER_capabilities` (truncated to 1023 bytes).
    pub capabilities: String,
    /// `XENVER_changeset` (truncated to 63 bytes).
    pub changeset: String,
}

impl Default for SimConfig {
    /// An 8 GiB, 4-CPU host running Xen 4.17 with a 1 GiB dom0.
    fn default() -> Self {
        Self {
            total_mib: 8192,
            dom0_mib: 1024,
            nr_cpus: 4,
            cpu_khz: 2_400_000,
            domctl_interface_version: crate::abi::XEN_DOMCTL_INTERFACE_VERSION,
            sysctl_interface_version: crate::abi::XEN_SYSCTL_INTERFACE_VERSION,
            version: (4, 17),
            extraversion: ".5-sim".into(),
            capabilities: "xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64".into(),
            changeset: "simulated".into(),
        }
    }
}

impl SimConfig {
    /// The same host presenting a profile's interface versions, as the newest release of the
    /// profile (see [`SimConfig::release`]).
    pub fn presenting(mut self, profile: &InterfaceProfile) -> Self {
        self.domctl_interface_version = profile.domctl;
        self.sysctl_interface_version = profile.sysctl;
        self.version = profile.newest_release().version;
        self
    }

    /// The same host running another Xen release: its version, and the interface versions its
    /// recorded header facts name ([`XenRelease::facts`]). The simulator lays out the domctl
    /// and sysctl payloads as those facts say, and behaves as the release's profile says
    /// (`getdomaininfo` lookups, `DOMID_ANY`, ...).
    pub fn release(mut self, release: &XenRelease) -> Self {
        let fact = |k: &str| {
            release
                .fact(k)
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0)
        };
        self.domctl_interface_version = fact("const XEN_DOMCTL_INTERFACE_VERSION");
        self.sysctl_interface_version = fact("const XEN_SYSCTL_INTERFACE_VERSION");
        self.version = release.version;
        self
    }
}

/// The error every call of a crashed simulated host gets.
fn crashed(why: &str) -> io::Error {
    io::Error::other(format!("the simulated Xen has crashed: {why}"))
}

/// Copy a string into a NUL-terminated C character array.
fn c_string<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let n = s.len().min(N - 1);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

/// Make calls fail: the next `count` calls of `hypercall` (and `subop`, if given: the domctl or
/// sysctl `cmd`, or the first register of other hypercalls) answer `errno` without running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimFault {
    /// The hypercall number (`__HYPERVISOR_*`).
    pub hypercall: u64,
    /// The sub-op, or every sub-op.
    pub subop: Option<u32>,
    /// What to answer.
    pub errno: Errno,
    /// How many calls to fail.
    pub count: u32,
}

/// An in-process simulated Xen 4.17 host.
#[derive(Debug)]
pub struct SimHypervisor {
    chunks: Arc<ChunkRegistry>,
    state: Mutex<SimState>,
    faults: Mutex<Vec<SimFault>>,
    iface: Interface,
    version: VersionInfo,
    /// The host's state file, when the host is shared with other processes
    /// ([`SimHypervisor::persistent`]); `state` is then this process's cached copy.
    persist: Option<(persist::Store, SimConfig)>,
    /// The contents of every machine frame (guest memory, grant tables).
    machine: MachineMemory,
    /// Unmap-notification events sent and not yet taken ([`SimHypervisor::take_unmap_events`]).
    unmap_events: Mutex<Vec<(crate::DomainId, u32)>>,
    /// Frames that look paged out to foreign mappings, and for how many more attempts
    /// ([`SimHypervisor::page_out`]).
    paged_out: Mutex<BTreeMap<(DomId, u64), u32>>,
    /// Which simulated `/dev/xen/evtchn` handle of this process bound each port.
    evtchn_users: evtchn_dev::Users,
}

impl SimHypervisor {
    /// A simulated host as `config` describes.
    pub fn new(config: SimConfig) -> Self {
        Self {
            chunks: Arc::new(ChunkRegistry::default()),
            state: Mutex::new(SimState::new(&config)),
            faults: Mutex::new(Vec::new()),
            iface: Interface::new(&config),
            version: VersionInfo {
                version: (u64::from(config.version.0) << 16) | u64::from(config.version.1),
                extraversion: XenExtraversion {
                    chars: c_string(&config.extraversion),
                },
                capabilities: XenCapabilitiesInfo {
                    chars: c_string(&config.capabilities),
                },
                changeset: XenChangesetInfo {
                    chars: c_string(&config.changeset),
                },
            },
            persist: None,
            machine: MachineMemory::anonymous().unwrap_or_else(|e| {
                panic!("simulated host: cannot create its machine memory (memfd_create): {e}")
            }),
            unmap_events: Mutex::new(Vec::new()),
            paged_out: Mutex::new(BTreeMap::new()),
            evtchn_users: evtchn_dev::Users::default(),
        }
    }

    /// A simulated host shared by every process that opens the state file at `path`: created
    /// from `config` if the file does not exist, else the host recorded there (whose config
    /// wins over `config`). Each hypercall locks the file (`<path>.lock`), runs against the
    /// current state and saves it atomically if it changed, so hypercalls from many processes
    /// are atomic and see one host.
    ///
    /// # Errors
    ///
    /// When the file cannot be created, read or decoded.
    ///
    /// # Examples
    ///
    /// ```
    /// use xenctrl::SimHypervisor;
    /// # let dir = std::env::temp_dir().join(format!("xenctrl-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("host");
    /// let a = SimHypervisor::persistent(&path, Default::default())?;
    /// let b = SimHypervisor::persistent(&path, Default::default())?;
    /// a.with_state(|s| s.create_domain(0, &xenctrl::backend::sim::SimState::pv_config(1)))?;
    /// assert_eq!(b.with_state(|s| s.domains.len()), 2); // dom0 and the new one
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn persistent(path: impl AsRef<Path>, config: SimConfig) -> io::Result<Self> {
        Self::open_persistent(path.as_ref(), config, false)
    }

    /// As [`SimHypervisor::persistent`], but the host starts afresh from `config` whatever the
    /// file held (a reboot: every domain is gone). Processes that had the old host open see the
    /// new one at their next hypercall.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn persistent_reset(path: impl AsRef<Path>, config: SimConfig) -> io::Result<Self> {
        Self::open_persistent(path.as_ref(), config, true)
    }

    fn open_persistent(path: &Path, config: SimConfig, reset: bool) -> io::Result<Self> {
        // A new host starts with empty machine memory, whatever an older one left.
        let fresh = reset || !path.exists();
        let (store, config, state) = persist::Store::open(path, &config, reset)?;
        let mut ram = path.as_os_str().to_owned();
        ram.push(".ram");
        let mut sim = Self::new(config.clone());
        sim.state = Mutex::new(state);
        sim.persist = Some((store, config));
        sim.machine = MachineMemory::at(Path::new(&ram), fresh)?;
        Ok(sim)
    }

    /// Run `f` on an up-to-date view of the state, which it cannot change: a persistent host
    /// refreshes its copy under the host lock if another process changed the file, and writes
    /// nothing back.
    fn query<R>(&self, f: impl FnOnce(&SimState) -> R) -> io::Result<R> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let f = |s: &SimState| -> io::Result<R> {
            match &s.crashed {
                Some(why) => Err(crashed(why)),
                None => Ok(f(s)),
            }
        };
        match &self.persist {
            None => f(&state),
            Some((store, _)) => {
                // A reload from the file replaces the model; this process's foreign-mapping
                // holds are not in the file, so they are kept aside (queries do not need them).
                let holds = std::mem::take(&mut state.foreign);
                let r = store.read(&mut state, f);
                state.foreign = holds;
                r?
            }
        }
    }

    /// Run `f` on the state as one atomic step (across processes for a persistent host), then
    /// deliver the event-channel ports it raised to the `/dev/xen/evtchn` handles.
    fn transact<R>(&self, f: impl FnOnce(&mut SimState) -> R) -> io::Result<R> {
        self.transact_on(false, f)
    }

    /// [`Self::transact`]; `even_crashed` runs `f` on a host that has crashed (to inspect it),
    /// where every other call fails.
    fn transact_on<R>(
        &self,
        even_crashed: bool,
        f: impl FnOnce(&mut SimState) -> R,
    ) -> io::Result<R> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let f = |s: &mut SimState| -> io::Result<R> {
            match &s.crashed {
                Some(why) if !even_crashed => Err(crashed(why)),
                _ => Ok(f(s)),
            }
        };
        let shared = self.persist.is_some();
        let f = |s: &mut SimState| {
            let r = f(s);
            self.run_boots(s);
            self.evtchn_users.deliver(s, shared);
            r
        };
        let r = match &self.persist {
            None => f(&mut state)?,
            Some((store, config)) => {
                // As in `query`, but `f` may need and change the holds: put them back into
                // the (possibly reloaded) model for it, and take them out again afterwards.
                let mut holds = Some(std::mem::take(&mut state.foreign));
                let r = store.transact(config, &mut state, |s| {
                    s.foreign = holds.take().unwrap_or_default();
                    let r = f(s);
                    holds = Some(std::mem::take(&mut s.foreign));
                    r
                });
                state.foreign = holds.take().unwrap_or_default();
                r??
            }
        };
        for (mfn, count) in state.take_freed() {
            // Best effort: a frame that cannot be scrubbed only keeps using memory, and is
            // never handed out again (machine frame numbers are not reused).
            let _ = self.machine.scrub(mfn, count);
        }
        Ok(r)
    }

    /// Boot every domain that is about to run its first instructions (see [`boot`]): check
    /// it, then run the stand-in guest or crash the domain, and keep the report. Part of the
    /// step that unpaused it, so a persistent host saves the outcome with that step.
    fn run_boots(&self, s: &mut SimState) {
        if s.crashed.is_some() {
            return;
        }
        let due: Vec<DomId> = s
            .domains
            .values()
            .filter(|d| boot::about_to_boot(d))
            .map(|d| d.domid)
            .collect();
        for domid in due {
            let Some(d) = s.domains.get(&domid) else {
                continue;
            };
            let kind = if d.is_hvm() {
                BootKind::Pvh
            } else {
                BootKind::Pv
            };
            let outcome = match boot::check(d, &self.machine) {
                Ok(booted) => {
                    let console_line = standin::console_line(d, &booted);
                    // The guest writing its own pages: only the host's memory file failing
                    // could stop it, and then the backends see no line, as with a hung guest.
                    let _ =
                        standin::write_console(&self.machine, booted.console.mfn, &console_line);
                    let _ = standin::write_xenstore_request(&self.machine, booted.store.mfn);
                    // EVTCHNOP_send from the guest: a port its backend has not bound yet drops
                    // the event, as Xen does (the backend looks at the ring when it binds).
                    let _ = s.evtchn_send(domid, booted.console.port);
                    let _ = s.evtchn_send(domid, booted.store.port);
                    BootOutcome::Booted { console_line }
                }
                Err(failure) => {
                    let _ = s.shutdown(domid, crate::abi::SHUTDOWN_crash);
                    BootOutcome::Crashed(failure)
                }
            };
            if let Some(d) = s.domains.get_mut(&domid) {
                d.boot = Some(BootReport { kind, outcome });
            }
        }
    }

    /// What the boot checker found when `domain` first ran after a builder started its vCPU
    /// (see [`BootReport`]); `None` until then, and for a domain never given a vCPU state.
    ///
    /// A failed boot crashes the domain (`SHUTDOWN_crash`, as Xen does when a guest faults
    /// at boot) and names the check; a good one has printed the stand-in guest's console line
    /// into the console ring and queued its `XS_WRITE` of [`STANDIN_XENSTORE_PATH`] on the
    /// xenstore ring, and notified both event channels.
    ///
    /// # Errors
    ///
    /// `ESRCH` for no such domain, `EIO` when a persistent host's state file cannot be read
    /// (or the simulated Xen has crashed).
    pub fn boot_report(&self, domain: crate::DomainId) -> Result<Option<BootReport>, Errno> {
        self.query(|s| s.domain(domain.get()).map(|d| d.boot.clone()))
            .unwrap_or(Err(Errno::EIO))
    }

    /// The contents of the host's machine frames.
    pub(crate) fn machine(&self) -> &MachineMemory {
        &self.machine
    }

    /// Run `f` on the host model: inspect it, or act as a guest would (e.g.
    /// [`SimState::shutdown`]).
    ///
    /// # Panics
    ///
    /// For a [persistent](SimHypervisor::persistent) host whose state file cannot be read or
    /// written; [`SimHypervisor::try_with_state`] reports that instead.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut SimState) -> R) -> R {
        match self.try_with_state(f) {
            Ok(r) => r,
            Err(e) => panic!("simulated host state file: {e}"),
        }
    }

    /// [`SimHypervisor::with_state`], reporting a state file that cannot be read or written.
    ///
    /// # Errors
    ///
    /// The I/O error of a persistent host's state file.
    pub fn try_with_state<R>(&self, f: impl FnOnce(&mut SimState) -> R) -> io::Result<R> {
        self.transact_on(true, f)
    }

    /// Make upcoming calls fail (see [`SimFault`]). Faults are consumed in the order added.
    pub fn inject_fault(&self, fault: SimFault) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fault);
    }

    /// Remove every pending fault.
    pub fn clear_faults(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn take_fault(&self, op: u64, subop: Result<u32, Errno>) -> Option<Errno> {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let i = faults.iter().position(|f| {
            f.hypercall == op && f.count > 0 && f.subop.is_none_or(|s| subop == Ok(s))
        })?;
        let errno = faults[i].errno;
        faults[i].count -= 1;
        if faults[i].count == 0 {
            faults.remove(i);
        }
        Some(errno)
    }

    /// The hypercall itself, on any memory: the part that could run out of process.
    fn call(&self, op: u64, args: [u64; 5]) -> Result<u64, Errno> {
        self.call_in(&*self.chunks, op, args)
    }

    /// The hypercall, reading and writing only through `mem`.
    fn call_in(&self, mem: &dyn GuestMemory, op: u64, args: [u64; 5]) -> Result<u64, Errno> {
        let subop = dispatch::subop(mem, op, args);
        if let Some(errno) = self.take_fault(op, subop) {
            return Err(errno);
        }
        if dispatch::is_query(op, subop) {
            let answer = self
                .query(|state| dispatch::query(state, &self.iface, &self.version, mem, op, args));
            match answer {
                Ok(Some(r)) => return r,
                // Not a query after all: run it as a change, below.
                Ok(None) => {}
                Err(_) => return Err(Errno::EIO),
            }
        }
        self.transact(|state| dispatch::dispatch(state, &self.iface, &self.version, mem, op, args))
            // A state file that cannot be read or written is the simulated host failing.
            .unwrap_or(Err(Errno::EIO))
    }
}

impl Default for SimHypervisor {
    fn default() -> Self {
        Self::new(SimConfig::default())
    }
}

impl Backend for SimHypervisor {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn memory_source(&self) -> MemorySource {
        MemorySource::LockedAnonymous
    }

    fn map_chunk(&self, len: usize) -> io::Result<ChunkMapping> {
        let chunk = anon::map(len)?;
        self.chunks
            .register(chunk.base().as_ptr().expose_provenance(), chunk.len());
        Ok(chunk.observed_by(self.chunks.clone()))
    }

    /// Runs the hypercall against the model. Every address is checked against the chunks this
    /// simulator mapped; anything else is `EFAULT`, so the simulator never touches memory the
    /// contract does not cover.
    unsafe fn hypercall(&self, op: u64, args: [u64; 5]) -> Result<u64, Errno> {
        self.call(op, args)
    }

    fn foreign_window(&self, pages: usize, writable: bool) -> io::Result<ForeignWindow> {
        self.sim_foreign_window(pages, writable)
    }

    fn mmap_batch(
        &self,
        window: &mut ForeignWindow,
        first: usize,
        domid: DomId,
        gfns: &[u64],
        errs: &mut [i32],
    ) -> Result<(), Errno> {
        self.sim_mmap_batch(window, first, domid, gfns, errs)
    }

    fn mmap_resource(
        &self,
        window: &mut ForeignWindow,
        domid: DomId,
        resource: ResourceId,
        first: u64,
    ) -> Result<(), Errno> {
        self.sim_mmap_resource(window, domid, resource, first)
    }

    fn resource_size(&self, domid: DomId, resource: ResourceId) -> Result<u64, Errno> {
        self.sim_resource_size(domid, resource)
    }

    fn release_window(&self, window: ForeignWindow) {
        self.sim_release_window(window);
    }

    fn boot_report(&self, domid: DomId) -> Result<Option<BootReport>, Errno> {
        self.boot_report(crate::DomainId::new(domid))
    }

    #[cfg(any(test, feature = "bench-internals"))]
    /// Runs the hypercall against the model, reaching only `arena`: any address outside it is
    /// `EFAULT`, whatever the arguments say.
    fn hypercall_confined(
        &self,
        op: u64,
        args: [u64; 5],
        arena: (u64, u64),
    ) -> Option<Result<u64, Errno>> {
        let mem = Confined {
            inner: &self.chunks,
            start: arena.0,
            len: arena.1,
        };
        Some(self.call_in(&mem, op, args))
    }
}
