//! One metering interval's exchange of announcements with the neighbours, and the per-channel
//! readings that come out of it (the rule of [`crate::allocate`]).
//!
//! Round 1: every gateway announces its meter totals with `partners = ROUND_ONE`. Once it has
//! every neighbour's totals (or the host decides to stop waiting), it counts its partners and
//! announces again with the count (round 2). A neighbour's round-2 announcement gives the flow
//! with that neighbour.

use std::collections::{HashMap, HashSet};

use gridchan_channel::wire::Announce;
use gridchan_channel::{IntervalIndex, IntervalReading, NodeId, WattHours};

use crate::allocate::{pairwise_flow, partners, Announcement};
use crate::meter::MeterReading;

/// `partners` of a round-1 announcement: totals only, partners not counted yet.
pub const ROUND_ONE: u32 = u32::MAX;

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
}

/// One interval's round of announcements.
pub struct Round {
    interval: IntervalIndex,
    own: MeterReading,
    neighbours: HashSet<NodeId>,
    totals: HashMap<NodeId, (WattHours, WattHours)>,
    finals: HashMap<NodeId, Announcement>,
    own_final: Option<Announcement>,
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
        self.totals.insert(peer, (a.import, a.export));
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

    /// Stop waiting for round-1 announcements: count partners from what arrived.
    pub fn on_timeout(&mut self) -> Vec<Step> {
        let mut steps = Vec::new();
        if self.own_final.is_none() {
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
    use gridchan_channel::Signer;

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
