//! Arbitrary hypercalls through the simulated hypervisor's dispatcher: arbitrary argument bytes
//! in pool memory, arbitrary sub-ops, and arbitrary addresses (which must get EFAULT unless they
//! lie in the argument buffer). The simulator must never panic, and a hypercall must never touch
//! memory outside the buffer it was given, not even other pool memory.
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

    // The argument, in a pool buffer at least as big as the largest fixed-size argument Xen
    // writes (the 1024-byte capabilities string), so a short input cannot make a correct write
    // overrun. Another pool buffer stands for the rest of the caller's memory.
    let len = arg.len().min(8192);
    let mut arena = xc.pool().alloc_slice::<u8>(len.max(1024)).unwrap();
    arena[..len].copy_from_slice(&arg[..len]);
    let mut other = xc.pool().alloc_slice::<u8>(GUARD).unwrap();
    other.fill(0xa5);
    let addr = arena.addr();

    let target = match mode % 4 {
        // In the argument: the normal case.
        0 | 1 => addr,
        // A wild address, taken from the input: EFAULT unless it falls in the argument.
        2 => cmd.rotate_left(17),
        // Another live pool buffer: EFAULT, though it is pool memory.
        _ => other.addr(),
    };
    let args = match op {
        x if x == __HYPERVISOR_domctl || x == __HYPERVISOR_sysctl => [target, 0, 0, 0, 0],
        _ => [cmd & 0xff, target, 0, 0, 0],
    };
    // The call reaches only `arena`: the simulator answers EFAULT for any address outside it
    // (the other buffer, the stack), whatever the input says, guest handles inside the
    // argument included.
    let _ = raw_hypercall(xc, op, args, &mut arena);
    assert!(
        other.iter().all(|&b| b == 0xa5),
        "a hypercall wrote outside its argument"
    );
});
