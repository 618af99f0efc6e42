//! The xenstore ring transport fed by a hostile guest: the fuzzer plays the guest, writing
//! request bytes through its end of the ring, reading replies, poking any index or field of
//! the shared page, asking for reconnections, while dom0 writes nodes that fire the guest's
//! watches. Nothing may panic; a pump that fails leaves the ring marked broken and the
//! connection ignored; the daemon's queued output stays within its bound; while the guest
//! keeps to the protocol's indices, every byte it reads parses as whole, well-formed messages;
//! the tree stays consistent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstore::server::ring::{offsets, GuestEnd, MemPage, RingConnection, SharedPage, XsRing};
use xenstore::server::{Binding, Core, Quotas};
use xenstore::wire::{self, MsgType};

/// Fields the fuzzer may overwrite.
const FIELDS: [usize; 7] = [
    offsets::REQ_CONS,
    offsets::REQ_PROD,
    offsets::RSP_CONS,
    offsets::RSP_PROD,
    offsets::SERVER_FEATURES,
    offsets::CONNECTION,
    offsets::ERROR,
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let quotas = Quotas {
        nodes_per_domain: 64,
        output_per_connection: 8 * 1024,
        ..Quotas::default()
    };
    let limit = quotas.output_per_connection;
    let mut core = Core::new(quotas);
    if core.introduce_domain(1).is_err() {
        return;
    }
    let Ok(conn) = core.add_connection(Binding::Domain(1)) else {
        return;
    };
    let Ok(dom0) = core.add_connection(Binding::Socket) else {
        return;
    };
    let page = MemPage::new();
    let Ok(ring) = XsRing::attach(page.clone()) else {
        return;
    };
    let mut ring = RingConnection::new(ring, conn);
    let mut guest = GuestEnd::new(page.clone());
    // Whether the guest kept to the protocol's indices since the last (re)connection, and the
    // reply bytes it read since then.
    let mut honest = true;
    let mut replies: Vec<u8> = Vec::new();

    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        let len = (usize::from(op >> 3) * 13 + 1).min(tail.len());
        let (arg, tail) = tail.split_at(len);
        rest = tail;
        match op & 7 {
            // Request bytes, through the guest's end.
            0 | 1 => {
                let _ = guest.write(arg);
            }
            // Read replies.
            2 => {
                let mut buf = vec![0u8; usize::from(arg.first().copied().unwrap_or(0)) * 8 + 1];
                if let Ok(n) = guest.read(&mut buf) {
                    replies.extend_from_slice(&buf[..n]);
                }
            }
            // Poke a field of the page.
            3 => {
                if let (Some(&which), Some(v)) = (arg.first(), arg.get(1..5)) {
                    let v = u32::from_ne_bytes([v[0], v[1], v[2], v[3]]);
                    page.write_u32(FIELDS[usize::from(which) % FIELDS.len()], v);
                    honest = false;
                }
            }
            // Poke the queues' bytes anywhere.
            4 => {
                if let Some((&at, bytes)) = arg.split_first() {
                    let at = usize::from(at) * 8 % 2048;
                    let bytes = &bytes[..bytes.len().min(64)];
                    page.write_bytes(at, bytes);
                    // Scribbling over replies not yet read garbles what the guest reads next.
                    honest &= at + bytes.len() <= offsets::RSP;
                }
            }
            // Ask for a reconnection.
            5 => guest.request_reconnect(),
            // dom0 writes under the domain's home (firing its watches, if it may read).
            6 => {
                let path = format!("/local/domain/1/{}\0", arg.len() % 5);
                if let Ok(msg) = wire::encode(MsgType::Write, 0, 0, &[path.as_bytes(), arg]) {
                    let _ = core.receive(dom0, &msg);
                }
                let n = core.output(dom0).len();
                core.consume_output(dom0, n);
            }
            // Pump.
            _ => {}
        }
        let _ = core.take_dirty();
        match ring.pump(&mut core) {
            Ok(_) => {}
            Err(_) => {
                assert_ne!(page.read_u32(offsets::ERROR), 0, "a broken ring says so");
                assert!(core.is_ignored(conn));
            }
        }
        if op & 7 == 5 && guest.reconnected() {
            // The daemon reset the ring: both streams start afresh.
            honest = true;
            replies.clear();
        }
        assert!(
            core.output(conn).len() <= limit + 2 * (wire::HEADER_LEN + wire::PAYLOAD_MAX),
            "{}",
            core.output(conn).len()
        );
        if honest {
            // Everything read so far is a run of whole messages, possibly with a partial one
            // at the end.
            let mut at = &replies[..];
            while let Ok(Some(f)) = wire::parse_frame(at) {
                if f.header.ty == MsgType::Error {
                    assert!(wire::one_arg(f.payload).is_some());
                }
                at = &at[f.wire_len()..];
            }
            assert!(
                wire::parse_frame(at).is_ok(),
                "the daemon sent a malformed header"
            );
        }
    }
    if let Err(e) = core.check() {
        panic!("tree inconsistent: {e}");
    }
});
