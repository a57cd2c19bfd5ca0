//! The library behind the `gridchan` binary: everything a subcommand does lives here, so
//! tests can call it without the binary.

pub mod channel;
pub mod daemon;
pub mod demo;
pub mod evm;
pub mod init;
pub mod keys;
pub mod ledger;
pub mod page;
pub mod report;
pub mod restore;
pub mod vectors;
pub mod watchtower;

use anyhow::Result;

/// Clap's message about bad arguments, in one line: what was wrong, the arguments it names
/// (the missing ones), its tip (a similar argument or subcommand), and a pointer to --help. The
/// usage block and clap's own pointer to --help are left out.
pub fn one_line_usage_error(rendered: &str) -> String {
    let mut what = String::new();
    let mut named = Vec::new();
    let mut tips = Vec::new();
    for line in rendered.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("Usage:") || trimmed.starts_with("For more information") {
            break;
        }
        if trimmed.is_empty() {
            continue;
        }
        if what.is_empty() {
            what = trimmed
                .strip_prefix("error: ")
                .unwrap_or(trimmed)
                .to_string();
        } else if let Some(tip) = trimmed.strip_prefix("tip: ") {
            tips.push(tip.to_string());
        } else {
            named.push(trimmed.to_string());
        }
    }
    if what.is_empty() {
        what = "invalid arguments".into();
    }
    let mut out = what.trim_end_matches(':').to_string();
    if !named.is_empty() {
        out.push_str(": ");
        out.push_str(&named.join(", "));
    }
    for tip in tips {
        out.push_str("; ");
        out.push_str(&tip);
    }
    out.push_str(" (see --help)");
    out
}

/// The `PUBKEY@HOST:PORT` address in field `field` of the config file `config`; an error names
/// the field and the file, and says so when it is still the template's placeholder.
pub fn config_address(
    field: &str,
    text: &str,
    config: &std::path::Path,
) -> Result<gridchan_transport::PeerAddr> {
    text.parse().map_err(|e| {
        let hint = if text.starts_with("PUBKEY@") {
            ": it is still the template's placeholder; put in the address the node printed at start"
        } else {
            ""
        };
        anyhow::anyhow!("{field} in {}: {e}{hint}", config.display())
    })
}

/// The signals that ask a service to stop: Ctrl-C (SIGINT), and SIGTERM from a service manager
/// (`systemctl stop`, `docker stop`, a shutdown). Installed before the service says it is up,
/// so a stop that follows at once is never the default action (death on the spot).
pub struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn install() -> Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for a stop; returns the signal's name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// `gridchan bench core`.
pub fn bench_core(updates: u64) -> Result<()> {
    eprintln!("settling {updates} updates through the in-memory harness...");
    println!("{}", gridchan_bench::core::run(updates).report());
    Ok(())
}

/// `gridchan bench ledger`.
pub fn bench_ledger(transactions: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    eprintln!("signing {transactions} transactions, then applying and committing them...");
    println!(
        "{}",
        gridchan_bench::ledger::run(dir.path(), transactions).report()
    );
    Ok(())
}

/// Starts the peer gateway of `bench gateway` and `bench hostile` as a second process (this
/// binary, `bench gateway-peer`) and waits for its `READY` line; returns the process and the
/// line's words after `READY` (the gateway's address, then its echo endpoint's).
async fn start_bench_peer(dir: &std::path::Path) -> Result<(tokio::process::Child, Vec<String>)> {
    use anyhow::Context;
    use tokio::io::AsyncBufReadExt;
    let mut peer = tokio::process::Command::new(std::env::current_exe()?)
        .args(["bench", "gateway-peer", "--dir"])
        .arg(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the peer gateway process")?;
    let stdout = peer.stdout.take().context("no peer output")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .context("the peer gateway process did not start within 30 s")??
        .context("the peer gateway process exited")?;
    let words: Vec<String> = line
        .split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect();
    if words.len() < 2 {
        anyhow::bail!("the peer gateway process said {line:?}");
    }
    Ok((peer, words))
}

/// `gridchan bench gateway`: the peer gateway in a second process, measured from this one.
pub async fn bench_gateway(dir: &std::path::Path, updates: usize) -> Result<()> {
    let (mut peer, words) = start_bench_peer(dir).await?;
    eprintln!("timing {updates} updates between two gateway processes...");
    let b = gridchan_bench::gateway::run(dir, updates, words[0].parse()?, words[1].parse()?).await;
    println!("{}", b.report());
    peer.kill().await.ok();
    Ok(())
}

/// `gridchan bench hostile`: the victim gateway in a process of its own (the peer of `bench
/// gateway`), attacked from this one; its resident memory read from `/proc`.
pub async fn bench_hostile(dir: &std::path::Path, connections: usize) -> Result<()> {
    use anyhow::Context;
    let (mut peer, words) = start_bench_peer(dir).await?;
    let pid = peer.id().context("the victim gateway process has no id")?;
    let rss = move || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    let b = gridchan_bench::hostile::run(dir, words[0].parse()?, connections, rss).await;
    println!("{}", b.report());
    peer.kill().await.ok();
    Ok(())
}

/// `gridchan bench gateway-peer`: the other gateway of `bench gateway`; stops when its parent
/// closes its input.
pub async fn bench_gateway_peer(dir: std::path::PathBuf) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let peer = gridchan_bench::gateway::run_peer(&dir, |engine, echo| {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "READY {engine} {echo}");
        let _ = out.flush();
    });
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    tokio::select! {
        () = peer => {}
        _ = async { while stdin.read(&mut buf).await.unwrap_or(0) > 0 {} } => {}
    }
    Ok(())
}
