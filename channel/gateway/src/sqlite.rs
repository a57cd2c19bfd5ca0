//! Opening the gateway's SQLite file, the way every part of the gateway does: WAL, each commit
//! durable (`synchronous = FULL`), and waiting for another connection's transaction instead of
//! failing.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

/// A connection to the gateway's file at `path` (created if missing).
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}
