//! PV consoles on the simulated host: the primary console every domain gets at creation (its
//! xenstore layout and permissions as libxl writes them, the simulated xenconsoled's answer,
//! its removal with the domain), and secondary consoles (channels) at creation and hot, with
//! the invariant checker watching both.

mod common;

use std::time::{Duration, Instant};

use common::{device_error, stderr, within, SimHost};
use toolstack::config::VifSpec;
use toolstack::device::{self, DeviceError, DeviceKind, DeviceRef, Goal};
use toolstack::lock::Locked;
use toolstack::sim::backend::{behaviour_path, Behaviour};
use xenstore::perms::{Access, Permissions};

fn xs(host: &SimHost) -> xenstore::Client {
    xenstore::Client::open_path(host.path().join("xenstored.sock")).expect("xenstore")
}

fn read(host: &SimHost, path: &str) -> Option<String> {
    xs(host).read_string(path).ok()
}

fn perms(host: &SimHost, path: &str) -> Permissions {
    xs(host)
        .get_perms(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn violations(host: &SimHost, domid: u16) -> String {
    host.ok(&["device-check", &domid.to_string()])
        .trim()
        .to_owned()
}

fn console_list(host: &SimHost, domain: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&host.ok(&["console-list", "--json", domain])).expect("json")
}

fn ids(list: &[serde_json::Value]) -> Vec<u64> {
    list.iter()
        .map(|v| v["devid"].as_u64().expect("devid"))
        .collect()
}

fn fails_with(out: &std::process::Output, needle: &str) {
    assert!(!out.status.success(), "expected a failure with {needle:?}");
    let e = stderr(out);
    assert!(e.contains(needle), "expected {needle:?} in: {e}");
}

/// Waits until `path` holds something, and returns it.
fn wait_for_tty(host: &SimHost, path: &str) -> String {
    let client = xs(host);
    let watch = client.watch(path).expect("watch");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = client.read_string(path).unwrap_or_default();
        if !now.is_empty() {
            return now;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{path} stays empty");
        watch.next_event_timeout(left).expect("watch event");
    }
}

#[test]
fn creation_writes_the_primary_console_as_libxl_does() {
    let host = SimHost::new(2048, 512);
    let d = host.create("con", 32, 32);
    let fe = format!("/local/domain/{d}/console");
    let be = format!("/local/domain/0/backend/console/{d}/0");
    let guest_reads = Permissions::new(0, Access::NONE).with(u32::from(d), Access::READ);
    let guest_owns = Permissions::new(u32::from(d), Access::NONE).with(0, Access::READ);

    // The frontend directory is the backend's (the guest only reads it) but for backend-id.
    assert_eq!(perms(&host, &fe), guest_reads);
    for (k, v) in [
        ("backend", Some(be.as_str())),
        ("limit", Some("1048576")),
        ("type", Some("xenconsoled")),
        ("output", Some("pty")),
        ("tty", Some("")),
    ] {
        let p = format!("{fe}/{k}");
        assert_eq!(read(&host, &p).as_deref(), v, "{p}");
        assert_eq!(perms(&host, &p), guest_reads, "{p}");
    }
    assert_eq!(
        read(&host, &format!("{fe}/backend-id")).as_deref(),
        Some("0")
    );
    assert_eq!(perms(&host, &format!("{fe}/backend-id")), guest_owns);
    // The event channel creation allocated; no ring yet (no domain builder) and no state
    // (console 0 knows no XenbusState).
    let port = read(&host, &format!("{fe}/port")).expect("port");
    assert!(port.parse::<u32>().is_ok_and(|p| p > 0), "port {port:?}");
    assert_eq!(perms(&host, &format!("{fe}/port")), guest_reads);
    assert_eq!(read(&host, &format!("{fe}/ring-ref")), None);
    assert_eq!(read(&host, &format!("{fe}/state")), None);
    // The backend is dom0's, readable by the guest.
    assert_eq!(perms(&host, &be), guest_reads);
    for (k, v) in [
        ("frontend", fe.as_str()),
        ("frontend-id", &d.to_string()),
        ("online", "1"),
        ("state", "1"),
        ("protocol", "vt100"),
    ] {
        assert_eq!(read(&host, &format!("{be}/{k}")).as_deref(), Some(v), "{k}");
    }
    assert_eq!(
        read(&host, &format!("/libxl/{d}/device/console/0/frontend")).as_deref(),
        Some(fe.as_str())
    );

    // Recorded in the stored config, and listed.
    let long = host.ok(&["list", "-l", "con"]);
    assert!(
        long.contains("type=xenconsoled,output=pty,devid=0"),
        "{long}"
    );
    let list = console_list(&host, "con");
    assert_eq!(ids(&list), [0]);
    assert_eq!(list[0]["backend_path"], be.as_str());
    assert_eq!(list[0]["frontend_state"], serde_json::Value::Null);
    let text = host.ok(&["console-list", "con"]);
    assert!(text.contains("(primary)"), "{text}");

    // The simulated xenconsoled answers once the ring is published (as a builder would):
    // it writes its pty into tty, and leaves the backend's state alone, as xenconsoled does.
    xs(&host)
        .write(&format!("{fe}/ring-ref"), "1234")
        .expect("ring-ref");
    let tty = wait_for_tty(&host, &format!("{fe}/tty"));
    assert!(tty.starts_with("/dev/pts/"), "a real pty: {tty}");
    assert!(std::path::Path::new(&tty).exists(), "{tty}");
    assert_eq!(
        read(&host, &format!("{be}/state")).as_deref(),
        Some("1"),
        "xenconsoled does not move the backend's state"
    );
    assert_eq!(console_list(&host, "con")[0]["tty"], tty.as_str());
    assert_eq!(violations(&host, d), "[]");

    // The primary console is not detached; it goes with the domain.
    let primary = DeviceRef {
        kind: DeviceKind::Console,
        domid: d,
        devid: 0,
    };
    let e = device_error(device::remove(
        &host.lib(),
        &mut Locked::root(),
        primary,
        &within(10),
    ));
    assert!(matches!(e, DeviceError::PrimaryConsole), "{e:?}");
    host.ok(&["destroy", "con"]);
    for p in [&fe, &be, &format!("/libxl/{d}/device/console/0")] {
        assert!(!xs(&host).exists(p).expect("exists"), "{p} left");
    }
    assert_eq!(violations(&host, d), "[]");
}

#[test]
fn the_checker_sees_console_nodes_the_stored_config_does_not_describe() {
    let host = SimHost::new(2048, 512);
    let d = host.create("chk", 32, 32);
    assert_eq!(violations(&host, d), "[]");
    // A secondary console made behind the toolstack's back.
    let stray = format!("/local/domain/{d}/device/console/7");
    xs(&host)
        .write(&format!("{stray}/state"), "1")
        .expect("write");
    let v = violations(&host, d);
    assert!(
        v.contains(&stray) && v.contains("console 7 on domain") && v.contains("not in the stored"),
        "{v}"
    );
    // recover removes what nobody recorded; the primary console, recorded, stays.
    host.ok(&["recover", &d.to_string()]);
    assert_eq!(violations(&host, d), "[]");
    assert!(!xs(&host).exists(&stray).expect("exists"));
    assert!(xs(&host)
        .exists(&format!("/local/domain/{d}/console/port"))
        .expect("exists"));
    assert_eq!(ids(&console_list(&host, "chk")), [0]);

    // A console 0 frontend on a domain whose stored config has none (here: of a domain that
    // is gone, with nothing stored) is a violation too.
    host.ok(&["destroy", "chk"]);
    xs(&host)
        .write(&format!("/local/domain/{d}/console/tty"), "")
        .expect("write");
    let v = violations(&host, d);
    assert!(
        v.contains(&format!("/local/domain/{d}/console")),
        "a leftover primary console is not seen: {v}"
    );
    host.ok(&["recover", &d.to_string()]);
    assert_eq!(violations(&host, d), "[]");
}

#[test]
fn channels_attach_at_creation_and_hot_and_detach() {
    let host = SimHost::new(2048, 512);
    let cfg = host.path().join("ch.cfg");
    std::fs::write(
        &cfg,
        "name = \"ch\"\nmemory = 32\n\
         channel = [ 'name=org.qemu.guest_agent.0,connection=pty' ]\n",
    )
    .expect("cfg");
    host.ok(&["create", "-q", &cfg.display().to_string()]);
    let d = host.domid("ch").expect("created");
    let list = console_list(&host, "ch");
    assert_eq!(ids(&list), [0, 1]);
    // The channel went through the whole handshake with the simulated QEMU backend. Create
    // waits for the backend's Connected, as libxl does; the (simulated) frontend's own 4 comes
    // after it, on the next event.
    assert_eq!(list[1]["backend_state"], 4, "{list:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut list = list;
    while list[1]["frontend_state"] != 4 {
        assert!(
            Instant::now() < deadline,
            "the frontend never connected: {list:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
        list = console_list(&host, "ch");
    }
    assert_eq!(list[1]["backend_state"], 4, "{list:?}");
    let fe = format!("/local/domain/{d}/device/console/1");
    let be = format!("/local/domain/0/backend/console/{d}/1");
    let dom = u32::from(d);
    let guest_owns = Permissions::new(dom, Access::NONE).with(0, Access::READ);
    let guest_reads = Permissions::new(0, Access::NONE).with(dom, Access::READ);
    assert_eq!(perms(&host, &fe), guest_owns);
    assert_eq!(perms(&host, &format!("{fe}/protocol")), guest_owns);
    for (k, v) in [
        ("name", "org.qemu.guest_agent.0"),
        ("type", "ioemu"),
        ("output", "pty"),
        ("limit", "1048576"),
    ] {
        let p = format!("{fe}/{k}");
        assert_eq!(read(&host, &p).as_deref(), Some(v), "{p}");
        assert_eq!(perms(&host, &p), guest_reads, "{p}");
    }
    for (k, v) in [
        ("name", "org.qemu.guest_agent.0"),
        ("connection", "pty"),
        ("protocol", "vt100"),
    ] {
        assert_eq!(read(&host, &format!("{be}/{k}")).as_deref(), Some(v), "{k}");
    }
    // QEMU's console backend runs no hotplug script.
    assert_eq!(read(&host, &format!("{be}/hotplug-status")), None);

    // Hot: the lowest free id from 1; by name or id out.
    host.ok(&["channel-attach", "ch", "name=second", "connection=pty"]);
    host.ok(&["channel-attach", "ch", "name=third", "connection=pty"]);
    assert_eq!(ids(&console_list(&host, "ch")), [0, 1, 2, 3]);
    host.ok(&["channel-detach", "ch", "second"]);
    host.ok(&["channel-detach", "ch", "1"]);
    assert_eq!(ids(&console_list(&host, "ch")), [0, 3]);
    assert!(!xs(&host).exists(&fe).expect("exists"));
    assert!(!xs(&host).exists(&be).expect("exists"));
    host.ok(&["channel-attach", "ch", "name=again", "connection=pty"]);
    assert_eq!(ids(&console_list(&host, "ch")), [0, 1, 3]);
    assert_eq!(violations(&host, d), "[]");

    // Refusals, each changing nothing.
    let lib = host.lib();
    let channel = |spec: &str| VifSpec::parse_channel(spec).expect("channel spec");
    let e = device_error(device::add_channel(
        &lib,
        &mut Locked::root(),
        d,
        &channel("name=x,connection=pty,devid=3"),
        &within(10),
    ));
    assert!(matches!(e, DeviceError::InUse { .. }), "{e:?}");
    fails_with(
        &host.rxl(&["channel-attach", "ch", "connection=pty"]),
        "a channel needs a name",
    );
    fails_with(
        &host.rxl(&["channel-attach", "ch", "name=s", "connection=socket"]),
        "connection=socket needs a device model",
    );
    fails_with(
        &host.rxl(&[
            "channel-attach",
            "ch",
            "name=z",
            "connection=pty",
            "devid=0",
        ]),
        "devid 0 is the primary console",
    );
    fails_with(
        &host.rxl(&["channel-detach", "ch", "nosuch"]),
        "has no channel named \"nosuch\"",
    );
    assert_eq!(ids(&console_list(&host, "ch")), [0, 1, 3]);

    // A backend that never answers: a clear error, and nothing left.
    xs(&host)
        .write(&behaviour_path(d), Behaviour::Stall.as_str())
        .expect("behaviour");
    let e = device_error(device::add_channel(
        &lib,
        &mut Locked::root(),
        d,
        &channel("name=late,connection=pty"),
        &within(1),
    ));
    assert!(
        matches!(
            e,
            DeviceError::BackendTimeout {
                goal: Goal::Connect,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(ids(&console_list(&host, "ch")), [0, 1, 3]);
    assert!(!xs(&host)
        .exists(&format!("/local/domain/{d}/device/console/2"))
        .expect("exists"));
    assert_eq!(violations(&host, d), "[]");

    host.ok(&["destroy", "ch"]);
    assert!(xs(&host)
        .directory(&format!("/local/domain/0/backend/console/{d}"))
        .is_err());
    assert_eq!(violations(&host, d), "[]");
}
