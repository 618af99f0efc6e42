//! The program the two-domain real-Xen tests (`tests/vm_two_domains.rs`) run inside a PV guest.
//! `scripts/xen-vm-test` builds it statically (feature `vm-tests`) into the guest initrd
//! `/boot/initrd-guest-rxen.cpio`; the guest's init runs `/rxen/bin/vm_peer ARGS` when its kernel
//! command line has `rxen.run=vm_peer,ARG,...`. It reports through xenstore, under its own
//! `/local/domain/<domid>/data/rxen-peer/` (see `tests/vm_common/protocol.rs`), and on its
//! console.
//!
//! `vm_peer exchange PAGES SEED`: report the Xen devices the guest has, share PAGES pages with
//! dom0 through our [`Gntalloc`], write the pattern of SEED into them, bind an unbound event
//! channel for dom0 with our [`EventChannels`], publish the grant references and the port, and
//! wait for dom0's event; then check dom0's reply in every page, notify dom0 back, and hold the
//! pages and the port until the guest is destroyed.

#[path = "../tests/vm_common/protocol.rs"]
mod protocol;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use xenctrl::evtchn::EventChannels;
use xengnttab::{DomainId, Gntalloc};
use xenstore::Client;

/// How long the guest waits for dom0's event: dom0 maps and checks the pages first, which
/// takes a few seconds under TCG.
const DOM0_TIMEOUT: Duration = Duration::from_secs(180);

/// The guest's home in xenstore, and a client to it.
struct Store {
    client: Client,
    dir: String,
}

impl Store {
    fn open() -> Result<Store, String> {
        let client = Client::open().map_err(|e| format!("open xenstore: {e}"))?;
        // A relative path is relative to the domain's home, /local/domain/<domid>.
        let domid = client
            .read_string("domid")
            .map_err(|e| format!("read our domid: {e}"))?;
        let dir = format!("/local/domain/{}/{}", domid.trim(), protocol::DIR);
        Ok(Store { client, dir })
    }

    fn write(&self, key: &str, value: &str) -> Result<(), String> {
        let path = format!("{}/{key}", self.dir);
        self.client
            .write(&path, value)
            .map_err(|e| format!("write {path}: {e}"))
    }
}

/// Writes the Xen devices the guest has to [`protocol::DEVICES`].
fn report_devices(store: &Store) -> Result<(), String> {
    let found: Vec<&str> = protocol::DEVICE_PATHS
        .iter()
        .copied()
        .filter(|p| Path::new(p).exists())
        .collect();
    store.write(protocol::DEVICES, &found.join(","))
}

fn exchange(store: &Store, pages: &str, seed: &str) -> Result<(), String> {
    let pages: usize = pages
        .parse()
        .map_err(|_| format!("bad page count {pages}"))?;
    let seed: u32 = seed.parse().map_err(|_| format!("bad seed {seed}"))?;
    report_devices(store)?;
    let gntalloc = Gntalloc::open().map_err(|e| format!("open gntalloc: {e}"))?;
    let shared = gntalloc
        .share(DomainId::DOM0, pages, true)
        .map_err(|e| format!("share {pages} pages with dom0: {e}"))?;
    let mem = shared.slice();
    for page in 0..pages {
        mem.write_from(
            page * protocol::PAGE_SIZE,
            &protocol::pattern_page(seed, page),
        )
        .map_err(|e| format!("write the pattern: {e}"))?;
    }
    let events = EventChannels::open().map_err(|e| format!("open evtchn: {e}"))?;
    let port = events
        .bind_unbound(DomainId::DOM0)
        .map_err(|e| format!("bind an unbound port for dom0: {e}"))?;
    let refs: Vec<String> = shared.refs().iter().map(|r| r.get().to_string()).collect();
    store.write(protocol::REFS, &refs.join(","))?;
    store.write(protocol::PORT, &port.port().get().to_string())?;
    store.write(protocol::STATE, protocol::state::SHARED)?;
    println!(
        "rxen-peer: shared {pages} pages, refs {refs:?}, port {}",
        port.port()
    );

    let got = events
        .wait_timeout(DOM0_TIMEOUT)
        .map_err(|e| format!("wait for dom0's event: {e}"))?
        .ok_or_else(|| format!("no event from dom0 in {DOM0_TIMEOUT:?}"))?;
    if got != port.port() {
        return Err(format!("event on port {got}, expected {}", port.port()));
    }
    let mut buf = vec![0; protocol::PAGE_SIZE];
    for page in 0..pages {
        mem.read_into(page * protocol::PAGE_SIZE, &mut buf)
            .map_err(|e| format!("read the reply: {e}"))?;
        if let Some(off) = protocol::first_difference(&buf, &protocol::reply_page(seed, page)) {
            return Err(format!("page {page}: no reply from dom0 at offset {off}"));
        }
    }
    events
        .unmask(port.port())
        .map_err(|e| format!("unmask {}: {e}", port.port()))?;
    port.notify()
        .map_err(|e| format!("notify dom0 on {}: {e}", port.port()))?;
    store.write(protocol::STATE, protocol::state::REPLY_OK)?;
    println!("rxen-peer: reply checked, dom0 notified; holding the pages");
    // Hold the grants and the port: the test destroys the guest with dom0's mapping open.
    loop {
        std::thread::park();
    }
}

fn run(store: &Store, args: &[String]) -> Result<(), String> {
    match args {
        [mode, pages, seed] if mode == "exchange" => exchange(store, pages, seed),
        _ => Err(format!("unknown arguments {args:?}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("rxen-peer: {args:?}");
    let store = match Store::open() {
        Ok(s) => s,
        Err(e) => {
            println!("rxen-peer: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&store, &args) {
        Ok(()) => {
            println!("rxen-peer: done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("rxen-peer: error: {e}");
            // Tell the waiting test at once rather than let it time out.
            let _ = store.write(protocol::STATE, &format!("{}{e}", protocol::state::ERROR));
            ExitCode::FAILURE
        }
    }
}
