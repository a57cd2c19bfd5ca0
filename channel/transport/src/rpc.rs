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

    async fn connection(&self) -> Result<Connection, String> {
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
            .map_err(|e| e.to_string())?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Sends `frame` and returns the server's answer, within `deadline`. A broken connection
    /// is dialled again once; a missed deadline drops the connection. The error says why the
    /// server could not be heard.
    pub async fn request(&self, frame: &[u8], deadline: Duration) -> Result<Vec<u8>, String> {
        let attempts = async {
            let mut last = String::from("no attempt");
            for _ in 0..2 {
                let conn = self.connection().await?;
                let attempt = async {
                    let mut stream = conn.open_stream().await.map_err(|e| e.to_string())?;
                    stream.write_frame(frame).await.map_err(|e| e.to_string())?;
                    stream.finish();
                    stream
                        .read_frame()
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| "no response".to_string())
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
                Err(format!("no answer within {deadline:?}"))
            }
        }
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
) -> Result<T, String> {
    let (&got, payload) = frame.split_first().ok_or("empty frame")?;
    if got != version {
        return Err(format!("unsupported {service} version {got}"));
    }
    let config = bincode::config::standard().with_limit::<LIMIT>();
    let (value, used) =
        bincode::serde::decode_from_slice(payload, config).map_err(|e| e.to_string())?;
    if used != payload.len() {
        return Err("trailing bytes".into());
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
            decode_body::<(u64, String), 1024>(3, "test RPC", &[]),
            Err("empty frame".to_string())
        );
        assert_eq!(
            decode_body::<(u64, String), 1024>(4, "test RPC", &body),
            Err("unsupported test RPC version 3".to_string())
        );
        let mut longer = body.clone();
        longer.push(0);
        assert_eq!(
            decode_body::<(u64, String), 1024>(3, "test RPC", &longer),
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
