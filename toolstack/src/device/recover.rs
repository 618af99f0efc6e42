//! Checking the invariant "nothing in xenstore without an entry in the stored config", and
//! recovering from a process that died half way through device work.

use super::hotplug::run_hotplug;
use super::nodes::{backend_of, rm_device, xenstore_devices};
use super::record::{is_recorded, recorded_devices, stored_err, unrecord};
use super::wait::read_opt;
use super::*;
use crate::config::DomainConfig;
use crate::domain::dom_path;
use crate::error::{DomainRef, Error, Result};
use crate::host::Host;
use crate::lock::{level, DomId, Locked};
use xenstore::ReadOpt;

/// Checks the invariant for domain `domid`, holding its slow lock (so no device work is half
/// way) and reading the stored config under the fast lock: every device xenstore has (a
/// frontend, a backend under any domain's `backend/`, or a toolstack record) must be in the
/// stored config, and its parts must agree. Returns the violations found (none is good).
///
/// A domain that does not exist (any more) must have no device nodes and no backend
/// directories; that is checked without its locks (they cannot be taken for a destroyed
/// domain). A stored config it left is stale, which the invariant allows.
///
/// A domain that libxl created (`xl create`: libxl's userdata document, none of ours) has no
/// violations here: its devices are described by libxl's document, which libxl keeps.
///
/// # Errors
///
/// A lock, stored-config or xenstore error that prevented the check.
pub fn check(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
) -> Result<Vec<Violation>> {
    let exists = |d| host.domain_exists(d);
    let mut slow = match host.locks.lock_slow(token, domid, &exists) {
        Ok(s) => s,
        Err(crate::lock::Error::NoSuchDomain { .. }) => return gone_violations(host, domid),
        Err(e) => return Err(Error::Lock(e)),
    };
    let found = xenstore_devices(host, domid)?;
    let mut st = slow.token();
    // A domain being created has no stored config yet, and must have no devices. One with
    // libxl's document but not ours is libxl's (`xl create`): its devices are libxl's to
    // account for, not ours to judge.
    // A failed creation rolls back under the userdata lock alone: the domain can go while the
    // slow lock is held. Then (`None`) it is judged as gone, below.
    let stored = host.try_with_userdata(&mut st, domid, |guard| {
        let s = host.configs.load_opt(guard).map_err(stored_err(domid))?;
        let libxls = s.is_none()
            && guard
                .uuid()
                .and_then(|u| host.configs.libxl_document_path(domid, u))
                .is_some_and(|p| p.exists());
        Ok((s, libxls))
    })?;
    drop(st);
    slow.release().map_err(Error::Lock)?;
    let stored = match stored {
        None => return gone_violations(host, domid),
        Some((_, true)) => return Ok(Vec::new()),
        Some((s, false)) => s
            .map(|s| s.config)
            .unwrap_or_else(|| DomainConfig::new("(being created)")),
    };
    Ok(found
        .into_iter()
        .filter(|(_, dev)| !is_recorded(&stored, *dev))
        .map(|(path, dev)| Violation {
            path,
            what: format!("{dev} is in xenstore but not in the stored config"),
        })
        .collect())
}

/// The violations of a domain that does not exist.
pub(super) fn gone_violations(host: &Host, domid: DomId) -> Result<Vec<Violation>> {
    // A destroy that died after Xen but before xenstore leaves both xenstore entries and the
    // stored config: a leak that `recover` removes, not a violation. Device nodes without a
    // stored config are.
    if host.configs.document_path(domid).exists() {
        return Ok(Vec::new());
    }
    Ok(xenstore_devices(host, domid)?
        .into_iter()
        .map(|(path, _)| Violation {
            path,
            what: format!(
                "left behind by domain {domid}, which no longer exists and has no stored config"
            ),
        })
        .collect())
}

/// [`check`] for every domain that exists or has left anything behind: a backend directory, a
/// `/libxl` record, a home directory or a stored config.
///
/// # Errors
///
/// As [`check`]; [`Error::XenHost`] if Xen will not list the domains.
pub fn check_all(host: &Host, token: &mut Locked<'_, level::Unlocked>) -> Result<Vec<Violation>> {
    let mut out = Vec::new();
    for d in known_domids(host)? {
        out.extend(check(host, token, d)?);
    }
    Ok(out)
}

/// [`recover`] for every domain that exists or has left anything behind; what it did.
///
/// # Errors
///
/// As [`recover`]; [`Error::XenHost`] if Xen will not list the domains.
pub fn recover_all(host: &Host, token: &mut Locked<'_, level::Unlocked>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for d in known_domids(host)? {
        out.extend(recover(host, token, d)?);
    }
    Ok(out)
}

/// The domains (but dom0) that exist, or have a backend directory, a `/libxl` record, a home
/// directory or a stored config.
pub(super) fn known_domids(host: &Host) -> Result<Vec<DomId>> {
    let mut ids = std::collections::BTreeSet::new();
    let infos = host.xc.domain_list().map_err(|source| Error::XenHost {
        what: "cannot list the domains",
        source,
    })?;
    ids.extend(infos.iter().map(|i| i.domid));
    let ls = |p: &str| -> Result<Vec<String>> {
        let names = host
            .xs
            .directory_opt(p)
            .map_err(|source| Error::XenstoreHost {
                what: "cannot list the devices",
                source,
            })?;
        Ok(names.unwrap_or_default())
    };
    let num = |v: Vec<String>| v.into_iter().filter_map(|n| n.parse::<DomId>().ok());
    for b in ls("/local/domain")? {
        if let Ok(id) = b.parse::<DomId>() {
            ids.insert(id);
        }
        for kind in DeviceKind::ALL {
            ids.extend(num(ls(&format!(
                "/local/domain/{b}/backend/{}",
                kind.xenstore_name()
            ))?));
        }
    }
    ids.extend(num(ls("/libxl")?));
    if let Ok(dir) = std::fs::read_dir(host.configs.path()) {
        for e in dir.flatten() {
            let name = e.file_name();
            let id = name
                .to_str()
                .and_then(|n| n.strip_prefix("domain-"))
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<DomId>().ok());
            ids.extend(id);
        }
    }
    Ok(ids.into_iter().filter(|&d| d != 0).collect())
}

/// Completes or undoes whatever device operation on domain `domid` a dead process left half
/// done, so that afterwards every device is in both xenstore and the stored config, or in
/// neither. Returns what it did, one sentence each.
///
/// Under the domain's slow lock nobody is half way through device work, so:
/// - a device in the stored config but not in xenstore is an add interrupted before it wrote
///   xenstore, or a remove interrupted after it removed the nodes: the entry goes;
/// - a device whose backend was told to go offline and has closed (or is gone) is an
///   interrupted remove: it is finished;
/// - a device in xenstore but not in the stored config cannot come from this toolstack (add
///   records first); it is removed from xenstore, which restores the invariant.
///
/// For a domain that no longer exists, whatever it left (xenstore entries, devices' backends,
/// the stored config) is removed, as destroy would have. Add and remove run this first.
///
/// # Errors
///
/// A lock, xenstore or stored-config error.
pub fn recover(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
) -> Result<Vec<String>> {
    let exists = |d| host.domain_exists(d);
    match host.locks.lock_slow(token, domid, &exists) {
        Ok(mut slow) => {
            let mut st = slow.token();
            let done = recover_locked(host, &mut st, domid)?;
            drop(st);
            slow.release().map_err(Error::Lock)?;
            Ok(done)
        }
        Err(crate::lock::Error::NoSuchDomain { .. }) => recover_gone(host, token, domid),
        Err(e) => Err(Error::Lock(e)),
    }
}

pub(super) fn recover_gone(
    host: &Host,
    token: &mut Locked<'_, level::Unlocked>,
    domid: DomId,
) -> Result<Vec<String>> {
    let leftovers = !xenstore_devices(host, domid)?.is_empty()
        || host
            .xs
            .exists(&dom_path(domid))
            .map_err(|source| Error::Xenstore {
                domain: DomainRef::id(domid),
                what: "cannot read its xenstore entries",
                source,
            })?
        || host
            .xs
            .exists(&crate::domain::libxl_path(domid))
            .unwrap_or(false)
        || host.configs.document_path(domid).exists();
    if !leftovers {
        return Ok(Vec::new());
    }
    // The domain is gone, so its locks refuse; take them without that check (nobody else can
    // start work on a domain that does not exist) and check again under them.
    let gone = |d| host.domain_exists(d).map(|e| !e).and(Ok(true));
    let mut slow = host
        .locks
        .lock_slow(token, domid, &gone)
        .map_err(Error::Lock)?;
    let mut st = slow.token();
    let cleaned = host.with_userdata_checked(&mut st, domid, &gone, |guard| {
        if host.domain_exists(domid).unwrap_or(true) {
            // A new domain took the id meanwhile: not ours to clean.
            return Ok(false);
        }
        let who = DomainRef::id(domid);
        crate::domain::teardown(host, domid, &who)?;
        host.configs.remove(guard).map_err(stored_err(domid))?;
        Ok(true)
    })?;
    drop(st);
    slow.release().map_err(Error::Lock)?;
    if cleaned != Some(true) {
        return Ok(Vec::new());
    }
    Ok(vec![format!(
        "domain {domid} no longer exists: removed what it left in xenstore and its stored config"
    )])
}

pub(super) fn recover_locked(
    host: &Host,
    st: &mut Locked<'_, level::Slow>,
    domid: DomId,
) -> Result<Vec<String>> {
    let stored = host.try_with_userdata(st, domid, |guard| {
        host.configs.load_opt(guard).map_err(stored_err(domid))
    })?;
    // A failed creation rolled back meanwhile (no domain): nothing of it to recover. A domain
    // still being created has no stored config, and no devices yet.
    let Some(Some(stored)) = stored else {
        return Ok(Vec::new());
    };
    let recorded = recorded_devices(domid, &stored.config);
    let mut in_xs: Vec<DeviceRef> = xenstore_devices(host, domid)?
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    in_xs.sort();
    in_xs.dedup();
    let mut done = Vec::new();
    for dev in &in_xs {
        let backend = backend_of(host, *dev)?;
        if !recorded.contains(dev) {
            if let Some(b) = backend {
                // What its hotplug script made (a loop device, a bridge port) goes too.
                let _ = run_hotplug(host, *dev, b, "remove");
            }
            rm_device(host, *dev, backend.unwrap_or(0))?;
            done.push(format!(
                "{dev}: removed from xenstore, as the stored config does not describe it"
            ));
            continue;
        }
        // Told to go offline and closed since: a removal that did not get to remove the
        // nodes. (One whose backend has not closed yet stays, whole, for the next detach.)
        let closed = match backend {
            Some(b) => {
                let be = dev.backend_path(b);
                read_opt(host, *dev, &format!("{be}/online"))?.as_deref() == Some("0")
                    && read_opt(host, *dev, &format!("{be}/state"))?
                        .as_deref()
                        .and_then(XenbusState::parse)
                        == Some(XenbusState::Closed)
            }
            // The frontend or the record without a backend: a removal got half way.
            None => true,
        };
        if closed {
            if let Some(b) = backend {
                // The removal may have died before its hotplug script ran `remove`; the script
                // is run again if it did (block's second `losetup -d` fails harmlessly).
                let _ = run_hotplug(host, *dev, b, "remove");
            }
            rm_device(host, *dev, backend.unwrap_or(0))?;
            unrecord(host, st, *dev)?;
            done.push(format!("{dev}: finished an interrupted removal"));
        }
    }
    for dev in recorded.iter().filter(|d| !in_xs.contains(d)) {
        unrecord(host, st, *dev)?;
        done.push(format!(
            "{dev}: dropped from the stored config, as xenstore does not have it \
             (an interrupted add or removal)"
        ));
    }
    Ok(done)
}
