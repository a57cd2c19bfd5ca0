//! The tower's configuration file (`gridchan watchtower --config FILE`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::tower::{Admission, TowerLimits};

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TowerConfig {
    /// The tower's key (created on first start, mode 0600). Its ledger account pays for
    /// refutes.
    pub key: PathBuf,
    /// Where the tower keeps its SQLite store.
    pub data: PathBuf,
    /// Where gateways reach the tower (UDP, QUIC).
    pub listen: SocketAddr,
    /// The ledger to follow and refute on.
    pub ledger: gridchan_chain::LedgerSection,
    #[serde(default)]
    pub limits: LimitsSection,
    /// Where the tower serves Prometheus metrics (`GET /metrics`); none unless set.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Let any gateway register (true), or only the keys in `clients`.
    #[serde(default = "yes")]
    pub open: bool,
    #[serde(default)]
    pub clients: Vec<String>,
    #[serde(default = "channels")]
    pub channels_per_client: usize,
    #[serde(default = "rate")]
    pub states_per_second: f64,
    #[serde(default = "burst")]
    pub burst: f64,
    /// Gateways connected at once (each guarded gateway holds a connection).
    #[serde(default = "clients")]
    pub max_clients: usize,
}

fn clients() -> usize {
    256
}

fn yes() -> bool {
    true
}
fn channels() -> usize {
    TowerLimits::default().channels_per_client
}
fn rate() -> f64 {
    TowerLimits::default().states_per_second
}
fn burst() -> f64 {
    TowerLimits::default().burst
}

impl Default for LimitsSection {
    fn default() -> LimitsSection {
        LimitsSection {
            open: true,
            clients: Vec::new(),
            channels_per_client: channels(),
            states_per_second: rate(),
            burst: burst(),
            max_clients: clients(),
        }
    }
}

/// A tower configuration that cannot be used, in one line: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl TowerConfig {
    /// Reads `path`; relative paths inside are relative to its folder. Errors are one line.
    pub fn load(path: &Path) -> Result<TowerConfig, ConfigError> {
        let name = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config {name}: {e}")))?;
        let mut c: TowerConfig = toml::from_str(&text).map_err(|e| {
            // Before the EVM ledger, `ledger` was a line with the node's address.
            if let Ok(toml::Value::String(address)) = toml::from_str::<toml::Table>(&text)
                .map(|mut t| t.remove("ledger").unwrap_or(toml::Value::Boolean(false)))
            {
                return ConfigError(format!(
                    "config {name}: ledger is a section now: replace `ledger = \"{address}\"` with `[ledger]`, `mode = \"remote\"` and `address = \"{address}\"` (above [limits])"
                ));
            }
            ConfigError(format!(
                "config {name}: {}",
                e.message().lines().next().unwrap_or("invalid TOML")
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut c.key, &mut c.data] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        c.limits()?;
        Ok(c)
    }

    pub fn limits(&self) -> Result<TowerLimits, ConfigError> {
        let l = &self.limits;
        let admission = if l.open {
            Admission::Open
        } else {
            let mut keys = HashSet::new();
            for k in &l.clients {
                keys.insert(k.parse().map_err(|e| {
                    ConfigError(format!("limits.clients: {k:?} is not a node id: {e}"))
                })?);
            }
            Admission::Only(keys)
        };
        if l.states_per_second <= 0.0 || l.burst < 1.0 {
            return Err(ConfigError(
                "limits: states_per_second must be positive and burst at least 1".into(),
            ));
        }
        Ok(TowerLimits {
            admission,
            channels_per_client: l.channels_per_client,
            states_per_second: l.states_per_second,
            burst: l.burst,
        })
    }
}

/// The commented configuration `gridchan watchtower init` writes.
pub fn template(listen: SocketAddr, ledger: &str) -> String {
    let ledger = gridchan_chain::LedgerSection::template(ledger, "the refutes it sends");
    format!(
        r#"# gridchan watchtower configuration. Relative paths are relative to this file.

# The tower's key (created on first start, mode 0600). Its account on the ledger sends the
# refutes and pays for them: the local ledger charges no fees; on an EVM chain, keep this
# account funded with the chain's native currency for gas.
key = "tower.key"
# The data folder: one row per guarded channel, the tower's actions, and how far it has
# followed the ledger.
data = "data"
# Where gateways reach the tower (UDP, QUIC). Use 0.0.0.0:PORT to accept from the network.
listen = "{listen}"
# Prometheus metrics for the operator (clients, channels guarded, refutes, the account's gas) on
# http://ADDRESS/metrics; off unless set.
# metrics = "127.0.0.1:9711"

{ledger}
[limits]
# Let any gateway register (true), or only the node ids listed in `clients`.
open = true
# clients = ["02ab..."]
# How many channels one client may have guarded, and how many states per second it may send
# (on average, and in a burst).
channels_per_client = 1000
states_per_second = 50
burst = 500
# Gateways connected at once: one connection each.
max_clients = 256
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tower.toml");
        std::fs::write(
            &path,
            template("127.0.0.1:7600".parse().unwrap(), "K@127.0.0.1:1"),
        )
        .unwrap();
        let c = TowerConfig::load(&path).unwrap();
        assert_eq!(c.data, dir.path().join("data"));
        assert_eq!(c.limits().unwrap().admission, Admission::Open);
        assert_eq!(c.limits.max_clients, 256);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("open = true", "open = false\nclients = [\"nope\"]");
        std::fs::write(&path, text).unwrap();
        let e = TowerConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("not a node id"), "{e}");
        assert_eq!(e.lines().count(), 1);
    }

    #[test]
    fn an_evm_ledger_section_loads_and_the_old_one_line_form_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tower.toml");
        let text = template("127.0.0.1:7600".parse().unwrap(), "K@127.0.0.1:1").replace(
            "mode = \"remote\"\naddress = \"K@127.0.0.1:1\"",
            "mode = \"evm\"\nrpc = \"http://127.0.0.1:8545\"\nadjudicator = \"0xe7f1725e7734ce288f8367e1bb143e90bb3f0512\"\ntoken = \"0x5fbdb2315678afecb367f032d93f642f64180aa3\"\nconfirmations = 3",
        );
        std::fs::write(&path, text).unwrap();
        let c = TowerConfig::load(&path).unwrap();
        assert!(matches!(
            c.ledger,
            gridchan_chain::LedgerSection::Evm(gridchan_chain::EvmSection {
                confirmations: 3,
                deployed_at: 0,
                ..
            })
        ));
        std::fs::write(
            &path,
            "key = \"k\"\ndata = \"d\"\nlisten = \"127.0.0.1:1\"\nledger = \"K@127.0.0.1:1\"\n",
        )
        .unwrap();
        let e = TowerConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("ledger is a section now"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}
