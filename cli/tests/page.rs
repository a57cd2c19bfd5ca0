//! The household's page (`[page]`): off unless configured; its figures for today and this
//! month, as a real headless browser (Chromium from the distribution's packages, installed by
//! `scripts/chromium.sh` if missing) renders them, are `gridchan report`'s (`--json`) for the
//! same day and month; it refuses requests without its token; a page reachable from other
//! machines without a token is refused at start.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{channels, gridchan, open_channel};

const TOKEN: &str = "0123456789abcdef-test";

/// `GET target` on `addr` with `headers`: the status line and the body.
fn get(addr: &str, target: &str, headers: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The text of the element whose `data-figure` is `name`.
fn figure<'a>(page: &'a str, name: &str) -> &'a str {
    let at = page
        .find(&format!("data-figure=\"{name}\">"))
        .unwrap_or_else(|| panic!("no figure {name}"));
    let rest = &page[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap();
    &rest[start..start + end]
}

/// A headless Chromium: the distribution's, installed by the project's script when missing.
fn chromium() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/chromium.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `url` as Chromium renders it: the DOM after loading, and a screenshot at `png`.
fn browse(url: &str, png: &std::path::Path) -> String {
    let browser = chromium();
    let base = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        // A container's /dev/shm is small.
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ];
    let dom = std::process::Command::new(&browser)
        .args(base)
        .args(["--dump-dom", url])
        .output()
        .unwrap();
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let shot = std::process::Command::new(&browser)
        .args(base)
        .arg(format!("--screenshot={}", png.display()))
        .args(["--window-size=1050,1500", url])
        .output()
        .unwrap();
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    String::from_utf8(dom.stdout).unwrap()
}

#[test]
fn the_page_shows_the_reports_figures_to_whoever_has_its_token() {
    let root = tempfile::tempdir().unwrap();
    let page = format!(
        "[page]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n[grid]\nretail = \"flat 0.30\"\nfeed_in = \"flat 0.08\""
    );
    let mut pair = common::seller_and_buyer(root.path(), &page);
    let (ca, cb) = (pair.ca.clone(), pair.cb.clone());
    let status = |config: &std::path::Path| -> serde_json::Value {
        let out = gridchan(&["status", "--json", "--config", config.to_str().unwrap()]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Off unless configured.
    assert!(status(&cb)["page"].is_null());
    let url = status(&ca)["page"].as_str().unwrap().to_string();
    let addr = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix('/'))
        .unwrap()
        .to_string();
    open_channel(&cb, &pair.addr_a, &["--price", "0.2"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while channels(&ca)["channels"][0]["sold_wh"]
        .as_u64()
        .unwrap_or(0)
        < 3 * 80
    {
        assert!(Instant::now() < deadline, "A never sold");
        std::thread::sleep(Duration::from_millis(100));
    }
    // B stops: nothing settles any more.
    drop(pair.procs.remove(2));
    // Without the token: refused; with it, as a query or a bearer token: the page.
    let (line, _) = get(&addr, "/", "");
    assert_eq!(line, "HTTP/1.1 401 Unauthorized");
    let (line, _) = get(&addr, "/?token=wrong", "");
    assert_eq!(line, "HTTP/1.1 401 Unauthorized");
    let (line, _) = get(&addr, &format!("/?token={TOKEN}"), "");
    assert_eq!(line, "HTTP/1.1 200 OK");
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    assert_eq!(get(&addr, "/nothing", &bearer).0, "HTTP/1.1 404 Not Found");
    // Only GET.
    let mut post = std::net::TcpStream::connect(&addr).unwrap();
    post.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(post, "POST / HTTP/1.1\r\nHost: {addr}\r\n{bearer}\r\n").unwrap();
    let mut answer = String::new();
    post.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 405 Method Not Allowed"),
        "{answer}"
    );
    // Today in A's time zone (its clock is not sped up here), as `report` gives it.
    let zone = gridchan_gateway::config::Config::load(&ca)
        .unwrap()
        .metering
        .zone()
        .unwrap();
    let today = jiff::Timestamp::now().to_zoned(zone).date();
    let month = today.strftime("%Y-%m").to_string();
    let cfg = ca.to_str().unwrap();
    let report = |period: &[&str]| -> serde_json::Value {
        let mut args = vec!["report", "--json", "--config", cfg];
        args.extend_from_slice(period);
        let out = gridchan(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // The page as a browser renders it, between two reads of the report: A's meter goes on
        // reading while nothing trades, so its metered figures lie between the two reads, and
        // every other figure equals both.
        let before = (
            report(&["--day", &today.to_string()]),
            report(&["--month", &month]),
        );
        let png = root.path().join("page.png");
        let html = browse(&format!("http://{addr}/?token={TOKEN}"), &png);
        let shot = std::fs::read(&png).unwrap();
        assert!(shot.starts_with(b"\x89PNG"), "a screenshot");
        if let Ok(keep) = std::env::var("GRIDCHAN_PAGE_SCREENSHOT") {
            std::fs::write(keep, &shot).unwrap();
        }
        let day = report(&["--day", &today.to_string()]);
        let whole = report(&["--month", &month]);
        let same = |prefix: &str, r: &serde_json::Value, earlier: &serde_json::Value| {
            let wh = |k: &str| format!("{} Wh", r[k].as_u64().unwrap());
            let money = |k: &str| gridchan_channel::Amount(r[k].as_u64().unwrap()).to_string();
            let metered = |k: &str| {
                let shown: u64 = figure(&html, &format!("{prefix}.{k}"))
                    .trim_end_matches(" Wh")
                    .parse()
                    .unwrap();
                (earlier[k].as_u64().unwrap()..=r[k].as_u64().unwrap()).contains(&shown)
            };
            let settled = ["sold_wh", "bought_wh", "paid", "earned", "saved"];
            settled.iter().all(|k| earlier[k] == r[k])
                && figure(&html, &format!("{prefix}.sold_wh")) == wh("sold_wh")
                && figure(&html, &format!("{prefix}.bought_wh")) == wh("bought_wh")
                && metered("metered_export_wh")
                && metered("metered_import_wh")
                && figure(&html, &format!("{prefix}.earned")) == money("earned")
                && figure(&html, &format!("{prefix}.paid")) == money("paid")
                && figure(&html, &format!("{prefix}.saved"))
                    == gridchan_cli::report::signed_tokens(r["saved"].as_i64().unwrap())
        };
        if same("day", &day, &before.0) && same("month", &whole, &before.1) {
            assert!(day["sold_wh"].as_u64().unwrap() > 0, "{day}");
            // Sold at 0.20 a kWh rather than fed in at 0.08: a saving.
            assert!(day["saved"].as_i64().unwrap() > 0, "{day}");
            // The day's chart, and the channel with A's balance.
            assert!(html.contains("<svg"), "{html}");
            assert!(html.contains("data-figure=\"channel."), "{html}");
            assert!(html.contains("<h2>Needs attention</h2>"), "{html}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never matched the report: {html}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_page_reachable_from_other_machines_needs_a_token() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a");
    common::init(&dir);
    let config = dir.join("gridchan.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[page]\nlisten = \"0.0.0.0:0\"\n")).unwrap();
    let out = gridchan(&["daemon", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("page.token"), "{err}");
}
