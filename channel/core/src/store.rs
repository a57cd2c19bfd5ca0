//! The narrow storage interface a host uses to carry out [`crate::Output::Persist`]. The SQLite
//! store of the daemon implements it; tests use [`MemoryStore`] or a store that fails on command.

use std::collections::BTreeMap;

use crate::io::ChannelRecord;
use crate::state::Trade;
use crate::types::{ChannelId, Version};

/// An interval a channel settled: the channel, the version that settled it, the trade, and the
/// digest of that version's state (signed by both: what proves the trade, `gridchan report`).
pub type Settled = (ChannelId, Version, Trade, [u8; 32]);

/// Why a store could not write or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The write did not become durable; the caller must not release anything that depends on it.
    #[error("store write failed: {0}")]
    WriteFailed(String),
    /// The stored data could not be read back.
    #[error("store read failed: {0}")]
    ReadFailed(String),
}

/// Durable channel records, newest per channel.
pub trait ChannelStore {
    /// Makes `record` durable, replacing the channel's previous record. Returns only once it
    /// is durable (or failed).
    fn write(&mut self, record: &ChannelRecord) -> Result<(), StoreError>;

    /// Every channel's newest record.
    fn load(&self) -> Result<Vec<ChannelRecord>, StoreError>;

    /// Makes several records durable, and the intervals settled meanwhile (a history for
    /// people to read), in one step: all or nothing, one flush for many channels. A store
    /// that keeps no history ignores `settled`; the default writes the records one by one.
    fn write_batch(
        &mut self,
        records: &[&ChannelRecord],
        settled: &[Settled],
    ) -> Result<(), StoreError> {
        let _ = settled;
        records.iter().try_for_each(|r| self.write(r))
    }

    /// The last `n` intervals `channel` settled, newest first (none if the store keeps no
    /// history).
    fn recent_settled(
        &self,
        channel: &ChannelId,
        n: usize,
    ) -> Result<Vec<(Version, Trade)>, StoreError> {
        let _ = (channel, n);
        Ok(Vec::new())
    }
}

/// A store in memory: durable for as long as the value lives. Used by tests and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    records: BTreeMap<ChannelId, ChannelRecord>,
    writes: u64,
}

impl MemoryStore {
    pub fn get(&self, id: &ChannelId) -> Option<&ChannelRecord> {
        self.records.get(id)
    }

    /// Writes made so far.
    pub fn writes(&self) -> u64 {
        self.writes
    }
}

impl ChannelStore for MemoryStore {
    fn write(&mut self, record: &ChannelRecord) -> Result<(), StoreError> {
        self.records.insert(record.id, record.clone());
        self.writes += 1;
        Ok(())
    }

    fn load(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        Ok(self.records.values().cloned().collect())
    }
}
