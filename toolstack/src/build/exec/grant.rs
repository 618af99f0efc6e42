//! Seeding the new guest's grant table (`xc_dom_gnttab_seed`): entry 0 grants the console ring
//! to the console backend, entry 1 the xenstore ring to xenstored, so that C xenstored and
//! xenconsoled can map the rings through grants before the guest has touched its table.

use std::sync::atomic::{fence, Ordering};

use xenctrl::abi::{GTF_permit_access, GrantEntryV1};
use xenctrl::volatile::ReadWrite;
use xenctrl::{DomainId, Resource, XenCtrl};

use super::{Break, Breaks, BuildError, Rings};

/// `GNTTAB_RESERVED_CONSOLE`.
pub const GNTTAB_RESERVED_CONSOLE: usize = 0;
/// `GNTTAB_RESERVED_XENSTORE`.
pub const GNTTAB_RESERVED_XENSTORE: usize = 1;

/// Maps grant frame 0 (`MMAP_RESOURCE`, falling back to `GNTTABOP_setup_table`) and writes
/// the two entries: frame and domid first, the flags that make an entry valid last. An entry
/// whose backend is the guest itself is left alone, as libxenguest does.
pub(super) fn seed(
    xc: &XenCtrl,
    domain: DomainId,
    rings: &Rings,
    console_frame: u64,
    store_frame: u64,
    breaks: &Breaks,
) -> Result<(), BuildError> {
    let frame32 = |ring, frame: u64| {
        u32::try_from(frame).map_err(|_| BuildError::GrantFrameTooLarge { ring, frame })
    };
    let console = frame32("console", console_frame)?;
    let store = if breaks.has(Break::GrantStore) {
        console
    } else {
        frame32("xenstore", store_frame)?
    };
    let table = xc
        .map_resource::<ReadWrite>(domain, Resource::GRANT_TABLE, 0, 1)
        .map_err(BuildError::xen("cannot map its grant table"))?;
    let page = table.slice();
    let mut entries = vec![(GNTTAB_RESERVED_XENSTORE, rings.store_domid, store)];
    if !breaks.has(Break::GrantConsole) {
        entries.insert(0, (GNTTAB_RESERVED_CONSOLE, rings.console_domid, console));
    }
    for (index, backend, frame) in entries {
        if backend == domain.get() {
            continue;
        }
        let at = index * size_of::<GrantEntryV1>();
        let oob = |_| BuildError::WriteOutOfBounds {
            addr: at as u64,
            len: size_of::<GrantEntryV1>() as u64,
        };
        page.write(at + 4, &frame).map_err(oob)?;
        page.write(at + 2, &backend).map_err(oob)?;
        fence(Ordering::Release);
        page.write(at, &GTF_permit_access).map_err(oob)?;
    }
    Ok(())
}
