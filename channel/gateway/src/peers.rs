//! The neighbours a gateway keeps connected: those in its config, and those it opened a channel
//! with by address (`gridchan channel open PUBKEY@HOST:PORT`). Both are recorded in the store,
//! so that neither a restart on either side nor a neighbour taken out of the config is the end
//! of a channel that is not paid out.
//!
//! Every configured neighbour, and every recorded one that shares a channel not yet paid out, is
//! dialled until it is connected: at once, then after 200 ms, doubling to at most 30 s between
//! attempts; and again whenever it drops (the waits start over once a connection has stayed up
//! 10 s). The engine tells the job, on a queue of its own, of every neighbour that connects or
//! goes and of every channel that begins or ends; the job never polls.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gridchan_channel::{ChannelView, NodeId, Phase};
use gridchan_transport::PeerAddr;
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::engine::{EngineHandle, PeerChange};
use crate::error::GatewayError;

/// The first wait after a failed dial or a dropped connection.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two dials of one neighbour.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A connection that stayed up this long resets the wait between dials.
const STABLE: Duration = Duration::from_secs(10);

/// One neighbour as `gridchan status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub node: String,
    /// Where it is dialled; `None` for a neighbour that only ever dialled us.
    pub address: Option<String>,
    pub connected: bool,
    /// Listed under `[[peers]]` in the config.
    pub configured: bool,
    /// Why the last dial failed, while it is not connected.
    pub last_error: Option<String>,
    /// The meter key its readings must be signed with; none: it is taken at its word.
    #[serde(default)]
    pub meter: Option<String>,
}

#[derive(Clone)]
struct Entry {
    address: PeerAddr,
    configured: bool,
    /// Why the last dial failed, since the neighbour was last connected.
    last_error: Option<String>,
}

impl Entry {
    fn at(address: PeerAddr) -> Entry {
        Entry {
            address,
            configured: false,
            last_error: None,
        }
    }
}

struct Inner {
    conn: Mutex<Connection>,
    book: Mutex<BTreeMap<NodeId, Entry>>,
    /// Asks the job to check at once (a channel was just opened).
    check_now: tokio::sync::Notify,
}

/// The gateway's neighbours: where to reach them and how the connections are.
#[derive(Clone)]
pub struct Peers(Arc<Inner>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Peers {
    /// Opens the neighbour table of the gateway's store (the store must have been opened once,
    /// which creates it), with the `configured` neighbours (which are recorded).
    pub fn open(store_path: &Path, configured: &[PeerAddr]) -> Result<Peers, GatewayError> {
        let conn = crate::sqlite::open(store_path)?;
        let mut book = BTreeMap::new();
        {
            let mut stmt = conn.prepare("SELECT address FROM peers")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            for r in rows {
                let text = r?;
                let addr: PeerAddr = text
                    .parse()
                    .map_err(|e| GatewayError::Store(format!("stored neighbour {text}: {e}")))?;
                book.insert(addr.node, Entry::at(addr));
            }
        }
        let peers = Peers(Arc::new(Inner {
            conn: Mutex::new(conn),
            book: Mutex::new(book),
            check_now: tokio::sync::Notify::new(),
        }));
        // Recorded too: a neighbour taken out of the config is still dialled while a channel
        // with it is not paid out.
        for addr in configured {
            peers.remember(addr)?;
            lock(&peers.0.book)
                .get_mut(&addr.node)
                .expect("just remembered")
                .configured = true;
        }
        Ok(peers)
    }

    /// Records where `addr`'s neighbour listens (a channel was just opened to it), durably:
    /// it is dialled again after a restart for as long as a channel with it is not paid out.
    pub fn remember(&self, addr: &PeerAddr) -> Result<(), GatewayError> {
        lock(&self.0.conn).execute(
            "INSERT INTO peers (node, address) VALUES (?1, ?2)
                 ON CONFLICT(node) DO UPDATE SET address = excluded.address",
            params![addr.node.to_bytes().to_vec(), addr.to_string()],
        )?;
        lock(&self.0.book)
            .entry(addr.node)
            .and_modify(|e| e.address = addr.clone())
            .or_insert_with(|| Entry::at(addr.clone()));
        Ok(())
    }

    /// Has the job check now, not at its next tick, whom to dial: a channel was just opened
    /// (its neighbour is dialled at once, the attempt's outcome recorded like any other).
    pub fn check_now(&self) {
        self.0.check_now.notify_one();
    }

    /// The neighbours that matter now: configured, sharing a `live` channel (see [`live`]),
    /// or among the `connected` ones (the engine's view; a neighbour that dialled us has no
    /// address here).
    pub fn status(&self, live: &HashSet<NodeId>, connected: &HashSet<NodeId>) -> Vec<PeerStatus> {
        let book = lock(&self.0.book);
        let nodes: std::collections::BTreeSet<&NodeId> = book
            .iter()
            .filter(|(node, e)| e.configured || live.contains(node))
            .map(|(node, _)| node)
            .chain(connected)
            .collect();
        nodes
            .into_iter()
            .map(|node| {
                let e = book.get(node);
                let up = connected.contains(node);
                PeerStatus {
                    node: node.to_string(),
                    address: e.map(|e| e.address.to_string()),
                    connected: up,
                    configured: e.is_some_and(|e| e.configured),
                    last_error: e.and_then(|e| e.last_error.clone()).filter(|_| !up),
                    meter: None,
                }
            })
            .collect()
    }

    /// Whether `node` is among the `connected`, and if not, why the last dial of it failed.
    pub fn connection(&self, node: &NodeId, connected: &HashSet<NodeId>) -> (bool, Option<String>) {
        let up = connected.contains(node);
        let error = lock(&self.0.book)
            .get(node)
            .and_then(|e| e.last_error.clone());
        (up, error.filter(|_| !up))
    }

    /// Why the last dial of `peer` failed (`None`: it is connected).
    fn set_error(&self, peer: NodeId, error: Option<String>) {
        if let Some(e) = lock(&self.0.book).get_mut(&peer) {
            e.last_error = error;
        }
    }

    /// The neighbours to keep connected: the configured ones, and those with a channel that
    /// is not paid out yet; with where to dial them.
    fn wanted(&self, live: &HashSet<NodeId>) -> HashMap<NodeId, PeerAddr> {
        lock(&self.0.book)
            .iter()
            .filter(|(node, e)| e.configured || live.contains(node))
            .map(|(node, e)| (*node, e.address.clone()))
            .collect()
    }
}

/// The neighbours of the channels not paid out yet: they need their peer.
pub fn live(channels: &[ChannelView]) -> HashSet<NodeId> {
    channels
        .iter()
        .filter(|c| !matches!(c.phase, Phase::Concluded | Phase::ClosedCooperatively))
        .map(|c| c.peer)
        .collect()
}

/// Keeps the wanted neighbours connected (see the module's documentation); runs until the
/// engine stops.
pub async fn keep_connected(engine: EngineHandle, peers: Peers) {
    let Ok(mut changes) = engine.watch_peers().await else {
        return;
    };
    // Who is connected, as the engine told (it starts by telling who is connected now).
    let mut connected: HashSet<NodeId> = HashSet::new();
    // When each neighbour that is not connected is dialled next.
    let mut due: HashMap<NodeId, Instant> = HashMap::new();
    // The wait before the next dial after a failure or a drop: doubles each time, and starts
    // over once a connection has stayed up for STABLE (a neighbour that accepts and then drops
    // us at once is not dialled five times a second).
    let mut backoff: HashMap<NodeId, Duration> = HashMap::new();
    let mut up_since: HashMap<NodeId, Instant> = HashMap::new();
    let mut dialling: tokio::task::JoinSet<(NodeId, Result<(), GatewayError>)> = Default::default();
    let mut in_flight: HashSet<NodeId> = HashSet::new();
    let mut wanted: HashMap<NodeId, PeerAddr> = HashMap::new();
    // Whom to keep connected is worked out at start and whenever a channel begins or ends
    // (or `channel open` asks).
    let mut rethink = true;
    let wait_after = |backoff: &mut HashMap<NodeId, Duration>, peer: NodeId| {
        let b = backoff.entry(peer).or_insert(FIRST_BACKOFF);
        let wait = *b;
        *b = (*b * 2).min(MAX_BACKOFF);
        Instant::now() + wait
    };
    loop {
        if std::mem::take(&mut rethink) {
            let Ok(channels) = engine.channels().await else {
                return;
            };
            wanted = peers.wanted(&live(&channels));
            due.retain(|n, _| wanted.contains_key(n) && !connected.contains(n));
            for node in wanted.keys() {
                if !connected.contains(node) {
                    due.entry(*node).or_insert_with(Instant::now);
                }
            }
        }
        let next = due
            .iter()
            .filter(|(n, _)| !in_flight.contains(*n))
            .map(|(_, at)| *at)
            .min();
        tokio::select! {
            _ = peers.0.check_now.notified() => rethink = true,
            change = changes.recv() => match change {
                Some(PeerChange::Up(peer)) => {
                    connected.insert(peer);
                    peers.set_error(peer, None);
                    due.remove(&peer);
                    up_since.insert(peer, Instant::now());
                }
                Some(PeerChange::Down(peer)) => {
                    connected.remove(&peer);
                    if up_since.remove(&peer).is_some_and(|t| t.elapsed() >= STABLE) {
                        backoff.remove(&peer);
                    }
                    if wanted.contains_key(&peer) {
                        due.insert(peer, wait_after(&mut backoff, peer));
                    }
                }
                Some(PeerChange::Channels) => rethink = true,
                None => return, // the engine stopped
            },
            Some(done) = dialling.join_next(), if !dialling.is_empty() => {
                let Ok((peer, outcome)) = done else { continue };
                in_flight.remove(&peer);
                match outcome {
                    // Up: the engine tells, and a later drop too.
                    Ok(()) => {
                        due.remove(&peer);
                    }
                    Err(e) => {
                        peers.set_error(peer, Some(e.to_string()));
                        if due.contains_key(&peer) {
                            due.insert(peer, wait_after(&mut backoff, peer));
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                for (node, at) in &due {
                    if *at <= now && !in_flight.contains(node) {
                        let Some(addr) = wanted.get(node).cloned() else { continue };
                        in_flight.insert(*node);
                        let (engine, node) = (engine.clone(), *node);
                        dialling.spawn(async move { (node, engine.dial(addr).await) });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridchan_channel::Signer;

    fn addr(k: u8, port: u16) -> PeerAddr {
        let id = Signer::new(&[k; 32], &[k; 32]).unwrap().id();
        format!("{id}@127.0.0.1:{port}").parse().unwrap()
    }

    fn nodes(status: &[PeerStatus]) -> Vec<String> {
        status.iter().map(|s| s.node.clone()).collect()
    }

    #[test]
    fn configured_live_and_connected_neighbours_are_shown_and_recorded_ones_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.sqlite");
        drop(crate::store::SqliteStore::open(&path).unwrap());
        let (x, y, z) = (addr(1, 7001), addr(2, 7002), addr(3, 7003));
        let peers = Peers::open(&path, std::slice::from_ref(&x)).unwrap();
        peers.remember(&y).unwrap();
        let none = HashSet::new();
        let y_live: HashSet<NodeId> = [y.node].into();

        // Y is recorded, but without a live channel it is neither shown nor dialled.
        assert_eq!(nodes(&peers.status(&none, &none)), vec![x.node.to_string()]);
        assert_eq!(peers.wanted(&none).len(), 1);
        let wanted = peers.wanted(&y_live);
        assert_eq!(wanted.get(&y.node), Some(&y));
        assert_eq!(wanted.get(&x.node), Some(&x));
        assert_eq!(peers.status(&y_live, &none).len(), 2);

        // Z dialled us: shown while connected, with no address to dial, and never wanted.
        let z_up: HashSet<NodeId> = [z.node].into();
        assert_eq!(peers.status(&none, &none).len(), 1);
        let shown = peers.status(&none, &z_up);
        let zs = shown.iter().find(|s| s.node == z.node.to_string()).unwrap();
        assert!(zs.connected && zs.address.is_none() && !zs.configured);
        assert!(!peers.wanted(&[z.node].into()).contains_key(&z.node));

        // A failed dial is shown until the neighbour connects.
        peers.set_error(x.node, Some("timed out".into()));
        assert_eq!(
            peers.connection(&x.node, &none),
            (false, Some("timed out".into()))
        );
        assert_eq!(peers.connection(&x.node, &[x.node].into()), (true, None));

        // After a restart with nothing configured, both addresses are still known: each is
        // dialled while a channel with it is live.
        drop(peers);
        let peers = Peers::open(&path, &[]).unwrap();
        assert_eq!(peers.wanted(&y_live).get(&y.node), Some(&y));
        assert_eq!(peers.wanted(&[x.node].into()).get(&x.node), Some(&x));
        assert!(peers.wanted(&none).is_empty());
    }
}
