//! What the gateway's end-to-end tests share: keys, a ledger node, bounded waits.

#![allow(dead_code)]

pub use gridchan_harness::key;
use std::sync::Arc;
use std::time::Duration;

use gridchan_chain::{server, Genesis, Ledger, LocalLedger, RemoteClient};
use gridchan_channel::{Amount, ChannelId, ChannelView, NodeId};
use gridchan_gateway::engine::EngineHandle;
use gridchan_transport::PeerAddr;

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
    let endpoint = gridchan_chain::rpc::bind("127.0.0.1:0".parse().unwrap(), key(9)).unwrap();
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

/// Held by a replay test while it runs: two of them at once (the same test on two ledgers) can
/// starve each other's 50 ms intervals on a 2-core machine, and a metering round that waits
/// more than two intervals gives up on its announcements.
pub async fn one_replay_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static REPLAY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    REPLAY.lock().await
}

/// The ledger a test's services settle on: the local ledger node, or the adjudicator contract
/// on an anvil chain. The same test code runs on either.
pub enum Chain {
    Local(LedgerNode),
    Evm(Box<EvmChain>),
}

pub struct EvmChain {
    pub anvil: gridchan_chain::evm::anvil::Anvil,
    pub config: gridchan_chain::evm::EvmConfig,
    /// Blocks come only with transactions (instant mining): time passes when the test mines.
    instant: bool,
    funded: Vec<NodeId>,
    /// Reads balances.
    reader: gridchan_chain::evm::EvmLedger,
}

/// Each funded party's tokens, on either chain.
pub const FUNDS: u64 = 100_000_000;

impl Chain {
    /// A local ledger node in `dir` producing a block every `block_ms`; each of `funded` keys
    /// holds [`FUNDS`].
    pub fn local(dir: &std::path::Path, funded: &[u8], block_ms: u64) -> Chain {
        let ids: Vec<NodeId> = funded.iter().map(|k| key(*k).id()).collect();
        Chain::Local(ledger_node(dir, &ids, block_ms))
    }

    /// The adjudicator and a test token deployed on a new anvil (instant mining, or a block
    /// every `block_time` seconds); each of `funded` keys holds [`FUNDS`] tokens, and every
    /// test key (1 to 9) has gas.
    pub async fn evm(funded: &[u8], block_time: Option<u64>) -> Chain {
        use gridchan_chain::evm::{anvil::Anvil, EvmLedger};
        let anvil = Anvil::start(block_time).expect("anvil");
        let gas: Vec<NodeId> = (1..=9u8).map(|k| key(k).id()).collect();
        let funded: Vec<NodeId> = funded.iter().map(|k| key(*k).id()).collect();
        let d = anvil
            .deploy_with_test_tokens(&[0x44; 32], &[1; 32], &gas, &funded, FUNDS)
            .await
            .unwrap();
        let config = d.config(&anvil.rpc, 1);
        Chain::Evm(Box::new(EvmChain {
            anvil,
            reader: EvmLedger::connect(config.clone(), &[9; 32], &[1; 32]).unwrap(),
            config,
            instant: block_time.is_none(),
            funded,
        }))
    }

    /// A client of this chain with test key `k`.
    pub fn client(&self, k: u8) -> Arc<dyn Ledger> {
        match self {
            Chain::Local(node) => {
                Arc::new(RemoteClient::new(node.addr.clone(), key(k), [k; 32]).unwrap())
            }
            Chain::Evm(c) => Arc::new(
                gridchan_chain::evm::EvmLedger::connect(c.config.clone(), &[k; 32], &[1; 32])
                    .unwrap(),
            ),
        }
    }

    /// All the money there is: every account and every channel (on the EVM chain, the funded
    /// parties' tokens and the adjudicator's).
    pub async fn supply(&self) -> u128 {
        match self {
            Chain::Local(node) => node.ledger.total_supply(),
            Chain::Evm(c) => c.reader.supply_among(&c.funded).await.unwrap(),
        }
    }

    /// Waits (at most `secs`) for a block above `height`, as `client` sees it. On an
    /// instant-mining chain nothing happens without transactions: the test mines the blocks.
    pub async fn wait_above(&self, client: &dyn Ledger, height: u64, secs: u64) -> u64 {
        if let Chain::Evm(c) = self {
            let now = client.height().await.unwrap();
            if c.instant && now <= height {
                c.anvil.mine(height + 1 - now).await.unwrap();
            }
        }
        client
            .wait_above(height, Duration::from_secs(secs))
            .await
            .unwrap()
    }

    /// Native currency test key `k` has spent on gas (none on the local ledger, which charges
    /// no fees).
    pub async fn gas_spent(&self, k: u8) -> u128 {
        use alloy::providers::Provider;
        match self {
            Chain::Local(_) => 0,
            Chain::Evm(c) => {
                let who = gridchan_chain::evm::address_of(&key(k).id());
                let left: u128 = c.reader.provider().get_balance(who).await.unwrap().to();
                gridchan_chain::evm::anvil::GAS_WEI - left
            }
        }
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

/// The shipped data of `home`, found from whichever crate's tests include this module.
pub fn data(home: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join(format!("data/neighbourhood/{home}.csv")))
        .find(|p| p.exists())
        .expect("the repository's data/neighbourhood")
}

/// Each row's metered (import, export) in Wh of the shipped data's `home`.
pub fn csv_rows(home: &str) -> Vec<(u64, u64)> {
    std::fs::read_to_string(data(home))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[3].parse().unwrap(), f[4].parse().unwrap())
        })
        .collect()
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
    pub chain: &'a Chain,
    pub clock: gridchan_gateway::clock::SimClock,
    pub anchor: gridchan_channel::IntervalIndex,
    /// The last interval with readings (none: the whole file).
    pub last: Option<gridchan_channel::IntervalIndex>,
}

impl<'a> Replay<'a> {
    /// Readings for `intervals` intervals from the anchor (none: the whole file).
    pub fn summer(
        dir: &'a std::path::Path,
        chain: &'a Chain,
        speedup: u32,
        intervals: Option<u64>,
    ) -> Replay<'a> {
        let start_ms = 1_752_451_200_000u64; // 2025-07-14T00:00:00Z
        let anchor = gridchan_channel::IntervalIndex(start_ms / 1000 / u64::from(INTERVAL));
        Replay {
            dir,
            chain,
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
        self.gateway(k, Some(home), peers, towers, None)
    }

    /// A market node's daemon with key `k` (no meter), running a market on `terms`.
    pub fn market_node(
        &self,
        k: u8,
        terms: gridchan_channel::market::MarketTerms,
    ) -> gridchan_gateway::daemon::Daemon {
        self.gateway(k, None, vec![], vec![], Some(terms))
    }

    /// A gateway daemon with key `k` reading `meter`, dialling `peers`.
    pub fn home_with_meter(
        &self,
        k: u8,
        meter: Box<dyn gridchan_gateway::meter::MeterSource>,
        peers: Vec<PeerAddr>,
    ) -> gridchan_gateway::daemon::Daemon {
        self.start(k, Some(meter), peers, vec![], None)
    }

    fn gateway(
        &self,
        k: u8,
        home: Option<&str>,
        peers: Vec<PeerAddr>,
        towers: Vec<PeerAddr>,
        market: Option<gridchan_channel::market::MarketTerms>,
    ) -> gridchan_gateway::daemon::Daemon {
        use gridchan_gateway::meter::{CsvMeter, MeterSource};
        let meter = home.map(|home| {
            let csv = CsvMeter::open(&data(home), INTERVAL).unwrap();
            let from = csv.nth_interval(FIRST_ROW).unwrap();
            let csv = csv.played(from, self.anchor);
            let meter: Box<dyn MeterSource> = match self.last {
                Some(last) => Box::new(Until(csv, last)),
                None => Box::new(csv),
            };
            meter
        });
        self.start(k, meter, peers, towers, market)
    }

    fn start(
        &self,
        k: u8,
        meter: Option<Box<dyn gridchan_gateway::meter::MeterSource>>,
        peers: Vec<PeerAddr>,
        towers: Vec<PeerAddr>,
        market: Option<gridchan_channel::market::MarketTerms>,
    ) -> gridchan_gateway::daemon::Daemon {
        let path = self.dir.join(format!("gw-{k}.sqlite"));
        let policy = gridchan_channel::Policy {
            interval_seconds: Some(INTERVAL),
            ..gridchan_channel::Policy::accepting_anyone()
        };
        let engine = gridchan_fixtures::market_engine(&path, key(k), policy, &self.clock, market);
        gridchan_gateway::daemon::start(gridchan_gateway::daemon::DaemonParts {
            engine,
            store_path: path,
            ledger: self.chain.client(k),
            meter,
            interval_seconds: INTERVAL,
            peers,
            clock: self.clock.clone(),
            towers,
            tower_key: key(k),
            funds: None,
            history: None,
            min_acks: 0,
        })
        .unwrap()
    }
}

/// A channel from `ea` to the gateway of key `peer` on a flat `price` (micro-units per kWh),
/// 20 tokens each side, no meter tolerance, opened at `opened_at`.
pub async fn open_flat(
    ea: &EngineHandle,
    peer: u8,
    price: u64,
    opened_at: gridchan_channel::IntervalIndex,
    nonce: u8,
) -> ChannelId {
    use gridchan_channel::{MeterTolerance, OpenRequest, PricePerKwh, Tariff};
    ea.open(OpenRequest {
        peer: key(peer).id(),
        deposit: Amount(20_000_000),
        peer_deposit: Amount(20_000_000),
        tariff: Tariff::Flat(PricePerKwh(price)),
        challenge_window_blocks: 10,
        funding_window_blocks: 200,
        interval_seconds: INTERVAL,
        tolerance: MeterTolerance {
            absolute_wh: 0,
            permille: 0,
        },
        opened_at,
        nonce: [nonce; 32],
        evidence: Default::default(),
    })
    .await
    .unwrap()
}

/// Waits until both ends of `channel` settled `n` intervals from `first` (interval `first` is
/// row `row` of the data), then checks them against the data, the independent computation:
/// every trade is the smaller of the seller's (A's) export and the buyer's (B's) import, paid at
/// `price`, to the Wh and the micro-unit, and every interval with energy to trade settled.
#[allow(clippy::too_many_arguments)]
pub async fn settled_as_the_data_says(
    (ea, eb): (&EngineHandle, &EngineHandle),
    channel: ChannelId,
    first: gridchan_channel::IntervalIndex,
    n: usize,
    row: usize,
    price: u64,
    seller: &[(u64, u64)],
    buyer: &[(u64, u64)],
) {
    let last = first.0 + n as u64 - 1;
    until("the intervals settled", &[ea, eb], 90, || {
        let (ea, eb) = (ea.clone(), eb.clone());
        async move {
            let settled = |v: Option<ChannelView>| {
                v.and_then(|c| c.current)
                    .is_some_and(|s| s.state().last_interval.0 >= last)
            };
            settled(view(&ea, channel).await) && settled(view(&eb, channel).await)
        }
    })
    .await;
    let expected = |interval: u64| {
        let r = row + (interval - first.0) as usize;
        seller[r].1.min(buyer[r].0)
    };
    // The trade history is written a moment after the state: wait for the newest owed trade.
    let newest = (first.0..=last).rev().find(|i| expected(*i) > 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let trades = loop {
        let trades = ea.recent_trades(channel, 10_000).await.unwrap();
        if newest.is_none_or(|n| trades.iter().any(|t| t.interval == n))
            || tokio::time::Instant::now() > deadline
        {
            break trades;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut energy = 0;
    for t in trades.iter().filter(|t| t.interval <= last) {
        assert_eq!(t.energy_wh, expected(t.interval), "interval {}", t.interval);
        assert_eq!(
            t.amount,
            expected(t.interval) * price / 1000,
            "interval {}",
            t.interval
        );
        energy += t.energy_wh;
    }
    let total: u64 = (first.0..=last).map(expected).sum();
    assert!(total > 0, "the intervals have energy to trade");
    let traded: Vec<u64> = trades.iter().map(|t| t.interval).collect();
    let owed: Vec<u64> = (first.0..=last).filter(|i| expected(*i) > 0).collect();
    assert_eq!(
        energy, total,
        "every interval's trade, and only those: traded {traded:?}, owed {owed:?}"
    );
    let s = view(ea, channel).await.unwrap().current.unwrap();
    assert!(s.state().energy_a_to_b.0 >= energy);
    let at_b = view(eb, channel).await.unwrap().current.unwrap();
    assert_eq!(s.state().last_interval, at_b.state().last_interval);
}
