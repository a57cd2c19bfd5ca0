//! Channel parameters: everything both parties agree on before version 0 is signed. The channel
//! id is their digest, so no parameter can change once the channel exists.

use serde::{Deserialize, Serialize};

use crate::abi::{domain_tag, Words};
use crate::crypto::NodeId;
use crate::tariff::Tariff;
use crate::types::{Amount, ChannelId, IntervalIndex, Party, WattHours};

const PARAMS_DOMAIN: [u8; 32] = domain_tag("gridchan.params.v1");

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

/// The parameters of one channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
            .bytes32(&self.tariff.digest());
        w
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
}
