//! Print ours/C ratios from criterion's output, with the issue's targets.
//!
//! ```text
//! cargo run -p rxen-benches --bin ratios [-- [--check] [CRITERION_DIR]]
//! ```
//!
//! `CRITERION_DIR` defaults to `$CARGO_TARGET_DIR/criterion` (or `target/criterion`). With
//! `--check` the exit status is 1 when a target is missed.

use std::path::PathBuf;
use std::process::ExitCode;

use rxen_benches::ratios;

fn main() -> ExitCode {
    let mut check = false;
    let mut dir = None;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: ratios [--check] [CRITERION_DIR]");
                return ExitCode::SUCCESS;
            }
            _ => dir = Some(PathBuf::from(arg)),
        }
    }
    let dir = dir.unwrap_or_else(ratios::default_dir);
    let estimates = match ratios::read_estimates(&dir) {
        Ok(e) => e,
        Err(e) => {
            eprintln!(
                "ratios: cannot read criterion output in {}: {e}; run `cargo bench -p \
                 rxen-benches` first",
                dir.display()
            );
            return ExitCode::from(2);
        }
    };
    let rows = ratios::rows(&estimates);
    if rows.is_empty() {
        eprintln!(
            "ratios: no comparison groups in {} (was libxencall linked?)",
            dir.display()
        );
        return ExitCode::from(2);
    }
    print!("{}", ratios::render(&rows));
    let missed = rows
        .iter()
        .filter(|r| r.meets_target() == Some(false))
        .count();
    if check && missed > 0 {
        eprintln!("ratios: {missed} target(s) missed");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
