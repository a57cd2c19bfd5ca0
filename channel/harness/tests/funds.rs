//! Top-ups and withdrawals between two nodes while they keep trading (`specs/protocol.md`,
//! "Top-up and withdrawal"): who proposes, what the peer checks, the ledger requests each
//! makes, and what survives a crash.

use gridchan_channel::{
    Amount, Command, IntervalIndex, LedgerEvent, LedgerRequest, Party, Refusal, Version, WattHours,
};
use gridchan_harness::{Pair, PairConfig, Side, Trade};

fn iv(n: u64) -> IntervalIndex {
    IntervalIndex(PairConfig::default().opened_at.0 + n)
}

fn assert_clean(pair: &Pair) {
    assert!(pair.violations().is_empty(), "{:?}", pair.violations());
}

fn command(pair: &mut Pair, side: Side, cmd: Command) -> Result<(), String> {
    pair.node_mut(side).command(cmd).map_err(|e| e.to_string())
}

#[test]
fn a_top_up_goes_to_the_ledger_then_into_a_state_while_trading_goes_on() {
    let mut pair = Pair::new(PairConfig::default());
    let channel = pair.channel;
    command(
        &mut pair,
        Side::B,
        Command::TopUp {
            channel,
            amount: Amount(2_000_000),
        },
    )
    .unwrap();
    pair.flush_outputs();
    assert!(pair
        .ledger_requests(Side::B)
        .contains(&LedgerRequest::TopUp {
            channel,
            amount: Amount(2_000_000)
        }));
    // Trading goes on while the ledger confirms.
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(500)));
    pair.drive();
    assert_eq!(pair.current(Side::A).version(), Version(1));
    // A has not seen the top-up yet when B proposes it: refused, proposed again later.
    pair.ledger_event_to(
        Side::B,
        LedgerEvent::ToppedUp {
            party: Party::B,
            total: Amount(2_000_000),
        },
    );
    pair.drive();
    assert!(matches!(
        pair.view(Side::B).refused,
        Some((_, Refusal::TopUpNotSeen { total: 2_000_000 }))
    ));
    assert_eq!(
        pair.current(Side::A).state().funds.topped_up,
        [Amount(0); 2]
    );
    pair.ledger_event_to(
        Side::A,
        LedgerEvent::ToppedUp {
            party: Party::B,
            total: Amount(2_000_000),
        },
    );
    pair.advance(PairConfig::default().policy.funds_retry_ms);
    pair.drive();
    let s = pair.current(Side::A);
    assert_eq!(s, pair.current(Side::B));
    assert_eq!(s.state().funds.topped_up, [Amount(0), Amount(2_000_000)]);
    assert_eq!(
        s.state().balance_b,
        Amount(50_000_000 - 100_000 + 2_000_000)
    );
    // And trading continues on the larger balance.
    pair.trade(Trade::agreed(iv(2), Side::A, WattHours(250)));
    pair.drive();
    assert_eq!(
        pair.current(Side::B).state().balance_b,
        Amount(52_000_000 - 150_000)
    );
    assert_clean(&pair);
}

#[test]
fn a_withdrawal_is_signed_by_both_then_sent_to_the_ledger_once() {
    let mut pair = Pair::new(PairConfig::default());
    let channel = pair.channel;
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(500)));
    pair.drive();
    // More than A's balance: refused with a line that says how much can go.
    let too_much = command(
        &mut pair,
        Side::A,
        Command::Withdraw {
            channel,
            amount: Amount(50_100_001),
        },
    )
    .unwrap_err();
    assert!(
        too_much.contains("only 50.100000 of our balance"),
        "{too_much}"
    );
    command(
        &mut pair,
        Side::A,
        Command::Withdraw {
            channel,
            amount: Amount(10_000_000),
        },
    )
    .unwrap();
    pair.drive();
    let s = pair.current(Side::B);
    assert_eq!(s, pair.current(Side::A));
    assert_eq!(s.state().funds.withdrawn, [Amount(10_000_000), Amount(0)]);
    assert_eq!(s.state().balance_a, Amount(40_100_000));
    let sent: Vec<_> = pair
        .ledger_requests(Side::A)
        .iter()
        .filter(|r| matches!(r, LedgerRequest::Withdraw(_)))
        .collect();
    assert_eq!(sent, [&LedgerRequest::Withdraw(s.clone())]);
    // B, whose money did not move, asks the ledger for nothing.
    assert!(!pair
        .ledger_requests(Side::B)
        .iter()
        .any(|r| matches!(r, LedgerRequest::Withdraw(_))));
    // Once the ledger paid it, nothing is proposed again.
    pair.ledger_event(LedgerEvent::Withdrawn {
        party: Party::A,
        total: Amount(10_000_000),
    });
    pair.drive();
    assert_eq!(pair.current(Side::A).version(), s.version());
    assert_eq!(
        pair.view(Side::A).funds.ledger.withdrawn,
        [Amount(10_000_000), Amount(0)]
    );
    assert_clean(&pair);
}

#[test]
fn a_withdrawal_asked_for_survives_a_crash_and_is_made_after_it() {
    let mut pair = Pair::new(PairConfig::default());
    let channel = pair.channel;
    pair.disconnect();
    command(
        &mut pair,
        Side::B,
        Command::Withdraw {
            channel,
            amount: Amount(5_000_000),
        },
    )
    .unwrap();
    // The host wrote the record the command asked for; then it crashed.
    pair.flush_outputs();
    pair.crash(Side::B);
    pair.restart(Side::B);
    pair.reconnect();
    pair.drive();
    let s = pair.current(Side::A);
    assert_eq!(s.state().funds.withdrawn, [Amount(0), Amount(5_000_000)]);
    assert_eq!(s, pair.current(Side::B));
    assert_clean(&pair);
}

#[test]
fn funds_commands_need_an_open_channel() {
    let mut pair = Pair::settled();
    let channel = pair.channel;
    command(&mut pair, Side::A, Command::Close(channel)).unwrap();
    let err = command(
        &mut pair,
        Side::A,
        Command::TopUp {
            channel,
            amount: Amount(1),
        },
    )
    .unwrap_err();
    assert!(err.contains("needs an open channel"), "{err}");
    let mut pair = Pair::settled();
    let err = command(
        &mut pair,
        Side::A,
        Command::Withdraw {
            channel,
            amount: Amount(0),
        },
    )
    .unwrap_err();
    assert!(err.contains("above 0"), "{err}");
}
