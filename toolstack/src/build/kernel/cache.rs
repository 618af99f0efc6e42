//! A content-addressed cache of unpacked kernels ([`KernelCache`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use memmap2::{Mmap, MmapOptions};
use sha2::{Digest, Sha256};

/// The entry header's magic (format version 2: a CRC-32 of the content; version 1, `RXKCACHE`,
/// held its SHA-256 and is replaced when met).
const MAGIC: &[u8; 8] = b"RXKCACH2";
/// Magic, length, content checksum (4 bytes, then 28 reserved zero bytes).
const HEADER_LEN: usize = 8 + 8 + 32;
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
}

/// A cache entry's content (the unpacked kernel), read into memory of this process's own.
/// Cheap to clone.
#[derive(Clone)]
pub struct EntryBytes(EntryRepr);

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
        match &self.0 {
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
/// - **Entry**: one file, `<dir>/<key in hex>.elf`: a 48-byte header (the magic `RXKCACH2`, the
///   content length as a little-endian u64, the content's CRC-32, zero padding) and the content. One file, so
///   one rename publishes header and content together.
/// - **Writes** go to a temporary file in the same directory (`.tmp-<key>-<pid>-<n>`, created
///   exclusively) that is renamed over the entry: readers see the old entry, the new one or
///   none, never half of one. Two processes storing the same key both write whole entries of the
///   same content; the last rename wins. Nothing is fsynced: an entry torn by a crash fails the
///   check below and is rewritten.
/// - **Reads** check everything before trusting an entry: the magic, that the file is exactly
///   header + length bytes, that the length is within the caller's limit (checked before the
///   content is read), and the content's CRC-32 (crc32fast, with the CPU's carry-less multiply).
///   A large entry is read into an anonymous mapping populated before the read: reading
///   Debian's 62 MB entry into a fresh vector took 550 ms of a warm 2.5 s create in a PV dom0
///   under QEMU TCG, most of it one page fault per 4 KiB, each a round trip through Xen; a
///   populated mapping takes its pages in one system call. (The entry file itself is not
///   mapped: the bytes behind a file mapping change when anyone writes the file, and a
///   `&[u8]` must not change under its borrower.)
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
/// choose what guests boot, as whoever can write `/boot` can. Create it root-owned.
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
        File::open(self.file_key_path(stamp))
            .ok()?
            .take(FILE_KEY_MAX)
            .read_to_string(&mut text)
            .ok()?;
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
        if fs::create_dir_all(&dir).is_err() {
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
        if fs::write(&tmp, line).is_err() || fs::rename(&tmp, &path).is_err() {
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
        match read_entry(&mut file, max_len) {
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
    /// until the cache is within its bound.
    ///
    /// # Errors
    ///
    /// [`CacheError`]: the directory, the write, the rename, or an entry bigger than the bound.
    /// Nothing is left behind on failure.
    pub fn store(&self, key: &CacheKey, content: &[u8]) -> Result<(), CacheError> {
        let size = (HEADER_LEN + content.len()) as u64;
        if size > self.max_bytes {
            return Err(CacheError::EntryTooLarge {
                size,
                max: self.max_bytes,
            });
        }
        fs::create_dir_all(&self.dir).map_err(|source| CacheError::CreateDir {
            path: self.dir.clone(),
            source,
        })?;
        let tmp = self.tmp_path(key);
        let written = write_entry(&tmp, content);
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

fn write_entry(tmp: &Path, content: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // Writable by its owner only, whatever the umask, so that it may be mapped when read.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(tmp)?;
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&(content.len() as u64).to_le_bytes());
    header[16..20].copy_from_slice(&crc32fast::hash(content).to_le_bytes());
    file.write_all(&header)?;
    file.write_all(content)?;
    Ok(())
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
    if &header[..8] != MAGIC {
        return Ok(Err(Corruption::BadHeader));
    }
    let mut stated = [0u8; 8];
    stated.copy_from_slice(&header[8..16]);
    let stated = u64::from_le_bytes(stated);
    let actual = file_len - HEADER_LEN as u64;
    if stated != actual {
        return Ok(Err(Corruption::LengthMismatch { stated, actual }));
    }
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
    // Writers never change a published file (they rename a new one over it), so this handle's
    // file is the one whose length was checked.
    let content = if len >= POPULATE_FROM {
        let mut buf = MmapOptions::new().len(len).populate().map_anon()?;
        file.read_exact(&mut buf)?;
        EntryBytes(EntryRepr::Mapped(Arc::new(buf.make_read_only()?)))
    } else {
        let mut content = vec![0u8; len];
        file.read_exact(&mut content)?;
        EntryBytes(EntryRepr::Read(Arc::new(content)))
    };
    if crc32fast::hash(&content).to_le_bytes()[..] != header[16..20] || header[20..] != [0; 28] {
        return Ok(Err(Corruption::HashMismatch));
    }
    Ok(Ok(content))
}
