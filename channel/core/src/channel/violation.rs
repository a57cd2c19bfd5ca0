//! Protocol violations: what a peer did that an honest peer never does. Each costs the peer its
//! connection (the reason goes to it and to the log), never our state.

use crate::state::Refusal;
use crate::types::{ChannelId, Version};

/// A protocol violation by the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Violation {
    /// A message that fails a check a signed state must pass (signature, channel, values).
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("unknown channel {}", .0.short())]
    UnknownChannel(ChannelId),
    #[error("not a party of channel {}", .0.short())]
    NotAParty(ChannelId),
    #[error("conflicting OpenChannel for an existing channel")]
    ConflictingOpen,
    #[error("AcceptChannel sent to party B")]
    AcceptToB,
    #[error("no version 0 awaiting acceptance")]
    NoVersion0Pending,
    #[error("{0} claims to be from us")]
    ProposalFromUs(&'static str),
    #[error("proposal before version 0 is signed")]
    ProposalBeforeVersion0,
    #[error("proposal {proposed} is not newer than the current {current}")]
    NotNewer { proposed: Version, current: Version },
    #[error("second proposal while one is pending")]
    SecondProposal,
    #[error("stale proposal {proposed}: the peer's {resolved} is already resolved")]
    Stale {
        proposed: Version,
        resolved: Version,
    },
    #[error(
        "crossed our proposals {0} times in a row without an update between: crossing on purpose"
    )]
    CrossingOnPurpose(u8),
    #[error("unexpected countersignature for {0}")]
    UnexpectedCountersignature(Version),
    #[error("countersignature for {countersigned}, our proposal is {ours}")]
    WrongCountersignature {
        countersigned: Version,
        ours: Version,
    },
    #[error(
        "{what} claims version {claimed}, more than {lead} beyond the newest we know ({known}){closing}"
    )]
    Implausible {
        what: &'static str,
        claimed: u64,
        known: u64,
        lead: u64,
        closing: ClosingOnLedger,
    },
    #[error("a second reestablish on one connection")]
    SecondReestablish,
    #[error("peer holds a state newer than any we signed")]
    StateWeNeverSigned,
}

/// Whether an implausible claim closes the channel on the ledger: the how-manieth such claim
/// it is, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClosingOnLedger(pub Option<u8>);

impl std::fmt::Display for ClosingOnLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "; the {n} such claim: closing the channel on the ledger"),
            None => Ok(()),
        }
    }
}
