//! A gateway that loses its data folder mid-day: the daemon refuses to start on what it forgot
//! (one line, naming `gridchan restore`), `gridchan restore` takes the newest states from its two
//! towers, and the channel goes on trading and closes with the payout both sides agree on.

mod common;

use std::time::{Duration, Instant};

use common::{channels, gridchan, open_channel, until};

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn a_lost_data_folder_is_restored_from_the_towers_and_trading_goes_on() {
    let mut h = Homes::start();
    h.settled_past(3);
    let before = channels(&h.ca)["channels"][0].clone();
    h.stop_a();
    // The SD card fails: the data folder is gone (the key and config survive).
    std::fs::remove_dir_all(h.da.join("data")).unwrap();
    let line = h.refused();
    assert!(line.contains("missing from the channel store"), "{line}");
    assert!(line.contains("gridchan restore --config"), "{line}");
    assert_eq!(
        line.trim()
            .lines()
            .filter(|l| l.starts_with("error"))
            .count(),
        1,
        "{line}"
    );
    let said = h.restore();
    assert!(said.contains("restored 1 channel(s)"), "{said}");
    assert!(said.contains("from 2 of 2 tower(s)"), "{said}");
    // Restoring again changes nothing.
    assert!(h.restore().contains("up to date"));
    h.start_a();
    let v0 = before["version"].as_u64().unwrap();
    let after = until("trading again past the loss", &h.ca, |c| {
        c["phase"] == "Open" && c["version"].as_u64().unwrap_or(0) > v0 + 2
    });
    // Nothing was lost: A still has everything it sold before the loss.
    assert!(after["sold_wh"].as_u64().unwrap() >= before["sold_wh"].as_u64().unwrap());
    // The day ends: a cooperative close pays both what the final state says.
    let id = after["channel"].as_str().unwrap()[..8].to_string();
    ok(&gridchan(&[
        "channel",
        "close",
        &id,
        "--config",
        h.cb.to_str().unwrap(),
    ]));
    let a_end = until("paid out (A)", &h.ca, |c| c["phase"] == "Concluded");
    let b_end = until("paid out (B)", &h.cb, |c| c["phase"] == "Concluded");
    assert_eq!(a_end["version"], b_end["version"]);
    assert_eq!(a_end["balance"], b_end["peer_balance"]);
    assert_eq!(a_end["sold_wh"], b_end["bought_wh"]);
    assert_eq!(
        a_end["balance"].as_u64().unwrap() + b_end["balance"].as_u64().unwrap(),
        20_000_000
    );
}

/// A seller A with two towers trading with a buyer B: A's config, A's address, B's config.
struct Homes {
    _root: tempfile::TempDir,
    da: std::path::PathBuf,
    ca: std::path::PathBuf,
    cb: std::path::PathBuf,
    addr_a: String,
    a: Option<common::Proc>,
    b: Option<common::Proc>,
    _procs: Vec<common::Proc>,
}

impl Homes {
    fn start() -> Homes {
        let root = tempfile::tempdir().unwrap();
        let (da, db) = (root.path().join("a"), root.path().join("b"));
        let (node_a, node_b) = (common::init(&da), common::init(&db));
        let (ledger_proc, ledger) = common::ledger(
            &root.path().join("ledger"),
            "127.0.0.1:0",
            &[&node_a, &node_b],
        );
        let mut procs = vec![ledger_proc];
        let mut towers = String::new();
        for name in ["t1", "t2"] {
            let config = common::tower_init(&root.path().join(name), &ledger);
            let (p, addr) = common::spawn(&["watchtower", "--config", config.to_str().unwrap()]);
            procs.push(p);
            towers.push_str(&format!("\n[[towers]]\naddress = \"{addr}\"\n"));
        }
        // A signs nothing beyond a state both towers hold.
        towers.push_str("\n[watchtowers]\nmin_acks = 2\n");
        common::configure(&da, &ledger, &common::meter_file(&da, 0, 100), None);
        let ca = da.join("gridchan.toml");
        let text = std::fs::read_to_string(&ca).unwrap();
        std::fs::write(&ca, format!("{text}{towers}")).unwrap();
        let (a, addr_a) = common::spawn(&["daemon", "--config", ca.to_str().unwrap()]);
        common::wait_for_daemon(&ca);
        common::configure(&db, &ledger, &common::meter_file(&db, 80, 0), Some(&addr_a));
        let cb = db.join("gridchan.toml");
        let (b, _) = common::spawn(&["daemon", "--config", cb.to_str().unwrap()]);
        common::wait_for_daemon(&cb);
        open_channel(&cb, &addr_a, &["--price", "0.2"]);
        Homes {
            _root: root,
            da,
            ca,
            cb,
            addr_a,
            a: Some(a),
            b: Some(b),
            _procs: procs,
        }
    }

    fn version(&self) -> u64 {
        channels(&self.ca)["channels"][0]["version"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Waits until A's channel passed `v` and both towers acknowledged it.
    fn settled_past(&self, v: u64) {
        until("intervals settled", &self.ca, |c| {
            c["version"].as_u64().unwrap_or(0) > v
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let cas = self.ca.to_str().unwrap();
        let target = self.version();
        loop {
            let out = ok(&gridchan(&["tower", "list", "--json", "--config", cas]));
            let t: serde_json::Value = serde_json::from_str(&out).unwrap();
            let behind: Vec<_> = t["towers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| {
                    t["pending"].as_u64().unwrap_or(1) > 0
                        || t["acknowledged"].as_u64().unwrap_or(0) == 0
                })
                .collect();
            if behind.is_empty() && self.version() >= target {
                return;
            }
            assert!(Instant::now() < deadline, "towers behind: {t}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop_a(&mut self) {
        self.a.take().unwrap().terminate();
    }

    /// Starts A again (after a restore), and B again pointed at A's new port.
    fn start_a(&mut self) {
        let (a, addr) = common::spawn(&["daemon", "--config", self.ca.to_str().unwrap()]);
        common::wait_for_daemon(&self.ca);
        self.a = Some(a);
        self.b.take().unwrap().terminate();
        let text = std::fs::read_to_string(&self.cb)
            .unwrap()
            .replace(&self.addr_a, &addr);
        std::fs::write(&self.cb, text).unwrap();
        self.addr_a = addr;
        let (b, _) = common::spawn(&["daemon", "--config", self.cb.to_str().unwrap()]);
        common::wait_for_daemon(&self.cb);
        self.b = Some(b);
    }

    /// A's daemon refuses to start; what it said.
    fn refused(&self) -> String {
        let out = gridchan(&["daemon", "--config", self.ca.to_str().unwrap()]);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    fn restore(&self) -> String {
        ok(&gridchan(&[
            "restore",
            "--config",
            self.ca.to_str().unwrap(),
        ]))
    }
}

/// Each damage a gateway's disk does over the years, one after another on one home: a clear
/// line that names the file or the channel and what to do, the daemon never trading on what it
/// forgot, and a restore that brings the channel back.
#[test]
fn every_damage_to_the_channel_store_is_said_and_restored() {
    let mut h = Homes::start();
    let store = h.da.join("data").join("channels.sqlite");
    let sidecars = |p: &std::path::Path| {
        for ext in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", p.display()));
        }
    };
    // A copy of the store from a few intervals back, to roll back to (a lost write-ahead log
    // after a crash leaves the store where its last checkpoint was).
    h.settled_past(2);
    h.stop_a();
    let old = h.da.join("old.sqlite");
    std::fs::copy(&store, &old).unwrap();
    let old_version = {
        h.start_a();
        let v = h.version();
        h.settled_past(v + 3);
        h.stop_a();
        v
    };
    // Rolled back.
    std::fs::copy(&old, &store).unwrap();
    sidecars(&store);
    let line = h.refused();
    assert!(
        line.contains(&format!("at version {old_version} in the channel store")),
        "{line}"
    );
    assert!(line.contains("gridchan restore"), "{line}");
    assert!(h.restore().contains("restored 1 channel(s)"));
    h.start_a();
    h.settled_past(h.version());
    h.stop_a();
    // Cut to 0 bytes (a failing SD card): an empty store forgot the channel.
    std::fs::write(&store, b"").unwrap();
    sidecars(&store);
    let line = h.refused();
    assert!(line.contains("missing from the channel store"), "{line}");
    assert!(h.restore().contains("restored 1 channel(s)"));
    h.start_a();
    h.settled_past(h.version());
    h.stop_a();
    // Damaged pages behind an intact header: the integrity check at start says so.
    let mut bytes = std::fs::read(&store).unwrap();
    for b in bytes.iter_mut().skip(4096) {
        *b = 0xa5;
    }
    std::fs::write(&store, &bytes).unwrap();
    sidecars(&store);
    let line = h.refused();
    assert!(line.contains(&store.display().to_string()), "{line}");
    assert!(line.contains("move it aside"), "{line}");
    // Garbled: the file is named, and what to do.
    std::fs::write(&store, vec![0x5a; 64 * 1024]).unwrap();
    sidecars(&store);
    let line = h.refused();
    assert!(line.contains(&store.display().to_string()), "{line}");
    assert!(
        line.contains("move it aside, then `gridchan restore"),
        "{line}"
    );
    // Restore will not write over it either.
    let out = gridchan(&["restore", "--config", h.ca.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("move it aside"));
    std::fs::rename(&store, h.da.join("garbled.sqlite")).unwrap();
    assert!(h.restore().contains("restored 1 channel(s)"));
    h.start_a();
    let v = h.version();
    until("trading after every damage", &h.ca, |c| {
        c["phase"] == "Open"
            && c["version"].as_u64().unwrap_or(0) > v + 2
            && c["peer_connected"] == true
    });
}

/// `gridchan restore` on a gateway with no towers, and with towers that do not answer: one line
/// each, nothing written.
#[test]
fn restore_without_towers_or_with_none_answering_says_so_in_one_line() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a");
    common::init(&dir);
    // A ledger nobody listens at either (a key of ours, a port bound and closed again).
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let key = common::init(&root.path().join("t"));
    let nowhere = format!("{key}@127.0.0.1:{port}");
    common::configure(&dir, &nowhere, &common::meter_file(&dir, 0, 0), None);
    let config = dir.join("gridchan.toml");
    let out = gridchan(&["restore", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let line = String::from_utf8_lossy(&out.stderr);
    assert!(line.contains("names no [[towers]]"), "{line}");
    assert_eq!(line.trim().lines().count(), 1, "{line}");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[[towers]]\naddress = \"{nowhere}\"\n"),
    )
    .unwrap();
    let out = gridchan(&["restore", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no tower answered: nothing restored"), "{err}");
    assert!(!dir.join("data").join("channels.sqlite").exists() || channels_empty(&config));
}

fn channels_empty(config: &std::path::Path) -> bool {
    let data = config
        .parent()
        .unwrap()
        .join("data")
        .join("channels.sqlite");
    let store = gridchan_gateway::store::SqliteStore::open(&data).unwrap();
    gridchan_channel::ChannelStore::load(&store)
        .unwrap()
        .is_empty()
}
