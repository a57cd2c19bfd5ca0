//! Channel parameters: everything both parties agree on before version 0 is signed. The channel
//! id is their digest, so no parameter can change once the channel exists.

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::abi::{domain_tag, Words};
use crate::crypto::NodeId;
use crate::market::MarketTerms;
use crate::tariff::{Tariff, TariffError, TimeOfUse, ZonedTimeOfUse};
use crate::types::{Amount, ChannelId, IntervalIndex, Party, PricePerKwh, WattHours};

const PARAMS_DOMAIN: [u8; 32] = domain_tag("gridchan.params.v1");
const EVIDENCE_DOMAIN: [u8; 32] = domain_tag("gridchan.evidence.v1");
/// Words of the evidence when a meter is named: the domain, then each party's meter key (64
/// bytes, zero when that party's readings are its word).
const EVIDENCE_WORDS: usize = 5;

/// The longest challenge window any channel may have, in blocks (specs/adjudicator.md,
/// "Limits"). About 116 days at one block a second, 3.8 years at twelve: longer than any owner
/// would lock money for, and small enough that `height + window` fits in 64 bits for any height
/// a ledger reaches. Every gateway and both ledgers refuse more.
pub const MAX_CHALLENGE_WINDOW_BLOCKS: u64 = 10_000_000;

/// The longest funding window any channel may have, in blocks (specs/adjudicator.md, "Limits").
pub const MAX_FUNDING_WINDOW_BLOCKS: u64 = 10_000_000;

/// How far the buyer's own meter may disagree with the energy the seller bills.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterTolerance {
    /// Always allowed: this many watt-hours either way.
    pub absolute_wh: u32,
    /// Also allowed: this many thousandths of the buyer's reading.
    pub permille: u16,
}

impl MeterTolerance {
    /// Whether `billed` is within tolerance of the buyer's own `reading`.
    pub fn accepts(&self, billed: WattHours, reading: WattHours) -> bool {
        let relative = u128::from(reading.0) * u128::from(self.permille) / 1000;
        let allowed = relative.max(u128::from(self.absolute_wh));
        u128::from(billed.0.abs_diff(reading.0)) <= allowed
    }
}

/// What each party's energy figures rest on in a channel (`specs/readings.md`, "Evidence"):
/// its word, or the signed readings of the meter it named at opening. A neighbour whose
/// readings must be signed counts in an interval only with its meter's signed reading, so it
/// is never paid for more than its meter signed. Part of the channel id: no party can change it
/// afterwards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Party A's meter, when A's readings must be signed by it.
    pub meter_a: Option<NodeId>,
    /// Party B's meter, when B's readings must be signed by it.
    pub meter_b: Option<NodeId>,
}

impl Evidence {
    /// Each party's word, as before evidence was a term.
    pub const NONE: Evidence = Evidence {
        meter_a: None,
        meter_b: None,
    };

    /// Both parties' readings signed by these meters.
    pub fn signed(meter_a: NodeId, meter_b: NodeId) -> Evidence {
        Evidence {
            meter_a: Some(meter_a),
            meter_b: Some(meter_b),
        }
    }

    /// Whether every figure is a party's word.
    pub fn is_none(&self) -> bool {
        self.meter_a.is_none() && self.meter_b.is_none()
    }

    /// The meter whose signature `party`'s readings need, if any.
    pub fn meter(&self, party: Party) -> Option<NodeId> {
        match party {
            Party::A => self.meter_a,
            Party::B => self.meter_b,
        }
    }

    /// The evidence's words in the channel's terms: none at all when every figure is a party's
    /// word (so the terms are the tariff alone, as before evidence was a term).
    fn encoded(&self) -> Option<Words> {
        if self.is_none() {
            return None;
        }
        let mut w = Words::with_capacity(EVIDENCE_WORDS);
        w.bytes32(&EVIDENCE_DOMAIN);
        for meter in [self.meter_a, self.meter_b] {
            let xy = meter.map(|m| m.to_xy()).unwrap_or([0; 64]);
            w.bytes32(xy[..32].try_into().expect("32 bytes"))
                .bytes32(xy[32..].try_into().expect("32 bytes"));
        }
        Some(w)
    }

    /// The evidence from the words after the tariff's in a channel's terms.
    fn from_words(bytes: &[u8]) -> Result<Evidence, TariffError> {
        if bytes.is_empty() {
            return Ok(Evidence::NONE);
        }
        if bytes.len() != EVIDENCE_WORDS * 32 {
            return Err(TariffError::Evidence("not five words"));
        }
        if bytes[..32] != EVIDENCE_DOMAIN {
            return Err(TariffError::Evidence("not the evidence domain"));
        }
        let meter = |at: usize| -> Result<Option<NodeId>, TariffError> {
            let xy: &[u8; 64] = bytes[at..at + 64].try_into().expect("64 bytes");
            if xy.iter().all(|b| *b == 0) {
                return Ok(None);
            }
            NodeId::from_xy(xy)
                .map(Some)
                .map_err(|_| TariffError::Evidence("a meter key that is not a public key"))
        };
        let evidence = Evidence {
            meter_a: meter(32)?,
            meter_b: meter(96)?,
        };
        if evidence.is_none() {
            return Err(TariffError::Evidence("words for no meter"));
        }
        Ok(evidence)
    }

    /// `none`, `signed`, or which party's readings are signed.
    pub fn label(&self) -> &'static str {
        match (self.meter_a, self.meter_b) {
            (None, None) => "none",
            (Some(_), Some(_)) => "signed",
            (Some(_), None) => "signed by A",
            (None, Some(_)) => "signed by B",
        }
    }
}

/// The parameters of one channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "ParamsRepr", try_from = "ParamsRepr")]
pub struct ChannelParams {
    /// The party that proposed the channel.
    pub party_a: NodeId,
    /// The party that accepted it.
    pub party_b: NodeId,
    /// Chosen by A, so two channels between the same parties have different ids.
    pub nonce: [u8; 32],
    pub deposit_a: Amount,
    pub deposit_b: Amount,
    /// Blocks a registered state can be refuted for, before the ledger concludes.
    pub challenge_window_blocks: u64,
    /// Blocks after the first deposit within which the other must arrive, or the first is
    /// refunded.
    pub funding_window_blocks: u64,
    /// The metering interval length in seconds; divides an hour.
    pub interval_seconds: u32,
    pub tolerance: MeterTolerance,
    /// The interval during which the channel opened: trades settle only for later intervals.
    pub opened_at: IntervalIndex,
    pub tariff: Tariff,
    /// What each party's energy figures rest on.
    pub evidence: Evidence,
}

/// How parameters travel and are stored (`specs/protocol.md`, "Encodings"): the tariff's place
/// holds the terms, which are the tariff alone when every figure is a party's word (the layout
/// from before evidence was a term, so records and messages written then still read) and
/// otherwise a fifth variant carrying the tariff and the evidence.
#[derive(Serialize, Deserialize)]
struct ParamsRepr {
    party_a: NodeId,
    party_b: NodeId,
    nonce: [u8; 32],
    deposit_a: Amount,
    deposit_b: Amount,
    challenge_window_blocks: u64,
    funding_window_blocks: u64,
    interval_seconds: u32,
    tolerance: MeterTolerance,
    opened_at: IntervalIndex,
    terms: TermsRepr,
}

/// [`Tariff`]'s variants in its order, then the tariff with evidence.
#[derive(Serialize, Deserialize)]
enum TermsRepr {
    Flat(PricePerKwh),
    TimeOfUse(Box<TimeOfUse>),
    Market(Box<MarketTerms>),
    Zoned(Box<ZonedTimeOfUse>),
    WithEvidence(Box<Tariff>, Evidence),
}

impl From<ChannelParams> for ParamsRepr {
    fn from(p: ChannelParams) -> ParamsRepr {
        let terms = if p.evidence.is_none() {
            match p.tariff {
                Tariff::Flat(price) => TermsRepr::Flat(price),
                Tariff::TimeOfUse(t) => TermsRepr::TimeOfUse(t),
                Tariff::Market(m) => TermsRepr::Market(m),
                Tariff::Zoned(z) => TermsRepr::Zoned(z),
            }
        } else {
            TermsRepr::WithEvidence(Box::new(p.tariff), p.evidence)
        };
        ParamsRepr {
            party_a: p.party_a,
            party_b: p.party_b,
            nonce: p.nonce,
            deposit_a: p.deposit_a,
            deposit_b: p.deposit_b,
            challenge_window_blocks: p.challenge_window_blocks,
            funding_window_blocks: p.funding_window_blocks,
            interval_seconds: p.interval_seconds,
            tolerance: p.tolerance,
            opened_at: p.opened_at,
            terms,
        }
    }
}

impl TryFrom<ParamsRepr> for ChannelParams {
    type Error = &'static str;

    fn try_from(r: ParamsRepr) -> Result<ChannelParams, &'static str> {
        let (tariff, evidence) = match r.terms {
            TermsRepr::Flat(price) => (Tariff::Flat(price), Evidence::NONE),
            TermsRepr::TimeOfUse(t) => (Tariff::TimeOfUse(t), Evidence::NONE),
            TermsRepr::Market(m) => (Tariff::Market(m), Evidence::NONE),
            TermsRepr::Zoned(z) => (Tariff::Zoned(z), Evidence::NONE),
            // One encoding per value: evidence of nobody's meter is the plain tariff.
            TermsRepr::WithEvidence(_, e) if e.is_none() => {
                return Err("terms with evidence that names no meter")
            }
            TermsRepr::WithEvidence(t, e) => (*t, e),
        };
        Ok(ChannelParams {
            party_a: r.party_a,
            party_b: r.party_b,
            nonce: r.nonce,
            deposit_a: r.deposit_a,
            deposit_b: r.deposit_b,
            challenge_window_blocks: r.challenge_window_blocks,
            funding_window_blocks: r.funding_window_blocks,
            interval_seconds: r.interval_seconds,
            tolerance: r.tolerance,
            opened_at: r.opened_at,
            tariff,
            evidence,
        })
    }
}

/// Parameters that no honest party would agree to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// Both parties are the same key.
    #[error("a channel needs two different parties")]
    SameParty,
    /// The two deposits overflow.
    #[error("deposits overflow")]
    DepositOverflow,
    /// The interval length is zero, over an hour, or does not divide an hour.
    #[error("interval of {0} s does not divide an hour")]
    BadInterval(u32),
    /// The challenge window is shorter than the policy allows.
    #[error("challenge window of {got} blocks is below the minimum of {min}")]
    ChallengeWindowTooShort { got: u64, min: u64 },
    /// The challenge window is longer than the protocol allows.
    #[error("challenge window of {0} blocks is above the protocol's maximum of {MAX_CHALLENGE_WINDOW_BLOCKS}")]
    ChallengeWindowTooLong(u64),
    /// The funding window is zero.
    #[error("funding window must be at least one block")]
    NoFundingWindow,
    /// The funding window is longer than the protocol allows.
    #[error("funding window of {0} blocks is above the protocol's maximum of {MAX_FUNDING_WINDOW_BLOCKS}")]
    FundingWindowTooLong(u64),
    /// Neither party deposits anything: nothing could ever be paid.
    #[error("a channel needs a deposit")]
    NoDeposit,
    /// A tariff whose encoding would not name it exactly, or (checked by gateways) whose clock
    /// this gateway cannot keep alike.
    #[error(transparent)]
    Tariff(#[from] TariffError),
}

impl ChannelParams {
    /// The channel id: SHA-256 over the 32-byte-word encoding in `specs/encoding.md`.
    pub fn channel_id(&self) -> ChannelId {
        ChannelId(self.encode().sha256())
    }

    /// The parameter encoding, as hashed into the channel id.
    pub fn encode(&self) -> Words {
        let mut w = Words::with_capacity(14);
        w.bytes32(&PARAMS_DOMAIN)
            .address(&self.party_a.address().0)
            .address(&self.party_b.address().0)
            .bytes32(&self.nonce)
            .uint(self.deposit_a.0)
            .uint(self.deposit_b.0)
            .uint(self.challenge_window_blocks)
            .uint(self.funding_window_blocks)
            .uint(u64::from(self.interval_seconds))
            .uint(u64::from(self.tolerance.absolute_wh))
            .uint(u64::from(self.tolerance.permille))
            .uint(self.opened_at.0)
            .bytes32(&self.terms_digest());
        w
    }

    /// The channel's terms as words: the tariff's, then the evidence's when a meter is named
    /// (`specs/encoding.md`, "Terms"). How the terms travel to a contract, which checks them
    /// against their digest in the parameters and publishes them.
    pub fn terms_words(&self) -> Vec<u8> {
        let mut bytes = self.tariff.words();
        if let Some(e) = self.evidence.encoded() {
            bytes.extend_from_slice(e.as_bytes());
        }
        bytes
    }

    /// The terms' digest, the last word of the parameters: the tariff's digest when every
    /// figure is a party's word.
    pub fn terms_digest(&self) -> [u8; 32] {
        match self.evidence.encoded() {
            None => self.tariff.digest(),
            Some(_) => sha2::Sha256::digest(self.terms_words()).into(),
        }
    }

    /// The tariff and the evidence from the terms' words.
    pub fn terms_from_words(bytes: &[u8]) -> Result<(Tariff, Evidence), TariffError> {
        let len = Tariff::words_len(bytes)?.min(bytes.len());
        let tariff = Tariff::from_words(&bytes[..len])?;
        let evidence = Evidence::from_words(&bytes[len..])?;
        Ok((tariff, evidence))
    }

    /// The checks every party applies, whatever its policy.
    pub fn validate(&self, min_challenge_window: u64) -> Result<(), ParamsError> {
        if self.party_a == self.party_b {
            return Err(ParamsError::SameParty);
        }
        let total = self
            .deposit_a
            .checked_add(self.deposit_b)
            .ok_or(ParamsError::DepositOverflow)?;
        if total == Amount(0) {
            return Err(ParamsError::NoDeposit);
        }
        let secs = self.interval_seconds;
        if secs == 0 || secs > 3600 || 3600 % secs != 0 {
            return Err(ParamsError::BadInterval(secs));
        }
        if self.challenge_window_blocks < min_challenge_window {
            return Err(ParamsError::ChallengeWindowTooShort {
                got: self.challenge_window_blocks,
                min: min_challenge_window,
            });
        }
        if self.challenge_window_blocks > MAX_CHALLENGE_WINDOW_BLOCKS {
            return Err(ParamsError::ChallengeWindowTooLong(
                self.challenge_window_blocks,
            ));
        }
        if let Tariff::Zoned(z) = &self.tariff {
            Tariff::check_names(z)?;
        }
        if self.funding_window_blocks == 0 {
            return Err(ParamsError::NoFundingWindow);
        }
        if self.funding_window_blocks > MAX_FUNDING_WINDOW_BLOCKS {
            return Err(ParamsError::FundingWindowTooLong(
                self.funding_window_blocks,
            ));
        }
        Ok(())
    }

    /// Total money locked in the channel; every state's balances add up to it.
    pub fn total_deposit(&self) -> Amount {
        // `validate` has checked that this does not overflow.
        Amount(self.deposit_a.0.saturating_add(self.deposit_b.0))
    }

    /// Which party `node` is, if any.
    pub fn party_of(&self, node: &NodeId) -> Option<Party> {
        if *node == self.party_a {
            Some(Party::A)
        } else if *node == self.party_b {
            Some(Party::B)
        } else {
            None
        }
    }

    pub fn node(&self, party: Party) -> &NodeId {
        match party {
            Party::A => &self.party_a,
            Party::B => &self.party_b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_is_the_larger_of_absolute_and_relative() {
        let t = MeterTolerance {
            absolute_wh: 5,
            permille: 20,
        };
        assert!(t.accepts(WattHours(105), WattHours(100)));
        assert!(!t.accepts(WattHours(106), WattHours(100)));
        assert!(t.accepts(WattHours(1_020), WattHours(1_000)));
        assert!(!t.accepts(WattHours(1_021), WattHours(1_000)));
        assert!(!t.accepts(WattHours(979), WattHours(1_000)));
        assert!(t.accepts(WattHours(980), WattHours(1_000)));
    }

    fn params(tariff: Tariff, evidence: Evidence) -> ChannelParams {
        let key = |b| crate::Signer::new(&[b; 32], &[b; 32]).unwrap().id();
        ChannelParams {
            party_a: key(1),
            party_b: key(2),
            nonce: [7; 32],
            deposit_a: Amount(5_000_000),
            deposit_b: Amount(1),
            challenge_window_blocks: 30,
            funding_window_blocks: 60,
            interval_seconds: 900,
            tolerance: MeterTolerance {
                absolute_wh: 5,
                permille: 20,
            },
            opened_at: IntervalIndex(1),
            tariff,
            evidence,
        }
    }

    fn meters() -> Evidence {
        let key = |b| crate::Signer::new(&[b; 32], &[b; 32]).unwrap().id();
        Evidence::signed(key(11), key(12))
    }

    fn bincode<T: Serialize>(v: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap()
    }

    fn decoded(bytes: &[u8]) -> Result<ChannelParams, bincode::error::DecodeError> {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard()).map(|(p, _)| p)
    }

    /// The parameters as they were stored and sent before evidence was a term.
    #[derive(Serialize)]
    struct Before {
        party_a: NodeId,
        party_b: NodeId,
        nonce: [u8; 32],
        deposit_a: Amount,
        deposit_b: Amount,
        challenge_window_blocks: u64,
        funding_window_blocks: u64,
        interval_seconds: u32,
        tolerance: MeterTolerance,
        opened_at: IntervalIndex,
        tariff: Tariff,
    }

    #[test]
    fn parameters_without_evidence_keep_their_encoding_and_id() {
        let p = params(Tariff::Flat(PricePerKwh(150_000)), Evidence::NONE);
        let before = Before {
            party_a: p.party_a,
            party_b: p.party_b,
            nonce: p.nonce,
            deposit_a: p.deposit_a,
            deposit_b: p.deposit_b,
            challenge_window_blocks: p.challenge_window_blocks,
            funding_window_blocks: p.funding_window_blocks,
            interval_seconds: p.interval_seconds,
            tolerance: p.tolerance,
            opened_at: p.opened_at,
            tariff: p.tariff.clone(),
        };
        // Records and messages written before read as they were, under the same id.
        assert_eq!(bincode(&p), bincode(&before));
        assert_eq!(decoded(&bincode(&before)).unwrap(), p);
        assert_eq!(p.terms_digest(), p.tariff.digest());
        assert_eq!(p.terms_words(), p.tariff.words());
    }

    #[test]
    fn evidence_is_part_of_the_id_and_round_trips() {
        let tariff = Tariff::Flat(PricePerKwh(150_000));
        let plain = params(tariff.clone(), Evidence::NONE);
        let signed = params(tariff.clone(), meters());
        assert_ne!(plain.channel_id(), signed.channel_id());
        let only_a = params(
            tariff,
            Evidence {
                meter_a: meters().meter_a,
                meter_b: None,
            },
        );
        assert_ne!(only_a.channel_id(), signed.channel_id());
        for p in [&plain, &signed, &only_a] {
            assert_eq!(&decoded(&bincode(p)).unwrap(), p);
            let (t, e) = ChannelParams::terms_from_words(&p.terms_words()).unwrap();
            assert_eq!((&t, &e), (&p.tariff, &p.evidence));
        }
        assert_eq!(signed.terms_words().len(), 32 * (4 + EVIDENCE_WORDS));
    }

    #[test]
    fn malformed_terms_are_refused() {
        let signed = params(Tariff::Flat(PricePerKwh(1)), meters());
        let words = signed.terms_words();
        // Evidence cut short, with a word too many, in another domain, or naming no meter.
        assert!(ChannelParams::terms_from_words(&words[..words.len() - 1]).is_err());
        let mut longer = words.clone();
        longer.extend_from_slice(&[0; 32]);
        assert!(ChannelParams::terms_from_words(&longer).is_err());
        let mut domain = words.clone();
        domain[4 * 32] ^= 1;
        assert!(ChannelParams::terms_from_words(&domain).is_err());
        let mut empty = words.clone();
        empty[5 * 32..].fill(0);
        assert!(ChannelParams::terms_from_words(&empty).is_err());
        let mut not_a_key = words.clone();
        not_a_key[5 * 32..7 * 32].fill(0xff);
        assert!(ChannelParams::terms_from_words(&not_a_key).is_err());
        // The fifth variant with no meter is not a second encoding of the plain tariff.
        let repr = ParamsRepr::from(signed.clone());
        let ParamsRepr { terms, .. } = repr;
        assert!(matches!(terms, TermsRepr::WithEvidence(..)));
        let mut bytes = bincode(&signed);
        let evidence_at = bytes.len() - 2;
        // Both meters' `Some` tags, at the end of the encoding, made `None`.
        let tail = bincode(&Evidence::NONE);
        let full = bincode(&meters());
        bytes.truncate(bytes.len() - full.len());
        bytes.extend_from_slice(&tail);
        assert!(evidence_at > 0);
        assert!(decoded(&bytes).is_err(), "with-evidence naming no meter");
    }
}
