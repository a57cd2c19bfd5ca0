//! The neighbourhood market in the engine (`specs/market.md`): as a market node, the
//! [`Exchange`] that takes the members' orders and closes each interval's book at its deadline;
//! as a member, a [`Member`] per market channel, which orders what the meter measured (less what
//! the neighbour channels took) and checks every book before its channel settles it. Both run
//! on the engine's thread, where the market's messages arrive and the channels are.

use std::collections::{BTreeMap, HashMap, HashSet};

use gridchan_channel::market::{
    Allowance, Exchange, Limits, MarketTerms, Member, MemberStep, Parts, Roster, Settlement, Topic,
};
use gridchan_channel::metering::MeterReading;
use gridchan_channel::wire::Message;
use gridchan_channel::{
    ChannelId, Input, IntervalIndex, NodeId, Party, Phase, Precomputed, PricePerKwh, Recovered,
    WattHours,
};

use super::{Engine, Report};
use crate::clock::SimClock;
use crate::market_store::{Evidence, MarketStore};

/// A market this gateway runs.
#[derive(Clone, Debug)]
pub struct MarketNode {
    pub terms: MarketTerms,
    /// The metering interval of its channels.
    pub interval_seconds: u32,
}

/// What the engine does in markets: run one, be a member, or neither.
#[derive(Clone, Debug, Default)]
pub struct MarketParts {
    /// The market this gateway runs, if it is a market node.
    pub run: Option<MarketNode>,
    /// A member's limit prices; `None`: the market's grid prices (it trades locally whenever
    /// that beats the grid).
    pub limits: Option<Limits>,
    /// The clock the metering intervals (and so the books) follow.
    pub clock: Option<SimClock>,
    /// The gateway's SQLite file, where a member keeps its checked settlements and the books it
    /// refused ([`crate::market_store`]); `None`: in memory only.
    pub store: Option<std::path::PathBuf>,
}

/// Something that happened in a market, for whoever observes the engine.
#[derive(Clone, Debug)]
pub enum MarketReport {
    /// (Market node) a book closed and went out.
    BookClosed {
        interval: IntervalIndex,
        /// It went out with a staged misbehaviour ([`Stage`]).
        staged: bool,
        orders: usize,
        price: Option<PricePerKwh>,
        traded: WattHours,
        income: u64,
        members: usize,
    },
    /// (Member) a book checked: our settlement in it, if we traded.
    BookChecked {
        channel: ChannelId,
        interval: IntervalIndex,
        price: Option<PricePerKwh>,
        traded: WattHours,
        settlement: Option<Settlement>,
    },
    /// (Member) a book (or roster, interval 0) refused, and why.
    BookRefused {
        channel: ChannelId,
        interval: IntervalIndex,
        reason: String,
    },
    /// (Member) our order went out.
    Ordered {
        channel: ChannelId,
        interval: IntervalIndex,
        import: WattHours,
        export: WattHours,
    },
    /// (Member) the market node took our order (its receipt checked).
    Receipted {
        channel: ChannelId,
        interval: IntervalIndex,
    },
    /// (Member) the market node did not take our order (or enrolment), and why.
    LeftOut {
        channel: ChannelId,
        interval: IntervalIndex,
        reason: String,
    },
}

/// A staged misbehaviour of this market node, for demos and tests: the next book closed is
/// published with a price one micro-unit off the rule's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    WrongClearing,
}

/// What one interval's meter reading is shared out as: the flows the neighbour channels took,
/// and whether the market order went.
struct Share {
    own: MeterReading,
    delivered: u64,
    received: u64,
    ordered: bool,
}

/// The engine's market state.
pub(super) struct Markets {
    parts: MarketParts,
    exchange: Option<Exchange>,
    staged: Option<Stage>,
    /// Our memberships, by market channel.
    members: HashMap<ChannelId, Member>,
    /// Market channels whose enrolment went out on the current connection.
    enrolled: HashSet<ChannelId>,
    /// The terms market nodes sent us when we connected.
    offered: HashMap<NodeId, MarketTerms>,
    shares: BTreeMap<IntervalIndex, Share>,
    store: Option<MarketStore>,
    /// (Market node) the digest of the roster each connected member was last sent.
    roster_sent: HashMap<NodeId, [u8; 32]>,
    /// (Market node) the newest books published: a member that reconnects with a settlement
    /// still to sign gets its book again.
    recent: BTreeMap<IntervalIndex, (Box<gridchan_channel::market::Book>, Roster)>,
}

impl Markets {
    pub(super) fn new(parts: MarketParts) -> Markets {
        let now = parts.clock.clone().unwrap_or_else(SimClock::real).now_ms();
        let exchange = parts.run.as_ref().map(|m| {
            let mut exchange = Exchange::new(m.terms.clone(), m.interval_seconds);
            exchange.start_at(now);
            exchange
        });
        let store = parts
            .store
            .as_deref()
            .and_then(|path| match MarketStore::open(path) {
                Ok(store) => Some(store),
                Err(e) => {
                    tracing::error!("market: cannot keep settlements and evidence: {e}");
                    None
                }
            });
        Markets {
            roster_sent: HashMap::new(),
            recent: BTreeMap::new(),
            store,
            parts,
            exchange,
            staged: None,
            members: HashMap::new(),
            enrolled: HashSet::new(),
            offered: HashMap::new(),
            shares: BTreeMap::new(),
        }
    }

    fn clock(&self) -> SimClock {
        self.parts.clock.clone().unwrap_or_else(SimClock::real)
    }

    /// When the next book is due, in real time, if this gateway runs a market.
    pub(super) fn next_deadline(&self) -> Option<tokio::time::Instant> {
        let exchange = self.exchange.as_ref()?;
        let clock = self.clock();
        let at = exchange.next_deadline(clock.now_ms());
        Some(tokio::time::Instant::now() + clock.until(at))
    }

    /// The terms `market_node` sent when we connected.
    pub(super) fn offered(&self, market_node: &NodeId) -> Option<MarketTerms> {
        self.offered.get(market_node).cloned()
    }

    pub(super) fn stage(&mut self, stage: Stage) {
        self.staged = Some(stage);
    }
}

impl<S: super::EngineStore> Engine<S> {
    /// Starts a membership for every market channel in which we are party A that has none (at
    /// start, and after a join), and ends those whose channel is gone.
    pub(super) fn refresh_memberships(&mut self) {
        let ours: Vec<(ChannelId, NodeId, MarketTerms, u32)> = self
            .node
            .market_channels()
            .filter(|(_, _, phase, me, _)| *me == Party::A && is_live(*phase))
            .map(|(id, peer, _, _, terms)| {
                let seconds = self
                    .node
                    .channel(&id)
                    .map_or(900, |v| v.params.interval_seconds);
                (id, peer, terms.clone(), seconds)
            })
            .collect();
        let live: HashSet<ChannelId> = ours.iter().map(|(id, ..)| *id).collect();
        self.markets.members.retain(|id, _| live.contains(id));
        for (id, peer, terms, seconds) in ours {
            if !self.markets.members.contains_key(&id) {
                let member =
                    Member::new(terms, seconds, peer, id, &self.pool_signer, &self.blinding);
                tracing::info!(
                    "member of market {} through channel {} as pseudonym {}",
                    hex::encode(&member.terms().market[..4]),
                    id.short(),
                    hex::encode(&member.pseudonym()[..4])
                );
                self.markets.members.insert(id, member);
                // The books it checked before a restart: their proposals may still come.
                let kept = self
                    .markets
                    .store
                    .as_ref()
                    .map(|s| s.settlements(&id))
                    .transpose();
                match kept {
                    Ok(kept) => {
                        for settlement in kept.unwrap_or_default() {
                            self.node.handle(Input::Settlement {
                                channel: id,
                                settlement,
                            });
                        }
                    }
                    Err(e) => tracing::error!("market: cannot read kept settlements: {e}"),
                }
            }
        }
        self.enrol_members();
    }

    /// Sends each membership's enrolment once per connection, when its channel is open.
    fn enrol_members(&mut self) {
        let due: Vec<(ChannelId, NodeId, Message)> = self
            .markets
            .members
            .iter()
            .filter(|(id, _)| !self.markets.enrolled.contains(*id))
            .filter(|(id, _)| {
                self.node.channel_peers().any(|(c, peer, phase)| {
                    c == **id && phase == Phase::Open && self.peers.contains_key(&peer)
                })
            })
            .filter_map(|(id, m)| {
                let peer = self.node.channel(id)?.peer;
                Some((*id, peer, Message::Enrol(m.enrol())))
            })
            .collect();
        for (id, peer, message) in due {
            self.markets.enrolled.insert(id);
            self.send(peer, message);
        }
    }

    /// A peer connected: a market node tells it its terms (and a member its roster); a member
    /// enrols with its market node.
    pub(super) fn market_peer_up(&mut self, peer: NodeId) {
        let member = self
            .node
            .market_channels()
            .any(|(_, p, phase, me, _)| p == peer && me == Party::B && phase == Phase::Open);
        // The member's settlements not signed yet (proposed, or waiting for the connection)
        // are for books newer than its channel's state: it gets those books again.
        let settled_up_to: Option<IntervalIndex> = self
            .node
            .market_channels()
            .filter(|(_, p, _, me, _)| *p == peer && *me == Party::B)
            .filter_map(|(id, ..)| Some(self.node.channel(&id)?.current?.state().last_interval))
            .max();
        let unsigned: Vec<IntervalIndex> = match settled_up_to {
            Some(last) => self
                .markets
                .recent
                .range(IntervalIndex(last.0 + 1)..)
                .map(|(i, _)| *i)
                .collect(),
            None => Vec::new(),
        };
        let mut sends = Vec::new();
        self.markets.roster_sent.remove(&peer);
        if member {
            self.roster_to(&[peer]);
        }
        if let Some(exchange) = &mut self.markets.exchange {
            sends.push(Message::Terms(Box::new(exchange.terms().clone())));
            if member {
                for interval in unsigned {
                    if let Some((book, roster)) = self.markets.recent.get(&interval) {
                        // With the roster it names (a newer one may have replaced it).
                        let parts = Parts::split(Topic::Roster, roster.epoch, roster);
                        sends.extend(parts.into_iter().map(Message::Part));
                        let parts = Parts::split(Topic::Book, interval.0, book);
                        sends.extend(parts.into_iter().map(Message::Part));
                    }
                }
            }
        }
        for message in sends {
            self.send(peer, message);
        }
        self.enrol_members();
    }

    /// (Market node) sends the current roster to each of `peers` that was not sent it yet.
    fn roster_to(&mut self, peers: &[NodeId]) {
        let Some(exchange) = &mut self.markets.exchange else {
            return;
        };
        let (roster, _) = exchange.roster(&self.pool_signer);
        let digest = roster.digest();
        let parts = Parts::split(Topic::Roster, roster.epoch, roster);
        let due: Vec<NodeId> = peers
            .iter()
            .filter(|p| self.markets.roster_sent.get(*p) != Some(&digest))
            .copied()
            .collect();
        for peer in due {
            for p in &parts {
                self.send(peer, Message::Part(p.clone()));
            }
            self.markets.roster_sent.insert(peer, digest);
        }
    }

    /// A peer disconnected: our enrolments with it are sent again on the next connection.
    pub(super) fn market_peer_down(&mut self, peer: NodeId) {
        self.markets.roster_sent.remove(&peer);
        let gone: Vec<ChannelId> = self
            .markets
            .members
            .keys()
            .filter(|id| self.node.channel(id).is_some_and(|v| v.peer == peer))
            .copied()
            .collect();
        for id in gone {
            self.markets.enrolled.remove(&id);
        }
    }

    /// A market message from `peer`: `true` if it was one (the core does not see it).
    pub(super) fn on_market_message(
        &mut self,
        peer: NodeId,
        message: &Message,
        ahead: &Precomputed,
    ) -> bool {
        match message {
            Message::Enrol(_) | Message::Order(_) => {
                self.on_member_message(peer, message, ahead.recovered());
                true
            }
            Message::AskTerms => {
                if let Some(exchange) = &self.markets.exchange {
                    let terms = Message::Terms(Box::new(exchange.terms().clone()));
                    self.send(peer, terms);
                }
                true
            }
            Message::Terms(terms) => {
                if self.markets.offered.len() < 64 || self.markets.offered.contains_key(&peer) {
                    self.markets.offered.insert(peer, (**terms).clone());
                }
                true
            }
            Message::Receipt(_) | Message::OrderRefused(_) | Message::Part(_) => {
                self.on_market_node_message(peer, message.clone());
                true
            }
            _ => false,
        }
    }

    /// (Market node) an enrolment or an order from a member.
    fn on_member_message(&mut self, peer: NodeId, message: &Message, known: &Recovered) {
        if matches!(message, Message::Enrol(_)) {
            // A member that left and joins again enrols its pseudonym with its new channel.
            self.prune_members();
        }
        let Some(terms) = self.markets.exchange.as_ref().map(|e| e.terms().clone()) else {
            self.drop_peer(peer, "sent a market order to a gateway that runs no market");
            return;
        };
        let now = self.markets.clock().now_ms();
        let channel = self
            .node
            .market_channels()
            .find(|(_, p, phase, me, _)| *p == peer && *phase == Phase::Open && *me == Party::B)
            .map(|(id, ..)| id);
        let allowance = channel
            .and_then(|id| self.node.channel(&id))
            .and_then(|view| gridchan_channel::market::allowance(&view, &terms, now));
        let exchange = self.markets.exchange.as_mut().expect("checked above");
        let answer =
            exchange.on_message(channel, message, now, allowance, known, &self.pool_signer);
        match (&answer, message) {
            (Some(Message::OrderRefused(r)), _) => {
                tracing::info!(
                    "market: {peer} not taken for interval {}: {}",
                    r.interval.0,
                    r.reason
                );
            }
            (None, Message::Enrol(_)) => {
                tracing::info!("market: {peer} enrolled ({} members)", exchange.members());
            }
            _ => {}
        }
        let enrolled = answer.is_none() && matches!(message, Message::Enrol(_));
        if let Some(answer) = answer {
            self.send(peer, answer);
        }
        if enrolled {
            // The roster with the new member in it, to the new member at once (the others get
            // it before the next book).
            self.roster_to(&[peer]);
        }
    }

    /// (Member) a receipt, a refusal or a publication from the market node.
    fn on_market_node_message(&mut self, peer: NodeId, message: Message) {
        // Our membership through the market node: its open channel (one that is opening or
        // closing only if there is no open one, one that is over last).
        let rank = |phase: Phase| match phase {
            Phase::Open => 0u8,
            Phase::AwaitingAccept | Phase::Funding | Phase::Closing => 1,
            _ => 2,
        };
        let Some((_, channel)) = self
            .markets
            .members
            .keys()
            .filter_map(|id| {
                let v = self.node.channel(id)?;
                (v.peer == peer).then_some((rank(v.phase), *id))
            })
            .min()
        else {
            self.drop_peer(
                peer,
                "sent market messages to a gateway that is not its member",
            );
            return;
        };
        let member = self.markets.members.get_mut(&channel).expect("found above");
        let step = match member.on_message(message, &mut recover_orders) {
            Ok(Some(step)) => step,
            Ok(None) => return,
            Err(e) => {
                self.drop_peer(peer, &format!("market node's publication: {e}"));
                return;
            }
        };
        let report = match step {
            MemberStep::Roster { .. } => return,
            MemberStep::Receipted(interval) => MarketReport::Receipted { channel, interval },
            MemberStep::LeftOut { interval, reason } => {
                if reason == gridchan_channel::market::OrderRefusal::NotEnrolled {
                    // The market node had not seen our channel open yet: enrol again.
                    self.markets.enrolled.remove(&channel);
                }
                tracing::warn!(
                    "market: our order for interval {} was not taken: {reason}",
                    interval.0
                );
                MarketReport::LeftOut {
                    channel,
                    interval,
                    reason: reason.to_string(),
                }
            }
            MemberStep::Book {
                interval,
                settlement,
                price,
                traded,
            } => {
                if let Some(settlement) = settlement {
                    if let Some(Err(e)) = self
                        .markets
                        .store
                        .as_mut()
                        .map(|s| s.settled(&channel, &settlement))
                    {
                        tracing::error!(
                            "market: cannot keep the settlement of interval {}: {e}",
                            interval.0
                        );
                    }
                    self.node.handle(Input::Settlement {
                        channel,
                        settlement,
                    });
                }
                MarketReport::BookChecked {
                    channel,
                    interval,
                    price,
                    traded,
                    settlement,
                }
            }
            MemberStep::Refused {
                interval,
                reason,
                book,
            } => {
                self.node.handle(Input::BookRefused { channel, interval });
                if let (Some(book), Some(store)) = (book, &self.markets.store) {
                    let receipted = self
                        .markets
                        .members
                        .get(&channel)
                        .and_then(|m| m.receipted(interval));
                    let kept = store.refused(&Evidence {
                        channel,
                        interval,
                        reason: reason.to_string(),
                        book: *book,
                        receipted,
                    });
                    if let Err(e) = kept {
                        tracing::error!("market: cannot keep the refused book as evidence: {e}");
                    }
                }
                tracing::error!(
                    "market: refused the market node's {} of interval {}: {reason} (it is signed by the market node: kept as evidence)",
                    if interval.0 == 0 { "roster" } else { "book" },
                    interval.0
                );
                MarketReport::BookRefused {
                    channel,
                    interval,
                    reason: reason.to_string(),
                }
            }
            MemberStep::BadReceipt(e) => {
                self.drop_peer(peer, &format!("market node's receipt: {e}"));
                return;
            }
        };
        let _ = self.reports.send(Report::Market(report));
    }

    /// (Member) the meter's reading of `interval`: with no neighbour round under way, the
    /// whole reading goes to the market order at once; otherwise what the neighbours leave,
    /// once their round is over ([`Engine::share_taken`]).
    pub(super) fn market_meter(&mut self, interval: IntervalIndex, own: MeterReading, round: bool) {
        if self.markets.members.is_empty() {
            return;
        }
        self.markets.shares.insert(
            interval,
            Share {
                own,
                delivered: 0,
                received: 0,
                ordered: false,
            },
        );
        while self.markets.shares.len() > 8 {
            self.markets.shares.pop_first();
        }
        if !round {
            self.order(interval);
        }
    }

    /// A neighbour channel's reading of `interval`: what it takes of the meter. `false` when
    /// the market order for the interval already went (the reading would sell the same energy
    /// twice: the neighbour is left out).
    pub(super) fn share_taken(
        &mut self,
        interval: IntervalIndex,
        delivered: u64,
        received: u64,
    ) -> bool {
        match self.markets.shares.get_mut(&interval) {
            Some(share) if share.ordered => false,
            Some(share) => {
                share.delivered += delivered;
                share.received += received;
                true
            }
            None => true,
        }
    }

    /// Sends our market orders for `interval`: what the meter measured less what the neighbour
    /// channels took, within each channel's allowance.
    pub(super) fn order(&mut self, interval: IntervalIndex) {
        let Some(share) = self.markets.shares.get_mut(&interval) else {
            return;
        };
        if share.ordered {
            return;
        }
        share.ordered = true;
        let offered = MeterReading {
            import: WattHours(share.own.import.0.saturating_sub(share.received)),
            export: WattHours(share.own.export.0.saturating_sub(share.delivered)),
        };
        let channels: Vec<ChannelId> = self.markets.members.keys().copied().collect();
        // One market gets the remainder: the first by channel id (a member of several markets
        // would otherwise sell the same energy in each).
        let Some(channel) = channels.into_iter().min() else {
            return;
        };
        let Some(view) = self.node.channel(&channel) else {
            return;
        };
        if view.phase != Phase::Open || !self.peers.contains_key(&view.peer) {
            return;
        }
        let Some(current) = view.current else {
            return;
        };
        let member = self
            .markets
            .members
            .get_mut(&channel)
            .expect("listed above");
        let limits = self
            .markets
            .parts
            .limits
            .clone()
            .unwrap_or_else(|| Limits::of_grid(member.terms()));
        let allowance = Allowance::of(
            current.state(),
            member.terms(),
            interval,
            view.params.interval_seconds,
        );
        let Some(order) = member.order(interval, offered, &limits, allowance) else {
            return;
        };
        let _ = self.reports.send(Report::Market(MarketReport::Ordered {
            channel,
            interval,
            import: order.order.import,
            export: order.order.export,
        }));
        self.send(view.peer, Message::Order(order));
    }

    /// (Market node) members whose channel is no longer open leave the roster; the open
    /// market channels, by peer.
    fn prune_members(&mut self) -> HashMap<ChannelId, NodeId> {
        let open: HashMap<ChannelId, NodeId> = self
            .node
            .market_channels()
            .filter(|(_, _, phase, me, _)| *me == Party::B && *phase == Phase::Open)
            .map(|(id, peer, ..)| (id, peer))
            .collect();
        if let Some(exchange) = &mut self.markets.exchange {
            let gone: Vec<ChannelId> = exchange
                .enrolled()
                .filter(|id| !open.contains_key(id))
                .copied()
                .collect();
            for id in gone {
                exchange.leave(&id);
            }
        }
        open
    }

    /// (Market node) the book of an interval is due: close it, publish it to every member
    /// connected, and propose each member's settlement.
    pub(super) fn on_book_deadline(&mut self) {
        // Every book due, oldest first (the engine may have woken late).
        for _ in 0..64 {
            let now = self.markets.clock().now_ms();
            let due = self.markets.exchange.as_ref().and_then(|e| e.due(now));
            if due.is_none() {
                return;
            }
            self.close_book();
        }
    }

    fn close_book(&mut self) {
        let now = self.markets.clock().now_ms();
        let Some(exchange) = &mut self.markets.exchange else {
            return;
        };
        let Some(interval) = exchange.due(now) else {
            return;
        };
        let open = self.prune_members();
        // Every member the book goes to holds the roster it names.
        let peers: Vec<NodeId> = open.values().copied().collect();
        self.roster_to(&peers);
        let Some(exchange) = &mut self.markets.exchange else {
            return;
        };
        let mut sends: Vec<(NodeId, Message)> = Vec::new();
        let members = exchange.members();
        let roster = exchange.roster(&self.pool_signer).0.clone();
        let (mut book, settlements) = match exchange.close(interval, &self.pool_signer) {
            Ok(closed) => closed,
            Err(e) => {
                tracing::error!(
                    "market: the book of interval {} does not clear: {e}",
                    interval.0
                );
                return;
            }
        };
        let staged = self.markets.staged.take() == Some(Stage::WrongClearing);
        if staged {
            book.price = book.price.map(|p| PricePerKwh(p.0 + 1));
            book.sig = self.pool_signer.sign(&book.digest());
            tracing::warn!(
                "market: staged: the book of interval {} goes out with a wrong price",
                interval.0
            );
        }
        let digest = book.digest();
        tracing::info!(
            "market: book of interval {}: {} orders, {} Wh traded at {}",
            interval.0,
            book.orders.len(),
            book.traded.0,
            book.price.map_or("no price".to_string(), |p| format!(
                "{} micro-units/kWh",
                p.0
            ))
        );
        let _ = self.reports.send(Report::Market(MarketReport::BookClosed {
            interval,
            staged,
            orders: book.orders.len(),
            price: book.price,
            traded: book.traded,
            income: book.income.0,
            members,
        }));
        for p in Parts::split(Topic::Book, interval.0, &book) {
            for peer in open.values() {
                sends.push((*peer, Message::Part(p.clone())));
            }
        }
        self.markets
            .recent
            .insert(interval, (Box::new(book), roster));
        while self.markets.recent.len() > 8 {
            self.markets.recent.pop_first();
        }
        for (peer, message) in sends {
            self.send(peer, message);
        }
        for (channel, mut settlement) in settlements {
            settlement.book = digest;
            self.node.handle(Input::Settlement {
                channel,
                settlement,
            });
        }
    }

    /// The terms a market node offered us, for a join.
    pub(super) fn market_terms(&self, market_node: &NodeId) -> Option<MarketTerms> {
        self.markets.offered(market_node)
    }
}

/// Recoveries of order signatures, remembered by the process: a book's orders are checked by
/// every member, and where several members' gateways share a process (the demo's
/// neighbourhood, a test) each signature is recovered once. Only [`Recovered::one`] makes an
/// entry (the very same recovery, kept), so a member still checks every order against its
/// roster and its pseudonym; bounded, forgotten wholesale when full.
fn recover_orders(book: &gridchan_channel::market::Book) -> Recovered {
    use gridchan_channel::RecoveredOne;
    use std::sync::{Mutex, OnceLock};
    type Key = ([u8; 32], [u8; 65]);
    type Memo = HashMap<Key, RecoveredOne>;
    static MEMO: OnceLock<Mutex<Memo>> = OnceLock::new();
    const MAX_REMEMBERED: usize = 200_000;
    let memo = MEMO.get_or_init(Default::default);
    let wanted: Vec<([u8; 32], gridchan_channel::Signature)> = book
        .orders
        .iter()
        .map(|o| (o.order.digest(), o.sig))
        .collect();
    let mut found = Vec::with_capacity(wanted.len());
    let mut missing = Vec::new();
    {
        let held = memo.lock().unwrap_or_else(|p| p.into_inner());
        for (digest, sig) in &wanted {
            match held.get(&(*digest, sig.0)) {
                Some(one) => found.push(one.clone()),
                None => missing.push((*digest, *sig)),
            }
        }
    }
    // The rest on the process's pool, in parallel.
    use rayon::prelude::*;
    let made: Vec<(Key, RecoveredOne)> = missing
        .par_iter()
        .map(|(d, s)| ((*d, s.0), Recovered::one(d, s)))
        .collect();
    {
        let mut held = memo.lock().unwrap_or_else(|p| p.into_inner());
        if held.len() + made.len() > MAX_REMEMBERED {
            held.clear();
        }
        for (k, one) in &made {
            held.insert(*k, one.clone());
        }
    }
    found.extend(made.into_iter().map(|(_, one)| one));
    Recovered::collect(found)
}

fn is_live(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::AwaitingAccept | Phase::Funding | Phase::Open | Phase::Closing
    )
}
