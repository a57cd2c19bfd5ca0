//! What the gateway's end-to-end tests share: keys, a ledger node, bounded waits.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use gridchan_chain::{server, Genesis, LocalLedger};
use gridchan_channel::{Amount, ChannelId, ChannelView, NodeId, Signer};
use gridchan_gateway::engine::EngineHandle;
use gridchan_transport::{Endpoint, Limits, PeerAddr};

pub fn key(b: u8) -> Signer {
    Signer::new(&[b; 32], &[b; 32]).unwrap()
}

/// A ledger node on 127.0.0.1 producing a block every `block_ms`.
pub struct LedgerNode {
    pub ledger: Arc<LocalLedger>,
    pub addr: PeerAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LedgerNode {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts a ledger in `dir` where each of `funded` holds 100 tokens.
pub fn ledger_node(dir: &std::path::Path, funded: &[NodeId], block_ms: u64) -> LedgerNode {
    let genesis = Genesis {
        chain_id: [7; 32],
        min_challenge_window: 2,
        balances: funded.iter().map(|n| (*n, Amount(100_000_000))).collect(),
    };
    let ledger = LocalLedger::open(&dir.join("ledger"), genesis).unwrap();
    let limits = Limits {
        max_frame: gridchan_chain::rpc::MAX_RPC_FRAME,
        ..Limits::default()
    };
    let endpoint = Endpoint::bind("127.0.0.1:0".parse().unwrap(), key(9), limits).unwrap();
    let addr = endpoint.peer_addr();
    let tasks = vec![
        tokio::spawn(server::serve(endpoint, ledger.clone())),
        ledger.spawn_producer(Duration::from_millis(block_ms)),
    ];
    LedgerNode {
        ledger,
        addr,
        tasks,
    }
}

pub async fn view(h: &EngineHandle, channel: ChannelId) -> Option<ChannelView> {
    h.channels()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id == channel)
}

/// Waits (at most `secs`) until `f` holds, re-checking whenever one of `engines` reports
/// something: no sleeps that guess.
pub async fn until<F, Fut>(what: &str, engines: &[&EngineHandle], secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let forwarders: Vec<_> = engines
        .iter()
        .map(|e| {
            let mut reports = e.reports();
            let tx = tx.clone();
            tokio::spawn(async move {
                while reports.recv().await.is_ok() {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f().await {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {what}");
        let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), rx.recv()).await;
    }
    for f in forwarders {
        f.abort();
    }
}
