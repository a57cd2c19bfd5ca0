//! The ledger's state transition: accounts, and the adjudication contract for channels. Pure
//! and deterministic: replaying the same blocks gives the same state. The rules are written
//! down in `specs/adjudicator.md`; each error below names the rule that refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use gridchan_channel::{
    Amount, ChannelId, ChannelParams, Funds, NodeId, Party, SignedState, SignedStateParts, State,
    Version,
};

use crate::tx::{Tx, TxKind};

/// Block heights.
pub type Height = u64;

/// The most operations one batch transaction carries (`specs/adjudicator.md`, "Batch").
pub const MAX_BATCH_ITEMS: usize = 1_000;

/// Ledger-wide settings fixed at genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// Distinguishes this ledger's transactions from any other's (replay protection).
    pub chain_id: [u8; 32],
    /// The shortest challenge window a channel may have, in blocks.
    pub min_challenge_window: u64,
    /// Accounts and their initial balances.
    pub balances: Vec<(NodeId, Amount)>,
}

/// An account: tokens and the nonce its next transaction must carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub balance: Amount,
    pub nonce: u64,
}

/// Where a channel is on the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelStatus {
    /// Deposits are arriving; both must be in by `deadline` (inclusive).
    Funding { deadline: Height },
    /// Both deposits are in.
    Open,
    /// A state is registered; refutable through `deadline` (inclusive).
    Registered {
        version: Version,
        deadline: Height,
        state: State,
    },
    /// Paid out: the state with this version decided the payout.
    Concluded { version: Version },
    /// The funding window passed without both deposits; deposits were refunded.
    Expired,
}

/// A channel as the ledger sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelAccount {
    pub params: ChannelParams,
    pub deposited: [Amount; 2],
    pub status: ChannelStatus,
    /// Paid out or refunded, not yet withdrawn, per party (A, B).
    pub claimable: [Amount; 2],
    /// Top-ups each party made and withdrawals the ledger paid each while the channel was
    /// open (cumulative; zero again once it concluded).
    pub funds: Funds,
}

/// Something that happened on the ledger, in a block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChainEvent {
    Transferred {
        from: NodeId,
        to: NodeId,
        amount: Amount,
    },
    Deposited {
        channel: ChannelId,
        party: Party,
        amount: Amount,
    },
    /// Every deposit the parameters ask for is in.
    Funded { channel: ChannelId },
    Reclaimed {
        channel: ChannelId,
        party: Party,
        amount: Amount,
    },
    Registered {
        channel: ChannelId,
        version: Version,
        deadline: Height,
    },
    Refuted {
        channel: ChannelId,
        version: Version,
        deadline: Height,
    },
    Concluded {
        channel: ChannelId,
        version: Version,
        payout: [Amount; 2],
    },
    Withdrawn {
        channel: ChannelId,
        party: Party,
        amount: Amount,
    },
    /// `party` added `amount` to the open channel; `total` is all it added so far.
    ToppedUp {
        channel: ChannelId,
        party: Party,
        amount: Amount,
        total: Amount,
    },
    /// The open channel paid `party` a withdrawal of `amount`; `total` is all it was paid so
    /// far.
    WithdrawnOpen {
        channel: ChannelId,
        party: Party,
        amount: Amount,
        total: Amount,
    },
    /// Operation `index` of a batch was refused (and changed nothing); the others went on.
    BatchItemFailed { index: u32, error: TxError },
}

impl ChainEvent {
    /// The channel the event is about (none for a transfer between accounts).
    pub fn channel(&self) -> Option<ChannelId> {
        match self {
            ChainEvent::Transferred { .. } | ChainEvent::BatchItemFailed { .. } => None,
            ChainEvent::Deposited { channel, .. }
            | ChainEvent::Funded { channel }
            | ChainEvent::Reclaimed { channel, .. }
            | ChainEvent::Registered { channel, .. }
            | ChainEvent::Refuted { channel, .. }
            | ChainEvent::Concluded { channel, .. }
            | ChainEvent::Withdrawn { channel, .. }
            | ChainEvent::ToppedUp { channel, .. }
            | ChainEvent::WithdrawnOpen { channel, .. } => Some(*channel),
        }
    }
}

/// Why a transaction was refused. Nothing changes when a transaction fails, except its
/// sender's nonce if it was included in a block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TxError {
    /// The signature does not verify for the sender on this ledger.
    #[error("bad transaction signature")]
    BadTxSignature,
    /// The nonce is not the sender's next one (a replay, or a gap).
    #[error("nonce {got}, expected {expected}")]
    BadNonce { expected: u64, got: u64 },
    /// Not enough tokens in the sender's account.
    #[error("balance {balance} is less than {needed}")]
    InsufficientBalance { balance: Amount, needed: Amount },
    /// No channel with this id on the ledger.
    #[error("unknown channel")]
    UnknownChannel,
    /// The sender (or a signer) is not a party of the channel.
    #[error("not a party of the channel")]
    NotAParty,
    /// Invalid channel parameters.
    #[error("invalid channel parameters: {0}")]
    InvalidParams(String),
    /// A deposit must be exactly the party's deposit in the parameters.
    #[error("deposit must be {expected}")]
    WrongDepositAmount { expected: Amount },
    /// The party already deposited.
    #[error("already deposited")]
    AlreadyDeposited,
    /// The channel is not in the phase this transaction needs.
    #[error("channel is {0}")]
    WrongPhase(String),
    /// The funding window is over.
    #[error("funding window closed at height {deadline}")]
    FundingClosed { deadline: Height },
    /// The funding window is still open.
    #[error("funding window open until height {deadline}")]
    FundingOpen { deadline: Height },
    /// A state's signatures do not verify against the channel's parties.
    #[error("state signatures invalid: {0}")]
    BadStateSignature(String),
    /// The state does not hold the channel's money.
    #[error("state balances do not add up to the deposits")]
    MoneyNotConserved,
    /// A refutation must be newer than what is registered.
    #[error("version {got} is not newer than registered {registered}")]
    NotNewer { registered: Version, got: Version },
    /// The challenge window is over (for refute) or not yet over (for conclude).
    #[error("challenge window ends at height {deadline}")]
    Window { deadline: Height },
    /// A final state is needed (conclude-final), or was given where it is not allowed
    /// (register).
    #[error("state final flag is wrong for this transaction")]
    FinalFlag,
    /// More than the party's payout remains.
    #[error("claimable {claimable} is less than {needed}")]
    InsufficientClaimable { claimable: Amount, needed: Amount },
    /// Arithmetic would overflow.
    #[error("amount overflow")]
    Overflow,
    /// On an EVM chain: the settlement token did not move exactly the amount asked (a token
    /// that charges a fee on transfer, or refuses), or the adjudicator may not take it.
    #[error("the settlement token refused: {0}")]
    TokenRefused(String),
    /// On an EVM chain: the transaction reverted for a reason that is none of the rules' (it
    /// ran out of gas, say).
    #[error("reverted on chain: {0}")]
    Reverted(String),
    /// A state counts top-ups the ledger does not hold.
    #[error("the state counts top-ups the ledger does not hold")]
    TopUpNotMade,
    /// A state from before a withdrawal the ledger already paid.
    #[error("the state is older than a withdrawal the ledger paid")]
    WithdrawalNotInState,
    /// A withdrawal state the ledger already paid in full.
    #[error("nothing to withdraw: the ledger paid this state's withdrawals")]
    NothingToWithdraw,
    /// A batch that is empty, too long, or holds a batch.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
}

/// All ledger state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerState {
    pub genesis: Genesis,
    pub accounts: BTreeMap<NodeId, Account>,
    pub channels: BTreeMap<ChannelId, ChannelAccount>,
}

impl LedgerState {
    pub fn new(genesis: Genesis) -> LedgerState {
        let mut accounts = BTreeMap::new();
        for (node, amount) in &genesis.balances {
            let acc: &mut Account = accounts.entry(*node).or_default();
            acc.balance = Amount(acc.balance.0.saturating_add(amount.0));
        }
        LedgerState {
            genesis,
            accounts,
            channels: BTreeMap::new(),
        }
    }

    pub fn account(&self, node: &NodeId) -> Account {
        self.accounts.get(node).copied().unwrap_or_default()
    }

    /// Every token: in accounts, and held by channels (deposits not yet paid, payouts not
    /// yet withdrawn). Constant under every transaction.
    pub fn total_supply(&self) -> u128 {
        let accounts: u128 = self
            .accounts
            .values()
            .map(|a| u128::from(a.balance.0))
            .sum();
        let channels: u128 = self.channels.values().map(ChannelAccount::held).sum();
        accounts + channels
    }

    /// Checks signature and nonce only (what a mempool checks before accepting).
    pub fn check_envelope(&self, tx: &Tx) -> Result<(), TxError> {
        self.check_envelope_hashed(tx, &tx.hash(&self.genesis.chain_id))
    }

    /// [`LedgerState::check_envelope`] for a caller that already computed the hash.
    fn check_envelope_hashed(&self, tx: &Tx, hash: &crate::tx::TxHash) -> Result<(), TxError> {
        if tx.sig.verify(&hash.0, &tx.sender).is_err() {
            return Err(TxError::BadTxSignature);
        }
        self.check_nonce(tx)
    }

    /// The nonce must be the sender's next one, and one that can still advance: an account at
    /// the last nonce can send nothing more, rather than wrap to 0 and replay its history.
    fn check_nonce(&self, tx: &Tx) -> Result<(), TxError> {
        let expected = self.account(&tx.sender).nonce;
        if tx.nonce != expected {
            return Err(TxError::BadNonce {
                expected,
                got: tx.nonce,
            });
        }
        if expected == u64::MAX {
            return Err(TxError::Overflow);
        }
        Ok(())
    }

    /// Applies `tx` at `height`. On error nothing changes; on success the sender's nonce
    /// advances. (A block that includes a failed transaction advances the nonce separately,
    /// with [`LedgerState::consume_nonce`].)
    pub fn apply(&mut self, tx: &Tx, height: Height) -> Result<Vec<ChainEvent>, TxError> {
        self.apply_hashed(tx, &tx.hash(&self.genesis.chain_id), height)
    }

    /// [`LedgerState::apply`] with the transaction's hash (`tx.hash(chain_id)`) given.
    pub fn apply_hashed(
        &mut self,
        tx: &Tx,
        hash: &crate::tx::TxHash,
        height: Height,
    ) -> Result<Vec<ChainEvent>, TxError> {
        self.check_envelope_hashed(tx, hash)?;
        let events = self.execute(tx, height)?;
        self.consume_nonce(&tx.sender);
        Ok(events)
    }

    /// Applies a transaction whose signature was already checked (by [`LedgerState::apply`]
    /// on another copy of this state). Checks the nonce and every rule, like `apply`.
    pub fn apply_presigned(&mut self, tx: &Tx, height: Height) -> Result<Vec<ChainEvent>, TxError> {
        self.check_nonce(tx)?;
        let events = self.execute(tx, height)?;
        self.consume_nonce(&tx.sender);
        Ok(events)
    }

    /// Advances `sender`'s nonce (a failed transaction included in a block still uses it).
    pub fn consume_nonce(&mut self, sender: &NodeId) {
        let acc = self.accounts.entry(*sender).or_default();
        // Saturates: `check_nonce` refuses every transaction from an account at the last
        // nonce, so it never advances past it.
        acc.nonce = acc.nonce.saturating_add(1);
    }

    /// Refuses unless `who` holds `amount`. Every transaction checks everything before it
    /// changes anything, so a refused one leaves no trace.
    fn check_debit(&self, who: &NodeId, amount: Amount) -> Result<(), TxError> {
        let balance = self.account(who).balance;
        if balance < amount {
            return Err(TxError::InsufficientBalance {
                balance,
                needed: amount,
            });
        }
        Ok(())
    }

    fn check_credit(&self, who: &NodeId, amount: Amount) -> Result<(), TxError> {
        self.account(who)
            .balance
            .checked_add(amount)
            .map(|_| ())
            .ok_or(TxError::Overflow)
    }

    /// Credits `who`. Callers checked with `check_credit` first; should a rule ever forget,
    /// the balance saturates rather than wraps, and `total_supply` (checked by the properties)
    /// shows the loss.
    fn add(&mut self, who: &NodeId, amount: Amount) {
        let acc = self.accounts.entry(*who).or_default();
        acc.balance = Amount(acc.balance.0.saturating_add(amount.0));
    }

    /// Debits `who`. Callers checked with `check_debit` first (see `add`).
    fn sub(&mut self, who: &NodeId, amount: Amount) {
        let acc = self.accounts.entry(*who).or_default();
        acc.balance = Amount(acc.balance.0.saturating_sub(amount.0));
    }

    fn channel_mut(&mut self, id: &ChannelId) -> Result<&mut ChannelAccount, TxError> {
        self.channels.get_mut(id).ok_or(TxError::UnknownChannel)
    }

    fn execute(&mut self, tx: &Tx, height: Height) -> Result<Vec<ChainEvent>, TxError> {
        self.execute_kind(tx.sender, &tx.kind, height)
    }

    fn execute_kind(
        &mut self,
        sender: NodeId,
        kind: &TxKind,
        height: Height,
    ) -> Result<Vec<ChainEvent>, TxError> {
        match kind {
            TxKind::Batch { items } => {
                if items.is_empty() || items.len() > MAX_BATCH_ITEMS {
                    return Err(TxError::InvalidBatch(format!(
                        "{} operations: a batch holds 1 to {MAX_BATCH_ITEMS}",
                        items.len()
                    )));
                }
                if items.iter().any(|k| matches!(k, TxKind::Batch { .. })) {
                    return Err(TxError::InvalidBatch("a batch inside a batch".into()));
                }
                // Each operation on its own: one that fails changes nothing (every rule checks
                // before it changes anything) and is reported in its place.
                let mut events = Vec::new();
                for (index, item) in items.iter().enumerate() {
                    match self.execute_kind(sender, item, height) {
                        Ok(e) => events.extend(e),
                        Err(error) => events.push(ChainEvent::BatchItemFailed {
                            index: index as u32,
                            error,
                        }),
                    }
                }
                Ok(events)
            }
            TxKind::Transfer { to, amount } => {
                self.check_debit(&sender, *amount)?;
                if *to != sender {
                    self.check_credit(to, *amount)?;
                }
                self.sub(&sender, *amount);
                self.add(to, *amount);
                Ok(vec![ChainEvent::Transferred {
                    from: sender,
                    to: *to,
                    amount: *amount,
                }])
            }
            TxKind::Deposit { params, amount } => self.deposit(sender, params, *amount, height),
            TxKind::Reclaim { channel } => {
                let ch = self.channel_mut(channel)?;
                let party = ch.params.party_of(&sender).ok_or(TxError::NotAParty)?;
                let ChannelStatus::Funding { deadline } = ch.status else {
                    return Err(TxError::WrongPhase(ch.status.name().into()));
                };
                if height <= deadline {
                    return Err(TxError::FundingOpen { deadline });
                }
                // Both deposits are refunded (the other party's, if any, is claimable too).
                ch.claimable = ch.deposited;
                ch.deposited = [Amount(0); 2];
                ch.status = ChannelStatus::Expired;
                Ok(vec![ChainEvent::Reclaimed {
                    channel: *channel,
                    party,
                    amount: ch.claimable[party.index()],
                }])
            }
            TxKind::Register { state } => {
                let (id, signed) = self.verified(state)?;
                if signed.state().is_final {
                    return Err(TxError::FinalFlag);
                }
                let ch = self.channel_mut(&id)?;
                if ch.status != ChannelStatus::Open {
                    return Err(TxError::WrongPhase(ch.status.name().into()));
                }
                let deadline = height
                    .checked_add(ch.params.challenge_window_blocks)
                    .ok_or(TxError::Overflow)?;
                ch.status = ChannelStatus::Registered {
                    version: signed.version(),
                    deadline,
                    state: signed.state().clone(),
                };
                Ok(vec![ChainEvent::Registered {
                    channel: id,
                    version: signed.version(),
                    deadline,
                }])
            }
            TxKind::Refute { state } => {
                let (id, signed) = self.verified(state)?;
                let ch = self.channel_mut(&id)?;
                let ChannelStatus::Registered {
                    version, deadline, ..
                } = ch.status
                else {
                    return Err(TxError::WrongPhase(ch.status.name().into()));
                };
                if height > deadline {
                    return Err(TxError::Window { deadline });
                }
                if signed.version() <= version {
                    return Err(TxError::NotNewer {
                        registered: version,
                        got: signed.version(),
                    });
                }
                // A refute does not extend the window (specs/adjudicator.md, "Refute").
                ch.status = ChannelStatus::Registered {
                    version: signed.version(),
                    deadline,
                    state: signed.state().clone(),
                };
                Ok(vec![ChainEvent::Refuted {
                    channel: id,
                    version: signed.version(),
                    deadline,
                }])
            }
            TxKind::Conclude { channel } => {
                let ch = self.channel_mut(channel)?;
                let ChannelStatus::Registered {
                    version,
                    deadline,
                    ref state,
                } = ch.status
                else {
                    return Err(TxError::WrongPhase(ch.status.name().into()));
                };
                if height <= deadline {
                    return Err(TxError::Window { deadline });
                }
                let state = state.clone();
                ch.pay_out(*channel, version, &state).map(|e| vec![e])
            }
            TxKind::ConcludeFinal { state } => {
                let (id, signed) = self.verified(state)?;
                if !signed.state().is_final {
                    return Err(TxError::FinalFlag);
                }
                let ch = self.channel_mut(&id)?;
                match &ch.status {
                    ChannelStatus::Open => {}
                    ChannelStatus::Registered { version, .. } if signed.version() > *version => {}
                    ChannelStatus::Registered { version, .. } => {
                        return Err(TxError::NotNewer {
                            registered: *version,
                            got: signed.version(),
                        })
                    }
                    other => return Err(TxError::WrongPhase(other.name().into())),
                }
                ch.pay_out(id, signed.version(), signed.state())
                    .map(|e| vec![e])
            }
            TxKind::TopUp { channel, amount } => self.top_up(sender, channel, *amount),
            TxKind::WithdrawOpen { state } => {
                let (id, signed) = self.verified(state)?;
                if signed.state().is_final {
                    return Err(TxError::FinalFlag);
                }
                let ch = self.channels.get(&id).ok_or(TxError::UnknownChannel)?;
                if ch.status != ChannelStatus::Open {
                    return Err(TxError::WrongPhase(ch.status.name().into()));
                }
                let params = ch.params.clone();
                let paid = ch.funds.withdrawn;
                let owed = signed.state().funds.withdrawn;
                // `verified` refused a state below what the ledger paid.
                let due = [owed[0].0 - paid[0].0, owed[1].0 - paid[1].0];
                if due == [0, 0] {
                    return Err(TxError::NothingToWithdraw);
                }
                for party in [Party::A, Party::B] {
                    self.check_credit(params.node(party), Amount(due[party.index()]))?;
                }
                let mut events = Vec::new();
                for party in [Party::A, Party::B] {
                    let amount = Amount(due[party.index()]);
                    if amount == Amount(0) {
                        continue;
                    }
                    self.add(params.node(party), amount);
                    events.push(ChainEvent::WithdrawnOpen {
                        channel: id,
                        party,
                        amount,
                        total: owed[party.index()],
                    });
                }
                self.channel_mut(&id)?.funds.withdrawn = owed;
                Ok(events)
            }
            TxKind::Withdraw { channel, amount } => {
                self.check_credit(&sender, *amount)?;
                let ch = self.channel_mut(channel)?;
                let party = ch.params.party_of(&sender).ok_or(TxError::NotAParty)?;
                let claimable = ch.claimable[party.index()];
                ch.claimable[party.index()] =
                    claimable
                        .checked_sub(*amount)
                        .ok_or(TxError::InsufficientClaimable {
                            claimable,
                            needed: *amount,
                        })?;
                self.add(&sender, *amount);
                Ok(vec![ChainEvent::Withdrawn {
                    channel: *channel,
                    party,
                    amount: *amount,
                }])
            }
        }
    }

    fn deposit(
        &mut self,
        sender: NodeId,
        params: &ChannelParams,
        amount: Amount,
        height: Height,
    ) -> Result<Vec<ChainEvent>, TxError> {
        params
            .validate(self.genesis.min_challenge_window)
            .map_err(|e| TxError::InvalidParams(e.to_string()))?;
        let party = params.party_of(&sender).ok_or(TxError::NotAParty)?;
        let expected = match party {
            Party::A => params.deposit_a,
            Party::B => params.deposit_b,
        };
        if amount != expected || amount == Amount(0) {
            return Err(TxError::WrongDepositAmount { expected });
        }
        self.check_debit(&sender, amount)?;
        let id = params.channel_id();
        let new_deadline = height
            .checked_add(params.funding_window_blocks)
            .ok_or(TxError::Overflow)?;
        let (deposited, deadline) = match self.channels.get(&id) {
            None => ([Amount(0); 2], new_deadline),
            Some(ch) => match ch.status {
                ChannelStatus::Funding { deadline } => (ch.deposited, deadline),
                ref other => return Err(TxError::WrongPhase(other.name().into())),
            },
        };
        if height > deadline {
            return Err(TxError::FundingClosed { deadline });
        }
        if deposited[party.index()] > Amount(0) {
            return Err(TxError::AlreadyDeposited);
        }
        let ch = self.channels.entry(id).or_insert_with(|| ChannelAccount {
            params: params.clone(),
            deposited: [Amount(0); 2],
            status: ChannelStatus::Funding { deadline },
            claimable: [Amount(0); 2],
            funds: Funds::default(),
        });
        ch.deposited[party.index()] = amount;
        let funded = ch.deposited[0] == params.deposit_a && ch.deposited[1] == params.deposit_b;
        if funded {
            ch.status = ChannelStatus::Open;
        }
        self.sub(&sender, amount);
        let mut events = vec![ChainEvent::Deposited {
            channel: id,
            party,
            amount,
        }];
        if funded {
            events.push(ChainEvent::Funded { channel: id });
        }
        Ok(events)
    }

    /// Adds `amount` of the sender's tokens to its open channel
    /// (`specs/adjudicator.md`, "Top-up").
    fn top_up(
        &mut self,
        sender: NodeId,
        channel: &ChannelId,
        amount: Amount,
    ) -> Result<Vec<ChainEvent>, TxError> {
        let ch = self.channels.get(channel).ok_or(TxError::UnknownChannel)?;
        let party = ch.params.party_of(&sender).ok_or(TxError::NotAParty)?;
        if ch.status != ChannelStatus::Open {
            return Err(TxError::WrongPhase(ch.status.name().into()));
        }
        if amount == Amount(0) {
            return Err(TxError::WrongDepositAmount {
                expected: Amount(1),
            });
        }
        let total = ch.funds.topped_up[party.index()]
            .checked_add(amount)
            .ok_or(TxError::Overflow)?;
        // Every state's balances are 64-bit: what the channel holds must stay one.
        let mut after = ch.funds;
        after.topped_up[party.index()] = total;
        after
            .held(ch.params.total_deposit())
            .ok_or(TxError::Overflow)?;
        self.check_debit(&sender, amount)?;
        self.sub(&sender, amount);
        self.channel_mut(channel)?.funds = after;
        Ok(vec![ChainEvent::ToppedUp {
            channel: *channel,
            party,
            amount,
            total,
        }])
    }

    /// Checks a state's signatures against its channel's parties, and its money: its balances
    /// hold the deposits plus its top-ups less its withdrawals, it counts no top-up the ledger
    /// does not hold, and it is not older than a withdrawal the ledger paid.
    fn verified(&self, parts: &SignedStateParts) -> Result<(ChannelId, SignedState), TxError> {
        let id = parts.state.channel_id;
        let ch = self.channels.get(&id).ok_or(TxError::UnknownChannel)?;
        let signed = parts
            .clone()
            .verify(&ch.params, &id)
            .map_err(|e| TxError::BadStateSignature(e.to_string()))?;
        let s = signed.state();
        let held = s.held(&ch.params).ok_or(TxError::MoneyNotConserved)?;
        if s.balance_a.0.checked_add(s.balance_b.0) != Some(held.0) {
            return Err(TxError::MoneyNotConserved);
        }
        for i in 0..2 {
            if s.funds.topped_up[i] > ch.funds.topped_up[i] {
                return Err(TxError::TopUpNotMade);
            }
            if s.funds.withdrawn[i] < ch.funds.withdrawn[i] {
                return Err(TxError::WithdrawalNotInState);
            }
        }
        Ok((id, signed))
    }
}

impl ChannelStatus {
    pub fn name(&self) -> &'static str {
        match self {
            ChannelStatus::Funding { .. } => "funding",
            ChannelStatus::Open => "open",
            ChannelStatus::Registered { .. } => "registered",
            ChannelStatus::Concluded { .. } => "concluded",
            ChannelStatus::Expired => "expired",
        }
    }
}

impl ChannelAccount {
    /// Tokens this channel holds: deposits and top-ups not yet paid out (less withdrawals paid
    /// while open), and payouts not yet withdrawn.
    pub fn held(&self) -> u128 {
        let sum = |a: &[Amount; 2]| a.iter().map(|a| u128::from(a.0)).sum::<u128>();
        (sum(&self.deposited) + sum(&self.funds.topped_up) + sum(&self.claimable))
            .saturating_sub(sum(&self.funds.withdrawn))
    }

    /// What `state` pays each party: its balance, plus the party's top-ups the state does not
    /// count yet, plus its withdrawals the state makes and the ledger has not paid
    /// (`specs/adjudicator.md`, "Payout"). `verified` made sure neither difference is negative.
    pub fn payout(&self, state: &State) -> Result<[Amount; 2], TxError> {
        let mut payout = [state.balance_a, state.balance_b];
        for (i, p) in payout.iter_mut().enumerate() {
            let unheld = self.funds.topped_up[i].0 - state.funds.topped_up[i].0;
            let unpaid = state.funds.withdrawn[i].0 - self.funds.withdrawn[i].0;
            p.0 =
                p.0.checked_add(unheld)
                    .and_then(|v| v.checked_add(unpaid))
                    .ok_or(TxError::Overflow)?;
        }
        Ok(payout)
    }

    fn pay_out(
        &mut self,
        id: ChannelId,
        version: Version,
        state: &State,
    ) -> Result<ChainEvent, TxError> {
        let payout = self.payout(state)?;
        self.claimable = payout;
        self.deposited = [Amount(0); 2];
        self.funds = Funds::default();
        self.status = ChannelStatus::Concluded { version };
        Ok(ChainEvent::Concluded {
            channel: id,
            version,
            payout,
        })
    }
}
