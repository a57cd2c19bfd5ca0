//! Outputs: what the core asks for, routed to whoever carries it out (the writer, a peer's
//! link, the ledger queue, the towers, the log), and the durable writes they wait for.

use std::time::Duration;

use gridchan_channel::{ChannelId, ChannelRecord, Event, Input, Output, UpdateId};

use super::{Engine, Report, MAX_INLINE_RECORDS, MAX_PENDING_TRADES};

impl<S: super::EngineStore> Engine<S> {
    /// Carries out every output the core has ready and writes the records it asked for as one
    /// batch: here when `inline`, the batch is small and no earlier batch is still being written
    /// (so writes stay in order), else on the writer's thread. What waits for them goes once
    /// they are durable.
    pub(super) fn drain(&mut self, inline: bool) {
        loop {
            let batch = self.carry_out();
            if batch.is_empty() {
                return;
            }
            if !inline || batch.len() > MAX_INLINE_RECORDS || self.writing.is_some() {
                self.writing = batch.last().map(|(u, _)| *u);
                self.writer.write(batch);
                return;
            }
            let last = batch.last().map(|(u, _)| *u);
            let records: Vec<&ChannelRecord> = batch.iter().map(|(_, r)| r).collect();
            match crate::writer::lock(&self.store).write_batch(&records, &[]) {
                Ok(()) => {
                    if let Some(last) = last {
                        self.node.handle(Input::Persisted(last));
                    }
                }
                Err(e) => {
                    let _ = self.reports.send(Report::StoreFailed(e.to_string()));
                    for (update, _) in &batch {
                        self.node.handle(Input::PersistFailed(*update));
                    }
                }
            }
        }
    }

    /// Carries out every output the core has ready but the persists, which it returns.
    pub(super) fn carry_out(&mut self) -> Vec<(UpdateId, ChannelRecord)> {
        let mut batch: Vec<(UpdateId, ChannelRecord)> = Vec::new();
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Persist { update, record } => batch.push((update, *record)),
                Output::Send { to, message } => {
                    if let Some(p) = self.peers.get(&to) {
                        if p.writer.try_send(message.encode()).is_err() {
                            // A peer that does not read its messages loses its connection.
                            self.drop_peer(to, "send queue full");
                        }
                    }
                }
                Output::Disconnect { peer, reason } => self.close_peer(peer, &reason),
                Output::Ledger(r) => {
                    // Durable before anyone acts on it: the submitter retries from the
                    // queue until the ledger includes or refuses it.
                    self.enqueue(r.channel(), gridchan_chain::TxKind::from(&r));
                    let _ = self.reports.send(Report::Ledger(r));
                }
                Output::Watchtower(s) => {
                    self.watchers.state(&s);
                    let _ = self.reports.send(Report::Watchtower(s));
                }
                Output::Event(e) => {
                    if let Event::Frozen { channel } = &e {
                        let delay = Duration::from_secs(1);
                        self.frozen
                            .entry(*channel)
                            .or_insert((std::time::Instant::now() + delay, delay));
                    }
                    if let Event::Settled {
                        channel,
                        version,
                        trade,
                        digest,
                    } = &e
                    {
                        self.trade_log.settled(&self.node, channel, trade);
                        self.trades.push((*channel, *version, *trade, *digest));
                        if self.trades.len() >= MAX_PENDING_TRADES {
                            self.flush_trades();
                        }
                    }
                    if matches!(
                        e,
                        Event::ChannelAgreed { .. }
                            | Event::Concluded { .. }
                            | Event::ClosedCooperatively { .. }
                    ) {
                        self.watchers.peer(super::PeerChange::Channels);
                    }
                    crate::event_log::log(&self.node, &e);
                    let _ = self.reports.send(Report::Event(e));
                }
            }
        }
        batch
    }

    /// Puts a ledger transaction in the queue. One the queue cannot take (a failing disk)
    /// freezes its channel, like a failed persist, and is pushed again before the channel is
    /// retried.
    pub(super) fn enqueue(&mut self, channel: ChannelId, tx: gridchan_chain::TxKind) {
        if let Err(e) = self.ledger_queue.push(Some(&channel), &tx) {
            tracing::error!(
                "channel {}: {} not queued for the ledger: {e}",
                channel.short(),
                tx.name()
            );
            let _ = self.reports.send(Report::StoreFailed(e.to_string()));
            self.unqueued.push((channel, tx));
            self.node.handle(Input::WriteFailed(channel));
        }
    }
}
