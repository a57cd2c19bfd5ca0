//! `gridchan evm ...`: the adjudicator on an EVM chain (deploy it, connect to it), and
//! `gridchan bench evm` (gas per operation); and the ledger client of a config's `[ledger]`
//! section, for the daemon and the watchtower.

use std::sync::Arc;

use anyhow::{Context, Result};
use gridchan_chain::evm::{self, EvmConfig, EvmLedger};
use gridchan_chain::{EvmSection, Ledger, LedgerError, LedgerSection, RemoteClient};

/// The ledger client a `[ledger]` section describes, as the account of the key at `key`;
/// `config` names the file in errors. An EVM section must name a real deployment (checked
/// when the chain answers; a chain not reachable yet is only warned about).
pub async fn client(
    section: &LedgerSection,
    key: &std::path::Path,
    config: &std::path::Path,
) -> Result<Arc<dyn Ledger>> {
    Ok(match section {
        LedgerSection::Remote { address } => {
            let address = crate::config_address("ledger.address", address, config)?;
            let signer = crate::keys::load(key)?;
            Arc::new(
                RemoteClient::new(address, signer, crate::keys::random32()?)
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            )
        }
        LedgerSection::Evm(evm) => {
            let ledger = connect(evm, &crate::keys::load_secret(key)?)?;
            match ledger.verify().await {
                Ok(()) => {}
                Err(LedgerError::Unavailable(e)) => {
                    tracing::warn!("cannot check the adjudicator yet ({e}); carrying on")
                }
                Err(e) => anyhow::bail!("ledger in {}: {e}", config.display()),
            }
            let ledger = Arc::new(ledger);
            // At start and every 10 minutes: an account out of gas can neither deposit nor
            // withdraw nor refute, and nobody may be watching its status.
            let watched = ledger.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(GAS_CHECK);
                loop {
                    every.tick().await;
                    warn_if_low_on_gas(&watched).await;
                }
            });
            ledger
        }
    })
}

/// How often a daemon or tower on an EVM chain checks its account's gas.
const GAS_CHECK: std::time::Duration = std::time::Duration::from_secs(600);

/// Warns when the account's gas is low ([`gridchan_chain::Fees::is_low`]): it pays for its own
/// deposits, withdrawals and refutes.
async fn warn_if_low_on_gas(ledger: &EvmLedger) {
    if let Ok(Ok(Some(fees))) =
        tokio::time::timeout(std::time::Duration::from_secs(5), ledger.fees()).await
    {
        if fees.is_low() {
            tracing::warn!(
                "account {} has gas for about {} transactions: send it some of the chain's coin",
                gridchan_chain::evm::address_of(&ledger.node()),
                fees.transactions()
            );
        }
    }
}

/// An EVM ledger client from a config's section, as the account of `secret`.
pub(crate) fn connect(section: &EvmSection, secret: &[u8; 32]) -> Result<EvmLedger> {
    let EvmSection {
        rpc,
        adjudicator,
        token,
        confirmations,
        deployed_at,
    } = section;
    let config = EvmConfig {
        rpc: rpc.to_string(),
        adjudicator: adjudicator.parse().with_context(|| {
            format!("ledger.adjudicator {adjudicator:?} is not an address (0x and 40 hex digits)")
        })?,
        token: token.parse().with_context(|| {
            format!("ledger.token {token:?} is not an address (0x and 40 hex digits)")
        })?,
        confirmations: (*confirmations).max(1),
        deployed_at: *deployed_at,
    };
    EvmLedger::connect(config, secret, &crate::keys::random32()?)
        .map_err(|e| anyhow::anyhow!("{e}"))
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

/// Mints `amount` of the dev chain's test token for `to` (the gateway itself when `None`),
/// sent by the gateway of `config_path`, whose `[ledger]` must be an EVM section. A real
/// settlement token refuses, and so does this.
pub async fn mint(
    config_path: &std::path::Path,
    to: Option<gridchan_channel::NodeId>,
    amount: gridchan_channel::Amount,
) -> Result<()> {
    let config = gridchan_gateway::config::Config::load(config_path)?;
    let LedgerSection::Evm(evm) = &config.ledger else {
        anyhow::bail!(
            "{} settles on a gridchan ledger node, not an EVM chain: test tokens are minted only on a dev chain's test token",
            config_path.display()
        );
    };
    let ledger = connect(evm, &crate::keys::load_secret(&config.node.key)?)?;
    let to = to.unwrap_or_else(|| ledger.node());
    let address = evm::address_of(&to);
    eprintln!("minting {amount} test tokens for {address:#x} ...");
    ledger
        .mint_test_tokens(address, amount.0)
        .await
        .map_err(|e| anyhow::anyhow!("cannot mint: {e}"))?;
    let balance = ledger
        .account(&to)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .balance;
    println!("{address:#x} holds {balance} tokens");
    Ok(())
}

/// Starts anvil, measures the gas of every adjudicator operation, prints a table.
pub async fn bench() -> Result<()> {
    let chain = evm::anvil::Anvil::start(None).map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("anvil at {}; running every operation once ...", chain.rpc);
    let report = gridchan_bench::gas::gas_report(&chain)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("adjudicator gas per operation (anvil, solc 0.8.37, optimizer 200 runs, via IR)");
    for (what, gas) in report {
        println!("  {what:<58} {gas:>9}");
    }
    let sizes = [1, 10, 100];
    eprintln!("batches of {sizes:?} channels ...");
    let batches = gridchan_bench::gas::batch_gas_report(&chain, &sizes)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("gas per channel, one batch transaction of 1 / 10 / 100 channels");
    for (what, gas) in batches {
        let cells: Vec<String> = gas.iter().map(|g| format!("{g:>9}")).collect();
        println!("  {what:<58} {}", cells.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_with_a_bad_address_is_refused_naming_the_field() {
        let good = "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512";
        let section = |rpc: &str, adjudicator: &str, token: &str| EvmSection {
            rpc: rpc.into(),
            adjudicator: adjudicator.into(),
            token: token.into(),
            confirmations: 1,
            deployed_at: 0,
        };
        let rpc = "http://127.0.0.1:8545";
        let refused = |s: EvmSection| connect(&s, &[0x11; 32]).err().expect("refused").to_string();
        let err = refused(section(rpc, "0x12", good));
        assert!(err.starts_with("ledger.adjudicator \"0x12\""), "{err}");
        let err = refused(section(rpc, good, "token"));
        assert!(err.starts_with("ledger.token \"token\""), "{err}");
        let err = refused(section("not a url", good, good));
        assert!(err.contains("not a url"), "{err}");
        // A valid section connects lazily: nothing is asked of the chain yet.
        assert!(connect(&section(rpc, good, good), &[0x11; 32]).is_ok());
    }
}
