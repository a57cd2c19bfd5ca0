//! The interval history over years (`[history] keep_days`): settled intervals and meter
//! readings are kept one row per interval for `keep_days`, then rolled into one row per local
//! day (per channel and direction for trades), so a gateway's file stops growing with time:
//! freed pages are reused by the newer rows. Statements read both (`gridchan report`); only the
//! quarter-hour balances need the per-interval rows.

use std::collections::BTreeMap;
use std::path::Path;

use gridchan_channel::{ChannelId, IntervalIndex, Party, StoreError};
use rusqlite::{params, Connection};

/// The daily tables (created by [`History::open`] on a file that has none).
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS trades_daily (
        channel BLOB NOT NULL,
        day TEXT NOT NULL,
        seller INTEGER NOT NULL,
        energy_wh INTEGER NOT NULL,
        amount INTEGER NOT NULL,
        grid_value INTEGER,
        intervals INTEGER NOT NULL,
        first_version INTEGER NOT NULL,
        last_version INTEGER NOT NULL,
        last_digest BLOB,
        PRIMARY KEY (channel, day, seller)
    );
    CREATE TABLE IF NOT EXISTS readings_daily (
        day TEXT PRIMARY KEY,
        import_wh INTEGER NOT NULL,
        export_wh INTEGER NOT NULL,
        intervals INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS readings (
        interval INTEGER PRIMARY KEY,
        import_wh INTEGER NOT NULL,
        export_wh INTEGER NOT NULL
    );";

/// One channel's trades in one direction on one local day, rolled up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayTotal {
    pub channel: ChannelId,
    /// The local date, `2026-11-03`.
    pub day: String,
    pub seller: Party,
    pub energy_wh: u64,
    pub amount: u64,
    /// What the energy would have cost (bought) or fetched (sold) at the home's grid prices,
    /// when it knew them at compaction.
    pub grid_value: Option<i64>,
    pub intervals: u64,
    pub first_version: u64,
    pub last_version: u64,
    pub last_digest: Option<[u8; 32]>,
}

/// The meter's readings of one local day, rolled up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadingsDay {
    pub day: String,
    pub import_wh: u64,
    pub export_wh: u64,
    pub intervals: u64,
}

/// What one compaction rolled up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    pub trades: usize,
    pub readings: usize,
}

pub struct History {
    conn: Connection,
}

fn read(e: impl std::fmt::Display) -> StoreError {
    StoreError::ReadFailed(e.to_string())
}

fn write(e: impl std::fmt::Display) -> StoreError {
    StoreError::WriteFailed(e.to_string())
}

fn party(n: i64) -> Party {
    if n == 0 {
        Party::A
    } else {
        Party::B
    }
}

impl History {
    /// The history tables of the gateway's file at `path`.
    pub fn open(path: &Path) -> Result<History, StoreError> {
        let conn = crate::sqlite::open(path).map_err(write)?;
        conn.execute_batch(SCHEMA).map_err(write)?;
        Ok(History { conn })
    }

    /// Rolls every settled interval and reading before `before` into daily totals, the local
    /// day of each interval given by `day_of`, and the grid value of each trade by
    /// `grid_value(channel, interval, seller, energy_wh)`; one transaction.
    pub fn compact(
        &mut self,
        before: IntervalIndex,
        day_of: &dyn Fn(IntervalIndex) -> String,
        grid_value: &dyn Fn(&ChannelId, IntervalIndex, Party, u64) -> Option<i64>,
    ) -> Result<Compacted, StoreError> {
        let tx = self.conn.transaction().map_err(write)?;
        let mut done = Compacted::default();
        {
            let mut totals: BTreeMap<(Vec<u8>, String, i64), DayTotal> = BTreeMap::new();
            let mut stmt = tx
                .prepare(
                    "SELECT channel, version, interval, seller, energy_wh, amount, digest
                     FROM trades WHERE interval < ?1",
                )
                .map_err(read)?;
            let mut rows = stmt.query(params![before.0 as i64]).map_err(read)?;
            while let Some(r) = rows.next().map_err(read)? {
                let channel: Vec<u8> = r.get(0).map_err(read)?;
                let id = ChannelId(<[u8; 32]>::try_from(channel.as_slice()).map_err(read)?);
                let version = r.get::<_, i64>(1).map_err(read)? as u64;
                let interval = IntervalIndex(r.get::<_, i64>(2).map_err(read)? as u64);
                let seller = r.get::<_, i64>(3).map_err(read)?;
                let energy = r.get::<_, i64>(4).map_err(read)? as u64;
                let amount = r.get::<_, i64>(5).map_err(read)? as u64;
                let digest: Option<Vec<u8>> = r.get(6).map_err(read)?;
                let digest = digest.and_then(|d| <[u8; 32]>::try_from(d.as_slice()).ok());
                let day = day_of(interval);
                let value = grid_value(&id, interval, party(seller), energy);
                let t = totals
                    .entry((channel, day.clone(), seller))
                    .or_insert_with(|| DayTotal {
                        channel: id,
                        day,
                        seller: party(seller),
                        energy_wh: 0,
                        amount: 0,
                        grid_value: Some(0),
                        intervals: 0,
                        first_version: version,
                        last_version: version,
                        last_digest: digest,
                    });
                t.energy_wh += energy;
                t.amount += amount;
                t.grid_value = t.grid_value.zip(value).map(|(a, b)| a + b);
                t.intervals += 1;
                t.first_version = t.first_version.min(version);
                if version >= t.last_version {
                    t.last_version = version;
                    t.last_digest = digest;
                }
                done.trades += 1;
            }
            let mut upsert = tx
                .prepare(
                    "INSERT INTO trades_daily (channel, day, seller, energy_wh, amount, grid_value,
                        intervals, first_version, last_version, last_digest)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (channel, day, seller) DO UPDATE SET
                        energy_wh = energy_wh + excluded.energy_wh,
                        amount = amount + excluded.amount,
                        grid_value = grid_value + excluded.grid_value,
                        intervals = intervals + excluded.intervals,
                        first_version = min(first_version, excluded.first_version),
                        last_digest = CASE WHEN excluded.last_version >= last_version
                            THEN excluded.last_digest ELSE last_digest END,
                        last_version = max(last_version, excluded.last_version)",
                )
                .map_err(write)?;
            for ((channel, day, seller), t) in &totals {
                upsert
                    .execute(params![
                        channel,
                        day,
                        seller,
                        t.energy_wh as i64,
                        t.amount as i64,
                        t.grid_value,
                        t.intervals as i64,
                        t.first_version as i64,
                        t.last_version as i64,
                        t.last_digest.map(|d| d.to_vec()),
                    ])
                    .map_err(write)?;
            }
            tx.execute(
                "DELETE FROM trades WHERE interval < ?1",
                params![before.0 as i64],
            )
            .map_err(write)?;
            let mut days: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
            let mut stmt = tx
                .prepare("SELECT interval, import_wh, export_wh FROM readings WHERE interval < ?1")
                .map_err(read)?;
            let mut rows = stmt.query(params![before.0 as i64]).map_err(read)?;
            while let Some(r) = rows.next().map_err(read)? {
                let interval = IntervalIndex(r.get::<_, i64>(0).map_err(read)? as u64);
                let d = days.entry(day_of(interval)).or_default();
                d.0 += r.get::<_, i64>(1).map_err(read)? as u64;
                d.1 += r.get::<_, i64>(2).map_err(read)? as u64;
                d.2 += 1;
                done.readings += 1;
            }
            for (day, (import, export, n)) in days {
                tx.execute(
                    "INSERT INTO readings_daily (day, import_wh, export_wh, intervals)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (day) DO UPDATE SET import_wh = import_wh + excluded.import_wh,
                        export_wh = export_wh + excluded.export_wh,
                        intervals = intervals + excluded.intervals",
                    params![day, import as i64, export as i64, n as i64],
                )
                .map_err(write)?;
            }
            tx.execute(
                "DELETE FROM readings WHERE interval < ?1",
                params![before.0 as i64],
            )
            .map_err(write)?;
        }
        tx.commit().map_err(write)?;
        Ok(done)
    }

    /// The daily trade totals of local days `first..=last` (dates as `2026-11-03`).
    pub fn days(&self, first: &str, last: &str) -> Result<Vec<DayTotal>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT channel, day, seller, energy_wh, amount, grid_value, intervals,
                    first_version, last_version, last_digest
                 FROM trades_daily WHERE day >= ?1 AND day <= ?2 ORDER BY day, channel, seller",
            )
            .map_err(read)?;
        let rows = stmt
            .query_map(params![first, last], |r| {
                let channel: Vec<u8> = r.get(0)?;
                let digest: Option<Vec<u8>> = r.get(9)?;
                Ok(DayTotal {
                    channel: ChannelId(
                        <[u8; 32]>::try_from(channel.as_slice()).unwrap_or_default(),
                    ),
                    day: r.get(1)?,
                    seller: party(r.get(2)?),
                    energy_wh: r.get::<_, i64>(3)? as u64,
                    amount: r.get::<_, i64>(4)? as u64,
                    grid_value: r.get(5)?,
                    intervals: r.get::<_, i64>(6)? as u64,
                    first_version: r.get::<_, i64>(7)? as u64,
                    last_version: r.get::<_, i64>(8)? as u64,
                    last_digest: digest.and_then(|d| <[u8; 32]>::try_from(d.as_slice()).ok()),
                })
            })
            .map_err(read)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(read)
    }

    /// The daily reading totals of local days `first..=last`.
    pub fn reading_days(&self, first: &str, last: &str) -> Result<Vec<ReadingsDay>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT day, import_wh, export_wh, intervals FROM readings_daily
                 WHERE day >= ?1 AND day <= ?2 ORDER BY day",
            )
            .map_err(read)?;
        let rows = stmt
            .query_map(params![first, last], |r| {
                Ok(ReadingsDay {
                    day: r.get(0)?,
                    import_wh: r.get::<_, i64>(1)? as u64,
                    export_wh: r.get::<_, i64>(2)? as u64,
                    intervals: r.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(read)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(read)
    }
}

/// UTC, for callers without a zone of their own.
pub fn utc() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::UTC
}

/// How the daemon keeps its history (`[history]` and the household's zone and grid prices).
#[derive(Clone, Debug)]
pub struct HistoryPolicy {
    /// Days of per-interval rows kept; older ones are rolled into daily totals.
    pub keep_days: u32,
    pub zone: jiff::tz::TimeZone,
    pub interval_seconds: u32,
    /// Retail and feed-in prices, for the grid value of what is rolled up.
    pub grid: Option<(gridchan_channel::Tariff, gridchan_channel::Tariff)>,
}

impl HistoryPolicy {
    /// The local date interval `i` begins on.
    pub fn day_of(&self, i: IntervalIndex) -> String {
        let secs = i.0.saturating_mul(u64::from(self.interval_seconds));
        jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(i64::MAX))
            .map(|t| t.to_zoned(self.zone.clone()).date().to_string())
            .unwrap_or_default()
    }

    /// The first interval that stays per-interval at `now_ms`: the start of the local day
    /// `keep_days` before today, so only whole days are rolled up.
    pub fn cutoff(&self, now_ms: u64) -> IntervalIndex {
        let now = jiff::Timestamp::from_millisecond(i64::try_from(now_ms).unwrap_or(i64::MAX))
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned(self.zone.clone());
        let day = now
            .date()
            .checked_sub(jiff::Span::new().days(i64::from(self.keep_days)))
            .unwrap_or(now.date());
        let start = day
            .to_zoned(self.zone.clone())
            .map(|z| z.timestamp().as_second())
            .unwrap_or(0);
        IntervalIndex(u64::try_from(start).unwrap_or(0) / u64::from(self.interval_seconds))
    }

    /// What `energy_wh` sold (`sold`) or bought in interval `i` is worth at the grid's prices.
    pub fn grid_value(&self, i: IntervalIndex, sold: bool, energy_wh: u64) -> Option<i64> {
        let (retail, feed_in) = self.grid.as_ref()?;
        let tariff = if sold { feed_in } else { retail };
        tariff
            .price_at(i, self.interval_seconds)
            .and_then(|p| p.cost(gridchan_channel::WattHours(energy_wh)))
            .map(|a| a.0 as i64)
    }
}

/// Rolls up what is older than the policy keeps, at start and then every hour of real time
/// (or every simulated day, on a sped-up clock, whichever comes first).
pub async fn keep_history(
    engine: crate::engine::EngineHandle,
    store_path: std::path::PathBuf,
    policy: HistoryPolicy,
    clock: crate::clock::SimClock,
) {
    let day_ms = 86_400_000;
    loop {
        let now = clock.now_ms();
        let before = policy.cutoff(now);
        let me: BTreeMap<ChannelId, Party> = match engine.channels().await {
            Ok(cs) => cs.into_iter().map(|v| (v.id, v.me)).collect(),
            Err(_) => return,
        };
        let (path, p) = (store_path.clone(), policy.clone());
        let done = tokio::task::spawn_blocking(move || {
            let mut h = History::open(&path)?;
            h.compact(before, &|i| p.day_of(i), &|c, i, seller, e| {
                let sold = me.get(c).is_some_and(|m| *m == seller);
                p.grid_value(i, sold, e)
            })
        })
        .await;
        match done {
            Ok(Ok(c)) if c.trades + c.readings > 0 => tracing::info!(
                "history: rolled {} settled intervals and {} readings older than {} day(s) into daily totals",
                c.trades,
                c.readings,
                policy.keep_days
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("history: cannot roll up {}: {e}", store_path.display()),
            Err(_) => return,
        }
        let wait = clock
            .until(now + day_ms)
            .min(std::time::Duration::from_secs(3_600))
            .max(std::time::Duration::from_millis(100));
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridchan_channel::{Amount, ChannelStore, PricePerKwh, Trade, Version, WattHours};

    fn policy() -> HistoryPolicy {
        HistoryPolicy {
            keep_days: 2,
            zone: jiff::tz::TimeZone::get("Europe/Amsterdam").unwrap(),
            interval_seconds: 900,
            grid: Some((
                gridchan_channel::Tariff::Flat(PricePerKwh(300_000)),
                gridchan_channel::Tariff::Flat(PricePerKwh(80_000)),
            )),
        }
    }

    /// Settled intervals over five days on two channels (A sells on one, buys on the other).
    fn settle(path: &Path, first: u64, n: u64) {
        let mut store = crate::store::SqliteStore::open(path).unwrap();
        let trades: Vec<gridchan_channel::Settled> = (0..n)
            .flat_map(|i| {
                [(1u8, Party::A), (2u8, Party::B)].map(|(c, seller)| {
                    (
                        ChannelId([c; 32]),
                        Version(i + 1),
                        Trade {
                            seller,
                            interval: IntervalIndex(first + i),
                            energy: WattHours(100),
                            price: PricePerKwh(200_000),
                            amount: Amount(20_000),
                            book: gridchan_channel::NO_BOOK,
                        },
                        [i as u8; 32],
                    )
                })
            })
            .collect();
        store.write_batch(&[], &trades).unwrap();
        let log = crate::readings::ReadingLog::open(path).unwrap();
        for i in 0..n {
            let r = gridchan_channel::metering::MeterReading {
                import: WattHours(10),
                export: WattHours(30),
            };
            log.record(IntervalIndex(first + i), r).unwrap();
        }
    }

    #[test]
    fn old_intervals_roll_into_daily_totals_that_keep_every_sum_and_the_proof() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("channels.sqlite");
        let p = policy();
        // Five local days of 96 intervals from 2026-11-02 00:00 in Amsterdam (23:00 UTC).
        let first = 1_793_574_000 / 900;
        settle(&path, first, 5 * 96);
        let now_ms = (1_793_574_000 + 5 * 86_400) * 1000 + 3_600_000;
        let before = p.cutoff(now_ms);
        assert_eq!(p.day_of(before), "2026-11-05");
        assert_eq!(p.day_of(IntervalIndex(before.0 - 1)), "2026-11-04");
        // We are party A of both channels.
        let me = |_: &ChannelId| Party::A;
        let mut h = History::open(&path).unwrap();
        let done = h
            .compact(before, &|i| p.day_of(i), &|c, i, seller, e| {
                p.grid_value(i, me(c) == seller, e)
            })
            .unwrap();
        // Three whole days rolled up, two kept per interval.
        assert_eq!(
            done,
            Compacted {
                trades: 2 * 3 * 96,
                readings: 3 * 96
            }
        );
        let days = h.days("2026-11-01", "2026-11-30").unwrap();
        assert_eq!(days.len(), 2 * 3);
        let sold = &days[0];
        assert_eq!((sold.day.as_str(), sold.seller), ("2026-11-02", Party::A));
        assert_eq!(
            (sold.energy_wh, sold.amount, sold.intervals),
            (9_600, 1_920_000, 96)
        );
        // 9.6 kWh at the feed-in's 0.08 (sold) and the retail's 0.30 (bought).
        assert_eq!(sold.grid_value, Some(768_000));
        assert_eq!(days[1].grid_value, Some(2_880_000));
        assert_eq!((sold.first_version, sold.last_version), (1, 96));
        assert_eq!(sold.last_digest, Some([95; 32]));
        let readings = h.reading_days("2026-11-02", "2026-11-04").unwrap();
        assert_eq!(readings.len(), 3);
        assert_eq!((readings[0].import_wh, readings[0].export_wh), (960, 2_880));
        // Nothing rolled twice; the two days kept are still per interval.
        let again = h
            .compact(before, &|i| p.day_of(i), &|_, _, _, _| None)
            .unwrap();
        assert_eq!(again, Compacted::default());
        let store = crate::store::SqliteStore::open(&path).unwrap();
        assert_eq!(
            store
                .settled_between(IntervalIndex(0), IntervalIndex(u64::MAX / 2))
                .unwrap()
                .len(),
            2 * 2 * 96
        );
    }
}
