//! Domain creation with Xen's memory claims: admission is atomic, and no lock is held across a
//! build that another creation could need.
//!
//! The race this guards against: two creations that each check "is there enough free memory?"
//! and then allocate can both see the same free memory and both go ahead; the second then
//! fails half way through its build (or starves dom0). A host-wide lock held across the
//! check and the whole build would fix that by making every creation wait for every other.
//! Instead Xen's claim reserves the pages atomically at admission: a creation either gets its
//! memory reserved at once or is refused at once, and builds run side by side.
//!
//! The order, and why (Xen's `XENMEM_claim_pages` takes a domid, and refuses a claim above the
//! domain's `max_mem`):
//!
//! 1. `createdomain`: an empty, paused domain. It costs no host memory and is not public yet
//!    (nothing names it in xenstore).
//! 2. `max_mem` = target + [`MAXMEM_CONSTANT_KIB`], as libxl's build sets it.
//! 3. **claim** the target's pages. This is the admission decision, made by Xen atomically
//!    against free memory minus everyone's outstanding claims. If it does not fit, the empty
//!    domain is destroyed and the caller gets "need N MiB, M MiB free": nothing was allocated,
//!    and nothing is left behind. Nothing before this step reserves memory, so the claim is
//!    the first step that can fail for lack of it.
//! 4. `max_vcpus`, then populate the physmap; allocations draw on the claim, so a concurrent
//!    creation can neither take these pages nor be blocked by this build.
//! 5. xenstore: the entries libxl writes (`/local/domain/N/...`, `/vm/UUID/...`,
//!    `/libxl/N/...`) in one transaction that also checks the name is free, then introduce the
//!    domain to xenstored.
//! 6. The stored config, under the domain's userdata lock.
//! 7. Release the claim (a no-op once populate consumed it; it matters when the build stopped
//!    short).
//!
//! Any failure after step 1 rolls everything back: the domain is destroyed (which also drops
//! its claim), its xenstore entries removed, its stored config deleted.
//!
//! A creation that dies cannot roll itself back. Before step 1 it records its intent (the new
//! domain's UUID) in a file it keeps locked until it is done, so [`recover_interrupted`] can find
//! the domains of dead creations, even those nothing names yet, and roll them back
//! ([`intent`](self) module notes in `create/intent.rs`).

mod intent;

pub use intent::recover_interrupted;

use uuid::Uuid;
use xenctrl::CreateDomain;
use xenstore::perms::{Access, Permissions};

use crate::config::stored::StoredConfig;
use crate::config::{DomainConfig, DomainType};
use crate::domain::{self, dom_path, libxl_path};
use crate::error::{DomainRef, Error, Result};
use crate::hooks;
use crate::host::Host;
use crate::lock::{level, DomId, Locked};
use crate::memory::MAXMEM_CONSTANT_KIB;

/// Pages per 2 MiB superpage extent.
const SUPERPAGE_PAGES: u64 = 512;
/// Extents per populate hypercall: 256 × 2 MiB = 512 MiB between progress reports.
const EXTENTS_PER_CALL: usize = 256;

/// A step of a creation, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The empty domain exists.
    Created(DomId),
    /// The memory is claimed.
    Claimed {
        /// Pages claimed.
        pages: u64,
    },
    /// Populating the physmap: so many pages of so many done.
    Populating {
        /// Pages populated so far.
        done: u64,
        /// Pages to populate.
        total: u64,
    },
    /// xenstore entries written.
    Xenstore,
    /// The stored config is written: the domain is complete.
    Stored,
}

/// What a creation made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    /// The new domain.
    pub domid: DomId,
    /// Its UUID.
    pub uuid: Uuid,
    /// Whether xenstored accepted the domain's introduction (it does not on real Xen until a
    /// kernel is loaded and the store ring granted: see [`create`]).
    pub introduced: bool,
}

/// Create a domain from `config`, paused (see the module documentation for the order).
///
/// The kernel, ramdisk and command line are recorded in the stored config only: loading a
/// kernel is not supported yet. The domain gets its store event channel and store page, and
/// is introduced to xenstored with them; a xenstored that needs a granted store ring (C
/// xenstored on real Xen) refuses until a kernel is loaded, and that refusal is reported in
/// [`Created::introduced`] rather than failing the creation.
///
/// # Errors
///
/// [`Error::Invalid`], [`Error::NameInUse`], [`Error::NotEnoughMemory`], and the error of the
/// step that failed; [`Error::Rollback`] when undoing a failed creation failed too.
pub fn create(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    config: &DomainConfig,
    progress: &mut dyn FnMut(Step),
) -> Result<Created> {
    config.validate().map_err(|source| Error::Invalid {
        name: config.name.clone(),
        source,
    })?;
    // Device ids and MACs are chosen now, so the stored config records them.
    let mut prepared = config.clone();
    crate::device::prepare_for_creation(&mut prepared).map_err(|what| Error::Refused {
        domain: DomainRef::new_named(&config.name),
        what,
    })?;
    let config = &prepared;
    // A quick check for a friendly message; the authoritative one is in the xenstore
    // transaction below.
    if let Some(domid) = domain::find_by_name(host, &config.name)? {
        return Err(Error::NameInUse {
            name: config.name.clone(),
            domid,
        });
    }
    let uuid = config.uuid.unwrap_or_else(Uuid::new_v4);
    let intent = intent::Intent::begin(host, uuid, &config.name)?;
    hooks::point("create:intent-recorded")?;
    let vcpus = config.vcpus;
    let xen_config = match config.domain_type {
        DomainType::Pv => CreateDomain::pv(vcpus),
        DomainType::Pvh => CreateDomain::pvh(vcpus),
    }
    .with_handle(*uuid.as_bytes());
    let domid = host
        .xc
        .create_domain(&xen_config)
        .map_err(|source| Error::Xen {
            domain: DomainRef::new_named(&config.name),
            what: "cannot create the domain",
            source,
        })?;
    progress(Step::Created(domid));
    let who = DomainRef::named(domid, &config.name);
    // Removing the intent is the last step: if that fails, the creation fails and is undone.
    let built = build(host, token, config, domid, uuid, &who, progress)
        .and_then(|introduced| hooks::point("create:complete").map(|()| introduced));
    let (first, intent) = match built {
        Ok(introduced) => match intent.finish() {
            Ok(()) => {
                return Ok(Created {
                    domid,
                    uuid,
                    introduced,
                })
            }
            Err(e) => (e, None),
        },
        Err(e) => (e, Some(intent)),
    };
    match rollback(host, token, domid, &who) {
        Ok(()) => {
            // A record left behind now names no domain, and recovery just removes it.
            if let Some(i) = intent {
                let _ = i.finish();
            }
            Err(first)
        }
        // The intent stays (unlocked, as `intent` drops) for recovery to finish the rollback.
        Err(second) => Err(Error::Rollback {
            domain: who,
            first: Box::new(first),
            source: Box::new(second),
        }),
    }
}

#[allow(clippy::too_many_arguments)]
fn build(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    config: &DomainConfig,
    domid: DomId,
    uuid: Uuid,
    who: &DomainRef,
    progress: &mut dyn FnMut(Step),
) -> Result<bool> {
    let xen = |what: &'static str| {
        move |source| Error::Xen {
            domain: who.clone(),
            what,
            source,
        }
    };
    let pages = config.memory_kib.div_ceil(4);
    host.xc
        .set_max_mem(domid, config.memory_kib + MAXMEM_CONSTANT_KIB)
        .map_err(xen("cannot set its maximum memory"))?;
    hooks::point("create:before-claim")?;
    if let Err(e) = host.xc.claim_pages(domid, pages) {
        if e.errno() == Some(xenctrl::Errno::ENOMEM) {
            let free_mib = host
                .xc
                .physinfo()
                .map(|p| p.free_pages.saturating_sub(p.outstanding_pages) * 4 / 1024)
                .unwrap_or(0);
            return Err(Error::NotEnoughMemory {
                domain: who.clone(),
                need_mib: config.memory_kib.div_ceil(1024),
                free_mib,
            });
        }
        return Err(xen("cannot claim its memory")(e));
    }
    progress(Step::Claimed { pages });
    hooks::point("create:claimed")?;
    host.xc
        .set_max_vcpus(domid, config.vcpus)
        .map_err(xen("cannot set its vCPUs"))?;
    let frames = populate(host, domid, pages, who, progress)?;
    hooks::point("create:populated")?;
    let store_port = host
        .xc
        .evtchn_alloc_unbound(domid, 0)
        .map_err(xen("cannot allocate its xenstore event channel"))?;
    // The store page is the last page, named by machine frame for PV (what Xen wrote back) and
    // by guest frame for a translated (PVH) guest, as libxl's `store_mfn`.
    let store_frame = frames.last().copied().unwrap_or(0);
    write_xenstore(host, config, domid, uuid, who, store_port, store_frame)?;
    progress(Step::Xenstore);
    let introduced = match host
        .xs
        .introduce_domain(u32::from(domid), store_frame, store_port)
    {
        Ok(()) => true,
        // C xenstored maps the guest's store ring through grant reference 1, which only a
        // loaded kernel's build sets up; with none it refuses (with whatever errno the grant
        // mapping gave) and registers nothing. The domain is complete without it.
        Err(e) if matches!(e.failure(), Some(xenstore::Failure::Daemon(_))) => false,
        Err(source) => {
            return Err(Error::Xenstore {
                domain: who.clone(),
                what: "xenstored refused to introduce it",
                source,
            })
        }
    };
    hooks::point("create:before-stored")?;
    {
        // The slow lock from recording the config (which describes the devices) until the
        // devices exist, as for a hot add: a device command on this domain (or a destroy) that
        // came in between would otherwise see devices recorded but not yet in xenstore, and
        // "repair" them away.
        host.with_slow(token, domid, |st| {
            host.with_userdata(st, domid, |guard| {
                let mut recorded = config.clone();
                recorded.uuid = Some(uuid);
                host.configs
                    .save(guard, &StoredConfig::new(domid, recorded))
                    .map_err(|source| Error::Stored {
                        domain: who.clone(),
                        source,
                    })
            })?;
            progress(Step::Stored);
            crate::device::attach_at_creation(host, st, domid, config)?;
            // Still under the slow lock, so a destroy that raced the creation cannot have taken
            // the domain (and its claim) away yet.
            host.xc
                .cancel_claim(domid)
                .map_err(xen("cannot release its memory claim"))
        })?;
    }
    Ok(introduced)
}

/// Populate `pages` pages from guest frame 0: 2 MiB extents while they fit, then 4 KiB ones
/// (and 4 KiB ones for whatever Xen could not give as superpages). Returns the frame each page
/// is known by (machine frames for PV, as Xen writes them back; guest frames for PVH).
fn populate(
    host: &Host,
    domid: DomId,
    pages: u64,
    who: &DomainRef,
    progress: &mut dyn FnMut(Step),
) -> Result<Vec<u64>> {
    let hvm = host.domain_info(domid)?.hvm();
    let mut frames: Vec<u64> = Vec::with_capacity(usize::try_from(pages).unwrap_or(0));
    let mut done = 0u64;
    let fail = |source| Error::Xen {
        domain: who.clone(),
        what: "cannot populate its memory",
        source,
    };
    let mut superpages = true;
    while done < pages {
        let left = pages - done;
        let (order, n) = if superpages && left >= SUPERPAGE_PAGES {
            (9, (left / SUPERPAGE_PAGES).min(EXTENTS_PER_CALL as u64))
        } else {
            (0, left.min((EXTENTS_PER_CALL as u64) * SUPERPAGE_PAGES))
        };
        let per = 1u64 << order;
        let mut gpfns: Vec<u64> = (0..n).map(|i| done + i * per).collect();
        let got_extents = host
            .xc
            .populate_physmap(domid, order, 0, &mut gpfns)
            .map_err(fail)?;
        let got = got_extents as u64;
        for (i, &f) in gpfns.iter().enumerate().take(got_extents) {
            for p in 0..per {
                frames.push(if hvm {
                    done + i as u64 * per + p
                } else {
                    f + p
                });
            }
        }
        done += got * per;
        progress(Step::Populating { done, total: pages });
        if got < n {
            if order == 0 {
                return Err(fail(xenctrl::Error::Xen {
                    op: xenctrl::Op::PopulatePhysmap,
                    domid: Some(domid),
                    source: xenctrl::Errno::ENOMEM,
                }));
            }
            // No more 2 MiB runs: go on with 4 KiB pages.
            superpages = false;
        }
    }
    Ok(frames)
}

#[allow(clippy::too_many_arguments)]
fn write_xenstore(
    host: &Host,
    config: &DomainConfig,
    domid: DomId,
    uuid: Uuid,
    who: &DomainRef,
    store_port: u32,
    store_frame: u64,
) -> Result<()> {
    let dom = dom_path(domid);
    let vm = format!("/vm/{}", uuid.hyphenated());
    let libxl = libxl_path(domid);
    let d = u32::from(domid);
    // libxl__domain_make's three permission sets.
    let noperm = Permissions::new(0, Access::NONE);
    let roperm = Permissions::new(0, Access::NONE).with(d, Access::READ);
    let rwperm = Permissions::new(d, Access::NONE);
    let target = config.memory_kib;
    let name = config.name.clone();
    let mut conflict: Option<Error> = None;
    let r = host.xs.transaction(|t| {
        conflict = None;
        // The name and UUID must be free; checked in the transaction, so two creations with
        // one name conflict and the retry sees the other's entry.
        for other in t.directory("/local/domain")? {
            if other == domid.to_string() {
                continue;
            }
            if let Ok(n) = t.read_string(&format!("/local/domain/{other}/name")) {
                if n == name {
                    conflict = Some(Error::NameInUse {
                        name: name.clone(),
                        domid: other.parse().unwrap_or(0),
                    });
                    return Ok(());
                }
            }
        }
        if t.exists(&vm)? {
            conflict = Some(Error::Refused {
                domain: who.clone(),
                what: format!("UUID {uuid} is in use by another domain ({vm} exists)"),
            });
            return Ok(());
        }
        let mknod = |path: &str, perms: &Permissions| -> xenstore::Result<()> {
            t.write(path, "")?;
            t.set_perms(path, perms)
        };
        for p in [&dom, &vm, &libxl] {
            if t.exists(p)? {
                t.rm(p)?;
            }
        }
        mknod(&dom, &roperm)?;
        mknod(&vm, &roperm)?;
        mknod(&libxl, &noperm)?;
        mknod(&format!("{libxl}/device"), &noperm)?;
        t.write(&format!("{dom}/vm"), &vm)?;
        t.write(&format!("{dom}/name"), &name)?;
        for sub in ["cpu", "memory", "device", "control"] {
            mknod(&format!("{dom}/{sub}"), &roperm)?;
        }
        mknod(&format!("{dom}/device/suspend/event-channel"), &rwperm)?;
        for sub in [
            "control/shutdown",
            "control/feature-poweroff",
            "control/feature-reboot",
            "control/feature-suspend",
            "control/sysrq",
            "data",
            "drivers",
            "feature",
            "attr",
            "error",
        ] {
            mknod(&format!("{dom}/{sub}"), &rwperm)?;
        }
        t.write(&format!("{vm}/uuid"), uuid.hyphenated().to_string())?;
        t.write(&format!("{vm}/name"), &name)?;
        t.write(&format!("{vm}/memory"), (target / 1024).to_string())?;
        t.write(
            &format!("{dom}/control/platform-feature-multiprocessor-suspend"),
            "1",
        )?;
        t.write(
            &format!("{dom}/control/platform-feature-xs_reset_watches"),
            "1",
        )?;
        t.write(&format!("{libxl}/type"), config.domain_type.as_str())?;
        // libxl__build_post's entries.
        t.write(
            &format!("{dom}/memory/static-max"),
            config.maxmem_kib.to_string(),
        )?;
        t.write(&format!("{dom}/memory/target"), target.to_string())?;
        t.write(&format!("{dom}/memory/videoram"), "0")?;
        t.write(&format!("{dom}/domid"), domid.to_string())?;
        t.write(&format!("{dom}/store/port"), store_port.to_string())?;
        t.write(&format!("{dom}/store/ring-ref"), store_frame.to_string())?;
        for cpu in 0..config.vcpus {
            t.write(&format!("{dom}/cpu/{cpu}/availability"), "online")?;
        }
        Ok(())
    });
    r.map_err(|source| Error::Xenstore {
        domain: who.clone(),
        what: "cannot write its xenstore entries",
        source,
    })?;
    match conflict {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Undo a failed creation: Xen (its claim goes with it), xenstore, then the stored config, all
/// under the domain's userdata lock, as `destroy` does. A domain someone destroyed meanwhile
/// has no lock to take (nor, then, a stored config); what is left of it in xenstore goes.
fn rollback(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
    who: &DomainRef,
) -> Result<()> {
    let done = host.try_with_userdata(token, domid, |guard| {
        domain::teardown(host, domid, who)?;
        host.configs.remove(guard).map_err(|source| Error::Stored {
            domain: who.clone(),
            source,
        })
    })?;
    if done.is_none() {
        domain::teardown(host, domid, who)?;
    }
    Ok(())
}
