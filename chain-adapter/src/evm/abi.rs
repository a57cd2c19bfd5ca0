//! The adjudicator's ABI: its interface read from the compiled artifact, and the conversions
//! between the contract's forms and the channel's.

use alloy::primitives::{Bytes, FixedBytes};
use alloy::rpc::types::Log;
use alloy::sol_types::SolEventInterface;

use gridchan_channel::{
    Amount, ChannelId, ChannelParams, IntervalIndex, MeterTolerance, NodeId, Party, Signature,
    SignedStateParts, State, Version,
};

use crate::rules::ChainEvent;

use super::{address_of, b256};

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

/// The adjudicator's `Phase`, by number (the ABI carries enums as `uint8`).
pub(super) fn phase_name(p: u8) -> &'static str {
    match p {
        1 => "funding",
        2 => "open",
        3 => "registered",
        4 => "concluded",
        5 => "expired",
        _ => "unknown",
    }
}

/// Why a `Created` event does not give channel parameters.
#[derive(Debug, thiserror::Error)]
pub(super) enum CreatedError {
    #[error("a party key is not 64 bytes")]
    KeyLength,
    #[error(transparent)]
    Key(#[from] gridchan_channel::CryptoError),
    #[error("the {0} does not fit its type")]
    TooLarge(&'static str),
    #[error(transparent)]
    Tariff(#[from] gridchan_channel::TariffError),
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
        tariffDigest: b256(&p.terms_digest()),
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
        book: b256(&s.book),
        toppedUpA: s.funds.topped_up[0].0,
        toppedUpB: s.funds.topped_up[1].0,
        withdrawnA: s.funds.withdrawn[0].0,
        withdrawnB: s.funds.withdrawn[1].0,
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

pub(super) fn sol_signed(
    s: &SignedStateParts,
) -> (
    GridchanAdjudicator::State,
    GridchanAdjudicator::Sig,
    GridchanAdjudicator::Sig,
) {
    (sol_state(&s.state), sol_sig(&s.sig_a), sol_sig(&s.sig_b))
}

pub(super) fn params_from_created(
    c: &GridchanAdjudicator::Created,
) -> Result<ChannelParams, CreatedError> {
    let key = |b: &Bytes| -> Result<NodeId, CreatedError> {
        let xy: [u8; 64] = b[..].try_into().map_err(|_| CreatedError::KeyLength)?;
        Ok(NodeId::from_xy(&xy)?)
    };
    let small = |what: &'static str| move |_| CreatedError::TooLarge(what);
    let p = &c.params;
    let (tariff, evidence) = ChannelParams::terms_from_words(&c.tariff)?;
    Ok(ChannelParams {
        party_a: key(&c.keyA)?,
        party_b: key(&c.keyB)?,
        nonce: p.nonce.0,
        deposit_a: Amount(p.depositA),
        deposit_b: Amount(p.depositB),
        challenge_window_blocks: p.challengeWindowBlocks,
        funding_window_blocks: p.fundingWindowBlocks,
        interval_seconds: u32::try_from(p.intervalSeconds).map_err(small("interval"))?,
        tolerance: MeterTolerance {
            absolute_wh: u32::try_from(p.toleranceAbsoluteWh).map_err(small("tolerance"))?,
            permille: u16::try_from(p.tolerancePermille).map_err(small("tolerance permille"))?,
        },
        opened_at: IntervalIndex(p.openedAt),
        tariff,
        evidence,
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
pub(super) fn chain_event(log: &Log) -> Option<ChainEvent> {
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
        Ev::ToppedUp(e) => ChainEvent::ToppedUp {
            channel: id(&e.channelId),
            party: party(e.party),
            amount: Amount(e.amount),
            total: Amount(e.total),
        },
        Ev::BatchItemFailed(e) => ChainEvent::BatchItemFailed {
            index: u32::try_from(e.index).unwrap_or(u32::MAX),
            error: super::reverts::decode_revert(&e.reason).unwrap_or_else(|| {
                crate::TxError::Reverted(format!("0x{}", hex::encode(&e.reason)))
            }),
        },
        Ev::WithdrawnOpen(e) => ChainEvent::WithdrawnOpen {
            channel: id(&e.channelId),
            party: party(e.party),
            amount: Amount(e.amount),
            total: Amount(e.total),
        },
    })
}
