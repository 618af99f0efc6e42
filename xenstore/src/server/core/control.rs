//! The `CONTROL` command: check, help, log, logfile, print and quota.

use std::fmt::Write as _;

use nix::errno::Errno;

use super::{ok, Bytes, Core, OpResult};
use crate::wire;

impl Core {
    pub(super) fn op_control(&mut self, payload: &[u8], out: &mut Vec<u8>) -> OpResult {
        let mut it = wire::strings(payload);
        let cmd = it.next().ok_or(Errno::EINVAL)?;
        let args: Vec<&[u8]> = it.collect();
        match (cmd, args.as_slice()) {
            (b"check", []) => {
                self.tree.check().map_err(|_| Errno::EIO)?;
                ok(out)
            }
            (b"help", []) => {
                out.extend_from_slice(
                    b"Valid commands:\ncheck\nhelp\nlog on|off\nlogfile <file>\nprint <string>\n\
                      quota [set <name> <val>|<domid>]\nquota-soft [set <name> <val>]\n\0",
                );
                Ok(())
            }
            (b"log", [b"on" | b"off"]) | (b"logfile", [_]) => ok(out),
            (b"print", [s]) => {
                eprintln!("xenstored: {}", String::from_utf8_lossy(s));
                ok(out)
            }
            (b"quota", []) => {
                out.extend_from_slice(b"Quota settings:\n");
                for (name, value, what) in self.quota_table() {
                    let _ = writeln!(Bytes(out), "{name:<17}: {value:>8} {what}");
                }
                out.push(0);
                Ok(())
            }
            (b"quota", [b"set", name, value]) => {
                let v = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok())
                    .filter(|&v| v >= 1)
                    .ok_or(Errno::EINVAL)?;
                let q = &mut self.quotas;
                let slot = match *name {
                    b"nodes" => &mut q.nodes_per_domain,
                    b"watches" => &mut q.watches_per_domain,
                    b"transactions" => &mut q.transactions_per_connection,
                    b"transaction-nodes" => &mut q.nodes_per_transaction,
                    b"node-size" => &mut q.entry_size,
                    b"path-max" => &mut q.path_len,
                    b"permissions" => &mut q.perms_per_node,
                    _ => return Err(Errno::EINVAL),
                };
                *slot = v;
                ok(out)
            }
            (b"quota", [domid]) => {
                let domid = wire::atou(domid);
                if !self.is_domain_introduced(domid) {
                    return Err(Errno::ENOENT);
                }
                let conns = || self.conns.values().filter(|c| c.domid() == domid);
                let watches: usize = conns().map(|c| c.watches.len()).sum();
                let transactions: usize = conns().map(|c| c.txs.len()).sum();
                let _ = write!(
                    Bytes(out),
                    "Domain {domid}:\n{:<16}: {:>8}\n{:<16}: {watches:>8}\n\
                     {:<16}: {transactions:>8}\n\0",
                    "nodes",
                    self.tree.owned(domid),
                    "watches",
                    "transactions",
                );
                Ok(())
            }
            // No soft quotas: C xenstored's only one is memory, which this daemon does not count.
            (b"quota-soft", []) => {
                out.extend_from_slice(b"Quota settings:\n\0");
                Ok(())
            }
            _ => Err(Errno::EINVAL),
        }
    }

    /// The hard quotas as C xenstored's `CONTROL quota` lists them: name, value, description.
    pub(super) fn quota_table(&self) -> [(&'static str, usize, &'static str); 7] {
        let q = &self.quotas;
        [
            ("nodes", q.nodes_per_domain, "Nodes per domain"),
            ("watches", q.watches_per_domain, "Watches per domain"),
            (
                "transactions",
                q.transactions_per_connection,
                "Transactions per domain",
            ),
            (
                "transaction-nodes",
                q.nodes_per_transaction,
                "Max. number of accessed nodes per transaction",
            ),
            ("node-size", q.entry_size, "Max. size of a node"),
            ("path-max", q.path_len, "Max. length of a node path"),
            (
                "permissions",
                q.perms_per_node,
                "Max. number of permissions per node",
            ),
        ]
    }
}
