//! Consent to terms, through the binary: a gateway whose owner has never met the neighbour
//! refuses terms outside its `[accept]` limits at once (a deposit it was never asked for, an
//! absurd price), holds a proposal within them for its owner, who accepts or rejects it; the
//! opener sees the answer, and can withdraw a proposal nobody answered.

mod common;

use std::path::Path;

use common::{configure, gridchan, init, ledger, meter_file, start_daemon};

/// `gridchan ARGS --config CONFIG`; returns (success, stdout, stderr).
fn run(config: &Path, args: &[&str]) -> (bool, String, String) {
    let mut all = args.to_vec();
    all.extend(["--config", config.to_str().unwrap()]);
    let out = gridchan(&all);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(config: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, out, err) = run(config, &all);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// Polls `f` on `channel list --json` of `config`, for at most 30 s.
fn until(what: &str, config: &Path, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let list = json(config, &["channel", "list", "--all"]);
        if f(&list) {
            return list;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {list}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A's channel `id` as its list shows it.
fn channel<'a>(list: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    list["channels"]
        .as_array()?
        .iter()
        .find(|c| c["channel"].as_str() == Some(id))
}

#[test]
fn a_neighbours_terms_are_checked_and_its_proposal_waits_for_the_owner() {
    let root = tempfile::tempdir().unwrap();
    let (da, db) = (root.path().join("a"), root.path().join("b"));
    let (node_a, node_b) = (init(&da), init(&db));
    let (_ledger, ledger_addr) = ledger(
        &root.path().join("ledger"),
        "127.0.0.1:0",
        &[&node_a, &node_b],
    );
    // B asks its owner (the template's default); A takes anything within its limits.
    configure(&db, &ledger_addr, &meter_file(&db, 80, 0), None);
    let cb = db.join("gridchan.toml");
    let text = std::fs::read_to_string(&cb)
        .unwrap()
        .replace("from = \"anyone\"", "from = \"ask\"");
    std::fs::write(&cb, text).unwrap();
    let (_b, addr_b) = start_daemon(&cb);
    configure(&da, &ledger_addr, &meter_file(&da, 0, 100), Some(&addr_b));
    let ca = da.join("gridchan.toml");
    let (_a, _) = start_daemon(&ca);

    // Terms outside B's limits are refused at once, and A's open says which and why.
    let open = |terms: &[&str]| {
        let mut args = vec!["channel", "open", addr_b.as_str(), "--deposit", "5"];
        args.extend_from_slice(terms);
        run(&ca, &args)
    };
    let (ok, _, err) = open(&["--peer-deposit", "89", "--price", "0.2"]);
    assert!(!ok);
    assert!(
        err.contains("the neighbour refused the channel")
            && err.contains("it asks this gateway to deposit 89.000000"),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: the neighbour refused the channel")),
        "one line says what was wrong: {err}"
    );
    let (ok, _, err) = open(&["--peer-deposit", "5", "--price", "1000000"]);
    assert!(!ok);
    assert!(err.contains("prices from"), "{err}");

    // Within the limits: the proposal waits for B's owner, who sees every term.
    // (`--json` returns at once; without it, `open` waits a while for the answer.)
    let propose = || {
        let opened = json(
            &ca,
            &[
                "channel",
                "open",
                &addr_b,
                "--deposit",
                "5",
                "--peer-deposit",
                "2",
                "--price",
                "0.2",
            ],
        );
        let id = opened["channel"].as_str().unwrap().to_string();
        let offers = until("B holds the proposal", &cb, |l| {
            l["offers"].as_array().is_some_and(|o| o.len() == 1)
        });
        (id, offers)
    };
    let (first, offers) = propose();
    let offer = &offers["offers"][0];
    assert_eq!(offer["channel"], first.as_str());
    assert_eq!(offer["deposit"], 2_000_000);
    assert_eq!(offer["peer_deposit"], 5_000_000);
    assert_eq!(offer["peer"], node_a.as_str());
    let (_, text, _) = run(&cb, &["channel", "list"]);
    assert!(text.contains("waiting for your answer"), "{text}");
    assert!(
        text.contains(&format!("gridchan channel accept {}", &first[..8])),
        "{text}"
    );
    let status = json(&cb, &["status"]);
    assert_eq!(status["offers"], 1);
    let list = json(&ca, &["channel", "list"]);
    assert_eq!(channel(&list, &first).unwrap()["phase"], "AwaitingAccept");

    // B's owner rejects it: A hears why.
    let (ok, _, err) = run(
        &cb,
        &[
            "channel",
            "reject",
            &first[..8],
            "--reason",
            "not before I have met you",
        ],
    );
    assert!(ok, "{err}");
    let list = until("A hears the rejection", &ca, |l| {
        channel(l, &first).is_some_and(|c| !c["open_refused"].is_null())
    });
    let why = channel(&list, &first).unwrap()["open_refused"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        why.contains("its owner declined: not before I have met you"),
        "{why}"
    );
    // An unknown proposal is one clear line.
    let (ok, _, err) = run(&cb, &["channel", "accept", "ffffffff"]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("no proposal ffffffff waits for an answer"),
        "{err}"
    );

    // Proposed again and accepted: both sign version 0, deposit, and trade.
    let (second, _) = propose();
    let (ok, _, err) = run(&cb, &["channel", "accept", &second[..8]]);
    assert!(ok, "{err}");
    until("trading", &ca, |l| {
        channel(l, &second)
            .is_some_and(|c| c["phase"] == "Open" && c["sold_wh"].as_u64().unwrap_or(0) > 0)
    });

    // A third proposal nobody answers: A withdraws it, and B's owner no longer sees it.
    let (third, _) = propose();
    let (ok, _, err) = run(&ca, &["channel", "cancel", &third[..8]]);
    assert!(ok, "{err}");
    until("B's owner no longer sees it", &cb, |l| {
        l["offers"].as_array().is_some_and(|o| o.is_empty())
    });
    // Paid out (here: withdrawn before funding), it leaves the list; --all shows it.
    let list = json(&ca, &["channel", "list"]);
    assert!(channel(&list, &third).is_none(), "{list}");
    assert!(list["hidden"].as_u64().unwrap() >= 1, "{list}");
    let (_, text, _) = run(&ca, &["channel", "list"]);
    assert!(
        text.contains("closed channel(s) not shown: --all lists them"),
        "{text}"
    );
    let list = json(&ca, &["channel", "list", "--all"]);
    let withdrawn = channel(&list, &third).unwrap();
    assert_eq!(withdrawn["phase"], "Concluded");
    assert_eq!(withdrawn["withdrawn"], true);
    // A channel that was accepted cannot be withdrawn: it is closed instead.
    let (ok, _, err) = run(&ca, &["channel", "cancel", &second[..8]]);
    assert!(!ok);
    assert!(err.contains("only before the neighbour accepts"), "{err}");
}
