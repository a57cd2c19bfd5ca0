//! `gridchan ledger`: the local ledger served over authenticated QUIC.

use std::sync::Arc;
use std::time::Duration;

use gridchan_transport::BadRequest;
use gridchan_transport::{Connection, Endpoint, FramedStream};

use crate::local::{LocalError, LocalLedger};
use crate::rpc::{self, Request, Response, MAX_BLOCKS_PER_CALL, MAX_WAIT_MS};

/// Serves `ledger` on `endpoint` until the endpoint closes.
pub async fn serve(endpoint: Endpoint, ledger: Arc<LocalLedger>) {
    while let Some(conn) = endpoint.accept().await {
        tracing::debug!(peer = %conn.peer, "ledger client connected");
        tokio::spawn(serve_connection(conn, ledger.clone()));
    }
}

async fn serve_connection(conn: Connection, ledger: Arc<LocalLedger>) {
    loop {
        let stream = match conn.accept_stream().await {
            Ok(s) => s,
            Err(_) => return,
        };
        let (conn, ledger) = (conn.clone(), ledger.clone());
        tokio::spawn(async move {
            if let Err(reason) = serve_stream(stream, &ledger).await {
                tracing::warn!(peer = %conn.peer, "closing connection: {reason}");
                conn.close(&reason.to_string());
            }
        });
    }
}

/// One request, one response. A malformed request costs the client its connection.
async fn serve_stream(
    mut stream: FramedStream,
    ledger: &Arc<LocalLedger>,
) -> Result<(), BadRequest> {
    let Some(request) =
        gridchan_transport::read_request(&mut stream, rpc::decode::<Request>).await?
    else {
        return Ok(());
    };
    let response = handle(request, ledger).await;
    // The client may have gone; nothing to do about it.
    let _ = stream.write_frame(&rpc::encode(&response)).await;
    stream.finish();
    Ok(())
}

async fn handle(request: Request, ledger: &Arc<LocalLedger>) -> Response {
    let l = ledger.clone();
    let blocking = move |f: Box<dyn FnOnce(&LocalLedger) -> Response + Send>| {
        tokio::task::spawn_blocking(move || f(&l))
    };
    let result = match request {
        Request::ChainId => return Response::ChainId(ledger.chain_id()),
        Request::Height => return Response::Height(ledger.height()),
        Request::Account(node) => return Response::Account(ledger.account(&node)),
        Request::Channel(id) => return Response::Channel(ledger.channel(&id).map(Box::new)),
        Request::WaitAbove { height, timeout_ms } => {
            let wait = Duration::from_millis(u64::from(timeout_ms.min(MAX_WAIT_MS)));
            return Response::Height(ledger.wait_above(height, wait).await);
        }
        Request::Submit(tx) => {
            blocking(Box::new(move |l| match l.submit(*tx) {
                Ok(hash) => Response::Submitted(hash),
                Err(LocalError::Refused(e)) => Response::Refused(e),
                Err(e) => Response::Error(e.to_string()),
            }))
            .await
        }
        Request::Receipt(hash) => {
            blocking(Box::new(move |l| match l.receipt(&hash) {
                Ok(r) => Response::Receipt(r.map(Box::new)),
                Err(e) => Response::Error(e.to_string()),
            }))
            .await
        }
        Request::Blocks { from, max } => {
            let max = max.clamp(1, MAX_BLOCKS_PER_CALL) as usize;
            blocking(Box::new(move |l| match l.blocks(from, max) {
                Ok(mut b) => {
                    // Keep the response within one frame: drop trailing blocks (the client
                    // asks again from where it got to).
                    while b.len() > 1
                        && rpc::encode(&Response::Blocks(b.clone())).len() > rpc::MAX_RPC_FRAME
                    {
                        b.truncate(b.len() / 2);
                    }
                    Response::Blocks(b)
                }
                Err(e) => Response::Error(e.to_string()),
            }))
            .await
        }
    };
    result.unwrap_or_else(|e| Response::Error(format!("internal error: {e}")))
}
