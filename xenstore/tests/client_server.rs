//! Our client against our server, in-process and over a unix socket: the shared suite, then the
//! server semantics that need unprivileged domains, quotas, or misbehaving peers.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use common::next_path;
use xenstore::perms::{Access, Permissions};
use xenstore::server::{Binding, Quotas, RunningServer, Server};
use xenstore::wire::{self, Header, MsgType};
use xenstore::{Client, Errno, ReadOpt};

fn running() -> RunningServer {
    Server::new().unwrap().spawn().unwrap()
}

fn temp_socket(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rxen-xs-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("socket")
}

#[test]
fn shared_suite_in_process() {
    let s = running();
    let c = s.controller().client().unwrap();
    common::run_all(&c, "/test");
    s.stop().unwrap();
}

#[test]
fn shared_suite_over_a_unix_socket() {
    let path = temp_socket("suite");
    let s = Server::new()
        .unwrap()
        .listen(&path)
        .unwrap()
        .spawn()
        .unwrap();
    let c = Client::open_path(&path).unwrap();
    common::run_all(&c, "/local/domain/0/test");
    drop(c);
    s.stop().unwrap();
    assert!(!path.exists(), "the socket is removed on stop");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn initial_tree_matches_c_xenstored() {
    let s = running();
    let c = s.controller().client().unwrap();
    assert_eq!(c.directory("/").unwrap(), ["tool"]);
    assert_eq!(c.directory("/tool").unwrap(), ["xenstored"]);
    assert_eq!(c.get_perms("/").unwrap().to_string(), "n0");
    assert_eq!(c.get_domain_path(7).unwrap(), "/local/domain/7");
    let e = c.rm("/").unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EINVAL));
}

#[test]
fn relative_paths_resolve_to_the_callers_home() {
    let s = running();
    let dom0 = s.controller().client().unwrap();
    dom0.write("rel", "zero").unwrap();
    assert_eq!(dom0.read("/local/domain/0/rel").unwrap(), b"zero");

    s.controller().introduce_domain(4).unwrap();
    dom0.mkdir("/local/domain/4").unwrap();
    dom0.set_perms("/local/domain/4", &Permissions::new(4, Access::NONE))
        .unwrap();
    let d4 = s.controller().domain_client(4).unwrap();
    d4.write("data/x", "four").unwrap();
    assert_eq!(dom0.read("/local/domain/4/data/x").unwrap(), b"four");
    // Relative watches report relative paths.
    let w = d4.watch("data").unwrap();
    assert_eq!(next_path(&w), "data");
    dom0.write("/local/domain/4/data/y", "1").unwrap();
    assert_eq!(next_path(&w), "data/y");
}

#[test]
fn unprivileged_domains_see_only_what_acls_grant() {
    let s = running();
    let ctl = s.controller();
    let dom0 = ctl.client().unwrap();
    for d in [1, 2] {
        ctl.introduce_domain(d).unwrap();
    }
    let d1 = ctl.domain_client(1).unwrap();
    let d2 = ctl.domain_client(2).unwrap();

    dom0.write("/secret/inner", "s").unwrap();
    // Hidden: reading a node below an unreadable one says EACCES, not ENOENT, so existence
    // does not leak.
    assert_eq!(
        d1.read("/secret/inner").unwrap_err().errno(),
        Some(Errno::EACCES)
    );
    assert_eq!(
        d1.read("/secret/nothing").unwrap_err().errno(),
        Some(Errno::EACCES)
    );
    assert_eq!(
        d1.get_perms("/secret").unwrap_err().errno(),
        Some(Errno::EACCES)
    );
    assert_eq!(
        d1.write("/secret/x", "1").unwrap_err().errno(),
        Some(Errno::EACCES)
    );
    assert_eq!(d1.directory("/").unwrap_err().errno(), Some(Errno::EACCES));

    // Grant dom1 read on /shared and write on /shared/drop.
    dom0.write("/shared/drop", "").unwrap();
    dom0.set_perms(
        "/shared",
        &Permissions::new(0, Access::NONE).with(1, Access::READ),
    )
    .unwrap();
    dom0.set_perms(
        "/shared/drop",
        &Permissions::new(0, Access::NONE).with(1, Access::WRITE),
    )
    .unwrap();
    assert_eq!(d1.read("/shared").unwrap(), b"");
    assert_eq!(d1.directory("/shared").unwrap(), ["drop"]);
    // Readable parent: a missing child is honestly ENOENT.
    assert_eq!(
        d1.read("/shared/missing").unwrap_err().errno(),
        Some(Errno::ENOENT)
    );
    assert_eq!(d2.read("/shared").unwrap_err().errno(), Some(Errno::EACCES));
    // Write-only: can write but not read back.
    d1.write("/shared/drop", "hi").unwrap();
    assert_eq!(
        d1.read("/shared/drop").unwrap_err().errno(),
        Some(Errno::EACCES)
    );
    assert_eq!(dom0.read("/shared/drop").unwrap(), b"hi");
    // Creating below a writable node: the creator owns the new node, ACL inherited.
    d1.write("/shared/drop/mine", "m").unwrap();
    let p = dom0.get_perms("/shared/drop/mine").unwrap();
    assert_eq!(p.owner(), 1);
    assert_eq!(
        p.entries()[1..],
        [xenstore::perms::Perm::new(1, Access::WRITE)]
    );
    assert_eq!(
        d1.read("/shared/drop/mine").unwrap(),
        b"m",
        "owners may always read"
    );
    // Owners may change the ACL but not the owner; non-owners may not touch it.
    d1.set_perms("/shared/drop/mine", &Permissions::new(1, Access::READ))
        .unwrap();
    assert_eq!(
        d1.set_perms("/shared/drop/mine", &Permissions::new(2, Access::READ))
            .unwrap_err()
            .errno(),
        Some(Errno::EPERM)
    );
    assert_eq!(
        d2.read("/shared/drop/mine").unwrap(),
        b"m",
        "others get the owner entry's r"
    );
    assert_eq!(
        d2.set_perms("/shared/drop/mine", &Permissions::new(2, Access::BOTH))
            .unwrap_err()
            .errno(),
        Some(Errno::EACCES)
    );
    // Privileged-only operations.
    assert_eq!(
        d1.introduce_domain(9, 1, 1).unwrap_err().errno(),
        Some(Errno::EACCES)
    );
    assert_eq!(
        d1.release_domain(2).unwrap_err().errno(),
        Some(Errno::EACCES)
    );
    assert_eq!(
        d1.control("check", &[]).unwrap_err().errno(),
        Some(Errno::EACCES)
    );
}

/// `ReadOpt` turns only ENOENT into `None`: a node the caller may not read, or one hidden below
/// such a node, is an EACCES error, in and out of transactions.
#[test]
fn read_opt_keeps_eacces_an_error() {
    let s = running();
    let ctl = s.controller();
    let dom0 = ctl.client().unwrap();
    ctl.introduce_domain(1).unwrap();
    let d1 = ctl.domain_client(1).unwrap();
    dom0.write("/secret/inner", "s").unwrap();
    dom0.write("/open/node", "o").unwrap();
    dom0.set_perms("/open", &Permissions::new(0, Access::READ))
        .unwrap();

    let eacces = |r: xenstore::Result<()>| assert_eq!(r.unwrap_err().errno(), Some(Errno::EACCES));
    for p in ["/secret", "/secret/inner", "/secret/missing"] {
        eacces(d1.read_opt(p).map(drop));
        eacces(d1.read_string_opt(p).map(drop));
        eacces(d1.directory_opt(p).map(drop));
    }
    let tx = d1.transaction_start().unwrap();
    eacces(tx.read_opt("/secret/inner").map(drop));
    eacces(tx.read_string_opt("/secret/inner").map(drop));
    eacces(tx.directory_opt("/secret").map(drop));
    // Where the parent is readable, a missing node is still None.
    assert_eq!(tx.read_opt("/open/missing").unwrap(), None);
    tx.abort().unwrap();
    assert_eq!(d1.read_opt("/open/missing").unwrap(), None);
    // /open/node inherited /open's permissions before they changed: owner dom0, no access.
    eacces(d1.read_opt("/open/node").map(drop));
    assert_eq!(
        d1.directory_opt("/open").unwrap(),
        Some(vec!["node".to_owned()])
    );
    s.stop().unwrap();
}

#[test]
fn set_target_grants_the_targets_rights() {
    let s = running();
    let ctl = s.controller();
    let dom0 = ctl.client().unwrap();
    for d in [5, 6] {
        ctl.introduce_domain(d).unwrap();
    }
    dom0.write("/local/domain/5/device-model", "x").unwrap();
    dom0.set_perms("/local/domain/5", &Permissions::new(5, Access::NONE))
        .unwrap();
    dom0.set_perms(
        "/local/domain/5/device-model",
        &Permissions::new(5, Access::NONE),
    )
    .unwrap();
    let dm = ctl.domain_client(6).unwrap();
    assert_eq!(
        dm.read("/local/domain/5/device-model").unwrap_err().errno(),
        Some(Errno::EACCES)
    );
    dom0.set_target(6, 5).unwrap();
    assert_eq!(dm.read("/local/domain/5/device-model").unwrap(), b"x");
    assert_eq!(
        dom0.set_target(6, 77).unwrap_err().errno(),
        Some(Errno::ENOENT)
    );
}

#[test]
fn domain_lifecycle_and_special_watches() {
    let s = running();
    let ctl = s.controller();
    let dom0 = ctl.client().unwrap();
    let intro = dom0.watch("@introduceDomain").unwrap();
    let rel = dom0.watch("@releaseDomain").unwrap();
    assert_eq!(next_path(&intro), "@introduceDomain");
    assert_eq!(next_path(&rel), "@releaseDomain");

    assert!(!dom0.is_domain_introduced(3).unwrap());
    dom0.introduce_domain(3, 0xfeffc, 1).unwrap();
    assert!(dom0.is_domain_introduced(3).unwrap());
    assert!(dom0.is_domain_introduced(0).unwrap());
    assert_eq!(next_path(&intro), "@introduceDomain");
    assert_eq!(
        dom0.introduce_domain(3, 1, 0).unwrap_err().errno(),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        dom0.introduce_domain(0, 1, 1).unwrap_err().errno(),
        Some(Errno::EINVAL)
    );

    // The domain's nodes, owned by it; a dom0-owned node naming it in its ACL.
    dom0.mkdir("/local/domain/3").unwrap();
    dom0.set_perms("/local/domain/3", &Permissions::new(3, Access::NONE))
        .unwrap();
    let d3 = ctl.domain_client(3).unwrap();
    d3.write("/local/domain/3/name", "three").unwrap();
    dom0.write("/backend/x", "").unwrap();
    dom0.set_perms(
        "/backend/x",
        &Permissions::new(0, Access::NONE).with(3, Access::READ),
    )
    .unwrap();

    // Shutdown fires @releaseDomain once until resumed.
    ctl.domain_shutdown(3).unwrap();
    assert_eq!(next_path(&rel), "@releaseDomain");
    ctl.domain_shutdown(3).unwrap();
    dom0.resume_domain(3).unwrap();
    ctl.domain_shutdown(3).unwrap();
    assert_eq!(next_path(&rel), "@releaseDomain");

    let home = dom0.watch("/local/domain/3").unwrap();
    assert_eq!(next_path(&home), "/local/domain/3");
    dom0.release_domain(3).unwrap();
    assert_eq!(next_path(&rel), "@releaseDomain");
    // One event for the removed subtree (descendants only fire exact-path watches).
    assert_eq!(next_path(&home), "/local/domain/3");
    assert!(
        !dom0.exists("/local/domain/3").unwrap(),
        "owned nodes are deleted"
    );
    assert_eq!(
        dom0.get_perms("/backend/x").unwrap().to_string(),
        "n0",
        "ACL entry dropped"
    );
    assert!(!dom0.is_domain_introduced(3).unwrap());
    // Its connection is closed.
    let e = d3.read("/local/domain/3/name").unwrap_err();
    assert!(matches!(e.failure(), Some(xenstore::Failure::Io(_))), "{e}");
    assert_eq!(
        dom0.release_domain(3).unwrap_err().errno(),
        Some(Errno::ENOENT)
    );
    assert!(
        ctl.domain_client(3).is_err(),
        "cannot bind to a released domain"
    );
}

#[test]
fn special_watch_events_need_permission() {
    let s = running();
    let ctl = s.controller();
    let dom0 = ctl.client().unwrap();
    ctl.introduce_domain(1).unwrap();
    let d1 = ctl.domain_client(1).unwrap();
    let w = d1.watch("@introduceDomain").unwrap();
    assert_eq!(
        next_path(&w),
        "@introduceDomain",
        "the first fire is always sent"
    );
    // Not permitted yet: introducing dom 2 sends nothing. Grant, then introduce dom 3: the
    // first event dom1 sees is dom 3's.
    ctl.introduce_domain(2).unwrap();
    let e = d1
        .set_perms("@introduceDomain", &Permissions::new(0, Access::READ))
        .unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EACCES));
    dom0.set_perms(
        "@introduceDomain",
        &Permissions::new(0, Access::NONE).with(1, Access::READ),
    )
    .unwrap();
    ctl.introduce_domain(3).unwrap();
    assert_eq!(next_path(&w), "@introduceDomain");
    assert_eq!(
        w.try_next_event(),
        None,
        "dom 2's introduction was not sent"
    );
    let e = dom0
        .set_perms("@bogus", &Permissions::new(0, Access::READ))
        .unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EINVAL));
}

#[test]
fn watch_events_respect_node_permissions() {
    let s = running();
    let ctl = s.controller();
    let dom0 = ctl.client().unwrap();
    ctl.introduce_domain(1).unwrap();
    let d1 = ctl.domain_client(1).unwrap();
    dom0.mkdir("/pub").unwrap();
    dom0.set_perms("/pub", &Permissions::new(0, Access::READ))
        .unwrap();
    let w = d1.watch("/pub").unwrap();
    assert_eq!(next_path(&w), "/pub");
    dom0.write("/pub/hidden", "").unwrap();
    assert_eq!(next_path(&w), "/pub/hidden", "readable parent: event sent");
    dom0.set_perms("/pub/hidden", &Permissions::new(0, Access::NONE))
        .unwrap();
    assert_eq!(
        next_path(&w),
        "/pub/hidden",
        "losing access is reported (old perms)"
    );
    dom0.mkdir("/pub/closed").unwrap();
    assert_eq!(next_path(&w), "/pub/closed");
    dom0.set_perms("/pub/closed", &Permissions::new(0, Access::NONE))
        .unwrap();
    assert_eq!(next_path(&w), "/pub/closed");
    // Neither the node nor its parent is readable: no event.
    dom0.write("/pub/closed/deep", "x").unwrap();
    dom0.write("/pub/sentinel", "x").unwrap();
    assert_eq!(next_path(&w), "/pub/sentinel");
}

#[test]
fn quotas_bound_unprivileged_domains() {
    let q = Quotas {
        nodes_per_domain: 20,
        watches_per_domain: 3,
        transactions_per_connection: 2,
        ..Quotas::default()
    };
    let s = Server::with_quotas(q).unwrap().spawn().unwrap();
    let ctl = s.controller();
    let dom0 = ctl.client().unwrap();
    ctl.introduce_domain(1).unwrap();
    dom0.mkdir("/local/domain/1").unwrap();
    dom0.set_perms("/local/domain/1", &Permissions::new(1, Access::NONE))
        .unwrap();
    let d1 = ctl.domain_client(1).unwrap();

    // Nodes: the home node counts, so 19 more fit.
    let mut made = 0;
    let err = loop {
        match d1.write(&format!("n{made}"), "") {
            Ok(()) => made += 1,
            Err(e) => break e,
        }
        assert!(made < 100, "quota never hit");
    };
    assert_eq!(err.errno(), Some(Errno::ENOSPC), "{err}");
    assert_eq!(made, 19);
    d1.rm("n0").unwrap();
    d1.write("again", "").unwrap();
    // dom0 is not limited.
    for i in 0..50 {
        dom0.write(&format!("/local/domain/0/q{i}"), "").unwrap();
    }

    // Node size: value + header + perms + child names must stay below 2048 bytes.
    d1.write("again", vec![b'v'; 2048 - 24 - 8 - 1]).unwrap();
    let e = d1.write("again", vec![b'v'; 2048 - 24 - 8]).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::ENOSPC));

    // Watches per domain.
    let ws: Vec<_> = (0..3)
        .map(|i| d1.watch(&format!("w{i}")).unwrap())
        .collect();
    assert_eq!(d1.watch("w9").unwrap_err().errno(), Some(Errno::E2BIG));
    drop(ws);
    let _w = d1.watch("w9").unwrap();

    // Open transactions per connection.
    let t1 = d1.transaction_start().unwrap();
    let t2 = d1.transaction_start().unwrap();
    assert_eq!(
        d1.transaction_start().unwrap_err().errno(),
        Some(Errno::ENOSPC)
    );
    drop((t1, t2));
    d1.transaction_start().unwrap().commit().unwrap();

    // Permission entries per node.
    let many = (0..6).fold(Permissions::new(1, Access::NONE), |p, d| {
        p.with(d + 10, Access::READ)
    });
    assert_eq!(
        d1.set_perms("again", &many).unwrap_err().errno(),
        Some(Errno::ENOSPC)
    );
}

#[test]
fn transaction_quota_is_checked_at_commit() {
    let q = Quotas {
        nodes_per_domain: 5,
        ..Quotas::default()
    };
    let s = Server::with_quotas(q).unwrap().spawn().unwrap();
    let ctl = s.controller();
    let dom0 = ctl.client().unwrap();
    ctl.introduce_domain(1).unwrap();
    dom0.mkdir("/local/domain/1").unwrap();
    dom0.set_perms("/local/domain/1", &Permissions::new(1, Access::NONE))
        .unwrap();
    let d1 = ctl.domain_client(1).unwrap();
    let tx = d1.transaction_start().unwrap();
    for i in 0..4 {
        tx.write(&format!("t{i}"), "").unwrap();
    }
    assert_eq!(tx.write("t9", "").unwrap_err().errno(), Some(Errno::ENOSPC));
    tx.commit().unwrap();
    assert_eq!(d1.directory("/local/domain/1").unwrap().len(), 4);
}

#[test]
fn transaction_ids_and_errors() {
    let s = running();
    let c = s.controller().client().unwrap();
    // Unknown transaction id.
    let e = c.raw_request(MsgType::Read, 999, b"/tool\0").unwrap_err();
    assert_eq!(e.errno(), Some(Errno::ENOENT));
    // Nested start.
    let tx = c.transaction_start().unwrap();
    let e = c
        .raw_request(MsgType::TransactionStart, tx.id(), b"\0")
        .unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EBUSY));
    // Bad end argument; end without transaction.
    let e = c
        .raw_request(MsgType::TransactionEnd, tx.id(), b"X\0")
        .unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EINVAL));
    let e = c
        .raw_request(MsgType::TransactionEnd, 0, b"T\0")
        .unwrap_err();
    assert_eq!(e.errno(), Some(Errno::ENOENT));
    // Deletion inside a transaction conflicts with a concurrent write to a read node.
    c.write("/d/a", "1").unwrap();
    tx.rm("/d").unwrap();
    assert!(!tx.exists("/d/a").unwrap());
    assert!(c.exists("/d/a").unwrap());
    c.write("/d/a", "2").unwrap();
    assert_eq!(tx.commit().unwrap_err().errno(), Some(Errno::EAGAIN));
    assert!(c.exists("/d/a").unwrap());
    // Reset drops transactions and watches.
    let tx = c.transaction_start().unwrap();
    let id = tx.id();
    std::mem::forget(tx);
    c.reset_watches().unwrap();
    let e = c.raw_request(MsgType::Read, id, b"/tool\0").unwrap_err();
    assert_eq!(e.errno(), Some(Errno::ENOENT));
}

#[test]
fn control_and_unknown_requests() {
    let s = running();
    let c = s.controller().client().unwrap();
    assert_eq!(c.control("check", &[]).unwrap(), b"OK\0");
    assert!(String::from_utf8_lossy(&c.control("quota", &[]).unwrap())
        .contains("nodes            :     1000"));
    assert_eq!(
        c.control("frobnicate", &[]).unwrap_err().errno(),
        Some(Errno::EINVAL)
    );
    for ty in [
        MsgType::Unknown(20),
        MsgType::Unknown(0xffff),
        MsgType::WatchEvent,
        MsgType::Error,
    ] {
        let e = c.raw_request(ty, 0, b"x\0").unwrap_err();
        assert_eq!(e.errno(), Some(Errno::ENOSYS), "{ty:?}");
    }
    // Malformed payloads get EINVAL.
    for (ty, p) in [
        (MsgType::Read, &b"/tool"[..]),
        (MsgType::Read, b"/tool\0extra\0"),
        (MsgType::Watch, b"/a\0"),
        (MsgType::SetPerms, b"/tool\0"),
        (MsgType::SetPerms, b"/tool\0x9\0"),
        (MsgType::DirectoryPart, b"/tool\0"),
        (MsgType::Introduce, b"5\0"),
        (MsgType::Write, b"nonul"),
    ] {
        let e = c.raw_request(ty, 0, p).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EINVAL), "{ty:?} {p:?}");
    }
}

fn raw_send(s: &mut UnixStream, ty: MsgType, req_id: u32, payload: &[u8]) {
    s.write_all(&wire::encode(ty, req_id, 0, &[payload]).unwrap())
        .unwrap();
}

fn raw_recv(s: &mut UnixStream) -> (Header, Vec<u8>) {
    let mut h = [0u8; wire::HEADER_LEN];
    s.read_exact(&mut h).unwrap();
    let h = Header::from_bytes(&h);
    let mut p = vec![0u8; h.len as usize];
    s.read_exact(&mut p).unwrap();
    (h, p)
}

#[test]
fn a_bad_connection_does_not_harm_others() {
    let path = temp_socket("bad");
    let s = Server::new()
        .unwrap()
        .listen(&path)
        .unwrap()
        .spawn()
        .unwrap();
    let good = Client::open_path(&path).unwrap();
    good.write("/ok", "1").unwrap();
    let w = good.watch("/ok").unwrap();
    assert_eq!(next_path(&w), "/ok");

    // An over-long payload: the daemon closes that connection.
    let mut bad = UnixStream::connect(&path).unwrap();
    let hdr = Header {
        ty: MsgType::Write,
        req_id: 1,
        tx_id: 0,
        len: 5000,
    };
    bad.write_all(&hdr.to_bytes()).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(bad.read(&mut b).unwrap(), 0, "closed by the daemon");

    // Half a message, then silence: others are served meanwhile.
    let mut half = UnixStream::connect(&path).unwrap();
    half.write_all(&wire::encode(MsgType::Read, 3, 0, &[b"/ok\0"]).unwrap()[..10])
        .unwrap();
    assert_eq!(good.read("/ok").unwrap(), b"1");

    // A peer that floods requests and never reads replies, nor its watch events: the daemon
    // stops reading from it, others go on.
    let mut flood = UnixStream::connect(&path).unwrap();
    raw_send(&mut flood, MsgType::Watch, 1, b"/\0flood\0");
    flood.set_nonblocking(true).unwrap();
    let req = wire::encode(MsgType::Read, 9, 0, &[b"/ok\0"]).unwrap();
    let mut sent = 0usize;
    loop {
        match flood.write(&req) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(sent > 0);
    for i in 0..200 {
        good.write("/ok", i.to_string()).unwrap();
    }
    assert_eq!(good.read("/ok").unwrap(), b"199");
    assert_eq!(next_path(&w), "/ok");

    // Garbage that parses as messages gets error replies and the connection stays usable.
    let mut junk = UnixStream::connect(&path).unwrap();
    raw_send(&mut junk, MsgType::Unknown(77), 5, b"\xff\xfe");
    let (h, p) = raw_recv(&mut junk);
    assert_eq!(
        (h.ty, h.req_id, p.as_slice()),
        (MsgType::Error, 5, &b"ENOSYS\0"[..])
    );
    raw_send(&mut junk, MsgType::Read, 6, b"/\xff\0");
    let (h, p) = raw_recv(&mut junk);
    assert_eq!(
        (h.ty, h.req_id, p.as_slice()),
        (MsgType::Error, 6, &b"EINVAL\0"[..])
    );
    raw_send(&mut junk, MsgType::Read, 7, b"/ok\0");
    let (h, p) = raw_recv(&mut junk);
    assert_eq!((h.ty, h.req_id), (MsgType::Read, 7));
    assert!(!p.is_empty());
    drop((bad, half, flood, junk));
    assert_eq!(good.read("/ok").unwrap(), b"199");
    drop((w, good));
    s.stop().unwrap();
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn replies_echo_request_and_transaction_ids_in_order() {
    let s = running();
    let mut st = s.controller().connect_stream(Binding::Socket).unwrap();
    // Pipelined requests: replies come back matched by req_id.
    for id in 100..110 {
        raw_send(
            &mut st,
            MsgType::GetDomainPath,
            id,
            format!("{id}\0").as_bytes(),
        );
    }
    for id in 100..110 {
        let (h, p) = raw_recv(&mut st);
        assert_eq!(h.req_id, id);
        assert_eq!(p, format!("/local/domain/{id}\0").into_bytes());
    }
}

#[test]
fn clients_notice_a_stopped_server() {
    let s = running();
    let c = s.controller().client().unwrap();
    c.write("/x", "1").unwrap();
    let w = c.watch("/x").unwrap();
    assert_eq!(next_path(&w), "/x");
    s.stop().unwrap();
    assert!(matches!(
        c.read("/x").unwrap_err().failure(),
        Some(xenstore::Failure::Io(_))
    ));
    assert!(w.next_event().is_err());
}

/// `CONTROL quota`, in C xenstored's words and layout (`xenstore-control` prints the reply as it
/// is; the real-Xen suite runs that tool against this daemon).
#[test]
fn control_reads_and_sets_quotas() {
    let s = running();
    let ctl = s.controller();
    let dom0 = ctl.client().unwrap();
    let text = |args: &[&str]| {
        let mut v = dom0.control(args[0], &args[1..]).unwrap();
        assert_eq!(v.pop(), Some(0), "replies end in NUL");
        String::from_utf8(v).unwrap()
    };
    let quotas = text(&["quota"]);
    assert!(quotas.starts_with("Quota settings:\n"), "{quotas}");
    assert!(
        quotas.contains("\nnodes            :     1000 Nodes per domain\n"),
        "{quotas}"
    );
    assert!(
        quotas.contains("\nwatches          :      128 "),
        "{quotas}"
    );
    assert!(text(&["help"]).contains("\nquota [set <name> <val>|<domid>]\n"));
    dom0.control("quota", &["set", "nodes", "3"]).unwrap();
    assert!(text(&["quota"]).contains("\nnodes            :        3 "));
    // The new quota holds for an unprivileged domain at once.
    ctl.introduce_domain(5).unwrap();
    dom0.mkdir("/local/domain/5").unwrap();
    dom0.set_perms("/local/domain/5", &Permissions::new(5, Access::NONE))
        .unwrap();
    let d5 = ctl.domain_client(5).unwrap();
    let mut written = 0;
    while written < 10
        && d5
            .write(&format!("/local/domain/5/n{written}"), "x")
            .is_ok()
    {
        written += 1;
    }
    assert_eq!(
        written, 2,
        "a nodes quota of 3 allows two nodes beside the home"
    );
    let _watch = d5.watch("/local/domain/5").unwrap();
    assert_eq!(
        text(&["quota", "5"]),
        "Domain 5:\nnodes           :        3\nwatches         :        1\n\
         transactions    :        0\n"
    );
    for (bad, errno) in [
        (&["quota", "set", "nodes", "0"][..], Errno::EINVAL),
        (&["quota", "set", "bogus", "4"], Errno::EINVAL),
        (&["quota", "77"], Errno::ENOENT),
        (&["log"], Errno::EINVAL),
        (&["no-such-command"], Errno::EINVAL),
    ] {
        assert_eq!(
            dom0.control(bad[0], &bad[1..]).unwrap_err().errno(),
            Some(errno),
            "CONTROL {bad:?}"
        );
    }
    s.stop().unwrap();
}
