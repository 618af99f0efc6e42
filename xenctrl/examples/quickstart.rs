//! Open the hypervisor (the real one when `/dev/xen/privcmd` exists, else a simulated 16 GiB
//! host), print what it is, create two paused domains with memory, list them, and destroy them.
//!
//! ```text
//! cargo run -p xenctrl --example quickstart
//! ```

use xenctrl::{pages_to_mib, CreateDomain, SimConfig, XenCtrl};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let xc = XenCtrl::open_or_simulated(SimConfig {
        total_mib: 16 * 1024,
        ..Default::default()
    })?;
    let version = xc.version()?;
    let p = xc.physinfo()?;
    println!("backend      : {}", xc.backend_name());
    println!("xen_version  : {version}");
    println!("xen_caps     : {}", xc.capabilities()?);
    println!(
        "interface    : domctl {:#x}, sysctl {:#x}",
        xc.interface().domctl,
        xc.interface().sysctl
    );
    println!("buffers from : {:?}", xc.pool().source());
    println!("nr_cpus      : {}", p.nr_cpus);
    println!("total_memory : {} MiB", p.total_mib());
    println!("free_memory  : {} MiB", p.free_mib());

    // Two paused PV domains, 64 MiB each: claim first, so admission is atomic, then populate.
    let mut created = Vec::new();
    for i in 0..2u8 {
        let mut handle = *b"quickstart-dom-0";
        handle[15] = b'0' + i;
        let domid = xc.create_domain(&CreateDomain::pv(1).with_handle(handle))?;
        created.push(domid);
        let pages = 64 * 256;
        xc.set_max_mem(domid, pages * 4)?;
        xc.claim_pages(domid, pages)?;
        let mut gpfns: Vec<u64> = (0..pages).collect();
        xc.populate_physmap_exact(domid, 0, 0, &mut gpfns)?;
        xc.cancel_claim(domid)?;
    }

    println!(
        "\n{:>5} {:>8} {:>8} {:>6}  state",
        "domid", "mem MiB", "max MiB", "vcpus"
    );
    for d in xc.domain_list()? {
        println!(
            "{:>5} {:>8} {:>8} {:>6}  {}",
            d.domid,
            pages_to_mib(d.tot_pages),
            pages_to_mib(d.max_pages),
            d.nr_online_vcpus,
            d.state_string()
        );
    }

    for domid in created {
        xc.destroy_domain(domid)?;
    }
    println!(
        "\nfree_memory after destroy: {} MiB",
        xc.physinfo()?.free_mib()
    );
    Ok(())
}
