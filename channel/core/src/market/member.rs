//! A member's side (sans-IO): its pseudonym, its orders and their receipts, the rosters and
//! books the market node publishes, and the check of each book that yields the member's
//! settlement for its channel.

use std::collections::{BTreeMap, VecDeque};

use crate::crypto::{NodeId, Recovered, Signer};
use crate::metering::MeterReading;
use crate::tariff::TimeOfUse;
use crate::types::{ChannelId, IntervalIndex, WattHours};

use super::book::{Book, BookRefusal, Expect, PartError, Parts, Roster, Topic};
use super::exchange::Allowance;
use super::exchange::OrderRefusal;
use super::order::{Enrol, Order, Receipt, SignedOrder};
use super::{MarketTerms, Settlement};
use crate::wire::Message;

/// A member's limit prices, by the hour: the least it sells for and the most it buys for.
/// By default its own grid prices (feed-in and retail), so it trades locally whenever the
/// neighbourhood beats the grid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub sell_at_least: TimeOfUse,
    pub buy_at_most: TimeOfUse,
}

impl Limits {
    /// The market's own grid prices as limits.
    pub fn of_grid(terms: &MarketTerms) -> Limits {
        Limits {
            sell_at_least: terms.feed_in.clone(),
            buy_at_most: terms.retail.clone(),
        }
    }
}

/// Books and orders kept for the intervals most recently ordered.
const KEPT: usize = 16;

/// Why a receipt is not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("a receipt for an order this member did not send")]
    Unknown,
    #[error("a receipt not signed by the market node")]
    NotSigned,
}

/// A member of one market, through its channel with the market node.
pub struct Member {
    terms: MarketTerms,
    interval_seconds: u32,
    market_node: NodeId,
    channel: ChannelId,
    pseudonym: Signer,
    /// The newest rosters, with their digests.
    rosters: VecDeque<([u8; 32], Roster)>,
    /// Our orders, with the market node's receipt once it came.
    orders: BTreeMap<IntervalIndex, (SignedOrder, Option<Receipt>)>,
    parts: Parts,
}

/// What a message from the market node comes to, for the member's host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberStep {
    /// The market node took our order for the interval.
    Receipted(IntervalIndex),
    /// It did not, and why: our energy of the interval goes to the grid.
    LeftOut {
        interval: IntervalIndex,
        reason: OrderRefusal,
    },
    /// A new roster, checked.
    Roster { epoch: u64, members: usize },
    /// A book checked: our settlement, for our channel with the market node (`None`: we did
    /// not trade in it), and the book's price and energy for the log.
    Book {
        interval: IntervalIndex,
        settlement: Option<Settlement>,
        price: Option<crate::types::PricePerKwh>,
        traded: WattHours,
    },
    /// A publication refused, and why (`interval` 0: a roster). The market node signed it:
    /// the host keeps the book as evidence.
    Refused {
        interval: IntervalIndex,
        reason: BookRefusal,
        book: Option<Box<Book>>,
    },
    /// A receipt that is not the market node's for an order of ours.
    BadReceipt(ReceiptError),
}

impl Member {
    /// A member of the market of `terms` through `channel`, its pseudonym derived from the
    /// node's key.
    pub fn new(
        terms: MarketTerms,
        interval_seconds: u32,
        market_node: NodeId,
        channel: ChannelId,
        node: &Signer,
        blinding_seed: &[u8; 32],
    ) -> Member {
        let pseudonym = node.derive(&terms.market, blinding_seed);
        Member {
            terms,
            interval_seconds,
            market_node,
            channel,
            pseudonym,
            rosters: VecDeque::new(),
            orders: BTreeMap::new(),
            parts: Parts::default(),
        }
    }

    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    pub fn terms(&self) -> &MarketTerms {
        &self.terms
    }

    /// Our pseudonym in this market.
    pub fn pseudonym(&self) -> [u8; 32] {
        super::pseudonym_id(&self.pseudonym.id())
    }

    /// What we send the market node once our channel with it is open.
    pub fn enrol(&self) -> Enrol {
        Enrol::sign(&self.terms.market, self.channel, &self.pseudonym)
    }

    /// Our order for `interval`, from what our meter measured there (`offered`: the part of it
    /// this market gets, after the neighbour channels) and our limits, within what our channel
    /// can pay for (`allowance`); `None` when there is nothing to trade.
    pub fn order(
        &mut self,
        interval: IntervalIndex,
        offered: MeterReading,
        limits: &Limits,
        allowance: Allowance,
    ) -> Option<SignedOrder> {
        let import = offered.import.min(allowance.buy);
        let export = offered.export.min(allowance.sell);
        if import == WattHours(0) && export == WattHours(0) {
            return None;
        }
        // A net meter measures one way per interval; a reading both ways offers the larger.
        let (import, export) = if import >= export {
            (import, WattHours(0))
        } else {
            (WattHours(0), export)
        };
        let price = |t: &TimeOfUse| t.price_at(interval, self.interval_seconds);
        let order = Order {
            market: self.terms.market,
            interval,
            member: [0; 32],
            import,
            export,
            sell_at_least: price(&limits.sell_at_least)?,
            buy_at_most: price(&limits.buy_at_most)?,
        };
        let signed = SignedOrder::sign(order, &self.pseudonym);
        self.orders.insert(interval, (signed, None));
        while self.orders.len() > KEPT {
            self.orders.pop_first();
        }
        Some(signed)
    }

    /// A message from the market node. `Err`: parts that make no publication, the market
    /// node's violation (it loses the connection). `recover` gives the recoveries of a book's
    /// order signatures made ahead (by a pool, or remembered: [`Recovered`]), or none.
    pub fn on_message(
        &mut self,
        message: Message,
        recover: &mut dyn FnMut(&Book, &[[u8; 32]]) -> Recovered,
    ) -> Result<Option<MemberStep>, PartError> {
        let step = match message {
            Message::Receipt(r) => match self.on_receipt(&r) {
                Ok(interval) => MemberStep::Receipted(interval),
                Err(e) => MemberStep::BadReceipt(e),
            },
            Message::OrderRefused(r) => MemberStep::LeftOut {
                interval: r.interval,
                reason: r.reason,
            },
            Message::Part(part) => {
                let Some((topic, key, bytes)) = self.parts.on_part(part)? else {
                    return Ok(None);
                };
                match topic {
                    Topic::Roster => {
                        let roster: Roster = Parts::decode(&bytes)?;
                        let (epoch, members) = (roster.epoch, roster.members.len());
                        match self.on_roster(roster) {
                            Ok(()) => MemberStep::Roster { epoch, members },
                            Err(reason) => MemberStep::Refused {
                                interval: IntervalIndex(0),
                                reason,
                                book: None,
                            },
                        }
                    }
                    Topic::Book => {
                        let book: Book = Parts::decode(&bytes)?;
                        if book.interval.0 != key {
                            return Err(PartError::Malformed(format!(
                                "the book of interval {} published as {key}",
                                book.interval.0
                            )));
                        }
                        let order_digests = book.order_digests();
                        let known = recover(&book, &order_digests);
                        match self.on_book(&book, &order_digests, &known) {
                            Ok(settlement) => MemberStep::Book {
                                interval: book.interval,
                                settlement,
                                price: book.price,
                                traded: book.traded,
                            },
                            Err(reason) => MemberStep::Refused {
                                interval: book.interval,
                                reason,
                                book: Some(Box::new(book)),
                            },
                        }
                    }
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(step))
    }

    /// The market node's receipt for one of our orders.
    pub fn on_receipt(&mut self, receipt: &Receipt) -> Result<IntervalIndex, ReceiptError> {
        let (interval, entry) = self
            .orders
            .iter_mut()
            .find(|(_, (o, _))| o.order.digest() == receipt.order)
            .ok_or(ReceiptError::Unknown)?;
        receipt
            .verify(&entry.0.order, &self.market_node)
            .map_err(|_| ReceiptError::NotSigned)?;
        entry.1 = Some(*receipt);
        Ok(*interval)
    }

    /// A roster the market node published.
    pub fn on_roster(&mut self, roster: Roster) -> Result<(), BookRefusal> {
        roster.verify(&self.terms.market, &self.market_node)?;
        // Kept by digest, not epoch: a market node that restarted counts its epochs again.
        let digest = roster.digest();
        if self.rosters.iter().any(|(d, _)| *d == digest) {
            return Ok(());
        }
        self.rosters.push_back((digest, roster));
        while self.rosters.len() > 4 {
            self.rosters.pop_front();
        }
        Ok(())
    }

    /// Checks a book the market node published ([`Book::check`]): our settlement for the
    /// interval when we traded, `None` when we did not.
    pub fn on_book(
        &mut self,
        book: &Book,
        order_digests: &[[u8; 32]],
        known: &Recovered,
    ) -> Result<Option<Settlement>, BookRefusal> {
        let (roster_digest, roster) = self
            .rosters
            .iter()
            .find(|(d, _)| *d == book.roster)
            .ok_or(BookRefusal::UnknownRoster)?;
        let digest = book.digest_with(order_digests);
        let own = self
            .orders
            .get(&book.interval)
            .and_then(|(o, r)| r.map(|_| o));
        let clearing = book.check_with(
            &digest,
            order_digests,
            &Expect {
                market_node: &self.market_node,
                terms: &self.terms,
                interval_seconds: self.interval_seconds,
                interval: book.interval,
                roster,
                roster_digest,
                own,
                known,
            },
        )?;
        let me = self.pseudonym();
        Ok(clearing
            .fills
            .iter()
            .find(|f| f.member == me)
            .map(|f| Settlement {
                interval: book.interval,
                book: digest,
                sold: f.sold,
                bought: f.bought,
                earned: f.earned,
                paid: f.paid,
            }))
    }

    /// Our order and its receipt for `interval`: with the book, the evidence that the market
    /// node left out or altered an order it had taken.
    pub fn receipted(&self, interval: IntervalIndex) -> Option<(SignedOrder, Receipt)> {
        let (o, r) = self.orders.get(&interval)?;
        Some((*o, (*r)?))
    }
}
