//! A content-addressed cache of unpacked kernels ([`KernelCache`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::{Deref, Range};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use memmap2::{Advice, Mmap, MmapOptions};
use sha2::{Digest, Sha256};

/// The entry header's magic (format version 3: the content's pages that are not all zero, with
/// a CRC-32; earlier versions, `RXKCACHE` and `RXKCACH2`, held the whole content and are
/// replaced when met).
const MAGIC: &[u8; 8] = b"RXKCACH3";
/// Magic, content length (8 bytes), checksum (4), number of runs (4), 24 reserved zero bytes.
const HEADER_LEN: usize = 8 + 8 + 4 + 4 + 24;
/// The unit of the page map: a page of the content is stored unless it is all zero.
const PAGE_BYTES: usize = 4096;
const PAGE: u64 = PAGE_BYTES as u64;
/// The size of one run in the table: its first page and its page count, little-endian u32s.
const RUN_LEN: usize = 8;
/// The suffix of entries.
const ENTRY_SUFFIX: &str = ".elf";
/// The prefix of temporary files.
const TMP_PREFIX: &str = ".tmp-";
/// Temporary files older than this are a crashed writer's, and removed.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// Where file keys are remembered, under the cache directory.
const FILE_KEYS_DIR: &str = "files";
/// The most of a file key record that is read (a record is about 150 bytes).
const FILE_KEY_MAX: u64 = 512;

/// A file's identity and version as its metadata tells them (see [`KernelCache`]'s file keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    /// The stamp of the file `meta` describes.
    pub fn of(meta: &fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The stamp as recorded: everything but the key.
    fn line(&self) -> String {
        format!(
            "rxk-file-key-1 {} {} {} {} {}",
            self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns
        )
    }
}

/// The SHA-256 of a kernel file: its cache key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The key of a kernel file's bytes.
    pub fn of(input: &[u8]) -> CacheKey {
        CacheKey(Sha256::digest(input).into())
    }

    /// The key in lowercase hex.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// A key from its [`to_hex`](Self::to_hex) form; `None` for anything else.
    pub fn from_hex(text: &str) -> Option<CacheKey> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut key = [0u8; 32];
        for (k, pair) in key.iter_mut().zip(bytes.chunks_exact(2)) {
            let digit = |c: u8| {
                char::from(c)
                    .to_digit(16)
                    .filter(|_| !c.is_ascii_uppercase())
            };
            *k = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
        }
        Some(CacheKey(key))
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CacheKey({})", self.to_hex())
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Why an entry was not trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// The file is shorter than the header, or its magic is wrong.
    BadHeader,
    /// The file's length is not header + the length the header states.
    LengthMismatch {
        /// What the header states.
        stated: u64,
        /// What the file holds after the header.
        actual: u64,
    },
    /// The stated length is above the caller's limit.
    TooLarge {
        /// What the header states.
        stated: u64,
        /// The limit.
        limit: u64,
    },
    /// The content's checksum is not the one the header states.
    HashMismatch,
    /// The table of stored pages is out of order, has an empty run, or names a page past the
    /// content's end.
    BadRuns,
    /// The entry file is writable by its group or by others, or owned by neither root nor this
    /// process's user: someone else could have written it (see [`KernelCache::check_trusted`]).
    NotOwnersOnly,
}

/// Why the kernel cache is not used: a directory on its path could be written by someone other
/// than root and this process's user, who could then choose the kernel bytes guests boot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the kernel cache {} is not used: {} {why}", cache.display(), path.display())]
pub struct Untrusted {
    /// The cache directory.
    pub cache: PathBuf,
    /// The directory found wanting (the cache directory or one above it, symlinks resolved).
    pub path: PathBuf,
    /// What is wrong with it.
    pub why: UntrustedWhy,
}

/// What is wrong with a directory on the kernel cache's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UntrustedWhy {
    /// Its group or others may write to it (and, above the cache directory, it is not sticky).
    #[error("is writable by its group or by others (mode {0:o})")]
    Writable(u32),
    /// It is owned by a user other than root and this process's.
    #[error("is owned by uid {0}, neither root nor this process's user")]
    Owner(u32),
}

/// Whether a file or directory with this owner and mode can be changed by root and `euid`
/// only. `sticky_ok`: a sticky directory anyone may write to passes (others can add names to it
/// but not rename or remove ours: `/tmp` above a cache in it).
fn owners_only(uid: u32, mode: u32, euid: u32, sticky_ok: bool) -> Result<(), UntrustedWhy> {
    if uid != 0 && uid != euid {
        return Err(UntrustedWhy::Owner(uid));
    }
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !(sticky_ok && sticky) {
        return Err(UntrustedWhy::Writable(mode & 0o7777));
    }
    Ok(())
}

/// [`owners_only`] for an opened file: the cache's own files must be writable by their owner
/// only.
fn file_owners_only(file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    let euid = nix::unistd::geteuid().as_raw();
    file.metadata()
        .is_ok_and(|m| owners_only(m.uid(), m.mode(), euid, false).is_ok())
}

/// A cache entry's content (the unpacked kernel), read into memory of this process's own,
/// with the byte ranges the entry left out because they are all zero. Cheap to clone.
#[derive(Clone)]
pub struct EntryBytes {
    repr: EntryRepr,
    zero: Arc<[Range<u64>]>,
}

impl EntryBytes {
    /// The byte ranges of the content that are zero, by the entry's page map: sorted, disjoint,
    /// whole pages but the last. The bytes there read as zero; a loader that knows its target
    /// is cleared need not copy them.
    pub fn zero_ranges(&self) -> &[Range<u64>] {
        &self.zero
    }
}

#[derive(Clone)]
enum EntryRepr {
    /// A large entry, in an anonymous mapping populated before the read (read-only since).
    Mapped(Arc<Mmap>),
    /// A small one, in a vector.
    Read(Arc<Vec<u8>>),
}

/// From this many bytes up, an entry is read into memory populated in one go (see
/// [`KernelCache`]).
const POPULATE_FROM: usize = 1 << 20;

impl Deref for EntryBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.repr {
            EntryRepr::Mapped(m) => m,
            EntryRepr::Read(v) => v,
        }
    }
}

impl AsRef<[u8]> for EntryBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for EntryBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryBytes")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// A checked entry: the unpacked kernel.
    Hit(EntryBytes),
    /// No entry (or one that could not be read).
    Miss,
    /// An entry that failed its checks; it has been removed.
    Corrupt(Corruption),
}

/// Why an entry could not be stored. Storing is best-effort: the kernel was unpacked, and the
/// create goes on without the cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The cache directory could not be created.
    #[error("cannot create the kernel cache directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The system's answer.
        #[source]
        source: io::Error,
    },
    /// The temporary file could not be written.
    #[error("cannot write the kernel cache entry {}", path.display())]
    Write {
        /// The temporary file.
        path: PathBuf,
        /// The system's answer.
        #[source]
        source: io::Error,
    },
    /// The temporary file could not be renamed over the entry.
    #[error("cannot publish the kernel cache entry {}", path.display())]
    Publish {
        /// The entry.
        path: PathBuf,
        /// The system's answer.
        #[source]
        source: io::Error,
    },
    /// The entry alone is bigger than the whole cache may be.
    #[error("a {size}-byte kernel does not fit a kernel cache of {max} bytes")]
    EntryTooLarge {
        /// The entry's size, header included.
        size: u64,
        /// The cache's bound.
        max: u64,
    },
}

/// A directory of unpacked kernels, addressed by the SHA-256 of the kernel file, so that a
/// second create of the same kernel skips decompression (xl has none: every `xl create` unpacks
/// the kernel again).
///
/// - **Key**: the SHA-256 of the kernel file as given (the compressed bytes). A collision would
///   hand one kernel's ELF to another's guest, so the hash must be collision-resistant; SHA-256
///   is (and sha2 is already built for xz's check, with the CPU's SHA instructions when it has
///   them: about 1.5 GB/s).
/// - **Entry**: one file, `<dir>/<key in hex>.elf`: a 48-byte header (the magic `RXKCACH3`, the
///   content length as a little-endian u64, a CRC-32, the number of runs as a u32, zero
///   padding), a table of runs (first page and page count, little-endian u32s) naming the
///   4 KiB pages of the content that are not all zero, and those pages, run after run. Half of
///   Debian's 66 MB vmlinux is zero pages (segment alignment, `.bss`, `.brk`): its entry holds
///   32 MB in 43 runs. The CRC-32 covers the table and the pages. One file, so one rename
///   publishes header, table and pages together.
/// - **Writes** go to a temporary file in the same directory (`.tmp-<key>-<pid>-<n>`, created
///   exclusively) that is renamed over the entry: readers see the old entry, the new one or
///   none, never half of one. Two processes storing the same key both write whole entries of the
///   same content; the last rename wins. Nothing is fsynced: an entry torn by a crash fails the
///   check below and is rewritten.
/// - **Reads** check everything before trusting an entry: the magic, that the length is within
///   the caller's limit (before anything else is read), that the runs are in order, non-empty
///   and inside the content, that the file is exactly header, table and pages long, and the
///   CRC-32 (crc32fast, with the CPU's carry-less multiply). A large entry is read into an
///   anonymous mapping, each run's pages populated in one call before the read into them; the
///   zero pages are never touched, and read as zero. (Reading Debian's entry whole into a fresh
///   vector took 550 ms of a warm 2.5 s create in a PV dom0 under QEMU TCG, most of it one page
///   fault per 4 KiB, each a round trip through Xen. The entry file itself is not mapped: the
///   bytes behind a file mapping change when anyone writes the file, and a `&[u8]` must not
///   change under its borrower.) A hit also says where the zeros are
///   ([`EntryBytes::zero_ranges`]), so that the loader clears those guest pages rather than
///   copying zeros into them.
///   An entry that fails is removed and reported ([`Lookup::Corrupt`]); the caller unpacks the
///   kernel again and stores a fresh entry. A checksum, not a second SHA-256: it is there to
///   catch a torn or damaged entry (the directory is trusted, see below), and the hit path is
///   what a warm create pays for: hashing Debian's 66 MB image took 2 s of a 6 s `rxl create`
///   in a PV dom0 under QEMU TCG.
/// - **Size**: after each store, entries are removed oldest first (by modification time, which a
///   hit refreshes) until the cache is within its bound; temporary files older than an hour
///   (left by a crashed writer) are removed too. A reader that opened an entry before another
///   process evicted it still reads it whole (the file lives until closed).
///
/// - **File keys**: hashing the kernel file is most of a warm lookup's cost that is not the
///   entry itself (160 ms for Debian's 11 MB gzipped vmlinux under QEMU TCG), so the key of a
///   file is remembered under its identity ([`FileStamp`]: device, inode, size, and the
///   modification and change times to the nanosecond), in `<dir>/files/<dev>-<ino>`, and a
///   later load of the same, unchanged file skips the hash. Any write to the file changes its
///   change time, which no one can set; but a filesystem may advance its clock in ticks of a
///   few milliseconds, so a write in the same tick as the one before it leaves the stamp as
///   it was. A key is therefore only remembered for a file whose times are at least
///   [`KernelCache::DEFAULT_SETTLE`] old when it is hashed: any later write lands in a later
///   tick, and shows. The stamp is taken before the file is read, so a file changed while it
///   is read is remembered under its old stamp, which never matches again.
///
/// The cache directory is trusted as much as the kernel files are: whoever can write it can
/// choose what guests boot, as whoever can write `/boot` can. So it is made writable by its
/// owner only, whatever the umask, and it is only used while that holds, up to `/`
/// ([`KernelCache::check_trusted`]: a load finds a cache that fails it untrusted and neither
/// reads nor writes it); an entry or file-key record writable by others is not believed
/// ([`Corruption::NotOwnersOnly`]).
#[derive(Clone, Debug)]
pub struct KernelCache {
    dir: PathBuf,
    max_bytes: u64,
    settle: Duration,
}

impl KernelCache {
    /// The system-wide cache directory.
    pub const DEFAULT_DIR: &'static str = "/var/cache/rxen/kernels";
    /// The default bound on the cache's size: 1 GiB, about fifteen of Debian's 66 MB kernels.
    pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
    /// How old a kernel file's times must be for its key to be remembered (see the notes).
    pub const DEFAULT_SETTLE: Duration = Duration::from_secs(2);

    /// A cache in `dir` (created when the first entry is stored) of at most
    /// [`KernelCache::DEFAULT_MAX_BYTES`].
    pub fn new(dir: impl Into<PathBuf>) -> KernelCache {
        KernelCache {
            dir: dir.into(),
            max_bytes: Self::DEFAULT_MAX_BYTES,
            settle: Self::DEFAULT_SETTLE,
        }
    }

    /// The same cache with another settle time for file keys (see the type's notes): how old
    /// a file's times must be for its key to be remembered. Tests shorten it; shorter than
    /// the filesystem's clock tick, a write in the tick of the previous one may go unseen.
    pub fn with_settle(self, settle: Duration) -> KernelCache {
        KernelCache { settle, ..self }
    }

    /// The key remembered for the file with `stamp`, if one is and the stamp is the same.
    pub fn known_key(&self, stamp: &FileStamp) -> Option<CacheKey> {
        // A record is one short line; read no more than that, whatever the file holds.
        let mut text = String::new();
        let file = File::open(self.file_key_path(stamp)).ok()?;
        // A record others could have written is not believed (the load hashes the file, and
        // the record is written afresh).
        if !file_owners_only(&file) {
            return None;
        }
        file.take(FILE_KEY_MAX).read_to_string(&mut text).ok()?;
        let (recorded, key) = text.strip_suffix('\n')?.rsplit_once(' ')?;
        if recorded != stamp.line() {
            return None;
        }
        CacheKey::from_hex(key)
    }

    /// Remembers `key` as the key of the file with `stamp`, if the file's times are at least
    /// the settle time old at `now`. Best-effort: a failure to write is ignored (the next load
    /// hashes the file again).
    pub fn remember_key(&self, stamp: &FileStamp, key: &CacheKey, now: SystemTime) {
        let ns = |d: Duration| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX);
        let settled = |t: i128| {
            now.duration_since(SystemTime::UNIX_EPOCH)
                .is_ok_and(|n| ns(n).saturating_sub(t) >= ns(self.settle))
        };
        if !(settled(stamp.mtime_ns) && settled(stamp.ctime_ns)) {
            return;
        }
        let dir = self.dir.join(FILE_KEYS_DIR);
        if create_dir(&dir).is_err() {
            return;
        }
        let path = self.file_key_path(stamp);
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}-{}-{}",
            stamp.dev,
            stamp.ino,
            std::process::id()
        ));
        let line = format!("{} {}\n", stamp.line(), key.to_hex());
        let written = (|| {
            use std::os::unix::fs::OpenOptionsExt;
            // A record names the entry a kernel file's bytes are taken from: writable by its
            // owner only, whatever the umask.
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(&tmp)?
                .write_all(line.as_bytes())
        })();
        if written.is_err() || fs::rename(&tmp, &path).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    fn file_key_path(&self, stamp: &FileStamp) -> PathBuf {
        self.dir
            .join(FILE_KEYS_DIR)
            .join(format!("{}-{}", stamp.dev, stamp.ino))
    }

    /// The same cache with another bound on its size.
    pub fn with_max_bytes(self, max_bytes: u64) -> KernelCache {
        KernelCache { max_bytes, ..self }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bound on its size.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Checks that no one but root and this process's user can write to the cache: the cache
    /// directory and its `files` directory, where they exist, must be owned by one of them and
    /// writable by their owner only; so must each directory above (symlinks resolved), except
    /// that a sticky one anyone may write to (`/tmp`) passes. [`KernelImage`] loads make this
    /// check and use no cache that fails it.
    ///
    /// # Errors
    ///
    /// [`Untrusted`], naming the first directory found wanting, from the cache's own down to
    /// `/`. A directory that cannot be resolved or read counts as missing: the cache is made
    /// there, by us, when an entry is stored.
    ///
    /// [`KernelImage`]: super::KernelImage
    pub fn check_trusted(&self) -> Result<(), Untrusted> {
        use std::os::unix::fs::MetadataExt;
        let euid = nix::unistd::geteuid().as_raw();
        let untrusted = |path: &Path, why| Untrusted {
            cache: self.dir.clone(),
            path: path.to_owned(),
            why,
        };
        // The deepest directory of the path that exists, resolved.
        let resolved = |a: &Path| {
            // The last ancestor of a relative path is "": the working directory.
            fs::canonicalize(if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            })
            .ok()
        };
        let Some(existing) = self.dir.ancestors().find_map(resolved) else {
            return Ok(());
        };
        for own in [self.dir.join(FILE_KEYS_DIR), self.dir.clone()] {
            if let Ok(m) = fs::metadata(&own) {
                owners_only(m.uid(), m.mode(), euid, false).map_err(|w| untrusted(&own, w))?;
            }
        }
        for dir in existing.ancestors() {
            let Ok(m) = fs::metadata(dir) else { continue };
            owners_only(m.uid(), m.mode(), euid, true).map_err(|w| untrusted(dir, w))?;
        }
        Ok(())
    }

    /// Where the entry for `key` is.
    pub fn entry_path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}{ENTRY_SUFFIX}", key.to_hex()))
    }

    /// Looks `key` up. The entry is checked whole (see the type's notes) before it is returned;
    /// one whose stated length is above `max_len` is not read.
    pub fn lookup(&self, key: &CacheKey, max_len: u64) -> Lookup {
        let path = self.entry_path(key);
        let Ok(mut file) = File::open(&path) else {
            return Lookup::Miss;
        };
        let checked = if file_owners_only(&file) {
            read_entry(&mut file, max_len)
        } else {
            Ok(Err(Corruption::NotOwnersOnly))
        };
        match checked {
            Ok(Ok(content)) => {
                // Refresh its age for eviction; a failure only makes it older.
                let _ = file.set_modified(SystemTime::now());
                Lookup::Hit(content)
            }
            Ok(Err(corruption)) => {
                let _ = fs::remove_file(&path);
                Lookup::Corrupt(corruption)
            }
            Err(_) => Lookup::Miss,
        }
    }

    /// Stores `content` as the entry for `key`, atomically, then evicts the oldest entries
    /// until the cache is within its bound. The pages of `content` that are all zero are left
    /// out of the entry (see the type's notes).
    ///
    /// # Errors
    ///
    /// [`CacheError`]: the directory, the write, the rename, or an entry bigger than the bound.
    /// Nothing is left behind on failure.
    pub fn store(&self, key: &CacheKey, content: &[u8]) -> Result<(), CacheError> {
        self.store_runs(key, content, &stored_runs(content))
    }

    /// [`store`](Self::store), with the content's [`stored_runs`] already found.
    pub(crate) fn store_runs(
        &self,
        key: &CacheKey,
        content: &[u8],
        runs: &[Range<u64>],
    ) -> Result<(), CacheError> {
        let len = content.len();
        let data: usize = runs.iter().map(|r| run_bytes(len, r).len()).sum();
        let size = (HEADER_LEN + runs.len() * RUN_LEN + data) as u64;
        if size > self.max_bytes {
            return Err(CacheError::EntryTooLarge {
                size,
                max: self.max_bytes,
            });
        }
        create_dir(&self.dir).map_err(|source| CacheError::CreateDir {
            path: self.dir.clone(),
            source,
        })?;
        let tmp = self.tmp_path(key);
        let written = write_entry(&tmp, content, runs);
        if let Err(source) = written {
            let _ = fs::remove_file(&tmp);
            return Err(CacheError::Write { path: tmp, source });
        }
        let path = self.entry_path(key);
        if let Err(source) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(CacheError::Publish { path, source });
        }
        self.evict(&path);
        Ok(())
    }

    fn tmp_path(&self, key: &CacheKey) -> PathBuf {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!(
            "{TMP_PREFIX}{}-{}-{n}",
            key.to_hex(),
            std::process::id()
        ))
    }

    /// Removes entries, oldest first, until the cache is within its bound; never `keep` (the
    /// entry just stored). Also removes stale temporary files. Races with other processes'
    /// evictions are harmless: a file already gone is skipped.
    fn evict(&self, keep: &Path) {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let mut entries = Vec::new();
        let mut total = 0u64;
        for entry in dir.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(meta) = entry.metadata() else { continue };
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if name.starts_with(TMP_PREFIX) {
                if now.duration_since(modified).unwrap_or_default() > STALE_TMP {
                    let _ = fs::remove_file(entry.path());
                }
            } else if name.ends_with(ENTRY_SUFFIX) && meta.is_file() {
                total += meta.len();
                entries.push((modified, entry.path(), meta.len()));
            }
        }
        entries.sort();
        for (_, path, len) in entries {
            if total <= self.max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => total -= len,
                Err(e) if e.kind() == io::ErrorKind::NotFound => total -= len,
                Err(_) => {}
            }
        }
    }
}

/// Whether every byte of `b` is zero (a fold per 64-byte block, which the compiler vectorises).
fn is_zero(b: &[u8]) -> bool {
    let mut blocks = b.chunks_exact(64);
    blocks.all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
        && blocks.remainder().iter().all(|&x| x == 0)
}

/// The runs of [`PAGE`]-sized pages of `content` (the last one may be short) that are not all
/// zero, as page ranges: what an entry stores.
pub(crate) fn stored_runs(content: &[u8]) -> Vec<Range<u64>> {
    let mut runs: Vec<Range<u64>> = Vec::new();
    for (i, page) in (0u64..).zip(content.chunks(PAGE_BYTES)) {
        if is_zero(page) {
            continue;
        }
        match runs.last_mut() {
            Some(last) if last.end == i => last.end = i + 1,
            _ => runs.push(i..i + 1),
        }
    }
    runs
}

/// The byte ranges of a `len`-byte content that `runs` (page ranges, sorted and disjoint)
/// leave out.
pub(crate) fn zero_ranges(len: usize, runs: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut zero = Vec::with_capacity(runs.len() + 1);
    let mut at = 0usize;
    for r in runs {
        let b = run_bytes(len, r);
        if b.start > at {
            zero.push(at as u64..b.start as u64);
        }
        at = b.end;
    }
    if len > at {
        zero.push(at as u64..len as u64);
    }
    zero
}

/// The bytes of a `len`-byte content that the page range `run` covers.
fn run_bytes(len: usize, run: &Range<u64>) -> Range<usize> {
    let at = |page: u64| usize::try_from(page.saturating_mul(PAGE)).map_or(len, |b| b.min(len));
    at(run.start)..at(run.end)
}

/// The run table as stored, or `None` if a run does not fit its u32 fields.
fn run_table(runs: &[Range<u64>]) -> Option<Vec<u8>> {
    let mut table = Vec::with_capacity(runs.len() * RUN_LEN);
    for r in runs {
        table.extend_from_slice(&u32::try_from(r.start).ok()?.to_le_bytes());
        table.extend_from_slice(&u32::try_from(r.end - r.start).ok()?.to_le_bytes());
    }
    Some(table)
}

/// Creates `dir` and any missing parents, writable by their owner only whatever the umask
/// (a directory others can write to would let them swap an entry or a record under root).
fn create_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
}

fn write_entry(tmp: &Path, content: &[u8], runs: &[Range<u64>]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let len = content.len();
    let (Some(table), Ok(count)) = (run_table(runs), u32::try_from(runs.len())) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the content has more pages than an entry's page map can name",
        ));
    };
    let mut crc = crc32fast::Hasher::new();
    crc.update(&table);
    let slices: Vec<&[u8]> = runs.iter().map(|r| &content[run_bytes(len, r)]).collect();
    for s in &slices {
        crc.update(s);
    }
    // Writable by its owner only, whatever the umask.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(tmp)?;
    let mut file = io::BufWriter::with_capacity(1 << 16, file);
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&(len as u64).to_le_bytes());
    header[16..20].copy_from_slice(&crc.finalize().to_le_bytes());
    header[20..24].copy_from_slice(&count.to_le_bytes());
    file.write_all(&header)?;
    file.write_all(&table)?;
    for s in slices {
        file.write_all(s)?;
    }
    file.flush()
}

/// Reads and checks an entry: `Ok(Err(_))` for one that fails a check, `Err` for an I/O error.
fn read_entry(file: &mut File, max_len: u64) -> io::Result<Result<EntryBytes, Corruption>> {
    let meta = file.metadata()?;
    let file_len = meta.len();
    let mut header = [0u8; HEADER_LEN];
    if file_len < HEADER_LEN as u64 {
        return Ok(Err(Corruption::BadHeader));
    }
    file.read_exact(&mut header)?;
    if &header[..8] != MAGIC || header[24..] != [0; 24] {
        return Ok(Err(Corruption::BadHeader));
    }
    let field = |at: usize, n: usize| {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&header[at..at + n]);
        u64::from_le_bytes(b)
    };
    let (stated, crc, count) = (field(8, 8), field(16, 4), field(20, 4));
    if stated > max_len {
        return Ok(Err(Corruption::TooLarge {
            stated,
            limit: max_len,
        }));
    }
    let Ok(len) = usize::try_from(stated) else {
        return Ok(Err(Corruption::TooLarge {
            stated,
            limit: max_len,
        }));
    };
    // Runs are non-empty and disjoint: no more of them than pages (which bounds the table).
    let pages = stated.div_ceil(PAGE);
    let Some(count) = usize::try_from(count).ok().filter(|&c| c as u64 <= pages) else {
        return Ok(Err(Corruption::BadRuns));
    };
    let table_len = count * RUN_LEN;
    if file_len - (HEADER_LEN as u64) < table_len as u64 {
        return Ok(Err(Corruption::LengthMismatch {
            stated: table_len as u64,
            actual: file_len - HEADER_LEN as u64,
        }));
    }
    let mut table = vec![0u8; table_len];
    file.read_exact(&mut table)?;
    let mut runs = Vec::with_capacity(count);
    let mut data = 0u64;
    for raw in table.chunks_exact(RUN_LEN) {
        let word = |i: usize| {
            u64::from(u32::from_le_bytes([
                raw[i],
                raw[i + 1],
                raw[i + 2],
                raw[i + 3],
            ]))
        };
        let (first, n) = (word(0), word(4));
        let after = runs.last().map_or(0, |r: &Range<u64>| r.end);
        if n == 0 || first < after || first + n > pages {
            return Ok(Err(Corruption::BadRuns));
        }
        let run = first..first + n;
        data += run_bytes(len, &run).len() as u64;
        runs.push(run);
    }
    let expected = table_len as u64 + data;
    let actual = file_len - HEADER_LEN as u64;
    if expected != actual {
        return Ok(Err(Corruption::LengthMismatch {
            stated: expected,
            actual,
        }));
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&table);
    // Writers never change a published file (they rename a new one over it), so this handle's
    // file is the one whose length was checked. The pages left out stay zero: fresh memory.
    let repr = if len >= POPULATE_FROM {
        let mut buf = MmapOptions::new().len(len).map_anon()?;
        for run in &runs {
            let b = run_bytes(len, run);
            let (s, e) = (b.start, b.end);
            // Faulting the pages in one call, not one fault per page; a kernel without
            // MADV_POPULATE_WRITE (before 5.14) faults them as they are read into.
            let _ = buf.advise_range(Advice::PopulateWrite, s, e - s);
            file.read_exact(&mut buf[s..e])?;
            hasher.update(&buf[s..e]);
        }
        EntryRepr::Mapped(Arc::new(buf.make_read_only()?))
    } else {
        let mut content = vec![0u8; len];
        for run in &runs {
            let b = run_bytes(len, run);
            file.read_exact(&mut content[b.clone()])?;
            hasher.update(&content[b]);
        }
        EntryRepr::Read(Arc::new(content))
    };
    if u64::from(hasher.finalize()) != crc {
        return Ok(Err(Corruption::HashMismatch));
    }
    Ok(Ok(EntryBytes {
        repr,
        zero: zero_ranges(len, &runs).into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::{owners_only, UntrustedWhy};

    #[test]
    fn only_root_and_this_user_may_own_and_only_the_owner_may_write() {
        let me = 1000;
        for uid in [0, me] {
            assert_eq!(owners_only(uid, 0o40755, me, false), Ok(()));
            assert_eq!(owners_only(uid, 0o40700, me, false), Ok(()));
            assert_eq!(owners_only(uid, 0o100644, me, false), Ok(()));
            for mode in [0o40775, 0o40757, 0o40777, 0o100664, 0o100646] {
                assert_eq!(
                    owners_only(uid, mode, me, true),
                    Err(UntrustedWhy::Writable(mode & 0o7777))
                );
            }
            // Sticky: fine above the cache, not for the cache's own directories.
            assert_eq!(owners_only(uid, 0o41777, me, true), Ok(()));
            assert_eq!(
                owners_only(uid, 0o41777, me, false),
                Err(UntrustedWhy::Writable(0o1777))
            );
        }
        for uid in [1, 999, 1001, u32::MAX] {
            assert_eq!(
                owners_only(uid, 0o40755, me, true),
                Err(UntrustedWhy::Owner(uid))
            );
        }
        // Root's own cache: only root.
        assert_eq!(owners_only(0, 0o40755, 0, false), Ok(()));
        assert_eq!(
            owners_only(1000, 0o40755, 0, false),
            Err(UntrustedWhy::Owner(1000))
        );
    }
}
