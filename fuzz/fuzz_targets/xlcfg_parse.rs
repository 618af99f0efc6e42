//! Arbitrary bytes as an xl.cfg file: parsing and interpreting never panic; a config that is
//! accepted renders to text that parses back to the same config, and survives the stored-config
//! JSON round trip. The bytes after the first NUL (if any) are also applied as a command-line
//! override.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolstack::config::stored::StoredConfig;
use toolstack::config::xlcfg::{self, XlConfig};

fuzz_target!(|data: &[u8]| {
    let (file, over) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Ok(mut cfg) = XlConfig::parse("fuzz.cfg", file) else {
        return;
    };
    if let Some(over) = over.and_then(|o| std::str::from_utf8(o).ok()) {
        if cfg.apply_override(over).is_err() {
            return;
        }
    }
    let Ok((dom, _warnings)) = cfg.to_domain_config() else {
        return;
    };
    dom.validate().expect("an accepted config is valid");
    let text = xlcfg::render(&dom);
    let (back, _) = XlConfig::parse("rendered.cfg", text.as_bytes())
        .and_then(|c| c.to_domain_config())
        .unwrap_or_else(|e| panic!("rendered config does not parse: {e}\n{text}"));
    assert_eq!(back, dom, "render/parse round trip\n{text}");
    let stored = StoredConfig::new(1, dom);
    assert_eq!(StoredConfig::from_json(&stored.to_json()).unwrap(), stored);
});
