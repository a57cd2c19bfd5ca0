//! MQTT: the meters that Home Assistant, Tasmota SML readers and Shelly devices publish.
//!
//! Two registers, import and export, each a topic and where its value is in the payload: a field
//! of a JSON object (`SML.Total_in`, dots for nested objects) or, with no field, the payload
//! itself as a plain number (Home Assistant's statestream). Values are cumulative registers in kWh
//! or Wh; each message that gives a value makes a sample of both registers (the other's latest
//! value), taken at the time it arrives on the daemon's clock. A broker that goes away is dialled
//! again (1 s, doubling to 30 s) and the topics are subscribed again.

use std::time::Duration;

use gridchan_channel::WattHours;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::registers::Sample;
use super::{LiveMeter, Problem};
use crate::clock::SimClock;

/// The largest payload read: a Tasmota SENSOR message with many fields is under 1 KiB.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Where one register is published.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    pub topic: String,
    /// The value's field in a JSON payload (dots for nested objects); none: the payload is
    /// the number.
    #[serde(default)]
    pub field: Option<String>,
}

/// The unit the registers are published in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub enum Unit {
    #[serde(rename = "Wh")]
    Wh,
    #[serde(rename = "kWh")]
    Kwh,
}

/// An MQTT meter: the broker, the two registers, their unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttMeter {
    /// `host:port`
    pub broker: String,
    pub import: Register,
    pub export: Register,
    pub unit: Unit,
    pub credentials: Option<(String, String)>,
}

/// Why a message gave no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("is not JSON with the field {0:?}")]
    NoField(String),
    #[error("{0:?} is not a number of {1}")]
    NotANumber(String, &'static str),
    #[error("is longer than {MAX_PAYLOAD} bytes")]
    TooLong,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Wh => "Wh",
            Unit::Kwh => "kWh",
        }
    }
}

/// The register's value in `payload`, in Wh (kWh rounded to the Wh).
pub fn value(payload: &[u8], field: Option<&str>, unit: Unit) -> Result<WattHours, PayloadError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(PayloadError::TooLong);
    }
    let text = String::from_utf8_lossy(payload);
    let number = match field {
        None => text.trim().to_string(),
        Some(path) => {
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|_| PayloadError::NoField(path.to_string()))?;
            let found = path
                .split('.')
                .try_fold(&json, |v, key| v.get(key))
                .ok_or_else(|| PayloadError::NoField(path.to_string()))?;
            match found {
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::String(s) => s.trim().to_string(),
                other => other.to_string(),
            }
        }
    };
    let bad = || PayloadError::NotANumber(number.clone(), unit.name());
    let v: f64 = number.parse().map_err(|_| bad())?;
    let wh = match unit {
        Unit::Wh => v,
        Unit::Kwh => v * 1000.0,
    };
    if !wh.is_finite() || !(0.0..1e15).contains(&wh) {
        return Err(bad());
    }
    Ok(WattHours(wh.round() as u64))
}

/// Reads the meter's topics for as long as the meter lives.
pub(super) async fn run(m: MqttMeter, meter: LiveMeter, clock: SimClock) {
    let (host, port) = match super::host_port(&m.broker) {
        Some((host, port)) => (host.to_string(), port),
        None => {
            meter.problem(Problem::Connection(format!(
                "mqtt: broker {:?} is not HOST:PORT",
                m.broker
            )));
            return;
        }
    };
    let id: [u8; 6] = rand::random();
    let mut options = MqttOptions::new(format!("gridchan-{}", hex::encode(id)), host, port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(MAX_PAYLOAD + 1024, 4 * 1024);
    if let Some((user, password)) = &m.credentials {
        options.set_credentials(user, password);
    }
    let (client, mut events) = AsyncClient::new(options, 16);
    let source = format!("mqtt:{}", m.broker);
    let (mut import, mut export) = (None, None);
    let mut backoff = Duration::from_secs(1);
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_secs(1);
                // A new session (the broker restarted, or forgot us): subscribe again.
                for topic in [&m.import.topic, &m.export.topic] {
                    if let Err(e) = client.try_subscribe(topic.as_str(), QoS::AtMostOnce) {
                        meter.problem(Problem::Connection(format!(
                            "{source}: cannot subscribe to {topic}: {e}"
                        )));
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let mut any = false;
                for (register, latest) in [(&m.import, &mut import), (&m.export, &mut export)] {
                    if register.topic != p.topic {
                        continue;
                    }
                    match value(&p.payload, register.field.as_deref(), m.unit) {
                        Ok(v) => {
                            *latest = Some(v);
                            any = true;
                        }
                        Err(e) => meter.problem(Problem::Input(format!(
                            "{source}: a message on {} {e}",
                            p.topic
                        ))),
                    }
                }
                if let (true, Some(import), Some(export)) = (any, import, export) {
                    meter.sample(
                        &source,
                        Sample {
                            at_ms: clock.now_ms(),
                            import,
                            export,
                        },
                    );
                }
            }
            Ok(_) => {}
            Err(e) => {
                meter.problem(Problem::Connection(format!(
                    "{source}: {e}; trying again in {} s",
                    backoff.as_secs()
                )));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_from_a_field_or_the_whole_payload_in_the_unit_stated() {
        let tasmota =
            br#"{"Time":"2026-12-07T20:00:00","SML":{"Total_in":12345.678,"Total_out":"9.5"}}"#;
        assert_eq!(
            value(tasmota, Some("SML.Total_in"), Unit::Kwh),
            Ok(WattHours(12_345_678))
        );
        assert_eq!(
            value(tasmota, Some("SML.Total_out"), Unit::Kwh),
            Ok(WattHours(9_500))
        );
        assert_eq!(value(b" 4711\n", None, Unit::Wh), Ok(WattHours(4_711)));
        assert_eq!(
            value(tasmota, Some("SML.Power"), Unit::Kwh),
            Err(PayloadError::NoField("SML.Power".into()))
        );
        assert_eq!(
            value(b"unavailable", None, Unit::Kwh)
                .unwrap_err()
                .to_string(),
            "\"unavailable\" is not a number of kWh"
        );
        assert!(value(b"-3", None, Unit::Wh).is_err());
        assert!(value(b"{not json", Some("a"), Unit::Wh).is_err());
        assert_eq!(
            value(&vec![b'1'; MAX_PAYLOAD + 1], None, Unit::Wh),
            Err(PayloadError::TooLong)
        );
    }
}
