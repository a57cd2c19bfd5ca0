//! The client: one account's view of the adjudicator on an EVM chain, as a [`Ledger`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, Bytes, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{BlockId, Filter, TransactionRequest};
use alloy::sol_types::{SolCall, SolEvent};
use async_trait::async_trait;

use gridchan_channel::{
    Amount, ChannelId, ChannelParams, Funds, IntervalIndex, NodeId, Signer, State, Version,
    WattHours,
};

use crate::block::{BlockEvents, Receipt, TxOutcome};
use crate::client::{Ledger, LedgerError};
use crate::rules::{Account, ChannelAccount, ChannelStatus, Height, TxError};
use crate::tx::{TxHash, TxKind};

use super::abi::{
    chain_event, params_from_created, sol_params, sol_signed, Erc20, GridchanAdjudicator,
};
use super::reverts::{decode_revert, refusal_of};
use super::{address_of, b256, wallet_provider};

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

impl EvmLedger {
    /// Connects to the chain at `config.rpc` as the account of `secret` (the node key);
    /// `blinding` is fresh randomness for the node key's signing context.
    pub fn connect(
        config: EvmConfig,
        secret: &[u8; 32],
        blinding: &[u8; 32],
    ) -> Result<EvmLedger, LedgerError> {
        let signer = Signer::new(secret, blinding).map_err(LedgerError::failed)?;
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
            .map_err(LedgerError::unavailable)?;
        if code.is_empty() {
            return Err(LedgerError::failed(format!(
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
                LedgerError::failed(format!(
                    "the contract at {:#x} is not a gridchan adjudicator",
                    self.config.adjudicator
                ))
            })?;
        if token != self.config.token {
            return Err(LedgerError::failed(format!(
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
            .map_err(LedgerError::unavailable)?;
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
                None => LedgerError::unavailable(e),
            }
        })?;
        C::abi_decode_returns(&out).map_err(LedgerError::failed)
    }

    /// [`EvmLedger::send`] on its own, taking the nonce for it.
    pub async fn send_call(&self, to: Address, input: Vec<u8>) -> Result<TxHash, LedgerError> {
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
                    None => LedgerError::unavailable(e),
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
                    .map_err(LedgerError::unavailable)?,
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
                            None => LedgerError::unavailable(e),
                        });
                    }
                }
            }
        }
        Err(LedgerError::Failed("nonce kept changing".into()))
    }

    fn adjudicator_call(&self, kind: &TxKind) -> Result<Vec<u8>, LedgerError> {
        use GridchanAdjudicator as G;
        Ok(match kind {
            TxKind::Transfer { to, amount } => {
                return Err(LedgerError::failed(format!(
                    "token transfers are the token's business on an EVM chain: send {amount} to {} with a wallet",
                    address_of(to)
                )))
            }
            TxKind::Deposit { params, amount } => G::depositCall {
                p: sol_params(params),
                keyA: Bytes::from(params.party_a.to_xy().to_vec()),
                keyB: Bytes::from(params.party_b.to_xy().to_vec()),
                tariff: Bytes::from(params.terms_words()),
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
            TxKind::TopUp { channel, amount } => G::topUpCall {
                id: b256(&channel.0),
                amount: amount.0,
            }
            .abi_encode(),
            TxKind::WithdrawOpen { state } => {
                let (s, a, b) = sol_signed(state);
                G::withdrawOpenCall { s, sigA: a, sigB: b }.abi_encode()
            }
            TxKind::Batch { items } => G::batchCall {
                calls: items
                    .iter()
                    .map(|k| self.adjudicator_call(k).map(Bytes::from))
                    .collect::<Result<Vec<_>, _>>()?,
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
        let logs = self
            .provider
            .get_logs(&filter)
            .await
            .map_err(LedgerError::unavailable)?;
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

#[async_trait]
impl Ledger for EvmLedger {
    fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The chain id (last 8 bytes) and the adjudicator's address (first 20): one deployment.
    async fn chain_id(&self) -> Result<[u8; 32], LedgerError> {
        if let Some(id) = *self.chain_id.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(id);
        }
        let chain = self
            .provider
            .get_chain_id()
            .await
            .map_err(LedgerError::unavailable)?;
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
            .map_err(LedgerError::unavailable)?;
        Ok(Account { balance, nonce })
    }

    async fn fees(&self) -> Result<Option<crate::Fees>, LedgerError> {
        let who = address_of(&self.node());
        let balance = self
            .provider
            .get_balance(who)
            .await
            .map_err(LedgerError::unavailable)?;
        let gas_price = self
            .provider
            .get_gas_price()
            .await
            .map_err(LedgerError::unavailable)?;
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
                    book: ch.book.0,
                    funds: Funds {
                        topped_up: [
                            Amount(ch.stateFunds.toppedUpA),
                            Amount(ch.stateFunds.toppedUpB),
                        ],
                        withdrawn: [
                            Amount(ch.stateFunds.withdrawnA),
                            Amount(ch.stateFunds.withdrawnB),
                        ],
                    },
                },
            },
            4 => ChannelStatus::Concluded {
                version: Version(ch.version),
            },
            5 => ChannelStatus::Expired,
            _ => {
                return Err(LedgerError::failed(
                    "the adjudicator reports an unknown phase",
                ))
            }
        };
        let params = self.params_of(id).await?.ok_or_else(|| {
            LedgerError::failed(format!("channel {}: no Created event found", id.short()))
        })?;
        Ok(Some(ChannelAccount {
            params,
            deposited: [Amount(ch.depositedA), Amount(ch.depositedB)],
            status,
            claimable: [Amount(ch.claimableA), Amount(ch.claimableB)],
            funds: Funds {
                topped_up: [Amount(ch.funds.toppedUpA), Amount(ch.funds.toppedUpB)],
                withdrawn: [Amount(ch.funds.withdrawnA), Amount(ch.funds.withdrawnB)],
            },
        }))
    }

    /// Never used by [`EvmLedger::submit`]: a transaction signed for the local ledger's format
    /// is carried out from its `kind`, by this account.
    async fn submit(&self, kind: TxKind) -> Result<TxHash, LedgerError> {
        let mut nonce = self.nonce.lock().await;
        let pulled = kind.tokens_pulled();
        if pulled > 0 {
            self.approve(&mut nonce, pulled).await?;
        }
        let input = self.adjudicator_call(&kind)?;
        self.send(&mut nonce, self.config.adjudicator, input).await
    }

    async fn receipt(&self, hash: &TxHash) -> Result<Option<Receipt>, LedgerError> {
        let h = B256::from(hash.0);
        let Some(r) = self
            .provider
            .get_transaction_receipt(h)
            .await
            .map_err(LedgerError::unavailable)?
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
        let logs = self
            .provider
            .get_logs(&filter)
            .await
            .map_err(LedgerError::unavailable)?;
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
