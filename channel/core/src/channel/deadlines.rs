//! Deadlines: what happens when a wait the policy bounds runs out.

use super::*;

impl Channel {
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
}
