//! Print ours/C ratios from criterion's output, with the issue's targets.
//!
//! ```text
//! cargo run -p rxen-benches --bin ratios [-- [--check[=FUNCTION]] [CRITERION_DIR]]
//! ```
//!
//! `CRITERION_DIR` defaults to `$CARGO_TARGET_DIR/criterion` (or `target/criterion`). With
//! `--check` the exit status is 1 when a `pool-zeroed` line (or `FUNCTION`'s, e.g.
//! `--check=pool-uninit`) misses its target, or the typed domctl its +20 ns.

use std::path::PathBuf;
use std::process::ExitCode;

use rxen_benches::ratios;

fn main() -> ExitCode {
    let mut check: Option<String> = None;
    let mut dir = None;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = Some(ratios::LIKE_FOR_LIKE.to_owned()),
            _ if arg.starts_with("--check=") => {
                check = arg.strip_prefix("--check=").map(str::to_owned);
            }
            "-h" | "--help" => {
                println!("usage: ratios [--check[=FUNCTION]] [CRITERION_DIR]");
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
            "ratios: no comparison groups in {} (were the C libraries linked?)",
            dir.display()
        );
        return ExitCode::from(2);
    }
    print!("{}", ratios::render(&rows));
    if let Some(function) = check {
        let missed: Vec<&ratios::Row> = rows
            .iter()
            .filter(|r| r.ours == function || r.ours == "typed")
            .filter(|r| r.meets_target() == Some(false))
            .collect();
        if !missed.is_empty() {
            eprintln!("ratios: {} target(s) missed by {function}:", missed.len());
            for r in missed {
                eprintln!("  {}", r.group);
            }
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}
