//! Two homes from the shipped data set trade a summer day through the protocol core, with a
//! time-of-use tariff; every number is checked against an independent computation from the
//! CSV files.

use gridchan_channel::{Amount, IntervalIndex, PricePerKwh, Tariff, TimeOfUse, WattHours};
use gridchan_harness::{Pair, PairConfig, Side, Trade};
use gridchan_tests::load_home;

fn tariff() -> TimeOfUse {
    // Between a 0.08 feed-in tariff and a 0.30 retail price; a 17:00-21:00 local peak.
    let mut weekday = [PricePerKwh(150_000); 24];
    for p in &mut weekday[17..21] {
        *p = PricePerKwh(240_000);
    }
    TimeOfUse {
        utc_offset_minutes: -300,
        weekday,
        weekend: [PricePerKwh(130_000); 24],
    }
}

#[test]
fn two_homes_trade_a_summer_day() {
    // home-03 (7.5 kWp) and home-05 (9 kWp) both have PV, so energy flows both ways.
    let a = load_home("home-03");
    let b = load_home("home-05");
    // Monday 2025-07-14: the 3rd week starts at row 2 * 672.
    let day = 2 * 672..2 * 672 + 96;
    let first = IntervalIndex(a[day.start].start / 900);
    let config = PairConfig {
        tariff: Tariff::TimeOfUse(Box::new(tariff())),
        opened_at: IntervalIndex(first.0 - 1),
        ..PairConfig::default()
    };
    let mut pair = Pair::new(config);
    let tou = tariff();
    let (mut a_to_b, mut b_to_a, mut paid_to_a) = (0u64, 0u64, 0i64);
    for i in day {
        let (ra, rb) = (a[i], b[i]);
        assert_eq!(ra.start, rb.start);
        let interval = IntervalIndex(ra.start / 900);
        // The neighbour takes what it imports, up to what the other exports.
        let (seller, energy) = if ra.export_wh > 0 && rb.import_wh > 0 {
            (Side::A, ra.export_wh.min(rb.import_wh))
        } else if rb.export_wh > 0 && ra.import_wh > 0 {
            (Side::B, rb.export_wh.min(ra.import_wh))
        } else {
            continue;
        };
        let local = ra.start as i64 - 5 * 3_600;
        let local_hour = (local.rem_euclid(86_400) / 3_600) as usize;
        // 1970-01-01 was a Thursday (index 3, Monday = 0).
        let weekend = (local.div_euclid(86_400) + 3).rem_euclid(7) >= 5;
        let table = if weekend { &tou.weekend } else { &tou.weekday };
        let price = table[local_hour].0 as i64;
        let money = energy as i64 * price / 1000;
        match seller {
            Side::A => {
                a_to_b += energy;
                paid_to_a += money;
            }
            Side::B => {
                b_to_a += energy;
                paid_to_a -= money;
            }
        }
        pair.trade(Trade::agreed(interval, seller, WattHours(energy)));
        pair.drive();
    }
    assert!(a_to_b > 0 && b_to_a > 0, "energy flowed both ways");
    let s = pair.current(Side::A).state().clone();
    assert_eq!(&s, pair.current(Side::B).state());
    assert_eq!(s.energy_a_to_b, WattHours(a_to_b));
    assert_eq!(s.energy_b_to_a, WattHours(b_to_a));
    assert_eq!(
        s.balance_a,
        Amount((50_000_000 + paid_to_a) as u64),
        "money moved at the time-of-use price, rounded down per interval"
    );
    assert!(pair.violations().is_empty(), "{:?}", pair.violations());
}
