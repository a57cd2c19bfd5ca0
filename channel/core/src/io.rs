//! What goes into the state machine and what comes out: inputs from the host, outputs as data.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::crypto::NodeId;
use crate::params::{ChannelParams, MeterTolerance};
use crate::signed::{Proposal, SignedState};
use crate::state::{Refusal, Trade};
use crate::tariff::Tariff;
use crate::types::{Amount, ChannelId, IntervalIndex, Party, Version, WattHours};
use crate::wire::Message;

/// Identifies one persist request; the host acknowledges it with [`Input::Persisted`].
/// Ids are issued in increasing order and must be acknowledged in that order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpdateId(pub u64);

/// An input to the state machine.
#[derive(Clone, Debug)]
pub enum Input {
    /// A decoded message from a connected, authenticated peer.
    Message { from: NodeId, message: Message },
    /// A connection to `peer` is up: channels with it reestablish.
    Connected(NodeId),
    /// The connection to `peer` is gone.
    Disconnected(NodeId),
    /// This gateway's meter reading for one channel and interval.
    Reading {
        channel: ChannelId,
        reading: IntervalReading,
    },
    /// A market channel's settlement for one interval: on the market node, from the book it
    /// closed; on a member, from a book it checked (`specs/market.md`).
    Settlement {
        channel: ChannelId,
        settlement: crate::market::Settlement,
    },
    /// A member refused the book of `interval` (`specs/market.md`): a market proposal for it
    /// is refused at once, not held.
    BookRefused {
        channel: ChannelId,
        interval: IntervalIndex,
    },
    /// Something a person or the daemon asked for.
    Command(Command),
    /// Something the ledger reported about a channel.
    Ledger {
        channel: ChannelId,
        event: LedgerEvent,
    },
    /// The current time, in milliseconds since the Unix epoch. Timeouts only advance on ticks.
    Tick { now_ms: u64 },
    /// `version` of `channel` (and every older one) is acknowledged by at least the policy's
    /// `min_acks` watchtowers: the channel may sign beyond it.
    TowersAcked {
        channel: ChannelId,
        version: Version,
    },
    /// Our account's tokens on the ledger outside channels, as the host last read them: the
    /// accept policy's share of the balance is taken of it.
    Balance(Amount),
    /// The persist request and every earlier one are durable.
    Persisted(UpdateId),
    /// The persist request could not be written: its channel freezes.
    PersistFailed(UpdateId),
    /// A write the host makes for this channel besides its records (the ledger transaction it
    /// asked for) failed: the channel freezes until [`Command::RetryPersist`], as after a
    /// failed persist.
    WriteFailed(ChannelId),
}

/// A gateway's reading for one channel and one interval, after the daemon allocated its meter's
/// export and import across its channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntervalReading {
    pub interval: IntervalIndex,
    /// Energy this gateway delivered to the peer over this channel.
    pub delivered: WattHours,
    /// Energy this gateway took from the peer over this channel.
    pub received: WattHours,
    /// Everything this gateway's meter imported in the interval: no neighbour may bill more.
    pub metered_import: WattHours,
}

impl IntervalReading {
    /// We delivered `energy` to the peer in `interval`, and took nothing from it.
    pub fn selling(interval: IntervalIndex, energy: WattHours) -> IntervalReading {
        IntervalReading {
            interval,
            delivered: energy,
            received: WattHours(0),
            metered_import: WattHours(0),
        }
    }

    /// The peer delivered `energy` to us in `interval`, all of our meter's import.
    pub fn buying(interval: IntervalIndex, energy: WattHours) -> IntervalReading {
        IntervalReading {
            interval,
            delivered: WattHours(0),
            received: energy,
            metered_import: energy,
        }
    }
}

/// A request from a person or the daemon.
#[derive(Clone, Debug)]
pub enum Command {
    /// Propose a channel to `peer`, this node being party A.
    Open(Box<OpenRequest>),
    /// Close cooperatively: propose a final state.
    Close(ChannelId),
    /// Close unilaterally: register the newest state on the ledger.
    ForceClose(ChannelId),
    /// Try again to persist a channel frozen by a failed write.
    RetryPersist(ChannelId),
    /// The owner accepts a neighbour's proposal that waits for its answer.
    Accept(ChannelId),
    /// The owner declines a neighbour's proposal that waits for its answer, saying why.
    Reject { channel: ChannelId, reason: String },
    /// We withdraw our own proposal that the neighbour has not accepted yet.
    Cancel(ChannelId),
    /// Add `amount` of our account's tokens to an open channel: a ledger transaction, then a
    /// state that credits it once the ledger confirmed it.
    TopUp { channel: ChannelId, amount: Amount },
    /// Take `amount` of our balance out of an open channel: a state that withdraws it, signed
    /// by both, then a ledger transaction that pays it.
    Withdraw { channel: ChannelId, amount: Amount },
}

/// What a new channel should look like.
#[derive(Clone, Debug)]
pub struct OpenRequest {
    pub peer: NodeId,
    pub deposit: Amount,
    pub peer_deposit: Amount,
    pub tariff: Tariff,
    pub challenge_window_blocks: u64,
    pub funding_window_blocks: u64,
    pub interval_seconds: u32,
    pub tolerance: MeterTolerance,
    pub opened_at: IntervalIndex,
    /// What each party's energy figures rest on: their word, or their meters' signatures.
    pub evidence: crate::params::Evidence,
    /// Fresh randomness from the host, so channels between the same parties differ.
    pub nonce: [u8; 32],
}

impl OpenRequest {
    /// The channel's parameters when `me` opens it (as party A).
    pub fn params(self, me: NodeId) -> crate::ChannelParams {
        crate::ChannelParams {
            party_a: me,
            party_b: self.peer,
            nonce: self.nonce,
            deposit_a: self.deposit,
            deposit_b: self.peer_deposit,
            challenge_window_blocks: self.challenge_window_blocks,
            funding_window_blocks: self.funding_window_blocks,
            interval_seconds: self.interval_seconds,
            tolerance: self.tolerance,
            opened_at: self.opened_at,
            tariff: self.tariff,
            evidence: self.evidence,
        }
    }
}

/// What the ledger reported about a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerEvent {
    /// Both deposits arrived.
    Funded,
    /// The funding window passed without both deposits.
    FundingExpired,
    /// A state was registered (by either party) with this version.
    Registered { version: Version },
    /// A registration was refuted with a newer state of this version.
    Refuted { version: Version },
    /// The challenge window ended: the channel can be concluded.
    WindowClosed,
    /// The ledger paid out the state with this version.
    Concluded { version: Version },
    /// The ledger holds `total` of top-ups from `party` (cumulative).
    ToppedUp { party: Party, total: Amount },
    /// The ledger paid `party` withdrawals of `total` from the open channel (cumulative).
    Withdrawn { party: Party, total: Amount },
}

/// Something the host should submit to the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerRequest {
    /// Deposit our share into the channel.
    Deposit {
        params: Arc<ChannelParams>,
        amount: Amount,
    },
    /// Take back a deposit the peer never matched.
    Reclaim { channel: ChannelId },
    /// Start a unilateral close with our newest state.
    Register(SignedState),
    /// Answer an older registration with our newer state.
    Refute(SignedState),
    /// After the challenge window: pay out the newest state the ledger saw.
    Conclude { channel: ChannelId },
    /// Pay out a final state at once.
    ConcludeFinal(SignedState),
    /// Add our tokens to an open channel.
    TopUp { channel: ChannelId, amount: Amount },
    /// Pay the withdrawals a state signed by both makes (the channel stays open).
    Withdraw(SignedState),
}

impl LedgerRequest {
    /// The channel the request is about.
    pub fn channel(&self) -> ChannelId {
        match self {
            LedgerRequest::Deposit { params, .. } => params.channel_id(),
            LedgerRequest::Reclaim { channel }
            | LedgerRequest::Conclude { channel }
            | LedgerRequest::TopUp { channel, .. } => *channel,
            LedgerRequest::Register(s)
            | LedgerRequest::Refute(s)
            | LedgerRequest::ConcludeFinal(s)
            | LedgerRequest::Withdraw(s) => s.state().channel_id,
        }
    }
}

/// A notable thing that happened, for logs and user interfaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Both parties signed version 0.
    ChannelAgreed { channel: ChannelId, peer: NodeId },
    /// A state signed by both changed `party`'s top-ups or withdrawals (cumulative totals).
    FundsChanged {
        channel: ChannelId,
        version: Version,
        party: Party,
        topped_up: Amount,
        withdrawn: Amount,
    },
    /// The ledger confirmed `party`'s top-ups, or paid its withdrawals (cumulative totals).
    LedgerFunds {
        channel: ChannelId,
        party: Party,
        topped_up: Amount,
        withdrawn: Amount,
    },
    /// Both deposits are on the ledger: trading starts.
    ChannelOpen { channel: ChannelId },
    /// An interval settled: a new state signed by both.
    Settled {
        channel: ChannelId,
        version: Version,
        trade: Trade,
        /// The digest of the state that settled it, signed by both.
        digest: [u8; 32],
    },
    /// The peer refused our proposal (or we refused theirs) for an honest reason.
    Refused {
        channel: ChannelId,
        version: Version,
        by: Party,
        reason: Refusal,
    },
    /// Both proposed at once; the deterministic rule picked one.
    Crossed { channel: ChannelId, winner: Party },
    /// A neighbour proposes a channel on terms within our policy: it waits for the owner's
    /// `accept` or `reject` (see [`crate::Node::offers`]).
    Offered { channel: ChannelId, peer: NodeId },
    /// A proposal waited longer than the policy allows and was declined.
    OfferExpired { channel: ChannelId, peer: NodeId },
    /// The neighbour withdrew a proposal that waited for our owner.
    OfferWithdrawn { channel: ChannelId, peer: NodeId },
    /// We refused a neighbour's proposal to open a channel, and told it why.
    OpenRefused {
        channel: ChannelId,
        peer: NodeId,
        reason: Refusal,
    },
    /// The peer won a crossing and did not propose within `waited_ms`: we propose again.
    CrossingNotFollowed {
        channel: ChannelId,
        peer: NodeId,
        waited_ms: u64,
    },
    /// A final state is signed by both.
    ClosedCooperatively {
        channel: ChannelId,
        version: Version,
    },
    /// We decided to close unilaterally (command, or the peer stopped answering).
    ForceClosing {
        channel: ChannelId,
        version: Version,
    },
    /// The peer registered an older state than ours: we refute it.
    Refuting {
        channel: ChannelId,
        registered: Version,
        ours: Version,
    },
    /// The ledger paid out.
    Concluded {
        channel: ChannelId,
        version: Version,
    },
    /// A write failed: the channel signs nothing until a retry persists it.
    Frozen { channel: ChannelId },
    /// A retried write succeeded: the channel trades again.
    Thawed { channel: ChannelId },
    /// The peer broke the protocol and was disconnected.
    PeerMisbehaved { peer: NodeId, reason: String },
}

/// An output of the state machine: data for the host to act on.
#[derive(Clone, Debug)]
pub enum Output {
    /// Send a message to a peer. Released only after the persists it depends on are durable.
    Send { to: NodeId, message: Message },
    /// Write this channel record durably, then acknowledge with [`Input::Persisted`].
    Persist {
        update: UpdateId,
        record: Box<ChannelRecord>,
    },
    /// Submit to the ledger.
    Ledger(LedgerRequest),
    /// Hand a new doubly signed state to the watchtowers.
    Watchtower(SignedState),
    /// Close the connection to a peer that broke the protocol.
    Disconnect { peer: NodeId, reason: String },
    /// Something worth logging or showing.
    Event(Event),
}

/// Where a channel is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// We (party A) signed version 0 and wait for B's signature.
    AwaitingAccept,
    /// Both signed version 0; waiting for both deposits.
    Funding,
    /// Trading.
    Open,
    /// A final state is being negotiated: no more interval trades.
    Closing,
    /// Both signed a final state; the ledger pays it out.
    ClosedCooperatively,
    /// A state is registered on the ledger; waiting for the challenge window.
    Disputed,
    /// The ledger paid out; nothing more happens.
    Concluded,
}

/// Everything a channel must find again after a restart. Persisted whole on every change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelRecord {
    /// `params.channel_id()`, kept so nobody recomputes it.
    pub id: ChannelId,
    pub params: Arc<ChannelParams>,
    pub me: Party,
    pub phase: Phase,
    /// The newest state signed by both (absent only while awaiting the peer's version 0).
    pub current: Option<SignedState>,
    /// Our own proposal waiting for a countersignature.
    pub proposal: Option<Proposal>,
    /// The highest version we ever signed: we never sign another state at or below it.
    pub highest_signed: Version,
    /// The highest version we have seen the peer sign.
    pub peer_highest: Version,
    /// Top-ups and withdrawals as the ledger confirmed them, and ours asked for.
    pub funds: FundsRecord,
}

/// What a channel knows of money added and taken out while it is open, beyond its states.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsRecord {
    /// Each party's top-ups and paid withdrawals as the ledger confirmed them (cumulative).
    pub ledger: crate::state::Funds,
    /// The total we asked to take out of the channel (cumulative); a state withdraws it once
    /// the peer countersigns.
    pub withdraw_wanted: Amount,
}

/// Limits and timeouts a node applies; not part of any channel's parameters.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The shortest challenge window this node accepts in a channel.
    pub min_challenge_window_blocks: u64,
    /// How long an own proposal may go unanswered before we force-close. `None`: never.
    pub force_close_after_ms: Option<u64>,
    /// How long a peer proposal waits for our own meter reading of its interval.
    pub reading_wait_ms: u64,
    /// How long we wait for the peer to propose an earlier interval it is owed before we
    /// propose a later one of ours (which skips it).
    pub peer_turn_wait_ms: u64,
    /// How long we wait, after losing a crossing, for the winner's proposal before we propose
    /// again ourselves. An honest winner proposes at once.
    pub crossing_wait_ms: u64,
    /// How long after the peer refused our funds update (it had not seen our top-up on the
    /// ledger yet) we propose it again.
    pub funds_retry_ms: u64,
    /// How long after both signed a final state we proposed we leave it to the peer (which
    /// countersigned it) to conclude it on the ledger before we submit it too. The peer
    /// submits at once, a market node in a batch with its other channels.
    pub final_submit_wait_ms: u64,
    /// Watchtowers that must have acknowledged a channel's newest state before the channel signs
    /// a newer one (proposes, or countersigns the peer's); 0: none. The host reports acks with
    /// `Input::TowersAcked`.
    pub min_acks: u8,
    /// Own readings kept per channel (older unsettled ones are dropped).
    pub max_readings: usize,
    /// The metering interval this node's meter reads in: a channel opened to it with another
    /// is refused, since its readings would never match the channel's intervals. `None`: any.
    pub interval_seconds: Option<u32>,
    /// Whose channels, on which terms, this node accepts, and which wait for its owner.
    pub accept: crate::consent::AcceptPolicy,
}

impl Policy {
    /// The default policy, accepting every channel whose terms the protocol allows, from
    /// anyone: for protocol tests and benchmarks, where consent is not what is tested.
    pub fn accepting_anyone() -> Policy {
        Policy {
            accept: crate::consent::AcceptPolicy::anyone(),
            ..Policy::default()
        }
    }
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            min_challenge_window_blocks: 10,
            force_close_after_ms: Some(6 * 3_600_000),
            reading_wait_ms: 120_000,
            peer_turn_wait_ms: 120_000,
            crossing_wait_ms: 5_000,
            funds_retry_ms: 5_000,
            final_submit_wait_ms: 30_000,
            min_acks: 0,
            max_readings: 4 * 96,
            interval_seconds: None,
            accept: crate::consent::AcceptPolicy::default(),
        }
    }
}
