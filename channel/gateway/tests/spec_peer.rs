//! A hostile neighbour written from specs/protocol.md alone: its frames are built byte by byte
//! from the spec's tables ("Frames", "Payload encoding"), not with this crate's encoder, and the
//! gateway's answers are read the same way. (Digests and signatures come from the core: they
//! are specs/encoding.md's, pinned by its vectors.) If this needed the code to know a byte, the
//! spec would be missing it.

use gridchan_harness::key;
use std::time::Duration;

use gridchan_channel::{ChannelParams, Signer, State, Tariff};
use gridchan_fixtures::{engine_at, flat_channel};
use gridchan_gateway::engine::EngineHandle;
use gridchan_transport::{Connection, Endpoint, FrameReader, FrameWriter, Limits};

/// A `varint` of the spec's table.
fn varint(out: &mut Vec<u8>, v: u64) {
    if v < 251 {
        out.push(v as u8);
    } else if v <= u64::from(u16::MAX) {
        out.push(0xFB);
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v <= u64::from(u32::MAX) {
        out.push(0xFC);
        out.extend_from_slice(&(v as u32).to_le_bytes());
    } else {
        out.push(0xFD);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Reads a `varint` at `at`, moving past it.
fn read_varint(b: &[u8], at: &mut usize) -> u64 {
    let first = b[*at];
    *at += 1;
    let take = |n: usize, at: &mut usize| {
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(&b[*at..*at + n]);
        *at += n;
        u64::from_le_bytes(v)
    };
    match first {
        0xFB => take(2, at),
        0xFC => take(4, at),
        0xFD => take(8, at),
        n => u64::from(n),
    }
}

/// `ChannelParams` of the spec's table (a flat tariff), its `terms` the plain tariff.
fn params_bytes(p: &ChannelParams) -> Vec<u8> {
    params_bytes_with(p, None)
}

/// `ChannelParams` with `terms` variant 4 when `evidence` is given: the flat tariff, then
/// `meter_a` and `meter_b` as option<NodeId> (`0`, or `1` and the 33-byte key).
fn params_bytes_with(p: &ChannelParams, evidence: Option<[Option<[u8; 33]>; 2]>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&p.party_a.to_bytes());
    out.extend_from_slice(&p.party_b.to_bytes());
    out.extend_from_slice(&p.nonce);
    for v in [
        p.deposit_a.0,
        p.deposit_b.0,
        p.challenge_window_blocks,
        p.funding_window_blocks,
        u64::from(p.interval_seconds),
        u64::from(p.tolerance.absolute_wh),
        u64::from(p.tolerance.permille),
        p.opened_at.0,
    ] {
        varint(&mut out, v);
    }
    let Tariff::Flat(price) = &p.tariff else {
        panic!("this double speaks flat tariffs")
    };
    if evidence.is_some() {
        varint(&mut out, 4);
    }
    varint(&mut out, 0);
    varint(&mut out, price.0);
    for meter in evidence.into_iter().flatten() {
        match meter {
            None => out.push(0),
            Some(key) => {
                out.push(1);
                out.extend_from_slice(&key);
            }
        }
    }
    out
}

/// `State` of the spec's table.
fn state_bytes(s: &State) -> Vec<u8> {
    let mut out = s.channel_id.0.to_vec();
    for v in [
        s.version.0,
        s.balance_a.0,
        s.balance_b.0,
        s.energy_a_to_b.0,
        s.energy_b_to_a.0,
        s.last_interval.0,
    ] {
        varint(&mut out, v);
    }
    out.push(u8::from(s.is_final));
    out.extend_from_slice(&s.book);
    out
}

/// A whole frame: length, protocol version 1, type, payload.
fn frame(message_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = ((payload.len() + 3) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&1u16.to_be_bytes());
    out.push(message_type);
    out.extend_from_slice(payload);
    out
}

struct Double {
    key: Signer,
    endpoint: Endpoint,
}

impl Double {
    fn new() -> Double {
        Double {
            key: key(1),
            endpoint: Endpoint::bind("127.0.0.1:0".parse().unwrap(), key(1), Limits::default())
                .unwrap(),
        }
    }

    /// Dials the victim and opens the frame stream (the spec's "stream 2"); the frames are
    /// written as raw bytes.
    async fn connect(&self, victim: &EngineHandle) -> (Connection, FrameReader, FrameWriter) {
        let conn = self.endpoint.connect(&victim.address).await.unwrap();
        let (reader, writer) = conn.open_stream().await.unwrap().split();
        (conn, reader, writer)
    }

    /// `OpenChannel`: type 1, the parameters, A's signature on version 0.
    fn open(&self, p: &ChannelParams) -> Vec<u8> {
        self.open_with(p, params_bytes(p))
    }

    /// `OpenChannel` with the parameters' bytes as given, signed as `p`'s version 0.
    fn open_with(&self, p: &ChannelParams, params: Vec<u8>) -> Vec<u8> {
        let mut payload = params;
        payload.extend_from_slice(&self.key.sign(&State::initial(p).digest()).0);
        frame(1, &payload)
    }
}

/// The next frame's body (after its length), within 10 s.
async fn next(stream: &mut FrameReader) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(10), stream.read_frame())
        .await
        .expect("an answer in time")
        .unwrap()
        .expect("a frame")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_written_from_the_spec_is_answered_and_refused_as_the_spec_says() {
    let dir = tempfile::tempdir().unwrap();
    let victim = engine_at(dir.path(), 2);
    let double = Double::new();
    let (conn, mut reader, mut writer) = double.connect(&victim).await;
    let mut p = flat_channel(
        victim.node,
        5_000_000,
        200_000,
        gridchan_channel::IntervalIndex(100),
        [1; 32],
    )
    .params(double.key.id());

    // 1. A challenge window of 2^64 - 1 blocks: `Refuse` (type 5) for version 0, reason 18
    //    (`BadParams`) with the text; the connection stays.
    p.challenge_window_blocks = u64::MAX;
    writer.write_raw(&double.open(&p)).await.unwrap();
    let body = next(&mut reader).await;
    assert_eq!(&body[..3], &[0, 1, 5], "version 1, type 5 (Refuse)");
    let mut at = 3;
    assert_eq!(&body[at..at + 32], &p.channel_id().0);
    at += 32;
    assert_eq!(read_varint(&body, &mut at), 0, "version 0");
    assert_eq!(read_varint(&body, &mut at), 18, "BadParams");
    let len = read_varint(&body, &mut at) as usize;
    let why = std::str::from_utf8(&body[at..at + len]).unwrap();
    assert!(why.contains("maximum"), "{why}");
    assert_eq!(at + len, body.len(), "nothing after the reason");

    // 2. Acceptable terms: `AcceptChannel` (type 2), the channel id and B's signature on
    //    version 0.
    p.challenge_window_blocks = 20;
    let id = p.channel_id();
    writer.write_raw(&double.open(&p)).await.unwrap();
    let body = next(&mut reader).await;
    assert_eq!(&body[..3], &[0, 1, 2], "type 2 (AcceptChannel)");
    assert_eq!(&body[3..35], &id.0);
    assert_eq!(body.len(), 3 + 32 + 65);
    let sig_b: [u8; 65] = body[35..].try_into().unwrap();
    let v0 = State::initial(&p);
    assert_eq!(
        gridchan_channel::Signature(sig_b)
            .recover(&v0.digest())
            .unwrap(),
        victim.node,
        "B signed version 0"
    );

    // 3. On a new connection, a `Reestablish` (type 6) with version 0 signed by both and a
    //    highest signed version of 2^64 - 1: the victim closes the connection and says why.
    drop((reader, writer));
    conn.close("reconnecting");
    let (conn, _reader, mut writer) = double.connect(&victim).await;
    let mut payload = id.0.to_vec();
    payload.extend_from_slice(&state_bytes(&v0));
    payload.extend_from_slice(&double.key.sign(&v0.digest()).0);
    payload.extend_from_slice(&sig_b);
    payload.push(0); // no proposal
    varint(&mut payload, u64::MAX);
    writer.write_raw(&frame(6, &payload)).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("closed in time");
    assert!(
        reason.contains("claims version 18446744073709551615"),
        "{reason}"
    );
    let channel = victim.channel(id).await.unwrap().unwrap();
    assert_eq!(
        channel.current.unwrap().version(),
        gridchan_channel::Version(0)
    );

    // 4. `Announce` (type 7): interval, import, export, `shares` as an option<Shares>, then
    //    `reading` as an option<SignedReading> (`0`: none). Round 2's shares (`1`, sell, buy)
    //    decode and change no channel; an option tag of `2` is not an option: the victim closes
    //    the connection.
    let (conn, _reader, mut writer) = double.connect(&victim).await;
    let announce = |tag: u8| {
        let mut payload = Vec::new();
        varint(&mut payload, 1_929_784);
        varint(&mut payload, 0);
        varint(&mut payload, 1_250);
        payload.push(tag);
        varint(&mut payload, 625);
        varint(&mut payload, 0);
        payload.push(0);
        frame(7, &payload)
    };
    writer.write_raw(&announce(1)).await.unwrap();
    writer.write_raw(&announce(2)).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("closed in time");
    assert!(
        reason.contains("decode") || reason.contains("malformed"),
        "{reason}"
    );
    let channel = victim.channel(id).await.unwrap().unwrap();
    assert_eq!(
        channel.current.unwrap().version(),
        gridchan_channel::Version(0)
    );

    // 5. `OpenChannel` whose terms (variant 4) name a meter for the victim, which has no signing
    //    meter: `Refuse` for version 0, `BadParams` saying so; the channel id covers the
    //    evidence (encoding.md, "Terms").
    let (conn, mut reader, mut writer) = double.connect(&victim).await;
    let meter = key(9).id();
    let mut signed = p.clone();
    signed.nonce = [5; 32];
    signed.evidence = gridchan_channel::Evidence {
        meter_a: None,
        meter_b: Some(meter),
    };
    let bytes = params_bytes_with(&signed, Some([None, Some(meter.to_bytes())]));
    writer
        .write_raw(&double.open_with(&signed, bytes))
        .await
        .unwrap();
    // (The victim first reestablishes the channel of step 2: type 6.)
    let body = loop {
        let body = next(&mut reader).await;
        if body[2] != 6 {
            break body;
        }
    };
    assert_eq!(&body[..3], &[0, 1, 5], "type 5 (Refuse)");
    assert_eq!(&body[3..35], &signed.channel_id().0);
    let mut at = 35;
    assert_eq!(read_varint(&body, &mut at), 0, "version 0");
    assert_eq!(read_varint(&body, &mut at), 18, "BadParams");
    let len = read_varint(&body, &mut at) as usize;
    let why = std::str::from_utf8(&body[at..at + len]).unwrap();
    assert!(why.contains("does not sign its readings"), "{why}");

    // 6. Terms variant 4 naming no meter at all is not an encoding (the plain tariff is the
    //    only one of those terms): the victim closes the connection.
    let mut none = p.clone();
    none.nonce = [6; 32];
    let bytes = params_bytes_with(&none, Some([None, None]));
    writer
        .write_raw(&double.open_with(&none, bytes))
        .await
        .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("closed in time");
    assert!(
        reason.contains("decode") || reason.contains("malformed"),
        "{reason}"
    );
    assert!(victim.channel(none.channel_id()).await.unwrap().is_none());
}
