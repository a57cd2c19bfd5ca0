//! The tower service: accepts states from its clients, keeps the newest per channel, follows
//! the ledger and refutes every registration older than what it holds, within the window.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gridchan_chain::{ChainEvent, ChannelStatus, Ledger, LedgerError, Subscription, TxError};
use gridchan_channel::{
    ChannelId, ChannelParams, NodeId, SignedState, SignedStateParts, Signer, Version,
};
use gridchan_transport::{Connection, Endpoint, FramedStream};
use tokio::sync::{mpsc, oneshot};

use crate::receipt::Receipt;
use crate::rpc::{self, Rejection, Request, Response};
use crate::store::{Action, TowerStore};

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
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What the tower keeps in memory (the store has all of it too).
#[derive(Default)]
struct Memory {
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
struct Held {
    client: NodeId,
    params: Arc<ChannelParams>,
    state: SignedState,
}

type WriteJob = (
    NodeId,
    Arc<ChannelParams>,
    SignedState,
    oneshot::Sender<Result<(), WriteFailed>>,
);

/// The tower's store did not take a batch of states.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
struct WriteFailed(String);

/// Why a client's request costs it its connection.
#[derive(Debug, thiserror::Error)]
enum BadRequest {
    #[error("bad request frame: {0}")]
    Frame(#[from] gridchan_transport::FrameError),
    #[error("bad request: {0}")]
    Body(#[from] gridchan_transport::BodyError),
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

    /// Serves clients on `endpoint` until it closes.
    pub async fn serve(self: Arc<Tower>, endpoint: Endpoint) {
        while let Some(conn) = endpoint.accept().await {
            tokio::spawn(self.clone().serve_connection(conn));
        }
    }

    async fn serve_connection(self: Arc<Tower>, conn: Connection) {
        loop {
            let Ok(stream) = conn.accept_stream().await else {
                return;
            };
            let (tower, conn) = (self.clone(), conn.clone());
            tokio::spawn(async move {
                if let Err(reason) = tower.serve_stream(&conn, stream).await {
                    tracing::warn!(peer = %conn.peer, "closing tower client connection: {reason}");
                    conn.close(&reason.to_string());
                }
            });
        }
    }

    /// One request, one response. A malformed request costs the client its connection.
    async fn serve_stream(
        self: &Arc<Self>,
        conn: &Connection,
        mut stream: FramedStream,
    ) -> Result<(), BadRequest> {
        let frame = match stream.read_frame().await {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let request: Request = rpc::decode(&frame)?;
        let response = self.handle(conn.peer, request).await;
        if let Response::Rejected(r) = &response {
            tracing::info!(peer = %conn.peer, "rejected: {r}");
        }
        let _ = stream.write_frame(&rpc::encode(&response)).await;
        stream.finish();
        Ok(())
    }

    /// Answers one request from `client` (the key that authenticated the connection).
    pub async fn handle(self: &Arc<Self>, client: NodeId, request: Request) -> Response {
        let result = match request {
            Request::Register => self.register(client).map(|()| Response::Registered),
            Request::Guard(parts) => self.guard(client, *parts).await.map(Response::Accepted),
            Request::GuardMany(states) if states.len() > rpc::MAX_BATCH => Err(
                Rejection::OverQuota(format!("{} states in one request", rpc::MAX_BATCH)),
            ),
            Request::GuardMany(states) => {
                // Each state on its own task: verifications spread over the cores, and the
                // writer commits them together.
                let mut set = tokio::task::JoinSet::new();
                for (i, parts) in states.into_iter().enumerate() {
                    let tower = self.clone();
                    set.spawn(async move { (i, tower.hold(client, parts).await) });
                }
                let mut answers = Vec::with_capacity(set.len());
                while let Some(done) = set.join_next().await {
                    match done {
                        Ok(a) => answers.push(a),
                        Err(e) => return Response::Rejected(Rejection::Unavailable(e.to_string())),
                    }
                }
                answers.sort_by_key(|(i, _)| *i);
                // One receipt for everything accepted, in order: one signature per batch.
                let entries: Vec<_> = answers
                    .iter()
                    .filter_map(|(_, a)| a.as_ref().ok().copied())
                    .collect();
                let receipt = (!entries.is_empty())
                    .then(|| crate::receipt::BatchReceipt::sign(&self.signer, entries));
                Ok(Response::AcceptedMany {
                    answers: answers.into_iter().map(|(_, a)| a.map(|_| ())).collect(),
                    receipt,
                })
            }
            Request::Held(id) => {
                let m = lock(&self.memory);
                Ok(Response::Held(
                    m.channels
                        .get(&id)
                        .filter(|h| h.params.party_of(&client).is_some())
                        .map(|h| h.state.version()),
                ))
            }
        };
        result.unwrap_or_else(Response::Rejected)
    }

    fn register(&self, client: NodeId) -> Result<(), Rejection> {
        if let Admission::Only(keys) = &self.limits.admission {
            if !keys.contains(&client) {
                return Err(Rejection::NotAllowed);
            }
        }
        if lock(&self.memory).clients.contains(&client) {
            return Ok(());
        }
        lock(&self.store)
            .add_client(&client)
            .map_err(|e| Rejection::Unavailable(e.to_string()))?;
        lock(&self.memory).clients.insert(client);
        tracing::info!("new client {client}");
        Ok(())
    }

    async fn guard(&self, client: NodeId, parts: SignedStateParts) -> Result<Receipt, Rejection> {
        let (id, version, digest) = self.hold(client, parts).await?;
        Ok(Receipt::sign(&self.signer, id, version, digest))
    }

    /// Checks and durably holds a state; what a receipt for it says.
    async fn hold(
        &self,
        client: NodeId,
        parts: SignedStateParts,
    ) -> Result<(ChannelId, Version, [u8; 32]), Rejection> {
        let id = parts.state.channel_id;
        let version = parts.state.version;
        // Cheap checks first, under the lock: registration, rate, what we hold.
        let known = {
            let mut m = lock(&self.memory);
            if !m.clients.contains(&client) {
                return Err(Rejection::NotRegistered);
            }
            if m.closed.contains(&id) {
                return Err(Rejection::Closed);
            }
            self.take_token(&mut m, client)?;
            if let Some(h) = m.channels.get(&id) {
                if h.client != client && h.params.party_of(&client).is_none() {
                    return Err(Rejection::NotAParty);
                }
                let held = h.state.version();
                if version < held {
                    return Err(Rejection::OlderVersion {
                        held: held.0,
                        offered: version.0,
                    });
                }
                if version == held {
                    if parts.state.digest() == *h.state.digest() {
                        // A retry of what we hold: the same receipt again.
                        return Ok((id, held, *h.state.digest()));
                    }
                    return Err(Rejection::Conflict(held.0));
                }
                Some(h.params.clone())
            } else {
                m.params.get(&id).cloned()
            }
        };
        let params = match known {
            Some(p) => p,
            None => self.params_from_ledger(&id).await?,
        };
        if params.party_of(&client).is_none() {
            return Err(Rejection::NotAParty);
        }
        // The costly part, off the async threads: both signatures against the parties.
        let state = {
            let params = params.clone();
            tokio::task::spawn_blocking(move || parts.verify(&params, &id))
                .await
                .map_err(|e| Rejection::Unavailable(e.to_string()))?
                .map_err(|_| Rejection::BadSignature)?
        };
        // Quota on channels, then durable before the receipt.
        {
            let m = lock(&self.memory);
            let is_new = !m.channels.contains_key(&id);
            if is_new
                && m.per_client.get(&client).copied().unwrap_or(0)
                    >= self.limits.channels_per_client
            {
                return Err(Rejection::OverQuota(format!(
                    "{} channels per client",
                    self.limits.channels_per_client
                )));
            }
        }
        let (tx, rx) = oneshot::channel();
        self.writes
            .send((client, params.clone(), state.clone(), tx))
            .await
            .map_err(|_| Rejection::Unavailable("the tower is stopping".into()))?;
        rx.await
            .map_err(|_| Rejection::Unavailable("the tower is stopping".into()))?
            .map_err(|e| Rejection::Unavailable(e.to_string()))?;
        {
            let mut m = lock(&self.memory);
            let newer = m
                .channels
                .get(&id)
                .is_none_or(|h| h.state.version() < state.version());
            if newer {
                if !m.channels.contains_key(&id) {
                    *m.per_client.entry(client).or_default() += 1;
                    m.params.remove(&id);
                }
                m.channels.insert(
                    id,
                    Held {
                        client,
                        params,
                        state: state.clone(),
                    },
                );
            }
        }
        let _ = self.changed.send(id);
        Ok((id, version, *state.digest()))
    }

    fn take_token(&self, m: &mut Memory, client: NodeId) -> Result<(), Rejection> {
        let now = Instant::now();
        let limits = &self.limits;
        let b = m.buckets.entry(client).or_insert(Bucket {
            tokens: limits.burst,
            at: now,
        });
        let elapsed = now.duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * limits.states_per_second).min(limits.burst);
        b.at = now;
        if b.tokens < 1.0 {
            return Err(Rejection::OverQuota(format!(
                "{} states per second",
                limits.states_per_second
            )));
        }
        b.tokens -= 1.0;
        Ok(())
    }

    async fn params_from_ledger(&self, id: &ChannelId) -> Result<Arc<ChannelParams>, Rejection> {
        let account = self
            .ledger
            .channel(id)
            .await
            .map_err(|e| Rejection::Unavailable(format!("ledger: {e}")))?
            .ok_or(Rejection::UnknownChannel)?;
        if matches!(
            account.status,
            ChannelStatus::Concluded { .. } | ChannelStatus::Expired
        ) {
            return Err(Rejection::Closed);
        }
        let params = Arc::new(account.params);
        let mut m = lock(&self.memory);
        if m.params.len() > 100_000 {
            m.params.clear();
        }
        m.params.insert(*id, params.clone());
        Ok(params)
    }

    fn holds(&self, id: &ChannelId) -> bool {
        lock(&self.memory).channels.contains_key(id)
    }

    fn held(&self, id: &ChannelId) -> Option<SignedState> {
        lock(&self.memory).channels.get(id).map(|h| h.state.clone())
    }

    fn close(&self, id: &ChannelId) {
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

/// Writes accepted states in batches: one transaction (one fsync) for every state that arrived
/// while the previous one was being written.
async fn write_batches(store: Arc<Mutex<TowerStore>>, mut jobs: mpsc::Receiver<WriteJob>) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let store = store.clone();
        let (items, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|(c, p, s, reply)| ((c, p, s), reply))
            .unzip();
        let result = tokio::task::spawn_blocking(move || {
            let refs: Vec<_> = items.iter().map(|(c, p, s)| (*c, &**p, s)).collect();
            lock(&store)
                .put_many(&refs)
                .map_err(|e| WriteFailed(e.to_string()))
        })
        .await
        .unwrap_or_else(|e| Err(WriteFailed(e.to_string())));
        for reply in replies {
            let _ = reply.send(result.clone());
        }
    }
}

/// What the follower knows of a registration on the ledger.
#[derive(Clone, Copy)]
struct Registration {
    version: Version,
    deadline: u64,
    seen_height: u64,
}

/// Follows the ledger from where it stopped, and refutes every registration older than the
/// state held, until each refute is included or the window closes.
async fn follow(tower: Arc<Tower>, mut changed: mpsc::UnboundedReceiver<ChannelId>) {
    let mut registered: HashMap<ChannelId, Registration> = HashMap::new();
    let mut refuting: HashSet<ChannelId> = HashSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(ChannelId, Option<Version>)>();
    // Catch up: what is registered now (a restart in the middle of a window).
    let mut backoff = Duration::from_millis(200);
    let start = loop {
        match catch_up(&tower, &mut registered).await {
            Ok(h) => break h,
            Err(e) => {
                tracing::warn!("cannot follow the ledger: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    let stored = lock(&tower.store).next_height().ok().flatten();
    let mut sub = Subscription::new(
        tower.ledger.clone(),
        stored.unwrap_or(start + 1).min(start + 1),
    );
    let ids: Vec<ChannelId> = registered.keys().copied().collect();
    for id in ids {
        maybe_refute(&tower, id, &registered, &mut refuting, &done_tx);
    }
    loop {
        tokio::select! {
            block = sub.next_retrying() => {
                for event in block.events() {
                    match event {
                        ChainEvent::Registered { channel, version, deadline }
                        | ChainEvent::Refuted { channel, version, deadline } => {
                            if !tower.holds(channel) {
                                continue;
                            }
                            registered.insert(*channel, Registration {
                                version: *version,
                                deadline: *deadline,
                                seen_height: block.height,
                            });
                            maybe_refute(&tower, *channel, &registered, &mut refuting, &done_tx);
                        }
                        ChainEvent::Concluded { channel, .. } => {
                            registered.remove(channel);
                            if tower.holds(channel) {
                                tower.close(channel);
                            }
                        }
                        _ => {}
                    }
                }
                if let Err(e) = lock(&tower.store).set_next_height(block.height + 1) {
                    tracing::error!("cannot record the ledger height: {e}");
                }
                registered.retain(|_, r| r.deadline >= block.height);
            }
            Some(id) = changed.recv() => {
                // A newer state arrived for a channel that may be registered right now.
                maybe_refute(&tower, id, &registered, &mut refuting, &done_tx);
            }
            Some((id, landed)) = done_rx.recv() => {
                refuting.remove(&id);
                // What our refute put on the ledger counts before its block is followed:
                // no second refute with the same state.
                if let (Some(v), Some(r)) = (landed, registered.get_mut(&id)) {
                    r.version = r.version.max(v);
                }
                // The held state may have grown meanwhile.
                maybe_refute(&tower, id, &registered, &mut refuting, &done_tx);
            }
        }
    }
}

/// Reads the ledger's status of every guarded channel; returns the height read at.
async fn catch_up(
    tower: &Arc<Tower>,
    registered: &mut HashMap<ChannelId, Registration>,
) -> Result<u64, LedgerError> {
    let height = tower.ledger.height().await?;
    let ids: Vec<ChannelId> = lock(&tower.memory).channels.keys().copied().collect();
    for id in ids {
        match tower.ledger.channel(&id).await?.map(|a| a.status) {
            Some(ChannelStatus::Registered {
                version, deadline, ..
            }) => {
                registered.insert(
                    id,
                    Registration {
                        version,
                        deadline,
                        seen_height: height,
                    },
                );
            }
            Some(ChannelStatus::Concluded { .. } | ChannelStatus::Expired) => tower.close(&id),
            _ => {}
        }
    }
    Ok(height)
}

fn maybe_refute(
    tower: &Arc<Tower>,
    id: ChannelId,
    registered: &HashMap<ChannelId, Registration>,
    refuting: &mut HashSet<ChannelId>,
    done: &mpsc::UnboundedSender<(ChannelId, Option<Version>)>,
) {
    let Some(reg) = registered.get(&id).copied() else {
        return;
    };
    let Some(ours) = tower.held(&id) else {
        return;
    };
    if ours.version() <= reg.version || !refuting.insert(id) {
        return;
    }
    tracing::warn!(
        "channel {}: version {} registered, we hold {}: refuting",
        id.short(),
        reg.version,
        ours.version()
    );
    let (tower, done) = (tower.clone(), done.clone());
    tokio::spawn(async move {
        let landed = refute(&tower, ours, reg).await;
        let _ = done.send((id, landed));
    });
}

/// Submits a refute and sees it included, retrying until the window closes. Returns the
/// version it put on the ledger, if it did.
async fn refute(tower: &Arc<Tower>, ours: SignedState, reg: Registration) -> Option<Version> {
    let id = ours.state().channel_id;
    let action = Action {
        id: 0,
        channel: id,
        registered_version: reg.version.0,
        our_version: ours.version().0,
        seen_height: reg.seen_height,
        deadline: reg.deadline,
        outcome: None,
        included_height: None,
    };
    let action_id = match lock(&tower.store).record_action(&action) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("cannot record the refute of {}: {e}", id.short());
            0
        }
    };
    let finish = |outcome: &str, included: Option<u64>| {
        tracing::info!("channel {}: refute {outcome}", id.short());
        if let Err(e) = lock(&tower.store).finish_action(action_id, outcome, included) {
            tracing::error!("cannot record the refute's outcome: {e}");
        }
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let height = tower.ledger.height().await.unwrap_or(0);
        if height > reg.deadline {
            finish("too late: the window closed", None);
            return None;
        }
        let attempt = async {
            // Concurrent refutes share the tower's account: the client sends them one at a
            // time, each with the next nonce.
            let hash = tower.ledger.refute(&ours).await?;
            // Wait for inclusion, a few blocks at most, then send again.
            tower.ledger.wait_for(&hash, Duration::from_secs(10)).await
        };
        match attempt.await {
            Ok(receipt) => match receipt.outcome.result {
                Ok(_) => {
                    finish(
                        &format!("included at {}", receipt.height),
                        Some(receipt.height),
                    );
                    return Some(ours.version());
                }
                Err(TxError::NotNewer { .. }) => {
                    finish("not needed: a state at least as new got in first", None);
                    return None;
                }
                Err(e) => {
                    finish(&format!("failed in block {}: {e}", receipt.height), None);
                    return None;
                }
            },
            Err(LedgerError::Refused(TxError::NotNewer { .. })) => {
                finish(
                    "not needed: a state at least as new is already on the ledger",
                    None,
                );
                return None;
            }
            Err(LedgerError::Refused(e)) => {
                finish(&format!("refused: {e}"), None);
                return None;
            }
            Err(e) => {
                tracing::warn!("refuting {}: {e}; retrying", id.short());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
