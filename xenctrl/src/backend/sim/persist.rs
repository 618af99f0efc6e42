//! A simulated host shared by processes: the [`SimState`] model kept in a file.
//!
//! Each hypercall takes an exclusive `flock` on `<file>.lock`, brings the process's cached copy
//! of the model up to date (only when the file's generation moved on), runs in-process against
//! the caller's own pool memory exactly as the in-memory simulator does, and, if the model
//! changed, writes it back atomically (temporary file + rename) with the next generation. So
//! every hypercall is atomic across processes, as it is in Xen, and successive processes see one
//! host. No daemon is involved.
//!
//! Queries (`getdomaininfo`, the sysctls, `xen_version`, the reservation queries) take the
//! same lock and refresh the same way, but run against a shared borrow of the model
//! ([`Store::read`]): nothing is encoded, compared or written, so once a process has seen the
//! current file a query costs the same however many domains there are. Changes still encode
//! and write the whole model.
//!
//! The file is not fsynced: a rename is atomic against a process dying at any point, and a
//! machine crash loses the simulated host's domains as it would lose a real host's.
//!
//! Format (native endian, this module's private business): an [`Header`] of magic, a boot nonce
//! (fresh whenever the host is (re)created, so a generation is never reused) and a generation,
//! then the host's [`SimConfig`] and the model. A guest's physmap is stored as runs of
//! contiguous frames. The magic's last digit is the format's version: a file of another
//! version is refused ("bad magic"), so a host must be created afresh after an upgrade
//! (4: each domain's boot report).

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};
use zerocopy::{FromBytes, IntoBytes};

use super::boot::{BootCheck, BootFailure, BootKind, BootOutcome, BootReport};
use super::build::{SimBuild, SimVcpu};
use super::evtchn::{SimEventChannels, SimPort, SimPortState};
use super::gnttab::{SimActiveGrant, SimGrantTable, SimKernelGrant};
use super::state::{SimDomain, SimDomainState, SimState};
use super::SimConfig;
use crate::abi::{
    E820Entry, VcpuGuestContext, XenCpuidLeaf, XenDomctlCreatedomain, XenDomctlTscInfo,
};

const MAGIC: &[u8; 8] = b"RXENSIM5";
const HEADER_LEN: usize = 24;

/// What identifies one version of the file's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    nonce: u64,
    generation: u64,
}

/// The file, its lock, and this process's copy of the last contents it saw.
#[derive(Debug)]
pub(crate) struct Store {
    path: PathBuf,
    lock_path: PathBuf,
    /// The stamp and encoded body the in-memory model was last loaded from or saved as; `None`
    /// when the model must be reloaded.
    seen: Mutex<Option<(Stamp, Vec<u8>)>>,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("simulated host state: {what}"),
    )
}

fn fresh_nonce() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

impl Store {
    /// Open the state at `path`, creating it from `config` when it does not exist (or, with
    /// `reset`, in any case). Returns the store, the host's config as recorded in the file, and
    /// the model.
    pub(crate) fn open(
        path: &Path,
        config: &SimConfig,
        reset: bool,
    ) -> io::Result<(Self, SimConfig, SimState)> {
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let store = Store {
            path: path.to_owned(),
            lock_path: PathBuf::from(lock_path),
            seen: Mutex::new(None),
        };
        let _lock = store.lock()?;
        let existing = if reset { None } else { store.read_file()? };
        let (config, state) = match existing {
            Some((stamp, body)) => {
                let (config, state) = decode(&body)?;
                *store.seen() = Some((stamp, body));
                (config, state)
            }
            None => {
                let state = SimState::new(config);
                let stamp = Stamp {
                    nonce: fresh_nonce(),
                    generation: 1,
                };
                let body = encode(config, &state);
                store.write_file(stamp, &body)?;
                *store.seen() = Some((stamp, body));
                (config.clone(), state)
            }
        };
        Ok((store, config, state))
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Option<(Stamp, Vec<u8>)>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take the host lock (released when the guard drops).
    fn lock(&self) -> io::Result<Flock<File>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.lock_path)?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))
    }

    fn read_stamp(&self) -> io::Result<Stamp> {
        let f = File::open(&self.path)?;
        let mut h = [0u8; HEADER_LEN];
        f.read_exact_at(&mut h, 0)?;
        parse_header(&h)
    }

    fn read_file(&self) -> io::Result<Option<(Stamp, Vec<u8>)>> {
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut all = Vec::new();
        f.read_to_end(&mut all)?;
        if all.len() < HEADER_LEN {
            return Err(bad("truncated header"));
        }
        let stamp = parse_header(&all[..HEADER_LEN])?;
        all.drain(..HEADER_LEN);
        Ok(Some((stamp, all)))
    }

    fn write_file(&self, stamp: Stamp, body: &[u8]) -> io::Result<()> {
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = File::create(&tmp)?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&stamp.nonce.to_ne_bytes());
        header.extend_from_slice(&stamp.generation.to_ne_bytes());
        f.write_all(&header)?;
        f.write_all(body)?;
        drop(f);
        std::fs::rename(&tmp, &self.path)
    }

    /// Bring `state` up to date with the file (the host lock held): reload it only if the file's
    /// stamp is not the one last seen.
    fn refresh(&self, seen: &mut Option<(Stamp, Vec<u8>)>, state: &mut SimState) -> io::Result<()> {
        let stamp = self.read_stamp()?;
        if seen.as_ref().map(|(s, _)| *s) != Some(stamp) {
            *seen = None;
            let (stamp, body) = self
                .read_file()?
                .ok_or_else(|| bad("the state file vanished"))?;
            let (_, fresh) = decode(&body)?;
            *state = fresh;
            *seen = Some((stamp, body));
        }
        Ok(())
    }

    /// Run `f` on an up-to-date model that it cannot change: lock, refresh `state` from the file
    /// if another process changed it, run. Nothing is encoded or written, so the cost does not
    /// grow with the model once this process has seen the current file.
    pub(crate) fn read<R>(
        &self,
        state: &mut SimState,
        f: impl FnOnce(&SimState) -> R,
    ) -> io::Result<R> {
        let _lock = self.lock()?;
        let mut seen = self.seen();
        self.refresh(&mut seen, state)?;
        Ok(f(state))
    }

    /// Run `f` on the model as one atomic step across processes: lock, refresh `state` from the
    /// file if another process changed it, run, save if `f` changed it.
    pub(crate) fn transact<R>(
        &self,
        config: &SimConfig,
        state: &mut SimState,
        f: impl FnOnce(&mut SimState) -> R,
    ) -> io::Result<R> {
        let _lock = self.lock()?;
        let mut seen = self.seen();
        self.refresh(&mut seen, state)?;
        let r = f(state);
        let body = encode(config, state);
        let Some((stamp, old)) = seen.as_mut() else {
            return Err(bad("no loaded state"));
        };
        if body != *old {
            let next = Stamp {
                nonce: stamp.nonce,
                generation: stamp.generation + 1,
            };
            if let Err(e) = self.write_file(next, &body) {
                // The in-memory model is ahead of the file: reload it next time.
                *seen = None;
                return Err(e);
            }
            *stamp = next;
            *old = body;
        }
        Ok(r)
    }
}

fn parse_header(h: &[u8]) -> io::Result<Stamp> {
    if &h[..8] != MAGIC {
        return Err(bad("not a simulated host state file (bad magic)"));
    }
    let word = |i: usize| u64::from_ne_bytes(h[i..i + 8].try_into().unwrap_or([0; 8]));
    Ok(Stamp {
        nonce: word(8),
        generation: word(16),
    })
}

struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
}

struct Dec<'a>(&'a [u8]);

impl Dec<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.0.len() < n {
            return Err(bad("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn arr<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        self.take(N)?.try_into().map_err(|_| bad("truncated"))
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.arr::<1>()?[0])
    }
    fn u16(&mut self) -> io::Result<u16> {
        Ok(u16::from_ne_bytes(self.arr()?))
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_ne_bytes(self.arr()?))
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_ne_bytes(self.arr()?))
    }
    /// A count of items of at least `item` bytes each, checked against what is left.
    fn len(&mut self, item: usize) -> io::Result<usize> {
        let n = usize::try_from(self.u64()?).map_err(|_| bad("bad count"))?;
        if n.saturating_mul(item.max(1)) > self.0.len() {
            return Err(bad("count larger than the data"));
        }
        Ok(n)
    }
    fn str(&mut self) -> io::Result<String> {
        let n = self.len(1)?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| bad("non-UTF-8 string"))
    }
}

#[cfg(test)]
thread_local! {
    /// How many times this thread encoded the model (whose cost grows with it).
    static ENCODES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn encode(config: &SimConfig, s: &SimState) -> Vec<u8> {
    #[cfg(test)]
    ENCODES.with(|n| n.set(n.get() + 1));
    let mut e = Enc(Vec::with_capacity(256 + s.domains.len() * 160));
    e.u64(config.total_mib);
    e.u64(config.dom0_mib);
    e.u32(config.nr_cpus);
    e.u32(config.cpu_khz);
    e.u32(config.domctl_interface_version);
    e.u32(config.sysctl_interface_version);
    e.u16(config.version.0);
    e.u16(config.version.1);
    e.str(&config.extraversion);
    e.str(&config.capabilities);
    e.str(&config.changeset);

    e.u64(s.total_pages);
    e.u64(s.free_pages);
    e.u64(s.outstanding_claims);
    e.u32(s.nr_cpus);
    e.u32(s.cpu_khz);
    e.u16(s.rover);
    e.u64(s.next_mfn);
    e.str(s.crashed.as_deref().unwrap_or(""));
    e.len(s.domains.len());
    for d in s.domains.values() {
        e.u16(d.domid);
        e.0.extend_from_slice(d.config.as_bytes());
        e.u64(d.max_pages);
        e.u64(d.tot_pages);
        e.u64(d.outstanding_pages);
        e.u32(d.pause_count);
        e.u8(u8::from(d.creation_finished));
        e.u8(u8::from(d.vcpus_created));
        match d.state {
            SimDomainState::Alive => e.u8(0),
            SimDomainState::Shutdown(code) => {
                e.u8(1);
                e.u32(code);
            }
            SimDomainState::Dying => e.u8(2),
        }
        // Runs of (gpfn, mfn) that both go up by one.
        let mut runs: Vec<(u64, u64, u64)> = Vec::new();
        for (&g, &m) in &d.physmap {
            match runs.last_mut() {
                Some((g0, m0, n)) if g0.wrapping_add(*n) == g && m0.wrapping_add(*n) == m => {
                    *n += 1;
                }
                _ => runs.push((g, m, 1)),
            }
        }
        e.len(runs.len());
        for (g, m, n) in runs {
            e.u64(g);
            e.u64(m);
            e.u64(n);
        }
        encode_evtchns(&mut e, &d.evtchn);
        e.len(d.grant_frames.len());
        for &m in &d.grant_frames {
            e.u64(m);
        }
        e.len(d.grants.active.len());
        for (&r, a) in &d.grants.active {
            e.u32(r);
            e.u16(a.mapper);
            e.u64(a.mfn);
            e.u32(a.readers);
            e.u32(a.writers);
        }
        e.len(d.grants.kernel.len());
        for (&r, k) in &d.grants.kernel {
            e.u32(r);
            match k.page {
                Some(m) => {
                    e.u8(1);
                    e.u64(m);
                }
                None => e.u8(0),
            }
            e.u8(u8::from(k.released));
        }
        encode_build(&mut e, &d.build);
        encode_boot(&mut e, d.boot.as_ref());
    }
    e.0
}

/// A domain's boot report: absent (0), booted (1, the console line) or crashed (2, the
/// check's code and the problem).
fn encode_boot(e: &mut Enc, report: Option<&BootReport>) {
    let Some(r) = report else {
        e.u8(0);
        return;
    };
    let kind = match r.kind {
        BootKind::Pv => 0,
        BootKind::Pvh => 1,
    };
    match &r.outcome {
        BootOutcome::Booted { console_line } => {
            e.u8(1);
            e.u8(kind);
            e.str(console_line);
        }
        BootOutcome::Crashed(f) => {
            e.u8(2);
            e.u8(kind);
            e.u8(f.check.code());
            e.str(&f.problem);
        }
    }
}

fn decode_boot(d: &mut Dec<'_>) -> io::Result<Option<BootReport>> {
    let tag = d.u8()?;
    if tag == 0 {
        return Ok(None);
    }
    let kind = match d.u8()? {
        0 => BootKind::Pv,
        1 => BootKind::Pvh,
        _ => return Err(bad("boot report kind")),
    };
    let outcome = match tag {
        1 => BootOutcome::Booted {
            console_line: d.str()?,
        },
        2 => {
            let check = BootCheck::from_code(d.u8()?).ok_or_else(|| bad("boot check"))?;
            BootOutcome::Crashed(BootFailure {
                check,
                problem: d.str()?,
            })
        }
        _ => return Err(bad("boot report tag")),
    };
    Ok(Some(BootReport { kind, outcome }))
}

/// What a builder set on a domain (see `sim/build.rs`).
fn encode_build(e: &mut Enc, b: &SimBuild) {
    e.u64(b.shared_info_frame);
    e.len(b.vcpus.len());
    for (&id, v) in &b.vcpus {
        e.u32(id);
        e.u8(u8::from(v.initialised) | (u8::from(v.online) << 1));
        match &v.context {
            Some(c) => {
                e.u8(1);
                e.0.extend_from_slice(c.as_bytes());
            }
            None => e.u8(0),
        }
    }
    e.len(b.hypercall_pages.len());
    for &f in &b.hypercall_pages {
        e.u64(f);
    }
    e.0.extend_from_slice(b.tsc.as_bytes());
    e.len(b.hvm_params.len());
    for (&i, &v) in &b.hvm_params {
        e.u32(i);
        e.u64(v);
    }
    e.len(b.hvm_records.len());
    for (&(t, i), data) in &b.hvm_records {
        e.u16(t);
        e.u16(i);
        e.len(data.len());
        e.0.extend_from_slice(data);
    }
    e.u64(b.paging_pool_pages);
    e.len(b.pinned.len());
    for (&mfn, &level) in &b.pinned {
        e.u64(mfn);
        e.u32(level);
    }
    e.len(b.memory_map.len());
    for m in &b.memory_map {
        e.0.extend_from_slice(m.as_bytes());
    }
    e.len(b.cpu_policy.len());
    for l in &b.cpu_policy {
        e.0.extend_from_slice(l.as_bytes());
    }
}

fn decode_build(d: &mut Dec<'_>) -> io::Result<SimBuild> {
    let mut b = SimBuild::new(false, 0, 0);
    b.shared_info_frame = d.u64()?;
    let ctx_len = std::mem::size_of::<VcpuGuestContext>();
    for _ in 0..d.len(6)? {
        let id = d.u32()?;
        let bits = d.u8()?;
        if bits > 3 {
            return Err(bad("vcpu state bits"));
        }
        let context = match d.u8()? {
            0 => None,
            1 => Some(Box::new(
                VcpuGuestContext::read_from_bytes(d.take(ctx_len)?)
                    .map_err(|_| bad("vcpu context"))?,
            )),
            _ => return Err(bad("vcpu context tag")),
        };
        let v = SimVcpu {
            context,
            initialised: bits & 1 != 0,
            online: bits & 2 != 0,
        };
        if b.vcpus.insert(id, v).is_some() {
            return Err(bad("vcpu listed twice"));
        }
    }
    for _ in 0..d.len(8)? {
        b.hypercall_pages.push(d.u64()?);
    }
    b.tsc = XenDomctlTscInfo::read_from_bytes(d.take(std::mem::size_of::<XenDomctlTscInfo>())?)
        .map_err(|_| bad("tsc info"))?;
    for _ in 0..d.len(12)? {
        let i = d.u32()?;
        b.hvm_params.insert(i, d.u64()?);
    }
    for _ in 0..d.len(12)? {
        let t = d.u16()?;
        let i = d.u16()?;
        let n = d.len(1)?;
        b.hvm_records.insert((t, i), d.take(n)?.to_vec());
    }
    b.paging_pool_pages = d.u64()?;
    for _ in 0..d.len(12)? {
        let mfn = d.u64()?;
        b.pinned.insert(mfn, d.u32()?);
    }
    let entry = std::mem::size_of::<E820Entry>();
    for _ in 0..d.len(entry)? {
        b.memory_map
            .push(E820Entry::read_from_bytes(d.take(entry)?).map_err(|_| bad("e820 entry"))?);
    }
    let leaf = std::mem::size_of::<XenCpuidLeaf>();
    b.cpu_policy.clear();
    for _ in 0..d.len(leaf)? {
        b.cpu_policy
            .push(XenCpuidLeaf::read_from_bytes(d.take(leaf)?).map_err(|_| bad("cpuid leaf"))?);
    }
    Ok(b)
}

/// A domain's ports: `valid`, then each port in use as (port, kind, what it is bound to, the
/// pending and mask bits).
fn encode_evtchns(e: &mut Enc, t: &SimEventChannels) {
    e.u32(t.valid);
    e.len(t.ports.len());
    for (&port, p) in &t.ports {
        e.u32(port);
        match p.state {
            SimPortState::Reserved => e.u8(0),
            SimPortState::Unbound { remote } => {
                e.u8(1);
                e.u16(remote);
            }
            SimPortState::Interdomain {
                remote,
                remote_port,
            } => {
                e.u8(2);
                e.u16(remote);
                e.u32(remote_port);
            }
            SimPortState::Virq(virq) => {
                e.u8(3);
                e.u32(virq);
            }
        }
        e.u8(u8::from(p.pending) | (u8::from(p.masked) << 1));
    }
}

fn decode_evtchns(d: &mut Dec<'_>) -> io::Result<SimEventChannels> {
    let valid = d.u32()?;
    let mut ports = std::collections::BTreeMap::new();
    for _ in 0..d.len(6)? {
        let port = d.u32()?;
        let state = match d.u8()? {
            0 => SimPortState::Reserved,
            1 => SimPortState::Unbound { remote: d.u16()? },
            2 => SimPortState::Interdomain {
                remote: d.u16()?,
                remote_port: d.u32()?,
            },
            3 => SimPortState::Virq(d.u32()?),
            _ => return Err(bad("event channel state")),
        };
        let bits = d.u8()?;
        if bits > 3 {
            return Err(bad("event channel bits"));
        }
        let p = SimPort {
            state,
            pending: bits & 1 != 0,
            masked: bits & 2 != 0,
        };
        if ports.insert(port, p).is_some() {
            return Err(bad("event channel port listed twice"));
        }
    }
    Ok(SimEventChannels { ports, valid })
}

fn decode(body: &[u8]) -> io::Result<(SimConfig, SimState)> {
    let mut d = Dec(body);
    let config = SimConfig {
        total_mib: d.u64()?,
        dom0_mib: d.u64()?,
        nr_cpus: d.u32()?,
        cpu_khz: d.u32()?,
        domctl_interface_version: d.u32()?,
        sysctl_interface_version: d.u32()?,
        version: (d.u16()?, d.u16()?),
        extraversion: d.str()?,
        capabilities: d.str()?,
        changeset: d.str()?,
    };
    // An empty host whose every field is then read from the file.
    let mut s = SimState::new(&SimConfig {
        total_mib: 0,
        dom0_mib: 0,
        ..SimConfig::default()
    });
    s.domains.clear();
    s.total_pages = d.u64()?;
    s.free_pages = d.u64()?;
    s.outstanding_claims = d.u64()?;
    s.nr_cpus = d.u32()?;
    s.cpu_khz = d.u32()?;
    s.rover = d.u16()?;
    s.next_mfn = d.u64()?;
    s.crashed = Some(d.str()?).filter(|why| !why.is_empty());
    let cfg_len = std::mem::size_of::<XenDomctlCreatedomain>();
    let n = d.len(2 + cfg_len)?;
    for _ in 0..n {
        let domid = d.u16()?;
        let config = XenDomctlCreatedomain::read_from_bytes(d.take(cfg_len)?)
            .map_err(|_| bad("domain config"))?;
        let max_pages = d.u64()?;
        let tot_pages = d.u64()?;
        let outstanding_pages = d.u64()?;
        let pause_count = d.u32()?;
        let creation_finished = d.u8()? != 0;
        let vcpus_created = d.u8()? != 0;
        let state = match d.u8()? {
            0 => SimDomainState::Alive,
            1 => SimDomainState::Shutdown(d.u32()?),
            2 => SimDomainState::Dying,
            _ => return Err(bad("domain state")),
        };
        let mut physmap = std::collections::BTreeMap::new();
        for _ in 0..d.len(24)? {
            let (g, m, len) = (d.u64()?, d.u64()?, d.u64()?);
            if len > s.total_pages {
                return Err(bad("physmap run longer than the host"));
            }
            for i in 0..len {
                physmap.insert(g.wrapping_add(i), m.wrapping_add(i));
            }
        }
        let evtchn = decode_evtchns(&mut d)?;
        let mut grant_frames = Vec::new();
        for _ in 0..d.len(8)? {
            grant_frames.push(d.u64()?);
        }
        let mut grants = SimGrantTable::default();
        for _ in 0..d.len(22)? {
            let r = d.u32()?;
            let active = SimActiveGrant {
                mapper: d.u16()?,
                mfn: d.u64()?,
                readers: d.u32()?,
                writers: d.u32()?,
            };
            grants.active.insert(r, active);
        }
        for _ in 0..d.len(6)? {
            let r = d.u32()?;
            let page = match d.u8()? {
                0 => None,
                1 => Some(d.u64()?),
                _ => return Err(bad("kernel grant page")),
            };
            let released = d.u8()? != 0;
            grants.kernel.insert(r, SimKernelGrant { page, released });
        }
        let build = decode_build(&mut d)?;
        let boot = decode_boot(&mut d)?;
        s.domains.insert(
            domid,
            SimDomain {
                domid,
                config,
                max_pages,
                tot_pages,
                outstanding_pages,
                pause_count,
                creation_finished,
                vcpus_created,
                state,
                physmap,
                evtchn,
                grant_frames,
                grants,
                build,
                boot,
            },
        );
    }
    if !d.0.is_empty() {
        return Err(bad("trailing bytes"));
    }
    // Sums that overflow cannot come from a host we saved; check before the model adds them.
    let sum = |f: fn(&SimDomain) -> u64| {
        s.domains
            .values()
            .try_fold(0u64, |acc, d| acc.checked_add(f(d)))
    };
    let used = sum(|d| d.tot_pages).and_then(|u| u.checked_add(s.free_pages));
    if used.is_none() || sum(|d| d.outstanding_pages).is_none() {
        return Err(bad("page counts overflow"));
    }
    s.check_invariants().map_err(|e| bad(&e))?;
    Ok((config, s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::sim::SimHypervisor;

    #[test]
    fn encoding_round_trips_a_busy_host() {
        let config = SimConfig::default();
        let mut s = SimState::new(&config);
        let d = s.create_domain(0, &SimState::pv_config(2)).expect("create");
        s.set_max_mem(d, 64 * 1024).expect("max_mem");
        s.max_vcpus(d, 2).expect("vcpus");
        for g in (0..100).chain(200..210) {
            s.populate_extent(d, g, 0).expect("populate");
        }
        s.set_outstanding(d, 1000).expect("claim");
        // Event channels in every state: unbound, interdomain (one end pending, the other
        // masked), a virtual IRQ, and a port beyond the first bucket.
        let unbound = s.alloc_unbound(d, 0).expect("evtchn");
        let peer = s.alloc_unbound(d, 0).expect("evtchn");
        let local = s.evtchn_bind_interdomain(0, d, peer).expect("bind");
        s.evtchn_send(0, local).expect("send");
        s.domains
            .get_mut(&0)
            .expect("dom0")
            .evtchn
            .ports
            .get_mut(&local)
            .expect("port")
            .masked = true;
        s.evtchn_bind_virq(0, crate::abi::VIRQ_DOM_EXC)
            .expect("virq");
        for _ in 0..70 {
            s.alloc_unbound(d, 7).expect("evtchn");
        }
        {
            let grants = &mut s.domains.get_mut(&d).expect("domain").grants;
            grants.active.insert(
                9,
                SimActiveGrant {
                    mapper: 0,
                    mfn: 77,
                    readers: 1,
                    writers: 2,
                },
            );
            grants.kernel.insert(
                9,
                SimKernelGrant {
                    page: Some(77),
                    released: true,
                },
            );
            grants.kernel.insert(
                10,
                SimKernelGrant {
                    page: None,
                    released: false,
                },
            );
        }
        s.shutdown(d, 2).expect("shutdown");
        let body = encode(&config, &s);
        let (c2, s2) = decode(&body).expect("decode");
        assert_eq!(c2.extraversion, config.extraversion);
        assert_eq!(encode(&c2, &s2), body);
        let d2 = &s2.domains[&d];
        assert_eq!(d2.evtchn, s.domains[&d].evtchn);
        assert_eq!(s2.domains[&0].evtchn, s.domains[&0].evtchn);
        assert_eq!(d2.evtchn.valid, 128);
        assert!(d2.evtchn.port(peer).is_some_and(|p| p.pending));
        assert_eq!(
            d2.evtchn.port(unbound).map(|p| p.state),
            Some(SimPortState::Unbound { remote: 0 })
        );
        assert!(s2.domains[&0].evtchn.port(local).is_some_and(|p| p.masked));
        assert_eq!(d2.physmap, s.domains[&d].physmap);
        assert_eq!(d2.grants, s.domains[&d].grants);
        assert_eq!(d2.state, SimDomainState::Shutdown(2));
        assert_eq!(s2.outstanding_claims, s.outstanding_claims);
    }

    /// What builders set on a PV and an HVM domain survives the file: vCPU contexts, pins,
    /// the memory map, TSC, HVM parameters and records, the paging pool.
    #[test]
    fn a_builders_settings_round_trip() {
        use crate::abi::{VGCF_in_kernel, VGCF_online, VcpuGuestContext};
        let config = SimConfig::default();
        let mut s = SimState::new(&config);
        let pv = s.create_domain(0, &SimState::pv_config(1)).expect("pv");
        s.set_max_mem(pv, 1024).expect("max_mem");
        s.max_vcpus(pv, 1).expect("vcpus");
        let l4 = s.populate_extent(pv, 0, 0).expect("populate");
        s.pin_table(pv, 4, l4).expect("pin");
        let mut c = VcpuGuestContext::zeroed();
        c.flags = VGCF_in_kernel | VGCF_online;
        c.user_regs.rip = 0xffff_ffff_8100_0000;
        c.ctrlreg[3] = VcpuGuestContext::pfn_to_cr3(l4);
        s.set_vcpu_context(pv, 0, Some(&c)).expect("context");
        s.hypercall_init(pv, l4).expect("hypercall page");
        s.set_memory_map(pv, vec![E820Entry::new(0, 1 << 20, crate::abi::E820_RAM)])
            .expect("map");
        s.set_tsc_info(
            pv,
            &XenDomctlTscInfo {
                tsc_mode: 2,
                ..Default::default()
            },
        )
        .expect("tsc");
        let mut hvm_config = SimState::pv_config(2);
        hvm_config.flags = crate::abi::XEN_DOMCTL_CDF_hvm | crate::abi::XEN_DOMCTL_CDF_hap;
        hvm_config.arch.emulation_flags = crate::abi::XEN_X86_EMU_LAPIC;
        let hvm = s.create_domain(0, &hvm_config).expect("hvm");
        s.max_vcpus(hvm, 2).expect("vcpus");
        s.set_hvm_param(hvm, crate::abi::HVM_PARAM_STORE_PFN, 0xfeffc)
            .expect("param");
        s.set_paging_mempool_size(hvm, 8 << 20).expect("pool");
        let blob = s.hvm_context(hvm).expect("context");
        s.set_hvm_context(hvm, &blob).expect("load");
        let body = encode(&config, &s);
        let (_, s2) = decode(&body).expect("decode");
        assert_eq!(encode(&config, &s2), body);
        for d in [pv, hvm] {
            assert_eq!(s2.domains[&d].build, s.domains[&d].build, "d{d}");
        }
        let b = &s2.domains[&pv].build;
        assert_eq!(b.pinned.get(&l4), Some(&4));
        assert_eq!(b.vcpus[&0].context.as_deref(), Some(&c));
        assert_eq!(b.tsc.tsc_mode, 2);
        assert_eq!(
            s2.domains[&hvm]
                .build
                .hvm_param(crate::abi::HVM_PARAM_STORE_PFN),
            0xfeffc
        );
        assert_eq!(s2.domains[&hvm].build.paging_pool_pages, 2048);
        // And every cut of it is an error, not a panic.
        for cut in (0..body.len()).step_by(97) {
            assert!(decode(&body[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// Boot reports, booted and crashed, survive the file; a corrupt one is an error.
    #[test]
    fn boot_reports_round_trip() {
        let config = SimConfig::default();
        let mut s = SimState::new(&config);
        let a = s.create_domain(0, &SimState::pv_config(1)).expect("a");
        let b = s.create_domain(0, &SimState::pv_config(1)).expect("b");
        let c = s.create_domain(0, &SimState::pv_config(1)).expect("c");
        let booted = BootReport {
            kind: BootKind::Pvh,
            outcome: BootOutcome::Booted {
                console_line: "rxen-sim: Linux stand-in booted (pvh, 1 MiB, 1 vCPU)".into(),
            },
        };
        let crashed = BootReport {
            kind: BootKind::Pv,
            outcome: BootOutcome::Crashed(BootFailure {
                check: BootCheck::XenstoreGrant,
                problem: "grant entry 1 (xenstore) is not seeded".into(),
            }),
        };
        s.domains.get_mut(&a).expect("a").boot = Some(booted.clone());
        s.domains.get_mut(&b).expect("b").boot = Some(crashed.clone());
        let body = encode(&config, &s);
        let (_, s2) = decode(&body).expect("decode");
        assert_eq!(s2.domains[&a].boot, Some(booted));
        assert_eq!(s2.domains[&b].boot, Some(crashed));
        assert_eq!(s2.domains[&c].boot, None);
        // The last domain's report tag, made unknown.
        let mut bad = body.clone();
        let at = bad.len() - 1;
        bad[at] = 9;
        assert!(decode(&bad).is_err());
    }

    #[test]
    fn truncated_or_corrupt_state_is_an_error_not_a_panic() {
        let config = SimConfig::default();
        let mut s = SimState::new(&config);
        s.create_domain(0, &SimState::pv_config(1)).expect("create");
        let body = encode(&config, &s);
        for cut in 0..body.len() {
            assert!(decode(&body[..cut]).is_err(), "cut at {cut}");
        }
        // Every single-bit flip decodes to something or fails; none panics, and none that
        // breaks the page bookkeeping is accepted.
        for at in 0..body.len() {
            let mut flipped = body.clone();
            flipped[at] ^= 0x40;
            if let Ok((_, s)) = decode(&flipped) {
                assert!(s.check_invariants().is_ok());
            }
        }
    }

    /// Handles opened separately (as separate processes would) on one file: no update is lost,
    /// and the domids Xen hands out are all distinct.
    #[test]
    fn separate_handles_share_one_host_atomically() {
        let dir = std::env::temp_dir().join(format!("xenctrl-persist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("host");
        let _ = std::fs::remove_file(&path);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let xc = crate::XenCtrl::simulated_persistent(&path, SimConfig::default())
                        .expect("open");
                    (0..15)
                        .map(|_| {
                            let d = xc
                                .create_domain(&crate::CreateDomain::pv(1))
                                .expect("create");
                            xc.set_max_mem(d, 1024).expect("max_mem");
                            xc.claim_pages(d, 16).expect("claim");
                            d
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut ids: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("thread"))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 60);
        let fresh = SimHypervisor::persistent(&path, SimConfig::default()).expect("reopen");
        fresh.with_state(|s| {
            assert_eq!(s.domains.len(), 61);
            assert_eq!(s.outstanding_claims, 60 * 16);
            s.check_invariants().expect("invariants");
        });
        let reset = SimHypervisor::persistent_reset(&path, SimConfig::default()).expect("reset");
        assert_eq!(reset.with_state(|s| s.domains.len()), 1);
        // The old handle sees the rebooted host at its next call.
        assert_eq!(fresh.with_state(|s| s.domains.len()), 1);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// Queries (domain info, physinfo, domain lists) see what other handles changed, but never
    /// encode the model (whose cost grows with the number of domains) nor rewrite the file: its
    /// inode, which every save replaces, stays the same.
    #[test]
    fn queries_see_changes_and_write_nothing() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("xenctrl-query-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("host");
        let _ = std::fs::remove_file(&path);
        let a = crate::XenCtrl::simulated_persistent(&path, SimConfig::default()).expect("open");
        let b = crate::XenCtrl::simulated_persistent(&path, SimConfig::default()).expect("open");
        let d = a
            .create_domain(&crate::CreateDomain::pv(1))
            .expect("create");
        a.set_max_mem(d, 2048).expect("max_mem");
        let ino = || std::fs::metadata(&path).expect("state file").ino();
        let before = ino();
        let encodes = ENCODES.with(|n| n.get());
        // `b` has not seen the new domain yet: its first query reloads the file.
        assert_eq!(b.domain_info(d).expect("info").max_pages, 512);
        assert_eq!(b.physinfo().expect("physinfo").outstanding_pages, 0);
        assert_eq!(b.domain_list().expect("list").len(), 2);
        assert_eq!(ino(), before, "a query rewrote the state file");
        assert_eq!(
            ENCODES.with(|n| n.get()),
            encodes,
            "a query encoded the model"
        );
        // A change through `a` is seen by `b`'s next query.
        a.set_max_mem(d, 4096).expect("max_mem");
        assert_ne!(ino(), before, "a change is saved");
        let after = ino();
        assert_eq!(b.domain_info(d).expect("info").max_pages, 1024);
        assert_eq!(ino(), after, "a query rewrote the state file");
        assert!(
            ENCODES.with(|n| n.get()) > encodes,
            "the change was encoded"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
