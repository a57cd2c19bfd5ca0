//! Resource limits under attack: while hostile peers flood the gateway (thousands of messages a
//! second, a proposal for a channel that does not exist and a reconnection after each
//! disconnect, a frame that stalls half-way, more streams than allowed, fifty connections from
//! one key), an honest neighbour keeps settling, and the process's memory stays bounded.

use gridchan_harness::key;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gridchan_channel::wire::Announce;
use gridchan_channel::{
    ChannelId, Event, IntervalIndex, IntervalReading, LedgerEvent, Message, Party, Phase,
    ProposalParts, State, Version, WattHours,
};
use gridchan_fixtures::{engine_at, flat_channel};
use gridchan_gateway::engine::{EngineHandle, Report};
use gridchan_transport::{Endpoint, Limits};

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_neighbour_keeps_settling_while_others_flood_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let victim = engine_at(dir.path(), 2);
    let honest = engine_at(dir.path(), 3);
    let mut honest_reports = honest.reports();
    honest.connect(victim.address.clone()).await.unwrap();
    let opened_at = IntervalIndex(1_000);
    let channel = honest
        .open(flat_channel(
            victim.node,
            1_000_000_000,
            100_000,
            opened_at,
            [1; 32],
        ))
        .await
        .unwrap();
    let phase = |e: EngineHandle| async move { e.channel(channel).await.unwrap().map(|c| c.phase) };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while phase(victim.clone()).await != Some(Phase::Funding)
        || phase(honest.clone()).await != Some(Phase::Funding)
    {
        assert!(tokio::time::Instant::now() < deadline, "never agreed");
        let _ = tokio::time::timeout(Duration::from_millis(100), honest_reports.recv()).await;
    }
    for e in [&victim, &honest] {
        e.ledger_event(channel, LedgerEvent::Funded).await.unwrap();
    }
    let baseline = rss();

    // The attackers, on their own thread and runtime: they are other machines, and must not
    // be able to starve the gateway by hogging the gateway's own runtime threads.
    let attack_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let attack_handle = attack_rt.handle().clone();
    let (rt_stop_tx, rt_stop_rx) = std::sync::mpsc::channel::<()>();
    let attack_thread = std::thread::spawn(move || {
        attack_rt.block_on(async move {
            let _ = tokio::task::spawn_blocking(move || rt_stop_rx.recv()).await;
        });
    });
    let stop = Arc::new(AtomicBool::new(false));
    let frames_sent = Arc::new(AtomicU64::new(0));
    let mut attackers = Vec::new();
    for k in 10..14u8 {
        let (stop, sent, target) = (stop.clone(), frames_sent.clone(), victim.address.clone());
        attackers.push(attack_handle.spawn(async move {
            let ep =
                Endpoint::bind("127.0.0.1:0".parse().unwrap(), key(k), Limits::default()).unwrap();
            let announce = Message::Announce(Announce {
                interval: IntervalIndex(7),
                import: WattHours(1),
                export: WattHours(1),
                shares: None,
                reading: None,
            })
            .encode();
            // A proposal for a channel nobody has: it costs the sender its connection.
            let params =
                gridchan_fixtures::flat_channel(key(2).id(), 1, 1, IntervalIndex(1), [k; 32])
                    .params(key(k).id());
            let mut s = State::initial(&params);
            s.channel_id = ChannelId([k; 32]);
            s.version = Version(9);
            let bogus = Message::Propose(ProposalParts {
                sig: key(k).sign(&s.digest()),
                state: s,
                proposer: Party::A,
            })
            .encode();
            let burst: Vec<Vec<u8>> = std::iter::repeat_n(announce, 256).collect();
            while !stop.load(Ordering::SeqCst) {
                let Ok(Ok(conn)) =
                    tokio::time::timeout(Duration::from_secs(5), ep.connect(&target)).await
                else {
                    continue;
                };
                let Ok(stream) = conn.open_stream().await else {
                    continue;
                };
                let (_r, mut w) = stream.split();
                for _ in 0..20 {
                    if stop.load(Ordering::SeqCst) || w.write_prefixed_many(&burst).await.is_err() {
                        break;
                    }
                    sent.fetch_add(burst.len() as u64, Ordering::Relaxed);
                }
                let _ = w.write_prefixed(&bogus).await;
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
            }
        }));
    }
    // A frame that stops half-way, and more streams than the limit, on one connection.
    let staller =
        Endpoint::bind("127.0.0.1:0".parse().unwrap(), key(20), Limits::default()).unwrap();
    let stall_conn = staller.connect(&victim.address).await.unwrap();
    let stall = stall_conn.open_stream().await.unwrap();
    let (_sr, mut sw) = stall.split();
    let mut half = 16_000u32.to_be_bytes().to_vec();
    half.extend_from_slice(&[0u8; 8_000]);
    sw.write_raw(&half).await.unwrap();
    let mut opened = 0;
    let mut streams = Vec::new();
    for _ in 0..200 {
        match tokio::time::timeout(Duration::from_millis(200), stall_conn.open_stream()).await {
            Ok(Ok(s)) => {
                opened += 1;
                streams.push(s);
            }
            _ => break,
        }
    }
    // The key proof's stream and the frame stream: one more in the proof's place, no more.
    assert!(
        opened <= 1,
        "{opened} streams opened past the protocol's two"
    );
    // Many connections from one key at once: the gateway keeps one per peer (each new one
    // replaces the last), so they cost handshakes, not memory.
    let many = Endpoint::bind("127.0.0.1:0".parse().unwrap(), key(21), Limits::default()).unwrap();
    let mut conns = Vec::new();
    for _ in 0..50 {
        if let Ok(Ok(c)) =
            tokio::time::timeout(Duration::from_secs(5), many.connect(&victim.address)).await
        {
            if let Ok(s) = c.open_stream().await {
                conns.push((c, s));
            }
        }
    }
    assert!(!conns.is_empty());

    // Meanwhile the honest neighbour settles 30 intervals (the victim buys).
    let settle = async {
        for i in 1..=30u64 {
            let interval = IntervalIndex(opened_at.0 + i);
            let energy = WattHours(100 + i);
            victim
                .reading(channel, IntervalReading::buying(interval, energy))
                .await
                .unwrap();
            honest
                .reading(channel, IntervalReading::selling(interval, energy))
                .await
                .unwrap();
            loop {
                match honest_reports.recv().await {
                    Ok(Report::Event(Event::Settled { trade, .. }))
                        if trade.interval == interval =>
                    {
                        break
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), settle)
        .await
        .is_err()
    {
        let v = victim.channels().await.unwrap();
        let h = honest.channels().await.unwrap();
        panic!(
            "the honest neighbour did not settle 30 intervals during the flood:\nvictim {:?}\nhonest {:?}",
            v.iter().map(|c| (c.phase, c.current.as_ref().map(|s| s.version()), c.proposal.as_ref().map(|p| p.version()), c.highest_signed, c.frozen)).collect::<Vec<_>>(),
            h.iter().map(|c| (c.phase, c.current.as_ref().map(|s| s.version()), c.proposal.as_ref().map(|p| p.version()), c.highest_signed, c.frozen)).collect::<Vec<_>>(),
        );
    }
    let peak = rss();
    stop.store(true, Ordering::SeqCst);
    for a in attackers {
        a.abort();
    }
    let _ = rt_stop_tx.send(());
    attack_thread.join().unwrap();
    let flooded = frames_sent.load(Ordering::Relaxed);
    println!(
        "{flooded} hostile frames sent during 30 honest intervals; memory {} MB -> {} MB",
        baseline / 1_000_000,
        peak / 1_000_000
    );
    assert!(flooded > 10_000, "the flood was real: {flooded} frames");
    assert!(
        peak < baseline + 128 * 1024 * 1024,
        "memory grew from {baseline} to {peak} bytes"
    );
    drop(streams);
    drop(conns);
}
