//! Finding a gateway's channels again after its data was lost or rolled back: each tower holds
//! the newest state we handed it, with the channel's parameters as the ledger records them
//! (`specs/watchtower.md`, "Recover"). `newest` takes, per channel, the newest state any tower
//! has (a tower that lies with an older state, or leaves a channel out, costs nothing while
//! another has the newest; a forged state never verifies); `behind` says which channels the
//! store forgot or holds older than a tower (the daemon refuses to start on them); `record`
//! builds the channel's record to resume from, with the ledger's phase and funds.

use std::collections::BTreeMap;

use gridchan_chain::{ChannelAccount, ChannelStatus};
use gridchan_channel::{
    ChannelId, ChannelParams, ChannelRecord, FundsRecord, NodeId, Phase, SignedState, Version,
};

/// How far above the restored version the gateway's "highest signed" is set: it may have
/// signed proposals the towers never saw (they hold only states signed by both), and must
/// never sign a second state at any of those versions. Well within what a neighbour believes
/// (`MAX_VERSION_LEAD`), so the neighbour follows at once.
pub const RESTORE_LEAD: u64 = 512;

/// The newest state of one channel across the towers.
#[derive(Clone, Debug)]
pub struct Found {
    pub params: ChannelParams,
    pub state: SignedState,
    /// Towers that hold exactly this version, and those that answered with an older one.
    pub towers_newest: usize,
    pub towers_older: usize,
}

/// Per channel of `me`, the newest state the towers' answers hold.
pub fn newest(
    me: &NodeId,
    answers: Vec<Vec<(ChannelParams, SignedState)>>,
) -> BTreeMap<ChannelId, Found> {
    let mut found: BTreeMap<ChannelId, Found> = BTreeMap::new();
    for answer in answers {
        for (params, state) in answer {
            let id = params.channel_id();
            if params.party_of(me).is_none() || state.state().channel_id != id {
                continue;
            }
            match found.get_mut(&id) {
                None => {
                    found.insert(
                        id,
                        Found {
                            params,
                            state,
                            towers_newest: 1,
                            towers_older: 0,
                        },
                    );
                }
                Some(f) if state.version() > f.state.version() => {
                    f.towers_older += f.towers_newest;
                    f.towers_newest = 1;
                    f.state = state;
                }
                Some(f) if state.version() == f.state.version() => f.towers_newest += 1,
                Some(f) => f.towers_older += 1,
            }
        }
    }
    found
}

/// A channel the store forgot, or holds older than a tower does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behind {
    pub channel: ChannelId,
    /// The store's version (`None`: it has no such channel).
    pub stored: Option<Version>,
    pub towers: Version,
}

impl std::fmt::Display for Behind {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self.stored {
            None => write!(
                f,
                "channel {} is missing from the channel store, a tower holds it at version {}",
                self.channel.short(),
                self.towers.0
            ),
            Some(v) => write!(
                f,
                "channel {} is at version {} in the channel store, a tower holds version {}",
                self.channel.short(),
                v.0,
                self.towers.0
            ),
        }
    }
}

/// The channels the store forgot or holds older than the towers, of those still live
/// (`live`: whether the ledger says the channel still holds money, or cannot tell).
pub fn behind(
    stored: &[ChannelRecord],
    found: &BTreeMap<ChannelId, Found>,
    live: impl Fn(&ChannelId) -> bool,
) -> Vec<Behind> {
    let versions: BTreeMap<ChannelId, Version> = stored
        .iter()
        .map(|r| {
            (
                r.id,
                r.current.as_ref().map(|c| c.version()).unwrap_or_default(),
            )
        })
        .collect();
    found
        .iter()
        .filter_map(|(id, f)| {
            let stored = versions.get(id).copied();
            let behind = stored.is_none_or(|v| v < f.state.version());
            (behind && live(id)).then(|| Behind {
                channel: *id,
                stored,
                towers: f.state.version(),
            })
        })
        .collect()
}

/// The record to resume `found` from, keeping what the store still knows of it (`local`), in
/// the phase the ledger (`account`) gives it; `None` when there is nothing to resume (the
/// ledger never saw the channel).
pub fn record(
    me: &NodeId,
    found: &Found,
    local: Option<&ChannelRecord>,
    account: Option<&ChannelAccount>,
) -> Option<ChannelRecord> {
    let party = found.params.party_of(me)?;
    let account = account?;
    let phase = match account.status {
        ChannelStatus::Funding { .. } => Phase::Funding,
        ChannelStatus::Open => Phase::Open,
        ChannelStatus::Registered { .. } => Phase::Disputed,
        ChannelStatus::Concluded { .. } | ChannelStatus::Expired => Phase::Concluded,
    };
    let version = found.state.version();
    let highest = Version(version.0.saturating_add(RESTORE_LEAD))
        .max(local.map(|l| l.highest_signed).unwrap_or_default());
    let i = party.index();
    Some(ChannelRecord {
        id: found.params.channel_id(),
        params: std::sync::Arc::new(found.params.clone()),
        me: party,
        phase,
        current: Some(found.state.clone()),
        proposal: None,
        highest_signed: highest,
        peer_highest: version.max(local.map(|l| l.peer_highest).unwrap_or_default()),
        funds: FundsRecord {
            ledger: account.funds,
            withdraw_wanted: found.state.state().funds.withdrawn[i]
                .max(local.map(|l| l.funds.withdraw_wanted).unwrap_or_default()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridchan_channel::{
        Amount, IntervalIndex, MeterTolerance, Party, PricePerKwh, SignedStateParts, Signer, State,
        Tariff, WattHours,
    };

    fn keys() -> (Signer, Signer) {
        (
            Signer::new(&[1; 32], &[0; 32]).unwrap(),
            Signer::new(&[2; 32], &[0; 32]).unwrap(),
        )
    }

    fn params(nonce: u8) -> ChannelParams {
        let (a, b) = keys();
        ChannelParams {
            party_a: a.id(),
            party_b: b.id(),
            nonce: [nonce; 32],
            deposit_a: Amount(1_000),
            deposit_b: Amount(1_000),
            challenge_window_blocks: 10,
            funding_window_blocks: 10,
            interval_seconds: 900,
            tolerance: MeterTolerance {
                absolute_wh: 0,
                permille: 0,
            },
            opened_at: IntervalIndex(1),
            tariff: Tariff::Flat(PricePerKwh(1_000)),
            evidence: Default::default(),
        }
    }

    fn at(p: &ChannelParams, version: u64) -> (ChannelParams, SignedState) {
        let (a, b) = keys();
        let (s, _) = State::initial(p)
            .settle(
                p,
                Version(version),
                Party::A,
                IntervalIndex(1 + version),
                WattHours(version),
            )
            .unwrap();
        let d = s.digest();
        let signed = SignedStateParts {
            sig_a: a.sign(&d),
            sig_b: b.sign(&d),
            state: s,
        }
        .verify(p, &p.channel_id())
        .unwrap();
        (p.clone(), signed)
    }

    #[test]
    fn the_newest_state_wins_whichever_tower_lies_or_forgets() {
        let (me, _) = keys();
        let (p, q) = (params(1), params(2));
        // Tower 1 lies with an older state of p and forgot q; tower 2 has both newest.
        let found = newest(&me.id(), vec![vec![at(&p, 3)], vec![at(&p, 9), at(&q, 4)]]);
        let f = &found[&p.channel_id()];
        assert_eq!(f.state.version(), Version(9));
        assert_eq!((f.towers_newest, f.towers_older), (1, 1));
        assert_eq!(found[&q.channel_id()].state.version(), Version(4));
        // In whatever order they answer.
        let found = newest(
            &me.id(),
            vec![vec![at(&p, 9)], vec![at(&p, 3)], vec![at(&p, 9)]],
        );
        let f = &found[&p.channel_id()];
        assert_eq!(
            (f.state.version(), f.towers_newest, f.towers_older),
            (Version(9), 2, 1)
        );
        // A channel we are not a party of is not ours to restore.
        let stranger = Signer::new(&[7; 32], &[0; 32]).unwrap();
        assert!(newest(&stranger.id(), vec![vec![at(&p, 9)]]).is_empty());
    }

    #[test]
    fn a_store_that_forgot_or_rolled_back_is_behind_and_a_paid_out_channel_is_not() {
        let (me, _) = keys();
        let (p, q) = (params(1), params(2));
        let found = newest(&me.id(), vec![vec![at(&p, 9), at(&q, 4)]]);
        let rolled_back = record(
            &me.id(),
            &Found {
                state: at(&p, 3).1,
                ..found[&p.channel_id()].clone()
            },
            None,
            Some(&open(&p)),
        )
        .unwrap();
        let b = behind(&[rolled_back], &found, |_| true);
        assert_eq!(b.len(), 2);
        assert!(b.contains(&Behind {
            channel: p.channel_id(),
            stored: Some(Version(3)),
            towers: Version(9)
        }));
        assert!(b.contains(&Behind {
            channel: q.channel_id(),
            stored: None,
            towers: Version(4)
        }));
        let b: Vec<_> = b
            .into_iter()
            .filter(|x| x.channel == p.channel_id())
            .collect();
        assert!(b[0]
            .to_string()
            .contains("at version 3 in the channel store, a tower holds version 9"));
        // A channel the ledger paid out is nothing to stop for.
        assert_eq!(behind(&[], &found, |id| *id != q.channel_id()).len(), 1);
    }

    fn open(p: &ChannelParams) -> ChannelAccount {
        ChannelAccount {
            params: p.clone(),
            deposited: [p.deposit_a, p.deposit_b],
            status: ChannelStatus::Open,
            claimable: [Amount(0); 2],
            funds: Default::default(),
        }
    }

    #[test]
    fn a_restored_record_never_signs_again_at_a_version_it_may_have_used() {
        let (me, _) = keys();
        let p = params(1);
        let found = newest(&me.id(), vec![vec![at(&p, 9)]]);
        let f = &found[&p.channel_id()];
        let r = record(&me.id(), f, None, Some(&open(&p))).unwrap();
        assert_eq!(r.phase, Phase::Open);
        assert_eq!(r.highest_signed, Version(9 + RESTORE_LEAD));
        assert_eq!(r.peer_highest, Version(9));
        let mut registered = open(&p);
        registered.status = ChannelStatus::Registered {
            version: Version(9),
            deadline: 5,
            state: f.state.state().clone(),
        };
        assert_eq!(
            record(&me.id(), f, None, Some(&registered)).unwrap().phase,
            Phase::Disputed
        );
        // The ledger never saw it: nothing to resume.
        assert!(record(&me.id(), f, None, None).is_none());
    }
}
