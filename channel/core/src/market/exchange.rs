//! The market node's side (sans-IO): who is enrolled under which pseudonym, the orders it takes
//! for each interval, and the book it closes at the interval's deadline.

use std::collections::{BTreeMap, HashMap};

use crate::crypto::{NodeId, Recovered, Signer};
use crate::state::State;
use crate::types::{ChannelId, IntervalIndex, WattHours};
use crate::wire::{Message, OrderRefused};

use super::book::{Book, Roster};
use super::clearing::BookError;
use super::order::{pseudonym_id, Enrol, OrderMessage, Receipt, SignedOrder};
use super::{MarketTerms, Settlement, MAX_PRICE};

/// The most energy an order may claim in one interval, given its channel's current state:
/// what the member can pay for at the highest price it could be charged, and what the market
/// node can pay it for at the highest price it could be paid (both the retail price: with the
/// fee a buyer pays at most its bid, which is at most retail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowance {
    pub buy: WattHours,
    pub sell: WattHours,
}

impl Allowance {
    /// The allowance of a market channel in `state` (party A the member, B the market node).
    pub fn of(
        state: &State,
        terms: &MarketTerms,
        interval: IntervalIndex,
        interval_seconds: u32,
    ) -> Allowance {
        let retail = terms
            .grid_at(interval, interval_seconds)
            .map_or(MAX_PRICE.0, |g| g.retail.0);
        let most = |balance: u64| {
            if retail == 0 {
                return WattHours(u64::MAX);
            }
            let wh = u128::from(balance) * 1000 / u128::from(retail);
            WattHours(u64::try_from(wh).unwrap_or(u64::MAX))
        };
        Allowance {
            buy: most(state.balance_a.0),
            sell: most(state.balance_b.0),
        }
    }
}

/// What the market node lets the member of a market channel order at `now_ms` (for the
/// interval that ended last), from the market node's view of the channel: `None` while a
/// settlement older than the previous interval's waits for the member's countersignature. A
/// settlement in flight (the previous interval's, proposed) counts as signed, so that a member
/// is never left out for the few milliseconds its countersignature takes; the market node's
/// exposure to a member that never countersigns is at most two intervals' settlements, each
/// within the allowance.
pub fn allowance(view: &crate::ChannelView, terms: &MarketTerms, now_ms: u64) -> Option<Allowance> {
    let seconds = view.params.interval_seconds;
    let period = u64::from(seconds) * 1000;
    let interval = IntervalIndex((now_ms / period).saturating_sub(1));
    let state = match &view.proposal {
        Some(p) if !p.state().is_final && p.state().last_interval.0 + 1 >= interval.0 => {
            p.state().clone()
        }
        Some(_) => return None,
        None => view.current.as_ref()?.state().clone(),
    };
    Some(Allowance::of(&state, terms, interval, seconds))
}

/// Why the market node does not take an order or an enrolment. The member hears the reason;
/// its energy for the interval goes to the grid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum OrderRefusal {
    #[error("the order is for another market")]
    WrongMarket,
    #[error("this channel has enrolled no pseudonym")]
    NotEnrolled,
    #[error("the order's pseudonym is not the one this channel enrolled")]
    NotYours,
    #[error("the signature is not the pseudonym's")]
    BadSignature,
    #[error("interval {0} has not ended yet")]
    TooEarly(u64),
    #[error("the book of interval {0} has closed")]
    TooLate(u64),
    #[error("an order both imports and exports")]
    BothWays,
    #[error("a limit price above the market's maximum")]
    PriceTooHigh,
    #[error(
        "the order claims more than the channel can pay for ({buy} Wh to buy, {sell} Wh to sell)"
    )]
    AboveAllowance { buy: u64, sell: u64 },
    #[error("another order for this interval was already taken")]
    Changed,
    #[error("an earlier interval's settlement is not countersigned yet")]
    Unsettled,
    #[error("the pseudonym is already enrolled by another channel")]
    PseudonymTaken,
    #[error("the channel's terms name this member's meter, and the order carries no reading signed by it")]
    Unsigned,
    #[error("the order's meter reading does not count: {0}")]
    BadReading(String),
    #[error(
        "the order claims more than the meter signed ({import} Wh imported, {export} Wh exported)"
    )]
    BeyondReading { import: u64, export: u64 },
}

/// Who an order or an enrolment comes from: the member's open market channel with us, what
/// the channel can still settle (`None` while its previous settlement is not countersigned),
/// and the member's meter when the channel's terms name one.
#[derive(Clone, Copy, Debug)]
pub struct Sender {
    pub channel: ChannelId,
    pub allowance: Option<Allowance>,
    pub meter: Option<NodeId>,
}

/// The market node's book-keeping.
pub struct Exchange {
    terms: MarketTerms,
    interval_seconds: u32,
    /// Pseudonym by channel, and channel by pseudonym.
    enrolled: HashMap<ChannelId, [u8; 32]>,
    channels: BTreeMap<[u8; 32], ChannelId>,
    epoch: u64,
    roster: Option<Roster>,
    orders: BTreeMap<IntervalIndex, BTreeMap<[u8; 32], SignedOrder>>,
    /// The newest interval whose book closed.
    closed: Option<IntervalIndex>,
}

impl Exchange {
    pub fn new(terms: MarketTerms, interval_seconds: u32) -> Exchange {
        Exchange {
            terms,
            interval_seconds,
            enrolled: HashMap::new(),
            channels: BTreeMap::new(),
            epoch: 0,
            roster: None,
            orders: BTreeMap::new(),
            closed: None,
        }
    }

    pub fn terms(&self) -> &MarketTerms {
        &self.terms
    }

    /// Starting (or restarting) at `now_ms`: the books whose deadline has passed are not
    /// closed late, empty.
    pub fn start_at(&mut self, now_ms: u64) {
        if let Some(last) = self.due(now_ms) {
            self.closed = Some(last);
        }
    }

    /// The member of `channel` enrols its pseudonym (its channel with us is open and funded:
    /// the host checks). Enrolling again with the same pseudonym changes nothing.
    pub fn enrol(&mut self, channel: ChannelId, e: &Enrol) -> Result<(), OrderRefusal> {
        if e.channel_id != channel {
            return Err(OrderRefusal::NotYours);
        }
        e.verify(&self.terms.market)
            .map_err(|_| OrderRefusal::BadSignature)?;
        let id = pseudonym_id(&e.pseudonym);
        match self.channels.get(&id) {
            Some(c) if *c == channel => return Ok(()),
            Some(_) => return Err(OrderRefusal::PseudonymTaken),
            None => {}
        }
        if let Some(old) = self.enrolled.insert(channel, id) {
            self.channels.remove(&old);
        }
        self.channels.insert(id, channel);
        self.roster = None;
        Ok(())
    }

    /// The newest interval whose book closed (or was passed over at a start).
    pub fn closed(&self) -> Option<IntervalIndex> {
        self.closed
    }

    /// An order taken before a restart (the host kept it before its receipt went out): back
    /// in its book if that is still open. Like every order, it is in the book only if its
    /// member is enrolled when the book closes.
    pub fn restore(&mut self, o: SignedOrder) {
        if self.closed.is_some_and(|c| o.order.interval <= c) || o.order.market != self.terms.market
        {
            return;
        }
        self.orders
            .entry(o.order.interval)
            .or_default()
            .insert(o.order.member, o);
    }

    /// The member of `channel` left (its channel is closing): it is off the roster.
    pub fn leave(&mut self, channel: &ChannelId) {
        if let Some(id) = self.enrolled.remove(channel) {
            self.channels.remove(&id);
            self.roster = None;
        }
    }

    pub fn members(&self) -> usize {
        self.channels.len()
    }

    /// The channels with an enrolled pseudonym.
    pub fn enrolled(&self) -> impl Iterator<Item = &ChannelId> + '_ {
        self.enrolled.keys()
    }

    /// The current roster, signed anew (with the next epoch) after any change; the second
    /// value says whether it changed since last asked, so the host publishes it.
    pub fn roster(&mut self, node: &Signer) -> (&Roster, bool) {
        let fresh = self.roster.is_none();
        if fresh {
            self.epoch += 1;
            let members = self.channels.keys().copied().collect();
            self.roster = Some(Roster::sign(self.terms.market, self.epoch, members, node));
        }
        (self.roster.as_ref().expect("signed above"), fresh)
    }

    /// An order from the member of `channel`, at `now_ms`, with the channel's `allowance`
    /// (`None` while the channel's previous settlement is not countersigned): its receipt, or
    /// why it is refused.
    pub fn on_order(
        &mut self,
        from: &Sender,
        message: &OrderMessage,
        now_ms: u64,
        known: &Recovered,
        node: &Signer,
    ) -> Result<Receipt, OrderRefusal> {
        let (channel, allowance) = (from.channel, from.allowance);
        let o = &message.order;
        let order = &o.order;
        if order.market != self.terms.market {
            return Err(OrderRefusal::WrongMarket);
        }
        let id = *self
            .enrolled
            .get(&channel)
            .ok_or(OrderRefusal::NotEnrolled)?;
        if order.member != id {
            return Err(OrderRefusal::NotYours);
        }
        o.signer(known).map_err(|_| OrderRefusal::BadSignature)?;
        let period = u64::from(self.interval_seconds) * 1000;
        let ends = (order.interval.0 + 1).saturating_mul(period);
        if now_ms < ends {
            return Err(OrderRefusal::TooEarly(order.interval.0));
        }
        let deadline = self
            .terms
            .deadline_ms(order.interval, self.interval_seconds);
        if now_ms >= deadline || self.closed.is_some_and(|c| order.interval <= c) {
            return Err(OrderRefusal::TooLate(order.interval.0));
        }
        if order.import.0 > 0 && order.export.0 > 0 {
            return Err(OrderRefusal::BothWays);
        }
        if order.sell_at_least > MAX_PRICE || order.buy_at_most > MAX_PRICE {
            return Err(OrderRefusal::PriceTooHigh);
        }
        if let Some(meter) = &from.meter {
            // The order is what the member's meter signed, less what its neighbour channels
            // took: never more than the meter's own registers grew.
            let reading = message.reading.as_ref().ok_or(OrderRefusal::Unsigned)?;
            let signed = reading
                .check(meter, order.interval, self.interval_seconds)
                .map_err(|e| OrderRefusal::BadReading(e.to_string()))?;
            if order.import > signed.import || order.export > signed.export {
                return Err(OrderRefusal::BeyondReading {
                    import: signed.import.0,
                    export: signed.export.0,
                });
            }
        }
        let allowance = allowance.ok_or(OrderRefusal::Unsettled)?;
        if order.import > allowance.buy || order.export > allowance.sell {
            return Err(OrderRefusal::AboveAllowance {
                buy: allowance.buy.0,
                sell: allowance.sell.0,
            });
        }
        let book = self.orders.entry(order.interval).or_default();
        match book.get(&id) {
            Some(held) if held != o => return Err(OrderRefusal::Changed),
            _ => {
                book.insert(id, *o);
            }
        }
        Ok(Receipt::sign(order, node))
    }

    /// A message from a peer, `channel` its market channel with us if it has one that is
    /// open, with the channel's `allowance` ([`Exchange::on_order`]): the answer to send it,
    /// if any. Anything but an enrolment or an order is not the exchange's.
    pub fn on_message(
        &mut self,
        from: Option<Sender>,
        message: &Message,
        now_ms: u64,
        known: &Recovered,
        node: &Signer,
    ) -> Option<Message> {
        let channel = from.map(|f| f.channel);
        let refused =
            |interval, reason| Some(Message::OrderRefused(OrderRefused { interval, reason }));
        match message {
            Message::Enrol(e) => {
                let Some(channel) = channel else {
                    return refused(IntervalIndex(0), OrderRefusal::NotEnrolled);
                };
                match self.enrol(channel, e) {
                    Ok(()) => None,
                    Err(reason) => refused(IntervalIndex(0), reason),
                }
            }
            Message::Order(m) => {
                let interval = m.order.order.interval;
                let Some(from) = from else {
                    return refused(interval, OrderRefusal::NotEnrolled);
                };
                match self.on_order(&from, m, now_ms, known, node) {
                    Ok(receipt) => Some(Message::Receipt(receipt)),
                    Err(reason) => refused(interval, reason),
                }
            }
            _ => None,
        }
    }

    /// The interval whose book is due at `now_ms`, if any: the oldest not closed yet whose
    /// deadline has passed (a market node that woke late closes every book it owes, in order).
    pub fn due(&self, now_ms: u64) -> Option<IntervalIndex> {
        let period = u64::from(self.interval_seconds) * 1000;
        let last_ended = IntervalIndex((now_ms / period).checked_sub(1)?);
        let candidate = match self.closed {
            Some(c) if c >= last_ended => return None,
            Some(c) => IntervalIndex(c.0 + 1),
            None => last_ended,
        };
        (now_ms >= self.terms.deadline_ms(candidate, self.interval_seconds)).then_some(candidate)
    }

    /// When the next book is due (ms since the Unix epoch).
    pub fn next_deadline(&self, now_ms: u64) -> u64 {
        let period = u64::from(self.interval_seconds) * 1000;
        let next = match self.closed {
            Some(c) => IntervalIndex(c.0 + 1),
            None => IntervalIndex((now_ms / period).saturating_sub(1)),
        };
        let deadline = self.terms.deadline_ms(next, self.interval_seconds);
        if self.closed.is_none() && deadline <= now_ms {
            // Nothing closed yet and this one's deadline passed: the next interval's.
            return self
                .terms
                .deadline_ms(IntervalIndex(next.0 + 1), self.interval_seconds);
        }
        deadline
    }

    /// Closes the book of `interval`: every order taken for it, cleared and signed, and each
    /// trading member's settlement, by channel. Orders for it that come later are too late.
    pub fn close(
        &mut self,
        interval: IntervalIndex,
        node: &Signer,
    ) -> Result<(Book, Vec<(ChannelId, Settlement)>), BookError> {
        self.closed = Some(self.closed.map_or(interval, |c| c.max(interval)));
        let taken = self.orders.remove(&interval).unwrap_or_default();
        self.orders.retain(|i, _| *i > interval);
        // Only members still enrolled: one that left since its order is out of this book.
        let orders: Vec<SignedOrder> = taken
            .into_values()
            .filter(|o| self.channels.contains_key(&o.order.member))
            .collect();
        let (roster, _) = self.roster(node);
        let roster = roster.clone();
        let (book, clearing) = Book::close(
            &self.terms,
            self.interval_seconds,
            interval,
            &roster,
            orders,
            node,
        )?;
        let digest = book.digest();
        let settlements = clearing
            .fills
            .iter()
            .filter_map(|f| {
                let channel = *self.channels.get(&f.member)?;
                Some((
                    channel,
                    Settlement {
                        interval,
                        book: digest,
                        sold: f.sold,
                        bought: f.bought,
                        earned: f.earned,
                        paid: f.paid,
                    },
                ))
            })
            .collect();
        Ok((book, settlements))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::order::Order;
    use crate::tariff::TimeOfUse;
    use crate::types::PricePerKwh;

    fn signer(b: u8) -> Signer {
        Signer::new(&[b; 32], &[0; 32]).unwrap()
    }

    fn exchange() -> Exchange {
        Exchange::new(
            MarketTerms {
                market: [7; 32],
                rule: super::super::Rule::PayAsClear,
                fee: PricePerKwh(0),
                deadline_permille: 100,
                feed_in: TimeOfUse::flat(PricePerKwh(80_000)),
                retail: TimeOfUse::flat(PricePerKwh(300_000)),
            },
            900,
        )
    }

    const ROOMY: Option<Allowance> = Some(Allowance {
        buy: WattHours(u64::MAX),
        sell: WattHours(u64::MAX),
    });

    /// Orders for interval 10, just after it ended.
    fn order_of(pseudonym: &Signer) -> SignedOrder {
        SignedOrder::sign(
            Order {
                market: [7; 32],
                interval: IntervalIndex(10),
                member: [0; 32],
                import: WattHours(5),
                export: WattHours(0),
                sell_at_least: PricePerKwh(0),
                buy_at_most: PricePerKwh(300_000),
            },
            pseudonym,
        )
    }

    const NOW: u64 = 11 * 900_000 + 1;

    /// The member of `channel` with room to trade, and `meter` named by its channel's terms.
    fn from(channel: ChannelId, allowance: Option<Allowance>, meter: Option<NodeId>) -> Sender {
        Sender {
            channel,
            allowance,
            meter,
        }
    }

    fn plain(o: SignedOrder) -> OrderMessage {
        OrderMessage::unsigned(o)
    }

    /// `pseudonym`'s order, its word, from the member of `channel` with `allowance`.
    fn plain_order(
        x: &mut Exchange,
        channel: ChannelId,
        allowance: Option<Allowance>,
        pseudonym: &Signer,
        node: &Signer,
    ) -> Result<Receipt, OrderRefusal> {
        let o = plain(order_of(pseudonym));
        x.on_order(
            &from(channel, allowance, None),
            &o,
            NOW,
            &Recovered::NONE,
            node,
        )
    }

    /// Orders kept by the host come back into books still open, and only those: a book that
    /// closed does not take them, nor does another market's.
    #[test]
    fn restored_orders_go_back_into_open_books_only() {
        let (node, p1) = (signer(1), signer(2));
        let c1 = ChannelId([1; 32]);
        let mut x = exchange();
        x.enrol(c1, &Enrol::sign(&[7; 32], c1, &p1)).unwrap();
        x.start_at(NOW);
        assert_eq!(x.closed(), None, "interval 10's deadline is still ahead");
        let mut foreign = order_of(&p1);
        foreign.order.market = [8; 32];
        x.restore(foreign);
        x.restore(order_of(&p1));
        let (book, _) = x.close(IntervalIndex(10), &node).unwrap();
        assert_eq!(book.orders, vec![order_of(&p1)]);
        assert_eq!(x.closed(), Some(IntervalIndex(10)));
        x.restore(order_of(&p1));
        let (book, _) = x.close(IntervalIndex(10), &node).unwrap();
        assert!(book.orders.is_empty(), "a closed book takes no order back");
    }

    #[test]
    fn enrolments_and_orders_the_exchange_refuses() {
        let (node, p1, p2) = (signer(1), signer(2), signer(3));
        let (c1, c2) = (ChannelId([1; 32]), ChannelId([2; 32]));
        let mut x = exchange();
        // An order before any enrolment.
        assert_eq!(
            plain_order(&mut x, c1, ROOMY, &p1, &node),
            Err(OrderRefusal::NotEnrolled)
        );
        // An enrolment for another channel than the one it came on.
        assert_eq!(
            x.enrol(c1, &Enrol::sign(&[7; 32], c2, &p1)),
            Err(OrderRefusal::NotYours)
        );
        // An enrolment signed for another market.
        assert_eq!(
            x.enrol(c1, &Enrol::sign(&[8; 32], c1, &p1)),
            Err(OrderRefusal::BadSignature)
        );
        x.enrol(c1, &Enrol::sign(&[7; 32], c1, &p1)).unwrap();
        x.enrol(c1, &Enrol::sign(&[7; 32], c1, &p1)).unwrap();
        assert_eq!(x.members(), 1, "enrolling again changes nothing");
        // The same pseudonym on a second channel.
        assert_eq!(
            x.enrol(c2, &Enrol::sign(&[7; 32], c2, &p1)),
            Err(OrderRefusal::PseudonymTaken)
        );
        // A member whose earlier settlement is unsigned.
        assert_eq!(
            plain_order(&mut x, c1, None, &p1, &node),
            Err(OrderRefusal::Unsettled)
        );
        assert!(plain_order(&mut x, c1, ROOMY, &p1, &node).is_ok());
        // Once the member leaves, its pseudonym is free for its new channel.
        x.leave(&c1);
        x.enrol(c2, &Enrol::sign(&[7; 32], c2, &p1)).unwrap();
        x.enrol(c1, &Enrol::sign(&[7; 32], c1, &p2)).unwrap();
        assert_eq!(x.members(), 2);
    }

    /// A member whose channel names its meter: the order must carry that meter's reading of
    /// the interval, and claim no more than it signed.
    #[test]
    fn an_order_of_a_member_whose_meter_signs_is_checked_against_its_reading() {
        use crate::reading::{Reading, SignedReading};
        let (node, p1, meter) = (signer(1), signer(2), signer(9));
        let c1 = ChannelId([1; 32]);
        let mut x = exchange();
        x.enrol(c1, &Enrol::sign(&[7; 32], c1, &p1)).unwrap();
        let member = from(c1, ROOMY, Some(meter.id()));
        // Interval 10, registers growing by 5 Wh imported (what `order_of` buys).
        let reading = |key: &Signer, interval: u64, import_end: u64| {
            SignedReading::sign(
                Reading {
                    meter: key.id(),
                    interval: IntervalIndex(interval),
                    interval_seconds: 900,
                    import_start: WattHours(1_000),
                    import_end: WattHours(import_end),
                    export_start: WattHours(0),
                    export_end: WattHours(0),
                },
                key,
            )
        };
        let with = |r: SignedReading| OrderMessage {
            order: order_of(&p1),
            reading: Some(r),
        };
        let take = |x: &mut Exchange, m: &OrderMessage| {
            x.on_order(&member, m, NOW, &Recovered::NONE, &node)
        };
        assert_eq!(
            take(&mut x, &plain(order_of(&p1))),
            Err(OrderRefusal::Unsigned)
        );
        let other_meter = take(&mut x, &with(reading(&signer(8), 10, 1_005)));
        assert!(
            matches!(&other_meter, Err(OrderRefusal::BadReading(why)) if why.contains("not the party's meter")),
            "{other_meter:?}"
        );
        let replayed = take(&mut x, &with(reading(&meter, 9, 1_005)));
        assert!(
            matches!(&replayed, Err(OrderRefusal::BadReading(why)) if why.contains("interval 9")),
            "{replayed:?}"
        );
        let mut forged = with(reading(&meter, 10, 1_005));
        forged.reading.as_mut().unwrap().reading.import_end = WattHours(2_000);
        assert!(matches!(
            take(&mut x, &forged),
            Err(OrderRefusal::BadReading(_))
        ));
        // The meter signed 4 Wh; the order buys 5.
        assert_eq!(
            take(&mut x, &with(reading(&meter, 10, 1_004))),
            Err(OrderRefusal::BeyondReading {
                import: 4,
                export: 0
            })
        );
        assert!(take(&mut x, &with(reading(&meter, 10, 1_005))).is_ok());
        // A member whose channel names no meter is taken at its word.
        let mut y = exchange();
        y.enrol(c1, &Enrol::sign(&[7; 32], c1, &p1)).unwrap();
        assert!(plain_order(&mut y, c1, ROOMY, &p1, &node).is_ok());
    }

    #[test]
    fn every_book_owed_is_closed_oldest_first_and_none_late_after_a_start() {
        let node = signer(1);
        // Started after interval 10's deadline: 10 is not closed late.
        let mut x = exchange();
        x.start_at(11 * 900_000 + 90_000);
        assert_eq!(x.due(11 * 900_000 + 90_000), None, "not 10, late and empty");
        // Woken after 11's deadline with 9 the last closed: 10 first, then 11.
        let mut x = exchange();
        let now = 12 * 900_000 + 90_000;
        x.close(IntervalIndex(9), &node).unwrap();
        assert_eq!(x.due(now), Some(IntervalIndex(10)));
        x.close(IntervalIndex(10), &node).unwrap();
        assert_eq!(x.due(now), Some(IntervalIndex(11)));
        x.close(IntervalIndex(11), &node).unwrap();
        assert_eq!(x.due(now), None);
        assert_eq!(x.next_deadline(now), 13 * 900_000 + 90_000);
    }
}
