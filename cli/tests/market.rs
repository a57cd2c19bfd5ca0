//! A neighbourhood market made of processes, through the command line: `gridchan market init`
//! and `gridchan market --config` run the market node; two home gateways `market join` it,
//! trade through it every interval (one exports, one imports) and `market leave`.

mod common;

use common::*;

/// The market node's config, set up like the homes' (this ledger, one-second intervals).
fn configure_market(dir: &std::path::Path, ledger: &str) -> std::path::PathBuf {
    let path = dir.join("market.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("PUBKEY@127.0.0.1:7400", ledger)
        .replace("interval_seconds = 900", "interval_seconds = 1");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn two_homes_join_a_market_trade_through_it_and_leave() {
    let root = tempfile::tempdir().unwrap();
    let (dm, da, db) = (
        root.path().join("market"),
        root.path().join("a"),
        root.path().join("b"),
    );
    let out = gridchan(&[
        "market",
        "init",
        "--dir",
        dm.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let market_node = text
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_string();
    assert!(text.contains("market "), "{text}");
    // Init never overwrites.
    let again = gridchan(&["market", "init", "--dir", dm.to_str().unwrap()]);
    assert!(!again.status.success());
    let (node_a, node_b) = (init(&da), init(&db));
    let (_ledger, ledger_addr) = ledger(
        &root.path().join("ledger"),
        "127.0.0.1:0",
        &[&market_node, &node_a, &node_b],
    );
    let market_config = configure_market(&dm, &ledger_addr);
    let (_market, market_addr) = spawn(&["market", "--config", market_config.to_str().unwrap()]);
    wait_for_daemon(&market_config);
    // Home A exports 100 Wh an interval, home B imports 80: no neighbour channels.
    configure(&da, &ledger_addr, &meter_file(&da, 0, 100), None);
    configure(&db, &ledger_addr, &meter_file(&db, 80, 0), None);
    let (ca, cb) = (da.join("gridchan.toml"), db.join("gridchan.toml"));
    let (_a, _) = start_daemon(&ca);
    let (_b, _) = start_daemon(&cb);
    for config in [&ca, &cb] {
        let out = gridchan(&[
            "market",
            "join",
            &market_addr,
            "--deposit",
            "10",
            "--market-deposit",
            "5",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let joined: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(joined["result"], "joined");
        assert!(
            joined["terms"].as_str().unwrap().starts_with("market "),
            "{joined}"
        );
    }
    // A sells 80 Wh an interval through the market (B's import is all the demand); B buys it.
    let sold = until("A sold through the market", &ca, |c| {
        c["phase"] == "Open" && c["sold_wh"].as_u64().unwrap_or(0) >= 160
    });
    assert_eq!(sold["sold_wh"].as_u64().unwrap() % 80, 0, "{sold}");
    until("B bought through the market", &cb, |c| {
        c["bought_wh"].as_u64().unwrap_or(0) >= 160
    });
    // The market node holds both members' channels.
    let list = channels(&market_config);
    assert_eq!(list["channels"].as_array().unwrap().len(), 2, "{list}");
    // Joining a gateway that runs no market says so in one line.
    let not_a_market = gridchan(&[
        "market",
        "join",
        &format!("{}@{}", node_b, "127.0.0.1:1"),
        "--deposit",
        "1",
        "--config",
        ca.to_str().unwrap(),
    ]);
    assert!(!not_a_market.status.success());
    let err = String::from_utf8_lossy(&not_a_market.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Leaving closes A's market channel cooperatively.
    let out = gridchan(&[
        "market",
        "leave",
        "--json",
        "--config",
        ca.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until("A's market channel concluded", &ca, |c| {
        c["phase"] == "Concluded"
    });
    let again = gridchan(&["market", "leave", "--config", ca.to_str().unwrap()]);
    assert!(!again.status.success(), "a member of no market now");
}
