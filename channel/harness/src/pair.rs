//! Two nodes, one channel, a lossy link and a referee.

use std::collections::{BTreeMap, HashMap, VecDeque};

use gridchan_channel::{
    Amount, ChannelId, ChannelStore, ChannelView, Event, Input, IntervalIndex, IntervalReading,
    LedgerEvent, LedgerRequest, Message, MeterTolerance, NodeId, OpenRequest, Output, Phase,
    Policy, Precomputed, PricePerKwh, SignedState, Signer, Tariff, Version, WattHours,
};

use crate::faulty::FaultyStore;

/// One of the two nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

/// How the pair's channel is set up.
#[derive(Clone, Debug)]
pub struct PairConfig {
    pub deposit_a: Amount,
    pub deposit_b: Amount,
    pub tariff: Tariff,
    pub tolerance: MeterTolerance,
    pub interval_seconds: u32,
    pub opened_at: IntervalIndex,
    pub policy: Policy,
    /// Report both deposits as funded right after opening.
    pub funded: bool,
}

impl Default for PairConfig {
    fn default() -> PairConfig {
        PairConfig {
            deposit_a: Amount(50_000_000),
            deposit_b: Amount(50_000_000),
            tariff: Tariff::Flat(PricePerKwh(200_000)),
            tolerance: MeterTolerance {
                absolute_wh: 5,
                permille: 20,
            },
            interval_seconds: 900,
            opened_at: IntervalIndex(1_930_000),
            policy: Policy {
                force_close_after_ms: None,
                ..Policy::accepting_anyone()
            },
            funded: true,
        }
    }
}

/// One interval's energy between the two, as each meter saw it.
#[derive(Clone, Copy, Debug)]
pub struct Trade {
    pub interval: IntervalIndex,
    pub seller: Side,
    /// What the seller's meter says it delivered.
    pub energy: WattHours,
    /// What the buyer's meter says it took.
    pub buyer_reading: WattHours,
    /// Everything the buyer's meter imported.
    pub metered_import: WattHours,
}

impl Trade {
    /// Both meters agree on `energy`.
    pub fn agreed(interval: IntervalIndex, seller: Side, energy: WattHours) -> Trade {
        Trade {
            interval,
            seller,
            energy,
            buyer_reading: energy,
            metered_import: energy,
        }
    }
}

struct Peer {
    secret: [u8; 32],
    node: Option<Node>,
    store: FaultyStore,
    /// The host's meter history, re-fed after a restart.
    readings: BTreeMap<IntervalIndex, IntervalReading>,
    ledger: Vec<LedgerRequest>,
    events: Vec<Event>,
    tower: Vec<SignedState>,
    /// The highest version whose completing signature this node released.
    released: Version,
    /// The highest current version seen in memory since the last restart.
    seen: Version,
}

use gridchan_channel::Node;

/// The in-memory link between the two nodes: one queue of encoded frames per direction.
#[derive(Default)]
pub struct Link {
    pub up: bool,
    queues: [VecDeque<Vec<u8>>; 2],
}

/// Two nodes with one channel between them.
pub struct Pair {
    peers: [Peer; 2],
    ids: [NodeId; 2],
    pub link: Link,
    pub channel: ChannelId,
    pub now_ms: u64,
    /// Reconnect automatically whenever the link is down and both nodes run.
    pub auto_reconnect: bool,
    policy: Policy,
    signatures: HashMap<(NodeId, Version), [u8; 32]>,
    violations: Vec<String>,
    /// Frames that did not decode (each cost the sender its connection).
    pub rejected_frames: u64,
    pub steps: u64,
    /// Check every signature and state as it happens (on by default; benchmarks turn it off,
    /// since the checks verify signatures again).
    pub referee: bool,
    /// Times the link came up.
    pub reconnects: u64,
}

impl Pair {
    /// A pair on the default configuration that has settled two intervals (A sold in the
    /// first, B in the second: version 2) and does not reconnect by itself: the starting point
    /// of the rejection and hostile-peer tests.
    pub fn settled() -> Pair {
        let iv = |n| IntervalIndex(PairConfig::default().opened_at.0 + n);
        let mut pair = Pair::new(PairConfig::default());
        pair.trade(Trade::agreed(iv(1), Side::A, WattHours(500)));
        pair.drive();
        pair.trade(Trade::agreed(iv(2), Side::B, WattHours(200)));
        pair.drive();
        pair.auto_reconnect = false;
        assert_eq!(pair.current(Side::B).version(), Version(2));
        pair
    }

    /// Two nodes, connected, with a funded, open channel from A to B.
    pub fn new(config: PairConfig) -> Pair {
        let mut secrets = [[0u8; 32]; 2];
        secrets[0][31] = 0xa1;
        secrets[1][31] = 0xb2;
        let mk = |secret: [u8; 32]| Peer {
            secret,
            node: None,
            store: FaultyStore::default(),
            readings: BTreeMap::new(),
            ledger: Vec::new(),
            events: Vec::new(),
            tower: Vec::new(),
            released: Version(0),
            seen: Version(0),
        };
        let mut peers = [mk(secrets[0]), mk(secrets[1])];
        let mut ids = [Signer::new(&secrets[0], &[1; 32]).expect("fixed key").id(); 2];
        for (i, peer) in peers.iter_mut().enumerate() {
            let signer = Signer::new(&peer.secret, &[i as u8 + 1; 32]).expect("fixed key");
            ids[i] = signer.id();
            peer.node = Some(Node::new(signer, config.policy.clone()));
        }
        let mut pair = Pair {
            peers,
            ids,
            link: Link::default(),
            channel: ChannelId([0; 32]),
            now_ms: 1_000,
            auto_reconnect: true,
            policy: config.policy.clone(),
            signatures: HashMap::new(),
            violations: Vec::new(),
            rejected_frames: 0,
            steps: 0,
            referee: true,
            reconnects: 0,
        };
        pair.advance(0);
        pair.reconnect();
        let request = OpenRequest {
            peer: ids[1],
            deposit: config.deposit_a,
            peer_deposit: config.deposit_b,
            tariff: config.tariff,
            challenge_window_blocks: 20,
            funding_window_blocks: 20,
            interval_seconds: config.interval_seconds,
            tolerance: config.tolerance,
            opened_at: config.opened_at,
            nonce: [7; 32],
            evidence: Default::default(),
        };
        pair.channel = pair
            .node_mut(Side::A)
            .open(request, true)
            .expect("valid parameters");
        pair.drive();
        if config.funded {
            pair.ledger_event(LedgerEvent::Funded);
            pair.drive();
            assert_eq!(pair.view(Side::A).phase, Phase::Open, "channel opens");
            assert_eq!(pair.view(Side::B).phase, Phase::Open, "channel opens");
        }
        pair
    }

    /// A signer with `side`'s key, for forging messages in tests.
    pub fn signer(&self, side: Side) -> Signer {
        Signer::new(&self.peer(side).secret, &[0; 32]).expect("fixed key")
    }

    pub fn id(&self, side: Side) -> NodeId {
        self.ids[side.index()]
    }

    fn peer(&self, side: Side) -> &Peer {
        &self.peers[side.index()]
    }

    fn peer_mut(&mut self, side: Side) -> &mut Peer {
        &mut self.peers[side.index()]
    }

    /// The running node of `side`. Panics while it is crashed.
    pub fn node_mut(&mut self, side: Side) -> &mut Node {
        self.peer_mut(side).node.as_mut().expect("node is running")
    }

    pub fn is_running(&self, side: Side) -> bool {
        self.peer(side).node.is_some()
    }

    pub fn view(&self, side: Side) -> ChannelView {
        self.peer(side)
            .node
            .as_ref()
            .and_then(|n| n.channel(&self.channel))
            .expect("running node has the channel")
    }

    /// The newest state `side` holds signed by both.
    pub fn current(&self, side: Side) -> SignedState {
        self.view(side).current.expect("channel is agreed")
    }

    pub fn store(&mut self, side: Side) -> &mut FaultyStore {
        &mut self.peer_mut(side).store
    }

    pub fn ledger_requests(&self, side: Side) -> &[LedgerRequest] {
        &self.peer(side).ledger
    }

    pub fn events(&self, side: Side) -> &[Event] {
        &self.peer(side).events
    }

    pub fn watchtower_states(&self, side: Side) -> &[SignedState] {
        &self.peer(side).tower
    }

    /// Breaches of persist-before-sign, of one-state-per-version, or of monotonic versions.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Feeds both meters' readings of one interval.
    pub fn trade(&mut self, trade: Trade) {
        let seller = IntervalReading::selling(trade.interval, trade.energy);
        let buyer = IntervalReading {
            interval: trade.interval,
            delivered: WattHours(0),
            received: trade.buyer_reading,
            metered_import: trade.metered_import,
        };
        self.reading(trade.seller, seller);
        self.reading(trade.seller.other(), buyer);
    }

    /// Feeds one side's reading (and keeps it in that host's meter history).
    pub fn reading(&mut self, side: Side, reading: IntervalReading) {
        self.reading_with(side, reading, &Precomputed::NONE)
    }

    /// [`Pair::reading`], with signatures made ahead (as a host with a pool of its own does).
    pub fn reading_with(&mut self, side: Side, reading: IntervalReading, ahead: &Precomputed) {
        let channel = self.channel;
        let peer = self.peer_mut(side);
        peer.readings.insert(reading.interval, reading);
        if let Some(node) = peer.node.as_mut() {
            node.handle_with(Input::Reading { channel, reading }, ahead);
        }
    }

    /// Tells both nodes about a ledger event.
    pub fn ledger_event(&mut self, event: LedgerEvent) {
        for side in [Side::A, Side::B] {
            self.ledger_event_to(side, event.clone());
        }
    }

    pub fn ledger_event_to(&mut self, side: Side, event: LedgerEvent) {
        let channel = self.channel;
        if let Some(node) = self.peer_mut(side).node.as_mut() {
            node.handle(Input::Ledger { channel, event });
        }
    }

    /// The virtual clock, in ms.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Moves the virtual clock and ticks both nodes.
    pub fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        let now_ms = self.now_ms;
        for peer in &mut self.peers {
            if let Some(node) = peer.node.as_mut() {
                node.handle(Input::Tick { now_ms });
            }
        }
    }

    // ----- the link -----

    /// Takes the link down: in-flight frames are lost, both nodes see the disconnect.
    pub fn disconnect(&mut self) {
        if !self.link.up {
            return;
        }
        self.link.up = false;
        self.link.queues = Default::default();
        for side in [Side::A, Side::B] {
            let peer_id = self.id(side.other());
            if let Some(node) = self.peer_mut(side).node.as_mut() {
                node.handle(Input::Disconnected(peer_id));
            }
        }
    }

    /// Brings the link up if both nodes run.
    pub fn reconnect(&mut self) {
        if self.link.up || !self.is_running(Side::A) || !self.is_running(Side::B) {
            return;
        }
        self.link.up = true;
        self.reconnects += 1;
        for side in [Side::A, Side::B] {
            let peer_id = self.id(side.other());
            self.node_mut(side).handle(Input::Connected(peer_id));
        }
    }

    /// Frames in flight from `from`.
    pub fn in_flight(&self, from: Side) -> usize {
        self.link.queues[from.index()].len()
    }

    /// Loses the next frame from `from`; a lost frame means a broken connection.
    pub fn drop_next(&mut self, from: Side) {
        if self.link.queues[from.index()].pop_front().is_some() {
            self.disconnect();
        }
    }

    /// Delivers the next frame from `from` twice.
    pub fn duplicate_next(&mut self, from: Side) {
        let q = &mut self.link.queues[from.index()];
        if let Some(f) = q.front().cloned() {
            q.push_front(f);
        }
    }

    /// Swaps the next two frames from `from`.
    pub fn reorder_next(&mut self, from: Side) {
        let q = &mut self.link.queues[from.index()];
        if q.len() >= 2 {
            q.swap(0, 1);
        }
    }

    /// Puts raw bytes on the link as if `from` had sent them.
    pub fn inject_frame(&mut self, from: Side, frame: Vec<u8>) {
        if self.link.up {
            self.link.queues[from.index()].push_back(frame);
        }
    }

    /// Puts a message on the link as if `from` had sent it (no referee checks: it is forged).
    pub fn inject(&mut self, from: Side, message: &Message) {
        self.inject_frame(from, message.encode());
    }

    // ----- crashes -----

    /// Kills `side` at once: memory is lost, the store keeps what was durable.
    pub fn crash(&mut self, side: Side) {
        if !self.is_running(side) {
            return;
        }
        self.disconnect();
        self.peer_mut(side).node = None;
    }

    /// Restarts a crashed `side` from its store and its meter history.
    pub fn restart(&mut self, side: Side) {
        if self.is_running(side) {
            return;
        }
        let i = side.index();
        let peer = &mut self.peers[i];
        peer.store.heal();
        let records = peer.store.load().expect("memory store reads");
        let signer = Signer::new(&peer.secret, &[i as u8 + 9; 32]).expect("fixed key");
        let mut node = Node::restore(signer, self.policy.clone(), records);
        node.handle(Input::Tick {
            now_ms: self.now_ms,
        });
        let channel = self.channel;
        let restored = node
            .channel(&channel)
            .and_then(|v| v.current)
            .map(|c| c.version())
            .unwrap_or_default();
        if restored < peer.released {
            self.violations.push(format!(
                "{side:?} restarted at {restored} but had released a signature completing {}",
                peer.released
            ));
        }
        peer.seen = restored;
        let last = node
            .channel(&channel)
            .and_then(|v| v.current)
            .map(|c| c.state().last_interval)
            .unwrap_or_default();
        for reading in peer.readings.values().filter(|r| r.interval > last) {
            node.handle(Input::Reading {
                channel,
                reading: *reading,
            });
        }
        peer.node = Some(node);
    }

    // ----- running -----

    /// Runs until neither node has anything left to do. Panics if that never happens.
    pub fn drive(&mut self) {
        let reconnects = self.reconnects;
        for _ in 0..20_000 {
            if !self.step() {
                return;
            }
            assert!(
                self.reconnects - reconnects < 200,
                "the pair reconnected 200 times without settling: a reconnect loop"
            );
        }
        panic!("the pair did not become idle in 20,000 steps");
    }

    /// Carries out both nodes' pending outputs without delivering any frame.
    pub fn flush_outputs(&mut self) {
        self.flush(Side::A);
        self.flush(Side::B);
    }

    /// Delivers the next frame from `from` only (the other direction waits: a delay).
    pub fn deliver_one(&mut self, from: Side) -> bool {
        self.flush(Side::A);
        self.flush(Side::B);
        let progressed = self.deliver(from);
        self.flush(Side::A);
        self.flush(Side::B);
        progressed
    }

    /// One round: both nodes' outputs carried out, one frame delivered each way.
    pub fn step(&mut self) -> bool {
        self.steps += 1;
        let mut progressed = self.flush(Side::A) | self.flush(Side::B);
        if !self.link.up
            && self.auto_reconnect
            && self.is_running(Side::A)
            && self.is_running(Side::B)
        {
            self.reconnect();
            progressed = true;
        }
        progressed |= self.deliver(Side::A);
        progressed |= self.deliver(Side::B);
        progressed | self.flush(Side::A) | self.flush(Side::B)
    }

    fn deliver(&mut self, from: Side) -> bool {
        let Some(frame) = self.link.queues[from.index()].pop_front() else {
            return false;
        };
        let to = from.other();
        if !self.is_running(to) {
            return true;
        }
        match Message::decode(&frame) {
            Ok(message) => {
                if std::env::var_os("GRIDCHAN_HARNESS_TRACE").is_some() {
                    eprintln!("{from:?} -> {to:?}: {}", describe(&message));
                }
                let sender = self.id(from);
                self.node_mut(to).handle(Input::Message {
                    from: sender,
                    message,
                });
            }
            Err(_) => {
                // The transport shell closes a connection that sends undecodable bytes.
                self.rejected_frames += 1;
                self.disconnect();
            }
        }
        true
    }

    /// Carries out every output `side` has, as a host would. Returns whether there were any.
    fn flush(&mut self, side: Side) -> bool {
        let mut any = false;
        loop {
            let i = side.index();
            let Some(output) = self.peers[i].node.as_mut().and_then(|n| n.poll_output()) else {
                break;
            };
            any = true;
            match output {
                Output::Persist { update, record } => {
                    let peer = &mut self.peers[i];
                    match peer.store.write(&record) {
                        Ok(()) => {
                            if let Some(node) = peer.node.as_mut() {
                                node.handle(Input::Persisted(update));
                            }
                        }
                        Err(_) if peer.store.stopped() => {
                            self.crash(side);
                            return true;
                        }
                        Err(_) => {
                            if let Some(node) = peer.node.as_mut() {
                                node.handle(Input::PersistFailed(update));
                            }
                        }
                    }
                }
                Output::Send { to, message } => {
                    debug_assert_eq!(to, self.id(side.other()));
                    if self.referee {
                        self.referee(side, &message);
                    }
                    if self.link.up {
                        self.link.queues[i].push_back(message.encode());
                    }
                }
                Output::Ledger(request) => self.peers[i].ledger.push(request),
                Output::Watchtower(state) => self.peers[i].tower.push(state),
                Output::Disconnect { .. } => self.disconnect(),
                Output::Event(event) => {
                    if std::env::var_os("GRIDCHAN_HARNESS_TRACE").is_some() {
                        eprintln!("{side:?} event: {event:?}");
                    }
                    self.peers[i].events.push(event)
                }
            }
        }
        if self.referee && any {
            self.check_monotonic(side);
        }
        any
    }

    fn check_monotonic(&mut self, side: Side) {
        let channel = self.channel;
        let i = side.index();
        let Some(view) = self.peers[i]
            .node
            .as_ref()
            .and_then(|n| n.channel(&channel))
        else {
            return;
        };
        let Some(cur) = view.current else {
            return;
        };
        let peer = &mut self.peers[i];
        if cur.version() < peer.seen {
            self.violations.push(format!(
                "{side:?} went back from {} to {}",
                peer.seen,
                cur.version()
            ));
        }
        peer.seen = peer.seen.max(cur.version());
        let s = cur.state();
        if Some(Amount(s.balance_a.0 + s.balance_b.0)) != s.held(&view.params) {
            self.violations.push(format!(
                "{side:?} holds {} with money not conserved",
                cur.version()
            ));
        }
    }

    /// Checks every signature in a message `side` is sending: the state it signs must already
    /// be durable in `side`'s store, and `side` must never have signed a different state at
    /// that version.
    fn referee(&mut self, side: Side, message: &Message) {
        let signer = self.id(side);
        let me = if side == Side::A {
            gridchan_channel::Party::A
        } else {
            gridchan_channel::Party::B
        };
        let mut sigs: Vec<(Version, gridchan_channel::Signature, Option<[u8; 32]>)> = Vec::new();
        let mut completes = None;
        match message {
            Message::OpenChannel(m) => sigs.push((Version(0), m.sig_a, None)),
            Message::AcceptChannel(m) => {
                sigs.push((Version(0), m.sig_b, None));
                completes = Some(Version(0));
            }
            Message::Propose(p) => sigs.push((p.state.version, p.sig, Some(p.state.digest()))),
            Message::Countersign(m) => {
                sigs.push((m.version, m.sig, None));
                completes = Some(m.version);
            }
            Message::Reestablish(m) => {
                let own = if me == gridchan_channel::Party::A {
                    m.current.sig_a
                } else {
                    m.current.sig_b
                };
                sigs.push((m.current.state.version, own, Some(m.current.state.digest())));
                if let Some(p) = &m.proposal {
                    sigs.push((p.state.version, p.sig, Some(p.state.digest())));
                }
                completes = Some(m.current.state.version);
            }
            // Nothing a channel signs: refusals, and the gateway-wide messages.
            _ => {}
        }
        let Some(channel) = message.channel_id() else {
            return;
        };
        let record = self.peers[side.index()]
            .store
            .inner()
            .get(&channel)
            .cloned();
        for (version, sig, claimed) in sigs {
            let durable: Vec<[u8; 32]> = record
                .iter()
                .flat_map(|r| {
                    let cur = r.current.as_ref().map(|c| (c.version(), *c.digest()));
                    let prop = r.proposal.as_ref().map(|p| (p.version(), *p.digest()));
                    cur.into_iter().chain(prop)
                })
                .filter(|(v, _)| *v == version)
                .map(|(_, d)| d)
                .filter(|d| sig.verify(d, &signer).is_ok())
                .collect();
            let Some(digest) = durable.first().copied().or(claimed) else {
                self.violations.push(format!(
                    "{side:?} sent a signature at {version} before the state was durable"
                ));
                continue;
            };
            if durable.is_empty() {
                self.violations.push(format!(
                    "{side:?} sent a signature at {version} before the state was durable"
                ));
            }
            if let Some(prev) = self.signatures.insert((signer, version), digest) {
                if prev != digest {
                    self.violations
                        .push(format!("{side:?} signed two different states at {version}"));
                }
            }
        }
        if let Some(v) = completes {
            let peer = &mut self.peers[side.index()];
            peer.released = peer.released.max(v);
        }
    }

    /// Heals everything (stores, link, crashed nodes), turns automatic reconnection on (a
    /// disconnect still pending in an outbox must not leave the pair apart), and runs until
    /// idle.
    pub fn heal(&mut self) {
        self.auto_reconnect = true;
        for side in [Side::A, Side::B] {
            self.store(side).heal();
            self.restart(side);
            let channel = self.channel;
            if self.view(side).frozen {
                let _ = self
                    .node_mut(side)
                    .command(gridchan_channel::Command::RetryPersist(channel));
            }
        }
        self.reconnect();
        self.drive();
    }

    /// Money each side holds in its current state, and the channel's total.
    pub fn balances(&self, side: Side) -> (Amount, Amount) {
        let cur = self.current(side);
        (cur.state().balance_a, cur.state().balance_b)
    }
}

/// One line about a message, for traces.
fn describe(m: &Message) -> String {
    match m {
        Message::OpenChannel(_) => "OpenChannel".into(),
        Message::AcceptChannel(_) => "AcceptChannel".into(),
        Message::Propose(p) => format!(
            "Propose {} interval {} final {}",
            p.state.version, p.state.last_interval, p.state.is_final
        ),
        Message::Countersign(c) => format!("Countersign {}", c.version),
        Message::Refuse(r) => format!("Refuse {} ({})", r.version, r.reason),
        Message::Announce(a) => format!(
            "Announce {} import {} export {}",
            a.interval, a.import, a.export
        ),
        Message::Reestablish(r) => format!(
            "Reestablish current {} proposal {:?} highest {}",
            r.current.state.version,
            r.proposal.as_ref().map(|p| p.state.version),
            r.highest_signed
        ),
        Message::Enrol(_) => "Enrol".into(),
        Message::Order(o) => format!("Order {}", o.order.order.interval),
        Message::Receipt(_) => "Receipt".into(),
        Message::OrderRefused(r) => format!("OrderRefused {} ({})", r.interval, r.reason),
        Message::Part(p) => format!("Part {:?} {} {}/{}", p.topic, p.key, p.index, p.count),
        Message::Terms(_) => "Terms".into(),
        Message::AskTerms => "AskTerms".into(),
    }
}
