//! The transport's limits against a hostile neighbour, as specs/protocol.md ("Transport") states
//! them: a frame is refused from its length field at the protocol's 16 KiB; a peer gets the two
//! streams the protocol uses and receive windows of a few frames, so streams nobody reads cost
//! little; a connection that proves its key and opens no frame stream is closed; strangers
//! holding every place cannot keep out a neighbour we have a channel with.

use gridchan_harness::key;
use std::time::Duration;

use gridchan_channel::{
    Event, IntervalIndex, IntervalReading, LedgerEvent, Phase, Signer, WattHours,
};
use gridchan_fixtures::{engine_at, flat_channel};
use gridchan_gateway::engine::{EngineHandle, Report};
use gridchan_transport::{Connection, Endpoint, Limits};

/// The `n`th of many distinct strangers.
fn stranger(n: u16) -> Signer {
    let mut secret = [0x5a; 32];
    secret[..2].copy_from_slice(&n.to_be_bytes());
    Signer::new(&secret, &secret).unwrap()
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not in time"))
}

/// A hostile client: an endpoint with generous limits of its own, so only the victim's count.
fn mallory(key: Signer) -> Endpoint {
    let limits = Limits {
        max_frame: 1 << 20,
        ..Limits::default()
    };
    Endpoint::bind("127.0.0.1:0".parse().unwrap(), key, limits).unwrap()
}

async fn dial(m: &Endpoint, victim: &EngineHandle) -> Connection {
    within("dial", m.connect(&victim.address)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_protocols_16_kib_is_refused_from_its_length_field() {
    let dir = tempfile::tempdir().unwrap();
    let victim = engine_at(dir.path(), 2);
    let m = mallory(key(1));
    let conn = dial(&m, &victim).await;
    let (_r, mut w) = conn.open_stream().await.unwrap().split();
    // 16,381 bytes after the length field: 16,385 in all, one over the limit. Only the length
    // is sent; the victim must not wait for the rest.
    w.write_raw(&16_381u32.to_be_bytes()).await.unwrap();
    let reason = within("the victim closes the connection", conn.closed()).await;
    assert!(reason.contains("limit"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gets_two_streams_and_an_unread_stream_buffers_a_few_frames_only() {
    let dir = tempfile::tempdir().unwrap();
    let victim = engine_at(dir.path(), 2);
    let m = mallory(key(1));
    let conn = dial(&m, &victim).await;
    let _frames = conn.open_stream().await.unwrap();
    // The key proof's stream is done, so the peer may open one more in its place; no more.
    let mut extra = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(300), conn.open_stream()).await {
            Ok(Ok(s)) => extra.push(s),
            _ => break,
        }
    }
    assert!(
        extra.len() <= 1,
        "{} streams beyond the protocol's",
        extra.len()
    );
    // What the victim lets us send on a stream it never reads: its flow-control windows.
    let mut accepted = 0usize;
    if let Some(s) = extra.pop() {
        let (_r, mut w) = s.split();
        let chunk = [0u8; 4096];
        while accepted < 4 << 20 {
            match tokio::time::timeout(Duration::from_millis(300), w.write_raw(&chunk)).await {
                Ok(Ok(())) => accepted += chunk.len(),
                _ => break,
            }
        }
    }
    let window = Limits::peer_link(gridchan_channel::wire::MAX_FRAME - 4).connection_window;
    assert!(
        accepted <= window as usize + 4096,
        "{accepted} bytes buffered on a stream nobody reads (window {window})"
    );
    assert!(
        conn.close_reason().is_none(),
        "the connection itself is fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_proves_its_key_and_opens_no_stream_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let victim = engine_at(dir.path(), 2);
    let m = mallory(key(1));
    let conn = dial(&m, &victim).await;
    let reason = within("the victim closes the idle connection", conn.closed()).await;
    assert!(reason.contains("no frame stream"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_holds_at_most_two_connections_and_a_newer_one_replaces_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let victim = engine_at(dir.path(), 2);
    let m = mallory(key(1));
    // Connections that open no stream yet (the engine, which keeps one per neighbour, never
    // hears of them): the transport itself keeps at most two per key.
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(dial(&m, &victim).await);
    }
    let reason = within("the oldest is closed", conns[0].closed()).await;
    assert!(
        reason.contains("replaced by a newer connection from the same key"),
        "{reason}"
    );
    assert!(conns[1..].iter().all(|c| c.close_reason().is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_holding_every_place_do_not_keep_out_a_neighbour_with_a_channel() {
    let dir = tempfile::tempdir().unwrap();
    let victim = engine_at(dir.path(), 2);
    let honest = engine_at(dir.path(), 3);
    let mut honest_reports = honest.reports();
    honest.connect(victim.address.clone()).await.unwrap();
    let opened_at = IntervalIndex(1_000);
    let channel = within(
        "open",
        honest.open(flat_channel(
            victim.node,
            1_000_000,
            100_000,
            opened_at,
            [1; 32],
        )),
    )
    .await
    .unwrap();
    // Both sides hold version 0 (the honest one hears B's acceptance last), then both are
    // funded and open before the honest neighbour goes away.
    let phase = |e: EngineHandle| async move { e.channel(channel).await.unwrap().map(|c| c.phase) };
    within("agreed", async {
        while phase(victim.clone()).await != Some(Phase::Funding)
            || phase(honest.clone()).await != Some(Phase::Funding)
        {
            let _ = tokio::time::timeout(Duration::from_millis(50), honest_reports.recv()).await;
        }
    })
    .await;
    for e in [&victim, &honest] {
        e.ledger_event(channel, LedgerEvent::Funded).await.unwrap();
    }
    within("open", async {
        while phase(victim.clone()).await != Some(Phase::Open)
            || phase(honest.clone()).await != Some(Phase::Open)
        {
            let _ = tokio::time::timeout(Duration::from_millis(50), honest_reports.recv()).await;
        }
    })
    .await;
    // Strangers take every place, each with its frame stream open so that nothing expires.
    // The neighbour's connection came as a stranger's, but it holds a channel now: it takes
    // no stranger's place, and all `limit` strangers get in beside it.
    let limit = Limits::default().max_connections;
    let mut held = Vec::new();
    for n in 0..limit as u16 {
        let ep = mallory(stranger(n));
        let conn = dial(&ep, &victim).await;
        let stream = within("a stream", conn.open_stream()).await.unwrap();
        held.push((ep, conn, stream));
    }
    // One stranger more is turned away right after its key proof.
    // (Its dial may fail outright: the victim can close before its own hello is read.)
    let late = mallory(stranger(limit as u16));
    match within("dial", late.connect(&victim.address)).await {
        Ok(conn) => {
            let reason = within("the victim closes the stranger", conn.closed()).await;
            assert!(reason.contains("connection limit"), "{reason}");
        }
        Err(e) => assert!(e.to_string().contains("connection lost"), "{e}"),
    }
    assert!(
        held.iter().all(|(_, c, _)| c.close_reason().is_none()),
        "the strangers hold their places"
    );
    // The honest neighbour goes away for a while.
    honest.stop().await.unwrap();

    // The neighbour comes back: it is let in, and settles an interval.
    let honest = engine_at(dir.path(), 3);
    let mut honest_reports = honest.reports();
    within(
        "the neighbour reconnects",
        honest.dial(victim.address.clone()),
    )
    .await
    .unwrap();
    let interval = IntervalIndex(opened_at.0 + 1);
    victim
        .reading(channel, IntervalReading::buying(interval, WattHours(300)))
        .await
        .unwrap();
    honest
        .reading(channel, IntervalReading::selling(interval, WattHours(300)))
        .await
        .unwrap();
    within("the neighbour settles", async {
        loop {
            if let Ok(Report::Event(Event::Settled { trade, .. })) = honest_reports.recv().await {
                if trade.interval == interval {
                    return;
                }
            }
        }
    })
    .await;
    drop(held);
}
