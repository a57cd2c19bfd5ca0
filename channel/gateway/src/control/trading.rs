//! The line `gridchan status` leads with: whether the gateway trades, or the first reason it
//! does not.

use std::collections::HashSet;

use gridchan_channel::{ChannelView, NodeId, Phase};

use super::paid_out;

/// Whether the gateway trades, or the first reason it does not: the line `status` leads with
/// when nothing settles.
pub(super) fn trading_line(
    channels: &[ChannelView],
    connected: &HashSet<NodeId>,
    offers: usize,
    meter: &crate::meter::MeterStatus,
    interval_seconds: u32,
) -> String {
    let live: Vec<_> = channels.iter().filter(|c| !paid_out(c)).collect();
    let open: Vec<_> = live.iter().filter(|c| c.phase == Phase::Open).collect();
    if open.is_empty() {
        return if offers > 0 {
            "not trading: a neighbour's proposal waits for your answer (gridchan channel list)"
                .into()
        } else if live.iter().any(|c| c.phase == Phase::AwaitingAccept) {
            "not trading: waiting for the neighbour to accept the channel".into()
        } else if live.iter().any(|c| c.phase == Phase::Funding) {
            "not trading: waiting for the deposits on the ledger".into()
        } else if !live.is_empty() {
            "not trading: every channel is closing".into()
        } else {
            "not trading: no channel (gridchan channel open, or gridchan market join)".into()
        };
    }
    let frozen = live.iter().filter(|c| c.frozen).count();
    if frozen > 0 {
        return format!(
            "not trading on {frozen} channel(s): a write to the data folder failed (disk full or failing?); retried every few seconds, they trade again once one succeeds"
        );
    }
    if !open.iter().any(|c| connected.contains(&c.peer)) {
        return "not trading: no neighbour with an open channel is connected".into();
    }
    if let Some(since) = meter.missing_since {
        return format!(
            "not trading: the meter has given no reading since {}",
            crate::clock::utc_minute(since)
        );
    }
    let balances = |c: &&&ChannelView| {
        c.current.as_ref().map(|s| {
            let st = s.state();
            (st.balance(c.me).0, st.balance(c.me.other()).0)
        })
    };
    if open.iter().filter_map(balances).all(|(_, peer)| peer == 0) {
        return "trading only as a buyer: every neighbour's deposit with you is spent, so nobody can buy from you".into();
    }
    if open.iter().filter_map(balances).all(|(me, _)| me == 0) {
        return "trading only as a seller: your deposit in every channel is spent, so you cannot buy".into();
    }
    let last = open
        .iter()
        .filter_map(|c| c.current.as_ref())
        .map(|s| s.state().last_interval.0)
        .max()
        .unwrap_or(0);
    match last {
        0 => format!(
            "trading: {} open channel(s), nothing settled yet",
            open.len()
        ),
        i => format!(
            "trading: {} open channel(s), the last interval settled began {}",
            open.len(),
            crate::clock::utc_minute(i * u64::from(interval_seconds))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::MeterStatus;
    use gridchan_harness::{Pair, Side};

    fn line(views: &[ChannelView], connected: bool, offers: usize, meter: &MeterStatus) -> String {
        let up: HashSet<NodeId> = views.iter().filter(|_| connected).map(|v| v.peer).collect();
        trading_line(views, &up, offers, meter, 900)
    }

    #[test]
    fn the_first_reason_nothing_trades_is_the_one_said() {
        let open = Pair::settled().view(Side::A);
        let fine = MeterStatus::default();
        let with = |phase| ChannelView {
            phase,
            ..open.clone()
        };
        assert_eq!(
            line(&[], false, 0, &fine),
            "not trading: no channel (gridchan channel open, or gridchan market join)"
        );
        assert!(line(&[], false, 1, &fine).contains("proposal waits for your answer"));
        assert!(line(&[with(Phase::AwaitingAccept)], true, 0, &fine)
            .contains("waiting for the neighbour to accept"));
        assert!(line(&[with(Phase::Funding)], true, 0, &fine).contains("deposits on the ledger"));
        assert!(line(&[with(Phase::Closing)], true, 0, &fine).contains("every channel is closing"));
        assert_eq!(
            line(&[with(Phase::Concluded)], true, 0, &fine),
            "not trading: no channel (gridchan channel open, or gridchan market join)",
            "a paid-out channel is no channel"
        );
        assert!(line(std::slice::from_ref(&open), false, 0, &fine)
            .contains("no neighbour with an open channel is connected"));
        let silent = MeterStatus {
            missing_since: Some(1_765_000_800),
            ..MeterStatus::default()
        };
        assert_eq!(
            line(std::slice::from_ref(&open), true, 0, &silent),
            "not trading: the meter has given no reading since 2025-12-06 06:00 UTC"
        );
        // B put nothing in: A can only buy from it, and B can only sell.
        let one_sided = Pair::new(gridchan_harness::PairConfig {
            deposit_b: gridchan_channel::Amount(0),
            ..Default::default()
        });
        assert!(line(&[one_sided.view(Side::A)], true, 0, &fine)
            .starts_with("trading only as a buyer: every neighbour's deposit with you is spent"));
        assert!(line(&[one_sided.view(Side::B)], true, 0, &fine)
            .starts_with("trading only as a seller: your deposit in every channel is spent"));
        let frozen = ChannelView {
            frozen: true,
            ..open.clone()
        };
        assert!(line(&[frozen], true, 0, &fine)
            .starts_with("not trading on 1 channel(s): a write to the data folder failed"));
        let trading = line(&[open], true, 0, &fine);
        assert!(
            trading.starts_with("trading: 1 open channel(s), the last interval settled began"),
            "{trading}"
        );
    }
}
