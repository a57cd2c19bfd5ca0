//! Channel records in SQLite.

use std::path::Path;
use std::sync::Arc;

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use gridchan_channel::{
    Amount, ChannelId, ChannelParams, ChannelRecord, ChannelStore, FundsRecord, IntervalIndex,
    Party, Phase, PricePerKwh, Proposal, ProposalParts, Settled, SignedStateParts, StoreError,
    Trade, Version, WattHours,
};

/// The schema migrations, in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE channels (
        id BLOB PRIMARY KEY,
        record BLOB NOT NULL,
        version INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );",
    // The history of settled intervals, for people: `gridchan channel show`.
    "CREATE TABLE trades (
        channel BLOB NOT NULL,
        version INTEGER NOT NULL,
        interval INTEGER NOT NULL,
        seller INTEGER NOT NULL,
        energy_wh INTEGER NOT NULL,
        price INTEGER NOT NULL,
        amount INTEGER NOT NULL,
        PRIMARY KEY (channel, version)
    );",
    // Ledger transactions the gateway owes, until each is included or refused for good.
    crate::ledger_queue::SCHEMA,
    // Watchtowers, and what each acknowledged per channel (see `towers.rs`).
    "CREATE TABLE towers (
        node BLOB PRIMARY KEY,
        address TEXT NOT NULL,
        added_ms INTEGER NOT NULL
    );
    CREATE TABLE tower_acks (
        tower BLOB NOT NULL,
        channel BLOB NOT NULL,
        version INTEGER NOT NULL,
        receipt BLOB NOT NULL,
        PRIMARY KEY (tower, channel)
    );",
    // A tower's batch receipt is kept once, and each channel it covers points to it (it was
    // copied into every channel's row: a batch of n channels stored n^2 entries).
    "CREATE TABLE tower_receipts (
        id INTEGER PRIMARY KEY,
        tower BLOB NOT NULL,
        receipt BLOB NOT NULL
    );
    INSERT INTO tower_receipts (tower, receipt)
        SELECT DISTINCT tower, receipt FROM tower_acks WHERE length(receipt) > 0;
    ALTER TABLE tower_acks ADD COLUMN receipt_id INTEGER REFERENCES tower_receipts (id);
    UPDATE tower_acks SET receipt_id = (SELECT id FROM tower_receipts r
        WHERE r.tower = tower_acks.tower AND r.receipt = tower_acks.receipt);
    ALTER TABLE tower_acks DROP COLUMN receipt;
    CREATE INDEX tower_acks_receipt ON tower_acks (receipt_id);",
    // Where the neighbours a channel was opened to listen (see `peers.rs`).
    "CREATE TABLE peers (
        node BLOB PRIMARY KEY,
        address TEXT NOT NULL
    );",
    // A market channel's settled interval names the book it settles (`specs/market.md`).
    "ALTER TABLE trades ADD COLUMN book BLOB;",
    // The digest of the doubly signed state that settled each interval: what a statement
    // cites as proof (`gridchan report`). Rows written before have none.
    "ALTER TABLE trades ADD COLUMN digest BLOB;",
];

/// One settled interval, as `gridchan channel show` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeRow {
    pub version: u64,
    pub interval: u64,
    /// "A" or "B".
    pub seller: String,
    pub energy_wh: u64,
    /// Micro-units per kWh.
    pub price: u64,
    /// Micro-units.
    pub amount: u64,
}

impl TradeRow {
    /// The row of `trade`, settled at `version`.
    pub fn new(version: Version, trade: &Trade) -> TradeRow {
        TradeRow {
            version: version.0,
            interval: trade.interval.0,
            seller: match trade.seller {
                Party::A => "A",
                Party::B => "B",
            }
            .to_string(),
            energy_wh: trade.energy.0,
            price: trade.price.0,
            amount: trade.amount.0,
        }
    }
}

/// One settled interval as a statement reads it: the channel, the version that settled it, the
/// trade, and the digest of that version's doubly signed state (none for rows written before
/// digests were kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettledRow {
    pub channel: ChannelId,
    pub version: Version,
    pub trade: Trade,
    pub digest: Option<[u8; 32]>,
}

/// A channel record as stored: plain fields, signatures checked again on load.
#[derive(Serialize, Deserialize)]
struct Stored {
    params: ChannelParams,
    me: Party,
    phase: Phase,
    current: Option<SignedStateParts>,
    proposal: Option<ProposalParts>,
    highest_signed: Version,
    peer_highest: Version,
}

/// The gateway's durable channel store.
pub struct SqliteStore {
    conn: Connection,
}

fn write_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::WriteFailed(e.to_string())
}

fn read_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::ReadFailed(e.to_string())
}

impl SqliteStore {
    /// Opens (creating and migrating) the store at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = crate::sqlite::open(path).map_err(read_err)?;
        let mut store = SqliteStore { conn };
        store.migrate()?;
        Ok(store)
    }

    /// SQLite's `quick_check` of the whole file (channels, history, queue, towers): the first
    /// problem it finds, if any. The daemon runs it at start, so damage anywhere in the file
    /// is said at once rather than found by the statement that reads the damaged page.
    pub fn check(&self) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare("PRAGMA quick_check(1)")
            .map_err(read_err)?;
        let first: String = stmt
            .query_row([], |r| r.get(0))
            .map_err(|e| read_err(format!("integrity check: {e}")))?;
        if first == "ok" {
            Ok(())
        } else {
            Err(read_err(format!("fails its integrity check: {first}")))
        }
    }

    /// Every interval settled from `from` to `to` (interval indexes, both included) on any
    /// channel, in the order they were settled per channel.
    pub fn settled_between(
        &self,
        from: IntervalIndex,
        to: IntervalIndex,
    ) -> Result<Vec<SettledRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT channel, version, interval, seller, energy_wh, price, amount, book, digest
                 FROM trades WHERE interval >= ?1 AND interval <= ?2 ORDER BY channel, version",
            )
            .map_err(read_err)?;
        let rows = stmt
            .query_map(params![from.0 as i64, to.0 as i64], |r| {
                let bytes32 = |b: Option<Vec<u8>>| b.and_then(|b| <[u8; 32]>::try_from(b).ok());
                Ok(SettledRow {
                    channel: ChannelId(bytes32(Some(r.get(0)?)).unwrap_or_default()),
                    version: Version(r.get::<_, i64>(1)? as u64),
                    trade: Trade {
                        interval: IntervalIndex(r.get::<_, i64>(2)? as u64),
                        seller: if r.get::<_, i64>(3)? == 0 {
                            Party::A
                        } else {
                            Party::B
                        },
                        energy: WattHours(r.get::<_, i64>(4)? as u64),
                        price: PricePerKwh(r.get::<_, i64>(5)? as u64),
                        amount: Amount(r.get::<_, i64>(6)? as u64),
                        book: bytes32(r.get(7)?).unwrap_or(gridchan_channel::NO_BOOK),
                    },
                    digest: bytes32(r.get(8)?),
                })
            })
            .map_err(read_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(read_err)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let done: usize = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(read_err)?;
        if done > MIGRATIONS.len() {
            return Err(read_err(format!(
                "the store has schema version {done}, newer than this build knows ({}): upgrade gridchan",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
            let tx = self.conn.transaction().map_err(write_err)?;
            tx.execute_batch(sql).map_err(write_err)?;
            tx.pragma_update(None, "user_version", i + 1)
                .map_err(write_err)?;
            tx.commit().map_err(write_err)?;
        }
        Ok(())
    }
}

fn encode(record: &ChannelRecord) -> Vec<u8> {
    let stored = Stored {
        params: (*record.params).clone(),
        me: record.me,
        phase: record.phase,
        current: record.current.as_ref().map(|c| c.to_parts()),
        proposal: record.proposal.as_ref().map(|p| p.to_parts()),
        highest_signed: record.highest_signed,
        peer_highest: record.peer_highest,
    };
    let mut bytes = bincode::serde::encode_to_vec(&stored, bincode::config::standard())
        .expect("records encode");
    // What a channel knows of top-ups and withdrawals follows the record, only once there is
    // any: records from before they existed read as none.
    if record.funds != FundsRecord::default() {
        bytes.extend(
            bincode::serde::encode_to_vec(record.funds, bincode::config::standard())
                .expect("records encode"),
        );
    }
    bytes
}

fn decode(id: &[u8], bytes: &[u8]) -> Result<ChannelRecord, StoreError> {
    let (stored, used): (Stored, usize) =
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map_err(|e| read_err(format!("channel {}: {e}", hex(id))))?;
    let funds = if used < bytes.len() {
        let (funds, more): (FundsRecord, usize) =
            bincode::serde::decode_from_slice(&bytes[used..], bincode::config::standard())
                .map_err(|e| read_err(format!("channel {}: funds: {e}", hex(id))))?;
        if used + more != bytes.len() {
            return Err(read_err(format!(
                "channel {}: bytes after the record",
                hex(id)
            )));
        }
        funds
    } else {
        FundsRecord::default()
    };
    let channel_id = stored.params.channel_id();
    if channel_id.0[..] != id[..] {
        return Err(read_err(format!(
            "channel {}: id does not match its parameters",
            hex(id)
        )));
    }
    let current = stored
        .current
        .map(|c| c.verify(&stored.params, &channel_id))
        .transpose()
        .map_err(|e| read_err(format!("channel {}: stored state: {e}", hex(id))))?;
    let proposal = stored
        .proposal
        .map(|p| Proposal::verify(&stored.params, &channel_id, p))
        .transpose()
        .map_err(|e| read_err(format!("channel {}: stored proposal: {e}", hex(id))))?;
    Ok(ChannelRecord {
        id: ChannelId(channel_id.0),
        params: Arc::new(stored.params),
        me: stored.me,
        phase: stored.phase,
        current,
        proposal,
        highest_signed: stored.highest_signed,
        peer_highest: stored.peer_highest,
        funds,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().take(4).map(|x| format!("{x:02x}")).collect()
}

impl ChannelStore for SqliteStore {
    fn write(&mut self, record: &ChannelRecord) -> Result<(), StoreError> {
        self.write_batch(&[record], &[])
    }

    /// Writes several records, and the history of intervals settled meanwhile, in one durable
    /// transaction: one fsync for many channels.
    fn write_batch(
        &mut self,
        records: &[&ChannelRecord],
        trades: &[Settled],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(write_err)?;
        if !trades.is_empty() {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO trades
                     (channel, version, interval, seller, energy_wh, price, amount, book, digest)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(write_err)?;
            for (channel, version, t, digest) in trades {
                stmt.execute(params![
                    channel.0.to_vec(),
                    version.0 as i64,
                    t.interval.0 as i64,
                    t.seller.index() as i64,
                    t.energy.0 as i64,
                    t.price.0 as i64,
                    t.amount.0 as i64,
                    (t.book != gridchan_channel::NO_BOOK).then(|| t.book.to_vec()),
                    digest.to_vec()
                ])
                .map_err(write_err)?;
            }
        }
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO channels (id, record, version, updated_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(id) DO UPDATE SET record = ?2, version = ?3, updated_ms = ?4",
                )
                .map_err(write_err)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            for record in records {
                let version = record.current.as_ref().map(|c| c.version().0).unwrap_or(0);
                stmt.execute(params![
                    record.id.0.to_vec(),
                    encode(record),
                    version as i64,
                    now
                ])
                .map_err(write_err)?;
            }
        }
        tx.commit().map_err(write_err)
    }

    /// The last `n` settled intervals of `channel`, newest first.
    fn recent_settled(
        &self,
        channel: &ChannelId,
        n: usize,
    ) -> Result<Vec<(Version, Trade)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT version, interval, seller, energy_wh, price, amount, book FROM trades
                 WHERE channel = ?1 ORDER BY version DESC LIMIT ?2",
            )
            .map_err(read_err)?;
        let rows = stmt
            .query_map(params![channel.0.to_vec(), n as i64], |r| {
                let trade = Trade {
                    interval: IntervalIndex(r.get::<_, i64>(1)? as u64),
                    seller: if r.get::<_, i64>(2)? == 0 {
                        Party::A
                    } else {
                        Party::B
                    },
                    energy: WattHours(r.get::<_, i64>(3)? as u64),
                    price: PricePerKwh(r.get::<_, i64>(4)? as u64),
                    amount: Amount(r.get::<_, i64>(5)? as u64),
                    book: r
                        .get::<_, Option<Vec<u8>>>(6)?
                        .and_then(|b| b.try_into().ok())
                        .unwrap_or(gridchan_channel::NO_BOOK),
                };
                Ok((Version(r.get::<_, i64>(0)? as u64), trade))
            })
            .map_err(read_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(read_err)
    }

    fn load(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, record FROM channels ORDER BY id")
            .map_err(read_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(read_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, bytes) = row.map_err(read_err)?;
            out.push(decode(&id, &bytes)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_receipts_copied_into_every_channels_row_are_kept_once_after_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.sqlite");
        // A store as the build before wrote it: the receipt in every acknowledgement's row.
        // The migration that made `tower_receipts` is the fifth.
        let before = 4;
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..before] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", before).unwrap();
            let ack =
                "INSERT INTO tower_acks (tower, channel, version, receipt) VALUES (?1, ?2, ?3, ?4)";
            for (tower, channel, receipt) in [
                (1u8, 1u8, vec![7u8; 100]),
                (1, 2, vec![7; 100]),
                (1, 3, vec![8; 100]),
                (2, 1, vec![7; 100]),
                (1, 4, vec![]),
            ] {
                conn.execute(ack, params![vec![tower], vec![channel], 5, receipt])
                    .unwrap();
            }
        }
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let receipts: Vec<(Vec<u8>, Vec<u8>)> = conn
            .prepare("SELECT tower, receipt FROM tower_receipts ORDER BY tower, receipt")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            receipts,
            vec![
                (vec![1], vec![7; 100]),
                (vec![1], vec![8; 100]),
                (vec![2], vec![7; 100]),
            ]
        );
        /// Tower, channel, the receipt its acknowledgement points to.
        type Pointing = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);
        let pointing: Vec<Pointing> = conn
            .prepare(
                "SELECT a.tower, a.channel, r.receipt FROM tower_acks a
                 LEFT JOIN tower_receipts r ON r.id = a.receipt_id ORDER BY a.tower, a.channel",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            pointing,
            vec![
                (vec![1], vec![1], Some(vec![7; 100])),
                (vec![1], vec![2], Some(vec![7; 100])),
                (vec![1], vec![3], Some(vec![8; 100])),
                (vec![1], vec![4], None),
                (vec![2], vec![1], Some(vec![7; 100])),
            ]
        );
    }
}
