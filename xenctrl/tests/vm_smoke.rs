//! Smoke tests of the real-Xen harness (`scripts/xen-vm-test`): they pass only inside the dom0
//! the harness boots, and prove that the hypervisor, the privcmd driver, xenstored and the `xl`
//! toolstack are there for the real-Xen tests. Built only with the `vm-tests` feature.

mod vm_xl;

use std::path::Path;
use std::process::Command;

/// Runs a dom0 tool and returns its stdout, failing the test with its stderr if it fails.
fn run(program: &str, args: &[&str]) -> String {
    // spawns: the program passed to run
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
    for dev in [
        "/dev/xen/privcmd",
        "/dev/xen/evtchn",
        "/dev/xen/gntdev",
        "/proc/xen/capabilities",
    ] {
        assert!(Path::new(dev).exists(), "{dev} is missing");
    }
    // We are the control domain.
    let caps = std::fs::read_to_string("/proc/xen/capabilities").expect("read capabilities");
    assert!(
        caps.contains("control_d"),
        "not dom0: capabilities {caps:?}"
    );
}

/// The Xen release the harness booted ("4.17", "4.20"), which dom0's init exports.
fn xen_series() -> String {
    std::env::var("RXEN_XEN_SERIES").expect("RXEN_XEN_SERIES is set by the harness's dom0 init")
}

#[test]
fn xl_info_reports_the_release_the_harness_booted() {
    let series = xen_series();
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
    assert!(
        version.starts_with(&format!("{series}.")),
        "xen_version {version}, but the harness booted Xen {series}"
    );
    let (major, minor) = series.split_once('.').expect("series is MAJOR.MINOR");
    assert_eq!(field("xen_major"), major);
    assert_eq!(field("xen_minor"), minor);
    let total: u64 = field("total_memory")
        .parse()
        .expect("total_memory is a number");
    assert!(total >= 1024, "total_memory {total} MiB");
}

/// The probe at open picks the profile of the release that runs, by the interface versions Xen
/// accepts, and that profile lists the release `xl info` names.
#[test]
fn our_probe_picks_the_profile_of_the_running_release() {
    let series = xen_series();
    let (major, minor) = series.split_once('.').expect("series is MAJOR.MINOR");
    let want: (u16, u16) = (major.parse().unwrap(), minor.parse().unwrap());
    let xc = xenctrl::XenCtrl::open().expect("open /dev/xen/privcmd");
    let profile = xc.interface();
    assert!(
        profile.releases.iter().any(|r| r.version == want),
        "Xen {series} runs, but the probe chose the profile for {} (domctl {:#x}, sysctl {:#x})",
        profile.xen,
        profile.domctl,
        profile.sysctl
    );
    let (expected, _) = xenctrl::interface::release(want.0, want.1).expect("a known release");
    assert_eq!(profile.domctl, expected.domctl);
    assert_eq!(profile.sysctl, expected.sysctl);
    let v = xc.version().expect("XENVER_version");
    assert_eq!((v.major, v.minor), want, "{v:?}");
}

#[test]
fn xenstore_knows_dom0() {
    assert_eq!(run("xenstore-read", &["domid"]).trim(), "0");
    assert_eq!(
        run("xenstore-read", &["/local/domain/0/name"]).trim(),
        "Domain-0"
    );
    let ls = run("xenstore-ls", &["/local/domain/0"]);
    assert!(
        ls.contains("name = \"Domain-0\""),
        "xenstore-ls /local/domain/0:\n{ls}"
    );
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

/// Destroys a guest when dropped, so a failed assertion does not leave it running for the next
/// test.
struct Guest(&'static str);

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = Command::new("xl").args(["destroy", self.0]).output();
    }
}

#[test]
fn pv_guest_boots_from_the_harness_image() {
    let guest = Guest("rxen-smoke-guest");
    let name_arg = format!("name=\"{}\"", guest.0);
    vm_xl::xl_create(&["-p", "/etc/xen/rxen-guest.cfg", &name_arg]);
    let list = run("xl", &["list", guest.0]);
    let state = list
        .lines()
        .find(|l| l.split_whitespace().next() == Some(guest.0))
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap_or_else(|| panic!("{} not in xl list:\n{list}", guest.0));
    assert!(state.contains('p'), "created with -p but state is {state}");

    run("xl", &["unpause", guest.0]);
    // xenconsoled runs with --log=guest: the guest's console lands in this file.
    let log = format!("/var/log/xen/console/guest-{}.log", guest.0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("rxen-guest: up") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "guest did not come up; console:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    run("xl", &["destroy", guest.0]);
    let list = run("xl", &["list"]);
    assert!(
        !list.contains(guest.0),
        "guest still listed after destroy:\n{list}"
    );
}
