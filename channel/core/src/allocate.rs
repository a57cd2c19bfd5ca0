//! Splitting one gateway's metered energy across its channels.
//!
//! Each interval, every gateway tells each neighbour its meter's totals (round 1), then, once it
//! holds its neighbours' totals, tells each neighbour its [`Shares`] with it (round 2): how much
//! of its export it offers that neighbour and how much of its import it would take from it.
//! Both ends of a channel then hold the same two pairs of shares and compute the same flow:
//!
//! ```text
//! flow(S -> B) = min(sell share of S for B, buy share of B from S)
//! ```
//!
//! A gateway's shares are its [`water_fill`] of its own export over its neighbours' imports
//! (and of its own import over their exports): every neighbour gets what it asked for or an
//! equal part of what is left, whichever is less, the smallest asks served first. The sell
//! shares never add up to more than the export, the buy shares never to more than the import,
//! so summed over its channels a seller never delivers more than its meter exported and a
//! buyer never takes more than it imported, whatever its neighbours say. Energy nobody takes
//! goes to the grid. Integer watt-hours, rounded down, ties broken by the neighbour's key.

use crate::crypto::NodeId;
use crate::types::WattHours;

/// One gateway's round-2 shares with one neighbour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shares {
    /// What of its export it offers to deliver to the neighbour.
    pub sell: WattHours,
    /// What of its import it would take from the neighbour.
    pub buy: WattHours,
}

/// `amount` divided among `asks` (each neighbour's key and what it could take): the smallest
/// asks first (ties by key), each given `min(ask, floor(left / neighbours not yet served))`.
/// The result is in the order of `asks`; it never adds up to more than `amount`, gives nobody
/// more than its ask, and gives all of `amount` when the asks add up to at least that.
pub fn water_fill(amount: WattHours, asks: &[(NodeId, WattHours)]) -> Vec<WattHours> {
    let mut order: Vec<usize> = (0..asks.len()).collect();
    order.sort_by_cached_key(|&i| (asks[i].1, asks[i].0.to_bytes()));
    let mut out = vec![WattHours(0); asks.len()];
    let mut left = amount.0;
    for (served, &i) in order.iter().enumerate() {
        let part = left / (order.len() - served) as u64;
        let given = asks[i].1 .0.min(part);
        out[i] = WattHours(given);
        left -= given;
    }
    out
}

/// A gateway's shares with each of `neighbours` (key, import, export), from its own meter's
/// `import` and `export`, in the order of `neighbours`.
pub fn shares(
    import: WattHours,
    export: WattHours,
    neighbours: &[(NodeId, WattHours, WattHours)],
) -> Vec<Shares> {
    let their_imports: Vec<(NodeId, WattHours)> =
        neighbours.iter().map(|&(n, i, _)| (n, i)).collect();
    let their_exports: Vec<(NodeId, WattHours)> =
        neighbours.iter().map(|&(n, _, e)| (n, e)).collect();
    let sell = water_fill(export, &their_imports);
    let buy = water_fill(import, &their_exports);
    sell.into_iter()
        .zip(buy)
        .map(|(sell, buy)| Shares { sell, buy })
        .collect()
}

/// The energy a seller delivers to a buyer in the interval, as both compute it from the
/// seller's shares for the buyer and the buyer's shares for the seller.
pub fn flow(seller: &Shares, buyer: &Shares) -> WattHours {
    WattHours(seller.sell.0.min(buyer.buy.0))
}

/// The published vectors (`specs/vectors/allocation.json`): an amount and the neighbours' asks
/// in, each neighbour's share out, as pretty JSON with every number a decimal string and every
/// key hex.
pub fn vectors_json() -> String {
    let key = |b: u8| {
        crate::crypto::Signer::new(&[b; 32], &[0; 32])
            .expect("a valid key")
            .id()
    };
    // (name, amount, asks as (key seed, ask))
    type Case = (&'static str, u64, Vec<(u8, u64)>);
    let cases: Vec<Case> = vec![
        ("nobody asking", 300, vec![]),
        ("one neighbour asks less than there is", 300, vec![(1, 120)]),
        (
            "a small ask served first, the rest shared",
            300,
            vec![(1, 500), (2, 50), (3, 500)],
        ),
        (
            "everybody gets its ask",
            2_000,
            vec![(1, 500), (2, 50), (3, 500)],
        ),
        (
            "equal asks: the remainder to the larger keys",
            10,
            vec![(1, 100), (2, 100), (3, 100)],
        ),
        ("nothing to give", 0, vec![(1, 100), (2, 7)]),
        (
            "five neighbours, mixed asks",
            1_234,
            vec![(4, 1_000), (5, 1), (6, 333), (7, 0), (8, 333)],
        ),
    ];
    let cases: Vec<serde_json::Value> = cases
        .into_iter()
        .map(|(name, amount, asks)| {
            let keyed: Vec<(NodeId, WattHours)> =
                asks.iter().map(|&(k, a)| (key(k), WattHours(a))).collect();
            let given = water_fill(WattHours(amount), &keyed);
            serde_json::json!({
                "name": name,
                "amount": amount.to_string(),
                "asks": keyed
                    .iter()
                    .map(|(k, a)| serde_json::json!({ "key": hex::encode(k.to_bytes()), "ask": a.0.to_string() }))
                    .collect::<Vec<_>>(),
                "shares": given.iter().map(|g| g.0.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::to_string_pretty(&cases).expect("json") + "\n"
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::crypto::Signer;

    fn id(b: u8) -> NodeId {
        Signer::new(&[b.max(1); 32], &[0; 32]).unwrap().id()
    }

    fn wh(v: &[u64]) -> Vec<WattHours> {
        v.iter().map(|&x| WattHours(x)).collect()
    }

    #[test]
    fn the_smallest_asks_are_served_first_and_the_rest_shared() {
        let (a, b, c) = (id(1), id(2), id(3));
        // 300 over asks of 50, 500 and 500: 50, then 125 each.
        let asks = [(a, WattHours(500)), (b, WattHours(50)), (c, WattHours(500))];
        assert_eq!(water_fill(WattHours(300), &asks), wh(&[125, 50, 125]));
        // Enough for everybody: each gets its ask, the rest is left.
        assert_eq!(water_fill(WattHours(2_000), &asks), wh(&[500, 50, 500]));
        // Nothing to give, or nobody asking.
        assert_eq!(water_fill(WattHours(0), &asks), wh(&[0, 0, 0]));
        assert_eq!(water_fill(WattHours(10), &[]), wh(&[]));
    }

    #[test]
    fn the_remainder_goes_to_the_larger_keys_among_equal_asks() {
        let mut keys = [id(1), id(2), id(3)];
        keys.sort();
        let asks: Vec<_> = keys.iter().map(|&k| (k, WattHours(100))).collect();
        // 10 over three equal asks: 3, 3, 4 in key order, whatever order they come in.
        assert_eq!(water_fill(WattHours(10), &asks), wh(&[3, 3, 4]));
        let reversed: Vec<_> = asks.iter().rev().copied().collect();
        assert_eq!(water_fill(WattHours(10), &reversed), wh(&[4, 3, 3]));
    }

    /// The equal split this rule replaced gave a seller's export half to a neighbour that
    /// needed little: 300 over buyers of 50 and 500 traded 200; the shares trade 300.
    #[test]
    fn a_seller_gives_what_a_small_buyer_leaves_to_the_large_one() {
        let (s, small, large) = (id(1), id(2), id(3));
        let sv = shares(
            WattHours(0),
            WattHours(300),
            &[
                (small, WattHours(50), WattHours(0)),
                (large, WattHours(500), WattHours(0)),
            ],
        );
        let small_buys = shares(
            WattHours(50),
            WattHours(0),
            &[(s, WattHours(0), WattHours(300))],
        );
        let large_buys = shares(
            WattHours(500),
            WattHours(0),
            &[(s, WattHours(0), WattHours(300))],
        );
        assert_eq!(flow(&sv[0], &small_buys[0]), WattHours(50));
        assert_eq!(flow(&sv[1], &large_buys[0]), WattHours(250));
    }

    const VECTORS: &str = "../../specs/vectors/allocation.json";

    #[test]
    fn the_allocation_vectors_are_what_the_rule_gives() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(VECTORS);
        let published = std::fs::read_to_string(&path).expect("specs/vectors/allocation.json");
        assert_eq!(
            published,
            vectors_json(),
            "the allocation changed: regenerate with `cargo test -p gridchan-channel allocation_vectors -- --ignored` only if the spec changed too"
        );
    }

    /// Writes `specs/vectors/allocation.json`.
    #[test]
    #[ignore]
    fn write_allocation_vectors() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(VECTORS);
        std::fs::write(path, vectors_json()).unwrap();
    }

    proptest! {
        /// Water-filling never gives more than there is or than anybody asked, gives all of
        /// it when the asks cover it, and does not depend on the order of the asks.
        #[test]
        fn water_filling_is_bounded_complete_and_order_free(
            amount in 0u64..10_000,
            asks in prop::collection::vec(0u64..5_000, 0..10),
            rotate in 0usize..10,
        ) {
            let keyed: Vec<(NodeId, WattHours)> =
                asks.iter().enumerate().map(|(i, &a)| (id(i as u8 + 1), WattHours(a))).collect();
            let given = water_fill(WattHours(amount), &keyed);
            let total: u64 = given.iter().map(|g| g.0).sum();
            prop_assert!(total <= amount);
            for (g, (_, a)) in given.iter().zip(&keyed) {
                prop_assert!(g.0 <= a.0);
            }
            prop_assert_eq!(total, amount.min(asks.iter().sum()));
            let mut turned = keyed.clone();
            if !turned.is_empty() {
                let k = rotate % turned.len();
                turned.rotate_left(k);
                let again = water_fill(WattHours(amount), &turned);
                for (i, g) in again.iter().enumerate() {
                    let original = (i + k) % keyed.len();
                    prop_assert_eq!(*g, given[original]);
                }
            }
        }

        /// In any neighbourhood (a random graph of homes with random meter totals, a home
        /// may both import and export), no home delivers more than it exported or takes more
        /// than it imported, and both ends of every channel compute the same flows.
        #[test]
        fn nobody_sells_or_buys_beyond_its_meter(
            meters in prop::collection::vec((0u64..5_000, 0u64..5_000), 2..12),
            edges in prop::collection::vec((0usize..12, 0usize..12), 0..40),
        ) {
            let n = meters.len();
            let keys: Vec<NodeId> = (0..n).map(|i| id(i as u8 + 1)).collect();
            let mut adj = vec![Vec::new(); n];
            for (a, b) in edges {
                let (a, b) = (a % n, b % n);
                if a != b && !adj[a].contains(&b) {
                    adj[a].push(b);
                    adj[b].push(a);
                }
            }
            // Each home's shares with each of its neighbours, by neighbour.
            let share: Vec<Vec<Shares>> = (0..n)
                .map(|i| {
                    let ns: Vec<_> = adj[i]
                        .iter()
                        .map(|&j| (keys[j], WattHours(meters[j].0), WattHours(meters[j].1)))
                        .collect();
                    shares(WattHours(meters[i].0), WattHours(meters[i].1), &ns)
                })
                .collect();
            let with = |i: usize, j: usize| share[i][adj[i].iter().position(|&x| x == j).unwrap()];
            for i in 0..n {
                let sold: u64 = adj[i].iter().map(|&j| flow(&with(i, j), &with(j, i)).0).sum();
                let bought: u64 = adj[i].iter().map(|&j| flow(&with(j, i), &with(i, j)).0).sum();
                prop_assert!(sold <= meters[i].1, "home {i} sold {sold} of {}", meters[i].1);
                prop_assert!(bought <= meters[i].0, "home {i} bought {bought} of {}", meters[i].0);
            }
        }

        /// A lone seller and a lone buyer trade all they can: min(export, import).
        #[test]
        fn two_homes_trade_everything_they_can(export in 0u64..10_000, import in 0u64..10_000) {
            let (s, b) = (id(1), id(2));
            let sv = shares(WattHours(0), WattHours(export), &[(b, WattHours(import), WattHours(0))]);
            let bv = shares(WattHours(import), WattHours(0), &[(s, WattHours(0), WattHours(export))]);
            prop_assert_eq!(flow(&sv[0], &bv[0]).0, export.min(import));
        }
    }
}
