//! What `rxl` prints: the tables and listings in xl's formats, and JSON.

use std::io::Write;

use toolstack::config::VifSpec;
use toolstack::device::{self, DeviceKind};
use toolstack::domain::{self, DomainSummary};
use toolstack::lock::{level, Locked};
use toolstack::{Host, HostKind};
use xenstore::ReadOpt;

use crate::commands::stored_config;
use crate::AnyResult;

pub(crate) fn device_list(
    host: &Host,
    root: &mut Locked<'_, level::Unlocked>,
    kind: DeviceKind,
    domains: &[String],
    json: bool,
) -> AnyResult {
    let mut all = Vec::new();
    for d in domains {
        let domid = domain::resolve(host, d)?;
        for info in device::list(host, root, domid, kind)? {
            all.push((domid, info));
        }
    }
    if json {
        let v: Vec<serde_json::Value> = all
            .iter()
            .map(|(domid, i)| {
                let mut v = serde_json::to_value(i).unwrap_or_default();
                v["domid"] = (*domid).into();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let num = |n: Option<u32>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let mut out = std::io::stdout().lock();
    match kind {
        DeviceKind::Vif => writeln!(out, "Idx BE  Mac Addr.         state BE-state BE-path")?,
        DeviceKind::Vkb => writeln!(out, "Idx   BE  state BE-state BE-path")?,
        DeviceKind::Console => writeln!(
            out,
            "Idx BE  Name             state BE-state Tty                  BE-path"
        )?,
        _ => writeln!(out, "Vdev  BE  state BE-state BE-path")?,
    }
    for (_, i) in &all {
        let be = i
            .backend_id
            .map_or_else(|| "-".to_owned(), |b| b.to_string());
        let path = i.backend_path.as_deref().unwrap_or("-");
        match kind {
            DeviceKind::Vif => {
                let mac = VifSpec::parse(&i.spec)
                    .ok()
                    .and_then(|v| v.mac().map(str::to_owned))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{:<3} {:<3} {:<17} {:<5} {:<8} {}",
                    i.devid,
                    be,
                    mac,
                    num(i.frontend_state),
                    num(i.backend_state),
                    path
                )?;
            }
            DeviceKind::Console => {
                let name = VifSpec::parse(&i.spec)
                    .ok()
                    .and_then(|v| v.get("name").map(str::to_owned))
                    .unwrap_or_else(|| "(primary)".to_owned());
                let tty = i.tty.as_deref().filter(|t| !t.is_empty()).unwrap_or("-");
                writeln!(
                    out,
                    "{:<3} {:<3} {:<16} {:<5} {:<8} {:<20} {}",
                    i.devid,
                    be,
                    name,
                    num(i.frontend_state),
                    num(i.backend_state),
                    tty,
                    path
                )?;
            }
            _ => writeln!(
                out,
                "{:<5} {:<3} {:<5} {:<8} {}",
                i.devid,
                be,
                num(i.frontend_state),
                num(i.backend_state),
                path
            )?,
        }
    }
    Ok(())
}

pub(crate) fn list(
    host: &Host,
    root: &mut Locked<'_, level::Unlocked>,
    long: bool,
    json: bool,
    only: &[String],
) -> AnyResult {
    let mut all: Vec<DomainSummary> = domain::list(host)?;
    if !only.is_empty() {
        let mut ids = Vec::new();
        for spec in only {
            ids.push(domain::resolve(host, spec)?);
        }
        all.retain(|d| ids.contains(&d.domid));
    }
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &all)?;
        writeln!(out)?;
        return Ok(());
    }
    if long {
        let mut docs = Vec::new();
        for d in &all {
            let config = stored_config(host, root, d.domid)?;
            docs.push(serde_json::json!({ "domid": d.domid, "config": config }));
        }
        serde_json::to_writer_pretty(&mut out, &docs)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "Name                                        ID   Mem VCPUs\tState\tTime(s)"
    )?;
    for d in &all {
        // xl's letters, then xl's column widths.
        #[allow(clippy::cast_precision_loss)] // seconds to one decimal
        let secs = d.cpu_time_ns as f64 / 1e9;
        writeln!(
            out,
            "{:<40} {:>5} {:>5} {:>5}     {}  {:>8.1}",
            d.name,
            d.domid,
            d.mem_mib(),
            d.vcpus,
            d.state,
            secs
        )?;
    }
    Ok(())
}

pub(crate) fn info(host: &Host) -> AnyResult {
    let xc = &host.xc;
    let p = xc.physinfo()?;
    let v = xc.version()?;
    let uname = nix::sys::utsname::uname()?;
    let mut out = std::io::stdout().lock();
    let mut kv = |k: &str, v: &dyn std::fmt::Display| writeln!(out, "{k:<23}: {v}");
    kv("host", &uname.nodename().to_string_lossy())?;
    kv("release", &uname.release().to_string_lossy())?;
    kv("version", &uname.version().to_string_lossy())?;
    kv("machine", &uname.machine().to_string_lossy())?;
    kv("nr_cpus", &p.nr_cpus)?;
    kv("max_cpu_id", &p.max_cpu_id)?;
    kv("nr_nodes", &p.nr_nodes)?;
    kv("cores_per_socket", &p.cores_per_socket)?;
    kv("threads_per_core", &p.threads_per_core)?;
    kv(
        "cpu_mhz",
        &format!("{}.{:03}", p.cpu_khz / 1000, p.cpu_khz % 1000),
    )?;
    kv("total_memory", &p.total_mib())?;
    kv(
        "free_memory",
        &xenctrl::pages_to_mib(p.free_pages.saturating_sub(p.outstanding_pages)),
    )?;
    kv(
        "outstanding_claims",
        &xenctrl::pages_to_mib(p.outstanding_pages),
    )?;
    kv("xen_major", &v.major)?;
    kv("xen_minor", &v.minor)?;
    kv("xen_extra", &v.extra)?;
    kv("xen_version", &v)?;
    kv("xen_caps", &xc.capabilities()?)?;
    kv("xen_pagesize", &xc.page_size()?)?;
    kv("xen_changeset", &xc.changeset()?)?;
    let backend = match host.kind() {
        HostKind::Xen => "xen (/dev/xen/privcmd)".to_owned(),
        HostKind::Simulated(dir) => format!("simulated ({})", dir.display()),
    };
    kv("rxl_host", &backend)?;
    Ok(())
}

/// xenstore-ls's output: one line per node, one space of indent per level, `name = "value"`.
pub(crate) fn xenstore_ls(host: &Host, path: &str, perms: bool) -> AnyResult {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let children = host.xs.directory(path)?;
    for c in children {
        let child = if path == "/" {
            format!("/{c}")
        } else {
            format!("{path}/{c}")
        };
        ls_node(host, &child, &c, 0, perms, &mut out)?;
    }
    out.flush()?;
    Ok(())
}

pub(crate) fn ls_node(
    host: &Host,
    path: &str,
    name: &str,
    depth: usize,
    perms: bool,
    out: &mut impl Write,
) -> AnyResult {
    // None: removed since we listed its parent.
    let Some(value) = host.xs.read_opt(path)? else {
        return Ok(());
    };
    let mut shown = String::new();
    for &b in &value {
        match b {
            b'"' => shown.push_str("\\\""),
            b'\\' => shown.push_str("\\\\"),
            0x20..=0x7e => shown.push(b as char),
            _ => shown.push_str(&format!("\\x{b:02x}")),
        }
    }
    write!(out, "{:depth$}{name} = \"{shown}\"", "")?;
    if perms {
        let p = host.xs.get_perms(path)?;
        let list: Vec<String> = p
            .entries()
            .iter()
            .map(|e| format!("{}{}", e.access.letter(), e.domid))
            .collect();
        write!(out, "  ({})", list.join(", "))?;
    }
    writeln!(out)?;
    let Some(children) = host.xs.directory_opt(path)? else {
        return Ok(());
    };
    for c in children {
        ls_node(host, &format!("{path}/{c}"), &c, depth + 1, perms, out)?;
    }
    Ok(())
}
