//! Top-ups and withdrawals while a channel stays open, on the local ledger
//! (`specs/adjudicator.md`, "Top-up", "Withdraw while open", "Payout"): each rule positive and
//! negative, and random sequences of trades, top-ups, withdrawals and registrations of any
//! state signed so far.

mod common;

use common::{params, signer, Fixture, CHAIN};
use gridchan_chain::rules::LedgerState;
use gridchan_chain::{ChainEvent, ChannelStatus, Genesis, Tx, TxError, TxKind};
use gridchan_channel::{Amount, Party, SignedStateParts, Signer, State, Version};
use proptest::prelude::*;

fn signed(a: &Signer, b: &Signer, s: State) -> Box<SignedStateParts> {
    let d = s.digest();
    Box::new(SignedStateParts {
        sig_a: a.sign(&d),
        sig_b: b.sign(&d),
        state: s,
    })
}

fn account(f: &Fixture) -> gridchan_chain::ChannelAccount {
    f.ledger.channel(&f.params.channel_id()).unwrap()
}

fn top_up(f: &Fixture, who: &Signer, amount: u64) -> Result<(), TxError> {
    let channel = f.params.channel_id();
    match f.submit(
        who,
        TxKind::TopUp {
            channel,
            amount: Amount(amount),
        },
    ) {
        Ok(_) => Ok(()),
        Err(gridchan_chain::local::LocalError::Refused(e)) => Err(e),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_top_up_is_held_for_its_party_whichever_state_is_registered() {
    let mut f = Fixture::new();
    f.fund();
    top_up(&f, &f.a, 500_000).unwrap();
    f.block();
    assert_eq!(f.balance(&f.a), 10_000_000 - 1_000_000 - 500_000);
    assert_eq!(account(&f).funds.topped_up, [Amount(500_000), Amount(0)]);
    // A state from before the top-up: A still gets its top-up at the payout.
    f.submit(
        &f.b,
        TxKind::Register {
            state: f.signed(3, 100_000),
        },
    )
    .unwrap();
    f.blocks(7);
    f.submit(
        &f.a,
        TxKind::Conclude {
            channel: f.params.channel_id(),
        },
    )
    .unwrap();
    f.block();
    assert_eq!(
        account(&f).claimable,
        [Amount(1_100_000 + 500_000), Amount(1_900_000)]
    );
    assert_eq!(f.ledger.total_supply(), 30_000_000);
}

#[test]
fn a_state_that_counts_the_top_up_pays_it_once() {
    let mut f = Fixture::new();
    f.fund();
    top_up(&f, &f.b, 400_000).unwrap();
    f.block();
    let s = f
        .state(2, 0, false)
        .with_funds(Version(3), Party::B, Amount(400_000), Amount(0))
        .unwrap();
    let fin = s.finalized(Version(4));
    f.submit(
        &f.a,
        TxKind::ConcludeFinal {
            state: signed(&f.a, &f.b, fin),
        },
    )
    .unwrap();
    f.block();
    assert_eq!(
        account(&f).claimable,
        [Amount(1_000_000), Amount(2_400_000)]
    );
    assert_eq!(f.ledger.total_supply(), 30_000_000);
}

#[test]
fn top_ups_are_refused_from_strangers_of_nothing_beyond_the_balance_and_outside_open() {
    let mut f = Fixture::new();
    let channel = f.params.channel_id();
    assert_eq!(top_up(&f, &f.a, 1).unwrap_err(), TxError::UnknownChannel);
    f.deposit(&f.a, 1_000_000).unwrap();
    f.block();
    assert!(matches!(top_up(&f, &f.a, 1).unwrap_err(), TxError::WrongPhase(p) if p == "funding"));
    f.deposit(&f.b, 2_000_000).unwrap();
    f.block();
    assert_eq!(top_up(&f, &f.c, 1).unwrap_err(), TxError::NotAParty);
    assert!(matches!(
        top_up(&f, &f.a, 0).unwrap_err(),
        TxError::WrongDepositAmount { .. }
    ));
    assert!(matches!(
        top_up(&f, &f.a, 9_000_001).unwrap_err(),
        TxError::InsufficientBalance { .. }
    ));
    // What the channel holds must stay a 64-bit amount in every state.
    assert_eq!(
        top_up(&f, &f.a, u64::MAX - 1).unwrap_err(),
        TxError::Overflow
    );
    // A state claiming a top-up the ledger does not hold is refused everywhere.
    let ahead = f
        .state(1, 0, false)
        .with_funds(Version(1), Party::A, Amount(1), Amount(0))
        .unwrap();
    assert_eq!(
        f.refused(
            &f.a,
            TxKind::Register {
                state: signed(&f.a, &f.b, ahead)
            }
        ),
        TxError::TopUpNotMade
    );
    f.submit(
        &f.a,
        TxKind::Register {
            state: f.signed(1, 0),
        },
    )
    .unwrap();
    f.block();
    assert!(
        matches!(top_up(&f, &f.a, 1).unwrap_err(), TxError::WrongPhase(p) if p == "registered")
    );
    let _ = channel;
}

/// A: 1.0 deposit, trades to 1.3, takes 0.3 out while open (state v5).
fn withdrawal(f: &Fixture) -> (Box<SignedStateParts>, Box<SignedStateParts>) {
    let before = f.state(4, 300_000, false);
    let after = before
        .with_funds(Version(5), Party::A, Amount(0), Amount(300_000))
        .unwrap();
    (signed(&f.a, &f.b, before), signed(&f.a, &f.b, after))
}

#[test]
fn a_withdrawal_is_paid_once_and_states_from_before_it_are_refused() {
    let mut f = Fixture::new();
    f.fund();
    let (before, after) = withdrawal(&f);
    let channel = f.params.channel_id();
    // Anyone may submit it; the money goes to the party that withdraws.
    f.submit(
        &f.c,
        TxKind::WithdrawOpen {
            state: after.clone(),
        },
    )
    .unwrap();
    f.block();
    assert_eq!(f.balance(&f.a), 9_000_000 + 300_000);
    assert_eq!(account(&f).funds.withdrawn, [Amount(300_000), Amount(0)]);
    assert_eq!(account(&f).status, ChannelStatus::Open);
    // Never twice: the same state again, or a final one with the same total.
    assert_eq!(
        f.refused(
            &f.a,
            TxKind::WithdrawOpen {
                state: after.clone()
            }
        ),
        TxError::NothingToWithdraw
    );
    // A state from before the paid withdrawal cannot be registered or refuted with.
    assert_eq!(
        f.refused(
            &f.b,
            TxKind::Register {
                state: before.clone()
            }
        ),
        TxError::WithdrawalNotInState
    );
    f.submit(
        &f.b,
        TxKind::Register {
            state: after.clone(),
        },
    )
    .unwrap();
    f.block();
    assert_eq!(
        f.refused(
            &f.b,
            TxKind::WithdrawOpen {
                state: after.clone()
            }
        ),
        TxError::WrongPhase("registered".into())
    );
    f.blocks(6);
    f.submit(&f.a, TxKind::Conclude { channel }).unwrap();
    f.block();
    // A's balance in v5 is 1.0; its 0.3 was paid while open, not again.
    assert_eq!(
        account(&f).claimable,
        [Amount(1_000_000), Amount(1_700_000)]
    );
    assert_eq!(f.ledger.total_supply(), 30_000_000);
}

#[test]
fn a_signed_withdrawal_never_sent_is_paid_by_the_conclusion_and_an_older_state_is_refuted() {
    let mut f = Fixture::new();
    f.fund();
    let (before, after) = withdrawal(&f);
    let channel = f.params.channel_id();
    // B registers the state from before the withdrawal (the ledger never paid it: allowed).
    f.submit(&f.b, TxKind::Register { state: before }).unwrap();
    f.block();
    assert_eq!(
        f.refused(
            &f.a,
            TxKind::WithdrawOpen {
                state: after.clone()
            }
        ),
        TxError::WrongPhase("registered".into())
    );
    f.submit(&f.a, TxKind::Refute { state: after }).unwrap();
    f.blocks(7);
    f.submit(&f.a, TxKind::Conclude { channel }).unwrap();
    f.block();
    // v5 pays A its balance (1.0) and the withdrawal it made (0.3): 1.3, as v4 would have.
    assert_eq!(
        account(&f).claimable,
        [Amount(1_300_000), Amount(1_700_000)]
    );
    assert_eq!(f.ledger.total_supply(), 30_000_000);
}

#[test]
fn a_withdrawal_state_must_hold_the_money_and_not_be_final() {
    let mut f = Fixture::new();
    f.fund();
    let (_, after) = withdrawal(&f);
    let mut unbalanced = after.state.clone();
    unbalanced.balance_b = Amount(unbalanced.balance_b.0 + 1);
    assert_eq!(
        f.refused(
            &f.a,
            TxKind::WithdrawOpen {
                state: signed(&f.a, &f.b, unbalanced)
            }
        ),
        TxError::MoneyNotConserved
    );
    let fin = after.state.finalized(Version(6));
    assert_eq!(
        f.refused(
            &f.a,
            TxKind::WithdrawOpen {
                state: signed(&f.a, &f.b, fin.clone())
            }
        ),
        TxError::FinalFlag
    );
    let forged = signed(&f.a, &f.c, after.state.clone());
    assert!(matches!(
        f.refused(&f.a, TxKind::WithdrawOpen { state: forged }),
        TxError::BadStateSignature(_)
    ));
    // The final state pays the withdrawal the ledger never paid, once.
    f.submit(
        &f.b,
        TxKind::ConcludeFinal {
            state: signed(&f.a, &f.b, fin),
        },
    )
    .unwrap();
    f.block();
    assert_eq!(
        account(&f).claimable,
        [Amount(1_300_000), Amount(1_700_000)]
    );
}

#[derive(Clone, Debug)]
enum Op {
    /// Party 0/1 pays the other this much in a new state.
    Trade(usize, u64),
    /// Party tops up on the ledger.
    TopUp(usize, u64),
    /// Party's confirmed top-ups go into a new state.
    Credit(usize),
    /// Party takes this much out in a new state.
    Withdraw(usize, u64),
    /// Submit the newest state's withdrawals to the ledger.
    PayWithdrawals(usize),
    /// Register / refute with the state this far back from the newest (a cheater's pick).
    Register(usize, usize),
    Refute(usize, usize),
    Conclude(usize),
    ConcludeFinal(usize),
    Blocks(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0usize..2;
    prop_oneof![
        4 => (who.clone(), 0u64..800_000).prop_map(|(w, a)| Op::Trade(w, a)),
        2 => (who.clone(), 0u64..3_000_000).prop_map(|(w, a)| Op::TopUp(w, a)),
        2 => who.clone().prop_map(Op::Credit),
        3 => (who.clone(), 0u64..1_500_000).prop_map(|(w, a)| Op::Withdraw(w, a)),
        2 => who.clone().prop_map(Op::PayWithdrawals),
        1 => (who.clone(), 0usize..6).prop_map(|(w, b)| Op::Register(w, b)),
        2 => (who.clone(), 0usize..3).prop_map(|(w, b)| Op::Refute(w, b)),
        1 => who.clone().prop_map(Op::Conclude),
        1 => who.clone().prop_map(Op::ConcludeFinal),
        2 => (1u64..4).prop_map(Op::Blocks),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Money is conserved on the ledger and in every state, whatever the order of trades,
    /// top-ups, withdrawals and registrations of old states; a refused transaction changes
    /// nothing; and at the end each party has gained exactly what the state that decided the
    /// payout says it earned by trading: a withdrawal is never paid twice, a top-up never lost.
    #[test]
    fn money_is_conserved_and_each_party_gets_what_the_deciding_state_says(
        ops in prop::collection::vec(op(), 1..50),
    ) {
        let keys = [signer(1), signer(2)];
        let p = params(&keys[0], &keys[1]);
        let id = p.channel_id();
        let start = 10_000_000u64;
        let genesis = Genesis {
            chain_id: CHAIN,
            min_challenge_window: 2,
            balances: keys.iter().map(|k| (k.id(), Amount(start))).collect(),
        };
        let mut ledger = LedgerState::new(genesis);
        let supply = ledger.total_supply();
        let mut height = 1u64;
        for (k, amount) in [(0, p.deposit_a), (1, p.deposit_b)] {
            let tx = Tx::sign(&CHAIN, &keys[k], 0, TxKind::Deposit { params: Box::new(p.clone()), amount });
            ledger.apply(&tx, height).unwrap();
        }
        // Every state signed so far, in order.
        let mut states = vec![State::initial(&p)];
        let mut decided: Option<State> = None;
        let mut paid_open = [0u64; 2];
        let mut topped_on_ledger = [0u64; 2];
        for op in ops {
            let cur = states.last().unwrap().clone();
            let next_version = Version(cur.version.0 + 1);
            let party = |w: usize| if w == 0 { Party::A } else { Party::B };
            let tx = match op {
                Op::Blocks(n) => { height += n; None }
                Op::Trade(w, amount) => {
                    let mut s = cur.clone();
                    s.version = next_version;
                    let (payer, payee) = if w == 0 { (&mut s.balance_a.0, 0) } else { (&mut s.balance_b.0, 1) };
                    let amount = amount.min(*payer);
                    *payer -= amount;
                    if payee == 0 { s.balance_b.0 += amount } else { s.balance_a.0 += amount }
                    s.last_interval.0 += 1;
                    states.push(s);
                    None
                }
                Op::Credit(w) => {
                    let ch = ledger.channels[&id].clone();
                    let i = party(w).index();
                    if ch.status == ChannelStatus::Open && ch.funds.topped_up[i] > cur.funds.topped_up[i] {
                        states.push(cur.with_funds(next_version, party(w), ch.funds.topped_up[i], cur.funds.withdrawn[i]).unwrap());
                    }
                    None
                }
                Op::Withdraw(w, amount) => {
                    let i = party(w).index();
                    let amount = amount.min(cur.balance(party(w)).0);
                    if amount > 0 {
                        let s = cur.with_funds(next_version, party(w), cur.funds.topped_up[i], Amount(cur.funds.withdrawn[i].0 + amount)).unwrap();
                        states.push(s);
                    }
                    None
                }
                Op::TopUp(w, amount) => Some((w, TxKind::TopUp { channel: id, amount: Amount(amount) })),
                Op::PayWithdrawals(w) => Some((w, TxKind::WithdrawOpen { state: signed(&keys[0], &keys[1], cur.clone()) })),
                Op::Register(w, back) => {
                    let s = states[states.len().saturating_sub(1 + back)].clone();
                    Some((w, TxKind::Register { state: signed(&keys[0], &keys[1], s) }))
                }
                Op::Refute(w, back) => {
                    let s = states[states.len().saturating_sub(1 + back)].clone();
                    Some((w, TxKind::Refute { state: signed(&keys[0], &keys[1], s) }))
                }
                Op::Conclude(w) => Some((w, TxKind::Conclude { channel: id })),
                Op::ConcludeFinal(w) => Some((w, TxKind::ConcludeFinal { state: signed(&keys[0], &keys[1], cur.finalized(next_version)) })),
            };
            // Every state holds the channel's money.
            let s = states.last().unwrap();
            prop_assert_eq!(Some(Amount(s.balance_a.0 + s.balance_b.0)), s.held(&p));
            let Some((who, kind)) = tx else { continue };
            let nonce = ledger.account(&keys[who].id()).nonce;
            let tx = Tx::sign(&CHAIN, &keys[who], nonce, kind.clone());
            let before = ledger.clone();
            match ledger.apply(&tx, height) {
                Ok(events) => {
                    for e in events {
                        match e {
                            ChainEvent::ToppedUp { party, amount, .. } => topped_on_ledger[party.index()] += amount.0,
                            ChainEvent::WithdrawnOpen { party, amount, .. } => paid_open[party.index()] += amount.0,
                            ChainEvent::Concluded { version, .. } => {
                                let state = match (&kind, &before.channels[&id].status) {
                                    (TxKind::ConcludeFinal { state }, _) => state.state.clone(),
                                    (_, ChannelStatus::Registered { state, .. }) => state.clone(),
                                    other => panic!("concluded from {other:?}"),
                                };
                                prop_assert_eq!(version, state.version);
                                decided = Some(state);
                            }
                            _ => {}
                        }
                    }
                }
                Err(_) => prop_assert_eq!(&ledger, &before, "a refused transaction changes nothing"),
            }
            prop_assert_eq!(ledger.total_supply(), supply, "supply is constant");
        }
        if let Some(state) = decided {
            let ch = &ledger.channels[&id];
            for party in [Party::A, Party::B] {
                let i = party.index();
                let deposit = if i == 0 { p.deposit_a.0 } else { p.deposit_b.0 };
                // Out of the channel (withdrawals paid while open, the payout) less into it
                // (the deposit, every top-up made) is what the state says was earned.
                let received = i128::from(paid_open[i]) + i128::from(ch.claimable[i].0);
                let contributed = i128::from(deposit) + i128::from(topped_on_ledger[i]);
                let earned = i128::from(state.balance(party).0) + i128::from(state.funds.withdrawn[i].0)
                    - i128::from(deposit) - i128::from(state.funds.topped_up[i].0);
                prop_assert_eq!(received - contributed, earned, "party {:?}", party);
                prop_assert!(paid_open[i] <= state.funds.withdrawn[i].0, "a withdrawal paid twice");
            }
        }
    }
}
