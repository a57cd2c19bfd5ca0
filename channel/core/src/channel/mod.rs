//! One channel's state machine. The [`crate::Node`] routes inputs here; everything this module
//! wants done comes out through the [`Outbox`]. The struct and its bookkeeping are here; what
//! it does lives in one module per part of a channel's life.

mod closing;
mod crossing;
mod deadlines;
mod funds;
mod market;
mod opening;
mod reconnect;
mod trading;
mod versions;
mod violation;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::crypto::{Keys, NodeId};
use crate::io::{ChannelRecord, Event, IntervalReading, LedgerEvent, LedgerRequest, Output};
use crate::io::{Phase, Policy};
use crate::outbox::Outbox;
use crate::params::ChannelParams;
use crate::signed::{Proposal, ProposalParts, SignedState};
use crate::state::{Refusal, State, Trade};
use crate::types::{Amount, ChannelId, IntervalIndex, Party, PricePerKwh, Version, WattHours};
use crate::wire::{AcceptChannel, Countersign, Message, OpenChannel, Reestablish, Refuse};

/// How far beyond every version we know of (our current state, our own highest signed
/// version, the peer's as known) a peer may claim to have signed. Versions move one at a time,
/// and only while both sides are connected, so an honest peer is never more than a few ahead;
/// a claim beyond this is a lie that would make us stop proposing (specs/protocol.md,
/// "Reestablish").
pub const MAX_VERSION_LEAD: u64 = 1_024;

/// Crossings in a row on one connection, with no update completed between them, that we take
/// from a peer: an honest one crosses us at most once or twice (the loser yields), so more is
/// a peer crossing on purpose, which would otherwise have us sign proposal after proposal.
const MAX_CROSSINGS_IN_A_ROW: u8 = 3;

/// Implausible version claims on one channel after which we close it on the ledger.
const MAX_IMPLAUSIBLE_CLAIMS: u8 = 3;

/// What the channel needs from its node for one input.
pub(crate) struct Ctx<'a> {
    pub keys: Keys<'a>,
    pub policy: &'a Policy,
    pub now_ms: u64,
    pub out: &'a mut Outbox,
}

pub(crate) use violation::{ClosingOnLedger, Violation};

pub(crate) struct Channel {
    params: Arc<ChannelParams>,
    id: ChannelId,
    me: Party,
    peer: NodeId,
    phase: Phase,
    /// `None` only in [`Phase::AwaitingAccept`].
    current: Option<SignedState>,
    /// Our proposal awaiting a countersignature (in `AwaitingAccept`: our version 0).
    proposal: Option<Proposal>,
    /// When our proposal was made; `None` after a restart until the first tick says when now is.
    proposal_sent_ms: Option<u64>,
    highest_signed: Version,
    peer_highest: Version,
    /// Our own readings for intervals not settled yet, with the time each arrived.
    readings: BTreeMap<IntervalIndex, (IntervalReading, u64)>,
    /// A market channel's settlements not settled yet (from books closed or checked), with
    /// the time each arrived.
    books: BTreeMap<IntervalIndex, (crate::market::Settlement, u64)>,
    /// Intervals whose book we refused (the newest few): a proposal for one is refused at once.
    refused_books: std::collections::BTreeSet<IntervalIndex>,
    /// Version claims beyond [`MAX_VERSION_LEAD`] this peer made since the channel was loaded.
    implausible: u8,
    frozen: bool,
    connected: bool,
    /// What lasts only as long as one connection to the peer.
    session: Session,
    /// The peer's last refusal of one of our proposals: its version and why. For the host's
    /// view only (not persisted).
    refused: Option<(Version, Refusal)>,
    /// Top-ups and withdrawals the ledger confirmed, and ours asked for.
    funds: crate::io::FundsRecord,
    /// A final state we proposed waits for the peer (which countersigned it, and submits it at
    /// once, in a batch with its others) to conclude it on the ledger; after the policy's
    /// `final_submit_wait_ms` from `final_since` (set by the first tick when `None`) we submit
    /// it ourselves. Not persisted: a restart in `ClosedCooperatively` waits again.
    final_pending: bool,
    final_since: Option<u64>,
    /// The newest version the policy's `min_acks` watchtowers acknowledged (as the host last
    /// said; not persisted: the host says it again at start).
    acked: Version,
}

/// What a channel knows that lasts only as long as one connection to the peer: every new
/// connection, and every lost one, starts it over.
#[derive(Default)]
struct Session {
    /// The peer's reestablish arrived on this connection: we may propose.
    reestablished: bool,
    /// We sent our reestablish on this connection (at most one per connection).
    reestablish_sent: bool,
    /// Crossings since the last completed update on this connection.
    crossings: u8,
    /// A peer proposal waiting for our reading (or checked book) of its interval, with the
    /// time it arrived.
    held: Option<(Proposal, Trade, u64)>,
    /// We lost a crossing at this time: the winner proposes next, within the policy's
    /// `crossing_wait_ms`, or we propose again ourselves.
    yielding: Option<u64>,
    /// A peer proposal (and the trade it claims) waiting until enough watchtowers acknowledged
    /// our newest state, with the time it arrived.
    awaiting_acks: Option<(Proposal, Option<Trade>, u64)>,
    /// The peer refused our funds update at this time (it had not seen our top-up on the
    /// ledger yet): we propose it again after the policy's `funds_retry_ms`.
    funds_refused: Option<u64>,
}

impl Session {
    /// Whether nothing on this connection stands in the way of our next proposal: the peer
    /// has caught up with us, we do not yield to it, and no proposal of its waits for our
    /// reading.
    fn ready(&self) -> bool {
        self.reestablished
            && self.yielding.is_none()
            && self.held.is_none()
            && self.awaiting_acks.is_none()
    }
}

/// A read-only view of a channel for hosts and tests.
#[derive(Clone, Debug)]
pub struct ChannelView {
    pub id: ChannelId,
    pub params: Arc<ChannelParams>,
    pub me: Party,
    pub peer: NodeId,
    pub phase: Phase,
    pub current: Option<SignedState>,
    pub proposal: Option<Proposal>,
    pub highest_signed: Version,
    pub frozen: bool,
    /// The peer's last refusal of one of our proposals since the channel was loaded: its
    /// version (0: the peer refused to open the channel) and why.
    pub refused: Option<(Version, Refusal)>,
    /// Top-ups and withdrawals the ledger confirmed, and ours asked for.
    pub funds: crate::io::FundsRecord,
}

impl Channel {
    pub fn restore(record: ChannelRecord) -> Channel {
        let mut ch = Channel::with_id(
            record.id,
            record.params,
            record.me,
            record.phase,
            record.current,
        );
        ch.proposal = record.proposal;
        ch.highest_signed = record.highest_signed;
        ch.peer_highest = record.peer_highest;
        ch.funds = record.funds;
        ch.final_pending = ch.phase == Phase::ClosedCooperatively;
        ch
    }

    pub(super) fn new(
        params: Arc<ChannelParams>,
        me: Party,
        phase: Phase,
        current: Option<SignedState>,
    ) -> Channel {
        Channel::with_id(params.channel_id(), params, me, phase, current)
    }

    pub(super) fn with_id(
        id: ChannelId,
        params: Arc<ChannelParams>,
        me: Party,
        phase: Phase,
        current: Option<SignedState>,
    ) -> Channel {
        Channel {
            id,
            peer: *params.node(me.other()),
            params,
            me,
            phase,
            current,
            proposal: None,
            proposal_sent_ms: None,
            highest_signed: Version(0),
            peer_highest: Version(0),
            readings: BTreeMap::new(),
            books: BTreeMap::new(),
            refused_books: Default::default(),
            implausible: 0,
            frozen: false,
            connected: false,
            session: Session::default(),
            refused: None,
            funds: Default::default(),
            final_pending: false,
            final_since: None,
            acked: Version(0),
        }
    }

    pub fn id(&self) -> ChannelId {
        self.id
    }

    pub fn peer(&self) -> &NodeId {
        &self.peer
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn me(&self) -> Party {
        self.me
    }

    pub fn params_ref(&self) -> &ChannelParams {
        &self.params
    }

    pub fn view(&self) -> ChannelView {
        ChannelView {
            id: self.id,
            params: self.params.clone(),
            me: self.me,
            peer: self.peer,
            phase: self.phase,
            current: self.current.clone(),
            proposal: self.proposal.clone(),
            highest_signed: self.highest_signed,
            frozen: self.frozen,
            refused: self.refused.clone(),
            funds: self.funds,
        }
    }

    pub fn record(&self) -> ChannelRecord {
        ChannelRecord {
            id: self.id,
            params: self.params.clone(),
            me: self.me,
            phase: self.phase,
            current: self.current.clone(),
            proposal: self.proposal.clone(),
            highest_signed: self.highest_signed,
            peer_highest: self.peer_highest,
            funds: self.funds,
        }
    }

    pub(super) fn persist(&mut self, ctx: &mut Ctx) {
        ctx.out.persist(self.record());
    }

    pub(super) fn emit(&self, ctx: &mut Ctx, output: Output) {
        ctx.out.push(Some(self.id), output);
    }

    pub(super) fn send(&self, ctx: &mut Ctx, message: Message) {
        self.emit(
            ctx,
            Output::Send {
                to: self.peer,
                message,
            },
        );
    }

    pub(super) fn event(&self, ctx: &mut Ctx, event: Event) {
        self.emit(ctx, Output::Event(event));
    }

    pub(super) fn current_state(&self) -> Option<&State> {
        self.current.as_ref().map(|c| c.state())
    }

    pub fn proposal_digest(&self) -> Option<[u8; 32]> {
        self.proposal.as_ref().map(|p| *p.digest())
    }
}
