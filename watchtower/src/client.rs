//! The client side: a gateway registers with a tower and hands it states.

use gridchan_channel::{ChannelId, ChannelParams, SignedState, Signer, Version};
use gridchan_transport::{PeerAddr, RpcClient};

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

/// How long a tower may take to answer one request (a batch of 256 states included).
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection to one tower, dialled again on demand after it drops.
pub struct TowerClient {
    rpc: RpcClient,
    pub tower: PeerAddr,
}

impl TowerClient {
    /// A client authenticating as `auth` (the gateway's node key: the tower knows its clients
    /// by it).
    pub fn new(tower: PeerAddr, auth: Signer) -> Result<TowerClient, TowerError> {
        let rpc = RpcClient::new(tower.clone(), auth, MAX_RPC_FRAME)
            .map_err(|e| TowerError::Unavailable(e.to_string()))?;
        Ok(TowerClient { rpc, tower })
    }

    async fn call(&self, request: &Request) -> Result<Response, TowerError> {
        let reply = self.call_raw(&rpc::encode(request)).await?;
        match rpc::decode::<Response>(&reply).map_err(|e| TowerError::Bad(e.to_string()))? {
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

    /// Every channel of ours the tower holds, each state checked against its parameters (a
    /// state that does not verify is left out: a tower cannot forge one, only lie by omission
    /// or age, which the caller's comparison across towers and with the ledger catches).
    pub async fn recover(&self) -> Result<Vec<(ChannelParams, SignedState)>, TowerError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let Response::Recovered { channels, more } =
                self.call(&Request::Recover { after }).await?
            else {
                return Err(TowerError::Bad("the tower did not answer Recover".into()));
            };
            let last = channels.last().map(|c| c.state.state.channel_id);
            for c in channels {
                let id = c.params.channel_id();
                if c.state.state.channel_id != id {
                    continue;
                }
                if let Ok(state) = c.state.verify(&c.params, &id) {
                    out.push((c.params, state));
                }
            }
            // A page that does not move on would loop: stop.
            match (more, last) {
                (true, Some(l)) if after.is_none_or(|a| l > a) => after = Some(l),
                _ => return Ok(out),
            }
        }
    }

    /// Sends raw bytes as a request (tests of the tower's handling of garbage).
    pub async fn call_raw(&self, frame: &[u8]) -> Result<Vec<u8>, TowerError> {
        self.rpc
            .request(frame, CALL_TIMEOUT)
            .await
            .map_err(|e| TowerError::Unavailable(e.to_string()))
    }
}
