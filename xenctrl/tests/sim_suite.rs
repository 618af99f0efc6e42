//! The shared xenctrl suite (`tests/suite/mod.rs`) on the simulator, in every `cargo test`.
//! `tests/vm_xenctrl.rs` runs the same list on real Xen 4.17.
//!
//! Each test gets a fresh simulated host shaped like the test VM's (3 GiB, a 1 GiB dom0, so
//! about 2 GiB free), whose model is the witness. Afterwards the runner checks the model's
//! invariants and that the test destroyed every domain it made and left no claim behind, which
//! real Xen could not tell us so directly.
//!
//! The whole list runs once per Xen release the crate knows: at the top level on 4.17, and in
//! `xen_4_18` ... `xen_4_22` on a simulated host presenting that release
//! (`SimConfig::release`): its version, the interface versions and payload layouts its
//! recorded header facts name, and its profile's behaviour. The crate finds the profile by its
//! probe and marshals with the profile's data, so data that disagrees with the headers fails
//! here as it would on that Xen.

mod suite;

use std::sync::Arc;

use suite::{Seen, Witness};
use xenctrl::abi::{
    ShutdownReason, XEN_DOMINF_blocked, XEN_DOMINF_dying, XEN_DOMINF_paused, XEN_DOMINF_running,
    XEN_DOMINF_shutdown,
};
use xenctrl::evtchn::EventChannels;
use xenctrl::{pages_to_mib, DomId, DomainId, SimConfig, SimHypervisor, XenCtrl};

/// The simulator's model, read directly.
struct Model(Arc<SimHypervisor>);

impl Witness for Model {
    fn second_handle(&self) -> XenCtrl {
        XenCtrl::on_simulator(Arc::clone(&self.0)).expect("a second handle on the simulator")
    }

    fn domain(&self, domid: DomId) -> Option<Seen> {
        self.0.with_state(|s| {
            let d = s.domain(domid).ok()?;
            let info = d.info();
            Some(Seen {
                mem_mib: pages_to_mib(d.tot_pages + d.outstanding_pages),
                vcpus: info.nr_online_vcpus,
                paused: d.pause_count > 0,
            })
        })
    }

    fn outstanding_claims_mib(&self) -> u64 {
        pages_to_mib(self.0.with_state(|s| s.outstanding_claims))
    }

    fn state(&self, domid: DomId) -> Option<String> {
        self.0.with_state(|s| {
            let d = s.domain(domid).ok()?;
            let i = d.info();
            let has = |f: u32| i.flags & f != 0;
            // xl 4.17's letters: the fifth is the reason's, from "-rscwS".
            let reason = i
                .shutdown_reason()
                .map_or('-', |ShutdownReason(r)| match r {
                    0 => '-',
                    1 => 'r',
                    2 => 's',
                    3 => 'c',
                    4 => 'w',
                    5 => 'S',
                    _ => '?',
                });
            let flag = |f: u32, c: char| if has(f) { c } else { '-' };
            Some(
                [
                    flag(XEN_DOMINF_running, 'r'),
                    flag(XEN_DOMINF_blocked, 'b'),
                    flag(XEN_DOMINF_paused, 'p'),
                    flag(XEN_DOMINF_shutdown, 's'),
                    reason,
                    flag(XEN_DOMINF_dying, 'd'),
                ]
                .iter()
                .collect(),
            )
        })
    }

    fn event_channels(&self) -> EventChannels {
        EventChannels::on_simulator(Arc::clone(&self.0), DomainId::DOM0)
            .expect("a dom0 event-channel handle on the simulator")
    }
}

fn run(name: &str, test: fn(&XenCtrl, &dyn Witness)) {
    run_on(&xenctrl::interface::RELEASE_4_17, name, test);
}

/// Run one suite function on a fresh simulated host presenting `release`.
fn run_on(release: &xenctrl::interface::XenRelease, name: &str, test: fn(&XenCtrl, &dyn Witness)) {
    let sim = Arc::new(SimHypervisor::new(
        SimConfig {
            total_mib: 3072,
            dom0_mib: 1024,
            ..SimConfig::default()
        }
        .release(release),
    ));
    let xc = XenCtrl::on_simulator(Arc::clone(&sim)).expect("open the simulator");
    let v = xc.version().expect("xen_version");
    assert_eq!(
        (v.major, v.minor),
        release.version,
        "{name}: the simulator presents another release"
    );
    test(&xc, &Model(Arc::clone(&sim)));
    drop(xc);
    sim.with_state(|s| {
        if let Err(e) = s.check_invariants() {
            panic!("{name}: the model's invariants broke: {e}");
        }
        let left: Vec<DomId> = s.domains.keys().copied().filter(|&d| d != 0).collect();
        assert!(left.is_empty(), "{name} left domains behind: {left:?}");
        assert_eq!(s.outstanding_claims, 0, "{name} left a claim behind");
    });
}

suite::suite_tests!(run);

/// The suite on each newer release, one module per release.
macro_rules! on_release {
    ($($module:ident => $release:ident),* $(,)?) => {$(
        mod $module {
            use super::*;

            fn run(name: &str, test: fn(&XenCtrl, &dyn Witness)) {
                run_on(&xenctrl::interface::$release, name, test);
            }

            suite::suite_tests!(run);
        }
    )*};
}

on_release! {
    xen_4_18 => RELEASE_4_18,
    xen_4_19 => RELEASE_4_19,
    xen_4_20 => RELEASE_4_20,
    xen_4_21 => RELEASE_4_21,
    xen_4_22 => RELEASE_4_22,
}

#[test]
fn every_known_release_runs_the_suite() {
    let covered = [(4, 17), (4, 18), (4, 19), (4, 20), (4, 21), (4, 22)];
    let known: Vec<(u16, u16)> = xenctrl::interface::releases().map(|r| r.version).collect();
    assert_eq!(
        known, covered,
        "add a module to on_release! for each new release"
    );
}
