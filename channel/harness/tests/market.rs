//! The neighbourhood market among a market node and its members (`specs/market.md`): every
//! book is checked by every member before its channel settles it, the market node's books
//! balance, nobody waits for an absent member, and a market node that breaks the rules is
//! refused by the members it cheats.

use gridchan_channel::market::{
    BookRefusal, MemberStep, Order, OrderMessage, OrderRefusal, SignedOrder,
};
use gridchan_channel::metering::MeterReading;
use gridchan_channel::wire::Message;
use gridchan_channel::{Amount, IntervalIndex, PricePerKwh, Refusal, Signer, WattHours};
use gridchan_harness::market::{terms, MarketFault, MarketNet, INTERVAL_SECONDS};
use proptest::prelude::*;

const DEPOSIT: Amount = Amount(1_000_000_000);

fn meter(import: u64, export: u64) -> MeterReading {
    MeterReading {
        import: WattHours(import),
        export: WattHours(export),
    }
}

/// What member `i`'s host saw of `interval`'s book.
fn book_step(net: &MarketNet, i: usize, interval: IntervalIndex) -> Option<MemberStep> {
    net.steps[i]
        .iter()
        .rev()
        .find(|s| match s {
            MemberStep::Book { interval: at, .. } | MemberStep::Refused { interval: at, .. } => {
                *at == interval
            }
            _ => false,
        })
        .cloned()
}

/// Why member `i` refused `interval`'s book, if it did.
fn refusal(net: &MarketNet, i: usize, interval: IntervalIndex) -> Option<BookRefusal> {
    match book_step(net, i, interval)? {
        MemberStep::Refused { reason, .. } => Some(reason),
        _ => None,
    }
}

fn last_interval(net: &MarketNet, i: usize) -> IntervalIndex {
    net.member_channel(i)
        .current
        .expect("open")
        .state()
        .last_interval
}

fn meters() -> impl Strategy<Value = Vec<MeterReading>> {
    prop::collection::vec((any::<bool>(), 0u64..3_000), 6).prop_map(|rows| {
        rows.into_iter()
            .map(|(sells, wh)| if sells { meter(0, wh) } else { meter(wh, 0) })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Random meters over several intervals: every member checks every book and settles
    /// exactly its part of it; with the grid's prices as every limit the neighbourhood trades
    /// the pooled bound; both ends of every channel hold the same state; the market node's
    /// books balance to the micro-unit; nobody sells or buys beyond its meter.
    #[test]
    fn every_book_is_checked_by_every_member_and_settled_exactly(
        day in prop::collection::vec(meters(), 4),
    ) {
        let mut net = MarketNet::new(6, terms(), DEPOSIT);
        for (k, meters) in day.iter().enumerate() {
            let interval = IntervalIndex(10 + k as u64);
            let market_before: u64 = (0..6)
                .map(|i| net.market_channel(i).current.unwrap().state().balance_b.0)
                .sum();
            let book = net.interval(interval, meters);
            let exported: u64 = meters.iter().map(|m| m.export.0).sum();
            let imported: u64 = meters.iter().map(|m| m.import.0).sum();
            prop_assert_eq!(book.traded.0, exported.min(imported), "the pooled bound");
            for (i, m) in meters.iter().enumerate() {
                let Some(MemberStep::Book { settlement, .. }) = book_step(&net, i, interval) else {
                    if m.import.0 == 0 && m.export.0 == 0 {
                        continue;
                    }
                    prop_assert!(false, "member {i} saw no book for {interval}");
                    unreachable!()
                };
                let ours = net.member_channel(i).current.unwrap();
                let theirs = net.market_channel(i).current.unwrap();
                prop_assert_eq!(ours.state(), theirs.state(), "both ends agree");
                if let Some(s) = settlement {
                    prop_assert!(s.sold <= m.export && s.bought <= m.import);
                    prop_assert_eq!(ours.state().last_interval, interval);
                    prop_assert_eq!(ours.state().book, book.digest());
                }
            }
            let market_after: u64 = (0..6)
                .map(|i| net.market_channel(i).current.unwrap().state().balance_b.0)
                .sum();
            prop_assert_eq!(market_after, market_before + book.income.0, "the books balance");
        }
    }
}

#[test]
fn every_member_refuses_a_wrong_clearing_and_no_channel_moves() {
    let mut net = MarketNet::new(4, terms(), DEPOSIT);
    let day = [meter(0, 900), meter(500, 0), meter(700, 0), meter(0, 100)];
    net.interval(IntervalIndex(10), &day);
    let wrong = IntervalIndex(11);
    net.fault = Some(MarketFault::WrongClearing(wrong));
    net.interval(wrong, &day);
    for i in 0..4 {
        assert_eq!(
            refusal(&net, i, wrong),
            Some(BookRefusal::WrongClearing("price")),
            "member {i}"
        );
        assert_eq!(last_interval(&net, i), IntervalIndex(10), "member {i}");
    }
    // The market node's proposals wait for a checked book that never comes, then are refused;
    // the next interval settles as usual.
    net.fault = None;
    net.advance(terms().deadline_ms(wrong, INTERVAL_SECONDS) + 200_000);
    assert!(net.market_channel(0).proposal.is_none());
    assert!(matches!(
        net.market_channel(0).refused,
        Some((_, Refusal::NoBook(11)))
    ));
    net.interval(IntervalIndex(12), &day);
    for i in 0..4 {
        assert_eq!(last_interval(&net, i), IntervalIndex(12), "member {i}");
    }
}

#[test]
fn a_receipted_order_left_out_of_the_book_is_refused_and_proven() {
    let mut net = MarketNet::new(4, terms(), DEPOSIT);
    let day = [meter(0, 900), meter(500, 0), meter(700, 0), meter(0, 100)];
    let at = IntervalIndex(10);
    net.fault = Some(MarketFault::DropsOrder(at, 2));
    let book = net.interval(at, &day);
    assert!(net.steps[2].contains(&MemberStep::Receipted(at)));
    assert_eq!(refusal(&net, 2, at), Some(BookRefusal::OwnOrderMissing));
    // The others cannot tell and settle; member 2 keeps what it needs to prove it: the
    // market node's receipt for an order its signed book lacks.
    for i in [0, 1, 3] {
        assert!(
            matches!(book_step(&net, i, at), Some(MemberStep::Book { .. })),
            "member {i}"
        );
    }
    assert!(!book
        .orders
        .iter()
        .any(|o| o.order.member == net.pseudonym(2)));
}

#[test]
fn a_member_offline_is_left_out_and_nobody_waits_for_it() {
    let mut net = MarketNet::new(4, terms(), DEPOSIT);
    let day = [meter(0, 900), meter(500, 0), meter(700, 0), meter(0, 100)];
    net.set_online(2, false);
    let book = net.interval(IntervalIndex(10), &day);
    assert!(!book
        .orders
        .iter()
        .any(|o| o.order.member == net.pseudonym(2)));
    assert_eq!(
        book.traded,
        WattHours(500),
        "the others traded among themselves"
    );
    for i in [0, 1, 3] {
        assert!(
            matches!(
                book_step(&net, i, IntervalIndex(10)),
                Some(MemberStep::Book { .. })
            ),
            "member {i} checked the book"
        );
    }
    assert_eq!(
        last_interval(&net, 1),
        IntervalIndex(10),
        "the buyer settled"
    );
    net.set_online(2, true);
    net.interval(IntervalIndex(11), &day);
    assert_eq!(
        last_interval(&net, 2),
        IntervalIndex(11),
        "back in the market"
    );
}

#[test]
fn a_settlement_that_is_not_the_book_is_refused() {
    let mut net = MarketNet::new(3, terms(), DEPOSIT);
    let day = [meter(0, 900), meter(500, 0), meter(400, 0)];
    let at = IntervalIndex(10);
    net.fault = Some(MarketFault::Overcharges(at, 1));
    net.interval(at, &day);
    assert!(matches!(
        net.market_channel(1).refused,
        Some((_, Refusal::NotTheBook(10)))
    ));
    assert_eq!(last_interval(&net, 1), IntervalIndex(0), "nothing settled");
    assert_eq!(
        last_interval(&net, 2),
        at,
        "the honest settlement went through"
    );
}

/// A member's order the market node must not take, each with its reason.
#[test]
fn orders_a_market_node_must_not_take_are_refused_with_their_reason() {
    let mut net = MarketNet::new(2, terms(), Amount(3_000));
    let at = IntervalIndex(10);
    net.advance((at.0 + 1) * u64::from(INTERVAL_SECONDS) * 1000 + 1);
    let pseudonym = |net: &MarketNet, i| net.pseudonym(i);
    // Member 0's pseudonym key, as its member derives it.
    let own = {
        let mut secret = [0x4c; 32];
        secret[..8].copy_from_slice(&2u64.to_be_bytes());
        Signer::new(&secret, &[0; 32])
            .unwrap()
            .derive(&terms().market, &[0; 32])
    };
    assert_eq!(
        gridchan_channel::market::pseudonym_id(&own.id()),
        pseudonym(&net, 0)
    );
    let order = |import: u64, export: u64| Order {
        market: terms().market,
        interval: at,
        member: [0; 32],
        import: WattHours(import),
        export: WattHours(export),
        sell_at_least: PricePerKwh(80_000),
        buy_at_most: PricePerKwh(300_000),
    };
    let refusal = |answer: Option<Message>| match answer {
        Some(Message::OrderRefused(r)) => r.reason,
        other => panic!("{other:?}"),
    };
    let signed =
        |o: Order| Message::Order(Box::new(OrderMessage::unsigned(SignedOrder::sign(o, &own))));
    // Another market's order.
    let mut other = order(5, 0);
    other.market = [1; 32];
    assert_eq!(
        refusal(net.member_says(0, signed(other))),
        OrderRefusal::WrongMarket
    );
    // Signed by a pseudonym that is not this channel's.
    let stranger = SignedOrder::sign(order(5, 0), &Signer::new(&[9; 32], &[0; 32]).unwrap());
    assert_eq!(
        refusal(net.member_says(
            0,
            Message::Order(Box::new(OrderMessage::unsigned(stranger)))
        )),
        OrderRefusal::NotYours
    );
    // Member 1's pseudonym over member 0's channel.
    let theirs = SignedOrder::sign(order(5, 0), &own);
    assert_eq!(
        refusal(net.member_says(1, Message::Order(Box::new(OrderMessage::unsigned(theirs))))),
        OrderRefusal::NotYours
    );
    // A signature that does not verify.
    let mut forged = SignedOrder::sign(order(5, 0), &own);
    forged.order.import = WattHours(6);
    assert_eq!(
        refusal(net.member_says(0, Message::Order(Box::new(OrderMessage::unsigned(forged))))),
        OrderRefusal::BadSignature
    );
    // Both ways, a price above the maximum, more than the deposit pays for.
    assert_eq!(
        refusal(net.member_says(0, signed(order(5, 5)))),
        OrderRefusal::BothWays
    );
    let mut dear = order(5, 0);
    dear.buy_at_most = PricePerKwh(u64::MAX);
    assert_eq!(
        refusal(net.member_says(0, signed(dear))),
        OrderRefusal::PriceTooHigh
    );
    assert!(matches!(
        refusal(net.member_says(0, signed(order(20, 0)))),
        OrderRefusal::AboveAllowance { buy: 10, .. }
    ));
    // Too early: the next interval has not ended.
    let mut early = order(5, 0);
    early.interval = IntervalIndex(at.0 + 1);
    assert_eq!(
        refusal(net.member_says(0, signed(early))),
        OrderRefusal::TooEarly(at.0 + 1)
    );
    // Taken once; the same again is receipted again; another order for the interval is not.
    assert!(matches!(
        net.member_says(0, signed(order(5, 0))),
        Some(Message::Receipt(_))
    ));
    assert!(matches!(
        net.member_says(0, signed(order(5, 0))),
        Some(Message::Receipt(_))
    ));
    assert_eq!(
        refusal(net.member_says(0, signed(order(4, 0)))),
        OrderRefusal::Changed
    );
    // After the deadline: too late.
    net.advance(terms().deadline_ms(at, INTERVAL_SECONDS));
    let mut late = order(5, 0);
    late.buy_at_most = PricePerKwh(200_000);
    assert_eq!(
        refusal(net.member_says(0, signed(late))),
        OrderRefusal::TooLate(at.0)
    );
}
