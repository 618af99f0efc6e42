//! Arbitrary text as an xl vif spec (xl-network-configuration(5)), the syntax vkb and channel
//! specs share, and as a channel spec: parsing never panics; a channel spec is a vif spec with
//! a name, `connection=pty` and a devid from 1; an accepted spec keeps its text and parses back
//! to the same value; its settings have trimmed, non-empty, distinct keys and a well-formed
//! MAC; and the settings rendered as `k=v,k=v` parse back to the same settings (display →
//! parse).
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolstack::config::VifSpec;

fuzz_target!(|data: &[u8]| {
    if data.len() > 4096 {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let channel = VifSpec::parse_channel(text);
    let Ok(vif) = VifSpec::parse(text) else {
        assert!(
            channel.is_err(),
            "a channel spec that is no vif spec: {text:?}"
        );
        return;
    };
    if let Ok(ch) = channel {
        // A channel is a vif-syntax spec with a name, a pty and a devid from 1.
        assert_eq!(ch, vif);
        assert!(ch.get("name").is_some_and(|n| !n.is_empty()));
        assert_eq!(ch.get("connection"), Some("pty"));
        assert!(ch
            .get("devid")
            .is_none_or(|d| d.parse::<u32>().is_ok_and(|n| n >= 1)));
    }
    assert_eq!(vif.spec, text);
    assert_eq!(VifSpec::parse(&vif.spec).as_ref(), Ok(&vif));
    let serialised: String = vif.clone().into();
    assert_eq!(VifSpec::try_from(serialised).as_ref(), Ok(&vif));
    for (i, (k, v)) in vif.settings.iter().enumerate() {
        assert!(!k.is_empty());
        assert_eq!(k.trim(), k);
        assert_eq!(v.trim(), v);
        assert!(!k.contains(',') && !v.contains(','));
        assert!(!k.contains('='), "key {k:?} holds the separator");
        assert!(vif.settings[..i].iter().all(|(kk, _)| kk != k), "{k} twice");
        assert_eq!(vif.get(k), Some(v.as_str()));
    }
    if let Some(mac) = vif.mac() {
        let bytes: Vec<&str> = mac.split(':').collect();
        assert_eq!(bytes.len(), 6, "{mac:?}");
        assert!(bytes
            .iter()
            .all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok()));
    }
    let rendered = vif
        .settings
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let again = VifSpec::parse(&rendered)
        .unwrap_or_else(|e| panic!("{rendered:?} (rendered from {text:?}) is refused: {e}"));
    assert_eq!(again.settings, vif.settings, "{rendered:?}");
});
