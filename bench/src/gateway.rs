//! The gateway latency benchmark: one channel between two engines over QUIC on loopback, each
//! state durable in SQLite (WAL, FULL) before it is signed, beside the floor measured in the
//! same run: a bare QUIC round trip, 2 signs + 2 verifications, and the 3 durable writes on an
//! update's critical path (the proposal, the receiver's countersigned state, the completed state).

use std::time::{Duration, Instant};

use gridchan_channel::{
    ChannelStore, Event, IntervalIndex, IntervalReading, LedgerEvent, Phase, Signer, WattHours,
};
use gridchan_transport::{Endpoint, Limits};

use gridchan_fixtures::{engine_at, flat_channel, store_path};
use gridchan_gateway::engine::Report;
use gridchan_gateway::store::SqliteStore;

/// What [`run`] measured (all per update).
#[derive(Clone, Debug)]
pub struct GatewayBench {
    pub updates: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub per_second: f64,
    pub rtt_p50: Duration,
    pub crypto: Duration,
    pub write_p50: Duration,
}

impl GatewayBench {
    pub fn floor(&self) -> Duration {
        self.rtt_p50 + self.crypto + self.write_p50 * 3
    }

    pub fn report(&self) -> String {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let floor = self.floor();
        format!(
            "gateway benchmark: one channel, two gateway processes over QUIC on 127.0.0.1, SQLite WAL+FULL, {} updates\n\
             \x20 update latency  p50 {:>8.0} us   p99 {:>8.0} us   {:>7.0} updates/s\n\
             \x20 floor               {:>8.0} us = QUIC round trip {:.0} + 2 signs + 2 verifies {:.0} + 3 durable writes 3 x {:.0}\n\
             \x20 ratio           p50 {:>8.2}x      p99 {:>8.2}x   (goals: 1.3x and 2.5x)",
            self.updates,
            us(self.p50),
            us(self.p99),
            self.per_second,
            us(floor),
            us(self.rtt_p50),
            us(self.crypto),
            us(self.write_p50),
            self.p50.as_secs_f64() / floor.as_secs_f64(),
            self.p99.as_secs_f64() / floor.as_secs_f64(),
        )
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The first interval of the benchmark channel; update `i` settles interval `OPENED_AT + i`.
pub(crate) const OPENED_AT: u64 = 1_000;
/// Warm-up updates, not counted.
const WARM_UP: u64 = 50;
/// How far ahead of the proposals the peer feeds its own readings.
const READ_AHEAD: u64 = 16;

/// The energy of update `i` (varied, so no two states are alike).
pub(crate) fn energy_of(i: u64) -> WattHours {
    WattHours(100 + i % 50)
}

/// The peer's side, meant for its own process (`gridchan bench gateway` starts it): gateway B
/// and a QUIC echo endpoint for the floor. Calls `ready` with both addresses, accepts the
/// channel the benchmark opens, marks it funded, and keeps its own meter readings a few
/// intervals ahead of the proposals. Runs until the task is dropped.
pub async fn run_peer(dir: &std::path::Path, ready: impl FnOnce(String, String)) {
    let b = engine_at(dir, 2);
    let mut reports = b.reports();
    let echo = Endpoint::bind(
        "127.0.0.1:0".parse().expect("address"),
        Signer::new(&[7; 32], &[0; 32]).expect("key"),
        Limits::default(),
    )
    .expect("bind");
    ready(b.address.to_string(), echo.peer_addr().to_string());
    tokio::spawn(async move {
        while let Some(conn) = echo.accept().await {
            tokio::spawn(async move {
                let Ok(mut s) = conn.accept_stream().await else {
                    return;
                };
                while let Ok(Some(f)) = s.read_frame().await {
                    if s.write_frame(&f).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let read = |channel, i: u64| {
        let b = b.clone();
        async move {
            let energy = energy_of(i);
            let reading = IntervalReading::buying(IntervalIndex(OPENED_AT + i), energy);
            b.reading(channel, reading).await.expect("engine runs");
        }
    };
    loop {
        match reports.recv().await {
            Ok(Report::Event(Event::ChannelAgreed { channel, .. })) => {
                // The benchmark has no ledger: both sides take the funding as given.
                b.ledger_event(channel, LedgerEvent::Funded)
                    .await
                    .expect("engine runs");
            }
            Ok(Report::Event(Event::ChannelOpen { channel })) => {
                for i in 1..=READ_AHEAD {
                    read(channel, i).await;
                }
            }
            Ok(Report::Event(Event::Settled { channel, trade, .. })) => {
                read(channel, trade.interval.0 - OPENED_AT + READ_AHEAD).await;
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(_) => return,
        }
    }
}

/// The measuring side: gateway A in this process opens a channel to the peer gateway (another
/// process, started with [`run_peer`]) and times `updates` updates, then measures the floor.
pub async fn run(
    dir: &std::path::Path,
    updates: usize,
    peer: gridchan_transport::PeerAddr,
    echo: gridchan_transport::PeerAddr,
) -> GatewayBench {
    let a = engine_at(dir, 1);
    let mut a_reports = a.reports();
    a.connect(peer.clone()).await.expect("engine runs");
    let opened_at = IntervalIndex(OPENED_AT);
    let channel = a
        .open(flat_channel(
            peer.node,
            1_000_000_000_000,
            100_000,
            opened_at,
            [1; 32],
        ))
        .await
        .expect("open");
    // Wait for the peer's signature on version 0, then take the funding as given.
    loop {
        let funding = a
            .channels()
            .await
            .map(|c| c.iter().any(|v| v.phase == Phase::Funding))
            .unwrap_or(false);
        if funding {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), a_reports.recv()).await;
    }
    a.ledger_event(channel, LedgerEvent::Funded)
        .await
        .expect("engine runs");
    let mut latencies = Vec::with_capacity(updates);
    let started = Instant::now();
    for i in 1..=updates as u64 + WARM_UP {
        let interval = IntervalIndex(OPENED_AT + i);
        let t = Instant::now();
        a.reading(channel, IntervalReading::selling(interval, energy_of(i)))
            .await
            .expect("engine runs");
        loop {
            match a_reports.recv().await {
                Ok(Report::Event(Event::Settled { trade, .. })) if trade.interval == interval => {
                    break
                }
                Ok(_) => {}
                Err(e) => panic!("reports: {e}"),
            }
        }
        if i > WARM_UP {
            latencies.push(t.elapsed());
        }
    }
    let total = started.elapsed();
    latencies.sort();
    let (rtt_p50, crypto, write_p50) = floor(dir, &echo, updates.min(2000)).await;
    GatewayBench {
        updates,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        per_second: (updates as u64 + WARM_UP) as f64 / total.as_secs_f64(),
        rtt_p50,
        crypto,
        write_p50,
    }
}

/// The floor's parts, measured now: QUIC round trip p50, 2 signs + 2 recoveries, one durable
/// write p50.
async fn floor(
    dir: &std::path::Path,
    echo: &gridchan_transport::PeerAddr,
    n: usize,
) -> (Duration, Duration, Duration) {
    // A QUIC round trip to the echo endpoint in the peer's process.
    let client = Endpoint::bind(
        "127.0.0.1:0".parse().expect("address"),
        Signer::new(&[8; 32], &[0; 32]).expect("key"),
        Limits::default(),
    )
    .expect("bind");
    let conn = client.connect(echo).await.expect("connect");
    let mut s = conn.open_stream().await.expect("stream");
    let frame = vec![0u8; 220];
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.write_frame(&frame).await.expect("write");
        s.read_frame().await.expect("read");
        rtts.push(t.elapsed());
    }
    rtts.sort();
    let crypto = crypto_per_update(n as u64);
    // One durable write of a channel record. The record changes every time (A's and B's
    // records of the channel, in turn), as it does in the protocol: a write that changes
    // nothing costs SQLite no fsync and would make the floor look cheaper than it is.
    let mut store = SqliteStore::open(&dir.join("bench-floor.sqlite")).expect("store");
    let load = |key: u8| {
        SqliteStore::open(&store_path(dir, key))
            .expect("store")
            .load()
            .expect("load")
            .into_iter()
            .next()
            .expect("a record")
    };
    let records = [load(1), load(2)];
    let mut writes = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        store.write(&records[i % 2]).expect("write");
        writes.push(t.elapsed());
    }
    writes.sort();
    (percentile(&rtts, 0.5), crypto, percentile(&writes, 0.5))
}

/// What [`run_many`] measured.
#[derive(Clone, Debug)]
pub struct ManyBench {
    pub channels: usize,
    pub rounds: usize,
    pub updates_per_second: f64,
    /// 2 cores / (2 signs + 2 verifications): the most updates per second signing allows.
    pub signing_limit: f64,
    /// The same cryptography on two threads at once, updates per second: what this machine's
    /// two cores give together (for the reader; the goal is against `signing_limit`).
    pub both_cores: f64,
    /// The process's CPU time over the rounds' wall time (where the system says).
    pub cores_busy: Option<f64>,
}

impl ManyBench {
    pub fn report(&self) -> String {
        format!(
            "gateway benchmark: {} channels between two engines over QUIC, SQLite WAL+FULL (writes batched across channels), {} rounds\n\
             \x20 aggregate       {:>8.0} updates/s\n\
             \x20 signing limit   {:>8.0} updates/s  (2 cores / (2 signs + 2 verifications), measured now)\n\
             \x20 ratio           {:>8.2}  (goal: at least 0.60)\n\
             \x20 both cores      {:>8.0} updates/s  (the same cryptography on 2 threads at once: {:.2} of the limit; below 1 when the host is busy)\n\
             \x20 cores busy      {:>8}  of 2 during the rounds (the process's CPU time / wall time)",
            self.channels,
            self.rounds,
            self.updates_per_second,
            self.signing_limit,
            self.updates_per_second / self.signing_limit,
            self.both_cores,
            self.both_cores / self.signing_limit,
            self.cores_busy
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "unknown".into()),
        )
    }
}

/// Opens `channels` channels between two engines, then settles `rounds` intervals on all of them
/// at once, and measures the aggregate rate.
pub async fn run_many(dir: &std::path::Path, channels: usize, rounds: usize) -> ManyBench {
    let a = engine_at(dir, 3);
    let b = engine_at(dir, 4);
    let mut a_reports = a.reports();
    a.connect(b.address.clone()).await.expect("engine runs");
    let opened_at = IntervalIndex(1_000);
    let mut ids = Vec::with_capacity(channels);
    for i in 0..channels {
        let mut nonce = [0u8; 32];
        nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let id = a
            .open(flat_channel(
                b.node,
                1_000_000_000,
                100_000,
                opened_at,
                nonce,
            ))
            .await
            .expect("open");
        ids.push(id);
    }
    // Wait for every channel to be agreed on both sides, then fund them all.
    loop {
        let agreed = |v: Vec<gridchan_channel::ChannelView>| {
            v.iter().filter(|c| c.phase == Phase::Funding).count()
        };
        if agreed(a.channels().await.expect("runs")) == channels
            && agreed(b.channels().await.expect("runs")) == channels
        {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), a_reports.recv()).await;
    }
    for id in &ids {
        a.ledger_event(*id, LedgerEvent::Funded)
            .await
            .expect("runs");
        b.ledger_event(*id, LedgerEvent::Funded)
            .await
            .expect("runs");
    }
    let started = Instant::now();
    let cpu_before = process_cpu();
    for round in 1..=rounds as u64 {
        let interval = IntervalIndex(opened_at.0 + round);
        // Each gateway's meter gives the interval's readings of every channel at once.
        let energy = WattHours(100 + round);
        let readings = |reading: IntervalReading| ids.iter().map(move |id| (*id, reading));
        b.readings(readings(IntervalReading::buying(interval, energy)).collect())
            .await
            .expect("runs");
        a.readings(readings(IntervalReading::selling(interval, energy)).collect())
            .await
            .expect("runs");
        let mut settled = 0;
        while settled < channels {
            match a_reports.recv().await {
                Ok(Report::Event(Event::Settled { trade, .. })) if trade.interval == interval => {
                    settled += 1
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Count from the channels themselves instead.
                    settled = a
                        .channels()
                        .await
                        .expect("runs")
                        .iter()
                        .filter(|c| {
                            c.current
                                .as_ref()
                                .is_some_and(|s| s.state().last_interval == interval)
                        })
                        .count();
                }
                Err(e) => panic!("reports: {e}"),
            }
        }
    }
    let elapsed = started.elapsed();
    let cores_busy = process_cpu()
        .zip(cpu_before)
        // A thread that ended during the rounds takes its time with it: unknown then.
        .and_then(|(after, before)| after.checked_sub(before))
        .map(|cpu| cpu.as_secs_f64() / elapsed.as_secs_f64());
    // The fastest of three measurements: noise on the machine only ever lowers the limit, and a
    // lower limit would flatter the ratio.
    let per_update = (0..3)
        .map(|_| crypto_per_update(1_000))
        .min()
        .expect("three runs")
        .as_secs_f64();
    ManyBench {
        channels,
        rounds,
        updates_per_second: (channels * rounds) as f64 / elapsed.as_secs_f64(),
        signing_limit: 2.0 / per_update,
        both_cores: (0..3)
            .map(|_| crypto_on_both_cores(1_000))
            .fold(0.0, f64::max),
        cores_busy,
    }
}

/// Updates per second of [`crypto_per_update`] run on two threads at once, `n` each.
fn crypto_on_both_cores(n: u64) -> f64 {
    let t = Instant::now();
    std::thread::scope(|s| {
        let other = s.spawn(|| crypto_per_update(n));
        crypto_per_update(n);
        other.join().expect("the cryptography runs");
    });
    2.0 * n as f64 / t.elapsed().as_secs_f64()
}

/// CPU time of one update's cryptography: 2 signs + 2 verifications by key recovery, averaged
/// over `n` fresh digests.
fn crypto_per_update(n: u64) -> Duration {
    let ka = Signer::new(&[1; 32], &[3; 32]).expect("key");
    let kb = Signer::new(&[2; 32], &[4; 32]).expect("key");
    let t = Instant::now();
    for i in 0..n {
        let mut d = [9u8; 32];
        d[..8].copy_from_slice(&i.to_be_bytes());
        let x = ka.sign(&d);
        x.verify(&d, &ka.id()).expect("valid");
        let y = kb.sign(&d);
        y.verify(&d, &kb.id()).expect("valid");
    }
    t.elapsed() / n.max(1) as u32
}

/// The CPU time the process's threads have used so far, in nanoseconds from Linux's
/// `/proc/self/task/*/schedstat` (its first field); `None` elsewhere.
fn process_cpu() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}
