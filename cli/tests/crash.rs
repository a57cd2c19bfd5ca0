//! Crash cycles: kill -9 a gateway daemon or the watchtower at random points while the channel
//! trades every second, restart it from its files, and check after each cycle that the two
//! sides converge, nothing signed was lost, money is conserved, and the tower still holds every
//! state it gave a receipt for. `GRIDCHAN_CRASH_CYCLES` sets the number of cycles (20 by
//! default; the documented soak runs hundreds: see BENCHMARKS.md, "Crash soak").

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    channels, gridchan, init, ledger, open_channel, spawn, start_daemon, start_neighbours, until,
    Proc,
};
use rand::{Rng, SeedableRng};

/// A port on 127.0.0.1 that was free a moment ago (the daemon must come back on it).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_tower(config: &Path) -> Proc {
    let (proc, _) = spawn(&["watchtower", "--config", config.to_str().unwrap()]);
    proc
}

/// The version the tower holds for the (only) channel, from its store.
fn tower_holds(config: &Path) -> u64 {
    let out = gridchan(&[
        "watchtower",
        "channels",
        "--json",
        "--config",
        config.to_str().unwrap(),
    ]);
    if !out.status.success() {
        return 0;
    }
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    list.get(0).and_then(|c| c["version"].as_u64()).unwrap_or(0)
}

/// The highest version a gateway holds a tower's receipt for.
fn acknowledged(data: &Path) -> u64 {
    let conn = rusqlite::Connection::open_with_flags(
        data.join("channels.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM tower_acks",
        [],
        |r| r.get::<_, i64>(0),
    )
    .unwrap_or(0) as u64
}

fn version_and_money(config: &Path) -> (u64, u64) {
    let list = channels(config);
    let c = &list["channels"][0];
    (
        c["version"].as_u64().unwrap(),
        c["balance"].as_u64().unwrap() + c["peer_balance"].as_u64().unwrap(),
    )
}

#[test]
fn kill_nine_cycles_lose_nothing_signed() {
    let cycles: usize = std::env::var("GRIDCHAN_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let root = tempfile::tempdir().unwrap();
    let (da, db) = (root.path().join("a"), root.path().join("b"));
    let (node_a, node_b) = (init(&da), init(&db));
    let ledger_dir = root.path().join("ledger");
    let (_ledger, ledger_addr) = ledger(&ledger_dir, "127.0.0.1:0", &[&node_a, &node_b]);
    for (dir, port) in [(&da, free_port()), (&db, free_port())] {
        let path = dir.join("gridchan.toml");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
        std::fs::write(&path, text).unwrap();
    }
    let (ca, cb) = (da.join("gridchan.toml"), db.join("gridchan.toml"));
    // The watchtower, on a fixed port so that it comes back where the gateways look for it.
    let td = root.path().join("tower");
    let out = gridchan(&[
        "watchtower",
        "init",
        "--dir",
        td.to_str().unwrap(),
        "--ledger",
        &ledger_addr,
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tower_addr = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("address ").map(str::to_string))
        .unwrap();
    let ct = td.join("watchtower.toml");
    let tower = start_tower(&ct);
    for dir in [&da, &db] {
        let path = dir.join("gridchan.toml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!("\n[[towers]]\naddress = \"{tower_addr}\"\n"));
        std::fs::write(&path, text).unwrap();
    }
    let (a, b, addr_b) = start_neighbours(&da, &db, &ledger_addr);
    let out = open_channel(&ca, &addr_b, &["--price", "0.2"]);
    // Without --json, open shows the channel's progress until it is open.
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(progress.contains("waiting for"), "{progress}");
    assert!(
        progress.contains("open: trading every interval"),
        "{progress}"
    );
    until("trading", &ca, |c| {
        c["phase"] == "Open" && c["version"].as_u64().unwrap_or(0) >= 1
    });
    let mut procs = [Some(a), Some(b), Some(tower)];
    let configs = [ca.clone(), cb.clone()];
    let mut tower_kills = 0;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut highest = 0;
    for cycle in 0..cycles {
        // Let it trade, then kill one side at a random instant.
        std::thread::sleep(Duration::from_millis(rng.random_range(50..1200)));
        let victim = rng.random_range(0..3usize);
        for (i, c) in configs.iter().enumerate() {
            if i != victim {
                highest = highest.max(version_and_money(c).0);
            }
        }
        procs[victim] = None; // SIGKILL
        if victim == 2 {
            tower_kills += 1;
            procs[2] = Some(start_tower(&ct));
        } else {
            procs[victim] = Some(start_daemon(&configs[victim]).0);
        }
        // Every receipt a gateway holds is for a state the tower still has.
        let acked = acknowledged(&da.join("data")).max(acknowledged(&db.join("data")));
        let held = tower_holds(&ct);
        assert!(
            held >= acked,
            "cycle {cycle}: the tower holds v{held} but gave a receipt for v{acked}"
        );
        // Converge: both hold the same version, no lower than anything seen before the kill.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (va, ma) = version_and_money(&ca);
            let (vb, mb) = version_and_money(&cb);
            assert_eq!(ma, 20_000_000, "cycle {cycle}: money conserved at A");
            assert_eq!(mb, 20_000_000, "cycle {cycle}: money conserved at B");
            if va == vb && va >= highest && va > 0 {
                highest = va;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "cycle {cycle}: A at {va}, B at {vb}, seen {highest}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The tower catches up with the newest state after all that.
    let deadline = Instant::now() + Duration::from_secs(60);
    while tower_holds(&ct) < highest {
        assert!(
            Instant::now() < deadline,
            "the tower never caught up: v{} of v{highest}",
            tower_holds(&ct)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "{cycles} kill -9 cycles ({tower_kills} of the tower), final version {highest}, no discrepancy"
    );
}
