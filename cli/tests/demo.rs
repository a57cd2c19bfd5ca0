//! `gridchan demo` with small settings: three homes, part of a summer day, fast. The demo's own
//! checks (money conserved, every channel paid at its newest state, energy settled within the
//! metered, the dispute refuted) must all pass, and its JSON must say so.

mod common;

use common::gridchan;

/// Runs the demo small (three homes, 64 intervals of 300 ms: a debug build on a busy 2-core
/// machine keeps up) in `data` with `more` options, and
/// returns its JSON summary once every one of its checks passed.
fn small_demo(data: &std::path::Path, more: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "demo",
        "--homes",
        "3",
        "--intervals",
        "64",
        "--interval-ms",
        "300",
        "--json",
        "--data",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(more);
    let out = gridchan(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // Which checks failed, from the JSON summary (stderr has only the log).
        let failed: Vec<String> = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|s| s["checks"].as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["ok"] != true)
            .map(|c| c.to_string())
            .collect();
        panic!("failed checks: {failed:?}\n{stderr}");
    }
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = s["checks"].as_array().unwrap();
    assert!(checks.len() >= 5, "{checks:?}");
    for c in checks {
        assert_eq!(c["ok"], true, "{c}");
    }
    assert_eq!(s["homes"].as_array().unwrap().len(), 3);
    let dispute = &s["dispute"];
    assert!(dispute.is_object(), "a dispute was staged: {s}");
    assert!(dispute["paid_version"].as_u64() > dispute["registered_version"].as_u64());
    let traded: u64 = s["homes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["sold_to_neighbours_wh"].as_u64().unwrap())
        .sum();
    assert!(traded > 0, "a summer morning has solar to trade");
    s
}

/// The market's part of a summary: every book checked, the wrong one refused, local trade at
/// the pooled bound, the market node's books balanced (all among the checks that passed).
fn market_checks_ran(s: &serde_json::Value) {
    let m = &s["market"];
    assert!(m.is_object(), "the market ran: {s}");
    assert!(m["books"].as_u64().unwrap() > 0);
    assert!(m["local_share_percent"].as_f64().unwrap() > 50.0, "{m}");
    let names: Vec<&str> = s["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["what"].as_str().unwrap())
        .collect();
    for want in [
        "every book checked by every member before it signed",
        "the market node's wrong clearing refused by every member",
        "local trade equals the pooled bound",
        "the market node's books balance",
        "energy a home's meter never signed is never paid for",
    ] {
        assert!(names.contains(&want), "{want}: {names:?}");
    }
    // The overbilling home's inflated orders were refused against its meter's signed readings.
    let b = &s["overbilling"];
    assert!(b["orders_refused"].as_u64().unwrap() >= 1, "{b}");
    assert_eq!(b["market_paid_wh"], 0, "{b}");
}

#[test]
fn the_demo_runs_its_day_and_its_checks_pass() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let s = small_demo(&data, &[]);
    assert_eq!(s["ledger"], "local");
    market_checks_ran(&s);
    assert!(data.join("market/channels.sqlite").exists());
    // Everything it ran on is in the folder it was given.
    assert!(data.join("ledger").exists());
    assert!(data.join("tower.sqlite").exists());
    assert!(data.join("home-01/channels.sqlite").exists());
    // A folder in use is refused with one line.
    let again = gridchan(&["demo", "--data", data.to_str().unwrap()]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not empty"), "{err}");
}

/// The same neighbourhood on the adjudicator contract, on a local anvil chain: the same
/// checks pass, the money counted on the chain (the homes' tokens and the adjudicator's).
#[test]
fn the_ring_topology_trades_between_neighbours_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = small_demo(&dir.path().join("demo"), &["--topology", "ring"]);
    assert!(s["market"].is_null(), "no market: {s}");
    // Three homes in a ring: three channels, each between two homes.
    let channels = s["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 3);
    assert!(channels
        .iter()
        .all(|c| c["homes"].as_array().unwrap().iter().all(|h| h != "market")));
    // The overbilling home's neighbours left it out: its claims were not what its meter signed.
    let b = &s["overbilling"];
    assert!(b["left_out_by_neighbours"].as_u64().unwrap() >= 1, "{b}");
}

#[test]
fn the_demo_runs_on_the_evm_adjudicator_too() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let s = small_demo(&data, &["--ledger", "evm"]);
    assert_eq!(s["ledger"], "evm");
    market_checks_ran(&s);
    assert!(!data.join("ledger").exists(), "no local ledger ran");
    assert!(data.join("home-01/channels.sqlite").exists());
}

/// Without anvil, an EVM demo stops at once, in one line that says which option needs what.
#[test]
fn an_evm_demo_without_anvil_says_so_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gridchan"))
        .args(["demo", "--ledger", "evm", "--data"])
        .arg(dir.path().join("demo"))
        .env("GRIDCHAN_ANVIL", dir.path().join("no-anvil-here"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: --ledger evm: cannot start"),
        "{err}"
    );
}

#[test]
fn ctrl_c_stops_the_demo_in_one_line_and_leaves_no_temporary_folder() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_gridchan"))
        .args(["demo", "--homes", "2", "--interval-ms", "200"])
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut demo = common::Proc(child);
    let mut err = std::io::BufReader::new(demo.0.stderr.take().unwrap());
    // Once the channels are funded, its services and files are all up.
    let mut seen = String::new();
    while !seen.contains("channels funded") {
        let mut line = String::new();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "the demo ended: {seen}"
        );
        seen.push_str(&line);
    }
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "its folder"
    );
    let pid = demo.0.id() as libc::pid_t;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let status = demo.0.wait().unwrap();
    assert!(!status.success(), "an interrupted demo is not a success");
    let last = rest.trim_end().lines().last().unwrap_or_default();
    assert_eq!(
        last, "error: SIGINT: the demo stopped before its end",
        "{rest}"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "the temporary folder is gone"
    );
}
