//! `min_acks`: a channel never signs beyond a state fewer than the policy's watchtowers hold,
//! neither proposing nor countersigning, and goes on as soon as they acknowledge it.

use gridchan_channel::{Input, IntervalIndex, Policy, Refusal, Version, WattHours};
use gridchan_harness::{Pair, PairConfig, Side, Trade};

fn iv(n: u64) -> IntervalIndex {
    IntervalIndex(PairConfig::default().opened_at.0 + n)
}

fn acked(pair: &mut Pair, side: Side, version: u64) {
    let channel = pair.channel;
    pair.node_mut(side).handle(Input::TowersAcked {
        channel,
        version: Version(version),
    });
    pair.drive();
}

fn pair() -> Pair {
    let config = PairConfig {
        policy: Policy {
            min_acks: 1,
            force_close_after_ms: None,
            ..Policy::accepting_anyone()
        },
        ..PairConfig::default()
    };
    Pair::new(config)
}

#[test]
fn no_state_is_signed_beyond_one_the_towers_do_not_hold() {
    let mut pair = pair();
    // Version 0 needs no tower: the first interval settles.
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(500)));
    pair.drive();
    assert_eq!(pair.current(Side::A).version(), Version(1));
    // Neither side's towers hold v1 yet: A does not propose the next interval.
    pair.trade(Trade::agreed(iv(2), Side::A, WattHours(300)));
    pair.drive();
    assert_eq!(pair.current(Side::A).version(), Version(1));
    assert!(pair.view(Side::A).proposal.is_none());
    // A's towers catch up: A proposes; B holds it until its own towers do.
    acked(&mut pair, Side::A, 1);
    assert!(pair.view(Side::A).proposal.is_some());
    assert_eq!(pair.current(Side::B).version(), Version(1));
    acked(&mut pair, Side::B, 1);
    assert_eq!(pair.current(Side::B).version(), Version(2));
    assert_eq!(pair.current(Side::A), pair.current(Side::B));
    assert!(pair.violations().is_empty(), "{:?}", pair.violations());
}

#[test]
fn a_proposal_held_for_towers_that_never_answer_is_refused_in_time() {
    let mut pair = pair();
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(500)));
    pair.drive();
    acked(&mut pair, Side::A, 1);
    pair.trade(Trade::agreed(iv(2), Side::A, WattHours(300)));
    pair.drive();
    // B's towers stay silent: after the policy's wait B refuses, as not accepting, and
    // nothing was signed beyond v1.
    pair.advance(Policy::default().reading_wait_ms);
    pair.drive();
    assert!(matches!(
        pair.view(Side::A).refused,
        Some((_, Refusal::NotAccepting))
    ));
    assert_eq!(pair.current(Side::B).version(), Version(1));
    assert_eq!(pair.view(Side::B).highest_signed, Version(1));
}
