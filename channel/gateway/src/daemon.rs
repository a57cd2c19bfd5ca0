//! The gateway daemon: the engine plus the jobs around it: dialling neighbours, metering on the
//! wall clock with announcement rounds, following the ledger, and submitting what the core asks
//! of the ledger.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gridchan_chain::{ChainEvent, ChannelStatus, Ledger, Subscription};
use gridchan_channel::{ChannelId, IntervalIndex, LedgerEvent, Party, Phase};
use gridchan_transport::PeerAddr;
use tokio::task::JoinHandle;

use crate::engine::EngineHandle;
use crate::error::GatewayError;
use crate::ledger_queue::{blocking, run_submitter, LedgerQueue};
use crate::meter::MeterSource;
use gridchan_channel::metering;

/// The least a round waits for its neighbours' totals in real time, whatever the clock's
/// speed-up: on a sped-up demo clock a tenth of an interval can be a few milliseconds.
const MIN_ROUND_WAIT: Duration = Duration::from_millis(50);

/// A running daemon: its engine, and the jobs that stop when it is dropped.
pub struct Daemon {
    pub engine: EngineHandle,
    pub towers: crate::towers::Towers,
    pub peers: crate::peers::Peers,
    /// What the meter last gave.
    pub meter: Arc<std::sync::Mutex<crate::meter::MeterStatus>>,
    /// The funds policy and what it last did.
    pub funds: Arc<std::sync::Mutex<crate::funds::FundsStatus>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.towers.stop();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What the daemon's jobs need besides the engine.
pub struct DaemonParts {
    pub engine: EngineHandle,
    /// The gateway's SQLite file: the towers and the neighbours keep their tables there.
    pub store_path: std::path::PathBuf,
    pub ledger: Arc<dyn Ledger>,
    /// The home's meter; `None` for a gateway without one (a market node).
    pub meter: Option<Box<dyn MeterSource>>,
    pub interval_seconds: u32,
    pub peers: Vec<PeerAddr>,
    /// The clock intervals follow (wall time, or sped up for demos).
    pub clock: crate::clock::SimClock,
    /// Watchtowers from the configuration (more can be added at run time).
    pub towers: Vec<PeerAddr>,
    /// The gateway's key, to authenticate to towers (they know their clients by it).
    pub tower_key: gridchan_channel::Signer,
    /// The automatic top-up and sweep (`[funds]`), if configured.
    pub funds: Option<crate::funds::FundsPolicy>,
    /// How long per-interval history is kept (`[history]`); `None` keeps it all.
    pub history: Option<crate::history::HistoryPolicy>,
    /// Towers that must hold a channel's newest state before it signs a newer one (the
    /// engine's policy says the same).
    pub min_acks: u8,
}

/// Starts the daemon's jobs.
pub fn start(parts: DaemonParts) -> Result<Daemon, GatewayError> {
    let DaemonParts {
        engine,
        store_path,
        ledger,
        meter,
        interval_seconds,
        peers,
        clock,
        towers,
        tower_key,
        funds,
        history,
        min_acks,
    } = parts;
    let towers = crate::towers::Towers::start(
        engine.clone(),
        store_path.clone(),
        tower_key,
        &towers,
        min_acks,
    )?;
    let queue = engine.ledger_queue.clone();
    let peers = crate::peers::Peers::open(&store_path, &peers)?;
    let meter_status: Arc<std::sync::Mutex<crate::meter::MeterStatus>> = Arc::default();
    let mut tasks = vec![
        tokio::spawn(crate::peers::keep_connected(engine.clone(), peers.clone())),
        tokio::spawn(run_submitter(queue.clone(), ledger.clone())),
        tokio::spawn(read_balance(engine.clone(), ledger.clone())),
        tokio::spawn(follow_ledger(engine.clone(), ledger.clone(), queue)),
    ];
    if let Some(policy) = history {
        tasks.push(tokio::spawn(crate::history::keep_history(
            engine.clone(),
            store_path.clone(),
            policy,
            clock.clone(),
        )));
    }
    let funds_status: Arc<std::sync::Mutex<crate::funds::FundsStatus>> = Arc::default();
    if let Some(policy) = funds {
        funds_status.lock().expect("new").policy = Some(policy.describe());
        tasks.push(tokio::spawn(crate::funds::keep_funded(
            engine.clone(),
            ledger.clone(),
            policy,
            clock.clone(),
            interval_seconds,
            funds_status.clone(),
        )));
    }
    if let Some(meter) = meter {
        let log = crate::readings::ReadingLog::open(&store_path)?;
        tasks.push(tokio::spawn(meter_intervals(
            engine.clone(),
            meter,
            interval_seconds,
            clock,
            meter_status.clone(),
            log,
        )));
    }
    Ok(Daemon {
        engine,
        towers,
        peers,
        meter: meter_status,
        funds: funds_status,
        tasks,
    })
}

/// Deadlines the follower watches: challenge windows of registered channels and funding
/// windows.
#[derive(Default)]
struct Deadlines {
    windows: BTreeMap<ChannelId, u64>,
    funding: BTreeMap<ChannelId, u64>,
}

/// Follows the ledger block by block and tells the core what happened to its channels.
///
/// It starts by reading the ledger's current view of every channel (what happened while the
/// gateway was down), then follows blocks from that height on: nothing is missed, and nothing
/// older than a restart is replayed.
/// How often the daemon reads its account's balance for the accept policy.
const BALANCE_EVERY: Duration = Duration::from_secs(30);

/// Tells the engine the account's tokens on the ledger outside channels, at start and every
/// [`BALANCE_EVERY`]: the accept policy deposits at most its share of them into a channel a
/// neighbour proposes. While the ledger does not answer, the last balance read stands.
async fn read_balance(engine: EngineHandle, ledger: Arc<dyn Ledger>) {
    let mut every = tokio::time::interval(BALANCE_EVERY);
    loop {
        every.tick().await;
        let read = tokio::time::timeout(Duration::from_secs(5), ledger.account(&engine.node)).await;
        if let Ok(Ok(account)) = read {
            if engine.balance(account.balance).await.is_err() {
                return;
            }
        }
    }
}

async fn follow_ledger(engine: EngineHandle, ledger: Arc<dyn Ledger>, queue: Arc<LedgerQueue>) {
    let mut deadlines = Deadlines::default();
    let mut backoff = Duration::from_millis(200);
    let start = loop {
        match catch_up(&engine, &ledger, &queue, &mut deadlines).await {
            Ok(height) => break height,
            Err(e) => {
                tracing::warn!("cannot follow the ledger: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    let Deadlines {
        mut windows,
        mut funding,
    } = deadlines;
    let mut sub = Subscription::new(ledger.clone(), start + 1);
    loop {
        let block = sub.next_retrying().await;
        for event in block.events() {
            // Ours only: the ledger serves everyone's channels (on a public chain, many).
            let Some(id) = event.channel() else { continue };
            if !matches!(engine.channel(id).await, Ok(Some(_))) {
                continue;
            }
            let (channel, ev) = match event {
                ChainEvent::Funded { channel } => {
                    funding.remove(channel);
                    (*channel, LedgerEvent::Funded)
                }
                ChainEvent::Deposited { channel, .. } => {
                    if !funding.contains_key(channel) {
                        if let Ok(Some(acc)) = ledger.channel(channel).await {
                            if let ChannelStatus::Funding { deadline } = acc.status {
                                funding.insert(*channel, deadline);
                            }
                        }
                    }
                    continue;
                }
                ChainEvent::Registered {
                    channel,
                    version,
                    deadline,
                } => {
                    windows.insert(*channel, *deadline);
                    (*channel, LedgerEvent::Registered { version: *version })
                }
                ChainEvent::Refuted {
                    channel,
                    version,
                    deadline,
                } => {
                    windows.insert(*channel, *deadline);
                    (*channel, LedgerEvent::Refuted { version: *version })
                }
                ChainEvent::Concluded {
                    channel,
                    version,
                    payout,
                } => {
                    windows.remove(channel);
                    withdraw_payout(&engine, &queue, *channel, *payout).await;
                    (*channel, LedgerEvent::Concluded { version: *version })
                }
                ChainEvent::ToppedUp {
                    channel,
                    party,
                    total,
                    ..
                } => (
                    *channel,
                    LedgerEvent::ToppedUp {
                        party: *party,
                        total: *total,
                    },
                ),
                ChainEvent::WithdrawnOpen {
                    channel,
                    party,
                    total,
                    ..
                } => (
                    *channel,
                    LedgerEvent::Withdrawn {
                        party: *party,
                        total: *total,
                    },
                ),
                _ => continue,
            };
            let _ = engine.ledger_event(channel, ev).await;
        }
        let height = block.height;
        let closed: Vec<ChannelId> = windows
            .iter()
            .filter(|(_, d)| height > **d)
            .map(|(c, _)| *c)
            .collect();
        for c in closed {
            windows.remove(&c);
            let _ = engine.ledger_event(c, LedgerEvent::WindowClosed).await;
        }
        let expired: Vec<ChannelId> = funding
            .iter()
            .filter(|(_, d)| height > **d)
            .map(|(c, _)| *c)
            .collect();
        for c in expired {
            funding.remove(&c);
            let _ = engine.ledger_event(c, LedgerEvent::FundingExpired).await;
        }
    }
}

/// Reads the ledger's view of each of our channels and tells the core what it missed; records
/// the deadlines to watch. Returns the height the view was read at.
async fn catch_up(
    engine: &EngineHandle,
    ledger: &Arc<dyn Ledger>,
    queue: &Arc<LedgerQueue>,
    deadlines: &mut Deadlines,
) -> Result<u64, GatewayError> {
    let ledger_err = |e: gridchan_chain::LedgerError| GatewayError::Ledger(e.to_string());
    let height = ledger.height().await.map_err(ledger_err)?;
    let channels = engine.channels().await?;
    for view in channels {
        if matches!(view.phase, Phase::AwaitingAccept | Phase::Concluded) {
            continue;
        }
        let Some(account) = ledger.channel(&view.id).await.map_err(ledger_err)? else {
            continue;
        };
        let id = view.id;
        if account.status == ChannelStatus::Open {
            // Top-ups and withdrawals while we were away (the core ignores what it knew).
            for party in [Party::A, Party::B] {
                let i = party.index();
                for event in [
                    LedgerEvent::ToppedUp {
                        party,
                        total: account.funds.topped_up[i],
                    },
                    LedgerEvent::Withdrawn {
                        party,
                        total: account.funds.withdrawn[i],
                    },
                ] {
                    let _ = engine.ledger_event(id, event).await;
                }
            }
        }
        let missed = match account.status {
            ChannelStatus::Funding { deadline } => {
                deadlines.funding.insert(id, deadline);
                None
            }
            ChannelStatus::Open => (view.phase == Phase::Funding).then_some(LedgerEvent::Funded),
            ChannelStatus::Expired => {
                (view.phase == Phase::Funding).then_some(LedgerEvent::FundingExpired)
            }
            ChannelStatus::Registered {
                version, deadline, ..
            } => {
                deadlines.windows.insert(id, deadline);
                Some(LedgerEvent::Registered { version })
            }
            ChannelStatus::Concluded { version } => {
                let claim = account.claimable[view.me.index()];
                if claim.0 > 0 {
                    withdraw_payout(engine, queue, id, account.claimable).await;
                }
                Some(LedgerEvent::Concluded { version })
            }
        };
        if let Some(event) = missed {
            tracing::info!("ledger: channel {} caught up: {event:?}", id.short());
            let _ = engine.ledger_event(id, event).await;
        }
    }
    Ok(height)
}

/// Queues the withdrawal of our payout of a concluded channel into our account.
async fn withdraw_payout(
    engine: &EngineHandle,
    queue: &Arc<LedgerQueue>,
    channel: ChannelId,
    payout: [gridchan_channel::Amount; 2],
) {
    let Ok(Some(view)) = engine.channel(channel).await else {
        return;
    };
    let amount = payout[view.me.index()];
    if amount.0 > 0 {
        let tx = gridchan_chain::TxKind::Withdraw { channel, amount };
        if let Err(e) = blocking(queue, move |q| q.push(Some(&channel), &tx)).await {
            tracing::error!(
                "withdrawal of {amount} from {} not queued: {e}",
                channel.short()
            );
        }
    }
}

/// Every interval: read the meter and hand the reading to the engine, which runs the round of
/// announcements with the neighbours trading now and gives each channel its reading.
async fn meter_intervals(
    engine: EngineHandle,
    mut meter: Box<dyn MeterSource>,
    interval_seconds: u32,
    clock: crate::clock::SimClock,
    status: Arc<std::sync::Mutex<crate::meter::MeterStatus>>,
    log: crate::readings::ReadingLog,
) {
    let period_ms = u64::from(interval_seconds) * 1000;
    let mut log_failed = false;
    let mut next_boundary = (clock.now_ms() / period_ms + 1) * period_ms;
    loop {
        // Until the clock reads the boundary (a sleep rounds down, and a held clock has not
        // started): a reading never goes out before its interval ended.
        while clock.now_ms() < next_boundary {
            let wait = clock.until(next_boundary).max(Duration::from_millis(1));
            tokio::time::sleep(wait.min(Duration::from_millis(250))).await;
        }
        // The interval that just ended.
        let interval = IntervalIndex(next_boundary / period_ms - 1);
        next_boundary += period_ms;
        let start = interval.0 * u64::from(interval_seconds);
        // A live meter's reading comes with its first sample after the boundary: wait for it
        // until the meter's settle time has passed on the clock.
        let settled = next_boundary - period_ms + meter.settle_ms();
        let mut reading = meter.reading(interval);
        while reading.is_none() && clock.now_ms() < settled {
            tokio::time::sleep(clock.until(settled).min(Duration::from_millis(20))).await;
            reading = meter.reading(interval);
        }
        let Some(own) = reading else {
            let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
            s.problem = meter.problem();
            if s.missing_since.is_none() {
                tracing::warn!(
                    "the meter has no reading for the interval from {} (and trading waits for one)",
                    crate::clock::utc_minute(start)
                );
                s.missing_since = Some(start);
            }
            continue;
        };
        // The home's own record of its meter, for its statements (said once if it cannot be
        // kept: trading does not depend on it).
        match log.record(interval, own) {
            Err(e) if !log_failed => {
                tracing::warn!("cannot keep the meter's readings for statements: {e}");
                log_failed = true;
            }
            Err(_) => {}
            Ok(()) => log_failed = false,
        }
        *status.lock().unwrap_or_else(|p| p.into_inner()) = crate::meter::MeterStatus {
            last_read: Some((start, own.import.0, own.export.0)),
            missing_since: None,
            problem: None,
        };
        // Round 1 waits a tenth of the interval (of the clock's time) for the neighbours'
        // totals, and never less than MIN_ROUND_WAIT of real time.
        let deadline = metering::round_deadline_ms(interval, interval_seconds);
        let wait = clock.until(deadline).max(MIN_ROUND_WAIT);
        let signed = meter.signed_reading(interval);
        if engine
            .meter_signed(interval, own, signed, wait)
            .await
            .is_err()
        {
            return; // the engine stopped
        }
    }
}
