//! Where things live in xenstore. (Reading nodes that may be missing is `xenstore::ReadOpt`.)
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
