//! ELF kernel images and their Xen notes (`ElfKernel::parse`, `ElfKernel::layout`). Mode 0
//! takes the bytes as an ELF image; mode 1 puts them in a small Xen kernel's PT_NOTE segment,
//! mode 2 in its SHT_NOTE section (no PT_NOTE), mode 3 breaks that kernel's headers where the
//! fuzzer says (kernel_common's input scheme). Parsing gives an error or segments that lie in
//! the image and do not overlap; a layout that succeeds puts the entry inside the kernel.

#![no_main]

mod kernel_common;
#[path = "../../toolstack/tests/kernel_fixture/mod.rs"]
mod kernel_fixture;

use libfuzzer_sys::fuzz_target;
use toolstack::build::kernel::{ElfKernel, GuestKind};

#[global_allocator]
static ALLOC: kernel_common::Bounded = kernel_common::Bounded;

fuzz_target!(|data: &[u8]| {
    let Some(input) = kernel_common::Input::parse(data) else {
        return;
    };
    let image = match input.mode % 4 {
        0 => input.rest.to_vec(),
        1 => kernel_common::small_kernel()
            .with_notes(input.rest.to_vec())
            .bytes(),
        2 => {
            let mut k = kernel_common::small_kernel().notes_in_section();
            k.note_section = Some(input.rest.to_vec());
            k.bytes()
        }
        _ => {
            let mut k = kernel_common::small_kernel().bytes();
            input.apply(&mut k);
            k
        }
    };
    let Ok(elf) = ElfKernel::parse(&image, &kernel_common::limits()) else {
        return;
    };
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for seg in elf.segments() {
        assert!(seg.offset() + seg.filesz() <= image.len() as u64);
        assert!(seg.filesz() <= seg.memsz());
        if seg.memsz() > 0 {
            ranges.push((seg.paddr(), seg.paddr_end()));
        }
    }
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlap {ranges:x?}");
    }
    assert!(elf.pstart() <= elf.pend());
    for kind in [GuestKind::Pv, GuestKind::Pvh] {
        if let Ok(l) = elf.layout(kind) {
            assert!(l.virt_kstart <= l.entry && l.entry <= l.virt_kend, "{l:?}");
        }
    }
});
