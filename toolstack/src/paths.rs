//! Where things live in xenstore, and reading nodes that may be missing.
//!
//! A leaf: it depends on nothing else in this crate, so every module (domains, devices,
//! memory, the simulated host) can name paths without importing each other.

/// A domain id, as Xen numbers domains.
pub type DomId = u16;

/// `/local/domain/N`: the domain's home directory.
pub fn dom_path(domid: DomId) -> String {
    format!("/local/domain/{domid}")
}

/// `/libxl/N`: the toolstack's private per-domain directory.
pub fn libxl_path(domid: DomId) -> String {
    format!("/libxl/{domid}")
}

/// The domain id of a `/local/domain/B/...` path (a device's backend path names its backend
/// domain so).
pub fn domid_of_path(path: &str) -> Option<DomId> {
    path.strip_prefix("/local/domain/")?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// `Ok(None)` for a missing node (ENOENT), the value otherwise.
fn opt<T>(r: xenstore::Result<T>) -> xenstore::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.errno() == Some(xenstore::Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

// TODO(ReadOpt): this trait becomes `xenstore::ReadOpt` (the same methods, implemented for
// `xenstore::Client` and `xenstore::client::Transaction<'_>`) once the xenstore branch lands;
// then this copy goes and its users import that one.
/// Reading xenstore nodes that may be missing: `None` for ENOENT, the error otherwise. The one
/// copy of this in the crate (public only so that `rxl` can use it until `xenstore` has it).
pub trait ReadOpt {
    /// The node's value, or `None` if it does not exist.
    fn read_opt(&self, path: &str) -> xenstore::Result<Option<Vec<u8>>>;
    /// The node's value as a string, or `None` if it does not exist.
    fn read_string_opt(&self, path: &str) -> xenstore::Result<Option<String>>;
    /// The node's children, or `None` if it does not exist.
    fn directory_opt(&self, path: &str) -> xenstore::Result<Option<Vec<String>>>;
}

/// The same three methods for a client and a transaction, which have the same reads but no
/// common trait.
macro_rules! read_opt_for {
    ($($t:ty),*) => {$(
        impl ReadOpt for $t {
            fn read_opt(&self, path: &str) -> xenstore::Result<Option<Vec<u8>>> {
                opt(self.read(path))
            }
            fn read_string_opt(&self, path: &str) -> xenstore::Result<Option<String>> {
                opt(self.read_string(path))
            }
            fn directory_opt(&self, path: &str) -> xenstore::Result<Option<Vec<String>>> {
                opt(self.directory(path))
            }
        }
    )*};
}

read_opt_for!(xenstore::Client, xenstore::Transaction<'_>);

/// Removes `path` in a transaction; a node that is not there is removed already.
pub(crate) fn rm_if_present(t: &xenstore::Transaction<'_>, path: &str) -> xenstore::Result<()> {
    opt(t.rm(path)).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_paths_name_their_domain() {
        assert_eq!(domid_of_path("/local/domain/3/backend/vbd/1/2"), Some(3));
        assert_eq!(domid_of_path("/local/domain/x"), None);
        assert_eq!(domid_of_path("/libxl/3"), None);
        assert_eq!(dom_path(3), "/local/domain/3");
        assert_eq!(libxl_path(3), "/libxl/3");
    }
}
