//! `create` with a kernel on the simulated host, end to end: a Debian-shaped kernel (xz in a
//! bzImage) and an initrd built into a PV and a PVH guest, checked structurally through the
//! public APIs (`boot_check`), each builder step broken on purpose and caught, `rxl create`
//! booting (or with `-p` not), its timings, the kernel cache, and crash recovery at every
//! hook of a kernel build.

// Test sizes are small: they fit every integer type.
#![allow(clippy::cast_possible_truncation)]

mod boot_check;
mod common;
mod kernel_fixture;

use std::path::PathBuf;
use std::process::Stdio;

use boot_check::{check, Expect};
use common::{stderr, wait, Hooks, SimHost};
use toolstack::build::exec::{Break, Breaks};
use toolstack::config::{DomainConfig, DomainType, TscMode};
use toolstack::create::{self, CreateOptions, KernelSource, Step};
use toolstack::hooks::HOOK_SOCKET_ENV;
use toolstack::lock::Locked;
use toolstack::{Error, Host};

const MEMORY_MIB: u64 = 32;
const CMDLINE: &str = "console=hvc0 rxen.test=1";

/// A kernel and an initrd in the host's directory, and what the guest should hold.
struct Inputs {
    kernel: PathBuf,
    initrd: PathBuf,
    expect: Expect,
}

fn inputs(host: &SimHost) -> Inputs {
    let (bz, elf) = kernel_fixture::debian_like_bzimage("xz");
    let initrd = kernel_fixture::pattern(10_000, 5);
    let k = host.path().join("vmlinuz");
    let i = host.path().join("initrd.img");
    std::fs::write(&k, bz).expect("kernel");
    std::fs::write(&i, &initrd).expect("initrd");
    Inputs {
        kernel: k,
        initrd: i,
        expect: Expect {
            elf,
            cmdline: CMDLINE.into(),
            initrd: Some(initrd),
            memory_mib: MEMORY_MIB,
            vcpus: 2,
        },
    }
}

fn config(name: &str, kind: DomainType, inputs: &Inputs) -> DomainConfig {
    let mut c = DomainConfig::new(name);
    c.domain_type = kind;
    c.memory_kib = MEMORY_MIB * 1024;
    c.maxmem_kib = c.memory_kib;
    c.vcpus = 2;
    c.kernel = Some(inputs.kernel.display().to_string());
    c.ramdisk = Some(inputs.initrd.display().to_string());
    c.extra = Some(CMDLINE.into());
    if kind == DomainType::Pvh {
        c.tsc_mode = TscMode::Native;
    }
    c
}

fn cfg_file(host: &SimHost, name: &str, kind: &str, inputs: &Inputs) -> String {
    let p = host.path().join(format!("{name}.cfg"));
    std::fs::write(
        &p,
        format!(
            "name = \"{name}\"\ntype = \"{kind}\"\nmemory = {MEMORY_MIB}\nvcpus = 2\n\
             kernel = \"{}\"\nramdisk = \"{}\"\nextra = \"{CMDLINE}\"\ntsc_mode = \"native\"\n",
            inputs.kernel.display(),
            inputs.initrd.display()
        ),
    )
    .expect("cfg");
    p.display().to_string()
}

/// Creates `config` with `breaks`, paused, in this process; its steps.
fn build(
    host: &Host,
    root: &mut Locked<'_, toolstack::lock::level::Unlocked>,
    config: &DomainConfig,
    breaks: Breaks,
) -> (create::Created, Vec<Step>) {
    let mut steps = Vec::new();
    let opts = CreateOptions {
        paused: true,
        breaks,
    };
    let c = create::create_with(host, root, config, &opts, &mut |s| steps.push(s))
        .unwrap_or_else(|e| panic!("create {}: {e:?}", config.name));
    (c, steps)
}

fn clean_build_passes(kind: DomainType) {
    let sim = SimHost::new(1024, 256);
    let inputs = inputs(&sim);
    let host = sim.lib();
    let mut root = Locked::root();
    let (c, steps) = build(&host, &mut root, &config("g", kind, &inputs), Breaks::NONE);
    let faults = check(&host, c.domid, &inputs.expect);
    assert!(faults.0.is_empty(), "{kind:?}: {:#?}", faults.0);
    assert!(c.booted && !c.unpaused && c.introduced);
    assert!(host.xc.domain_info(c.domid).expect("info").paused());
    // Every stage reported, in order.
    let names: Vec<&str> = steps
        .iter()
        .filter_map(|s| match s {
            Step::KernelLoaded { .. } => Some("kernel"),
            Step::Created(_) => Some("created"),
            Step::Claimed { .. } => Some("claimed"),
            Step::Loaded { .. } => Some("loaded"),
            Step::PageTables { .. } => Some("page-tables"),
            Step::Vcpus => Some("vcpus"),
            Step::Grants => Some("grants"),
            Step::Xenstore => Some("xenstore"),
            Step::Stored => Some("stored"),
            Step::Unpaused => Some("unpaused"),
            Step::Populating { .. } => None,
        })
        .collect();
    assert_eq!(
        names,
        [
            "kernel",
            "created",
            "claimed",
            "loaded",
            "page-tables",
            "vcpus",
            "grants",
            "xenstore",
            "stored"
        ]
    );
    // The claim was the build's pages, and populate gave them all.
    let claimed = steps.iter().find_map(|s| match s {
        Step::Claimed { pages } => Some(*pages),
        _ => None,
    });
    let populated = steps.iter().rev().find_map(|s| match s {
        Step::Populating { done, total } => Some((*done, *total)),
        _ => None,
    });
    assert_eq!(populated, claimed.map(|p| (p, p)));
    let t = c.timings;
    assert!(t.total >= t.populate + t.load + t.page_tables, "{t}");
}

#[test]
fn a_pv_guest_is_built_whole() {
    clean_build_passes(DomainType::Pv);
}

#[test]
fn a_pvh_guest_is_built_whole() {
    clean_build_passes(DomainType::Pvh);
}

/// Each break that applies to `kind` makes the check of its name fail; the build itself
/// succeeds (no hypercall refuses a wrong value), so only the check can tell.
fn every_break_is_caught(kind: DomainType) {
    let sim = SimHost::new(2048, 256);
    let inputs = inputs(&sim);
    let host = sim.lib();
    let mut root = Locked::root();
    let pvh = kind == DomainType::Pvh;
    let mut tried = 0;
    for b in Break::ALL.into_iter().filter(|b| b.applies_to(pvh)) {
        let name = format!("broken-{}", b.name());
        let breaks = Breaks::NONE.with(b);
        let (c, _) = build(&host, &mut root, &config(&name, kind, &inputs), breaks);
        let faults = check(&host, c.domid, &inputs.expect);
        assert!(
            faults.names().contains(&b.name()),
            "{kind:?}: break {:?} was not caught by check {:?}; faults: {:#?}",
            b,
            b.name(),
            faults.0
        );
        toolstack::domain::destroy(&host, &mut root, c.domid).expect("destroy");
        tried += 1;
    }
    assert!(tried >= 12, "{tried} breaks");
}

/// Each break that a guest would trip over, built and unpaused: the simulator's structural
/// boot check (on the first unpause) crashes the domain and names the check; a clean build of
/// the same kind boots and its stand-in guest's line reaches the console log.
fn every_visible_break_crashes_the_simulated_boot(kind: DomainType) {
    let sim = SimHost::new(2048, 256);
    let inputs = inputs(&sim);
    let host = sim.lib();
    let mut root = Locked::root();
    let pvh = kind == DomainType::Pvh;
    let run = |root: &mut Locked<'_, toolstack::lock::level::Unlocked>, name: &str, b: Breaks| {
        let opts = CreateOptions {
            paused: false,
            breaks: b,
        };
        let c = create::create_with(
            &host,
            root,
            &config(name, kind, &inputs),
            &opts,
            &mut |_| {},
        )
        .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
        assert!(c.unpaused, "{name}");
        let report = host
            .xc
            .sim_boot_report(c.domid)
            .expect("boot report")
            .expect("the simulator checked the boot");
        (c.domid, report)
    };
    let (d, report) = run(&mut root, "clean", Breaks::NONE);
    assert!(report.booted(), "{kind:?}: {report}");
    let log = sim.path().join(format!("console/{d}.log"));
    let mut line = String::new();
    for _ in 0..250 {
        line = std::fs::read_to_string(&log).unwrap_or_default();
        if line.contains("rxen-sim: Linux stand-in booted") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        line.contains("rxen-sim: Linux stand-in booted") && line.contains("console=hvc0"),
        "{kind:?}: console log {log:?}: {line:?}"
    );
    let mut caught = Vec::new();
    for b in Break::ALL.into_iter().filter(|b| b.applies_to(pvh)) {
        let (d, report) = run(
            &mut root,
            &format!("crash-{}", b.name()),
            Breaks::NONE.with(b),
        );
        if let Some(f) = report.failure() {
            caught.push(b.name());
            let info = host.xc.domain_info(d).expect("info");
            assert_eq!(
                info.shutdown_reason(),
                Some(xenctrl::abi::ShutdownReason::CRASH),
                "{kind:?} {}: {}",
                b.name(),
                info.state_string()
            );
            eprintln!("{kind:?} break {}: {f:?}", b.name());
        }
        toolstack::domain::destroy(&host, &mut root, d).expect("destroy");
    }
    // What a guest cannot see is not the boot check's to catch: the kernel's bytes and the
    // command line (the stand-in executes nothing), and xenstore keys for the backends.
    // Nor the CPUID topology: the stand-in asks no CPUID.
    let invisible = [
        "kernel",
        "cmdline",
        "store-ring-ref",
        "console-ring-ref",
        "cpuid-topology",
    ];
    let want: Vec<&str> = Break::ALL
        .into_iter()
        .filter(|b| b.applies_to(pvh) && !invisible.contains(&b.name()))
        .map(Break::name)
        .collect();
    assert_eq!(caught, want, "{kind:?}: breaks the simulated boot caught");
}

#[test]
fn a_broken_pv_build_crashes_the_simulated_boot() {
    every_visible_break_crashes_the_simulated_boot(DomainType::Pv);
}

#[test]
fn a_broken_pvh_build_crashes_the_simulated_boot() {
    every_visible_break_crashes_the_simulated_boot(DomainType::Pvh);
}

#[test]
fn every_pv_builder_step_broken_on_purpose_is_caught() {
    every_break_is_caught(DomainType::Pv);
}

#[test]
fn every_pvh_builder_step_broken_on_purpose_is_caught() {
    every_break_is_caught(DomainType::Pvh);
}

#[test]
fn rxl_create_boots_unless_paused_and_reports_its_timings() {
    let sim = SimHost::new(1024, 256);
    let inputs = inputs(&sim);
    for (kind, name) in [("pv", "run-pv"), ("pvh", "run-pvh")] {
        let cfg = cfg_file(&sim, name, kind, &inputs);
        let out = sim.rxl(&["create", "-e", "-v", &cfg]);
        assert!(out.status.success(), "{}", stderr(&out));
        let err = stderr(&out);
        for line in [
            "kernel loaded",
            "populating memory",
            "page tables and start info written",
            "grant table seeded",
            "unpaused",
            "rxl: create timings: total ",
            "decompress ",
            "populate ",
            "page-tables ",
            "xenstore ",
            "created, running.",
        ] {
            assert!(err.contains(line), "{kind}: {line:?} missing in\n{err}");
        }
        let d = sim.domid(name).expect("listed");
        let host = sim.lib();
        assert!(!host.xc.domain_info(d).expect("info").paused(), "{kind}");
    }
    // -p builds and leaves it paused; RXEN_CREATE_TIMINGS prints the breakdown alone.
    let cfg = cfg_file(&sim, "held", "pv", &inputs);
    let out = sim
        .command(&["create", "-e", "-p", &cfg])
        .env("RXEN_CREATE_TIMINGS", "1")
        .output()
        .expect("run");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("rxl: create timings: total "), "{err}");
    assert!(err.contains("created, paused."), "{err}");
    assert!(!err.contains("kernel loaded"), "no steps without -v: {err}");
    let d = sim.domid("held").expect("listed");
    let host = sim.lib();
    assert!(host.xc.domain_info(d).expect("info").paused());
    assert!(check(&host, d, &inputs.expect).0.is_empty());
}

#[test]
fn the_second_create_of_a_kernel_takes_it_from_the_cache() {
    let sim = SimHost::new(1024, 256);
    let inputs = inputs(&sim);
    let host = sim.lib();
    let mut root = Locked::root();
    let source = |steps: &[Step]| {
        steps.iter().find_map(|s| match s {
            Step::KernelLoaded { source, .. } => Some(*source),
            _ => None,
        })
    };
    let (_, first) = build(
        &host,
        &mut root,
        &config("c1", DomainType::Pv, &inputs),
        Breaks::NONE,
    );
    let (c2, second) = build(
        &host,
        &mut root,
        &config("c2", DomainType::Pvh, &inputs),
        Breaks::NONE,
    );
    assert_eq!(source(&first), Some(KernelSource::Unpacked));
    assert_eq!(source(&second), Some(KernelSource::Cached));
    assert_eq!(c2.timings.kernel.decompress, std::time::Duration::ZERO);
    let faults = check(&host, c2.domid, &inputs.expect);
    assert!(faults.0.is_empty(), "{:#?}", faults.0);
}

/// `rxl create` with a kernel cache others can write to boots all the same, without the
/// cache (though it holds the kernel), and says why.
#[test]
fn rxl_create_says_when_the_kernel_cache_is_not_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let sim = SimHost::new(1024, 256);
    let inputs = inputs(&sim);
    let cache = sim.lib().kernel_cache.dir().to_owned();
    let create = |name: &str| {
        let cfg = cfg_file(&sim, name, "pv", &inputs);
        let out = sim.rxl(&["create", "-e", "-v", &cfg]);
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        assert!(sim.domid(name).is_some());
        err
    };
    let chmod = |mode| {
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    let first = create("first");
    assert!(!first.contains("warning"), "{first}");
    chmod(0o777);
    let shared = create("shared");
    assert!(
        shared.contains("rxl: warning: the kernel cache ")
            && shared.contains("is writable by its group or by others (mode 777)"),
        "{shared}"
    );
    assert!(
        shared.contains(", unpacked\n"),
        "not from the cache: {shared}"
    );
    chmod(0o755);
    let warm = create("warm");
    assert!(!warm.contains("warning"), "{warm}");
    assert!(warm.contains(", unpacked image from the cache\n"), "{warm}");
}

#[test]
fn rxl_honours_rxen_test_break() {
    let sim = SimHost::new(1024, 256);
    let inputs = inputs(&sim);
    let cfg = cfg_file(&sim, "b", "pv", &inputs);
    let out = sim
        .command(&["create", "-e", "-p", "-q", &cfg])
        .env("RXEN_TEST_BREAK", "rip,grant-store")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let d = sim.domid("b").expect("listed");
    let names = check(&sim.lib(), d, &inputs.expect).names();
    assert!(
        names.contains(&"rip") && names.contains(&"grant-store"),
        "{names:?}"
    );
    // An unknown name is refused before anything is made.
    let cfg = cfg_file(&sim, "b2", "pv", &inputs);
    let out = sim
        .command(&["create", "-e", "-p", &cfg])
        .env("RXEN_TEST_BREAK", "no-such-step")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown build break"),
        "{}",
        stderr(&out)
    );
    assert!(sim.domid("b2").is_none());
}

#[test]
fn a_kernel_that_cannot_be_used_leaves_nothing_behind() {
    let sim = SimHost::new(1024, 256);
    let inputs = inputs(&sim);
    let host = sim.lib();
    let mut root = Locked::root();
    let before = sim.ok(&["info"]);
    // Not a kernel.
    let bad = sim.path().join("garbage");
    std::fs::write(&bad, b"this is not a kernel at all").expect("write");
    let mut c = config("bad", DomainType::Pv, &inputs);
    c.kernel = Some(bad.display().to_string());
    let e = create::create_with(&host, &mut root, &c, &CreateOptions::default(), &mut |_| {})
        .expect_err("garbage kernel");
    assert!(matches!(e, Error::Kernel { .. }), "{e:?}");
    assert!(e.to_string().contains("cannot use the kernel"), "{e}");
    // A missing ramdisk.
    let mut c = config("bad", DomainType::Pv, &inputs);
    c.ramdisk = Some("/nonexistent/initrd".into());
    let e = create::create_with(&host, &mut root, &c, &CreateOptions::default(), &mut |_| {})
        .expect_err("missing ramdisk");
    assert!(
        e.to_string().contains("the ramdisk /nonexistent/initrd"),
        "{e}"
    );
    // Too little memory for the kernel at 16 MiB.
    let mut c = config("bad", DomainType::Pvh, &inputs);
    c.memory_kib = 8 * 1024;
    c.maxmem_kib = c.memory_kib;
    let e = create::create_with(&host, &mut root, &c, &CreateOptions::default(), &mut |_| {})
        .expect_err("too small");
    assert!(matches!(e, Error::Plan { .. }), "{e:?}");
    assert_eq!(sim.list().len(), 1, "only dom0");
    assert_eq!(sim.ok(&["info"]), before);
    assert!(
        std::fs::read_dir(sim.path().join("domains/creating"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "no creation record left"
    );
}

#[test]
fn a_build_that_fails_half_way_is_rolled_back() {
    // A hook failing each build stage in turn: the domain, its memory and its entries go.
    for point in [
        "create:populated",
        "create:loaded",
        "create:vcpus-set",
        "create:before-stored",
        "create:unpaused",
    ] {
        let sim = SimHost::new(1024, 256);
        let inputs = inputs(&sim);
        let idle = sim.ok(&["info"]);
        let cfg = cfg_file(&sim, "half", "pvh", &inputs);
        let hooks = Hooks::new(sim.path());
        let child = sim
            .command(&["create", "-e", &cfg])
            .env(HOOK_SOCKET_ENV, &hooks.path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut h = hooks.accept("create");
        loop {
            let got = h.next().unwrap_or_else(|| panic!("{point} never reached"));
            if got == point {
                h.fail();
                break;
            }
            h.go();
        }
        let out = wait(child, "create");
        assert!(!out.status.success(), "{point}");
        assert!(sim.domid("half").is_none(), "{point}");
        assert_eq!(sim.list().len(), 1, "{point}: only dom0");
        assert_eq!(sim.ok(&["info"]), idle, "{point}: memory back");
        assert!(
            !sim.xenstore_ls("/local/domain").contains("half"),
            "{point}: xenstore entries left"
        );
    }
}

/// Runs `args` with hooks, answers `go` at the first `k` points and kills it at point `k`;
/// the point, or `None` if it finished first.
fn kill_at(host: &SimHost, hooks: &Hooks, args: &[&str], k: usize) -> Option<String> {
    let mut child = host
        .command(args)
        .env(HOOK_SOCKET_ENV, &hooks.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut h = hooks.accept("victim");
    let mut n = 0;
    loop {
        match h.next() {
            None => {
                let out = wait(child, "victim");
                assert!(out.status.success(), "{args:?}: {}", stderr(&out));
                return None;
            }
            Some(point) if n == k => {
                child.kill().expect("kill");
                let _ = child.wait();
                return Some(point);
            }
            Some(_) => {
                n += 1;
                h.go();
            }
        }
    }
}

#[test]
fn a_kernel_build_killed_at_every_step_is_recovered() {
    let sim = SimHost::new(1024, 256);
    let inputs = inputs(&sim);
    let cfg = cfg_file(&sim, "crash", "pv", &inputs);
    let idle = sim.ok(&["info"]);
    let hooks = Hooks::new(sim.path());
    let mut seen = Vec::new();
    for k in 0.. {
        let Some(point) = kill_at(&sim, &hooks, &["create", "-e", "-q", &cfg], k) else {
            let d = sim.domid("crash").expect("created");
            let faults = check(&sim.lib(), d, &inputs.expect).0;
            assert!(faults.is_empty(), "{faults:#?}");
            break;
        };
        seen.push(point.clone());
        let said = stderr(&sim.rxl(&["recover"]));
        assert_eq!(sim.list().len(), 1, "killed at {point}: {said}");
        assert_eq!(
            sim.ok(&["info"]),
            idle,
            "killed at {point}: memory after recovery"
        );
    }
    for p in [
        "create:populated",
        "create:loaded",
        "create:vcpus-set",
        "create:before-stored",
        "create:unpaused",
        "create:complete",
    ] {
        assert!(seen.iter().any(|s| s == p), "{p} not reached: {seen:?}");
    }
}

#[test]
fn a_kernel_with_a_hypercall_page_note_is_built_with_one() {
    // Debian's kernel has no HYPERCALL_PAGE note (so hypercall_init is not called for it);
    // an older kernel's note names a page in its text, which Xen fills.
    let sim = SimHost::new(1024, 256);
    let mut inputs = inputs(&sim);
    let page = kernel_fixture::VIRT_BASE + kernel_fixture::PSTART + 0x1000;
    let notes = [
        kernel_fixture::debian_notes(),
        kernel_fixture::xen(2, &page.to_le_bytes()),
    ]
    .concat();
    let elf = kernel_fixture::ElfBuilder::debian_like()
        .with_notes(notes)
        .bytes();
    std::fs::write(&inputs.kernel, &elf).expect("kernel");
    inputs.expect.elf = elf;
    let host = sim.lib();
    let mut root = Locked::root();
    let (c, _) = build(
        &host,
        &mut root,
        &config("hp", DomainType::Pv, &inputs),
        Breaks::NONE,
    );
    let faults = check(&host, c.domid, &inputs.expect);
    assert!(faults.0.is_empty(), "{:#?}", faults.0);
    // A note outside the kernel is refused before any domain exists.
    let bad = [
        kernel_fixture::debian_notes(),
        kernel_fixture::xen(2, &(kernel_fixture::VIRT_BASE + 0x4000_0000).to_le_bytes()),
    ]
    .concat();
    std::fs::write(
        &inputs.kernel,
        kernel_fixture::ElfBuilder::debian_like()
            .with_notes(bad)
            .bytes(),
    )
    .expect("kernel");
    let e = create::create_with(
        &host,
        &mut root,
        &config("hp2", DomainType::Pv, &inputs),
        &CreateOptions::default(),
        &mut |_| {},
    )
    .expect_err("hypercall page outside the kernel");
    assert!(matches!(e, Error::Plan { .. }), "{e:?}");
    assert_eq!(sim.list().len(), 2, "dom0 and hp");
}

/// The Debian-like kernel with whole zero pages inside a loaded segment (the fourth: one page
/// of pattern, two of zeros, half a page of pattern), as Debian's has (half its 66 MB).
fn kernel_with_zero_pages() -> Vec<u8> {
    use kernel_fixture::{pattern, ElfBuilder, Seg, PSTART, VIRT_BASE};
    let mut b = ElfBuilder::debian_like();
    let mut data = pattern(0x1000, 4);
    data.extend_from_slice(&[0; 0x2000]);
    data.extend_from_slice(&pattern(0x800, 6));
    b.segments[3] = Seg::load(
        b.segments[3].flags,
        PSTART + 0x5000,
        VIRT_BASE + PSTART + 0x5000,
        data,
        0x3800,
    );
    b.bytes()
}

/// Fills every page the newest guest has (PVH: guest frames from 0) with 0xc2, as Xen's debug
/// builds scrub memory: fresh pages are not promised to be zero.
fn dirty_newest_guest(host: &Host, pages: u64) {
    use xenctrl::volatile::ReadWrite;
    let d = host
        .xc
        .domain_list()
        .expect("domains")
        .into_iter()
        .map(|i| i.domid)
        .max()
        .expect("a guest");
    let gfns: Vec<u64> = (0..pages).collect();
    let map = host
        .xc
        .map_foreign_partial::<ReadWrite>(xenctrl::DomainId::new(d), &gfns)
        .expect("map the guest");
    let mut dirtied = 0;
    for i in 0..map.pages() {
        if let Ok(page) = map.page(i) {
            page.fill(0, 4096, 0xc2).expect("fill");
            dirtied += 1;
        }
    }
    assert!(
        dirtied > pages / 2,
        "only {dirtied} of {pages} pages mapped"
    );
}

/// Guest memory that is not zero when the kernel is loaded gets every byte of the kernel's
/// segments written: the bytes of its file, and zeros for the rest, including the zero pages a
/// cache entry leaves out (which the loader clears rather than copies). Built cold (unpacked,
/// its zero pages found while it is stored) and warm (from the cache entry).
#[test]
fn a_kernel_is_loaded_whole_over_dirty_memory_cold_and_warm() {
    let sim = SimHost::new(1024, 256);
    let mut inputs = inputs(&sim);
    let elf = kernel_with_zero_pages();
    let bz = kernel_fixture::bzimage(
        &kernel_fixture::payload("xz", &elf),
        kernel_fixture::BzParams::default(),
    );
    std::fs::write(&inputs.kernel, &bz).expect("kernel");
    inputs.expect.elf = elf;
    let host = sim.lib();
    let hooks = Hooks::new(sim.path());
    for (round, source) in [
        (0, "ELF image, unpacked\n"),
        (1, "ELF image, unpacked image from the cache"),
    ] {
        let name = format!("dirty{round}");
        let cfg = cfg_file(&sim, &name, "pvh", &inputs);
        let child = sim
            .command(&["create", "-p", "-v", &cfg])
            .env(HOOK_SOCKET_ENV, &hooks.path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut h = hooks.accept("builder");
        let mut dirtied = false;
        while let Some(point) = h.next() {
            if point == "create:populated" {
                dirty_newest_guest(&host, MEMORY_MIB * 256);
                dirtied = true;
            }
            h.go();
        }
        let out = wait(child, "builder");
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        assert!(dirtied, "no populated hook: {err}");
        assert!(err.contains(source), "round {round} not {source}: {err}");
        let d = sim.domid(&name).expect("created");
        let faults = check(&host, d, &inputs.expect).0;
        assert!(faults.is_empty(), "{source}: {faults:#?}");
    }
    // The warm round had zero pages inside the segment to leave out.
    let loaded = toolstack::build::kernel::KernelImage::load_file(
        &inputs.kernel,
        &toolstack::build::kernel::ImageLimits::default(),
        Some(&host.kernel_cache),
    )
    .expect("load");
    // Program header 3's p_offset: its zero bytes start 0x1000 into it.
    let at = 64 + 56 * 3 + 8;
    let offset = u64::from_le_bytes(inputs.expect.elf[at..at + 8].try_into().expect("8 bytes"));
    // The whole file pages inside the segment's 0x2000 zero bytes (at least one).
    let zeros = (offset + 0x1000).next_multiple_of(0x1000)..((offset + 0x3000) & !0xfff);
    assert!(!zeros.is_empty());
    assert!(
        loaded
            .image
            .zero_ranges()
            .iter()
            .any(|r| r.start <= zeros.start && zeros.end <= r.end),
        "{zeros:?} not in {:?}",
        loaded.image.zero_ranges()
    );
}
