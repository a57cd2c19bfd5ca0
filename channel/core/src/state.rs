//! Channel states: the fields both parties sign, their encoding and digest, and the rules for
//! the one transition the protocol allows (settling one interval's energy at the tariff).

use serde::{Deserialize, Serialize};

use crate::abi::{domain_tag, Words};
use crate::params::ChannelParams;
use crate::types::{Amount, ChannelId, IntervalIndex, Party, PricePerKwh, Version, WattHours};

/// The domain tag of a signed state; it names the protocol version (see `specs/encoding.md`).
pub const STATE_DOMAIN: [u8; 32] = domain_tag("gridchan.state.v1");

/// One balance state of a channel. It counts only with both parties' signatures
/// ([`crate::SignedState`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub channel_id: ChannelId,
    pub version: Version,
    pub balance_a: Amount,
    pub balance_b: Amount,
    /// Cumulative energy A delivered to B since the channel opened.
    pub energy_a_to_b: WattHours,
    /// Cumulative energy B delivered to A since the channel opened.
    pub energy_b_to_a: WattHours,
    /// The last interval settled in this channel; later trades need later intervals.
    pub last_interval: IntervalIndex,
    /// A final state closes the channel cooperatively: the ledger pays it out at once.
    pub is_final: bool,
}

/// One interval's trade, as a proposal claims it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trade {
    pub seller: Party,
    pub interval: IntervalIndex,
    pub energy: WattHours,
    pub price: PricePerKwh,
    pub amount: Amount,
}

/// Why a proposed state is not a valid successor of the current one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The state names another channel.
    #[error("state is for another channel")]
    WrongChannel,
    /// The version is not the next one.
    #[error("expected version {expected}, got {got}")]
    UnexpectedVersion { expected: u64, got: u64 },
    /// A signature is missing, malformed or from the wrong key.
    #[error("bad signature")]
    BadSignature,
    /// The balances do not add up to the deposits: money created or destroyed.
    #[error("balances add up to {got}, the channel holds {expected}")]
    MoneyNotConserved { expected: u64, got: u64 },
    /// A balance or a cumulative energy counter would overflow.
    #[error("a balance or energy counter would overflow")]
    Overflow,
    /// The buyer's balance cannot pay for the trade.
    #[error("the buyer's balance cannot pay {needed}")]
    InsufficientBalance { needed: u64 },
    /// A cumulative energy counter went down.
    #[error("cumulative energy went backwards")]
    EnergyWentBackwards,
    /// Energy moved both ways in one update.
    #[error("energy moved both ways in one update")]
    TwoWayEnergy,
    /// The proposer is not the party that is owed (the seller).
    #[error("only the seller proposes")]
    ProposerNotSeller,
    /// The interval is not later than the last settled one.
    #[error("interval {got} is not after the last settled interval {last}")]
    StaleInterval { last: u64, got: u64 },
    /// The money moved is not the tariff's price for the energy.
    #[error("price off the tariff: expected {expected} micro-units, got {got}")]
    PriceOffTariff { expected: u64, got: u64 },
    /// The billed energy exceeds everything the buyer's meter imported in the interval.
    #[error("billed {billed} Wh but the buyer's meter imported {imported} Wh")]
    EnergyBeyondImport { billed: u64, imported: u64 },
    /// The billed energy differs from the buyer's own reading by more than the tolerance.
    #[error("billed {billed} Wh, the buyer's meter says {reading} Wh: outside the tolerance")]
    OutsideTolerance { billed: u64, reading: u64 },
    /// The buyer has no reading for the interval (too old, or it never arrived in time).
    #[error("no meter reading for interval {0}")]
    NoMeterReading(u64),
    /// A final state changed balances, energy or interval.
    #[error("a final state must not move money or energy")]
    FinalChangesState,
    /// An update that moves nothing.
    #[error("the update settles no energy")]
    EmptyUpdate,
    /// The receiver already signed a state at or above this version (the proposals crossed
    /// unseen, across a reconnect or a store failure): propose again above `highest`.
    #[error("version already used: propose above {highest}")]
    VersionBurned { highest: u64 },
    /// The channel is not open for updates (opening, closing, closed, or frozen by a store
    /// failure).
    #[error("channel is not accepting updates")]
    NotAccepting,
    /// The channel parameters are unacceptable.
    #[error("unacceptable channel parameters: {0}")]
    BadParams(String),
}

impl Refusal {
    /// The reason's number on the wire (specs/protocol.md, "Payload encoding"): its place in
    /// the spec's table, pinned by `wire::tests::variant_numbers_are_the_specs`.
    pub fn variant(&self) -> u32 {
        match self {
            Refusal::WrongChannel => 0,
            Refusal::UnexpectedVersion { .. } => 1,
            Refusal::BadSignature => 2,
            Refusal::MoneyNotConserved { .. } => 3,
            Refusal::Overflow => 4,
            Refusal::InsufficientBalance { .. } => 5,
            Refusal::EnergyWentBackwards => 6,
            Refusal::TwoWayEnergy => 7,
            Refusal::ProposerNotSeller => 8,
            Refusal::StaleInterval { .. } => 9,
            Refusal::PriceOffTariff { .. } => 10,
            Refusal::EnergyBeyondImport { .. } => 11,
            Refusal::OutsideTolerance { .. } => 12,
            Refusal::NoMeterReading(_) => 13,
            Refusal::FinalChangesState => 14,
            Refusal::EmptyUpdate => 15,
            Refusal::VersionBurned { .. } => 16,
            Refusal::NotAccepting => 17,
            Refusal::BadParams(_) => 18,
        }
    }

    /// The reason's name in the spec.
    pub fn name(&self) -> &'static str {
        match self {
            Refusal::WrongChannel => "WrongChannel",
            Refusal::UnexpectedVersion { .. } => "UnexpectedVersion",
            Refusal::BadSignature => "BadSignature",
            Refusal::MoneyNotConserved { .. } => "MoneyNotConserved",
            Refusal::Overflow => "Overflow",
            Refusal::InsufficientBalance { .. } => "InsufficientBalance",
            Refusal::EnergyWentBackwards => "EnergyWentBackwards",
            Refusal::TwoWayEnergy => "TwoWayEnergy",
            Refusal::ProposerNotSeller => "ProposerNotSeller",
            Refusal::StaleInterval { .. } => "StaleInterval",
            Refusal::PriceOffTariff { .. } => "PriceOffTariff",
            Refusal::EnergyBeyondImport { .. } => "EnergyBeyondImport",
            Refusal::OutsideTolerance { .. } => "OutsideTolerance",
            Refusal::NoMeterReading(_) => "NoMeterReading",
            Refusal::FinalChangesState => "FinalChangesState",
            Refusal::EmptyUpdate => "EmptyUpdate",
            Refusal::VersionBurned { .. } => "VersionBurned",
            Refusal::NotAccepting => "NotAccepting",
            Refusal::BadParams(_) => "BadParams",
        }
    }

    /// Whether this refusal is an honest disagreement (meters, balance, timing) that keeps the
    /// connection, rather than a protocol violation that costs the sender its connection.
    pub fn is_disagreement(&self) -> bool {
        matches!(
            self,
            Refusal::EnergyBeyondImport { .. }
                | Refusal::OutsideTolerance { .. }
                | Refusal::NoMeterReading(_)
                | Refusal::VersionBurned { .. }
                | Refusal::NotAccepting
        )
    }
}

impl State {
    /// Version 0: each party holds its deposit, nothing traded.
    pub fn initial(params: &ChannelParams) -> State {
        State {
            channel_id: params.channel_id(),
            version: Version(0),
            balance_a: params.deposit_a,
            balance_b: params.deposit_b,
            energy_a_to_b: WattHours(0),
            energy_b_to_a: WattHours(0),
            last_interval: params.opened_at,
            is_final: false,
        }
    }

    /// The 9-word encoding that is hashed and signed (see `specs/encoding.md`).
    pub fn encode(&self) -> Words {
        let mut w = Words::with_capacity(9);
        w.bytes32(&STATE_DOMAIN)
            .bytes32(&self.channel_id.0)
            .uint(self.version.0)
            .uint(self.balance_a.0)
            .uint(self.balance_b.0)
            .uint(self.energy_a_to_b.0)
            .uint(self.energy_b_to_a.0)
            .uint(self.last_interval.0)
            .boolean(self.is_final);
        w
    }

    /// `sha256(abi.encode(STATE_DOMAIN, channelId, version, ...))`: what both parties sign.
    pub fn digest(&self) -> [u8; 32] {
        self.encode().sha256()
    }

    pub fn balance(&self, party: Party) -> Amount {
        match party {
            Party::A => self.balance_a,
            Party::B => self.balance_b,
        }
    }

    /// Cumulative energy delivered by `party` to the other.
    pub fn energy_from(&self, party: Party) -> WattHours {
        match party {
            Party::A => self.energy_a_to_b,
            Party::B => self.energy_b_to_a,
        }
    }

    /// The state after `seller` delivers `energy` in `interval`, at `version`.
    pub fn settle(
        &self,
        params: &ChannelParams,
        version: Version,
        seller: Party,
        interval: IntervalIndex,
        energy: WattHours,
    ) -> Result<(State, Trade), Refusal> {
        if interval <= self.last_interval {
            return Err(Refusal::StaleInterval {
                last: self.last_interval.0,
                got: interval.0,
            });
        }
        let price = params
            .tariff
            .price_at(interval, params.interval_seconds)
            .ok_or(Refusal::Overflow)?;
        let amount = price.cost(energy).ok_or(Refusal::Overflow)?;
        let buyer = seller.other();
        let mut next = self.clone();
        next.version = version;
        next.last_interval = interval;
        let buyer_balance = self
            .balance(buyer)
            .checked_sub(amount)
            .ok_or(Refusal::InsufficientBalance { needed: amount.0 })?;
        let seller_balance = self
            .balance(seller)
            .checked_add(amount)
            .ok_or(Refusal::Overflow)?;
        let delivered = self
            .energy_from(seller)
            .checked_add(energy)
            .ok_or(Refusal::Overflow)?;
        match seller {
            Party::A => {
                next.balance_a = seller_balance;
                next.balance_b = buyer_balance;
                next.energy_a_to_b = delivered;
            }
            Party::B => {
                next.balance_b = seller_balance;
                next.balance_a = buyer_balance;
                next.energy_b_to_a = delivered;
            }
        }
        let trade = Trade {
            seller,
            interval,
            energy,
            price,
            amount,
        };
        Ok((next, trade))
    }

    /// The final state at `version`: same balances and energy, `is_final` set.
    pub fn finalized(&self, version: Version) -> State {
        let mut next = self.clone();
        next.version = version;
        next.is_final = true;
        next
    }

    /// Checks that `proposed`, made by `proposer`, is a valid successor of this state at
    /// `expected_version`, and returns the trade it claims (`None` for a final state). Meter
    /// checks are the caller's: this checks structure, money and the tariff.
    pub fn check_successor(
        &self,
        params: &ChannelParams,
        proposed: &State,
        proposer: Party,
        expected_version: Version,
    ) -> Result<Option<Trade>, Refusal> {
        if proposed.channel_id != self.channel_id {
            return Err(Refusal::WrongChannel);
        }
        if proposed.version != expected_version {
            return Err(Refusal::UnexpectedVersion {
                expected: expected_version.0,
                got: proposed.version.0,
            });
        }
        let total = params.total_deposit().0;
        let sum = proposed.balance_a.0.checked_add(proposed.balance_b.0);
        if sum != Some(total) {
            return Err(Refusal::MoneyNotConserved {
                expected: total,
                got: sum.unwrap_or(u64::MAX),
            });
        }
        if proposed.energy_a_to_b < self.energy_a_to_b
            || proposed.energy_b_to_a < self.energy_b_to_a
        {
            return Err(Refusal::EnergyWentBackwards);
        }
        let from_a = proposed.energy_a_to_b.0 - self.energy_a_to_b.0;
        let from_b = proposed.energy_b_to_a.0 - self.energy_b_to_a.0;
        if proposed.is_final {
            let unchanged = from_a == 0
                && from_b == 0
                && proposed.balance_a == self.balance_a
                && proposed.last_interval == self.last_interval;
            return if unchanged {
                Ok(None)
            } else {
                Err(Refusal::FinalChangesState)
            };
        }
        let (seller, energy) = match (from_a, from_b) {
            (0, 0) => return Err(Refusal::EmptyUpdate),
            (e, 0) => (Party::A, e),
            (0, e) => (Party::B, e),
            _ => return Err(Refusal::TwoWayEnergy),
        };
        if seller != proposer {
            return Err(Refusal::ProposerNotSeller);
        }
        let (expected, trade) = self.settle(
            params,
            expected_version,
            seller,
            proposed.last_interval,
            WattHours(energy),
        )?;
        if expected != *proposed {
            return Err(Refusal::PriceOffTariff {
                expected: trade.amount.0,
                got: proposed
                    .balance(seller)
                    .0
                    .saturating_sub(self.balance(seller).0),
            });
        }
        Ok(Some(trade))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Signer;
    use crate::params::MeterTolerance;
    use crate::tariff::Tariff;

    fn params() -> ChannelParams {
        let a = Signer::new(&[1; 32], &[0; 32]).unwrap().id();
        let b = Signer::new(&[2; 32], &[0; 32]).unwrap().id();
        ChannelParams {
            party_a: a,
            party_b: b,
            nonce: [0; 32],
            deposit_a: Amount(1_000),
            deposit_b: Amount(1_000),
            challenge_window_blocks: 10,
            funding_window_blocks: 10,
            interval_seconds: 900,
            tolerance: MeterTolerance {
                absolute_wh: 0,
                permille: 0,
            },
            opened_at: IntervalIndex(10),
            tariff: Tariff::Flat(PricePerKwh(1_000)),
        }
    }

    #[test]
    fn settling_moves_the_price_of_the_energy() {
        let p = params();
        let s0 = State::initial(&p);
        let (s1, trade) = s0
            .settle(&p, Version(1), Party::B, IntervalIndex(11), WattHours(300))
            .unwrap();
        assert_eq!(trade.amount, Amount(300));
        assert_eq!((s1.balance_a, s1.balance_b), (Amount(700), Amount(1_300)));
        assert_eq!(
            s0.check_successor(&p, &s1, Party::B, Version(1)),
            Ok(Some(trade))
        );
    }

    #[test]
    fn a_buyer_cannot_go_negative() {
        let p = params();
        let s0 = State::initial(&p);
        assert_eq!(
            s0.settle(
                &p,
                Version(1),
                Party::A,
                IntervalIndex(11),
                WattHours(1_001)
            ),
            Err(Refusal::InsufficientBalance { needed: 1_001 })
        );
    }

    #[test]
    fn an_energy_counter_cannot_overflow() {
        let p = params();
        let mut s0 = State::initial(&p);
        s0.energy_a_to_b = WattHours(u64::MAX);
        let mut free = p.clone();
        free.tariff = Tariff::Flat(PricePerKwh(0));
        assert_eq!(
            s0.settle(&free, Version(1), Party::A, IntervalIndex(11), WattHours(1)),
            Err(Refusal::Overflow)
        );
    }

    #[test]
    fn a_stale_or_empty_update_is_refused() {
        let p = params();
        let s0 = State::initial(&p);
        assert!(matches!(
            s0.settle(&p, Version(1), Party::A, IntervalIndex(10), WattHours(1)),
            Err(Refusal::StaleInterval { .. })
        ));
        let mut same = s0.clone();
        same.version = Version(1);
        assert_eq!(
            s0.check_successor(&p, &same, Party::A, Version(1)),
            Err(Refusal::EmptyUpdate)
        );
    }

    #[test]
    fn a_final_state_keeps_everything() {
        let p = params();
        let s0 = State::initial(&p);
        let f = s0.finalized(Version(1));
        assert_eq!(s0.check_successor(&p, &f, Party::B, Version(1)), Ok(None));
    }
}
