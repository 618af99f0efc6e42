//! Where the time of one creation went, for `rxl create -v` and the speed comparison with xl.

use std::fmt;
use std::time::Duration;

use crate::build::kernel::LoadTimings;

/// Where the time of one creation went. Stages that did not run (no kernel, no unpause) stay
/// zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// Loading the kernel: reading, hashing for the cache, the cache lookup, unpacking (zero
    /// on a cache hit), parsing, storing in the cache.
    pub kernel: LoadTimings,
    /// Reading the initrd.
    pub initrd: Duration,
    /// Laying the guest out (the build plan's first phase).
    pub plan: Duration,
    /// `createdomain`, `max_mem`, the claim, vCPUs, event channels, and the settings made
    /// before populate (address size, TSC, timer mode, paging pool, memory map).
    pub domain: Duration,
    /// Populating the guest's memory.
    pub populate: Duration,
    /// Copying the kernel and initrd in (and clearing the rest of their segments).
    pub load: Duration,
    /// Rendering and writing the page tables, p2m list and start info (PVH: start info, ACPI
    /// and HVM parameters).
    pub page_tables: Duration,
    /// Setting the vCPUs (PV: hypercall page, pinning, shared_info, vCPU context; PVH: HVM
    /// context).
    pub vcpus: Duration,
    /// Seeding the grant table.
    pub grants: Duration,
    /// Writing xenstore and introducing the domain.
    pub xenstore: Duration,
    /// The stored config, the devices and releasing the claim.
    pub devices: Duration,
    /// Unpausing.
    pub unpause: Duration,
    /// The whole creation.
    pub total: Duration,
}

impl Timings {
    /// Decompression as the speed report counts it: reading the kernel, the cache's hashing,
    /// lookup and store, unpacking and parsing.
    pub fn decompression(&self) -> Duration {
        let k = &self.kernel;
        k.read + k.hash + k.cache_lookup + k.decompress + k.parse + k.cache_store
    }

    /// The stages in order, named as the speed report names them.
    pub fn rows(&self) -> [(&'static str, Duration); 14] {
        let k = &self.kernel;
        [
            ("kernel-read", k.read),
            ("kernel-cache", k.hash + k.cache_lookup + k.cache_store),
            ("decompress", k.decompress),
            ("elf-parse", k.parse),
            ("initrd-read", self.initrd),
            ("plan", self.plan),
            ("domain", self.domain),
            ("populate", self.populate),
            ("load", self.load),
            ("page-tables", self.page_tables),
            ("vcpus", self.vcpus),
            ("grants", self.grants),
            ("xenstore", self.xenstore),
            ("devices", self.devices + self.unpause),
        ]
    }
}

/// One line: `total 12.345 ms: kernel-read 1.000 ms, ...` (milliseconds, every stage).
impl fmt::Display for Timings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(f, "total {:.3} ms:", ms(self.total))?;
        for (i, (name, d)) in self.rows().iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{name} {:.3} ms", ms(*d))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_every_stage() {
        let t = Timings {
            populate: Duration::from_millis(3),
            total: Duration::from_millis(10),
            ..Timings::default()
        };
        let s = t.to_string();
        assert!(
            s.starts_with("total 10.000 ms: kernel-read 0.000 ms"),
            "{s}"
        );
        assert!(s.contains("populate 3.000 ms"), "{s}");
        assert_eq!(s.matches(" ms").count(), 15);
    }
}
