//! The watcher: follows the ledger from where it stopped and matches every registration
//! against the state held, handing the stale ones to the responder.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use gridchan_chain::{ChainEvent, ChannelStatus, LedgerError, Subscription};
use gridchan_channel::{ChannelId, Version};
use tokio::sync::mpsc;

use super::responder::refute;
use super::{lock, Registration, Tower};

/// Follows the ledger from where it stopped, and refutes every registration older than the
/// state held, until each refute is included or the window closes.
pub(super) async fn follow(tower: Arc<Tower>, mut changed: mpsc::UnboundedReceiver<ChannelId>) {
    let mut registered: HashMap<ChannelId, Registration> = HashMap::new();
    let mut refuting: HashSet<ChannelId> = HashSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(ChannelId, Option<Version>)>();
    // Catch up: what is registered now (a restart in the middle of a window).
    let mut backoff = Duration::from_millis(200);
    let start = loop {
        match catch_up(&tower, &mut registered).await {
            Ok(h) => break h,
            Err(e) => {
                tracing::warn!("cannot follow the ledger: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    let stored = lock(&tower.store).next_height().ok().flatten();
    let mut sub = Subscription::new(
        tower.ledger.clone(),
        stored.unwrap_or(start + 1).min(start + 1),
    );
    let ids: Vec<ChannelId> = registered.keys().copied().collect();
    for id in ids {
        maybe_refute(&tower, id, &registered, &mut refuting, &done_tx);
    }
    loop {
        tokio::select! {
            block = sub.next_retrying() => {
                for event in block.events() {
                    match event {
                        ChainEvent::Registered { channel, version, deadline }
                        | ChainEvent::Refuted { channel, version, deadline } => {
                            if !tower.holds(channel) {
                                continue;
                            }
                            registered.insert(*channel, Registration {
                                version: *version,
                                deadline: *deadline,
                                seen_height: block.height,
                            });
                            maybe_refute(&tower, *channel, &registered, &mut refuting, &done_tx);
                        }
                        ChainEvent::Concluded { channel, .. } => {
                            registered.remove(channel);
                            if tower.holds(channel) {
                                tower.close(channel);
                            }
                        }
                        _ => {}
                    }
                }
                if let Err(e) = lock(&tower.store).set_next_height(block.height + 1) {
                    tracing::error!("cannot record the ledger height: {e}");
                }
                registered.retain(|_, r| r.deadline >= block.height);
            }
            Some(id) = changed.recv() => {
                // A newer state arrived for a channel that may be registered right now.
                maybe_refute(&tower, id, &registered, &mut refuting, &done_tx);
            }
            Some((id, landed)) = done_rx.recv() => {
                refuting.remove(&id);
                // What our refute put on the ledger counts before its block is followed:
                // no second refute with the same state.
                if let (Some(v), Some(r)) = (landed, registered.get_mut(&id)) {
                    r.version = r.version.max(v);
                }
                // The held state may have grown meanwhile.
                maybe_refute(&tower, id, &registered, &mut refuting, &done_tx);
            }
        }
    }
}

/// Reads the ledger's status of every guarded channel; returns the height read at.
pub(super) async fn catch_up(
    tower: &Arc<Tower>,
    registered: &mut HashMap<ChannelId, Registration>,
) -> Result<u64, LedgerError> {
    let height = tower.ledger.height().await?;
    let ids: Vec<ChannelId> = lock(&tower.memory).channels.keys().copied().collect();
    for id in ids {
        match tower.ledger.channel(&id).await?.map(|a| a.status) {
            Some(ChannelStatus::Registered {
                version, deadline, ..
            }) => {
                registered.insert(
                    id,
                    Registration {
                        version,
                        deadline,
                        seen_height: height,
                    },
                );
            }
            Some(ChannelStatus::Concluded { .. } | ChannelStatus::Expired) => tower.close(&id),
            _ => {}
        }
    }
    Ok(height)
}

pub(super) fn maybe_refute(
    tower: &Arc<Tower>,
    id: ChannelId,
    registered: &HashMap<ChannelId, Registration>,
    refuting: &mut HashSet<ChannelId>,
    done: &mpsc::UnboundedSender<(ChannelId, Option<Version>)>,
) {
    let Some(reg) = registered.get(&id).copied() else {
        return;
    };
    let Some(ours) = tower.held(&id) else {
        return;
    };
    if ours.version() <= reg.version || !refuting.insert(id) {
        return;
    }
    tracing::warn!(
        "channel {}: version {} registered, we hold {}: refuting",
        id.short(),
        reg.version,
        ours.version()
    );
    let (tower, done) = (tower.clone(), done.clone());
    tokio::spawn(async move {
        let landed = refute(&tower, ours, reg).await;
        let _ = done.send((id, landed));
    });
}
