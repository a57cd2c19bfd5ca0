//! Meter-signed readings: what a meter itself says of one interval, which a neighbour can check.
//!
//! A gateway's word about its meter is only its word: a neighbour with no meter at all can
//! announce an export and bill it. A calibrated meter that signs its readings (as meters
//! producing OCMF records do) gives the counterparty something to check: a [`SignedReading`]
//! names the meter's key, the interval and the meter's cumulative import and export registers at
//! the interval's start and end, signed by the meter's key. Whoever knows which key is the
//! seller's meter can check that the seller exported what it bills, for that interval and no
//! other (`specs/readings.md`).

use crate::abi::{domain_tag, Words};
use crate::crypto::{NodeId, Signature, Signer};
use crate::metering::MeterReading;
use crate::types::{IntervalIndex, WattHours};

const READING_DOMAIN: [u8; 32] = domain_tag("gridchan.reading.v1");

/// What a meter signs: its key, the interval, and its registers (cumulative Wh) at the
/// interval's start and end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reading {
    pub meter: NodeId,
    pub interval: IntervalIndex,
    pub interval_seconds: u32,
    pub import_start: WattHours,
    pub import_end: WattHours,
    pub export_start: WattHours,
    pub export_end: WattHours,
}

/// A reading and the meter's signature of its digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedReading {
    pub reading: Reading,
    pub signature: Signature,
}

/// Why a signed reading does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadingError {
    /// Signed by another meter than the one the channel names for this party.
    #[error(
        "signed by meter {}, not the party's meter {}",
        hex::encode(got),
        hex::encode(expected)
    )]
    WrongMeter { expected: [u8; 33], got: [u8; 33] },
    /// A reading of another interval (a replay), or of another interval length.
    #[error("a reading of interval {got} ({got_seconds} s), not of interval {expected} ({expected_seconds} s)")]
    WrongInterval {
        expected: u64,
        expected_seconds: u32,
        got: u64,
        got_seconds: u32,
    },
    /// A register that ends below where it started.
    #[error("the {0} register goes backwards")]
    Backwards(&'static str),
    /// The signature is not the meter's over this reading.
    #[error("the meter's signature does not verify")]
    BadSignature,
}

impl Reading {
    /// The digest the meter signs (`specs/readings.md`): 32-byte words, each number a
    /// big-endian unsigned integer, the meter's key as its 20-byte address.
    pub fn digest(&self) -> [u8; 32] {
        let mut w = Words::with_capacity(8);
        w.bytes32(&READING_DOMAIN)
            .address(&self.meter.address().0)
            .uint(self.interval.0)
            .uint(u64::from(self.interval_seconds))
            .uint(self.import_start.0)
            .uint(self.import_end.0)
            .uint(self.export_start.0)
            .uint(self.export_end.0);
        w.sha256()
    }

    /// The energy of the interval: each register's growth.
    pub fn energy(&self) -> Result<MeterReading, ReadingError> {
        let grew = |start: WattHours, end: WattHours, name| {
            end.0
                .checked_sub(start.0)
                .map(WattHours)
                .ok_or(ReadingError::Backwards(name))
        };
        Ok(MeterReading {
            import: grew(self.import_start, self.import_end, "import")?,
            export: grew(self.export_start, self.export_end, "export")?,
        })
    }
}

impl SignedReading {
    /// `reading` signed by `meter` (a meter's own key; the simulated signing meter's in tests
    /// and the demo).
    pub fn sign(reading: Reading, meter: &Signer) -> SignedReading {
        SignedReading {
            reading,
            signature: meter.sign(&reading.digest()),
        }
    }

    /// The interval's energy, if this is `meter`'s signed reading of `interval` of
    /// `interval_seconds`.
    pub fn check(
        &self,
        meter: &NodeId,
        interval: IntervalIndex,
        interval_seconds: u32,
    ) -> Result<MeterReading, ReadingError> {
        let r = &self.reading;
        if r.meter != *meter {
            return Err(ReadingError::WrongMeter {
                expected: meter.to_bytes(),
                got: r.meter.to_bytes(),
            });
        }
        if r.interval != interval || r.interval_seconds != interval_seconds {
            return Err(ReadingError::WrongInterval {
                expected: interval.0,
                expected_seconds: interval_seconds,
                got: r.interval.0,
                got_seconds: r.interval_seconds,
            });
        }
        let energy = r.energy()?;
        self.signature
            .verify(&r.digest(), meter)
            .map_err(|_| ReadingError::BadSignature)?;
        Ok(energy)
    }
}

/// The published vectors (`specs/vectors/readings.json`): a reading, its digest, and its
/// signature by the meter key of secret `[0x4d; 32]`, as pretty JSON.
pub fn vectors_json() -> String {
    let meter = Signer::new(&[0x4d; 32], &[0; 32]).expect("a valid key");
    let cases = [
        (
            "a solar home's midday interval",
            1_947_230,
            900,
            (12_345_678, 12_345_678),
            (1_234_567, 1_236_012),
        ),
        (
            "a home importing at night",
            1_947_190,
            900,
            (5_000_000, 5_000_412),
            (0, 0),
        ),
        (
            "a 5-minute interval, both registers moving",
            5_841_690,
            300,
            (777, 790),
            (1_000, 1_004),
        ),
    ];
    let vectors: Vec<serde_json::Value> = cases
        .iter()
        .map(|(name, interval, seconds, (i0, i1), (e0, e1))| {
            let reading = Reading {
                meter: meter.id(),
                interval: IntervalIndex(*interval),
                interval_seconds: *seconds,
                import_start: WattHours(*i0),
                import_end: WattHours(*i1),
                export_start: WattHours(*e0),
                export_end: WattHours(*e1),
            };
            let signed = SignedReading::sign(reading, &meter);
            serde_json::json!({
                "name": name,
                "meter": hex::encode(meter.id().to_bytes()),
                "meter_address": hex::encode(meter.id().address().0),
                "interval": interval.to_string(),
                "interval_seconds": seconds.to_string(),
                "import_start": i0.to_string(),
                "import_end": i1.to_string(),
                "export_start": e0.to_string(),
                "export_end": e1.to_string(),
                "digest": hex::encode(reading.digest()),
                "signature": hex::encode(signed.signature.0),
            })
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&serde_json::json!({
        "meter_secret": hex::encode([0x4d; 32]),
        "vectors": vectors,
    }))
    .expect("JSON");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meter(b: u8) -> Signer {
        Signer::new(&[b; 32], &[0; 32]).unwrap()
    }

    fn reading(m: &Signer, interval: u64, import: (u64, u64), export: (u64, u64)) -> Reading {
        Reading {
            meter: m.id(),
            interval: IntervalIndex(interval),
            interval_seconds: 900,
            import_start: WattHours(import.0),
            import_end: WattHours(import.1),
            export_start: WattHours(export.0),
            export_end: WattHours(export.1),
        }
    }

    #[test]
    fn the_meters_reading_of_the_interval_gives_its_energy() {
        let m = meter(1);
        let s = SignedReading::sign(reading(&m, 10, (100, 100), (5_000, 5_300)), &m);
        assert_eq!(
            s.check(&m.id(), IntervalIndex(10), 900),
            Ok(MeterReading {
                import: WattHours(0),
                export: WattHours(300)
            })
        );
    }

    #[test]
    fn a_forged_replayed_or_foreign_reading_is_refused() {
        let (m, other) = (meter(1), meter(2));
        let good = SignedReading::sign(reading(&m, 10, (0, 0), (5_000, 5_300)), &m);
        // Replayed for the next interval.
        assert!(matches!(
            good.check(&m.id(), IntervalIndex(11), 900),
            Err(ReadingError::WrongInterval { .. })
        ));
        assert!(matches!(
            good.check(&m.id(), IntervalIndex(10), 300),
            Err(ReadingError::WrongInterval { .. })
        ));
        // Signed by another meter (the gateway's own key, say).
        let foreign = SignedReading::sign(reading(&other, 10, (0, 0), (5_000, 5_300)), &other);
        assert!(matches!(
            foreign.check(&m.id(), IntervalIndex(10), 900),
            Err(ReadingError::WrongMeter { .. })
        ));
        // The export raised after signing; or another key's signature under the meter's name.
        let mut raised = good;
        raised.reading.export_end = WattHours(6_000);
        assert_eq!(
            raised.check(&m.id(), IntervalIndex(10), 900),
            Err(ReadingError::BadSignature)
        );
        let mut forged = good;
        forged.signature = other.sign(&good.reading.digest());
        assert_eq!(
            forged.check(&m.id(), IntervalIndex(10), 900),
            Err(ReadingError::BadSignature)
        );
        let backwards = SignedReading::sign(reading(&m, 10, (50, 40), (0, 0)), &m);
        assert_eq!(
            backwards.check(&m.id(), IntervalIndex(10), 900),
            Err(ReadingError::Backwards("import"))
        );
    }

    const VECTORS: &str = "../../specs/vectors/readings.json";

    #[test]
    fn the_reading_vectors_are_what_the_format_gives() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(VECTORS);
        let published = std::fs::read_to_string(&path).expect("specs/vectors/readings.json");
        assert_eq!(
            published,
            vectors_json(),
            "the reading format changed: regenerate with `cargo test -p gridchan-channel write_reading_vectors -- --ignored` only if specs/readings.md changed too"
        );
    }

    /// Writes `specs/vectors/readings.json`.
    #[test]
    #[ignore]
    fn write_reading_vectors() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(VECTORS);
        std::fs::write(path, vectors_json()).unwrap();
    }

    proptest! {
        /// Whatever a reading says, a checker accepts it only as the meter signed it, for the
        /// interval it names, and then its energy is exactly the registers' growth: no
        /// announcement can claim more export than the meter signed.
        #[test]
        fn only_what_the_meter_signed_counts(
            i0 in 0u64..1_000_000, di in 0u64..5_000,
            e0 in 0u64..1_000_000, de in 0u64..5_000,
            claimed in 0u64..10_000, interval in 1u64..1_000,
        ) {
            let m = meter(3);
            let signed = SignedReading::sign(reading(&m, interval, (i0, i0 + di), (e0, e0 + de)), &m);
            let energy = signed.check(&m.id(), IntervalIndex(interval), 900).unwrap();
            prop_assert_eq!(energy.export, WattHours(de));
            // A seller claiming more than that, by raising the end register, is refused.
            let mut claim = signed;
            claim.reading.export_end = WattHours(e0 + claimed);
            let checked = claim.check(&m.id(), IntervalIndex(interval), 900);
            if claimed != de {
                prop_assert_eq!(checked, Err(ReadingError::BadSignature));
            } else {
                prop_assert!(checked.is_ok());
            }
        }
    }
}
