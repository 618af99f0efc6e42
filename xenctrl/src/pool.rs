//! The hypercall-safe buffer pool.
//!
//! A [`BufferPool`] maps big chunks of hypercall-safe memory through its handle's backend and
//! hands out runs of it:
//!
//! - sub-page blocks of 64 to 2048 bytes, carved from pages;
//! - runs of 1 to 64 pages, rounded up to a power of two;
//! - anything larger gets a mapping of its own.
//!
//! Each size class keeps a lock-free free list, and each thread keeps a small cache of blocks
//! per class in front of it. In steady state allocation and free touch only the calling
//! thread's cache: no system call, no atomic operation, and no cost that grows with the number
//! of outstanding buffers. Freed blocks go back to their class and are not coalesced; the
//! pool's footprint is bounded by its peak use, as libxencall's cache is.
//!
//! # Pinning
//!
//! Pages of [`MemorySource::LockedAnonymous`] chunks are locked with `mlock`. `mlock` does not
//! nest, so the pool counts pins per page: every live buffer (and every block parked in a thread
//! cache) pins each page it touches, a page is locked before its first pin is handed out, and
//! [`BufferPool::trim`] unlocks only pages whose count is zero. Two buffers sharing a page can be freed in either order without the
//! survivor losing its lock. A page that was trimmed is locked again (a system call, outside
//! steady state) when a buffer next lands on it.

use std::fmt;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::abi::PoolData;
use crate::backend::{anon, Backend, ChunkMapping, MemorySource};
use crate::buffer::HypercallBuffer;
use crate::error::{Error, Result};
use crate::PAGE_SIZE;

/// Smallest block the pool hands out, and the granule block indices count in.
const GRANULE: usize = 64;
const GRANULE_SHIFT: u32 = 6;
/// Sub-page classes: 64, 128, ..., 2048 bytes.
const SMALL_CLASSES: usize = 6;
/// Page classes: 1, 2, 4, ..., 64 pages.
const PAGE_CLASSES: usize = 7;
const CLASSES: usize = SMALL_CLASSES + PAGE_CLASSES;
/// The largest run served from shared chunks, in pages.
pub const MAX_POOLED_PAGES: usize = 1 << (PAGE_CLASSES - 1);
/// Pages per chunk (512 KiB): room for the largest pooled run (64 pages) eight times over, and
/// small enough that the first allocation of a short-lived tool (the interface probe at open)
/// does not map and pin more than it needs; in a PV dom0 every page mapped costs a trip through
/// Xen.
const CHUNK_PAGES: usize = 128;
const CHUNK_BYTES: usize = CHUNK_PAGES * PAGE_SIZE;
const GRANULES_PER_CHUNK: usize = CHUNK_BYTES / GRANULE;
/// Chunks a pool may map: 512 MiB of pooled memory (larger buffers are mappings of their own).
const MAX_CHUNKS: usize = 1024;
/// End of a free list.
const NIL: u32 = u32::MAX;
/// Set in a page's pin word while the page is locked.
const LOCKED: u32 = 1 << 31;

static_assertions::const_assert!(GRANULES_PER_CHUNK * MAX_CHUNKS < NIL as usize);
static_assertions::const_assert_eq!(1 << GRANULE_SHIFT, GRANULE);

/// A pool of hypercall-safe memory. It belongs to one open handle (see
/// [`XenCtrl::pool`](crate::XenCtrl::pool)), is `Send + Sync`, and every buffer it hands out
/// borrows it.
///
/// # Examples
///
/// ```
/// use xenctrl::BufferPool;
///
/// let pool = BufferPool::anonymous();
/// let mut buf = pool.alloc::<[u64; 4]>()?;
/// buf[1] = 7;
/// assert_eq!(*buf, [0, 7, 0, 0]);
/// # Ok::<(), xenctrl::Error>(())
/// ```
pub struct BufferPool {
    inner: Arc<Inner>,
}

/// The shared state of a pool. Thread caches refer to it weakly, by its unique `id`.
struct Inner {
    id: u64,
    backend: Arc<dyn Backend>,
    /// One lock-free stack per size class; each word is `tag << 32 | head index`.
    heads: [AtomicU64; CLASSES],
    chunks: Box<[OnceLock<Chunk>]>,
    /// Carving state; taken only when a free list runs dry.
    grow: Mutex<Frontier>,
    /// Serialises page locking against trimming.
    lock_state: Mutex<()>,
    /// Blocks out of the shared free lists: live buffers and blocks in thread caches.
    taken: AtomicUsize,
    large_bytes: AtomicUsize,
    /// The mappings of large buffers, owned here: freeing a buffer drops (unmaps) its mapping.
    large: Mutex<Vec<ChunkMapping>>,
}

struct Chunk {
    mapping: ChunkMapping,
    /// Free-list links, one per granule.
    next: Box<[AtomicU32]>,
    /// Pin count per page, with [`LOCKED`] set while the page is locked.
    pins: Box<[AtomicU32]>,
}

#[derive(Default)]
struct Frontier {
    nr_chunks: usize,
    /// Next unused page in the newest chunk.
    next_page: usize,
}

/// Where an allocation lives, so it can be freed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Block {
    /// A block from a shared chunk: size class and granule index.
    Pooled { class: u8, index: u32 },
    /// A mapping of its own.
    Large { base: NonNull<u8> },
}

// SAFETY: `Block` is an address and a length; it grants no access by itself.
unsafe impl Send for Block {}
// SAFETY: as above.
unsafe impl Sync for Block {}

/// Counters describing a pool, for diagnostics and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers handed out and not yet freed, plus blocks parked in the caches of threads other
    /// than the caller (whose own cache is returned first).
    pub outstanding: usize,
    /// Bytes mapped in shared chunks.
    pub chunk_bytes: usize,
    /// Bytes mapped for large buffers of their own.
    pub large_bytes: usize,
    /// Pages of shared chunks currently locked (or resident by construction).
    pub locked_pages: usize,
}

impl BufferPool {
    pub(crate) fn new(backend: Arc<dyn Backend>) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let inner = Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            backend,
            heads: std::array::from_fn(|_| AtomicU64::new(u64::from(NIL))),
            chunks: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect(),
            grow: Mutex::new(Frontier::default()),
            lock_state: Mutex::new(()),
            taken: AtomicUsize::new(0),
            large_bytes: AtomicUsize::new(0),
            large: Mutex::new(Vec::new()),
        };
        BufferPool {
            inner: Arc::new(inner),
        }
    }

    /// A pool of locked anonymous memory that belongs to no hypervisor handle.
    ///
    /// Its buffers cannot be passed to any [`XenCtrl`](crate::XenCtrl) (each handle accepts
    /// only its own pool's buffers); it is for preparing data and for measuring the pool.
    pub fn anonymous() -> Self {
        Self::new(Arc::new(crate::backend::NoHypervisor))
    }

    /// Where this pool's memory comes from: `/dev/xen/hypercall`, or locked anonymous memory.
    pub fn source(&self) -> MemorySource {
        self.inner.backend.memory_source()
    }

    /// Allocate a zeroed `T` in hypercall-safe memory.
    ///
    /// # Errors
    ///
    /// [`Error::PoolMap`] or [`Error::PoolLock`] when the pool has to grow and cannot;
    /// [`Error::BadAllocation`] when `T` needs more than page alignment.
    ///
    /// `T` is [`PoolData`]: plain data (`FromBytes`), or one of this crate's handle-bearing ABI
    /// structs, which start out with null handles and counts of 0.
    pub fn alloc<T: PoolData>(&self) -> Result<HypercallBuffer<'_, T>> {
        let (block, base) = self.inner.allocate(size_of::<T>(), align_of::<T>())?;
        // SAFETY: `base` is the start of a fresh block of at least `size_of::<T>()` bytes,
        // suitably aligned, owned by nobody else until the buffer is dropped.
        unsafe { base.as_ptr().write_bytes(0, size_of::<T>()) };
        // SAFETY: all-zero bytes are a valid `T`: `PoolData` is sealed, and holds only for
        // `FromBytes` types (every bit pattern is valid) and this crate's handle-bearing ABI
        // structs (integers and `PhantomData`; zero is the null handle with a count of 0).
        Ok(unsafe { HypercallBuffer::from_raw(self, block, base.cast::<T>()) })
    }

    /// Allocate a zeroed slice of `len` elements in hypercall-safe memory.
    ///
    /// # Errors
    ///
    /// As for [`BufferPool::alloc`], and [`Error::BadAllocation`] if the size overflows.
    pub fn alloc_slice<T>(&self, len: usize) -> Result<HypercallBuffer<'_, [T]>>
    where
        T: zerocopy::FromBytes + zerocopy::Immutable,
    {
        let bytes = size_of::<T>()
            .checked_mul(len)
            .ok_or(Error::BadAllocation {
                bytes: usize::MAX,
                align: align_of::<T>(),
            })?;
        let (block, base) = self.inner.allocate(bytes, align_of::<T>())?;
        // SAFETY: a fresh block of at least `bytes` bytes that nobody else owns.
        unsafe { base.as_ptr().write_bytes(0, bytes) };
        let ptr = NonNull::slice_from_raw_parts(base.cast::<T>(), len);
        // SAFETY: zeroed memory is a valid `[T]` (`T: FromBytes`), aligned and large enough.
        Ok(unsafe { HypercallBuffer::from_raw(self, block, ptr) })
    }

    /// Allocate `len` bytes without zeroing them. For data that is about to be overwritten
    /// (a bounce buffer, a page Xen fills): the contents are whatever was there before.
    ///
    /// # Errors
    ///
    /// As for [`BufferPool::alloc`].
    pub fn alloc_uninit(&self, len: usize) -> Result<HypercallBuffer<'_, [MaybeUninit<u8>]>> {
        let (block, base) = self.inner.allocate(len, 1)?;
        let ptr = NonNull::slice_from_raw_parts(base.cast::<MaybeUninit<u8>>(), len);
        // SAFETY: any bytes are a valid `[MaybeUninit<u8>]`; the block is fresh and ours.
        Ok(unsafe { HypercallBuffer::from_raw(self, block, ptr) })
    }

    /// Unlock every locked-anonymous page that no live buffer uses. Pages are locked again
    /// when a buffer next lands on them. Memory stays mapped. The calling thread's cache is
    /// returned to the pool first; blocks cached by other threads stay pinned until those
    /// threads free more or exit.
    pub fn trim(&self) {
        cache::flush_current(&self.inner);
        self.inner.trim();
    }

    /// Counters describing the pool (after returning the calling thread's cache).
    pub fn stats(&self) -> PoolStats {
        cache::flush_current(&self.inner);
        self.inner.stats()
    }

    /// The backend that maps this pool's memory.
    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// Whether `bytes` bytes at `addr` lie inside memory this pool mapped (one shared chunk, or
    /// one buffer of its own). What the entry points check every guest handle against, so that
    /// no handle of another pool (or of an anonymous one) reaches Xen.
    pub(crate) fn owns(&self, addr: u64, bytes: u64) -> bool {
        let inner = &*self.inner;
        inner
            .chunks
            .iter()
            .map_while(OnceLock::get)
            .any(|c| c.mapping.contains(addr, bytes))
            || inner
                .large
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|m| m.contains(addr, bytes))
    }

    /// Return a block. Called by [`HypercallBuffer`]'s `Drop`.
    pub(crate) fn free(&self, block: Block) {
        match block {
            Block::Pooled { class, index } => {
                if !cache::put(&self.inner, class.into(), index) {
                    self.inner.give_shared(class.into(), index);
                }
            }
            Block::Large { base } => self.inner.free_large(base),
        }
    }
}

impl Inner {
    fn trim(&self) {
        let _guard = self.lock_state.lock().unwrap_or_else(|e| e.into_inner());
        for chunk in self.chunks.iter().map_while(OnceLock::get) {
            if chunk.mapping.source() != MemorySource::LockedAnonymous {
                continue;
            }
            for (page, word) in chunk.pins.iter().enumerate() {
                if word
                    .compare_exchange(LOCKED, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    // A concurrent pin sees LOCKED clear and waits on `lock_state`, which we
                    // hold, before locking the page again: our unlock cannot undo its lock.
                    // SAFETY: the page lies inside the chunk's mapping.
                    anon::unlock(unsafe { chunk.page_ptr(page) }, PAGE_SIZE);
                }
            }
        }
    }

    fn stats(&self) -> PoolStats {
        let chunks: Vec<&Chunk> = self.chunks.iter().map_while(OnceLock::get).collect();
        PoolStats {
            outstanding: self.taken.load(Ordering::Relaxed),
            chunk_bytes: chunks.len() * CHUNK_BYTES,
            large_bytes: self.large_bytes.load(Ordering::Relaxed),
            locked_pages: chunks
                .iter()
                .flat_map(|c| c.pins.iter())
                .filter(|w| w.load(Ordering::Relaxed) & LOCKED != 0)
                .count(),
        }
    }

    /// Find or make a block for `bytes` bytes aligned to `align`, with its pages pinned.
    fn allocate(&self, bytes: usize, align: usize) -> Result<(Block, NonNull<u8>)> {
        if align > PAGE_SIZE {
            return Err(Error::BadAllocation { bytes, align });
        }
        let class = class_for(bytes.max(align));
        let block = match class {
            Some(class) => match cache::take(self, class) {
                Some(index) => Block::Pooled {
                    class: class_u8(class),
                    index,
                },
                None => self.take_shared(class)?,
            },
            None => self.map_large(bytes)?,
        };
        Ok((block, self.block_ptr(block)))
    }

    /// Take a block of `class` from the shared lists, pinned.
    fn take_shared(&self, class: usize) -> Result<Block> {
        let block = self.pop_or_refill(class)?;
        if let Block::Pooled { class, index } = block {
            if let Err(e) = self.pin(index, class_bytes(class.into())) {
                self.push(class.into(), index);
                return Err(e);
            }
        }
        self.taken.fetch_add(1, Ordering::Relaxed);
        Ok(block)
    }

    /// Return a pinned block of `class` to the shared lists.
    fn give_shared(&self, class: usize, index: u32) {
        self.unpin(index, class_bytes(class));
        self.push(class, index);
        self.taken.fetch_sub(1, Ordering::Relaxed);
    }

    /// Free a large buffer: drop (unmap) the mapping this pool made for it. Only a mapping the
    /// pool owns can go; an address that names none is left alone.
    fn free_large(&self, base: NonNull<u8>) {
        let mut large = self.large.lock().unwrap_or_else(|e| e.into_inner());
        let Some(at) = large.iter().position(|m| m.base() == base) else {
            return; // not a mapping of ours: nothing to unmap
        };
        let mapping = large.swap_remove(at);
        drop(large);
        self.taken.fetch_sub(1, Ordering::Relaxed);
        self.large_bytes.fetch_sub(mapping.len(), Ordering::Relaxed);
        drop(mapping);
    }

    fn map_large(&self, bytes: usize) -> Result<Block> {
        let len = bytes
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(Error::BadAllocation {
                bytes,
                align: PAGE_SIZE,
            })?;
        let mapping = self
            .backend
            .map_chunk(len)
            .map_err(|source| Error::PoolMap { bytes: len, source })?;
        self.large_bytes.fetch_add(len, Ordering::Relaxed);
        self.taken.fetch_add(1, Ordering::Relaxed);
        let base = mapping.base();
        self.large
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(mapping);
        Ok(Block::Large { base })
    }

    fn pop_or_refill(&self, class: usize) -> Result<Block> {
        loop {
            if let Some(index) = self.pop(class) {
                return Ok(Block::Pooled {
                    class: class_u8(class),
                    index,
                });
            }
            self.refill(class)?;
        }
    }

    /// Put at least one block on `class`'s free list.
    fn refill(&self, class: usize) -> Result<()> {
        if class < SMALL_CLASSES {
            // Carve a page into blocks of this class.
            let page = self.pop_or_refill(SMALL_CLASSES)?;
            let Block::Pooled { index, .. } = page else {
                unreachable!("pooled class")
            };
            let per_page = PAGE_SIZE / class_bytes(class);
            let step = class_bytes(class) / GRANULE;
            for i in (0..per_page).rev() {
                self.push(class, index + u32_from(i * step));
            }
            return Ok(());
        }
        let mut frontier = self.grow.lock().unwrap_or_else(|e| e.into_inner());
        if self.peek(class) {
            return Ok(()); // another thread refilled it meanwhile
        }
        let pages = 1usize << (class - SMALL_CLASSES);
        if frontier.nr_chunks == 0 || frontier.next_page + pages > CHUNK_PAGES {
            // Hand the rest of the current chunk to smaller classes, then map a new one.
            if frontier.nr_chunks > 0 {
                self.scatter(frontier.nr_chunks - 1, frontier.next_page, CHUNK_PAGES);
            }
            self.map_chunk(frontier.nr_chunks)?;
            frontier.nr_chunks += 1;
            frontier.next_page = 0;
        }
        let chunk = frontier.nr_chunks - 1;
        let first = frontier.next_page;
        frontier.next_page += pages;
        self.push(class, page_index(chunk, first));
        Ok(())
    }

    /// Put pages `from..to` of chunk `chunk` on the page free lists, largest runs first.
    fn scatter(&self, chunk: usize, mut from: usize, to: usize) {
        while from < to {
            let mut order = PAGE_CLASSES - 1;
            while (1 << order) > to - from {
                order -= 1;
            }
            self.push(SMALL_CLASSES + order, page_index(chunk, from));
            from += 1 << order;
        }
    }

    fn map_chunk(&self, slot: usize) -> Result<()> {
        if slot >= MAX_CHUNKS {
            return Err(Error::PoolMap {
                bytes: CHUNK_BYTES,
                source: std::io::Error::from_raw_os_error(libc::ENOMEM),
            });
        }
        let mapping = self
            .backend
            .map_chunk(CHUNK_BYTES)
            .map_err(|source| Error::PoolMap {
                bytes: CHUNK_BYTES,
                source,
            })?;
        // Anonymous chunks arrive locked and touched; device chunks are resident by design.
        let chunk = Chunk {
            mapping,
            next: (0..GRANULES_PER_CHUNK)
                .map(|_| AtomicU32::new(NIL))
                .collect(),
            pins: (0..CHUNK_PAGES).map(|_| AtomicU32::new(LOCKED)).collect(),
        };
        if self.chunks[slot].set(chunk).is_err() {
            unreachable!("chunk slots are filled in order under the grow lock");
        }
        Ok(())
    }

    fn chunk(&self, index: u32) -> &Chunk {
        let slot = index as usize / GRANULES_PER_CHUNK;
        self.chunks[slot]
            .get()
            .expect("block indices only name mapped chunks")
    }

    fn link(&self, index: u32) -> &AtomicU32 {
        &self.chunk(index).next[index as usize % GRANULES_PER_CHUNK]
    }

    fn block_ptr(&self, block: Block) -> NonNull<u8> {
        match block {
            Block::Large { base } => base,
            Block::Pooled { index, .. } => {
                let chunk = self.chunk(index);
                let offset = (index as usize % GRANULES_PER_CHUNK) * GRANULE;
                // SAFETY: `offset` is inside the chunk's mapping.
                unsafe { chunk.mapping.base().add(offset) }
            }
        }
    }

    fn pop(&self, class: usize) -> Option<u32> {
        let head = &self.heads[class];
        let mut cur = head.load(Ordering::Acquire);
        loop {
            let index = low(cur);
            if index == NIL {
                return None;
            }
            // The link may be stale if another thread popped `index` meanwhile; then the tag
            // has moved on and the exchange fails.
            let next = self.link(index).load(Ordering::Relaxed);
            let new = tagged(cur, next);
            match head.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(index),
                Err(seen) => cur = seen,
            }
        }
    }

    fn push(&self, class: usize, index: u32) {
        let head = &self.heads[class];
        let link = self.link(index);
        let mut cur = head.load(Ordering::Relaxed);
        loop {
            link.store(low(cur), Ordering::Relaxed);
            let new = tagged(cur, index);
            match head.compare_exchange_weak(cur, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }

    fn peek(&self, class: usize) -> bool {
        low(self.heads[class].load(Ordering::Acquire)) != NIL
    }

    /// Pin every page of the block at `index` of `bytes` bytes, locking any that are not.
    fn pin(&self, index: u32, bytes: usize) -> Result<()> {
        let chunk = self.chunk(index);
        let pages = chunk.pages_of(index, bytes);
        for page in pages.clone() {
            let prev = chunk.pins[page].fetch_add(1, Ordering::AcqRel);
            if prev & LOCKED == 0 {
                if let Err(e) = self.lock_page(chunk, page) {
                    for undo in pages.start..=page {
                        chunk.pins[undo].fetch_sub(1, Ordering::AcqRel);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn unpin(&self, index: u32, bytes: usize) {
        let chunk = self.chunk(index);
        for page in chunk.pages_of(index, bytes) {
            chunk.pins[page].fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Slow path: lock a page that a trim unlocked.
    #[cold]
    fn lock_page(&self, chunk: &Chunk, page: usize) -> Result<()> {
        let _guard = self.lock_state.lock().unwrap_or_else(|e| e.into_inner());
        if chunk.pins[page].load(Ordering::Acquire) & LOCKED != 0 {
            return Ok(());
        }
        // SAFETY: the page lies inside the chunk's mapping.
        anon::lock(unsafe { chunk.page_ptr(page) }, PAGE_SIZE).map_err(|source| {
            Error::PoolLock {
                bytes: PAGE_SIZE,
                source,
            }
        })?;
        chunk.pins[page].fetch_or(LOCKED, Ordering::AcqRel);
        Ok(())
    }
}

impl Chunk {
    /// Pages of this chunk covered by `bytes` bytes at granule `index`.
    fn pages_of(&self, index: u32, bytes: usize) -> std::ops::Range<usize> {
        let offset = (index as usize % GRANULES_PER_CHUNK) * GRANULE;
        offset / PAGE_SIZE..(offset + bytes).div_ceil(PAGE_SIZE)
    }

    /// # Safety
    ///
    /// `page < CHUNK_PAGES`.
    unsafe fn page_ptr(&self, page: usize) -> *mut u8 {
        // SAFETY: the caller keeps `page` inside the chunk.
        unsafe { self.mapping.base().as_ptr().add(page * PAGE_SIZE) }
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        // Blocks in this thread's cache go back; other threads' caches find the pool gone.
        cache::flush_current(&self.inner);
    }
}

// `Inner` needs no `Drop`: every buffer borrows the pool, so none is alive when it goes, and
// its chunk and large mappings unmap themselves as they drop.

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("backend", &self.inner.backend.name())
            .field("stats", &self.stats())
            .finish()
    }
}

/// Per-thread caches of free blocks, one bin per size class, in front of the shared lists.
///
/// A thread caches blocks of one pool at a time (the one it used last); blocks keep their page
/// pins while cached. Moving to another pool, exiting, or calling [`BufferPool::trim`] or
/// [`BufferPool::stats`] returns the cached blocks to their pool (or drops them, if the pool is
/// gone: its memory went with it).
mod cache {
    use std::cell::RefCell;
    use std::sync::{Arc, Weak};

    use super::{class_bytes, Inner, CLASSES};

    /// Most blocks a bin holds: 32, fewer for big classes (at most 256 KiB per bin).
    const BIN_MAX: usize = 32;
    const BIN_BYTES: usize = 256 * 1024;

    fn bin_capacity(class: usize) -> usize {
        (BIN_BYTES / class_bytes(class)).clamp(2, BIN_MAX)
    }

    struct Bin {
        len: usize,
        items: [u32; BIN_MAX],
    }

    struct ThreadCache {
        /// The pool whose blocks the bins hold (0: none).
        pool_id: u64,
        pool: Weak<Inner>,
        bins: [Bin; CLASSES],
    }

    impl ThreadCache {
        const fn new() -> Self {
            const EMPTY: Bin = Bin {
                len: 0,
                items: [0; BIN_MAX],
            };
            ThreadCache {
                pool_id: 0,
                pool: Weak::new(),
                bins: [EMPTY; CLASSES],
            }
        }

        /// Give every cached block back to its pool, if that pool still exists.
        fn drain(&mut self) {
            if let Some(pool) = self.pool.upgrade() {
                for (class, bin) in self.bins.iter_mut().enumerate() {
                    for &index in &bin.items[..bin.len] {
                        pool.give_shared(class, index);
                    }
                }
            }
            for bin in &mut self.bins {
                bin.len = 0;
            }
            self.pool_id = 0;
            self.pool = Weak::new();
        }
    }

    impl Drop for ThreadCache {
        fn drop(&mut self) {
            self.drain();
        }
    }

    thread_local! {
        static CACHE: RefCell<ThreadCache> = const { RefCell::new(ThreadCache::new()) };
    }

    /// A cached block of `class` from `pool`, if this thread has one.
    pub(super) fn take(pool: &Inner, class: usize) -> Option<u32> {
        CACHE
            .try_with(|c| {
                let mut c = c.try_borrow_mut().ok()?;
                if c.pool_id != pool.id {
                    return None;
                }
                let bin = &mut c.bins[class];
                bin.len = bin.len.checked_sub(1)?;
                Some(bin.items[bin.len])
            })
            .ok()
            .flatten()
    }

    /// Park a freed block of `class` in this thread's cache; `false` if the caller must return
    /// it to the shared list instead.
    pub(super) fn put(pool: &Arc<Inner>, class: usize, index: u32) -> bool {
        CACHE
            .try_with(|c| {
                let Ok(mut c) = c.try_borrow_mut() else {
                    return false;
                };
                if c.pool_id != pool.id {
                    c.drain();
                    c.pool_id = pool.id;
                    c.pool = Arc::downgrade(pool);
                }
                let cap = bin_capacity(class);
                let bin = &mut c.bins[class];
                if bin.len == cap {
                    // Full: hand half back so a free/alloc see-saw stays in the cache.
                    for &old in &bin.items[cap / 2..cap] {
                        pool.give_shared(class, old);
                    }
                    bin.len = cap / 2;
                }
                bin.items[bin.len] = index;
                bin.len += 1;
                true
            })
            .unwrap_or(false)
    }

    /// Return this thread's cached blocks of `pool`.
    pub(super) fn flush_current(pool: &Inner) {
        let _ = CACHE.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                if c.pool_id == pool.id {
                    c.drain();
                }
            }
        });
    }
}

/// The size class serving `bytes`, or `None` when it needs a mapping of its own.
fn class_for(bytes: usize) -> Option<usize> {
    if bytes <= PAGE_SIZE / 2 {
        let blocks = bytes.max(GRANULE).next_power_of_two() / GRANULE;
        Some(blocks.trailing_zeros() as usize)
    } else if bytes <= MAX_POOLED_PAGES * PAGE_SIZE {
        let pages = bytes.div_ceil(PAGE_SIZE).next_power_of_two();
        Some(SMALL_CLASSES + pages.trailing_zeros() as usize)
    } else {
        None
    }
}

fn class_bytes(class: usize) -> usize {
    if class < SMALL_CLASSES {
        GRANULE << class
    } else {
        PAGE_SIZE << (class - SMALL_CLASSES)
    }
}

fn page_index(chunk: usize, page: usize) -> u32 {
    u32_from(chunk * GRANULES_PER_CHUNK + page * (PAGE_SIZE / GRANULE))
}

fn u32_from(v: usize) -> u32 {
    u32::try_from(v).expect("block indices fit in u32 (asserted at compile time)")
}

fn class_u8(class: usize) -> u8 {
    u8::try_from(class).expect("fewer than 256 classes")
}

#[allow(clippy::cast_possible_truncation)] // the low half of the word, by design
fn low(word: u64) -> u32 {
    word as u32
}

fn tagged(old: u64, index: u32) -> u64 {
    ((old >> 32).wrapping_add(1) << 32) | u64::from(index)
}

#[cfg(test)]
mod tests {
    /// Freeing names a mapping only by the address the pool recorded: an address that is no
    /// large mapping of the pool (here, a page-aligned buffer inside a shared chunk) is not
    /// unmapped, and the pool's own large buffer stays usable.
    #[test]
    fn a_large_free_unmaps_only_what_the_pool_mapped() {
        let pool = BufferPool::anonymous();
        let mut big = pool
            .alloc_slice::<u8>(MAX_POOLED_PAGES * PAGE_SIZE + 1)
            .unwrap();
        big.fill(7);
        let mut page = pool.alloc::<[u8; PAGE_SIZE]>().unwrap();
        assert_eq!(page.addr() % PAGE_SIZE as u64, 0);
        let stats = pool.stats();
        pool.inner
            .free_large(NonNull::from(&mut *page).cast::<u8>());
        page.fill(9); // still mapped: this would fault if the page had been unmapped
        assert!(page.iter().all(|&b| b == 9));
        assert_eq!(pool.stats(), stats, "nothing freed");
        assert!(
            big.iter().all(|&b| b == 7),
            "the real large buffer is still mapped"
        );
        let addr = big.addr();
        assert!(pool.owns(addr, 1));
        drop(big);
        assert!(!pool.owns(addr, 1), "freed: no longer the pool's");
        assert_eq!(pool.stats().large_bytes, 0);
    }

    use super::*;

    #[test]
    fn classes_cover_sizes() {
        assert_eq!(class_for(0), Some(0));
        assert_eq!(class_for(64), Some(0));
        assert_eq!(class_for(65), Some(1));
        assert_eq!(class_for(256), Some(2));
        assert_eq!(class_for(2048), Some(5));
        assert_eq!(class_for(2049), Some(SMALL_CLASSES));
        assert_eq!(class_for(4096), Some(SMALL_CLASSES));
        assert_eq!(class_for(4097), Some(SMALL_CLASSES + 1));
        assert_eq!(class_for(64 * 4096), Some(CLASSES - 1));
        assert_eq!(class_for(64 * 4096 + 1), None);
        for class in 0..CLASSES {
            assert_eq!(class_for(class_bytes(class)), Some(class));
        }
    }

    #[test]
    fn blocks_do_not_overlap_and_are_reused() {
        let pool = BufferPool::anonymous();
        let sizes = [
            1usize,
            64,
            100,
            256,
            2048,
            3000,
            4096,
            5000,
            3 * 4096,
            64 * 4096,
            70 * 4096,
        ];
        let mut live = Vec::new();
        for round in 0..3u8 {
            for &size in &sizes {
                let mut b = pool.alloc_slice::<u8>(size).unwrap();
                assert!(b.iter().all(|&x| x == 0), "fresh buffers are zeroed");
                b.fill(round + 1);
                live.push(b);
            }
        }
        let mut ranges: Vec<(usize, usize)> = live
            .iter()
            .map(|b| (b.as_ptr() as usize, b.len()))
            .collect();
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "overlap: {w:?}");
        }
        for (i, b) in live.iter().enumerate() {
            let round = u8::try_from(i / sizes.len()).unwrap();
            assert!(
                b.iter().all(|&x| x == round + 1),
                "buffer {i} was disturbed"
            );
        }
        let before = pool.stats().chunk_bytes;
        drop(live);
        let st = pool.stats();
        assert_eq!(st.outstanding, 0, "{st:?}");
        for _ in 0..100 {
            let a = pool.alloc_slice::<u8>(4096).unwrap();
            let b = pool.alloc::<[u64; 32]>().unwrap();
            drop((a, b));
        }
        assert_eq!(
            pool.stats().chunk_bytes,
            before,
            "steady state maps nothing new"
        );
    }

    #[test]
    fn many_outstanding_buffers() {
        let pool = BufferPool::anonymous();
        let bufs: Vec<_> = (0..10_000)
            .map(|_| pool.alloc::<[u8; 256]>().unwrap())
            .collect();
        assert_eq!(pool.stats().outstanding, 10_000);
        let mut addrs: Vec<usize> = bufs.iter().map(|b| b.as_ptr() as usize).collect();
        addrs.sort_unstable();
        addrs.dedup();
        assert_eq!(addrs.len(), 10_000);
    }

    #[test]
    fn threads_share_a_pool() {
        let pool = BufferPool::anonymous();
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..4u64)
                .map(|t| {
                    let pool = &pool;
                    s.spawn(move || {
                        for i in 0..20_000u64 {
                            let size = [8usize, 300, 4096, 9000][usize::try_from(i % 4).unwrap()];
                            let mut b = pool.alloc_slice::<u64>(size / 8 + 1).unwrap();
                            let tag = t << 32 | i;
                            b.fill(tag);
                            std::hint::black_box(&mut b);
                            assert!(
                                b.iter().all(|&x| x == tag),
                                "another thread wrote our buffer"
                            );
                        }
                    })
                })
                .collect();
            // An explicit join waits for thread exit, where each thread's cache is returned.
            for t in threads {
                t.join().unwrap();
            }
        });
        assert_eq!(pool.stats().outstanding, 0);
    }

    #[test]
    fn thread_caches_outlive_their_pools_safely() {
        use std::sync::{Barrier, Mutex};
        // One thread alternates between pools: its cache moves with it.
        let a = BufferPool::anonymous();
        let b = BufferPool::anonymous();
        for _ in 0..100 {
            drop(a.alloc::<u64>().unwrap());
            drop(b.alloc::<[u8; 300]>().unwrap());
        }
        assert_eq!(a.stats().outstanding, 0);
        assert_eq!(b.stats().outstanding, 0);

        // Another thread caches blocks of a pool that is then dropped, and moves on.
        let doomed = Mutex::new(Some(BufferPool::anonymous()));
        let barrier = Barrier::new(2);
        let next = BufferPool::anonymous();
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                if let Some(pool) = doomed.lock().unwrap().as_ref() {
                    drop(pool.alloc::<u64>().unwrap()); // now cached in this thread
                }
                barrier.wait(); // the pool is dropped meanwhile
                barrier.wait();
                let mut v = next.alloc::<u64>().unwrap(); // drains the dead pool's cache
                *v = 7;
                assert_eq!(*v, 7);
            });
            barrier.wait();
            drop(doomed.lock().unwrap().take());
            barrier.wait();
            t.join().unwrap();
        });
        assert_eq!(next.stats().outstanding, 0);
    }

    #[test]
    fn over_aligned_types_are_refused() {
        #[derive(zerocopy::FromBytes, zerocopy::KnownLayout, zerocopy::Immutable)]
        #[repr(C, align(8192))]
        struct Big([u8; 8192]);
        let pool = BufferPool::anonymous();
        assert!(matches!(
            pool.alloc::<Big>(),
            Err(Error::BadAllocation { align: 8192, .. })
        ));
    }
}
