//! The daemon's Prometheus endpoint (`[metrics] listen`, off by default): the `metrics` facade's
//! Prometheus recorder, fed from the engine's reports in one place, served as text on
//! `GET /metrics` by a small HTTP/1.1 responder bound where the owner says (README, "Metrics").
//!
//! The names follow Prometheus conventions (`gridchan_` prefix, units in the name, `_total` for
//! counters); a channel is labelled by its id's first 8 hex digits and `kind` (`neighbour` or
//! `market`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use gridchan_channel::{ChannelId, Event, Party};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::AsyncWriteExt;

use crate::engine::{EngineHandle, MarketReport, Report};
use crate::error::GatewayError;

/// The longest request line the endpoint reads.
const MAX_REQUEST: usize = 4096;

/// Installs the Prometheus recorder for this process and serves it on `listen`; returns the
/// address bound (port 0 picks one). Call once per process; then feed it (see [`serve`]).
pub async fn install(listen: SocketAddr) -> Result<SocketAddr, GatewayError> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
        ])
        .map_err(|e| GatewayError::Config(format!("metrics: {e}")))?
        .install_recorder()
        .map_err(|e| GatewayError::Config(format!("metrics: {e}")))?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        GatewayError::Config(format!(
            "metrics listen = {listen}: cannot listen there: {e}"
        ))
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| GatewayError::Config(format!("metrics: {e}")))?;
    tokio::spawn(answer_scrapes(listener, handle));
    Ok(bound)
}

/// What a gateway's metrics sample besides the engine's reports: its watchtowers'
/// acknowledgements and its ledger account's gas.
#[derive(Clone)]
pub struct Sampled {
    pub towers: crate::towers::Towers,
    pub ledger: std::sync::Arc<dyn gridchan_chain::Ledger>,
}

/// A gateway's metrics: [`install`], then the engine's reports turned into metrics until the
/// engine stops, and every two seconds the ledger queue, the towers and the gas.
pub async fn serve(
    listen: SocketAddr,
    engine: EngineHandle,
    interval_seconds: u32,
    sampled: Sampled,
) -> Result<SocketAddr, GatewayError> {
    let bound = install(listen).await?;
    describe();
    tokio::spawn(observe(engine, interval_seconds, sampled));
    Ok(bound)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "gridchan_energy_sold_wh_total",
        Unit::Count,
        "Energy this home sold, in Wh, per channel"
    );
    describe_counter!(
        "gridchan_energy_bought_wh_total",
        Unit::Count,
        "Energy this home bought, in Wh, per channel"
    );
    describe_counter!(
        "gridchan_money_earned_micro_total",
        "Money earned, in micro-units of the settlement token, per channel"
    );
    describe_counter!(
        "gridchan_money_paid_micro_total",
        "Money paid, in micro-units of the settlement token, per channel"
    );
    describe_counter!(
        "gridchan_states_signed_total",
        "States signed by both parties, per channel"
    );
    describe_counter!(
        "gridchan_refusals_total",
        "Proposals refused (by either side), by reason"
    );
    describe_counter!(
        "gridchan_neighbours_left_out_total",
        "Intervals a neighbour was left out of (no totals in time, or not what its meter signed)"
    );
    describe_gauge!(
        "gridchan_neighbours_connected",
        "Neighbours (and market nodes) connected now"
    );
    describe_histogram!(
        "gridchan_settle_delay_seconds",
        Unit::Seconds,
        "From an interval's end to its settlement on a channel"
    );
    describe_counter!(
        "gridchan_market_bound_wh_total",
        "What the books' members could have traded among themselves, in Wh"
    );
    describe_gauge!(
        "gridchan_market_local_share",
        "The last book's traded energy over what its members could have traded (0 to 1)"
    );
    describe_gauge!(
        "gridchan_tower_channels_acknowledged",
        "Channels whose newest state a watchtower acknowledged, per tower"
    );
    describe_gauge!(
        "gridchan_tower_channels_behind",
        "Channels with a newer state than a watchtower acknowledged, per tower"
    );
    describe_gauge!(
        "gridchan_gas_balance_wei",
        "The gateway account's balance for fees, on a chain that charges them"
    );
    describe_gauge!(
        "gridchan_ledger_queue_depth",
        "Ledger transactions waiting to be included"
    );
    describe_gauge!(
        "gridchan_ledger_recent_failures",
        "Of the last 100 finished ledger transactions, those refused or failed"
    );
    describe_counter!(
        "gridchan_market_books_total",
        "Books closed (a market node) or checked (a member)"
    );
    describe_gauge!(
        "gridchan_market_clearing_price_micro_per_kwh",
        "The last book's clearing price, micro-units per kWh"
    );
    describe_counter!(
        "gridchan_market_traded_wh_total",
        "Energy traded in the books this market node closed, in Wh"
    );
}

/// Answers each connection with the metrics (`GET /metrics`) or 404, then closes it.
async fn answer_scrapes(listener: tokio::net::TcpListener, handle: PrometheusHandle) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let Some(head) = crate::http::read_head(&mut stream, MAX_REQUEST).await else {
                return;
            };
            let line = head.lines().next().unwrap_or_default();
            let response = if line.starts_with("GET /metrics ") || line == "GET /metrics" {
                let body = handle.render();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Which side we are of each channel, and its kind, as first looked up.
#[derive(Default)]
struct Channels(HashMap<ChannelId, (Party, &'static str)>);

impl Channels {
    async fn of(&mut self, engine: &EngineHandle, id: ChannelId) -> Option<(Party, &'static str)> {
        if let Some(c) = self.0.get(&id) {
            return Some(*c);
        }
        let view = engine.channel(id).await.ok()??;
        let kind = if view.params.tariff.market().is_some() {
            "market"
        } else {
            "neighbour"
        };
        self.0.insert(id, (view.me, kind));
        Some((view.me, kind))
    }
}

/// The ledger queue: transactions waiting, and of the recent finished ones those that did not
/// go through.
fn sample_ledger_queue(engine: &EngineHandle) {
    if let Ok(n) = engine.ledger_queue.pending_count() {
        metrics::gauge!("gridchan_ledger_queue_depth").set(n as f64);
    }
    if let Ok(done) = engine.ledger_queue.finished(100) {
        let failed = done
            .iter()
            .filter(|f| !f.outcome.starts_with("included"))
            .count();
        metrics::gauge!("gridchan_ledger_recent_failures").set(failed as f64);
    }
}

/// Per watchtower, the channels whose newest state it acknowledged and those it lags behind
/// on; the account's gas on a chain that charges fees.
async fn sample_towers_and_gas(sampled: &Sampled) {
    if let Ok(towers) = sampled.towers.list().await {
        for t in towers {
            let tower = t.address.split('@').next().unwrap_or_default()[..16.min(t.address.len())]
                .to_string();
            metrics::gauge!("gridchan_tower_channels_acknowledged", "tower" => tower.clone())
                .set(t.acknowledged as f64);
            metrics::gauge!("gridchan_tower_channels_behind", "tower" => tower)
                .set(t.pending as f64);
        }
    }
    if let Ok(Ok(Some(fees))) =
        tokio::time::timeout(Duration::from_secs(2), sampled.ledger.fees()).await
    {
        metrics::gauge!("gridchan_gas_balance_wei").set(fees.balance as f64);
    }
}

/// Turns the engine's reports into metrics until the engine stops.
async fn observe(engine: EngineHandle, interval_seconds: u32, sampled: Sampled) {
    let mut reports = engine.reports();
    let mut channels = Channels::default();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        let report = tokio::select! {
            r = reports.recv() => match r {
                Ok(r) => r,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            },
            _ = tick.tick() => {
                sample_ledger_queue(&engine);
                sample_towers_and_gas(&sampled).await;
                continue;
            }
        };
        match report {
            Report::Event(Event::Settled { channel, trade, .. }) => {
                let Some((me, kind)) = channels.of(&engine, channel).await else {
                    continue;
                };
                let labels = [
                    ("channel", channel.to_string()[..8].to_string()),
                    ("kind", kind.to_string()),
                ];
                let (energy, money) = if trade.seller == me {
                    (
                        "gridchan_energy_sold_wh_total",
                        "gridchan_money_earned_micro_total",
                    )
                } else {
                    (
                        "gridchan_energy_bought_wh_total",
                        "gridchan_money_paid_micro_total",
                    )
                };
                metrics::counter!(energy, &labels).increment(trade.energy.0);
                metrics::counter!(money, &labels).increment(trade.amount.0);
                metrics::counter!("gridchan_states_signed_total", &labels).increment(1);
                if let Some(ends) = trade
                    .interval
                    .0
                    .checked_add(1)
                    .and_then(|n| n.checked_mul(u64::from(interval_seconds)))
                {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    // A sped-up clock settles intervals from the past of wall time: not a delay.
                    let delay = now - ends as f64;
                    if (0.0..3_600.0).contains(&delay) {
                        metrics::histogram!("gridchan_settle_delay_seconds").record(delay);
                    }
                }
            }
            Report::Event(Event::Refused { reason, .. }) => {
                let reason = format!("{reason:?}");
                let name = reason
                    .split(|c: char| !c.is_alphanumeric())
                    .next()
                    .unwrap_or_default()
                    .to_string();
                metrics::counter!("gridchan_refusals_total", "reason" => name).increment(1);
            }
            Report::Peer { .. } => {
                if let Ok(peers) = engine.connected_peers().await {
                    metrics::gauge!("gridchan_neighbours_connected").set(peers.len() as f64);
                }
            }
            Report::LeftOut { .. } => {
                metrics::counter!("gridchan_neighbours_left_out_total").increment(1);
            }
            Report::Market(MarketReport::BookClosed {
                price,
                traded,
                bound,
                ..
            }) => {
                metrics::counter!("gridchan_market_books_total").increment(1);
                metrics::counter!("gridchan_market_traded_wh_total").increment(traded.0);
                metrics::counter!("gridchan_market_bound_wh_total").increment(bound.0);
                if bound.0 > 0 {
                    metrics::gauge!("gridchan_market_local_share")
                        .set(traded.0 as f64 / bound.0 as f64);
                }
                if let Some(p) = price {
                    metrics::gauge!("gridchan_market_clearing_price_micro_per_kwh").set(p.0 as f64);
                }
            }
            Report::Market(MarketReport::BookChecked { price, .. }) => {
                metrics::counter!("gridchan_market_books_total").increment(1);
                if let Some(p) = price {
                    metrics::gauge!("gridchan_market_clearing_price_micro_per_kwh").set(p.0 as f64);
                }
            }
            _ => {}
        }
    }
}
