//! The simulator against the [`Backend`] trait: hypercalls with arguments in chunks obtained
//! through its own `map_chunk`.

use nix::errno::Errno;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes};

use super::memory::GuestMemory;
use super::*;
use crate::abi::*;
use crate::interface::profile_for;

const CHUNK: usize = 32 * crate::PAGE_SIZE;

/// A chunk mapped through the simulator, with byte access through its registry.
struct Mem<'a> {
    sim: &'a SimHypervisor,
    chunk: Option<ChunkMapping>,
}

impl<'a> Mem<'a> {
    fn new(sim: &'a SimHypervisor) -> Self {
        let chunk = sim.map_chunk(CHUNK).expect("map a chunk");
        Self {
            sim,
            chunk: Some(chunk),
        }
    }

    fn base(&self) -> u64 {
        self.chunk
            .as_ref()
            .unwrap()
            .base()
            .as_ptr()
            .expose_provenance() as u64
    }

    fn addr(&self, off: usize) -> u64 {
        self.base() + off as u64
    }

    fn put<T: IntoBytes + Immutable + ?Sized>(&self, off: usize, v: &T) {
        self.sim.chunks.write(self.addr(off), v.as_bytes()).unwrap();
    }

    fn get<T: FromBytes + IntoBytes>(&self, off: usize) -> T {
        let mut v = T::new_zeroed();
        self.sim
            .chunks
            .read(self.addr(off), v.as_mut_bytes())
            .unwrap();
        v
    }

    fn call(&self, op: u64, args: [u64; 5]) -> Result<u64, Errno> {
        // SAFETY: every address passed is inside `self.chunk`, mapped by this simulator and
        // alive for the call; no Rust reference to the chunk exists.
        unsafe { self.sim.hypercall(op, args) }
    }

    /// A domctl with payload `P` at offset 0; returns the envelope as Xen left it.
    fn domctl<P: DomctlPayload + IntoBytes>(
        &self,
        domid: DomId,
        payload: &P,
    ) -> Result<XenDomctlView, Errno> {
        self.domctl_v(XEN_DOMCTL_INTERFACE_VERSION, domid, payload)
    }

    fn domctl_v<P: DomctlPayload + IntoBytes>(
        &self,
        version: u32,
        domid: DomId,
        payload: &P,
    ) -> Result<XenDomctlView, Errno> {
        let mut op = XenDomctlView::new_zeroed();
        op.cmd = P::CMD;
        op.interface_version = version;
        op.domain = domid;
        let b = payload.as_bytes();
        op.union_bytes_mut()[..b.len()].copy_from_slice(b);
        self.put(0, &op);
        self.call(__HYPERVISOR_domctl, [self.addr(0), 0, 0, 0, 0])?;
        Ok(self.get(0))
    }

    fn sysctl_raw(&self, cmd: u32, version: u32, u: &[u8]) -> Result<XenSysctlView, Errno> {
        let mut op = XenSysctlView::new_zeroed();
        op.cmd = cmd;
        op.interface_version = version;
        op.union_bytes_mut()[..u.len()].copy_from_slice(u);
        self.put(0, &op);
        self.call(__HYPERVISOR_sysctl, [self.addr(0), 0, 0, 0, 0])?;
        Ok(self.get(0))
    }

    fn create(&self, domid: DomId, config: &XenDomctlCreatedomain) -> Result<DomId, Errno> {
        Ok(self.domctl(domid, config)?.domain)
    }

    fn info(&self, domid: DomId) -> Result<XenDomctlGetdomaininfo, Errno> {
        let op = self.domctl(domid, &XenDomctlGetdomaininfo::default())?;
        Ok(XenDomctlGetdomaininfo::read_from_prefix(op.union_bytes())
            .unwrap()
            .0)
    }

    fn physinfo(&self) -> XenSysctlPhysinfo {
        let op = self
            .sysctl_raw(XEN_SYSCTL_physinfo, XEN_SYSCTL_INTERFACE_VERSION, &[])
            .unwrap();
        XenSysctlPhysinfo::read_from_prefix(op.union_bytes())
            .unwrap()
            .0
    }

    /// A reservation sub-op with the frame list at offset 1024.
    fn reservation(&self, cmd: u64, domid: DomId, frames: &[u64], order: u32) -> u64 {
        self.put(1024, frames);
        let r = XenMemoryReservationView {
            extent_start: if frames.is_empty() {
                0
            } else {
                self.addr(1024)
            },
            nr_extents: frames.len() as u64,
            extent_order: order,
            domid,
            ..Default::default()
        };
        self.put(512, &r);
        self.call(__HYPERVISOR_memory_op, [cmd, self.addr(512), 0, 0, 0])
            .unwrap()
    }

    fn claim(&self, domid: DomId, pages: u64) -> Result<u64, Errno> {
        let r = XenMemoryReservationView {
            nr_extents: pages,
            domid,
            ..Default::default()
        };
        self.put(512, &r);
        self.call(
            __HYPERVISOR_memory_op,
            [XENMEM_claim_pages, self.addr(512), 0, 0, 0],
        )
    }

    fn reservation_of(&self, cmd: u64, domid: DomId) -> Result<u64, Errno> {
        self.put(512, &XenMemoryDomain { domid });
        self.call(__HYPERVISOR_memory_op, [cmd, self.addr(512), 0, 0, 0])
    }
}

fn guest(sim: &SimHypervisor, m: &Mem<'_>, mib: u64) -> DomId {
    let d = m.create(0, &SimState::pv_config(2)).unwrap();
    m.domctl(
        d,
        &XenDomctlMaxMem {
            max_memkb: mib * 1024,
        },
    )
    .unwrap();
    sim.with_state(|s| s.check_invariants()).unwrap();
    d
}

#[test]
fn xen_version_answers_like_4_17() {
    let sim = SimHypervisor::default();
    let m = Mem::new(&sim);
    let v = m
        .call(__HYPERVISOR_xen_version, [XENVER_version, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(split_version(v), (4, 17));
    assert_eq!(
        m.call(__HYPERVISOR_xen_version, [XENVER_pagesize, 0, 0, 0, 0]),
        Ok(4096)
    );
    m.call(
        __HYPERVISOR_xen_version,
        [XENVER_extraversion, m.addr(0), 0, 0, 0],
    )
    .unwrap();
    assert_eq!(m.get::<XenExtraversion>(0).to_string_lossy(), ".5-sim");
    m.call(
        __HYPERVISOR_xen_version,
        [XENVER_capabilities, m.addr(0), 0, 0, 0],
    )
    .unwrap();
    assert!(m
        .get::<XenCapabilitiesInfo>(0)
        .to_string_lossy()
        .starts_with("xen-3.0-x86_64"));
    m.call(
        __HYPERVISOR_xen_version,
        [XENVER_changeset, m.addr(0), 0, 0, 0],
    )
    .unwrap();
    assert_eq!(m.get::<XenChangesetInfo>(0).to_string_lossy(), "simulated");
    assert_eq!(
        m.call(__HYPERVISOR_xen_version, [99, 0, 0, 0, 0]),
        Err(Errno::ENOSYS)
    );
}

#[test]
fn physinfo_describes_the_host() {
    let sim = SimHypervisor::new(SimConfig {
        total_mib: 4096,
        dom0_mib: 512,
        ..Default::default()
    });
    let m = Mem::new(&sim);
    let p = m.physinfo();
    assert_eq!(p.total_pages, 4096 * 256);
    assert_eq!(p.free_pages, (4096 - 512) * 256);
    assert_eq!(p.nr_cpus, 4);
    assert_eq!(p.outstanding_pages, 0);
    assert_ne!(p.capabilities & XEN_SYSCTL_PHYSCAP_hvm, 0);
}

#[test]
fn interface_version_mismatch_is_eacces() {
    let sim = SimHypervisor::default();
    let m = Mem::new(&sim);
    let gdi = XenDomctlGetdomaininfo::default();
    assert_eq!(m.domctl_v(0x17, 0, &gdi).unwrap_err(), Errno::EACCES);
    assert_eq!(
        m.sysctl_raw(XEN_SYSCTL_physinfo, 0x16, &[]).unwrap_err(),
        Errno::EACCES
    );
    // A 4.19 host refuses 4.17's version and answers its own.
    let sim = SimHypervisor::new(SimConfig::default().presenting(profile_for(0x17, 0x15).unwrap()));
    let m = Mem::new(&sim);
    assert_eq!(m.domctl_v(0x15, 0, &gdi).unwrap_err(), Errno::EACCES);
    assert_eq!(m.domctl_v(0x17, 0, &gdi).unwrap().domain, 0);
}

#[test]
fn probe_finds_every_simulated_release_and_refuses_a_newer_one() {
    use crate::interface::{probe, releases, ProbeCall};
    let run = |sim: &SimHypervisor| {
        let m = Mem::new(sim);
        probe(&mut |c| match c {
            ProbeCall::DomctlGetdomaininfo(v) => m
                .domctl_v(v, 0, &XenDomctlGetdomaininfo::default())
                .map(drop),
            ProbeCall::SysctlPhysinfo(v) => m.sysctl_raw(XEN_SYSCTL_physinfo, v, &[]).map(drop),
        })
        .map(|p| p.xen)
    };
    assert_eq!(run(&SimHypervisor::default()).unwrap(), "4.17");
    for r in releases() {
        let sim = SimHypervisor::new(SimConfig::default().release(r));
        let xen = run(&sim).unwrap();
        assert!(
            xen.split('–').any(|v| v == r.name()) || xen.ends_with(&r.name()),
            "{}: probed {xen}",
            r.tag
        );
    }
    let newer = SimHypervisor::new(SimConfig {
        domctl_interface_version: 0x19,
        version: (4, 23),
        ..SimConfig::default().release(&crate::interface::RELEASE_4_22)
    });
    let err = run(&newer).unwrap_err().to_string();
    assert!(
        err.contains("domctl unknown (EACCES to all of 0x18, 0x17, 0x16, 0x15)")
            && err.contains("newer than Xen 4.22")
            && err.contains("Xen 4.17 (domctl 0x15, sysctl 0x15)")
            && err.contains("Xen 4.22 (domctl 0x18, sysctl 0x16)"),
        "{err}"
    );
}

#[test]
fn createdomain_allocates_honours_and_refuses_domids() {
    let sim = SimHypervisor::default();
    let m = Mem::new(&sim);
    let cfg = SimState::pv_config(1);
    assert_eq!(m.create(0, &cfg), Ok(1));
    assert_eq!(m.create(DOMID_FIRST_RESERVED, &cfg), Ok(2));
    assert_eq!(m.create(7, &cfg), Ok(7));
    assert_eq!(m.create(7, &cfg), Err(Errno::EEXIST));
    assert_eq!(
        m.create(0, &cfg),
        Ok(3),
        "the rover continues after the last allocated id"
    );
    let bad = XenDomctlCreatedomain {
        max_vcpus: 0,
        ..cfg
    };
    assert_eq!(m.create(0, &bad), Err(Errno::EINVAL));
    let bad = XenDomctlCreatedomain {
        flags: XEN_DOMCTL_CDF_hap,
        ..cfg
    };
    assert_eq!(m.create(0, &bad), Err(Errno::EINVAL), "HAP without HVM");
    let bad = XenDomctlCreatedomain {
        flags: 1 << 20,
        ..cfg
    };
    assert_eq!(m.create(0, &bad), Err(Errno::EINVAL), "unknown flag");
    let hvm = XenDomctlCreatedomain {
        flags: XEN_DOMCTL_CDF_hvm | XEN_DOMCTL_CDF_hap,
        arch: XenArchDomainconfig {
            emulation_flags: XEN_X86_EMU_ALL,
            misc_flags: 0,
        },
        ..cfg
    };
    assert_eq!(
        m.create(0, &hvm),
        Err(Errno::EOPNOTSUPP),
        "VPCI is not for guests"
    );
    let hvm = XenDomctlCreatedomain {
        arch: XenArchDomainconfig {
            emulation_flags: XEN_X86_EMU_ALL & !XEN_X86_EMU_VPCI,
            misc_flags: 0,
        },
        handle: SimState::handle_from(42),
        ..hvm
    };
    let d = m.create(0, &hvm).unwrap();
    let info = m.info(d).unwrap();
    assert_eq!(info.handle, SimState::handle_from(42));
    assert!(info.has(XEN_DOMINF_hvm_guest) && info.has(XEN_DOMINF_hap));
    assert!(info.has(XEN_DOMINF_paused), "domains are created paused");
    assert_eq!(info.max_vcpu_id, XEN_INVALID_MAX_VCPU_ID);
    m.domctl(d, &XenDomctlMaxVcpus { max: 2 }).unwrap_err();
    m.domctl(d, &XenDomctlMaxVcpus { max: 1 }).unwrap();
    assert_eq!(m.info(d).unwrap().max_vcpu_id, 0);
}

#[test]
fn a_simulated_4_19_decodes_the_4_19_createdomain_layout() {
    let p419 = profile_for(0x17, 0x15).unwrap();
    let sim = SimHypervisor::new(SimConfig::default().presenting(p419));
    let m = Mem::new(&sim);
    let cfg = XenDomctlCreatedomain {
        arch: XenArchDomainconfig {
            emulation_flags: XEN_X86_EMU_PIT,
            misc_flags: 0,
        },
        ..SimState::pv_config(1)
    };
    let mut env = XenDomctl::new(0, cfg);
    p419.encode_domctl(&mut env).unwrap();
    let mut op = XenDomctlView::new_zeroed();
    op.cmd = env.cmd();
    op.interface_version = env.interface_version();
    op.union_bytes_mut()
        .copy_from_slice(&env.union_bytes().unwrap());
    m.put(0, &op);
    m.call(__HYPERVISOR_domctl, [m.addr(0), 0, 0, 0, 0])
        .unwrap();
    let d = m.get::<XenDomctlView>(0).domain;
    let info = sim.with_state(|s| s.getdomaininfo(d, true)).unwrap();
    assert_eq!(info.arch_config.emulation_flags, XEN_X86_EMU_PIT);
    // The same bytes read in the 4.17 layout would put the flags elsewhere.
    let as_417 = XenDomctlCreatedomain::read_from_prefix(op.union_bytes())
        .unwrap()
        .0;
    assert_ne!(as_417.arch.emulation_flags, XEN_X86_EMU_PIT);
}

#[test]
fn getdomaininfo_returns_the_next_domain_like_4_17() {
    let sim = SimHypervisor::default();
    let m = Mem::new(&sim);
    let cfg = SimState::pv_config(1);
    m.create(5, &cfg).unwrap();
    m.create(9, &cfg).unwrap();
    assert_eq!(m.info(0).unwrap().domain, 0);
    assert_eq!(m.info(1).unwrap().domain, 5);
    let op = m.domctl(6, &XenDomctlGetdomaininfo::default()).unwrap();
    assert_eq!(op.domain, 9, "the envelope's domain is rewritten too");
    assert_eq!(m.info(10), Err(Errno::ESRCH));
    assert_eq!(m.info(DOMID_SELF), Err(Errno::EINVAL));
    // 4.18 and later look up exactly.
    let sim = SimHypervisor::new(SimConfig::default().presenting(profile_for(0x16, 0x15).unwrap()));
    let m = Mem::new(&sim);
    m.domctl_v(0x16, 5, &cfg).unwrap();
    assert_eq!(
        m.domctl_v(0x16, 1, &XenDomctlGetdomaininfo::default())
            .unwrap_err(),
        Errno::ESRCH
    );
}

#[test]
fn getdomaininfolist_pages_through_domains() {
    let sim = SimHypervisor::default();
    let m = Mem::new(&sim);
    for _ in 0..5 {
        m.create(0, &SimState::pv_config(1)).unwrap();
    }
    let list = |first: DomId, max: u32| {
        let req = XenSysctlGetdomaininfolistView {
            first_domain: first,
            max_domains: max,
            buffer: m.addr(1024),
            ..Default::default()
        };
        let op = m
            .sysctl_raw(
                XEN_SYSCTL_getdomaininfolist,
                XEN_SYSCTL_INTERFACE_VERSION,
                req.as_bytes(),
            )
            .unwrap();
        let got = XenSysctlGetdomaininfolistView::read_from_prefix(op.union_bytes())
            .unwrap()
            .0;
        (0..got.num_domains as usize)
            .map(|i| m.get::<XenDomctlGetdomaininfo>(1024 + i * 112).domain)
            .collect::<Vec<_>>()
    };
    assert_eq!(list(0, 4), [0, 1, 2, 3]);
    assert_eq!(list(4, 4), [4, 5]);
    assert_eq!(list(6, 4), Vec::<DomId>::new());
    assert_eq!(list(0, 0), Vec::<DomId>::new());
    // A buffer running off the chunk is EFAULT.
    let req = XenSysctlGetdomaininfolistView {
        max_domains: 6,
        buffer: m.addr(CHUNK - 200),
        ..Default::default()
    };
    assert_eq!(
        m.sysctl_raw(
            XEN_SYSCTL_getdomaininfolist,
            XEN_SYSCTL_INTERFACE_VERSION,
            req.as_bytes()
        )
        .unwrap_err(),
        Errno::EFAULT
    );
}

#[test]
fn pause_counts_nest_and_are_bounded() {
    let sim = SimHypervisor::default();
    let m = Mem::new(&sim);
    let d = m.create(0, &SimState::pv_config(1)).unwrap();
    m.domctl(d, &XenDomctlMaxVcpus { max: 1 }).unwrap();
    m.domctl(d, &XenDomctlUnpausedomain {}).unwrap();
    assert!(m.info(d).unwrap().has(XEN_DOMINF_running));
    assert_eq!(
        m.domctl(d, &XenDomctlUnpausedomain {}).unwrap_err(),
        Errno::EINVAL
    );
    m.domctl(d, &XenDomctlPausedomain {}).unwrap();
    m.domctl(d, &XenDomctlPausedomain {}).unwrap();
    m.domctl(d, &XenDomctlUnpausedomain {}).unwrap();
    assert!(
        m.info(d).unwrap().has(XEN_DOMINF_paused),
        "still paused once"
    );
    m.domctl(d, &XenDomctlUnpausedomain {}).unwrap();
    assert!(!m.info(d).unwrap().has(XEN_DOMINF_paused));
    for _ in 0..255 {
        m.domctl(d, &XenDomctlPausedomain {}).unwrap();
    }
    assert_eq!(
        m.domctl(d, &XenDomctlPausedomain {}).unwrap_err(),
        Errno::EOVERFLOW
    );
    assert_eq!(
        m.domctl(0, &XenDomctlPausedomain {}).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        m.domctl(0, &XenDomctlDestroydomain {}).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        m.domctl(99, &XenDomctlPausedomain {}).unwrap_err(),
        Errno::ESRCH
    );
}

#[test]
fn shutdown_code_and_destroy() {
    let sim = SimHypervisor::default();
    let m = Mem::new(&sim);
    let d = guest(&sim, &m, 16);
    assert_eq!(
        m.reservation(XENMEM_populate_physmap, d, &[0, 1, 2, 3], 0),
        4
    );
    sim.with_state(|s| s.shutdown(d, SHUTDOWN_crash)).unwrap();
    let info = m.info(d).unwrap();
    assert_eq!(info.shutdown_reason(), Some(ShutdownReason::CRASH));
    let free = m.physinfo().free_pages;
    m.domctl(d, &XenDomctlDestroydomain {}).unwrap();
    assert_eq!(m.physinfo().free_pages, free + 4);
    assert_eq!(
        m.domctl(d, &XenDomctlDestroydomain {}).unwrap_err(),
        Errno::ESRCH
    );
    assert_eq!(m.info(d), Err(Errno::ESRCH));
    sim.with_state(|s| s.check_invariants()).unwrap();
}

#[test]
fn max_mem_bounds_population_with_partial_success() {
    let sim = SimHypervisor::default();
    let m = Mem::new(&sim);
    let d = m.create(0, &SimState::pv_config(1)).unwrap();
    assert_eq!(
        m.reservation(XENMEM_populate_physmap, d, &[0], 0),
        0,
        "max_pages starts at 0"
    );
    m.domctl(d, &XenDomctlMaxMem { max_memkb: 5 * 4 }).unwrap();
    assert_eq!(m.reservation_of(XENMEM_maximum_reservation, d), Ok(5));
    let frames: Vec<u64> = (100..108).collect();
    assert_eq!(m.reservation(XENMEM_populate_physmap, d, &frames, 0), 5);
    assert_eq!(m.reservation_of(XENMEM_current_reservation, d), Ok(5));
    // PV: machine frames are written back.
    let back: [u64; 5] = m.get(1024);
    assert!(back.iter().all(|mfn| !frames.contains(mfn)), "{back:?}");
    // Decrease the (PV) machine frames Xen returned; an unpopulated one stops the batch.
    assert_eq!(
        m.reservation(
            XENMEM_decrease_reservation,
            d,
            &[back[0], back[1], 1 << 40],
            0
        ),
        2
    );
    assert_eq!(m.reservation_of(XENMEM_current_reservation, d), Ok(3));
    assert_eq!(
        m.reservation_of(XENMEM_current_reservation, 999),
        Err(Errno::ESRCH)
    );
    assert_eq!(
        m.reservation_of(XENMEM_current_reservation, DOMID_SELF),
        Ok(1024 * 256)
    );
    // increase_reservation with no list.
    assert_eq!(m.reservation(XENMEM_increase_reservation, d, &[], 0), 0);
    let r = XenMemoryReservationView {
        nr_extents: 4,
        domid: d,
        ..Default::default()
    };
    m.put(512, &r);
    assert_eq!(
        m.call(
            __HYPERVISOR_memory_op,
            [XENMEM_increase_reservation, m.addr(512), 0, 0, 0]
        ),
        Ok(2)
    );
    // Too large an order does nothing.
    m.domctl(d, &XenDomctlMaxMem { max_memkb: 1 << 30 })
        .unwrap();
    assert_eq!(m.reservation(XENMEM_populate_physmap, d, &[1 << 20], 13), 0);
    assert_eq!(m.reservation(XENMEM_populate_physmap, d, &[1 << 20], 9), 1);
    sim.with_state(|s| s.check_invariants()).unwrap();
}

#[test]
fn claims_follow_xens_rules() {
    let sim = SimHypervisor::new(SimConfig {
        total_mib: 64,
        dom0_mib: 16,
        ..Default::default()
    });
    let m = Mem::new(&sim);
    let free = m.physinfo().free_pages;
    assert_eq!(free, 48 * 256);
    let a = guest(&sim, &m, 64);
    let b = guest(&sim, &m, 64);
    assert_eq!(m.claim(a, free + 1), Err(Errno::ENOMEM));
    assert_eq!(m.claim(999, 10), Err(Errno::EINVAL), "no such domain");
    assert_eq!(m.claim(a, 0), Ok(0), "cancelling no claim is fine");
    assert_eq!(m.claim(a, 40 * 256), Ok(0));
    assert_eq!(m.claim(a, 10), Err(Errno::EINVAL), "one claim at a time");
    let p = m.physinfo();
    assert_eq!((p.free_pages, p.outstanding_pages), (free, 40 * 256));
    // b may only use unclaimed memory: 8 MiB.
    assert_eq!(m.claim(b, 9 * 256), Err(Errno::ENOMEM));
    let frames: Vec<u64> = (0..9 * 256).collect();
    assert_eq!(
        m.reservation(XENMEM_populate_physmap, b, &frames[..], 0),
        8 * 256
    );
    // a populates into its claim, which shrinks.
    assert_eq!(
        m.reservation(XENMEM_populate_physmap, a, &frames[..256], 0),
        256
    );
    assert_eq!(m.info(a).unwrap().outstanding_pages, 39 * 256);
    assert_eq!(m.physinfo().outstanding_pages, 39 * 256);
    // A claim must exceed what the domain already has, and fit its max_pages.
    assert_eq!(m.claim(a, 0), Ok(0));
    assert_eq!(m.claim(a, 256), Err(Errno::EINVAL));
    m.domctl(
        a,
        &XenDomctlMaxMem {
            max_memkb: 2 * 1024,
        },
    )
    .unwrap();
    assert_eq!(m.claim(a, 3 * 256), Err(Errno::EINVAL));
    assert_eq!(m.claim(a, 2 * 256), Ok(0));
    assert_eq!(
        m.info(a).unwrap().outstanding_pages,
        256,
        "a claim counts what is there"
    );
    // Destroy releases the claim.
    m.domctl(a, &XenDomctlDestroydomain {}).unwrap();
    assert_eq!(m.physinfo().outstanding_pages, 0);
    // claim_pages wants a null list, order 0 and no flags.
    let r = XenMemoryReservationView {
        nr_extents: 8,
        extent_order: 1,
        domid: b,
        ..Default::default()
    };
    m.put(512, &r);
    assert_eq!(
        m.call(
            __HYPERVISOR_memory_op,
            [XENMEM_claim_pages, m.addr(512), 0, 0, 0]
        ),
        Err(Errno::EINVAL)
    );
    sim.with_state(|s| s.check_invariants()).unwrap();
}

#[test]
fn event_channel_ports_are_allocated_lowest_first() {
    let sim = SimHypervisor::default();
    let m = Mem::new(&sim);
    let d = m
        .create(
            0,
            &XenDomctlCreatedomain {
                max_evtchn_port: 3,
                ..SimState::pv_config(1)
            },
        )
        .unwrap();
    let alloc = |dom: DomId| {
        m.put(
            0,
            &EvtchnAllocUnbound {
                dom,
                remote_dom: 0,
                port: 0,
            },
        );
        m.call(
            __HYPERVISOR_event_channel_op,
            [EVTCHNOP_alloc_unbound, m.addr(0), 0, 0, 0],
        )
        .map(|_| m.get::<EvtchnAllocUnbound>(0).port)
    };
    assert_eq!(alloc(d), Ok(1));
    assert_eq!(alloc(d), Ok(2));
    assert_eq!(alloc(d), Ok(3));
    assert_eq!(alloc(d), Err(Errno::ENOSPC));
    assert_eq!(alloc(DOMID_SELF), Ok(1));
    assert_eq!(alloc(500), Err(Errno::ESRCH));
}

#[test]
fn addresses_outside_registered_chunks_are_efault() {
    let sim = SimHypervisor::default();
    let m = Mem::new(&sim);
    let on_stack = XenDomctlView::new_zeroed();
    let stack_addr = core::ptr::from_ref(&on_stack).addr() as u64;
    let heap = Box::new([0u8; 4096]);
    let heap_addr = heap.as_ptr().addr() as u64;
    let call = |op: u64, args: [u64; 5]| m.call(op, args);
    for addr in [
        0,
        stack_addr,
        heap_addr,
        m.addr(CHUNK - 4),
        m.addr(CHUNK),
        u64::MAX - 4,
    ] {
        assert_eq!(
            call(__HYPERVISOR_domctl, [addr, 0, 0, 0, 0]),
            Err(Errno::EFAULT),
            "{addr:#x}"
        );
        assert_eq!(
            call(__HYPERVISOR_sysctl, [addr, 0, 0, 0, 0]),
            Err(Errno::EFAULT)
        );
        assert_eq!(
            call(
                __HYPERVISOR_xen_version,
                [XENVER_capabilities, addr, 0, 0, 0]
            ),
            Err(Errno::EFAULT)
        );
        assert_eq!(
            call(
                __HYPERVISOR_event_channel_op,
                [EVTCHNOP_alloc_unbound, addr, 0, 0, 0]
            ),
            Err(Errno::EFAULT)
        );
        assert_eq!(
            call(__HYPERVISOR_memory_op, [XENMEM_claim_pages, addr, 0, 0, 0]),
            Err(Errno::EFAULT)
        );
        // Reservation sub-ops report no extents done rather than an errno.
        assert_eq!(
            call(
                __HYPERVISOR_memory_op,
                [XENMEM_populate_physmap, addr, 0, 0, 0]
            ),
            Ok(0)
        );
    }
    // Untouched by any of it.
    assert!(heap.iter().all(|&b| b == 0));
    // A frame list outside the chunk populates nothing.
    let d = guest(&sim, &m, 16);
    let r = XenMemoryReservationView {
        extent_start: heap_addr,
        nr_extents: 1,
        domid: d,
        ..Default::default()
    };
    m.put(512, &r);
    assert_eq!(
        call(
            __HYPERVISOR_memory_op,
            [XENMEM_populate_physmap, m.addr(512), 0, 0, 0]
        ),
        Ok(0)
    );
    // After unmap, the chunk's addresses fault too.
    let m2 = Mem::new(&sim);
    let gone = m2.addr(0);
    m2.put(0, &XenDomctlView::new_zeroed());
    drop(m2);
    assert_eq!(
        call(__HYPERVISOR_domctl, [gone, 0, 0, 0, 0]),
        Err(Errno::EFAULT)
    );
}

#[test]
fn injected_faults_fail_the_next_calls_then_stop() {
    let sim = SimHypervisor::default();
    let m = Mem::new(&sim);
    sim.inject_fault(SimFault {
        hypercall: __HYPERVISOR_domctl,
        subop: Some(XEN_DOMCTL_getdomaininfo),
        errno: Errno::EAGAIN,
        count: 2,
    });
    let cfg = SimState::pv_config(1);
    assert_eq!(m.create(0, &cfg), Ok(1), "other sub-ops are not affected");
    assert_eq!(m.info(0), Err(Errno::EAGAIN));
    assert_eq!(m.info(0), Err(Errno::EAGAIN));
    assert_eq!(m.info(0).unwrap().domain, 0);
    sim.inject_fault(SimFault {
        hypercall: __HYPERVISOR_memory_op,
        subop: None,
        errno: Errno::ESRCH,
        count: 1,
    });
    assert_eq!(
        m.reservation_of(XENMEM_current_reservation, 0),
        Err(Errno::ESRCH)
    );
    assert!(m.reservation_of(XENMEM_current_reservation, 0).is_ok());
    sim.inject_fault(SimFault {
        hypercall: __HYPERVISOR_sysctl,
        subop: None,
        errno: Errno::EIO,
        count: 5,
    });
    sim.clear_faults();
    assert_eq!(m.physinfo().nr_cpus, 4);
}

/// `fastrand` seeded from `RXEN_TEST_SEED` (or the clock), with the seed printed so that a
/// failure can be replayed.
fn seeded_rng() -> (u64, fastrand::Rng) {
    let seed = std::env::var("RXEN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::Rng::new().u64(..));
    eprintln!("RXEN_TEST_SEED={seed}");
    (seed, fastrand::Rng::with_seed(seed))
}

#[test]
#[allow(non_upper_case_globals)] // matches on the C-named hypercall numbers
fn random_bytes_at_valid_addresses_never_panic() {
    let (seed, mut rng) = seeded_rng();
    let sim = SimHypervisor::new(SimConfig {
        total_mib: 256,
        dom0_mib: 64,
        ..Default::default()
    });
    let m = Mem::new(&sim);
    let ops = [
        __HYPERVISOR_xen_version,
        __HYPERVISOR_domctl,
        __HYPERVISOR_sysctl,
        __HYPERVISOR_memory_op,
        __HYPERVISOR_event_channel_op,
        rng.u64(..),
    ];
    let domctl_cmds = [1u32, 2, 3, 4, 5, 11, 15, 99];
    let memops = [0u64, 1, 3, 4, 6, 24, 63];
    let mut bytes = vec![0u8; CHUNK];
    let (mut ok, mut eacces) = (0u32, 0u32);
    for round in 0..20_000 {
        // Fresh random bytes around the argument, or everywhere now and then.
        let off = rng.usize(..CHUNK - 144) & !7;
        let window = if round % 500 == 0 {
            0..CHUNK
        } else {
            off..(off + 256).min(CHUNK)
        };
        rng.fill(&mut bytes[window]);
        // Make the interesting cases likely: valid versions, known sub-ops, small domids,
        // small counts and addresses inside the chunk.
        let op = ops[rng.usize(..ops.len())];
        if op == __HYPERVISOR_domctl || op == __HYPERVISOR_sysctl {
            let cmd = if op == __HYPERVISOR_domctl {
                domctl_cmds[rng.usize(..domctl_cmds.len())]
            } else {
                [3u32, 6, 7][rng.usize(..3)]
            };
            bytes[off..off + 4].copy_from_slice(&cmd.to_ne_bytes());
            if rng.u32(..4) != 0 {
                bytes[off + 4..off + 8].copy_from_slice(&0x15u32.to_ne_bytes());
            }
            if op == __HYPERVISOR_domctl && rng.bool() {
                bytes[off + 8..off + 10].copy_from_slice(&rng.u16(..8).to_ne_bytes());
            }
            if cmd == XEN_DOMCTL_createdomain && rng.bool() {
                let cfg = SimState::pv_config(rng.u32(1..5));
                bytes[off + 16..off + 16 + 64].copy_from_slice(cfg.as_bytes());
            } else if rng.bool() {
                // a pointer field (getdomaininfolist buffer) into the chunk
                let p = m.addr(rng.usize(..CHUNK));
                bytes[off + 16..off + 24].copy_from_slice(&p.to_ne_bytes());
            }
        }
        if op == __HYPERVISOR_memory_op && rng.bool() {
            let p = m.addr(rng.usize(..CHUNK));
            bytes[off..off + 8].copy_from_slice(&p.to_ne_bytes());
            bytes[off + 8..off + 16].copy_from_slice(&rng.u64(..64).to_ne_bytes());
            bytes[off + 16..off + 20].copy_from_slice(&rng.u32(..14).to_ne_bytes());
            bytes[off + 24..off + 26].copy_from_slice(&rng.u16(..8).to_ne_bytes());
        }
        m.put(0, &bytes[..]);
        let first = match op {
            __HYPERVISOR_memory_op => memops[rng.usize(..memops.len())],
            __HYPERVISOR_domctl | __HYPERVISOR_sysctl => m.addr(off),
            _ => rng.u64(..12),
        };
        let args = [first, m.addr(off), rng.u64(..), rng.u64(..), rng.u64(..)];
        match m.call(op, args) {
            Ok(_) => ok += 1,
            Err(Errno::EACCES) => eacces += 1,
            Err(_) => {}
        }
        if let Err(e) = sim.with_state(|s| s.check_invariants()) {
            panic!("seed {seed}, round {round}: {e}");
        }
    }
    // The generator reaches past the version check and into the model.
    let domains = sim.with_state(|s| s.domains.len());
    eprintln!("{ok} calls succeeded, {eacces} refused for their version, {domains} domains");
    assert!(
        ok > 2000 && eacces > 100 && domains > 1,
        "seed {seed}: {ok} ok, {eacces} EACCES"
    );
}

/// A confined call reaches only its arena: other memory of the same chunk is EFAULT.
#[test]
fn a_confined_call_reaches_only_its_arena() {
    let sim = SimHypervisor::new(SimConfig::default());
    let m = Mem::new(&sim);
    let mut op = XenDomctlView::new_zeroed();
    op.cmd = XEN_DOMCTL_getdomaininfo;
    op.interface_version = XEN_DOMCTL_INTERFACE_VERSION;
    m.put(0, &op);
    m.put(4096, &op);
    let arena = (m.addr(0), size_of::<XenDomctlView>() as u64);
    let inside = sim.hypercall_confined(__HYPERVISOR_domctl, [m.addr(0), 0, 0, 0, 0], arena);
    assert_eq!(inside, Some(Ok(0)));
    let outside = sim.hypercall_confined(__HYPERVISOR_domctl, [m.addr(4096), 0, 0, 0, 0], arena);
    assert_eq!(
        outside,
        Some(Err(Errno::EFAULT)),
        "pool memory outside the arena"
    );
    let straddling = (m.addr(0), 8);
    let cut = sim.hypercall_confined(__HYPERVISOR_domctl, [m.addr(0), 0, 0, 0, 0], straddling);
    assert_eq!(
        cut,
        Some(Err(Errno::EFAULT)),
        "an argument longer than the arena"
    );
}
