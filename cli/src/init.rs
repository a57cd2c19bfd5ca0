//! `gridchan init`: a new gateway's key and configuration.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::keys;

/// Creates `dir/node.key` and `dir/gridchan.toml`; refuses to overwrite either.
pub fn run(dir: &Path, listen: SocketAddr, ledger: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key = dir.join("node.key");
    let config = dir.join("gridchan.toml");
    for path in [&key, &config] {
        if path.exists() {
            bail!(
                "{} exists already: init never overwrites a gateway (use another --dir)",
                path.display()
            );
        }
    }
    let signer = keys::load_or_create(&key)?;
    std::fs::write(&config, gridchan_gateway::config::template(listen, ledger))
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
