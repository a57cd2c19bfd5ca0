//! Live meters over real transports: DSMR P1 telegrams over TCP and over a pseudo-terminal,
//! written here from the standard's format (P1 companion standard 5.0.2: lines from `/` to `!`,
//! the CRC16/ARC of those bytes in four hex digits), with a bad CRC, a register going backwards, a
//! register jumping, a truncated telegram and a dropped connection among good ones: each bad input
//! is counted and logged, and the good readings go on.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use gridchan_channel::{IntervalIndex, WattHours};
use gridchan_gateway::clock::SimClock;
use gridchan_gateway::meter::p1::P1Port;
use gridchan_gateway::meter::{LiveSource, LiveStats, MeterReading, MeterSource};
use tokio::io::AsyncWriteExt;

/// Interval 0 of these tests: 2025-07-14 10:00 UTC (summer: the telegrams say `S`).
const B0: u64 = 1_752_487_200_000;
const I: u64 = 900_000;

/// A telegram in the standard's format at `at_ms`, with its CRC.
fn telegram(at_ms: u64, import: u64, export: u64) -> Vec<u8> {
    // Written out here rather than taken from the crate: the test is the standard's reader.
    let local = jiff::Timestamp::from_millisecond(at_ms as i64)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(2)));
    let kwh = |wh: u64| format!("{:06}.{:03}*kWh", wh / 1000, wh % 1000);
    let body = format!(
        "/ISk5\\2MT382-1000\r\n\r\n1-3:0.2.8(50)\r\n0-0:1.0.0({}S)\r\n\
         1-0:1.8.1({})\r\n1-0:1.8.2({})\r\n1-0:2.8.1({})\r\n1-0:2.8.2({})\r\n\
         1-0:1.7.0(00.318*kW)\r\n!",
        local.strftime("%y%m%d%H%M%S"),
        kwh(import / 4),
        kwh(import - import / 4),
        kwh(export),
        kwh(0),
    );
    let crc = crc16_arc(body.as_bytes());
    format!("{body}{crc:04X}\r\n").into_bytes()
}

/// CRC-16/ARC: polynomial x^16 + x^15 + x^2 + 1, reflected (0xA001), initial value 0.
fn crc16_arc(bytes: &[u8]) -> u16 {
    let mut crc = 0u16;
    for b in bytes {
        crc ^= u16::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

fn reading(import: u64, export: u64) -> Option<MeterReading> {
    Some(MeterReading {
        import: WattHours(import),
        export: WattHours(export),
    })
}

/// Waits (at most 10 s) until the meter's statistics satisfy `done`.
async fn until(source: &LiveSource, done: impl Fn(&LiveStats) -> bool) -> LiveStats {
    let start = Instant::now();
    loop {
        let stats = source.meter().stats();
        if done(&stats) {
            return stats;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the meter never got there: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The first connection's telegrams: one good at each step, among bad ones.
fn first_connection() -> Vec<u8> {
    let mut bytes = Vec::new();
    // Boundary 0 (1 s after it).
    bytes.extend(telegram(B0 + 1_000, 1_000, 0));
    // A telegram cut off mid-line by the next one, which is good.
    let cut = telegram(B0 + 1_500, 1_000, 0);
    bytes.extend(&cut[..cut.len() / 2]);
    bytes.extend(telegram(B0 + 2_000, 1_001, 0));
    // A bad CRC.
    let mut bad = telegram(B0 + 3_000, 1_002, 0);
    let n = bad.len();
    bad[n - 3] = if bad[n - 3] == b'0' { b'1' } else { b'0' };
    bytes.extend(bad);
    // The import register going backwards, then jumping by 5 kWh in a second.
    bytes.extend(telegram(B0 + 4_000, 900, 0));
    bytes.extend(telegram(B0 + 5_000, 6_001, 0));
    // Boundary 1.
    bytes.extend(telegram(B0 + I + 1_000, 1_200, 50));
    bytes
}

fn check_first(source: &mut LiveSource, stats: &LiveStats) {
    assert_eq!(stats.samples, 3, "{stats:?}");
    assert_eq!(stats.refused, 2, "{stats:?}");
    assert!(
        stats.problems >= 2,
        "the cut telegram and the bad CRC: {stats:?}"
    );
    assert_eq!(source.reading(IntervalIndex(B0 / I)), reading(200, 50));
}

#[tokio::test]
async fn p1_over_tcp_takes_the_good_telegrams_and_reconnects() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = P1Port::Tcp(listener.local_addr().unwrap().to_string());
    let mut source = LiveSource::p1(port, 900, 17_250, SimClock::real());

    let (mut conn, _) = listener.accept().await.unwrap();
    // A connection that begins mid-telegram: the tail of one, then whole ones.
    conn.write_all(b"1-0:2.8.2(000000.000*kWh)\r\n!1234\r\n")
        .await
        .unwrap();
    conn.write_all(&first_connection()).await.unwrap();
    let stats = until(&source, |s| s.samples == 3 && s.refused == 2).await;
    check_first(&mut source, &stats);

    // The dongle drops the connection; the meter reconnects, and the readings go on.
    drop(conn);
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the meter reconnects")
        .unwrap();
    let stats = until(&source, |s| {
        s.last_problem
            .as_deref()
            .is_some_and(|p| p.contains("closed"))
    })
    .await;
    assert!(stats.last_problem.unwrap().contains("trying again"));
    conn.write_all(&telegram(B0 + 2 * I + 2_000, 1_500, 50))
        .await
        .unwrap();
    until(&source, |s| s.samples == 4).await;
    assert_eq!(source.reading(IntervalIndex(B0 / I + 1)), reading(300, 0));
    assert_eq!(source.reading(IntervalIndex(B0 / I + 2)), None, "not ended");
}

#[tokio::test]
async fn p1_over_a_serial_line_reads_the_same_telegrams() {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let path =
        std::path::PathBuf::from(ptsname(&master, Vec::new()).unwrap().into_string().unwrap());
    // Held open so the line stays raw from before the first byte (a P1 cable is raw too).
    let slave = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut t = rustix::termios::tcgetattr(&slave).unwrap();
    t.make_raw();
    rustix::termios::tcsetattr(&slave, rustix::termios::OptionalActions::Now, &t).unwrap();

    let mut source = LiveSource::p1(P1Port::Serial(path), 900, 17_250, SimClock::real());
    let mut master = std::fs::File::from(master);
    // The reader may open the line after the first bytes: the test's own open holds them, and
    // a telegram repeated until one is taken tells that the reader is there.
    let first = telegram(B0 + 500, 1_000, 0);
    let start = Instant::now();
    while source.meter().stats().samples == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "nothing read");
        master.write_all(&first).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Drain what the test's own end of the line kept, so the reader sees the rest alone.
    drop(slave);
    master.write_all(&first_connection()).unwrap();
    let stats = until(&source, |s| s.samples == 4 && s.refused >= 2).await;
    assert!(
        stats.problems >= 2,
        "the cut telegram and the bad CRC: {stats:?}"
    );
    // The first sample at 0.5 s after the boundary is the boundary's; the one at 1 s is not.
    assert_eq!(
        source.reading(IntervalIndex(B0 / I)),
        reading(200, 50),
        "{stats:?}"
    );
}

/// A P1 dongle on 127.0.0.1 playing `rows` (import, export Wh per interval) of a home from
/// interval `first` on, on `clock`: a telegram at every boundary (the registers' sums of the rows
/// before it) and every few milliseconds between (the registers growing evenly through the
/// interval), then silence after the last row.
async fn p1_dongle(
    clock: SimClock,
    first: IntervalIndex,
    rows: Vec<(u64, u64)>,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        // Registers that had counted for years before the first interval.
        let (mut import, mut export) = (12_345_678u64, 1_234_567u64);
        let start = |k: usize| (first.0 + k as u64) * I;
        for (k, (di, de)) in rows.iter().enumerate() {
            conn.write_all(&telegram(start(k), import, export))
                .await
                .unwrap();
            loop {
                let now = clock.now_ms();
                if now >= start(k + 1) {
                    break;
                }
                // A second of the meter's clock, and the energy flowed so far.
                let at = now / 1000 * 1000;
                let part = |wh: u64| wh * at.saturating_sub(start(k)) / I;
                if at > start(k) {
                    conn.write_all(&telegram(at, import + part(*di), export + part(*de)))
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            import += di;
            export += de;
        }
        conn.write_all(&telegram(start(rows.len()), import, export))
            .await
            .unwrap();
        // The meter stays connected, and silent.
        std::future::pending::<()>().await;
    });
    (address, task)
}

/// Two daemons settle 24 sped-up intervals of the shipped data, the seller's meter a P1 dongle
/// over TCP and the buyer's a CSV file of interval readings: every trade is what the readings
/// say (the seller's export and the buyer's import, the smaller of the two), to the Wh and the
/// micro-unit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p1_meter_and_a_csv_file_settle_what_the_readings_say() {
    use common::{csv_rows, Chain, Replay, FIRST_ROW};
    const N: usize = 24;
    let _alone = common::one_replay_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::local(dir.path(), &[1, 2], 20);
    // A 15-minute interval every half second, from 10:00 UTC of the summer Monday.
    let mut replay = Replay::summer(dir.path(), &chain, 1_800, Some(N as u64 + 40));
    let anchor = IntervalIndex(replay.anchor.0 + 40);
    replay.clock = SimClock::accelerated(anchor.0 * I, 1_800);
    let (seller, buyer) = (csv_rows("home-03"), csv_rows("home-02"));
    let rows = seller[FIRST_ROW + 40..FIRST_ROW + 40 + N].to_vec();
    let (address, dongle) = p1_dongle(replay.clock.clone(), anchor, rows).await;
    let p1 = LiveSource::p1(P1Port::Tcp(address), 900, 17_250, replay.clock.clone());

    let b = replay.home(2, "home-02", vec![], vec![]);
    let a = replay.home_with_meter(1, Box::new(p1), vec![b.engine.address.clone()]);
    let (ea, eb) = (a.engine.clone(), b.engine.clone());
    let channel = common::open_flat(&ea, 2, 150_000, anchor, 6).await;
    common::settled_as_the_data_says(
        (&ea, &eb),
        channel,
        anchor,
        N,
        FIRST_ROW + 40,
        150_000,
        &seller,
        &buyer,
    )
    .await;
    dongle.abort();
}
