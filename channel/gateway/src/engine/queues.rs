//! The typed queues the engine feeds the daemon's jobs (the tower pushers, the job that keeps
//! the neighbours connected): each consumer gets its own, with all
//! that is meant for it and nothing else, so none copes with a shared broadcast that drops
//! what a slow reader missed. (The broadcast of [`super::Report`]s stays, for observers that
//! may miss things: the demo's display, tests.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gridchan_channel::{ChannelId, NodeId, SignedState};
use tokio::sync::{mpsc, Notify};

/// The newest doubly signed state of each channel, for one watchtower pusher: a newer state
/// replaces an older one of its channel, so the queue holds at most one per channel and never
/// loses the newest.
#[derive(Default)]
pub struct StateQueue {
    waiting: Mutex<(HashMap<ChannelId, SignedState>, bool)>,
    ready: Notify,
}

impl StateQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<ChannelId, SignedState>, bool)> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn push(&self, state: &SignedState) {
        let mut w = self.lock();
        let id = state.state().channel_id;
        if w.0.get(&id).is_none_or(|s| s.version() < state.version()) {
            w.0.insert(id, state.clone());
        }
        drop(w);
        self.ready.notify_one();
    }

    /// The engine stopped: [`StateQueue::take`] answers `None` once the queue is empty.
    pub(super) fn close(&self) {
        self.lock().1 = true;
        self.ready.notify_one();
    }

    /// Takes the states waiting now, if any.
    pub fn try_take(&self) -> HashMap<ChannelId, SignedState> {
        std::mem::take(&mut self.lock().0)
    }

    /// Waits until states wait and takes them all; `None` once the engine has stopped.
    pub async fn take(&self) -> Option<HashMap<ChannelId, SignedState>> {
        loop {
            {
                let mut w = self.lock();
                if !w.0.is_empty() {
                    return Some(std::mem::take(&mut w.0));
                }
                if w.1 {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }
}

/// What the job that keeps the neighbours connected is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerChange {
    /// A neighbour connected (authenticated, its stream open).
    Up(NodeId),
    /// A neighbour's connection is gone.
    Down(NodeId),
    /// A channel began or ended: the neighbours wanted may have changed.
    Channels,
}

/// A subscription a handle asks the engine for.
pub(super) enum Watch {
    States(Arc<StateQueue>),
    Peers(mpsc::UnboundedSender<PeerChange>),
}

/// The engine's consumers.
#[derive(Default)]
pub(super) struct Watchers {
    states: Vec<Arc<StateQueue>>,
    peers: Vec<mpsc::UnboundedSender<PeerChange>>,
}

impl Watchers {
    /// Adds a consumer; one of peer changes first hears of every neighbour connected now.
    pub(super) fn add(&mut self, watch: Watch, connected: impl Iterator<Item = NodeId>) {
        match watch {
            Watch::States(q) => self.states.push(q),
            Watch::Peers(tx) => {
                for peer in connected {
                    let _ = tx.send(PeerChange::Up(peer));
                }
                self.peers.push(tx);
            }
        }
    }

    /// A new state for the towers (a queue nobody holds any more is dropped).
    pub(super) fn state(&mut self, state: &SignedState) {
        self.states.retain(|q| Arc::strong_count(q) > 1);
        for q in &self.states {
            q.push(state);
        }
    }

    pub(super) fn peer(&mut self, change: PeerChange) {
        self.peers.retain(|tx| tx.send(change.clone()).is_ok());
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for q in &self.states {
            q.close();
        }
    }
}
