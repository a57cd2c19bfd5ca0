//! Nobody stalls anybody: a home (A) with two neighbours, one honest daemon (B) and one that
//! keeps its connection and its funded channel but never announces its meter (M, a bare
//! engine). A's metering rounds leave M out after a tenth of an interval, and A and B settle
//! interval after interval. (Before, A's rounds waited for M until they went stale, and B,
//! having given up on those intervals, refused every one of A's proposals.)

mod common;

use std::sync::Arc;

use gridchan_chain::{Ledger, RemoteClient};
use gridchan_channel::{
    Amount, IntervalIndex, MeterTolerance, OpenRequest, Phase, Policy, PricePerKwh, Tariff,
    WattHours,
};
use gridchan_gateway::daemon::{self, Daemon, DaemonParts};
use gridchan_gateway::engine::{self, EngineHandle};
use gridchan_gateway::meter::{MeterReading, MeterSource};
use gridchan_transport::PeerAddr;

use common::{key, ledger_node, until, view};

/// A meter that reads the same every interval.
struct Steady(MeterReading);

impl MeterSource for Steady {
    fn reading(&mut self, _: IntervalIndex) -> Option<MeterReading> {
        Some(self.0)
    }
}

fn client(ledger: &PeerAddr, k: u8) -> Arc<dyn Ledger> {
    Arc::new(RemoteClient::new(ledger.clone(), key(k), [k; 32]).unwrap())
}

/// Gateway `k`'s engine, and its file.
fn engine_of(dir: &std::path::Path, k: u8) -> (EngineHandle, std::path::PathBuf) {
    let path = dir.join(format!("gw-{k}.sqlite"));
    let listen = "127.0.0.1:0".parse().unwrap();
    let engine = engine::spawn_on_file(listen, key(k), &path, Policy::accepting_anyone());
    (engine.unwrap(), path)
}

/// A daemon metering every second with a steady meter.
fn home(
    (engine, store_path): (EngineHandle, std::path::PathBuf),
    ledger: Arc<dyn Ledger>,
    reading: MeterReading,
    peers: Vec<PeerAddr>,
) -> Daemon {
    daemon::start(DaemonParts {
        engine,
        store_path,
        ledger,
        meter: Some(Box::new(Steady(reading))),
        interval_seconds: 1,
        peers,
        clock: gridchan_gateway::clock::SimClock::real(),
        towers: vec![],
        tower_key: key(99),
        funds: None,
        history: None,
        min_acks: 0,
    })
    .unwrap()
}

fn request(peer: gridchan_channel::NodeId, nonce: u8) -> OpenRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    OpenRequest {
        peer,
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
        opened_at: IntervalIndex(now),
        nonce: [nonce; 32],
        evidence: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbour_that_never_announces_stalls_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let node = ledger_node(dir.path(), &[key(1).id(), key(2).id(), key(3).id()], 50);
    let ledger = node.addr.clone();
    // B imports 80 Wh an interval; M says nothing, ever; A exports 100.
    let b = home(
        engine_of(dir.path(), 2),
        client(&ledger, 2),
        MeterReading {
            import: WattHours(80),
            export: WattHours(0),
        },
        vec![],
    );
    let (m, _) = engine_of(dir.path(), 3);
    let a = home(
        engine_of(dir.path(), 1),
        client(&ledger, 1),
        MeterReading {
            import: WattHours(0),
            export: WattHours(100),
        },
        vec![b.engine.address.clone(), m.address.clone()],
    );
    let (ea, eb) = (a.engine.clone(), b.engine.clone());
    let with_b = ea.open(request(key(2).id(), 1)).await.unwrap();
    let with_m = ea.open(request(key(3).id(), 2)).await.unwrap();
    // M funds its side by hand (it has no daemon), so that A counts it as a trading neighbour.
    until("M holds the channel", &[&ea, &m], 30, || {
        let m = m.clone();
        async move { view(&m, with_m).await.is_some() }
    })
    .await;
    let params = view(&m, with_m).await.unwrap().params;
    client(&ledger, 3)
        .deposit(&params, params.deposit_b)
        .await
        .unwrap();
    until("both channels open at A", &[&ea, &eb], 60, || {
        let ea = ea.clone();
        async move {
            let open = |c: Option<gridchan_channel::ChannelView>| {
                c.is_some_and(|c| c.phase == Phase::Open)
            };
            open(view(&ea, with_b).await) && open(view(&ea, with_m).await)
        }
    })
    .await;
    // A and B settle interval after interval while M stays silent.
    let start = view(&ea, with_b)
        .await
        .and_then(|c| c.current)
        .map(|s| s.version().0)
        .unwrap_or(0);
    until("A and B settle five intervals", &[&ea, &eb], 30, || {
        let ea = ea.clone();
        async move {
            view(&ea, with_b)
                .await
                .and_then(|c| c.current)
                .is_some_and(|s| s.version().0 >= start + 5)
        }
    })
    .await;
    // Nothing was ever settled with M.
    let with_m_now = view(&ea, with_m).await.unwrap();
    assert_eq!(with_m_now.current.unwrap().version().0, 0);
}
