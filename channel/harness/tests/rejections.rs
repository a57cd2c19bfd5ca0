//! Every rejection path: hostile or broken input is refused with a reason, costs the sender its
//! connection where it breaks the protocol, and never changes a channel.

use gridchan_channel::wire::{Countersign, OpenChannel, Reestablish, HEADER_LEN, MAX_FRAME};
use gridchan_channel::{
    Event, IntervalIndex, LedgerEvent, Message, Party, ProposalParts, Refusal, Signature,
    SignedStateParts, Signer, State, Version, WattHours,
};
use gridchan_harness::{Pair, PairConfig, Side, Trade};

fn iv(n: u64) -> IntervalIndex {
    IntervalIndex(PairConfig::default().opened_at.0 + n)
}

fn settled_pair() -> Pair {
    Pair::settled()
}

/// A's honest proposal for A selling `energy` in `interval`, before `tamper` changes it; signed
/// by `signer` (A's key unless a test says otherwise).
fn forged(
    pair: &Pair,
    interval: u64,
    energy: u64,
    signer: &Signer,
    tamper: impl FnOnce(&mut State),
) -> Message {
    let cur = pair.current(Side::B);
    let params = pair.view(Side::B).params;
    let (mut state, _) = cur
        .state()
        .settle(
            &params,
            Version(3),
            Party::A,
            iv(interval),
            WattHours(energy),
        )
        .unwrap();
    tamper(&mut state);
    let sig = signer.sign(&state.digest());
    Message::Propose(ProposalParts {
        state,
        proposer: Party::A,
        sig,
    })
}

/// B gets `message` from A: it must disconnect A, say why, and keep its state.
fn assert_violation(mut pair: Pair, message: Message, why: &str) {
    // B's own reading of the interval, so a forged trade is not merely waiting for it.
    pair.reading(
        Side::B,
        gridchan_channel::IntervalReading::buying(iv(3), WattHours(300)),
    );
    let before = pair.current(Side::B);
    pair.inject(Side::A, &message);
    pair.drive();
    assert!(!pair.link.up, "{why}: the sender loses its connection");
    assert_eq!(
        pair.current(Side::B),
        before,
        "{why}: the channel is unchanged"
    );
    let reason = pair
        .events(Side::B)
        .iter()
        .find_map(|e| match e {
            Event::PeerMisbehaved { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{why}: B logs why it disconnected"));
    assert!(
        reason.contains(why),
        "expected a reason containing {why:?}, got {reason:?}"
    );
    assert!(pair.violations().is_empty(), "{:?}", pair.violations());
    // After reconnecting, trading carries on from the same state.
    pair.auto_reconnect = true;
    pair.trade(Trade::agreed(iv(4), Side::A, WattHours(100)));
    pair.drive();
    assert_eq!(pair.current(Side::A), pair.current(Side::B));
    assert!(pair.current(Side::B).version() > before.version());
}

#[test]
fn a_signature_from_another_key_is_refused() {
    let pair = settled_pair();
    let mallory = Signer::new(&[0x66; 32], &[0; 32]).unwrap();
    let msg = forged(&pair, 3, 300, &mallory, |_| {});
    assert_violation(pair, msg, "bad signature");
}

#[test]
fn a_missing_signature_is_refused() {
    let pair = settled_pair();
    let mut msg = forged(&pair, 3, 300, &pair.signer(Side::A), |_| {});
    if let Message::Propose(p) = &mut msg {
        let mut empty = [0u8; 65];
        empty[64] = 27;
        p.sig = Signature(empty);
    }
    assert_violation(pair, msg, "bad signature");
}

#[test]
fn a_high_s_or_bad_v_signature_is_refused() {
    let pair = settled_pair();
    let mut msg = forged(&pair, 3, 300, &pair.signer(Side::A), |_| {});
    if let Message::Propose(p) = &mut msg {
        p.sig.0[64] = 29;
    }
    assert_violation(pair, msg, "bad signature");
}

#[test]
fn a_state_for_another_channel_is_refused() {
    let pair = settled_pair();
    let msg = forged(&pair, 3, 300, &pair.signer(Side::A), |s| {
        s.channel_id.0[0] ^= 1
    });
    assert_violation(pair, msg, "unknown channel");
}

#[test]
fn a_version_other_than_the_next_is_refused() {
    let pair = settled_pair();
    let msg = forged(&pair, 3, 300, &pair.signer(Side::A), |s| {
        s.version = Version(4)
    });
    assert_violation(pair, msg, "expected version 3, got 4");
    let pair = settled_pair();
    let msg = forged(&pair, 3, 300, &pair.signer(Side::A), |s| {
        s.version = Version(2)
    });
    assert_violation(pair, msg, "not newer");
}

#[test]
fn money_created_or_destroyed_is_refused() {
    let pair = settled_pair();
    let msg = forged(&pair, 3, 300, &pair.signer(Side::A), |s| s.balance_a.0 += 1);
    assert_violation(pair, msg, "balances add up to");
    let pair = settled_pair();
    let msg = forged(&pair, 3, 300, &pair.signer(Side::A), |s| s.balance_b.0 -= 1);
    assert_violation(pair, msg, "balances add up to");
}

#[test]
fn a_balance_that_would_overflow_or_go_negative_is_refused() {
    // Overflow: balances that wrap around to the right sum.
    let pair = settled_pair();
    let msg = forged(&pair, 3, 300, &pair.signer(Side::A), |s| {
        let total = s.balance_a.0 + s.balance_b.0;
        s.balance_a.0 = u64::MAX;
        s.balance_b.0 = total.wrapping_sub(u64::MAX);
    });
    assert_violation(pair, msg, "balances add up to");
    // Negative: billing more energy than B's whole balance pays for.
    let pair = settled_pair();
    let cur = pair.current(Side::B);
    let total = cur.state().balance_a.0 + cur.state().balance_b.0;
    let mut state = cur.state().clone();
    state.version = Version(3);
    state.last_interval = iv(3);
    state.energy_a_to_b.0 += 10_000_000; // 10 MWh costs 2,000 tokens at 0.2/kWh
    state.balance_a.0 = total;
    state.balance_b.0 = 0;
    let sig = pair.signer(Side::A).sign(&state.digest());
    let msg = Message::Propose(ProposalParts {
        state,
        proposer: Party::A,
        sig,
    });
    assert_violation(pair, msg, "balance cannot pay");
}

#[test]
fn a_price_off_the_tariff_is_refused() {
    let pair = settled_pair();
    let msg = forged(&pair, 3, 300, &pair.signer(Side::A), |s| {
        s.balance_a.0 += 10;
        s.balance_b.0 -= 10;
    });
    assert_violation(pair, msg, "price off the tariff");
}

#[test]
fn energy_that_went_backwards_or_both_ways_is_refused() {
    let pair = settled_pair();
    let msg = forged(&pair, 3, 300, &pair.signer(Side::A), |s| {
        s.energy_b_to_a.0 -= 1
    });
    assert_violation(pair, msg, "went backwards");
    let pair = settled_pair();
    let msg = forged(&pair, 3, 300, &pair.signer(Side::A), |s| {
        s.energy_b_to_a.0 += 1
    });
    assert_violation(pair, msg, "both ways");
}

#[test]
fn a_proposal_by_the_buyer_is_refused() {
    // A claims B delivered energy (so A would pay): only the owed party proposes.
    let pair = settled_pair();
    let cur = pair.current(Side::B);
    let params = pair.view(Side::B).params;
    let (state, _) = cur
        .state()
        .settle(&params, Version(3), Party::B, iv(3), WattHours(100))
        .unwrap();
    let sig = pair.signer(Side::A).sign(&state.digest());
    let msg = Message::Propose(ProposalParts {
        state,
        proposer: Party::A,
        sig,
    });
    assert_violation(pair, msg, "only the seller proposes");
}

#[test]
fn a_stale_interval_is_refused() {
    let pair = settled_pair();
    let msg = forged(&pair, 3, 300, &pair.signer(Side::A), |s| {
        s.last_interval = iv(2)
    });
    assert_violation(pair, msg, "is not after the last settled interval");
}

#[test]
fn a_final_state_that_moves_money_is_refused() {
    let pair = settled_pair();
    let msg = forged(&pair, 3, 300, &pair.signer(Side::A), |s| s.is_final = true);
    assert_violation(pair, msg, "final state must not move");
}

#[test]
fn a_bad_countersignature_is_refused_and_the_proposal_kept() {
    let mut pair = settled_pair();
    pair.trade(Trade::agreed(iv(3), Side::A, WattHours(100)));
    pair.flush_outputs();
    let proposal = pair.view(Side::A).proposal.expect("A proposed");
    // Deliver nothing from A; forge B's answer with a wrong key.
    let mallory = Signer::new(&[0x66; 32], &[0; 32]).unwrap();
    let forged = Message::Countersign(Countersign {
        channel_id: pair.channel,
        version: proposal.version(),
        sig: mallory.sign(proposal.digest()),
    });
    let before = pair.current(Side::A);
    pair.inject(Side::B, &forged);
    pair.deliver_one(Side::B);
    assert!(!pair.link.up);
    assert_eq!(pair.current(Side::A), before);
    assert_eq!(
        pair.view(Side::A).proposal,
        Some(proposal),
        "still waiting for B"
    );
}

#[test]
fn a_countersignature_for_another_version_is_refused() {
    let mut pair = settled_pair();
    let sig = pair.signer(Side::B).sign(pair.current(Side::A).digest());
    let forged = Message::Countersign(Countersign {
        channel_id: pair.channel,
        version: Version(9),
        sig,
    });
    let before = pair.current(Side::A);
    pair.inject(Side::B, &forged);
    pair.drive();
    assert!(!pair.link.up);
    assert_eq!(pair.current(Side::A), before);
}

#[test]
fn a_reestablish_with_a_forged_state_is_refused() {
    let pair = settled_pair();
    let cur = pair.current(Side::B);
    let mut state = cur.state().clone();
    state.version = Version(50);
    state.balance_a.0 += 1_000;
    state.balance_b.0 -= 1_000;
    let a = pair.signer(Side::A).sign(&state.digest());
    let msg = Message::Reestablish(Box::new(Reestablish {
        channel_id: pair.channel,
        current: SignedStateParts {
            state,
            sig_a: a,
            sig_b: *cur.signature(Party::B), // B never signed this
        },
        proposal: None,
        highest_signed: Version(50),
    }));
    // On a fresh connection, the forged reestablish arrives before the real one.
    let mut pair = pair;
    pair.disconnect();
    pair.reconnect();
    assert_violation(pair, msg, "bad signature");
}

/// B refuses with a reason but keeps the connection: honest meters can disagree.
fn assert_disagreement(trade: Trade, expected: Refusal) {
    let mut pair = settled_pair();
    pair.auto_reconnect = true;
    let before = pair.current(Side::B);
    pair.trade(trade);
    pair.drive();
    assert!(pair.link.up, "a disagreement keeps the connection");
    assert_eq!(pair.current(Side::B), before);
    assert_eq!(pair.current(Side::A), before);
    let refused = |side| {
        pair.events(side).iter().any(
            |e| matches!(e, Event::Refused { reason, by: Party::B, .. } if *reason == expected),
        )
    };
    assert!(refused(Side::A), "A learns why");
    assert!(refused(Side::B), "B logs why");
    assert!(
        pair.view(Side::A).proposal.is_none(),
        "A dropped its proposal"
    );
    // The next interval settles normally, one version above the burned one.
    pair.trade(Trade::agreed(iv(4), Side::A, WattHours(100)));
    pair.drive();
    assert_eq!(pair.current(Side::A), pair.current(Side::B));
    assert_eq!(pair.current(Side::A).version(), Version(4));
    assert!(pair.violations().is_empty(), "{:?}", pair.violations());
}

#[test]
fn energy_beyond_the_buyers_metered_import_is_refused() {
    let trade = Trade {
        interval: iv(3),
        seller: Side::A,
        energy: WattHours(500),
        buyer_reading: WattHours(500),
        metered_import: WattHours(300),
    };
    assert_disagreement(
        trade,
        Refusal::EnergyBeyondImport {
            billed: 500,
            imported: 300,
        },
    );
}

#[test]
fn energy_outside_the_meter_tolerance_is_refused() {
    // Tolerance: 5 Wh or 2 %. 400 Wh allows 8 Wh; 500 is far off.
    let trade = Trade {
        interval: iv(3),
        seller: Side::A,
        energy: WattHours(500),
        buyer_reading: WattHours(400),
        metered_import: WattHours(600),
    };
    assert_disagreement(
        trade,
        Refusal::OutsideTolerance {
            billed: 500,
            reading: 400,
        },
    );
}

#[test]
fn energy_within_the_meter_tolerance_is_accepted() {
    let mut pair = settled_pair();
    pair.trade(Trade {
        interval: iv(3),
        seller: Side::A,
        energy: WattHours(408),
        buyer_reading: WattHours(400),
        metered_import: WattHours(600),
    });
    pair.drive();
    assert_eq!(pair.current(Side::B).version(), Version(3));
    assert_eq!(pair.current(Side::A), pair.current(Side::B));
}

#[test]
fn a_proposal_without_a_buyer_reading_is_refused_after_the_wait() {
    let mut pair = settled_pair();
    pair.auto_reconnect = true;
    pair.reading(
        Side::A,
        gridchan_channel::IntervalReading::selling(iv(3), WattHours(100)),
    );
    pair.drive();
    assert_eq!(pair.current(Side::B).version(), Version(2), "B holds it");
    pair.advance(PairConfig::default().policy.reading_wait_ms);
    pair.drive();
    assert!(pair.events(Side::A).iter().any(|e| matches!(
        e,
        Event::Refused {
            reason: Refusal::NoMeterReading(_),
            by: Party::B,
            ..
        }
    )));
    assert!(pair.link.up);
    assert_eq!(pair.current(Side::A).version(), Version(2));
}

fn assert_frame_rejected(frame: Vec<u8>) {
    let mut pair = settled_pair();
    let before = pair.current(Side::B);
    pair.inject_frame(Side::A, frame);
    pair.drive();
    assert_eq!(pair.rejected_frames, 1);
    assert!(!pair.link.up, "undecodable bytes cost the connection");
    assert_eq!(pair.current(Side::B), before);
}

#[test]
fn an_oversized_frame_is_refused() {
    let mut frame = vec![0u8; MAX_FRAME + 1];
    frame[..4].copy_from_slice(&((MAX_FRAME - 3) as u32).to_be_bytes());
    assert_frame_rejected(frame);
    assert_eq!(
        gridchan_channel::wire::frame_length(&((MAX_FRAME as u32) * 4).to_be_bytes()),
        Err(gridchan_channel::WireError::Oversized(MAX_FRAME * 4 + 4)),
        "refused from its length prefix, before it is buffered"
    );
}

#[test]
fn an_unknown_message_type_is_refused() {
    let mut frame = Message::Countersign(Countersign {
        channel_id: gridchan_channel::ChannelId([1; 32]),
        version: Version(1),
        sig: Signature([0; 65]),
    })
    .encode();
    frame[6] = 99;
    assert_eq!(
        Message::decode(&frame),
        Err(gridchan_channel::WireError::UnknownType(99))
    );
    assert_frame_rejected(frame);
}

#[test]
fn an_unknown_protocol_version_is_refused() {
    let pair = settled_pair();
    let mut frame = forged(&pair, 3, 300, &pair.signer(Side::A), |_| {}).encode();
    frame[4..6].copy_from_slice(&2u16.to_be_bytes());
    assert_eq!(
        Message::decode(&frame),
        Err(gridchan_channel::WireError::UnsupportedVersion(2))
    );
    assert_frame_rejected(frame);
}

#[test]
fn garbage_and_truncated_frames_are_refused() {
    let pair = settled_pair();
    let good = forged(&pair, 3, 300, &pair.signer(Side::A), |_| {}).encode();
    let mut garbage = good.clone();
    for b in &mut garbage[HEADER_LEN..] {
        *b = 0xff;
    }
    assert!(matches!(
        Message::decode(&garbage),
        Err(gridchan_channel::WireError::Malformed { .. })
    ));
    assert_frame_rejected(garbage);
    let mut truncated = good[..good.len() - 10].to_vec();
    let len = (truncated.len() - 4) as u32;
    truncated[..4].copy_from_slice(&len.to_be_bytes());
    assert!(Message::decode(&truncated).is_err());
    assert_frame_rejected(truncated);
    let mut trailing = good;
    trailing.push(0);
    let len = (trailing.len() - 4) as u32;
    trailing[..4].copy_from_slice(&len.to_be_bytes());
    assert!(Message::decode(&trailing).is_err());
    assert_frame_rejected(trailing);
}

#[test]
fn an_open_with_bad_parameters_or_signature_is_refused() {
    let mut pair = settled_pair();
    let mut params = (*pair.view(Side::B).params).clone();
    params.nonce = [9; 32];
    params.challenge_window_blocks = 1;
    let v0 = State::initial(&params);
    let sig_a = pair.signer(Side::A).sign(&v0.digest());
    pair.inject(
        Side::A,
        &Message::OpenChannel(Box::new(OpenChannel {
            params: params.clone(),
            sig_a,
        })),
    );
    pair.drive();
    assert!(pair.link.up, "unacceptable terms are refused, not punished");
    assert!(pair
        .node_mut(Side::B)
        .channel(&params.channel_id())
        .is_none());
    // A valid channel but a signature over the wrong state.
    params.challenge_window_blocks = 30;
    let sig_a = pair.signer(Side::A).sign(&[0; 32]);
    pair.inject(
        Side::A,
        &Message::OpenChannel(Box::new(OpenChannel {
            params: params.clone(),
            sig_a,
        })),
    );
    pair.drive();
    assert!(!pair.link.up);
    assert!(pair
        .node_mut(Side::B)
        .channel(&params.channel_id())
        .is_none());
}

#[test]
fn proposals_are_refused_before_funding_and_after_closing() {
    let mut pair = settled_pair();
    pair.auto_reconnect = true;
    pair.ledger_event_to(
        Side::B,
        LedgerEvent::Registered {
            version: Version(2),
        },
    );
    pair.drive();
    pair.trade(Trade::agreed(iv(3), Side::A, WattHours(100)));
    pair.drive();
    assert!(pair.events(Side::A).iter().any(|e| matches!(
        e,
        Event::Refused {
            reason: Refusal::NotAccepting,
            by: Party::B,
            ..
        }
    )));
    assert_eq!(pair.current(Side::B).version(), Version(2));
}

#[test]
fn a_second_reestablish_on_one_connection_is_refused() {
    let pair = settled_pair();
    let cur = pair.current(Side::A);
    let msg = Message::Reestablish(Box::new(Reestablish {
        channel_id: pair.channel,
        current: cur.to_parts(),
        proposal: None,
        highest_signed: cur.version(),
    }));
    assert_violation(pair, msg, "second reestablish");
}

#[test]
fn a_proposal_at_a_version_the_receiver_already_signed_is_refused_as_burned() {
    let mut pair = settled_pair();
    pair.auto_reconnect = true;
    // B proposes v3 for its sale; A's meter disagrees, so A refuses: B has signed v3.
    pair.trade(Trade {
        interval: iv(3),
        seller: Side::B,
        energy: WattHours(500),
        buyer_reading: WattHours(100),
        metered_import: WattHours(600),
    });
    pair.drive();
    assert_eq!(pair.view(Side::B).highest_signed, Version(3));
    // A proposal at v3 (signed by A, who never heard of B's) cannot be countersigned by B.
    let before = pair.current(Side::B);
    let msg = forged(&pair, 4, 100, &pair.signer(Side::A), |s| {
        s.version = Version(3)
    });
    pair.inject(Side::A, &msg);
    pair.drive();
    assert!(pair.link.up, "an honest race, not a violation");
    assert_eq!(pair.current(Side::B), before);
    assert!(pair.events(Side::B).iter().any(|e| matches!(
        e,
        Event::Refused {
            reason: Refusal::VersionBurned { highest: 3 },
            by: Party::B,
            ..
        }
    )));
}

#[test]
fn an_open_in_another_metering_interval_is_refused_and_the_opener_sees_why() {
    let config = PairConfig {
        policy: gridchan_channel::Policy {
            interval_seconds: Some(900),
            ..PairConfig::default().policy
        },
        ..PairConfig::default()
    };
    let mut pair = Pair::new(config.clone());
    // A asks for 60-second intervals; B meters every 15 minutes.
    let b = *pair.view(Side::A).params.node(gridchan_channel::Party::B);
    let id = pair
        .node_mut(Side::A)
        .open(
            gridchan_channel::OpenRequest {
                peer: b,
                deposit: gridchan_channel::Amount(1_000_000),
                peer_deposit: gridchan_channel::Amount(1_000_000),
                tariff: config.tariff.clone(),
                challenge_window_blocks: 20,
                funding_window_blocks: 20,
                interval_seconds: 60,
                tolerance: config.tolerance,
                opened_at: config.opened_at,
                nonce: [8; 32],
                evidence: Default::default(),
            },
            true,
        )
        .unwrap();
    pair.drive();
    assert!(pair.link.up, "unacceptable terms are refused, not punished");
    assert!(pair.node_mut(Side::B).channel(&id).is_none());
    let seen = pair.node_mut(Side::A).channel(&id).unwrap();
    assert_eq!(seen.phase, gridchan_channel::Phase::Concluded);
    match seen.refused {
        Some((Version(0), Refusal::BadParams(why))) => {
            assert!(why.contains("meters every 900 s"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    // The first channel, in the same interval as B, trades on.
    pair.trade(Trade::agreed(iv(1), Side::A, WattHours(500)));
    pair.drive();
    assert_eq!(pair.current(Side::B).version(), Version(1));
}

#[test]
fn an_open_with_windows_above_the_protocols_maximum_is_refused() {
    for (challenge, funding) in [(u64::MAX, 20), (20, u64::MAX)] {
        let mut pair = settled_pair();
        let mut params = (*pair.view(Side::B).params).clone();
        params.nonce = [9; 32];
        params.challenge_window_blocks = challenge;
        params.funding_window_blocks = funding;
        let sig_a = pair.signer(Side::A).sign(&State::initial(&params).digest());
        let from = pair.id(Side::A);
        let b = pair.node_mut(Side::B);
        b.handle(gridchan_channel::Input::Message {
            from,
            message: Message::OpenChannel(Box::new(OpenChannel {
                params: params.clone(),
                sig_a,
            })),
        });
        let outputs: Vec<_> = std::iter::from_fn(|| b.poll_output()).collect();
        assert!(b.channel(&params.channel_id()).is_none());
        // Refused with the reason, and not punished: the opener learns which limit it broke.
        assert!(
            outputs.iter().any(|o| matches!(
                o,
                gridchan_channel::Output::Send {
                    message: Message::Refuse(r),
                    ..
                } if matches!(&r.reason, Refusal::BadParams(why) if why.contains("maximum"))
            )),
            "{outputs:?}"
        );
        assert!(!outputs
            .iter()
            .any(|o| matches!(o, gridchan_channel::Output::Disconnect { .. })));
    }
}
