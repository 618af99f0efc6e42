//! Helpers for the criterion benchmarks in `benches/benches/`; see `benches/README.md`.
//!
//! - [`c_xencall`]: Debian's C libxencall 4.17, the baseline for the buffer pool (present only
//!   when `build.rs` found `libxencall.a`, which sets `cfg(has_libxencall)`);
//! - [`privcmd_placeholder`]: the private mount namespace that lets `xencall_open` succeed on a
//!   machine without Xen;
//! - [`concurrent`]: timing an operation run by several threads at once;
//! - [`ratios`]: reading criterion's estimates and printing ours/C ratios (the `ratios` binary).

#[cfg(has_libxencall)]
pub mod c_xencall;
pub mod concurrent;
pub mod privcmd_placeholder;
pub mod ratios;

/// Whether the C baselines must run: `RXEN_REQUIRE_C_BASELINES=1` makes a missing library a
/// build error and a failed placeholder set-up a bench failure, so CI cannot drop a baseline.
pub fn c_baselines_required() -> bool {
    std::env::var("RXEN_REQUIRE_C_BASELINES").is_ok_and(|v| v == "1")
}
