//! Test vectors for the tower's RPC (specs/watchtower.md): a frame of every request and
//! response, and every rejection, the section `watchtower` of `specs/vectors/frames.json`.
//! Fixed keys, deterministic signatures.

use serde_json::json;

use gridchan_channel::frame_vectors::FrameVector;
use gridchan_channel::{
    IntervalIndex, Party, PricePerKwh, SignedStateParts, Signer, State, Tariff, Version, WattHours,
};

use crate::receipt::{BatchReceipt, Receipt};
use crate::rpc::{self, Rejection, Request, Response};

fn signer(byte: u8) -> Signer {
    gridchan_channel::frame_vectors::key(byte)
}

use gridchan_channel::frame_vectors::rpc_frame as frame;

/// Every rejection, in the spec's order.
pub fn every_rejection() -> Vec<Rejection> {
    vec![
        Rejection::NotRegistered,
        Rejection::NotAllowed,
        Rejection::UnknownChannel,
        Rejection::NotAParty,
        Rejection::BadSignature,
        Rejection::OlderVersion {
            held: 9,
            offered: 7,
        },
        Rejection::Conflict(9),
        Rejection::OverQuota("at most 256 states in one request".into()),
        Rejection::Closed,
        Rejection::Unavailable("the ledger does not answer".into()),
    ]
}

/// The published frames of the tower's RPC, computed by this implementation. `message_type` is
/// the request's or response's variant number.
pub fn compute() -> Vec<FrameVector> {
    let (a, b, tower) = (signer(1), signer(2), signer(3));
    let params = gridchan_channel::vectors::params(
        &a,
        &b,
        Tariff::Flat(PricePerKwh(180_000)),
        (5_000_000, 2_000_000),
    );
    let id = params.channel_id();
    let (v1, _) = State::initial(&params)
        .settle(
            &params,
            Version(1),
            Party::A,
            IntervalIndex(1_929_700),
            WattHours(500),
        )
        .expect("a valid trade");
    let state = SignedStateParts {
        state: v1.clone(),
        sig_a: a.sign(&v1.digest()),
        sig_b: b.sign(&v1.digest()),
    };
    let digest = v1.digest();
    let receipt = Receipt::sign(&tower, id, Version(1), digest);
    let batch = BatchReceipt::sign(&tower, vec![(id, Version(1), digest)]);
    let state_json = json!({
        "channel_id": hex::encode(id.0),
        "version": 1,
        "state_digest": hex::encode(digest),
        "sig_a": hex::encode(state.sig_a.0),
        "sig_b": hex::encode(state.sig_b.0),
    });
    let mut out = vec![
        frame(
            "request_register",
            rpc::encode(&Request::Register),
            json!({}),
        ),
        frame(
            "request_guard",
            rpc::encode(&Request::Guard(Box::new(state.clone()))),
            state_json.clone(),
        ),
        frame(
            "request_held",
            rpc::encode(&Request::Held(id)),
            json!({ "channel": hex::encode(id.0) }),
        ),
        frame(
            "request_guard_many",
            rpc::encode(&Request::GuardMany(vec![state.clone(), state.clone()])),
            json!({ "states": [state_json.clone(), state_json.clone()] }),
        ),
        frame(
            "request_recover",
            rpc::encode(&Request::Recover { after: Some(id) }),
            json!({ "after": hex::encode(id.0) }),
        ),
        frame(
            "response_recovered",
            rpc::encode(&Response::Recovered {
                channels: vec![rpc::HeldChannel {
                    params: params.clone(),
                    state: state.clone(),
                }],
                more: false,
            }),
            json!({ "channels": [{ "params_channel_id": hex::encode(id.0), "state": state_json }], "more": false }),
        ),
        frame(
            "response_registered",
            rpc::encode(&Response::Registered),
            json!({}),
        ),
        frame(
            "response_accepted",
            rpc::encode(&Response::Accepted(receipt.clone())),
            json!({
                "tower": hex::encode(tower.id().to_bytes()),
                "channel": hex::encode(id.0),
                "version": 1,
                "state_digest": hex::encode(digest),
                "sig": hex::encode(receipt.sig.0),
            }),
        ),
        frame(
            "response_held",
            rpc::encode(&Response::Held(Some(Version(1)))),
            json!({ "version": 1 }),
        ),
    ];
    for r in every_rejection() {
        let name = format!(
            "response_rejected_{}",
            format!("{r:?}")
                .split([' ', '('])
                .next()
                .unwrap_or("")
                .to_lowercase()
        );
        out.push(frame(
            &name,
            rpc::encode(&Response::Rejected(r.clone())),
            json!({ "rejection": r.to_string() }),
        ));
    }
    out.push(frame(
        "response_accepted_many",
        rpc::encode(&Response::AcceptedMany {
            answers: vec![Ok(()), Err(Rejection::Conflict(1))],
            receipt: Some(batch.clone()),
        }),
        json!({
            "answers": ["ok", "Conflict 1"],
            "receipt": {
                "tower": hex::encode(tower.id().to_bytes()),
                "entries": [[hex::encode(id.0), 1, hex::encode(digest)]],
                "sig": hex::encode(batch.sig.0),
            },
        }),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLISHED: &str = include_str!("../../specs/vectors/frames.json");

    #[test]
    fn published_frames_match_the_code_and_decode() {
        gridchan_channel::frame_vectors::check_published(
            PUBLISHED,
            "watchtower",
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

    /// The variant numbers of specs/watchtower.md: a reordering of the Rust declarations fails
    /// here.
    #[test]
    fn variant_numbers_are_the_specs() {
        let types: Vec<(String, u8)> = compute()
            .into_iter()
            .map(|v| (v.name, v.message_type))
            .collect();
        let of = |name: &str| types.iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(of("request_register"), 0);
        assert_eq!(of("request_guard"), 1);
        assert_eq!(of("request_held"), 2);
        assert_eq!(of("request_guard_many"), 3);
        assert_eq!(of("response_registered"), 0);
        assert_eq!(of("response_accepted"), 1);
        assert_eq!(of("response_held"), 2);
        assert_eq!(of("response_rejected_closed"), 3);
        assert_eq!(of("response_accepted_many"), 4);
        assert_eq!(of("request_recover"), 4);
        assert_eq!(of("response_recovered"), 5);
        for (n, r) in every_rejection().into_iter().enumerate() {
            assert_eq!(
                rpc::encode(&Response::Rejected(r.clone()))[2],
                n as u8,
                "{r:?}"
            );
        }
    }
}
