//! Domains as the toolstack sees them: Xen's view joined with xenstore's, found by id or name;
//! pause, unpause and destroy.

use serde::Serialize;
use xenctrl::DomainInfo;

use crate::error::{DomainRef, Error, Result};
use crate::host::Host;
use crate::lock::{level, DomId, Locked};
use crate::paths::rm_if_present;
use xenstore::ReadOpt;

pub use crate::paths::{dom_path, libxl_path};

/// A UUID from Xen's domain handle, in the usual 8-4-4-4-12 form.
pub fn uuid_string(handle: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*handle).hyphenated().to_string()
}

/// Read a domain's xenstore node, `None` if it does not exist.
fn xs_read_opt(host: &Host, domid: DomId, path: &str) -> Result<Option<String>> {
    host.xs
        .read_string_opt(path)
        .map_err(|source| Error::Xenstore {
            domain: DomainRef::id(domid),
            what: "cannot read its xenstore entries",
            source,
        })
}

/// Parse a KiB count read from xenstore.
///
/// # Errors
///
/// [`Error::BadNode`] when it is not a number.
pub fn parse_kib(domid: DomId, path: &str, value: &str) -> Result<u64> {
    value.trim().parse().map_err(|_| Error::BadNode {
        domain: DomainRef::id(domid),
        path: path.to_owned(),
        value: value.to_owned(),
        expected: "a number of KiB",
    })
}

/// One line of `rxl list`: Xen's view of a domain and its xenstore memory nodes.
#[derive(Clone, Debug, Serialize)]
pub struct DomainSummary {
    /// The domain id.
    pub domid: DomId,
    /// Its name (`/local/domain/N/name`), or `(null)` as xl prints a domain without one.
    pub name: String,
    /// Its UUID (Xen's handle).
    pub uuid: String,
    /// xl's six state letters (4.17's: `r b p s`, the shutdown reason's letter from
    /// `-rscwS`, `d`).
    pub state: String,
    /// Why the domain shut down (`poweroff`, `reboot`, `suspend`, `crash`, `watchdog`,
    /// `soft_reset`), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_reason: Option<String>,
    /// vCPUs online.
    pub vcpus: u32,
    /// `memory/target` in KiB, if present.
    pub target_kib: Option<u64>,
    /// `memory/static-max` in KiB, if present.
    pub static_max_kib: Option<u64>,
    /// Xen's `max_mem` in KiB.
    pub max_mem_kib: u64,
    /// Pages the domain has.
    pub tot_pages: u64,
    /// Pages claimed and not yet allocated.
    #[serde(skip)]
    pub outstanding_pages: u64,
    /// CPU time in nanoseconds.
    #[serde(skip)]
    pub cpu_time_ns: u64,
}

impl DomainSummary {
    /// xl list's `Mem` column: pages held plus pages claimed, in MiB.
    pub fn mem_mib(&self) -> u64 {
        (self.tot_pages + self.outstanding_pages) * 4 / 1024
    }
}

/// The summary of one domain from Xen's `info` and its xenstore nodes.
///
/// # Errors
///
/// [`Error::Xenstore`] or [`Error::BadNode`].
pub fn summarize(host: &Host, info: &DomainInfo) -> Result<DomainSummary> {
    let mut rows = summarize_all(host, std::slice::from_ref(info))?;
    Ok(rows.remove(0))
}

/// The xenstore nodes a summary shows, per domain: name, memory target, static-max.
const SUMMARY_NODES: [&str; 3] = ["name", "memory/target", "memory/static-max"];

/// [`summarize`] for many domains, their xenstore nodes read in one pipelined batch: a round
/// trip per listing rather than three per domain (each one a trip through Xen in dom0).
fn summarize_all(host: &Host, infos: &[DomainInfo]) -> Result<Vec<DomainSummary>> {
    let paths: Vec<String> = infos
        .iter()
        .flat_map(|i| SUMMARY_NODES.map(|leaf| format!("{}/{leaf}", dom_path(i.domid))))
        .collect();
    let values = xs_read_many_opt(host, &paths)?;
    infos
        .iter()
        .zip(values.chunks(SUMMARY_NODES.len()))
        .zip(paths.chunks(SUMMARY_NODES.len()))
        .map(|((info, v), p)| {
            let d = info.domid;
            let kib = |i: usize| {
                v[i].as_deref()
                    .map(|value| parse_kib(d, &p[i], value))
                    .transpose()
            };
            Ok(DomainSummary {
                domid: d,
                name: v[0].clone().unwrap_or_else(|| "(null)".to_owned()),
                uuid: uuid_string(&info.handle),
                state: info.state_string(),
                shutdown_reason: info.shutdown_reason().map(crate::lifecycle::reason_name),
                vcpus: info.nr_online_vcpus,
                target_kib: kib(1)?,
                static_max_kib: kib(2)?,
                max_mem_kib: info.max_pages.saturating_mul(4),
                tot_pages: info.tot_pages,
                outstanding_pages: info.outstanding_pages,
                cpu_time_ns: info.cpu_time,
            })
        })
        .collect()
}

/// Reads many nodes in one pipelined batch, `None` for each that does not exist. An error is
/// attributed to the domain the failing path belongs to.
fn xs_read_many_opt(host: &Host, paths: &[String]) -> Result<Vec<Option<String>>> {
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    host.xs
        .read_many_opt(&refs)
        .into_iter()
        .zip(paths)
        .map(|(r, p)| {
            r.map(|v| v.map(|v| String::from_utf8_lossy(&v).into_owned()))
                .map_err(|source| Error::Xenstore {
                    domain: DomainRef::id(crate::paths::domid_of_path(p).unwrap_or(0)),
                    what: "cannot read its xenstore entries",
                    source,
                })
        })
        .collect()
}

/// Every domain, in domid order.
///
/// # Errors
///
/// [`Error::XenHost`] when Xen refuses the list; as [`summarize`].
pub fn list(host: &Host) -> Result<Vec<DomainSummary>> {
    let infos = host.xc.domain_list().map_err(|source| Error::XenHost {
        what: "cannot list the domains",
        source,
    })?;
    summarize_all(host, &infos)
}

/// The domain a user means by `spec`: a domid, or a name (`/local/domain/*/name`).
///
/// # Errors
///
/// [`Error::NoSuchDomain`] when nothing matches.
pub fn resolve(host: &Host, spec: &str) -> Result<DomId> {
    if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        let domid: DomId = spec
            .parse()
            .map_err(|_| Error::NoSuchDomain(spec.to_owned()))?;
        host.domain_info(domid)?;
        return Ok(domid);
    }
    find_by_name(host, spec)?.ok_or_else(|| Error::NoSuchDomain(spec.to_owned()))
}

/// The domain named `name`, if any.
///
/// # Errors
///
/// [`Error::XenHost`], [`Error::Xenstore`].
pub fn find_by_name(host: &Host, name: &str) -> Result<Option<DomId>> {
    let infos = host.xc.domain_list().map_err(|source| Error::XenHost {
        what: "cannot list the domains",
        source,
    })?;
    let paths: Vec<String> = infos
        .iter()
        .map(|i| format!("{}/name", dom_path(i.domid)))
        .collect();
    let names = xs_read_many_opt(host, &paths)?;
    Ok(infos
        .iter()
        .zip(names)
        .find(|(_, n)| n.as_deref() == Some(name))
        .map(|(i, _)| i.domid))
}

/// How a domain is named in messages, with its name if xenstore has one.
pub fn domain_ref(host: &Host, domid: DomId) -> DomainRef {
    match host.xs.read_string(&format!("{}/name", dom_path(domid))) {
        Ok(n) => DomainRef::named(domid, n),
        Err(_) => DomainRef::id(domid),
    }
}

/// Pause a domain (`xl pause`).
///
/// # Errors
///
/// [`Error::NoSuchDomain`], or [`Error::Xen`] when Xen refuses (dom0, too many pauses).
pub fn pause(host: &Host, domid: DomId) -> Result<()> {
    host.domain_info(domid)?;
    host.xc.pause_domain(domid).map_err(|source| Error::Xen {
        domain: domain_ref(host, domid),
        what: "cannot pause it",
        source,
    })
}

/// Unpause a domain (`xl unpause`).
///
/// # Errors
///
/// [`Error::NoSuchDomain`], or [`Error::Xen`] (e.g. `EINVAL` when it is not paused).
pub fn unpause(host: &Host, domid: DomId) -> Result<()> {
    host.domain_info(domid)?;
    host.xc.unpause_domain(domid).map_err(|source| Error::Xen {
        domain: domain_ref(host, domid),
        what: "cannot unpause it (is it paused?)",
        source,
    })
}

/// Destroy a domain and everything the toolstack made for it (`xl destroy`).
///
/// Under the domain's slow device lock and userdata lock (so after any device work, memory
/// change or creation step in progress on it): Xen first, then xenstore (`/local/domain/N`,
/// `/vm/UUID`, `/libxl/N`, its devices' backends, and xenstored's record of the domain), then
/// the stored config, as DESIGN.md orders removal. Destroying a domain that does not exist (a second destroy) is [`Error::NoSuchDomain`], with nothing
/// touched.
///
/// # Errors
///
/// [`Error::NoSuchDomain`]; [`Error::Refused`] for dom0; [`Error::Xen`], [`Error::Xenstore`],
/// [`Error::Stored`] for the step that failed.
pub fn destroy(host: &Host, token: &mut Locked<'_, level::Unlocked>, domid: DomId) -> Result<()> {
    if domid == 0 {
        return Err(Error::Refused {
            domain: DomainRef::named(0, "Domain-0"),
            what: "dom0 cannot be destroyed".into(),
        });
    }
    // The slow device lock first: a device add or remove in progress finishes (or times out)
    // before the domain goes, and one that waits for the lock finds the domain gone.
    host.with_slow(token, domid, |st| {
        host.with_userdata(st, domid, |guard| {
            crate::hooks::point("destroy:locked")?;
            let who = domain_ref(host, domid);
            teardown(host, domid, &who)?;
            crate::hooks::point("destroy:torn-down")?;
            host.configs.remove(guard).map_err(|source| Error::Stored {
                domain: who.clone(),
                source,
            })
        })
    })?;
    Ok(())
}

/// Remove a domain from Xen and xenstore (not the stored config). A domain Xen no longer has is
/// not an error here: creation's rollback and a racing destroy both end up in this state.
pub(crate) fn teardown(host: &Host, domid: DomId, who: &DomainRef) -> Result<()> {
    let vm = xs_read_opt(host, domid, &format!("{}/vm", dom_path(domid)))?;
    match host.xc.destroy_domain(domid) {
        Ok(()) => {}
        Err(e) if e.errno() == Some(xenctrl::Errno::ESRCH) => {}
        Err(source) => {
            return Err(Error::Xen {
                domain: who.clone(),
                what: "cannot destroy it",
                source,
            })
        }
    }
    // xenstored forgets the domain (firing @releaseDomain); ENOENT: it never was introduced.
    match host.xs.release_domain(u32::from(domid)) {
        Ok(()) => {}
        Err(e) if matches!(e.errno(), Some(xenstore::Errno::ENOENT)) => {}
        Err(source) => {
            return Err(Error::Xenstore {
                domain: who.clone(),
                what: "xenstored refused to release it",
                source,
            })
        }
    }
    // What the devices' hotplug scripts made (loop devices, bridge ports) goes first.
    crate::device::hotplug_remove_all(host, domid);
    // A missing node (or parent) is already removed.
    let rm = rm_if_present;
    host.xs
        .transaction(|t| {
            rm(t, &dom_path(domid))?;
            if let Some(vm) = vm.as_deref().filter(|v| v.starts_with("/vm/")) {
                rm(t, vm)?;
            }
            rm(t, &libxl_path(domid))?;
            crate::device::rm_backends(t, domid)
        })
        .map_err(|source| Error::Xenstore {
            domain: who.clone(),
            what: "cannot remove its xenstore entries",
            source,
        })
}
