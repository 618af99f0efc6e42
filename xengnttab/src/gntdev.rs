//! `/dev/xen/gntdev`: mapping and copying pages other domains granted us.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::ptr::NonNull;
use std::sync::Arc;

use nix::errno::Errno;
use xenctrl::abi::{GNTCOPY_dest_gref, GNTCOPY_source_gref, GrantStatus};
use xenctrl::backend::sim::{
    SimCopyDest, SimCopySegment, SimCopySource, SimGrantAddr, SimGrantMapping,
};
use xenctrl::volatile::{Access, ReadOnly, ReadWrite, VolatileSlice};
use xenctrl::{DomainId, GrantRef, SimHypervisor, PAGE_SIZE};
use zerocopy::{FromBytes, IntoBytes};

use crate::error::{CopyProblem, Error, Result};
use crate::ioctls::{
    self, CopyForeign, GntdevGrantCopy, GntdevGrantRef, GntdevMapGrantRef, GntdevUnmapGrantRef,
    GrantCopySegmentRaw, UnmapNotifyRaw,
};
use crate::{notify_page, raw_port, UnmapNotify};

/// Path of the grant-mapping device.
pub const GNTDEV_PATH: &str = "/dev/xen/gntdev";

/// An open `/dev/xen/gntdev`, or a simulated domain's: maps grants of other domains into this
/// process. Mappings borrow it; closing it (dropping) needs them gone first.
#[derive(Debug)]
pub struct Gntdev {
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

/// Grant references for an error message: the first few, then how many in all.
fn describe_refs(refs: &[GrantRef]) -> String {
    let shown: Vec<String> = refs.iter().take(4).map(ToString::to_string).collect();
    match refs.len() {
        0 => "(none)".into(),
        n if n <= 4 => shown.join(", "),
        n => format!("{}, ... ({n} in all)", shown.join(", ")),
    }
}

impl Gntdev {
    /// Open `/dev/xen/gntdev` (close-on-exec).
    ///
    /// # Errors
    ///
    /// [`Error::Open`]: `ENOENT` when the device is missing (not a Xen domain, or the
    /// `xen_gntdev` module not loaded), `EACCES` without permission.
    pub fn open() -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(GNTDEV_PATH)
            .map_err(|e| Error::Open {
                path: GNTDEV_PATH,
                module: "xen_gntdev",
                source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
        Ok(Self {
            backend: Backend::Device(file),
        })
    }

    /// The gntdev of simulated domain `as_domain` on `sim`: mappings are checked against the
    /// simulated grant tables as Xen checks them, and show the same machine memory the granting
    /// domain wrote.
    pub fn on_simulator(sim: Arc<SimHypervisor>, as_domain: DomainId) -> Self {
        Self {
            backend: Backend::Sim {
                sim,
                domain: as_domain,
            },
        }
    }

    /// Map `refs` of `domain` writable, one page each, in order, in one contiguous window.
    ///
    /// # Errors
    ///
    /// [`Error::Map`]: `EINVAL` when the list is empty or Xen refuses any reference (none is
    /// mapped then), `ENOMEM` when the kernel has no room for the mapping.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use xenctrl::SimHypervisor;
    /// # use xengnttab::{DomainId, Gntalloc, Gntdev, UnmapNotify};
    /// # let sim = Arc::new(SimHypervisor::default());
    /// # let gntalloc = Gntalloc::on_simulator(sim.clone(), DomainId::DOM0);
    /// # let shared = gntalloc.share(DomainId::DOM0, 1, true)?;
    /// # let refs = shared.refs().to_vec();
    /// let gntdev = Gntdev::on_simulator(sim, DomainId::DOM0);
    /// let mut ring = gntdev.map(DomainId::DOM0, &refs)?;
    /// ring.slice().write(0, &1u32)?; // a "connected" word
    /// // Tell the other side if we go away.
    /// ring.set_unmap_notify(UnmapNotify::clear_byte(0))?;
    /// drop(ring);
    /// assert_eq!(shared.slice().read::<u32>(0)?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map(&self, domain: DomainId, refs: &[GrantRef]) -> Result<GrantMapping<'_, ReadWrite>> {
        self.map_as(domain, refs)
    }

    /// Map `refs` of `domain` read-only: the mapping's slice has no write methods, and a
    /// reference granted read-only can be mapped only this way.
    ///
    /// # Errors
    ///
    /// As [`Gntdev::map`].
    pub fn map_read_only(
        &self,
        domain: DomainId,
        refs: &[GrantRef],
    ) -> Result<GrantMapping<'_, ReadOnly>> {
        self.map_as(domain, refs)
    }

    fn map_as<A: Access>(
        &self,
        domain: DomainId,
        refs: &[GrantRef],
    ) -> Result<GrantMapping<'_, A>> {
        let fail = |source| Error::Map {
            domain,
            refs: describe_refs(refs),
            access: if A::WRITABLE { "writable" } else { "read-only" },
            source,
        };
        if refs.is_empty() {
            return Err(fail(Errno::EINVAL));
        }
        let inner = match &self.backend {
            Backend::Sim { sim, domain: me } => Inner::Sim(
                sim.map_grants(*me, domain, refs, A::WRITABLE)
                    .map_err(|e| fail(e.errno))?,
            ),
            Backend::Device(file) => map_device(file, domain, refs, A::WRITABLE).map_err(fail)?,
        };
        Ok(GrantMapping {
            inner,
            domain,
            refs: refs.to_vec(),
            _dev: PhantomData,
            _access: PhantomData,
        })
    }

    /// Copy between local buffers and granted pages, or between granted pages, without mapping
    /// them (`IOCTL_GNTDEV_GRANT_COPY`, Xen's `GNTTABOP_copy`). Every segment runs; each one's
    /// [`CopySegment::status`] says how it went.
    ///
    /// The local buffers are plain Rust memory: the kernel pins them and Xen copies into or out
    /// of them during the call, while `segments` borrows them (shared for sources, exclusively
    /// for destinations).
    ///
    /// # Errors
    ///
    /// - [`Error::CopyArgs`] before anything is copied, for a segment whose grant side runs
    ///   past the end of its page or whose local buffer is longer than a page.
    /// - [`Error::GrantCopy`] when the request fails as a whole (`EFAULT`, `ENOTTY` on a kernel
    ///   older than 4.6).
    /// - [`Error::CopySegment`] when Xen refused some segments (the others were copied).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use xenctrl::SimHypervisor;
    /// # use xengnttab::{CopySegment, DomainId, Error, Gntalloc, Gntdev, GrantRef, GrantStatus};
    /// # let sim = Arc::new(SimHypervisor::default());
    /// # let gntalloc = Gntalloc::on_simulator(sim.clone(), DomainId::DOM0);
    /// # let shared = gntalloc.share(DomainId::DOM0, 1, true)?;
    /// # let (dom, gref) = (DomainId::DOM0, shared.refs()[0]);
    /// let gntdev = Gntdev::on_simulator(sim, DomainId::DOM0);
    /// let mut back = [0u8; 5];
    /// let mut segments = [
    ///     CopySegment::to_grant(b"hello", dom, gref, 100),
    ///     CopySegment::from_grant(dom, gref, 100, &mut back),
    ///     CopySegment::to_grant(b"?", dom, GrantRef::new(99_999), 0),
    /// ];
    /// let err = gntdev.grant_copy(&mut segments).unwrap_err();
    /// assert!(matches!(err, Error::CopySegment { index: 2, failed: 1, .. }));
    /// assert_eq!(segments[2].status(), Some(GrantStatus::BAD_GNTREF));
    /// assert_eq!(&back, b"hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn grant_copy(&self, segments: &mut [CopySegment<'_>]) -> Result<()> {
        for (index, seg) in segments.iter().enumerate() {
            seg.check()
                .map_err(|problem| Error::CopyArgs { index, problem })?;
        }
        if segments.is_empty() {
            return Ok(());
        }
        let n = segments.len();
        let fail = |source| Error::GrantCopy {
            segments: n,
            source,
        };
        let statuses = match &self.backend {
            Backend::Sim { sim, domain } => sim_copy(sim, *domain, segments).map_err(fail)?,
            Backend::Device(file) => device_copy(file, segments).map_err(fail)?,
        };
        let mut first = None;
        let mut failed = 0;
        for (index, (seg, status)) in segments.iter_mut().zip(statuses).enumerate() {
            seg.status = Some(status);
            if !status.is_ok() {
                failed += 1;
                first.get_or_insert((index, seg.grant_side(), status));
            }
        }
        match first {
            None => Ok(()),
            Some((index, (domain, gref), status)) => Err(Error::CopySegment {
                index,
                domain,
                gref,
                status,
                failed,
                segments: segments.len(),
            }),
        }
    }
}

/// `IOCTL_GNTDEV_MAP_GRANT_REF`, then `mmap` at the index it returns.
fn map_device<'d>(
    file: &'d File,
    domain: DomainId,
    refs: &[GrantRef],
    writable: bool,
) -> std::result::Result<Inner<'d>, Errno> {
    let count = u32::try_from(refs.len()).map_err(|_| Errno::EINVAL)?;
    let len = refs.len().checked_mul(PAGE_SIZE).ok_or(Errno::EINVAL)?;
    // The head (16 bytes) and then one 8-byte grant per reference, in 8-aligned memory.
    let mut buf = vec![0u64; 2 + refs.len()];
    {
        let bytes = buf.as_mut_bytes();
        let head = GntdevMapGrantRef {
            count,
            pad: 0,
            index: 0,
        };
        bytes[..16].copy_from_slice(head.as_bytes());
        for (slot, r) in bytes[16..].chunks_exact_mut(8).zip(refs) {
            let grant = GntdevGrantRef {
                domid: u32::from(domain.get()),
                gref: r.get(),
            };
            slot.copy_from_slice(grant.as_bytes());
        }
    }
    // SAFETY: `buf` is 8-aligned and holds the head the kernel reads and writes back (its
    // `index`) followed by exactly `count` grants it reads; it lives across the call. The
    // descriptor is our open gntdev.
    unsafe { ioctls::gntdev_map_grant_ref(file.as_raw_fd(), buf.as_mut_ptr().cast()) }?;
    let index = GntdevMapGrantRef::read_from_prefix(buf.as_bytes())
        .map_err(|_| Errno::EIO)?
        .0
        .index;
    let unmap_index = |e: Errno| {
        let op = GntdevUnmapGrantRef {
            index,
            count,
            pad: 0,
        };
        // SAFETY: a plain struct the kernel only reads; it releases the grants reserved at
        // `index`, which nothing maps.
        let _ = unsafe { ioctls::gntdev_unmap_grant_ref(file.as_raw_fd(), &op) };
        e
    };
    let offset = libc::off_t::try_from(index).map_err(|_| unmap_index(Errno::EINVAL))?;
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: a new shared mapping at an address the kernel chooses, of the `count` pages the
    // driver reserved at `offset`; nothing else is touched. The result is checked.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            offset,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(unmap_index(Errno::last()));
    }
    let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| unmap_index(Errno::EFAULT))?;
    Ok(Inner::Device {
        file,
        ptr,
        len,
        index,
        count,
    })
}

fn foreign(domain: DomainId, gref: GrantRef, offset: u16) -> u64 {
    let f = CopyForeign {
        gref: gref.get(),
        offset,
        domid: domain.get(),
    };
    u64::read_from_bytes(f.as_bytes()).unwrap_or(0)
}

/// `IOCTL_GNTDEV_GRANT_COPY`; the status of each segment.
fn device_copy(
    file: &File,
    segments: &mut [CopySegment<'_>],
) -> std::result::Result<Vec<GrantStatus>, Errno> {
    let count = libc::c_uint::try_from(segments.len()).map_err(|_| Errno::EINVAL)?;
    let mut raw: Vec<GrantCopySegmentRaw> = segments
        .iter_mut()
        .map(|seg| {
            let mut flags = 0;
            let source = match &seg.source {
                Source::Local(data) => data.as_ptr().expose_provenance() as u64,
                Source::Grant(a) => {
                    flags |= GNTCOPY_source_gref;
                    foreign(a.domain, a.gref, a.offset)
                }
            };
            let dest = match &mut seg.dest {
                Dest::Local(out) => out.as_mut_ptr().expose_provenance() as u64,
                Dest::Grant(a) => {
                    flags |= GNTCOPY_dest_gref;
                    foreign(a.domain, a.gref, a.offset)
                }
            };
            GrantCopySegmentRaw {
                source,
                dest,
                // Checked: at most a page.
                len: u16::try_from(seg.len).unwrap_or(0),
                flags,
                status: 0,
                pad: 0,
            }
        })
        .collect();
    let op = GntdevGrantCopy {
        count,
        pad: 0,
        segments: raw.as_mut_ptr(),
    };
    // SAFETY: the kernel reads `count` segments from `raw` and writes their statuses; it reads
    // each local source (`len` bytes of a slice the segment borrows) and writes each local
    // destination (`len` bytes of a slice the segment borrows exclusively, through our `&mut`).
    // All of it lives until the call returns, and nothing else touches it meanwhile.
    unsafe { ioctls::gntdev_grant_copy(file.as_raw_fd(), &op) }?;
    Ok(raw.iter().map(|r| GrantStatus(r.status)).collect())
}

/// The simulator's grant copy; the status of each segment.
fn sim_copy(
    sim: &SimHypervisor,
    domain: DomainId,
    segments: &mut [CopySegment<'_>],
) -> std::result::Result<Vec<GrantStatus>, Errno> {
    let addr = |a: &GrantAddr| SimGrantAddr {
        domain: a.domain,
        gref: a.gref,
        offset: a.offset,
    };
    let mut sims: Vec<SimCopySegment<'_>> = segments
        .iter_mut()
        .map(|seg| {
            let CopySegment {
                source, dest, len, ..
            } = seg;
            SimCopySegment {
                source: match source {
                    Source::Local(data) => SimCopySource::Local(data),
                    Source::Grant(a) => SimCopySource::Grant(addr(a)),
                },
                dest: match dest {
                    Dest::Local(out) => SimCopyDest::Local(out),
                    Dest::Grant(a) => SimCopyDest::Grant(addr(a)),
                },
                len: u16::try_from(*len).unwrap_or(0),
                status: GrantStatus::OKAY,
            }
        })
        .collect();
    sim.grant_copy(domain, &mut sims)?;
    Ok(sims.iter().map(|s| s.status).collect())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct GrantAddr {
    domain: DomainId,
    gref: GrantRef,
    offset: u16,
}

#[derive(Debug)]
enum Source<'a> {
    Local(&'a [u8]),
    Grant(GrantAddr),
}

#[derive(Debug)]
enum Dest<'a> {
    Local(&'a mut [u8]),
    Grant(GrantAddr),
}

/// One segment of [`Gntdev::grant_copy`]: up to a page between a local buffer and a granted
/// page, or between two granted pages. The length comes from the local buffer when there is
/// one.
#[derive(Debug)]
pub struct CopySegment<'a> {
    source: Source<'a>,
    dest: Dest<'a>,
    len: usize,
    status: Option<GrantStatus>,
}

impl<'a> CopySegment<'a> {
    /// Copy `data` to `offset` in page `gref` that `domain` granted us (writable).
    pub fn to_grant(data: &'a [u8], domain: DomainId, gref: GrantRef, offset: u16) -> Self {
        Self {
            len: data.len(),
            source: Source::Local(data),
            dest: Dest::Grant(GrantAddr {
                domain,
                gref,
                offset,
            }),
            status: None,
        }
    }

    /// Copy `out.len()` bytes at `offset` of page `gref` that `domain` granted us into `out`.
    pub fn from_grant(domain: DomainId, gref: GrantRef, offset: u16, out: &'a mut [u8]) -> Self {
        Self {
            len: out.len(),
            source: Source::Grant(GrantAddr {
                domain,
                gref,
                offset,
            }),
            dest: Dest::Local(out),
            status: None,
        }
    }

    /// Copy `len` bytes from one granted page to another, each given as `(granting domain,
    /// reference, offset)`.
    pub fn between_grants(
        from: (DomainId, GrantRef, u16),
        to: (DomainId, GrantRef, u16),
        len: u16,
    ) -> Self {
        Self {
            source: Source::Grant(GrantAddr {
                domain: from.0,
                gref: from.1,
                offset: from.2,
            }),
            dest: Dest::Grant(GrantAddr {
                domain: to.0,
                gref: to.1,
                offset: to.2,
            }),
            len: usize::from(len),
            status: None,
        }
    }

    /// Bytes to copy.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the segment copies nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Xen's status for this segment after [`Gntdev::grant_copy`] ran it; `None` before.
    pub fn status(&self) -> Option<GrantStatus> {
        self.status
    }

    fn check(&self) -> std::result::Result<(), CopyProblem> {
        if self.len > PAGE_SIZE {
            return Err(CopyProblem::TooLong { len: self.len });
        }
        let fits = |a: &GrantAddr| usize::from(a.offset) + self.len <= PAGE_SIZE;
        for a in [self.source_grant(), self.dest_grant()]
            .into_iter()
            .flatten()
        {
            if !fits(&a) {
                return Err(CopyProblem::CrossesPage {
                    offset: a.offset,
                    len: self.len,
                });
            }
        }
        Ok(())
    }

    fn source_grant(&self) -> Option<GrantAddr> {
        match self.source {
            Source::Grant(a) => Some(a),
            Source::Local(_) => None,
        }
    }

    fn dest_grant(&self) -> Option<GrantAddr> {
        match self.dest {
            Dest::Grant(a) => Some(a),
            Dest::Local(_) => None,
        }
    }

    /// The grant side to name in an error (the source's if both are grants).
    fn grant_side(&self) -> (DomainId, GrantRef) {
        let a = self
            .source_grant()
            .or_else(|| self.dest_grant())
            .unwrap_or(GrantAddr {
                domain: DomainId::SELF,
                gref: GrantRef::new(0),
                offset: 0,
            });
        (a.domain, a.gref)
    }
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
    Sim(SimGrantMapping),
}

/// Grants of another domain mapped into this process: `A` is [`ReadWrite`] or [`ReadOnly`].
/// Borrows the [`Gntdev`] it came from; unmapped on drop (after its unmap notification, if
/// set, fires).
pub struct GrantMapping<'d, A: Access> {
    inner: Inner<'d>,
    domain: DomainId,
    refs: Vec<GrantRef>,
    _dev: PhantomData<&'d Gntdev>,
    _access: PhantomData<A>,
}

// SAFETY: the mapping is process memory owned by this value, reached only through
// `VolatileSlice`s that borrow it (and are themselves neither `Send` nor `Sync`); the device
// handle it borrows is a `File` (Sync). Nothing ties it to the thread that made it.
unsafe impl<A: Access> Send for GrantMapping<'_, A> {}

impl<A: Access> fmt::Debug for GrantMapping<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantMapping")
            .field("domain", &self.domain)
            .field("refs", &self.refs)
            .field("writable", &A::WRITABLE)
            .finish()
    }
}

impl<A: Access> GrantMapping<'_, A> {
    /// The mapped pages, page `i` showing `refs()[i]`.
    pub fn slice(&self) -> VolatileSlice<'_, A> {
        let (ptr, len) = match &self.inner {
            Inner::Device { ptr, len, .. } => (*ptr, *len),
            Inner::Sim(m) => (m.window().base(), m.window().len()),
        };
        // SAFETY: the window is mapped, readable (and writable when `A` is `ReadWrite`: it was
        // mapped with PROT_WRITE) for as long as `self` lives, which the slice borrows; this
        // type never makes a Rust reference to it.
        unsafe { VolatileSlice::new(ptr, len) }
    }

    /// The granting domain.
    pub fn domain(&self) -> DomainId {
        self.domain
    }

    /// The references mapped, in page order.
    pub fn refs(&self) -> &[GrantRef] {
        &self.refs
    }

    /// Length in bytes (a page per reference).
    pub fn len(&self) -> usize {
        self.refs.len() * PAGE_SIZE
    }

    /// Whether nothing is mapped (never: an empty map is refused).
    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    /// What to do when this mapping goes (`IOCTL_GNTDEV_SET_UNMAP_NOTIFY`), replacing any
    /// earlier setting: clear a byte of the mapped memory (writable mappings only) and/or
    /// signal an event channel.
    ///
    /// # Errors
    ///
    /// [`Error::UnmapNotify`]: `ENOENT` for a byte outside the mapping, `EINVAL` for a byte to
    /// clear in a read-only mapping or an event port not bound in this domain.
    pub fn set_unmap_notify(&mut self, notify: UnmapNotify) -> Result<()> {
        let domain = self.domain;
        let fail = |gref, source| Error::UnmapNotify {
            domain,
            gref,
            source,
        };
        let first = self.refs[0];
        let page = notify_page(&notify, self.len(), A::WRITABLE).map_err(|e| fail(first, e))?;
        let gref = self.refs[page];
        match &mut self.inner {
            Inner::Sim(m) => m
                .set_unmap_notify(notify.to_sim())
                .map_err(|e| fail(gref, e)),
            Inner::Device { file, index, .. } => {
                let op = UnmapNotifyRaw {
                    index: *index + notify.byte().unwrap_or(0) as u64,
                    action: notify.action(),
                    event_channel_port: notify.event().map_or(0, raw_port),
                };
                // SAFETY: a plain struct the kernel only reads, on our open gntdev.
                unsafe { ioctls::gntdev_set_unmap_notify(file.as_raw_fd(), &op) }
                    .map(drop)
                    .map_err(|e| fail(gref, e))
            }
        }
    }
}

impl<A: Access> Drop for GrantMapping<'_, A> {
    fn drop(&mut self) {
        if let Inner::Device {
            file,
            ptr,
            len,
            index,
            count,
        } = &self.inner
        {
            // SAFETY: this value owns the window (made by `map_device`), no slice of it
            // outlives `self`, and it is unmapped once.
            unsafe { libc::munmap(ptr.as_ptr().cast(), *len) };
            let op = GntdevUnmapGrantRef {
                index: *index,
                count: *count,
                pad: 0,
            };
            // SAFETY: a plain struct the kernel only reads; it releases the grants reserved at
            // `index`, whose mapping is gone.
            let _ = unsafe { ioctls::gntdev_unmap_grant_ref(file.as_raw_fd(), &op) };
        }
        // A simulated mapping unmaps itself when `inner` drops.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}

    #[test]
    fn mappings_are_send() {
        assert_send::<GrantMapping<'static, ReadWrite>>();
        assert_send::<GrantMapping<'static, ReadOnly>>();
        assert_send::<Gntdev>();
    }

    /// Every operation on a descriptor that is not gntdev answers the kernel's errno.
    #[test]
    fn a_descriptor_that_is_not_gntdev_answers_enotty() {
        let dev = Gntdev {
            backend: Backend::Device(File::open("/dev/null").expect("/dev/null")),
        };
        let err = dev
            .map(DomainId::new(1), &[GrantRef::new(8)])
            .expect_err("map on /dev/null");
        assert!(
            matches!(
                err,
                Error::Map {
                    source: Errno::ENOTTY,
                    ..
                }
            ),
            "{err:?}"
        );
        let mut out = [0u8; 4];
        let mut segs = [CopySegment::from_grant(
            DomainId::new(1),
            GrantRef::new(8),
            0,
            &mut out,
        )];
        let err = dev.grant_copy(&mut segs).expect_err("copy on /dev/null");
        assert!(
            matches!(
                err,
                Error::GrantCopy {
                    source: Errno::ENOTTY,
                    segments: 1
                }
            ),
            "{err:?}"
        );
        assert_eq!(segs[0].status(), None);
    }

    #[test]
    fn bad_segments_are_refused_before_the_kernel_sees_them() {
        let dev = Gntdev {
            backend: Backend::Device(File::open("/dev/null").expect("/dev/null")),
        };
        let big = vec![0u8; PAGE_SIZE + 1];
        let d = DomainId::new(1);
        let g = GrantRef::new(8);
        let mut segs = [
            CopySegment::to_grant(b"ok", d, g, 0),
            CopySegment::to_grant(b"abc", d, g, 4094),
        ];
        let err = dev.grant_copy(&mut segs).expect_err("crosses");
        assert!(matches!(
            err,
            Error::CopyArgs {
                index: 1,
                problem: CopyProblem::CrossesPage {
                    offset: 4094,
                    len: 3
                }
            }
        ));
        let mut segs = [CopySegment::to_grant(&big, d, g, 0)];
        let err = dev.grant_copy(&mut segs).expect_err("too long");
        assert!(matches!(
            err,
            Error::CopyArgs {
                index: 0,
                problem: CopyProblem::TooLong { .. }
            }
        ));
        let mut segs = [CopySegment::between_grants((d, g, 4000), (d, g, 0), 200)];
        assert!(dev.grant_copy(&mut segs).is_err());
        assert!(dev.grant_copy(&mut []).is_ok());
    }

    #[test]
    fn error_messages_name_the_domain_and_refs() {
        let refs: Vec<_> = (8..14).map(GrantRef::new).collect();
        assert_eq!(describe_refs(&refs[..2]), "8, 9");
        assert_eq!(describe_refs(&refs), "8, 9, 10, 11, ... (6 in all)");
        let e = Error::Map {
            domain: DomainId::new(3),
            refs: describe_refs(&refs[..1]),
            access: "writable",
            source: Errno::EINVAL,
        };
        assert_eq!(e.to_string(), "domain 3: cannot map grant refs 8 writable");
    }
}
