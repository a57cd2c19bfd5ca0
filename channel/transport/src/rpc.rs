//! The client side of a request/response service over authenticated QUIC (the ledger node and
//! the watchtower both speak this way): one stream per request, one frame each way. The
//! connection is dialled on demand and dialled again after it breaks; every request has a
//! deadline, so a server that died without closing its connection is noticed at once, not at
//! the idle timeout.

use std::net::SocketAddr;
use std::time::Duration;

use gridchan_channel::Signer;
use serde::{de::DeserializeOwned, Serialize};

use crate::{Connection, Endpoint, Limits, PeerAddr, TransportError};

/// A client of one server.
pub struct RpcClient {
    endpoint: Endpoint,
    server: PeerAddr,
    conn: tokio::sync::Mutex<Option<Connection>>,
}

impl RpcClient {
    /// A client of `server`, authenticating as `auth`, accepting frames up to `max_frame`.
    pub fn new(
        server: PeerAddr,
        auth: Signer,
        max_frame: usize,
    ) -> Result<RpcClient, TransportError> {
        let local: SocketAddr = if server.addr.ip().is_loopback() {
            "127.0.0.1:0".parse().expect("valid address")
        } else {
            "0.0.0.0:0".parse().expect("valid address")
        };
        let limits = Limits {
            max_frame,
            ..Limits::default()
        };
        Ok(RpcClient {
            endpoint: Endpoint::bind(local, auth, limits)?,
            server,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    pub fn server(&self) -> &PeerAddr {
        &self.server
    }

    /// Closes the current connection; the next request dials again.
    pub async fn drop_connection(&self) {
        if let Some(c) = self.conn.lock().await.take() {
            c.close("client reconnecting");
        }
    }

    async fn connection(&self) -> Result<Connection, RpcError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let c = self
            .endpoint
            .connect(&self.server)
            .await
            .map_err(|e| RpcError::Connect(e.to_string()))?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Sends `frame` and returns the server's answer, within `deadline`. A broken connection
    /// is dialled again once; a missed deadline drops the connection. The error says why the
    /// server could not be heard.
    pub async fn request(&self, frame: &[u8], deadline: Duration) -> Result<Vec<u8>, RpcError> {
        let attempts = async {
            let mut last = RpcError::NoResponse;
            for _ in 0..2 {
                let conn = self.connection().await?;
                let attempt = async {
                    fn broke(e: impl std::fmt::Display) -> RpcError {
                        RpcError::Broken(e.to_string())
                    }
                    let mut stream = conn.open_stream().await.map_err(broke)?;
                    stream.write_frame(frame).await.map_err(broke)?;
                    stream.finish();
                    stream
                        .read_frame()
                        .await
                        .map_err(broke)?
                        .ok_or(RpcError::NoResponse)
                };
                match attempt.await {
                    Ok(reply) => return Ok(reply),
                    Err(e) => {
                        // The connection broke: drop it and dial again once.
                        *self.conn.lock().await = None;
                        last = e;
                    }
                }
            }
            Err(last)
        };
        match tokio::time::timeout(deadline, attempts).await {
            Ok(r) => r,
            Err(_) => {
                self.drop_connection().await;
                Err(RpcError::Timeout(deadline))
            }
        }
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Broken(String),
    #[error("no response")]
    NoResponse,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Why a body is not a message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("empty frame")]
    Empty,
    #[error("unsupported {service} version {got}")]
    Version { service: String, got: u8 },
    #[error("{0}")]
    Malformed(String),
    #[error("trailing bytes")]
    Trailing,
}

/// Why a client's request costs it its connection (the ledger's and the tower's servers).
#[derive(Debug, thiserror::Error)]
pub enum BadRequest {
    #[error("bad request frame: {0}")]
    Frame(#[from] crate::FrameError),
    #[error("bad request: {0}")]
    Body(#[from] BodyError),
}

/// Reads one request from `stream` and decodes it with `decode`; `None` when the client closed
/// the stream without sending one.
pub async fn read_request<T>(
    stream: &mut crate::FramedStream,
    decode: impl FnOnce(&[u8]) -> Result<T, BodyError>,
) -> Result<Option<T>, BadRequest> {
    match stream.read_frame().await? {
        Some(frame) => Ok(Some(decode(&frame)?)),
        None => Ok(None),
    }
}

/// The body of a request or response: a version byte, then the bincode of `value`.
pub fn encode_body<T: Serialize>(version: u8, value: &T) -> Vec<u8> {
    let mut out = vec![version];
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
        .expect("RPC messages encode");
    out
}

/// Decodes a body made by [`encode_body`] with `version`, reading at most `LIMIT` bytes of
/// payload; never panics on hostile bytes. `service` names the protocol in errors.
pub fn decode_body<T: DeserializeOwned, const LIMIT: usize>(
    version: u8,
    service: &str,
    frame: &[u8],
) -> Result<T, BodyError> {
    let (&got, payload) = frame.split_first().ok_or(BodyError::Empty)?;
    if got != version {
        return Err(BodyError::Version {
            service: service.to_string(),
            got,
        });
    }
    let config = bincode::config::standard().with_limit::<LIMIT>();
    let (value, used) = bincode::serde::decode_from_slice(payload, config)
        .map_err(|e| BodyError::Malformed(e.to_string()))?;
    if used != payload.len() {
        return Err(BodyError::Trailing);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_decodes_to_what_was_encoded_and_nothing_else_does() {
        let body = encode_body(3, &(7u64, "seven".to_string()));
        assert_eq!(
            decode_body::<(u64, String), 1024>(3, "test RPC", &body),
            Ok((7, "seven".to_string()))
        );
        assert_eq!(
            decode_body::<(u64, String), 1024>(3, "test RPC", &[]).map_err(|e| e.to_string()),
            Err("empty frame".to_string())
        );
        assert_eq!(
            decode_body::<(u64, String), 1024>(4, "test RPC", &body).map_err(|e| e.to_string()),
            Err("unsupported test RPC version 3".to_string())
        );
        let mut longer = body.clone();
        longer.push(0);
        assert_eq!(
            decode_body::<(u64, String), 1024>(3, "test RPC", &longer).map_err(|e| e.to_string()),
            Err("trailing bytes".to_string())
        );
        // A length that claims more than the limit is refused before anything is allocated.
        let big = encode_body(3, &vec![0u8; 100]);
        assert!(decode_body::<Vec<u8>, 64>(3, "test RPC", &big).is_err());
        assert!(
            decode_body::<(u64, String), 1024>(3, "test RPC", &body[..body.len() - 1]).is_err()
        );
    }
}
