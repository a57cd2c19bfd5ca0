//! Two gateway daemons and a ledger node, all real: QUIC on 127.0.0.1, SQLite files, the ledger
//! producing blocks. A channel is funded on the ledger, trades every (1-second) interval from
//! the meters, closes cooperatively, and the ledger pays out the final state.

mod common;

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use gridchan_chain::{
    Account, BlockEvents, ChannelAccount, Height, Ledger, LedgerError, LocalLedger, Receipt,
    RemoteClient, TxHash, TxKind,
};
use gridchan_channel::{
    Amount, Command, IntervalIndex, MeterTolerance, OpenRequest, Phase, Policy, PricePerKwh,
    Tariff, WattHours,
};
use gridchan_gateway::daemon::{self, Daemon, DaemonParts};
use gridchan_gateway::engine::{self, EngineHandle, EngineParts};
use gridchan_gateway::ledger_queue::LedgerQueue;
use gridchan_gateway::meter::{MeterReading, MeterSource};
use gridchan_gateway::store::SqliteStore;
use gridchan_harness::{FaultSwitch, FaultyStore};
use gridchan_transport::PeerAddr;

use common::{key, ledger_node, until, view, LedgerNode};

/// A meter that reads the same every interval.
struct Steady(MeterReading);

impl MeterSource for Steady {
    fn reading(&mut self, _: IntervalIndex) -> Option<MeterReading> {
        Some(self.0)
    }
}

/// A ledger client that can be switched off (the ledger unreachable) and on again, and that
/// notes which channels it was asked about.
struct Switch {
    inner: Arc<dyn Ledger>,
    up: AtomicBool,
    asked: std::sync::Mutex<Vec<gridchan_channel::ChannelId>>,
}

impl Switch {
    fn check(&self) -> Result<(), LedgerError> {
        if self.up.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(LedgerError::Unavailable("switched off by the test".into()))
        }
    }
}

#[async_trait::async_trait]
impl Ledger for Switch {
    fn signer(&self) -> &gridchan_channel::Signer {
        self.inner.signer()
    }
    async fn chain_id(&self) -> Result<[u8; 32], LedgerError> {
        self.check()?;
        self.inner.chain_id().await
    }
    async fn height(&self) -> Result<Height, LedgerError> {
        self.check()?;
        self.inner.height().await
    }
    async fn account(&self, node: &gridchan_channel::NodeId) -> Result<Account, LedgerError> {
        self.check()?;
        self.inner.account(node).await
    }
    async fn channel(
        &self,
        id: &gridchan_channel::ChannelId,
    ) -> Result<Option<ChannelAccount>, LedgerError> {
        self.asked.lock().unwrap().push(*id);
        self.check()?;
        self.inner.channel(id).await
    }
    async fn submit(&self, kind: TxKind) -> Result<TxHash, LedgerError> {
        self.check()?;
        self.inner.submit(kind).await
    }
    async fn receipt(&self, hash: &TxHash) -> Result<Option<Receipt>, LedgerError> {
        self.check()?;
        self.inner.receipt(hash).await
    }
    async fn blocks(&self, from: Height, max: usize) -> Result<Vec<BlockEvents>, LedgerError> {
        self.check()?;
        self.inner.blocks(from, max).await
    }
    async fn wait_above(&self, height: Height, timeout: Duration) -> Result<Height, LedgerError> {
        self.check()?;
        self.inner.wait_above(height, timeout).await
    }
}

fn gateway(
    dir: &std::path::Path,
    k: u8,
    ledger: &PeerAddr,
    reading: MeterReading,
    peers: Vec<PeerAddr>,
) -> Daemon {
    let client: Arc<dyn Ledger> =
        Arc::new(RemoteClient::new(ledger.clone(), key(k), [k; 32]).unwrap());
    gateway_on(dir, k, client, reading, peers).0
}

fn gateway_on(
    dir: &std::path::Path,
    k: u8,
    client: Arc<dyn Ledger>,
    reading: MeterReading,
    peers: Vec<PeerAddr>,
) -> (Daemon, FaultSwitch) {
    let path = dir.join(format!("gw-{k}.sqlite"));
    // The engine's store fails while the test says so (the production trait, wrapped).
    let store = FaultyStore::new(SqliteStore::open(&path).unwrap());
    let faults = store.switch();
    let queue = Arc::new(LedgerQueue::open(&path).unwrap());
    let listen = "127.0.0.1:0".parse().unwrap();
    let parts = EngineParts::new(listen, key(k), store, queue, Policy::accepting_anyone());
    let engine = engine::spawn(parts).unwrap();
    let daemon = daemon::start(DaemonParts {
        engine,
        store_path: path,
        ledger: client,
        meter: Some(Box::new(Steady(reading))),
        interval_seconds: 1,
        peers,
        clock: gridchan_gateway::clock::SimClock::real(),
        towers: vec![],
        tower_key: key(k),
        funds: None,
        history: None,
        min_acks: 0,
    })
    .unwrap();
    (daemon, faults)
}

struct World {
    /// Makes A's store fail while on.
    a_faults: FaultSwitch,
    dir: tempfile::TempDir,
    /// A's connection to the ledger.
    switch: Arc<Switch>,
    ledger: Arc<LocalLedger>,
    ledger_addr: PeerAddr,
    a: Option<Daemon>,
    b: Daemon,
    ea: EngineHandle,
    eb: EngineHandle,
    channel: gridchan_channel::ChannelId,
    _node: LedgerNode,
}

/// A ledger node, two daemons (A exports 100 Wh an interval, B imports 80), and an open,
/// funded channel from A to B.
async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let (ka, kb) = (key(1), key(2));
    let node = ledger_node(dir.path(), &[ka.id(), kb.id()], 50);
    let (ledger, ledger_addr) = (node.ledger.clone(), node.addr.clone());
    // B imports 80 Wh every interval; A exports 100.
    let b = gateway(
        dir.path(),
        2,
        &ledger_addr,
        MeterReading {
            import: WattHours(80),
            export: WattHours(0),
        },
        vec![],
    );
    let switch = Arc::new(Switch {
        inner: Arc::new(RemoteClient::new(ledger_addr.clone(), key(1), [1; 32]).unwrap()),
        up: AtomicBool::new(true),
        asked: std::sync::Mutex::default(),
    });
    let (a, a_faults) = gateway_on(
        dir.path(),
        1,
        switch.clone(),
        MeterReading {
            import: WattHours(0),
            export: WattHours(100),
        },
        vec![b.engine.address.clone()],
    );
    let (ea, eb) = (a.engine.clone(), b.engine.clone());
    let now_interval = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // The core sends the open once A is connected to B (A dials B on start).
    let channel = ea
        .open(OpenRequest {
            peer: kb.id(),
            deposit: Amount(10_000_000),
            peer_deposit: Amount(10_000_000),
            tariff: Tariff::Flat(PricePerKwh(200_000)),
            challenge_window_blocks: 10,
            funding_window_blocks: 100,
            interval_seconds: 1,
            tolerance: MeterTolerance {
                absolute_wh: 2,
                permille: 10,
            },
            opened_at: IntervalIndex(now_interval),
            nonce: [4; 32],
            evidence: Default::default(),
        })
        .await
        .unwrap();
    until(
        "the channel funded on the ledger and open on both sides",
        &[&ea, &eb],
        60,
        || {
            let (ea, eb) = (ea.clone(), eb.clone());
            async move {
                view(&ea, channel)
                    .await
                    .is_some_and(|c| c.phase == Phase::Open)
                    && view(&eb, channel)
                        .await
                        .is_some_and(|c| c.phase == Phase::Open)
            }
        },
    )
    .await;
    World {
        a_faults,
        dir,
        switch,
        ledger,
        ledger_addr,
        a: Some(a),
        b,
        ea,
        eb,
        channel,
        _node: node,
    }
}

async fn traded(w: &World, wh: u64) {
    let (ea, channel) = (w.ea.clone(), w.channel);
    until("intervals traded", &[&w.ea, &w.eb], 60, || {
        let ea = ea.clone();
        async move {
            view(&ea, channel)
                .await
                .and_then(|c| c.current)
                .is_some_and(|s| s.state().energy_a_to_b.0 >= wh)
        }
    })
    .await;
}

async fn concluded(w: &World) {
    let (ea, eb, channel) = (w.ea.clone(), w.eb.clone(), w.channel);
    until("the ledger paid out", &[&w.ea, &w.eb], 60, || {
        let (ea, eb) = (ea.clone(), eb.clone());
        async move {
            view(&ea, channel)
                .await
                .is_some_and(|c| c.phase == Phase::Concluded)
                && view(&eb, channel)
                    .await
                    .is_some_and(|c| c.phase == Phase::Concluded)
        }
    })
    .await;
}

/// Waits until both accounts hold their start minus deposit plus `state`'s balances.
async fn paid(w: &World, balances: (u64, u64)) {
    let client = RemoteClient::new(w.ledger_addr.clone(), key(3), [3; 32]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let a_bal = client.account(&key(1).id()).await.unwrap().balance.0;
        let b_bal = client.account(&key(2).id()).await.unwrap().balance.0;
        if a_bal == 90_000_000 + balances.0 && b_bal == 90_000_000 + balances.1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "payouts withdrawn: {a_bal} {b_bal}"
        );
        client
            .wait_above(client.height().await.unwrap(), Duration::from_secs(5))
            .await
            .unwrap();
    }
    assert_eq!(w.ledger.total_supply(), 200_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_fund_trade_close_and_get_paid_on_the_ledger() {
    let w = world().await;
    traded(&w, 240).await;
    // Each interval A delivers min(100, 80) = 80 Wh at 0.2/kWh = 0.016.
    let s = view(&w.ea, w.channel).await.unwrap().current.unwrap();
    assert_eq!(s.state().energy_a_to_b.0 % 80, 0);
    assert_eq!(
        s.state().balance_a.0 - 10_000_000,
        s.state().energy_a_to_b.0 * 200
    );
    w.ea.command(Command::Close(w.channel)).await.unwrap();
    concluded(&w).await;
    let f = view(&w.ea, w.channel).await.unwrap().current.unwrap();
    assert!(f.state().is_final);
    paid(&w, (f.state().balance_a.0, f.state().balance_b.0)).await;
    let _ = (&w.a, &w.b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_close_waits_out_the_window_and_pays_the_newest_state() {
    let w = world().await;
    traded(&w, 160).await;
    w.ea.command(Command::ForceClose(w.channel)).await.unwrap();
    concluded(&w).await;
    let a = view(&w.ea, w.channel).await.unwrap().current.unwrap();
    let b = view(&w.eb, w.channel).await.unwrap().current.unwrap();
    assert_eq!(a, b, "no trade after the registration");
    paid(&w, (a.state().balance_a.0, a.state().balance_b.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_state_registered_by_the_buyer_is_refuted() {
    let w = world().await;
    let mut tower = w.ea.reports();
    traded(&w, 80).await;
    // Keep the first traded state: it pays A less than what follows.
    let old = loop {
        if let Ok(gridchan_gateway::engine::Report::Watchtower(s)) = tower.recv().await {
            if s.state().energy_a_to_b.0 > 0 {
                break s;
            }
        }
    };
    traded(&w, old.state().energy_a_to_b.0 + 160).await;
    // B cheats: registers the old state itself, on the ledger.
    let cheat = RemoteClient::new(w.ledger_addr.clone(), key(2), [2; 32]).unwrap();
    cheat.register(&old).await.unwrap();
    concluded(&w).await;
    let newest = view(&w.ea, w.channel).await.unwrap().current.unwrap();
    assert!(newest.version() > old.version());
    let acc = w.ledger.channel(&w.channel).unwrap();
    assert_eq!(
        acc.status,
        gridchan_chain::ChannelStatus::Concluded {
            version: newest.version()
        },
        "the ledger paid the newest state, not the registered one"
    );
    paid(&w, (newest.state().balance_a.0, newest.state().balance_b.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_close_made_while_the_ledger_is_away_waits_in_the_queue_across_a_restart() {
    let mut w = world().await;
    traded(&w, 160).await;
    // The ledger goes away for A (island mode): the registration cannot be submitted.
    w.switch.up.store(false, Ordering::SeqCst);
    w.ea.command(Command::ForceClose(w.channel)).await.unwrap();
    let store = w.dir.path().join("gw-1.sqlite");
    let queue = gridchan_gateway::ledger_queue::LedgerQueue::open(&store).unwrap();
    until("the registration waits in the queue", &[&w.ea], 30, || {
        let pending = queue.pending().unwrap();
        async move {
            pending
                .iter()
                .any(|p| p.tx.name() == "register" && p.attempts > 0)
        }
    })
    .await;
    // A restarts while the ledger is still away; nothing on the ledger has moved.
    let newest = view(&w.ea, w.channel).await.unwrap().current.unwrap();
    drop(w.a.take());
    w.ea = w.eb.clone();
    assert_eq!(
        w.ledger.channel(&w.channel).unwrap().status,
        gridchan_chain::ChannelStatus::Open
    );
    let (a, _) = gateway_on(
        w.dir.path(),
        1,
        w.switch.clone(),
        MeterReading {
            import: WattHours(0),
            export: WattHours(100),
        },
        vec![w.b.engine.address.clone()],
    );
    assert_eq!(
        view(&a.engine, w.channel).await.unwrap().phase,
        Phase::Disputed
    );
    // The ledger returns: the queued registration goes in, the window passes, both are paid
    // the newest state.
    w.switch.up.store(true, Ordering::SeqCst);
    w.ea = a.engine.clone();
    w.a = Some(a);
    concluded(&w).await;
    let done = queue.finished(10).unwrap();
    assert!(
        done.iter()
            .any(|f| f.what == "register" && f.outcome.starts_with("included")),
        "{done:?}"
    );
    paid(&w, (newest.state().balance_a.0, newest.state().balance_b.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_of_others_on_the_same_ledger_costs_the_gateway_nothing() {
    let w = world().await;
    // B and a third party open, dispute and close a channel of their own, straight on the
    // ledger: A's daemon follows every block of it.
    let (kb, kc) = (key(2), key(3));
    let b = RemoteClient::new(w.ledger_addr.clone(), key(2), [12; 32]).unwrap();
    let c = RemoteClient::new(w.ledger_addr.clone(), key(3), [13; 32]).unwrap();
    let wait = Duration::from_secs(30);
    let included = |r: gridchan_chain::Receipt| r.outcome.result.expect("included");
    included(
        b.submit_and_wait(
            gridchan_chain::TxKind::Transfer {
                to: kc.id(),
                amount: Amount(5_000_000),
            },
            wait,
        )
        .await
        .unwrap(),
    );
    let params = OpenRequest {
        challenge_window_blocks: 2,
        funding_window_blocks: 50,
        interval_seconds: 1,
        ..gridchan_fixtures::flat_channel(kc.id(), 1_000_000, 200_000, IntervalIndex(1), [9; 32])
    }
    .params(kb.id());
    let foreign = params.channel_id();
    for (who, amount) in [(&b, params.deposit_a), (&c, params.deposit_b)] {
        let hash = who.deposit(&params, amount).await.unwrap();
        included(who.wait_for(&hash, wait).await.unwrap());
    }
    let state = gridchan_channel::State {
        channel_id: foreign,
        version: gridchan_channel::Version(1),
        balance_a: Amount(900_000),
        balance_b: Amount(1_100_000),
        energy_a_to_b: WattHours(0),
        energy_b_to_a: WattHours(500),
        last_interval: IntervalIndex(2),
        is_final: false,
        book: gridchan_channel::NO_BOOK,
        funds: Default::default(),
    };
    let digest = state.digest();
    let signed = gridchan_channel::SignedStateParts {
        sig_a: kb.sign(&digest),
        sig_b: kc.sign(&digest),
        state,
    };
    let registered = b
        .submit_and_wait(
            gridchan_chain::TxKind::Register {
                state: Box::new(signed),
            },
            wait,
        )
        .await
        .unwrap();
    included(registered.clone());
    b.wait_above(registered.height + 2, wait).await.unwrap();
    included(
        c.submit_and_wait(gridchan_chain::TxKind::Conclude { channel: foreign }, wait)
            .await
            .unwrap(),
    );
    // A closes its own channel after all of that: once A's daemon has seen its close, it has
    // followed every block of the others' channel before it.
    traded(&w, 80).await;
    w.ea.command(Command::Close(w.channel)).await.unwrap();
    concluded(&w).await;
    // It never asked the ledger about the others' channel, and never took it for its own.
    assert!(
        !w.switch.asked.lock().unwrap().contains(&foreign),
        "A asked the ledger about a channel that is not its"
    );
    assert!(view(&w.ea, foreign).await.is_none());
    let queue =
        gridchan_gateway::ledger_queue::LedgerQueue::open(&w.dir.path().join("gw-1.sqlite"))
            .unwrap();
    let owed = queue.finished(100).unwrap();
    assert!(!owed.is_empty(), "A's own close went through its queue");
    assert!(
        owed.iter()
            .all(|f| f.channel == Some(w.channel.to_string())),
        "A sent transactions for a channel not its: {owed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tower_that_never_answers_can_be_removed_with_states_unacknowledged() {
    let w = world().await;
    traded(&w, 80).await;
    // A tower nobody runs: a valid address where nothing listens.
    let silent: PeerAddr = format!("{}@127.0.0.1:9", key(40).id()).parse().unwrap();
    let towers = w.a.as_ref().unwrap().towers.clone();
    towers.add(silent.clone()).unwrap();
    let list = towers.list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].address, silent.to_string());
    assert!(list[0].pending >= 1, "{list:?}");
    assert_eq!(list[0].acknowledged, 0);
    let (removed, unacknowledged) = towers.remove(&silent.node.to_string()[..10]).await.unwrap();
    assert_eq!(removed, silent);
    assert!(unacknowledged >= 1);
    assert!(towers.list().await.unwrap().is_empty());
    assert!(towers
        .remove("02ff")
        .await
        .unwrap_err()
        .to_string()
        .contains("no tower"));
    // Trading never depended on it.
    let before = view(&w.ea, w.channel)
        .await
        .unwrap()
        .current
        .unwrap()
        .version();
    traded(&w, 80 * (before.0 + 2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_disk_freezes_the_channel_until_it_recovers_and_nothing_is_signed_meanwhile() {
    let w = world().await;
    let mut reports = w.ea.reports();
    traded(&w, 160).await;
    // A's disk starts failing.
    w.a_faults.fail_now();
    let (ea, channel) = (w.ea.clone(), w.channel);
    until("A's channel frozen", &[&w.ea], 30, || {
        let ea = ea.clone();
        async move { view(&ea, channel).await.is_some_and(|c| c.frozen) }
    })
    .await;
    let frozen_at = view(&w.ea, w.channel).await.unwrap();
    let b_at = view(&w.eb, w.channel).await.unwrap().current.unwrap();
    // The engine retries (after 1 s, then 2 s): wait for two retries to fail too, while
    // intervals keep coming. A signs nothing meanwhile (no version above what it had signed),
    // and B holds no state above that.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut store_failures = 0;
    while store_failures < 3 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, reports.recv()).await {
            Ok(Ok(gridchan_gateway::engine::Report::StoreFailed(_))) => store_failures += 1,
            Ok(_) => {}
            Err(_) => panic!("only {store_failures} store failures reported in 30 s"),
        }
    }
    let still = view(&w.ea, w.channel).await.unwrap();
    assert!(still.frozen);
    // What A shows while frozen is what its disk holds, not a state signed in memory only
    // (issue 15, case 9).
    {
        use gridchan_channel::ChannelStore;
        let on_disk = SqliteStore::open(&w.dir.path().join("gw-1.sqlite"))
            .unwrap()
            .load()
            .unwrap()
            .into_iter()
            .find(|r| r.id == w.channel)
            .unwrap();
        assert_eq!(still.current, on_disk.current);
    }
    assert!(still.highest_signed <= frozen_at.highest_signed.max(b_at.version()));
    let b_now = view(&w.eb, w.channel).await.unwrap().current.unwrap();
    assert!(b_now.version() <= frozen_at.highest_signed.max(b_at.version()));
    // The disk comes back: the channel thaws and trades on.
    w.a_faults.heal();
    until("A thawed", &[&w.ea], 90, || {
        let ea = ea.clone();
        async move { view(&ea, channel).await.is_some_and(|c| !c.frozen) }
    })
    .await;
    traded(&w, b_now.state().energy_a_to_b.0 + 160).await;
    let a = view(&w.ea, w.channel).await.unwrap().current.unwrap();
    let b = view(&w.eb, w.channel).await.unwrap().current.unwrap();
    assert!(a.version() > b_now.version());
    assert!(a.version().0.abs_diff(b.version().0) <= 1);
}
