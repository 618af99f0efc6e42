//! Decoding hypercall arguments for the simulated hypervisor.
//!
//! Arguments are copied in from [`GuestMemory`] as `FromBytes` types (the `*View`s where Xen's
//! struct holds a guest handle), handed to [`SimState`], and results copied back, in the order
//! and with the error conventions of Xen 4.17: `EFAULT` when a copy fails, `EACCES` on an
//! interface-version mismatch, and for the reservation sub-ops the count of extents done instead
//! of an errno. Any bytes decode to something; nothing here panics on input.

// The ABI constants keep their C spelling, and are matched on here.
#![allow(non_upper_case_globals)]

use std::sync::Arc;

use nix::errno::Errno;
use zerocopy::{FromBytes, IntoBytes};

use super::memory::GuestMemory;
use super::state::{SimState, CALLER_MAX_ORDER, MAX_ORDER, SIM_DOM0};
use super::versions::ReleaseLayouts;
use super::SimConfig;
use crate::abi::layout::{AbiLayout, StructLayout};
use crate::abi::*;

/// What the dispatcher needs to know besides the model: the Xen release presented.
#[derive(Clone, Debug)]
pub(crate) struct Interface {
    /// The domctl interface version presented.
    pub domctl: u32,
    /// The sysctl interface version presented.
    pub sysctl: u32,
    /// `getdomaininfo` of a missing domain answers `ESRCH` (4.18+).
    pub getdomaininfo_exact: bool,
    /// Setting `HVM_PARAM_ALTP2M` answers `EEXIST` (4.19+).
    pub hvm_param_altp2m_read_only: bool,
    /// `DOMID_ANY` (4.22+): `createdomain` takes 0 as domain 0 and refuses every other
    /// reserved id.
    pub domid_any: Option<DomId>,
    /// How the presented release lays out the domctl and sysctl payloads, from its recorded
    /// header facts (not from the profile the crate marshals with); `None` when as in
    /// [`crate::abi`].
    pub layouts: Option<Arc<ReleaseLayouts>>,
}

impl Interface {
    /// The release `config` presents: behaviour from the profile of its interface versions,
    /// layouts from the recorded facts of its release.
    pub(crate) fn new(config: &SimConfig) -> Self {
        let (domctl, sysctl) = (
            config.domctl_interface_version,
            config.sysctl_interface_version,
        );
        let profile = crate::interface::profile_for(domctl, sysctl);
        Self {
            domctl,
            sysctl,
            getdomaininfo_exact: profile.is_some_and(|p| p.getdomaininfo_exact),
            hvm_param_altp2m_read_only: profile.is_some_and(|p| p.hvm_param_altp2m_read_only),
            domid_any: profile.and_then(|p| p.domid_any),
            layouts: ReleaseLayouts::of(config.version, domctl, sysctl),
        }
    }

    /// Bring a union that holds payload `s` (if known) from the release's layout to ours.
    fn union_in(&self, s: Option<StructLayout>, union: &mut [u8]) {
        if let (Some(l), Some(s)) = (&self.layouts, s) {
            let theirs = union.to_vec();
            l.to_ours(&s, &theirs, union);
        }
    }

    /// Bring a union that holds payload `s` (if known) from our layout to the release's.
    fn union_out(&self, s: Option<StructLayout>, union: &mut [u8]) {
        if let (Some(l), Some(s)) = (&self.layouts, s) {
            let ours = union.to_vec();
            l.to_theirs(&s, &ours, union);
        }
    }
}

/// The payload a domctl sub-op carries (for the views: their twin's layout).
fn domctl_payload(cmd: u32) -> Option<StructLayout> {
    Some(match cmd {
        XEN_DOMCTL_createdomain => XenDomctlCreatedomain::LAYOUT,
        XEN_DOMCTL_getdomaininfo => XenDomctlGetdomaininfo::LAYOUT,
        XEN_DOMCTL_max_mem => XenDomctlMaxMem::LAYOUT,
        XEN_DOMCTL_max_vcpus => XenDomctlMaxVcpus::LAYOUT,
        XEN_DOMCTL_set_address_size | XEN_DOMCTL_get_address_size => XenDomctlAddressSize::LAYOUT,
        XEN_DOMCTL_setvcpucontext | XEN_DOMCTL_getvcpucontext => {
            XenDomctlSetVcpucontextView::LAYOUT
        }
        XEN_DOMCTL_hypercall_init => XenDomctlHypercallInit::LAYOUT,
        XEN_DOMCTL_settscinfo | XEN_DOMCTL_gettscinfo => XenDomctlTscInfo::LAYOUT,
        XEN_DOMCTL_gethvmcontext | XEN_DOMCTL_sethvmcontext => XenDomctlSetHvmcontextView::LAYOUT,
        XEN_DOMCTL_get_cpu_policy | XEN_DOMCTL_set_cpu_policy => XenDomctlSetCpuPolicyView::LAYOUT,
        XEN_DOMCTL_set_paging_mempool_size | XEN_DOMCTL_get_paging_mempool_size => {
            XenDomctlPagingMempool::LAYOUT
        }
        _ => return None,
    })
}

/// The payload a sysctl sub-op carries.
fn sysctl_payload(cmd: u32) -> Option<StructLayout> {
    Some(match cmd {
        XEN_SYSCTL_physinfo => XenSysctlPhysinfo::LAYOUT,
        XEN_SYSCTL_getdomaininfolist => XenSysctlGetdomaininfolistView::LAYOUT,
        _ => return None,
    })
}

/// Copy a domctl back to the caller (Xen's `copyback`), its payload in the release's layout.
fn put_domctl(
    iface: &Interface,
    mem: &dyn GuestMemory,
    addr: u64,
    mut op: XenDomctlView,
) -> Result<(), Errno> {
    iface.union_out(domctl_payload(op.cmd), op.union_bytes_mut());
    mem.write(addr, op.as_bytes())
}

/// The `xen_version` answers.
#[derive(Clone, Debug)]
pub(crate) struct VersionInfo {
    /// `major << 16 | minor`.
    pub version: u64,
    /// `XENVER_extraversion`.
    pub extraversion: XenExtraversion,
    /// `XENVER_capabilities`.
    pub capabilities: XenCapabilitiesInfo,
    /// `XENVER_changeset`.
    pub changeset: XenChangesetInfo,
}

/// `MEMOP_EXTENT_SHIFT`: `memory_op`'s command word carries a continuation's start extent above
/// this many bits.
const MEMOP_EXTENT_SHIFT: u32 = 6;
const MEMOP_CMD_MASK: u64 = (1 << MEMOP_EXTENT_SHIFT) - 1;

/// The sub-op a hypercall names, for fault injection: the `cmd` word of a domctl/sysctl (read
/// from memory), else the first register.
pub(crate) fn subop(mem: &dyn GuestMemory, op: u64, args: [u64; 5]) -> Result<u32, Errno> {
    match op {
        __HYPERVISOR_domctl | __HYPERVISOR_sysctl => {
            let mut cmd = [0u8; 4];
            mem.read(args[0], &mut cmd)?;
            Ok(u32::from_ne_bytes(cmd))
        }
        __HYPERVISOR_memory_op => Ok(u32::try_from(args[0] & MEMOP_CMD_MASK).unwrap_or(0)),
        _ => Ok(u32::try_from(args[0]).unwrap_or(u32::MAX)),
    }
}

/// Whether a hypercall is one that only reads the model (a query), judged by its sub-op
/// (`subop`, from [`subop`]): `xen_version`, `XEN_DOMCTL_getdomaininfo`, the sysctls
/// (`physinfo`, `getdomaininfolist`), the reservation queries of `memory_op` and
/// `EVTCHNOP_status`. A persistent
/// host runs these with [`query`] against a shared borrow of the model, and so neither encodes
/// nor writes it: their cost does not grow with the number of domains.
pub(crate) fn is_query(op: u64, subop: Result<u32, Errno>) -> bool {
    match (op, subop) {
        (__HYPERVISOR_xen_version, _) | (__HYPERVISOR_sysctl, Ok(_)) => true,
        (__HYPERVISOR_domctl, Ok(cmd)) => cmd == XEN_DOMCTL_getdomaininfo,
        (__HYPERVISOR_memory_op, Ok(cmd)) => {
            let cmd = u64::from(cmd);
            cmd == XENMEM_current_reservation || cmd == XENMEM_maximum_reservation
        }
        (__HYPERVISOR_event_channel_op, Ok(cmd)) => u64::from(cmd) == EVTCHNOP_status,
        _ => false,
    }
}

/// Execute one query (see [`is_query`]) against the model, which it cannot change. `None` when
/// the hypercall is not a query after all (the caller's buffer changed since [`subop`] read
/// it): the caller then runs it with [`dispatch`].
pub(crate) fn query(
    state: &SimState,
    iface: &Interface,
    version: &VersionInfo,
    mem: &dyn GuestMemory,
    op: u64,
    args: [u64; 5],
) -> Option<Result<u64, Errno>> {
    match op {
        __HYPERVISOR_xen_version => Some(xen_version(version, mem, args[0], args[1])),
        __HYPERVISOR_domctl => {
            let op: XenDomctlView = match read(mem, args[0]) {
                Ok(op) => op,
                Err(e) => return Some(Err(e)),
            };
            if op.interface_version != iface.domctl {
                return Some(Err(Errno::EACCES));
            }
            (op.cmd == XEN_DOMCTL_getdomaininfo)
                .then(|| getdomaininfo(state, iface, mem, args[0], op))
        }
        __HYPERVISOR_sysctl => Some(sysctl(state, iface, mem, args[0])),
        __HYPERVISOR_memory_op => match args[0] & MEMOP_CMD_MASK {
            XENMEM_current_reservation | XENMEM_maximum_reservation => {
                Some(reservation_query(state, mem, args[0], args[1]))
            }
            _ => None,
        },
        __HYPERVISOR_event_channel_op if args[0] == EVTCHNOP_status => {
            Some(evtchn_status(state, mem, args[1]))
        }
        _ => None,
    }
}

/// Execute one hypercall against the model.
pub(crate) fn dispatch(
    state: &mut SimState,
    iface: &Interface,
    version: &VersionInfo,
    mem: &dyn GuestMemory,
    op: u64,
    args: [u64; 5],
) -> Result<u64, Errno> {
    match op {
        __HYPERVISOR_xen_version => xen_version(version, mem, args[0], args[1]),
        __HYPERVISOR_domctl => domctl(state, iface, mem, args[0]),
        __HYPERVISOR_sysctl => sysctl(state, iface, mem, args[0]),
        __HYPERVISOR_memory_op => memory_op(state, mem, args[0], args[1]),
        __HYPERVISOR_event_channel_op => event_channel_op(state, mem, args[0], args[1]),
        __HYPERVISOR_hvm_op => hvm_op(state, iface, mem, args[0], args[1]),
        __HYPERVISOR_mmuext_op => mmuext_op(state, mem, args),
        __HYPERVISOR_grant_table_op => {
            super::foreign::grant_table_op(state, mem, args[0], args[1], args[2])
        }
        __HYPERVISOR_sched_op => super::sched::sched_op(state, mem, args[0], args[1]),
        _ => Err(Errno::ENOSYS),
    }
}

fn read<T: FromBytes + IntoBytes>(mem: &dyn GuestMemory, addr: u64) -> Result<T, Errno> {
    let mut v = T::new_zeroed();
    mem.read(addr, v.as_mut_bytes())?;
    Ok(v)
}

fn xen_version(v: &VersionInfo, mem: &dyn GuestMemory, cmd: u64, arg: u64) -> Result<u64, Errno> {
    match cmd {
        XENVER_version => Ok(v.version),
        XENVER_pagesize => Ok(crate::PAGE_SIZE as u64),
        XENVER_extraversion => mem.write(arg, v.extraversion.as_bytes()).map(|()| 0),
        XENVER_capabilities => mem.write(arg, v.capabilities.as_bytes()).map(|()| 0),
        XENVER_changeset => mem.write(arg, v.changeset.as_bytes()).map(|()| 0),
        _ => Err(Errno::ENOSYS),
    }
}

/// Decode payload `P` from the front of a union.
fn payload<P: FromBytes>(u: &[u8]) -> P {
    P::read_from_prefix(u)
        .map(|(p, _)| p)
        .unwrap_or_else(|_| P::new_zeroed())
}

/// Encode `p` at the front of a union.
fn set_payload<P: IntoBytes + zerocopy::Immutable>(u: &mut [u8], p: &P) {
    let b = p.as_bytes();
    u[..b.len()].copy_from_slice(b);
}

fn domctl(
    state: &mut SimState,
    iface: &Interface,
    mem: &dyn GuestMemory,
    addr: u64,
) -> Result<u64, Errno> {
    let mut op: XenDomctlView = read(mem, addr)?;
    if op.interface_version != iface.domctl {
        return Err(Errno::EACCES);
    }
    iface.union_in(domctl_payload(op.cmd), op.union_bytes_mut());
    let domid = op.domain;
    match op.cmd {
        XEN_DOMCTL_createdomain => {
            let config: XenDomctlCreatedomain = payload(op.union_bytes());
            op.domain = state.create_domain(createdomain_id(state, iface, domid)?, &config)?;
            put_domctl(iface, mem, addr, op)?;
        }
        XEN_DOMCTL_getdomaininfo => return getdomaininfo(state, iface, mem, addr, op),
        XEN_DOMCTL_pausedomain => state.pause(domid)?,
        XEN_DOMCTL_unpausedomain => state.unpause(domid)?,
        XEN_DOMCTL_destroydomain => state.destroy(domid)?,
        XEN_DOMCTL_max_mem => {
            let m: XenDomctlMaxMem = payload(op.union_bytes());
            state.set_max_mem(domid, m.max_memkb)?;
        }
        XEN_DOMCTL_max_vcpus => {
            let m: XenDomctlMaxVcpus = payload(op.union_bytes());
            state.max_vcpus(domid, m.max)?;
        }
        XEN_DOMCTL_set_address_size
        | XEN_DOMCTL_get_address_size
        | XEN_DOMCTL_setvcpucontext
        | XEN_DOMCTL_getvcpucontext
        | XEN_DOMCTL_hypercall_init
        | XEN_DOMCTL_settscinfo
        | XEN_DOMCTL_gettscinfo
        | XEN_DOMCTL_gethvmcontext
        | XEN_DOMCTL_sethvmcontext
        | XEN_DOMCTL_get_cpu_policy
        | XEN_DOMCTL_set_cpu_policy
        | XEN_DOMCTL_set_paging_mempool_size
        | XEN_DOMCTL_get_paging_mempool_size => return build_domctl(state, iface, mem, addr, op),
        _ => {
            // Xen looks the domain up before it looks at the sub-op.
            state.domain(domid)?;
            return Err(Errno::ENOSYS);
        }
    }
    Ok(0)
}

/// The domain id `createdomain` hands the model, which searches for a free id when given 0 or
/// a reserved id (4.17 to 4.21). From 4.22 only `DOMID_ANY` asks for any id: 0 is domain 0,
/// which exists, and other reserved ids are refused (`domid_alloc`).
fn createdomain_id(state: &SimState, iface: &Interface, domid: DomId) -> Result<DomId, Errno> {
    match iface.domid_any {
        Some(any) if domid == any => Ok(0),
        Some(_) if domid == 0 && state.domain(0).is_ok() => Err(Errno::EEXIST),
        Some(_) if domid >= DOMID_FIRST_RESERVED => Err(Errno::EEXIST),
        _ => Ok(domid),
    }
}

/// `XEN_DOMCTL_getdomaininfo`, whose decoded `op` is at `addr`.
fn getdomaininfo(
    state: &SimState,
    iface: &Interface,
    mem: &dyn GuestMemory,
    addr: u64,
    mut op: XenDomctlView,
) -> Result<u64, Errno> {
    let info = state.getdomaininfo(op.domain, iface.getdomaininfo_exact)?;
    op.domain = info.domain;
    set_payload(op.union_bytes_mut(), &info);
    put_domctl(iface, mem, addr, op)?;
    Ok(0)
}

/// The sysctls: all of them only read the model.
fn sysctl(
    state: &SimState,
    iface: &Interface,
    mem: &dyn GuestMemory,
    addr: u64,
) -> Result<u64, Errno> {
    let mut op: XenSysctlView = read(mem, addr)?;
    if op.interface_version != iface.sysctl {
        return Err(Errno::EACCES);
    }
    let layout = sysctl_payload(op.cmd);
    iface.union_in(layout, op.union_bytes_mut());
    match op.cmd {
        XEN_SYSCTL_physinfo => {
            let info = state.physinfo();
            set_payload(op.union_bytes_mut(), &info);
        }
        XEN_SYSCTL_getdomaininfolist => {
            let mut list: XenSysctlGetdomaininfolistView = payload(op.union_bytes());
            let max = usize::try_from(list.max_domains).unwrap_or(usize::MAX);
            // The array's elements are in the release's layout too.
            let element = XenDomctlGetdomaininfo::LAYOUT;
            let size = iface
                .layouts
                .as_ref()
                .map_or(element.size, |l| l.size_of(&element));
            let mut theirs = vec![0u8; size];
            let mut n = 0u32;
            for info in state.domain_list(list.first_domain, max) {
                let at = u64::from(n)
                    .checked_mul(size as u64)
                    .and_then(|off| list.buffer.checked_add(off))
                    .ok_or(Errno::EFAULT)?;
                match &iface.layouts {
                    Some(l) => l.to_theirs(&element, info.as_bytes(), &mut theirs),
                    None => theirs.copy_from_slice(info.as_bytes()),
                }
                mem.write(at, &theirs)?;
                n += 1;
            }
            list.num_domains = n;
            set_payload(op.union_bytes_mut(), &list);
        }
        _ => return Err(Errno::ENOSYS),
    }
    iface.union_out(layout, op.union_bytes_mut());
    mem.write(addr, op.as_bytes())?;
    Ok(0)
}

fn memory_op(
    state: &mut SimState,
    mem: &dyn GuestMemory,
    cmd: u64,
    arg: u64,
) -> Result<u64, Errno> {
    let start = cmd >> MEMOP_EXTENT_SHIFT;
    match cmd & MEMOP_CMD_MASK {
        op @ (XENMEM_increase_reservation
        | XENMEM_decrease_reservation
        | XENMEM_populate_physmap) => Ok(reservation(state, mem, op, start, arg)),
        XENMEM_claim_pages => {
            if start != 0 {
                return Err(Errno::EINVAL);
            }
            let r: XenMemoryReservationView = read(mem, arg)?;
            if r.extent_start != 0 || r.extent_order != 0 || r.mem_flags != 0 {
                return Err(Errno::EINVAL);
            }
            // Looked up without DOMID_SELF, and a missing domain is EINVAL here.
            state.domain(r.domid).map_err(|_| Errno::EINVAL)?;
            state.set_outstanding(r.domid, r.nr_extents).map(|()| 0)
        }
        XENMEM_current_reservation | XENMEM_maximum_reservation => {
            reservation_query(state, mem, cmd, arg)
        }
        XENMEM_set_memory_map => set_memory_map(state, mem, arg),
        _ => Err(Errno::ENOSYS),
    }
}

/// `XENMEM_current_reservation` and `XENMEM_maximum_reservation`.
fn reservation_query(
    state: &SimState,
    mem: &dyn GuestMemory,
    cmd: u64,
    arg: u64,
) -> Result<u64, Errno> {
    if cmd >> MEMOP_EXTENT_SHIFT != 0 {
        return Err(Errno::EINVAL);
    }
    let q: XenMemoryDomain = read(mem, arg)?;
    let d = state.domain(SimState::resolve(q.domid))?;
    Ok(if cmd & MEMOP_CMD_MASK == XENMEM_current_reservation {
        d.tot_pages
    } else {
        d.max_pages
    })
}

/// The reservation sub-ops answer with the number of extents done, never an errno.
fn reservation(state: &mut SimState, mem: &dyn GuestMemory, op: u64, start: u64, arg: u64) -> u64 {
    let Ok(r) = read::<XenMemoryReservationView>(mem, arg) else {
        return start;
    };
    if r.nr_extents > u64::from(u32::MAX >> MEMOP_EXTENT_SHIFT) || start >= r.nr_extents {
        return start;
    }
    let domid = SimState::resolve(r.domid);
    if state.domain(domid).is_err() {
        return start;
    }
    let list = r.extent_start;
    let pfn = core::mem::size_of::<XenPfn>() as u64;
    let slot = |i: u64| list.wrapping_add(i.wrapping_mul(pfn));
    let order = r.extent_order;
    let pod = r.mem_flags & XENMEMF_populate_on_demand != 0;
    let max_order = if op == XENMEM_populate_physmap && pod {
        MAX_ORDER
    } else {
        CALLER_MAX_ORDER
    };
    if order > max_order {
        return start;
    }
    // The list must be accessible as a whole (`guest_handle_subrange_okay`); increase_reservation
    // may pass a null list and get nothing written.
    let needs_list = op != XENMEM_increase_reservation || list != 0;
    if needs_list && !mem.check(slot(start), (r.nr_extents - start).saturating_mul(pfn)) {
        return start;
    }
    let hvm = state.is_hvm(domid);
    let mut done = start;
    while done < r.nr_extents {
        let i = done;
        let ok = match op {
            XENMEM_increase_reservation => match state.increase_extent(domid, order) {
                Some(mfn) => list == 0 || mem.write(slot(i), &mfn.to_ne_bytes()).is_ok(),
                None => false,
            },
            XENMEM_decrease_reservation => match read::<u64>(mem, slot(i)) {
                Ok(gmfn) => state.decrease_extent(domid, gmfn, order),
                Err(_) => false,
            },
            _ => match read::<u64>(mem, slot(i)) {
                Ok(gpfn) => match state.populate_extent(domid, gpfn, order) {
                    Some(mfn) if !hvm => mem.write(slot(i), &mfn.to_ne_bytes()).is_ok(),
                    Some(_) => true,
                    None => false,
                },
                Err(_) => false,
            },
        };
        if !ok {
            break;
        }
        done += 1;
    }
    done
}

fn event_channel_op(
    state: &mut SimState,
    mem: &dyn GuestMemory,
    cmd: u64,
    arg: u64,
) -> Result<u64, Errno> {
    // The toolstack's hypercalls come from dom0.
    match cmd {
        EVTCHNOP_alloc_unbound => {
            let mut a: EvtchnAllocUnbound = read(mem, arg)?;
            a.port = state.evtchn_alloc_unbound(SIM_DOM0, a.dom, a.remote_dom)?;
            mem.write(arg, a.as_bytes())?;
            Ok(0)
        }
        EVTCHNOP_status => evtchn_status(state, mem, arg),
        EVTCHNOP_close => {
            let c: EvtchnClose = read(mem, arg)?;
            state.evtchn_close(SIM_DOM0, c.port).map(|()| 0)
        }
        EVTCHNOP_reset => {
            let r: EvtchnReset = read(mem, arg)?;
            state.evtchn_reset(SIM_DOM0, r.dom).map(|()| 0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// `EVTCHNOP_status`: Xen copies the whole struct back, with the union's unused bytes as the
/// caller left them.
fn evtchn_status(state: &SimState, mem: &dyn GuestMemory, arg: u64) -> Result<u64, Errno> {
    let mut s: EvtchnStatus = read(mem, arg)?;
    let answer = state.evtchn_status(SIM_DOM0, s.dom, s.port)?;
    s.status = answer.status;
    s.vcpu = answer.vcpu;
    match answer.status {
        EVTCHNSTAT_unbound => s.set_remote_dom(answer.remote_dom()),
        EVTCHNSTAT_interdomain => {
            s.set_remote_dom(answer.remote_dom());
            s.u_port = answer.u_port;
        }
        EVTCHNSTAT_pirq | EVTCHNSTAT_virq => s.u_word = answer.u_word,
        _ => {}
    }
    mem.write(arg, s.as_bytes())?;
    Ok(0)
}

/// The domctls of a domain builder (`sim/build.rs` holds the model). Xen looks the domain up
/// first, so a missing one is `ESRCH` whatever the payload.
fn build_domctl(
    state: &mut SimState,
    iface: &Interface,
    mem: &dyn GuestMemory,
    addr: u64,
    mut op: XenDomctlView,
) -> Result<u64, Errno> {
    let domid = op.domain;
    state.domain(domid)?;
    match op.cmd {
        XEN_DOMCTL_set_address_size => {
            let a: XenDomctlAddressSize = payload(op.union_bytes());
            state.set_address_size(domid, a.size)?;
        }
        XEN_DOMCTL_get_address_size => {
            let size = state.address_size(domid)?;
            set_payload(op.union_bytes_mut(), &XenDomctlAddressSize { size });
            put_domctl(iface, mem, addr, op)?;
        }
        XEN_DOMCTL_setvcpucontext => {
            let v: XenDomctlSetVcpucontextView = payload(op.union_bytes());
            if v.ctxt == 0 {
                state.set_vcpu_context(domid, v.vcpu, None)?;
            } else {
                let c: VcpuGuestContext = read(mem, v.ctxt)?;
                state.set_vcpu_context(domid, v.vcpu, Some(&c))?;
            }
        }
        XEN_DOMCTL_getvcpucontext => {
            let v: XenDomctlSetVcpucontextView = payload(op.union_bytes());
            let c = state.vcpu_context(domid, v.vcpu)?;
            mem.write(v.ctxt, c.as_bytes())?;
            put_domctl(iface, mem, addr, op)?;
        }
        XEN_DOMCTL_hypercall_init => {
            let h: XenDomctlHypercallInit = payload(op.union_bytes());
            state.hypercall_init(domid, h.gmfn)?;
        }
        XEN_DOMCTL_settscinfo => {
            let t: XenDomctlTscInfo = payload(op.union_bytes());
            state.set_tsc_info(domid, &t)?;
        }
        XEN_DOMCTL_gettscinfo => {
            let t = state.tsc_info(domid)?;
            set_payload(op.union_bytes_mut(), &t);
            put_domctl(iface, mem, addr, op)?;
        }
        XEN_DOMCTL_gethvmcontext => {
            let mut h: XenDomctlSetHvmcontextView = payload(op.union_bytes());
            let blob = state.hvm_context(domid)?;
            let need = u32::try_from(blob.len()).map_err(|_| Errno::ENOMEM)?;
            let result = if h.buffer == 0 {
                Ok(())
            } else if h.size < need {
                Err(Errno::ENOSPC)
            } else {
                mem.write(h.buffer, &blob)
            };
            // Xen copies the size back whatever happened.
            h.size = need;
            set_payload(op.union_bytes_mut(), &h);
            put_domctl(iface, mem, addr, op)?;
            result?;
        }
        XEN_DOMCTL_sethvmcontext => {
            let h: XenDomctlSetHvmcontextView = payload(op.union_bytes());
            // Xen checks the domain before it copies the blob.
            let d = state.domain(domid)?;
            if domid == SIM_DOM0 || !d.is_hvm() {
                return Err(Errno::EINVAL);
            }
            let len = u64::from(h.size);
            if !mem.check(h.buffer, len) {
                return Err(Errno::EFAULT);
            }
            let mut blob = vec![0u8; usize::try_from(len).map_err(|_| Errno::ENOMEM)?];
            mem.read(h.buffer, &mut blob)?;
            state.set_hvm_context(domid, &blob)?;
        }
        XEN_DOMCTL_get_cpu_policy => {
            let mut h: XenDomctlSetCpuPolicyView = payload(op.union_bytes());
            let leaves = state.cpu_policy(domid)?;
            let need = u32::try_from(leaves.len()).map_err(|_| Errno::ENOMEM)?;
            // Null buffers ask for the most a policy may hold; a short one is ENOBUFS.
            let result = if h.leaves == 0 {
                h.nr_leaves = super::build::SIM_CPUID_MAX_LEAVES;
                Ok(())
            } else if h.nr_leaves < need {
                Err(Errno::ENOBUFS)
            } else {
                h.nr_leaves = need;
                mem.write(h.leaves, leaves.as_bytes())
            };
            h.nr_msrs = if h.msrs == 0 {
                super::build::SIM_MSR_MAX_ENTRIES
            } else {
                0
            };
            result?;
            set_payload(op.union_bytes_mut(), &h);
            put_domctl(iface, mem, addr, op)?;
        }
        XEN_DOMCTL_set_cpu_policy => {
            let mut h: XenDomctlSetCpuPolicyView = payload(op.union_bytes());
            if h.nr_leaves > super::build::SIM_CPUID_MAX_LEAVES
                || h.nr_msrs > super::build::SIM_MSR_MAX_ENTRIES
            {
                return Err(Errno::E2BIG);
            }
            let n = h.nr_leaves as usize;
            let mut leaves = vec![XenCpuidLeaf::default(); n];
            if n > 0 {
                mem.read(h.leaves, leaves.as_mut_bytes())?;
            }
            if let Err((errno, leaf)) = state.set_cpu_policy(domid, &leaves) {
                // Xen copies the audit's verdict back.
                if let Some(l) = leaf {
                    h.err_leaf = l.leaf;
                    h.err_subleaf = l.subleaf;
                    set_payload(op.union_bytes_mut(), &h);
                    put_domctl(iface, mem, addr, op)?;
                }
                return Err(errno);
            }
        }
        XEN_DOMCTL_set_paging_mempool_size => {
            let p: XenDomctlPagingMempool = payload(op.union_bytes());
            state.set_paging_mempool_size(domid, p.size)?;
        }
        _ => {
            let size = state.paging_mempool_size(domid)?;
            set_payload(op.union_bytes_mut(), &XenDomctlPagingMempool { size });
            put_domctl(iface, mem, addr, op)?;
        }
    }
    Ok(0)
}

/// `hvm_op`: `HVMOP_set_param` and `HVMOP_get_param`.
fn hvm_op(
    state: &mut SimState,
    iface: &Interface,
    mem: &dyn GuestMemory,
    cmd: u64,
    arg: u64,
) -> Result<u64, Errno> {
    match cmd {
        HVMOP_set_param => {
            let p: XenHvmParam = read(mem, arg)?;
            if iface.hvm_param_altp2m_read_only && p.index == HVM_PARAM_ALTP2M {
                // The domain checks first (ESRCH, EINVAL), then `hvm_allow_set_param`.
                state.hvm_param(p.domid, p.index)?;
                return Err(Errno::EEXIST);
            }
            state.set_hvm_param(p.domid, p.index, p.value).map(|()| 0)
        }
        HVMOP_get_param => {
            let mut p: XenHvmParam = read(mem, arg)?;
            p.value = state.hvm_param(p.domid, p.index)?;
            mem.write(arg, p.as_bytes())?;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// `mmuext_op(ops, count, pdone, foreigndom)`: pins and unpins on the page-table owner's
/// behalf; `pdone` (if not null) gets the number done.
fn mmuext_op(state: &mut SimState, mem: &dyn GuestMemory, args: [u64; 5]) -> Result<u64, Errno> {
    let [ops, count, pdone, foreigndom, _] = args;
    let count = count & u64::from(u32::MAX);
    let entry = core::mem::size_of::<MmuextOpView>() as u64;
    if !mem.check(ops, count.saturating_mul(entry)) {
        return Err(Errno::EFAULT);
    }
    let owner = state.pg_owner(u16::try_from(foreigndom & 0xffff).unwrap_or(DOMID_SELF))?;
    let mut done = 0u64;
    let mut rc = Ok(0);
    while done < count {
        let op: MmuextOpView = match read(mem, ops.wrapping_add(done.wrapping_mul(entry))) {
            Ok(op) => op,
            Err(e) => {
                rc = Err(e);
                break;
            }
        };
        let r = match op.cmd {
            MMUEXT_PIN_L1_TABLE..=MMUEXT_PIN_L4_TABLE => {
                state.pin_table(owner, op.cmd - MMUEXT_PIN_L1_TABLE + 1, op.arg1)
            }
            MMUEXT_UNPIN_TABLE => state.pin_table(owner, 0, op.arg1),
            // TLB and cache flushes, LDT and base-pointer changes act on the caller's own
            // vCPUs, which the simulated toolstack does not have.
            5..=20 => Err(Errno::EOPNOTSUPP),
            _ => Err(Errno::ENOSYS),
        };
        if let Err(e) = r {
            rc = Err(e);
            break;
        }
        done += 1;
    }
    if pdone != 0 {
        let done32 = u32::try_from(done).unwrap_or(u32::MAX);
        mem.write(pdone, &done32.to_ne_bytes())?;
    }
    rc
}

/// `XENMEM_set_memory_map`.
fn set_memory_map(state: &mut SimState, mem: &dyn GuestMemory, arg: u64) -> Result<u64, Errno> {
    let m: XenForeignMemoryMapView = read(mem, arg)?;
    if m.nr_entries > SimState::e820_max() {
        return Err(Errno::EINVAL);
    }
    state.domain(SimState::resolve(m.domid))?;
    let entry = core::mem::size_of::<E820Entry>();
    let n = usize::try_from(m.nr_entries).map_err(|_| Errno::EINVAL)?;
    let mut bytes = vec![0u8; n * entry];
    mem.read(m.buffer, &mut bytes)?;
    let map = bytes
        .chunks_exact(entry)
        .filter_map(|c| E820Entry::read_from_bytes(c).ok())
        .collect();
    state.set_memory_map(m.domid, map).map(|()| 0)
}
