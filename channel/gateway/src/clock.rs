//! The daemon's clock: wall time, or wall time sped up for demos and tests (a simulated day in
//! seconds). Metering intervals, meter readings and tariffs follow this clock; protocol
//! timeouts follow real time.

use std::time::Duration;

/// Simulated milliseconds since the Unix epoch, advancing `speedup` times faster than real ones
/// from `origin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimClock {
    origin_real_ms: u64,
    origin_sim_ms: u64,
    speedup: u32,
}

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
            origin_real_ms: now,
            origin_sim_ms: now,
            speedup: 1,
        }
    }

    /// Simulated time starting at `sim_start_ms` now, `speedup` times faster than wall time.
    pub fn accelerated(sim_start_ms: u64, speedup: u32) -> SimClock {
        SimClock {
            origin_real_ms: real_now_ms(),
            origin_sim_ms: sim_start_ms,
            speedup: speedup.max(1),
        }
    }

    pub fn now_ms(&self) -> u64 {
        let real = real_now_ms().saturating_sub(self.origin_real_ms);
        self.origin_sim_ms + real * u64::from(self.speedup)
    }

    /// Real time until the simulated instant `sim_ms`.
    pub fn until(&self, sim_ms: u64) -> Duration {
        Duration::from_micros(sim_ms.saturating_sub(self.now_ms()) * 1000 / u64::from(self.speedup))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
