//! One metering interval's exchange of announcements with the neighbours, and the per-channel
//! readings that come out of it (the rule of [`crate::allocate`]).
//!
//! Round 1: every gateway announces its meter totals with `partners = ROUND_ONE`. Once it has
//! every neighbour's totals, or at the round's deadline (a small fraction of the interval, see
//! [`ROUND_WAIT_DIVISOR`]), it counts its partners among the neighbours that answered and
//! announces again with the count (round 2). A neighbour's round-2 announcement gives the flow
//! with that neighbour.
//!
//! Nobody can stall anybody: a neighbour whose totals had not arrived by the deadline is left
//! out of the interval (whatever it sends later: our count did not include it, so a flow with
//! it could exceed our meter), and so is one whose round-2 totals differ from its round-1
//! totals (it lied between the rounds). Each is reported once, with what it did.

use std::collections::{HashMap, HashSet};

use crate::allocate::{pairwise_flow, partners, Announcement};
use crate::crypto::NodeId;
use crate::io::IntervalReading;
use crate::types::{IntervalIndex, WattHours};
use crate::wire::Announce;

/// What a gateway's own meter measured in one interval (net metering: at most one of the two
/// is non-zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeterReading {
    pub import: WattHours,
    pub export: WattHours,
}

/// `partners` of a round-1 announcement: totals only, partners not counted yet.
pub const ROUND_ONE: u32 = u32::MAX;

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
    /// Send this announcement to every neighbour.
    Announce(Announce),
    /// Give this reading to the channels with `peer`.
    Reading {
        peer: NodeId,
        reading: IntervalReading,
    },
    /// `peer` is left out of this interval, and why (for the log, once).
    LeftOut { peer: NodeId, why: String },
}

/// One interval's round of announcements.
pub struct Round {
    interval: IntervalIndex,
    own: MeterReading,
    neighbours: HashSet<NodeId>,
    /// Each neighbour's totals, from the first announcement it made for the interval.
    totals: HashMap<NodeId, (WattHours, WattHours)>,
    finals: HashMap<NodeId, Announcement>,
    own_final: Option<Announcement>,
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
        let round = Round {
            interval,
            own,
            neighbours,
            totals: HashMap::new(),
            finals: HashMap::new(),
            own_final: None,
            done: HashSet::new(),
        };
        let first = Step::Announce(Announce {
            interval,
            import: own.import,
            export: own.export,
            partners: ROUND_ONE,
        });
        (round, first)
    }

    pub fn interval(&self) -> IntervalIndex {
        self.interval
    }

    /// A neighbour's announcement for this interval.
    pub fn on_announce(&mut self, peer: NodeId, a: &Announce) -> Vec<Step> {
        if a.interval != self.interval || !self.neighbours.contains(&peer) {
            return Vec::new();
        }
        self.totals.entry(peer).or_insert((a.import, a.export));
        if a.partners != ROUND_ONE {
            self.finals.insert(
                peer,
                Announcement {
                    import: a.import,
                    export: a.export,
                    partners: a.partners,
                },
            );
        }
        let mut steps = Vec::new();
        if self.own_final.is_none() && self.totals.len() == self.neighbours.len() {
            steps.extend(self.count_partners());
        }
        steps.extend(self.readings());
        steps
    }

    /// When round 1 stops waiting (ms since the Unix epoch): a [`ROUND_WAIT_DIVISOR`]th of the
    /// interval after the interval ends. The host calls [`Round::on_timeout`] then.
    pub fn deadline_ms(&self, interval_seconds: u32) -> u64 {
        round_deadline_ms(self.interval, interval_seconds)
    }

    /// Whether our own round-2 announcement is out (partners counted).
    pub fn counted(&self) -> bool {
        self.own_final.is_some()
    }

    /// Whether every neighbour has its reading or was left out: no flow of this interval is
    /// still to come.
    pub fn finished(&self) -> bool {
        self.own_final.is_some() && self.done.len() == self.neighbours.len()
    }

    /// The round's deadline passed: count partners from what arrived, and leave out the
    /// neighbours that said nothing.
    pub fn on_timeout(&mut self) -> Vec<Step> {
        let mut steps = Vec::new();
        if self.own_final.is_none() {
            let mut silent: Vec<NodeId> = self
                .neighbours
                .iter()
                .filter(|n| !self.totals.contains_key(n))
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
            steps.extend(self.count_partners());
        }
        steps.extend(self.readings());
        steps
    }

    fn count_partners(&mut self) -> Option<Step> {
        let seen: Vec<(WattHours, WattHours)> = self.totals.values().copied().collect();
        let n = partners(self.own.import, self.own.export, &seen);
        let own = Announcement {
            import: self.own.import,
            export: self.own.export,
            partners: n,
        };
        self.own_final = Some(own);
        Some(Step::Announce(Announce {
            interval: self.interval,
            import: own.import,
            export: own.export,
            partners: n,
        }))
    }

    fn readings(&mut self) -> Vec<Step> {
        let Some(own) = self.own_final else {
            return Vec::new();
        };
        let mut steps = Vec::new();
        for (peer, theirs) in &self.finals {
            if !self.done.insert(*peer) {
                continue;
            }
            if self.totals.get(peer) != Some(&(theirs.import, theirs.export)) {
                steps.push(Step::LeftOut {
                    peer: *peer,
                    why: format!(
                        "announced other meter totals in round 2 of interval {} than in round 1",
                        self.interval.0
                    ),
                });
                continue;
            }
            let delivered = pairwise_flow(&own, theirs);
            let received = pairwise_flow(theirs, &own);
            steps.push(Step::Reading {
                peer: *peer,
                reading: IntervalReading {
                    interval: self.interval,
                    delivered,
                    received,
                    metered_import: own.import,
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

    fn announce_of(step: &Step) -> Announce {
        match step {
            Step::Announce(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    /// Three homes in a line: S exports 300 to B1 and B2 (each importing 500, each with one
    /// exporting neighbour). Both ends of each channel compute the same 150 Wh.
    #[test]
    fn both_ends_of_each_channel_compute_the_same_flow() {
        let (s, b1, b2) = (id(1), id(2), id(3));
        let iv = IntervalIndex(10);
        let exp = MeterReading {
            import: WattHours(0),
            export: WattHours(300),
        };
        let imp = MeterReading {
            import: WattHours(500),
            export: WattHours(0),
        };
        let (mut rs, s1) = Round::start(iv, exp, [b1, b2].into());
        let (mut r1, b1a) = Round::start(iv, imp, [s].into());
        let (mut r2, b2a) = Round::start(iv, imp, [s].into());
        // Round 1 everywhere.
        let b1_final = r1.on_announce(s, &announce_of(&s1));
        let b2_final = r2.on_announce(s, &announce_of(&s1));
        assert!(
            rs.on_announce(b1, &announce_of(&b1a)).is_empty(),
            "waits for B2"
        );
        let s_final = rs.on_announce(b2, &announce_of(&b2a));
        let s_final = announce_of(&s_final[0]);
        assert_eq!(s_final.partners, 2);
        // Round 2.
        let at_b1 = r1.on_announce(s, &s_final);
        let at_s = rs.on_announce(b1, &announce_of(&b1_final[0]));
        let _ = r2.on_announce(s, &s_final);
        let _ = rs.on_announce(b2, &announce_of(&b2_final[0]));
        let reading = |steps: &[Step]| match steps {
            [Step::Reading { reading, .. }] => *reading,
            other => panic!("{other:?}"),
        };
        assert_eq!(reading(&at_b1).received, WattHours(150));
        assert_eq!(reading(&at_b1).metered_import, WattHours(500));
        assert_eq!(reading(&at_s).delivered, WattHours(150));
    }

    fn totals(import: u64, export: u64, partners: u32) -> Announce {
        Announce {
            interval: IntervalIndex(5),
            import: WattHours(import),
            export: WattHours(export),
            partners,
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

    /// S exports 300 to two importing neighbours, B (honest) and M (silent, late or lying).
    fn seller() -> Round {
        let exp = MeterReading {
            import: WattHours(0),
            export: WattHours(300),
        };
        Round::start(IntervalIndex(5), exp, [id(2), id(9)].into()).0
    }

    #[test]
    fn a_silent_neighbour_is_left_out_at_the_deadline_and_the_others_settle() {
        let mut s = seller();
        assert!(s.on_announce(id(2), &totals(500, 0, ROUND_ONE)).is_empty());
        let steps = s.on_timeout();
        assert_eq!(left_out(&steps), vec![id(9)]);
        let own = steps
            .iter()
            .find_map(|s| match s {
                Step::Announce(a) => Some(*a),
                _ => None,
            })
            .unwrap();
        assert_eq!(own.partners, 1, "counted without the silent one");
        let steps = s.on_announce(id(2), &totals(500, 0, 1));
        assert!(matches!(
            steps.as_slice(),
            [Step::Reading { peer, reading }] if *peer == id(2) && reading.delivered == WattHours(300)
        ));
        // The silent one's totals arrive late: it gets no reading (the 300 went to B).
        let late = [
            s.on_announce(id(9), &totals(500, 0, ROUND_ONE)),
            s.on_announce(id(9), &totals(500, 0, 1)),
        ]
        .concat();
        assert!(!late.iter().any(|s| matches!(s, Step::Reading { .. })));
    }

    #[test]
    fn a_neighbour_that_changes_its_totals_between_the_rounds_is_left_out() {
        let mut s = seller();
        s.on_announce(id(2), &totals(500, 0, ROUND_ONE));
        // M says it imported nothing (so it is not counted as a partner), then claims 500.
        s.on_announce(id(9), &totals(0, 0, ROUND_ONE));
        s.on_announce(id(2), &totals(500, 0, 1));
        let steps = s.on_announce(id(9), &totals(500, 0, 1));
        assert_eq!(left_out(&steps), vec![id(9)]);
        assert!(!steps.iter().any(|s| matches!(s, Step::Reading { .. })));
    }

    #[test]
    fn announcements_for_other_intervals_or_strangers_are_ignored() {
        let (mut r, _) = Round::start(IntervalIndex(5), MeterReading::default(), [id(1)].into());
        let a = Announce {
            interval: IntervalIndex(6),
            import: WattHours(1),
            export: WattHours(0),
            partners: ROUND_ONE,
        };
        assert!(r.on_announce(id(1), &a).is_empty());
        let a = Announce {
            interval: IntervalIndex(5),
            ..a
        };
        assert!(r.on_announce(id(9), &a).is_empty());
    }
}
