//! Scripted runs of a [`Pair`]: a sequence of operations (intervals, one-sided readings, lost,
//! duplicated and reordered frames, disconnections, crashes, failing stores, time passing),
//! shared by the property tests (proptest picks the operations) and the fuzz target
//! (`fuzz/fuzz_targets/channel_machine.rs`, where libFuzzer picks them).

use gridchan_channel::{IntervalIndex, IntervalReading, SignedState, WattHours};

use crate::{Pair, PairConfig, Side, Trade, WriteFault};

/// One step of a script. Values are folded into sensible ranges by [`run`], so any value is a
/// valid script.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Op {
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

/// Runs `ops` on a fresh pair, checking the referee after every step, then heals the pair
/// (reconnects, delivers everything, restarts what crashed, clears store faults) and drives it
/// until idle. Panics if the referee saw a violation.
pub fn run(ops: &[Op]) -> Pair {
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
                let (energy, skew) = (energy.clamp(1, 100_000), skew.clamp(-1_000, 1_000));
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
                let (delivered, received) = (delivered.min(100_000), received.min(100_000));
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
            Op::StopAfter(s, n) => pair.store(s).fail_after(n.min(64), WriteFault::Stop),
            Op::FailAfter(s, n) => pair.store(s).fail_after(n.min(64), WriteFault::Fail),
            Op::Advance(ms) => pair.advance(ms.min(10_000_000)),
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

/// An invariant a script broke, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Broken(String);

/// What must hold after any script: no referee violation, both sides on the same newest doubly
/// signed state, money conserved, versions only growing.
pub fn check(pair: &Pair) -> Result<(), Broken> {
    if !pair.violations().is_empty() {
        return Err(Broken(format!("{:?}", pair.violations())));
    }
    let a = pair.current(Side::A);
    let b = pair.current(Side::B);
    if a != b {
        return Err(Broken(format!("the sides disagree: {a:?} vs {b:?}")));
    }
    let s = a.state();
    if s.balance_a.0 + s.balance_b.0 != 100_000_000 {
        return Err(Broken(format!("money not conserved: {s:?}")));
    }
    for side in [Side::A, Side::B] {
        if !versions_only_grow(pair.watchtower_states(side)) {
            return Err(Broken(format!("{side:?}'s versions went down")));
        }
    }
    Ok(())
}
