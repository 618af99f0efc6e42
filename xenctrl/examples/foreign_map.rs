//! Map another domain's memory: create a paused PV domain with a few pages, map them twice
//! (writing through one mapping, reading through the other), map its grant table as a resource
//! and again by the frames `GNTTABOP_setup_table` reports, and show what a mapping with a bad
//! frame in it looks like. Runs on a simulated host, or on real Xen when `/dev/xen/privcmd`
//! exists (as root in dom0).
//!
//! ```text
//! cargo run -p xenctrl --example foreign_map
//! ```

use xenctrl::volatile::{ReadOnly, ReadWrite};
use xenctrl::{CreateDomain, DomId, DomainId, PageError, Resource, SimConfig, XenCtrl};

/// Destroys the domain when dropped, so that an error on the way leaves nothing behind.
struct Domain<'a>(&'a XenCtrl, DomId);

impl Drop for Domain<'_> {
    fn drop(&mut self) {
        let _ = self.0.destroy_domain(self.1);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let xc = XenCtrl::open_or_simulated(SimConfig::default())?;
    println!("backend: {}", xc.backend_name());

    // A paused PV domain with 8 pages at guest frames 0..8. For a PV domain Xen writes back
    // the machine frames it used: those are what its memory is mapped by.
    let d = Domain(&xc, xc.create_domain(&CreateDomain::pv(1))?);
    let domain = DomainId::new(d.1);
    xc.set_max_mem(d.1, 8 * 4)?;
    let mut frames: Vec<u64> = (0..8).collect();
    xc.populate_physmap_exact(d.1, 0, 0, &mut frames)?;
    let hex: Vec<String> = frames.iter().map(|f| format!("{f:#x}")).collect();
    println!("domain {domain}: machine frames {}", hex.join(" "));

    // Two mappings of the same frames, the second in reverse order and read-only.
    let rw = xc.map_foreign::<ReadWrite>(domain, &frames)?;
    for (i, page) in (0..rw.pages()).map(|i| (i, rw.page(i))) {
        page?.write_from(0, format!("hello from page {i}").as_bytes())?;
    }
    let reversed: Vec<u64> = frames.iter().rev().copied().collect();
    let ro = xc.map_foreign::<ReadOnly>(domain, &reversed)?;
    let last = ro.page(0)?.to_vec(0, 17)?;
    println!(
        "read back through the other mapping: {:?}",
        String::from_utf8_lossy(&last)
    );

    // The grant table: frame 0 as a resource, and the same frame by the number Xen reports.
    let size = xc.resource_size(domain, Resource::GRANT_TABLE)?;
    let table = xc.map_resource::<ReadWrite>(domain, Resource::GRANT_TABLE, 0, 1)?;
    // Entry 1, version 1 layout {flags: u16, domid: u16, frame: u32}: GTF_permit_access to
    // dom0 for the domain's first page.
    let frame = u32::try_from(frames[0])?;
    table.slice().write(8, &[1u16, 0])?;
    table.slice().write(12, &frame)?;
    let table_frames = xc.gnttab_setup_table(domain, 1)?;
    let same = xc.map_foreign::<ReadOnly>(domain, &table_frames)?;
    println!(
        "grant table: {size} frames at most; frame 0 is machine frame {:#x}; entry 1 grants \
         frame {:#x}",
        table_frames[0],
        same.slice().read::<u32>(12)?
    );

    // A frame the domain does not own: the partial mapping keeps the others.
    let beyond = xc.physinfo()?.max_mfn + (1 << 20);
    let partial = xc.map_foreign_partial::<ReadOnly>(domain, &[frames[0], beyond])?;
    println!(
        "partial mapping: {} of {} pages mapped",
        partial.mapped(),
        partial.pages()
    );
    for failure in partial.failures() {
        if let PageError::NotMapped { errno, .. } = failure {
            println!("  {failure}: {errno}");
        }
    }
    match xc.map_foreign::<ReadOnly>(domain, &[frames[0], beyond]) {
        Ok(_) => println!("unexpected: the bad frame mapped"),
        Err(e) => match e.errno() {
            Some(errno) => println!("all or nothing: {e}: {errno}"),
            None => println!("all or nothing: {e}"),
        },
    }
    Ok(())
}
