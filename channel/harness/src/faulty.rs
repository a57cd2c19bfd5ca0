//! A store that fails or stops on command, for crash tests: a wrapper around any
//! [`ChannelStore`] (the in-memory one, or the gateway's SQLite store), implementing the same
//! trait, so that the code under test runs against it unchanged.

use std::sync::{Arc, Mutex, MutexGuard};

use gridchan_channel::{
    ChannelId, ChannelRecord, ChannelStore, MemoryStore, Settled, StoreError, Trade, Version,
};

/// What happens to writes once the countdown runs out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFault {
    /// Writes return an error (a full or broken disk): the channel should freeze.
    Fail,
    /// The process stops before the write lands (power cut): the host must crash.
    Stop,
}

#[derive(Debug, Default)]
struct Faults {
    countdown: Option<(u64, WriteFault)>,
    stopped: bool,
}

impl Faults {
    /// Whether the next write goes through (and counts it).
    fn admit(&mut self) -> Result<(), StoreError> {
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
        Ok(())
    }
}

/// A store that, after a number of successful writes, fails or stops. A batch counts as one
/// write, and fails whole.
#[derive(Debug, Default)]
pub struct FaultyStore<S = MemoryStore> {
    inner: S,
    faults: Arc<Mutex<Faults>>,
}

/// Controls the faults of a [`FaultyStore`] that was handed to someone else (an engine on its
/// own thread).
#[derive(Clone, Debug)]
pub struct FaultSwitch(Arc<Mutex<Faults>>);

fn lock(faults: &Mutex<Faults>) -> MutexGuard<'_, Faults> {
    faults.lock().unwrap_or_else(|p| p.into_inner())
}

impl FaultSwitch {
    /// After `writes` more successful writes, apply `fault` to every following one.
    pub fn fail_after(&self, writes: u64, fault: WriteFault) {
        lock(&self.0).countdown = Some((writes, fault));
    }

    /// Every write fails from now on (a disk that just broke).
    pub fn fail_now(&self) {
        self.fail_after(0, WriteFault::Fail);
    }

    /// Writes succeed again.
    pub fn heal(&self) {
        let mut f = lock(&self.0);
        f.countdown = None;
        f.stopped = false;
    }

    /// Whether a write hit a [`WriteFault::Stop`]: the host must crash now.
    pub fn stopped(&self) -> bool {
        lock(&self.0).stopped
    }
}

impl<S> FaultyStore<S> {
    /// `inner`, writing normally until told otherwise.
    pub fn new(inner: S) -> FaultyStore<S> {
        FaultyStore {
            inner,
            faults: Arc::default(),
        }
    }

    /// A handle on this store's faults that stays with the caller.
    pub fn switch(&self) -> FaultSwitch {
        FaultSwitch(self.faults.clone())
    }

    /// After `writes` more successful writes, apply `fault` to every following one.
    pub fn fail_after(&mut self, writes: u64, fault: WriteFault) {
        self.switch().fail_after(writes, fault);
    }

    /// Writes succeed again.
    pub fn heal(&mut self) {
        self.switch().heal();
    }

    /// Whether a write hit a [`WriteFault::Stop`]: the host must crash now.
    pub fn stopped(&self) -> bool {
        self.switch().stopped()
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: ChannelStore> ChannelStore for FaultyStore<S> {
    fn write(&mut self, record: &ChannelRecord) -> Result<(), StoreError> {
        lock(&self.faults).admit()?;
        self.inner.write(record)
    }

    fn load(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.inner.load()
    }

    fn write_batch(
        &mut self,
        records: &[&ChannelRecord],
        settled: &[Settled],
    ) -> Result<(), StoreError> {
        lock(&self.faults).admit()?;
        self.inner.write_batch(records, settled)
    }

    fn recent_settled(
        &self,
        channel: &ChannelId,
        n: usize,
    ) -> Result<Vec<(Version, Trade)>, StoreError> {
        self.inner.recent_settled(channel, n)
    }
}
