//! Two endpoints on 127.0.0.1: keys proven, impostors refused, frames bounded.

use std::time::Duration;

use gridchan_channel::Signer;
use gridchan_transport::{Endpoint, FrameError, Limits, PeerAddr};

fn endpoint(byte: u8) -> Endpoint {
    let signer = Signer::new(&[byte; 32], &[byte; 32]).unwrap();
    Endpoint::bind("127.0.0.1:0".parse().unwrap(), signer, Limits::default()).unwrap()
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("finished in time")
}

#[tokio::test]
async fn both_sides_learn_the_proven_key_and_exchange_frames() {
    let (server, client) = (endpoint(1), endpoint(2));
    let addr = server.peer_addr();
    let accept = tokio::spawn({
        let server = server.clone();
        async move {
            let conn = server.accept().await.unwrap();
            let mut stream = conn.accept_stream().await.unwrap();
            let frame = stream.read_frame().await.unwrap().unwrap();
            stream.write_frame(&frame).await.unwrap();
            stream.finish();
            let peer = conn.peer;
            // Keep the connection until the client is done with it.
            conn.closed().await;
            peer
        }
    });
    let conn = within(client.connect(&addr)).await.unwrap();
    assert_eq!(conn.peer, server.node());
    let mut stream = conn.open_stream().await.unwrap();
    stream.write_frame(b"hello").await.unwrap();
    assert_eq!(
        within(stream.read_frame()).await.unwrap().unwrap(),
        b"hello"
    );
    conn.close("done");
    assert_eq!(within(accept).await.unwrap(), client.node());
}

#[tokio::test]
async fn a_peer_proving_another_key_than_its_address_is_refused() {
    let (server, client, other) = (endpoint(1), endpoint(2), endpoint(3));
    tokio::spawn({
        let server = server.clone();
        async move {
            let mut open = Vec::new();
            while let Some(conn) = server.accept().await {
                open.push(conn);
            }
        }
    });
    // The address names node 3, but node 1 answers there.
    let lie = PeerAddr {
        node: other.node(),
        addr: server.local_addr(),
    };
    let err = within(client.connect(&lie)).await.err().expect("refused");
    let text = err.to_string();
    assert!(text.contains("failed authentication"), "{text}");
    assert!(text.contains(&server.node().to_string()), "{text}");
}

#[tokio::test]
async fn an_oversized_frame_is_refused_from_its_length() {
    let server = endpoint(1);
    // A peer whose own limit is larger sends a frame above ours.
    let big = Limits {
        max_frame: 1 << 20,
        ..Limits::default()
    };
    let client = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        Signer::new(&[2; 32], &[0; 32]).unwrap(),
        big,
    )
    .unwrap();
    let limit = Limits::default().max_frame;
    let addr = server.peer_addr();
    let accept = tokio::spawn({
        let server = server.clone();
        async move {
            let conn = server.accept().await.unwrap();
            let mut stream = conn.accept_stream().await.unwrap();
            stream.read_frame().await
        }
    });
    let conn = within(client.connect(&addr)).await.unwrap();
    let mut stream = conn.open_stream().await.unwrap();
    let _ = stream.write_frame(&vec![0u8; limit * 2]).await;
    let result = within(accept).await.unwrap();
    assert!(
        matches!(result, Err(FrameError::Oversized(n, l)) if n == limit * 2 && l == limit),
        "{result:?}"
    );
    // Our own writer refuses to send a frame above its limit.
    let server2 = endpoint(3);
    let c2 = endpoint(4);
    tokio::spawn({
        let s = server2.clone();
        async move {
            let conn = s.accept().await.unwrap();
            let _ = conn.accept_stream().await;
            conn.closed().await;
        }
    });
    let conn = within(c2.connect(&server2.peer_addr())).await.unwrap();
    let mut stream = conn.open_stream().await.unwrap();
    assert!(matches!(
        stream.write_frame(&vec![0u8; limit + 1]).await,
        Err(FrameError::Oversized(..))
    ));
}

#[tokio::test]
async fn a_key_proof_from_another_connection_does_not_verify() {
    // The proof signs the connection's exporter secret; a replayed hello cannot match a new
    // connection's secret. Checked directly on the proof function.
    let signer = Signer::new(&[7; 32], &[0; 32]).unwrap();
    let km1 = [1u8; 32];
    let km2 = [2u8; 32];
    let hello = gridchan_transport::testing::hello(&signer, &km1);
    assert!(gridchan_transport::testing::check(&hello, &km1).is_some());
    assert!(gridchan_transport::testing::check(&hello, &km2).is_none());
}

#[tokio::test]
async fn a_client_that_never_proves_its_key_delays_nobody_else() {
    let server = endpoint(1);
    let addr = server.peer_addr();
    let accepting = tokio::spawn({
        let server = server.clone();
        async move {
            let mut peers = Vec::new();
            while let Some(c) = server.accept().await {
                peers.push(c.peer);
                if peers.len() == 3 {
                    return peers;
                }
            }
            peers
        }
    });
    // Three silent clients hold handshakes open (each until the 10 s handshake timeout).
    let mut silent = Vec::new();
    for b in 20..23 {
        silent.push(endpoint(b).connect_without_proof(addr.addr).await.unwrap());
    }
    // Honest clients are still accepted at once, well inside that timeout.
    let mut honest = Vec::new();
    for b in 30..33 {
        let client = endpoint(b);
        let conn = tokio::time::timeout(Duration::from_secs(3), client.connect(&addr))
            .await
            .expect("accepted without waiting for the silent clients")
            .unwrap();
        honest.push((client, conn));
    }
    let peers = within(accepting).await.unwrap();
    let expected: Vec<_> = (30..33).map(|b| endpoint(b).node()).collect();
    assert_eq!(peers, expected);
    drop(silent);
}

mod hostile_proofs {
    use gridchan_transport::testing;
    use proptest::prelude::*;

    proptest! {
        /// The proptest twin of the key-proof part of the `wire_decode` fuzz target: arbitrary
        /// bytes never panic and never verify; a real proof changed anywhere stops verifying.
        #[test]
        fn arbitrary_or_altered_proofs_never_verify(
            bytes in prop::collection::vec(any::<u8>(), 98),
            km in any::<[u8; 32]>(),
            at in 0usize..98,
            flip in 1u8..=255,
        ) {
            let hello: [u8; 98] = bytes.try_into().unwrap();
            prop_assert!(testing::check(&hello, &km).is_none());
            let signer = gridchan_channel::Signer::new(&[3; 32], &[0; 32]).unwrap();
            let mut real = testing::hello(&signer, &km);
            prop_assert_eq!(testing::check(&real, &km), Some(signer.id()));
            real[at] ^= flip;
            prop_assert_ne!(testing::check(&real, &km), Some(signer.id()));
        }
    }
}
