//! The engine: one task that owns the protocol core ([`Node`]) and carries out its outputs
//! with real I/O. Peer connections run in their own tasks and talk to the engine through
//! channels; durable writes are batched (one SQLite transaction for every record the core asked
//! for since the last batch) and acknowledged before anything that depends on them is sent.

mod handle;
mod inputs;
mod outputs;
mod precompute;
mod run;

use std::collections::HashMap;
use std::time::Duration;

use gridchan_channel::{
    ChannelId, CommandError, Event, LedgerRequest, Node, NodeId, Policy, SignedState, Signer,
    UpdateId,
};
use gridchan_transport::{Connection, Endpoint};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::links::{self, Inbound};
use crate::store::SqliteStore;
use crate::writer::Writer;

use handle::Control;
pub use handle::EngineHandle;

/// Inputs taken in one go before the outputs they caused are carried out.
const MAX_BATCH_INPUTS: usize = 2048;

/// Records written at once on the engine's thread, at most: a larger batch goes to the writer,
/// so that the connections this thread serves never wait for a long commit (a burst's last
/// 1,000 records took up to 6 ms).
const MAX_INLINE_RECORDS: usize = 8;

/// Settled intervals kept for the next tick's history write, at most: more are handed to the
/// writer at once.
const MAX_PENDING_TRADES: usize = 16_384;

/// Signatures to check or make in one batch below which handing them to the pool is not worth
/// it (they are made ahead all the same, on the engine's thread).
const MIN_PARALLEL_JOBS: usize = 8;

/// Something the engine reports to its host.
#[derive(Clone, Debug)]
pub enum Report {
    /// A protocol event (settled, refused, closed ...).
    Event(Event),
    /// The core asked for a ledger transaction (already in the durable ledger queue).
    Ledger(LedgerRequest),
    /// Something else was put in the ledger queue (a withdrawal).
    LedgerQueued,
    /// A new doubly signed state for the watchtowers.
    Watchtower(SignedState),
    /// A peer connected (authenticated) or disconnected.
    Peer { peer: NodeId, connected: bool },
    /// A durable write failed.
    StoreFailed(String),
    /// A neighbour's meter announcement.
    Announce {
        peer: NodeId,
        announce: gridchan_channel::wire::Announce,
    },
}

/// Why a request to the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the gateway engine has stopped")]
    Stopped,
    #[error(transparent)]
    Command(#[from] CommandError),
}

struct Peer {
    writer: mpsc::Sender<Vec<u8>>,
    conn: Connection,
    generation: u64,
}

struct Engine {
    node: Node,
    /// The engine's own connection: the ledger queue's inserts (rare, and durable before the
    /// submitter hears of them), and a lone batch written at once while the writer is idle.
    store: SqliteStore,
    /// Channel records and history, written in order on the writer's thread.
    writer: Writer,
    /// The last update handed to the writer, until the writer answers for it.
    writing: Option<UpdateId>,
    peers: HashMap<NodeId, Peer>,
    generation: u64,
    reports: broadcast::Sender<Report>,
    inbound_tx: mpsc::Sender<Inbound>,
    endpoint: Endpoint,
    /// The node's key again, for the worker pool to sign a burst with while this thread goes on
    /// serving the connections.
    pool_signer: std::sync::Arc<Signer>,
    /// Channels frozen by a failed write: when to retry, and the delay after that.
    frozen: HashMap<ChannelId, (std::time::Instant, Duration)>,
    /// Settled intervals not yet handed to the writer. The tick hands them over, once a second
    /// (or a full [`MAX_PENDING_TRADES`] at once), in a transaction of their own: never on an
    /// update's path, and many intervals of a channel share its pages in the history's index.
    trades: Vec<crate::store::TradeEntry>,
    /// Neighbours this gateway dialled (configured, or opened to by address): with those it has
    /// channels with, the keys whose connections the endpoint always admits.
    dialled: std::collections::HashSet<NodeId>,
    /// Asked to stop: answered once the engine has.
    stopping: Option<oneshot::Sender<()>>,
}

/// Why an engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] gridchan_channel::StoreError),
    #[error(transparent)]
    Listen(#[from] gridchan_transport::TransportError),
    #[error("cannot start the engine's thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Starts an engine for `signer`, restoring channels from `store`, listening for neighbours
/// on `listen` (port 0: a free port; the handle's address says which).
///
/// The engine and its connections share a thread and a runtime of their own: the endpoint
/// (bound here on that runtime, so its socket's readiness and its receive loop are served
/// there), the connections' drivers (quinn starts them where a connection is made), and the
/// reader and writer tasks. A frame goes from the wire into the engine, and from the engine onto
/// the wire, without waking another thread. The engine never blocks that thread on a burst's
/// cryptography (it takes more input while the worker pool works); it does block it for a
/// write it makes itself (a lone batch of at most 8 records).
pub fn spawn(
    listen: std::net::SocketAddr,
    signer: Signer,
    store: SqliteStore,
    policy: Policy,
) -> Result<EngineHandle, StartError> {
    use gridchan_channel::ChannelStore;
    let mut rt = EngineRuntime(Some(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    ));
    let endpoint = {
        let _on_the_engines_runtime = rt.get().enter();
        Endpoint::bind(
            listen,
            signer.duplicate(&rand::random()),
            links::peer_limits(),
        )?
    };
    let records = store.load()?;
    endpoint.set_priority(records.iter().map(|r| *r.params.node(r.me.other())));
    let node_id = signer.id();
    let pool_signer = std::sync::Arc::new(signer.duplicate(&rand::random()));
    let node = Node::restore(signer, policy, records);
    let (control_tx, control_rx) = mpsc::channel(1024);
    let (inbound_tx, inbound_rx) = mpsc::channel(4096);
    let (reports, _) = broadcast::channel(4096);
    let address = endpoint.peer_addr();
    let store_path = store.path().to_path_buf();
    let (writer, written) = Writer::spawn(store.reopen()?);
    let engine = Engine {
        node,
        store,
        writer,
        writing: None,
        peers: HashMap::new(),
        generation: 0,
        reports: reports.clone(),
        inbound_tx: inbound_tx.clone(),
        endpoint: endpoint.clone(),
        pool_signer,
        trades: Vec::new(),
        frozen: HashMap::new(),
        dialled: std::collections::HashSet::new(),
        stopping: None,
    };
    let accept = links::accept_loop(endpoint, inbound_tx);
    std::thread::Builder::new()
        .name("gridchan-engine".into())
        .spawn(move || {
            let rt = rt.0.take().expect("the engine's runtime");
            rt.spawn(accept);
            let stopped = rt.block_on(engine.run(control_rx, inbound_rx, written));
            // The runtime, and with it the endpoint's socket, is gone before a `stop` returns:
            // the port is free for whoever binds it next.
            drop(rt);
            if let Some(reply) = stopped {
                let _ = reply.send(());
            }
        })?;
    Ok(EngineHandle {
        control: control_tx,
        reports,
        node: node_id,
        address,
        store_path,
    })
}

/// The engine's runtime until its thread takes it. If the engine never starts (its port is
/// taken, its store unreadable), the runtime is shut down in the background: dropping one
/// inside the caller's async context would panic.
struct EngineRuntime(Option<tokio::runtime::Runtime>);

impl EngineRuntime {
    fn get(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("the engine's runtime")
    }
}

impl Drop for EngineRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}
