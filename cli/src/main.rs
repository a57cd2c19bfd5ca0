//! `gridchan`: the command-line tool. Thin: it parses arguments and calls library code.

use gridchan_gateway::control::{DEFAULT_SHOWN_INTERVALS, MAX_SHOWN_INTERVALS};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use gridchan_channel::{Amount, NodeId, PricePerKwh, Tariff};

fn parse_tariff(s: &str) -> Result<Tariff, gridchan_channel::TariffError> {
    s.parse()
}

/// gridchan: peer-to-peer energy trading over state channels.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// What to log (to standard error): error, warn, info, debug, trace, or a filter such as
    /// `warn,gridchan_gateway=debug`; overrides GRIDCHAN_LOG.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run a benchmark and print it beside its floor, measured in the same run.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
    /// The neighbourhood in one command: a ledger, a watchtower and N gateways on loopback trade
    /// a recorded day, live through a dispute, close, and print what trading was worth.
    Demo(gridchan_cli::demo::DemoOptions),
    /// Print the signed-state test vectors of specs/encoding.md, computed by this build.
    Vectors {
        /// Print the wire's frame vectors instead (specs/vectors/frames.json).
        #[arg(long)]
        frames: bool,
    },
    /// Run a home energy gateway: trade with the neighbours every metering interval.
    Daemon {
        /// The gateway's config file (see `gridchan init`).
        #[arg(long)]
        config: PathBuf,
    },
    /// Take this gateway's channels' newest states from its watchtowers after its data folder
    /// was lost or rolled back (the daemon refuses to start until then). The daemon must be
    /// stopped.
    Restore {
        /// The gateway's config file (its key, ledger and [[towers]]).
        #[arg(long, default_value = "gridchan.toml")]
        config: PathBuf,
    },
    /// A statement of what this home traded with whom over a month or a day (its local
    /// time): per neighbour and market, energy and money by day, with the states that prove
    /// them. Reads the channel store; the daemon may be running.
    Report {
        /// The gateway's config file.
        #[arg(long, default_value = "gridchan.toml")]
        config: PathBuf,
        /// The month, 2026-11.
        #[arg(long, conflicts_with = "day", required_unless_present = "day")]
        month: Option<String>,
        /// The day, 2026-11-03.
        #[arg(long)]
        day: Option<String>,
        /// Print the day lines as CSV.
        #[arg(long, conflicts_with_all = ["json", "quarter_hours"])]
        csv: bool,
        /// Print JSON for scripts.
        #[arg(long, conflicts_with = "quarter_hours")]
        json: bool,
        /// Print the home's quarter-hour balances as CSV (received and delivered per interval).
        #[arg(long)]
        quarter_hours: bool,
    },
    /// Open, inspect and close channels of a running gateway.
    Channel {
        /// The gateway's config file.
        #[arg(long, global = true, default_value = "gridchan.toml")]
        config: PathBuf,
        /// Print JSON for scripts.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: ChannelAction,
    },
    /// The watchtowers guarding a running gateway's channels.
    Tower {
        #[arg(long, global = true, default_value = "gridchan.toml")]
        config: PathBuf,
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: TowerAction,
    },
    /// The adjudicator on an EVM chain.
    Evm {
        #[command(subcommand)]
        action: EvmAction,
    },
    /// Run a watchtower (`--config FILE`), or inspect one (status, clients, channels).
    Watchtower {
        /// The tower's config file (see `gridchan watchtower init`).
        #[arg(long, global = true, default_value = "watchtower.toml")]
        config: PathBuf,
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: Option<WatchtowerAction>,
    },
    /// A neighbourhood market: run a market node (`--config FILE`, see `market init`), or join
    /// and leave one from a running home gateway.
    Market {
        /// The market node's config (running it), or the home gateway's (join, leave).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: Option<MarketAction>,
    },
    /// Show a running gateway: its identity and address, its account on the ledger, its meter and its neighbours.
    Status {
        #[arg(long, default_value = "gridchan.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Create a gateway: a new identity key (mode 0600) and a commented config file.
    Init {
        /// Folder to create them in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Where neighbours will reach this gateway.
        #[arg(long, default_value = "127.0.0.1:7500")]
        listen: SocketAddr,
        /// The ledger node, PUBKEY@HOST:PORT (as `gridchan ledger` prints it).
        #[arg(long, default_value = "PUBKEY@127.0.0.1:7400")]
        ledger: String,
        /// The home's meter: `p1:/dev/ttyUSB0` (a P1 cable), `p1:HOST:PORT` (a P1 dongle or
        /// ser2net), `csv:FILE` (interval readings) or `sim` (a simulated home, its own seed).
        #[arg(long, default_value = "sim")]
        meter: String,
        /// The household's time zone (an IANA name such as Europe/Amsterdam); this machine's
        /// when left out.
        #[arg(long)]
        time_zone: Option<String>,
        /// Run the clock this many times faster than wall time, to try gridchan with simulated
        /// meters (1800: a 15-minute interval every half second); every neighbour the same.
        #[arg(long, default_value_t = 1)]
        speedup: u32,
    },
    /// Run the local ledger node: blocks, the adjudication contract, served over QUIC.
    Ledger {
        /// Folder for the chain database and the node key (created if missing).
        #[arg(long)]
        data: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7400")]
        listen: SocketAddr,
        /// Block period in milliseconds.
        #[arg(long, default_value_t = 1000)]
        block_ms: u64,
        /// Initial balance NODEID=TOKENS (repeatable; only when creating the ledger).
        #[arg(long, value_parser = gridchan_cli::ledger::parse_fund)]
        fund: Vec<(NodeId, Amount)>,
        /// Shortest challenge window a channel may have, in blocks.
        #[arg(long, default_value_t = 10)]
        min_challenge_window: u64,
        /// Clients connected at once (every gateway holds one or two).
        #[arg(long, default_value_t = 256)]
        max_clients: usize,
        /// Serve Prometheus metrics (height, transactions waiting, supply) on this address.
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
    },
}

#[derive(Subcommand)]
enum ChannelAction {
    /// Propose a channel to a neighbour.
    Open {
        /// The neighbour, PUBKEY@HOST:PORT.
        peer: String,
        /// Our deposit, in tokens.
        #[arg(long, value_parser = gridchan_cli::ledger::parse_amount)]
        deposit: Amount,
        /// The neighbour's deposit, in tokens.
        #[arg(long, value_parser = gridchan_cli::ledger::parse_amount, default_value = "0")]
        peer_deposit: Amount,
        /// The price schedule, in tokens per kWh: `flat 0.15`, or a time-of-use table
        /// `tou Europe/Amsterdam 0-7=0.10,7-17=0.18,17-21=0.28,21-24=0.10 [WEEKEND RANGES]`
        /// (the local clock: a time zone, which follows daylight saving, or a fixed UTC offset
        /// such as +01:00; then hour ranges covering the day).
        #[arg(long, value_parser = parse_tariff, default_value = "flat 0.15", conflicts_with = "price")]
        tariff: Tariff,
        /// Shorthand for `--tariff "flat PRICE"`.
        #[arg(long, value_parser = gridchan_cli::ledger::parse_amount)]
        price: Option<Amount>,
        /// What each side's readings rest on: `none` (its word) or `signed` (its meter signs
        /// them; needs [signing_meter] here and the neighbour's meter key). Default: each side
        /// whose meter is known (ours signing, theirs named) is bound to it.
        #[arg(long, value_parser = ["none", "signed"])]
        evidence: Option<String>,
        /// The neighbour's meter key (66 hex digits); default: its [[peers]] `meter`.
        #[arg(long)]
        peer_meter: Option<String>,
    },
    /// List channels (those paid out only with --all) and proposals waiting for an answer.
    List {
        /// Also the channels paid out.
        #[arg(long)]
        all: bool,
    },
    /// Show one channel (an id prefix is enough) and its most recent settled intervals.
    Show {
        channel: String,
        /// How many recent intervals to list.
        #[arg(long, default_value_t = DEFAULT_SHOWN_INTERVALS as u64,
              value_parser = clap::value_parser!(u64).range(1..=MAX_SHOWN_INTERVALS as u64))]
        intervals: u64,
    },
    /// Close cooperatively: both sign a final state, the ledger pays at once.
    Close { channel: String },
    /// Close unilaterally: register our newest state and wait out the challenge window.
    ForceClose { channel: String },
    /// Add tokens from our account to an open channel without closing it: the ledger takes
    /// them, then both sign a state that credits them (trading goes on meanwhile).
    Topup {
        channel: String,
        /// In tokens.
        #[arg(long, value_parser = gridchan_cli::ledger::parse_amount)]
        amount: Amount,
    },
    /// Take part of our balance out of an open channel without closing it: both sign a state
    /// that withdraws it, then the ledger pays it into our account.
    Withdraw {
        channel: String,
        /// In tokens.
        #[arg(long, value_parser = gridchan_cli::ledger::parse_amount)]
        amount: Amount,
    },
    /// Accept a neighbour's proposal that waits for your answer (`channel list` shows them).
    Accept { channel: String },
    /// Decline a neighbour's proposal that waits for your answer; the neighbour sees the reason.
    Reject {
        channel: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Withdraw your own proposal that the neighbour has not accepted yet (a mistyped key, a
    /// neighbour that never answers).
    Cancel { channel: String },
}

#[derive(Subcommand)]
enum TowerAction {
    /// Hand every new state to this tower too: PUBKEY@HOST:PORT.
    Add { address: String },
    /// The towers, and how up to date each is.
    List,
    /// Stop using a tower (a prefix of its node id is enough).
    Remove { tower: String },
}

#[derive(Subcommand)]
enum WatchtowerAction {
    /// Write a new tower config (its key is created on first start).
    Init {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:7600")]
        listen: SocketAddr,
        /// The ledger node, PUBKEY@HOST:PORT.
        #[arg(long)]
        ledger: String,
    },
    /// What the tower guards, how far it has followed the ledger, and what it did.
    Status,
    /// The tower's clients and how many channels each has guarded.
    Clients,
    /// Every guarded channel with the version held.
    Channels,
}

#[derive(Subcommand)]
enum MarketAction {
    /// Create a market node: a new key (mode 0600) and a commented config with a new market id.
    Init {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Where members reach the market node.
        #[arg(long, default_value = "127.0.0.1:7700")]
        listen: SocketAddr,
        /// The ledger node, PUBKEY@HOST:PORT.
        #[arg(long, default_value = "PUBKEY@127.0.0.1:7400")]
        ledger: String,
    },
    /// Join a market: open a channel with its market node on its terms (the home's gateway must
    /// be running).
    Join {
        /// The market node, PUBKEY@HOST:PORT.
        address: String,
        /// What this home deposits: what it may spend on energy, in tokens.
        #[arg(long, value_parser = gridchan_cli::ledger::parse_amount)]
        deposit: Amount,
        /// What the market node deposits: what it may pay this home for its sales, in tokens.
        #[arg(long, value_parser = gridchan_cli::ledger::parse_amount, default_value = "5")]
        market_deposit: Amount,
    },
    /// Leave the markets this home is a member of: their channels close cooperatively.
    Leave,
}

#[derive(Subcommand)]
enum EvmAction {
    /// Deploy the adjudicator (and, without --token, a test token for dev chains) and print
    /// the addresses and the gateway config section that uses them.
    Deploy {
        /// The chain's JSON-RPC address.
        #[arg(long, default_value = "http://127.0.0.1:8545")]
        rpc: String,
        /// The key file of the deploying account (it pays the gas).
        #[arg(long)]
        key: PathBuf,
        /// The ERC-20 settlement token; left out, a test token is deployed (dev chains only).
        #[arg(long)]
        token: Option<String>,
        /// The shortest challenge window channels may choose, in blocks.
        #[arg(long, default_value_t = 20)]
        min_challenge_window: u64,
        /// Print the addresses as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the EVM account of a key file (a node's key is its account: fund it for gas).
    Address {
        /// A gateway's or a tower's key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Mint test tokens on a dev chain (the test token `deploy` made lets anyone mint), paid
    /// by the gateway of --config.
    Mint {
        /// How many tokens (up to six decimals).
        #[arg(long, value_parser = gridchan_cli::ledger::parse_amount)]
        amount: Amount,
        /// The node to mint for; the gateway itself when left out.
        #[arg(long)]
        to: Option<NodeId>,
        #[arg(long, default_value = "gridchan.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// A simulated year of a household's data folder: 10 channels settling every 15 minutes,
    /// written through the gateway's store, with the history rolled up after 90 days and kept
    /// whole, side by side.
    Year {
        /// Days to simulate.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Channels.
        #[arg(long, default_value_t = 10)]
        channels: usize,
    },
    /// The protocol core alone: one channel's updates through the in-memory harness, both sides
    /// signing and verifying, beside 2 signs + 2 verifies.
    Core {
        /// Updates to settle.
        #[arg(long, default_value_t = 20_000)]
        updates: u64,
    },
    /// One channel between two gateway processes over QUIC with durable SQLite writes: update
    /// latency p50/p99 beside a floor measured in the same run.
    Gateway {
        /// Updates to time.
        #[arg(long, default_value_t = 2_000)]
        updates: usize,
        /// Run the many-channel benchmark instead, with this many channels.
        #[arg(long)]
        channels: Option<usize>,
        /// Intervals to settle on every channel (with --channels).
        #[arg(long, default_value_t = 10)]
        rounds: usize,
    },
    /// The watchtower: states accepted per second beside 2 signature verifications, storage
    /// after many updates, and blocks from a stale registration to its refute.
    Tower {
        /// States to hand the tower.
        #[arg(long, default_value_t = 20_000)]
        states: usize,
        /// Updates per channel for the storage measurement.
        #[arg(long, default_value_t = 10_000)]
        updates: u64,
    },
    /// The EVM adjudicator: gas of every operation, on a fresh anvil.
    Evm,
    /// A market node and its members in one process: from each book's deadline to every
    /// settlement durable at both ends, p50/p99, beside N updates' cryptography on 2 cores.
    Market {
        #[arg(long, default_value_t = 100)]
        members: usize,
        #[arg(long, default_value_t = 20)]
        intervals: usize,
        /// Real milliseconds per 15-minute interval.
        #[arg(long, default_value_t = 2_000)]
        interval_ms: u64,
    },
    /// A gateway under attack: hostile connections doing their worst (a stalled frame, every
    /// extra stream filled, all held) while an honest neighbour settles, drops and comes back;
    /// the gateway's resident memory beside the 64 MB goal.
    Hostile {
        /// Hostile connections to open.
        #[arg(long, default_value_t = 256)]
        connections: usize,
    },
    /// The peer process of `bench gateway` (started by it; not for people).
    #[command(hide = true)]
    GatewayPeer {
        #[arg(long)]
        dir: PathBuf,
    },
    /// The local ledger: signed transactions applied and committed per second beside the bare
    /// cost of verifying them, and block production time at several loads.
    Ledger {
        /// Transactions to apply.
        #[arg(long, default_value_t = 50_000)]
        transactions: usize,
    },
}

/// Runs `job` on a new runtime until it ends, or until Ctrl-C or SIGTERM: then it is dropped,
/// and with it its services, child processes (anvil, a benchmark's peer) and temporary folders,
/// and `what` fails in one line.
fn until_stopped<T>(what: &str, job: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    runtime()?.block_on(async {
        let mut stop = gridchan_cli::StopSignals::install()?;
        tokio::select! {
            done = job => done,
            signal = stop.recv() => {
                // Below a progress line, not on it.
                eprintln!();
                anyhow::bail!("{signal}: {what} stopped before its end")
            }
        }
    })
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: what went wrong, with its causes.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            eprintln!(
                "error: {}",
                gridchan_cli::one_line_usage_error(&e.render().to_string())
            );
            std::process::exit(2);
        }
    };
    let asked = match cli
        .log_level
        .as_deref()
        .map(tracing_subscriber::EnvFilter::try_new)
    {
        Some(Ok(filter)) => Some(filter),
        Some(Err(e)) => {
            eprintln!(
                "error: --log-level: {e}; write error, warn, info, debug, trace or a filter such as warn,gridchan_gateway=debug"
            );
            std::process::exit(2);
        }
        None => None,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            asked
                .map(Ok)
                .unwrap_or_else(|| tracing_subscriber::EnvFilter::try_from_env("GRIDCHAN_LOG"))
                .unwrap_or_else(|_| {
                    // The demo takes gateways offline on purpose: their warnings are the story
                    // it tells itself, not news.
                    let quiet = matches!(cli.command, Commands::Demo(_));
                    // Otherwise warnings, the hourly trade summaries, and of the QUIC library
                    // only its errors (its warnings are about its own internals).
                    tracing_subscriber::EnvFilter::new(if quiet {
                        "error"
                    } else {
                        "warn,quinn=error,gridchan::trades=info"
                    })
                }),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: a redirected log stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Commands::Bench {
            which: BenchCommand::Core { updates },
        } => gridchan_cli::bench_core(updates),
        Commands::Bench {
            which: BenchCommand::Ledger { transactions },
        } => gridchan_cli::bench_ledger(transactions),
        Commands::Bench {
            which:
                BenchCommand::Gateway {
                    updates,
                    channels,
                    rounds,
                },
        } => until_stopped("the benchmark", async {
            let dir = tempfile::tempdir()?;
            match channels {
                Some(n) => {
                    eprintln!("opening {n} channels, then settling {rounds} intervals on each...");
                    let b = gridchan_bench::gateway::run_many(dir.path(), n, rounds).await;
                    println!("{}", b.report());
                }
                None => gridchan_cli::bench_gateway(dir.path(), updates).await?,
            }
            Ok(())
        }),
        Commands::Bench {
            which: BenchCommand::Tower { states, updates },
        } => until_stopped("the benchmark", async {
            let dir = tempfile::tempdir()?;
            let b = gridchan_bench::tower::run(dir.path(), states, updates).await;
            println!("{}", b.report());
            Ok(())
        }),
        Commands::Bench {
            which: BenchCommand::Year { days, channels },
        } => {
            for keep in [Some(90), None] {
                let dir = tempfile::tempdir()?;
                let y = gridchan_bench::year::run(dir.path(), days, channels, keep);
                let mb = |b: u64| b as f64 / 1_000_000.0;
                println!(
                    "{days} days, {channels} channels, {} settled intervals, history {}: data folder {:.1} MB at the end ({:.1} s)",
                    y.settled,
                    keep.map_or("kept whole".to_string(), |k| format!("rolled up after {k} days")),
                    mb(y.final_bytes),
                    y.seconds
                );
                let months: Vec<String> = y
                    .monthly_bytes
                    .iter()
                    .map(|b| format!("{:.1}", mb(*b)))
                    .collect();
                println!("  MB at the end of each 30 days: {}", months.join(" "));
            }
            if let Some(kb) = gridchan_bench::year::peak_rss_kb() {
                println!(
                    "peak resident memory of this process: {:.1} MB",
                    kb as f64 / 1000.0
                );
            }
            Ok(())
        }
        Commands::Bench {
            which: BenchCommand::Evm,
        } => until_stopped("the benchmark", gridchan_cli::evm::bench()),
        Commands::Bench {
            which:
                BenchCommand::Market {
                    members,
                    intervals,
                    interval_ms,
                },
        } => until_stopped("the benchmark", async {
            let dir = tempfile::tempdir()?;
            eprintln!("{members} members join the market, then {intervals} intervals...");
            let b = gridchan_bench::market::run(dir.path(), members, intervals, interval_ms).await;
            println!("{}", b.report());
            Ok(())
        }),
        Commands::Bench {
            which: BenchCommand::Hostile { connections },
        } => until_stopped("the benchmark", async {
            let dir = tempfile::tempdir()?;
            gridchan_cli::bench_hostile(dir.path(), connections).await
        }),
        Commands::Evm {
            action:
                EvmAction::Deploy {
                    rpc,
                    key,
                    token,
                    min_challenge_window,
                    json,
                },
        } => runtime()?.block_on(async {
            let secret = gridchan_cli::keys::load_secret(&key)?;
            gridchan_cli::evm::deploy(&rpc, &secret, token.as_deref(), min_challenge_window, json)
                .await
        }),
        Commands::Evm {
            action: EvmAction::Address { key },
        } => {
            let id = gridchan_cli::keys::load(&key)?.id();
            println!("{:#x}", gridchan_chain::evm::address_of(&id));
            Ok(())
        }
        Commands::Evm {
            action: EvmAction::Mint { amount, to, config },
        } => runtime()?.block_on(gridchan_cli::evm::mint(&config, to, amount)),
        Commands::Bench {
            which: BenchCommand::GatewayPeer { dir },
        } => runtime()?.block_on(gridchan_cli::bench_gateway_peer(dir)),
        Commands::Daemon { config } => runtime()?.block_on(gridchan_cli::daemon::run(&config)),
        Commands::Restore { config } => runtime()?.block_on(gridchan_cli::restore::run(&config)),
        Commands::Status { config, json } => {
            let r =
                gridchan_cli::channel::call(&config, &gridchan_gateway::control::Request::Status)?;
            gridchan_cli::channel::print(&r, json)
        }
        Commands::Channel {
            config,
            json,
            action,
        } => {
            use gridchan_gateway::control::Request;
            let request = match action {
                ChannelAction::Open {
                    peer,
                    deposit,
                    peer_deposit,
                    tariff,
                    price,
                    evidence,
                    peer_meter,
                } => Request::Open {
                    peer,
                    deposit: deposit.0,
                    peer_deposit: peer_deposit.0,
                    tariff: price
                        .map(|p| Tariff::Flat(PricePerKwh(p.0)))
                        .unwrap_or(tariff)
                        .to_string(),
                    challenge_window_blocks: 30,
                    evidence,
                    peer_meter,
                },
                ChannelAction::List { all } => Request::List { all },
                ChannelAction::Show { channel, intervals } => Request::Show {
                    channel,
                    intervals: intervals as usize,
                },
                ChannelAction::Close { channel } => Request::Close { channel },
                ChannelAction::ForceClose { channel } => Request::ForceClose { channel },
                ChannelAction::Topup { channel, amount } => Request::TopUp {
                    channel,
                    amount: amount.0,
                },
                ChannelAction::Withdraw { channel, amount } => Request::Withdraw {
                    channel,
                    amount: amount.0,
                },
                ChannelAction::Accept { channel } => Request::Accept { channel },
                ChannelAction::Reject { channel, reason } => Request::Reject { channel, reason },
                ChannelAction::Cancel { channel } => Request::Cancel { channel },
            };
            // What to follow afterwards, and until which phase.
            let follow: Option<(String, &[&str])> = match &request {
                Request::Close { channel } | Request::ForceClose { channel } => {
                    Some((channel.clone(), &["Concluded"]))
                }
                _ => None,
            };
            let r = gridchan_cli::channel::call(&config, &request)?;
            if !json && matches!(r, gridchan_gateway::control::Response::Done) {
                match &request {
                    Request::TopUp { amount, .. } => {
                        println!("top-up of {} sent to the ledger; the channel credits it once the ledger confirms it and the neighbour countersigns (`channel show` follows it)", Amount(*amount));
                        return Ok(());
                    }
                    Request::Withdraw { amount, .. } => {
                        println!("withdrawal of {} proposed to the neighbour; once both signed, the ledger pays it into your account (`channel show` follows it)", Amount(*amount));
                        return Ok(());
                    }
                    _ => {}
                }
            }
            gridchan_cli::channel::print(&r, json)?;
            if json {
                return Ok(());
            }
            match (&r, follow) {
                (gridchan_gateway::control::Response::Opened { channel }, _) => {
                    gridchan_cli::channel::follow(&config, channel, &["Open", "Concluded"])
                }
                (gridchan_gateway::control::Response::Done, Some((channel, done))) => {
                    gridchan_cli::channel::follow(&config, &channel, done)
                }
                _ => Ok(()),
            }
        }
        Commands::Init {
            dir,
            listen,
            ledger,
            meter,
            time_zone,
            speedup,
        } => gridchan_cli::init::run(&dir, listen, &ledger, &meter, time_zone.as_deref(), speedup),
        Commands::Tower {
            config,
            json,
            action,
        } => {
            use gridchan_gateway::control::Request;
            let request = match action {
                TowerAction::Add { address } => Request::TowerAdd { address },
                TowerAction::List => Request::TowerList,
                TowerAction::Remove { tower } => Request::TowerRemove { tower },
            };
            let r = gridchan_cli::channel::call(&config, &request)?;
            gridchan_cli::channel::print(&r, json)
        }
        Commands::Watchtower {
            config,
            json,
            action,
        } => match action {
            None => runtime()?.block_on(gridchan_cli::watchtower::run(&config)),
            Some(WatchtowerAction::Init {
                dir,
                listen,
                ledger,
            }) => gridchan_cli::watchtower::init(&dir, listen, &ledger),
            Some(WatchtowerAction::Status) => gridchan_cli::watchtower::status(&config, json),
            Some(WatchtowerAction::Clients) => gridchan_cli::watchtower::clients(&config, json),
            Some(WatchtowerAction::Channels) => gridchan_cli::watchtower::channels(&config, json),
        },
        Commands::Market {
            config,
            json,
            action,
        } => {
            use gridchan_gateway::control::Request;
            let home = || {
                config
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("gridchan.toml"))
            };
            let request = match action {
                None => {
                    let config = config.unwrap_or_else(|| PathBuf::from("market.toml"));
                    return runtime()?.block_on(gridchan_cli::daemon::run(&config));
                }
                Some(MarketAction::Init {
                    dir,
                    listen,
                    ledger,
                }) => return gridchan_cli::init::market(&dir, listen, &ledger),
                Some(MarketAction::Join {
                    address,
                    deposit,
                    market_deposit,
                }) => Request::MarketJoin {
                    address,
                    deposit: deposit.0,
                    market_deposit: market_deposit.0,
                },
                Some(MarketAction::Leave) => Request::MarketLeave,
            };
            let r = gridchan_cli::channel::call(&home(), &request)?;
            gridchan_cli::channel::print(&r, json)?;
            match (&r, json) {
                (gridchan_gateway::control::Response::Joined { channel, .. }, false) => {
                    gridchan_cli::channel::follow(&home(), channel, &["Open", "Concluded"])
                }
                _ => Ok(()),
            }
        }
        Commands::Demo(options) => {
            let ok = until_stopped("the demo", gridchan_cli::demo::run(options))?;
            if !ok {
                anyhow::bail!("a check failed: see the lines marked FAIL above");
            }
            Ok(())
        }
        Commands::Report {
            config,
            month,
            day,
            csv,
            json,
            quarter_hours,
        } => {
            use gridchan_cli::report;
            let text = month.or(day).unwrap_or_default();
            let period = report::Period::parse(&text)?;
            let s = report::statement(&config, &period)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else if csv {
                print!("{}", report::days_csv(&s));
            } else if quarter_hours {
                print!("{}", report::quarter_hours_csv(&s)?);
            } else {
                report::print_text(&s);
            }
            Ok(())
        }
        Commands::Vectors { frames } => {
            if frames {
                print!("{}", gridchan_cli::vectors::frames());
            } else {
                print!("{}", gridchan_cli::vectors::render());
            }
            Ok(())
        }
        Commands::Ledger {
            data,
            listen,
            block_ms,
            fund,
            min_challenge_window,
            max_clients,
            metrics,
        } => runtime()?.block_on(gridchan_cli::ledger::run(
            gridchan_cli::ledger::LedgerOptions {
                data,
                listen,
                block_ms,
                fund,
                min_challenge_window,
                max_clients,
                metrics,
            },
        )),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
