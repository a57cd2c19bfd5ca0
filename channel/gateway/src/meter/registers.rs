//! From a meter's cumulative registers to interval readings.
//!
//! A smart meter counts energy in registers that only grow (P1's `1-0:1.8.x` import and
//! `1-0:2.8.x` export, an MQTT meter's `total_in`/`total_out`). An interval's reading is the
//! difference of the registers across its two boundaries. The register at a boundary is the first
//! sample at or after it, provided it came within a tolerance of the boundary; a boundary without
//! such a sample has no value, and both intervals it bounds have no reading: a missed boundary is a
//! missing reading, never a guess.

use std::collections::BTreeMap;

use gridchan_channel::{IntervalIndex, WattHours};

use super::MeterReading;

/// One sample of a meter's registers: when (ms since the Unix epoch, the meter's time) and the
/// cumulative import and export in Wh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub at_ms: u64,
    pub import: WattHours,
    pub export: WattHours,
}

/// Why a sample was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The sample is not later than the last one taken (a repeat, or out of order).
    #[error("sample at {at_ms} ms is not after the last one ({last_ms} ms)")]
    NotAfter { at_ms: u64, last_ms: u64 },
    /// A register went backwards: a meter register only grows (a swapped meter, a wrong field).
    #[error("the {register} register went backwards from {from} to {to}")]
    Backwards {
        register: &'static str,
        from: WattHours,
        to: WattHours,
    },
    /// A register grew by more than the connection can carry in the time since the last sample.
    #[error(
        "the {register} register jumped by {by} in {seconds} s, more than {max_power_w} W could carry"
    )]
    Jump {
        register: &'static str,
        by: WattHours,
        seconds: u64,
        max_power_w: u64,
    },
}

/// The registers at each interval boundary seen, built from samples as they arrive.
#[derive(Debug)]
pub struct Registers {
    interval_ms: u64,
    tolerance_ms: u64,
    max_power_w: u64,
    last: Option<Sample>,
    /// The last refused sample: if the next one agrees with it, the registers really moved (a
    /// meter replaced, a register reset) and the count starts afresh from there.
    refused: Option<Sample>,
    /// Boundary `k` (time `k * interval_ms`) to the registers there.
    boundaries: BTreeMap<u64, (WattHours, WattHours)>,
}

/// How many boundaries are kept: two days of 15-minute intervals.
const KEPT: usize = 192;

impl Registers {
    /// Registers for intervals of `interval_seconds`, a connection that carries at most
    /// `max_power_w` in either direction. A sample counts as a boundary's if it came within a
    /// fifteenth of an interval after it (a minute for 15-minute intervals).
    pub fn new(interval_seconds: u32, max_power_w: u64) -> Registers {
        let interval_ms = u64::from(interval_seconds.max(1)) * 1000;
        Registers {
            interval_ms,
            tolerance_ms: interval_ms / 15,
            max_power_w,
            last: None,
            refused: None,
            boundaries: BTreeMap::new(),
        }
    }

    /// Takes a sample, or says why not (the sample is then not used at all). Two samples in a
    /// row that are refused against the last one taken but agree with each other start the
    /// count afresh: the intervals across the discontinuity have no reading.
    pub fn push(&mut self, s: Sample) -> Result<(), Refused> {
        let Some(last) = self.last else {
            self.take(s);
            return Ok(());
        };
        match self.check(&last, &s) {
            Ok(()) => {
                self.refused = None;
                self.take(s);
                Ok(())
            }
            Err(e) => {
                let anew = matches!(e, Refused::Backwards { .. } | Refused::Jump { .. })
                    && self.refused.is_some_and(|r| self.check(&r, &s).is_ok());
                if anew {
                    // Counted from here; not a boundary's sample (the first after the boundary
                    // was the refused one).
                    self.refused = None;
                    self.boundaries.clear();
                    self.last = Some(s);
                } else if !matches!(e, Refused::NotAfter { .. }) {
                    self.refused = Some(s);
                }
                Err(e)
            }
        }
    }

    /// Whether `s` can follow `last`.
    fn check(&self, last: &Sample, s: &Sample) -> Result<(), Refused> {
        {
            if s.at_ms <= last.at_ms {
                return Err(Refused::NotAfter {
                    at_ms: s.at_ms,
                    last_ms: last.at_ms,
                });
            }
            let elapsed_ms = s.at_ms - last.at_ms;
            for (register, from, to) in [
                ("import", last.import, s.import),
                ("export", last.export, s.export),
            ] {
                if to < from {
                    return Err(Refused::Backwards { register, from, to });
                }
                // What the connection carries in the time elapsed, plus one Wh of the
                // register's resolution.
                let most = self.max_power_w.saturating_mul(elapsed_ms) / 3_600_000 + 1;
                if to.0 - from.0 > most {
                    return Err(Refused::Jump {
                        register,
                        by: WattHours(to.0 - from.0),
                        seconds: elapsed_ms / 1000,
                        max_power_w: self.max_power_w,
                    });
                }
            }
        }
        Ok(())
    }

    /// Takes `s` as the newest sample, and as its boundary's if it is one.
    fn take(&mut self, s: Sample) {
        let before = self.last.replace(s);
        let k = s.at_ms / self.interval_ms;
        let boundary = k * self.interval_ms;
        // The boundary's sample is the first after it (the one before must precede it), and
        // comes within the tolerance.
        if s.at_ms - boundary <= self.tolerance_ms && before.is_none_or(|b| b.at_ms < boundary) {
            self.boundaries.entry(k).or_insert((s.import, s.export));
            while self.boundaries.len() > KEPT {
                self.boundaries.pop_first();
            }
        }
    }

    /// The reading of `interval`: the registers' growth from its start to its end, if both
    /// boundaries were seen.
    pub fn reading(&self, interval: IntervalIndex) -> Option<MeterReading> {
        let (i0, e0) = self.boundaries.get(&interval.0)?;
        let (i1, e1) = self.boundaries.get(&interval.0.checked_add(1)?)?;
        Some(MeterReading {
            import: WattHours(i1.0.checked_sub(i0.0)?),
            export: WattHours(e1.0.checked_sub(e0.0)?),
        })
    }

    /// The last sample taken.
    pub fn last(&self) -> Option<Sample> {
        self.last
    }

    /// How long after its boundary (ms) a sample still counts as the boundary's: until then an
    /// interval that just ended may yet get its reading.
    pub fn tolerance_ms(&self) -> u64 {
        self.tolerance_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const I: u64 = 900_000;

    fn sample(at_ms: u64, import: u64, export: u64) -> Sample {
        Sample {
            at_ms,
            import: WattHours(import),
            export: WattHours(export),
        }
    }

    #[test]
    fn a_reading_is_the_growth_between_the_first_samples_after_each_boundary() {
        let mut r = Registers::new(900, 17_250);
        r.push(sample(10 * I - 1_000, 990, 5)).unwrap();
        r.push(sample(10 * I + 1_000, 1_000, 5)).unwrap();
        r.push(sample(10 * I + 2_000, 1_001, 5)).unwrap(); // not the boundary's: the first counts
        r.push(sample(11 * I + 500, 1_200, 40)).unwrap();
        assert_eq!(r.reading(IntervalIndex(9)), None, "its start was not seen");
        assert_eq!(
            r.reading(IntervalIndex(10)),
            Some(MeterReading {
                import: WattHours(200),
                export: WattHours(35)
            })
        );
        assert_eq!(r.reading(IntervalIndex(11)), None, "not ended yet");
    }

    #[test]
    fn a_boundary_without_a_sample_close_after_it_is_a_missing_reading() {
        let mut r = Registers::new(900, 17_250);
        r.push(sample(10 * I, 0, 0)).unwrap();
        // The meter was silent across boundary 11: the next sample came two minutes after it.
        r.push(sample(11 * I + 120_000, 1_000, 0)).unwrap();
        r.push(sample(12 * I + 1_000, 2_000, 0)).unwrap();
        assert_eq!(r.reading(IntervalIndex(10)), None);
        assert_eq!(r.reading(IntervalIndex(11)), None);
    }

    #[test]
    fn a_register_going_backwards_or_jumping_is_refused_and_not_used() {
        let mut r = Registers::new(900, 17_250);
        r.push(sample(10 * I, 5_000, 100)).unwrap();
        assert_eq!(
            r.push(sample(10 * I + 1_000, 4_000, 100)),
            Err(Refused::Backwards {
                register: "import",
                from: WattHours(5_000),
                to: WattHours(4_000)
            })
        );
        // 17,250 W for 10 s is 47.9 Wh: 49 Wh cannot have flowed.
        let jump = r.push(sample(10 * I + 10_000, 5_000, 149)).unwrap_err();
        assert_eq!(
            jump.to_string(),
            "the export register jumped by 49 Wh in 10 s, more than 17250 W could carry"
        );
        assert!(matches!(
            r.push(sample(10 * I, 5_000, 100)),
            Err(Refused::NotAfter { .. })
        ));
        r.push(sample(10 * I + 10_000, 5_000, 148)).unwrap();
        r.push(sample(11 * I, 6_000, 148)).unwrap();
        assert_eq!(
            r.reading(IntervalIndex(10)),
            Some(MeterReading {
                import: WattHours(1_000),
                export: WattHours(48)
            })
        );
    }

    #[test]
    fn registers_that_really_moved_start_the_count_afresh() {
        let mut r = Registers::new(900, 17_250);
        r.push(sample(10 * I, 5_000, 0)).unwrap();
        r.push(sample(10 * I + 60_000, 5_100, 0)).unwrap();
        // A new meter: its registers start near zero. The first sample is refused, the next
        // that agrees with it starts the count again.
        assert!(r.push(sample(11 * I + 1_000, 3, 0)).is_err());
        assert!(r.push(sample(11 * I + 2_000, 4, 0)).is_err());
        r.push(sample(11 * I + 3_000, 5, 0)).unwrap();
        r.push(sample(12 * I + 500, 200, 0)).unwrap();
        r.push(sample(13 * I + 500, 400, 0)).unwrap();
        assert_eq!(
            r.reading(IntervalIndex(10)),
            None,
            "across the change: no reading"
        );
        assert_eq!(r.reading(IntervalIndex(11)), None);
        assert_eq!(
            r.reading(IntervalIndex(12)),
            Some(MeterReading {
                import: WattHours(200),
                export: WattHours(0)
            })
        );
        // A lone glitch is refused and the count goes on from before it.
        r.push(sample(13 * I + 1_500, 9_999_999, 0)).unwrap_err();
        r.push(sample(13 * I + 2_500, 401, 0)).unwrap();
    }

    proptest! {
        /// Whatever samples arrive, in whatever order: every reading is the registers' growth
        /// between two samples that were taken, no reading exceeds what the connection could
        /// carry in an interval and a tolerance, and the readings of consecutive intervals add up
        /// to the growth across them.
        #[test]
        fn readings_are_differences_of_taken_samples(
            steps in proptest::collection::vec((0u64..120_000, 0u64..600, 0u64..600), 1..200),
        ) {
            let mut r = Registers::new(900, 17_250);
            let (mut t, mut imp, mut exp) = (10 * I - 60_000, 0u64, 0u64);
            for (dt, di, de) in steps {
                t += dt;
                imp += di;
                exp += de;
                let _ = r.push(sample(t, imp, exp));
            }
            // The connection's power over an interval and a tolerance, plus a Wh of resolution
            // for each sample.
            let most = 17_250 * (I + I / 15) / 3_600_000 + 200;
            let mut sum = 0;
            let mut k = 10;
            while let Some(reading) = r.reading(IntervalIndex(k)) {
                prop_assert!(reading.import.0 <= most && reading.export.0 <= most);
                sum += reading.import.0;
                k += 1;
            }
            if k > 10 {
                let (first, _) = r.boundaries[&10];
                let (end, _) = r.boundaries[&k];
                prop_assert_eq!(sum, end.0 - first.0);
            }
        }
    }
}
