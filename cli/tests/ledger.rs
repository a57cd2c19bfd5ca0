//! `gridchan ledger` run as a process: it serves, it survives kill -9, it refuses a damaged
//! database with one clear line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use gridchan_chain::{Ledger, RemoteClient};
use gridchan_channel::{Amount, Signer};
use gridchan_transport::PeerAddr;

struct Running {
    child: Child,
    addr: PeerAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &std::path::Path, extra: &[String]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gridchan"))
        .args(["ledger", "--data"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--block-ms", "50"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("ledger ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    Running { child, addr }
}

fn key(byte: u8) -> Signer {
    Signer::new(&[byte; 32], &[0; 32]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_node_serves_and_restarts_from_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (key(1), key(2));
    let fund = vec!["--fund".to_string(), format!("{}=100", a.id())];
    let wait = Duration::from_secs(30);
    let (height, balance) = {
        let node = start(dir.path(), &fund);
        let client = Arc::new(RemoteClient::new(node.addr.clone(), key(1), [1; 32]).unwrap());
        let tx = tokio::time::timeout(wait, client.transfer(b.id(), Amount(2_500_000)))
            .await
            .unwrap()
            .unwrap();
        client.wait_for(&tx, wait).await.unwrap();
        let h = client.height().await.unwrap();
        (h, client.account(&b.id()).await.unwrap().balance)
        // Dropping `node` kills the process (SIGKILL).
    };
    assert_eq!(balance, Amount(2_500_000));
    let node = start(dir.path(), &[]);
    let client = RemoteClient::new(node.addr.clone(), key(2), [2; 32]).unwrap();
    let after = tokio::time::timeout(wait, client.height())
        .await
        .unwrap()
        .unwrap();
    assert!(
        after >= height,
        "height {after} after restart, {height} before"
    );
    assert_eq!(
        client.account(&b.id()).await.unwrap().balance,
        Amount(2_500_000)
    );
    assert_eq!(
        client.account(&a.id()).await.unwrap().balance,
        Amount(97_500_000)
    );
}

#[test]
fn a_damaged_database_is_one_clear_line_and_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ledger.sqlite"), vec![0x42; 8192]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gridchan"))
        .args(["ledger", "--data"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{err}");
    assert!(last.contains("not a database"), "{err}");
}
