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
//! 0. With a kernel: load it (through the host's [`KernelCache`]), read the initrd, and lay the
//!    guest out ([`Boot`]). All of this is decided before Xen is asked anything, so a bad
//!    kernel, or one that does not fit the memory, fails the creation with nothing to undo.
//! 1. `createdomain`: an empty, paused domain (PV: no flags; PVH: `CDF_hvm | CDF_hap` with
//!    the emulated local APIC). It costs no host memory and is not public yet (nothing names
//!    it in xenstore).
//! 2. `max_mem` = target + [`MAXMEM_CONSTANT_KIB`], as libxl's build sets it.
//! 3. **claim** the pages the build will populate. This is the admission decision, made by Xen
//!    atomically against free memory minus everyone's outstanding claims. If it does not fit,
//!    the empty domain is destroyed and the caller gets "need N MiB, M MiB free": nothing was
//!    allocated, and nothing is left behind. Nothing before this step reserves memory, so the
//!    claim is the first step that can fail for lack of it.
//! 4. `max_vcpus`; the backends' domains (`/tool/xenstored/domid`, `/tool/xenconsoled/domid`,
//!    0 if absent) and an unbound event channel for each ring (libxl's `libxl__build_pre`);
//!    with a kernel, the settings made before populate ([`Executor::setup`]).
//! 5. Populate; allocations draw on the claim, so a concurrent creation can neither take
//!    these pages nor be blocked by this build.
//! 6. With a kernel, the build proper ([`crate::build::exec`]): load the kernel and initrd,
//!    write the page tables and start info, set the vCPUs, seed the grant table.
//! 7. xenstore: the entries libxl writes (`/local/domain/N/...`, `/vm/UUID/...`,
//!    `/libxl/N/...`) in one transaction that also checks the name is free, then introduce the
//!    domain to xenstored with its store ring.
//! 8. The stored config, under the domain's userdata lock; the devices, the primary console
//!    with its ring.
//! 9. Release the claim (a no-op once populate consumed it; it matters when the build stopped
//!    short).
//! 10. With a kernel and unless asked to stay paused, unpause.
//!
//! Any failure after step 1 rolls everything back: the domain is destroyed (which also drops
//! its claim, its memory, event channels and grants), its xenstore entries removed, its stored
//! config deleted.
//!
//! A creation that dies cannot roll itself back. Before step 1 it records its intent (the new
//! domain's UUID) in a file it keeps locked until it is done, so [`recover_interrupted`] can find
//! the domains of dead creations, even those nothing names yet, and roll them back
//! ([`intent`](self) module notes in `create/intent.rs`).
//!
//! Each stage is a [`Step`] in the progress reports, and its time is kept in [`Timings`].

mod intent;
mod timings;

pub use intent::recover_interrupted;
pub use timings::Timings;

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use uuid::Uuid;
use xenctrl::CreateDomain;
use xenstore::perms::{Access, Permissions};
use xenstore::{Batch, ReadOpt};

use crate::build::exec::{Boot, Break, Breaks, Executor, Rings};
use crate::build::kernel::{
    CacheOutcome, CommandLine, GuestKind, ImageLimits, Initrd, KernelCache, KernelImage,
};
use crate::config::stored::StoredConfig;
use crate::config::{DomainConfig, DomainType};
use crate::device::PrimaryConsole;
use crate::domain::{self, dom_path, libxl_path};
use crate::error::{DomainRef, Error, Result};
use crate::hooks;
use crate::host::Host;
use crate::lock::{level, DomId, Locked};
use crate::memory::MAXMEM_CONSTANT_KIB;

/// Where a loaded kernel's ELF image came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelSource {
    /// The file was an ELF image: nothing to unpack.
    Plain,
    /// It was unpacked now (and stored in the cache, if it could be).
    Unpacked,
    /// The unpacked image came from the cache.
    Cached,
}

/// A step of a creation, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The kernel is loaded and the guest laid out (before the domain exists).
    KernelLoaded {
        /// Where the ELF image came from.
        source: KernelSource,
        /// Its size.
        elf_bytes: u64,
    },
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
    /// The kernel and initrd are in guest memory.
    Loaded {
        /// Bytes written (zeros included).
        bytes: u64,
    },
    /// The page tables, p2m list and start info are written (PVH: the start info, ACPI
    /// tables and HVM parameters).
    PageTables {
        /// Bytes written.
        bytes: u64,
    },
    /// The vCPUs' state is set.
    Vcpus,
    /// The grant table is seeded for the console and xenstore backends.
    Grants,
    /// xenstore entries written, and the domain introduced.
    Xenstore,
    /// The stored config is written: the domain is complete.
    Stored,
    /// The domain runs.
    Unpaused,
}

/// How to create a domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// Leave the domain paused once built (`xl create -p`). A domain without a kernel is
    /// always left paused: there is nothing to run.
    pub paused: bool,
    /// Steps to break on purpose (tests only: empty without the `test-hooks` feature).
    /// `RXEN_TEST_BREAK` adds to them.
    pub breaks: Breaks,
}

impl CreateOptions {
    /// Build and leave the domain paused.
    pub fn paused() -> CreateOptions {
        CreateOptions {
            paused: true,
            ..CreateOptions::default()
        }
    }
}

/// What a creation made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    /// The new domain.
    pub domid: DomId,
    /// Its UUID.
    pub uuid: Uuid,
    /// Whether xenstored accepted the domain's introduction (C xenstored on real Xen does not
    /// for a domain without a kernel, whose store ring is not granted: see [`create_with`]).
    pub introduced: bool,
    /// Whether a kernel was loaded.
    pub booted: bool,
    /// Whether the domain was unpaused.
    pub unpaused: bool,
    /// Where the time went.
    pub timings: Timings,
}

/// Create a domain from `config` and leave it paused: [`create_with`] with
/// [`CreateOptions::paused`].
///
/// # Errors
///
/// As [`create_with`].
pub fn create(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    config: &DomainConfig,
    progress: &mut dyn FnMut(Step),
) -> Result<Created> {
    create_with(host, token, config, &CreateOptions::paused(), progress)
}

/// Create a domain from `config` (see the module documentation for the order): with a kernel,
/// build it and (unless `opts.paused`) unpause it; without one, an empty paused domain.
///
/// A domain without a kernel still gets its store event channel and store page, and is
/// introduced to xenstored with them; a xenstored that needs a granted store ring (C
/// xenstored on real Xen) refuses, and that refusal is reported in [`Created::introduced`]
/// rather than failing the creation. With a kernel the ring is granted, and a refusal fails
/// the creation.
///
/// # Errors
///
/// [`Error::Invalid`], [`Error::NameInUse`], [`Error::Kernel`], [`Error::Plan`],
/// [`Error::NotEnoughMemory`], [`Error::Build`], and the error of the step that failed;
/// [`Error::Rollback`] when undoing a failed creation failed too.
pub fn create_with(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    config: &DomainConfig,
    opts: &CreateOptions,
    progress: &mut dyn FnMut(Step),
) -> Result<Created> {
    let started = Instant::now();
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
    let breaks = opts.breaks.union(env_breaks()?);
    let mut timings = Timings::default();
    let boot = match &config.kernel {
        None => None,
        Some(path) => Some(prepare_boot(
            &host.kernel_cache,
            config,
            path,
            &mut timings,
            progress,
        )?),
    };
    let uuid = config.uuid.unwrap_or_else(Uuid::new_v4);
    let intent = intent::Intent::begin(host, uuid, &config.name)?;
    hooks::point("create:intent-recorded")?;
    let t = Instant::now();
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
    timings.domain = t.elapsed();
    progress(Step::Created(domid));
    let who = DomainRef::named(domid, &config.name);
    let job = Job {
        host,
        config,
        domid,
        uuid,
        who: &who,
        boot: boot.as_ref(),
        paused: opts.paused,
        breaks,
    };
    // Removing the intent is the last step: if that fails, the creation fails and is undone.
    let built = build(&job, token, &mut timings, progress)
        .and_then(|outcome| hooks::point("create:complete").map(|()| outcome));
    let (first, intent) = match built {
        Ok(outcome) => match intent.finish() {
            Ok(()) => {
                timings.total = started.elapsed();
                return Ok(Created {
                    domid,
                    uuid,
                    introduced: outcome.introduced,
                    booted: boot.is_some(),
                    unpaused: outcome.unpaused,
                    timings,
                });
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

/// The breaks `RXEN_TEST_BREAK` names (test builds only).
#[cfg(feature = "test-hooks")]
fn env_breaks() -> Result<Breaks> {
    Breaks::from_env().map_err(|e| Error::TestHook(e.to_string()))
}

/// No breaks: a build without the `test-hooks` feature reads no environment for them.
#[cfg(not(feature = "test-hooks"))]
fn env_breaks() -> Result<Breaks> {
    Ok(Breaks::NONE)
}

/// Step 0: the kernel (through `cache`), the initrd, the command line, and the plan.
fn prepare_boot(
    cache: &KernelCache,
    config: &DomainConfig,
    kernel: &str,
    timings: &mut Timings,
    progress: &mut dyn FnMut(Step),
) -> Result<Boot> {
    let limits = ImageLimits::default();
    let name = &config.name;
    let loaded =
        KernelImage::load_file(Path::new(kernel), &limits, Some(cache)).map_err(|source| {
            Error::Kernel {
                name: name.clone(),
                what: format!("the kernel {kernel}"),
                source,
            }
        })?;
    timings.kernel = loaded.timings;
    let source = match loaded.cache {
        CacheOutcome::Hit => KernelSource::Cached,
        CacheOutcome::NotPacked => KernelSource::Plain,
        _ => KernelSource::Unpacked,
    };
    let t = Instant::now();
    let initrd = match &config.ramdisk {
        None => None,
        Some(path) => Some(
            Initrd::from_file(Path::new(path), &limits)
                .map_err(|source| Error::Kernel {
                    name: name.clone(),
                    what: format!("the ramdisk {path}"),
                    source,
                })?
                .for_guest(&limits),
        ),
    };
    timings.initrd = t.elapsed();
    let cmdline =
        CommandLine::new(config.kernel_cmdline().unwrap_or_default()).map_err(|source| {
            Error::Kernel {
                name: name.clone(),
                what: "the command line".into(),
                source,
            }
        })?;
    let t = Instant::now();
    let kind = match config.domain_type {
        DomainType::Pv => GuestKind::Pv,
        DomainType::Pvh => GuestKind::Pvh,
    };
    let boot = Boot::new(
        loaded.image,
        initrd,
        &cmdline,
        kind,
        config.memory_kib / 4,
        config.vcpus,
    )
    .map_err(|source| Error::Plan {
        name: name.clone(),
        source,
    })?;
    timings.plan = t.elapsed();
    progress(Step::KernelLoaded {
        source,
        elf_bytes: boot.kernel().elf_bytes().len() as u64,
    });
    Ok(boot)
}

/// One creation's fixed inputs, from `createdomain` on.
struct Job<'a> {
    host: &'a Host,
    config: &'a DomainConfig,
    domid: DomId,
    uuid: Uuid,
    who: &'a DomainRef,
    boot: Option<&'a Boot>,
    paused: bool,
    breaks: Breaks,
}

/// What [`build`] reports back.
struct Outcome {
    introduced: bool,
    unpaused: bool,
}

/// Steps 2 to 10.
fn build(
    job: &Job<'_>,
    token: &mut Locked<'_, level::Unlocked>,
    timings: &mut Timings,
    progress: &mut dyn FnMut(Step),
) -> Result<Outcome> {
    let Job {
        host,
        config,
        domid,
        who,
        ..
    } = *job;
    let xen = |what: &'static str| {
        move |source| Error::Xen {
            domain: who.clone(),
            what,
            source,
        }
    };
    let stage = |stage: &'static str| {
        move |source| Error::Build {
            domain: who.clone(),
            stage,
            source,
        }
    };
    let t = Instant::now();
    let pages = job.boot.map_or(config.memory_kib.div_ceil(4), Boot::pages);
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
                need_mib: (pages * 4).div_ceil(1024),
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
    let rings = rings(host, domid, who)?;
    let mut exec = job
        .boot
        .map(|b| Executor::new(&host.xc, domid, b, rings, job.breaks));
    if let Some(e) = exec.as_mut() {
        e.setup(config.tsc_mode.xen(), config.maxmem_kib)
            .map_err(stage("setting it up"))?;
    }
    timings.domain += t.elapsed();

    let t = Instant::now();
    let mut report = |done, total| progress(Step::Populating { done, total });
    let plain_store_frame = match exec.as_mut() {
        Some(e) => {
            e.populate(&mut report)
                .map_err(stage("populating its memory"))?;
            0
        }
        None => populate_plain(host, domid, pages, &mut report)
            .map_err(stage("populating its memory"))?,
    };
    timings.populate = t.elapsed();
    hooks::point("create:populated")?;

    let (store_frame, console) = match exec.as_mut() {
        None => (
            plain_store_frame,
            PrimaryConsole {
                port: rings.console_port,
                ring_ref: None,
            },
        ),
        Some(e) => {
            let t = Instant::now();
            let stats = e.load().map_err(stage("loading its kernel"))?;
            timings.load = t.elapsed();
            progress(Step::Loaded { bytes: stats.bytes });
            hooks::point("create:loaded")?;
            let t = Instant::now();
            let stats = e
                .boot_pages()
                .map_err(stage("writing its page tables and start info"))?;
            timings.page_tables = t.elapsed();
            progress(Step::PageTables { bytes: stats.bytes });
            let t = Instant::now();
            e.vcpus().map_err(stage("setting its vCPUs"))?;
            timings.vcpus = t.elapsed();
            progress(Step::Vcpus);
            hooks::point("create:vcpus-set")?;
            let t = Instant::now();
            e.seed_grants().map_err(stage("seeding its grant table"))?;
            timings.grants = t.elapsed();
            progress(Step::Grants);
            let b = e.built();
            let ring_ref = if job.breaks.has(Break::ConsoleRingRef) {
                b.console_frame + 1
            } else {
                b.console_frame
            };
            (
                b.store_frame,
                PrimaryConsole {
                    port: rings.console_port,
                    ring_ref: Some(ring_ref),
                },
            )
        }
    };

    let t = Instant::now();
    let published_store_frame = match console.ring_ref {
        Some(c) if job.breaks.has(Break::StoreRingRef) => c,
        _ => store_frame,
    };
    write_xenstore(job, rings.store_port, published_store_frame)?;
    let introduced = match host
        .xs
        .introduce_domain(u32::from(domid), store_frame, rings.store_port)
    {
        Ok(()) => true,
        // C xenstored maps the guest's store ring through grant reference 1, which only a
        // loaded kernel's build sets up; with none it refuses (with whatever errno the grant
        // mapping gave) and registers nothing. A domain without a kernel is complete without
        // it.
        Err(e)
            if job.boot.is_none() && matches!(e.failure(), Some(xenstore::Failure::Daemon(_))) =>
        {
            false
        }
        Err(source) => {
            return Err(Error::Xenstore {
                domain: who.clone(),
                what: "xenstored refused to introduce it",
                source,
            })
        }
    };
    timings.xenstore = t.elapsed();
    progress(Step::Xenstore);
    hooks::point("create:before-stored")?;
    let t = Instant::now();
    {
        // The slow lock from recording the config (which describes the devices) until the
        // devices exist, as for a hot add: a device command on this domain (or a destroy) that
        // came in between would otherwise see devices recorded but not yet in xenstore, and
        // "repair" them away.
        host.with_slow(token, domid, |st| {
            host.with_userdata(st, domid, |guard| {
                let mut recorded = config.clone();
                recorded.uuid = Some(job.uuid);
                host.configs
                    .save(guard, &StoredConfig::new(domid, recorded))
                    .map_err(|source| Error::Stored {
                        domain: who.clone(),
                        source,
                    })
            })?;
            progress(Step::Stored);
            crate::device::attach_at_creation(host, st, domid, config, console)?;
            // Still under the slow lock, so a destroy that raced the creation cannot have taken
            // the domain (and its claim) away yet.
            host.xc
                .cancel_claim(domid)
                .map_err(xen("cannot release its memory claim"))
        })?;
    }
    timings.devices = t.elapsed();
    let unpaused = job.boot.is_some() && !job.paused;
    if unpaused {
        let t = Instant::now();
        host.xc
            .unpause_domain(domid)
            .map_err(xen("cannot unpause it"))?;
        timings.unpause = t.elapsed();
        progress(Step::Unpaused);
        hooks::point("create:unpaused")?;
    }
    Ok(Outcome {
        introduced,
        unpaused,
    })
}

/// The backends' domains and the rings' event channels, as libxl's `libxl__build_pre` makes
/// them: xenstore's first, then the console's.
fn rings(host: &Host, domid: DomId, who: &DomainRef) -> Result<Rings> {
    let backend = |path: &str| -> Result<DomId> {
        let value = host
            .xs
            .read_string_opt(path)
            .map_err(|source| Error::Xenstore {
                domain: who.clone(),
                what: "cannot read its backends' domain ids",
                source,
            })?;
        match value {
            None => Ok(0),
            Some(v) => v.trim().parse().map_err(|_| Error::BadNode {
                domain: who.clone(),
                path: path.to_owned(),
                value: v.clone(),
                expected: "a domain id",
            }),
        }
    };
    let store_domid = backend("/tool/xenstored/domid")?;
    let console_domid = backend("/tool/xenconsoled/domid")?;
    let alloc = |remote, what| {
        host.xc
            .evtchn_alloc_unbound(domid, remote)
            .map_err(|source| Error::Xen {
                domain: who.clone(),
                what,
                source,
            })
    };
    let store_port = alloc(store_domid, "cannot allocate its xenstore event channel")?;
    let console_port = alloc(console_domid, "cannot allocate its console event channel")?;
    Ok(Rings {
        store_domid,
        console_domid,
        store_port,
        console_port,
    })
}

/// Populates a domain without a kernel: `pages` pages from guest frame 0. Returns the frame of
/// the last page, which serves as its store page (a machine frame for PV, a guest frame for
/// a translated guest).
fn populate_plain(
    host: &Host,
    domid: DomId,
    pages: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> std::result::Result<u64, crate::build::exec::BuildError> {
    let translated = host
        .xc
        .domain_info(domid)
        .map_err(crate::build::exec::BuildError::xen(
            "cannot read its information",
        ))?
        .hvm();
    let range = crate::build::plan::PfnRange {
        start: 0,
        count: pages,
    };
    let p2m =
        crate::build::exec::memory::populate(&host.xc, domid, &[range], translated, progress)?;
    Ok(if translated {
        pages.saturating_sub(1)
    } else {
        p2m.last().copied().unwrap_or(0)
    })
}

/// `start_time` as libxl writes it under `/vm/UUID`: seconds and hundredths.
fn start_time() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:02}", now.as_secs(), now.subsec_millis() / 10)
}

/// Step 7's entries, in one transaction (`libxl__domain_make`, `libxl__domain_build`,
/// `libxl__build_post`).
fn write_xenstore(job: &Job<'_>, store_port: u32, store_frame: u64) -> Result<()> {
    let Job {
        host,
        config,
        domid,
        uuid,
        who,
        ..
    } = *job;
    let booted = job.boot.is_some();
    let started = start_time();
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
    // Every node in one pipelined batch: some sixty changes, which one by one cost a round
    // trip to xenstored each (most of a creation's time in xenstore, in a dom0 under TCG).
    let mut b = Batch::new();
    let mknod = |b: &mut Batch, path: &str, perms: &Permissions| {
        b.write_with_perms(path, "", perms);
    };
    mknod(&mut b, &dom, &roperm);
    mknod(&mut b, &vm, &roperm);
    mknod(&mut b, &libxl, &noperm);
    mknod(&mut b, &format!("{libxl}/device"), &noperm);
    b.write(format!("{dom}/vm"), &vm);
    b.write(format!("{dom}/name"), &name);
    for sub in ["cpu", "memory", "device", "control"] {
        mknod(&mut b, &format!("{dom}/{sub}"), &roperm);
    }
    mknod(
        &mut b,
        &format!("{dom}/device/suspend/event-channel"),
        &rwperm,
    );
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
        mknod(&mut b, &format!("{dom}/{sub}"), &rwperm);
    }
    b.write(format!("{vm}/uuid"), uuid.hyphenated().to_string());
    b.write(format!("{vm}/name"), &name);
    b.write(format!("{vm}/memory"), (target / 1024).to_string());
    if booted {
        // libxl__domain_build's `vments`: the image for PV, the start time for both.
        if config.domain_type == DomainType::Pv {
            b.write(format!("{vm}/image/ostype"), "linux");
            if let Some(k) = &config.kernel {
                b.write(format!("{vm}/image/kernel"), k);
            }
            if let Some(r) = &config.ramdisk {
                b.write(format!("{vm}/image/ramdisk"), r);
            }
            if let Some(c) = config.kernel_cmdline() {
                b.write(format!("{vm}/image/cmdline"), c);
            }
        }
        b.write(format!("{vm}/start_time"), &started);
    }
    b.write(
        format!("{dom}/control/platform-feature-multiprocessor-suspend"),
        "1",
    );
    b.write(
        format!("{dom}/control/platform-feature-xs_reset_watches"),
        "1",
    );
    b.write(format!("{libxl}/type"), config.domain_type.as_str());
    // libxl__build_post's entries.
    b.write(
        format!("{dom}/memory/static-max"),
        config.maxmem_kib.to_string(),
    );
    b.write(format!("{dom}/memory/target"), target.to_string());
    b.write(format!("{dom}/memory/videoram"), "0");
    b.write(format!("{dom}/domid"), domid.to_string());
    b.write(format!("{dom}/store/port"), store_port.to_string());
    b.write(format!("{dom}/store/ring-ref"), store_frame.to_string());
    for cpu in 0..config.vcpus {
        b.write(format!("{dom}/cpu/{cpu}/availability"), "online");
    }
    let mut conflict: Option<Error> = None;
    let r = host.xs.transaction(|t| {
        conflict = None;
        // The name and UUID must be free; checked in the transaction, so two creations with
        // one name conflict and the retry sees the other's entry.
        let others: Vec<String> = t
            .directory("/local/domain")?
            .into_iter()
            .filter(|o| *o != domid.to_string())
            .collect();
        let name_paths: Vec<String> = others
            .iter()
            .map(|o| format!("/local/domain/{o}/name"))
            .collect();
        let refs: Vec<&str> = name_paths.iter().map(String::as_str).collect();
        for (other, n) in others.iter().zip(t.read_many(&refs)) {
            if n.is_ok_and(|n| n == name.as_bytes()) {
                conflict = Some(Error::NameInUse {
                    name: name.clone(),
                    domid: other.parse().unwrap_or(0),
                });
                return Ok(());
            }
        }
        let found = t.read_many_opt(&[&vm, &dom, &libxl]);
        let mut stale = Batch::new();
        for (i, (p, f)) in [&vm, &dom, &libxl].into_iter().zip(found).enumerate() {
            if f?.is_none() {
                continue;
            }
            if i == 0 {
                conflict = Some(Error::Refused {
                    domain: who.clone(),
                    what: format!("UUID {uuid} is in use by another domain ({vm} exists)"),
                });
                return Ok(());
            }
            stale.rm(p.as_str());
        }
        t.apply(&stale)?;
        t.apply(&b)
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
