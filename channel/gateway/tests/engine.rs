//! Two gateway engines over real QUIC on 127.0.0.1 with real SQLite stores.

mod common;

use std::sync::Arc;
use std::time::Duration;

use gridchan_channel::{
    ChannelStore, Command, IntervalIndex, IntervalReading, LedgerEvent, Phase, Version, WattHours,
};
use gridchan_gateway::engine::{EngineHandle, EngineParts};
use gridchan_gateway::ledger_queue::LedgerQueue;
use gridchan_gateway::store::SqliteStore;
use gridchan_harness::FaultyStore;

use common::until;
use gridchan_fixtures::{engine_at, flat_channel, store_path};

/// A connects to B and opens a flat channel with it; once A holds B's signature on version 0
/// (B's version 0 is durable by then), both hear it is funded.
async fn funded_channel(
    a: &EngineHandle,
    b: &EngineHandle,
    opened_at: IntervalIndex,
    nonce: [u8; 32],
) -> gridchan_channel::ChannelId {
    a.connect(b.address.clone()).await.unwrap();
    let channel = a
        .open(flat_channel(b.node, 10_000_000, 200_000, opened_at, nonce))
        .await
        .unwrap();
    until("A holds version 0", &[a, b], 30, || {
        let a = a.clone();
        async move {
            a.channel(channel)
                .await
                .unwrap()
                .is_some_and(|c| c.phase == Phase::Funding)
        }
    })
    .await;
    for h in [a, b] {
        h.ledger_event(channel, LedgerEvent::Funded).await.unwrap();
    }
    channel
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_settle_over_quic_with_durable_states() {
    let dir = tempfile::tempdir().unwrap();
    let a = engine_at(dir.path(), 1);
    let b = engine_at(dir.path(), 2);
    a.connect(b.address.clone()).await.unwrap();
    let opened_at = IntervalIndex(1_930_000);
    let channel = a
        .open(flat_channel(
            b.node, 10_000_000, 200_000, opened_at, [3; 32],
        ))
        .await
        .unwrap();
    let phase = |h: EngineHandle| async move {
        h.channel(channel)
            .await
            .unwrap()
            .map(|c| (c.phase, c.current.map(|s| s.version())))
    };
    until("both sides agree on version 0", &[&a, &b], 30, || {
        let (a, b) = (a.clone(), b.clone());
        async move {
            phase(a).await == Some((Phase::Funding, Some(Version(0))))
                && phase(b).await == Some((Phase::Funding, Some(Version(0))))
        }
    })
    .await;
    for h in [&a, &b] {
        h.ledger_event(channel, LedgerEvent::Funded).await.unwrap();
    }
    let (mut a_to_b, mut b_to_a) = (0, 0);
    for i in 1..=50u64 {
        let energy = 100 + i;
        let (seller, buyer) = if i % 3 == 0 { (&b, &a) } else { (&a, &b) };
        if i % 3 == 0 {
            b_to_a += energy;
        } else {
            a_to_b += energy;
        }
        let interval = IntervalIndex(opened_at.0 + i);
        seller
            .reading(
                channel,
                IntervalReading::selling(interval, WattHours(energy)),
            )
            .await
            .unwrap();
        buyer
            .reading(
                channel,
                IntervalReading::buying(interval, WattHours(energy)),
            )
            .await
            .unwrap();
    }
    let settled = |h: EngineHandle| async move {
        h.channels().await.unwrap()[0]
            .current
            .as_ref()
            .map(|s| (s.state().energy_a_to_b.0, s.state().energy_b_to_a.0))
    };
    until(
        "every interval settled on both sides",
        &[&a, &b],
        30,
        || {
            let (a, b) = (a.clone(), b.clone());
            async move {
                settled(a).await == Some((a_to_b, b_to_a))
                    && settled(b).await == Some((a_to_b, b_to_a))
            }
        },
    )
    .await;
    let a_state = a.channels().await.unwrap()[0].current.clone().unwrap();
    assert_eq!(
        Some(a_state.clone()),
        b.channels().await.unwrap()[0].current.clone()
    );
    // What A holds is in its SQLite file (a write handed to the writer thread may still be on
    // its way when the view already shows the state: nothing was sent before it was durable).
    let a_file = || SqliteStore::open(&store_path(dir.path(), 1)).unwrap();
    let stored = || a_file().load().unwrap()[0].current.clone();
    until("A's newest state in its file", &[&a], 10, || {
        let on_disk = stored();
        let a_state = a_state.clone();
        async move { on_disk.as_ref() == Some(&a_state) }
    })
    .await;
    // The interval history follows by the engine's tick (once a second), with nobody asking
    // for it: all 50 intervals, in A's file.
    let history = || a_file().recent_settled(&channel, 1_000).unwrap().len();
    until("A's interval history in its file", &[&a], 10, || {
        let n = history();
        async move { n == 50 }
    })
    .await;
    // A cooperative close over QUIC.
    a.command(Command::Close(channel)).await.unwrap();
    until("the final state on both sides", &[&a, &b], 30, || {
        let (a, b) = (a.clone(), b.clone());
        async move {
            phase(a).await.map(|p| p.0) == Some(Phase::ClosedCooperatively)
                && phase(b).await.map(|p| p.0) == Some(Phase::ClosedCooperatively)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_reach_the_neighbours_engine() {
    let dir = tempfile::tempdir().unwrap();
    let a = engine_at(dir.path(), 1);
    let b = engine_at(dir.path(), 2);
    let mut reports = b.reports();
    a.connect(b.address.clone()).await.unwrap();
    let announce = gridchan_channel::wire::Announce {
        interval: IntervalIndex(5),
        import: WattHours(0),
        export: WattHours(9),
        shares: None,
        reading: None,
    };
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            // Resend until the connection is up and the announcement arrives.
            a.send_message(b.node, gridchan_channel::Message::Announce(announce))
                .await
                .unwrap();
            if let Ok(Ok(gridchan_gateway::engine::Report::Announce {
                peer,
                announce: got,
            })) = tokio::time::timeout(Duration::from_millis(200), reports.recv()).await
            {
                return (peer, got);
            }
        }
    })
    .await
    .expect("announcement arrives");
    assert_eq!(got, (a.node, announce));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intervals_readings_for_many_channels_go_in_one_message_and_all_settle() {
    // More channels than the engine handles in one piece: they go to the pool in pieces.
    const CHANNELS: u16 = 400;
    let dir = tempfile::tempdir().unwrap();
    let a = engine_at(dir.path(), 1);
    let b = engine_at(dir.path(), 2);
    a.connect(b.address.clone()).await.unwrap();
    let opened_at = IntervalIndex(1_930_000);
    let mut ids = Vec::new();
    for n in 0..CHANNELS {
        let mut nonce = [0; 32];
        nonce[..2].copy_from_slice(&n.to_be_bytes());
        let open = flat_channel(b.node, 10_000_000, 200_000, opened_at, nonce);
        ids.push(a.open(open).await.unwrap());
    }
    let funding = |h: EngineHandle| async move {
        let channels = h.channels().await.unwrap();
        channels
            .iter()
            .filter(|c| c.phase == Phase::Funding)
            .count()
    };
    until("every channel agreed", &[&a, &b], 30, || {
        let (a, b) = (a.clone(), b.clone());
        async move {
            funding(a).await == usize::from(CHANNELS) && funding(b).await == usize::from(CHANNELS)
        }
    })
    .await;
    for id in &ids {
        for h in [&a, &b] {
            h.ledger_event(*id, LedgerEvent::Funded).await.unwrap();
        }
    }
    for round in 1..=3u64 {
        let interval = IntervalIndex(opened_at.0 + round);
        // Each channel its own amount, so a mix-up between channels would show.
        let reading = |k: usize, sell: bool| {
            let energy = WattHours(round * 100 + k as u64);
            if sell {
                IntervalReading::selling(interval, energy)
            } else {
                IntervalReading::buying(interval, energy)
            }
        };
        let all = |sell: bool| -> Vec<_> {
            ids.iter()
                .enumerate()
                .map(|(k, id)| (*id, reading(k, sell)))
                .collect()
        };
        b.readings(all(false)).await.unwrap();
        a.readings(all(true)).await.unwrap();
        // A query after the readings is answered after every one of them was handled, though
        // they went to the pool in several pieces: the engine keeps arrival order.
        let after = a.channels().await.unwrap();
        let handled = after.iter().filter(|c| {
            let proposed = c.proposal.as_ref().map(|p| p.state().last_interval);
            let current = c.current.as_ref().map(|s| s.state().last_interval);
            proposed == Some(interval) || current == Some(interval)
        });
        assert_eq!(handled.count(), usize::from(CHANNELS), "round {round}");
        until("the interval settled on every channel", &[&a], 30, || {
            let a = a.clone();
            async move {
                let channels = a.channels().await.unwrap();
                channels.iter().all(|c| {
                    c.current
                        .as_ref()
                        .is_some_and(|s| s.state().last_interval == interval)
                })
            }
        })
        .await;
    }
    for (k, id) in ids.iter().enumerate() {
        let state = a.channel(*id).await.unwrap().unwrap().current.unwrap();
        let sold: u64 = (1..=3).map(|round| round * 100 + k as u64).sum();
        assert_eq!(state.state().energy_a_to_b, WattHours(sold), "channel {k}");
        assert_eq!(state.version(), Version(3));
    }
}

/// Issue 15, case 9: a buyer whose disk fails while it countersigns holds the countersigned
/// state in memory only; while frozen it shows what its disk holds (the version a restart
/// would find), not the state it could not write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_channel_shows_the_state_its_disk_holds() {
    let dir = tempfile::tempdir().unwrap();
    let a = engine_at(dir.path(), 1);
    // B runs on the fault-injecting store (the production trait, wrapped around its SQLite).
    let path = store_path(dir.path(), 2);
    let store = FaultyStore::new(SqliteStore::open(&path).unwrap());
    let faults = store.switch();
    let b = gridchan_gateway::engine::spawn(EngineParts::new(
        "127.0.0.1:0".parse().unwrap(),
        common::key(2),
        store,
        Arc::new(LedgerQueue::open(&path).unwrap()),
        gridchan_channel::Policy::accepting_anyone(),
    ))
    .unwrap();
    let opened_at = IntervalIndex(1_930_000);
    let channel = funded_channel(&a, &b, opened_at, [4; 32]).await;
    let on_disk = || {
        SqliteStore::open(&store_path(dir.path(), 2))
            .unwrap()
            .load()
            .unwrap()
            .into_iter()
            .find(|r| r.id == channel)
    };
    until("B's open channel on its disk", &[&a, &b], 30, || {
        let open = on_disk().is_some_and(|r| r.phase == Phase::Open);
        async move { open }
    })
    .await;
    // B's disk fails; A sells interval 1, and B countersigns in memory but cannot write it.
    faults.fail_now();
    let interval = IntervalIndex(opened_at.0 + 1);
    b.reading(channel, IntervalReading::buying(interval, WattHours(300)))
        .await
        .unwrap();
    a.reading(channel, IntervalReading::selling(interval, WattHours(300)))
        .await
        .unwrap();
    until("B frozen", &[&a, &b], 30, || {
        let b = b.clone();
        async move { b.channel(channel).await.unwrap().is_some_and(|c| c.frozen) }
    })
    .await;
    let shown = b.channel(channel).await.unwrap().unwrap();
    let stored = on_disk().unwrap();
    assert_eq!(shown.current, stored.current);
    assert_eq!(shown.current.unwrap().version(), Version(0));
    let listed = b.channels().await.unwrap();
    assert_eq!(listed[0].current.as_ref().unwrap().version(), Version(0));
}

/// Issue 16: a ledger transaction the queue cannot take (its table is gone, as on a broken
/// disk) freezes its channel like a failed persist, instead of being only logged; once the
/// queue takes writes again, the transaction is pushed before the channel is retried, and the
/// channel thaws with it queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_request_the_queue_cannot_take_freezes_its_channel_until_it_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let a = engine_at(dir.path(), 1);
    let b = engine_at(dir.path(), 2);
    let channel = funded_channel(&a, &b, IntervalIndex(1_930_000), [5; 32]).await;
    until("A's channel open", &[&a], 30, || {
        let a = a.clone();
        async move {
            a.channel(channel)
                .await
                .unwrap()
                .is_some_and(|c| c.phase == Phase::Open)
        }
    })
    .await;
    // A's queue loses its table; A closes the channel by force: the registration cannot be
    // queued.
    let path = store_path(dir.path(), 1);
    let registrations = || {
        LedgerQueue::open(&path)
            .unwrap()
            .pending()
            .unwrap()
            .iter()
            .filter(|q| q.tx.name() == "register")
            .count()
    };
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE ledger_queue")
        .unwrap();
    a.command(Command::ForceClose(channel)).await.unwrap();
    until("A's channel frozen", &[&a], 30, || {
        let a = a.clone();
        async move { a.channel(channel).await.unwrap().is_some_and(|c| c.frozen) }
    })
    .await;
    // The queue is back (opening it creates its table): the registration is pushed and the
    // channel thaws.
    assert_eq!(registrations(), 0);
    until("A's channel thawed", &[&a], 30, || {
        let a = a.clone();
        async move { a.channel(channel).await.unwrap().is_some_and(|c| !c.frozen) }
    })
    .await;
    assert_eq!(registrations(), 1, "the registration waits in the queue");
    let view = a.channel(channel).await.unwrap().unwrap();
    assert_eq!(view.phase, Phase::Disputed);
}
