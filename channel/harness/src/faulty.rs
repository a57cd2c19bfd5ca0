//! A store that fails or stops on command, for crash tests.

use gridchan_channel::{ChannelRecord, ChannelStore, MemoryStore, StoreError};

/// What happens to writes once the countdown runs out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFault {
    /// Writes return an error (a full or broken disk): the channel should freeze.
    Fail,
    /// The process stops before the write lands (power cut): the host must crash.
    Stop,
}

/// A [`MemoryStore`] that, after a number of successful writes, fails or stops.
#[derive(Clone, Debug, Default)]
pub struct FaultyStore {
    inner: MemoryStore,
    countdown: Option<(u64, WriteFault)>,
    stopped: bool,
}

impl FaultyStore {
    /// After `writes` more successful writes, apply `fault` to every following one.
    pub fn fail_after(&mut self, writes: u64, fault: WriteFault) {
        self.countdown = Some((writes, fault));
    }

    /// Writes succeed again.
    pub fn heal(&mut self) {
        self.countdown = None;
        self.stopped = false;
    }

    /// Whether a write hit a [`WriteFault::Stop`]: the host must crash now.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    pub fn inner(&self) -> &MemoryStore {
        &self.inner
    }
}

impl ChannelStore for FaultyStore {
    fn write(&mut self, record: &ChannelRecord) -> Result<(), StoreError> {
        if self.stopped {
            return Err(StoreError::WriteFailed("process stopped".into()));
        }
        if let Some((left, fault)) = &mut self.countdown {
            if *left == 0 {
                if *fault == WriteFault::Stop {
                    self.stopped = true;
                }
                return Err(StoreError::WriteFailed("injected fault".into()));
            }
            *left -= 1;
        }
        self.inner.write(record)
    }

    fn load(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.inner.load()
    }
}
