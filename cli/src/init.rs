//! `gridchan init`: a new gateway's key and configuration.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};

use gridchan_gateway::config::MeterSection;

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

/// Creates `dir/node.key` and `dir/gridchan.toml` for a home with `meter` (see
/// [`MeterSection::template`]) in `time_zone` (this machine's when `None`); refuses to overwrite
/// either.
pub fn run(
    dir: &Path,
    listen: SocketAddr,
    ledger: &str,
    meter: &str,
    time_zone: Option<&str>,
    speedup: u32,
) -> Result<()> {
    if !(1..=gridchan_gateway::config::MAX_SPEEDUP).contains(&speedup) {
        bail!(
            "--speedup {speedup}: write 1 (real time) to {}",
            gridchan_gateway::config::MAX_SPEEDUP
        );
    }
    // A simulated meter gets a seed of its own: two homes with one seed never trade.
    let seed = u64::from_le_bytes(keys::random32()?[..8].try_into().expect("8 bytes"));
    let meter = MeterSection::template(meter, seed)?;
    let zone = match time_zone {
        Some(name) => {
            jiff::tz::TimeZone::get(name).with_context(|| {
                format!("--time-zone {name:?} is not a time zone name such as Europe/Amsterdam")
            })?;
            name.to_string()
        }
        None => jiff::tz::TimeZone::try_system()
            .ok()
            .and_then(|z| z.iana_name().map(str::to_string))
            .unwrap_or_else(|| "UTC".to_string()),
    };
    create(dir, "gridchan.toml", listen, |_| {
        gridchan_gateway::config::template(listen, ledger, &meter, &zone, speedup)
    })?;
    println!("zone    {zone} (change metering.time_zone if that is not the household's)");
    Ok(())
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
