//! Crossing: both sides proposed at once; neither countersigns, the winner proposes again.

use super::*;

impl Channel {
    /// Both sides proposed at once. Neither countersigns the other (that would sign two states
    /// at one version): both proposals are dropped and the winner proposes again above both.
    /// The winner is the proposal with the smaller key `(is_final, interval, party)`, so
    /// trades go before a close, earlier intervals first, and A breaks ties.
    pub(super) fn resolve_crossing(
        &mut self,
        ours: Proposal,
        theirs: Proposal,
        ctx: &mut Ctx,
    ) -> Result<(), Violation> {
        let cur = self.current_state().cloned().ok_or(Refusal::NotAccepting)?;
        self.check_plausible(theirs.version(), "a crossing proposal", ctx)?;
        self.session.crossings = self.session.crossings.saturating_add(1);
        if self.session.crossings > MAX_CROSSINGS_IN_A_ROW {
            return Err(Violation::CrossingOnPurpose(self.session.crossings));
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
            self.session.yielding = None;
            match self.next_version() {
                Some(v) => {
                    let mut state = ours.state().clone();
                    state.version = v;
                    self.propose(state, ctx);
                }
                None => self.persist(ctx),
            }
        } else {
            self.session.yielding = Some(ctx.now_ms);
            self.requeue(&ours, ctx);
            self.persist(ctx);
        }
        Ok(())
    }

    /// Puts the trade of a dropped proposal of ours back, to propose it again later.
    pub(super) fn requeue(&mut self, ours: &Proposal, ctx: &mut Ctx) {
        let Some(cur) = self.current_state() else {
            return;
        };
        if ours.state().is_final {
            return;
        }
        if self.is_market() {
            // The market node proposes its settlement again (a member proposes only a final
            // state).
            let claim = cur.market_claim(ours.state());
            self.books.insert(claim.interval, (claim, ctx.now_ms));
            return;
        }
        let delivered = ours
            .state()
            .energy_from(self.me)
            .0
            .saturating_sub(cur.energy_from(self.me).0);
        if delivered == 0 {
            // A funds update: proposed again from the record when it is still due.
            return;
        }
        let interval = ours.state().last_interval;
        let reading = IntervalReading {
            interval,
            delivered: WattHours(delivered),
            received: WattHours(0),
            metered_import: WattHours(0),
        };
        self.readings.insert(interval, (reading, ctx.now_ms));
    }
}
