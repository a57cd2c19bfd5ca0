//! Support for gridchan's end-to-end tests (in `tests/tests/`): loading the neighbourhood data
//! set that ships in `data/neighbourhood/`.

use std::path::PathBuf;

/// One 15-minute row of a home's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    /// Unix seconds at the start of the interval.
    pub start: u64,
    pub import_wh: u64,
    pub export_wh: u64,
}

/// The repository's copy of the neighbourhood data.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/neighbourhood")
}

/// Reads `home-NN.csv`, finding columns by name.
pub fn load_home(name: &str) -> Vec<Row> {
    let path = data_dir().join(format!("{name}.csv"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).expect("column present");
    let (ts, imp, exp) = (col("timestamp_utc"), col("import_wh"), col("export_wh"));
    lines
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            Row {
                start: parse_utc(f[ts]),
                import_wh: f[imp].parse().expect("integer Wh"),
                export_wh: f[exp].parse().expect("integer Wh"),
            }
        })
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SSZ` to Unix seconds (proleptic Gregorian, UTC).
pub fn parse_utc(s: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().expect("a number");
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let (hh, mm, ss) = (n(11..13), n(14..16), n(17..19));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + hh * 3_600 + mm * 60 + ss) as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_utc_timestamps() {
        assert_eq!(super::parse_utc("1970-01-01T00:00:00Z"), 0);
        assert_eq!(super::parse_utc("2025-01-13T00:00:00Z"), 1_736_726_400);
        assert_eq!(super::parse_utc("2024-02-29T12:15:00Z"), 1_709_208_900);
    }
}
