//! A gateway's protocol engine: all its channels, one signer, one ordered outbox. Sans-IO: the
//! host feeds [`Input`]s and carries out the [`Output`]s.

use std::collections::BTreeMap;

use crate::channel::{Channel, ChannelView, Ctx, Violation};
use crate::crypto::{NodeId, Signer};
use crate::io::{ChannelRecord, Command, Input, OpenRequest, Output, Phase, Policy};
use crate::outbox::Outbox;
use crate::params::ParamsError;

use crate::types::{ChannelId, Version};
use crate::wire::{Message, Refuse};

/// Why a command could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No channel with this id.
    #[error("no channel {0}")]
    UnknownChannel(ChannelId),
    /// The channel is not in a phase where this command makes sense.
    #[error("channel {channel} is {phase:?}: {what} is not possible now")]
    WrongPhase {
        channel: ChannelId,
        phase: Phase,
        what: &'static str,
    },
    /// The requested parameters are invalid.
    #[error("invalid channel parameters: {0}")]
    Params(#[from] ParamsError),
    /// A channel with these exact parameters exists already.
    #[error("channel {0} exists already")]
    Exists(ChannelId),
}

/// The protocol engine of one gateway.
pub struct Node {
    signer: Signer,
    policy: Policy,
    channels: BTreeMap<ChannelId, Channel>,
    out: Outbox,
    now_ms: u64,
}

impl Node {
    pub fn new(signer: Signer, policy: Policy) -> Node {
        Node {
            signer,
            policy,
            channels: BTreeMap::new(),
            out: Outbox::default(),
            now_ms: 0,
        }
    }

    /// Rebuilds a node from the records its store holds. Every peer starts disconnected.
    pub fn restore(signer: Signer, policy: Policy, records: Vec<ChannelRecord>) -> Node {
        let mut node = Node::new(signer, policy);
        for record in records {
            let ch = Channel::restore(record);
            node.channels.insert(ch.id(), ch);
        }
        node
    }

    pub fn id(&self) -> NodeId {
        self.signer.id()
    }

    pub fn channel(&self, id: &ChannelId) -> Option<ChannelView> {
        self.channels.get(id).map(Channel::view)
    }

    pub fn channels(&self) -> impl Iterator<Item = ChannelView> + '_ {
        self.channels.values().map(Channel::view)
    }

    /// The digest of our proposal on `channel` waiting for a countersignature, if any (lets a
    /// host check a batch of countersignatures ahead of time; see [`crate::Recovered`]).
    pub fn proposal_digest(&self, channel: &ChannelId) -> Option<[u8; 32]> {
        self.channels.get(channel)?.proposal_digest()
    }

    /// The digest of the proposal `channel` would make on `reading` (see
    /// `Channel::preview_proposal`): lets a host sign a burst of proposals on every core.
    pub fn preview_proposal(
        &self,
        channel: &ChannelId,
        reading: &crate::io::IntervalReading,
    ) -> Option<[u8; 32]> {
        self.channels.get(channel)?.preview_proposal(reading)
    }

    /// This node's signer: a host that received a burst of proposals signs their digests ahead
    /// on a pool of its own ([`Signer::presign_one`]), and the countersignatures the state
    /// machine then decides to make are found instead of computed on one thread.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The next output to carry out, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop()
    }

    /// Outputs waiting for a persist acknowledgement.
    pub fn held_outputs(&self) -> usize {
        self.out.held()
    }

    /// Opens a channel as party A; returns its id. The `OpenChannel` message goes out once the
    /// signed version 0 is durable and the peer is connected (send it now if it is).
    pub fn open(&mut self, req: OpenRequest, connected: bool) -> Result<ChannelId, CommandError> {
        let params = req.params(self.signer.id());
        params.validate(self.policy.min_challenge_window_blocks)?;
        let id = params.channel_id();
        if self.channels.contains_key(&id) {
            return Err(CommandError::Exists(id));
        }
        let mut ctx = Ctx {
            signer: &self.signer,
            policy: &self.policy,
            now_ms: self.now_ms,
            out: &mut self.out,
        };
        let mut ch = Channel::open(params, &mut ctx);
        if connected {
            ch.on_connected(&mut ctx);
        }
        self.channels.insert(id, ch);
        Ok(id)
    }

    /// Feeds one input. Outputs accumulate for [`Node::poll_output`].
    pub fn handle(&mut self, input: Input) {
        match input {
            Input::Message { from, message } => self.on_message(from, message),
            Input::Connected(peer) => self.for_peer(&peer, |ch, ctx| ch.on_connected(ctx)),
            Input::Disconnected(peer) => {
                self.out.drop_sends_to(&peer);
                self.for_peer(&peer, |ch, _| ch.on_disconnected());
            }
            Input::Reading { channel, reading } => {
                self.with_channel(&channel, |ch, ctx| ch.on_reading(reading, ctx));
            }
            Input::Command(cmd) => {
                // Errors of commands given through `handle` are reported by `command`.
                let _ = self.command(cmd);
            }
            Input::Ledger { channel, event } => {
                self.with_channel(&channel, |ch, ctx| ch.on_ledger(event, ctx));
            }
            Input::Tick { now_ms } => {
                self.now_ms = self.now_ms.max(now_ms);
                let ids: Vec<ChannelId> = self.channels.keys().copied().collect();
                for id in ids {
                    self.with_channel(&id, |ch, ctx| ch.on_tick(ctx));
                }
            }
            Input::Persisted(update) => self.out.persisted(update),
            Input::PersistFailed(update) => {
                if let Some(channel) = self.out.failed(update) {
                    self.with_channel(&channel, |ch, ctx| ch.freeze(ctx));
                }
            }
        }
    }

    /// Carries out a command, reporting why it could not be.
    pub fn command(&mut self, cmd: Command) -> Result<(), CommandError> {
        match cmd {
            Command::Open(req) => self.open(req, false).map(|_| ()),
            Command::Close(id) => self
                .with_channel(&id, |ch, ctx| {
                    let phase = ch.view().phase;
                    ch.close(ctx).map_err(|_| CommandError::WrongPhase {
                        channel: ch.id(),
                        phase,
                        what: "a cooperative close",
                    })
                })
                .ok_or(CommandError::UnknownChannel(id))?,
            Command::ForceClose(id) => {
                let view = self.channel(&id).ok_or(CommandError::UnknownChannel(id))?;
                if view.current.is_none() || view.phase == Phase::Concluded {
                    return Err(CommandError::WrongPhase {
                        channel: id,
                        phase: view.phase,
                        what: "a force close",
                    });
                }
                self.with_channel(&id, |ch, ctx| ch.force_close(ctx));
                Ok(())
            }
            Command::RetryPersist(id) => self
                .with_channel(&id, |ch, ctx| ch.retry_persist(ctx))
                .ok_or(CommandError::UnknownChannel(id)),
        }
    }

    fn ctx(&mut self) -> (Ctx<'_>, &mut BTreeMap<ChannelId, Channel>) {
        (
            Ctx {
                signer: &self.signer,
                policy: &self.policy,
                now_ms: self.now_ms,
                out: &mut self.out,
            },
            &mut self.channels,
        )
    }

    fn with_channel<R>(
        &mut self,
        id: &ChannelId,
        f: impl FnOnce(&mut Channel, &mut Ctx) -> R,
    ) -> Option<R> {
        let (mut ctx, channels) = self.ctx();
        channels.get_mut(id).map(|ch| f(ch, &mut ctx))
    }

    fn for_peer(&mut self, peer: &NodeId, mut f: impl FnMut(&mut Channel, &mut Ctx)) {
        let (mut ctx, channels) = self.ctx();
        for ch in channels.values_mut().filter(|ch| ch.peer() == peer) {
            f(ch, &mut ctx);
        }
    }

    fn on_message(&mut self, from: NodeId, message: Message) {
        let Some(id) = message.channel_id() else {
            // Gateway-wide messages (meter announcements) are the host's business.
            return;
        };
        let result = match message {
            Message::OpenChannel(open) => self.on_open(from, open),
            other => {
                let (mut ctx, channels) = self.ctx();
                match channels.get_mut(&id) {
                    // A refusal of an open we never recorded (or already forgot): nothing to do.
                    None if matches!(other, Message::Refuse(_)) => Ok(()),
                    None => Err(Violation(format!("unknown channel {}", id.short()))),
                    Some(ch) if *ch.peer() != from => {
                        Err(Violation(format!("not a party of channel {}", id.short())))
                    }
                    Some(ch) => match other {
                        Message::AcceptChannel(m) => ch.on_accept(m, &mut ctx),
                        Message::Propose(m) => ch.on_propose(m, &mut ctx),
                        Message::Countersign(m) => ch.on_countersign(m, &mut ctx),
                        Message::Refuse(m) => ch.on_refuse(m, &mut ctx),
                        Message::Reestablish(m) => ch.on_reestablish(m, &mut ctx),
                        Message::OpenChannel(_) | Message::Announce(_) => Ok(()),
                    },
                }
            }
        };
        if let Err(Violation(reason)) = result {
            self.disconnect(from, reason);
        }
    }

    fn on_open(
        &mut self,
        from: NodeId,
        open: Box<crate::wire::OpenChannel>,
    ) -> Result<(), Violation> {
        let id = open.params.channel_id();
        let (mut ctx, channels) = self.ctx();
        if let Some(ch) = channels.get_mut(&id) {
            return ch.on_open_again(&open, &mut ctx);
        }
        match Channel::accept(&from, open, &mut ctx) {
            Ok(ch) => {
                channels.insert(id, ch);
                Ok(())
            }
            Err((reason, violation)) => {
                let refuse = Message::Refuse(Refuse {
                    channel_id: id,
                    version: Version(0),
                    reason: reason.clone(),
                });
                ctx.out.push(
                    Some(id),
                    Output::Send {
                        to: from,
                        message: refuse,
                    },
                );
                ctx.out.push(
                    Some(id),
                    Output::Event(crate::io::Event::OpenRefused {
                        channel: id,
                        peer: from,
                        reason: reason.clone(),
                    }),
                );
                if violation {
                    Err(Violation(reason.to_string()))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// A peer broke the protocol: every channel with it forgets the connection, the host closes
    /// it. No channel state changes.
    fn disconnect(&mut self, peer: NodeId, reason: String) {
        self.for_peer(&peer, |ch, _| ch.on_disconnected());
        // A refusal explaining why may go out first; nothing else for this connection does.
        self.out.drop_sends_to_except_refusals(&peer);
        self.out.push(
            None,
            Output::Event(crate::io::Event::PeerMisbehaved {
                peer,
                reason: reason.clone(),
            }),
        );
        self.out.push(None, Output::Disconnect { peer, reason });
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.signer.id())
            .field("channels", &self.channels.len())
            .finish()
    }
}
