//! The ledger served over QUIC on 127.0.0.1, used by remote clients exactly as in-process.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{params, signer, CHAIN};
use gridchan_chain::{
    server, ChainEvent, ChannelStatus, Genesis, Ledger, LedgerError, LocalLedger, RemoteClient,
    Subscription, TxError,
};
use gridchan_channel::{Amount, SignedState, SignedStateParts, Signer, State, Version};
use gridchan_transport::PeerAddr;

struct Node {
    _dir: tempfile::TempDir,
    ledger: Arc<LocalLedger>,
    addr: PeerAddr,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn start(period: Duration) -> Node {
    let keys = [signer(1), signer(2), signer(3)];
    let genesis = Genesis {
        chain_id: CHAIN,
        min_challenge_window: 2,
        balances: keys.iter().map(|k| (k.id(), Amount(10_000_000))).collect(),
    };
    let dir = tempfile::tempdir().unwrap();
    let ledger = LocalLedger::open(dir.path(), genesis).unwrap();
    let endpoint = gridchan_chain::rpc::bind("127.0.0.1:0".parse().unwrap(), signer(9)).unwrap();
    let addr = endpoint.peer_addr();
    let tasks = vec![
        tokio::spawn(server::serve(endpoint, ledger.clone())),
        ledger.spawn_producer(period),
    ];
    Node {
        _dir: dir,
        ledger,
        addr,
        _tasks: tasks,
    }
}

fn client(node: &Node, key: u8) -> Arc<RemoteClient> {
    Arc::new(RemoteClient::new(node.addr.clone(), signer(key), [key; 32]).unwrap())
}

fn signed(
    p: &gridchan_channel::ChannelParams,
    a: &Signer,
    b: &Signer,
    v: u64,
    paid: u64,
) -> SignedState {
    let mut s = State::initial(p);
    s.version = Version(v);
    s.balance_a = Amount(1_000_000 + paid);
    s.balance_b = Amount(2_000_000 - paid);
    let d = s.digest();
    SignedStateParts {
        sig_a: a.sign(&d),
        sig_b: b.sign(&d),
        state: s,
    }
    .verify(p, &p.channel_id())
    .unwrap()
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("finished in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_remote_clients_fund_dispute_and_conclude_with_the_newer_state() {
    let node = start(Duration::from_millis(50)).await;
    let (a, b) = (client(&node, 1), client(&node, 2));
    let (ka, kb) = (signer(1), signer(2));
    let p = params(&ka, &kb);
    let id = p.channel_id();
    let wait = Duration::from_secs(30);
    within(async {
        let ra = a.deposit(&p, p.deposit_a).await.unwrap();
        let rb = b.deposit(&p, p.deposit_b).await.unwrap();
        a.wait_for(&ra, wait).await.unwrap();
        b.wait_for(&rb, wait).await.unwrap();
        assert_eq!(
            a.channel(&id).await.unwrap().unwrap().status,
            ChannelStatus::Open
        );
        // B registers an old state that pays it more; A refutes with the newer one.
        let old = signed(&p, &ka, &kb, 2, 0);
        let new = signed(&p, &ka, &kb, 9, 900_000);
        let reg = b.register(&old).await.unwrap();
        b.wait_for(&reg, wait).await.unwrap();
        let refute = a.refute(&new).await.unwrap();
        a.wait_for(&refute, wait).await.unwrap();
        // Concluding too early is refused with the deadline.
        match a.conclude(id).await {
            Err(LedgerError::Refused(TxError::Window { .. })) => {}
            other => panic!("{other:?}"),
        }
        let deadline = match a.channel(&id).await.unwrap().unwrap().status {
            ChannelStatus::Registered {
                deadline, version, ..
            } => {
                assert_eq!(version, Version(9));
                deadline
            }
            other => panic!("{other:?}"),
        };
        while a.height().await.unwrap() <= deadline {
            a.wait_above(deadline, wait).await.unwrap();
        }
        let done = b.conclude(id).await.unwrap();
        let receipt = b.wait_for(&done, wait).await.unwrap();
        let events = receipt.outcome.result.unwrap();
        assert!(matches!(
            events[0],
            ChainEvent::Concluded { version: Version(9), payout, .. }
                if payout == [Amount(1_900_000), Amount(1_100_000)]
        ));
        let w = a.withdraw(id, Amount(1_900_000)).await.unwrap();
        a.wait_for(&w, wait).await.unwrap();
        assert_eq!(
            a.account(&ka.id()).await.unwrap().balance,
            Amount(10_000_000 + 900_000)
        );
    })
    .await;
    assert_eq!(node.ledger.total_supply(), 30_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_resumes_after_a_disconnect_without_missing_or_repeating() {
    let node = start(Duration::from_millis(20)).await;
    let c = client(&node, 3);
    let mut sub = Subscription::new(c.clone(), 1);
    within(async {
        let mut seen = Vec::new();
        for round in 0..4 {
            for _ in 0..5 {
                seen.push(sub.next().await.unwrap().height);
            }
            // Break the connection mid-stream; the next call dials again.
            c.drop_connection().await;
            if round == 2 {
                // Calls made while the link is down fail, and the subscription keeps its place.
                let before = sub.next_height();
                let _ = c.drop_connection().await;
                assert_eq!(sub.next_height(), before);
            }
        }
        let expected: Vec<u64> = (1..=20).collect();
        assert_eq!(seen, expected);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_the_wrong_ledger_key_is_refused() {
    let node = start(Duration::from_millis(50)).await;
    let wrong = PeerAddr {
        node: signer(8).id(),
        addr: node.addr.addr,
    };
    let c = RemoteClient::new(wrong, signer(1), [1; 32]).unwrap();
    let err = within(c.height()).await.unwrap_err();
    assert!(err.to_string().contains("failed authentication"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_concurrent_submissions_each_take_the_next_nonce() {
    // A watchtower refuting several channels at once submits concurrently from one account.
    let node = start(Duration::from_millis(20)).await;
    let a = client(&node, 1);
    let to = signer(2).id();
    let sent: Vec<_> = (0..12u64)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move { a.transfer(to, Amount(1 + i)).await })
        })
        .collect();
    let mut hashes = Vec::new();
    for s in sent {
        hashes.push(within(s).await.unwrap().expect("every one accepted"));
    }
    for h in &hashes {
        let r = within(a.wait_for(h, Duration::from_secs(30)))
            .await
            .unwrap();
        assert!(r.outcome.result.is_ok(), "{r:?}");
    }
    let account = a.account(&signer(1).id()).await.unwrap();
    assert_eq!(account.nonce, 12);
    assert_eq!(account.balance, Amount(10_000_000 - (1..=12).sum::<u64>()));
}
