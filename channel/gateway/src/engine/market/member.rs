//! A member's side in the engine: a membership per market channel, its enrolment, its order
//! from what the meter measured less what the neighbour channels took, and every book checked
//! before its channel settles it.

use std::collections::{HashMap, HashSet};

use gridchan_channel::market::{Allowance, Limits, MarketTerms, Member, MemberStep};
use gridchan_channel::metering::MeterReading;
use gridchan_channel::wire::Message;
use gridchan_channel::{
    ChannelId, Input, IntervalIndex, NodeId, Party, Phase, Recovered, WattHours,
};

use super::{MarketReport, Share};
use crate::engine::{Engine, Report};
use crate::market_store::Evidence;

impl<S: crate::engine::EngineStore> Engine<S> {
    /// Starts a membership for every market channel in which we are party A that has none (at
    /// start, and after a join), and ends those whose channel is gone.
    pub(in crate::engine) fn refresh_memberships(&mut self) {
        let ours: Vec<(ChannelId, NodeId, MarketTerms, u32)> = self
            .node
            .market_channels()
            .filter(|(_, _, phase, me, _)| *me == Party::A && is_live(*phase))
            .map(|(id, peer, _, _, terms)| {
                let seconds = self
                    .node
                    .channel(&id)
                    .map_or(900, |v| v.params.interval_seconds);
                (id, peer, terms.clone(), seconds)
            })
            .collect();
        let live: HashSet<ChannelId> = ours.iter().map(|(id, ..)| *id).collect();
        self.markets.members.retain(|id, _| live.contains(id));
        for (id, peer, terms, seconds) in ours {
            if !self.markets.members.contains_key(&id) {
                let member =
                    Member::new(terms, seconds, peer, id, &self.pool_signer, &self.blinding);
                tracing::info!(
                    "member of market {} through channel {} as pseudonym {}",
                    hex::encode(&member.terms().market[..4]),
                    id.short(),
                    hex::encode(&member.pseudonym()[..4])
                );
                self.markets.members.insert(id, member);
                // The books it checked before a restart: their proposals may still come.
                let kept = self
                    .markets
                    .store
                    .as_ref()
                    .map(|s| s.settlements(&id))
                    .transpose();
                match kept {
                    Ok(kept) => {
                        for settlement in kept.unwrap_or_default() {
                            self.node.handle(Input::Settlement {
                                channel: id,
                                settlement,
                            });
                        }
                    }
                    Err(e) => tracing::error!("market: cannot read kept settlements: {e}"),
                }
            }
        }
        self.enrol_members();
    }

    /// Sends each membership's enrolment once per connection, when its channel is open.
    pub(in crate::engine) fn enrol_members(&mut self) {
        let due: Vec<(ChannelId, NodeId, Message)> = self
            .markets
            .members
            .iter()
            .filter(|(id, _)| !self.markets.enrolled.contains(*id))
            .filter(|(id, _)| {
                self.node.channel_peers().any(|(c, peer, phase)| {
                    c == **id && phase == Phase::Open && self.peers.contains_key(&peer)
                })
            })
            .filter_map(|(id, m)| {
                let peer = self.node.channel(id)?.peer;
                Some((*id, peer, Message::Enrol(m.enrol())))
            })
            .collect();
        for (id, peer, message) in due {
            self.markets.enrolled.insert(id);
            self.send(peer, message);
        }
    }

    /// (Member) a receipt, a refusal or a publication from the market node.
    pub(in crate::engine) fn on_market_node_message(&mut self, peer: NodeId, message: Message) {
        // Our membership through the market node: its open channel (one that is opening or
        // closing only if there is no open one, one that is over last).
        let rank = |phase: Phase| match phase {
            Phase::Open => 0u8,
            Phase::AwaitingAccept | Phase::Funding | Phase::Closing => 1,
            _ => 2,
        };
        let Some((_, channel)) = self
            .markets
            .members
            .keys()
            .filter_map(|id| {
                let v = self.node.channel(id)?;
                (v.peer == peer).then_some((rank(v.phase), *id))
            })
            .min()
        else {
            self.drop_peer(
                peer,
                "sent market messages to a gateway that is not its member",
            );
            return;
        };
        let member = self.markets.members.get_mut(&channel).expect("found above");
        let step = match member.on_message(message, &mut recover_orders) {
            Ok(Some(step)) => step,
            Ok(None) => return,
            Err(e) => {
                self.drop_peer(peer, &format!("market node's publication: {e}"));
                return;
            }
        };
        let report = match step {
            MemberStep::Roster { .. } => return,
            MemberStep::Receipted(interval) => MarketReport::Receipted { channel, interval },
            MemberStep::LeftOut { interval, reason } => {
                if reason == gridchan_channel::market::OrderRefusal::NotEnrolled {
                    // The market node had not seen our channel open yet: enrol again.
                    self.markets.enrolled.remove(&channel);
                }
                tracing::warn!(
                    "market: our order for interval {} was not taken: {reason}",
                    interval.0
                );
                MarketReport::LeftOut {
                    channel,
                    interval,
                    reason: reason.to_string(),
                }
            }
            MemberStep::Book {
                interval,
                settlement,
                price,
                traded,
            } => {
                if let Some(settlement) = settlement {
                    if let Some(Err(e)) = self
                        .markets
                        .store
                        .as_mut()
                        .map(|s| s.settled(&channel, &settlement))
                    {
                        tracing::error!(
                            "market: cannot keep the settlement of interval {}: {e}",
                            interval.0
                        );
                    }
                    self.node.handle(Input::Settlement {
                        channel,
                        settlement,
                    });
                }
                MarketReport::BookChecked {
                    channel,
                    interval,
                    price,
                    traded,
                    settlement,
                }
            }
            MemberStep::Refused {
                interval,
                reason,
                book,
            } => {
                self.node.handle(Input::BookRefused { channel, interval });
                if let (Some(book), Some(store)) = (book, &self.markets.store) {
                    let receipted = self
                        .markets
                        .members
                        .get(&channel)
                        .and_then(|m| m.receipted(interval));
                    let kept = store.refused(&Evidence {
                        channel,
                        interval,
                        reason: reason.to_string(),
                        book: *book,
                        receipted,
                    });
                    if let Err(e) = kept {
                        tracing::error!("market: cannot keep the refused book as evidence: {e}");
                    }
                }
                tracing::error!(
                    "market: refused the market node's {} of interval {}: {reason} (it is signed by the market node: kept as evidence)",
                    if interval.0 == 0 { "roster" } else { "book" },
                    interval.0
                );
                MarketReport::BookRefused {
                    channel,
                    interval,
                    reason: reason.to_string(),
                }
            }
            MemberStep::BadReceipt(e) => {
                self.drop_peer(peer, &format!("market node's receipt: {e}"));
                return;
            }
        };
        let _ = self.reports.send(Report::Market(report));
    }

    /// (Member) the meter's reading of `interval`: with no neighbour round under way, the
    /// whole reading goes to the market order at once; otherwise what the neighbours leave,
    /// once their round is over ([`Engine::share_taken`]).
    pub(in crate::engine) fn market_meter(
        &mut self,
        interval: IntervalIndex,
        own: MeterReading,
        signed: Option<gridchan_channel::reading::SignedReading>,
        round: bool,
    ) {
        if self.markets.members.is_empty() {
            return;
        }
        self.markets.shares.insert(
            interval,
            Share {
                own,
                signed,
                delivered: 0,
                received: 0,
                ordered: false,
            },
        );
        while self.markets.shares.len() > 8 {
            self.markets.shares.pop_first();
        }
        if !round {
            self.order(interval);
        }
    }

    /// A neighbour channel's reading of `interval`: what it takes of the meter. `false` when
    /// the market order for the interval already went (the reading would sell the same energy
    /// twice: the neighbour is left out).
    pub(in crate::engine) fn share_taken(
        &mut self,
        interval: IntervalIndex,
        delivered: u64,
        received: u64,
    ) -> bool {
        match self.markets.shares.get_mut(&interval) {
            Some(share) if share.ordered => false,
            Some(share) => {
                share.delivered += delivered;
                share.received += received;
                true
            }
            None => true,
        }
    }

    /// Sends our market orders for `interval`: what the meter measured less what the neighbour
    /// channels took, within each channel's allowance.
    pub(in crate::engine) fn order(&mut self, interval: IntervalIndex) {
        let Some(share) = self.markets.shares.get_mut(&interval) else {
            return;
        };
        if share.ordered {
            return;
        }
        share.ordered = true;
        let offered = MeterReading {
            import: WattHours(share.own.import.0.saturating_sub(share.received)),
            export: WattHours(share.own.export.0.saturating_sub(share.delivered)),
        };
        let channels: Vec<ChannelId> = self.markets.members.keys().copied().collect();
        // One market gets the remainder: the first by channel id (a member of several markets
        // would otherwise sell the same energy in each).
        let Some(channel) = channels.into_iter().min() else {
            return;
        };
        let Some(view) = self.node.channel(&channel) else {
            return;
        };
        if view.phase != Phase::Open || !self.peers.contains_key(&view.peer) {
            return;
        }
        let Some(current) = view.current else {
            return;
        };
        let member = self
            .markets
            .members
            .get_mut(&channel)
            .expect("listed above");
        let limits = self
            .markets
            .parts
            .limits
            .clone()
            .unwrap_or_else(|| Limits::of_grid(member.terms()));
        let allowance = Allowance::of(
            current.state(),
            member.terms(),
            interval,
            view.params.interval_seconds,
        );
        let Some(order) = member.order(interval, offered, &limits, allowance) else {
            return;
        };
        let _ = self.reports.send(Report::Market(MarketReport::Ordered {
            channel,
            interval,
            import: order.order.import,
            export: order.order.export,
        }));
        // The meter's signed reading goes with the order (the market node requires it when
        // the channel's terms name the meter).
        let reading = self.markets.shares.get(&interval).and_then(|s| s.signed);
        self.send(
            view.peer,
            Message::Order(Box::new(gridchan_channel::market::OrderMessage {
                order,
                reading,
            })),
        );
    }
}

/// Recoveries of order signatures, remembered by the process: a book's orders are checked by
/// every member, and where several members' gateways share a process (the demo's
/// neighbourhood, a test, a benchmark) each signature is recovered once, even when every member
/// checks the same book at the same moment (a recovery in progress is waited for, not
/// repeated). Only [`Recovered::one`] makes an entry (the very same recovery, kept), so a
/// member still checks every order against its roster and its pseudonym; bounded, forgotten
/// wholesale when full.
fn recover_orders(book: &gridchan_channel::market::Book, order_digests: &[[u8; 32]]) -> Recovered {
    use gridchan_channel::RecoveredOne;
    use std::sync::{Arc, Mutex, OnceLock};
    type Key = ([u8; 32], [u8; 65]);
    type Cell = Arc<OnceLock<RecoveredOne>>;
    static MEMO: OnceLock<Mutex<HashMap<Key, Cell>>> = OnceLock::new();
    const MAX_REMEMBERED: usize = 200_000;
    let memo = MEMO.get_or_init(Default::default);
    let cells: Vec<(Key, Cell)> = {
        let mut held = memo.lock().unwrap_or_else(|p| p.into_inner());
        if held.len() + book.orders.len() > MAX_REMEMBERED {
            held.clear();
        }
        book.orders
            .iter()
            .zip(order_digests)
            .map(|(o, d)| {
                let key = (*d, o.sig.0);
                (key, held.entry(key).or_default().clone())
            })
            .collect()
    };
    // The recoveries nobody made yet, on the process's pool, in parallel; one another member
    // is making is waited for.
    use rayon::prelude::*;
    let found: Vec<RecoveredOne> = cells
        .par_iter()
        .map(|((digest, sig), cell)| {
            cell.get_or_init(|| Recovered::one(digest, &gridchan_channel::Signature(*sig)))
                .clone()
        })
        .collect();
    Recovered::collect(found)
}

fn is_live(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::AwaitingAccept | Phase::Funding | Phase::Open | Phase::Closing
    )
}
