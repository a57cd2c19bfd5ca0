//! The gatekeeper: who may be a client, what a client may send and how fast, and the
//! durable writes of what it sent before it is acknowledged.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use gridchan_chain::ChannelStatus;
use gridchan_channel::{ChannelId, ChannelParams, NodeId, SignedState, SignedStateParts, Version};
use gridchan_transport::BadRequest;
use gridchan_transport::{Connection, Endpoint, FramedStream};
use tokio::sync::{mpsc, oneshot};

use crate::receipt::Receipt;
use crate::rpc::{self, Rejection, Request, Response};
use crate::store::TowerStore;

use super::{lock, Admission, Bucket, Held, Memory, Tower};

pub(super) type WriteJob = (
    NodeId,
    Arc<ChannelParams>,
    SignedState,
    oneshot::Sender<Result<(), WriteFailed>>,
);

/// The tower's store did not take a batch of states.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct WriteFailed(String);

impl Tower {
    /// Serves clients on `endpoint` until it closes.
    pub async fn serve(self: Arc<Tower>, endpoint: Endpoint) {
        while let Some(conn) = endpoint.accept().await {
            tokio::spawn(self.clone().serve_connection(conn));
        }
    }

    pub(super) async fn serve_connection(self: Arc<Tower>, conn: Connection) {
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
    pub(super) async fn serve_stream(
        self: &Arc<Self>,
        conn: &Connection,
        mut stream: FramedStream,
    ) -> Result<(), BadRequest> {
        let Some(request) =
            gridchan_transport::read_request(&mut stream, rpc::decode::<Request>).await?
        else {
            return Ok(());
        };
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
            Request::Recover { after } => {
                let m = lock(&self.memory);
                let mut ours: Vec<(&ChannelId, &super::Held)> = m
                    .channels
                    .iter()
                    .filter(|(id, h)| {
                        h.params.party_of(&client).is_some() && after.is_none_or(|a| **id > a)
                    })
                    .collect();
                ours.sort_by_key(|(id, _)| **id);
                let more = ours.len() > rpc::MAX_RECOVERED;
                Ok(Response::Recovered {
                    channels: ours
                        .into_iter()
                        .take(rpc::MAX_RECOVERED)
                        .map(|(_, h)| rpc::HeldChannel {
                            params: (*h.params).clone(),
                            state: h.state.to_parts(),
                        })
                        .collect(),
                    more,
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

    pub(super) fn register(&self, client: NodeId) -> Result<(), Rejection> {
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

    pub(super) async fn guard(
        &self,
        client: NodeId,
        parts: SignedStateParts,
    ) -> Result<Receipt, Rejection> {
        let (id, version, digest) = self.hold(client, parts).await?;
        Ok(Receipt::sign(&self.signer, id, version, digest))
    }

    /// Checks and durably holds a state; what a receipt for it says.
    pub(super) async fn hold(
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

    pub(super) fn take_token(&self, m: &mut Memory, client: NodeId) -> Result<(), Rejection> {
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

    pub(super) async fn params_from_ledger(
        &self,
        id: &ChannelId,
    ) -> Result<Arc<ChannelParams>, Rejection> {
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
}

/// Writes accepted states in batches: one transaction (one fsync) for every state that arrived
/// while the previous one was being written.
pub(super) async fn write_batches(
    store: Arc<Mutex<TowerStore>>,
    mut jobs: mpsc::Receiver<WriteJob>,
) {
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
