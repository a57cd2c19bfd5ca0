//! What the engine logs of the core's events: at the default level, what a person running the
//! gateway should hear of (who did what, on which channel), worded from our side.

use gridchan_channel::{ChannelId, Event, Node};

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
