//! 200 metering intervals replayed from the shipped data set (home-03 with solar selling to
//! home-02 without), on a clock sped up 18,000 times (a 15-minute interval every 50 ms), through
//! two daemons and a ledger. Every settled interval is checked against the CSV files, and after
//! a cooperative close both sides and the ledger hold exactly the expected money. The same test
//! runs on a local ledger node and on the adjudicator contract on anvil with 1-second blocks.

mod common;

use std::time::Duration;

use gridchan_channel::{Amount, Command, Phase};

use common::{csv_rows, key, until, view, Chain, Replay, FIRST_ROW, FUNDS};

const SPEEDUP: u32 = 18_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_intervals_from_csv_settle_to_the_watt_hour_and_the_micro_unit() {
    let _alone = common::one_replay_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::local(dir.path(), &[1, 2], 20);
    two_hundred_intervals(dir.path(), &chain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_intervals_settle_on_the_evm_adjudicator_with_one_second_blocks() {
    let _alone = common::one_replay_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::evm(&[1, 2], Some(1)).await;
    two_hundred_intervals(dir.path(), &chain).await;
}

async fn two_hundred_intervals(dir: &std::path::Path, chain: &Chain) {
    let (ka, kb) = (key(1), key(2));
    // Simulated time starts at Monday 00:00 of the data's summer week.
    let replay = Replay::summer(dir, chain, SPEEDUP, None);
    let anchor = replay.anchor;
    let b = replay.home(2, "home-02", vec![], vec![]);
    let a = replay.home(1, "home-03", vec![b.engine.address.clone()], vec![]);
    let (ea, eb) = (a.engine.clone(), b.engine.clone());
    let price = 150_000; // 0.15 per kWh
    let channel = common::open_flat(&ea, 2, price, anchor, 5).await;
    // Readings of intervals before the channel opens wait in the core and settle after.
    let target = anchor.0 + 200;
    until("200 intervals settled", &[&ea], 120, || {
        let ea = ea.clone();
        async move {
            view(&ea, channel)
                .await
                .and_then(|c| c.current)
                .is_some_and(|s| s.state().last_interval.0 >= target)
        }
    })
    .await;
    ea.command(Command::Close(channel)).await.unwrap();
    until("paid out", &[&ea], 120, || {
        let (ea, eb) = (ea.clone(), eb.clone());
        async move {
            view(&ea, channel)
                .await
                .is_some_and(|c| c.phase == Phase::Concluded)
                && view(&eb, channel)
                    .await
                    .is_some_and(|c| c.phase == Phase::Concluded)
        }
    })
    .await;

    // The expected trades, straight from the CSV files.
    let (seller, buyer) = (csv_rows("home-03"), csv_rows("home-02"));
    let final_state = view(&ea, channel).await.unwrap().current.unwrap();
    let last = final_state.state().last_interval.0;
    let trades = ea.recent_trades(channel, 10_000).await.unwrap();
    let mut energy = 0;
    let mut money = 0;
    for t in &trades {
        let row = FIRST_ROW + (t.interval - anchor.0) as usize;
        let expected = seller[row].1.min(buyer[row].0);
        assert_eq!(t.energy_wh, expected, "interval {} (row {row})", t.interval);
        assert_eq!(t.amount, expected * price / 1000, "interval {}", t.interval);
        energy += t.energy_wh;
        money += t.amount;
    }
    // No interval with a possible trade was skipped.
    let traded: std::collections::HashSet<u64> = trades.iter().map(|t| t.interval).collect();
    for i in anchor.0 + 1..=last {
        let row = FIRST_ROW + (i - anchor.0) as usize;
        if seller[row].1.min(buyer[row].0) > 0 {
            assert!(
                traded.contains(&i),
                "interval {i} (row {row}) was not settled"
            );
        }
    }
    assert!(
        energy > 5_000,
        "a summer week has solar: {energy} Wh traded"
    );
    let s = final_state.state();
    assert_eq!(s.energy_a_to_b.0, energy);
    assert_eq!(s.energy_b_to_a.0, 0);
    assert_eq!(s.balance_a.0, 20_000_000 + money);
    assert_eq!(s.balance_b.0, 20_000_000 - money);
    assert_eq!(
        Some(&final_state),
        view(&eb, channel).await.unwrap().current.as_ref()
    );
    // The ledger paid exactly that, and both withdrew it.
    let client = chain.client(3);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let kept = FUNDS - 20_000_000;
    loop {
        let a_bal = client.account(&ka.id()).await.unwrap().balance.0;
        let b_bal = client.account(&kb.id()).await.unwrap().balance.0;
        if a_bal == kept + s.balance_a.0 && b_bal == kept + s.balance_b.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ledger balances {a_bal} {b_bal}"
        );
        client
            .wait_above(client.height().await.unwrap(), Duration::from_secs(5))
            .await
            .unwrap();
    }
    assert_eq!(chain.supply().await, 2 * u128::from(FUNDS));
    eprintln!(
        "{} intervals, {} trades, {energy} Wh, {} paid",
        last - anchor.0,
        trades.len(),
        Amount(money)
    );
}
