//! Arbitrary bytes as every ABI struct (and the `*View` twin of each handle-bearing one): decoding
//! never panics, reads exactly the struct's size, and round-trips byte for byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenctrl::abi::*;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

fn roundtrip<T: FromBytes + IntoBytes + Immutable + KnownLayout>(data: &[u8]) -> Option<T> {
    let (value, _rest) = T::read_from_prefix(data).ok()?;
    assert_eq!(value.as_bytes(), &data[..size_of::<T>()]);
    Some(value)
}

fuzz_target!(|data: &[u8]| {
    if let Some(v) = roundtrip::<XenExtraversion>(data) {
        let _ = v.to_string_lossy();
    }
    if let Some(v) = roundtrip::<XenCapabilitiesInfo>(data) {
        let _ = v.to_string_lossy();
    }
    if let Some(v) = roundtrip::<XenChangesetInfo>(data) {
        let _ = v.to_string_lossy();
    }
    roundtrip::<XenArchDomainconfig>(data);
    roundtrip::<XenDomctlCreatedomain>(data);
    if let Some(v) = roundtrip::<XenDomctlGetdomaininfo>(data) {
        let _ = v.shutdown_reason();
    }
    roundtrip::<XenDomctlMaxMem>(data);
    roundtrip::<XenDomctlMaxVcpus>(data);
    roundtrip::<XenSysctlPhysinfo>(data);
    roundtrip::<XenSysctlGetdomaininfolistView>(data);
    roundtrip::<XenMemoryReservationView>(data);
    roundtrip::<EvtchnAllocUnbound>(data);
    roundtrip::<XenDomctlView>(data);
    roundtrip::<XenSysctlView>(data);
    if data.len() >= 4 {
        let _ = split_version(u64::from(u32::from_le_bytes([
            data[0], data[1], data[2], data[3],
        ])));
    }
});
