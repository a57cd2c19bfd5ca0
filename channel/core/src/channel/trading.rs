//! Trading: readings become proposals, the peer's proposals are checked against our meter and
//! countersigned, refused or held, and the countersigned state becomes current.

use super::*;

impl Channel {
    /// The digest of the state this channel would propose if `reading` arrived now and were its
    /// only unsettled reading; `None` when it would not propose. A preview for hosts that sign
    /// ahead (see `Node::preview_proposal`): it changes nothing.
    pub fn preview_proposal(&self, reading: &IntervalReading, policy: &Policy) -> Option<[u8; 32]> {
        if !self.may_propose(policy) || self.readings.keys().any(|i| *i < reading.interval) {
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
    pub(super) fn billed(
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

    pub fn on_reading(&mut self, reading: IntervalReading, ctx: &mut Ctx) {
        let Some(cur) = self.current_state() else {
            return;
        };
        // A market channel settles books, not meter readings.
        if reading.interval <= cur.last_interval || self.is_market() {
            return;
        }
        self.readings
            .insert(reading.interval, (reading, ctx.now_ms));
        while self.readings.len() > ctx.policy.max_readings {
            self.readings.pop_first();
        }
        if let Some((_, trade, _)) = &self.session.held {
            if trade.interval == reading.interval {
                let (held, trade, _) = self.session.held.take().expect("checked above");
                self.decide_on_trade(held, trade, ctx);
            }
        }
        self.maybe_propose(ctx);
    }

    pub(super) fn may_propose(&self, policy: &Policy) -> bool {
        matches!(self.phase, Phase::Open | Phase::Closing)
            && self.connected
            && self.session.ready()
            && !self.frozen
            && self.proposal.is_none()
            && self.towers_caught_up(policy)
    }

    /// Whether enough watchtowers acknowledged our newest state for us to sign a newer one.
    pub(super) fn towers_caught_up(&self, policy: &Policy) -> bool {
        policy.min_acks == 0
            || self
                .current_state()
                .is_none_or(|cur| cur.version <= self.acked)
    }

    /// The towers acknowledged `version`: a held peer proposal is decided, ours may go.
    pub fn on_towers_acked(&mut self, version: Version, ctx: &mut Ctx) {
        if version <= self.acked {
            return;
        }
        self.acked = version;
        if self.towers_caught_up(ctx.policy) {
            if let Some((proposal, trade, _)) = self.session.awaiting_acks.take() {
                self.decide(proposal, trade, ctx);
            }
        }
        self.maybe_propose(ctx);
    }

    /// A structurally valid peer proposal (claiming `trade`), once nothing stands in its way.
    fn decide(&mut self, proposal: Proposal, trade: Option<Trade>, ctx: &mut Ctx) {
        let Some(cur) = self.current_state().cloned() else {
            return;
        };
        match trade {
            None => match self.check_peer_funds(&cur, proposal.state()) {
                Ok(()) => self.countersign(proposal, None, ctx),
                Err(reason) => self.refuse(proposal.version(), reason, ctx),
            },
            Some(trade) => self.decide_on_trade(proposal, trade, ctx),
        }
    }

    /// Proposes the next update we are owed, if any; in `Closing` with nothing owed, the final
    /// state.
    pub fn maybe_propose(&mut self, ctx: &mut Ctx) {
        if !self.may_propose(ctx.policy) {
            return;
        }
        let Some(cur) = self.current_state().cloned() else {
            return;
        };
        let Some(version) = self.next_version() else {
            return;
        };
        if self.maybe_propose_funds(&cur, version, ctx) {
            return;
        }
        if self.is_market() {
            if let Some(next) = self.next_market_state(&cur, version) {
                self.propose(next, ctx);
            } else if self.phase == Phase::Closing {
                self.propose(cur.finalized(version), ctx);
            }
            return;
        }
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

    /// What this channel can still settle in `interval` from its current balances: the energy
    /// the peer can pay us for, and the energy we can pay the peer for; none before it trades.
    pub fn caps(&self, interval: IntervalIndex) -> Option<crate::metering::Caps> {
        let cur = self.current_state()?;
        Some(crate::metering::Caps {
            sell: self.affordable(cur, self.me.other(), interval),
            buy: self.affordable(cur, self.me, interval),
        })
    }

    /// Energy `buyer` can still pay for in `interval` from its balance in `state`.
    pub(super) fn affordable(
        &self,
        state: &State,
        buyer: Party,
        interval: IntervalIndex,
    ) -> WattHours {
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
    pub(super) fn propose(&mut self, state: State, ctx: &mut Ctx) {
        let me = self.me;
        let Ok(proposal) = self.sign_at(state.version, ctx, |keys| Proposal::sign(state, me, keys))
        else {
            // Every caller proposes above our highest version; one that did not signs nothing.
            return;
        };
        self.proposal_sent_ms = Some(ctx.now_ms);
        let parts = proposal.to_parts();
        self.proposal = Some(proposal);
        self.persist(ctx);
        self.send(ctx, Message::Propose(parts));
    }

    pub fn on_propose(&mut self, parts: ProposalParts, ctx: &mut Ctx) -> Result<(), Violation> {
        self.consider_proposal(parts, false, ctx)
    }

    /// A peer proposal, live or repeated in a reestablish. In a reestablish both sides see
    /// both pending proposals, so they resolve a crossing the same way whatever the versions;
    /// live, a proposal at a version already resolved is a stale duplicate.
    pub(super) fn consider_proposal(
        &mut self,
        parts: ProposalParts,
        repeated: bool,
        ctx: &mut Ctx,
    ) -> Result<(), Violation> {
        if parts.proposer != self.me.other() {
            return Err(Violation::ProposalFromUs("proposal"));
        }
        let Some(cur) = self.current_state().cloned() else {
            return Err(Violation::ProposalBeforeVersion0);
        };
        let proposal = Proposal::verify_known(&self.params, &self.id, parts, ctx.keys.recovered())?;
        if proposal.version() <= cur.version {
            return Err(Violation::NotNewer {
                proposed: proposal.version(),
                current: cur.version,
            });
        }
        if self.session.held.is_some() {
            return Err(Violation::SecondProposal);
        }
        if !matches!(self.phase, Phase::Open | Phase::Closing) || self.frozen {
            self.refuse(proposal.version(), Refusal::NotAccepting, ctx);
            return Ok(());
        }
        if let Some(ours) = self.proposal.clone() {
            if !repeated && proposal.version() <= self.peer_highest {
                return Err(Violation::Stale {
                    proposed: proposal.version(),
                    resolved: self.peer_highest,
                });
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
        self.session.yielding = None;
        if !self.towers_caught_up(ctx.policy) {
            // Not beyond a state too few watchtowers hold: decided once they acknowledge it.
            self.session.awaiting_acks = Some((proposal, trade, ctx.now_ms));
            return Ok(());
        }
        self.decide(proposal, trade, ctx);
        self.maybe_propose(ctx);
        Ok(())
    }

    /// Meter checks for a structurally valid trade proposal (`trade` is what
    /// `check_successor` found it claims): countersign, refuse, or hold it until our reading of
    /// its interval arrives.
    pub(super) fn decide_on_trade(&mut self, proposal: Proposal, trade: Trade, ctx: &mut Ctx) {
        if self.is_market() {
            return self.decide_on_settlement(proposal, trade, ctx);
        }
        let Some(cur) = self.current_state() else {
            return;
        };
        let interval = trade.interval;
        let Some(&(reading, _)) = self.readings.get(&interval) else {
            let newest = self.readings.keys().next_back().copied();
            if newest.is_none_or(|n| n < interval) {
                self.session.held = Some((proposal, trade, ctx.now_ms));
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

    pub(super) fn countersign(&mut self, proposal: Proposal, trade: Option<Trade>, ctx: &mut Ctx) {
        let signed = match self.sign_at(proposal.version(), ctx, |keys| proposal.countersign(keys))
        {
            Ok(signed) => signed,
            Err(burned) => return self.refuse(proposal.version(), burned, ctx),
        };
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
    pub(super) fn install(&mut self, signed: SignedState, trade: Option<Trade>, ctx: &mut Ctx) {
        self.session.crossings = 0;
        let version = signed.version();
        let is_final = signed.state().is_final;
        let funds_before = self.current_state().map(|s| s.funds).unwrap_or_default();
        let proposed_by_us = self
            .proposal
            .as_ref()
            .is_some_and(|p| p.version() == version);
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
        self.on_funds_installed(&funds_before, &signed, ctx);
        if let Some(trade) = trade {
            self.event(
                ctx,
                Event::Settled {
                    channel: self.id,
                    version,
                    trade,
                    digest: *signed.digest(),
                },
            );
        }
        if is_final && proposed_by_us {
            // The peer countersigned it and submits it at once; we do if it has not concluded
            // after a while (`Channel::on_tick`).
            self.final_pending = true;
            self.final_since = Some(ctx.now_ms);
        } else if is_final {
            self.emit(
                ctx,
                Output::Ledger(LedgerRequest::ConcludeFinal(signed.clone())),
            );
        }
        if is_final {
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
    pub(super) fn refuse(&mut self, version: Version, reason: Refusal, ctx: &mut Ctx) {
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

    pub fn on_countersign(&mut self, msg: Countersign, ctx: &mut Ctx) -> Result<(), Violation> {
        let Some(ours) = self.proposal.clone() else {
            return Err(Violation::UnexpectedCountersignature(msg.version));
        };
        if ours.version() != msg.version || self.phase == Phase::AwaitingAccept {
            return Err(Violation::WrongCountersignature {
                countersigned: msg.version,
                ours: ours.version(),
            });
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
        if matches!(msg.reason, Refusal::TopUpNotSeen { .. }) {
            self.session.funds_refused = Some(ctx.now_ms);
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
}
