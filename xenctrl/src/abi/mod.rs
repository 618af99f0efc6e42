//! The Xen 4.17 public ABI: `#[repr(C)]` structs and constants. No `unsafe` here.

mod handle;

pub use handle::XenGuestHandle;
