//! The whole product by hand, as processes: a ledger node, two gateway daemons configured with
//! `gridchan init`, and `gridchan channel` commands against them.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::gridchan;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `gridchan ARGS` and returns it with the last word of its first output line.
fn spawn(args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gridchan"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let word = line
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(!word.is_empty(), "{args:?} printed nothing");
    (Proc(child), word)
}

fn init(dir: &Path) -> String {
    let out = gridchan(&[
        "init",
        "--dir",
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .next()
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_string()
}

fn configure(dir: &Path, ledger: &str, csv: &str, peer: Option<&str>) {
    let path = dir.join("gridchan.toml");
    let mut text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("PUBKEY@127.0.0.1:7400", ledger)
        .replace("interval_seconds = 900", "interval_seconds = 1")
        .replace(
            "kind = \"simulated\"\nseed = 1\npv_peak_w = 4000\nload_avg_w = 400\n",
            &format!("kind = \"csv\"\npath = \"{csv}\"\n"),
        );
    if let Some(p) = peer {
        text.push_str(&format!("\n[[peers]]\naddress = \"{p}\"\n"));
    }
    std::fs::write(&path, text).unwrap();
}

fn meter_file(dir: &Path, import: u64, export: u64) -> String {
    let mut csv = String::from("timestamp_utc,load_wh,pv_wh,import_wh,export_wh\n");
    for _ in 0..5_000 {
        csv.push_str(&format!("2025-07-14T00:00:00Z,0,0,{import},{export}\n"));
    }
    let path = dir.join("meter.csv");
    std::fs::write(&path, csv).unwrap();
    path.to_str().unwrap().to_string()
}

fn channels(config: &Path) -> serde_json::Value {
    let out = gridchan(&[
        "channel",
        "list",
        "--json",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls `channel list` (bounded) until `f` holds for the first channel.
fn until(what: &str, config: &Path, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = channels(config);
        if let Some(c) = list["channels"].get(0) {
            if f(c) {
                return c.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_daemons_trade_and_close_through_the_cli() {
    let root = tempfile::tempdir().unwrap();
    let (da, db) = (root.path().join("a"), root.path().join("b"));
    let (node_a, node_b) = (init(&da), init(&db));
    let ledger_dir = root.path().join("ledger");
    let (_ledger, ledger_addr) = spawn(&[
        "ledger",
        "--data",
        ledger_dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--block-ms",
        "100",
        "--min-challenge-window",
        "2",
        "--fund",
        &format!("{node_a}=100"),
        "--fund",
        &format!("{node_b}=100"),
    ]);
    configure(&db, &ledger_addr, &meter_file(&db, 80, 0), None);
    let cb = db.join("gridchan.toml");
    let (_b, addr_b) = spawn(&["daemon", "--config", cb.to_str().unwrap()]);
    configure(&da, &ledger_addr, &meter_file(&da, 0, 100), Some(&addr_b));
    let ca = da.join("gridchan.toml");
    let (_a, _addr_a) = spawn(&["daemon", "--config", ca.to_str().unwrap()]);
    // Wait until the daemon's control socket answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !gridchan(&["status", "--config", ca.to_str().unwrap()])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "daemon A never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = gridchan(&[
        "channel",
        "open",
        &addr_b,
        "--deposit",
        "10",
        "--peer-deposit",
        "10",
        "--price",
        "0.2",
        "--json",
        "--config",
        ca.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
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
    // The human table.
    let table = gridchan(&["channel", "list", "--config", cb.to_str().unwrap()]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("bought Wh"), "{text}");
    let id = trading["channel"].as_str().unwrap()[..8].to_string();
    let out = gridchan(&["channel", "close", &id, "--config", ca.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until("paid out on the ledger (A)", &ca, |c| {
        c["phase"] == "Concluded"
    });
    until("paid out on the ledger (B)", &cb, |c| {
        c["phase"] == "Concluded"
    });
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
}
