//! The protocol's happy paths and recoveries, driven through the two-party harness.

use gridchan_channel::{
    Amount, Command, Event, IntervalIndex, LedgerEvent, LedgerRequest, Party, Phase, PricePerKwh,
    Tariff, TimeOfUse, Version, WattHours,
};
use gridchan_harness::{Pair, PairConfig, Side, Trade, WriteFault};

fn iv(n: u64) -> IntervalIndex {
    IntervalIndex(PairConfig::default().opened_at.0 + n)
}

fn assert_clean(pair: &Pair) {
    assert!(pair.violations().is_empty(), "{:?}", pair.violations());
}

#[test]
fn intervals_settle_in_both_directions() {
    let mut pair = Pair::new(PairConfig::default());
    // 0.2 per kWh: A sells 500 Wh (0.1), B sells 250 Wh (0.05), A sells 1 Wh (0.0002).
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(500)));
    pair.drive();
    pair.trade(Trade::agreed(iv(2), Side::B, WattHours(250)));
    pair.drive();
    pair.trade(Trade::agreed(iv(3), Side::A, WattHours(1)));
    pair.drive();
    let a = pair.current(Side::A);
    assert_eq!(a, pair.current(Side::B));
    assert_eq!(a.version(), Version(3));
    let s = a.state();
    assert_eq!(s.balance_a, Amount(50_000_000 + 100_000 - 50_000 + 200));
    assert_eq!(s.balance_b, Amount(50_000_000 - 100_000 + 50_000 - 200));
    assert_eq!(s.energy_a_to_b, WattHours(501));
    assert_eq!(s.energy_b_to_a, WattHours(250));
    assert_eq!(s.last_interval, iv(3));
    // Every settled state went to the watchtowers, on both sides.
    assert_eq!(pair.watchtower_states(Side::A).last(), Some(&a));
    assert_eq!(pair.watchtower_states(Side::B).last(), Some(&a));
    let settled = pair
        .events(Side::B)
        .iter()
        .filter(|e| matches!(e, Event::Settled { .. }))
        .count();
    assert_eq!(settled, 3);
    assert_clean(&pair);
}

#[test]
fn opening_signs_version_zero_then_deposits() {
    let pair = Pair::new(PairConfig::default());
    for side in [Side::A, Side::B] {
        let cur = pair.current(side);
        assert_eq!(cur.version(), Version(0));
        let deposits: Vec<_> = pair
            .ledger_requests(side)
            .iter()
            .filter(|r| matches!(r, LedgerRequest::Deposit { .. }))
            .collect();
        assert_eq!(deposits.len(), 1, "{side:?} deposits once");
    }
    assert_clean(&pair);
}

#[test]
fn time_of_use_prices_each_interval_at_its_hour() {
    let mut weekday = [PricePerKwh(100_000); 24];
    weekday[18] = PricePerKwh(400_000);
    let config = PairConfig {
        tariff: Tariff::TimeOfUse(Box::new(TimeOfUse {
            utc_offset_minutes: 0,
            weekday,
            weekend: [PricePerKwh(50_000); 24],
        })),
        // 2025-01-13 (a Monday) 00:00 UTC, in 15-minute intervals.
        opened_at: IntervalIndex(1_736_726_400 / 900),
        ..PairConfig::default()
    };
    let start = config.opened_at.0;
    let mut pair = Pair::new(config);
    // 18:00 on Monday: the peak price. 1 kWh costs 0.4.
    pair.trade(Trade::agreed(
        IntervalIndex(start + 72),
        Side::B,
        WattHours(1000),
    ));
    pair.drive();
    // Saturday 10:00: the weekend price.
    pair.trade(Trade::agreed(
        IntervalIndex(start + 5 * 96 + 40),
        Side::B,
        WattHours(1000),
    ));
    pair.drive();
    let s = pair.current(Side::A).state().clone();
    assert_eq!(s.balance_b, Amount(50_000_000 + 400_000 + 50_000));
    assert_clean(&pair);
}

#[test]
fn crossing_proposals_resolve_the_same_way_on_both_sides() {
    let mut pair = Pair::new(PairConfig::default());
    // Both are owed for different intervals and propose at once.
    pair.trade(Trade::agreed(iv(2), Side::A, WattHours(100)));
    pair.trade(Trade::agreed(iv(1), Side::B, WattHours(300)));
    // Deliver B's reading of interval 2 late so that B proposes interval 1 right away.
    pair.drive();
    let a = pair.current(Side::A);
    assert_eq!(a, pair.current(Side::B));
    assert_eq!(a.state().energy_a_to_b, WattHours(100));
    assert_eq!(a.state().energy_b_to_a, WattHours(300));
    assert_eq!(a.state().last_interval, iv(2));
    assert_clean(&pair);
}

#[test]
fn simultaneous_proposals_cross_and_the_earlier_interval_wins() {
    let mut pair = Pair::new(PairConfig::default());
    pair.auto_reconnect = false;
    // Each side only knows its own sale yet, so each proposes at once.
    let a_sells = Trade::agreed(iv(2), Side::A, WattHours(100));
    let b_sells = Trade::agreed(iv(1), Side::B, WattHours(300));
    pair.reading(
        Side::A,
        gridchan_channel::IntervalReading::selling(iv(2), WattHours(100)),
    );
    pair.reading(
        Side::B,
        gridchan_channel::IntervalReading::selling(iv(1), WattHours(300)),
    );
    // Both proposals are now in flight at version 1.
    pair.deliver_one(Side::A);
    pair.deliver_one(Side::B);
    let crossed = |side| {
        pair.events(side).iter().any(|e| {
            matches!(
                e,
                Event::Crossed {
                    winner: Party::B,
                    ..
                }
            )
        })
    };
    assert!(crossed(Side::A) && crossed(Side::B), "both see B win");
    pair.trade(a_sells);
    pair.trade(b_sells);
    pair.drive();
    let cur = pair.current(Side::A);
    assert_eq!(cur, pair.current(Side::B));
    // Version 1 was burned by the crossing: B's trade is 2, A's is 3.
    assert_eq!(cur.version(), Version(3));
    assert_eq!(cur.state().energy_b_to_a, WattHours(300));
    assert_eq!(cur.state().energy_a_to_b, WattHours(100));
    assert_clean(&pair);
}

#[test]
fn a_lost_countersignature_is_recovered_on_reconnect() {
    let mut pair = Pair::new(PairConfig::default());
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(400)));
    pair.deliver_one(Side::A); // the proposal reaches B, B countersigns
    assert_eq!(pair.in_flight(Side::B), 1);
    pair.drop_next(Side::B); // the countersignature is lost with the connection
    assert_eq!(pair.current(Side::A).version(), Version(0));
    assert_eq!(pair.current(Side::B).version(), Version(1));
    pair.drive(); // reconnect, reestablish
    assert_eq!(pair.current(Side::A), pair.current(Side::B));
    assert_eq!(pair.current(Side::A).version(), Version(1));
    assert_clean(&pair);
}

#[test]
fn a_half_signed_proposal_is_completed_after_a_crash() {
    let mut pair = Pair::new(PairConfig::default());
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(400)));
    pair.flush_outputs();
    // A's proposal is durable and in flight; A dies before B answers.
    pair.crash(Side::A);
    pair.restart(Side::A);
    assert!(
        pair.view(Side::A).proposal.is_some(),
        "A's proposal survived"
    );
    pair.drive();
    assert_eq!(pair.current(Side::A), pair.current(Side::B));
    assert_eq!(pair.current(Side::A).version(), Version(1));
    assert_clean(&pair);
}

#[test]
fn a_crash_at_every_write_loses_nothing_signed() {
    for n in 0..12 {
        for side in [Side::A, Side::B] {
            let mut pair = Pair::new(PairConfig::default());
            pair.store(side).fail_after(n, WriteFault::Stop);
            for i in 1..=4 {
                let seller = if i % 2 == 0 { Side::A } else { Side::B };
                pair.trade(Trade::agreed(iv(i), seller, WattHours(100 * i)));
                pair.drive();
            }
            pair.heal();
            assert_eq!(
                pair.current(Side::A),
                pair.current(Side::B),
                "n={n} {side:?}"
            );
            assert_clean(&pair);
        }
    }
}

#[test]
fn a_failed_write_freezes_the_channel_until_a_retry() {
    let mut pair = Pair::new(PairConfig::default());
    pair.store(Side::B).fail_after(0, WriteFault::Fail);
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(400)));
    pair.drive();
    assert!(pair.view(Side::B).frozen);
    assert!(pair
        .events(Side::B)
        .iter()
        .any(|e| matches!(e, Event::Frozen { .. })));
    // Nothing B signed left: A still holds version 0.
    assert_eq!(pair.current(Side::A).version(), Version(0));
    // More trades are refused while frozen.
    pair.trade(Trade::agreed(iv(2), Side::A, WattHours(100)));
    pair.drive();
    assert_eq!(pair.current(Side::A).version(), Version(0));
    pair.store(Side::B).heal();
    let channel = pair.channel;
    pair.node_mut(Side::B)
        .command(Command::RetryPersist(channel))
        .unwrap();
    pair.drive();
    assert!(!pair.view(Side::B).frozen);
    assert_eq!(pair.current(Side::A), pair.current(Side::B));
    // Both trades settle once B can write again.
    assert_eq!(pair.current(Side::A).version(), Version(2));
    assert_eq!(pair.current(Side::A).state().energy_a_to_b, WattHours(500));
    assert_clean(&pair);
}

#[test]
fn cooperative_close_signs_a_final_state_and_asks_the_ledger_to_pay_it() {
    let mut pair = Pair::new(PairConfig::default());
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(400)));
    pair.drive();
    let channel = pair.channel;
    pair.node_mut(Side::B)
        .command(Command::Close(channel))
        .unwrap();
    pair.drive();
    let cur = pair.current(Side::A);
    assert!(cur.state().is_final);
    assert_eq!(cur, pair.current(Side::B));
    assert_eq!(cur.state().energy_a_to_b, WattHours(400));
    let asked = |pair: &Pair, side| {
        pair.ledger_requests(side)
            .iter()
            .any(|r| matches!(r, LedgerRequest::ConcludeFinal(s) if *s == cur))
    };
    for side in [Side::A, Side::B] {
        assert_eq!(pair.view(side).phase, Phase::ClosedCooperatively);
    }
    // A countersigned B's final state: A asks the ledger at once; B, the proposer, leaves it
    // to A for a while, then asks too (A may have gone away).
    assert!(asked(&pair, Side::A));
    assert!(!asked(&pair, Side::B));
    pair.advance(PairConfig::default().policy.final_submit_wait_ms);
    pair.drive();
    assert!(asked(&pair, Side::B));
    // No trades after the final state.
    pair.trade(Trade::agreed(iv(2), Side::A, WattHours(400)));
    pair.drive();
    assert_eq!(pair.current(Side::A), cur);
    pair.ledger_event(LedgerEvent::Concluded {
        version: cur.version(),
    });
    assert_eq!(pair.view(Side::A).phase, Phase::Concluded);
    assert_clean(&pair);
}

#[test]
fn close_waits_for_pending_trades() {
    let mut pair = Pair::new(PairConfig::default());
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(400)));
    let channel = pair.channel;
    pair.node_mut(Side::B)
        .command(Command::Close(channel))
        .unwrap();
    pair.drive();
    let cur = pair.current(Side::B);
    assert!(cur.state().is_final);
    assert_eq!(
        cur.state().energy_a_to_b,
        WattHours(400),
        "the trade settled first"
    );
    assert_eq!(cur, pair.current(Side::A));
    assert_clean(&pair);
}

#[test]
fn force_close_registers_the_newest_state() {
    let mut pair = Pair::new(PairConfig::default());
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(400)));
    pair.drive();
    let channel = pair.channel;
    pair.node_mut(Side::A)
        .command(Command::ForceClose(channel))
        .unwrap();
    pair.drive();
    let cur = pair.current(Side::A);
    assert_eq!(pair.view(Side::A).phase, Phase::Disputed);
    assert!(pair
        .ledger_requests(Side::A)
        .iter()
        .any(|r| matches!(r, LedgerRequest::Register(s) if *s == cur)));
    pair.ledger_event(LedgerEvent::Registered {
        version: cur.version(),
    });
    pair.drive();
    // B agrees with the registered version: nothing to refute.
    assert!(!pair
        .ledger_requests(Side::B)
        .iter()
        .any(|r| matches!(r, LedgerRequest::Refute(_))));
    pair.ledger_event_to(Side::A, LedgerEvent::WindowClosed);
    pair.drive();
    assert!(pair
        .ledger_requests(Side::A)
        .iter()
        .any(|r| matches!(r, LedgerRequest::Conclude { .. })));
    assert_clean(&pair);
}

#[test]
fn an_older_registration_is_refuted_with_the_newest_state() {
    let mut pair = Pair::new(PairConfig::default());
    for i in 1..=3 {
        pair.trade(Trade::agreed(iv(i), Side::A, WattHours(100)));
        pair.drive();
    }
    // B (the buyer) registers version 1, which pays it more.
    pair.ledger_event_to(
        Side::A,
        LedgerEvent::Registered {
            version: Version(1),
        },
    );
    pair.drive();
    let cur = pair.current(Side::A);
    assert_eq!(cur.version(), Version(3));
    assert!(pair
        .ledger_requests(Side::A)
        .iter()
        .any(|r| matches!(r, LedgerRequest::Refute(s) if *s == cur)));
    assert_eq!(pair.view(Side::A).phase, Phase::Disputed);
    assert_clean(&pair);
}

#[test]
fn an_unanswered_proposal_leads_to_a_force_close() {
    let config = PairConfig {
        policy: gridchan_channel::Policy {
            force_close_after_ms: Some(60_000),
            ..PairConfig::default().policy
        },
        ..PairConfig::default()
    };
    let mut pair = Pair::new(config);
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(400)));
    pair.crash(Side::B);
    pair.drive();
    pair.advance(59_000);
    assert_eq!(pair.view(Side::A).phase, Phase::Open);
    pair.advance(1_000);
    pair.drive();
    assert_eq!(pair.view(Side::A).phase, Phase::Disputed);
    assert!(pair
        .ledger_requests(Side::A)
        .iter()
        .any(|r| matches!(r, LedgerRequest::Register(s) if s.version() == Version(0))));
    assert_clean(&pair);
}

#[test]
fn no_trades_before_funding_and_expiry_reclaims_the_deposit() {
    let mut pair = Pair::new(PairConfig {
        funded: false,
        ..PairConfig::default()
    });
    assert_eq!(pair.view(Side::A).phase, Phase::Funding);
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(400)));
    pair.drive();
    assert_eq!(
        pair.current(Side::A).version(),
        Version(0),
        "nothing trades unfunded"
    );
    pair.ledger_event(LedgerEvent::FundingExpired);
    pair.drive();
    for side in [Side::A, Side::B] {
        assert_eq!(pair.view(side).phase, Phase::Concluded);
        assert!(pair
            .ledger_requests(side)
            .iter()
            .any(|r| matches!(r, LedgerRequest::Reclaim { .. })));
    }
    // A funded channel ignores a late expiry.
    let mut pair = Pair::new(PairConfig::default());
    pair.ledger_event(LedgerEvent::FundingExpired);
    pair.drive();
    assert_eq!(pair.view(Side::A).phase, Phase::Open);
    assert_clean(&pair);
}

#[test]
fn trading_starts_once_funded() {
    let mut pair = Pair::new(PairConfig {
        funded: false,
        ..PairConfig::default()
    });
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(400)));
    pair.drive();
    pair.ledger_event(LedgerEvent::Funded);
    pair.drive();
    assert_eq!(pair.current(Side::B).version(), Version(1));
    assert_eq!(pair.current(Side::A), pair.current(Side::B));
    assert_clean(&pair);
}

#[test]
fn the_buyer_cannot_be_billed_beyond_its_balance() {
    let config = PairConfig {
        deposit_b: Amount(30_000), // 0.03: buys 150 Wh at 0.2 per kWh
        ..PairConfig::default()
    };
    let mut pair = Pair::new(config);
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(1_000)));
    pair.drive();
    // The seller caps the trade at what the buyer can pay; the buyer agrees to that.
    let s = pair.current(Side::A).state().clone();
    assert_eq!(s.balance_b, Amount(0));
    assert_eq!(s.energy_a_to_b, WattHours(150));
    assert_eq!(pair.current(Side::B).state(), &s);
    assert_clean(&pair);
}

#[test]
fn meter_announcements_pass_through_without_touching_channels() {
    let mut pair = Pair::new(PairConfig::default());
    let before = pair.current(Side::B);
    pair.inject(
        Side::A,
        &gridchan_channel::Message::Announce(gridchan_channel::wire::Announce {
            interval: iv(1),
            import: WattHours(0),
            export: WattHours(300),
            shares: None,
            reading: None,
        }),
    );
    pair.drive();
    assert!(pair.link.up);
    assert_eq!(pair.current(Side::B), before);
    assert_clean(&pair);
}

#[test]
fn a_previewed_proposal_is_the_one_the_core_then_signs() {
    let mut pair = Pair::new(PairConfig::default());
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(500)));
    pair.drive();
    let channel = pair.view(Side::A).id;
    let reading = gridchan_channel::IntervalReading::selling(iv(2), WattHours(300));
    let preview = pair
        .node_mut(Side::A)
        .preview_proposal(&channel, &reading)
        .expect("A is owed: it would propose");
    // The buyer side, owed nothing, would not.
    let buying = gridchan_channel::IntervalReading::buying(iv(2), WattHours(300));
    assert_eq!(
        pair.node_mut(Side::B).preview_proposal(&channel, &buying),
        None
    );
    // Signed ahead, then the reading arrives: the proposal made is the previewed state, and
    // its signature is the one made ahead.
    let signed_ahead = pair.node_mut(Side::A).signer().presign(&[preview]);
    let ahead = gridchan_channel::Precomputed::new(gridchan_channel::Recovered::NONE, signed_ahead);
    pair.reading_with(Side::A, reading, &ahead);
    let proposal = pair.view(Side::A).proposal.expect("A proposed");
    assert_eq!(*proposal.digest(), preview);
    pair.reading(Side::B, buying);
    pair.drive();
    assert_eq!(pair.current(Side::A).state().energy_a_to_b, WattHours(800));
    assert_clean(&pair);
}

/// Issue 15, case 9: a channel frozen on a connection that had already reestablished comes
/// back without breaking the protocol (before, its retry sent a second `Reestablish` on the
/// same connection and the peer dropped it for a violation), and trades on.
#[test]
fn a_channel_thawed_on_a_reestablished_connection_resynchronises_without_a_violation() {
    let mut pair = Pair::new(PairConfig::default());
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(400)));
    pair.drive();
    // A reconnect: both sides reestablish on the new connection.
    pair.disconnect();
    pair.reconnect();
    pair.drive();
    pair.store(Side::B).fail_after(0, WriteFault::Fail);
    pair.trade(Trade::agreed(iv(2), Side::A, WattHours(100)));
    pair.drive();
    assert!(pair.view(Side::B).frozen);
    pair.store(Side::B).heal();
    pair.auto_reconnect = true;
    let channel = pair.channel;
    pair.node_mut(Side::B)
        .command(Command::RetryPersist(channel))
        .unwrap();
    pair.drive();
    assert!(!pair.view(Side::B).frozen);
    for side in [Side::A, Side::B] {
        assert!(
            !pair
                .events(side)
                .iter()
                .any(|e| matches!(e, Event::PeerMisbehaved { .. })),
            "{side:?}: {:?}",
            pair.events(side)
        );
    }
    pair.trade(Trade::agreed(iv(3), Side::A, WattHours(50)));
    pair.drive();
    assert_eq!(pair.current(Side::A), pair.current(Side::B));
    assert_eq!(pair.current(Side::A).state().energy_a_to_b, WattHours(550));
    assert_clean(&pair);
}

/// Issue 16: the core says when it next has something to do, and a tick then does it: a
/// buyer that holds a reading it owes for waits the peer's turn, then gives up on it; idle, it
/// has nothing to do until an input comes.
#[test]
fn the_core_says_when_it_next_has_something_to_do() {
    let mut pair = Pair::new(PairConfig::default());
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(500)));
    pair.drive();
    assert_eq!(pair.node_mut(Side::A).poll_timeout(), None, "idle");
    assert_eq!(pair.node_mut(Side::B).poll_timeout(), None, "idle");
    // B's reading says it took 300 Wh from A: B waits for A to propose.
    let buying = gridchan_channel::IntervalReading::buying(iv(2), WattHours(300));
    pair.reading(Side::B, buying);
    let wait = PairConfig::default().policy.peer_turn_wait_ms;
    let due = pair
        .node_mut(Side::B)
        .poll_timeout()
        .expect("B waits for its peer");
    // Before the deadline a tick changes nothing; at it, B stops waiting.
    pair.advance(wait - 1);
    assert_eq!(pair.node_mut(Side::B).poll_timeout(), Some(due));
    pair.advance(1);
    assert_eq!(
        pair.node_mut(Side::B).poll_timeout(),
        None,
        "nothing left to wait for"
    );
    assert_clean(&pair);
}
