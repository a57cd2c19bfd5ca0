//! Running the built `gridchan` binary, and the pieces of a neighbourhood made of processes.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn gridchan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gridchan"))
        .args(args)
        .output()
        .expect("gridchan runs")
}

pub struct Proc(pub Child);

impl Proc {
    /// Sends SIGTERM (what `systemctl stop` sends) and waits, at most 30 s, for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.0.id() as libc::pid_t;
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit 30 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `gridchan ARGS` and returns it with the last word of its first output line.
pub fn spawn(args: &[&str]) -> (Proc, String) {
    spawn_logging(args, Stdio::null())
}

/// [`spawn`], with the process's log (standard error) going to `log`.
pub fn spawn_logging(args: &[&str], log: impl Into<Stdio>) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gridchan"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let word = line
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(!word.is_empty(), "{args:?} printed nothing");
    (Proc(child), word)
}

pub fn init(dir: &Path) -> String {
    init_with(dir, &[])
}

/// `gridchan init --dir DIR --listen 127.0.0.1:0 EXTRA...`; returns the node id it printed.
pub fn init_with(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "init",
        "--dir",
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let out = gridchan(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .next()
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_string()
}

pub fn configure(dir: &Path, ledger: &str, csv: &str, peer: Option<&str>) {
    let path = dir.join("gridchan.toml");
    let mut text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("PUBKEY@127.0.0.1:7400", ledger)
        .replace("interval_seconds = 900", "interval_seconds = 1")
        // These neighbours take each other's channels without asking (within the limits);
        // the tests of consent set "ask" again.
        .replace("from = \"ask\"", "from = \"anyone\"");
    // The template's [meter] section (up to the blank line after it) becomes the CSV file.
    let start = text
        .find("[meter]\n")
        .expect("the template has a [meter] section");
    let end = start
        + text[start..]
            .find("\n\n")
            .expect("and a blank line after it");
    text.replace_range(
        start..end,
        &format!("[meter]\nkind = \"csv\"\npath = \"{csv}\""),
    );
    if let Some(p) = peer {
        text.push_str(&format!("\n[[peers]]\naddress = \"{p}\"\n"));
    }
    std::fs::write(&path, text).unwrap();
}

pub fn meter_file(dir: &Path, import: u64, export: u64) -> String {
    // A row for every (1-second) interval from a minute ago for 5,000 seconds.
    let mut csv = String::from("timestamp_utc,load_wh,pv_wh,import_wh,export_wh\n");
    let now = jiff::Timestamp::now().as_second() - 60;
    for s in now..now + 5_000 {
        let t = jiff::Timestamp::from_second(s).unwrap();
        csv.push_str(&format!("{t},0,0,{import},{export}\n"));
    }
    let path = dir.join("meter.csv");
    std::fs::write(&path, csv).unwrap();
    path.to_str().unwrap().to_string()
}

pub fn channels(config: &Path) -> serde_json::Value {
    let out = gridchan(&[
        "channel",
        "list",
        "--all",
        "--json",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls `channel list` (bounded) until `f` holds for the first channel.
pub fn until(
    what: &str,
    config: &Path,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = channels(config);
        if let Some(c) = list["channels"].get(0) {
            if f(c) {
                return c.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A ledger node with its data in `dir`, on `listen`, a block every 100 ms, challenge windows
/// from 2 blocks, and 100 tokens for each node of `funded`. Returns it with its address.
pub fn ledger(dir: &Path, listen: &str, funded: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "ledger".to_string(),
        "--data".into(),
        dir.to_str().unwrap().into(),
        "--listen".into(),
        listen.into(),
        "--block-ms".into(),
        "100".into(),
        "--min-challenge-window".into(),
        "2".into(),
    ];
    for node in funded {
        args.push("--fund".into());
        args.push(format!("{node}=100"));
    }
    spawn(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Waits (bounded) until the daemon of `config` answers on its control socket.
pub fn wait_for_daemon(config: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !gridchan(&["status", "--config", config.to_str().unwrap()])
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the daemon of {} never answered",
            config.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `gridchan daemon --config CONFIG` and waits until it answers; returns it with the
/// address it printed.
/// The two gateways of these tests on `ledger`, from their folders (`gridchan init` done): B
/// imports 80 Wh an interval and starts first; A exports 100 Wh and dials B. Returns A, B and
/// B's address.
pub fn start_neighbours(da: &Path, db: &Path, ledger: &str) -> (Proc, Proc, String) {
    configure(db, ledger, &meter_file(db, 80, 0), None);
    let (b, addr_b) = start_daemon(&db.join("gridchan.toml"));
    configure(da, ledger, &meter_file(da, 0, 100), Some(&addr_b));
    let (a, _) = start_daemon(&da.join("gridchan.toml"));
    (a, b, addr_b)
}

/// `channel open` from the gateway of `config` to `peer`, 10 tokens on each side, with `terms`
/// (a `--price` or `--tariff`, and any other flags); asserts that it succeeded.
pub fn open_channel(config: &Path, peer: &str, terms: &[&str]) -> Output {
    let mut args = vec![
        "channel",
        "open",
        peer,
        "--deposit",
        "10",
        "--peer-deposit",
        "10",
    ];
    args.extend_from_slice(terms);
    args.extend(["--config", config.to_str().unwrap()]);
    let out = gridchan(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn start_daemon(config: &Path) -> (Proc, String) {
    let started = spawn(&["daemon", "--config", config.to_str().unwrap()]);
    wait_for_daemon(config);
    started
}

/// Two homes over a local ledger, both daemons up, no channel yet: A exports 100 Wh an interval
/// (its config with `a_extra` appended), B imports 80 and names A as its neighbour.
pub struct SellerAndBuyer {
    pub ca: std::path::PathBuf,
    pub cb: std::path::PathBuf,
    pub addr_a: String,
    pub node_a: String,
    pub ledger: String,
    pub procs: Vec<Proc>,
}

#[allow(dead_code)]
pub fn seller_and_buyer(root: &Path, a_extra: &str) -> SellerAndBuyer {
    seller_and_buyer_with(root, a_extra, "")
}

/// [`seller_and_buyer`] with `b_extra` appended to the buyer's config too.
pub fn seller_and_buyer_with(root: &Path, a_extra: &str, b_extra: &str) -> SellerAndBuyer {
    let (da, db) = (root.join("a"), root.join("b"));
    let (node_a, node_b) = (init(&da), init(&db));
    let (ledger_proc, ledger_addr) =
        ledger(&root.join("ledger"), "127.0.0.1:0", &[&node_a, &node_b]);
    configure(&da, &ledger_addr, &meter_file(&da, 0, 100), None);
    let ca = da.join("gridchan.toml");
    let text = std::fs::read_to_string(&ca).unwrap();
    std::fs::write(&ca, format!("{text}\n{a_extra}\n")).unwrap();
    let (a, addr_a) = spawn(&["daemon", "--config", ca.to_str().unwrap()]);
    wait_for_daemon(&ca);
    configure(&db, &ledger_addr, &meter_file(&db, 80, 0), Some(&addr_a));
    let cb = db.join("gridchan.toml");
    let text = std::fs::read_to_string(&cb).unwrap();
    std::fs::write(&cb, format!("{text}\n{b_extra}\n")).unwrap();
    let (b, _) = spawn(&["daemon", "--config", cb.to_str().unwrap()]);
    wait_for_daemon(&cb);
    SellerAndBuyer {
        ca,
        cb,
        addr_a,
        node_a,
        ledger: ledger_addr,
        procs: vec![ledger_proc, a, b],
    }
}

/// `gridchan watchtower init` in `dir`, listening on 127.0.0.1:0, following `ledger`: the
/// tower's config file.
#[allow(dead_code)]
pub fn tower_init(dir: &Path, ledger: &str) -> std::path::PathBuf {
    let out = gridchan(&[
        "watchtower",
        "init",
        "--dir",
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--ledger",
        ledger,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("watchtower.toml")
}
