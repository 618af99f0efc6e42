//! Domain memory: claims, populating the physmap, and reservations (`memory_op`).

use crate::abi::{
    XENMEM_claim_pages, XENMEM_current_reservation, XENMEM_decrease_reservation,
    XENMEM_increase_reservation, XENMEM_maximum_reservation, XENMEM_populate_physmap,
    XenMemoryReservation, XenPfn,
};
use crate::ctrl::XenCtrl;
use crate::error::{Error, Op, Result};
use crate::DomId;

impl XenCtrl {
    /// Claim memory for `domid` so that it can grow to `pages` pages in total: the difference
    /// from what it has now is set aside, later allocations for the domain draw on it, and
    /// nobody else can take it meanwhile. Admission is atomic: either the claim fits in
    /// unclaimed free memory, or it fails with `ENOMEM` and nothing is reserved. A domain has at
    /// most one claim; claiming 0 pages cancels it. (Xen 4.17's `XENMEM_claim_pages`.)
    ///
    /// # Errors
    ///
    /// [`Error::Xen`]: `ENOMEM` when the claim does not fit; `EINVAL` when the domain has a
    /// claim already, when `pages` is not above what it has or is above its `max_mem`, or when
    /// there is no such domain.
    ///
    /// # Examples
    ///
    /// ```
    /// use xenctrl::{CreateDomain, XenCtrl};
    ///
    /// let xc = XenCtrl::simulated(Default::default())?;
    /// let d = xc.create_domain(&CreateDomain::pv(1))?;
    /// xc.set_max_mem(d, 1024)?; // KiB: 256 pages
    /// xc.claim_pages(d, 256)?;
    /// assert_eq!(xc.physinfo()?.outstanding_pages, 256);
    /// xc.cancel_claim(d)?;
    /// assert_eq!(xc.physinfo()?.outstanding_pages, 0);
    /// # xc.destroy_domain(d)?;
    /// # Ok::<(), xenctrl::Error>(())
    /// ```
    pub fn claim_pages(&self, domid: DomId, pages: u64) -> Result<()> {
        let mut op = self.pool().alloc::<XenMemoryReservation<'_>>()?;
        *op = XenMemoryReservation::claim(domid, pages);
        self.memory_reservation_op(XENMEM_claim_pages, &mut op)?;
        Ok(())
    }

    /// Cancel the domain's outstanding claim, if any.
    ///
    /// # Errors
    ///
    /// As for [`XenCtrl::claim_pages`].
    pub fn cancel_claim(&self, domid: DomId) -> Result<()> {
        self.claim_pages(domid, 0)
    }

    /// Populate the domain's physmap at the given guest frames, `2^order` pages each. For a PV
    /// guest Xen writes back the machine frames it used. Returns how many extents were
    /// populated, which can be fewer than asked when memory or the domain's limit runs out.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] if Xen refuses outright.
    pub fn populate_physmap(
        &self,
        domid: DomId,
        order: u32,
        mem_flags: u32,
        gpfns: &mut [XenPfn],
    ) -> Result<usize> {
        self.reservation_with_extents(XENMEM_populate_physmap, domid, order, mem_flags, gpfns)
    }

    /// [`XenCtrl::populate_physmap`], failing with `ENOMEM` unless every extent was populated
    /// (the extents that were are left in place, as Xen leaves them).
    ///
    /// # Errors
    ///
    /// As for [`XenCtrl::populate_physmap`], and `ENOMEM` on a partial result.
    pub fn populate_physmap_exact(
        &self,
        domid: DomId,
        order: u32,
        mem_flags: u32,
        gpfns: &mut [XenPfn],
    ) -> Result<()> {
        let done = self.populate_physmap(domid, order, mem_flags, gpfns)?;
        if done == gpfns.len() {
            Ok(())
        } else {
            Err(Error::xen(
                Op::PopulatePhysmap,
                Some(domid),
                crate::Errno::ENOMEM,
            ))
        }
    }

    /// Give the domain `nr_extents` more extents of `2^order` pages, wherever Xen likes
    /// (`XENMEM_increase_reservation`). Returns how many were added.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] if Xen refuses outright.
    pub fn increase_reservation(
        &self,
        domid: DomId,
        nr_extents: u64,
        order: u32,
        mem_flags: u32,
    ) -> Result<usize> {
        let mut op = self.pool().alloc::<XenMemoryReservation<'_>>()?;
        *op = XenMemoryReservation::anywhere(domid, nr_extents, order, mem_flags);
        let done = self.memory_reservation_op(XENMEM_increase_reservation, &mut op)?;
        extents_done(Op::IncreaseReservation, done, nr_extents)
    }

    /// Take the extents at the given guest frames away from the domain
    /// (`XENMEM_decrease_reservation`). Returns how many were released.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] if Xen refuses outright.
    pub fn decrease_reservation(
        &self,
        domid: DomId,
        order: u32,
        gpfns: &mut [XenPfn],
    ) -> Result<usize> {
        self.reservation_with_extents(XENMEM_decrease_reservation, domid, order, 0, gpfns)
    }

    /// Pages the domain has now (`XENMEM_current_reservation`).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with `ESRCH` when there is no such domain.
    pub fn current_reservation(&self, domid: DomId) -> Result<u64> {
        self.memory_domid_op(Op::CurrentReservation, XENMEM_current_reservation, domid)
    }

    /// The domain's page limit (`XENMEM_maximum_reservation`).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with `ESRCH` when there is no such domain.
    pub fn maximum_reservation(&self, domid: DomId) -> Result<u64> {
        self.memory_domid_op(Op::MaximumReservation, XENMEM_maximum_reservation, domid)
    }

    fn reservation_with_extents(
        &self,
        cmd: u64,
        domid: DomId,
        order: u32,
        mem_flags: u32,
        gpfns: &mut [XenPfn],
    ) -> Result<usize> {
        let what = if cmd == XENMEM_populate_physmap {
            Op::PopulatePhysmap
        } else {
            Op::DecreaseReservation
        };
        let nr = gpfns.len() as u64;
        let mut extents = self.pool().bounce_in_out(gpfns)?;
        let done = {
            let mut op = self.pool().alloc::<XenMemoryReservation<'_>>()?;
            *op =
                XenMemoryReservation::with_extents(domid, order, mem_flags, extents.guest_handle());
            self.memory_reservation_op(cmd, &mut op)?
        };
        extents.finish();
        extents_done(what, done, nr)
    }
}

fn extents_done(op: Op, done: u64, asked: u64) -> Result<usize> {
    if done > asked {
        return Err(Error::BadReply {
            op,
            detail: format!("{done} extents done of {asked} asked"),
        });
    }
    usize::try_from(done).map_err(|_| Error::BadReply {
        op,
        detail: format!("{done} extents"),
    })
}
