//! The meter's interval readings, kept in the gateway's file beside its channels: what a
//! statement's quarter-hour balances and a household's day are drawn from (`gridchan report`).
//! A reading is the home's own record; nothing signed depends on it.

use std::path::Path;
use std::sync::Mutex;

use gridchan_channel::metering::MeterReading;
use gridchan_channel::{IntervalIndex, StoreError};
use rusqlite::{params, Connection};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS readings (
    interval INTEGER PRIMARY KEY,
    import_wh INTEGER NOT NULL,
    export_wh INTEGER NOT NULL
);";

/// The readings table of a gateway's file. The connection is opened for each use, not held:
/// one reading an interval does not need one, and a host running a thousand homes in one
/// process (the demo) needs the file descriptors.
pub struct ReadingLog {
    path: std::path::PathBuf,
    conn: Mutex<Option<Connection>>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::WriteFailed(e.to_string())
}

impl ReadingLog {
    /// Opens the table in the gateway's file at `path` (creating it if the file has none).
    pub fn open(path: &Path) -> Result<ReadingLog, StoreError> {
        let log = ReadingLog {
            path: path.to_path_buf(),
            conn: Mutex::new(None),
        };
        log.conn()?.execute_batch(SCHEMA).map_err(err)?;
        Ok(log)
    }

    /// The connection for one use (closed when the guard's scope ends).
    fn conn(&self) -> Result<Connected<'_>, StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let conn = crate::sqlite::open(&self.path).map_err(err)?;
            // Nothing signed depends on a reading: no flush to the disk per interval (a crash
            // may lose the last few, which the statement then shows as unread).
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(err)?;
            *guard = Some(conn);
        }
        Ok(Connected(guard))
    }
}

/// A reading log's connection, closed when dropped.
struct Connected<'a>(std::sync::MutexGuard<'a, Option<Connection>>);

impl std::ops::Deref for Connected<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.0.as_ref().expect("opened by ReadingLog::conn")
    }
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.take();
    }
}

impl ReadingLog {
    /// Keeps the meter's reading of `interval` (a second reading of it replaces the first).
    pub fn record(&self, interval: IntervalIndex, r: MeterReading) -> Result<(), StoreError> {
        self.conn()?
            .execute(
                "INSERT OR REPLACE INTO readings (interval, import_wh, export_wh) VALUES (?1, ?2, ?3)",
                params![interval.0 as i64, r.import.0 as i64, r.export.0 as i64],
            )
            .map(|_| ())
            .map_err(err)
    }

    /// The readings from `from` to `to` (both included), oldest first.
    pub fn between(
        &self,
        from: IntervalIndex,
        to: IntervalIndex,
    ) -> Result<Vec<(IntervalIndex, MeterReading)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT interval, import_wh, export_wh FROM readings
                 WHERE interval >= ?1 AND interval <= ?2 ORDER BY interval",
            )
            .map_err(|e| StoreError::ReadFailed(e.to_string()))?;
        let rows = stmt
            .query_map(params![from.0 as i64, to.0 as i64], |r| {
                Ok((
                    IntervalIndex(r.get::<_, i64>(0)? as u64),
                    MeterReading {
                        import: gridchan_channel::WattHours(r.get::<_, i64>(1)? as u64),
                        export: gridchan_channel::WattHours(r.get::<_, i64>(2)? as u64),
                    },
                ))
            })
            .map_err(|e| StoreError::ReadFailed(e.to_string()))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::ReadFailed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridchan_channel::WattHours;

    #[test]
    fn readings_are_kept_by_interval_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = ReadingLog::open(&dir.path().join("channels.sqlite")).unwrap();
        let r = |i, e| MeterReading {
            import: WattHours(i),
            export: WattHours(e),
        };
        log.record(IntervalIndex(7), r(5, 0)).unwrap();
        log.record(IntervalIndex(5), r(0, 9)).unwrap();
        log.record(IntervalIndex(7), r(6, 0)).unwrap();
        log.record(IntervalIndex(9), r(1, 1)).unwrap();
        assert_eq!(
            log.between(IntervalIndex(5), IntervalIndex(8)).unwrap(),
            vec![(IntervalIndex(5), r(0, 9)), (IntervalIndex(7), r(6, 0))]
        );
    }
}
