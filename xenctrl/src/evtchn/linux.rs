//! Linux's `/dev/xen/evtchn` driver (`drivers/xen/evtchn.c`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::errno::Errno;
use zerocopy::IntoBytes;

use super::Device;
use crate::abi::DomId;
use crate::error::{Error, Result};

/// Path of the event-channel device.
pub const EVTCHN_PATH: &str = "/dev/xen/evtchn";

/// The raw ioctl interface (`include/uapi/xen/evtchn.h`): every request is
/// `_IOC(_IOC_NONE, 'E', nr, sizeof(argument))`, so the codes are spelled out and issued with
/// nix's `*_bad` macros, which encode no direction of their own.
mod ioctls {
    /// `struct ioctl_evtchn_bind_virq`.
    #[repr(C)]
    pub(super) struct BindVirq {
        pub virq: u32,
    }

    /// `struct ioctl_evtchn_bind_interdomain`.
    #[repr(C)]
    pub(super) struct BindInterdomain {
        pub remote_domain: u32,
        pub remote_port: u32,
    }

    /// `struct ioctl_evtchn_bind_unbound_port`.
    #[repr(C)]
    pub(super) struct BindUnboundPort {
        pub remote_domain: u32,
    }

    /// `struct ioctl_evtchn_unbind` and `struct ioctl_evtchn_notify`: one port.
    #[repr(C)]
    pub(super) struct PortArg {
        pub port: u32,
    }

    /// `struct ioctl_evtchn_restrict_domid`.
    #[repr(C)]
    pub(super) struct RestrictDomid {
        pub domid: u16,
    }

    static_assertions::assert_eq_size!(BindVirq, [u8; 4]);
    static_assertions::assert_eq_size!(BindInterdomain, [u8; 8]);
    static_assertions::assert_eq_size!(BindUnboundPort, [u8; 4]);
    static_assertions::assert_eq_size!(PortArg, [u8; 4]);
    static_assertions::assert_eq_size!(RestrictDomid, [u8; 2]);

    /// `IOCTL_EVTCHN_BIND_VIRQ`: `_IOC(_IOC_NONE, 'E', 0, 4)`.
    pub(super) const IOCTL_EVTCHN_BIND_VIRQ: libc::c_ulong = 0x0004_4500;
    /// `IOCTL_EVTCHN_BIND_INTERDOMAIN`: `_IOC(_IOC_NONE, 'E', 1, 8)`.
    pub(super) const IOCTL_EVTCHN_BIND_INTERDOMAIN: libc::c_ulong = 0x0008_4501;
    /// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`: `_IOC(_IOC_NONE, 'E', 2, 4)`.
    pub(super) const IOCTL_EVTCHN_BIND_UNBOUND_PORT: libc::c_ulong = 0x0004_4502;
    /// `IOCTL_EVTCHN_UNBIND`: `_IOC(_IOC_NONE, 'E', 3, 4)`.
    pub(super) const IOCTL_EVTCHN_UNBIND: libc::c_ulong = 0x0004_4503;
    /// `IOCTL_EVTCHN_NOTIFY`: `_IOC(_IOC_NONE, 'E', 4, 4)`.
    pub(super) const IOCTL_EVTCHN_NOTIFY: libc::c_ulong = 0x0004_4504;
    /// `IOCTL_EVTCHN_RESET`: `_IOC(_IOC_NONE, 'E', 5, 0)`.
    pub(super) const IOCTL_EVTCHN_RESET: libc::c_ulong = 0x0000_4505;
    /// `IOCTL_EVTCHN_RESTRICT_DOMID`: `_IOC(_IOC_NONE, 'E', 6, 2)` (Linux 4.8+).
    pub(super) const IOCTL_EVTCHN_RESTRICT_DOMID: libc::c_ulong = 0x0002_4506;

    nix::ioctl_write_ptr_bad!(
        /// Bind a virtual IRQ; the result is the new port.
        bind_virq,
        IOCTL_EVTCHN_BIND_VIRQ,
        BindVirq
    );
    nix::ioctl_write_ptr_bad!(
        /// Bind to a remote domain's unbound port; the result is the new local port.
        bind_interdomain,
        IOCTL_EVTCHN_BIND_INTERDOMAIN,
        BindInterdomain
    );
    nix::ioctl_write_ptr_bad!(
        /// Allocate an unbound port for a remote domain; the result is the new port.
        bind_unbound_port,
        IOCTL_EVTCHN_BIND_UNBOUND_PORT,
        BindUnboundPort
    );
    nix::ioctl_write_ptr_bad!(
        /// Unbind (close) a port of this file.
        unbind,
        IOCTL_EVTCHN_UNBIND,
        PortArg
    );
    nix::ioctl_write_ptr_bad!(
        /// Notify the other end of a port of this file.
        notify,
        IOCTL_EVTCHN_NOTIFY,
        PortArg
    );
    nix::ioctl_none_bad!(
        /// Empty this file's ring of fired ports and clear its overflow.
        reset,
        IOCTL_EVTCHN_RESET
    );
    nix::ioctl_write_ptr_bad!(
        /// Restrict this file to binding one domain's ports.
        restrict_domid,
        IOCTL_EVTCHN_RESTRICT_DOMID,
        RestrictDomid
    );

    #[cfg(test)]
    #[test]
    fn request_codes_match_ioc_encoding() {
        use std::mem::size_of;
        // _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr, dir NONE = 0.
        let ioc = |nr: libc::c_ulong, size: usize| {
            ((size as libc::c_ulong) << 16) | (libc::c_ulong::from(b'E') << 8) | nr
        };
        assert_eq!(ioc(0, size_of::<BindVirq>()), IOCTL_EVTCHN_BIND_VIRQ);
        assert_eq!(
            ioc(1, size_of::<BindInterdomain>()),
            IOCTL_EVTCHN_BIND_INTERDOMAIN
        );
        assert_eq!(
            ioc(2, size_of::<BindUnboundPort>()),
            IOCTL_EVTCHN_BIND_UNBOUND_PORT
        );
        assert_eq!(ioc(3, size_of::<PortArg>()), IOCTL_EVTCHN_UNBIND);
        assert_eq!(ioc(4, size_of::<PortArg>()), IOCTL_EVTCHN_NOTIFY);
        assert_eq!(ioc(5, 0), IOCTL_EVTCHN_RESET);
        assert_eq!(
            ioc(6, size_of::<RestrictDomid>()),
            IOCTL_EVTCHN_RESTRICT_DOMID
        );
    }
}

/// An open `/dev/xen/evtchn`.
#[derive(Debug)]
pub(crate) struct LinuxEvtchn {
    file: File,
}

/// A port number the driver returned as an ioctl result (always non-negative on success).
fn port_from(rc: libc::c_int) -> Result<u32, Errno> {
    u32::try_from(rc).map_err(|_| Errno::EINVAL)
}

impl LinuxEvtchn {
    /// Open the device read-write, close-on-exec (std's default) and non-blocking.
    pub(crate) fn open() -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(EVTCHN_PATH)
            .map_err(|source| Error::Open {
                path: EVTCHN_PATH,
                source,
            })?;
        Ok(LinuxEvtchn { file })
    }
}

impl Device for LinuxEvtchn {
    fn bind_interdomain(&self, remote: DomId, remote_port: u32) -> Result<u32, Errno> {
        let arg = ioctls::BindInterdomain {
            remote_domain: u32::from(remote),
            remote_port,
        };
        // SAFETY: the fd is an open /dev/xen/evtchn owned by `self`; the request code encodes
        // the size of `BindInterdomain`, which the driver copies in and does not keep.
        port_from(unsafe { ioctls::bind_interdomain(self.file.as_raw_fd(), &arg) }?)
    }

    fn bind_unbound(&self, remote: DomId) -> Result<u32, Errno> {
        let arg = ioctls::BindUnboundPort {
            remote_domain: u32::from(remote),
        };
        // SAFETY: as above, with `BindUnboundPort`.
        port_from(unsafe { ioctls::bind_unbound_port(self.file.as_raw_fd(), &arg) }?)
    }

    fn bind_virq(&self, virq: u32) -> Result<u32, Errno> {
        let arg = ioctls::BindVirq { virq };
        // SAFETY: as above, with `BindVirq`.
        port_from(unsafe { ioctls::bind_virq(self.file.as_raw_fd(), &arg) }?)
    }

    fn unbind(&self, port: u32) -> Result<(), Errno> {
        let arg = ioctls::PortArg { port };
        // SAFETY: as above, with `PortArg`.
        unsafe { ioctls::unbind(self.file.as_raw_fd(), &arg) }.map(drop)
    }

    fn notify(&self, port: u32) -> Result<(), Errno> {
        let arg = ioctls::PortArg { port };
        // SAFETY: as above, with `PortArg`.
        unsafe { ioctls::notify(self.file.as_raw_fd(), &arg) }.map(drop)
    }

    fn restrict(&self, domid: DomId) -> Result<(), Errno> {
        let arg = ioctls::RestrictDomid { domid };
        // SAFETY: as above, with `RestrictDomid`.
        unsafe { ioctls::restrict_domid(self.file.as_raw_fd(), &arg) }.map(drop)
    }

    fn reset(&self) -> Result<(), Errno> {
        // SAFETY: the fd is an open /dev/xen/evtchn owned by `self`; the request takes no
        // argument.
        unsafe { ioctls::reset(self.file.as_raw_fd()) }.map(drop)
    }

    fn unmask(&self, ports: &[u32]) -> Result<(), Errno> {
        let bytes = ports.as_bytes();
        let mut at = 0;
        // The driver takes at most a page of ports per write, and always all it takes.
        while at < bytes.len() {
            match (&self.file).write(&bytes[at..]) {
                Ok(0) => return Err(Errno::EIO),
                Ok(n) => at += n,
                Err(e) => return Err(errno_of(&e)),
            }
        }
        Ok(())
    }

    fn read(&self, ports: &mut [u32]) -> Result<usize, Errno> {
        let bytes = ports.as_mut_bytes();
        match (&self.file).read(bytes) {
            Ok(n) => Ok(n / std::mem::size_of::<u32>()),
            Err(e) => Err(errno_of(&e)),
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

fn errno_of(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}
