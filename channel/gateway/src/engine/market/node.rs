//! The market node's side in the engine: enrolments and orders from members, the roster each
//! member holds, and each book closed at its deadline, published and settled.

use std::collections::HashMap;

use gridchan_channel::market::{Parts, Topic};
use gridchan_channel::wire::Message;
use gridchan_channel::{ChannelId, Input, NodeId, Party, Phase, PricePerKwh, Recovered, WattHours};

use super::{MarketReport, Stage};
use crate::engine::{Engine, Report};

impl<S: crate::engine::EngineStore> Engine<S> {
    /// (Market node) sends the current roster to each of `peers` that was not sent it yet.
    pub(in crate::engine) fn roster_to(&mut self, peers: &[NodeId]) {
        let Some(exchange) = &mut self.markets.exchange else {
            return;
        };
        let (roster, _) = exchange.roster(&self.pool_signer);
        let digest = roster.digest();
        let parts = Parts::split(Topic::Roster, roster.epoch, roster);
        let due: Vec<NodeId> = peers
            .iter()
            .filter(|p| self.markets.roster_sent.get(*p) != Some(&digest))
            .copied()
            .collect();
        for peer in due {
            for p in &parts {
                self.send(peer, Message::Part(p.clone()));
            }
            self.markets.roster_sent.insert(peer, digest);
        }
    }

    /// (Market node) an enrolment or an order from a member.
    pub(in crate::engine) fn on_member_message(
        &mut self,
        peer: NodeId,
        message: &Message,
        known: &Recovered,
    ) {
        if matches!(message, Message::Enrol(_)) {
            // A member that left and joins again enrols its pseudonym with its new channel.
            self.prune_members();
        }
        let Some(terms) = self.markets.exchange.as_ref().map(|e| e.terms().clone()) else {
            self.drop_peer(peer, "sent a market order to a gateway that runs no market");
            return;
        };
        let now = self.markets.clock().now_ms();
        let channel = self
            .node
            .market_channels()
            .find(|(_, p, phase, me, _)| *p == peer && *phase == Phase::Open && *me == Party::B)
            .map(|(id, ..)| id);
        // The member's channel: what it can still settle, and the meter its terms name.
        let from = channel.map(|id| gridchan_channel::market::Sender {
            channel: id,
            allowance: self
                .node
                .channel(&id)
                .and_then(|view| gridchan_channel::market::allowance(&view, &terms, now)),
            meter: self.node.peer_meter(&id),
        });
        let exchange = self.markets.exchange.as_mut().expect("checked above");
        let answer = exchange.on_message(from, message, now, known, &self.pool_signer);
        match (&answer, message) {
            (Some(Message::OrderRefused(r)), _) => {
                tracing::info!(
                    "market: {peer} not taken for interval {}: {}",
                    r.interval.0,
                    r.reason
                );
            }
            (None, Message::Enrol(_)) => {
                tracing::info!("market: {peer} enrolled ({} members)", exchange.members());
            }
            _ => {}
        }
        let enrolled = answer.is_none() && matches!(message, Message::Enrol(_));
        match (answer, message) {
            // A receipt is a signature: it goes once the order is durable.
            (Some(receipt @ Message::Receipt(_)), Message::Order(o))
                if self.markets.store.is_some() =>
            {
                self.markets.receipts.push((peer, o.order, receipt));
            }
            (Some(answer), _) => self.send(peer, answer),
            (None, _) => {}
        }
        if enrolled {
            // The roster with the new member in it, to the new member at once (the others get
            // it before the next book).
            self.roster_to(&[peer]);
        }
    }

    /// (Market node) the orders taken since the last call, durable in one transaction; then
    /// their receipts go out. Orders that could not be kept get no receipt (the member may
    /// send its order again; the book may still hold it, unreceipted).
    pub(in crate::engine) fn flush_receipts(&mut self) {
        if self.markets.receipts.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.markets.receipts);
        let orders: Vec<_> = pending.iter().map(|(_, o, _)| *o).collect();
        let kept = match &mut self.markets.store {
            Some(store) => store.took(&orders),
            None => Ok(()),
        };
        match kept {
            Ok(()) => {
                for (peer, _, receipt) in pending {
                    self.send(peer, receipt);
                }
            }
            Err(e) => tracing::error!(
                "market: cannot keep {} orders taken, so they get no receipt: {e}",
                orders.len()
            ),
        }
    }

    /// (Market node) members whose channel is no longer open leave the roster; the open
    /// market channels, by peer.
    pub(in crate::engine) fn prune_members(&mut self) -> HashMap<ChannelId, NodeId> {
        let open: HashMap<ChannelId, NodeId> = self
            .node
            .market_channels()
            .filter(|(_, _, phase, me, _)| *me == Party::B && *phase == Phase::Open)
            .map(|(id, peer, ..)| (id, peer))
            .collect();
        if let Some(exchange) = &mut self.markets.exchange {
            let gone: Vec<ChannelId> = exchange
                .enrolled()
                .filter(|id| !open.contains_key(id))
                .copied()
                .collect();
            for id in gone {
                exchange.leave(&id);
            }
        }
        open
    }

    /// (Market node) the book of an interval is due: close it, publish it to every member
    /// connected, and propose each member's settlement.
    pub(in crate::engine) fn on_book_deadline(&mut self) {
        // Every book due, oldest first (the engine may have woken late).
        for _ in 0..64 {
            let now = self.markets.clock().now_ms();
            let due = self.markets.exchange.as_ref().and_then(|e| e.due(now));
            if due.is_none() {
                return;
            }
            self.close_book();
        }
    }

    pub(in crate::engine) fn close_book(&mut self) {
        self.flush_receipts();
        let now = self.markets.clock().now_ms();
        let Some(exchange) = &mut self.markets.exchange else {
            return;
        };
        let Some(interval) = exchange.due(now) else {
            return;
        };
        let open = self.prune_members();
        // Every member the book goes to holds the roster it names.
        let peers: Vec<NodeId> = open.values().copied().collect();
        self.roster_to(&peers);
        let Some(exchange) = &mut self.markets.exchange else {
            return;
        };
        let mut sends: Vec<(NodeId, Vec<u8>)> = Vec::new();
        let members = exchange.members();
        let roster = exchange.roster(&self.pool_signer).0.clone();
        let (mut book, mut settlements) = match exchange.close(interval, &self.pool_signer) {
            Ok(closed) => closed,
            Err(e) => {
                tracing::error!(
                    "market: the book of interval {} does not clear: {e}",
                    interval.0
                );
                return;
            }
        };
        if let Some(store) = &self.markets.store {
            if let Err(e) = store.closed(interval) {
                tracing::warn!("market: cannot forget the orders of a closed book: {e}");
            }
        }
        let staged = self.markets.staged.take() == Some(Stage::WrongClearing);
        if staged {
            book.price = book.price.map(|p| PricePerKwh(p.0 + 1));
            let digest = book.digest();
            book.sig = self.pool_signer.sign(&digest);
            for (_, settlement) in &mut settlements {
                settlement.book = digest;
            }
            tracing::warn!(
                "market: staged: the book of interval {} goes out with a wrong price",
                interval.0
            );
        }
        tracing::info!(
            "market: book of interval {}: {} orders, {} Wh traded at {}",
            interval.0,
            book.orders.len(),
            book.traded.0,
            book.price.map_or("no price".to_string(), |p| format!(
                "{} micro-units/kWh",
                p.0
            ))
        );
        let (import, export) = book.orders.iter().fold((0u64, 0u64), |(i, e), o| {
            (
                i.saturating_add(o.order.import.0),
                e.saturating_add(o.order.export.0),
            )
        });
        let _ = self.reports.send(Report::Market(MarketReport::BookClosed {
            bound: WattHours(import.min(export)),
            interval,
            staged,
            orders: book.orders.len(),
            price: book.price,
            traded: book.traded,
            income: book.income.0,
            members,
        }));
        // Each part encoded once, its frame copied to every member.
        for p in Parts::split(Topic::Book, interval.0, &book) {
            let frame = Message::Part(p).encode();
            for peer in open.values() {
                sends.push((*peer, frame.clone()));
            }
        }
        self.markets
            .recent
            .insert(interval, (Box::new(book), roster));
        while self.markets.recent.len() > 8 {
            self.markets.recent.pop_first();
        }
        for (peer, frame) in sends {
            self.send_frame(peer, frame);
        }
        for (channel, settlement) in settlements {
            self.node.handle(Input::Settlement {
                channel,
                settlement,
            });
        }
    }
}
