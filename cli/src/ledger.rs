//! `gridchan ledger`: run the local ledger as a network service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use gridchan_chain::{server, Genesis, LocalLedger};
use gridchan_channel::{Amount, NodeId};
use sha2::{Digest, Sha256};

use crate::keys;

/// How to run the ledger node.
#[derive(Clone, Debug)]
pub struct LedgerOptions {
    pub data: PathBuf,
    pub listen: SocketAddr,
    pub block_ms: u64,
    /// Initial balances; only used when the data folder holds no ledger yet.
    pub fund: Vec<(NodeId, Amount)>,
    pub min_challenge_window: u64,
    /// Clients connected at once (every gateway of the neighbourhood holds one or two).
    pub max_clients: usize,
    /// Where to serve Prometheus metrics (height, transactions waiting, supply); none if unset.
    pub metrics: Option<std::net::SocketAddr>,
}

/// Parses `NODEID=AMOUNT` (amount in tokens, up to six decimals).
pub fn parse_fund(s: &str) -> Result<(NodeId, Amount), anyhow::Error> {
    let (node, amount) = s
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("{s:?}: expected NODEID=AMOUNT"))?;
    let node = node
        .parse()
        .map_err(|_| anyhow::anyhow!("{node:?} is not a node id (66 hex digits)"))?;
    Ok((node, parse_amount(amount)?))
}

/// Parses a token amount like `12`, `0.5` or `3.000001` into micro-units.
pub fn parse_amount(s: &str) -> Result<Amount, gridchan_channel::AmountError> {
    Amount::parse_tokens(s)
}

/// Opens (or creates) the ledger, serves it and produces blocks until Ctrl-C.
pub async fn run(opts: LedgerOptions) -> Result<()> {
    let mut stop = crate::StopSignals::install()?;
    std::fs::create_dir_all(&opts.data)
        .with_context(|| format!("cannot create data folder {}", opts.data.display()))?;
    let signer = keys::load_or_create(&opts.data.join("node.key"))?;
    let genesis = match LocalLedger::existing_genesis(&opts.data)? {
        Some(g) => {
            if !opts.fund.is_empty() && opts.fund != g.balances {
                bail!(
                    "{} already holds a ledger; --fund only applies when creating one (use a new --data folder)",
                    opts.data.display()
                );
            }
            g
        }
        None => Genesis {
            chain_id: Sha256::digest(keys::random32()?).into(),
            min_challenge_window: opts.min_challenge_window,
            balances: opts.fund.clone(),
        },
    };
    eprintln!("verifying the chain in {} ...", opts.data.display());
    let ledger = LocalLedger::open(&opts.data, genesis)
        .with_context(|| format!("cannot open the ledger in {}", opts.data.display()))?;
    let endpoint = gridchan_chain::rpc::bind_for(opts.listen, signer, opts.max_clients)?;
    // The address line is what operators and scripts read: keep it first and stable.
    println!("ledger {}", endpoint.peer_addr());
    println!("height {}", ledger.height());
    if let Some(listen) = opts.metrics {
        let bound = gridchan_gateway::metrics::install(listen)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("metrics http://{bound}/metrics");
        let ledger = ledger.clone();
        tokio::spawn(async move {
            use metrics::{describe_gauge, gauge};
            describe_gauge!("gridchan_ledger_height", "The ledger's height, in blocks");
            describe_gauge!(
                "gridchan_ledger_transactions_waiting",
                "Transactions submitted and not yet in a block"
            );
            describe_gauge!(
                "gridchan_ledger_supply_micro",
                "Tokens in all accounts and channels, in micro-units"
            );
            loop {
                gauge!("gridchan_ledger_height").set(ledger.height() as f64);
                gauge!("gridchan_ledger_transactions_waiting").set(ledger.pending() as f64);
                gauge!("gridchan_ledger_supply_micro").set(ledger.total_supply() as f64);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    let producer = ledger.spawn_producer(Duration::from_millis(opts.block_ms.max(1)));
    let serving = tokio::spawn(server::serve(endpoint.clone(), ledger.clone()));
    let signal = stop.recv().await;
    eprintln!("{signal}: stopping at height {}", ledger.height());
    producer.abort();
    endpoint.shut_down(Duration::from_secs(1)).await;
    serving.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_as_tokens() {
        assert_eq!(parse_amount("12"), Ok(Amount(12_000_000)));
        assert_eq!(parse_amount("0.5"), Ok(Amount(500_000)));
        assert_eq!(parse_amount("3.000001"), Ok(Amount(3_000_001)));
        assert!(parse_amount("1.0000001").is_err());
        assert!(parse_amount("abc").is_err());
        assert!(parse_amount("").is_err());
        assert!(parse_amount("99999999999999999").is_err());
    }
}
