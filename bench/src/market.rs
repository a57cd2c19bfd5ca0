//! The neighbourhood market: a market node's engine and N members' engines in one process,
//! over QUIC and SQLite. Each interval half the members export and half import; the benchmark
//! times, from each book's deadline, until every member's settlement of it is durable at both
//! ends (the outbox hands a state to the watchtower queue only once its persist is durable), p50
//! and p99 over the intervals, beside the floor measured in the same run: the signatures and
//! recoveries of N updates (a proposal and a countersignature each, signed and checked) on both
//! cores. And the market node's resident memory per member.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use gridchan_channel::market::MarketTerms;
use gridchan_channel::metering::MeterReading;
use gridchan_channel::{
    Amount, ChannelId, IntervalIndex, LedgerEvent, Phase, Policy, Recovered, Signer, WattHours,
};
use gridchan_gateway::clock::SimClock;
use gridchan_gateway::engine::{EngineHandle, MarketReport, Report};

const INTERVAL: u32 = 900;

/// A step of a book's way from its deadline to every settlement durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// The market node closed and sent the book.
    Closed,
    /// A member checked it.
    Checked,
    /// A member's settlement is durable at its end.
    MemberDurable,
    /// The market node's copy of a settlement is durable.
    MarketDurable,
}

#[derive(Clone, Debug)]
pub struct MarketBench {
    pub members: usize,
    pub intervals: usize,
    /// From a book's deadline to every settlement of it durable at both ends.
    pub p50: Duration,
    pub p99: Duration,
    /// N updates' signatures and recoveries (two of each per update) spread on two threads.
    pub floor: Duration,
    /// The market node's share of the process's resident memory per member is not separable in
    /// one process: the whole process's growth per member (upper bound).
    pub rss_per_member_kib: Option<u64>,
    /// When each step of a book was done for the last member, after the deadline (median over
    /// the intervals).
    pub timeline: Vec<(Step, Duration)>,
    /// One book of `members` orders, as every member receives it (its parts' bytes).
    pub book_bytes: usize,
    /// What one member alone spends on a book of `members` orders (decode, recover every
    /// order's signature on the process's pool, check), median of 5: the part of the latency
    /// that a member's own gateway adds in a deployment, where no two members share a process.
    pub member_check: Duration,
}

impl MarketBench {
    pub fn report(&self) -> String {
        format!(
            "market benchmark: a market node and {} members in one process, over QUIC and SQLite (WAL, FULL), {} intervals\n\
             \x20 deadline to every settlement durable at both ends: p50 {:>8.1} ms, p99 {:>8.1} ms\n\
             \x20 floor            {:>8.1} ms  ({} updates' 2 signatures and 2 recoveries, on 2 threads, measured now)\n\
             \x20 p50 / floor      {:>8.2}  (goal: within 2)\n\
             \x20 memory           {:>8}  KiB per member (the whole process's growth: members' engines included)\n\
             \x20 book             {:>8}  bytes to each member ({:.1} MB from the market node an interval)\n\
             \x20 one member's check of a book of {} orders: {:.1} ms (decode, every signature recovered, clearing recomputed)",
            self.members,
            self.intervals,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.floor.as_secs_f64() * 1e3,
            self.members,
            self.p50.as_secs_f64() / self.floor.as_secs_f64().max(1e-9),
            self.rss_per_member_kib
                .map(|k| k.to_string())
                .unwrap_or_else(|| "unknown".into()),
            self.book_bytes,
            (self.book_bytes * self.members) as f64 / 1e6,
            self.members,
            self.member_check.as_secs_f64() * 1e3,
        ) + &format!(
            "\n  after the deadline (median interval), the last: {}",
            self.timeline
                .iter()
                .map(|(step, d)| format!(
                    "{} +{:.0} ms",
                    match step {
                        Step::Closed => "book closed",
                        Step::Checked => "member checked it",
                        Step::MemberDurable => "member's state durable",
                        Step::MarketDurable => "market node's state durable",
                    },
                    d.as_secs_f64() * 1e3
                ))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// The harness's market, its books closing a quarter into the next interval.
fn terms() -> MarketTerms {
    MarketTerms {
        deadline_permille: 250,
        ..gridchan_harness::market::terms()
    }
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn key(i: usize) -> Signer {
    let mut secret = [0x5a; 32];
    secret[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    Signer::new(&secret, &[i as u8; 32]).expect("a key in range")
}

fn spawn(dir: &std::path::Path, i: usize, clock: &SimClock, run: bool) -> EngineHandle {
    let policy = Policy {
        force_close_after_ms: None,
        ..Policy::accepting_anyone()
    };
    let path = dir.join(format!("gateway-{i}.sqlite"));
    gridchan_fixtures::market_engine(&path, key(i), policy, clock, run.then(terms))
}

/// The floor: `n` updates' two signatures and two recoveries, spread on two threads.
fn floor(n: usize) -> Duration {
    let signer = key(999);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2 {
            let signer = &signer;
            s.spawn(move || {
                for i in 0..n.div_ceil(2) {
                    for j in 0..2u8 {
                        let mut digest = [t as u8; 32];
                        digest[..8].copy_from_slice(&(i as u64).to_be_bytes());
                        digest[8] = j;
                        let sig = signer.sign(&digest);
                        let one = Recovered::one(&digest, &sig);
                        std::hint::black_box(one);
                    }
                }
            });
        }
    });
    started.elapsed()
}

/// A book of `n` orders (half selling, half buying 400 Wh), as the market node closes it: its
/// size in parts, and what one member spends on it (median of 5 runs): decoding the parts,
/// recovering every order's signature on the pool (as a member's gateway does), the checks.
fn member_check(n: usize) -> (usize, Duration) {
    use gridchan_channel::market::book::Expect;
    use gridchan_channel::market::{pseudonym_id, Book, Order, Parts, Roster, SignedOrder, Topic};
    use rayon::prelude::*;
    let t = terms();
    let interval = IntervalIndex(1_947_200);
    let market = key(0);
    let members: Vec<Signer> = (1..=n).map(key).collect();
    let roster = Roster::sign(
        t.market,
        1,
        members.iter().map(|m| pseudonym_id(&m.id())).collect(),
        &market,
    );
    let orders: Vec<SignedOrder> = members
        .par_iter()
        .enumerate()
        .map(|(i, m)| {
            let (import, export) = if i % 2 == 0 { (0, 400) } else { (400, 0) };
            SignedOrder::sign(
                Order {
                    market: t.market,
                    interval,
                    member: [0; 32],
                    import: WattHours(import),
                    export: WattHours(export),
                    sell_at_least: t.feed_in.weekday[0],
                    buy_at_most: t.retail.weekday[0],
                },
                m,
            )
        })
        .collect();
    let (book, _) =
        Book::close(&t, INTERVAL, interval, &roster, orders, &market).expect("the book closes");
    let parts = Parts::split(Topic::Book, interval.0, &book);
    let bytes: Vec<u8> = parts.iter().flat_map(|p| p.bytes.iter().copied()).collect();
    let roster_digest = roster.digest();
    let mut runs: Vec<Duration> = (0..5)
        .map(|_| {
            let started = Instant::now();
            let got: Book = Parts::decode(&bytes).expect("decodes");
            let known = Recovered::collect(
                got.orders
                    .par_iter()
                    .map(|o| Recovered::one(&o.order.digest(), &o.sig))
                    .collect::<Vec<_>>(),
            );
            got.check(&Expect {
                market_node: &market.id(),
                terms: &t,
                interval_seconds: INTERVAL,
                interval,
                roster: &roster,
                roster_digest: &roster_digest,
                own: None,
                known: &known,
            })
            .expect("an honest book passes");
            started.elapsed()
        })
        .collect();
    runs.sort();
    (bytes.len(), runs[2])
}

/// Runs the benchmark with `members` members over `intervals` intervals of `interval_ms` real
/// milliseconds.
pub async fn run(
    dir: &std::path::Path,
    members: usize,
    intervals: usize,
    interval_ms: u64,
) -> MarketBench {
    let rss_before = rss_kib();
    let start = 1_752_451_200_000u64;
    let clock = SimClock::held(start, u32::try_from(900_000 / interval_ms).unwrap_or(1));
    let market = spawn(dir, 0, &clock, true);
    let mut market_reports = market.reports();
    let homes: Vec<EngineHandle> = (1..=members)
        .map(|i| spawn(dir, i, &clock, false))
        .collect();
    let opened_at = IntervalIndex(start / 1000 / u64::from(INTERVAL));
    let mut channels: Vec<ChannelId> = Vec::with_capacity(members);
    for (i, h) in homes.iter().enumerate() {
        let (id, _) = gridchan_gateway::market::join(
            h,
            gridchan_gateway::market::Join {
                market: market.address.clone(),
                deposit: Amount(1_000_000_000),
                market_deposit: Amount(1_000_000_000),
                interval_seconds: INTERVAL,
                challenge_window_blocks: 20,
                funding_window_blocks: 20,
                opened_at,
                nonce: [i as u8; 32],
                meter: None,
            },
        )
        .await
        .expect("joins");
        channels.push(id);
    }
    // Both ends hold version 0; then funded (by hand: no ledger here).
    loop {
        let funding = |v: Vec<gridchan_channel::ChannelView>| {
            v.iter().filter(|c| c.phase == Phase::Funding).count()
        };
        if funding(market.channels().await.expect("runs")) == members {
            let mut all = true;
            for (h, c) in homes.iter().zip(&channels) {
                all &= h
                    .channel(*c)
                    .await
                    .expect("runs")
                    .is_some_and(|v| v.phase == Phase::Funding);
            }
            if all {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (h, c) in homes.iter().zip(&channels) {
        h.ledger_event(*c, LedgerEvent::Funded).await.expect("runs");
        market
            .ledger_event(*c, LedgerEvent::Funded)
            .await
            .expect("runs");
    }
    // Enrolled (the members enrol once they see their channel open, and again each second).
    let enrolled = Instant::now();
    loop {
        let open = market
            .channels()
            .await
            .expect("runs")
            .iter()
            .filter(|c| c.phase == Phase::Open)
            .count();
        if open == members || enrolled.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Durable states at each end, by interval, from every engine's reports; and when each
    // book closed and each member had checked it (where the time goes).
    let (tx, mut durable) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let (stage_tx, mut stages) = tokio::sync::mpsc::unbounded_channel::<(u64, Step, Instant)>();
    for (n, h) in std::iter::once(&market).chain(homes.iter()).enumerate() {
        let mut r = h.reports();
        let tx = tx.clone();
        let stage_tx = stage_tx.clone();
        tokio::spawn(async move {
            loop {
                let got = r.recv().await;
                let now = Instant::now();
                match got {
                    Ok(Report::Watchtower(s)) => {
                        let i = s.state().last_interval.0;
                        let _ = tx.send((i, now));
                        let step = if n == 0 {
                            Step::MarketDurable
                        } else {
                            Step::MemberDurable
                        };
                        let _ = stage_tx.send((i, step, now));
                    }
                    Ok(Report::Market(MarketReport::BookClosed { interval, .. })) => {
                        let _ = stage_tx.send((interval.0, Step::Closed, now));
                    }
                    Ok(Report::Market(MarketReport::BookChecked { interval, .. })) => {
                        let _ = stage_tx.send((interval.0, Step::Checked, now));
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });
    }
    clock.start();
    let first = opened_at.0 + 1;
    let mut deadlines: HashMap<u64, Instant> = HashMap::new();
    let mut done: HashMap<u64, (usize, Instant)> = HashMap::new();
    let t = terms();
    for k in 0..intervals as u64 {
        let interval = IntervalIndex(first + k);
        let ends = (interval.0 + 1) * u64::from(INTERVAL) * 1000;
        tokio::time::sleep(clock.until(ends)).await;
        while clock.now_ms() < ends {
            tokio::task::yield_now().await;
        }
        for (i, h) in homes.iter().enumerate() {
            let own = if i % 2 == 0 {
                MeterReading {
                    import: WattHours(0),
                    export: WattHours(400),
                }
            } else {
                MeterReading {
                    import: WattHours(400),
                    export: WattHours(0),
                }
            };
            h.meter(interval, own, Duration::from_millis(1))
                .await
                .expect("runs");
        }
        let deadline = Instant::now() + clock.until(t.deadline_ms(interval, INTERVAL));
        deadlines.insert(interval.0, deadline);
        while let Ok((i, at)) = durable.try_recv() {
            let e = done.entry(i).or_insert((0, at));
            e.0 += 1;
            e.1 = e.1.max(at);
        }
    }
    // The last intervals' settlements.
    let wait = Instant::now() + Duration::from_secs(30);
    while Instant::now() < wait {
        match tokio::time::timeout(Duration::from_millis(500), durable.recv()).await {
            Ok(Some((i, at))) => {
                let e = done.entry(i).or_insert((0, at));
                e.0 += 1;
                e.1 = e.1.max(at);
            }
            _ => {
                if done
                    .get(&(first + intervals as u64 - 1))
                    .is_some_and(|(n, _)| *n >= 2 * members)
                {
                    break;
                }
            }
        }
    }
    let _ = market_reports.try_recv();
    let mut lat: Vec<Duration> = deadlines
        .iter()
        .filter_map(|(i, d)| {
            let (n, at) = done.get(i)?;
            (*n >= 2 * members).then(|| at.saturating_duration_since(*d))
        })
        .collect();
    lat.sort();
    let pick = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    // Each step's last arrival per interval, after its deadline; the median over intervals.
    let mut last: HashMap<(u64, Step), Instant> = HashMap::new();
    while let Ok((i, step, at)) = stages.try_recv() {
        let e = last.entry((i, step)).or_insert(at);
        *e = (*e).max(at);
    }
    let timeline: Vec<(Step, Duration)> = [
        Step::Closed,
        Step::Checked,
        Step::MemberDurable,
        Step::MarketDurable,
    ]
    .into_iter()
    .map(|step| {
        let mut after: Vec<Duration> = deadlines
            .iter()
            .filter(|(i, _)| done.get(i).is_some_and(|(n, _)| *n >= 2 * members))
            .filter_map(|(i, d)| Some(last.get(&(*i, step))?.saturating_duration_since(*d)))
            .collect();
        after.sort();
        (
            step,
            after.get(after.len() / 2).copied().unwrap_or_default(),
        )
    })
    .collect();
    let rss_after = rss_kib();
    let (book_bytes, member_check) = member_check(members);
    let result = MarketBench {
        timeline,
        book_bytes,
        member_check,
        members,
        intervals: lat.len(),
        p50: pick(0.5),
        p99: pick(0.99),
        floor: floor(members),
        rss_per_member_kib: rss_before
            .zip(rss_after)
            .map(|(b, a)| a.saturating_sub(b) / members as u64),
    };
    for h in std::iter::once(&market).chain(homes.iter()) {
        let _ = h.stop().await;
    }
    result
}
