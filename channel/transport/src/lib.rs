//! # gridchan-transport: authenticated QUIC between nodes
//!
//! Every gridchan node (gateway, tower, ledger) is a secp256k1 key and is addressed as
//! `PUBKEY@HOST:PORT`. Connections run QUIC (quinn) with TLS 1.3 on throwaway self-signed
//! certificates; the certificate proves nothing. Right after the handshake each side proves its
//! node key by signing the connection's TLS exporter secret (RFC 5705/8446 keying material),
//! which is unique to this connection: a signature replayed from another connection, or
//! relayed by a man in the middle (who has two different connections), does not verify.
//!
//! On top, [`FramedStream`] carries length-prefixed frames with a hard size limit, checked
//! from the length prefix before anything is buffered.

mod auth;
mod endpoint;
mod framed;
mod rpc;

pub use endpoint::{Connection, Endpoint, Limits, PeerAddr, TransportError};
pub use framed::{FrameError, FrameReader, FrameWriter, FramedStream};
pub use rpc::{decode_body, encode_body, read_request, BadRequest, BodyError, RpcClient, RpcError};

/// The key proof, exposed for tests of its binding to the connection.
#[doc(hidden)]
pub mod testing {
    use gridchan_channel::{NodeId, Signer};

    use crate::auth::{self, Role, HELLO_LEN};

    pub fn hello(signer: &Signer, keying_material: &[u8; 32]) -> [u8; HELLO_LEN] {
        auth::hello(signer, Role::Client, keying_material)
    }

    pub fn check(hello: &[u8; HELLO_LEN], keying_material: &[u8; 32]) -> Option<NodeId> {
        auth::check_hello(hello, Role::Client, keying_material)
    }
}
