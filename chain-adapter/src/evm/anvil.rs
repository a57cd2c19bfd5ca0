//! A local anvil node (the test chain `chain-adapter/evm/package.json` pins), for tests and
//! demos on a dev chain.
//! Behind the `dev` feature: it launches processes, which a product build never does.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use gridchan_channel::{NodeId, Signer};

use super::{address_of, deploy, Deployed, EvmLedger};
use crate::client::LedgerError;

/// Why anvil could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum AnvilError {
    #[error("anvil not found: run `npm ci --prefix chain-adapter/evm` (or set GRIDCHAN_ANVIL)")]
    NotFound,
    #[error("cannot start {path}: {source}")]
    Start {
        path: String,
        source: std::io::Error,
    },
    #[error("anvil did not say where it listens within {0:?}")]
    Silent(Duration),
    #[error("anvil's address {0} is not a URL")]
    Address(String),
    #[error("anvil's {method} failed: {why}")]
    Method { method: &'static str, why: String },
}

impl From<AnvilError> for LedgerError {
    fn from(e: AnvilError) -> LedgerError {
        LedgerError::Unavailable(e.to_string())
    }
}

/// What [`Anvil::fund_gas`] gives an account: 1,000 ether.
pub const GAS_WEI: u128 = 1_000_000_000_000_000_000_000;

/// A running anvil, killed when dropped.
pub struct Anvil {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub rpc: String,
    /// For the dev chain's own methods (`anvil_*`).
    provider: DynProvider,
}

/// Where anvil is: `$GRIDCHAN_ANVIL`, the binary of the pinned npm package (after
/// `npm ci --prefix chain-adapter/evm`), or `anvil` on the `PATH`.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GRIDCHAN_ANVIL") {
        return Some(PathBuf::from(p));
    }
    let platform = match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => "linux-amd64",
        ("linux", "aarch64") => "linux-arm64",
        ("macos", "x86_64") => "darwin-amd64",
        ("macos", "aarch64") => "darwin-arm64",
        _ => "unsupported",
    };
    let pinned = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("evm/node_modules/@foundry-rs")
        .join(format!("anvil-{platform}"))
        .join("bin/anvil");
    if pinned.exists() {
        return Some(pinned);
    }
    let on_path = std::env::var_os("PATH")?;
    std::env::split_paths(&on_path)
        .map(|d| d.join("anvil"))
        .find(|p| p.exists())
}

impl Anvil {
    /// Starts anvil on 127.0.0.1 and a free port: instant mining, or a block every
    /// `block_time` seconds.
    pub fn start(block_time: Option<u64>) -> Result<Anvil, AnvilError> {
        match block_time {
            Some(t) => Anvil::start_with(&["--block-time", &t.to_string()]),
            None => Anvil::start_with(&[]),
        }
    }

    /// Starts anvil on 127.0.0.1 and a free port with more of its options (`--chain-id
    /// 5`, say).
    pub fn start_with(args: &[&str]) -> Result<Anvil, AnvilError> {
        let bin = binary().ok_or(AnvilError::NotFound)?;
        let mut cmd = Command::new(&bin);
        cmd.args(["--host", "127.0.0.1", "--port", "0", "--accounts", "1"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(source) => {
                return Err(AnvilError::Start {
                    path: bin.display().to_string(),
                    source,
                })
            }
        };
        let stdout = child
            .stdout
            .take()
            .ok_or(AnvilError::Silent(Duration::ZERO))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.trim().strip_prefix("Listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let started = Instant::now();
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => {
                let rpc = format!("http://{addr}");
                let url = rpc.parse().map_err(|_| AnvilError::Address(rpc.clone()))?;
                Ok(Anvil {
                    child,
                    provider: ProviderBuilder::new().connect_http(url).erased(),
                    rpc,
                })
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(AnvilError::Silent(started.elapsed()))
            }
        }
    }

    /// Sets `who`'s native balance to [`GAS_WEI`] for gas (a dev chain's `anvil_setBalance`).
    pub async fn fund_gas(&self, who: Address) -> Result<(), AnvilError> {
        self.dev(
            "anvil_setBalance",
            serde_json::json!([who, U256::from(GAS_WEI)]),
        )
        .await
    }

    /// Turns mining each transaction at once on or off (`evm_setAutomine`): off, sent
    /// transactions wait until [`Anvil::mine`] (or the block time) puts them in a block.
    pub async fn set_automine(&self, on: bool) -> Result<(), AnvilError> {
        self.dev("evm_setAutomine", serde_json::json!([on])).await
    }

    /// Mines `n` blocks at once (`anvil_mine`), the first with any waiting transactions.
    pub async fn mine(&self, n: u64) -> Result<(), AnvilError> {
        self.dev("anvil_mine", serde_json::json!([n])).await
    }

    /// Replaces the newest `depth` blocks with as many empty ones (`anvil_reorg`): what
    /// they held is gone.
    pub async fn reorg(&self, depth: u64) -> Result<(), AnvilError> {
        self.dev("anvil_reorg", serde_json::json!([depth, []]))
            .await
    }

    /// The adjudicator and the test token deployed from `deployer` (its signing context
    /// blinded with `blinding`), for a dev run: the deployer and every one of `gas` get gas
    /// first, then each of `minted` gets `tokens` test tokens.
    pub async fn deploy_with_test_tokens(
        &self,
        deployer: &[u8; 32],
        blinding: &[u8; 32],
        gas: &[NodeId],
        minted: &[NodeId],
        tokens: u64,
    ) -> Result<Deployed, LedgerError> {
        let deployer_id = Signer::new(deployer, blinding)
            .map_err(LedgerError::failed)?
            .id();
        for n in gas.iter().chain([&deployer_id]) {
            self.fund_gas(address_of(n)).await?;
        }
        let d = deploy(&self.rpc, deployer, None, 2).await?;
        let minter = EvmLedger::connect(d.config(&self.rpc, 1), deployer, blinding)?;
        for n in minted {
            minter.mint_test_tokens(address_of(n), tokens).await?;
        }
        Ok(d)
    }

    /// Calls one of the dev chain's own methods.
    async fn dev(&self, method: &'static str, params: serde_json::Value) -> Result<(), AnvilError> {
        self.provider
            .raw_request::<_, serde_json::Value>(method.into(), params)
            .await
            .map(|_| ())
            .map_err(|e| AnvilError::Method {
                method,
                why: e.to_string(),
            })
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
