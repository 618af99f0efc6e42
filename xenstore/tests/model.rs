//! Random operations against our server, checked against a plain map of path -> value.
//!
//! The seed comes from `RXEN_SEED` (default fixed) and is printed on failure, so a failing run
//! can be replayed exactly.

use std::collections::BTreeMap;

use xenstore::server::Server;
use xenstore::{Client, Errno};

/// xorshift64*: small, seeded, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_path(r: &mut Rng) -> String {
    let depth = 1 + r.below(3);
    let mut p = String::from("/m");
    for _ in 0..depth {
        p.push('/');
        p.push((b'a' + u8::try_from(r.below(3)).unwrap_or(0)) as char);
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
    let mut r = Rng(seed | 1);
    let mut m: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    c.mkdir("/m").unwrap();
    m.insert("/m".into(), Vec::new());
    for step in 0..steps {
        let p = random_path(&mut r);
        let ctx = format!("seed {seed} step {step} path {p}");
        match r.below(6) {
            0 | 1 => {
                let v = r.next().to_le_bytes()[..usize::try_from(r.below(8)).unwrap_or(0)].to_vec();
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

#[test]
fn random_operations_match_a_map() {
    let seed = std::env::var("RXEN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0004);
    let s = Server::new().unwrap().spawn().unwrap();
    let c = s.controller().client().unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(seed, 3000, &c)));
    if r.is_err() {
        panic!("failed with RXEN_SEED={seed}");
    }
}
