//! Pinning nests per page, and forked children cannot touch the parent's buffers.
//!
//! These read the kernel's own view (`/proc/self/smaps`), so they would catch a pool that
//! unlocks a page another buffer still uses, the bug libxc's mlock-on-the-stack scheme had.

use std::fs;

use xenctrl::{BufferPool, MemorySource, PAGE_SIZE};

/// Whether the page at `addr` is in a locked mapping, per `/proc/self/smaps`.
fn page_locked(addr: u64) -> bool {
    let smaps = fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((lo, hi)) = range.split_once('-') {
                if let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16))
                {
                    inside = (lo..hi).contains(&addr);
                    continue;
                }
            }
        }
        if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.split_whitespace().any(|f| f == "lo");
            }
        }
    }
    panic!("address {addr:#x} is in no mapping");
}

fn vm_locked_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmLck:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn page_of(addr: u64) -> u64 {
    addr & !(PAGE_SIZE as u64 - 1)
}

/// VmLck is process-wide: tests in this file take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn shared_page_pair(first_freed_first: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = BufferPool::anonymous();
    assert_eq!(pool.source(), MemorySource::LockedAnonymous);
    let a = pool.alloc::<[u8; 256]>().unwrap();
    let b = pool.alloc::<[u8; 256]>().unwrap();
    let page = page_of(a.addr());
    assert_eq!(page, page_of(b.addr()), "two small buffers share a page");
    // A third buffer on another page, to show trim does unlock free pages.
    let other = pool.alloc_slice::<u8>(2 * PAGE_SIZE).unwrap();
    let other_page = page_of(other.addr());
    drop(other);

    pool.trim();
    assert!(page_locked(page), "page in use by two buffers stays locked");
    assert!(!page_locked(other_page), "trim unlocks a page nobody uses");
    let locked_before = vm_locked_kib();

    let (first, second) = if first_freed_first { (a, b) } else { (b, a) };
    drop(first);
    pool.trim();
    assert!(
        page_locked(page),
        "freeing one user must not unlock the survivor's page"
    );
    assert_eq!(vm_locked_kib(), locked_before);

    drop(second);
    pool.trim();
    assert!(
        !page_locked(page),
        "the last user's free lets trim unlock the page"
    );
    assert_eq!(vm_locked_kib(), locked_before - (PAGE_SIZE as u64 / 1024));

    // Landing on a trimmed page locks it again.
    let again = pool.alloc::<[u8; 256]>().unwrap();
    assert!(page_locked(page_of(again.addr())));
}

#[test]
fn shared_page_freed_in_allocation_order() {
    shared_page_pair(true);
}

#[test]
fn shared_page_freed_in_reverse_order() {
    shared_page_pair(false);
}

#[test]
fn forked_child_cannot_corrupt_parent_buffers() {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};

    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = BufferPool::anonymous();
    let mut buf = pool.alloc::<[u8; 64]>().unwrap();
    buf.fill(0xaa);
    let addr = usize::try_from(buf.addr()).unwrap();

    // SAFETY: the child only performs a raw store and `_exit`, both async-signal-safe.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            // The pool's memory is not inherited (MADV_DONTFORK / VM_DONTCOPY): this store
            // must fault rather than land anywhere.
            // SAFETY: deliberately writes the parent's buffer address; in the child it is
            // unmapped, so the kernel kills us with SIGSEGV before anything is written.
            unsafe { (addr as *mut u8).write_volatile(0x55) };
            // SAFETY: `_exit` is async-signal-safe.
            unsafe { libc::_exit(0) };
        }
        ForkResult::Parent { child } => {
            let status = waitpid(child, None).expect("waitpid");
            assert_eq!(
                status,
                WaitStatus::Signaled(child, nix::sys::signal::Signal::SIGSEGV, false),
                "the child must not see the parent's buffer memory"
            );
            assert!(
                buf.iter().all(|&b| b == 0xaa),
                "the parent's buffer is unchanged"
            );
        }
    }
}
