//! One channel's state machine. The [`crate::Node`] routes inputs here; everything this module
//! wants done comes out through the [`Outbox`].

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

/// A protocol violation by the peer: it costs the peer its connection, never our state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation(pub String);

impl From<Refusal> for Violation {
    fn from(r: Refusal) -> Violation {
        Violation(r.to_string())
    }
}

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
    /// A peer proposal waiting for our reading of its interval, with the time it arrived.
    held: Option<(Proposal, Trade, u64)>,
    /// We lost a crossing at this time: the winner proposes next, within the policy's
    /// `crossing_wait_ms`, or we propose again ourselves.
    yielding: Option<u64>,
    /// Version claims beyond [`MAX_VERSION_LEAD`] this peer made since the channel was loaded.
    implausible: u8,
    /// Crossings since the last completed update on this connection.
    crossings: u8,
    frozen: bool,
    connected: bool,
    /// The peer's reestablish arrived on this connection: we may propose.
    reestablished: bool,
    /// We sent our reestablish on this connection (at most one per connection).
    reestablish_sent: bool,
    /// The peer's last refusal of one of our proposals: its version and why. For the host's
    /// view only (not persisted).
    refused: Option<(Version, Refusal)>,
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
}

impl Channel {
    /// The digest of the state this channel would propose if `reading` arrived now and were its
    /// only unsettled reading; `None` when it would not propose. A preview for hosts that sign
    /// ahead (see `Node::preview_proposal`): it changes nothing.
    pub fn preview_proposal(&self, reading: &IntervalReading) -> Option<[u8; 32]> {
        if !self.may_propose() || self.readings.keys().any(|i| *i < reading.interval) {
            return None;
        }
        let cur = self.current_state()?;
        if reading.interval <= cur.last_interval {
            return None;
        }
        let version = self.next_version()?;
        self.billed(cur, version, reading.interval, reading)
            .map(|next| next.digest())
    }

    /// The state that bills the peer for what `reading` says we delivered in `interval` (as
    /// much as it can afford), as `version`; none if that is nothing.
    fn billed(
        &self,
        cur: &State,
        version: Version,
        interval: IntervalIndex,
        reading: &IntervalReading,
    ) -> Option<State> {
        let owed = reading.delivered.0.saturating_sub(reading.received.0);
        let energy = WattHours(owed).min(self.affordable(cur, self.me.other(), interval));
        if energy == WattHours(0) {
            return None;
        }
        let (next, _) = cur
            .settle(&self.params, version, self.me, interval, energy)
            .ok()?;
        Some(next)
    }

    pub fn proposal_digest(&self) -> Option<[u8; 32]> {
        self.proposal.as_ref().map(|p| *p.digest())
    }

    /// Party A proposes a channel: signs version 0 and sends it once that is durable.
    pub fn open(params: ChannelParams, ctx: &mut Ctx) -> Channel {
        let params = Arc::new(params);
        let v0 = Proposal::sign(State::initial(&params), Party::A, &ctx.keys);
        let mut ch = Channel::new(params, Party::A, Phase::AwaitingAccept, None);
        ch.proposal = Some(v0);
        ch.proposal_sent_ms = Some(ctx.now_ms);
        ch.persist(ctx);
        ch
    }

    /// The checks every party B applies to a proposed channel, whatever its owner's policy:
    /// we are its party B, the parameters are valid (within the protocol's limits and our
    /// metering interval), and A's signature on version 0 verifies. The `bool` says whether
    /// the refusal is a violation (it costs the proposer its connection).
    pub fn check_open(
        from: &NodeId,
        open: &OpenChannel,
        ctx: &mut Ctx,
    ) -> Result<(), (Refusal, bool)> {
        let params = &open.params;
        if params.party_a != *from || params.party_b != ctx.keys.id() {
            return Err((Refusal::BadParams("we are not party B of it".into()), true));
        }
        params
            .validate(ctx.policy.min_challenge_window_blocks)
            .map_err(|e| (Refusal::BadParams(e.to_string()), false))?;
        if let Some(ours) = ctx.policy.interval_seconds {
            if params.interval_seconds != ours {
                let why = format!(
                    "the channel's metering interval is {} s; this gateway meters every {ours} s",
                    params.interval_seconds
                );
                return Err((Refusal::BadParams(why), false));
            }
        }
        Proposal::verify(
            params,
            &params.channel_id(),
            ProposalParts {
                state: State::initial(params),
                proposer: Party::A,
                sig: open.sig_a,
            },
        )
        .map(|_| ())
        .map_err(|r| (r, true))
    }

    /// Party B accepts a channel: checks it as [`Channel::check_open`] does and countersigns
    /// version 0.
    pub fn accept(
        from: &NodeId,
        open: Box<OpenChannel>,
        ctx: &mut Ctx,
    ) -> Result<Channel, (Refusal, bool)> {
        Channel::check_open(from, &open, ctx)?;
        let OpenChannel { params, sig_a } = *open;
        let params = Arc::new(params);
        let id = params.channel_id();
        let v0 = Proposal::verify(
            &params,
            &id,
            ProposalParts {
                state: State::initial(&params),
                proposer: Party::A,
                sig: sig_a,
            },
        )
        .map_err(|r| (r, true))?;
        let signed = v0.countersign(&ctx.keys);
        let mut ch = Channel::new(params, Party::B, Phase::Funding, Some(signed));
        ch.connected = true;
        ch.reestablished = true;
        ch.persist(ctx);
        ch.send_accept(ctx);
        ch.agreed(ctx);
        Ok(ch)
    }

    /// We withdraw our proposal before the neighbour accepted it: the channel ends with
    /// nothing signed by the neighbour and nothing on the ledger, and the neighbour is told, so
    /// that a proposal waiting for its owner goes away.
    pub fn cancel(&mut self, ctx: &mut Ctx) -> Result<(), Refusal> {
        if self.phase != Phase::AwaitingAccept {
            return Err(Refusal::NotAccepting);
        }
        self.phase = Phase::Concluded;
        self.proposal = None;
        self.persist(ctx);
        self.send(
            ctx,
            Message::Refuse(Refuse {
                channel_id: self.id,
                version: Version(0),
                reason: Refusal::BadParams("withdrawn by its proposer".into()),
            }),
        );
        Ok(())
    }

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
        ch
    }

    fn new(
        params: Arc<ChannelParams>,
        me: Party,
        phase: Phase,
        current: Option<SignedState>,
    ) -> Channel {
        Channel::with_id(params.channel_id(), params, me, phase, current)
    }

    fn with_id(
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
            held: None,
            yielding: None,
            implausible: 0,
            crossings: 0,
            frozen: false,
            connected: false,
            reestablished: false,
            reestablish_sent: false,
            refused: None,
        }
    }

    pub fn id(&self) -> ChannelId {
        self.id
    }

    pub fn peer(&self) -> &NodeId {
        &self.peer
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
        }
    }

    fn persist(&mut self, ctx: &mut Ctx) {
        ctx.out.persist(self.record());
    }

    fn emit(&self, ctx: &mut Ctx, output: Output) {
        ctx.out.push(Some(self.id), output);
    }

    fn send(&self, ctx: &mut Ctx, message: Message) {
        self.emit(
            ctx,
            Output::Send {
                to: self.peer,
                message,
            },
        );
    }

    fn event(&self, ctx: &mut Ctx, event: Event) {
        self.emit(ctx, Output::Event(event));
    }

    /// The version the next proposal must carry: one above anything either party has signed.
    fn next_version(&self) -> Option<Version> {
        let current = self
            .current
            .as_ref()
            .map(|c| c.version())
            .unwrap_or_default();
        current
            .max(self.highest_signed)
            .max(self.peer_highest)
            .next()
    }

    /// The version a peer proposal must carry: the next version, or the peer's highest known
    /// version again if we never signed at it (the peer repeats a proposal whose refusal it
    /// never received). Countersigning at that version is safe: our own highest signed version
    /// is below it.
    fn expected_peer_version(&self, offered: Version) -> Result<Version, Refusal> {
        let current = self
            .current
            .as_ref()
            .map(|c| c.version())
            .unwrap_or_default();
        let repeat = self.peer_highest;
        if offered == repeat && repeat > current.max(self.highest_signed) {
            return Ok(repeat);
        }
        self.next_version().ok_or(Refusal::Overflow)
    }

    fn current_state(&self) -> Option<&State> {
        self.current.as_ref().map(|c| c.state())
    }

    // ----- opening and funding -----

    fn send_accept(&self, ctx: &mut Ctx) {
        if let Some(cur) = &self.current {
            self.send(
                ctx,
                Message::AcceptChannel(AcceptChannel {
                    channel_id: self.id,
                    sig_b: *cur.signature(Party::B),
                }),
            );
        }
    }

    fn agreed(&self, ctx: &mut Ctx) {
        let amount = match self.me {
            Party::A => self.params.deposit_a,
            Party::B => self.params.deposit_b,
        };
        if amount > Amount(0) {
            self.emit(
                ctx,
                Output::Ledger(LedgerRequest::Deposit {
                    params: self.params.clone(),
                    amount,
                }),
            );
        }
        self.event(
            ctx,
            Event::ChannelAgreed {
                channel: self.id,
                peer: self.peer,
            },
        );
    }

    /// A repeated `OpenChannel` for a channel we already have: B answers with its signature
    /// again (the same bytes: nothing new is signed).
    pub fn on_open_again(&mut self, open: &OpenChannel, ctx: &mut Ctx) -> Result<(), Violation> {
        if self.me != Party::B || open.params != *self.params {
            return Err(Violation(
                "conflicting OpenChannel for an existing channel".into(),
            ));
        }
        self.send_accept(ctx);
        Ok(())
    }

    pub fn on_accept(&mut self, msg: AcceptChannel, ctx: &mut Ctx) -> Result<(), Violation> {
        if self.phase != Phase::AwaitingAccept {
            // A's version 0 is already countersigned: a repeat is harmless.
            return if self.me == Party::A {
                Ok(())
            } else {
                Err(Violation("AcceptChannel sent to party B".into()))
            };
        }
        let Some(v0) = &self.proposal else {
            return Err(Violation("no version 0 awaiting acceptance".into()));
        };
        let signed = v0.complete(&self.params, msg.sig_b)?;
        // B's acceptance on this connection is as good as its reestablish: both hold v0.
        self.reestablished = self.connected;
        self.install_v0(signed, ctx);
        Ok(())
    }

    fn install_v0(&mut self, signed: SignedState, ctx: &mut Ctx) {
        self.current = Some(signed);
        self.proposal = None;
        self.phase = Phase::Funding;
        self.persist(ctx);
        self.agreed(ctx);
    }

    // ----- meter readings and proposing -----

    pub fn on_reading(&mut self, reading: IntervalReading, ctx: &mut Ctx) {
        let Some(cur) = self.current_state() else {
            return;
        };
        if reading.interval <= cur.last_interval {
            return;
        }
        self.readings
            .insert(reading.interval, (reading, ctx.now_ms));
        while self.readings.len() > ctx.policy.max_readings {
            self.readings.pop_first();
        }
        if let Some((_, trade, _)) = &self.held {
            if trade.interval == reading.interval {
                let (held, trade, _) = self.held.take().expect("checked above");
                self.decide_on_trade(held, trade, ctx);
            }
        }
        self.maybe_propose(ctx);
    }

    fn may_propose(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Closing)
            && self.connected
            && self.reestablished
            && !self.frozen
            && self.yielding.is_none()
            && self.proposal.is_none()
            && self.held.is_none()
    }

    /// Proposes the next update we are owed, if any; in `Closing` with nothing owed, the final
    /// state.
    pub fn maybe_propose(&mut self, ctx: &mut Ctx) {
        if !self.may_propose() {
            return;
        }
        let Some(cur) = self.current_state().cloned() else {
            return;
        };
        let Some(version) = self.next_version() else {
            return;
        };
        let intervals: Vec<IntervalIndex> = self.readings.keys().copied().collect();
        for interval in intervals {
            let Some(&(reading, arrived)) = self.readings.get(&interval) else {
                continue;
            };
            if interval <= cur.last_interval {
                self.readings.remove(&interval);
                continue;
            }
            if reading.received > reading.delivered {
                // The peer is owed for this earlier interval: give it time to propose first.
                if ctx.now_ms.saturating_sub(arrived) < ctx.policy.peer_turn_wait_ms {
                    return;
                }
                self.readings.remove(&interval);
                continue;
            }
            let billed = self.billed(&cur, version, interval, &reading);
            self.readings.remove(&interval);
            if let Some(next) = billed {
                self.propose(next, ctx);
                return;
            }
        }
        if self.phase == Phase::Closing {
            self.propose(cur.finalized(version), ctx);
        }
    }

    /// Energy `buyer` can still pay for in `interval` from its balance in `state`.
    fn affordable(&self, state: &State, buyer: Party, interval: IntervalIndex) -> WattHours {
        let price = self
            .params
            .tariff
            .price_at(interval, self.params.interval_seconds)
            .unwrap_or(PricePerKwh(u64::MAX));
        if price.0 == 0 {
            return WattHours(u64::MAX);
        }
        let balance = u128::from(state.balance(buyer).0);
        let max = ((balance + 1) * 1000 - 1) / u128::from(price.0);
        WattHours(u64::try_from(max).unwrap_or(u64::MAX))
    }

    /// Signs `state` as our proposal. It is persisted first; the message waits for that.
    fn propose(&mut self, state: State, ctx: &mut Ctx) {
        debug_assert!(state.version > self.highest_signed);
        let proposal = Proposal::sign(state, self.me, &ctx.keys);
        self.highest_signed = proposal.version();
        self.proposal_sent_ms = Some(ctx.now_ms);
        let parts = proposal.to_parts();
        self.proposal = Some(proposal);
        self.persist(ctx);
        self.send(ctx, Message::Propose(parts));
    }

    // ----- the peer's proposals -----

    pub fn on_propose(&mut self, parts: ProposalParts, ctx: &mut Ctx) -> Result<(), Violation> {
        self.consider_proposal(parts, false, ctx)
    }

    /// A peer proposal, live or repeated in a reestablish. In a reestablish both sides see
    /// both pending proposals, so they resolve a crossing the same way whatever the versions;
    /// live, a proposal at a version already resolved is a stale duplicate.
    fn consider_proposal(
        &mut self,
        parts: ProposalParts,
        repeated: bool,
        ctx: &mut Ctx,
    ) -> Result<(), Violation> {
        if parts.proposer != self.me.other() {
            return Err(Violation("proposal claims to be from us".into()));
        }
        let Some(cur) = self.current_state().cloned() else {
            return Err(Violation("proposal before version 0 is signed".into()));
        };
        let proposal = Proposal::verify_known(&self.params, &self.id, parts, ctx.keys.recovered())?;
        if proposal.version() <= cur.version {
            return Err(Violation(format!(
                "proposal {} is not newer than the current {}",
                proposal.version(),
                cur.version
            )));
        }
        if self.held.is_some() {
            return Err(Violation("second proposal while one is pending".into()));
        }
        if !matches!(self.phase, Phase::Open | Phase::Closing) || self.frozen {
            self.refuse(proposal.version(), Refusal::NotAccepting, ctx);
            return Ok(());
        }
        if let Some(ours) = self.proposal.clone() {
            if !repeated && proposal.version() <= self.peer_highest {
                return Err(Violation(format!(
                    "stale proposal {}: the peer's {} is already resolved",
                    proposal.version(),
                    self.peer_highest
                )));
            }
            return self.resolve_crossing(ours, proposal, ctx);
        }
        if proposal.version() <= self.highest_signed {
            let highest = self.highest_signed.0;
            self.refuse(proposal.version(), Refusal::VersionBurned { highest }, ctx);
            return Ok(());
        }
        let expected = self.expected_peer_version(proposal.version())?;
        let trade =
            match cur.check_successor(&self.params, proposal.state(), self.me.other(), expected) {
                Ok(trade) => trade,
                Err(reason) if reason.is_disagreement() => {
                    self.refuse(proposal.version(), reason, ctx);
                    return Ok(());
                }
                Err(reason) => {
                    self.refuse(proposal.version(), reason.clone(), ctx);
                    return Err(reason.into());
                }
            };
        // The peer's proposal counts towards what we expect next only once it is decided:
        // countersigned (then it is the current state) or refused as a disagreement (then
        // its version is burned). A held one will be repeated after a reconnect, and a
        // malformed one, even validly signed, must not move anything.
        self.yielding = None;
        match trade {
            None => self.countersign(proposal, None, ctx),
            Some(trade) => self.decide_on_trade(proposal, trade, ctx),
        }
        self.maybe_propose(ctx);
        Ok(())
    }

    /// Meter checks for a structurally valid trade proposal (`trade` is what
    /// `check_successor` found it claims): countersign, refuse, or hold it until our reading of
    /// its interval arrives.
    fn decide_on_trade(&mut self, proposal: Proposal, trade: Trade, ctx: &mut Ctx) {
        let Some(cur) = self.current_state() else {
            return;
        };
        let interval = trade.interval;
        let Some(&(reading, _)) = self.readings.get(&interval) else {
            let newest = self.readings.keys().next_back().copied();
            if newest.is_none_or(|n| n < interval) {
                self.held = Some((proposal, trade, ctx.now_ms));
            } else {
                self.refuse(proposal.version(), Refusal::NoMeterReading(interval.0), ctx);
            }
            return;
        };
        let billed = trade.energy;
        if billed > reading.metered_import {
            let reason = Refusal::EnergyBeyondImport {
                billed: billed.0,
                imported: reading.metered_import.0,
            };
            self.readings.remove(&interval);
            self.refuse(proposal.version(), reason, ctx);
            return;
        }
        let taken = WattHours(reading.received.0.saturating_sub(reading.delivered.0));
        let expected = taken.min(self.affordable(cur, self.me, interval));
        if !self.params.tolerance.accepts(billed, expected) {
            let reason = Refusal::OutsideTolerance {
                billed: billed.0,
                reading: expected.0,
            };
            self.readings.remove(&interval);
            self.refuse(proposal.version(), reason, ctx);
            return;
        }
        self.readings.remove(&interval);
        self.countersign(proposal, Some(trade), ctx);
    }

    fn countersign(&mut self, proposal: Proposal, trade: Option<Trade>, ctx: &mut Ctx) {
        debug_assert!(proposal.version() > self.highest_signed);
        let signed = proposal.countersign(&ctx.keys);
        self.highest_signed = signed.version();
        let sig = *signed.signature(self.me);
        let version = signed.version();
        self.install(signed, trade, ctx);
        self.send(
            ctx,
            Message::Countersign(Countersign {
                channel_id: self.id,
                version,
                sig,
            }),
        );
    }

    /// Makes `signed` the current state: persisted, handed to the watchtowers, announced.
    fn install(&mut self, signed: SignedState, trade: Option<Trade>, ctx: &mut Ctx) {
        self.crossings = 0;
        let version = signed.version();
        let is_final = signed.state().is_final;
        self.current = Some(signed.clone());
        if self
            .proposal
            .as_ref()
            .is_some_and(|p| p.version() <= version)
        {
            self.proposal = None;
        }
        if is_final {
            self.phase = Phase::ClosedCooperatively;
        }
        self.persist(ctx);
        self.emit(ctx, Output::Watchtower(signed.clone()));
        if let Some(trade) = trade {
            self.event(
                ctx,
                Event::Settled {
                    channel: self.id,
                    version,
                    trade,
                },
            );
        }
        if is_final {
            self.emit(ctx, Output::Ledger(LedgerRequest::ConcludeFinal(signed)));
            self.event(
                ctx,
                Event::ClosedCooperatively {
                    channel: self.id,
                    version,
                },
            );
        }
    }

    /// Refuses a peer proposal at `version`. A disagreement burns that version (the peer
    /// signed it); a violation does not count at all.
    fn refuse(&mut self, version: Version, reason: Refusal, ctx: &mut Ctx) {
        if reason.is_disagreement() && version > self.peer_highest {
            // What we expect next changes: make it durable before the peer hears of it, or
            // after a crash we would expect a version the peer has already burned.
            self.peer_highest = version;
            self.persist(ctx);
        }
        self.event(
            ctx,
            Event::Refused {
                channel: self.id,
                version,
                by: self.me,
                reason: reason.clone(),
            },
        );
        self.send(
            ctx,
            Message::Refuse(Refuse {
                channel_id: self.id,
                version,
                reason,
            }),
        );
    }

    /// Both sides proposed at once. Neither countersigns the other (that would sign two states
    /// at one version): both proposals are dropped and the winner proposes again above both.
    /// The winner is the proposal with the smaller key `(is_final, interval, party)`, so
    /// trades go before a close, earlier intervals first, and A breaks ties.
    fn resolve_crossing(
        &mut self,
        ours: Proposal,
        theirs: Proposal,
        ctx: &mut Ctx,
    ) -> Result<(), Violation> {
        let cur = self.current_state().cloned().ok_or(Refusal::NotAccepting)?;
        self.check_plausible(theirs.version(), "a crossing proposal", ctx)?;
        self.crossings = self.crossings.saturating_add(1);
        if self.crossings > MAX_CROSSINGS_IN_A_ROW {
            return Err(Violation(format!(
                "crossed our proposals {} times in a row without an update between: crossing on purpose",
                self.crossings
            )));
        }
        // Their proposal must be a valid successor of the state both build on.
        cur.check_successor(
            &self.params,
            theirs.state(),
            self.me.other(),
            theirs.version(),
        )
        .or_else(|r| {
            if r.is_disagreement() {
                Ok(None)
            } else {
                Err(r)
            }
        })?;
        self.peer_highest = self.peer_highest.max(theirs.version());
        let key = |p: &Proposal| (p.state().is_final, p.state().last_interval, p.proposer());
        let winner = if key(&ours) < key(&theirs) {
            self.me
        } else {
            self.me.other()
        };
        self.proposal = None;
        self.event(
            ctx,
            Event::Crossed {
                channel: self.id,
                winner,
            },
        );
        if winner == self.me {
            self.yielding = None;
            match self.next_version() {
                Some(v) => {
                    let mut state = ours.state().clone();
                    state.version = v;
                    self.propose(state, ctx);
                }
                None => self.persist(ctx),
            }
        } else {
            self.yielding = Some(ctx.now_ms);
            self.requeue(&ours, ctx);
            self.persist(ctx);
        }
        Ok(())
    }

    /// Puts the trade of a dropped proposal of ours back, to propose it again later.
    fn requeue(&mut self, ours: &Proposal, ctx: &mut Ctx) {
        let Some(cur) = self.current_state() else {
            return;
        };
        if ours.state().is_final {
            return;
        }
        let delivered = ours.state().energy_from(self.me).0 - cur.energy_from(self.me).0;
        let interval = ours.state().last_interval;
        let reading = IntervalReading {
            interval,
            delivered: WattHours(delivered),
            received: WattHours(0),
            metered_import: WattHours(0),
        };
        self.readings.insert(interval, (reading, ctx.now_ms));
    }

    pub fn on_countersign(&mut self, msg: Countersign, ctx: &mut Ctx) -> Result<(), Violation> {
        let Some(ours) = self.proposal.clone() else {
            return Err(Violation(format!(
                "unexpected countersignature for {}",
                msg.version
            )));
        };
        if ours.version() != msg.version || self.phase == Phase::AwaitingAccept {
            return Err(Violation(format!(
                "countersignature for {}, our proposal is {}",
                msg.version,
                ours.version()
            )));
        }
        let signed = ours.complete_known(&self.params, msg.sig, ctx.keys.recovered())?;
        let trade = self
            .current_state()
            .and_then(|cur| {
                cur.check_successor(&self.params, signed.state(), self.me, signed.version())
                    .ok()
            })
            .flatten();
        self.install(signed, trade, ctx);
        self.maybe_propose(ctx);
        Ok(())
    }

    pub fn on_refuse(&mut self, msg: Refuse, ctx: &mut Ctx) -> Result<(), Violation> {
        let ours = match &self.proposal {
            Some(ours) if ours.version() == msg.version => ours.clone(),
            _ => return Ok(()), // a refusal we no longer care about
        };
        let ours_is_final = ours.state().is_final;
        if let Refusal::VersionBurned { highest } = msg.reason {
            self.check_plausible(Version(highest), "a refusal", ctx)?;
            // Our proposal crossed one of the peer's unseen: propose the same again, higher.
            self.peer_highest = self.peer_highest.max(Version(highest));
            self.proposal = None;
            self.requeue(&ours, ctx);
            self.persist(ctx);
            self.maybe_propose(ctx);
            return Ok(());
        }
        self.refused = Some((msg.version, msg.reason.clone()));
        self.event(
            ctx,
            Event::Refused {
                channel: self.id,
                version: msg.version,
                by: self.me.other(),
                reason: msg.reason,
            },
        );
        self.proposal = None;
        if self.phase == Phase::AwaitingAccept {
            self.phase = Phase::Concluded;
        } else if self.phase == Phase::Closing && ours_is_final {
            self.phase = Phase::Open;
        }
        self.persist(ctx);
        self.maybe_propose(ctx);
        Ok(())
    }

    // ----- connections -----

    pub fn on_connected(&mut self, ctx: &mut Ctx) {
        self.connected = true;
        self.reestablished = false;
        self.reestablish_sent = false;
        self.crossings = 0;
        self.held = None;
        self.yielding = None;
        if self.frozen {
            // What we hold in memory may not be durable: say nothing until a retry persists it.
            return;
        }
        self.say_what_we_hold(ctx);
    }

    /// Our first word on a connection: what we hold (`Reestablish`), or our proposal of the
    /// channel again (`OpenChannel`) while the peer has not accepted it.
    fn say_what_we_hold(&mut self, ctx: &mut Ctx) {
        match (&self.current, &self.proposal) {
            (Some(cur), _) => {
                self.reestablish_sent = true;
                let msg = Reestablish {
                    channel_id: self.id,
                    current: cur.to_parts(),
                    proposal: self.proposal.as_ref().map(|p| p.to_parts()),
                    highest_signed: self.highest_signed,
                };
                self.send(ctx, Message::Reestablish(Box::new(msg)));
            }
            (None, Some(v0)) if self.phase == Phase::AwaitingAccept => {
                let open = OpenChannel {
                    params: (*self.params).clone(),
                    sig_a: *v0.signature(),
                };
                self.send(ctx, Message::OpenChannel(Box::new(open)));
            }
            _ => {}
        }
    }

    pub fn on_disconnected(&mut self) {
        self.connected = false;
        self.reestablished = false;
        self.reestablish_sent = false;
        self.crossings = 0;
        self.held = None;
        self.yielding = None;
    }

    /// Refuses a version the peer claims to have signed that lies more than
    /// [`MAX_VERSION_LEAD`] beyond every version we know of: believing it would leave us
    /// nothing to propose at (or wrap). After [`MAX_IMPLAUSIBLE_CLAIMS`] of them the channel
    /// closes on the ledger with our newest state.
    fn check_plausible(
        &mut self,
        claimed: Version,
        what: &str,
        ctx: &mut Ctx,
    ) -> Result<(), Violation> {
        let known = self
            .current
            .as_ref()
            .map(|c| c.version())
            .unwrap_or_default()
            .max(self.highest_signed)
            .max(self.peer_highest);
        if claimed.0 <= known.0.saturating_add(MAX_VERSION_LEAD) {
            return Ok(());
        }
        self.implausible = self.implausible.saturating_add(1);
        let mut why = format!(
            "{what} claims version {}, more than {MAX_VERSION_LEAD} beyond the newest we know ({})",
            claimed.0, known.0
        );
        if self.implausible >= MAX_IMPLAUSIBLE_CLAIMS
            && matches!(self.phase, Phase::Open | Phase::Closing)
        {
            why.push_str(&format!(
                "; the {} such claim: closing the channel on the ledger",
                self.implausible
            ));
            self.force_close(ctx);
        }
        Err(Violation(why))
    }

    pub fn on_reestablish(
        &mut self,
        msg: Box<Reestablish>,
        ctx: &mut Ctx,
    ) -> Result<(), Violation> {
        if self.reestablished {
            return Err(Violation("a second reestablish on one connection".into()));
        }
        let msg = *msg;
        let theirs = msg.current.verify(&self.params, &self.id)?;
        let mut changed = false;
        let ours_version = self.current.as_ref().map(|c| c.version());
        if ours_version.is_none_or(|v| theirs.version() > v) {
            if theirs.version() > self.highest_signed && ours_version.is_some() {
                // We never signed it, yet it carries our signature: impossible unless our
                // store lost a write.
                return Err(Violation(
                    "peer holds a state newer than any we signed".into(),
                ));
            }
            if self.phase == Phase::AwaitingAccept {
                self.install_v0(theirs.clone(), ctx);
            } else {
                if theirs.state().is_final {
                    self.phase = Phase::ClosedCooperatively;
                }
                self.current = Some(theirs.clone());
            }
            changed = true;
        }
        let cur_version = self
            .current
            .as_ref()
            .map(|c| c.version())
            .unwrap_or_default();
        if self
            .proposal
            .as_ref()
            .is_some_and(|p| p.version() <= cur_version)
        {
            self.proposal = None;
            changed = true;
        }
        let their_proposal = match msg.proposal {
            Some(parts) if parts.state.version > cur_version => {
                if parts.proposer != self.me.other() {
                    return Err(Violation(
                        "reestablish proposal claims to be from us".into(),
                    ));
                }
                Some(parts)
            }
            _ => None,
        };
        // What the peer has resolved. A repeated proposal at version p says every version
        // below p is resolved on its side (signed, refused or dropped in a crossing), even if
        // we never learned of it (a refusal of ours that was sent but not made durable before
        // a crash). Accepting that is safe: we only ever sign above our own highest version.
        let declared = match &their_proposal {
            Some(p) => Version(p.state.version.0.saturating_sub(1)),
            None => msg.highest_signed,
        };
        self.check_plausible(declared, "a reestablish", ctx)?;
        let known = self.peer_highest.max(declared).max(theirs.version());
        changed |= known != self.peer_highest;
        self.peer_highest = known;
        if changed {
            self.persist(ctx);
            if let Some(cur) = self.current.clone() {
                self.emit(ctx, Output::Watchtower(cur));
            }
        }
        self.reestablished = true;
        self.yielding = None;
        if let Some(parts) = their_proposal {
            return self.consider_proposal(parts, true, ctx);
        }
        self.maybe_propose(ctx);
        Ok(())
    }

    // ----- time, closing, the ledger -----

    pub fn on_tick(&mut self, ctx: &mut Ctx) {
        if let Some(since) = self.yielding {
            if ctx.now_ms.saturating_sub(since) >= ctx.policy.crossing_wait_ms {
                // The winner of the crossing proposes at once; one that does not is stalling
                // us (perhaps crossing on purpose): propose again ourselves.
                self.yielding = None;
                self.event(
                    ctx,
                    Event::CrossingNotFollowed {
                        channel: self.id,
                        peer: self.peer,
                        waited_ms: ctx.policy.crossing_wait_ms,
                    },
                );
            }
        }
        if let Some((held, _, since)) = &self.held {
            if ctx.now_ms.saturating_sub(*since) >= ctx.policy.reading_wait_ms {
                let version = held.version();
                let interval = held.state().last_interval.0;
                self.held = None;
                self.refuse(version, Refusal::NoMeterReading(interval), ctx);
            }
        }
        if self.proposal.is_some() && self.proposal_sent_ms.is_none() {
            self.proposal_sent_ms = Some(ctx.now_ms);
        }
        let waited = ctx
            .now_ms
            .saturating_sub(self.proposal_sent_ms.unwrap_or(ctx.now_ms));
        let unanswered = self.proposal.is_some()
            && matches!(self.phase, Phase::Open | Phase::Closing)
            && ctx
                .policy
                .force_close_after_ms
                .is_some_and(|limit| waited >= limit);
        if unanswered {
            self.force_close(ctx);
            return;
        }
        self.maybe_propose(ctx);
    }

    pub fn close(&mut self, ctx: &mut Ctx) -> Result<(), Refusal> {
        match self.phase {
            Phase::Open => {
                self.phase = Phase::Closing;
                self.persist(ctx);
                self.maybe_propose(ctx);
                Ok(())
            }
            Phase::Closing => Ok(()),
            _ => Err(Refusal::NotAccepting),
        }
    }

    pub fn force_close(&mut self, ctx: &mut Ctx) {
        let Some(cur) = self.current.clone() else {
            return;
        };
        if matches!(self.phase, Phase::Disputed | Phase::Concluded) {
            return;
        }
        self.phase = Phase::Disputed;
        self.proposal = None;
        self.persist(ctx);
        self.event(
            ctx,
            Event::ForceClosing {
                channel: self.id,
                version: cur.version(),
            },
        );
        self.emit(ctx, Output::Ledger(LedgerRequest::Register(cur)));
    }

    pub fn on_ledger(&mut self, event: LedgerEvent, ctx: &mut Ctx) {
        match event {
            LedgerEvent::Funded if self.phase == Phase::Funding => {
                self.phase = Phase::Open;
                self.persist(ctx);
                self.event(ctx, Event::ChannelOpen { channel: self.id });
                self.maybe_propose(ctx);
            }
            LedgerEvent::FundingExpired if self.phase == Phase::Funding => {
                self.phase = Phase::Concluded;
                self.persist(ctx);
                self.emit(
                    ctx,
                    Output::Ledger(LedgerRequest::Reclaim { channel: self.id }),
                );
            }
            LedgerEvent::Registered { version } | LedgerEvent::Refuted { version } => {
                let Some(cur) = self.current.clone() else {
                    return;
                };
                if self.phase != Phase::Disputed && self.phase != Phase::Concluded {
                    self.phase = Phase::Disputed;
                    self.proposal = None;
                    self.persist(ctx);
                }
                if version < cur.version() {
                    self.event(
                        ctx,
                        Event::Refuting {
                            channel: self.id,
                            registered: version,
                            ours: cur.version(),
                        },
                    );
                    self.emit(ctx, Output::Ledger(LedgerRequest::Refute(cur)));
                }
            }
            LedgerEvent::WindowClosed if self.phase == Phase::Disputed => {
                self.emit(
                    ctx,
                    Output::Ledger(LedgerRequest::Conclude { channel: self.id }),
                );
            }
            LedgerEvent::Concluded { version } => {
                self.phase = Phase::Concluded;
                self.persist(ctx);
                self.event(
                    ctx,
                    Event::Concluded {
                        channel: self.id,
                        version,
                    },
                );
            }
            _ => {}
        }
    }

    // ----- store failures -----

    pub fn freeze(&mut self, ctx: &mut Ctx) {
        self.frozen = true;
        self.event(ctx, Event::Frozen { channel: self.id });
    }

    /// Writes the whole record again; the channel thaws once the peer has seen it.
    pub fn retry_persist(&mut self, ctx: &mut Ctx) {
        if !self.frozen {
            return;
        }
        self.frozen = false;
        self.persist(ctx);
        self.event(ctx, Event::Thawed { channel: self.id });
        if !self.connected {
            return;
        }
        if self.reestablish_sent {
            // Messages were dropped with the failed write, and this connection has had our
            // reestablish: only a new one can say what we hold now. (The outbox releases this
            // once the retried write is durable.)
            self.emit(
                ctx,
                Output::Disconnect {
                    peer: self.peer,
                    reason: "resynchronising a channel after a store failure".into(),
                },
            );
        } else {
            // Frozen since the connection came up: our first word on it.
            self.reestablished = false;
            self.held = None;
            self.yielding = None;
            self.say_what_we_hold(ctx);
        }
    }
}
