//! The tower's SQLite store: its clients, one row per guarded channel (the newest state only,
//! so storage grows with channels and never with updates), what it did on the ledger, and how
//! far it has followed the ledger.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use gridchan_channel::{ChannelId, ChannelParams, NodeId, SignedState, SignedStateParts};

const MIGRATIONS: &[&str] = &["CREATE TABLE clients (
        node BLOB PRIMARY KEY,
        registered_ms INTEGER NOT NULL
    );
    CREATE TABLE channels (
        id BLOB PRIMARY KEY,
        client BLOB NOT NULL,
        version INTEGER NOT NULL,
        state BLOB NOT NULL,
        params BLOB NOT NULL,
        updated_ms INTEGER NOT NULL,
        closed INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX channels_client ON channels (client);
    CREATE TABLE actions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel BLOB NOT NULL,
        registered_version INTEGER NOT NULL,
        our_version INTEGER NOT NULL,
        seen_height INTEGER NOT NULL,
        deadline INTEGER NOT NULL,
        outcome TEXT,
        included_height INTEGER,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"];

#[derive(Debug, thiserror::Error)]
#[error("tower store: {0}")]
pub struct StoreError(String);

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).expect("tower data encodes")
}

fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(err)
}

/// A guarded channel as stored.
#[derive(Clone, Debug)]
pub struct Guarded {
    pub id: ChannelId,
    pub client: NodeId,
    pub params: ChannelParams,
    pub state: SignedState,
    pub closed: bool,
}

/// One refute the tower made (or is making).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub id: i64,
    pub channel: ChannelId,
    pub registered_version: u64,
    pub our_version: u64,
    pub seen_height: u64,
    pub deadline: u64,
    pub outcome: Option<String>,
    pub included_height: Option<u64>,
}

pub struct TowerStore {
    conn: Connection,
}

impl TowerStore {
    pub fn open(path: &Path) -> Result<TowerStore, StoreError> {
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        let mut store = TowerStore { conn };
        store.migrate()?;
        Ok(store)
    }

    /// Opens an existing store for reading only (operator commands beside a running tower).
    pub fn open_read_only(path: &Path) -> Result<TowerStore, StoreError> {
        if !path.exists() {
            return Err(StoreError(format!(
                "no tower store at {}: is this the tower's data folder?",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        Ok(TowerStore { conn })
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let done: usize = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if done > MIGRATIONS.len() {
            return Err(StoreError(format!(
                "the tower store has schema version {done}, newer than this build: upgrade gridchan"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
            let tx = self.conn.transaction().map_err(err)?;
            tx.execute_batch(sql).map_err(err)?;
            tx.pragma_update(None, "user_version", i + 1).map_err(err)?;
            tx.commit().map_err(err)?;
        }
        Ok(())
    }

    pub fn add_client(&mut self, node: &NodeId) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO clients (node, registered_ms) VALUES (?1, ?2)",
                params![node.to_bytes().to_vec(), now_ms()],
            )
            .map_err(err)?;
        Ok(())
    }

    pub fn clients(&self) -> Result<Vec<(NodeId, i64, usize)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT c.node, c.registered_ms,
                        (SELECT COUNT(*) FROM channels h WHERE h.client = c.node)
                 FROM clients c ORDER BY c.registered_ms",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let (node, ms, n) = row.map_err(err)?;
            out.push((node_of(&node)?, ms, n as usize));
        }
        Ok(out)
    }

    /// Stores the newest states of several channels in one durable transaction. A row is only
    /// ever replaced by a higher version.
    pub fn put_many(
        &mut self,
        items: &[(NodeId, &ChannelParams, &SignedState)],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO channels (id, client, version, state, params, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT(id) DO UPDATE SET version = excluded.version,
                        state = excluded.state, updated_ms = excluded.updated_ms
                     WHERE excluded.version > channels.version",
                )
                .map_err(err)?;
            let now = now_ms();
            for (client, params, state) in items {
                stmt.execute(params![
                    state.state().channel_id.0.to_vec(),
                    client.to_bytes().to_vec(),
                    state.version().0 as i64,
                    encode(&state.to_parts()),
                    encode(*params),
                    now
                ])
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    pub fn mark_closed(&mut self, id: &ChannelId) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE channels SET closed = 1 WHERE id = ?1",
                params![id.0.to_vec()],
            )
            .map_err(err)?;
        Ok(())
    }

    /// Every guarded channel, signatures checked again on the way in.
    pub fn channels(&self) -> Result<Vec<Guarded>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, client, state, params, closed FROM channels ORDER BY id")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, client, state, params, closed) = row.map_err(err)?;
            let id = ChannelId(<[u8; 32]>::try_from(id.as_slice()).map_err(err)?);
            let params: ChannelParams = decode(&params)?;
            let parts: SignedStateParts = decode(&state)?;
            let state = parts
                .verify(&params, &id)
                .map_err(|e| StoreError(format!("stored state of {}: {e}", id.short())))?;
            out.push(Guarded {
                id,
                client: node_of(&client)?,
                params,
                state,
                closed: closed != 0,
            });
        }
        Ok(out)
    }

    pub fn record_action(&mut self, a: &Action) -> Result<i64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO actions (channel, registered_version, our_version, seen_height,
                    deadline, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    a.channel.0.to_vec(),
                    a.registered_version as i64,
                    a.our_version as i64,
                    a.seen_height as i64,
                    a.deadline as i64,
                    now_ms()
                ],
            )
            .map_err(err)?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_action(
        &mut self,
        id: i64,
        outcome: &str,
        included_height: Option<u64>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE actions SET outcome = ?2, included_height = ?3, updated_ms = ?4
                 WHERE id = ?1",
                params![id, outcome, included_height.map(|h| h as i64), now_ms()],
            )
            .map_err(err)?;
        Ok(())
    }

    pub fn actions(&self) -> Result<Vec<Action>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, channel, registered_version, our_version, seen_height, deadline,
                    outcome, included_height FROM actions ORDER BY id",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                ))
            })
            .map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, channel, rv, ov, seen, deadline, outcome, included) = row.map_err(err)?;
            out.push(Action {
                id,
                channel: ChannelId(<[u8; 32]>::try_from(channel.as_slice()).map_err(err)?),
                registered_version: rv as u64,
                our_version: ov as u64,
                seen_height: seen as u64,
                deadline: deadline as u64,
                outcome,
                included_height: included.map(|h| h as u64),
            });
        }
        Ok(out)
    }

    /// The next ledger height to process.
    pub fn next_height(&self) -> Result<Option<u64>, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'next_height'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|v| v.map(|v| v as u64))
            .map_err(err)
    }

    pub fn set_next_height(&mut self, h: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES ('next_height', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![h as i64],
            )
            .map_err(err)?;
        Ok(())
    }

    /// Bytes the store takes on disk (database and write-ahead log), after folding the log in.
    pub fn bytes_on_disk(&mut self, path: &Path) -> Result<u64, StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(err)?;
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let wal = path.with_extension("sqlite-wal");
        Ok(size(path) + size(&wal))
    }
}

fn node_of(bytes: &[u8]) -> Result<NodeId, StoreError> {
    let b = <[u8; 33]>::try_from(bytes).map_err(err)?;
    NodeId::from_bytes(&b).map_err(err)
}
