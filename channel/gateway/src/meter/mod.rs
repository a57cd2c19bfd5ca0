//! Meter sources: where a gateway's interval readings come from.
//!
//! - [`p1`]: a DSMR/ESMR P1 port, over a serial line or TCP: the meter's cumulative registers,
//!   turned into interval readings by [`registers`].
//! - [`mqtt`]: registers published over MQTT (Home Assistant, Tasmota, Shelly), through
//!   [`registers`] too.
//! - [`csv`]: a CSV file of interval readings, each row the reading of the interval it names.
//! - [`signing`]: any of them with registers kept and each interval's reading signed by a meter
//!   key (`specs/readings.md`), as a calibrated meter signs inside.
//! - [`sim`]: a seeded simulation of a home, for demos and for trying gridchan without a meter.

pub mod csv;
pub mod mqtt;
pub mod p1;
pub mod registers;
pub mod signing;
pub mod sim;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gridchan_channel::IntervalIndex;

pub use self::csv::{CsvError, CsvMeter};
pub use self::sim::SimulatedMeter;
pub use gridchan_channel::metering::MeterReading;

use self::registers::{Registers, Sample};
use crate::clock::SimClock;

/// `HOST:PORT` split into its host and port, if it is one (a dongle's or a broker's address).
pub fn host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    Some((host, port.parse().ok()?)).filter(|(h, _)| !h.is_empty())
}

/// What the daemon's metering job last saw, for `gridchan status`: a meter (or a recording)
/// that stops giving readings stops the trading, and the household should see why.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MeterStatus {
    /// The last interval with a reading: its start (Unix seconds), imported and exported Wh.
    pub last_read: Option<(u64, u64, u64)>,
    /// The start (Unix seconds) of the first interval since then that the meter had no
    /// reading for.
    pub missing_since: Option<u64>,
    /// What the meter's connection or input last went wrong with (a live meter), when it has
    /// no reading.
    #[serde(default)]
    pub problem: Option<String>,
}

/// A source of meter readings, one per metering interval.
pub trait MeterSource: Send {
    /// The reading of `interval`, or `None` if the source has none for it.
    fn reading(&mut self, interval: IntervalIndex) -> Option<MeterReading>;

    /// How long (ms of the daemon's clock) after an interval ends its reading may still arrive: a
    /// live meter's first sample after the boundary comes a little after it.
    fn settle_ms(&self) -> u64 {
        0
    }

    /// What last went wrong with the meter's connection or input, if anything (a live meter).
    fn problem(&self) -> Option<String> {
        None
    }

    /// The meter's own signed reading of `interval` (after [`MeterSource::reading`] gave it),
    /// if the meter signs its readings.
    fn signed_reading(
        &self,
        _interval: IntervalIndex,
    ) -> Option<gridchan_channel::reading::SignedReading> {
        None
    }
}

/// A boxed source is a source (a daemon picks its meter from the configuration).
impl MeterSource for Box<dyn MeterSource> {
    fn reading(&mut self, interval: IntervalIndex) -> Option<MeterReading> {
        (**self).reading(interval)
    }

    fn settle_ms(&self) -> u64 {
        (**self).settle_ms()
    }

    fn problem(&self) -> Option<String> {
        (**self).problem()
    }

    fn signed_reading(
        &self,
        interval: IntervalIndex,
    ) -> Option<gridchan_channel::reading::SignedReading> {
        (**self).signed_reading(interval)
    }
}

/// Something wrong with a live meter's input: logged, counted, and never the end of the readings
/// that are good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The connection to the meter failed or closed.
    Connection(String),
    /// A message from the meter that could not be used (a bad CRC, a malformed payload).
    Input(String),
}

/// What a live meter has taken and refused so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveStats {
    /// Samples of the registers taken.
    pub samples: u64,
    /// Samples refused (a register backwards or jumping, out of order).
    pub refused: u64,
    /// Inputs that could not be used, and connection failures.
    pub problems: u64,
    /// The last of either, as logged.
    pub last_problem: Option<String>,
}

/// A live meter's registers and statistics, shared by the task that reads it and the source
/// the daemon asks.
#[derive(Clone)]
pub struct LiveMeter {
    inner: Arc<Mutex<Live>>,
}

struct Live {
    registers: Registers,
    stats: LiveStats,
    /// When the last problem was logged, and what it said: the same problem again is logged
    /// at most once a minute (a meter with a bad line would otherwise fill the log).
    logged: Option<(Instant, String)>,
}

/// How often the same problem is logged again.
const RELOG: Duration = Duration::from_secs(60);

impl LiveMeter {
    /// A live meter for intervals of `interval_seconds` on a connection of at most `max_power_w`.
    pub fn new(interval_seconds: u32, max_power_w: u64) -> LiveMeter {
        LiveMeter {
            inner: Arc::new(Mutex::new(Live {
                registers: Registers::new(interval_seconds, max_power_w),
                stats: LiveStats::default(),
                logged: None,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a sample of the registers from `source`, or logs why not.
    pub fn sample(&self, source: &str, s: Sample) {
        let refused = {
            let mut live = self.lock();
            match live.registers.push(s) {
                Ok(()) => {
                    live.stats.samples += 1;
                    return;
                }
                Err(e) => {
                    live.stats.refused += 1;
                    e
                }
            }
        };
        // A repeat of the last sample is how meters resend; only the others are news.
        if !matches!(refused, registers::Refused::NotAfter { at_ms, last_ms } if at_ms == last_ms) {
            self.log(format!("{source}: sample refused: {refused}"));
        }
    }

    /// Logs and counts a problem.
    pub fn problem(&self, problem: Problem) {
        let (Problem::Connection(text) | Problem::Input(text)) = problem;
        self.lock().stats.problems += 1;
        self.log(text);
    }

    fn log(&self, text: String) {
        let mut live = self.lock();
        let again = match &live.logged {
            Some((at, last)) => *last != text || at.elapsed() >= RELOG,
            None => true,
        };
        live.stats.last_problem = Some(text.clone());
        if again {
            tracing::warn!("meter {text}");
            live.logged = Some((Instant::now(), text));
        }
    }

    /// What it has taken and refused so far.
    pub fn stats(&self) -> LiveStats {
        self.lock().stats.clone()
    }

    /// The reading of `interval`, if both its boundaries were seen.
    pub fn reading(&self, interval: IntervalIndex) -> Option<MeterReading> {
        self.lock().registers.reading(interval)
    }

    fn settle_ms(&self) -> u64 {
        // The boundary's tolerance, and a second for the sample to travel.
        self.lock().registers.tolerance_ms() + 1_000
    }
}

/// A meter read by a task of its own (a P1 port, an MQTT topic): the task ends when the source
/// is dropped.
pub struct LiveSource {
    meter: LiveMeter,
    task: tokio::task::JoinHandle<()>,
}

impl LiveSource {
    /// Reads a P1 port; must be called within a tokio runtime.
    pub fn p1(
        port: p1::P1Port,
        interval_seconds: u32,
        max_power_w: u64,
        clock: SimClock,
    ) -> LiveSource {
        let meter = LiveMeter::new(interval_seconds, max_power_w);
        let task = tokio::spawn(p1::run(port, meter.clone(), clock));
        LiveSource { meter, task }
    }

    /// Reads an MQTT meter's topics; must be called within a tokio runtime.
    pub fn mqtt(
        m: mqtt::MqttMeter,
        interval_seconds: u32,
        max_power_w: u64,
        clock: SimClock,
    ) -> LiveSource {
        let meter = LiveMeter::new(interval_seconds, max_power_w);
        let task = tokio::spawn(mqtt::run(m, meter.clone(), clock));
        LiveSource { meter, task }
    }

    /// The meter's registers and statistics.
    pub fn meter(&self) -> &LiveMeter {
        &self.meter
    }
}

impl Drop for LiveSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MeterSource for LiveSource {
    fn reading(&mut self, interval: IntervalIndex) -> Option<MeterReading> {
        self.meter.reading(interval)
    }

    fn problem(&self) -> Option<String> {
        self.meter.stats().last_problem
    }

    fn settle_ms(&self) -> u64 {
        self.meter.settle_ms()
    }
}
