//! Batches on the local ledger (`specs/adjudicator.md`, "Batch"): several of one account's
//! operations in one transaction, each on its own.

mod common;

use common::{Fixture, CHAIN};
use gridchan_chain::{ChainEvent, ChannelStatus, Tx, TxError, TxKind, MAX_BATCH_ITEMS};
use gridchan_channel::{Amount, ChannelParams};

fn channel(f: &Fixture, nonce: u8) -> ChannelParams {
    let mut p = f.params.clone();
    p.nonce = [nonce; 32];
    p
}

#[test]
fn a_batch_funds_and_closes_many_channels_and_a_refused_operation_changes_nothing() {
    let mut f = Fixture::new();
    let channels: Vec<ChannelParams> = (10..15).map(|n| channel(&f, n)).collect();
    let deposits = |who_a: bool| TxKind::Batch {
        items: channels
            .iter()
            .map(|p| TxKind::Deposit {
                params: Box::new(p.clone()),
                amount: if who_a { p.deposit_a } else { p.deposit_b },
            })
            .collect(),
    };
    f.submit(&f.a, deposits(true)).unwrap();
    f.submit(&f.b, deposits(false)).unwrap();
    f.block();
    for p in &channels {
        assert_eq!(
            f.ledger.channel(&p.channel_id()).unwrap().status,
            ChannelStatus::Open
        );
    }
    // Five final states in one transaction, one of them not final: four close, one is
    // reported in its place.
    let mut items: Vec<TxKind> = channels
        .iter()
        .map(|p| {
            let mut s = gridchan_channel::State::initial(p).finalized(gridchan_channel::Version(3));
            s.balance_a = Amount(s.balance_a.0 + 100);
            s.balance_b = Amount(s.balance_b.0 - 100);
            TxKind::ConcludeFinal {
                state: Box::new(f.signed_by(s, &f.a, &f.b)),
            }
        })
        .collect();
    if let TxKind::ConcludeFinal { state } = &mut items[2] {
        state.state.is_final = false;
        let d = state.state.digest();
        state.sig_a = f.a.sign(&d);
        state.sig_b = f.b.sign(&d);
    }
    let hash = f.submit(&f.a, TxKind::Batch { items }).unwrap();
    f.block();
    let receipt = f.ledger.receipt(&hash).unwrap().expect("included");
    let events = receipt.outcome.result.unwrap();
    assert!(events.contains(&ChainEvent::BatchItemFailed {
        index: 2,
        error: TxError::FinalFlag
    }));
    let concluded = events
        .iter()
        .filter(|e| matches!(e, ChainEvent::Concluded { .. }))
        .count();
    assert_eq!(concluded, 4);
    assert_eq!(
        f.ledger.channel(&channels[2].channel_id()).unwrap().status,
        ChannelStatus::Open
    );
    // Payouts withdrawn in one more.
    let withdrawals = TxKind::Batch {
        items: [0usize, 1, 3, 4]
            .iter()
            .map(|i| TxKind::Withdraw {
                channel: channels[*i].channel_id(),
                amount: Amount(1_000_100),
            })
            .collect(),
    };
    let before = f.balance(&f.a);
    f.submit(&f.a, withdrawals).unwrap();
    f.block();
    assert_eq!(f.balance(&f.a), before + 4 * 1_000_100);
    assert_eq!(f.ledger.total_supply(), 30_000_000);
}

#[test]
fn a_batch_must_hold_one_to_a_thousand_operations_and_no_batch() {
    let f = Fixture::new();
    let transfer = TxKind::Transfer {
        to: f.b.id(),
        amount: Amount(1),
    };
    for (items, says) in [
        (vec![], "0 operations"),
        (
            vec![transfer.clone(); MAX_BATCH_ITEMS + 1],
            "1001 operations",
        ),
        (
            vec![
                transfer.clone(),
                TxKind::Batch {
                    items: vec![transfer.clone()],
                },
            ],
            "a batch inside a batch",
        ),
    ] {
        match f.refused(&f.a, TxKind::Batch { items }) {
            TxError::InvalidBatch(why) => assert!(why.contains(says), "{why}"),
            other => panic!("{other:?}"),
        }
    }
    // A thousand is fine (and a signed batch replays nowhere else: its nonce is one).
    let nonce = f.ledger.account(&f.a.id()).nonce;
    let tx = Tx::sign(
        &CHAIN,
        &f.a,
        nonce,
        TxKind::Batch {
            items: vec![transfer; MAX_BATCH_ITEMS],
        },
    );
    f.ledger.submit(tx).unwrap();
}
