//! Each Xen release's marshalling, end to end: a simulated host presenting the release lays out
//! the domctl and sysctl payloads as the release's recorded header facts say
//! (`SimConfig::release`), while the crate marshals with its profile's data. Every field of
//! `createdomain`, `getdomaininfo` (alone and in a `getdomaininfolist` page) and `physinfo` must
//! arrive intact both ways, so a wrong offset or size in a profile fails here.
//! (`tests/sim_suite.rs` runs the whole shared suite on each release too.)

use std::sync::Arc;

use xenctrl::abi::*;
use xenctrl::interface::{self, XenRelease};
use xenctrl::{CreateDomain, Errno, Error, SimConfig, SimHypervisor, XenCtrl};

fn host(r: &XenRelease) -> (Arc<SimHypervisor>, XenCtrl) {
    let sim = Arc::new(SimHypervisor::new(SimConfig::default().release(r)));
    let xc = XenCtrl::on_simulator(Arc::clone(&sim)).expect("open the simulated release");
    (sim, xc)
}

/// `createdomain` with every field given, through the raw domctl entry point.
fn create(xc: &XenCtrl, domid: DomId, cfg: XenDomctlCreatedomain) -> Result<DomId, Error> {
    let mut op = xc.pool().alloc::<XenDomctl<XenDomctlCreatedomain>>()?;
    op.set(domid, cfg);
    xc.domctl(&mut op)?;
    Ok(op.domain)
}

/// A PVH domain's configuration with a distinct value in every field the simulator accepts.
fn distinct() -> XenDomctlCreatedomain {
    XenDomctlCreatedomain {
        ssidref: 0x5eed,
        handle: *b"every-field-set!",
        flags: XEN_DOMCTL_CDF_hvm | XEN_DOMCTL_CDF_hap | XEN_DOMCTL_CDF_oos_off,
        iommu_opts: 0,
        max_vcpus: 3,
        max_evtchn_port: 511,
        max_grant_frames: 17,
        max_maptrack_frames: 257,
        grant_opts: 1,
        vmtrace_size: 0,
        cpupool_id: 0,
        arch: XenArchDomainconfig {
            emulation_flags: XEN_X86_EMU_LAPIC,
            misc_flags: XEN_X86_MSR_RELAXED,
        },
    }
}

#[test]
fn each_release_is_probed_to_its_profile() {
    for r in interface::releases() {
        let (_, xc) = host(r);
        let p = xc.interface();
        assert!(p.releases.contains(r), "{} probed as {}", r.tag, p.xen);
        let v = xc.version().unwrap();
        assert_eq!((v.major, v.minor), r.version);
    }
}

#[test]
fn createdomain_fields_land_where_each_release_reads_them() {
    for r in interface::releases() {
        let (sim, xc) = host(r);
        let any = xc.interface().createdomain_any_id();
        let cfg = distinct();
        let d = create(&xc, any, cfg).unwrap_or_else(|e| panic!("{}: {e}", r.tag));
        let seen = sim.with_state(|s| s.domain(d).unwrap().config);
        assert_eq!(
            seen, cfg,
            "{}: the simulated Xen read another config",
            r.tag
        );
        // Fields the simulated host refuses when set: they must reach the fields it checks.
        for (what, bad) in [
            (
                "vmtrace_size",
                XenDomctlCreatedomain {
                    vmtrace_size: 1 << 16,
                    ..cfg
                },
            ),
            (
                "cpupool_id",
                XenDomctlCreatedomain {
                    cpupool_id: 3,
                    ..cfg
                },
            ),
            (
                "arch.misc_flags",
                XenDomctlCreatedomain {
                    arch: XenArchDomainconfig {
                        misc_flags: 1 << 5,
                        ..cfg.arch
                    },
                    ..cfg
                },
            ),
        ] {
            let err = create(&xc, any, bad).expect_err(what);
            assert_eq!(err.errno(), Some(Errno::EINVAL), "{}: {what}: {err}", r.tag);
        }
        xc.destroy_domain(d).unwrap();
    }
}

#[test]
fn getdomaininfo_and_the_list_arrive_whole_in_each_release() {
    for r in interface::releases() {
        let (sim, xc) = host(r);
        let d = create(&xc, xc.interface().createdomain_any_id(), distinct()).unwrap();
        let mut op = xc
            .pool()
            .alloc::<XenDomctl<XenDomctlGetdomaininfo>>()
            .unwrap();
        op.set(d, XenDomctlGetdomaininfo::default());
        xc.domctl(&mut op).unwrap();
        let model = sim.with_state(|s| s.domain(d).unwrap().info());
        assert_eq!(op.u, model, "{}: getdomaininfo", r.tag);
        assert_eq!(op.u.arch_config.misc_flags, XEN_X86_MSR_RELAXED);
        let listed = xc.domain_list().unwrap();
        let info = listed.iter().find(|i| i.domid == d).expect("listed");
        assert_eq!(
            (info.handle, info.ssidref, info.flags, info.max_pages),
            (model.handle, model.ssidref, model.flags, model.max_pages),
            "{}: getdomaininfolist",
            r.tag
        );
        xc.destroy_domain(d).unwrap();
    }
}

#[test]
fn physinfo_arrives_whole_in_each_release() {
    for r in interface::releases() {
        let (sim, xc) = host(r);
        let mut op = xc.pool().alloc::<XenSysctl<XenSysctlPhysinfo>>().unwrap();
        op.set(XenSysctlPhysinfo::default());
        xc.sysctl(&mut op).unwrap();
        assert_eq!(op.u, sim.with_state(|s| s.physinfo()), "{}", r.tag);
    }
}

#[test]
fn any_free_domain_id_is_spelt_as_each_release_wants() {
    for r in interface::releases() {
        let (_, xc) = host(r);
        let p = xc.interface();
        // The public API asks for any id the release's way.
        let d = xc.create_domain(&CreateDomain::pv(1)).unwrap();
        assert_ne!(d, 0, "{}", r.tag);
        // DOMID_ANY's value means "any" to every release (a reserved id before 4.22).
        let any = create(&xc, 0x7FF5, distinct()).unwrap();
        assert!(any != 0 && any < DOMID_FIRST_RESERVED, "{}: {any}", r.tag);
        // 0 and the other reserved ids: "any" up to 4.21, refused by 4.22.
        for id in [0, DOMID_INVALID] {
            let got = create(&xc, id, distinct());
            match p.domid_any {
                None => {
                    let id = got.unwrap_or_else(|e| panic!("{}: {e}", r.tag));
                    xc.destroy_domain(id).unwrap();
                }
                Some(_) => assert_eq!(
                    got.unwrap_err().errno(),
                    Some(Errno::EEXIST),
                    "{}: createdomain of {id:#x}",
                    r.tag
                ),
            }
        }
        xc.destroy_domain(any).unwrap();
        xc.destroy_domain(d).unwrap();
    }
}
