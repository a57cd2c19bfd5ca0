//! Consent to terms in the core: a node signs nothing on terms its policy does not allow; a
//! proposal within them from a stranger waits for the owner, who accepts or rejects it; it
//! expires, the proposer can withdraw it, and strangers cannot pile up proposals.

use gridchan_channel::wire::OpenChannel;
use gridchan_channel::{
    AcceptPolicy, Acceptance, Amount, ChannelId, Command, CommandError, Event, Input,
    IntervalIndex, Message, MeterTolerance, Node, OpenRequest, Output, Phase, Policy, PricePerKwh,
    Refusal, State, Tariff,
};
use gridchan_harness::key;

/// B, asking its owner about strangers' channels (the default policy).
fn owner_b() -> Node {
    let mut b = Node::new(key(2), Policy::default());
    b.handle(Input::Connected(key(1).id()));
    b
}

fn request(nonce: u8) -> OpenRequest {
    OpenRequest {
        peer: key(2).id(),
        deposit: Amount(5_000_000),
        peer_deposit: Amount(2_000_000),
        tariff: Tariff::Flat(PricePerKwh(200_000)),
        challenge_window_blocks: 30,
        funding_window_blocks: 60,
        interval_seconds: 900,
        tolerance: MeterTolerance {
            absolute_wh: 5,
            permille: 20,
        },
        opened_at: IntervalIndex(1_000),
        nonce: [nonce; 32],
        evidence: Default::default(),
    }
}

/// Time of use on `zone`'s clock by the time-zone `rules` of that name.
fn zoned(zone: &str, rules: &str) -> Tariff {
    Tariff::Zoned(Box::new(gridchan_channel::ZonedTimeOfUse {
        zone: zone.into(),
        rules: rules.into(),
        weekday: [PricePerKwh(200_000); 24],
        weekend: [PricePerKwh(150_000); 24],
    }))
}

/// A's `OpenChannel` for `req`, signed by A.
fn open_from_a(req: OpenRequest) -> (ChannelId, Message) {
    let params = req.params(key(1).id());
    let sig_a = key(1).sign(&State::initial(&params).digest());
    (
        params.channel_id(),
        Message::OpenChannel(Box::new(OpenChannel { params, sig_a })),
    )
}

/// Delivers `message` from A and carries out B's outputs (persists acknowledged at once).
fn deliver(b: &mut Node, message: Message) -> Vec<Output> {
    b.handle(Input::Message {
        from: key(1).id(),
        message,
    });
    drain(b)
}

fn drain(b: &mut Node) -> Vec<Output> {
    let mut out = Vec::new();
    while let Some(o) = b.poll_output() {
        if let Output::Persist { update, .. } = &o {
            b.handle(Input::Persisted(*update));
        }
        out.push(o);
    }
    out
}

fn refusal(out: &[Output]) -> Option<String> {
    out.iter().find_map(|o| match o {
        Output::Send {
            message: Message::Refuse(r),
            ..
        } => match &r.reason {
            Refusal::BadParams(why) => Some(why.clone()),
            other => Some(other.to_string()),
        },
        _ => None,
    })
}

fn accepted(out: &[Output]) -> bool {
    out.iter().any(|o| {
        matches!(
            o,
            Output::Send {
                message: Message::AcceptChannel(_),
                ..
            }
        )
    })
}

#[test]
fn terms_outside_the_policy_are_refused_whoever_proposes_and_nothing_is_signed() {
    type Change = fn(&mut OpenRequest);
    let cases: [(Change, &str); 9] = [
        (|r| r.peer_deposit = Amount(89_000_000), "deposit 89.000000"),
        // A zoned tariff priced by other time-zone rules, or on a zone nobody knows.
        (
            |r| r.tariff = zoned("Europe/Amsterdam", "1999a"),
            "rules of 1999a",
        ),
        (
            |r| r.tariff = zoned("Mars/Olympus_Mons", gridchan_channel::zone_rules()),
            "not a time zone",
        ),
        // A meter named as B's, which has no signing meter.
        (
            |r| r.evidence.meter_b = Some(key(9).id()),
            "does not sign its readings",
        ),
        (
            |r| r.tariff = Tariff::Flat(PricePerKwh(1_000_000_000_000)),
            "prices from",
        ),
        (|r| r.challenge_window_blocks = 100_000, "challenge window"),
        (|r| r.funding_window_blocks = 1_000_000, "funding window"),
        (|r| r.tolerance.permille = 1000, "meter tolerance"),
        (|r| r.tolerance.absolute_wh = 100_000, "meter tolerance"),
    ];
    for (change, why) in cases {
        // Even a listed neighbour, whose proposals need no answer.
        let mut b = Node::new(
            key(2),
            Policy {
                accept: AcceptPolicy {
                    listed: vec![key(1).id()],
                    ..AcceptPolicy::default()
                },
                ..Policy::default()
            },
        );
        b.handle(Input::Connected(key(1).id()));
        let mut req = request(1);
        change(&mut req);
        let (id, open) = open_from_a(req);
        let out = deliver(&mut b, open);
        let refused = refusal(&out).unwrap_or_default();
        assert!(refused.contains(why), "{why}: {refused}");
        assert!(!accepted(&out));
        assert!(!out.iter().any(|o| matches!(o, Output::Persist { .. })));
        assert!(!out.iter().any(|o| matches!(o, Output::Disconnect { .. })));
        assert!(b.channel(&id).is_none());
        assert_eq!(b.offers().count(), 0);
    }
}

#[test]
fn the_deposit_is_at_most_the_policys_share_of_the_balance() {
    let mut b = owner_b();
    // A quarter of 4 tokens is 1: a deposit of 2 is too much.
    b.handle(Input::Balance(Amount(4_000_000)));
    let (_, open) = open_from_a(request(1));
    let refused = refusal(&deliver(&mut b, open)).unwrap_or_default();
    assert!(refused.contains("at most 1.000000"), "{refused}");
    b.handle(Input::Balance(Amount(40_000_000)));
    let (_, open) = open_from_a(request(2));
    assert!(refusal(&deliver(&mut b, open)).is_none());
    assert_eq!(b.offers().count(), 1);
}

#[test]
fn a_strangers_proposal_waits_for_the_owner_who_accepts_it() {
    let mut b = owner_b();
    let (id, open) = open_from_a(request(1));
    let out = deliver(&mut b, open.clone());
    assert!(!accepted(&out), "nothing signed before the owner answers");
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Event(Event::Offered { channel, .. }) if *channel == id)));
    let offer = b.offers().next().unwrap();
    assert_eq!(offer.params.deposit_b, Amount(2_000_000));
    // Proposed again on a reconnect: still one, still waiting.
    assert!(deliver(&mut b, open).is_empty());
    assert_eq!(b.offers().count(), 1);
    b.command(Command::Accept(id)).unwrap();
    let out = drain(&mut b);
    assert!(accepted(&out));
    assert_eq!(b.channel(&id).unwrap().phase, Phase::Funding);
    assert_eq!(b.offers().count(), 0);
    assert_eq!(
        b.command(Command::Accept(id)),
        Err(CommandError::NoOffer(id))
    );
}

#[test]
fn a_proposal_accepted_while_the_proposer_is_away_is_answered_when_it_returns() {
    let mut b = owner_b();
    let (id, open) = open_from_a(request(1));
    deliver(&mut b, open.clone());
    b.handle(Input::Disconnected(key(1).id()));
    b.command(Command::Accept(id)).unwrap();
    drain(&mut b);
    b.handle(Input::Connected(key(1).id()));
    drain(&mut b);
    // A proposes again on reconnecting and hears the acceptance.
    assert!(accepted(&deliver(&mut b, open)));
}

#[test]
fn the_owner_rejects_a_proposal_and_the_proposer_hears_why() {
    let mut b = owner_b();
    let (id, open) = open_from_a(request(1));
    deliver(&mut b, open);
    b.command(Command::Reject {
        channel: id,
        reason: "not before we have met".into(),
    })
    .unwrap();
    let out = drain(&mut b);
    let why = refusal(&out).unwrap();
    assert_eq!(why, "its owner declined: not before we have met");
    assert!(b.channel(&id).is_none());
    assert_eq!(b.offers().count(), 0);
}

#[test]
fn a_proposal_nobody_answers_expires_and_the_proposer_can_withdraw_one() {
    let mut b = owner_b();
    b.handle(Input::Tick { now_ms: 1_000 });
    let (id, open) = open_from_a(request(1));
    deliver(&mut b, open);
    let ttl = AcceptPolicy::default().offer_ttl_ms;
    b.handle(Input::Tick {
        now_ms: 1_000 + ttl - 1,
    });
    assert_eq!(b.offers().count(), 1);
    b.handle(Input::Tick {
        now_ms: 1_000 + ttl,
    });
    let out = drain(&mut b);
    assert!(refusal(&out).unwrap().contains("expired"));
    assert!(out.iter().any(
        |o| matches!(o, Output::Event(Event::OfferExpired { channel, .. }) if *channel == id)
    ));
    assert_eq!(b.offers().count(), 0);

    // Withdrawn by A (its `channel cancel`): the offer goes.
    let (id, open) = open_from_a(request(2));
    deliver(&mut b, open);
    let out = deliver(
        &mut b,
        Message::Refuse(gridchan_channel::wire::Refuse {
            channel_id: id,
            version: gridchan_channel::Version(0),
            reason: Refusal::BadParams("withdrawn by its proposer".into()),
        }),
    );
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Event(Event::OfferWithdrawn { .. }))));
    assert_eq!(b.offers().count(), 0);
}

#[test]
fn the_proposer_withdraws_only_before_the_neighbour_accepts() {
    let mut a = Node::new(key(1), Policy::default());
    let id = a.open(request(1), true).unwrap();
    drain(&mut a);
    a.command(Command::Cancel(id)).unwrap();
    let out = drain(&mut a);
    assert!(refusal(&out).unwrap().contains("withdrawn"));
    let view = a.channel(&id).unwrap();
    assert_eq!(view.phase, Phase::Concluded);
    assert!(view.current.is_none());
    assert!(matches!(
        a.command(Command::Cancel(id)),
        Err(CommandError::WrongPhase { .. })
    ));
}

#[test]
fn listed_neighbours_need_no_answer_and_others_are_refused_under_listed() {
    let policy = |from| Policy {
        accept: AcceptPolicy {
            from,
            listed: vec![key(1).id()],
            ..AcceptPolicy::default()
        },
        ..Policy::default()
    };
    let mut b = Node::new(key(2), policy(Acceptance::Ask));
    b.handle(Input::Connected(key(1).id()));
    let (_, open) = open_from_a(request(1));
    assert!(accepted(&deliver(&mut b, open)));
    // Under "listed", a stranger (key 3) is refused.
    let mut b = Node::new(key(2), policy(Acceptance::Listed));
    let stranger = key(3);
    b.handle(Input::Connected(stranger.id()));
    let mut req = request(1);
    req.peer = key(2).id();
    let params = req.params(stranger.id());
    let sig_a = stranger.sign(&State::initial(&params).digest());
    b.handle(Input::Message {
        from: stranger.id(),
        message: Message::OpenChannel(Box::new(OpenChannel { params, sig_a })),
    });
    let why = refusal(&drain(&mut b)).unwrap();
    assert!(why.contains("listed neighbours only"), "{why}");
}

#[test]
fn strangers_cannot_pile_up_proposals() {
    let mut b = owner_b();
    let max = AcceptPolicy::default().max_offers;
    for n in 0..max {
        let mut req = request(0);
        req.nonce[..8].copy_from_slice(&(n as u64).to_be_bytes());
        let (_, open) = open_from_a(req);
        assert!(refusal(&deliver(&mut b, open)).is_none());
    }
    let (_, open) = open_from_a(request(0xee));
    let why = refusal(&deliver(&mut b, open)).unwrap();
    assert!(why.contains("too many proposals"), "{why}");
    assert_eq!(b.offers().count(), max);
}

#[test]
fn answers_to_proposals_nobody_made_are_refused_with_the_reason() {
    let mut b = owner_b();
    let unknown = ChannelId([9; 32]);
    assert_eq!(
        b.command(Command::Accept(unknown)),
        Err(CommandError::NoOffer(unknown))
    );
    assert_eq!(
        b.command(Command::Reject {
            channel: unknown,
            reason: String::new(),
        }),
        Err(CommandError::NoOffer(unknown))
    );
    assert_eq!(
        b.command(Command::Cancel(unknown)),
        Err(CommandError::UnknownChannel(unknown))
    );
    // B cannot withdraw a channel it did not propose: it is B's only after it accepted.
    let (id, open) = open_from_a(request(1));
    deliver(&mut b, open);
    b.command(Command::Accept(id)).unwrap();
    drain(&mut b);
    assert!(matches!(
        b.command(Command::Cancel(id)),
        Err(CommandError::WrongPhase { .. })
    ));
    assert!(
        drain(&mut b).is_empty(),
        "nothing sent for refused commands"
    );
}

/// A market node takes one channel per home and at most its most members: a second channel
/// from a member, and any channel once the market is full, are refused with the reason; a
/// channel that is not the market's is not counted.
#[test]
fn a_market_node_takes_one_channel_per_home_and_at_most_its_most_members() {
    let terms = gridchan_harness::market::terms();
    let mut policy = Policy::accepting_anyone();
    policy.accept.market = Some(Box::new(terms.clone()));
    policy.accept.max_market_members = 2;
    let market = key(2);
    let mut b = Node::new(market.duplicate(&[7; 32]), policy);
    // Homes 1, 3 and 4 each propose a market channel (home 1 twice).
    let open_from = |home: u8, nonce: u8| {
        let req = OpenRequest {
            tariff: Tariff::Market(Box::new(terms.clone())),
            tolerance: MeterTolerance {
                absolute_wh: 0,
                permille: 0,
            },
            ..request(nonce)
        };
        let params = req.params(key(home).id());
        let sig_a = key(home).sign(&State::initial(&params).digest());
        Message::OpenChannel(Box::new(OpenChannel { params, sig_a }))
    };
    let from = |b: &mut Node, home: u8, message: Message| {
        b.handle(Input::Connected(key(home).id()));
        b.handle(Input::Message {
            from: key(home).id(),
            message,
        });
        drain(b)
    };
    assert!(accepted(&from(&mut b, 1, open_from(1, 1))));
    // The same proposal again (a reconnect) is not a second channel.
    assert_eq!(refusal(&from(&mut b, 1, open_from(1, 1))), None);
    let twice = refusal(&from(&mut b, 1, open_from(1, 2))).expect("refused");
    assert!(
        twice.contains("already has a channel with the market"),
        "{twice}"
    );
    // A flat channel from home 1 is a neighbour channel: not the market's business.
    let (_, flat) = {
        let params = request(3).params(key(1).id());
        let sig_a = key(1).sign(&State::initial(&params).digest());
        (
            params.channel_id(),
            Message::OpenChannel(Box::new(OpenChannel { params, sig_a })),
        )
    };
    assert!(accepted(&from(&mut b, 1, flat)));
    assert!(accepted(&from(&mut b, 3, open_from(3, 4))));
    let full = refusal(&from(&mut b, 4, open_from(4, 5))).expect("refused");
    assert!(
        full.contains("the market has its most members (2)"),
        "{full}"
    );
    assert_eq!(b.market_channels().count(), 2);
    // Home 1's channel goes to the ledger in a dispute: it no longer trades, so it is no
    // longer a member's; home 1 may join again, and takes the place it left.
    let first = b
        .market_channels()
        .find(|(_, peer, ..)| *peer == key(1).id())
        .map(|(id, ..)| id)
        .unwrap();
    for event in [
        gridchan_channel::LedgerEvent::Funded,
        gridchan_channel::LedgerEvent::Registered {
            version: gridchan_channel::Version(0),
        },
    ] {
        b.handle(Input::Ledger {
            channel: first,
            event,
        });
    }
    drain(&mut b);
    assert_eq!(b.channel(&first).unwrap().phase, Phase::Disputed);
    assert!(accepted(&from(&mut b, 1, open_from(1, 6))));
    let full = refusal(&from(&mut b, 4, open_from(4, 7))).expect("refused");
    assert!(full.contains("most members"), "{full}");
}
