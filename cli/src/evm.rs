//! `gridchan evm ...`: the adjudicator on an EVM chain (deploy it, connect to it), and
//! `gridchan bench evm` (gas per operation).

use anyhow::{Context, Result};
use gridchan_chain::evm::{self, EvmConfig, EvmLedger};

/// An EVM ledger client from a config's addresses, as the account of `secret`.
pub fn connect(
    rpc: &str,
    adjudicator: &str,
    token: &str,
    confirmations: u64,
    deployed_at: u64,
    secret: &[u8; 32],
) -> Result<EvmLedger> {
    let config = EvmConfig {
        rpc: rpc.to_string(),
        adjudicator: adjudicator.parse().with_context(|| {
            format!("ledger.adjudicator {adjudicator:?} is not an address (0x and 40 hex digits)")
        })?,
        token: token.parse().with_context(|| {
            format!("ledger.token {token:?} is not an address (0x and 40 hex digits)")
        })?,
        confirmations: confirmations.max(1),
        deployed_at,
    };
    EvmLedger::connect(config, secret).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Deploys the adjudicator (and, without `token`, the dev chain's test token) and prints the
/// addresses and the config section that uses them.
pub async fn deploy(
    rpc: &str,
    secret: &[u8; 32],
    token: Option<&str>,
    min_challenge_window: u64,
    json: bool,
) -> Result<()> {
    let token = token
        .map(|t| {
            t.parse()
                .with_context(|| format!("--token {t:?} is not an address (0x and 40 hex digits)"))
        })
        .transpose()?;
    if token.is_none() {
        eprintln!("no --token given: deploying the test token first (dev chains only)");
    }
    eprintln!("deploying the adjudicator to {rpc} ...");
    let d = evm::deploy(rpc, secret, token, min_challenge_window)
        .await
        .map_err(|e| anyhow::anyhow!("deployment failed: {e}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(());
    }
    println!("chain id     {}", d.chain_id);
    println!("adjudicator  {:#x}  (block {})", d.adjudicator, d.block);
    println!("token        {:#x}", d.token);
    println!("gas used     {}", d.gas_used);
    println!();
    println!("# In a gateway's config:");
    println!("[ledger]");
    println!("mode = \"evm\"");
    println!("rpc = \"{rpc}\"");
    println!("adjudicator = \"{:#x}\"", d.adjudicator);
    println!("token = \"{:#x}\"", d.token);
    println!("confirmations = 1");
    println!("deployed_at = {}", d.block);
    Ok(())
}

/// Starts anvil, measures the gas of every adjudicator operation, prints a table.
pub async fn bench() -> Result<()> {
    let chain = evm::anvil::Anvil::start(None).map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("anvil at {}; running every operation once ...", chain.rpc);
    let report = evm::gas_report(&chain)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("adjudicator gas per operation (anvil, solc 0.8.37, optimizer 200 runs, via IR)");
    for (what, gas) in report {
        println!("  {what:<58} {gas:>9}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_with_a_bad_address_is_refused_naming_the_field() {
        let good = "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512";
        let rpc = "http://127.0.0.1:8545";
        let err = connect(rpc, "0x12", good, 1, 0, &[0x11; 32])
            .err()
            .expect("refused")
            .to_string();
        assert!(err.starts_with("ledger.adjudicator \"0x12\""), "{err}");
        let err = connect(rpc, good, "token", 1, 0, &[0x11; 32])
            .err()
            .expect("refused")
            .to_string();
        assert!(err.starts_with("ledger.token \"token\""), "{err}");
        let err = connect("not a url", good, good, 1, 0, &[0x11; 32])
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("not a url"), "{err}");
        // A valid section connects lazily: nothing is asked of the chain yet.
        assert!(connect(rpc, good, good, 0, 0, &[0x11; 32]).is_ok());
    }
}
