//! Ours/C ratios from criterion's output (`<criterion dir>/**/new/{benchmark,estimates}.json`).
//!
//! Every group that has a C twin (a function named `lib*`: `libxencall`, `libxenstore`) is a
//! comparison: each other function in the group is divided by it. The issue's targets are read off the group's last path component:
//! `1-page` and `256-bytes` must take at most half of libxencall's time, `N-pages` for N in
//! 2..=64 must be at least 100 times faster. Every `pool-*` line is held to them; the
//! like-for-like one is `pool-zeroed` (zeroed, as `xencall_alloc_buffer_pages` is), which is
//! what `ratios --check` checks unless told otherwise. Other lines (`memset-floor`) are shown
//! for information.
//!
//! A group with `raw` and `typed` functions is the domctl dispatch comparison: the typed call
//! may cost at most 20 ns more than the raw one.
//!
//! A group with a `1-process` function is a scaling comparison (`devices/throughput`): its
//! times are per operation as each process sees it, so `2-processes`/`1-process` is 1 when two
//! processes do not slow each other and 2 when they fully serialize. Work on different domains
//! must not serialize: `2-processes` is held to at most [`SCALING_LIMIT`]. Other lines (the
//! one-domain control) are shown for information.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// C twins are named after their library: `libxencall`, `libxenstore`.
pub const C_TWIN_PREFIX: &str = "lib";
/// Functions whose names start with this are ours, and held to the issue's targets.
pub const OURS_PREFIX: &str = "pool-";
/// The like-for-like line that `ratios --check` checks by default.
pub const LIKE_FOR_LIKE: &str = "pool-zeroed";
/// The baseline of a scaling comparison.
pub const ONE_PROCESS: &str = "1-process";
/// How much slower, per process, two processes on different domains may be than one: halfway
/// between scaling perfectly (1) and serializing (2).
pub const SCALING_LIMIT: f64 = 1.5;

/// One benchmark's headline time.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    /// Criterion's group id.
    pub group: String,
    /// Criterion's function id (with its parameter, if any).
    pub function: String,
    /// Nanoseconds per iteration: the slope estimate when criterion fitted one, else the mean
    /// (the number criterion prints as `time:`).
    pub ns: f64,
}

/// What a ratio must satisfy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// ours/C at most this.
    AtMost(f64),
    /// typed - raw at most this many nanoseconds.
    ExtraNs(f64),
}

/// The issue's target for a comparison group, from its last path component.
pub fn target_for(group: &str) -> Option<Target> {
    let last = group.rsplit('/').next()?;
    if last == "256-bytes" || last == "1-page" {
        return Some(Target::AtMost(0.5));
    }
    let pages: u32 = last.strip_suffix("-pages")?.parse().ok()?;
    (2..=64)
        .contains(&pages)
        .then_some(Target::AtMost(1.0 / 100.0))
}

/// Read every estimate under `dir` (criterion's output directory).
///
/// # Errors
///
/// An unreadable directory, or a `benchmark.json`/`estimates.json` pair that does not parse.
pub fn read_estimates(dir: &Path) -> io::Result<Vec<Estimate>> {
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort_by(|a, b| (&a.group, &a.function).cmp(&(&b.group, &b.function)));
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<Estimate>) -> io::Result<()> {
    let new = dir.join("new");
    if new.join("benchmark.json").is_file() && new.join("estimates.json").is_file() {
        out.push(read_one(&new)?);
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() && entry.file_name() != "new" {
            walk(&entry.path(), out)?;
        }
    }
    Ok(())
}

fn read_one(new: &Path) -> io::Result<Estimate> {
    let bad = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {what}", new.display()),
        )
    };
    let json = |name: &str| -> io::Result<serde_json::Value> {
        let text = fs::read_to_string(new.join(name))?;
        serde_json::from_str(&text).map_err(|e| bad(&format!("{name} does not parse: {e}")))
    };
    let bench = json("benchmark.json")?;
    let est = json("estimates.json")?;
    let group = bench["group_id"]
        .as_str()
        .ok_or_else(|| bad("no group_id"))?
        .to_owned();
    let mut function = bench["function_id"].as_str().unwrap_or("").to_owned();
    if let Some(v) = bench["value_str"].as_str() {
        if function.is_empty() {
            function = v.to_owned();
        } else {
            function = format!("{function}/{v}");
        }
    }
    let headline = if est["slope"].is_object() {
        &est["slope"]
    } else {
        &est["mean"]
    };
    let ns = headline["point_estimate"]
        .as_f64()
        .ok_or_else(|| bad("no point estimate"))?;
    Ok(Estimate {
        group,
        function,
        ns,
    })
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Criterion's group id.
    pub group: String,
    /// Our function.
    pub ours: String,
    /// Our time, ns.
    pub ours_ns: f64,
    /// The baseline's function (`libxencall`, `libxenstore` or `raw`).
    pub base: String,
    /// The baseline's time, ns.
    pub base_ns: f64,
    /// The target this row is held to, if any.
    pub target: Option<Target>,
}

impl Row {
    /// ours / baseline.
    pub fn ratio(&self) -> f64 {
        self.ours_ns / self.base_ns
    }

    /// Whether the row meets its target (`None` when it has none).
    pub fn meets_target(&self) -> Option<bool> {
        self.target.map(|t| match t {
            Target::AtMost(max) => self.ratio() <= max,
            Target::ExtraNs(max) => self.ours_ns - self.base_ns <= max,
        })
    }
}

/// Pair every function with its group's baseline.
pub fn rows(estimates: &[Estimate]) -> Vec<Row> {
    let mut groups: BTreeMap<&str, Vec<&Estimate>> = BTreeMap::new();
    for e in estimates {
        groups.entry(&e.group).or_default().push(e);
    }
    let mut rows = Vec::new();
    for (group, members) in groups {
        let find = |name: &str| members.iter().find(|e| e.function == name);
        let c_twin = members
            .iter()
            .find(|e| e.function.starts_with(C_TWIN_PREFIX));
        let (base, kind) = if let Some(c) = c_twin {
            (c, "c")
        } else if let Some(raw) = find("raw") {
            (raw, "raw")
        } else if let Some(one) = find(ONE_PROCESS) {
            (one, "scaling")
        } else {
            continue;
        };
        for e in members.iter().filter(|e| e.function != base.function) {
            let target = match kind {
                "raw" => (e.function == "typed").then_some(Target::ExtraNs(20.0)),
                "scaling" => (e.function == "2-processes").then_some(Target::AtMost(SCALING_LIMIT)),
                _ if e.function.starts_with(OURS_PREFIX) => target_for(group),
                _ => None,
            };
            rows.push(Row {
                group: group.to_owned(),
                ours: e.function.clone(),
                ours_ns: e.ns,
                base: base.function.clone(),
                base_ns: base.ns,
                target,
            });
        }
    }
    rows
}

/// Render rows as a plain-text table.
pub fn render(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<44} {:<12} {:>12} {:>12} {:>10} {:>10}  target",
        "group", "ours", "ours", "baseline", "ours/base", "base/ours"
    );
    for r in rows {
        let target = match (r.target, r.meets_target()) {
            (Some(Target::AtMost(max)), Some(ok)) if max < 0.1 => {
                format!(">= {:.0}x faster: {}", 1.0 / max, verdict(ok))
            }
            (Some(Target::AtMost(max)), Some(ok)) => format!("<= {max}x: {}", verdict(ok)),
            (Some(Target::ExtraNs(max)), Some(ok)) => format!(
                "+{:.1} ns (<= +{max} ns): {}",
                r.ours_ns - r.base_ns,
                verdict(ok)
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "{:<44} {:<12} {:>12} {:>12} {:>10.4} {:>10.1}  {target}",
            r.group,
            r.ours,
            human(r.ours_ns),
            human(r.base_ns),
            r.ratio(),
            1.0 / r.ratio()
        );
    }
    s
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// A time in ns as criterion writes it (ns, µs, ms).
pub fn human(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.1} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{:.2} ms", ns / 1_000_000.0)
    }
}

/// Criterion's output directory: `$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`, else
/// `target/criterion` under the current directory.
pub fn default_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), PathBuf::from);
    target.join("criterion")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(group: &str, function: &str, ns: f64) -> Estimate {
        Estimate {
            group: group.into(),
            function: function.into(),
            ns,
        }
    }

    #[test]
    fn targets_follow_the_issue() {
        assert_eq!(
            target_for("alloc-free/1-thread/1-page"),
            Some(Target::AtMost(0.5))
        );
        assert_eq!(
            target_for("alloc-free/2-threads/256-bytes"),
            Some(Target::AtMost(0.5))
        );
        assert_eq!(
            target_for("alloc-free/1-thread/64-pages"),
            Some(Target::AtMost(0.01))
        );
        assert_eq!(target_for("alloc-free/1-thread/128-pages"), None);
        assert_eq!(target_for("something-else"), None);
    }

    #[test]
    fn rows_pair_with_the_c_twin_and_hold_only_our_lines_to_targets() {
        let rows = rows(&[
            est("alloc-free/1-thread/4-pages", "libxencall", 20_000.0),
            est("alloc-free/1-thread/4-pages", "pool-zeroed", 150.0),
            est("alloc-free/1-thread/4-pages", "pool-uninit", 30.0),
            est("alloc-free/1-thread/4-pages", "memset-floor", 100.0),
            est("alloc-free/1-thread/1-page", "libxencall", 50.0),
            est("alloc-free/1-thread/1-page", "pool-zeroed", 30.0),
            est("no-baseline", "pool-zeroed", 1.0),
        ]);
        assert_eq!(rows.len(), 4);
        let page = &rows[0];
        assert_eq!(page.group, "alloc-free/1-thread/1-page");
        assert_eq!(page.meets_target(), Some(false));
        let zeroed = rows
            .iter()
            .find(|r| r.ours == "pool-zeroed" && r.group.ends_with("4-pages"));
        assert_eq!(zeroed.and_then(Row::meets_target), Some(true));
        let uninit = rows.iter().find(|r| r.ours == "pool-uninit");
        assert_eq!(uninit.and_then(Row::meets_target), Some(true));
        let floor = rows.iter().find(|r| r.ours == "memset-floor");
        assert_eq!(floor.and_then(Row::meets_target), None);
    }

    #[test]
    fn any_c_library_is_a_twin_but_only_pool_lines_have_targets() {
        let rows = rows(&[
            est("xenstore/read", "libxenstore", 20_000.0),
            est("xenstore/read", "rxen", 10_000.0),
        ]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].base, "libxenstore");
        assert_eq!(rows[0].ratio(), 0.5);
        assert_eq!(rows[0].meets_target(), None);
    }

    #[test]
    fn two_processes_on_different_domains_are_held_to_scaling() {
        let rows = rows(&[
            est("devices/throughput", "1-process", 10_000_000.0),
            est("devices/throughput", "2-processes", 11_000_000.0),
            est(
                "devices/throughput",
                "2-processes-same-domain",
                19_000_000.0,
            ),
        ]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].ours, "2-processes");
        assert_eq!(rows[0].base, "1-process");
        assert_eq!(rows[0].meets_target(), Some(true));
        assert_eq!(rows[1].meets_target(), None);
        let serialized = super::rows(&[
            est("devices/throughput", "1-process", 10.0),
            est("devices/throughput", "2-processes", 20.0),
        ]);
        assert_eq!(serialized[0].meets_target(), Some(false));
    }

    #[test]
    fn typed_dispatch_is_held_to_twenty_ns_over_raw() {
        let rows = rows(&[est("domctl", "raw", 10.0), est("domctl", "typed", 31.0)]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].meets_target(), Some(false));
    }
}
