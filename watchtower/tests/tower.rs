//! The tower against a real ledger (in this process) over real QUIC: what it accepts, what it
//! refuses and why, and that it refutes stale registrations in time, across a restart, and
//! beside another tower.

use gridchan_harness::key;
use std::sync::Arc;
use std::time::Duration;

use gridchan_chain::{ChannelStatus, Genesis, Ledger, LocalClient, LocalLedger};
use gridchan_channel::{
    Amount, ChannelId, ChannelParams, IntervalIndex, MeterTolerance, PricePerKwh, SignedState,
    SignedStateParts, State, Tariff, Version, WattHours,
};
use gridchan_watchtower::rpc::{self, Request, Response};
use gridchan_watchtower::{Admission, Rejection, Tower, TowerClient, TowerError, TowerLimits};

const A: u8 = 1;
const B: u8 = 2;
const C: u8 = 3;
const T1: u8 = 7;
const T2: u8 = 8;

struct World {
    dir: tempfile::TempDir,
    ledger: Arc<LocalLedger>,
    params: ChannelParams,
    _producer: tokio::task::JoinHandle<()>,
}

fn params(nonce: u8, window: u64) -> ChannelParams {
    ChannelParams {
        party_a: key(A).id(),
        party_b: key(B).id(),
        nonce: [nonce; 32],
        deposit_a: Amount(1_000_000),
        deposit_b: Amount(1_000_000),
        challenge_window_blocks: window,
        funding_window_blocks: 50,
        interval_seconds: 900,
        tolerance: MeterTolerance {
            absolute_wh: 5,
            permille: 10,
        },
        opened_at: IntervalIndex(100),
        tariff: Tariff::Flat(PricePerKwh(200_000)),
        evidence: Default::default(),
    }
}

fn client_of(ledger: &Arc<LocalLedger>, k: u8) -> Arc<dyn Ledger> {
    Arc::new(LocalClient::new(ledger.clone(), key(k)))
}

/// A ledger making a block every 50 ms, with a funded channel A-B.
async fn world(window: u64) -> World {
    let dir = tempfile::tempdir().unwrap();
    let genesis = Genesis {
        chain_id: [3; 32],
        min_challenge_window: 2,
        balances: [A, B, C]
            .iter()
            .map(|k| (key(*k).id(), Amount(100_000_000)))
            .collect(),
    };
    let ledger = LocalLedger::open(&dir.path().join("ledger"), genesis).unwrap();
    let producer = ledger.spawn_producer(Duration::from_millis(50));
    let params = params(1, window);
    fund(&ledger, &params).await;
    World {
        dir,
        ledger,
        params,
        _producer: producer,
    }
}

async fn fund(ledger: &Arc<LocalLedger>, params: &ChannelParams) {
    for k in [A, B] {
        client_of(ledger, k)
            .submit_and_wait(
                gridchan_chain::TxKind::Deposit {
                    params: Box::new(params.clone()),
                    amount: Amount(1_000_000),
                },
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

/// Version `v` of the channel, A paid `v` thousand micro-units by B, signed by `sa` and `sb`.
fn state_by(params: &ChannelParams, v: u64, sa: u8, sb: u8) -> SignedStateParts {
    let mut s = State::initial(params);
    s.version = Version(v);
    s.balance_a = Amount(1_000_000 + v * 1_000);
    s.balance_b = Amount(1_000_000 - v * 1_000);
    s.energy_a_to_b = WattHours(v * 5);
    s.last_interval = IntervalIndex(100 + v);
    let d = s.digest();
    SignedStateParts {
        sig_a: key(sa).sign(&d),
        sig_b: key(sb).sign(&d),
        state: s,
    }
}

fn state(params: &ChannelParams, v: u64) -> SignedState {
    state_by(params, v, A, B)
        .verify(params, &params.channel_id())
        .unwrap()
}

fn start_tower(
    w: &World,
    k: u8,
    file: &str,
    limits: TowerLimits,
) -> (Arc<Tower>, gridchan_transport::PeerAddr) {
    let tower = Tower::start(
        key(k),
        client_of(&w.ledger, k),
        w.dir.path().join(file),
        limits,
    )
    .unwrap();
    let endpoint = rpc::bind(
        "127.0.0.1:0".parse().unwrap(),
        key(k).duplicate(&[k ^ 1; 32]),
    )
    .unwrap();
    let addr = endpoint.peer_addr();
    tower.listen(endpoint);
    (tower, addr)
}

fn client(addr: &gridchan_transport::PeerAddr, k: u8) -> TowerClient {
    TowerClient::new(addr.clone(), key(k).duplicate(&[k ^ 0x40; 32])).unwrap()
}

fn rejected(r: Result<impl std::fmt::Debug, TowerError>) -> Rejection {
    match r {
        Err(TowerError::Rejected(r)) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Waits (bounded) until the ledger holds `f`.
async fn until_ledger(ledger: &Arc<LocalLedger>, what: &str, f: impl Fn(&LocalLedger) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f(ledger) {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        ledger
            .wait_above(ledger.height(), Duration::from_secs(1))
            .await;
    }
}

/// The tower's actions once every one has an outcome (bounded wait, block by block).
async fn settled_actions(
    ledger: &Arc<LocalLedger>,
    tower: &Tower,
) -> Vec<gridchan_watchtower::store::Action> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let store =
            gridchan_watchtower::store::TowerStore::open_read_only(&tower.store_path).unwrap();
        let actions = store.actions().unwrap();
        if !actions.is_empty() && actions.iter().all(|a| a.outcome.is_some()) {
            return actions;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tower never finished: {actions:?}"
        );
        ledger
            .wait_above(ledger.height(), Duration::from_secs(1))
            .await;
    }
}

fn status(ledger: &LocalLedger, id: &ChannelId) -> ChannelStatus {
    ledger.channel(id).unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_is_refused_with_its_reason() {
    let w = world(20).await;
    let limits = TowerLimits {
        channels_per_client: 1,
        burst: 7.0,
        states_per_second: 0.001,
        ..TowerLimits::default()
    };
    let (tower, addr) = start_tower(&w, T1, "t1.sqlite", limits);
    let a = client(&addr, A);
    let id = w.params.channel_id();
    // Not registered yet.
    assert_eq!(
        rejected(a.guard(&state(&w.params, 3)).await),
        Rejection::NotRegistered
    );
    a.register().await.unwrap();
    // Accepted, with a receipt the client checked.
    let r = a.guard(&state(&w.params, 3)).await.unwrap();
    assert_eq!(r.version, Version(3));
    assert_eq!(a.held(id).await.unwrap(), Some(Version(3)));
    // The same state again: the same receipt (retries are safe).
    assert_eq!(a.guard(&state(&w.params, 3)).await.unwrap(), r);
    // Another state at the version it holds (both parties signed twice: the tower keeps the
    // first and says so).
    let mut other = state_by(&w.params, 3, A, B);
    other.state.balance_a = Amount(other.state.balance_a.0 + 1);
    other.state.balance_b = Amount(other.state.balance_b.0 - 1);
    let d = other.state.digest();
    other.sig_a = key(A).sign(&d);
    other.sig_b = key(B).sign(&d);
    let twin = other.verify(&w.params, &id).unwrap();
    assert_eq!(rejected(a.guard(&twin).await), Rejection::Conflict(3));
    // Older than what the tower holds.
    assert_eq!(
        rejected(a.guard(&state(&w.params, 2)).await),
        Rejection::OlderVersion {
            held: 3,
            offered: 2
        }
    );
    // A signature by someone who is not party B (bypassing the client's own checks).
    let forged = Request::Guard(Box::new(state_by(&w.params, 4, A, C)));
    let answer: Response = rpc::decode(&a.call_raw(&rpc::encode(&forged)).await.unwrap()).unwrap();
    assert_eq!(answer, Response::Rejected(Rejection::BadSignature));
    // A channel the ledger has never seen.
    let unknown = params(9, 20);
    assert_eq!(
        rejected(a.guard(&state(&unknown, 1)).await),
        Rejection::UnknownChannel
    );
    // A client that is not a party of the channel.
    let c = client(&addr, C);
    c.register().await.unwrap();
    assert_eq!(
        rejected(c.guard(&state(&w.params, 5)).await),
        Rejection::NotAParty
    );
    // Over quota: a second channel for A.
    let second = params(2, 20);
    fund(&w.ledger, &second).await;
    assert!(matches!(
        rejected(a.guard(&state(&second, 1)).await),
        Rejection::OverQuota(q) if q.contains("channels")
    ));
    // Over quota: the rate (a burst of 7 states, almost no refill).
    assert!(matches!(
        rejected(a.guard(&state(&w.params, 9)).await),
        Rejection::OverQuota(q) if q.contains("per second")
    ));
    // None of it changed what the tower holds.
    assert_eq!(a.held(id).await.unwrap(), Some(Version(3)));
    assert_eq!(tower.guarded(), 1);
    // Garbage costs the sender its connection.
    assert!(a.call_raw(b"\x01garbage").await.is_err());
    tower.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tower_that_only_admits_listed_keys_refuses_others() {
    let w = world(20).await;
    let limits = TowerLimits {
        admission: Admission::Only([key(A).id()].into_iter().collect()),
        ..TowerLimits::default()
    };
    let (tower, addr) = start_tower(&w, T1, "t1.sqlite", limits);
    client(&addr, A).register().await.unwrap();
    assert_eq!(
        rejected(client(&addr, B).register().await),
        Rejection::NotAllowed
    );
    tower.stop();
}

/// Registers `old` from B (the cheater) and waits until the ledger records it.
async fn cheat(w: &World, old: u64) -> u64 {
    let id = w.params.channel_id();
    client_of(&w.ledger, B)
        .register(&state(&w.params, old))
        .await
        .unwrap();
    until_ledger(&w.ledger, "the old state registered", |l| {
        !matches!(status(l, &id), ChannelStatus::Open)
    })
    .await;
    w.ledger.height()
}

async fn concluded_at(w: &World, version: u64) {
    let id = w.params.channel_id();
    until_ledger(&w.ledger, "the window over", |l| match status(l, &id) {
        ChannelStatus::Registered { deadline, .. } => l.height() > deadline,
        _ => true,
    })
    .await;
    if matches!(status(&w.ledger, &id), ChannelStatus::Registered { .. }) {
        client_of(&w.ledger, A)
            .submit_and_wait(
                gridchan_chain::TxKind::Conclude { channel: id },
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        status(&w.ledger, &id),
        ChannelStatus::Concluded {
            version: Version(version)
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_registration_is_refuted_within_two_blocks() {
    let w = world(20).await;
    let (tower, addr) = start_tower(&w, T1, "t1.sqlite", TowerLimits::default());
    let a = client(&addr, A);
    a.register().await.unwrap();
    for v in 1..=8 {
        a.guard(&state(&w.params, v)).await.unwrap();
    }
    cheat(&w, 3).await;
    let id = w.params.channel_id();
    until_ledger(&w.ledger, "the tower's refute", |l| {
        matches!(status(l, &id), ChannelStatus::Registered { version, .. } if version == Version(8))
    })
    .await;
    let actions = settled_actions(&w.ledger, &tower).await;
    assert_eq!(actions.len(), 1, "{actions:?}");
    let blocks = actions[0].included_height.unwrap() - actions[0].seen_height;
    assert!(
        blocks <= 2,
        "refuted {blocks} blocks after the registration"
    );
    concluded_at(&w, 8).await;
    // Once the ledger has paid the channel out, there is nothing left to guard.
    until_ledger(&w.ledger, "the tower saw the conclusion", |_| {
        tower.guarded() == 0
    })
    .await;
    assert_eq!(
        rejected(a.guard(&state(&w.params, 9)).await),
        Rejection::Closed
    );
    tower.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tower_restarted_during_the_window_still_refutes_in_time() {
    let w = world(40).await;
    let (tower, addr) = start_tower(&w, T1, "t1.sqlite", TowerLimits::default());
    let a = client(&addr, A);
    a.register().await.unwrap();
    a.guard(&state(&w.params, 6)).await.unwrap();
    // The tower goes down; B registers an old state meanwhile; blocks pass.
    tower.stop();
    drop(tower);
    let seen = cheat(&w, 2).await;
    w.ledger.wait_above(seen + 3, Duration::from_secs(5)).await;
    let (tower, _) = start_tower(&w, T1, "t1.sqlite", TowerLimits::default());
    let id = w.params.channel_id();
    until_ledger(&w.ledger, "the restarted tower's refute", |l| {
        matches!(status(l, &id), ChannelStatus::Registered { version, .. } if version == Version(6))
    })
    .await;
    concluded_at(&w, 6).await;
    tower.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_towers_guarding_one_channel_both_act_correctly() {
    let w = world(20).await;
    let (t1, addr1) = start_tower(&w, T1, "t1.sqlite", TowerLimits::default());
    let (t2, addr2) = start_tower(&w, T2, "t2.sqlite", TowerLimits::default());
    // A gave tower 1 version 7 and tower 2 version 5 (it was slower).
    let (c1, c2) = (client(&addr1, A), client(&addr2, A));
    c1.register().await.unwrap();
    c2.register().await.unwrap();
    c1.guard(&state(&w.params, 7)).await.unwrap();
    c2.guard(&state(&w.params, 5)).await.unwrap();
    cheat(&w, 1).await;
    concluded_at(&w, 7).await;
    for t in [&t1, &t2] {
        for a in settled_actions(&w.ledger, t).await {
            let outcome = a.outcome.unwrap_or_default();
            assert!(
                outcome.starts_with("included") || outcome.starts_with("not needed"),
                "{outcome}"
            );
        }
        t.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_holds_one_state_per_channel_whatever_the_updates() {
    let w = world(20).await;
    let path = w.dir.path().join("flat.sqlite");
    let mut store = gridchan_watchtower::store::TowerStore::open(&path).unwrap();
    let channels: Vec<ChannelParams> = (0..100u8).map(|n| params(n, 20)).collect();
    let mut sizes = Vec::new();
    let mut version = 0;
    for target in [10u64, 100] {
        while version < target {
            version += 1;
            let states: Vec<SignedState> = channels.iter().map(|p| state(p, version)).collect();
            let items: Vec<_> = channels
                .iter()
                .zip(&states)
                .map(|(p, s)| (key(A).id(), p, s))
                .collect();
            store.put_many(&items).unwrap();
        }
        sizes.push(store.bytes_on_disk(&path).unwrap());
    }
    println!(
        "tower storage for 100 channels: {} bytes after 10 updates each, {} after 100",
        sizes[0], sizes[1]
    );
    assert_eq!(sizes[0], sizes[1], "storage grew with updates");
    assert_eq!(store.channels().unwrap().len(), 100);
    assert!(store
        .channels()
        .unwrap()
        .iter()
        .all(|g| g.state.version() == Version(100)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_answered_state_by_state() {
    let w = world(20).await;
    let (tower, addr) = start_tower(&w, T1, "t1.sqlite", TowerLimits::default());
    let a = client(&addr, A);
    a.register().await.unwrap();
    let second = params(2, 20);
    fund(&w.ledger, &second).await;
    let (answers, receipt) = a
        .guard_many(&[state(&w.params, 5), state(&second, 2), state(&w.params, 4)])
        .await
        .unwrap();
    assert!(answers[0].is_ok() && answers[1].is_ok());
    let receipt = receipt.unwrap();
    assert_eq!(receipt.entries[0].1, Version(5));
    assert_eq!(
        receipt.entries[1],
        (second.channel_id(), Version(2), *state(&second, 2).digest())
    );
    assert!(
        matches!(
            &answers[2],
            Err(TowerError::Rejected(Rejection::OlderVersion {
                held: 5,
                offered: 4
            }))
        ) || answers[2].is_ok(),
        "within one batch, order of writing is not promised: {:?}",
        answers[2]
    );
    assert_eq!(
        a.held(w.params.channel_id()).await.unwrap(),
        Some(Version(5))
    );
    // A bad signature fails its own entry only (sent raw: the client would not build it).
    let mixed = Request::GuardMany(vec![
        state(&w.params, 6).to_parts(),
        state_by(&w.params, 7, A, C),
    ]);
    let answer: Response = rpc::decode(&a.call_raw(&rpc::encode(&mixed)).await.unwrap()).unwrap();
    let Response::AcceptedMany { answers, receipt } = answer else {
        panic!("{answer:?}")
    };
    assert!(answers[0].is_ok());
    assert_eq!(answers[1], Err(Rejection::BadSignature));
    // The receipt covers the accepted state only.
    let receipt = receipt.unwrap();
    assert_eq!(receipt.entries.len(), 1);
    assert!(receipt.verify());
    // Too many in one request.
    let many = Request::GuardMany(vec![
        state(&w.params, 8).to_parts();
        gridchan_watchtower::rpc::MAX_BATCH + 1
    ]);
    let answer: Response = rpc::decode(&a.call_raw(&rpc::encode(&many)).await.unwrap()).unwrap();
    assert!(
        matches!(answer, Response::Rejected(Rejection::OverQuota(_))),
        "{answer:?}"
    );
    tower.stop();
}

/// `Recover`: a party gets back every channel of its own the tower holds, newest state and
/// parameters, across pages; another key gets none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_recovers_its_channels_and_no_one_elses() {
    let w = world(20).await;
    let (_tower, addr) = start_tower(&w, T1, "recover.sqlite", TowerLimits::default());
    let a = client(&addr, A);
    a.register().await.unwrap();
    // More channels than one page holds.
    let n = rpc::MAX_RECOVERED + 6;
    let mut channels = vec![w.params.clone()];
    for nonce in 2..(n as u8 + 1) {
        let p = params(nonce, 20);
        fund(&w.ledger, &p).await;
        channels.push(p);
    }
    for p in &channels {
        a.guard(&state(p, 1)).await.unwrap();
        a.guard(&state(p, 3)).await.unwrap();
    }
    let got = a.recover().await.unwrap();
    assert_eq!(got.len(), n);
    assert!(got.iter().all(|(_, s)| s.version() == Version(3)));
    let mut ids: Vec<_> = got.iter().map(|(p, _)| p.channel_id()).collect();
    ids.dedup();
    assert_eq!(ids.len(), n);
    // B, the other party, may recover them too; C, a stranger, gets nothing.
    assert_eq!(client(&addr, B).recover().await.unwrap().len(), n);
    assert!(client(&addr, C).recover().await.unwrap().is_empty());
}
