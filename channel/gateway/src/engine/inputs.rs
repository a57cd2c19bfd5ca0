//! Inputs: the handle's requests, and what the links to the neighbours bring (connections up
//! and down, their messages); and the network around them (which peers the endpoint admits,
//! dropping a peer, retrying frozen channels).

use std::collections::HashMap;
use std::time::Duration;

use gridchan_channel::{
    ChannelId, ChannelRecord, ChannelView, Command, Event, Input, Message, NodeId, Precomputed,
};

use crate::links::{self, Inbound};

use super::{Control, Engine, Peer, PeerChange, Report};

impl<S: super::EngineStore> Engine<S> {
    pub(super) fn on_control(&mut self, c: Control, ahead: &Precomputed) {
        match c {
            Control::Open(req, reply) => {
                let connected = self.peers.contains_key(&req.peer);
                let _ = reply.send(self.node.open(req, connected));
                self.refresh_memberships();
            }
            Control::Command(cmd, reply) => {
                let _ = reply.send(self.node.command(cmd));
            }
            Control::Readings(readings) => {
                for (channel, reading) in readings {
                    self.node
                        .handle_with(Input::Reading { channel, reading }, ahead)
                }
            }
            Control::Ledger(channel, event) => {
                self.node.handle(Input::Ledger { channel, event });
                self.refresh_memberships();
            }
            Control::MarketTerms(peer, reply) => {
                let _ = reply.send(self.market_terms(&peer));
            }
            Control::Stage(stage) => self.markets.stage(stage),
            Control::Channels(reply) => {
                let views: Vec<ChannelView> = self.node.channels().collect();
                let _ = reply.send(self.durable_views(views));
            }
            Control::Channel(id, reply) => {
                let view = self.node.channel(&id);
                let _ = reply.send(self.durable_views(view.into_iter().collect()).pop());
            }
            Control::Trades(channel, n, reply) => {
                self.flush_trades();
                self.writer.recent_trades(channel, n, reply);
            }
            Control::Connect(peer, outcome) => {
                if self.dialled.insert(peer.node) {
                    self.refresh_priority();
                }
                let inbound = self.inbound_tx.clone();
                tokio::spawn(links::dial(self.endpoint.clone(), peer, inbound, outcome));
            }
            Control::Connected(reply) => {
                let _ = reply.send(self.peers.keys().copied().collect());
            }
            Control::Offers(reply) => {
                let _ = reply.send(self.node.offers().cloned().collect());
            }
            Control::Balance(balance) => self.node.handle(Input::Balance(balance)),
            Control::TowersAcked(channel, version) => {
                self.node.handle(Input::TowersAcked { channel, version })
            }
            Control::Send(peer, message) => self.send(peer, message),
            Control::RequireMeters(meters, interval_seconds) => {
                self.rounds.meters = meters;
                self.rounds.interval_seconds = interval_seconds;
            }
            Control::Meter(interval, own, signed, deadline) => {
                self.on_meter(interval, own, signed, deadline, ahead)
            }
            Control::Watch(watch) => {
                let connected: Vec<NodeId> = self.peers.keys().copied().collect();
                self.watchers.add(watch, connected.into_iter());
            }
            Control::Stop(reply) => self.stopping = Some(reply),
        }
    }

    /// What a person is shown of `views`: a frozen channel's state as the store holds it (the
    /// core's may be one that was signed in memory but never written, and is gone after a
    /// restart).
    pub(super) fn durable_views(&self, mut views: Vec<ChannelView>) -> Vec<ChannelView> {
        if !views.iter().any(|v| v.frozen) {
            return views;
        }
        let stored: HashMap<ChannelId, ChannelRecord> =
            match crate::writer::lock(&self.store).load() {
                Ok(records) => records.into_iter().map(|r| (r.id, r)).collect(),
                Err(e) => {
                    tracing::warn!("cannot read the store for a frozen channel's state: {e}");
                    return views;
                }
            };
        for v in views.iter_mut().filter(|v| v.frozen) {
            v.current = stored.get(&v.id).and_then(|r| r.current.clone());
        }
        views
    }

    /// Tells the endpoint whose connections it always admits: the neighbours we have channels
    /// with and those we dialled.
    pub(super) fn refresh_priority(&self) {
        let channel_peers = self.node.channel_peers().map(|(_, peer, _)| peer);
        self.endpoint
            .set_priority(channel_peers.chain(self.dialled.iter().copied()));
    }

    pub(super) fn on_inbound(&mut self, i: Inbound, ahead: &Precomputed) {
        match i {
            Inbound::Up(conn, writer) => {
                let peer = conn.peer;
                self.generation += 1;
                if let Some(old) = self.peers.insert(
                    peer,
                    Peer {
                        writer,
                        conn,
                        generation: self.generation,
                    },
                ) {
                    old.conn.close("replaced by a newer connection");
                    self.node.handle(Input::Disconnected(peer));
                }
                self.watchers.peer(PeerChange::Up(peer));
                let _ = self.reports.send(Report::Peer {
                    peer,
                    connected: true,
                });
                let generation = self.generation;
                let inbound = self.inbound_tx.clone();
                let watch = self.peers[&peer].conn.clone();
                tokio::spawn(async move {
                    let reason = watch.closed().await;
                    let _ = inbound.send(Inbound::Down(peer, generation, reason)).await;
                });
                self.node.handle(Input::Connected(peer));
                self.market_peer_up(peer);
            }
            Inbound::Message(peer, message) => {
                match message {
                    // The market's messages: the engine's market, not the core.
                    Ok(message) if self.on_market_message(peer, &message, ahead) => {}
                    // Gateway-wide: the daemon's metering, not the core.
                    Ok(Message::Announce(announce)) => {
                        self.on_announce(peer, announce, ahead);
                        let _ = self.reports.send(Report::Announce { peer, announce });
                    }
                    Ok(message) => self.node.handle_with(
                        Input::Message {
                            from: peer,
                            message,
                        },
                        ahead,
                    ),
                    Err(e) => self.drop_peer(peer, &e.to_string()),
                }
            }
            Inbound::Down(peer, generation, reason) => {
                if self
                    .peers
                    .get(&peer)
                    .is_some_and(|p| p.generation == generation)
                {
                    tracing::warn!("{peer} disconnected: {reason}");
                    self.peers.remove(&peer);
                    self.node.handle(Input::Disconnected(peer));
                    self.market_peer_down(peer);
                    self.watchers.peer(PeerChange::Down(peer));
                    let _ = self.reports.send(Report::Peer {
                        peer,
                        connected: false,
                    });
                }
            }
        }
    }

    /// Sends `message` to `peer` if it is connected; a peer that does not read its messages
    /// loses its connection.
    pub(super) fn send(&mut self, peer: NodeId, message: Message) {
        self.send_frame(peer, message.encode());
    }

    /// [`Engine::send`] of a frame already encoded (the same one to many peers).
    pub(super) fn send_frame(&mut self, peer: NodeId, frame: Vec<u8>) {
        if let Some(p) = self.peers.get(&peer) {
            if p.writer.try_send(frame).is_err() {
                self.drop_peer(peer, "send queue full");
            }
        }
    }

    /// Disconnects a peer whose bytes broke the transport or framing rules, saying why.
    pub(super) fn drop_peer(&mut self, peer: NodeId, reason: &str) {
        let _ = self.reports.send(Report::Event(Event::PeerMisbehaved {
            peer,
            reason: reason.to_string(),
        }));
        self.close_peer(peer, reason);
    }

    /// Closes the connection to `peer` (the core already reported why, if it was the core).
    pub(super) fn close_peer(&mut self, peer: NodeId, reason: &str) {
        tracing::warn!("disconnecting {peer}: {reason}");
        if let Some(p) = self.peers.remove(&peer) {
            p.conn.close(reason);
            self.node.handle(Input::Disconnected(peer));
            self.market_peer_down(peer);
            self.watchers.peer(PeerChange::Down(peer));
            let _ = self.reports.send(Report::Peer {
                peer,
                connected: false,
            });
        }
    }

    /// Writes frozen channels again, each with a growing delay (1 s, 2 s, ... 1 min): when the
    /// disk is back, the channel thaws and trades again.
    pub(super) fn retry_frozen(&mut self) {
        let now = std::time::Instant::now();
        let due: Vec<ChannelId> = self
            .frozen
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if !self.node.channel(&id).is_some_and(|v| v.frozen) {
                self.frozen.remove(&id);
                continue;
            }
            tracing::info!(
                "channel {}: writing it again after a store failure",
                id.short()
            );
            if self.requeue(&id) {
                let _ = self.node.command(Command::RetryPersist(id));
            }
            if let Some((at, delay)) = self.frozen.get_mut(&id) {
                *delay = (*delay * 2).min(Duration::from_secs(60));
                *at = now + *delay;
            }
        }
    }

    /// Pushes `channel`'s ledger transactions that the queue could not take again, in order;
    /// whether none is left.
    fn requeue(&mut self, channel: &ChannelId) -> bool {
        let mut left = Vec::new();
        for (c, tx) in std::mem::take(&mut self.unqueued) {
            let stuck = left.iter().any(|(l, _)| l == &c);
            if c != *channel || stuck || self.ledger_queue.push(Some(&c), &tx).is_err() {
                left.push((c, tx));
            }
        }
        self.unqueued = left;
        !self.unqueued.iter().any(|(c, _)| c == channel)
    }
}
