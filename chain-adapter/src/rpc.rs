//! The ledger node's RPC over QUIC: one request and one response per stream, each a frame of
//! `version byte | bincode 2 payload` (see `specs/ledger.md`).

use std::net::SocketAddr;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use gridchan_channel::{ChannelId, NodeId, Signer};
use gridchan_transport::{Endpoint, Limits, TransportError};

use crate::block::{BlockEvents, Receipt};
use crate::rules::{Account, ChannelAccount, Height, TxError};
use crate::tx::{Tx, TxHash};

pub const RPC_VERSION: u8 = 1;
/// Largest RPC frame.
pub const MAX_RPC_FRAME: usize = 4 * 1024 * 1024;
/// The endpoint a ledger node serves this RPC on: the transport's default limits, with frames
/// up to [`MAX_RPC_FRAME`].
pub fn bind(listen: SocketAddr, signer: Signer) -> Result<Endpoint, TransportError> {
    bind_for(listen, signer, Limits::default().max_connections)
}

/// [`bind`], for a ledger serving up to `max_clients` connections (and handshakes) at once:
/// every gateway of a large neighbourhood holds one.
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

/// Most blocks in one `Blocks` response.
pub const MAX_BLOCKS_PER_CALL: u32 = 64;
/// Longest a `WaitAbove` may block.
pub const MAX_WAIT_MS: u32 = 30_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    ChainId,
    Height,
    Account(NodeId),
    Channel(ChannelId),
    Submit(Box<Tx>),
    Receipt(TxHash),
    /// Blocks from `from` on (at most `max`, capped at [`MAX_BLOCKS_PER_CALL`]).
    Blocks {
        from: Height,
        max: u32,
    },
    /// Returns once the height exceeds `height`, or after `timeout_ms` (capped).
    WaitAbove {
        height: Height,
        timeout_ms: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    ChainId([u8; 32]),
    Height(Height),
    Account(Account),
    Channel(Option<Box<ChannelAccount>>),
    Submitted(TxHash),
    Refused(TxError),
    Receipt(Option<Box<Receipt>>),
    Blocks(Vec<BlockEvents>),
    /// The node could not serve the request (storage failure, bad request).
    Error(String),
}

/// Encodes a request or response.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    gridchan_transport::encode_body(RPC_VERSION, value)
}

/// Decodes a request or response; never panics on hostile bytes.
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, gridchan_transport::BodyError> {
    gridchan_transport::decode_body::<T, MAX_RPC_FRAME>(RPC_VERSION, "RPC", frame)
}
