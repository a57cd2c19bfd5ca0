//! The neighbourhood market's clearing rule (`specs/market.md`): a pure function from one
//! interval's book of orders to who sells and buys how much, at one uniform price
//! (pay-as-clear). Every member recomputes it before it signs, so it is exact: integer
//! watt-hours and micro-units, every tie broken by the member's pseudonym.

use std::collections::HashSet;

use super::Rule;
use crate::types::{Amount, PricePerKwh, WattHours};

/// One member's order for one interval: what its meter measured and its limit prices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Order {
    /// The member's pseudonym in this market.
    pub member: [u8; 32],
    /// Energy the member's meter imported (what it would buy).
    pub import: WattHours,
    /// Energy the member's meter exported (what it would sell).
    pub export: WattHours,
    /// The least it sells for.
    pub sell_at_least: PricePerKwh,
    /// The most it buys for.
    pub buy_at_most: PricePerKwh,
}

/// The grid's prices: every member's outside options. No member sells below the feed-in
/// tariff nor buys above the retail price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub feed_in: PricePerKwh,
    pub retail: PricePerKwh,
}

/// What one member sold or bought, and the money.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fill {
    pub member: [u8; 32],
    pub sold: WattHours,
    pub bought: WattHours,
    /// What a seller is paid: `sold` at the clearing price, rounded down.
    pub earned: Amount,
    /// What a buyer pays: `bought` at the clearing price plus the fee, rounded up.
    pub paid: Amount,
}

/// The result of clearing a book.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clearing {
    /// The uniform price sellers are paid; `None` when nothing trades.
    pub price: Option<PricePerKwh>,
    /// Energy traded in all.
    pub traded: WattHours,
    /// The members who traded, by pseudonym.
    pub fills: Vec<Fill>,
    /// What the market keeps: the fee and the rounding, `paid - earned` summed.
    pub market_income: Amount,
}

/// Why a book cannot be cleared.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("member {} has two orders in the book", hex::encode(&.0[..4]))]
    Duplicate([u8; 32]),
    #[error("member {} both imports and exports in one interval (a net meter does one)", hex::encode(&.0[..4]))]
    BothWays([u8; 32]),
    #[error("the retail price is below the feed-in tariff")]
    Grid,
    #[error("the book's amounts do not fit: a price or an energy is absurd")]
    Overflow,
}

/// Clears one interval's book at a uniform price, with `fee` per kWh charged to buyers.
///
/// Sellers are taken cheapest first, buyers dearest first (ties: the smaller pseudonym
/// first), and matched while a seller's ask plus the fee is within the buyer's bid; the price
/// is the floor of the midpoint between the last matched seller's ask and the last matched
/// buyer's bid less the fee. At that price no other allocation trades more energy.
///
/// Under [`Rule::PayAsBid`] the matching is the same, but each matched seller is paid its own
/// ask and each matched buyer pays its own bid; `price` is still the uniform price, for
/// reference.
pub fn clear(
    orders: &[Order],
    grid: Grid,
    fee: PricePerKwh,
    rule: Rule,
) -> Result<Clearing, BookError> {
    if grid.retail < grid.feed_in {
        return Err(BookError::Grid);
    }
    let mut seen = HashSet::new();
    for o in orders {
        if !seen.insert(o.member) {
            return Err(BookError::Duplicate(o.member));
        }
        if o.import.0 > 0 && o.export.0 > 0 {
            return Err(BookError::BothWays(o.member));
        }
    }
    // The grid is every member's outside option.
    let ask = |o: &Order| o.sell_at_least.max(grid.feed_in);
    let bid = |o: &Order| o.buy_at_most.min(grid.retail);
    let mut sellers: Vec<&Order> = orders.iter().filter(|o| o.export.0 > 0).collect();
    let mut buyers: Vec<&Order> = orders.iter().filter(|o| o.import.0 > 0).collect();
    sellers.sort_by_key(|o| (ask(o), o.member));
    buyers.sort_by(|x, y| bid(y).cmp(&bid(x)).then(x.member.cmp(&y.member)));
    let (mut i, mut j) = (0, 0);
    let (mut left_s, mut left_b) = (
        sellers.first().map_or(0, |o| o.export.0),
        buyers.first().map_or(0, |o| o.import.0),
    );
    let mut sold = vec![0u64; sellers.len()];
    let mut bought = vec![0u64; buyers.len()];
    let mut marginal: Option<(PricePerKwh, PricePerKwh)> = None;
    while i < sellers.len() && j < buyers.len() {
        let (a, b) = (ask(sellers[i]), bid(buyers[j]));
        let fits = a.0.checked_add(fee.0).ok_or(BookError::Overflow)? <= b.0;
        if !fits {
            break;
        }
        let q = left_s.min(left_b);
        sold[i] += q;
        bought[j] += q;
        left_s -= q;
        left_b -= q;
        marginal = Some((a, b));
        if left_s == 0 {
            i += 1;
            left_s = sellers.get(i).map_or(0, |o| o.export.0);
        }
        if left_b == 0 {
            j += 1;
            left_b = buyers.get(j).map_or(0, |o| o.import.0);
        }
    }
    let Some((a, b)) = marginal else {
        return Ok(Clearing {
            price: None,
            traded: WattHours(0),
            fills: Vec::new(),
            market_income: Amount(0),
        });
    };
    // a + fee <= b: the midpoint lies within every matched seller's ask and every matched
    // buyer's bid less the fee.
    let price = PricePerKwh(a.0 + (b.0 - fee.0 - a.0) / 2);
    let mut fills = Vec::new();
    let (mut earned_all, mut paid_all, mut traded) = (0u128, 0u128, 0u64);
    let seller_price = |o: &Order| match rule {
        Rule::PayAsClear => u128::from(price.0),
        Rule::PayAsBid => u128::from(ask(o).0),
    };
    let buyer_price = |o: &Order| match rule {
        Rule::PayAsClear => u128::from(price.0) + u128::from(fee.0),
        Rule::PayAsBid => u128::from(bid(o).0),
    };
    for (o, q) in sellers.iter().zip(&sold).filter(|(_, q)| **q > 0) {
        let earned = u128::from(*q) * seller_price(o) / 1000;
        earned_all += earned;
        traded += q;
        fills.push(Fill {
            member: o.member,
            sold: WattHours(*q),
            bought: WattHours(0),
            earned: Amount(u64::try_from(earned).map_err(|_| BookError::Overflow)?),
            paid: Amount(0),
        });
    }
    for (o, q) in buyers.iter().zip(&bought).filter(|(_, q)| **q > 0) {
        let paid = (u128::from(*q) * buyer_price(o)).div_ceil(1000);
        paid_all += paid;
        fills.push(Fill {
            member: o.member,
            sold: WattHours(0),
            bought: WattHours(*q),
            earned: Amount(0),
            paid: Amount(u64::try_from(paid).map_err(|_| BookError::Overflow)?),
        });
    }
    fills.sort_by_key(|f| f.member);
    let income = u64::try_from(paid_all - earned_all).map_err(|_| BookError::Overflow)?;
    Ok(Clearing {
        price: Some(price),
        traded: WattHours(traded),
        fills,
        market_income: Amount(income),
    })
}

/// The published vectors (`specs/vectors/clearing.json`): books in, results out, as pretty
/// JSON with every number a decimal string and every pseudonym hex.
pub fn vectors_json() -> String {
    let o = |n: u8, import: u64, export: u64, ask: u64, bid: u64| Order {
        member: [n; 32],
        import: WattHours(import),
        export: WattHours(export),
        sell_at_least: PricePerKwh(ask),
        buy_at_most: PricePerKwh(bid),
    };
    let grid = Grid {
        feed_in: PricePerKwh(80_000),
        retail: PricePerKwh(300_000),
    };
    let clear_ = Rule::PayAsClear;
    let cases: Vec<(&str, Vec<Order>, u64, Rule)> = vec![
        ("empty book", vec![], 0, clear_),
        ("sellers only", vec![o(1, 0, 500, 90_000, 0)], 0, clear_),
        (
            "two sellers, two buyers",
            vec![
                o(1, 0, 500, 90_000, 0),
                o(2, 0, 400, 120_000, 0),
                o(3, 600, 0, 0, 250_000),
                o(4, 500, 0, 0, 200_000),
            ],
            0,
            clear_,
        ),
        (
            "pay-as-bid: each seller is paid its ask, each buyer pays its bid",
            vec![
                o(1, 0, 500, 90_000, 0),
                o(2, 0, 400, 120_000, 0),
                o(3, 600, 0, 0, 250_000),
                o(4, 500, 0, 0, 200_000),
            ],
            5_000,
            Rule::PayAsBid,
        ),
        (
            "limits below the grid's: the outside options bind",
            vec![o(5, 0, 1_000, 0, 0), o(6, 700, 0, 0, 1_000_000)],
            0,
            clear_,
        ),
        (
            "a fee; ties broken by pseudonym; rounding kept by the market",
            vec![
                o(9, 0, 333, 100_000, 0),
                o(7, 0, 333, 100_000, 0),
                o(8, 500, 0, 0, 220_000),
                o(10, 500, 0, 0, 220_000),
            ],
            7_000,
            clear_,
        ),
        (
            "no ask within any bid",
            vec![o(11, 0, 800, 260_000, 0), o(12, 800, 0, 0, 150_000)],
            0,
            clear_,
        ),
    ];
    let hex32 = |m: &[u8; 32]| hex::encode(m);
    let mut out = Vec::new();
    for (name, book, fee, rule) in cases {
        let result =
            clear(&book, grid, PricePerKwh(fee), rule).expect("the vectors' books are valid");
        out.push(serde_json::json!({
            "name": name,
            "rule": rule.to_string(),
            "feed_in": grid.feed_in.0.to_string(),
            "retail": grid.retail.0.to_string(),
            "fee": fee.to_string(),
            "book": book.iter().map(|o| serde_json::json!({
                "member": hex32(&o.member),
                "import": o.import.0.to_string(),
                "export": o.export.0.to_string(),
                "sell_at_least": o.sell_at_least.0.to_string(),
                "buy_at_most": o.buy_at_most.0.to_string(),
            })).collect::<Vec<_>>(),
            "price": result.price.map(|p| p.0.to_string()),
            "traded": result.traded.0.to_string(),
            "market_income": result.market_income.0.to_string(),
            "fills": result.fills.iter().map(|f| serde_json::json!({
                "member": hex32(&f.member),
                "sold": f.sold.0.to_string(),
                "bought": f.bought.0.to_string(),
                "earned": f.earned.0.to_string(),
                "paid": f.paid.0.to_string(),
            })).collect::<Vec<_>>(),
        }));
    }
    serde_json::to_string_pretty(&serde_json::Value::Array(out)).expect("JSON") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GRID: Grid = Grid {
        feed_in: PricePerKwh(80_000),
        retail: PricePerKwh(300_000),
    };

    fn member(n: u8) -> [u8; 32] {
        [n; 32]
    }

    fn order(n: u8, import: u64, export: u64, ask: u64, bid: u64) -> Order {
        Order {
            member: member(n),
            import: WattHours(import),
            export: WattHours(export),
            sell_at_least: PricePerKwh(ask),
            buy_at_most: PricePerKwh(bid),
        }
    }

    #[test]
    fn a_small_book_clears_at_the_midpoint_of_the_marginal_pair() {
        // Two sellers (asks 0.09, 0.12), two buyers (bids 0.25, 0.20).
        let book = [
            order(1, 0, 500, 90_000, 0),
            order(2, 0, 400, 120_000, 0),
            order(3, 600, 0, 0, 250_000),
            order(4, 500, 0, 0, 200_000),
        ];
        let c = clear(&book, GRID, PricePerKwh(0), Rule::PayAsClear).unwrap();
        // All 900 Wh sold; the last match is seller 2 (0.12) with buyer 4 (0.20).
        assert_eq!(c.traded, WattHours(900));
        assert_eq!(c.price, Some(PricePerKwh(160_000)));
        let fill = |n| *c.fills.iter().find(|f| f.member == member(n)).unwrap();
        assert_eq!(fill(1).earned, Amount(80_000));
        assert_eq!(fill(3).bought, WattHours(600));
        assert_eq!(fill(4).bought, WattHours(300));
        assert_eq!(c.market_income, Amount(0));
    }

    #[test]
    fn a_bad_book_is_refused_with_its_reason() {
        let twice = [order(1, 0, 5, 0, 0), order(1, 5, 0, 0, 0)];
        assert_eq!(
            clear(&twice, GRID, PricePerKwh(0), Rule::PayAsClear),
            Err(BookError::Duplicate(member(1)))
        );
        let both = [order(2, 5, 5, 0, 0)];
        assert_eq!(
            clear(&both, GRID, PricePerKwh(0), Rule::PayAsClear),
            Err(BookError::BothWays(member(2)))
        );
        let upside_down = Grid {
            feed_in: PricePerKwh(2),
            retail: PricePerKwh(1),
        };
        assert_eq!(
            clear(&[], upside_down, PricePerKwh(0), Rule::PayAsClear),
            Err(BookError::Grid)
        );
        let absurd = [order(3, 0, 5, u64::MAX, 0), order(4, 5, 0, 0, u64::MAX)];
        let open = Grid {
            feed_in: PricePerKwh(0),
            retail: PricePerKwh(u64::MAX),
        };
        assert_eq!(
            clear(&absurd, open, PricePerKwh(1), Rule::PayAsClear),
            Err(BookError::Overflow)
        );
    }

    fn book() -> impl Strategy<Value = Vec<Order>> {
        prop::collection::vec(
            (
                any::<u8>(),
                any::<bool>(),
                1u64..5_000,
                0u64..400_000,
                0u64..400_000,
            ),
            0..40,
        )
        .prop_map(|rows| {
            let mut seen = HashSet::new();
            rows.into_iter()
                .filter(|(n, ..)| seen.insert(*n))
                .map(|(n, sells, wh, ask, bid)| {
                    let (import, export) = if sells { (0, wh) } else { (wh, 0) };
                    order(n, import, export, ask, bid)
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn the_clearing_keeps_every_limit_meter_and_micro_unit(
            book in book(),
            fee in 0u64..20_000,
            by_bid in any::<bool>(),
        ) {
            let fee = PricePerKwh(fee);
            let rule = if by_bid { Rule::PayAsBid } else { Rule::PayAsClear };
            let c = clear(&book, GRID, fee, rule).unwrap();
            // Deterministic, whatever the order of the book.
            let mut reversed = book.clone();
            reversed.reverse();
            prop_assert_eq!(&clear(&reversed, GRID, fee, rule).unwrap(), &c);
            let Some(price) = c.price else {
                prop_assert!(c.fills.is_empty());
                return Ok(());
            };
            let order_of = |m: [u8; 32]| *book.iter().find(|o| o.member == m).unwrap();
            let (mut sold, mut bought, mut earned, mut paid) = (0, 0, 0u128, 0u128);
            for f in &c.fills {
                let o = order_of(f.member);
                // Never beyond the meter, never outside the limits.
                prop_assert!(f.sold <= o.export && f.bought <= o.import);
                let ask = o.sell_at_least.max(GRID.feed_in);
                let bid = o.buy_at_most.min(GRID.retail);
                if f.sold.0 > 0 {
                    prop_assert!(price >= ask);
                    // Paid at least its ask (rounded down) under either rule.
                    prop_assert!(u128::from(f.earned.0) >= u128::from(f.sold.0) * u128::from(ask.0) / 1000);
                }
                if f.bought.0 > 0 {
                    prop_assert!(price.0 + fee.0 <= bid.0);
                    // Pays at most its bid (rounded up) under either rule.
                    prop_assert!(u128::from(f.paid.0) <= (u128::from(f.bought.0) * u128::from(bid.0)).div_ceil(1000));
                }
                sold += f.sold.0;
                bought += f.bought.0;
                earned += u128::from(f.earned.0);
                paid += u128::from(f.paid.0);
            }
            // Energy sold is energy bought; money in is money out plus what the market keeps.
            prop_assert_eq!(sold, bought);
            prop_assert_eq!(sold, c.traded.0);
            prop_assert_eq!(paid, earned + u128::from(c.market_income.0));
            // At the price, no willing seller and willing buyer are both left over: no other
            // allocation trades more.
            let filled = |m: [u8; 32]| c.fills.iter().find(|f| f.member == m).copied();
            let supply: u64 = book
                .iter()
                .filter(|o| o.export.0 > 0 && o.sell_at_least.max(GRID.feed_in) <= price)
                .map(|o| o.export.0 - filled(o.member).map_or(0, |f| f.sold.0))
                .sum();
            let demand: u64 = book
                .iter()
                .filter(|o| o.import.0 > 0 && price.0 + fee.0 <= o.buy_at_most.min(GRID.retail).0)
                .map(|o| o.import.0 - filled(o.member).map_or(0, |f| f.bought.0))
                .sum();
            prop_assert!(supply == 0 || demand == 0, "{supply} Wh offered and {demand} Wh wanted at {price}");
        }
    }

    const VECTORS: &str = "../../specs/vectors/clearing.json";

    #[test]
    fn the_clearing_vectors_are_what_the_rule_gives() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(VECTORS);
        let published = std::fs::read_to_string(&path).expect("specs/vectors/clearing.json");
        assert_eq!(
            published,
            vectors_json(),
            "the clearing changed: regenerate with `cargo test -p gridchan-channel clearing_vectors -- --ignored` only if the spec changed too"
        );
    }

    /// Writes `specs/vectors/clearing.json`.
    #[test]
    #[ignore]
    fn write_clearing_vectors() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(VECTORS);
        std::fs::write(path, vectors_json()).unwrap();
    }
}
