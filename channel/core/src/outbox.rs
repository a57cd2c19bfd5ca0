//! Holds outputs back until the persists they depend on are durable: persist before sign is
//! part of the API, not a convention.

use std::collections::{HashMap, VecDeque};

use crate::crypto::NodeId;
use crate::io::{ChannelRecord, Output, UpdateId};
use crate::types::ChannelId;

/// The ordered queue of outputs. A persist request is released at once; every other output
/// waits until every persist issued before it is acknowledged durable.
#[derive(Default)]
pub(crate) struct Outbox {
    ready: VecDeque<Output>,
    /// Outputs waiting for a persist, with the channel they belong to (`None`: the node's own).
    gated: VecDeque<(UpdateId, Option<ChannelId>, Output)>,
    next_update: u64,
    durable_through: u64,
    in_flight: HashMap<UpdateId, ChannelId>,
}

impl Outbox {
    /// Requests a durable write of `record` and returns its id.
    pub fn persist(&mut self, record: ChannelRecord) -> UpdateId {
        self.next_update += 1;
        let update = UpdateId(self.next_update);
        self.in_flight.insert(update, record.id);
        self.ready.push_back(Output::Persist {
            update,
            record: Box::new(record),
        });
        update
    }

    /// Queues an output about `channel` behind every persist issued so far.
    pub fn push(&mut self, channel: Option<ChannelId>, output: Output) {
        if self.next_update == self.durable_through && self.gated.is_empty() {
            self.ready.push_back(output);
        } else {
            self.gated
                .push_back((UpdateId(self.next_update), channel, output));
        }
    }

    /// The host made `update` (and all earlier ones) durable.
    pub fn persisted(&mut self, update: UpdateId) {
        self.in_flight.retain(|id, _| *id > update);
        self.durable_through = self.durable_through.max(update.0);
        self.release();
    }

    /// The host could not write `update`. Returns the channel it belonged to; that channel's
    /// held outputs are dropped (they may carry signatures over a state that is not durable).
    pub fn failed(&mut self, update: UpdateId) -> Option<ChannelId> {
        let channel = self.in_flight.remove(&update)?;
        self.gated
            .retain(|(gate, ch, _)| !(*ch == Some(channel) && *gate >= update));
        self.durable_through = self.durable_through.max(update.0);
        self.release();
        Some(channel)
    }

    /// The connection to `peer` is gone: messages queued for it belonged to that connection
    /// and must not arrive on the next one (reestablish says everything again).
    pub fn drop_sends_to(&mut self, peer: &NodeId) {
        let for_peer = |o: &Output| matches!(o, Output::Send { to, .. } if to == peer);
        self.ready.retain(|o| !for_peer(o));
        self.gated.retain(|(_, _, o)| !for_peer(o));
    }

    /// Like [`Outbox::drop_sends_to`], but keeps refusals: they tell a misbehaving peer why it
    /// is being disconnected.
    pub fn drop_sends_to_except_refusals(&mut self, peer: &NodeId) {
        let drop = |o: &Output| {
            matches!(o, Output::Send { to, message } if to == peer
                && !matches!(message, crate::wire::Message::Refuse(_)))
        };
        self.ready.retain(|o| !drop(o));
        self.gated.retain(|(_, _, o)| !drop(o));
    }

    fn release(&mut self) {
        while let Some((gate, _, _)) = self.gated.front() {
            if gate.0 > self.durable_through {
                break;
            }
            if let Some((_, _, output)) = self.gated.pop_front() {
                self.ready.push_back(output);
            }
        }
    }

    pub fn pop(&mut self) -> Option<Output> {
        self.ready.pop_front()
    }

    /// Outputs still waiting for a persist acknowledgement.
    pub fn held(&self) -> usize {
        self.gated.len()
    }
}
