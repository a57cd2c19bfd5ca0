//! Signed readings between two daemons (`specs/readings.md`): A's meter signs its readings
//! (`[signing_meter]`), B names A's meter key under `[[peers]]`. With the right key B buys from A;
//! with a key that is not A's meter, B leaves A out of every interval and says why, and nothing
//! is billed.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    channels, configure, init, ledger, meter_file, open_channel, spawn_logging, wait_for_daemon,
};

/// A (exporting 100 Wh a second, its meter signing with `meter.key`) and B (importing 80 Wh,
/// requiring A's readings signed by `pinned`); B opens the channel. Returns B's config, its log
/// path, and the running processes.
fn neighbours(
    root: &Path,
    pinned: impl FnOnce(&str) -> String,
) -> (std::path::PathBuf, std::path::PathBuf, Vec<common::Proc>) {
    let (da, db) = (root.join("a"), root.join("b"));
    let (node_a, node_b) = (init(&da), init(&db));
    let (ledger_proc, ledger_addr) =
        ledger(&root.join("ledger"), "127.0.0.1:0", &[&node_a, &node_b]);
    configure(&da, &ledger_addr, &meter_file(&da, 0, 100), None);
    let ca = da.join("gridchan.toml");
    let mut text = std::fs::read_to_string(&ca).unwrap();
    text.push_str("\n[signing_meter]\nkey = \"meter.key\"\n");
    std::fs::write(&ca, text).unwrap();
    let log_a = std::fs::File::create(da.join("daemon.log")).unwrap();
    let (a, addr_a) = spawn_logging(&["daemon", "--config", ca.to_str().unwrap()], log_a);
    wait_for_daemon(&ca);
    // The meter key A's daemon made and signs with, as an installer would read it off A.
    let meter = gridchan_cli::keys::load(&da.join("meter.key")).unwrap();
    let meter = hex::encode(meter.id().to_bytes());
    configure(&db, &ledger_addr, &meter_file(&db, 80, 0), Some(&addr_a));
    let cb = db.join("gridchan.toml");
    let mut text = std::fs::read_to_string(&cb).unwrap();
    text.push_str(&format!("meter = \"{}\"\n", pinned(&meter)));
    std::fs::write(&cb, text).unwrap();
    let log_b = db.join("daemon.log");
    let (b, _) = spawn_logging(
        &["daemon", "--config", cb.to_str().unwrap()],
        std::fs::File::create(&log_b).unwrap(),
    );
    wait_for_daemon(&cb);
    open_channel(&cb, &addr_a, &["--price", "0.2"]);
    (cb, log_b, vec![ledger_proc, a, b])
}

#[test]
fn a_neighbour_whose_meter_signs_its_readings_is_bought_from() {
    let root = tempfile::tempdir().unwrap();
    let (cb, _, _procs) = neighbours(root.path(), |meter| meter.to_string());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = channels(&cb);
        if list["channels"][0]["bought_wh"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "B never bought: {list}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // B's status says how it takes A's readings.
    let out = common::gridchan(&["status", "--config", cb.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("; readings signed by meter "), "{text}");
}

#[test]
fn a_neighbour_whose_readings_are_not_its_named_meters_is_left_out() {
    let root = tempfile::tempdir().unwrap();
    // B names another meter (a key that is not A's meter's).
    let other = gridchan_channel::Signer::new(&[0x77; 32], &[0; 32]).unwrap();
    let other = hex::encode(other.id().to_bytes());
    let (cb, log_b, _procs) = neighbours(root.path(), |_| other.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let said = loop {
        let log = std::fs::read_to_string(&log_b).unwrap();
        if let Some(line) = log.lines().find(|l| l.contains("does not count")) {
            break line.to_string();
        }
        assert!(Instant::now() < deadline, "B never said why: {log}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(said.contains("left out of this interval"), "{said}");
    assert!(
        said.contains(&format!("not the party's meter {other}")),
        "{said}"
    );
    // The channel is open and trading would be possible, but nothing is billed.
    let list = channels(&cb);
    assert_eq!(list["channels"][0]["phase"], "Open", "{list}");
    assert_eq!(list["channels"][0]["bought_wh"], 0, "{list}");
}
