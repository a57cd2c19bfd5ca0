//! A simulated signing meter: any source of interval readings, with registers kept and each
//! interval's reading signed by a meter key (`specs/readings.md`). A calibrated meter signs
//! inside the meter, with a key the household cannot read; this one signs with a key file, for
//! tests, the demo, and trying channels that require signed readings without such a meter.

use std::collections::BTreeMap;

use gridchan_channel::reading::{Reading, SignedReading};
use gridchan_channel::{IntervalIndex, Signer, WattHours};

use super::{MeterReading, MeterSource};

/// How many signed readings are kept: two days of 15-minute intervals.
const KEPT: usize = 192;

/// A source whose readings come signed.
pub struct SigningMeter<M> {
    inner: M,
    key: Signer,
    interval_seconds: u32,
    /// The cumulative registers after the last interval read, and that interval.
    registers: (WattHours, WattHours),
    last: Option<IntervalIndex>,
    signed: BTreeMap<IntervalIndex, SignedReading>,
}

impl<M: MeterSource> SigningMeter<M> {
    /// Signs `inner`'s readings with `key`, its registers starting at `registers` (import,
    /// export).
    pub fn new(
        inner: M,
        key: Signer,
        interval_seconds: u32,
        registers: (WattHours, WattHours),
    ) -> SigningMeter<M> {
        SigningMeter {
            inner,
            key,
            interval_seconds,
            registers,
            last: None,
            signed: BTreeMap::new(),
        }
    }

    /// The meter's key, which a channel names as this party's meter.
    pub fn meter(&self) -> gridchan_channel::NodeId {
        self.key.id()
    }
}

impl<M: MeterSource> MeterSource for SigningMeter<M> {
    fn reading(&mut self, interval: IntervalIndex) -> Option<MeterReading> {
        if let Some(s) = self.signed.get(&interval) {
            return s.reading.energy().ok();
        }
        // Registers only move forward: an interval older than the last one read has no
        // signed reading (the meter would have signed it then).
        if self.last.is_some_and(|last| interval <= last) {
            return None;
        }
        let r = self.inner.reading(interval)?;
        let (import, export) = self.registers;
        let end = (
            WattHours(import.0.checked_add(r.import.0)?),
            WattHours(export.0.checked_add(r.export.0)?),
        );
        let reading = Reading {
            meter: self.key.id(),
            interval,
            interval_seconds: self.interval_seconds,
            import_start: import,
            import_end: end.0,
            export_start: export,
            export_end: end.1,
        };
        self.signed
            .insert(interval, SignedReading::sign(reading, &self.key));
        while self.signed.len() > KEPT {
            self.signed.pop_first();
        }
        self.registers = end;
        self.last = Some(interval);
        Some(r)
    }

    fn signed_reading(&self, interval: IntervalIndex) -> Option<SignedReading> {
        self.signed.get(&interval).copied()
    }

    fn settle_ms(&self) -> u64 {
        self.inner.settle_ms()
    }

    fn problem(&self) -> Option<String> {
        self.inner.problem()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Steady(MeterReading);

    impl MeterSource for Steady {
        fn reading(&mut self, _: IntervalIndex) -> Option<MeterReading> {
            Some(self.0)
        }
    }

    #[test]
    fn each_interval_is_signed_with_registers_that_continue() {
        let key = Signer::new(&[0x4d; 32], &[0; 32]).unwrap();
        let steady = Steady(MeterReading {
            import: WattHours(0),
            export: WattHours(300),
        });
        let mut m = SigningMeter::new(steady, key, 900, (WattHours(10), WattHours(1_000)));
        let id = m.meter();
        assert_eq!(m.reading(IntervalIndex(7)).unwrap().export, WattHours(300));
        assert_eq!(m.reading(IntervalIndex(8)).unwrap().export, WattHours(300));
        let (a, b) = (
            m.signed_reading(IntervalIndex(7)).unwrap(),
            m.signed_reading(IntervalIndex(8)).unwrap(),
        );
        assert_eq!(
            a.check(&id, IntervalIndex(7), 900).unwrap().export,
            WattHours(300)
        );
        assert_eq!(a.reading.export_start, WattHours(1_000));
        assert_eq!(
            b.reading.export_start, a.reading.export_end,
            "registers continue"
        );
        // Asked again, the same reading; an older interval is never signed afresh.
        assert_eq!(m.reading(IntervalIndex(7)).unwrap().export, WattHours(300));
        assert_eq!(m.signed_reading(IntervalIndex(8)), Some(b));
        assert_eq!(m.reading(IntervalIndex(5)), None);
        assert_eq!(m.signed_reading(IntervalIndex(9)), None);
    }
}
