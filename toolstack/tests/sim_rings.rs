//! Guests' rings on the simulated host, with this test playing the guest through xenctrl's
//! public API (foreign mappings of its pages, its grant table, its event channels): the
//! host's xenstored serves the store ring it was introduced with, as the domain, and marks a
//! corrupt ring broken; its xenconsoled copies the console ring to the pty (and its log) and
//! what is typed into the pty back into the ring; both prefer the guest's reserved grant
//! references to the frames the toolstack named, as their C counterparts do.
//!
//! Some waits are on guest memory (a reply in the ring, the `error` field): the guest has no
//! event this process can block on there, so those waits poll the page, bounded by
//! [`STUCK`].

mod common;

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{stderr, SimHost, STUCK};
use xenctrl::volatile::{ReadWrite, VolatileSlice};
use xenctrl::{DomainId, ForeignMapping, Resource, SimConfig, SimHypervisor, XenCtrl};
use xenstore::server::ring::{offsets, GuestEnd, SharedPage};
use xenstore::wire::{self, Header, MsgType};
use xenstore::ReadOpt;

/// A page of the guest, seen from the guest (this test): volatile access only.
struct Page<'a>(VolatileSlice<'a, ReadWrite>);

impl SharedPage for Page<'_> {
    fn size(&self) -> usize {
        self.0.len()
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        self.0.read_into(offset, out).expect("inside the page");
    }
    fn write_bytes(&self, offset: usize, data: &[u8]) {
        self.0.write_from(offset, data).expect("inside the page");
    }
    fn read_u32(&self, offset: usize) -> u32 {
        self.0.read(offset).expect("inside the page")
    }
    fn write_u32(&self, offset: usize, value: u32) {
        self.0.write(offset, &value).expect("inside the page");
    }
}

/// The guest's view of the host: its hypervisor, as the guest's kernel would reach it.
struct Guest {
    sim: Arc<SimHypervisor>,
    xc: XenCtrl,
    domid: u16,
}

impl Guest {
    fn new(host: &SimHost, domid: u16) -> Self {
        let sim = Arc::new(
            SimHypervisor::persistent(host.path().join("hypervisor"), SimConfig::default())
                .expect("open the simulated hypervisor"),
        );
        let xc = XenCtrl::on_simulator(Arc::clone(&sim)).expect("xenctrl");
        Guest { sim, xc, domid }
    }

    fn map(&self, frame: u64) -> ForeignMapping<'_, ReadWrite> {
        self.xc
            .map_foreign(DomainId::new(self.domid), &[frame])
            .expect("map a page of the guest")
    }

    /// `EVTCHNOP_send` from the guest on its port.
    fn notify(&self, port: u32) {
        self.sim
            .with_state(|s| s.evtchn_send(self.domid, port))
            .expect("notify");
    }

    /// Grants dom0 access to `frame` at reference `gref`, as a domain builder seeds grants 0
    /// (console) and 1 (xenstore): a version-1 entry (flags, domid, frame), flags last.
    fn grant(&self, gref: usize, frame: u64) {
        let table = self
            .xc
            .map_resource::<ReadWrite>(DomainId::new(self.domid), Resource::GRANT_TABLE, 0, 1)
            .expect("map the guest's grant table");
        let s = table.slice();
        let at = gref * 8;
        s.write(at + 2, &0u16).expect("domid");
        s.write(at + 4, &u32::try_from(frame).expect("a 32-bit frame"))
            .expect("frame");
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        // GTF_permit_access.
        s.write(at, &1u16).expect("flags");
    }

    /// Whether our end of `port` is bound to dom0 (rather than unbound, waiting for it).
    fn port_state(&self, port: u32) -> String {
        self.sim.with_state(|s| {
            format!(
                "{:?}",
                s.domains[&self.domid].evtchn.port(port).map(|p| p.state)
            )
        })
    }
}

fn xs(host: &SimHost) -> xenstore::Client {
    xenstore::Client::open_path(host.path().join("xenstored.sock")).expect("xenstore")
}

fn num(host: &SimHost, path: &str) -> u64 {
    let v = xs(host)
        .read_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    v.parse().unwrap_or_else(|_| panic!("{path}: {v:?}"))
}

/// Creates a paused domain of `kind` ("pv" or "pvh") and returns its id.
fn create(host: &SimHost, name: &str, kind: &str) -> u16 {
    let p = host.path().join(format!("{name}.cfg"));
    std::fs::write(
        &p,
        format!(
            // No kernel: the test plays the guest itself on the empty domain.
            "name = \"{name}\"\ntype = \"{kind}\"\nmemory = 32\nvcpus = 1\n"
        ),
    )
    .expect("cfg");
    host.ok(&["create", "-p", p.to_str().expect("path")]);
    host.domid(name).expect("created")
}

/// Polls `cond` (on guest memory) until it holds, failing after [`STUCK`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + STUCK;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {STUCK:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for a watch event on `path` (which fires once on registration first).
fn wait_for_event(w: &xenstore::Watch, path: &str) {
    let deadline = Instant::now() + STUCK;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match w.next_event_timeout(left).expect("watch") {
            Some(ev) if ev.path == path => return,
            Some(_) => {}
            None => panic!("no event for {path} within {STUCK:?}"),
        }
    }
}

/// The next whole message in the response queue, waiting for it.
fn reply<P: SharedPage>(g: &mut GuestEnd<P>, pending: &mut Vec<u8>) -> (Header, Vec<u8>) {
    let deadline = Instant::now() + STUCK;
    loop {
        if let Some(f) = wire::parse_frame(pending).expect("well-formed replies") {
            let r = (f.header, f.payload.to_vec());
            let n = f.wire_len();
            pending.drain(..n);
            return r;
        }
        let mut buf = [0u8; 1024];
        let n = g.read(&mut buf).expect("sane indices");
        pending.extend_from_slice(&buf[..n]);
        if n == 0 {
            assert!(Instant::now() < deadline, "no reply within {STUCK:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn xenstored_serves_the_store_ring_as_the_domain() {
    let host = SimHost::new(2048, 512);
    for kind in ["pv", "pvh"] {
        let d = create(&host, &format!("store-{kind}"), kind);
        let dom = format!("/local/domain/{d}");
        // As the toolstack published them: a machine frame for PV, a guest frame for PVH.
        let frame = num(&host, &format!("{dom}/store/ring-ref"));
        let port = u32::try_from(num(&host, &format!("{dom}/store/port"))).expect("port");
        let guest = Guest::new(&host, d);
        let mapping = guest.map(frame);
        let page = Page(mapping.slice());
        // xenstored took the ring over when the domain was introduced: reconnection and the
        // error field advertised, and our port bound by dom0.
        assert_eq!(page.read_u32(offsets::SERVER_FEATURES), 3, "{kind}");
        assert!(
            guest.port_state(port).contains("Interdomain"),
            "{}",
            guest.port_state(port)
        );

        let dom0 = xs(&host);
        let node = format!("{dom}/data/boot");
        let watch = dom0.watch(&node).expect("watch");
        wait_for_event(&watch, &node);

        // The guest's first words: a relative write, as a kernel's xenbus driver would.
        let mut g = GuestEnd::new(page);
        let mut pending = Vec::new();
        let req = wire::encode(
            MsgType::Write,
            11,
            0,
            &[b"data/boot\0", b"reached userspace"],
        )
        .expect("encode");
        assert_eq!(g.write(&req).expect("room"), req.len());
        guest.notify(port);
        wait_for_event(&watch, &node);
        assert_eq!(
            dom0.read_string(&node).expect("read"),
            "reached userspace",
            "{kind}"
        );
        assert_eq!(
            dom0.get_perms(&node).expect("perms").owner(),
            u32::from(d),
            "{kind}: the guest owns what it wrote"
        );
        let (h, p) = reply(&mut g, &mut pending);
        assert_eq!(
            (h.ty, h.req_id, p.as_slice()),
            (MsgType::Write, 11, &b"OK\0"[..])
        );

        // Unprivileged: dom0's nodes stay hidden.
        let req = wire::encode(MsgType::Read, 12, 0, &[b"/local/domain/0/name\0"]).expect("encode");
        g.write(&req).expect("room");
        guest.notify(port);
        let (h, p) = reply(&mut g, &mut pending);
        assert_eq!((h.ty, h.req_id), (MsgType::Error, 12));
        assert_eq!(p, b"EACCES\0");

        // Its own watch fires into the ring when dom0 writes.
        let req = wire::encode(MsgType::Watch, 13, 0, &[b"control/shutdown\0", b"tok\0"])
            .expect("encode");
        g.write(&req).expect("room");
        guest.notify(port);
        let (h, _) = reply(&mut g, &mut pending);
        assert_eq!((h.ty, h.req_id), (MsgType::Watch, 13));
        let (h, p) = reply(&mut g, &mut pending);
        assert_eq!(
            (h.ty, p.as_slice()),
            (MsgType::WatchEvent, &b"control/shutdown\0tok\0"[..])
        );
        dom0.write(&format!("{dom}/control/shutdown"), "poweroff")
            .expect("write");
        let (h, p) = reply(&mut g, &mut pending);
        assert_eq!(
            (h.ty, p.as_slice()),
            (MsgType::WatchEvent, &b"control/shutdown\0tok\0"[..])
        );

        // A producer index that jumps: the ring is marked broken (XENSTORE_ERROR_RINGIDX),
        // requests are no longer served, and the domain stays introduced.
        let jump = g.page().read_u32(offsets::REQ_CONS).wrapping_add(5000);
        g.page().write_u32(offsets::REQ_PROD, jump);
        guest.notify(port);
        wait_until("the error field", || g.page().read_u32(offsets::ERROR) != 0);
        assert_eq!(g.page().read_u32(offsets::ERROR), 2, "{kind}");
        assert!(dom0.is_domain_introduced(u32::from(d)).expect("introduced"));

        // Releasing the domain unbinds xenstored's end of the channel (the guest's port waits
        // for dom0 again) and unmaps the page.
        dom0.release_domain(u32::from(d)).expect("release");
        assert_eq!(
            guest.port_state(port),
            "Some(Unbound { remote: 0 })",
            "{kind}"
        );
        drop(mapping);
        host.ok(&["destroy", &format!("store-{kind}")]);
    }
}

#[test]
fn xenstored_prefers_the_granted_store_page() {
    let host = SimHost::new(2048, 512);
    let d = create(&host, "granted", "pvh");
    let dom = format!("/local/domain/{d}");
    let frame = num(&host, &format!("{dom}/store/ring-ref"));
    let port = u32::try_from(num(&host, &format!("{dom}/store/port"))).expect("port");
    let guest = Guest::new(&host, d);
    let dom0 = xs(&host);
    // Forget it, clear the first page's features, grant another page as reference 1, and
    // introduce the domain again with the first page's frame.
    dom0.release_domain(u32::from(d)).expect("release");
    let named = guest.map(frame);
    let granted_frame = frame - 3;
    let granted = guest.map(granted_frame);
    named
        .slice()
        .write(offsets::SERVER_FEATURES, &0u32)
        .expect("write");
    guest.grant(1, granted_frame);
    dom0.introduce_domain(u32::from(d), frame, port)
        .expect("introduce");
    assert_eq!(
        granted
            .slice()
            .read::<u32>(offsets::SERVER_FEATURES)
            .expect("read"),
        3
    );
    assert_eq!(
        named
            .slice()
            .read::<u32>(offsets::SERVER_FEATURES)
            .expect("read"),
        0
    );
    // And it is served there.
    let mut g = GuestEnd::new(Page(granted.slice()));
    let req =
        wire::encode(MsgType::GetDomainPath, 1, 0, &[format!("{d}\0").as_bytes()]).expect("encode");
    g.write(&req).expect("room");
    guest.notify(port);
    let (h, p) = reply(&mut g, &mut Vec::new());
    assert_eq!(h.ty, MsgType::GetDomainPath);
    assert_eq!(p, format!("{dom}\0").as_bytes());
}

/// Writes `text` into the console page's `out` queue and notifies.
fn console_write(guest: &Guest, page: &VolatileSlice<'_, ReadWrite>, port: u32, text: &[u8]) {
    const OUT: usize = 1024;
    const OUT_PROD: usize = 3084;
    let prod: u32 = page.read(OUT_PROD).expect("read");
    for (i, b) in text.iter().enumerate() {
        let at = (prod as usize + i) % 2048;
        page.write_from(OUT + at, &[*b]).expect("write");
    }
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    let n = u32::try_from(text.len()).expect("short");
    page.write(OUT_PROD, &prod.wrapping_add(n)).expect("write");
    guest.notify(port);
}

/// Reads what `rxl console`'s output thread sends until `needle` was seen.
fn read_until(rx: &mpsc::Receiver<Vec<u8>>, seen: &mut Vec<u8>, needle: &str) {
    let deadline = Instant::now() + STUCK;
    while !String::from_utf8_lossy(seen).contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.extend(chunk),
            Err(e) => panic!(
                "{needle:?} not on the console ({e}); it showed {:?}",
                String::from_utf8_lossy(seen)
            ),
        }
    }
}

#[test]
fn the_console_ring_reaches_the_pty_the_log_and_rxl_console() {
    let host = SimHost::new(2048, 512);
    let d = create(&host, "talk", "pvh");
    let dom = format!("/local/domain/{d}");
    let port = u32::try_from(num(&host, &format!("{dom}/console/port"))).expect("port");
    // The console page, published as a domain builder does (a guest frame of this PVH
    // guest; no grant 0, so xenconsoled maps the frame).
    let frame = num(&host, &format!("{dom}/store/ring-ref")) - 1;
    let guest = Guest::new(&host, d);
    let mapping = guest.map(frame);
    let page = mapping.slice();
    xs(&host)
        .write(&format!("{dom}/console/ring-ref"), frame.to_string())
        .expect("ring-ref");
    // The boot line is written before anybody attaches.
    console_write(&guest, &page, port, b"Linux version 6.1 (stand-in)\r\n");
    let log = toolstack::sim::SimPaths::new(host.path()).console_log(d);
    wait_until("the console log", || {
        std::fs::read(&log).is_ok_and(|l| l.ends_with(b"(stand-in)\r\n"))
    });

    // `rxl console` attaches afterwards and shows it: it waited in the pty.
    let mut child = host
        .command(&["console", "talk"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rxl console");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut seen = Vec::new();
    read_until(&rx, &mut seen, "Linux version 6.1 (stand-in)");
    // Output written while attached arrives too.
    console_write(&guest, &page, port, b"login: ");
    read_until(&rx, &mut seen, "login: ");

    // What is typed goes into the guest's `in` queue.
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"root\n").expect("type");
    stdin.flush().expect("flush");
    const IN_PROD: usize = 3076;
    wait_until("input in the ring", || {
        page.read::<u32>(IN_PROD).is_ok_and(|p| p >= 5)
    });
    assert_eq!(page.to_vec(0, 5).expect("read"), b"root\n");
    assert_eq!(
        std::fs::read(&log).expect("log"),
        b"Linux version 6.1 (stand-in)\r\nlogin: ",
        "the log holds the guest's output, and only that"
    );

    // The console ends with the domain.
    drop(stdin);
    drop(mapping);
    host.ok(&["destroy", "talk"]);
    let out = child.wait_with_output().expect("rxl console");
    reader.join().expect("reader");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn the_console_prefers_grant_0_and_ignores_corrupt_indices() {
    let host = SimHost::new(2048, 512);
    let d = create(&host, "gcon", "pvh");
    let dom = format!("/local/domain/{d}");
    let port = u32::try_from(num(&host, &format!("{dom}/console/port"))).expect("port");
    let store = num(&host, &format!("{dom}/store/ring-ref"));
    let (granted_frame, named_frame) = (store - 2, store - 1);
    let guest = Guest::new(&host, d);
    guest.grant(0, granted_frame);
    let granted = guest.map(granted_frame);
    let named = guest.map(named_frame);
    let dom0 = xs(&host);
    let tty_node = format!("{dom}/console/tty");
    let watch = dom0.watch(&tty_node).expect("watch");
    dom0.write(&format!("{dom}/console/ring-ref"), named_frame.to_string())
        .expect("ring-ref");
    let tty = loop {
        let t = dom0
            .read_string_opt(&tty_node)
            .expect("read")
            .unwrap_or_default();
        if !t.is_empty() {
            break t;
        }
        watch
            .next_event_timeout(STUCK)
            .expect("watch")
            .expect("a tty");
    };
    let log = toolstack::sim::SimPaths::new(host.path()).console_log(d);

    // Written on the page named by ring-ref: not the console.
    console_write(&guest, &named.slice(), port, b"wrong page\r\n");
    // Corrupt indices on the granted page are ignored ...
    const OUT_PROD: usize = 3084;
    granted.slice().write(OUT_PROD, &5000u32).expect("write");
    guest.notify(port);
    let daemon_log = host.path().join("xenstored.log");
    wait_until("the daemon to see the corrupt index", || {
        std::fs::read_to_string(&daemon_log)
            .is_ok_and(|l| l.contains(&format!("domain {d}: console: output producer 0x1388")))
    });
    // ... until the guest writes sanely again.
    granted.slice().write(OUT_PROD, &0u32).expect("write");
    console_write(&guest, &granted.slice(), port, b"right page\r\n");
    wait_until("the console log", || {
        std::fs::read(&log).is_ok_and(|l| l.ends_with(b"right page\r\n"))
    });
    assert_eq!(std::fs::read(&log).expect("log"), b"right page\r\n");
    // The pty holds it too.
    let mut f = std::fs::File::open(&tty).expect("open the pty");
    let mut buf = [0u8; 64];
    let n = f.read(&mut buf).expect("read the pty");
    assert_eq!(&buf[..n], b"right page\r\n");
}
