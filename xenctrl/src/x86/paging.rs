//! x86-64 4-level paging: the entry format, page tables as values, and a walker over any
//! source of frames.
//!
//! A virtual address is split into four 9-bit indices (L4 at bits 39-47, L3 at 30-38, L2 at
//! 21-29, L1 at 12-20) and a 12-bit offset; bits 48-63 must copy bit 47 (a *canonical*
//! address). An entry holds a frame number in bits 12-51 and flags in the rest. A present L3
//! or L2 entry with `PSE` maps a 1 GiB or 2 MiB page instead of pointing at the next table.
//!
//! Frame numbers are whatever the tables hold: machine frames for a PV guest, guest frames
//! for an HVM guest's own tables. The walker reads tables through [`FrameSource`], so it runs
//! over a builder's plan, a simulator's memory or a foreign mapping alike, and it never trusts
//! what it reads: a missing frame, a non-present entry or a runaway enumeration is an error,
//! never a panic.

use thiserror::Error;

/// Bytes in a 4 KiB page.
pub const PAGE_SIZE: u64 = 4096;
/// `log2(PAGE_SIZE)`.
pub const PAGE_SHIFT: u32 = 12;
/// Entries in one page table.
pub const ENTRIES_PER_TABLE: usize = 512;

/// The bits of an entry that hold the frame number (bits 12-51).
const FRAME_MASK: u64 = 0x000f_ffff_ffff_f000;

bitflags::bitflags! {
    /// The flag bits of a page-table entry.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PteFlags: u64 {
        /// The entry is valid.
        const PRESENT = 1 << 0;
        /// Writes are allowed (through every level).
        const RW = 1 << 1;
        /// User mode may access it (through every level).
        const USER = 1 << 2;
        /// Write-through caching.
        const PWT = 1 << 3;
        /// Caching disabled.
        const PCD = 1 << 4;
        /// Set by the processor on access.
        const ACCESSED = 1 << 5;
        /// Set by the processor on a write (leaf entries).
        const DIRTY = 1 << 6;
        /// In an L3 or L2 entry: maps a 1 GiB or 2 MiB page.
        const PSE = 1 << 7;
        /// Global (leaf entries).
        const GLOBAL = 1 << 8;
        /// No execute.
        const NX = 1 << 63;
    }
}

/// One page-table entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Pte(pub u64);

impl Pte {
    /// An entry for `frame` with `flags`; `None` if the frame does not fit in bits 12-51.
    pub fn new(frame: u64, flags: PteFlags) -> Option<Pte> {
        let addr = frame.checked_shl(PAGE_SHIFT)?;
        if addr & !FRAME_MASK != 0 || addr >> PAGE_SHIFT != frame {
            return None;
        }
        Some(Pte(addr | flags.bits()))
    }
    /// The frame number it holds.
    pub fn frame(self) -> u64 {
        (self.0 & FRAME_MASK) >> PAGE_SHIFT
    }
    /// Its known flags.
    pub fn flags(self) -> PteFlags {
        PteFlags::from_bits_truncate(self.0)
    }
    /// Whether the present bit is set.
    pub fn is_present(self) -> bool {
        self.0 & PteFlags::PRESENT.bits() != 0
    }
}

/// A level of the paging hierarchy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Page table: entries map 4 KiB pages.
    L1,
    /// Page directory: entries map 2 MiB.
    L2,
    /// Page-directory-pointer table: entries map 1 GiB.
    L3,
    /// The top (PML4): entries map 512 GiB. `cr3` points at it.
    L4,
}

impl Level {
    /// All levels, top first.
    pub const TOP_DOWN: [Level; 4] = [Level::L4, Level::L3, Level::L2, Level::L1];

    /// The shift of the address bits that index a table of this level (12, 21, 30, 39).
    pub fn shift(self) -> u32 {
        PAGE_SHIFT + 9 * self.depth()
    }
    /// 0 for L1 up to 3 for L4.
    pub fn depth(self) -> u32 {
        match self {
            Level::L1 => 0,
            Level::L2 => 1,
            Level::L3 => 2,
            Level::L4 => 3,
        }
    }
    /// The bytes one entry of this level covers.
    pub fn entry_span(self) -> u64 {
        1 << self.shift()
    }
    /// The bytes one whole table of this level covers.
    pub fn table_span(self) -> u64 {
        1 << (self.shift() + 9)
    }
    /// The index of `va` in a table of this level.
    pub fn index(self, va: u64) -> usize {
        // 9 bits: always below 512.
        ((va >> self.shift()) & 0x1ff) as usize
    }
    /// The level below (`None` for L1).
    pub fn below(self) -> Option<Level> {
        match self {
            Level::L4 => Some(Level::L3),
            Level::L3 => Some(Level::L2),
            Level::L2 => Some(Level::L1),
            Level::L1 => None,
        }
    }
}

/// Whether `va` is canonical for 48-bit virtual addresses: bits 48-63 equal bit 47.
pub fn canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1_ffff
}

/// Sign-extends a 48-bit address to a canonical one.
fn sign_extend(va: u64) -> u64 {
    if va & (1 << 47) != 0 {
        va | 0xffff_0000_0000_0000
    } else {
        va & 0x0000_ffff_ffff_ffff
    }
}

/// One page table: 512 entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageTable(Box<[u64; ENTRIES_PER_TABLE]>);

impl Default for PageTable {
    fn default() -> Self {
        PageTable(Box::new([0; ENTRIES_PER_TABLE]))
    }
}

impl PageTable {
    /// An empty table (no entry present).
    pub fn new() -> PageTable {
        PageTable::default()
    }
    /// Reads a table from a page's bytes (little-endian entries); `None` unless exactly 4096.
    pub fn from_bytes(bytes: &[u8]) -> Option<PageTable> {
        if bytes.len() != ENTRIES_PER_TABLE * 8 {
            return None;
        }
        let mut t = PageTable::new();
        for (e, chunk) in t.0.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *e = u64::from_le_bytes(b);
        }
        Some(t)
    }
    /// The page's bytes, as the processor reads them.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|e| e.to_le_bytes()).collect()
    }
    /// Entry `index` (`None` past 511).
    pub fn get(&self, index: usize) -> Option<Pte> {
        self.0.get(index).map(|&e| Pte(e))
    }
    /// Sets entry `index`; `false` (and nothing changes) past 511.
    pub fn set(&mut self, index: usize, pte: Pte) -> bool {
        match self.0.get_mut(index) {
            Some(e) => {
                *e = pte.0;
                true
            }
            None => false,
        }
    }
    /// The entries.
    pub fn entries(&self) -> &[u64; ENTRIES_PER_TABLE] {
        &self.0
    }
}

/// Where the walker reads page tables from.
pub trait FrameSource {
    /// Entry `index` (0-511) of the table in `frame`, or `None` if this source has no such
    /// frame.
    fn entry(&self, frame: u64, index: usize) -> Option<u64>;
}

impl<F: Fn(u64, usize) -> Option<u64>> FrameSource for F {
    fn entry(&self, frame: u64, index: usize) -> Option<u64> {
        self(frame, index)
    }
}

/// The size of a mapped page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageSize {
    /// 4 KiB, from an L1 entry.
    Size4K,
    /// 2 MiB, from an L2 entry with PSE.
    Size2M,
    /// 1 GiB, from an L3 entry with PSE.
    Size1G,
}

impl PageSize {
    /// Its size in bytes.
    pub fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => 1 << 12,
            PageSize::Size2M => 1 << 21,
            PageSize::Size1G => 1 << 30,
        }
    }
}

/// Where a virtual address leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The 4 KiB frame holding the address (inside a large page, the frame of that 4 KiB part).
    pub frame: u64,
    /// The offset in that frame.
    pub offset: u64,
    /// The size of the page that maps it.
    pub size: PageSize,
    /// The effective rights: `RW` and `USER` only if every level grants them, `NX` if any
    /// level sets it; the other flags are the leaf's.
    pub flags: PteFlags,
    /// The frames of the tables walked, L4 first (unused levels 0 for large pages).
    pub tables: [u64; 4],
    /// How many of `tables` were walked.
    pub depth: usize,
}

/// A run of virtual memory mapped by one leaf entry, found by [`Mapping::enumerate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Its first virtual address (canonical).
    pub va: u64,
    /// The first frame it maps.
    pub frame: u64,
    /// The page size.
    pub size: PageSize,
    /// The effective rights, as in [`Translation::flags`].
    pub flags: PteFlags,
}

/// Why a walk failed.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum WalkError {
    /// The address is not canonical.
    #[error("virtual address {va:#x} is not canonical (bits 48-63 must copy bit 47)")]
    NonCanonical {
        /// The address.
        va: u64,
    },
    /// A table frame could not be read.
    #[error("the {level:?} table at frame {frame:#x} cannot be read (walking {va:#x})")]
    MissingFrame {
        /// The address being translated.
        va: u64,
        /// The level of the table.
        level: Level,
        /// Its frame.
        frame: u64,
    },
    /// An entry on the way is not present.
    #[error("{va:#x} is not mapped: entry {index} of the {level:?} table at frame {frame:#x} is not present")]
    NotPresent {
        /// The address being translated.
        va: u64,
        /// The level of the table.
        level: Level,
        /// Its frame.
        frame: u64,
        /// The entry's index.
        index: usize,
    },
    /// PSE in an L4 entry, which x86-64 reserves.
    #[error("entry {index} of the L4 table at frame {frame:#x} sets PSE, which is reserved there")]
    ReservedPse {
        /// The L4's frame.
        frame: u64,
        /// The entry's index.
        index: usize,
    },
    /// An enumeration found more mappings than it was allowed to report.
    #[error("the page tables map more than {limit} pages")]
    TooManyMappings {
        /// The limit.
        limit: usize,
    },
}

fn combine(acc: PteFlags, entry: PteFlags) -> PteFlags {
    let mut out = entry & !(PteFlags::RW | PteFlags::USER | PteFlags::NX);
    out |= acc & entry & (PteFlags::RW | PteFlags::USER);
    out |= (acc | entry) & PteFlags::NX;
    out
}

/// Translates `va` through the tables rooted at the L4 in frame `root`.
///
/// # Errors
///
/// [`WalkError::NonCanonical`], [`WalkError::MissingFrame`], [`WalkError::NotPresent`],
/// [`WalkError::ReservedPse`].
pub fn walk(frames: &impl FrameSource, root: u64, va: u64) -> Result<Translation, WalkError> {
    if !canonical(va) {
        return Err(WalkError::NonCanonical { va });
    }
    let mut frame = root;
    let mut acc = PteFlags::RW | PteFlags::USER;
    let mut tables = [0u64; 4];
    for (depth, level) in Level::TOP_DOWN.into_iter().enumerate() {
        tables[depth] = frame;
        let index = level.index(va);
        let raw = frames
            .entry(frame, index)
            .ok_or(WalkError::MissingFrame { va, level, frame })?;
        let pte = Pte(raw);
        if !pte.is_present() {
            return Err(WalkError::NotPresent {
                va,
                level,
                frame,
                index,
            });
        }
        acc = combine(acc, pte.flags());
        let large = pte.flags().contains(PteFlags::PSE);
        if large && level == Level::L4 {
            return Err(WalkError::ReservedPse { frame, index });
        }
        let size = match level {
            Level::L1 => Some(PageSize::Size4K),
            Level::L2 if large => Some(PageSize::Size2M),
            Level::L3 if large => Some(PageSize::Size1G),
            _ => None,
        };
        if let Some(size) = size {
            let in_page = va & (size.bytes() - 1);
            // A large page's frame field is aligned to its size (the low bits hold PAT).
            let base = pte.frame() & !((size.bytes() >> PAGE_SHIFT) - 1);
            return Ok(Translation {
                frame: base + (in_page >> PAGE_SHIFT),
                offset: va & (PAGE_SIZE - 1),
                size,
                flags: acc,
                tables,
                depth: depth + 1,
            });
        }
        frame = pte.frame();
    }
    // The L1 level always returns above.
    Err(WalkError::NotPresent {
        va,
        level: Level::L1,
        frame,
        index: 0,
    })
}

impl Mapping {
    /// Every leaf mapping reachable from the L4 in frame `root`, in address order, at most
    /// `limit` of them. Each table is read once per reference, so a table graph with cycles
    /// or shared tables is enumerated as the processor would see it, and the limit bounds the
    /// work.
    ///
    /// # Errors
    ///
    /// [`WalkError::MissingFrame`], [`WalkError::ReservedPse`],
    /// [`WalkError::TooManyMappings`].
    pub fn enumerate(
        frames: &impl FrameSource,
        root: u64,
        limit: usize,
    ) -> Result<Vec<Mapping>, WalkError> {
        let mut out = Vec::new();
        visit(
            frames,
            root,
            Level::L4,
            0,
            PteFlags::RW | PteFlags::USER,
            limit,
            &mut out,
        )?;
        Ok(out)
    }
}

fn visit(
    frames: &impl FrameSource,
    frame: u64,
    level: Level,
    base: u64,
    acc: PteFlags,
    limit: usize,
    out: &mut Vec<Mapping>,
) -> Result<(), WalkError> {
    for index in 0..ENTRIES_PER_TABLE {
        // index < 512 and base has zeros below the table's span.
        let va = sign_extend(base | ((index as u64) << level.shift()));
        let raw = frames
            .entry(frame, index)
            .ok_or(WalkError::MissingFrame { va, level, frame })?;
        let pte = Pte(raw);
        if !pte.is_present() {
            continue;
        }
        let flags = combine(acc, pte.flags());
        let large = pte.flags().contains(PteFlags::PSE);
        let leaf = match (level, large) {
            (Level::L4, true) => return Err(WalkError::ReservedPse { frame, index }),
            (Level::L1, _) => Some(PageSize::Size4K),
            (Level::L2, true) => Some(PageSize::Size2M),
            (Level::L3, true) => Some(PageSize::Size1G),
            _ => None,
        };
        match (leaf, level.below()) {
            (Some(size), _) => {
                if out.len() >= limit {
                    return Err(WalkError::TooManyMappings { limit });
                }
                let base_frame = pte.frame() & !((size.bytes() >> PAGE_SHIFT) - 1);
                out.push(Mapping {
                    va,
                    frame: base_frame,
                    size,
                    flags,
                });
            }
            (None, Some(next)) => visit(frames, pte.frame(), next, va, flags, limit, out)?,
            (None, None) => {}
        }
    }
    Ok(())
}

/// Why a page could not be mapped into [`PageTables`].
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum MapError {
    /// The address is not canonical.
    #[error("virtual address {va:#x} is not canonical (bits 48-63 must copy bit 47)")]
    NonCanonical {
        /// The address.
        va: u64,
    },
    /// A frame does not fit an entry (bits 12-51).
    #[error("frame {frame:#x} does not fit a page-table entry")]
    FrameTooLarge {
        /// The frame.
        frame: u64,
    },
    /// The frame allocator gave no frame for a new table.
    #[error("no frame left for a {level:?} table (mapping {va:#x})")]
    OutOfFrames {
        /// The address being mapped.
        va: u64,
        /// The level of the table that was needed.
        level: Level,
    },
    /// The frame allocator gave a frame that already holds a table.
    #[error("frame {frame:#x} was handed out twice for page tables")]
    FrameInUse {
        /// The frame.
        frame: u64,
    },
    /// A large page maps the range already.
    #[error("{va:#x} is inside a large page mapped by the {level:?} table")]
    LargePageInTheWay {
        /// The address being mapped.
        va: u64,
        /// The level holding the large page.
        level: Level,
    },
    /// An entry on the way points at a table this set does not hold.
    #[error("entry {index} of the {level:?} table at {frame:#x} points at a table this set does not hold")]
    ForeignTable {
        /// The table's frame.
        frame: u64,
        /// Its level.
        level: Level,
        /// The entry.
        index: usize,
    },
}

/// Page tables under construction, held in memory and keyed by frame: a root L4 and the
/// tables below it. It is a [`FrameSource`], so what it builds can be walked at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageTables {
    root: u64,
    tables: std::collections::BTreeMap<u64, PageTable>,
}

impl PageTables {
    /// An empty L4 in frame `root`.
    pub fn new(root: u64) -> PageTables {
        let mut tables = std::collections::BTreeMap::new();
        tables.insert(root, PageTable::new());
        PageTables { root, tables }
    }
    /// The L4's frame.
    pub fn root(&self) -> u64 {
        self.root
    }
    /// Every table, by frame.
    pub fn tables(&self) -> impl Iterator<Item = (u64, &PageTable)> {
        self.tables.iter().map(|(&f, t)| (f, t))
    }
    /// How many table frames (the L4 included).
    pub fn len(&self) -> usize {
        self.tables.len()
    }
    /// Never: there is always an L4.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Maps the 4 KiB page at `va` to `frame` with the leaf entry's `leaf` flags. A missing
    /// table gets a frame from `alloc` and is linked with `table` flags; a present leaf is
    /// replaced.
    ///
    /// # Errors
    ///
    /// [`MapError::NonCanonical`], [`MapError::FrameTooLarge`], [`MapError::OutOfFrames`],
    /// [`MapError::FrameInUse`], [`MapError::LargePageInTheWay`], [`MapError::ForeignTable`].
    pub fn map_4k(
        &mut self,
        va: u64,
        frame: u64,
        leaf: PteFlags,
        table: PteFlags,
        alloc: &mut impl FnMut() -> Option<u64>,
    ) -> Result<(), MapError> {
        if !canonical(va) {
            return Err(MapError::NonCanonical { va });
        }
        let leaf_pte = Pte::new(frame, leaf).ok_or(MapError::FrameTooLarge { frame })?;
        let mut at = self.root;
        for level in [Level::L4, Level::L3, Level::L2] {
            let index = level.index(va);
            let pte = self
                .tables
                .get(&at)
                .and_then(|t| t.get(index))
                .unwrap_or_default();
            let next = if pte.is_present() {
                if pte.flags().contains(PteFlags::PSE) {
                    return Err(MapError::LargePageInTheWay { va, level });
                }
                if !self.tables.contains_key(&pte.frame()) {
                    return Err(MapError::ForeignTable {
                        frame: at,
                        level,
                        index,
                    });
                }
                pte.frame()
            } else {
                let below = level.below().unwrap_or(Level::L1);
                let new = alloc().ok_or(MapError::OutOfFrames { va, level: below })?;
                if self.tables.contains_key(&new) {
                    return Err(MapError::FrameInUse { frame: new });
                }
                let link = Pte::new(new, table).ok_or(MapError::FrameTooLarge { frame: new })?;
                self.tables.insert(new, PageTable::new());
                if let Some(t) = self.tables.get_mut(&at) {
                    t.set(index, link);
                }
                new
            };
            at = next;
        }
        if let Some(t) = self.tables.get_mut(&at) {
            t.set(Level::L1.index(va), leaf_pte);
        }
        Ok(())
    }
}

impl FrameSource for PageTables {
    fn entry(&self, frame: u64, index: usize) -> Option<u64> {
        self.tables.get(&frame)?.get(index).map(|p| p.0)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    struct Mem(HashMap<u64, PageTable>);

    impl FrameSource for Mem {
        fn entry(&self, frame: u64, index: usize) -> Option<u64> {
            self.0.get(&frame)?.get(index).map(|p| p.0)
        }
    }

    const TABLE: PteFlags = PteFlags::PRESENT
        .union(PteFlags::RW)
        .union(PteFlags::USER)
        .union(PteFlags::ACCESSED);

    fn pte(frame: u64, flags: PteFlags) -> Pte {
        Pte::new(frame, flags).unwrap()
    }

    /// L4 in frame 1, L3 in 2, L2 in 3, L1 in 4, mapping va 0xffff_ffff_8000_0000.. (slot
    /// 511/510/0) to frames 100.., and a 2 MiB page at the next L2 slot.
    fn sample() -> (Mem, u64) {
        let va: u64 = 0xffff_ffff_8000_0000;
        let mut m = Mem::default();
        let mut l4 = PageTable::new();
        l4.set(Level::L4.index(va), pte(2, TABLE));
        let mut l3 = PageTable::new();
        l3.set(Level::L3.index(va), pte(3, TABLE));
        let mut l2 = PageTable::new();
        l2.set(0, pte(4, TABLE));
        l2.set(
            1,
            pte(0x200, PteFlags::PRESENT | PteFlags::PSE | PteFlags::NX),
        );
        let mut l1 = PageTable::new();
        l1.set(0, pte(100, PteFlags::PRESENT | PteFlags::RW));
        l1.set(5, pte(105, PteFlags::PRESENT));
        m.0.insert(1, l4);
        m.0.insert(2, l3);
        m.0.insert(3, l2);
        m.0.insert(4, l1);
        (m, va)
    }

    #[test]
    fn levels_index_the_right_bits() {
        let va = 0xffff_ffff_8123_4567u64;
        assert_eq!(Level::L4.index(va), 511);
        assert_eq!(Level::L3.index(va), 510);
        assert_eq!(Level::L2.index(va), 9);
        assert_eq!(Level::L1.index(va), 0x34);
        assert_eq!(Level::L2.entry_span(), 2 << 20);
        assert_eq!(Level::L1.table_span(), 2 << 20);
        assert_eq!(Level::L4.shift(), 39);
    }

    #[test]
    fn pte_round_trips_and_rejects_wide_frames() {
        let p = pte(0x12345, PteFlags::PRESENT | PteFlags::NX);
        assert_eq!(p.frame(), 0x12345);
        assert_eq!(p.flags(), PteFlags::PRESENT | PteFlags::NX);
        assert_eq!(p.0, 0x8000_0000_1234_5001);
        assert!(Pte::new(1 << 40, PteFlags::PRESENT).is_none());
        assert!(Pte::new(u64::MAX, PteFlags::PRESENT).is_none());
        assert!(Pte::new((1 << 40) - 1, PteFlags::PRESENT).is_some());
    }

    #[test]
    fn table_bytes_round_trip() {
        let (m, _) = sample();
        let t = &m.0[&3];
        let bytes = t.to_bytes();
        assert_eq!(bytes.len(), 4096);
        assert_eq!(&PageTable::from_bytes(&bytes).unwrap(), t);
        assert!(PageTable::from_bytes(&bytes[1..]).is_none());
        let mut t = PageTable::new();
        assert!(!t.set(512, Pte(1)));
        assert!(t.get(512).is_none());
    }

    #[test]
    fn walk_resolves_4k_and_2m_pages_with_combined_rights() {
        let (m, va) = sample();
        let t = walk(&m, 1, va + 0x123).unwrap();
        assert_eq!((t.frame, t.offset, t.size), (100, 0x123, PageSize::Size4K));
        assert!(t.flags.contains(PteFlags::RW));
        assert!(!t.flags.contains(PteFlags::USER), "the leaf withholds USER");
        assert_eq!((t.tables, t.depth), ([1, 2, 3, 4], 4));
        let t = walk(&m, 1, va + 5 * 4096).unwrap();
        assert_eq!(t.frame, 105);
        assert!(!t.flags.contains(PteFlags::RW), "the leaf withholds RW");
        let t = walk(&m, 1, va + (2 << 20) + 3 * 4096 + 7).unwrap();
        assert_eq!((t.frame, t.offset, t.size), (0x203, 7, PageSize::Size2M));
        assert!(t.flags.contains(PteFlags::NX));
        assert_eq!(t.depth, 3);
    }

    #[test]
    fn walk_errors_name_the_place() {
        let (mut m, va) = sample();
        assert_eq!(
            walk(&m, 1, 0x0000_8000_0000_0000),
            Err(WalkError::NonCanonical {
                va: 0x0000_8000_0000_0000
            })
        );
        assert_eq!(
            walk(&m, 1, va + 4096),
            Err(WalkError::NotPresent {
                va: va + 4096,
                level: Level::L1,
                frame: 4,
                index: 1
            })
        );
        assert_eq!(
            walk(&m, 9, va),
            Err(WalkError::MissingFrame {
                va,
                level: Level::L4,
                frame: 9
            })
        );
        m.0.get_mut(&1)
            .unwrap()
            .set(0, pte(2, TABLE | PteFlags::PSE));
        assert_eq!(
            walk(&m, 1, 0),
            Err(WalkError::ReservedPse { frame: 1, index: 0 })
        );
        m.0.remove(&4);
        assert!(matches!(
            walk(&m, 1, va),
            Err(WalkError::MissingFrame {
                level: Level::L1,
                frame: 4,
                ..
            })
        ));
    }

    #[test]
    fn enumerate_lists_leaves_in_order_and_is_bounded() {
        let (m, va) = sample();
        let all = Mapping::enumerate(&m, 1, 100).unwrap();
        let got: Vec<_> = all.iter().map(|x| (x.va, x.frame, x.size)).collect();
        assert_eq!(
            got,
            vec![
                (va, 100, PageSize::Size4K),
                (va + 5 * 4096, 105, PageSize::Size4K),
                (va + (2 << 20), 0x200, PageSize::Size2M),
            ]
        );
        assert_eq!(
            Mapping::enumerate(&m, 1, 2),
            Err(WalkError::TooManyMappings { limit: 2 })
        );
    }

    #[test]
    fn enumerate_survives_a_cycle_within_its_limit() {
        // An L4 whose every entry points at itself: each level reuses it, so the graph is
        // 512^4 leaves deep; the limit stops the enumeration.
        let mut m = Mem::default();
        let mut l4 = PageTable::new();
        for i in 0..ENTRIES_PER_TABLE {
            l4.set(i, pte(1, TABLE));
        }
        m.0.insert(1, l4);
        assert_eq!(
            Mapping::enumerate(&m, 1, 1000),
            Err(WalkError::TooManyMappings { limit: 1000 })
        );
        // The walker itself follows the self-reference four times and ends.
        let t = walk(&m, 1, 0x1234_5000).unwrap();
        assert_eq!(t.frame, 1);
    }

    #[test]
    fn closures_are_frame_sources() {
        let (m, va) = sample();
        let f = |frame: u64, index: usize| m.entry(frame, index);
        assert_eq!(walk(&f, 1, va).unwrap().frame, 100);
    }

    #[test]
    fn built_tables_walk_back_to_what_was_mapped() {
        let seed = fastrand::u64(..);
        eprintln!("seed {seed}");
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut pt = PageTables::new(1);
        let mut next = 2u64;
        let mut alloc = || {
            next += 1;
            Some(next)
        };
        let mut want = std::collections::BTreeMap::new();
        for _ in 0..2000 {
            // Clustered addresses in both halves, so tables are shared and split.
            let slot = rng.u64(0..4) * (1 << 39) + rng.u64(0..64) * (1 << 21);
            let low = slot + rng.u64(0..512) * PAGE_SIZE;
            let va = if rng.bool() {
                sign_extend(low | (1 << 47))
            } else {
                low
            };
            let frame = rng.u64(1_000_000..2_000_000);
            let rw = rng.bool();
            let leaf = if rw {
                PteFlags::PRESENT | PteFlags::RW
            } else {
                PteFlags::PRESENT
            };
            pt.map_4k(va, frame, leaf, TABLE, &mut alloc).unwrap();
            want.insert(va, (frame, rw));
        }
        for (&va, &(frame, rw)) in &want {
            let t = walk(&pt, pt.root(), va + 5).unwrap();
            assert_eq!((t.frame, t.offset), (frame, 5), "seed {seed}: {va:#x}");
            assert_eq!(t.flags.contains(PteFlags::RW), rw, "seed {seed}");
        }
        let all = Mapping::enumerate(&pt, pt.root(), 10_000).unwrap();
        let got: Vec<_> = all.iter().map(|m| (m.va, m.frame)).collect();
        // In address order (the BTreeMap's), each page once.
        let expect: Vec<_> = want.iter().map(|(&va, &(f, _))| (va, f)).collect();
        assert_eq!(got, expect, "seed {seed}");
    }

    #[test]
    fn map_errors() {
        let mut pt = PageTables::new(1);
        let mut none = || None;
        assert_eq!(
            pt.map_4k(0x1000, 5, PteFlags::PRESENT, TABLE, &mut none),
            Err(MapError::OutOfFrames {
                va: 0x1000,
                level: Level::L3
            })
        );
        let mut same = || Some(1);
        assert_eq!(
            pt.map_4k(0x1000, 5, PteFlags::PRESENT, TABLE, &mut same),
            Err(MapError::FrameInUse { frame: 1 })
        );
        let mut n = 10;
        let mut alloc = || {
            n += 1;
            Some(n)
        };
        assert_eq!(
            pt.map_4k(1 << 47, 5, PteFlags::PRESENT, TABLE, &mut alloc),
            Err(MapError::NonCanonical { va: 1 << 47 })
        );
        assert_eq!(
            pt.map_4k(0, 1 << 40, PteFlags::PRESENT, TABLE, &mut alloc),
            Err(MapError::FrameTooLarge { frame: 1 << 40 })
        );
        pt.map_4k(0, 5, PteFlags::PRESENT, TABLE, &mut alloc)
            .unwrap();
        assert_eq!(pt.len(), 4);
        // A 2 MiB page in the L2 blocks 4 KiB mappings inside it.
        let l2 = walk(&pt, 1, 0).unwrap().tables[2];
        pt.tables
            .get_mut(&l2)
            .unwrap()
            .set(1, pte(0x200, PteFlags::PRESENT | PteFlags::PSE));
        assert_eq!(
            pt.map_4k(0x20_1000, 5, PteFlags::PRESENT, TABLE, &mut alloc),
            Err(MapError::LargePageInTheWay {
                va: 0x20_1000,
                level: Level::L2
            })
        );
        // An entry pointing at a table the set does not hold.
        pt.tables.get_mut(&l2).unwrap().set(2, pte(0x999, TABLE));
        assert!(matches!(
            pt.map_4k(0x40_0000, 5, PteFlags::PRESENT, TABLE, &mut alloc),
            Err(MapError::ForeignTable {
                level: Level::L2,
                index: 2,
                ..
            })
        ));
    }
}
