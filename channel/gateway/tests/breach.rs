//! The breach test, end to end with real services: a ledger node, a watchtower and two gateway
//! daemons over QUIC with SQLite files. They settle 100+ intervals of recorded data; the
//! seller's gateway goes down; the buyer registers an old state that pays it more; the tower
//! refutes it inside the window; after the window the ledger pays the newest state; the seller
//! restarts and finds its channel closed with the right payout in its account. The same test
//! runs on a local ledger node and on the adjudicator contract on anvil (instant mining), where
//! the tower pays the refute's gas from its own account.

mod common;

use std::time::Duration;

use gridchan_chain::ChannelStatus;
use gridchan_channel::{Amount, MeterTolerance, OpenRequest, Phase, PricePerKwh, Tariff};
use gridchan_gateway::engine::Report;
use gridchan_watchtower::{Tower, TowerClient, TowerLimits};

use common::{key, until, view, Chain, Replay, FUNDS, INTERVAL};

const SPEEDUP: u32 = 18_000;
/// Readings stop after this many intervals, so trading comes to rest before the breach.
const INTERVALS: u64 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tower_refutes_a_stale_registration_while_the_victim_is_offline() {
    let _alone = common::one_replay_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::local(dir.path(), &[1, 2], 20);
    breach(dir.path(), &chain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tower_refutes_on_the_evm_adjudicator_paying_its_own_gas() {
    let _alone = common::one_replay_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::evm(&[1, 2], None).await;
    breach(dir.path(), &chain).await;
}

async fn breach(dir: &std::path::Path, chain: &Chain) {
    let (ka, kb) = (key(1), key(2));
    // The tower: its own key, store and ledger client.
    let tk = key(7);
    let tower = Tower::start(
        tk.duplicate(&[0; 32]),
        chain.client(7),
        dir.join("tower.sqlite"),
        TowerLimits {
            states_per_second: 1_000.0,
            ..TowerLimits::default()
        },
    )
    .unwrap();
    let endpoint =
        gridchan_watchtower::rpc::bind("127.0.0.1:0".parse().unwrap(), tk.duplicate(&[2; 32]))
            .unwrap();
    let tower_addr = endpoint.peer_addr();
    tower.listen(endpoint);

    let replay = Replay::summer(dir, chain, SPEEDUP, Some(INTERVALS));
    let anchor = replay.anchor;
    // B (home-02, no solar) buys from A (home-03, solar). A is guarded by the tower.
    let b = replay.home(2, "home-02", vec![], vec![]);
    let a = replay.home(
        1,
        "home-03",
        vec![b.engine.address.clone()],
        vec![tower_addr.clone()],
    );
    let (ea, eb) = (a.engine.clone(), b.engine.clone());
    let mut b_states = eb.reports();
    let channel = ea
        .open(OpenRequest {
            peer: kb.id(),
            deposit: Amount(20_000_000),
            peer_deposit: Amount(20_000_000),
            tariff: Tariff::Flat(PricePerKwh(150_000)),
            challenge_window_blocks: 50,
            funding_window_blocks: 200,
            interval_seconds: INTERVAL,
            tolerance: MeterTolerance {
                absolute_wh: 0,
                permille: 0,
            },
            opened_at: anchor,
            nonce: [6; 32],
            evidence: Default::default(),
        })
        .await
        .unwrap();
    // The cheater keeps an early state that pays A little.
    let old = loop {
        if let Ok(Report::Watchtower(s)) = b_states.recv().await {
            if s.state().energy_a_to_b.0 > 0 {
                break s;
            }
        }
    };
    // Trade until the meters stop, and the tower holds A's newest state.
    let watcher = TowerClient::new(tower_addr.clone(), ka.duplicate(&[9; 32])).unwrap();
    let end = anchor.0 + INTERVALS + 2;
    until(
        "trading done and the tower up to date",
        &[&ea, &eb],
        120,
        || {
            let (ea, watcher, clock) = (ea.clone(), &watcher, replay.clock.clone());
            async move {
                if clock.now_ms() / 1000 / u64::from(INTERVAL) < end {
                    return false;
                }
                let Some(cur) = view(&ea, channel).await.and_then(|c| c.current) else {
                    return false;
                };
                watcher.held(channel).await.ok().flatten() == Some(cur.version())
            }
        },
    )
    .await;
    let newest = view(&ea, channel).await.unwrap().current.unwrap();
    // A's evidence of what the tower holds: one receipt, for the newest state; the receipts
    // of the rounds before are gone.
    let evidence = rusqlite::Connection::open(dir.join("gw-1.sqlite")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // (receipts kept, acknowledgements of the newest state pointing to one)
        let counts: (i64, i64) = evidence
            .query_row(
                "SELECT (SELECT count(*) FROM tower_receipts),
                        (SELECT count(*) FROM tower_acks a
                         JOIN tower_receipts r ON r.id = a.receipt_id WHERE a.version = ?1)",
                [newest.version().0 as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        if counts.1 == 1 {
            assert_eq!(counts, (1, 1));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never recorded the tower's receipt: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(evidence);
    let settled = newest.state().last_interval.0 - anchor.0;
    assert!(settled >= 100, "only {settled} intervals settled");
    assert!(newest.state().balance_a > old.state().balance_a);

    // A goes offline (its daemon and engine stop). B runs cheating software from here on: it
    // stops its honest daemon and registers the old state itself.
    drop(a);
    drop(ea);
    drop(b);
    drop(eb);
    let cheater = chain.client(2);
    cheater.register(&old).await.unwrap();
    let watch = chain.client(5);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let window_end = loop {
        match watch.channel(&channel).await.unwrap().unwrap().status {
            ChannelStatus::Registered {
                version, deadline, ..
            } if version == newest.version() => break deadline,
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tower never refuted"
        );
        let now = watch.height().await.unwrap();
        watch.wait_above(now, Duration::from_secs(5)).await.unwrap();
    };
    assert!(
        chain.gas_spent(7).await > 0 || matches!(chain, Chain::Local(_)),
        "the tower pays for its refute"
    );
    // After the window anyone may conclude: the cheater tries its luck.
    chain.wait_above(&*watch, window_end, 30).await;
    cheater
        .submit_and_wait(
            gridchan_chain::TxKind::Conclude { channel },
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let acc = watch.channel(&channel).await.unwrap().unwrap();
    assert_eq!(
        acc.status,
        ChannelStatus::Concluded {
            version: newest.version()
        },
        "the ledger paid the newest state"
    );
    let actions = gridchan_watchtower::store::TowerStore::open_read_only(&tower.store_path)
        .unwrap()
        .actions()
        .unwrap();
    assert!(
        actions.iter().any(|a| a.our_version == newest.version().0
            && a.included_height.is_some_and(|h| h <= a.deadline)),
        "{actions:?}"
    );

    // A comes back: it finds the channel closed and withdraws its payout.
    let a = replay.home(1, "home-03", vec![], vec![tower_addr.clone()]);
    let ea = a.engine.clone();
    let expected = FUNDS - 20_000_000 + newest.state().balance_a.0;
    let a_id = ka.id();
    until("A sees the close and holds its payout", &[&ea], 60, || {
        let (ea, watch) = (ea.clone(), &watch);
        async move {
            view(&ea, channel)
                .await
                .is_some_and(|c| c.phase == Phase::Concluded)
                && watch.account(&a_id).await.unwrap().balance.0 == expected
        }
    })
    .await;
    assert_eq!(chain.supply().await, 2 * u128::from(FUNDS));
    tower.stop();
}
