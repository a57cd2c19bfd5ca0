//! MQTT meters through a real broker (rumqttd, as a process of its own: `src/bin/mqtt-broker.rs`):
//! a Tasmota-style SENSOR message with both registers, a malformed payload, a register going
//! backwards, the broker stopped and started again; and two daemons, one reading a P1 dongle over
//! TCP and one an MQTT meter, settling sped-up intervals of the shipped data exactly as the
//! readings say.

#[path = "../../channel/gateway/tests/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gridchan_channel::{IntervalIndex, WattHours};
use gridchan_gateway::clock::SimClock;
use gridchan_gateway::meter::mqtt::{MqttMeter, Register, Unit};
use gridchan_gateway::meter::p1::P1Port;
use gridchan_gateway::meter::{LiveSource, LiveStats, MeterReading, MeterSource};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio::io::AsyncWriteExt;

const I: u64 = 900_000;

/// The broker process on 127.0.0.1:`port`; killed when dropped.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nobody listens on now (the broker is told it: it cannot report one it chose).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the broker on `port` and waits (at most 10 s) until it takes connections.
fn broker(port: u16) -> Broker {
    let child = Command::new(env!("CARGO_BIN_EXE_mqtt-broker"))
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let broker = Broker(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the broker never listened"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    broker
}

/// A publisher, as a meter's reader would be; its connection is driven (and re-made after the
/// broker restarts) by a task of its own.
fn publisher(port: u16) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    let mut options = MqttOptions::new(format!("meter-{port}"), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 64);
    let task = tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    (client, task)
}

fn sensor(import_kwh: f64, export_kwh: f64) -> String {
    format!(
        r#"{{"Time":"2025-07-14T12:00:00","SML":{{"Total_in":{import_kwh:.3},"Total_out":{export_kwh:.3},"Power":318}}}}"#
    )
}

fn tasmota(port: u16) -> MqttMeter {
    MqttMeter {
        broker: format!("127.0.0.1:{port}"),
        import: Register {
            topic: "tele/meter/SENSOR".into(),
            field: Some("SML.Total_in".into()),
        },
        export: Register {
            topic: "tele/meter/SENSOR".into(),
            field: Some("SML.Total_out".into()),
        },
        unit: Unit::Kwh,
        credentials: None,
    }
}

/// Publishes `payload` every 50 ms until the meter's statistics satisfy `done` (at most 10 s).
async fn publish_until(
    client: &AsyncClient,
    source: &LiveSource,
    payload: &str,
    done: impl Fn(&LiveStats) -> bool,
) -> LiveStats {
    let start = Instant::now();
    loop {
        let stats = source.meter().stats();
        if done(&stats) {
            return stats;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never got there: {stats:?}"
        );
        let _ = client
            .publish(
                "tele/meter/SENSOR",
                QoS::AtMostOnce,
                false,
                payload.as_bytes().to_vec(),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_mqtt_meter_reads_through_a_real_broker_and_its_restart() {
    let port = free_port();
    let first = broker(port);
    // The daemon's clock, held and stepped by the test: a sample is stamped when it arrives.
    let b0 = 1_752_487_200_000u64;
    let clock = SimClock::held(b0 + 1_000, 1);
    let mut source = LiveSource::mqtt(tasmota(port), 900, 17_250, clock.clone());
    let (client, _driver) = publisher(port);

    // Boundary 0 (repeats of one message at one time are taken once).
    publish_until(&client, &source, &sensor(1.0, 0.0), |s| s.samples == 1).await;
    // A payload without the register's number: counted and logged, nothing taken.
    let bad = r#"{"SML":{"Total_in":"unavailable","Total_out":0}}"#;
    let stats = publish_until(&client, &source, bad, |s| s.problems >= 1).await;
    assert!(
        stats
            .last_problem
            .as_deref()
            .is_some_and(|p| p.contains("\"unavailable\" is not a number of kWh")),
        "{stats:?}"
    );
    // The import register going backwards is refused.
    clock.hold_at(b0 + 2_000);
    publish_until(&client, &source, &sensor(0.9, 0.0), |s| s.refused >= 1).await;

    // The broker goes away: the meter says so, and reads again once it is back.
    drop(first);
    let start = Instant::now();
    while !source
        .meter()
        .stats()
        .last_problem
        .is_some_and(|p| p.contains("trying again"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the loss was never noticed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _second = broker(port);
    clock.hold_at(b0 + I + 500);
    publish_until(&client, &source, &sensor(1.2, 0.05), |s| s.samples == 2).await;
    assert_eq!(
        source.reading(IntervalIndex(b0 / I)),
        Some(MeterReading {
            import: WattHours(200),
            export: WattHours(50)
        })
    );
}

/// A P1 dongle on 127.0.0.1 that writes, from each boundary of `clock` on, a telegram stamped at
/// the boundary with the registers there (the sums of `rows` before it), until the next one.
async fn p1_dongle(clock: SimClock, first: IntervalIndex, rows: Vec<(u64, u64)>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let (mut import, mut export) = (12_345_678u64, 1_234_567u64);
        for k in 0..=rows.len() {
            let at = (first.0 + k as u64) * I;
            let bytes =
                gridchan_gateway::meter::p1::telegram(at, WattHours(import), WattHours(export));
            conn.write_all(&bytes).await.unwrap();
            if let Some((di, de)) = rows.get(k) {
                import += di;
                export += de;
            }
            while clock.now_ms() < at + I {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        std::future::pending::<()>().await;
    });
    address
}

/// Publishes, from each boundary of `clock` on, the registers there (the sums of `rows` before
/// it) every few milliseconds until the next: the first message after a boundary carries its
/// registers exactly, whenever it arrives.
fn mqtt_meter(client: AsyncClient, clock: SimClock, first: IntervalIndex, rows: Vec<(u64, u64)>) {
    tokio::spawn(async move {
        let (mut import, mut export) = (5_000_000u64, 0u64);
        for k in 0..=rows.len() {
            let at = (first.0 + k as u64) * I;
            while clock.now_ms() < at {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let payload = sensor(import as f64 / 1000.0, export as f64 / 1000.0);
            while clock.now_ms() < at + I / 2 {
                let _ = client
                    .publish(
                        "tele/meter/SENSOR",
                        QoS::AtMostOnce,
                        false,
                        payload.clone().into_bytes(),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if let Some((di, de)) = rows.get(k) {
                import += di;
                export += de;
            }
        }
    });
}

/// Two daemons settle eight sped-up intervals of a summer midday, the seller reading a P1
/// dongle over TCP, the buyer an MQTT meter through the broker: every trade is the smaller of
/// the seller's export and the buyer's import in the data, to the Wh and the micro-unit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p1_meter_and_an_mqtt_meter_settle_what_the_readings_say() {
    use common::{csv_rows, Chain, Replay, FIRST_ROW};
    const N: usize = 8;
    const OFFSET: usize = 44; // 11:00 UTC
    let _alone = common::one_replay_at_a_time().await;
    let port = free_port();
    let _broker = broker(port);
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::local(dir.path(), &[1, 2], 20);
    // A 15-minute interval every 2.5 s: the meter's first message after a boundary has 170 ms
    // of real time to arrive within the boundary's minute.
    let mut replay = Replay::summer(dir.path(), &chain, 360, None);
    let anchor = IntervalIndex(replay.anchor.0 + OFFSET as u64);
    replay.clock = SimClock::accelerated(anchor.0 * I - 5_000, 360);
    let (seller, buyer) = (csv_rows("home-03"), csv_rows("home-02"));
    let rows = |home: &Vec<(u64, u64)>| home[FIRST_ROW + OFFSET..FIRST_ROW + OFFSET + N].to_vec();
    let address = p1_dongle(replay.clock.clone(), anchor, rows(&seller)).await;
    let p1 = LiveSource::p1(P1Port::Tcp(address), 900, 17_250, replay.clock.clone());
    let (client, _driver) = publisher(port);
    let mqtt = LiveSource::mqtt(tasmota(port), 900, 17_250, replay.clock.clone());
    mqtt_meter(client, replay.clock.clone(), anchor, rows(&buyer));

    let b = replay.home_with_meter(2, Box::new(mqtt), vec![]);
    let a = replay.home_with_meter(1, Box::new(p1), vec![b.engine.address.clone()]);
    let (ea, eb) = (a.engine.clone(), b.engine.clone());
    let channel = common::open_flat(&ea, 2, 150_000, IntervalIndex(anchor.0 - 1), 7).await;
    common::settled_as_the_data_says(
        (&ea, &eb),
        channel,
        anchor,
        N,
        FIRST_ROW + OFFSET,
        150_000,
        &seller,
        &buyer,
    )
    .await;
}
