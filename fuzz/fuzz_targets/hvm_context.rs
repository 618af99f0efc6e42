//! The HVM context decoder on arbitrary bytes: it gives an error or records, never panics, and
//! allocates no more than the input holds; what it accepts re-encodes to as many bytes and
//! decodes again to the same records.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xenctrl::hvm_context::HvmContext;

fuzz_target!(|data: &[u8]| {
    // The smallest blob is a HEADER (8 + 24 bytes) and an END (8).
    if data.len() < 40 {
        assert!(HvmContext::decode(data).is_err());
        return;
    }
    if let Ok(ctx) = HvmContext::decode(data) {
        let again = ctx.encode();
        assert_eq!(again.len(), data.len(), "a decoded context re-encodes to its size");
        assert_eq!(HvmContext::decode(&again).as_ref(), Ok(&ctx));
        assert!(ctx.header().is_some());
    }
});
