//! Two domains on real Xen: dom0 and a PV guest that runs our program `examples/vm_peer.rs`.
//! Run inside the dom0 that `scripts/xen-vm-test` boots (feature `vm-tests`).
//!
//! The guest boots Debian's kernel with the busybox initrd plus our program
//! (`/boot/initrd-guest-rxen.cpio`); its init loads xen-evtchn, xen-gntdev and xen-gntalloc and
//! runs the program, which reports through xenstore under the guest's own
//! `/local/domain/<domid>/data/` (libxl makes it writable by the guest) and on its console.
//! One guest serves the whole exchange: a PV guest takes 10-30 s to boot under TCG.

mod vm_common;

use std::time::{Duration, Instant};

use vm_common::{in_vm, protocol, run, Guest, BOOT_TIMEOUT};
use xenctrl::evtchn::{ChannelState, EventChannels, Port};
use xenctrl::XenCtrl;
use xengnttab::{DomainId, Gntdev, GrantRef};
use xenstore::Client;

/// Pages the guest shares.
const PAGES: usize = 4;
/// Pages of Xen's free memory a guest's life may cost for good (see the test).
const XEN_SLACK_PAGES: u64 = 64;

/// The whole exchange, then `xl destroy` with dom0's mapping still open, on one guest (a PV
/// guest takes 10-30 s to boot under TCG).
#[test]
fn exchange_then_destroy_with_the_mapping_open() {
    in_vm();
    let xs = Client::open().expect("xenstore");
    let xc = XenCtrl::open().expect("XenCtrl::open");
    // The pattern's seed: different every run (the VM's pids repeat), printed to replay one.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .subsec_nanos();
    println!("pattern seed {seed}");
    let free_before = xc.physinfo().expect("physinfo").free_pages;
    let dom0_before = xc.domain_info(0).expect("dom0 info").tot_pages;

    let mut guest = Guest::boot(
        "rxen-peer-exchange",
        "vm_peer",
        &["exchange", &PAGES.to_string(), &seed.to_string()],
    );
    let domain = DomainId::new(u16::try_from(guest.domid()).unwrap());
    guest.wait_state(&xs, protocol::state::SHARED, BOOT_TIMEOUT);
    assert_eq!(
        guest.read(&xs, protocol::DEVICES),
        protocol::DEVICE_PATHS.join(","),
        "the guest lacks a Xen device"
    );
    let refs: Vec<GrantRef> = guest
        .read(&xs, protocol::REFS)
        .split(',')
        .map(|r| GrantRef::new(r.parse().expect("a grant reference")))
        .collect();
    assert_eq!(refs.len(), PAGES);
    let guest_port = Port::new(guest.read(&xs, protocol::PORT).parse().expect("a port"));

    // Map the guest's grants, read-write, and find its pattern in every page; a read-only
    // mapping of the same grants sees the same bytes.
    let gntdev = Gntdev::open().expect("open gntdev");
    let mapping = gntdev.map(domain, &refs).expect("map the guest's grants");
    let mem = mapping.slice();
    assert_eq!(mem.len(), PAGES * protocol::PAGE_SIZE);
    let ro = gntdev
        .map_read_only(domain, &refs)
        .expect("map the guest's grants read-only");
    for page in 0..PAGES {
        let at = page * protocol::PAGE_SIZE;
        let want = protocol::pattern_page(seed, page);
        let got = mem.to_vec(at, protocol::PAGE_SIZE).unwrap();
        assert_eq!(
            protocol::first_difference(&got, &want),
            None,
            "page {page}: the guest's pattern differs"
        );
        assert_eq!(ro.slice().to_vec(at, protocol::PAGE_SIZE).unwrap(), got);
    }
    drop(ro);
    // The reply, through the read-write mapping.
    for page in 0..PAGES {
        mem.write_from(
            page * protocol::PAGE_SIZE,
            &protocol::reply_page(seed, page),
        )
        .unwrap();
    }

    // Bind the guest's port; both ends now name each other in Xen's EVTCHNOP_status.
    let events = EventChannels::open().expect("open evtchn");
    let local = events
        .bind_interdomain(domain, guest_port)
        .expect("bind the guest's port");
    check_connected(&xc, DomainId::DOM0, local.port(), domain, guest_port);
    check_connected(&xc, domain, guest_port, DomainId::DOM0, local.port());
    check_debug_keys(DomainId::DOM0, local.port(), domain, guest_port);
    // Xen sets a freshly bound interdomain port pending; take that event first.
    assert_eq!(
        events.wait_timeout(Duration::from_secs(10)).unwrap(),
        Some(local.port())
    );
    events.unmask(local.port()).unwrap();

    // Our event tells the guest the reply is there; it checks it and notifies back.
    local.notify().expect("notify the guest");
    guest.wait_state(&xs, protocol::state::REPLY_OK, BOOT_TIMEOUT);
    assert_eq!(
        events.wait_timeout(Duration::from_secs(60)).unwrap(),
        Some(local.port()),
        "no event back from the guest; console:\n{}",
        guest.console()
    );
    events.unmask(local.port()).unwrap();

    // `xl destroy` while dom0 still maps the guest's pages.
    let took = guest.destroy_within(Duration::from_secs(60));
    println!("xl destroy with a grant mapping open took {took:?}");
    // The domain cannot be freed while we hold its pages: Xen keeps it, dying, and the mapping
    // still reads what was there.
    let info = xc
        .domain_info(domain.get())
        .expect("the destroyed guest still exists while its grants are mapped");
    assert!(info.dying(), "destroyed guest not dying: {info:?}");
    for page in 0..PAGES {
        let got = mem
            .to_vec(page * protocol::PAGE_SIZE, protocol::PAGE_SIZE)
            .unwrap();
        assert_eq!(
            got,
            protocol::reply_page(seed, page),
            "page {page} after destroy"
        );
    }
    // Our end of the channel lost its peer: Xen made it unbound again.
    println!(
        "after destroy, dom0's port {}: {:?}",
        local.port(),
        xc.evtchn_status(DomainId::DOM0, local.port())
    );
    drop(local);
    drop(events);
    let console = guest.console();
    let unmapped = Instant::now();
    drop(mapping);

    // Unmapping lets Xen free the domain, and its memory comes back; dom0 keeps what it had.
    let gone = wait_until(Duration::from_secs(60), || {
        xc.domain_info(domain.get()).is_err()
    });
    println!(
        "the domain was gone {:?} after dom0 unmapped its grants",
        unmapped.elapsed()
    );
    assert!(
        gone,
        "domain {domain} still exists after dom0 unmapped its grants"
    );
    // Xen's own allocations made meanwhile stay (dom0's maptrack frames, which grow with its
    // first grant maps, are never returned), so allow a few pages.
    let mut free_after = 0;
    let back = wait_until(Duration::from_secs(60), || {
        free_after = xc.physinfo().unwrap().free_pages;
        free_after + XEN_SLACK_PAGES >= free_before
    });
    // gntdev took the frames of its mappings out of dom0 (ballooned them); the balloon driver
    // gives them back once they are free again.
    let mut dom0_after = 0;
    let dom0_back = wait_until(Duration::from_secs(60), || {
        dom0_after = xc.domain_info(0).unwrap().tot_pages;
        dom0_after >= dom0_before
    });
    println!(
        "Xen's free pages: {free_before} before the guest, {free_after} after; \
         dom0's pages: {dom0_before} before, {dom0_after} after"
    );
    assert!(
        back,
        "Xen's free memory did not come back: {free_before} -> {free_after} pages"
    );
    assert!(
        dom0_back,
        "dom0 lost memory: {dom0_before} -> {dom0_after} pages"
    );
    println!("the guest's console:\n{console}");
}

/// Calls `done` until it says yes or `limit` passes; whether it said yes. For effects of the
/// hypervisor that nothing signals to us (a domain freed, memory returned).
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `EVTCHNOP_status` of `port` in `domain` names `remote_port` of `remote` as its peer.
fn check_connected(
    xc: &XenCtrl,
    domain: DomainId,
    port: Port,
    remote: DomainId,
    remote_port: Port,
) {
    let status = xc
        .evtchn_status(domain, port)
        .unwrap_or_else(|e| panic!("EVTCHNOP_status of {domain} port {port}: {e}"));
    assert_eq!(
        status.state,
        ChannelState::Interdomain {
            remote,
            remote_port,
        },
        "{domain} port {port}"
    );
}

/// Xen's own dump of the event channels (`xl debug-keys e`, read back with `xl dmesg`) shows
/// `port` of `domain` as interdomain (state 3) to `remote_port` of `remote`.
fn check_debug_keys(domain: DomainId, port: Port, remote: DomainId, remote_port: Port) {
    run("xl", &["debug-keys", "e"]);
    let dmesg = run("xl", &["dmesg"]);
    let header = format!("Event channel information for domain {domain}:");
    let section = dmesg
        .rsplit_once(&header)
        .unwrap_or_else(|| panic!("no {header:?} in xl dmesg:\n{dmesg}"))
        .1;
    let line = section
        .lines()
        .take_while(|l| !l.contains("Event channel information for domain"))
        .find(|l| {
            let mut words = l.trim_start_matches("(XEN)").split_whitespace();
            words.next() == Some(&port.to_string())
                && words.next().is_some_and(|w| w.starts_with('['))
        })
        .unwrap_or_else(|| panic!("port {port} not in Xen's dump of {domain}:\n{section}"));
    assert!(line.contains("s=3 "), "port {port} not interdomain: {line}");
    let want = format!("d={remote} p={remote_port}");
    assert!(
        line.contains(&want),
        "port {port} not connected to {want}: {line}"
    );
}
