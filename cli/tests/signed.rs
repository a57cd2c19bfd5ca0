//! Signed readings between two daemons (`specs/readings.md`): A's meter signs its readings
//! (`[signing_meter]`), B opens a channel whose terms name A's meter (`--peer-meter`, or
//! `[[peers]] meter`). With the right key B buys from A; with a key that is not A's meter, A refuses the
//! channel at opening and says why; an owner who requires signed readings refuses a neighbour's
//! word; `--evidence signed` without a signing meter is refused with what to do.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    channels, configure, init, ledger, meter_file, open_channel, spawn_logging, wait_for_daemon,
};

/// A (exporting 100 Wh a second, its meter signing with `meter.key`, `accept_a` appended to its
/// config) and B (importing 80 Wh, naming A's meter as `pinned`); B opens the channel with
/// `terms`. Returns B's config and the running processes.
fn neighbours(
    root: &Path,
    pinned: impl FnOnce(&str) -> Option<String>,
    accept_a: &str,
) -> (std::path::PathBuf, String, String, Vec<common::Proc>) {
    let (da, db) = (root.join("a"), root.join("b"));
    let (node_a, node_b) = (init(&da), init(&db));
    let (ledger_proc, ledger_addr) =
        ledger(&root.join("ledger"), "127.0.0.1:0", &[&node_a, &node_b]);
    configure(&da, &ledger_addr, &meter_file(&da, 0, 100), None);
    let ca = da.join("gridchan.toml");
    let text = std::fs::read_to_string(&ca)
        .unwrap()
        .replace("evidence = \"any\"", accept_a);
    std::fs::write(
        &ca,
        format!("{text}\n[signing_meter]\nkey = \"meter.key\"\n"),
    )
    .unwrap();
    let log_a = std::fs::File::create(da.join("daemon.log")).unwrap();
    let (a, addr_a) = spawn_logging(&["daemon", "--config", ca.to_str().unwrap()], log_a);
    wait_for_daemon(&ca);
    // The meter key A's daemon made and signs with, as an installer would read it off A.
    let meter = gridchan_cli::keys::load(&da.join("meter.key")).unwrap();
    let meter = hex::encode(meter.id().to_bytes());
    configure(&db, &ledger_addr, &meter_file(&db, 80, 0), Some(&addr_a));
    let cb = db.join("gridchan.toml");
    if let Some(pinned) = pinned(&meter) {
        let mut text = std::fs::read_to_string(&cb).unwrap();
        text.push_str(&format!("meter = \"{pinned}\"\n"));
        std::fs::write(&cb, text).unwrap();
    }
    let log_b = db.join("daemon.log");
    let (b, _) = spawn_logging(
        &["daemon", "--config", cb.to_str().unwrap()],
        std::fs::File::create(&log_b).unwrap(),
    );
    wait_for_daemon(&cb);
    (cb, addr_a, meter, vec![ledger_proc, a, b])
}

/// B proposes the channel and it is refused: the line `channel open` ends with.
fn refused(cb: &Path, addr_a: &str, terms: &[&str]) -> String {
    let mut args = vec!["channel", "open", addr_a, "--deposit", "10"];
    args.extend_from_slice(terms);
    args.extend(["--config", cb.to_str().unwrap()]);
    let out = common::gridchan(&args);
    assert!(!out.status.success(), "{out:?}");
    // A progress line while it waits, then the one line of the refusal.
    let err = String::from_utf8(out.stderr).unwrap();
    let last = err.trim().lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("error: "), "{err}");
    last
}

/// Waits (60 s at most) for B's only channel to satisfy `done`.
fn until(cb: &Path, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = channels(cb);
        if done(&list["channels"][0]) {
            return list["channels"][0].clone();
        }
        assert!(Instant::now() < deadline, "{what}: {list}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_channel_whose_terms_name_the_sellers_meter_buys_from_it() {
    let root = tempfile::tempdir().unwrap();
    // B's config names no meter: the channel's terms alone bind A to its meter.
    let (cb, addr_a, meter, _procs) = neighbours(root.path(), |_| None, "evidence = \"any\"");
    open_channel(&cb, &addr_a, &["--price", "0.2", "--peer-meter", &meter]);
    let channel = until(&cb, "B never bought", |c| {
        c["bought_wh"].as_u64().unwrap_or(0) > 0
    });
    // The terms name A's meter (B's readings are B's word: B has no signing meter).
    let evidence = channel["evidence"].as_str().unwrap();
    assert!(evidence.starts_with("theirs signed by meter"), "{evidence}");
    let out = common::gridchan(&["status", "--config", cb.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("; readings signed by meter "), "{text}");
}

#[test]
fn a_proposal_naming_another_meter_as_the_sellers_is_refused_at_opening() {
    let root = tempfile::tempdir().unwrap();
    // B names another meter (a key that is not A's meter's).
    let other = gridchan_channel::Signer::new(&[0x77; 32], &[0; 32]).unwrap();
    let other = hex::encode(other.id().to_bytes());
    let (cb, addr_a, _, _procs) =
        neighbours(root.path(), |_| Some(other.clone()), "evidence = \"any\"");
    let why = refused(&cb, &addr_a, &["--price", "0.2"]);
    assert!(
        why.contains(&format!("names meter {other} as this gateway's")),
        "{why}"
    );
}

#[test]
fn an_owner_who_requires_signed_readings_refuses_a_neighbours_word() {
    let root = tempfile::tempdir().unwrap();
    // B knows no meter of A's; A is B's neighbour here, so B's proposal leaves both readings
    // their word... and A (requiring signed readings of its proposers) refuses it.
    let (cb, addr_a, _, _procs) = neighbours(root.path(), |_| None, "evidence = \"signed\"");
    // `--evidence signed` without a signing meter here: refused before anything is proposed.
    let err = refused(&cb, &addr_a, &["--evidence", "signed"]);
    assert!(err.contains("add a [signing_meter] section"), "{err}");
    let err = refused(&cb, &addr_a, &["--peer-meter", "nope"]);
    assert!(err.contains("not a meter key"), "{err}");
    let why = refused(&cb, &addr_a, &["--price", "0.2"]);
    assert!(why.contains("your word alone"), "{why}");
}
