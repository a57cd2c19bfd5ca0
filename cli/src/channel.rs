//! `gridchan channel ...` and `gridchan status`: talk to a running daemon over its control
//! socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{bail, Context, Result};
use gridchan_channel::Amount;
use gridchan_gateway::config::Config;
use gridchan_gateway::control::{ChannelSummary, Request, Response};

/// Sends one request to the daemon of `config` and returns its answer.
pub fn call(config: &Path, request: &Request) -> Result<Response> {
    let config = Config::load(config)?;
    let socket = crate::daemon::control_socket(&config);
    let mut stream = UnixStream::connect(&socket).with_context(|| {
        format!(
            "cannot reach the daemon at {}: is `gridchan daemon --config ...` running?",
            socket.display()
        )
    })?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    // A daemon that refuses the caller answers before reading: read its answer even if the
    // write failed.
    let wrote = stream.write_all(line.as_bytes());
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    if answer.is_empty() {
        wrote?;
    }
    let response: Response =
        serde_json::from_str(&answer).context("the daemon answered something unreadable")?;
    if let Response::Error { message } = &response {
        bail!("{message}");
    }
    Ok(response)
}

/// What an account has for gas, for people: its balance of the chain's coin and about how
/// many transactions that pays for, with a warning when it runs low.
pub fn gas_line(fees: &gridchan_chain::Fees) -> String {
    let n = fees.transactions();
    let mut line = format!(
        "{} of the chain's coin: about {n} transactions at the current gas price",
        fees.coins()
    );
    if fees.is_low() {
        line.push_str(" (low: send coin to this account, see `gridchan evm address`)");
    }
    line
}

/// Prints a response: JSON for scripts, a table for people.
pub fn print(response: &Response, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(response)?);
        return Ok(());
    }
    match response {
        Response::Status {
            node,
            address,
            channels,
            closed,
            balance,
            balance_error,
            fees,
            ledger_pending,
            ledger_error,
            peers,
            meter,
            trading,
            ledger_failed,
            offers,
            metrics,
            page,
            data_folder,
            data_bytes,
            funds,
        } => {
            if !trading.is_empty() {
                println!("{trading}");
            }
            println!("node      {node}");
            println!("address   {address}");
            if let Some(m) = metrics {
                println!("metrics   {m}");
            }
            if let Some(p) = page {
                println!("page      {p}");
            }
            if let Some(policy) = &funds.policy {
                println!("funds     {policy}");
                if let Some(last) = &funds.last {
                    println!("          last: {last}");
                }
            }
            if !data_folder.is_empty() {
                println!(
                    "data      {:.1} MB in {data_folder}",
                    *data_bytes as f64 / 1_000_000.0
                );
            }
            match closed {
                0 => println!("channels  {channels}"),
                n => println!("channels  {channels} (and {n} paid out)"),
            }
            match (balance, balance_error) {
                (Some(b), _) => println!("balance   {b} tokens on the ledger, outside channels"),
                (None, Some(e)) => println!("balance   unknown: {e}"),
                (None, None) => println!("balance   unknown"),
            }
            if let Some(fees) = fees {
                println!("gas       {}", gas_line(fees));
            }
            match (ledger_pending, ledger_error) {
                (0, _) if balance_error.is_some() => {
                    println!("ledger    nothing of ours waits to be sent (the ledger is not answering now)")
                }
                (0, _) => println!("ledger    up to date"),
                (n, None) => println!("ledger    {n} transaction(s) on their way"),
                (n, Some(e)) => println!("ledger    {n} transaction(s) waiting: {e}"),
            }
            if let Some(f) = ledger_failed {
                let channel = f
                    .channel
                    .as_deref()
                    .map(|c| format!(" of channel {}", &c[..8.min(c.len())]))
                    .unwrap_or_default();
                println!(
                    "          the last that did not go through: {}{channel}, {}",
                    f.what, f.outcome
                );
            }
            match (meter.last_read, meter.missing_since) {
                (_, Some(since)) => println!(
                    "meter     no reading since {}: trading waits for the meter{}{}",
                    utc_time(since),
                    meter
                        .last_read
                        .map(|(at, _, _)| format!(" (last reading {})", utc_time(at)))
                        .unwrap_or_default(),
                    meter
                        .problem
                        .as_ref()
                        .map(|p| format!("; last problem: {p}"))
                        .unwrap_or_default()
                ),
                (Some((at, import, export)), None) => println!(
                    "meter     {}: imported {import} Wh, exported {export} Wh",
                    utc_time(at)
                ),
                (None, None) => println!("meter     no interval has ended yet"),
            }
            if *offers > 0 {
                println!(
                    "proposals {offers} from neighbours wait for your answer: see `gridchan channel list`"
                );
            }
            peers_lines(peers);
        }
        Response::Channels {
            channels,
            hidden,
            offers,
        } => {
            table(channels);
            if *hidden > 0 {
                println!("({hidden} closed channel(s) not shown: --all lists them)");
            }
            offers_table(offers);
        }
        Response::Channel {
            channel,
            recent,
            ledger,
        } => {
            table(std::slice::from_ref(channel));
            println!();
            if let Some(ledger) = ledger {
                println!("ledger: {ledger}");
            }
            println!("tariff: {}", channel.tariff);
            println!("readings: {}", channel.evidence);
            if channel.added > 0 || channel.taken_out > 0 {
                println!(
                    "while open you added {} and took out {}",
                    Amount(channel.added),
                    Amount(channel.taken_out)
                );
            }
            if let Some(pending) = &channel.funds_pending {
                println!("under way: {pending}");
            }
            if recent.is_empty() {
                println!("no intervals settled yet");
            }
            for t in recent {
                println!(
                    "  v{:<6} {}  {} {:>6} Wh at {}/kWh = {}",
                    t.version,
                    interval_start(t.interval, channel.interval_seconds),
                    if t.seller == channel.me {
                        "you sold  "
                    } else {
                        "you bought"
                    },
                    t.energy_wh,
                    Amount(t.price),
                    Amount(t.amount)
                );
            }
        }
        Response::Opened { channel } => {
            println!(
                "opened {channel}: waiting for the neighbour to accept, then both deposits on the ledger"
            );
        }
        Response::Joined { channel, terms } => {
            println!("joined: channel {channel} under {terms}");
            println!("waiting for the market node to accept, then both deposits on the ledger");
        }
        Response::Left { channels } => {
            for c in channels {
                println!("leaving: channel {c} closes cooperatively");
            }
        }
        Response::Done => println!("done"),
        Response::Towers { towers } => {
            if towers.is_empty() {
                println!("no watchtowers: add one with `gridchan tower add PUBKEY@HOST:PORT`");
            }
            for t in towers {
                println!(
                    "{}  acknowledged {}  pending {}{}",
                    t.address,
                    t.acknowledged,
                    t.pending,
                    t.last_error
                        .as_ref()
                        .map(|e| format!("  last error: {e}"))
                        .unwrap_or_default()
                );
            }
        }
        Response::TowerRemoved {
            address,
            unacknowledged,
        } => {
            println!("removed {address}");
            if *unacknowledged > 0 {
                println!(
                    "it had not acknowledged the newest state of {unacknowledged} channel(s): \
                     keep another tower, or this gateway online, to guard them"
                );
            }
        }
        Response::Error { message } => println!("error: {message}"),
    }
    Ok(())
}

/// When interval `index` of `interval_seconds` starts, in UTC (`2025-07-14 10:15 UTC`).
fn interval_start(index: u64, interval_seconds: u32) -> String {
    utc_time(index.saturating_mul(u64::from(interval_seconds)))
}

/// A Unix time in seconds as `2025-07-14 10:15 UTC`.
fn utc_time(seconds: u64) -> String {
    i64::try_from(seconds)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(
            || format!("{seconds} s after 1970"),
            |t| t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
        )
}

/// The neighbours in `status`: how many are connected, then one line each.
fn peers_lines(peers: &[gridchan_gateway::peers::PeerStatus]) {
    if peers.is_empty() {
        println!("peers     none yet: list neighbours under [[peers]], or open a channel");
        return;
    }
    let up = peers.iter().filter(|p| p.connected).count();
    println!("peers     {up} of {} connected", peers.len());
    for p in peers {
        let place = p
            .address
            .as_deref()
            .and_then(|a| a.split_once('@'))
            .map_or("(dialled us)", |(_, hostport)| hostport);
        let how = match (p.connected, &p.last_error) {
            (true, _) => "connected".to_string(),
            (false, Some(e)) => format!("not connected, retrying: {e}"),
            (false, None) if p.address.is_some() => "not connected".to_string(),
            (false, None) => "not connected (it dials us)".to_string(),
        };
        let readings = match &p.meter {
            Some(m) => format!("readings signed by meter {}", &m[..8.min(m.len())]),
            None => "readings taken at its word".to_string(),
        };
        println!("          {}  {place:<21}  {how}; {readings}", &p.node[..8]);
    }
}

/// Neighbours' proposals waiting for the owner's answer, each with every term.
fn offers_table(offers: &[gridchan_gateway::control::OfferSummary]) {
    if offers.is_empty() {
        return;
    }
    println!();
    println!("proposed by neighbours, waiting for your answer:");
    for o in offers {
        println!(
            "  {}  from {}  you deposit {}, they deposit {}  tariff {}",
            &o.channel[..8],
            &o.peer[..16.min(o.peer.len())],
            Amount(o.deposit),
            Amount(o.peer_deposit),
            o.tariff
        );
        println!("            readings: {}", o.evidence);
        println!(
            "            windows {} / {} blocks (challenge / funding), {} s intervals, meter tolerance {} Wh or {} permille, waiting {} min",
            o.challenge_window_blocks,
            o.funding_window_blocks,
            o.interval_seconds,
            o.tolerance_wh,
            o.tolerance_permille,
            o.waiting_s / 60
        );
        println!(
            "            `gridchan channel accept {0}` or `gridchan channel reject {0} --reason TEXT`",
            &o.channel[..8]
        );
    }
}

fn table(channels: &[ChannelSummary]) {
    if channels.is_empty() {
        println!("no channels: open one with `gridchan channel open PUBKEY@HOST:PORT --deposit N`");
        return;
    }
    println!(
        "{:<10} {:<10} {:<20} {:>7} {:>14} {:>14} {:>10} {:>10}",
        "channel", "peer", "phase", "version", "balance", "peer balance", "sold Wh", "bought Wh"
    );
    for c in channels {
        println!(
            "{:<10} {:<10} {:<20} {:>7} {:>14} {:>14} {:>10} {:>10}{}",
            &c.channel[..8],
            &c.peer[..8],
            c.phase,
            c.version,
            Amount(c.balance).to_string(),
            Amount(c.peer_balance).to_string(),
            c.sold_wh,
            c.bought_wh,
            if c.frozen {
                "  FROZEN: a write to the data folder failed; signing nothing, retrying (check its disk)"
                    .to_string()
            } else if let Some(why) = &c.open_refused {
                format!("  the neighbour refused to open it: {why}")
            } else if c.withdrawn {
                "  withdrawn before the neighbour accepted".to_string()
            } else if let Some(pending) = &c.funds_pending {
                format!("  {pending}")
            } else if !c.peer_connected
                && !matches!(c.phase.as_str(), "Concluded" | "ClosedCooperatively")
            {
                match &c.peer_error {
                    Some(e) => format!("  neighbour not connected, retrying: {e}"),
                    None => "  neighbour not connected".to_string(),
                }
            } else {
                String::new()
            }
        );
    }
}

/// What a channel in `phase` is doing, for a person following it.
fn phase_line(phase: &str) -> &str {
    match phase {
        "AwaitingAccept" => "waiting for the neighbour to accept...",
        "Funding" => "both signed version 0; waiting for both deposits on the ledger...",
        "Open" => "open: trading every interval",
        "Closing" => "closing: agreeing the final state with the neighbour...",
        "ClosedCooperatively" => {
            "both signed the final state; waiting for the ledger to pay it out..."
        }
        "Disputed" => "closing through the ledger: waiting out the challenge window...",
        "Concluded" => "paid out on the ledger",
        other => other,
    }
}

/// How long `channel open` waits for the neighbour to accept before it returns, leaving the
/// proposal listed.
const AWAIT_ACCEPT: std::time::Duration = std::time::Duration::from_secs(20);

/// Shows a channel's progress, a line per phase it enters, until it reaches one of `done`
/// (for up to two minutes; the daemon carries on after that). While it waits for a neighbour
/// that cannot be reached, it says why; while it waits for a ledger that does not answer, it
/// says so and stops following (the daemon's queue submits when the ledger is back).
pub fn follow(config: &Path, channel: &str, done: &[&str]) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut last = String::new();
    let mut last_error = None;
    let mut ledger_checked = std::time::Instant::now();
    let mut awaiting: Option<std::time::Instant> = None;
    loop {
        let (phase, peer_error, open_refused) = match call(
            config,
            &Request::Show {
                channel: channel.to_string(),
                intervals: 0,
            },
        )? {
            Response::Channel { channel, .. } => {
                (channel.phase, channel.peer_error, channel.open_refused)
            }
            _ => (String::new(), None, None),
        };
        if let Some(why) = open_refused {
            anyhow::bail!("the neighbour refused the channel: {why}");
        }
        let needs_peer = matches!(phase.as_str(), "AwaitingAccept" | "Closing");
        if needs_peer && peer_error.is_some() && peer_error != last_error {
            eprintln!(
                "  cannot reach the neighbour yet ({}); retrying",
                peer_error.as_deref().unwrap_or_default()
            );
        }
        last_error = peer_error;
        if phase != last {
            eprintln!("  {}", phase_line(&phase));
            last = phase.clone();
        }
        if done.contains(&phase.as_str()) {
            return Ok(());
        }
        let needs_ledger = matches!(
            phase.as_str(),
            "Funding" | "ClosedCooperatively" | "Disputed"
        );
        if needs_ledger && ledger_checked.elapsed() >= std::time::Duration::from_secs(2) {
            ledger_checked = std::time::Instant::now();
            if let Response::Status {
                ledger_pending,
                ledger_error: Some(e),
                ..
            } = call(config, &Request::Status)?
            {
                if ledger_pending > 0 {
                    eprintln!(
                        "  the ledger does not answer ({e}): the daemon keeps its transaction queued and submits it when the ledger is back; check with `gridchan status`"
                    );
                    return Ok(());
                }
            }
        }
        if phase == "AwaitingAccept" {
            let since = *awaiting.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= AWAIT_ACCEPT {
                eprintln!(
                    "  the neighbour has not accepted yet (its owner may be asked to): the proposal stays listed in `gridchan channel list`; `gridchan channel cancel {}` withdraws it",
                    &channel[..8.min(channel.len())]
                );
                return Ok(());
            }
        }
        if std::time::Instant::now() >= deadline {
            let hint = if phase == "Closing" {
                "; if the neighbour stays away, `gridchan channel force-close` closes without it"
            } else {
                ""
            };
            eprintln!(
                "  still {last}: it continues in the daemon; check with `gridchan channel list`{hint}"
            );
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::gas_line;
    use gridchan_chain::Fees;

    #[test]
    fn the_gas_line_warns_when_fewer_than_ten_transactions_are_paid_for() {
        let at = |balance: u128| Fees {
            balance,
            gas_price: 1_000_000_000,
        };
        // 100,000 gas at 1 gwei is 10^14 wei a transaction.
        let plenty = gas_line(&at(10 * 100_000_000_000_000));
        assert!(plenty.starts_with("0.001000 of the chain's coin: about 10 transactions"));
        assert!(!plenty.contains("low"), "{plenty}");
        let low = gas_line(&at(9 * 100_000_000_000_000));
        assert!(low.contains("about 9 transactions"), "{low}");
        assert!(low.contains("low: send coin to this account"), "{low}");
    }
}
