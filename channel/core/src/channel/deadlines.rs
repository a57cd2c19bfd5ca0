//! Deadlines: what happens when a wait the policy bounds runs out.

use super::*;

impl Channel {
    pub fn on_tick(&mut self, ctx: &mut Ctx) {
        if self.final_pending && self.phase == Phase::ClosedCooperatively {
            let since = *self.final_since.get_or_insert(ctx.now_ms);
            if ctx.now_ms.saturating_sub(since) >= ctx.policy.final_submit_wait_ms {
                self.final_pending = false;
                if let Some(cur) = self.current.clone() {
                    self.emit(ctx, Output::Ledger(LedgerRequest::ConcludeFinal(cur)));
                }
            }
        }
        if let Some(since) = self.session.yielding {
            if ctx.now_ms.saturating_sub(since) >= ctx.policy.crossing_wait_ms {
                // The winner of the crossing proposes at once; one that does not is stalling
                // us (perhaps crossing on purpose): propose again ourselves.
                self.session.yielding = None;
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
        if let Some((held, _, since)) = &self.session.held {
            if ctx.now_ms.saturating_sub(*since) >= ctx.policy.reading_wait_ms {
                let version = held.version();
                let interval = held.state().last_interval.0;
                self.session.held = None;
                let reason = if self.is_market() {
                    Refusal::NoBook(interval)
                } else {
                    Refusal::NoMeterReading(interval)
                };
                self.refuse(version, reason, ctx);
            }
        }
        if let Some((held, _, since)) = &self.session.awaiting_acks {
            if ctx.now_ms.saturating_sub(*since) >= ctx.policy.reading_wait_ms {
                // The towers did not catch up in time: the peer may propose it again later.
                let version = held.version();
                self.session.awaiting_acks = None;
                self.refuse(version, Refusal::NotAccepting, ctx);
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

    /// When [`Channel::on_tick`] next has something to do (ms on the node's clock; at or
    /// before now: at once), or `None` while only an input can move the channel. It mirrors
    /// `on_tick` and `maybe_propose` step by step, so that a channel ticked at its deadline
    /// always moves on: the node ticks only the channels whose deadline has come.
    pub fn next_deadline(&self, policy: &Policy) -> Option<u64> {
        let mut at: Option<u64> = None;
        let mut due = |t: u64| at = Some(at.map_or(t, |a| a.min(t)));
        if self.final_pending && self.phase == Phase::ClosedCooperatively {
            due(self
                .final_since
                .map_or(0, |s| s.saturating_add(policy.final_submit_wait_ms)));
        }
        if let Some(since) = self.session.yielding {
            due(since.saturating_add(policy.crossing_wait_ms));
        }
        if let Some((_, _, since)) = &self.session.held {
            due(since.saturating_add(policy.reading_wait_ms));
        }
        if self.proposal.is_some() {
            match self.proposal_sent_ms {
                None => due(0),
                Some(sent) if matches!(self.phase, Phase::Open | Phase::Closing) => {
                    if let Some(limit) = policy.force_close_after_ms {
                        due(sent.saturating_add(limit));
                    }
                }
                Some(_) => {}
            }
        }
        if let Some((_, _, since)) = &self.session.awaiting_acks {
            due(since.saturating_add(policy.reading_wait_ms));
        }
        if self.may_propose(policy) && self.next_version().is_some() {
            if let Some(cur) = self.current_state() {
                if self.funds_wanted(cur).is_some() {
                    // Due now, or once the peer's refusal of the last one is old enough.
                    let retry = self
                        .session
                        .funds_refused
                        .map_or(0, |at| at.saturating_add(policy.funds_retry_ms));
                    due(retry);
                }
                if self.is_market() && (!self.books.is_empty() && self.me == Party::B) {
                    due(0);
                }
                // The first reading `maybe_propose` would act on, or wait for.
                let first = self.readings.iter().next();
                match first {
                    Some((interval, (reading, arrived))) => {
                        if *interval > cur.last_interval && reading.received > reading.delivered {
                            due(arrived.saturating_add(policy.peer_turn_wait_ms));
                        } else {
                            due(0);
                        }
                    }
                    None if self.phase == Phase::Closing => due(0),
                    None => {}
                }
            }
        }
        at
    }
}
