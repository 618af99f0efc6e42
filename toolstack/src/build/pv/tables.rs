//! The PV initial page tables: how many libxenguest allocates (`count_pgtables`) and what
//! they hold (`setup_pgtables_pv`), in our own terms.
//!
//! A *mapping* maps the virtual range `from..=to` (48-bit, masked) to consecutive frames from
//! `pfn`. Its tables sit in consecutive frames from `tables_pfn`, level by level, top first:
//! the L4 (only in the first mapping), then the L3s, L2s and L1s. The tables of one level
//! cover an aligned range, one table per table span; where an earlier mapping already has a
//! table for part of that range, the later mapping uses it instead of allocating its own.

use std::collections::BTreeMap;

use xenctrl::x86::{Level, PageTable, Pte, PteFlags, ENTRIES_PER_TABLE};

use crate::build::plan::PlanError;

/// Virtual addresses are 48 bits; page-table ranges are kept in this masked form.
const VADDR_MASK: u64 = (1 << 48) - 1;

/// The rights of a table entry that points at another table (`lvl_prot[1..3]`).
const TABLE_FLAGS: PteFlags = PteFlags::PRESENT
    .union(PteFlags::RW)
    .union(PteFlags::ACCESSED)
    .union(PteFlags::DIRTY)
    .union(PteFlags::USER);
/// The rights of an L1 entry (`lvl_prot[0]`); RW is dropped for page-table frames.
const LEAF_FLAGS: PteFlags = PteFlags::PRESENT
    .union(PteFlags::RW)
    .union(PteFlags::ACCESSED);

/// The tables of one level of one mapping: `count` tables in frames from `pfn`, covering the
/// aligned range `from..=to`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct LevelTables {
    pub from: u64,
    pub to: u64,
    pub pfn: u64,
    pub count: u64,
}

/// One virtual mapping and its page tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Mapping {
    /// First virtual address (masked to 48 bits).
    pub from: u64,
    /// Last virtual address (masked, inclusive).
    pub to: u64,
    /// The frame `from` maps.
    pub pfn: u64,
    /// The first table frame.
    pub tables_pfn: u64,
    /// How many table frames.
    pub tables: u64,
    /// By [`Level::depth`]: L1 at 0 to L4 at 3.
    pub levels: [LevelTables; 4],
}

impl Mapping {
    /// Counts the tables a mapping of `from..=to` to frames from `pfn` needs beside
    /// `existing`, with its tables from frame `tables_pfn`.
    pub fn count(
        existing: &[Mapping],
        from: u64,
        to: u64,
        tables_pfn: u64,
        pfn: u64,
    ) -> Result<Mapping, PlanError> {
        let (from, to) = (from & VADDR_MASK, to & VADDR_MASK);
        for e in existing {
            if from < e.to && to > e.from {
                return Err(PlanError::MappingsOverlap {
                    from,
                    to,
                    other_from: e.from,
                    other_to: e.to,
                });
            }
        }
        let mut levels = [LevelTables::default(); 4];
        let mut tables = 0u64;
        for level in Level::TOP_DOWN {
            let d = level.depth() as usize;
            let mut lt = LevelTables {
                pfn: tables_pfn + tables,
                ..LevelTables::default()
            };
            if level == Level::L4 {
                // One L4, in the first mapping only.
                if existing.is_empty() {
                    lt.from = 0;
                    lt.to = VADDR_MASK;
                    lt.count = 1;
                }
            } else {
                let span_mask = level.table_span() - 1;
                let (mut lo, mut hi) = (from & !span_mask, to | span_mask);
                let mut shared = false;
                for e in existing.iter().map(|e| e.levels[d]).filter(|e| e.count > 0) {
                    if lo >= e.from && hi <= e.to {
                        shared = true;
                        break;
                    }
                    if lo >= e.from && lo <= e.to {
                        lo = e.to + 1;
                    }
                    if hi >= e.from && hi <= e.to {
                        hi = e.from.saturating_sub(1);
                    }
                }
                if !shared && lo < hi {
                    lt.from = lo;
                    lt.to = hi;
                    lt.count = ((hi - lo) >> level.table_span().trailing_zeros()) + 1;
                }
            }
            tables += lt.count;
            levels[d] = lt;
        }
        Ok(Mapping {
            from,
            to,
            pfn,
            tables_pfn,
            tables,
            levels,
        })
    }
}

/// The contents of every table frame of `mappings`, by frame, entries holding `mfn(pfn)`.
pub(super) fn render(
    mappings: &[Mapping],
    mfn: &dyn Fn(u64) -> Result<u64, PlanError>,
) -> Result<Vec<(u64, PageTable)>, PlanError> {
    let mut out: BTreeMap<u64, PageTable> = BTreeMap::new();
    for m in mappings {
        for lt in m.levels.iter().filter(|l| l.count > 0) {
            for k in 0..lt.count {
                out.insert(lt.pfn + k, PageTable::new());
            }
        }
    }
    let is_table = |pfn: u64| {
        mappings
            .iter()
            .any(|m| pfn >= m.tables_pfn && pfn - m.tables_pfn < m.tables)
    };
    for level in Level::TOP_DOWN {
        let d = level.depth() as usize;
        let shift = level.shift();
        for m1 in mappings {
            let lt = m1.levels[d];
            if lt.count == 0 {
                continue;
            }
            for m2 in mappings {
                // What this level's entries point at: the next level's tables, or for L1 the
                // mapped frames.
                let (cfrom, cto, cpfn) = match level.below() {
                    Some(_) => {
                        let c = m2.levels[d - 1];
                        if c.count == 0 {
                            continue;
                        }
                        (c.from, c.to, c.pfn)
                    }
                    None => (m2.from, m2.to, m2.pfn),
                };
                let lo = lt.from.max(cfrom);
                let hi = lt.to.min(cto);
                if lo > hi {
                    continue;
                }
                let first = (lo - lt.from) >> shift;
                let last = (hi - lt.from) >> shift;
                let child0 = cpfn + ((lo - cfrom) >> shift);
                for p in first..=last {
                    let child = child0 + (p - first);
                    let flags = match level {
                        Level::L1 if is_table(child) => LEAF_FLAGS - PteFlags::RW,
                        Level::L1 => LEAF_FLAGS,
                        _ => TABLE_FLAGS,
                    };
                    let machine = mfn(child)?;
                    let pte = Pte::new(machine, flags).ok_or(PlanError::MfnTooLarge {
                        pfn: child,
                        mfn: machine,
                    })?;
                    let per = ENTRIES_PER_TABLE as u64;
                    let table = lt.pfn + p / per;
                    let slot = usize::try_from(p % per).unwrap_or(ENTRIES_PER_TABLE);
                    if let Some(t) = out.get_mut(&table) {
                        t.set(slot, pte);
                    }
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIRT_BASE: u64 = 0xffff_ffff_8000_0000;

    #[test]
    fn a_small_bootstrap_mapping_needs_one_table_per_level() {
        // 16 MiB from VIRT_BASE: one L4, one L3, one L2, eight L1s.
        let m = Mapping::count(&[], VIRT_BASE, VIRT_BASE + (16 << 20) - 1, 100, 0).unwrap();
        let counts: Vec<_> = m.levels.iter().map(|l| l.count).collect();
        assert_eq!(counts, vec![8, 1, 1, 1]);
        assert_eq!(m.tables, 11);
        assert_eq!(m.levels[3].pfn, 100, "the L4 comes first");
        assert_eq!(m.levels[2].pfn, 101);
        assert_eq!(m.levels[1].pfn, 102);
        assert_eq!(m.levels[0].pfn, 103);
    }

    #[test]
    fn a_second_mapping_shares_the_l4_and_overlapping_tables() {
        let m0 = Mapping::count(&[], VIRT_BASE, VIRT_BASE + (4 << 20) - 1, 10, 0).unwrap();
        // In L4 slot 1: its own L3, L2, L1 (one each for 8 KiB).
        let m1 = Mapping::count(&[m0], 0x80_0000_0000, 0x80_0000_1fff, 50, 40).unwrap();
        assert_eq!(m1.levels[3].count, 0);
        assert_eq!(m1.tables, 3);
        assert_eq!(m1.levels[2].pfn, 50);
        // In the same 1 GiB as m0, past its 2 MiB tables: only L1s of its own.
        let m2 = Mapping::count(
            &[m0],
            VIRT_BASE + (8 << 20),
            VIRT_BASE + (10 << 20) - 1,
            60,
            70,
        )
        .unwrap();
        assert_eq!(m2.levels.map(|l| l.count), [1, 0, 0, 0]);
    }

    #[test]
    fn overlapping_mappings_are_refused() {
        let m0 = Mapping::count(&[], VIRT_BASE, VIRT_BASE + (4 << 20) - 1, 10, 0).unwrap();
        let err = Mapping::count(&[m0], VIRT_BASE + 4096, VIRT_BASE + 8191, 20, 30).unwrap_err();
        assert!(matches!(err, PlanError::MappingsOverlap { .. }), "{err}");
    }
}
