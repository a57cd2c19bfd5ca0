//! A household's first try, as the README's "Running the pieces by hand" writes it: two fresh
//! `gridchan init`s (a home with panels, a home without, their clocks sped up), a ledger, two
//! daemons, a channel proposed and accepted; the homes trade with nothing else edited. And a
//! second daemon on a data folder in use is refused, naming the process that holds it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{gridchan, ledger, spawn, spawn_logging, wait_for_daemon};

/// `gridchan init` as the README gives it (port 0 for the test); returns the node id.
fn init(dir: &Path, meter: &str) -> String {
    common::init_with(dir, &["--meter", meter, "--speedup", "1800"])
}

fn json(config: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["--json", "--config", config.to_str().unwrap()]);
    let out = gridchan(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn two_fresh_homes_trade_following_the_readme() {
    let root = tempfile::tempdir().unwrap();
    let (da, db) = (root.path().join("a"), root.path().join("b"));
    let node_a = init(&da, "sim");
    let node_b = init(&db, "sim:0");
    let (_ledger, ledger_addr) = ledger(
        &root.path().join("ledger"),
        "127.0.0.1:0",
        &[&node_a, &node_b],
    );
    // "put it into a/gridchan.toml and b/gridchan.toml as ledger.address"
    for d in [&da, &db] {
        let path = d.join("gridchan.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("PUBKEY@127.0.0.1:7400", &ledger_addr)).unwrap();
    }
    let (ca, cb) = (da.join("gridchan.toml"), db.join("gridchan.toml"));
    let (_b, addr_b) = spawn(&["daemon", "--config", cb.to_str().unwrap()]);
    // A's log at the default level, as journald would keep it.
    let log = std::fs::File::create(da.join("daemon.log")).unwrap();
    let (_a, _) = spawn_logging(&["daemon", "--config", ca.to_str().unwrap()], log);
    wait_for_daemon(&ca);
    wait_for_daemon(&cb);
    let first_line = |config: &Path| {
        let out = gridchan(&["status", "--config", config.to_str().unwrap()]);
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines().next().unwrap_or_default().to_string()
    };
    assert_eq!(
        first_line(&ca),
        "not trading: no channel (gridchan channel open, or gridchan market join)"
    );

    // A second daemon on A's folder is refused in one line that names the holder, and A's
    // daemon goes on answering.
    let again = gridchan(&["daemon", "--config", ca.to_str().unwrap()]);
    assert!(!again.status.success());
    let err = String::from_utf8(again.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("is in use by process"), "{err}");
    assert!(err.contains("stop that daemon first"), "{err}");
    assert!(gridchan(&["status", "--config", ca.to_str().unwrap()])
        .status
        .success());

    // A proposes; B's owner is asked (the template says "ask") and accepts.
    let open = std::thread::spawn({
        let (ca, addr_b) = (ca.clone(), addr_b.clone());
        move || {
            gridchan(&[
                "channel",
                "open",
                &addr_b,
                "--deposit",
                "10",
                "--peer-deposit",
                "10",
                "--price",
                "0.2",
                "--config",
                ca.to_str().unwrap(),
            ])
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let offer = loop {
        let list = json(&cb, &["channel", "list"]);
        if let Some(o) = list["offers"].get(0) {
            break o["channel"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "B never saw the proposal: {list}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        first_line(&cb),
        "not trading: a neighbour's proposal waits for your answer (gridchan channel list)"
    );
    let out = gridchan(&[
        "channel",
        "accept",
        &offer[..8],
        "--config",
        cb.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let opened = open.join().unwrap();
    assert!(
        opened.status.success(),
        "{}",
        String::from_utf8_lossy(&opened.stderr)
    );

    // A simulated day passes in 48 s: within one, the home with panels sells to the one
    // without (whatever hour of the simulated day the channel opened at).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let list = json(&ca, &["channel", "list"]);
        let c = &list["channels"][0];
        if c["sold_wh"].as_u64().unwrap_or(0) > 0 {
            let b = &json(&cb, &["channel", "list"])["channels"][0];
            assert_eq!(b["phase"], "Open", "{b}");
            break;
        }
        assert!(Instant::now() < deadline, "the homes never traded: {list}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nobody named B's meter: its readings are taken at its word, and the status says so.
    let out = gridchan(&["status", "--config", ca.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("; readings taken at its word"), "{text}");
    let line = first_line(&ca);
    assert!(
        line.starts_with("trading: 1 open channel(s), the last interval settled began"),
        "{line}"
    );
    // A simulated hour passes in 2 s: the log says what was traded with whom, once an hour.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(da.join("daemon.log")).unwrap();
        if let Some(l) = log
            .lines()
            .find(|l| l.contains("traded ") && l.contains(" Wh for "))
        {
            assert!(l.contains(&format!("with {}", &node_b[..8])), "{l}");
            assert!(l.contains("sold "), "{l}");
            break;
        }
        assert!(Instant::now() < deadline, "no hourly trade line: {log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
