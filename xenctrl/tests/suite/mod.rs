//! The xenctrl tests every backend must pass, written once against the public API (after
//! vm-memory's shared test helpers).
//!
//! Each suite function takes a handle on the host under test and a [`Witness`]: what the other
//! side says, found without this crate's hypercall path (`xl` on real Xen, the model's state on
//! the simulator). Two runners generate one `#[test]` per suite function from the single list in
//! [`suite_tests!`]: `tests/sim_suite.rs` on the simulator in `cargo test` (once per Xen release
//! the crate knows, 4.17 to 4.22), and `tests/vm_xenctrl.rs` on real Xen 4.17 in the VM. A suite function missing from the list does
//! not build cleanly (it is dead code) and fails `every_suite_function_is_listed` in both runners.
//!
//! On real Xen the tests share one hypervisor and run one at a time, dom0 has real memory, domain
//! ids are Xen's to choose and free memory is about 2 GiB; so nothing here assumes an id, a
//! domain count or an amount of memory it did not measure, and every domain is created through
//! [`Dom`], which destroys it even when the test fails.

// The random numbers here are small indices and bytes; truncating them is what is meant.
#![allow(clippy::cast_possible_truncation)]

use std::time::{Duration, Instant};

use xenctrl::abi::*;
use xenctrl::evtchn::{ChannelState, EventChannels, Port, Virq};
use xenctrl::hvm_context::{HvmContext, HvmRecord, X86_CR0_ET, X86_CR0_PE};
use xenctrl::interface::ProbeCall;
use xenctrl::volatile::{ReadOnly, ReadWrite};
use xenctrl::{
    pages_to_mib, BufferPool, CreateDomain, DomId, DomainId, Errno, Error, GrantFrames, HvmParam,
    HypercallBuffer, PageError, Resource, TscInfo, TscMode, XenCtrl,
};

/// What the other side of the hypercall interface says about the host, found without
/// `xenctrl`'s hypercall path: `xl` on real Xen, the simulator's model in `cargo test`.
pub trait Witness {
    /// Another handle on the same host, with its own buffer pool.
    fn second_handle(&self) -> XenCtrl;
    /// The domain as the other side lists it, or `None` if it does not.
    fn domain(&self, domid: DomId) -> Option<Seen>;
    /// Memory claimed and not yet allocated, host-wide, in MiB (what `xl info` prints).
    fn outstanding_claims_mib(&self) -> u64;
    /// A fresh `/dev/xen/evtchn` handle in dom0 on the same host.
    fn event_channels(&self) -> EventChannels;
    /// The domain's six state letters as the other side shows them (`xl list`'s `State`), or
    /// `None` if it does not list the domain.
    fn state(&self, domid: DomId) -> Option<String>;
}

/// One domain as a [`Witness`] sees it: the columns of `xl list` the suite compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Memory in MiB, counting an outstanding claim as the domain's (as `xl list` does).
    pub mem_mib: u64,
    /// vCPUs online.
    pub vcpus: u32,
    /// Whether the state says paused.
    pub paused: bool,
}

/// A domain the test created; destroyed when dropped, so a failed assertion leaves nothing
/// behind on the shared hypervisor.
pub struct Dom<'a> {
    xc: &'a XenCtrl,
    /// Its domid, as Xen chose it.
    pub id: DomId,
}

impl<'a> Dom<'a> {
    /// Create a domain (paused, without memory) that lives as long as the guard.
    pub fn create(xc: &'a XenCtrl, config: &CreateDomain) -> Self {
        let id = xc
            .create_domain(config)
            .unwrap_or_else(|e| panic!("create a domain: {e}"));
        Dom { xc, id }
    }

    /// A one-vCPU PV domain.
    pub fn pv(xc: &'a XenCtrl) -> Self {
        Self::create(xc, &CreateDomain::pv(1))
    }
}

impl Drop for Dom<'_> {
    fn drop(&mut self) {
        let _ = self.xc.destroy_domain(self.id);
    }
}

/// The ids `xc` lists.
pub fn domain_ids(xc: &XenCtrl) -> Vec<DomId> {
    xc.domain_list()
        .expect("domain_list")
        .iter()
        .map(|d| d.domid)
        .collect()
}

/// Wait until `ok` holds, for at most ten seconds. Real Xen frees a destroyed domain when its
/// last reference goes, after an RCU grace period; the simulator at once, so there `ok` holds
/// on the first look.
pub fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "after 10 s: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_errno<T: std::fmt::Debug>(r: Result<T, Error>, errno: Errno, what: &str) {
    let err = r.expect_err(what);
    assert_eq!(err.errno(), Some(errno), "{what}: {err}");
}

/// `seed` from `RXEN_TEST_SEED`, or from the clock; printed, so that a failure can be replayed.
pub fn seed() -> u64 {
    let seed = std::env::var("RXEN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("RXEN_TEST_SEED={seed}");
    seed
}

/// Every suite function, listed once. A runner defines
/// `fn run(name: &str, test: fn(&XenCtrl, &dyn Witness))` and invokes `suite_tests!(run);` to
/// get one `#[test]` per suite function, plus the check that the list is complete.
macro_rules! suite_tests {
    ($run:path) => {
        $crate::suite::suite_tests!(@each $run;
            version_is_a_release_of_the_probed_profile,
            physinfo_is_consistent,
            interface_probe_accepts_only_the_hosts_versions,
            dom0_is_listed_with_memory,
            domain_lifecycle,
            max_mem_and_max_vcpus,
            pause_and_unpause_nest_and_are_bounded,
            a_vanished_domain_is_esrch,
            claims_reserve_and_refuse,
            populate_and_decrease_reservation,
            domain_list_pages_past_one_batch,
            event_channel_ports_are_distinct,
            evtchn_loopback_in_dom0_round_trips,
            evtchn_a_toolstack_port_bound_and_closed,
            evtchn_guest_ports_bound_by_a_restricted_handle,
            evtchn_errors_are_xens_and_linuxs,
            evtchn_reset_closes_every_port_of_a_paused_domain,
            evtchn_the_queue_resets_and_overflows,
            evtchn_virq_dom_exc_has_one_binder_in_dom0,
            a_list_buffer_of_another_pool_is_refused_before_xen,
            extents_of_another_pool_are_refused_before_xen,
            the_argument_itself_of_another_pool_is_refused,
            a_list_count_is_the_buffer_length,
            an_extent_count_is_the_buffer_length,
            a_sub_op_that_needs_a_list_refuses_none,
            shared_page_buffers_survive_a_neighbours_free,
            random_calls_touch_only_the_buffers_they_name,
            foreign_mappings_of_a_frame_share_its_contents,
            foreign_map_reports_each_bad_page,
            grant_frames_map_as_a_resource_and_by_setup_table,
            foreign_maps_of_a_vanished_domain_fail_with_esrch,
            a_foreign_mapping_keeps_a_destroyed_domain_until_dropped,
            an_hvm_guest_is_mapped_by_guest_frame,
            pv_build_calls_and_their_errors,
            pv_vcpu_context_round_trips_on_a_pinned_l4,
            pvh_build_calls_and_their_errors,
            pvh_hvm_context_loads_and_reads_back,
            build_calls_on_a_vanished_domain_are_esrch,
            pvh_populates_2m_and_1g_extents,
            remote_shutdown_keeps_the_first_reason,
            remote_shutdown_refuses_dom0_and_missing_domains,
        );
    };
    (@each $run:path; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $run(stringify!($name), $crate::suite::$name);
            }
        )*

        #[test]
        fn every_suite_function_is_listed() {
            $crate::suite::check_listed(&[$(stringify!($name)),*]);
        }
    };
}
pub(crate) use suite_tests;

/// The signature every suite function has, spelled as in this file.
const SUITE_SIGNATURE: &str = "(xc: &XenCtrl, w: &dyn Witness)";

/// Fails unless `listed` names exactly the suite functions defined in this file.
pub fn check_listed(listed: &[&str]) {
    let mut defined: Vec<&str> = include_str!("mod.rs")
        .lines()
        .filter_map(|l| {
            l.strip_prefix("pub fn ")?
                .strip_suffix(&format!("{SUITE_SIGNATURE} {{"))
        })
        .collect();
    let mut listed = listed.to_vec();
    defined.sort_unstable();
    listed.sort_unstable();
    assert!(
        defined.len() >= 20,
        "parsed too few suite functions: {defined:?}"
    );
    assert_eq!(
        defined, listed,
        "suite functions defined vs listed in suite_tests!"
    );
}

// ---------------------------------------------------------------------------------------------
// The host.

/// A Xen release the probed interface profile names (4.17 on the test VM), on x86-64 with 4 KiB
/// pages.
pub fn version_is_a_release_of_the_probed_profile(xc: &XenCtrl, w: &dyn Witness) {
    let _ = w;
    let v = xc.version().unwrap();
    let profile = xc.interface();
    let release = profile
        .releases
        .iter()
        .find(|r| r.version == (v.major, v.minor))
        .unwrap_or_else(|| panic!("Xen {v} is not a release of the {} profile", profile.xen));
    assert!(
        v.to_string().starts_with(&format!("{}.", release.name())),
        "{v}"
    );
    assert!(v.extra.starts_with('.'), "extraversion {:?}", v.extra);
    assert_eq!(xc.page_size().unwrap(), 4096);
    let caps = xc.capabilities().unwrap();
    assert!(caps.contains("xen-3.0-x86_64"), "capabilities {caps:?}");
    // A distribution build may have no changeset (Debian's is empty): it only has to answer.
    xc.changeset().unwrap();
}

/// physinfo adds up, and its outstanding claims are what the other side reports.
pub fn physinfo_is_consistent(xc: &XenCtrl, w: &dyn Witness) {
    let p = xc.physinfo().unwrap();
    assert!(p.nr_cpus >= 1 && p.max_cpu_id + 1 >= p.nr_cpus, "{p:?}");
    assert!(p.nr_nodes >= 1 && p.threads_per_core >= 1 && p.cores_per_socket >= 1);
    assert!(p.cpu_khz > 0);
    assert!(p.pv(), "a PV dom0 means PV support");
    assert!(p.total_pages >= p.free_pages && p.free_pages >= p.outstanding_pages);
    assert!(p.total_mib() >= 1024, "{} MiB", p.total_mib());
    assert!(p.max_mfn + 1 >= p.total_pages, "{p:?}");
    assert_eq!(
        w.outstanding_claims_mib(),
        pages_to_mib(p.outstanding_pages)
    );
}

/// The probe settled on the host's interface versions; every other is refused with `EACCES`.
pub fn interface_probe_accepts_only_the_hosts_versions(xc: &XenCtrl, w: &dyn Witness) {
    let _ = w;
    let p = xc.interface();
    assert_eq!(xenctrl::interface::profile_for(p.domctl, p.sysctl), Some(p));
    for v in 0x14..=0x19 {
        let expect = |ours: u32| {
            if v == ours {
                Ok(())
            } else {
                Err(Errno::EACCES)
            }
        };
        assert_eq!(
            xc.probe(ProbeCall::DomctlGetdomaininfo(v)),
            expect(p.domctl),
            "domctl {v:#x} on Xen {}",
            p.xen
        );
        assert_eq!(
            xc.probe(ProbeCall::SysctlPhysinfo(v)),
            expect(p.sysctl),
            "sysctl {v:#x} on Xen {}",
            p.xen
        );
    }
}

/// Dom0 is there, first in the list, running with memory.
pub fn dom0_is_listed_with_memory(xc: &XenCtrl, w: &dyn Witness) {
    let dom0 = xc.domain_info(0).unwrap();
    assert_eq!(dom0.domid, 0);
    assert!(
        dom0.tot_pages > 0 && !dom0.dying() && !dom0.paused(),
        "{dom0:?}"
    );
    assert!(dom0.max_vcpu_id != XEN_INVALID_MAX_VCPU_ID);
    assert_eq!(domain_ids(xc).first(), Some(&0));
    let seen = w.domain(0).expect("the other side lists dom0");
    assert!(seen.mem_mib > 0 && !seen.paused, "{seen:?}");
}

// ---------------------------------------------------------------------------------------------
// Domains.

/// Create paused, look it up both ways, grow it, run and pause it, destroy it: each step as
/// the other side sees it.
pub fn domain_lifecycle(xc: &XenCtrl, w: &dyn Witness) {
    let free_before = xc.physinfo().unwrap().free_pages;
    let handle = *b"rxen-suite-uuid!";
    let dom = Dom::create(xc, &CreateDomain::pv(2).with_handle(handle));
    let domid = dom.id;

    // getinfo, the list and the other side agree.
    let info = xc.domain_info(domid).unwrap();
    assert_eq!(info.domid, domid);
    assert_eq!(info.handle, handle);
    assert!(info.paused(), "created paused: {}", info.state_string());
    assert!(!info.dying() && !info.hvm());
    assert_eq!(
        (info.tot_pages, info.max_pages, info.outstanding_pages),
        (0, 0, 0)
    );
    let listed = xc.domain_list().unwrap();
    let from_list = listed.iter().find(|d| d.domid == domid).expect("listed");
    assert_eq!(from_list.handle, handle);
    assert_eq!(from_list.flags, info.flags);
    let seen = w.domain(domid).expect("the other side lists it");
    assert_eq!(
        seen,
        Seen {
            mem_mib: 0,
            vcpus: info.nr_online_vcpus,
            paused: true
        }
    );

    // Memory: a limit, a claim, population into the claim.
    xc.set_max_vcpus(domid, 2).unwrap();
    xc.set_max_mem(domid, 64 * 1024).unwrap();
    let claims_before = w.outstanding_claims_mib();
    xc.claim_pages(domid, 32 * 256).unwrap();
    assert_eq!(w.outstanding_claims_mib(), claims_before + 32);
    let mut gpfns: Vec<u64> = (0..16 * 256).collect();
    xc.populate_physmap_exact(domid, 0, 0, &mut gpfns).unwrap();
    let info = xc.domain_info(domid).unwrap();
    assert_eq!(
        (info.tot_pages, info.outstanding_pages),
        (16 * 256, 16 * 256)
    );
    assert_eq!(w.outstanding_claims_mib(), claims_before + 16);
    assert_eq!(
        w.domain(domid).unwrap().mem_mib,
        16 + 16,
        "memory plus claim"
    );
    assert!(
        gpfns.iter().any(|&mfn| mfn >= 16 * 256),
        "PV populate returns machine frames"
    );
    xc.cancel_claim(domid).unwrap();
    assert_eq!(w.outstanding_claims_mib(), claims_before);
    assert_eq!(w.domain(domid).unwrap().mem_mib, 16);

    // Unpause and pause: the other side follows.
    xc.unpause_domain(domid).unwrap();
    assert!(!xc.domain_info(domid).unwrap().paused());
    assert!(!w.domain(domid).unwrap().paused);
    xc.pause_domain(domid).unwrap();
    assert!(xc.domain_info(domid).unwrap().paused());
    assert!(w.domain(domid).unwrap().paused);
    assert_eq!(
        w.domain(domid).unwrap().vcpus,
        xc.domain_info(domid).unwrap().nr_online_vcpus
    );

    // Destroy: gone from both sides, memory back.
    drop(dom);
    eventually("the destroyed domain leaves the list", || {
        w.domain(domid).is_none() && !domain_ids(xc).contains(&domid)
    });
    assert_errno(xc.destroy_domain(domid), Errno::ESRCH, "destroy twice");
    let p = xc.physinfo().unwrap();
    // Xen may scrub freed pages lazily; allow what is still waiting to be scrubbed.
    assert!(
        p.free_pages + p.scrub_pages + 64 >= free_before,
        "free pages before {free_before}, after {} (+{} to scrub)",
        p.free_pages,
        p.scrub_pages
    );
}

/// `max_mem` sets the page limit both queries report; `max_vcpus` must repeat the count the
/// domain was created with.
pub fn max_mem_and_max_vcpus(xc: &XenCtrl, w: &dyn Witness) {
    let _ = w;
    let d = Dom::create(xc, &CreateDomain::pv(2));
    assert_eq!(
        xc.domain_info(d.id).unwrap().max_vcpu_id,
        XEN_INVALID_MAX_VCPU_ID
    );
    assert_errno(
        xc.set_max_vcpus(d.id, 3),
        Errno::EINVAL,
        "more vCPUs than created with",
    );
    xc.set_max_vcpus(d.id, 2).unwrap();
    assert_eq!(xc.domain_info(d.id).unwrap().max_vcpu_id, 1);
    for kib in [64 * 1024, 4, 1 << 20] {
        xc.set_max_mem(d.id, kib).unwrap();
        assert_eq!(xc.domain_info(d.id).unwrap().max_pages, kib / 4);
        assert_eq!(xc.maximum_reservation(d.id).unwrap(), kib / 4);
    }
}

/// Pauses nest, an unpause without a pause is `EINVAL`, and the count stops at 255.
pub fn pause_and_unpause_nest_and_are_bounded(xc: &XenCtrl, w: &dyn Witness) {
    let d = Dom::pv(xc);
    xc.set_max_vcpus(d.id, 1).unwrap();
    xc.unpause_domain(d.id).unwrap();
    assert!(!w.domain(d.id).unwrap().paused);
    assert_errno(xc.unpause_domain(d.id), Errno::EINVAL, "unpause unpaused");
    xc.pause_domain(d.id).unwrap();
    xc.pause_domain(d.id).unwrap();
    xc.unpause_domain(d.id).unwrap();
    assert!(xc.domain_info(d.id).unwrap().paused(), "still paused once");
    assert!(w.domain(d.id).unwrap().paused);
    xc.unpause_domain(d.id).unwrap();
    assert!(!xc.domain_info(d.id).unwrap().paused());
    for _ in 0..255 {
        xc.pause_domain(d.id).unwrap();
    }
    assert_errno(xc.pause_domain(d.id), Errno::EOVERFLOW, "a 256th pause");
    assert_errno(xc.pause_domain(0), Errno::EINVAL, "pausing ourselves");
}

/// Every operation on a destroyed domain fails, naming the domain.
pub fn a_vanished_domain_is_esrch(xc: &XenCtrl, w: &dyn Witness) {
    let d = Dom::pv(xc);
    let domid = d.id;
    xc.set_max_mem(domid, 1024).unwrap();
    drop(d);
    eventually("the destroyed domain leaves the list", || {
        w.domain(domid).is_none() && !domain_ids(xc).contains(&domid)
    });
    let err = xc.domain_info(domid).unwrap_err();
    assert!(
        matches!(err, Error::Xen { domid: Some(d), source: Errno::ESRCH, .. } if d == domid),
        "{err:?}"
    );
    assert!(err.to_string().contains(&domid.to_string()), "{err}");
    assert_errno(xc.destroy_domain(domid), Errno::ESRCH, "destroy");
    assert_errno(xc.pause_domain(domid), Errno::ESRCH, "pause");
    assert_errno(xc.unpause_domain(domid), Errno::ESRCH, "unpause");
    assert_errno(xc.set_max_mem(domid, 1024), Errno::ESRCH, "max_mem");
    assert_errno(xc.set_max_vcpus(domid, 1), Errno::ESRCH, "max_vcpus");
    assert_errno(
        xc.current_reservation(domid),
        Errno::ESRCH,
        "current_reservation",
    );
    assert_errno(
        xc.maximum_reservation(domid),
        Errno::ESRCH,
        "maximum_reservation",
    );
    assert_errno(xc.evtchn_alloc_unbound(domid, 0), Errno::ESRCH, "evtchn");
    // Xen answers a claim for no domain with EINVAL.
    assert_errno(xc.claim_pages(domid, 16), Errno::EINVAL, "claim");
}

// ---------------------------------------------------------------------------------------------
// Memory.

/// A claim is admitted whole or not at all: beyond `max_mem` it is `EINVAL`, beyond unclaimed
/// free memory `ENOMEM` with nothing reserved; one claim at a time; cancelling returns it.
pub fn claims_reserve_and_refuse(xc: &XenCtrl, w: &dyn Witness) {
    let d = Dom::pv(xc);
    let before = w.outstanding_claims_mib();
    xc.cancel_claim(d.id).expect("cancelling no claim is fine");
    let p = xc.physinfo().unwrap();
    let too_much = p.free_pages - p.outstanding_pages + 1;
    assert_errno(
        xc.claim_pages(d.id, too_much),
        Errno::EINVAL,
        "above max_mem",
    );
    xc.set_max_mem(d.id, (too_much + 1024) * 4).unwrap();
    assert_errno(
        xc.claim_pages(d.id, too_much),
        Errno::ENOMEM,
        "above free memory",
    );
    assert_eq!(xc.domain_info(d.id).unwrap().outstanding_pages, 0);
    assert_eq!(w.outstanding_claims_mib(), before, "nothing reserved");

    xc.claim_pages(d.id, 64 * 256).unwrap();
    assert_eq!(xc.domain_info(d.id).unwrap().outstanding_pages, 64 * 256);
    assert_eq!(w.outstanding_claims_mib(), before + 64);
    assert_eq!(w.domain(d.id).unwrap().mem_mib, 64);
    assert_errno(
        xc.claim_pages(d.id, 32 * 256),
        Errno::EINVAL,
        "a second claim",
    );
    // Another domain cannot take claimed memory.
    let e = Dom::pv(xc);
    xc.set_max_mem(e.id, (too_much + 1024) * 4).unwrap();
    let unclaimed = {
        let p = xc.physinfo().unwrap();
        p.free_pages - p.outstanding_pages
    };
    assert_errno(
        xc.claim_pages(e.id, unclaimed + 1),
        Errno::ENOMEM,
        "beyond what is left unclaimed",
    );
    xc.cancel_claim(d.id).unwrap();
    assert_eq!(xc.domain_info(d.id).unwrap().outstanding_pages, 0);
    assert_eq!(w.outstanding_claims_mib(), before);
}

/// Populate, increase and decrease a reservation; `max_mem` stops population part way, and a
/// frame the domain does not have stops a decrease.
pub fn populate_and_decrease_reservation(xc: &XenCtrl, w: &dyn Witness) {
    let d = Dom::pv(xc);
    let mut one = [0u64];
    assert_eq!(
        xc.populate_physmap(d.id, 0, 0, &mut one).unwrap(),
        0,
        "max_mem starts at 0"
    );
    xc.set_max_mem(d.id, 16 * 4).unwrap();
    let asked: Vec<u64> = (100..108).collect();
    let mut frames = asked.clone();
    assert_eq!(xc.populate_physmap(d.id, 0, 0, &mut frames).unwrap(), 8);
    assert_eq!(xc.current_reservation(d.id).unwrap(), 8);
    assert!(
        frames.iter().all(|m| !asked.contains(m)),
        "PV: machine frames written back: {frames:?}"
    );
    let mut gone = [frames[0], frames[1], 1 << 40];
    assert_eq!(
        xc.decrease_reservation(d.id, 0, &mut gone).unwrap(),
        2,
        "an unpopulated frame stops the batch"
    );
    assert_eq!(xc.current_reservation(d.id).unwrap(), 6);
    assert_eq!(xc.increase_reservation(d.id, 4, 0, 0).unwrap(), 4);
    assert_eq!(xc.current_reservation(d.id).unwrap(), 10);
    let mut more: Vec<u64> = (200..210).collect();
    assert_eq!(
        xc.populate_physmap(d.id, 0, 0, &mut more).unwrap(),
        6,
        "populate stops at max_mem"
    );
    assert_errno(
        xc.populate_physmap_exact(d.id, 0, 0, &mut [300]),
        Errno::ENOMEM,
        "exact, at the limit",
    );
    assert_eq!(xc.current_reservation(d.id).unwrap(), 16);
    assert_eq!(xc.maximum_reservation(d.id).unwrap(), 16);
    let info = xc.domain_info(d.id).unwrap();
    assert_eq!((info.tot_pages, info.max_pages), (16, 16));
    assert_eq!(w.domain(d.id).unwrap().mem_mib, pages_to_mib(16));
}

/// `domain_list` fetches 64 domains per call; with more than that it pages through them, and a
/// list walked by hand in small raw batches gives the same ids.
pub fn domain_list_pages_past_one_batch(xc: &XenCtrl, w: &dyn Witness) {
    let before = domain_ids(xc);
    let n = 70usize.saturating_sub(before.len()).max(2);
    let doms: Vec<Dom<'_>> = (0..n).map(|_| Dom::pv(xc)).collect();
    let all = domain_ids(xc);
    assert!(all.len() > 64, "{} domains", all.len());
    assert!(all.windows(2).all(|p| p[0] < p[1]), "ascending, no repeats");
    for d in before.iter().chain(doms.iter().map(|d| &d.id)) {
        assert!(all.contains(d), "domain {d} missing from {all:?}");
    }
    assert!(w.domain(doms[n - 1].id).is_some());

    let mut walked = Vec::new();
    let mut first: DomId = 0;
    loop {
        let mut infos = xc.pool().alloc_slice::<XenDomctlGetdomaininfo>(3).unwrap();
        let mut op = xc
            .pool()
            .alloc::<XenSysctl<XenSysctlGetdomaininfolist<'_>>>()
            .unwrap();
        op.set(XenSysctlGetdomaininfolist::new(first, infos.guest_handle()));
        xc.sysctl(&mut op).unwrap();
        let got = op.u.num_domains() as usize;
        drop(op);
        assert!(got <= 3);
        walked.extend(infos[..got].iter().map(|i| i.domain));
        match infos[..got].last() {
            Some(last) if got == 3 => first = last.domain + 1,
            _ => break,
        }
    }
    assert_eq!(walked, all);
}

/// Unbound event channels for dom0 to bind get distinct, non-zero ports.
pub fn event_channel_ports_are_distinct(xc: &XenCtrl, w: &dyn Witness) {
    let _ = w;
    let d = Dom::pv(xc);
    let ports: Vec<_> = (0..4)
        .map(|_| xc.evtchn_alloc_unbound(d.id, 0).unwrap())
        .collect();
    for (i, p) in ports.iter().enumerate() {
        assert!(*p > 0 && !ports[..i].contains(p), "ports {ports:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Event channels: /dev/xen/evtchn in dom0, and the EVTCHNOP hypercalls, each state change
// cross-checked with what EVTCHNOP_status says.

/// How long a port may take to fire (real Xen delivers through an interrupt, under TCG).
const FIRE: Duration = Duration::from_secs(10);
/// How long to watch for a port that must not fire.
const QUIET: Duration = Duration::from_millis(300);

fn state(xc: &XenCtrl, dom: DomainId, port: Port) -> ChannelState {
    xc.evtchn_status(dom, port)
        .unwrap_or_else(|e| panic!("status of d{dom} port {port}: {e}"))
        .state
}

fn fired(ev: &EventChannels) -> Port {
    ev.wait_timeout(FIRE)
        .expect("wait for a port")
        .expect("a port fires within 10 s")
}

fn quiet(ev: &EventChannels, what: &str) {
    assert_eq!(ev.wait_timeout(QUIET).expect("wait"), None, "{what}");
}

/// A domain id no domain has (Xen hands ids out from 1 upwards).
fn unused_domid(xc: &XenCtrl) -> DomainId {
    let ids = domain_ids(xc);
    (30000..DOMID_FIRST_RESERVED)
        .find(|d| !ids.contains(d))
        .map(DomainId::new)
        .expect("a free domain id")
}

const DOM0: DomainId = DomainId::DOM0;

/// Two ports of one handle bound to each other in dom0: each notification fires the other end
/// once; a fired port stays masked and further notifications coalesce into one, delivered at
/// the unmask; unbinding sends the other end back to unbound; status follows every step.
pub fn evtchn_loopback_in_dom0_round_trips(xc: &XenCtrl, w: &dyn Witness) {
    let ev = w.event_channels();
    let a = ev.bind_unbound(DOM0).unwrap();
    assert_eq!(
        state(xc, DOM0, a.port()),
        ChannelState::Unbound { remote: DOM0 }
    );
    let b = ev.bind_interdomain(DOM0, a.port()).unwrap();
    assert_ne!(a.port(), b.port());
    assert_eq!(
        state(xc, DOM0, a.port()),
        ChannelState::Interdomain {
            remote: DOM0,
            remote_port: b.port()
        }
    );
    assert_eq!(
        state(xc, DOM0, b.port()),
        ChannelState::Interdomain {
            remote: DOM0,
            remote_port: a.port()
        }
    );
    // Xen sets a freshly bound interdomain port pending once.
    assert_eq!(fired(&ev), b.port(), "the new port fires once");
    quiet(&ev, "nothing else fired");
    b.unmask().unwrap();

    for round in 0..3 {
        b.notify().unwrap();
        assert_eq!(fired(&ev), a.port(), "round {round}: b -> a");
        a.unmask().unwrap();
        a.notify().unwrap();
        assert_eq!(fired(&ev), b.port(), "round {round}: a -> b");
        b.unmask().unwrap();
    }

    // A fired port stays masked: three more notifications become one event, at the unmask.
    b.notify().unwrap();
    assert_eq!(fired(&ev), a.port());
    b.notify().unwrap();
    b.notify().unwrap();
    quiet(&ev, "a masked port does not fire");
    a.unmask().unwrap();
    assert_eq!(fired(&ev), a.port(), "the unmask delivers what was pending");
    quiet(&ev, "notifications while masked coalesce into one");
    a.unmask().unwrap();

    // Unbinding b closes it; a waits for dom0 again, and a notification on it goes nowhere.
    let bp = b.port();
    drop(b);
    assert_eq!(state(xc, DOM0, bp), ChannelState::Closed);
    assert_eq!(
        state(xc, DOM0, a.port()),
        ChannelState::Unbound { remote: DOM0 }
    );
    a.notify().unwrap();
    quiet(&ev, "a notification on an unbound port is dropped");
    let ap = a.port();
    drop(a);
    assert_eq!(state(xc, DOM0, ap), ChannelState::Closed);
}

/// The toolstack allocates an unbound port in its own domain (one the kernel knows nothing
/// of), a handle binds it, and the toolstack closes its end: the handle's end waits again.
pub fn evtchn_a_toolstack_port_bound_and_closed(xc: &XenCtrl, w: &dyn Witness) {
    let ev = w.event_channels();
    let p = xc.evtchn_alloc_unbound_port(DomainId::SELF, DOM0).unwrap();
    assert_eq!(state(xc, DOM0, p), ChannelState::Unbound { remote: DOM0 });
    let q = ev.bind_interdomain(DOM0, p).unwrap();
    assert_eq!(
        state(xc, DOM0, p),
        ChannelState::Interdomain {
            remote: DOM0,
            remote_port: q.port()
        }
    );
    assert_eq!(fired(&ev), q.port());
    q.unmask().unwrap();
    xc.evtchn_close(p).unwrap();
    assert_eq!(state(xc, DOM0, p), ChannelState::Closed);
    assert_eq!(
        state(xc, DOM0, q.port()),
        ChannelState::Unbound { remote: DOM0 }
    );
    let err = xc.evtchn_close(p).unwrap_err();
    assert_eq!(err.errno(), Some(Errno::EINVAL), "{err}");
    assert!(
        matches!(err, Error::EventChannel { port: Some(n), .. } if n == p),
        "{err:?}"
    );
    let qp = q.port();
    q.unbind().unwrap();
    assert_eq!(state(xc, DOM0, qp), ChannelState::Closed);
}

/// Ports a toolstack allocates in a guest for dom0, bound by a dom0 handle restricted to that
/// guest (which may bind nothing else); destroying the guest sends dom0's end back to unbound.
pub fn evtchn_guest_ports_bound_by_a_restricted_handle(xc: &XenCtrl, w: &dyn Witness) {
    let d = Dom::pv(xc);
    let dom = DomainId::new(d.id);
    let g = xc.evtchn_alloc_unbound_port(dom, DOM0).unwrap();
    assert_eq!(state(xc, dom, g), ChannelState::Unbound { remote: DOM0 });
    // Any remote id is accepted, even one no domain has: Xen does not check it.
    let nobody = unused_domid(xc);
    let waits = xc.evtchn_alloc_unbound_port(dom, nobody).unwrap();
    assert_eq!(
        state(xc, dom, waits),
        ChannelState::Unbound { remote: nobody }
    );

    let ev = w.event_channels();
    ev.restrict(dom).unwrap();
    assert_errno(
        ev.bind_unbound(DOM0),
        Errno::EACCES,
        "restricted: bind_unbound",
    );
    assert_errno(
        ev.bind_virq(Virq::CON_RING),
        Errno::EACCES,
        "restricted: bind_virq",
    );
    assert_errno(
        ev.bind_interdomain(DOM0, Port::new(1)),
        Errno::EACCES,
        "restricted: another domain",
    );
    assert_errno(ev.restrict(dom), Errno::EACCES, "restricted twice");
    let local = ev.bind_interdomain(dom, g).unwrap();
    assert_eq!(
        state(xc, dom, g),
        ChannelState::Interdomain {
            remote: DOM0,
            remote_port: local.port()
        }
    );
    assert_eq!(
        state(xc, DOM0, local.port()),
        ChannelState::Interdomain {
            remote: dom,
            remote_port: g
        }
    );
    assert_eq!(fired(&ev), local.port());
    local.unmask().unwrap();
    // The guest has no kernel to answer; the notification only sets its port pending. Xen
    // sets it through the guest's vCPU 0, so the vCPUs must exist first: Xen 4.17 takes a
    // fatal page fault (the whole host goes down) for an event sent to a domain without one.
    xc.set_max_vcpus(d.id, 1).unwrap();
    local.notify().unwrap();
    quiet(&ev, "nothing comes back from a guest without a kernel");

    drop(d);
    assert_eq!(
        state(xc, DOM0, local.port()),
        ChannelState::Unbound { remote: dom },
        "the guest's end closed with it"
    );
    local.notify().unwrap();
    let lp = local.port();
    drop(local);
    assert_eq!(state(xc, DOM0, lp), ChannelState::Closed);
}

/// Each error as Xen and Linux's driver give it.
pub fn evtchn_errors_are_xens_and_linuxs(xc: &XenCtrl, w: &dyn Witness) {
    let ev = w.event_channels();
    let d = Dom::pv(xc);
    let dom = DomainId::new(d.id);
    let nobody = unused_domid(xc);

    // Binding: no such domain, the reserved port, a free port, a port beyond the allocated
    // buckets, a port waiting for another domain.
    let err = ev.bind_interdomain(nobody, Port::new(1)).unwrap_err();
    assert_eq!(err.errno(), Some(Errno::ESRCH), "{err}");
    assert!(err.to_string().contains(&nobody.to_string()), "{err}");
    assert_errno(
        ev.bind_interdomain(dom, Port::new(0)),
        Errno::EINVAL,
        "port 0",
    );
    assert_errno(
        ev.bind_interdomain(dom, Port::new(1)),
        Errno::EINVAL,
        "a free port",
    );
    assert_errno(
        ev.bind_interdomain(dom, Port::new(4000)),
        Errno::EINVAL,
        "beyond",
    );
    let for_itself = xc.evtchn_alloc_unbound_port(dom, dom).unwrap();
    assert_errno(
        ev.bind_interdomain(dom, for_itself),
        Errno::EINVAL,
        "a port waiting for another domain",
    );
    assert_errno(ev.bind_virq(Virq::new(NR_VIRQS)), Errno::EINVAL, "virq 24");
    assert_errno(ev.bind_virq(Virq::new(1000)), Errno::EINVAL, "virq 1000");

    // The driver: ports this handle did not bind.
    let theirs = xc.evtchn_alloc_unbound_port(DOM0, DOM0).unwrap();
    assert_errno(ev.notify(theirs), Errno::ENOTCONN, "notify another's port");
    assert_errno(ev.unbind(theirs), Errno::ENOTCONN, "unbind another's port");
    assert_errno(
        ev.unbind(Port::new(u32::MAX)),
        Errno::EINVAL,
        "unbind beyond",
    );
    ev.unmask(theirs)
        .expect("unmasking another's port is ignored");
    xc.evtchn_close(theirs).unwrap();
    let kept = ev.bind_unbound(dom).unwrap().into_port();
    ev.unbind(kept).unwrap();
    assert_errno(ev.unbind(kept), Errno::ENOTCONN, "unbind twice");
    assert_errno(ev.restrict(DOM0), Errno::EINVAL, "restrict to dom0");
    assert_errno(
        ev.restrict(DomainId::new(DOMID_FIRST_RESERVED)),
        Errno::EINVAL,
        "restrict to a reserved id",
    );

    // Status: no such domain, beyond the first bucket of 64 ports; port 0 and free ports
    // inside it are closed.
    assert_errno(
        xc.evtchn_status(nobody, Port::new(1)),
        Errno::ESRCH,
        "status",
    );
    assert_eq!(state(xc, dom, Port::new(0)), ChannelState::Closed);
    assert_eq!(state(xc, dom, Port::new(63)), ChannelState::Closed);
    let err = xc.evtchn_status(dom, Port::new(64)).unwrap_err();
    assert_eq!(err.errno(), Some(Errno::EINVAL), "{err}");
    assert!(
        matches!(
            err,
            Error::EventChannel { domid: Some(x), port: Some(n), .. }
                if x == dom && n == Port::new(64)
        ),
        "{err:?}"
    );
    assert_errno(xc.evtchn_close(Port::new(0)), Errno::EINVAL, "close port 0");
    assert_errno(xc.evtchn_reset(nobody), Errno::ESRCH, "reset");
    assert_errno(
        xc.evtchn_alloc_unbound_port(nobody, DOM0),
        Errno::ESRCH,
        "alloc_unbound",
    );

    // No free port: a domain created with max_evtchn_port 3 has ports 1 to 3.
    let small = Dom::create(
        xc,
        &CreateDomain {
            max_evtchn_port: 3,
            ..CreateDomain::pv(1)
        },
    );
    let small = DomainId::new(small.id);
    let ports: Vec<u32> = (0..3)
        .map(|_| xc.evtchn_alloc_unbound_port(small, DOM0).unwrap().get())
        .collect();
    assert_eq!(ports, [1, 2, 3]);
    assert_errno(
        xc.evtchn_alloc_unbound_port(small, DOM0),
        Errno::ENOSPC,
        "no free port",
    );
}

/// `EVTCHNOP_reset` closes every port of a domain the toolstack has paused (and only then);
/// the dom0 ends go back to unbound, and the domain's next port is 1 again.
pub fn evtchn_reset_closes_every_port_of_a_paused_domain(xc: &XenCtrl, w: &dyn Witness) {
    let ev = w.event_channels();
    let d = Dom::pv(xc);
    let dom = DomainId::new(d.id);
    let g: Vec<Port> = (0..3)
        .map(|_| xc.evtchn_alloc_unbound_port(dom, DOM0).unwrap())
        .collect();
    let local = ev.bind_interdomain(dom, g[0]).unwrap();
    assert_eq!(fired(&ev), local.port());
    xc.set_max_vcpus(d.id, 1).unwrap();
    xc.unpause_domain(d.id).unwrap();
    assert_errno(
        xc.evtchn_reset(dom),
        Errno::EINVAL,
        "reset of a running domain",
    );
    assert_eq!(
        state(xc, dom, g[1]),
        ChannelState::Unbound { remote: DOM0 },
        "a refused reset closes nothing"
    );
    xc.pause_domain(d.id).unwrap();
    xc.evtchn_reset(dom).unwrap();
    for &p in &g {
        assert_eq!(state(xc, dom, p), ChannelState::Closed, "port {p}");
    }
    assert_eq!(
        state(xc, DOM0, local.port()),
        ChannelState::Unbound { remote: dom }
    );
    assert_eq!(xc.evtchn_alloc_unbound_port(dom, DOM0).unwrap(), g[0]);
}

/// The handle's queue: readable through its descriptor (`poll`); `reset` empties it (the
/// fired port stays masked); notifying and unmasking without reading overflows it, which
/// reading reports until `reset`.
pub fn evtchn_the_queue_resets_and_overflows(xc: &XenCtrl, w: &dyn Witness) {
    use std::os::fd::AsFd;

    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let _ = xc;
    let readable = |ev: &EventChannels, ms: u16| {
        let mut fds = [PollFd::new(ev.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(ms)).expect("poll") == 1
    };
    let ev = w.event_channels();
    let a = ev.bind_unbound(DOM0).unwrap();
    let b = ev.bind_interdomain(DOM0, a.port()).unwrap();
    assert!(
        readable(&ev, 10_000),
        "the new port's event makes the fd readable"
    );
    assert_eq!(
        ev.pending().collect::<Result<Vec<_>, _>>().unwrap(),
        [b.port()]
    );
    assert!(!readable(&ev, 0), "an empty queue is not readable");
    b.unmask().unwrap();

    b.notify().unwrap();
    assert!(readable(&ev, 10_000));
    ev.reset().unwrap();
    assert!(!readable(&ev, 0), "reset empties the queue");
    assert_eq!(ev.pending().count(), 0);
    b.notify().unwrap();
    quiet(&ev, "the port whose event was dropped stays masked");
    a.unmask().unwrap();
    assert_eq!(fired(&ev), a.port(), "the unmask delivers it");

    // Fire and re-enable a without reading, far more often than the queue holds.
    for _ in 0..5000 {
        a.unmask().unwrap();
        b.notify().unwrap();
    }
    let err = ev.pending().next().expect("an answer").unwrap_err();
    assert!(matches!(err, Error::EventsLost), "{err:?}");
    assert_eq!(err.errno(), Some(Errno::EFBIG));
    assert!(matches!(ev.wait_timeout(QUIET), Err(Error::EventsLost)));
    ev.reset().unwrap();
    // Reset clears the overflow. The last notify before it may still be on its way (real Xen
    // delivers it through an upcall, which under a loaded TCG host came after the reset): at
    // most that one event of `a` arrives, and then `a` is masked again.
    match ev.wait_timeout(QUIET) {
        Ok(None) => {}
        Ok(Some(p)) => {
            assert_eq!(
                p,
                a.port(),
                "only a notify from before the reset may arrive"
            );
            quiet(&ev, "one late event at most");
        }
        Err(e) => panic!("reset did not clear the overflow: {e:?}"),
    }
    a.unmask().unwrap();
    b.notify().unwrap();
    assert_eq!(
        fired(&ev),
        a.port(),
        "the ports still work after an overflow"
    );
}

/// `VIRQ_DOM_EXC` goes to one port of dom0: on a host whose xenstored runs (real Xen), that
/// port is xenstored's and our bind is `EEXIST`; otherwise we bind it, see it in status, and it
/// fires when a domain is destroyed.
pub fn evtchn_virq_dom_exc_has_one_binder_in_dom0(xc: &XenCtrl, w: &dyn Witness) {
    let ev = w.event_channels();
    let held = (1..)
        .map(Port::new)
        .map_while(|p| xc.evtchn_status(DOM0, p).ok().map(|s| (p, s)))
        .find(|(_, s)| s.state == ChannelState::Virq(Virq::DOM_EXC));
    if let Some((port, _)) = held {
        let err = ev.bind_virq(Virq::DOM_EXC).unwrap_err();
        assert_eq!(
            err.errno(),
            Some(Errno::EEXIST),
            "{err} (held as port {port})"
        );
        return;
    }
    let v = ev.bind_virq(Virq::DOM_EXC).unwrap();
    // (Linux may move a global virtual IRQ to another vCPU: the vCPU is not checked.)
    assert_eq!(state(xc, DOM0, v.port()), ChannelState::Virq(Virq::DOM_EXC));
    assert_errno(ev.bind_virq(Virq::DOM_EXC), Errno::EEXIST, "bound twice");
    quiet(&ev, "nothing happened yet");
    drop(Dom::pv(xc));
    assert_eq!(
        fired(&ev),
        v.port(),
        "a destroyed domain raises VIRQ_DOM_EXC"
    );
    let vp = v.port();
    drop(v);
    assert_eq!(state(xc, DOM0, vp), ChannelState::Closed);
}

// ---------------------------------------------------------------------------------------------
// The buffer contract at run time: every handle of a call belongs to the calling handle's pool,
// every count Xen trusts matches its buffer, and a call changes no byte outside the buffers it
// names.

/// A guest handle into another pool (another handle's, or an anonymous one) is a typed error
/// before Xen is called, not the EFAULT (or the silent write) Xen would give.
pub fn a_list_buffer_of_another_pool_is_refused_before_xen(xc: &XenCtrl, w: &dyn Witness) {
    let other = w.second_handle();
    let anon = BufferPool::anonymous();
    for pool in [other.pool(), &anon] {
        let mut list = pool.alloc_slice::<XenDomctlGetdomaininfo>(4).unwrap();
        let mut op = xc
            .pool()
            .alloc::<XenSysctl<XenSysctlGetdomaininfolist<'_>>>()
            .unwrap();
        op.set(XenSysctlGetdomaininfolist::new(0, list.guest_handle()));
        let err = xc.sysctl(&mut op).unwrap_err();
        assert!(
            matches!(err, Error::ForeignBuffer { .. }),
            "a foreign list buffer must be a typed error, not EFAULT: {err:?}"
        );
        drop(op);
        assert!(
            list.iter().all(|d| *d == XenDomctlGetdomaininfo::default()),
            "nothing was written"
        );
    }
    // The same call with the handle's own pool works.
    let mut list = xc.pool().alloc_slice::<XenDomctlGetdomaininfo>(4).unwrap();
    let mut op = xc
        .pool()
        .alloc::<XenSysctl<XenSysctlGetdomaininfolist<'_>>>()
        .unwrap();
    op.set(XenSysctlGetdomaininfolist::new(0, list.guest_handle()));
    xc.sysctl(&mut op).unwrap();
    assert!(op.u.num_domains() >= 1, "dom0 at least");
    drop(op);
    assert_eq!(list[0].domain, 0);
}

/// An extent list in another handle's pool is refused, and nothing is populated.
pub fn extents_of_another_pool_are_refused_before_xen(xc: &XenCtrl, w: &dyn Witness) {
    let d = Dom::pv(xc);
    xc.set_max_mem(d.id, 64 * 1024).unwrap();
    let other = w.second_handle();
    let mut gpfns = other.pool().alloc_slice::<XenPfn>(4).unwrap();
    let mut op = xc.pool().alloc::<XenMemoryReservation<'_>>().unwrap();
    *op = XenMemoryReservation::with_extents(d.id, 0, 0, gpfns.guest_handle());
    let err = xc
        .memory_reservation_op(XENMEM_populate_physmap, &mut op)
        .unwrap_err();
    assert!(matches!(err, Error::ForeignBuffer { .. }), "{err:?}");
    drop(op);
    assert_eq!(
        xc.current_reservation(d.id).unwrap(),
        0,
        "nothing populated"
    );
}

/// The hypercall argument itself in another handle's pool is refused.
pub fn the_argument_itself_of_another_pool_is_refused(xc: &XenCtrl, w: &dyn Witness) {
    let other = w.second_handle();
    let mut op = other
        .pool()
        .alloc::<XenDomctl<XenDomctlGetdomaininfo>>()
        .unwrap();
    op.set(0, XenDomctlGetdomaininfo::default());
    let err = xc.domctl(&mut op).unwrap_err();
    assert!(matches!(err, Error::ForeignBuffer { .. }), "{err:?}");
    assert_eq!(op.u.domain, 0);
    assert_eq!(op.u.tot_pages, 0, "nothing was written");
}

/// Xen writes as many entries as the list holds, and no more: with several domains, a
/// one-entry list gets one entry, and the buffers of the same size class around it keep their
/// bytes.
pub fn a_list_count_is_the_buffer_length(xc: &XenCtrl, w: &dyn Witness) {
    let _ = w;
    let _doms: Vec<Dom<'_>> = (0..8).map(|_| Dom::pv(xc)).collect();
    let guards = |n| -> Vec<_> {
        (0..n)
            .map(|_| {
                let mut g = xc.pool().alloc_slice::<u8>(112).unwrap();
                g.fill(0x5a);
                g
            })
            .collect()
    };
    let before = guards(4);
    let mut one = xc.pool().alloc_slice::<XenDomctlGetdomaininfo>(1).unwrap();
    let after = guards(4);
    let mut op = xc
        .pool()
        .alloc::<XenSysctl<XenSysctlGetdomaininfolist<'_>>>()
        .unwrap();
    op.set(XenSysctlGetdomaininfolist::new(0, one.guest_handle()));
    assert_eq!(op.u.max_domains(), 1);
    xc.sysctl(&mut op).unwrap();
    assert_eq!(op.u.num_domains(), 1, "nine domains exist, one fits");
    drop(op);
    assert_eq!(one[0].domain, 0);
    for g in before.iter().chain(&after) {
        assert!(g.iter().all(|&x| x == 0x5a), "a neighbour was written");
    }
}

/// The extent count is the extent buffer's length.
pub fn an_extent_count_is_the_buffer_length(xc: &XenCtrl, w: &dyn Witness) {
    let _ = w;
    let d = Dom::pv(xc);
    xc.set_max_mem(d.id, 64 * 1024).unwrap();
    let mut gpfns = xc.pool().alloc_slice::<XenPfn>(3).unwrap();
    for (i, g) in gpfns.iter_mut().enumerate() {
        *g = i as u64;
    }
    let mut op = xc.pool().alloc::<XenMemoryReservation<'_>>().unwrap();
    *op = XenMemoryReservation::with_extents(d.id, 0, 0, gpfns.guest_handle());
    assert_eq!(op.nr_extents(), 3);
    let done = xc
        .memory_reservation_op(XENMEM_populate_physmap, &mut op)
        .unwrap();
    assert_eq!(done, 3);
    drop(op);
    assert_eq!(xc.current_reservation(d.id).unwrap(), 3);
}

/// Populate and decrease need an extent list; without one they are refused before Xen.
pub fn a_sub_op_that_needs_a_list_refuses_none(xc: &XenCtrl, w: &dyn Witness) {
    let _ = w;
    let d = Dom::pv(xc);
    xc.set_max_mem(d.id, 64 * 1024).unwrap();
    for cmd in [XENMEM_populate_physmap, XENMEM_decrease_reservation] {
        let mut op = xc.pool().alloc::<XenMemoryReservation<'_>>().unwrap();
        *op = XenMemoryReservation::anywhere(d.id, 4, 0, 0);
        let err = xc.memory_reservation_op(cmd, &mut op).unwrap_err();
        assert!(matches!(err, Error::MissingList { .. }), "{err:?}");
    }
    assert_eq!(xc.current_reservation(d.id).unwrap(), 0);
}

/// Two buffers on one page, freed in either order and the pool trimmed, then the survivor used
/// in a hypercall: it must still be reachable (on real Xen: Xen must never fault on it).
pub fn shared_page_buffers_survive_a_neighbours_free(xc: &XenCtrl, w: &dyn Witness) {
    let _ = w;
    for first_goes_first in [true, false] {
        let a = xc
            .pool()
            .alloc::<XenDomctl<XenDomctlGetdomaininfo>>()
            .unwrap();
        let b = xc
            .pool()
            .alloc::<XenDomctl<XenDomctlGetdomaininfo>>()
            .unwrap();
        assert_eq!(a.addr() / 4096, b.addr() / 4096, "the two share a page");
        let (gone, mut kept) = if first_goes_first { (a, b) } else { (b, a) };
        drop(gone);
        xc.pool().trim();
        for _ in 0..100 {
            *kept = XenDomctl::new(0, XenDomctlGetdomaininfo::default());
            xc.domctl(&mut kept)
                .expect("the hypervisor reads and writes the surviving buffer");
            assert_eq!(kept.u.domain, 0);
            assert!(kept.u.tot_pages > 0, "dom0's info was written");
        }
    }
    assert_eq!(xc.pool().stats().outstanding, 0);
}

/// Random pool buffers, random hypercalls: after each call, every buffer the call did not name
/// holds the bytes it held before. Seeded; `RXEN_TEST_SEED` replays a run.
pub fn random_calls_touch_only_the_buffers_they_name(xc: &XenCtrl, w: &dyn Witness) {
    let _ = w;
    let seed = seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    let doms: Vec<Dom<'_>> = (0..3).map(|_| Dom::pv(xc)).collect();
    for d in &doms {
        xc.set_max_mem(d.id, 256 * 1024).unwrap();
    }
    // Bystanders of many size classes, filled with random bytes.
    let sizes = [1, 40, 64, 100, 128, 200, 512, 1000, 2048, 4096, 9000];
    let random_buffer = |rng: &mut fastrand::Rng, len: usize| {
        let mut b = xc.pool().alloc_slice::<u8>(len).unwrap();
        rng.fill(&mut b[..]);
        b
    };
    let mut bystanders: Vec<HypercallBuffer<'_, [u8]>> = (0..48)
        .map(|_| {
            let len = sizes[rng.usize(..sizes.len())];
            random_buffer(&mut rng, len)
        })
        .collect();
    for step in 0..400 {
        let snapshot: Vec<Vec<u8>> = bystanders.iter().map(|b| b.to_vec()).collect();
        let d = doms[rng.usize(..doms.len())].id;
        let what = rng.u32(..9);
        // Each arm allocates what the call names, issues it, and frees it before the check.
        match what {
            0 => {
                let n = rng.usize(..6);
                let mut list = xc.pool().alloc_slice::<XenDomctlGetdomaininfo>(n).unwrap();
                let mut op = xc
                    .pool()
                    .alloc::<XenSysctl<XenSysctlGetdomaininfolist<'_>>>()
                    .unwrap();
                op.set(XenSysctlGetdomaininfolist::new(
                    rng.u16(..8),
                    list.guest_handle(),
                ));
                let _ = xc.sysctl(&mut op);
                assert!(op.u.num_domains() as usize <= n);
            }
            1 | 2 => {
                let n = rng.usize(..5);
                let cmd = [
                    XENMEM_populate_physmap,
                    XENMEM_decrease_reservation,
                    XENMEM_increase_reservation,
                ][rng.usize(..3)];
                let mut gpfns = xc.pool().alloc_slice::<XenPfn>(n).unwrap();
                for g in gpfns.iter_mut() {
                    *g = rng.u64(..64);
                }
                let mut op = xc.pool().alloc::<XenMemoryReservation<'_>>().unwrap();
                *op = XenMemoryReservation::with_extents(d, 0, 0, gpfns.guest_handle());
                if let Ok(done) = xc.memory_reservation_op(cmd, &mut op) {
                    assert!(done <= n as u64);
                }
            }
            3 => {
                let mut op = xc.pool().alloc::<XenMemoryReservation<'_>>().unwrap();
                *op = XenMemoryReservation::claim(d, rng.u64(..512));
                let _ = xc.memory_reservation_op(XENMEM_claim_pages, &mut op);
                *op = XenMemoryReservation::claim(d, 0);
                let _ = xc.memory_reservation_op(XENMEM_claim_pages, &mut op);
            }
            4 => {
                let mut op = xc
                    .pool()
                    .alloc::<XenDomctl<XenDomctlGetdomaininfo>>()
                    .unwrap();
                op.set(d, XenDomctlGetdomaininfo::default());
                let _ = xc.domctl(&mut op);
            }
            5 => {
                let mut op = xc.pool().alloc::<XenDomctl<XenDomctlMaxMem>>().unwrap();
                op.set(
                    d,
                    XenDomctlMaxMem {
                        max_memkb: 64 * 1024 + rng.u64(..1 << 20),
                    },
                );
                let _ = xc.domctl(&mut op);
            }
            6 => {
                let mut op = xc.pool().alloc::<XenSysctl<XenSysctlPhysinfo>>().unwrap();
                op.set(XenSysctlPhysinfo::default());
                let _ = xc.sysctl(&mut op);
            }
            7 => {
                let mut op = xc.pool().alloc::<XenMemoryReservation<'_>>().unwrap();
                *op = XenMemoryReservation::anywhere(d, rng.u64(..4), 0, 0);
                let _ = xc.memory_reservation_op(XENMEM_increase_reservation, &mut op);
            }
            _ => {
                let _ = if rng.bool() {
                    xc.pause_domain(d)
                } else {
                    xc.unpause_domain(d)
                };
            }
        }
        for (i, (b, before)) in bystanders.iter().zip(&snapshot).enumerate() {
            assert!(
                b[..] == before[..],
                "seed {seed}, step {step}, call {what}: bystander {i} ({} bytes at {:#x}) changed",
                b.len(),
                b.addr()
            );
        }
        // Recycle a bystander now and then, so blocks move around the named buffers.
        if rng.u32(..4) == 0 {
            let i = rng.usize(..bystanders.len());
            let len = bystanders[i].len();
            bystanders[i] = random_buffer(&mut rng, len);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Foreign memory: mapping a domain we created and populated.

/// A PV domain with `pages` pages populated at guest frames `0..pages`, and the machine frames
/// Xen gave them (what a PV domain's memory is mapped by).
fn populated(xc: &XenCtrl, pages: u64) -> (Dom<'_>, Vec<u64>) {
    let d = Dom::pv(xc);
    xc.set_max_mem(d.id, pages * 4).unwrap();
    let mut frames: Vec<u64> = (0..pages).collect();
    xc.populate_physmap_exact(d.id, 0, 0, &mut frames).unwrap();
    (d, frames)
}

/// Two mappings of the same frames (and one through a second handle) see each other's
/// writes; fresh memory reads as zeros; pages are in the order asked for.
pub fn foreign_mappings_of_a_frame_share_its_contents(xc: &XenCtrl, w: &dyn Witness) {
    let (d, frames) = populated(xc, 16);
    let domain = DomainId::new(d.id);
    let a = xc.map_foreign::<ReadWrite>(domain, &frames).unwrap();
    assert_eq!((a.pages(), a.len(), a.domain()), (16, 16 * 4096, domain));
    let all = a.slice().to_vec(0, a.len()).unwrap();
    assert!(all.iter().all(|&b| b == 0), "Xen hands out scrubbed pages");

    let reversed: Vec<u64> = frames.iter().rev().copied().collect();
    let b = xc.map_foreign::<ReadOnly>(domain, &reversed).unwrap();
    for i in 0..16u64 {
        let page = a.page(i as usize).unwrap();
        page.write(0, &(0xfeed_0000 + i)).unwrap();
        page.write_from(4000, format!("page {i:02}").as_bytes())
            .unwrap();
    }
    for i in 0..16u64 {
        let page = b.page(15 - i as usize).unwrap();
        assert_eq!(page.read::<u64>(0).unwrap(), 0xfeed_0000 + i);
        assert_eq!(
            page.to_vec(4000, 7).unwrap(),
            format!("page {i:02}").as_bytes()
        );
    }
    assert!(a.page(16).is_err() && b.page(usize::MAX).is_err());

    // Another handle (another privcmd descriptor on Xen) maps the same memory.
    let other = w.second_handle();
    let c = other
        .map_foreign::<ReadWrite>(domain, &frames[3..4])
        .unwrap();
    c.slice().write(8, &0x5a5a_5a5a_u64).unwrap();
    assert_eq!(a.page(3).unwrap().read::<u64>(8).unwrap(), 0x5a5a_5a5a);
    assert_eq!(b.page(12).unwrap().read::<u64>(8).unwrap(), 0x5a5a_5a5a);
    drop(c);
    // What one mapping wrote outlives it: a new mapping reads it back.
    drop(a);
    let again = xc.map_foreign::<ReadOnly>(domain, &frames[5..6]).unwrap();
    assert_eq!(again.slice().read::<u64>(0).unwrap(), 0xfeed_0005);
}

/// Each page Xen refuses is reported with its own errno; the partial mapping hands out the
/// others, and the all-or-nothing call names the first bad page and leaves nothing mapped.
pub fn foreign_map_reports_each_bad_page(xc: &XenCtrl, w: &dyn Witness) {
    let _ = w;
    let (d, frames) = populated(xc, 4);
    let domain = DomainId::new(d.id);
    // A frame the domain gave back belongs to nobody now; one far beyond the host's memory is
    // not memory at all.
    let mut gone = [frames[3]];
    assert_eq!(xc.decrease_reservation(d.id, 0, &mut gone).unwrap(), 1);
    let beyond = xc.physinfo().unwrap().max_mfn + (1 << 20);
    let asked = [frames[0], frames[3], frames[1], beyond];

    let m = xc.map_foreign_partial::<ReadWrite>(domain, &asked).unwrap();
    assert_eq!((m.pages(), m.mapped(), m.is_complete()), (4, 2, false));
    m.page(0).unwrap().write(0, &1u32).unwrap();
    m.page(2).unwrap().write(0, &3u32).unwrap();
    assert_eq!(
        m.page(1).unwrap_err(),
        PageError::NotMapped {
            index: 1,
            gfn: frames[3],
            errno: Errno::EBUSY
        },
        "a frame the PV domain does not own"
    );
    assert_eq!(
        m.page(3).unwrap_err(),
        PageError::NotMapped {
            index: 3,
            gfn: beyond,
            errno: Errno::EPERM
        },
        "a frame beyond the host's memory"
    );
    assert_eq!(
        m.page(4).unwrap_err(),
        PageError::OutOfRange { index: 4, pages: 4 }
    );
    let failed: Vec<usize> = m
        .failures()
        .map(|f| match f {
            PageError::NotMapped { index, .. } => index,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(failed, [1, 3]);

    let first_bad = |err: Error| match err {
        Error::ForeignPage {
            domid,
            index,
            pages,
            gfn,
            source,
        } => {
            assert_eq!((domid, index, pages, gfn), (domain, 1, 4, frames[3]));
            assert_eq!(source, Errno::EBUSY);
        }
        other => panic!("{other:?}"),
    };
    let err = m.into_complete().unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("domain {}", d.id)) && text.contains("page 1 of 4"),
        "{text}"
    );
    first_bad(err);
    first_bad(xc.map_foreign::<ReadOnly>(domain, &asked).unwrap_err());

    // The good pages map on their own, and kept what was written through the partial mapping.
    let good = xc.map_foreign::<ReadOnly>(domain, &frames[..2]).unwrap();
    assert_eq!(good.page(0).unwrap().read::<u32>(0).unwrap(), 1);
    assert_eq!(good.page(1).unwrap().read::<u32>(0).unwrap(), 3);
    assert_errno(
        xc.map_foreign::<ReadOnly>(domain, &[]),
        Errno::EINVAL,
        "an empty list",
    );
}

/// Grant-table frames map through `IOCTL_PRIVCMD_MMAP_RESOURCE`, and the frames
/// `GNTTABOP_setup_table` reports map through `IOCTL_PRIVCMD_MMAPBATCH_V2`: both are the same
/// memory. Frames beyond `max_grant_frames`, version-2 status frames of a version-1 table and
/// our own table are refused as Xen refuses them.
pub fn grant_frames_map_as_a_resource_and_by_setup_table(xc: &XenCtrl, w: &dyn Witness) {
    let _ = w;
    let d = Dom::pv(xc); // 64 grant frames at most
    let domain = DomainId::new(d.id);
    let status = Resource::GrantTable {
        frames: GrantFrames::Status,
    };
    assert_eq!(xc.resource_size(domain, Resource::GRANT_TABLE).unwrap(), 64);
    assert_eq!(xc.resource_size(domain, status).unwrap(), 8);

    let a = xc
        .map_resource::<ReadWrite>(domain, Resource::GRANT_TABLE, 0, 1)
        .unwrap();
    assert_eq!(a.pages(), 1);
    assert!(
        a.slice().to_vec(0, 4096).unwrap().iter().all(|&b| b == 0),
        "a new grant table is empty"
    );
    let frames = xc.gnttab_setup_table(domain, 1).unwrap();
    assert_eq!(frames.len(), 1);
    let b = xc.map_foreign::<ReadOnly>(domain, &frames).unwrap();
    // Entry 1, version 1 layout {flags: u16, domid: u16, frame: u32}: GTF_permit_access for
    // dom0, frame 0x1234.
    a.slice().write(8, &[1u16, 0]).unwrap();
    a.slice().write(12, &0x1234_u32).unwrap();
    assert_eq!(b.slice().read::<[u16; 2]>(8).unwrap(), [1, 0]);
    assert_eq!(b.slice().read::<u32>(12).unwrap(), 0x1234);

    // Frames 1 and 2 grow the table; setup_table then reports three, the first unchanged.
    let c = xc
        .map_resource::<ReadWrite>(domain, Resource::GRANT_TABLE, 1, 2)
        .unwrap();
    c.page(1).unwrap().write(0, &0xabcd_u32).unwrap();
    let three = xc.gnttab_setup_table(domain, 3).unwrap();
    assert_eq!(three[0], frames[0]);
    let e = xc.map_foreign::<ReadOnly>(domain, &three[2..]).unwrap();
    assert_eq!(e.slice().read::<u32>(0).unwrap(), 0xabcd);

    let xen_errno = |r: Result<xenctrl::ForeignMapping<'_, ReadWrite>, Error>, what: &str| match r
        .expect_err(what)
    {
        Error::Xen { source, .. } => source,
        other => panic!("{what}: {other:?}"),
    };
    assert_eq!(
        xen_errno(
            xc.map_resource(domain, Resource::GRANT_TABLE, 64, 1),
            "beyond"
        ),
        Errno::EINVAL
    );
    assert_eq!(
        xen_errno(
            xc.map_resource(domain, Resource::GRANT_TABLE, 63, 2),
            "across the end"
        ),
        Errno::EINVAL
    );
    assert_eq!(
        xen_errno(xc.map_resource(domain, status, 0, 1), "v2 status frames"),
        Errno::EINVAL
    );
    assert_eq!(
        xen_errno(
            xc.map_resource(DomainId::DOM0, Resource::GRANT_TABLE, 0, 1),
            "our own table"
        ),
        Errno::EPERM
    );
    match xc.gnttab_setup_table(domain, 65).unwrap_err() {
        Error::GrantTable { status, domid, .. } => {
            assert_eq!(status, GrantStatus::GENERAL_ERROR);
            assert_eq!(domid, Some(domain));
        }
        other => panic!("setup_table beyond max_grant_frames: {other:?}"),
    }
}

/// Once a domain is gone, every way of mapping its memory says so.
pub fn foreign_maps_of_a_vanished_domain_fail_with_esrch(xc: &XenCtrl, w: &dyn Witness) {
    let (d, frames) = populated(xc, 2);
    let id = d.id;
    drop(d);
    eventually("the destroyed domain leaves the list", || {
        w.domain(id).is_none() && !domain_ids(xc).contains(&id)
    });
    let domain = DomainId::new(id);
    match xc.map_foreign::<ReadOnly>(domain, &frames).unwrap_err() {
        Error::ForeignPage { index, source, .. } => {
            assert_eq!((index, source), (0, Errno::ESRCH));
        }
        other => panic!("{other:?}"),
    }
    let m = xc.map_foreign_partial::<ReadOnly>(domain, &frames).unwrap();
    assert_eq!(m.mapped(), 0);
    for (i, f) in m.failures().enumerate() {
        assert_eq!(
            f,
            PageError::NotMapped {
                index: i,
                gfn: frames[i],
                errno: Errno::ESRCH
            }
        );
    }
    drop(m);
    assert_errno(
        xc.map_resource::<ReadOnly>(domain, Resource::GRANT_TABLE, 0, 1),
        Errno::ESRCH,
        "map_resource",
    );
    assert_errno(
        xc.resource_size(domain, Resource::GRANT_TABLE),
        Errno::ESRCH,
        "resource_size",
    );
    match xc.gnttab_setup_table(domain, 1).unwrap_err() {
        Error::GrantTable { status, .. } => assert_eq!(status, GrantStatus::BAD_DOMAIN),
        other => panic!("{other:?}"),
    }
}

/// Destroying a domain whose memory we map succeeds, but the domain lingers, dying, with the
/// pages still mapped and their contents intact, until the mapping is dropped; then it goes.
pub fn a_foreign_mapping_keeps_a_destroyed_domain_until_dropped(xc: &XenCtrl, w: &dyn Witness) {
    let (d, frames) = populated(xc, 16);
    let id = d.id;
    let domain = DomainId::new(id);
    let memory = xc.map_foreign::<ReadWrite>(domain, &frames[..8]).unwrap();
    memory.slice().fill(0, memory.len(), 0xa5).unwrap();
    let table = xc
        .map_resource::<ReadWrite>(domain, Resource::GRANT_TABLE, 0, 1)
        .unwrap();
    table.slice().write(16, &0x77_u64).unwrap();

    xc.destroy_domain(id).unwrap();
    let info = xc
        .domain_info(id)
        .expect("a destroyed domain whose memory is mapped lingers");
    assert!(info.dying(), "{}", info.state_string());
    assert_eq!(info.tot_pages, 8, "it keeps just the pages still mapped");
    assert!(w.domain(id).is_some(), "the other side lists it too");
    assert!(
        memory
            .slice()
            .to_vec(0, memory.len())
            .unwrap()
            .iter()
            .all(|&b| b == 0xa5),
        "the mapped memory keeps its contents"
    );
    assert_eq!(table.slice().read::<u64>(16).unwrap(), 0x77);
    xc.destroy_domain(id)
        .expect("destroying a dying domain again is harmless");

    drop(table);
    drop(memory);
    eventually("the domain goes once nothing maps its memory", || {
        w.domain(id).is_none() && !domain_ids(xc).contains(&id)
    });
    assert_errno(xc.domain_info(id), Errno::ESRCH, "domain_info");
    drop(d);
}

/// An HVM (PVH) guest is mapped by guest frame: an unpopulated one is `EINVAL`, and its grant
/// table, which a new guest has mapped nowhere, has no guest frame to report
/// (`GNTTABOP_setup_table` says all ones) but maps as a resource. Skipped where the host cannot
/// run HVM guests.
pub fn an_hvm_guest_is_mapped_by_guest_frame(xc: &XenCtrl, w: &dyn Witness) {
    let _ = w;
    let p = xc.physinfo().unwrap();
    if !(p.hvm() && p.hap()) {
        eprintln!("skipped: the host has no HVM with HAP");
        return;
    }
    let d = Dom::create(xc, &CreateDomain::pvh(1));
    let domain = DomainId::new(d.id);
    xc.set_max_mem(d.id, 64).unwrap();
    let mut gfns = [0x1000, 0x1001, 0x2000];
    xc.populate_physmap_exact(d.id, 0, 0, &mut gfns).unwrap();
    assert_eq!(gfns, [0x1000, 0x1001, 0x2000], "HVM: nothing written back");
    let m = xc
        .map_foreign_partial::<ReadWrite>(domain, &[0x1000, 0x1002, 0x2000])
        .unwrap();
    assert_eq!(
        m.page(1).unwrap_err(),
        PageError::NotMapped {
            index: 1,
            gfn: 0x1002,
            errno: Errno::EINVAL
        },
        "an unpopulated guest frame"
    );
    m.page(2).unwrap().write(0, &0x4856_4d00_u64).unwrap();
    let again = xc.map_foreign::<ReadOnly>(domain, &[0x2000]).unwrap();
    assert_eq!(again.slice().read::<u64>(0).unwrap(), 0x4856_4d00);
    drop((m, again));
    assert_eq!(xc.gnttab_setup_table(domain, 1).unwrap(), [u64::MAX]);
    let table = xc
        .map_resource::<ReadWrite>(domain, Resource::GRANT_TABLE, 0, 1)
        .unwrap();
    assert_eq!(table.slice().read::<u64>(0).unwrap(), 0);
}

// ---------------------------------------------------------------------------------------------
// What a domain builder asks of Xen.

/// A PV domain with one vCPU created and `pages` pages at guest frames `0..pages`, and their
/// machine frames.
fn pv_with_vcpu(xc: &XenCtrl, pages: u64) -> (Dom<'_>, Vec<u64>) {
    let (d, frames) = populated(xc, pages);
    xc.set_max_vcpus(d.id, 1).unwrap();
    (d, frames)
}

/// A PVH guest's vCPUs, or `None` where the host cannot run HVM guests.
fn pvh_with_vcpus(xc: &XenCtrl, vcpus: u32) -> Option<Dom<'_>> {
    let p = xc.physinfo().unwrap();
    if !(p.hvm() && p.hap()) {
        eprintln!("skipped: the host has no HVM with HAP");
        return None;
    }
    let d = Dom::create(xc, &CreateDomain::pvh(vcpus));
    xc.set_max_vcpus(d.id, vcpus).unwrap();
    Some(d)
}

/// A first PV vCPU context as libxenguest writes one: kernel mode, online, flat selectors,
/// CR3 at `l4`.
fn pv_context(l4: u64) -> VcpuGuestContext {
    let mut c = VcpuGuestContext::zeroed();
    c.flags = VGCF_in_kernel | VGCF_online;
    c.user_regs.rip = 0xffff_ffff_8100_0000;
    c.user_regs.rsp = 0xffff_ffff_8200_0000;
    c.user_regs.rsi = 0xffff_ffff_8180_0000;
    c.user_regs.rflags = 0x200;
    c.user_regs.cs = FLAT_KERNEL_CS64;
    for sel in [
        &mut c.user_regs.ss,
        &mut c.user_regs.ds,
        &mut c.user_regs.es,
        &mut c.user_regs.fs,
        &mut c.user_regs.gs,
    ] {
        *sel = FLAT_KERNEL_SS64;
    }
    c.kernel_ss = u64::from(FLAT_KERNEL_SS64);
    c.kernel_sp = c.user_regs.rsp;
    c.ctrlreg[3] = VcpuGuestContext::pfn_to_cr3(l4);
    c
}

/// A PV domain: address size 64 (and nothing else), the TSC mode, the memory map (and its
/// limit), pinning its L4 on its behalf (twice is refused, a frame of another domain too,
/// unpinning what is not pinned too), the hypercall page; the HVM-only calls are refused.
pub fn pv_build_calls_and_their_errors(xc: &XenCtrl, w: &dyn Witness) {
    let _ = w;
    let (d, frames) = pv_with_vcpu(xc, 8);
    let (other, theirs) = populated(xc, 1);

    // The shared-info page, by the machine frame getdomaininfo names, maps like guest memory.
    let shinfo = xc.domain_info(d.id).unwrap().shared_info_frame;
    assert!(
        shinfo != 0 && !frames.contains(&shinfo),
        "shared_info_frame {shinfo:#x}"
    );
    let m = xc
        .map_foreign::<ReadOnly>(DomainId::new(d.id), &[shinfo])
        .unwrap();
    assert_eq!(
        m.slice().read::<u64>(0).unwrap(),
        0,
        "a new shared-info page"
    );
    drop(m);

    assert_eq!(xc.address_size(d.id).unwrap(), 64);
    xc.set_address_size(d.id, 64).unwrap();
    assert_errno(xc.set_address_size(d.id, 48), Errno::EINVAL, "48 bits");
    // 32 bits: EOPNOTSUPP where the host runs no 32-bit PV guests (Debian's Xen 4.17 in the
    // test VM, and the simulator), else EACCES since the domain has memory.
    let err = xc.set_address_size(d.id, 32).expect_err("32 bits");
    assert!(
        matches!(err.errno(), Some(Errno::EOPNOTSUPP | Errno::EACCES)),
        "32 bits: {err}"
    );
    assert_eq!(xc.address_size(d.id).unwrap(), 64);

    xc.set_tsc_info(d.id, &TscInfo::new(TscMode::NEVER_EMULATE))
        .unwrap();
    let tsc = xc.tsc_info(d.id).unwrap();
    assert_eq!(tsc.mode, TscMode::NEVER_EMULATE);
    assert_eq!(tsc.incarnation, 1, "Xen keeps one more than it is given");
    assert_errno(
        xc.set_tsc_info(d.id, &TscInfo::new(TscMode(7))),
        Errno::EINVAL,
        "an unknown TSC mode",
    );
    assert_errno(
        xc.set_tsc_info(0, &TscInfo::new(TscMode::DEFAULT)),
        Errno::EINVAL,
        "dom0's own TSC",
    );

    let ram = [E820Entry::new(0, 8 << 12, E820_RAM)];
    xc.set_memory_map(d.id, &ram).unwrap();
    let too_many = vec![E820Entry::new(0, 4096, E820_RAM); xenctrl::build::XEN_E820MAX + 1];
    assert_errno(
        xc.set_memory_map(d.id, &too_many),
        Errno::EINVAL,
        "more than E820MAX entries",
    );

    xc.pin_l4_table(d.id, frames[0]).unwrap();
    assert_errno(
        xc.pin_l4_table(d.id, frames[0]),
        Errno::EINVAL,
        "pinning a pinned frame",
    );
    assert_errno(
        xc.pin_l4_table(d.id, theirs[0]),
        Errno::EINVAL,
        "pinning another domain's frame",
    );
    assert_errno(
        xc.unpin_table(d.id, frames[1]),
        Errno::EINVAL,
        "unpinning a frame not pinned",
    );
    xc.unpin_table(d.id, frames[0]).unwrap();
    xc.pin_l4_table(d.id, frames[0]).unwrap();
    assert_errno(
        xc.pin_table(d.id, 5, frames[2]),
        Errno::EINVAL,
        "a fifth level",
    );

    xc.hypercall_init(d.id, frames[1]).unwrap();
    assert_errno(
        xc.hypercall_init(d.id, theirs[0]),
        Errno::EINVAL,
        "a hypercall page the domain does not own",
    );

    assert_errno(
        xc.paging_mempool_size(d.id),
        Errno::EOPNOTSUPP,
        "PV: no paging pool",
    );
    assert_errno(
        xc.set_paging_mempool_size(d.id, 1 << 20),
        Errno::EOPNOTSUPP,
        "PV: no paging pool",
    );
    assert_errno(
        xc.hvm_param(d.id, HvmParam::STORE_PFN),
        Errno::EINVAL,
        "PV: no HVM parameters",
    );
    assert_errno(
        xc.set_hvm_param(d.id, HvmParam::TIMER_MODE, 1),
        Errno::EINVAL,
        "PV: no HVM parameters",
    );
    assert_errno(xc.hvm_context(d.id), Errno::EINVAL, "PV: no HVM context");
    assert_errno(
        xc.set_hvm_context_bytes(d.id, &[0; 64]),
        Errno::EINVAL,
        "PV: no HVM context",
    );
    drop(other);
}

/// A PV vCPU's context: none before it is set (`ENODATA`), then what was set (CR3 naming the
/// pinned L4); refused for a vCPU that does not exist, a non-canonical entry point, a CR3 the
/// domain does not own, a first context outside kernel mode, and new page tables for a vCPU
/// already set up.
pub fn pv_vcpu_context_round_trips_on_a_pinned_l4(xc: &XenCtrl, w: &dyn Witness) {
    let _ = w;
    let (d, frames) = pv_with_vcpu(xc, 8);
    let (other, theirs) = populated(xc, 1);
    xc.set_address_size(d.id, 64).unwrap();
    xc.pin_l4_table(d.id, frames[0]).unwrap();
    assert_errno(
        xc.vcpu_context(d.id, 0),
        Errno::ENODATA,
        "a vCPU never given a state",
    );
    let good = pv_context(frames[0]);
    assert_errno(
        xc.set_vcpu_context(d.id, 1, &good),
        Errno::EINVAL,
        "a vCPU beyond max_vcpus",
    );
    let mut bad = good;
    bad.user_regs.rip = 0x0000_8000_0000_0000;
    assert_errno(
        xc.set_vcpu_context(d.id, 0, &bad),
        Errno::EINVAL,
        "a non-canonical rip",
    );
    let mut bad = good;
    bad.flags = VGCF_online;
    assert_errno(
        xc.set_vcpu_context(d.id, 0, &bad),
        Errno::EINVAL,
        "a first context outside kernel mode without a user CR3",
    );
    assert_errno(
        xc.set_vcpu_context(d.id, 0, &pv_context(theirs[0])),
        Errno::EINVAL,
        "CR3 in another domain's frame",
    );
    xc.set_vcpu_context(d.id, 0, &good).unwrap();
    let got = xc.vcpu_context(d.id, 0).unwrap();
    assert_eq!(got.user_regs.rip, good.user_regs.rip);
    assert_eq!(got.user_regs.rsp, good.user_regs.rsp);
    assert_eq!(got.user_regs.rsi, good.user_regs.rsi);
    assert_eq!(got.ctrlreg[3], good.ctrlreg[3]);
    assert_ne!(got.flags & VGCF_online, 0, "online: {:#x}", got.flags);
    assert_errno(
        xc.vcpu_context(d.id, 1),
        Errno::EINVAL,
        "reading a vCPU beyond max_vcpus",
    );
    xc.pin_l4_table(d.id, frames[1]).unwrap();
    assert_errno(
        xc.set_vcpu_context(d.id, 0, &pv_context(frames[1])),
        Errno::EOPNOTSUPP,
        "new page tables for a vCPU already set up",
    );
    drop(other);
}

/// A PVH domain: the paging pool (whole pages only), HVM parameters (the special pages, the
/// timer mode, defaults, bad values, refused and out-of-range indices), the memory map and
/// TSC mode; the PV-only calls are refused.
pub fn pvh_build_calls_and_their_errors(xc: &XenCtrl, w: &dyn Witness) {
    let _ = w;
    let Some(d) = pvh_with_vcpus(xc, 2) else {
        return;
    };
    assert_eq!(
        xc.domain_info(d.id).unwrap().shared_info_frame,
        u64::MAX,
        "an HVM guest has not mapped its shared-info page yet"
    );
    assert_eq!(
        xc.paging_mempool_size(d.id).unwrap(),
        1 << 20,
        "a new HAP domain's pool: 256 pages"
    );
    xc.set_paging_mempool_size(d.id, 4 << 20).unwrap();
    assert_eq!(xc.paging_mempool_size(d.id).unwrap(), 4 << 20);
    assert_errno(
        xc.set_paging_mempool_size(d.id, (4 << 20) + 1),
        Errno::EINVAL,
        "a pool of part of a page",
    );

    for (p, v) in [
        (HvmParam::TIMER_MODE, HVMPTM_no_delay_for_missed_ticks),
        (HvmParam::STORE_PFN, 0xfeffc),
        (HvmParam::CONSOLE_PFN, 0xfefff),
        (HvmParam::STORE_EVTCHN, 1),
        (HvmParam::CONSOLE_EVTCHN, 2),
    ] {
        xc.set_hvm_param(d.id, p, v).unwrap();
        assert_eq!(xc.hvm_param(d.id, p).unwrap(), v, "{p:?}");
    }
    // The altp2m mode: a parameter up to 4.18; from 4.19 fixed at creation (read-only).
    let altp2m_read_only = xc.interface().hvm_param_altp2m_read_only;
    let set = xc.set_hvm_param(d.id, HvmParam::ALTP2M, XEN_ALTP2M_disabled);
    if altp2m_read_only {
        assert_errno(
            set,
            Errno::EEXIST,
            "HVM_PARAM_ALTP2M is read-only from 4.19",
        );
    } else {
        set.unwrap();
    }
    assert_eq!(
        xc.hvm_param(d.id, HvmParam::ALTP2M).unwrap(),
        XEN_ALTP2M_disabled
    );
    assert_eq!(
        xc.hvm_param(d.id, HvmParam::TRIPLE_FAULT_REASON).unwrap(),
        u64::from(SHUTDOWN_reboot),
        "a triple fault reboots by default"
    );
    assert_errno(
        xc.set_hvm_param(d.id, HvmParam::TIMER_MODE, 4),
        Errno::EINVAL,
        "timer mode 4",
    );
    assert_errno(
        xc.set_hvm_param(d.id, HvmParam::ALTP2M, 4),
        if altp2m_read_only {
            Errno::EEXIST
        } else {
            Errno::EINVAL
        },
        "altp2m mode 4",
    );
    assert_errno(
        xc.hvm_param(d.id, HvmParam(HVM_NR_PARAMS)),
        Errno::EINVAL,
        "an index past the last",
    );
    assert_errno(
        xc.set_hvm_param(d.id, HvmParam::NESTEDHVM, 1),
        Errno::EINVAL,
        "a parameter the toolstack may not set",
    );

    xc.set_tsc_info(d.id, &TscInfo::new(TscMode::NEVER_EMULATE))
        .unwrap();
    assert_eq!(xc.tsc_info(d.id).unwrap().mode, TscMode::NEVER_EMULATE);
    let ram = [
        E820Entry::new(0, 0xfeff8000, E820_RAM),
        E820Entry::new(0xfeff8000, 0x8000, E820_RESERVED),
    ];
    xc.set_memory_map(d.id, &ram).unwrap();

    assert_errno(
        xc.address_size(d.id),
        Errno::EOPNOTSUPP,
        "HVM: no address size",
    );
    assert_errno(
        xc.set_address_size(d.id, 64),
        Errno::EOPNOTSUPP,
        "HVM: no address size",
    );
    assert_errno(
        xc.pin_l4_table(d.id, 0x1000),
        Errno::EINVAL,
        "HVM: no page-table pinning",
    );
    assert_errno(
        xc.vcpu_context(d.id, 0),
        Errno::ENODATA,
        "a vCPU never given a state",
    );
}

/// A CPU record for a PVH vCPU entering 32-bit flat protected mode at `rip`, as libxenguest
/// writes it.
fn pvh_cpu(rip: u64, start_info: u64) -> HvmHwCpu {
    let mut cpu = HvmHwCpu::zeroed();
    cpu.cr0 = X86_CR0_PE | X86_CR0_ET;
    cpu.rip = rip;
    cpu.rbx = start_info;
    cpu.rflags = 2;
    cpu.cs_limit = !0;
    cpu.cs_arbytes = 0xc9b;
    for (limit, ar) in [
        (&mut cpu.ds_limit, &mut cpu.ds_arbytes),
        (&mut cpu.es_limit, &mut cpu.es_arbytes),
        (&mut cpu.ss_limit, &mut cpu.ss_arbytes),
        (&mut cpu.fs_limit, &mut cpu.fs_arbytes),
        (&mut cpu.gs_limit, &mut cpu.gs_arbytes),
    ] {
        *limit = !0;
        *ar = 0xc93;
    }
    cpu.tr_arbytes = 0x8b;
    cpu.tr_limit = 0x67;
    cpu
}

/// A PVH domain's context: Xen's starts with a HEADER; a builder's HEADER + CPU (vCPU 0) +
/// MTRRs loads and reads back (the entry point, the write-back default); a bad magic, a
/// record for a vCPU that does not exist, a blob without END, and a PV domain are refused.
pub fn pvh_hvm_context_loads_and_reads_back(xc: &XenCtrl, w: &dyn Witness) {
    let _ = w;
    let Some(d) = pvh_with_vcpus(xc, 2) else {
        return;
    };
    let ctx = xc.hvm_context(d.id).unwrap();
    let header = *ctx.header().expect("a HEADER first");
    assert_eq!(header.magic, HVM_FILE_MAGIC);
    assert_eq!(header.version, HVM_FILE_VERSION);
    let kinds: Vec<(u16, u16)> = ctx
        .records
        .iter()
        .map(|r| (r.descriptor().typecode, r.descriptor().instance))
        .collect();
    // Seen on Xen 4.17: HEADER; LAPIC and LAPIC_REGS per vCPU; PCI_IRQ, ISA_IRQ and
    // PCI_LINK once; MTRR, VMCE_VCPU and TSC_ADJUST per vCPU; no CPU record for a vCPU that
    // is down.
    assert_eq!(
        kinds,
        [
            (1, 0),
            (5, 0),
            (5, 1),
            (6, 0),
            (6, 1),
            (7, 0),
            (8, 0),
            (9, 0),
            (14, 0),
            (14, 1),
            (18, 0),
            (18, 1),
            (19, 0),
            (19, 1)
        ],
        "a new PVH domain's context records"
    );

    let wb = HvmHwMtrr {
        msr_mtrr_def_type: 0x806, // enabled, write-back
        ..ctx.mtrr(0).copied().unwrap_or_default()
    };
    let built = HvmContext {
        records: vec![
            HvmRecord::Header(header),
            HvmRecord::Cpu {
                vcpu: 0,
                cpu: Box::new(pvh_cpu(0x100_0850, 0x1000)),
            },
            HvmRecord::Mtrr {
                vcpu: 0,
                mtrr: Box::new(wb),
            },
            HvmRecord::Mtrr {
                vcpu: 1,
                mtrr: Box::new(wb),
            },
        ],
    };
    xc.set_hvm_context(d.id, &built).unwrap();
    let back = xc.hvm_context(d.id).unwrap();
    let cpu = back.cpu(0).expect("vCPU 0's CPU record");
    assert_eq!((cpu.rip, cpu.rbx), (0x100_0850, 0x1000));
    assert_eq!(back.mtrr(1).unwrap().msr_mtrr_def_type, 0x806);
    assert_eq!(xc.vcpu_context(d.id, 0).unwrap().user_regs.rip, 0x100_0850);
    assert_errno(
        xc.vcpu_context(d.id, 1),
        Errno::ENODATA,
        "vCPU 1 had no CPU record",
    );

    let mut bad_magic = built.clone();
    bad_magic.records[0] = HvmRecord::Header(HvmSaveHeader {
        magic: 0x1234,
        ..header
    });
    assert_errno(
        xc.set_hvm_context(d.id, &bad_magic),
        Errno::EINVAL,
        "a bad magic",
    );
    let mut no_vcpu = built.clone();
    no_vcpu.records.push(HvmRecord::Mtrr {
        vcpu: 7,
        mtrr: Box::new(wb),
    });
    assert_errno(
        xc.set_hvm_context(d.id, &no_vcpu),
        Errno::EINVAL,
        "an MTRR record for vCPU 7 of 2",
    );
    let bytes = built.encode();
    assert_errno(
        xc.set_hvm_context_bytes(d.id, &bytes[..bytes.len() - 8]),
        Errno::ENODATA,
        "no END record",
    );
    let (pv, _) = populated(xc, 1);
    assert_errno(
        xc.set_hvm_context(pv.id, &built),
        Errno::EINVAL,
        "a PV domain",
    );
}

/// Every builder call on a domain that does not exist is `ESRCH`.
pub fn build_calls_on_a_vanished_domain_are_esrch(xc: &XenCtrl, w: &dyn Witness) {
    let _ = w;
    let id = unused_domid(xc).get();
    let ctx = VcpuGuestContext::zeroed();
    assert_errno(
        xc.set_address_size(id, 64),
        Errno::ESRCH,
        "set_address_size",
    );
    assert_errno(xc.address_size(id), Errno::ESRCH, "address_size");
    assert_errno(
        xc.set_vcpu_context(id, 0, &ctx),
        Errno::ESRCH,
        "setvcpucontext",
    );
    assert_errno(xc.vcpu_context(id, 0), Errno::ESRCH, "getvcpucontext");
    assert_errno(xc.hypercall_init(id, 0), Errno::ESRCH, "hypercall_init");
    assert_errno(
        xc.set_tsc_info(id, &TscInfo::new(TscMode::DEFAULT)),
        Errno::ESRCH,
        "settscinfo",
    );
    assert_errno(xc.tsc_info(id), Errno::ESRCH, "gettscinfo");
    assert_errno(xc.hvm_context(id), Errno::ESRCH, "gethvmcontext");
    assert_errno(
        xc.set_hvm_context_bytes(id, &[0; 64]),
        Errno::ESRCH,
        "sethvmcontext",
    );
    assert_errno(
        xc.set_paging_mempool_size(id, 1 << 20),
        Errno::ESRCH,
        "set_paging_mempool_size",
    );
    assert_errno(
        xc.paging_mempool_size(id),
        Errno::ESRCH,
        "get_paging_mempool_size",
    );
    assert_errno(
        xc.set_hvm_param(id, HvmParam::TIMER_MODE, 1),
        Errno::ESRCH,
        "HVMOP_set_param",
    );
    assert_errno(
        xc.hvm_param(id, HvmParam::STORE_PFN),
        Errno::ESRCH,
        "HVMOP_get_param",
    );
    assert_errno(xc.pin_l4_table(id, 0), Errno::ESRCH, "MMUEXT_PIN_L4_TABLE");
    assert_errno(xc.unpin_table(id, 0), Errno::ESRCH, "MMUEXT_UNPIN_TABLE");
    assert_errno(
        xc.set_memory_map(id, &[E820Entry::new(0, 4096, E820_RAM)]),
        Errno::ESRCH,
        "XENMEM_set_memory_map",
    );
}

/// A PVH builder's 2 MiB extents (order 9) populate; 1 GiB ones (order 18) populate nothing
/// on a default Xen 4.17, whose `memop-max-order` lets the control domain ask for order 12 at
/// most (beyond populate-on-demand), so a builder falls back to 2 MiB, as libxenguest does.
pub fn pvh_populates_2m_and_1g_extents(xc: &XenCtrl, w: &dyn Witness) {
    let _ = w;
    let Some(d) = pvh_with_vcpus(xc, 1) else {
        return;
    };
    xc.set_max_mem(d.id, (1 << 20) + (4 << 10)).unwrap();
    let mut two_m = [0x200];
    assert_eq!(
        xc.populate_physmap(d.id, 9, 0, &mut two_m).unwrap(),
        1,
        "2 MiB"
    );
    let mut one_g = [0x40000];
    let done = xc.populate_physmap(d.id, 18, 0, &mut one_g).unwrap();
    eprintln!("1 GiB extents populated: {done}");
    assert_eq!(
        xc.current_reservation(d.id).unwrap(),
        512 + (done as u64) * (1 << 18)
    );
}

// ---------------------------------------------------------------------------------------------
// Scheduler: a toolstack shutting a domain down (what a guest does itself with
// `SCHEDOP_shutdown`).

/// `SCHEDOP_remote_shutdown` shuts an empty domain down as a guest's own shutdown would: Xen
/// reports it shut down with the reason (both sides: `s` and the reason's letter, `sr` for a
/// reboot, `sc` for a crash, as xl 4.17 prints them), keeps the first reason when asked
/// again, and destroy still removes it.
pub fn remote_shutdown_keeps_the_first_reason(xc: &XenCtrl, w: &dyn Witness) {
    let d = Dom::pv(xc);
    xc.set_max_vcpus(d.id, 1).unwrap();
    assert_eq!(xc.domain_info(d.id).unwrap().shutdown_reason(), None);
    xc.remote_shutdown(d.id, ShutdownReason::REBOOT).unwrap();
    let info = xc.domain_info(d.id).unwrap();
    assert_eq!(
        info.shutdown_reason(),
        Some(ShutdownReason::REBOOT),
        "state {}",
        info.state_string()
    );
    assert_eq!(&info.state_string()[3..5], "sr", "{}", info.state_string());
    let seen = w.state(d.id).expect("the other side lists it");
    assert_eq!(&seen[3..5], "sr", "the other side's state {seen}");
    // A second request changes nothing: Xen keeps the first reason.
    xc.remote_shutdown(d.id, ShutdownReason::CRASH).unwrap();
    assert_eq!(
        xc.domain_info(d.id).unwrap().shutdown_reason(),
        Some(ShutdownReason::REBOOT)
    );

    // A crash shows as `sc` on both sides; a domain without vCPUs shuts down too.
    let c = Dom::pv(xc);
    xc.remote_shutdown(c.id, ShutdownReason::CRASH).unwrap();
    let info = xc.domain_info(c.id).unwrap();
    assert_eq!(info.shutdown_reason(), Some(ShutdownReason::CRASH));
    assert_eq!(&info.state_string()[3..5], "sc", "{}", info.state_string());
    let seen = w.state(c.id).expect("the other side lists it");
    assert_eq!(&seen[3..5], "sc", "the other side's state {seen}");

    // Only the reason's low byte counts (Xen's `domain_shutdown` takes a u8).
    let p = Dom::pv(xc);
    xc.remote_shutdown(p.id, ShutdownReason(0x100 | 4)).unwrap();
    assert_eq!(
        xc.domain_info(p.id).unwrap().shutdown_reason(),
        Some(ShutdownReason::WATCHDOG)
    );

    // Destroy removes a shut-down domain.
    let ids = [d.id, c.id, p.id];
    drop((d, c, p));
    eventually("the shut-down domains leave the list", || {
        let now = domain_ids(xc);
        ids.iter()
            .all(|id| !now.contains(id) && w.domain(*id).is_none())
    });
}

/// dom0 is refused before Xen is asked (Xen would shut the host down); a missing domain is
/// Xen's `ESRCH`, naming the domain.
pub fn remote_shutdown_refuses_dom0_and_missing_domains(xc: &XenCtrl, w: &dyn Witness) {
    let err = xc.remote_shutdown(0, ShutdownReason::POWEROFF).unwrap_err();
    assert!(
        matches!(
            err,
            Error::HostDomain {
                op: xenctrl::Op::RemoteShutdown
            }
        ),
        "{err:?}"
    );
    assert!(w.domain(0).is_some(), "dom0 is still there");
    let gone = unused_domid(xc).get();
    let err = xc
        .remote_shutdown(gone, ShutdownReason::POWEROFF)
        .unwrap_err();
    assert!(
        matches!(err, Error::Xen { domid: Some(d), source: Errno::ESRCH, .. } if d == gone),
        "{err:?}"
    );
    assert!(err.to_string().contains(&gone.to_string()), "{err}");
}
