//! Island mode, with processes: the ledger node dies in the middle of a run; the two gateways
//! keep settling with each other; a cooperative close made meanwhile waits in the durable
//! ledger queue; the ledger comes back (same data, same address) and the close is paid out.

mod common;

use std::time::{Duration, Instant};

use common::{gridchan, init, ledger, open_channel, start_neighbours, until};

#[test]
fn gateways_keep_trading_without_the_ledger_and_settle_when_it_returns() {
    let root = tempfile::tempdir().unwrap();
    let (da, db) = (root.path().join("a"), root.path().join("b"));
    let (node_a, node_b) = (init(&da), init(&db));
    let ledger_dir = root.path().join("ledger");
    let funded = [node_a.as_str(), node_b.as_str()];
    let (ledger_proc, ledger_addr) = ledger(&ledger_dir, "127.0.0.1:0", &funded);
    let (ca, cb) = (da.join("gridchan.toml"), db.join("gridchan.toml"));
    let (_a, _b, addr_b) = start_neighbours(&da, &db, &ledger_addr);
    open_channel(&ca, &addr_b, &["--price", "0.2", "--json"]);
    let before = until("trading", &ca, |c| {
        c["phase"] == "Open" && c["sold_wh"].as_u64().unwrap_or(0) >= 160
    });

    // The ledger dies (kill -9).
    drop(ledger_proc);
    let sold = before["sold_wh"].as_u64().unwrap();
    until("three more intervals settled without a ledger", &ca, |c| {
        c["sold_wh"].as_u64().unwrap_or(0) >= sold + 240
    });
    // A closes: both sign the final state; paying it out waits for the ledger.
    let id = before["channel"].as_str().unwrap()[..8].to_string();
    let out = gridchan(&["channel", "close", &id, "--config", ca.to_str().unwrap()]);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{progress}");
    // Following the close stops at the ledger, saying why, instead of waiting it out.
    assert!(
        progress.contains("the ledger does not answer"),
        "{progress}"
    );
    until("closed cooperatively, off the ledger", &ca, |c| {
        c["phase"] == "ClosedCooperatively"
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = gridchan(&["status", "--json", "--config", ca.to_str().unwrap()]);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if s["ledger_pending"].as_u64().unwrap_or(0) >= 1 && s["ledger_error"].is_string() {
            // The status answers while the ledger is away, and says it cannot tell the balance.
            assert!(
                s["balance"].is_null() && s["balance_error"].is_string(),
                "{s}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the close never waited in the queue: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The ledger returns on the same address, from its files.
    let port = ledger_addr.rsplit(':').next().unwrap();
    let (_ledger, again) = ledger(&ledger_dir, &format!("127.0.0.1:{port}"), &funded);
    assert_eq!(again, ledger_addr, "same key, same address");
    let closed = until("paid out once the ledger is back (A)", &ca, |c| {
        c["phase"] == "Concluded"
    });
    until("paid out (B)", &cb, |c| c["phase"] == "Concluded");
    assert!(closed["sold_wh"].as_u64().unwrap() >= sold + 240);
    // Then the queue empties (the payout's withdrawal is the last thing in it).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = gridchan(&["status", "--json", "--config", ca.to_str().unwrap()]);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if s["ledger_pending"] == 0 {
            // A's account holds what it kept out of the channel and its payout, which its
            // sales made more than it put in.
            let balance: f64 = s["balance"].as_str().unwrap().parse().unwrap();
            assert!(balance > 100.0, "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "the queue never emptied: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
