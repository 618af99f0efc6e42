//! The xenstore ring transport on ordinary memory: a guest's requests and the daemon's replies
//! through the two queues (whole, split, across the wrap), watch events into the ring,
//! permissions of the ring's domain, hostile indices and lengths, reconnection; and a whole
//! [`Server`] serving rings through a connector, from introduction to release.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};
use xenstore::perms::{Access, Permissions};
use xenstore::server::ring::{
    offsets, Doorbell, GuestEnd, GuestRing, MemPage, Queue, RingConnection, RingConnector,
    RingError, SharedPage, XsRing, CONNECTED, FEATURE_ERROR, FEATURE_RECONNECTION,
};
use xenstore::server::{Binding, ConnId, Core, Quotas, Server};
use xenstore::wire::{self, Header, MsgType, HEADER_LEN, PAYLOAD_MAX};
use xenstore::{Errno, ReadOpt};

const DOMID: u32 = 5;

/// A core with domain 5 introduced and its ring on an in-memory page, plus a privileged
/// socket connection standing for dom0's tools.
struct Fixture {
    core: Core,
    ring: RingConnection<MemPage>,
    guest: GuestEnd<MemPage>,
    dom0: ConnId,
}

impl Fixture {
    fn new() -> Self {
        Self::with_quotas(Quotas::default())
    }

    fn with_quotas(q: Quotas) -> Self {
        let mut core = Core::new(q);
        core.introduce_domain(DOMID).unwrap();
        let page = MemPage::new();
        let conn = core.add_connection(Binding::Domain(DOMID)).unwrap();
        let ring = RingConnection::new(XsRing::attach(page.clone()).unwrap(), conn);
        let dom0 = core.add_connection(Binding::Socket).unwrap();
        Fixture {
            core,
            ring,
            guest: GuestEnd::new(page),
            dom0,
        }
    }

    fn pump(&mut self) -> Result<bool, RingError> {
        let mut notify = false;
        loop {
            let p = self.ring.pump(&mut self.core)?;
            notify |= p.notify;
            if !p.more {
                return Ok(notify);
            }
        }
    }

    /// Sends one request (it must fit the free space) and pumps.
    fn request(&mut self, ty: MsgType, req_id: u32, parts: &[&[u8]]) {
        let msg = wire::encode(ty, req_id, 0, parts).unwrap();
        assert_eq!(
            self.guest.write(&msg).unwrap(),
            msg.len(),
            "the request fits"
        );
        assert!(self.pump().unwrap(), "the daemon notifies after serving");
    }

    /// Every whole message waiting in the response queue.
    fn replies(&mut self) -> Vec<(Header, Vec<u8>)> {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = self.guest.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
            // Reading made room: let the daemon write more.
            self.pump().unwrap();
        }
        let mut out = Vec::new();
        let mut rest = &bytes[..];
        while let Some(f) = wire::parse_frame(rest).unwrap() {
            out.push((f.header, f.payload.to_vec()));
            rest = &rest[f.wire_len()..];
        }
        assert!(
            rest.is_empty(),
            "only whole messages: {} bytes left",
            rest.len()
        );
        out
    }

    fn one_reply(&mut self) -> (Header, Vec<u8>) {
        let mut r = self.replies();
        assert_eq!(r.len(), 1, "{r:?}");
        r.remove(0)
    }

    /// dom0's tools write a node, over their socket connection.
    fn dom0_write(&mut self, path: &str, value: &str) {
        let msg = wire::encode(
            MsgType::Write,
            1,
            0,
            &[path.as_bytes(), b"\0", value.as_bytes()],
        )
        .unwrap();
        self.core.receive(self.dom0, &msg).unwrap();
        let out = self.core.output(self.dom0).to_vec();
        let f = wire::parse_frame(&out).unwrap().unwrap();
        assert_eq!(f.header.ty, MsgType::Write, "dom0's write: {:?}", f.payload);
        self.core.consume_output(self.dom0, out.len());
    }

    fn dom0_perms(&mut self, path: &str) -> Vec<u8> {
        let msg = wire::encode(MsgType::GetPerms, 2, 0, &[path.as_bytes(), b"\0"]).unwrap();
        self.core.receive(self.dom0, &msg).unwrap();
        let out = self.core.output(self.dom0).to_vec();
        let f = wire::parse_frame(&out).unwrap().unwrap();
        let p = f.payload.to_vec();
        self.core.consume_output(self.dom0, out.len());
        p
    }
}

fn error_name(payload: &[u8]) -> &str {
    std::str::from_utf8(wire::one_arg(payload).unwrap()).unwrap()
}

#[test]
fn a_request_round_trips_as_the_domain_with_its_ownership() {
    let mut f = Fixture::new();
    // Relative paths are under /local/domain/5; the domain may create there only where dom0
    // let it, as any guest connection.
    f.dom0_write("/local/domain/5/data", "");
    let perms = format!("n{DOMID}\0");
    let msg = wire::encode(
        MsgType::SetPerms,
        1,
        0,
        &[b"/local/domain/5/data\0", perms.as_bytes()],
    )
    .unwrap();
    f.core.receive(f.dom0, &msg).unwrap();
    let n = f.core.output(f.dom0).len();
    f.core.consume_output(f.dom0, n);

    f.request(
        MsgType::Write,
        41,
        &[b"data/greeting\0", b"hello from the ring"],
    );
    let (h, p) = f.one_reply();
    assert_eq!((h.ty, h.req_id, h.tx_id), (MsgType::Write, 41, 0));
    assert_eq!(p, b"OK\0");
    // The node belongs to the domain (created under a node it owns).
    assert_eq!(f.dom0_perms("/local/domain/5/data/greeting"), b"n5\0");

    f.request(MsgType::Read, 42, &[b"/local/domain/5/data/greeting\0"]);
    let (h, p) = f.one_reply();
    assert_eq!((h.ty, h.req_id), (MsgType::Read, 42));
    assert_eq!(p, b"hello from the ring");

    // An unprivileged domain: dom0's nodes are hidden, privileged requests refused.
    f.dom0_write("/local/domain/0/secret", "x");
    f.request(MsgType::Read, 43, &[b"/local/domain/0/secret\0"]);
    let (h, p) = f.one_reply();
    assert_eq!((h.ty, error_name(&p)), (MsgType::Error, "EACCES"));
    f.request(MsgType::Release, 44, &[b"7\0"]);
    let (h, p) = f.one_reply();
    assert_eq!((h.ty, error_name(&p)), (MsgType::Error, "EACCES"));
    // And writing where it has no permission fails.
    f.request(MsgType::Write, 45, &[b"/tool/x\0", b"y"]);
    let (h, p) = f.one_reply();
    assert_eq!((h.ty, error_name(&p)), (MsgType::Error, "EACCES"));
}

#[test]
fn messages_split_anywhere_and_across_the_wrap_arrive_whole() {
    let mut f = Fixture::new();
    f.dom0_write("/local/domain/5/d", "");
    let perms = format!("b{DOMID}\0");
    let msg = wire::encode(
        MsgType::SetPerms,
        1,
        0,
        &[b"/local/domain/5/d\0", perms.as_bytes()],
    )
    .unwrap();
    f.core.receive(f.dom0, &msg).unwrap();
    let n = f.core.output(f.dom0).len();
    f.core.consume_output(f.dom0, n);

    // Seeded sizes and split points; the stream goes several times round both queues.
    let seed = 0x5eed_0001_u64;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut expect = Vec::new();
    for i in 0..40u32 {
        let len = rng.usize(1..900);
        let value: Vec<u8> = (0..len).map(|_| rng.u8(b'a'..=b'z')).collect();
        let path = format!("d/n{i}\0");
        let msg = wire::encode(MsgType::Write, i, 0, &[path.as_bytes(), &value]).unwrap();
        // In two pieces, pumping in between: the daemon sees a partial message first.
        let cut = rng.usize(0..=msg.len());
        for piece in [&msg[..cut], &msg[cut..]] {
            let mut rest = piece;
            while !rest.is_empty() {
                let n = f.guest.write(rest).unwrap();
                rest = &rest[n..];
                f.pump().unwrap();
            }
        }
        let (h, p) = f.one_reply();
        assert_eq!(
            (h.ty, h.req_id, p.as_slice()),
            (MsgType::Write, i, &b"OK\0"[..]),
            "seed {seed:#x}"
        );
        expect.push((i, value));
    }
    // Read them back, many requests queued at once: their replies exceed the response queue
    // and arrive as the guest makes room.
    let mut batch = Vec::new();
    for (i, _) in &expect {
        let path = format!("d/n{i}\0");
        batch.extend(wire::encode(MsgType::Read, 1000 + i, 0, &[path.as_bytes()]).unwrap());
    }
    let mut got = Vec::new();
    let mut rest = &batch[..];
    let mut buf = [0u8; 1024];
    let mut bytes = Vec::new();
    while !rest.is_empty() || got.len() < expect.len() {
        let n = f.guest.write(rest).unwrap();
        rest = &rest[n..];
        f.pump().unwrap();
        let n = f.guest.read(&mut buf).unwrap();
        bytes.extend_from_slice(&buf[..n]);
        while let Some(fr) = wire::parse_frame(&bytes).unwrap() {
            got.push((fr.header.req_id, fr.payload.to_vec()));
            let l = fr.wire_len();
            bytes.drain(..l);
        }
        f.pump().unwrap();
    }
    for ((id, value), (rid, payload)) in expect.iter().zip(&got) {
        assert_eq!(*rid, 1000 + id, "replies in order (seed {seed:#x})");
        assert_eq!(payload, value, "seed {seed:#x}");
    }
}

#[test]
fn watch_events_go_into_the_ring() {
    let mut f = Fixture::new();
    // As the toolstack makes it: dom0's, readable by the domain (events are sent only for
    // nodes the watcher may read).
    f.dom0_write("/local/domain/5/control", "");
    let msg = wire::encode(
        MsgType::SetPerms,
        1,
        0,
        &[b"/local/domain/5/control\0", b"n0\0r5\0"],
    )
    .unwrap();
    f.core.receive(f.dom0, &msg).unwrap();
    let n = f.core.output(f.dom0).len();
    f.core.consume_output(f.dom0, n);
    f.request(MsgType::Watch, 1, &[b"/local/domain/5/control\0", b"tok\0"]);
    let r = f.replies();
    // The reply, then the watch's first event.
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(
        (r[0].0.ty, r[0].1.as_slice()),
        (MsgType::Watch, &b"OK\0"[..])
    );
    assert_eq!(r[1].0.ty, MsgType::WatchEvent);
    assert_eq!(r[1].1, b"/local/domain/5/control\0tok\0");
    // dom0 writes below the watched node: the event reaches the ring once pumped (a server
    // pumps every connection the core marks dirty).
    f.dom0_write("/local/domain/5/control/shutdown", "poweroff");
    assert!(f.pump().unwrap());
    let (h, p) = f.one_reply();
    assert_eq!(h.ty, MsgType::WatchEvent);
    let ev = wire::parse_watch_event(&p).unwrap();
    assert_eq!(ev.path, b"/local/domain/5/control/shutdown");
    assert_eq!(ev.token, b"tok");
}

#[test]
fn a_producer_index_that_jumps_breaks_the_ring_with_ringidx() {
    let mut f = Fixture::new();
    let page = f.guest.page().clone();
    page.write_u32(offsets::REQ_PROD, 5000);
    let e = f.pump().unwrap_err();
    assert!(
        matches!(
            e,
            RingError::Index {
                queue: Queue::Request,
                cons: 0,
                prod: 5000
            }
        ),
        "{e:?}"
    );
    assert_eq!(f.guest.error(), 2, "XENSTORE_ERROR_RINGIDX");
    assert!(f.core.is_ignored(f.ring.conn()));
    // Nothing more is served, and pumping a broken ring is quiet.
    page.write_u32(offsets::REQ_PROD, 0);
    let mut g = GuestEnd::new(page.clone());
    g.write(&wire::encode(MsgType::Read, 1, 0, &[b"domid\0"]).unwrap())
        .unwrap();
    assert!(!f.pump().unwrap());
    assert_eq!(page.read_u32(offsets::REQ_CONS), 0, "nothing consumed");
    assert_eq!(page.read_u32(offsets::RSP_PROD), 0, "nothing answered");
}

#[test]
fn a_consumer_index_ahead_of_our_replies_breaks_the_ring() {
    let mut f = Fixture::new();
    f.request(MsgType::GetDomainPath, 1, &[b"5\0"]);
    let page = f.guest.page().clone();
    // Not read yet; the guest claims to have consumed 2000 bytes.
    page.write_u32(offsets::RSP_CONS, 2000);
    f.dom0_write("/x", "1");
    f.request_raw_and_expect_error(RingError::Index {
        queue: Queue::Response,
        cons: 2000,
        prod: page.read_u32(offsets::RSP_PROD),
    });
    assert_eq!(f.guest.error(), 2);
}

impl Fixture {
    fn request_raw_and_expect_error(&mut self, want: RingError) {
        let msg = wire::encode(MsgType::Read, 9, 0, &[b"domid\0"]).unwrap();
        self.guest.write(&msg).unwrap();
        assert_eq!(self.pump().unwrap_err(), want);
    }
}

#[test]
fn a_payload_over_the_limit_breaks_the_ring_with_proto_without_waiting_for_it() {
    let mut f = Fixture::new();
    let hdr = Header {
        ty: MsgType::Write,
        req_id: 1,
        tx_id: 0,
        len: u32::try_from(PAYLOAD_MAX).unwrap() + 1,
    };
    // Only the header: the daemon must not wait for (or allocate) 4097 bytes.
    f.guest.write(&hdr.to_bytes()).unwrap();
    let e = f.pump().unwrap_err();
    assert!(matches!(e, RingError::Protocol(_)), "{e:?}");
    assert_eq!(f.guest.error(), 3, "XENSTORE_ERROR_PROTO");
    assert!(f.core.is_ignored(f.ring.conn()));

    // A huge length is the same.
    let mut f = Fixture::new();
    let hdr = Header {
        len: u32::MAX,
        ..hdr
    };
    f.guest.write(&hdr.to_bytes()).unwrap();
    assert!(matches!(f.pump().unwrap_err(), RingError::Protocol(_)));
}

#[test]
fn a_message_of_exactly_the_limit_is_served() {
    let mut f = Fixture::new();
    // 4096 bytes of payload: path "/local/domain/5/x\0" and a value filling the rest. The
    // value is too long for the node-size quota, which is an error reply, not a broken ring.
    let path = b"/local/domain/5/x\0";
    let value = vec![b'v'; PAYLOAD_MAX - path.len()];
    let msg = wire::encode(MsgType::Write, 3, 0, &[path, &value]).unwrap();
    assert_eq!(msg.len(), HEADER_LEN + PAYLOAD_MAX);
    let mut rest = &msg[..];
    while !rest.is_empty() {
        let n = f.guest.write(rest).unwrap();
        rest = &rest[n..];
        f.pump().unwrap();
    }
    let (h, p) = f.one_reply();
    assert_eq!(h.req_id, 3);
    assert_eq!((h.ty, error_name(&p)), (MsgType::Error, "EACCES"));
    assert_eq!(f.guest.error(), 0);
}

#[test]
fn reconnection_resets_a_broken_ring_and_drops_watches() {
    let mut f = Fixture::new();
    f.request(MsgType::Watch, 1, &[b"/local/domain/5/w\0", b"t\0"]);
    assert_eq!(f.replies().len(), 2);
    // Break it.
    let hdr = Header {
        ty: MsgType::Read,
        req_id: 2,
        tx_id: 0,
        len: 99_999,
    };
    f.guest.write(&hdr.to_bytes()).unwrap();
    assert!(f.pump().is_err());
    assert_eq!(f.guest.error(), 3);
    // The guest asks for a fresh connection.
    f.guest.request_reconnect();
    assert!(f.pump().unwrap(), "the daemon notifies once reconnected");
    assert!(f.guest.reconnected());
    let page = f.guest.page().clone();
    assert_eq!(page.read_u32(offsets::CONNECTION), CONNECTED);
    assert_eq!(page.read_u32(offsets::ERROR), 0);
    for off in [
        offsets::REQ_CONS,
        offsets::REQ_PROD,
        offsets::RSP_CONS,
        offsets::RSP_PROD,
    ] {
        assert_eq!(page.read_u32(off), 0, "offset {off}");
    }
    assert!(!f.core.is_ignored(f.ring.conn()));
    // Served again; the old watch is gone.
    f.request(MsgType::GetDomainPath, 3, &[b"5\0"]);
    let (h, p) = f.one_reply();
    assert_eq!((h.req_id, p.as_slice()), (3, &b"/local/domain/5\0"[..]));
    f.dom0_write("/local/domain/5/w", "x");
    f.pump().unwrap();
    assert!(
        f.replies().is_empty(),
        "the watch went with the reconnection"
    );
}

#[test]
fn a_guest_that_never_reads_replies_costs_bounded_memory() {
    let mut f = Fixture::with_quotas(Quotas {
        output_per_connection: 8 * 1024,
        ..Quotas::default()
    });
    let req = wire::encode(MsgType::GetDomainPath, 1, 0, &[b"5\0"]).unwrap();
    // Far more requests than the response queue and the output bound hold.
    let mut sent = 0;
    for _ in 0..2000 {
        let n = f.guest.write(&req).unwrap();
        f.pump().unwrap();
        if n < req.len() {
            break;
        }
        sent += 1;
    }
    // The daemon stopped reading requests once its output passed the bound: the request
    // queue filled up and stays full.
    assert!(sent < 2000, "the daemon applied back-pressure");
    let queued = f.core.output(f.ring.conn()).len();
    assert!(queued <= 8 * 1024 + HEADER_LEN + PAYLOAD_MAX, "{queued}");
    // Reading drains everything, in order.
    let r = f.replies();
    assert!(r
        .iter()
        .all(|(h, p)| h.ty == MsgType::GetDomainPath && p == b"/local/domain/5\0"));
    assert!(
        r.len() >= sent,
        "{} replies for {sent} whole requests",
        r.len()
    );
}

// --- A whole server serving rings through a connector. ---

/// The host side of the test: the pages the connector "maps", the notifications it sends,
/// and how many rings were dropped (unmapped and unbound).
#[derive(Clone, Default)]
struct Host {
    pages: Arc<Mutex<HashMap<u32, MemPage>>>,
    refuse: Arc<Mutex<Option<Errno>>>,
    dropped: Arc<AtomicUsize>,
}

struct TestConnector {
    host: Host,
    events: Arc<EventFd>,
    notified: mpsc::Sender<u32>,
}

struct TestRing {
    page: MemPage,
    domid: u32,
    notified: mpsc::Sender<u32>,
    dropped: Arc<AtomicUsize>,
}

impl SharedPage for TestRing {
    fn size(&self) -> usize {
        self.page.size()
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        self.page.read_bytes(offset, out);
    }
    fn write_bytes(&self, offset: usize, data: &[u8]) {
        self.page.write_bytes(offset, data);
    }
    fn read_u32(&self, offset: usize) -> u32 {
        self.page.read_u32(offset)
    }
    fn write_u32(&self, offset: usize, value: u32) {
        self.page.write_u32(offset, value);
    }
}

impl Doorbell for TestRing {
    fn notify(&self) -> Result<(), Errno> {
        let _ = self.notified.send(self.domid);
        Ok(())
    }
}

impl Drop for TestRing {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl RingConnector for TestConnector {
    fn connect(&mut self, domid: u32, gfn: u64, port: u32) -> Result<Box<dyn GuestRing>, Errno> {
        assert_eq!(
            (gfn, port),
            (0xfeffc, 7),
            "the introduction's frame and port"
        );
        if let Some(e) = *self.host.refuse.lock().unwrap() {
            return Err(e);
        }
        let page = MemPage::new();
        self.host.pages.lock().unwrap().insert(domid, page.clone());
        Ok(Box::new(TestRing {
            page,
            domid,
            notified: self.notified.clone(),
            dropped: Arc::clone(&self.host.dropped),
        }))
    }
    fn events(&self) -> Option<BorrowedFd<'_>> {
        Some(self.events.as_fd())
    }
    fn take_events(&mut self) {
        let _ = self.events.read();
    }
    fn poll_interval(&self) -> Option<Duration> {
        None
    }
}

const WAIT: Duration = Duration::from_secs(10);

/// Waits for the daemon's next notification of `domid`'s ring.
fn notified(rx: &mpsc::Receiver<u32>, domid: u32) {
    loop {
        match rx.recv_timeout(WAIT) {
            Ok(d) if d == domid => return,
            Ok(_) => {}
            Err(e) => panic!("no notification for domain {domid}: {e}"),
        }
    }
}

/// Reads whole messages from the guest's end until `n` arrived, waiting on notifications.
fn receive(
    g: &mut GuestEnd<MemPage>,
    rx: &mpsc::Receiver<u32>,
    doorbell: &EventFd,
    n: usize,
) -> Vec<(Header, Vec<u8>)> {
    let mut bytes = Vec::new();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while out.len() < n {
        let got = g.read(&mut buf).unwrap();
        if got == 0 {
            notified(rx, DOMID);
            continue;
        }
        bytes.extend_from_slice(&buf[..got]);
        // We made room: ring the daemon's doorbell.
        doorbell.write(1).unwrap();
        while let Some(f) = wire::parse_frame(&bytes).unwrap() {
            out.push((f.header, f.payload.to_vec()));
            let l = f.wire_len();
            bytes.drain(..l);
        }
    }
    out
}

#[test]
fn a_server_serves_introduced_domains_rings_until_release() {
    let host = Host::default();
    let events =
        Arc::new(EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).unwrap());
    let (tx, rx) = mpsc::channel();
    let connector = TestConnector {
        host: host.clone(),
        events: Arc::clone(&events),
        notified: tx,
    };
    let running = Server::new()
        .unwrap()
        .serve_rings(Box::new(connector))
        .unwrap()
        .spawn()
        .unwrap();
    let dom0 = running.controller().client().unwrap();

    // Introducing connects the ring; the features are advertised before anything moves.
    dom0.introduce_domain(DOMID, 0xfeffc, 7).unwrap();
    assert!(dom0.is_domain_introduced(DOMID).unwrap());
    let page = host.pages.lock().unwrap()[&DOMID].clone();
    assert_eq!(
        page.read_u32(offsets::SERVER_FEATURES),
        FEATURE_RECONNECTION | FEATURE_ERROR
    );
    dom0.write("/local/domain/5/data", "").unwrap();
    dom0.set_perms(
        "/local/domain/5/data",
        &Permissions::new(DOMID, Access::NONE),
    )
    .unwrap();
    let watch = dom0.watch("/local/domain/5/data").unwrap();
    assert_eq!(
        watch.next_event_timeout(WAIT).unwrap().unwrap().path,
        "/local/domain/5/data"
    );

    // The guest: a watch and a write, through its ring, ringing the doorbell.
    let mut g = GuestEnd::new(page.clone());
    let mut req = wire::encode(MsgType::Watch, 1, 0, &[b"data\0", b"mine\0"]).unwrap();
    req.extend(wire::encode(MsgType::Write, 2, 0, &[b"data/booted\0", b"yes"]).unwrap());
    assert_eq!(g.write(&req).unwrap(), req.len());
    events.write(1).unwrap();
    let r = receive(&mut g, &rx, &events, 4);
    let kinds: Vec<(MsgType, u32)> = r.iter().map(|(h, _)| (h.ty, h.req_id)).collect();
    // The watch's reply and first event, the write's reply and the event it fired (the event
    // may come before or after the write's reply).
    assert_eq!(kinds[0], (MsgType::Watch, 1));
    assert!(kinds.contains(&(MsgType::Write, 2)), "{kinds:?}");
    let events_seen: Vec<&[u8]> = r
        .iter()
        .filter(|(h, _)| h.ty == MsgType::WatchEvent)
        .map(|(_, p)| p.as_slice())
        .collect();
    // Relative to the domain's home, as it registered the watch.
    assert_eq!(
        events_seen,
        [&b"data\0mine\0"[..], &b"data/booted\0mine\0"[..]]
    );
    // dom0 sees the node, owned by the domain, and its own watch fired.
    assert_eq!(dom0.read("/local/domain/5/data/booted").unwrap(), b"yes");
    assert_eq!(
        dom0.get_perms("/local/domain/5/data/booted")
            .unwrap()
            .owner(),
        DOMID
    );
    assert_eq!(
        watch.next_event_timeout(WAIT).unwrap().unwrap().path,
        "/local/domain/5/data/booted"
    );

    // A dom0 write fires the guest's watch into its ring, unasked.
    dom0.write("/local/domain/5/data/cmd", "go").unwrap();
    let r = receive(&mut g, &rx, &events, 1);
    assert_eq!(r[0].1, b"data/cmd\0mine\0");

    // Broken by the guest: reported in the page; the domain stays introduced.
    page.write_u32(
        offsets::REQ_PROD,
        page.read_u32(offsets::REQ_CONS).wrapping_add(4000),
    );
    events.write(1).unwrap();
    // Earlier notifications may still be queued: wait for the one after the error.
    while page.read_u32(offsets::ERROR) == 0 {
        notified(&rx, DOMID);
    }
    assert_eq!(page.read_u32(offsets::ERROR), 2);
    assert!(dom0.is_domain_introduced(DOMID).unwrap());

    // Release unmaps and unbinds.
    assert_eq!(host.dropped.load(Ordering::SeqCst), 0);
    dom0.release_domain(DOMID).unwrap();
    assert!(!dom0.is_domain_introduced(DOMID).unwrap());
    assert_eq!(host.dropped.load(Ordering::SeqCst), 1);
    assert_eq!(
        dom0.read_opt("/local/domain/5/data/booted").unwrap(),
        None,
        "its nodes went"
    );

    // A ring that cannot be connected: the introduction fails with the connector's errno.
    *host.refuse.lock().unwrap() = Some(Errno::ENOENT);
    let e = dom0.introduce_domain(6, 0xfeffc, 7).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::ENOENT), "{e}");
    assert!(!dom0.is_domain_introduced(6).unwrap());
    running.stop().unwrap();
}

#[test]
fn requests_after_an_introduction_wait_for_its_reply() {
    let host = Host::default();
    let events = Arc::new(EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap());
    let (tx, _rx) = mpsc::channel();
    let running = Server::new()
        .unwrap()
        .serve_rings(Box::new(TestConnector {
            host,
            events,
            notified: tx,
        }))
        .unwrap()
        .spawn()
        .unwrap();
    // Pipelined: the introduction, then a question about it, in one batch.
    let intro = wire::encode(MsgType::Introduce, 0, 0, &[b"5\0", b"1044476\0", b"7\0"]).unwrap();
    let asked = wire::encode(MsgType::IsDomainIntroduced, 0, 0, &[b"5\0"]).unwrap();
    let stream = running
        .controller()
        .connect_stream(Binding::Socket)
        .unwrap();
    use std::io::{Read, Write};
    (&stream).write_all(&[intro, asked].concat()).unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 256];
    let mut frames = Vec::new();
    while frames.len() < 2 {
        let n = (&stream).read(&mut buf).unwrap();
        assert!(n > 0);
        bytes.extend_from_slice(&buf[..n]);
        while let Some(f) = wire::parse_frame(&bytes).unwrap() {
            frames.push((f.header.ty, f.payload.to_vec()));
            let l = f.wire_len();
            bytes.drain(..l);
        }
    }
    assert_eq!(frames[0], (MsgType::Introduce, b"OK\0".to_vec()));
    assert_eq!(frames[1], (MsgType::IsDomainIntroduced, b"T\0".to_vec()));
    running.stop().unwrap();
}
