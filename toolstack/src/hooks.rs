//! Test hooks: let a test stop a toolstack process at named points, across processes.
//!
//! They exist only in a build with the `test-hooks` cargo feature, which the crate's own tests
//! turn on (through a dev-dependency on the crate itself) and a shipped build never does. Without
//! it, [`point`] does nothing and [`skip_userdata_lock`] is a `const fn` returning `false`, so the
//! compiler removes both along with the branches on them, and no environment variable is read:
//! a default `rxl` ignores the variables below (`tests/default_build.rs` checks that).
//!
//! With the feature, and then only for tests:
//!
//! - `RXEN_TEST_HOOK_SOCKET=PATH`: at each hook point the process connects (once) to the unix
//!   socket at PATH, sends `<point>\n`, and waits for a line back before going on (`go`, or
//!   `fail` to make the step fail). A test drives interleavings of several processes this way,
//!   with no sleeps.
//! - `RXEN_TEST_UNSAFE_SKIP_USERDATA_LOCK=1`: memory operations skip the userdata lock (and so
//!   the stored config). This re-creates the old race of memory target against maxmem
//!   (two processes each reading the other's half-written values, so target and Xen's
//!   `max_mem` disagree) so a test can show that it is real; never set it otherwise. The process says so on stderr.

#[cfg(not(feature = "test-hooks"))]
use crate::error::Result;

#[cfg(feature = "test-hooks")]
pub use self::enabled::{point, skip_userdata_lock, HOOK_SOCKET_ENV, SKIP_LOCK_ENV};

/// Stop at hook `point` if a test asked for hooks. Without the `test-hooks` feature, as here,
/// it does nothing.
///
/// # Errors
///
/// None without the `test-hooks` feature.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn point(_point: &str) -> Result<()> {
    Ok(())
}

/// Whether memory operations skip the userdata lock: never without the `test-hooks` feature.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub const fn skip_userdata_lock() -> bool {
    false
}

#[cfg(feature = "test-hooks")]
mod enabled {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::{Mutex, OnceLock};

    use crate::error::{Error, Result};

    /// The environment variable naming the hook socket.
    pub const HOOK_SOCKET_ENV: &str = "RXEN_TEST_HOOK_SOCKET";
    /// The environment variable that makes memory operations skip the userdata lock.
    pub const SKIP_LOCK_ENV: &str = "RXEN_TEST_UNSAFE_SKIP_USERDATA_LOCK";

    static CONN: OnceLock<Option<Mutex<BufReader<UnixStream>>>> = OnceLock::new();

    fn conn() -> Result<Option<&'static Mutex<BufReader<UnixStream>>>> {
        if let Some(c) = CONN.get() {
            return Ok(c.as_ref());
        }
        let made = match std::env::var_os(HOOK_SOCKET_ENV) {
            None => None,
            Some(path) => {
                let s = UnixStream::connect(&path).map_err(|e| {
                    Error::TestHook(format!(
                        "cannot connect to {}: {e}",
                        std::path::Path::new(&path).display()
                    ))
                })?;
                Some(Mutex::new(BufReader::new(s)))
            }
        };
        Ok(CONN.get_or_init(|| made).as_ref())
    }

    /// Stop at hook `point` if a test asked for hooks: report it and wait for the test's answer.
    ///
    /// # Errors
    ///
    /// [`Error::TestHook`] when the test answers `fail` or the hook connection breaks.
    pub fn point(point: &str) -> Result<()> {
        let Some(c) = conn()? else {
            return Ok(());
        };
        let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
        let broken = |e: std::io::Error| Error::TestHook(format!("at {point}: {e}"));
        c.get_mut()
            .write_all(format!("{point}\n").as_bytes())
            .map_err(broken)?;
        let mut answer = String::new();
        c.read_line(&mut answer).map_err(broken)?;
        match answer.trim() {
            "go" => Ok(()),
            "fail" => Err(Error::TestHook(format!("the test failed step {point}"))),
            other => Err(Error::TestHook(format!(
                "at {point}: unexpected answer {other:?}"
            ))),
        }
    }

    /// Whether memory operations skip the userdata lock (the old target/maxmem race, for
    /// tests only).
    pub fn skip_userdata_lock() -> bool {
        static SKIP: OnceLock<bool> = OnceLock::new();
        *SKIP.get_or_init(|| {
            let on = std::env::var_os(SKIP_LOCK_ENV).is_some_and(|v| v == "1");
            if on {
                eprintln!(
                    "rxl: warning: {SKIP_LOCK_ENV}=1: memory operations skip the userdata lock \
                     (a test switch that re-creates a known race)"
                );
            }
            on
        })
    }
}
