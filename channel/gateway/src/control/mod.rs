//! The control API: JSON lines over a Unix socket that only the gateway's owner can open
//! (mode 0600). One request line, one response line.

use std::path::Path;

use gridchan_channel::{
    Amount, ChannelId, ChannelView, Command, IntervalIndex, MeterTolerance, OpenRequest, Tariff,
};
use gridchan_transport::PeerAddr;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::engine::EngineHandle;
use crate::error::GatewayError;

use self::trading::trading_line;

mod evidence;
use evidence::{evidence_for, evidence_text};
mod trading;

/// How many of the ledger queue's latest finished transactions `status` looks through for one
/// that did not go through.
const RECENT_FINISHED: usize = 20;

/// Intervals `channel show` lists unless told otherwise.
pub const DEFAULT_SHOWN_INTERVALS: usize = 12;
/// The most intervals one `show` lists: over three months of 15-minute intervals.
pub const MAX_SHOWN_INTERVALS: usize = 10_000;

fn default_shown_intervals() -> usize {
    DEFAULT_SHOWN_INTERVALS
}

/// The longest request line: the largest request is an `open` with a tariff of a few dozen
/// bands, well under a kilobyte. A longer line is answered with an error and the connection
/// closed, so a runaway client cannot make the daemon buffer without end.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

/// A request to the daemon.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Status,
    /// The channels (those paid out too if `all`) and the proposals waiting for an answer.
    List {
        #[serde(default)]
        all: bool,
    },
    Show {
        channel: String,
        /// How many of the most recent settled intervals to list (at most
        /// [`MAX_SHOWN_INTERVALS`]).
        #[serde(default = "default_shown_intervals")]
        intervals: usize,
    },
    Open {
        /// `PUBKEY@HOST:PORT`
        peer: String,
        /// Micro-units.
        deposit: u64,
        peer_deposit: u64,
        /// The tariff in its written form (`flat 0.15`, `tou +01:00 0-7=0.10,...`).
        tariff: String,
        #[serde(default = "default_window")]
        challenge_window_blocks: u64,
        /// What each side's readings rest on: `none` (their word) or `signed` (their meters');
        /// left out: each side whose meter is known (ours signing, theirs named) is bound to
        /// its meter's signed readings, the other's are its word.
        #[serde(default)]
        evidence: Option<String>,
        /// The neighbour's meter key (hex); left out: the one `[[peers]] meter` names.
        #[serde(default)]
        peer_meter: Option<String>,
    },
    Close {
        channel: String,
    },
    ForceClose {
        channel: String,
    },
    /// Add our tokens to an open channel (micro-units): a ledger transaction, then a state
    /// that credits them once the ledger confirmed it.
    TopUp {
        channel: String,
        amount: u64,
    },
    /// Take part of our balance out of an open channel (micro-units): a state that withdraws
    /// it, signed by both, then a ledger transaction that pays it.
    Withdraw {
        channel: String,
        amount: u64,
    },
    /// Accept a neighbour's proposal that waits for an answer (an id prefix is enough).
    Accept {
        channel: String,
    },
    /// Decline a neighbour's proposal that waits for an answer, telling it why.
    Reject {
        channel: String,
        #[serde(default)]
        reason: String,
    },
    /// Withdraw our own proposal the neighbour has not accepted yet.
    Cancel {
        channel: String,
    },
    TowerAdd {
        /// `PUBKEY@HOST:PORT`
        address: String,
    },
    TowerList,
    TowerRemove {
        /// A prefix of the tower's node id.
        tower: String,
    },
    /// Join a neighbourhood market: a channel with its market node, on its terms.
    MarketJoin {
        /// The market node, `PUBKEY@HOST:PORT`.
        address: String,
        /// Micro-units this home deposits (what it may spend on energy).
        deposit: u64,
        /// Micro-units it asks the market node to deposit (what the market may pay it).
        market_deposit: u64,
    },
    /// Leave the markets this home is a member of (close their channels).
    MarketLeave,
}

fn default_window() -> u64 {
    30
}

/// The daemon's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Status {
        node: String,
        address: String,
        /// Channels not yet paid out.
        channels: usize,
        /// Channels paid out (closed for good).
        #[serde(default)]
        closed: usize,
        /// The account's tokens on the ledger (outside its channels), when the ledger answers,
        /// or why it did not.
        balance: Option<String>,
        balance_error: Option<String>,
        /// On a ledger that charges fees (an EVM chain's gas), what the account has for them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fees: Option<gridchan_chain::Fees>,
        /// Ledger transactions waiting to be included, and why the last attempt failed.
        ledger_pending: usize,
        ledger_error: Option<String>,
        /// The neighbours: configured, with a channel, or connected.
        #[serde(default)]
        peers: Vec<crate::peers::PeerStatus>,
        /// What the meter last gave.
        #[serde(default)]
        meter: crate::meter::MeterStatus,
        /// Whether the gateway trades, or the first reason it does not, in one line.
        #[serde(default)]
        trading: String,
        /// Neighbours' channel proposals waiting for our answer.
        #[serde(default)]
        offers: usize,
        /// The latest of the recent ledger transactions that did not go through (refused, or
        /// included but failed): the queue is done with it, and a person should know.
        #[serde(default)]
        ledger_failed: Option<crate::ledger_queue::FinishedTx>,
        /// Where Prometheus metrics are served (`[metrics] listen`), if they are.
        #[serde(default)]
        metrics: Option<String>,
        /// Where the household's page is served (`[page] listen`), if it is.
        #[serde(default)]
        page: Option<String>,
        /// The data folder and the bytes its files take.
        #[serde(default)]
        data_folder: String,
        #[serde(default)]
        data_bytes: u64,
        /// The automatic funds policy (`[funds]`) and what it last did.
        #[serde(default)]
        funds: crate::funds::FundsStatus,
    },
    Channels {
        channels: Vec<ChannelSummary>,
        /// Channels paid out and left out of the list (`--all` shows them).
        #[serde(default)]
        hidden: usize,
        /// Neighbours' proposals waiting for our answer.
        #[serde(default)]
        offers: Vec<OfferSummary>,
    },
    Channel {
        channel: ChannelSummary,
        /// The most recent settled intervals, newest first.
        recent: Vec<crate::store::TradeRow>,
        /// Once the channel is on its way off the ledger: what the ledger holds (the version
        /// registered, or the one it paid out, and what each side gets), and any difference
        /// from our newest state.
        #[serde(default)]
        ledger: Option<String>,
    },
    Opened {
        channel: String,
    },
    /// A market joined: the channel, and the market's terms in words.
    Joined {
        channel: String,
        terms: String,
    },
    /// Market channels closing.
    Left {
        channels: Vec<String>,
    },
    Done,
    Towers {
        towers: Vec<crate::towers::TowerSummary>,
    },
    TowerRemoved {
        address: String,
        /// Channels the tower had not acknowledged at their newest state.
        unacknowledged: usize,
    },
    Error {
        message: String,
    },
}

/// A neighbour's channel proposal as its owner decides on it: every term.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OfferSummary {
    pub channel: String,
    pub peer: String,
    /// What we would deposit, and the neighbour, micro-units.
    pub deposit: u64,
    pub peer_deposit: u64,
    pub tariff: String,
    pub challenge_window_blocks: u64,
    pub funding_window_blocks: u64,
    pub interval_seconds: u32,
    pub tolerance_wh: u32,
    pub tolerance_permille: u16,
    /// What each side's readings rest on (`none`, `signed`, ...), and the meters it names.
    #[serde(default)]
    pub evidence: String,
    /// Seconds it has waited.
    pub waiting_s: u64,
}

impl OfferSummary {
    fn of(o: &gridchan_channel::Offer, now_ms: u64) -> OfferSummary {
        let p = &o.params;
        OfferSummary {
            channel: o.id.to_string(),
            peer: o.peer.to_string(),
            deposit: p.deposit_b.0,
            peer_deposit: p.deposit_a.0,
            tariff: p.tariff.to_string(),
            evidence: evidence_text(&p.evidence, gridchan_channel::Party::B),
            challenge_window_blocks: p.challenge_window_blocks,
            funding_window_blocks: p.funding_window_blocks,
            interval_seconds: p.interval_seconds,
            tolerance_wh: p.tolerance.absolute_wh,
            tolerance_permille: p.tolerance.permille,
            waiting_s: now_ms.saturating_sub(o.received_ms) / 1000,
        }
    }
}

/// A channel the ledger paid out: nothing more happens to it.
pub(crate) fn paid_out(c: &gridchan_channel::ChannelView) -> bool {
    c.phase == gridchan_channel::Phase::Concluded
}

/// One channel as a person sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChannelSummary {
    pub channel: String,
    pub peer: String,
    pub phase: String,
    pub version: u64,
    /// Our balance and the peer's, micro-units.
    pub balance: u64,
    pub peer_balance: u64,
    /// Energy we sold to the peer and bought from it, Wh.
    pub sold_wh: u64,
    pub bought_wh: u64,
    pub last_interval: u64,
    pub frozen: bool,
    /// The agreed tariff, written as `--tariff` takes it.
    pub tariff: String,
    /// What each side's readings rest on, and the meters the channel names.
    #[serde(default)]
    pub evidence: String,
    /// Which party we are (`A` opened the channel), as the history's `seller` names them.
    #[serde(default)]
    pub me: String,
    /// The channel's metering interval: interval `i` starts at `i * interval_seconds` (UTC).
    #[serde(default)]
    pub interval_seconds: u32,
    /// Why the neighbour refused to open the channel (it is then `Concluded` with nothing on
    /// the ledger).
    #[serde(default)]
    pub open_refused: Option<String>,
    /// Whether the neighbour is connected now, and if not, why the last dial failed.
    #[serde(default)]
    pub peer_connected: bool,
    #[serde(default)]
    pub peer_error: Option<String>,
    /// We withdrew our proposal before the neighbour accepted it (`channel cancel`).
    #[serde(default)]
    pub withdrawn: bool,
    /// What we added to the open channel and took out of it, as the newest state counts them
    /// (micro-units, cumulative).
    #[serde(default)]
    pub added: u64,
    #[serde(default)]
    pub taken_out: u64,
    /// A top-up or withdrawal on its way (ours or the neighbour's), for a person.
    #[serde(default)]
    pub funds_pending: Option<String>,
}

impl ChannelSummary {
    /// `v` as the CLI shows it; `connected`: the neighbours connected now (the engine's view).
    pub fn of(
        v: &ChannelView,
        peers: &crate::peers::Peers,
        connected: &std::collections::HashSet<gridchan_channel::NodeId>,
    ) -> ChannelSummary {
        let (peer_connected, peer_error) = peers.connection(&v.peer, connected);
        let s = v.current.as_ref().map(|c| c.state().clone());
        let get = |f: &dyn Fn(&gridchan_channel::State) -> u64| s.as_ref().map(f).unwrap_or(0);
        let me = v.me;
        ChannelSummary {
            channel: v.id.to_string(),
            peer: v.peer.to_string(),
            phase: format!("{:?}", v.phase),
            version: get(&|s| s.version.0),
            balance: get(&|s| s.balance(me).0),
            peer_balance: get(&|s| s.balance(me.other()).0),
            sold_wh: get(&|s| s.energy_from(me).0),
            bought_wh: get(&|s| s.energy_from(me.other()).0),
            last_interval: get(&|s| s.last_interval.0),
            frozen: v.frozen,
            tariff: v.params.tariff.to_string(),
            evidence: evidence_text(&v.params.evidence, me),
            me: format!("{me:?}"),
            open_refused: v
                .refused
                .as_ref()
                .filter(|(version, _)| version.0 == 0)
                .map(|(_, why)| why.to_string()),
            interval_seconds: v.params.interval_seconds,
            peer_connected,
            peer_error,
            withdrawn: v.phase == gridchan_channel::Phase::Concluded
                && v.current.is_none()
                && v.refused.is_none(),
            added: get(&|s| s.funds.topped_up[me.index()].0),
            taken_out: get(&|s| s.funds.withdrawn[me.index()].0),
            funds_pending: s.as_ref().and_then(|s| funds_pending(v, s)),
        }
    }
}

/// A top-up or withdrawal under way on `v` whose newest state is `s`, said for a person.
fn funds_pending(v: &ChannelView, s: &gridchan_channel::State) -> Option<String> {
    let me = v.me.index();
    let ledger = &v.funds.ledger;
    let mut parts = Vec::new();
    let topped = ledger.topped_up[me]
        .0
        .saturating_sub(s.funds.topped_up[me].0);
    if topped > 0 {
        parts.push(format!(
            "a top-up of {} is on the ledger, waiting for the neighbour to countersign it",
            Amount(topped)
        ));
    }
    let asked = v
        .funds
        .withdraw_wanted
        .0
        .saturating_sub(s.funds.withdrawn[me].0);
    if asked > 0 {
        parts.push(format!(
            "a withdrawal of {} waits for the neighbour's signature",
            Amount(asked)
        ));
    }
    let unpaid = s.funds.withdrawn[me]
        .0
        .saturating_sub(ledger.withdrawn[me].0);
    if unpaid > 0 {
        parts.push(format!(
            "a withdrawal of {} is signed, waiting for the ledger to pay it",
            Amount(unpaid)
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// What the control API answers from.
#[derive(Clone)]
pub struct Gateway {
    pub engine: EngineHandle,
    pub interval_seconds: u32,
    pub clock: crate::clock::SimClock,
    pub towers: crate::towers::Towers,
    pub peers: crate::peers::Peers,
    pub meter: std::sync::Arc<std::sync::Mutex<crate::meter::MeterStatus>>,
    /// For the account's balance in `status`.
    pub ledger: std::sync::Arc<dyn gridchan_chain::Ledger>,
    /// The neighbours whose readings must be signed, by meter key (`[[peers]] meter`): the
    /// others are taken at their word, and `status` says which is which.
    pub meters: std::collections::HashMap<gridchan_channel::NodeId, gridchan_channel::NodeId>,
    /// This home's meter key, when its meter signs its readings.
    pub own_meter: Option<gridchan_channel::NodeId>,
    /// Where Prometheus metrics are served, if they are.
    pub metrics: Option<std::net::SocketAddr>,
    /// Where the household's page is served, if it is.
    pub page: Option<std::net::SocketAddr>,
    /// The data folder (its size is in `status`).
    pub data: std::path::PathBuf,
    /// The automatic funds policy and what it last did.
    pub funds: std::sync::Arc<std::sync::Mutex<crate::funds::FundsStatus>>,
}

/// The bytes the files under `dir` take (its subfolders too, a few levels deep).
fn folder_bytes(dir: &Path, depth: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() && depth > 0 => folder_bytes(&e.path(), depth - 1),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}

/// Serves the control API on `path` until the task is aborted.
pub async fn serve(path: &Path, gateway: Gateway) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    // The socket's owner is the gateway's user: only it (and root) may use the API, even if
    // the file's mode is loosened by mistake.
    let owner = std::fs::metadata(path)?.uid();
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: the API stays up and tries again shortly.
                tracing::warn!("control API: cannot accept a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let caller = stream.peer_cred().map(|c| c.uid()).ok();
        if caller != Some(owner) && caller != Some(0) {
            tracing::warn!("control API: refused a caller with uid {caller:?}");
            let refusal = Response::Error {
                message: format!(
                    "the gateway's control API answers only its owner (uid {owner}); you are uid {}",
                    caller.map_or("unknown".to_string(), |u| u.to_string())
                ),
            };
            let mut line = serde_json::to_string(&refusal).unwrap_or_default();
            line.push('\n');
            let _ = stream.write_all(line.as_bytes()).await;
            continue;
        }
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let _ = handle(stream, gateway).await;
        });
    }
}

async fn handle(stream: UnixStream, gateway: Gateway) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = MAX_REQUEST_LINE as u64 + 1;
        if (&mut read).take(limit).read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let too_long = line.len() > MAX_REQUEST_LINE;
        let response = if too_long {
            Response::Error {
                message: format!(
                    "bad request: a request line is at most {MAX_REQUEST_LINE} bytes; closing the connection"
                ),
            }
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(req) => answer(req, &gateway).await,
                Err(e) => Response::Error {
                    message: format!("bad request: {e}"),
                },
            }
        };
        let mut out = serde_json::to_string(&response).unwrap_or_default();
        out.push('\n');
        write.write_all(out.as_bytes()).await?;
        if too_long {
            return Ok(());
        }
    }
}

fn parse_channel(s: &str, channels: &[ChannelView]) -> Result<ChannelId, GatewayError> {
    let matches: Vec<&ChannelView> = channels
        .iter()
        .filter(|c| c.id.to_string().starts_with(&s.to_lowercase()))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.id),
        [] => Err(GatewayError::Request(format!(
            "no channel {s}: see `gridchan channel list`"
        ))),
        _ => Err(GatewayError::Request(format!(
            "{s} matches several channels: give more digits"
        ))),
    }
}

async fn answer(req: Request, gateway: &Gateway) -> Response {
    let Gateway {
        engine,
        interval_seconds,
        clock,
        towers,
        peers,
        meter,
        ledger,
        meters,
        own_meter,
        metrics,
        page,
        data,
        funds,
    } = gateway;
    let (interval_seconds, clock) = (*interval_seconds, clock.clone());
    let err = |message: String| Response::Error { message };
    let (channels, connected, offers) =
        match tokio::try_join!(engine.channels(), engine.connected_peers(), engine.offers()) {
            Ok(all) => all,
            Err(e) => return err(e.to_string()),
        };
    match req {
        Request::Status => {
            let q = engine.ledger_queue.clone();
            let queue = tokio::task::spawn_blocking(move || {
                Ok::<_, gridchan_channel::StoreError>((q.pending()?, q.finished(RECENT_FINISHED)?))
            })
            .await;
            let (pending, finished) = match queue {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => return err(format!("cannot read the ledger queue: {e}")),
                Err(e) => return err(e.to_string()),
            };
            // The ledger may be away (island mode): then the status says so and answers.
            let (balance, fees) = tokio::join!(
                balance(ledger.as_ref(), &engine.node),
                tokio::time::timeout(LEDGER_WAIT, ledger.fees()),
            );
            let balance = balance.map(|b| b.to_string());
            // Shown when known; the balance's error says why the ledger is away.
            let fees = fees.ok().and_then(Result::ok).flatten();
            let meter_now = meter.lock().unwrap_or_else(|p| p.into_inner()).clone();
            Response::Status {
                metrics: metrics.map(|a| format!("http://{a}/metrics")),
                page: page.map(|a| format!("http://{a}/")),
                data_folder: data.display().to_string(),
                data_bytes: folder_bytes(data, 3),
                funds: funds.lock().map(|f| f.clone()).unwrap_or_default(),
                node: engine.node.to_string(),
                address: engine.address.to_string(),
                channels: channels.iter().filter(|c| !paid_out(c)).count(),
                closed: channels.iter().filter(|c| paid_out(c)).count(),
                balance: balance.as_ref().ok().cloned(),
                balance_error: balance.err().map(|e| e.to_string()),
                fees,
                ledger_pending: pending.len(),
                ledger_error: pending.first().and_then(|p| p.last_error.clone()),
                ledger_failed: finished
                    .into_iter()
                    .find(|f| !f.outcome.starts_with("included")),
                peers: peers
                    .status(&crate::peers::live(&channels), &connected)
                    .into_iter()
                    .map(|mut p| {
                        // The meter a live channel's terms name for the neighbour, else the
                        // one the owner names.
                        let node: Option<gridchan_channel::NodeId> = p.node.parse().ok();
                        let named = channels
                            .iter()
                            .filter(|c| Some(c.peer) == node && !paid_out(c))
                            .find_map(|c| c.params.evidence.meter(c.me.other()));
                        p.meter = named
                            .or_else(|| node.and_then(|n| meters.get(&n).copied()))
                            .map(|m| hex::encode(m.to_bytes()));
                        p
                    })
                    .collect(),
                trading: trading_line(
                    &channels,
                    &connected,
                    offers.len(),
                    &meter_now,
                    interval_seconds,
                ),
                meter: meter_now,
                offers: offers.len(),
            }
        }
        Request::List { all } => Response::Channels {
            channels: channels
                .iter()
                .filter(|c| all || !paid_out(c))
                .map(|c| ChannelSummary::of(c, peers, &connected))
                .collect(),
            hidden: if all {
                0
            } else {
                channels.iter().filter(|c| paid_out(c)).count()
            },
            offers: offers
                .iter()
                .map(|o| OfferSummary::of(o, clock.now_ms()))
                .collect(),
        },
        Request::Show { channel, intervals } => match parse_channel(&channel, &channels) {
            Ok(id) => match channels.iter().find(|c| c.id == id) {
                Some(view) => Response::Channel {
                    channel: ChannelSummary::of(view, peers, &connected),
                    recent: engine
                        .recent_trades(id, intervals.min(MAX_SHOWN_INTERVALS))
                        .await
                        .unwrap_or_default(),
                    ledger: ledger_view(ledger.as_ref(), view).await,
                },
                None => err(format!("no channel {channel}")),
            },
            Err(e) => err(e.to_string()),
        },
        Request::Open {
            peer,
            deposit,
            peer_deposit,
            tariff,
            challenge_window_blocks,
            evidence,
            peer_meter,
        } => {
            let tariff: Tariff = match tariff.parse() {
                Ok(t) => t,
                Err(e) => return err(e.to_string()),
            };
            let peer: PeerAddr = match peer.parse() {
                Ok(p) => p,
                Err(e) => return err(format!("{e}")),
            };
            let theirs = match peer_meter
                .as_deref()
                .map(str::parse::<gridchan_channel::NodeId>)
            {
                Some(Ok(m)) => Some(m),
                Some(Err(_)) => {
                    return err("--peer-meter: not a meter key (66 hex digits)".to_string())
                }
                None => meters.get(&peer.node).copied(),
            };
            let evidence = match evidence_for(evidence.as_deref(), *own_meter, theirs) {
                Ok(e) => e,
                Err(e) => return err(e),
            };
            if let Err(e) = can_fund(
                ledger.as_ref(),
                engine.node,
                peer.node,
                deposit,
                peer_deposit,
            )
            .await
            {
                return err(e.to_string());
            }
            if let Err(e) = peers.remember(&peer) {
                return err(format!("cannot record the neighbour's address: {e}"));
            }
            let now = clock.now_ms() / 1000;
            let mut nonce = [0u8; 32];
            rand::fill(&mut nonce);
            let req = OpenRequest {
                peer: peer.node,
                deposit: Amount(deposit),
                peer_deposit: Amount(peer_deposit),
                tariff,
                challenge_window_blocks,
                funding_window_blocks: 60,
                interval_seconds,
                tolerance: MeterTolerance {
                    absolute_wh: 5,
                    permille: 20,
                },
                opened_at: IntervalIndex::containing(now, interval_seconds),
                nonce,
                evidence,
            };
            match engine.open(req).await {
                Ok(id) => {
                    // The neighbour of a new channel is dialled by the same job as every other.
                    peers.check_now();
                    Response::Opened {
                        channel: id.to_string(),
                    }
                }
                Err(e) => err(e.to_string()),
            }
        }
        Request::Accept { channel } => match parse_offer(&channel, &offers) {
            Ok(id) => done(engine.command(Command::Accept(id)).await),
            Err(e) => err(e.to_string()),
        },
        Request::Reject { channel, reason } => match parse_offer(&channel, &offers) {
            Ok(channel) => done(engine.command(Command::Reject { channel, reason }).await),
            Err(e) => err(e.to_string()),
        },
        Request::Cancel { channel } => {
            on_channel(engine, &channel, &channels, Command::Cancel).await
        }
        Request::Close { channel } => on_channel(engine, &channel, &channels, Command::Close).await,
        Request::ForceClose { channel } => {
            on_channel(engine, &channel, &channels, Command::ForceClose).await
        }
        Request::TopUp { channel, amount } => {
            on_channel(engine, &channel, &channels, |channel| Command::TopUp {
                channel,
                amount: Amount(amount),
            })
            .await
        }
        Request::Withdraw { channel, amount } => {
            on_channel(engine, &channel, &channels, |channel| Command::Withdraw {
                channel,
                amount: Amount(amount),
            })
            .await
        }
        Request::TowerAdd { address } => match address.parse() {
            Ok(addr) => match towers.add(addr) {
                Ok(()) => Response::Done,
                Err(e) => err(e.to_string()),
            },
            Err(e) => err(format!("{e}")),
        },
        Request::TowerList => match towers.list().await {
            Ok(towers) => Response::Towers { towers },
            Err(e) => err(e.to_string()),
        },
        Request::MarketJoin {
            address,
            deposit,
            market_deposit,
        } => {
            let market: PeerAddr = match address.parse() {
                Ok(p) => p,
                Err(e) => return err(format!("{e}")),
            };
            if let Err(e) = can_fund(
                ledger.as_ref(),
                engine.node,
                market.node,
                deposit,
                market_deposit,
            )
            .await
            {
                return err(e.to_string());
            }
            if let Err(e) = peers.remember(&market) {
                return err(format!("cannot record the market node's address: {e}"));
            }
            let mut nonce = [0u8; 32];
            rand::fill(&mut nonce);
            let now = clock.now_ms() / 1000;
            let join = crate::market::Join {
                market,
                deposit: Amount(deposit),
                market_deposit: Amount(market_deposit),
                interval_seconds,
                challenge_window_blocks: default_window(),
                funding_window_blocks: 60,
                opened_at: IntervalIndex::containing(now, interval_seconds),
                nonce,
                meter: *own_meter,
            };
            match crate::market::join(engine, join).await {
                Ok((id, terms)) => {
                    peers.check_now();
                    Response::Joined {
                        channel: id.to_string(),
                        terms: Tariff::Market(Box::new(terms)).to_string(),
                    }
                }
                Err(e) => err(e.to_string()),
            }
        }
        Request::MarketLeave => match crate::market::leave(engine, None).await {
            Ok(ids) => Response::Left {
                channels: ids.iter().map(|c| c.to_string()).collect(),
            },
            Err(e) => err(e.to_string()),
        },
        Request::TowerRemove { tower } => match towers.remove(&tower).await {
            Ok((addr, unacknowledged)) => Response::TowerRemoved {
                address: addr.to_string(),
                unacknowledged,
            },
            Err(e) => err(e.to_string()),
        },
    }
}

/// `Done`, or the error in one line.
fn done(result: Result<(), crate::engine::EngineError>) -> Response {
    match result {
        Ok(()) => Response::Done,
        Err(e) => Response::Error {
            message: e.to_string(),
        },
    }
}

/// The waiting proposal an id prefix names.
fn parse_offer(s: &str, offers: &[gridchan_channel::Offer]) -> Result<ChannelId, GatewayError> {
    let s = s.to_ascii_lowercase();
    let found: Vec<_> = offers
        .iter()
        .filter(|o| o.id.to_string().starts_with(&s))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.id),
        [] => Err(GatewayError::Request(format!(
            "no proposal {s} waits for an answer: `gridchan channel list` shows those that do"
        ))),
        _ => Err(GatewayError::Request(format!(
            "{s} names several proposals: give more of the id"
        ))),
    }
}

/// Refuses a channel whose deposits the ledger says cannot be paid: ours, or the neighbour's,
/// above what the account holds outside channels. A ledger that does not answer refuses
/// nothing (island mode: the deposit waits in the queue).
async fn can_fund(
    ledger: &dyn gridchan_chain::Ledger,
    me: gridchan_channel::NodeId,
    peer: gridchan_channel::NodeId,
    deposit: u64,
    peer_deposit: u64,
) -> Result<(), GatewayError> {
    let (mine, theirs) = tokio::join!(balance(ledger, &me), balance(ledger, &peer));
    match (mine, theirs) {
        (Ok(held), _) if held.0 < deposit => Err(GatewayError::Request(format!(
            "you have {held} tokens on the ledger outside channels: a deposit of {} needs more (see `gridchan status`)",
            Amount(deposit)
        ))),
        (_, Ok(held)) if held.0 < peer_deposit => Err(GatewayError::Request(format!(
            "the neighbour has {held} tokens on the ledger outside channels: it cannot fund a --peer-deposit of {}",
            Amount(peer_deposit)
        ))),
        _ => Ok(()),
    }
}

/// What the ledger holds of a channel that is leaving it (disputed, closed or paid out),
/// compared with our newest state; `None` while it trades, or when the ledger does not answer.
async fn ledger_view(ledger: &dyn gridchan_chain::Ledger, view: &ChannelView) -> Option<String> {
    use gridchan_channel::Phase;
    if !matches!(
        view.phase,
        Phase::Disputed | Phase::ClosedCooperatively | Phase::Concluded
    ) {
        return None;
    }
    let ours = view.current.as_ref()?;
    let account = match tokio::time::timeout(LEDGER_WAIT, ledger.channel(&view.id)).await {
        Ok(Ok(Some(account))) => account,
        Ok(Ok(None)) => return Some("the ledger has no record of this channel".into()),
        Ok(Err(e)) => return Some(format!("the ledger cannot be asked now: {e}")),
        Err(_) => return Some("the ledger did not answer in time".into()),
    };
    let newest = ours.version().0;
    let me = view.me.index();
    Some(match account.status {
        gridchan_chain::ChannelStatus::Registered {
            version, deadline, ..
        } if version.0 < newest => format!(
            "version {} is registered on the ledger, older than our version {newest}: refuting it with ours (the window ends at block {deadline})",
            version.0
        ),
        gridchan_chain::ChannelStatus::Registered {
            version, deadline, ..
        } => format!(
            "version {} is registered on the ledger (our newest); it pays out after block {deadline}",
            version.0
        ),
        gridchan_chain::ChannelStatus::Concluded { version } if version.0 == newest => {
            let (mine, theirs) = (
                ours.state().balance(view.me),
                ours.state().balance(view.me.other()),
            );
            format!(
                "the ledger paid out version {} (our newest): {mine} to you, {theirs} to the neighbour; {} left to withdraw",
                version.0, account.claimable[me]
            )
        }
        gridchan_chain::ChannelStatus::Concluded { version } => format!(
            "WARNING: the ledger paid out version {}, not our newest version {newest}: it paid by an older (or other) state than ours; {} left for you to withdraw",
            version.0, account.claimable[me]
        ),
        other => format!("the ledger says the channel is {}", other.name()),
    })
}

/// How long the control API waits for the ledger before it answers without it.
const LEDGER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The tokens `node` holds on the ledger outside channels, or why that is not known now.
async fn balance(
    ledger: &dyn gridchan_chain::Ledger,
    node: &gridchan_channel::NodeId,
) -> Result<Amount, GatewayError> {
    match tokio::time::timeout(LEDGER_WAIT, ledger.account(node)).await {
        Ok(Ok(a)) => Ok(a.balance),
        Ok(Err(e)) => Err(GatewayError::Ledger(e.to_string())),
        Err(_) => Err(GatewayError::Ledger(format!(
            "the ledger did not answer within {} s",
            LEDGER_WAIT.as_secs()
        ))),
    }
}

/// Carries out `command` on the channel an id prefix names.
async fn on_channel(
    engine: &EngineHandle,
    channel: &str,
    channels: &[ChannelView],
    command: impl FnOnce(ChannelId) -> Command,
) -> Response {
    match parse_channel(channel, channels) {
        Ok(id) => done(engine.command(command(id)).await),
        Err(e) => Response::Error {
            message: e.to_string(),
        },
    }
}
