//! `gridchan channel topup` and `channel withdraw` between two daemons while they trade: the
//! ledger takes the top-up and the channel credits it; the withdrawal is signed by both and the
//! ledger pays it into the account; what cannot be done is one line that says why.

mod common;

use common::{channels, gridchan, open_channel, until};

fn run(args: &[&str]) -> std::process::Output {
    gridchan(args)
}

fn account_balance(config: &std::path::Path) -> u64 {
    let out = run(&["status", "--json", "--config", config.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tokens: f64 = v["balance"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .parse()
        .unwrap();
    (tokens * 1e6).round() as u64
}

#[test]
fn a_channel_is_topped_up_and_partly_withdrawn_without_closing() {
    let root = tempfile::tempdir().unwrap();
    let pair = common::seller_and_buyer(root.path(), "");
    let (ca, cb) = (pair.ca.clone(), pair.cb.clone());
    open_channel(&cb, &pair.addr_a, &["--price", "0.2"]);
    let c = until("the channel open", &cb, |c| c["phase"] == "Open");
    let id = c["channel"].as_str().unwrap()[..8].to_string();
    let (cas, cbs) = (ca.to_str().unwrap(), cb.to_str().unwrap());
    // B (the buyer) adds 3 tokens.
    let before = account_balance(&cb);
    let out = run(&["channel", "topup", &id, "--amount", "3", "--config", cbs]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("top-up of 3.000000 sent to the ledger"));
    let c = until("the top-up credited", &cb, |c| {
        c["added"] == 3_000_000 && c["funds_pending"].is_null()
    });
    assert!(account_balance(&cb) <= before - 3_000_000);
    let a = until("A sees it", &ca, |a| a["version"] == c["version"]);
    assert_eq!(
        a["balance"].as_u64().unwrap() + a["peer_balance"].as_u64().unwrap(),
        23_000_000,
        "{a}"
    );
    // A (the seller) takes 2 tokens out, once both signed; the ledger pays it.
    let before = account_balance(&ca);
    let too_much = run(&[
        "channel", "withdraw", &id, "--amount", "50", "--config", cas,
    ]);
    assert!(!too_much.status.success());
    let line = String::from_utf8_lossy(&too_much.stderr);
    assert!(line.contains("can be withdrawn now"), "{line}");
    assert_eq!(line.trim().lines().count(), 1, "{line}");
    let out = run(&["channel", "withdraw", &id, "--amount", "2", "--config", cas]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until("the withdrawal paid", &ca, |a| {
        a["taken_out"] == 2_000_000 && a["funds_pending"].is_null()
    });
    assert_eq!(account_balance(&ca), before + 2_000_000);
    // Trading went on: the channel still settles intervals afterwards.
    let v = channels(&ca)["channels"][0]["version"].as_u64().unwrap();
    until("another interval settled", &ca, |a| {
        a["version"].as_u64().unwrap() > v
    });
    // A closed channel takes neither.
    let unknown = run(&[
        "channel", "topup", "ffffffff", "--amount", "1", "--config", cas,
    ]);
    assert!(!unknown.status.success());
}

/// `[funds]`: the seller's surplus above its ceiling is swept back to its account, the buyer's
/// side is topped up to what it typically buys, and `status` says what the policy is and did.
#[test]
fn the_funds_policy_sweeps_the_sellers_surplus_and_tops_up_the_buyer() {
    let root = tempfile::tempdir().unwrap();
    let pair = common::seller_and_buyer_with(
        root.path(),
        "[funds]\nsweep_above = 9",
        "[funds]\nkeep_days = 30\nmax_top_up = 4",
    );
    let (ca, cb) = (pair.ca.clone(), pair.cb.clone());
    let status = |config: &std::path::Path| {
        let out = run(&["status", "--config", config.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(status(&ca).contains("sweeps our balance above 9.000000 back to the account"));
    open_channel(&cb, &pair.addr_a, &["--price", "0.2"]);
    // A holds 10 and earns: what is above 9 goes back to its account.
    let a = until("the seller's surplus swept", &ca, |a| {
        a["taken_out"].as_u64().unwrap_or(0) >= 1_000_000 && a["funds_pending"].is_null()
    });
    assert!(a["balance"].as_u64().unwrap() <= 9_000_000 + 100_000, "{a}");
    assert!(status(&ca).contains("last: swept"), "{}", status(&ca));
    // B buys every interval: 30 days of that is far above its 10, so it adds 4 (its limit).
    until("the buyer topped up", &cb, |b| {
        b["added"].as_u64().unwrap_or(0) >= 4_000_000
    });
    assert!(
        status(&cb).contains("last: topped up channel"),
        "{}",
        status(&cb)
    );
}
