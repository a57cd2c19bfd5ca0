//! # gridchan-channel: the channel protocol core
//!
//! Two neighbours' home energy gateways keep a bidirectional payment channel. Every metering
//! interval the party that is owed proposes a new balance state with its signature; the other
//! checks the energy against its own meter and the price against the tariff, and countersigns.
//! A state counts only with both signatures; the newest one wins on the ledger.
//!
//! This crate is the protocol and nothing else: it does no I/O, has no clock and no randomness
//! of its own. A host (the gateway daemon, the test harness) feeds [`Input`]s to a [`Node`] and
//! carries out the [`Output`]s: messages to send, records to persist, ledger requests, states
//! for watchtowers. An output that carries our signature is released only after the host has
//! acknowledged the persist it depends on ([`Input::Persisted`]).
//!
//! Layout, bottom up:
//! - [`types`]: newtypes that keep units apart (versions, amounts, watt-hours, intervals).
//! - [`crypto`]: node ids, addresses, 65-byte recoverable signatures.
//! - [`tariff`], [`params`], [`state`]: what both parties agree on and sign, with the
//!   32-byte-word encoding of `specs/encoding.md`.
//! - [`signed`]: [`SignedState`] and [`Proposal`], which exist only once their signatures
//!   were checked.
//! - [`wire`]: the messages and their frames.
//! - [`Node`] and the per-channel state machine; [`io`] holds inputs and outputs;
//!   [`consent`] the terms a gateway accepts in a neighbour's channel, and the proposals that
//!   wait for its owner.

pub mod abi;
pub mod allocate;
mod channel;

pub mod consent;
pub mod crypto;
pub mod frame_vectors;
pub mod io;
pub mod market;
pub mod metering;
mod node;
mod outbox;
pub mod params;
pub mod reading;
pub mod refusal;
pub mod signed;
pub mod state;
pub mod store;
pub mod tariff;
pub mod types;
pub mod vectors;
pub mod wire;

pub use channel::ChannelView;
pub use consent::{AcceptPolicy, Acceptance, Offer, TermsRefused};
pub use crypto::{
    Address, CryptoError, NodeId, Precomputed, Presigned, PresignedOne, Recovered, RecoveredOne,
    Signature, Signer,
};
pub use io::{
    ChannelRecord, Command, Event, FundsRecord, Input, IntervalReading, LedgerEvent, LedgerRequest,
    OpenRequest, Output, Phase, Policy, UpdateId,
};
pub use node::{CommandError, Node};
pub use params::{
    ChannelParams, Evidence, MeterTolerance, ParamsError, MAX_CHALLENGE_WINDOW_BLOCKS,
    MAX_FUNDING_WINDOW_BLOCKS,
};
pub use signed::{Proposal, ProposalParts, SignedState, SignedStateParts};
pub use state::{Funds, Refusal, State, Trade, NO_BOOK};
pub use store::{ChannelStore, MemoryStore, Settled, StoreError};
pub use tariff::{zone_rules, Tariff, TariffError, TimeOfUse, ZonedTimeOfUse};
pub use types::{
    Amount, AmountError, ChannelId, IntervalIndex, Party, PricePerKwh, Version, WattHours,
};
pub use wire::{Message, WireError};
