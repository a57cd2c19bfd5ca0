//! What the engine logs of the core's events: at the default level, what a person running the
//! gateway should hear of (who did what, on which channel), worded from our side.

use std::collections::{BTreeMap, HashMap};

use gridchan_channel::{Amount, ChannelId, Event, Node, NodeId, Party, Trade};

/// Where the hourly trade summaries are logged: `info` for this target is on by default, so a
/// working daemon says what it traded with whom (journald keeps it beside the warnings).
pub const TRADES: &str = "gridchan::trades";

/// Each hour's trades, by neighbour (or market node): logged as one line once the hour is over.
#[derive(Default)]
pub(crate) struct TradeLog {
    /// The hour being summed (Unix seconds / 3600) and, per counterparty, the Wh we sold, the
    /// money earned, the Wh we bought and the money paid.
    hour: Option<u64>,
    by_peer: BTreeMap<NodeId, (u64, u64, u64, u64)>,
    /// Each channel's neighbour, our side and interval length, looked up once (a channel's
    /// view copies its states; this runs for every settled trade).
    channels: HashMap<ChannelId, (NodeId, Party, u32)>,
}

impl TradeLog {
    /// A settled trade of `channel`: summed into its hour; the hour before is logged when the
    /// first trade of a later one arrives.
    pub(crate) fn settled(&mut self, node: &Node, channel: &ChannelId, trade: &Trade) {
        let known = match self.channels.get(channel) {
            Some(k) => *k,
            None => {
                let Some(v) = node.channel(channel) else {
                    return;
                };
                let k = (v.peer, v.me, v.params.interval_seconds);
                self.channels.insert(*channel, k);
                k
            }
        };
        let (peer, me, interval_seconds) = known;
        let start = trade.interval.0 * u64::from(interval_seconds);
        let hour = start / 3_600;
        match self.hour {
            Some(h) if h < hour => {
                self.flush();
                self.hour = Some(hour);
            }
            None => self.hour = Some(hour),
            _ => {}
        }
        let e = self.by_peer.entry(peer).or_default();
        if trade.seller == me {
            e.0 += trade.energy.0;
            e.1 += trade.amount.0;
        } else {
            e.2 += trade.energy.0;
            e.3 += trade.amount.0;
        }
    }

    /// Logs the hour summed so far, one line, and starts afresh.
    pub(crate) fn flush(&mut self) {
        let Some(hour) = self.hour.take() else {
            return;
        };
        let parts: Vec<String> = std::mem::take(&mut self.by_peer)
            .into_iter()
            .map(|(peer, (sold, earned, bought, paid))| {
                let mut p = Vec::new();
                if sold > 0 {
                    p.push(format!("sold {sold} Wh for {}", Amount(earned)));
                }
                if bought > 0 {
                    p.push(format!("bought {bought} Wh for {}", Amount(paid)));
                }
                format!("{} with {}", p.join(" and "), &peer.to_string()[..8])
            })
            .collect();
        if !parts.is_empty() {
            tracing::info!(
                target: TRADES,
                "traded {} to {}: {}",
                crate::clock::utc_minute(hour * 3_600),
                crate::clock::utc_minute((hour + 1) * 3_600)[11..].to_string(),
                parts.join("; ")
            );
        }
    }
}

/// Logs what a person running the gateway should hear of at the default level: who did
/// what, on which channel.
pub(crate) fn log(node: &Node, e: &Event) {
    let peer_of = |c: &ChannelId| {
        node.channel(c)
            .map(|v| v.peer.to_string())
            .unwrap_or_else(|| "?".into())
    };
    match e {
        Event::Refused {
            channel,
            version,
            by,
            reason,
        } => {
            let ours = node.channel(channel).is_some_and(|v| v.me == *by);
            // An interval is shown as the time it began, not its index.
            let reason = match (reason, node.channel(channel)) {
                (gridchan_channel::Refusal::NoMeterReading(i), Some(v)) => format!(
                    "no meter reading for the interval from {} (it never arrived in time, or is too old)",
                    crate::clock::utc_minute(i * u64::from(v.params.interval_seconds))
                ),
                (r, _) => r.to_string(),
            };
            if ours {
                tracing::warn!(
                    "channel {}: we refused neighbour {}'s version {}: {reason}",
                    channel.short(),
                    peer_of(channel),
                    version.0
                );
            } else {
                tracing::warn!(
                    "channel {}: neighbour {} refused our version {}: {reason}",
                    channel.short(),
                    peer_of(channel),
                    version.0
                );
            }
        }
        Event::Frozen { channel } => tracing::error!(
            "channel {}: frozen: its newest state could not be written to the data folder (disk full or failing?); nothing is signed on it until a write succeeds, which is retried every few seconds: free space or check the disk",
            channel.short()
        ),
        Event::Thawed { channel } => tracing::warn!(
            "channel {}: written again: it trades again",
            channel.short()
        ),
        Event::Offered { channel, peer } => tracing::warn!(
            "neighbour {peer} proposes channel {}: it waits for your answer (`gridchan channel list`, then `gridchan channel accept {}` or `reject {}`)",
            channel.short(),
            channel.short(),
            channel.short()
        ),
        Event::OfferExpired { channel, peer } => tracing::warn!(
            "neighbour {peer}'s proposal of channel {} expired unanswered: declined",
            channel.short()
        ),
        Event::OfferWithdrawn { channel, peer } => tracing::warn!(
            "neighbour {peer} withdrew its proposal of channel {}",
            channel.short()
        ),
        Event::OpenRefused {
            channel,
            peer,
            reason,
        } => tracing::warn!(
            "channel {}: we refused neighbour {peer}'s proposal to open it: {reason}",
            channel.short()
        ),
        Event::CrossingNotFollowed {
            channel,
            peer,
            waited_ms,
        } => tracing::warn!(
            "channel {}: neighbour {peer} won a crossing and proposed nothing for {waited_ms} ms: we propose again",
            channel.short()
        ),
        Event::ForceClosing { channel, version } => tracing::warn!(
            "channel {}: closing on the ledger with our version {} (neighbour {})",
            channel.short(),
            version.0,
            peer_of(channel)
        ),
        Event::Refuting {
            channel,
            registered,
            ours,
        } => tracing::warn!(
            "channel {}: neighbour {} registered old version {} on the ledger: we refute it with version {}",
            channel.short(),
            peer_of(channel),
            registered.0,
            ours.0
        ),
        // At the default level: the end of a channel's money, and of any dispute.
        Event::Concluded { channel, version } => {
            let newest = node
                .channel(channel)
                .and_then(|v| v.current.map(|c| c.version()))
                .unwrap_or_default();
            if *version == newest {
                tracing::warn!(
                    "channel {}: the ledger paid out version {} (our newest)",
                    channel.short(),
                    version.0
                );
            } else {
                tracing::error!(
                    "channel {}: the ledger paid out version {}, not our newest version {}",
                    channel.short(),
                    version.0,
                    newest.0
                );
            }
        }
        _ => {}
    }
}
