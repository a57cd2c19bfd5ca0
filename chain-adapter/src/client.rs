//! The interface gateways and watchtowers use to talk to a ledger, and its two
//! implementations: in-process ([`LocalClient`]) and over QUIC ([`RemoteClient`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gridchan_channel::{Amount, ChannelId, ChannelParams, NodeId, SignedState, Signer};
use gridchan_transport::{PeerAddr, RpcClient};

use crate::block::{BlockEvents, Receipt};
use crate::local::{LocalError, LocalLedger};
use crate::rpc::{self, Request, Response, MAX_RPC_FRAME};
use crate::rules::{Account, ChannelAccount, Height, TxError};
use crate::tx::{Tx, TxHash, TxKind};

/// Why a ledger call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The ledger refused the transaction; the reason says which rule.
    #[error("the ledger refused the transaction: {0}")]
    Refused(TxError),
    /// The ledger could not be reached; calls can be retried.
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    /// The ledger failed to serve the request (its storage, or a protocol error).
    #[error("ledger error: {0}")]
    Failed(String),
    /// A transaction was not included in time.
    #[error("transaction {0} not included within {1:?}")]
    Timeout(TxHash, Duration),
}

impl LedgerError {
    /// [`LedgerError::Unavailable`] with `e`'s message.
    pub fn unavailable(e: impl std::fmt::Display) -> LedgerError {
        LedgerError::Unavailable(e.to_string())
    }

    /// [`LedgerError::Failed`] with `e`'s message.
    pub fn failed(e: impl std::fmt::Display) -> LedgerError {
        LedgerError::Failed(e.to_string())
    }
}

/// An account's means to pay for its transactions on a ledger that charges fees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fees {
    /// The account's balance of the chain's own coin, in its smallest unit (wei on an EVM).
    #[serde(with = "decimal")]
    pub balance: u128,
    /// What a unit of gas costs now, in the same unit.
    #[serde(with = "decimal")]
    pub gas_price: u128,
}

/// A `u128` as a decimal string in JSON: wei amounts pass `u64`, and serde's internally tagged
/// enums (the control API's answers) cannot carry a `u128` number.
mod decimal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(n: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(n)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Fees {
    /// Gas of a typical gridchan transaction (a registration 92,139, a refute 55,023, a
    /// second deposit 66,909; `gridchan bench evm`), rounded up.
    pub const TYPICAL_GAS: u128 = 100_000;

    /// About how many typical transactions the balance pays for at the current price.
    pub fn transactions(&self) -> u128 {
        self.balance / (self.gas_price.max(1) * Self::TYPICAL_GAS)
    }

    /// Whether the balance pays for fewer than [`Fees::LOW`] typical transactions: time to
    /// fund the account.
    pub fn is_low(&self) -> bool {
        self.transactions() < Self::LOW
    }

    /// Typical transactions below which a balance counts as low.
    pub const LOW: u128 = 10;

    /// The balance in whole coins (10^18 of the smallest unit), to 6 decimals.
    pub fn coins(&self) -> String {
        let micro = self.balance / 1_000_000_000_000;
        format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000)
    }
}

/// A ledger, seen from one account. Every method is the same whether the ledger runs in this
/// process or on another node; nothing here assumes a block period or a token.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// The account this client signs for.
    fn signer(&self) -> &Signer;

    async fn chain_id(&self) -> Result<[u8; 32], LedgerError>;
    async fn height(&self) -> Result<Height, LedgerError>;
    async fn account(&self, node: &NodeId) -> Result<Account, LedgerError>;
    async fn channel(&self, id: &ChannelId) -> Result<Option<ChannelAccount>, LedgerError>;
    /// Signs `kind` for this account and sends it. One client's submissions (a tower's
    /// concurrent refutes, say) go out one at a time, in order, and never collide.
    async fn submit(&self, kind: TxKind) -> Result<TxHash, LedgerError>;
    async fn receipt(&self, hash: &TxHash) -> Result<Option<Receipt>, LedgerError>;
    /// Blocks from `from` on, at most `max` (possibly fewer).
    async fn blocks(&self, from: Height, max: usize) -> Result<Vec<BlockEvents>, LedgerError>;
    /// Returns once the height exceeds `height` or `timeout` passes, with the height then.
    async fn wait_above(&self, height: Height, timeout: Duration) -> Result<Height, LedgerError>;

    fn node(&self) -> NodeId {
        self.signer().id()
    }

    /// What this account has for transaction fees, on a ledger that charges them (an EVM
    /// chain's gas); `None` on one that does not (the local ledger).
    async fn fees(&self) -> Result<Option<Fees>, LedgerError> {
        Ok(None)
    }

    /// Submits and waits until the transaction is in a block.
    async fn submit_and_wait(
        &self,
        kind: TxKind,
        timeout: Duration,
    ) -> Result<Receipt, LedgerError> {
        let hash = self.submit(kind).await?;
        self.wait_for(&hash, timeout).await
    }

    /// Waits until `hash` is in a block.
    async fn wait_for(&self, hash: &TxHash, timeout: Duration) -> Result<Receipt, LedgerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let height = self.height().await?;
            if let Some(r) = self.receipt(hash).await? {
                return Ok(r);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(LedgerError::Timeout(*hash, timeout));
            }
            self.wait_above(height, left).await?;
        }
    }

    async fn deposit(&self, params: &ChannelParams, amount: Amount) -> Result<TxHash, LedgerError> {
        self.submit(TxKind::Deposit {
            params: Box::new(params.clone()),
            amount,
        })
        .await
    }

    async fn register(&self, state: &SignedState) -> Result<TxHash, LedgerError> {
        self.submit(TxKind::Register {
            state: Box::new(state.to_parts()),
        })
        .await
    }

    async fn refute(&self, state: &SignedState) -> Result<TxHash, LedgerError> {
        self.submit(TxKind::Refute {
            state: Box::new(state.to_parts()),
        })
        .await
    }

    async fn conclude(&self, channel: ChannelId) -> Result<TxHash, LedgerError> {
        self.submit(TxKind::Conclude { channel }).await
    }

    async fn conclude_final(&self, state: &SignedState) -> Result<TxHash, LedgerError> {
        self.submit(TxKind::ConcludeFinal {
            state: Box::new(state.to_parts()),
        })
        .await
    }

    async fn reclaim(&self, channel: ChannelId) -> Result<TxHash, LedgerError> {
        self.submit(TxKind::Reclaim { channel }).await
    }

    async fn withdraw(&self, channel: ChannelId, amount: Amount) -> Result<TxHash, LedgerError> {
        self.submit(TxKind::Withdraw { channel, amount }).await
    }

    async fn transfer(&self, to: NodeId, amount: Amount) -> Result<TxHash, LedgerError> {
        self.submit(TxKind::Transfer { to, amount }).await
    }
}

/// Follows the ledger block by block from a height. It remembers where it is, so after an
/// error (a lost connection) the next call resumes without missing or repeating a block.
pub struct Subscription {
    ledger: Arc<dyn Ledger>,
    next: Height,
    buffer: VecDeque<BlockEvents>,
}

impl Subscription {
    /// Starts at block `from` (1 is the first block).
    pub fn new(ledger: Arc<dyn Ledger>, from: Height) -> Subscription {
        Subscription {
            ledger,
            next: from.max(1),
            buffer: VecDeque::new(),
        }
    }

    /// The height of the next block this subscription will return.
    pub fn next_height(&self) -> Height {
        self.next
    }

    /// The next block, waiting for it to be produced and retrying (every second) while the
    /// ledger cannot be reached: what a follower that must not miss a block wants.
    pub async fn next_retrying(&mut self) -> BlockEvents {
        loop {
            match self.next().await {
                Ok(block) => return block,
                Err(e) => {
                    tracing::warn!("cannot follow the ledger: {e}; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// The next block, waiting for it to be produced.
    pub async fn next(&mut self) -> Result<BlockEvents, LedgerError> {
        loop {
            if let Some(b) = self.buffer.pop_front() {
                self.next = b.height + 1;
                return Ok(b);
            }
            let blocks = self.ledger.blocks(self.next, 64).await?;
            if blocks.is_empty() {
                self.ledger
                    .wait_above(self.next - 1, Duration::from_secs(10))
                    .await?;
            } else {
                self.buffer
                    .extend(blocks.into_iter().filter(|b| b.height >= self.next));
            }
        }
    }
}

/// A client of the local ledger's kind, which numbers and signs its account's transactions
/// itself: the nonce it will use next is cached between calls, and held from taking it to
/// learning whether the ledger accepted it.
#[async_trait]
trait NumbersItsTransactions: Ledger {
    fn nonces(&self) -> &tokio::sync::Mutex<Option<u64>>;
    async fn send_signed(&self, tx: Tx) -> Result<TxHash, LedgerError>;

    /// Signs `kind` with the next nonce and sends it. A stale cached nonce (another client
    /// of the same account submitted meanwhile) is refreshed once.
    async fn submit_numbered(&self, kind: TxKind) -> Result<TxHash, LedgerError> {
        let chain_id = self.chain_id().await?;
        let mut cached = self.nonces().lock().await;
        for _ in 0..2 {
            let nonce = match *cached {
                Some(n) => n,
                None => self.account(&self.node()).await?.nonce,
            };
            let tx = Tx::sign(&chain_id, self.signer(), nonce, kind.clone());
            match self.send_signed(tx).await {
                Ok(hash) => {
                    *cached = Some(nonce + 1);
                    return Ok(hash);
                }
                Err(LedgerError::Refused(TxError::BadNonce { expected, .. })) => {
                    *cached = Some(expected);
                }
                Err(e) => {
                    *cached = None;
                    return Err(e);
                }
            }
        }
        Err(LedgerError::Failed("nonce kept changing".into()))
    }
}

/// A client of a ledger running in this process.
pub struct LocalClient {
    ledger: Arc<LocalLedger>,
    signer: Signer,
    nonce: tokio::sync::Mutex<Option<u64>>,
}

impl LocalClient {
    pub fn new(ledger: Arc<LocalLedger>, signer: Signer) -> LocalClient {
        LocalClient {
            ledger,
            signer,
            nonce: tokio::sync::Mutex::new(None),
        }
    }
}

fn local_err(e: LocalError) -> LedgerError {
    match e {
        LocalError::Refused(t) => LedgerError::Refused(t),
        LocalError::Busy(_) => LedgerError::Unavailable(e.to_string()),
        LocalError::Store(s) => LedgerError::Failed(s.to_string()),
    }
}

#[async_trait]
impl NumbersItsTransactions for LocalClient {
    fn nonces(&self) -> &tokio::sync::Mutex<Option<u64>> {
        &self.nonce
    }

    async fn send_signed(&self, tx: Tx) -> Result<TxHash, LedgerError> {
        let l = self.ledger.clone();
        tokio::task::spawn_blocking(move || l.submit(tx))
            .await
            .map_err(LedgerError::failed)?
            .map_err(local_err)
    }
}

#[async_trait]
impl Ledger for LocalClient {
    fn signer(&self) -> &Signer {
        &self.signer
    }

    async fn chain_id(&self) -> Result<[u8; 32], LedgerError> {
        Ok(self.ledger.chain_id())
    }

    async fn height(&self) -> Result<Height, LedgerError> {
        Ok(self.ledger.height())
    }

    async fn account(&self, node: &NodeId) -> Result<Account, LedgerError> {
        Ok(self.ledger.account(node))
    }

    async fn channel(&self, id: &ChannelId) -> Result<Option<ChannelAccount>, LedgerError> {
        Ok(self.ledger.channel(id))
    }

    async fn submit(&self, kind: TxKind) -> Result<TxHash, LedgerError> {
        self.submit_numbered(kind).await
    }

    async fn receipt(&self, hash: &TxHash) -> Result<Option<Receipt>, LedgerError> {
        self.ledger.receipt(hash).map_err(LedgerError::failed)
    }

    async fn blocks(&self, from: Height, max: usize) -> Result<Vec<BlockEvents>, LedgerError> {
        let l = self.ledger.clone();
        tokio::task::spawn_blocking(move || l.blocks(from, max))
            .await
            .map_err(LedgerError::failed)?
            .map_err(LedgerError::failed)
    }

    async fn wait_above(&self, height: Height, timeout: Duration) -> Result<Height, LedgerError> {
        Ok(self.ledger.wait_above(height, timeout).await)
    }
}

/// How long a ledger call may take (beyond the wait a `WaitAbove` asks for).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of a `gridchan ledger` node, over authenticated QUIC. It reconnects on demand:
/// a call made after the connection dropped dials again.
pub struct RemoteClient {
    rpc: RpcClient,
    signer: Signer,
    nonce: tokio::sync::Mutex<Option<u64>>,
}

impl RemoteClient {
    /// A client for `server`, signing as `signer` (the same key authenticates the connection).
    pub fn new(
        server: PeerAddr,
        signer: Signer,
        transport_seed: [u8; 32],
    ) -> Result<RemoteClient, LedgerError> {
        let rpc = RpcClient::new(server, signer.duplicate(&transport_seed), MAX_RPC_FRAME)
            .map_err(LedgerError::unavailable)?;
        Ok(RemoteClient {
            rpc,
            signer,
            nonce: tokio::sync::Mutex::new(None),
        })
    }

    /// Closes the current connection; the next call dials again. (Lets operators and tests
    /// exercise reconnection.)
    pub async fn drop_connection(&self) {
        self.rpc.drop_connection().await;
    }

    async fn call(&self, request: &Request) -> Result<Response, LedgerError> {
        // A `WaitAbove` may take as long as it asks for, and a little more.
        let deadline = match request {
            Request::WaitAbove { timeout_ms, .. } => {
                Duration::from_millis(u64::from((*timeout_ms).min(rpc::MAX_WAIT_MS))) + CALL_TIMEOUT
            }
            _ => CALL_TIMEOUT,
        };
        let reply = self
            .rpc
            .request(&rpc::encode(request), deadline)
            .await
            .map_err(LedgerError::unavailable)?;
        match rpc::decode::<Response>(&reply).map_err(LedgerError::failed)? {
            Response::Error(e) => Err(LedgerError::Failed(e)),
            Response::Refused(e) => Err(LedgerError::Refused(e)),
            r => Ok(r),
        }
    }
}

fn unexpected(r: Response) -> LedgerError {
    LedgerError::Failed(format!("unexpected response {r:?}"))
}

#[async_trait]
impl NumbersItsTransactions for RemoteClient {
    fn nonces(&self) -> &tokio::sync::Mutex<Option<u64>> {
        &self.nonce
    }

    async fn send_signed(&self, tx: Tx) -> Result<TxHash, LedgerError> {
        match self.call(&Request::Submit(Box::new(tx))).await? {
            Response::Submitted(h) => Ok(h),
            r => Err(unexpected(r)),
        }
    }
}

#[async_trait]
impl Ledger for RemoteClient {
    fn signer(&self) -> &Signer {
        &self.signer
    }

    async fn chain_id(&self) -> Result<[u8; 32], LedgerError> {
        match self.call(&Request::ChainId).await? {
            Response::ChainId(id) => Ok(id),
            r => Err(unexpected(r)),
        }
    }

    async fn height(&self) -> Result<Height, LedgerError> {
        match self.call(&Request::Height).await? {
            Response::Height(h) => Ok(h),
            r => Err(unexpected(r)),
        }
    }

    async fn account(&self, node: &NodeId) -> Result<Account, LedgerError> {
        match self.call(&Request::Account(*node)).await? {
            Response::Account(a) => Ok(a),
            r => Err(unexpected(r)),
        }
    }

    async fn channel(&self, id: &ChannelId) -> Result<Option<ChannelAccount>, LedgerError> {
        match self.call(&Request::Channel(*id)).await? {
            Response::Channel(c) => Ok(c.map(|c| *c)),
            r => Err(unexpected(r)),
        }
    }

    async fn submit(&self, kind: TxKind) -> Result<TxHash, LedgerError> {
        self.submit_numbered(kind).await
    }

    async fn receipt(&self, hash: &TxHash) -> Result<Option<Receipt>, LedgerError> {
        match self.call(&Request::Receipt(*hash)).await? {
            Response::Receipt(r) => Ok(r.map(|r| *r)),
            r => Err(unexpected(r)),
        }
    }

    async fn blocks(&self, from: Height, max: usize) -> Result<Vec<BlockEvents>, LedgerError> {
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        match self.call(&Request::Blocks { from, max }).await? {
            Response::Blocks(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }

    async fn wait_above(&self, height: Height, timeout: Duration) -> Result<Height, LedgerError> {
        let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        match self
            .call(&Request::WaitAbove { height, timeout_ms })
            .await?
        {
            Response::Height(h) => Ok(h),
            r => Err(unexpected(r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Fees;

    #[test]
    fn fees_read_in_coins_and_transactions_and_cross_json_as_decimal_strings() {
        // 1.5 coins at 2 gwei: 7,500 transactions of 100,000 gas.
        let fees = Fees {
            balance: 1_500_000_000_000_000_000,
            gas_price: 2_000_000_000,
        };
        assert_eq!(fees.coins(), "1.500000");
        assert_eq!(fees.transactions(), 7_500);
        // More wei than a u64 holds survives a round trip through JSON.
        let rich = Fees {
            balance: u128::from(u64::MAX) * 1_000,
            gas_price: 0,
        };
        let json = serde_json::to_string(&rich).unwrap();
        assert!(json.contains(&format!("\"{}\"", rich.balance)), "{json}");
        assert_eq!(serde_json::from_str::<Fees>(&json).unwrap(), rich);
        // A free chain (gas price 0) does not divide by zero.
        assert_eq!(rich.transactions(), rich.balance / Fees::TYPICAL_GAS);
    }
}
