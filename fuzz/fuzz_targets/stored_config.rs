//! Arbitrary bytes as a stored domain config document: decoding never panics, and a document
//! that decodes encodes to one that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolstack::config::stored::StoredConfig;

fuzz_target!(|data: &[u8]| {
    // The smallest document that can decode is far longer than this.
    if data.len() < 16 {
        return;
    }
    let Ok(stored) = StoredConfig::from_json(data) else {
        return;
    };
    let json = stored.to_json();
    let again = StoredConfig::from_json(&json).expect("an encoded document decodes");
    assert_eq!(again, stored);
    assert_eq!(again.to_json(), json, "encoding is deterministic");
});
