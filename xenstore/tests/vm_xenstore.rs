//! Real-Xen xenstore tests, run in dom0 by `scripts/xen-vm-test` (built only with the
//! `vm-tests` feature; RXEN_VM=1 there):
//!
//! - our client against the C xenstored of Xen 4.17 and of 4.20, over its unix socket and through the kernel's
//!   `/dev/xen/xenbus`: the same shared suite our own server passes;
//! - Xen's own xenstore tools and our client reading each other's writes through C xenstored;
//! - Xen's xenstore tools (`xenstore-control` too) against our xenstored, started on a second
//!   socket.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use xenstore::perms::{Access, Permissions};
use xenstore::server::Server;
use xenstore::{Client, Errno};

fn in_vm() {
    assert_eq!(
        std::env::var("RXEN_VM").as_deref(),
        Ok("1"),
        "these tests run only in the Xen test VM (scripts/xen-vm-test)"
    );
}

fn tool(socket: Option<&Path>, name: &str, args: &[&str]) -> Output {
    // spawns: the program passed to tool, ok
    let mut c = Command::new(name);
    c.args(args);
    if let Some(s) = socket {
        c.env("XENSTORED_PATH", s);
    }
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
}

fn ok(socket: Option<&Path>, name: &str, args: &[&str]) -> String {
    let out = tool(socket, name, args);
    assert!(
        out.status.success(),
        "{name} {args:?}: {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn shared_suite_against_c_xenstored_socket() {
    in_vm();
    let c = Client::open_path(xenstore::client::SOCKET_PATH).expect("C xenstored socket");
    common::run_all(&c, "/local/domain/0/rxen-vm/socket");
}

#[test]
fn shared_suite_against_c_xenstored_through_xenbus() {
    in_vm();
    let c = Client::open_path(xenstore::client::DEVICE_PATH).expect("/dev/xen/xenbus");
    common::run_all(&c, "/local/domain/0/rxen-vm/xenbus");
}

#[test]
fn default_open_finds_c_xenstored() {
    in_vm();
    let c = Client::open().expect("xs_open-style discovery");
    assert_eq!(c.get_domain_path(3).unwrap(), "/local/domain/3");
    assert!(c.is_domain_introduced(0).unwrap());
    assert!(!c.is_domain_introduced(31000).unwrap());
    let w = c.watch("@releaseDomain").unwrap();
    assert_eq!(common::next_path(&w), "@releaseDomain");
    // Dom0's own entries exist, as the toolstack made them.
    assert!(c.exists("/local/domain/0").unwrap());
}

#[test]
fn xen_tools_and_our_client_agree_through_c_xenstored() {
    in_vm();
    let c = Client::open_path(xenstore::client::SOCKET_PATH).unwrap();
    let base = "/local/domain/0/rxen-vm/tools";
    common::reset(&c, base);
    c.write(&format!("{base}/ours"), "from rust").unwrap();
    assert_eq!(
        ok(None, "xenstore-read", &[&format!("{base}/ours")]),
        "from rust\n"
    );
    ok(
        None,
        "xenstore-write",
        &[&format!("{base}/theirs"), "from C"],
    );
    assert_eq!(c.read(&format!("{base}/theirs")).unwrap(), b"from C");
    ok(
        None,
        "xenstore-chmod",
        &[&format!("{base}/theirs"), "n0", "r5"],
    );
    assert_eq!(
        c.get_perms(&format!("{base}/theirs")).unwrap(),
        Permissions::new(0, Access::NONE).with(5, Access::READ)
    );
    c.rm(base).unwrap();
    assert_eq!(
        tool(None, "xenstore-exists", &[base]).status.code(),
        Some(1)
    );
}

#[test]
fn xen_tools_against_our_xenstored_on_a_second_socket() {
    in_vm();
    let dir = std::env::temp_dir().join("rxen-vm-xenstored");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("socket");
    let server = Server::new()
        .unwrap()
        .listen(&sock)
        .unwrap()
        .spawn()
        .unwrap();
    let s = Some(sock.as_path());
    ok(s, "xenstore-write", &["/vm/a", "one", "/vm/b", "two"]);
    assert_eq!(ok(s, "xenstore-read", &["/vm/a"]), "one\n");
    assert_eq!(ok(s, "xenstore-list", &["/vm"]), "a\nb\n");
    assert_eq!(
        ok(s, "xenstore-ls", &["-f", "/vm"]),
        "/vm/a = \"one\"\n/vm/b = \"two\"\n"
    );
    ok(s, "xenstore-chmod", &["/vm/a", "b3"]);
    let c = Client::open_path(&sock).unwrap();
    assert_eq!(c.get_perms("/vm/a").unwrap().to_string(), "b3");
    ok(s, "xenstore-rm", &["/vm/a"]);
    assert_eq!(c.read("/vm/a").unwrap_err().errno(), Some(Errno::ENOENT));
    assert_eq!(
        tool(s, "xenstore-exists", &["/vm/a"]).status.code(),
        Some(1)
    );
    // `xenstore-control quota` prints C xenstored's layout from ours: the same `nodes` line as
    // from the real daemon (both run with the default quota), and a setting takes effect.
    let nodes_line = "nodes            :     1000 Nodes per domain\n";
    assert!(ok(None, "xenstore-control", &["quota"]).contains(nodes_line));
    assert!(ok(s, "xenstore-control", &["quota"]).contains(nodes_line));
    ok(s, "xenstore-control", &["quota", "set", "nodes", "77"]);
    assert!(ok(s, "xenstore-control", &["quota"]).contains("nodes            :       77 "));
    let usage = ok(s, "xenstore-control", &["quota", "0"]);
    assert!(
        usage.starts_with("Domain 0:\nnodes           : "),
        "{usage}"
    );
    assert!(
        !tool(s, "xenstore-control", &["quota", "set", "nodes", "0"])
            .status
            .success()
    );
    // The real daemon is untouched by all this.
    let real = Client::open_path(xenstore::client::SOCKET_PATH).unwrap();
    assert!(!real.exists("/vm/b").unwrap());
    drop(c);
    server.stop().unwrap();
}
