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

mod abi;
#[cfg(feature = "dev")]
pub mod anvil;
mod client;
mod deploy;
mod reverts;

pub use abi::{sol_params, sol_sig, sol_state, Erc20, GridchanAdjudicator};
pub use client::{EvmConfig, EvmLedger};
pub use deploy::{deploy, Deployed, ADJUDICATOR_ARTIFACT, DEV_CHAINS, TEST_TOKEN_ARTIFACT};
pub use reverts::decode_revert;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, FixedBytes, B256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use gridchan_channel::NodeId;

use crate::client::LedgerError;

/// The EVM address of a node.
pub fn address_of(node: &NodeId) -> Address {
    Address::from(node.address().0)
}

pub(crate) fn b256(bytes: &[u8; 32]) -> FixedBytes<32> {
    FixedBytes::from(*bytes)
}

/// A provider at `rpc` that signs with the account of `secret`, and that account's address.
pub(crate) fn wallet_provider(
    rpc: &str,
    secret: &[u8; 32],
) -> Result<(DynProvider, Address), LedgerError> {
    let wallet = PrivateKeySigner::from_bytes(&B256::from(*secret)).map_err(LedgerError::failed)?;
    let account = wallet.address();
    let url = rpc
        .parse()
        .map_err(|e| LedgerError::failed(format!("the EVM RPC address {rpc}: {e}")))?;
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(wallet))
        .connect_http(url)
        .erased();
    Ok((provider, account))
}
