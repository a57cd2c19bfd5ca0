//! The responder: sends a refute and sees it included, retrying until the window closes.

use std::sync::Arc;
use std::time::Duration;

use gridchan_chain::{LedgerError, TxError};
use gridchan_channel::{SignedState, Version};

use crate::store::Action;

use super::{lock, Registration, Tower};

/// Submits a refute and sees it included, retrying until the window closes. Returns the
/// version it put on the ledger, if it did.
pub(super) async fn refute(
    tower: &Arc<Tower>,
    ours: SignedState,
    reg: Registration,
) -> Option<Version> {
    let id = ours.state().channel_id;
    let action = Action {
        id: 0,
        channel: id,
        registered_version: reg.version.0,
        our_version: ours.version().0,
        seen_height: reg.seen_height,
        deadline: reg.deadline,
        outcome: None,
        included_height: None,
    };
    let action_id = match lock(&tower.store).record_action(&action) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("cannot record the refute of {}: {e}", id.short());
            0
        }
    };
    let finish = |outcome: &str, included: Option<u64>| {
        tracing::info!("channel {}: refute {outcome}", id.short());
        if let Err(e) = lock(&tower.store).finish_action(action_id, outcome, included) {
            tracing::error!("cannot record the refute's outcome: {e}");
        }
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let height = tower.ledger.height().await.unwrap_or(0);
        if height > reg.deadline {
            finish("too late: the window closed", None);
            return None;
        }
        let attempt = async {
            // Concurrent refutes share the tower's account: the client sends them one at a
            // time, each with the next nonce.
            let hash = tower.ledger.refute(&ours).await?;
            // Wait for inclusion, a few blocks at most, then send again.
            tower.ledger.wait_for(&hash, Duration::from_secs(10)).await
        };
        match attempt.await {
            Ok(receipt) => match receipt.outcome.result {
                Ok(_) => {
                    finish(
                        &format!("included at {}", receipt.height),
                        Some(receipt.height),
                    );
                    return Some(ours.version());
                }
                Err(TxError::NotNewer { .. }) => {
                    finish("not needed: a state at least as new got in first", None);
                    return None;
                }
                Err(e) => {
                    finish(&format!("failed in block {}: {e}", receipt.height), None);
                    return None;
                }
            },
            Err(LedgerError::Refused(TxError::NotNewer { .. })) => {
                finish(
                    "not needed: a state at least as new is already on the ledger",
                    None,
                );
                return None;
            }
            Err(LedgerError::Refused(e)) => {
                finish(&format!("refused: {e}"), None);
                return None;
            }
            Err(e) => {
                tracing::warn!("refuting {}: {e}; retrying", id.short());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
