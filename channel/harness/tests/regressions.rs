//! Sequences the properties once found broken, kept as plain tests.

use gridchan_channel::{IntervalIndex, WattHours};
use gridchan_harness::{Pair, PairConfig, Side, Trade};

fn iv(n: u64) -> IntervalIndex {
    IntervalIndex(PairConfig::default().opened_at.0 + n)
}

/// A duplicated countersignature costs the connection while the next proposal is in flight.
#[test]
fn a_duplicate_countersignature_during_the_next_proposal() {
    let mut pair = Pair::new(PairConfig::default());
    pair.auto_reconnect = false;
    pair.trade(Trade::agreed(iv(1), Side::B, WattHours(1)));
    pair.step();
    pair.trade(Trade::agreed(iv(2), Side::B, WattHours(1)));
    pair.duplicate_next(Side::A);
    pair.heal();
    assert_eq!(pair.current(Side::A), pair.current(Side::B));
    assert!(pair.violations().is_empty(), "{:?}", pair.violations());
}

/// The buyer holds a proposal for an interval it has no reading of when the link drops.
#[test]
fn a_held_proposal_survives_a_reconnect() {
    let mut pair = Pair::new(PairConfig::default());
    pair.auto_reconnect = false;
    let reading = |interval, delivered| {
        gridchan_channel::IntervalReading::selling(interval, WattHours(delivered))
    };
    pair.reading(Side::A, reading(iv(1), 200));
    pair.reading(Side::A, reading(iv(2), 0));
    pair.drive();
    pair.disconnect();
    pair.auto_reconnect = true;
    for _ in 0..10 {
        pair.step();
    }
    let why = |pair: &Pair, side| {
        pair.events(side)
            .iter()
            .filter_map(|e| match e {
                gridchan_channel::Event::PeerMisbehaved { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .take(3)
            .collect::<Vec<_>>()
    };
    eprintln!(
        "A says {:?}; B says {:?}",
        why(&pair, Side::A),
        why(&pair, Side::B)
    );
    pair.heal();
    // B has no reading of interval 1: it holds A's proposal, then refuses it after the wait.
    pair.advance(PairConfig::default().policy.reading_wait_ms);
    pair.drive();
    assert_eq!(pair.current(Side::A), pair.current(Side::B));
    assert!(pair.violations().is_empty(), "{:?}", pair.violations());
}

/// A channel frozen by a failed write while proposals are in flight, then a reconnect.
#[test]
fn a_frozen_channel_across_a_reconnect() {
    use gridchan_harness::WriteFault;
    let mut pair = Pair::new(PairConfig::default());
    pair.auto_reconnect = false;
    pair.trade(Trade::agreed(iv(1), Side::B, WattHours(1)));
    pair.reading(
        Side::B,
        gridchan_channel::IntervalReading::selling(iv(2), WattHours(261)),
    );
    pair.store(Side::B).fail_after(1, WriteFault::Fail);
    pair.trade(Trade::agreed(iv(3), Side::A, WattHours(1)));
    pair.step();
    pair.step();
    pair.step();
    pair.disconnect();
    pair.reconnect();
    pair.auto_reconnect = true;
    for _ in 0..40 {
        pair.step();
    }
    let why = |pair: &Pair, side| {
        pair.events(side)
            .iter()
            .filter_map(|e| match e {
                gridchan_channel::Event::PeerMisbehaved { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .take(2)
            .collect::<Vec<_>>()
    };
    pair.store(Side::B).heal();
    let channel = pair.channel;
    let _ = pair
        .node_mut(Side::B)
        .command(gridchan_channel::Command::RetryPersist(channel));
    for _ in 0..40 {
        pair.step();
    }
    eprintln!(
        "WHY A {:?} B {:?} rejected {} reconnects {} frozen {}",
        why(&pair, Side::A),
        why(&pair, Side::B),
        pair.rejected_frames,
        pair.reconnects,
        pair.view(Side::B).frozen
    );
    pair.heal();
    assert_eq!(pair.current(Side::A), pair.current(Side::B));
    assert!(pair.violations().is_empty(), "{:?}", pair.violations());
}

/// A crash and restart with trades pending on both sides and a duplicated frame.
#[test]
fn a_restart_with_trades_both_ways_and_a_duplicate() {
    let mut pair = Pair::new(PairConfig::default());
    pair.auto_reconnect = false;
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(1)));
    pair.trade(Trade::agreed(iv(2), Side::B, WattHours(1)));
    pair.advance(120_000);
    pair.step();
    pair.trade(Trade::agreed(iv(3), Side::A, WattHours(1)));
    pair.step();
    pair.step();
    pair.crash(Side::A);
    pair.restart(Side::A);
    pair.reconnect();
    pair.deliver_one(Side::B);
    pair.duplicate_next(Side::A);
    pair.trade(Trade::agreed(iv(4), Side::A, WattHours(1)));
    pair.trade(Trade::agreed(iv(5), Side::A, WattHours(1)));
    pair.heal();
    assert_eq!(pair.current(Side::A), pair.current(Side::B));
    assert!(pair.violations().is_empty(), "{:?}", pair.violations());
}

/// A frozen buyer, a duplicate, and a crash of the frozen side.
#[test]
fn a_frozen_side_crashes_after_a_duplicate() {
    use gridchan_harness::WriteFault;
    let mut pair = Pair::new(PairConfig::default());
    pair.auto_reconnect = false;
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(1)));
    pair.trade(Trade::agreed(iv(2), Side::B, WattHours(1)));
    pair.store(Side::B).fail_after(1, WriteFault::Fail);
    pair.trade(Trade::agreed(iv(3), Side::A, WattHours(1)));
    pair.trade(Trade::agreed(iv(4), Side::A, WattHours(1)));
    pair.step();
    pair.advance(120_000);
    pair.step();
    pair.duplicate_next(Side::A);
    pair.drive();
    pair.trade(Trade::agreed(iv(5), Side::A, WattHours(1)));
    pair.crash(Side::B);
    pair.trade(Trade::agreed(iv(6), Side::A, WattHours(1)));
    pair.heal();
    assert_eq!(pair.current(Side::A), pair.current(Side::B));
    assert!(pair.violations().is_empty(), "{:?}", pair.violations());
}
