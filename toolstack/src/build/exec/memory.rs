//! A new guest's memory: populating it, and writing it through foreign mappings in large
//! batches.
//!
//! Populate asks for 2 MiB extents while they fit (aligned, for a translated guest) and falls
//! back to 4 KiB pages for the rest, and for good once Xen has no more 2 MiB runs, as
//! libxenguest's `meminit_pv` does. (libxenguest tries 1 GiB extents first for HVM guests;
//! from dom0 those populate nothing on Xen 4.17, so they are not asked for.)
//!
//! Writes are collected first, then applied run by run: the guest frames they touch are
//! merged into runs of consecutive frames, each run is mapped with one
//! `IOCTL_PRIVCMD_MMAPBATCH_V2` of up to [`BATCH_PAGES`] pages, and every write (or part of
//! one) inside it is copied in. A 60 MiB kernel is a handful of mappings, not one per page.

use xenctrl::volatile::ReadWrite;
use xenctrl::{DomId, DomainId, XenCtrl};

use super::BuildError;
use crate::build::plan::{PfnRange, PAGE_SHIFT, PAGE_SIZE};

/// Pages per 2 MiB superpage extent.
const SUPERPAGE_PAGES: u64 = 512;
/// 2 MiB extents per populate hypercall: 512 MiB between progress reports.
const SUPERPAGE_EXTENTS_PER_CALL: u64 = 256;
/// 4 KiB extents per populate hypercall (the same 512 MiB).
const PAGE_EXTENTS_PER_CALL: u64 = SUPERPAGE_EXTENTS_PER_CALL * SUPERPAGE_PAGES;
/// The most pages one foreign mapping covers: 64 MiB.
pub const BATCH_PAGES: usize = 16384;

/// Zeros to copy from: [`VolatileSlice::fill`](xenctrl::volatile::VolatileSlice::fill) goes
/// byte by byte, a copy of zeros word by word.
static ZEROS: [u8; 65536] = [0; 65536];

/// Populates `ranges` of guest frames of `domid`. For a PV guest (`translated` false) the
/// ranges must be `[0, n)` and the result is the p2m: the machine frame of each guest frame,
/// as Xen wrote them back; a translated guest's frames are its guest frames, and the result
/// is empty. `progress` gets pages done and pages in all.
///
/// # Errors
///
/// [`BuildError::Xen`]: the hypercall failed, or (`ENOMEM`) Xen gave fewer 4 KiB pages than
/// asked for.
pub fn populate(
    xc: &XenCtrl,
    domid: DomId,
    ranges: &[PfnRange],
    translated: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<u64>, BuildError> {
    let total: u64 = ranges.iter().map(|r| r.count).sum();
    let mut p2m = Vec::new();
    if !translated {
        p2m.reserve(usize::try_from(total).unwrap_or(0));
    }
    let fail = BuildError::xen;
    let mut done = 0u64;
    let mut superpages = true;
    for r in ranges {
        let end = r.end();
        let mut pfn = r.start;
        while pfn < end {
            let left = end - pfn;
            if superpages && pfn % SUPERPAGE_PAGES == 0 && left >= SUPERPAGE_PAGES {
                let n = (left / SUPERPAGE_PAGES).min(SUPERPAGE_EXTENTS_PER_CALL);
                let mut gpfns: Vec<u64> = (0..n).map(|i| pfn + i * SUPERPAGE_PAGES).collect();
                let got = xc
                    .populate_physmap(domid, 9, 0, &mut gpfns)
                    .map_err(fail("cannot populate its memory"))?;
                if !translated {
                    for &mfn in gpfns.iter().take(got) {
                        p2m.extend(mfn..mfn + SUPERPAGE_PAGES);
                    }
                }
                let pages = got as u64 * SUPERPAGE_PAGES;
                pfn += pages;
                done += pages;
                if (got as u64) < n {
                    // No more 2 MiB runs: 4 KiB pages from here on.
                    superpages = false;
                }
            } else {
                // 4 KiB pages up to the next 2 MiB boundary (while superpages may still come),
                // else to the end.
                let stop = if superpages {
                    end.min((pfn / SUPERPAGE_PAGES + 1) * SUPERPAGE_PAGES)
                } else {
                    end
                };
                let n = (stop - pfn).min(PAGE_EXTENTS_PER_CALL);
                let mut gpfns: Vec<u64> = (pfn..pfn + n).collect();
                let got = xc
                    .populate_physmap(domid, 0, 0, &mut gpfns)
                    .map_err(fail("cannot populate its memory"))?;
                if !translated {
                    p2m.extend_from_slice(&gpfns[..got]);
                }
                if (got as u64) < n {
                    return Err(BuildError::Xen {
                        what: "cannot populate its memory",
                        source: xenctrl::Error::Xen {
                            op: xenctrl::Op::PopulatePhysmap,
                            domid: Some(domid),
                            source: xenctrl::Errno::ENOMEM,
                        },
                    });
                }
                pfn += n;
                done += n;
            }
            progress(done, total);
        }
    }
    Ok(p2m)
}

/// What goes into guest memory at one place.
#[derive(Clone, Copy, Debug)]
pub enum Fill<'a> {
    /// These bytes.
    Bytes(&'a [u8]),
    /// This many zero bytes.
    Zero(u64),
}

/// One write to guest memory, at a byte address in the guest's frame space (pfn × 4096 +
/// offset).
#[derive(Clone, Copy, Debug)]
pub struct Write<'a> {
    /// Where.
    pub addr: u64,
    /// What.
    pub fill: Fill<'a>,
}

impl Write<'_> {
    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        match self.fill {
            Fill::Bytes(b) => b.len() as u64,
            Fill::Zero(n) => n,
        }
    }

    /// Whether it writes nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One past its last byte.
    pub fn end(&self) -> u64 {
        self.addr.saturating_add(self.len())
    }
}

/// How the guest's frames are named to Xen for mapping.
#[derive(Clone, Copy, Debug)]
pub enum Frames<'a> {
    /// A translated (PVH) guest: by guest frame.
    Translated,
    /// A PV guest: by machine frame, from this p2m (pfn → mfn).
    P2m(&'a [u64]),
}

impl Frames<'_> {
    fn frame(&self, pfn: u64) -> Result<u64, BuildError> {
        match self {
            Frames::Translated => Ok(pfn),
            Frames::P2m(p2m) => usize::try_from(pfn)
                .ok()
                .and_then(|i| p2m.get(i))
                .copied()
                .ok_or(BuildError::Unpopulated {
                    pfn,
                    pages: p2m.len() as u64,
                }),
        }
    }
}

/// What a batch of writes cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Bytes copied (zeros included).
    pub bytes: u64,
    /// Pages mapped.
    pub pages: u64,
    /// Foreign mappings made.
    pub mappings: u64,
}

/// Merges the guest frames `writes` touch into runs of consecutive frames.
fn runs(writes: &[Write<'_>]) -> Vec<PfnRange> {
    let mut out: Vec<PfnRange> = Vec::new();
    for w in writes {
        let first = w.addr >> PAGE_SHIFT;
        let last = (w.end() - 1) >> PAGE_SHIFT;
        match out.last_mut() {
            Some(r) if first <= r.end() => {
                let end = r.end().max(last + 1);
                r.count = end - r.start;
            }
            _ => out.push(PfnRange {
                start: first,
                count: last - first + 1,
            }),
        }
    }
    out
}

/// Applies `writes` to `domain`'s memory, in large batches (see the module notes). The writes
/// must not overlap.
///
/// # Errors
///
/// [`BuildError::OverlappingWrites`], [`BuildError::Unpopulated`] for a frame the p2m lacks,
/// [`BuildError::Xen`] when a mapping fails.
pub fn write_guest(
    xc: &XenCtrl,
    domain: DomainId,
    frames: Frames<'_>,
    writes: &[Write<'_>],
) -> Result<WriteStats, BuildError> {
    let mut writes: Vec<Write<'_>> = writes.iter().copied().filter(|w| !w.is_empty()).collect();
    writes.sort_by_key(|w| w.addr);
    for pair in writes.windows(2) {
        if pair[1].addr < pair[0].end() {
            return Err(BuildError::OverlappingWrites { addr: pair[1].addr });
        }
    }
    let mut stats = WriteStats::default();
    // Ends are sorted too (the writes are sorted and disjoint).
    let mut next = 0usize;
    for run in runs(&writes) {
        let mut start = run.start;
        while start < run.end() {
            let count = (run.end() - start).min(BATCH_PAGES as u64);
            let list = (start..start + count)
                .map(|pfn| frames.frame(pfn))
                .collect::<Result<Vec<u64>, _>>()?;
            let map = xc
                .map_foreign::<ReadWrite>(domain, &list)
                .map_err(BuildError::xen("cannot map its memory to load it"))?;
            stats.mappings += 1;
            stats.pages += count;
            let slice = map.slice();
            let lo = start << PAGE_SHIFT;
            let hi = (start + count) << PAGE_SHIFT;
            // Skip writes that ended before this chunk.
            while next < writes.len() && writes[next].end() <= lo {
                next += 1;
            }
            let mut i = next;
            while i < writes.len() && writes[i].addr < hi {
                let w = writes[i];
                let from = w.addr.max(lo);
                let to = w.end().min(hi);
                let bad = || BuildError::WriteOutOfBounds {
                    addr: from,
                    len: to - from,
                };
                let offset = usize::try_from(from - lo).map_err(|_| bad())?;
                match w.fill {
                    Fill::Bytes(b) => {
                        let s = usize::try_from(from - w.addr).map_err(|_| bad())?;
                        let e = usize::try_from(to - w.addr).map_err(|_| bad())?;
                        slice.write_from(offset, &b[s..e]).map_err(|_| bad())?;
                    }
                    Fill::Zero(_) => {
                        let mut at = offset;
                        let mut left = usize::try_from(to - from).map_err(|_| bad())?;
                        while left > 0 {
                            let n = left.min(ZEROS.len());
                            slice.write_from(at, &ZEROS[..n]).map_err(|_| bad())?;
                            at += n;
                            left -= n;
                        }
                    }
                }
                stats.bytes += to - from;
                i += 1;
            }
            start += count;
        }
    }
    Ok(stats)
}

/// The parts of `range` outside every range of `skip` (sorted and disjoint), in order.
pub fn outside(
    range: std::ops::Range<u64>,
    skip: &[std::ops::Range<u64>],
) -> Vec<std::ops::Range<u64>> {
    let mut parts = Vec::new();
    let mut at = range.start;
    // The first range of `skip` that ends after the start.
    let first = skip.partition_point(|r| r.end <= range.start);
    for r in &skip[first..] {
        if r.start >= range.end {
            break;
        }
        if r.start > at {
            parts.push(at..r.start);
        }
        at = at.max(r.end);
    }
    if at < range.end {
        parts.push(at..range.end);
    }
    parts
}

/// The parts of `areas` (byte ranges) that no write in `data` covers, as zero writes: what a
/// segment needs cleared besides what is loaded into it.
pub fn zero_gaps(areas: &[(u64, u64)], data: &[Write<'_>]) -> Vec<Write<'static>> {
    let mut covered: Vec<(u64, u64)> = data
        .iter()
        .filter(|w| !w.is_empty())
        .map(|w| (w.addr, w.end()))
        .collect();
    covered.sort_unstable();
    let mut areas: Vec<(u64, u64)> = areas.iter().copied().filter(|(a, b)| a < b).collect();
    areas.sort_unstable();
    // Merge overlapping areas so no byte is cleared twice.
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (a, b) in areas {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let mut out = Vec::new();
    for (start, end) in merged {
        let mut at = start;
        for &(cs, ce) in &covered {
            if ce <= at || cs >= end {
                continue;
            }
            if cs > at {
                out.push(Write {
                    addr: at,
                    fill: Fill::Zero(cs - at),
                });
            }
            at = at.max(ce);
            if at >= end {
                break;
            }
        }
        if at < end {
            out.push(Write {
                addr: at,
                fill: Fill::Zero(end - at),
            });
        }
    }
    out
}

/// A range of guest frames as a byte range.
pub fn byte_range(r: PfnRange) -> (u64, u64) {
    (r.start * PAGE_SIZE, r.end() * PAGE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zeros(v: &[Write<'_>]) -> Vec<(u64, u64)> {
        v.iter().map(|w| (w.addr, w.end())).collect()
    }

    #[test]
    fn gaps_are_what_no_write_covers() {
        let data = [
            Write {
                addr: 0x1010,
                fill: Fill::Bytes(&[1; 0x10]),
            },
            Write {
                addr: 0x3000,
                fill: Fill::Bytes(&[1; 0x1000]),
            },
        ];
        let gaps = zero_gaps(&[(0x1000, 0x5000), (0x4800, 0x6000)], &data);
        assert_eq!(
            zeros(&gaps),
            [(0x1000, 0x1010), (0x1020, 0x3000), (0x4000, 0x6000)]
        );
        assert!(zero_gaps(&[(0x3000, 0x4000)], &data).is_empty());
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of one range, as outside returns
    fn outside_leaves_out_the_skipped_ranges() {
        let skip = [0x10..0x20, 0x30..0x40, 0x40..0x50, 0x90..0xa0];
        assert_eq!(
            outside(0..0x100, &skip),
            [0..0x10, 0x20..0x30, 0x50..0x90, 0xa0..0x100]
        );
        assert_eq!(outside(0x18..0x35, &skip), [0x20..0x30]);
        assert_eq!(outside(0x30..0x50, &skip), []);
        assert_eq!(outside(0x50..0x60, &skip), [0x50..0x60]);
        assert_eq!(outside(0x95..0x98, &skip), []);
        assert_eq!(outside(0..0x100, &[]), [0..0x100]);
        assert_eq!(outside(5..5, &skip), []);
    }

    #[test]
    fn runs_merge_adjacent_frames() {
        let w = |addr, n| Write {
            addr,
            fill: Fill::Zero(n),
        };
        let r = runs(&[w(0x1000, 0x10), w(0x1ff0, 0x20), w(0x5000, 1)]);
        assert_eq!(
            r,
            [
                PfnRange { start: 1, count: 2 },
                PfnRange { start: 5, count: 1 }
            ]
        );
    }
}
