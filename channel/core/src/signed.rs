//! States with signatures. Parse, don't validate: a [`SignedState`] or a [`Proposal`] exists
//! only once its signatures were checked against the channel's parties.

use serde::{Deserialize, Serialize};

use crate::crypto::{Keys, Recovered, Signature};
use crate::params::ChannelParams;
use crate::state::{Refusal, State};
use crate::types::{ChannelId, Party, Version};

/// A state signed by both parties: the only kind that counts on the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedState {
    state: State,
    digest: [u8; 32],
    sig_a: Signature,
    sig_b: Signature,
}

/// A state signed by its proposer only, waiting for the other party's countersignature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    state: State,
    digest: [u8; 32],
    proposer: Party,
    sig: Signature,
}

/// The plain fields of a signed state, as they travel and are stored. Turn them back into a
/// [`SignedState`] with [`SignedStateParts::verify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedStateParts {
    pub state: State,
    pub sig_a: Signature,
    pub sig_b: Signature,
}

/// The plain fields of a proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalParts {
    pub state: State,
    pub proposer: Party,
    pub sig: Signature,
}

impl SignedState {
    /// Checks both signatures over `state` against the parties of `params`.
    /// `id` is `params.channel_id()`, passed in because computing it is not free.
    pub fn verify(
        params: &ChannelParams,
        id: &ChannelId,
        state: State,
        sig_a: Signature,
        sig_b: Signature,
    ) -> Result<SignedState, Refusal> {
        SignedState::verify_known(params, id, state, sig_a, sig_b, &Recovered::NONE)
    }

    /// [`SignedState::verify`], with recoveries a host made ahead.
    pub fn verify_known(
        params: &ChannelParams,
        id: &ChannelId,
        state: State,
        sig_a: Signature,
        sig_b: Signature,
        known: &Recovered,
    ) -> Result<SignedState, Refusal> {
        if state.channel_id != *id {
            return Err(Refusal::WrongChannel);
        }
        let digest = state.digest();
        sig_a
            .verify_known(&digest, &params.party_a, known)
            .map_err(|_| Refusal::BadSignature)?;
        sig_b
            .verify_known(&digest, &params.party_b, known)
            .map_err(|_| Refusal::BadSignature)?;
        Ok(SignedState {
            state,
            digest,
            sig_a,
            sig_b,
        })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn version(&self) -> Version {
        self.state.version
    }

    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    pub fn signature(&self, party: Party) -> &Signature {
        match party {
            Party::A => &self.sig_a,
            Party::B => &self.sig_b,
        }
    }

    pub fn to_parts(&self) -> SignedStateParts {
        SignedStateParts {
            state: self.state.clone(),
            sig_a: self.sig_a,
            sig_b: self.sig_b,
        }
    }
}

impl SignedStateParts {
    pub fn verify(self, params: &ChannelParams, id: &ChannelId) -> Result<SignedState, Refusal> {
        self.verify_known(params, id, &Recovered::NONE)
    }

    /// [`SignedStateParts::verify`], with recoveries a host made ahead.
    pub fn verify_known(
        self,
        params: &ChannelParams,
        id: &ChannelId,
        known: &Recovered,
    ) -> Result<SignedState, Refusal> {
        SignedState::verify_known(params, id, self.state, self.sig_a, self.sig_b, known)
    }
}

impl Proposal {
    /// Signs `state` as `proposer`. The caller has persisted the intent to sign first.
    pub(crate) fn sign(state: State, proposer: Party, keys: &Keys) -> Proposal {
        let digest = state.digest();
        let sig = keys.sign(&digest);
        Proposal {
            state,
            digest,
            proposer,
            sig,
        }
    }

    /// Checks the proposer's signature. `id` is `params.channel_id()`.
    pub fn verify(
        params: &ChannelParams,
        id: &ChannelId,
        parts: ProposalParts,
    ) -> Result<Proposal, Refusal> {
        Proposal::verify_known(params, id, parts, &Recovered::NONE)
    }

    /// [`Proposal::verify`], with recoveries a host made ahead.
    pub fn verify_known(
        params: &ChannelParams,
        id: &ChannelId,
        parts: ProposalParts,
        known: &Recovered,
    ) -> Result<Proposal, Refusal> {
        if parts.state.channel_id != *id {
            return Err(Refusal::WrongChannel);
        }
        let digest = parts.state.digest();
        parts
            .sig
            .verify_known(&digest, params.node(parts.proposer), known)
            .map_err(|_| Refusal::BadSignature)?;
        Ok(Proposal {
            state: parts.state,
            digest,
            proposer: parts.proposer,
            sig: parts.sig,
        })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn version(&self) -> Version {
        self.state.version
    }

    pub fn proposer(&self) -> Party {
        self.proposer
    }

    pub fn signature(&self) -> &Signature {
        &self.sig
    }

    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// Completes the proposal with the other party's signature, checking it.
    pub fn complete(
        &self,
        params: &ChannelParams,
        countersig: Signature,
    ) -> Result<SignedState, Refusal> {
        self.complete_known(params, countersig, &Recovered::NONE)
    }

    /// [`Proposal::complete`], with recoveries a host made ahead.
    pub fn complete_known(
        &self,
        params: &ChannelParams,
        countersig: Signature,
        known: &Recovered,
    ) -> Result<SignedState, Refusal> {
        let other = self.proposer.other();
        countersig
            .verify_known(&self.digest, params.node(other), known)
            .map_err(|_| Refusal::BadSignature)?;
        Ok(self.with_countersignature(countersig))
    }

    /// Completes the proposal with our own countersignature (made with `keys`, which are the
    /// other party's: no need to check it).
    pub(crate) fn countersign(&self, keys: &Keys) -> SignedState {
        let sig = keys.sign(&self.digest);
        self.with_countersignature(sig)
    }

    fn with_countersignature(&self, countersig: Signature) -> SignedState {
        let (sig_a, sig_b) = match self.proposer {
            Party::A => (self.sig, countersig),
            Party::B => (countersig, self.sig),
        };
        SignedState {
            state: self.state.clone(),
            digest: self.digest,
            sig_a,
            sig_b,
        }
    }

    pub fn to_parts(&self) -> ProposalParts {
        ProposalParts {
            state: self.state.clone(),
            proposer: self.proposer,
            sig: self.sig,
        }
    }
}
