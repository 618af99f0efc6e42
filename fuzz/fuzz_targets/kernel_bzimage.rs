//! Kernel files through the whole loader (`KernelImage::load`): the format is identified, a
//! bzImage's setup header read, its payload unpacked and the ELF image parsed. Mode 0 takes the
//! bytes as a kernel file; the other modes build a bzImage from header fields the fuzzer picks
//! around a small Xen kernel compressed with the codec it picks, then break the bytes it says
//! (kernel_common's input scheme). A load gives an error, or a kernel whose segments lie in
//! its image and whose layouts, when they succeed, put the entry inside the kernel; nothing
//! allocates more than kernel_common::MAX_ALLOC.

#![no_main]

mod kernel_common;
#[path = "../../toolstack/tests/kernel_fixture/mod.rs"]
mod kernel_fixture;

use kernel_fixture::{bzimage, payload, BzParams, CODECS};
use libfuzzer_sys::fuzz_target;
use toolstack::build::kernel::{GuestKind, KernelImage};

#[global_allocator]
static ALLOC: kernel_common::Bounded = kernel_common::Bounded;

fn check(image: &KernelImage) {
    for (seg, data) in image.segments() {
        assert_eq!(data.len() as u64, seg.filesz());
        assert!(seg.filesz() <= seg.memsz());
    }
    for kind in [GuestKind::Pv, GuestKind::Pvh] {
        if let Ok(l) = image.layout(kind) {
            assert!(l.virt_kstart <= l.entry && l.entry <= l.virt_kend, "{l:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = kernel_common::Input::parse(data) else {
        return;
    };
    let file = if input.mode % 2 == 0 {
        input.rest.to_vec()
    } else {
        // [setup_sects][protocol u16][payload_offset u16][codec][extra note bytes...]
        let Some((head, extra)) = input.rest.split_at_checked(6) else {
            return;
        };
        let params = BzParams {
            setup_sects: head[0],
            protocol: u16::from_le_bytes([head[1], head[2]]),
            payload_offset: u32::from(u16::from_le_bytes([head[3], head[4]]) % 4096),
        };
        let mut elf = kernel_common::small_kernel();
        elf.segments[0].data.extend_from_slice(extra);
        elf.segments[0].memsz += extra.len() as u64;
        let elf = elf.bytes();
        let body = match head[5] as usize % (CODECS.len() + 1) {
            0 => elf,
            i => payload(CODECS[i - 1].0, &elf),
        };
        let mut file = bzimage(&body, params);
        input.apply(&mut file);
        file
    };
    if let Ok(loaded) = KernelImage::load(file, &kernel_common::limits(), None) {
        check(&loaded.image);
    }
});
