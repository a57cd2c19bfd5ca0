//! Properties over random interleavings of intervals, lost, duplicated, reordered and delayed
//! frames, failing stores, crashes and restarts. After every step the harness referee checks
//! that no signature left before its state was durable, that nobody signed two different
//! states at one version, that no node's current version went down and that money is conserved
//! in every state; after healing, both sides must hold the same newest state.

use gridchan_channel::{IntervalIndex, IntervalReading, SignedState, WattHours};
use gridchan_harness::{Pair, PairConfig, Side, Trade, WriteFault};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Both meters see `energy` flow from `seller` in the next interval; `skew` makes the
    /// buyer's meter read differently (sometimes outside the tolerance).
    Interval {
        seller: Side,
        energy: u64,
        skew: i64,
    },
    /// Only one side gets its reading (the other's meter is late or missing).
    OneSidedReading {
        side: Side,
        delivered: u64,
        received: u64,
    },
    Step,
    DeliverOne(Side),
    Drop(Side),
    Duplicate(Side),
    Reorder(Side),
    Disconnect,
    Reconnect,
    Crash(Side),
    Restart(Side),
    StopAfter(Side, u64),
    FailAfter(Side, u64),
    Advance(u64),
    Drive,
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::A), Just(Side::B)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (side(), 1u64..3_000, prop_oneof![Just(0i64), Just(0), -30i64..30])
            .prop_map(|(seller, energy, skew)| Op::Interval { seller, energy, skew }),
        1 => (side(), 0u64..500, 0u64..500)
            .prop_map(|(side, delivered, received)| Op::OneSidedReading { side, delivered, received }),
        4 => Just(Op::Step),
        4 => side().prop_map(Op::DeliverOne),
        1 => side().prop_map(Op::Drop),
        1 => side().prop_map(Op::Duplicate),
        1 => side().prop_map(Op::Reorder),
        1 => Just(Op::Disconnect),
        2 => Just(Op::Reconnect),
        1 => side().prop_map(Op::Crash),
        2 => side().prop_map(Op::Restart),
        1 => (side(), 0u64..6).prop_map(|(s, n)| Op::StopAfter(s, n)),
        1 => (side(), 0u64..6).prop_map(|(s, n)| Op::FailAfter(s, n)),
        1 => (0u64..200_000).prop_map(Op::Advance),
        2 => Just(Op::Drive),
    ]
}

fn run(ops: &[Op]) -> Pair {
    let mut pair = Pair::new(PairConfig::default());
    pair.auto_reconnect = false;
    let mut interval = PairConfig::default().opened_at.0;
    for op in ops {
        match op.clone() {
            Op::Interval {
                seller,
                energy,
                skew,
            } => {
                interval += 1;
                let reading = energy.saturating_add_signed(skew);
                pair.trade(Trade {
                    interval: IntervalIndex(interval),
                    seller,
                    energy: WattHours(energy),
                    buyer_reading: WattHours(reading),
                    metered_import: WattHours(reading.max(energy)),
                });
            }
            Op::OneSidedReading {
                side,
                delivered,
                received,
            } => {
                interval += 1;
                pair.reading(
                    side,
                    IntervalReading {
                        interval: IntervalIndex(interval),
                        delivered: WattHours(delivered),
                        received: WattHours(received),
                        metered_import: WattHours(received),
                    },
                );
            }
            Op::Step => {
                pair.step();
            }
            Op::DeliverOne(s) => {
                pair.deliver_one(s);
            }
            Op::Drop(s) => pair.drop_next(s),
            Op::Duplicate(s) => pair.duplicate_next(s),
            Op::Reorder(s) => pair.reorder_next(s),
            Op::Disconnect => pair.disconnect(),
            Op::Reconnect => pair.reconnect(),
            Op::Crash(s) => pair.crash(s),
            Op::Restart(s) => pair.restart(s),
            Op::StopAfter(s, n) => pair.store(s).fail_after(n, WriteFault::Stop),
            Op::FailAfter(s, n) => pair.store(s).fail_after(n, WriteFault::Fail),
            Op::Advance(ms) => pair.advance(ms),
            Op::Drive => pair.drive(),
        }
        assert!(
            pair.violations().is_empty(),
            "after {op:?}: {:?}",
            pair.violations()
        );
    }
    pair.heal();
    pair
}

fn versions_only_grow(states: &[SignedState]) -> bool {
    states.windows(2).all(|w| w[0].version() <= w[1].version())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // GRIDCHAN_PROPTEST_CASES runs a longer soak; CI runs the default.
        cases: std::env::var("GRIDCHAN_PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_interleaving_ends_in_agreement(ops in prop::collection::vec(op(), 1..80)) {
        let pair = run(&ops);
        prop_assert!(pair.violations().is_empty(), "{:?}", pair.violations());
        let a = pair.current(Side::A);
        let b = pair.current(Side::B);
        prop_assert_eq!(&a, &b, "both hold the same newest doubly signed state");
        let s = a.state();
        prop_assert_eq!(s.balance_a.0 + s.balance_b.0, 100_000_000, "money is conserved");
        prop_assert!(versions_only_grow(pair.watchtower_states(Side::A)));
        prop_assert!(versions_only_grow(pair.watchtower_states(Side::B)));
    }

    #[test]
    fn agreed_trades_all_settle_without_faults(
        trades in prop::collection::vec((side(), 1u64..5_000), 1..40)
    ) {
        let mut pair = Pair::new(PairConfig::default());
        let mut interval = PairConfig::default().opened_at.0;
        let (mut a_to_b, mut b_to_a) = (0, 0);
        for (seller, energy) in &trades {
            interval += 1;
            pair.trade(Trade::agreed(IntervalIndex(interval), *seller, WattHours(*energy)));
            match seller {
                Side::A => a_to_b += energy,
                Side::B => b_to_a += energy,
            }
        }
        pair.drive();
        let s = pair.current(Side::A).state().clone();
        let b = pair.current(Side::B);
        prop_assert_eq!(&s, b.state());
        prop_assert_eq!(s.energy_a_to_b.0, a_to_b);
        prop_assert_eq!(s.energy_b_to_a.0, b_to_a);
        // At the flat 0.2/kWh, money moved is the net energy priced per interval, rounded down.
        let paid_to_a: i128 = trades
            .iter()
            .map(|(seller, e)| {
                let m = i128::from(*e) * 200_000 / 1000;
                if *seller == Side::A { m } else { -m }
            })
            .sum();
        prop_assert_eq!(i128::from(s.balance_a.0) - 50_000_000, paid_to_a);
        prop_assert!(pair.violations().is_empty(), "{:?}", pair.violations());
    }
}
