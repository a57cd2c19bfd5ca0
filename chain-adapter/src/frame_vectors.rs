//! Test vectors for the ledger's RPC (specs/ledger.md): a frame of every request and response,
//! every transaction kind inside a `Submit`, the section `ledger` of
//! `specs/vectors/frames.json`. Fixed keys, deterministic signatures.

use serde_json::json;

use gridchan_channel::frame_vectors::FrameVector;
use gridchan_channel::{
    Amount, IntervalIndex, Party, SignedStateParts, Signer, State, Tariff, Version, WattHours,
};

use crate::block::{BlockEvents, Receipt, TxOutcome};
use crate::rpc::{self, Request, Response};
use crate::rules::{Account, ChainEvent, ChannelAccount, ChannelStatus, TxError};
use crate::tx::{Tx, TxKind};

/// The chain id of the vectors.
pub const CHAIN_ID: [u8; 32] = [0xc4; 32];

fn signer(byte: u8) -> Signer {
    gridchan_channel::frame_vectors::key(byte)
}

use gridchan_channel::frame_vectors::rpc_frame as frame;

/// The published frames of the ledger's RPC, computed by this implementation. `message_type`
/// is the request's or response's variant number.
pub fn compute() -> Vec<FrameVector> {
    let (a, b) = (signer(1), signer(2));
    let params = gridchan_channel::vectors::params(
        &a,
        &b,
        Tariff::Flat(gridchan_channel::PricePerKwh(180_000)),
        (5_000_000, 2_000_000),
    );
    let id = params.channel_id();
    let v0 = State::initial(&params);
    let (v1, _) = v0
        .settle(
            &params,
            Version(1),
            Party::A,
            IntervalIndex(1_929_700),
            WattHours(500),
        )
        .expect("a valid trade");
    let signed = |s: &State| {
        Box::new(SignedStateParts {
            state: s.clone(),
            sig_a: a.sign(&s.digest()),
            sig_b: b.sign(&s.digest()),
        })
    };
    let kinds = [
        TxKind::Transfer {
            to: b.id(),
            amount: Amount(1_500_000),
        },
        TxKind::Deposit {
            params: Box::new(params.clone()),
            amount: Amount(5_000_000),
        },
        TxKind::Reclaim { channel: id },
        TxKind::Register { state: signed(&v0) },
        TxKind::Refute { state: signed(&v1) },
        TxKind::Conclude { channel: id },
        TxKind::ConcludeFinal {
            state: signed(&v1.finalized(Version(2))),
        },
        TxKind::Withdraw {
            channel: id,
            amount: Amount(5_090_000),
        },
        TxKind::TopUp {
            channel: id,
            amount: Amount(1_000_000),
        },
        TxKind::WithdrawOpen {
            state: signed(
                &v1.with_funds(Version(2), Party::A, Amount(0), Amount(2_000_000))
                    .expect("a valid withdrawal"),
            ),
        },
        TxKind::Batch {
            items: vec![
                TxKind::Conclude { channel: id },
                TxKind::Withdraw {
                    channel: id,
                    amount: Amount(1),
                },
            ],
        },
    ];
    let mut out = vec![
        frame(
            "request_chain_id",
            rpc::encode(&Request::ChainId),
            json!({}),
        ),
        frame("request_height", rpc::encode(&Request::Height), json!({})),
        frame(
            "request_account",
            rpc::encode(&Request::Account(a.id())),
            json!({ "node": hex::encode(a.id().to_bytes()) }),
        ),
        frame(
            "request_channel",
            rpc::encode(&Request::Channel(id)),
            json!({ "channel": hex::encode(id.0) }),
        ),
    ];
    let mut last_tx = None;
    for (nonce, kind) in kinds.into_iter().enumerate() {
        let tx = Tx::sign(&CHAIN_ID, &a, nonce as u64, kind);
        let name = format!("request_submit_{}", tx.kind.name().replace('-', "_"));
        out.push(frame(
            &name,
            rpc::encode(&Request::Submit(Box::new(tx.clone()))),
            json!({
                "chain_id": hex::encode(CHAIN_ID),
                "sender": hex::encode(tx.sender.to_bytes()),
                "nonce": tx.nonce,
                "kind": tx.kind.name(),
                "tx_hash": hex::encode(tx.hash(&CHAIN_ID).0),
                "sig": hex::encode(tx.sig.0),
            }),
        ));
        last_tx = Some(tx);
    }
    let hash = last_tx.expect("transactions").hash(&CHAIN_ID);
    out.extend([
        frame(
            "request_receipt",
            rpc::encode(&Request::Receipt(hash)),
            json!({ "tx_hash": hex::encode(hash.0) }),
        ),
        frame(
            "request_blocks",
            rpc::encode(&Request::Blocks { from: 300, max: 64 }),
            json!({ "from": 300, "max": 64 }),
        ),
        frame(
            "request_wait_above",
            rpc::encode(&Request::WaitAbove {
                height: 70_000,
                timeout_ms: 30_000,
            }),
            json!({ "height": 70_000, "timeout_ms": 30_000 }),
        ),
    ]);
    let outcome = TxOutcome {
        hash,
        result: Ok(vec![
            ChainEvent::Deposited {
                channel: id,
                party: Party::B,
                amount: Amount(2_000_000),
            },
            ChainEvent::Funded { channel: id },
        ]),
    };
    let failed = TxOutcome {
        hash,
        result: Err(TxError::Window { deadline: 350 }),
    };
    let account = ChannelAccount {
        params: params.clone(),
        deposited: [Amount(5_000_000), Amount(2_000_000)],
        status: ChannelStatus::Registered {
            version: Version(1),
            deadline: 360,
            state: v1.clone(),
        },
        claimable: [Amount(0); 2],
        funds: gridchan_channel::Funds::default(),
    };
    out.extend([
        frame(
            "response_chain_id",
            rpc::encode(&Response::ChainId(CHAIN_ID)),
            json!({ "chain_id": hex::encode(CHAIN_ID) }),
        ),
        frame(
            "response_height",
            rpc::encode(&Response::Height(300)),
            json!({ "height": 300 }),
        ),
        frame(
            "response_account",
            rpc::encode(&Response::Account(Account {
                balance: Amount(95_000_000),
                nonce: 8,
            })),
            json!({ "balance": 95_000_000, "nonce": 8 }),
        ),
        frame(
            "response_channel_registered",
            rpc::encode(&Response::Channel(Some(Box::new(account)))),
            json!({ "status": "Registered", "version": 1, "deadline": 360, "deposited": [5_000_000, 2_000_000], "claimable": [0, 0] }),
        ),
        frame(
            "response_channel_none",
            rpc::encode(&Response::Channel(None)),
            json!({}),
        ),
        frame(
            "response_submitted",
            rpc::encode(&Response::Submitted(hash)),
            json!({ "tx_hash": hex::encode(hash.0) }),
        ),
        frame(
            "response_refused",
            rpc::encode(&Response::Refused(TxError::NotNewer {
                registered: Version(4),
                got: Version(3),
            })),
            json!({ "error": "NotNewer", "registered": 4, "got": 3 }),
        ),
        frame(
            "response_receipt",
            rpc::encode(&Response::Receipt(Some(Box::new(Receipt {
                height: 301,
                outcome: outcome.clone(),
            })))),
            json!({ "height": 301, "events": ["Deposited B 2000000", "Funded"] }),
        ),
        frame(
            "response_blocks",
            rpc::encode(&Response::Blocks(vec![BlockEvents {
                height: 301,
                hash: [0xab; 32],
                timestamp_ms: 1_765_000_000_000,
                outcomes: vec![outcome, failed],
            }])),
            json!({ "height": 301, "hash": hex::encode([0xab; 32]), "timestamp_ms": 1_765_000_000_000u64, "outcomes": ["ok: Deposited, Funded", "err: Window 350"] }),
        ),
        frame(
            "response_error",
            rpc::encode(&Response::Error("storage failed".into())),
            json!({ "error": "storage failed" }),
        ),
    ]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridchan_channel::ChannelId;

    const PUBLISHED: &str = include_str!("../../specs/vectors/frames.json");

    #[test]
    fn published_frames_match_the_code_and_decode() {
        gridchan_channel::frame_vectors::check_published(
            PUBLISHED,
            "ledger",
            &compute(),
            |v, body| {
                if v.name.starts_with("request") {
                    rpc::encode(&rpc::decode::<Request>(body).unwrap())
                } else {
                    rpc::encode(&rpc::decode::<Response>(body).unwrap())
                }
            },
        );
    }

    /// The variant numbers of specs/ledger.md: a reordering of the Rust declarations fails
    /// here.
    #[test]
    fn variant_numbers_are_the_specs() {
        let requests: Vec<u8> = compute()
            .iter()
            .filter(|v| v.name.starts_with("request"))
            .map(|v| v.message_type)
            .collect();
        assert_eq!(
            requests,
            [0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 5, 6, 7]
        );
        let responses: Vec<u8> = compute()
            .iter()
            .filter(|v| v.name.starts_with("response"))
            .map(|v| v.message_type)
            .collect();
        assert_eq!(responses, [0, 1, 2, 3, 3, 4, 5, 6, 7, 8]);
        // TxKind: the byte after the version byte, the Submit variant, the 33-byte sender and
        // a one-byte nonce (0 to 7).
        for (n, v) in compute()
            .iter()
            .filter(|v| v.name.starts_with("request_submit"))
            .enumerate()
        {
            let bytes = hex::decode(&v.frame).unwrap();
            assert_eq!(bytes[4 + 2 + 33], n as u8, "nonce");
            assert_eq!(bytes[4 + 2 + 33 + 1], n as u8, "{}: TxKind variant", v.name);
        }
        let code = |e: &TxError| rpc::encode(&Response::Refused(e.clone()))[2];
        let errors = [
            TxError::BadTxSignature,
            TxError::BadNonce {
                expected: 1,
                got: 2,
            },
            TxError::InsufficientBalance {
                balance: Amount(1),
                needed: Amount(2),
            },
            TxError::UnknownChannel,
            TxError::NotAParty,
            TxError::InvalidParams(String::new()),
            TxError::WrongDepositAmount {
                expected: Amount(1),
            },
            TxError::AlreadyDeposited,
            TxError::WrongPhase(String::new()),
            TxError::FundingClosed { deadline: 1 },
            TxError::FundingOpen { deadline: 1 },
            TxError::BadStateSignature(String::new()),
            TxError::MoneyNotConserved,
            TxError::NotNewer {
                registered: Version(1),
                got: Version(1),
            },
            TxError::Window { deadline: 1 },
            TxError::FinalFlag,
            TxError::InsufficientClaimable {
                claimable: Amount(1),
                needed: Amount(2),
            },
            TxError::Overflow,
            TxError::TokenRefused(String::new()),
            TxError::Reverted(String::new()),
            TxError::TopUpNotMade,
            TxError::WithdrawalNotInState,
            TxError::NothingToWithdraw,
            TxError::InvalidBatch(String::new()),
        ];
        for (n, e) in errors.iter().enumerate() {
            assert_eq!(code(e), n as u8, "{e:?}");
        }
        let status = |s: ChannelStatus| {
            let bytes = rpc::encode(&s);
            bytes[1]
        };
        assert_eq!(status(ChannelStatus::Funding { deadline: 1 }), 0);
        assert_eq!(status(ChannelStatus::Open), 1);
        assert_eq!(
            status(ChannelStatus::Registered {
                version: Version(1),
                deadline: 1,
                state: State::initial(&gridchan_channel::ChannelParams {
                    party_a: signer(1).id(),
                    party_b: signer(2).id(),
                    nonce: [0; 32],
                    deposit_a: Amount(1),
                    deposit_b: Amount(0),
                    challenge_window_blocks: 1,
                    funding_window_blocks: 1,
                    interval_seconds: 900,
                    tolerance: gridchan_channel::MeterTolerance {
                        absolute_wh: 0,
                        permille: 0
                    },
                    opened_at: IntervalIndex(0),
                    tariff: Tariff::Flat(gridchan_channel::PricePerKwh(1)),
                    evidence: Default::default(),
                }),
            }),
            2
        );
        assert_eq!(
            status(ChannelStatus::Concluded {
                version: Version(1)
            }),
            3
        );
        assert_eq!(status(ChannelStatus::Expired), 4);
        let id = ChannelId([0; 32]);
        let event = |e: ChainEvent| rpc::encode(&e)[1];
        let events = [
            ChainEvent::Transferred {
                from: signer(1).id(),
                to: signer(2).id(),
                amount: Amount(1),
            },
            ChainEvent::Deposited {
                channel: id,
                party: Party::A,
                amount: Amount(1),
            },
            ChainEvent::Funded { channel: id },
            ChainEvent::Reclaimed {
                channel: id,
                party: Party::A,
                amount: Amount(1),
            },
            ChainEvent::Registered {
                channel: id,
                version: Version(1),
                deadline: 1,
            },
            ChainEvent::Refuted {
                channel: id,
                version: Version(1),
                deadline: 1,
            },
            ChainEvent::Concluded {
                channel: id,
                version: Version(1),
                payout: [Amount(1); 2],
            },
            ChainEvent::Withdrawn {
                channel: id,
                party: Party::A,
                amount: Amount(1),
            },
        ];
        for (n, e) in events.into_iter().enumerate() {
            assert_eq!(event(e), n as u8);
        }
    }
}
