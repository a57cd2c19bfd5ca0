//! The gateway's configuration file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use gridchan_chain::LedgerSection;

/// A gateway's configuration, as read from TOML. Relative paths are relative to the file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: NodeSection,
    pub ledger: LedgerSection,
    #[serde(default)]
    pub metering: MeteringSection,
    pub meter: MeterSection,
    #[serde(default)]
    pub peers: Vec<PeerSection>,
    /// Watchtowers that guard this gateway's channels while it is offline.
    #[serde(default)]
    pub towers: Vec<PeerSection>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// The identity key file (created by `gridchan init`, mode 0600).
    pub key: PathBuf,
    /// The data folder: the channel store lives here.
    pub data: PathBuf,
    /// Where neighbours reach this gateway.
    pub listen: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeteringSection {
    /// The metering interval in seconds; divides an hour.
    pub interval_seconds: u32,
    /// Run the clock this many times faster than wall time (demos; 1 in real use).
    #[serde(default = "one")]
    pub speedup: u32,
}

fn one() -> u32 {
    1
}

impl Default for MeteringSection {
    fn default() -> MeteringSection {
        MeteringSection {
            interval_seconds: 900,
            speedup: 1,
        }
    }
}

/// Where readings come from.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum MeterSection {
    /// A seeded simulation of solar generation and household load.
    Simulated {
        seed: u64,
        pv_peak_w: u32,
        load_avg_w: u32,
        #[serde(default)]
        utc_offset_minutes: i32,
    },
    /// Recorded readings, replayed from the first row on.
    Csv { path: PathBuf },
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// `PUBKEY@HOST:PORT`
    pub address: String,
}

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {detail}")]
    Io { path: String, detail: String },
    #[error("config {path}: {detail}")]
    Invalid { path: String, detail: String },
}

impl Config {
    /// Reads and checks `path`; relative paths inside become relative to its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: name.clone(),
            detail: e.to_string(),
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: name.clone(),
            // toml's message spans several lines with a source excerpt: keep the first.
            detail: e
                .message()
                .lines()
                .next()
                .unwrap_or("invalid TOML")
                .to_string()
                + &e.span()
                    .map(|s| format!(" (at byte {})", s.start))
                    .unwrap_or_default(),
        })?;
        let secs = config.metering.interval_seconds;
        if secs == 0 || secs > 3600 || 3600 % secs != 0 {
            return Err(ConfigError::Invalid {
                path: name,
                detail: format!("metering.interval_seconds = {secs} does not divide an hour"),
            });
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut config.node.key);
        fix(&mut config.node.data);
        if let MeterSection::Csv { path } = &mut config.meter {
            fix(path);
        }
        Ok(config)
    }
}

/// The commented configuration `gridchan init` writes.
pub fn template(listen: SocketAddr, ledger: &str) -> String {
    let ledger = LedgerSection::template(ledger, "opening, closing and disputing its channels");
    format!(
        r#"# gridchan gateway configuration. Relative paths are relative to this file.

[node]
# The identity key: 32 secret bytes in hex, readable by you only (mode 0600). Your node id,
# which neighbours use to reach you, is derived from it: see `gridchan status`.
key = "node.key"
# The data folder: channel states live here in SQLite. Back it up; never run two daemons on it.
data = "data"
# Where neighbours reach this gateway (UDP, QUIC). Use 0.0.0.0:PORT to accept from the network.
listen = "{listen}"

{ledger}
[metering]
# The metering interval in seconds (divides an hour). Neighbours must use the same.
interval_seconds = 900

[meter]
# Where readings come from: "simulated" (a seeded model of solar and household load) or
# "csv" (recorded readings: timestamp_utc,load_wh,pv_wh,import_wh,export_wh).
kind = "simulated"
seed = 1
pv_peak_w = 4000
load_avg_w = 400
# kind = "csv"
# path = "home.csv"

# Neighbours to keep channels with, one [[peers]] section each:
# [[peers]]
# address = "PUBKEY@HOST:PORT"

# Watchtowers that refute a neighbour's stale state while this gateway is offline, one
# [[towers]] section each (or `gridchan tower add PUBKEY@HOST:PORT` while the daemon runs):
# [[towers]]
# address = "PUBKEY@HOST:PORT"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_loads_with_paths_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gridchan.toml");
        std::fs::write(
            &path,
            template("127.0.0.1:7500".parse().unwrap(), "KEY@127.0.0.1:7400"),
        )
        .unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.node.key, dir.path().join("node.key"));
        assert_eq!(c.node.data, dir.path().join("data"));
        assert_eq!(c.metering.interval_seconds, 900);
        assert!(matches!(c.meter, MeterSection::Simulated { seed: 1, .. }));
        assert!(c.peers.is_empty());
    }

    #[test]
    fn an_evm_ledger_section_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gridchan.toml");
        let text = template("127.0.0.1:7500".parse().unwrap(), "K@127.0.0.1:1").replace(
            "mode = \"remote\"\naddress = \"K@127.0.0.1:1\"",
            "mode = \"evm\"\nrpc = \"http://127.0.0.1:8545\"\nadjudicator = \"0xe7f1725e7734ce288f8367e1bb143e90bb3f0512\"\ntoken = \"0x5fbdb2315678afecb367f032d93f642f64180aa3\"\ndeployed_at = 2",
        );
        // A misspelt key is refused, not ignored.
        std::fs::write(&path, text.replace("deployed_at", "deployed_on")).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("deployed_on"), "{err}");
        std::fs::write(&path, text).unwrap();
        let c = Config::load(&path).unwrap();
        assert!(matches!(
            c.ledger,
            LedgerSection::Evm(gridchan_chain::EvmSection {
                confirmations: 1,
                deployed_at: 2,
                ..
            })
        ));
    }

    #[test]
    fn mistakes_are_one_line_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        let text = template("127.0.0.1:7500".parse().unwrap(), "K@127.0.0.1:1")
            .replace("pv_peak_w", "pv_peek_w");
        std::fs::write(&path, text).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("config {}", path.display())),
            "{err}"
        );
        assert!(err.contains("pv_peek_w"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        let text = template("127.0.0.1:7500".parse().unwrap(), "K@127.0.0.1:1")
            .replace("interval_seconds = 900", "interval_seconds = 700");
        std::fs::write(&path, text).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("does not divide an hour"), "{err}");
    }
}
