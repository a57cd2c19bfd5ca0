//! `gridchan restore`: a gateway that lost its data folder, or whose store rolled back, takes
//! its channels' newest states from its watchtowers (checked against the parameters the ledger
//! recorded) and the ledger's view of each, and writes the records to resume from. The check
//! the daemon makes at start uses the same comparison: it refuses to trade while a tower holds
//! a channel the store forgot or holds older.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use gridchan_chain::{ChannelStatus, Ledger};
use gridchan_channel::{ChannelId, ChannelRecord, ChannelStore, Signer};
use gridchan_gateway::config::Config;
use gridchan_gateway::restore::{self, Found};
use gridchan_gateway::store::SqliteStore;
use gridchan_watchtower::client::TowerClient;

use crate::keys;

/// How long one tower may take to answer.
const TOWER_WAIT: Duration = Duration::from_secs(10);

/// What the towers hold of `signer`'s channels: the newest per channel, and a line per tower
/// that did not answer.
pub async fn ask_towers(
    config: &Config,
    config_path: &Path,
    signer: &Signer,
    progress: bool,
) -> Result<(BTreeMap<ChannelId, Found>, Vec<String>)> {
    let mut answers = Vec::new();
    let mut failed = Vec::new();
    for (i, t) in config.towers.iter().enumerate() {
        let addr = crate::config_address(&format!("towers[{i}].address"), &t.address, config_path)?;
        let client = TowerClient::new(addr.clone(), signer.duplicate(&keys::random32()?))
            .map_err(|e| anyhow::anyhow!("tower {addr}: {e}"))?;
        match tokio::time::timeout(TOWER_WAIT, client.recover()).await {
            Ok(Ok(held)) => {
                if progress {
                    println!("tower {addr}: {} channel(s)", held.len());
                }
                answers.push(held);
            }
            Ok(Err(e)) => failed.push(format!("tower {addr}: {e}")),
            Err(_) => failed.push(format!("tower {addr}: no answer in {TOWER_WAIT:?}")),
        }
    }
    Ok((restore::newest(&signer.id(), answers), failed))
}

/// The ledger's view of each channel in `found` (absent when the ledger has none or does not
/// answer).
async fn accounts(
    ledger: &Arc<dyn Ledger>,
    found: &BTreeMap<ChannelId, Found>,
) -> BTreeMap<ChannelId, Option<gridchan_chain::ChannelAccount>> {
    let mut out = BTreeMap::new();
    for id in found.keys() {
        let read = tokio::time::timeout(TOWER_WAIT, ledger.channel(id)).await;
        out.insert(*id, read.ok().and_then(Result::ok).flatten());
    }
    out
}

/// The daemon's check at start: the channels a tower holds newer than the store, of those the
/// ledger does not say are paid out. Towers that do not answer are only warned about.
pub async fn check_at_start(
    config: &Config,
    config_path: &Path,
    signer: &Signer,
    stored: &[ChannelRecord],
    ledger: &Arc<dyn Ledger>,
) -> Result<()> {
    if config.towers.is_empty() {
        return Ok(());
    }
    let (found, failed) = ask_towers(config, config_path, signer, false).await?;
    for f in failed {
        eprintln!("warning: cannot compare the channel store with {f}");
    }
    let accounts = accounts(ledger, &found).await;
    let live = |id: &ChannelId| {
        !matches!(
            accounts.get(id).and_then(|a| a.as_ref()).map(|a| &a.status),
            Some(ChannelStatus::Concluded { .. } | ChannelStatus::Expired)
        )
    };
    let behind = restore::behind(stored, &found, live);
    if let Some(first) = behind.first() {
        let more = match behind.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        anyhow::bail!(
            "{first}{more}: this gateway's data was lost or rolled back, and it will not trade on what it forgot; run `gridchan restore --config {}`, then start it again",
            config_path.display()
        );
    }
    Ok(())
}

/// `gridchan restore --config FILE`.
pub async fn run(config_path: &Path) -> Result<()> {
    let config = Config::load(config_path)?;
    let signer = keys::load(&config.node.key)?;
    if config.towers.is_empty() {
        anyhow::bail!(
            "{} names no [[towers]]: a gateway restores its channels from its watchtowers",
            config_path.display()
        );
    }
    std::fs::create_dir_all(&config.node.data)
        .with_context(|| format!("cannot create {}", config.node.data.display()))?;
    let _lock = gridchan_gateway::data_lock::DataLock::take(&config.node.data)?;
    let store_path = config.node.data.join("channels.sqlite");
    let mut store = SqliteStore::open(&store_path).with_context(|| {
        format!(
            "cannot open the channel store {} (move it aside, then run restore again to rebuild it from the towers)",
            store_path.display()
        )
    })?;
    let ledger = crate::evm::client(&config.ledger, &config.node.key, config_path).await?;
    println!(
        "asking {} tower(s) for this gateway's channels...",
        config.towers.len()
    );
    let (found, failed) = ask_towers(&config, config_path, &signer, true).await?;
    for f in &failed {
        println!("{f}");
    }
    if found.is_empty() {
        if failed.len() == config.towers.len() {
            anyhow::bail!("no tower answered: nothing restored; try again when they are reachable");
        }
        println!("the towers hold no channels of this gateway: nothing to restore");
        return Ok(());
    }
    let accounts = accounts(&ledger, &found).await;
    let local: BTreeMap<ChannelId, ChannelRecord> =
        store.load()?.into_iter().map(|r| (r.id, r)).collect();
    let mut restored = 0;
    for (id, f) in &found {
        let short = id.short();
        let version = f.state.version().0;
        let have = local.get(id);
        if have
            .and_then(|r| r.current.as_ref())
            .is_some_and(|c| c.version() >= f.state.version())
        {
            println!("channel {short}: up to date in the store (version {version} or newer)");
            continue;
        }
        let account = accounts.get(id).and_then(|a| a.as_ref());
        let Some(record) = restore::record(&signer.id(), f, have, account) else {
            println!("channel {short}: the ledger does not know it (or does not answer): left out");
            continue;
        };
        store
            .write(&record)
            .with_context(|| format!("cannot write channel {short} to {}", store_path.display()))?;
        restored += 1;
        println!(
            "channel {short}: restored at version {version} from {} of {} tower(s) ({} older); on the ledger: {:?}",
            f.towers_newest,
            config.towers.len(),
            f.towers_older,
            record.phase
        );
    }
    println!(
        "restored {restored} channel(s); start the daemon: it reconnects to the neighbours, who hand over anything newer"
    );
    Ok(())
}
