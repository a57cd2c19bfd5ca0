//! One metering interval's exchange of announcements with the neighbours, and the per-channel
//! readings that come out of it (the rule of [`crate::allocate`]).
//!
//! Round 1: every gateway announces its meter totals to every neighbour (`shares: None`). Once
//! it has every neighbour's totals, or at the round's deadline (a small fraction of the
//! interval, see [`ROUND_WAIT_DIVISOR`]), it computes its shares with the neighbours that
//! answered and sends each its own (round 2). A neighbour's round-2 announcement, beside our
//! shares with it, gives the flows with that neighbour.
//!
//! Nobody can stall anybody: a neighbour whose totals had not arrived by the deadline is left
//! out of the interval (whatever it sends later: our shares did not count it, so a flow with
//! it could exceed our meter), and so is one whose round-2 totals differ from its round-1
//! totals (it lied between the rounds) or whose shares exceed its own totals. Each is reported
//! once, with what it did.

use std::collections::{HashMap, HashSet};

use crate::allocate::{flow, shares, Shares};
use crate::crypto::NodeId;
use crate::io::IntervalReading;
use crate::reading::SignedReading;
use crate::types::{IntervalIndex, WattHours};
use crate::wire::Announce;

/// What a gateway's own meter measured in one interval (net metering: at most one of the two
/// is non-zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeterReading {
    pub import: WattHours,
    pub export: WattHours,
}

/// Round 1 waits at most the interval's length divided by this for the neighbours' totals.
pub const ROUND_WAIT_DIVISOR: u64 = 10;

/// When round 1 of `interval` stops waiting (ms since the Unix epoch): a
/// [`ROUND_WAIT_DIVISOR`]th of the interval after the interval ends.
pub fn round_deadline_ms(interval: IntervalIndex, interval_seconds: u32) -> u64 {
    let period = u64::from(interval_seconds) * 1000;
    (interval.0 + 1) * period + period / ROUND_WAIT_DIVISOR
}

/// What the host should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this announcement to every neighbour (round 1).
    Announce(Announce),
    /// Send this announcement to `peer` only (round 2: our shares with it).
    AnnounceTo { peer: NodeId, announce: Announce },
    /// Give this reading to the channels with `peer`.
    Reading {
        peer: NodeId,
        reading: IntervalReading,
    },
    /// `peer` is left out of this interval, and why (for the log, once).
    LeftOut { peer: NodeId, why: String },
}

/// The most energy a channel can settle with one neighbour in an interval: what each side's
/// balance can still pay for at the interval's price. A neighbour that cannot pay for our
/// surplus has none of it reserved for it (it goes to those who can), and we ask none from a
/// neighbour we cannot pay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// The most the neighbour can pay us for.
    pub sell: WattHours,
    /// The most we can pay the neighbour for.
    pub buy: WattHours,
}

/// One interval's round of announcements.
pub struct Round {
    interval: IntervalIndex,
    own: MeterReading,
    neighbours: HashSet<NodeId>,
    /// What each neighbour's channel can settle (none: no limit).
    caps: HashMap<NodeId, Caps>,
    /// Our meter's signed reading of the interval, sent with our announcements.
    signed: Option<SignedReading>,
    /// The meter key of each neighbour whose channel requires signed readings, and the
    /// interval's length: such a neighbour's totals count only as its meter signed them.
    meters: HashMap<NodeId, NodeId>,
    interval_seconds: u32,
    /// Each neighbour's totals, from the first announcement it made for the interval.
    totals: HashMap<NodeId, (WattHours, WattHours)>,
    /// Each neighbour's round-2 totals and shares with us.
    finals: HashMap<NodeId, ((WattHours, WattHours), Shares)>,
    /// Our shares with each neighbour whose totals we held when we computed them.
    own_shares: Option<HashMap<NodeId, Shares>>,
    /// Neighbours given a reading or left out: nothing more for them this interval.
    done: HashSet<NodeId>,
}

impl Round {
    /// Starts the round for `interval` with our own meter reading; returns it with our
    /// round-1 announcement.
    pub fn start(
        interval: IntervalIndex,
        own: MeterReading,
        neighbours: HashSet<NodeId>,
    ) -> (Round, Step) {
        Round::start_signed(interval, own, None, neighbours)
    }

    /// [`Round::start`], our announcements carrying our meter's `signed` reading of the
    /// interval (`specs/readings.md`).
    pub fn start_signed(
        interval: IntervalIndex,
        own: MeterReading,
        signed: Option<SignedReading>,
        neighbours: HashSet<NodeId>,
    ) -> (Round, Step) {
        let round = Round {
            interval,
            own,
            neighbours,
            caps: HashMap::new(),
            signed,
            meters: HashMap::new(),
            interval_seconds: 0,
            totals: HashMap::new(),
            finals: HashMap::new(),
            own_shares: None,
            done: HashSet::new(),
        };
        let first = Step::Announce(Announce {
            interval,
            import: own.import,
            export: own.export,
            shares: None,
            reading: signed,
        });
        (round, first)
    }

    /// Limits the energy our shares offer each neighbour of `caps` to what its channel can
    /// settle (before round 2: shares computed already keep what they were).
    pub fn with_caps(mut self, caps: HashMap<NodeId, Caps>) -> Round {
        self.caps = caps;
        self
    }

    /// Requires of each neighbour of `meters` its meter's signed reading of the interval (of
    /// `interval_seconds`) with its totals, and takes the totals only if they are what that
    /// meter signed: a neighbour announcing an export its meter did not sign, or a reading
    /// forged, replayed or of another meter, is left out of the interval.
    pub fn with_meters(mut self, meters: HashMap<NodeId, NodeId>, interval_seconds: u32) -> Round {
        self.meters = meters;
        self.interval_seconds = interval_seconds;
        self
    }

    pub fn interval(&self) -> IntervalIndex {
        self.interval
    }

    /// A neighbour's announcement for this interval.
    pub fn on_announce(&mut self, peer: NodeId, a: &Announce) -> Vec<Step> {
        if a.interval != self.interval
            || !self.neighbours.contains(&peer)
            || self.done.contains(&peer)
        {
            return Vec::new();
        }
        let mut steps = Vec::new();
        if !self.totals.contains_key(&peer) {
            if let Some(why) = self.unsigned(peer, a) {
                self.done.insert(peer);
                steps.push(Step::LeftOut { peer, why });
                if self.own_shares.is_none() && self.all_answered() {
                    steps.extend(self.share_out());
                }
                steps.extend(self.readings());
                return steps;
            }
        }
        self.totals.entry(peer).or_insert((a.import, a.export));
        if let Some(shares) = a.shares {
            self.finals.insert(peer, ((a.import, a.export), shares));
        }
        if self.own_shares.is_none() && self.all_answered() {
            steps.extend(self.share_out());
        }
        steps.extend(self.readings());
        steps
    }

    /// Every neighbour gave its totals or was left out.
    fn all_answered(&self) -> bool {
        self.neighbours
            .iter()
            .all(|n| self.totals.contains_key(n) || self.done.contains(n))
    }

    /// Why `peer`'s totals in `a` do not count, if its channel requires signed readings and
    /// they are not what its meter signed.
    fn unsigned(&self, peer: NodeId, a: &Announce) -> Option<String> {
        let meter = self.meters.get(&peer)?;
        let Some(signed) = &a.reading else {
            return Some(format!(
                "announced its totals for interval {} without its meter's signed reading (the channel requires one)",
                self.interval.0
            ));
        };
        match signed.check(meter, self.interval, self.interval_seconds) {
            Err(e) => Some(format!(
                "sent a meter reading for interval {} that does not count: {e}",
                self.interval.0
            )),
            Ok(r) if (r.import, r.export) != (a.import, a.export) => Some(format!(
                "announced {} Wh of import and {} Wh of export for interval {}; its meter signed {} and {}",
                a.import.0, a.export.0, self.interval.0, r.import.0, r.export.0
            )),
            Ok(_) => None,
        }
    }

    /// When round 1 stops waiting (ms since the Unix epoch): a [`ROUND_WAIT_DIVISOR`]th of the
    /// interval after the interval ends. The host calls [`Round::on_timeout`] then.
    pub fn deadline_ms(&self, interval_seconds: u32) -> u64 {
        round_deadline_ms(self.interval, interval_seconds)
    }

    /// Whether our own round-2 announcements are out (shares computed).
    pub fn counted(&self) -> bool {
        self.own_shares.is_some()
    }

    /// Whether every neighbour has its reading or was left out: no flow of this interval is
    /// still to come.
    pub fn finished(&self) -> bool {
        self.own_shares.is_some() && self.done.len() == self.neighbours.len()
    }

    /// The round's deadline passed: compute our shares from what arrived, and leave out the
    /// neighbours that said nothing.
    pub fn on_timeout(&mut self) -> Vec<Step> {
        let mut steps = Vec::new();
        if self.own_shares.is_none() {
            let mut silent: Vec<NodeId> = self
                .neighbours
                .iter()
                .filter(|n| !self.totals.contains_key(n) && !self.done.contains(n))
                .copied()
                .collect();
            silent.sort();
            for peer in silent {
                self.done.insert(peer);
                steps.push(Step::LeftOut {
                    peer,
                    why: format!(
                        "sent no meter totals for interval {} before the round's deadline",
                        self.interval.0
                    ),
                });
            }
            steps.extend(self.share_out());
        }
        steps.extend(self.readings());
        steps
    }

    /// Our shares with every neighbour whose totals we hold, one announcement to each.
    fn share_out(&mut self) -> Vec<Step> {
        let mut seen: Vec<(NodeId, WattHours, WattHours)> = self
            .totals
            .iter()
            .filter(|(peer, _)| !self.done.contains(peer))
            .map(|(peer, &(import, export))| match self.caps.get(peer) {
                // The neighbour's import is what it would buy from us, its export what it
                // would sell us: each at most what the channel can pay for.
                Some(c) => (*peer, import.min(c.sell), export.min(c.buy)),
                None => (*peer, import, export),
            })
            .collect();
        seen.sort_by_key(|(peer, _, _)| *peer);
        let ours = shares(self.own.import, self.own.export, &seen);
        let mut steps = Vec::with_capacity(seen.len());
        let mut own_shares = HashMap::with_capacity(seen.len());
        for ((peer, _, _), shares) in seen.into_iter().zip(ours) {
            own_shares.insert(peer, shares);
            steps.push(Step::AnnounceTo {
                peer,
                announce: Announce {
                    interval: self.interval,
                    import: self.own.import,
                    export: self.own.export,
                    shares: Some(shares),
                    reading: self.signed,
                },
            });
        }
        self.own_shares = Some(own_shares);
        steps
    }

    fn readings(&mut self) -> Vec<Step> {
        let Some(own_shares) = &self.own_shares else {
            return Vec::new();
        };
        let mut steps = Vec::new();
        let mut peers: Vec<(NodeId, Shares)> = self
            .finals
            .keys()
            .filter(|peer| !self.done.contains(peer))
            .filter_map(|peer| Some((*peer, *own_shares.get(peer)?)))
            .collect();
        peers.sort_by_key(|(peer, _)| *peer);
        for (peer, ours) in peers {
            let ((import, export), theirs) = self.finals[&peer];
            self.done.insert(peer);
            let ours = &ours;
            if self.totals.get(&peer) != Some(&(import, export)) {
                steps.push(Step::LeftOut {
                    peer,
                    why: format!(
                        "announced other meter totals in round 2 of interval {} than in round 1",
                        self.interval.0
                    ),
                });
                continue;
            }
            if theirs.sell > export || theirs.buy > import {
                steps.push(Step::LeftOut {
                    peer,
                    why: format!(
                        "offered shares beyond its own meter totals in interval {} (sell {} of {} exported, buy {} of {} imported)",
                        self.interval.0, theirs.sell.0, export.0, theirs.buy.0, import.0
                    ),
                });
                continue;
            }
            steps.push(Step::Reading {
                peer,
                reading: IntervalReading {
                    interval: self.interval,
                    delivered: flow(ours, &theirs),
                    received: flow(&theirs, ours),
                    metered_import: self.own.import,
                },
            });
        }
        steps
    }
}

#[cfg(test)]
mod tests {
    use crate::crypto::Signer;

    use super::*;

    fn id(b: u8) -> NodeId {
        Signer::new(&[b; 32], &[0; 32]).unwrap().id()
    }

    fn meter(import: u64, export: u64) -> MeterReading {
        MeterReading {
            import: WattHours(import),
            export: WattHours(export),
        }
    }

    fn announce(import: u64, export: u64, shares: Option<(u64, u64)>) -> Announce {
        Announce {
            interval: IntervalIndex(5),
            import: WattHours(import),
            export: WattHours(export),
            shares: shares.map(|(sell, buy)| Shares {
                sell: WattHours(sell),
                buy: WattHours(buy),
            }),
            reading: None,
        }
    }

    fn left_out(steps: &[Step]) -> Vec<NodeId> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::LeftOut { peer, .. } => Some(*peer),
                _ => None,
            })
            .collect()
    }

    fn readings(steps: &[Step]) -> Vec<(NodeId, IntervalReading)> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Reading { peer, reading } => Some((*peer, *reading)),
                _ => None,
            })
            .collect()
    }

    /// Plays one interval among `homes` (key, meter, neighbours), delivering every
    /// announcement, and returns each home's readings by peer.
    fn play(
        homes: &[(NodeId, MeterReading, Vec<NodeId>)],
    ) -> HashMap<NodeId, HashMap<NodeId, IntervalReading>> {
        let mut rounds = HashMap::new();
        let mut mail: Vec<(NodeId, Step)> = Vec::new();
        for (key, own, ns) in homes {
            let (round, first) = Round::start(IntervalIndex(5), *own, ns.iter().copied().collect());
            rounds.insert(*key, round);
            mail.push((*key, first));
        }
        let mut out: HashMap<NodeId, HashMap<NodeId, IntervalReading>> = HashMap::new();
        while let Some((from, step)) = mail.pop() {
            let to: Vec<(NodeId, Announce)> = match step {
                Step::Announce(a) => homes
                    .iter()
                    .find(|h| h.0 == from)
                    .unwrap()
                    .2
                    .iter()
                    .map(|n| (*n, a))
                    .collect(),
                Step::AnnounceTo { peer, announce } => vec![(peer, announce)],
                Step::Reading { peer, reading } => {
                    out.entry(from).or_default().insert(peer, reading);
                    continue;
                }
                Step::LeftOut { peer, why } => panic!("{peer:?} left out: {why}"),
            };
            for (peer, a) in to {
                for step in rounds.get_mut(&peer).unwrap().on_announce(from, &a) {
                    mail.push((peer, step));
                }
            }
        }
        assert!(rounds.values().all(Round::finished));
        out
    }

    /// Three homes in a line: S exports 300 to B1 (importing 50) and B2 (importing 500).
    /// Both ends of each channel compute the same flows: B1 takes its 50, B2 the other 250.
    #[test]
    fn both_ends_of_each_channel_compute_the_same_flow() {
        let (s, b1, b2) = (id(1), id(2), id(3));
        let got = play(&[
            (s, meter(0, 300), vec![b1, b2]),
            (b1, meter(50, 0), vec![s]),
            (b2, meter(500, 0), vec![s]),
        ]);
        assert_eq!(got[&s][&b1].delivered, WattHours(50));
        assert_eq!(got[&b1][&s].received, WattHours(50));
        assert_eq!(got[&s][&b2].delivered, WattHours(250));
        assert_eq!(got[&b2][&s].received, WattHours(250));
        assert_eq!(got[&b2][&s].metered_import, WattHours(500));
        assert_eq!(got[&s][&b2].received, WattHours(0));
    }

    /// A home whose meter both imported and exported in the interval sells to one neighbour
    /// and buys from another.
    #[test]
    fn a_home_can_sell_and_buy_in_one_interval() {
        let (h, seller, buyer) = (id(1), id(2), id(3));
        let got = play(&[
            (h, meter(40, 70), vec![seller, buyer]),
            (seller, meter(0, 100), vec![h]),
            (buyer, meter(100, 0), vec![h]),
        ]);
        assert_eq!(got[&h][&seller].received, WattHours(40));
        assert_eq!(got[&h][&buyer].delivered, WattHours(70));
        assert_eq!(got[&seller][&h].delivered, WattHours(40));
        assert_eq!(got[&buyer][&h].received, WattHours(70));
    }

    /// S exports 300 to two importing neighbours, B (honest) and M (silent, late or lying).
    fn seller() -> Round {
        Round::start(IntervalIndex(5), meter(0, 300), [id(2), id(9)].into()).0
    }

    #[test]
    fn a_silent_neighbour_is_left_out_at_the_deadline_and_the_others_settle() {
        let mut s = seller();
        assert!(s.on_announce(id(2), &announce(500, 0, None)).is_empty());
        let steps = s.on_timeout();
        assert_eq!(left_out(&steps), vec![id(9)]);
        let shares: Vec<(NodeId, Announce)> = steps
            .iter()
            .filter_map(|s| match s {
                Step::AnnounceTo { peer, announce } => Some((*peer, *announce)),
                _ => None,
            })
            .collect();
        assert_eq!(shares.len(), 1, "shares only for the one that answered");
        assert_eq!(shares[0].0, id(2));
        assert_eq!(shares[0].1.shares.unwrap().sell, WattHours(300));
        let steps = s.on_announce(id(2), &announce(500, 0, Some((0, 300))));
        assert_eq!(readings(&steps)[0].1.delivered, WattHours(300));
        // The silent one's totals arrive late: it gets no reading (the 300 went to B).
        let late = [
            s.on_announce(id(9), &announce(500, 0, None)),
            s.on_announce(id(9), &announce(500, 0, Some((0, 300)))),
        ]
        .concat();
        assert!(readings(&late).is_empty());
        assert!(s.finished());
    }

    #[test]
    fn a_neighbour_that_changes_its_totals_between_the_rounds_is_left_out() {
        let mut s = seller();
        s.on_announce(id(2), &announce(500, 0, None));
        // M says it imported nothing (so it gets no share), then claims 500.
        s.on_announce(id(9), &announce(0, 0, None));
        s.on_announce(id(2), &announce(500, 0, Some((0, 300))));
        let steps = s.on_announce(id(9), &announce(500, 0, Some((0, 300))));
        assert_eq!(left_out(&steps), vec![id(9)]);
        assert!(readings(&steps).is_empty());
    }

    #[test]
    fn a_neighbour_offering_more_than_its_meter_is_left_out() {
        let mut s = seller();
        s.on_announce(id(2), &announce(500, 0, None));
        s.on_announce(id(9), &announce(100, 0, None));
        // M imported 100 but would "buy" 1,000 from us.
        let steps = s.on_announce(id(9), &announce(100, 0, Some((0, 1_000))));
        assert_eq!(left_out(&steps), vec![id(9)]);
        // B is unaffected.
        let steps = s.on_announce(id(2), &announce(500, 0, Some((0, 500))));
        assert_eq!(readings(&steps)[0].1.delivered, WattHours(200));
    }

    fn signed(meter: &crate::crypto::Signer, interval: u64, export: u64) -> SignedReading {
        SignedReading::sign(
            crate::reading::Reading {
                meter: meter.id(),
                interval: IntervalIndex(interval),
                interval_seconds: 900,
                import_start: WattHours(0),
                import_end: WattHours(0),
                export_start: WattHours(10_000),
                export_end: WattHours(10_000 + export),
            },
            meter,
        )
    }

    /// A buyer whose channels with two sellers require signed readings: S1 announces what
    /// its meter signed, S2 announces more (it would bill energy it never exported), then
    /// tries a forged, a replayed and a missing reading. Only S1 is counted.
    #[test]
    fn totals_count_only_as_the_sellers_meter_signed_them() {
        let (s1, s2) = (id(1), id(2));
        let (m1, m2) = (
            Signer::new(&[0x31; 32], &[0; 32]).unwrap(),
            Signer::new(&[0x32; 32], &[0; 32]).unwrap(),
        );
        let meters = HashMap::from([(s1, m1.id()), (s2, m2.id())]);
        let buyer = || {
            Round::start(IntervalIndex(5), meter(500, 0), [s1, s2].into())
                .0
                .with_meters(meters.clone(), 900)
        };
        let honest = Announce {
            reading: Some(signed(&m1, 5, 300)),
            ..announce(0, 300, None)
        };
        let cheats = [
            (
                "more than signed",
                Announce {
                    reading: Some(signed(&m2, 5, 100)),
                    ..announce(0, 400, None)
                },
            ),
            ("no reading", announce(0, 400, None)),
            (
                "another interval's reading",
                Announce {
                    reading: Some(signed(&m2, 4, 400)),
                    ..announce(0, 400, None)
                },
            ),
            (
                "signed by its own key",
                Announce {
                    reading: Some(signed(&m1, 5, 400)),
                    ..announce(0, 400, None)
                },
            ),
            ("altered after signing", {
                let mut r = signed(&m2, 5, 100);
                r.reading.export_end = WattHours(10_400);
                Announce {
                    reading: Some(r),
                    ..announce(0, 400, None)
                }
            }),
        ];
        for (what, cheat) in cheats {
            let mut b = buyer();
            b.on_announce(s1, &honest);
            let steps = b.on_announce(s2, &cheat);
            assert_eq!(left_out(&steps), vec![s2], "{what}");
            // The buyer's shares went out at once (everyone answered or was left out): S1's
            // whole 300, none reserved for S2.
            let to_s1 = steps.iter().find_map(|st| match st {
                Step::AnnounceTo { peer, announce } if *peer == s1 => announce.shares,
                _ => None,
            });
            assert_eq!(to_s1.map(|s| s.buy), Some(WattHours(300)), "{what}");
            let steps = b.on_announce(
                s1,
                &Announce {
                    shares: Some(Shares {
                        sell: WattHours(300),
                        buy: WattHours(0),
                    }),
                    ..honest
                },
            );
            assert_eq!(readings(&steps)[0].1.received, WattHours(300), "{what}");
            // S2's later announcements count for nothing.
            assert!(
                b.on_announce(s2, &announce(0, 100, Some((100, 0))))
                    .is_empty(),
                "{what}"
            );
            assert!(b.finished());
        }
    }

    proptest::proptest! {
        /// Whatever a seller announces and whatever reading it attaches, a buyer whose channel
        /// requires signed readings never receives more from it than its meter signed as
        /// export for the interval.
        #[test]
        fn no_buyer_pays_beyond_the_signed_export(
            signed_export in 0u64..2_000,
            claimed in 0u64..4_000,
            sell_share in 0u64..4_000,
            import in 0u64..4_000,
            reading_interval in 4u64..7,
            own_key in proptest::bool::ANY,
        ) {
            let s = id(1);
            let (m, impostor) = (Signer::new(&[0x31; 32], &[0; 32]).unwrap(), Signer::new(&[0x32; 32], &[0; 32]).unwrap());
            let (mut b, _) = Round::start(IntervalIndex(5), meter(import, 0), [s].into());
            b = b.with_meters(HashMap::from([(s, m.id())]), 900);
            let key = if own_key { &impostor } else { &m };
            let a = Announce { reading: Some(signed(key, reading_interval, signed_export)), ..announce(0, claimed, None) };
            let mut steps = b.on_announce(s, &a);
            steps.extend(b.on_announce(s, &Announce { shares: Some(Shares { sell: WattHours(sell_share), buy: WattHours(0) }), ..a }));
            steps.extend(b.on_timeout());
            let signed_here = if own_key || reading_interval != 5 { 0 } else { signed_export };
            for (_, r) in readings(&steps) {
                proptest::prop_assert!(r.received.0 <= signed_here);
            }
        }
    }

    /// B can pay for only 120 Wh: the rest of S's 300 goes to C, not reserved for B.
    #[test]
    fn a_neighbour_that_cannot_pay_has_no_surplus_reserved_for_it() {
        let (b, c) = (id(2), id(3));
        let caps = HashMap::from([(
            b,
            Caps {
                sell: WattHours(120),
                buy: WattHours(u64::MAX),
            },
        )]);
        let (s, _) = Round::start(IntervalIndex(5), meter(0, 300), [b, c].into());
        let mut s = s.with_caps(caps);
        s.on_announce(b, &announce(500, 0, None));
        let steps = s.on_announce(c, &announce(500, 0, None));
        let offered: HashMap<NodeId, WattHours> = steps
            .iter()
            .filter_map(|st| match st {
                Step::AnnounceTo { peer, announce } => Some((*peer, announce.shares?.sell)),
                _ => None,
            })
            .collect();
        assert_eq!(offered[&b], WattHours(120));
        assert_eq!(offered[&c], WattHours(180));
        // Uncapped, they would have had 150 each.
    }

    #[test]
    fn announcements_for_other_intervals_or_strangers_are_ignored() {
        let (mut r, _) = Round::start(IntervalIndex(5), MeterReading::default(), [id(1)].into());
        let a = Announce {
            interval: IntervalIndex(6),
            ..announce(1, 0, None)
        };
        assert!(r.on_announce(id(1), &a).is_empty());
        assert!(r.on_announce(id(9), &announce(1, 0, None)).is_empty());
    }
}
