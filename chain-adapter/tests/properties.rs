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
