//! `gridchan report`: a household's statement for a month or a day, read from its channel
//! store: per counterparty (neighbour or market) and local day, the energy bought and sold and
//! the money paid and earned, with the states that prove them (the versions, and the digest of
//! the day's last doubly signed state); and the quarter-hour balances of the home's meter in a
//! simple CSV, the shape an energy-sharing scheme's grid operator asks for (README, "Statements").

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use gridchan_channel::{Amount, ChannelId, ChannelStore, IntervalIndex, NodeId, Party};
use gridchan_gateway::config::Config;
use gridchan_gateway::store::{SettledRow, SqliteStore};
use serde::Serialize;

/// The period a statement covers, in the household's local time.
#[derive(Clone, Debug)]
pub enum Period {
    /// `2026-11`
    Month(jiff::civil::Date),
    /// `2026-11-03`
    Day(jiff::civil::Date),
}

impl Period {
    /// `YYYY-MM` (a month) or `YYYY-MM-DD` (a day).
    pub fn parse(text: &str) -> Result<Period> {
        if let Ok(day) = text.parse::<jiff::civil::Date>() {
            return Ok(Period::Day(day));
        }
        let first = format!("{text}-01");
        match first.parse::<jiff::civil::Date>() {
            Ok(d) => Ok(Period::Month(d)),
            Err(_) => bail!("{text:?} is not a month (2026-11) or a day (2026-11-03)"),
        }
    }

    /// Its first local day and the day after its last.
    fn days(&self) -> Result<(jiff::civil::Date, jiff::civil::Date)> {
        Ok(match self {
            Period::Day(d) => (*d, d.tomorrow()?),
            Period::Month(d) => (*d, d.checked_add(jiff::Span::new().months(1))?),
        })
    }

    fn label(&self) -> String {
        match self {
            Period::Day(d) => d.to_string(),
            Period::Month(d) => d.strftime("%Y-%m").to_string(),
        }
    }
}

/// One counterparty's trades on one local day.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DayLine {
    pub date: String,
    /// `neighbour NODE` or `market NODE` (node ids in full).
    pub counterparty: String,
    pub channel: String,
    pub intervals: u64,
    pub bought_wh: u64,
    pub sold_wh: u64,
    /// Micro-units of the settlement token.
    pub paid: u64,
    pub earned: u64,
    /// The first and last version of the channel that settled an interval of the day.
    pub first_version: u64,
    pub last_version: u64,
    /// The digest of the last version's state, signed by both (hex; empty for intervals
    /// settled before digests were kept).
    pub last_state_digest: String,
    /// What trading saved against the grid (`[grid]`): the retail price of what was bought
    /// less what was paid, plus what was earned less the feed-in price of what was sold, in
    /// micro-units; none without grid prices.
    pub saved: Option<i64>,
}

/// A statement: what the home traded with whom over the period.
#[derive(Clone, Debug, Serialize)]
pub struct Statement {
    pub period: String,
    pub time_zone: String,
    pub node: String,
    pub days: Vec<DayLine>,
    pub bought_wh: u64,
    pub sold_wh: u64,
    pub paid: u64,
    pub earned: u64,
    /// What trading saved against the grid over the period (see [`DayLine::saved`]).
    pub saved: Option<i64>,
    /// What the home's meter measured over the period (the readings the daemon kept).
    pub metered_import_wh: u64,
    pub metered_export_wh: u64,
    /// The home's meter, interval by interval: its start (Unix seconds), then imported and
    /// exported (as the meter read them, when it did), received from and delivered to the
    /// neighbours and the market, in Wh.
    #[serde(skip)]
    pub quarter_hours: Vec<QuarterHour>,
}

/// One interval of the home's meter, as [`Statement::quarter_hours`] lists it.
#[derive(Clone, Copy, Debug, Default)]
pub struct QuarterHour {
    pub start: u64,
    pub metered: Option<(u64, u64)>,
    pub received: u64,
    pub delivered: u64,
    /// The price of the interval's trade (micro-units per kWh; the highest, if several).
    pub price: Option<u64>,
}

/// The statement of `period` for the gateway of `config`, read from its store (the daemon may
/// be running).
pub fn statement(config_path: &Path, period: &Period) -> Result<Statement> {
    let config = Config::load(config_path)?;
    let zone = config.metering.zone()?;
    let interval_seconds = config.metering.interval_seconds;
    let grid = config.grid.tariffs()?;
    // (The config's paths are resolved against its folder when it is loaded.)
    let data = &config.node.data;
    let store_path = data.join("channels.sqlite");
    if !store_path.exists() {
        bail!(
            "no channel store at {}: has this gateway's daemon run?",
            store_path.display()
        );
    }
    let store = SqliteStore::open(&store_path)
        .with_context(|| format!("cannot read the channel store {}", store_path.display()))?;
    let (first_day, end_day) = period.days()?;
    let start = first_day.to_zoned(zone.clone())?.timestamp().as_second();
    let end = end_day.to_zoned(zone.clone())?.timestamp().as_second();
    let secs = i64::from(interval_seconds);
    let from = IntervalIndex(u64::try_from(start.div_euclid(secs)).unwrap_or(0));
    let to = IntervalIndex(u64::try_from((end - 1).div_euclid(secs)).unwrap_or(0));
    // Who each channel is with, and which side we are.
    let channels: BTreeMap<ChannelId, (Party, NodeId, bool)> = store
        .load()?
        .into_iter()
        .map(|r| {
            let peer = *r.params.node(r.me.other());
            (r.id, (r.me, peer, r.params.tariff.market().is_some()))
        })
        .collect();
    let rows = store.settled_between(from, to)?;
    let mut days: BTreeMap<(String, String, String), DayLine> = BTreeMap::new();
    let mut quarter: BTreeMap<u64, QuarterHour> = BTreeMap::new();
    let readings = gridchan_gateway::readings::ReadingLog::open(&store_path)?.between(from, to)?;
    for (interval, r) in &readings {
        let start = interval.0.saturating_mul(u64::from(interval_seconds));
        quarter.entry(start).or_default().metered = Some((r.import.0, r.export.0));
    }
    for SettledRow {
        channel,
        version,
        trade,
        digest,
    } in rows
    {
        let Some((me, peer, market)) = channels.get(&channel) else {
            continue;
        };
        let begins = trade.interval.0.saturating_mul(u64::from(interval_seconds));
        let date = jiff::Timestamp::from_second(i64::try_from(begins)?)?
            .to_zoned(zone.clone())
            .date()
            .to_string();
        let who = format!("{} {peer}", if *market { "market" } else { "neighbour" });
        let line = days
            .entry((date.clone(), who.clone(), channel.to_string()))
            .or_insert_with(|| DayLine {
                date,
                counterparty: who,
                channel: channel.to_string(),
                first_version: version.0,
                saved: grid.as_ref().map(|_| 0),
                ..DayLine::default()
            });
        // What the energy would have cost or fetched at the grid's price of its interval.
        let at_grid = |tariff: &gridchan_channel::Tariff| {
            tariff
                .price_at(trade.interval, interval_seconds)
                .and_then(|p| p.cost(trade.energy))
                .map_or(0, |a| a.0 as i64)
        };
        if let (Some(saved), Some((retail, feed_in))) = (line.saved.as_mut(), grid.as_ref()) {
            *saved += if trade.seller == *me {
                trade.amount.0 as i64 - at_grid(feed_in)
            } else {
                at_grid(retail) - trade.amount.0 as i64
            };
        }
        let sold = trade.seller == *me;
        let q = quarter.entry(begins).or_default();
        q.price = q.price.max(Some(trade.price.0));
        if sold {
            line.sold_wh += trade.energy.0;
            line.earned += trade.amount.0;
            q.delivered += trade.energy.0;
        } else {
            line.bought_wh += trade.energy.0;
            line.paid += trade.amount.0;
            q.received += trade.energy.0;
        }
        line.intervals += 1;
        line.first_version = line.first_version.min(version.0);
        if version.0 >= line.last_version {
            line.last_version = version.0;
            line.last_state_digest = digest.map(hex::encode).unwrap_or_default();
        }
    }
    // Days older than `[history] keep_days` were rolled into daily totals.
    let last_day = end_day.yesterday()?.to_string();
    let history = gridchan_gateway::history::History::open(&store_path)?;
    for t in history.days(&first_day.to_string(), &last_day)? {
        let Some((me, peer, market)) = channels.get(&t.channel) else {
            continue;
        };
        let who = format!("{} {peer}", if *market { "market" } else { "neighbour" });
        let line = days
            .entry((t.day.clone(), who.clone(), t.channel.to_string()))
            .or_insert_with(|| DayLine {
                date: t.day.clone(),
                counterparty: who,
                channel: t.channel.to_string(),
                first_version: t.first_version,
                saved: grid.as_ref().map(|_| 0),
                ..DayLine::default()
            });
        let sold = t.seller == *me;
        if sold {
            line.sold_wh += t.energy_wh;
            line.earned += t.amount;
        } else {
            line.bought_wh += t.energy_wh;
            line.paid += t.amount;
        }
        if let (Some(saved), Some(value)) = (line.saved.as_mut(), t.grid_value) {
            *saved += if sold {
                t.amount as i64 - value
            } else {
                value - t.amount as i64
            };
        }
        line.intervals += t.intervals;
        line.first_version = line.first_version.min(t.first_version);
        if t.last_version >= line.last_version {
            line.last_version = t.last_version;
            line.last_state_digest = t.last_digest.map(hex::encode).unwrap_or_default();
        }
    }
    let rolled_readings = history.reading_days(&first_day.to_string(), &last_day)?;
    let days: Vec<DayLine> = days.into_values().collect();
    let sum = |f: fn(&DayLine) -> u64| days.iter().map(f).sum::<u64>();
    let key = crate::keys::load(&config.node.key)
        .map(|k| k.id().to_string())
        .unwrap_or_default();
    Ok(Statement {
        period: period.label(),
        time_zone: zone.iana_name().unwrap_or("UTC").to_string(),
        node: key,
        bought_wh: sum(|d| d.bought_wh),
        sold_wh: sum(|d| d.sold_wh),
        paid: sum(|d| d.paid),
        earned: sum(|d| d.earned),
        saved: grid
            .as_ref()
            .map(|_| days.iter().filter_map(|d| d.saved).sum()),
        metered_import_wh: readings.iter().map(|(_, r)| r.import.0).sum::<u64>()
            + rolled_readings.iter().map(|d| d.import_wh).sum::<u64>(),
        metered_export_wh: readings.iter().map(|(_, r)| r.export.0).sum::<u64>()
            + rolled_readings.iter().map(|d| d.export_wh).sum::<u64>(),
        days,
        quarter_hours: quarter
            .into_iter()
            .map(|(start, q)| QuarterHour { start, ..q })
            .collect(),
    })
}

/// The statement as a person reads it.
pub fn print_text(s: &Statement) {
    println!(
        "statement {} ({}), gateway {}",
        s.period,
        s.time_zone,
        &s.node[..16.min(s.node.len())]
    );
    if s.days.is_empty() {
        println!("nothing traded in this period");
        return;
    }
    println!(
        "{:<10}  {:<26}  {:>9}  {:>9}  {:>10}  {:>10}  proved by",
        "date", "with", "bought Wh", "sold Wh", "paid", "earned"
    );
    for d in &s.days {
        println!(
            "{:<10}  {:<26}  {:>9}  {:>9}  {:>10}  {:>10}  {} v{}..v{} {}",
            d.date,
            format!("{}..", &d.counterparty[..d.counterparty.len().min(24)]),
            d.bought_wh,
            d.sold_wh,
            Amount(d.paid).to_string(),
            Amount(d.earned).to_string(),
            &d.channel[..8],
            d.first_version,
            d.last_version,
            &d.last_state_digest[..d.last_state_digest.len().min(16)]
        );
    }
    if let Some(saved) = s.saved {
        println!("saved against the grid: {}", signed_tokens(saved));
    }
    println!(
        "total: bought {} Wh for {}, sold {} Wh for {}; the meter imported {} Wh and exported {} Wh",
        s.bought_wh,
        Amount(s.paid),
        s.sold_wh,
        Amount(s.earned),
        s.metered_import_wh,
        s.metered_export_wh
    );
}

/// Micro-units as tokens with a sign: `-0.012000`.
pub fn signed_tokens(micro: i64) -> String {
    let sign = if micro < 0 { "-" } else { "" };
    format!("{sign}{}", Amount(micro.unsigned_abs()))
}

/// The day lines as CSV (header first; money in micro-units).
pub fn days_csv(s: &Statement) -> String {
    let mut out = String::from(
        "date,counterparty,channel,intervals,bought_wh,sold_wh,paid_micro,earned_micro,saved_micro,first_version,last_version,last_state_digest\n",
    );
    for d in &s.days {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\n",
            d.date,
            d.counterparty,
            d.channel,
            d.intervals,
            d.bought_wh,
            d.sold_wh,
            d.paid,
            d.earned,
            d.saved.map(|s| s.to_string()).unwrap_or_default(),
            d.first_version,
            d.last_version,
            d.last_state_digest
        ));
    }
    out
}

/// The home's quarter-hour balances as CSV: one row per interval with a reading or a trade:
/// its start in UTC, the gateway, what the meter imported and exported (empty where the daemon
/// kept no reading), and what the home received from and delivered to the community.
pub fn quarter_hours_csv(s: &Statement) -> Result<String> {
    let mut out = String::from(
        "interval_start_utc,gateway,imported_wh,exported_wh,received_wh,delivered_wh\n",
    );
    for q in &s.quarter_hours {
        let t = jiff::Timestamp::from_second(i64::try_from(q.start)?)?;
        let (imported, exported) = match q.metered {
            Some((i, e)) => (i.to_string(), e.to_string()),
            None => (String::new(), String::new()),
        };
        out.push_str(&format!(
            "{t},{},{imported},{exported},{},{}\n",
            s.node, q.received, q.delivered
        ));
    }
    Ok(out)
}
