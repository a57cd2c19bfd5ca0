//! The gateway under attack (`gridchan bench hostile`): hundreds of hostile connections doing
//! the worst the transport lets them (a frame stalled half-way, every extra stream they can
//! open filled as far as the victim lets them, everything held open) against a gateway in its
//! own process, while an honest neighbour settles with it, drops, reconnects and settles again.
//! It reports the victim's resident memory (the target: under 64 MB) and what the honest
//! neighbour managed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gridchan_channel::{Event, IntervalIndex, IntervalReading, LedgerEvent, Phase, Signer};
use gridchan_transport::{Endpoint, Limits, PeerAddr};

use gridchan_fixtures::{engine_at, flat_channel};

use crate::gateway::{energy_of, OPENED_AT};
use gridchan_gateway::engine::{EngineHandle, Report};

/// What [`run`] measured.
#[derive(Clone, Debug)]
pub struct HostileBench {
    pub connections: usize,
    /// Hostile connections the victim still held when the honest neighbour came back.
    pub held: usize,
    pub extra_streams: usize,
    /// Bytes the hostile connections got the victim to take without reading them.
    pub bytes_pushed: u64,
    pub rss_before: u64,
    pub rss_peak: u64,
    /// Intervals the honest neighbour settled during the attack, of those it tried, before and
    /// after it reconnected.
    pub settled: (usize, usize),
    pub tried: usize,
}

impl HostileBench {
    pub fn report(&self) -> String {
        let mb = |b: u64| b as f64 / 1_048_576.0;
        format!(
            "hostile benchmark: {} hostile connections against one gateway process\n\
             \x20 each: proves a key, stalls a frame half-way, opens every extra stream it can and fills it\n\
             \x20 held by the victim at the end: {}; extra streams granted: {}; bytes pushed unread: {:.1} MB in all\n\
             \x20 victim resident memory: {:.1} MB before, {:.1} MB at the peak (goal: under 64 MB)\n\
             \x20 honest neighbour: settled {} of {} intervals during the attack, then reconnected and settled {} of {}",
            self.connections,
            self.held,
            self.extra_streams,
            mb(self.bytes_pushed),
            mb(self.rss_before),
            mb(self.rss_peak),
            self.settled.0,
            self.tried,
            self.settled.1,
            self.tried,
        )
    }
}

/// A stranger's key, `n` of many.
fn stranger(n: u16) -> Signer {
    let mut secret = [0x6b; 32];
    secret[..2].copy_from_slice(&n.to_be_bytes());
    Signer::new(&secret, &secret).expect("fixed key")
}

/// One hostile connection: everything it holds, until dropped.
async fn attack(
    n: u16,
    victim: PeerAddr,
    extra: Arc<AtomicUsize>,
    pushed: Arc<AtomicU64>,
) -> Option<(
    gridchan_transport::Connection,
    Box<dyn std::any::Any + Send>,
)> {
    let limits = Limits {
        max_frame: 1 << 20,
        ..Limits::default()
    };
    let ep = Endpoint::bind("127.0.0.1:0".parse().ok()?, stranger(n), limits).ok()?;
    let conn = tokio::time::timeout(Duration::from_secs(20), ep.connect(&victim))
        .await
        .ok()?
        .ok()?;
    let (r, mut w) = conn.open_stream().await.ok()?.split();
    // A frame that promises 16,380 bytes and stops after 8,000.
    let mut half = 16_380u32.to_be_bytes().to_vec();
    half.extend_from_slice(&[0x55; 8_000]);
    let _ = w.write_raw(&half).await;
    pushed.fetch_add(half.len() as u64, Ordering::Relaxed);
    let mut held: Vec<Box<dyn std::any::Any + Send>> = vec![Box::new((r, w))];
    for _ in 0..4 {
        let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(300), conn.open_stream()).await
        else {
            break;
        };
        extra.fetch_add(1, Ordering::Relaxed);
        let (r, mut w) = s.split();
        let chunk = [0xaa; 4096];
        for _ in 0..256 {
            match tokio::time::timeout(Duration::from_millis(200), w.write_raw(&chunk)).await {
                Ok(Ok(())) => pushed.fetch_add(chunk.len() as u64, Ordering::Relaxed),
                _ => break,
            };
        }
        held.push(Box::new((r, w)));
    }
    held.push(Box::new(ep));
    Some((conn, Box::new(held)))
}

/// The honest neighbour (gateway 1 in `dir`) sells to the victim for `n` intervals from `from`,
/// each waited for at most 10 s; returns how many settled.
async fn settle(
    a: &EngineHandle,
    channel: gridchan_channel::ChannelId,
    from: u64,
    n: usize,
) -> usize {
    let mut reports = a.reports();
    let mut settled = 0;
    for i in from..from + n as u64 {
        let interval = IntervalIndex(OPENED_AT + i);
        if a.reading(channel, IntervalReading::selling(interval, energy_of(i)))
            .await
            .is_err()
        {
            break;
        }
        let done = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match reports.recv().await {
                    Ok(Report::Event(Event::Settled { trade, .. }))
                        if trade.interval == interval =>
                    {
                        return true
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
                    _ => {}
                }
            }
        })
        .await;
        if done == Ok(true) {
            settled += 1;
        }
    }
    settled
}

/// Runs the attack against the victim gateway at `victim` (another process, started with
/// [`crate::gateway::run_peer`]), whose resident memory `rss` reads.
pub async fn run(
    dir: &std::path::Path,
    victim: PeerAddr,
    connections: usize,
    rss: impl Fn() -> u64 + Send + Sync + 'static,
) -> HostileBench {
    let rss = Arc::new(rss);
    let a = engine_at(dir, 1);
    let mut reports = a.reports();
    a.connect(victim.clone()).await.expect("engine runs");
    let channel = a
        .open(flat_channel(
            victim.node,
            1_000_000_000_000,
            100_000,
            IntervalIndex(OPENED_AT),
            [1; 32],
        ))
        .await
        .expect("open");
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.channel(channel).await.ok().flatten().map(|c| c.phase) != Some(Phase::Funding) {
        assert!(
            Instant::now() < deadline,
            "the victim never accepted the channel"
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), reports.recv()).await;
    }
    a.ledger_event(channel, LedgerEvent::Funded)
        .await
        .expect("engine runs");
    let tried = 20;
    settle(&a, channel, 1, 5).await;
    let rss_before = rss();
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (peak, rss) = (peak.clone(), rss.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    eprintln!("opening {connections} hostile connections...");
    let (extra, pushed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicU64::new(0)));
    let mut attacks = tokio::task::JoinSet::new();
    for n in 0..connections as u16 {
        attacks.spawn(attack(n, victim.clone(), extra.clone(), pushed.clone()));
    }
    let mut holdings = Vec::new();
    while let Some(done) = attacks.join_next().await {
        if let Ok(Some(h)) = done {
            holdings.push(h);
        }
    }
    eprintln!(
        "{} hostile connections hold their place; the honest neighbour settles...",
        holdings.len()
    );
    let during = settle(&a, channel, 6, tried).await;
    // The honest neighbour drops and comes back while the strangers hold every place.
    a.stop().await.expect("engine runs");
    let a = engine_at(dir, 1);
    let reconnected = tokio::time::timeout(Duration::from_secs(20), a.dial(victim.clone())).await;
    let after = match reconnected {
        Ok(Ok(())) => settle(&a, channel, 6 + tried as u64, tried).await,
        _ => 0,
    };
    peak.fetch_max(rss(), Ordering::Relaxed);
    sampler.abort();
    let held = holdings
        .iter()
        .filter(|(conn, _)| conn.close_reason().is_none())
        .count();
    drop(holdings);
    HostileBench {
        connections,
        held,
        extra_streams: extra.load(Ordering::Relaxed),
        bytes_pushed: pushed.load(Ordering::Relaxed),
        rss_before,
        rss_peak: peak.load(Ordering::Relaxed),
        settled: (during, after),
        tried,
    }
}
