//! Two gateway daemons and a ledger node, all real: QUIC on 127.0.0.1, SQLite files, the ledger
//! producing blocks. A channel is funded on the ledger, trades every (1-second) interval from
//! the meters, closes cooperatively, and the ledger pays out the final state.

mod common;

use std::sync::Arc;
use std::time::Duration;

use gridchan_chain::{Ledger, LocalLedger, RemoteClient};
use gridchan_channel::{
    Amount, Command, IntervalIndex, MeterTolerance, OpenRequest, Phase, Policy, PricePerKwh,
    Tariff, WattHours,
};
use gridchan_gateway::daemon::{self, Daemon, DaemonParts};
use gridchan_gateway::engine::{self, EngineHandle};
use gridchan_gateway::meter::{MeterReading, MeterSource};
use gridchan_gateway::store::SqliteStore;
use gridchan_transport::{Endpoint, Limits, PeerAddr};

use common::{key, ledger_node, until, view, LedgerNode};

/// A meter that reads the same every interval.
struct Steady(MeterReading);

impl MeterSource for Steady {
    fn reading(&mut self, _: IntervalIndex) -> Option<MeterReading> {
        Some(self.0)
    }
}

fn gateway(
    dir: &std::path::Path,
    k: u8,
    ledger: &PeerAddr,
    reading: MeterReading,
    peers: Vec<PeerAddr>,
) -> Daemon {
    let endpoint = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        key(k).duplicate(&[1; 32]),
        Limits::default(),
    )
    .unwrap();
    let store = SqliteStore::open(&dir.join(format!("gw-{k}.sqlite"))).unwrap();
    let engine = engine::spawn(endpoint, key(k), store, Policy::default()).unwrap();
    let client: Arc<dyn Ledger> =
        Arc::new(RemoteClient::new(ledger.clone(), key(k), [k; 32]).unwrap());
    daemon::start(DaemonParts {
        engine,
        ledger: client,
        meter: Box::new(Steady(reading)),
        interval_seconds: 1,
        peers,
        clock: gridchan_gateway::clock::SimClock::real(),
    })
}

struct World {
    _dir: tempfile::TempDir,
    ledger: Arc<LocalLedger>,
    ledger_addr: PeerAddr,
    a: Daemon,
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
    let a = gateway(
        dir.path(),
        1,
        &ledger_addr,
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
        _dir: dir,
        ledger,
        ledger_addr,
        a,
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
