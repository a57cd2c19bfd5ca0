//! Properties over random interleavings of intervals, lost, duplicated, reordered and delayed
//! frames, failing stores, crashes and restarts. After every step the harness referee checks
//! that no signature left before its state was durable, that nobody signed two different
//! states at one version, that no node's current version went down and that money is conserved
//! in every state; after healing, both sides must hold the same newest state.

use gridchan_channel::{IntervalIndex, WattHours};
use gridchan_harness::script::{check, run, Op};
use gridchan_harness::{Pair, PairConfig, Side, Trade};
use proptest::prelude::*;

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
        if let Err(e) = check(&pair) {
            prop_assert!(false, "{}", e);
        }
    }

    /// Issue 16: a host ticks a node when `poll_timeout` says, not every channel on a timer;
    /// after any interleaving, a tick at that deadline always moves it on (a later deadline or
    /// none), so a host that follows it never spins.
    #[test]
    fn a_tick_at_the_cores_deadline_always_moves_it_on(ops in prop::collection::vec(op(), 1..80)) {
        let mut pair = run(&ops);
        for side in [Side::A, Side::B] {
            for _ in 0..64 {
                if !pair.is_running(side) {
                    break;
                }
                let Some(at) = pair.node_mut(side).poll_timeout() else {
                    break;
                };
                let now = pair.now_ms().max(at);
                pair.advance(now - pair.now_ms());
                let next = pair.node_mut(side).poll_timeout();
                prop_assert!(
                    next.is_none_or(|n| n > now),
                    "{side:?}: ticked at {now} for a deadline at {at}, and the next is {next:?}"
                );
            }
        }
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
