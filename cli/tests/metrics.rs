//! The daemon's Prometheus endpoint (`[metrics] listen`): off unless configured; while two
//! daemons trade, what it serves parses as Prometheus text and its counters equal the channel's
//! state.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{channels, open_channel};

/// `GET path` on `addr`: the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// Every line a comment, or `name{labels} value` with a Prometheus metric name and a number.
fn assert_prometheus_text(body: &str) {
    for line in body.lines().filter(|l| !l.is_empty()) {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(line);
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
    }
}

/// The value of the series `series` (name and labels, exactly as served).
fn value(body: &str, series: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        })
        .map(|v| v as u64)
}

#[test]
fn the_metrics_counters_equal_the_channels_state_and_parse_as_prometheus_text() {
    let root = tempfile::tempdir().unwrap();
    let pair = common::seller_and_buyer(root.path(), "[metrics]\nlisten = \"127.0.0.1:0\"");
    let (ca, cb, addr_a) = (pair.ca.clone(), pair.cb.clone(), pair.addr_a.clone());
    // Off unless configured: B serves none.
    let status = |config: &std::path::Path| -> serde_json::Value {
        let out = common::gridchan(&["status", "--json", "--config", config.to_str().unwrap()]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert!(status(&cb)["metrics"].is_null());
    let a_status = status(&ca);
    let url = a_status["metrics"].as_str().unwrap().to_string();
    // `status` also says how much its data folder takes.
    assert!(a_status["data_bytes"].as_u64().unwrap() > 0, "{a_status}");
    assert!(
        a_status["data_folder"].as_str().unwrap().ends_with("data"),
        "{a_status}"
    );
    let addr = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/metrics"))
        .unwrap()
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert_eq!(get(&addr, "/other").0, "HTTP/1.1 404 Not Found");
    // A watchtower guards A's channels.
    let tower_config = common::tower_init(&root.path().join("tower"), &pair.ledger);
    let (_tower, tower) =
        common::spawn(&["watchtower", "--config", tower_config.to_str().unwrap()]);
    let out = common::gridchan(&["tower", "add", &tower, "--config", ca.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    open_channel(&cb, &addr_a, &["--price", "0.2"]);
    // While they trade: A's counters for the channel equal A's side of its state (read before
    // and after the scrape, until no interval settles in between).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let before = channels(&ca);
        let (line, body) = get(&addr, "/metrics");
        let after = channels(&ca);
        assert_eq!(line, "HTTP/1.1 200 OK");
        assert_prometheus_text(&body);
        let c = &after["channels"][0];
        let sold = c["sold_wh"].as_u64().unwrap_or(0);
        let settled = c["version"].as_u64().unwrap_or(0);
        if sold > 0 && before == after {
            let id = &c["channel"].as_str().unwrap()[..8];
            let labels = format!("{{channel=\"{id}\",kind=\"neighbour\"}}");
            let served = value(&body, &format!("gridchan_energy_sold_wh_total{labels}"));
            if served == Some(sold) {
                assert_eq!(
                    value(&body, &format!("gridchan_states_signed_total{labels}")),
                    Some(settled),
                    "{body}"
                );
                let earned = 0.2 * sold as f64 * 1000.0;
                let served_money =
                    value(&body, &format!("gridchan_money_earned_micro_total{labels}")).unwrap();
                assert!(
                    (served_money as f64 - earned).abs() <= settled as f64,
                    "{body}"
                );
                assert_eq!(
                    value(&body, "gridchan_neighbours_connected"),
                    Some(1),
                    "{body}"
                );
                assert!(
                    body.contains("# TYPE gridchan_settle_delay_seconds histogram"),
                    "{body}"
                );
                // The ledger queue and the towers are sampled every 2 s.
                let body = scrape_until(&addr, "gridchan_ledger_queue_depth ");
                assert!(
                    value(&body, "gridchan_ledger_recent_failures").is_some(),
                    "{body}"
                );
                let tower_label = format!("{{tower=\"{}\"}}", &tower[..16]);
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let body = scrape_until(&addr, "gridchan_tower_channels_acknowledged");
                    let acked = format!("gridchan_tower_channels_acknowledged{tower_label}");
                    if value(&body, &acked) == Some(1) {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "the tower never acknowledged: {body}"
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "counters never matched: {after} vs {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts `gridchan args`, which prints its address lines and then `metrics URL`: the process
/// and the metrics' HOST:PORT.
fn spawn_with_metrics(args: &[&str]) -> (common::Proc, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gridchan"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let proc = common::Proc(child);
    for line in lines.take(5) {
        let line = line.unwrap();
        if let Some(url) = line.strip_prefix("metrics http://") {
            return (proc, url.strip_suffix("/metrics").unwrap().to_string());
        }
    }
    panic!("{args:?} printed no metrics line")
}

/// Scrapes `addr` until `series` is served (20 s at most); the body.
fn scrape_until(addr: &str, series: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (line, body) = get(addr, "/metrics");
        assert_eq!(line, "HTTP/1.1 200 OK");
        assert_prometheus_text(&body);
        if body.contains(series) {
            return body;
        }
        assert!(Instant::now() < deadline, "no {series}: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_ledger_node_serves_its_height_when_asked() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("ledger");
    let (_ledger, addr) = spawn_with_metrics(&[
        "ledger",
        "--data",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--block-ms",
        "50",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let body = scrape_until(&addr, "gridchan_ledger_height ");
    assert_eq!(
        value(&body, "gridchan_ledger_transactions_waiting"),
        Some(0),
        "{body}"
    );
    assert_eq!(
        value(&body, "gridchan_ledger_supply_micro"),
        Some(0),
        "{body}"
    );
}

#[test]
fn the_watchtower_serves_its_operators_metrics_when_configured() {
    let root = tempfile::tempdir().unwrap();
    let (_ledger, ledger_addr) = common::ledger(&root.path().join("ledger"), "127.0.0.1:0", &[]);
    let config = common::tower_init(&root.path().join("tower"), &ledger_addr);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nmetrics = \"127.0.0.1:0\"",
    );
    std::fs::write(&config, text).unwrap();
    // "watchtower ADDRESS", then "metrics URL".
    let (_tower, addr) = spawn_with_metrics(&["watchtower", "--config", config.to_str().unwrap()]);
    let body = scrape_until(&addr, "gridchan_tower_refutes ");
    assert_eq!(
        value(&body, "gridchan_tower_channels_guarded"),
        Some(0),
        "{body}"
    );
    assert_eq!(value(&body, "gridchan_tower_clients"), Some(0), "{body}");
    assert_eq!(
        value(&body, "gridchan_tower_refutes_included"),
        Some(0),
        "{body}"
    );
}
