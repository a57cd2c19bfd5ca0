//! One daemon per data folder: an exclusive lock held for the daemon's life.
//!
//! Two daemons on one folder would both write its database and fight over its control socket
//! (the second takes it over, and deletes it on exit). The lock is `flock` on `data/lock`, so it
//! goes with the process however it ends (a crash or `kill -9` leaves no stale lock); the file
//! holds the owner's process id, for the message the second daemon gives.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::GatewayError;

/// The data folder's lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataLock {
    _file: std::fs::File,
    pub path: PathBuf,
}

impl DataLock {
    /// Takes the lock of the data folder `data`, or says which process holds it.
    pub fn take(data: &Path) -> Result<DataLock, GatewayError> {
        let path = data.join("lock");
        let io =
            |e: std::io::Error| GatewayError::Store(format!("cannot lock {}: {e}", path.display()));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let owner = match owner.trim() {
                    "" => "another process".to_string(),
                    pid => format!("process {pid}"),
                };
                return Err(GatewayError::Store(format!(
                    "{} is in use by {owner} (a daemon runs on it): stop that daemon first, or give this one its own data folder",
                    data.display()
                )));
            }
            Err(e) => return Err(io(e.into())),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DataLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_folder_is_refused_naming_the_holder_until_the_first_goes() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataLock::take(dir.path()).unwrap();
        let err = DataLock::take(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("is in use by process {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("stop that daemon first"), "{err}");
        drop(first);
        DataLock::take(dir.path()).unwrap();
    }
}
