//! The local ledger: the embedded default that lets gridchan run on one machine. Transactions
//! are checked when submitted (signature, nonce, and a dry run against the state after every
//! pending transaction) and applied in the next block; blocks are produced on a fixed period
//! (or by hand, in tests) and appended durably before anyone hears of them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gridchan_channel::{ChannelId, NodeId};
use tokio::sync::watch;

use crate::block::{Block, BlockEvents, Receipt, TxOutcome};
use crate::chainstore::{ChainStore, ChainStoreError};
use crate::rules::{Account, ChannelAccount, Genesis, Height, LedgerState, TxError};
use crate::tx::{Tx, TxHash};

/// Why the local ledger refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The transaction is invalid now.
    #[error("transaction refused: {0}")]
    Refused(#[from] TxError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] ChainStoreError),
    /// The next block is full: try again after it.
    #[error("ledger busy: {0} transactions wait for the next block; retry after it")]
    Busy(usize),
}

/// Most transactions waiting for one block; submissions beyond it are refused as busy.
pub const MAX_PENDING: usize = 8192;

struct Inner {
    store: ChainStore,
    /// State after the last block.
    state: LedgerState,
    /// State after the last block and every pending transaction, at the next block's height.
    pending_state: LedgerState,
    mempool: Vec<(Tx, TxOutcome)>,
    height: Height,
    head_hash: [u8; 32],
    receipts: HashMap<TxHash, Height>,
}

/// The ledger node's state machine with its durable chain.
pub struct LocalLedger {
    inner: Mutex<Inner>,
    heights: watch::Sender<Height>,
    chain_id: [u8; 32],
}

impl LocalLedger {
    /// Opens the ledger in `dir` (creating it with `genesis` the first time), verifying and
    /// replaying the chain.
    pub fn open(dir: &Path, genesis: Genesis) -> Result<Arc<LocalLedger>, ChainStoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            ChainStoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
        })?;
        let loaded = ChainStore::open(&dir.join("ledger.sqlite"), &genesis)?;
        let (heights, _) = watch::channel(loaded.height);
        Ok(Arc::new(LocalLedger {
            chain_id: genesis.chain_id,
            heights,
            inner: Mutex::new(Inner {
                store: loaded.store,
                pending_state: loaded.state.clone(),
                state: loaded.state,
                mempool: Vec::new(),
                height: loaded.height,
                head_hash: loaded.head_hash,
                receipts: loaded.receipts.into_iter().collect(),
            }),
        }))
    }

    /// The genesis of the ledger already in `dir`, if there is one.
    pub fn existing_genesis(dir: &Path) -> Result<Option<Genesis>, ChainStoreError> {
        crate::chainstore::stored_genesis(&dir.join("ledger.sqlite"))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a bug in this module; the data it guards
        // stays consistent (every mutation is all-or-nothing), so carry on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn chain_id(&self) -> [u8; 32] {
        self.chain_id
    }

    pub fn height(&self) -> Height {
        self.lock().height
    }

    /// A receiver that changes whenever a block is appended.
    pub fn watch_height(&self) -> watch::Receiver<Height> {
        self.heights.subscribe()
    }

    /// The account as of the last block, with `nonce` counting pending transactions too (the
    /// nonce the account's next transaction must carry).
    pub fn account(&self, node: &NodeId) -> Account {
        let inner = self.lock();
        let mut acc = inner.state.account(node);
        acc.nonce = inner.pending_state.account(node).nonce;
        acc
    }

    pub fn channel(&self, id: &ChannelId) -> Option<ChannelAccount> {
        self.lock().state.channels.get(id).cloned()
    }

    /// Checks `tx` and queues it for the next block. Refused transactions never enter a block.
    pub fn submit(&self, tx: Tx) -> Result<TxHash, LocalError> {
        let mut inner = self.lock();
        if inner.mempool.len() >= MAX_PENDING {
            return Err(LocalError::Busy(inner.mempool.len()));
        }
        let hash = tx.hash(&self.chain_id);
        let next = inner.height + 1;
        let events = inner.pending_state.apply_hashed(&tx, &hash, next)?;
        inner.mempool.push((
            tx,
            TxOutcome {
                hash,
                result: Ok(events),
            },
        ));
        Ok(hash)
    }

    /// Transactions waiting for the next block.
    pub fn pending(&self) -> usize {
        self.lock().mempool.len()
    }

    /// Produces the next block with every pending transaction and appends it durably.
    pub fn produce_block(&self, timestamp_ms: u64) -> Result<BlockEvents, ChainStoreError> {
        let mut inner = self.lock();
        let height = inner.height + 1;
        let (txs, outcomes): (Vec<Tx>, Vec<TxOutcome>) = inner.mempool.iter().cloned().unzip();
        let block = Block::new(height, inner.head_hash, timestamp_ms, txs, outcomes);
        inner.store.append(&block)?;
        inner.mempool.clear();
        // The dry runs at submission already produced these outcomes on `pending_state`;
        // applying the same transactions in the same order to `state` gives the same result
        // (signatures were checked then, so they are not checked twice).
        let Inner { state, .. } = &mut *inner;
        for tx in &block.txs {
            let result = state.apply_presigned(tx, height);
            debug_assert!(result.is_ok(), "a dry-run transaction failed in its block");
        }
        inner.height = height;
        inner.head_hash = block.header.hash();
        for o in &block.outcomes {
            inner.receipts.insert(o.hash, height);
        }
        drop(inner);
        self.heights.send_replace(height);
        Ok(block.events())
    }

    /// Where a transaction was included, if it was.
    pub fn receipt(&self, hash: &TxHash) -> Result<Option<Receipt>, ChainStoreError> {
        let inner = self.lock();
        let Some(&height) = inner.receipts.get(hash) else {
            return Ok(None);
        };
        let block = inner.store.events(height, 1)?;
        Ok(block
            .into_iter()
            .flat_map(|b| b.outcomes)
            .find(|o| o.hash == *hash)
            .map(|outcome| Receipt { height, outcome }))
    }

    /// Blocks from `from` on, at most `max`.
    pub fn blocks(&self, from: Height, max: usize) -> Result<Vec<BlockEvents>, ChainStoreError> {
        self.lock().store.events(from.max(1), max)
    }

    /// Waits until the height exceeds `above`, or `timeout` passes; returns the height.
    pub async fn wait_above(&self, above: Height, timeout: Duration) -> Height {
        let mut rx = self.watch_height();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|h| *h > above)).await;
        let h = *rx.borrow();
        h
    }

    /// Total tokens, for checks: constant from genesis on.
    pub fn total_supply(&self) -> u128 {
        self.lock().state.total_supply()
    }

    /// Produces a block every `period` until the returned handle is dropped or aborted.
    pub fn spawn_producer(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let ledger = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let l = ledger.clone();
                let produced = tokio::task::spawn_blocking(move || l.produce_block(now)).await;
                match produced {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!("block production failed: {e}"),
                    Err(e) => tracing::error!("block production panicked: {e}"),
                }
            }
        })
    }
}
