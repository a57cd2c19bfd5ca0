//! A market channel (party A a member, B the market node; `specs/market.md`): the market node
//! proposes each interval's settlement from its book; the member countersigns only what the
//! book it checked gives it.

use super::*;
use crate::market::Settlement;

impl Channel {
    pub(crate) fn is_market(&self) -> bool {
        self.params.tariff.market().is_some()
    }

    /// A settlement for this channel: on the market node's side, from the book it closed (we
    /// propose it); on the member's, from a book it checked (we countersign a proposal that
    /// settles exactly it).
    pub fn on_settlement(&mut self, s: Settlement, ctx: &mut Ctx) {
        let Some(cur) = self.current_state() else {
            return;
        };
        if !self.is_market() || s.interval <= cur.last_interval {
            return;
        }
        self.books.insert(s.interval, (s, ctx.now_ms));
        while self.books.len() > ctx.policy.max_readings {
            self.books.pop_first();
        }
        if let Some((_, trade, _)) = &self.session.held {
            if trade.interval == s.interval {
                let (held, trade, _) = self.session.held.take().expect("checked above");
                self.decide_on_settlement(held, trade, ctx);
            }
        }
        self.maybe_propose(ctx);
    }

    /// We refused the book of `interval`: a proposal that settles it is refused, now and if it
    /// comes later.
    pub fn on_book_refused(&mut self, interval: IntervalIndex, ctx: &mut Ctx) {
        if !self.is_market() {
            return;
        }
        self.refused_books.insert(interval);
        while self.refused_books.len() > ctx.policy.max_readings {
            self.refused_books.pop_first();
        }
        if let Some((held, trade, _)) = &self.session.held {
            if trade.interval == interval {
                let version = held.version();
                self.session.held = None;
                self.refuse(version, Refusal::NoBook(interval.0), ctx);
                self.maybe_propose(ctx);
            }
        }
    }

    /// The market node's next proposal: the oldest settlement not settled yet.
    pub(super) fn next_market_state(&mut self, cur: &State, version: Version) -> Option<State> {
        if self.me != Party::B {
            return None;
        }
        while let Some((&interval, &(s, _))) = self.books.iter().next() {
            self.books.remove(&interval);
            if interval <= cur.last_interval {
                continue;
            }
            if let Ok((next, _)) = cur.settle_market(version, &s) {
                return Some(next);
            }
        }
        None
    }

    /// A structurally valid market proposal (`trade` is what `check_successor` found it
    /// claims): countersign it if it settles exactly what our checked book gives us, refuse it
    /// if not, hold it until the book is checked.
    pub(super) fn decide_on_settlement(&mut self, proposal: Proposal, trade: Trade, ctx: &mut Ctx) {
        let Some(cur) = self.current_state() else {
            return;
        };
        let interval = trade.interval;
        if self.refused_books.contains(&interval) {
            self.refuse(proposal.version(), Refusal::NoBook(interval.0), ctx);
            return;
        }
        let Some(&(s, _)) = self.books.get(&interval) else {
            let newest = self.books.keys().next_back().copied();
            if newest.is_none_or(|n| n < interval) {
                self.session.held = Some((proposal, trade, ctx.now_ms));
            } else {
                self.refuse(proposal.version(), Refusal::NoBook(interval.0), ctx);
            }
            return;
        };
        let expected = cur
            .settle_market(proposal.version(), &s)
            .map(|(next, _)| next);
        self.books.remove(&interval);
        if expected.as_ref() != Ok(proposal.state()) {
            self.refuse(proposal.version(), Refusal::NotTheBook(interval.0), ctx);
            return;
        }
        self.countersign(proposal, Some(trade), ctx);
    }
}
