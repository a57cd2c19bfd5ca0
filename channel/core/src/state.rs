//! Channel states: the fields both parties sign, their encoding and digest, and the rules for
//! the one transition the protocol allows (settling one interval's energy at the tariff).

use serde::{Deserialize, Serialize};

use crate::abi::{domain_tag, Words};
use crate::params::ChannelParams;
use crate::types::{Amount, ChannelId, IntervalIndex, Party, PricePerKwh, Version, WattHours};

pub use crate::refusal::Refusal;

/// The domain tag of a signed state; it names the protocol version (see `specs/encoding.md`).
pub const STATE_DOMAIN: [u8; 32] = domain_tag("gridchan.state.v2");

/// The domain tag of a state whose channel was topped up or paid a withdrawal while open: the
/// ten words of version 2 and the four of its [`Funds`] (`specs/encoding.md`, "State").
pub const STATE_DOMAIN_V3: [u8; 32] = domain_tag("gridchan.state.v3");

/// Money a channel gained or paid out while open, per party, cumulative since it opened: what
/// each party topped up on the ledger and what the ledger paid each a withdrawal of. A state's
/// balances add up to the deposits plus the top-ups less the withdrawals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Funds {
    /// Added by party A and B (indexed by [`Party::index`]).
    pub topped_up: [Amount; 2],
    /// Taken out by party A and B.
    pub withdrawn: [Amount; 2],
}

impl Funds {
    pub fn is_zero(&self) -> bool {
        *self == Funds::default()
    }

    /// The money a state with these funds holds in a channel of `deposits`; `None` if it does
    /// not fit or is negative.
    pub fn held(&self, deposits: Amount) -> Option<Amount> {
        let added = self.topped_up[0].0.checked_add(self.topped_up[1].0)?;
        let taken = self.withdrawn[0].0.checked_add(self.withdrawn[1].0)?;
        deposits
            .0
            .checked_add(added)?
            .checked_sub(taken)
            .map(Amount)
    }
}

/// One balance state of a channel. It counts only with both parties' signatures
/// ([`crate::SignedState`]).
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// The digest of the market book whose clearing this state settles (a market channel's
    /// update, `specs/market.md`); [`NO_BOOK`] for a tariff trade and version 0. A market
    /// state keeps the digest of the last book it settled until the next one.
    pub book: [u8; 32],
    /// Top-ups and withdrawals made while the channel was open; zero in a state from before the
    /// first, whose encoding is then version 2's, byte for byte.
    pub funds: Funds,
}

/// A state's wire and storage form (`specs/protocol.md`, "Payload encoding"): its fields in
/// order with `is_final` as a flags byte (bit 0: final; bit 1: the four [`Funds`] amounts
/// follow the book), so a state whose funds never changed is encoded exactly as before they
/// existed. Human-readable formats get the plain fields.
impl Serialize for State {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        if serializer.is_human_readable() {
            return Readable::from(self.clone()).serialize(serializer);
        }
        let with_funds = !self.funds.is_zero();
        let mut t = serializer.serialize_tuple(if with_funds { 10 } else { 9 })?;
        t.serialize_element(&self.channel_id)?;
        t.serialize_element(&self.version)?;
        t.serialize_element(&self.balance_a)?;
        t.serialize_element(&self.balance_b)?;
        t.serialize_element(&self.energy_a_to_b)?;
        t.serialize_element(&self.energy_b_to_a)?;
        t.serialize_element(&self.last_interval)?;
        t.serialize_element(&(u8::from(self.is_final) | if with_funds { FLAG_FUNDS } else { 0 }))?;
        t.serialize_element(&self.book)?;
        if with_funds {
            t.serialize_element(&self.funds)?;
        }
        t.end()
    }
}

/// Bit 1 of a state's flags byte: its [`Funds`] follow.
const FLAG_FUNDS: u8 = 2;

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<State, D::Error> {
        if deserializer.is_human_readable() {
            return Readable::deserialize(deserializer).map(State::from);
        }
        deserializer.deserialize_tuple(10, StateVisitor)
    }
}

struct StateVisitor;

impl<'de> serde::de::Visitor<'de> for StateVisitor {
    type Value = State;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a channel state")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<State, A::Error> {
        use serde::de::Error;
        let missing = || A::Error::custom("a state ends early");
        let channel_id = seq.next_element()?.ok_or_else(missing)?;
        let version = seq.next_element()?.ok_or_else(missing)?;
        let balance_a = seq.next_element()?.ok_or_else(missing)?;
        let balance_b = seq.next_element()?.ok_or_else(missing)?;
        let energy_a_to_b = seq.next_element()?.ok_or_else(missing)?;
        let energy_b_to_a = seq.next_element()?.ok_or_else(missing)?;
        let last_interval = seq.next_element()?.ok_or_else(missing)?;
        let flags: u8 = seq.next_element()?.ok_or_else(missing)?;
        if flags & !(1 | FLAG_FUNDS) != 0 {
            return Err(A::Error::custom(format!(
                "state flags {flags:#04x}: unknown bits"
            )));
        }
        let book = seq.next_element()?.ok_or_else(missing)?;
        let funds: Funds = if flags & FLAG_FUNDS != 0 {
            let funds: Funds = seq.next_element()?.ok_or_else(missing)?;
            if funds.is_zero() {
                // One state, one encoding: zero funds are written by leaving them out.
                return Err(A::Error::custom("a state's funds flag with no funds"));
            }
            funds
        } else {
            Funds::default()
        };
        Ok(State {
            channel_id,
            version,
            balance_a,
            balance_b,
            energy_a_to_b,
            energy_b_to_a,
            last_interval,
            is_final: flags & 1 != 0,
            book,
            funds,
        })
    }
}

/// [`State`] in human-readable formats: its fields by name, funds only when not zero.
#[derive(Serialize, Deserialize)]
struct Readable {
    channel_id: ChannelId,
    version: Version,
    balance_a: Amount,
    balance_b: Amount,
    energy_a_to_b: WattHours,
    energy_b_to_a: WattHours,
    last_interval: IntervalIndex,
    is_final: bool,
    book: [u8; 32],
    #[serde(default, skip_serializing_if = "Funds::is_zero")]
    funds: Funds,
}

impl From<State> for Readable {
    fn from(s: State) -> Readable {
        Readable {
            channel_id: s.channel_id,
            version: s.version,
            balance_a: s.balance_a,
            balance_b: s.balance_b,
            energy_a_to_b: s.energy_a_to_b,
            energy_b_to_a: s.energy_b_to_a,
            last_interval: s.last_interval,
            is_final: s.is_final,
            book: s.book,
            funds: s.funds,
        }
    }
}

impl From<Readable> for State {
    fn from(s: Readable) -> State {
        State {
            channel_id: s.channel_id,
            version: s.version,
            balance_a: s.balance_a,
            balance_b: s.balance_b,
            energy_a_to_b: s.energy_a_to_b,
            energy_b_to_a: s.energy_b_to_a,
            last_interval: s.last_interval,
            is_final: s.is_final,
            book: s.book,
            funds: s.funds,
        }
    }
}

/// The `book` of a state that settles no market book.
pub const NO_BOOK: [u8; 32] = [0; 32];

/// One interval's trade, as a proposal claims it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trade {
    pub seller: Party,
    pub interval: IntervalIndex,
    pub energy: WattHours,
    pub price: PricePerKwh,
    pub amount: Amount,
    /// The book it settles, in a market channel; [`NO_BOOK`] for a tariff trade.
    pub book: [u8; 32],
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
            book: NO_BOOK,
            funds: Funds::default(),
        }
    }

    /// The encoding that is hashed and signed (see `specs/encoding.md`): ten words, or fourteen
    /// under the version 3 tag once the channel's funds changed.
    pub fn encode(&self) -> Words {
        let v3 = !self.funds.is_zero();
        let mut w = Words::with_capacity(if v3 { 14 } else { 10 });
        w.bytes32(if v3 { &STATE_DOMAIN_V3 } else { &STATE_DOMAIN })
            .bytes32(&self.channel_id.0)
            .uint(self.version.0)
            .uint(self.balance_a.0)
            .uint(self.balance_b.0)
            .uint(self.energy_a_to_b.0)
            .uint(self.energy_b_to_a.0)
            .uint(self.last_interval.0)
            .boolean(self.is_final)
            .bytes32(&self.book);
        if v3 {
            w.uint(self.funds.topped_up[0].0)
                .uint(self.funds.topped_up[1].0)
                .uint(self.funds.withdrawn[0].0)
                .uint(self.funds.withdrawn[1].0);
        }
        w
    }

    /// The money this state says the channel holds: the deposits, plus top-ups, less
    /// withdrawals (`None` if that does not fit).
    pub fn held(&self, params: &ChannelParams) -> Option<Amount> {
        self.funds.held(params.total_deposit())
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
        let next = self.moved(version, interval, seller, energy, amount)?;
        let trade = Trade {
            seller,
            interval,
            energy,
            price,
            amount,
            book: NO_BOOK,
        };
        Ok((next, trade))
    }

    /// The state at `version` after `seller` delivered `energy` in `interval` for `amount`.
    fn moved(
        &self,
        version: Version,
        interval: IntervalIndex,
        seller: Party,
        energy: WattHours,
        amount: Amount,
    ) -> Result<State, Refusal> {
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
        Ok(next)
    }

    /// The state after a market channel settles `s` (party A the member, B the market node):
    /// what the member sold moves from A to B at `s.earned`, what it bought from B to A at
    /// `s.paid`, and the state names the book.
    pub fn settle_market(
        &self,
        version: Version,
        s: &crate::market::Settlement,
    ) -> Result<(State, Trade), Refusal> {
        if s.interval <= self.last_interval {
            return Err(Refusal::StaleInterval {
                last: self.last_interval.0,
                got: s.interval.0,
            });
        }
        if s.book == NO_BOOK {
            return Err(Refusal::BookMissing);
        }
        let (seller, energy, amount) = match (s.sold.0, s.bought.0) {
            (0, 0) => return Err(Refusal::EmptyUpdate),
            (_, 0) => (Party::A, s.sold, s.earned),
            (0, _) => (Party::B, s.bought, s.paid),
            _ => return Err(Refusal::TwoWayEnergy),
        };
        let mut next = self.moved(version, s.interval, seller, energy, amount)?;
        next.book = s.book;
        let price = u128::from(amount.0) * 1000 / u128::from(energy.0.max(1));
        let trade = Trade {
            seller,
            interval: s.interval,
            energy,
            price: PricePerKwh(u64::try_from(price).unwrap_or(u64::MAX)),
            amount,
            book: s.book,
        };
        Ok((next, trade))
    }

    /// The settlement a market state claims over this one (for [`State::check_successor`]):
    /// money and energy as they moved, the book it names.
    pub(crate) fn market_claim(&self, proposed: &State) -> crate::market::Settlement {
        let sold = WattHours(proposed.energy_a_to_b.0 - self.energy_a_to_b.0);
        let bought = WattHours(proposed.energy_b_to_a.0 - self.energy_b_to_a.0);
        crate::market::Settlement {
            interval: proposed.last_interval,
            book: proposed.book,
            sold,
            bought,
            earned: Amount(proposed.balance_a.0.saturating_sub(self.balance_a.0)),
            paid: Amount(self.balance_a.0.saturating_sub(proposed.balance_a.0)),
        }
    }

    /// The state at `version` after `party`'s cumulative top-ups and withdrawals became
    /// `funds` (the other party's unchanged): its balance gains what it added and loses what it
    /// takes out.
    pub fn with_funds(
        &self,
        version: Version,
        party: Party,
        topped_up: Amount,
        withdrawn: Amount,
    ) -> Result<State, Refusal> {
        let i = party.index();
        let added = topped_up
            .0
            .checked_sub(self.funds.topped_up[i].0)
            .ok_or(Refusal::BadFunds)?;
        let taken = withdrawn
            .0
            .checked_sub(self.funds.withdrawn[i].0)
            .ok_or(Refusal::BadFunds)?;
        let balance = self
            .balance(party)
            .0
            .checked_add(added)
            .ok_or(Refusal::Overflow)?
            .checked_sub(taken)
            .ok_or(Refusal::InsufficientBalance { needed: taken })?;
        let mut next = self.clone();
        next.version = version;
        next.funds.topped_up[i] = topped_up;
        next.funds.withdrawn[i] = withdrawn;
        match party {
            Party::A => next.balance_a = Amount(balance),
            Party::B => next.balance_b = Amount(balance),
        }
        Ok(next)
    }

    /// A funds update (`specs/protocol.md`, "Top-up and withdrawal"): only the proposer's
    /// totals change, upward, and its balance by exactly what it added less what it takes out;
    /// nothing else moves. Whether the ledger confirmed a top-up is the caller's to check.
    fn check_funds_update(&self, proposed: &State, proposer: Party) -> Result<(), Refusal> {
        let other = proposer.other().index();
        if proposed.is_final
            || proposed.funds.topped_up[other] != self.funds.topped_up[other]
            || proposed.funds.withdrawn[other] != self.funds.withdrawn[other]
        {
            return Err(Refusal::BadFunds);
        }
        let i = proposer.index();
        let expected = self.with_funds(
            proposed.version,
            proposer,
            proposed.funds.topped_up[i],
            proposed.funds.withdrawn[i],
        )?;
        if expected != *proposed {
            return Err(Refusal::BadFunds);
        }
        Ok(())
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
        let total = proposed.held(params).ok_or(Refusal::Overflow)?.0;
        let sum = proposed.balance_a.0.checked_add(proposed.balance_b.0);
        if sum != Some(total) {
            return Err(Refusal::MoneyNotConserved {
                expected: total,
                got: sum.unwrap_or(u64::MAX),
            });
        }
        if proposed.funds != self.funds {
            return self.check_funds_update(proposed, proposer).map(|()| None);
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
                && proposed.last_interval == self.last_interval
                && proposed.book == self.book;
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
        if params.tariff.market().is_some() {
            // A market channel: the market node (B) proposes what the book gives the member;
            // the member checks the amount against the book it checked (the caller's).
            if proposer != Party::B {
                return Err(Refusal::ProposerNotMarket);
            }
            let claim = self.market_claim(proposed);
            let (expected, trade) = self.settle_market(expected_version, &claim)?;
            if expected != *proposed {
                return Err(Refusal::NotTheBook(proposed.last_interval.0));
            }
            return Ok(Some(trade));
        }
        if proposed.book != NO_BOOK {
            return Err(Refusal::BookMissing);
        }
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
            evidence: Default::default(),
        }
    }

    fn bincode_of(s: &State) -> Vec<u8> {
        bincode::serde::encode_to_vec(s, bincode::config::standard()).unwrap()
    }

    fn from_bincode(b: &[u8]) -> Result<State, bincode::error::DecodeError> {
        bincode::serde::decode_from_slice(b, bincode::config::standard()).map(|(s, _)| s)
    }

    /// The state as the derived layout wrote it before funds existed: the compatibility the
    /// flags byte keeps.
    #[derive(Serialize)]
    struct Before {
        channel_id: ChannelId,
        version: Version,
        balance_a: Amount,
        balance_b: Amount,
        energy_a_to_b: WattHours,
        energy_b_to_a: WattHours,
        last_interval: IntervalIndex,
        is_final: bool,
        book: [u8; 32],
    }

    #[test]
    fn a_state_without_funds_is_encoded_as_before_funds_existed() {
        let p = params();
        let mut s = State::initial(&p).finalized(Version(3));
        s.book = [7; 32];
        let before = Before {
            channel_id: s.channel_id,
            version: s.version,
            balance_a: s.balance_a,
            balance_b: s.balance_b,
            energy_a_to_b: s.energy_a_to_b,
            energy_b_to_a: s.energy_b_to_a,
            last_interval: s.last_interval,
            is_final: s.is_final,
            book: s.book,
        };
        let old = bincode::serde::encode_to_vec(&before, bincode::config::standard()).unwrap();
        assert_eq!(bincode_of(&s), old);
        assert_eq!(from_bincode(&old).unwrap(), s);
        assert_eq!(s.encode().as_bytes().len(), 320);
        assert_eq!(&s.encode().as_bytes()[..17], b"gridchan.state.v2");
    }

    #[test]
    fn a_state_with_funds_round_trips_under_version_3() {
        let p = params();
        let s = State::initial(&p)
            .with_funds(Version(1), Party::B, Amount(500), Amount(0))
            .unwrap()
            .with_funds(Version(2), Party::A, Amount(0), Amount(300))
            .unwrap();
        assert_eq!(s.balance_a, Amount(700));
        assert_eq!(s.balance_b, Amount(1_500));
        assert_eq!(s.held(&p), Some(Amount(2_200)));
        assert_eq!(from_bincode(&bincode_of(&s)).unwrap(), s);
        assert_eq!(s.encode().as_bytes().len(), 14 * 32);
        assert_eq!(&s.encode().as_bytes()[..17], b"gridchan.state.v3");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<State>(&json).unwrap(), s);
    }

    #[test]
    fn a_state_encoding_with_unknown_flags_or_empty_funds_is_refused() {
        let p = params();
        let s = State::initial(&p);
        let mut b = bincode_of(&s);
        // The flags byte sits just before the 32 bytes of the book.
        let flags = b.len() - 33;
        b[flags] = 4;
        assert!(from_bincode(&b)
            .unwrap_err()
            .to_string()
            .contains("unknown bits"));
        b[flags] = 2;
        b.extend_from_slice(&[0, 0, 0, 0]);
        assert!(from_bincode(&b)
            .unwrap_err()
            .to_string()
            .contains("no funds"));
        let mut short = bincode_of(&s);
        short[flags] = 2;
        assert!(from_bincode(&short).is_err());
    }

    #[test]
    fn a_funds_update_moves_only_the_proposers_money_by_its_change() {
        let p = params();
        let cur = State::initial(&p);
        let topped = cur
            .with_funds(Version(1), Party::A, Amount(250), Amount(0))
            .unwrap();
        assert_eq!(
            cur.check_successor(&p, &topped, Party::A, Version(1)),
            Ok(None)
        );
        // Only the party whose money moves proposes it.
        assert_eq!(
            cur.check_successor(&p, &topped, Party::B, Version(1)),
            Err(Refusal::BadFunds)
        );
        // A withdrawal beyond the balance, a total that goes down, money taken from the other
        // side, energy moved in the same update, a final funds update: all refused.
        assert_eq!(
            cur.with_funds(Version(1), Party::A, Amount(0), Amount(1_001)),
            Err(Refusal::InsufficientBalance { needed: 1_001 })
        );
        let lower = topped
            .with_funds(Version(2), Party::A, Amount(100), Amount(0))
            .unwrap_err();
        assert_eq!(lower, Refusal::BadFunds);
        let mut stolen = topped.clone();
        stolen.version = Version(2);
        stolen.funds.withdrawn[1] = Amount(100);
        stolen.balance_a = Amount(stolen.balance_a.0 - 100);
        assert_eq!(
            topped.check_successor(&p, &stolen, Party::A, Version(2)),
            Err(Refusal::BadFunds)
        );
        let mut with_energy = cur
            .with_funds(Version(1), Party::A, Amount(0), Amount(100))
            .unwrap();
        with_energy.energy_a_to_b = WattHours(1);
        assert_eq!(
            cur.check_successor(&p, &with_energy, Party::A, Version(1)),
            Err(Refusal::BadFunds)
        );
        let mut final_one = topped.clone();
        final_one.is_final = true;
        assert_eq!(
            cur.check_successor(&p, &final_one, Party::A, Version(1)),
            Err(Refusal::BadFunds)
        );
        // Money that does not add up to deposits + top-ups - withdrawals.
        let mut unbalanced = topped.clone();
        unbalanced.balance_b = Amount(1_001);
        assert!(matches!(
            cur.check_successor(&p, &unbalanced, Party::A, Version(1)),
            Err(Refusal::MoneyNotConserved { .. })
        ));
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
    fn a_market_update_is_the_market_nodes_and_names_its_book() {
        let mut p = params();
        p.tariff = crate::vectors::market_tariff();
        let s0 = State::initial(&p);
        let bought = crate::market::Settlement {
            interval: IntervalIndex(11),
            book: [7; 32],
            sold: WattHours(0),
            bought: WattHours(300),
            earned: Amount(0),
            paid: Amount(45),
        };
        let (s1, trade) = s0.settle_market(Version(1), &bought).unwrap();
        assert_eq!((s1.balance_a, s1.balance_b), (Amount(955), Amount(1_045)));
        assert_eq!(trade.book, [7; 32]);
        // The market node (B) proposes it; the member (A) may not.
        assert_eq!(
            s0.check_successor(&p, &s1, Party::B, Version(1)),
            Ok(Some(trade))
        );
        assert_eq!(
            s0.check_successor(&p, &s1, Party::A, Version(1)),
            Err(Refusal::ProposerNotMarket)
        );
        // A market update without a book, and a settlement naming none, are refused.
        let mut unnamed = s1.clone();
        unnamed.book = NO_BOOK;
        assert_eq!(
            s0.check_successor(&p, &unnamed, Party::B, Version(1)),
            Err(Refusal::BookMissing)
        );
        let no_book = crate::market::Settlement {
            book: NO_BOOK,
            ..bought
        };
        assert_eq!(
            s0.settle_market(Version(1), &no_book),
            Err(Refusal::BookMissing)
        );
        // Money moving against the energy (the buyer paid by the market) is no book's: the
        // amount itself is checked against the member's checked book (`decide_on_settlement`).
        let mut greedy = s1.clone();
        greedy.balance_a = Amount(1_010);
        greedy.balance_b = Amount(990);
        assert_eq!(
            s0.check_successor(&p, &greedy, Party::B, Version(1)),
            Err(Refusal::NotTheBook(11))
        );
        // A tariff channel's trade names no book.
        let plain = params();
        let (mut t1, _) = s0_plain(&plain);
        t1.book = [1; 32];
        assert_eq!(
            State::initial(&plain).check_successor(&plain, &t1, Party::B, Version(1)),
            Err(Refusal::BookMissing)
        );
    }

    fn s0_plain(p: &ChannelParams) -> (State, Trade) {
        State::initial(p)
            .settle(p, Version(1), Party::B, IntervalIndex(11), WattHours(300))
            .unwrap()
    }

    #[test]
    fn a_final_state_keeps_everything() {
        let p = params();
        let s0 = State::initial(&p);
        let f = s0.finalized(Version(1));
        assert_eq!(s0.check_successor(&p, &f, Party::B, Version(1)), Ok(None));
    }
}
