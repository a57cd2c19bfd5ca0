//! The gas each adjudicator operation uses, measured on a fresh anvil.

use std::time::Duration;

use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use alloy::sol_types::SolCall;
use gridchan_chain::evm::{anvil, Erc20, EvmLedger};
use gridchan_chain::{Ledger, LedgerError, TxHash, TxKind};
use gridchan_channel::{
    Amount, ChannelParams, IntervalIndex, MeterTolerance, PricePerKwh, SignedStateParts, Signer,
    State, Tariff, Version, WattHours,
};

/// Waits until `hash` is included successfully, every operation of a batch too.
async fn included(l: &EvmLedger, hash: TxHash) -> Result<TxHash, LedgerError> {
    let r = l.wait_for(&hash, Duration::from_secs(60)).await?;
    let events = r.outcome.result.map_err(LedgerError::Refused)?;
    for e in events {
        if let gridchan_chain::ChainEvent::BatchItemFailed { index, error } = e {
            return Err(LedgerError::failed(format!(
                "operation {index} of the batch: {error}"
            )));
        }
    }
    Ok(hash)
}

/// A fresh deployment (key 3 of `tag` deploys and mints) and the two parties' ledgers (keys 1
/// and 2), each with a billion test tokens.
async fn parties(
    chain: &anvil::Anvil,
    tag: u8,
) -> Result<(gridchan_chain::evm::Deployed, EvmLedger, EvmLedger), LedgerError> {
    let key = |n: u8| {
        let mut s = [0u8; 32];
        s[0] = tag;
        s[31] = n;
        s
    };
    let id = |n: u8| {
        Signer::new(&key(n), &key(n))
            .map(|s| s.id())
            .map_err(LedgerError::failed)
    };
    let (id_a, id_b) = (id(1)?, id(2)?);
    let deployed = chain
        .deploy_with_test_tokens(
            &key(3),
            &key(6),
            &[id_a, id_b],
            &[id_a, id_b],
            1_000_000_000,
        )
        .await?;
    let config = deployed.config(&chain.rpc, 1);
    let a = EvmLedger::connect(config.clone(), &key(1), &key(4))?;
    let b = EvmLedger::connect(config, &key(2), &key(5))?;
    Ok((deployed, a, b))
}

/// The gas a transaction used.
async fn gas_used(l: &EvmLedger, hash: TxHash) -> Result<u64, LedgerError> {
    l.provider()
        .get_transaction_receipt(B256::from(hash.0))
        .await
        .map_err(LedgerError::unavailable)?
        .map(|r| r.gas_used)
        .ok_or_else(|| LedgerError::failed("no receipt"))
}

/// Gas each adjudicator operation uses, measured on a fresh anvil: the deployments, then a
/// channel through deposit, register, refute, conclude and withdraw, one closed by a final
/// state, and one reclaimed.
pub async fn gas_report(chain: &anvil::Anvil) -> Result<Vec<(&'static str, u64)>, LedgerError> {
    let mut out = Vec::new();
    let (deployed, a, b) = parties(chain, 0x31).await?;
    out.push((
        "deploy the test token (dev chains only)",
        deployed.gas_used - deployed.adjudicator_gas,
    ));
    out.push(("deploy the adjudicator", deployed.adjudicator_gas));
    let gas_of = |hash: TxHash| gas_used(&a, hash);
    let params = |nonce: u8, tariff: Tariff| ChannelParams {
        party_a: a.signer().id(),
        party_b: b.signer().id(),
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
        evidence: Default::default(),
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
            book: gridchan_channel::NO_BOOK,
            funds: Default::default(),
        };
        let d = state.digest();
        SignedStateParts {
            sig_a: a.signer().sign(&d),
            sig_b: b.signer().sign(&d),
            state,
        }
    };
    let flat = params(1, Tariff::Flat(PricePerKwh(150_000)));
    // The approval is its own transaction; measure it apart from the deposit.
    let approve = a
        .send_call(
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
    chain.mine(3).await.map_err(LedgerError::unavailable)?;
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
            .map_err(LedgerError::failed)?,
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
    // Money in and out of an open channel.
    let open = params(4, Tariff::Flat(PricePerKwh(150_000)));
    included(&a, a.deposit(&open, open.deposit_a).await?).await?;
    included(&b, b.deposit(&open, open.deposit_b).await?).await?;
    let h = included(
        &a,
        a.submit(TxKind::TopUp {
            channel: open.channel_id(),
            amount: Amount(5_000_000),
        })
        .await?,
    )
    .await?;
    out.push(("top-up (an open channel)", gas_of(h).await?));
    let taken = State::initial(&open)
        .with_funds(
            Version(2),
            gridchan_channel::Party::A,
            Amount(0),
            Amount(3_000_000),
        )
        .map_err(LedgerError::failed)?;
    let d = taken.digest();
    let h = included(
        &a,
        a.submit(TxKind::WithdrawOpen {
            state: Box::new(SignedStateParts {
                sig_a: a.signer().sign(&d),
                sig_b: b.signer().sign(&d),
                state: taken,
            }),
        })
        .await?,
    )
    .await?;
    out.push(("withdraw while open", gas_of(h).await?));
    let lone = params(3, Tariff::Flat(PricePerKwh(150_000)));
    included(&a, a.deposit(&lone, lone.deposit_a).await?).await?;
    chain.mine(3).await.map_err(LedgerError::unavailable)?;
    let h = included(&a, a.reclaim(lone.channel_id()).await?).await?;
    out.push(("reclaim (funding window passed)", gas_of(h).await?));
    Ok(out)
}

/// Gas per channel of the operations a market node or a demo makes for many channels at once,
/// one transaction per batch of `sizes[i]` channels: each operation's name and its gas per
/// channel at each size.
pub async fn batch_gas_report(
    chain: &anvil::Anvil,
    sizes: &[usize],
) -> Result<Vec<(&'static str, Vec<u64>)>, LedgerError> {
    let (_, a, b) = parties(chain, 0x32).await?;
    let gas_of = |hash: TxHash| gas_used(&a, hash);
    let names = [
        "deposit, first (creates the channel)",
        "deposit, second (funds the channel)",
        "conclude-final (cooperative close)",
        "withdraw the payout",
    ];
    let mut rows: Vec<Vec<u64>> = vec![Vec::new(); names.len()];
    for (round, &n) in sizes.iter().enumerate() {
        let channels: Vec<ChannelParams> = (0..n)
            .map(|i| {
                let mut nonce = [0u8; 32];
                nonce[0] = round as u8;
                nonce[1..9].copy_from_slice(&(i as u64).to_be_bytes());
                ChannelParams {
                    party_a: a.signer().id(),
                    party_b: b.signer().id(),
                    nonce,
                    deposit_a: Amount(1_000_000),
                    deposit_b: Amount(1_000_000),
                    challenge_window_blocks: 2,
                    funding_window_blocks: 2,
                    interval_seconds: 900,
                    tolerance: MeterTolerance {
                        absolute_wh: 10,
                        permille: 20,
                    },
                    opened_at: IntervalIndex(1),
                    tariff: Tariff::Flat(PricePerKwh(150_000)),
                    evidence: Default::default(),
                }
            })
            .collect();
        let batch = |items: Vec<TxKind>| TxKind::Batch { items };
        let deposits = |who_a: bool| {
            batch(
                channels
                    .iter()
                    .map(|p| TxKind::Deposit {
                        params: Box::new(p.clone()),
                        amount: if who_a { p.deposit_a } else { p.deposit_b },
                    })
                    .collect(),
            )
        };
        let h = included(&a, a.submit(deposits(true)).await?).await?;
        rows[0].push(gas_of(h).await? / n as u64);
        let h = included(&b, b.submit(deposits(false)).await?).await?;
        rows[1].push(gas_of(h).await? / n as u64);
        let finals = channels
            .iter()
            .map(|p| {
                let mut s = State::initial(p).finalized(Version(5));
                s.balance_a = Amount(1_000_100);
                s.balance_b = Amount(999_900);
                let d = s.digest();
                TxKind::ConcludeFinal {
                    state: Box::new(SignedStateParts {
                        sig_a: a.signer().sign(&d),
                        sig_b: b.signer().sign(&d),
                        state: s,
                    }),
                }
            })
            .collect();
        let h = included(&a, a.submit(batch(finals)).await?).await?;
        rows[2].push(gas_of(h).await? / n as u64);
        let payouts = channels
            .iter()
            .map(|p| TxKind::Withdraw {
                channel: p.channel_id(),
                amount: Amount(1_000_100),
            })
            .collect();
        let h = included(&a, a.submit(batch(payouts)).await?).await?;
        rows[3].push(gas_of(h).await? / n as u64);
    }
    Ok(names.into_iter().zip(rows).collect())
}
