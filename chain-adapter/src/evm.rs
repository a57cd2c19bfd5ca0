//! The EVM implementation of [`Ledger`]: the adjudicator contract of
//! `chain-adapter/evm/contracts/GridchanAdjudicator.sol` on any EVM chain, over plain JSON-RPC
//! (HTTP).
//!
//! - **Accounts.** A node's EVM account is its own key: the address `ecrecover` yields for its
//!   signatures. It pays the gas of what it submits (a watchtower pays for its refutes), and its
//!   token balance is its [`Account::balance`].
//! - **Confirmations.** With a depth of `n`, a block counts once `n - 1` blocks are on top of it:
//!   [`Ledger::height`], receipts and followed events see only such blocks, so a reorganisation
//!   shallower than `n` is never seen. Choose challenge windows well above the depth.
//! - **Nonces.** Transactions of one account are numbered here, from the chain's count of the
//!   account's pending transactions, then cached; a nonce the chain refuses refreshes it once.
//! - **Refusals.** Every transaction is simulated (`eth_estimateGas`) before it is sent: a rule
//!   that refuses comes back as the same [`TxError`] the local ledger gives, and nothing is
//!   spent. A transaction that reverts in its block anyway (the chain moved in between) has the
//!   rule named in its receipt from a trace of where it ran.
//! - **Following.** Events come from the contract's logs, fetched by block range, so a follower
//!   resumes from any height after a lost connection.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, Bytes, FixedBytes, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{BlockId, Filter, Log, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolConstructor, SolEvent, SolEventInterface, SolInterface};
use async_trait::async_trait;

use gridchan_channel::{
    Amount, ChannelId, ChannelParams, IntervalIndex, MeterTolerance, NodeId, Party, Signature,
    SignedStateParts, Signer, State, Tariff, Version, WattHours,
};

use crate::block::{BlockEvents, Receipt, TxOutcome};
use crate::client::{Ledger, LedgerError};
use crate::rules::{Account, ChainEvent, ChannelAccount, ChannelStatus, Height, TxError};
use crate::tx::{Tx, TxHash, TxKind};

alloy::sol!(
    /// The adjudicator's interface, read from its compiled artifact: the Rust side cannot drift
    /// from the contract.
    #[derive(Debug, PartialEq, Eq)]
    GridchanAdjudicator,
    "evm/artifacts/GridchanAdjudicator.json"
);

alloy::sol! {
    /// The ERC-20 calls the adapter makes (and the dev chain's test token's `mint`).
    #[derive(Debug, PartialEq, Eq)]
    contract Erc20 {
        error InsufficientBalance(uint256 balance, uint256 needed);
        error InsufficientAllowance(uint256 allowance, uint256 needed);
        function balanceOf(address account) external view returns (uint256);
        function allowance(address owner, address spender) external view returns (uint256);
        function approve(address spender, uint256 amount) external returns (bool);
        function transfer(address to, uint256 amount) external returns (bool);
        function mint(address to, uint256 amount) external;
    }
}

/// The compiled contracts (`chain-adapter/evm/artifacts`, checked against the sources in CI).
pub const ADJUDICATOR_ARTIFACT: &str = include_str!("../evm/artifacts/GridchanAdjudicator.json");
pub const TEST_TOKEN_ARTIFACT: &str = include_str!("../evm/artifacts/TestToken.json");

/// Where the adjudicator is and how to read the chain.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EvmConfig {
    /// The node's JSON-RPC address, `http://HOST:PORT`.
    pub rpc: String,
    /// The adjudicator contract.
    pub adjudicator: Address,
    /// The ERC-20 settlement token the adjudicator holds.
    pub token: Address,
    /// Blocks that must be on top of a block before it counts (1: the newest block counts).
    pub confirmations: u64,
    /// The block the adjudicator was deployed in: channel records are looked up from there.
    #[serde(default)]
    pub deployed_at: u64,
}

/// The adjudicator on an EVM chain, seen from one account.
pub struct EvmLedger {
    config: EvmConfig,
    provider: DynProvider,
    signer: Signer,
    account: Address,
    /// The next nonce of this account, held for a whole submission: this account's
    /// transactions go out one at a time, in order.
    nonce: tokio::sync::Mutex<Option<u64>>,
    chain_id: Mutex<Option<[u8; 32]>>,
    /// Channel parameters never change: rebuilt from the `Created` event once.
    params: Mutex<HashMap<ChannelId, ChannelParams>>,
}

fn unavailable(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(e.to_string())
}

fn failed(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Failed(e.to_string())
}

/// The EVM address of a node.
pub fn address_of(node: &NodeId) -> Address {
    Address::from(node.address().0)
}

/// A provider at `rpc` that signs with the account of `secret`, and that account's address.
fn wallet_provider(rpc: &str, secret: &[u8; 32]) -> Result<(DynProvider, Address), LedgerError> {
    let wallet = PrivateKeySigner::from_bytes(&B256::from(*secret)).map_err(failed)?;
    let account = wallet.address();
    let url = rpc
        .parse()
        .map_err(|e| failed(format!("the EVM RPC address {rpc}: {e}")))?;
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(wallet))
        .connect_http(url)
        .erased();
    Ok((provider, account))
}

fn b256(bytes: &[u8; 32]) -> FixedBytes<32> {
    FixedBytes::from(*bytes)
}

impl EvmLedger {
    /// Connects to the chain at `config.rpc` as the account of `secret` (the node key);
    /// `blinding` is fresh randomness for the node key's signing context.
    pub fn connect(
        config: EvmConfig,
        secret: &[u8; 32],
        blinding: &[u8; 32],
    ) -> Result<EvmLedger, LedgerError> {
        let signer = Signer::new(secret, blinding).map_err(failed)?;
        let (provider, account) = wallet_provider(&config.rpc, secret)?;
        debug_assert_eq!(account, address_of(&signer.id()));
        Ok(EvmLedger {
            config,
            provider,
            signer,
            account,
            nonce: tokio::sync::Mutex::new(None),
            chain_id: Mutex::new(None),
            params: Mutex::new(HashMap::new()),
        })
    }

    /// Checks that the config names a real deployment: the adjudicator has code and settles in
    /// the configured token. `Unavailable` when the chain cannot be asked; `Failed` with what
    /// to fix when it answers otherwise.
    pub async fn verify(&self) -> Result<(), LedgerError> {
        let code = self
            .provider
            .get_code_at(self.config.adjudicator)
            .await
            .map_err(unavailable)?;
        if code.is_empty() {
            return Err(failed(format!(
                "there is no contract at {:#x}: check the adjudicator's address (gridchan evm deploy prints it)",
                self.config.adjudicator
            )));
        }
        let token = self
            .view_at(
                self.config.adjudicator,
                GridchanAdjudicator::tokenCall {},
                BlockId::latest(),
            )
            .await
            .map_err(|_| {
                failed(format!(
                    "the contract at {:#x} is not a gridchan adjudicator",
                    self.config.adjudicator
                ))
            })?;
        if token != self.config.token {
            return Err(failed(format!(
                "the adjudicator at {:#x} settles in token {token:#x}, not {:#x}: fix the token's address",
                self.config.adjudicator, self.config.token
            )));
        }
        Ok(())
    }

    pub fn config(&self) -> &EvmConfig {
        &self.config
    }

    /// This account's EVM address.
    pub fn account_address(&self) -> Address {
        self.account
    }

    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The newest block number, and the newest that counts (`confirmations - 1` below it).
    async fn confirmed(&self) -> Result<Height, LedgerError> {
        let latest = self
            .provider
            .get_block_number()
            .await
            .map_err(unavailable)?;
        Ok(latest.saturating_sub(self.config.confirmations.saturating_sub(1)))
    }

    /// Calls a view function as of the newest block that counts (see [`EvmConfig::confirmations`]),
    /// so what a client reads agrees with the events it has followed.
    async fn view<C: SolCall>(&self, to: Address, call: C) -> Result<C::Return, LedgerError> {
        let at = if self.config.confirmations > 1 {
            BlockId::number(self.confirmed().await?)
        } else {
            BlockId::latest()
        };
        self.view_at(to, call, at).await
    }

    async fn view_at<C: SolCall>(
        &self,
        to: Address,
        call: C,
        at: BlockId,
    ) -> Result<C::Return, LedgerError> {
        let tx = TransactionRequest::default()
            .with_to(to)
            .with_input(call.abi_encode());
        let out = self.provider.call(tx).block(at).await.map_err(|e| {
            match e
                .as_error_resp()
                .and_then(|r| r.as_revert_data())
                .and_then(|d| decode_revert(&d))
            {
                Some(refused) => LedgerError::Refused(refused),
                None => unavailable(e),
            }
        })?;
        C::abi_decode_returns(&out).map_err(failed)
    }

    /// [`EvmLedger::send`] on its own, taking the nonce for it.
    async fn send_one(&self, to: Address, input: Vec<u8>) -> Result<TxHash, LedgerError> {
        let mut nonce = self.nonce.lock().await;
        self.send(&mut nonce, to, input).await
    }

    /// Simulates, signs and sends one call from this account with the next nonce (`cached`,
    /// the locked [`EvmLedger::nonce`]).
    async fn send(
        &self,
        cached: &mut Option<u64>,
        to: Address,
        input: Vec<u8>,
    ) -> Result<TxHash, LedgerError> {
        let mut tx = TransactionRequest::default()
            .with_from(self.account)
            .with_to(to)
            .with_input(input);
        // The simulation names the rule that refuses, before anything is spent.
        let gas =
            self.provider
                .estimate_gas(tx.clone())
                .await
                .map_err(|e| match refusal_of(&e) {
                    Some(refused) => LedgerError::Refused(refused),
                    None => unavailable(e),
                })?;
        // Some headroom: the chain may have moved a little by the time it is included.
        tx = tx.with_gas_limit(gas + gas / 5);
        for _ in 0..2 {
            let nonce = match *cached {
                Some(n) => n,
                None => self
                    .provider
                    .get_transaction_count(self.account)
                    .pending()
                    .await
                    .map_err(unavailable)?,
            };
            match self
                .provider
                .send_transaction(tx.clone().with_nonce(nonce))
                .await
            {
                Ok(pending) => {
                    *cached = Some(nonce + 1);
                    return Ok(TxHash(pending.tx_hash().0));
                }
                Err(e) => {
                    *cached = None;
                    let text = e.to_string().to_lowercase();
                    if !text.contains("nonce") {
                        return Err(match refusal_of(&e) {
                            Some(refused) => LedgerError::Refused(refused),
                            None => unavailable(e),
                        });
                    }
                }
            }
        }
        Err(LedgerError::Failed("nonce kept changing".into()))
    }

    async fn adjudicator_call(&self, kind: &TxKind) -> Result<Vec<u8>, LedgerError> {
        use GridchanAdjudicator as G;
        Ok(match kind {
            TxKind::Transfer { to, amount } => {
                return Err(failed(format!(
                    "token transfers are the token's business on an EVM chain: send {amount} to {} with a wallet",
                    address_of(to)
                )))
            }
            TxKind::Deposit { params, amount } => G::depositCall {
                p: sol_params(params),
                keyA: Bytes::from(params.party_a.to_xy().to_vec()),
                keyB: Bytes::from(params.party_b.to_xy().to_vec()),
                tariff: Bytes::from(params.tariff.words()),
                amount: amount.0,
            }
            .abi_encode(),
            TxKind::Reclaim { channel } => G::reclaimCall { id: b256(&channel.0) }.abi_encode(),
            TxKind::Register { state } => {
                let (s, a, b) = sol_signed(state);
                G::registerCall { s, sigA: a, sigB: b }.abi_encode()
            }
            TxKind::Refute { state } => {
                let (s, a, b) = sol_signed(state);
                G::refuteCall { s, sigA: a, sigB: b }.abi_encode()
            }
            TxKind::Conclude { channel } => G::concludeCall { id: b256(&channel.0) }.abi_encode(),
            TxKind::ConcludeFinal { state } => {
                let (s, a, b) = sol_signed(state);
                G::concludeFinalCall { s, sigA: a, sigB: b }.abi_encode()
            }
            TxKind::Withdraw { channel, amount } => G::withdrawCall {
                id: b256(&channel.0),
                amount: amount.0,
            }
            .abi_encode(),
        })
    }

    /// Approves the adjudicator to take `amount` of this account's tokens, unless it may
    /// already.
    async fn approve(&self, nonce: &mut Option<u64>, amount: u64) -> Result<(), LedgerError> {
        // What this account's next transaction will see, not what is confirmed.
        let allowed = self
            .view_at(
                self.config.token,
                Erc20::allowanceCall {
                    owner: self.account,
                    spender: self.config.adjudicator,
                },
                BlockId::pending(),
            )
            .await?;
        if allowed >= U256::from(amount) {
            return Ok(());
        }
        // The deposit's simulation needs the allowance in place: wait for it.
        self.token_call(
            nonce,
            Erc20::approveCall {
                spender: self.config.adjudicator,
                amount: U256::from(amount),
            }
            .abi_encode(),
        )
        .await
    }

    /// Sends a call to the token and waits until it is included.
    async fn token_call(&self, nonce: &mut Option<u64>, input: Vec<u8>) -> Result<(), LedgerError> {
        let hash = self.send(nonce, self.config.token, input).await?;
        let receipt = self.wait_for(&hash, Duration::from_secs(120)).await?;
        receipt
            .outcome
            .result
            .map(|_| ())
            .map_err(LedgerError::Refused)
    }

    /// Mints `amount` of the dev chain's test token for `to` and waits for it (the test token
    /// lets anyone mint; a real token refuses, and so does this call).
    pub async fn mint_test_tokens(&self, to: Address, amount: u64) -> Result<(), LedgerError> {
        let mut nonce = self.nonce.lock().await;
        self.token_call(
            &mut nonce,
            Erc20::mintCall {
                to,
                amount: U256::from(amount),
            }
            .abi_encode(),
        )
        .await
    }

    /// The settlement tokens `who` holds (any address: an account, the adjudicator).
    pub async fn token_balance(&self, who: Address) -> Result<Amount, LedgerError> {
        let balance = self
            .view(self.config.token, Erc20::balanceOfCall { account: who })
            .await?;
        Ok(Amount(u64::try_from(balance).unwrap_or(u64::MAX)))
    }

    /// The tokens the adjudicator holds for its channels plus those `accounts` hold: the whole
    /// supply of a test token minted only to them.
    pub async fn supply_among(&self, accounts: &[NodeId]) -> Result<u128, LedgerError> {
        let mut sum = u128::from(self.token_balance(self.config.adjudicator).await?.0);
        for a in accounts {
            sum += u128::from(self.account(a).await?.balance.0);
        }
        Ok(sum)
    }

    /// The parameters of a channel, from its `Created` event (once; they never change).
    async fn params_of(&self, id: &ChannelId) -> Result<Option<ChannelParams>, LedgerError> {
        if let Some(p) = self
            .params
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return Ok(Some(p.clone()));
        }
        let filter = Filter::new()
            .address(self.config.adjudicator)
            .event_signature(GridchanAdjudicator::Created::SIGNATURE_HASH)
            .topic1(b256(&id.0))
            .from_block(self.config.deployed_at);
        let logs = self.provider.get_logs(&filter).await.map_err(unavailable)?;
        for log in logs {
            let Ok(created) = log.log_decode::<GridchanAdjudicator::Created>() else {
                continue;
            };
            let c = created.inner.data;
            match params_from_created(&c) {
                Ok(p) if p.channel_id() == *id => {
                    self.params
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(*id, p.clone());
                    return Ok(Some(p));
                }
                Ok(_) => tracing::warn!(
                    "channel {}: Created event with other parameters",
                    id.short()
                ),
                Err(e) => tracing::warn!("channel {}: {e}", id.short()),
            }
        }
        Ok(None)
    }

    /// Why a transaction included at `height` reverted: its revert data from a call trace
    /// (`debug_traceTransaction`, which runs it where it ran, after the transactions before it
    /// in its block). A node without the debug namespace gets it replayed on top of the block
    /// before, which misses what came earlier in the same block.
    async fn revert_reason(&self, hash: &B256, height: u64) -> TxError {
        let trace = self
            .provider
            .raw_request::<_, serde_json::Value>(
                "debug_traceTransaction".into(),
                (hash, serde_json::json!({ "tracer": "callTracer" })),
            )
            .await;
        if let Ok(trace) = trace {
            let output = trace["output"]
                .as_str()
                .and_then(|h| alloy::hex::decode(h).ok());
            if let Some(refused) = output.as_deref().and_then(decode_revert) {
                return refused;
            }
            if let Some(error) = trace["error"].as_str() {
                return TxError::Reverted(error.to_string());
            }
        }
        let Ok(Some(tx)) = self.provider.get_transaction_by_hash(*hash).await else {
            return TxError::Reverted("no reason given".into());
        };
        match self
            .provider
            .call(tx.into_request())
            .block(height.saturating_sub(1).into())
            .await
        {
            Err(e) => refusal_of(&e).unwrap_or_else(|| TxError::Reverted("no reason given".into())),
            Ok(_) => TxError::Reverted(
                "it would pass on the block before: an earlier transaction in its block, or gas"
                    .into(),
            ),
        }
    }
}

/// The rule a failed RPC call names, if it is one of the adjudicator's or the token's errors.
fn refusal_of<E>(e: &alloy::transports::RpcError<E>) -> Option<TxError> {
    e.as_error_resp()
        .and_then(|r| r.as_revert_data())
        .and_then(|d| decode_revert(&d))
}

/// The adjudicator's (or the token's) revert data as the local ledger's [`TxError`].
pub fn decode_revert(data: &[u8]) -> Option<TxError> {
    use GridchanAdjudicator::GridchanAdjudicatorErrors as E;
    if let Ok(e) = E::abi_decode(data) {
        return Some(match e {
            E::InsufficientBalance(e) => TxError::InsufficientBalance {
                balance: Amount(u64::try_from(e.balance).unwrap_or(u64::MAX)),
                needed: Amount(u64::try_from(e.needed).unwrap_or(u64::MAX)),
            },
            E::UnknownChannel(_) => TxError::UnknownChannel,
            E::NotAParty(_) => TxError::NotAParty,
            E::InvalidParams(e) => TxError::InvalidParams(e.reason),
            E::WrongDepositAmount(e) => TxError::WrongDepositAmount {
                expected: Amount(e.expected),
            },
            E::AlreadyDeposited(_) => TxError::AlreadyDeposited,
            E::WrongPhase(e) => TxError::WrongPhase(phase_name(e.phase).into()),
            E::FundingClosed(e) => TxError::FundingClosed {
                deadline: e.deadline,
            },
            E::FundingOpen(e) => TxError::FundingOpen {
                deadline: e.deadline,
            },
            E::BadStateSignature(e) => TxError::BadStateSignature(e.reason),
            E::MoneyNotConserved(_) => TxError::MoneyNotConserved,
            E::NotNewer(e) => TxError::NotNewer {
                registered: Version(e.registered),
                got: Version(e.got),
            },
            E::Window(e) => TxError::Window {
                deadline: e.deadline,
            },
            E::FinalFlag(_) => TxError::FinalFlag,
            E::InsufficientClaimable(e) => TxError::InsufficientClaimable {
                claimable: Amount(e.claimable),
                needed: Amount(e.needed),
            },
            E::InsufficientAllowance(e) => TxError::TokenRefused(format!(
                "the adjudicator may take {} of the {} needed: approve it first",
                e.allowance, e.needed
            )),
            E::TokenTransferFailed(_) => {
                TxError::TokenRefused("it did not move exactly the amount asked".into())
            }
        });
    }
    use Erc20::Erc20Errors as T;
    match T::abi_decode(data).ok()? {
        T::InsufficientBalance(e) => Some(TxError::InsufficientBalance {
            balance: Amount(u64::try_from(e.balance).unwrap_or(u64::MAX)),
            needed: Amount(u64::try_from(e.needed).unwrap_or(u64::MAX)),
        }),
        T::InsufficientAllowance(e) => Some(TxError::TokenRefused(format!(
            "the adjudicator may take {} of {}",
            e.allowance, e.needed
        ))),
    }
}

/// The adjudicator's `Phase`, by number (the ABI carries enums as `uint8`).
fn phase_name(p: u8) -> &'static str {
    match p {
        1 => "funding",
        2 => "open",
        3 => "registered",
        4 => "concluded",
        5 => "expired",
        _ => "unknown",
    }
}

/// The contract's form of channel parameters.
pub fn sol_params(p: &ChannelParams) -> GridchanAdjudicator::Params {
    GridchanAdjudicator::Params {
        partyA: address_of(&p.party_a),
        partyB: address_of(&p.party_b),
        nonce: b256(&p.nonce),
        depositA: p.deposit_a.0,
        depositB: p.deposit_b.0,
        challengeWindowBlocks: p.challenge_window_blocks,
        fundingWindowBlocks: p.funding_window_blocks,
        intervalSeconds: u64::from(p.interval_seconds),
        toleranceAbsoluteWh: u64::from(p.tolerance.absolute_wh),
        tolerancePermille: u64::from(p.tolerance.permille),
        openedAt: p.opened_at.0,
        tariffDigest: b256(&p.tariff.digest()),
    }
}

/// The contract's form of a state.
pub fn sol_state(s: &State) -> GridchanAdjudicator::State {
    GridchanAdjudicator::State {
        channelId: b256(&s.channel_id.0),
        version: s.version.0,
        balanceA: s.balance_a.0,
        balanceB: s.balance_b.0,
        energyAToB: s.energy_a_to_b.0,
        energyBToA: s.energy_b_to_a.0,
        lastInterval: s.last_interval.0,
        isFinal: s.is_final,
    }
}

/// The contract's form of a 65-byte signature.
pub fn sol_sig(sig: &Signature) -> GridchanAdjudicator::Sig {
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    r.copy_from_slice(&sig.0[..32]);
    s.copy_from_slice(&sig.0[32..64]);
    GridchanAdjudicator::Sig {
        r: b256(&r),
        s: b256(&s),
        v: sig.0[64],
    }
}

fn sol_signed(
    s: &SignedStateParts,
) -> (
    GridchanAdjudicator::State,
    GridchanAdjudicator::Sig,
    GridchanAdjudicator::Sig,
) {
    (sol_state(&s.state), sol_sig(&s.sig_a), sol_sig(&s.sig_b))
}

fn params_from_created(c: &GridchanAdjudicator::Created) -> Result<ChannelParams, String> {
    let key = |b: &Bytes| -> Result<NodeId, String> {
        let xy: [u8; 64] = b[..]
            .try_into()
            .map_err(|_| "a party key is not 64 bytes".to_string())?;
        NodeId::from_xy(&xy).map_err(|e| e.to_string())
    };
    let p = &c.params;
    Ok(ChannelParams {
        party_a: key(&c.keyA)?,
        party_b: key(&c.keyB)?,
        nonce: p.nonce.0,
        deposit_a: Amount(p.depositA),
        deposit_b: Amount(p.depositB),
        challenge_window_blocks: p.challengeWindowBlocks,
        funding_window_blocks: p.fundingWindowBlocks,
        interval_seconds: u32::try_from(p.intervalSeconds).map_err(|e| e.to_string())?,
        tolerance: MeterTolerance {
            absolute_wh: u32::try_from(p.toleranceAbsoluteWh).map_err(|e| e.to_string())?,
            permille: u16::try_from(p.tolerancePermille).map_err(|e| e.to_string())?,
        },
        opened_at: IntervalIndex(p.openedAt),
        tariff: Tariff::from_words(&c.tariff)?,
    })
}

fn party(index: u8) -> Party {
    if index == 0 {
        Party::A
    } else {
        Party::B
    }
}

/// The ledger event a log of the adjudicator stands for.
fn chain_event(log: &Log) -> Option<ChainEvent> {
    use GridchanAdjudicator::GridchanAdjudicatorEvents as Ev;
    let id = |b: &FixedBytes<32>| ChannelId(b.0);
    Some(match Ev::decode_log(&log.inner).ok()?.data {
        Ev::Created(_) => return None,
        Ev::Deposited(e) => ChainEvent::Deposited {
            channel: id(&e.channelId),
            party: party(e.party),
            amount: Amount(e.amount),
        },
        Ev::Funded(e) => ChainEvent::Funded {
            channel: id(&e.channelId),
        },
        Ev::Reclaimed(e) => ChainEvent::Reclaimed {
            channel: id(&e.channelId),
            party: party(e.party),
            amount: Amount(e.amount),
        },
        Ev::Registered(e) => ChainEvent::Registered {
            channel: id(&e.channelId),
            version: Version(e.version),
            deadline: e.deadline,
        },
        Ev::Refuted(e) => ChainEvent::Refuted {
            channel: id(&e.channelId),
            version: Version(e.version),
            deadline: e.deadline,
        },
        Ev::Concluded(e) => ChainEvent::Concluded {
            channel: id(&e.channelId),
            version: Version(e.version),
            payout: [Amount(e.payoutA), Amount(e.payoutB)],
        },
        Ev::Withdrawn(e) => ChainEvent::Withdrawn {
            channel: id(&e.channelId),
            party: party(e.party),
            amount: Amount(e.amount),
        },
    })
}

#[async_trait]
impl Ledger for EvmLedger {
    fn signer(&self) -> &Signer {
        &self.signer
    }

    fn nonce_cache(&self) -> &tokio::sync::Mutex<Option<u64>> {
        &self.nonce
    }

    /// The chain id (last 8 bytes) and the adjudicator's address (first 20): one deployment.
    async fn chain_id(&self) -> Result<[u8; 32], LedgerError> {
        if let Some(id) = *self.chain_id.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(id);
        }
        let chain = self.provider.get_chain_id().await.map_err(unavailable)?;
        let mut id = [0u8; 32];
        id[..20].copy_from_slice(self.config.adjudicator.as_slice());
        id[24..].copy_from_slice(&chain.to_be_bytes());
        *self.chain_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(id);
        Ok(id)
    }

    async fn height(&self) -> Result<Height, LedgerError> {
        self.confirmed().await
    }

    async fn account(&self, node: &NodeId) -> Result<Account, LedgerError> {
        let who = address_of(node);
        let balance = self.token_balance(who).await?;
        let nonce = self
            .provider
            .get_transaction_count(who)
            .await
            .map_err(unavailable)?;
        Ok(Account { balance, nonce })
    }

    async fn fees(&self) -> Result<Option<crate::Fees>, LedgerError> {
        let who = address_of(&self.node());
        let balance = self.provider.get_balance(who).await.map_err(unavailable)?;
        let gas_price = self.provider.get_gas_price().await.map_err(unavailable)?;
        Ok(Some(crate::Fees {
            balance: u128::try_from(balance).unwrap_or(u128::MAX),
            gas_price,
        }))
    }

    async fn channel(&self, id: &ChannelId) -> Result<Option<ChannelAccount>, LedgerError> {
        let ch = self
            .view(
                self.config.adjudicator,
                GridchanAdjudicator::channelCall { id: b256(&id.0) },
            )
            .await?;
        let status = match ch.phase {
            0 => return Ok(None),
            1 => ChannelStatus::Funding {
                deadline: ch.deadline,
            },
            2 => ChannelStatus::Open,
            3 => ChannelStatus::Registered {
                version: Version(ch.version),
                deadline: ch.deadline,
                state: State {
                    channel_id: *id,
                    version: Version(ch.version),
                    balance_a: Amount(ch.balanceA),
                    balance_b: Amount(ch.balanceB),
                    energy_a_to_b: WattHours(ch.energyAToB),
                    energy_b_to_a: WattHours(ch.energyBToA),
                    last_interval: IntervalIndex(ch.lastInterval),
                    is_final: false,
                },
            },
            4 => ChannelStatus::Concluded {
                version: Version(ch.version),
            },
            5 => ChannelStatus::Expired,
            _ => return Err(failed("the adjudicator reports an unknown phase")),
        };
        let params = self
            .params_of(id)
            .await?
            .ok_or_else(|| failed(format!("channel {}: no Created event found", id.short())))?;
        Ok(Some(ChannelAccount {
            params,
            deposited: [Amount(ch.depositedA), Amount(ch.depositedB)],
            status,
            claimable: [Amount(ch.claimableA), Amount(ch.claimableB)],
        }))
    }

    /// Never used by [`EvmLedger::submit`]: a transaction signed for the local ledger's format
    /// is carried out from its `kind`, by this account.
    async fn submit_signed(&self, tx: Tx) -> Result<TxHash, LedgerError> {
        if tx.sender != self.signer.id() {
            return Err(failed(
                "an EVM ledger client submits only its own transactions",
            ));
        }
        self.submit(tx.kind).await
    }

    async fn submit(&self, kind: TxKind) -> Result<TxHash, LedgerError> {
        let mut nonce = self.nonce.lock().await;
        if let TxKind::Deposit { amount, .. } = &kind {
            self.approve(&mut nonce, amount.0).await?;
        }
        let input = self.adjudicator_call(&kind).await?;
        self.send(&mut nonce, self.config.adjudicator, input).await
    }

    async fn receipt(&self, hash: &TxHash) -> Result<Option<Receipt>, LedgerError> {
        let h = B256::from(hash.0);
        let Some(r) = self
            .provider
            .get_transaction_receipt(h)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let Some(height) = r.block_number else {
            return Ok(None);
        };
        if height > self.confirmed().await? {
            return Ok(None);
        }
        let result = if r.status() {
            Ok(r.inner
                .logs()
                .iter()
                .filter(|l| l.address() == self.config.adjudicator)
                .filter_map(chain_event)
                .collect())
        } else {
            Err(self.revert_reason(&h, height).await)
        };
        Ok(Some(Receipt {
            height,
            outcome: TxOutcome {
                hash: *hash,
                result,
            },
        }))
    }

    /// The adjudicator's events from `from` on, grouped by block and transaction. Only blocks
    /// with events are returned, and the last block of the range (so a follower moves on).
    async fn blocks(&self, from: Height, max: usize) -> Result<Vec<BlockEvents>, LedgerError> {
        let confirmed = self.confirmed().await?;
        if from > confirmed || max == 0 {
            return Ok(Vec::new());
        }
        let to = confirmed.min(from + max as u64 - 1);
        let filter = Filter::new()
            .address(self.config.adjudicator)
            .from_block(from)
            .to_block(to);
        let logs = self.provider.get_logs(&filter).await.map_err(unavailable)?;
        let mut blocks: BTreeMap<Height, BlockEvents> = BTreeMap::new();
        for log in &logs {
            let (Some(height), Some(tx)) = (log.block_number, log.transaction_hash) else {
                continue;
            };
            let block = blocks.entry(height).or_insert_with(|| BlockEvents {
                height,
                hash: log.block_hash.map(|h| h.0).unwrap_or_default(),
                timestamp_ms: log.block_timestamp.unwrap_or(0) * 1000,
                outcomes: Vec::new(),
            });
            let Some(event) = chain_event(log) else {
                continue;
            };
            match block.outcomes.last_mut() {
                Some(TxOutcome {
                    hash,
                    result: Ok(events),
                }) if hash.0 == tx.0 => events.push(event),
                _ => block.outcomes.push(TxOutcome {
                    hash: TxHash(tx.0),
                    result: Ok(vec![event]),
                }),
            }
        }
        blocks.entry(to).or_insert_with(|| BlockEvents {
            height: to,
            hash: [0; 32],
            timestamp_ms: 0,
            outcomes: Vec::new(),
        });
        Ok(blocks.into_values().collect())
    }

    async fn wait_above(&self, height: Height, timeout: Duration) -> Result<Height, LedgerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let now = self.confirmed().await?;
            if now > height || tokio::time::Instant::now() >= deadline {
                return Ok(now);
            }
            tokio::time::sleep(POLL.min(deadline - tokio::time::Instant::now())).await;
        }
    }
}

/// How often the chain is asked for a new block while waiting for one.
const POLL: Duration = Duration::from_millis(100);

/// The addresses `deploy` produced.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Deployed {
    pub adjudicator: Address,
    pub token: Address,
    /// The block the adjudicator was deployed in.
    pub block: u64,
    pub chain_id: u64,
    /// Gas the deployment(s) used.
    pub gas_used: u64,
    /// Of which the adjudicator's.
    #[serde(skip)]
    pub adjudicator_gas: u64,
}

impl Deployed {
    /// A client configuration for this deployment on the node at `rpc`.
    pub fn config(&self, rpc: &str, confirmations: u64) -> EvmConfig {
        EvmConfig {
            rpc: rpc.to_string(),
            adjudicator: self.adjudicator,
            token: self.token,
            confirmations,
            deployed_at: self.block,
        }
    }
}

fn bytecode(artifact: &str) -> Result<Vec<u8>, LedgerError> {
    let v: serde_json::Value = serde_json::from_str(artifact).map_err(failed)?;
    let hex = v["bytecode"]
        .as_str()
        .ok_or_else(|| failed("artifact without bytecode"))?;
    alloy::hex::decode(hex).map_err(failed)
}

/// Chain ids of dev chains (anvil and hardhat, ganache), the only ones the test token, which
/// lets anyone mint, is deployed on.
pub const DEV_CHAINS: [u64; 2] = [31337, 1337];

/// Deploys the adjudicator for `token` (and, when `token` is `None` on a dev chain, the test
/// token first) from the account of `secret`, waiting for each deployment to be included.
pub async fn deploy(
    rpc: &str,
    secret: &[u8; 32],
    token: Option<Address>,
    min_challenge_window: u64,
) -> Result<Deployed, LedgerError> {
    let (provider, _) = wallet_provider(rpc, secret)?;
    let mut gas_used = 0;
    let create = |code: Vec<u8>| {
        let provider = provider.clone();
        async move {
            let tx = TransactionRequest::default().with_deploy_code(code);
            let receipt = provider
                .send_transaction(tx)
                .await
                .map_err(unavailable)?
                .with_timeout(Some(Duration::from_secs(120)))
                .get_receipt()
                .await
                .map_err(unavailable)?;
            if !receipt.status() {
                return Err(failed("the deployment reverted"));
            }
            let address = receipt
                .contract_address
                .ok_or_else(|| failed("no contract address in the deployment's receipt"))?;
            Ok::<_, LedgerError>((address, receipt.block_number.unwrap_or(0), receipt.gas_used))
        }
    };
    let chain_id = provider.get_chain_id().await.map_err(unavailable)?;
    let token = match token {
        Some(t) => {
            if provider.get_code_at(t).await.map_err(unavailable)?.is_empty() {
                return Err(failed(format!(
                    "there is no contract at {t:#x}: check the settlement token's address"
                )));
            }
            t
        }
        None if !DEV_CHAINS.contains(&chain_id) => {
            return Err(failed(format!(
                "chain {chain_id} is not a dev chain, and anyone may mint the test token: pass the settlement token's address with --token"
            )))
        }
        None => {
            let (t, _, gas) = create(bytecode(TEST_TOKEN_ARTIFACT)?).await?;
            gas_used += gas;
            t
        }
    };
    let mut code = bytecode(ADJUDICATOR_ARTIFACT)?;
    code.extend(
        GridchanAdjudicator::constructorCall {
            token_: token,
            minChallengeWindow_: min_challenge_window,
        }
        .abi_encode(),
    );
    let (adjudicator, block, adjudicator_gas) = create(code).await?;
    gas_used += adjudicator_gas;
    Ok(Deployed {
        adjudicator,
        token,
        block,
        chain_id,
        gas_used,
        adjudicator_gas,
    })
}

/// A local anvil node (the test chain `chain-adapter/evm/package.json` pins), for tests and
/// demos on a dev chain.
pub mod anvil {
    use std::io::{BufRead, BufReader};
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use alloy::primitives::{Address, U256};
    use alloy::providers::{DynProvider, Provider, ProviderBuilder};
    use gridchan_channel::{NodeId, Signer};

    use super::{address_of, failed, EvmLedger, LedgerError};

    /// What [`Anvil::fund_gas`] gives an account: 1,000 ether.
    pub const GAS_WEI: u128 = 1_000_000_000_000_000_000_000;

    /// A running anvil, killed when dropped.
    pub struct Anvil {
        child: Child,
        /// `http://127.0.0.1:PORT`.
        pub rpc: String,
        /// For the dev chain's own methods (`anvil_*`).
        provider: DynProvider,
    }

    /// Where anvil is: `$GRIDCHAN_ANVIL`, the binary of the pinned npm package (after
    /// `npm ci --prefix chain-adapter/evm`), or `anvil` on the `PATH`.
    pub fn binary() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("GRIDCHAN_ANVIL") {
            return Some(PathBuf::from(p));
        }
        let platform = match (std::env::consts::OS, std::env::consts::ARCH) {
            ("linux", "x86_64") => "linux-amd64",
            ("linux", "aarch64") => "linux-arm64",
            ("macos", "x86_64") => "darwin-amd64",
            ("macos", "aarch64") => "darwin-arm64",
            _ => "unsupported",
        };
        let pinned = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("evm/node_modules/@foundry-rs")
            .join(format!("anvil-{platform}"))
            .join("bin/anvil");
        if pinned.exists() {
            return Some(pinned);
        }
        let on_path = std::env::var_os("PATH")?;
        std::env::split_paths(&on_path)
            .map(|d| d.join("anvil"))
            .find(|p| p.exists())
    }

    impl Anvil {
        /// Starts anvil on 127.0.0.1 and a free port: instant mining, or a block every
        /// `block_time` seconds.
        pub fn start(block_time: Option<u64>) -> Result<Anvil, String> {
            match block_time {
                Some(t) => Anvil::start_with(&["--block-time", &t.to_string()]),
                None => Anvil::start_with(&[]),
            }
        }

        /// Starts anvil on 127.0.0.1 and a free port with more of its options (`--chain-id
        /// 5`, say).
        pub fn start_with(args: &[&str]) -> Result<Anvil, String> {
            let bin = binary().ok_or(
                "anvil not found: run `npm ci --prefix chain-adapter/evm` (or set GRIDCHAN_ANVIL)",
            )?;
            let mut cmd = Command::new(&bin);
            cmd.args(["--host", "127.0.0.1", "--port", "0", "--accounts", "1"])
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => return Err(format!("cannot start {}: {e}", bin.display())),
            };
            let stdout = child.stdout.take().ok_or("anvil has no stdout")?;
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = line.trim().strip_prefix("Listening on ") {
                        let _ = tx.send(addr.trim().to_string());
                    }
                }
            });
            let started = Instant::now();
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(addr) => {
                    let rpc = format!("http://{addr}");
                    let url = rpc.parse().map_err(|e| format!("{rpc}: {e}"))?;
                    Ok(Anvil {
                        child,
                        provider: ProviderBuilder::new().connect_http(url).erased(),
                        rpc,
                    })
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    Err(format!(
                        "anvil did not say where it listens within {:?}",
                        started.elapsed()
                    ))
                }
            }
        }

        /// Sets `who`'s native balance to [`GAS_WEI`] for gas (a dev chain's `anvil_setBalance`).
        pub async fn fund_gas(&self, who: Address) -> Result<(), String> {
            self.dev(
                "anvil_setBalance",
                serde_json::json!([who, U256::from(GAS_WEI)]),
            )
            .await
        }

        /// Turns mining each transaction at once on or off (`evm_setAutomine`): off, sent
        /// transactions wait until [`Anvil::mine`] (or the block time) puts them in a block.
        pub async fn set_automine(&self, on: bool) -> Result<(), String> {
            self.dev("evm_setAutomine", serde_json::json!([on])).await
        }

        /// Mines `n` blocks at once (`anvil_mine`), the first with any waiting transactions.
        pub async fn mine(&self, n: u64) -> Result<(), String> {
            self.dev("anvil_mine", serde_json::json!([n])).await
        }

        /// Replaces the newest `depth` blocks with as many empty ones (`anvil_reorg`): what
        /// they held is gone.
        pub async fn reorg(&self, depth: u64) -> Result<(), String> {
            self.dev("anvil_reorg", serde_json::json!([depth, []]))
                .await
        }

        /// The adjudicator and the test token deployed from `deployer` (its signing context
        /// blinded with `blinding`), for a dev run: the deployer and every one of `gas` get gas
        /// first, then each of `minted` gets `tokens` test tokens.
        pub async fn deploy_with_test_tokens(
            &self,
            deployer: &[u8; 32],
            blinding: &[u8; 32],
            gas: &[NodeId],
            minted: &[NodeId],
            tokens: u64,
        ) -> Result<super::Deployed, LedgerError> {
            let deployer_id = Signer::new(deployer, blinding).map_err(failed)?.id();
            for n in gas.iter().chain([&deployer_id]) {
                self.fund_gas(address_of(n)).await.map_err(failed)?;
            }
            let d = super::deploy(&self.rpc, deployer, None, 2).await?;
            let minter = EvmLedger::connect(d.config(&self.rpc, 1), deployer, blinding)?;
            for n in minted {
                minter.mint_test_tokens(address_of(n), tokens).await?;
            }
            Ok(d)
        }

        /// Calls one of the dev chain's own methods.
        async fn dev(&self, method: &'static str, params: serde_json::Value) -> Result<(), String> {
            self.provider
                .raw_request::<_, serde_json::Value>(method.into(), params)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }

    impl Drop for Anvil {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `hash` is included successfully.
async fn included(l: &EvmLedger, hash: TxHash) -> Result<TxHash, LedgerError> {
    let r = l.wait_for(&hash, Duration::from_secs(60)).await?;
    r.outcome.result.map_err(LedgerError::Refused)?;
    Ok(hash)
}

/// Gas each adjudicator operation uses, measured on a fresh anvil: the deployments, then a
/// channel through deposit, register, refute, conclude and withdraw, one closed by a final
/// state, and one reclaimed.
pub async fn gas_report(chain: &anvil::Anvil) -> Result<Vec<(&'static str, u64)>, LedgerError> {
    use gridchan_channel::{PricePerKwh, SignedStateParts};
    let key = |n: u8| {
        let mut s = [0u8; 32];
        s[0] = 0x31;
        s[31] = n;
        s
    };
    let id = |n: u8| {
        Signer::new(&key(n), &key(n))
            .map(|s| s.id())
            .map_err(failed)
    };
    let (id_a, id_b) = (id(1)?, id(2)?);
    let mut out = Vec::new();
    // Key 3 deploys, and mints the parties their tokens.
    let deployed = chain
        .deploy_with_test_tokens(
            &key(3),
            &key(6),
            &[id_a, id_b],
            &[id_a, id_b],
            1_000_000_000,
        )
        .await?;
    out.push((
        "deploy the test token (dev chains only)",
        deployed.gas_used - deployed.adjudicator_gas,
    ));
    out.push(("deploy the adjudicator", deployed.adjudicator_gas));
    let config = deployed.config(&chain.rpc, 1);
    let a = EvmLedger::connect(config.clone(), &key(1), &key(4))?;
    let b = EvmLedger::connect(config, &key(2), &key(5))?;
    let gas_of = |hash: TxHash| {
        let provider = a.provider.clone();
        async move {
            provider
                .get_transaction_receipt(B256::from(hash.0))
                .await
                .map_err(unavailable)?
                .map(|r| r.gas_used)
                .ok_or_else(|| failed("no receipt"))
        }
    };
    let params = |nonce: u8, tariff: Tariff| ChannelParams {
        party_a: a.signer.id(),
        party_b: b.signer.id(),
        nonce: [nonce; 32],
        deposit_a: Amount(100_000_000),
        deposit_b: Amount(100_000_000),
        challenge_window_blocks: 2,
        funding_window_blocks: 2,
        interval_seconds: 900,
        tolerance: MeterTolerance {
            absolute_wh: 10,
            permille: 20,
        },
        opened_at: IntervalIndex(1),
        tariff,
    };
    let signed = |p: &ChannelParams, version: u64, is_final: bool| {
        let state = State {
            channel_id: p.channel_id(),
            version: Version(version),
            balance_a: Amount(100_000_000 - version),
            balance_b: Amount(100_000_000 + version),
            energy_a_to_b: WattHours(0),
            energy_b_to_a: WattHours(version),
            last_interval: IntervalIndex(1 + version),
            is_final,
        };
        let d = state.digest();
        SignedStateParts {
            sig_a: a.signer.sign(&d),
            sig_b: b.signer.sign(&d),
            state,
        }
    };
    let flat = params(1, Tariff::Flat(PricePerKwh(150_000)));
    // The approval is its own transaction; measure it apart from the deposit.
    let approve = a
        .send_one(
            deployed.token,
            Erc20::approveCall {
                spender: deployed.adjudicator,
                amount: U256::from(flat.deposit_a.0),
            }
            .abi_encode(),
        )
        .await?;
    out.push((
        "approve the adjudicator (ERC-20, before each deposit)",
        gas_of(included(&a, approve).await?).await?,
    ));
    let h = included(&a, a.deposit(&flat, flat.deposit_a).await?).await?;
    out.push((
        "deposit, first (creates the channel, flat tariff)",
        gas_of(h).await?,
    ));
    let h = included(&b, b.deposit(&flat, flat.deposit_b).await?).await?;
    out.push(("deposit, second (funds the channel)", gas_of(h).await?));
    let h = included(
        &a,
        a.submit(TxKind::Register {
            state: Box::new(signed(&flat, 3, false)),
        })
        .await?,
    )
    .await?;
    out.push(("register", gas_of(h).await?));
    let h = included(
        &b,
        b.submit(TxKind::Refute {
            state: Box::new(signed(&flat, 7, false)),
        })
        .await?,
    )
    .await?;
    out.push(("refute", gas_of(h).await?));
    chain.mine(3).await.map_err(unavailable)?;
    let h = included(&b, b.conclude(flat.channel_id()).await?).await?;
    out.push(("conclude (after the window)", gas_of(h).await?));
    let h = included(
        &b,
        b.withdraw(flat.channel_id(), Amount(100_000_007)).await?,
    )
    .await?;
    out.push(("withdraw", gas_of(h).await?));
    let tou = params(
        2,
        "tou +01:00 0-7=0.10,7-17=0.18,17-21=0.28,21-24=0.10"
            .parse()
            .map_err(failed)?,
    );
    let h = included(&a, a.deposit(&tou, tou.deposit_a).await?).await?;
    out.push((
        "deposit, first (creates the channel, time-of-use tariff)",
        gas_of(h).await?,
    ));
    included(&b, b.deposit(&tou, tou.deposit_b).await?).await?;
    let h = included(
        &a,
        a.submit(TxKind::ConcludeFinal {
            state: Box::new(signed(&tou, 9, true)),
        })
        .await?,
    )
    .await?;
    out.push(("conclude-final (cooperative close)", gas_of(h).await?));
    let lone = params(3, Tariff::Flat(PricePerKwh(150_000)));
    included(&a, a.deposit(&lone, lone.deposit_a).await?).await?;
    chain.mine(3).await.map_err(unavailable)?;
    let h = included(&a, a.reclaim(lone.channel_id()).await?).await?;
    out.push(("reclaim (funding window passed)", gas_of(h).await?));
    Ok(out)
}
