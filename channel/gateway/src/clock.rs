//! The daemon's clock: wall time, or wall time sped up for demos and tests (a simulated day in
//! seconds). Metering intervals, meter readings and tariffs follow this clock; protocol
//! timeouts follow real time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Simulated milliseconds since the Unix epoch, advancing `speedup` times faster than real ones
/// from `origin`. Clones share the origin: a clock held at its start ([`SimClock::held`])
/// starts everywhere at once.
#[derive(Clone, Debug)]
pub struct SimClock {
    /// Real ms at the origin; `u64::MAX` while held.
    origin_real_ms: Arc<AtomicU64>,
    /// Simulated ms at the origin (moved only by [`SimClock::hold_at`], on a held clock).
    origin_sim_ms: Arc<AtomicU64>,
    speedup: u32,
}

/// Clocks are equal when they tell the same time the same way.
impl PartialEq for SimClock {
    fn eq(&self, other: &SimClock) -> bool {
        self.origin_real_ms.load(Ordering::Relaxed) == other.origin_real_ms.load(Ordering::Relaxed)
            && self.origin_sim_ms.load(Ordering::Relaxed)
                == other.origin_sim_ms.load(Ordering::Relaxed)
            && self.speedup == other.speedup
    }
}

impl Eq for SimClock {}

fn real_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl SimClock {
    /// Wall time.
    pub fn real() -> SimClock {
        let now = real_now_ms();
        SimClock {
            origin_real_ms: Arc::new(AtomicU64::new(now)),
            origin_sim_ms: Arc::new(AtomicU64::new(now)),
            speedup: 1,
        }
    }

    /// Simulated time starting at `sim_start_ms` now, `speedup` times faster than wall time.
    pub fn accelerated(sim_start_ms: u64, speedup: u32) -> SimClock {
        SimClock {
            origin_real_ms: Arc::new(AtomicU64::new(real_now_ms())),
            origin_sim_ms: Arc::new(AtomicU64::new(sim_start_ms)),
            speedup: speedup.max(1),
        }
    }

    /// A clock that ran from `epoch_ms` at `speedup` times wall time: the same on every gateway
    /// with the same speedup and epoch, whenever each started, so a daemon that restarts finds
    /// its neighbours' intervals where it left them.
    pub fn scaled_since(epoch_ms: u64, speedup: u32) -> SimClock {
        SimClock {
            origin_real_ms: Arc::new(AtomicU64::new(epoch_ms)),
            origin_sim_ms: Arc::new(AtomicU64::new(epoch_ms)),
            speedup: speedup.max(1),
        }
    }

    /// A clock that stays at `sim_start_ms` until [`SimClock::start`], then runs `speedup` times
    /// faster than wall time: a demo's day that begins once every channel is funded.
    pub fn held(sim_start_ms: u64, speedup: u32) -> SimClock {
        SimClock {
            origin_real_ms: Arc::new(AtomicU64::new(u64::MAX)),
            origin_sim_ms: Arc::new(AtomicU64::new(sim_start_ms)),
            speedup: speedup.max(1),
        }
    }

    /// Starts a held clock now (every clone with it); a running clock is not changed.
    pub fn start(&self) {
        let _ = self.origin_real_ms.compare_exchange(
            u64::MAX,
            real_now_ms(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// Moves a held clock (every clone with it) to `sim_ms`: tests step time this way. A clock
    /// that runs is not changed.
    pub fn hold_at(&self, sim_ms: u64) {
        if self.origin_real_ms.load(Ordering::SeqCst) == u64::MAX {
            self.origin_sim_ms.store(sim_ms, Ordering::SeqCst);
        }
    }

    pub fn now_ms(&self) -> u64 {
        let origin = self.origin_real_ms.load(Ordering::Relaxed);
        let real = real_now_ms().saturating_sub(origin);
        self.origin_sim_ms.load(Ordering::Relaxed) + real * u64::from(self.speedup)
    }

    /// Real time until the simulated instant `sim_ms`.
    pub fn until(&self, sim_ms: u64) -> Duration {
        Duration::from_micros(sim_ms.saturating_sub(self.now_ms()) * 1000 / u64::from(self.speedup))
    }
}

/// `unix_seconds` as a person reads it in a log: `2026-12-07 19:45 UTC`.
pub fn utc_minute(unix_seconds: u64) -> String {
    jiff::Timestamp::from_second(unix_seconds as i64)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| format!("{unix_seconds} s after 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_clock_waits_for_its_start_in_every_clone() {
        let c = SimClock::held(5_000, 1000);
        let twin = c.clone();
        assert_eq!(twin.now_ms(), 5_000);
        c.start();
        let t = std::time::Instant::now();
        while twin.now_ms() == 5_000 {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the clone never started"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn scaled_clocks_agree_whenever_they_were_made() {
        let epoch = real_now_ms() - 10_000;
        let a = SimClock::scaled_since(epoch, 96);
        let b = SimClock::scaled_since(epoch, 96);
        let (ta, tb) = (a.now_ms(), b.now_ms());
        // Ten real seconds after the epoch: 960 simulated ones.
        assert!(
            ta >= epoch + 960_000 && tb.abs_diff(ta) < 96 * 1_000,
            "{ta} {tb}"
        );
    }

    #[test]
    fn an_accelerated_clock_runs_faster() {
        let c = SimClock::accelerated(1_000_000, 1000);
        assert!(c.now_ms() >= 1_000_000);
        // 900 simulated seconds are 0.9 real seconds at 1000x.
        let d = c.until(c.now_ms() + 900_000);
        assert!(
            d <= Duration::from_millis(900) && d > Duration::from_millis(800),
            "{d:?}"
        );
    }
}
