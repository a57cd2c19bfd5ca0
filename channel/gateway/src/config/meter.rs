//! The `[metering]`, `[meter]` and `[signing_meter]` sections: the clock and time zone the
//! gateway meters by, and where its readings come from.

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::GatewayError;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeteringSection {
    /// The metering interval in seconds; divides an hour.
    pub interval_seconds: u32,
    /// Run the clock this many times faster than wall time (demos; 1 in real use).
    #[serde(default = "one")]
    pub speedup: u32,
    /// The household's time zone, an IANA name; UTC when left out.
    #[serde(default)]
    pub time_zone: Option<String>,
}

fn one() -> u32 {
    1
}

/// The fastest clock a gateway runs: an hour of readings a second.
pub const MAX_SPEEDUP: u32 = 3_600;

impl MeteringSection {
    /// The household's time zone (UTC when none is named).
    pub fn zone(&self) -> Result<jiff::tz::TimeZone, GatewayError> {
        match &self.time_zone {
            None => Ok(jiff::tz::TimeZone::UTC),
            Some(name) => jiff::tz::TimeZone::get(name).map_err(|_| {
                GatewayError::Config(format!(
                    "metering.time_zone = {name:?} is not a time zone name such as \"Europe/Amsterdam\""
                ))
            }),
        }
    }
}

impl Default for MeteringSection {
    fn default() -> MeteringSection {
        MeteringSection {
            interval_seconds: 900,
            speedup: 1,
            time_zone: None,
        }
    }
}

/// Where readings come from.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum MeterSection {
    /// A seeded simulation of solar generation and household load.
    Simulated {
        seed: u64,
        pv_peak_w: u32,
        load_avg_w: u32,
        #[serde(default)]
        utc_offset_minutes: i32,
    },
    /// Interval readings from a CSV file, each row the reading of the interval it names.
    Csv { path: PathBuf },
    /// A DSMR/ESMR P1 port: a serial device (`/dev/ttyUSB0`) or a P1 dongle's TCP stream
    /// (`HOST:PORT`).
    P1 {
        port: String,
        /// The most the connection carries, in W: a register growing faster is refused.
        #[serde(default = "main_fuse_w")]
        max_power_w: u64,
    },
    /// Cumulative registers published over MQTT.
    Mqtt {
        /// `HOST:PORT`
        broker: String,
        import: crate::meter::mqtt::Register,
        export: crate::meter::mqtt::Register,
        unit: crate::meter::mqtt::Unit,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<String>,
        #[serde(default = "main_fuse_w")]
        max_power_w: u64,
    },
}

/// Three phases of 25 A at 230 V: a common household connection.
fn main_fuse_w() -> u64 {
    17_250
}

impl MeterSection {
    /// The `[meter]` section for `spec`: `sim` or `sim:PV_PEAK_W` (seeded with `seed`), `csv:FILE`,
    /// `p1:/dev/DEVICE` or `p1:HOST:PORT`; with a comment on each key.
    pub fn template(spec: &str, seed: u64) -> Result<String, GatewayError> {
        let head = "[meter]\n# Where readings come from: \"p1\" (a DSMR/ESMR smart meter's P1 port: a serial\n\
            # device such as \"/dev/ttyUSB0\", or a P1 dongle's \"HOST:PORT\"), \"csv\" (a file of interval\n\
            # readings: timestamp_utc,import_wh,export_wh, each row the interval starting then) or\n\
            # \"simulated\" (a seeded model of solar and household load, to try gridchan without a meter).\n";
        let simulated = |pv_peak_w: u32| {
            format!(
                "kind = \"simulated\"\n# Each home needs its own seed: two homes with one seed have the same meter.\n\
                 seed = {seed}\n# The panels' peak output (0: a home without panels, which buys every interval)\n\
                 # and the household's average load, in W.\npv_peak_w = {pv_peak_w}\nload_avg_w = 400\n"
            )
        };
        let body = match spec.split_once(':') {
            _ if spec == "sim" || spec == "simulated" => simulated(4000),
            Some(("sim", watts)) if watts.parse::<u32>().is_ok() => {
                simulated(watts.parse().unwrap_or_default())
            }
            Some(("csv", path)) if !path.is_empty() => {
                format!("kind = \"csv\"\npath = {}\n", toml_string(path))
            }
            Some(("p1", port)) => {
                let port: crate::meter::p1::P1Port = port.parse()?;
                format!(
                    "kind = \"p1\"\nport = {}\n# The most your connection carries, in W (a register growing faster is refused):\n\
                     # 3 x 25 A at 230 V.\nmax_power_w = 17250\n",
                    toml_string(&port.address())
                )
            }
            Some(("mqtt", broker)) if crate::meter::host_port(broker).is_some() => {
                format!(
                    "kind = \"mqtt\"\nbroker = {}\n# Each register's topic, and its field in a JSON payload (dots for nested objects;\n\
                     # no field: the payload is the number). A Tasmota SML reader, as written; Home\n\
                     # Assistant's statestream: topic = \"homeassistant/sensor/ENTITY/state\", no field.\n\
                     import = {{ topic = \"tele/meter/SENSOR\", field = \"SML.Total_in\" }}\n\
                     export = {{ topic = \"tele/meter/SENSOR\", field = \"SML.Total_out\" }}\n\
                     # The registers' unit: \"kWh\" or \"Wh\".\nunit = \"kWh\"\n\
                     # username = \"...\"\n# password = \"...\"\n\
                     # The most your connection carries, in W (a register growing faster is refused).\nmax_power_w = 17250\n",
                    toml_string(broker)
                )
            }
            _ => {
                return Err(GatewayError::Config(format!(
                    "--meter {spec:?}: write sim (or sim:PV_PEAK_W), csv:FILE, p1:/dev/DEVICE, p1:HOST:PORT or mqtt:HOST:PORT"
                )))
            }
        };
        Ok(format!("{head}{body}"))
    }
}

/// `s` as a TOML basic string.
pub(crate) fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A simulated signing meter: the key file its readings are signed with (created if missing).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningMeterSection {
    pub key: PathBuf,
}
