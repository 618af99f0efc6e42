//! [`ReadOpt`]: reads that answer `None` for a missing node instead of an ENOENT error.

use nix::errno::Errno;

use super::{Client, Ops, Transaction};
use crate::error::Result;

/// Reads that treat a missing node as an ordinary answer: `Ok(None)` for ENOENT.
///
/// Only ENOENT becomes `None`. Every other failure stays an error, EACCES in particular: a
/// node the caller may not read is not a missing node (and xenstored answers EACCES, not
/// ENOENT, below a node the caller cannot see, so that existence does not leak).
///
/// Implemented by [`Client`] (outside any transaction) and by [`Transaction`] (inside it).
///
/// ```
/// use xenstore::ReadOpt;
///
/// # let running = xenstore::server::Server::new().unwrap().spawn().unwrap();
/// # let client = running.controller().client().unwrap();
/// // let client = xenstore::Client::open()?;
/// client.write("/local/domain/5/name", "guest")?;
/// assert_eq!(client.read_string_opt("/local/domain/5/name")?.as_deref(), Some("guest"));
/// assert_eq!(client.read_opt("/local/domain/5/missing")?, None);
/// assert_eq!(client.directory_opt("/local/domain/5")?, Some(vec!["name".to_owned()]));
/// assert_eq!(client.directory_opt("/local/domain/6")?, None);
///
/// // The same inside a transaction.
/// client.transaction(|tx| {
///     assert_eq!(tx.read_opt("/local/domain/5/missing")?, None);
///     Ok(())
/// })?;
/// # Ok::<(), xenstore::Error>(())
/// ```
pub trait ReadOpt {
    /// Reads a node's value, or `None` if it does not exist.
    ///
    /// # Errors
    ///
    /// As [`Client::read`], except ENOENT: [`Error::Read`](crate::Error::Read), EACCES when
    /// the caller may not read the node.
    fn read_opt(&self, path: &str) -> Result<Option<Vec<u8>>>;

    /// Reads a node's value as (lossy) UTF-8 text, as [`Client::read_string`] does, or `None`
    /// if it does not exist.
    ///
    /// # Errors
    ///
    /// As [`read_opt`](Self::read_opt).
    fn read_string_opt(&self, path: &str) -> Result<Option<String>>;

    /// Lists a node's children, as [`Client::directory`] does, or `None` if it does not exist.
    ///
    /// # Errors
    ///
    /// As [`Client::directory`], except ENOENT: [`Error::Directory`](crate::Error::Directory),
    /// EACCES when the caller may not read the node.
    fn directory_opt(&self, path: &str) -> Result<Option<Vec<String>>>;
}

/// `Ok(None)` for ENOENT, the error itself for anything else.
pub(super) fn none_on_enoent<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.errno() == Some(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

macro_rules! read_many_opt {
    ($ty:ty) => {
        impl $ty {
            /// [`read_many`](Self::read_many), with `Ok(None)` for each node that does not
            /// exist (as [`ReadOpt::read_opt`]): many possibly missing nodes in one pipelined
            /// round trip.
            pub fn read_many_opt(&self, paths: &[&str]) -> Vec<Result<Option<Vec<u8>>>> {
                self.read_many(paths)
                    .into_iter()
                    .map(none_on_enoent)
                    .collect()
            }
        }
    };
}

read_many_opt!(Client);
read_many_opt!(Transaction<'_>);

impl Ops<'_> {
    fn read_string_opt(&self, path: &str) -> Result<Option<String>> {
        Ok(none_on_enoent(self.read(path))?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }
}

macro_rules! read_opt_via_ops {
    ($ty:ty) => {
        impl ReadOpt for $ty {
            fn read_opt(&self, path: &str) -> Result<Option<Vec<u8>>> {
                none_on_enoent(self.ops().read(path))
            }

            fn read_string_opt(&self, path: &str) -> Result<Option<String>> {
                self.ops().read_string_opt(path)
            }

            fn directory_opt(&self, path: &str) -> Result<Option<Vec<String>>> {
                none_on_enoent(self.ops().directory(path))
            }
        }
    };
}

read_opt_via_ops!(Client);
read_opt_via_ops!(Transaction<'_>);
