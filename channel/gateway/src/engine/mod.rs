//! The engine: one task that owns the protocol core ([`Node`]) and carries out its outputs
//! with real I/O. Peer connections run in their own tasks and talk to the engine through
//! channels; durable writes are batched (one SQLite transaction for every record the core asked
//! for since the last batch) and acknowledged before anything that depends on them is sent.

mod handle;
mod inputs;
mod market;
mod metering;
mod outputs;
mod precompute;
mod queues;
mod run;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gridchan_channel::{
    ChannelId, ChannelStore, CommandError, Event, LedgerRequest, Node, NodeId, Policy, SignedState,
    Signer, UpdateId,
};
use gridchan_transport::{Connection, Endpoint};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::ledger_queue::LedgerQueue;
use crate::links::{self, Inbound};
use crate::writer::{Shared, Writer};

use handle::Control;
pub use handle::EngineHandle;
pub use market::{MarketNode, MarketParts, MarketReport, Stage};
use queues::Watchers;
pub use queues::{PeerChange, StateQueue};

/// The stores an engine can run on.
pub trait EngineStore: ChannelStore + Send + 'static {}
impl<S: ChannelStore + Send + 'static> EngineStore for S {}

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

/// Something the engine reports to whoever observes it ([`EngineHandle::reports`]): a
/// broadcast that a slow observer may lag behind (the demo's display, tests, a person's
/// tools). The daemon's jobs do not read it: each has a queue of its own (see `queues.rs`).
#[derive(Clone, Debug)]
pub enum Report {
    /// A protocol event (settled, refused, closed ...).
    Event(Event),
    /// The core asked for a ledger transaction (already in the durable ledger queue).
    Ledger(LedgerRequest),
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
    /// Something that happened in a market this gateway runs or is a member of.
    Market(MarketReport),
    /// A neighbour left out of an interval's round with us (its totals did not count, or it
    /// said nothing in time), and why.
    LeftOut {
        peer: NodeId,
        interval: gridchan_channel::IntervalIndex,
        why: String,
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

/// An input taken from the engine's queues, in arrival order.
enum Taken {
    Control(Control),
    Inbound(Inbound),
}

struct Peer {
    writer: mpsc::Sender<Vec<u8>>,
    conn: Connection,
    generation: u64,
}

struct Engine<S> {
    node: Node,
    /// The store, shared with the writer: the engine writes a lone batch at once while the
    /// writer is idle, and reads what a frozen channel holds on disk.
    store: Shared<S>,
    /// Where the ledger transactions the core asks for go, durable before anyone acts on them.
    ledger_queue: Arc<LedgerQueue>,
    /// Ledger requests the queue could not take (a failing disk): their channels are frozen,
    /// and they are pushed again before the channel is retried.
    unqueued: Vec<(ChannelId, gridchan_chain::TxKind)>,
    /// Wall time in milliseconds since the Unix epoch, for the core's deadlines.
    clock: fn() -> u64,
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
    pool_signer: Arc<Signer>,
    /// Channels frozen by a failed write: when to retry, and the delay after that.
    frozen: HashMap<ChannelId, (std::time::Instant, Duration)>,
    /// Settled intervals not yet handed to the writer. The tick hands them over, once a second
    /// (or a full [`MAX_PENDING_TRADES`] at once), in a transaction of their own: never on an
    /// update's path, and many intervals of a channel share its pages in the history's index.
    trades: Vec<gridchan_channel::Settled>,
    /// This hour's trades, for the log's hourly summary.
    trade_log: crate::event_log::TradeLog,
    /// Neighbours this gateway dialled (configured, or opened to by address): with those it has
    /// channels with, the keys whose connections the endpoint always admits.
    dialled: std::collections::HashSet<NodeId>,
    /// Asked to stop: answered once the engine has.
    stopping: Option<oneshot::Sender<()>>,
    /// The daemon's jobs, each with its own queue.
    watchers: Watchers,
    /// The metering rounds under way with the neighbours.
    rounds: metering::Rounds,
    /// The market this gateway runs, and its memberships.
    markets: market::Markets,
    /// Blinds the signing contexts of the market pseudonyms derived from the node's key.
    blinding: [u8; 32],
}

impl From<EngineError> for crate::error::GatewayError {
    fn from(e: EngineError) -> crate::error::GatewayError {
        match e {
            EngineError::Stopped => crate::error::GatewayError::Stopped,
            other => crate::error::GatewayError::Request(other.to_string()),
        }
    }
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

/// What an engine is made of.
pub struct EngineParts<S> {
    /// Where to listen for neighbours (port 0: a free port; the handle's address says which).
    pub listen: std::net::SocketAddr,
    pub signer: Signer,
    /// The channels' records: restored from it at start, every persist written to it.
    pub store: S,
    /// Where the ledger transactions the core asks for go.
    pub ledger_queue: Arc<LedgerQueue>,
    pub policy: Policy,
    /// Wall time in milliseconds since the Unix epoch: what the core's deadlines count in.
    pub clock: fn() -> u64,
    /// Seeds the blinding of the signing contexts the engine derives from `signer` (for its
    /// transport and its worker pool).
    pub seed: [u8; 32],
    /// The market this gateway runs, a member's limits, the metering clock.
    pub market: MarketParts,
}

/// Milliseconds since the Unix epoch, by the system's clock.
pub fn system_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl<S> EngineParts<S> {
    /// The parts with the system's clock and a seed from the operating system.
    pub fn new(
        listen: std::net::SocketAddr,
        signer: Signer,
        store: S,
        ledger_queue: Arc<LedgerQueue>,
        policy: Policy,
    ) -> EngineParts<S> {
        EngineParts {
            listen,
            signer,
            store,
            ledger_queue,
            policy,
            clock: system_ms,
            seed: rand::random(),
            market: MarketParts::default(),
        }
    }
}

/// Starts an engine, restoring its channels from its store.
///
/// The engine and its connections share a thread and a runtime of their own: the endpoint
/// (bound here on that runtime, so its socket's readiness and its receive loop are served
/// there), the connections' drivers (quinn starts them where a connection is made), and the
/// reader and writer tasks. A frame goes from the wire into the engine, and from the engine onto
/// the wire, without waking another thread. The engine never blocks that thread on a burst's
/// cryptography (it takes more input while the worker pool works); it does block it for a
/// write it makes itself (a lone batch of at most 8 records).
pub fn spawn<S: ChannelStore + Send + 'static>(
    parts: EngineParts<S>,
) -> Result<EngineHandle, StartError> {
    let EngineParts {
        listen,
        signer,
        store,
        ledger_queue,
        policy,
        clock,
        seed,
        market,
    } = parts;
    let blinding = |n: u8| {
        let mut s = seed;
        s[0] ^= n;
        s
    };
    let mut rt = EngineRuntime(Some(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    ));
    // A market node takes its members' first connections as strangers' (no channel yet):
    // room for every member it may have joining at once, beside the usual strangers.
    let mut limits = links::peer_limits();
    if market.run.is_some() {
        limits.max_connections += policy.accept.max_market_members;
        limits.max_handshakes += policy.accept.max_market_members;
    }
    let endpoint = {
        let _on_the_engines_runtime = rt.get().enter();
        Endpoint::bind(listen, signer.duplicate(&blinding(1)), limits)?
    };
    let records = store.load()?;
    endpoint.set_priority(records.iter().map(|r| *r.params.node(r.me.other())));
    let node_id = signer.id();
    let pool_signer = Arc::new(signer.duplicate(&blinding(2)));
    let node = Node::restore(signer, policy, records);
    let (control_tx, control_rx) = mpsc::channel(1024);
    let (inbound_tx, inbound_rx) = mpsc::channel(4096);
    let (reports, _) = broadcast::channel(4096);
    let address = endpoint.peer_addr();
    let store: Shared<S> = Arc::new(std::sync::Mutex::new(store));
    let (writer, written) = Writer::spawn(store.clone());
    let engine = Engine {
        node,
        store,
        ledger_queue: ledger_queue.clone(),
        unqueued: Vec::new(),
        clock,
        writer,
        writing: None,
        peers: HashMap::new(),
        generation: 0,
        reports: reports.clone(),
        inbound_tx: inbound_tx.clone(),
        endpoint: endpoint.clone(),
        pool_signer,
        trades: Vec::new(),
        trade_log: Default::default(),
        frozen: HashMap::new(),
        dialled: std::collections::HashSet::new(),
        stopping: None,
        watchers: Watchers::default(),
        rounds: metering::Rounds::default(),
        markets: market::Markets::new(market),
        blinding: blinding(3),
    };
    let accept = links::accept_loop(endpoint, inbound_tx);
    std::thread::Builder::new()
        .name("gridchan-engine".into())
        .spawn(move || {
            let rt = rt.0.take().expect("the engine's runtime");
            rt.spawn(accept);
            // Every line the engine logs says whose gateway it is.
            let node = node_id.to_string();
            let span = tracing::error_span!("gateway", node = &node[..10]);
            let stopped = {
                let _in_span = span.enter();
                rt.block_on(engine.run(control_rx, inbound_rx, written))
            };
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
        ledger_queue,
    })
}

/// Starts the gateway's usual engine: its channel records and its ledger queue in the SQLite
/// file at `path`, the system's clock, a seed from the operating system.
pub fn spawn_on_file(
    listen: std::net::SocketAddr,
    signer: Signer,
    path: &std::path::Path,
    policy: Policy,
) -> Result<EngineHandle, StartError> {
    spawn_on_file_in_markets(listen, signer, path, policy, MarketParts::default())
}

/// [`spawn_on_file`] for a gateway that runs a market or is a member of one (`market`).
pub fn spawn_on_file_in_markets(
    listen: std::net::SocketAddr,
    signer: Signer,
    path: &std::path::Path,
    policy: Policy,
    market: MarketParts,
) -> Result<EngineHandle, StartError> {
    let store = crate::store::SqliteStore::open(path)?;
    let queue = Arc::new(LedgerQueue::open(path)?);
    let mut parts = EngineParts::new(listen, signer, store, queue, policy);
    parts.market = MarketParts {
        store: market.store.clone().or_else(|| Some(path.to_path_buf())),
        ..market
    };
    spawn(parts)
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
