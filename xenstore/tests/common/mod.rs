//! Client tests shared by every xenstored implementation: our server in-process and over a
//! socket, and (in the Xen VM) the real C xenstored. Each takes a privileged client and a base
//! path it may use freely.

#![allow(dead_code)]

use std::collections::HashSet;
use std::time::Duration;

use xenstore::perms::{Access, Permissions};
use xenstore::{Batch, Client, Errno, Error, ReadOpt};

/// Long enough that a missing event is a real failure, not a slow machine.
pub const EVENT_WAIT: Duration = Duration::from_secs(10);

pub fn next_path(w: &xenstore::Watch) -> String {
    match w.next_event_timeout(EVENT_WAIT) {
        Ok(Some(ev)) => ev.path,
        Ok(None) => panic!("no event on watch {} within {EVENT_WAIT:?}", w.path()),
        Err(e) => panic!("watch {} failed: {e}", w.path()),
    }
}

/// Makes `base` absent, whether or not it or its parent existed.
pub fn reset(c: &Client, base: &str) {
    c.mkdir(base).unwrap();
    c.rm(base).unwrap();
}

pub fn read_write_and_errors(c: &Client, base: &str) {
    reset(c, base);
    c.write(&format!("{base}/a/b"), "hello").unwrap();
    assert_eq!(c.read(&format!("{base}/a/b")).unwrap(), b"hello");
    // Parents are created empty.
    assert_eq!(c.read(&format!("{base}/a")).unwrap(), b"");
    // Binary values with nuls survive.
    c.write(&format!("{base}/bin"), [0u8, 1, 0, 255]).unwrap();
    assert_eq!(c.read(&format!("{base}/bin")).unwrap(), [0u8, 1, 0, 255]);
    c.write(&format!("{base}/empty"), "").unwrap();
    assert_eq!(c.read(&format!("{base}/empty")).unwrap(), b"");

    let e = c.read(&format!("{base}/missing")).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::ENOENT), "{e}");
    assert!(
        e.to_string().contains("missing"),
        "error names the path: {e}"
    );
    assert!(!c.exists(&format!("{base}/missing")).unwrap());
    assert!(c.exists(&format!("{base}/a")).unwrap());

    for bad in ["/x//y", "/x/", "/x y", "/a.b"] {
        let e = c.write(bad, "v").unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EINVAL), "{bad}: {e}");
    }
    // The payload limit: path + nul + value may be 4096 bytes (4080 through xenbus).
    let p = format!("{base}/big");
    let max = vec![b'x'; c.max_payload() - p.len() - 1];
    c.write(&p, &max).unwrap();
    assert_eq!(c.read(&p).unwrap().len(), max.len());
    let e = c.write(&p, [max.as_slice(), b"y"].concat()).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::E2BIG), "{e}");

    // Pipelined reads: one result per path, in order, across chunk boundaries.
    let many: Vec<String> = (0..70).map(|i| format!("{base}/many/{i}")).collect();
    for (i, p) in many.iter().enumerate().filter(|(i, _)| i % 3 != 0) {
        c.write(p, i.to_string()).unwrap();
    }
    let mut paths: Vec<&str> = many.iter().map(String::as_str).collect();
    paths.push("/bad path");
    let got = c.read_many(&paths);
    assert_eq!(got.len(), paths.len());
    for (i, r) in got.iter().enumerate().take(70) {
        match r {
            Ok(v) => assert_eq!(v, i.to_string().as_bytes(), "{i}"),
            Err(e) => {
                assert_eq!(i % 3, 0, "{i}: {e}");
                assert_eq!(e.errno(), Some(Errno::ENOENT), "{i}: {e}");
            }
        }
    }
    assert_eq!(got[70].as_ref().unwrap_err().errno(), Some(Errno::EINVAL));

    // mkdir leaves existing values alone.
    c.mkdir(&format!("{base}/a/b")).unwrap();
    assert_eq!(c.read(&format!("{base}/a/b")).unwrap(), b"hello");
    c.mkdir(&format!("{base}/m/n")).unwrap();
    assert_eq!(c.read(&format!("{base}/m/n")).unwrap(), b"");
}

pub fn rm_semantics(c: &Client, base: &str) {
    reset(c, base);
    c.write(&format!("{base}/t/u/v"), "1").unwrap();
    c.write(&format!("{base}/t/w"), "2").unwrap();
    c.rm(&format!("{base}/t")).unwrap();
    assert!(!c.exists(&format!("{base}/t/u/v")).unwrap());
    assert!(!c.exists(&format!("{base}/t")).unwrap());
    assert_eq!(c.directory(base).unwrap(), Vec::<String>::new());
    // Missing node with an existing parent: fine. Missing parent too: ENOENT.
    c.rm(&format!("{base}/nothing")).unwrap();
    let e = c.rm(&format!("{base}/no/thing")).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::ENOENT), "{e}");
}

pub fn directories(c: &Client, base: &str) {
    reset(c, base);
    for n in ["c", "a", "b"] {
        c.write(&format!("{base}/d/{n}"), n).unwrap();
    }
    let mut got = c.directory(&format!("{base}/d")).unwrap();
    got.sort();
    assert_eq!(got, ["a", "b", "c"]);
    assert_eq!(
        c.directory(&format!("{base}/d/a")).unwrap(),
        Vec::<String>::new()
    );
    let e = c.directory(&format!("{base}/nope")).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::ENOENT));

    // More than 4096 bytes of names: DIRECTORY answers E2BIG, DIRECTORY_PART takes over.
    let dir = format!("{base}/large");
    let names: Vec<String> = (0..300)
        .map(|i| format!("child-with-a-long-name-{i:04}"))
        .collect();
    c.transaction(|tx| {
        for n in &names {
            tx.write(&format!("{dir}/{n}"), "")?;
        }
        Ok(())
    })
    .unwrap();
    let listed = c.directory(&dir).unwrap();
    assert_eq!(listed.len(), names.len());
    let a: HashSet<_> = listed.iter().collect();
    let b: HashSet<_> = names.iter().collect();
    assert_eq!(a, b);
}

pub fn permissions(c: &Client, base: &str) {
    reset(c, base);
    let p = format!("{base}/perm");
    c.write(&p, "v").unwrap();
    let want = Permissions::new(0, Access::NONE)
        .with(3, Access::READ)
        .with(4, Access::BOTH);
    c.set_perms(&p, &want).unwrap();
    assert_eq!(c.get_perms(&p).unwrap(), want);
    // Children inherit the parent's permissions.
    c.write(&format!("{p}/kid"), "k").unwrap();
    assert_eq!(c.get_perms(&format!("{p}/kid")).unwrap(), want);
    let e = c.get_perms(&format!("{base}/nope")).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::ENOENT));
}

pub fn transactions(c: &Client, base: &str) {
    reset(c, base);
    let k = format!("{base}/counter");
    c.write(&k, "0").unwrap();

    // Committed changes appear; aborted ones do not.
    let tx = c.transaction_start().unwrap();
    tx.write(&k, "1").unwrap();
    assert_eq!(c.read(&k).unwrap(), b"0", "uncommitted write is private");
    assert_eq!(tx.read(&k).unwrap(), b"1");
    tx.commit().unwrap();
    assert_eq!(c.read(&k).unwrap(), b"1");
    let tx = c.transaction_start().unwrap();
    tx.write(&k, "2").unwrap();
    tx.write(&format!("{base}/created"), "x").unwrap();
    tx.abort().unwrap();
    assert_eq!(c.read(&k).unwrap(), b"1");
    assert!(!c.exists(&format!("{base}/created")).unwrap());

    // A conflicting write between read and commit gives EAGAIN.
    let tx = c.transaction_start().unwrap();
    assert_eq!(tx.read(&k).unwrap(), b"1");
    tx.write(&format!("{base}/other"), "o").unwrap();
    c.write(&k, "5").unwrap();
    let e = tx.commit().unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EAGAIN), "{e}");
    assert!(!c.exists(&format!("{base}/other")).unwrap());

    // The closure API retries: the first attempt is disturbed, the second commits.
    let mut attempts = 0;
    let v = c
        .transaction(|tx| {
            attempts += 1;
            let n: u32 = tx.read_string(&k)?.parse().unwrap();
            if attempts == 1 {
                c.write(&k, (n + 10).to_string())?;
            }
            tx.write(&k, (n + 1).to_string())?;
            Ok(n + 1)
        })
        .unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(v, 16);
    assert_eq!(c.read(&k).unwrap(), b"16");

    // A budget that always conflicts runs out.
    let e = c
        .transaction_with_attempts(3, |tx| {
            let n = tx.read_string(&k)?;
            c.write(&k, format!("{n}x"))?;
            tx.write(&k, "never")?;
            Ok(())
        })
        .unwrap_err();
    assert!(
        matches!(e, xenstore::Error::TransactionConflict { attempts: 3 }),
        "{e}"
    );

    // Many writers with the closure API never lose an increment.
    c.write(&k, "0").unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..25 {
                    c.transaction_with_attempts(1000, |tx| {
                        let n: u32 = tx.read_string(&k)?.parse().unwrap();
                        tx.write(&k, (n + 1).to_string())
                    })
                    .unwrap();
                }
            });
        }
    });
    assert_eq!(c.read_string(&k).unwrap(), "100");
}

pub fn watches(c: &Client, base: &str) {
    reset(c, base);
    c.mkdir(base).unwrap();
    let w = c.watch(&format!("{base}/w")).unwrap();
    // First fire on registration, for the watched path itself (even if missing).
    assert_eq!(next_path(&w), format!("{base}/w"));
    c.write(&format!("{base}/w/x/y"), "1").unwrap();
    assert_eq!(next_path(&w), format!("{base}/w/x/y"));
    // Outside the subtree: no event. The sentinel write proves nothing came before it.
    c.write(&format!("{base}/wx"), "1").unwrap();
    c.write(&format!("{base}/w/sentinel"), "1").unwrap();
    assert_eq!(next_path(&w), format!("{base}/w/sentinel"));
    // Removing a subtree fires for it.
    c.rm(&format!("{base}/w/x")).unwrap();
    let mut seen = HashSet::new();
    let p = next_path(&w);
    seen.insert(p.clone());
    assert!(p.starts_with(&format!("{base}/w/x")), "{p}");
    // Permission changes fire too.
    c.set_perms(
        &format!("{base}/w/sentinel"),
        &Permissions::new(0, Access::READ),
    )
    .unwrap();
    loop {
        let p = next_path(&w);
        if p == format!("{base}/w/sentinel") {
            break;
        }
        assert!(p.starts_with(&format!("{base}/w/x")), "unexpected {p}");
    }

    // Two watches, two tokens; events go to the right one.
    let w2 = c
        .watch_with_token(&format!("{base}/v"), "second-token")
        .unwrap();
    assert_eq!(next_path(&w2), format!("{base}/v"));
    c.write(&format!("{base}/v/1"), "").unwrap();
    let ev = w2.next_event_timeout(EVENT_WAIT).unwrap().unwrap();
    assert_eq!(ev.token, "second-token");
    assert_eq!(ev.path, format!("{base}/v/1"));
    assert_eq!(w.try_next_event(), None);

    // Transactions fire on commit only.
    let tx = c.transaction_start().unwrap();
    tx.write(&format!("{base}/w/tx"), "1").unwrap();
    assert_eq!(w.try_next_event(), None);
    tx.commit().unwrap();
    assert_eq!(next_path(&w), format!("{base}/w/tx"));

    // Once unwatched, nothing more arrives: the second watch's sentinel proves it.
    w.unwatch().unwrap();
    c.write(&format!("{base}/w/after"), "1").unwrap();
    c.write(&format!("{base}/v/sentinel"), "1").unwrap();
    assert_eq!(next_path(&w2), format!("{base}/v/sentinel"));

    // A duplicate path+token is refused.
    let e = c
        .watch_with_token(&format!("{base}/v"), "second-token")
        .unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EEXIST), "{e}");
}

pub fn concurrent_requests(c: &Client, base: &str) {
    reset(c, base);
    std::thread::scope(|s| {
        for t in 0..8 {
            s.spawn(move || {
                for i in 0..50 {
                    let p = format!("{base}/t{t}/n{i}");
                    c.write(&p, format!("{t}-{i}")).unwrap();
                    assert_eq!(c.read_string(&p).unwrap(), format!("{t}-{i}"));
                }
            });
        }
    });
    for t in 0..8 {
        assert_eq!(c.directory(&format!("{base}/t{t}")).unwrap().len(), 50);
    }
}

/// [`ReadOpt`]: ENOENT is `None`, present nodes are `Some`, outside and inside a transaction.
pub fn read_opt(c: &Client, base: &str) {
    reset(c, base);
    let v = format!("{base}/v");
    let missing = format!("{base}/missing");
    c.write(&v, "value").unwrap();
    assert_eq!(c.read_opt(&v).unwrap().as_deref(), Some(&b"value"[..]));
    assert_eq!(c.read_string_opt(&v).unwrap().as_deref(), Some("value"));
    assert_eq!(c.directory_opt(base).unwrap(), Some(vec!["v".to_owned()]));
    assert_eq!(c.read_opt(&missing).unwrap(), None);
    assert_eq!(c.read_string_opt(&missing).unwrap(), None);
    assert_eq!(c.directory_opt(&missing).unwrap(), None);
    // A missing parent is ENOENT too.
    assert_eq!(c.read_opt(&format!("{missing}/deeper")).unwrap(), None);
    // An empty node is Some(empty), not None.
    c.write(&missing, "").unwrap();
    assert_eq!(c.read_opt(&missing).unwrap(), Some(Vec::new()));
    assert_eq!(c.directory_opt(&missing).unwrap(), Some(Vec::new()));
    c.rm(&missing).unwrap();
    // Other errors stay errors: an invalid path is EINVAL, not None.
    let e = c.read_opt("/not//valid").unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EINVAL), "{e}");

    // Non-UTF-8 bytes read as read_string reads them (lossily), not as None or an error.
    let bin = format!("{base}/bin");
    c.write(&bin, [b'a', 0xff, b'b']).unwrap();
    assert_eq!(
        c.read_string_opt(&bin).unwrap(),
        Some(c.read_string(&bin).unwrap())
    );
    assert_eq!(
        c.read_string_opt(&bin).unwrap().as_deref(),
        Some("a\u{fffd}b")
    );

    // Inside a transaction: its own uncommitted write is Some, its own removal is None.
    let tx = c.transaction_start().unwrap();
    let fresh = format!("{base}/fresh");
    tx.write(&fresh, "tx").unwrap();
    tx.rm(&v).unwrap();
    assert_eq!(tx.read_string_opt(&fresh).unwrap().as_deref(), Some("tx"));
    assert_eq!(tx.read_opt(&v).unwrap(), None);
    assert_eq!(tx.read_string_opt(&v).unwrap(), None);
    assert_eq!(tx.directory_opt(&missing).unwrap(), None);
    assert_eq!(
        c.read_opt(&fresh).unwrap(),
        None,
        "uncommitted write is private"
    );
    assert_eq!(c.read_string_opt(&v).unwrap().as_deref(), Some("value"));
    let mut names = tx.directory_opt(base).unwrap().unwrap();
    names.sort();
    assert_eq!(names, ["bin", "fresh"]);
    tx.abort().unwrap();
}

/// Every shared test, each under its own sub-path of `base`.
/// `apply`: many changes pipelined, across the client's chunk bounds (32 requests, 64 KiB), in
/// order; the first failure reported with its path, the rest still made outside a
/// transaction and none of them inside one.
pub fn batches(c: &Client, base: &str) {
    reset(c, base);
    c.apply(&Batch::new()).unwrap();
    // Permissions naming only dom0: C xenstored refuses (ENOENT) a domain Xen does not have.
    let owned = Permissions::new(0, Access::READ);
    let mut b = Batch::new();
    let big = "v".repeat(3000);
    for i in 0..100 {
        let p = format!("{base}/b/{i}");
        if i % 10 == 0 {
            // 30 KiB of values in this batch: the byte bound splits chunks too.
            b.write(&p, &big);
        } else {
            b.write_with_perms(&p, i.to_string(), &owned);
        }
    }
    // In order: written, then overwritten, then removed, then made again empty.
    b.write(format!("{base}/b/0"), "again")
        .rm(format!("{base}/b/1"))
        .mkdir(format!("{base}/b/1/sub"));
    c.apply(&b).unwrap();
    assert_eq!(c.read_string(&format!("{base}/b/0")).unwrap(), "again");
    assert_eq!(c.read(&format!("{base}/b/10")).unwrap(), big.as_bytes());
    assert_eq!(c.read_string(&format!("{base}/b/99")).unwrap(), "99");
    assert_eq!(c.read_string(&format!("{base}/b/1")).unwrap(), "");
    assert_eq!(c.directory(&format!("{base}/b/1")).unwrap(), ["sub"]);
    assert_eq!(c.get_perms(&format!("{base}/b/42")).unwrap(), owned);
    assert_eq!(c.directory(&format!("{base}/b")).unwrap().len(), 100);

    // A failure in the middle: the first one is reported, the others are made.
    let mut b = Batch::new();
    b.write(format!("{base}/f/before"), "1")
        .write("/bad path", "x")
        .rm(format!("{base}/no/such/parent"))
        .write(format!("{base}/f/after"), "2");
    let e = c.apply(&b).unwrap_err();
    assert!(
        matches!(&e, Error::Write { path, .. } if path == "/bad path"),
        "{e:?}"
    );
    assert_eq!(e.errno(), Some(Errno::EINVAL), "{e}");
    assert_eq!(c.read_string(&format!("{base}/f/before")).unwrap(), "1");
    assert_eq!(c.read_string(&format!("{base}/f/after")).unwrap(), "2");
    let mut b = Batch::new();
    b.write(format!("{base}/f/x"), "1")
        .rm(format!("{base}/no/such/parent"));
    let e = c.apply(&b).unwrap_err();
    assert!(matches!(&e, Error::Rm { .. }), "{e:?}");
    assert_eq!(e.errno(), Some(Errno::ENOENT), "{e}");
    // A nul byte in a path is refused before anything is sent for it.
    let mut b = Batch::new();
    b.set_perms("/a\0b", &owned);
    let e = c.apply(&b).unwrap_err();
    assert!(matches!(&e, Error::SetPerms { .. }), "{e:?}");

    // Inside a transaction, a failed batch made nothing.
    let mut b = Batch::new();
    b.write(format!("{base}/t/one"), "1")
        .mkdir(format!("{base}/t/two"))
        .write("/bad path", "x");
    let e = c.transaction(|t| t.apply(&b)).unwrap_err();
    assert!(matches!(&e, Error::Write { .. }), "{e:?}");
    assert!(!c.exists(&format!("{base}/t/one")).unwrap());
    assert!(!c.exists(&format!("{base}/t/two")).unwrap());
    // And a good one is made at commit, with the transaction's reads pipelined too.
    let mut b = Batch::new();
    b.write(format!("{base}/t/one"), "1")
        .mkdir(format!("{base}/t/two"));
    c.transaction(|t| {
        t.apply(&b)?;
        let got = t.read_many(&[&format!("{base}/t/one"), &format!("{base}/t/three")]);
        assert_eq!(got[0].as_ref().unwrap(), b"1");
        assert_eq!(got[1].as_ref().unwrap_err().errno(), Some(Errno::ENOENT));
        Ok(())
    })
    .unwrap();
    assert_eq!(c.read_string(&format!("{base}/t/one")).unwrap(), "1");
}

pub fn run_all(c: &Client, base: &str) {
    read_write_and_errors(c, &format!("{base}/rw"));
    rm_semantics(c, &format!("{base}/rm"));
    directories(c, &format!("{base}/dir"));
    permissions(c, &format!("{base}/perms"));
    transactions(c, &format!("{base}/tx"));
    watches(c, &format!("{base}/watch"));
    concurrent_requests(c, &format!("{base}/conc"));
    read_opt(c, &format!("{base}/opt"));
    batches(c, &format!("{base}/batch"));
    reset(c, base);
}
