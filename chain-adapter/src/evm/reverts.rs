//! Reverts: the adjudicator's and the token's errors as the local ledger's [`TxError`].

use alloy::sol_types::SolInterface;

use gridchan_channel::{Amount, Version};

use crate::rules::TxError;

use super::abi::{phase_name, Erc20, GridchanAdjudicator};

/// The rule a failed RPC call names, if it is one of the adjudicator's or the token's errors.
pub(super) fn refusal_of<E>(e: &alloy::transports::RpcError<E>) -> Option<TxError> {
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
            E::TopUpNotMade(_) => TxError::TopUpNotMade,
            E::WithdrawalNotInState(_) => TxError::WithdrawalNotInState,
            E::NothingToWithdraw(_) => TxError::NothingToWithdraw,
            E::Overflow(_) => TxError::Overflow,
            E::InvalidBatch(e) => TxError::InvalidBatch(e.reason),
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
