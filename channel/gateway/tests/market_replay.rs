//! A day of the shipped data through a neighbourhood market: a market node's daemon and two
//! homes' daemons (home-03 with solar, home-02 without) over QUIC and SQLite, on a local ledger
//! and on the adjudicator contract on anvil. The homes join the market; every interval each
//! orders what its meter measured; every settled interval is checked against the CSV files
//! (the energy is the smaller of the seller's export and the buyer's import, the price the
//! midpoint of the grid's prices, rounded as the rule says), and after the homes leave, the
//! ledger pays out exactly the final states.

mod common;

use std::time::Duration;

use gridchan_channel::market::MarketTerms;
use gridchan_channel::{Amount, Phase};
use gridchan_gateway::market::{join, Join};

use common::{csv_rows, until, view, Chain, Replay, FIRST_ROW, INTERVAL};

/// A 15-minute interval every 300 ms: a debug build meets the book's deadline.
const SPEEDUP: u32 = 3_000;
const INTERVALS: u64 = 96;

/// The harness's market, its books closing half into the next interval.
fn terms() -> MarketTerms {
    MarketTerms {
        market: [0x4e; 32],
        deadline_permille: 500,
        ..gridchan_harness::market::terms()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_through_the_market_settles_to_the_watt_hour_on_a_local_ledger() {
    let _alone = common::one_replay_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::local(dir.path(), &[1, 2, 3], 20);
    a_day(dir.path(), &chain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_through_the_market_settles_to_the_watt_hour_on_the_evm_adjudicator() {
    let _alone = common::one_replay_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::evm(&[1, 2, 3], Some(1)).await;
    a_day(dir.path(), &chain).await;
}

async fn a_day(dir: &std::path::Path, chain: &Chain) {
    let replay = Replay::summer(dir, chain, SPEEDUP, Some(INTERVALS));
    let anchor = replay.anchor;
    let market = replay.market_node(3, terms());
    let seller = replay.home(1, "home-03", vec![], vec![]);
    let buyer = replay.home(2, "home-02", vec![], vec![]);
    let em = market.engine.clone();
    let mut channels = Vec::new();
    for (n, home) in [&seller, &buyer].into_iter().enumerate() {
        let (id, got) = join(
            &home.engine,
            Join {
                market: em.address.clone(),
                deposit: Amount(20_000_000),
                market_deposit: Amount(20_000_000),
                interval_seconds: INTERVAL,
                challenge_window_blocks: 10,
                funding_window_blocks: 200,
                opened_at: anchor,
                nonce: [n as u8 + 7; 32],
                meter: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(got, terms());
        channels.push(id);
    }
    let (es, eb) = (seller.engine.clone(), buyer.engine.clone());
    let last = anchor.0 + INTERVALS;
    // Trading ends with the readings; then both leave the market.
    until("the day played", &[&es, &eb, &em], 180, || {
        let clock = replay.clock.clone();
        async move { clock.now_ms() / 1000 / u64::from(INTERVAL) > last + 2 }
    })
    .await;
    for (home, channel) in [(&es, channels[0]), (&eb, channels[1])] {
        assert_eq!(
            gridchan_gateway::market::leave(home, None).await.unwrap(),
            vec![channel]
        );
    }
    until(
        "both market channels paid out",
        &[&es, &eb, &em],
        120,
        || {
            let (em, channels) = (em.clone(), channels.clone());
            async move {
                for c in &channels {
                    if !view(&em, *c)
                        .await
                        .is_some_and(|v| v.phase == Phase::Concluded)
                    {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
    // Every settled interval, against the CSV files.
    let (sells, buys) = (csv_rows("home-03"), csv_rows("home-02"));
    let sold = es.recent_trades(channels[0], 10_000).await.unwrap();
    let bought = eb.recent_trades(channels[1], 10_000).await.unwrap();
    let price = 190_000; // the midpoint of 0.08 and 0.30
    let mut possible = 0;
    let mut settled = 0;
    for i in anchor.0 + 1..=last {
        let row = FIRST_ROW + (i - anchor.0) as usize;
        // A net meter measures one way an interval: the seller's export, the buyer's import.
        let expected = if sells[row].1 > 0 && buys[row].0 > 0 {
            sells[row].1.min(buys[row].0)
        } else {
            0
        };
        let s = sold.iter().find(|t| t.interval == i);
        let b = bought.iter().find(|t| t.interval == i);
        if expected > 0 {
            possible += 1;
        }
        match (s, b) {
            (Some(s), Some(b)) => {
                settled += 1;
                assert_eq!(s.energy_wh, expected, "interval {i} (row {row})");
                assert_eq!(b.energy_wh, expected, "interval {i}");
                assert_eq!(
                    s.amount,
                    expected * price / 1000,
                    "the seller's earnings, rounded down"
                );
                assert_eq!(
                    b.amount,
                    (expected * price).div_ceil(1000),
                    "the buyer's payment, rounded up"
                );
            }
            (None, None) => {}
            other => panic!("interval {i}: one side settled and not the other: {other:?}"),
        }
    }
    assert!(
        possible > 20,
        "a summer day has solar: {possible} intervals to trade"
    );
    assert!(
        settled * 10 >= possible * 9,
        "{settled} of {possible} possible intervals settled (members are left out only when late)"
    );
    // Both ends agree; the market node's books balance to the micro-unit (its income is the
    // rounding: what buyers paid above what the seller earned).
    let mut market_net: i128 = 0;
    for (home, c) in [(&es, channels[0]), (&eb, channels[1])] {
        let ours = view(home, c).await.unwrap().current.unwrap();
        let theirs = view(&em, c).await.unwrap().current.unwrap();
        assert_eq!(ours.state(), theirs.state());
        market_net += i128::from(theirs.state().balance_b.0) - 20_000_000;
    }
    let earned: u64 = sold.iter().map(|t| t.amount).sum();
    let paid: u64 = bought.iter().map(|t| t.amount).sum();
    assert_eq!(market_net, i128::from(paid) - i128::from(earned));
    assert!(
        paid - earned <= settled,
        "at most one micro-unit of rounding an interval"
    );
    // The ledger paid the final states out.
    let client = chain.client(4);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = client.channel(&channels[0]).await.unwrap();
        if s.is_some_and(|c| c.claimable == [Amount(0), Amount(0)]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not withdrawn");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
