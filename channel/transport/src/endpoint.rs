//! QUIC endpoints that authenticate node keys.

use std::collections::HashSet;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use gridchan_channel::{NodeId, Signer};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::auth::{self, Role, HELLO_LEN};
use crate::framed::FramedStream;

const ALPN: &[u8] = b"gridchan/1";

/// Why a connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// `PUBKEY@HOST:PORT` did not parse or resolve.
    #[error("bad peer address {0:?}: expected PUBKEY@HOST:PORT with a 66-hex-digit key")]
    BadAddress(String),
    /// Binding the UDP socket or setting up TLS failed.
    #[error("cannot listen on {addr}: {detail}")]
    Bind { addr: SocketAddr, detail: String },
    /// The QUIC connection failed or timed out.
    #[error("cannot reach {addr}: {detail}")]
    Connect { addr: SocketAddr, detail: String },
    /// The peer did not prove a node key, or proved another one than its address names.
    #[error("peer at {addr} failed authentication: {detail}")]
    Auth { addr: SocketAddr, detail: String },
    /// An established connection failed.
    #[error("connection lost: {0}")]
    Lost(String),
}

/// A node's address: its key and where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddr {
    pub node: NodeId,
    pub addr: SocketAddr,
}

impl FromStr for PeerAddr {
    type Err = TransportError;

    fn from_str(s: &str) -> Result<PeerAddr, TransportError> {
        let bad = || TransportError::BadAddress(s.to_string());
        let (key, host) = s.split_once('@').ok_or_else(bad)?;
        let node: NodeId = key.parse().map_err(|_| bad())?;
        let addr = host
            .to_socket_addrs()
            .map_err(|_| bad())?
            .next()
            .ok_or_else(bad)?;
        Ok(PeerAddr { node, addr })
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.node, self.addr)
    }
}

/// Limits an endpoint enforces.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest frame on any stream, checked from its length prefix before it is buffered.
    pub max_frame: usize,
    /// Concurrent streams a peer may open on one connection (the key proof's stream counts).
    pub max_streams: u32,
    /// Bytes a peer may send on one stream beyond what we have read (QUIC's stream flow
    /// control window): what a stream nobody reads can make us buffer.
    pub stream_window: u32,
    /// Bytes a peer may send on all streams of a connection beyond what we have read: what one
    /// connection can make us buffer, whatever it does with its streams.
    pub connection_window: u32,
    /// Authenticated connections held at once from keys without priority (see
    /// [`Endpoint::set_priority`]); one more is closed right after its key proof. Connections
    /// from priority keys are always admitted.
    pub max_connections: usize,
    /// Handshakes (QUIC and the key proof) in progress at once; more are refused. Each is
    /// bounded by `handshake_timeout`.
    pub max_handshakes: usize,
    /// Connections held at once from one key: a newer one closes the oldest.
    pub max_per_key: usize,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Keep-alive period, well inside the idle timeout.
    pub keep_alive: Duration,
    /// Time allowed for the handshake and the key proof.
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame: 64 * 1024,
            max_streams: 64,
            stream_window: 256 * 1024,
            connection_window: 1024 * 1024,
            max_connections: 256,
            max_handshakes: 256,
            max_per_key: 8,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// The limits of a gateway's link to a neighbour (specs/protocol.md, "Transport"): frames of
    /// at most `max_frame` bytes on exactly two streams (the key proof's, then the frames'),
    /// receive windows of a few frames, and at most two connections per key (a reconnect may
    /// overlap the connection it replaces).
    /// The limits of a service's RPC endpoint (a ledger node, a tower): frames of at most
    /// `max_frame` bytes, up to `max_clients` connections and handshakes at once.
    pub fn rpc_server(max_frame: usize, max_clients: usize) -> Limits {
        Limits {
            max_frame,
            max_connections: max_clients,
            max_handshakes: max_clients,
            ..Limits::default()
        }
    }

    pub fn peer_link(max_frame: usize) -> Limits {
        let frame = u32::try_from(max_frame + 4).unwrap_or(u32::MAX);
        Limits {
            max_frame,
            max_streams: 2,
            stream_window: frame.saturating_mul(4),
            connection_window: frame.saturating_mul(5),
            max_per_key: 2,
            ..Limits::default()
        }
    }
}

/// A QUIC endpoint that both accepts and makes connections as one node.
#[derive(Clone)]
pub struct Endpoint {
    endpoint: quinn::Endpoint,
    signer: Arc<Signer>,
    limits: Limits,
    /// The authenticated connections accepted and still held.
    open: Arc<Mutex<Registry>>,
    /// Keys whose connections are admitted beyond `max_connections` (neighbours we have
    /// channels with): a crowd of strangers cannot keep them out.
    priority: Arc<RwLock<HashSet<NodeId>>>,
    /// Incoming handshakes in progress, each in its own task: a client that connects and then
    /// says nothing delays nobody else.
    handshakes: Arc<tokio::sync::Mutex<tokio::task::JoinSet<Option<Connection>>>>,
}

/// An authenticated connection: `peer` proved its key.
#[derive(Clone)]
pub struct Connection {
    pub peer: NodeId,
    pub remote: SocketAddr,
    inner: quinn::Connection,
    max_frame: usize,
    _slot: Option<Arc<Slot>>,
}

/// The accepted connections an endpoint holds, oldest first.
#[derive(Default)]
struct Registry {
    next: u64,
    held: Vec<Held>,
}

struct Held {
    slot: u64,
    peer: NodeId,
    conn: quinn::Connection,
}

impl Registry {
    /// Admits `conn` from `peer`: closes the oldest connections of the same key beyond
    /// `max_per_key`, and refuses (`None`) a key without priority when `max_connections` of
    /// those are held. Priority is the keys' now: a stranger's connection that became a
    /// neighbour's (a channel opened on it) no longer counts against strangers.
    fn admit(
        &mut self,
        peer: NodeId,
        priority: &HashSet<NodeId>,
        conn: &quinn::Connection,
        limits: &Limits,
    ) -> Option<u64> {
        self.held.retain(|h| h.conn.close_reason().is_none());
        let unprivileged = self
            .held
            .iter()
            .filter(|h| !priority.contains(&h.peer))
            .count();
        if !priority.contains(&peer) && unprivileged >= limits.max_connections {
            return None;
        }
        let same_key = self.held.iter().filter(|h| h.peer == peer).count();
        let mut excess = (same_key + 1).saturating_sub(limits.max_per_key.max(1));
        self.held.retain(|h| {
            if excess > 0 && h.peer == peer {
                excess -= 1;
                h.conn.close(
                    2u32.into(),
                    b"replaced by a newer connection from the same key",
                );
                false
            } else {
                true
            }
        });
        self.next += 1;
        self.held.push(Held {
            slot: self.next,
            peer,
            conn: conn.clone(),
        });
        Some(self.next)
    }
}

/// Holds an accepted connection's place in the registry until its last clone is dropped.
struct Slot {
    registry: Arc<Mutex<Registry>>,
    slot: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut r) = self.registry.lock() {
            r.held.retain(|h| h.slot != self.slot);
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport_config(limits: &Limits) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(limits.max_streams.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.stream_receive_window(limits.stream_window.into());
    t.receive_window(limits.connection_window.into());
    t.keep_alive_interval(Some(limits.keep_alive));
    t.max_idle_timeout(limits.idle_timeout.try_into().ok());
    Arc::new(t)
}

impl Endpoint {
    /// Binds `addr` (use port 0 for any free port) as the node whose secret key is `secret`.
    pub fn bind(
        addr: SocketAddr,
        signer: Signer,
        limits: Limits,
    ) -> Result<Endpoint, TransportError> {
        let bind_err = |detail: String| TransportError::Bind { addr, detail };
        let cert = rcgen::generate_simple_self_signed(vec!["gridchan".to_string()])
            .map_err(|e| bind_err(e.to_string()))?;
        let cert_der = CertificateDer::from(cert.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| bind_err(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![cert_der], key)
            .map_err(|e| bind_err(e.to_string()))?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        let server = QuicServerConfig::try_from(server).map_err(|e| bind_err(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
        server.transport_config(transport_config(&limits));

        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| bind_err(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth();
        client.alpn_protocols = vec![ALPN.to_vec()];
        let client = QuicClientConfig::try_from(client).map_err(|e| bind_err(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client));
        client.transport_config(transport_config(&limits));

        let mut endpoint =
            quinn::Endpoint::server(server, addr).map_err(|e| bind_err(e.to_string()))?;
        endpoint.set_default_client_config(client);
        Ok(Endpoint {
            endpoint,
            signer: Arc::new(signer),
            limits,
            open: Arc::default(),
            priority: Arc::default(),
            handshakes: Arc::default(),
        })
    }

    /// Sets the keys whose connections are always admitted (the neighbours this node has
    /// channels with, or is configured to keep): strangers holding every other place cannot
    /// keep them out.
    pub fn set_priority(&self, keys: impl IntoIterator<Item = NodeId>) {
        let keys: HashSet<NodeId> = keys.into_iter().collect();
        if let Ok(mut p) = self.priority.write() {
            if *p != keys {
                *p = keys;
            }
        }
    }

    /// Authenticated connections accepted and still held.
    pub fn connections(&self) -> usize {
        self.open.lock().map(|r| r.held.len()).unwrap_or(0)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn node(&self) -> NodeId {
        self.signer.id()
    }

    /// This node's address as others should dial it.
    pub fn peer_addr(&self) -> PeerAddr {
        PeerAddr {
            node: self.node(),
            addr: self.local_addr(),
        }
    }

    /// Connects to `peer` and checks that it proves the key its address names.
    pub async fn connect(&self, peer: &PeerAddr) -> Result<Connection, TransportError> {
        let addr = peer.addr;
        let fail = |detail: String| TransportError::Connect { addr, detail };
        let attempt = async {
            let connecting = self
                .endpoint
                .connect(addr, "gridchan")
                .map_err(|e| fail(e.to_string()))?;
            let conn = connecting.await.map_err(|e| fail(e.to_string()))?;
            let node = self.prove(&conn, Role::Client).await?;
            if node != peer.node {
                conn.close(1u32.into(), b"wrong node key");
                return Err(TransportError::Auth {
                    addr,
                    detail: format!("it proved key {node}, not the {} in its address", peer.node),
                });
            }
            Ok(Connection {
                peer: node,
                remote: addr,
                inner: conn,
                max_frame: self.limits.max_frame,
                _slot: None,
            })
        };
        tokio::time::timeout(self.limits.handshake_timeout, attempt)
            .await
            .map_err(|_| fail("timed out".into()))?
    }

    /// Opens a QUIC connection to `addr` and never proves a key: what a hostile client does to
    /// hold a server's handshake slot. For tests of the server; nothing else should call it.
    #[doc(hidden)]
    pub async fn connect_without_proof(
        &self,
        addr: SocketAddr,
    ) -> Result<impl Drop + use<>, TransportError> {
        let fail = |detail: String| TransportError::Connect { addr, detail };
        let conn = self
            .endpoint
            .connect(addr, "gridchan")
            .map_err(|e| fail(e.to_string()))?
            .await
            .map_err(|e| fail(e.to_string()))?;
        struct Silent(quinn::Connection);
        impl Drop for Silent {
            fn drop(&mut self) {
                self.0.close(0u32.into(), b"done");
            }
        }
        Ok(Silent(conn))
    }

    /// Waits for the next authenticated connection. Handshakes run concurrently, each bounded
    /// by the handshake timeout; connections that fail to authenticate are logged and skipped;
    /// `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<Connection> {
        let mut handshakes = self.handshakes.lock().await;
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let incoming = incoming?;
                    if handshakes.len() >= self.limits.max_handshakes {
                        tracing::warn!(remote = %incoming.remote_address(), "too many handshakes in progress: refused");
                        incoming.refuse();
                        continue;
                    }
                    let ep = self.clone();
                    handshakes.spawn(async move { ep.handshake(incoming).await });
                }
                Some(done) = handshakes.join_next(), if !handshakes.is_empty() => {
                    if let Ok(Some(conn)) = done {
                        return Some(conn);
                    }
                }
            }
        }
    }

    /// The server side of one handshake: QUIC, then the key proof.
    async fn handshake(&self, incoming: quinn::Incoming) -> Option<Connection> {
        let remote = incoming.remote_address();
        let attempt = async {
            let conn = incoming.await.map_err(|e| TransportError::Connect {
                addr: remote,
                detail: e.to_string(),
            })?;
            let node = self.prove(&conn, Role::Server).await?;
            Ok::<_, TransportError>((conn, node))
        };
        match tokio::time::timeout(self.limits.handshake_timeout, attempt).await {
            Ok(Ok((conn, node))) => {
                let admitted = {
                    let priority = self.priority.read().ok()?;
                    self.open
                        .lock()
                        .ok()?
                        .admit(node, &priority, &conn, &self.limits)
                };
                let Some(slot) = admitted else {
                    tracing::warn!(%remote, peer = %node, "connection limit reached: closed");
                    conn.close(3u32.into(), b"connection limit reached");
                    return None;
                };
                Some(Connection {
                    peer: node,
                    remote,
                    inner: conn,
                    max_frame: self.limits.max_frame,
                    _slot: Some(Arc::new(Slot {
                        registry: self.open.clone(),
                        slot,
                    })),
                })
            }
            // A client that went away mid-handshake (it restarted, or gave up) is not news.
            Ok(Err(e @ TransportError::Lost(_))) => {
                tracing::debug!(%remote, "handshake abandoned: {e}");
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(%remote, "refused: {e}");
                None
            }
            Err(_) => {
                tracing::warn!(%remote, "refused: handshake timed out");
                None
            }
        }
    }

    /// Exchanges hellos on the connection's first stream: the client opens it and speaks first.
    async fn prove(&self, conn: &quinn::Connection, role: Role) -> Result<NodeId, TransportError> {
        let addr = conn.remote_address();
        let auth_err = |detail: &str| TransportError::Auth {
            addr,
            detail: detail.to_string(),
        };
        // The connection failing mid-handshake (the peer went away, or refused us for a limit
        // and said why) is not a failed proof.
        let lost = |e: &dyn std::fmt::Display| {
            TransportError::Lost(format!("during the handshake with {addr}: {e}"))
        };
        let mut km = [0u8; 32];
        conn.export_keying_material(&mut km, auth::EXPORTER_LABEL, b"")
            .map_err(|_| auth_err("no keying material"))?;
        let (mut send, mut recv) = match role {
            Role::Client => conn.open_bi().await,
            Role::Server => conn.accept_bi().await,
        }
        .map_err(|e| lost(&e))?;
        let ours = auth::hello(&self.signer, role, &km);
        let theirs_role = match role {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        };
        let mut theirs = [0u8; HELLO_LEN];
        if let Role::Client = role {
            send.write_all(&ours).await.map_err(|e| lost(&e))?;
        }
        recv.read_exact(&mut theirs).await.map_err(|e| lost(&e))?;
        let node = auth::check_hello(&theirs, theirs_role, &km)
            .ok_or_else(|| auth_err("its key proof does not verify for this connection"))?;
        if let Role::Server = role {
            send.write_all(&ours).await.map_err(|e| lost(&e))?;
        }
        let _ = send.finish();
        Ok(node)
    }

    /// Closes the endpoint and every connection.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutting down");
    }

    /// Closes the endpoint and every connection, and waits (at most `within`) until the peers
    /// have been told, so they learn at once that this node is going, not after an idle timeout.
    pub async fn shut_down(&self, within: Duration) {
        self.close();
        let _ = tokio::time::timeout(within, self.endpoint.wait_idle()).await;
    }
}

impl Connection {
    /// Opens a new stream of frames.
    pub async fn open_stream(&self) -> Result<FramedStream, TransportError> {
        let (send, recv) = self
            .inner
            .open_bi()
            .await
            .map_err(|e| TransportError::Lost(e.to_string()))?;
        Ok(FramedStream::new(send, recv, self.max_frame))
    }

    /// Waits for the peer to open a stream.
    pub async fn accept_stream(&self) -> Result<FramedStream, TransportError> {
        let (send, recv) = self
            .inner
            .accept_bi()
            .await
            .map_err(|e| TransportError::Lost(e.to_string()))?;
        Ok(FramedStream::new(send, recv, self.max_frame))
    }

    /// Closes the connection, telling the peer why.
    pub fn close(&self, reason: &str) {
        self.inner.close(1u32.into(), reason.as_bytes());
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<String> {
        self.inner.close_reason().map(|r| r.to_string())
    }

    /// Resolves when the connection is closed.
    pub async fn closed(&self) -> String {
        self.inner.closed().await.to_string()
    }

    /// The smoothed round-trip time QUIC measured.
    pub fn rtt(&self) -> Duration {
        self.inner.rtt()
    }
}

/// Accepts any certificate: identity comes from the node-key proof, not from TLS. The
/// handshake signature is still checked, so the TLS session is sound.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
