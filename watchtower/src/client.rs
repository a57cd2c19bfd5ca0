//! The client side: a gateway registers with a tower and hands it states.

use std::net::SocketAddr;

use gridchan_channel::{ChannelId, SignedState, Signer, Version};
use gridchan_transport::{Connection, Endpoint, Limits, PeerAddr};

use crate::receipt::{BatchReceipt, Receipt};
use crate::rpc::{self, Rejection, Request, Response, MAX_RPC_FRAME};

/// Why a call to a tower failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TowerError {
    #[error("the tower refused: {0}")]
    Rejected(Rejection),
    #[error("tower unavailable: {0}")]
    Unavailable(String),
    #[error("the tower answered wrongly: {0}")]
    Bad(String),
}

/// A connection to one tower, dialled again on demand after it drops.
pub struct TowerClient {
    endpoint: Endpoint,
    pub tower: PeerAddr,
    conn: tokio::sync::Mutex<Option<Connection>>,
}

impl TowerClient {
    /// A client authenticating as `auth` (the gateway's node key: the tower knows its clients
    /// by it).
    pub fn new(tower: PeerAddr, auth: Signer) -> Result<TowerClient, TowerError> {
        let local: SocketAddr = if tower.addr.ip().is_loopback() {
            "127.0.0.1:0".parse().expect("valid address")
        } else {
            "0.0.0.0:0".parse().expect("valid address")
        };
        let limits = Limits {
            max_frame: MAX_RPC_FRAME,
            ..Limits::default()
        };
        let endpoint = Endpoint::bind(local, auth, limits)
            .map_err(|e| TowerError::Unavailable(e.to_string()))?;
        Ok(TowerClient {
            endpoint,
            tower,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    async fn connection(&self) -> Result<Connection, TowerError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let c = self
            .endpoint
            .connect(&self.tower)
            .await
            .map_err(|e| TowerError::Unavailable(e.to_string()))?;
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn call(&self, request: &Request) -> Result<Response, TowerError> {
        let frame = rpc::encode(request);
        let conn = self.connection().await?;
        let attempt = async {
            let mut stream = conn.open_stream().await.map_err(|e| e.to_string())?;
            stream
                .write_frame(&frame)
                .await
                .map_err(|e| e.to_string())?;
            stream.finish();
            let reply = stream
                .read_frame()
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "no response".to_string())?;
            Ok::<_, String>(reply)
        };
        let reply = match attempt.await {
            Ok(r) => r,
            Err(e) => {
                *self.conn.lock().await = None;
                return Err(TowerError::Unavailable(e));
            }
        };
        match rpc::decode::<Response>(&reply).map_err(TowerError::Bad)? {
            Response::Rejected(r) => Err(TowerError::Rejected(r)),
            r => Ok(r),
        }
    }

    pub async fn register(&self) -> Result<(), TowerError> {
        match self.call(&Request::Register).await? {
            Response::Registered => Ok(()),
            r => Err(TowerError::Bad(format!("{r:?}"))),
        }
    }

    /// Hands the tower `state`; returns its receipt, checked: signed by the tower we dialled,
    /// for this channel, version and state.
    pub async fn guard(&self, state: &SignedState) -> Result<Receipt, TowerError> {
        let request = Request::Guard(Box::new(state.to_parts()));
        match self.call(&request).await? {
            Response::Accepted(r) => {
                if self.receipt_matches(&r, state) {
                    Ok(r)
                } else {
                    Err(TowerError::Bad(
                        "a receipt that does not match the state".into(),
                    ))
                }
            }
            r => Err(TowerError::Bad(format!("{r:?}"))),
        }
    }

    /// Hands the tower several states in one request: an answer per state, in order, and the
    /// tower's one receipt for the accepted ones (checked: it names exactly those states).
    pub async fn guard_many(
        &self,
        states: &[SignedState],
    ) -> Result<(Vec<Result<(), TowerError>>, Option<BatchReceipt>), TowerError> {
        let request = Request::GuardMany(states.iter().map(|s| s.to_parts()).collect());
        match self.call(&request).await? {
            Response::AcceptedMany { answers, receipt } if answers.len() == states.len() => {
                let accepted: Vec<(ChannelId, Version, [u8; 32])> = answers
                    .iter()
                    .zip(states)
                    .filter(|(a, _)| a.is_ok())
                    .map(|(_, s)| (s.state().channel_id, s.version(), *s.digest()))
                    .collect();
                let receipt_right = match &receipt {
                    None => accepted.is_empty(),
                    Some(r) => r.tower == self.tower.node && r.entries == accepted && r.verify(),
                };
                if !receipt_right {
                    return Err(TowerError::Bad(
                        "a receipt that does not match the states".into(),
                    ));
                }
                let answers = answers
                    .into_iter()
                    .map(|a| a.map_err(TowerError::Rejected))
                    .collect();
                Ok((answers, receipt))
            }
            r => Err(TowerError::Bad(format!("{r:?}"))),
        }
    }

    fn receipt_matches(&self, r: &Receipt, state: &SignedState) -> bool {
        r.tower == self.tower.node
            && r.channel == state.state().channel_id
            && r.version == state.version()
            && r.state_digest == *state.digest()
            && r.verify()
    }

    /// The version the tower holds for one of our channels.
    pub async fn held(&self, channel: ChannelId) -> Result<Option<Version>, TowerError> {
        match self.call(&Request::Held(channel)).await? {
            Response::Held(v) => Ok(v),
            r => Err(TowerError::Bad(format!("{r:?}"))),
        }
    }

    /// Sends raw bytes as a request (tests of the tower's handling of garbage).
    pub async fn call_raw(&self, frame: &[u8]) -> Result<Vec<u8>, TowerError> {
        let conn = self.connection().await?;
        let mut stream = conn
            .open_stream()
            .await
            .map_err(|e| TowerError::Unavailable(e.to_string()))?;
        stream
            .write_frame(frame)
            .await
            .map_err(|e| TowerError::Unavailable(e.to_string()))?;
        stream.finish();
        stream
            .read_frame()
            .await
            .map_err(|e| TowerError::Unavailable(e.to_string()))?
            .ok_or_else(|| TowerError::Unavailable("no response".into()))
    }
}
