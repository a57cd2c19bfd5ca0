//! The daemon on a real meter, configured as `gridchan init --meter p1:HOST:PORT` writes it: a
//! P1 dongle that is not there yet (the status says why nothing is read), then one that sends a
//! telegram every second (the status shows its readings).

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{gridchan, ledger, spawn};
use gridchan_channel::WattHours;

fn status(config: &std::path::Path) -> String {
    let out = gridchan(&["status", "--config", config.to_str().unwrap()]);
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `status` (at most 30 s) until a line holds `what`.
fn until_status(config: &std::path::Path, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = status(config);
        if text.contains(what) {
            return text;
        }
        assert!(Instant::now() < deadline, "never {what:?}: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_p1_dongle_absent_then_present_is_said_in_the_status_then_read() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("home");
    // A port nobody listens on yet: the dongle is not plugged in.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let node = common::init_with(&dir, &["--meter", &format!("p1:127.0.0.1:{port}")]);
    let (_ledger, ledger_addr) = ledger(&root.path().join("ledger"), "127.0.0.1:0", &[&node]);
    let config = dir.join("gridchan.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("PUBKEY@127.0.0.1:7400", &ledger_addr)
        .replace("interval_seconds = 900", "interval_seconds = 1");
    std::fs::write(&config, text).unwrap();
    let (_daemon, _) = spawn(&["daemon", "--config", config.to_str().unwrap()]);

    let text = until_status(&config, "meter     no reading since");
    assert!(
        text.contains(&format!("last problem: p1:127.0.0.1:{port}:"))
            && text.contains("trying again"),
        "{text}"
    );

    // The dongle is plugged in: a telegram at the start of every second, the import register
    // 1 Wh up each time (3.6 kW).
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let dongle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut import = 1_000_000u64;
        let mut last = 0;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            let now = jiff::Timestamp::now().as_millisecond() as u64 / 1000 * 1000;
            if now > last {
                last = now;
                import += 1;
                let t = gridchan_gateway::meter::p1::telegram(now, WattHours(import), WattHours(0));
                if conn.write_all(&t).is_err() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let text = until_status(&config, "imported 1 Wh, exported 0 Wh");
    assert!(!text.contains("no reading since"), "{text}");
    drop(_daemon);
    let _ = dongle.join();
}
