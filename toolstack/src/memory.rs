//! A domain's memory target and maximum, with libxl 4.17's semantics (`libxl_mem.c`), made
//! safe against concurrent changes: both run under the domain's userdata lock (which needs the
//! ctx lock first), the xenstore transaction is retried on `EAGAIN`, and the `max_mem`
//! hypercall happens inside the locked section, so memory/target and Xen's `max_mem` never
//! disagree for anyone who looks under the lock.
//!
//! The race this guards against: `mem-set` reads static-max, checks the new target against it
//! and writes the target; `mem-max` reads the target, checks the new maximum against it and
//! sets Xen's `max_mem`. Run side by side without a common lock, each can check against the
//! value the other is about to replace, and the domain ends with a target above its maximum
//! (or a maximum Xen enforces below the target the balloon driver aims for).

use serde::Serialize;

use crate::domain::{dom_path, domain_ref, parse_kib, uuid_string};
use crate::error::{DomainRef, Error, Result};
use crate::hooks;
use crate::host::Host;
use crate::lock::{level, DomId, Locked, UserdataGuard};
use xenstore::ReadOpt;

/// What Xen's `max_mem` exceeds the memory target by (libxl's `LIBXL_MAXMEM_CONSTANT`, the x86
/// "arch extra memory"), KiB.
pub const MAXMEM_CONSTANT_KIB: u64 = 1024;

/// dom0's minimum memory target (libxl's `LIBXL_MIN_DOM0_MEM`), KiB: a policy of the
/// toolstack, whatever machine it runs on.
pub const MIN_DOM0_KIB: u64 = 128 * 1024;

/// A memory target: absolute, or relative to the current one (`xl mem-set` takes absolute).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// This many KiB (videoram included, as libxl counts an absolute target).
    Absolute(u64),
    /// The current target plus (or minus) this many KiB, floored at 0.
    Relative(i64),
}

/// A domain's memory as xenstore and Xen see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryView {
    /// `memory/target`, KiB.
    pub target_kib: u64,
    /// `memory/static-max`, KiB.
    pub static_max_kib: u64,
    /// `memory/videoram`, KiB (0 when absent).
    pub videoram_kib: u64,
    /// Xen's `max_mem`, KiB.
    pub max_mem_kib: u64,
    /// Pages the domain has.
    pub tot_pages: u64,
}

impl MemoryView {
    /// Whether `max_mem` is what an enforcing `set_memory_target` leaves:
    /// target + videoram + [`MAXMEM_CONSTANT_KIB`].
    pub fn max_mem_matches_target(&self) -> bool {
        self.max_mem_kib == self.target_kib + self.videoram_kib + MAXMEM_CONSTANT_KIB
    }
}

fn xs_err<'a>(domain: &'a DomainRef, what: &'static str) -> impl Fn(xenstore::Error) -> Error + 'a {
    move |source| Error::Xenstore {
        domain: domain.clone(),
        what,
        source,
    }
}

/// Read a KiB node inside transaction `t`; `None` when it does not exist.
fn read_kib(t: &xenstore::Transaction<'_>, who: &DomainRef, path: &str) -> Result<Option<u64>> {
    let domid = who.domid.unwrap_or(0);
    t.read_string_opt(path)
        .map_err(xs_err(who, "cannot read its memory nodes"))?
        .map(|v| parse_kib(domid, path, &v))
        .transpose()
}

/// Run `body` in a xenstore transaction, retrying the whole of it when xenstored answers
/// `EAGAIN` (at the commit or inside), as libxl's `retry_transaction` loops do.
fn in_transaction<T>(
    host: &Host,
    who: &DomainRef,
    mut body: impl FnMut(&xenstore::Transaction<'_>) -> Result<T>,
) -> Result<T> {
    let again = |e: &Error| match e {
        Error::Xenstore { source, .. } => source.errno() == Some(xenstore::Errno::EAGAIN),
        _ => false,
    };
    loop {
        let t = host
            .xs
            .transaction_start()
            .map_err(xs_err(who, "cannot start a xenstore transaction"))?;
        match body(&t) {
            Ok(v) => match t.commit() {
                Ok(()) => return Ok(v),
                Err(e) if e.errno() == Some(xenstore::Errno::EAGAIN) => continue,
                Err(e) => return Err(xs_err(who, "cannot commit its memory nodes")(e)),
            },
            Err(e) => {
                let _ = t.abort();
                if again(&e) {
                    continue;
                }
                return Err(e);
            }
        }
    }
}

/// Take the domain's userdata lock (reporting the lock steps to test hooks), unless the test
/// switch that re-creates the target/maxmem race says not to.
fn lock_domain<'t>(
    host: &Host,
    token: &'t mut Locked<'_, level::Ctx>,
    domid: DomId,
) -> Result<Option<UserdataGuard<'t>>> {
    if hooks::skip_userdata_lock() {
        return Ok(None);
    }
    let exists = |d| host.domain_exists(d);
    let mut hook_error = None;
    let guard = host
        .locks
        .lock_userdata_observed(token, domid, &exists, &mut |step| {
            if let crate::lock::file::AcquireStep::Opened { .. } = step {
                if let Err(e) = hooks::point("lock-opened") {
                    hook_error = Some(e);
                }
            }
        })
        .map_err(Error::from_lock)?;
    match hook_error {
        Some(e) => Err(e),
        None => Ok(Some(guard)),
    }
}

/// Keep the stored config's memory figures in step (when the domain has one: a domain xl made
/// has none of ours).
fn update_stored(
    host: &Host,
    guard: Option<&UserdataGuard<'_>>,
    who: &DomainRef,
    f: impl FnOnce(&mut crate::config::DomainConfig),
) -> Result<()> {
    let Some(guard) = guard else {
        return Ok(());
    };
    let stored_err = |source| Error::Stored {
        domain: who.clone(),
        source,
    };
    if let Some(mut stored) = host.configs.load_opt(guard).map_err(stored_err)? {
        f(&mut stored.config);
        host.configs.save_own(guard, &stored).map_err(stored_err)?;
    }
    Ok(())
}

/// Set a domain's memory target (`xl mem-set`; libxl's `libxl_set_memory_target`).
///
/// An absolute target counts videoram, as libxl's does; a relative one moves the current
/// target. A target above `memory/static-max` is refused, and so is a dom0 target below
/// [`MIN_DOM0_KIB`]. With `enforce`, Xen's `max_mem` becomes target + videoram +
/// [`MAXMEM_CONSTANT_KIB`] inside the same locked section and transaction. Also writes
/// `/vm/UUID/memory` (MiB) and the stored config's memory. Returns the result as seen under
/// the lock.
///
/// # Errors
///
/// [`Error::NoSuchDomain`], [`Error::TargetAboveMax`], [`Error::Dom0Floor`], [`Error::Xen`],
/// [`Error::Xenstore`], [`Error::Stored`], [`Error::Lock`].
pub fn set_memory_target(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
    target: Target,
    enforce: bool,
) -> Result<MemoryView> {
    let mut ctx = host.ctx.lock(token);
    let mut t = ctx.token();
    let guard = lock_domain(host, &mut t, domid)?;
    let who = domain_ref(host, domid);
    let info = host.domain_info(domid)?;
    let base = dom_path(domid);
    let (target_path, max_path, vram_path) = (
        format!("{base}/memory/target"),
        format!("{base}/memory/static-max"),
        format!("{base}/memory/videoram"),
    );
    let vm_memory = format!("/vm/{}/memory", uuid_string(&info.handle));
    let view = in_transaction(host, &who, |t| {
        let current = match read_kib(t, &who, &target_path)? {
            Some(v) => v,
            // dom0 without memory nodes: fill them from Xen (libxl__fill_dom0_memory_info).
            None if domid == 0 => {
                let kib = info.tot_pages * 4;
                t.write(&target_path, kib.to_string())
                    .map_err(xs_err(&who, "cannot write dom0's memory nodes"))?;
                if read_kib(t, &who, &max_path)?.is_none() {
                    t.write(&max_path, (info.max_pages * 4).to_string())
                        .map_err(xs_err(&who, "cannot write dom0's memory nodes"))?;
                }
                kib
            }
            None => {
                return Err(Error::Refused {
                    domain: who.clone(),
                    what: format!("it has no {target_path} in xenstore"),
                })
            }
        };
        let static_max = read_kib(t, &who, &max_path)?.ok_or_else(|| Error::Refused {
            domain: who.clone(),
            what: format!("it has no {max_path} in xenstore"),
        })?;
        let videoram = read_kib(t, &who, &vram_path)?.unwrap_or(0);
        let new_target = match target {
            Target::Relative(delta) => current.saturating_add_signed(delta),
            Target::Absolute(kib) => kib.saturating_sub(videoram),
        };
        if new_target > static_max {
            return Err(Error::TargetAboveMax {
                domain: who.clone(),
                target_kib: new_target,
                static_max_kib: static_max,
            });
        }
        if domid == 0 && new_target < MIN_DOM0_KIB {
            return Err(Error::Dom0Floor {
                domain: who.clone(),
                target_kib: new_target,
                min_kib: MIN_DOM0_KIB,
            });
        }
        hooks::point("mem-set:before-max-mem")?;
        let mut max_mem_kib = info.max_pages * 4;
        if enforce {
            max_mem_kib = new_target + videoram + MAXMEM_CONSTANT_KIB;
            host.xc
                .set_max_mem(domid, max_mem_kib)
                .map_err(|source| Error::Xen {
                    domain: who.clone(),
                    what: "cannot set its maximum memory",
                    source,
                })?;
        }
        t.write(&target_path, new_target.to_string())
            .map_err(xs_err(&who, "cannot write its memory target"))?;
        t.write(&vm_memory, (new_target / 1024).to_string())
            .map_err(xs_err(&who, "cannot write its memory target"))?;
        hooks::point("mem-set:before-commit")?;
        Ok(MemoryView {
            target_kib: new_target,
            static_max_kib: static_max,
            videoram_kib: videoram,
            max_mem_kib,
            tot_pages: info.tot_pages,
        })
    })?;
    update_stored(host, guard.as_ref(), &who, |c| {
        c.memory_kib = view.target_kib;
    })?;
    if let Some(g) = guard {
        g.release().map_err(Error::Lock)?;
    }
    Ok(view)
}

/// Set a domain's maximum memory (`xl mem-max`; libxl's `libxl_domain_setmaxmem`): Xen's
/// `max_mem` becomes `max_kib` + [`MAXMEM_CONSTANT_KIB`] and `memory/static-max` becomes
/// `max_kib`, refusing a maximum below the current target. Under the userdata lock, like
/// [`set_memory_target`].
///
/// # Errors
///
/// [`Error::NoSuchDomain`], [`Error::MaxBelowTarget`], [`Error::Xen`], [`Error::Xenstore`],
/// [`Error::Stored`], [`Error::Lock`].
pub fn set_max_mem(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
    max_kib: u64,
) -> Result<MemoryView> {
    let mut ctx = host.ctx.lock(token);
    let mut t = ctx.token();
    let guard = lock_domain(host, &mut t, domid)?;
    let who = domain_ref(host, domid);
    let info = host.domain_info(domid)?;
    let base = dom_path(domid);
    let (target_path, max_path, vram_path) = (
        format!("{base}/memory/target"),
        format!("{base}/memory/static-max"),
        format!("{base}/memory/videoram"),
    );
    let view = in_transaction(host, &who, |t| {
        let target = read_kib(t, &who, &target_path)?.ok_or_else(|| Error::Refused {
            domain: who.clone(),
            what: format!("it has no {target_path} in xenstore"),
        })?;
        if max_kib < target {
            return Err(Error::MaxBelowTarget {
                domain: who.clone(),
                max_kib,
                target_kib: target,
            });
        }
        let videoram = read_kib(t, &who, &vram_path)?.unwrap_or(0);
        hooks::point("mem-max:before-max-mem")?;
        let max_mem_kib = max_kib + MAXMEM_CONSTANT_KIB;
        host.xc
            .set_max_mem(domid, max_mem_kib)
            .map_err(|source| Error::Xen {
                domain: who.clone(),
                what: "cannot set its maximum memory",
                source,
            })?;
        t.write(&max_path, max_kib.to_string())
            .map_err(xs_err(&who, "cannot write its static-max"))?;
        hooks::point("mem-max:before-commit")?;
        Ok(MemoryView {
            target_kib: target,
            static_max_kib: max_kib,
            videoram_kib: videoram,
            max_mem_kib,
            tot_pages: info.tot_pages,
        })
    })?;
    update_stored(host, guard.as_ref(), &who, |c| {
        c.maxmem_kib = max_kib;
    })?;
    if let Some(g) = guard {
        g.release().map_err(Error::Lock)?;
    }
    Ok(view)
}

/// A domain's memory as seen under its userdata lock: what the invariants are checked against.
///
/// # Errors
///
/// [`Error::NoSuchDomain`], [`Error::Refused`] when a memory node is missing, [`Error::Xen`],
/// [`Error::Xenstore`], [`Error::Lock`].
pub fn observe(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
) -> Result<MemoryView> {
    host.with_userdata(token, domid, |_guard| {
        let who = domain_ref(host, domid);
        let base = dom_path(domid);
        in_transaction(host, &who, |t| {
            let need = |leaf: &str| -> Result<u64> {
                let path = format!("{base}/memory/{leaf}");
                read_kib(t, &who, &path)?.ok_or_else(|| Error::Refused {
                    domain: who.clone(),
                    what: format!("it has no {path} in xenstore"),
                })
            };
            let info = host.domain_info(domid)?;
            Ok(MemoryView {
                target_kib: need("target")?,
                static_max_kib: need("static-max")?,
                videoram_kib: read_kib(t, &who, &format!("{base}/memory/videoram"))?.unwrap_or(0),
                max_mem_kib: info.max_pages * 4,
                tot_pages: info.tot_pages,
            })
        })
    })
}
