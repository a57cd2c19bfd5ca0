//! Blocks on disk: SQLite in WAL mode with `synchronous = FULL`, one row per block, and the
//! head recorded in the same transaction. Opening a store verifies the whole chain and rebuilds
//! the state by replaying it: a tampered or truncated database is reported, never used.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::block::{outcome_root, tx_root, Block, BlockEvents};
use crate::rules::{Genesis, Height, LedgerState};

/// Why the chain on disk cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ChainStoreError {
    /// SQLite failed (including "file is not a database" and I/O errors).
    #[error("ledger database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A block does not decode, does not link to its parent, or does not replay to what it
    /// recorded.
    #[error("ledger database is corrupt at block {height}: {what}")]
    Corrupt { height: Height, what: String },
    /// Blocks are missing at the end or in the middle.
    #[error(
        "ledger database is truncated: head says height {expected}, found blocks up to {found}"
    )]
    Truncated { expected: Height, found: Height },
    /// The folder holds a different ledger.
    #[error("this data folder holds a ledger with a different genesis")]
    GenesisMismatch,
}

/// The durable chain.
pub struct ChainStore {
    conn: Connection,
}

/// What opening a store found.
pub struct Loaded {
    pub store: ChainStore,
    pub state: LedgerState,
    pub height: Height,
    pub head_hash: [u8; 32],
    /// Every transaction hash with the height it was included at.
    pub receipts: Vec<(crate::tx::TxHash, Height)>,
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("ledger data encodes")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard()).map(|(v, _)| v)
}

/// The genesis stored in the ledger database at `path`, if the file holds a ledger.
pub fn stored_genesis(path: &Path) -> Result<Option<Genesis>, ChainStoreError> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open(path)?;
    let has_meta: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        return Ok(None);
    }
    let bytes: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM meta WHERE key = 'genesis'", [], |r| {
            r.get(0)
        })
        .optional()?;
    bytes
        .map(|b| {
            decode(&b).map_err(|what| ChainStoreError::Corrupt {
                height: 0,
                what: format!("genesis: {what}"),
            })
        })
        .transpose()
}

impl ChainStore {
    /// Opens (or creates, with `genesis`) the ledger database at `path`, verifies every block
    /// and replays the chain.
    pub fn open(path: &Path, genesis: &Genesis) -> Result<Loaded, ChainStoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(ChainStoreError::Corrupt {
                height: 0,
                what: format!("SQLite integrity check: {check}"),
            });
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS blocks (
                 height INTEGER PRIMARY KEY, hash BLOB NOT NULL, body BLOB NOT NULL);",
        )?;
        let stored: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM meta WHERE key = 'genesis'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match stored {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('genesis', ?1), ('head', ?2)",
                    params![encode(genesis), encode(&(0u64, [0u8; 32]))],
                )?;
            }
            Some(bytes) => {
                let on_disk: Genesis = decode(&bytes).map_err(|what| ChainStoreError::Corrupt {
                    height: 0,
                    what: format!("genesis: {what}"),
                })?;
                if on_disk != *genesis {
                    return Err(ChainStoreError::GenesisMismatch);
                }
            }
        }
        let store = ChainStore { conn };
        store.replay(genesis)
    }

    fn replay(self, genesis: &Genesis) -> Result<Loaded, ChainStoreError> {
        let head: Vec<u8> =
            self.conn
                .query_row("SELECT value FROM meta WHERE key = 'head'", [], |r| {
                    r.get(0)
                })?;
        let (head_height, head_hash): (Height, [u8; 32]) =
            decode(&head).map_err(|what| ChainStoreError::Corrupt {
                height: 0,
                what: format!("head: {what}"),
            })?;
        let mut state = LedgerState::new(genesis.clone());
        let mut prev_hash = [0u8; 32];
        let mut height: Height = 0;
        let mut receipts = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare("SELECT height, hash, body FROM blocks ORDER BY height")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let h: Height = row.get(0)?;
                let hash: Vec<u8> = row.get(1)?;
                let body: Vec<u8> = row.get(2)?;
                let corrupt = |what: String| ChainStoreError::Corrupt { height: h, what };
                let undecodable = |e: bincode::error::DecodeError| corrupt(e.to_string());
                if h != height + 1 {
                    return Err(ChainStoreError::Truncated {
                        expected: head_height,
                        found: height,
                    });
                }
                let block: Block = decode(&body).map_err(undecodable)?;
                let hdr = &block.header;
                if hdr.height != h || hdr.prev_hash != prev_hash {
                    return Err(corrupt("does not link to its parent".into()));
                }
                if hdr.hash()[..] != hash[..] {
                    return Err(corrupt("hash does not match its header".into()));
                }
                if hdr.tx_root != tx_root(&block.outcomes)
                    || hdr.outcome_root != outcome_root(&block.outcomes)
                    || block.txs.len() != block.outcomes.len()
                {
                    return Err(corrupt("body does not match its header".into()));
                }
                for (tx, recorded) in block.txs.iter().zip(&block.outcomes) {
                    if tx.hash(&genesis.chain_id) != recorded.hash {
                        return Err(corrupt("transaction hash mismatch".into()));
                    }
                    let result = match state.apply(tx, h) {
                        Err(e) if recorded.result.is_err() => {
                            state.consume_nonce(&tx.sender);
                            Err(e)
                        }
                        other => other,
                    };
                    if result != recorded.result {
                        return Err(corrupt("a transaction replays differently".into()));
                    }
                    receipts.push((recorded.hash, h));
                }
                prev_hash = hdr.hash();
                height = h;
            }
        }
        if height != head_height || prev_hash != head_hash {
            return Err(ChainStoreError::Truncated {
                expected: head_height,
                found: height,
            });
        }
        Ok(Loaded {
            store: self,
            state,
            height,
            head_hash,
            receipts,
        })
    }

    /// Appends a block durably (one SQLite transaction with the new head).
    pub fn append(&mut self, block: &Block) -> Result<(), ChainStoreError> {
        let hash = block.header.hash();
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO blocks (height, hash, body) VALUES (?1, ?2, ?3)",
            params![block.header.height, hash.to_vec(), encode(block)],
        )?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'head'",
            params![encode(&(block.header.height, hash))],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Blocks from `from` on (at most `max`), as subscribers see them.
    pub fn events(&self, from: Height, max: usize) -> Result<Vec<BlockEvents>, ChainStoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT height, body FROM blocks WHERE height >= ?1 ORDER BY height LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![from, max as i64], |r| {
            Ok((r.get::<_, Height>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (h, body) = row?;
            let block: Block = decode(&body).map_err(|e| ChainStoreError::Corrupt {
                height: h,
                what: e.to_string(),
            })?;
            out.push(block.events());
        }
        Ok(out)
    }
}
