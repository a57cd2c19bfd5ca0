//! The engine's durable writes, on a thread of their own.
//!
//! The engine hands each batch of records to the writer and goes on verifying and signing the
//! next burst while the batch is being made durable; nothing that depends on a record leaves
//! the core before the writer has acknowledged it ([`gridchan_channel::Input::Persisted`]).
//!
//! Batches are written and acknowledged in the order they were handed over. Batches that queue
//! up while a transaction is being committed are written together in the next one (group
//! commit): the busier the gateway, the more records share an fsync, so the writer does not
//! fall behind.

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use gridchan_channel::{ChannelId, ChannelRecord, ChannelStore, Settled, Trade, UpdateId, Version};
use tokio::sync::{mpsc, oneshot};

/// A store the engine and its writer share: the writer writes the batches; the engine writes a
/// lone small one itself while the writer is idle, and reads.
pub type Shared<S> = Arc<Mutex<S>>;

/// The shared store, even if a thread panicked while holding it (every write is one
/// transaction: nothing half-done is left in it).
pub fn lock<S>(store: &Shared<S>) -> MutexGuard<'_, S> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

/// Work for the writer, done in the order given.
enum Job {
    /// Records to make durable (with the interval history settled meanwhile).
    Write {
        records: Vec<(UpdateId, ChannelRecord)>,
        trades: Vec<Settled>,
    },
    /// The last `n` settled intervals of a channel, after every write handed over before.
    Trades(ChannelId, usize, oneshot::Sender<Vec<(Version, Trade)>>),
}

/// What became of the batches of records written in one transaction.
pub enum Written {
    /// Durable, up to and including this update.
    Durable(UpdateId),
    /// Not written: these updates failed, in order, for this reason.
    Failed {
        updates: Vec<UpdateId>,
        reason: String,
    },
}

/// The engine's side of the writer thread.
pub struct Writer {
    jobs: Option<std_mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer on `store`; what becomes of the batches arrives on the returned
    /// receiver, one answer per transaction, in the order the batches were handed over.
    pub fn spawn<S: ChannelStore + Send + 'static>(
        store: Shared<S>,
    ) -> (Writer, mpsc::UnboundedReceiver<Written>) {
        let (jobs_tx, jobs_rx) = std_mpsc::channel();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("gridchan-writer".into())
            .spawn(move || run(store, jobs_rx, done_tx))
            .expect("a thread can be started");
        (
            Writer {
                jobs: Some(jobs_tx),
                thread: Some(thread),
            },
            done_rx,
        )
    }

    /// Hands over a batch of records (never empty).
    pub fn write(&self, records: Vec<(UpdateId, ChannelRecord)>) {
        self.send(Job::Write {
            records,
            trades: Vec::new(),
        });
    }

    /// Hands over interval history alone (written whether or not it fills a transaction).
    pub fn write_trades(&self, trades: Vec<Settled>) {
        if !trades.is_empty() {
            self.send(Job::Write {
                records: Vec::new(),
                trades,
            });
        }
    }

    /// Asks for a channel's recent history; the answer comes after every earlier write.
    pub fn recent_trades(
        &self,
        channel: ChannelId,
        n: usize,
        reply: oneshot::Sender<Vec<(Version, Trade)>>,
    ) {
        self.send(Job::Trades(channel, n, reply));
    }

    fn send(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // The thread ends only when this sender is dropped, so the send cannot fail.
            let _ = jobs.send(job);
        }
    }

    /// Writes everything handed over and stops the thread.
    pub fn finish(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Settled intervals kept for a later transaction after failed ones, at most.
const MAX_UNRECORDED: usize = 100_000;

fn run<S: ChannelStore>(
    store: Shared<S>,
    jobs: std_mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<Written>,
) {
    let mut pending: Option<Job> = None;
    // History a failed transaction did not record: it rides along with the next one.
    let mut unrecorded: Vec<Settled> = Vec::new();
    loop {
        let first = match pending.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        match first {
            Job::Trades(channel, n, reply) => {
                let recent = lock(&store).recent_settled(&channel, n);
                let _ = reply.send(recent.unwrap_or_default());
            }
            Job::Write { records, trades } => {
                // Everything else already waiting shares this transaction, up to a query
                // (which must see the writes before it, and only those).
                let mut updates: Vec<UpdateId> = Vec::new();
                let mut all_records = Vec::new();
                let mut all_trades = std::mem::take(&mut unrecorded);
                all_trades.extend(trades);
                let mut take = |records: Vec<(UpdateId, ChannelRecord)>| {
                    for (update, record) in records {
                        updates.push(update);
                        all_records.push(record);
                    }
                };
                take(records);
                while let Ok(job) = jobs.try_recv() {
                    match job {
                        Job::Write { records, trades } => {
                            take(records);
                            all_trades.extend(trades);
                        }
                        query => {
                            pending = Some(query);
                            break;
                        }
                    }
                }
                let refs: Vec<&ChannelRecord> = all_records.iter().collect();
                let result = lock(&store).write_batch(&refs, &all_trades);
                // Updates are numbered in order, and durability is cumulative: the last one
                // acknowledges them all.
                let written = match (&result, updates.last()) {
                    (_, None) => None,
                    (Ok(()), Some(last)) => Some(Written::Durable(*last)),
                    (Err(e), Some(_)) => Some(Written::Failed {
                        updates,
                        reason: e.to_string(),
                    }),
                };
                if let Some(w) = written {
                    if done.send(w).is_err() {
                        return;
                    }
                }
                if let Err(e) = &result {
                    tracing::warn!("interval history not recorded yet: {e}");
                    // History is for people; do not let it grow without bound.
                    if all_trades.len() <= MAX_UNRECORDED {
                        unrecorded = all_trades;
                    }
                }
            }
        }
    }
}
