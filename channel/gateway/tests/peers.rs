//! Neighbours are kept connected: a configured one that is down when the gateway starts, or
//! that stays down past the first redial, is dialled until it is back; one a channel was opened
//! to by address is remembered in the store and dialled again after a restart.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use gridchan_chain::{Ledger, RemoteClient};
use gridchan_channel::{IntervalIndex, NodeId, OpenRequest, Phase, Policy, WattHours};
use gridchan_fixtures::flat_channel;
use gridchan_gateway::daemon::{self, Daemon, DaemonParts};
use gridchan_gateway::engine;
use gridchan_gateway::meter::{MeterReading, MeterSource};
use gridchan_gateway::peers::PeerStatus;
use gridchan_transport::PeerAddr;

use common::{key, ledger_node, until, view};

struct Steady(MeterReading);

impl MeterSource for Steady {
    fn reading(&mut self, _: IntervalIndex) -> Option<MeterReading> {
        Some(self.0)
    }
}

/// A port on 127.0.0.1 that was free a moment ago (a gateway must come back on it).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Gateway `k` on `listen`, with `peers` configured.
fn gateway(
    dir: &std::path::Path,
    k: u8,
    listen: SocketAddr,
    ledger: &PeerAddr,
    peers: Vec<PeerAddr>,
) -> Daemon {
    let path = dir.join(format!("gw-{k}.sqlite"));
    let engine = engine::spawn_on_file(listen, key(k), &path, Policy::accepting_anyone()).unwrap();
    let client: Arc<dyn Ledger> =
        Arc::new(RemoteClient::new(ledger.clone(), key(k), [k; 32]).unwrap());
    daemon::start(DaemonParts {
        engine,
        store_path: path,
        ledger: client,
        meter: Some(Box::new(Steady(MeterReading {
            import: WattHours(u64::from(k == 2) * 80),
            export: WattHours(u64::from(k == 1) * 100),
        }))),
        interval_seconds: 1,
        peers,
        clock: gridchan_gateway::clock::SimClock::real(),
        towers: vec![],
        tower_key: key(k),
        funds: None,
        history: None,
        min_acks: 0,
    })
    .unwrap()
}

/// Stops a daemon and its engine; its port is free once this returns.
async fn stop(d: Daemon) {
    let engine = d.engine.clone();
    drop(d);
    engine.stop().await.unwrap();
}

async fn status_of(d: &Daemon, node: NodeId) -> Option<PeerStatus> {
    let live: HashSet<NodeId> = [node].into();
    let connected = d.engine.connected_peers().await.unwrap();
    d.peers
        .status(&live, &connected)
        .into_iter()
        .find(|s| s.node == node.to_string())
}

/// Waits until `d` sees `node` connected (or, with `false`, a failed dial of it since it was
/// last connected).
async fn wait_for(d: &Daemon, node: NodeId, connected: bool, what: &str) {
    until(what, &[&d.engine], 60, || async move {
        status_of(d, node).await.is_some_and(|s| {
            if connected {
                s.connected
            } else {
                !s.connected && s.last_error.is_some()
            }
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_neighbour_that_is_down_is_dialled_until_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = ledger_node(dir.path(), &[key(1).id(), key(2).id()], 50);
    let b_listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let b_addr: PeerAddr = format!("{}@{b_listen}", key(2).id()).parse().unwrap();
    let b_id = key(2).id();

    // B is not there yet: A's first dial fails, and A keeps dialling.
    let a = gateway(
        dir.path(),
        1,
        "127.0.0.1:0".parse().unwrap(),
        &node.addr,
        vec![b_addr.clone()],
    );
    wait_for(&a, b_id, false, "A's dial of B failing").await;
    let b = gateway(dir.path(), 2, b_listen, &node.addr, vec![]);
    wait_for(&a, b_id, true, "A connected to B once B is up").await;
    let s = status_of(&a, b_id).await.unwrap();
    assert!(s.configured);
    assert_eq!(s.address.as_deref(), Some(b_addr.to_string().as_str()));

    // B goes away for longer than the first redial: A still brings the link back.
    stop(b).await;
    wait_for(&a, b_id, false, "A's redial of B failing").await;
    let _b = gateway(dir.path(), 2, b_listen, &node.addr, vec![]);
    wait_for(&a, b_id, true, "A connected to B again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbour_opened_to_by_address_is_remembered_and_redialled_after_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let node = ledger_node(dir.path(), &[key(1).id(), key(2).id()], 50);
    let (a_listen, b_listen): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    );
    let b_addr: PeerAddr = format!("{}@{b_listen}", key(2).id()).parse().unwrap();
    let b_id = key(2).id();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Nobody lists anybody: A opens a channel to B's address, as `gridchan channel open` does.
    let b = gateway(dir.path(), 2, b_listen, &node.addr, vec![]);
    let a = gateway(dir.path(), 1, a_listen, &node.addr, vec![]);
    a.peers.remember(&b_addr).unwrap();
    a.engine.connect(b_addr.clone()).await.unwrap();
    let channel = a
        .engine
        .open(OpenRequest {
            funding_window_blocks: 100,
            interval_seconds: 1,
            ..flat_channel(b_id, 10_000_000, 200_000, IntervalIndex(now), [5; 32])
        })
        .await
        .unwrap();
    let ea = a.engine.clone();
    until("the channel open", &[&a.engine, &b.engine], 60, || {
        let ea = ea.clone();
        async move {
            view(&ea, channel)
                .await
                .is_some_and(|c| c.phase == Phase::Open)
        }
    })
    .await;

    // B restarts and stays away past A's first redial: A dials it back.
    stop(b).await;
    wait_for(&a, b_id, false, "A's redial of B failing").await;
    let b = gateway(dir.path(), 2, b_listen, &node.addr, vec![]);
    wait_for(&a, b_id, true, "A connected to B again").await;

    // A restarts with nothing in its config: the store says where B is.
    stop(a).await;
    let a = gateway(dir.path(), 1, a_listen, &node.addr, vec![]);
    wait_for(&a, b_id, true, "A, restarted, connected to B").await;
    let s = status_of(&a, b_id).await.unwrap();
    assert!(!s.configured);
    assert_eq!(s.address.as_deref(), Some(b_addr.to_string().as_str()));

    // And they trade on.
    let version = view(&a.engine, channel).await.unwrap().highest_signed;
    let ea = a.engine.clone();
    until(
        "a new state after the restarts",
        &[&a.engine, &b.engine],
        60,
        || {
            let ea = ea.clone();
            async move {
                view(&ea, channel)
                    .await
                    .and_then(|c| c.current)
                    .is_some_and(|s| s.version() > version)
            }
        },
    )
    .await;
}
