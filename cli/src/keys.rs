//! Node key files: 32 secret bytes in hex, readable by the owner only.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use gridchan_channel::Signer;

/// Fresh randomness from the operating system.
pub fn random32() -> Result<[u8; 32]> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(b)
}

/// Loads the key at `path`, creating it (mode 0600) if it does not exist.
pub fn load_or_create(path: &Path) -> Result<Signer> {
    if !path.exists() {
        let secret = loop {
            let s = random32()?;
            if Signer::new(&s, &[0; 32]).is_ok() {
                break s;
            }
        };
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot create key file {}", path.display()))?;
        writeln!(f, "{}", hex::encode(secret))?;
    }
    load(path)
}

/// Loads the key at `path`; refuses one that others can read.
pub fn load(path: &Path) -> Result<Signer> {
    let bytes = load_secret(path)?;
    Signer::new(&bytes, &random32()?)
        .map_err(|e| anyhow::anyhow!("key file {}: {e}", path.display()))
}

/// The 32 secret bytes of the key at `path` (an EVM ledger signs its transactions with them);
/// refuses a file that others can read.
pub fn load_secret(path: &Path) -> Result<[u8; 32]> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "key file {} is readable by others (mode {:o}): run `chmod 600 {}`",
            path.display(),
            mode,
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)?;
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("key file {} is not 64 hex digits", path.display()))?;
    Ok(bytes)
}
