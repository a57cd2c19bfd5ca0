//! `gridchan report`: a day's statement equals the sum of that day's settled intervals that
//! `channel show --json` lists, for energy and money; its CSVs carry the same figures, and every
//! day line names the state that proves it.

mod common;

use std::time::{Duration, Instant};

use common::{channels, gridchan, open_channel};

fn run(args: &[&str]) -> String {
    let out = gridchan(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_days_statement_is_the_sum_of_its_settled_intervals() {
    let root = tempfile::tempdir().unwrap();
    let mut pair = common::seller_and_buyer(root.path(), "");
    let (cb, addr_a, node_a) = (pair.cb.clone(), pair.addr_a.clone(), pair.node_a.clone());
    open_channel(&cb, &addr_a, &["--price", "0.2"]);
    // A few intervals traded; then A stops, and B trades no more.
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        let list = channels(&cb);
        let c = &list["channels"][0];
        if c["bought_wh"].as_u64().unwrap_or(0) >= 3 * 80 {
            break c["channel"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "B never bought: {list}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // (The processes: the ledger, A, B.)
    drop(pair.procs.remove(1));
    // B's grid prices, for its savings (read by `report`, not by the running daemon).
    let text = std::fs::read_to_string(&cb).unwrap();
    std::fs::write(
        &cb,
        format!("{text}\n[grid]\nretail = \"flat 0.30\"\nfeed_in = \"flat 0.08\"\n"),
    )
    .unwrap();
    // The day (B's time zone) of its first settled interval (1-second intervals here).
    let config = gridchan_gateway::config::Config::load(&cb).unwrap();
    let zone = config.metering.zone().unwrap();
    let cfg = cb.to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown: serde_json::Value = serde_json::from_str(&run(&[
            "channel",
            "show",
            &id,
            "--intervals",
            "1000",
            "--json",
            "--config",
            cfg,
        ]))
        .unwrap();
        let me = shown["channel"]["me"].as_str().unwrap().to_string();
        let trades = shown["recent"].as_array().unwrap();
        let day_of = |interval: u64| {
            jiff::Timestamp::from_second(interval as i64)
                .unwrap()
                .to_zoned(zone.clone())
                .date()
                .to_string()
        };
        let day = day_of(
            trades
                .iter()
                .map(|t| t["interval"].as_u64().unwrap())
                .min()
                .unwrap(),
        );
        let of_day: Vec<&serde_json::Value> = trades
            .iter()
            .filter(|t| day_of(t["interval"].as_u64().unwrap()) == day)
            .collect();
        let bought: u64 = of_day
            .iter()
            .filter(|t| t["seller"] != me.as_str())
            .map(|t| t["energy_wh"].as_u64().unwrap())
            .sum();
        let paid: u64 = of_day
            .iter()
            .filter(|t| t["seller"] != me.as_str())
            .map(|t| t["amount"].as_u64().unwrap())
            .sum();
        let last = of_day
            .iter()
            .map(|t| t["version"].as_u64().unwrap())
            .max()
            .unwrap();
        let s: serde_json::Value =
            serde_json::from_str(&run(&["report", "--day", &day, "--json", "--config", cfg]))
                .unwrap();
        let settled_since = s["bought_wh"].as_u64() != Some(bought);
        if settled_since {
            // An interval B settled between the two reads (or not yet in its store): again.
            assert!(Instant::now() < deadline, "report {s} vs shown {bought} Wh");
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        assert_eq!(s["paid"].as_u64(), Some(paid), "{s}");
        // Bought at 0.20 a kWh rather than 0.30 from the grid: 0.10 a kWh saved, rounded down
        // per interval in the buyer's favour.
        let saved = s["saved"].as_i64().unwrap();
        assert!(saved > 0 && saved <= (bought * 100) as i64, "{s}");
        assert_eq!(s["sold_wh"], 0, "{s}");
        let lines = s["days"].as_array().unwrap();
        assert_eq!(lines.len(), 1, "one neighbour, one day: {s}");
        let line = &lines[0];
        assert_eq!(line["date"], day.as_str());
        assert_eq!(line["channel"], id.as_str());
        assert_eq!(line["counterparty"], format!("neighbour {node_a}").as_str());
        assert_eq!(line["intervals"].as_u64(), Some(of_day.len() as u64));
        assert_eq!(line["last_version"].as_u64(), Some(last));
        assert_eq!(
            line["last_state_digest"].as_str().unwrap().len(),
            64,
            "{line}"
        );
        // The same from the config's folder, naming the config by a relative path.
        let relative = std::process::Command::new(env!("CARGO_BIN_EXE_gridchan"))
            .current_dir(cb.parent().unwrap())
            .args([
                "report",
                "--day",
                &day,
                "--json",
                "--config",
                "gridchan.toml",
            ])
            .output()
            .unwrap();
        assert!(
            relative.status.success(),
            "{}",
            String::from_utf8_lossy(&relative.stderr)
        );
        let again: serde_json::Value = serde_json::from_slice(&relative.stdout).unwrap();
        assert_eq!(again["bought_wh"], s["bought_wh"], "{again}");
        // The same figures as CSV, and the quarter-hour balances interval by interval.
        let csv = run(&["report", "--day", &day, "--csv", "--config", cfg]);
        let mut rows = csv.lines();
        assert!(rows
            .next()
            .unwrap()
            .starts_with("date,counterparty,channel,"));
        let row: Vec<&str> = rows.next().unwrap().split(',').collect();
        assert_eq!(row[4], bought.to_string(), "{csv}");
        assert_eq!(row[6], paid.to_string(), "{csv}");
        let quarters = run(&["report", "--day", &day, "--quarter-hours", "--config", cfg]);
        let rows: Vec<Vec<&str>> = quarters
            .lines()
            .skip(1)
            .map(|l| l.split(',').collect())
            .collect();
        let received: Vec<u64> = rows.iter().map(|r| r[4].parse().unwrap()).collect();
        assert_eq!(received.iter().sum::<u64>(), bought, "{quarters}");
        assert_eq!(
            received.iter().filter(|r| **r > 0).count(),
            of_day.len(),
            "{quarters}"
        );
        // B's meter imports 80 Wh every interval, as the daemon kept it.
        assert!(rows.iter().any(|r| !r[2].is_empty()), "{quarters}");
        assert!(
            rows.iter()
                .all(|r| r[2].is_empty() || (r[2] == "80" && r[3] == "0")),
            "{quarters}"
        );
        assert!(s["metered_import_wh"].as_u64().unwrap() >= bought, "{s}");
        break;
    }
    // A gateway whose daemon never ran has no store: one line saying so.
    let fresh = root.path().join("fresh");
    common::init(&fresh);
    let out = gridchan(&[
        "report",
        "--day",
        "2026-11-03",
        "--config",
        fresh.join("gridchan.toml").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("has this gateway's daemon run?"), "{err}");
    // A period that is neither a month nor a day: one line.
    let out = gridchan(&["report", "--month", "November", "--config", cfg]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("is not a month"), "{err}");
}
