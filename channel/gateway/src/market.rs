//! Joining and leaving a neighbourhood market (`specs/market.md`): a home dials the market
//! node, takes its terms (sent on every connection), and opens a market channel under them as
//! party A; leaving closes that channel cooperatively.

use std::time::Duration;

use gridchan_channel::market::MarketTerms;
use gridchan_channel::{
    Amount, ChannelId, Command, IntervalIndex, MeterTolerance, OpenRequest, Party, Phase,
};
use gridchan_transport::PeerAddr;

use crate::engine::EngineHandle;
use crate::error::GatewayError;

/// How long a join waits for the market node's terms after the connection is up.
const TERMS_WAIT: Duration = Duration::from_secs(10);

/// What a home asks for when it joins a market.
#[derive(Clone, Debug)]
pub struct Join {
    pub market: PeerAddr,
    /// What the home deposits: what it may spend on energy before it tops up.
    pub deposit: Amount,
    /// What it asks the market node to deposit: what the market may pay it for its sales.
    pub market_deposit: Amount,
    pub interval_seconds: u32,
    pub challenge_window_blocks: u64,
    pub funding_window_blocks: u64,
    /// The interval the channel opens in.
    pub opened_at: IntervalIndex,
    /// Fresh randomness.
    pub nonce: [u8; 32],
    /// This home's meter, when it signs its readings: the channel's terms name it, and every
    /// order then carries its signed reading (`specs/market.md`, "Evidence").
    pub meter: Option<gridchan_channel::NodeId>,
}

/// Dials the market node, waits for its terms and opens a market channel under them: the
/// channel's id (funded as any channel is, by the daemon's ledger jobs).
pub async fn join(
    engine: &EngineHandle,
    j: Join,
) -> Result<(ChannelId, MarketTerms), GatewayError> {
    engine.dial(j.market.clone()).await?;
    let node = j.market.node;
    let started = tokio::time::Instant::now();
    let mut asked: Option<tokio::time::Instant> = None;
    let terms = loop {
        if let Some(terms) = engine.market_terms(node).await? {
            break terms;
        }
        if started.elapsed() > TERMS_WAIT {
            return Err(GatewayError::Unreachable(format!(
                "{node} sent no market terms within {} s: it is not a market node",
                TERMS_WAIT.as_secs()
            )));
        }
        // Ask once the connection is up at the engine (asking also opens our side of its
        // stream: a market node hears of a peer once it writes), and again each second.
        let up = engine.connected_peers().await?.contains(&node);
        if up && asked.is_none_or(|at| at.elapsed() > Duration::from_secs(1)) {
            engine
                .send_message(node, gridchan_channel::Message::AskTerms)
                .await?;
            asked = Some(tokio::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    terms.validate().map_err(|e| {
        GatewayError::Request(format!("the market's terms are not acceptable: {e}"))
    })?;
    let id = engine
        .open(OpenRequest {
            peer: node,
            deposit: j.deposit,
            peer_deposit: j.market_deposit,
            tariff: gridchan_channel::Tariff::Market(Box::new(terms.clone())),
            challenge_window_blocks: j.challenge_window_blocks,
            funding_window_blocks: j.funding_window_blocks,
            interval_seconds: j.interval_seconds,
            tolerance: MeterTolerance {
                absolute_wh: 0,
                permille: 0,
            },
            opened_at: j.opened_at,
            nonce: j.nonce,
            // The market node meters nothing of its own.
            evidence: gridchan_channel::Evidence {
                meter_a: j.meter,
                meter_b: None,
            },
        })
        .await?;
    Ok((id, terms))
}

/// Closes this home's market channels (with `market`, or all): the channels' ids.
pub async fn leave(
    engine: &EngineHandle,
    market: Option<gridchan_channel::NodeId>,
) -> Result<Vec<ChannelId>, GatewayError> {
    let mut closed = Vec::new();
    for v in engine.channels().await? {
        let ours = v.me == Party::A && v.params.tariff.market().is_some();
        if ours && v.phase == Phase::Open && market.is_none_or(|m| m == v.peer) {
            engine.command(Command::Close(v.id)).await?;
            closed.push(v.id);
        }
    }
    if closed.is_empty() {
        return Err(GatewayError::Request(
            "this gateway is a member of no market (join one with `gridchan market join`)".into(),
        ));
    }
    Ok(closed)
}
