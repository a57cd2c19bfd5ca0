//! What the gateway's end-to-end tests share: keys, a ledger node, bounded waits.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use gridchan_chain::{server, Genesis, LocalLedger};
use gridchan_channel::{Amount, ChannelId, ChannelView, NodeId, Signer};
use gridchan_gateway::engine::EngineHandle;
use gridchan_transport::{Endpoint, Limits, PeerAddr};

pub fn key(b: u8) -> Signer {
    Signer::new(&[b; 32], &[b; 32]).unwrap()
}

/// A ledger node on 127.0.0.1 producing a block every `block_ms`.
pub struct LedgerNode {
    pub ledger: Arc<LocalLedger>,
    pub addr: PeerAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LedgerNode {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts a ledger in `dir` where each of `funded` holds 100 tokens.
pub fn ledger_node(dir: &std::path::Path, funded: &[NodeId], block_ms: u64) -> LedgerNode {
    let genesis = Genesis {
        chain_id: [7; 32],
        min_challenge_window: 2,
        balances: funded.iter().map(|n| (*n, Amount(100_000_000))).collect(),
    };
    let ledger = LocalLedger::open(&dir.join("ledger"), genesis).unwrap();
    let limits = Limits {
        max_frame: gridchan_chain::rpc::MAX_RPC_FRAME,
        ..Limits::default()
    };
    let endpoint = Endpoint::bind("127.0.0.1:0".parse().unwrap(), key(9), limits).unwrap();
    let addr = endpoint.peer_addr();
    let tasks = vec![
        tokio::spawn(server::serve(endpoint, ledger.clone())),
        ledger.spawn_producer(Duration::from_millis(block_ms)),
    ];
    LedgerNode {
        ledger,
        addr,
        tasks,
    }
}

pub async fn view(h: &EngineHandle, channel: ChannelId) -> Option<ChannelView> {
    h.channel(channel).await.unwrap()
}

/// Waits (at most `secs`) until `f` holds, re-checking whenever one of `engines` reports
/// something: no sleeps that guess.
pub async fn until<F, Fut>(what: &str, engines: &[&EngineHandle], secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let forwarders: Vec<_> = engines
        .iter()
        .map(|e| {
            let mut reports = e.reports();
            let tx = tx.clone();
            tokio::spawn(async move {
                while reports.recv().await.is_ok() {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f().await {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {what}");
        let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), rx.recv()).await;
    }
    for f in forwarders {
        f.abort();
    }
}

/// The summer week of the shipped data set starts at row 2 * 672 (2025-07-14, a Monday).
pub const FIRST_ROW: usize = 2 * 672;
/// 15-minute intervals, as in the data.
pub const INTERVAL: u32 = 900;

pub fn data(home: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../data/neighbourhood/{home}.csv"))
}

/// A meter that stops reading after an interval.
pub struct Until<M>(pub M, pub gridchan_channel::IntervalIndex);

impl<M: gridchan_gateway::meter::MeterSource> gridchan_gateway::meter::MeterSource for Until<M> {
    fn reading(
        &mut self,
        interval: gridchan_channel::IntervalIndex,
    ) -> Option<gridchan_gateway::meter::MeterReading> {
        (interval <= self.1)
            .then(|| self.0.reading(interval))
            .flatten()
    }
}

/// The shipped data's summer week played on `ledger`: Monday 2025-07-14 00:00 UTC is interval
/// `anchor`, and the clock runs `speedup` times faster than wall time.
pub struct Replay<'a> {
    pub dir: &'a std::path::Path,
    pub ledger: &'a PeerAddr,
    pub clock: gridchan_gateway::clock::SimClock,
    pub anchor: gridchan_channel::IntervalIndex,
    /// The last interval with readings (none: the whole file).
    pub last: Option<gridchan_channel::IntervalIndex>,
}

impl<'a> Replay<'a> {
    /// Readings for `intervals` intervals from the anchor (none: the whole file).
    pub fn summer(
        dir: &'a std::path::Path,
        ledger: &'a PeerAddr,
        speedup: u32,
        intervals: Option<u64>,
    ) -> Replay<'a> {
        let start_ms = 1_752_451_200_000u64; // 2025-07-14T00:00:00Z
        let anchor = gridchan_channel::IntervalIndex(start_ms / 1000 / u64::from(INTERVAL));
        Replay {
            dir,
            ledger,
            clock: gridchan_gateway::clock::SimClock::accelerated(start_ms, speedup),
            anchor,
            last: intervals.map(|n| gridchan_channel::IntervalIndex(anchor.0 + n)),
        }
    }

    /// A gateway daemon with key `k` replaying `home` (`home-NN`; row [`FIRST_ROW`] is played
    /// as the anchor), dialling `peers` and pushing its states to `towers`.
    pub fn home(
        &self,
        k: u8,
        home: &str,
        peers: Vec<PeerAddr>,
        towers: Vec<PeerAddr>,
    ) -> gridchan_gateway::daemon::Daemon {
        use gridchan_chain::{Ledger, RemoteClient};
        use gridchan_gateway::meter::{CsvMeter, MeterSource};
        let endpoint = Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            key(k).duplicate(&[1; 32]),
            Limits::default(),
        )
        .unwrap();
        let store =
            gridchan_gateway::store::SqliteStore::open(&self.dir.join(format!("gw-{k}.sqlite")))
                .unwrap();
        let engine = gridchan_gateway::engine::spawn(
            endpoint,
            key(k),
            store,
            gridchan_channel::Policy::default(),
        )
        .unwrap();
        let client: Arc<dyn Ledger> =
            Arc::new(RemoteClient::new(self.ledger.clone(), key(k), [k; 32]).unwrap());
        let csv = CsvMeter::open(
            &data(home),
            gridchan_channel::IntervalIndex(self.anchor.0 - FIRST_ROW as u64),
        )
        .unwrap();
        let meter: Box<dyn MeterSource> = match self.last {
            Some(last) => Box::new(Until(csv, last)),
            None => Box::new(csv),
        };
        gridchan_gateway::daemon::start(gridchan_gateway::daemon::DaemonParts {
            engine,
            ledger: client,
            meter,
            interval_seconds: INTERVAL,
            peers,
            clock: self.clock,
            towers,
            tower_key: key(k),
        })
        .unwrap()
    }
}
