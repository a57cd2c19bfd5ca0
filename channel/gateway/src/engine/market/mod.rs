//! The neighbourhood market in the engine (`specs/market.md`): as a market node, the
//! [`Exchange`] that takes the members' orders and closes each interval's book at its deadline;
//! as a member, a [`Member`] per market channel, which orders what the meter measured (less what
//! the neighbour channels took) and checks every book before its channel settles it. Both run
//! on the engine's thread, where the market's messages arrive and the channels are.
//! Here: what the engine keeps, connections and the dispatch of market messages; `node` the
//! market node's side, `member` a member's.

mod member;
mod node;

use std::collections::{BTreeMap, HashMap, HashSet};

use gridchan_channel::market::{
    Exchange, Limits, MarketTerms, Member, Parts, Roster, Settlement, Topic,
};
use gridchan_channel::metering::MeterReading;
use gridchan_channel::wire::Message;
use gridchan_channel::{
    ChannelId, IntervalIndex, NodeId, Party, Phase, Precomputed, PricePerKwh, WattHours,
};

use super::Engine;
use crate::clock::SimClock;
use crate::market_store::MarketStore;

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
        /// What the book's members could have traded among themselves: the smaller of all
        /// its orders' exports and all its imports.
        bound: WattHours,
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
    /// The meter's signed reading of the interval, when it signs: it goes with the order.
    signed: Option<gridchan_channel::reading::SignedReading>,
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
    /// (Market node) orders taken whose receipts wait for the orders to be durable.
    receipts: Vec<(NodeId, gridchan_channel::market::SignedOrder, Message)>,
}

impl Markets {
    pub(in crate::engine) fn new(parts: MarketParts) -> Markets {
        let now = parts.clock.clone().unwrap_or_else(SimClock::real).now_ms();
        let mut exchange = parts.run.as_ref().map(|m| {
            let mut exchange = Exchange::new(m.terms.clone(), m.interval_seconds);
            exchange.start_at(now);
            exchange
        });
        let store = parts.store.as_deref().and_then(|path| {
            match MarketStore::open(path, exchange.is_some()) {
                Ok(store) => Some(store),
                Err(e) => {
                    tracing::error!("market: cannot keep settlements, evidence or orders: {e}");
                    None
                }
            }
        });
        if let (Some(exchange), Some(store)) = (&mut exchange, &store) {
            match store.taken_after(exchange.closed()) {
                Ok(orders) => {
                    if !orders.is_empty() {
                        tracing::info!(
                            "market: {} orders taken before the restart are back in their books",
                            orders.len()
                        );
                    }
                    for o in orders {
                        exchange.restore(o);
                    }
                }
                Err(e) => tracing::error!("market: cannot read the orders taken: {e}"),
            }
        }
        Markets {
            receipts: Vec::new(),
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
    pub(in crate::engine) fn next_deadline(&self) -> Option<tokio::time::Instant> {
        let exchange = self.exchange.as_ref()?;
        let clock = self.clock();
        let at = exchange.next_deadline(clock.now_ms());
        Some(tokio::time::Instant::now() + clock.until(at))
    }

    /// The terms `market_node` sent when we connected.
    pub(in crate::engine) fn offered(&self, market_node: &NodeId) -> Option<MarketTerms> {
        self.offered.get(market_node).cloned()
    }

    pub(in crate::engine) fn stage(&mut self, stage: Stage) {
        self.staged = Some(stage);
    }
}

impl<S: super::EngineStore> Engine<S> {
    /// A peer connected: a market node tells it its terms (and a member its roster); a member
    /// enrols with its market node.
    pub(in crate::engine) fn market_peer_up(&mut self, peer: NodeId) {
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

    /// A peer disconnected: our enrolments with it are sent again on the next connection.
    pub(in crate::engine) fn market_peer_down(&mut self, peer: NodeId) {
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
    pub(in crate::engine) fn on_market_message(
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

    /// The terms a market node offered us, for a join.
    pub(in crate::engine) fn market_terms(&self, market_node: &NodeId) -> Option<MarketTerms> {
        self.markets.offered(market_node)
    }
}

#[cfg(test)]
mod tests {
    use gridchan_channel::market::{pseudonym_id, Enrol, Order, SignedOrder};
    use gridchan_channel::{PricePerKwh, Signer};

    use super::*;

    /// A market node that restarts before a book's deadline finds every order it receipted
    /// (they were kept before their receipts went out) and closes the book with them; orders of
    /// books already closed are not brought back.
    #[test]
    fn orders_taken_before_a_restart_are_in_their_book() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("market.sqlite");
        let terms = gridchan_harness::market::terms();
        let start = 1_752_451_200_000u64;
        let interval = IntervalIndex(start / 900_000 + 1);
        // The clock stands a moment after the interval's end, before its book's deadline.
        let clock = SimClock::held((interval.0 + 1) * 900_000 + 1_000, 1);
        let node = Signer::new(&[9; 32], &[0; 32]).unwrap();
        let member = Signer::new(&[3; 32], &[0; 32])
            .unwrap()
            .derive(&terms.market, &[1; 32]);
        let order = |at: IntervalIndex| {
            SignedOrder::sign(
                Order {
                    market: terms.market,
                    interval: at,
                    member: [0; 32],
                    import: WattHours(0),
                    export: WattHours(500),
                    sell_at_least: PricePerKwh(80_000),
                    buy_at_most: PricePerKwh(300_000),
                },
                &member,
            )
        };
        {
            let mut store = MarketStore::open(&path, true).unwrap();
            let old = IntervalIndex(interval.0 - 1);
            store.took(&[order(old), order(interval)]).unwrap();
            store.closed(old).unwrap();
        }
        let parts = MarketParts {
            run: Some(MarketNode {
                terms: terms.clone(),
                interval_seconds: 900,
            }),
            clock: Some(clock),
            store: Some(path.clone()),
            ..MarketParts::default()
        };
        let mut markets = Markets::new(parts);
        let exchange = markets.exchange.as_mut().unwrap();
        let channel = ChannelId([5; 32]);
        exchange
            .enrol(channel, &Enrol::sign(&terms.market, channel, &member))
            .unwrap();
        let (book, settlements) = exchange.close(interval, &node).unwrap();
        assert_eq!(book.orders, vec![order(interval)]);
        assert_eq!(book.orders[0].order.member, pseudonym_id(&member.id()));
        assert!(settlements.is_empty(), "a seller alone trades nothing");
        // Closed: the store forgets the book's orders.
        markets.store.as_ref().unwrap().closed(interval).unwrap();
        let left = markets.store.as_ref().unwrap().taken_after(None).unwrap();
        assert!(left.is_empty(), "{left:?}");
    }
}
