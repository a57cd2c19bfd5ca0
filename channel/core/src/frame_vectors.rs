//! Test vectors for the wire: one frame of every message type of `specs/protocol.md` (and every
//! reason a `Refuse` can carry), as published in `specs/vectors/frames.json`. Each vector gives
//! the message's fields as plain JSON values and the frame's bytes, so a second implementation
//! can check both its encoder and its decoder. Everything comes from the fixed keys of
//! [`crate::vectors`]; the signatures are deterministic (RFC 6979).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::crypto::{NodeId, Signature, Signer};
use crate::params::ChannelParams;
use crate::signed::{ProposalParts, SignedStateParts};
use crate::state::{Refusal, State};
use crate::tariff::Tariff;
use crate::types::{Amount, IntervalIndex, Party, PricePerKwh, Version, WattHours};
use crate::vectors::{params, secret, tou};
use crate::wire::{
    AcceptChannel, Announce, Countersign, Message, OpenChannel, Reestablish, Refuse,
};

/// One frame: what it carries and its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameVector {
    pub name: String,
    /// The message type byte.
    pub message_type: u8,
    /// The message's fields (amounts in micro-units, energy in Wh, byte strings in hex).
    pub fields: Value,
    /// The whole frame, length field included, in hex.
    pub frame: String,
}

fn sig_hex(s: &Signature) -> String {
    hex::encode(s.0)
}

fn state_json(s: &State) -> Value {
    json!({
        "channel_id": hex::encode(s.channel_id.0),
        "version": s.version.0,
        "balance_a": s.balance_a.0,
        "balance_b": s.balance_b.0,
        "energy_a_to_b": s.energy_a_to_b.0,
        "energy_b_to_a": s.energy_b_to_a.0,
        "last_interval": s.last_interval.0,
        "is_final": s.is_final,
        "book": hex::encode(s.book),
        "funds": {
            "topped_up": [s.funds.topped_up[0].0, s.funds.topped_up[1].0],
            "withdrawn": [s.funds.withdrawn[0].0, s.funds.withdrawn[1].0],
        },
    })
}

fn tou_json(tou: &crate::tariff::TimeOfUse) -> Value {
    json!({
        "utc_offset_minutes": tou.utc_offset_minutes,
        "weekday": tou.weekday.iter().map(|p| p.0).collect::<Vec<_>>(),
        "weekend": tou.weekend.iter().map(|p| p.0).collect::<Vec<_>>(),
    })
}

fn tariff_json(t: &Tariff) -> Value {
    match t {
        Tariff::Flat(p) => json!({ "flat": p.0 }),
        Tariff::TimeOfUse(tou) => json!({ "time_of_use": tou_json(tou) }),
        Tariff::Zoned(z) => json!({
            "zoned_time_of_use": {
                "zone": z.zone,
                "rules": z.rules,
                "weekday": z.weekday.iter().map(|p| p.0).collect::<Vec<_>>(),
                "weekend": z.weekend.iter().map(|p| p.0).collect::<Vec<_>>(),
            }
        }),
        Tariff::Market(m) => json!({
            "market": {
                "market": hex::encode(m.market),
                "rule": m.rule as u8,
                "fee": m.fee.0,
                "deadline_permille": m.deadline_permille,
                "feed_in": tou_json(&m.feed_in),
                "retail": tou_json(&m.retail),
            }
        }),
    }
}

fn params_json(p: &ChannelParams) -> Value {
    let meter = |m: Option<NodeId>| m.map(|m| hex::encode(m.to_bytes()));
    json!({
        "party_a": hex::encode(p.party_a.to_bytes()),
        "party_b": hex::encode(p.party_b.to_bytes()),
        "nonce": hex::encode(p.nonce),
        "deposit_a": p.deposit_a.0,
        "deposit_b": p.deposit_b.0,
        "challenge_window_blocks": p.challenge_window_blocks,
        "funding_window_blocks": p.funding_window_blocks,
        "interval_seconds": p.interval_seconds,
        "tolerance": { "absolute_wh": p.tolerance.absolute_wh, "permille": p.tolerance.permille },
        "opened_at": p.opened_at.0,
        "tariff": tariff_json(&p.tariff),
        "evidence": { "meter_a": meter(p.evidence.meter_a), "meter_b": meter(p.evidence.meter_b) },
    })
}

fn proposal_json(p: &ProposalParts) -> Value {
    json!({
        "state": state_json(&p.state),
        "proposer": format!("{:?}", p.proposer),
        "sig": sig_hex(&p.sig),
    })
}

/// Every reason a `Refuse` may carry, one of each variant, in the spec's order.
pub fn every_refusal() -> Vec<Refusal> {
    vec![
        Refusal::WrongChannel,
        Refusal::UnexpectedVersion {
            expected: 5,
            got: 300,
        },
        Refusal::BadSignature,
        Refusal::MoneyNotConserved {
            expected: 70_000_000,
            got: 70_000_001,
        },
        Refusal::Overflow,
        Refusal::InsufficientBalance { needed: 90_000 },
        Refusal::EnergyWentBackwards,
        Refusal::TwoWayEnergy,
        Refusal::ProposerNotSeller,
        Refusal::StaleInterval {
            last: 1_929_748,
            got: 1_929_700,
        },
        Refusal::PriceOffTariff {
            expected: 90_000,
            got: 90_001,
        },
        Refusal::EnergyBeyondImport {
            billed: 600,
            imported: 500,
        },
        Refusal::OutsideTolerance {
            billed: 520,
            reading: 500,
        },
        Refusal::NoMeterReading(1_929_749),
        Refusal::FinalChangesState,
        Refusal::EmptyUpdate,
        Refusal::VersionBurned { highest: 65_536 },
        Refusal::NotAccepting,
        Refusal::BadParams(
            "a challenge window of 5 blocks; this gateway accepts 10 to 10000".into(),
        ),
        Refusal::ProposerNotMarket,
        Refusal::BookMissing,
        Refusal::NoBook(1_929_750),
        Refusal::NotTheBook(1_929_751),
        Refusal::BadFunds,
        Refusal::TopUpNotSeen { total: 5_000_000 },
    ]
}

/// The reason's name and fields, as the spec's table gives them.
fn refusal_json(r: &Refusal) -> Value {
    let (name, fields) = match r {
        Refusal::UnexpectedVersion { expected, got }
        | Refusal::MoneyNotConserved { expected, got }
        | Refusal::PriceOffTariff { expected, got } => {
            (r.name(), json!({ "expected": expected, "got": got }))
        }
        Refusal::InsufficientBalance { needed } => (r.name(), json!({ "needed": needed })),
        Refusal::StaleInterval { last, got } => (r.name(), json!({ "last": last, "got": got })),
        Refusal::EnergyBeyondImport { billed, imported } => {
            (r.name(), json!({ "billed": billed, "imported": imported }))
        }
        Refusal::OutsideTolerance { billed, reading } => {
            (r.name(), json!({ "billed": billed, "reading": reading }))
        }
        Refusal::NoMeterReading(interval) => (r.name(), json!({ "interval": interval })),
        Refusal::VersionBurned { highest } => (r.name(), json!({ "highest": highest })),
        Refusal::BadParams(why) => (r.name(), json!({ "why": why })),
        Refusal::TopUpNotSeen { total } => (r.name(), json!({ "total": total })),
        _ => (r.name(), json!({})),
    };
    json!({ "variant": r.variant(), "reason": name, "fields": fields })
}

/// The published frames, computed by this implementation.
pub fn compute() -> Vec<FrameVector> {
    let (a, b) = (key(0x01), key(0x02));
    let p = params(&a, &b, tou(), (50_000_000, 20_000_000));
    let id = p.channel_id();
    let v0 = State::initial(&p);
    let (v1, _) = v0
        .settle(
            &p,
            Version(1),
            Party::A,
            IntervalIndex(1_929_784),
            WattHours(500),
        )
        .expect("a valid trade");
    let (v2, _) = v1
        .settle(
            &p,
            Version(2),
            Party::B,
            IntervalIndex(1_929_785),
            WattHours(70_000),
        )
        .expect("a valid trade");
    let mut out = Vec::new();
    let mut push = |name: &str, message: Message, fields: Value| {
        let frame = message.encode();
        out.push(FrameVector {
            name: name.to_string(),
            message_type: frame[6],
            fields,
            frame: hex::encode(frame),
        });
    };

    let sig_a0 = a.sign(&v0.digest());
    push(
        "open_channel",
        Message::OpenChannel(Box::new(OpenChannel {
            params: p.clone(),
            sig_a: sig_a0,
        })),
        json!({ "params": params_json(&p), "sig_a": sig_hex(&sig_a0) }),
    );
    // The same channel with both meters named and a tariff on Amsterdam's clock: the terms'
    // fifth variant (specs/protocol.md, "Encodings").
    let mut signed = p.clone();
    signed.evidence = crate::params::Evidence::signed(
        Signer::new(&[0x31; 32], &[0; 32])
            .expect("a valid key")
            .id(),
        Signer::new(&[0x32; 32], &[0; 32])
            .expect("a valid key")
            .id(),
    );
    signed.tariff = Tariff::Zoned(Box::new(crate::tariff::ZonedTimeOfUse {
        zone: "Europe/Amsterdam".into(),
        rules: "2026f".into(),
        weekday: [PricePerKwh(120_000); 24],
        weekend: [PricePerKwh(100_000); 24],
    }));
    let v0_signed = State::initial(&signed);
    let sig_signed = a.sign(&v0_signed.digest());
    push(
        "open_channel_signed_readings",
        Message::OpenChannel(Box::new(OpenChannel {
            params: signed.clone(),
            sig_a: sig_signed,
        })),
        json!({ "params": params_json(&signed), "sig_a": sig_hex(&sig_signed) }),
    );
    let sig_b0 = b.sign(&v0.digest());
    push(
        "accept_channel",
        Message::AcceptChannel(AcceptChannel {
            channel_id: id,
            sig_b: sig_b0,
        }),
        json!({ "channel_id": hex::encode(id.0), "sig_b": sig_hex(&sig_b0) }),
    );
    let proposal = ProposalParts {
        state: v1.clone(),
        proposer: Party::A,
        sig: a.sign(&v1.digest()),
    };
    push(
        "propose",
        Message::Propose(proposal.clone()),
        proposal_json(&proposal),
    );
    // A withdrawal while open: the state carries its funds (flags bit 1, four amounts).
    let withdrawal = v1
        .with_funds(Version(2), Party::A, Amount(0), Amount(7_000_000))
        .expect("a valid withdrawal");
    let proposal_funds = ProposalParts {
        state: withdrawal.clone(),
        proposer: Party::A,
        sig: a.sign(&withdrawal.digest()),
    };
    push(
        "propose_withdrawal",
        Message::Propose(proposal_funds.clone()),
        proposal_json(&proposal_funds),
    );
    let sig_b1 = b.sign(&v1.digest());
    push(
        "countersign",
        Message::Countersign(Countersign {
            channel_id: id,
            version: Version(1),
            sig: sig_b1,
        }),
        json!({ "channel_id": hex::encode(id.0), "version": 1, "sig": sig_hex(&sig_b1) }),
    );
    for reason in every_refusal() {
        let name = format!("refuse_{}", reason.name());
        push(
            &name,
            Message::Refuse(Refuse {
                channel_id: id,
                version: Version(2),
                reason: reason.clone(),
            }),
            json!({
                "channel_id": hex::encode(id.0),
                "version": 2,
                "reason": refusal_json(&reason),
            }),
        );
    }
    let current = SignedStateParts {
        state: v1.clone(),
        sig_a: a.sign(&v1.digest()),
        sig_b: sig_b1,
    };
    let pending = ProposalParts {
        state: v2.clone(),
        proposer: Party::B,
        sig: b.sign(&v2.digest()),
    };
    for (name, proposal, highest) in [
        ("reestablish", None, 1u64),
        ("reestablish_with_proposal", Some(pending), 2u64),
    ] {
        push(
            name,
            Message::Reestablish(Box::new(Reestablish {
                channel_id: id,
                current: current.clone(),
                proposal: proposal.clone(),
                highest_signed: Version(highest),
            })),
            json!({
                "channel_id": hex::encode(id.0),
                "current": {
                    "state": state_json(&current.state),
                    "sig_a": sig_hex(&current.sig_a),
                    "sig_b": sig_hex(&current.sig_b),
                },
                "proposal": proposal.as_ref().map(proposal_json),
                "highest_signed": highest,
            }),
        );
    }
    // The meter of the third vector signs its reading (`specs/readings.md`).
    let meter = Signer::new(&[0x4d; 32], &[0; 32]).expect("a valid key");
    let signed = crate::reading::SignedReading::sign(
        crate::reading::Reading {
            meter: meter.id(),
            interval: IntervalIndex(1_929_784),
            interval_seconds: 900,
            import_start: WattHours(4_000_000),
            import_end: WattHours(4_000_000),
            export_start: WattHours(2_500_000),
            export_end: WattHours(2_501_250),
        },
        &meter,
    );
    for (name, shares, reading) in [
        ("announce_round_1", None, None),
        (
            "announce_round_2",
            Some(crate::allocate::Shares {
                sell: WattHours(625),
                buy: WattHours(0),
            }),
            None,
        ),
        ("announce_signed_reading", None, Some(signed)),
    ] {
        let announce = Announce {
            interval: IntervalIndex(1_929_784),
            import: WattHours(0),
            export: WattHours(1_250),
            shares,
            reading,
        };
        push(
            name,
            Message::Announce(announce),
            json!({
                "interval": 1_929_784,
                "import": 0,
                "export": 1_250,
                "shares": shares.map(|s| json!({ "sell": s.sell.0, "buy": s.buy.0 })),
                "reading": reading.map(|r| json!({
                    "meter": hex::encode(r.reading.meter.to_bytes()),
                    "interval": r.reading.interval.0,
                    "interval_seconds": r.reading.interval_seconds,
                    "import_start": r.reading.import_start.0,
                    "import_end": r.reading.import_end.0,
                    "export_start": r.reading.export_start.0,
                    "export_end": r.reading.export_end.0,
                    "sig": sig_hex(&r.signature),
                })),
            }),
        );
    }
    // A flat tariff, to show the other `Tariff` variant on the wire.
    let flat = params(&a, &b, Tariff::Flat(PricePerKwh(180_000)), (5, 0));
    let sig = a.sign(&State::initial(&flat).digest());
    push(
        "open_channel_flat",
        Message::OpenChannel(Box::new(OpenChannel {
            params: flat.clone(),
            sig_a: sig,
        })),
        json!({ "params": { "tariff": tariff_json(&flat.tariff), "deposit_a": 5, "deposit_b": 0 }, "sig_a": sig_hex(&sig) }),
    );
    out
}

/// `specs/vectors/frames.json` as pretty JSON: `sections` (name, frames) in order, for the
/// gateway wire (`"channel"`, [`compute`]) and the ledger's and the tower's RPCs (computed by
/// their crates; the `gridchan vectors --frames` command puts them together).
pub fn render(sections: &[(&str, Vec<FrameVector>)]) -> String {
    let object: serde_json::Map<String, Value> = sections
        .iter()
        .map(|(name, frames)| {
            (
                name.to_string(),
                serde_json::to_value(frames).expect("vectors serialize"),
            )
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&object).expect("vectors serialize");
    s.push('\n');
    s
}

/// The vectors' fixed key number `byte` (the keys of `states.json`).
pub fn key(byte: u8) -> Signer {
    Signer::new(&secret(byte), &[0; 32]).expect("fixed key")
}

/// A frame of an RPC (the ledger's or the tower's): the 4-byte length, then the payload, which
/// starts with the RPC's version byte and then the request's or response's variant number
/// (the vector's `message_type`).
pub fn rpc_frame(name: &str, payload: Vec<u8>, fields: Value) -> FrameVector {
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    FrameVector {
        name: name.to_string(),
        message_type: payload.get(1).copied().unwrap_or_default(),
        fields,
        frame: hex::encode(frame),
    }
}

/// Checks section `name` of a published `frames.json` against `computed`, and that every
/// published frame decodes and encodes back to its bytes (`reencode` gets the frame's payload,
/// after the length, and returns what decoding and encoding it again gives).
pub fn check_published(
    json: &str,
    name: &str,
    computed: &[FrameVector],
    reencode: impl Fn(&FrameVector, &[u8]) -> Vec<u8>,
) {
    let published = published(json, name);
    assert_eq!(
        published, computed,
        "run `gridchan vectors --frames > specs/vectors/frames.json`"
    );
    for v in &published {
        let bytes = hex::decode(&v.frame).expect("hex");
        assert_eq!(reencode(v, &bytes[4..]), bytes[4..], "{}", v.name);
    }
}

/// The frames of section `name` of a published `frames.json`.
pub fn published(json: &str, name: &str) -> Vec<FrameVector> {
    let object: serde_json::Map<String, Value> =
        serde_json::from_str(json).expect("frames.json parses");
    serde_json::from_value(object.get(name).cloned().unwrap_or_default())
        .expect("the section's frames parse")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLISHED: &str = include_str!("../../../specs/vectors/frames.json");

    #[test]
    fn published_frames_match_the_code_and_decode_to_their_message() {
        let published = published(PUBLISHED, "channel");
        let computed = compute();
        assert_eq!(
            published, computed,
            "run `gridchan vectors --frames > specs/vectors/frames.json`"
        );
        for v in &published {
            let bytes = hex::decode(&v.frame).unwrap();
            let message = Message::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", v.name));
            assert_eq!(message.encode(), bytes, "{} re-encodes to itself", v.name);
            assert_eq!(bytes[6], v.message_type);
        }
        let types: std::collections::BTreeSet<u8> =
            published.iter().map(|v| v.message_type).collect();
        assert_eq!(types, (1..=7).collect(), "a frame of every message type");
    }
}
