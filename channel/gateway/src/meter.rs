//! Meter sources: where a gateway's interval readings come from.

use std::path::Path;

use gridchan_channel::{IntervalIndex, WattHours};
use rand::{Rng, SeedableRng};

pub use gridchan_channel::metering::MeterReading;

/// What the daemon's metering job last saw, for `gridchan status`: a meter (or a recording)
/// that stops giving readings stops the trading, and the household should see why.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MeterStatus {
    /// The last interval with a reading: its start (Unix seconds), imported and exported Wh.
    pub last_read: Option<(u64, u64, u64)>,
    /// The start (Unix seconds) of the first interval since then that the meter had no
    /// reading for.
    pub missing_since: Option<u64>,
}

/// A source of meter readings, one per metering interval.
pub trait MeterSource: Send {
    /// The reading of `interval`, or `None` if the source has none for it.
    fn reading(&mut self, interval: IntervalIndex) -> Option<MeterReading>;
}

/// Why a CSV file of readings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("cannot read {path}: {detail}")]
    Io { path: String, detail: String },
    #[error(
        "{path}: the header lacks column {column:?} (need timestamp_utc, import_wh, export_wh)"
    )]
    MissingColumn { path: String, column: &'static str },
    #[error("{path} line {line}: {detail}")]
    BadRow {
        path: String,
        line: usize,
        detail: String,
    },
    #[error("{path}: no readings")]
    Empty { path: String },
}

/// Replays recorded readings (`timestamp_utc,load_wh,pv_wh,import_wh,export_wh`, columns found
/// by name, one row per interval). Row `k` is played as interval `anchor + k`.
pub struct CsvMeter {
    rows: Vec<MeterReading>,
    anchor: IntervalIndex,
}

impl CsvMeter {
    pub fn open(path: &Path, anchor: IntervalIndex) -> Result<CsvMeter, CsvError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| CsvError::Io {
            path: name.clone(),
            detail: e.to_string(),
        })?;
        CsvMeter::parse(&name, &text, anchor)
    }

    pub fn parse(name: &str, text: &str, anchor: IntervalIndex) -> Result<CsvMeter, CsvError> {
        let mut lines = text.lines().enumerate();
        let header: Vec<&str> = lines
            .next()
            .map(|(_, h)| h.split(',').map(str::trim).collect())
            .unwrap_or_default();
        let col = |column: &'static str| {
            header
                .iter()
                .position(|h| *h == column)
                .ok_or(CsvError::MissingColumn {
                    path: name.to_string(),
                    column,
                })
        };
        let (ts, imp, exp) = (col("timestamp_utc")?, col("import_wh")?, col("export_wh")?);
        let mut rows = Vec::new();
        for (i, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |detail: String| CsvError::BadRow {
                path: name.to_string(),
                line: i + 1,
                detail,
            };
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() != header.len() {
                return Err(bad(format!(
                    "{} fields, the header has {}",
                    fields.len(),
                    header.len()
                )));
            }
            if fields[ts].is_empty() {
                return Err(bad("empty timestamp".into()));
            }
            let wh = |k: usize, what: &str| {
                fields[k].parse::<u64>().map(WattHours).map_err(|_| {
                    bad(format!(
                        "{what} {:?} is not a whole number of Wh",
                        fields[k]
                    ))
                })
            };
            rows.push(MeterReading {
                import: wh(imp, "import_wh")?,
                export: wh(exp, "export_wh")?,
            });
        }
        if rows.is_empty() {
            return Err(CsvError::Empty {
                path: name.to_string(),
            });
        }
        Ok(CsvMeter { rows, anchor })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl MeterSource for CsvMeter {
    fn reading(&mut self, interval: IntervalIndex) -> Option<MeterReading> {
        let k = interval.0.checked_sub(self.anchor.0)?;
        self.rows.get(usize::try_from(k).ok()?).copied()
    }
}

/// A seeded simulation of one home: rooftop solar with a daylight bell shape and passing
/// clouds, and a household load with a night base, a morning and an evening peak, and noise.
/// The same seed and interval always give the same reading.
pub struct SimulatedMeter {
    pub seed: u64,
    /// Peak solar output in watts (0 for a home without panels).
    pub pv_peak_w: u32,
    /// Average household load in watts.
    pub load_avg_w: u32,
    pub interval_seconds: u32,
    /// Local time offset from UTC, in minutes.
    pub utc_offset_minutes: i32,
}

impl SimulatedMeter {
    fn watts(&self, interval: IntervalIndex) -> (f64, f64) {
        let start = interval.0 as i64 * i64::from(self.interval_seconds);
        let local = start + i64::from(self.utc_offset_minutes) * 60;
        let hour = (local.rem_euclid(86_400)) as f64 / 3_600.0;
        let mut rng = rand::rngs::StdRng::seed_from_u64(
            self.seed ^ interval.0.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        // Solar: a sine between 06:00 and 18:00 local, scaled by a cloud factor per interval.
        let sun = if (6.0..18.0).contains(&hour) {
            (std::f64::consts::PI * (hour - 6.0) / 12.0).sin()
        } else {
            0.0
        };
        let clouds: f64 = rng.random_range(0.55..1.0);
        let pv = f64::from(self.pv_peak_w) * sun * clouds;
        // Load: base, plus bumps around 07:30 and 19:00, plus noise.
        let bump = |centre: f64, width: f64| (-((hour - centre) / width).powi(2)).exp();
        let shape = 0.55 + 0.9 * bump(7.5, 1.2) + 1.4 * bump(19.0, 2.0);
        let noise: f64 = rng.random_range(0.8..1.2);
        let load = f64::from(self.load_avg_w) * shape * noise;
        (pv, load)
    }
}

impl MeterSource for SimulatedMeter {
    fn reading(&mut self, interval: IntervalIndex) -> Option<MeterReading> {
        let (pv, load) = self.watts(interval);
        let hours = f64::from(self.interval_seconds) / 3_600.0;
        let net_wh = ((pv - load) * hours).round() as i64;
        Some(if net_wh >= 0 {
            MeterReading {
                import: WattHours(0),
                export: WattHours(net_wh as u64),
            }
        } else {
            MeterReading {
                import: WattHours(net_wh.unsigned_abs()),
                export: WattHours(0),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "timestamp_utc,load_wh,pv_wh,import_wh,export_wh\n\
        2025-07-14T00:00:00Z,63,0,63,0\n\
        2025-07-14T00:15:00Z,40,90,0,50\n";

    #[test]
    fn csv_rows_play_from_the_anchor() {
        let mut m = CsvMeter::parse("sample", SAMPLE, IntervalIndex(100)).unwrap();
        assert_eq!(m.reading(IntervalIndex(99)), None);
        assert_eq!(
            m.reading(IntervalIndex(100)),
            Some(MeterReading {
                import: WattHours(63),
                export: WattHours(0)
            })
        );
        assert_eq!(m.reading(IntervalIndex(101)).unwrap().export, WattHours(50));
        assert_eq!(m.reading(IntervalIndex(102)), None);
    }

    #[test]
    fn columns_are_found_by_name() {
        let text = "export_wh,timestamp_utc,import_wh\n7,2025-01-01T00:00:00Z,0\n";
        let mut m = CsvMeter::parse("x", text, IntervalIndex(0)).unwrap();
        assert_eq!(m.reading(IntervalIndex(0)).unwrap().export, WattHours(7));
    }

    #[test]
    fn a_malformed_row_is_reported_with_its_line() {
        let text = format!("{SAMPLE}2025-07-14T00:30:00Z,1,2,x,0\n");
        let err = CsvMeter::parse("home.csv", &text, IntervalIndex(0))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "home.csv line 4: import_wh \"x\" is not a whole number of Wh"
        );
        let err = CsvMeter::parse("home.csv", "timestamp_utc,import_wh\n", IntervalIndex(0))
            .err()
            .unwrap();
        assert!(err.to_string().contains("export_wh"));
        let short = format!("{SAMPLE}2025-07-14T00:30:00Z,1\n");
        let err = CsvMeter::parse("h", &short, IntervalIndex(0))
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "h line 4: 2 fields, the header has 5");
    }

    #[test]
    fn the_simulation_is_seeded_and_shaped_like_a_day() {
        let meter = |seed| SimulatedMeter {
            seed,
            pv_peak_w: 5_000,
            load_avg_w: 400,
            interval_seconds: 900,
            utc_offset_minutes: 0,
        };
        let day = 1_736_726_400 / 900; // 2025-01-13 00:00 UTC
        let mut a = meter(1);
        let mut b = meter(1);
        let readings: Vec<_> = (0..96)
            .map(|i| a.reading(IntervalIndex(day + i)).unwrap())
            .collect();
        let again: Vec<_> = (0..96)
            .map(|i| b.reading(IntervalIndex(day + i)).unwrap())
            .collect();
        assert_eq!(readings, again, "same seed, same day");
        assert!(
            readings[..20].iter().all(|r| r.export.0 == 0),
            "no export at night"
        );
        assert!(
            readings[44..52].iter().all(|r| r.export.0 > 0),
            "export around noon"
        );
        let mut c = meter(2);
        assert_ne!(
            readings,
            (0..96)
                .map(|i| c.reading(IntervalIndex(day + i)).unwrap())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_shipped_data_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../data/neighbourhood/home-03.csv");
        let m = CsvMeter::open(&path, IntervalIndex(0)).unwrap();
        assert_eq!(m.len(), 4 * 7 * 96);
    }
}
