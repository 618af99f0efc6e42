//! The host the toolstack manages: a hypervisor handle, a xenstore connection, and where the
//! per-domain locks and stored configs live.
//!
//! [`Host::open`] picks real Xen when `/dev/xen/privcmd` exists, else the simulated host of
//! [`crate::sim`]. Everything above this module is written once against [`Host`]; nothing asks
//! which kind it is (the kind is kept only to print it).

use std::path::PathBuf;
use std::sync::Arc;

use uuid::Uuid;

use xenctrl::{DomainInfo, XenCtrl};

use crate::build::kernel::KernelCache;
use crate::config::stored::ConfigStore;
use crate::error::{DomainRef, Error, Result};
use crate::lock::{
    level, CheckError, CtxLock, DomId, LockBefore, LockDir, Locked, UserdataGuard, UuidLookup,
};
use crate::sim::{self, SimOptions};

/// libxl's per-domain userdata directory (`XEN_LIB_DIR`).
pub const LIBXL_DIR: &str = "/var/lib/xen";

/// Where Xen's tools log (`XEN_LOG_DIR`; xl's monitors write `xl-NAME.log` there).
pub const XEN_LOG_DIR: &str = "/var/log/xen";

/// Where Xen's tools install the hotplug scripts (libxl's `XEN_SCRIPT_DIR`).
pub const XEN_SCRIPT_DIR: &str = "/etc/xen/scripts";

/// Which machine a [`Host`] drives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// Real Xen through `/dev/xen/privcmd` and the system's xenstored.
    Xen,
    /// The simulated host in this state directory.
    Simulated(PathBuf),
}

/// How to choose and reach the host.
#[derive(Clone, Debug, Default)]
pub struct HostOptions {
    /// Use the simulated host even if real Xen is there.
    pub force_simulated: bool,
    /// The simulated host's state directory (default: [`sim::default_dir`]).
    pub sim_dir: Option<PathBuf>,
    /// The machine a simulated host boots as, when it is not running yet.
    pub sim_config: Option<xenctrl::SimConfig>,
    /// The binary to run as the simulated host's xenstored (default: this program).
    pub sim_daemon_exe: Option<PathBuf>,
    /// Where real-Xen per-domain lock files live (default: [`LockDir::DEFAULT`], libxl's
    /// directory, where they are libxl's locks).
    pub lock_dir: Option<PathBuf>,
    /// Where real-Xen libxl stored configs (`userdata-d.*.libxl-json`) are kept (default:
    /// [`LIBXL_DIR`], where xl reads them).
    pub libxl_dir: Option<PathBuf>,
    /// Where real-Xen stored configs live (default: [`ConfigStore::DEFAULT`]).
    pub config_dir: Option<PathBuf>,
}

/// The per-process context behind the ctx lock. It holds nothing yet but its place in the
/// lock order: libxl's CTX_LOCK, which the userdata lock requires.
#[derive(Debug, Default)]
pub struct Ctx {
    _private: (),
}

/// An open host.
#[derive(Debug)]
pub struct Host {
    /// The hypervisor (shared with the lock directory, which asks it for UUIDs).
    pub xc: Arc<XenCtrl>,
    /// xenstore.
    pub xs: xenstore::Client,
    /// The per-domain lock files.
    pub locks: LockDir,
    /// The stored domain configs.
    pub configs: ConfigStore,
    /// Where the backends' hotplug scripts live (`block`, `vif-bridge`), which the toolstack
    /// runs as libxl does: Xen's in [`XEN_SCRIPT_DIR`], or the simulated host's stubs.
    pub hotplug_scripts: PathBuf,
    /// The per-process ctx lock.
    pub ctx: CtxLock<Ctx>,
    /// Where detached monitors log ([`XEN_LOG_DIR`], or the simulated host's `log/`).
    pub log_dir: PathBuf,
    /// The cache of unpacked kernels creation loads through
    /// ([`KernelCache::DEFAULT_DIR`], or the simulated host's `kernel-cache/`).
    pub kernel_cache: KernelCache,
    kind: HostKind,
    booted: bool,
}

/// The UUID lookup of a [`LockDir`] with libxl's naming: Xen's handle of the domain, as libxl's
/// `libxl__userdata_path` gets it from `libxl_domain_info`.
fn uuid_lookup(xc: &Arc<XenCtrl>) -> UuidLookup {
    let xc = Arc::clone(xc);
    Arc::new(move |domid| match xc.domain_info(domid) {
        Ok(info) => Ok(Some(Uuid::from_bytes(info.handle))),
        Err(e) if e.errno() == Some(xenctrl::Errno::ESRCH) => Ok(None),
        Err(e) => Err(Box::new(e) as CheckError),
    })
}

impl Host {
    /// Open the host as `opts` says.
    ///
    /// # Errors
    ///
    /// [`Error::OpenXen`], [`Error::OpenXenstore`] or [`Error::SimHost`].
    pub fn open(opts: &HostOptions) -> Result<Self> {
        if !opts.force_simulated && XenCtrl::real_xen_available() {
            let xc = Arc::new(XenCtrl::open().map_err(Error::OpenXen)?);
            let xs = xenstore::Client::open().map_err(Error::OpenXenstore)?;
            let lock_dir = opts
                .lock_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(LockDir::DEFAULT));
            let libxl_dir = opts
                .libxl_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(LIBXL_DIR));
            return Ok(Host {
                locks: LockDir::libxl(lock_dir, uuid_lookup(&xc)),
                configs: opts
                    .config_dir
                    .as_ref()
                    .map_or_else(ConfigStore::default, ConfigStore::new)
                    .with_libxl(libxl_dir),
                xc,
                xs,
                hotplug_scripts: PathBuf::from(XEN_SCRIPT_DIR),
                ctx: CtxLock::new(Ctx::default()),
                log_dir: PathBuf::from(XEN_LOG_DIR),
                kernel_cache: KernelCache::new(KernelCache::DEFAULT_DIR),
                kind: HostKind::Xen,
                booted: false,
            });
        }
        let dir = opts.sim_dir.clone().unwrap_or_else(sim::default_dir);
        let mut so = SimOptions::new(&dir);
        if let Some(c) = &opts.sim_config {
            so.config = c.clone();
        }
        so.daemon_exe = opts.sim_daemon_exe.clone();
        let (xc, xs, booted) = sim::connect(&so)?;
        let xc = Arc::new(xc);
        // The same naming as on real Xen, in the state directory's stand-in for /var/lib/xen.
        let paths = sim::SimPaths::new(&dir);
        let libxl_dir = paths.libxl_dir();
        Ok(Host {
            locks: LockDir::libxl(&libxl_dir, uuid_lookup(&xc)),
            configs: ConfigStore::new(paths.configs_dir()).with_libxl(&libxl_dir),
            xc,
            xs,
            hotplug_scripts: paths.hotplug_scripts_dir(),
            ctx: CtxLock::new(Ctx::default()),
            log_dir: dir.join("log"),
            kernel_cache: KernelCache::new(dir.join("kernel-cache")),
            kind: HostKind::Simulated(dir),
            booted,
        })
    }

    /// Which machine this is.
    pub fn kind(&self) -> &HostKind {
        &self.kind
    }

    /// The options a child `rxl` process needs to reach this same host (a detached monitor):
    /// none for real Xen, `--simulate --sim-dir DIR` for a simulated one.
    pub fn child_args(&self) -> Vec<std::ffi::OsString> {
        match &self.kind {
            HostKind::Xen => Vec::new(),
            HostKind::Simulated(dir) => {
                vec!["--simulate".into(), "--sim-dir".into(), dir.clone().into()]
            }
        }
    }

    /// Whether opening this host booted it (a simulated host that was not running).
    pub fn booted(&self) -> bool {
        self.booted
    }

    /// Whether domain `domid` exists, as the per-domain locks ask after locking.
    pub fn domain_exists(&self, domid: DomId) -> std::result::Result<bool, CheckError> {
        match self.xc.domain_info(domid) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(xenctrl::Errno::ESRCH) => Ok(false),
            Err(e) => Err(Box::new(e)),
        }
    }

    /// Xen's view of domain `domid`, or [`Error::NoSuchDomain`].
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchDomain`] for a missing domain, [`Error::Xen`] otherwise.
    pub fn domain_info(&self, domid: DomId) -> Result<DomainInfo> {
        self.xc.domain_info(domid).map_err(|e| {
            if e.errno() == Some(xenctrl::Errno::ESRCH) {
                Error::NoSuchDomain(domid.to_string())
            } else {
                Error::Xen {
                    domain: DomainRef::id(domid),
                    what: "cannot get the domain's information",
                    source: e,
                }
            }
        })
    }
    /// Runs `f` holding domain `domid`'s slow device lock, and releases it after; `f` gets the
    /// token for the locks that may come after it. The one way the toolstack takes that lock
    /// for a domain that exists (crash recovery of a destroyed one takes it directly).
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchDomain`] for a domain that does not exist (or was destroyed while we
    /// waited for its lock); [`Error::Lock`] if the lock cannot be taken or released; what
    /// `f` returns.
    pub fn with_slow<R>(
        &self,
        token: &mut Locked<'_, level::Unlocked>,
        domid: DomId,
        f: impl FnOnce(&mut Locked<'_, level::Slow>) -> Result<R>,
    ) -> Result<R> {
        let exists = |d| self.domain_exists(d);
        let mut slow = self
            .locks
            .lock_slow(token, domid, &exists)
            .map_err(Error::from_lock)?;
        // On an error the guard's drop releases the lock.
        let r = f(&mut slow.token())?;
        slow.release().map_err(Error::Lock)?;
        Ok(r)
    }

    /// Runs `f` holding domain `domid`'s userdata ("fast") lock, taken after the ctx lock as
    /// the hierarchy wants, and releases both after. This is the one way the toolstack takes a
    /// domain's userdata lock: `token` proves the caller holds no lock that must come after
    /// the ctx lock (none, or the domain's slow lock), so the compile-time order still holds.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchDomain`] for a domain that does not exist (or was destroyed while we
    /// waited for its lock); [`Error::Lock`] if the lock cannot be taken or released; what
    /// `f` returns.
    pub fn with_userdata<L: LockBefore<level::Ctx>, R>(
        &self,
        token: &mut Locked<'_, L>,
        domid: DomId,
        f: impl FnOnce(&UserdataGuard<'_>) -> Result<R>,
    ) -> Result<R> {
        self.try_with_userdata(token, domid, f)?
            .ok_or_else(|| Error::NoSuchDomain(domid.to_string()))
    }

    /// [`with_userdata`](Self::with_userdata), but `Ok(None)` (and `f` not run) for a domain
    /// that does not exist.
    ///
    /// # Errors
    ///
    /// As [`with_userdata`](Self::with_userdata), but for a missing domain.
    pub fn try_with_userdata<L: LockBefore<level::Ctx>, R>(
        &self,
        token: &mut Locked<'_, L>,
        domid: DomId,
        f: impl FnOnce(&UserdataGuard<'_>) -> Result<R>,
    ) -> Result<Option<R>> {
        let exists = |d| self.domain_exists(d);
        self.with_userdata_checked(token, domid, &exists, f)
    }

    /// [`try_with_userdata`](Self::try_with_userdata) with the caller's check of whether the
    /// domain counts as there (recovery of a destroyed domain's leftovers takes the locks of
    /// one that is gone).
    pub(crate) fn with_userdata_checked<L: LockBefore<level::Ctx>, R>(
        &self,
        token: &mut Locked<'_, L>,
        domid: DomId,
        check: &dyn crate::lock::DomainCheck,
        f: impl FnOnce(&UserdataGuard<'_>) -> Result<R>,
    ) -> Result<Option<R>> {
        let mut ctx = self.ctx.lock(token);
        let mut t = ctx.token();
        let guard = match self.locks.lock_userdata(&mut t, domid, check) {
            Ok(g) => g,
            Err(crate::lock::Error::NoSuchDomain { .. }) => return Ok(None),
            Err(e) => return Err(Error::Lock(e)),
        };
        // On an error the guard's drop releases the lock.
        let r = f(&guard)?;
        guard.release().map_err(Error::Lock)?;
        Ok(Some(r))
    }
}
