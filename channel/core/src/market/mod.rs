//! The neighbourhood market (`specs/market.md`): members' signed orders, the market node's
//! signed book, the clearing rule every member recomputes, and the settlement of each member's
//! part through its channel with the market node.
//!
//! Sans-IO like the rest of the core: the market node's [`Exchange`] and a member's [`Member`]
//! are driven by their host (the gateway's engine, the test harness), which carries their
//! messages and hands each verified [`Settlement`] to the member's channel.

pub mod book;
pub mod clearing;
pub mod exchange;
pub mod member;
pub mod order;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::tariff::TimeOfUse;
use crate::types::{Amount, IntervalIndex, PricePerKwh, WattHours};

pub use book::{Book, BookRefusal, Part, PartError, Parts, Roster, Topic};
pub use clearing::{clear, BookError, Clearing, Fill, Grid};
pub use exchange::{allowance, Allowance, Exchange, OrderRefusal, Sender};
pub use member::{Limits, Member, MemberStep, ReceiptError};
pub use order::{pseudonym_id, Enrol, Order, OrderMessage, Receipt, SignedOrder};

/// The highest price a market accepts anywhere (its grid prices, its fee, an order's limits):
/// 1,000 tokens per kWh. It keeps every product of energy and price far inside 128 bits.
pub const MAX_PRICE: PricePerKwh = PricePerKwh(1_000_000_000);

/// How a matched trade is priced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Rule {
    /// One uniform price for every matched trade (the default).
    PayAsClear = 0,
    /// Each matched seller is paid its own ask, each matched buyer pays its own bid.
    PayAsBid = 1,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::PayAsClear => "pay-as-clear",
            Rule::PayAsBid => "pay-as-bid",
        })
    }
}

impl std::str::FromStr for Rule {
    type Err = TermsError;

    fn from_str(s: &str) -> Result<Rule, TermsError> {
        match s {
            "pay-as-clear" => Ok(Rule::PayAsClear),
            "pay-as-bid" => Ok(Rule::PayAsBid),
            other => Err(TermsError::Rule(other.to_string())),
        }
    }
}

/// What a market publishes and every member's channel with it commits to (it is the channel's
/// tariff, [`crate::Tariff::Market`], so part of the channel id): the market's id, its rule,
/// its fee, when its books close, and the grid's prices that are every member's outside options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketTerms {
    /// The market's id: chosen once when the market is set up; pseudonyms are derived from it.
    pub market: [u8; 32],
    pub rule: Rule,
    /// Charged to buyers per kWh on top of the price, kept by the market.
    pub fee: PricePerKwh,
    /// The book of an interval closes this many thousandths of an interval after the interval
    /// ends; orders after that are too late.
    pub deadline_permille: u16,
    /// What the grid pays for exported energy: the least any seller accepts.
    pub feed_in: TimeOfUse,
    /// What the grid charges for imported energy: the most any buyer pays.
    pub retail: TimeOfUse,
}

/// Why a market's terms are not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TermsError {
    #[error("{0:?} is not a clearing rule: write pay-as-clear or pay-as-bid")]
    Rule(String),
    #[error("the book deadline must be between 1 and 500 thousandths of an interval, not {0}")]
    Deadline(u16),
    #[error("a price above {} micro-units per kWh", MAX_PRICE.0)]
    Price,
    #[error("the retail price is below the feed-in price at hour {0}")]
    RetailBelowFeedIn(usize),
}

impl MarketTerms {
    /// Checks the terms: a deadline within the first half of the next interval, prices below
    /// [`MAX_PRICE`], retail at or above feed-in at every hour.
    pub fn validate(&self) -> Result<(), TermsError> {
        if !(1..=500).contains(&self.deadline_permille) {
            return Err(TermsError::Deadline(self.deadline_permille));
        }
        let all = [&self.feed_in, &self.retail]
            .into_iter()
            .flat_map(|t| t.weekday.iter().chain(t.weekend.iter()));
        if self.fee > MAX_PRICE || all.clone().any(|p| *p > MAX_PRICE) {
            return Err(TermsError::Price);
        }
        // Checked hour by hour on the feed-in clock; with the same offset on both clocks this
        // is exact, and `grid_at` refuses any interval where it fails otherwise.
        if self.feed_in.utc_offset_minutes == self.retail.utc_offset_minutes {
            let pairs = self
                .feed_in
                .weekday
                .iter()
                .zip(&self.retail.weekday)
                .chain(self.feed_in.weekend.iter().zip(&self.retail.weekend));
            for (hour, (f, r)) in pairs.enumerate() {
                if r < f {
                    return Err(TermsError::RetailBelowFeedIn(hour % 24));
                }
            }
        }
        Ok(())
    }

    /// The grid's prices in `interval`.
    pub fn grid_at(&self, interval: IntervalIndex, interval_seconds: u32) -> Option<Grid> {
        Some(Grid {
            feed_in: self.feed_in.price_at(interval, interval_seconds)?,
            retail: self.retail.price_at(interval, interval_seconds)?,
        })
    }

    /// When the book of `interval` closes (ms since the Unix epoch).
    pub fn deadline_ms(&self, interval: IntervalIndex, interval_seconds: u32) -> u64 {
        let period = u64::from(interval_seconds) * 1000;
        (interval.0 + 1) * period + period * u64::from(self.deadline_permille) / 1000
    }
}

/// One member's part of one interval's book, checked by the member: what its channel with the
/// market node settles (party A is the member, B the market node).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub interval: IntervalIndex,
    /// The digest of the book it comes from.
    pub book: [u8; 32],
    /// Energy the member sold to the market.
    pub sold: WattHours,
    /// Energy the member bought from the market.
    pub bought: WattHours,
    /// What the market pays the member for `sold`.
    pub earned: Amount,
    /// What the member pays the market for `bought`.
    pub paid: Amount,
}
