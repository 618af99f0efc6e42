//! Guests' ring pages as the host's daemons reach them: xenstored's store rings
//! ([`XenRings`], a [`RingConnector`]) and xenconsoled's console rings (`super::console`).
//!
//! # Which way a page is mapped
//!
//! Both daemons map a guest's ring page the way their C counterparts of Xen 4.17 do, grant
//! first:
//!
//! 1. the reserved grant reference (`GNTTAB_RESERVED_CONSOLE` = 0, `GNTTAB_RESERVED_XENSTORE`
//!    = 1) through gntdev, as C xenstored (`map_interface`, which knows no other way) and
//!    xenconsoled (`console_create_ring`, "prefer using grant table") do. This needs no
//!    foreign-mapping privilege over the guest (a deprivileged or stub-domain daemon can do
//!    it), and it is what the domain builder sets up for every guest with a kernel;
//! 2. failing that, the frame the toolstack named (`XS_INTRODUCE`'s frame, the console's
//!    `ring-ref`: a machine frame for PV, a guest frame for PVH), foreign-mapped, as oxenstored
//!    and xenconsoled's fallback do. This covers guests whose grant table is not seeded (a
//!    domain with no kernel, which `rxl create` still introduces).
//!
//! Each connection logs which way it went. Nothing here knows which backend runs: the same
//! code maps through `/dev/xen/gntdev`, `/dev/xen/privcmd` and `/dev/xen/evtchn` in a real
//! dom0, or through the simulated ones.
//!
//! Mappings borrow the handle they came from; a daemon opens its handles once and keeps them
//! for its life (`&'static`), so that each ring can own its mapping.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use xenctrl::evtchn::{EventChannels, Port};
use xenctrl::volatile::{ReadWrite, VolatileSlice};
use xenctrl::{DomainId, Errno, ForeignMapping, GrantRef, XenCtrl};
use xengnttab::{Gntdev, GrantMapping};
use xenstore::server::ring::{Doorbell, GuestRing, RingConnector, SharedPage};

/// `GNTTAB_RESERVED_CONSOLE`: the grant reference of a guest's console page.
pub const GRANT_CONSOLE: GrantRef = GrantRef::new(0);
/// `GNTTAB_RESERVED_XENSTORE`: the grant reference of a guest's xenstore page.
pub const GRANT_XENSTORE: GrantRef = GrantRef::new(1);

/// A guest's ring page, mapped one way or the other.
pub(super) enum GuestPage<'h> {
    /// Through its reserved grant reference.
    Grant(GrantMapping<'h, ReadWrite>),
    /// Foreign-mapped by frame.
    Foreign(ForeignMapping<'h, ReadWrite>),
}

impl GuestPage<'_> {
    /// The page, for volatile access.
    pub(super) fn slice(&self) -> VolatileSlice<'_, ReadWrite> {
        match self {
            GuestPage::Grant(m) => m.slice(),
            GuestPage::Foreign(m) => m.slice(),
        }
    }

    /// How it was mapped, for the logs.
    pub(super) fn how(&self) -> &'static str {
        match self {
            GuestPage::Grant(_) => "its grant reference",
            GuestPage::Foreign(_) => "a foreign mapping of its frame",
        }
    }
}

impl std::fmt::Debug for GuestPage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.how())
    }
}

/// Why a ring page could not be mapped either way.
#[derive(Debug, thiserror::Error)]
#[error("grant reference {gref}: {grant}; frame {frame:#x}: {foreign}")]
pub(super) struct MapError {
    gref: u32,
    grant: xengnttab::Error,
    frame: u64,
    foreign: xenctrl::Error,
}

impl MapError {
    /// The errno of the last attempt (the foreign mapping), for a daemon that answers with one.
    pub(super) fn errno(&self) -> Errno {
        self.foreign.errno().unwrap_or(Errno::EINVAL)
    }
}

/// Maps `domain`'s ring page: grant reference `gref` first, else frame `frame`.
pub(super) fn map_guest_page<'h>(
    xc: &'h XenCtrl,
    gntdev: &'h Gntdev,
    domain: DomainId,
    gref: GrantRef,
    frame: u64,
) -> Result<GuestPage<'h>, MapError> {
    let grant = match gntdev.map(domain, &[gref]) {
        Ok(m) => return Ok(GuestPage::Grant(m)),
        Err(e) => e,
    };
    match xc.map_foreign::<ReadWrite>(domain, &[frame]) {
        Ok(m) => Ok(GuestPage::Foreign(m)),
        Err(foreign) => Err(MapError {
            gref: gref.get(),
            grant,
            frame,
            foreign,
        }),
    }
}

/// [`SharedPage`] over a mapped guest page. The page is 4096 bytes and the xenstore ring
/// stays below [`SharedPage::size`], so the volatile accesses cannot be out of bounds; if one
/// were, reads give zeros and writes are dropped rather than touching anything else.
impl SharedPage for GuestPage<'_> {
    fn size(&self) -> usize {
        self.slice().len()
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        if self.slice().read_into(offset, out).is_err() {
            out.fill(0);
        }
    }
    fn write_bytes(&self, offset: usize, data: &[u8]) {
        let _ = self.slice().write_from(offset, data);
    }
    fn read_u32(&self, offset: usize) -> u32 {
        self.slice().read::<u32>(offset).unwrap_or(0)
    }
    fn write_u32(&self, offset: usize, value: u32) {
        let _ = self.slice().write(offset, &value);
    }
}

/// xenstored's way to guests' store rings on Xen (real or simulated): gntdev and privcmd
/// mappings, and one `/dev/xen/evtchn` handle for every ring's event channel.
#[derive(Debug)]
pub struct XenRings {
    xc: &'static XenCtrl,
    gntdev: &'static Gntdev,
    evtchn: &'static EventChannels,
    poll_interval: Option<Duration>,
    /// The ports the rings have bound, to re-enable after lost events.
    ports: Arc<Mutex<BTreeSet<Port>>>,
}

impl XenRings {
    /// A connector over handles that live as long as the daemon. `poll_interval`: how often to
    /// look at the rings without an event (`Some` where the event descriptor does not wake
    /// for every event, as on the simulated host; `None` on Xen).
    pub fn new(
        xc: &'static XenCtrl,
        gntdev: &'static Gntdev,
        evtchn: &'static EventChannels,
        poll_interval: Option<Duration>,
    ) -> Self {
        XenRings {
            xc,
            gntdev,
            evtchn,
            poll_interval,
            ports: Arc::default(),
        }
    }
}

/// One domain's store ring: its page and our end of its event channel, unbound on drop.
struct StoreRing {
    page: GuestPage<'static>,
    evtchn: &'static EventChannels,
    port: Port,
    ports: Arc<Mutex<BTreeSet<Port>>>,
}

impl SharedPage for StoreRing {
    fn size(&self) -> usize {
        self.page.size()
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        self.page.read_bytes(offset, out);
    }
    fn write_bytes(&self, offset: usize, data: &[u8]) {
        self.page.write_bytes(offset, data);
    }
    fn read_u32(&self, offset: usize) -> u32 {
        self.page.read_u32(offset)
    }
    fn write_u32(&self, offset: usize, value: u32) {
        self.page.write_u32(offset, value);
    }
}

impl Doorbell for StoreRing {
    fn notify(&self) -> Result<(), Errno> {
        self.evtchn
            .notify(self.port)
            .map_err(|e| e.errno().unwrap_or(Errno::EIO))
    }
}

impl Drop for StoreRing {
    fn drop(&mut self) {
        // The page unmaps as it drops.
        let _ = self.evtchn.unbind(self.port);
        self.ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.port);
    }
}

impl RingConnector for XenRings {
    fn connect(&mut self, domid: u32, gfn: u64, port: u32) -> Result<Box<dyn GuestRing>, Errno> {
        let domain = DomainId::new(u16::try_from(domid).map_err(|_| Errno::EINVAL)?);
        let page =
            map_guest_page(self.xc, self.gntdev, domain, GRANT_XENSTORE, gfn).map_err(|e| {
                eprintln!("xenstored: domain {domid}: cannot map its store ring: {e}");
                e.errno()
            })?;
        let bound = self
            .evtchn
            .bind_interdomain(domain, Port::new(port))
            .map_err(|e| {
                eprintln!("xenstored: domain {domid}: cannot bind its store event channel: {e}");
                e.errno().unwrap_or(Errno::EINVAL)
            })?;
        eprintln!(
            "xenstored: domain {domid}: serving its store ring, mapped through {}, on port {port}",
            page.how()
        );
        let port = bound.into_port();
        self.ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port);
        Ok(Box::new(StoreRing {
            page,
            evtchn: self.evtchn,
            port,
            ports: Arc::clone(&self.ports),
        }))
    }

    fn events(&self) -> Option<BorrowedFd<'_>> {
        Some(self.evtchn.as_fd())
    }

    fn take_events(&mut self) {
        let mut lost = false;
        for p in self.evtchn.pending() {
            match p {
                Ok(port) => {
                    let _ = self.evtchn.unmask(port);
                }
                Err(xenctrl::Error::EventsLost) => lost = true,
                Err(_) => {}
            }
        }
        if lost {
            // Which ports fired is lost: re-enable them all (the server looks at every ring
            // after this anyway).
            let _ = self.evtchn.reset();
            for &port in self.ports.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let _ = self.evtchn.unmask(port);
            }
        }
    }

    fn poll_interval(&self) -> Option<Duration> {
        self.poll_interval
    }
}
