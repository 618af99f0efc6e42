//! Xenstore path rules (`docs/misc/xenstore.txt`, C xenstored's `is_valid_nodename`).
//!
//! Paths are `/`-separated and absolute on the daemon side; a domain may send paths relative to
//! its home `/local/domain/<domid>`. Allowed characters are ASCII alphanumerics and `-/_@`; no
//! doubled or trailing slash (except the root `/`). The length limit is [`REL_PATH_MAX`] bytes
//! beyond a `/local/domain/<domid>/` prefix. Paths starting with `@` name special watch events
//! such as [`INTRODUCE_DOMAIN`] and [`RELEASE_DOMAIN`].

use crate::wire::REL_PATH_MAX;

/// The special watch path fired when a domain is introduced.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";
/// The special watch path fired when a domain is released, dies or shuts down.
pub const RELEASE_DOMAIN: &str = "@releaseDomain";

/// Whether `c` may appear in a path.
pub fn valid_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'/' | b'_' | b'@')
}

/// Whether `path` is a valid absolute node path, with the default path-length limit.
pub fn is_valid(path: &str) -> bool {
    is_valid_with_limit(path, REL_PATH_MAX)
}

/// Whether `path` is a valid absolute node path when relative parts may be `max_rel` bytes.
pub fn is_valid_with_limit(path: &str, max_rel: usize) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    if b.len() > 1 && b.last() == Some(&b'/') {
        return false;
    }
    if b.windows(2).any(|w| w == b"//") {
        return false;
    }
    if !b.iter().all(|&c| valid_char(c)) {
        return false;
    }
    b.len() <= local_prefix_len(path) + max_rel
}

/// Length of a leading `/local/domain/<domid>/` (domid of at most 5 digits), else 0: C xenstored
/// does not count that prefix against the length limit.
fn local_prefix_len(path: &str) -> usize {
    const P: &str = "/local/domain/";
    let Some(rest) = path.strip_prefix(P) else {
        return 0;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 5 || rest.as_bytes().get(digits) != Some(&b'/') {
        return 0;
    }
    P.len() + digits + 1
}

/// Whether `path` names a special watch event (`@...`).
pub fn is_special(path: &str) -> bool {
    path.starts_with('@')
}

/// The parent of an absolute path (`/` for top-level nodes and for `/` itself).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The last component of an absolute path (empty for `/`).
pub fn basename(path: &str) -> &str {
    path.rfind('/').map_or(path, |i| &path[i + 1..])
}

/// Joins a parent path and a child name.
pub fn join(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

/// Whether `child` is `parent` or lies below it (every path is below `/`).
pub fn is_child(child: &str, parent: &str) -> bool {
    if parent == "/" {
        return true;
    }
    match child.strip_prefix(parent) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The home path of a domain: `/local/domain/<domid>`.
pub fn domain_path(domid: u32) -> String {
    format!("/local/domain/{domid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_matches_xenstored() {
        for ok in ["/", "/a", "/a/b-c_d@e", "/local/domain/1/x", "/A9"] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "", "a", "/a/", "//", "/a//b", "/a b", "/a.b", "/a\u{e9}", "/a\0",
        ] {
            assert!(!is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn length_limit_excludes_domain_prefix() {
        let long = format!("/{}", "a".repeat(REL_PATH_MAX - 1));
        assert!(is_valid(&long));
        assert!(!is_valid(&format!("{long}b")));
        let home = format!("/local/domain/7/{}", "a".repeat(REL_PATH_MAX));
        assert!(is_valid(&home));
        assert!(!is_valid(&format!("{home}b")));
        // Six digits is not a domid: no allowance.
        let not_home = format!("/local/domain/123456/{}", "a".repeat(REL_PATH_MAX));
        assert!(!is_valid(&not_home));
    }

    #[test]
    fn parents_children_and_names() {
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/"), "/");
        assert_eq!(basename("/a/b"), "b");
        assert_eq!(basename("/"), "");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert!(is_child("/a/b", "/a"));
        assert!(is_child("/a", "/a"));
        assert!(!is_child("/ab", "/a"));
        assert!(is_child("/anything", "/"));
        assert!(is_child(RELEASE_DOMAIN, RELEASE_DOMAIN));
        assert!(is_special(RELEASE_DOMAIN) && !is_special("/a"));
        assert_eq!(domain_path(3), "/local/domain/3");
    }
}
