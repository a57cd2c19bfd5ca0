//! The tower's RPC over authenticated QUIC: one request and one response per stream, each a
//! frame of `version byte | bincode 2 payload` (see `specs/watchtower.md`). The client is the
//! node key that authenticated the connection: requests carry no identity of their own.

use std::net::SocketAddr;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use gridchan_channel::{ChannelId, SignedStateParts, Signer, Version};
use gridchan_transport::{Endpoint, Limits, TransportError};

use crate::receipt::{BatchReceipt, Receipt};

pub const RPC_VERSION: u8 = 1;
/// Largest RPC frame (a state with its signatures is about 300 bytes; a batch of 256 fits).
pub const MAX_RPC_FRAME: usize = 128 * 1024;

/// The endpoint a tower serves this RPC on: the transport's default limits, with frames up to
/// [`MAX_RPC_FRAME`].
pub fn bind(listen: SocketAddr, signer: Signer) -> Result<Endpoint, TransportError> {
    bind_for(listen, signer, Limits::default().max_connections)
}

/// [`bind`], for a tower serving up to `max_clients` connections (and handshakes) at once.
pub fn bind_for(
    listen: SocketAddr,
    signer: Signer,
    max_clients: usize,
) -> Result<Endpoint, TransportError> {
    Endpoint::bind(
        listen,
        signer,
        Limits::rpc_server(MAX_RPC_FRAME, max_clients),
    )
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Become a client of this tower (refused unless the operator allows this key).
    Register,
    /// Guard this channel with this state (both signatures).
    Guard(Box<SignedStateParts>),
    /// What the tower holds for a channel of ours.
    Held(ChannelId),
    /// Several states at once (at most [`MAX_BATCH`]), each answered on its own.
    GuardMany(Vec<SignedStateParts>),
    /// Every channel of ours the tower holds a state of, in channel-id order, after `after`:
    /// what a gateway that lost its data restores from (at most [`MAX_RECOVERED`] a page).
    Recover { after: Option<ChannelId> },
}

/// Channels in one `Recovered` page.
pub const MAX_RECOVERED: usize = 64;

/// A channel as a tower holds it: the parameters the ledger recorded and the newest state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldChannel {
    pub params: gridchan_channel::ChannelParams,
    pub state: SignedStateParts,
}

/// States in one `GuardMany`.
pub const MAX_BATCH: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Registered,
    Accepted(Receipt),
    Held(Option<Version>),
    Rejected(Rejection),
    /// One answer per state of a `GuardMany`, in order, and one receipt for the accepted ones.
    AcceptedMany {
        answers: Vec<Result<(), Rejection>>,
        receipt: Option<BatchReceipt>,
    },
    /// A page of `Recover`; `more`: ask again after the last one.
    Recovered {
        channels: Vec<HeldChannel>,
        more: bool,
    },
}

/// Why the tower refused a request. Every variant is a client's mistake or limit, said plainly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("this key is not a client of the tower: register first (the operator must allow it)")]
    NotRegistered,
    #[error("the tower does not accept this key as a client")]
    NotAllowed,
    #[error("the channel is not on the ledger")]
    UnknownChannel,
    #[error("the client is not a party of this channel")]
    NotAParty,
    #[error("a signature does not verify against the channel's parties on the ledger")]
    BadSignature,
    #[error("the tower holds version {held}, newer than {offered}")]
    OlderVersion { held: u64, offered: u64 },
    #[error("the tower holds a different state at version {0}")]
    Conflict(u64),
    #[error("over quota: {0}")]
    OverQuota(String),
    #[error("the channel is closed on the ledger")]
    Closed,
    #[error("the tower cannot serve this now: {0}")]
    Unavailable(String),
}

/// Encodes a request or response.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    gridchan_transport::encode_body(RPC_VERSION, value)
}

/// Decodes a request or response; never panics on hostile bytes.
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, gridchan_transport::BodyError> {
    gridchan_transport::decode_body::<T, MAX_RPC_FRAME>(RPC_VERSION, "tower RPC", frame)
}
