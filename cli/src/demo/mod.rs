//! `gridchan demo`: a neighbourhood in one command. A ledger, a watchtower and N gateways run
//! as real services on 127.0.0.1 (QUIC, SQLite files, each with its own key and folder), trade a
//! day of recorded household data over a ring of channels (each home with its two nearest
//! neighbours), live through a dispute, close, and print what trading was worth.

mod dispute;
mod market;
mod neighbourhood;
mod summary;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gridchan_chain::evm::{anvil::Anvil, EvmConfig, EvmLedger};
use gridchan_chain::{
    server, ChannelAccount, ChannelStatus, Genesis, Ledger, LocalLedger, RemoteClient,
};
use gridchan_channel::{
    Amount, ChannelId, Command, Event, IntervalIndex, MeterTolerance, OpenRequest, Phase, Policy,
    PricePerKwh, SignedState, Signer, Tariff, TimeOfUse,
};
use gridchan_gateway::clock::SimClock;
use gridchan_gateway::daemon::{self, Daemon, DaemonParts};
use gridchan_gateway::engine::{self, EngineHandle, Report};
use gridchan_gateway::meter::signing::SigningMeter;
use gridchan_gateway::meter::{CsvMeter, MeterReading, MeterSource};
use gridchan_transport::PeerAddr;
use gridchan_watchtower::{Tower, TowerLimits};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The eight homes of the shipped data set (see data/neighbourhood/README.md), in the binary.
use dispute::stage_dispute;
use market::*;
use neighbourhood::*;
use summary::*;

const HOMES: [&str; 8] = [
    include_str!("../../../data/neighbourhood/home-01.csv"),
    include_str!("../../../data/neighbourhood/home-02.csv"),
    include_str!("../../../data/neighbourhood/home-03.csv"),
    include_str!("../../../data/neighbourhood/home-04.csv"),
    include_str!("../../../data/neighbourhood/home-05.csv"),
    include_str!("../../../data/neighbourhood/home-06.csv"),
    include_str!("../../../data/neighbourhood/home-07.csv"),
    include_str!("../../../data/neighbourhood/home-08.csv"),
];
/// Monday 00:00 UTC of the four seasonal weeks in the data (January, April, July, October 2025).
const WEEK_START: [u64; 4] = [1_736_726_400, 1_744_588_800, 1_752_451_200, 1_760_313_600];
const INTERVAL: u32 = 900;
const BLOCK_MS: u64 = 50;
/// anvil's block time with `--ledger evm`.
const EVM_BLOCK_MS: u64 = 100;
const WINDOW_BLOCKS: u64 = 40;
const DEPOSIT: u64 = 20_000_000;
/// What the market node deposits in each member's channel: what it may pay the member for its
/// sales before the channel is topped up (a home sells at most a few tokens' worth a day).
const MARKET_DEPOSIT: u64 = 10_000_000;
const START_BALANCE: u64 = 100_000_000;
/// Local clock of the tariffs (central Europe, no daylight saving).
const UTC_OFFSET_MIN: i32 = 60;

/// What `gridchan demo` plays (its command-line options).
#[derive(Clone, Debug, clap::Args)]
pub struct DemoOptions {
    /// Homes (more than the 8 in the data are derived from them, scaled by a seeded factor).
    #[arg(long, default_value_t = 5)]
    pub homes: usize,
    /// 15-minute intervals to play (96 is a day).
    #[arg(long, default_value_t = 96)]
    pub intervals: u64,
    /// Real milliseconds per 15-minute interval (left out: 150, 3 per home beyond 50 and
    /// homes^2/100, so that a large neighbourhood's signatures and books fit in it on one
    /// machine: 13 s for 1,000 homes).
    #[arg(long)]
    pub interval_ms: Option<u64>,
    /// Seed for keys and derived homes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Which week of the data: 0 January, 1 April, 2 July, 3 October.
    #[arg(long, default_value_t = 2)]
    pub week: usize,
    /// Which day of that week: 0 Monday ... 6 Sunday.
    #[arg(long, default_value_t = 2)]
    pub day: usize,
    /// Keep everything in this (new) folder instead of a temporary one.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// The ledger: `local`, a gridchan ledger node in this process (a block every 50 ms), or
    /// `evm`, the adjudicator contract on a local anvil chain (a block every 100 ms; anvil comes
    /// with `npm ci --prefix chain-adapter/evm`).
    #[arg(long, value_enum, default_value_t = DemoLedger::Local)]
    pub ledger: DemoLedger,
    /// How the homes trade: `market`, every home a member of one neighbourhood market (a market
    /// node clears each interval's book); `ring`, channels between neighbours only (each home
    /// with its two nearest); `both`, the ring first and what it leaves in the market.
    #[arg(long, value_enum, default_value_t = Topology::Market)]
    pub topology: Topology,
}

/// How the demo's homes are connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    Market,
    Ring,
    Both,
}

impl Topology {
    fn market(self) -> bool {
        self != Topology::Ring
    }

    fn ring(self) -> bool {
        self != Topology::Market
    }
}

impl DemoOptions {
    /// Real milliseconds per interval: as given, or 150, 3 more per home beyond 50, and
    /// `homes^2 / 100` more: every member checks every order of every book, and in this one
    /// process that is `homes^2` orders an interval (a thousand homes: about 5 s of a 2-core
    /// machine, `gridchan bench market --members 1000`).
    pub fn interval_ms(&self) -> u64 {
        let homes = self.homes as u64;
        self.interval_ms
            .unwrap_or(150 + 3 * homes.saturating_sub(50) + homes * homes / 100)
    }

    /// Refuses options outside what the data and the clock allow, saying which.
    fn check(&self) -> Result<()> {
        if self.homes < 2 {
            bail!("--homes must be at least 2");
        }
        if self.week > 3 || self.day > 6 {
            bail!("--week is 0-3 (January, April, July, October) and --day 0-6 (Monday-Sunday)");
        }
        if self.intervals == 0 || self.intervals > 96 * (7 - self.day as u64) {
            bail!("--intervals must be between 1 and the intervals left in the week");
        }
        if self.interval_ms() < 20 || self.interval_ms() > 900_000 {
            bail!("--interval-ms must be between 20 and 900000");
        }
        if self.topology.market() && self.ledger == DemoLedger::Evm && self.homes > 10 {
            bail!("--ledger evm funds the market node for at most 10 members: use --homes 10 or fewer, or --ledger local");
        }
        Ok(())
    }
}

/// Which ledger the demo's neighbourhood settles on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoLedger {
    Local,
    Evm,
}

/// Runs the demo; returns whether every check passed.
pub async fn run(o: DemoOptions) -> Result<bool> {
    o.check()?;
    let tmp;
    let root: PathBuf = match &o.data {
        Some(d) => {
            if d.exists() && std::fs::read_dir(d)?.next().is_some() {
                bail!("{} is not empty: give the demo a new folder", d.display());
            }
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let started = Instant::now();
    let say = |line: String| {
        if !o.json {
            eprintln!("\r\x1b[K[{:5.1} s] {line}", started.elapsed().as_secs_f64());
        }
    };

    // The day, on a clock that runs 900 s per --interval-ms, held at a quarter of an hour
    // before the day until every channel is funded.
    let day_start = WEEK_START[o.week] + o.day as u64 * 86_400;
    let anchor = IntervalIndex(day_start / u64::from(INTERVAL));
    let speedup = u32::try_from(900_000 / o.interval_ms()).unwrap_or(u32::MAX);
    let clock = SimClock::held((day_start - 900) * 1000, speedup);
    let terms = market_terms(o.seed);

    // Keys, from the seed: the same demo twice is the same neighbourhood.
    let key = |what: &str, i: usize| Signer::new(&derive(o.seed, what, i), &blinding());
    let member = engine::MarketParts {
        clock: Some(clock.clone()),
        ..engine::MarketParts::default()
    };
    let mut homes = Vec::new();
    for i in 0..o.homes {
        homes.push(Home {
            name: format!("home-{:02}", i + 1),
            market: member.clone(),
            neighbours: Vec::new(),
            secret: derive(o.seed, "home", i),
            key: key("home", i)?,
            meter: meter_key(&o, i)?,
            addr: "127.0.0.1:0".parse()?,
            dir: root.join(format!("home-{:02}", i + 1)),
            daemon: None,
            cheat: Arc::default(),
        });
    }
    // The market node, after the homes (its index is the number of homes).
    let market = o.topology.market().then_some(o.homes);
    if market.is_some() {
        homes.push(Home {
            name: "market".into(),
            market: engine::MarketParts {
                run: Some(engine::MarketNode {
                    terms: terms.clone(),
                    interval_seconds: INTERVAL,
                }),
                limits: None,
                clock: Some(clock.clone()),
                store: None,
            },
            neighbours: Vec::new(),
            secret: derive(o.seed, "market", 0),
            key: key("market", 0)?,
            meter: key("market-meter", 0)?,
            addr: "127.0.0.1:0".parse()?,
            dir: root.join("market"),
            daemon: None,
            cheat: Arc::default(),
        });
    }

    // The ledger: every home starts with 100 tokens.
    let chain = Arc::new(match o.ledger {
        DemoLedger::Local => start_local_ledger(&o, &root, &homes, &say)?,
        DemoLedger::Evm => start_evm_chain(&o, &homes, &say).await?,
    });

    // The watchtower, following the ledger.
    let tower_key = key("tower", 0)?;
    let tower = Tower::start(
        tower_key.duplicate(&blinding()),
        chain.client(&derive(o.seed, "tower", 0))?,
        root.join("tower.sqlite"),
        TowerLimits {
            states_per_second: 10_000.0,
            burst: 10_000.0,
            ..TowerLimits::default()
        },
    )?;
    let tower_endpoint = gridchan_watchtower::rpc::bind_for(
        "127.0.0.1:0".parse()?,
        tower_key.duplicate(&blinding()),
        2 * o.homes + 64,
    )?;
    let tower_addr = tower_endpoint.peer_addr();
    tower.listen(tower_endpoint);
    say(format!("watchtower {tower_addr}"));

    let net = Net {
        chain: chain.clone(),
        tower_addr,
        clock: clock.clone(),
        anchor,
    };

    // The ring: home i opens a channel to home i+1 (two homes: one channel); and every home
    // joins the market.
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    if o.topology.ring() {
        pairs = if o.homes == 2 {
            vec![(0, 1)]
        } else {
            (0..o.homes).map(|i| (i, (i + 1) % o.homes)).collect()
        };
    }
    if let Some(m) = market {
        pairs.extend((0..o.homes).map(|i| (i, m)));
    }
    for &(a, b) in &pairs {
        homes[a].neighbours.push(b);
        homes[b].neighbours.push(a);
    }
    // Every party listens first, then each dials the parties it opens channels to.
    let mut engines = Vec::new();
    for h in homes.iter_mut() {
        engines.push(listen(&o, h)?);
    }
    for (i, engine) in engines.into_iter().enumerate() {
        let peers: Vec<PeerAddr> = pairs
            .iter()
            .filter(|(a, _)| *a == i)
            .map(|(_, b)| PeerAddr {
                node: homes[*b].key.id(),
                addr: homes[*b].addr,
            })
            .collect();
        let d = start_home(&o, &net, &homes, i, engine, peers).await?;
        homes[i].daemon = Some(d);
    }
    say(format!(
        "{} gateways on 127.0.0.1{}, each with its key and SQLite files under {}",
        o.homes,
        if market.is_some() {
            " and a market node"
        } else {
            ""
        },
        root.display()
    ));
    let tariff = neighbour_tariff();
    if o.topology.ring() {
        say(format!(
            "neighbour tariff (tokens/kWh, local time UTC+01:00): {tariff}"
        ));
    }
    if market.is_some() {
        say(format!(
            "market: {}, fee {}/kWh, books close {} s into the next interval; every home's limits are its grid prices (feed-in {}, retail {})",
            terms.rule,
            Amount(terms.fee.0),
            u64::from(INTERVAL) * u64::from(terms.deadline_permille) / 1000,
            terms.feed_in.as_tariff(),
            terms.retail.as_tariff()
        ));
    }
    let mut links = Vec::new();
    for (n, (a, b)) in pairs.iter().enumerate() {
        let id = if Some(*b) == market {
            join_market(&o, &homes, *a, *b, anchor, n).await?
        } else {
            homes[*a]
                .engine()
                .open(OpenRequest {
                    peer: homes[*b].key.id(),
                    deposit: Amount(DEPOSIT),
                    peer_deposit: Amount(DEPOSIT),
                    tariff: tariff.clone(),
                    challenge_window_blocks: WINDOW_BLOCKS,
                    funding_window_blocks: 400,
                    interval_seconds: INTERVAL,
                    tolerance: MeterTolerance {
                        absolute_wh: 0,
                        permille: 0,
                    },
                    opened_at: IntervalIndex(anchor.0 - 1),
                    nonce: derive(o.seed, "channel", n),
                    // Both homes' readings are their meters' signed readings.
                    evidence: gridchan_channel::Evidence::signed(
                        homes[*a].meter.id(),
                        homes[*b].meter.id(),
                    ),
                })
                .await?
        };
        links.push(Link { a: *a, b: *b, id });
    }
    // Reports from every home, for notable events and for the cheater's old state.
    let (event_tx, mut events) = tokio::sync::mpsc::unbounded_channel::<(usize, Report)>();
    let forward = |homes: &[Home], i: usize| {
        let mut r = homes[i].engine().reports();
        let tx = event_tx.clone();
        tokio::spawn(async move {
            loop {
                match r.recv().await {
                    Ok(rep) => {
                        if tx.send((i, rep)).is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        })
    };
    let parties = homes.len();
    let mut forwarders: Vec<_> = (0..parties).map(|i| forward(&homes, i)).collect();
    let open_wait = 60 + links.len() as u64 / 10;
    let deadline = Instant::now() + Duration::from_secs(open_wait);
    loop {
        let mut open = 0;
        for l in &links {
            if view(homes[l.b].engine(), l.id)
                .await
                .is_some_and(|v| v.phase == Phase::Open)
            {
                open += 1;
            }
        }
        if open == links.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {open} of {} channels opened within {open_wait} s",
                links.len()
            );
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), events.recv()).await;
    }
    say(format!(
        "{} channels funded on the ledger ({}); trading {} intervals of {} (week {}, day {})",
        links.len(),
        if market.is_some() {
            format!(
                "each home {} tokens, the market node {} per member",
                Amount(DEPOSIT),
                Amount(MARKET_DEPOSIT)
            )
        } else {
            format!("{} tokens each side", Amount(DEPOSIT))
        },
        o.intervals,
        ["January", "April", "July", "October"][o.week],
        o.week,
        o.day
    ));
    // The day starts now that every channel is funded.
    clock.start();

    // The day.
    let day_started = Instant::now();
    let end = anchor.0 + o.intervals;
    let dispute_at = anchor.0 + o.intervals / 2;
    // Staged in the market: a member offline for a while, and a market node that publishes a
    // wrong clearing once.
    let offline_at = anchor.0 + o.intervals / 4;
    let wrong_at = anchor.0 + o.intervals * 3 / 4;
    let mut offline: Option<(usize, u64)> = None;
    let mut wrong_staged = false;
    // Staged everywhere: a home whose software bills energy its meter never measured, for an
    // hour in the afternoon (its meter still signs what it measured).
    let overbiller = 1;
    let cheat_at = anchor.0 + o.intervals * 9 / 16;
    let mut overbilling: Option<(u64, u64)> = None;
    // The neighbours that left the overbilling home out, and of which interval.
    let mut left_out_by: Vec<(usize, u64)> = Vec::new();
    let mut market_log = MarketLog::default();
    let mut openers: HashMap<ChannelId, usize> = links.iter().map(|l| (l.id, l.a)).collect();
    let mut old_states: HashMap<ChannelId, SignedState> = HashMap::new();
    let mut dispute: Option<DisputeSummary> = None;
    let mut last_bar = Instant::now() - Duration::from_secs(1);
    let mut last_look = Instant::now() - Duration::from_secs(1);
    loop {
        let now = IntervalIndex(clock.now_ms() / 1000 / u64::from(INTERVAL));
        if now.0 > end + 1 {
            break;
        }
        if !o.json && last_bar.elapsed() > Duration::from_millis(200) {
            let done = now.0.saturating_sub(anchor.0).min(o.intervals);
            let width = 40;
            let filled = (done * width / o.intervals) as usize;
            let hour = (done * 15 / 60, done * 15 % 60);
            eprint!(
                "\r\x1b[K[{}{}] {:02}:{:02} UTC  interval {done}/{}",
                "#".repeat(filled),
                ".".repeat(width as usize - filled),
                hour.0,
                hour.1,
                o.intervals
            );
            last_bar = Instant::now();
        }
        if let Some(m) = market {
            // A member goes offline for four intervals: it is left out, nobody waits for it.
            let member = o.homes - 1;
            if offline.is_none() && now.0 >= offline_at && now.0 + 4 < end && o.intervals >= 16 {
                say(format!(
                    "{} goes offline for an hour: the market leaves it out and nobody waits",
                    homes[member].name
                ));
                homes[member].daemon = None;
                offline = Some((member, now.0 + 4));
                market_log.away.push((Some(member), now.0, now.0 + 4));
            }
            if let Some((i, until)) = offline {
                if until > 0 && now.0 >= until {
                    let engine = listen(&o, &mut homes[i])?;
                    let peers = dial_list(&homes, i);
                    homes[i].daemon = Some(start_home(&o, &net, &homes, i, engine, peers).await?);
                    forwarders.push(forward(&homes, i));
                    say(format!("{} is back online", homes[i].name));
                    offline = Some((i, 0));
                }
            }
            // The market node publishes one wrong clearing: every member refuses it.
            if !wrong_staged && now.0 >= wrong_at && now.0 < end && o.intervals >= 8 {
                homes[m]
                    .engine()
                    .stage(engine::Stage::WrongClearing)
                    .await?;
                market_log.staged = true;
                wrong_staged = true;
            }
        }
        if o.homes >= 3
            && o.intervals >= 16
            && overbilling.is_none()
            && now.0 >= cheat_at
            && now.0 + 5 < end
        {
            homes[overbiller]
                .cheat
                .store(true, std::sync::atomic::Ordering::Relaxed);
            overbilling = Some((now.0, now.0 + 4));
            say(format!(
                "{} starts claiming {OVERBILLED_WH} Wh more export an interval than its meter signed, for an hour",
                homes[overbiller].name
            ));
        }
        if let Some((_, until)) = overbilling {
            let cheating = homes[overbiller]
                .cheat
                .load(std::sync::atomic::Ordering::Relaxed);
            if cheating && now.0 >= until {
                homes[overbiller]
                    .cheat
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                say(format!("{} bills honestly again", homes[overbiller].name));
            }
        }
        // Midday (or the first trade after it): a channel with an old state worth cheating with.
        let mut candidate = None;
        let everyone_online = offline.is_none_or(|(_, until)| until == 0);
        // Looked for five times an interval at most: every look asks every opener's gateway.
        let look = last_look.elapsed() >= Duration::from_millis(o.interval_ms() / 5);
        if look && dispute.is_none() && everyone_online && now.0 >= dispute_at && now.0 < end {
            last_look = Instant::now();
            for l in &links {
                let Some(old) = old_states.get(&l.id) else {
                    continue;
                };
                let cur = view(homes[l.a].engine(), l.id)
                    .await
                    .and_then(|v| v.current);
                if cur.is_some_and(|c| c.version() > old.version()) {
                    candidate = Some(l.clone());
                    break;
                }
            }
        }
        if let Some(disputed) = candidate {
            dispute = Some(
                stage_dispute(&o, &net, &mut homes, &disputed, &old_states, &tower, &say).await?,
            );
            for f in forwarders.drain(..) {
                f.abort();
            }
            forwarders = (0..parties).map(|i| forward(&homes, i)).collect();
            // Both were away for a moment (the market node: away from every member).
            let away = IntervalIndex(clock.now_ms() / 1000 / u64::from(INTERVAL)).0;
            for p in [disputed.a, disputed.b] {
                let who = (Some(p) != market).then_some(p);
                market_log
                    .away
                    .push((who, now.0.saturating_sub(1), away + 1));
            }
            // A member whose market channel the dispute closed joins the market again.
            if Some(disputed.b) == market {
                let n = links.len();
                let id = join_market(&o, &homes, disputed.a, disputed.b, now, n).await?;
                say(format!(
                    "{} joins the market again (channel {})",
                    homes[disputed.a].name,
                    id.short()
                ));
                openers.insert(id, disputed.a);
                links.push(Link {
                    a: disputed.a,
                    b: disputed.b,
                    id,
                });
            }
        }
        match tokio::time::timeout(Duration::from_millis(100), events.recv()).await {
            Ok(Some((i, Report::Watchtower(s)))) => {
                let id = s.state().channel_id;
                if openers.get(&id) == Some(&i)
                    && s.state().energy_a_to_b.0 + s.state().energy_b_to_a.0 > 0
                {
                    old_states.entry(id).or_insert(s);
                }
            }
            Ok(Some((i, Report::Market(r)))) => {
                if let Some(line) = market_log.note(i, r, anchor) {
                    say(line);
                }
            }
            // A neighbour channel leaving the overbilling home out: its claim is not what its
            // meter signed.
            Ok(Some((
                i,
                Report::LeftOut {
                    peer,
                    interval,
                    why,
                },
            ))) if peer == homes[overbiller].key.id() && why.contains("its meter signed") => {
                left_out_by.push((i, interval.0));
            }
            Ok(Some((i, Report::Event(e)))) => match e {
                Event::PeerMisbehaved { peer, reason } => {
                    say(format!("{}: disconnected {peer}: {reason}", homes[i].name))
                }
                Event::Frozen { channel } => say(format!(
                    "{}: channel {} frozen (store failure)",
                    homes[i].name,
                    channel.short()
                )),
                _ => {}
            },
            Ok(Some((i, Report::StoreFailed(e)))) => {
                say(format!("{}: store failed: {e}", homes[i].name))
            }
            _ => {}
        }
    }
    let day_seconds = day_started.elapsed().as_secs_f64();
    if !o.json {
        eprintln!();
    }

    // Close: cooperatively where both sides are trading; the disputed channel concludes after
    // its window.
    let (close_from, close_started) = (chain.height().await, Instant::now());
    close_all(&homes, &links, &chain, &mut events, &say).await?;
    let (all, closing, concluded) = chain
        .closing_transactions(close_from + 1, chain.height().await)
        .await;
    say(format!(
        "closing took {:.1} s: {concluded} channel(s) concluded in {closing} ledger transaction(s) (the market node's in batches of up to {}); {all} transactions in all, with each home's payout withdrawal",
        close_started.elapsed().as_secs_f64(),
        gridchan_gateway::ledger_queue::BATCH_MAX
    ));
    if dispute.is_none() {
        say("no channel traded by midday: no dispute staged".to_string());
    }
    say("all channels closed and paid out".to_string());

    // The summary and the checks.
    let summary = summarize(
        &o,
        &homes,
        &links,
        &chain,
        &tower,
        dispute,
        day_seconds,
        &root,
        (market, &market_log),
        overbilling.map(|(from, until)| Overbilled {
            home: overbiller,
            from,
            until,
            left_out_by,
        }),
    )
    .await?;
    for h in &mut homes {
        h.daemon = None;
    }
    tower.stop();
    if o.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(summary.checks.iter().all(|c| c.ok))
}

/// Closes every channel that still trades, cooperatively (the disputed one concludes after its
/// window), and waits until each is paid out on the ledger and concluded at both homes.
async fn close_all(
    homes: &[Home],
    links: &[Link],
    chain: &Chain,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<(usize, Report)>,
    say: &impl Fn(String),
) -> Result<()> {
    say("the day is over: closing the channels".to_string());
    for l in links {
        if view(homes[l.a].engine(), l.id)
            .await
            .is_some_and(|v| v.phase == Phase::Open)
        {
            homes[l.a].engine().command(Command::Close(l.id)).await?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut done = 0;
        for l in links {
            let a = view(homes[l.a].engine(), l.id).await;
            let b = view(homes[l.b].engine(), l.id).await;
            let paid = chain.channel(&l.id).await.is_some_and(|c| {
                c.claimable == [Amount(0), Amount(0)]
                    && matches!(c.status, ChannelStatus::Concluded { .. })
            });
            if paid
                && a.is_some_and(|v| v.phase == Phase::Concluded)
                && b.is_some_and(|v| v.phase == Phase::Concluded)
            {
                done += 1;
            }
        }
        if done == links.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            say(format!(
                "only {done} of {} channels closed and paid out within 120 s",
                links.len()
            ));
            return Ok(());
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), events.recv()).await;
    }
}
