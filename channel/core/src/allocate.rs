//! Splitting one gateway's metered energy across its channels.
//!
//! Each interval, every gateway tells each neighbour its own [`Announcement`]: what its meter
//! exported and imported, and with how many neighbours it could trade in that direction. Both
//! ends of a channel then compute the same flow with [`pairwise_flow`]:
//!
//! ```text
//! flow(S -> B) = min( floor(export_S / sellers_partners_S), floor(import_B / buyers_partners_B) )
//! ```
//!
//! where `sellers_partners_S` is the number of S's neighbours that imported in the interval and
//! `buyers_partners_B` the number of B's neighbours that exported. Summed over B's partners, S
//! never delivers more than `export_S`; summed over S's partners, B never takes more than
//! `import_B`. Energy nobody takes goes to the grid as before. Integer watt-hours, rounded down.

use crate::types::WattHours;

/// One gateway's meter totals for an interval, as told to its neighbours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Announcement {
    pub import: WattHours,
    pub export: WattHours,
    /// Neighbours on the other side of the market in this interval: when exporting, how many
    /// neighbours imported; when importing, how many exported.
    pub partners: u32,
}

/// The energy `seller` delivers to `buyer` in the interval, as both compute it.
pub fn pairwise_flow(seller: &Announcement, buyer: &Announcement) -> WattHours {
    if seller.export.0 == 0 || buyer.import.0 == 0 || seller.partners == 0 || buyer.partners == 0 {
        return WattHours(0);
    }
    let offer = seller.export.0 / u64::from(seller.partners);
    let take = buyer.import.0 / u64::from(buyer.partners);
    WattHours(offer.min(take))
}

/// How many of `neighbours` are on the other side of the market from `own` totals.
pub fn partners(
    own_import: WattHours,
    own_export: WattHours,
    neighbours: &[(WattHours, WattHours)],
) -> u32 {
    let count = |f: &dyn Fn(&(WattHours, WattHours)) -> bool| {
        neighbours.iter().filter(|n| f(n)).count() as u32
    };
    if own_export.0 > 0 {
        count(&|(import, _)| import.0 > 0)
    } else if own_import.0 > 0 {
        count(&|(_, export)| export.0 > 0)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ann(import: u64, export: u64, partners: u32) -> Announcement {
        Announcement {
            import: WattHours(import),
            export: WattHours(export),
            partners,
        }
    }

    #[test]
    fn a_seller_splits_its_export_and_a_buyer_its_import() {
        // S exports 300 to two importing neighbours; B imports 500 from one exporter.
        assert_eq!(
            pairwise_flow(&ann(0, 300, 2), &ann(500, 0, 1)),
            WattHours(150)
        );
        // B imports only 100: it takes 100.
        assert_eq!(
            pairwise_flow(&ann(0, 300, 2), &ann(100, 0, 1)),
            WattHours(100)
        );
        assert_eq!(pairwise_flow(&ann(0, 0, 2), &ann(100, 0, 1)), WattHours(0));
    }

    #[test]
    fn partners_are_counted_on_the_other_side() {
        let n = [
            (WattHours(10), WattHours(0)),
            (WattHours(0), WattHours(5)),
            (WattHours(3), WattHours(0)),
        ];
        assert_eq!(partners(WattHours(0), WattHours(50), &n), 2);
        assert_eq!(partners(WattHours(50), WattHours(0), &n), 1);
        assert_eq!(partners(WattHours(0), WattHours(0), &n), 0);
    }

    proptest! {
        /// In any neighbourhood (a random graph of homes with random meter totals), no home
        /// delivers more than it exported or takes more than it imported.
        #[test]
        fn nobody_sells_or_buys_beyond_its_meter(
            homes in prop::collection::vec((0u64..5_000, 0u64..5_000), 2..12),
            edges in prop::collection::vec((0usize..12, 0usize..12), 0..40),
        ) {
            let n = homes.len();
            // Net metering: a home either imports or exports in an interval.
            let meters: Vec<(WattHours, WattHours)> = homes
                .iter()
                .map(|&(a, b)| if a >= b { (WattHours(a - b), WattHours(0)) } else { (WattHours(0), WattHours(b - a)) })
                .collect();
            let mut adj = vec![Vec::new(); n];
            for (a, b) in edges {
                let (a, b) = (a % n, b % n);
                if a != b && !adj[a].contains(&b) {
                    adj[a].push(b);
                    adj[b].push(a);
                }
            }
            let anns: Vec<Announcement> = (0..n)
                .map(|i| {
                    let ns: Vec<_> = adj[i].iter().map(|&j| meters[j]).collect();
                    Announcement { import: meters[i].0, export: meters[i].1, partners: partners(meters[i].0, meters[i].1, &ns) }
                })
                .collect();
            for i in 0..n {
                let sold: u64 = adj[i].iter().map(|&j| pairwise_flow(&anns[i], &anns[j]).0).sum();
                let bought: u64 = adj[i].iter().map(|&j| pairwise_flow(&anns[j], &anns[i]).0).sum();
                prop_assert!(sold <= meters[i].1 .0, "home {i} sold {sold} of {}", meters[i].1 .0);
                prop_assert!(bought <= meters[i].0 .0, "home {i} bought {bought} of {}", meters[i].0 .0);
                prop_assert!(sold == 0 || bought == 0);
            }
        }
    }
}
