//! The market in the demo: joining it, and what its books said (each interval's clearing, who
//! checked and who refused which book), for the display and the checks.

use std::collections::BTreeSet;

use gridchan_channel::PricePerKwh;
use gridchan_gateway::engine::MarketReport;

use super::*;

/// Home `a` joins the market node `m`'s market: it dials it, takes its terms, and opens a
/// market channel under them.
pub(super) async fn join_market(
    o: &DemoOptions,
    homes: &[Home],
    a: usize,
    m: usize,
    at: IntervalIndex,
    n: usize,
) -> Result<ChannelId> {
    let (id, _) = gridchan_gateway::market::join(
        &homes[a].engine(),
        gridchan_gateway::market::Join {
            market: PeerAddr {
                node: homes[m].key.id(),
                addr: homes[m].addr,
            },
            deposit: Amount(DEPOSIT),
            market_deposit: Amount(MARKET_DEPOSIT),
            interval_seconds: INTERVAL,
            challenge_window_blocks: WINDOW_BLOCKS,
            funding_window_blocks: 400,
            opened_at: IntervalIndex(at.0 - 1),
            nonce: derive(o.seed, "market-channel", n),
            meter: Some(homes[a].meter.id()),
        },
    )
    .await
    .with_context(|| format!("{} cannot join the market", homes[a].name))?;
    Ok(id)
}

/// One interval's book, as the market node reported it.
#[derive(Clone, Copy, Debug)]
pub(super) struct BookLine {
    pub(super) orders: usize,
    pub(super) price: Option<PricePerKwh>,
    pub(super) traded: u64,
    pub(super) income: u64,
}

/// What the market's reports said during the day.
#[derive(Default)]
pub(super) struct MarketLog {
    pub(super) books: BTreeMap<IntervalIndex, BookLine>,
    /// Members that checked each book and settled it (or had nothing in it).
    pub(super) checked: BTreeMap<IntervalIndex, BTreeSet<usize>>,
    /// Members that refused each book, with the first reason.
    pub(super) refused: BTreeMap<IntervalIndex, (BTreeSet<usize>, String)>,
    /// Members whose order for each interval went out.
    pub(super) ordered: BTreeMap<IntervalIndex, BTreeSet<usize>>,
    /// Members whose order for each interval the market node receipted: the book must hold it.
    pub(super) receipted: BTreeMap<IntervalIndex, BTreeSet<usize>>,
    /// What every member's checked books gave it, by channel and interval.
    pub(super) expected: BTreeMap<(ChannelId, IntervalIndex), gridchan_channel::market::Settlement>,
    /// Orders the market node did not take: (member, interval, why).
    pub(super) left_out: Vec<(usize, IntervalIndex, String)>,
    /// A wrong clearing was staged; the book it went out in.
    pub(super) staged: bool,
    pub(super) staged_interval: Option<IntervalIndex>,
    /// Parties offline for a while (the member taken offline, the dispute's two; `None`: the
    /// market node, so every member), and the intervals they were away.
    pub(super) away: Vec<(Option<usize>, u64, u64)>,
}

/// `HH:MM` (UTC) of an interval's start.
fn clock_time(interval: IntervalIndex) -> String {
    let secs = interval.0 * u64::from(INTERVAL) % 86_400;
    format!("{:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

impl MarketLog {
    /// Takes one report of party `i`; returns a line to show, if any.
    pub(super) fn note(
        &mut self,
        i: usize,
        r: MarketReport,
        _anchor: IntervalIndex,
    ) -> Option<String> {
        match r {
            MarketReport::BookClosed {
                interval,
                staged,
                orders,
                price,
                traded,
                income,
                ..
            } => {
                if staged {
                    self.staged_interval = Some(interval);
                }
                self.books.insert(
                    interval,
                    BookLine {
                        orders,
                        price,
                        traded: traded.0,
                        income,
                    },
                );
                let staged = if self.staged_interval == Some(interval) {
                    " (staged: its published price is one micro-unit off the rule's)"
                } else {
                    ""
                };
                Some(format!(
                    "{} book: {orders} orders, {} Wh traded{}{staged}",
                    clock_time(interval),
                    traded.0,
                    price.map_or(String::new(), |p| format!(" at {}/kWh", Amount(p.0)))
                ))
            }
            MarketReport::BookChecked {
                channel,
                interval,
                settlement,
                ..
            } => {
                self.checked.entry(interval).or_default().insert(i);
                if let Some(s) = settlement {
                    self.expected.insert((channel, interval), s);
                }
                None
            }
            MarketReport::BookRefused {
                interval, reason, ..
            } => {
                let e = self
                    .refused
                    .entry(interval)
                    .or_insert_with(|| (BTreeSet::new(), reason.clone()));
                e.0.insert(i);
                (e.0.len() == 1).then(|| {
                    format!(
                        "{} book refused by the members who check it: {reason}",
                        clock_time(interval)
                    )
                })
            }
            MarketReport::Receipted { interval, .. } => {
                self.receipted.entry(interval).or_default().insert(i);
                None
            }
            MarketReport::Ordered { interval, .. } => {
                self.ordered.entry(interval).or_default().insert(i);
                None
            }
            MarketReport::LeftOut {
                interval, reason, ..
            } => {
                self.left_out.push((i, interval, reason));
                None
            }
        }
    }
}
