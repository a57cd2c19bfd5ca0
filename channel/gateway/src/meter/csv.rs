//! Readings from a CSV file: one row per interval, named by its start time.
//!
//! The header names the columns, in any order: the interval's start (`timestamp_utc`, or
//! `timestamp` with a UTC offset such as `2025-07-14T02:00:00+02:00`), and the energy imported and
//! exported in it, in Wh (`import_wh`, `export_wh`, whole numbers) or kWh (`import_kwh`,
//! `export_kwh`, rounded to the Wh). The separator is `,`, `;` or a tab, whichever the header
//! uses; with `;` or a tab a decimal comma is read too. A row is the reading of the interval it
//! names; an interval without a row has no reading. A bad row (a field that does not parse, a time
//! not at an interval's start, a second row for one interval) is reported with its line and left
//! out; the good rows are kept. The file is read again when it changes, so a logger may append to
//! it while the daemon runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gridchan_channel::{IntervalIndex, WattHours};

use super::{MeterReading, MeterSource};

/// Why a CSV file of readings cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("cannot read {path}: {detail}")]
    Io { path: String, detail: String },
    #[error("{path}: the header lacks {column} (need timestamp_utc or timestamp, import_wh or import_kwh, export_wh or export_kwh)")]
    MissingColumn { path: String, column: &'static str },
    #[error("{path}: no good rows{}", first_problem.as_ref().map(|p| format!(" (first problem: {p})")).unwrap_or_default())]
    Empty {
        path: String,
        first_problem: Option<String>,
    },
}

/// Readings from a CSV file, keyed by interval.
pub struct CsvMeter {
    rows: BTreeMap<u64, MeterReading>,
    problems: Vec<String>,
    interval_seconds: u32,
    /// Intervals added to every row's own (a recording played on other days).
    shift: i64,
    /// The file and when it last changed, to read it again when it does.
    file: Option<(PathBuf, Option<SystemTime>)>,
}

/// A column's unit: Wh, or kWh (scaled and rounded to the Wh).
#[derive(Clone, Copy)]
enum Unit {
    Wh,
    Kwh,
}

impl CsvMeter {
    /// Reads `path`; the problems with single rows are logged and kept ([`CsvMeter::problems`]).
    pub fn open(path: &Path, interval_seconds: u32) -> Result<CsvMeter, CsvError> {
        let name = path.display().to_string();
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let text = std::fs::read_to_string(path).map_err(|e| CsvError::Io {
            path: name.clone(),
            detail: e.to_string(),
        })?;
        let mut meter = CsvMeter::parse(&name, &text, interval_seconds)?;
        for p in &meter.problems {
            tracing::warn!("meter csv: {p} (row left out)");
        }
        meter.file = Some((path.to_path_buf(), modified));
        Ok(meter)
    }

    /// Parses `text` (`name` is what the problems call it).
    pub fn parse(name: &str, text: &str, interval_seconds: u32) -> Result<CsvMeter, CsvError> {
        let mut lines = text.lines().enumerate();
        let header_line = lines.next().map(|(_, h)| h).unwrap_or_default();
        let sep = [';', '\t', ',']
            .into_iter()
            .find(|c| header_line.contains(*c))
            .unwrap_or(',');
        let header: Vec<&str> = header_line.split(sep).map(str::trim).collect();
        let find = |names: &[&str]| header.iter().position(|h| names.contains(h));
        let missing = |column| CsvError::MissingColumn {
            path: name.to_string(),
            column,
        };
        let ts = find(&["timestamp_utc", "timestamp"]).ok_or(missing("a timestamp column"))?;
        let naive_is_utc = header[ts] == "timestamp_utc";
        let unit_of = |wh: &str, kwh: &str, what| match (find(&[wh]), find(&[kwh])) {
            (Some(k), _) => Ok((k, Unit::Wh)),
            (None, Some(k)) => Ok((k, Unit::Kwh)),
            (None, None) => Err(missing(what)),
        };
        let (imp, exp) = (
            unit_of("import_wh", "import_kwh", "an import column")?,
            unit_of("export_wh", "export_kwh", "an export column")?,
        );
        let mut rows = BTreeMap::new();
        let mut first_line = BTreeMap::new();
        let mut problems = Vec::new();
        for (i, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split(sep).map(str::trim).collect();
            let row = if fields.len() != header.len() {
                Err(format!(
                    "{} fields, the header has {}",
                    fields.len(),
                    header.len()
                ))
            } else {
                row(&fields, ts, naive_is_utc, imp, exp, sep, interval_seconds)
            };
            let problem = match row {
                Ok((interval, reading)) => match first_line.get(&interval) {
                    Some(first) => {
                        format!("repeats the interval of line {first} (the first row is kept)")
                    }
                    None => {
                        first_line.insert(interval, i + 1);
                        rows.insert(interval, reading);
                        continue;
                    }
                },
                Err(p) => p,
            };
            problems.push(format!("{name} line {}: {problem}", i + 1));
        }
        if rows.is_empty() {
            return Err(CsvError::Empty {
                path: name.to_string(),
                first_problem: problems.into_iter().next(),
            });
        }
        Ok(CsvMeter {
            rows,
            problems,
            interval_seconds,
            shift: 0,
            file: None,
        })
    }

    /// The same readings moved so that the file's interval `from` is played as `at` (a recording
    /// played on other days; move it by whole days to keep each reading at its time of day).
    pub fn played(mut self, from: IntervalIndex, at: IntervalIndex) -> CsvMeter {
        self.shift = at.0 as i64 - from.0 as i64;
        self
    }

    /// The interval of the `k`-th row, in time order.
    pub fn nth_interval(&self, k: usize) -> Option<IntervalIndex> {
        self.rows.keys().nth(k).copied().map(IntervalIndex)
    }

    /// The rows left out, one line each: which line and why.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Reads the file again if it changed since it was read; keeps the readings it has if the new
    /// file cannot be used.
    fn refresh(&mut self) {
        let Some((path, seen)) = &self.file else {
            return;
        };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if modified == *seen {
            return;
        }
        let path = path.clone();
        match CsvMeter::open(&path, self.interval_seconds) {
            Ok(fresh) => {
                self.rows = fresh.rows;
                self.problems = fresh.problems;
                self.file = fresh.file;
            }
            Err(e) => {
                tracing::warn!("meter csv: {e}; keeping the readings read before");
                self.file = Some((path, modified));
            }
        }
    }
}

/// One row's interval and reading, or what is wrong with it.
fn row(
    fields: &[&str],
    ts: usize,
    naive_is_utc: bool,
    (imp, imp_unit): (usize, Unit),
    (exp, exp_unit): (usize, Unit),
    sep: char,
    interval_seconds: u32,
) -> Result<(u64, MeterReading), String> {
    let at = start_time(fields[ts], naive_is_utc)?;
    let seconds = u64::try_from(at.as_second())
        .map_err(|_| format!("timestamp {:?} is before 1970", fields[ts]))?;
    let interval_seconds = u64::from(interval_seconds.max(1));
    if seconds % interval_seconds != 0 || at.subsec_nanosecond() != 0 {
        return Err(format!(
            "timestamp {:?} is not the start of a {}-minute interval",
            fields[ts],
            interval_seconds / 60
        ));
    }
    let energy = |k: usize, unit: Unit, what: &str| {
        energy(fields[k], unit, sep)
            .ok_or_else(|| format!("{what} {:?} is not a number of {}", fields[k], unit.name()))
    };
    Ok((
        seconds / interval_seconds,
        MeterReading {
            import: energy(imp, imp_unit, "import")?,
            export: energy(exp, exp_unit, "export")?,
        },
    ))
}

/// A timestamp with a UTC offset (or `Z`), or without one in a `timestamp_utc` column.
fn start_time(field: &str, naive_is_utc: bool) -> Result<jiff::Timestamp, String> {
    if let Ok(t) = field.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    match field.parse::<jiff::civil::DateTime>() {
        Ok(civil) if naive_is_utc => civil
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .map_err(|e| format!("timestamp {field:?}: {e}")),
        Ok(_) => Err(format!(
            "timestamp {field:?} has no UTC offset (add one, or name the column timestamp_utc)"
        )),
        Err(_) => Err(format!(
            "timestamp {field:?} is not a date and time such as 2025-07-14T00:15:00Z"
        )),
    }
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Wh => "Wh (whole)",
            Unit::Kwh => "kWh",
        }
    }
}

/// `field` in Wh: a whole number of Wh, or a decimal number of kWh rounded to the Wh.
fn energy(field: &str, unit: Unit, sep: char) -> Option<WattHours> {
    match unit {
        Unit::Wh => field.parse::<u64>().ok().map(WattHours),
        Unit::Kwh => {
            let field = if sep == ',' {
                field.to_string()
            } else {
                field.replace(',', ".")
            };
            let (whole, frac) = field.split_once('.').unwrap_or((&field, ""));
            let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
            if whole.is_empty() || !digits(whole) || !digits(frac) || frac.len() > 9 {
                return None;
            }
            let nanos: u64 = format!("{frac:0<9}").parse().ok()?;
            let wh = whole.parse::<u64>().ok()?.checked_mul(1000)?;
            // 1 kWh = 10^9 nano-kWh... of which 10^6 make a Wh; round half up.
            wh.checked_add((nanos + 500_000) / 1_000_000).map(WattHours)
        }
    }
}

impl MeterSource for CsvMeter {
    fn reading(&mut self, interval: IntervalIndex) -> Option<MeterReading> {
        self.refresh();
        let own = u64::try_from(interval.0 as i64 - self.shift).ok()?;
        self.rows.get(&own).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "timestamp_utc,load_wh,pv_wh,import_wh,export_wh\n\
        2025-07-14T00:00:00Z,63,0,63,0\n\
        2025-07-14T00:15:00Z,40,90,0,50\n";

    /// The interval of 2025-07-14 00:00 UTC.
    const DAY: u64 = 1_752_451_200 / 900;

    fn reading(import: u64, export: u64) -> Option<MeterReading> {
        Some(MeterReading {
            import: WattHours(import),
            export: WattHours(export),
        })
    }

    #[test]
    fn a_row_is_the_reading_of_the_interval_it_names() {
        let mut m = CsvMeter::parse("sample", SAMPLE, 900).unwrap();
        assert_eq!(m.reading(IntervalIndex(DAY - 1)), None);
        assert_eq!(m.reading(IntervalIndex(DAY)), reading(63, 0));
        assert_eq!(m.reading(IntervalIndex(DAY + 1)), reading(0, 50));
        assert_eq!(m.reading(IntervalIndex(DAY + 2)), None);
        // Played a week later, each reading keeps its time of day.
        let mut later = CsvMeter::parse("sample", SAMPLE, 900)
            .unwrap()
            .played(IntervalIndex(DAY), IntervalIndex(DAY + 7 * 96));
        assert_eq!(
            later.reading(IntervalIndex(DAY + 7 * 96 + 1)),
            reading(0, 50)
        );
        assert_eq!(later.reading(IntervalIndex(DAY + 1)), None);
    }

    #[test]
    fn gaps_repeats_and_rows_out_of_order() {
        let text = "timestamp_utc,import_wh,export_wh\n\
            2025-07-14T01:00:00Z,4,0\n\
            2025-07-14T00:00:00Z,1,0\n\
            2025-07-14T00:15:00Z,2,0\n\
            2025-07-14T00:15:00Z,9,0\n";
        let mut m = CsvMeter::parse("h.csv", text, 900).unwrap();
        assert_eq!(m.reading(IntervalIndex(DAY)), reading(1, 0));
        assert_eq!(m.reading(IntervalIndex(DAY + 1)), reading(2, 0));
        assert_eq!(m.reading(IntervalIndex(DAY + 2)), None, "a gap");
        assert_eq!(m.reading(IntervalIndex(DAY + 4)), reading(4, 0));
        assert_eq!(
            m.problems(),
            ["h.csv line 5: repeats the interval of line 4 (the first row is kept)"]
        );
    }

    #[test]
    fn columns_separators_units_and_offsets_are_read_as_stated() {
        let text = "export_kwh;timestamp;import_kwh\n\
            0,0125;2025-07-14T02:00:00+02:00;1,5\n";
        let mut m = CsvMeter::parse("x", text, 900).unwrap();
        assert_eq!(m.reading(IntervalIndex(DAY)), reading(1_500, 13));
        let tabs = "timestamp_utc\timport_wh\texport_wh\n2025-07-14 00:00:00\t7\t0\n";
        let mut m = CsvMeter::parse("x", tabs, 900).unwrap();
        assert_eq!(m.reading(IntervalIndex(DAY)), reading(7, 0));
    }

    #[test]
    fn a_bad_row_is_reported_with_its_line_and_the_rest_kept() {
        let text = format!(
            "{SAMPLE}2025-07-14T00:30:00Z,1,2,x,0\n2025-07-14T00:45:00Z,1\n\
             2025-07-14T00:50:00Z,1,2,3,0\nyesterday,1,2,3,0\n2025-07-14T01:00:00Z,1,2,3,0\n"
        );
        let m = CsvMeter::parse("home.csv", &text, 900).unwrap();
        assert_eq!(
            m.problems(),
            [
                "home.csv line 4: import \"x\" is not a number of Wh (whole)",
                "home.csv line 5: 2 fields, the header has 5",
                "home.csv line 6: timestamp \"2025-07-14T00:50:00Z\" is not the start of a 15-minute interval",
                "home.csv line 7: timestamp \"yesterday\" is not a date and time such as 2025-07-14T00:15:00Z",
            ]
        );
        assert_eq!(m.len(), 3);
        let naive = "timestamp,import_wh,export_wh\n2025-07-14T00:00:00,1,0\n";
        let err = CsvMeter::parse("n.csv", naive, 900).err().unwrap();
        assert_eq!(
            err.to_string(),
            "n.csv: no good rows (first problem: n.csv line 2: timestamp \"2025-07-14T00:00:00\" has no UTC offset (add one, or name the column timestamp_utc))"
        );
        let err = CsvMeter::parse("home.csv", "timestamp_utc,import_wh\n", 900)
            .err()
            .unwrap();
        assert!(err.to_string().contains("lacks an export column"));
    }

    #[test]
    fn a_file_that_grows_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meter.csv");
        std::fs::write(&path, SAMPLE).unwrap();
        let mut m = CsvMeter::open(&path, 900).unwrap();
        assert_eq!(m.reading(IntervalIndex(DAY + 2)), None);
        let mut more = SAMPLE.to_string();
        more.push_str("2025-07-14T00:30:00Z,1,2,3,0\n");
        std::fs::write(&path, more).unwrap();
        // The modification time may not have moved on a coarse file system: set it.
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .append(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(m.reading(IntervalIndex(DAY + 2)), reading(3, 0));
    }

    #[test]
    fn the_shipped_data_parses() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/neighbourhood/home-03.csv");
        let m = CsvMeter::open(&path, 900).unwrap();
        assert_eq!(m.len(), 4 * 7 * 96);
        assert!(m.problems().is_empty());
    }
}
