//! The durable queue of ledger transactions a gateway owes: deposits, registrations, refutes,
//! concludes, withdrawals. A channel's request is written here before anything else happens to
//! it, and stays until the ledger included the transaction or refused it for good, so a ledger
//! that is down (island mode) or a gateway restart loses none of them: the submitter retries
//! with backoff, in order, and carries on after a restart from what is still pending.
//!
//! Resubmitting is safe: every adjudicator rule refuses a repeat (a second registration finds
//! the channel registered, a second withdrawal finds nothing left to claim), so a transaction
//! that was included just before a crash and is sent again is only refused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gridchan_chain::{Ledger, LedgerError, TxError, TxHash, TxKind};
use gridchan_channel::{ChannelId, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::Notify;

use crate::error::GatewayError;

/// The queue's table (a migration of the gateway's store, and created by [`LedgerQueue::open`]
/// on a file that has none).
pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS ledger_queue (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel BLOB,
        what TEXT NOT NULL,
        tx BLOB NOT NULL,
        created_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        done_ms INTEGER,
        outcome TEXT
    );
    CREATE INDEX IF NOT EXISTS ledger_queue_pending ON ledger_queue (done_ms, id);";

/// Blocks after which a submitted transaction still not included is sent again.
const RESUBMIT_AFTER_BLOCKS: u64 = 20;
/// The longest wait between attempts while the ledger is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One transaction waiting in the queue.
#[derive(Clone, Debug)]
pub struct QueuedTx {
    pub id: i64,
    pub channel: Option<ChannelId>,
    pub tx: TxKind,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// A transaction the queue is done with, for `gridchan status` and tests.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FinishedTx {
    pub what: String,
    pub channel: Option<String>,
    pub attempts: u32,
    /// `included at N`, `failed at N: ...`, or `refused: ...`.
    pub outcome: String,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn encode(tx: &TxKind) -> Vec<u8> {
    bincode::serde::encode_to_vec(tx, bincode::config::standard()).expect("transactions encode")
}

fn insert(conn: &Connection, channel: Option<&ChannelId>, tx: &TxKind) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO ledger_queue (channel, what, tx, created_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        channel.map(|c| c.0.to_vec()),
        tx.name(),
        encode(tx),
        now_ms()
    ])?;
    Ok(())
}

/// The queue, on its own connection to the gateway's file. Whoever pushes wakes the submitter
/// ([`run_submitter`]).
pub struct LedgerQueue {
    conn: Mutex<Connection>,
    pushed: Notify,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::WriteFailed(e.to_string())
}

impl LedgerQueue {
    /// Opens the queue in the gateway's file at `path` (creating its table if the file has
    /// none yet).
    pub fn open(path: &Path) -> Result<LedgerQueue, StoreError> {
        let conn = crate::sqlite::open(path).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(LedgerQueue {
            conn: Mutex::new(conn),
            pushed: Notify::new(),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `tx` durably, then wakes the submitter.
    pub fn push(&self, channel: Option<&ChannelId>, tx: &TxKind) -> Result<(), StoreError> {
        insert(&self.conn(), channel, tx).map_err(err)?;
        self.pushed.notify_one();
        Ok(())
    }

    /// Every transaction not yet done with, oldest first.
    pub fn pending(&self) -> Result<Vec<QueuedTx>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, channel, tx, attempts, last_error FROM ledger_queue
                 WHERE done_ms IS NULL ORDER BY id",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<Vec<u8>>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })
            .map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, channel, bytes, attempts, last_error) = row.map_err(err)?;
            let (tx, _): (TxKind, usize) =
                bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
                    .map_err(|e| StoreError::ReadFailed(format!("queued transaction {id}: {e}")))?;
            let channel = channel.and_then(|c| <[u8; 32]>::try_from(c).ok().map(ChannelId));
            out.push(QueuedTx {
                id,
                channel,
                tx,
                attempts: attempts as u32,
                last_error,
            });
        }
        Ok(out)
    }

    /// Records a failed attempt; the transaction stays queued.
    pub fn attempt_failed(&self, id: i64, error: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "UPDATE ledger_queue SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
            )
            .map_err(err)?
            .execute(params![id, error])
            .map_err(err)?;
        Ok(())
    }

    /// The queue is done with `id`: included, or refused for good.
    pub fn finish(&self, id: i64, outcome: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "UPDATE ledger_queue SET attempts = attempts + 1, done_ms = ?2, outcome = ?3
                 WHERE id = ?1",
            )
            .map_err(err)?
            .execute(params![id, now_ms(), outcome])
            .map_err(err)?;
        Ok(())
    }

    /// The `n` transactions finished last, newest first.
    pub fn finished(&self, n: usize) -> Result<Vec<FinishedTx>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT what, channel, attempts, outcome FROM ledger_queue
                 WHERE done_ms IS NOT NULL ORDER BY done_ms DESC, id DESC LIMIT ?1",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([n as i64], |r| {
                Ok(FinishedTx {
                    what: r.get(0)?,
                    channel: r
                        .get::<_, Option<Vec<u8>>>(1)?
                        .and_then(|c| <[u8; 32]>::try_from(c).ok())
                        .map(|c| ChannelId(c).to_string()),
                    attempts: r.get::<_, i64>(2)? as u32,
                    outcome: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                })
            })
            .map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
    }

    /// How many transactions wait.
    pub fn pending_count(&self) -> Result<usize, StoreError> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM ledger_queue WHERE done_ms IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(err)
            .map(|n| n.unwrap_or(0) as usize)
    }
}

/// Runs a queue call on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    queue: &Arc<LedgerQueue>,
    f: impl FnOnce(&LedgerQueue) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let q = queue.clone();
    tokio::task::spawn_blocking(move || f(&q))
        .await
        .map_err(|e| StoreError::WriteFailed(e.to_string()))?
}

/// Submits what the queue holds until each is included or refused; wakes when something is
/// pushed and retries with backoff while the ledger is away. Runs until its task is aborted.
/// The most queued operations sent as one batch transaction.
pub const BATCH_MAX: usize = 100;

/// Where a queued transaction went: its hash, the height when it was sent, and its place in
/// the batch that carried it (if one did).
#[derive(Clone, Copy)]
struct Sent {
    hash: TxHash,
    at: u64,
    index: Option<u32>,
}

pub async fn run_submitter(queue: Arc<LedgerQueue>, ledger: Arc<dyn Ledger>) {
    // Submitted and not yet seen in a block, by queue id.
    let mut inflight: HashMap<i64, Sent> = HashMap::new();
    let mut backoff = Duration::from_millis(200);
    loop {
        match submit_round(&queue, &ledger, &mut inflight).await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) => {
                tracing::warn!("ledger queue: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        }
        if !inflight.is_empty() {
            // Something is on its way: look again after the next block.
            if let Ok(h) = ledger.height().await {
                let _ = ledger.wait_above(h, Duration::from_secs(5)).await;
            }
            continue;
        }
        // Idle: wait for a push (a permit stored by one that came meanwhile is taken at
        // once), or look again now and then.
        let _ = tokio::time::timeout(Duration::from_secs(5), queue.pushed.notified()).await;
    }
}

/// Whether a queued operation may share a transaction with others: funding, top-ups,
/// conclusions and withdrawals. Registrations and refutes go alone, at once.
fn batchable(tx: &TxKind) -> bool {
    matches!(
        tx,
        TxKind::Deposit { .. }
            | TxKind::TopUp { .. }
            | TxKind::ConcludeFinal { .. }
            | TxKind::Conclude { .. }
            | TxKind::Withdraw { .. }
            | TxKind::WithdrawOpen { .. }
            | TxKind::Reclaim { .. }
    )
}

/// The unsent operations in queue order, as the transactions that carry them: runs of
/// batchable operations (two or more) become one batch of at most [`BATCH_MAX`], the rest go
/// one by one.
fn group(unsent: &[&QueuedTx]) -> Vec<Vec<QueuedTx>> {
    let mut out: Vec<Vec<QueuedTx>> = Vec::new();
    let mut run: Vec<QueuedTx> = Vec::new();
    let flush = |run: &mut Vec<QueuedTx>, out: &mut Vec<Vec<QueuedTx>>| {
        for chunk in run.chunks(BATCH_MAX) {
            out.push(chunk.to_vec());
        }
        run.clear();
    };
    for item in unsent {
        if batchable(&item.tx) {
            run.push((*item).clone());
        } else {
            flush(&mut run, &mut out);
            out.push(vec![(*item).clone()]);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// One pass: submit what waits, then collect receipts. An error means the ledger (or the
/// store) is unavailable; the pass is retried after a backoff.
async fn submit_round(
    queue: &Arc<LedgerQueue>,
    ledger: &Arc<dyn Ledger>,
    inflight: &mut HashMap<i64, Sent>,
) -> Result<(), GatewayError> {
    let pending = blocking(queue, |q| q.pending()).await?;
    inflight.retain(|id, _| pending.iter().any(|p| p.id == *id));
    let height = match ledger.height().await {
        Ok(h) => h,
        Err(e) => {
            // Say so on the transaction that waits longest (`gridchan status` shows it).
            if let Some(first) = pending.first() {
                let (id, msg) = (first.id, e.to_string());
                let _ = blocking(queue, move |q| q.attempt_failed(id, &msg)).await;
            }
            return Err(GatewayError::Ledger(e.to_string()));
        }
    };
    let unsent: Vec<&QueuedTx> = pending
        .iter()
        .filter(|p| !inflight.contains_key(&p.id))
        .collect();
    for group in group(&unsent) {
        if let [item] = &group[..] {
            submit_one(queue, ledger, item, height, inflight).await?;
            continue;
        }
        let kind = TxKind::Batch {
            items: group.iter().map(|i| i.tx.clone()).collect(),
        };
        match ledger.submit(kind).await {
            Ok(hash) => {
                tracing::info!(
                    "ledger: submitted {} operations in one batch: {hash}",
                    group.len()
                );
                for (index, item) in group.iter().enumerate() {
                    let index = Some(index as u32);
                    inflight.insert(
                        item.id,
                        Sent {
                            hash,
                            at: height,
                            index,
                        },
                    );
                }
            }
            Err(LedgerError::Refused(e)) => {
                // The batch as a whole (not one operation in it): send them one by one.
                tracing::warn!(
                    "ledger: a batch of {} refused ({e}); sending them one by one",
                    group.len()
                );
                for item in &group {
                    submit_one(queue, ledger, item, height, inflight).await?;
                }
            }
            Err(e) => {
                let (id, msg) = (group[0].id, e.to_string());
                blocking(queue, move |q| q.attempt_failed(id, &msg)).await?;
                return Err(GatewayError::Ledger(format!(
                    "a batch of {}: {e}",
                    group.len()
                )));
            }
        }
    }
    let waiting: Vec<(i64, Sent)> = inflight.iter().map(|(k, v)| (*k, *v)).collect();
    let mut receipts: HashMap<TxHash, Option<gridchan_chain::Receipt>> = HashMap::new();
    for (id, sent) in waiting {
        let receipt = match receipts.get(&sent.hash) {
            Some(r) => r.clone(),
            None => {
                let r = ledger
                    .receipt(&sent.hash)
                    .await
                    .map_err(|e| GatewayError::Ledger(e.to_string()))?;
                receipts.insert(sent.hash, r.clone());
                r
            }
        };
        match receipt {
            Some(r) => {
                let item = pending.iter().find(|p| p.id == id);
                let outcome = match (&r.outcome.result, sent.index) {
                    (Err(e), _) => format!("failed at {}: {e}", r.height),
                    (Ok(events), Some(index)) => {
                        let failed = events.iter().find_map(|e| match e {
                            gridchan_chain::ChainEvent::BatchItemFailed { index: i, error }
                                if *i == index =>
                            {
                                Some(error)
                            }
                            _ => None,
                        });
                        match (failed, item) {
                            (Some(e), Some(item)) if already_done(&item.tx, e) => {
                                format!("not needed: {e}")
                            }
                            (Some(e), _) => format!("failed at {}: {e}", r.height),
                            (None, _) => format!("included at {} (in a batch)", r.height),
                        }
                    }
                    (Ok(_), None) => format!("included at {}", r.height),
                };
                tracing::info!("ledger: {} {outcome}", sent.hash);
                inflight.remove(&id);
                blocking(queue, move |q| q.finish(id, &outcome)).await?;
            }
            None if height > sent.at + RESUBMIT_AFTER_BLOCKS => {
                // Dropped (a ledger restart loses its pending pool): send it again.
                inflight.remove(&id);
            }
            None => {}
        }
    }
    Ok(())
}

/// Submits one queued operation on its own.
async fn submit_one(
    queue: &Arc<LedgerQueue>,
    ledger: &Arc<dyn Ledger>,
    item: &QueuedTx,
    height: u64,
    inflight: &mut HashMap<i64, Sent>,
) -> Result<(), GatewayError> {
    let what = describe(item);
    match ledger.submit(item.tx.clone()).await {
        Ok(hash) => {
            tracing::info!("ledger: submitted {what}: {hash}");
            inflight.insert(
                item.id,
                Sent {
                    hash,
                    at: height,
                    index: None,
                },
            );
        }
        Err(LedgerError::Refused(e)) if already_done(&item.tx, &e) => {
            tracing::info!("ledger: {what} not needed: {e} (done before)");
            let (id, outcome) = (item.id, format!("not needed: {e}"));
            blocking(queue, move |q| q.finish(id, &outcome)).await?;
        }
        Err(LedgerError::Refused(e)) => {
            tracing::warn!("ledger: {what} refused: {e}");
            let (id, outcome) = (item.id, format!("refused: {e}"));
            blocking(queue, move |q| q.finish(id, &outcome)).await?;
        }
        Err(e) => {
            let (id, msg) = (item.id, e.to_string());
            blocking(queue, move |q| q.attempt_failed(id, &msg)).await?;
            return Err(GatewayError::Ledger(format!("{what}: {e}")));
        }
    }
    Ok(())
}

fn describe(item: &QueuedTx) -> String {
    match &item.channel {
        Some(c) => format!("{} of channel {}", item.tx.name(), c.short()),
        None => item.tx.name().to_string(),
    }
}

/// Whether the ledger refused `tx` because what it asks for happened already: the neighbour
/// concluded the channel first, or our withdrawal went through before a restart. Neither is a
/// failure, and neither is news.
fn already_done(tx: &TxKind, refusal: &TxError) -> bool {
    match (tx, refusal) {
        (TxKind::ConcludeFinal { .. } | TxKind::Conclude { .. }, TxError::WrongPhase(phase)) => {
            phase == "concluded"
        }
        (TxKind::Withdraw { .. }, TxError::InsufficientClaimable { claimable, .. }) => {
            claimable.0 == 0
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridchan_channel::Amount;

    #[test]
    fn runs_of_batchable_operations_go_together_and_registrations_alone_in_queue_order() {
        let c = ChannelId([1; 32]);
        let item = |id: i64, tx: TxKind| QueuedTx {
            id,
            channel: Some(c),
            tx,
            attempts: 0,
            last_error: None,
        };
        let conclude = || TxKind::Conclude { channel: c };
        let register = || TxKind::Reclaim { channel: c };
        let mut queued = vec![item(1, conclude()), item(2, conclude())];
        let withdraw = TxKind::Withdraw {
            channel: c,
            amount: Amount(1),
        };
        queued.push(item(3, withdraw));
        let signed = gridchan_channel::SignedStateParts {
            state: gridchan_channel::State {
                channel_id: c,
                version: gridchan_channel::Version(1),
                balance_a: Amount(1),
                balance_b: Amount(1),
                energy_a_to_b: gridchan_channel::WattHours(0),
                energy_b_to_a: gridchan_channel::WattHours(0),
                last_interval: gridchan_channel::IntervalIndex(1),
                is_final: false,
                book: gridchan_channel::NO_BOOK,
                funds: Default::default(),
            },
            sig_a: gridchan_channel::Signature([0; 65]),
            sig_b: gridchan_channel::Signature([0; 65]),
        };
        queued.push(item(
            4,
            TxKind::Register {
                state: Box::new(signed),
            },
        ));
        queued.push(item(5, register()));
        for n in 0..(BATCH_MAX as i64 + 3) {
            queued.push(item(10 + n, conclude()));
        }
        let refs: Vec<&QueuedTx> = queued.iter().collect();
        let sizes: Vec<usize> = group(&refs).iter().map(Vec::len).collect();
        // Three together, the registration alone, then the reclaim and the conclusions in
        // batches of at most BATCH_MAX.
        assert_eq!(sizes, [3, 1, BATCH_MAX, 4]);
        assert_eq!(group(&refs)[1][0].id, 4);
    }

    #[test]
    fn a_close_or_withdrawal_done_before_is_told_apart_from_a_refusal() {
        let c = ChannelId([1; 32]);
        let conclude = TxKind::Conclude { channel: c };
        let withdraw = TxKind::Withdraw {
            channel: c,
            amount: Amount(2_000_000),
        };
        assert!(already_done(
            &conclude,
            &TxError::WrongPhase("concluded".into())
        ));
        assert!(!already_done(
            &conclude,
            &TxError::WrongPhase("open".into())
        ));
        let claimable = |c| TxError::InsufficientClaimable {
            claimable: Amount(c),
            needed: Amount(2_000_000),
        };
        assert!(already_done(&withdraw, &claimable(0)));
        assert!(!already_done(&withdraw, &claimable(1)));
        assert!(!already_done(&withdraw, &TxError::UnknownChannel));
    }
}
