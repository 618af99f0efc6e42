//! Whether a thread spins or sleeps, judged in a way that holds on a loaded machine.
//!
//! CPU time over a window depends on how many threads compete for the CPUs: on a loaded
//! 2-core machine a thread that polls, yielding between polls, gets almost none (measured:
//! 0.5 ms in 200 ms with two `yes` running), so a CPU-time threshold either flakes or stops
//! detecting anything. The scheduler state does not: a thread that polls or spins is runnable
//! (`R`) whether or not it gets a CPU, and a thread asleep in `epoll_wait` is not. So a window
//! samples the state of the observed threads from `/proc/.../stat` about every millisecond and
//! reports the share of samples in which one of them was runnable, with the CPU time they used
//! (from `schedstat`, in nanoseconds) for the failure message.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A window with fewer samples than this (the sampling thread itself was starved) says
/// nothing and is measured again.
const MIN_SAMPLES: usize = 20;
/// How many times a starved window is measured again before the test gives up.
const ATTEMPTS: usize = 10;

/// The tasks (threads) of process `pid`.
pub fn process_tasks(pid: u32) -> Vec<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| Some(t.ok()?.path()))
        .collect()
}

/// The scheduler state letter of a task (`R` runnable, `S` sleeping...), `None` once it exited.
fn state(task: &Path) -> Option<char> {
    let stat = std::fs::read_to_string(task.join("stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// CPU time a task has run, zero once it exited.
fn cpu(task: &Path) -> Duration {
    std::fs::read_to_string(task.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// What one window saw.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Samples taken.
    pub samples: usize,
    /// Samples in which at least one observed task was runnable.
    pub runnable: usize,
    /// CPU time the observed tasks used over the window.
    pub cpu: Duration,
    /// The window's wall-clock length.
    pub span: Duration,
}

impl Window {
    /// The runnable samples as a percentage of all samples.
    pub fn runnable_percent(&self) -> usize {
        self.runnable * 100 / self.samples.max(1)
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "runnable in {} of {} samples ({}%) over {:?}, {:?} of CPU",
            self.runnable,
            self.samples,
            self.runnable_percent(),
            self.span,
            self.cpu
        )
    }
}

fn window(tasks: &[PathBuf], span: Duration) -> Window {
    let cpu_now = || tasks.iter().map(|t| cpu(t)).sum::<Duration>();
    let before = cpu_now();
    let t0 = Instant::now();
    let (mut samples, mut runnable) = (0, 0);
    while t0.elapsed() < span {
        samples += 1;
        if tasks.iter().any(|t| state(t) == Some('R')) {
            runnable += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Window {
        samples,
        runnable,
        cpu: cpu_now().saturating_sub(before),
        span: t0.elapsed(),
    }
}

/// Samples `tasks` over `span`, after calling `prepare` before each attempt. A window with
/// fewer than 20 samples (this thread was starved) is measured again, up to ten times.
///
/// # Panics
///
/// When every attempt was that starved.
pub fn observe(span: Duration, mut prepare: impl FnMut(), tasks: &[PathBuf]) -> Window {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        prepare();
        let w = window(tasks, span);
        eprintln!("observed: {w}");
        if w.samples >= MIN_SAMPLES {
            return w;
        }
        last = Some(w);
    }
    panic!(
        "the machine is too loaded to sample thread states: {} in {ATTEMPTS} attempts",
        last.unwrap()
    );
}
