//! A guest shares a small ring with dom0 through gntalloc; dom0 maps it through gntdev, reads
//! the guest's request, writes a response, and copies a second message in with a grant copy.
//! When the guest lets go first, dom0 sees its "connected" byte cleared.
//!
//! It runs on the simulated host (two simulated domains in one process), so it runs anywhere:
//!
//! ```text
//! cargo run -p xengnttab --example share_and_map
//! ```
//!
//! On Xen, the guest half would run in the guest (`Gntalloc::open()`), the grant references
//! would travel through xenstore, and the dom0 half would run in dom0 (`Gntdev::open()`).

use std::error::Error;
use std::sync::Arc;

use xenctrl::backend::sim::SimState;
use xenctrl::SimHypervisor;
use xengnttab::{CopySegment, DomainId, Gntalloc, Gntdev, UnmapNotify};

/// Layout of the shared page: a "connected" byte, then a request, then a response.
const CONNECTED: usize = 0;
const REQUEST: usize = 64;
const RESPONSE: usize = 2048;
/// Where the grant copy writes, as the `u16` page offset a copy segment takes.
const COPIED: u16 = 2048 + 8;

fn main() -> Result<(), Box<dyn Error>> {
    let sim = Arc::new(SimHypervisor::default());
    let guest = DomainId::new(sim.with_state(|s| -> Result<u16, nix::errno::Errno> {
        let d = s.create_domain(0, &SimState::pv_config(1))?;
        s.set_max_mem(d, 1024)?; // 1 MiB: room for the pages it shares
        Ok(d)
    })?);
    println!("simulated guest: domain {guest}");

    // --- In the guest -------------------------------------------------------------------
    let gntalloc = Gntalloc::on_simulator(Arc::clone(&sim), guest);
    let mut ring = gntalloc.share(DomainId::DOM0, 1, true)?;
    ring.slice().write(CONNECTED, &1u8)?;
    ring.slice().write_from(REQUEST, b"GET /status")?;
    // If the guest goes away, dom0 reads 0 in the connected byte.
    ring.set_unmap_notify(UnmapNotify::clear_byte(CONNECTED))?;
    println!("guest shared grant refs {:?}", ring.refs());

    // --- In dom0 -----------------------------------------------------------------------
    let gntdev = Gntdev::on_simulator(Arc::clone(&sim), DomainId::DOM0);
    let mapped = gntdev.map(guest, ring.refs())?;
    let request = mapped.slice().to_vec(REQUEST, 11)?;
    println!("dom0 read request: {}", String::from_utf8_lossy(&request));
    mapped.slice().write_from(RESPONSE, b"200 OK")?;

    // A grant copy needs no mapping: Xen copies between our buffer and the granted page.
    let mut segments = [CopySegment::to_grant(
        b"(copied)",
        guest,
        ring.refs()[0],
        COPIED,
    )];
    gntdev.grant_copy(&mut segments)?;

    // --- Back in the guest -------------------------------------------------------------
    let response = ring.slice().to_vec(RESPONSE, 16)?;
    println!(
        "guest read response: {}",
        String::from_utf8_lossy(&response)
    );
    assert_eq!(&response, b"200 OK\0\0(copied)");

    // The guest disconnects first; dom0 still holds the page (nobody can revoke a mapped
    // grant) and sees the byte cleared.
    drop(ring);
    let connected = mapped.slice().read::<u8>(CONNECTED)?;
    println!("after the guest let go, dom0 reads connected = {connected}");
    assert_eq!(connected, 0);
    drop(mapped);
    Ok(())
}
