//! Smoke tests of the real-Xen harness (`scripts/xen-vm-test`): they pass only inside the dom0
//! the harness boots, and prove that the hypervisor, the privcmd driver, xenstored and the `xl`
//! toolstack are there for the real-Xen tests. Built only with the `vm-tests` feature.

use std::path::Path;
use std::process::Command;

/// Runs a dom0 tool and returns its stdout, failing the test with its stderr if it fails.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (not in the Xen test VM?)"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tool output is UTF-8")
}

#[test]
fn harness_sets_rxen_vm() {
    assert_eq!(std::env::var("RXEN_VM").as_deref(), Ok("1"));
}

#[test]
fn privcmd_device_exists() {
    for dev in ["/dev/xen/privcmd", "/dev/xen/evtchn", "/dev/xen/gntdev", "/proc/xen/capabilities"] {
        assert!(Path::new(dev).exists(), "{dev} is missing");
    }
    // We are the control domain.
    let caps = std::fs::read_to_string("/proc/xen/capabilities").expect("read capabilities");
    assert!(caps.contains("control_d"), "not dom0: capabilities {caps:?}");
}

#[test]
fn xl_info_reports_xen_4_17() {
    let info = run("xl", &["info"]);
    let field = |name: &str| {
        info.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("xl info has no {name}:\n{info}"))
    };
    let version = field("xen_version");
    assert!(version.starts_with("4.17."), "xen_version {version}");
    assert_eq!(field("xen_major"), "4");
    assert_eq!(field("xen_minor"), "17");
    let total: u64 = field("total_memory").parse().expect("total_memory is a number");
    assert!(total >= 1024, "total_memory {total} MiB");
}

#[test]
fn xenstore_knows_dom0() {
    assert_eq!(run("xenstore-read", &["domid"]).trim(), "0");
    assert_eq!(run("xenstore-read", &["/local/domain/0/name"]).trim(), "Domain-0");
    let ls = run("xenstore-ls", &["/local/domain/0"]);
    assert!(ls.contains("name = \"Domain-0\""), "xenstore-ls /local/domain/0:\n{ls}");
}

#[test]
fn xl_list_shows_domain0() {
    let list = run("xl", &["list"]);
    let dom0 = list
        .lines()
        .find(|l| l.split_whitespace().next() == Some("Domain-0"))
        .unwrap_or_else(|| panic!("no Domain-0 in xl list:\n{list}"));
    let cols: Vec<&str> = dom0.split_whitespace().collect();
    assert_eq!(cols.get(1), Some(&"0"), "Domain-0 id: {dom0}");
}
