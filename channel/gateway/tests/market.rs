//! The neighbourhood market over QUIC and SQLite: a market node's engine and its members'
//! engines (`specs/market.md`). Members join through the market's terms, enrol, order after
//! each interval; the market node closes each book at its deadline; every member checks it and
//! settles its part through its channel; a staged wrong clearing is refused by every member.

mod common;

use std::time::Duration;

use common::{key, until};
use gridchan_channel::market::MarketTerms;
use gridchan_channel::metering::MeterReading;
use gridchan_channel::{Amount, IntervalIndex, LedgerEvent, Phase, Policy, WattHours};
use gridchan_gateway::clock::SimClock;
use gridchan_gateway::engine::{EngineHandle, MarketReport, Report, Stage};
use gridchan_gateway::market::{join, Join};

const INTERVAL: u32 = 900;
/// Real milliseconds per interval.
const INTERVAL_MS: u64 = 300;

/// The harness's market, its books closing a quarter into the next interval.
fn terms() -> MarketTerms {
    MarketTerms {
        deadline_permille: 250,
        ..gridchan_harness::market::terms()
    }
}

fn spawn(dir: &std::path::Path, k: u8, clock: &SimClock, run: bool) -> EngineHandle {
    let policy = Policy {
        force_close_after_ms: None,
        reading_wait_ms: INTERVAL_MS * 4,
        ..Policy::accepting_anyone()
    };
    let path = dir.join(format!("gateway-{k}.sqlite"));
    gridchan_fixtures::market_engine(&path, key(k), policy, clock, run.then(terms))
}

/// Every market report of `engine`, collected in the background.
fn collect(engine: &EngineHandle) -> std::sync::Arc<std::sync::Mutex<Vec<MarketReport>>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut reports = engine.reports();
    let out = seen.clone();
    tokio::spawn(async move {
        loop {
            match reports.recv().await {
                Ok(Report::Market(r)) => out.lock().unwrap().push(r),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_settle_every_book_they_checked_and_refuse_a_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let start = 1_752_451_200_000; // a Monday, 00:00 UTC
    let clock = SimClock::held(start, (900_000 / INTERVAL_MS) as u32);
    let market = spawn(dir.path(), 9, &clock, true);
    let members: Vec<EngineHandle> = (1..=3)
        .map(|k| spawn(dir.path(), k, &clock, false))
        .collect();
    let market_log = collect(&market);
    let logs: Vec<_> = members.iter().map(collect).collect();
    let opened_at = IntervalIndex(start / 1000 / u64::from(INTERVAL));
    let mut channels = Vec::new();
    for (n, m) in members.iter().enumerate() {
        let (id, got) = join(
            m,
            Join {
                market: market.address.clone(),
                deposit: Amount(20_000_000),
                market_deposit: Amount(10_000_000),
                interval_seconds: INTERVAL,
                challenge_window_blocks: 20,
                funding_window_blocks: 20,
                opened_at,
                nonce: [n as u8; 32],
                meter: None,
            },
        )
        .await
        .expect("joins");
        assert_eq!(got, terms(), "the market's terms, as it sent them");
        channels.push(id);
    }
    let all: Vec<&EngineHandle> = std::iter::once(&market).chain(members.iter()).collect();
    until(
        "every market channel awaits funding at both ends",
        &all,
        30,
        || {
            let market = market.clone();
            let members = members.clone();
            let channels = channels.clone();
            async move {
                for (c, m) in channels.iter().zip(&members) {
                    for h in [&market, m] {
                        if !h
                            .channel(*c)
                            .await
                            .unwrap()
                            .is_some_and(|v| v.phase == Phase::Funding)
                        {
                            return false;
                        }
                    }
                }
                true
            }
        },
    )
    .await;
    for (c, m) in channels.iter().zip(&members) {
        for h in [m, &market] {
            h.ledger_event(*c, LedgerEvent::Funded).await.unwrap();
        }
    }
    clock.start();
    // Three intervals: home 1 exports, homes 2 and 3 import. The meter of each is handed in at
    // the interval's end, as the daemon's metering job does.
    let readings = [(0, 600), (400, 0), (300, 0)];
    let first = IntervalIndex(opened_at.0 + 1);
    for k in 0..3u64 {
        let interval = IntervalIndex(first.0 + k);
        let ends = (interval.0 + 1) * u64::from(INTERVAL) * 1000;
        tokio::time::sleep(clock.until(ends) + Duration::from_millis(5)).await;
        if k == 1 {
            market.stage(Stage::WrongClearing).await.unwrap();
        }
        for (m, (import, export)) in members.iter().zip(readings) {
            let own = MeterReading {
                import: WattHours(import),
                export: WattHours(export),
            };
            m.meter(interval, own, Duration::from_millis(1))
                .await
                .unwrap();
        }
    }
    let last = IntervalIndex(first.0 + 2);
    until(
        "the last book settled at both ends of every channel",
        &all,
        30,
        || {
            let members = members.clone();
            let market = market.clone();
            let channels = channels.clone();
            async move {
                for (m, c) in members.iter().zip(&channels) {
                    let ours = m.channel(*c).await.unwrap().unwrap().current.unwrap();
                    let theirs = market.channel(*c).await.unwrap().unwrap().current.unwrap();
                    if ours.state().last_interval != last || ours.state() != theirs.state() {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
    let books: Vec<MarketReport> = market_log.lock().unwrap().clone();
    let closed: Vec<(IntervalIndex, WattHours)> = books
        .iter()
        .filter_map(|r| match r {
            MarketReport::BookClosed {
                interval, traded, ..
            } => Some((*interval, *traded)),
            _ => None,
        })
        .collect();
    assert!(
        closed.contains(&(first, WattHours(600))),
        "the pooled bound traded: {closed:?}"
    );
    // The wrong book of the second interval: every member refused it; nothing settled there.
    let wrong = IntervalIndex(first.0 + 1);
    for (i, log) in logs.iter().enumerate() {
        let log = log.lock().unwrap();
        assert!(
            log.iter().any(|r| matches!(r, MarketReport::BookRefused { interval, reason, .. } if *interval == wrong && reason.contains("price"))),
            "member {i} refused the wrong book: {log:?}"
        );
        assert!(
            log.iter().any(
                |r| matches!(r, MarketReport::BookChecked { interval, .. } if *interval == first)
            ),
            "member {i} checked the first book"
        );
    }
    // Both ends agree; the market node's books balance (no fee): what it paid the seller it
    // took from the buyers.
    let mut market_net: i128 = 0;
    for (m, c) in members.iter().zip(&channels) {
        let ours = m.channel(*c).await.unwrap().unwrap().current.unwrap();
        let theirs = market.channel(*c).await.unwrap().unwrap().current.unwrap();
        assert_eq!(ours.state(), theirs.state());
        market_net += i128::from(theirs.state().balance_b.0) - 10_000_000;
    }
    assert_eq!(market_net, 0);
}
