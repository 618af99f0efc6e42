//! The xenstored request handler fed arbitrary byte streams on three connections: a privileged
//! socket client, a guest bound to an introduced domain, and a guest whose domain gets
//! released. Nothing may panic; every byte the daemon sends must parse as well-formed messages;
//! output per connection stays within its bound; the tree stays consistent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstore::server::{Binding, ConnId, Core, Quotas};
use xenstore::wire::{self, MsgType};

fn drain(core: &mut Core, id: ConnId, limit: usize) {
    let out = core.output(id).to_vec();
    assert!(
        out.len() <= limit + 2 * (wire::HEADER_LEN + wire::PAYLOAD_MAX),
        "{}",
        out.len()
    );
    let mut rest = &out[..];
    while !rest.is_empty() {
        let f = wire::parse_frame(rest)
            .expect("daemon output is valid")
            .expect("whole frames");
        if f.header.ty == MsgType::Error {
            assert!(wire::one_arg(f.payload).is_some());
        }
        rest = &rest[f.wire_len()..];
    }
    core.consume_output(id, out.len());
}

fuzz_target!(|data: &[u8]| {
    let quotas = Quotas {
        nodes_per_domain: 64,
        output_per_connection: 16 * 1024,
        ..Quotas::default()
    };
    let limit = quotas.output_per_connection;
    let mut core = Core::new(quotas);
    if core.introduce_domain(1).is_err() || core.introduce_domain(2).is_err() {
        return;
    }
    let mut conns = vec![
        core.add_connection(Binding::Socket).expect("socket"),
        core.add_connection(Binding::Domain(1)).expect("dom1"),
        core.add_connection(Binding::Domain(2)).expect("dom2"),
    ];
    // Each chunk: one control byte (connection, length) then that many bytes of stream.
    let mut rest = data;
    while let Some((&ctl, tail)) = rest.split_first() {
        let which = usize::from(ctl % 4);
        let len = (usize::from(ctl >> 2) * 7 + 1).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        rest = tail;
        if which == 3 {
            // Lifecycle events interleaved with traffic.
            match chunk.first().map(|b| b % 3) {
                Some(0) => {
                    let _ = core.release_domain(2);
                }
                Some(1) => {
                    let _ = core.domain_shutdown(1);
                }
                _ => {
                    let _ = core.introduce_domain(2);
                }
            }
        } else {
            let id = conns[which];
            if core.receive(id, chunk).is_err() {
                core.remove_connection(id);
                let b = if which == 0 {
                    Binding::Socket
                } else {
                    Binding::Domain(which as u32)
                };
                match core.add_connection(b) {
                    Ok(n) => conns[which] = n,
                    Err(_) => conns[which] = core.add_connection(Binding::Socket).expect("socket"),
                }
            }
        }
        for id in core.take_closed() {
            if let Some(slot) = conns.iter_mut().find(|c| **c == id) {
                *slot = core.add_connection(Binding::Socket).expect("socket");
            }
        }
        let _ = core.take_dirty();
        for &id in &conns {
            drain(&mut core, id, limit);
            // Paused input resumes once output is drained.
            if core.wants_input(id) && core.has_pending_input(id) {
                let _ = core.process(id);
                drain(&mut core, id, limit);
            }
        }
    }
    if let Err(e) = core.check() {
        panic!("tree inconsistent: {e}");
    }
});
