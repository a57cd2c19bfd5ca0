//! The household's page (`[page]`, off by default): today and this month in the home's local
//! time (energy metered, bought and sold per neighbour and market, money paid and earned), the
//! day interval by interval as a chart drawn on the server (SVG, no script, nothing fetched
//! from the internet), the channels with their balances, and what needs attention. Its figures
//! are `gridchan report`'s for the same day and month (`--json`), and each figure carries a
//! `data-figure` name so a test (or a script) can read it back.
//!
//! Bound to 127.0.0.1 unless the owner names an address; on any other address it needs a token,
//! and every request without it (`?token=` or `Authorization: Bearer`) is refused.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use gridchan_channel::Amount;
use gridchan_gateway::control::ChannelSummary;
use gridchan_gateway::engine::EngineHandle;
use tokio::io::AsyncWriteExt;

use crate::report::{self, Period, Statement};

/// The longest request head the page reads.
const MAX_REQUEST: usize = 8192;

/// What the page is drawn from.
#[derive(Clone)]
pub struct Page {
    pub config: PathBuf,
    pub engine: EngineHandle,
    pub peers: gridchan_gateway::peers::Peers,
    /// The home's clock (sped up, when it runs sped up): what "today" is.
    pub clock: gridchan_gateway::clock::SimClock,
    pub token: Option<String>,
}

/// Serves the page on `listen` until the process ends; returns the address bound.
/// (The config refuses a page reachable from other machines without a token.)
pub async fn serve(listen: SocketAddr, page: Page) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("page.listen = {listen}: cannot listen there: {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let page = page.clone();
            tokio::spawn(async move {
                let _ = answer(stream, &page).await;
            });
        }
    });
    Ok(bound)
}

async fn answer(mut stream: tokio::net::TcpStream, page: &Page) -> Result<()> {
    let Some(head) = gridchan_gateway::http::read_head(&mut stream, MAX_REQUEST).await else {
        return Ok(());
    };
    let request = head.lines().next().unwrap_or_default().to_string();
    let target = request.split_whitespace().nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let bearer = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("authorization")
            .then(|| v.trim().strip_prefix("Bearer ").map(str::to_string))?
    });
    let given = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::to_string)
        .or(bearer);
    let (status, kind, body) = if page.token.is_some() && given != page.token {
        (
            "401 Unauthorized",
            "text/plain",
            "this page needs its token: ?token=... or Authorization: Bearer ...\n".to_string(),
        )
    } else if !request.starts_with("GET ") {
        ("405 Method Not Allowed", "text/plain", String::new())
    } else {
        match path {
            "/" => match render(page).await {
                Ok(html) => ("200 OK", "text/html; charset=utf-8", html),
                Err(e) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
            },
            _ => ("404 Not Found", "text/plain", String::new()),
        }
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

/// Today's and this month's statements, in the home's time zone.
fn statements(page: &Page) -> Result<(Statement, Statement)> {
    let config = gridchan_gateway::config::Config::load(&page.config)?;
    let zone = config.metering.zone()?;
    // The day the home's clock shows (a sped-up clock's day, when it runs sped up).
    let now_ms = page.clock.now_ms();
    let today = jiff::Timestamp::from_millisecond(i64::try_from(now_ms)?)?
        .to_zoned(zone)
        .date();
    let day = report::statement(&page.config, &Period::Day(today))?;
    let month = report::statement(&page.config, &Period::Month(today.first_of_month()))?;
    Ok((day, month))
}

fn figure(out: &mut String, name: &str, label: &str, value: String) {
    let _ = write!(
        out,
        "<tr><th>{label}</th><td data-figure=\"{name}\">{value}</td></tr>"
    );
}

fn figures(out: &mut String, prefix: &str, s: &Statement) {
    out.push_str("<table class=\"figures\">");
    figure(
        out,
        &format!("{prefix}.metered_import_wh"),
        "imported (meter)",
        format!("{} Wh", s.metered_import_wh),
    );
    figure(
        out,
        &format!("{prefix}.metered_export_wh"),
        "exported (meter)",
        format!("{} Wh", s.metered_export_wh),
    );
    figure(
        out,
        &format!("{prefix}.bought_wh"),
        "bought from neighbours and the market",
        format!("{} Wh", s.bought_wh),
    );
    figure(
        out,
        &format!("{prefix}.sold_wh"),
        "sold to neighbours and the market",
        format!("{} Wh", s.sold_wh),
    );
    figure(
        out,
        &format!("{prefix}.paid"),
        "paid",
        Amount(s.paid).to_string(),
    );
    figure(
        out,
        &format!("{prefix}.earned"),
        "earned",
        Amount(s.earned).to_string(),
    );
    let saved = s.saved.map_or_else(
        || "set [grid] retail and feed_in in the config to see it".to_string(),
        report::signed_tokens,
    );
    figure(
        out,
        &format!("{prefix}.saved"),
        "saved against the grid",
        saved,
    );
    out.push_str("</table>");
}

/// The day interval by interval: the meter's import below the line, its export above, what
/// went to or came from the community as a darker part of each bar, and the traded price as a
/// blue line on a scale of its own.
fn chart(s: &Statement) -> String {
    let (w, h, mid) = (960.0_f64, 220.0_f64, 110.0_f64);
    let max = s
        .quarter_hours
        .iter()
        .map(|q| {
            let (i, e) = q.metered.unwrap_or((q.received, q.delivered));
            i.max(e).max(q.received).max(q.delivered)
        })
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let first = s.quarter_hours.first().map(|q| q.start).unwrap_or(0);
    let last = s.quarter_hours.last().map(|q| q.start).unwrap_or(0);
    let span = (last - first).max(1) as f64;
    let bar = (w / (s.quarter_hours.len() as f64 + 1.0)).clamp(1.0, 12.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"the day interval by interval\"><line x1=\"0\" y1=\"{mid}\" x2=\"{w}\" y2=\"{mid}\" stroke=\"#888\"/>"
    );
    for q in &s.quarter_hours {
        let x = (q.start - first) as f64 / span * (w - bar);
        let scale = |wh: u64| wh as f64 / max * (mid - 5.0);
        if let Some((import, export)) = q.metered {
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{mid}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"#f4a6a6\"><title>imported {import} Wh</title></rect>",
                scale(import)
            );
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"#a6d8a6\"><title>exported {export} Wh</title></rect>",
                mid - scale(export),
                scale(export)
            );
        }
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{mid}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"#c0392b\"><title>bought {} Wh</title></rect>",
            scale(q.received),
            q.received
        );
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"#27ae60\"><title>sold {} Wh</title></rect>",
            mid - scale(q.delivered),
            scale(q.delivered),
            q.delivered
        );
    }
    // The price of each interval's trade, on a scale of its own (the day's highest at the top).
    let top = s
        .quarter_hours
        .iter()
        .filter_map(|q| q.price)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let points: Vec<String> = s
        .quarter_hours
        .iter()
        .filter_map(|q| {
            let x = (q.start - first) as f64 / span * (w - bar) + bar / 2.0;
            q.price
                .map(|p| format!("{x:.1},{:.1}", h - 4.0 - p as f64 / top * (h - 8.0)))
        })
        .collect();
    if !points.is_empty() {
        let _ = write!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#2c6fbb\" stroke-width=\"1.5\"><title>price, up to {} a kWh</title></polyline>",
            points.join(" "),
            Amount(top as u64)
        );
    }
    svg.push_str("</svg>");
    svg
}

async fn render(page: &Page) -> Result<String> {
    let (day, month) = statements(page)?;
    let (channels, connected, offers) = tokio::try_join!(
        page.engine.channels(),
        page.engine.connected_peers(),
        page.engine.offers()
    )?;
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>gridchan</title><style>body{font-family:sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse}th,td{padding:.2em .8em;text-align:left}td{text-align:right}.attention li{color:#b03a2e}</style></head><body>",
    );
    let _ = write!(
        out,
        "<h1>gridchan</h1><p>gateway <code>{}</code>, time zone {}</p>",
        &day.node[..16.min(day.node.len())],
        day.time_zone
    );
    // What needs attention.
    let mut attention = Vec::new();
    if !offers.is_empty() {
        attention.push(format!(
            "{} channel proposal(s) wait for your answer: gridchan channel list",
            offers.len()
        ));
    }
    let live: Vec<_> = channels
        .iter()
        .filter(|c| !matches!(c.phase, gridchan_channel::Phase::Concluded))
        .collect();
    for c in &live {
        let short = &c.id.to_string()[..8];
        if !connected.contains(&c.peer) {
            attention.push(format!("the neighbour of channel {short} is offline"));
        }
        if let Some(s) = &c.current {
            let total = s.state().held(&c.params).unwrap_or_default().0.max(1);
            let mine = s.state().balance(c.me).0;
            if mine * 10 < total {
                attention.push(format!(
                    "channel {short}: your side holds {} of {}: `gridchan channel topup {short} --amount N` tops it up, or it cannot pay",
                    Amount(mine),
                    Amount(total)
                ));
            }
        }
        if c.phase != gridchan_channel::Phase::Open {
            attention.push(format!("channel {short} is {:?}", c.phase));
        }
    }
    out.push_str("<h2>Needs attention</h2><ul class=\"attention\">");
    if attention.is_empty() {
        out.push_str("<li style=\"color:inherit\">nothing</li>");
    }
    for a in &attention {
        let _ = write!(out, "<li>{}</li>", html(a));
    }
    out.push_str("</ul>");
    let _ = write!(out, "<h2>Today ({})</h2>", day.period);
    figures(&mut out, "day", &day);
    out.push_str(&chart(&day));
    let _ = write!(out, "<h2>This month ({})</h2>", month.period);
    figures(&mut out, "month", &month);
    out.push_str("<h2>With whom</h2><table><tr><th>date</th><th>with</th><th>bought Wh</th><th>sold Wh</th><th>paid</th><th>earned</th></tr>");
    for d in &month.days {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            d.date,
            html(&format!(
                "{}..",
                &d.counterparty[..d.counterparty.len().min(26)]
            )),
            d.bought_wh,
            d.sold_wh,
            Amount(d.paid),
            Amount(d.earned)
        );
    }
    out.push_str("</table><h2>Channels</h2><table><tr><th>channel</th><th>with</th><th>state</th><th>yours</th><th>theirs</th></tr>");
    for c in &live {
        let s = ChannelSummary::of(c, &page.peers, &connected);
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td data-figure=\"channel.{}.balance\">{}</td><td>{}</td></tr>",
            &s.channel[..8],
            &s.peer[..16.min(s.peer.len())],
            html(&s.phase),
            &s.channel[..8],
            Amount(s.balance),
            Amount(s.peer_balance)
        );
    }
    out.push_str("</table></body></html>");
    Ok(out)
}

/// `text` safe inside HTML.
fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
