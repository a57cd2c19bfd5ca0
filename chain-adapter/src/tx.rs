//! Ledger transactions: what an account asks the ledger to do, signed by that account.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use gridchan_channel::{
    Amount, ChannelId, ChannelParams, NodeId, Signature, SignedStateParts, Signer,
};

/// The domain tag of a transaction digest.
const TX_DOMAIN: &[u8] = b"gridchan.tx.v1";

/// What a transaction does. The rules are in `specs/adjudicator.md`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxKind {
    /// Move tokens between accounts.
    Transfer { to: NodeId, amount: Amount },
    /// Deposit the sender's share into a channel (creating its ledger record on first deposit).
    Deposit {
        params: Box<ChannelParams>,
        amount: Amount,
    },
    /// Take back a deposit the other party never matched, after the funding window.
    Reclaim { channel: ChannelId },
    /// Start a unilateral close with a state signed by both parties.
    Register { state: Box<SignedStateParts> },
    /// Answer a registration with a newer state signed by both (anyone may).
    Refute { state: Box<SignedStateParts> },
    /// After the challenge window: pay out the newest state registered or refuted in time.
    Conclude { channel: ChannelId },
    /// Pay out a final state signed by both, at once.
    ConcludeFinal { state: Box<SignedStateParts> },
    /// Move part of the sender's payout from a concluded channel to its account.
    Withdraw { channel: ChannelId, amount: Amount },
    /// Add the sender's tokens to its open channel.
    TopUp { channel: ChannelId, amount: Amount },
    /// Pay the withdrawals a state signed by both makes, the channel staying open (anyone may).
    WithdrawOpen { state: Box<SignedStateParts> },
    /// Several of the sender's operations in one transaction, each applied on its own in order:
    /// one that is refused is reported in its place (`ChainEvent::BatchItemFailed`) and the
    /// others go on.
    Batch { items: Vec<TxKind> },
}

impl TxKind {
    /// The sender's tokens this transaction takes into channels (deposits and top-ups, a
    /// batch's added up): what an ERC-20 adjudicator must be approved for.
    pub fn tokens_pulled(&self) -> u64 {
        match self {
            TxKind::Deposit { amount, .. } | TxKind::TopUp { amount, .. } => amount.0,
            TxKind::Batch { items } => items
                .iter()
                .map(TxKind::tokens_pulled)
                .fold(0u64, u64::saturating_add),
            _ => 0,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            TxKind::Transfer { .. } => "transfer",
            TxKind::Deposit { .. } => "deposit",
            TxKind::Reclaim { .. } => "reclaim",
            TxKind::Register { .. } => "register",
            TxKind::Refute { .. } => "refute",
            TxKind::Conclude { .. } => "conclude",
            TxKind::ConcludeFinal { .. } => "conclude-final",
            TxKind::Withdraw { .. } => "withdraw",
            TxKind::TopUp { .. } => "top-up",
            TxKind::WithdrawOpen { .. } => "withdraw-open",
            TxKind::Batch { .. } => "batch",
        }
    }
}

impl From<&gridchan_channel::LedgerRequest> for TxKind {
    /// The transaction that carries out what a channel asked of the ledger.
    fn from(r: &gridchan_channel::LedgerRequest) -> TxKind {
        use gridchan_channel::LedgerRequest as R;
        match r {
            R::Deposit { params, amount } => TxKind::Deposit {
                params: Box::new((**params).clone()),
                amount: *amount,
            },
            R::Reclaim { channel } => TxKind::Reclaim { channel: *channel },
            R::Register(s) => TxKind::Register {
                state: Box::new(s.to_parts()),
            },
            R::Refute(s) => TxKind::Refute {
                state: Box::new(s.to_parts()),
            },
            R::Conclude { channel } => TxKind::Conclude { channel: *channel },
            R::ConcludeFinal(s) => TxKind::ConcludeFinal {
                state: Box::new(s.to_parts()),
            },
            R::TopUp { channel, amount } => TxKind::TopUp {
                channel: *channel,
                amount: *amount,
            },
            R::Withdraw(s) => TxKind::WithdrawOpen {
                state: Box::new(s.to_parts()),
            },
        }
    }
}

/// A signed transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tx {
    pub sender: NodeId,
    /// The sender's account nonce: transactions of one sender apply in nonce order, once.
    pub nonce: u64,
    pub kind: TxKind,
    pub sig: Signature,
}

/// A transaction's identity: the digest its sender signed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TxHash(pub [u8; 32]);

impl std::fmt::Debug for TxHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TxHash({})", hex::encode(&self.0[..6]))
    }
}

impl std::fmt::Display for TxHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Tx {
    /// `sha256("gridchan.tx.v1" || chain_id || bincode(sender, nonce, kind))`.
    pub fn digest(chain_id: &[u8; 32], sender: &NodeId, nonce: u64, kind: &TxKind) -> TxHash {
        let body =
            bincode::serde::encode_to_vec((sender, nonce, kind), bincode::config::standard())
                .expect("transactions always encode");
        let mut h = Sha256::new();
        h.update(TX_DOMAIN);
        h.update(chain_id);
        h.update(&body);
        TxHash(h.finalize().into())
    }

    /// Builds and signs a transaction.
    pub fn sign(chain_id: &[u8; 32], signer: &Signer, nonce: u64, kind: TxKind) -> Tx {
        let hash = Tx::digest(chain_id, &signer.id(), nonce, &kind);
        Tx {
            sender: signer.id(),
            nonce,
            sig: signer.sign(&hash.0),
            kind,
        }
    }

    pub fn hash(&self, chain_id: &[u8; 32]) -> TxHash {
        Tx::digest(chain_id, &self.sender, self.nonce, &self.kind)
    }

    /// Whether the sender signed it for this ledger.
    pub fn verify(&self, chain_id: &[u8; 32]) -> bool {
        self.sig
            .verify(&self.hash(chain_id).0, &self.sender)
            .is_ok()
    }
}
