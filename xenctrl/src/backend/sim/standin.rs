//! The stand-in guest: what a Linux guest does early on, once [`super::boot`]'s checks pass.
//!
//! 1. It prints a boot line on its console, as the kernel's first `printk`s reach `hvc0`:
//!    [`console_line`] goes into the `out` ring of the console page (`struct
//!    xencons_interface`), and the console event channel is notified.
//! 2. It connects its xenstore ring, as `xenbus` does: one `XS_WRITE` of
//!    [`STANDIN_XENSTORE_PATH`] (relative to the domain's home, `/local/domain/<domid>`) with
//!    value [`STANDIN_XENSTORE_VALUE`], request id [`STANDIN_XENSTORE_REQ_ID`], goes into the
//!    `req` ring of the xenstore page (`struct xenstore_domain_interface`), and the xenstore
//!    event channel is notified. Serving the ring is xenstored's business.
//!
//! Both are single-producer rings with free-running indices: the bytes are written first,
//! then the producer index, so a consumer that sees the index sees the bytes. The stand-in
//! writes only into free space: a console line that does not fit is cut (as a guest's
//! `hvc` would wait, and this one cannot), a xenstore request that does not fit whole is not
//! written.

use std::io;

use zerocopy::IntoBytes;

use super::boot::Checked;
use super::machine::MachineMemory;
use super::state::SimDomain;
use crate::abi::{XenconsInterface, XenstoreDomainInterface, XsdSockmsg, XS_WRITE};

/// The node the stand-in guest writes when it connects its xenstore ring (relative to its
/// home, so xenstored makes it `/local/domain/<domid>/data/rxen-sim-booted`).
pub const STANDIN_XENSTORE_PATH: &str = "data/rxen-sim-booted";
/// The value it writes there.
pub const STANDIN_XENSTORE_VALUE: &str = "1";
/// The request id of that `XS_WRITE`.
pub const STANDIN_XENSTORE_REQ_ID: u32 = 1;
/// How the stand-in guest's console line starts.
pub const STANDIN_CONSOLE_PREFIX: &str = "rxen-sim: Linux stand-in booted";

/// The line the stand-in guest prints, without its newline: e.g. `rxen-sim: Linux stand-in
/// booted (pv, 128 MiB, 1 vCPU) cmdline="console=hvc0"`.
pub(super) fn console_line(d: &SimDomain, booted: &Checked) -> String {
    let vcpus = d.config.max_vcpus;
    format!(
        "{STANDIN_CONSOLE_PREFIX} ({}, {} MiB, {vcpus} vCPU{}) cmdline=\"{}\"",
        booted.kind,
        d.tot_pages / 256,
        if vcpus == 1 { "" } else { "s" },
        booted.cmdline
    )
}

/// Where one ring of a shared page is.
struct RingLayout {
    data: usize,
    size: u32,
    cons: usize,
    prod: usize,
}

const CONSOLE_OUT: RingLayout = RingLayout {
    data: core::mem::offset_of!(XenconsInterface, out),
    size: 2048,
    cons: core::mem::offset_of!(XenconsInterface, out_cons),
    prod: core::mem::offset_of!(XenconsInterface, out_prod),
};

const XENSTORE_REQ: RingLayout = RingLayout {
    data: core::mem::offset_of!(XenstoreDomainInterface, req),
    size: 1024,
    cons: core::mem::offset_of!(XenstoreDomainInterface, req_cons),
    prod: core::mem::offset_of!(XenstoreDomainInterface, req_prod),
};

fn read_u32(m: &MachineMemory, mfn: u64, offset: usize) -> io::Result<u32> {
    let mut b = [0u8; 4];
    m.read(mfn, offset as u64, &mut b)?;
    Ok(u32::from_ne_bytes(b))
}

/// Produce `data` into `ring` of page `mfn`: at most the free space (`whole`: all or nothing).
/// Returns how many bytes went in.
fn produce(
    m: &MachineMemory,
    mfn: u64,
    ring: &RingLayout,
    data: &[u8],
    whole: bool,
) -> io::Result<usize> {
    let cons = read_u32(m, mfn, ring.cons)?;
    let prod = read_u32(m, mfn, ring.prod)?;
    // A consumer index ahead of the producer, or more than a ring behind, is a broken ring:
    // nothing is free.
    let used = prod.wrapping_sub(cons);
    let free = usize::try_from(ring.size.saturating_sub(used)).unwrap_or(0);
    if whole && data.len() > free {
        return Ok(0);
    }
    let n = data.len().min(free);
    let size = usize::try_from(ring.size).unwrap_or(0);
    let mut at = prod;
    let mut done = 0;
    while done < n {
        let pos = usize::try_from(at & (ring.size - 1)).unwrap_or(0);
        let len = (size - pos).min(n - done);
        m.write(mfn, (ring.data + pos) as u64, &data[done..done + len])?;
        done += len;
        at = at.wrapping_add(u32::try_from(len).unwrap_or(0));
    }
    m.write(mfn, ring.prod as u64, &at.to_ne_bytes())?;
    Ok(n)
}

/// Print `line` (a newline is added) on the console page `mfn`.
pub(super) fn write_console(m: &MachineMemory, mfn: u64, line: &str) -> io::Result<usize> {
    let mut bytes = line.as_bytes().to_vec();
    bytes.push(b'\n');
    produce(m, mfn, &CONSOLE_OUT, &bytes, false)
}

/// Queue the stand-in's `XS_WRITE` on the xenstore page `mfn`; whether it fitted.
pub(super) fn write_xenstore_request(m: &MachineMemory, mfn: u64) -> io::Result<bool> {
    let mut payload = STANDIN_XENSTORE_PATH.as_bytes().to_vec();
    payload.push(0);
    payload.extend_from_slice(STANDIN_XENSTORE_VALUE.as_bytes());
    let header = XsdSockmsg {
        kind: XS_WRITE,
        req_id: STANDIN_XENSTORE_REQ_ID,
        tx_id: 0,
        len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
    };
    let mut msg = header.as_bytes().to_vec();
    msg.extend_from_slice(&payload);
    Ok(produce(m, mfn, &XENSTORE_REQ, &msg, true)? == msg.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_output_wraps_and_stops_at_the_consumer() {
        let m = MachineMemory::anonymous().unwrap();
        // The backend has read up to 2000 of 2040 written: 40 bytes used, 2008 free.
        m.write(7, CONSOLE_OUT.cons as u64, &2000u32.to_ne_bytes())
            .unwrap();
        m.write(7, CONSOLE_OUT.prod as u64, &2040u32.to_ne_bytes())
            .unwrap();
        let line = "x".repeat(20);
        assert_eq!(write_console(&m, 7, &line).unwrap(), 21);
        assert_eq!(read_u32(&m, 7, CONSOLE_OUT.prod).unwrap(), 2061);
        // 8 bytes before the end of the ring, 13 from its start.
        let mut tail = [0u8; 8];
        m.read(7, (CONSOLE_OUT.data + 2040) as u64, &mut tail)
            .unwrap();
        assert_eq!(&tail, b"xxxxxxxx");
        let mut head = [0u8; 13];
        m.read(7, CONSOLE_OUT.data as u64, &mut head).unwrap();
        assert_eq!(&head, b"xxxxxxxxxxxx\n");
        // A full ring takes nothing; the index does not move.
        m.write(7, CONSOLE_OUT.cons as u64, &13u32.to_ne_bytes())
            .unwrap();
        assert_eq!(write_console(&m, 7, "more").unwrap(), 0);
        assert_eq!(read_u32(&m, 7, CONSOLE_OUT.prod).unwrap(), 2061);
    }

    #[test]
    fn a_xenstore_request_goes_in_whole_or_not_at_all() {
        let m = MachineMemory::anonymous().unwrap();
        assert!(write_xenstore_request(&m, 3).unwrap());
        let len = 16 + STANDIN_XENSTORE_PATH.len() + 1 + STANDIN_XENSTORE_VALUE.len();
        assert_eq!(read_u32(&m, 3, XENSTORE_REQ.prod).unwrap() as usize, len);
        // A consumer that has read nothing, with the ring nearly full: no room, nothing goes.
        m.write(3, XENSTORE_REQ.prod as u64, &1020u32.to_ne_bytes())
            .unwrap();
        assert!(!write_xenstore_request(&m, 3).unwrap());
        assert_eq!(read_u32(&m, 3, XENSTORE_REQ.prod).unwrap(), 1020);
    }
}
