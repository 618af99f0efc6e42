//! What the hypervisor says about itself and the machine: `xen_version` and sysctl physinfo.

use crate::abi::{
    split_version, XENVER_capabilities, XENVER_changeset, XENVER_extraversion, XENVER_pagesize,
    XENVER_version, XEN_SYSCTL_PHYSCAP_hap, XEN_SYSCTL_PHYSCAP_hvm, XEN_SYSCTL_PHYSCAP_pv,
    XenCapabilitiesInfo, XenChangesetInfo, XenExtraversion, XenSysctl, XenSysctlPhysinfo,
};
use crate::ctrl::XenCtrl;
use crate::error::{Op, Result};
use crate::PAGE_SIZE;

/// The hypervisor's version, as `xl info` prints it in `xen_major`, `xen_minor` and
/// `xen_extra`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XenVersion {
    /// Major version (4).
    pub major: u16,
    /// Minor version (17).
    pub minor: u16,
    /// The extra version string (".7" for 4.17.7).
    pub extra: String,
}

impl std::fmt::Display for XenVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}{}", self.major, self.minor, self.extra)
    }
}

/// The machine as Xen sees it (sysctl physinfo). Page counts are in 4 KiB pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysInfo {
    /// Logical CPUs Xen runs on.
    pub nr_cpus: u32,
    /// Highest CPU id.
    pub max_cpu_id: u32,
    /// NUMA nodes.
    pub nr_nodes: u32,
    /// Highest node id.
    pub max_node_id: u32,
    /// Threads per core.
    pub threads_per_core: u32,
    /// Cores per socket.
    pub cores_per_socket: u32,
    /// CPU frequency in kHz.
    pub cpu_khz: u32,
    /// `XEN_SYSCTL_PHYSCAP_*` bits.
    pub capabilities: u32,
    /// Pages of RAM Xen manages.
    pub total_pages: u64,
    /// Pages free.
    pub free_pages: u64,
    /// Pages waiting to be scrubbed.
    pub scrub_pages: u64,
    /// Pages claimed by domains but not yet allocated.
    pub outstanding_pages: u64,
    /// Highest machine frame number.
    pub max_mfn: u64,
    /// Hardware capability words, as `xl info` prints in `hw_caps`.
    pub hw_cap: [u32; 8],
}

impl PhysInfo {
    fn from_abi(p: &XenSysctlPhysinfo) -> Self {
        PhysInfo {
            nr_cpus: p.nr_cpus,
            max_cpu_id: p.max_cpu_id,
            nr_nodes: p.nr_nodes,
            max_node_id: p.max_node_id,
            threads_per_core: p.threads_per_core,
            cores_per_socket: p.cores_per_socket,
            cpu_khz: p.cpu_khz,
            capabilities: p.capabilities,
            total_pages: p.total_pages,
            free_pages: p.free_pages,
            scrub_pages: p.scrub_pages,
            outstanding_pages: p.outstanding_pages,
            max_mfn: p.max_mfn,
            hw_cap: p.hw_cap,
        }
    }

    /// Total memory in MiB (`xl info`'s `total_memory`).
    pub fn total_mib(&self) -> u64 {
        pages_to_mib(self.total_pages)
    }

    /// Free memory in MiB (`xl info`'s `free_memory`).
    pub fn free_mib(&self) -> u64 {
        pages_to_mib(self.free_pages)
    }

    /// Whether the host can run HVM (and so PVH) guests.
    pub fn hvm(&self) -> bool {
        self.capabilities & XEN_SYSCTL_PHYSCAP_hvm != 0
    }

    /// Whether the host can run PV guests.
    pub fn pv(&self) -> bool {
        self.capabilities & XEN_SYSCTL_PHYSCAP_pv != 0
    }

    /// Whether hardware-assisted paging is available.
    pub fn hap(&self) -> bool {
        self.capabilities & XEN_SYSCTL_PHYSCAP_hap != 0
    }
}

/// Pages to MiB, rounding down as `xl info` does.
pub fn pages_to_mib(pages: u64) -> u64 {
    pages * (PAGE_SIZE as u64) / (1024 * 1024)
}

impl XenCtrl {
    /// The hypervisor's version.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Xen`] if Xen refuses.
    ///
    /// # Examples
    ///
    /// ```
    /// let xc = xenctrl::XenCtrl::simulated(Default::default())?;
    /// let v = xc.version()?;
    /// assert_eq!((v.major, v.minor), (4, 17));
    /// # Ok::<(), xenctrl::Error>(())
    /// ```
    pub fn version(&self) -> Result<XenVersion> {
        let raw = self.xen_version_op::<u8>(Op::Version, XENVER_version, None)?;
        let (major, minor) = split_version(raw);
        let mut extra = self.pool().alloc::<XenExtraversion>()?;
        self.xen_version_op(Op::Extraversion, XENVER_extraversion, Some(&mut extra))?;
        Ok(XenVersion {
            major,
            minor,
            extra: extra.to_string_lossy(),
        })
    }

    /// The capabilities string (`xl info`'s `xen_caps`), e.g.
    /// `"xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64"`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Xen`] if Xen refuses.
    pub fn capabilities(&self) -> Result<String> {
        let mut caps = self.pool().alloc::<XenCapabilitiesInfo>()?;
        self.xen_version_op(Op::Capabilities, XENVER_capabilities, Some(&mut caps))?;
        // Xen ends the list with a space separator; it carries no meaning.
        Ok(caps.to_string_lossy().trim_end().to_owned())
    }

    /// The changeset the hypervisor was built from (`xl info`'s `xen_changeset`).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Xen`] if Xen refuses.
    pub fn changeset(&self) -> Result<String> {
        let mut cs = self.pool().alloc::<XenChangesetInfo>()?;
        self.xen_version_op(Op::Changeset, XENVER_changeset, Some(&mut cs))?;
        Ok(cs.to_string_lossy())
    }

    /// The hypervisor's page size (`xl info`'s `xen_pagesize`).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Xen`] if Xen refuses.
    pub fn page_size(&self) -> Result<u64> {
        self.xen_version_op::<u8>(Op::PageSize, XENVER_pagesize, None)
    }

    /// The machine as Xen sees it.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Xen`] if Xen refuses.
    ///
    /// # Examples
    ///
    /// ```
    /// let xc = xenctrl::XenCtrl::simulated(Default::default())?;
    /// let p = xc.physinfo()?;
    /// assert!(p.free_pages <= p.total_pages);
    /// # Ok::<(), xenctrl::Error>(())
    /// ```
    pub fn physinfo(&self) -> Result<PhysInfo> {
        let mut op = self.pool().alloc::<XenSysctl<XenSysctlPhysinfo>>()?;
        op.set(XenSysctlPhysinfo::default());
        self.sysctl(&mut op).map_err(|e| e.with_op(Op::Physinfo))?;
        Ok(PhysInfo::from_abi(&op.u))
    }
}
