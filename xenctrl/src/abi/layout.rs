//! Machine-readable layout and constant tables for the whole ABI module.
//!
//! Every ABI struct is declared through [`abi_struct!`], which emits the `#[repr(C)]` struct, a
//! size assertion, and an [`AbiLayout`] impl that records the struct's C type and the offset and
//! size of each of its fields. Every constant is declared through [`abi_consts!`], which emits the
//! `const` items and a table of their names and values from the same tokens. The conformance test
//! (`tests/abi_conformance.rs`) walks these tables, so a struct, field or constant cannot be
//! defined without being checked against the C headers.
//!
//! The tables are public so that fuzz targets and tests outside the crate can use them; they are
//! not meant for toolstack code.

/// Where a Rust field sits in the C struct it mirrors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CField {
    /// The C member designator, usable in `offsetof(type, designator)` (for example `arch` or
    /// `u.createdomain`).
    Named(&'static str),
    /// Bytes that C leaves implicit (alignment padding, or the unused rest of a union). The
    /// conformance test checks that such a field overlaps no named C member.
    Implicit,
}

/// One field of an ABI struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldLayout {
    /// The Rust field name.
    pub name: &'static str,
    /// Its C counterpart.
    pub c_field: CField,
    /// `offset_of!` in the Rust struct.
    pub offset: usize,
    /// `size_of` of the field's type.
    pub size: usize,
}

/// The layout of one ABI struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StructLayout {
    /// The Rust type name (for envelopes, including the payload, e.g. `XenDomctl<XenDomctlMaxMem>`).
    pub rust_name: &'static str,
    /// The C type expression usable in `sizeof(...)`, e.g. `struct xen_domctl`, or `None` for a
    /// Rust-only marker type that must be empty.
    pub c_type: Option<&'static str>,
    /// `size_of` of the Rust type.
    pub size: usize,
    /// `align_of` of the Rust type.
    pub align: usize,
    /// Every field, in declaration order.
    pub fields: &'static [FieldLayout],
}

impl StructLayout {
    /// Sum of the sizes of all fields. Equal to [`StructLayout::size`] exactly when the Rust struct
    /// has no implicit padding, i.e. every byte is accounted for by a declared field.
    pub fn field_bytes(&self) -> usize {
        self.fields.iter().map(|f| f.size).sum()
    }
}

/// Implemented (only by the macros in this module) by every ABI struct.
pub trait AbiLayout {
    /// The struct's layout record.
    const LAYOUT: StructLayout;
}

/// One ABI constant: its C macro name (identical to the Rust const name) and value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConstInfo {
    /// The name, identical in C and Rust.
    pub name: &'static str,
    /// The value, widened to `u64`.
    pub value: u64,
}

/// Declares a `#[repr(C)]` ABI struct, asserts its size and records its layout.
///
/// Syntax: the struct's outer attributes, `c("struct xen_foo")` (or `c(none)` for an empty
/// Rust-only marker), the struct with named fields, each optionally followed by `=> "c.path"`
/// (when the C member is spelt differently) or `=> _` (bytes implicit in C), then
/// `size = N;`.
macro_rules! abi_struct {
    (
        $(#[$meta:meta])*
        c($($cty:tt)+)
        $vis:vis struct $name:ident $(<$lt:lifetime>)? {
            $(
                $(#[$fmeta:meta])*
                $fvis:vis $field:ident : $fty:ty $(=> $cfield:tt)?
            ),* $(,)?
        }
        size = $size:expr;
    ) => {
        $(#[$meta])*
        #[repr(C)]
        $vis struct $name $(<$lt>)? {
            $( $(#[$fmeta])* $fvis $field : $fty, )*
        }

        static_assertions::const_assert_eq!(core::mem::size_of::<$name>(), $size);

        impl $(<$lt>)? $crate::abi::layout::AbiLayout for $name $(<$lt>)? {
            const LAYOUT: $crate::abi::layout::StructLayout = $crate::abi::layout::StructLayout {
                rust_name: stringify!($name),
                c_type: abi_struct!(@cty $($cty)+),
                size: core::mem::size_of::<Self>(),
                align: core::mem::align_of::<Self>(),
                fields: &[$(
                    $crate::abi::layout::FieldLayout {
                        name: stringify!($field),
                        c_field: abi_struct!(@cfield $field $($cfield)?),
                        offset: core::mem::offset_of!(Self, $field),
                        size: core::mem::size_of::<$fty>(),
                    }
                ),*],
            };
        }
    };
    (@cty none) => { None };
    (@cty $cty:literal) => { Some($cty) };
    (@cfield $field:ident) => { $crate::abi::layout::CField::Named(stringify!($field)) };
    (@cfield $field:ident _) => { $crate::abi::layout::CField::Implicit };
    (@cfield $field:ident $c:literal) => { $crate::abi::layout::CField::Named($c) };
}

/// Declares ABI constants (named exactly like the C macros) and a function `$table()` listing
/// all of them with their values.
macro_rules! abi_consts {
    (
        $(#[$tmeta:meta])*
        table $table:ident;
        $(
            $(#[$meta:meta])*
            $name:ident : $ty:ty = $value:expr;
        )*
    ) => {
        $(
            $(#[$meta])*
            pub const $name: $ty = $value;
        )*

        $(#[$tmeta])*
        pub(crate) fn $table() -> Vec<$crate::abi::layout::ConstInfo> {
            vec![$(
                $crate::abi::layout::ConstInfo {
                    name: stringify!($name),
                    value: $crate::abi::layout::Widen::widen($name),
                }
            ),*]
        }
    };
}

/// Lossless widening of a constant's value to `u64`, for the constants table.
pub(crate) trait Widen {
    /// The value as `u64`.
    fn widen(self) -> u64;
}

macro_rules! widen_from {
    ($($t:ty),*) => {$(
        impl Widen for $t {
            fn widen(self) -> u64 {
                u64::from(self)
            }
        }
    )*};
}
widen_from!(u8, u16, u32, u64);

impl Widen for i16 {
    fn widen(self) -> u64 {
        // Sign-extended, as C's `(unsigned long long)` conversion of a negative value is.
        u64::from_ne_bytes(i64::from(self).to_ne_bytes())
    }
}

impl Widen for usize {
    fn widen(self) -> u64 {
        // usize is 64 bits on every target this crate supports (x86-64).
        self as u64
    }
}

pub(crate) use abi_consts;
pub(crate) use abi_struct;

/// Every ABI constant this crate defines, across all areas.
pub fn constants() -> Vec<ConstInfo> {
    use super::{
        build, domctl, evtchn, grant_table, hvm, io, memory, sched, start_info, sysctl, vcpu,
        version, xen,
    };
    [
        xen::consts(),
        version::consts(),
        domctl::consts(),
        sysctl::consts(),
        memory::consts(),
        evtchn::consts(),
        grant_table::consts(),
        build::consts(),
        vcpu::consts(),
        hvm::consts(),
        start_info::consts(),
        sched::consts(),
        io::consts(),
    ]
    .concat()
}

/// The layout of every ABI struct this crate defines, including each domctl/sysctl envelope
/// instantiated with each payload.
pub fn structs() -> Vec<StructLayout> {
    use super::*;
    vec![
        XenExtraversion::LAYOUT,
        XenCapabilitiesInfo::LAYOUT,
        XenChangesetInfo::LAYOUT,
        XenArchDomainconfig::LAYOUT,
        XenDomctlCreatedomain::LAYOUT,
        XenDomctlGetdomaininfo::LAYOUT,
        XenDomctlMaxMem::LAYOUT,
        XenDomctlMaxVcpus::LAYOUT,
        XenDomctlDestroydomain::LAYOUT,
        XenDomctlPausedomain::LAYOUT,
        XenDomctlUnpausedomain::LAYOUT,
        XenSysctlPhysinfo::LAYOUT,
        XenSysctlGetdomaininfolist::LAYOUT,
        XenSysctlGetdomaininfolistView::LAYOUT,
        XenMemoryDomain::LAYOUT,
        XenMemoryReservation::LAYOUT,
        XenMemoryReservationView::LAYOUT,
        EvtchnAllocUnbound::LAYOUT,
        GrantEntryV1::LAYOUT,
        GnttabSetupTable::LAYOUT,
        GnttabSetupTableView::LAYOUT,
        EvtchnClose::LAYOUT,
        EvtchnStatus::LAYOUT,
        EvtchnReset::LAYOUT,
        SchedRemoteShutdown::LAYOUT,
        XenDomctl::<XenDomctlCreatedomain>::LAYOUT,
        XenDomctl::<XenDomctlGetdomaininfo>::LAYOUT,
        XenDomctl::<XenDomctlMaxMem>::LAYOUT,
        XenDomctl::<XenDomctlMaxVcpus>::LAYOUT,
        XenDomctl::<XenDomctlDestroydomain>::LAYOUT,
        XenDomctl::<XenDomctlPausedomain>::LAYOUT,
        XenDomctl::<XenDomctlUnpausedomain>::LAYOUT,
        XenSysctl::<XenSysctlPhysinfo>::LAYOUT,
        XenSysctl::<XenSysctlGetdomaininfolist>::LAYOUT,
        XenDomctlView::LAYOUT,
        XenSysctlView::LAYOUT,
        CpuUserRegs::LAYOUT,
        TrapInfo::LAYOUT,
        VcpuGuestContext::LAYOUT,
        XenDomctlAddressSize::LAYOUT,
        XenDomctlGetAddressSize::LAYOUT,
        XenDomctlHypercallInit::LAYOUT,
        XenDomctlTscInfo::LAYOUT,
        XenDomctlGetTscInfo::LAYOUT,
        XenDomctlPagingMempool::LAYOUT,
        XenDomctlGetPagingMempool::LAYOUT,
        XenDomctlSetVcpucontext::LAYOUT,
        XenDomctlGetVcpucontext::LAYOUT,
        XenDomctlSetVcpucontextView::LAYOUT,
        XenDomctlGetHvmcontext::LAYOUT,
        XenDomctlSetHvmcontext::LAYOUT,
        XenDomctlSetHvmcontextView::LAYOUT,
        XenCpuidLeaf::LAYOUT,
        XenMsrEntry::LAYOUT,
        XenDomctlGetCpuPolicy::LAYOUT,
        XenDomctlSetCpuPolicy::LAYOUT,
        XenDomctlSetCpuPolicyView::LAYOUT,
        MmuextOp::LAYOUT,
        MmuextOpView::LAYOUT,
        E820Entry::LAYOUT,
        XenForeignMemoryMap::LAYOUT,
        XenForeignMemoryMapView::LAYOUT,
        XenHvmParam::LAYOUT,
        HvmSaveDescriptor::LAYOUT,
        HvmSaveHeader::LAYOUT,
        HvmHwCpu::LAYOUT,
        HvmHwMtrr::LAYOUT,
        XenDomctl::<XenDomctlAddressSize>::LAYOUT,
        XenDomctl::<XenDomctlGetAddressSize>::LAYOUT,
        XenDomctl::<XenDomctlHypercallInit>::LAYOUT,
        XenDomctl::<XenDomctlTscInfo>::LAYOUT,
        XenDomctl::<XenDomctlGetTscInfo>::LAYOUT,
        XenDomctl::<XenDomctlPagingMempool>::LAYOUT,
        XenDomctl::<XenDomctlGetPagingMempool>::LAYOUT,
        XenDomctl::<XenDomctlSetVcpucontext>::LAYOUT,
        XenDomctl::<XenDomctlGetVcpucontext>::LAYOUT,
        XenDomctl::<XenDomctlGetHvmcontext>::LAYOUT,
        XenDomctl::<XenDomctlSetHvmcontext>::LAYOUT,
        XenDomctl::<XenDomctlGetCpuPolicy>::LAYOUT,
        XenDomctl::<XenDomctlSetCpuPolicy>::LAYOUT,
        StartInfo::LAYOUT,
        HvmStartInfo::LAYOUT,
        HvmModlistEntry::LAYOUT,
        HvmMemmapTableEntry::LAYOUT,
        XenconsInterface::LAYOUT,
        XenstoreDomainInterface::LAYOUT,
        XsdSockmsg::LAYOUT,
    ]
}
