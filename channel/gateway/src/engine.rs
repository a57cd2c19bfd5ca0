//! The engine: one task that owns the protocol core ([`Node`]) and carries out its outputs
//! with real I/O. Peer connections run in their own tasks and talk to the engine through
//! channels; durable writes are batched (one SQLite transaction for every record the core asked
//! for since the last batch) and acknowledged before anything that depends on them is sent.

use std::collections::HashMap;
use std::time::Duration;

use gridchan_channel::{
    ChannelId, ChannelRecord, ChannelView, Command, CommandError, Event, Input, IntervalReading,
    LedgerEvent, LedgerRequest, Message, Node, NodeId, OpenRequest, Output, Policy, Precomputed,
    Presigned, PresignedOne, Recovered, RecoveredOne, Signature, SignedState, Signer, UpdateId,
};
use gridchan_transport::{Connection, Endpoint, PeerAddr};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::links::{self, Inbound};
use crate::store::SqliteStore;
use crate::writer::{Writer, Written};

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

enum Control {
    Open(
        OpenRequest,
        oneshot::Sender<Result<ChannelId, CommandError>>,
    ),
    Command(Command, oneshot::Sender<Result<(), CommandError>>),
    /// An interval's readings, of one channel or of many at once.
    Readings(Vec<(ChannelId, IntervalReading)>),
    Ledger(ChannelId, LedgerEvent),
    Channels(oneshot::Sender<Vec<ChannelView>>),
    Channel(ChannelId, oneshot::Sender<Option<ChannelView>>),
    Trades(
        ChannelId,
        usize,
        oneshot::Sender<Vec<crate::store::TradeRow>>,
    ),
    /// Dial a peer; the answer (if asked for) says whether the connection came up.
    Connect(PeerAddr, Option<oneshot::Sender<Result<(), String>>>),
    /// The peers connected now.
    Connected(oneshot::Sender<std::collections::HashSet<NodeId>>),
    /// Neighbours' proposals waiting for the owner's answer.
    Offers(oneshot::Sender<Vec<gridchan_channel::Offer>>),
    /// Our tokens on the ledger outside channels, as last read.
    Balance(gridchan_channel::Amount),
    Send(NodeId, Message),
    /// Finish: everything taken before this is handled, the writes already asked for are made,
    /// the history is written, and the peers are told the connections close.
    Stop(oneshot::Sender<()>),
}

/// An input taken from the engine's queues, in arrival order.
enum Taken {
    Control(Control),
    Inbound(Inbound),
}

/// A handle to a running engine.
#[derive(Clone)]
pub struct EngineHandle {
    control: mpsc::Sender<Control>,
    reports: broadcast::Sender<Report>,
    pub node: NodeId,
    pub address: PeerAddr,
    /// The engine's SQLite file (the ledger queue opens its own connection to it).
    pub store_path: std::path::PathBuf,
}

/// Why a request to the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the gateway engine has stopped")]
    Stopped,
    #[error(transparent)]
    Command(#[from] CommandError),
}

impl EngineHandle {
    pub fn reports(&self) -> broadcast::Receiver<Report> {
        self.reports.subscribe()
    }

    /// Wakes the ledger queue's submitter.
    pub fn nudge_ledger_queue(&self) {
        let _ = self.reports.send(Report::LedgerQueued);
    }

    pub async fn open(&self, req: OpenRequest) -> Result<ChannelId, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.send(Control::Open(req, tx)).await?;
        Ok(rx.await.map_err(|_| EngineError::Stopped)??)
    }

    pub async fn command(&self, cmd: Command) -> Result<(), EngineError> {
        let (tx, rx) = oneshot::channel();
        self.send(Control::Command(cmd, tx)).await?;
        Ok(rx.await.map_err(|_| EngineError::Stopped)??)
    }

    pub async fn reading(
        &self,
        channel: ChannelId,
        reading: IntervalReading,
    ) -> Result<(), EngineError> {
        self.send(Control::Readings(vec![(channel, reading)])).await
    }

    /// The readings of many channels at once (an interval's, say): the engine signs the
    /// proposals they make together, on every core.
    pub async fn readings(
        &self,
        readings: Vec<(ChannelId, IntervalReading)>,
    ) -> Result<(), EngineError> {
        self.send(Control::Readings(readings)).await
    }

    pub async fn ledger_event(
        &self,
        channel: ChannelId,
        event: LedgerEvent,
    ) -> Result<(), EngineError> {
        self.send(Control::Ledger(channel, event)).await
    }

    pub async fn channels(&self) -> Result<Vec<ChannelView>, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.send(Control::Channels(tx)).await?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// One channel, if this gateway has it.
    pub async fn channel(&self, id: ChannelId) -> Result<Option<ChannelView>, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.send(Control::Channel(id, tx)).await?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// The last `n` settled intervals of a channel, newest first.
    pub async fn recent_trades(
        &self,
        channel: ChannelId,
        n: usize,
    ) -> Result<Vec<crate::store::TradeRow>, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.send(Control::Trades(channel, n, tx)).await?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// Sends a gateway-wide message (a meter announcement) to a connected neighbour.
    pub async fn send_message(&self, peer: NodeId, message: Message) -> Result<(), EngineError> {
        self.send(Control::Send(peer, message)).await
    }

    /// Stops the engine: what was asked before is handled, its writes made, the history
    /// written and the connections closed. Returns once it has stopped.
    pub async fn stop(&self) -> Result<(), EngineError> {
        let (tx, rx) = oneshot::channel();
        self.send(Control::Stop(tx)).await?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// Dials `peer` in the background (the engine keeps one connection per peer; see
    /// [`EngineHandle::dial`] to learn how it went).
    pub async fn connect(&self, peer: PeerAddr) -> Result<(), EngineError> {
        self.send(Control::Connect(peer, None)).await
    }

    /// Dials `peer` and waits until the connection is up (authenticated, its stream open) or
    /// the attempt failed, and why.
    pub async fn dial(&self, peer: PeerAddr) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.send(Control::Connect(peer, Some(tx)))
            .await
            .map_err(|e| e.to_string())?;
        rx.await.map_err(|_| EngineError::Stopped.to_string())?
    }

    /// The peers connected now.
    pub async fn connected_peers(&self) -> Result<std::collections::HashSet<NodeId>, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.send(Control::Connected(tx)).await?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// Neighbours' channel proposals waiting for the owner's `accept` or `reject`.
    pub async fn offers(&self) -> Result<Vec<gridchan_channel::Offer>, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.send(Control::Offers(tx)).await?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// Tells the engine our tokens on the ledger outside channels (the accept policy takes its
    /// share of the balance of it).
    pub async fn balance(&self, balance: gridchan_channel::Amount) -> Result<(), EngineError> {
        self.send(Control::Balance(balance)).await
    }

    async fn send(&self, c: Control) -> Result<(), EngineError> {
        self.control.send(c).await.map_err(|_| EngineError::Stopped)
    }
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

/// A signature to check or to make ahead, for [`Engine::jobs`].
enum Job {
    Recover([u8; 32], Signature),
    Sign([u8; 32]),
}

enum Done {
    Recovered(RecoveredOne),
    Signed(PresignedOne),
}

/// A piece's signatures: made already, or being made on the pool.
enum Work {
    Waiting(Vec<Job>),
    Done(Vec<Done>),
    Running(oneshot::Receiver<Vec<Done>>),
}

impl Work {
    /// The piece's signatures, if they are done (taken: call once).
    fn ready(&mut self) -> Option<Vec<Done>> {
        match self {
            Work::Done(done) => Some(std::mem::take(done)),
            Work::Running(rx) => rx.try_recv().ok(),
            Work::Waiting(_) => None,
        }
    }
}

/// The inputs of a burst handled as one piece (see [`Engine::run`]). With input going to the
/// pool as it arrives, the size hardly matters: in 5 interleaved runs each of `bench gateway
/// --channels 1000`, pieces of 128, 256, 384 and 1,000 gave medians of 0.70, 0.69, 0.69 and
/// 0.69 of the signing limit.
const PIECE_INPUTS: usize = 384;

/// Splits a burst into pieces of about `chunk` inputs each (an interval's readings split too),
/// in order.
fn pieces(taken: Vec<Taken>, chunk: usize) -> Vec<Vec<Taken>> {
    let inputs = |t: &Taken| match t {
        Taken::Control(Control::Readings(readings)) => readings.len(),
        _ => 1,
    };
    // A lone update, or any burst that fits: one piece, nothing moved.
    if taken.iter().map(inputs).sum::<usize>() <= chunk {
        return vec![taken];
    }
    let mut out: Vec<Vec<Taken>> = vec![Vec::new()];
    let mut size = 0;
    for t in taken {
        match t {
            Taken::Control(Control::Readings(readings)) if readings.len() > 1 => {
                let mut rest = readings;
                while !rest.is_empty() {
                    if size >= chunk {
                        out.push(Vec::new());
                        size = 0;
                    }
                    let take = rest.len().min(chunk - size);
                    let tail = rest.split_off(take);
                    size += rest.len();
                    out.last_mut()
                        .expect("one")
                        .push(Taken::Control(Control::Readings(rest)));
                    rest = tail;
                }
            }
            t => {
                if size >= chunk {
                    out.push(Vec::new());
                    size = 0;
                }
                size += 1;
                out.last_mut().expect("one").push(t);
            }
        }
    }
    out
}

/// The process's pool for the signatures of bursts, one thread per core, shared by every engine
/// of the process (named, so that profiles and `top` tell its threads apart).
fn crypto_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("gridchan-crypto-{i}"))
            .build()
            .expect("the worker pool starts")
    })
}

impl Job {
    fn run(&self, signer: &Signer) -> Done {
        match self {
            Job::Recover(digest, sig) => Done::Recovered(Recovered::one(digest, sig)),
            Job::Sign(digest) => Done::Signed(signer.presign_one(digest)),
        }
    }
}

impl Engine {
    async fn run(
        mut self,
        mut control: mpsc::Receiver<Control>,
        mut inbound: mpsc::Receiver<Inbound>,
        mut written: mpsc::UnboundedReceiver<Written>,
    ) -> Option<oneshot::Sender<()>> {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut taken: Vec<Taken> = Vec::new();
        // Pieces of input whose signatures the pool is checking and making, in arrival order.
        let mut flight: std::collections::VecDeque<(Vec<Taken>, Work)> = Default::default();
        loop {
            let front_running = matches!(flight.front(), Some((_, Work::Running(_))));
            tokio::select! {
                c = control.recv() => match c {
                    Some(c) => taken.push(Taken::Control(c)),
                    None => return self.shut_down().await,
                },
                i = inbound.recv() => match i {
                    Some(i) => taken.push(Taken::Inbound(i)),
                    None => return self.shut_down().await,
                },
                Some(w) = written.recv() => self.on_written(w),
                done = async {
                    match flight.front_mut() {
                        Some((_, Work::Running(rx))) => rx.await,
                        _ => unreachable!("awaited only while the front piece runs"),
                    }
                }, if front_running => {
                    let done = done.expect("the worker pool runs every job it is given");
                    flight.front_mut().expect("a front piece").1 = Work::Done(done);
                }
                _ = tick.tick() => {
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
                    self.node.handle(Input::Tick { now_ms });
                    self.flush_trades();
                    self.retry_frozen();
                    self.refresh_priority();
                }
            }
            // Take whatever else is already waiting: the persists of a whole burst then go to
            // the writer as one batch (one transaction, one fsync).
            while let Ok(w) = written.try_recv() {
                self.on_written(w);
            }
            for _ in 0..MAX_BATCH_INPUTS {
                match inbound.try_recv() {
                    Ok(i) => taken.push(Taken::Inbound(i)),
                    Err(_) => match control.try_recv() {
                        Ok(c) => taken.push(Taken::Control(c)),
                        Err(_) => break,
                    },
                }
            }
            // New input goes to the pool at once, in pieces: the pool checks and makes their
            // signatures while this thread goes on serving the connections and hands earlier
            // pieces to the core and the writer.
            for piece in pieces(std::mem::take(&mut taken), PIECE_INPUTS) {
                if piece.is_empty() {
                    continue;
                }
                let jobs = self.jobs(&piece);
                let work = if flight.iter().any(|(_, w)| matches!(w, Work::Running(_))) {
                    Work::Waiting(jobs)
                } else {
                    self.start(jobs)
                };
                flight.push_back((piece, work));
            }
            // Pieces are handled in order, each once its signatures are done: the core then
            // finds each result instead of computing it on this one thread.
            while let Some(done) = flight.front_mut().and_then(|(_, work)| work.ready()) {
                let (piece, _) = flight.pop_front().expect("a front piece");
                // One piece at a time on the pool, so that pieces finish in order.
                if let Some((_, work)) = flight
                    .iter_mut()
                    .find(|(_, w)| matches!(w, Work::Waiting(_)))
                {
                    if let Work::Waiting(jobs) = std::mem::replace(work, Work::Done(Vec::new())) {
                        *work = self.start(jobs);
                    }
                }
                let ahead = self.precomputed(done);
                for t in piece {
                    match t {
                        Taken::Control(c) => self.on_control(c, &ahead),
                        Taken::Inbound(i) => self.on_inbound(i, &ahead),
                    }
                }
            }
            // The outputs of the pieces handled, of a write's acknowledgement or of the tick.
            // Nothing else waits: write here, at once, instead of paying two thread hops on a
            // lone update's path. In a burst, the writer takes the batch and the engine goes on
            // with the next inputs meanwhile.
            let idle = flight.is_empty() && inbound.is_empty() && control.is_empty();
            self.drain(idle);
            if self.stopping.is_some() {
                return self.shut_down().await;
            }
        }
    }

    /// A batch of records is durable (its outputs may go), or could not be written.
    fn on_written(&mut self, w: Written) {
        let through = match &w {
            Written::Durable(last) => Some(*last),
            Written::Failed { updates, .. } => updates.last().copied(),
        };
        if through >= self.writing {
            self.writing = None;
        }
        match w {
            Written::Durable(last) => self.node.handle(Input::Persisted(last)),
            Written::Failed { updates, reason } => {
                let _ = self.reports.send(Report::StoreFailed(reason));
                for update in updates {
                    self.node.handle(Input::PersistFailed(update));
                }
            }
        }
    }

    /// The costly parts of a piece of a burst, for the process's worker pool: recovering the
    /// signers of the proposals and countersignatures, making our countersignatures of the
    /// proposals (used only if the core decides to countersign), and signing the proposals an
    /// interval's readings will make. One pool for every engine of the process: its threads
    /// share the cores without making stragglers of each other.
    fn jobs(&self, taken: &[Taken]) -> Vec<Job> {
        let mut jobs = Vec::new();
        for t in taken {
            if let Taken::Control(Control::Readings(readings)) = t {
                // The proposals these readings will make: signed ahead too.
                for (channel, reading) in readings {
                    if let Some(d) = self.node.preview_proposal(channel, reading) {
                        jobs.push(Job::Sign(d));
                    }
                }
                continue;
            }
            let Taken::Inbound(Inbound::Message(_, message)) = t else {
                continue;
            };
            match message {
                Ok(Message::Propose(p)) => {
                    let digest = p.state.digest();
                    jobs.push(Job::Recover(digest, p.sig));
                    jobs.push(Job::Sign(digest));
                }
                Ok(Message::Countersign(c)) => {
                    if let Some(d) = self.node.proposal_digest(&c.channel_id) {
                        jobs.push(Job::Recover(d, c.sig));
                    }
                }
                _ => {}
            }
        }
        jobs
    }

    /// Starts `jobs` on the pool (a handful are done here at once).
    fn start(&self, jobs: Vec<Job>) -> Work {
        use rayon::prelude::*;
        if jobs.len() < MIN_PARALLEL_JOBS {
            let signer = self.node.signer();
            return Work::Done(jobs.iter().map(|job| job.run(signer)).collect());
        }
        let (tx, rx) = oneshot::channel();
        let signer = self.pool_signer.clone();
        crypto_pool().spawn(move || {
            let done = jobs
                .par_iter()
                .with_min_len(4)
                .map(|job| job.run(&signer))
                .collect();
            let _ = tx.send(done);
        });
        Work::Running(rx)
    }

    /// The work done ahead that the core consults for a piece, once its signatures are done.
    fn precomputed(&self, done: Vec<Done>) -> Precomputed {
        let signer = self.node.signer();
        let mut recovered = Vec::new();
        let mut signed = Vec::new();
        for d in done {
            match d {
                Done::Recovered(r) => recovered.push(r),
                Done::Signed(s) => signed.push(s),
            }
        }
        Precomputed::new(
            Recovered::collect(recovered),
            Presigned::collect(signer, signed),
        )
    }

    fn on_control(&mut self, c: Control, ahead: &Precomputed) {
        match c {
            Control::Open(req, reply) => {
                let connected = self.peers.contains_key(&req.peer);
                let _ = reply.send(self.node.open(req, connected));
            }
            Control::Command(cmd, reply) => {
                let _ = reply.send(self.node.command(cmd));
            }
            Control::Readings(readings) => {
                for (channel, reading) in readings {
                    self.node
                        .handle_with(Input::Reading { channel, reading }, ahead)
                }
            }
            Control::Ledger(channel, event) => self.node.handle(Input::Ledger { channel, event }),
            Control::Channels(reply) => {
                let views: Vec<ChannelView> = self.node.channels().collect();
                let _ = reply.send(self.durable_views(views));
            }
            Control::Channel(id, reply) => {
                let view = self.node.channel(&id);
                let _ = reply.send(self.durable_views(view.into_iter().collect()).pop());
            }
            Control::Trades(channel, n, reply) => {
                self.flush_trades();
                self.writer.recent_trades(channel, n, reply);
            }
            Control::Connect(peer, outcome) => {
                if self.dialled.insert(peer.node) {
                    self.refresh_priority();
                }
                let inbound = self.inbound_tx.clone();
                tokio::spawn(links::dial(self.endpoint.clone(), peer, inbound, outcome));
            }
            Control::Connected(reply) => {
                let _ = reply.send(self.peers.keys().copied().collect());
            }
            Control::Offers(reply) => {
                let _ = reply.send(self.node.offers().cloned().collect());
            }
            Control::Balance(balance) => self.node.handle(Input::Balance(balance)),
            Control::Send(peer, message) => {
                if let Some(p) = self.peers.get(&peer) {
                    if p.writer.try_send(message.encode()).is_err() {
                        self.drop_peer(peer, "send queue full");
                    }
                }
            }
            Control::Stop(reply) => self.stopping = Some(reply),
        }
    }

    /// What a person is shown of `views`: a frozen channel's state as the store holds it (the
    /// core's may be one that was signed in memory but never written, and is gone after a
    /// restart).
    fn durable_views(&self, mut views: Vec<ChannelView>) -> Vec<ChannelView> {
        if !views.iter().any(|v| v.frozen) {
            return views;
        }
        use gridchan_channel::ChannelStore;
        let stored: HashMap<ChannelId, ChannelRecord> = match self.store.load() {
            Ok(records) => records.into_iter().map(|r| (r.id, r)).collect(),
            Err(e) => {
                tracing::warn!("cannot read the store for a frozen channel's state: {e}");
                return views;
            }
        };
        for v in views.iter_mut().filter(|v| v.frozen) {
            v.current = stored.get(&v.id).and_then(|r| r.current.clone());
        }
        views
    }

    /// Tells the endpoint whose connections it always admits: the neighbours we have channels
    /// with and those we dialled.
    fn refresh_priority(&self) {
        let channel_peers = self.node.channels().map(|c| *c.params.node(c.me.other()));
        self.endpoint
            .set_priority(channel_peers.chain(self.dialled.iter().copied()));
    }

    fn on_inbound(&mut self, i: Inbound, ahead: &Precomputed) {
        match i {
            Inbound::Up(conn, writer) => {
                let peer = conn.peer;
                self.generation += 1;
                if let Some(old) = self.peers.insert(
                    peer,
                    Peer {
                        writer,
                        conn,
                        generation: self.generation,
                    },
                ) {
                    old.conn.close("replaced by a newer connection");
                    self.node.handle(Input::Disconnected(peer));
                }
                let _ = self.reports.send(Report::Peer {
                    peer,
                    connected: true,
                });
                let generation = self.generation;
                let inbound = self.inbound_tx.clone();
                let watch = self.peers[&peer].conn.clone();
                tokio::spawn(async move {
                    let reason = watch.closed().await;
                    let _ = inbound.send(Inbound::Down(peer, generation, reason)).await;
                });
                self.node.handle(Input::Connected(peer));
            }
            Inbound::Message(peer, message) => {
                match message {
                    // Gateway-wide: the daemon's metering, not the core.
                    Ok(Message::Announce(announce)) => {
                        let _ = self.reports.send(Report::Announce { peer, announce });
                    }
                    Ok(message) => self.node.handle_with(
                        Input::Message {
                            from: peer,
                            message,
                        },
                        ahead,
                    ),
                    Err(e) => self.drop_peer(peer, &e.to_string()),
                }
            }
            Inbound::Down(peer, generation, reason) => {
                if self
                    .peers
                    .get(&peer)
                    .is_some_and(|p| p.generation == generation)
                {
                    tracing::warn!("{peer} disconnected: {reason}");
                    self.peers.remove(&peer);
                    self.node.handle(Input::Disconnected(peer));
                    let _ = self.reports.send(Report::Peer {
                        peer,
                        connected: false,
                    });
                }
            }
        }
    }

    /// Disconnects a peer whose bytes broke the transport or framing rules, saying why.
    fn drop_peer(&mut self, peer: NodeId, reason: &str) {
        let _ = self.reports.send(Report::Event(Event::PeerMisbehaved {
            peer,
            reason: reason.to_string(),
        }));
        self.close_peer(peer, reason);
    }

    /// Closes the connection to `peer` (the core already reported why, if it was the core).
    fn close_peer(&mut self, peer: NodeId, reason: &str) {
        tracing::warn!("disconnecting {peer}: {reason}");
        if let Some(p) = self.peers.remove(&peer) {
            p.conn.close(reason);
            self.node.handle(Input::Disconnected(peer));
            let _ = self.reports.send(Report::Peer {
                peer,
                connected: false,
            });
        }
    }

    /// Writes frozen channels again, each with a growing delay (1 s, 2 s, ... 1 min): when the
    /// disk is back, the channel thaws and trades again.
    fn retry_frozen(&mut self) {
        let now = std::time::Instant::now();
        let due: Vec<ChannelId> = self
            .frozen
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if !self.node.channel(&id).is_some_and(|v| v.frozen) {
                self.frozen.remove(&id);
                continue;
            }
            tracing::info!(
                "channel {}: writing it again after a store failure",
                id.short()
            );
            let _ = self.node.command(Command::RetryPersist(id));
            if let Some((at, delay)) = self.frozen.get_mut(&id) {
                *delay = (*delay * 2).min(Duration::from_secs(60));
                *at = now + *delay;
            }
        }
    }

    /// Asked to stop, or every handle is gone: write what is left, close the endpoint (its port
    /// is free again for a restart) and tell the peers.
    ///
    /// Input that arrived after a stop is not handled, and what waited for the last writes is
    /// not sent: as after a crash, nothing signed is lost, and the peers catch up when they
    /// reconnect.
    ///
    /// Returns the answer owed to a `stop`, for after the runtime is gone.
    async fn shut_down(&mut self) -> Option<oneshot::Sender<()>> {
        self.flush_trades();
        self.writer.finish();
        self.endpoint.shut_down(Duration::from_secs(1)).await;
        self.stopping.take()
    }

    /// Hands the interval history still waiting for a batch to the writer.
    fn flush_trades(&mut self) {
        self.writer.write_trades(std::mem::take(&mut self.trades));
    }

    /// Carries out every output the core has ready and writes the records it asked for as one
    /// batch: here when `inline`, the batch is small and no earlier batch is still being written
    /// (so writes stay in order), else on the writer's thread. What waits for them goes once
    /// they are durable.
    fn drain(&mut self, inline: bool) {
        loop {
            let batch = self.carry_out();
            if batch.is_empty() {
                return;
            }
            if !inline || batch.len() > MAX_INLINE_RECORDS || self.writing.is_some() {
                self.writing = batch.last().map(|(u, _)| *u);
                self.writer.write(batch);
                return;
            }
            let last = batch.last().map(|(u, _)| *u);
            let records: Vec<&ChannelRecord> = batch.iter().map(|(_, r)| r).collect();
            match self.store.write_batch(&records, &[]) {
                Ok(()) => {
                    if let Some(last) = last {
                        self.node.handle(Input::Persisted(last));
                    }
                }
                Err(e) => {
                    let _ = self.reports.send(Report::StoreFailed(e.to_string()));
                    for (update, _) in &batch {
                        self.node.handle(Input::PersistFailed(*update));
                    }
                }
            }
        }
    }

    /// Carries out every output the core has ready but the persists, which it returns.
    fn carry_out(&mut self) -> Vec<(UpdateId, ChannelRecord)> {
        let mut batch: Vec<(UpdateId, ChannelRecord)> = Vec::new();
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Persist { update, record } => batch.push((update, *record)),
                Output::Send { to, message } => {
                    if let Some(p) = self.peers.get(&to) {
                        if p.writer.try_send(message.encode()).is_err() {
                            // A peer that does not read its messages loses its connection.
                            self.drop_peer(to, "send queue full");
                        }
                    }
                }
                Output::Disconnect { peer, reason } => self.close_peer(peer, &reason),
                Output::Ledger(r) => {
                    // Durable before anyone acts on it: the submitter retries from the
                    // queue until the ledger includes or refuses it.
                    let tx = gridchan_chain::TxKind::from(&r);
                    if let Err(e) = self.store.enqueue_ledger(Some(&r.channel()), &tx) {
                        tracing::error!("ledger request not queued: {e}");
                        let _ = self.reports.send(Report::StoreFailed(e.to_string()));
                    }
                    let _ = self.reports.send(Report::Ledger(r));
                }
                Output::Watchtower(s) => {
                    let _ = self.reports.send(Report::Watchtower(s));
                }
                Output::Event(e) => {
                    if let Event::Frozen { channel } = &e {
                        let delay = Duration::from_secs(1);
                        self.frozen
                            .entry(*channel)
                            .or_insert((std::time::Instant::now() + delay, delay));
                    }
                    if let Event::Settled {
                        channel,
                        version,
                        trade,
                    } = &e
                    {
                        self.trades.push((*channel, *version, *trade));
                        if self.trades.len() >= MAX_PENDING_TRADES {
                            self.flush_trades();
                        }
                    }
                    crate::event_log::log(&self.node, &e);
                    let _ = self.reports.send(Report::Event(e));
                }
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(n: usize) -> Taken {
        let reading = IntervalReading::selling(
            gridchan_channel::IntervalIndex(1),
            gridchan_channel::WattHours(1),
        );
        Taken::Control(Control::Readings(vec![(ChannelId([0; 32]), reading); n]))
    }

    /// What a piece holds, in order: the number of readings of each input (0 for others).
    fn shape(piece: &[Taken]) -> Vec<usize> {
        piece
            .iter()
            .map(|t| match t {
                Taken::Control(Control::Readings(r)) => r.len(),
                _ => 0,
            })
            .collect()
    }

    fn shapes(burst: Vec<Taken>) -> Vec<Vec<usize>> {
        pieces(burst, 384).iter().map(|p| shape(p)).collect()
    }

    #[test]
    fn a_burst_is_cut_into_pieces_in_order_and_an_intervals_readings_with_it() {
        let (reply, _) = oneshot::channel();
        let burst = vec![
            readings(1_000),
            Taken::Control(Control::Channels(reply)),
            readings(10),
        ];
        assert_eq!(shapes(burst), vec![vec![384], vec![384], vec![232, 0, 10]]);
        // A lone input is one piece.
        assert_eq!(shapes(vec![readings(1)]), vec![vec![1]]);
    }
}
