//! Deployment: the adjudicator (and on a dev chain the test token) from the compiled artifacts.

use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::Address;
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolConstructor;

use crate::client::LedgerError;

use super::abi::GridchanAdjudicator;
use super::{wallet_provider, EvmConfig};

/// The compiled contracts (`chain-adapter/evm/artifacts`, checked against the sources in CI).
pub const ADJUDICATOR_ARTIFACT: &str = include_str!("../../evm/artifacts/GridchanAdjudicator.json");
pub const TEST_TOKEN_ARTIFACT: &str = include_str!("../../evm/artifacts/TestToken.json");

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
    let v: serde_json::Value = serde_json::from_str(artifact).map_err(LedgerError::failed)?;
    let hex = v["bytecode"]
        .as_str()
        .ok_or_else(|| LedgerError::failed("artifact without bytecode"))?;
    alloy::hex::decode(hex).map_err(LedgerError::failed)
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
                .map_err(LedgerError::unavailable)?
                .with_timeout(Some(Duration::from_secs(120)))
                .get_receipt()
                .await
                .map_err(LedgerError::unavailable)?;
            if !receipt.status() {
                return Err(LedgerError::failed("the deployment reverted"));
            }
            let address = receipt.contract_address.ok_or_else(|| {
                LedgerError::failed("no contract address in the deployment's receipt")
            })?;
            Ok::<_, LedgerError>((address, receipt.block_number.unwrap_or(0), receipt.gas_used))
        }
    };
    let chain_id = provider
        .get_chain_id()
        .await
        .map_err(LedgerError::unavailable)?;
    let token = match token {
        Some(t) => {
            if provider.get_code_at(t).await.map_err(LedgerError::unavailable)?.is_empty() {
                return Err(LedgerError::failed(format!(
                    "there is no contract at {t:#x}: check the settlement token's address"
                )));
            }
            t
        }
        None if !DEV_CHAINS.contains(&chain_id) => {
            return Err(LedgerError::failed(format!(
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
