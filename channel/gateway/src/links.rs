//! The engine's links to its neighbours: the transport's limits for them, accepting and dialling
//! connections, and one pump per connection that carries decoded frames in to the engine and
//! the engine's frames out, on the engine's runtime.

use gridchan_channel::{Message, NodeId};
use gridchan_transport::{Connection, Endpoint, PeerAddr};
use tokio::sync::{mpsc, oneshot};

use crate::error::GatewayError;

/// Frames queued for one peer before it counts as not reading (and loses its connection).
/// One connection carries every channel with that peer, so this bounds a burst of one message
/// per channel for thousands of channels.
const PEER_QUEUE: usize = 16_384;

/// Frames written to a peer's stream in one go, at most.
const WRITE_BURST: usize = 256;

/// What the connections tell the engine, in arrival order.
pub(crate) enum Inbound {
    Up(Connection, mpsc::Sender<Vec<u8>>),
    /// A frame from a peer, decoded (or why it is not a message).
    Message(NodeId, Result<Message, gridchan_channel::wire::WireError>),
    /// A connection closed, and why.
    Down(NodeId, u64, String),
}

/// The limits of a link to a neighbour: the protocol's frame limit (specs/protocol.md,
/// "Transport"), two streams, windows of a few frames.
pub fn peer_limits() -> gridchan_transport::Limits {
    // The transport limits a frame's body; the protocol's limit counts its 4-byte length too.
    gridchan_transport::Limits::peer_link(gridchan_channel::wire::MAX_FRAME - 4)
}

pub(crate) async fn accept_loop(endpoint: Endpoint, inbound: mpsc::Sender<Inbound>) {
    let wait = peer_limits().handshake_timeout;
    while let Some(conn) = endpoint.accept().await {
        let inbound = inbound.clone();
        tokio::spawn(async move {
            // The dialler opens the channel stream; the listener accepts it, within the
            // handshake's time: a peer that proved its key and opens nothing holds no place.
            match tokio::time::timeout(wait, conn.accept_stream()).await {
                Ok(Ok(stream)) => run_connection(conn, stream, inbound).await,
                Ok(Err(e)) => tracing::warn!("peer {} opened no stream: {e}", conn.peer),
                Err(_) => {
                    tracing::warn!(
                        "peer {} opened no stream within {} s: disconnected",
                        conn.peer,
                        wait.as_secs()
                    );
                    conn.close("no frame stream opened in time");
                }
            }
        });
    }
}

pub(crate) async fn dial(
    endpoint: Endpoint,
    peer: PeerAddr,
    inbound: mpsc::Sender<Inbound>,
    outcome: Option<oneshot::Sender<Result<(), GatewayError>>>,
) {
    let up = match endpoint.connect(&peer).await {
        Ok(conn) => match conn.open_stream().await {
            Ok(stream) => Ok((conn, stream)),
            Err(e) => Err(GatewayError::Unreachable(format!(
                "cannot open a stream: {e}"
            ))),
        },
        Err(e) => Err(GatewayError::Unreachable(e.to_string())),
    };
    match up {
        Ok((conn, stream)) => {
            if let Some(o) = outcome {
                let _ = o.send(Ok(()));
            }
            run_connection(conn, stream, inbound).await
        }
        Err(e) => {
            tracing::warn!("neighbour {}: {e}", peer.node);
            if let Some(o) = outcome {
                let _ = o.send(Err(e));
            }
        }
    }
}

/// Pumps one connection: frames in to the engine, frames out from the engine's queue.
async fn run_connection(
    conn: Connection,
    stream: gridchan_transport::FramedStream,
    inbound: mpsc::Sender<Inbound>,
) {
    let (writer_tx, mut writer_rx) = mpsc::channel::<Vec<u8>>(PEER_QUEUE);
    let peer = conn.peer;
    if inbound
        .send(Inbound::Up(conn.clone(), writer_tx))
        .await
        .is_err()
    {
        return;
    }
    // Reading runs in its own task: a read cancelled half-way would lose the framing.
    let (mut reader, mut writer) = stream.split();
    let reader_conn = conn.clone();
    let reading = tokio::spawn(async move {
        loop {
            match reader.read_frame().await {
                Ok(Some(body)) => {
                    // Decoded here, once, on this connection's task: the engine gets messages.
                    let message = Message::decode_body(&body);
                    if inbound.send(Inbound::Message(peer, message)).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                // The connection closed (the watch on it reports why): closing it here would
                // only hide the peer's reason behind our own.
                Err(_) if reader_conn.close_reason().is_some() => break,
                Err(e) => {
                    tracing::warn!("peer {peer}: {e}");
                    reader_conn.close(&e.to_string());
                    break;
                }
            }
        }
    });
    // Frames queued meanwhile go out together: one stream write for a burst of channels.
    let mut frames = Vec::new();
    while let Some(frame) = writer_rx.recv().await {
        frames.push(frame);
        while frames.len() < WRITE_BURST {
            match writer_rx.try_recv() {
                Ok(f) => frames.push(f),
                Err(_) => break,
            }
        }
        if let Err(e) = writer.write_prefixed_many(&frames).await {
            tracing::debug!("write to {peer} failed: {e}");
            break;
        }
        frames.clear();
    }
    reading.abort();
    conn.close("connection ended");
}
