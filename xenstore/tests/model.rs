//! Random operations against our server, checked against a plain map of path -> value.
//!
//! The seed comes from `RXEN_TEST_SEED` (default: the clock) and is printed, so a failing run
//! can be replayed exactly with `RXEN_TEST_SEED=<seed> cargo test -p xenstore --test model`.

use std::collections::BTreeMap;

use fastrand::Rng;

use xenstore::server::Server;
use xenstore::{Client, Errno};

fn random_path(r: &mut Rng) -> String {
    let depth = r.usize(1..=3);
    let mut p = String::from("/m");
    for _ in 0..depth {
        p.push('/');
        p.push(char::from(b'a' + r.u8(..3)));
    }
    p
}

/// The model: every existing path under /m and its value. Parents exist implicitly.
fn model_mkpath(m: &mut BTreeMap<String, Vec<u8>>, path: &str) {
    let mut cur = String::new();
    for comp in path.split('/').skip(1) {
        cur.push('/');
        cur.push_str(comp);
        m.entry(cur.clone()).or_default();
    }
}

fn children(m: &BTreeMap<String, Vec<u8>>, path: &str) -> Vec<String> {
    let prefix = format!("{path}/");
    let mut v: Vec<String> = m
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix))
        .filter(|rest| !rest.contains('/'))
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

fn run(seed: u64, steps: usize, c: &Client) {
    let mut r = Rng::with_seed(seed);
    let mut m: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    c.mkdir("/m").unwrap();
    m.insert("/m".into(), Vec::new());
    for step in 0..steps {
        let p = random_path(&mut r);
        let ctx = format!("seed {seed} step {step} path {p}");
        match r.u8(..6) {
            0 | 1 => {
                let v = r.u64(..).to_le_bytes()[..r.usize(..8)].to_vec();
                c.write(&p, &v).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                model_mkpath(&mut m, &p);
                m.insert(p.clone(), v);
            }
            2 => {
                c.mkdir(&p).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                model_mkpath(&mut m, &p);
            }
            3 => {
                let parent_exists = m.contains_key(xenstore::path::parent(&p));
                match c.rm(&p) {
                    Ok(()) => {
                        assert!(parent_exists, "{ctx}: rm succeeded without a parent");
                        let prefix = format!("{p}/");
                        m.retain(|k, _| k != &p && !k.starts_with(&prefix));
                    }
                    Err(e) => {
                        assert!(!parent_exists, "{ctx}: {e}");
                        assert_eq!(e.errno(), Some(Errno::ENOENT), "{ctx}");
                    }
                }
            }
            4 => match (c.read(&p), m.get(&p)) {
                (Ok(v), Some(want)) => assert_eq!(&v, want, "{ctx}"),
                (Err(e), None) => assert_eq!(e.errno(), Some(Errno::ENOENT), "{ctx}"),
                (got, want) => panic!("{ctx}: got {got:?}, model {want:?}"),
            },
            _ => match c.directory(&p) {
                Ok(mut v) => {
                    v.sort();
                    assert_eq!(v, children(&m, &p), "{ctx}");
                }
                Err(e) => {
                    assert!(!m.contains_key(&p), "{ctx}: {e}");
                    assert_eq!(e.errno(), Some(Errno::ENOENT), "{ctx}");
                }
            },
        }
    }
    assert_eq!(
        c.control("check", &[]).unwrap(),
        b"OK\0",
        "seed {seed}: tree check"
    );
}

/// `RXEN_TEST_SEED`, or a seed from the clock; printed either way.
fn seed() -> u64 {
    let seed = std::env::var("RXEN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs() ^ u64::from(d.subsec_nanos()) << 32)
        });
    eprintln!("RXEN_TEST_SEED={seed}");
    seed
}

#[test]
fn random_operations_match_a_map() {
    let seed = seed();
    let s = Server::new().unwrap().spawn().unwrap();
    let c = s.controller().client().unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(seed, 3000, &c)));
    if r.is_err() {
        panic!("failed with RXEN_TEST_SEED={seed}");
    }
}
