//! Arbitrary bytes as a stored domain config document: decoding never panics, and a document
//! that decodes encodes to one that decodes to the same value. libxl's document made from it
//! (the `libxl-json` userdata) is JSON naming the same domain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolstack::config::libxl::LibxlDomainConfig;
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

    let uuid = stored.config.uuid.unwrap_or_default();
    let doc = LibxlDomainConfig::new(&stored.config, uuid).to_userdata();
    let text = doc.strip_suffix(b"\0").expect("NUL-terminated, as libxl stores it");
    assert!(!text.contains(&0), "no NUL inside: libxl reads up to the first");
    let v: serde_json::Value = serde_json::from_slice(text).expect("libxl-json is JSON");
    assert_eq!(v["c_info"]["name"], stored.config.name.as_str());
    assert_eq!(v["b_info"]["max_memkb"], stored.config.maxmem_kib);
});
