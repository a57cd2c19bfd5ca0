//! Blocks: hash-linked batches of transactions, and what they did.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::rules::{ChainEvent, Height, TxError};
use crate::tx::{Tx, TxHash};

/// A block header. The hash of a block is SHA-256 of its header's bincode encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    pub height: Height,
    /// The previous block's hash; all zeros for block 1 (block 0 is the genesis state).
    pub prev_hash: [u8; 32],
    /// When the block was produced (producer's clock, ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// SHA-256 over the hashes of the block's transactions, in order.
    pub tx_root: [u8; 32],
    /// SHA-256 over the bincode encoding of the block's outcomes.
    pub outcome_root: [u8; 32],
}

/// What one transaction did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxOutcome {
    pub hash: TxHash,
    pub result: Result<Vec<ChainEvent>, TxError>,
}

/// A block with its transactions and outcomes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub header: BlockHeader,
    pub txs: Vec<Tx>,
    pub outcomes: Vec<TxOutcome>,
}

/// What subscribers see of a block: its height, hash, time and outcomes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockEvents {
    pub height: Height,
    pub hash: [u8; 32],
    pub timestamp_ms: u64,
    pub outcomes: Vec<TxOutcome>,
}

/// Where a transaction ended up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub height: Height,
    pub outcome: TxOutcome,
}

impl BlockEvents {
    /// What the block's successful transactions did, in order (refused ones did nothing).
    pub fn events(&self) -> impl Iterator<Item = &ChainEvent> {
        self.outcomes
            .iter()
            .filter_map(|o| o.result.as_ref().ok())
            .flatten()
    }
}

impl BlockHeader {
    pub fn hash(&self) -> [u8; 32] {
        let bytes = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .expect("headers encode");
        Sha256::digest(bytes).into()
    }
}

impl Block {
    pub fn new(
        height: Height,
        prev_hash: [u8; 32],
        timestamp_ms: u64,
        txs: Vec<Tx>,
        outcomes: Vec<TxOutcome>,
    ) -> Block {
        let header = BlockHeader {
            height,
            prev_hash,
            timestamp_ms,
            tx_root: tx_root(&outcomes),
            outcome_root: outcome_root(&outcomes),
        };
        Block {
            header,
            txs,
            outcomes,
        }
    }

    pub fn events(&self) -> BlockEvents {
        BlockEvents {
            height: self.header.height,
            hash: self.header.hash(),
            timestamp_ms: self.header.timestamp_ms,
            outcomes: self.outcomes.clone(),
        }
    }
}

pub fn tx_root(outcomes: &[TxOutcome]) -> [u8; 32] {
    let mut h = Sha256::new();
    for o in outcomes {
        h.update(o.hash.0);
    }
    h.finalize().into()
}

pub fn outcome_root(outcomes: &[TxOutcome]) -> [u8; 32] {
    let bytes = bincode::serde::encode_to_vec(outcomes, bincode::config::standard())
        .expect("outcomes encode");
    Sha256::digest(bytes).into()
}
