//! `gridchan watchtower`: run a tower, write its config, and the operator's views of it.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use gridchan_chain::Ledger;
use gridchan_watchtower::config::TowerConfig;
use gridchan_watchtower::store::TowerStore;
use gridchan_watchtower::Tower;
use serde::Serialize;

use crate::keys;

fn store_path(config: &TowerConfig) -> std::path::PathBuf {
    config.data.join("tower.sqlite")
}

fn load(config: &Path) -> Result<TowerConfig> {
    TowerConfig::load(config).map_err(|e| anyhow::anyhow!(e))
}

/// Runs the tower until Ctrl-C.
pub async fn run(config_path: &Path) -> Result<()> {
    let mut stop = crate::StopSignals::install()?;
    let config = load(config_path)?;
    let signer = keys::load_or_create(&config.key)?;
    std::fs::create_dir_all(&config.data)
        .with_context(|| format!("cannot create {}", config.data.display()))?;
    let ledger = crate::evm::client(&config.ledger, &config.key, config_path).await?;
    let limits = config.limits().map_err(|e| anyhow::anyhow!(e))?;
    let endpoint = gridchan_watchtower::rpc::bind_for(
        config.listen,
        signer.duplicate(&keys::random32()?),
        config.limits.max_clients,
    )?;
    let address = endpoint.peer_addr();
    let tower = Tower::start(signer, ledger, store_path(&config), limits)
        .context("cannot open the tower store")?;
    tower.listen(endpoint.clone());
    println!("watchtower {address}");
    if let Some(listen) = config.metrics {
        let bound = gridchan_gateway::metrics::install(listen)
            .await
            .map_err(|e| anyhow::anyhow!("config {}: {e}", config_path.display()))?;
        println!("metrics http://{bound}/metrics");
        tokio::spawn(sample(
            tower.clone(),
            store_path(&config),
            crate::evm::client(&config.ledger, &config.key, config_path).await?,
        ));
    }
    eprintln!("{}: stopping the watchtower", stop.recv().await);
    tower.stop();
    endpoint.shut_down(std::time::Duration::from_secs(1)).await;
    Ok(())
}

/// The tower's metrics, sampled every two seconds: its clients, the channels it guards, the
/// refutes it sent and those the ledger included, and its account's gas on a chain with fees.
async fn sample(
    tower: std::sync::Arc<Tower>,
    store: std::path::PathBuf,
    ledger: std::sync::Arc<dyn gridchan_chain::Ledger>,
) {
    use metrics::{describe_gauge, gauge};
    describe_gauge!(
        "gridchan_tower_clients",
        "Gateways registered with the tower"
    );
    describe_gauge!(
        "gridchan_tower_channels_guarded",
        "Channels the tower guards now"
    );
    describe_gauge!(
        "gridchan_tower_refutes",
        "Refutes the tower sent since its store began"
    );
    describe_gauge!(
        "gridchan_tower_refutes_included",
        "Refutes the ledger included"
    );
    describe_gauge!(
        "gridchan_tower_gas_balance_wei",
        "The tower account's balance for fees, on a chain that charges them"
    );
    loop {
        gauge!("gridchan_tower_channels_guarded").set(tower.guarded() as f64);
        if let Ok(s) = TowerStore::open_read_only(&store) {
            if let Ok(clients) = s.clients() {
                gauge!("gridchan_tower_clients").set(clients.len() as f64);
            }
            if let Ok(actions) = s.actions() {
                gauge!("gridchan_tower_refutes").set(actions.len() as f64);
                let included = actions
                    .iter()
                    .filter(|a| a.included_height.is_some())
                    .count();
                gauge!("gridchan_tower_refutes_included").set(included as f64);
            }
        }
        if let Ok(Ok(Some(fees))) =
            tokio::time::timeout(std::time::Duration::from_secs(2), ledger.fees()).await
        {
            gauge!("gridchan_tower_gas_balance_wei").set(fees.balance as f64);
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// Writes `dir/watchtower.toml`; refuses to overwrite it.
pub fn init(dir: &Path, listen: SocketAddr, ledger: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("watchtower.toml");
    if path.exists() {
        bail!(
            "{} exists already: init never overwrites a tower",
            path.display()
        );
    }
    std::fs::write(&path, gridchan_watchtower::config::template(listen, ledger))
        .with_context(|| format!("cannot write {}", path.display()))?;
    let signer = keys::load_or_create(&dir.join("tower.key"))?;
    println!("config  {}", path.display());
    println!("address {}@{listen}", signer.id());
    Ok(())
}

fn open(config: &Path) -> Result<TowerStore> {
    let config = load(config)?;
    TowerStore::open_read_only(&store_path(&config)).map_err(|e| anyhow::anyhow!("{e}"))
}

fn print<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T)) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        human(value);
    }
    Ok(())
}

#[derive(Serialize)]
struct Status {
    clients: usize,
    channels_guarded: usize,
    channels_closed: usize,
    next_height: Option<u64>,
    refutes: usize,
    refutes_included: usize,
    actions: Vec<gridchan_watchtower::store::Action>,
    /// On an EVM chain, what the tower's account has for the gas of its refutes (or why that
    /// is unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    gas: Option<gridchan_chain::Fees>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gas_error: Option<String>,
}

/// What the tower's account has for gas, on an EVM chain (`None` on the local ledger, which
/// charges no fees), asked of the chain with a 5 s limit.
fn gas(config: &TowerConfig) -> Option<Result<gridchan_chain::Fees, anyhow::Error>> {
    let gridchan_chain::LedgerSection::Evm(section) = &config.ledger else {
        return None;
    };
    let ask = || -> Result<gridchan_chain::Fees, anyhow::Error> {
        let secret = keys::load_secret(&config.key)?;
        let ledger = crate::evm::connect(section, &secret)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            match tokio::time::timeout(std::time::Duration::from_secs(5), ledger.fees()).await {
                Ok(Ok(Some(fees))) => Ok(fees),
                Ok(Ok(None)) => Err(anyhow::anyhow!("the chain reports no fees")),
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Err(anyhow::anyhow!("{} did not answer within 5 s", section.rpc)),
            }
        })
    };
    Some(ask())
}

pub fn status(config: &Path, json: bool) -> Result<()> {
    let gas = gas(&load(config)?);
    let store = open(config)?;
    let channels = store.channels().map_err(|e| anyhow::anyhow!("{e}"))?;
    let actions = store.actions().map_err(|e| anyhow::anyhow!("{e}"))?;
    let s = Status {
        clients: store.clients().map_err(|e| anyhow::anyhow!("{e}"))?.len(),
        channels_guarded: channels.iter().filter(|c| !c.closed).count(),
        channels_closed: channels.iter().filter(|c| c.closed).count(),
        next_height: store.next_height().map_err(|e| anyhow::anyhow!("{e}"))?,
        refutes: actions.len(),
        refutes_included: actions
            .iter()
            .filter(|a| a.included_height.is_some())
            .count(),
        actions,
        gas_error: gas
            .as_ref()
            .and_then(|g| g.as_ref().err().map(|e| e.to_string())),
        gas: gas.and_then(Result::ok),
    };
    print(json, &s, |s| {
        println!("clients   {}", s.clients);
        println!(
            "channels  {} guarded, {} closed",
            s.channels_guarded, s.channels_closed
        );
        match s.next_height {
            Some(h) => println!("ledger    followed to block {}", h.saturating_sub(1)),
            None => println!("ledger    not followed yet"),
        }
        match (&s.gas, &s.gas_error) {
            (Some(fees), _) => println!("gas       {}", crate::channel::gas_line(fees)),
            (None, Some(e)) => println!("gas       unknown: {e}"),
            (None, None) => {}
        }
        println!("refutes   {} ({} included)", s.refutes, s.refutes_included);
        for a in &s.actions {
            println!(
                "  channel {}: registered v{} at block {}, ours v{}: {}",
                a.channel.short(),
                a.registered_version,
                a.seen_height,
                a.our_version,
                a.outcome.as_deref().unwrap_or("in progress")
            );
        }
    })
}

#[derive(Serialize)]
struct Client {
    node: String,
    registered_ms: i64,
    channels: usize,
}

pub fn clients(config: &Path, json: bool) -> Result<()> {
    let store = open(config)?;
    let list: Vec<Client> = store
        .clients()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .map(|(n, ms, c)| Client {
            node: n.to_string(),
            registered_ms: ms,
            channels: c,
        })
        .collect();
    print(json, &list, |list| {
        if list.is_empty() {
            println!("no clients yet");
        }
        for c in list {
            println!("{}  {} channel(s)", c.node, c.channels);
        }
    })
}

#[derive(Serialize)]
struct Channel {
    channel: String,
    client: String,
    version: u64,
    closed: bool,
}

pub fn channels(config: &Path, json: bool) -> Result<()> {
    let store = open(config)?;
    let list: Vec<Channel> = store
        .channels()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .map(|g| Channel {
            channel: g.id.to_string(),
            client: g.client.to_string(),
            version: g.state.version().0,
            closed: g.closed,
        })
        .collect();
    print(json, &list, |list| {
        if list.is_empty() {
            println!("no channels guarded yet");
        }
        for c in list {
            println!(
                "{}  client {}  v{}{}",
                &c.channel[..16],
                &c.client[..16],
                c.version,
                if c.closed { "  (closed)" } else { "" }
            );
        }
    })
}
