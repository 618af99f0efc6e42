//! `/dev/xen/gntalloc`: sharing our pages with another domain.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::ptr::NonNull;
use std::sync::Arc;

use nix::errno::Errno;
use xenctrl::backend::sim::SimGrantShare;
use xenctrl::volatile::{ReadWrite, VolatileSlice};
use xenctrl::{DomainId, GrantRef, SimHypervisor, PAGE_SIZE};
use zerocopy::{FromBytes, IntoBytes};

use crate::error::{Error, Result};
use crate::ioctls::{
    self, GntallocAllocGref, GntallocDeallocGref, UnmapNotifyRaw, GNTALLOC_FLAG_WRITABLE,
};
use crate::{notify_page, raw_port, UnmapNotify};

/// Path of the grant-allocation device.
pub const GNTALLOC_PATH: &str = "/dev/xen/gntalloc";

/// An open `/dev/xen/gntalloc`, or a simulated domain's: shares pages of this domain with
/// others. Shared pages borrow it.
#[derive(Debug)]
pub struct Gntalloc {
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    Device(File),
    Sim {
        sim: Arc<SimHypervisor>,
        domain: DomainId,
    },
}

impl Gntalloc {
    /// Open `/dev/xen/gntalloc` (close-on-exec).
    ///
    /// # Errors
    ///
    /// [`Error::Open`]: `ENOENT` when the device is missing (not a Xen domain, or the
    /// `xen_gntalloc` module not loaded), `EACCES` without permission.
    pub fn open() -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(GNTALLOC_PATH)
            .map_err(|e| Error::Open {
                path: GNTALLOC_PATH,
                module: "xen_gntalloc",
                source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
        Ok(Self {
            backend: Backend::Device(file),
        })
    }

    /// The gntalloc of simulated domain `as_domain` on `sim`. Dom0 shares pages of its own
    /// memory; a guest is given a page for each one it shares, so it needs room under its
    /// maximum (see `xenctrl::backend::sim::gnttab`).
    pub fn on_simulator(sim: Arc<SimHypervisor>, as_domain: DomainId) -> Self {
        Self {
            backend: Backend::Sim {
                sim,
                domain: as_domain,
            },
        }
    }

    /// Allocate `pages` zeroed pages, grant them to `domain` (writable for it when `writable`,
    /// else read-only) and map them here, always writable. The grants end when the returned
    /// value drops; a page the other domain still has mapped then stays its until it unmaps
    /// (Xen lets no domain revoke a mapped grant), and the kernel frees it after.
    ///
    /// # Errors
    ///
    /// [`Error::Share`]: `EINVAL` for zero pages; `ENOSPC` past gntalloc's limit (1024 pages
    /// by default, its `limit` module parameter) or when our grant table is full; `ENOMEM`.
    pub fn share(&self, domain: DomainId, pages: usize, writable: bool) -> Result<SharedPages<'_>> {
        let fail = |source| Error::Share {
            domain,
            count: pages,
            source,
        };
        if pages == 0 {
            return Err(fail(Errno::EINVAL));
        }
        let (inner, refs) = match &self.backend {
            Backend::Sim { sim, domain: me } => {
                let share = sim
                    .share_pages(*me, domain, pages, writable)
                    .map_err(fail)?;
                let refs = share.refs().to_vec();
                (Inner::Sim(share), refs)
            }
            Backend::Device(file) => share_device(file, domain, pages, writable).map_err(fail)?,
        };
        Ok(SharedPages {
            inner,
            domain,
            refs,
            _dev: PhantomData,
        })
    }
}

/// `IOCTL_GNTALLOC_ALLOC_GREF`, then `mmap` at the index it returns.
fn share_device(
    file: &File,
    domain: DomainId,
    pages: usize,
    writable: bool,
) -> std::result::Result<(Inner<'_>, Vec<GrantRef>), Errno> {
    let count = u32::try_from(pages).map_err(|_| Errno::EINVAL)?;
    let len = pages.checked_mul(PAGE_SIZE).ok_or(Errno::EINVAL)?;
    // The 16-byte head, then one u32 reference per page (out), in 8-aligned memory.
    let mut buf = vec![0u64; 2 + pages.div_ceil(2)];
    let head = GntallocAllocGref {
        domid: domain.get(),
        flags: if writable { GNTALLOC_FLAG_WRITABLE } else { 0 },
        count,
        index: 0,
    };
    buf.as_mut_bytes()[..16].copy_from_slice(head.as_bytes());
    // SAFETY: `buf` is 8-aligned and holds the head the kernel reads and writes back (its
    // `index`) and room for the `count` references it writes after it; it lives across the
    // call. The descriptor is our open gntalloc.
    unsafe { ioctls::gntalloc_alloc_gref(file.as_raw_fd(), buf.as_mut_ptr().cast()) }?;
    let bytes = buf.as_bytes();
    let index = GntallocAllocGref::read_from_prefix(bytes)
        .map_err(|_| Errno::EIO)?
        .0
        .index;
    let refs: Vec<GrantRef> = bytes[16..16 + 4 * pages]
        .chunks_exact(4)
        .map(|c| GrantRef::new(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    let dealloc = |e: Errno| {
        let op = GntallocDeallocGref {
            index,
            count,
            pad: 0,
        };
        // SAFETY: a plain struct the kernel only reads; it lets go of the pages allocated at
        // `index`, which nothing maps.
        let _ = unsafe { ioctls::gntalloc_dealloc_gref(file.as_raw_fd(), &op) };
        e
    };
    let offset = libc::off_t::try_from(index).map_err(|_| dealloc(Errno::EINVAL))?;
    // SAFETY: a new shared mapping at an address the kernel chooses, of the `count` pages the
    // driver allocated at `offset`; nothing else is touched. The result is checked.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            offset,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(dealloc(Errno::last()));
    }
    let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| dealloc(Errno::EFAULT))?;
    Ok((
        Inner::Device {
            file,
            ptr,
            len,
            index,
            count,
        },
        refs,
    ))
}

#[derive(Debug)]
enum Inner<'d> {
    Device {
        file: &'d File,
        ptr: NonNull<u8>,
        len: usize,
        index: u64,
        count: u32,
    },
    Sim(SimGrantShare),
}

/// Pages of this domain shared with another one: their grant references to hand to it, and
/// their memory, which it may change at any time. Borrows the [`Gntalloc`] it came from; on
/// drop the unmap notification (if set) fires and the grants end.
pub struct SharedPages<'d> {
    inner: Inner<'d>,
    domain: DomainId,
    refs: Vec<GrantRef>,
    _dev: PhantomData<&'d Gntalloc>,
}

// SAFETY: the pages are process memory owned by this value, reached only through
// `VolatileSlice`s that borrow it (neither `Send` nor `Sync`); the device handle it borrows is
// a `File` (Sync). Nothing ties it to the thread that made it.
unsafe impl Send for SharedPages<'_> {}

impl fmt::Debug for SharedPages<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPages")
            .field("domain", &self.domain)
            .field("refs", &self.refs)
            .finish()
    }
}

impl SharedPages<'_> {
    /// The grant references, one per page, in page order: what the other domain maps.
    pub fn refs(&self) -> &[GrantRef] {
        &self.refs
    }

    /// The domain the pages are granted to.
    pub fn domain(&self) -> DomainId {
        self.domain
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.refs.len() * PAGE_SIZE
    }

    /// Whether there are no pages (never: sharing none is refused).
    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    /// The shared pages (our own pages: always writable here, whatever the grant allows the
    /// other side).
    pub fn slice(&self) -> VolatileSlice<'_, ReadWrite> {
        let (ptr, len) = match &self.inner {
            Inner::Device { ptr, len, .. } => (*ptr, *len),
            Inner::Sim(s) => (s.window().base(), s.window().len()),
        };
        // SAFETY: the window is mapped readable and writable for as long as `self` lives,
        // which the slice borrows; this type never makes a Rust reference to it.
        unsafe { VolatileSlice::new(ptr, len) }
    }

    /// What to do when these pages go (`IOCTL_GNTALLOC_SET_UNMAP_NOTIFY`), replacing any
    /// earlier setting: clear a byte of them, so that the other side reads 0 there, and/or
    /// signal an event channel. On Linux the notification belongs to the page holding the
    /// byte (the first page for an event alone), and fires when that page is let go: all pages
    /// go together when this value drops.
    ///
    /// # Errors
    ///
    /// [`Error::UnmapNotify`]: `ENOENT` for a byte outside the pages, `EINVAL` for an event
    /// port not bound in this domain.
    pub fn set_unmap_notify(&mut self, notify: UnmapNotify) -> Result<()> {
        let domain = self.domain;
        let fail = |gref, source| Error::UnmapNotify {
            domain,
            gref,
            source,
        };
        let page = notify_page(&notify, self.len(), true).map_err(|e| fail(self.refs[0], e))?;
        let gref = self.refs[page];
        match &mut self.inner {
            Inner::Sim(s) => s
                .set_unmap_notify(notify.to_sim())
                .map_err(|e| fail(gref, e)),
            Inner::Device { file, index, .. } => {
                let op = UnmapNotifyRaw {
                    index: *index + notify.byte().unwrap_or(0) as u64,
                    action: notify.action(),
                    event_channel_port: notify.event().map_or(0, raw_port),
                };
                // SAFETY: a plain struct the kernel only reads, on our open gntalloc.
                unsafe { ioctls::gntalloc_set_unmap_notify(file.as_raw_fd(), &op) }
                    .map(drop)
                    .map_err(|e| fail(gref, e))
            }
        }
    }
}

impl Drop for SharedPages<'_> {
    fn drop(&mut self) {
        if let Inner::Device {
            file,
            ptr,
            len,
            index,
            count,
        } = &self.inner
        {
            // SAFETY: this value owns the window (made by `share_device`), no slice of it
            // outlives `self`, and it is unmapped once.
            unsafe { libc::munmap(ptr.as_ptr().cast(), *len) };
            let op = GntallocDeallocGref {
                index: *index,
                count: *count,
                pad: 0,
            };
            // SAFETY: a plain struct the kernel only reads; it lets go of the pages allocated
            // at `index`, whose mapping is gone.
            let _ = unsafe { ioctls::gntalloc_dealloc_gref(file.as_raw_fd(), &op) };
        }
        // A simulated share ends itself when `inner` drops.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_pages_are_send() {
        fn assert_send<T: Send>() {}
        assert_send::<SharedPages<'static>>();
        assert_send::<Gntalloc>();
    }

    #[test]
    fn a_descriptor_that_is_not_gntalloc_answers_enotty() {
        let dev = Gntalloc {
            backend: Backend::Device(File::open("/dev/null").expect("/dev/null")),
        };
        let err = dev
            .share(DomainId::new(1), 2, true)
            .expect_err("share on /dev/null");
        assert!(
            matches!(
                err,
                Error::Share {
                    source: Errno::ENOTTY,
                    count: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = dev.share(DomainId::new(1), 0, true).expect_err("no pages");
        assert!(matches!(
            err,
            Error::Share {
                source: Errno::EINVAL,
                ..
            }
        ));
    }
}
