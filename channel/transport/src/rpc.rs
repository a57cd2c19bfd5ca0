//! The client side of a request/response service over authenticated QUIC (the ledger node and
//! the watchtower both speak this way): one stream per request, one frame each way. The
//! connection is dialled on demand and dialled again after it breaks; every request has a
//! deadline, so a server that died without closing its connection is noticed at once, not at
//! the idle timeout.

use std::net::SocketAddr;
use std::time::Duration;

use gridchan_channel::Signer;

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
