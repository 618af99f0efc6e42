//! The executor: applies a PV or PVH build plan to a new domain, in libxenguest's order.
//!
//! A [`Boot`] is everything decided before Xen is asked anything: the kernel (loaded through
//! the cache), the initrd, the command line and the plan ([`Plan::Pv`] or [`Plan::Pvh`]). An
//! [`Executor`] then drives one domain through the stages below; the caller
//! ([`crate::create`]) runs them in this order, reports each as a progress step, and rolls the
//! domain back if any fails. Every stage is hypercalls on the [`XenCtrl`] handle and nothing
//! else: xenstore is the caller's.
//!
//! | stage | PV (`xg_dom_x86.c`, `xg_dom_boot.c`) | PVH (`xc_hvm_32`, `libxl_x86.c`) |
//! |---|---|---|
//! | [`setup`](Executor::setup) | memory map limit (one RAM entry of maxmem), TSC mode, address size 64 | `HVM_PARAM_TIMER_MODE`, TSC mode, paging pool (libxl's size), the e820 map |
//! | [`populate`](Executor::populate) | `[0, pages)`, 2 MiB then 4 KiB; the machine frames form the p2m | [`PvhLayout::populate`]'s ranges, gfn = pfn |
//! | [`load`](Executor::load) | kernel segments and initrd copied, the rest of each segment cleared | the same, at physical addresses |
//! | [`boot_pages`](Executor::boot_pages) | page tables, p2m list, start_info (rendered with the frames and `shared_info`'s mfn) | hvm_start_info, RSDP, ACPI tables, identity map, special pages cleared, `HVM_PARAM_*` |
//! | [`vcpus`](Executor::vcpus) | `hypercall_init` (only with a HYPERCALL_PAGE note), `MMUEXT_PIN_L4_TABLE`, `evtchn_upcall_mask` in shared_info, `setvcpucontext` | per vCPU {HEADER, MTRR write-back}, then {HEADER, CPU} for vCPU 0, HEADER and MTRR copied from Xen's own context |
//! | [`seed_grants`](Executor::seed_grants) | grant frame 0 mapped (`MMAP_RESOURCE`, else `setup_table`): entry 0 the console ring, entry 1 the xenstore ring | the same, by guest frame |
//!
//! Writes go through [`memory::write_guest`], which maps each run of guest frames in one
//! batch. The rings' frames for xenstore ([`Built`]) are machine frames for PV and guest frames
//! for PVH, which is what `XS_INTRODUCE`, `store/ring-ref` and the grant entries all want.
//!
//! [`Breaks`] spoil single steps on purpose for tests (`test-hooks` builds only).

pub mod breaks;
mod error;
mod grant;
pub mod memory;
mod pv;
mod pvh;

use xenctrl::{DomId, DomainId, TscMode, XenCtrl};

pub use breaks::{Break, Breaks, UnknownBreak, BREAK_ENV};
pub use error::BuildError;
pub use memory::WriteStats;

use super::kernel::{CommandLine, GuestKind, Initrd, KernelImage};
use super::plan::{LoadSource, PfnRange, PlanError};
use super::pv::{PvImage, PvLayout};
use super::pvh::{PvhImage, PvhLayout};

/// The plan for one guest.
#[derive(Clone, Debug)]
pub enum Plan {
    /// A PV guest's.
    Pv(PvLayout),
    /// A PVH guest's.
    Pvh(PvhLayout),
}

/// What booting a kernel needs, decided before the domain exists.
#[derive(Debug)]
pub struct Boot {
    kernel: KernelImage,
    initrd: Option<Initrd>,
    plan: Plan,
}

impl Boot {
    /// Plans a guest of `kind` with `pages` pages of RAM and `vcpus` vCPUs.
    ///
    /// # Errors
    ///
    /// The [`PlanError`] of [`PvLayout::new`] or [`PvhLayout::new`].
    pub fn new(
        kernel: KernelImage,
        initrd: Option<Initrd>,
        cmdline: &CommandLine,
        kind: GuestKind,
        pages: u64,
        vcpus: u32,
    ) -> Result<Boot, PlanError> {
        let plan = match kind {
            GuestKind::Pv => Plan::Pv(PvLayout::new(
                kernel.elf(),
                pages,
                vcpus,
                initrd.as_ref(),
                cmdline,
            )?),
            GuestKind::Pvh => Plan::Pvh(PvhLayout::new(
                kernel.elf(),
                pages,
                vcpus,
                initrd.as_ref(),
                cmdline,
            )?),
        };
        Ok(Boot {
            kernel,
            initrd,
            plan,
        })
    }

    /// The kernel.
    pub fn kernel(&self) -> &KernelImage {
        &self.kernel
    }

    /// The initrd.
    pub fn initrd(&self) -> Option<&Initrd> {
        self.initrd.as_ref()
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Whether the guest is translated (PVH).
    pub fn translated(&self) -> bool {
        matches!(self.plan, Plan::Pvh(_))
    }

    /// The guest frames to populate.
    pub fn populate_ranges(&self) -> Vec<PfnRange> {
        match &self.plan {
            Plan::Pv(l) => vec![PfnRange {
                start: 0,
                count: l.total_pages(),
            }],
            Plan::Pvh(l) => l.populate(),
        }
    }

    /// The pages populate gives the guest (what to claim).
    pub fn pages(&self) -> u64 {
        self.populate_ranges().iter().map(|r| r.count).sum()
    }
}

/// The xenstore and console rings' event channels and backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rings {
    /// xenstored's domain (`/tool/xenstored/domid`, default 0).
    pub store_domid: DomId,
    /// xenconsoled's domain (`/tool/xenconsoled/domid`, default 0).
    pub console_domid: DomId,
    /// The xenstore ring's event channel (unbound, for `store_domid`).
    pub store_port: u32,
    /// The console ring's event channel (unbound, for `console_domid`).
    pub console_port: u32,
}

/// What the build leaves for the toolstack to publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Built {
    /// The xenstore ring's frame: a machine frame (PV) or guest frame (PVH), as
    /// `XS_INTRODUCE`, `store/ring-ref` and grant entry 1 name it.
    pub store_frame: u64,
    /// The console ring's frame, named the same way (`console/ring-ref`, grant entry 0).
    pub console_frame: u64,
    /// The xenstore ring's event channel as handed to the guest.
    pub store_port: u32,
}

/// Builds one domain from a [`Boot`] (see the module notes for the stages and their order).
#[derive(Debug)]
pub struct Executor<'a> {
    xc: &'a XenCtrl,
    domid: DomId,
    boot: &'a Boot,
    rings: Rings,
    breaks: Breaks,
    /// PV: pfn → mfn, from populate.
    p2m: Vec<u64>,
    pv_image: Option<PvImage>,
    pvh_image: Option<PvhImage>,
}

impl<'a> Executor<'a> {
    /// An executor for `domid`, which must be freshly created with the kind `boot` plans for.
    pub fn new(
        xc: &'a XenCtrl,
        domid: DomId,
        boot: &'a Boot,
        rings: Rings,
        breaks: Breaks,
    ) -> Executor<'a> {
        Executor {
            xc,
            domid,
            boot,
            rings,
            breaks,
            p2m: Vec::new(),
            pv_image: None,
            pvh_image: None,
        }
    }

    fn domain(&self) -> DomainId {
        DomainId::new(self.domid)
    }

    /// Before populate: what libxl's `libxl__arch_domain_create` and the builder's compat step
    /// set. `maxmem_kib` is the domain's static maximum.
    ///
    /// # Errors
    ///
    /// [`BuildError::Xen`] naming the setting Xen refused.
    pub fn setup(&mut self, tsc: TscMode, maxmem_kib: u64) -> Result<(), BuildError> {
        match &self.boot.plan {
            Plan::Pv(_) => pv::setup(self.xc, self.domid, tsc, maxmem_kib),
            Plan::Pvh(l) => pvh::setup(self.xc, self.domid, l, tsc, maxmem_kib, &self.breaks),
        }
    }

    /// Populates the guest's memory; `progress` gets pages done and pages in all.
    ///
    /// # Errors
    ///
    /// [`BuildError::Xen`] when Xen refuses or runs out.
    pub fn populate(&mut self, progress: &mut dyn FnMut(u64, u64)) -> Result<(), BuildError> {
        let ranges = self.boot.populate_ranges();
        self.p2m = memory::populate(
            self.xc,
            self.domid,
            &ranges,
            self.boot.translated(),
            progress,
        )?;
        Ok(())
    }

    /// The p2m populate made (PV; empty for PVH).
    pub fn p2m(&self) -> &[u64] {
        &self.p2m
    }

    fn frames(&self) -> memory::Frames<'_> {
        if self.boot.translated() {
            memory::Frames::Translated
        } else {
            memory::Frames::P2m(&self.p2m)
        }
    }

    /// Copies the kernel's segments and the initrd into place and clears the rest of their
    /// segments.
    ///
    /// # Errors
    ///
    /// [`BuildError::Xen`] when a mapping fails; the internal write errors.
    pub fn load(&mut self) -> Result<WriteStats, BuildError> {
        let (loads, areas) = match &self.boot.plan {
            Plan::Pv(l) => (l.loads(), pv::load_areas(l)),
            Plan::Pvh(l) => (l.loads(), pvh::load_areas(l)),
        };
        let elf = self.boot.kernel.elf_bytes();
        let zero = self.boot.kernel.zero_ranges();
        // The kernel break flips the first byte of the first load: a copy of that load, written
        // whole.
        let mut flipped: Option<Vec<u8>> = None;
        let mut writes: Vec<(u64, &[u8])> = Vec::with_capacity(loads.len());
        for (i, l) in loads.iter().enumerate() {
            let bytes =
                l.bytes(elf, self.boot.initrd.as_ref())
                    .ok_or(BuildError::WriteOutOfBounds {
                        addr: l.dest,
                        len: l.len,
                    })?;
            if i == 0 && self.breaks.has(Break::Kernel) && !bytes.is_empty() {
                let mut v = bytes.to_vec();
                v[0] ^= 0xff;
                flipped = Some(v);
                writes.push((l.dest, bytes));
                continue;
            }
            match l.source {
                // What the image knows is zero is left to the clearing of the segment (the
                // gaps below): no copy of zeros.
                LoadSource::Kernel { offset, .. } => {
                    for part in memory::outside(offset..offset + l.len, zero) {
                        let at = |b: u64| usize::try_from(b - offset).ok();
                        let piece = at(part.start)
                            .zip(at(part.end))
                            .and_then(|(from, to)| bytes.get(from..to))
                            .ok_or(BuildError::WriteOutOfBounds {
                                addr: l.dest,
                                len: l.len,
                            })?;
                        writes.push((l.dest + (part.start - offset), piece));
                    }
                }
                LoadSource::Initrd => writes.push((l.dest, bytes)),
            }
        }
        let mut writes: Vec<memory::Write<'_>> = writes
            .into_iter()
            .enumerate()
            .map(|(i, (addr, bytes))| memory::Write {
                addr,
                fill: memory::Fill::Bytes(match (&flipped, i) {
                    (Some(v), 0) => v.as_slice(),
                    _ => bytes,
                }),
            })
            .collect();
        let gaps = memory::zero_gaps(&areas, &writes);
        writes.extend(gaps);
        memory::write_guest(self.xc, self.domain(), self.frames(), &writes)
    }

    /// Renders and writes what the guest reads at boot besides its kernel: PV page tables,
    /// p2m list and start_info; PVH start info, ACPI, identity map and special pages, and its
    /// HVM parameters.
    ///
    /// # Errors
    ///
    /// [`BuildError::Plan`] if rendering fails, [`BuildError::Xen`] for a mapping or a
    /// parameter Xen refuses.
    pub fn boot_pages(&mut self) -> Result<WriteStats, BuildError> {
        match &self.boot.plan {
            Plan::Pv(l) => {
                let info = self
                    .xc
                    .domain_info(self.domid)
                    .map_err(BuildError::xen("cannot read its shared-info frame"))?;
                let image = pv::render(
                    l,
                    &self.p2m,
                    info.shared_info_frame,
                    &self.rings,
                    &self.breaks,
                )?;
                let stats = pv::write_boot_pages(self.xc, self.domain(), l, &image, &self.p2m)?;
                self.pv_image = Some(image);
                Ok(stats)
            }
            Plan::Pvh(l) => {
                let image = pvh::render(l, &self.rings, &self.breaks);
                let stats = pvh::write_boot_pages(self.xc, self.domain(), l, &image)?;
                pvh::set_params(self.xc, self.domid, &image, &self.rings, &self.breaks)?;
                self.pvh_image = Some(image);
                Ok(stats)
            }
        }
    }

    /// Sets the vCPUs' state (and, PV, the hypercall page, the pinned L4 and shared_info).
    /// Call after [`boot_pages`](Executor::boot_pages).
    ///
    /// # Errors
    ///
    /// [`BuildError::Xen`] naming what Xen refused; [`BuildError::MissingHvmRecord`].
    pub fn vcpus(&mut self) -> Result<(), BuildError> {
        match (&self.boot.plan, &self.pv_image, &self.pvh_image) {
            (Plan::Pv(l), Some(image), _) => {
                pv::set_vcpus(self.xc, self.domid, l, image, &self.p2m, &self.breaks)
            }
            (Plan::Pvh(l), _, Some(image)) => {
                pvh::set_vcpus(self.xc, self.domid, l, image, &self.breaks)
            }
            _ => Err(BuildError::MissingHvmRecord {
                record: "boot pages (vcpus before boot_pages)",
            }),
        }
    }

    /// What the toolstack publishes: the rings' frames and the store's event channel. Call
    /// after [`boot_pages`](Executor::boot_pages).
    pub fn built(&self) -> Built {
        let (store_frame, console_frame) = match (&self.pv_image, &self.boot.plan) {
            (Some(i), _) => (i.store_mfn, i.console_mfn),
            (None, _) => (super::pvh::XENSTORE_PFN, super::pvh::CONSOLE_PFN),
        };
        Built {
            store_frame,
            console_frame,
            store_port: self.rings.store_port,
        }
    }

    /// Seeds grant entries 0 (console) and 1 (xenstore) for the backends, as
    /// `xc_dom_gnttab_seed` does. Call after [`boot_pages`](Executor::boot_pages).
    ///
    /// # Errors
    ///
    /// [`BuildError::Xen`] when the grant table cannot be mapped;
    /// [`BuildError::GrantFrameTooLarge`].
    pub fn seed_grants(&self) -> Result<(), BuildError> {
        let b = self.built();
        grant::seed(
            self.xc,
            self.domain(),
            &self.rings,
            b.console_frame,
            b.store_frame,
            &self.breaks,
        )
    }
}
