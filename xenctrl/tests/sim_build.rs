//! The simulator records what a domain builder set, for a later structural boot checker to
//! read through `SimHypervisor::with_state`, and a persistent simulated host keeps it across
//! handles (processes).

use std::sync::Arc;

use xenctrl::abi::*;
use xenctrl::hvm_context::{HvmContext, HvmRecord};
use xenctrl::{CreateDomain, Errno, HvmParam, SimConfig, SimHypervisor, TscInfo, TscMode, XenCtrl};
use zerocopy::IntoBytes;

fn pv_context(l4: u64) -> VcpuGuestContext {
    let mut c = VcpuGuestContext::zeroed();
    c.flags = VGCF_in_kernel | VGCF_online;
    c.user_regs.rip = 0xffff_ffff_8100_0000;
    c.user_regs.rsi = 0xffff_ffff_8180_0000;
    c.user_regs.cs = FLAT_KERNEL_CS64;
    c.user_regs.ss = FLAT_KERNEL_SS64;
    c.ctrlreg[3] = VcpuGuestContext::pfn_to_cr3(l4);
    c
}

/// A PV build's settings, as the model holds them.
#[test]
fn a_pv_build_is_recorded() {
    let sim = Arc::new(SimHypervisor::default());
    let xc = XenCtrl::on_simulator(Arc::clone(&sim)).unwrap();
    let d = xc.create_domain(&CreateDomain::pv(1)).unwrap();
    xc.set_max_mem(d, 64 * 1024).unwrap();
    xc.set_max_vcpus(d, 1).unwrap();
    let mut frames: Vec<u64> = (0..4).collect();
    xc.populate_physmap_exact(d, 0, 0, &mut frames).unwrap();
    xc.set_address_size(d, 64).unwrap();
    xc.pin_l4_table(d, frames[2]).unwrap();
    let ctx = pv_context(frames[2]);
    xc.set_vcpu_context(d, 0, &ctx).unwrap();
    xc.set_tsc_info(d, &TscInfo::new(TscMode::ALWAYS_EMULATE))
        .unwrap();
    let map = [E820Entry::new(0, 4 << 12, E820_RAM)];
    xc.set_memory_map(d, &map).unwrap();
    xc.hypercall_init(d, frames[1]).unwrap();
    sim.with_state(|s| {
        let b = &s.domain(d).unwrap().build;
        assert_eq!(b.pinned.get(&frames[2]), Some(&4));
        assert_eq!(b.vcpus[&0].context.as_deref(), Some(&ctx));
        assert!(b.vcpus[&0].online);
        assert_eq!(b.tsc.tsc_mode, TscMode::ALWAYS_EMULATE.0);
        assert_eq!(b.memory_map, map);
        assert_eq!(b.hypercall_pages, [frames[1]]);
    });
    // A frame that is not the domain's cannot be pinned, and the model is unchanged.
    let err = xc.pin_l4_table(d, 1 << 40).unwrap_err();
    assert_eq!(err.errno(), Some(Errno::EINVAL));
    sim.with_state(|s| assert_eq!(s.domain(d).unwrap().build.pinned.len(), 1));
    xc.destroy_domain(d).unwrap();
}

/// A PVH build's settings, as the model holds them, kept by a persistent host and seen by a
/// handle opened afterwards.
#[test]
fn a_pvh_build_survives_the_state_file() {
    let dir = std::env::temp_dir().join(format!("xenctrl-sim-build-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("host");
    let _ = std::fs::remove_file(&path);
    let d = {
        let xc = XenCtrl::simulated_persistent(&path, SimConfig::default()).unwrap();
        let d = xc.create_domain(&CreateDomain::pvh(2)).unwrap();
        xc.set_max_vcpus(d, 2).unwrap();
        xc.set_paging_mempool_size(d, 3 << 20).unwrap();
        xc.set_hvm_param(d, HvmParam::CONSOLE_PFN, 0xfefff).unwrap();
        xc.set_hvm_param(d, HvmParam::TIMER_MODE, 1).unwrap();
        let header = *xc.hvm_context(d).unwrap().header().unwrap();
        let mut cpu = HvmHwCpu::zeroed();
        cpu.rip = 0x100_0850;
        cpu.rbx = 0x2000;
        xc.set_hvm_context(
            d,
            &HvmContext {
                records: vec![
                    HvmRecord::Header(header),
                    HvmRecord::Cpu {
                        vcpu: 1,
                        cpu: Box::new(cpu),
                    },
                ],
            },
        )
        .unwrap();
        d
    };
    let sim = SimHypervisor::persistent(&path, SimConfig::default()).unwrap();
    sim.with_state(|s| {
        let b = &s.domain(d).unwrap().build;
        assert_eq!(b.paging_pool_pages, 768);
        assert_eq!(b.hvm_param(HVM_PARAM_CONSOLE_PFN), 0xfefff);
        assert_eq!(b.hvm_param(HVM_PARAM_TIMER_MODE), 1);
        let cpu = b.hvm_cpu(1).expect("vCPU 1's CPU record");
        assert_eq!((cpu.rip, cpu.rbx), (0x100_0850, 0x2000));
        assert!(b.hvm_cpu(0).is_none());
        assert!(b.vcpus[&1].online);
    });
    let xc = XenCtrl::on_simulator(Arc::new(sim)).unwrap();
    assert_eq!(xc.vcpu_context(d, 1).unwrap().user_regs.rip, 0x100_0850);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A corrupt context blob is refused whole: a CPU record of the wrong size, a record longer
/// than the blob, an unknown record type; the model keeps no CPU record from it.
#[test]
fn bad_context_records_are_refused() {
    let sim = Arc::new(SimHypervisor::default());
    let xc = XenCtrl::on_simulator(Arc::clone(&sim)).unwrap();
    let d = xc.create_domain(&CreateDomain::pvh(1)).unwrap();
    xc.set_max_vcpus(d, 1).unwrap();
    let good = xc.hvm_context_bytes(d).unwrap();
    let header = &good[..32];
    let with = |typecode: u16, length: u32, body: &[u8]| {
        let mut b = header.to_vec();
        b.extend_from_slice(
            HvmSaveDescriptor {
                typecode,
                instance: 0,
                length,
            }
            .as_bytes(),
        );
        b.extend_from_slice(body);
        b.extend_from_slice(&[0; 8]);
        b
    };
    for (what, blob) in [
        ("a short CPU record", with(2, 1000, &[0; 1000])),
        ("a record longer than the blob", with(14, 4096, &[0; 16])),
        ("an unknown record type", with(42, 0, &[])),
        ("a second HEADER", with(1, 24, &[0; 24])),
    ] {
        let err = xc.set_hvm_context_bytes(d, &blob).unwrap_err();
        assert_eq!(err.errno(), Some(Errno::EINVAL), "{what}: {err}");
    }
    sim.with_state(|s| assert!(s.domain(d).unwrap().build.hvm_cpu(0).is_none()));
    xc.destroy_domain(d).unwrap();
}
