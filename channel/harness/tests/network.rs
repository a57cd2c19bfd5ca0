//! The metering rounds among several gateways, with one hostile neighbour of any kind
//! (silent, late, changing its totals between the rounds, inflating them, crossing every
//! proposal on purpose, claiming an absurd version): every honest pair
//! settles every interval, both ends agreeing on the energy, and no honest home pays for more
//! than its meter imported.

use gridchan_channel::metering::MeterReading;
use gridchan_channel::{IntervalIndex, Party, WattHours};
use gridchan_harness::{Hostility, Network};
use proptest::prelude::*;

fn hostility() -> impl Strategy<Value = Option<Hostility>> {
    prop_oneof![
        Just(None),
        Just(Some(Hostility::Silent)),
        Just(Some(Hostility::Late)),
        Just(Some(Hostility::ChangesTotals)),
        Just(Some(Hostility::Inflates)),
        Just(Some(Hostility::Crosses)),
        Just(Some(Hostility::ClaimsAbsurdVersion)),
    ]
}

/// A home's meter in one interval: it imports or exports (net metering).
fn meter() -> impl Strategy<Value = MeterReading> {
    (any::<bool>(), 0u64..3_000).prop_map(|(imports, wh)| {
        if imports {
            MeterReading {
                import: WattHours(wh),
                export: WattHours(0),
            }
        } else {
            MeterReading {
                import: WattHours(0),
                export: WattHours(wh),
            }
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_honest_pair_settles_every_interval_whatever_one_neighbour_does(
        n in 3usize..7,
        extra_edges in prop::collection::vec((0usize..7, 0usize..7), 0..8),
        hostile_home in 0usize..7,
        kind in hostility(),
        meters in prop::collection::vec(prop::collection::vec(meter(), 7), 3),
    ) {
        // A ring, plus random chords.
        let mut edges: Vec<(usize, usize)> = (0..n).map(|i| (i, (i + 1) % n)).collect();
        edges.extend(extra_edges.into_iter().map(|(a, b)| (a % n, b % n)));
        let hostile = kind.map(|k| (hostile_home % n, k));
        let mut net = Network::new(n, &edges, hostile);
        let first = 10u64;
        for (t, m) in meters.iter().enumerate() {
            net.interval(IntervalIndex(first + t as u64), &m[..n]);
        }
        let channels = net.channels.clone();
        // Only the hostile home ever lost a connection, and only for what it did.
        for (home, peer, why) in &net.disconnects {
            prop_assert!(net.is_hostile(*home) || net.is_hostile(*peer), "{home} dropped {peer}: {why}");
        }
        // Liveness and agreement: both ends of every honest channel read the same flow in
        // every interval, and the channel settled exactly those flows.
        for (&(a, b), &id) in &channels {
            if net.is_hostile(a) || net.is_hostile(b) {
                continue;
            }
            let (mut a_to_b, mut b_to_a) = (0u64, 0u64);
            for t in 0..meters.len() as u64 {
                let interval = IntervalIndex(first + t);
                let ra = net.reading(a, id, interval);
                let rb = net.reading(b, id, interval);
                prop_assert!(ra.is_some() && rb.is_some(), "honest pair {a}-{b} has no reading for interval {t}");
                let (ra, rb) = (ra.unwrap(), rb.unwrap());
                prop_assert_eq!(ra.delivered, rb.received, "pair {}-{} interval {}", a, b, t);
                prop_assert_eq!(ra.received, rb.delivered, "pair {}-{} interval {}", a, b, t);
                a_to_b += ra.delivered.0;
                b_to_a += ra.received.0;
            }
            for home in [a, b] {
                let view = net.node(home).channel(&id).unwrap();
                let state = view.current.unwrap();
                let s = state.state();
                prop_assert_eq!(s.energy_a_to_b.0, a_to_b, "{}-{} seen by {}", a, b, home);
                prop_assert_eq!(s.energy_b_to_a.0, b_to_a, "{}-{} seen by {}", a, b, home);
            }
        }
        // Not vacuous: an honest channel whose ends met (one importing, the other exporting, at
        // least 10 Wh each) in some interval settled something.
        for (&(a, b), &id) in &channels {
            if net.is_hostile(a) || net.is_hostile(b) {
                continue;
            }
            let met = meters.iter().any(|m| {
                (m[a].import.0 >= 10 && m[b].export.0 >= 10)
                    || (m[b].import.0 >= 10 && m[a].export.0 >= 10)
            });
            let s = net.node(a).channel(&id).unwrap().current.unwrap().state().clone();
            if met {
                prop_assert!(s.energy_a_to_b.0 + s.energy_b_to_a.0 > 0, "honest pair {a}-{b} settled nothing");
            }
        }
        // No honest home's host gives its channels together more than its meter exported in an
        // interval, nor more than it imported (a neighbour that lies cannot make it overcommit).
        for home in 0..n {
            if net.is_hostile(home) {
                continue;
            }
            for (t, m) in meters.iter().enumerate() {
                let interval = IntervalIndex(first + t as u64);
                let (mut delivered, mut received) = (0u64, 0u64);
                for (&(a, b), &id) in &channels {
                    if home == a || home == b {
                        if let Some(r) = net.reading(home, id, interval) {
                            delivered += r.delivered.0;
                            received += r.received.0;
                        }
                    }
                }
                prop_assert!(delivered <= m[home].export.0, "home {home} gave away {delivered} Wh of {} exported", m[home].export.0);
                prop_assert!(received <= m[home].import.0, "home {home} took {received} Wh of {} imported", m[home].import.0);
            }
        }
        // Safety: no honest home paid for more than its meter imported over the intervals
        // (plus each channel's meter tolerance per interval).
        for home in 0..n {
            if net.is_hostile(home) {
                continue;
            }
            let imported: u64 = meters.iter().map(|m| m[home].import.0).sum();
            let mut bought = 0u64;
            let mut slack = 0u64;
            for (&(a, b), &id) in &channels {
                if home != a && home != b {
                    continue;
                }
                let view = net.node(home).channel(&id).unwrap();
                let s = view.current.unwrap().state().clone();
                bought += s.energy_from(if view.me == Party::A { Party::B } else { Party::A }).0;
                slack += u64::from(view.params.tolerance.absolute_wh) * meters.len() as u64;
            }
            prop_assert!(bought <= imported + slack, "home {home} paid for {bought} Wh of {imported} imported");
        }
    }
}
