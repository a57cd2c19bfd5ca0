//! N gateways in one process (rust-lightning's `create_network`): each a [`Node`] with its
//! metering [`Round`]s, joined by in-memory links that carry encoded frames, on a virtual clock.
//! The harness is the gateways' hosts: it reads each home's meter, runs the announcement rounds
//! of `specs/protocol.md` ("Every metering interval"), feeds the readings to the cores, carries
//! out their outputs (persists acknowledged at once) and delivers frames until nothing moves.
//!
//! One home may be hostile in one of the ways of [`Hostility`]: it keeps its connections and
//! signs honestly, but lies in (or withholds) its announcements. The properties in
//! `tests/network.rs` show that every honest pair settles every interval nonetheless, and that
//! no honest home pays for more than its meter imported.

use std::collections::{BTreeMap, HashMap, VecDeque};

use gridchan_channel::allocate::Shares;
use gridchan_channel::metering::{MeterReading, Round, Step};
use gridchan_channel::wire::{Announce, Refuse};
use gridchan_channel::{
    Amount, ChannelId, Input, IntervalIndex, IntervalReading, LedgerEvent, Message, MeterTolerance,
    Node, NodeId, OpenRequest, Output, Phase, Policy, PricePerKwh, ProposalParts, Refusal, Signer,
    Tariff, WattHours,
};

/// How a hostile home misbehaves in its announcements (it signs honestly).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hostility {
    /// Never announces anything.
    Silent,
    /// Announces its round-1 totals only after every round's deadline.
    Late,
    /// Announces nothing in round 1 (no import, no export) and its real totals in round 2.
    ChangesTotals,
    /// Claims ten times what its meter measured, in both rounds.
    Inflates,
    /// Answers every proposal of a neighbour with a crossing proposal of its own, at the same
    /// version and interval, and never proposes otherwise.
    Crosses,
    /// Refuses every proposal of a neighbour as burned, claiming it signed version 2^64 - 1.
    ClaimsAbsurdVersion,
}

/// The interval length of the network's channels, in seconds.
pub const INTERVAL_SECONDS: u32 = 900;

/// A home: its node, its meter's totals per interval, and what its host saw.
struct Home {
    node: Node,
    /// Its key, for a hostile home's forged messages.
    signer: Signer,
    hostile: Option<Hostility>,
    rounds: BTreeMap<IntervalIndex, Round>,
    /// The readings its host gave each channel, per interval.
    readings: HashMap<(ChannelId, IntervalIndex), IntervalReading>,
}

/// N homes, a channel on each edge of the given graph, all open and funded.
pub struct Network {
    homes: Vec<Home>,
    ids: Vec<NodeId>,
    /// Frames in flight, per (from, to).
    links: HashMap<(usize, usize), VecDeque<Vec<u8>>>,
    /// The channel of each edge `(i, j)` with `i < j` (i is party A).
    pub channels: BTreeMap<(usize, usize), ChannelId>,
    pub now_ms: u64,
    /// Announcements a hostile `Late` home holds back until the deadline passed (to one
    /// neighbour, or to all).
    late: Vec<(usize, Option<usize>, Announce)>,
    /// Links taken down by a disconnect, brought up again at the next interval.
    down: Vec<(usize, usize)>,
    /// Why each disconnect happened, in order: (home that disconnected, its peer, reason).
    pub disconnects: Vec<(usize, usize, String)>,
}

impl Network {
    /// Homes `0..n`, connected along `edges`; home `hostile.0` misbehaves as `hostile.1`.
    pub fn new(n: usize, edges: &[(usize, usize)], hostile: Option<(usize, Hostility)>) -> Network {
        let mut homes = Vec::new();
        let mut ids = Vec::new();
        for i in 0..n {
            let mut secret = [0x3c; 32];
            secret[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            let signer = Signer::new(&secret, &[i as u8; 32]).expect("fixed key");
            ids.push(signer.id());
            let own = signer.duplicate(&[i as u8; 32]);
            let policy = Policy {
                force_close_after_ms: None,
                interval_seconds: Some(INTERVAL_SECONDS),
                ..Policy::accepting_anyone()
            };
            homes.push(Home {
                node: Node::new(signer, policy),
                signer: own,
                hostile: hostile.filter(|(h, _)| *h == i).map(|(_, k)| k),
                rounds: BTreeMap::new(),
                readings: HashMap::new(),
            });
        }
        let mut net = Network {
            homes,
            ids,
            links: HashMap::new(),
            channels: BTreeMap::new(),
            now_ms: 1_000,
            late: Vec::new(),
            down: Vec::new(),
            disconnects: Vec::new(),
        };
        net.tick();
        for &(a, b) in edges {
            let (a, b) = (a.min(b), a.max(b));
            if a == b || net.channels.contains_key(&(a, b)) {
                continue;
            }
            for (x, y) in [(a, b), (b, a)] {
                let peer = net.ids[y];
                net.homes[x].node.handle(Input::Connected(peer));
            }
            let request = OpenRequest {
                peer: net.ids[b],
                deposit: Amount(1_000_000_000),
                peer_deposit: Amount(1_000_000_000),
                tariff: Tariff::Flat(PricePerKwh(200_000)),
                challenge_window_blocks: 20,
                funding_window_blocks: 20,
                interval_seconds: INTERVAL_SECONDS,
                tolerance: MeterTolerance {
                    absolute_wh: 5,
                    permille: 20,
                },
                opened_at: IntervalIndex(0),
                nonce: [b as u8; 32],
                evidence: Default::default(),
            };
            let id = net.homes[a]
                .node
                .open(request, true)
                .expect("valid parameters");
            net.channels.insert((a, b), id);
            net.drive();
            for x in [a, b] {
                net.homes[x].node.handle(Input::Ledger {
                    channel: id,
                    event: LedgerEvent::Funded,
                });
            }
            net.drive();
        }
        net
    }

    pub fn id(&self, home: usize) -> NodeId {
        self.ids[home]
    }

    pub fn node(&self, home: usize) -> &Node {
        &self.homes[home].node
    }

    pub fn is_hostile(&self, home: usize) -> bool {
        self.homes[home].hostile.is_some()
    }

    /// The reading the host of `home` gave channel `channel` for `interval`, if any.
    pub fn reading(
        &self,
        home: usize,
        channel: ChannelId,
        interval: IntervalIndex,
    ) -> Option<IntervalReading> {
        self.homes[home].readings.get(&(channel, interval)).copied()
    }

    /// The neighbours of `home` with an open channel, on a link that is up.
    fn neighbours(&self, home: usize) -> Vec<usize> {
        self.channels
            .keys()
            .filter_map(|&(a, b)| match home {
                h if h == a => Some(b),
                h if h == b => Some(a),
                _ => None,
            })
            .filter(|&other| !self.down.contains(&(home.min(other), home.max(other))))
            .filter(|&other| {
                self.homes[home]
                    .node
                    .channels()
                    .any(|c| c.peer == self.ids[other] && c.phase == Phase::Open)
            })
            .collect()
    }

    /// One metering interval: every home's meter reads `meters[home]`, the rounds run (the
    /// clock passes each round's deadline), and everything is delivered until nothing moves.
    pub fn interval(&mut self, interval: IntervalIndex, meters: &[MeterReading]) {
        self.now_ms = (interval.0 + 1) * u64::from(INTERVAL_SECONDS) * 1000;
        for (a, b) in std::mem::take(&mut self.down) {
            for (x, y) in [(a, b), (b, a)] {
                let peer = self.ids[y];
                self.homes[x].node.handle(Input::Connected(peer));
            }
        }
        self.tick();
        for (home, &own) in meters.iter().enumerate().take(self.homes.len()) {
            let neighbours: std::collections::HashSet<NodeId> = self
                .neighbours(home)
                .into_iter()
                .map(|n| self.ids[n])
                .collect();
            if neighbours.is_empty() {
                continue;
            }
            let (round, first) = Round::start(interval, own, neighbours);
            self.homes[home].rounds.insert(interval, round);
            self.act(home, interval, vec![first]);
        }
        self.drive();
        // The deadline: rounds still waiting count what arrived.
        let deadline = self.homes.iter().find_map(|h| h.rounds.get(&interval));
        self.now_ms = deadline.map_or(self.now_ms, |r| r.deadline_ms(INTERVAL_SECONDS));
        self.tick();
        for home in 0..self.homes.len() {
            if let Some(round) = self.homes[home].rounds.get_mut(&interval) {
                let steps = round.on_timeout();
                self.act(home, interval, steps);
            }
        }
        self.drive();
        // A late home speaks now.
        for (home, to, a) in std::mem::take(&mut self.late) {
            self.announce(home, to, a);
        }
        self.drive();
        for home in &mut self.homes {
            home.rounds.retain(|i, _| i.0 + 1 >= interval.0);
        }
    }

    /// Carries out a home's round steps: its announcements (as its hostility bends them) and
    /// its readings.
    fn act(&mut self, home: usize, interval: IntervalIndex, steps: Vec<Step>) {
        for step in steps {
            match step {
                Step::Announce(a) => self.announce_as_it_would(home, None, a),
                Step::AnnounceTo { peer, announce } => {
                    let to = self.ids.iter().position(|id| *id == peer).expect("a home");
                    self.announce_as_it_would(home, Some(to), announce);
                }
                Step::Reading { peer, reading } => {
                    let other = self.ids.iter().position(|id| *id == peer).expect("a home");
                    let key = (home.min(other), home.max(other));
                    let Some(&channel) = self.channels.get(&key) else {
                        continue;
                    };
                    debug_assert_eq!(reading.interval, interval);
                    self.homes[home]
                        .readings
                        .insert((channel, reading.interval), reading);
                    self.homes[home]
                        .node
                        .handle(Input::Reading { channel, reading });
                }
                Step::LeftOut { .. } => {}
            }
        }
    }

    /// Sends a home's announcement (to `to`, or to every neighbour) as its hostility bends it.
    fn announce_as_it_would(&mut self, home: usize, to: Option<usize>, a: Announce) {
        let a = match self.homes[home].hostile {
            None | Some(Hostility::Crosses) | Some(Hostility::ClaimsAbsurdVersion) => Some(a),
            Some(Hostility::Silent) => None,
            Some(Hostility::Late) => {
                self.late.push((home, to, a));
                None
            }
            Some(Hostility::ChangesTotals) if a.shares.is_none() => Some(Announce {
                import: WattHours(0),
                export: WattHours(0),
                ..a
            }),
            Some(Hostility::ChangesTotals) => Some(a),
            Some(Hostility::Inflates) => Some(Announce {
                import: WattHours(a.import.0 * 10),
                export: WattHours(a.export.0 * 10),
                shares: a.shares.map(|s| Shares {
                    sell: WattHours(s.sell.0 * 10),
                    buy: WattHours(s.buy.0 * 10),
                }),
                ..a
            }),
        };
        if let Some(a) = a {
            self.announce(home, to, a);
        }
    }

    fn announce(&mut self, home: usize, to: Option<usize>, a: Announce) {
        match to {
            Some(to) => self
                .links
                .entry((home, to))
                .or_default()
                .push_back(Message::Announce(a).encode()),
            None => self.broadcast(home, Message::Announce(a)),
        }
    }

    fn broadcast(&mut self, home: usize, message: Message) {
        for other in self.neighbours(home) {
            self.links
                .entry((home, other))
                .or_default()
                .push_back(message.encode());
        }
    }

    fn tick(&mut self) {
        let now_ms = self.now_ms;
        for home in &mut self.homes {
            home.node.handle(Input::Tick { now_ms });
        }
    }

    /// Carries out every output and delivers every frame until nothing moves.
    pub fn drive(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            for home in 0..self.homes.len() {
                moved |= self.flush(home);
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
                let message = Message::decode(&frame).expect("homes send valid frames");
                let sender = self.ids[from];
                match message {
                    Message::Announce(a) => {
                        let steps = match self.homes[to].rounds.get_mut(&a.interval) {
                            Some(round) => round.on_announce(sender, &a),
                            None => Vec::new(),
                        };
                        self.act(to, a.interval, steps);
                    }
                    Message::Propose(p) if self.homes[to].hostile.is_some() => {
                        if let Some(answer) = self.hostile_answer(to, &p) {
                            self.links
                                .entry((to, from))
                                .or_default()
                                .push_back(answer.encode());
                        } else {
                            self.homes[to].node.handle(Input::Message {
                                from: sender,
                                message: Message::Propose(p),
                            });
                        }
                    }
                    message => self.homes[to].node.handle(Input::Message {
                        from: sender,
                        message,
                    }),
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network did not become idle");
    }

    /// What a hostile home sends instead of handling a neighbour's proposal, if its hostility
    /// says so.
    fn hostile_answer(&self, home: usize, p: &ProposalParts) -> Option<Message> {
        let channel = p.state.channel_id;
        match self.homes[home].hostile? {
            Hostility::Crosses => {
                let view = self.homes[home].node.channel(&channel)?;
                let current = view.current?;
                let (state, _) = current
                    .state()
                    .settle(
                        &view.params,
                        p.state.version,
                        view.me,
                        p.state.last_interval,
                        WattHours(1),
                    )
                    .ok()?;
                let sig = self.homes[home].signer.sign(&state.digest());
                Some(Message::Propose(ProposalParts {
                    state,
                    proposer: view.me,
                    sig,
                }))
            }
            Hostility::ClaimsAbsurdVersion => Some(Message::Refuse(Refuse {
                channel_id: channel,
                version: p.state.version,
                reason: Refusal::VersionBurned { highest: u64::MAX },
            })),
            _ => None,
        }
    }

    /// Takes the link between `a` and `b` down: frames in flight are lost, both see it.
    fn disconnect(&mut self, a: usize, b: usize) {
        self.links.remove(&(a, b));
        self.links.remove(&(b, a));
        for (x, y) in [(a, b), (b, a)] {
            let peer = self.ids[y];
            self.homes[x].node.handle(Input::Disconnected(peer));
        }
        if !self.down.contains(&(a.min(b), a.max(b))) {
            self.down.push((a.min(b), a.max(b)));
        }
    }

    fn flush(&mut self, home: usize) -> bool {
        let mut any = false;
        while let Some(output) = self.homes[home].node.poll_output() {
            any = true;
            match output {
                Output::Persist { update, .. } => {
                    self.homes[home].node.handle(Input::Persisted(update))
                }
                Output::Send { to, message } => {
                    let other = self.ids.iter().position(|id| *id == to).expect("a home");
                    self.links
                        .entry((home, other))
                        .or_default()
                        .push_back(message.encode());
                }
                Output::Disconnect { peer, reason } => {
                    let other = self.ids.iter().position(|id| *id == peer).expect("a home");
                    self.disconnects.push((home, other, reason));
                    self.disconnect(home, other);
                }
                Output::Ledger(_) | Output::Watchtower(_) | Output::Event(_) => {}
            }
        }
        any
    }
}
