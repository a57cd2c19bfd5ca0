//! Reconnecting: what each side says first on a connection, and how the two catch up.

use super::*;

impl Channel {
    pub fn on_connected(&mut self, ctx: &mut Ctx) {
        self.connected = true;
        self.session = Session::default();
        if self.frozen {
            // What we hold in memory may not be durable: say nothing until a retry persists it.
            return;
        }
        self.say_what_we_hold(ctx);
    }

    /// Our first word on a connection: what we hold (`Reestablish`), or our proposal of the
    /// channel again (`OpenChannel`) while the peer has not accepted it.
    pub(super) fn say_what_we_hold(&mut self, ctx: &mut Ctx) {
        match (&self.current, &self.proposal) {
            (Some(cur), _) => {
                self.session.reestablish_sent = true;
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
        self.session = Session::default();
    }

    pub fn on_reestablish(
        &mut self,
        msg: Box<Reestablish>,
        ctx: &mut Ctx,
    ) -> Result<(), Violation> {
        if self.session.reestablished {
            return Err(Violation::SecondReestablish);
        }
        let msg = *msg;
        let theirs = msg.current.verify(&self.params, &self.id)?;
        let mut changed = false;
        let ours_version = self.current.as_ref().map(|c| c.version());
        if ours_version.is_none_or(|v| theirs.version() > v) {
            if theirs.version() > self.highest_signed && ours_version.is_some() {
                // We never signed it, yet it carries our signature: impossible unless our
                // store lost a write.
                return Err(Violation::StateWeNeverSigned);
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
                    return Err(Violation::ProposalFromUs("reestablish proposal"));
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
        self.session.reestablished = true;
        self.session.yielding = None;
        if let Some(parts) = their_proposal {
            return self.consider_proposal(parts, true, ctx);
        }
        self.maybe_propose(ctx);
        Ok(())
    }
}
