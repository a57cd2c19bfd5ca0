//! The product by hand on an EVM chain: anvil, `gridchan evm deploy`, `gridchan evm mint`, two
//! gateway daemons and a watchtower whose configs select the adjudicator contract, and a channel
//! opened, traded and closed with `gridchan channel` commands. Nothing but the `[ledger]`
//! sections differs from the local-ledger test (`gateway.rs`).

mod common;

use std::path::Path;

use gridchan_chain::evm::{self, anvil::Anvil, EvmConfig, EvmLedger};
use gridchan_chain::Ledger;
use gridchan_channel::NodeId;

use common::{gridchan, init, open_channel, spawn, start_neighbours, until};

/// The `[ledger]` section `gridchan init` wrote, replaced by `evm`.
fn use_evm(config: &Path, section: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    let start = text.find("mode = \"remote\"").unwrap();
    let end = start + text[start..].find('\n').unwrap() + 1;
    let end = end + text[end..].find('\n').unwrap() + 1;
    std::fs::write(
        config,
        format!("{}{section}{}", &text[..start], &text[end..]),
    )
    .unwrap();
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Starts a daemon on `config` and returns the first line of its log that contains `what`
/// (within 30 s), then stops it.
fn warns_at_start(config: &Path, what: &str) -> String {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gridchan"))
        .args(["daemon", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(what) => break Some(line),
            Ok(_) => {}
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    found.unwrap_or_else(|| panic!("the daemon of {} never said {what:?}", config.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_and_a_tower_configured_for_the_evm_adjudicator_trade_and_close() {
    let chain = Anvil::start(None).expect("anvil");
    let root = tempfile::tempdir().unwrap();
    let (da, db, dt) = (
        root.path().join("a"),
        root.path().join("b"),
        root.path().join("tower"),
    );
    let (node_a, node_b) = (init(&da), init(&db));
    let out = ok(&gridchan(&[
        "watchtower",
        "init",
        "--dir",
        dt.to_str().unwrap(),
        "--ledger",
        "unused",
        "--listen",
        "127.0.0.1:0",
    ]));
    assert!(out.contains("address "), "{out}");
    // Every account pays its own gas: the gateways for their deposits and closes, the tower
    // for its refutes.
    for key in [
        da.join("node.key"),
        db.join("node.key"),
        dt.join("tower.key"),
    ] {
        let out = ok(&gridchan(&[
            "evm",
            "address",
            "--key",
            key.to_str().unwrap(),
        ]));
        chain.fund_gas(out.trim().parse().unwrap()).await.unwrap();
    }
    let id: NodeId = node_a.parse().unwrap();
    assert_eq!(
        ok(&gridchan(&[
            "evm",
            "address",
            "--key",
            da.join("node.key").to_str().unwrap()
        ]))
        .trim(),
        format!("{:#x}", evm::address_of(&id))
    );
    // A deploys the adjudicator and the test token.
    let out = ok(&gridchan(&[
        "evm",
        "deploy",
        "--rpc",
        &chain.rpc,
        "--key",
        da.join("node.key").to_str().unwrap(),
        "--min-challenge-window",
        "2",
        "--json",
    ]));
    let deployed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let section = format!(
        "mode = \"evm\"\nrpc = \"{}\"\nadjudicator = \"{}\"\ntoken = \"{}\"\ndeployed_at = {}\n",
        chain.rpc,
        deployed["adjudicator"].as_str().unwrap(),
        deployed["token"].as_str().unwrap(),
        deployed["block"]
    );
    // A config whose addresses are no deployment stops the daemon at once, in one line.
    let dc = root.path().join("c");
    init(&dc);
    let cc = dc.join("gridchan.toml");
    use_evm(
        &cc,
        &section.replace(
            deployed["adjudicator"].as_str().unwrap(),
            deployed["token"].as_str().unwrap(),
        ),
    );
    let out = gridchan(&["daemon", "--config", cc.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("is not a gridchan adjudicator"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // With the right section, C's daemon starts, and warns that its account has no gas.
    let wrong = std::fs::read_to_string(&cc).unwrap();
    let adjudicator = deployed["adjudicator"].as_str().unwrap();
    let right = wrong.replacen(
        &format!("adjudicator = \"{}\"", deployed["token"].as_str().unwrap()),
        &format!("adjudicator = \"{adjudicator}\""),
        1,
    );
    assert_ne!(right, wrong);
    std::fs::write(&cc, right).unwrap();
    let warned = warns_at_start(&cc, "has gas for about 0 transactions");
    assert!(
        warned.contains("send it some of the chain's coin"),
        "{warned}"
    );
    let (ca, cb, ct) = (
        da.join("gridchan.toml"),
        db.join("gridchan.toml"),
        dt.join("watchtower.toml"),
    );
    for config in [&ca, &cb, &ct] {
        use_evm(config, &section);
    }
    for config in [&ca, &cb] {
        let out = ok(&gridchan(&[
            "evm",
            "mint",
            "--amount",
            "100",
            "--config",
            config.to_str().unwrap(),
        ]));
        assert!(out.contains("holds 100.000000 tokens"), "{out}");
    }
    let (_tower, tower_addr) = spawn(&["watchtower", "--config", ct.to_str().unwrap()]);
    let mut text = std::fs::read_to_string(&ca).unwrap();
    text.push_str(&format!("\n[[towers]]\naddress = \"{tower_addr}\"\n"));
    std::fs::write(&ca, text).unwrap();

    let (_a, _b, addr_b) = start_neighbours(&da, &db, "unused");
    open_channel(&ca, &addr_b, &["--price", "0.2", "--json"]);
    let trading = until("three intervals traded", &ca, |c| {
        c["phase"] == "Open" && c["sold_wh"].as_u64().unwrap_or(0) >= 240
    });
    let id = trading["channel"].as_str().unwrap()[..8].to_string();
    // The tower follows the chain and holds A's states.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = ok(&gridchan(&[
            "watchtower",
            "channels",
            "--json",
            "--config",
            ct.to_str().unwrap(),
        ]));
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        if list[0]["version"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tower holds nothing: {list}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    ok(&gridchan(&[
        "channel",
        "close",
        &id,
        "--config",
        ca.to_str().unwrap(),
    ]));
    let closed = until("paid out (A)", &ca, |c| c["phase"] == "Concluded");
    until("paid out (B)", &cb, |c| c["phase"] == "Concluded");
    let status: serde_json::Value = serde_json::from_str(&ok(&gridchan(&[
        "watchtower",
        "status",
        "--json",
        "--config",
        ct.to_str().unwrap(),
    ])))
    .unwrap();
    assert!(
        status["next_height"].as_u64().unwrap() > deployed["block"].as_u64().unwrap(),
        "the tower followed the chain: {status}"
    );
    // The operators see what their accounts have left for gas: the tower's pays its refutes,
    // the gateway's its deposits and withdrawals.
    let wei: u128 = status["gas"]["balance"].as_str().unwrap().parse().unwrap();
    assert!(wei > 0, "{status}");
    let human = ok(&gridchan(&[
        "watchtower",
        "status",
        "--config",
        ct.to_str().unwrap(),
    ]));
    assert!(
        human.contains("transactions at the current gas price"),
        "{human}"
    );
    let human = ok(&gridchan(&["status", "--config", ca.to_str().unwrap()]));
    let gas = human.lines().find(|l| l.starts_with("gas")).unwrap_or("");
    assert!(
        gas.contains("transactions at the current gas price"),
        "{human}"
    );

    // On the chain: both withdrew their closing balances; all 200 tokens are accounted for.
    let reader = EvmLedger::connect(
        EvmConfig {
            rpc: chain.rpc.clone(),
            adjudicator: deployed["adjudicator"].as_str().unwrap().parse().unwrap(),
            token: deployed["token"].as_str().unwrap().parse().unwrap(),
            confirmations: 1,
            deployed_at: 0,
        },
        &[9; 32],
        &[1; 32],
    )
    .unwrap();
    let held = |node: &str| {
        let reader = &reader;
        let id: NodeId = node.parse().unwrap();
        async move { reader.account(&id).await.unwrap().balance.0 }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let kept = 90_000_000;
    let paid_a = kept + closed["balance"].as_u64().unwrap();
    while held(&node_a).await != paid_a {
        assert!(std::time::Instant::now() < deadline, "A never withdrew");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(paid_a > 100_000_000, "A sold energy");
    while held(&node_a).await + held(&node_b).await != 200_000_000 {
        assert!(std::time::Instant::now() < deadline, "B never withdrew");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A tower whose chain does not answer still shows its status, and says why its gas is
    // unknown.
    let text = std::fs::read_to_string(&ct).unwrap();
    std::fs::write(&ct, text.replace(&chain.rpc, "http://127.0.0.1:9")).unwrap();
    let human = ok(&gridchan(&[
        "watchtower",
        "status",
        "--config",
        ct.to_str().unwrap(),
    ]));
    let gas = human.lines().find(|l| l.starts_with("gas")).unwrap_or("");
    assert!(gas.starts_with("gas       unknown: "), "{human}");
    assert!(human.contains("refutes"), "{human}");
}

#[test]
fn minting_on_a_gridchan_ledger_is_refused_in_one_line() {
    let root = tempfile::tempdir().unwrap();
    init(root.path());
    let out = gridchan(&[
        "evm",
        "mint",
        "--amount",
        "1",
        "--config",
        root.path().join("gridchan.toml").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not an EVM chain"), "{err}");
}
