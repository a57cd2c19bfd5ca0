//! The tower service: accepts states from its clients, keeps the newest per channel, follows
//! the ledger and refutes every registration older than what it holds, within the window.
//! Its parts, as rust-teos has them: the gatekeeper (who may send what, and how much), the
//! watcher (the ledger followed, registrations matched against what is held) and the
//! responder (a refute sent and seen included).

mod gatekeeper;
mod responder;
mod watcher;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use gridchan_chain::Ledger;
use gridchan_channel::{ChannelId, ChannelParams, NodeId, SignedState, Signer, Version};
use gridchan_transport::Endpoint;
use tokio::sync::mpsc;

use crate::store::TowerStore;

use gatekeeper::{write_batches, WriteJob};
use watcher::follow;

/// Who may become a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Any node that registers (with the quotas below).
    Open,
    /// Only these keys.
    Only(HashSet<NodeId>),
}

/// The operator's limits.
#[derive(Clone, Debug)]
pub struct TowerLimits {
    pub admission: Admission,
    /// Channels one client may have guarded.
    pub channels_per_client: usize,
    /// States one client may send per second, on average ...
    pub states_per_second: f64,
    /// ... and in a burst.
    pub burst: f64,
}

impl Default for TowerLimits {
    fn default() -> TowerLimits {
        TowerLimits {
            admission: Admission::Open,
            channels_per_client: 1_000,
            states_per_second: 50.0,
            burst: 500.0,
        }
    }
}

/// A token bucket: `rate` per second, up to `burst`.
pub(super) struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What the tower keeps in memory (the store has all of it too).
#[derive(Default)]
pub(super) struct Memory {
    clients: HashSet<NodeId>,
    buckets: HashMap<NodeId, Bucket>,
    /// Per channel: the client, the parameters, the version and digest held.
    channels: HashMap<ChannelId, Held>,
    per_client: HashMap<NodeId, usize>,
    /// Parameters read from the ledger for channels not yet held.
    params: HashMap<ChannelId, Arc<ChannelParams>>,
    /// Channels the ledger has concluded: nothing left to guard.
    closed: HashSet<ChannelId>,
}

#[derive(Clone)]
pub(super) struct Held {
    client: NodeId,
    params: Arc<ChannelParams>,
    state: SignedState,
}

/// What the follower knows of a registration on the ledger.
#[derive(Clone, Copy)]
struct Registration {
    version: Version,
    deadline: u64,
    seen_height: u64,
}

/// A running tower.
pub struct Tower {
    signer: Signer,
    ledger: Arc<dyn Ledger>,
    limits: TowerLimits,
    memory: Mutex<Memory>,
    store: Arc<Mutex<TowerStore>>,
    writes: mpsc::Sender<WriteJob>,
    /// Channels whose held state just changed: the follower checks them against the ledger.
    changed: mpsc::UnboundedSender<ChannelId>,
    pub store_path: PathBuf,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tower {
    /// Opens the tower's store at `store_path`, and starts its writer and its ledger follower.
    pub fn start(
        signer: Signer,
        ledger: Arc<dyn Ledger>,
        store_path: PathBuf,
        limits: TowerLimits,
    ) -> Result<Arc<Tower>, crate::store::StoreError> {
        let store = TowerStore::open(&store_path)?;
        let mut memory = Memory::default();
        for (client, _, _) in store.clients()? {
            memory.clients.insert(client);
        }
        for g in store.channels()? {
            if g.closed {
                memory.closed.insert(g.id);
                continue;
            }
            *memory.per_client.entry(g.client).or_default() += 1;
            memory.channels.insert(
                g.id,
                Held {
                    client: g.client,
                    params: Arc::new(g.params),
                    state: g.state,
                },
            );
        }
        let store = Arc::new(Mutex::new(store));
        let (writes, write_rx) = mpsc::channel(4096);
        let (changed, changed_rx) = mpsc::unbounded_channel();
        let tower = Arc::new(Tower {
            signer,
            ledger,
            limits,
            memory: Mutex::new(memory),
            store: store.clone(),
            writes,
            changed,
            store_path,
            tasks: Mutex::new(Vec::new()),
        });
        let tasks = vec![
            tokio::spawn(write_batches(store, write_rx)),
            tokio::spawn(follow(tower.clone(), changed_rx)),
        ];
        *lock(&tower.tasks) = tasks;
        Ok(tower)
    }

    /// Serves clients on `endpoint` in the background until [`Tower::stop`].
    pub fn listen(self: &Arc<Tower>, endpoint: Endpoint) {
        let task = tokio::spawn(self.clone().serve(endpoint));
        lock(&self.tasks).push(task);
    }

    /// Stops the tower's jobs (its store stays as it is: a new `start` resumes from it).
    pub fn stop(&self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }

    pub fn node(&self) -> NodeId {
        self.signer.id()
    }

    pub(super) fn holds(&self, id: &ChannelId) -> bool {
        lock(&self.memory).channels.contains_key(id)
    }

    pub(super) fn held(&self, id: &ChannelId) -> Option<SignedState> {
        lock(&self.memory).channels.get(id).map(|h| h.state.clone())
    }

    pub(super) fn close(&self, id: &ChannelId) {
        let mut m = lock(&self.memory);
        if let Some(h) = m.channels.remove(id) {
            if let Some(n) = m.per_client.get_mut(&h.client) {
                *n = n.saturating_sub(1);
            }
        }
        m.closed.insert(*id);
        drop(m);
        if let Err(e) = lock(&self.store).mark_closed(id) {
            tracing::error!("cannot record channel {} closed: {e}", id.short());
        }
    }

    /// How many channels the tower guards now.
    pub fn guarded(&self) -> usize {
        lock(&self.memory).channels.len()
    }
}
