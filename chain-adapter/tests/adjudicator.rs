//! Every rule of the adjudication contract, positive and negative (specs/adjudicator.md).

mod common;

use common::{Fixture, CHAIN};
use gridchan_chain::local::LocalError;
use gridchan_chain::{ChainEvent, ChannelStatus, Tx, TxError, TxKind};
use gridchan_channel::{Amount, Version};

fn status(f: &Fixture) -> ChannelStatus {
    f.ledger.channel(&f.params.channel_id()).unwrap().status
}

#[test]
fn funding_by_both_parties_opens_the_channel() {
    let mut f = Fixture::new();
    f.deposit(&f.a, 1_000_000).unwrap();
    f.block();
    assert!(matches!(status(&f), ChannelStatus::Funding { .. }));
    f.deposit(&f.b, 2_000_000).unwrap();
    f.block();
    assert_eq!(status(&f), ChannelStatus::Open);
    assert_eq!(f.balance(&f.a), 9_000_000);
    assert_eq!(f.balance(&f.b), 8_000_000);
}

#[test]
fn deposits_must_match_the_parameters_and_come_from_the_parties() {
    let mut f = Fixture::new();
    assert_eq!(
        f.deposit(&f.a, 999).err().map(|e| e.to_string()),
        Some("transaction refused: deposit must be 1.000000".into())
    );
    assert!(matches!(
        f.refused(
            &f.c,
            TxKind::Deposit {
                params: Box::new(f.params.clone()),
                amount: Amount(1_000_000)
            }
        ),
        TxError::NotAParty
    ));
    f.deposit(&f.a, 1_000_000).unwrap();
    assert_eq!(
        f.refused(
            &f.a,
            TxKind::Deposit {
                params: Box::new(f.params.clone()),
                amount: Amount(1_000_000)
            }
        ),
        TxError::AlreadyDeposited
    );
    f.block();
    // A challenge window under the ledger's minimum (2 blocks) is refused.
    let mut short = f.params.clone();
    short.challenge_window_blocks = 1;
    assert!(matches!(
        f.refused(
            &f.a,
            TxKind::Deposit {
                params: Box::new(short),
                amount: Amount(1_000_000)
            }
        ),
        TxError::InvalidParams(_)
    ));
}

#[test]
fn a_deposit_above_the_balance_is_refused() {
    let mut f = Fixture::new();
    f.params.deposit_a = Amount(50_000_000);
    assert!(matches!(
        f.deposit(&f.a, 50_000_000),
        Err(LocalError::Refused(TxError::InsufficientBalance { .. }))
    ));
    assert!(
        f.ledger.channel(&f.params.channel_id()).is_none(),
        "no trace"
    );
}

#[test]
fn a_lone_deposit_is_refunded_after_the_funding_window_only() {
    let mut f = Fixture::new();
    f.deposit(&f.a, 1_000_000).unwrap();
    f.block(); // height 1: deadline = 1 + 3 = 4
    let id = f.params.channel_id();
    assert!(matches!(
        f.refused(&f.a, TxKind::Reclaim { channel: id }),
        TxError::FundingOpen { deadline: 4 }
    ));
    f.blocks(3); // height 4: the next block (5) is past the deadline
    assert!(matches!(
        f.deposit(&f.b, 2_000_000),
        Err(LocalError::Refused(TxError::FundingClosed { deadline: 4 }))
    ));
    f.submit(&f.a, TxKind::Reclaim { channel: id }).unwrap();
    f.block();
    assert_eq!(status(&f), ChannelStatus::Expired);
    f.submit(
        &f.a,
        TxKind::Withdraw {
            channel: id,
            amount: Amount(1_000_000),
        },
    )
    .unwrap();
    f.block();
    assert_eq!(f.balance(&f.a), 10_000_000, "the deposit is back");
}

#[test]
fn refute_accepts_only_a_newer_state_signed_by_both_from_anyone() {
    let mut f = Fixture::new();
    f.fund();
    f.submit(
        &f.b,
        TxKind::Register {
            state: f.signed(3, 100),
        },
    )
    .unwrap();
    f.block();
    let id = f.params.channel_id();
    // Older or equal versions are refused.
    for v in [2, 3] {
        assert!(matches!(
            f.refused(
                &f.a,
                TxKind::Refute {
                    state: f.signed(v, 500)
                }
            ),
            TxError::NotNewer { .. }
        ));
    }
    // A state signed by someone other than the parties is refused.
    let forged = f.signed_by(f.state(9, 2_000_000, false), &f.a, &f.c);
    assert!(matches!(
        f.refused(
            &f.a,
            TxKind::Refute {
                state: Box::new(forged)
            }
        ),
        TxError::BadStateSignature(_)
    ));
    // A third party (a watchtower) refutes with a newer one.
    f.submit(
        &f.c,
        TxKind::Refute {
            state: f.signed(7, 700),
        },
    )
    .unwrap();
    f.block();
    match status(&f) {
        ChannelStatus::Registered { version, .. } => assert_eq!(version, Version(7)),
        other => panic!("{other:?}"),
    }
    let _ = id;
}

#[test]
fn conclude_before_the_window_ends_fails_and_after_it_pays_the_newest_once() {
    let mut f = Fixture::new();
    f.fund(); // height 1
    let id = f.params.channel_id();
    f.submit(
        &f.b,
        TxKind::Register {
            state: f.signed(3, 100),
        },
    )
    .unwrap();
    f.block(); // height 2: deadline 2 + 5 = 7
    f.submit(
        &f.a,
        TxKind::Refute {
            state: f.signed(4, 400_000),
        },
    )
    .unwrap();
    f.block(); // height 3; a refute does not extend the window
    f.blocks(3); // height 6
    assert_eq!(
        f.refused(&f.a, TxKind::Conclude { channel: id }),
        TxError::Window { deadline: 7 }
    );
    f.block(); // height 7: the last block of the window; a refute is still in time
    f.submit(&f.a, TxKind::Conclude { channel: id }).unwrap();
    f.block(); // height 8
    assert_eq!(
        status(&f),
        ChannelStatus::Concluded {
            version: Version(4)
        }
    );
    // Refute after the window: refused.
    assert!(matches!(
        f.refused(
            &f.a,
            TxKind::Refute {
                state: f.signed(9, 900)
            }
        ),
        TxError::WrongPhase(_)
    ));
    // Two concludes pay once.
    assert!(matches!(
        f.refused(&f.b, TxKind::Conclude { channel: id }),
        TxError::WrongPhase(_)
    ));
    // Register after conclusion fails.
    assert!(matches!(
        f.refused(
            &f.a,
            TxKind::Register {
                state: f.signed(10, 0)
            }
        ),
        TxError::WrongPhase(_)
    ));
    // The payout: A 1.4, B 1.6; withdraw each, but never more than the payout.
    for (who, pay) in [(&f.a, 1_400_000), (&f.b, 1_600_000)] {
        assert!(matches!(
            f.refused(
                who,
                TxKind::Withdraw {
                    channel: id,
                    amount: Amount(pay + 1)
                }
            ),
            TxError::InsufficientClaimable { .. }
        ));
        f.submit(
            who,
            TxKind::Withdraw {
                channel: id,
                amount: Amount(pay),
            },
        )
        .unwrap();
    }
    f.block();
    assert!(matches!(
        f.refused(
            &f.a,
            TxKind::Withdraw {
                channel: id,
                amount: Amount(1)
            }
        ),
        TxError::InsufficientClaimable { .. }
    ));
    assert_eq!(f.balance(&f.a), 9_000_000 + 1_400_000);
    assert_eq!(f.balance(&f.b), 8_000_000 + 1_600_000);
    assert_eq!(f.ledger.total_supply(), 30_000_000);
}

#[test]
fn a_refute_in_the_last_block_of_the_window_counts() {
    let mut f = Fixture::new();
    f.fund();
    f.submit(
        &f.b,
        TxKind::Register {
            state: f.signed(3, 100),
        },
    )
    .unwrap();
    f.block(); // height 2, deadline 7
    f.blocks(4); // height 6: the next block is 7, still in the window
    f.submit(
        &f.a,
        TxKind::Refute {
            state: f.signed(5, 500),
        },
    )
    .unwrap();
    f.block(); // height 7
    f.block(); // height 8: too late for any refute now
    assert!(matches!(
        f.refused(
            &f.a,
            TxKind::Refute {
                state: f.signed(6, 600)
            }
        ),
        TxError::Window { deadline: 7 }
    ));
}

#[test]
fn conclude_final_pays_at_once_and_only_final_states() {
    let mut f = Fixture::new();
    f.fund();
    let id = f.params.channel_id();
    assert_eq!(
        f.refused(
            &f.a,
            TxKind::ConcludeFinal {
                state: f.signed(5, 500)
            }
        ),
        TxError::FinalFlag
    );
    assert_eq!(
        f.refused(
            &f.a,
            TxKind::Register {
                state: f.signed_final(5, 500)
            }
        ),
        TxError::FinalFlag
    );
    f.submit(
        &f.a,
        TxKind::ConcludeFinal {
            state: f.signed_final(5, 500),
        },
    )
    .unwrap();
    f.block();
    assert_eq!(
        status(&f),
        ChannelStatus::Concluded {
            version: Version(5)
        }
    );
    assert!(matches!(
        f.refused(
            &f.b,
            TxKind::ConcludeFinal {
                state: f.signed_final(5, 500)
            }
        ),
        TxError::WrongPhase(_)
    ));
    let _ = id;
}

#[test]
fn conclude_final_overrides_an_older_registration() {
    let mut f = Fixture::new();
    f.fund();
    f.submit(
        &f.b,
        TxKind::Register {
            state: f.signed(3, 100),
        },
    )
    .unwrap();
    f.block();
    f.submit(
        &f.a,
        TxKind::ConcludeFinal {
            state: f.signed_final(6, 600),
        },
    )
    .unwrap();
    f.block();
    assert_eq!(
        status(&f),
        ChannelStatus::Concluded {
            version: Version(6)
        }
    );
}

#[test]
fn states_that_break_the_money_or_name_unknown_channels_are_refused() {
    let mut f = Fixture::new();
    f.fund();
    let mut rich = f.state(3, 0, false);
    rich.balance_a = Amount(5_000_000);
    let rich = f.signed_by(rich, &f.a, &f.b);
    assert_eq!(
        f.refused(
            &f.a,
            TxKind::Register {
                state: Box::new(rich)
            }
        ),
        TxError::MoneyNotConserved
    );
    let mut stranger = f.state(3, 0, false);
    stranger.channel_id.0[0] ^= 1;
    let stranger = f.signed_by(stranger, &f.a, &f.b);
    assert_eq!(
        f.refused(
            &f.a,
            TxKind::Register {
                state: Box::new(stranger)
            }
        ),
        TxError::UnknownChannel
    );
    assert_eq!(
        f.refused(
            &f.a,
            TxKind::Conclude {
                channel: gridchan_channel::ChannelId([9; 32])
            }
        ),
        TxError::UnknownChannel
    );
    // Register needs a funded channel.
    let mut g = Fixture::new();
    g.deposit(&g.a, 1_000_000).unwrap();
    g.block();
    assert!(matches!(
        g.refused(
            &g.a,
            TxKind::Register {
                state: g.signed(1, 0)
            }
        ),
        TxError::WrongPhase(_)
    ));
}

#[test]
fn a_replayed_transaction_fails() {
    let mut f = Fixture::new();
    let tx = Tx::sign(
        &CHAIN,
        &f.a,
        0,
        TxKind::Transfer {
            to: f.c.id(),
            amount: Amount(5),
        },
    );
    f.ledger.submit(tx.clone()).unwrap();
    assert!(matches!(
        f.ledger.submit(tx.clone()),
        Err(LocalError::Refused(TxError::BadNonce {
            expected: 1,
            got: 0
        }))
    ));
    f.block();
    assert!(matches!(
        f.ledger.submit(tx),
        Err(LocalError::Refused(TxError::BadNonce {
            expected: 1,
            got: 0
        }))
    ));
    assert_eq!(f.balance(&f.c), 10_000_005);
}

#[test]
fn a_transaction_signed_for_another_ledger_or_by_another_key_fails() {
    let f = Fixture::new();
    let other_chain = Tx::sign(
        &[0; 32],
        &f.a,
        0,
        TxKind::Transfer {
            to: f.c.id(),
            amount: Amount(5),
        },
    );
    assert!(matches!(
        f.ledger.submit(other_chain),
        Err(LocalError::Refused(TxError::BadTxSignature))
    ));
    let mut stolen = Tx::sign(
        &CHAIN,
        &f.c,
        0,
        TxKind::Transfer {
            to: f.c.id(),
            amount: Amount(5),
        },
    );
    stolen.sender = f.a.id();
    assert!(matches!(
        f.ledger.submit(stolen),
        Err(LocalError::Refused(TxError::BadTxSignature))
    ));
}

#[test]
fn transfers_above_the_balance_fail() {
    let f = Fixture::new();
    assert!(matches!(
        f.refused(
            &f.a,
            TxKind::Transfer {
                to: f.b.id(),
                amount: Amount(10_000_001)
            }
        ),
        TxError::InsufficientBalance { .. }
    ));
}

#[test]
fn blocks_carry_the_events_in_order() {
    let mut f = Fixture::new();
    f.fund();
    let blocks = f.ledger.blocks(1, 10).unwrap();
    assert_eq!(blocks.len(), 1);
    let events: Vec<_> = blocks[0]
        .outcomes
        .iter()
        .flat_map(|o| o.result.clone().unwrap())
        .collect();
    assert!(matches!(events[0], ChainEvent::Deposited { .. }));
    assert!(matches!(events[1], ChainEvent::Deposited { .. }));
    assert!(matches!(events[2], ChainEvent::Funded { .. }));
}
