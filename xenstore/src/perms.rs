//! Node permissions, as Xen writes them: one letter (`n`one, `r`ead, `w`rite, `b`oth) followed by
//! a domain id, e.g. `b0` or `r5`.
//!
//! A node's permission list is never empty. The first entry names the *owner*, who may always
//! read, write and change the permissions, and its letter is the access granted to every domain
//! not listed; later entries grant access to particular domains.

use std::fmt;
use std::str::FromStr;

bitflags::bitflags! {
    /// Access rights of one permission entry.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Access: u8 {
        /// May read the node (`r`).
        const READ = 1;
        /// May write the node (`w`).
        const WRITE = 2;
    }
}

impl Access {
    /// No access (`n`).
    pub const NONE: Access = Access::empty();
    /// Read and write (`b`).
    pub const BOTH: Access = Access::READ.union(Access::WRITE);

    /// The letter Xen uses for this access.
    pub fn letter(self) -> char {
        match (self.contains(Access::READ), self.contains(Access::WRITE)) {
            (false, false) => 'n',
            (true, false) => 'r',
            (false, true) => 'w',
            (true, true) => 'b',
        }
    }

    /// The access a letter stands for.
    pub fn from_letter(c: u8) -> Option<Access> {
        match c {
            b'n' => Some(Access::NONE),
            b'r' => Some(Access::READ),
            b'w' => Some(Access::WRITE),
            b'b' => Some(Access::BOTH),
            _ => None,
        }
    }
}

/// One permission entry: a domain and what it may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Perm {
    /// The domain.
    pub domid: u32,
    /// Its access.
    pub access: Access,
}

/// Why a permission string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermParseError {
    /// The first character is not one of `n`, `r`, `w`, `b`.
    #[error("permission {0:?} does not start with one of the letters n, r, w, b")]
    BadLetter(String),
    /// The domain id is missing, not a number, or out of range.
    #[error("permission {0:?} does not end in a domain id")]
    BadDomid(String),
    /// A permission list must name at least the owner.
    #[error("a permission list needs at least the owner entry")]
    Empty,
}

impl Perm {
    /// A new entry.
    pub fn new(domid: u32, access: Access) -> Self {
        Self { domid, access }
    }

    /// Parses `b0`-style bytes. The domid may be decimal or `0x` hexadecimal, as `strtol(.., 0)`
    /// accepts in xenstored.
    ///
    /// # Errors
    ///
    /// [`PermParseError`] naming the offending text.
    pub fn parse_bytes(s: &[u8]) -> Result<Self, PermParseError> {
        let text = || String::from_utf8_lossy(s).into_owned();
        let (&letter, id) = s
            .split_first()
            .ok_or_else(|| PermParseError::BadLetter(text()))?;
        let access =
            Access::from_letter(letter).ok_or_else(|| PermParseError::BadLetter(text()))?;
        let id = std::str::from_utf8(id).map_err(|_| PermParseError::BadDomid(text()))?;
        let domid = match id.strip_prefix("0x").or_else(|| id.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => id.parse::<u32>(),
        };
        // `parse` accepts a leading '+'; xenstored would too, so keep that.
        let domid = domid.map_err(|_| PermParseError::BadDomid(text()))?;
        Ok(Self { domid, access })
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.access.letter(), self.domid)
    }
}

impl FromStr for Perm {
    type Err = PermParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_bytes(s.as_bytes())
    }
}

/// A node's permissions: the owner entry, then per-domain entries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Permissions {
    entries: Vec<Perm>,
}

impl Permissions {
    /// Permissions owned by `owner`, granting `others` to everyone else.
    pub fn new(owner: u32, others: Access) -> Self {
        Self {
            entries: vec![Perm::new(owner, others)],
        }
    }

    /// Builds permissions from a full list (owner first).
    ///
    /// # Errors
    ///
    /// [`PermParseError::Empty`] for an empty list.
    pub fn from_entries(entries: Vec<Perm>) -> Result<Self, PermParseError> {
        if entries.is_empty() {
            return Err(PermParseError::Empty);
        }
        Ok(Self { entries })
    }

    /// Adds an entry for one domain (builder style).
    #[must_use]
    pub fn with(mut self, domid: u32, access: Access) -> Self {
        self.entries.push(Perm::new(domid, access));
        self
    }

    /// The owner.
    pub fn owner(&self) -> u32 {
        self.entries[0].domid
    }

    /// The access of domains without an entry of their own.
    pub fn others(&self) -> Access {
        self.entries[0].access
    }

    /// All entries, owner first.
    pub fn entries(&self) -> &[Perm] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: there is at least the owner entry.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Parses the nul-separated strings of a `GET_PERMS` reply or `SET_PERMS` request tail.
    ///
    /// # Errors
    ///
    /// [`PermParseError`] for a bad entry or an empty list.
    pub fn parse_strings<'a>(
        strings: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, PermParseError> {
        let entries = strings
            .into_iter()
            .map(Perm::parse_bytes)
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_entries(entries)
    }

    /// Appends the wire form (`b0\0r5\0`) to `out`.
    pub fn write_wire(&self, out: &mut Vec<u8>) {
        for p in &self.entries {
            out.extend_from_slice(p.to_string().as_bytes());
            out.push(0);
        }
    }

    /// Changes the owner entry's domid.
    pub fn set_owner(&mut self, owner: u32) {
        self.entries[0].domid = owner;
    }

    /// Drops every non-owner entry naming `domid`; returns whether anything changed.
    pub fn remove_domid(&mut self, domid: u32) -> bool {
        let before = self.entries.len();
        let mut first = true;
        self.entries
            .retain(|p| std::mem::take(&mut first) || p.domid != domid);
        before != self.entries.len()
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_round_trip() {
        for (c, a) in [
            ('n', Access::NONE),
            ('r', Access::READ),
            ('w', Access::WRITE),
        ] {
            assert_eq!(a.letter(), c);
            assert_eq!(Access::from_letter(c as u8), Some(a));
        }
        assert_eq!(Access::BOTH.letter(), 'b');
        assert_eq!(Access::from_letter(b'x'), None);
    }

    #[test]
    fn perm_strings_parse_like_xenstored() {
        assert_eq!("b0".parse::<Perm>().unwrap(), Perm::new(0, Access::BOTH));
        assert_eq!(
            "r0x10".parse::<Perm>().unwrap(),
            Perm::new(16, Access::READ)
        );
        assert_eq!("n65535".parse::<Perm>().unwrap().to_string(), "n65535");
        assert!(matches!(
            "x1".parse::<Perm>(),
            Err(PermParseError::BadLetter(_))
        ));
        assert!(matches!(
            "r".parse::<Perm>(),
            Err(PermParseError::BadDomid(_))
        ));
        assert!(matches!(
            "r1z".parse::<Perm>(),
            Err(PermParseError::BadDomid(_))
        ));
        assert!(matches!(
            "".parse::<Perm>(),
            Err(PermParseError::BadLetter(_))
        ));
    }

    #[test]
    fn lists_keep_owner_first() {
        let p = Permissions::new(3, Access::NONE)
            .with(0, Access::READ)
            .with(5, Access::BOTH);
        assert_eq!(p.to_string(), "n3,r0,b5");
        let mut wire = Vec::new();
        p.write_wire(&mut wire);
        assert_eq!(wire, b"n3\0r0\0b5\0");
        let back = Permissions::parse_strings(crate::wire::strings(&wire)).unwrap();
        assert_eq!(back, p);
        assert_eq!(
            Permissions::parse_strings(std::iter::empty()),
            Err(PermParseError::Empty)
        );

        let mut q = Permissions::new(5, Access::READ)
            .with(5, Access::WRITE)
            .with(6, Access::BOTH);
        assert!(q.remove_domid(5));
        assert_eq!(q.to_string(), "r5,b6");
        assert!(!q.remove_domid(9));
    }
}
