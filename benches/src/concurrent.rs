//! Timing one operation run by several threads at once, for criterion's `iter_custom`.

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

/// Run `op` `iters` times on each of `threads` threads, all started together, and return the
/// wall time from the first thread's start to the last thread's finish.
///
/// Criterion divides the result by `iters`, so a bench reports the time per operation as each
/// thread sees it under contention: equal to the one-thread time if the operation scales
/// perfectly, twice it (for two threads) if the threads fully serialise. Declare
/// `Throughput::Elements(threads)` to also get the aggregate operations per second.
///
/// Thread start-up is outside the measured window: each thread takes its own start time after
/// a barrier, and the window is the earliest start to the latest end.
pub fn run<F>(threads: usize, iters: u64, op: F) -> Duration
where
    F: Fn() + Sync,
{
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        op();
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a bench thread panicked"))
            .collect()
    });
    let start = spans
        .iter()
        .map(|s| s.0)
        .min()
        .expect("at least one thread");
    let end = spans
        .iter()
        .map(|s| s.1)
        .max()
        .expect("at least one thread");
    end - start
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn every_thread_runs_every_iteration() {
        let count = AtomicU64::new(0);
        let _ = run(2, 1000, || {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 2000);
    }

    #[test]
    fn window_covers_the_work() {
        let d = run(2, 3, || thread::sleep(Duration::from_millis(2)));
        assert!(d >= Duration::from_millis(6), "{d:?}");
    }
}
