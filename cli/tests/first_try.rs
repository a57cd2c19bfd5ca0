//! A household's first try, as the README's "Running the pieces by hand" writes it: two fresh
//! `gridchan init`s (a home with panels, a home without, their clocks sped up), a ledger, two
//! daemons, a channel proposed and accepted; the homes trade with nothing else edited, within
//! two intervals of the first surplus after the channel opened. And a second daemon on a data
//! folder in use is refused, naming the process that holds it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{gridchan, ledger, spawn, spawn_logging, wait_for_daemon};

/// `gridchan init` as the README gives it (port 0 for the test); returns the node id.
fn init(dir: &Path, meter: &str) -> String {
    common::init_with(dir, &["--meter", meter, "--speedup", "1800"])
}

/// The first interval from `from` in which A's simulated meter exports and B's imports, as the
/// daemons of `ca` and `cb` read them.
fn first_surplus(ca: &Path, cb: &Path, from: u64) -> u64 {
    use gridchan_gateway::config::{Config, MeterSection};
    use gridchan_gateway::meter::{MeterSource, SimulatedMeter};
    let meter = |config: &Path| {
        let c = Config::load(config).unwrap();
        let Some(MeterSection::Simulated {
            seed,
            pv_peak_w,
            load_avg_w,
            ..
        }) = c.meter
        else {
            panic!("a simulated meter")
        };
        SimulatedMeter {
            seed,
            pv_peak_w,
            load_avg_w,
            interval_seconds: c.metering.interval_seconds,
            zone: c.metering.zone().unwrap(),
        }
    };
    let (mut a, mut b) = (meter(ca), meter(cb));
    (from..from + 200)
        .find(|k| {
            let k = gridchan_channel::IntervalIndex(*k);
            let (ra, rb) = (a.reading(k).unwrap(), b.reading(k).unwrap());
            ra.export.0 > 0 && rb.import.0 > 0
        })
        .expect("a surplus within two simulated days")
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

    // Once the channel is open (and A's meter has read an interval), the last interval read.
    let deadline = Instant::now() + Duration::from_secs(60);
    let read_when_open = loop {
        let list = json(&ca, &["channel", "list"]);
        let read = json(&ca, &["status"])["meter"]["last_read"][0].as_u64();
        if let (true, Some(start)) = (list["channels"][0]["phase"] == "Open", read) {
            break start / 900;
        }
        assert!(
            Instant::now() < deadline,
            "the channel never opened: {list}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // A simulated day passes in 48 s: within one, the home with panels sells to the one
    // without (whatever hour of the simulated day the channel opened at).
    let deadline = Instant::now() + Duration::from_secs(90);
    let channel = loop {
        let list = json(&ca, &["channel", "list"]);
        let c = &list["channels"][0];
        if c["sold_wh"].as_u64().unwrap_or(0) > 0 {
            let b = &json(&cb, &["channel", "list"])["channels"][0];
            assert_eq!(b["phase"], "Open", "{b}");
            break c["channel"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "the homes never traded: {list}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // Within two intervals: the first interval after the channel opened in which A's panels
    // gave more than its load and B drew from the grid (the same seeded meters the daemons
    // read, from their configs) is the one the homes first settle, or one of the two after it
    // (an interval is half a second here, on a machine running other tests).
    let surplus = first_surplus(&ca, &cb, read_when_open + 1);
    let shown = json(&ca, &["channel", "show", &channel, "--intervals", "200"]);
    let first_trade = shown["recent"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["interval"].as_u64())
        .min()
        .unwrap();
    assert!(
        (surplus..=surplus + 2).contains(&first_trade),
        "the first interval with a surplus after opening is {surplus}; the first trade settled {first_trade}"
    );
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
