//! Newtypes that keep units apart: a version is not an amount, watt-hours are not money.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A channel's identity: SHA-256 of its encoded parameters (see `specs/encoding.md`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChannelId(pub [u8; 32]);

impl ChannelId {
    /// The first 8 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelId({})", self.short())
    }
}

/// The version of a channel state. Versions only grow; the highest doubly signed one wins.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Version(pub u64);

impl Version {
    /// The version after this one, or `None` at `u64::MAX`.
    pub fn next(self) -> Option<Version> {
        self.0.checked_add(1).map(Version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// Money, in integer micro-units of the settlement token (1 token = 1,000,000).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Amount(pub u64);

impl Amount {
    /// Micro-units per whole token.
    pub const UNITS_PER_TOKEN: u64 = 1_000_000;

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
}

impl Amount {
    /// Parses an amount written in tokens with up to 6 decimals (`"12"`, `"0.15"`).
    pub fn parse_tokens(s: &str) -> Result<Amount, AmountError> {
        let bad = || AmountError(s.to_string());
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty() && frac.is_empty() || frac.len() > 6 {
            return Err(bad());
        }
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || !digits(frac) {
            return Err(bad());
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let frac: u64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<6}").parse().map_err(|_| bad())?
        };
        whole
            .checked_mul(Self::UNITS_PER_TOKEN)
            .and_then(|w| w.checked_add(frac))
            .map(Amount)
            .ok_or_else(bad)
    }
}

/// Text that is not an amount of tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an amount of tokens (up to 6 decimals)")]
pub struct AmountError(pub String);

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}",
            self.0 / Self::UNITS_PER_TOKEN,
            self.0 % Self::UNITS_PER_TOKEN
        )
    }
}

/// Energy in watt-hours.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct WattHours(pub u64);

impl WattHours {
    pub fn checked_add(self, other: WattHours) -> Option<WattHours> {
        self.0.checked_add(other.0).map(WattHours)
    }

    pub fn checked_sub(self, other: WattHours) -> Option<WattHours> {
        self.0.checked_sub(other.0).map(WattHours)
    }
}

impl fmt::Display for WattHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Wh", self.0)
    }
}

/// A metering interval: `floor(unix_seconds / interval_seconds)`, so both gateways of a channel
/// name the same wall-clock interval with the same number.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct IntervalIndex(pub u64);

impl IntervalIndex {
    /// Unix time (seconds) at which this interval starts.
    pub fn start_unix(self, interval_seconds: u32) -> Option<u64> {
        self.0.checked_mul(u64::from(interval_seconds))
    }

    /// The interval containing `unix_seconds`.
    pub fn containing(unix_seconds: u64, interval_seconds: u32) -> IntervalIndex {
        IntervalIndex(unix_seconds / u64::from(interval_seconds.max(1)))
    }
}

impl fmt::Display for IntervalIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A price: micro-units of the settlement token per kilowatt-hour.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct PricePerKwh(pub u64);

impl PricePerKwh {
    /// What `energy` costs at this price, rounded down to a whole micro-unit (the buyer's
    /// favour, at most one micro-unit per interval). `None` if it does not fit in an [`Amount`].
    pub fn cost(self, energy: WattHours) -> Option<Amount> {
        let micro = u128::from(self.0) * u128::from(energy.0) / 1000;
        u64::try_from(micro).ok().map(Amount)
    }
}

impl fmt::Display for PricePerKwh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/kWh", Amount(self.0))
    }
}

/// Which side of a channel: `A` is the party that proposed the channel, `B` the one that accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Party {
    A,
    B,
}

impl Party {
    pub fn other(self) -> Party {
        match self {
            Party::A => Party::B,
            Party::B => Party::A,
        }
    }

    pub fn index(self) -> usize {
        match self {
            Party::A => 0,
            Party::B => 1,
        }
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Party::A => "A",
            Party::B => "B",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_rounds_down_in_the_buyers_favour() {
        // 333 Wh at 0.250000 per kWh is 83,250 micro-units exactly.
        assert_eq!(
            PricePerKwh(250_000).cost(WattHours(333)),
            Some(Amount(83_250))
        );
        // 1 Wh at 0.000999 per kWh is 0.999 micro-units: rounds down to 0.
        assert_eq!(PricePerKwh(999).cost(WattHours(1)), Some(Amount(0)));
        assert_eq!(PricePerKwh(u64::MAX).cost(WattHours(u64::MAX)), None);
    }

    #[test]
    fn amounts_print_as_tokens() {
        assert_eq!(Amount(1_234_567).to_string(), "1.234567");
        assert_eq!(Amount(5).to_string(), "0.000005");
    }

    #[test]
    fn intervals_align_to_wall_clock() {
        assert_eq!(IntervalIndex::containing(1_800, 900), IntervalIndex(2));
        assert_eq!(IntervalIndex(2).start_unix(900), Some(1_800));
    }
}
