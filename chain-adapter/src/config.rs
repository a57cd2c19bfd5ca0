//! The `[ledger]` section of a gateway's and a watchtower's config: which ledger to use.

use serde::Deserialize;

/// Which ledger a gateway settles on, or a watchtower refutes on.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum LedgerSection {
    /// A `gridchan ledger` node at `PUBKEY@HOST:PORT`.
    Remote { address: String },
    /// The adjudicator contract on an EVM chain (see `gridchan evm deploy`). The node key is
    /// the EVM account: it pays the gas of what it submits.
    Evm(EvmSection),
}

/// Where the adjudicator is on an EVM chain, as a config names it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmSection {
    /// The chain's JSON-RPC address, `http://HOST:PORT`.
    pub rpc: String,
    /// The adjudicator's address, `0x...`.
    pub adjudicator: String,
    /// The settlement token's address, `0x...`.
    pub token: String,
    /// Blocks on top of a block before it counts (1: the newest counts).
    #[serde(default = "one")]
    pub confirmations: u64,
    /// The block the adjudicator was deployed in.
    #[serde(default)]
    pub deployed_at: u64,
}

fn one() -> u64 {
    1
}

impl LedgerSection {
    /// The commented `[ledger]` section a new config starts with: the `gridchan ledger` node
    /// at `address`, and the EVM alternative commented out. `pays` says what the key's gas
    /// pays for.
    pub fn template(address: &str, pays: &str) -> String {
        format!(
            r#"[ledger]
# The ledger that holds deposits and settles disputes: a `gridchan ledger` node ...
mode = "remote"
address = "{address}"
# ... or the adjudicator on an EVM chain (`gridchan evm deploy` prints this section). The
# key is the EVM account: it needs native currency for the gas of {pays}.
# mode = "evm"
# rpc = "http://127.0.0.1:8545"
# adjudicator = "0x..."
# token = "0x..."
# confirmations = 1
# deployed_at = 0
"#
        )
    }
}
