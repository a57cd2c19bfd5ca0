//! A seeded simulation of one home's meter, for demos and for trying gridchan without a meter.

use gridchan_channel::{IntervalIndex, WattHours};
use rand::{Rng, SeedableRng};

use super::{MeterReading, MeterSource};

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
    /// The home's time zone: the sun follows its local time, daylight saving included.
    pub zone: jiff::tz::TimeZone,
}

impl SimulatedMeter {
    fn watts(&self, interval: IntervalIndex) -> (f64, f64) {
        let start = interval.0 as i64 * i64::from(self.interval_seconds);
        let offset = jiff::Timestamp::from_second(start)
            .map(|t| self.zone.to_offset(t).seconds())
            .unwrap_or(0);
        let hour = ((start + i64::from(offset)).rem_euclid(86_400)) as f64 / 3_600.0;
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

    #[test]
    fn the_simulation_is_seeded_and_shaped_like_a_day() {
        let meter = |seed| SimulatedMeter {
            seed,
            pv_peak_w: 5_000,
            load_avg_w: 400,
            interval_seconds: 900,
            zone: jiff::tz::TimeZone::UTC,
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
}
