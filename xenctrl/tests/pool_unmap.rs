//! Dropping a pool unmaps its memory: its chunk and its large buffers are gone from the
//! process's address space. Alone in its binary, so no other test maps memory meanwhile.

use xenctrl::{BufferPool, MAX_POOLED_PAGES, PAGE_SIZE};

fn mapped(addr: u64) -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .expect("read /proc/self/maps")
        .lines()
        .filter_map(|l| l.split_once(' ')?.0.split_once('-'))
        .filter_map(|(lo, hi)| {
            Some((
                u64::from_str_radix(lo, 16).ok()?,
                u64::from_str_radix(hi, 16).ok()?,
            ))
        })
        .any(|(lo, hi)| (lo..hi).contains(&addr))
}

#[test]
fn a_pool_unmaps_what_it_mapped() {
    let pool = BufferPool::anonymous();
    let small = pool.alloc::<u64>().unwrap().addr();
    let big = pool
        .alloc_slice::<u8>(MAX_POOLED_PAGES * PAGE_SIZE + 1)
        .unwrap();
    let large = big.addr();
    assert!(mapped(small) && mapped(large));
    drop(big);
    assert!(!mapped(large), "a freed large buffer is unmapped");
    assert!(mapped(small), "the chunk stays while the pool lives");
    drop(pool);
    assert!(!mapped(small), "the chunk is unmapped with its pool");
}
