//! A hostile neighbour over real QUIC: garbage, an oversized frame, a bad signature, a state
//! with a wrong balance. Each costs it the connection with a reason, and the channel stays as
//! it was.

use gridchan_harness::key;
use std::time::Duration;

use gridchan_channel::wire::OpenChannel;
use gridchan_channel::{
    Event, IntervalIndex, LedgerEvent, Message, Party, Phase, Policy, ProposalParts, Signer, State,
    Version, WattHours,
};
use gridchan_gateway::engine::{self, EngineHandle, Report};
use gridchan_transport::{Connection, Endpoint, FramedStream, Limits};

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("in time")
}

/// The hostile side: a bare endpoint speaking the wire protocol by hand.
struct Mallory {
    endpoint: Endpoint,
    key: Signer,
}

impl Mallory {
    async fn connect(&self, victim: &EngineHandle) -> (Connection, FramedStream) {
        let conn = within(self.endpoint.connect(&victim.address))
            .await
            .unwrap();
        let stream = conn.open_stream().await.unwrap();
        (conn, stream)
    }
}

async fn expect_disconnect(reports: &mut tokio::sync::broadcast::Receiver<Report>, why: &str) {
    within(async {
        loop {
            if let Ok(Report::Event(Event::PeerMisbehaved { reason, .. })) = reports.recv().await {
                assert!(reason.contains(why), "expected {why:?}, got {reason:?}");
                return;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_cost_the_connection_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let victim_key = key(2);
    let path = dir.path().join("victim.sqlite");
    let listen = "127.0.0.1:0".parse().unwrap();
    let victim =
        engine::spawn_on_file(listen, victim_key, &path, Policy::accepting_anyone()).unwrap();
    let mut reports = victim.reports();
    let m = Mallory {
        endpoint: Endpoint::bind("127.0.0.1:0".parse().unwrap(), key(1), Limits::default())
            .unwrap(),
        key: key(1),
    };
    // An honest opening first: the victim accepts and countersigns version 0.
    let params = gridchan_fixtures::flat_channel(
        victim.node,
        5_000_000,
        200_000,
        IntervalIndex(100),
        [1; 32],
    )
    .params(m.key.id());
    let id = params.channel_id();
    let v0 = State::initial(&params);
    let (_c, mut s) = m.connect(&victim).await;
    let open = Message::OpenChannel(Box::new(OpenChannel {
        params: params.clone(),
        sig_a: m.key.sign(&v0.digest()),
    }));
    s.write_prefixed(&open.encode()).await.unwrap();
    let reply = within(s.read_frame()).await.unwrap().unwrap();
    let mut full = (reply.len() as u32).to_be_bytes().to_vec();
    full.extend_from_slice(&reply);
    assert!(matches!(
        Message::decode(&full),
        Ok(Message::AcceptChannel(_))
    ));
    victim.ledger_event(id, LedgerEvent::Funded).await.unwrap();
    let state = |v: EngineHandle| async move {
        let c = v.channels().await.unwrap();
        (c[0].phase, c[0].current.clone().unwrap())
    };
    let before = within(async {
        loop {
            let (phase, cur) = state(victim.clone()).await;
            if phase == Phase::Open {
                return cur;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    // The victim's buyer reading, so a proposal is judged on its merits.
    victim
        .reading(
            id,
            gridchan_channel::IntervalReading::buying(IntervalIndex(101), WattHours(100)),
        )
        .await
        .unwrap();

    // 1. Garbage.
    let mut garbage = vec![0u8, 0, 0, 40];
    garbage.extend_from_slice(&[0xee; 40]);
    s.write_prefixed(&garbage).await.unwrap();
    expect_disconnect(&mut reports, "unsupported protocol version").await;

    // 2. An oversized frame: refused from its length, before its body.
    let (_c, mut s) = m.connect(&victim).await;
    let _ = s
        .write_prefixed(&[&(1u32 << 20).to_be_bytes()[..], &[0u8; 16]].concat())
        .await;
    within(async {
        loop {
            if let Ok(Report::Peer {
                connected: false, ..
            }) = reports.recv().await
            {
                return;
            }
        }
    })
    .await;

    // 3. A proposal with a bad signature.
    let (next, _) = before
        .state()
        .settle(
            &params,
            Version(1),
            Party::A,
            IntervalIndex(101),
            WattHours(100),
        )
        .unwrap();
    let (_c, mut s) = m.connect(&victim).await;
    let forged = Message::Propose(ProposalParts {
        state: next.clone(),
        proposer: Party::A,
        sig: key(7).sign(&next.digest()),
    });
    s.write_prefixed(&forged.encode()).await.unwrap();
    expect_disconnect(&mut reports, "bad signature").await;

    // 4. A proposal that creates money, validly signed.
    let mut rich = next.clone();
    rich.balance_a.0 += 1_000;
    let (_c, mut s) = m.connect(&victim).await;
    let forged = Message::Propose(ProposalParts {
        sig: m.key.sign(&rich.digest()),
        state: rich,
        proposer: Party::A,
    });
    s.write_prefixed(&forged.encode()).await.unwrap();
    expect_disconnect(&mut reports, "balances add up to").await;

    let (phase, after) = state(victim.clone()).await;
    assert_eq!(phase, Phase::Open);
    assert_eq!(after, before, "the channel is unchanged");
    assert_eq!(after.version(), Version(0));
}
