//! Typed identifiers for the guest-memory and event APIs: a domain id and a grant reference are
//! different things, and the type system keeps them apart.
//!
//! The older domctl/sysctl entry points still take the ABI's bare [`crate::DomId`] (`u16`);
//! [`DomainId::get`] and `From` convert between the two.

use std::fmt;

/// A domain id (`domid_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(u16);

impl DomainId {
    /// The control domain, domain 0.
    pub const DOM0: DomainId = DomainId(0);
    /// `DOMID_SELF`: the calling domain.
    pub const SELF: DomainId = DomainId(crate::abi::DOMID_SELF);

    /// The domain with id `id`.
    pub const fn new(id: u16) -> Self {
        DomainId(id)
    }

    /// The raw id.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl From<u16> for DomainId {
    fn from(id: u16) -> Self {
        DomainId(id)
    }
}

impl From<DomainId> for u16 {
    fn from(id: DomainId) -> u16 {
        id.0
    }
}

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A grant reference (`grant_ref_t`): an index into the granting domain's grant table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantRef(u32);

impl GrantRef {
    /// The grant reference `r`.
    pub const fn new(r: u32) -> Self {
        GrantRef(r)
    }

    /// The raw reference.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for GrantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
