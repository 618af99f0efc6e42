//! [`Batch`]: node changes sent to xenstored together.

use super::{path_arg, Ops};
use crate::error::{Error, Failure, Result};
use crate::perms::Permissions;
use crate::wire::MsgType;

/// Node changes to carry out together with [`Client::apply`](super::Client::apply) or
/// [`Transaction::apply`](super::Transaction::apply): written to the connection in one go and
/// answered in one go, instead of one round trip each.
///
/// A toolstack writes dozens of nodes for each domain or device it makes (libxl's domain
/// directory, a device's frontend and backend with their permissions); sent one by one, each
/// costs a wake-up of xenstored and of the caller, which in a busy dom0 is most of the time a
/// creation spends in xenstore.
///
/// ```
/// use xenstore::perms::{Access, Permissions};
/// use xenstore::Batch;
///
/// # let running = xenstore::server::Server::new().unwrap().spawn().unwrap();
/// # let client = running.controller().client().unwrap();
/// // let client = xenstore::Client::open()?;
/// let mut b = Batch::new();
/// b.write("/local/domain/5/name", "guest")
///     .set_perms("/local/domain/5/name", &Permissions::new(5, Access::NONE))
///     .mkdir("/local/domain/5/device")
///     .rm("/local/domain/5/stale");
/// client.transaction(|tx| tx.apply(&b))?;
/// assert_eq!(client.read_string("/local/domain/5/name")?, "guest");
/// assert_eq!(client.get_perms("/local/domain/5/name")?.owner(), 5);
/// # Ok::<(), xenstore::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Change>,
}

/// One change: the request type, the path, and what follows the path's nul.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Change {
    ty: MsgType,
    path: String,
    rest: Vec<u8>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    fn push(&mut self, ty: MsgType, path: impl Into<String>, rest: Vec<u8>) -> &mut Batch {
        self.ops.push(Change {
            ty,
            path: path.into(),
            rest,
        });
        self
    }

    /// Writes a node's value, creating it and missing parents (as
    /// [`Client::write`](super::Client::write)).
    pub fn write(&mut self, path: impl Into<String>, value: impl AsRef<[u8]>) -> &mut Batch {
        self.push(MsgType::Write, path, value.as_ref().to_vec())
    }

    /// Makes sure a node exists (as [`Client::mkdir`](super::Client::mkdir)).
    pub fn mkdir(&mut self, path: impl Into<String>) -> &mut Batch {
        self.push(MsgType::Mkdir, path, Vec::new())
    }

    /// Removes a node and everything below it (as [`Client::rm`](super::Client::rm)).
    pub fn rm(&mut self, path: impl Into<String>) -> &mut Batch {
        self.push(MsgType::Rm, path, Vec::new())
    }

    /// Sets a node's permissions (as [`Client::set_perms`](super::Client::set_perms)).
    pub fn set_perms(&mut self, path: impl Into<String>, perms: &Permissions) -> &mut Batch {
        let mut body = Vec::new();
        perms.write_wire(&mut body);
        self.push(MsgType::SetPerms, path, body)
    }

    /// Writes a node and then sets its permissions: libxl's way of making a node that
    /// belongs to someone else.
    pub fn write_with_perms(
        &mut self,
        path: impl Into<String>,
        value: impl AsRef<[u8]>,
        perms: &Permissions,
    ) -> &mut Batch {
        let path = path.into();
        self.write(path.clone(), value).set_perms(path, perms)
    }

    /// How many changes it holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl Ops<'_> {
    pub(super) fn apply(&self, batch: &Batch) -> Result<()> {
        let reqs = batch
            .ops
            .iter()
            .map(|c| {
                path_arg(&c.path).map(|()| {
                    let mut parts: Vec<&[u8]> = vec![c.path.as_bytes(), b"\0"];
                    if !c.rest.is_empty() {
                        parts.push(&c.rest);
                    }
                    (c.ty, parts)
                })
            })
            .collect();
        let results = self.inner.pipeline_each(self.tx, reqs);
        match batch
            .ops
            .iter()
            .zip(results)
            .find_map(|(c, r)| r.err().map(|e| (c, e)))
        {
            None => Ok(()),
            Some((c, source)) => Err(error_of(c, source)),
        }
    }
}

/// The error the single call for `c` would have given.
fn error_of(c: &Change, source: Failure) -> Error {
    let path = c.path.clone();
    match c.ty {
        MsgType::Mkdir => Error::Mkdir { path, source },
        MsgType::Rm => Error::Rm { path, source },
        MsgType::SetPerms => Error::SetPerms { path, source },
        _ => Error::Write { path, source },
    }
}
