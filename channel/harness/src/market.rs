//! A neighbourhood market in one process: a market node (its [`Node`] and [`Exchange`]) and N
//! members (each a [`Node`] and a [`Member`]), a market channel between each member and the
//! market node, in-memory links that carry encoded frames, a virtual clock. The harness is every
//! party's host, as the gateway's engine is: it sends each member's order after an interval,
//! closes the book at the deadline, publishes it, hands each checked settlement to the
//! channels, and delivers frames until nothing moves.
//!
//! The market node may misbehave in the ways of [`MarketFault`]; a member may be offline.

use std::collections::{HashMap, VecDeque};

use gridchan_channel::market::{
    Allowance, Book, Exchange, Limits, MarketTerms, Member, MemberStep, OrderMessage, Parts, Rule,
    Sender, Settlement, Topic,
};
use gridchan_channel::metering::MeterReading;
use gridchan_channel::tariff::TimeOfUse;
use gridchan_channel::wire::Message;
use gridchan_channel::{
    Amount, ChannelId, ChannelView, Input, IntervalIndex, LedgerEvent, MeterTolerance, Node,
    NodeId, OpenRequest, Output, Phase, Policy, PricePerKwh, Recovered, Signer, Tariff,
};

/// The interval length of the market's channels, in seconds.
pub const INTERVAL_SECONDS: u32 = 900;

/// How the market node misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarketFault {
    /// Publishes the book of this interval with a price one micro-unit off the rule's
    /// (signed, so it is provably the market node's).
    WrongClearing(IntervalIndex),
    /// Leaves out of this interval's book the order of this member, though it receipted it.
    DropsOrder(IntervalIndex, usize),
    /// Proposes to this member, in this interval, a settlement one micro-unit dearer than its
    /// book gives.
    Overcharges(IntervalIndex, usize),
}

/// The market of the tests: pay-as-clear, no fee, books closing a tenth into the next interval,
/// feed-in 0.08 and retail 0.30 a kWh.
pub fn terms() -> MarketTerms {
    MarketTerms {
        market: [0x4d; 32],
        rule: Rule::PayAsClear,
        fee: PricePerKwh(0),
        deadline_permille: 100,
        feed_in: TimeOfUse::flat(PricePerKwh(80_000)),
        retail: TimeOfUse::flat(PricePerKwh(300_000)),
    }
}

struct Home {
    node: Node,
    member: Member,
    channel: ChannelId,
    online: bool,
}

/// A market node and its members, all enrolled, every channel open and funded.
pub struct MarketNet {
    market: Node,
    market_signer: Signer,
    exchange: Exchange,
    homes: Vec<Home>,
    /// Index 0 is the market node, `i + 1` member `i`.
    ids: Vec<NodeId>,
    links: HashMap<(usize, usize), VecDeque<Vec<u8>>>,
    pub now_ms: u64,
    pub fault: Option<MarketFault>,
    /// Every book the market node published, in order.
    pub books: Vec<Book>,
    /// What each member's host saw, per member.
    pub steps: Vec<Vec<MemberStep>>,
    /// Every disconnect: (who, whom, why).
    pub disconnects: Vec<(usize, usize, String)>,
}

fn signer(i: usize) -> Signer {
    let mut secret = [0x4c; 32];
    secret[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    Signer::new(&secret, &[i as u8; 32]).expect("fixed key")
}

impl MarketNet {
    /// A market under `terms` with `n` members, each depositing `deposit` and the market node
    /// as much in each channel.
    pub fn new(n: usize, terms: MarketTerms, deposit: Amount) -> MarketNet {
        let market_signer = signer(0);
        let mut policy = Policy {
            force_close_after_ms: None,
            interval_seconds: Some(INTERVAL_SECONDS),
            ..Policy::accepting_anyone()
        };
        policy.accept.market = Some(Box::new(terms.clone()));
        let market = Node::new(market_signer.duplicate(&[1; 32]), policy);
        let mut net = MarketNet {
            market,
            exchange: Exchange::new(terms.clone(), INTERVAL_SECONDS),
            market_signer,
            homes: Vec::new(),
            ids: vec![signer(0).id()],
            links: HashMap::new(),
            now_ms: 1_000,
            fault: None,
            books: Vec::new(),
            steps: vec![Vec::new(); n],
            disconnects: Vec::new(),
        };
        net.tick();
        for i in 0..n {
            let s = signer(i + 1);
            let id = s.id();
            net.ids.push(id);
            let policy = Policy {
                force_close_after_ms: None,
                interval_seconds: Some(INTERVAL_SECONDS),
                ..Policy::accepting_anyone()
            };
            let mut node = Node::new(s.duplicate(&[2; 32]), policy);
            node.handle(Input::Tick { now_ms: net.now_ms });
            node.handle(Input::Connected(net.ids[0]));
            net.market.handle(Input::Connected(id));
            let request = OpenRequest {
                peer: net.ids[0],
                deposit,
                peer_deposit: deposit,
                tariff: Tariff::Market(Box::new(terms.clone())),
                challenge_window_blocks: 20,
                funding_window_blocks: 20,
                interval_seconds: INTERVAL_SECONDS,
                tolerance: MeterTolerance {
                    absolute_wh: 0,
                    permille: 0,
                },
                opened_at: IntervalIndex(0),
                nonce: [i as u8; 32],
                evidence: Default::default(),
            };
            let channel = node.open(request, true).expect("valid parameters");
            let member = Member::new(
                terms.clone(),
                INTERVAL_SECONDS,
                net.ids[0],
                channel,
                &s,
                &[3; 32],
            );
            net.homes.push(Home {
                node,
                member,
                channel,
                online: true,
            });
            net.drive();
            net.homes[i].node.handle(Input::Ledger {
                channel,
                event: LedgerEvent::Funded,
            });
            net.market.handle(Input::Ledger {
                channel,
                event: LedgerEvent::Funded,
            });
            net.drive();
            let enrol = Message::Enrol(net.homes[i].member.enrol());
            net.send(i + 1, 0, &enrol);
            net.drive();
        }
        net.publish_roster(true);
        net.drive();
        net
    }

    pub fn members(&self) -> usize {
        self.homes.len()
    }

    /// Member `i`'s view of its channel with the market node.
    pub fn member_channel(&self, i: usize) -> ChannelView {
        let h = &self.homes[i];
        h.node.channel(&h.channel).expect("the member's channel")
    }

    /// The market node's view of its channel with member `i`.
    pub fn market_channel(&self, i: usize) -> ChannelView {
        self.market
            .channel(&self.homes[i].channel)
            .expect("the market's channel")
    }

    pub fn pseudonym(&self, i: usize) -> [u8; 32] {
        self.homes[i].member.pseudonym()
    }

    /// Takes member `i` offline (its link drops) or back online.
    pub fn set_online(&mut self, i: usize, online: bool) {
        if self.homes[i].online == online {
            return;
        }
        self.homes[i].online = online;
        let (member, market) = (self.ids[i + 1], self.ids[0]);
        if online {
            self.homes[i].node.handle(Input::Connected(market));
            self.market.handle(Input::Connected(member));
            // A member that comes back hears the current roster.
            let (roster, _) = self.exchange.roster(&self.market_signer);
            let parts = Parts::split(Topic::Roster, roster.epoch, roster);
            for p in parts {
                self.send(0, i + 1, &Message::Part(p));
            }
        } else {
            self.links.remove(&(0, i + 1));
            self.links.remove(&(i + 1, 0));
            self.homes[i].node.handle(Input::Disconnected(market));
            self.market.handle(Input::Disconnected(member));
        }
        self.drive();
    }

    /// One interval: after it ends each online member orders what its meter measured (at the
    /// grid's prices as its limits), then at the deadline the market node closes, publishes and
    /// settles the book. Returns the book.
    pub fn interval(&mut self, interval: IntervalIndex, meters: &[MeterReading]) -> Book {
        let terms = self.exchange.terms().clone();
        self.now_ms = (interval.0 + 1) * u64::from(INTERVAL_SECONDS) * 1000;
        self.tick();
        let limits = Limits::of_grid(&terms);
        for (i, meter) in meters.iter().enumerate().take(self.homes.len()) {
            if !self.homes[i].online {
                continue;
            }
            let Some(state) = self.member_channel(i).current else {
                continue;
            };
            let allowance = Allowance::of(state.state(), &terms, interval, INTERVAL_SECONDS);
            if let Some(order) = self.homes[i]
                .member
                .order(interval, *meter, &limits, allowance)
            {
                self.send(
                    i + 1,
                    0,
                    &Message::Order(Box::new(OrderMessage::unsigned(order))),
                );
            }
        }
        self.drive();
        self.now_ms = terms.deadline_ms(interval, INTERVAL_SECONDS);
        self.tick();
        self.close(interval)
    }

    /// Sends member `i`'s raw `message` to the market node (a hostile member's order, say) and
    /// returns the market node's answer to it.
    pub fn member_says(&mut self, i: usize, message: Message) -> Option<Message> {
        let channel = self.open_channel_of(i + 1);
        let from = channel.map(|channel| Sender {
            channel,
            allowance: self.allowance(Some(channel)),
            meter: None,
        });
        self.exchange.on_message(
            from,
            &message,
            self.now_ms,
            &Recovered::NONE,
            &self.market_signer,
        )
    }

    /// Moves the clock to `now_ms` and ticks everybody.
    pub fn advance(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        self.tick();
        self.drive();
    }

    fn close(&mut self, interval: IntervalIndex) -> Book {
        self.publish_roster(false);
        let (mut book, mut settlements) = self
            .exchange
            .close(interval, &self.market_signer)
            .expect("the market's books clear");
        match self.fault {
            Some(MarketFault::WrongClearing(at)) if at == interval => {
                book.price = book.price.map(|p| PricePerKwh(p.0 + 1));
                self.resign(&mut book, &mut settlements);
            }
            Some(MarketFault::DropsOrder(at, who)) if at == interval => {
                let pseudonym = self.pseudonym(who);
                book.orders.retain(|o| o.order.member != pseudonym);
                // Cleared again without it, so that the clearing itself is the rule's.
                let roster = self.exchange.roster(&self.market_signer).0.clone();
                let terms = self.exchange.terms().clone();
                let (b, _) = Book::close(
                    &terms,
                    INTERVAL_SECONDS,
                    interval,
                    &roster,
                    book.orders.clone(),
                    &self.market_signer,
                )
                .expect("clears");
                book = b;
                let digest = book.digest();
                settlements.retain(|(c, _)| *c != self.homes[who].channel);
                for (_, s) in &mut settlements {
                    s.book = digest;
                }
            }
            Some(MarketFault::Overcharges(at, who)) if at == interval => {
                for (c, s) in &mut settlements {
                    if *c == self.homes[who].channel && s.paid.0 > 0 {
                        s.paid = Amount(s.paid.0 + 1);
                    }
                }
            }
            _ => {}
        }
        self.books.push(book.clone());
        for p in Parts::split(Topic::Book, interval.0, &book) {
            for i in 0..self.homes.len() {
                if self.homes[i].online {
                    self.send(0, i + 1, &Message::Part(p.clone()));
                }
            }
        }
        self.drive();
        for (channel, settlement) in settlements {
            self.market.handle(Input::Settlement {
                channel,
                settlement,
            });
        }
        self.drive();
        book
    }

    fn resign(&self, book: &mut Book, settlements: &mut [(ChannelId, Settlement)]) {
        book.sig = self.market_signer.sign(&book.digest());
        let digest = book.digest();
        for (_, s) in settlements {
            s.book = digest;
        }
    }

    fn publish_roster(&mut self, force: bool) {
        let (roster, fresh) = self.exchange.roster(&self.market_signer);
        if !(fresh || force) {
            return;
        }
        let parts = Parts::split(Topic::Roster, roster.epoch, roster);
        for i in 0..self.homes.len() {
            if self.homes[i].online {
                for p in &parts {
                    self.send(0, i + 1, &Message::Part(p.clone()));
                }
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, message: &Message) {
        self.links
            .entry((from, to))
            .or_default()
            .push_back(message.encode());
    }

    fn tick(&mut self) {
        let now_ms = self.now_ms;
        self.market.handle(Input::Tick { now_ms });
        for h in &mut self.homes {
            h.node.handle(Input::Tick { now_ms });
        }
    }

    /// The market node's open channel with party `who` (an index into `ids`).
    fn open_channel_of(&self, who: usize) -> Option<ChannelId> {
        let peer = self.ids[who];
        self.market
            .channels()
            .find(|c| {
                c.peer == peer && c.phase == Phase::Open && c.params.tariff.market().is_some()
            })
            .map(|c| c.id)
    }

    /// What the market node lets the member of `channel` order now.
    fn allowance(&self, channel: Option<ChannelId>) -> Option<Allowance> {
        let view = self.market.channel(&channel?)?;
        gridchan_channel::market::allowance(&view, self.exchange.terms(), self.now_ms)
    }

    /// Carries out every output and delivers every frame until nothing moves.
    pub fn drive(&mut self) {
        for _ in 0..1_000_000 {
            let mut moved = self.flush_market();
            for i in 0..self.homes.len() {
                moved |= self.flush_member(i);
            }
            let keys: Vec<(usize, usize)> = self.links.keys().copied().collect();
            for (from, to) in keys {
                let Some(frame) = self
                    .links
                    .get_mut(&(from, to))
                    .and_then(VecDeque::pop_front)
                else {
                    continue;
                };
                moved = true;
                let message = Message::decode(&frame).expect("parties send valid frames");
                if to == 0 {
                    self.deliver_to_market(from, message);
                } else {
                    self.deliver_to_member(to - 1, message);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the market did not become idle");
    }

    fn deliver_to_market(&mut self, from: usize, message: Message) {
        if matches!(message, Message::Enrol(_) | Message::Order(_)) {
            if let Some(answer) = self.member_says(from - 1, message) {
                self.send(0, from, &answer);
            }
            return;
        }
        self.market.handle(Input::Message {
            from: self.ids[from],
            message,
        });
    }

    fn deliver_to_member(&mut self, i: usize, message: Message) {
        if message.channel_id().is_some() {
            let from = self.ids[0];
            self.homes[i].node.handle(Input::Message { from, message });
            return;
        }
        match self.homes[i]
            .member
            .on_message(message, &mut |_, _| Recovered::collect([]))
        {
            Ok(Some(step)) => {
                if let MemberStep::Refused { interval, .. } = &step {
                    let channel = self.homes[i].channel;
                    self.homes[i].node.handle(Input::BookRefused {
                        channel,
                        interval: *interval,
                    });
                }
                if let MemberStep::Book {
                    settlement: Some(settlement),
                    ..
                } = &step
                {
                    let channel = self.homes[i].channel;
                    self.homes[i].node.handle(Input::Settlement {
                        channel,
                        settlement: *settlement,
                    });
                }
                self.steps[i].push(step);
            }
            Ok(None) => {}
            Err(e) => self.disconnects.push((i + 1, 0, e.to_string())),
        }
    }

    fn flush_market(&mut self) -> bool {
        let mut any = false;
        while let Some(output) = self.market.poll_output() {
            any = true;
            match output {
                Output::Persist { update, .. } => self.market.handle(Input::Persisted(update)),
                Output::Send { to, message } => {
                    let who = self.ids.iter().position(|id| *id == to).expect("a member");
                    if self.homes[who - 1].online {
                        self.send(0, who, &message);
                    }
                }
                Output::Disconnect { peer, reason } => {
                    let who = self
                        .ids
                        .iter()
                        .position(|id| *id == peer)
                        .expect("a member");
                    self.disconnects.push((0, who, reason));
                }
                Output::Ledger(_) | Output::Watchtower(_) | Output::Event(_) => {}
            }
        }
        any
    }

    fn flush_member(&mut self, i: usize) -> bool {
        let mut any = false;
        while let Some(output) = self.homes[i].node.poll_output() {
            any = true;
            match output {
                Output::Persist { update, .. } => {
                    self.homes[i].node.handle(Input::Persisted(update))
                }
                Output::Send { message, .. } => {
                    if self.homes[i].online {
                        self.send(i + 1, 0, &message);
                    }
                }
                Output::Disconnect { reason, .. } => self.disconnects.push((i + 1, 0, reason)),
                Output::Ledger(_) | Output::Watchtower(_) | Output::Event(_) => {}
            }
        }
        any
    }
}
