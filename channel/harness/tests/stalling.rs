//! A neighbour that tries to stop us trading without breaking a signature: it claims to have
//! signed an absurd version, or wins crossings on purpose and never proposes. Its honest
//! victim (A) keeps proposing, and a peer that insists on a lie loses the channel on the ledger.
//! The liar is hand-made here (B's gateway is down; its key speaks through `hostile`).

use gridchan_channel::wire::Reestablish;
use gridchan_channel::{
    Event, Input, IntervalIndex, IntervalReading, LedgerRequest, Message, Party, ProposalParts,
    Version, WattHours,
};
use gridchan_harness::{Pair, PairConfig, Side, Trade};

fn iv(n: u64) -> IntervalIndex {
    IntervalIndex(PairConfig::default().opened_at.0 + n)
}

fn settled_pair() -> Pair {
    Pair::settled()
}

/// B's gateway goes down and a hostile program with B's key connects to A and sends `messages`;
/// A's outputs are carried out (its sends go nowhere).
fn hostile(pair: &mut Pair, messages: Vec<Message>) {
    pair.crash(Side::B);
    let b = pair.id(Side::B);
    pair.node_mut(Side::A).handle(Input::Connected(b));
    for message in messages {
        pair.node_mut(Side::A)
            .handle(Input::Message { from: b, message });
        pair.flush_outputs();
    }
    pair.node_mut(Side::A).handle(Input::Disconnected(b));
    pair.flush_outputs();
}

/// B's gateway goes down and a hostile program with B's key connects to A and reestablishes
/// honestly; it says what it likes after that. Returns B's key.
fn hostile_connected(pair: &mut Pair) -> gridchan_channel::NodeId {
    let b = pair.id(Side::B);
    pair.crash(Side::B);
    let honest = reestablish(pair, 2);
    let a = pair.node_mut(Side::A);
    a.handle(Input::Connected(b));
    a.handle(Input::Message {
        from: b,
        message: honest,
    });
    b
}

/// An honest reestablish from B, but for the highest version it claims to have signed.
fn reestablish(pair: &Pair, highest_signed: u64) -> Message {
    let cur = pair.current(Side::A);
    Message::Reestablish(Box::new(Reestablish {
        channel_id: pair.channel,
        current: cur.to_parts(),
        proposal: None,
        highest_signed: Version(highest_signed),
    }))
}

/// B (hostile, its gateway down) sends A a proposal at `version` from A's current state: B
/// selling `energy` in `interval`. A's outputs are carried out.
fn b_proposes(pair: &mut Pair, version: Version, interval: IntervalIndex, energy: WattHours) {
    let params = pair.view(Side::A).params;
    let (state, _) = pair
        .current(Side::A)
        .state()
        .settle(&params, version, Party::B, interval, energy)
        .unwrap();
    let sig = pair.signer(Side::B).sign(&state.digest());
    let from = pair.id(Side::B);
    pair.node_mut(Side::A).handle(Input::Message {
        from,
        message: Message::Propose(ProposalParts {
            state,
            proposer: Party::B,
            sig,
        }),
    });
    pair.flush_outputs();
}

fn misbehaved(pair: &Pair) -> Vec<String> {
    pair.events(Side::A)
        .iter()
        .filter_map(|e| match e {
            Event::PeerMisbehaved { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_absurd_highest_version_in_a_reestablish_is_refused_and_trading_goes_on() {
    let mut pair = settled_pair();
    let lie = reestablish(&pair, u64::MAX);
    hostile(&mut pair, vec![lie]);
    let reasons = misbehaved(&pair);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("claims version 18446744073709551615")),
        "{reasons:?}"
    );
    // The honest gateway comes back: A still proposes, at the next version.
    pair.restart(Side::B);
    pair.reconnect();
    pair.drive();
    pair.trade(Trade::agreed(iv(3), Side::A, WattHours(100)));
    pair.drive();
    assert_eq!(pair.current(Side::A).version(), Version(3));
    assert_eq!(pair.current(Side::B).version(), Version(3));
    assert!(
        !pair
            .ledger_requests(Side::A)
            .iter()
            .any(|r| matches!(r, LedgerRequest::Register(_))),
        "one lie: no close"
    );
}

#[test]
fn a_peer_that_insists_on_an_absurd_version_loses_the_channel_on_the_ledger() {
    let mut pair = settled_pair();
    // Just within the bound is believed (an honest peer may be a few versions ahead).
    let plausible = reestablish(&pair, 2 + 1_024);
    hostile(&mut pair, vec![plausible]);
    assert!(misbehaved(&pair).is_empty(), "{:?}", misbehaved(&pair));
    let b = pair.id(Side::B);
    for n in 1..=3 {
        let lie = reestablish(&pair, 1 << 40);
        let a = pair.node_mut(Side::A);
        a.handle(Input::Connected(b));
        a.handle(Input::Message {
            from: b,
            message: lie,
        });
        a.handle(Input::Disconnected(b));
        pair.flush_outputs();
        assert_eq!(misbehaved(&pair).len(), n);
    }
    let closing = pair
        .ledger_requests(Side::A)
        .iter()
        .any(|r| matches!(r, LedgerRequest::Register(s) if s.version() == Version(2)));
    assert!(closing, "{:?}", pair.ledger_requests(Side::A));
    assert!(misbehaved(&pair)[2].contains("closing the channel on the ledger"));
}

#[test]
fn a_refusal_naming_an_absurd_version_is_refused() {
    let mut pair = settled_pair();
    let b = hostile_connected(&mut pair);
    pair.reading(Side::A, IntervalReading::selling(iv(3), WattHours(100)));
    pair.flush_outputs();
    let ours = pair.view(Side::A).proposal.expect("A proposes v3");
    let channel_id = pair.channel;
    pair.node_mut(Side::A).handle(Input::Message {
        from: b,
        message: Message::Refuse(gridchan_channel::wire::Refuse {
            channel_id,
            version: ours.version(),
            reason: gridchan_channel::Refusal::VersionBurned { highest: u64::MAX },
        }),
    });
    pair.flush_outputs();
    assert!(
        misbehaved(&pair)
            .iter()
            .any(|r| r.contains("a refusal claims version")),
        "{:?}",
        misbehaved(&pair)
    );
}

#[test]
fn the_loser_of_a_crossing_proposes_again_when_the_winner_stays_silent() {
    let mut pair = settled_pair();
    let b = pair.id(Side::B);
    hostile_connected(&mut pair);
    // A sells in interval 4 and proposes v3.
    pair.reading(Side::A, IntervalReading::selling(iv(4), WattHours(100)));
    pair.flush_outputs();
    assert_eq!(
        pair.view(Side::A).proposal.map(|p| p.version()),
        Some(Version(3))
    );
    // B crosses it with a proposal for the earlier interval 3, which wins the crossing ...
    b_proposes(&mut pair, Version(3), iv(3), WattHours(50));
    assert!(
        pair.view(Side::A).proposal.is_none(),
        "A yields to the winner"
    );
    // ... and then never proposes. A waits a bounded time, says so, and proposes again.
    let wait = PairConfig::default().policy.crossing_wait_ms;
    pair.advance(wait - 1);
    pair.flush_outputs();
    assert!(pair.view(Side::A).proposal.is_none(), "not before the wait");
    pair.advance(1);
    pair.flush_outputs();
    let again = pair.view(Side::A).proposal.expect("A proposes again");
    assert_eq!(again.version(), Version(4));
    assert_eq!(again.state().last_interval, iv(4));
    assert!(pair.events(Side::A).iter().any(|e| matches!(
        e,
        Event::CrossingNotFollowed { peer, .. } if *peer == b
    )));
}

#[test]
fn a_peer_that_crosses_every_proposal_is_disconnected_after_three() {
    let mut pair = settled_pair();
    hostile_connected(&mut pair);
    pair.reading(Side::A, IntervalReading::selling(iv(3), WattHours(100)));
    pair.flush_outputs();
    let mut signed_by_a = 0;
    for _ in 0..10 {
        let Some(ours) = pair.view(Side::A).proposal else {
            break;
        };
        if !misbehaved(&pair).is_empty() {
            break;
        }
        signed_by_a += 1;
        // B crosses it: the same version and interval, B selling 1 Wh (A wins every time).
        b_proposes(&mut pair, ours.version(), iv(3), WattHours(1));
    }
    assert!(
        misbehaved(&pair)
            .iter()
            .any(|r| r.contains("crossing on purpose")),
        "{:?}",
        misbehaved(&pair)
    );
    assert_eq!(
        signed_by_a, 4,
        "A signed its proposal again three times, then stopped"
    );
}
