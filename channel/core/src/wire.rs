//! Wire messages between two gateways, and their framing.
//!
//! A frame is `length: u32 BE | protocol version: u16 BE | message type: u8 | payload`, where
//! `length` counts everything after itself and the payload is the message's bincode 2 encoding
//! (standard configuration: little-endian, variable-length integers). See `specs/protocol.md`.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::crypto::Signature;
use crate::market::{Enrol, MarketTerms, OrderMessage, OrderRefusal, Part, Receipt};
use crate::params::ChannelParams;
use crate::signed::{ProposalParts, SignedStateParts};
use crate::state::Refusal;
use crate::types::{ChannelId, IntervalIndex, Version};

/// The protocol version every frame carries.
pub const PROTOCOL_VERSION: u16 = 1;
/// The largest frame accepted, header included. Every message fits in well under 2 KiB.
pub const MAX_FRAME: usize = 16 * 1024;
/// Bytes before the payload: length, version, type.
pub const HEADER_LEN: usize = 7;

type WireConfig = Configuration<LittleEndian, Varint, Limit<MAX_FRAME>>;

fn config() -> WireConfig {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

/// A message between two gateways.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A proposes a channel and signs its version 0.
    OpenChannel(Box<OpenChannel>),
    /// B accepts the channel and countersigns version 0.
    AcceptChannel(AcceptChannel),
    /// The owed party proposes the next state with its signature.
    Propose(ProposalParts),
    /// The other party's signature on a proposed state.
    Countersign(Countersign),
    /// A proposal or channel is refused, with the reason.
    Refuse(Refuse),
    /// After a (re)connection: what this side holds for one channel.
    Reestablish(Box<Reestablish>),
    /// This gateway's meter totals for an interval, told to every neighbour so that both ends
    /// of each channel compute the same flow (see `specs/protocol.md`, "Allocation").
    Announce(Announce),
    /// A member tells the market node the pseudonym it orders with (`specs/market.md`).
    Enrol(Enrol),
    /// A member's signed order for an interval, with its meter's signed reading when its
    /// meter signs.
    Order(Box<OrderMessage>),
    /// The market node took an order.
    Receipt(Receipt),
    /// The market node did not take an order, and why.
    OrderRefused(OrderRefused),
    /// One part of a roster or a book the market node publishes.
    Part(Part),
    /// The market node's terms, sent to every peer that connects and to one that asks (what
    /// `market join` opens a channel under).
    Terms(Box<MarketTerms>),
    /// A gateway asks a market node for its terms (no payload).
    AskTerms,
}

/// The market node's answer to an order (or an enrolment, with `interval` 0) it did not take.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRefused {
    pub interval: IntervalIndex,
    pub reason: OrderRefusal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenChannel {
    pub params: ChannelParams,
    pub sig_a: Signature,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptChannel {
    pub channel_id: ChannelId,
    pub sig_b: Signature,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Countersign {
    pub channel_id: ChannelId,
    pub version: Version,
    pub sig: Signature,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refuse {
    pub channel_id: ChannelId,
    pub version: Version,
    pub reason: Refusal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reestablish {
    pub channel_id: ChannelId,
    /// The newest state this side holds signed by both.
    pub current: SignedStateParts,
    /// This side's own proposal still waiting for a countersignature, if any.
    pub proposal: Option<ProposalParts>,
    /// The highest version this side has ever signed.
    pub highest_signed: Version,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    pub interval: crate::types::IntervalIndex,
    pub import: crate::types::WattHours,
    pub export: crate::types::WattHours,
    /// `None` in round 1 (the totals alone); in round 2 the sender's shares with the
    /// recipient ([`crate::allocate`]).
    pub shares: Option<crate::allocate::Shares>,
    /// The sender's meter's own signed reading of the interval (`specs/readings.md`), when its
    /// meter signs; a neighbour whose channel requires signed readings takes the totals only
    /// as that reading says.
    pub reading: Option<crate::reading::SignedReading>,
}

/// Why bytes from a peer are not a message. Every variant costs the peer its connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame is larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    Oversized(usize),
    /// The frame is shorter than its header or than its length field says.
    #[error("truncated frame")]
    Truncated,
    /// A protocol version this implementation does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    /// An unknown message type.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// The payload does not decode as its message type, or has trailing bytes.
    #[error("malformed {kind} payload: {detail}")]
    Malformed { kind: &'static str, detail: String },
}

impl Message {
    fn type_byte(&self) -> u8 {
        match self {
            Message::OpenChannel(_) => 1,
            Message::AcceptChannel(_) => 2,
            Message::Propose(_) => 3,
            Message::Countersign(_) => 4,
            Message::Refuse(_) => 5,
            Message::Reestablish(_) => 6,
            Message::Announce(_) => 7,
            Message::Enrol(_) => 8,
            Message::Order(_) => 9,
            Message::Receipt(_) => 10,
            Message::OrderRefused(_) => 11,
            Message::Part(_) => 12,
            Message::Terms(_) => 13,
            Message::AskTerms => 14,
        }
    }

    /// The channel this message is about (for an open: the id its parameters hash to);
    /// `None` for gateway-wide messages.
    pub fn channel_id(&self) -> Option<ChannelId> {
        Some(match self {
            Message::OpenChannel(m) => m.params.channel_id(),
            Message::AcceptChannel(m) => m.channel_id,
            Message::Propose(m) => m.state.channel_id,
            Message::Countersign(m) => m.channel_id,
            Message::Refuse(m) => m.channel_id,
            Message::Reestablish(m) => m.channel_id,
            Message::Announce(_)
            | Message::Enrol(_)
            | Message::Order(_)
            | Message::Receipt(_)
            | Message::OrderRefused(_)
            | Message::Part(_)
            | Message::Terms(_)
            | Message::AskTerms => return None,
        })
    }

    /// Encodes this message as one frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; HEADER_LEN];
        let payload = match self {
            Message::OpenChannel(m) => encode_payload(m, &mut out),
            Message::AcceptChannel(m) => encode_payload(m, &mut out),
            Message::Propose(m) => encode_payload(m, &mut out),
            Message::Countersign(m) => encode_payload(m, &mut out),
            Message::Refuse(m) => encode_payload(m, &mut out),
            Message::Reestablish(m) => encode_payload(m, &mut out),
            Message::Announce(m) => encode_payload(m, &mut out),
            Message::Enrol(m) => encode_payload(m, &mut out),
            Message::Order(m) => encode_payload(m, &mut out),
            Message::Receipt(m) => encode_payload(m, &mut out),
            Message::OrderRefused(m) => encode_payload(m, &mut out),
            Message::Part(m) => encode_payload(m, &mut out),
            Message::Terms(m) => encode_payload(m, &mut out),
            Message::AskTerms => Ok(0),
        };
        debug_assert!(payload.is_ok(), "our own messages always encode");
        let len = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        out[4..6].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        out[6] = self.type_byte();
        out
    }

    /// Decodes exactly one frame. Never panics, whatever the bytes.
    pub fn decode(frame: &[u8]) -> Result<Message, WireError> {
        if frame.len() > MAX_FRAME {
            return Err(WireError::Oversized(frame.len()));
        }
        let len = frame_length(frame)?.ok_or(WireError::Truncated)?;
        if frame.len() != len {
            return Err(WireError::Truncated);
        }
        Message::decode_body(&frame[4..])
    }

    /// Decodes a frame's body (what follows its 4-byte length, which a stream reader already
    /// took off): version, type, payload. The same checks as [`Message::decode`], without
    /// copying the body behind a length again.
    pub fn decode_body(body: &[u8]) -> Result<Message, WireError> {
        let total = body.len().saturating_add(4);
        if total > MAX_FRAME {
            return Err(WireError::Oversized(total));
        }
        if total < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let version = u16::from_be_bytes([body[0], body[1]]);
        if version != PROTOCOL_VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        let payload = &body[HEADER_LEN - 4..];
        Ok(match body[2] {
            1 => Message::OpenChannel(decode_payload(payload, "open_channel")?),
            2 => Message::AcceptChannel(decode_payload(payload, "accept_channel")?),
            3 => Message::Propose(decode_payload(payload, "propose")?),
            4 => Message::Countersign(decode_payload(payload, "countersign")?),
            5 => Message::Refuse(decode_payload(payload, "refuse")?),
            6 => Message::Reestablish(decode_payload(payload, "reestablish")?),
            7 => Message::Announce(decode_payload(payload, "announce")?),
            8 => Message::Enrol(decode_payload(payload, "enrol")?),
            9 => Message::Order(decode_payload(payload, "order")?),
            10 => Message::Receipt(decode_payload(payload, "receipt")?),
            11 => Message::OrderRefused(decode_payload(payload, "order_refused")?),
            12 => Message::Part(decode_payload(payload, "part")?),
            13 => Message::Terms(decode_payload(payload, "terms")?),
            14 => {
                decode_payload::<()>(payload, "ask_terms")?;
                Message::AskTerms
            }
            other => return Err(WireError::UnknownType(other)),
        })
    }
}

/// The total length of the frame that starts `buf`, once its length field is there:
/// `Ok(None)` if fewer than 4 bytes arrived, an error if the frame would exceed [`MAX_FRAME`]
/// or is too short to hold a header. Lets a reader refuse an oversized frame before buffering it.
pub fn frame_length(buf: &[u8]) -> Result<Option<usize>, WireError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let declared = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    let total = declared.saturating_add(4);
    if total > MAX_FRAME {
        return Err(WireError::Oversized(total));
    }
    if total < HEADER_LEN {
        return Err(WireError::Truncated);
    }
    Ok(Some(total))
}

fn encode_payload<T: Serialize>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<usize, bincode::error::EncodeError> {
    bincode::serde::encode_into_std_write(value, out, config())
}

fn decode_payload<T: DeserializeOwned>(payload: &[u8], kind: &'static str) -> Result<T, WireError> {
    let (value, used) =
        bincode::serde::decode_from_slice::<T, _>(payload, config()).map_err(|e| {
            WireError::Malformed {
                kind,
                detail: e.to_string(),
            }
        })?;
    if used != payload.len() {
        return Err(WireError::Malformed {
            kind,
            detail: format!("{} trailing bytes", payload.len() - used),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::crypto::Signer;
    use crate::state::State;
    use crate::types::{Amount, IntervalIndex, Party, WattHours};

    /// Every enum's variant numbers on the wire are the spec's (specs/protocol.md, "Payload
    /// encoding"): a reordering of the Rust declarations fails here.
    #[test]
    fn variant_numbers_are_the_specs() {
        // A `Refuse` payload: channel id (32 bytes), version 7 (one byte), then the reason's
        // variant number (below 251: one byte).
        for (i, reason) in crate::frame_vectors::every_refusal()
            .into_iter()
            .enumerate()
        {
            assert_eq!(reason.variant() as usize, i, "{}", reason.name());
            let frame = Message::Refuse(Refuse {
                channel_id: ChannelId([0; 32]),
                version: Version(7),
                reason: reason.clone(),
            })
            .encode();
            assert_eq!(frame[HEADER_LEN + 32], 7);
            assert_eq!(
                u32::from(frame[HEADER_LEN + 33]),
                reason.variant(),
                "{}",
                reason.name()
            );
        }
        // Party: A = 0, B = 1 (the byte after a state's 8 fields in a `Propose`).
        let state = sample_state();
        for (party, number) in [(Party::A, 0u8), (Party::B, 1)] {
            let body = Message::Propose(ProposalParts {
                state: state.clone(),
                proposer: party,
                sig: Signature([0; 65]),
            })
            .encode();
            let at = body.len() - 65 - 1;
            assert_eq!(body[at], number);
        }
        // Tariff: flat = 0, time of use = 1 (the byte before the price table).
        use crate::tariff::{Tariff, TimeOfUse};
        let flat =
            bincode::serde::encode_to_vec(Tariff::Flat(crate::types::PricePerKwh(9)), config())
                .unwrap();
        assert_eq!(flat, [0, 9]);
        let tou = Tariff::TimeOfUse(Box::new(TimeOfUse {
            utc_offset_minutes: -1,
            weekday: [crate::types::PricePerKwh(1); 24],
            weekend: [crate::types::PricePerKwh(2); 24],
        }));
        let tou = bincode::serde::encode_to_vec(tou, config()).unwrap();
        assert_eq!(tou[..2], [1, 1], "variant 1, then -1 as zigzag 1");
        assert_eq!(tou.len(), 2 + 48);
        // The message types.
        let types: Vec<u8> = crate::frame_vectors::compute()
            .iter()
            .map(|v| v.message_type)
            .collect();
        for t in 1..=7u8 {
            assert!(types.contains(&t));
        }
    }

    /// The integer encoding the spec states: one byte below 251, then 0xFB/0xFC/0xFD with 2, 4
    /// or 8 bytes little-endian. A decoder takes a longer form than needed (nothing signed
    /// depends on the wire bytes); a value beyond the field's width, and a bool other than 0
    /// or 1, are refused.
    #[test]
    fn integers_and_bools_encode_as_the_spec_says() {
        let enc = |v: u64| bincode::serde::encode_to_vec(v, config()).unwrap();
        assert_eq!(enc(250), [250]);
        assert_eq!(enc(251), [0xFB, 251, 0]);
        assert_eq!(enc(65_536), [0xFC, 0, 0, 1, 0]);
        assert_eq!(enc(1 << 32), [0xFD, 0, 0, 0, 0, 1, 0, 0, 0]);
        let dec = |b: &[u8]| decode_payload::<u64>(b, "test");
        assert_eq!(dec(&[0xFB, 251, 0]), Ok(251));
        assert_eq!(dec(&[0xFB, 7, 0]), Ok(7), "7 in the 3-byte form");
        assert!(decode_payload::<u32>(&[0xFD, 0, 0, 0, 0, 1, 0, 0, 0], "test").is_err());
        assert!(decode_payload::<u16>(&[0xFC, 0, 0, 1, 0], "test").is_err());
        assert!(decode_payload::<bool>(&[2], "test").is_err());
    }

    fn sample_state() -> State {
        State {
            channel_id: ChannelId([3; 32]),
            version: Version(12),
            balance_a: Amount(5),
            balance_b: Amount(7),
            energy_a_to_b: WattHours(100),
            energy_b_to_a: WattHours(200),
            last_interval: IntervalIndex(1_929_700),
            is_final: false,
            book: [4; 32],
            funds: Default::default(),
        }
    }

    fn samples() -> Vec<Message> {
        let signer = Signer::new(&[5; 32], &[0; 32]).unwrap();
        let sig = signer.sign(&[1; 32]);
        let parts = SignedStateParts {
            state: sample_state(),
            sig_a: sig,
            sig_b: sig,
        };
        let proposal = ProposalParts {
            state: sample_state(),
            proposer: Party::B,
            sig,
        };
        vec![
            Message::Propose(proposal.clone()),
            Message::Countersign(Countersign {
                channel_id: ChannelId([3; 32]),
                version: Version(12),
                sig,
            }),
            Message::Refuse(Refuse {
                channel_id: ChannelId([3; 32]),
                version: Version(12),
                reason: Refusal::OutsideTolerance {
                    billed: 10,
                    reading: 5,
                },
            }),
            Message::Reestablish(Box::new(Reestablish {
                channel_id: ChannelId([3; 32]),
                current: parts,
                proposal: Some(proposal),
                highest_signed: Version(13),
            })),
            Message::AcceptChannel(AcceptChannel {
                channel_id: ChannelId([3; 32]),
                sig_b: sig,
            }),
            Message::Announce(Announce {
                interval: IntervalIndex(1_929_700),
                import: WattHours(0),
                export: WattHours(420),
                shares: Some(crate::allocate::Shares {
                    sell: WattHours(210),
                    buy: WattHours(0),
                }),
                reading: None,
            }),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            let frame = m.encode();
            assert!(frame.len() < 1024, "{} bytes", frame.len());
            assert_eq!(frame_length(&frame), Ok(Some(frame.len())));
            assert_eq!(Message::decode(&frame), Ok(m));
        }
    }

    #[test]
    fn a_frame_shorter_than_its_header_is_truncated() {
        assert_eq!(frame_length(&[0, 0, 0, 1]), Err(WireError::Truncated));
        assert_eq!(frame_length(&[0, 0]), Ok(None));
        assert_eq!(
            Message::decode(&[0, 0, 0, 3, 0, 1]),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn a_body_decodes_as_its_whole_frame_does() {
        for m in samples() {
            let frame = m.encode();
            assert_eq!(Message::decode_body(&frame[4..]), Ok(m));
        }
        assert_eq!(
            Message::decode_body(&vec![0u8; MAX_FRAME]),
            Err(WireError::Oversized(MAX_FRAME + 4))
        );
        assert_eq!(Message::decode_body(&[0, 1]), Err(WireError::Truncated));
    }

    proptest! {
        #[test]
        fn bodies_decode_exactly_as_frames(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let mut frame = (bytes.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&bytes);
            prop_assert_eq!(Message::decode_body(&bytes), Message::decode(&frame));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn corrupted_frames_never_panic(which in 0usize..6, flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut frame = samples()[which].encode();
            for (at, byte) in flips {
                let i = at % frame.len();
                frame[i] ^= byte;
            }
            let _ = Message::decode(&frame);
        }
    }
}
