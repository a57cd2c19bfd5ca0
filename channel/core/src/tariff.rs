//! Tariffs: what a kilowatt-hour costs in a given interval.

use serde::{Deserialize, Serialize};
use serde_big_array::BigArray;

use crate::abi::{domain_tag, Words};
use crate::types::{IntervalIndex, PricePerKwh};

const TARIFF_DOMAIN: [u8; 32] = domain_tag("gridchan.tariff.v1");

/// The price schedule of a channel. Both parties agree on it when the channel opens; it is part
/// of the channel id, so it cannot change afterwards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tariff {
    /// One price at every hour.
    Flat(PricePerKwh),
    /// A price per local hour of the day, one table for weekdays (Monday to Friday) and one for
    /// weekends.
    TimeOfUse(Box<TimeOfUse>),
}

/// Hourly prices on local time, `utc_offset_minutes` east of UTC (no daylight saving: a
/// channel's clock never jumps).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeOfUse {
    pub utc_offset_minutes: i32,
    #[serde(with = "BigArray")]
    pub weekday: [PricePerKwh; 24],
    #[serde(with = "BigArray")]
    pub weekend: [PricePerKwh; 24],
}

impl Tariff {
    /// The price of energy delivered in `interval`, priced at the interval's start.
    /// `None` only if the interval lies beyond the representable time range.
    pub fn price_at(&self, interval: IntervalIndex, interval_seconds: u32) -> Option<PricePerKwh> {
        match self {
            Tariff::Flat(price) => Some(*price),
            Tariff::TimeOfUse(tou) => {
                let start = i128::from(interval.start_unix(interval_seconds)?);
                let local = start + i128::from(tou.utc_offset_minutes) * 60;
                let days = local.div_euclid(86_400);
                let hour = (local.rem_euclid(86_400) / 3_600) as usize;
                // 1970-01-01 was a Thursday: day 0 is weekday index 3 (Monday = 0).
                let weekday = (days + 3).rem_euclid(7);
                let table = if weekday >= 5 {
                    &tou.weekend
                } else {
                    &tou.weekday
                };
                Some(table[hour])
            }
        }
    }

    /// The lowest and highest price anywhere in the schedule.
    pub fn price_range(&self) -> (PricePerKwh, PricePerKwh) {
        match self {
            Tariff::Flat(p) => (*p, *p),
            Tariff::TimeOfUse(tou) => {
                let all = tou.weekday.iter().chain(tou.weekend.iter());
                let min = all.clone().min().copied().unwrap_or_default();
                let max = all.max().copied().unwrap_or_default();
                (min, max)
            }
        }
    }

    /// The tariff's digest, one word of the channel parameters (see `specs/encoding.md`).
    pub fn digest(&self) -> [u8; 32] {
        let mut w = Words::with_capacity(51);
        w.bytes32(&TARIFF_DOMAIN);
        match self {
            Tariff::Flat(price) => {
                w.uint(0).int(0).uint(price.0);
            }
            Tariff::TimeOfUse(tou) => {
                w.uint(1).int(i64::from(tou.utc_offset_minutes));
                for p in tou.weekday.iter().chain(tou.weekend.iter()) {
                    w.uint(p.0);
                }
            }
        }
        w.sha256()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tou() -> Tariff {
        let mut weekday = [PricePerKwh(100_000); 24];
        for p in &mut weekday[17..21] {
            *p = PricePerKwh(300_000);
        }
        Tariff::TimeOfUse(Box::new(TimeOfUse {
            utc_offset_minutes: -300,
            weekday,
            weekend: [PricePerKwh(80_000); 24],
        }))
    }

    #[test]
    fn time_of_use_follows_local_hour_and_weekday() {
        // 2025-01-13 (a Monday) 23:00 UTC is 18:00 at UTC-5: the weekday peak.
        let monday_2300_utc = 1_736_809_200u64;
        let iv = IntervalIndex::containing(monday_2300_utc, 900);
        assert_eq!(tou().price_at(iv, 900), Some(PricePerKwh(300_000)));
        // 2025-01-18 (a Saturday) 23:00 UTC: the weekend price.
        let saturday = monday_2300_utc + 5 * 86_400;
        let iv = IntervalIndex::containing(saturday, 900);
        assert_eq!(tou().price_at(iv, 900), Some(PricePerKwh(80_000)));
        // Monday 03:00 UTC is still Sunday 22:00 locally.
        let iv = IntervalIndex::containing(monday_2300_utc - 20 * 3_600, 900);
        assert_eq!(tou().price_at(iv, 900), Some(PricePerKwh(80_000)));
    }

    #[test]
    fn digests_differ_between_schedules() {
        assert_ne!(tou().digest(), Tariff::Flat(PricePerKwh(100_000)).digest());
        assert_ne!(
            Tariff::Flat(PricePerKwh(1)).digest(),
            Tariff::Flat(PricePerKwh(2)).digest()
        );
        assert_eq!(
            tou().price_range(),
            (PricePerKwh(80_000), PricePerKwh(300_000))
        );
    }
}
