//! The xenstore wire codec on arbitrary bytes: frame parsing, payload string helpers, the reply
//! parsers a client applies to daemon output, permission strings and path rules. Nothing may
//! panic, and a parsed frame must re-encode to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstore::perms::{Perm, Permissions};
use xenstore::wire::{self, MsgType, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while rest.len() >= HEADER_LEN {
        let frame = match wire::parse_frame(rest) {
            Ok(Some(f)) => f,
            Ok(None) | Err(_) => break,
        };
        let h = frame.header;
        assert_eq!(MsgType::from_u32(h.ty.to_u32()), h.ty);
        let again = wire::encode(h.ty, h.req_id, h.tx_id, &[frame.payload]).expect("fits");
        assert_eq!(&again[..], &rest[..frame.wire_len()]);

        let p = frame.payload;
        let n = wire::strings(p).count();
        assert!(n <= wire::count_strings(p));
        if let Some(a) = wire::one_arg(p) {
            assert_eq!(a.len() + 1, p.len());
        }
        let _ = wire::errno_from_payload(p);
        let _ = wire::atou(p);
        let _ = wire::parse_watch_event(p);
        if let Some(part) = wire::parse_directory_part(p) {
            assert!(part.children.iter().all(|c| !c.contains(&0)));
        }
        let _ = Permissions::parse_strings(wire::strings(p));
        for s in wire::strings(p) {
            if let Ok(perm) = Perm::parse_bytes(s) {
                // Formatting and parsing agree.
                assert_eq!(perm.to_string().parse::<Perm>().ok(), Some(perm));
            }
            if let Ok(text) = std::str::from_utf8(s) {
                let valid = xenstore::path::is_valid(text);
                if valid {
                    assert!(text.starts_with('/'));
                    let parent = xenstore::path::parent(text);
                    assert!(xenstore::path::is_child(text, parent));
                }
            }
        }
        rest = &rest[frame.wire_len()..];
    }
});
