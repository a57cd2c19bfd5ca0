//! Closing: cooperatively, by force on the ledger, the ledger's events, and store failures
//! that freeze a channel until a retry.

use super::*;

impl Channel {
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
            LedgerEvent::ToppedUp { .. } | LedgerEvent::Withdrawn { .. } => {
                self.on_ledger_funds(&event, ctx);
            }
            _ => {}
        }
    }

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
        if self.session.reestablish_sent {
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
            let crossings = self.session.crossings;
            self.session = Session {
                crossings,
                ..Session::default()
            };
            self.say_what_we_hold(ctx);
        }
    }
}
