//! `gridchan init`: a new gateway's key and configuration.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::keys;

/// Creates `dir/node.key` and `dir/market.toml` for a market node, with a new market id;
/// refuses to overwrite either.
pub fn market(dir: &Path, listen: SocketAddr, ledger: &str) -> Result<()> {
    let market = keys::random32()?;
    create(dir, "market.toml", listen, |_| {
        gridchan_gateway::config::market_template(listen, ledger, &market)
    })?;
    println!("market  {}", hex::encode(market));
    println!(
        "run it  gridchan market --config {}",
        dir.join("market.toml").display()
    );
    Ok(())
}

/// Creates `dir/node.key` and `dir/gridchan.toml`; refuses to overwrite either.
pub fn run(dir: &Path, listen: SocketAddr, ledger: &str) -> Result<()> {
    create(dir, "gridchan.toml", listen, |_| {
        gridchan_gateway::config::template(listen, ledger)
    })
}

/// Creates `dir/node.key` and the config `name` from `text`, and says what it made.
fn create(
    dir: &Path,
    name: &str,
    listen: SocketAddr,
    text: impl FnOnce(&gridchan_channel::Signer) -> String,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key = dir.join("node.key");
    let config = dir.join(name);
    for path in [&key, &config] {
        if path.exists() {
            bail!(
                "{} exists already: init never overwrites a gateway (use another --dir)",
                path.display()
            );
        }
    }
    let signer = keys::load_or_create(&key)?;
    std::fs::write(&config, text(&signer))
        .with_context(|| format!("cannot write {}", config.display()))?;
    println!("node    {}", signer.id());
    println!(
        "key     {} (mode 0600: keep it secret, back it up)",
        key.display()
    );
    println!("config  {}", config.display());
    println!("address {}@{}", signer.id(), listen);
    Ok(())
}
