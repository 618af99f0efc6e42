//! The `xen_version` hypercall (`version.h`).
//!
//! `XENVER_version` and `XENVER_pagesize` answer in the hypercall's return value and take no
//! buffer; the string sub-ops fill a fixed-size, NUL-terminated character array.

#![allow(non_upper_case_globals)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::layout::{abi_consts, abi_struct};

abi_consts! {
    /// The constants of this module, for the conformance test.
    table consts;

    /// Returns `major << 16 | minor`; no argument.
    XENVER_version: u64 = 0;
    /// Fills a [`XenExtraversion`].
    XENVER_extraversion: u64 = 1;
    /// Fills a [`XenCapabilitiesInfo`].
    XENVER_capabilities: u64 = 3;
    /// Fills a [`XenChangesetInfo`].
    XENVER_changeset: u64 = 4;
    /// Returns the page size; no argument.
    XENVER_pagesize: u64 = 7;

    /// Size of [`XenExtraversion`].
    XEN_EXTRAVERSION_LEN: usize = 16;
    /// Size of [`XenCapabilitiesInfo`].
    XEN_CAPABILITIES_INFO_LEN: usize = 1024;
    /// Size of [`XenChangesetInfo`].
    XEN_CHANGESET_INFO_LEN: usize = 64;
}

/// Split the `XENVER_version` return value into `(major, minor)`.
#[allow(clippy::cast_possible_truncation)] // both halves are masked to 16 bits first
pub const fn split_version(raw: u64) -> (u16, u16) {
    (((raw >> 16) & 0xffff) as u16, (raw & 0xffff) as u16)
}

/// The bytes of a NUL-terminated C character array, up to (not including) the first NUL.
fn c_chars(chars: &[u8]) -> &[u8] {
    let end = chars.iter().position(|&c| c == 0).unwrap_or(chars.len());
    &chars[..end]
}

macro_rules! char_array_methods {
    ($name:ident) => {
        impl $name {
            /// The text up to the first NUL (all of it if Xen left none).
            pub fn as_bytes_until_nul(&self) -> &[u8] {
                c_chars(&self.chars)
            }

            /// The text as a string, replacing invalid UTF-8.
            pub fn to_string_lossy(&self) -> String {
                String::from_utf8_lossy(self.as_bytes_until_nul()).into_owned()
            }
        }
    };
}

abi_struct! {
    /// The extra version string, e.g. `.5` for 4.17.5 (`xen_extraversion_t`).
    #[derive(Clone, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("xen_extraversion_t")
    pub struct XenExtraversion {
        /// NUL-terminated characters.
        pub chars: [u8; 16] => _,
    }
    size = 16;
}
char_array_methods!(XenExtraversion);

abi_struct! {
    /// The space-separated guest ABIs the hypervisor runs, e.g. `xen-3.0-x86_64 hvm-3.0-x86_32`
    /// (`xen_capabilities_info_t`).
    #[derive(Clone, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("xen_capabilities_info_t")
    pub struct XenCapabilitiesInfo {
        /// NUL-terminated characters.
        pub chars: [u8; 1024] => _,
    }
    size = 1024;
}
char_array_methods!(XenCapabilitiesInfo);

abi_struct! {
    /// The source changeset the hypervisor was built from (`xen_changeset_info_t`).
    #[derive(Clone, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("xen_changeset_info_t")
    pub struct XenChangesetInfo {
        /// NUL-terminated characters.
        pub chars: [u8; 64] => _,
    }
    size = 64;
}
char_array_methods!(XenChangesetInfo);
