//! Test vectors for the signed-state encoding, as published in `specs/vectors/states.json`.
//! Everything is derived from fixed secret keys; RFC 6979 makes the signatures deterministic.

use serde::{Deserialize, Serialize};

use crate::crypto::Signer;
use crate::params::{ChannelParams, Evidence, MeterTolerance};
use crate::state::State;
use crate::tariff::{Tariff, TimeOfUse};
use crate::types::{Amount, IntervalIndex, Party, PricePerKwh, Version, WattHours};

/// One vector: the inputs, and what an implementation must compute from them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vector {
    pub name: String,
    /// Secret keys of A and B (hex, 32 bytes each).
    pub secret_a: String,
    pub secret_b: String,
    /// Compressed public keys and Ethereum-style addresses they give.
    pub node_a: String,
    pub node_b: String,
    pub address_a: String,
    pub address_b: String,
    /// The tariff's digest and the channel parameters' encoding (hex) and digest.
    pub tariff_digest: String,
    pub params_encoding: String,
    pub channel_id: String,
    pub state: StateFields,
    /// The state encoding (hex: ten words, or fourteen once its funds changed) and its SHA-256.
    pub state_encoding: String,
    pub digest: String,
    /// 65-byte `r || s || v` signatures by A and B over the digest (hex).
    pub sig_a: String,
    pub sig_b: String,
}

/// State fields as decimal numbers, for readers in any language.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFields {
    pub version: u64,
    pub balance_a: u64,
    pub balance_b: u64,
    pub energy_a_to_b: u64,
    pub energy_b_to_a: u64,
    pub last_interval: u64,
    pub is_final: bool,
    /// The book digest, hex (zero for a tariff trade).
    pub book: String,
    /// Top-ups and withdrawals while open (`Funds`), present only when one is not zero: the
    /// state is then encoded under `gridchan.state.v3`, fourteen words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funds: Option<FundsFields>,
}

/// A state's funds as decimal numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsFields {
    pub topped_up_a: u64,
    pub topped_up_b: u64,
    pub withdrawn_a: u64,
    pub withdrawn_b: u64,
}

/// The market of the vectors: pay-as-clear, a fee of 0.005/kWh, books closing a tenth into
/// the next interval, feed-in 0.08 and time-of-use retail.
pub(crate) fn market_tariff() -> Tariff {
    let Tariff::TimeOfUse(retail) = tou() else {
        unreachable!("tou() is a time-of-use tariff")
    };
    Tariff::Market(Box::new(crate::market::MarketTerms {
        market: [0x4d; 32],
        rule: crate::market::Rule::PayAsClear,
        fee: PricePerKwh(5_000),
        deadline_permille: 100,
        feed_in: crate::tariff::TimeOfUse::flat(PricePerKwh(80_000)),
        retail: *retail,
    }))
}

/// The fixed secret key number `byte` of the vectors.
pub fn secret(byte: u8) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[31] = byte;
    s[0] = 0x11;
    s
}

/// The channel parameters of the vectors between `a` and `b`.
pub fn params(a: &Signer, b: &Signer, tariff: Tariff, deposits: (u64, u64)) -> ChannelParams {
    ChannelParams {
        party_a: a.id(),
        party_b: b.id(),
        nonce: [0x42; 32],
        deposit_a: Amount(deposits.0),
        deposit_b: Amount(deposits.1),
        challenge_window_blocks: 60,
        funding_window_blocks: 30,
        interval_seconds: 900,
        tolerance: MeterTolerance {
            absolute_wh: 10,
            permille: 20,
        },
        // 2025-01-13T00:00:00Z in 15-minute intervals.
        opened_at: IntervalIndex(1_929_696),
        tariff,
        evidence: Evidence::NONE,
    }
}

pub(crate) fn tou() -> Tariff {
    let mut weekday = [PricePerKwh(120_000); 24];
    for p in &mut weekday[16..21] {
        *p = PricePerKwh(310_000);
    }
    Tariff::TimeOfUse(Box::new(TimeOfUse {
        utc_offset_minutes: -300,
        weekday,
        weekend: [PricePerKwh(95_000); 24],
    }))
}

/// The published vectors, computed by this implementation.
pub fn compute() -> Vec<Vector> {
    let mut out = Vec::new();
    let (sa, sb) = (secret(0x01), secret(0x02));
    let a = Signer::new(&sa, &[0; 32]).expect("fixed key");
    let b = Signer::new(&sb, &[0; 32]).expect("fixed key");
    let flat = params(
        &a,
        &b,
        Tariff::Flat(PricePerKwh(180_000)),
        (50_000_000, 20_000_000),
    );
    let v0 = State::initial(&flat);
    let (v1, _) = v0
        .settle(
            &flat,
            Version(1),
            Party::A,
            IntervalIndex(1_929_748),
            WattHours(500),
        )
        .expect("valid trade");
    let v2_final = v1.finalized(Version(2));
    // B tops up 5.0 (confirmed on the ledger), then A takes 10.0 of its balance out.
    let v3_topped = v1
        .with_funds(Version(3), Party::B, Amount(5_000_000), Amount(0))
        .expect("valid top-up");
    let v4_withdrawn = v3_topped
        .with_funds(Version(4), Party::A, Amount(0), Amount(10_000_000))
        .expect("valid withdrawal");
    let tou_params = params(&a, &b, tou(), (10_000_000, 10_000_000));
    let t0 = State::initial(&tou_params);
    // 17:00 local (22:00 UTC) on Monday 2025-01-13: the peak.
    let (t1, _) = t0
        .settle(
            &tou_params,
            Version(7),
            Party::B,
            IntervalIndex(1_929_784),
            WattHours(1_234),
        )
        .expect("valid trade");
    let market_params = params(&a, &b, market_tariff(), (5_000_000, 20_000_000));
    let (m1, _) = State::initial(&market_params)
        .settle_market(
            Version(3),
            &crate::market::Settlement {
                interval: IntervalIndex(1_929_790),
                book: [0xb0; 32],
                sold: WattHours(0),
                bought: WattHours(400),
                earned: Amount(0),
                paid: Amount(60_001),
            },
        )
        .expect("valid settlement");
    let (sc, sd) = (secret(0x03), secret(0x04));
    let c = Signer::new(&sc, &[0; 32]).expect("fixed key");
    let d = Signer::new(&sd, &[0; 32]).expect("fixed key");
    let big = params(
        &c,
        &d,
        Tariff::Flat(PricePerKwh(1)),
        (u64::MAX / 2, u64::MAX / 2),
    );
    let mut extreme = State::initial(&big);
    extreme.version = Version(u64::MAX - 1);
    extreme.balance_a = Amount(u64::MAX - 1);
    extreme.balance_b = Amount(0);
    extreme.energy_a_to_b = WattHours(u64::MAX);
    extreme.energy_b_to_a = WattHours(u64::MAX - 7);
    extreme.last_interval = IntervalIndex(u64::MAX);
    extreme.book = [0xff; 32];
    let cases = [
        (
            "flat tariff, version 0 (the deposits)",
            &flat,
            &v0,
            (&a, &b),
            (sa, sb),
        ),
        (
            "flat tariff, A sold 500 Wh at 0.18/kWh",
            &flat,
            &v1,
            (&a, &b),
            (sa, sb),
        ),
        (
            "flat tariff, final state",
            &flat,
            &v2_final,
            (&a, &b),
            (sa, sb),
        ),
        (
            "flat tariff, B topped up 5.0 (state version 3 of the encoding)",
            &flat,
            &v3_topped,
            (&a, &b),
            (sa, sb),
        ),
        (
            "flat tariff, then A withdrew 10.0 while open",
            &flat,
            &v4_withdrawn,
            (&a, &b),
            (sa, sb),
        ),
        (
            "time-of-use tariff, B sold 1234 Wh at the peak",
            &tou_params,
            &t1,
            (&a, &b),
            (sa, sb),
        ),
        (
            "market channel (A a member, B the market node): A bought 400 Wh in a book",
            &market_params,
            &m1,
            (&a, &b),
            (sa, sb),
        ),
        (
            "extreme values in every word",
            &big,
            &extreme,
            (&c, &d),
            (sc, sd),
        ),
    ];
    for (name, p, state, (ka, kb), (xa, xb)) in cases {
        let digest = state.digest();
        out.push(Vector {
            name: name.to_string(),
            secret_a: hex::encode(xa),
            secret_b: hex::encode(xb),
            node_a: ka.id().to_string(),
            node_b: kb.id().to_string(),
            address_a: ka.id().address().to_string(),
            address_b: kb.id().address().to_string(),
            tariff_digest: hex::encode(p.tariff.digest()),
            params_encoding: hex::encode(p.encode().as_bytes()),
            channel_id: p.channel_id().to_string(),
            state: StateFields {
                version: state.version.0,
                balance_a: state.balance_a.0,
                balance_b: state.balance_b.0,
                energy_a_to_b: state.energy_a_to_b.0,
                energy_b_to_a: state.energy_b_to_a.0,
                last_interval: state.last_interval.0,
                is_final: state.is_final,
                book: hex::encode(state.book),
                funds: (!state.funds.is_zero()).then_some(FundsFields {
                    topped_up_a: state.funds.topped_up[0].0,
                    topped_up_b: state.funds.topped_up[1].0,
                    withdrawn_a: state.funds.withdrawn[0].0,
                    withdrawn_b: state.funds.withdrawn[1].0,
                }),
            },
            state_encoding: hex::encode(state.encode().as_bytes()),
            digest: hex::encode(digest),
            sig_a: hex::encode(ka.sign(&digest).0),
            sig_b: hex::encode(kb.sign(&digest).0),
        });
    }
    out
}

/// The vectors as the pretty JSON of `specs/vectors/states.json`.
pub fn render() -> String {
    let mut s = serde_json::to_string_pretty(&compute()).expect("vectors serialize");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{NodeId, Signature};
    use crate::types::ChannelId;

    const PUBLISHED: &str = include_str!("../../../specs/vectors/states.json");

    fn unhex<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// Every published vector, checked field by field from its inputs (not just compared with
    /// what this code would print): the encoding, the digest, and both signatures verify and
    /// recover to the published keys.
    #[test]
    fn published_vectors_match_the_code() {
        let published: Vec<Vector> = serde_json::from_str(PUBLISHED).unwrap();
        assert_eq!(published.len(), 8);
        for v in &published {
            let a = Signer::new(&unhex(&v.secret_a), &[9; 32]).unwrap();
            let b = Signer::new(&unhex(&v.secret_b), &[9; 32]).unwrap();
            assert_eq!(a.id().to_string(), v.node_a, "{}", v.name);
            assert_eq!(b.id().to_string(), v.node_b, "{}", v.name);
            assert_eq!(a.id().address().to_string(), v.address_a, "{}", v.name);
            let f = &v.state;
            let state = State {
                channel_id: ChannelId(unhex(&v.channel_id)),
                version: Version(f.version),
                balance_a: Amount(f.balance_a),
                balance_b: Amount(f.balance_b),
                energy_a_to_b: WattHours(f.energy_a_to_b),
                energy_b_to_a: WattHours(f.energy_b_to_a),
                last_interval: IntervalIndex(f.last_interval),
                is_final: f.is_final,
                book: unhex(&f.book),
                funds: f
                    .funds
                    .map_or_else(crate::state::Funds::default, |f| crate::state::Funds {
                        topped_up: [Amount(f.topped_up_a), Amount(f.topped_up_b)],
                        withdrawn: [Amount(f.withdrawn_a), Amount(f.withdrawn_b)],
                    }),
            };
            assert_eq!(
                hex::encode(state.encode().as_bytes()),
                v.state_encoding,
                "{}",
                v.name
            );
            let digest = state.digest();
            assert_eq!(hex::encode(digest), v.digest, "{}", v.name);
            let node_a: NodeId = v.node_a.parse().unwrap();
            let node_b: NodeId = v.node_b.parse().unwrap();
            Signature(unhex(&v.sig_a)).verify(&digest, &node_a).unwrap();
            Signature(unhex(&v.sig_b)).verify(&digest, &node_b).unwrap();
            assert_eq!(
                hex::encode(a.sign(&digest).0),
                v.sig_a,
                "RFC 6979 is deterministic"
            );
            let id = sha2::Sha256::digest_bytes(&hex::decode(&v.params_encoding).unwrap());
            assert_eq!(hex::encode(id), v.channel_id, "{}", v.name);
        }
        assert_eq!(
            render(),
            PUBLISHED,
            "run `gridchan vectors > specs/vectors/states.json`"
        );
    }

    trait DigestBytes {
        fn digest_bytes(data: &[u8]) -> [u8; 32];
    }

    impl DigestBytes for sha2::Sha256 {
        fn digest_bytes(data: &[u8]) -> [u8; 32] {
            use sha2::Digest;
            sha2::Sha256::digest(data).into()
        }
    }
}
