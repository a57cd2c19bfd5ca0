//! A gateway's protocol engine: all its channels, one signer, one ordered outbox. Sans-IO: the
//! host feeds [`Input`]s and carries out the [`Output`]s.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::channel::{Channel, ChannelView, Ctx, Violation};
use crate::consent::Offer;
use crate::crypto::{Keys, NodeId, Precomputed, Signer};
use crate::io::{ChannelRecord, Command, Input, OpenRequest, Output, Phase, Policy};
use crate::outbox::Outbox;
use crate::params::{ChannelParams, ParamsError};

use crate::state::Refusal;
use crate::types::{Amount, ChannelId, Party, Version};
use crate::wire::{Message, Refuse};

/// Nothing done ahead, for inputs that come without it.
static NOTHING: Precomputed = Precomputed::NONE;

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
    /// No neighbour's proposal with this id waits for an answer.
    #[error("no proposal {0} waits for an answer (it may have expired, or been withdrawn)")]
    NoOffer(ChannelId),
    /// The proposal cannot be accepted as it stands.
    #[error("cannot accept channel {channel}: {why}")]
    CannotAccept { channel: ChannelId, why: String },
    /// A top-up or withdrawal that cannot be made now.
    #[error("channel {channel}: {why}")]
    Funds { channel: ChannelId, why: String },
}

/// The protocol engine of one gateway.
pub struct Node {
    signer: Signer,
    policy: Policy,
    channels: BTreeMap<ChannelId, Channel>,
    /// Neighbours' proposals waiting for the owner's answer (not persisted: nothing is signed).
    offers: BTreeMap<ChannelId, Offer>,
    /// Our tokens on the ledger outside channels, as the host last told us.
    balance: Option<Amount>,
    /// The peers connected now.
    connected: HashSet<NodeId>,
    out: Outbox,
    now_ms: u64,
    /// When each channel next has something to do on a tick ([`Channel::next_deadline`]), in
    /// order: a tick visits only the channels whose time has come.
    deadlines: BTreeSet<(u64, ChannelId)>,
    deadline_of: HashMap<ChannelId, u64>,
}

impl Node {
    pub fn new(signer: Signer, policy: Policy) -> Node {
        Node {
            signer,
            policy,
            channels: BTreeMap::new(),
            offers: BTreeMap::new(),
            balance: None,
            connected: HashSet::new(),
            out: Outbox::default(),
            now_ms: 0,
            deadlines: BTreeSet::new(),
            deadline_of: HashMap::new(),
        }
    }

    /// Rebuilds a node from the records its store holds. Every peer starts disconnected.
    pub fn restore(signer: Signer, policy: Policy, records: Vec<ChannelRecord>) -> Node {
        let mut node = Node::new(signer, policy);
        for record in records {
            let ch = Channel::restore(record);
            let id = ch.id();
            node.channels.insert(id, ch);
            node.reschedule(&id);
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

    /// Each channel's id, neighbour and phase, without copying its states: what a host
    /// routes by (a reading to the open channel with a neighbour, the neighbours it admits).
    pub fn channel_peers(&self) -> impl Iterator<Item = (ChannelId, NodeId, Phase)> + '_ {
        self.channels
            .values()
            .map(|ch| (ch.id(), *ch.peer(), ch.phase()))
    }

    /// [`Node::channel_peers`] of the channels with neighbours (tariff channels): what the
    /// metering rounds are with.
    pub fn neighbour_channels(&self) -> impl Iterator<Item = (ChannelId, NodeId, Phase)> + '_ {
        self.channels
            .values()
            .filter(|ch| !ch.is_market())
            .map(|ch| (ch.id(), *ch.peer(), ch.phase()))
    }

    /// Channel `id`'s parameters, without copying its states.
    pub fn params(&self, id: &ChannelId) -> Option<&ChannelParams> {
        self.channels.get(id).map(Channel::params_ref)
    }

    /// The meter whose signed readings the neighbour of channel `id` must give, if the
    /// channel's terms name one.
    pub fn peer_meter(&self, id: &ChannelId) -> Option<NodeId> {
        let ch = self.channels.get(id)?;
        ch.params_ref().evidence.meter(ch.me().other())
    }

    /// What channel `id` can still settle in `interval` (see [`crate::metering::Caps`]).
    pub fn caps(
        &self,
        id: &ChannelId,
        interval: crate::IntervalIndex,
    ) -> Option<crate::metering::Caps> {
        self.channels.get(id)?.caps(interval)
    }

    /// The market channels, with the market's terms and our side (A: we are a member, B: we
    /// are the market node).
    pub fn market_channels(
        &self,
    ) -> impl Iterator<Item = (ChannelId, NodeId, Phase, Party, &crate::market::MarketTerms)> + '_
    {
        self.channels.values().filter_map(|ch| {
            let view = ch.params_ref();
            let terms = view.tariff.market()?;
            Some((ch.id(), *ch.peer(), ch.phase(), ch.me(), terms))
        })
    }

    /// Neighbours' channel proposals waiting for the owner's `accept` or `reject`.
    pub fn offers(&self) -> impl Iterator<Item = &Offer> + '_ {
        self.offers.values()
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
        self.channels
            .get(channel)?
            .preview_proposal(reading, &self.policy)
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
        params.tariff.check_clock().map_err(ParamsError::from)?;
        let id = params.channel_id();
        if self.channels.contains_key(&id) {
            return Err(CommandError::Exists(id));
        }
        let mut ctx = Ctx {
            keys: Keys {
                signer: &self.signer,
                ahead: &NOTHING,
            },
            policy: &self.policy,
            now_ms: self.now_ms,
            out: &mut self.out,
        };
        let mut ch = Channel::open(params, &mut ctx);
        if connected {
            ch.on_connected(&mut ctx);
        }
        self.channels.insert(id, ch);
        self.reschedule(&id);
        Ok(id)
    }

    /// When the node next has something to do on its own (ms on the clock of
    /// [`Input::Tick`]; at or before the last tick: at once): the earliest channel deadline, or
    /// a waiting proposal's expiry. `None`: only an input can move it. A host ticks then
    /// instead of visiting every channel on a timer.
    pub fn poll_timeout(&self) -> Option<u64> {
        let channels = self.deadlines.first().map(|(at, _)| *at);
        let ttl = self.policy.accept.offer_ttl_ms;
        let offers = self
            .offers
            .values()
            .map(|o| o.received_ms.saturating_add(ttl))
            .min();
        channels.into_iter().chain(offers).min()
    }

    /// Files `id` under its next deadline.
    fn reschedule(&mut self, id: &ChannelId) {
        if let Some(old) = self.deadline_of.remove(id) {
            self.deadlines.remove(&(old, *id));
        }
        let next = self
            .channels
            .get(id)
            .and_then(|ch| ch.next_deadline(&self.policy));
        if let Some(at) = next {
            self.deadlines.insert((at, *id));
            self.deadline_of.insert(*id, at);
        }
    }

    /// Feeds one input. Outputs accumulate for [`Node::poll_output`].
    pub fn handle(&mut self, input: Input) {
        self.handle_with(input, &NOTHING)
    }

    /// Feeds one input with work a host did ahead for it (the signatures of a burst made and
    /// checked on a pool of its own): the state machine decides exactly as in
    /// [`Node::handle`], and finds each signature or recovery there instead of computing it.
    pub fn handle_with(&mut self, input: Input, ahead: &Precomputed) {
        match input {
            Input::Message { from, message } => self.on_message(from, message, ahead),
            Input::Connected(peer) => {
                self.connected.insert(peer);
                self.for_peer(&peer, ahead, |ch, ctx| ch.on_connected(ctx));
            }
            Input::Disconnected(peer) => {
                self.connected.remove(&peer);
                self.out.drop_sends_to(&peer);
                self.for_peer(&peer, ahead, |ch, _| ch.on_disconnected());
            }
            Input::Reading { channel, reading } => {
                self.with_channel(&channel, ahead, |ch, ctx| ch.on_reading(reading, ctx));
            }
            Input::Settlement {
                channel,
                settlement,
            } => {
                self.with_channel(&channel, ahead, |ch, ctx| ch.on_settlement(settlement, ctx));
            }
            Input::BookRefused { channel, interval } => {
                self.with_channel(&channel, ahead, |ch, ctx| ch.on_book_refused(interval, ctx));
            }
            Input::Command(cmd) => {
                // Errors of commands given through `handle` are reported by `command`.
                let _ = self.command(cmd);
            }
            Input::Ledger { channel, event } => {
                self.with_channel(&channel, ahead, |ch, ctx| ch.on_ledger(event, ctx));
            }
            Input::TowersAcked { channel, version } => {
                self.with_channel(&channel, ahead, |ch, ctx| ch.on_towers_acked(version, ctx));
            }
            Input::Balance(balance) => self.balance = Some(balance),
            Input::Tick { now_ms } => {
                self.now_ms = self.now_ms.max(now_ms);
                self.expire_offers();
                let now = self.now_ms;
                let due: Vec<ChannelId> = self
                    .deadlines
                    .iter()
                    .take_while(|(at, _)| *at <= now)
                    .map(|(_, id)| *id)
                    .collect();
                for id in due {
                    self.with_channel(&id, ahead, |ch, ctx| ch.on_tick(ctx));
                }
            }
            Input::Persisted(update) => self.out.persisted(update),
            Input::WriteFailed(channel) => {
                self.with_channel(&channel, ahead, |ch, ctx| ch.freeze(ctx));
            }
            Input::PersistFailed(update) => {
                if let Some(channel) = self.out.failed(update) {
                    self.with_channel(&channel, ahead, |ch, ctx| ch.freeze(ctx));
                }
            }
        }
    }

    /// Carries out a command, reporting why it could not be.
    pub fn command(&mut self, cmd: Command) -> Result<(), CommandError> {
        match cmd {
            Command::Open(req) => self.open(*req, false).map(|_| ()),
            Command::Close(id) => self
                .with_channel(&id, &NOTHING, |ch, ctx| {
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
                self.with_channel(&id, &NOTHING, |ch, ctx| ch.force_close(ctx));
                Ok(())
            }
            Command::RetryPersist(id) => self
                .with_channel(&id, &NOTHING, |ch, ctx| ch.retry_persist(ctx))
                .ok_or(CommandError::UnknownChannel(id)),
            Command::Accept(id) => self.accept_offer(id),
            Command::Reject { channel, reason } => {
                let offer = self
                    .offers
                    .remove(&channel)
                    .ok_or(CommandError::NoOffer(channel))?;
                let why = if reason.trim().is_empty() {
                    "its owner declined".to_string()
                } else {
                    format!("its owner declined: {}", reason.trim())
                };
                self.refuse_open(offer.peer, channel, Refusal::BadParams(why));
                Ok(())
            }
            Command::TopUp { channel, amount } => self
                .with_channel(&channel, &NOTHING, |ch, ctx| ch.top_up(amount, ctx))
                .ok_or(CommandError::UnknownChannel(channel))?
                .map_err(|why| CommandError::Funds { channel, why }),
            Command::Withdraw { channel, amount } => self
                .with_channel(&channel, &NOTHING, |ch, ctx| ch.withdraw(amount, ctx))
                .ok_or(CommandError::UnknownChannel(channel))?
                .map_err(|why| CommandError::Funds { channel, why }),
            Command::Cancel(id) => {
                let (mut ctx, channels) = self.ctx(&NOTHING);
                let ch = channels
                    .get_mut(&id)
                    .ok_or(CommandError::UnknownChannel(id))?;
                let phase = ch.view().phase;
                let cancelled = ch.cancel(&mut ctx).map_err(|_| CommandError::WrongPhase {
                    channel: id,
                    phase,
                    what: "withdrawing the proposal (only before the neighbour accepts)",
                });
                self.reschedule(&id);
                cancelled
            }
        }
    }

    /// The owner accepts a waiting proposal: version 0 is countersigned as if it had just
    /// arrived. The neighbour need not be connected: it proposes again when it reconnects, and
    /// hears the same acceptance.
    fn accept_offer(&mut self, id: ChannelId) -> Result<(), CommandError> {
        let offer = self.offers.remove(&id).ok_or(CommandError::NoOffer(id))?;
        let connected = self.connected.contains(&offer.peer);
        let (mut ctx, channels) = self.ctx(&NOTHING);
        match Channel::accept(&offer.peer, offer.open, &mut ctx) {
            Ok(mut ch) => {
                if !connected {
                    ch.on_disconnected();
                }
                channels.insert(id, ch);
                self.reschedule(&id);
                Ok(())
            }
            Err((reason, _)) => Err(CommandError::CannotAccept {
                channel: id,
                why: reason.to_string(),
            }),
        }
    }

    /// Declines a neighbour's proposal: tells it why, and logs it.
    fn refuse_open(&mut self, peer: NodeId, channel: ChannelId, reason: Refusal) {
        let refuse = Message::Refuse(Refuse {
            channel_id: channel,
            version: Version(0),
            reason: reason.clone(),
        });
        self.out.push(
            Some(channel),
            Output::Send {
                to: peer,
                message: refuse,
            },
        );
        self.out.push(
            Some(channel),
            Output::Event(crate::io::Event::OpenRefused {
                channel,
                peer,
                reason,
            }),
        );
    }

    /// Declines the proposals that waited longer than the policy allows.
    fn expire_offers(&mut self) {
        let ttl = self.policy.accept.offer_ttl_ms;
        let now = self.now_ms;
        let expired: Vec<(ChannelId, NodeId)> = self
            .offers
            .values()
            .filter(|o| now.saturating_sub(o.received_ms) >= ttl)
            .map(|o| (o.id, o.peer))
            .collect();
        for (channel, peer) in expired {
            self.offers.remove(&channel);
            self.out.push(
                Some(channel),
                Output::Event(crate::io::Event::OfferExpired { channel, peer }),
            );
            let why = format!(
                "the proposal expired: this gateway's owner did not answer within {} minutes",
                ttl / 60_000
            );
            self.refuse_open(peer, channel, Refusal::BadParams(why));
        }
    }

    fn ctx<'a>(
        &'a mut self,
        ahead: &'a Precomputed,
    ) -> (Ctx<'a>, &'a mut BTreeMap<ChannelId, Channel>) {
        (
            Ctx {
                keys: Keys {
                    signer: &self.signer,
                    ahead,
                },
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
        ahead: &Precomputed,
        f: impl FnOnce(&mut Channel, &mut Ctx) -> R,
    ) -> Option<R> {
        let (mut ctx, channels) = self.ctx(ahead);
        let done = channels.get_mut(id).map(|ch| f(ch, &mut ctx));
        self.reschedule(id);
        done
    }

    fn for_peer(
        &mut self,
        peer: &NodeId,
        ahead: &Precomputed,
        mut f: impl FnMut(&mut Channel, &mut Ctx),
    ) {
        let (mut ctx, channels) = self.ctx(ahead);
        let mut touched = Vec::new();
        for ch in channels.values_mut().filter(|ch| ch.peer() == peer) {
            f(ch, &mut ctx);
            touched.push(ch.id());
        }
        for id in touched {
            self.reschedule(&id);
        }
    }

    fn on_message(&mut self, from: NodeId, message: Message, ahead: &Precomputed) {
        let Some(id) = message.channel_id() else {
            // Gateway-wide messages (meter announcements) are the host's business.
            return;
        };
        if let Message::Refuse(_) = &message {
            if self.offers.get(&id).is_some_and(|o| o.peer == from) {
                self.offers.remove(&id);
                self.out.push(
                    Some(id),
                    Output::Event(crate::io::Event::OfferWithdrawn {
                        channel: id,
                        peer: from,
                    }),
                );
                return;
            }
        }
        let result = match message {
            Message::OpenChannel(open) => self.on_open(from, open),
            other => {
                let (mut ctx, channels) = self.ctx(ahead);
                match channels.get_mut(&id) {
                    // A refusal of an open we never recorded (or already forgot): nothing to do.
                    None if matches!(other, Message::Refuse(_)) => Ok(()),
                    None => Err(Violation::UnknownChannel(id)),
                    Some(ch) if *ch.peer() != from => Err(Violation::NotAParty(id)),
                    Some(ch) => match other {
                        Message::AcceptChannel(m) => ch.on_accept(m, &mut ctx),
                        Message::Propose(m) => ch.on_propose(m, &mut ctx),
                        Message::Countersign(m) => ch.on_countersign(m, &mut ctx),
                        Message::Refuse(m) => ch.on_refuse(m, &mut ctx),
                        Message::Reestablish(m) => ch.on_reestablish(m, &mut ctx),
                        // Gateway-wide: `channel_id` routed none of them here.
                        _ => Ok(()),
                    },
                }
            }
        };
        self.reschedule(&id);
        if let Err(violation) = result {
            self.disconnect(from, violation.to_string());
        }
    }

    /// A neighbour proposes a channel: refused (terms outside the policy, or a proposer it
    /// does not take), taken up at once, or held for the owner's answer.
    fn on_open(
        &mut self,
        from: NodeId,
        open: Box<crate::wire::OpenChannel>,
    ) -> Result<(), Violation> {
        let id = open.params.channel_id();
        if self.offers.contains_key(&id) {
            // Proposed again (a reconnect): it still waits for the owner.
            return Ok(());
        }
        let balance = self.balance;
        let membership = self.market_membership(&from, &open.params);
        let (mut ctx, channels) = self.ctx(&NOTHING);
        if let Some(ch) = channels.get_mut(&id) {
            return ch.on_open_again(&open, &mut ctx);
        }
        let policy = &ctx.policy.accept;
        let terms = policy
            .check_terms(&open.params, balance)
            .and(membership)
            .and_then(|()| policy.decide(&from))
            .map_err(|why| (Refusal::BadParams(why.to_string()), false));
        let checked = Channel::check_open(&from, &open, &mut ctx)
            .and_then(|v0| terms.map(|at_once| (v0, at_once)));
        let decision = match checked {
            Ok((v0, true)) => {
                let ch = Channel::accepted(Arc::new(open.params), v0, &mut ctx);
                channels.insert(id, ch);
                return Ok(());
            }
            Ok((_, false)) => Ok(open),
            Err(refusal) => Err(refusal),
        };
        match decision {
            Ok(_) if self.offers.len() >= self.policy.accept.max_offers => {
                let why = "too many proposals wait for this gateway's owner; try later".into();
                self.refused(from, id, Refusal::BadParams(why), false)
            }
            Ok(open) => {
                let offer = Offer {
                    id,
                    peer: from,
                    params: Arc::new(open.params.clone()),
                    received_ms: self.now_ms,
                    open,
                };
                self.offers.insert(id, offer);
                self.out.push(
                    Some(id),
                    Output::Event(crate::io::Event::Offered {
                        channel: id,
                        peer: from,
                    }),
                );
                Ok(())
            }
            Err((reason, violation)) => self.refused(from, id, reason, violation),
        }
    }

    /// Whether `from` may open a market channel with these parameters: a home holds one
    /// channel with the market that trades or is about to, and the market takes at most its
    /// most members (such channels; one closing or disputed no longer counts: its home may join
    /// again). Any other channel passes.
    fn market_membership(
        &self,
        from: &NodeId,
        params: &crate::params::ChannelParams,
    ) -> Result<(), crate::consent::TermsRefused> {
        if params.tariff.market().is_none() {
            return Ok(());
        }
        let live: Vec<NodeId> = self
            .market_channels()
            .filter(|(id, _, phase, _, _)| {
                *id != params.channel_id()
                    && matches!(phase, Phase::AwaitingAccept | Phase::Funding | Phase::Open)
            })
            .map(|(_, peer, _, _, _)| peer)
            .collect();
        if live.contains(from) {
            return Err(crate::consent::TermsRefused::MarketMember);
        }
        let max = self.policy.accept.max_market_members;
        if live.len() >= max {
            return Err(crate::consent::TermsRefused::MarketFull { max });
        }
        Ok(())
    }

    /// Refuses an open; a violation also costs the proposer its connection.
    fn refused(
        &mut self,
        from: NodeId,
        id: ChannelId,
        reason: Refusal,
        violation: bool,
    ) -> Result<(), Violation> {
        self.refuse_open(from, id, reason.clone());
        if violation {
            Err(Violation::Refused(reason))
        } else {
            Ok(())
        }
    }

    /// A peer broke the protocol: every channel with it forgets the connection, the host closes
    /// it. No channel state changes.
    fn disconnect(&mut self, peer: NodeId, reason: String) {
        self.for_peer(&peer, &NOTHING, |ch, _| ch.on_disconnected());
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
