//! Opening: A proposes and signs version 0, B checks the terms and countersigns, both fund.

use super::*;

impl Channel {
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
    /// the refusal is a violation (it costs the proposer its connection). Returns A's version
    /// 0, checked.
    pub fn check_open(
        from: &NodeId,
        open: &OpenChannel,
        ctx: &mut Ctx,
    ) -> Result<Proposal, (Refusal, bool)> {
        let params = &open.params;
        if params.party_a != *from || params.party_b != ctx.keys.id() {
            return Err((Refusal::BadParams("we are not party B of it".into()), true));
        }
        params
            .validate(ctx.policy.min_challenge_window_blocks)
            .map_err(|e| (Refusal::BadParams(e.to_string()), false))?;
        params
            .tariff
            .check_clock()
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
        .map_err(|r| (r, true))
    }

    /// Party B accepts a channel: checks it as [`Channel::check_open`] does and countersigns
    /// version 0.
    pub fn accept(
        from: &NodeId,
        open: Box<OpenChannel>,
        ctx: &mut Ctx,
    ) -> Result<Channel, (Refusal, bool)> {
        let v0 = Channel::check_open(from, &open, ctx)?;
        Ok(Channel::accepted(Arc::new(open.params), v0, ctx))
    }

    /// Party B countersigns version 0 that [`Channel::check_open`] checked.
    pub fn accepted(params: Arc<ChannelParams>, v0: Proposal, ctx: &mut Ctx) -> Channel {
        let signed = v0.countersign(&ctx.keys);
        let mut ch = Channel::new(params, Party::B, Phase::Funding, Some(signed));
        ch.connected = true;
        ch.session.reestablished = true;
        ch.persist(ctx);
        ch.send_accept(ctx);
        ch.agreed(ctx);
        ch
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

    pub(super) fn send_accept(&self, ctx: &mut Ctx) {
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

    pub(super) fn agreed(&self, ctx: &mut Ctx) {
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
            return Err(Violation::ConflictingOpen);
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
                Err(Violation::AcceptToB)
            };
        }
        let Some(v0) = &self.proposal else {
            return Err(Violation::NoVersion0Pending);
        };
        let signed = v0.complete(&self.params, msg.sig_b)?;
        // B's acceptance on this connection is as good as its reestablish: both hold v0.
        self.session.reestablished = self.connected;
        self.install_v0(signed, ctx);
        Ok(())
    }

    pub(super) fn install_v0(&mut self, signed: SignedState, ctx: &mut Ctx) {
        self.current = Some(signed);
        self.proposal = None;
        self.phase = Phase::Funding;
        self.persist(ctx);
        self.agreed(ctx);
    }
}
