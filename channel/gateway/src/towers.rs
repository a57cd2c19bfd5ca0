//! The gateway's side of watchtowers: every new doubly signed state goes to each tower the
//! household configured, so that a neighbour's stale registration is refuted while this
//! gateway is offline.
//!
//! Nothing needs a queue of states: the newest state of every channel is already durable in
//! the channel store. What is stored per tower is what it acknowledged (version and signed
//! receipt). A pusher per tower sends, for each channel, the newest state above that, and only
//! the newest (a slow tower gets the latest, never a backlog), retrying with backoff; after a
//! restart it starts from the acknowledgements, so a tower that was down catches up.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gridchan_channel::{ChannelId, NodeId, Phase, SignedState, Signer, Version};
use gridchan_transport::PeerAddr;
use gridchan_watchtower::{Rejection, TowerClient, TowerError};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::engine::EngineHandle;
use crate::error::GatewayError;

/// One tower as `gridchan tower list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TowerSummary {
    pub address: String,
    /// Channels whose newest state the tower acknowledged.
    pub acknowledged: usize,
    /// Channels with a newer state than the tower acknowledged.
    pub pending: usize,
    pub last_error: Option<String>,
}

struct Inner {
    engine: EngineHandle,
    conn: Mutex<Connection>,
    auth: Signer,
    pushers: Mutex<HashMap<NodeId, Pusher>>,
    /// Towers that must hold a channel's newest state before it signs a newer one (0: none).
    min_acks: u8,
}

struct Pusher {
    address: PeerAddr,
    task: tokio::task::JoinHandle<()>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl Drop for Pusher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The gateway's towers and their pushers.
#[derive(Clone)]
pub struct Towers(Arc<Inner>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Towers {
    /// Opens the tower tables of the gateway's store and starts a pusher for every tower
    /// recorded there or given in `configured` (which are recorded).
    pub fn start(
        engine: EngineHandle,
        store_path: PathBuf,
        auth: Signer,
        configured: &[PeerAddr],
        min_acks: u8,
    ) -> Result<Towers, GatewayError> {
        let conn = crate::sqlite::open(&store_path)?;
        let towers = Towers(Arc::new(Inner {
            engine,
            conn: Mutex::new(conn),
            auth,
            pushers: Mutex::new(HashMap::new()),
            min_acks,
        }));
        for addr in configured {
            towers.record(addr)?;
        }
        if min_acks > 0 {
            // What the towers acknowledged before the restart lets the channels go on.
            let towers = towers.clone();
            tokio::spawn(async move {
                if let Ok(channels) = towers.0.engine.channels().await {
                    let ids: Vec<ChannelId> = channels.iter().map(|c| c.id).collect();
                    towers.report_acked(&ids).await;
                }
            });
        }
        for addr in towers.recorded()? {
            towers.spawn(addr);
        }
        Ok(towers)
    }

    fn record(&self, addr: &PeerAddr) -> Result<(), GatewayError> {
        lock(&self.0.conn).execute(
            "INSERT INTO towers (node, address, added_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(node) DO UPDATE SET address = excluded.address",
            params![addr.node.to_bytes().to_vec(), addr.to_string(), now_ms()],
        )?;
        Ok(())
    }

    fn recorded(&self) -> Result<Vec<PeerAddr>, GatewayError> {
        let conn = lock(&self.0.conn);
        let mut stmt = conn.prepare("SELECT address FROM towers ORDER BY added_ms")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            let text = r?;
            out.push(
                text.parse()
                    .map_err(|e| GatewayError::Store(format!("stored tower {text}: {e}")))?,
            );
        }
        Ok(out)
    }

    fn spawn(&self, addr: PeerAddr) {
        let last_error = Arc::new(Mutex::new(None));
        let task = tokio::spawn(push(self.clone(), addr.clone(), last_error.clone()));
        lock(&self.0.pushers).insert(
            addr.node,
            Pusher {
                address: addr,
                task,
                last_error,
            },
        );
    }

    /// Stops every pusher (the daemon is stopping).
    pub fn stop(&self) {
        lock(&self.0.pushers).clear();
    }

    /// Adds a tower (or changes its address) and starts pushing to it.
    pub fn add(&self, addr: PeerAddr) -> Result<(), GatewayError> {
        self.record(&addr)?;
        lock(&self.0.pushers).remove(&addr.node);
        self.spawn(addr);
        Ok(())
    }

    /// Stops using a tower; returns how many channels it had not acknowledged at their newest
    /// state (they stay safe with the other towers, and with the gateway itself when online).
    pub async fn remove(&self, prefix: &str) -> Result<(PeerAddr, usize), GatewayError> {
        let node = {
            let pushers = lock(&self.0.pushers);
            let matches: Vec<&Pusher> = pushers
                .values()
                .filter(|p| p.address.node.to_string().starts_with(prefix))
                .collect();
            match matches.as_slice() {
                [one] => one.address.clone(),
                [] => {
                    return Err(GatewayError::Request(format!(
                        "no tower {prefix}: see `gridchan tower list`"
                    )))
                }
                _ => {
                    return Err(GatewayError::Request(format!(
                        "{prefix} matches several towers: give more digits"
                    )))
                }
            }
        };
        let pending = self.summary_of(&node, None).await?.pending;
        lock(&self.0.pushers).remove(&node.node);
        let conn = lock(&self.0.conn);
        let key = node.node.to_bytes().to_vec();
        conn.execute("DELETE FROM towers WHERE node = ?1", params![key])?;
        conn.execute("DELETE FROM tower_acks WHERE tower = ?1", params![key])?;
        conn.execute("DELETE FROM tower_receipts WHERE tower = ?1", params![key])?;
        Ok((node, pending))
    }

    pub async fn list(&self) -> Result<Vec<TowerSummary>, GatewayError> {
        let towers: Vec<(PeerAddr, Option<String>)> = lock(&self.0.pushers)
            .values()
            .map(|p| (p.address.clone(), lock(&p.last_error).clone()))
            .collect();
        let mut out = Vec::new();
        for (addr, err) in towers {
            out.push(self.summary_of(&addr, err).await?);
        }
        out.sort_by(|a, b| a.address.cmp(&b.address));
        Ok(out)
    }

    async fn summary_of(
        &self,
        addr: &PeerAddr,
        last_error: Option<String>,
    ) -> Result<TowerSummary, GatewayError> {
        let acks = self.acks(&addr.node)?;
        let channels = self.0.engine.channels().await?;
        let mut acknowledged = 0;
        let mut pending = 0;
        for c in channels.iter().filter(|c| guardable(c.phase)) {
            let Some(cur) = &c.current else { continue };
            match acks.get(&c.id) {
                Some(v) if *v >= cur.version() => acknowledged += 1,
                _ => pending += 1,
            }
        }
        Ok(TowerSummary {
            address: addr.to_string(),
            acknowledged,
            pending,
            last_error,
        })
    }

    fn acks(&self, tower: &NodeId) -> Result<HashMap<ChannelId, Version>, GatewayError> {
        let conn = lock(&self.0.conn);
        let mut stmt =
            conn.prepare_cached("SELECT channel, version FROM tower_acks WHERE tower = ?1")?;
        let rows = stmt.query_map(params![tower.to_bytes().to_vec()], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut out = HashMap::new();
        for r in rows {
            let (c, v) = r?;
            if let Ok(c) = <[u8; 32]>::try_from(c.as_slice()) {
                out.insert(ChannelId(c), Version(v as u64));
            }
        }
        Ok(out)
    }

    /// The newest version of `channel` that at least `min_acks` towers acknowledged.
    fn acked_by_enough(&self, channel: &ChannelId) -> Result<Option<Version>, GatewayError> {
        let conn = lock(&self.0.conn);
        let mut stmt = conn.prepare_cached(
            "SELECT version FROM tower_acks WHERE channel = ?1 ORDER BY version DESC LIMIT 1 OFFSET ?2",
        )?;
        let n = i64::from(self.0.min_acks.max(1)) - 1;
        Ok(stmt
            .query_row(params![channel.0.to_vec(), n], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|v| Version(v as u64)))
    }

    /// Tells the engine, for each of `channels`, the newest version enough towers hold.
    async fn report_acked(&self, channels: &[ChannelId]) {
        for id in channels {
            match self.acked_by_enough(id) {
                Ok(Some(version)) => {
                    let _ = self.0.engine.towers_acked(*id, version).await;
                }
                Ok(None) => {}
                Err(e) => tracing::error!("tower acknowledgements of {} unread: {e}", id.short()),
            }
        }
    }

    /// Records what `tower` acknowledged: per channel, the version and which of `receipts` (the
    /// batches' receipts, each stored once) covers it. Receipts no channel points to any more
    /// are dropped.
    fn store_acks(
        &self,
        tower: &NodeId,
        acks: &[(ChannelId, Version, Option<usize>)],
        receipts: &[Vec<u8>],
    ) -> Result<(), GatewayError> {
        let key = tower.to_bytes().to_vec();
        let mut conn = lock(&self.0.conn);
        let tx = conn.transaction()?;
        {
            let mut ids = Vec::with_capacity(receipts.len());
            let mut stmt =
                tx.prepare_cached("INSERT INTO tower_receipts (tower, receipt) VALUES (?1, ?2)")?;
            for r in receipts {
                stmt.execute(params![key, r])?;
                ids.push(tx.last_insert_rowid());
            }
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO tower_acks (tower, channel, version, receipt_id) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(tower, channel) DO UPDATE SET version = excluded.version,
                        receipt_id = excluded.receipt_id WHERE excluded.version > tower_acks.version",
                )
                ?;
            for (c, v, receipt) in acks {
                let receipt_id = receipt.and_then(|i| ids.get(i).copied());
                stmt.execute(params![key, c.0.to_vec(), v.0 as i64, receipt_id])?;
            }
            tx.execute(
                "DELETE FROM tower_receipts WHERE tower = ?1 AND NOT EXISTS
                    (SELECT 1 FROM tower_acks a WHERE a.receipt_id = tower_receipts.id)",
                params![key],
            )?;
        }
        Ok(tx.commit()?)
    }
}

/// Channels whose states a tower should hold: funded and not yet paid out.
fn guardable(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Open | Phase::Closing | Phase::Disputed | Phase::ClosedCooperatively
    )
}

/// Keeps one tower up to date, for as long as it is configured.
async fn push(towers: Towers, addr: PeerAddr, last_error: Arc<Mutex<Option<String>>>) {
    let inner = &towers.0;
    // Subscribed before the channels are read: nothing falls between the two.
    let Ok(queue) = inner.engine.watch_states().await else {
        return;
    };
    let client = match TowerClient::new(addr.clone(), inner.auth.duplicate(&rand::random())) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            *lock(&last_error) = Some(e.to_string());
            return;
        }
    };
    let set_error = |e: Option<String>| *lock(&last_error) = e;
    let mut backoff = Duration::from_millis(200);
    // Register (retrying while the tower is away).
    loop {
        match client.register().await {
            Ok(()) => break,
            Err(e @ TowerError::Rejected(_)) => {
                tracing::error!("tower {addr}: {e}");
                set_error(Some(e.to_string()));
                return;
            }
            Err(e) => {
                set_error(Some(e.to_string()));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    // What the tower has not acknowledged yet: the newest state of each such channel.
    let mut dirty: HashMap<ChannelId, SignedState> = HashMap::new();
    let mut acked = towers.acks(&addr.node).unwrap_or_default();
    if let Ok(channels) = inner.engine.channels().await {
        for c in channels.into_iter().filter(|c| guardable(c.phase)) {
            if let Some(cur) = c.current {
                if acked.get(&c.id).is_none_or(|v| *v < cur.version()) {
                    dirty.insert(c.id, cur);
                }
            }
        }
    }
    let newest = |dirty: &mut HashMap<ChannelId, SignedState>, new: HashMap<_, SignedState>| {
        for (id, s) in new {
            if dirty.get(&id).is_none_or(|d| d.version() < s.version()) {
                dirty.insert(id, s);
            }
        }
    };
    loop {
        // New states since: keep only the newest per channel.
        if dirty.is_empty() {
            match queue.take().await {
                Some(new) => newest(&mut dirty, new),
                None => return, // the engine stopped
            }
        } else {
            newest(&mut dirty, queue.try_take());
        }
        // Send a round, a batch at a time.
        let round: Vec<SignedState> = dirty.values().cloned().collect();
        let mut done = Vec::new();
        let mut receipts = Vec::new();
        let mut retry_later = false;
        for chunk in round.chunks(gridchan_watchtower::rpc::MAX_BATCH) {
            let (answers, receipt) = match client.guard_many(chunk).await {
                Ok(a) => a,
                Err(e) => {
                    set_error(Some(e.to_string()));
                    retry_later = true;
                    break;
                }
            };
            // The batch's receipt, stored once; the channels it covers point to it.
            let receipt = receipt
                .as_ref()
                .and_then(|r| bincode::serde::encode_to_vec(r, bincode::config::standard()).ok())
                .map(|r| {
                    receipts.push(r);
                    receipts.len() - 1
                });
            for (s, result) in chunk.iter().zip(answers) {
                let id = s.state().channel_id;
                match result {
                    Ok(()) => done.push((id, s.version(), receipt)),
                    Err(TowerError::Rejected(Rejection::OlderVersion { held, .. })) => {
                        // The tower has newer (another device of ours? a restore): fine.
                        done.push((id, Version(held), None));
                    }
                    Err(TowerError::Rejected(Rejection::Closed)) => {
                        done.push((id, s.version(), None));
                    }
                    Err(e) => {
                        // Unknown on the ledger yet, over quota, unreachable: later.
                        tracing::debug!("tower {addr}: channel {}: {e}", id.short());
                        set_error(Some(e.to_string()));
                        retry_later = true;
                    }
                }
            }
        }
        if !done.is_empty() {
            if let Err(e) = towers.store_acks(&addr.node, &done, &receipts) {
                tracing::error!("tower acknowledgements not recorded: {e}");
            } else if inner.min_acks > 0 {
                let ids: Vec<ChannelId> = done.iter().map(|(id, _, _)| *id).collect();
                towers.report_acked(&ids).await;
            }
            for (id, v, _) in &done {
                acked.insert(*id, *v);
                if dirty.get(id).is_some_and(|d| d.version() <= *v) {
                    dirty.remove(id);
                }
            }
        }
        if retry_later {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        } else {
            set_error(None);
            backoff = Duration::from_millis(200);
        }
    }
}
