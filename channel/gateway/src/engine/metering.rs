//! Metering: each interval's round of announcements with the neighbours (the core's
//! [`Round`]), driven here, where the neighbours' messages arrive and the channels are: the
//! daemon hands over its meter's reading once, and the readings the round gives go to the core
//! on the same thread.

use std::collections::{BTreeMap, HashMap, HashSet};

use gridchan_channel::metering::{Caps, MeterReading, Round, Step};
use gridchan_channel::reading::SignedReading;
use gridchan_channel::wire::Announce;
use gridchan_channel::{
    ChannelId, Input, IntervalIndex, Message, NodeId, Phase, Precomputed, WattHours,
};
use tokio::time::Instant;

use super::Engine;

/// Announcements kept for a round that has not started yet (a neighbour's meter a little ahead
/// of ours), at most.
const MAX_EARLY: usize = 1024;

/// The rounds under way, and what came before its round.
#[derive(Default)]
pub(super) struct Rounds {
    rounds: BTreeMap<IntervalIndex, Round>,
    /// When each round that waits for its neighbours' totals stops waiting.
    deadlines: BTreeMap<IntervalIndex, Instant>,
    early: Vec<(NodeId, Announce)>,
    /// Neighbours whose balance with us is spent (said once, until they can pay again).
    pub(super) cannot_pay: HashSet<NodeId>,
    /// Neighbours whose readings must be signed, by meter key, and the interval's length.
    pub(super) meters: HashMap<NodeId, NodeId>,
    pub(super) interval_seconds: u32,
}

impl Rounds {
    /// When the next round stops waiting, if one waits.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.values().min().copied()
    }
}

impl<S: super::EngineStore> Engine<S> {
    /// The meter's reading of `interval`: the round with the neighbours trading now starts;
    /// it stops waiting for their totals at `deadline`.
    pub(super) fn on_meter(
        &mut self,
        interval: IntervalIndex,
        own: MeterReading,
        signed: Option<SignedReading>,
        deadline: Instant,
        ahead: &Precomputed,
    ) {
        // Rounds older than the interval before stop waiting.
        let stale: Vec<IntervalIndex> = self
            .rounds
            .rounds
            .keys()
            .copied()
            .filter(|i| i.0 + 1 < interval.0)
            .collect();
        for i in stale {
            self.rounds.deadlines.remove(&i);
            if let Some(mut r) = self.rounds.rounds.remove(&i) {
                let steps = r.on_timeout();
                self.act(i, steps, ahead);
                self.order(i);
            }
        }
        let open = self.open_channels(true);
        let neighbours: HashSet<NodeId> = open.keys().copied().collect();
        self.market_meter(interval, own, signed, !neighbours.is_empty());
        if neighbours.is_empty() {
            return;
        }
        // Each neighbour's share of our meter at most what its channel can still settle.
        let caps: HashMap<NodeId, Caps> = open
            .iter()
            .filter_map(|(peer, id)| Some((*peer, self.node.caps(id, interval)?)))
            .collect();
        for (peer, c) in &caps {
            let spent = c.sell == WattHours(0);
            if spent && self.rounds.cannot_pay.insert(*peer) {
                tracing::warn!(
                    "neighbour {peer} cannot pay for energy any more (its balance in our channel is spent): none of our surplus goes to it until the channel is topped up"
                );
            } else if !spent {
                self.rounds.cannot_pay.remove(peer);
            }
        }
        let (round, first) = Round::start_signed(interval, own, signed, neighbours);
        // A neighbour counts only with its meter's signed reading when the channel's terms
        // name its meter, or the owner does (`[[peers]] meter`).
        let meters = open
            .iter()
            .filter_map(|(peer, id)| {
                let named = self.node.peer_meter(id);
                Some((
                    *peer,
                    named.or_else(|| self.rounds.meters.get(peer).copied())?,
                ))
            })
            .collect();
        let interval_seconds = open
            .values()
            .find_map(|id| self.node.params(id).map(|p| p.interval_seconds))
            .unwrap_or(self.rounds.interval_seconds);
        let mut round = round.with_caps(caps).with_meters(meters, interval_seconds);
        self.act(interval, vec![first], ahead);
        let mut steps = Vec::new();
        self.rounds.early.retain(|(peer, a)| {
            if a.interval == interval {
                steps.extend(round.on_announce(*peer, a));
                false
            } else {
                a.interval > interval
            }
        });
        self.act(interval, steps, ahead);
        let finished = round.finished();
        if !round.counted() {
            self.rounds.deadlines.insert(interval, deadline);
        }
        self.rounds.rounds.insert(interval, round);
        if finished {
            self.order(interval);
        }
    }

    /// A neighbour's meter announcement.
    pub(super) fn on_announce(&mut self, peer: NodeId, announce: Announce, ahead: &Precomputed) {
        match self.rounds.rounds.get_mut(&announce.interval) {
            Some(round) => {
                let steps = round.on_announce(peer, &announce);
                let finished = round.finished();
                self.act(announce.interval, steps, ahead);
                if finished {
                    self.order(announce.interval);
                }
            }
            None if self.rounds.early.len() < MAX_EARLY => self.rounds.early.push((peer, announce)),
            None => {}
        }
    }

    /// The rounds whose wait for their neighbours is over go on without those that said
    /// nothing.
    pub(super) fn on_round_deadlines(&mut self) {
        let now = Instant::now();
        let due: Vec<IntervalIndex> = self
            .rounds
            .deadlines
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(i, _)| *i)
            .collect();
        for i in due {
            self.rounds.deadlines.remove(&i);
            if let Some(r) = self.rounds.rounds.get_mut(&i) {
                let steps = r.on_timeout();
                self.act(i, steps, &Precomputed::NONE);
            }
            // What the neighbours did not take by now goes to the market.
            self.order(i);
        }
    }

    /// The open channel with each neighbour (`connected`: each connected one): whom a round
    /// waits for and tells, and where the whole flow with a neighbour goes.
    fn open_channels(&self, connected: bool) -> HashMap<NodeId, ChannelId> {
        self.node
            .neighbour_channels()
            .filter(|(_, peer, phase)| {
                *phase == Phase::Open && (!connected || self.peers.contains_key(peer))
            })
            .map(|(id, peer, _)| (peer, id))
            .collect()
    }

    fn act(&mut self, interval: IntervalIndex, steps: Vec<Step>, ahead: &Precomputed) {
        if steps.is_empty() {
            return;
        }
        let open = self.open_channels(false);
        for step in steps {
            match step {
                Step::Announce(a) => {
                    let connected: Vec<NodeId> = open
                        .keys()
                        .filter(|p| self.peers.contains_key(p))
                        .copied()
                        .collect();
                    for peer in connected {
                        self.send(peer, Message::Announce(a));
                    }
                }
                Step::AnnounceTo { peer, announce } => {
                    if open.contains_key(&peer) && self.peers.contains_key(&peer) {
                        self.send(peer, Message::Announce(announce));
                    }
                }
                Step::LeftOut { peer, why } => {
                    tracing::warn!("neighbour {peer} left out of this interval: it {why}");
                    let _ = self.reports.send(super::Report::LeftOut {
                        peer,
                        interval,
                        why,
                    });
                }
                Step::Reading { peer, reading } => {
                    let (d, r) = (reading.delivered.0, reading.received.0);
                    if !self.share_taken(interval, d, r) {
                        tracing::warn!(
                            "neighbour {peer} left out of interval {}: its totals came after our market order",
                            interval.0
                        );
                        continue;
                    }
                    if let Some(&channel) = open.get(&peer) {
                        self.node
                            .handle_with(Input::Reading { channel, reading }, ahead);
                    }
                }
            }
        }
    }
}
