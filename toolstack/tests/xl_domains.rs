//! `rxl` on domains it did not create: devices laid out in xenstore the way libxl lays them
//! out, with no stored config of ours, are listed and detached as `xl` would; attach is
//! refused with a typed error.

mod common;

use common::{within, SimHost};
use toolstack::config::DiskSpec;
use toolstack::device;
use toolstack::lock::Locked;

fn xs(host: &SimHost) -> xenstore::Client {
    xenstore::Client::open_path(host.path().join("xenstored.sock")).expect("xenstore")
}

/// A domain that looks as `xl create` leaves it: it exists in Xen and xenstore, libxl's
/// document is there, ours is not.
fn xl_domain(host: &SimHost, name: &str) -> u16 {
    let d = host.create(name, 32, 32);
    let ours = host.path().join(format!("domains/domain-{d}.json"));
    std::fs::remove_file(&ours).expect("remove our stored config");
    d
}

/// Writes a connected device of domain `d` as `libxl__device_generic_add` does: frontend,
/// backend and libxl's record, both ends Connected.
fn libxl_device(host: &SimHost, d: u16, kind: &str, devid: u32, backend: &[(&str, &str)]) {
    let fe = format!("/local/domain/{d}/device/{kind}/{devid}");
    let be = format!("/local/domain/0/backend/{kind}/{d}/{devid}");
    let lx = format!("/libxl/{d}/device/{kind}/{devid}");
    xs(host)
        .transaction(|t| {
            t.write(&format!("{fe}/backend"), &be)?;
            t.write(&format!("{fe}/backend-id"), "0")?;
            t.write(&format!("{fe}/state"), "4")?;
            t.write(&format!("{be}/frontend"), &fe)?;
            t.write(&format!("{be}/frontend-id"), d.to_string())?;
            t.write(&format!("{be}/online"), "1")?;
            t.write(&format!("{be}/state"), "4")?;
            t.write(&format!("{be}/hotplug-status"), "connected")?;
            for (k, v) in backend {
                t.write(&format!("{be}/{k}"), v)?;
            }
            t.write(&format!("{lx}/frontend"), &fe)?;
            t.write(&format!("{lx}/backend"), &be)
        })
        .expect("write the device");
}

fn list(host: &SimHost, what: &str, domain: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&host.ok(&[what, "--json", domain])).expect("json")
}

#[test]
fn devices_of_a_domain_xl_created_are_listed_and_detached() {
    let host = SimHost::new(2048, 512);
    let d = xl_domain(&host, "xl");
    libxl_device(
        &host,
        d,
        "vbd",
        51760,
        &[
            ("params", "/srv/xl.img"),
            ("type", "phy"),
            ("mode", "r"),
            ("dev", "xvdd"),
            ("device-type", "disk"),
        ],
    );
    libxl_device(
        &host,
        d,
        "vif",
        3,
        &[("mac", "00:16:3e:aa:bb:cc"), ("bridge", "xenbr1")],
    );

    let disks = list(&host, "block-list", "xl");
    assert_eq!(disks.len(), 1, "{disks:?}");
    assert_eq!(disks[0]["devid"], 51760);
    assert_eq!(disks[0]["spec"], "/srv/xl.img,raw,xvdd,ro");
    assert_eq!(disks[0]["backend_state"], 4);
    assert_eq!(disks[0]["frontend_state"], 4);
    let nics = list(&host, "network-list", "xl");
    assert_eq!(nics.len(), 1, "{nics:?}");
    assert_eq!(
        nics[0]["spec"],
        "mac=00:16:3e:aa:bb:cc,bridge=xenbr1,devid=3"
    );
    // The primary console creation gave it is listed from xenstore too.
    let consoles = list(&host, "console-list", "xl");
    assert_eq!(consoles[0]["devid"], 0, "{consoles:?}");

    // Detach: the backend is asked to close, closes, and the device goes from xenstore.
    host.ok(&["block-detach", "xl", "xvdd"]);
    host.ok(&["network-detach", "xl", "3"]);
    assert!(list(&host, "block-list", "xl").is_empty());
    assert!(list(&host, "network-list", "xl").is_empty());
    for p in [
        format!("/local/domain/{d}/device/vbd/51760"),
        format!("/local/domain/0/backend/vbd/{d}/51760"),
        format!("/libxl/{d}/device/vbd/51760"),
        format!("/local/domain/0/backend/vif/{d}/3"),
    ] {
        assert!(!xs(&host).exists(&p).expect("exists"), "{p} left");
    }

    // Attach is refused, with the error that says why, and changes nothing.
    let lib = host.lib();
    let spec = DiskSpec::parse(&host.disk("/new,raw,xvda")).expect("spec");
    let e = device::add_disk(&lib, &mut Locked::root(), d, &spec, &within(5))
        .expect_err("attach to xl's domain");
    assert!(matches!(e, toolstack::Error::NotManaged { .. }), "{e:?}");
    assert!(list(&host, "block-list", "xl").is_empty());
}
