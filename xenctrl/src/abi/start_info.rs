//! What a guest finds when it starts: `start_info` for a PV guest (`xen.h`, x86-64 layout),
//! and for a PVH guest `hvm_start_info` with its module list and memory map
//! (`arch-x86/hvm/start_info.h`).
//!
//! These are written into guest memory by a domain builder, not passed to a hypercall, so they
//! hold no guest handle and derive zerocopy's byte conversions. The layouts are the same in Xen
//! 4.17 to 4.22.

#![allow(non_upper_case_globals)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::layout::{abi_consts, abi_struct};

abi_consts! {
    /// The constants of this module, for the conformance test.
    table consts;

    /// The size of `start_info.cmd_line`, its terminating NUL included.
    MAX_GUEST_CMDLINE: usize = 1024;
    /// `start_info.flags`: the domain is privileged.
    SIF_PRIVILEGED: u32 = 1 << 0;
    /// The domain is the initial control domain.
    SIF_INITDOMAIN: u32 = 1 << 1;
    /// `mod_start` is a multiboot module list.
    SIF_MULTIBOOT_MOD: u32 = 1 << 2;
    /// `mod_start` is a frame number (the module is not mapped by the initial page tables),
    /// and `mod_len` its length in bytes.
    SIF_MOD_START_PFN: u32 = 1 << 3;
    /// The tools understand a virtually mapped p2m list (libxenguest always sets it).
    SIF_VIRT_P2M_4TOOLS: u32 = 1 << 4;

    /// `hvm_start_info.magic`.
    XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
    /// `hvm_memmap_table_entry.type`: usable RAM (e820 type 1).
    XEN_HVM_MEMMAP_TYPE_RAM: u32 = 1;
    /// Reserved (e820 type 2).
    XEN_HVM_MEMMAP_TYPE_RESERVED: u32 = 2;
    /// ACPI tables, reclaimable once read (e820 type 3).
    XEN_HVM_MEMMAP_TYPE_ACPI: u32 = 3;
    /// ACPI non-volatile storage (e820 type 4).
    XEN_HVM_MEMMAP_TYPE_NVS: u32 = 4;
    /// Unusable (e820 type 5).
    XEN_HVM_MEMMAP_TYPE_UNUSABLE: u32 = 5;
    /// Disabled (e820 type 6).
    XEN_HVM_MEMMAP_TYPE_DISABLED: u32 = 6;
    /// Persistent memory (e820 type 7).
    XEN_HVM_MEMMAP_TYPE_PMEM: u32 = 7;
}

abi_struct! {
    /// The PV start-of-day page (`struct start_info`, x86-64): what the builder tells a PV
    /// kernel about its memory, page tables, rings, modules and command line. `rsi` points at
    /// it when the kernel is entered.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct start_info")
    pub struct StartInfo {
        /// `"xen-<version>-<platform>"`, NUL-terminated: libxenguest writes its guest type,
        /// `"xen-3.0-x86_64"`.
        pub magic: [u8; 32],
        /// Total pages allocated to the domain.
        pub nr_pages: u64,
        /// Machine address of the shared-info page.
        pub shared_info: u64,
        /// `SIF_*` flags.
        pub flags: u32,
        /// Padding.
        pub _pad0: u32 => _,
        /// Machine frame of the xenstore ring.
        pub store_mfn: u64,
        /// Event channel of the xenstore ring.
        pub store_evtchn: u32,
        /// Padding.
        pub _pad1: u32 => _,
        /// Machine frame of the console ring (`console.domU.mfn`).
        pub console_mfn: u64 => "console.domU.mfn",
        /// Event channel of the console ring (`console.domU.evtchn`).
        pub console_evtchn: u32 => "console.domU.evtchn",
        /// Padding (the rest of the console union).
        pub _pad2: u32 => _,
        /// Virtual address of the top-level page table.
        pub pt_base: u64,
        /// Number of bootstrap page-table frames.
        pub nr_pt_frames: u64,
        /// Virtual address of the p2m list (pfn -> mfn, one `u64` per page).
        pub mfn_list: u64,
        /// The first module (initrd): its virtual address, or its pfn with
        /// [`SIF_MOD_START_PFN`].
        pub mod_start: u64,
        /// The module's length in bytes.
        pub mod_len: u64,
        /// The command line, NUL-terminated.
        pub cmd_line: [u8; MAX_GUEST_CMDLINE],
        /// The first pfn of the p2m list when it is mapped at INIT_P2M (0 otherwise).
        pub first_p2m_pfn: u64,
        /// How many frames that p2m mapping takes, its page tables included.
        pub nr_p2m_frames: u64,
    }
    size = 1168;
}

abi_struct! {
    /// The PVH start-of-day structure (`struct hvm_start_info`); `ebx` holds its physical
    /// address when the kernel is entered at PHYS32_ENTRY.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct hvm_start_info")
    pub struct HvmStartInfo {
        /// [`XEN_HVM_START_MAGIC_VALUE`].
        pub magic: u32,
        /// The structure's version; 1 has the memory map.
        pub version: u32,
        /// `SIF_*` flags.
        pub flags: u32,
        /// Number of entries at `modlist_paddr`.
        pub nr_modules: u32,
        /// Physical address of an array of [`HvmModlistEntry`].
        pub modlist_paddr: u64,
        /// Physical address of the NUL-terminated command line.
        pub cmdline_paddr: u64,
        /// Physical address of the ACPI RSDP (0: the guest searches for it).
        pub rsdp_paddr: u64,
        /// Physical address of an array of [`HvmMemmapTableEntry`] (version 1).
        pub memmap_paddr: u64,
        /// Number of entries at `memmap_paddr`.
        pub memmap_entries: u32,
        /// Must be zero.
        pub reserved: u32,
    }
    size = 56;
}

abi_struct! {
    /// A module handed to a PVH guest (`struct hvm_modlist_entry`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct hvm_modlist_entry")
    pub struct HvmModlistEntry {
        /// Physical address of the module.
        pub paddr: u64,
        /// Its size in bytes.
        pub size: u64,
        /// Physical address of its NUL-terminated command line (0: none).
        pub cmdline_paddr: u64,
        /// Must be zero.
        pub reserved: u64,
    }
    size = 32;
}

abi_struct! {
    /// An entry of a PVH guest's memory map (`struct hvm_memmap_table_entry`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
    c("struct hvm_memmap_table_entry")
    pub struct HvmMemmapTableEntry {
        /// Base address.
        pub addr: u64,
        /// Size in bytes.
        pub size: u64,
        /// `XEN_HVM_MEMMAP_TYPE_*`.
        pub kind: u32 => "type",
        /// Must be zero.
        pub reserved: u32,
    }
    size = 24;
}
