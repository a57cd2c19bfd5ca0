//! The whole product by hand, as processes: a ledger node, two gateway daemons configured with
//! `gridchan init`, and `gridchan channel` commands against them.

mod common;

use common::{gridchan, init, ledger, open_channel, start_neighbours, until};

#[test]
fn two_daemons_trade_and_close_through_the_cli() {
    let root = tempfile::tempdir().unwrap();
    let (da, db) = (root.path().join("a"), root.path().join("b"));
    let (node_a, node_b) = (init(&da), init(&db));
    let ledger_dir = root.path().join("ledger");
    let (_ledger, ledger_addr) = ledger(&ledger_dir, "127.0.0.1:0", &[&node_a, &node_b]);
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
    // The human table.
    let table = gridchan(&["channel", "list", "--config", cb.to_str().unwrap()]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("bought Wh"), "{text}");
    let id = trading["channel"].as_str().unwrap()[..8].to_string();
    // `show` lists the recent intervals with energy and money.
    let show = gridchan(&["channel", "show", &id, "--config", cb.to_str().unwrap()]);
    let text = String::from_utf8(show.stdout).unwrap();
    assert!(
        text.contains("sold     80 Wh at 0.200000/kWh = 0.016000"),
        "{text}"
    );
    assert!(text.contains("tariff: tou +01:00 0-24=0.200000"), "{text}");
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
}
