//! Random transaction sequences from several accounts against the ledger's rules: the token
//! supply is constant, failed transactions change nothing, and a channel concludes with
//! exactly the newest state registered or refuted before its deadline.

mod common;

use common::{params, signer, CHAIN};
use gridchan_chain::rules::LedgerState;
use gridchan_chain::{ChainEvent, Genesis, Tx, TxKind};
use gridchan_channel::{Amount, SignedStateParts, Signer, State, Version};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Deposit(usize),
    Register(usize, u64),
    Refute(usize, u64),
    Conclude(usize),
    ConcludeFinal(usize, u64),
    Withdraw(usize, u64),
    Transfer(usize, usize, u64),
    Reclaim(usize),
    Blocks(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0usize..3;
    prop_oneof![
        2 => who.clone().prop_map(Op::Deposit),
        2 => (who.clone(), 0u64..12).prop_map(|(w, v)| Op::Register(w, v)),
        3 => (who.clone(), 0u64..12).prop_map(|(w, v)| Op::Refute(w, v)),
        2 => who.clone().prop_map(Op::Conclude),
        1 => (who.clone(), 0u64..12).prop_map(|(w, v)| Op::ConcludeFinal(w, v)),
        2 => (who.clone(), 0u64..3_000_000).prop_map(|(w, a)| Op::Withdraw(w, a)),
        2 => (who.clone(), who.clone(), 0u64..20_000_000).prop_map(|(f, t, a)| Op::Transfer(f, t, a)),
        1 => who.clone().prop_map(Op::Reclaim),
        3 => (1u64..4).prop_map(Op::Blocks),
    ]
}

/// State `v`: A gains a version-dependent amount (so every version pays differently).
fn state(p: &gridchan_channel::ChannelParams, v: u64, is_final: bool) -> State {
    let mut s = State::initial(p);
    s.version = Version(v);
    let paid = (v * 137_000) % 2_000_000;
    s.balance_a = Amount(1_000_000 + paid);
    s.balance_b = Amount(2_000_000 - paid);
    s.is_final = is_final;
    s
}

fn signed(a: &Signer, b: &Signer, s: State) -> Box<SignedStateParts> {
    let d = s.digest();
    Box::new(SignedStateParts {
        sig_a: a.sign(&d),
        sig_b: b.sign(&d),
        state: s,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn supply_is_constant_and_the_newest_state_in_time_is_paid(ops in prop::collection::vec(op(), 1..60)) {
        let keys = [signer(1), signer(2), signer(3)];
        let p = params(&keys[0], &keys[1]);
        let id = p.channel_id();
        let genesis = Genesis {
            chain_id: CHAIN,
            min_challenge_window: 2,
            balances: keys.iter().map(|k| (k.id(), Amount(10_000_000))).collect(),
        };
        let mut ledger = LedgerState::new(genesis);
        let supply = ledger.total_supply();
        let mut height = 1u64;
        // The newest version accepted by a register or refute, and the one that was paid.
        let mut newest: Option<u64> = None;
        for op in ops {
            let (who, kind) = match op {
                Op::Blocks(n) => { height += n; continue; }
                Op::Deposit(w) => (w, TxKind::Deposit {
                    params: Box::new(p.clone()),
                    amount: if w == 0 { p.deposit_a } else { p.deposit_b },
                }),
                Op::Register(w, v) => (w, TxKind::Register { state: signed(&keys[0], &keys[1], state(&p, v, false)) }),
                Op::Refute(w, v) => (w, TxKind::Refute { state: signed(&keys[0], &keys[1], state(&p, v, false)) }),
                Op::Conclude(w) => (w, TxKind::Conclude { channel: id }),
                Op::ConcludeFinal(w, v) => (w, TxKind::ConcludeFinal { state: signed(&keys[0], &keys[1], state(&p, v, true)) }),
                Op::Withdraw(w, a) => (w, TxKind::Withdraw { channel: id, amount: Amount(a) }),
                Op::Transfer(f, t, a) => (f, TxKind::Transfer { to: keys[t].id(), amount: Amount(a) }),
                Op::Reclaim(w) => (w, TxKind::Reclaim { channel: id }),
            };
            let nonce = ledger.account(&keys[who].id()).nonce;
            let tx = Tx::sign(&CHAIN, &keys[who], nonce, kind.clone());
            let before = ledger.clone();
            match ledger.apply(&tx, height) {
                Ok(events) => {
                    for e in events {
                        match e {
                            ChainEvent::Registered { version, .. } | ChainEvent::Refuted { version, .. } => {
                                prop_assert!(newest.is_none_or(|n| version.0 > n), "versions only grow");
                                newest = Some(version.0);
                            }
                            ChainEvent::Concluded { version, payout, .. } => {
                                let expected = match &kind {
                                    TxKind::ConcludeFinal { state } => state.state.version.0,
                                    _ => newest.expect("a registration came first"),
                                };
                                prop_assert_eq!(version.0, expected);
                                let s = state(&p, expected, false);
                                prop_assert_eq!(payout, [s.balance_a, s.balance_b]);
                            }
                            _ => {}
                        }
                    }
                }
                Err(_) => prop_assert_eq!(&ledger, &before, "a refused transaction changes nothing"),
            }
            prop_assert_eq!(ledger.total_supply(), supply, "supply is constant");
        }
    }
}

proptest! {
    /// The proptest twin of the `ledger_tx` fuzz target: client bytes into the RPC decoder never
    /// panic, and a transaction that decodes goes through the rules without changing the supply.
    #[test]
    fn arbitrary_rpc_bytes_never_panic_and_never_change_the_supply(
        bytes in prop::collection::vec(any::<u8>(), 0..700),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
    ) {
        use gridchan_chain::rpc::{self, Request};
        let _ = rpc::decode::<rpc::Response>(&bytes);
        let _ = rpc::decode::<Request>(&bytes);
        // Corrupt a real transfer too: mostly it still decodes, and must then be handled.
        let a = Signer::new(&[1; 32], &[1; 32]).unwrap();
        let tx = gridchan_chain::Tx::sign(
            &[1; 32],
            &a,
            0,
            gridchan_chain::TxKind::Transfer { to: a.id(), amount: gridchan_channel::Amount(5) },
        );
        let mut frame = rpc::encode(&Request::Submit(Box::new(tx)));
        for (at, byte) in flips {
            let i = at % frame.len();
            frame[i] ^= byte;
        }
        if let Ok(Request::Submit(tx)) = rpc::decode::<Request>(&frame) {
            let genesis = gridchan_chain::Genesis {
                chain_id: [1; 32],
                min_challenge_window: 2,
                balances: vec![(tx.sender, gridchan_channel::Amount(1_000))],
            };
            let mut state = gridchan_chain::rules::LedgerState::new(genesis);
            let supply = state.total_supply();
            let _ = state.apply(&tx, 1);
            let _ = state.apply_presigned(&tx, 2);
            prop_assert_eq!(state.total_supply(), supply);
        }
    }
}

/// The values an adversary picks to make arithmetic wrap.
fn extreme() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(2),
        Just(1 << 32),
        Just((1 << 63) - 1),
        Just(1 << 63),
        Just(u64::MAX - 1),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

#[derive(Clone, Debug)]
enum Extreme {
    Deposit(usize),
    Register(u64),
    Refute(u64),
    Conclude,
    ConcludeFinal(u64),
    Withdraw(usize, u64),
    Transfer(usize, u64),
    Reclaim(usize),
    Height(u64),
}

fn extreme_op() -> impl Strategy<Value = Extreme> {
    prop_oneof![
        (0usize..2).prop_map(Extreme::Deposit),
        extreme().prop_map(Extreme::Register),
        extreme().prop_map(Extreme::Refute),
        Just(Extreme::Conclude),
        extreme().prop_map(Extreme::ConcludeFinal),
        (0usize..2, extreme()).prop_map(|(w, a)| Extreme::Withdraw(w, a)),
        (0usize..2, extreme()).prop_map(|(w, a)| Extreme::Transfer(w, a)),
        (0usize..2).prop_map(Extreme::Reclaim),
        extreme().prop_map(Extreme::Height),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Every rule fed the values that wrap (0, 1, 2^63, 2^64 - 1 ...) as heights, windows,
    /// deposits, balances, versions and amounts: no rule accepts a wrapped result. A deadline
    /// is never before the block that set it, a window above the protocol's maximum is refused,
    /// a conclusion comes only after its deadline, and the supply never changes.
    #[test]
    fn no_rule_accepts_a_wrapped_result(
        windows in (extreme(), extreme()),
        deposits in (extreme(), extreme()),
        balances in (extreme(), extreme()),
        ops in prop::collection::vec(extreme_op(), 1..40),
    ) {
        let keys = [signer(1), signer(2)];
        let mut p = params(&keys[0], &keys[1]);
        (p.challenge_window_blocks, p.funding_window_blocks) = windows;
        (p.deposit_a, p.deposit_b) = (Amount(deposits.0), Amount(deposits.1));
        let id = p.channel_id();
        let total = deposits.0.checked_add(deposits.1);
        let genesis = Genesis {
            chain_id: CHAIN,
            min_challenge_window: 0,
            balances: vec![(keys[0].id(), Amount(balances.0)), (keys[1].id(), Amount(balances.1))],
        };
        let mut ledger = LedgerState::new(genesis);
        let supply = ledger.total_supply();
        let mut height = 0u64;
        // A state of version `v` that holds the channel's money (A gets what is left of `v`).
        let state = |v: u64, is_final: bool| {
            let mut s = State::initial(&p);
            s.version = Version(v);
            let total = total.unwrap_or(0);
            s.balance_a = Amount(v % total.saturating_add(1));
            s.balance_b = Amount(total - s.balance_a.0);
            s.is_final = is_final;
            signed(&keys[0], &keys[1], s)
        };
        for op in ops {
            let (who, kind) = match op {
                Extreme::Height(h) => { height = h; continue; }
                Extreme::Deposit(w) => (w, TxKind::Deposit {
                    params: Box::new(p.clone()),
                    amount: if w == 0 { p.deposit_a } else { p.deposit_b },
                }),
                Extreme::Register(v) => (0, TxKind::Register { state: state(v, false) }),
                Extreme::Refute(v) => (1, TxKind::Refute { state: state(v, false) }),
                Extreme::Conclude => (0, TxKind::Conclude { channel: id }),
                Extreme::ConcludeFinal(v) => (1, TxKind::ConcludeFinal { state: state(v, true) }),
                Extreme::Withdraw(w, a) => (w, TxKind::Withdraw { channel: id, amount: Amount(a) }),
                Extreme::Transfer(w, a) => (w, TxKind::Transfer { to: keys[1 - w].id(), amount: Amount(a) }),
                Extreme::Reclaim(w) => (w, TxKind::Reclaim { channel: id }),
            };
            let nonce = ledger.account(&keys[who].id()).nonce;
            let tx = Tx::sign(&CHAIN, &keys[who], nonce, kind.clone());
            let before = ledger.clone();
            match ledger.apply(&tx, height) {
                Ok(events) => {
                    if let TxKind::Deposit { .. } = kind {
                        prop_assert!(p.challenge_window_blocks <= gridchan_channel::MAX_CHALLENGE_WINDOW_BLOCKS);
                        prop_assert!(p.funding_window_blocks <= gridchan_channel::MAX_FUNDING_WINDOW_BLOCKS);
                    }
                    for e in events {
                        match e {
                            ChainEvent::Registered { deadline, .. } => {
                                prop_assert_eq!(Some(deadline), height.checked_add(p.challenge_window_blocks), "the deadline is the height plus the window");
                            }
                            ChainEvent::Refuted { deadline, .. } => prop_assert!(deadline >= height),
                            // A cooperative close pays a newer final state at once; a
                            // conclusion of a registration waits for its window.
                            ChainEvent::Concluded { .. } if matches!(kind, TxKind::Conclude { .. }) => {
                                if let Some(gridchan_chain::rules::ChannelAccount { status: gridchan_chain::rules::ChannelStatus::Registered { deadline, .. }, .. }) = before.channels.get(&id) {
                                    prop_assert!(height > *deadline, "concluded only after the window");
                                }
                            }
                            _ => {}
                        }
                    }
                    if let Some(ch) = ledger.channels.get(&id) {
                        if let gridchan_chain::rules::ChannelStatus::Funding { deadline } = ch.status {
                            prop_assert!(deadline >= p.funding_window_blocks, "the funding deadline did not wrap");
                        }
                    }
                }
                Err(_) => prop_assert_eq!(&ledger, &before, "a refused transaction changes nothing"),
            }
            prop_assert_eq!(ledger.total_supply(), supply, "supply is constant");
        }
    }
}

#[test]
fn windows_above_the_protocols_maximum_are_refused_and_the_deadline_never_wraps() {
    use gridchan_chain::TxError;
    let (a, b) = (signer(1), signer(2));
    let genesis = Genesis {
        chain_id: CHAIN,
        min_challenge_window: 2,
        balances: vec![(a.id(), Amount(10_000_000)), (b.id(), Amount(10_000_000))],
    };
    let mut ledger = LedgerState::new(genesis);
    for (challenge, funding) in [
        (u64::MAX, 3),
        (gridchan_channel::MAX_CHALLENGE_WINDOW_BLOCKS + 1, 3),
        (5, u64::MAX),
        (5, gridchan_channel::MAX_FUNDING_WINDOW_BLOCKS + 1),
    ] {
        let mut p = params(&a, &b);
        p.challenge_window_blocks = challenge;
        p.funding_window_blocks = funding;
        let tx = Tx::sign(
            &CHAIN,
            &a,
            0,
            TxKind::Deposit {
                params: Box::new(p.clone()),
                amount: p.deposit_a,
            },
        );
        let err = ledger.apply(&tx, 10).unwrap_err();
        assert!(
            matches!(err, TxError::InvalidParams(ref m) if m.contains("maximum")),
            "{err}"
        );
    }
    // At the maximum, at a height near the end of 64 bits: refused as an overflow, not wrapped.
    let mut p = params(&a, &b);
    p.funding_window_blocks = gridchan_channel::MAX_FUNDING_WINDOW_BLOCKS;
    let tx = Tx::sign(
        &CHAIN,
        &a,
        0,
        TxKind::Deposit {
            params: Box::new(p.clone()),
            amount: p.deposit_a,
        },
    );
    assert_eq!(ledger.apply(&tx, u64::MAX - 5), Err(TxError::Overflow));
    // A registration whose deadline would pass 2^64 - 1 is refused too.
    let mut p = params(&a, &b);
    p.challenge_window_blocks = gridchan_channel::MAX_CHALLENGE_WINDOW_BLOCKS;
    for (k, amount, nonce) in [(&a, p.deposit_a, 0), (&b, p.deposit_b, 0)] {
        let tx = Tx::sign(
            &CHAIN,
            k,
            nonce,
            TxKind::Deposit {
                params: Box::new(p.clone()),
                amount,
            },
        );
        ledger.apply(&tx, 10).unwrap();
    }
    let s = State::initial(&p);
    let tx = Tx::sign(
        &CHAIN,
        &a,
        1,
        TxKind::Register {
            state: signed(&a, &b, s),
        },
    );
    assert_eq!(ledger.apply(&tx, u64::MAX - 1), Err(TxError::Overflow));
}

#[test]
fn an_account_at_the_last_nonce_can_send_nothing_rather_than_wrap_to_zero() {
    let a = signer(1);
    let genesis = Genesis {
        chain_id: CHAIN,
        min_challenge_window: 2,
        balances: vec![(a.id(), Amount(10))],
    };
    let mut ledger = LedgerState::new(genesis);
    ledger.accounts.get_mut(&a.id()).unwrap().nonce = u64::MAX;
    let tx = Tx::sign(
        &CHAIN,
        &a,
        u64::MAX,
        TxKind::Transfer {
            to: a.id(),
            amount: Amount(1),
        },
    );
    assert_eq!(ledger.apply(&tx, 1), Err(gridchan_chain::TxError::Overflow));
    assert_eq!(ledger.account(&a.id()).nonce, u64::MAX);
}
