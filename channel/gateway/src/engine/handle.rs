//! The handle the daemon, the control socket and the tests drive an engine with: requests in
//! one queue, answered on oneshots.

use gridchan_channel::{
    ChannelId, ChannelView, Command, CommandError, IntervalReading, LedgerEvent, Message, NodeId,
    OpenRequest,
};
use gridchan_transport::PeerAddr;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{EngineError, Report};

pub(super) enum Control {
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
        oneshot::Sender<Vec<(gridchan_channel::Version, gridchan_channel::Trade)>>,
    ),
    /// Dial a peer; the answer (if asked for) says whether the connection came up.
    Connect(
        PeerAddr,
        Option<oneshot::Sender<Result<(), crate::error::GatewayError>>>,
    ),
    /// The peers connected now.
    Connected(oneshot::Sender<std::collections::HashSet<NodeId>>),
    /// Neighbours' proposals waiting for the owner's answer.
    Offers(oneshot::Sender<Vec<gridchan_channel::Offer>>),
    /// Our tokens on the ledger outside channels, as last read.
    Balance(gridchan_channel::Amount),
    /// A channel's newest version enough watchtowers acknowledged.
    TowersAcked(ChannelId, gridchan_channel::Version),
    Send(NodeId, Message),
    /// The meter's reading of an interval; its round stops waiting for the neighbours then.
    Meter(
        gridchan_channel::IntervalIndex,
        gridchan_channel::metering::MeterReading,
        Option<gridchan_channel::reading::SignedReading>,
        tokio::time::Instant,
    ),
    /// The neighbours whose readings must be signed, by their meter keys, and the interval's
    /// length those readings are of.
    RequireMeters(std::collections::HashMap<NodeId, NodeId>, u32),
    /// The terms a market node sent when we connected to it.
    MarketTerms(
        NodeId,
        oneshot::Sender<Option<gridchan_channel::market::MarketTerms>>,
    ),
    /// A misbehaviour of this market node, staged for a demo or a test.
    Stage(super::Stage),
    /// A consumer of the engine's outputs, with its own queue.
    Watch(super::queues::Watch),
    /// Finish: everything taken before this is handled, the writes already asked for are made,
    /// the history is written, and the peers are told the connections close.
    Stop(oneshot::Sender<()>),
}

/// A handle to a running engine.
#[derive(Clone)]
pub struct EngineHandle {
    pub(super) control: mpsc::Sender<Control>,
    pub(super) reports: broadcast::Sender<Report>,
    pub node: NodeId,
    pub address: PeerAddr,
    /// The queue the engine puts the core's ledger transactions in (the daemon's submitter
    /// sends them; a withdrawal is pushed there too).
    pub ledger_queue: std::sync::Arc<crate::ledger_queue::LedgerQueue>,
}

impl EngineHandle {
    pub fn reports(&self) -> broadcast::Receiver<Report> {
        self.reports.subscribe()
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

    /// Enough watchtowers acknowledged `version` of `channel` (`[watchtowers] min_acks`).
    pub async fn towers_acked(
        &self,
        channel: ChannelId,
        version: gridchan_channel::Version,
    ) -> Result<(), EngineError> {
        self.send(Control::TowersAcked(channel, version)).await
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
        let settled = rx.await.map_err(|_| EngineError::Stopped)?;
        Ok(settled
            .iter()
            .map(|(version, trade)| crate::store::TradeRow::new(*version, trade))
            .collect())
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
    pub async fn dial(&self, peer: PeerAddr) -> Result<(), crate::error::GatewayError> {
        let (tx, rx) = oneshot::channel();
        self.send(Control::Connect(peer, Some(tx))).await?;
        rx.await.map_err(|_| crate::error::GatewayError::Stopped)?
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

    /// The newest state of every channel from now on, for a watchtower pusher (read the
    /// channels after this for what came before: nothing falls between).
    pub async fn watch_states(&self) -> Result<std::sync::Arc<super::StateQueue>, EngineError> {
        let queue = std::sync::Arc::<super::StateQueue>::default();
        self.send(Control::Watch(super::queues::Watch::States(queue.clone())))
            .await?;
        Ok(queue)
    }

    /// Neighbours connecting and going, starting with those connected now, and word when a
    /// channel begins or ends: for the job that keeps the neighbours connected.
    pub async fn watch_peers(
        &self,
    ) -> Result<mpsc::UnboundedReceiver<super::PeerChange>, EngineError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.send(Control::Watch(super::queues::Watch::Peers(tx)))
            .await?;
        Ok(rx)
    }

    /// The meter's reading of `interval`, as the interval ends: the engine announces it to
    /// the neighbours trading now, waits at most `wait` for theirs, and gives each channel its
    /// reading.
    pub async fn meter(
        &self,
        interval: gridchan_channel::IntervalIndex,
        own: gridchan_channel::metering::MeterReading,
        wait: std::time::Duration,
    ) -> Result<(), EngineError> {
        self.meter_signed(interval, own, None, wait).await
    }

    /// [`EngineHandle::meter`], with the meter's own `signed` reading of the interval, which
    /// our announcements carry (`specs/readings.md`).
    pub async fn meter_signed(
        &self,
        interval: gridchan_channel::IntervalIndex,
        own: gridchan_channel::metering::MeterReading,
        signed: Option<gridchan_channel::reading::SignedReading>,
        wait: std::time::Duration,
    ) -> Result<(), EngineError> {
        let deadline = tokio::time::Instant::now() + wait;
        self.send(Control::Meter(interval, own, signed, deadline))
            .await
    }

    /// From now on, each neighbour of `meters` (neighbour to meter key) counts in a metering
    /// round only with its meter's signed reading of the interval (of `interval_seconds`).
    pub async fn require_meters(
        &self,
        meters: std::collections::HashMap<NodeId, NodeId>,
        interval_seconds: u32,
    ) -> Result<(), EngineError> {
        self.send(Control::RequireMeters(meters, interval_seconds))
            .await
    }

    /// The terms `market_node` sent when we connected to it, once they arrived.
    pub async fn market_terms(
        &self,
        market_node: NodeId,
    ) -> Result<Option<gridchan_channel::market::MarketTerms>, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.send(Control::MarketTerms(market_node, tx)).await?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// Stages a misbehaviour of this market node (the next book goes out wrong), for a demo
    /// that shows the members refusing it, and for tests.
    pub async fn stage(&self, stage: super::Stage) -> Result<(), EngineError> {
        self.send(Control::Stage(stage)).await
    }

    async fn send(&self, c: Control) -> Result<(), EngineError> {
        self.control.send(c).await.map_err(|_| EngineError::Stopped)
    }
}
