//! Top-ups and withdrawals while the channel stays open (`specs/protocol.md`, "Top-up and
//! withdrawal"). A top-up goes to the ledger first and into a state once the ledger confirmed
//! it; a withdrawal goes into a state first and to the ledger once both signed it. Either way
//! the party whose money moves proposes the state, and the ledger pays whatever a state
//! registered later does not yet account for to the party it belongs to.

use super::*;
use crate::state::Funds;

impl Channel {
    /// Asks the ledger to add `amount` of our tokens to the open channel.
    pub fn top_up(&mut self, amount: Amount, ctx: &mut Ctx) -> Result<(), String> {
        let cur = self.funds_command_state("a top-up")?;
        if amount == Amount(0) {
            return Err("a top-up of 0 adds nothing: give an amount above 0".into());
        }
        // Every state's balances must still fit once the top-up is in one.
        let pending = self.funds.ledger.topped_up[self.me.index()]
            .0
            .saturating_sub(cur.funds.topped_up[self.me.index()].0);
        let fits = cur
            .held(&self.params)
            .and_then(|held| held.0.checked_add(pending))
            .and_then(|held| held.checked_add(amount.0));
        if fits.is_none() {
            return Err(format!(
                "a top-up of {amount} would take the channel beyond the largest amount it can hold"
            ));
        }
        self.emit(
            ctx,
            Output::Ledger(LedgerRequest::TopUp {
                channel: self.id,
                amount,
            }),
        );
        Ok(())
    }

    /// Asks to take `amount` of our balance out of the open channel: the next state we propose
    /// withdraws it; once the peer countersigns, the ledger pays it.
    pub fn withdraw(&mut self, amount: Amount, ctx: &mut Ctx) -> Result<(), String> {
        let cur = self.funds_command_state("a withdrawal")?;
        if amount == Amount(0) {
            return Err("a withdrawal of 0 takes nothing: give an amount above 0".into());
        }
        let i = self.me.index();
        let asked = self.funds.withdraw_wanted.max(cur.funds.withdrawn[i]);
        let waiting = asked.0 - cur.funds.withdrawn[i].0;
        let available = self.spendable(&cur).0.saturating_sub(waiting);
        if amount.0 > available {
            return Err(format!(
                "only {} of our balance can be withdrawn now{}",
                Amount(available),
                if waiting > 0 {
                    format!(" ({} more is already on its way out)", Amount(waiting))
                } else {
                    String::new()
                }
            ));
        }
        self.funds.withdraw_wanted = Amount(asked.0 + amount.0);
        self.persist(ctx);
        self.maybe_propose(ctx);
        Ok(())
    }

    /// The current state, if the channel is open for a funds command (`what`).
    fn funds_command_state(&self, what: &str) -> Result<State, String> {
        match self.current_state() {
            Some(cur) if self.phase == Phase::Open && !self.frozen => Ok(cur.clone()),
            _ => Err(format!(
                "{what} needs an open channel; this one is {}",
                if self.frozen {
                    "frozen by a failed write".to_string()
                } else {
                    format!("{:?}", self.phase).to_lowercase()
                }
            )),
        }
    }

    /// Our balance in `cur` plus our top-ups the ledger confirmed and no state holds yet.
    fn spendable(&self, cur: &State) -> Amount {
        let i = self.me.index();
        let unheld = self.funds.ledger.topped_up[i]
            .0
            .saturating_sub(cur.funds.topped_up[i].0);
        Amount(cur.balance(self.me).0.saturating_add(unheld))
    }

    /// Our top-ups and withdrawals (cumulative) as the next funds update would make them, if
    /// they differ from `cur`'s: top-ups the ledger confirmed, the withdrawals asked for as far
    /// as our balance goes. `None` while the peer's last refusal of one is recent.
    pub(super) fn funds_due(
        &self,
        cur: &State,
        policy: &Policy,
        now_ms: u64,
    ) -> Option<(Amount, Amount)> {
        if self
            .session
            .funds_refused
            .is_some_and(|at| now_ms < at.saturating_add(policy.funds_retry_ms))
        {
            return None;
        }
        self.funds_wanted(cur)
    }

    /// [`Channel::funds_due`] whenever the peer last refused one.
    pub(super) fn funds_wanted(&self, cur: &State) -> Option<(Amount, Amount)> {
        if self.phase != Phase::Open {
            return None;
        }
        let i = self.me.index();
        let topped = self.funds.ledger.topped_up[i].max(cur.funds.topped_up[i]);
        let most = cur.funds.withdrawn[i]
            .0
            .saturating_add(self.spendable(cur).0);
        let withdrawn = Amount(self.funds.withdraw_wanted.0.min(most)).max(cur.funds.withdrawn[i]);
        (topped != cur.funds.topped_up[i] || withdrawn != cur.funds.withdrawn[i])
            .then_some((topped, withdrawn))
    }

    /// Proposes our funds update if one is due; whether it did.
    pub(super) fn maybe_propose_funds(
        &mut self,
        cur: &State,
        version: Version,
        ctx: &mut Ctx,
    ) -> bool {
        let Some((topped, withdrawn)) = self.funds_due(cur, ctx.policy, ctx.now_ms) else {
            return false;
        };
        match cur.with_funds(version, self.me, topped, withdrawn) {
            Ok(next) => {
                self.propose(next, ctx);
                true
            }
            Err(_) => false,
        }
    }

    /// A peer's funds update names only top-ups the ledger has shown us.
    pub(super) fn check_peer_funds(&self, cur: &State, proposed: &State) -> Result<(), Refusal> {
        let p = self.me.other().index();
        let seen = self.funds.ledger.topped_up[p].max(cur.funds.topped_up[p]);
        if proposed.funds.topped_up[p] > seen {
            return Err(Refusal::TopUpNotSeen {
                total: proposed.funds.topped_up[p].0,
            });
        }
        Ok(())
    }

    /// After `signed` became current over `before`: a funds change is announced, and our own
    /// withdrawal goes to the ledger.
    pub(super) fn on_funds_installed(
        &mut self,
        before: &Funds,
        signed: &SignedState,
        ctx: &mut Ctx,
    ) {
        let after = signed.state().funds;
        if after == *before {
            return;
        }
        for party in [Party::A, Party::B] {
            let i = party.index();
            if after.topped_up[i] != before.topped_up[i]
                || after.withdrawn[i] != before.withdrawn[i]
            {
                self.event(
                    ctx,
                    Event::FundsChanged {
                        channel: self.id,
                        version: signed.version(),
                        party,
                        topped_up: after.topped_up[i],
                        withdrawn: after.withdrawn[i],
                    },
                );
            }
        }
        let i = self.me.index();
        if after.withdrawn[i] > before.withdrawn[i]
            && after.withdrawn[i] > self.funds.ledger.withdrawn[i]
        {
            self.emit(ctx, Output::Ledger(LedgerRequest::Withdraw(signed.clone())));
        }
    }

    /// The ledger confirmed top-ups or paid withdrawals.
    pub(super) fn on_ledger_funds(&mut self, event: &LedgerEvent, ctx: &mut Ctx) {
        let (party, total, topped) = match *event {
            LedgerEvent::ToppedUp { party, total } => (party, total, true),
            LedgerEvent::Withdrawn { party, total } => (party, total, false),
            _ => return,
        };
        let slot = if topped {
            &mut self.funds.ledger.topped_up[party.index()]
        } else {
            &mut self.funds.ledger.withdrawn[party.index()]
        };
        if total <= *slot {
            return;
        }
        *slot = total;
        self.persist(ctx);
        self.event(
            ctx,
            Event::LedgerFunds {
                channel: self.id,
                party,
                topped_up: self.funds.ledger.topped_up[party.index()],
                withdrawn: self.funds.ledger.withdrawn[party.index()],
            },
        );
        self.maybe_propose(ctx);
    }
}
