//! Consent to terms: which channels a neighbour may open with us, on which terms, and which
//! wait for our owner. A gateway never signs or funds a channel its owner's policy does not
//! allow (specs/protocol.md, "Opening").

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::crypto::NodeId;
use crate::params::ChannelParams;
use crate::types::{Amount, ChannelId, PricePerKwh};
use crate::wire::OpenChannel;

/// Whose channel proposals a gateway takes up without asking its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acceptance {
    /// Anyone's, when its terms are within the limits.
    Anyone,
    /// Only the listed keys' (within the limits); anyone else's is refused.
    Listed,
    /// The listed keys' at once; anyone else's (within the limits) waits for the owner's
    /// `accept` or `reject`, and expires after [`AcceptPolicy::offer_ttl_ms`].
    Ask,
}

/// The terms a gateway accepts in a channel a neighbour proposes. Terms outside them are
/// refused at once, whoever proposes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptPolicy {
    pub from: Acceptance,
    /// Keys whose proposals need no owner's answer (within the limits).
    pub listed: Vec<NodeId>,
    /// The most this gateway deposits into a channel a neighbour proposes.
    pub max_deposit: Amount,
    /// The most it deposits as thousandths of its balance outside channels (when the host has
    /// told the node its balance: [`crate::Input::Balance`]).
    pub max_deposit_permille: u16,
    /// The challenge windows it accepts, in blocks (inclusive).
    pub challenge_window_blocks: (u64, u64),
    /// The funding windows it accepts, in blocks (inclusive).
    pub funding_window_blocks: (u64, u64),
    /// Every price of the tariff must lie in this range (inclusive), for example between the
    /// household's feed-in tariff and its retail price.
    pub price: (PricePerKwh, PricePerKwh),
    /// The largest meter tolerance it accepts: watt-hours, and thousandths of a reading.
    pub max_tolerance_wh: u32,
    pub max_tolerance_permille: u16,
    /// How long a proposal waits for the owner's answer.
    pub offer_ttl_ms: u64,
    /// Proposals waiting at once; more are refused (a stranger cannot fill memory).
    pub max_offers: usize,
    /// The market this gateway runs, if it is a market node: a market channel is accepted
    /// only with exactly these terms, and only by the market node.
    pub market: Option<Box<crate::market::MarketTerms>>,
    /// A market node's most members: channels on its market being opened, funded or open (not
    /// closing, disputed or closed). A home holds at most one of them.
    pub max_market_members: usize,
    /// Whether the proposer's readings must be signed by its meter (`[accept] evidence =
    /// "signed"`); otherwise a proposal may leave them its word, and `status` says so.
    pub require_signed: bool,
    /// This gateway's meter key, when its meter signs its readings: a proposal that names a
    /// meter for us must name this one.
    pub own_meter: Option<NodeId>,
    /// Neighbours' meters the owner knows (`[[peers]] meter`): a proposal from one of them must
    /// name that meter as its own.
    pub known_meters: BTreeMap<NodeId, NodeId>,
}

impl Default for AcceptPolicy {
    /// Ask the owner; deposit at most 10 tokens and a quarter of the balance; windows of 10 to
    /// 10,000 blocks (challenge) and 1 to 10,000 (funding); prices up to 1 token a kWh; a
    /// meter tolerance of at most 50 Wh and 5 %; proposals wait a day.
    fn default() -> AcceptPolicy {
        AcceptPolicy {
            from: Acceptance::Ask,
            listed: Vec::new(),
            max_deposit: Amount(10 * Amount::UNITS_PER_TOKEN),
            max_deposit_permille: 250,
            challenge_window_blocks: (10, 10_000),
            funding_window_blocks: (1, 10_000),
            price: (PricePerKwh(0), PricePerKwh(Amount::UNITS_PER_TOKEN)),
            max_tolerance_wh: 50,
            max_tolerance_permille: 50,
            offer_ttl_ms: 24 * 3_600_000,
            max_offers: 64,
            market: None,
            max_market_members: 1_000,
            require_signed: false,
            own_meter: None,
            known_meters: BTreeMap::new(),
        }
    }
}

impl AcceptPolicy {
    /// Accepts every channel whose terms pass `ChannelParams::validate`: for tests and
    /// benchmarks of the protocol, where consent is not what is tested.
    pub fn anyone() -> AcceptPolicy {
        AcceptPolicy {
            from: Acceptance::Anyone,
            max_deposit: Amount(u64::MAX),
            max_deposit_permille: 1000,
            challenge_window_blocks: (0, u64::MAX),
            funding_window_blocks: (0, u64::MAX),
            price: (PricePerKwh(0), PricePerKwh(u64::MAX)),
            max_tolerance_wh: u32::MAX,
            max_tolerance_permille: u16::MAX,
            ..AcceptPolicy::default()
        }
    }

    /// Whether a proposal from `from` is taken up at once (`true`) or waits for the owner
    /// (`false`); `Err` with the reason when it is refused outright.
    pub fn decide(&self, from: &NodeId) -> Result<bool, TermsRefused> {
        let listed = self.listed.contains(from);
        match self.from {
            Acceptance::Anyone => Ok(true),
            Acceptance::Listed if listed => Ok(true),
            Acceptance::Listed => Err(TermsRefused::NotListed),
            Acceptance::Ask => Ok(listed),
        }
    }

    /// Checks the terms of a channel in which we are party B, with `balance` our tokens outside
    /// channels if known. The reason names the term and the limit.
    pub fn check_terms(
        &self,
        p: &ChannelParams,
        balance: Option<Amount>,
    ) -> Result<(), TermsRefused> {
        let ceiling = self.deposit_ceiling(balance);
        if p.deposit_b > ceiling {
            return Err(TermsRefused::Deposit {
                asked: p.deposit_b,
                ceiling,
            });
        }
        let within = |v: u64, (lo, hi): (u64, u64)| lo <= v && v <= hi;
        if !within(p.challenge_window_blocks, self.challenge_window_blocks) {
            let (lo, hi) = self.challenge_window_blocks;
            return Err(TermsRefused::ChallengeWindow {
                asked: p.challenge_window_blocks,
                lo,
                hi,
            });
        }
        if !within(p.funding_window_blocks, self.funding_window_blocks) {
            let (lo, hi) = self.funding_window_blocks;
            return Err(TermsRefused::FundingWindow {
                asked: p.funding_window_blocks,
                lo,
                hi,
            });
        }
        if let Some(terms) = p.tariff.market() {
            if self.market.as_deref() != Some(terms) {
                return Err(TermsRefused::Market);
            }
        }
        let (low, high) = p.tariff.price_range();
        let (min, max) = self.price;
        if low < min || high > max {
            return Err(TermsRefused::Prices {
                low,
                high,
                min,
                max,
            });
        }
        if p.tolerance.absolute_wh > self.max_tolerance_wh
            || p.tolerance.permille > self.max_tolerance_permille
        {
            return Err(TermsRefused::Tolerance {
                wh: p.tolerance.absolute_wh,
                permille: p.tolerance.permille,
                max_wh: self.max_tolerance_wh,
                max_permille: self.max_tolerance_permille,
            });
        }
        self.check_evidence(p)
    }

    /// The evidence a proposal asks for: our meter named as ours, the proposer's as the owner
    /// knows it, and the proposer's readings signed when the owner requires it (or knows its
    /// meter).
    fn check_evidence(&self, p: &ChannelParams) -> Result<(), TermsRefused> {
        if let Some(named) = p.evidence.meter_b {
            if self.own_meter != Some(named) {
                return Err(TermsRefused::NotOurMeter {
                    named: meter_hex(&named),
                    ours: self.own_meter.as_ref().map(meter_hex),
                });
            }
        }
        let known = self.known_meters.get(&p.party_a);
        match (p.evidence.meter_a, known) {
            (None, _) if self.require_signed || known.is_some() => Err(TermsRefused::Unsigned),
            (Some(named), Some(known)) if named != *known => Err(TermsRefused::NotTheirMeter {
                named: meter_hex(&named),
                known: meter_hex(known),
            }),
            _ => Ok(()),
        }
    }

    /// The most we deposit into a neighbour's channel now.
    pub fn deposit_ceiling(&self, balance: Option<Amount>) -> Amount {
        match balance {
            Some(b) => {
                let share = u128::from(b.0) * u128::from(self.max_deposit_permille) / 1000;
                Amount(
                    u64::try_from(share)
                        .unwrap_or(u64::MAX)
                        .min(self.max_deposit.0),
                )
            }
            None => self.max_deposit,
        }
    }
}

fn meter_hex(m: &NodeId) -> String {
    hex::encode(m.to_bytes())
}

/// Why a neighbour's proposed channel is refused under the accept policy: the term and the
/// limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TermsRefused {
    #[error("this gateway accepts channels from listed neighbours only")]
    NotListed,
    #[error("a market channel for a market this gateway does not run, or on other terms")]
    Market,
    #[error(
        "this home already has a channel with the market; leave the market before joining again"
    )]
    MarketMember,
    #[error("the market has its most members ({max}); try another market or later")]
    MarketFull { max: usize },
    #[error(
        "it asks this gateway to deposit {asked}; it deposits at most {ceiling} in a channel a neighbour proposes"
    )]
    Deposit { asked: Amount, ceiling: Amount },
    #[error("a challenge window of {asked} blocks; this gateway accepts {lo} to {hi}")]
    ChallengeWindow { asked: u64, lo: u64, hi: u64 },
    #[error("a funding window of {asked} blocks; this gateway accepts {lo} to {hi}")]
    FundingWindow { asked: u64, lo: u64, hi: u64 },
    #[error("prices from {low} to {high}; this gateway accepts {min} to {max}")]
    Prices {
        low: PricePerKwh,
        high: PricePerKwh,
        min: PricePerKwh,
        max: PricePerKwh,
    },
    #[error(
        "a meter tolerance of {wh} Wh or {permille} permille; this gateway accepts at most {max_wh} Wh and {max_permille} permille"
    )]
    Tolerance {
        wh: u32,
        permille: u16,
        max_wh: u32,
        max_permille: u16,
    },
    #[error(
        "your readings would be your word alone; this gateway requires them signed by your meter: propose again with `--evidence signed` and a signing meter"
    )]
    Unsigned,
    /// Meters are named by their keys in hex.
    #[error(
        "it names meter {named} as this gateway's; {}",
        match ours {
            Some(m) => format!("this gateway's meter is {m}"),
            None => "this gateway's meter does not sign its readings: propose with `--evidence none`".to_string(),
        }
    )]
    NotOurMeter { named: String, ours: Option<String> },
    #[error("it names meter {named} as yours; this gateway's owner knows your meter as {known}")]
    NotTheirMeter { named: String, known: String },
}

/// A neighbour's channel proposal waiting for the owner's answer. Nothing is signed or stored
/// for it: a restart forgets it, and the neighbour proposes again when it reconnects.
#[derive(Clone, Debug)]
pub struct Offer {
    pub id: ChannelId,
    pub peer: NodeId,
    pub params: Arc<ChannelParams>,
    /// When it arrived (the node's clock).
    pub received_ms: u64,
    /// The proposal itself, A's signature on version 0 checked.
    pub(crate) open: Box<OpenChannel>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::MeterTolerance;
    use crate::tariff::Tariff;
    use crate::types::IntervalIndex;

    fn params() -> ChannelParams {
        let key = |b| crate::Signer::new(&[b; 32], &[b; 32]).unwrap().id();
        ChannelParams {
            party_a: key(1),
            party_b: key(2),
            nonce: [0; 32],
            deposit_a: Amount(5_000_000),
            deposit_b: Amount(5_000_000),
            challenge_window_blocks: 30,
            funding_window_blocks: 60,
            interval_seconds: 900,
            tolerance: MeterTolerance {
                absolute_wh: 5,
                permille: 20,
            },
            opened_at: IntervalIndex(1),
            tariff: Tariff::Flat(PricePerKwh(200_000)),
            evidence: Default::default(),
        }
    }

    #[test]
    fn every_term_outside_the_policy_is_refused_with_its_limit() {
        let policy = AcceptPolicy::default();
        assert_eq!(policy.check_terms(&params(), None), Ok(()));
        type Change = fn(&mut ChannelParams);
        let cases: [(Change, &str); 6] = [
            (|p| p.deposit_b = Amount(89_000_000), "deposit 89.000000"),
            (|p| p.challenge_window_blocks = u64::MAX, "challenge window"),
            (|p| p.funding_window_blocks = 0, "funding window"),
            (
                |p| p.tariff = Tariff::Flat(PricePerKwh(1_000_000_000_000)),
                "prices from",
            ),
            (|p| p.tolerance.permille = 1000, "meter tolerance"),
            (|p| p.tolerance.absolute_wh = 10_000, "meter tolerance"),
        ];
        for (change, why) in cases {
            let mut p = params();
            change(&mut p);
            let err = policy.check_terms(&p, None).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn the_evidence_a_proposal_names_is_checked_against_what_we_know() {
        use crate::params::Evidence;
        let meter = |b| crate::Signer::new(&[b; 32], &[b; 32]).unwrap().id();
        let (theirs, ours, other) = (meter(11), meter(12), meter(13));
        let with = |e: Evidence| ChannelParams {
            evidence: e,
            ..params()
        };
        let signed = with(Evidence::signed(theirs, ours));
        let refused = |policy: &AcceptPolicy, p: &ChannelParams| {
            policy.check_terms(p, None).unwrap_err().to_string()
        };
        // A gateway whose meter does not sign cannot be bound to signed readings.
        let plain = AcceptPolicy::default();
        assert!(refused(&plain, &signed).contains("does not sign its readings"));
        assert_eq!(plain.check_terms(&params(), None), Ok(()), "word for word");
        // Our meter named as ours, theirs named as theirs.
        let mut policy = AcceptPolicy {
            own_meter: Some(ours),
            ..AcceptPolicy::default()
        };
        assert_eq!(policy.check_terms(&signed, None), Ok(()));
        let wrong_ours = with(Evidence::signed(theirs, other));
        assert!(refused(&policy, &wrong_ours).contains("this gateway's meter is"));
        // Only theirs signed: fine, ours may stay our word.
        let only_theirs = with(Evidence {
            meter_a: Some(theirs),
            meter_b: None,
        });
        assert_eq!(policy.check_terms(&only_theirs, None), Ok(()));
        // The owner requires signed readings: the neighbour's word alone is refused.
        policy.require_signed = true;
        assert!(refused(&policy, &params()).contains("your word alone"));
        policy.require_signed = false;
        // The owner knows their meter: another key, or none, is refused.
        policy.known_meters.insert(params().party_a, theirs);
        assert_eq!(policy.check_terms(&signed, None), Ok(()));
        let wrong_theirs = with(Evidence::signed(other, ours));
        assert!(refused(&policy, &wrong_theirs).contains("knows your meter as"));
        assert!(refused(&policy, &params()).contains("your word alone"));
    }

    #[test]
    fn the_deposit_is_bounded_by_a_share_of_the_balance_too() {
        let policy = AcceptPolicy::default();
        // A quarter of 8 tokens is 2: a deposit of 5 is too much, though under the 10 cap.
        let err = policy
            .check_terms(&params(), Some(Amount(8_000_000)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 2.000000"), "{err}");
        assert_eq!(
            policy.check_terms(&params(), Some(Amount(20_000_000))),
            Ok(())
        );
    }

    #[test]
    fn who_is_taken_up_at_once_and_who_waits() {
        let (listed, stranger) = (params().party_a, params().party_b);
        let mut policy = AcceptPolicy {
            listed: vec![listed],
            ..AcceptPolicy::default()
        };
        assert_eq!(policy.decide(&listed), Ok(true));
        assert_eq!(policy.decide(&stranger), Ok(false));
        policy.from = Acceptance::Listed;
        assert!(policy.decide(&stranger).is_err());
        policy.from = Acceptance::Anyone;
        assert_eq!(policy.decide(&stranger), Ok(true));
    }
}
