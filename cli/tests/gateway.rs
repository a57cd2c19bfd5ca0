//! The whole product by hand, as processes: a ledger node, two gateway daemons configured with
//! `gridchan init`, and `gridchan channel` commands against them.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{
    configure, gridchan, init, ledger, meter_file, open_channel, spawn_logging, start_neighbours,
    until, wait_for_daemon, Proc,
};

/// Two homes' folders, `a` and `b` under `root`, with `gridchan init` done, and a ledger node
/// that funds both: (A's folder, B's folder, B's node id, the ledger, its address).
fn two_homes(root: &std::path::Path) -> (PathBuf, PathBuf, String, Proc, String) {
    let (da, db) = (root.join("a"), root.join("b"));
    let (node_a, node_b) = (init(&da), init(&db));
    let (ledger, ledger_addr) = ledger(&root.join("ledger"), "127.0.0.1:0", &[&node_a, &node_b]);
    (da, db, node_b, ledger, ledger_addr)
}

#[test]
fn two_daemons_trade_and_close_through_the_cli() {
    let root = tempfile::tempdir().unwrap();
    let (da, db, _, _ledger, ledger_addr) = two_homes(root.path());
    let (ca, cb) = (da.join("gridchan.toml"), db.join("gridchan.toml"));
    let (_a, _b, addr_b) = start_neighbours(&da, &db, &ledger_addr);
    open_channel(
        &ca,
        &addr_b,
        &[
            "--tariff",
            // A time-of-use table (the same price all day, so the numbers below stay simple).
            "tou +01:00 0-7=0.2,7-24=0.2",
            "--json",
        ],
    );
    let trading = until("three intervals traded", &ca, |c| {
        c["phase"] == "Open" && c["sold_wh"].as_u64().unwrap_or(0) >= 240
    });
    // A sells min(100, 80) = 80 Wh each interval at 0.2/kWh.
    let sold = trading["sold_wh"].as_u64().unwrap();
    assert_eq!(sold % 80, 0);
    assert_eq!(
        trading["balance"].as_u64().unwrap() - 10_000_000,
        sold * 200
    );
    // Each sees the other connected: A dialled B's address from its config.
    for (config, place) in [
        (&ca, addr_b.split_once('@').unwrap().1),
        (&cb, "(dialled us)"),
    ] {
        let out = gridchan(&["status", "--config", config.to_str().unwrap()]);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("peers     1 of 1 connected"), "{text}");
        // Both meters are read every interval: A exports 100 Wh, B imports 80.
        let meter = if *config == ca {
            "imported 0 Wh, exported 100 Wh"
        } else {
            "imported 80 Wh, exported 0 Wh"
        };
        assert!(text.contains(meter), "{text}");
        let line = text.lines().last().unwrap();
        assert!(
            line.contains(place) && line.ends_with("connected; readings taken at its word"),
            "{text}"
        );
    }
    // The human table.
    let table = gridchan(&["channel", "list", "--config", cb.to_str().unwrap()]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("bought Wh"), "{text}");
    let id = trading["channel"].as_str().unwrap()[..8].to_string();
    // `show` lists the recent intervals with when, energy and money, from each side's view.
    let show = gridchan(&["channel", "show", &id, "--config", cb.to_str().unwrap()]);
    let text = String::from_utf8(show.stdout).unwrap();
    let interval = text
        .lines()
        .find(|l| l.contains("you bought     80 Wh at 0.200000/kWh = 0.016000"))
        .unwrap_or_else(|| panic!("{text}"));
    // `  v3      2026-11-26 05:42 UTC  you bought ...`
    let when: Vec<&str> = interval.split_whitespace().skip(1).take(3).collect();
    assert_eq!(when[2], "UTC", "{interval}");
    assert_eq!(when[0].len(), 10, "{interval}");
    let show = gridchan(&[
        "channel",
        "show",
        &id,
        "--intervals",
        "2",
        "--config",
        ca.to_str().unwrap(),
    ]);
    let text = String::from_utf8(show.stdout).unwrap();
    assert_eq!(text.matches("you sold").count(), 2, "{text}");
    let out = gridchan(&[
        "channel",
        "show",
        &id,
        "--intervals",
        "0",
        "--config",
        ca.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim().lines().count(),
        1
    );
    assert!(text.contains("tariff: tou +01:00 0-24=0.200000"), "{text}");
    let out = gridchan(&["channel", "close", &id, "--config", ca.to_str().unwrap()]);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{progress}");
    // The close is followed to the end, a line per step.
    assert!(
        progress.trim_end().ends_with("paid out on the ledger"),
        "{progress}"
    );
    until("paid out on the ledger (A)", &ca, |c| {
        c["phase"] == "Concluded"
    });
    until("paid out on the ledger (B)", &cb, |c| {
        c["phase"] == "Concluded"
    });
    // `show` says what the ledger paid, and that it is our newest state.
    let out = gridchan(&["channel", "show", &id, "--config", ca.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ledger: the ledger paid out version") && text.contains("(our newest)"),
        "{text}"
    );
    // A mistake is one clear line.
    let out = gridchan(&[
        "channel",
        "close",
        "ffffffff",
        "--config",
        ca.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no channel ffffffff"), "{err}");
    let out = gridchan(&[
        "channel",
        "open",
        &addr_b,
        "--deposit",
        "1",
        "--tariff",
        "tou +01:00 0-7=0.2",
        "--config",
        ca.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("hour 7 has no price"), "{err}");
    // Deposits the ledger says cannot be paid are refused before anything is signed: A and B
    // hold about 100 tokens each after the close.
    for (amounts, says) in [
        (
            ["--deposit", "1000"].as_slice(),
            "a deposit of 1000.000000 needs more",
        ),
        (
            ["--deposit", "1", "--peer-deposit", "1000"].as_slice(),
            "cannot fund a --peer-deposit of 1000.000000",
        ),
    ] {
        let mut args = vec!["channel", "open", &addr_b];
        args.extend_from_slice(amounts);
        args.extend(["--price", "0.2", "--config", ca.to_str().unwrap()]);
        let out = gridchan(&args);
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(says), "{err}");
    }
    assert_eq!(
        common::channels(&ca)["channels"].as_array().unwrap().len(),
        1
    );
}

/// Starts the daemon of `dir` with its log kept in `dir/daemon.log`.
fn daemon_logging(dir: &std::path::Path) -> (Proc, String) {
    let config = dir.join("gridchan.toml");
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let started = spawn_logging(&["daemon", "--config", config.to_str().unwrap()], log);
    wait_for_daemon(&config);
    started
}

/// Configures the home of `dir` on `ledger` (its meter importing and exporting the given Wh
/// every interval, dialling `peer` if given) and starts its daemon, logging to
/// `dir/daemon.log`.
fn run_home(
    dir: &std::path::Path,
    ledger: &str,
    (import, export): (u64, u64),
    peer: Option<&str>,
) -> (Proc, String) {
    configure(dir, ledger, &meter_file(dir, import, export), peer);
    daemon_logging(dir)
}

#[test]
fn a_daemon_stopped_by_sigterm_writes_its_history_and_tells_its_neighbour() {
    let root = tempfile::tempdir().unwrap();
    let (da, db, _, _ledger, ledger_addr) = two_homes(root.path());
    let (_b, addr_b) = run_home(&db, &ledger_addr, (80, 0), None);
    let (mut a, _) = run_home(&da, &ledger_addr, (0, 100), Some(&addr_b));
    let ca = da.join("gridchan.toml");
    open_channel(&ca, &addr_b, &["--price", "0.2"]);
    until("three intervals traded", &ca, |c| {
        c["sold_wh"].as_u64().unwrap_or(0) >= 240
    });

    let status = a.terminate();
    let log = std::fs::read_to_string(da.join("daemon.log")).unwrap();
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("SIGTERM: stopping the gateway"), "{log}");
    assert!(
        log.trim_end().ends_with("\nstopped"),
        "the last line: {log}"
    );
    assert!(
        !da.join("data/control.sock").exists(),
        "the control socket is removed"
    );

    // Every interval the channel settled is in the history, not only the states: a crash
    // may lose the last second of history, a stop does not.
    let db_a = rusqlite::Connection::open(da.join("data/channels.sqlite")).unwrap();
    let (state, history): (i64, i64) = db_a
        .query_row(
            "SELECT c.version, (SELECT MAX(t.version) FROM trades t WHERE t.channel = c.id)
             FROM channels c",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(state >= 3, "version {state}");
    assert_eq!(history, state, "the history reaches the newest state");

    // B heard that A went away from A itself, not from an idle timeout (an earlier disconnect,
    // of a connection replaced while the channel opened, may be logged too).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log_b = std::fs::read_to_string(db.join("daemon.log")).unwrap();
        if log_b.contains("disconnected: closed by peer: shutting down") {
            break;
        }
        assert!(Instant::now() < deadline, "B never heard why: {log_b}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // B's channel list says its neighbour is away (B never dials A: A dialled B).
    let cb = db.join("gridchan.toml");
    let out = gridchan(&["channel", "list", "--config", cb.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("neighbour not connected"), "{text}");

    // Without A, B closes alone: its newest state is registered, the window passes, the
    // ledger pays; `force-close` shows each step.
    let list = common::channels(&cb);
    let id = list["channels"][0]["channel"].as_str().unwrap()[..8].to_string();
    let out = gridchan(&[
        "channel",
        "force-close",
        &id,
        "--config",
        cb.to_str().unwrap(),
    ]);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{progress}");
    assert!(
        progress.contains("waiting out the challenge window"),
        "{progress}"
    );
    assert!(
        progress.trim_end().ends_with("paid out on the ledger"),
        "{progress}"
    );
    let paid = common::channels(&cb)["channels"][0].clone();
    assert_eq!(paid["phase"], "Concluded");
    assert!(paid["version"].as_i64().unwrap() >= state, "{paid}");
    let out = gridchan(&["channel", "show", &id, "--config", cb.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(our newest)"), "{text}");
}

#[test]
fn opening_a_channel_to_a_neighbour_that_does_not_answer_says_so_while_it_retries() {
    use std::io::BufRead;
    let root = tempfile::tempdir().unwrap();
    let (da, _, node_b, _ledger, ledger_addr) = two_homes(root.path());
    let (_a, _) = run_home(&da, &ledger_addr, (0, 100), None);
    // B's key at an address where nothing listens.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ca = da.join("gridchan.toml");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_gridchan"))
        .args([
            "channel",
            "open",
            &format!("{node_b}@127.0.0.1:{port}"),
            "--deposit",
            "10",
            "--price",
            "0.2",
            "--config",
            ca.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut open = Proc(child);
    let mut progress = std::io::BufReader::new(open.0.stderr.take().unwrap()).lines();
    // The handshake gives up after 10 s; the first failed dial is reported then.
    let mut seen = Vec::new();
    for line in progress.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("cannot reach the neighbour yet") {
            assert!(line.contains("retrying"), "{seen:?}");
            break;
        }
        assert!(seen.len() < 10, "{seen:?}");
    }
    assert!(
        seen.last().is_some_and(|l| l.contains("cannot reach")),
        "the open ended without saying why: {seen:?}"
    );
    assert!(
        seen[0].contains("waiting for the neighbour to accept"),
        "{seen:?}"
    );
    drop(open);
    // The channel list says the same.
    let out = gridchan(&["channel", "list", "--config", ca.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("AwaitingAccept") && text.contains("neighbour not connected, retrying"),
        "{text}"
    );
}

#[test]
fn the_ledger_node_and_the_watchtower_stop_cleanly_on_sigterm() {
    let root = tempfile::tempdir().unwrap();
    let (mut ledger_node, ledger_addr) = ledger(&root.path().join("ledger"), "127.0.0.1:0", &[]);
    let config = common::tower_init(&root.path().join("tower"), &ledger_addr);
    let (mut tower, _) = common::spawn(&["watchtower", "--config", config.to_str().unwrap()]);
    let status = tower.terminate();
    assert!(status.success(), "the tower: {status}");
    let status = ledger_node.terminate();
    assert!(status.success(), "the ledger node: {status}");
}

#[test]
fn a_meter_recording_that_runs_out_shows_in_the_status() {
    let root = tempfile::tempdir().unwrap();
    let da = root.path().join("a");
    let node_a = init(&da);
    let (_ledger, ledger_addr) = ledger(&root.path().join("ledger"), "127.0.0.1:0", &[&node_a]);
    // Two intervals of readings, then nothing.
    let csv = da.join("short.csv");
    let rows = |seconds: &[i64]| {
        let now = jiff::Timestamp::now().as_second();
        let mut text = String::from("timestamp_utc,load_wh,pv_wh,import_wh,export_wh\n");
        for s in seconds {
            let at = jiff::Timestamp::from_second(now + s).unwrap();
            text.push_str(&format!("{at},0,0,0,100\n"));
        }
        text
    };
    // A recording of the past only, when the daemon starts; the file grows while it runs (and
    // is read again): two intervals from now.
    std::fs::write(&csv, rows(&[-100])).unwrap();
    configure(&da, &ledger_addr, csv.to_str().unwrap(), None);
    let (_a, _) = daemon_logging(&da);
    std::fs::write(&csv, rows(&[2, 3])).unwrap();
    let config = da.join("gridchan.toml");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = gridchan(&["status", "--config", config.to_str().unwrap()]);
        let text = String::from_utf8(out.stdout).unwrap();
        // (Before the file grew the meter was silent too, but with no reading yet.)
        if text.contains("meter     no reading since")
            && text.contains("trading waits for the meter (last reading")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(da.join("daemon.log")).unwrap();
    // Said once per silence (the one before the file grew, the one after), not per interval.
    let said = log.matches("the meter has no reading").count();
    assert!((1..=2).contains(&said), "said {said} times: {log}");
}

#[test]
fn a_neighbour_metering_in_another_interval_refuses_the_channel_and_open_says_why() {
    let root = tempfile::tempdir().unwrap();
    let (da, db, _, _ledger, ledger_addr) = two_homes(root.path());
    // B meters every 2 s, A every second.
    configure(&db, &ledger_addr, &meter_file(&db, 80, 0), None);
    let cb = db.join("gridchan.toml");
    let text = std::fs::read_to_string(&cb)
        .unwrap()
        .replace("interval_seconds = 1", "interval_seconds = 2");
    std::fs::write(&cb, text).unwrap();
    let (_b, addr_b) = daemon_logging(&db);
    let (_a, _) = run_home(&da, &ledger_addr, (0, 100), None);
    let ca = da.join("gridchan.toml");
    let out = gridchan(&[
        "channel",
        "open",
        &addr_b,
        "--deposit",
        "10",
        "--price",
        "0.2",
        "--config",
        ca.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "the open failed");
    let err = String::from_utf8(out.stderr).unwrap();
    let last = err.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("error: the neighbour refused the channel:")
            && last
                .ends_with("the channel's metering interval is 1 s; this gateway meters every 2 s"),
        "{err}"
    );
    // Closed, it is listed with --all, and counted without.
    let out = gridchan(&["channel", "list", "--config", ca.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("(1 closed channel(s) not shown: --all lists them)"),
        "{text}"
    );
    let out = gridchan(&["channel", "list", "--all", "--config", ca.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("the neighbour refused to open it"), "{text}");
    // Each side's log says who refused whom.
    let log = std::fs::read_to_string(da.join("daemon.log")).unwrap();
    assert!(log.contains("refused our version 0"), "{log}");
    let log = std::fs::read_to_string(db.join("daemon.log")).unwrap();
    assert!(log.contains("we refused neighbour"), "{log}");
}

#[test]
fn a_ledger_transaction_refused_for_good_shows_in_the_status() {
    let root = tempfile::tempdir().unwrap();
    let (da, _, _, _ledger, ledger_addr) = two_homes(root.path());
    let (_a, _) = run_home(&da, &ledger_addr, (0, 100), None);
    let config = da.join("gridchan.toml");
    // A transaction the ledger refuses at once: reclaiming a channel that does not exist.
    let nowhere = gridchan_channel::ChannelId([9; 32]);
    gridchan_gateway::ledger_queue::LedgerQueue::open(&da.join("data/channels.sqlite"))
        .unwrap()
        .push(
            Some(&nowhere),
            &gridchan_chain::TxKind::Reclaim { channel: nowhere },
        )
        .unwrap();
    // The submitter looks at the queue again within 5 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = gridchan(&["status", "--config", config.to_str().unwrap()]);
        let text = String::from_utf8(out.stdout).unwrap();
        if let Some(line) = text.lines().find(|l| l.contains("did not go through")) {
            assert!(
                line.contains("of channel 09090909") && line.contains("refused"),
                "{text}"
            );
            assert!(text.contains("ledger    up to date"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_garbled_channel_store_stops_the_daemon_with_one_line_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a");
    init(&dir);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("channels.sqlite"), vec![0x5a; 8192]).unwrap();
    let config = dir.join("gridchan.toml");
    let out = gridchan(&["daemon", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("cannot open the channel store"), "{err}");
    assert!(
        err.contains(&data.join("channels.sqlite").display().to_string()),
        "{err}"
    );
    assert!(err.contains("restore it from a backup"), "{err}");
}
