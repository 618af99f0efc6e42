//! Arbitrary hypercalls through the simulated hypervisor's dispatcher: arbitrary argument bytes
//! in pool memory, arbitrary sub-ops, and arbitrary addresses (which must get EFAULT unless they
//! lie in pool memory). The simulator must never panic, and a hypercall must never touch memory
//! outside the buffer it was given.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use xenctrl::abi::{
    __HYPERVISOR_domctl, __HYPERVISOR_event_channel_op, __HYPERVISOR_memory_op,
    __HYPERVISOR_sysctl, __HYPERVISOR_xen_version,
};
use xenctrl::bench_support::raw_hypercall;
use xenctrl::{SimConfig, XenCtrl};

const OPS: [u64; 6] = [
    __HYPERVISOR_domctl,
    __HYPERVISOR_sysctl,
    __HYPERVISOR_memory_op,
    __HYPERVISOR_xen_version,
    __HYPERVISOR_event_channel_op,
    0xdead,
];

/// Bytes around the argument buffer that no hypercall may change.
const GUARD: usize = 64;

fn xc() -> &'static XenCtrl {
    static XC: OnceLock<XenCtrl> = OnceLock::new();
    XC.get_or_init(|| {
        XenCtrl::simulated(SimConfig {
            total_mib: 2048,
            dom0_mib: 512,
            ..Default::default()
        })
        .expect("simulated host")
    })
}

fuzz_target!(|data: &[u8]| {
    // [op selector][mode][cmd: 8 bytes][argument bytes...]
    let [sel, mode, rest @ ..] = data else { return };
    let Some((cmd, arg)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let op = OPS[usize::from(*sel) % OPS.len()];
    let cmd = u64::from_le_bytes(*cmd);
    let xc = xc();

    // The argument sits between two guard zones in one pool buffer.
    let len = arg.len().min(8192);
    // At least as big as the largest fixed-size argument Xen writes (the 1024-byte
    // capabilities string), so a short input cannot make a correct write overrun.
    let mut buf = xc
        .pool()
        .alloc_slice::<u8>(GUARD + len.max(1024) + GUARD)
        .unwrap();
    buf[GUARD..GUARD + len].copy_from_slice(&arg[..len]);
    buf[..GUARD].fill(0xa5);
    let tail = buf.len() - GUARD;
    buf[tail..].fill(0x5a);
    let addr = buf.addr() + GUARD as u64;

    let target = match mode % 4 {
        // In pool memory: the normal case.
        0 | 1 => addr,
        // A wild address, taken from the input: must be EFAULT unless it is pool memory.
        2 => cmd.rotate_left(17),
        // Null.
        _ => 0,
    };
    let args = match op {
        x if x == __HYPERVISOR_domctl || x == __HYPERVISOR_sysctl => [target, 0, 0, 0, 0],
        _ => [cmd & 0xff, target, 0, 0, 0],
    };
    // SAFETY: the simulator only reads and writes through addresses inside pool memory it
    // registered; a wild address is refused with EFAULT before any access.
    let _ = unsafe { raw_hypercall(xc, op, args) };

    // Guest handles inside the argument come from the input and may legitimately point
    // anywhere in pool memory, the guards included; only check the guards when no handle
    // could have pointed at them.
    let handles_possible = op == __HYPERVISOR_sysctl || op == __HYPERVISOR_memory_op;
    if !handles_possible {
        assert!(
            buf[..GUARD].iter().all(|&b| b == 0xa5),
            "a hypercall wrote before its argument"
        );
        assert!(
            buf[tail..].iter().all(|&b| b == 0x5a),
            "a hypercall wrote past its argument"
        );
    }
});
